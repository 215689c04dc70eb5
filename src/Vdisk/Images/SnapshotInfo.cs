namespace Vdisk.Images;

/// <summary>
/// One internal snapshot of an image, as qemu-img snapshot -l and info report it: ID, tag (name), the size of
/// its VM state, when it was taken (seconds and nanoseconds since the epoch), the guest clock then, the
/// record/replay instruction count (-1 when not recorded) and the virtual disk size then.
/// </summary>
public sealed record SnapshotInfo(string Id, string Name, long VmStateSize, uint DateSeconds, uint DateNanoseconds,
    ulong VmClockNanoseconds, long Icount, long DiskSize);
