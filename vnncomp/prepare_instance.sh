#!/usr/bin/env bash
# VNN-COMP prepare_instance.sh: args are version, benchmark category, ONNX file, VNN-LIB file.
# bnbver needs no per-instance preparation beyond checking that both files load. As the
# competition asks, it stops a verifier that an earlier run_instance.sh left running: only
# the process recorded in the pid file (see common.sh), never other processes by name.
# BNBVER_NO_PKILL=1 skips even that.
set -u
if [ "$#" -ne 4 ]; then
  echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
  exit 1
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ -z "${BNBVER_NO_PKILL:-}" ] && [ -s "$PIDFILE" ]; then
  pid="$(cat "$PIDFILE")"
  # The pid may have been reused by another program: stop it only if it is our verifier.
  if grep -q "bnbver.cli" "/proc/$pid/cmdline" 2>/dev/null; then
    pkill -P "$pid" >/dev/null 2>&1 || true
    kill "$pid" >/dev/null 2>&1 || true
  fi
  rm -f "$PIDFILE"
fi
"$PY" -m bnbver.cli info "$3" >/dev/null || exit 1
exit 0
