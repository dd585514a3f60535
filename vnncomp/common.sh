# Sourced by the VNN-COMP scripts: the interpreter, the import path and the run's pid file.
#
# The interpreter is $BNBVER_PYTHON when set, else the .venv that install_tool.sh (or the
# README's install) made in the repository, else python3. The repository goes on PYTHONPATH,
# so an uninstalled checkout works too.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${BNBVER_PYTHON:-}" ]; then
  PY="$BNBVER_PYTHON"
elif [ -x "$REPO/.venv/bin/python" ]; then
  PY="$REPO/.venv/bin/python"
else
  PY=python3
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
# run_instance.sh records the process id of its verifier here; prepare_instance.sh stops
# that process (and only that one) if it is still running.
PIDFILE="${BNBVER_PIDFILE:-$REPO/.vnncomp-run.pid}"
