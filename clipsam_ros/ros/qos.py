"""QoS of the image subscription and of the outputs.

The subscription follows `input.reliability`. Its history depth matters little,
because the callback only moves each message into the node's own FrameQueue
(where drops are counted); it is kept a bit deeper under `all` so a burst waits in
DDS rather than being replaced there, where nobody would count it.
Outputs are reliable: RViz, PLC bridges and bag recorders all match that.
"""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..config import InputConfig

IMAGE_OUT_DEPTH = 5        # mask / anomaly map / overlay: only the newest matter
RESULT_OUT_DEPTH = 100     # verdict / reject / detections: a slow consumer should still see each


def image_subscription_qos(inp: InputConfig) -> QoSProfile:
    reliability = ReliabilityPolicy.RELIABLE if inp.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    if inp.queue_policy == "all":
        # triggered cameras: with KEEP_LAST a reliable reader that falls behind overwrites
        # frames before the node ever sees them; KEEP_ALL keeps all it received (a KEEP_LAST
        # camera writer can still overwrite frames it has not delivered)
        return QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=reliability,
                          durability=DurabilityPolicy.VOLATILE)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


def output_qos(depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def policy_warning(inp: InputConfig) -> str:
    """A line to log when the QoS cannot keep the queue policy's promise ("" when it can)."""
    if inp.queue_policy == "all" and inp.reliability != "reliable":
        return ("input.queue_policy=all with input.reliability=best_effort: frames lost in transport "
                "never reach the node and get no verdict; use reliable for triggered cameras")
    return ""
