"""The node's output topics: one table for the live node and for replay.

Names are relative to the node: `~/<name>` on a one-camera node, `~/<camera>/<name>`
with several cameras, `/clipsam_inspector/<name>` in a replayed bag (the node's
default name, where `ros2 bag record` would find them). The order is the node's
publishing order for a frame; `reject` is last, so a consumer that acts on it has
every other output of the frame already.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import NODE_NAME


@dataclass(frozen=True)
class OutputTopic:
    name: str        # relative to the node
    msgtype: str     # ROS 2 type name
    image: bool      # built and published only while someone subscribes: images cost the most


OUTPUT_TOPICS: tuple[OutputTopic, ...] = (
    OutputTopic("mask", "sensor_msgs/msg/Image", True),                  # mono8, 255 = defect
    OutputTopic("anomaly_map", "sensor_msgs/msg/Image", True),           # 32FC1, 0..1 (the localizer's S_a)
    OutputTopic("overlay", "sensor_msgs/msg/Image", True),               # bgr8, for RViz
    OutputTopic("detections", "vision_msgs/msg/Detection2DArray", False),
    # boxes and mask outlines for Foxglove / RViz over the raw image; viewers only, so built
    # only while someone subscribes, like the images
    OutputTopic("annotations", "visualization_msgs/msg/ImageMarker", True),
    OutputTopic("verdict", "vision_msgs/msg/Classification", False),
    OutputTopic("verdict_json", "std_msgs/msg/String", False),           # always there: carries the error
    OutputTopic("reject", "std_msgs/msg/Bool", False),                   # last: what an ejector acts on
)
TOPICS: dict[str, OutputTopic] = {t.name: t for t in OUTPUT_TOPICS}


def recorded_topic(name: str) -> str:
    """The absolute topic of output `name` of a node with the default name and namespace."""
    return f"/{NODE_NAME}/{name}"
