"""Injected faults on the clipsam_inspector node in-process (issue 7.3): real rclpy on loopback
(domain 80), the real Inspector (LiteMedSAM + reference bank, offline profile), real codec.

The only stand-in is the fault itself: `OutOfMemoryOnce` wraps the real localizer and raises
RuntimeError("CUDA out of memory ...") -- what torch.cuda.OutOfMemoryError says -- on one
chosen call; every other call goes to the real localizer.
"""
from __future__ import annotations

import json
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from clipsam_ros.config import ConfigError, load  # noqa: E402
from clipsam_ros.data.synth import make_sample  # noqa: E402
from clipsam_ros.inspector import Inspector  # noqa: E402
from clipsam_ros.ros.messages import diagnostic_level  # noqa: E402
from clipsam_ros.ros.node import InspectorNode, configure_and_activate  # noqa: E402
from clipsam_ros.ros.params import overrides_from_config  # noqa: E402
from clipsam_ros.ros.stats import FrameStats  # noqa: E402

from ros_helpers import (  # noqa: E402
    FRAME_SIZE,
    build_offline_inspector,
    image,
    inference_deadline,
    ros_fixture,
    verdicts_settled,
    wait_until,
)

pytestmark = pytest.mark.slow   # DDS: faults injected into a running node

DOMAIN_ID = 80
OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)"


class OutOfMemoryOnce:
    """The real localizer, except that call number `fail_on` (1-based) raises like a CUDA OOM."""

    def __init__(self, real, fail_on: int):
        self.real, self.fail_on, self.calls = real, fail_on, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(OOM)
        return self.real(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


@pytest.fixture(scope="module")
def inspector(offline_cfg, lite_sam, tmp_path_factory):
    return build_offline_inspector(offline_cfg, lite_sam, tmp_path_factory.mktemp("faults_bank"))


ros = ros_fixture(DOMAIN_ID)


def start(ros, inspector, namespace, localizer=None, **settings):
    overrides = overrides_from_config(inspector.cfg) + [Parameter(k, value=v) for k, v in settings.items()]
    factory = lambda cfg: Inspector(cfg, inspector.sam, localizer or inspector.localizer, inspector.device)  # noqa: E731
    node = ros.add(configure_and_activate(InspectorNode(factory, namespace=namespace, parameter_overrides=overrides,
                                 context=ros.context)))
    verdicts = ros.collect(String, f"/{namespace}/clipsam_inspector/verdict_json")
    rejects = ros.collect(Bool, f"/{namespace}/clipsam_inspector/reject")
    pub = ros.tester.create_publisher(Image, f"/{namespace}/image", 10)
    wait_until(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0
               and node.camera.reject.get_subscription_count() > 0, 10, "discovery on loopback")
    return node, pub, verdicts, rejects


def verdict_of(node, verdicts, sec, deadline):
    """The one verdict of frame `sec`, once every verdict the node counted has arrived."""
    def mine():
        return [v for v in map(json.loads, (m.data for m in verdicts)) if v["header"]["sec"] == sec]
    wait_until(mine, deadline, f"the verdict of frame {sec}")
    wait_until(lambda: verdicts_settled(node, verdicts), deadline, "every verdict")
    found = mine()
    assert len(found) == 1, found
    return found[0]


def test_out_of_memory_in_inference_errors_that_frame_and_the_next_is_inspected(ros, inspector):
    deadline = inference_deadline(inspector, frames=2)      # measured before the fault is armed
    flaky = OutOfMemoryOnce(inspector.localizer, fail_on=1)
    node, pub, verdicts, rejects = start(ros, inspector, "oom", flaky, **{
        "input.queue_policy": "all", "input.reliability": "reliable"})
    try:
        stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        pub.publish(image(stain, 1))
        pub.publish(image(stain, 2))
        first, second = verdict_of(node, verdicts, 1, deadline), verdict_of(node, verdicts, 2, deadline)
        assert first["verdict"] == "error" and first["reject"] is True and "CUDA out of memory" in first["error"]
        assert second["verdict"] == "fail" and second["reject"] is True and second["defects"]
        assert flaky.calls == 2
        wait_until(lambda: len(rejects) == 2, 5, "two rejects")
        assert [r.data for r in rejects] == [True, True]
        snap = node.stats.snapshot()
        assert snap.errors["inference"] == 1 and snap.verdicts["fail"] == 1 and snap.in_flight == 0
        assert node._worker.is_alive()
    finally:
        ros.remove(node)


def test_no_frames_for_stall_timeout_turns_diagnostics_to_warn(ros, inspector):
    diags = ros.collect(DiagnosticArray, "/diagnostics")
    deadline = inference_deadline(inspector)
    # 3 s of silence: the 1 Hz report has three chances to say OK between a frame and the next WARN
    node, pub, verdicts, _ = start(ros, inspector, "stall", **{"input.stall_timeout_s": 3.0})
    name = f"{node.get_fully_qualified_name()}: inspection"

    def mine(after=0.0):
        return [(t, s) for t, s in ((time.monotonic(), m.status[0]) for m in list(diags))
                if s.name == name and t >= after]

    def stalled(status):
        return status.level == DiagnosticStatus.WARN and "no frames on /stall/image" in status.message

    try:
        wait_until(lambda: any(stalled(s) for _, s in mine()), 15, "a stall WARN")
        status = next(s for _, s in mine() if stalled(s))
        values = {kv.key: kv.value for kv in status.values}
        assert float(values["seconds_since_last_frame"]) >= 3.0 and values["frames_received"] == "0"
        assert "input.stall_timeout_s 3" in status.message

        good, _ = make_sample("metal", None, seed=1, size=FRAME_SIZE)
        count = len(diags)
        pub.publish(image(good, 7))
        # the first report after the frame arrived is OK again, then silence is a WARN again
        wait_until(lambda: any(s.level == DiagnosticStatus.OK for s in
                               (m.status[0] for m in diags[count:]) if s.name == name), 15, "OK after a frame")
        assert verdict_of(node, verdicts, 7, deadline)["verdict"] == "pass"
        count = len(diags)
        wait_until(lambda: any(stalled(m.status[0]) for m in diags[count:]), 15, "WARN again")
    finally:
        ros.remove(node)


def _sockets_of_this_process() -> list[tuple[str, str, str]]:
    """(protocol, local address hex, state hex) of every inet socket this process holds."""
    import os
    import re

    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        with open(f"/proc/self/net/{proto}") as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[9] in inodes:
                    found.append((proto, cols[1], cols[3]))
    return found


def test_a_running_node_listens_on_no_tcp_port(ros, inspector):
    """The node opens no server socket (issue 7.4): no TCP socket of this process is in LISTEN."""
    node, *_ = start(ros, inspector, "ports")
    try:
        sockets = _sockets_of_this_process()
        assert not [s for s in sockets if s[0].startswith("tcp") and s[2] == "0A"], sockets   # 0A = LISTEN
    finally:
        ros.remove(node)


@pytest.mark.xfail(reason="known gap: with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, Fast DDS (rmw default) "
                          "still binds a unicast UDP socket to the host's interface address; rmw adds its own "
                          "transports under LOCALHOST, so a loopback profile cannot confine it while the tests "
                          "keep LOCALHOST (docs/RELIABILITY.md §4)", strict=False)
def test_dds_binds_udp_only_to_loopback_or_any(ros, inspector):
    node, *_ = start(ros, inspector, "ports_udp")
    try:
        loopback_or_any = ("0100007F", "00000000", "00000000000000000000000001000000",
                           "00000000000000000000000000000000")
        udp = [s for s in _sockets_of_this_process() if s[0].startswith("udp")]
        assert all(s[1].split(":")[0] in loopback_or_any for s in udp), udp
    finally:
        ros.remove(node)


def test_stall_rule_unit():
    stats = FrameStats(started=100.0)
    snap = stats.snapshot(now=104.0)
    assert diagnostic_level(None, snap, True, stall_timeout_s=5.0)[0] == 0
    snap = stats.snapshot(now=106.0)
    level, message = diagnostic_level(None, snap, True, stall_timeout_s=5.0, topics=("/cam/image",))
    assert level == 1 and "no frames on /cam/image for 6.0 s" in message
    assert diagnostic_level(None, snap, True, stall_timeout_s=0.0)[0] == 0        # 0 = off
    stats.received(106.5)
    assert diagnostic_level(None, stats.snapshot(now=107.0), True, stall_timeout_s=5.0)[0] == 0
    stats.answered("error", 106.5, 107.0, "decode", "bad")                           # errors still outrank it
    assert diagnostic_level(None, stats.snapshot(now=120.0), True, stall_timeout_s=5.0)[0] == 2


@pytest.mark.parametrize("value", ["-1", "1e9", "soon"])
def test_a_bad_stall_timeout_names_the_key(value):
    with pytest.raises(ConfigError, match="input.stall_timeout_s"):
        load(None, [f"input.stall_timeout_s={value}"])
