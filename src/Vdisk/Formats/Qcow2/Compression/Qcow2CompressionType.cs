namespace Vdisk.Formats.Qcow2.Compression;

/// <summary>The qcow2 header's <c>compression_type</c> byte (offset 104, valid when incompatible feature bit 3 is set).</summary>
public enum Qcow2CompressionType : byte
{
    Zlib = 0,
    Zstd = 1,
}
