namespace Vdisk.Formats.Qcow2.Check;

/// <summary>
/// The checker's in-memory refcount table: references counted per host cluster, stored in chunks allocated
/// only where references exist, so a huge sparse file does not cost memory in proportion to its size.
/// </summary>
internal sealed class ReferenceCounts
{
    private const int ChunkBits = 16;
    private readonly Dictionary<long, ulong[]> _chunks = new();

    public ulong this[long cluster]
    {
        get => _chunks.TryGetValue(cluster >> ChunkBits, out var c) ? c[cluster & ((1 << ChunkBits) - 1)] : 0;
        set
        {
            if (!_chunks.TryGetValue(cluster >> ChunkBits, out var c))
            {
                if (value == 0) return;
                _chunks[cluster >> ChunkBits] = c = new ulong[1 << ChunkBits];
            }
            c[cluster & ((1 << ChunkBits) - 1)] = value;
        }
    }

    /// <summary>Every cluster with a non-zero count, in ascending order.</summary>
    public IEnumerable<long> Referenced()
    {
        foreach (var key in _chunks.Keys.Order())
        {
            var c = _chunks[key];
            for (int i = 0; i < c.Length; i++)
                if (c[i] != 0) yield return (key << ChunkBits) + i;
        }
    }

    public long Highest()
    {
        long best = -1;
        foreach (var key in _chunks.Keys)
        {
            var c = _chunks[key];
            for (int i = c.Length - 1; i >= 0; i--)
                if (c[i] != 0) { best = Math.Max(best, (key << ChunkBits) + i); break; }
        }
        return best;
    }
}
