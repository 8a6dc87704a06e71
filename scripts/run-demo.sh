#!/usr/bin/env bash
# The main job on its embedded default: synthetic parts, offline profile, no network, no ROS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-venv.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/clipsam-ros demo --out "${1:-demo_out}"
