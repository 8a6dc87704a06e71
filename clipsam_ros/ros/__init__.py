"""The ROS 2 side of clipsam_ros: the `clipsam_inspector` node and what it needs.

This is the only package that imports rclpy, and it holds no algorithm: frames
are decoded by `image_codec`, inspected by `pipeline.Inspector` and drawn by
`visualize`. Modules, one job each:

    frame_queue.py          frames waiting for the inference thread (latest | all)
    stats.py                frame accounting, rates and latencies for /diagnostics
    params.py               config keys <-> declared ROS parameters (descriptors, validation)
    qos.py                  subscription and publisher QoS from the config
    messages.py             outgoing Image / String / Bool / DiagnosticArray messages
    vision_msgs_builder.py  Detection2DArray and Classification (vision_msgs is optional)
    node.py                 InspectorNode, `run` and the `clipsam_inspector` entry point
    cli_node.py             `clipsam-ros node`

Importing this package does not import rclpy; its modules do.
"""
