namespace Vdisk.BlockIO;

/// <summary>
/// QEMU's cache modes (qemu-img -t). They combine three settings: whether the host page cache is bypassed
/// (O_DIRECT), whether every write is followed by a flush (the guest sees a write-through cache), and whether
/// flushes are ignored altogether.
/// </summary>
public enum CacheMode
{
    /// <summary>Host page cache, flushes honoured. QEMU's default for the tools.</summary>
    Writeback,
    /// <summary>Host page cache, every write is durable before it completes.</summary>
    Writethrough,
    /// <summary>O_DIRECT, flushes honoured.</summary>
    None,
    /// <summary>O_DIRECT and every write durable.</summary>
    DirectSync,
    /// <summary>Host page cache, flushes ignored: fast and unsafe.</summary>
    Unsafe,
}

public static class CacheModes
{
    public static bool UsesDirectIo(this CacheMode mode) => mode is CacheMode.None or CacheMode.DirectSync;
    public static bool IsWriteThrough(this CacheMode mode) => mode is CacheMode.Writethrough or CacheMode.DirectSync;
    public static bool IgnoresFlush(this CacheMode mode) => mode is CacheMode.Unsafe;

    /// <summary>Parses a qemu-img cache name ("writeback", "none", ...); "off" is QEMU's alias of "none".</summary>
    public static bool TryParse(string text, out CacheMode mode)
    {
        switch (text)
        {
            case "writeback": mode = CacheMode.Writeback; return true;
            case "writethrough": mode = CacheMode.Writethrough; return true;
            case "none": case "off": mode = CacheMode.None; return true;
            case "directsync": mode = CacheMode.DirectSync; return true;
            case "unsafe": mode = CacheMode.Unsafe; return true;
            default: mode = default; return false;
        }
    }

    public static string ToQemuName(this CacheMode mode) => mode switch
    {
        CacheMode.Writeback => "writeback",
        CacheMode.Writethrough => "writethrough",
        CacheMode.None => "none",
        CacheMode.DirectSync => "directsync",
        CacheMode.Unsafe => "unsafe",
        _ => throw new ArgumentOutOfRangeException(nameof(mode)),
    };
}
