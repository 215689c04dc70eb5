namespace Vdisk.Tests.Nbd;

/// <summary>
/// What the NBD soak expects the disk to hold, byte by byte. After a TRIM the contents are unspecified (NBD spec):
/// such bytes may read as their old value or as zero, and the first read pins them to what it saw, so that later
/// reads must agree. Not thread-safe: the soak changes a range only while it owns it.
/// </summary>
public sealed class NbdSoakShadow
{
    private readonly byte[] _bytes;
    private readonly ulong[] _trimmed; // one bit per byte

    public NbdSoakShadow(long size)
    {
        _bytes = new byte[size];
        _trimmed = new ulong[(size + 63) / 64];
    }

    public long Size => _bytes.LongLength;

    public void Write(long offset, ReadOnlySpan<byte> data)
    {
        data.CopyTo(_bytes.AsSpan(checked((int)offset)));
        SetTrimmed(offset, data.Length, false);
    }

    public void Zero(long offset, long length)
    {
        _bytes.AsSpan(checked((int)offset), checked((int)length)).Clear();
        SetTrimmed(offset, length, false);
    }

    public void Trim(long offset, long length) => SetTrimmed(offset, length, true);

    /// <summary>
    /// Compares what was read at <paramref name="offset"/> with the model; with <paramref name="pin"/>, trimmed bytes
    /// become known as what was read. Returns the number of wrong bytes and the first wrong offset (or -1).
    /// </summary>
    public (long Wrong, long First) Verify(long offset, ReadOnlySpan<byte> got, bool pin)
    {
        var expected = _bytes.AsSpan(checked((int)offset), got.Length);
        if (!AnyTrimmed(offset, got.Length))
        {
            if (got.SequenceEqual(expected)) return (0, -1);
            long wrong = 0, first = -1;
            for (int i = 0; i < got.Length; i++)
                if (got[i] != expected[i])
                {
                    if (first < 0) first = offset + i;
                    wrong++;
                }
            return (wrong, first);
        }
        long bad = 0, firstBad = -1;
        for (int i = 0; i < got.Length; i++)
        {
            long at = offset + i;
            bool trimmed = IsTrimmed(at);
            bool ok = got[i] == expected[i] || (trimmed && got[i] == 0);
            if (!ok)
            {
                if (firstBad < 0) firstBad = at;
                bad++;
            }
            else if (trimmed && pin)
            {
                expected[i] = got[i];
                _trimmed[at >> 6] &= ~(1UL << (int)(at & 63));
            }
        }
        return (bad, firstBad);
    }

    /// <summary>Known bytes of the range that are not zero (a BLOCK_STATUS "zero" extent must have none); trimmed bytes get pinned to zero.</summary>
    public (long Wrong, long First) VerifyZero(long offset, long length)
    {
        long bad = 0, first = -1;
        for (long at = offset; at < offset + length; at++)
        {
            if (IsTrimmed(at))
            {
                _bytes[at] = 0;
                _trimmed[at >> 6] &= ~(1UL << (int)(at & 63));
            }
            else if (_bytes[at] != 0)
            {
                if (first < 0) first = at;
                bad++;
            }
        }
        return (bad, first);
    }

    /// <summary>Bytes whose content is unspecified since a TRIM, in the range.</summary>
    public long TrimmedBytes(long offset, long length)
    {
        long n = 0;
        for (long at = offset; at < offset + length; at++) if (IsTrimmed(at)) n++;
        return n;
    }

    private bool IsTrimmed(long at) => (_trimmed[at >> 6] & (1UL << (int)(at & 63))) != 0;

    private bool AnyTrimmed(long offset, long length)
    {
        long end = offset + length;
        for (long word = offset >> 6; word <= (end - 1) >> 6; word++)
        {
            ulong bits = _trimmed[word];
            if (bits == 0) continue;
            long wordStart = word << 6;
            int lo = (int)Math.Max(0, offset - wordStart), hi = (int)Math.Min(64, end - wordStart);
            ulong mask = (hi == 64 ? ulong.MaxValue : (1UL << hi) - 1) & ~((1UL << lo) - 1);
            if ((bits & mask) != 0) return true;
        }
        return false;
    }

    private void SetTrimmed(long offset, long length, bool value)
    {
        if (length <= 0) return;
        long end = offset + length;
        for (long word = offset >> 6; word <= (end - 1) >> 6; word++)
        {
            long wordStart = word << 6;
            int lo = (int)Math.Max(0, offset - wordStart), hi = (int)Math.Min(64, end - wordStart);
            ulong mask = (hi == 64 ? ulong.MaxValue : (1UL << hi) - 1) & ~((1UL << lo) - 1);
            if (value) _trimmed[word] |= mask;
            else _trimmed[word] &= ~mask;
        }
    }
}
