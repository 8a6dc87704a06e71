#!/usr/bin/env bash
# Set up the venv (first run only) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1
# the ROS 2 PyPI wheels find their message packages through the ament index in the venv
export AMENT_PREFIX_PATH="$PWD/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
exec .venv/bin/python -m pytest "$@"
