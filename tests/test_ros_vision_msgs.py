"""vision_msgs building against the real message schema, without vision_msgs installed:
rosbags typestore classes generated from the vision_msgs 4.1 (Jazzy) .msg text the bag
tools register (`outputs.vision_msgs_defs`), then a CDR serialize -> deserialize round
trip. No DDS."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags.typesys")

from clipsam_ros.decision import Defect  # noqa: E402
from clipsam_ros.outputs.vision_msgs import (  # noqa: E402
    ANOMALY_CLASS,
    VisionTypes,
    classification,
    detection_array,
    vision_types_from_store,
)
from clipsam_ros.outputs.vision_msgs_defs import bag_typestore  # noqa: E402


@pytest.fixture(scope="module")
def store():
    return bag_typestore()      # Jazzy's std_msgs and geometry_msgs, plus vision_msgs from .msg text


@pytest.fixture(scope="module")
def types(store) -> VisionTypes:
    return vision_types_from_store(store.types)


@pytest.fixture()
def header(store):
    t = store.types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1712, nanosec=345), frame_id="cam_3")


def round_trip(store, msg):
    typename = msg.__msgtype__
    return store.deserialize_cdr(store.serialize_cdr(msg, typename), typename)


def test_detection_array_round_trips_with_boxes_scores_and_the_input_header(store, types, header):
    defects = [Defect(bbox=[10, 20, 29, 59], area_px=500, score=0.91),
               Defect(bbox=[100, 5, 100, 5], area_px=1, score=0.55)]
    back = round_trip(store, detection_array(types, header, defects))
    assert back.__msgtype__ == "vision_msgs/msg/Detection2DArray"
    assert (back.header.stamp.sec, back.header.stamp.nanosec, back.header.frame_id) == (1712, 345, "cam_3")
    first, second = back.detections
    assert first.header.frame_id == "cam_3" and first.id == "0" and second.id == "1"
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (19.5, 39.5)
    assert (first.bbox.size_x, first.bbox.size_y, first.bbox.center.theta) == (20.0, 40.0, 0.0)
    assert (second.bbox.size_x, second.bbox.size_y) == (1.0, 1.0)           # a one-pixel defect
    (hyp,) = first.results
    assert hyp.hypothesis.class_id == ANOMALY_CLASS and hyp.hypothesis.score == pytest.approx(0.91)
    assert hyp.pose.pose.orientation.w == 1.0 and np.all(hyp.pose.covariance == 0)


def test_no_defects_is_an_empty_array(store, types, header):
    back = round_trip(store, detection_array(types, header, []))
    assert back.detections == [] and back.header.frame_id == "cam_3"


@pytest.mark.parametrize("verdict,score", [("pass", 0.12), ("fail", 0.97), ("error", 1.0)])
def test_verdict_classification_round_trips(store, types, header, verdict, score):
    back = round_trip(store, classification(types, header, verdict, score))
    assert back.__msgtype__ == "vision_msgs/msg/Classification"
    (result,) = back.results
    assert (result.class_id, result.score) == (verdict, pytest.approx(score))
    assert back.header.stamp.sec == 1712

