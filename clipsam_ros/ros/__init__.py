"""The ROS 2 side of clipsam_ros: the `clipsam_inspector` node and what it needs.

This is the only package that imports rclpy, and it holds no algorithm: frames are
decoded by `imaging.codec`, inspected by `inspector.Inspector`, and their output
messages built by `outputs.builder` (the same builder replay writes bags with).
Modules, one job each:

    frame_queue.py   frames waiting for the inference thread (latest | all), one line per camera
    stats.py         frame accounting, rates and latencies for /diagnostics
    params.py        config keys <-> declared ROS parameters (descriptors from the key records)
    qos.py           subscription and publisher QoS from the config
    cameras.py       each camera's subscription topic and output publishers (from the topic table)
    messages.py      rclpy's message classes for the builder, and the /diagnostics status
    node.py          InspectorNode (a lifecycle node), configure_and_activate, `run` and the
                     `clipsam_inspector` entry point (--managed: wait for a lifecycle manager)

`clipsam-ros node` is `cli/node.py`. Importing this package does not import rclpy;
its modules do.
"""
