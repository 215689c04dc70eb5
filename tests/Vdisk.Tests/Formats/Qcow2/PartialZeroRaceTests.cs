using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;

namespace Vdisk.Tests.Formats.Qcow2;

/// <summary>
/// Write-zeroes of part of a (sub)cluster whose rest reads as zeros turns the whole (sub)cluster into a zero one
/// (iotest 154). That decision and the entry change must be one step: a data write into the rest of the same
/// (sub)cluster, running at the same time, must survive it. (NbdSoakTests found 82,245 wrong bytes when they were
/// two steps.)
/// </summary>
public class PartialZeroRaceTests
{
    private const int Iterations = 1500;
    /// <summary>Iterations whose data write is held at the device, with its allocation in flight, while the zero request runs.</summary>
    private const int Held = 40;

    [Theory]
    [InlineData(4096, false, false)]   // the (sub)cluster is a whole 4 KiB cluster
    [InlineData(4096, false, true)]    // ... over a backing file that reads zeros (the data write copies from it)
    [InlineData(65536, true, false)]   // extended L2: a 2 KiB subcluster
    public async Task PartialZeroesRacingADataWriteIntoTheRestOfTheSameSubclusterLoseNothing(int clusterSize, bool extended, bool backing)
    {
        int unit = extended ? clusterSize / 32 : clusterSize;
        long size = (long)Iterations * unit;
        var options = new Dictionary<string, string> { ["cluster_size"] = $"{clusterSize}" };
        if (extended) options["extended_l2"] = "on";
        var openOptions = new ImageOpenOptions();
        if (backing)
        {
            var baseDevice = new MemoryBlockDevice(name: "base.qcow2");
            new Qcow2Format().Create(baseDevice, new ImageCreateOptions { Size = size });
            options["backing_file"] = "base.qcow2";
            openOptions = new ImageOpenOptions { BackingOpener = (_, o) => Qcow2Image.Open(new BorrowedBlockDevice(baseDevice), o) };
        }
        var device = new MemoryBlockDevice(name: "race.qcow2");
        new Qcow2Format().Create(device, new ImageCreateOptions { Size = size, Options = options });

        // Iteration i works on (sub)cluster i only, which is untouched before: a zero request covers one side of a
        // split point, a data write part of the other side. Their ranges never overlap, so the outcome does not
        // depend on their order.
        var rng = new Random(clusterSize + (backing ? 1 : 0));
        var plans = Enumerable.Range(0, Iterations).Select(i =>
        {
            long start = (long)i * unit;
            int split = 512 * rng.Next(1, unit / 512);
            bool zeroFirst = rng.Next(2) == 0;
            var zero = zeroFirst ? (start, split) : (start + split, unit - split);
            var dataRange = zeroFirst ? (start + split, unit - split) : (start, split);
            var data = new byte[dataRange.Item2];
            rng.NextBytes(data);
            return (Zero: zero, DataOffset: dataRange.Item1, Data: data, Hold: i < Held ? new ManualResetEventSlim() : null);
        }).ToArray();

        var holding = new HoldingDevice(device);
        using var image = Qcow2Image.Open(holding, openOptions);
        using var together = new Barrier(2);
        var zeroer = Task.Factory.StartNew(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                together.SignalAndWait();
                // A held iteration starts once the data write has its allocation in flight: the window in which a
                // check made apart from the entry change would see "no data here" and then zero the cluster.
                plans[i].Hold?.Wait(TimeSpan.FromSeconds(30));
                var (offset, length) = plans[i].Zero;
                if (i % 2 == 0) image.WriteZeroes(offset, length);
                else await image.WriteZeroesAsync(offset, length);
            }
        }, TaskCreationOptions.LongRunning).Unwrap();
        var writer = Task.Factory.StartNew(async () =>
        {
            for (int i = 0; i < Iterations; i++)
            {
                together.SignalAndWait();
                HoldingDevice.Next.Value = plans[i].Hold;
                if (i % 3 == 0) await image.WriteAsync(plans[i].DataOffset, plans[i].Data);
                else image.Write(plans[i].DataOffset, plans[i].Data.AsSpan());
                plans[i].Hold?.Set(); // in case the write never reached the device
            }
        }, TaskCreationOptions.LongRunning).Unwrap();
        await Task.WhenAll(zeroer, writer);

        var shadow = new byte[size];
        foreach (var p in plans) p.Data.CopyTo(shadow.AsSpan((int)p.DataOffset));
        var back = new byte[size];
        image.Read(0, back.AsSpan());
        var lost = Enumerable.Range(0, Iterations).Where(i =>
            !back.AsSpan(i * unit, unit).SequenceEqual(shadow.AsSpan(i * unit, unit))).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {Iterations} (sub)clusters differ from the shadow, first {string.Join(", ", lost.Take(5))}");
        Assert.True(image.Check().IsClean);
    }

    /// <summary>
    /// Holds the first write or write-zeroes of a request whose flow carries an event for a moment after setting it.
    /// The pause only widens the window the test probes; no outcome depends on its length.
    /// </summary>
    private sealed class HoldingDevice(BlockDevice inner) : BlockDevice
    {
        public static readonly AsyncLocal<ManualResetEventSlim?> Next = new();

        public override string Name => inner.Name;
        public override bool IsReadOnly => false;
        public override long GetLength() => inner.GetLength();
        protected internal override ValueTask ReadCoreAsync(long offset, Memory<byte> buffer, bool async, CancellationToken ct) => inner.ReadCoreAsync(offset, buffer, async, ct);
        protected internal override async ValueTask WriteCoreAsync(long offset, ReadOnlyMemory<byte> buffer, bool async, CancellationToken ct)
        {
            await HoldAsync(async).ConfigureAwait(false);
            await inner.WriteCoreAsync(offset, buffer, async, ct).ConfigureAwait(false);
        }
        protected internal override async ValueTask WriteZeroesCoreAsync(long offset, long length, bool mayUnmap, bool async, CancellationToken ct)
        {
            await HoldAsync(async).ConfigureAwait(false);
            await inner.WriteZeroesCoreAsync(offset, length, mayUnmap, async, ct).ConfigureAwait(false);
        }
        protected internal override ValueTask DiscardCoreAsync(long offset, long length, bool async, CancellationToken ct) => inner.DiscardCoreAsync(offset, length, async, ct);
        protected internal override ValueTask FlushCoreAsync(bool async, CancellationToken ct) => inner.FlushCoreAsync(async, ct);
        protected internal override ValueTask SetLengthCoreAsync(long length, bool async, CancellationToken ct) => inner.SetLengthCoreAsync(length, async, ct);

        private static async ValueTask HoldAsync(bool async)
        {
            // Set once: later device writes of the same request pass (the event is per iteration).
            if (Next.Value is not { IsSet: false } hold) return;
            hold.Set();
            if (async) await Task.Delay(20).ConfigureAwait(false); else Thread.Sleep(20);
        }
    }
}
