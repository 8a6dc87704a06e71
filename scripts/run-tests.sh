#!/usr/bin/env bash
# Set up the venv (first run only) and run the test suite; extra args go to pytest.
#   bash scripts/run-tests.sh           the whole suite, as CI runs it
#   bash scripts/run-tests.sh --fast    the inner loop: tests not marked `slow` (no DDS, no
#                                       subprocesses, no long fuzz), about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1
# the ROS 2 PyPI wheels find their message packages through the ament index in the venv
export AMENT_PREFIX_PATH="$PWD/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then args+=(-m "not slow"); else args+=("$arg"); fi
done
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
