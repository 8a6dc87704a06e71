"""`clipsam-ros node`: the ROS 2 node on machines without `ros2 launch`."""
from __future__ import annotations

import argparse


def cmd_node(args: argparse.Namespace) -> int:
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")   # validated before rclpy or torch load

    from ..ros.node import run
    from ..ros.params import overrides_from_config

    ros_args = ["--ros-args", *args.ros_args] if args.ros_args else []
    return run(overrides_from_config(cfg), ["clipsam-ros", *ros_args], managed=args.managed)


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
