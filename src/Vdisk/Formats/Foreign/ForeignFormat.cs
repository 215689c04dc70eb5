namespace Vdisk.Formats.Foreign;

/// <summary>
/// A format qemu-img 7.2 recognises and Vdisk has no driver for. It is probed like a driver (the same score QEMU's
/// probe gives), only so that such a file is refused by name instead of being taken for raw: reading a VMDK or a
/// VDI as raw, or converting it, would give a wrong disk without a word.
/// </summary>
public sealed class ForeignFormat
{
    /// <summary>A probe: 0 = not this format; 100 = magic matches; 2 = a weak sign (a file name, a script header).</summary>
    public delegate int ProbeFunction(ReadOnlySpan<byte> header, string? path);

    private readonly ProbeFunction _probe;

    public ForeignFormat(string name, string description, ProbeFunction probe)
    {
        Name = name;
        Description = description;
        _probe = probe;
    }

    /// <summary>qemu-img's name for the format: "vmdk", "vdi", ...</summary>
    public string Name { get; }
    /// <summary>What people call it: "VMware VMDK", "VirtualBox VDI", ...</summary>
    public string Description { get; }

    /// <summary>Scores the first 512 bytes of a file (zeros past the end of a shorter one); path may be null.</summary>
    public int Probe(ReadOnlySpan<byte> header, string? path) => _probe(header, path);
}
