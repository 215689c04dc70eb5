#!/usr/bin/env bash
# fio (ioengine=nbd) against `vdisk serve` and `qemu-nbd`, both --cache=writeback -t on a unix socket, serving
# the same qcow2 one after the other in one run, at iodepth 16: 4k randread and 4k randwrite, sequential reads
# of 64k, 1M and 32M, sequential writes of 1M and 32M (the large ones show how the server handles large buffers).
# Prints IOPS and the ratio vdisk/qemu (higher is better). Then the RSS of `vdisk serve` serving
# a 1 TiB qcow2 under 4k random writes spread over the whole disk.
# BENCH_DIR: a folder on a real disk (default /var/tmp/vdisk-nbd-bench); BENCH_SECONDS: per case (default 10).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BENCH_DIR:-/var/tmp/vdisk-nbd-bench}"
secs="${BENCH_SECONDS:-10}"
mkdir -p "$dir"
. "$here/bench/vdisk-program.sh"   # builds once; defines vdisk
. "$here/bench/nbd-server.sh"      # start, stop

iops() { # iops rw bs [size]
  fio --name=b --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw="$1" --bs="$2" --iodepth=16 --numjobs=1 \
      --size="${3:-1G}" --time_based --runtime="$secs" --ramp_time=1 --output-format=json --output="$dir/fio.json" >/dev/null
  # fio's nbd engine prints a line of its own on stdout, so the JSON goes to a file
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(int(j["read"]["iops"] + j["write"]["iops"]))' "$dir/fio.json"
}

img="$dir/bench.qcow2"
rm -f "$img"
qemu-img create -q -f qcow2 "$img" 4G
qemu-io -f qcow2 -c 'write -P 0x5a 0 1G' "$img" >/dev/null   # reads and rewrites hit allocated clusters

printf '%-28s %10s %10s %8s\n' case "qemu IOPS" "vdisk IOPS" ratio
for case in "randread 4k" "randwrite 4k" "read 64k" "read 1M" "write 1M" "read 32M" "write 32M"; do
  set -- $case
  start qemu "$img"; q=$(iops "$1" "$2"); stop
  start vdisk "$img"; v=$(iops "$1" "$2"); stop
  printf '%-28s %10s %10s %8.2f\n' "$1 $2 iodepth 16" "$q" "$v" "$(awk "BEGIN{print $v/$q}")"
done
qemu-img check -q "$img" && echo "qemu-img check: clean"

big="$dir/big.qcow2"
rm -f "$big"
qemu-img create -q -f qcow2 "$big" 1T
start vdisk "$big"
fio --name=rss --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw=randwrite --bs=4k --iodepth=16 --size=1T \
    --time_based --runtime="$secs" >/dev/null 2>&1 &
load=$!
peak=0
while kill -0 "$load" 2>/dev/null; do
  rss=$(ps -o rss= -p "$(cat "$pidfile")" | tr -d ' ')
  [ "${rss:-0}" -gt "$peak" ] && peak=$rss
  sleep 0.5
done
wait "$load" || true
stop
echo "vdisk serve RSS serving a 1 TiB qcow2 under 4k random writes: peak $((peak / 1024)) MiB"
qemu-img check -q "$big" && echo "qemu-img check (1 TiB image): clean"
rm -f "$img" "$big" "$dir/fio.json"
