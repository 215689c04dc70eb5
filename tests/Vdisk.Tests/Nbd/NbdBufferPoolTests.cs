using Vdisk.Nbd;
using Xunit;

namespace Vdisk.Tests.Nbd;

/// <summary>
/// The pool's own accounting: what it has handed out and what it keeps. These figures are the server's, not the
/// test process's, so other tests running alongside cannot move them.
/// </summary>
public sealed class NbdBufferPoolTests
{
    private const int MiB = 1 << 20;
    private static readonly TimeSpan Never = Timeout.InfiniteTimeSpan;

    [Fact]
    public void Every_buffer_is_counted_while_out_and_the_count_returns_to_zero()
    {
        using var pool = new NbdBufferPool(64 * MiB, Never);
        var small = pool.Rent(4096 + 16);
        var large = pool.Rent(32 * MiB + 16);
        Assert.Equal(4096 + 16, small.Length);
        Assert.Equal(32 * MiB + 16, large.Length);
        large.Span[^1] = 0x5a; // the whole length is usable
        Assert.True(pool.RentedBytes >= 32 * MiB + 4096 + 16);
        pool.Return(small);
        pool.Return(large);
        Assert.Equal(0, pool.RentedBytes);
    }

    [Fact]
    public void A_large_buffer_is_reused_and_the_kept_ones_never_exceed_the_limit()
    {
        using var pool = new NbdBufferPool(40 * MiB, Never);
        var a = pool.Rent(32 * MiB);
        pool.Return(a);
        long kept = pool.KeptBytes;
        Assert.InRange(kept, 32 * MiB, 33 * MiB);
        var again = pool.Rent(32 * MiB);
        Assert.Same(a.Mapped, again.Mapped);
        Assert.Equal(0, pool.KeptBytes);
        // Two in use at once exceed the limit: the one returned while the other is still out is unmapped, not kept.
        var b = pool.Rent(32 * MiB);
        pool.Return(again);
        pool.Return(b);
        Assert.Equal(kept, pool.KeptBytes);
        // Asking for another size makes room by unmapping kept buffers.
        var c = pool.Rent(16 * MiB);
        Assert.Equal(0, pool.KeptBytes);
        pool.Return(c);
        Assert.InRange(pool.KeptBytes, 16 * MiB, 17 * MiB);
    }

    [Fact]
    public void Trim_unmaps_everything_kept()
    {
        using var pool = new NbdBufferPool(128 * MiB, Never);
        var buffers = Enumerable.Range(0, 6).Select(i => pool.Rent((1 + i) * MiB)).ToList();
        foreach (var b in buffers) pool.Return(b);
        Assert.True(pool.KeptBytes > 0);
        pool.Trim();
        Assert.Equal(0, pool.KeptBytes);
        Assert.Equal(0, pool.RentedBytes);
    }

    [Fact]
    public async Task Buffers_kept_through_a_whole_idle_period_are_unmapped()
    {
        using var pool = new NbdBufferPool(64 * MiB, TimeSpan.FromMilliseconds(20));
        pool.Return(pool.Rent(8 * MiB));
        Assert.True(pool.KeptBytes > 0);
        // The timer's period is short; the deadline only guards against a hang on a very busy machine.
        for (var deadline = DateTime.UtcNow.AddSeconds(30); pool.KeptBytes > 0 && DateTime.UtcNow < deadline;) await Task.Delay(20);
        Assert.Equal(0, pool.KeptBytes);
    }
}
