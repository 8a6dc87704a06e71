"""vision_msgs 4.x (ROS 2 Jazzy) message definitions, for the bags the tools write.

`vision_msgs` is neither in rosbags' built-in typestores nor on PyPI, so the
bag tools (replay, synth --bag) register these definitions from .msg text.
The text is the upstream `ros-perception/vision_msgs` 4.1.1 fields without the
comments; comments do not enter the RIHS01 type hash, so the hashes written to
a bag match what a real Jazzy `vision_msgs` install computes.

Topic names and types are in `topics.py`, the fields' conventions in
`vision_msgs.py`: the node and the bag tools share both.
"""
from __future__ import annotations

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

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

