using Vdisk.Cli.Output;
using Vdisk.Cli.Parsing;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Cli.Commands;

/// <summary>
/// vdisk snapshot [-q] [-U] [-l | -a NAME | -c NAME [--vmstate FILE] | -d NAME | --dump-vmstate NAME OUT] file:
/// qemu-img snapshot, plus VM state in and out.
/// </summary>
internal static class SnapshotCommand
{
    private static readonly LongOption[] Longs =
    {
        new("help", false, "h"), new("quiet", false, "q"), new("force-share", false, "U"),
        new("vmstate", true, "vmstate"), new("dump-vmstate", true, "dump-vmstate"),
    };

    public static int Run(CliContext ctx, IReadOnlyList<string> args)
    {
        var parsed = GetOpt.Parse(args, "la:c:d:hqU", Longs);
        string? action = null, name = null, vmState = null;
        bool forceShare = false;
        foreach (var (key, value) in parsed.Options)
        {
            switch (key)
            {
                case "h": Help.PrintUsage(ctx.Out); return 0;
                case "l" or "a" or "c" or "d" or "dump-vmstate":
                    if (action is not null) throw new CliException("Cannot mix '-l', '-a', '-c', '-d'", showTryHelp: true);
                    action = key;
                    name = value;
                    break;
                case "vmstate": vmState = value; break;
                case "U": forceShare = true; break;
            }
        }
        if (vmState is not null && action != "c") throw new CliException("--vmstate is only valid with -c", showTryHelp: true);
        var positionals = parsed.Positionals.ToList();
        string? output = null;
        if (action == "dump-vmstate")
        {
            if (positionals.Count != 2) throw new CliException("Expecting an output file and one image file name", showTryHelp: true);
            output = positionals[0];
            positionals.RemoveAt(0);
        }
        if (positionals.Count != 1) throw new CliException("Expecting one image file name", showTryHelp: true);
        string file = positionals[0];
        if (action is null) return 0; // qemu-img does nothing without an action

        bool readOnly = action is "l" or "dump-vmstate";
        DiskImage image;
        try { image = DiskImages.Open(file, new ImageOpenOptions { ReadOnly = readOnly, NoBacking = true, ForceShare = forceShare }); }
        catch (IOException e) { throw new CliException(Errors.OpenFailure(file, e)); }
        using (image)
        {
            if (action == "l")
            {
                if (image.Snapshots.Count > 0) ctx.Out.Write(SnapshotTable.ToHuman(image.Snapshots));
                return 0;
            }
            var qcow2 = image as Qcow2Image;
            switch (action)
            {
                case "c":
                    Do(ctx, $"Could not create snapshot '{name}'", qcow2, q =>
                    {
                        using var state = vmState is null ? null : OpenVmStateFile(vmState);
                        q.CreateSnapshot(name!, state);
                    });
                    break;
                case "a":
                    Do(ctx, $"Could not apply snapshot '{name}'", qcow2, q => q.ApplySnapshot(name!), "Failed to load snapshot: No such file or directory");
                    break;
                case "d":
                    Do(ctx, $"Could not delete snapshot '{name}'", qcow2, q => q.DeleteSnapshot(name!), "snapshot not found");
                    break;
                default:
                    Do(ctx, $"Could not read the VM state of snapshot '{name}'", qcow2, q => DumpVmState(q, name!, output!));
                    break;
            }
        }
        return 0;
    }

    private static void Do(CliContext ctx, string what, Qcow2Image? image, Action<Qcow2Image> action, string? notFound = null)
    {
        if (image is null) throw new CliException($"{what}: Operation not supported");
        try { action(image); }
        catch (DiskImageException e) when (e.Kind == DiskImageErrorKind.NotFound && notFound is not null)
        {
            throw new CliException($"{what}: {notFound}");
        }
        catch (IOException e)
        {
            throw new CliException($"{what}: {Errors.Describe(e)}");
        }
    }

    private static FileStream OpenVmStateFile(string path)
    {
        try { return new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"Could not open '{path}': {e.Message}");
        }
    }

    /// <summary>Writes the snapshot's VM state to a file, leaving holes where it reads as zeros.</summary>
    private static void DumpVmState(Qcow2Image image, string name, string output)
    {
        using var view = image.OpenSnapshot(name);
        using var outStream = new FileStream(output, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 16);
        var buffer = new byte[1 << 20];
        long size = view.VmStateSize;
        for (long pos = 0; pos < size;)
        {
            int n = (int)Math.Min(buffer.Length, size - pos);
            view.ReadVmState(pos, buffer.AsMemory(0, n));
            if (buffer.AsSpan(0, n).ContainsAnyExcept((byte)0)) { outStream.Position = pos; outStream.Write(buffer, 0, n); }
            pos += n;
        }
        outStream.SetLength(size);
    }
}
