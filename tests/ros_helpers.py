"""Helpers for the ROS 2 tests: a loopback-only rclpy context spun in the background,
topic collectors, frame messages, an Inspector built once per module, and the node
started as its own process."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

FRAME_SIZE = (320, 240)     # (w, h): small frames keep the CPU tests quick
ROOT = Path(__file__).resolve().parents[1]


def loopback_env(domain_id: int) -> dict[str, str]:
    """The DDS settings every test uses: discovery on localhost only, a domain of its own."""
    return {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST", "ROS_DOMAIN_ID": str(domain_id)}


def process_env(domain_id: int) -> dict[str, str]:
    """The environment of a node subprocess: loopback DDS in `domain_id`, no model hub,
    unbuffered output, this checkout importable."""
    out = dict(os.environ, **loopback_env(domain_id), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return out


class NodeProcess:
    """A node command run as its own process, its output lines collected as they come.
    As a context manager it kills the process if a test leaves it running."""

    def __init__(self, cmd: list[str], domain_id: int):
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=process_env(domain_id), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.proc.stdout.readline, "")),
                                        daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_ready(self, timeout: float) -> None:
        """Until the node logs "ready:"; fails with its output if it exits first."""
        wait_until(lambda: any("ready:" in ln for ln in self.lines) or self.proc.poll() is not None,
                   timeout, "the node")
        assert self.proc.poll() is None, self.output

    def stop(self, sig: int, timeout: float) -> int:
        """Send `sig`, wait for the exit, read the rest of the output; the exit code."""
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(5)
        return code

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


_MEASURED_S: dict[int, float] = {}


def inference_deadline(inspector, frames: int = 1, factor: float = 20.0, floor_s: float = 20.0) -> float:
    """How long a test may wait for `frames` inferences: `factor` times this machine's own
    measured time for one frame (measured once per inspector, on a synthetic part at FRAME_SIZE),
    and never less than `floor_s`. Waits follow the machine; nothing asserts its speed."""
    key = id(inspector)
    if key not in _MEASURED_S:
        from clipsam_ros.data.synth import make_sample

        rgb, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        start = time.monotonic()
        inspector.inspect(rgb)
        _MEASURED_S[key] = time.monotonic() - start
    return max(floor_s, factor * frames * _MEASURED_S[key])


def verdicts_settled(node, verdicts: list) -> bool:
    """True when the node has nothing in flight and every verdict it counted has arrived in
    `verdicts` (so a duplicate, had there been one, would be there too)."""
    snap = node.stats.snapshot()
    return snap.in_flight == 0 and len(verdicts) >= snap.answered


def wait_until(predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def call_service(ros, srv_type, name: str, request, timeout: float = 10.0, attempts: int = 3):
    """One service call from the test node. A reply can be lost while the server's reply writer
    has not yet matched this new client (DDS discovery runs both ways, and wait_for_service sees
    only one), so a request that may be repeated (a query, setting a value) is asked again when
    unanswered; pass attempts=1 for one that may not (a lifecycle transition)."""
    client = ros.tester.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=timeout), name
        for attempt in range(attempts):
            future = client.call_async(request)
            try:
                wait_until(future.done, timeout, name)
                return future.result()
            except AssertionError:
                if attempt == attempts - 1:
                    raise
    finally:
        ros.tester.destroy_client(client)


def ros_fixture(domain_id: int):
    """The module-scoped `ros` fixture of a test module: one RosHarness in `domain_id`."""
    import pytest

    @pytest.fixture(scope="module")
    def ros():
        harness = RosHarness(domain_id)
        yield harness
        harness.close()
    return ros


class RosHarness:
    """One rclpy context on loopback in its own DDS domain, its executor spinning in a thread.

    The environment is set before rclpy.init() because that is when DDS reads it.
    """

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self._saved_env = {k: os.environ.get(k) for k in loopback_env(domain_id)}
        os.environ.update(loopback_env(domain_id))
        self.context = rclpy.Context()
        # pytest keeps Ctrl-C: rclpy installs no signal handlers here
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self.tester = rclpy.create_node("ros_test_client", context=self.context)
        self.executor.add_node(self.tester)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def add(self, node):
        self.executor.add_node(node)
        return node

    def remove(self, node) -> None:
        self.executor.remove_node(node)
        node.destroy_node()

    def collect(self, msg_type, topic: str, depth: int = 100) -> list:
        """Messages arriving on `topic`, appended as they come (reliable QoS)."""
        received: list = []
        self.tester.create_subscription(msg_type, topic, received.append, depth)
        return received

    def close(self) -> None:
        import rclpy

        self.executor.shutdown(timeout_sec=5)
        self.tester.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=5)
        for key, value in self._saved_env.items():   # other test modules pick their own domain
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def header(sec: int, nanosec: int = 0, frame_id: str = "camera"):
    from std_msgs.msg import Header

    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def image(rgb: np.ndarray, sec: int, nanosec: int = 0, frame_id: str = "camera", encoding: str = "rgb8"):
    from clipsam_ros.outputs.builder import image_msg
    from clipsam_ros.ros.messages import rclpy_message_types

    return image_msg(rclpy_message_types(), header(sec, nanosec, frame_id), rgb, encoding)


def raw_image(sec: int, *, encoding="rgb8", height=4, width=4, step=12, data=b"\0" * 48):
    """An Image with fields exactly as given, for malformed-message tests."""
    import array

    from sensor_msgs.msg import Image

    return Image(header=header(sec), height=height, width=width, encoding=encoding, is_bigendian=0,
                 step=step, data=array.array("B", data))


def pixels(msg) -> np.ndarray:
    """A mono8 / 32FC1 / bgr8 Image message as a numpy array."""
    dtype = {"mono8": np.uint8, "32FC1": np.float32, "bgr8": np.uint8}[msg.encoding]
    arr = np.frombuffer(bytes(msg.data), dtype)
    return arr.reshape(msg.height, msg.width, -1).squeeze(-1) if msg.encoding != "bgr8" else \
        arr.reshape(msg.height, msg.width, 3)


def stamp(msg) -> tuple[int, int, str]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id


def build_offline_inspector(cfg, lite_sam, root: Path):
    """The real Inspector on the offline profile: a reference bank of 3 good synth parts."""
    import torch

    from clipsam_ros.data.synth import generate_dataset
    from clipsam_ros.inspector import Inspector
    from clipsam_ros.localize import build_localizer

    generate_dataset(root, n=3, seed=0, size=FRAME_SIZE, classes=["metal"])
    cfg = copy.deepcopy(cfg)
    cfg.device = "cpu"
    cfg.runtime.warmup_frames = 0    # node tests start many nodes; test_ros_cameras checks warm-up
    cfg.localizer.reference_dir = str(root / "metal" / "train" / "good")
    localizer = build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False)
    return Inspector(cfg, lite_sam, localizer, torch.device("cpu"))


def sharing(inspector):
    """An inspector factory for InspectorNode: the node's own config, the prebuilt models."""
    from clipsam_ros.inspector import Inspector

    return lambda cfg: Inspector(cfg, inspector.sam, inspector.localizer, inspector.device)


def passed(rgb: np.ndarray):
    """A clean pass for `rgb`, as the stand-in inspectors answer."""
    from clipsam_ros.inspector import InspectionResult

    h, w = rgb.shape[:2]
    return InspectionResult(verdict="pass", score=0.1, mask=np.zeros((h, w), np.uint8),
                            anomaly_map=np.zeros((h, w), np.float32),
                            pixel_scores=np.zeros((h, w), np.float32), defects=[], image_score=0.1,
                            timings_ms={}, encoder_calls={"sam": 1, "clip": 0})


@dataclass
class SlowFakeInspector:
    """Stands in for Inspector where only the queueing matters (no model can be fast or slow
    enough on demand): each call (one frame or one batch, like the encoders) waits until
    `gate` is open, when one is given, then sleeps `seconds`, then passes every frame.
    A test holds the gate closed to keep a frame "in inference" for exactly as long as it
    needs, so what it counts does not depend on the machine's speed."""
    cfg: object                                    # the node's Config
    seconds: float
    device: str = "cpu"
    clip_encoder: None = None
    gate: threading.Event | None = None
    started: int = 0                               # calls that have begun
    seen: list = field(default_factory=list)       # frame shapes inspected
    batches: list = field(default_factory=list)    # frames per call
    cameras: list = field(default_factory=list)    # the camera indices of each call's frames
    warm_ups: list = field(default_factory=list)   # (frames, batch) per warm_up call
    closed: int = 0                                # close() calls (the node's cleanup)

    def inspect(self, rgb: np.ndarray, camera: int = 0):
        return self.inspect_batch([rgb], [camera])[0]

    def inspect_batch(self, images: list[np.ndarray], cameras: list[int] | None = None) -> list:
        self.started += 1
        if self.gate is not None:
            self.gate.wait()
        self.seen.extend(rgb.shape for rgb in images)
        self.batches.append(len(images))
        self.cameras.append(list(range(len(images))) if cameras is None else list(cameras))
        time.sleep(self.seconds)
        return [passed(rgb) for rgb in images]

    def close(self) -> None:
        self.closed += 1

    def warm_up(self, frames: int | None = None, batch: int = 1) -> float:
        self.warm_ups.append((frames, batch))
        return 0.0
