#!/usr/bin/env bash
# Set up the venv (first run only), lint, and run the test suite; extra args go to pytest.
#   bash scripts/run-tests.sh           ruff + mypy (core) + the whole suite, as CI runs it
#   bash scripts/run-tests.sh --fast    ruff + the tests not marked `slow` (no DDS, no
#                                       subprocesses, no long fuzz): the inner loop, about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1
# the ROS 2 PyPI wheels find their message packages through the ament index in the venv
export AMENT_PREFIX_PATH="$PWD/.venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
fast=0
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then fast=1; args+=(-m "not slow"); else args+=("$arg"); fi
done
.venv/bin/ruff check --quiet .                 # style and import order (pyproject.toml)
if [ "$fast" = 0 ]; then
  .venv/bin/mypy                               # types of the core packages (pyproject.toml)
fi
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
