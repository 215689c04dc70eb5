#!/usr/bin/env python3
"""The storage's floor for the writethrough lazy-refcount benchmark: the same system calls, in the same order, that
`bench -t writethrough -w -s 4k -S 65536` makes per request on a fresh qcow2 image (64 KiB clusters), with no image
format, no allocator and no caches. Run on the file system the benchmark uses, it shows how much faster the
lazy_refcounts=on sequence can possibly be than the lazy_refcounts=off one on this storage.

Per request, as strace shows for both vdisk and qemu-img:
  on:  fallocate(ZERO_RANGE) of the new cluster past the end; pwrite 4 KiB data; pwrite the L2 page; fdatasync
  off: fallocate(ZERO_RANGE); pwrite data; pwrite the refcount page; fdatasync (refcounts before the L2 entry);
       pwrite the L2 page; fdatasync

usage: sync-floor.py DIR [COUNT] [REPEAT]  -- prints the best time of each sequence and their ratio
       sync-floor.py DIR COUNT on|off        -- prints the seconds of one run of one sequence
"""
import ctypes
import os
import sys
import time

CLUSTER = 65536
PAGE = 4096
FALLOC_FL_ZERO_RANGE = 0x10
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def zero_range(fd, offset, length):
    if libc.fallocate(fd, FALLOC_FL_ZERO_RANGE, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"fallocate(FALLOC_FL_ZERO_RANGE) at {offset}: {os.strerror(err)}")


def run(path, count, lazy):
    """Seconds for COUNT requests of one sequence on a fresh file."""
    data = b"\xab" * PAGE
    l2_page = b"\x80" + b"\0" * (PAGE - 1)
    refcount_page = b"\0\1" * (PAGE // 2)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        # the clusters an image holds before the measured requests; the refcount block (2) and the L2 table (5)
        # sit where vdisk and qemu-img have them
        for c in range(6):
            os.pwrite(fd, b"\0" * CLUSTER, c * CLUSTER)
        os.fdatasync(fd)
        end = 6 * CLUSTER
        start = time.monotonic()
        for i in range(count):
            zero_range(fd, end, CLUSTER)
            os.pwrite(fd, data, end)
            if not lazy:
                os.pwrite(fd, refcount_page, 2 * CLUSTER + (i * 2 // PAGE) * PAGE % CLUSTER)
                os.fdatasync(fd)
            os.pwrite(fd, l2_page, 5 * CLUSTER + (i * 8 // PAGE) * PAGE % CLUSTER)
            os.fdatasync(fd)
            end += CLUSTER
        return time.monotonic() - start
    finally:
        os.close(fd)
        os.unlink(path)


def main():
    folder = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    path = os.path.join(folder, "sync-floor.tmp")
    if len(sys.argv) > 3 and sys.argv[3] in ("on", "off"):
        print(f"{run(path, count, sys.argv[3] == 'on'):.3f}")
        return
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    best = {True: None, False: None}
    for _ in range(repeat):
        for lazy in (False, True):  # interleaved, so that both see the same moments of a noisy disk
            t = run(path, count, lazy)
            best[lazy] = t if best[lazy] is None else min(best[lazy], t)
    print(f"off {best[False]:.3f} on {best[True]:.3f} ratio {best[False] / best[True]:.2f}")


if __name__ == "__main__":
    main()
