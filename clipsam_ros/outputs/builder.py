"""The one builder of a frame's output messages, for the live node and for replay.

`frame_messages` returns {topic name: message} for one frame, in the order of
`topics.OUTPUT_TOPICS` (the node publishes in that order). Message classes come
from a `MessageTypes`: rclpy's on the node, a rosbags typestore's in bags, so a
replayed bag holds what the node would have published. Every message that has a
header carries the input frame's.

A frame that could not be inspected (verdict "error") has no mask, map or
detections, because there is no result to show: only the verdict, verdict_json,
reject and, when the image itself decoded, the overlay with its error banner.
"""
from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..decision import Defect, Verdict
from ..imaging.codec import rgb_to_image_fields
from ..imaging.overlay import render_overlay
from .annotations import defect_segments, image_marker
from .message_types import MessageTypes
from .topics import TOPICS
from .vision_msgs import classification, detection_array

if TYPE_CHECKING:  # the inspector imports torch: not for building messages
    from ..inspector import InspectionResult


@dataclass(frozen=True)
class FrameError:
    """The fail-safe answer for a frame with no InspectionResult (undecodable, queue full, ...)."""
    error: str                          # one line: why
    score: float = 1.0
    verdict: Verdict = Verdict.ERROR
    defects: Sequence[Defect] = ()


def make_header(types: MessageTypes, stamp_ns: int, frame_id: str = ""):
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return types.Header(stamp=types.Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg(types: MessageTypes, header, pixels: np.ndarray, encoding: str):
    """A sensor_msgs/Image of `pixels` (RGB for rgb8/bgr8, HxW for mono8/32FC1; see rgb_to_image_fields)."""
    fields = rgb_to_image_fields(pixels, encoding)
    fields["data"] = types.uint8_array(fields["data"])
    return types.Image(header=header, **fields)


def verdict_json(header, verdict: str, score: float, defects: Sequence[Defect] = (), error: str = "",
                 late: bool | None = None) -> str:
    """The verdict as one JSON line (std_msgs/String has no header, so it carries the stamp).

    `late`: published after decision.deadline_ms (None: no deadline, no field)."""
    out: dict[str, Any] = {
        "header": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec),
                   "frame_id": header.frame_id},
        "verdict": verdict, "score": round(float(score), 6), "reject": Verdict(verdict).reject,
        "defects": [d.to_json() for d in defects]}
    if error:
        out["error"] = error
    if late is not None:
        out["late"] = late
    return json.dumps(out)


def overlay_msg(types: MessageTypes, header, rgb: np.ndarray, answer: InspectionResult | FrameError):
    error = answer.verdict == Verdict.ERROR
    mask = np.zeros(rgb.shape[:2], np.uint8) if error else answer.mask
    bgr = render_overlay(rgb, mask, [] if error else answer.defects, answer.verdict, answer.score)
    # image_msg takes RGB and writes bgr8 itself
    return image_msg(types, header, bgr[:, :, ::-1], "bgr8")


def frame_messages(types: MessageTypes, header, rgb: np.ndarray | None,
                   answer: InspectionResult | FrameError,
                   wanted: Container[str] | None = None, late: bool | None = None) -> dict[str, Any]:
    """{topic name: message} for one frame, in publishing order.

    `rgb`: the decoded frame, None when it could not be decoded (then no overlay).
    `wanted`: the topic names to build (None: all); the node leaves out image
    topics nobody subscribes to. Topics whose type `types` lacks are never built.
    `late`: whether the verdict misses decision.deadline_ms (None: no deadline; replay).
    """
    def want(name: str) -> bool:
        return (wanted is None or name in wanted) and types.class_of(TOPICS[name].msgtype) is not None

    error = answer.verdict == Verdict.ERROR
    out: dict[str, Any] = {}
    if not error and want("mask"):
        out["mask"] = image_msg(types, header, answer.mask, "mono8")
    if not error and want("anomaly_map"):
        out["anomaly_map"] = image_msg(types, header, answer.anomaly_map, "32FC1")
    if rgb is not None and want("overlay"):
        out["overlay"] = overlay_msg(types, header, rgb, answer)
    if not error and want("detections"):
        out["detections"] = detection_array(types.vision, header, answer.defects)
    if not error and want("annotations"):
        out["annotations"] = image_marker(types, header, defect_segments(answer.mask, answer.defects))
    if want("verdict"):
        out["verdict"] = classification(types.vision, header, answer.verdict, answer.score)
    if want("verdict_json"):
        out["verdict_json"] = types.String(data=verdict_json(header, answer.verdict, answer.score,
                                                             answer.defects, answer.error, late))
    if want("reject"):
        out["reject"] = types.Bool(data=Verdict(answer.verdict).reject)
    return out
