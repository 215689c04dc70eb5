using Vdisk.BlockIO;
using Vdisk.Formats.Raw;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Images;

/// <summary>
/// <see cref="ImageStream"/> against the <see cref="Stream"/> contract, in the manner of dotnet/runtime's
/// StreamConformanceTests: every read/write entry point, every seek origin, misuse and disposal.
/// </summary>
public class ImageStreamTests
{
    public enum IoMode { SyncByte, SyncSpan, SyncArray, AsyncArray, AsyncMemory, SyncApm }

    private const int ImageSize = 65_536;

    public static TheoryData<IoMode> Modes => new(Enum.GetValues<IoMode>());

    private static RawImage NewImage(bool readOnly = false, MemoryBlockDevice? device = null)
        => new(device ?? new MemoryBlockDevice(ImageSize), readOnly);

    private static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        return data;
    }

    private static async Task Write(Stream stream, IoMode mode, byte[] data)
    {
        switch (mode)
        {
            case IoMode.SyncByte: foreach (var b in data) stream.WriteByte(b); break;
            case IoMode.SyncSpan: stream.Write(data.AsSpan()); break;
            case IoMode.SyncArray: stream.Write(data, 0, data.Length); break;
            case IoMode.AsyncArray: await stream.WriteAsync(data, 0, data.Length); break;
            case IoMode.AsyncMemory: await stream.WriteAsync(data.AsMemory()); break;
            case IoMode.SyncApm: stream.EndWrite(stream.BeginWrite(data, 0, data.Length, null, null)); break;
        }
    }

    /// <summary>One read call (one byte for SyncByte); returns the count, as the stream reported it.</summary>
    private static async Task<int> ReadOnce(Stream stream, IoMode mode, byte[] buffer, int offset, int count) => mode switch
    {
        IoMode.SyncByte => stream.ReadByte() is int b and >= 0 ? Store(buffer, offset, (byte)b) : 0,
        IoMode.SyncSpan => stream.Read(buffer.AsSpan(offset, count)),
        IoMode.SyncArray => stream.Read(buffer, offset, count),
        IoMode.AsyncArray => await stream.ReadAsync(buffer, offset, count),
        IoMode.AsyncMemory => await stream.ReadAsync(buffer.AsMemory(offset, count)),
        IoMode.SyncApm => stream.EndRead(stream.BeginRead(buffer, offset, count, null, null)),
        _ => throw new ArgumentOutOfRangeException(nameof(mode)),
    };

    private static int Store(byte[] buffer, int offset, byte value)
    {
        buffer[offset] = value;
        return 1;
    }

    private static async Task<byte[]> ReadToEndOrCount(Stream stream, IoMode mode, int count)
    {
        var buffer = new byte[count];
        int done = 0;
        while (done < count)
        {
            int n = await ReadOnce(stream, mode, buffer, done, count - done);
            if (n == 0) break;
            done += n;
        }
        return buffer[..done];
    }

    [Theory, MemberData(nameof(Modes))]
    public async Task WrittenBytesReadBackAndReachTheImage(IoMode mode)
    {
        using var image = NewImage();
        using var stream = image.AsStream();
        var data = Pattern(mode == IoMode.SyncByte ? 1500 : 10_000, 1);

        stream.Position = 1234;
        await Write(stream, mode, data);
        Assert.Equal(1234 + data.Length, stream.Position);

        Assert.Equal(1234, stream.Seek(1234, SeekOrigin.Begin));
        Assert.Equal(data, await ReadToEndOrCount(stream, mode, data.Length));
        Assert.Equal(1234 + data.Length, stream.Position);

        var direct = new byte[data.Length];
        image.Read(1234, direct.AsSpan());
        Assert.Equal(data, direct);
    }

    [Theory, MemberData(nameof(Modes))]
    public async Task ReadsStopAtTheEndAndReturnZeroPastIt(IoMode mode)
    {
        using var image = NewImage();
        image.Write(ImageSize - 100, Pattern(100, 2).AsSpan());
        using var stream = image.AsStream();

        stream.Position = ImageSize - 100;
        Assert.Equal(Pattern(100, 2), await ReadToEndOrCount(stream, mode, 4096));
        Assert.Equal(ImageSize, stream.Position);

        stream.Position = ImageSize + 5000;
        var buffer = new byte[512];
        Assert.Equal(0, await ReadOnce(stream, mode, buffer, 0, buffer.Length));
        Assert.Equal(ImageSize + 5000, stream.Position);
        Assert.Equal(-1, stream.ReadByte());
    }

    [Fact]
    public void SeekSupportsEveryOriginAndRefusesToGoBeforeTheStart()
    {
        using var image = NewImage();
        using var stream = image.AsStream();
        Assert.True(stream.CanSeek);
        Assert.Equal(ImageSize, stream.Length);

        Assert.Equal(100, stream.Seek(100, SeekOrigin.Begin));
        Assert.Equal(150, stream.Seek(50, SeekOrigin.Current));
        Assert.Equal(140, stream.Seek(-10, SeekOrigin.Current));
        Assert.Equal(ImageSize - 1, stream.Seek(-1, SeekOrigin.End));
        Assert.Equal(ImageSize + 10, stream.Seek(10, SeekOrigin.End)); // past the end is allowed
        Assert.Equal(ImageSize + 10, stream.Position);

        Assert.Throws<IOException>(() => stream.Seek(-1, SeekOrigin.Begin));
        Assert.Throws<IOException>(() => stream.Seek(-(ImageSize + 11), SeekOrigin.Current));
        Assert.Equal(ImageSize + 10, stream.Position);
        Assert.Throws<ArgumentOutOfRangeException>(() => stream.Seek(0, (SeekOrigin)3));
        Assert.Throws<ArgumentOutOfRangeException>(() => stream.Position = -1);
    }

    [Fact]
    public void WritesMayNotGrowTheImageButAnEmptyWriteAnywhereIsANoOp()
    {
        using var image = NewImage();
        using var stream = image.AsStream();
        stream.Position = ImageSize - 10;
        Assert.Throws<NotSupportedException>(() => stream.Write(new byte[11]));
        Assert.Equal(ImageSize - 10, stream.Position);

        stream.Position = ImageSize + 100;
        stream.Write(ReadOnlySpan<byte>.Empty);
        Assert.Equal(ImageSize + 100, stream.Position);
        Assert.Equal(ImageSize, image.Size);
        Assert.Throws<NotSupportedException>(() => stream.SetLength(ImageSize * 2));
    }

    [Fact]
    public void MisuseOfTheArrayOverloadsIsRejected()
    {
        using var image = NewImage();
        using var stream = image.AsStream();
        var buffer = new byte[10];
        Assert.Throws<ArgumentNullException>(() => stream.Read(null!, 0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => stream.Read(buffer, -1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => stream.Write(buffer, 0, -1));
        Assert.ThrowsAny<ArgumentException>(() => stream.Write(buffer, 5, 6));
        Assert.ThrowsAny<ArgumentException>(() => { _ = stream.ReadAsync(buffer, 8, 3); });
        Assert.Equal(0, stream.Position);
    }

    [Fact]
    public async Task ReadOnlyImageGivesAStreamThatCannotWrite()
    {
        var device = new MemoryBlockDevice(ImageSize);
        device.Write(0, Pattern(100, 3).AsSpan());
        using var image = NewImage(readOnly: true, device);
        using var stream = image.AsStream();

        Assert.True(stream.CanRead);
        Assert.False(stream.CanWrite);
        Assert.Throws<NotSupportedException>(() => stream.Write(new byte[1]));
        await Assert.ThrowsAsync<NotSupportedException>(async () => await stream.WriteAsync(new byte[1]));
        Assert.Throws<NotSupportedException>(() => stream.WriteByte(1));
        Assert.Equal(0, stream.Position);
        stream.Flush();
        Assert.Equal(0, device.FlushCount); // nothing to make durable on a read-only image
        Assert.Equal(Pattern(100, 3), await ReadToEndOrCount(stream, IoMode.SyncSpan, 100));
    }

    [Fact]
    public async Task FlushReachesTheDevice()
    {
        var device = new MemoryBlockDevice(ImageSize);
        using var image = NewImage(device: device);
        using var stream = image.AsStream();
        stream.Flush();
        await stream.FlushAsync();
        Assert.Equal(2, device.FlushCount);
    }

    [Fact]
    public void CopyToStreamsTheWholeDisk()
    {
        var device = new MemoryBlockDevice(ImageSize);
        device.Write(30_000, Pattern(5000, 4).AsSpan());
        using var image = NewImage(device: device);
        using var stream = image.AsStream();
        var copy = new MemoryStream();
        stream.CopyTo(copy);
        Assert.Equal(device.ToArray(), copy.ToArray());
    }

    [Fact]
    public async Task DisposedStreamThrowsObjectDisposedAndReportsNoCapabilities()
    {
        using var image = NewImage();
        var stream = image.AsStream();
        stream.Dispose();
        stream.Dispose(); // twice is harmless

        Assert.False(stream.CanRead);
        Assert.False(stream.CanWrite);
        Assert.False(stream.CanSeek);
        Assert.Throws<ObjectDisposedException>(() => _ = stream.Read(new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => stream.Write(new byte[1]));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => _ = await stream.ReadAsync(new byte[1]));
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await stream.WriteAsync(new byte[1]));
        Assert.Throws<ObjectDisposedException>(() => stream.Seek(0, SeekOrigin.Begin));
        Assert.Throws<ObjectDisposedException>(() => stream.Position);
        Assert.Throws<ObjectDisposedException>(() => stream.Length);
        Assert.Throws<ObjectDisposedException>(() => stream.Flush());
        image.Read(0, new byte[1].AsSpan()); // leaveOpen defaults to true: the image is still usable
    }

    [Fact]
    public async Task StreamThatOwnsTheImageDisposesIt()
    {
        var image = NewImage();
        await using (image.AsStream(leaveOpen: false)) { }
        Assert.Throws<ObjectDisposedException>(() => image.Read(0, new byte[1].AsSpan()));
    }
}
