using BenchmarkDotNet.Attributes;
using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Formats.Qcow2.OnDisk;
using Vdisk.Images;

namespace Vdisk.Benchmarks;

/// <summary>Mapped reads, allocating writes and in-place writes through the qcow2 driver on a memory device.</summary>
[MemoryDiagnoser]
public class Qcow2PathBenchmarks
{
    private const long Size = 1L << 30;
    private DiskImage _image = null!;
    private readonly byte[] _block4k = new byte[4096];
    private readonly byte[] _block64k = new byte[65536];
    private long _next;

    [GlobalSetup]
    public void Setup()
    {
        var device = new MemoryBlockDevice();
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = Size });
        _image = Qcow2Image.Open(device, new ImageOpenOptions());
        for (long off = 0; off < 64L << 20; off += 65536) _image.Write(off, _block64k.AsSpan());
    }

    [GlobalCleanup]
    public void Cleanup() => _image.Dispose();

    [Benchmark]
    public void Read64kMapped() => _image.Read((_next++ % 1024) * 65536, _block64k.AsMemory());

    [Benchmark]
    public void Write4kInPlace() => _image.Write((_next++ % 16384) * 4096, _block4k.AsMemory());

    [Benchmark]
    public void Write4kAllocating() => _image.Write((64L << 20) + (_next++ * 65536) % (Size - (64L << 20)), _block4k.AsMemory());

    [Benchmark]
    public ulong DecodeL2Entries()
    {
        ulong sum = 0;
        for (int i = 0; i < 1024; i++) sum += (ulong)new L2Entry(0x8000000000050000UL + (ulong)i * 65536).Kind(false) + (ulong)new L2Entry((ulong)i << 16).HostOffset;
        return sum;
    }
}
