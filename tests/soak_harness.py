"""Soak run (issue 7.2): many frames through the real clipsam_inspector node on loopback, the
camera much faster than inference, for both queue policies.

Real parts only: rclpy (own context, DDS on loopback, own domain), the real Inspector on the
offline profile (LiteMedSAM weights, reference bank from 3 synthetic good parts), the real codec.
The camera is a publisher in this process sending `--rate` Hz of 160x120 rgb8 frames (good and
stained parts, each stamped with its sequence number in header.stamp.sec).

Checks, per policy (exit 1 when one fails):
  memory   resident memory (VmRSS) at the end grows < 5 % over the value after warm-up;
  latest   p95 latency of inspected frames (publish -> verdict received) < 2 x p50 inference time;
  all      every frame sent gets exactly one verdict (inspected, or "error" for overflow), none lost.

The harness lives with the tests (tests/test_reliability_soak.py runs a 300-frame share of it in
CI); `python benchmarks/soak.py --frames 5000 --rate 50 --policy latest all --json soak.json` is
the full run.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from clipsam_ros.timing import percentile

FRAME_SIZE = (160, 120)       # (w, h)
DEFAULT_DOMAIN = 88


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build_inspector(workdir: Path):
    """The real offline Inspector on the CPU: LiteMedSAM + a reference bank of 3 good synth parts."""
    from clipsam_ros.config import config_path, load
    from clipsam_ros.data.synth import generate_dataset
    from clipsam_ros.inspector import Inspector

    generate_dataset(workdir, n=3, seed=0, size=FRAME_SIZE, classes=["metal"])
    cfg = load(config_path("offline.yaml"), ["device=cpu",
                                             f"localizer.reference_dir={workdir / 'metal' / 'train' / 'good'}"])
    return Inspector.from_config(cfg, progress=False)


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_soak(inspector, policy: str, frames: int, rate_hz: float = 50.0, domain_id: int = DEFAULT_DOMAIN,
             warmup_frames: int | None = None, queue_size: int = 8, reliability: str | None = None) -> dict:
    """Send `frames` frames at `rate_hz` to a fresh node with `policy`; the figures as a dict.

    `reliability` (default: reliable for `all`, best_effort for `latest`) is the camera's and the
    node's subscription QoS. Under best effort the middleware may lose frames before the node
    sees them (`not_received`): that is reported, never checked, because it measures the
    machine's transport, not the node."""
    os.environ.update({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id)})
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header, String

    from clipsam_ros.data.synth import make_sample
    from clipsam_ros.inspector import Inspector
    from clipsam_ros.outputs.builder import image_msg
    from clipsam_ros.ros.messages import rclpy_message_types
    from clipsam_ros.ros.node import InspectorNode, configure_and_activate
    from clipsam_ros.ros.params import overrides_from_config

    reliability = reliability or ("reliable" if policy == "all" else "best_effort")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    overrides = overrides_from_config(inspector.cfg) + [
        Parameter("input.queue_policy", value=policy), Parameter("input.reliability", value=reliability),
        Parameter("input.queue_size", value=queue_size)]
    node = configure_and_activate(InspectorNode(
        lambda cfg: Inspector(cfg, inspector.sam, inspector.localizer, inspector.device),
        namespace=f"soak_{policy}", parameter_overrides=overrides, context=context))
    camera = rclpy.create_node("soak_camera", context=context)
    executor.add_node(node)
    executor.add_node(camera)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    sent_at: dict[int, float] = {}
    answers: dict[int, list[tuple[float, str]]] = {}
    lock = threading.Lock()

    def on_verdict(msg) -> None:
        now = time.monotonic()
        v = json.loads(msg.data)
        with lock:
            answers.setdefault(v["header"]["sec"], []).append((now, v["verdict"]))

    keep_all = QoSProfile(depth=frames + 10, history=HistoryPolicy.KEEP_LAST,
                          reliability=ReliabilityPolicy.RELIABLE)
    camera.create_subscription(String, f"/soak_{policy}/clipsam_inspector/verdict_json", on_verdict, keep_all)
    # a triggered camera keeps every frame until it is acknowledged (KEEP_ALL + reliable)
    camera_qos = (QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
                  if policy == "all" else
                  QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable"
                             else ReliabilityPolicy.BEST_EFFORT))
    pub = camera.create_publisher(Image, f"/soak_{policy}/image", camera_qos)
    if not _wait(lambda: pub.get_subscription_count() > 0 and node.camera.verdict_json.get_subscription_count() > 0,
                 30):
        raise RuntimeError("discovery on loopback did not complete")

    parts = [make_sample("metal", kind, seed=seed, size=FRAME_SIZE)[0]
             for kind, seed in ((None, 1), ("stain", 5), (None, 2), ("scratch", 7))]
    msgs = [image_msg(rclpy_message_types(), Header(frame_id="soak"), p, "rgb8") for p in parts]
    warmup = warmup_frames if warmup_frames is not None else max(frames // 10, 20)
    rss_start, rss_warm, rss_peak = rss_mb(), float("nan"), 0.0
    queue_peak = 0   # frames waiting, sampled at every send: bounded by the queue's capacity
    period = 1.0 / rate_hz
    t0 = time.monotonic()
    for i in range(1, frames + 1):
        msg = msgs[i % len(msgs)]
        msg.header.stamp.sec = i
        target = t0 + (i - 1) * period
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent_at[i] = time.monotonic()
        pub.publish(msg)
        queue_peak = max(queue_peak, len(node.queue))
        if i >= warmup and answers and rss_warm != rss_warm:
            # warm-up over: DDS buffers, the first inference and the allocator's pools are in place
            rss_warm = rss_mb()
        if i % 50 == 0:
            rss_peak = max(rss_peak, rss_mb())
    send_s = time.monotonic() - t0
    if rss_warm != rss_warm:   # no verdict yet while sending: warm-up ends with the first one
        _wait(lambda: bool(answers), 120)
        rss_warm = rss_mb()

    # settle: every received frame answered or dropped, and every answer delivered
    def settled() -> bool:
        s = node.stats.snapshot()
        with lock:
            n = sum(len(v) for v in answers.values())
        return s.in_flight == 0 and len(node.queue) == 0 and n >= s.answered
    # the deadline follows the measured inference time: everything still queued, plus slack
    per_frame_s = max(node.stats.recent("inference") or [1000.0]) / 1000.0
    if not _wait(settled, 30 + 3 * per_frame_s * (queue_size + 2)):
        raise RuntimeError(f"the node did not settle: {node.stats.snapshot()}")
    rss_end = rss_mb()
    rss_peak = max(rss_peak, rss_end)
    snap = node.stats.snapshot()
    inference = node.stats.recent("inference")

    executor.remove_node(node)
    node.destroy_node()
    executor.shutdown(timeout_sec=5)
    camera.destroy_node()
    rclpy.try_shutdown(context=context)
    spinner.join(5)

    with lock:
        got = {sec: list(v) for sec, v in answers.items()}
    inspected_latency = [(v[0][0] - sent_at[sec]) * 1000.0 for sec, v in got.items() if v[0][1] != "error"]
    verdict_counts = {k: sum(1 for v in got.values() for _, verdict in v if verdict == k)
                      for k in ("pass", "fail", "error")}
    inf_p50 = percentile(inference, 50)
    p95 = percentile(inspected_latency, 95)
    growth = (rss_end - rss_warm) / rss_warm * 100.0
    out = {
        "policy": policy, "reliability": reliability, "frames_sent": frames, "rate_hz": rate_hz,
        "send_s": round(send_s, 1), "warmup_frames": warmup,
        "not_received": frames - snap.received,   # best effort: lost before the node's callback
        "node": {"received": snap.received, "dropped": snap.dropped,
                 "verdicts": snap.verdicts, "errors": {k: v for k, v in snap.errors.items() if v},
                 "in_flight_at_end": snap.in_flight},
        "verdicts_received": verdict_counts,
        "frames_with_a_verdict": len(got),
        "frames_with_several_verdicts": sum(1 for v in got.values() if len(v) > 1),
        "frames_without_a_verdict": frames - len(got),
        "last_frame_answered": frames in got,
        "queue_peak": queue_peak, "queue_capacity": node.queue.capacity,
        "inference_ms_p50": round(inf_p50, 1),
        "inspected_latency_ms": {"n": len(inspected_latency),
                                 "p50": round(percentile(inspected_latency, 50), 1)
                                 if inspected_latency else None,
                                 "p95": round(p95, 1), "max": round(max(inspected_latency), 1)
                                 if inspected_latency else None},
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(rss_warm, 1), "end": round(rss_end, 1),
                   "peak": round(rss_peak, 1), "growth_after_warmup_pct": round(growth, 2)},
    }
    checks = {"memory_growth_under_5pct": growth < 5.0,
              "accounting_exact": snap.in_flight == 0 and snap.received == snap.dropped + snap.answered,
              "no_frame_answered_twice": out["frames_with_several_verdicts"] == 0,
              "queue_within_capacity": queue_peak <= node.queue.capacity}
    if policy == "latest":
        checks["latency_p95_under_2_inferences"] = p95 < 2.0 * inf_p50
    else:
        checks["every_frame_exactly_one_verdict"] = (len(got) == frames and snap.received == frames
                                                     and out["frames_with_several_verdicts"] == 0)
    out["checks"] = checks
    return out
