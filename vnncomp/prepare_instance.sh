#!/usr/bin/env bash
# VNN-COMP prepare_instance.sh: args are version, benchmark category, ONNX file, VNN-LIB file.
# bnbver needs no per-instance preparation beyond checking that both files load; this also
# kills stray bnbver processes of an earlier instance, as the competition asks.
set -u
if [ "$#" -ne 4 ]; then
  echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
  exit 1
fi
pkill -f "bnbver verify" >/dev/null 2>&1 || true
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${BNBVER_PYTHON:-python3}"
"$PY" -m bnbver.cli info "$3" >/dev/null || exit 1
exit 0
