"""Soak run (issue 7.2): many frames through the real clipsam_inspector node on loopback, for
both queue policies; exit 1 when a check fails. The harness (what is sent, what is checked) is
tests/soak_harness.py, shared with the CI share in tests/test_reliability_soak.py.

    python benchmarks/soak.py --frames 5000 --rate 50 --policy latest all --json soak.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]   # run from a checkout: the package and the harness

from soak_harness import DEFAULT_DOMAIN, build_inspector, run_soak  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=50.0, help="camera rate in Hz (default 50)")
    parser.add_argument("--policy", nargs="+", default=["latest", "all"], choices=["latest", "all"])
    parser.add_argument("--domain", type=int, default=DEFAULT_DOMAIN, help="ROS_DOMAIN_ID (loopback only)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        inspector = build_inspector(Path(tmp))
        results = [run_soak(inspector, p, args.frames, args.rate, args.domain + i)
                   for i, p in enumerate(args.policy)]
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = [f"{r['policy']}: {k}" for r in results for k, ok in r["checks"].items() if not ok]
    if failed:
        print("soak: FAILED " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
