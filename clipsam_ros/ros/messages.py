"""The rclpy side of the outputs: the message classes the builder uses, and /diagnostics.

The outputs themselves are built by `outputs.builder` (shared with replay); this
module only hands it rclpy's classes. The DiagnosticArray classes are passed in.
"""
from __future__ import annotations

import array
import functools
import math

from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Bool, Header, String

from ..decision import Verdict
from ..outputs.message_types import MessageTypes
from ..outputs.vision_msgs import VisionTypes
from .stats import ERROR_KINDS, Snapshot


@functools.cache
def rclpy_message_types() -> MessageTypes:
    """rclpy's output classes; without vision_msgs installed `vision` is None."""
    # rclpy checks a bytes value element by element; array.array('B') is taken as is
    return MessageTypes(Header=Header, Time=Time, Image=Image, String=String, Bool=Bool,
                        vision=load_vision_types(), uint8_array=functools.partial(array.array, "B"),
                        **load_marker_types())


def load_marker_types() -> dict:
    """The classes of ~/annotations; none where visualization_msgs is not installed."""
    try:
        from builtin_interfaces.msg import Duration
        from geometry_msgs.msg import Point
        from std_msgs.msg import ColorRGBA
        from visualization_msgs.msg import ImageMarker
    except ImportError:
        return {}
    return {"ImageMarker": ImageMarker, "Point": Point, "ColorRGBA": ColorRGBA, "Duration": Duration}


def load_vision_types() -> VisionTypes | None:
    """The rclpy vision_msgs (and geometry_msgs) classes, or None where vision_msgs is not installed."""
    try:
        from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
        from vision_msgs.msg import (
            BoundingBox2D,
            Classification,
            Detection2D,
            Detection2DArray,
            ObjectHypothesis,
            ObjectHypothesisWithPose,
            Point2D,
            Pose2D,
        )
    except ImportError:
        return None
    return VisionTypes(Detection2DArray, Detection2D, BoundingBox2D, Pose2D, Point2D,
                       ObjectHypothesisWithPose, ObjectHypothesis, Classification,
                       PoseWithCovariance, Pose, Point, Quaternion)


LATE_WARN_FRACTION = 0.01    # late verdicts above this share of a report's verdicts: WARN


def _num(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.2f}"


def diagnostic_values(snap: Snapshot, queue_depth: int, queue_capacity: int,
                      about: dict[str, str]) -> list[tuple[str, str]]:
    """(key, value) pairs for the DiagnosticStatus, in a stable order."""
    values = [
        ("input_rate_hz", _num(snap.input_rate_hz)),
        ("processed_rate_hz", _num(snap.processed_rate_hz)),
        ("latency_p50_ms", _num(snap.latency_p50_ms)),
        ("latency_p95_ms", _num(snap.latency_p95_ms)),
        ("queue_depth", str(queue_depth)),
        ("queue_capacity", str(queue_capacity)),
        ("frames_received", str(snap.received)),
        ("seconds_since_last_frame", _num(snap.since_last_frame_s)),
        ("frames_in_flight", str(snap.in_flight)),
        ("frames_dropped", str(snap.dropped)),
        ("frames_while_inactive", str(snap.inactive)),
        ("verdicts_late", str(snap.late)),
        *((f"verdicts_{v}", str(snap.verdicts[v])) for v in Verdict),
    ]
    values += [(f"errors_{kind}", str(snap.errors[kind])) for kind in ERROR_KINDS]
    values += [(f"{stage}_ms_p50", _num(ms)) for stage, ms in snap.stage_p50_ms.items()]
    values += list(about.items())
    values.append(("last_error", snap.last_error))
    return values


def camera_values(snap: Snapshot, names: list[str]) -> list[tuple[str, str]]:
    """Per-camera counts for a node with several cameras (none for a single camera)."""
    if len(names) < 2:
        return []
    values = []
    for name, received, silence in zip(names, snap.camera_received, snap.camera_silence_s):
        values += [(f"camera_{name}_frames_received", str(received)),
                   (f"camera_{name}_seconds_since_last_frame", _num(silence))]
    return values


def diagnostic_level(prev: Snapshot | None, snap: Snapshot, worker_alive: bool,
                     stall_timeout_s: float = 0.0, topics: tuple[str, ...] = ("image",),
                     active: bool = True) -> tuple[int, str]:
    """(0 OK | 1 WARN | 2 ERROR, one-line message) from what changed since the last report.

    Inactive (lifecycle): frames that still arrive are a WARN (nobody inspects them).
    More than LATE_WARN_FRACTION of the verdicts since the last report published after
    decision.deadline_ms is a WARN: the ejector may have acted without them.

    No frame for `stall_timeout_s` seconds (0 = never) is a WARN: a stalled camera
    or a broken remap must not look like a quiet, healthy line. With several cameras
    each is watched on its own, so one dead camera is not hidden by the others.
    """
    if not worker_alive:
        return 2, "inference thread stopped: frames are not being inspected"
    errors = snap.verdicts[Verdict.ERROR] - (prev.verdicts[Verdict.ERROR] if prev else 0)
    dropped = snap.dropped - (prev.dropped if prev else 0)
    late = snap.late - (prev.late if prev else 0)
    answered = snap.answered - (prev.answered if prev else 0)
    ignored = snap.inactive - (prev.inactive if prev else 0)
    summary = f"{snap.input_rate_hz:.1f} Hz in, {snap.processed_rate_hz:.1f} Hz inspected"
    if errors:
        return 2, f"{errors} error verdict(s) since the last report ({snap.last_error}); {summary}"
    if not active:
        if ignored:
            return 1, f"inactive: {ignored} frame(s) arrived since the last report and got no verdict"
        return 0, "inactive: not inspecting (activate the node)"
    if late and late > LATE_WARN_FRACTION * answered:
        return 1, (f"{late} of {answered} verdict(s) since the last report later than decision.deadline_ms; "
                   f"{summary}")
    silences = snap.camera_silence_s or (snap.since_last_frame_s,)
    stalled = [(topic, s) for topic, s in zip(topics, silences) if stall_timeout_s > 0 and s >= stall_timeout_s]
    if stalled:
        topic, silence = stalled[0]
        more = f" (and {len(stalled) - 1} more camera(s))" if len(stalled) > 1 else ""
        return 1, (f"no frames on {topic} for {silence:.1f} s{more} "
                   f"(input.stall_timeout_s {stall_timeout_s:g}); check the camera, the remapping and the QoS "
                   f"(input.reliability must match the publisher's; large best_effort frames can be lost "
                   f"between processes)")
    if dropped:
        return 1, f"{dropped} frame(s) dropped (queue_policy latest) since the last report; {summary}"
    return 0, f"ok: {summary}"


def diagnostic_array(DiagnosticArray, DiagnosticStatus, KeyValue, stamp, name: str, hardware_id: str,
                     level: int, message: str, values: list[tuple[str, str]]):
    levels = (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR)
    status = DiagnosticStatus(level=levels[level], name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=k, value=v) for k, v in values])
    array_ = DiagnosticArray(status=[status])
    array_.header.stamp = stamp
    return array_
