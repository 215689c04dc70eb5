#!/usr/bin/env python3
"""Abusive NBD clients against a server on a unix socket, and the server's RSS (VmRSS) while they run.

usage: nbd-abuse.py SOCKET PID [--export NAME] [--churn N] [--malformed N] [--heavy-seconds S] [--hold S]
                   [--settle S] [--json]

Eight clients at once, each on its own thread:
  noread-read x2   pipelines up to 64 32 MiB READs (simple replies: each needs a full buffer), never reads a reply
  noread-write x2  pipelines up to 64 32 MiB WRITEs, never reads a reply
  big-write        32 MiB WRITEs, 4 in flight, replies read (a well-behaved but heavy client)
  big-read         32 MiB structured READs, 4 in flight, replies read
  malformed        connections that break the protocol: bad magic, oversized and truncated WRITEs, unknown
                   commands and flags, garbage in the handshake, huge option lengths, reads past the end
  churn            N connections (default 5000) that come and go: at once, after the greeting, mid-handshake,
                   after a few requests, in the middle of a 32 MiB WRITE payload
The non-reading clients hold their connections for --hold seconds (default 10), then leave; the heavy ones send
for --heavy-seconds (default 10); malformed makes --malformed connections (default 300). RSS is sampled every 50 ms from /proc/PID/status. Prints idle (before any client), peak
(while they run) and after (--settle seconds after the last one left, default 5) in MiB.
"""
import argparse
import json
import os
import random
import socket
import struct
import sys
import threading
import time

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
OPT_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
OPT_GO, OPT_STRUCTURED_REPLY = 7, 8
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
BIG = 32 << 20
PAYLOAD = bytes(random.Random(1).getrandbits(8) for _ in range(4096)) * (BIG // 4096)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def recv_exact(s, n):
    parts = []
    while n > 0:
        b = s.recv(min(n, 1 << 20))
        if not b:
            raise EOFError("server closed")
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def connect(path, timeout=30):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)


def option_reply(s):
    magic, opt, typ, length = struct.unpack(">QIII", recv_exact(s, 20))
    if magic != OPT_REPLY_MAGIC:
        raise ValueError("bad option reply magic")
    return typ, recv_exact(s, length)


def negotiate(path, export, structured):
    s = connect(path)
    greeting = recv_exact(s, 18)
    if struct.unpack(">Q", greeting[:8])[0] != NBDMAGIC:
        raise ValueError("bad greeting")
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    if structured:
        option(s, OPT_STRUCTURED_REPLY)
        if option_reply(s)[0] != REP_ACK:
            raise ValueError("structured replies refused")
    name = export.encode()
    option(s, OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    size = None
    while True:
        typ, data = option_reply(s)
        if typ == REP_ACK:
            return s, size
        if typ != REP_INFO:
            raise ValueError(f"GO failed: {typ} {data!r}")
        if struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]


def request(cmd, cookie, offset, length, flags=0, magic=REQUEST_MAGIC):
    return struct.pack(">IHHQQI", magic, flags, cmd, cookie, offset, length)


def read_reply(s, read_lengths):
    """One whole reply (all chunks of a structured one); returns (cookie, error)."""
    magic = struct.unpack(">I", recv_exact(s, 4))[0]
    if magic == SIMPLE_MAGIC:
        error, cookie = struct.unpack(">IQ", recv_exact(s, 12))
        if error == 0 and read_lengths.get(cookie):
            recv_exact(s, read_lengths[cookie])
        return cookie, error
    if magic != STRUCTURED_MAGIC:
        raise ValueError(f"bad reply magic {magic:#x}")
    error = 0
    while True:
        flags, typ, cookie, length = struct.unpack(">HHQI", recv_exact(s, 16))
        data = recv_exact(s, length)
        if typ & 0x8000:
            error = struct.unpack(">I", data[:4])[0]
        if flags & 1:
            return cookie, error
        if struct.unpack(">I", recv_exact(s, 4))[0] != STRUCTURED_MAGIC:
            raise ValueError("bad chunk magic")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n


def no_read(path, export, size, cmd, hold, stats):
    """Sends 32 MiB requests until the server stops taking them (at most 64), never reads a reply, and leaves
    after holding the connection for `hold` seconds."""
    until = time.monotonic() + hold
    s, _ = negotiate(path, export, structured=False)
    s.settimeout(2)
    cookie = 0
    try:
        while time.monotonic() < until and cookie < 64:
            cookie += 1
            offset = (cookie * BIG) % (size - BIG)
            s.sendall(request(cmd, cookie, offset, BIG) + (PAYLOAD if cmd == CMD_WRITE else b""))
            stats.add("noread-sent")
    except (socket.timeout, OSError):
        pass  # the server stopped reading: its budget for this client is spent
    time.sleep(max(0.0, until - time.monotonic()))
    s.close()


def heavy(path, export, size, cmd, seconds, stats):
    """A client that reads its replies: 32 MiB WRITEs or structured READs, 4 in flight."""
    s, _ = negotiate(path, export, structured=(cmd == CMD_READ))
    s.settimeout(300)  # a server with a global memory budget makes it wait while the non-reading clients hold it
    lengths, cookie, inflight = {}, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end or inflight:
        while inflight < 4 and time.monotonic() < end:
            cookie += 1
            offset = random.randrange(0, size - BIG, 4096)
            s.sendall(request(cmd, cookie, offset, BIG) + (PAYLOAD if cmd == CMD_WRITE else b""))
            lengths[cookie] = BIG if cmd == CMD_READ else 0
            inflight += 1
        c, error = read_reply(s, lengths)
        if error:
            raise ValueError(f"error {error} on a valid request")
        inflight -= 1
        stats.add("heavy-replies")
    s.sendall(request(CMD_DISC, 0, 0, 0))
    s.close()


def malformed_once(path, export, size, rnd):
    kind = rnd.randrange(9)
    if kind == 0:  # garbage instead of the client flags and options
        s = connect(path)
        recv_exact(s, 18)
        s.sendall(os.urandom(rnd.randrange(1, 200)))
    elif kind == 1:  # an option claiming 2 GiB of data
        s = connect(path)
        recv_exact(s, 18)
        s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, 99, 0x7FFFFFFF) + os.urandom(100))
    else:
        s, _ = negotiate(path, export, structured=rnd.random() < 0.5)
        if kind == 2:  # bad request magic
            s.sendall(request(CMD_READ, 1, 0, 4096, magic=0xDEADBEEF))
        elif kind == 3:  # a WRITE claiming more than the maximum payload
            s.sendall(request(CMD_WRITE, 1, 0, 64 << 20) + os.urandom(4096))
        elif kind == 4:  # a 32 MiB WRITE cut off halfway through its payload
            s.sendall(request(CMD_WRITE, 1, 0, BIG) + PAYLOAD[: BIG // 2])
        elif kind == 5:  # unknown command, unknown flags, reads past the end, a truncated header
            s.sendall(request(42, 1, 0, 4096) + request(CMD_READ, 2, 0, 4096, flags=0x8000)
                      + request(CMD_READ, 3, size, BIG) + request(CMD_READ, 4, 0, 0xFFFFFFFF) + b"\x25\x60")
        elif kind == 6:  # big reads, then gone without reading the replies
            s.sendall(b"".join(request(CMD_READ, i, (i * BIG) % (size - BIG), BIG) for i in range(8)))
        elif kind == 7:  # random request headers
            s.sendall(b"".join(request(rnd.randrange(10), i, rnd.randrange(size), rnd.randrange(BIG), rnd.randrange(1 << 16))
                               for i in range(16)))
        else:  # random bytes in transmission
            s.sendall(os.urandom(rnd.randrange(1, 4096)))
    try:
        s.settimeout(0.2)
        s.recv(1 << 16)
    except OSError:
        pass
    s.close()


def malformed(path, export, size, count, stats):
    rnd = random.Random(7)
    for _ in range(count):
        try:
            malformed_once(path, export, size, rnd)
        except (OSError, EOFError, ValueError):
            pass
        stats.add("malformed")


def churn(path, export, size, count, stats):
    rnd = random.Random(11)
    for i in range(count):
        try:
            kind = i % 5
            if kind == 0:
                connect(path).close()
            elif kind == 1:
                s = connect(path)
                recv_exact(s, 18)
                s.close()
            elif kind == 2:
                s = connect(path)
                recv_exact(s, 18)
                s.sendall(struct.pack(">I", 3) + struct.pack(">QII", IHAVEOPT, OPT_STRUCTURED_REPLY, 0))
                s.close()
            elif kind == 3:
                s, _ = negotiate(path, export, structured=True)
                s.sendall(b"".join(request(CMD_READ, j, rnd.randrange(0, size - 65536, 512), 65536) for j in range(4)))
                s.close()
            else:
                s, _ = negotiate(path, export, structured=False)
                s.sendall(request(CMD_WRITE, 1, 0, BIG) + PAYLOAD[: rnd.randrange(1, BIG)])
                s.close()
        except (OSError, EOFError, ValueError):
            pass
        stats.add("churn")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("pid", type=int)
    ap.add_argument("--export", default="")
    ap.add_argument("--churn", type=int, default=5000)
    ap.add_argument("--malformed", type=int, default=300)
    ap.add_argument("--heavy-seconds", type=float, default=10)
    ap.add_argument("--hold", type=float, default=10)
    ap.add_argument("--settle", type=float, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    s, size = negotiate(a.socket, a.export, structured=False)
    s.sendall(request(CMD_DISC, 0, 0, 0))
    s.close()
    time.sleep(1)
    idle = rss_kib(a.pid)

    stats = Stats()
    peak = [idle]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak[0] = max(peak[0], rss_kib(a.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [
        threading.Thread(target=no_read, args=(a.socket, a.export, size, CMD_READ, a.hold, stats)),
        threading.Thread(target=no_read, args=(a.socket, a.export, size, CMD_READ, a.hold, stats)),
        threading.Thread(target=no_read, args=(a.socket, a.export, size, CMD_WRITE, a.hold, stats)),
        threading.Thread(target=no_read, args=(a.socket, a.export, size, CMD_WRITE, a.hold, stats)),
        threading.Thread(target=heavy, args=(a.socket, a.export, size, CMD_WRITE, a.heavy_seconds, stats)),
        threading.Thread(target=heavy, args=(a.socket, a.export, size, CMD_READ, a.heavy_seconds, stats)),
        threading.Thread(target=malformed, args=(a.socket, a.export, size, a.malformed, stats)),
        threading.Thread(target=churn, args=(a.socket, a.export, size, a.churn, stats)),
    ]
    started = time.monotonic()
    for t in clients:
        t.start()
    for t in clients:
        t.join()
    elapsed = time.monotonic() - started
    time.sleep(a.settle)
    sampling.set()
    sampler.join()
    after = rss_kib(a.pid)
    result = {"idle_mib": idle / 1024, "peak_mib": peak[0] / 1024, "after_mib": after / 1024,
              "seconds": round(elapsed, 1), **stats.counts}
    if a.json:
        print(json.dumps(result))
    else:
        print(f"idle {idle / 1024:.0f} MiB, peak {peak[0] / 1024:.0f} MiB, after {after / 1024:.0f} MiB "
              f"({elapsed:.0f} s; {', '.join(f'{k} {v}' for k, v in sorted(stats.counts.items()))})")


if __name__ == "__main__":
    sys.exit(main())
