using System.Runtime.InteropServices;

namespace Vdisk.Tests.Crash;

/// <summary>
/// What the guest disk may hold after a crash, per 512-byte sector: every content the workload gave a sector,
/// tagged with the guest operation that gave it. The content as of a durability point (a completed flush, or any
/// completed operation in writethrough mode) is the last change at or before it; the changes after it are the
/// candidates an unflushed range may show instead.
/// </summary>
public sealed class SectorModel
{
    public const int SectorSize = 512;
    private static readonly byte[] ZeroSector = new byte[SectorSize];
    private static readonly ulong ZeroHash = Hash(ZeroSector);
    private readonly List<Change>?[] _changes;

    public SectorModel(long diskSize)
    {
        DiskSize = diskSize;
        Current = new byte[diskSize];
        _changes = new List<Change>?[diskSize / SectorSize];
    }

    public long DiskSize { get; }
    /// <summary>The disk as the guest sees it after the last operation.</summary>
    public byte[] Current { get; }

    /// <summary>One content of a sector; <see cref="Lo"/>..<see cref="Hi"/> is the part the operation itself wrote.</summary>
    private readonly record struct Change(int Op, ulong Hash, byte[] Bytes, short Lo, short Hi)
    {
        public bool Partial => Lo != 0 || Hi != SectorSize;
    }

    /// <summary>Records that operation <paramref name="op"/> changed [offset, offset+length) of <see cref="Current"/>.</summary>
    public void Changed(int op, long offset, long length)
    {
        for (long s = offset / SectorSize; s * SectorSize < offset + length; s++)
        {
            long start = s * SectorSize;
            var bytes = Current.AsSpan((int)start, SectorSize).ToArray();
            short lo = (short)Math.Max(0, offset - start), hi = (short)Math.Min(SectorSize, offset + length - start);
            (_changes[s] ??= new List<Change>()).Add(new Change(op, Hash(bytes), bytes, lo, hi));
        }
    }

    /// <summary>
    /// Records that operation <paramref name="op"/> made the disk <paramref name="content"/> (a snapshot applied);
    /// only the sectors that differ change.
    /// </summary>
    public void Replace(int op, ReadOnlySpan<byte> content)
    {
        for (int s = 0; s < _changes.Length; s++)
        {
            var span = content.Slice(s * SectorSize, SectorSize);
            if (span.SequenceEqual(Current.AsSpan(s * SectorSize, SectorSize))) continue;
            span.CopyTo(Current.AsSpan(s * SectorSize));
            Changed(op, (long)s * SectorSize, SectorSize);
        }
    }

    /// <summary>How a read-back disk compares with the model for a crash after durability point <paramref name="durableOp"/>.</summary>
    public sealed record Verdict(int FlushedMismatches, int UnflushedMismatches, string? FirstProblem)
    {
        public bool Ok => FlushedMismatches == 0 && UnflushedMismatches == 0;
    }

    /// <summary>
    /// Compares <paramref name="disk"/> with the model: sectors no operation after <paramref name="durableOp"/>
    /// touched (up to <paramref name="lastOp"/>, the last one that had started) must hold their durable content
    /// exactly; the others that content or a candidate. Where an unaligned write left part of a sector, the
    /// sector may combine pieces, so each byte must come from the durable content or a candidate that wrote it.
    /// </summary>
    public Verdict Verify(ReadOnlySpan<byte> disk, int durableOp, int lastOp)
    {
        int flushed = 0, unflushed = 0;
        string? first = null;
        for (int s = 0; s < _changes.Length; s++)
        {
            var sector = disk.Slice(s * SectorSize, SectorSize);
            var list = _changes[s];
            if (list is null)
            {
                if (!sector.SequenceEqual(ZeroSector)) Record(ref flushed, s, "never written but not zero");
                continue;
            }
            int baseIndex = LastAtOrBefore(list, durableOp);
            var baseBytes = baseIndex < 0 ? ZeroSector : list[baseIndex].Bytes;
            ulong baseHash = baseIndex < 0 ? ZeroHash : list[baseIndex].Hash;
            ulong h = Hash(sector);
            if (h == baseHash && sector.SequenceEqual(baseBytes)) continue;
            bool anyCandidate = false, partial = false, matched = false;
            for (int i = baseIndex + 1; i < list.Count && list[i].Op <= lastOp; i++)
            {
                anyCandidate = true;
                partial |= list[i].Partial;
                if (list[i].Hash == h && sector.SequenceEqual(list[i].Bytes)) { matched = true; break; }
            }
            if (matched) continue;
            if (!anyCandidate)
            {
                Record(ref flushed, s, $"durable content lost (as of op {durableOp})");
                continue;
            }
            if (partial && BytewiseFromCandidates(sector, baseBytes, list, baseIndex, lastOp)) continue;
            Record(ref unflushed, s, $"unflushed sector is neither old nor new (ops {durableOp}..{lastOp})");
        }
        return new Verdict(flushed, unflushed, first);

        void Record(ref int counter, int sector, string what)
        {
            counter++;
            first ??= $"sector {sector} (guest offset 0x{(long)sector * SectorSize:x}): {what}";
        }
    }

    private static bool BytewiseFromCandidates(ReadOnlySpan<byte> sector, byte[] baseBytes, List<Change> list, int baseIndex, int lastOp)
    {
        for (int b = 0; b < SectorSize; b++)
        {
            if (sector[b] == baseBytes[b]) continue;
            bool found = false;
            for (int i = baseIndex + 1; i < list.Count && list[i].Op <= lastOp && !found; i++)
                found = list[i].Lo <= b && b < list[i].Hi && list[i].Bytes[b] == sector[b];
            if (!found) return false;
        }
        return true;
    }

    private static int LastAtOrBefore(List<Change> list, int op)
    {
        int lo = 0, hi = list.Count - 1, found = -1;
        while (lo <= hi)
        {
            int mid = (lo + hi) / 2;
            if (list[mid].Op <= op) { found = mid; lo = mid + 1; }
            else hi = mid - 1;
        }
        return found;
    }

    /// <summary>A fast 64-bit mix of a sector; equality is confirmed byte by byte.</summary>
    private static ulong Hash(ReadOnlySpan<byte> sector)
    {
        ulong h = 0x9E3779B97F4A7C15;
        foreach (ulong v in MemoryMarshal.Cast<byte, ulong>(sector))
        {
            h ^= v;
            h *= 0xFF51AFD7ED558CCD;
            h ^= h >> 29;
        }
        return h;
    }
}
