using Vdisk.BlockIO;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.BlockIO;

/// <summary>The devices the conformance suite runs against: memory, and a host file in each QEMU cache mode.</summary>
public enum DeviceKind { Memory, FileWriteback, FileWritethrough, FileNone, FileDirectSync, FileUnsafe }

/// <summary>A device under test plus the temporary directory its file lives in, removed on dispose.</summary>
public sealed class TestDevice : IDisposable
{
    private readonly TempDirectory? _directory;

    private TestDevice(BlockDevice device, TempDirectory? directory, CacheMode? cache)
    {
        Device = device;
        _directory = directory;
        _cache = cache;
    }

    private readonly CacheMode? _cache;
    public BlockDevice Device { get; private set; }

    public static IEnumerable<DeviceKind> AllKinds => Enum.GetValues<DeviceKind>();

    public static TheoryData<DeviceKind, bool> KindsAndPaths()
    {
        var data = new TheoryData<DeviceKind, bool>();
        foreach (var kind in AllKinds)
        {
            data.Add(kind, false);
            data.Add(kind, true);
        }
        return data;
    }

    public static TheoryData<DeviceKind> Kinds() => new(AllKinds);

    public static CacheMode? CacheOf(DeviceKind kind) => kind switch
    {
        DeviceKind.Memory => null,
        DeviceKind.FileWriteback => CacheMode.Writeback,
        DeviceKind.FileWritethrough => CacheMode.Writethrough,
        DeviceKind.FileNone => CacheMode.None,
        DeviceKind.FileDirectSync => CacheMode.DirectSync,
        DeviceKind.FileUnsafe => CacheMode.Unsafe,
        _ => throw new ArgumentOutOfRangeException(nameof(kind)),
    };

    /// <summary>A new, empty device of <paramref name="kind"/>.</summary>
    public static TestDevice Create(DeviceKind kind)
    {
        if (CacheOf(kind) is not { } cache) return new TestDevice(new MemoryBlockDevice(), null, null);
        var directory = cache.UsesDirectIo() ? TempDirectory.SupportingDirectIo() : new TempDirectory(Path.GetTempPath());
        return new TestDevice(FileBlockDevice.Create(directory.File("disk.img"), cache), directory, cache);
    }

    /// <summary>Closes the device and opens its content again, as a fresh device of the same kind.</summary>
    public BlockDevice Reopen(bool readOnly)
    {
        var old = Device;
        Device = old is MemoryBlockDevice memory
            ? memory.Clone(readOnly)
            : FileBlockDevice.Open(old.Name, readOnly, _cache!.Value);
        old.Dispose();
        return Device;
    }

    public void Dispose()
    {
        Device.Dispose();
        _directory?.Dispose();
    }
}

/// <summary>A uniquely named directory for one test's files.</summary>
public sealed class TempDirectory : IDisposable
{
    public TempDirectory(string parent)
    {
        Path = System.IO.Path.Combine(parent, "vdisk-test-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>
    /// A directory on a file system that accepts O_DIRECT. tmpfs refused it before Linux 6.6, so after the
    /// temp directory try /var/tmp and the repository's artifacts/ folder; fail loudly if none works.
    /// </summary>
    public static TempDirectory SupportingDirectIo()
    {
        var tried = new List<string>();
        foreach (var parent in DirectIoCandidates())
        {
            var directory = new TempDirectory(parent);
            try
            {
                FileBlockDevice.Create(directory.File("probe"), CacheMode.None).Dispose();
                return directory;
            }
            catch (DiskImageException e) when (e.Kind == DiskImageErrorKind.UnsupportedFeature)
            {
                tried.Add(parent);
                directory.Dispose();
            }
        }
        throw new InvalidOperationException("No directory supports O_DIRECT; tried " + string.Join(", ", tried));
    }

    private static IEnumerable<string> DirectIoCandidates()
    {
        yield return System.IO.Path.GetTempPath();
        if (Directory.Exists("/var/tmp")) yield return "/var/tmp";
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (System.IO.File.Exists(System.IO.Path.Combine(dir.FullName, "Vdisk.slnx")))
            {
                var artifacts = Directory.CreateDirectory(System.IO.Path.Combine(dir.FullName, "artifacts", "test-tmp"));
                yield return artifacts.FullName;
                yield break;
            }
        }
    }

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); }
        catch (IOException) { } // best effort: a leaked temp directory must not fail the test
    }
}

/// <summary>Runs device operations through the sync or the async entry points, so one test covers both paths.</summary>
public sealed class DeviceIo(BlockDevice device, bool isAsync)
{
    public BlockDevice Device => device;

    public async Task Write(long offset, byte[] data)
    {
        if (isAsync) await device.WriteAsync(offset, data);
        else device.Write(offset, data.AsSpan());
    }

    public async Task<byte[]> Read(long offset, int length)
    {
        var buffer = new byte[length];
        buffer.AsSpan().Fill(0xEE); // so a read that leaves bytes untouched cannot pass for zeros
        if (isAsync) await device.ReadAsync(offset, buffer);
        else device.Read(offset, buffer.AsSpan());
        return buffer;
    }

    public async Task WriteZeroes(long offset, long length, bool mayUnmap)
    {
        if (isAsync) await device.WriteZeroesAsync(offset, length, mayUnmap);
        else device.WriteZeroes(offset, length, mayUnmap);
    }

    public async Task Discard(long offset, long length)
    {
        if (isAsync) await device.DiscardAsync(offset, length);
        else device.Discard(offset, length);
    }

    public async Task SetLength(long length)
    {
        if (isAsync) await device.SetLengthAsync(length);
        else device.SetLength(length);
    }

    public async Task Flush()
    {
        if (isAsync) await device.FlushAsync();
        else device.Flush();
    }

    public async Task<DeviceExtent> GetExtent(long offset, long maxLength)
        => isAsync ? await device.GetExtentAsync(offset, maxLength) : device.GetExtent(offset, maxLength);

    /// <summary>Deterministic test data without zero bytes, different for each seed.</summary>
    public static byte[] Pattern(int length, int seed)
    {
        var data = new byte[length];
        new Random(seed).NextBytes(data);
        for (int i = 0; i < data.Length; i++) if (data[i] == 0) data[i] = 1;
        return data;
    }
}
