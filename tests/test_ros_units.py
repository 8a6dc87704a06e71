"""The node's plain parts, without DDS: frame queue, accounting, parameter specs, QoS,
messages, the `node` subcommand's arguments."""
from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

rclpy = pytest.importorskip("rclpy")

from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import HistoryPolicy, ReliabilityPolicy  # noqa: E402

from clipsam_ros.cli.main import build_parser  # noqa: E402
from clipsam_ros.config import (  # noqa: E402
    Config,
    InputConfig,
    config_path,  # noqa: E402
    flatten,
    read_params_file,
)
from clipsam_ros.decision import Defect  # noqa: E402
from clipsam_ros.outputs.builder import verdict_json  # noqa: E402
from clipsam_ros.ros.frame_queue import Frame, FrameQueue  # noqa: E402
from clipsam_ros.ros.messages import camera_values, diagnostic_level  # noqa: E402
from clipsam_ros.ros.node import Throttle, config_overrides  # noqa: E402
from clipsam_ros.ros.params import check_change, param_specs  # noqa: E402
from clipsam_ros.ros.qos import image_subscription_qos, policy_warning  # noqa: E402
from clipsam_ros.ros.stats import FrameStats  # noqa: E402

from ros_helpers import header  # noqa: E402


def frame(seq: int, camera: int = 0) -> Frame:
    return Frame(msg=None, received=0.0, seq=seq, camera=camera)


def test_latest_queue_replaces_the_waiting_frame_and_hands_it_back():
    q = FrameQueue("latest", size=8)          # size is for `all`; latest holds one
    assert q.offer(frame(1)).accepted
    offer = q.offer(frame(2))
    assert offer.accepted and offer.dropped.seq == 1
    assert [f.seq for f in q.get_batch(0.0, timeout=0)] == [2] and q.get_batch(0.0, timeout=0) is None


def test_all_queue_refuses_what_does_not_fit_and_keeps_order():
    """A refused frame keeps its place, to be answered "error" in its turn: answers leave in the
    order the frames came (`~/reject` has no stamp), and it keeps only its header."""
    q = FrameQueue("all", size=2)
    offers = [q.offer(frame(i)) for i in (1, 2, 3)]
    assert [o.accepted for o in offers] == [True, True, False] and offers[2].refused
    assert q.offer(frame(4)).dropped is None and len(q) == 2      # what waits for inference
    assert [q.get_batch(0.0, timeout=0)[0].seq for _ in range(2)] == [1, 2]
    assert q.offer(frame(5)).accepted               # room again: 3 and 4 were refused, 5 waits
    got = [q.get_batch(0.0, timeout=0)[0] for _ in range(3)]
    assert [(f.seq, bool(f.refused)) for f in got] == [(3, True), (4, True), (5, False)]
    assert "queue full (2 frames waiting" in got[0].refused
    big = Frame(msg=SimpleNamespace(header="h", data=b"x" * 1000), received=0.0, seq=9)
    q.offer(frame(10)), q.offer(frame(11))
    assert q.offer(big).refused and big.msg.header == "h" and not hasattr(big.msg, "data")


def test_frames_only_to_be_answered_do_not_wait_for_other_cameras():
    """A refused frame needs no batch partner: the batch window (here 60 s) is not waited for it,
    or an overloaded node would spend its time waiting on the answers it owes."""
    q = FrameQueue("all", size=1, cameras=2)
    q.offer(frame(1, camera=0))
    assert q.offer(frame(2, camera=0)).refused
    assert [f.seq for f in q.get_batch(0.0, timeout=0)] == [1]
    got = []
    consumer = threading.Thread(target=lambda: got.append(q.get_batch(60.0)))
    consumer.start()
    consumer.join(30)
    assert not consumer.is_alive() and [(f.seq, bool(f.refused)) for f in got[0]] == [(2, True)]
    q.close()


def test_closing_wakes_the_consumer_and_returns_what_waited():
    q = FrameQueue("all", size=4)
    got = []
    consumer = threading.Thread(target=lambda: got.extend(q.get_batch(0.0)))
    consumer.start()
    time.sleep(0.05)
    q.offer(frame(1))
    consumer.join(60)
    assert not consumer.is_alive() and got[0].seq == 1
    q.offer(frame(2))
    assert [f.seq for f in q.close()] == [2]
    assert q.get_batch(0.0) is None and not q.offer(frame(3)).accepted


def test_each_camera_has_its_own_latest_line():
    q = FrameQueue("latest", size=1, cameras=2)
    assert q.offer(frame(1, camera=0)).dropped is None
    assert q.offer(frame(2, camera=1)).dropped is None     # the other camera's frame survives
    assert q.offer(frame(3, camera=0)).dropped.seq == 1    # only its own camera's older frame goes
    assert [f.seq for f in q.get_batch(0.0)] == [3, 2] and len(q) == 0


def test_a_batch_waits_the_window_for_the_missing_camera():
    q = FrameQueue("all", size=4, cameras=2)
    q.offer(frame(1, camera=0))
    late = threading.Timer(0.1, lambda: q.offer(frame(2, camera=1)))
    late.start()
    t0 = time.monotonic()
    batch = q.get_batch(window_s=60.0)
    waited = time.monotonic() - t0
    assert [(f.seq, f.camera) for f in batch] == [(1, 0), (2, 1)]
    assert waited < 50                        # it returned when the last camera arrived, not at the deadline
    q.offer(frame(3, camera=0))
    q.offer(frame(4, camera=0))
    t0 = time.monotonic()
    assert [f.seq for f in q.get_batch(window_s=0.2)] == [3]   # one per camera: 4 waits for the next batch
    assert time.monotonic() - t0 >= 0.15                        # camera 1 got its window
    assert [f.seq for f in q.get_batch(window_s=0.0)] == [4]


def test_closing_a_multi_camera_queue_returns_every_waiting_frame_in_arrival_order():
    q = FrameQueue("all", size=4, cameras=3)
    for seq, camera in ((1, 2), (2, 0), (3, 2), (4, 1)):
        q.offer(frame(seq, camera))
    assert [f.seq for f in q.close()] == [1, 2, 3, 4]
    assert q.get_batch(1.0) is None


def test_silence_counts_from_activate_not_from_configure():
    """Configured at 0 s, activated at 7 s: at 8.5 s the camera has been silent 1.5 s, not 8.5 s."""
    stats = FrameStats(started=0.0, cameras=2)
    stats.received(0.5, camera=1)
    stats.listening(7.0)
    snap = stats.snapshot(now=8.5)
    assert snap.camera_silence_s == (1.5, 1.5) and snap.since_last_frame_s == 1.5
    level, _ = diagnostic_level(None, snap, True, stall_timeout_s=5.0, topics=("/a/image", "/b/image"))
    assert level == 0
    stats.received(9.0, camera=0)
    assert stats.snapshot(now=10.0).camera_silence_s == (1.0, 3.0)


def test_one_silent_camera_warns_though_the_others_send():
    stats = FrameStats(started=0.0, cameras=2)
    for t in range(1, 10):
        stats.received(float(t), camera=0)
    snap = stats.snapshot(now=9.5)
    assert snap.camera_received == (9, 0) and snap.camera_silence_s == (0.5, 9.5)
    level, message = diagnostic_level(None, snap, True, stall_timeout_s=5.0, topics=("/a/image", "/b/image"))
    assert level == 1 and "no frames on /b/image for 9.5 s" in message and "/a/image" not in message
    assert "QoS" in message and "input.reliability" in message     # a QoS mismatch looks like this too
    assert dict(camera_values(snap, ["a", "b"]))["camera_b_frames_received"] == "0"
    assert camera_values(snap, [""]) == []                       # one camera: the node's own keys say it


def test_accounting_is_exact_and_latency_is_measured():
    stats = FrameStats(window_s=10.0, started=0.0)
    for t in range(5):
        stats.received(float(t))
    stats.dropped()
    stats.answered("pass", received_at=0.0, now=1.0)
    stats.answered("fail", received_at=1.0, now=1.5)
    stats.answered("error", received_at=2.0, now=2.1, error_kind="decode", error="data: 3 bytes")
    snap = stats.snapshot(now=5.0)
    assert snap.received == 5 and snap.in_flight == 1
    assert snap.received == snap.in_flight + snap.dropped + snap.answered
    assert snap.errors["decode"] == 1 and snap.last_error == "decode: data: 3 bytes"
    assert snap.latency_p50_ms == pytest.approx(500.0) and snap.latency_p95_ms > 900
    assert snap.input_rate_hz == pytest.approx(1.0)           # 5 frames over the 5 s so far
    with pytest.raises(ValueError):
        stats.answered("maybe", 0.0, 0.0)


def test_diagnostic_level_follows_what_changed():
    stats = FrameStats(started=0.0)
    stats.received(0.0)
    first = stats.snapshot(1.0)
    assert diagnostic_level(None, first, worker_alive=True)[0] == 0
    stats.dropped()
    assert diagnostic_level(first, stats.snapshot(2.0), True)[0] == 1
    stats.answered("error", 0.0, 2.0, "overflow", "queue full")
    level, message = diagnostic_level(first, stats.snapshot(2.0), True)
    assert level == 2 and "queue full" in message
    assert diagnostic_level(first, first, worker_alive=False)[0] == 2


def test_diagnostics_of_an_inactive_node_and_of_late_verdicts():
    stats = FrameStats(started=0.0)
    first = stats.snapshot(1.0)
    assert diagnostic_level(first, first, True, active=False) == (0, "inactive: not inspecting (activate the node)")
    stats.inactive()
    level, message = diagnostic_level(first, stats.snapshot(2.0), True, active=False)
    assert level == 1 and "1 frame(s) arrived" in message and "no verdict" in message
    assert stats.snapshot(2.0).received == 0               # not received: it never gets a verdict
    before = stats.snapshot(2.0)
    for _ in range(200):                                     # 1 late verdict in 200: under the rate
        stats.received(2.0)
        stats.answered("pass", 2.0, 2.5)
    stats.late()
    assert diagnostic_level(before, stats.snapshot(3.0), True)[0] == 0
    stats.late(5)
    level, message = diagnostic_level(before, stats.snapshot(3.0), True)
    assert level == 1 and "6 of 200 verdict(s)" in message and "decision.deadline_ms" in message


def test_throttle_says_one_line_per_period_and_counts_the_rest():
    say = Throttle(period_s=5.0)
    assert say("decode", 0.0) == 0
    assert say("decode", 1.0) is None and say("decode", 2.0) is None
    assert say("overflow", 2.0) == 0                            # kinds are throttled apart
    assert say("decode", 6.0) == 2


def test_every_config_key_has_a_typed_parameter_spec():
    specs = {s.name: s for s in param_specs()}
    assert set(specs) == set(flatten(Config()))
    assert specs["refiner.threshold"].type == ParameterType.PARAMETER_DOUBLE
    assert specs["refiner.threshold"].range == (0.0, 1.0) and not specs["refiner.threshold"].read_only
    assert specs["clip.layers"].type == ParameterType.PARAMETER_INTEGER_ARRAY
    assert specs["input.compressed"].type == ParameterType.PARAMETER_BOOL
    assert specs["refiner.num_positive"].type == ParameterType.PARAMETER_INTEGER
    for key in ("device", "sam.variant", "localizer.method", "input.queue_policy", "clip.layers"):
        assert specs[key].read_only and "while unconfigured" in specs[key].constraints
    assert "one of: latest, all" in specs["input.queue_policy"].constraints


@pytest.mark.parametrize("name", ["offline.yaml", "inspect.yaml"])
def test_shipped_params_files_have_the_types_the_node_declares(name):
    """ROS refuses `15` for a double parameter: the YAMLs must write 15.0."""
    specs = {s.name: s for s in param_specs()}
    for key, value in read_params_file(config_path(name)).items():
        value = "" if value is None else value
        assert Parameter.Type.from_parameter_value(value).value == specs[key].type, (name, key, value)


def test_check_change_uses_config_rules_and_touches_nothing():
    cfg = Config()
    assert check_change(cfg, {"refiner.threshold": 0.7}) == ""
    assert "odd" in check_change(cfg, {"refiner.dilation_size": 24})
    assert "not allowed" in check_change(cfg, {"refiner.dilation_shape": "star"})
    assert cfg.refiner.threshold == 0.5


def test_subscription_qos_follows_reliability_and_policy():
    # reliable by default: best effort loses camera-sized frames between processes
    assert image_subscription_qos(InputConfig()).reliability == ReliabilityPolicy.RELIABLE
    video = InputConfig(reliability="best_effort")
    assert image_subscription_qos(video).reliability == ReliabilityPolicy.BEST_EFFORT   # still selectable
    triggered = InputConfig(reliability="reliable", queue_policy="all", queue_size=8)
    assert image_subscription_qos(triggered).reliability == ReliabilityPolicy.RELIABLE
    assert image_subscription_qos(triggered).history == HistoryPolicy.KEEP_ALL   # no overwrite before the node sees it
    assert policy_warning(triggered) == ""
    assert "best_effort" in policy_warning(InputConfig(queue_policy="all", reliability="best_effort"))


def test_verdict_json_carries_the_stamp_and_the_reject_flag():
    data = json.loads(verdict_json(header(12, 34, "cam"), "fail", 0.8,
                                   [Defect(bbox=[1, 2, 3, 4], area_px=9, score=0.8)]))
    assert data["header"] == {"sec": 12, "nanosec": 34, "frame_id": "cam"}
    assert data["reject"] is True and data["defects"][0]["bbox"] == [1, 2, 3, 4]
    assert json.loads(verdict_json(header(1), "error", 1.0, error="x"))["error"] == "x"


def test_node_subcommand_takes_config_set_and_ros_args():
    args = build_parser().parse_args(["node", "--config", "c.yaml", "--set", "device=cpu",
                                      "--ros-args", "-r", "image:=/cam/image_raw", "-r", "__ns:=/l1"])
    assert (args.config, args.overrides) == ("c.yaml", ["device=cpu"])
    assert args.ros_args == ["-r", "image:=/cam/image_raw", "-r", "__ns:=/l1"] and not args.managed
    assert build_parser().parse_args(["node", "--managed"]).managed       # for a lifecycle manager


def test_node_overrides_from_a_file_are_complete_and_set_only_its_keys():
    full = {p.name: p.value for p in config_overrides(str(config_path("offline.yaml")), ["device=cpu"])}
    # every key, but an empty string list, which rclpy cannot type (its default is empty too)
    assert set(full) == set(flatten(Config())) - {"input.image_topics"} and full["device"] == "cpu"
    cameras = {p.name: p for p in config_overrides(None, ["input.image_topics=[a/image,b/image]"])}
    assert cameras["input.image_topics"].type_ == Parameter.Type.STRING_ARRAY
    assert cameras["input.image_topics"].value == ["a/image", "b/image"]
    assert full["sam.variant"] == "lite_medsam" and full["refiner.box_peak_share"] == 0.8
    only = config_overrides(None, ["refiner.threshold=0.6"])
    assert [(p.name, p.value) for p in only] == [("refiner.threshold", 0.6)]


def test_config_takes_the_sections_of_the_namespace_the_ros_args_give(tmp_path):
    """`clipsam_inspector --config plant.yaml --ros-args -r __ns:=/line3` reads line3's section,
    never line4's, as ROS itself matches a params file."""
    from clipsam_ros.ros.node import ros_namespace

    plant = tmp_path / "plant.yaml"
    plant.write_text("/line3/clipsam_inspector:\n  ros__parameters:\n    refiner:\n      threshold: 0.6\n"
                     "/line4/clipsam_inspector:\n  ros__parameters:\n    refiner:\n      threshold: 0.7\n")
    assert ros_namespace(["n", "--config", "x", "--ros-args", "-r", "image:=/cam", "-r", "__ns:=/line3"]) == "/line3"
    assert ros_namespace(["n", "--ros-args", "--remap", "clipsam_inspector:__ns:=/line4"]) == "/line4"
    assert ros_namespace(["n", "--ros-args", "-r", "other_node:__ns:=/x"]) == ""
    assert ros_namespace(["n", "-r", "__ns:=/not_ros_args"]) == ""
    for line, threshold in (("/line3", 0.6), ("/line4", 0.7)):
        got = {p.name: p.value for p in config_overrides(str(plant), [], line)}
        assert got["refiner.threshold"] == threshold
