"""`clipsam-ros replay`: inspect every frame of a rosbag2 recording, no ROS install needed.

    clipsam-ros replay BAG --image-topic T [--gt-topic G] --out OUT [--report DIR]
                       [--config F] [--set key=value]...

* BAG: a rosbag2 folder (sqlite3 or mcap), a single `.mcap` / `.db3` file, or
  a recording cut short (see `rosbag2.py` and `salvage.py`). Read with `rosbags`.
* Every image message is inspected, in recorded order; none is dropped. A
  message that cannot be decoded gets verdict "error" (reject) and the replay
  goes on.
* OUT: a new rosbag2 (mcap) holding the input topics, copied byte for byte,
  and every output of the node (`outputs.topics.OUTPUT_TOPICS`) under
  `/clipsam_inspector/<name>`, built by the node's own builder
  (`outputs.builder`), each with its input frame's header and receive time, so
  `ros2 bag play OUT` or Foxglove shows what the node would have published.
* DIR (default `OUT_report`): `report.json` and `frames.csv`.
  `latency_ms` is per frame, from the raw message to the output messages
  (decode + inspect + building the messages), the work a node adds.
  With `--gt-topic` (mono8, 255 = defect, paired with frames by header stamp,
  whichever comes first, within `MATCH_WINDOW` frames) `metrics` holds the
  pixel / image metrics of `eval.metrics` over the paired frames (frames with
  verdict "error" are left out and counted). Image score = the frame's `score`.
* `localizer.method: stream` learns "normal" from the recording itself, in recorded
  order, as the node would: until its memory holds `localizer.warmup_frames`
  frames, each frame is answered verdict "error" (reject) with reason "stream
  warm-up" and counted in `report.json["warmup_frames"]`; such frames are out of
  the metrics like any error frame. `localizer.reference_dir` seeds the memory.
* A damaged bag: everything before the damage is inspected and reported, the
  reason is one line on stderr and in `report.json["error"]`, exit code 1.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import time
from collections import Counter, OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import Config, ConfigError, to_dict
from ..decision import Verdict
from ..errors import one_line
from ..eval.metrics import METRIC_KEYS, MetricAccumulator, iou
from ..imaging.codec import compressed_to_rgb, image_to_rgb
from ..localize import needs_references
from ..outputs.builder import frame_messages, make_header, stamp_ns
from ..outputs.message_types import from_typestore
from ..outputs.topics import OUTPUT_TOPICS, recorded_topic
from ..outputs.vision_msgs_defs import bag_typestore
from ..timing import percentile
from .rosbag2 import Bag, BagError, BagWriter, RawMessage

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
# frames / masks waiting for their partner; a partner further away than this is "missing"
MATCH_WINDOW = 64


@dataclass
class FrameRecord:
    """One row of frames.csv."""

    index: int
    stamp_ns: int
    log_ns: int
    verdict: str
    score: float
    image_score: float
    defects: int
    defect_px: int
    latency_ms: float
    inspect_ms: float
    gt: str = ""            # "" (no gt topic) | matched | missing | skipped (error frame)
    iou: float | None = None
    error: str = ""


@dataclass
class _Pending:
    record: FrameRecord
    pixel_scores: np.ndarray | None   # None: an error frame, kept out of the metrics
    mask: np.ndarray | None


class GroundTruthPairs:
    """Pairs frames with ground-truth masks by stamp, in either arrival order, into metrics."""

    def __init__(self, window: int = MATCH_WINDOW):
        self.acc = MetricAccumulator()
        self.window = window
        self.frames: OrderedDict[int, _Pending] = OrderedDict()
        self.masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self.paired = 0
        self.unpaired_masks = 0

    def add_frame(self, stamp: int, pending: _Pending) -> None:
        if stamp in self.masks:
            self._pair(pending, self.masks.pop(stamp))
            return
        self.frames[stamp] = pending
        while len(self.frames) > self.window:
            self._give_up(self.frames.popitem(last=False)[1])

    def add_mask(self, stamp: int, mask: np.ndarray) -> None:
        if stamp in self.frames:
            self._pair(self.frames.pop(stamp), mask)
            return
        self.masks[stamp] = mask
        while len(self.masks) > self.window:
            self.masks.popitem(last=False)
            self.unpaired_masks += 1

    def finish(self) -> None:
        for pending in self.frames.values():
            self._give_up(pending)
        self.frames.clear()
        self.unpaired_masks += len(self.masks)
        self.masks.clear()

    @staticmethod
    def _give_up(pending: _Pending) -> None:
        pending.record.gt = "missing"

    def _pair(self, pending: _Pending, truth: np.ndarray) -> None:
        record = pending.record
        if pending.pixel_scores is None:
            record.gt = "skipped (error frame)"
            return
        if truth.shape != pending.pixel_scores.shape:
            import cv2  # a mask recorded at another resolution: compare at the frame's

            h, w = pending.pixel_scores.shape
            truth = cv2.resize(truth.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
        self.acc.add(pending.pixel_scores, truth, record.score, bool(truth.any()))
        record.iou = iou(pending.mask, truth)
        record.gt = "matched"
        self.paired += 1


def decode_image(msg, msgtype: str) -> np.ndarray:
    """The RGB frame of an Image / CompressedImage message; raises on a malformed one."""
    return compressed_to_rgb(msg) if msgtype.endswith("CompressedImage") else image_to_rgb(msg)


def _check_topics(bag: Bag, image_topic: str, gt_topic: str | None) -> None:
    listing = ", ".join(f"{t} [{m}]" for t, m in sorted(bag.topics.items())) or "none"
    for topic, allowed in ((image_topic, IMAGE_TYPES), (gt_topic, IMAGE_TYPES[:1])):
        if topic is None:
            continue
        if topic not in bag.topics:
            raise BagError(f"topic {topic} is not in bag {bag.path} (topics: {listing})")
        if bag.topics[topic] not in allowed:
            raise BagError(f"topic {topic} has type {bag.topics[topic]}; expected {' or '.join(allowed)}")


def _reference_hint(cfg: Config, bag_path: Path) -> None:
    """Fail before loading models when the offline profile has no normal images to learn from."""
    loc = cfg.localizer
    if not needs_references(cfg) or loc.reference_dir or loc.bank:
        return
    good = good_dir_of(bag_path)
    hint = f" (synth --bag wrote {good})" if good.is_dir() else ""
    raise ConfigError(f"localizer.method=reference needs normal images: pass --set "
                      f"localizer.reference_dir=DIR{hint} or --set localizer.bank=FILE")


def good_dir_of(bag: str | Path) -> Path:
    """The folder of normal parts that goes with a recording, by convention `BAG_good/`
    (`clipsam-ros synth --bag` writes one): named in the hint when the reference localizer
    has nothing to learn from."""
    bag = Path(bag)
    return bag.with_name(bag.name + "_good")


def is_warm_up(error: str) -> bool:
    """Whether a frame's error is the stream localizer's warm-up (the result keeps only the
    one-line message, which starts with the exception's type)."""
    from ..localize.stream import StreamWarmUp

    return error.startswith(StreamWarmUp.__name__)


def _percentiles(values: list[float]) -> dict[str, float | None]:
    return {"p50": _json_number(percentile(values, 50), 2), "p95": _json_number(percentile(values, 95), 2),
            "max": _json_number(max(values) if values else None, 2)}


def _json_number(value: float | None, digits: int = 6) -> float | None:
    """A number for report.json: rounded, or null where there is none (NaN)."""
    return None if value is None or math.isnan(value) else round(float(value), digits)


@dataclass
class ReplayReport:
    bag: str
    out: str
    image_topic: str
    gt_topic: str | None
    frames: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    metrics: dict[str, float | None] | None = None
    metrics_frames: int = 0
    gt_missing: int = 0
    gt_unpaired_masks: int = 0
    gt_errors: int = 0
    warmup_frames: int = 0         # stream localizer: frames answered "error" while its memory filled
    complete: bool = True
    error: str = ""
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        if self.gt_topic is None:
            for key in ("metrics", "metrics_frames", "gt_missing", "gt_unpaired_masks", "gt_errors"):
                out.pop(key)
        return out


class _Replay:
    """The state of one replay run; `run` is the loop."""

    def __init__(self, bag: Bag, writer: BagWriter, inspector, image_topic: str, gt_topic: str | None):
        self.bag, self.writer, self.inspector = bag, writer, inspector
        self.image_topic, self.gt_topic = image_topic, gt_topic
        self.types = from_typestore(writer.typestore)
        self.records: list[FrameRecord] = []
        self.pairs = GroundTruthPairs() if gt_topic else None
        self.gt_errors = 0
        self.bad_frames = 0

    def run(self, progress: bool) -> str:
        """Inspect every frame; returns the damage message ("" when the bag was read to its end)."""
        topics = [self.image_topic] + ([self.gt_topic] if self.gt_topic else [])
        for topic in topics:
            self.writer.add_topic(topic, self.bag.topics[topic])
        for out in OUTPUT_TOPICS:
            self.writer.add_topic(recorded_topic(out.name), out.msgtype)
        bar = tqdm(total=self.bag.counts.get(self.image_topic) or None, desc="replay", unit="frame",
                   disable=not progress)
        try:
            for message in self.bag.messages(topics):
                self.writer.write_raw(message.topic, message.log_ns, message.data)
                if message.topic == self.image_topic:
                    self._frame(message)
                    bar.update(1)
                else:
                    self._truth(message)
        except BagError as exc:
            return str(exc)
        finally:
            bar.close()
            if self.pairs is not None:
                self.pairs.finish()
        return ""

    def _frame(self, message: RawMessage) -> None:
        from ..inspector import error_result

        start = time.perf_counter()
        stamp, frame_id, image = message.log_ns, "", None
        try:
            msg = self.bag.deserialize(message)
            stamp, frame_id = stamp_ns(msg.header), str(msg.header.frame_id)
            image = decode_image(msg, message.msgtype)
        except Exception as exc:  # a malformed message: this frame fails safe, the replay goes on
            text = one_line(exc, 300, with_type=True)
            self.bad_frames += 1
            # the CSV has every one; the log only the first few, as the node throttles its own
            (log.warning if self.bad_frames <= 3 else log.debug)("frame %d cannot be decoded: %s",
                                                                 len(self.records), text)
            result = error_result((1, 1), text)
        else:
            result = self.inspector.inspect(image)      # never raises: a failure is an "error" result
        # stamped like the input; a message whose header cannot be read gets its receive time
        header = make_header(self.types, stamp, frame_id)
        outputs = frame_messages(self.types, header, image, result)
        latency = (time.perf_counter() - start) * 1000.0
        for name, msg in outputs.items():
            self.writer.write(recorded_topic(name), message.log_ns, msg)
        record = FrameRecord(
            index=len(self.records), stamp_ns=stamp, log_ns=message.log_ns, verdict=result.verdict,
            score=round(float(result.score), 6), image_score=round(float(result.image_score), 6),
            defects=len(result.defects), defect_px=int(sum(d.area_px for d in result.defects)),
            latency_ms=round(latency, 2), inspect_ms=round(result.timings_ms.get("total", 0.0), 2),
            error=result.error)
        self.records.append(record)
        if self.pairs is not None:
            ok = result.verdict != Verdict.ERROR
            self.pairs.add_frame(stamp, _Pending(record, result.pixel_scores if ok else None,
                                                 result.mask > 0 if ok else None))

    def _truth(self, message: RawMessage) -> None:
        try:
            msg = self.bag.deserialize(message)
            mask = image_to_rgb(msg)[:, :, 0] > 127
        except Exception as exc:
            self.gt_errors += 1
            log.warning("ground-truth message at %d ns cannot be decoded: %s", message.log_ns, exc)
            return
        self.pairs.add_mask(stamp_ns(msg.header), mask)


def run_replay(bag_path: str | Path, image_topic: str, out: str | Path, report_dir: str | Path,
               cfg: Config, gt_topic: str | None = None, inspector=None, progress: bool = True) -> ReplayReport:
    """Replay a bag through the inspector; writes OUT and the report. Raises BagError / ConfigError
    (one line) for what makes a replay impossible; a bag damaged part way is reported, not raised."""
    started = time.perf_counter()
    report_dir = Path(report_dir)
    report = ReplayReport(bag=str(bag_path), out=str(out), image_topic=image_topic, gt_topic=gt_topic,
                          config=to_dict(cfg))
    replay: _Replay | None = None
    try:
        with Bag(bag_path) as bag:
            _check_topics(bag, image_topic, gt_topic)
            if Path(out).expanduser().exists():
                raise BagError(f"output bag {out} exists already; remove it or choose another path")
            if inspector is None:
                _reference_hint(cfg, Path(bag_path))
                from ..inspector import Inspector

                inspector = Inspector.from_config(cfg, progress=progress)
            report.notes = list(bag.notes)
            with BagWriter(out, bag_typestore()) as writer:
                replay = _Replay(bag, writer, inspector, image_topic, gt_topic)
                report.error = replay.run(progress)
    except BagError as exc:
        # nothing was inspected: still leave a report that says why
        report.error, report.complete = str(exc), False
        _write_report(report_dir, _finish(report, [], None, 0, started), [])
        raise
    report.complete = not report.error
    _finish(report, replay.records, replay.pairs, replay.gt_errors, started)
    _write_report(report_dir, report, replay.records)
    return report


def _finish(report: ReplayReport, records: list[FrameRecord], pairs: GroundTruthPairs | None,
            gt_errors: int, started: float) -> ReplayReport:
    report.frames = len(records)
    report.verdicts = {v: n for v, n in sorted(Counter(r.verdict for r in records).items())}
    report.latency_ms = _percentiles([r.latency_ms for r in records])
    report.warmup_frames = sum(is_warm_up(r.error) for r in records)
    if report.gt_topic is not None:
        report.gt_errors = gt_errors
        if pairs is not None:
            result = pairs.acc.result() if pairs.paired else {k: float("nan") for k in METRIC_KEYS}
            report.metrics = {k: _json_number(v) for k, v in result.items()}
            report.metrics_frames = pairs.paired
            report.gt_missing = sum(r.gt == "missing" for r in records)
            report.gt_unpaired_masks = pairs.unpaired_masks
    report.wall_s = round(time.perf_counter() - started, 2)
    return report


def _write_report(report_dir: Path, report: ReplayReport, records: list[FrameRecord]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    names = [f.name for f in FrameRecord.__dataclass_fields__.values()]
    with open(report_dir / "frames.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=names)
        writer.writeheader()
        for record in records:
            writer.writerow(asdict(record))
