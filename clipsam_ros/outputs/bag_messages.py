"""The node's output messages for one InspectionResult, as `rosbags` typestore objects.

Same topics, types and fields as the ROS node publishes (see `vision_msgs_defs`),
so a replayed bag looks like a recording of the node. Every message carries the
input frame's header (stamp and frame_id).
"""
from __future__ import annotations

import cv2
import numpy as np
from rosbags.typesys.store import Typestore

from ..imaging.codec import rgb_to_image_fields
from ..inspector import InspectionResult
from .vision_msgs_defs import DETECTION_CLASS_ID, OUTPUT_TOPICS, bbox_center_size
from ..imaging.overlay import render_overlay
from ..decision import Verdict


def make_header(ts: Typestore, stamp_ns: int, frame_id: str = ""):
    Time = ts.types["builtin_interfaces/msg/Time"]
    Header = ts.types["std_msgs/msg/Header"]
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def image_msg(ts: Typestore, header, array: np.ndarray, encoding: str):
    """sensor_msgs/Image from an array (RGB for rgb8/bgr8, HxW for mono8/32FC1)."""
    fields = rgb_to_image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return ts.types["sensor_msgs/msg/Image"](header=header, **fields)


def detections_msg(ts: Typestore, header, result: InspectionResult):
    t = ts.types
    detections = []
    for i, defect in enumerate(result.defects):
        cx, cy, sx, sy = bbox_center_size(defect.bbox)
        hypothesis = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=t["vision_msgs/msg/ObjectHypothesis"](class_id=DETECTION_CLASS_ID, score=float(defect.score)),
            pose=_identity_pose(ts))
        bbox = t["vision_msgs/msg/BoundingBox2D"](
            center=t["vision_msgs/msg/Pose2D"](position=t["vision_msgs/msg/Point2D"](x=cx, y=cy), theta=0.0),
            size_x=sx, size_y=sy)
        detections.append(t["vision_msgs/msg/Detection2D"](header=header, results=[hypothesis], bbox=bbox,
                                                            id=str(i)))
    return t["vision_msgs/msg/Detection2DArray"](header=header, detections=detections)


def _identity_pose(ts: Typestore):
    t = ts.types
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0))
    return t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36, np.float64))


def verdict_msg(ts: Typestore, header, result: InspectionResult):
    t = ts.types
    return t["vision_msgs/msg/Classification"](
        header=header, results=[t["vision_msgs/msg/ObjectHypothesis"](class_id=result.verdict,
                                                                       score=float(result.score))])


def output_messages(ts: Typestore, header, result: InspectionResult,
                    image_rgb: np.ndarray | None) -> dict[str, object]:
    """{topic: message} for one frame, in the node's publishing order.

    As on the node, an "error" frame has no mask, map or detections (there is no
    result to show): only the verdict, reject and, when the image itself could be
    decoded, the overlay with its error banner.
    """
    out: dict[str, object] = {}
    error = result.verdict == Verdict.ERROR
    if image_rgb is not None:
        if not error:
            out[OUTPUT_TOPICS["mask"]] = image_msg(ts, header, result.mask, "mono8")
            out[OUTPUT_TOPICS["anomaly_map"]] = image_msg(ts, header, result.anomaly_map.astype(np.float32),
                                                          "32FC1")
        mask = np.zeros(image_rgb.shape[:2], np.uint8) if error else result.mask
        overlay_bgr = render_overlay(image_rgb, mask, [] if error else result.defects, result.verdict,
                                     result.score)
        out[OUTPUT_TOPICS["overlay"]] = image_msg(ts, header, cv2.cvtColor(overlay_bgr, cv2.COLOR_BGR2RGB),
                                                  "bgr8")
    if not error:
        out[OUTPUT_TOPICS["detections"]] = detections_msg(ts, header, result)
    out[OUTPUT_TOPICS["verdict"]] = verdict_msg(ts, header, result)
    out[OUTPUT_TOPICS["reject"]] = ts.types["std_msgs/msg/Bool"](data=bool(result.reject))
    return out
