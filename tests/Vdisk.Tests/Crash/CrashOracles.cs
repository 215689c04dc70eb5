using Vdisk.BlockIO;
using Vdisk.Formats.Qcow2;
using Vdisk.Images;

namespace Vdisk.Tests.Crash;

/// <summary>What check finds on a qcow2 file as a crash left it.</summary>
public sealed record CrashCondition(ImageCheckResult Check, bool Dirty, bool CopiedOnly)
{
    public bool Corrupt => Check.Corruptions != 0 || Check.CheckErrors != 0;
    public bool NeedsRepair => !Check.IsClean || Dirty;
    public bool Clean => !Corrupt && Check.Leaks == 0;
    public bool LeaksOnly => !Corrupt && Check.Leaks != 0;

    /// <summary>
    /// Criterion 3: at most leaks; with lazy refcounts, errors only under the dirty bit; COPIED-flag errors alone
    /// where the crash cut a snapshot operation short. The problem, or null.
    /// </summary>
    public string? Problem(bool lazyRefcounts) => Corrupt && !CopiedOnly && !(lazyRefcounts && Dirty)
        ? $"check found {Check.Corruptions} corruptions{(Dirty ? "" : " without the dirty bit")}: {string.Join("; ", Check.Messages.Take(4))}"
        : null;
}

/// <summary>
/// The criteria every qcow2 file a crash leaves must meet, whichever workload left it: what check finds (3), that
/// check -r all repairs it (4) and that no host cluster is used twice (5). Each returns the problem, or null.
/// Files are opened without their backing files, which none of this needs.
/// </summary>
public static class CrashOracles
{
    public static CrashCondition CheckAsLeft(Qcow2Image readOnly, bool copiedAllowed)
    {
        var check = readOnly.Check();
        bool copiedOnly = copiedAllowed && check.CheckErrors == 0
            && check.Corruptions == check.Messages.Count(m => m.StartsWith("ERROR OFLAG_COPIED", StringComparison.Ordinal));
        return new CrashCondition(check, readOnly.IsDirty, copiedOnly);
    }

    /// <summary>Criterion 4, the repair: a read-write open (which repairs a dirty image), then check -r all.</summary>
    public static string? Repair(BlockDevice device)
    {
        using var rw = Qcow2Image.Open(new BorrowedBlockDevice(device), new ImageOpenOptions { NoBacking = true });
        var repair = rw.Check(CheckRepair.All);
        return repair.Corruptions != 0 || repair.CheckErrors != 0
            ? $"check -r all left {repair.Corruptions} corruptions: {string.Join("; ", repair.Messages.Take(4))}"
            : null;
    }

    /// <summary>Criterion 4, the outcome: a repaired image checks clean and is not dirty.</summary>
    public static string? NotCleanAfterRepair(Qcow2Image repaired)
    {
        var check = repaired.Check();
        return !check.IsClean || repaired.IsDirty
            ? $"not clean after repair ({check.Corruptions} corruptions, {check.Leaks} leaks, dirty {repaired.IsDirty}): {string.Join("; ", check.Messages.Take(4))}"
            : null;
    }

    /// <summary>Criterion 5: no host cluster is referenced twice (counted here, independently of the checker).</summary>
    public static string? ReferencedTwice(BlockDevice device)
    {
        var twice = QcowLayout.Read(device).ReferencedTwice.Take(3).ToList();
        return twice.Count > 0 ? $"host clusters referenced twice: {string.Join(", ", twice)}" : null;
    }
}
