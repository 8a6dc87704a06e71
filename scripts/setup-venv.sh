#!/usr/bin/env bash
# Create ./.venv and install clipsam_ros with its test, ROS 2 (PyPI wheels) and eval extras.
# Idempotent: a venv whose install stamp matches setup.py is reused as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || { echo "setup-venv: $("$PY" -V 2>&1) is too old; clipsam_ros needs Python >= 3.10 (set PYTHON=...)" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV" 2>/dev/null; then
    # Debian/Ubuntu ship venv separately
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PY" -m venv "$VENV"
    else
      echo "setup-venv: python venv is missing; run: sudo apt-get install python3-venv" >&2; exit 1
    fi
  fi
fi

stamp="$VENV/.clipsam_ros-installed"
want=$(cat setup.py | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # plain `torch` from the registry (CUDA build, runs on CPU too); see README
  "$VENV/bin/python" -m pip install -q -e ".[test,ros,eval]"
  echo "$want" > "$stamp"
fi
