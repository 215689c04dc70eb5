using Xunit;

namespace Vdisk.Interop.Tests.Nbd;

/// <summary>
/// `vdisk serve --tls-*` against libnbd (GnuTLS) and qemu-img, with certificates the test makes with openssl:
/// a CA, a server certificate for 127.0.0.1/localhost and client certificates, one signed by a stranger CA.
/// Client credentials are laid out as libnbd and QEMU read a certificate directory (ca-cert.pem,
/// client-cert.pem, client-key.pem).
/// </summary>
public sealed class NbdTlsInteropTests : IDisposable
{
    private readonly TempDir _dir = new();
    public void Dispose() => _dir.Dispose();

    private static ToolResult Ok(string program, params string[] args)
    {
        var r = Tools.RunWithTimeout(program, args, TimeSpan.FromMinutes(1));
        Assert.True(r.ExitCode == 0, $"{program} {string.Join(' ', args)}: {r}");
        return r;
    }

    private string Path(string name) => _dir.File(name);

    /// <summary>Key and certificate NAME-key.pem / NAME-cert.pem signed by CA (self-signed when ca is null).</summary>
    private void Certificate(string name, string subject, string? ca, string extensions)
    {
        File.WriteAllText(Path(name + ".ext"), extensions.Replace(';', '\n') + "\n");
        if (ca is null)
        {
            Ok("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
                "-keyout", Path(name + "-key.pem"), "-out", Path(name + "-cert.pem"), "-extensions", "v3", "-config", Config(name));
            return;
        }
        Ok("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", Path(name + "-key.pem"), "-out", Path(name + ".csr"));
        Ok("openssl", "x509", "-req", "-in", Path(name + ".csr"), "-CA", Path(ca + "-cert.pem"), "-CAkey", Path(ca + "-key.pem"),
            "-CAcreateserial", "-days", "2", "-out", Path(name + "-cert.pem"), "-extfile", Path(name + ".ext"));
    }

    private string Config(string name)
    {
        var config = Path(name + ".cnf");
        File.WriteAllText(config, "[req]\ndistinguished_name=dn\n[dn]\n[v3]\n" + File.ReadAllText(Path(name + ".ext")));
        return config;
    }

    /// <summary>A certificate directory for a client: the CA that signed the server, and optionally a client identity.</summary>
    private string ClientDir(string dirName, string? identity)
    {
        var dir = Path(dirName);
        Directory.CreateDirectory(dir);
        File.Copy(Path("ca-cert.pem"), System.IO.Path.Combine(dir, "ca-cert.pem"));
        if (identity is not null)
        {
            File.Copy(Path(identity + "-cert.pem"), System.IO.Path.Combine(dir, "client-cert.pem"));
            File.Copy(Path(identity + "-key.pem"), System.IO.Path.Combine(dir, "client-key.pem"));
        }
        return dir;
    }

    private const string CaExtensions = "basicConstraints=critical,CA:TRUE;keyUsage=critical,keyCertSign,cRLSign";

    private void MakeCertificates()
    {
        Certificate("ca", "/CN=vdisk test CA", null, CaExtensions);
        Certificate("server", "/CN=localhost", "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost;extendedKeyUsage=serverAuth;keyUsage=critical,digitalSignature,keyEncipherment");
        const string ClientExtensions = "extendedKeyUsage=clientAuth;keyUsage=critical,digitalSignature,keyEncipherment";
        Certificate("client", "/CN=vdisk test client", "ca", ClientExtensions);
        Certificate("stranger-ca", "/CN=someone else's CA", null, CaExtensions);
        Certificate("stranger", "/CN=stranger", "stranger-ca", ClientExtensions);
    }

    private string Image()
    {
        var img = Path("d.qcow2");
        Ok("qemu-img", "create", "-q", "-f", "qcow2", img, "64M");
        Ok("qemu-io", "-f", "qcow2", "-c", "write -P 0x3c 1M 64k", img);
        return img;
    }

    private NbdServerProcess Serve(int port, params string[] extra) => NbdServerProcess.Vdisk(_dir,
        ["-t", "-e", "4", "-p", port.ToString(), "-x", "exp", $"--tls-cert={Path("server-cert.pem")}", $"--tls-key={Path("server-key.pem")}", .. extra, Image()]);

    private static string Tls(int port, string certDir) => $"nbds://127.0.0.1:{port}/exp?tls-certificates={certDir}";

    [Fact]
    public void Tls_clients_are_served_and_plaintext_clients_refused()
    {
        MakeCertificates();
        int port = NbdServerProcess.FreePort();
        using var vdisk = Serve(port);
        var certDir = ClientDir("anon", null);
        var info = Ok("nbdinfo", Tls(port, certDir)).StdOut;
        Assert.Contains("with TLS", info);
        Assert.Contains("export-size: 67108864", info);

        var plain = Tools.RunWithTimeout("nbdinfo", [$"nbd://127.0.0.1:{port}/exp"], TimeSpan.FromMinutes(1));
        Assert.NotEqual(0, plain.ExitCode);
        Assert.DoesNotContain("export-size", plain.StdOut);

        // Data goes through the encrypted transmission phase both ways, and the server kept serving after the refusal.
        var uri = Tls(port, certDir);
        var io = Ok("qemu-io", "--image-opts", "-c", "read -P 0x3c 1M 64k", "-c", "write -P 0x11 2M 1M", "-c", "read -P 0x11 2M 1M",
            "--object", $"tls-creds-x509,id=tls0,dir={certDir},endpoint=client", $"driver=nbd,host=127.0.0.1,port={port},export=exp,tls-creds=tls0");
        Assert.DoesNotContain("fail", io.StdOut + io.StdErr);
        Assert.Equal("67108864", Ok("nbdinfo", "--size", uri).StdOut.Trim());
        Assert.False(vdisk.HasExited);
        Assert.Equal(0, vdisk.Stop());
    }

    [Fact]
    public void Qemu_img_info_works_over_tls()
    {
        MakeCertificates();
        int port = NbdServerProcess.FreePort();
        using var vdisk = Serve(port);
        var r = Ok("qemu-img", "info", "--object", $"tls-creds-x509,id=tls0,dir={ClientDir("anon", null)},endpoint=client",
            "--image-opts", $"driver=nbd,host=127.0.0.1,port={port},export=exp,tls-creds=tls0");
        Assert.Contains("virtual size: 64 MiB (67108864 bytes)", r.StdOut);
        Assert.Equal(0, vdisk.Stop());
    }

    [Fact]
    public void With_a_client_ca_only_clients_with_a_certificate_from_it_get_in()
    {
        MakeCertificates();
        int port = NbdServerProcess.FreePort();
        using var vdisk = Serve(port, $"--tls-client-ca={Path("ca-cert.pem")}");
        Assert.NotEqual(0, Tools.RunWithTimeout("nbdinfo", ["--size", Tls(port, ClientDir("anon", null))], TimeSpan.FromMinutes(1)).ExitCode);
        Assert.NotEqual(0, Tools.RunWithTimeout("nbdinfo", ["--size", Tls(port, ClientDir("strange", "stranger"))], TimeSpan.FromMinutes(1)).ExitCode);
        Assert.Equal("67108864", Ok("nbdinfo", "--size", Tls(port, ClientDir("good", "client"))).StdOut.Trim());
        Assert.Equal(0, vdisk.Stop());
        Assert.Contains("certificate", vdisk.StdErr);
    }

    [Fact]
    public void Bad_credentials_fail_at_start()
    {
        MakeCertificates();
        var r = Tools.Vdisk("serve", "-p", NbdServerProcess.FreePort().ToString(), $"--tls-cert={Path("server-cert.pem")}",
            $"--tls-key={Path("client-key.pem")}", Image());
        Assert.Equal(1, r.ExitCode);
        Assert.Contains("Failed to load TLS credentials", r.StdErr);
        Assert.Equal(1, Tools.Vdisk("serve", $"--tls-cert={Path("server-cert.pem")}", Image()).ExitCode);
    }
}
