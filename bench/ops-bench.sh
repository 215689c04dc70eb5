#!/usr/bin/env bash
# Times vdisk against qemu-img, in one run, on a 4 GiB qcow2 holding 2 GiB of mixed data (random, compressible
# text, zero runs written as data, zero clusters, holes): convert qcow2->raw, raw->qcow2, qcow2->qcow2 with -c
# and zstd, and compare of two identical images. Prints seconds and the ratio vdisk/qemu (lower is better).
# BENCH_DIR: a folder on a real disk (default /var/tmp/vdisk-ops-bench); BENCH_REPEAT: runs per case (best counts).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${BENCH_DIR:-/var/tmp/vdisk-ops-bench}"
repeat="${BENCH_REPEAT:-1}"
mkdir -p "$dir"
vdisk="$here/vdisk"
"$vdisk" --version >/dev/null   # build once before timing anything

src="$dir/src.qcow2"
raw="$dir/src.raw"
if [ ! -f "$src" ]; then
  echo "building the source image (4 GiB virtual, 2 GiB written) in $dir ..." >&2
  rm -f "$raw"
  truncate -s 4G "$raw"
  head -c $((12 << 20)) /dev/urandom | base64 -w 0 > "$dir/text"   # 16 MiB of text
  # 32 slots of 128 MiB: 32 MiB random, 16 MiB text; zero runs follow below; the rest of each slot is a hole.
  for i in $(seq 0 31); do
    dd if=/dev/urandom of="$raw" bs=1M count=32 seek=$((i * 128)) conv=notrunc status=none
    dd if="$dir/text" of="$raw" bs=1M count=16 seek=$((i * 128 + 32)) conv=notrunc status=none
  done
  qemu-img convert -f raw -O qcow2 "$raw" "$src"
  cmds=()
  for i in $(seq 0 31); do
    cmds+=(-c "write -q -P 0 $((i * 128 + 48))M 8M" -c "write -q -z $((i * 128 + 56))M 8M")
  done
  qemu-io -f qcow2 "${cmds[@]}" "$src"
  qemu-img convert -O raw "$src" "$raw"
fi

best() { # best <command...>: best wall-clock seconds of $repeat runs
  local b=""
  for _ in $(seq "$repeat"); do
    local s e
    s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N)
    local t; t=$(awk "BEGIN{printf \"%.3f\", $e - $s}")
    if [ -z "$b" ] || awk "BEGIN{exit !($t < $b)}"; then b=$t; fi
  done
  echo "$b"
}

case_() { # case_ name out-file args... (the same arguments for both tools)
  local name=$1 out=$2; shift 2
  rm -f "$out"; local q; q=$(best qemu-img "$@")
  rm -f "$out"; local v; v=$(best "$vdisk" "$@")
  rm -f "$out"
  printf '%-34s qemu %8.3fs  vdisk %8.3fs  ratio %5.2f\n' "$name" "$q" "$v" "$(awk "BEGIN{print $v / $q}")"
}

copy="$dir/copy.qcow2"
qemu-img convert -O qcow2 "$src" "$copy"
printf 'source: %s (%s allocated)\n' "$src" "$(du -h "$src" | cut -f1)"
case_ "convert qcow2 -> raw" "$dir/out.raw" convert -O raw "$src" "$dir/out.raw"
case_ "convert raw -> qcow2" "$dir/out.qcow2" convert -f raw -O qcow2 "$raw" "$dir/out.qcow2"
case_ "convert qcow2 -> qcow2 -c zstd" "$dir/out.qcow2" convert -c -O qcow2 -o compression_type=zstd "$src" "$dir/out.qcow2"
case_ "compare identical qcow2" "$dir/none" compare "$src" "$copy"
