namespace Vdisk.Nbd;

/// <summary>The client broke the protocol in a way that leaves no choice but to drop the connection.</summary>
public sealed class NbdProtocolException(string message) : Exception(message);
