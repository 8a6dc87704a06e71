"""Queue policies under a burst, and closing with frames still queued (domain 58).

These tests are about queueing only, so inference is a fake that sleeps a fixed
time and passes every frame: that makes the burst arithmetic deterministic and
keeps the CPU free. Everything about real inference is in test_ros_node.py.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from clipsam_ros.config import Config  # noqa: E402
from clipsam_ros.ros.node import InspectorNode  # noqa: E402
from clipsam_ros.ros.params import overrides_from_config  # noqa: E402

from ros_helpers import SlowFakeInspector, image, ros_fixture, wait_until  # noqa: E402

DOMAIN_ID = 58
FRAME = np.full((48, 64, 3), 128, np.uint8)


ros = ros_fixture(DOMAIN_ID)


def start(ros, namespace: str, seconds: float, **settings):
    fakes = []

    def factory(cfg):
        fakes.append(SlowFakeInspector(cfg, seconds))
        return fakes[-1]
    overrides = overrides_from_config(Config()) + [Parameter(k, value=v) for k, v in settings.items()]
    node = ros.add(InspectorNode(factory, namespace=namespace, parameter_overrides=overrides, context=ros.context))
    verdicts = ros.collect(String, f"/{namespace}/clipsam_inspector/verdict_json", depth=1000)
    rejects = ros.collect(Bool, f"/{namespace}/clipsam_inspector/reject", depth=1000)
    pub = ros.tester.create_publisher(Image, f"/{namespace}/image", 100)
    wait_until(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0
               and node.camera.reject.get_subscription_count() > 0, 10, "matching")
    return node, pub, verdicts, rejects


def by_stamp(verdicts) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for m in verdicts:
        v = json.loads(m.data)
        out.setdefault(v["header"]["sec"], []).append(v)
    return out


def settled(node) -> bool:
    snap = node.stats.snapshot()
    return snap.received > 0 and snap.in_flight == 0


def test_latest_keeps_the_newest_frame_and_counts_what_it_drops(ros):
    node, pub, verdicts, rejects = start(ros, "q_latest", 0.3, **{"input.queue_policy": "latest",
                                                                   "input.reliability": "reliable"})
    try:
        n = 12
        for sec in range(1, n + 1):          # a 100 Hz camera: far faster than inference
            pub.publish(image(FRAME, sec))
            time.sleep(0.01)
        wait_until(lambda: node.stats.snapshot().received == n and settled(node), 20, "the burst to settle")
        snap = node.stats.snapshot()
        assert snap.dropped > 0 and snap.dropped == n - snap.answered
        wait_until(lambda: len(by_stamp(verdicts)) == snap.answered, 5, "every verdict")
        answered = by_stamp(verdicts)
        assert all(len(v) == 1 for v in answered.values())                 # one verdict each
        assert n in answered                                               # the newest is never dropped
        assert snap.answered == snap.verdicts["pass"] and snap.errors["overflow"] == 0
        wait_until(lambda: len(rejects) == snap.answered, 5, "rejects")
    finally:
        ros.remove(node)


def test_all_answers_every_frame_and_rejects_what_does_not_fit(ros):
    node, pub, verdicts, rejects = start(ros, "q_all", 0.3, **{"input.queue_policy": "all",
                                                                "input.queue_size": 3,
                                                                "input.reliability": "reliable"})
    try:
        n = 10
        for sec in range(1, n + 1):          # a trigger burst at 100 Hz
            pub.publish(image(FRAME, sec))
            time.sleep(0.01)
        wait_until(lambda: node.stats.snapshot().received == n and settled(node), 20, "the burst to settle")
        wait_until(lambda: len(verdicts) == n, 5, "a verdict for every frame")
        answered = by_stamp(verdicts)
        assert sorted(answered) == list(range(1, n + 1))
        assert all(len(v) == 1 for v in answered.values())
        overflow = [sec for sec, (v,) in answered.items() if v["verdict"] == "error"]
        assert overflow and all("queue full" in answered[s][0]["error"] for s in overflow)
        assert all(answered[s][0]["reject"] for s in overflow)
        inspected = [sec for sec, (v,) in answered.items() if v["verdict"] == "pass"]
        assert inspected[:4] == [1, 2, 3, 4]         # the first fills the worker, three wait in the queue
        snap = node.stats.snapshot()
        assert snap.dropped == 0 and snap.errors["overflow"] == len(overflow)
        assert snap.received == snap.answered == n
        wait_until(lambda: len(rejects) == n, 5, "rejects")
        assert sum(r.data for r in rejects) == len(overflow)
    finally:
        ros.remove(node)


def test_closing_answers_the_frames_still_queued(ros):
    node, pub, verdicts, _ = start(ros, "q_close", 1.0, **{"input.queue_policy": "all",
                                                           "input.reliability": "reliable"})
    for sec in range(1, 5):
        pub.publish(image(FRAME, sec))
    wait_until(lambda: node.stats.snapshot().received == 4 and len(node.queue) == 3, 10, "four frames in")
    node.close()                                   # as on SIGINT: the frame being inspected finishes
    wait_until(lambda: len(verdicts) == 4, 5, "four verdicts")
    answered = {sec: v for sec, (v,) in by_stamp(verdicts).items()}
    assert answered[1]["verdict"] == "pass"
    assert [answered[s]["verdict"] for s in (2, 3, 4)] == ["error"] * 3
    assert all("shut down" in answered[s]["error"] for s in (2, 3, 4))
    snap = node.stats.snapshot()
    assert snap.errors["shutdown"] == 3 and snap.in_flight == 0
    ros.remove(node)
