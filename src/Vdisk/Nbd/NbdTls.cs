using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;

namespace Vdisk.Nbd;

/// <summary>
/// The server's TLS credentials (qemu-nbd's tls-creds-x509 with endpoint=server). When a server has them it is in
/// the spec's FORCEDTLS mode: nothing but STARTTLS and ABORT is answered until the session is encrypted. With a
/// client CA, clients must present a certificate that chains to it (qemu's verify-peer=on).
/// </summary>
public sealed class NbdTls : IDisposable
{
    private readonly X509Certificate2 _certificate;
    private readonly X509Certificate2? _clientCa;
    private readonly SslStreamCertificateContext _context;

    public NbdTls(X509Certificate2 certificate, X509Certificate2? clientCa = null)
    {
        if (!certificate.HasPrivateKey) throw new ArgumentException("The server certificate has no private key", nameof(certificate));
        _certificate = certificate;
        _clientCa = clientCa;
        // offline: building the chain must never reach out to the network for intermediates or revocation.
        _context = SslStreamCertificateContext.Create(certificate, additionalCertificates: null, offline: true);
    }

    /// <summary>Loads PEM files: the server's certificate and key, and optionally the CA that client certificates must chain to.</summary>
    public static NbdTls FromPemFiles(string certificateFile, string keyFile, string? clientCaFile = null)
    {
        var certificate = X509Certificate2.CreateFromPemFile(certificateFile, keyFile);
        var ca = clientCaFile is null ? null : X509Certificate2.CreateFromPem(File.ReadAllText(clientCaFile));
        return new NbdTls(certificate, ca);
    }

    public bool RequiresClientCertificate => _clientCa is not null;

    /// <summary>Runs the server side of the TLS handshake over <paramref name="inner"/>; throws <see cref="AuthenticationException"/> when it fails.</summary>
    public async Task<SslStream> AuthenticateAsync(Stream inner, CancellationToken ct)
    {
        var ssl = new SslStream(inner, leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
            {
                ServerCertificateContext = _context,
                ClientCertificateRequired = _clientCa is not null,
                CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
                RemoteCertificateValidationCallback = (_, certificate, _, _) => IsAcceptableClient(certificate),
            }, ct).ConfigureAwait(false);
            return ssl;
        }
        catch
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Without a client CA any client is welcome (a certificate it offers anyway is ignored). With one, the
    /// certificate must chain to that CA alone: the system's trust store has no say in who may use the disk.
    /// </summary>
    private bool IsAcceptableClient(X509Certificate? offered)
    {
        if (_clientCa is null) return true;
        if (offered is null) return false;
        var certificate = offered as X509Certificate2 ?? X509CertificateLoader.LoadCertificate(offered.GetRawCertData());
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(_clientCa);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.DisableCertificateDownloads = true;
        chain.ChainPolicy.ApplicationPolicy.Add(new System.Security.Cryptography.Oid("1.3.6.1.5.5.7.3.2")); // clientAuth
        try { return chain.Build(certificate); }
        finally
        {
            if (!ReferenceEquals(certificate, offered)) certificate.Dispose();
        }
    }

    public void Dispose()
    {
        _certificate.Dispose();
        _clientCa?.Dispose();
    }
}
