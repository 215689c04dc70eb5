using Vdisk.BlockIO;
using Vdisk.Images;
using Xunit;
using static Vdisk.Tests.BlockIO.DeviceIo;

namespace Vdisk.Tests.BlockIO;

/// <summary>Host-file specifics beyond the common contract: O_DIRECT, hole punching, opening errors.</summary>
public class FileBlockDeviceTests
{
    public static TheoryData<DeviceKind> FileKinds => new(TestDevice.AllKinds.Where(k => k != DeviceKind.Memory));

    [Theory, MemberData(nameof(FileKinds))]
    public void DirectIoModesRequireBlockAlignmentOthersNone(DeviceKind kind)
    {
        using var t = TestDevice.Create(kind);
        var cache = TestDevice.CacheOf(kind)!.Value;
        Assert.Equal(cache, ((FileBlockDevice)t.Device).CacheMode);
        Assert.Equal(cache.UsesDirectIo() && OperatingSystem.IsLinux() ? 4096 : 1, t.Device.Alignment);
    }

    [Fact]
    public void DirectIoOnTmpfsEitherWorksOrFailsAsUnsupported()
    {
        // tmpfs accepts O_DIRECT only since Linux 6.6; either way the outcome must be clean and explicit.
        Assert.True(Directory.Exists("/dev/shm"), "this test needs the tmpfs at /dev/shm");
        using var directory = new TempDirectory("/dev/shm");
        BlockDevice device;
        try { device = FileBlockDevice.Create(directory.File("disk.img"), CacheMode.None); }
        catch (DiskImageException e)
        {
            Assert.Equal(DiskImageErrorKind.UnsupportedFeature, e.Kind);
            Assert.Contains("O_DIRECT", e.Message);
            return;
        }
        using (device)
        {
            var data = Pattern(1000, 1);
            device.Write(3, data.AsSpan());
            var back = new byte[1000];
            device.Read(3, back.AsSpan());
            Assert.Equal(data, back);
            Assert.Equal(4096, device.Alignment);
        }
    }

    [Fact]
    public void OpeningAMissingFileReportsNotFound()
    {
        using var directory = new TempDirectory(Path.GetTempPath());
        var e = Assert.Throws<DiskImageException>(() => FileBlockDevice.Open(directory.File("absent.img")));
        Assert.Equal(DiskImageErrorKind.NotFound, e.Kind);
    }

    [Theory]
    [InlineData(DeviceKind.FileWriteback, false)]
    [InlineData(DeviceKind.FileWriteback, true)]
    [InlineData(DeviceKind.FileUnsafe, false)]
    public async Task UnmappingWriteZeroesAndDiscardPunchHoles(DeviceKind kind, bool isAsync)
    {
        const int Chunk = 65_536;
        using var t = TestDevice.Create(kind);
        var io = new DeviceIo(t.Device, isAsync);
        await io.Write(0, Pattern(4 * Chunk, 2));

        await io.WriteZeroes(Chunk, Chunk, mayUnmap: true);
        await io.Discard(3 * Chunk, Chunk);

        Assert.Equal(new DeviceExtent(0, Chunk, true), await io.GetExtent(0, 4 * Chunk));
        Assert.Equal(new DeviceExtent(Chunk, Chunk, false), await io.GetExtent(Chunk, 3 * Chunk));
        Assert.Equal(new DeviceExtent(3 * Chunk, Chunk, false), await io.GetExtent(3 * Chunk, Chunk));
        Assert.All(await io.Read(Chunk, Chunk), b => Assert.Equal(0, b));
        Assert.All(await io.Read(3 * Chunk, Chunk), b => Assert.Equal(0, b));
        Assert.Equal(4 * Chunk, t.Device.Length);
    }

    [Theory, MemberData(nameof(FileKinds))]
    public async Task WriteZeroesPastTheEndNeverCutsOffAConcurrentExtendingWrite(DeviceKind kind)
    {
        const int Block = 4096;
        using var t = TestDevice.Create(kind);
        int rounds = TestDevice.CacheOf(kind)!.Value.IsWriteThrough() ? 300 : 1500; // an fdatasync per request is slow
        var device = t.Device;
        var written = new List<long>();

        // Both append at the end of the file, the writer to odd blocks and the zeroer to even ones, so they never
        // overlap but keep racing to extend it; a zeroer that shrinks the file to its own end loses written blocks.
        long NextBlock(int parity)
        {
            long block = (device.Length + Block - 1) / Block;
            return block % 2 == parity ? block : block + 1;
        }
        var writer = Task.Factory.StartNew(() =>
        {
            for (int i = 0; i < rounds; i++)
            {
                long offset = NextBlock(1) * Block;
                device.Write(offset, Pattern(Block, (int)(offset / Block)).AsSpan());
                written.Add(offset);
            }
        }, TaskCreationOptions.LongRunning);
        var zeroer = Task.Factory.StartNew(() =>
        {
            for (int i = 0; i < rounds; i++) device.WriteZeroes(NextBlock(0) * Block, Block, mayUnmap: i % 2 == 0);
        }, TaskCreationOptions.LongRunning);
        await Task.WhenAll(writer, zeroer);

        var back = new byte[Block];
        var lost = written.Where(offset =>
        {
            device.Read(offset, back.AsSpan());
            return !back.AsSpan().SequenceEqual(Pattern(Block, (int)(offset / Block)));
        }).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {written.Count} written blocks lost, first at {lost.FirstOrDefault()}");
    }
}
