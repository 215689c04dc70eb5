using Vdisk.BlockIO;
using Vdisk.Images;

namespace Vdisk.Formats.Qcow2;

public sealed class Qcow2Format : ImageFormat
{
    public override string Name => "qcow2";
    public override IReadOnlyCollection<string> CreateOptionNames { get; } = Array.Empty<string>();
    public override int Probe(ReadOnlySpan<byte> header, string path) => 0;
    public override DiskImage Open(BlockDevice device, ImageOpenOptions options) => throw new NotImplementedException();
    public override void Create(BlockDevice device, ImageCreateOptions options) => throw new NotImplementedException();
}
