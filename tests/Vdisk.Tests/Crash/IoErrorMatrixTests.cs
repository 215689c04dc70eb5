using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;
using Xunit;
using Xunit.Abstractions;

namespace Vdisk.Tests.Crash;

/// <summary>
/// The I/O-error matrix, after QEMU's test 026: at each point of <see cref="IoErrorPoints.All"/>, EIO and ENOSPC, once
/// and always, with lazy refcounts off and on. Before the fault, data is written and flushed (the marker). After it,
/// the image is flushed again and closed (or abandoned when that fails too); then both the device as the requests
/// left it and the device as a crash would leave it (only what was flushed) must check clean or leaking only (with
/// lazy refcounts, errors only under the dirty bit), must repair to clean, and must hold every byte that was
/// durable: the setup data, the marker, and, once a later flush succeeded, every acknowledged write.
/// </summary>
public class IoErrorMatrixTests(ITestOutputHelper output)
{
    public static TheoryData<string, bool, InjectedError, bool> Cases()
    {
        var data = new TheoryData<string, bool, InjectedError, bool>();
        foreach (var point in IoErrorPoints.All)
            foreach (bool lazy in new[] { false, true })
                foreach (var error in new[] { InjectedError.Eio, InjectedError.Enospc })
                    foreach (bool once in new[] { true, false })
                        data.Add(point.Name, lazy, error, once);
        return data;
    }

    /// <summary>The guest content the run may be held to, and the ranges it may not (written but not yet durable).</summary>
    private sealed class Expectation(byte[] content)
    {
        public byte[] Content { get; } = content;
        public List<(long Offset, int Length)> Failed { get; } = new();
        public List<(long Offset, int Length)> Unflushed { get; } = new();

        public string? Compare(byte[] disk)
        {
            var skip = new bool[disk.Length];
            foreach (var (o, l) in Failed.Concat(Unflushed)) Array.Fill(skip, true, (int)o, l);
            for (int i = 0; i < disk.Length; i++)
                if (!skip[i] && disk[i] != Content[i]) return $"guest byte 0x{i:x} is 0x{disk[i]:x2}, expected 0x{Content[i]:x2}";
            return null;
        }
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void ErrorLeavesAnImageThatChecksCleanOrLeakingAndKeepsDurableData(string pointName, bool lazy, InjectedError error, bool once)
    {
        var point = IoErrorPoints.All.Single(p => p.Name == pointName);
        var baseDevice = point.Setup(lazy);
        var dry = DryRunOf(point, baseDevice);
        var aim = point.Target(dry);
        Assert.True(aim is not null, "the dry run did not reach the point");

        var expect = new Expectation(ReadAll(baseDevice));
        var inner = baseDevice.Clone();
        var fault = new FaultInjectingBlockDevice(inner, leaveInnerOpen: true);
        var image = Qcow2Image.Open(new BorrowedBlockDevice(fault), new ImageOpenOptions());
        Run(image, IoErrorPoints.Marker, expect);
        Run(image, new Step(StepKind.Flush), expect);
        if (point.ReopenBeforeTrigger)
        {
            image.Dispose();
            image = Qcow2Image.Open(new BorrowedBlockDevice(fault), new ImageOpenOptions());
        }
        fault.AddRule(new FaultRule(point.Operation, error) { Range = aim!.Range, Nth = aim.Nth, Once = once });

        Exception? failure = null;
        foreach (var step in point.Trigger)
        {
            try { Run(image, step, expect); }
            catch (Exception e) when (e is IOException or DiskImageException)
            {
                failure = e;
                if (step.Kind == StepKind.Write) expect.Failed.Add((step.Offset, step.Length));
                break;
            }
        }
        if (fault.InjectedFaults == 0 && point.Name.StartsWith("header", StringComparison.Ordinal) && !lazy)
            return; // without lazy refcounts nothing here writes the header
        Assert.True(fault.InjectedFaults > 0, "the fault never fired: the target range is wrong");
        Assert.True(failure is not null, "an injected fault did not surface as an error");
        output.WriteLine($"{point.Name}, lazy {lazy}, {error}, {(once ? "once" : "always")}: {failure!.GetType().Name}: {failure.Message}");

        if (once)
        {
            // The fault is gone: the image must carry on, and a successful flush makes every acknowledged write durable.
            Run(image, new Step(StepKind.Flush), expect);
            Run(image, new Step(StepKind.Write, 3 << 20, 8192, 0x60), expect);
            Run(image, new Step(StepKind.Flush), expect);
            image.Dispose();
        }
        else
        {
            try { image.Flush(); } catch (Exception e) when (e is IOException or DiskImageException) { }
            try { image.Dispose(); } catch (Exception e) when (e is IOException or DiskImageException) { image.Abandon(); }
        }

        Verify("as left", inner.Clone(), lazy, expect);
        Verify("after a crash", fault.SimulateCrash(), lazy, expect);
    }

    private void Verify(string which, MemoryBlockDevice device, bool lazy, Expectation expect)
    {
        using (var ro = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            var check = ro.Check();
            output.WriteLine($"  {which}: {check.Corruptions} corruptions, {check.Leaks} leaks, dirty {ro.IsDirty}, corrupt bit {ro.IsCorrupt}");
            Assert.True(check.Corruptions == 0 || (lazy && ro.IsDirty),
                $"{which}: {check.Corruptions} corruptions: {string.Join("; ", check.Messages.Take(4))}");
            Assert.False(ro.IsCorrupt, $"{which}: the image was marked corrupt");
            Assert.Null(expect.Compare(ReadAll(ro)));
        }
        using (var rw = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ForCheck = true }))
            rw.Check(CheckRepair.All);
        using (var after = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true }))
        {
            var check = after.Check();
            Assert.True(check.IsClean && !after.IsDirty, $"{which}, after repair: {string.Join("; ", check.Messages.Take(4))}");
            Assert.Null(expect.Compare(ReadAll(after)));
        }
    }

    private static DryRun DryRunOf(IoErrorPoint point, MemoryBlockDevice baseDevice)
    {
        var device = baseDevice.Clone();
        var recorder = new RecordingBlockDevice(device, leaveInnerOpen: true);
        var ignored = new Expectation(new byte[IoErrorPoints.DiskSize]);
        int armed;
        var image = Qcow2Image.Open(new BorrowedBlockDevice(recorder), new ImageOpenOptions());
        try
        {
            Run(image, IoErrorPoints.Marker, ignored);
            Run(image, new Step(StepKind.Flush), ignored);
            if (point.ReopenBeforeTrigger)
            {
                image.Dispose();
                image = Qcow2Image.Open(new BorrowedBlockDevice(recorder), new ImageOpenOptions());
            }
            armed = recorder.Records.Length;
            foreach (var step in point.Trigger) Run(image, step, ignored);
        }
        finally { image.Dispose(); }
        return new DryRun(baseDevice, QcowLayout.Read(baseDevice), device, QcowLayout.Read(device), recorder.Records, armed);
    }

    private static void Run(Qcow2Image image, Step step, Expectation expect)
    {
        switch (step.Kind)
        {
            case StepKind.Write:
                var data = IoErrorPoints.Pattern(step.Offset, step.Length, step.Tag);
                image.Write(step.Offset, data.AsSpan());
                data.CopyTo(expect.Content, step.Offset);
                expect.Unflushed.Add((step.Offset, step.Length));
                break;
            case StepKind.Read:
                image.Read(step.Offset, new byte[step.Length].AsSpan());
                break;
            case StepKind.Flush:
                image.Flush();
                expect.Unflushed.Clear();
                break;
            case StepKind.MarkClean:
                image.MarkClean();
                break;
        }
    }

    private static byte[] ReadAll(MemoryBlockDevice device)
    {
        using var image = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { ReadOnly = true });
        return ReadAll(image);
    }

    private static byte[] ReadAll(DiskImage image)
    {
        var disk = new byte[image.Size];
        image.Read(0, disk.AsMemory());
        return disk;
    }
}
