"""vision_msgs building against the real message schema, without vision_msgs installed:
rosbags typestore classes generated from the vision_msgs 4.1 (Jazzy) .msg files, then a
CDR serialize -> deserialize round trip. No DDS."""
from __future__ import annotations

import numpy as np
import pytest

typesys = pytest.importorskip("rosbags.typesys")

from clipsam_ros.decision import Defect  # noqa: E402
from clipsam_ros.outputs.vision_msgs import (ANOMALY_CLASS, VisionTypes, classification,  # noqa: E402
                                                 detection_array, types_from_store)

# vision_msgs 4.1.1 (ros-perception/vision_msgs, the Jazzy release), comments left out
VISION_MSGS = {
    "Point2D": "float64 x\nfloat64 y\n",
    "Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "ObjectHypothesis": "string class_id\nfloat64 score\n",
    "ObjectHypothesisWithPose": "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n",
    "Detection2D": ("std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\n"
                    "string id\n"),
    "Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "Classification": "std_msgs/Header header\nObjectHypothesis[] results\n",
}


@pytest.fixture(scope="module")
def store():
    ts = typesys.get_typestore(typesys.Stores.ROS2_JAZZY)   # has std_msgs and geometry_msgs
    types = {}
    for name, text in VISION_MSGS.items():
        types.update(typesys.get_types_from_msg(text, f"vision_msgs/msg/{name}"))
    ts.register(types)
    return ts


@pytest.fixture(scope="module")
def types(store) -> VisionTypes:
    return types_from_store(store.types)


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


def test_bag_tools_use_the_same_definitions_and_conventions(store, types, header):
    """replay / synth --bag write the node's outputs into bags: the bytes must match the node's."""
    defs = pytest.importorskip("clipsam_ros.outputs.vision_msgs_defs")
    assert {k.split("/")[-1]: v.split() for k, v in defs.VISION_MSGS.items()} == \
        {k: v.split() for k, v in VISION_MSGS.items()}
    assert defs.DETECTION_CLASS_ID == ANOMALY_CLASS
    bag_msgs = pytest.importorskip("clipsam_ros.outputs.bag_messages")
    from clipsam_ros.inspector import error_result

    result = error_result((8, 8), "")
    result.verdict, result.score = "fail", 0.9
    result.defects = [Defect(bbox=[1, 2, 5, 7], area_px=20, score=0.9)]
    for theirs, ours in ((bag_msgs.detections_msg(store, header, result),
                          detection_array(types, header, result.defects)),
                         (bag_msgs.verdict_msg(store, header, result),
                          classification(types, header, "fail", 0.9))):
        name = ours.__msgtype__
        assert bytes(store.serialize_cdr(theirs, name)) == bytes(store.serialize_cdr(ours, name))
