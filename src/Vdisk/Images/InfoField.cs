namespace Vdisk.Images;

/// <summary>
/// One line of qemu-img info's "Format specific information": the JSON member name ("refcount-bits"),
/// the human label ("refcount bits") and the value (string, bool, int or long).
/// </summary>
public sealed record InfoField(string JsonName, string HumanName, object Value);
