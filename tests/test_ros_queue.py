"""Queue policies under a burst, and closing with frames still queued (domain 58).

These tests are about queueing only, so inference is a fake that passes every frame and
is held "busy" by a gate the test opens: each frame is published only once the node has
received the previous one, and the burst arrives while the first frame is held in
inference. So the arithmetic is exact on any machine, and the CPU stays free. Everything
about real inference is in test_ros_node.py.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from clipsam_ros.config import Config  # noqa: E402
from clipsam_ros.ros.node import InspectorNode, configure_and_activate  # noqa: E402
from clipsam_ros.ros.params import overrides_from_config  # noqa: E402

from ros_helpers import SlowFakeInspector, image, ros_fixture, wait_until  # noqa: E402

pytestmark = pytest.mark.slow   # DDS: queue policies under bursts

DOMAIN_ID = 58
FRAME = np.full((48, 64, 3), 128, np.uint8)


ros = ros_fixture(DOMAIN_ID)


def start(ros, namespace: str, seconds: float, gate: threading.Event | None = None, **settings):
    fakes = []

    def factory(cfg):
        fakes.append(SlowFakeInspector(cfg, seconds, gate=gate))
        return fakes[-1]
    overrides = overrides_from_config(Config()) + [Parameter(k, value=v) for k, v in settings.items()]
    node = ros.add(configure_and_activate(
        InspectorNode(factory, namespace=namespace, parameter_overrides=overrides, context=ros.context)))
    verdicts = ros.collect(String, f"/{namespace}/clipsam_inspector/verdict_json", depth=1000)
    rejects = ros.collect(Bool, f"/{namespace}/clipsam_inspector/reject", depth=1000)
    pub = ros.tester.create_publisher(Image, f"/{namespace}/image", 100)
    wait_until(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0
               and node.camera.reject.get_subscription_count() > 0, 10, "matching")
    return node, pub, verdicts, rejects


def burst_while_busy(node, pub, n: int, gate: threading.Event) -> None:
    """Frame 1 goes into inference and is held there; frames 2..n arrive one by one while it is,
    each after the node has received the one before (so DDS replaces none); then the gate opens."""
    (fake,) = [node.inspector]
    pub.publish(image(FRAME, 1))
    wait_until(lambda: fake.started == 1, 10, "frame 1 in inference")
    for sec in range(2, n + 1):
        pub.publish(image(FRAME, sec))
        wait_until(lambda n=sec: node.stats.snapshot().received == n, 10, f"frame {sec} received")
    gate.set()


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
    gate = threading.Event()
    node, pub, verdicts, rejects = start(ros, "q_latest", 0.0, gate, **{"input.queue_policy": "latest",
                                                                         "input.reliability": "reliable"})
    try:
        n = 12
        burst_while_busy(node, pub, n, gate)   # a camera far faster than inference
        wait_until(lambda: settled(node), 20, "the burst to settle")
        snap = node.stats.snapshot()
        # frame 1 was in inference; each of 2..n replaced the one waiting; n waited last
        assert snap.dropped == n - 2 and snap.answered == 2
        wait_until(lambda: len(by_stamp(verdicts)) == snap.answered, 5, "every verdict")
        answered = by_stamp(verdicts)
        assert all(len(v) == 1 for v in answered.values())                 # one verdict each
        assert sorted(answered) == [1, n]                                  # the newest is never dropped
        assert snap.answered == snap.verdicts["pass"] and snap.errors["overflow"] == 0
        wait_until(lambda: len(rejects) == snap.answered, 5, "rejects")
    finally:
        ros.remove(node)


def test_all_answers_every_frame_and_rejects_what_does_not_fit(ros):
    gate = threading.Event()
    node, pub, verdicts, rejects = start(ros, "q_all", 0.0, gate, **{"input.queue_policy": "all",
                                                                      "input.queue_size": 3,
                                                                      "input.reliability": "reliable"})
    try:
        n = 10
        burst_while_busy(node, pub, n, gate)   # a trigger burst faster than inference
        wait_until(lambda: settled(node), 20, "the burst to settle")
        wait_until(lambda: len(verdicts) == n, 5, "a verdict for every frame")
        answered = by_stamp(verdicts)
        assert sorted(answered) == list(range(1, n + 1))
        assert all(len(v) == 1 for v in answered.values())
        overflow = [sec for sec, (v,) in answered.items() if v["verdict"] == "error"]
        assert overflow and all("queue full" in answered[s][0]["error"] for s in overflow)
        assert all(answered[s][0]["reject"] for s in overflow)
        inspected = [sec for sec, (v,) in answered.items() if v["verdict"] == "pass"]
        assert inspected == [1, 2, 3, 4]             # the first fills the worker, three wait in the queue
        assert overflow == list(range(5, n + 1))
        snap = node.stats.snapshot()
        assert snap.dropped == 0 and snap.errors["overflow"] == len(overflow)
        assert snap.received == snap.answered == n
        wait_until(lambda: len(rejects) == n, 5, "rejects")
        # in the frames' order on every output: ~/reject has no stamp, a bridge pairs it by order
        assert [json.loads(m.data)["header"]["sec"] for m in verdicts] == list(range(1, n + 1))
        assert [r.data for r in rejects] == [False] * 4 + [True] * (n - 4)
    finally:
        ros.remove(node)


def test_closing_answers_the_frames_still_queued(ros):
    gate = threading.Event()
    node, pub, verdicts, _ = start(ros, "q_close", 0.0, gate, **{"input.queue_policy": "all",
                                                                 "input.reliability": "reliable"})
    pub.publish(image(FRAME, 1))
    wait_until(lambda: node.inspector.started == 1, 10, "frame 1 in inference")
    for sec in range(2, 5):
        pub.publish(image(FRAME, sec))
    wait_until(lambda: node.stats.snapshot().received == 4 and len(node.queue) == 3, 10, "four frames in")
    # as on SIGINT: the frame being inspected finishes, then the queued frames are answered, so
    # the answers keep the frames' order
    closing = threading.Thread(target=node.close)
    closing.start()
    wait_until(lambda: not node.queue or len(node.queue) == 0, 10, "the queue closed")
    assert closing.is_alive() and node.stats.snapshot().answered == 0     # waiting for frame 1
    gate.set()
    closing.join(30)
    wait_until(lambda: len(verdicts) == 4, 5, "four verdicts")
    assert [json.loads(m.data)["header"]["sec"] for m in verdicts] == [1, 2, 3, 4]
    answered = {sec: v for sec, (v,) in by_stamp(verdicts).items()}
    assert answered[1]["verdict"] == "pass"
    assert [answered[s]["verdict"] for s in (2, 3, 4)] == ["error"] * 3
    assert all("shut down" in answered[s]["error"] for s in (2, 3, 4))
    snap = node.stats.snapshot()
    assert snap.errors["shutdown"] == 3 and snap.in_flight == 0
    ros.remove(node)


def test_a_verdict_after_the_deadline_is_published_marked_late_and_counted(ros):
    """decision.deadline_ms: frame 1 is held in inference past the deadline (the gate, not the
    machine's speed, decides); frame 2 is stamped 60 s ahead, so it cannot be late on any machine."""
    from rclpy.time import Time

    from clipsam_ros.ros.messages import diagnostic_values

    gate = threading.Event()
    deadline_ms = 200.0
    node, pub, verdicts, rejects = start(ros, "q_late", 0.0, gate, **{"decision.deadline_ms": deadline_ms})
    now = Time.from_msg(node.get_clock().now().to_msg())
    sec, nanosec = divmod(now.nanoseconds, 1_000_000_000)
    pub.publish(image(FRAME, sec, nanosec))
    wait_until(lambda: node.inspector.started == 1, 10, "frame 1 in inference")
    wait_until(lambda: node.get_clock().now().nanoseconds - now.nanoseconds > 2 * deadline_ms * 1e6, 10,
               "the deadline to pass")
    gate.set()
    wait_until(lambda: len(verdicts) == 1, 10, "frame 1's verdict")
    first = json.loads(verdicts[0].data)
    assert first["late"] is True and first["verdict"] == "pass"        # still published, marked
    pub.publish(image(FRAME, sec + 60, nanosec))
    wait_until(lambda: len(verdicts) == 2, 10, "frame 2's verdict")
    assert json.loads(verdicts[1].data)["late"] is False
    pub.publish(image(FRAME, 0, 0))       # a camera that does not stamp: no age, never late
    wait_until(lambda: len(verdicts) == 3, 10, "frame 3's verdict")
    assert "late" not in json.loads(verdicts[2].data)
    snap = node.stats.snapshot()
    assert snap.late == 1 and snap.answered == 3
    assert dict(diagnostic_values(snap, 0, 1, {}))["verdicts_late"] == "1"
    ros.remove(node)


def test_no_deadline_no_late_field(ros):
    node, pub, verdicts, _ = start(ros, "q_nodeadline", 0.0)
    pub.publish(image(FRAME, 1))
    wait_until(lambda: len(verdicts) == 1, 10, "a verdict")
    assert "late" not in json.loads(verdicts[0].data) and node.stats.snapshot().late == 0
    ros.remove(node)


def test_a_best_effort_camera_and_the_reliable_default_are_named_not_silent(ros):
    """input.reliability is reliable by default; a best-effort camera cannot connect to it, and
    the node says so (DDS reports the incompatible QoS) instead of only going quiet."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    node, _, _, _ = start(ros, "q_qos", 0.0)
    assert node.cfg.input.reliability == "reliable"
    camera = ros.tester.create_publisher(Image, "/q_qos/image",
                                         QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        wait_until(lambda: node.incompatible_publishers >= 1, 10, "the incompatible QoS event")
    finally:
        ros.tester.destroy_publisher(camera)
        ros.remove(node)
