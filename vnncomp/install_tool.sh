#!/usr/bin/env bash
# VNN-COMP install_tool.sh v1: install bnbver into a virtual environment .venv in the
# repository (the README's install: torch first, so the package adds no other torch build).
# The other scripts then use .venv/bin/python by default.
set -eu
if [ "$#" -ne 1 ]; then
  echo "usage: $0 v1" >&2
  exit 1
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/pip install torch==2.13.0
.venv/bin/pip install -e .
.venv/bin/python -m bnbver.cli --version
