using System.Buffers.Binary;
using Vdisk.Images;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>
/// Workloads shared by the unit tests (on a MemoryBlockDevice) and the interop tests (on a file, followed by
/// qemu-img check). Only the public image API is used, so the interop project can compile this file too.
/// </summary>
public static class Qcow2Scenarios
{
    /// <summary>
    /// Writes <paramref name="bytes"/> of seeded data in 64 KiB pieces at shuffled offsets, returning the shadow
    /// copy and the distinct refcount table offsets seen on the way (one per relocation, plus the first).
    /// </summary>
    public static (byte[] Shadow, List<long> TableOffsets) FillShuffled(DiskImage image, Func<long> tableOffset, long bytes, int seed)
    {
        var rng = new Random(seed);
        var shadow = new byte[image.Size];
        var offsets = new List<long> { tableOffset() };
        const int piece = 64 << 10;
        var order = Enumerable.Range(0, (int)(bytes / piece)).OrderBy(_ => rng.Next()).ToArray();
        foreach (int i in order)
        {
            var data = new byte[piece];
            rng.NextBytes(data);
            image.Write((long)i * piece, data.AsSpan());
            data.CopyTo(shadow, (long)i * piece);
            if (tableOffset() != offsets[^1]) offsets.Add(tableOffset());
        }
        return (shadow, offsets);
    }

    public const int BlockSize = 4096;

    /// <summary>
    /// Eight writers (half sync, half async) writing whole aligned 4 KiB blocks, each filled with its writer's
    /// id and sequence number, at random blocks of a small region so that they collide on clusters being
    /// allocated. Returns, per block, the last sequence number each writer wrote there.
    /// </summary>
    public static Dictionary<long, Dictionary<int, int>> ConcurrentWriters(DiskImage image, long regionBytes, int writesPerThread, int seed)
    {
        const int threads = 8;
        var last = new Dictionary<int, int>[threads][];
        long blocks = regionBytes / BlockSize;
        using var start = new Barrier(threads);
        var tasks = Enumerable.Range(0, threads).Select(t => Task.Factory.StartNew(async () =>
        {
            var rng = new Random(seed * 31 + t);
            var mine = new Dictionary<int, int>[blocks];
            start.SignalAndWait();
            for (int seq = 1; seq <= writesPerThread; seq++)
            {
                long block = rng.NextInt64(blocks);
                var data = Tag(t, seq);
                if (t % 2 == 0) image.Write(block * BlockSize, data.AsSpan());
                else await image.WriteAsync(block * BlockSize, data);
                (mine[block] ??= new())[t] = seq;
            }
            last[t] = mine;
        }, TaskCreationOptions.LongRunning).Unwrap()).ToArray();
        Task.WaitAll(tasks);

        var result = new Dictionary<long, Dictionary<int, int>>();
        for (int t = 0; t < threads; t++)
            for (long b = 0; b < blocks; b++)
                if (last[t][b] is { } d)
                    foreach (var (thread, seq) in d) (result.TryGetValue(b, out var r) ? r : result[b] = new())[thread] = seq;
        return result;
    }

    public static byte[] Tag(int thread, int seq)
    {
        var data = new byte[BlockSize];
        for (int i = 0; i < BlockSize; i += 8)
        {
            BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(i), thread);
            BinaryPrimitives.WriteInt32BigEndian(data.AsSpan(i + 4), seq);
        }
        return data;
    }

    /// <summary>
    /// Null when every written block holds one complete write that was the last one some writer made to it
    /// (a writer's earlier write there cannot win over its own later one), and every other block is zero.
    /// Otherwise a description of the first bad block.
    /// </summary>
    public static string? VerifyConcurrentResult(DiskImage image, long regionBytes, Dictionary<long, Dictionary<int, int>> lastWrites)
    {
        var block = new byte[BlockSize];
        for (long b = 0; b < regionBytes / BlockSize; b++)
        {
            image.Read(b * BlockSize, block.AsSpan());
            int thread = BinaryPrimitives.ReadInt32BigEndian(block);
            int seq = BinaryPrimitives.ReadInt32BigEndian(block.AsSpan(4));
            if (!lastWrites.TryGetValue(b, out var writers))
            {
                if (block.AsSpan().ContainsAnyExcept((byte)0)) return $"block {b} was never written but is not zero";
                continue;
            }
            if (!block.AsSpan().SequenceEqual(Tag(thread, seq)))
                return $"block {b} is torn: starts as writer {thread} seq {seq} but does not hold that write throughout";
            if (!writers.TryGetValue(thread, out int lastSeq) || lastSeq != seq)
                return $"block {b} holds writer {thread} seq {seq}, which is not that writer's last write there ({(writers.TryGetValue(thread, out var l) ? l : -1)})";
        }
        return null;
    }
}
