#!/usr/bin/env bash
# VNN-COMP prepare_instance.sh: args are version, benchmark category, ONNX file, VNN-LIB file.
# bnbver needs no per-instance preparation beyond checking that both files load; this also
# kills stray bnbver processes of an earlier instance, as the competition asks.
set -u
if [ "$#" -ne 4 ]; then
  echo "usage: $0 v1 CATEGORY ONNX VNNLIB" >&2
  exit 1
fi
# (BNBVER_NO_PKILL=1 skips this, for tests that run beside other bnbver processes.)
if [ -z "${BNBVER_NO_PKILL:-}" ]; then
  pkill -f "bnbver.cli verify" >/dev/null 2>&1 || true
fi
PY="${BNBVER_PYTHON:-python3}"
"$PY" -m bnbver.cli info "$3" >/dev/null || exit 1
exit 0
