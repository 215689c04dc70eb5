# Sourced by the bench scripts: builds once (through ./vdisk) and defines `vdisk`, the program ./vdisk runs
# (Native AOT, or the ReadyToRun/plain fallback) called directly, so that the wrapper's staleness check of the
# source tree is not timed. Needs $here, the repository root.
"$here/vdisk" --version >/dev/null
if [ -x "$here/artifacts/cli/Vdisk.Cli" ] && [ ! -f "$here/artifacts/cli/Vdisk.Cli.dll" ]; then
  vdisk() { "$here/artifacts/cli/Vdisk.Cli" "$@"; }
else
  vdisk() { dotnet "$here/artifacts/cli/Vdisk.Cli.dll" "$@"; }
fi
