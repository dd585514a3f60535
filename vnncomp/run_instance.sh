#!/usr/bin/env bash
# VNN-COMP run_instance.sh: args are version, category, ONNX, VNN-LIB, result file, timeout.
# Writes 'sat' plus the counterexample, 'unsat', 'timeout' or 'unknown' to the result file.
set -u
if [ "$#" -ne 6 ]; then
  echo "usage: $0 v1 CATEGORY ONNX VNNLIB RESULTS_FILE TIMEOUT" >&2
  exit 1
fi
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# Leave a little of the competition's timeout for process start-up and writing the result.
BUDGET=$(awk -v t="$6" 'BEGIN { b = t * 0.95 - 1; if (b < 1) b = 1; print b }')
"$PY" -m bnbver.cli verify "$3" "$4" --timeout "$BUDGET" --out "$5" &
pid=$!
echo "$pid" > "$PIDFILE" 2>/dev/null || true
wait "$pid"
status=$?
[ "$(cat "$PIDFILE" 2>/dev/null)" = "$pid" ] && rm -f "$PIDFILE"
if [ ! -s "$5" ]; then
  echo "unknown" > "$5"
fi
exit $status
