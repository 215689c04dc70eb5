# Sourced by the NBD bench scripts, after vdisk-program.sh: `start vdisk|qemu IMAGE` serves the qcow2 IMAGE on
# $sock with `vdisk serve` or `qemu-nbd` (--cache=writeback, -t, $clients at once, default 4) and returns once it
# listens; `stop` ends it with SIGTERM. Needs $dir; the servers' stderr goes to $server_log (default: ours).
sock="$dir/nbd.sock"
pidfile="$dir/server.pid"
server=""

start() { # start vdisk|qemu image
  rm -f "$sock" "$pidfile"
  local n="${clients:-4}"
  # Our own stderr is shared, never reopened: reopening /dev/stderr when it is a file would empty that file.
  if [ -n "${server_log:-}" ]; then exec 3>>"$server_log"; else exec 3>&2; fi
  if [ "$1" = qemu ]; then qemu-nbd -f qcow2 --cache=writeback -t --shared="$n" -k "$sock" --pid-file="$pidfile" "$2" 2>&3 &
  else vdisk serve -f qcow2 --cache=writeback -t -e "$n" -k "$sock" --pid-file="$pidfile" "$2" 2>&3 & fi
  server=$!
  for _ in $(seq 300); do [ -s "$pidfile" ] && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
# The pid file names the server itself (a backgrounded shell function would be a subshell around it).
stop() { kill -TERM "$(cat "$pidfile")"; wait "$server" || true; server=""; }
trap '[ -n "$server" ] && kill "$(cat "$pidfile")" 2>/dev/null; rm -f "$sock"' EXIT
