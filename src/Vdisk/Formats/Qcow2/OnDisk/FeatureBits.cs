namespace Vdisk.Formats.Qcow2.OnDisk;

/// <summary>Incompatible feature bits (header bytes 72-79): an unknown one means the image must not be opened.</summary>
[Flags]
public enum IncompatibleFeatures : ulong
{
    None = 0,
    Dirty = 1 << 0,
    Corrupt = 1 << 1,
    ExternalDataFile = 1 << 2,
    CompressionType = 1 << 3,
    ExtendedL2 = 1 << 4,
    Known = Dirty | Corrupt | ExternalDataFile | CompressionType | ExtendedL2,
}

/// <summary>Compatible feature bits (bytes 80-87): unknown ones may be ignored.</summary>
[Flags]
public enum CompatibleFeatures : ulong
{
    None = 0,
    LazyRefcounts = 1 << 0,
    Known = LazyRefcounts,
}

/// <summary>Autoclear feature bits (bytes 88-95): a writer that does not know a bit clears it.</summary>
[Flags]
public enum AutoclearFeatures : ulong
{
    None = 0,
    Bitmaps = 1 << 0,
    RawExternalData = 1 << 1,
    Known = Bitmaps | RawExternalData,
}

/// <summary>The feature name table QEMU writes into v3 headers, so tools can name bits they do not know.</summary>
public static class FeatureNames
{
    public const byte TypeIncompatible = 0, TypeCompatible = 1, TypeAutoclear = 2;

    public static readonly (byte Type, byte Bit, string Name)[] Table =
    {
        (TypeIncompatible, 0, "dirty bit"),
        (TypeIncompatible, 1, "corrupt bit"),
        (TypeIncompatible, 2, "external data file"),
        (TypeIncompatible, 3, "compression type"),
        (TypeIncompatible, 4, "extended L2 entries"),
        (TypeCompatible, 0, "lazy refcounts"),
        (TypeAutoclear, 0, "bitmaps"),
        (TypeAutoclear, 1, "raw external data"),
    };

    public const int EntrySize = 48;
}
