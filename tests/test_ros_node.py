"""The clipsam_inspector node in-process with the real rclpy and the real Inspector
(LiteMedSAM + reference bank, offline profile): outputs, stamps, fail-safe errors,
diagnostics, parameters. DDS stays on loopback in domain 57."""
from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

from clipsam_ros.config import ConfigError  # noqa: E402
from clipsam_ros.data.synth import make_sample  # noqa: E402
from clipsam_ros.imaging.overlay import VERDICT_COLOURS  # noqa: E402
from clipsam_ros.ros.node import InspectorNode, Throttle, configure_and_activate  # noqa: E402
from clipsam_ros.ros.params import overrides_from_config, param_specs  # noqa: E402

from ros_helpers import (  # noqa: E402
    FRAME_SIZE,
    RosHarness,
    build_offline_inspector,
    call_service,
    header,
    image,
    inference_deadline,
    pixels,
    raw_image,
    ros_fixture,
    sharing,
    stamp,
    verdicts_settled,
    wait_until,
)

pytestmark = pytest.mark.slow   # DDS: the node on loopback

DOMAIN_ID = 57


@dataclass
class Line:
    """A node under test, the publisher feeding it and what it published."""
    node: InspectorNode
    pub: object
    out: dict[str, list]

    def verdict(self, sec: int, timeout: float | None = None) -> dict:
        """The one verdict_json of the frame stamped `sec` (waits for it, and for every verdict
        the node has counted, so a duplicate would be seen)."""
        def mine():
            return [v for v in map(json.loads, (m.data for m in self.out["verdict_json"]))
                    if v["header"]["sec"] == sec]
        deadline = timeout or inference_deadline(self.node.inspector)
        wait_until(lambda: mine(), deadline, f"the verdict of frame {sec}")
        wait_until(lambda: verdicts_settled(self.node, self.out["verdict_json"]), deadline, "every verdict")
        found = mine()
        assert len(found) == 1, f"frame {sec} got {len(found)} verdicts"
        return found[0]

    def images(self, topic: str, sec: int) -> list:
        return [m for m in self.out[topic] if m.header.stamp.sec == sec]

    def rejects_match_verdicts(self) -> None:
        wait_until(lambda: len(self.out["reject"]) == len(self.out["verdict_json"]), 5, "reject per verdict")
        for v, r in zip(self.out["verdict_json"], self.out["reject"]):
            assert r.data == (json.loads(v.data)["verdict"] != "pass")


OUTPUTS = {"mask": Image, "anomaly_map": Image, "overlay": Image, "verdict_json": String, "reject": Bool}


def start_line(ros: RosHarness, inspector, namespace: str, **settings) -> Line:
    cfg = inspector.cfg
    overrides = overrides_from_config(cfg) + [Parameter(k, value=v) for k, v in settings.items()]
    node = ros.add(configure_and_activate(
        InspectorNode(sharing(inspector), namespace=namespace, parameter_overrides=overrides, context=ros.context)))
    out = {name: ros.collect(kind, f"/{namespace}/clipsam_inspector/{name}") for name, kind in OUTPUTS.items()}
    kind = CompressedImage if node.cfg.input.compressed else Image
    pub = ros.tester.create_publisher(kind, f"/{namespace}/image", 10)
    wait_until(lambda: pub.get_subscription_count() > 0 and all(
        p.get_subscription_count() > 0 for p in (node.camera.mask, node.camera.anomaly_map, node.camera.overlay,
                                                  node.camera.verdict_json, node.camera.reject)),
        10, "publishers and subscriptions to match")
    return Line(node, pub, out)


@pytest.fixture(scope="module")
def inspector(offline_cfg, lite_sam, tmp_path_factory):
    return build_offline_inspector(offline_cfg, lite_sam, tmp_path_factory.mktemp("ros_node_synth"))


ros = ros_fixture(DOMAIN_ID)


@pytest.fixture(scope="module")
def line(ros, inspector):
    line = start_line(ros, inspector, "line")
    yield line
    ros.remove(line.node)


@pytest.fixture(scope="module")
def two_frames(line):
    """A stained part (stamp 1001) and a good part (stamp 1002), inspected once for several tests."""
    stain, truth = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
    good, _ = make_sample("metal", None, seed=1, size=FRAME_SIZE)
    line.pub.publish(image(stain, 1001, 250, "cam_left"))
    # wait until the worker took it, so `latest` cannot replace it with the next frame
    wait_until(lambda: line.node.stats.snapshot().received == 1 and len(line.node.queue) == 0, 10, "frame taken")
    line.pub.publish(image(good, 1002, 0, "cam_left"))
    return {"stain": (line.verdict(1001), truth), "good": (line.verdict(1002), None)}


def test_a_defect_fails_with_mask_map_and_overlay_stamped_like_the_input(line, two_frames):
    verdict, truth = two_frames["stain"]
    assert verdict["verdict"] == "fail" and verdict["reject"] is True and verdict["defects"]
    assert verdict["header"] == {"sec": 1001, "nanosec": 250, "frame_id": "cam_left"}
    wait_until(lambda: all(line.images(t, 1001) for t in ("mask", "anomaly_map", "overlay")), 5, "images")
    (mask,), (amap,), (overlay,) = (line.images(t, 1001) for t in ("mask", "anomaly_map", "overlay"))
    for msg in (mask, amap, overlay):
        assert stamp(msg) == (1001, 250, "cam_left")
        assert (msg.width, msg.height) == FRAME_SIZE
    assert (mask.encoding, amap.encoding, overlay.encoding) == ("mono8", "32FC1", "bgr8")
    m = pixels(mask)
    assert set(np.unique(m)) <= {0, 255}
    assert ((m > 0) & (truth > 0)).sum() > 0.5 * (truth > 0).sum()      # the mask is on the stain
    a = pixels(amap)
    assert 0.0 <= a.min() and a.max() <= 1.0 and a[truth > 0].mean() > a[truth == 0].mean()
    o = pixels(overlay)
    assert tuple(o[3, 3]) == VERDICT_COLOURS["fail"]                       # the verdict banner
    x0, y0, x1, y1 = verdict["defects"][0]["bbox"]
    assert tuple(o[(y0 + y1) // 2, x0]) == (0, 255, 255)                    # a box edge, yellow


def test_a_good_part_passes_with_an_empty_mask(line, two_frames):
    verdict, _ = two_frames["good"]
    assert verdict["verdict"] == "pass" and verdict["reject"] is False and verdict["defects"] == []
    wait_until(lambda: line.images("mask", 1002), 5, "mask")
    assert not pixels(line.images("mask", 1002)[0]).any()
    line.rejects_match_verdicts()


def test_without_vision_msgs_the_rest_is_published(line):
    if line.node.vision is not None:
        pytest.skip("vision_msgs is installed here; its messages are tested against rosbags classes")
    topics = dict(line.node.get_publisher_names_and_types_by_node("clipsam_inspector", "/line"))
    assert "/line/clipsam_inspector/detections" not in topics and "/line/clipsam_inspector/verdict" not in topics
    for name in ("mask", "anomaly_map", "overlay", "verdict_json", "reject"):
        assert f"/line/clipsam_inspector/{name}" in topics
    assert topics["/diagnostics"] == ["diagnostic_msgs/msg/DiagnosticArray"]


MALFORMED = {   # stamp: (message fields, words the error must contain)
    2001: (dict(data=b"\0" * 40), "data: 40 bytes"),                 # shorter than step*height
    2002: (dict(data=b"\0" * 56), "data: 56 bytes"),                 # longer
    2003: (dict(step=8, data=b"\0" * 32), "step=8"),                 # step smaller than a row
    2004: (dict(encoding="rgb9"), "unknown"),
    2005: (dict(encoding=""), "non-empty encoding"),
    2006: (dict(height=0, data=b""), "height=0"),
}


def test_malformed_frames_get_error_and_reject_and_the_node_keeps_going(line, two_frames, capfd):
    line.node._throttle = Throttle(3600.0)   # one line per kind per hour: however slow the round trips
    before = line.node.stats.snapshot()
    for sec, (fields, words) in MALFORMED.items():
        line.pub.publish(raw_image(sec, **fields))
        verdict = line.verdict(sec)
        assert verdict["verdict"] == "error" and verdict["reject"] is True, sec
        assert words in verdict["error"], (sec, verdict["error"])
        assert not line.images("mask", sec)                               # no result to show
    after = line.node.stats.snapshot()
    assert after.errors["decode"] - before.errors["decode"] == len(MALFORMED)
    logged = [ln for ln in capfd.readouterr().err.splitlines() if ": decode: " in ln]
    assert len(logged) == 1, logged                                        # throttled to one line

    good, _ = make_sample("metal", None, seed=1, size=FRAME_SIZE)
    line.pub.publish(image(good, 2100))
    assert line.verdict(2100)["verdict"] == "pass"
    assert line.node._worker.is_alive()
    line.rejects_match_verdicts()


def test_diagnostics_report_rates_latency_queue_and_exact_accounting(ros, line, two_frames):
    arrays = ros.collect(DiagnosticArray, "/diagnostics")
    received = line.node.stats.snapshot().received

    def ours():
        return [s for a in arrays for s in a.status if s.name == "/line/clipsam_inspector: inspection"]
    wait_until(lambda: ours() and int(dict((kv.key, kv.value) for kv in ours()[-1].values)["frames_received"])
               >= received, 5, "a diagnostics report")
    status = ours()[-1]
    values = {kv.key: kv.value for kv in status.values}
    for key in ("input_rate_hz", "processed_rate_hz", "latency_p50_ms", "latency_p95_ms", "queue_depth",
                "frames_dropped", "verdicts_error", "errors_decode", "inference_ms_p50", "decode_ms_p50"):
        assert key in values, key
    assert (values["device"], values["sam_variant"], values["localizer"]) == ("cpu", "lite_medsam", "reference")
    assert values["clip_model"] == "unused" and values["queue_policy"] == "latest"
    assert status.hardware_id == "cpu"
    assert float(values["latency_p95_ms"]) >= float(values["latency_p50_ms"]) > 0
    counts = {k: int(values[k]) for k in ("frames_received", "frames_in_flight", "frames_dropped",
                                         "verdicts_pass", "verdicts_fail", "verdicts_error")}
    assert counts["frames_received"] == sum(v for k, v in counts.items() if k != "frames_received")
    assert counts["verdicts_fail"] >= 1 and counts["verdicts_pass"] >= 1


def test_every_config_key_is_a_parameter_with_a_descriptor(line):
    for spec in param_specs():
        d = line.node.describe_parameter(spec.name)
        # never read_only: model keys are set while unconfigured (the node refuses them when configured)
        assert d.type == spec.type and not d.read_only, spec.name
        assert d.description, spec.name
    assert line.node.describe_parameter("clip.layers").type == ParameterType.PARAMETER_INTEGER_ARRAY
    assert line.node.describe_parameter("refiner.threshold").floating_point_range[0].to_value == 1.0


def set_parameters(ros, node_fqn: str, values: dict) -> list:
    """What `ros2 param set` does: the node's set_parameters service."""
    request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call_service(ros, SetParameters, f"{node_fqn}/set_parameters", request).results


def test_live_parameter_change_takes_effect_and_bad_values_are_refused(ros, line, two_frames):
    fqn = "/line/clipsam_inspector"
    refused = {
        "refiner.threshold": (1.5, "out of range"),                 # rclpy checks the declared range
        "refiner.dilation_shape": ("hexagon", "choose one of"),     # config.py's rules, via the callback
        "refiner.dilation_size": (24, "must be odd"),
        "device": ("cuda", "while unconfigured"),                   # needs a model reload
        "decision.score_threshold": ("high", "type"),
    }
    for name, (value, words) in refused.items():
        before = line.node.get_parameter(name).value
        (result,) = set_parameters(ros, fqn, {name: value})
        assert not result.successful and words in result.reason, (name, result.reason)
        assert line.node.get_parameter(name).value == before

    # a reload key set to the value it has (`ros2 param load` of the node's own dump): accepted
    results = set_parameters(ros, fqn, {"device": line.node.get_parameter("device").value,
                                        "sam.variant": line.node.get_parameter("sam.variant").value})
    assert [r.successful for r in results] == [True, True], [r.reason for r in results]
    (result,) = set_parameters(ros, fqn, {"decision.min_defect_area_px": 10_000_000})
    assert result.successful, result.reason
    try:
        stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        line.pub.publish(image(stain, 3001))
        assert line.verdict(3001)["verdict"] == "pass"          # failed at 30 px, no defect that large
    finally:
        (result,) = set_parameters(ros, fqn, {"decision.min_defect_area_px": 30})
        assert result.successful


def test_compressed_input(ros, inspector):
    """input.compressed: CompressedImage (jpeg/png) on `image`; garbage is an error verdict."""
    line = start_line(ros, inspector, "zip", **{"input.compressed": True, "input.queue_policy": "all",
                                                "input.reliability": "reliable"})
    try:
        stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(stain, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        line.pub.publish(CompressedImage(header=header(4001, 9, "cam_zip"), format="jpeg", data=jpeg.tobytes()))
        line.pub.publish(CompressedImage(header=header(4002), format="jpeg", data=b"\xff\xd8 not a jpeg"))
        line.pub.publish(CompressedImage(header=header(4003), format="png", data=b""))
        assert line.verdict(4001)["verdict"] == "fail"
        wait_until(lambda: line.images("mask", 4001), 5, "mask")
        assert stamp(line.images("mask", 4001)[0]) == (4001, 9, "cam_zip")
        for sec in (4002, 4003):
            verdict = line.verdict(sec)
            assert verdict["verdict"] == "error" and verdict["reject"] is True
        line.rejects_match_verdicts()
    finally:
        ros.remove(line.node)


def test_a_badly_typed_or_invalid_parameter_stops_the_node_with_one_clear_line(ros):
    def never(cfg):
        raise AssertionError("no Inspector must be built from a bad config")

    cases = [(Parameter("refiner.box_margin_px", value=15), "refiner.box_margin_px: expected a double"),
             (Parameter("refiner.method", value="magic"), "refiner.method='magic' is not allowed")]
    for i, (param, words) in enumerate(cases):
        with pytest.raises(ConfigError) as err:
            InspectorNode(never, namespace=f"bad{i}", parameter_overrides=[param], context=ros.context)
        assert words in str(err.value) and "\n" not in str(err.value)
