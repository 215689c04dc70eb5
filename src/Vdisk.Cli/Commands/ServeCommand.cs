using System.Globalization;
using System.Net;
using System.Runtime.InteropServices;
using Vdisk.BlockIO;
using Vdisk.Cli.Parsing;
using Vdisk.Images;
using Vdisk.Nbd;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk serve: qemu-nbd's server mode. One export, on TCP (default 127.0.0.1:10809) or a unix socket, serving
/// -e clients at once (default 1) and exiting after the last one leaves unless -t. SIGINT/SIGTERM stop accepting,
/// let requests in flight finish, flush and close the image.
/// </summary>
internal static class ServeCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("format", true, "f"), new("bind", true, "b"), new("port", true, "p"),
        new("socket", true, "k"), new("export-name", true, "x"), new("description", true, "D"),
        new("read-only", false, "r"), new("persistent", false, "t"), new("shared", true, "e"),
        new("cache", true, "cache"), new("nocache", false, "n"), new("discard", true, "discard"),
        new("detect-zeroes", true, "detect-zeroes"), new("snapshot", false, "s"), new("pid-file", true, "pid-file"),
        new("verbose", false, "v"), new("tls-cert", true, "tls-cert"), new("tls-key", true, "tls-key"),
        new("tls-client-ca", true, "tls-client-ca"), new("force-share", false, "U"),
    };

    private sealed record Settings
    {
        public string? Format { get; set; }
        public string Bind { get; set; } = "127.0.0.1";
        public int Port { get; set; } = 10809;
        public bool TcpGiven { get; set; }
        public string? Socket { get; set; }
        public string ExportName { get; set; } = "";
        public string Description { get; set; } = "";
        public bool ReadOnly { get; set; }
        public bool ForceShare { get; set; }
        public bool Persistent { get; set; }
        public int Shared { get; set; } = 1;
        public CacheMode Cache { get; set; } = CacheMode.Writeback;
        public bool DiscardUnmap { get; set; }
        public DetectZeroes DetectZeroes { get; set; }
        public bool Snapshot { get; set; }
        public string? PidFile { get; set; }
        public string? TlsCert { get; set; }
        public string? TlsKey { get; set; }
        public string? TlsClientCa { get; set; }
        public string ImagePath { get; set; } = "";
    }

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var s = Parse(ctx, args, out bool helped);
        if (helped) return 0;
        string file = s.ImagePath;
        using var tls = LoadTls(s);
        using var snapshot = s.Snapshot ? SnapshotOverlay.Create(file, s.Format, s.Cache) : null;
        DiskImage image;
        try
        {
            image = DiskImages.Open(snapshot?.Path ?? file, new ImageOpenOptions
            {
                ReadOnly = s.ReadOnly, Format = snapshot is null ? s.Format : "qcow2", Cache = s.Cache,
                Share = ImageSharing.AllButResize, ForceShare = s.ForceShare, // qemu-nbd's sharing; -U is vdisk's
            });
        }
        catch (Exception e) when (e is IOException or NotImplementedException or UnauthorizedAccessException)
        {
            throw new CliException($"Failed to blk_new_open '{file}': {Errors.Describe(e)}");
        }
        using (image)
        {
            var export = new NbdExport(s.ExportName, image)
            {
                Description = s.Description, DiscardUnmap = s.DiscardUnmap, DetectZeroes = s.DetectZeroes,
                MultiConn = s.Shared > 1,
            };
            var log = new object();
            var options = new NbdServerOptions
            {
                MaxClients = s.Shared, Persistent = s.Persistent, Tls = tls,
                Log = line => { lock (log) ctx.Error(line); },
                // The GC keeps the heap it grew under load until it next runs, and an idle server allocates
                // nothing, so it would never run: collect once, returning free regions to the system, so that
                // the server goes back to its idle size as qemu-nbd does (a few ms, and only when nobody is served).
                Idle = () => GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true),
            };
            var server = new NbdServer([export], options);
            try
            {
                if (s.Socket is not null) server.ListenUnix(s.Socket);
                else server.ListenTcp(new IPEndPoint(ParseAddress(s.Bind), s.Port));
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new CliException($"Failed to bind socket: {e.Message}");
            }
            if (s.PidFile is not null) File.WriteAllText(s.PidFile, Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "\n");
            try
            {
                RunUntilStopped(server);
            }
            finally
            {
                if (s.PidFile is not null) TryDelete(s.PidFile);
            }
        }
        return 0;
    }

    /// <summary>Serves until the server ends by itself or a signal asks it to; the signal handlers only start the stop.</summary>
    private static void RunUntilStopped(NbdServer server)
    {
        void OnSignal(PosixSignalContext c)
        {
            c.Cancel = true; // the process ends on our terms, after the image is closed
            _ = server.StopAsync();
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        server.Start();
        server.Completion.GetAwaiter().GetResult();
        server.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    private static Settings Parse(CliContext ctx, IReadOnlyList<string> args, out bool helped)
    {
        helped = false;
        var parsed = GetOpt.Parse(args, "hf:b:p:k:x:D:rte:nsvU", Longs);
        var s = new Settings();
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": PrintUsage(ctx.Out); helped = true; return s;
                case "f": s.Format = value; break;
                case "b": s.Bind = value!; s.TcpGiven = true; break;
                case "p":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int port) || port > 65535)
                        throw new CliException($"Invalid port number `{value}'");
                    s.Port = port;
                    s.TcpGiven = true;
                    break;
                case "k": s.Socket = value; break;
                case "x": s.ExportName = value!; break;
                case "D": s.Description = value!; break;
                case "r": s.ReadOnly = true; break;
                case "U": s.ForceShare = true; break;
                case "t": s.Persistent = true; break;
                case "e":
                    if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int shared) || shared < 1)
                        throw new CliException($"Invalid shared device number '{value}'");
                    s.Shared = shared;
                    break;
                case "n": s.Cache = CacheMode.None; break;
                case "cache":
                    if (!CacheModes.TryParse(value!, out var cache)) throw new CliException($"invalid cache mode `{value}'");
                    s.Cache = cache;
                    break;
                case "discard":
                    s.DiscardUnmap = value switch
                    {
                        "ignore" or "off" => false,
                        "unmap" or "on" => true,
                        _ => throw new CliException($"Invalid discard option `{value}'"),
                    };
                    break;
                case "detect-zeroes":
                    s.DetectZeroes = value switch
                    {
                        "off" => DetectZeroes.Off,
                        "on" => DetectZeroes.On,
                        "unmap" => DetectZeroes.Unmap,
                        _ => throw new CliException($"Parameter 'detect-zeroes' does not accept value '{value}'"),
                    };
                    break;
                case "s": s.Snapshot = true; break;
                case "pid-file": s.PidFile = value; break;
                case "tls-cert": s.TlsCert = value; break;
                case "tls-key": s.TlsKey = value; break;
                case "tls-client-ca": s.TlsClientCa = value; break;
            }
        }
        if (s.Socket is not null && s.TcpGiven) throw new CliException("-k and -b/-p are mutually exclusive");
        if (s.DetectZeroes == DetectZeroes.Unmap && !s.DiscardUnmap)
            throw new CliException("setting detect-zeroes to unmap is not allowed without setting discard operation to unmap");
        if ((s.TlsCert is null) != (s.TlsKey is null)) throw new CliException("--tls-cert and --tls-key must be given together");
        if (s.TlsClientCa is not null && s.TlsCert is null) throw new CliException("--tls-client-ca requires --tls-cert and --tls-key");
        if (parsed.Positionals.Count != 1)
            throw new CliException(parsed.Positionals.Count == 0 ? "Not enough arguments" : $"Extra argument '{parsed.Positionals[1]}'", showTryHelp: true);
        s.ImagePath = parsed.Positionals[0];
        return s;
    }

    /// <summary>Loaded before the image is opened, so that bad credentials fail fast without touching it.</summary>
    private static NbdTls? LoadTls(Settings s)
    {
        if (s.TlsCert is null) return null;
        try
        {
            return NbdTls.FromPemFiles(s.TlsCert, s.TlsKey!, s.TlsClientCa);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
        {
            throw new CliException($"Failed to load TLS credentials: {e.Message}");
        }
    }

    private static IPAddress ParseAddress(string text) => IPAddress.TryParse(text, out var address)
        ? address
        : throw new CliException($"Invalid bind address '{text}': vdisk serve takes a numeric address");

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static void PrintUsage(TextWriter w) => w.Write("""
        usage: vdisk serve [OPTIONS] FILE
        Serve FILE over NBD (qemu-nbd's options)

          -p, --port=PORT           port to listen on (default `10809')
          -b, --bind=IFACE          address to bind to (default `127.0.0.1')
          -k, --socket=PATH         path of a unix socket to listen on instead
          -e, --shared=NUM          serve up to NUM clients at once (default '1')
          -t, --persistent          don't exit when the last client disconnects
          -x, --export-name=NAME    export name (default is the empty string)
          -D, --description=TEXT    human-readable description of the export
          -f, --format=FORMAT       image format (raw, qcow2)
          -r, --read-only           export read-only
          -U, --force-share         with -r: open the image even while another process writes it
          -s, --snapshot            write to a temporary overlay, discarded at exit
          -n, --nocache             same as --cache=none
              --cache=MODE          none, writeback (default), writethrough, directsync, unsafe
              --discard=MODE        ignore (default) or unmap
              --detect-zeroes=MODE  off (default), on or unmap
              --pid-file=PATH       write the server's process id to PATH once it listens
              --tls-cert=FILE       server certificate (PEM); clients must then use TLS
              --tls-key=FILE        private key of that certificate (PEM)
              --tls-client-ca=FILE  require client certificates signed by this CA (PEM)

        """.Replace("\r", ""));
}
