"""vision_msgs messages from an inspection: Detection2DArray and Classification.

The one place that knows the vision_msgs 4.x layout. Message classes come in as
a `VisionTypes` (inside `message_types.MessageTypes`), so the same code builds
rclpy messages on the node and `rosbags` typestore messages for bags (their
classes have no defaults, which is why every field is passed). vision_msgs is
not on PyPI: where it is missing the bundle has no `VisionTypes`, and the node
publishes everything else.

Conventions: one Detection2D per defect, its one hypothesis class_id "anomaly"
with the defect's peak pixel score; `id` is the defect's rank in the frame ("0"
is the highest score). The box is in pixels with pixel centres on integer
coordinates, so a defect covering columns x0..x1 has center.x (x0+x1)/2 and
size_x x1-x0+1. The hypothesis pose is left as identity: the box says where.
The verdict is a Classification with one hypothesis: class_id "pass", "fail" or
"error" and the frame score.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from ..decision import Defect

ANOMALY_CLASS = "anomaly"      # the class_id of every detection


@dataclass(frozen=True)
class VisionTypes:
    Detection2DArray: Any
    Detection2D: Any
    BoundingBox2D: Any
    Pose2D: Any
    Point2D: Any
    ObjectHypothesisWithPose: Any
    ObjectHypothesis: Any
    Classification: Any
    PoseWithCovariance: Any     # geometry_msgs
    Pose: Any
    Point: Any
    Quaternion: Any


def vision_types_from_store(types: Mapping[str, Any]) -> VisionTypes:
    """VisionTypes from a `rosbags` typestore's `.types` (vision_msgs registered from .msg text)."""
    return VisionTypes(**{f.name: types[f"{_PACKAGE[f.name]}/msg/{f.name}"] for f in fields(VisionTypes)})


_PACKAGE = {f.name: "geometry_msgs" if f.name in ("PoseWithCovariance", "Pose", "Point", "Quaternion")
            else "vision_msgs" for f in fields(VisionTypes)}


def _identity_pose(t: VisionTypes):
    pose = t.Pose(position=t.Point(x=0.0, y=0.0, z=0.0),
                  orientation=t.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0))
    return t.PoseWithCovariance(pose=pose, covariance=np.zeros(36, np.float64))


def detection(t: VisionTypes, header, defect: Defect, rank: int):
    x0, y0, x1, y1 = defect.bbox
    center = t.Pose2D(position=t.Point2D(x=(x0 + x1) / 2.0, y=(y0 + y1) / 2.0), theta=0.0)
    bbox = t.BoundingBox2D(center=center, size_x=float(x1 - x0 + 1), size_y=float(y1 - y0 + 1))
    hypothesis = t.ObjectHypothesisWithPose(
        hypothesis=t.ObjectHypothesis(class_id=ANOMALY_CLASS, score=float(defect.score)),
        pose=_identity_pose(t))
    return t.Detection2D(header=header, results=[hypothesis], bbox=bbox, id=str(rank))


def detection_array(t: VisionTypes, header, defects: Sequence[Defect]):
    return t.Detection2DArray(header=header,
                              detections=[detection(t, header, d, i) for i, d in enumerate(defects)])


def classification(t: VisionTypes, header, verdict: str, score: float):
    return t.Classification(header=header,
                            results=[t.ObjectHypothesis(class_id=verdict, score=float(score))])
