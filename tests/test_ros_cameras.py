"""Several cameras on one node (`input.image_topics`): one subscription per camera,
frames that arrive together inspected as one batch, each camera's results on its
own `~/<camera>/` outputs. Real rclpy on loopback, DDS domain 61.

The first tests use a timing-only stand-in for the Inspector (the batching is what
they check); the last ones run the real Inspector (LiteMedSAM + reference bank) and
count its encoder passes.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from clipsam_ros.config import Config  # noqa: E402
from clipsam_ros.data.synth import make_sample  # noqa: E402
from clipsam_ros.ros.node import InspectorNode, configure_and_activate  # noqa: E402
from clipsam_ros.ros.params import overrides_from_config  # noqa: E402

from ros_helpers import (  # noqa: E402
    FRAME_SIZE,
    SlowFakeInspector,
    build_offline_inspector,
    image,
    inference_deadline,
    pixels,
    raw_image,
    ros_fixture,
    sharing,
    wait_until,
)

pytestmark = pytest.mark.slow   # DDS: two cameras on loopback

DOMAIN_ID = 61
TOPICS = ["cam_left/image_raw", "cam_right/image_raw"]
FRAME = np.full((48, 64, 3), 128, np.uint8)


ros = ros_fixture(DOMAIN_ID)


def start(ros, namespace: str, factory, cfg: Config, **settings):
    """A two-camera node; returns it, the two camera publishers and each camera's verdicts."""
    # a long window: a batch goes as soon as every camera's frame is in, so this only makes sure
    # frames published together are batched however slowly this machine delivers them
    settings = {"input.image_topics": TOPICS, "input.batch_window_ms": 10000.0, "input.queue_policy": "all",
                "input.reliability": "reliable", **settings}
    overrides = overrides_from_config(cfg) + [
        Parameter(k, Parameter.Type.STRING_ARRAY, v) if isinstance(v, list) else Parameter(k, value=v)
        for k, v in settings.items()]
    node = ros.add(configure_and_activate(
        InspectorNode(factory, namespace=namespace, parameter_overrides=overrides, context=ros.context)))
    verdicts = {cam: ros.collect(String, f"/{namespace}/clipsam_inspector/{cam}/verdict_json")
                for cam in ("cam_left", "cam_right")}
    pubs = [ros.tester.create_publisher(Image, f"/{namespace}/{topic}", 10) for topic in TOPICS]
    wait_until(lambda: all(p.get_subscription_count() > 0 for p in pubs) and all(
        c.verdict_json.get_subscription_count() > 0 for c in node.cameras), 10, "matching")
    return node, pubs, verdicts


def stamps(messages) -> list[tuple[int, str]]:
    return [(v["header"]["sec"], v["verdict"]) for v in (json.loads(m.data) for m in messages)]


def test_frames_arriving_together_are_one_batch_answered_per_camera(ros):
    fakes = []

    def factory(cfg):
        fakes.append(SlowFakeInspector(cfg, 0.2))
        return fakes[-1]
    node, (left, right), verdicts = start(ros, "two", factory, Config())
    try:
        (fake,) = fakes
        assert [c.subscription.topic_name for c in node.cameras] == [f"/two/{t}" for t in TOPICS]
        assert fake.warm_ups == [(1, 2)]             # warmed at start-up with the two-camera batch shape
        assert fake.batches == []                    # and before any frame
        left.publish(image(FRAME, 1))
        right.publish(image(FRAME, 2))
        wait_until(lambda: verdicts["cam_left"] and verdicts["cam_right"], 20, "both verdicts")
        assert fake.batches == [2]
        assert stamps(verdicts["cam_left"]) == [(1, "pass")] and stamps(verdicts["cam_right"]) == [(2, "pass")]

        # a malformed frame on one camera is that camera's error; the other is still inspected,
        # as itself: camera 1 stays camera 1 (a stream localizer's memory is per camera)
        left.publish(raw_image(4, data=b"\0" * 40))
        right.publish(image(FRAME, 3))
        wait_until(lambda: len(verdicts["cam_left"]) == 2 and len(verdicts["cam_right"]) == 2, 20, "verdicts")
        assert stamps(verdicts["cam_right"])[1] == (3, "pass")
        assert stamps(verdicts["cam_left"])[1] == (4, "error")
        assert fake.batches == [2, 1]
        assert fake.cameras == [[0, 1], [1]]
        snap = node.stats.snapshot()
        assert snap.received == snap.answered == 4 and snap.errors["decode"] == 1
    finally:
        ros.remove(node)


def test_a_lone_camera_does_not_wait_past_the_window(ros):
    fakes = []

    def factory(cfg):
        fakes.append(SlowFakeInspector(cfg, 0.0))
        return fakes[-1]
    node, (left, _), verdicts = start(ros, "alone", factory, Config(), **{"input.batch_window_ms": 300.0})
    try:
        t0 = time.monotonic()
        left.publish(image(FRAME, 7))
        wait_until(lambda: verdicts["cam_left"], 10, "the verdict")
        assert time.monotonic() - t0 >= 0.25          # it gave cam_right its window...
        assert fakes[0].batches == [1] and not verdicts["cam_right"]   # ...then went alone
    finally:
        ros.remove(node)


def test_diagnostics_name_every_camera_and_warn_of_a_silent_one(ros):
    diagnostics = ros.collect(DiagnosticArray, "/diagnostics")
    node, (left, _), verdicts = start(ros, "diag", lambda cfg: SlowFakeInspector(cfg, 0.0), Config(),
                                      **{"input.stall_timeout_s": 1.0, "input.batch_window_ms": 0.0})

    def statuses():
        return [s for msg in diagnostics for s in msg.status if s.name.startswith("/diag/")]
    try:
        def sending_until_warned() -> bool:     # cam_left keeps sending at ~10 Hz, cam_right is dead
            left.publish(image(FRAME, 1))
            time.sleep(0.1)
            return any("cam_right" in s.message for s in statuses()) and \
                node.stats.snapshot().camera_received[0] > 5
        wait_until(sending_until_warned, 30, "a WARN about cam_right")
        status = next(s for s in statuses() if "cam_right" in s.message)
        values = {kv.key: kv.value for kv in status.values}
        assert status.level == DiagnosticStatus.WARN and "no frames on /diag/cam_right/image_raw" in status.message
        assert "cam_left" not in status.message
        assert values["cameras"] == ", ".join(f"/diag/{t}" for t in TOPICS)
        assert int(values["camera_cam_left_frames_received"]) > 5 and values["camera_cam_right_frames_received"] == "0"
        assert float(values["camera_cam_right_seconds_since_last_frame"]) >= 1.0
    finally:
        ros.remove(node)


# ------------------------------------------------------------------ the real Inspector

@pytest.fixture(scope="module")
def inspector(offline_cfg, lite_sam, tmp_path_factory):
    return build_offline_inspector(offline_cfg, lite_sam, tmp_path_factory.mktemp("cameras_bank"))


def test_two_cameras_share_one_encoder_pass_and_keep_their_own_results(ros, inspector):
    deadline = inference_deadline(inspector, frames=2)      # measured before the counters are read
    node, (left, right), verdicts = start(ros, "real", sharing(inspector), inspector.cfg)
    masks = {cam: ros.collect(Image, f"/real/clipsam_inspector/{cam}/mask") for cam in ("cam_left", "cam_right")}
    rejects = ros.collect(Bool, "/real/clipsam_inspector/cam_left/reject")
    wait_until(lambda: all(c.mask.get_subscription_count() > 0 for c in node.cameras), 10, "mask subscribers")
    stain, truth = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
    good, _ = make_sample("metal", None, seed=1, size=FRAME_SIZE)
    calls, encoded = inspector.sam.encoder_calls, inspector.sam.images_encoded
    try:
        left.publish(image(stain, 11))
        right.publish(image(good, 12))
        wait_until(lambda: verdicts["cam_left"] and verdicts["cam_right"], deadline, "both verdicts")
        assert stamps(verdicts["cam_left"]) == [(11, "fail")]
        assert stamps(verdicts["cam_right"]) == [(12, "pass")]
        # one image-encoder pass for both cameras' frames (one per frame where the backend's graph
        # has batch 1: on the CPU batching buys nothing, docs/SPEED.md)
        batched = inspector.sam.encoder_net.max_batch is None
        assert inspector.sam.encoder_calls - calls == (1 if batched else 2)
        assert inspector.sam.images_encoded - encoded == 2
        wait_until(lambda: masks["cam_left"] and masks["cam_right"] and rejects, 5, "masks and reject")
        m = pixels(masks["cam_left"][0])
        assert ((m > 0) & (truth > 0)).sum() > 0.5 * (truth > 0).sum()     # the stain, on the left camera
        assert not pixels(masks["cam_right"][0]).any()                     # nothing on the good part
        assert rejects[0].data is True
    finally:
        ros.remove(node)


def test_warm_up_runs_before_the_first_frame_with_the_camera_batch(ros, inspector, monkeypatch):
    batches = []
    encode_batch = inspector.sam.encode_batch

    def recording(images):          # the real encoder, its batch sizes noted
        batches.append(len(images))
        return encode_batch(images)
    monkeypatch.setattr(inspector.sam, "encode_batch", recording)
    calls, frames = inspector.sam.encoder_calls, inspector.frames
    node, _, verdicts = start(ros, "warm", sharing(inspector), inspector.cfg, **{"runtime.warmup_frames": 1})
    try:
        assert batches == [2]                     # one frame per camera, one pass, before subscribing
        assert inspector.sam.encoder_calls == calls and node.inspector.frames == 0 and inspector.frames == frames
        assert node.stats.snapshot().received == 0 and not any(verdicts.values())   # counted nowhere
    finally:
        ros.remove(node)
