#!/usr/bin/env bash
# The resident memory (VmRSS) of `vdisk serve` (the AOT build) and `qemu-nbd` under abusive clients, side by side:
# idle, peak while 8 clients abuse it (32 MiB READs and WRITEs, clients that never read their replies, malformed
# requests, thousands of connections coming and going; see nbd-abuse.py), and after they have all left.
# Both serve the same 1 GiB qcow2 (its first 256 MiB written) on a unix socket with -e 16 -t --cache=writeback.
# BENCH_DIR: a folder on a real disk (default /var/tmp/vdisk-nbd-memory); BENCH_CHURN: connections that come and
# go (default 5000); BENCH_ROUNDS: abusive runs per server, RSS taken after each (default 1). "seconds" is how
# long the clients took (the non-reading ones hold on for 10 s).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BENCH_DIR:-/var/tmp/vdisk-nbd-memory}"
churn="${BENCH_CHURN:-5000}"
rounds="${BENCH_ROUNDS:-1}"
mkdir -p "$dir"
. "$here/bench/vdisk-program.sh"   # builds once; defines vdisk
clients=16
server_log=/dev/null                # every dropped client is a line
. "$here/bench/nbd-server.sh"      # start, stop

img="$dir/mem.qcow2"
printf '%-12s %5s %9s %9s %9s %9s\n' server round "idle MiB" "peak MiB" "after MiB" seconds
for who in qemu vdisk; do
  rm -f "$img"
  qemu-img create -q -f qcow2 "$img" 1G
  qemu-io -f qcow2 -c 'write -P 0x5a 0 256M' "$img" >/dev/null
  start "$who" "$img"
  for round in $(seq "$rounds"); do
    r=$(python3 "$here/bench/nbd-abuse.py" "$sock" "$(cat "$pidfile")" --churn "$churn" --json)
    python3 -c 'import json,sys; r=json.loads(sys.argv[3]); print("%-12s %5s %9.0f %9.0f %9.0f %9.0f" % (sys.argv[1], sys.argv[2], r["idle_mib"], r["peak_mib"], r["after_mib"], r["seconds"]))' \
      "$([ "$who" = qemu ] && echo qemu-nbd || echo "vdisk serve")" "$round" "$r"
  done
  stop
  qemu-img check -q "$img" && echo "qemu-img check after $who: clean"
done
rm -f "$img"
