"""`clipsam-ros replay`: the subcommand's arguments; the work is in `replay.py`.

Kept free of heavy imports (torch, rosbags): the CLI builds every parser on each start.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_replay(args: argparse.Namespace) -> int:
    from ..bags.replay import run_replay
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")
    report_dir = Path(args.report) if args.report else Path(f"{Path(args.out)}_report")
    report = run_replay(args.bag, args.image_topic, args.out, report_dir, cfg, gt_topic=args.gt_topic)
    counts = ", ".join(f"{v} {n}" for v, n in report.verdicts.items()) or "none"
    line = f"replay: {report.frames} frames ({counts}); latency p50 {report.latency_ms['p50']} ms"
    if report.metrics is not None:
        m = report.metrics
        line += (f"; pixel AUROC {m['pixel_auroc']} F1-max {m['pixel_f1_max']} AP {m['pixel_ap']} "
                 f"over {report.metrics_frames} frames")
    print(f"{line}; wrote {args.out} and {report_dir / 'report.json'}")
    if report.error:   # a damaged bag: reported above, and the one error line
        print(f"clipsam-ros replay: error: {report.error}", file=sys.stderr)
        return 1
    return 0


def register(subparsers) -> None:
    from .common import add_config_args

    p = subparsers.add_parser("replay", help="inspect every frame of a rosbag2 (no ROS needed); writes an "
                                             "output bag with the node's topics and a report")
    add_config_args(p)
    p.add_argument("bag", help="rosbag2 folder (sqlite3 or mcap), or a .mcap / .db3 file")
    p.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--gt-topic", help="ground-truth masks (sensor_msgs/Image mono8, 255 = defect, "
                                      "same header stamp as the frame)")
    p.add_argument("--out", required=True, help="output rosbag2 (mcap) to create")
    p.add_argument("--report", help="report folder (default: OUT_report)")
    p.set_defaults(func=cmd_replay)
