"""The lifecycle of clipsam_inspector driven as `ros2 lifecycle` and `ros2 param` drive it: through
the node's real change_state / get_state / get_parameters / set_parameters services, on
loopback in domain 63. The first test builds the real Inspector (LiteMedSAM + reference bank)
so the failing configure is the real one; the second uses the gated SlowFakeInspector where
only the frame accounting of deactivate matters."""
from __future__ import annotations

import copy
import json
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from clipsam_ros.config import Config  # noqa: E402
from clipsam_ros.data.synth import generate_dataset, make_sample  # noqa: E402
from clipsam_ros.ros.node import InspectorNode  # noqa: E402
from clipsam_ros.ros.params import config_keys, overrides_from_config  # noqa: E402

from ros_helpers import (  # noqa: E402
    FRAME_SIZE,
    SlowFakeInspector,
    call_service,
    image,
    inference_deadline,
    ros_fixture,
    wait_until,
)

pytestmark = pytest.mark.slow   # DDS: the node on loopback

DOMAIN_ID = 63
CALL_S = 10.0                    # a service round trip on loopback (inference is waited for apart)

ros = ros_fixture(DOMAIN_ID)


def call(ros, srv_type, name: str, request, timeout: float = CALL_S, attempts: int = 3):
    """One service call from the test node, as the ros2 CLI makes it (`call_service`)."""
    return call_service(ros, srv_type, name, request, timeout, attempts)


# the state each transition leads to when it succeeds
GOAL = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_ACTIVATE: "active",
        Transition.TRANSITION_DEACTIVATE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
        Transition.TRANSITION_ACTIVE_SHUTDOWN: "finalized", Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "finalized"}


class Lifecycle:
    """`ros2 lifecycle get|set` and `ros2 param get|set` for one node."""

    def __init__(self, ros, fqn: str):
        self.ros, self.fqn = ros, fqn
        self.seen: list[tuple[str, bool, str]] = []     # (transition, success, state after)

    def state(self) -> str:
        return call(self.ros, GetState, f"{self.fqn}/get_state", GetState.Request()).current_state.label

    def change(self, transition: int, timeout: float = CALL_S) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition))
        try:
            ok = call(self.ros, ChangeState, f"{self.fqn}/change_state", request, timeout, attempts=1).success
        except AssertionError:      # the reply was lost (see `call`): the node's state says what happened
            ok = self.state() == GOAL[transition]
        label = {Transition.TRANSITION_CONFIGURE: "configure", Transition.TRANSITION_ACTIVATE: "activate",
                 Transition.TRANSITION_DEACTIVATE: "deactivate", Transition.TRANSITION_CLEANUP: "cleanup",
                 Transition.TRANSITION_ACTIVE_SHUTDOWN: "shutdown",
                 Transition.TRANSITION_UNCONFIGURED_SHUTDOWN: "shutdown"}[transition]
        self.seen.append((label, ok, self.state()))
        return ok

    def set(self, name: str, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        (result,) = call(self.ros, SetParameters, f"{self.fqn}/set_parameters", request).results
        return result


def verdicts_of(messages) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for m in messages:
        v = json.loads(m.data)
        out.setdefault(v["header"]["sec"], []).append(v["verdict"])
    return out


def test_configure_fails_with_one_line_then_succeeds_after_set_parameters(ros, offline_cfg, lite_sam, tmp_path):
    import torch

    from clipsam_ros.inspector import Inspector
    from clipsam_ros.localize import build_localizer

    def real_inspector(cfg):      # what Inspector.from_config does, with the session's SAM
        cpu = torch.device("cpu")
        return Inspector(cfg, lite_sam, build_localizer(cfg, lite_sam, cpu, progress=False), cpu)

    generate_dataset(tmp_path, n=3, seed=0, size=FRAME_SIZE, classes=["metal"])
    cfg = copy.deepcopy(offline_cfg)
    cfg.device, cfg.runtime.warmup_frames = "cpu", 0
    cfg.localizer.reference_dir = ""                   # offline.yaml without its reference images
    node = ros.add(InspectorNode(real_inspector, namespace="cycle",
                                 parameter_overrides=overrides_from_config(cfg), context=ros.context))
    life = Lifecycle(ros, "/cycle/clipsam_inspector")
    verdicts = ros.collect(String, "/cycle/clipsam_inspector/verdict_json")
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")

    def reported(level, text: str) -> bool:
        return any(s.name.startswith("/cycle/clipsam_inspector") and s.level == level and text in s.message
                   for array in list(diagnostics) for s in array.status)

    assert life.state() == "unconfigured" and node.inspector is None      # parameters only
    # `ros2 param dump`: every key has a value, the empty camera list too (finding 1)
    names = call(ros, ListParameters, "/cycle/clipsam_inspector/list_parameters",
                 ListParameters.Request()).result.names
    assert set(config_keys()) <= set(names)
    values = call(ros, GetParameters, "/cycle/clipsam_inspector/get_parameters",
                  GetParameters.Request(names=config_keys())).values
    assert len(values) == len(config_keys())
    assert all(v.type != ParameterType.PARAMETER_NOT_SET for v in values)
    topics = values[config_keys().index("input.image_topics")]
    assert topics.type == ParameterType.PARAMETER_STRING_ARRAY and list(topics.string_array_value) == []

    assert not life.change(Transition.TRANSITION_CONFIGURE, timeout=60)
    assert life.state() == "unconfigured" and node.inspector is None
    assert "localizer.reference_dir" in node.configure_error and "\n" not in node.configure_error
    # monitoring sees why nothing is inspected, not a node gone stale
    wait_until(lambda: reported(DiagnosticStatus.ERROR, "configure failed: "), 10, "the diagnostics of the failure")

    result = life.set("localizer.reference_dir", str(tmp_path / "metal" / "train" / "good"))
    assert result.successful, result.reason
    assert life.change(Transition.TRANSITION_CONFIGURE, timeout=120)
    assert life.state() == "inactive" and node.inspector is not None
    refused = life.set("localizer.reference_dir", "/elsewhere")     # models are built: not now
    assert not refused.successful and "while unconfigured" in refused.reason

    assert life.change(Transition.TRANSITION_ACTIVATE)
    pub = ros.tester.create_publisher(Image, "/cycle/image", 10)
    wait_until(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0,
               10, "matching")
    stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
    pub.publish(image(stain, 11))
    wait_until(lambda: verdicts, inference_deadline(node.inspector), "the verdict of frame 11")
    assert verdicts_of(verdicts) == {11: ["fail"]}

    assert life.change(Transition.TRANSITION_DEACTIVATE)
    assert life.change(Transition.TRANSITION_CLEANUP)
    assert node.inspector is None and node.cameras == []             # models and publishers gone
    assert life.change(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert [(t, ok, s) for t, ok, s in life.seen] == [
        ("configure", False, "unconfigured"), ("configure", True, "inactive"), ("activate", True, "active"),
        ("deactivate", True, "inactive"), ("cleanup", True, "unconfigured"), ("shutdown", True, "finalized")]
    ros.remove(node)


def test_deactivate_answers_the_frame_in_flight_and_counts_later_frames(ros):
    gate = threading.Event()
    fakes: list[SlowFakeInspector] = []

    def factory(cfg):
        fakes.append(SlowFakeInspector(cfg, 0.0, gate=gate))
        return fakes[-1]
    overrides = overrides_from_config(Config()) + [Parameter("input.queue_policy", value="all")]
    node = ros.add(InspectorNode(factory, namespace="pause", parameter_overrides=overrides, context=ros.context))
    life = Lifecycle(ros, "/pause/clipsam_inspector")
    verdicts = ros.collect(String, "/pause/clipsam_inspector/verdict_json")
    assert life.change(Transition.TRANSITION_CONFIGURE) and life.change(Transition.TRANSITION_ACTIVATE)
    pub = ros.tester.create_publisher(Image, "/pause/image", 10)
    wait_until(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0,
               10, "matching")
    frame = np.zeros((FRAME_SIZE[1], FRAME_SIZE[0], 3), np.uint8)
    pub.publish(image(frame, 1))
    wait_until(lambda: fakes[0].started == 1, 10, "frame 1 in inference")
    for sec in (2, 3):                      # waiting in the queue while frame 1 is held
        pub.publish(image(frame, sec))
        wait_until(lambda n=sec: node.stats.snapshot().received == n, 10, f"frame {sec} received")

    result: list[bool] = []
    deactivating = threading.Thread(target=lambda: result.append(life.change(Transition.TRANSITION_DEACTIVATE,
                                                                             timeout=30)))
    deactivating.start()
    wait_until(lambda: not node._active, 10, "deactivate to begin")
    time.sleep(0.2)                         # frame 1 is still held: deactivate waits for it
    assert deactivating.is_alive()
    gate.set()
    deactivating.join(30)
    assert result == [True]
    wait_until(lambda: len(verdicts) == 3, 10, "three verdicts")
    # the frame in flight got its verdict; the queued ones "error" (queue_policy all), never "pass"
    assert verdicts_of(verdicts) == {1: ["pass"], 2: ["error"], 3: ["error"]}

    pub.publish(image(frame, 4))            # inactive: counted, not answered
    wait_until(lambda: node.stats.snapshot().inactive == 1, 10, "frame 4 counted while inactive")
    assert life.state() == "inactive" and len(verdicts) == 3

    assert life.change(Transition.TRANSITION_ACTIVATE)
    pub.publish(image(frame, 5))
    wait_until(lambda: len(verdicts) == 4, 10, "frame 5 after activate again")
    assert verdicts_of(verdicts)[5] == ["pass"] and fakes[0].started == 2   # the same models, not rebuilt
    assert fakes[0].closed == 0
    assert life.change(Transition.TRANSITION_ACTIVE_SHUTDOWN)               # shutdown from active
    assert life.state() == "finalized" and node.inspector is None
    assert fakes[0].closed == 1                                           # it kept what it learnt first
    ros.remove(node)


def test_a_managed_node_process_waits_for_the_manager(ros, tmp_path):
    """`clipsam-ros node --managed` (what the launch file starts): unconfigured until a manager
    configures and activates it through the services; then it inspects; after the manager's
    shutdown, SIGTERM still ends it with exit code 0 (the launch file reads a non-zero one as a
    failure)."""
    import signal
    import sys

    from clipsam_ros.config import config_path

    from ros_helpers import NodeProcess

    generate_dataset(tmp_path, n=2, seed=0, size=FRAME_SIZE, classes=["metal"])
    cmd = [sys.executable, "-m", "clipsam_ros.cli.main", "node", "--managed", "--config",
           str(config_path("offline.yaml")), "--set", "device=cpu",
           "--set", f"localizer.reference_dir={tmp_path / 'metal' / 'train' / 'good'}",
           "--ros-args", "-r", "__ns:=/managed"]
    with NodeProcess(cmd, DOMAIN_ID) as proc:
        life = Lifecycle(ros, "/managed/clipsam_inspector")
        client = ros.tester.create_client(GetState, "/managed/clipsam_inspector/get_state")
        assert client.wait_for_service(timeout_sec=120), proc.output
        ros.tester.destroy_client(client)
        assert life.state() == "unconfigured" and not any("ready:" in ln for ln in proc.lines)
        assert life.change(Transition.TRANSITION_CONFIGURE, timeout=180), proc.output
        assert life.change(Transition.TRANSITION_ACTIVATE), proc.output
        proc.wait_ready(10)
        verdicts = ros.collect(String, "/managed/clipsam_inspector/verdict_json")
        pub = ros.tester.create_publisher(Image, "/managed/image", 10)
        wait_until(lambda: pub.get_subscription_count() > 0 and ros.tester.count_publishers(
            "/managed/clipsam_inspector/verdict_json") > 0, 30, "discovery")
        stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        pub.publish(image(stain, 21))
        wait_until(lambda: verdicts, 120, "a verdict from the managed node")
        assert json.loads(verdicts[0].data)["header"]["sec"] == 21
        # the manager shuts it down (finalized), then the process is stopped: still a clean exit
        assert life.change(Transition.TRANSITION_ACTIVE_SHUTDOWN, timeout=60), proc.output
        assert life.state() == "finalized"
        code = proc.stop(signal.SIGTERM, timeout=60)
        assert code == 0, proc.output
        assert "Traceback" not in proc.output, proc.output
