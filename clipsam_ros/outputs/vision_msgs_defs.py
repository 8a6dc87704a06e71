"""vision_msgs 4.x (ROS 2 Jazzy) message definitions and the node's output conventions.

`vision_msgs` is neither in rosbags' built-in typestores nor on PyPI, so the
bag tools (replay, synth --bag) register these definitions from .msg text.
The text is the upstream `ros-perception/vision_msgs` 4.1.1 fields without the
comments; comments do not enter the RIHS01 type hash, so the hashes written to
a bag match what a real Jazzy `vision_msgs` install computes.

What both the bag tools and the ROS node must agree on lives here too: output
topic names, the detection class id, and the pixel convention of a box.
"""
from __future__ import annotations

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

# The node's outputs under its default name, as `ros2 bag record` would store them.
NODE_NAMESPACE = "/clipsam_inspector"
OUTPUT_TOPICS: dict[str, str] = {
    "mask": f"{NODE_NAMESPACE}/mask",                  # mono8, 255 = defect
    "anomaly_map": f"{NODE_NAMESPACE}/anomaly_map",    # 32FC1, 0..1 (the localizer's S_a)
    "overlay": f"{NODE_NAMESPACE}/overlay",            # bgr8
    "detections": f"{NODE_NAMESPACE}/detections",
    "verdict": f"{NODE_NAMESPACE}/verdict",
    "reject": f"{NODE_NAMESPACE}/reject",
}
OUTPUT_TYPES: dict[str, str] = {
    "mask": "sensor_msgs/msg/Image",
    "anomaly_map": "sensor_msgs/msg/Image",
    "overlay": "sensor_msgs/msg/Image",
    "detections": "vision_msgs/msg/Detection2DArray",
    "verdict": "vision_msgs/msg/Classification",
    "reject": "std_msgs/msg/Bool",
}
DETECTION_CLASS_ID = "anomaly"

VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/Point2D": """
float64 x
float64 y
""",
    "vision_msgs/msg/Pose2D": """
vision_msgs/Point2D position
float64 theta
""",
    "vision_msgs/msg/BoundingBox2D": """
vision_msgs/Pose2D center
float64 size_x
float64 size_y
""",
    "vision_msgs/msg/ObjectHypothesis": """
string class_id
float64 score
""",
    "vision_msgs/msg/ObjectHypothesisWithPose": """
ObjectHypothesis hypothesis
geometry_msgs/PoseWithCovariance pose
""",
    "vision_msgs/msg/Detection2D": """
std_msgs/Header header
ObjectHypothesisWithPose[] results
BoundingBox2D bbox
string id
""",
    "vision_msgs/msg/Detection2DArray": """
std_msgs/Header header
Detection2D[] detections
""",
    "vision_msgs/msg/Classification": """
std_msgs/Header header
ObjectHypothesis[] results
""",
}


def register_vision_msgs(typestore: Typestore) -> Typestore:
    """Add the vision_msgs types to `typestore` (which must know std_msgs and geometry_msgs)."""
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    typestore.register(types)
    return typestore


def bag_typestore() -> Typestore:
    """ROS 2 Jazzy's standard messages plus vision_msgs: everything the bag tools write."""
    return register_vision_msgs(get_typestore(Stores.ROS2_JAZZY))


def bbox_center_size(bbox: list[int] | tuple[int, int, int, int]) -> tuple[float, float, float, float]:
    """(cx, cy, size_x, size_y) of a BoundingBox2D from inclusive pixel extents [x0, y0, x1, y1].

    Pixel centres sit at integer coordinates (OpenCV's and sensor_msgs/Image's
    convention), so a box covering pixels x0..x1 is centred at (x0 + x1) / 2 and
    is x1 - x0 + 1 pixels wide.
    """
    x0, y0, x1, y1 = (float(v) for v in bbox)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0 + 1.0, y1 - y0 + 1.0
