"""`clipsam-ros node`: the ROS 2 node on machines without `ros2 launch`."""
from __future__ import annotations

import argparse


def cmd_node(args: argparse.Namespace) -> int:
    """The node's own entry point (`ros2 run clipsam_ros clipsam_inspector`), with the CLI's
    default profile: without --config, config/inspect.yaml, which then wins over -p."""
    from ..config import config_path
    from ..ros.node import main

    argv = ["clipsam-ros", "--config", str(args.config or config_path("inspect.yaml"))]
    argv += [f"--set={item}" for item in args.overrides]
    argv += ["--managed"] if args.managed else []
    argv += ["--ros-args", *args.ros_args] if args.ros_args else []
    return main(argv)


def register(subparsers) -> None:
    from .common import add_config_args

    p = subparsers.add_parser(
        "node", help="run the ROS 2 node clipsam_inspector (stops cleanly on Ctrl-C / SIGTERM)",
        description="Run the ROS 2 node clipsam_inspector. Configure it with --config/--set (they win over "
                    "-p in --ros-args); use --ros-args for remapping and namespaces, e.g. "
                    "--ros-args -r image:=/camera/image_raw -r __ns:=/line1")
    add_config_args(p)
    p.add_argument("--managed", action="store_true",
                   help="stay unconfigured for a lifecycle manager (default: configure and activate)")
    p.add_argument("--ros-args", dest="ros_args", nargs=argparse.REMAINDER, default=[],
                   help="everything after it goes to ROS (remaps, namespace, log level)")
    p.set_defaults(func=cmd_node)
