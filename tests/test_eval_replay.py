"""`clipsam-ros replay` / `synth --bag` round trips on real rosbag2 files and real LiteMedSAM.

Bags in: mcap and sqlite3 written by `rosbags`, a single .mcap written by
`mcap-ros2-support` (another writer, CompressedImage frames), and a truncated
recording. Bags out are read back with `rosbags` and decoded with
`mcap_ros2`'s decoder from their embedded definitions, as Foxglove does.
"""
from __future__ import annotations

import copy
import csv
import json

import cv2
import numpy as np
import pytest
import torch
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer

from clipsam_ros.bags.replay import good_dir_of, run_replay
from clipsam_ros.bags.rosbag2 import Bag, BagError
from clipsam_ros.cli.main import main
from clipsam_ros.config import config_path
from clipsam_ros.data.synth import make_sample, sample_seed
from clipsam_ros.data.synth_bag import GT_TOPIC, IMAGE_TOPIC, write_synth_bag
from clipsam_ros.eval.metrics import METRIC_KEYS
from clipsam_ros.inspector import Inspector
from clipsam_ros.localize import build_localizer
from clipsam_ros.outputs.builder import image_msg, make_header
from clipsam_ros.outputs.message_types import from_typestore
from clipsam_ros.outputs.topics import OUTPUT_TOPICS, recorded_topic
from clipsam_ros.outputs.vision_msgs_defs import bag_typestore

pytestmark = pytest.mark.slow   # whole recordings replayed through the real Inspector

SIZE = (320, 240)
OUT = {t.name: recorded_topic(t.name) for t in OUTPUT_TOPICS}     # output name -> topic in the bag
OFFLINE = str(config_path("offline.yaml"))


@pytest.fixture(scope="module")
def replay_cfg(offline_cfg, tmp_path_factory):
    """The offline profile with a reference bank file of two good metal parts (built on first use)."""
    good = tmp_path_factory.mktemp("good")
    for j in range(2):
        rgb, _ = make_sample("metal", None, sample_seed(0, "metal", "train/good", j), SIZE)
        cv2.imwrite(str(good / f"{j}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.reference_dir = str(good)
    cfg.localizer.bank = str(tmp_path_factory.mktemp("bank") / "metal.safetensors")
    return cfg


@pytest.fixture(scope="module")
def inspector(replay_cfg, lite_sam):
    localizer = build_localizer(replay_cfg, lite_sam, torch.device("cpu"), progress=False)  # saves the bank
    return Inspector(replay_cfg, lite_sam, localizer, torch.device("cpu"))


@pytest.fixture(scope="module")
def bank_file(inspector, replay_cfg):
    return replay_cfg.localizer.bank


def test_eval_variants_match_the_inspector_on_one_embedding(inspector, lite_sam):
    """eval's path is the pipeline's: same map and pixel scores, one SAM encode for every variant."""
    from clipsam_ros.eval.runner import Evaluator

    evaluator = Evaluator(inspector.cfg, lite_sam, torch.device("cpu"), ablations=["cps-stages"], progress=False)
    assert len(evaluator.unique) == 4            # pipeline == points+box+logit2: computed once
    image, _ = make_sample("metal", "stain", 5, SIZE)
    before = lite_sam.encoder_calls
    analysis, results = evaluator.analyse(inspector, image)
    assert lite_sam.encoder_calls - before == 1
    result = inspector.inspect(image)
    np.testing.assert_array_equal(analysis.estimate.anomaly_map, result.anomaly_map)
    np.testing.assert_array_equal(results[evaluator.pipeline.key].pixel_scores, result.pixel_scores)
    assert results[evaluator.pipeline.key].score == result.score


def _read_all(bag_path):
    """{topic: [(log_ns, msg)]} and {topic: type} read back with rosbags."""
    out = {}
    with AnyReader([bag_path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append((log_ns, reader.deserialize(raw, conn.msgtype)))
    return out, types


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


# ------------------------------------------------------------------ mcap, via the CLI

def test_synth_bag_replays_to_the_nodes_topics(tmp_path, bank_file, capsys):
    bag, out, report = tmp_path / "line", tmp_path / "line_out", tmp_path / "report"
    assert main(["synth", "--bag", str(bag), "--n", "3", "--size", *map(str, SIZE)]) == 0
    assert len(list(good_dir_of(bag).glob("*.png"))) == 4
    rc = main(["replay", str(bag), "--image-topic", IMAGE_TOPIC, "--gt-topic", GT_TOPIC, "--out", str(out),
               "--report", str(report), "--config", OFFLINE, "--set", f"localizer.bank={bank_file}"])
    assert rc == 0, capsys.readouterr().err

    messages, types = _read_all(out)
    assert (out / "metadata.yaml").exists() and list(out.glob("*.mcap"))
    for output in OUTPUT_TOPICS:
        assert types[OUT[output.name]] == output.msgtype
    assert types[IMAGE_TOPIC] == "sensor_msgs/msg/Image" and types[GT_TOPIC] == "sensor_msgs/msg/Image"
    inputs = messages[IMAGE_TOPIC]
    assert len(inputs) == 3
    stamps = [_stamp(m) for _, m in inputs]
    for topic in OUT.values():
        assert [t for t, _ in messages[topic]] == [t for t, _ in inputs], topic   # at the inputs' times
        if topic == OUT["reject"]:
            continue                                                            # std_msgs/Bool: no header
        if topic == OUT["verdict_json"]:                                        # the stamp is in the JSON
            heads = [json.loads(m.data)["header"] for _, m in messages[topic]]
            assert [h["sec"] * 1_000_000_000 + h["nanosec"] for h in heads] == stamps
            continue
        assert [_stamp(m) for _, m in messages[topic]] == stamps, topic      # stamped like the inputs
    with Bag(bag) as original:   # inputs are copied byte for byte
        first = next(original.messages([IMAGE_TOPIC]))
        assert bytes(first.data) == bytes(_raw_first(out, IMAGE_TOPIC))
    mask = messages[OUT["mask"]][0][1]
    assert (mask.encoding, mask.height, mask.width) == ("mono8", SIZE[1], SIZE[0])
    assert set(np.unique(mask.data)) <= {0, 255}
    amap = messages[OUT["anomaly_map"]][0][1]
    values = np.frombuffer(amap.data.tobytes(), "<f4")
    assert amap.encoding == "32FC1" and values.size == SIZE[0] * SIZE[1] and 0 <= values.min() <= values.max() <= 1
    assert messages[OUT["overlay"]][0][1].encoding == "bgr8"
    verdicts = [m.results[0].class_id for _, m in messages[OUT["verdict"]]]
    rejects = [m.data for _, m in messages[OUT["reject"]]]
    assert rejects == [v != "pass" for v in verdicts]
    assert [json.loads(m.data)["verdict"] for _, m in messages[OUT["verdict_json"]]] == verdicts
    for (_, dets), verdict in zip(messages[OUT["detections"]], verdicts):
        assert (len(dets.detections) > 0) == (verdict == "fail")
        for d in dets.detections:
            assert d.results[0].hypothesis.class_id == "anomaly"
            assert 0 <= d.bbox.center.position.x <= SIZE[0] and 0 < d.bbox.size_x <= SIZE[0]

    # what Foxglove / ros2 bag play get: every schema embedded in the MCAP, vision_msgs included
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    with open(next(out.glob("*.mcap")), "rb") as handle:
        reader = make_reader(handle, decoder_factories=[DecoderFactory()])
        decoded = {c.topic: (s.name, m) for s, c, _, m in reader.iter_decoded_messages()}
    assert decoded[OUT["detections"]][0] == "vision_msgs/msg/Detection2DArray"
    assert decoded[OUT["verdict"]][1].results[0].class_id == verdicts[-1]

    data = json.loads((report / "report.json").read_text())
    assert data["frames"] == 3 and data["complete"] and not data["error"]
    assert sum(data["verdicts"].values()) == 3 and set(data["verdicts"]) <= {"pass", "fail"}
    assert set(data["latency_ms"]) == {"p50", "p95", "max"} and data["latency_ms"]["p50"] > 0
    assert set(data["metrics"]) == set(METRIC_KEYS) and data["metrics_frames"] == 3
    assert data["metrics"]["pixel_auroc"] > 0.5
    rows = list(csv.DictReader(open(report / "frames.csv")))
    assert [r["verdict"] for r in rows] == verdicts and all(r["gt"] == "matched" for r in rows)
    assert "3 frames" in capsys.readouterr().out


def _raw_first(bag_path, topic):
    with AnyReader([bag_path]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return next(iter(reader.messages(connections=conns)))[2]


# ------------------------------------------------------------------ sqlite3, written by rosbags directly

def test_sqlite3_bag_with_a_malformed_frame_goes_on(tmp_path, inspector):
    ts = bag_typestore()
    types = from_typestore(ts)
    bag = tmp_path / "cam_sqlite"
    good, _ = make_sample("metal", None, 11, SIZE)
    stain, truth = make_sample("metal", "stain", 12, SIZE)
    t0 = 1_000 * 1_000_000_000
    with Writer(bag, version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        img = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=ts)
        gt = writer.add_connection("/cam/gt", "sensor_msgs/msg/Image", typestore=ts)

        def put(conn, stamp, msg):
            writer.write(conn, stamp, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))

        put(img, t0, image_msg(types, make_header(types, t0, "cam"), good, "rgb8"))
        put(gt, t0 + 1, image_msg(types, make_header(types, t0, "cam"), np.zeros(truth.shape, np.uint8), "mono8"))
        broken = image_msg(types, make_header(types, t0 + 100, "cam"), good, "rgb8")
        broken.data = broken.data[:-7]                      # data shorter than step * height
        put(img, t0 + 100, broken)
        # the ground truth of the last frame is recorded before its image: paired by stamp anyway
        put(gt, t0 + 199, image_msg(types, make_header(types, t0 + 200, "cam"), truth, "mono8"))
        put(img, t0 + 200, image_msg(types, make_header(types, t0 + 200, "cam"), stain[:, :, ::-1].copy(), "bgr8"))
    assert list(bag.glob("*.db3"))

    out, report_dir = tmp_path / "out", tmp_path / "rep"
    report = run_replay(bag, "/cam/image", out, report_dir, inspector.cfg, gt_topic="/cam/gt",
                        inspector=inspector, progress=False)
    assert report.frames == 3 and report.complete
    rows = list(csv.DictReader(open(report_dir / "frames.csv")))
    assert rows[1]["verdict"] == "error" and "data" in rows[1]["error"]
    assert rows[0]["verdict"] in ("pass", "fail") and rows[2]["verdict"] == "fail"
    assert [r["gt"] for r in rows] == ["matched", "missing", "matched"]
    assert report.metrics_frames == 2 and report.verdicts["error"] == 1

    messages, _ = _read_all(out)
    verdicts = [m.results[0].class_id for _, m in messages[OUT["verdict"]]]
    assert verdicts[1] == "error" and messages[OUT["reject"]][1][1].data is True
    assert _stamp(messages[OUT["verdict"]][1][1]) == t0 + 100      # its header was still readable
    error = json.loads(messages[OUT["verdict_json"]][1][1].data)
    assert error["verdict"] == "error" and error["reject"] is True and "data" in error["error"]
    # as on the node: an error frame has no mask, map or detections
    assert len(messages[OUT["mask"]]) == 2 and len(messages[OUT["detections"]]) == 2
    assert len(messages["/cam/image"]) == 3                 # the broken input is kept, as recorded


# ------------------------------------------------------------------ another writer: mcap-ros2-support

COMPRESSED_IMAGE_DEF = """std_msgs/Header header
string format
uint8[] data
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


def test_single_mcap_file_from_another_writer(tmp_path, inspector):
    from mcap_ros2.writer import Writer as McapRos2Writer

    file = tmp_path / "camera.mcap"
    with open(file, "wb") as handle:
        writer = McapRos2Writer(handle)
        schema = writer.register_msgdef("sensor_msgs/msg/CompressedImage", COMPRESSED_IMAGE_DEF)
        for i, defect in enumerate(["hole"]):
            rgb, _ = make_sample("metal", defect, 20 + i, SIZE)
            png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
            t = (50 + i) * 1_000_000_000
            writer.write_message("/line/compressed", schema,
                                 {"header": {"stamp": {"sec": 50 + i, "nanosec": 0}, "frame_id": "cam"},
                                  "format": "png", "data": png}, log_time=t, publish_time=t)
        writer.finish()
    out = tmp_path / "out"
    report = run_replay(file, "/line/compressed", out, tmp_path / "rep", inspector.cfg, inspector=inspector,
                        progress=False)
    assert report.frames == 1 and report.complete and report.verdicts.get("error", 0) == 0
    assert report.to_json().get("metrics") is None                  # no ground-truth topic
    messages, types = _read_all(out)
    assert types["/line/compressed"] == "sensor_msgs/msg/CompressedImage"
    assert [_stamp(m) for _, m in messages[OUT["mask"]]] == [50_000_000_000]
    assert messages[OUT["verdict"]][0][1].results[0].class_id == "fail"      # the hole is found


# ------------------------------------------------------------------ damaged and wrong input

def test_a_truncated_recording_reports_the_frames_before_the_cut(tmp_path, bank_file, capsys):
    bag = tmp_path / "cut"
    write_synth_bag(bag, n=3, size=(640, 480), progress=False)   # one MCAP chunk per frame at this size
    (file,) = bag.glob("*.mcap")
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])                     # the recorder died half way
    out, report = tmp_path / "cut_out", tmp_path / "cut_report"
    rc = main(["replay", str(bag), "--image-topic", IMAGE_TOPIC, "--out", str(out), "--report", str(report),
               "--config", OFFLINE, "--set", f"localizer.bank={bank_file}"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("replay:")]
    assert rc == 1 and len(err) == 1 and "truncated" in err[0]         # progress bars aside: one line
    data = json.loads((report / "report.json").read_text())
    assert 1 <= data["frames"] < 3 and not data["complete"] and "truncated" in data["error"]
    assert sum(data["verdicts"].values()) == data["frames"]
    messages, _ = _read_all(out)                                 # the output bag is whole
    assert len(messages[OUT["verdict"]]) == data["frames"]


def test_bag_problems_are_one_line_before_any_model_loads(tmp_path, capsys):
    bag = tmp_path / "b"
    write_synth_bag(bag, n=1, size=(96, 64), progress=False)
    cases = [
        ([str(tmp_path / "nope"), "--image-topic", IMAGE_TOPIC], "does not exist"),
        ([str(bag), "--image-topic", "/camera/rgb"], f"topic /camera/rgb is not in bag {bag} (topics: "
                                                     f"{GT_TOPIC} [sensor_msgs/msg/Image], {IMAGE_TOPIC}"),
        ([str(bag), "--image-topic", IMAGE_TOPIC], "needs normal images: pass --set localizer.reference_dir"),
    ]
    for args, expected in cases:
        rc = main(["replay", *args, "--out", str(tmp_path / "o"), "--config", OFFLINE])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 1 and len(err) == 1 and expected in err[0], err
    assert "synth --bag wrote" in err[0]
    (tmp_path / "exists").mkdir()
    rc = main(["replay", str(bag), "--image-topic", IMAGE_TOPIC, "--out", str(tmp_path / "exists"),
               "--config", OFFLINE])
    assert rc == 1 and "exists already" in capsys.readouterr().err


def test_a_folder_without_metadata_is_read_from_its_storage_file(tmp_path):
    bag = tmp_path / "b"
    write_synth_bag(bag, n=2, size=(96, 64), progress=False)
    (bag / "metadata.yaml").unlink()
    with Bag(bag) as reader:
        assert reader.counts[IMAGE_TOPIC] == 2 and "metadata.yaml is missing" in reader.notes[0]
        assert len(list(reader.messages([IMAGE_TOPIC, GT_TOPIC]))) == 4
    (tmp_path / "junk.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="junk.mcap cannot be read"):
        Bag(tmp_path / "junk.mcap").open()


# ------------------------------------------------------------------ the stream localizer, no references

def test_stream_replay_answers_warm_up_frames_with_errors_then_judges(tmp_path, capsys):
    bag, out, report = tmp_path / "line", tmp_path / "line_out", tmp_path / "report"
    assert main(["synth", "--bag", str(bag), "--n", "6", "--size", *map(str, SIZE)]) == 0
    rc = main(["replay", str(bag), "--image-topic", IMAGE_TOPIC, "--gt-topic", GT_TOPIC, "--out", str(out),
               "--report", str(report), "--config", OFFLINE, "--set", "localizer.method=stream",
               "--set", "localizer.warmup_frames=2", "--set", "localizer.window=4"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((report / "report.json").read_text())
    assert data["frames"] == 6 and data["warmup_frames"] == 2
    rows = list(csv.DictReader(open(report / "frames.csv")))
    assert [r["verdict"] for r in rows[:2]] == ["error", "error"]
    assert all("stream warm-up" in r["error"] for r in rows[:2])
    assert all(r["verdict"] in ("pass", "fail") for r in rows[2:])          # judged once warm
    assert data["metrics_frames"] == 4 and [r["gt"] for r in rows[:2]] == ["skipped (error frame)"] * 2
