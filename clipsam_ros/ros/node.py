"""The ROS 2 node `clipsam_inspector`: camera frames in, masks and fail-safe verdicts out.

Threads: the executor thread only counts each arriving frame and puts it in a
FrameQueue (policy `latest` or `all`, one line per camera); one inference thread
takes frames from it, decodes, inspects, publishes. So a slow frame never blocks
the subscription, the parameter services or the 1 Hz /diagnostics timer.

Several cameras (`input.image_topics`): the inference thread takes the waiting
frame of every camera at once (waiting `input.batch_window_ms` for the ones still
missing) and runs the encoders once for the whole batch; each camera's results go
to its own `~/<camera>/` outputs (see cameras.py).

Every received frame ends in exactly one verdict, or is counted as dropped by the
`latest` policy. A frame that could not be inspected (queue full under `all`,
malformed message, inference failure, node shutting down) gets verdict "error"
and `reject: true`, never a silent pass.

Outputs of one frame, all stamped with the input's header, in this order:
`~/mask` `~/anomaly_map` `~/overlay` `~/detections` `~/annotations`, then `~/verdict`
`~/verdict_json` and last `~/reject` (the table `outputs.topics.OUTPUT_TOPICS`;
the messages come from `outputs.builder`, which replay uses too). Image outputs
are only built while someone subscribes to them. An "error" frame gets `~/verdict`, `~/verdict_json`,
`~/reject` and, when the image itself could be decoded, `~/overlay`; it has no
mask, map or detections because there is no result to show.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_policy_name_from_kind
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CompressedImage, Image

from ..config import NODE_NAME, Config, flatten, load, needs_reload, set_value
from ..decision import Verdict
from ..errors import ClipsamError, one_line
from ..imaging.codec import ImageDecodeError, compressed_to_rgb, image_to_rgb
from ..outputs.builder import FrameError, frame_messages, stamp_ns
from .cameras import Camera, camera_topics, create_cameras
from .frame_queue import Frame, FrameQueue
from .messages import camera_values, diagnostic_array, diagnostic_level, diagnostic_values, rclpy_message_types
from .params import (
    READ_ONLY_NOTE,
    check_change,
    config_keys,
    declare_config,
    overrides_from_config,
    plain,
    read_config,
)
from .qos import image_subscription_qos, policy_warning
from .stats import FrameStats

if TYPE_CHECKING:  # torch loads with the pipeline: only when the Inspector is built
    from ..inspector import InspectionResult, Inspector

try:
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble calls the module qos_event
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError

LOG_EVERY_S = 5.0            # one line per kind of frame error per this many seconds
SHUTDOWN_WAIT_S = 30.0       # how long closing waits for the frame being inspected


class Throttle:
    """Say something at most once per `period_s` per key, and how often it was held back."""

    def __init__(self, period_s: float = LOG_EVERY_S):
        self.period_s = period_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()   # both threads report frame errors

    def __call__(self, key: str, now: float) -> int | None:
        """None: stay quiet; else the number of messages held back since the last one said."""
        with self._lock:
            if key in self._last and now - self._last[key] < self.period_s:
                self._held[key] = self._held.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._held.pop(key, 0)


def decode_frame(decode: Callable[[Any], np.ndarray], msg) -> tuple[np.ndarray | None, str]:
    """A received message as (RGB uint8 HxWx3, "") or, when it cannot be inspected, (None, why).

    `why` is one line. Nothing escapes: a codec bug costs this frame an "error"
    verdict, never the inference thread. The caller answers (None, why) with
    verdict "error" and reject true (tests/test_reliability_fuzz.py fuzzes this).
    """
    try:
        rgb = decode(msg)
    except ImageDecodeError as exc:
        return None, str(exc)
    except Exception as exc:  # noqa: BLE001 - the fail-safe boundary of the decoder
        return None, one_line(exc, with_type=True)
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3
            and rgb.shape[2] == 3 and rgb.shape[0] > 0 and rgb.shape[1] > 0):
        shape = getattr(rgb, "shape", None)
        return None, f"decoder returned {type(rgb).__name__} {shape}, expected RGB uint8 HxWx3"
    return rgb, ""


def _default_inspector(cfg: Config) -> Inspector:
    from ..inspector import Inspector

    return Inspector.from_config(cfg, progress=False)


class InspectorNode(LifecycleNode):
    """The inspection node as a ROS 2 lifecycle node (the yolo_ros pattern).

    unconfigured: parameters declared, nothing loaded (set any key here).
    configure:    the Inspector (models) from the parameters, warm-up; a failure logs one line,
                  fails the transition and leaves the node unconfigured, to be configured again.
    activate:     subscribe (once) and start the inference thread.
    deactivate:   stop taking frames; the frame in inference gets its verdict, the waiting ones
                  are answered per the queue policy (never "pass"); later frames are counted.
    cleanup:      publishers and subscriptions gone, models freed (and CUDA memory).
    shutdown:     from any state, through the above.
    `configure_and_activate(node)` does what `clipsam-ros node` and the tests need.
    """

    def __init__(self, inspector_factory: Callable[[Config], Inspector] | None = None,
                 node_name: str = NODE_NAME, **node_kwargs: Any):
        """Declare the parameters; nothing is loaded before `configure`.

        `inspector_factory(cfg)` builds the Inspector (default Inspector.from_config);
        tests pass one that returns a prebuilt Inspector. Raises ConfigError on a parameter
        value no key accepts.
        """
        super().__init__(node_name, **node_kwargs)
        self._factory = inspector_factory or _default_inspector
        try:
            self.cfg: Config = declare_config(self)
        except Exception:
            super().destroy_node()    # the rcl node exists already: do not leak it
            raise
        self._keys = set(config_keys())
        self._cfg_lock = threading.Lock()
        self._pending: dict[str, Any] = {}        # accepted parameter changes, applied between frames
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.types = rclpy_message_types()
        self.inspector: Inspector | None = None
        self.cameras: list[Camera] = []
        self.queue: FrameQueue | None = None
        self.stats: FrameStats | None = None
        self.configure_error = ""                 # the last failed configure's one line
        self.log_configure_errors = True          # off where the caller prints it (run: exit 1)
        self.incompatible_publishers = 0          # camera publishers whose QoS cannot match ours
        self._active = False
        self._closed = True
        self._worker: threading.Thread | None = None
        self._throttle = Throttle()
        self._previous = None
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # a steady clock: diagnostics keep their 1 Hz while sim time is paused or replayed fast
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------ lifecycle transitions

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        failed = ""
        try:
            cfg = read_config(self)
            self.inspector = self._factory(cfg)
            self.cfg = self.inspector.cfg
            self._warm_up(len(camera_topics(self.cfg.input)))
        except Exception as exc:  # noqa: BLE001 - a failed configure is a state, not a crash
            failed = one_line(exc) or type(exc).__name__
        if failed:
            self.configure_error = failed
            if self.log_configure_errors:
                self.get_logger().error(f"configure failed: {self.configure_error}")
            # outside the except block: its traceback would keep the half-built models alive
            self._free_models()
            return TransitionCallbackReturn.FAILURE
        with self._cfg_lock:
            self._pending.clear()      # already in the parameters the Inspector was built from
        self.configure_error = ""
        inp = self.cfg.input
        if self.types.vision is None:
            self.get_logger().warning("vision_msgs is not installed: ~/detections and ~/verdict are not "
                                      "published; ~/verdict_json and ~/reject carry the verdict")
        self.cameras = create_cameras(self, inp, self.types)
        self.stats = FrameStats(cameras=len(self.cameras))   # after warm-up: a compile is not a stall
        self._previous = None
        self._decode = compressed_to_rgb if inp.compressed else image_to_rgb
        if policy_warning(inp):
            self.get_logger().warning(policy_warning(inp))
        self.get_logger().info(f"configured on {self.inspector.device}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        inp = self.cfg.input
        self.queue = FrameQueue(inp.queue_policy, inp.queue_size, cameras=len(self.cameras))
        for camera in self.cameras:
            if camera.subscription is None:   # kept while inactive, to count what still arrives
                camera.subscription = self._subscribe(camera, CompressedImage if inp.compressed else Image,
                                                      image_subscription_qos(inp))
        # the thread starts once nothing else can fail, so a failed activate leaves none running
        self._closed = False
        # bound to this activation's queue: a worker left hung by a past one never takes its frames
        self._worker = threading.Thread(target=self._work, args=(self.queue,), name="clipsam_inference",
                                        daemon=True)
        self._worker.start()
        self.stats.listening(time.monotonic())
        self._active = True
        self.get_logger().info(
            f"ready: inspecting {self._topic_names()} "
            f"({'CompressedImage' if inp.compressed else 'Image'}, {inp.reliability}, "
            f"queue_policy {inp.queue_policy}) on {self.inspector.device}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        self.get_logger().info("inactive: frames are counted, not inspected")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: models freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def lifecycle_state(self) -> str:
        """The lifecycle state's label: unconfigured, inactive, active or finalized."""
        return self._state_machine.current_state[1]

    def _release(self) -> None:
        """Undo configure: subscriptions, publishers, the models. A frame still in inference
        (close() stopped waiting for it) finishes first: it needs the publishers and the stats."""
        if self._worker is not None and self._worker.is_alive():
            self.get_logger().warning("waiting for the frame in inference before freeing the models")
            self._worker.join(SHUTDOWN_WAIT_S)
            if self._worker.is_alive():     # a hung inference must not hold the process forever
                self.get_logger().error(f"the frame in inference did not finish within {SHUTDOWN_WAIT_S:.0f} s; "
                                        "freeing the models anyway")
        if self.inspector is not None:
            try:
                self.inspector.close()
            except Exception as exc:  # noqa: BLE001 - a memory that cannot be saved must not block cleanup
                self.get_logger().error(f"closing the inspector: {one_line(exc, with_type=True)}")
        for camera in self.cameras:
            if camera.subscription is not None:
                self.destroy_subscription(camera.subscription)
            for pub in camera.publishers.values():
                self.destroy_publisher(pub)
        self.cameras = []
        self.stats = None
        self._free_models()

    def _free_models(self) -> None:
        self.inspector = None
        gc.collect()
        torch = sys.modules.get("torch")     # loaded with the models, if ever
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def vision(self):
        """The vision_msgs classes, None where vision_msgs is not installed."""
        return self.types.vision

    @property
    def camera(self) -> Camera:
        """The first (with one camera: the only) camera's topics and publishers."""
        return self.cameras[0]

    def _topics(self) -> tuple[str, ...]:
        # before the first activate there is no subscription to ask for the resolved name
        return tuple(c.subscription.topic_name if c.subscription is not None else c.topic for c in self.cameras)

    def _topic_names(self) -> str:
        return ", ".join(self._topics())

    def _warm_up(self, cameras: int) -> None:
        """Run the configured warm-up frames (one batch per camera count) in configure, so the
        first real part is not the slow one. A failure fails the configure transition."""
        frames = self.cfg.runtime.warmup_frames
        if frames <= 0:
            return
        try:
            seconds = self.inspector.warm_up(frames, batch=cameras)
        except Exception as exc:
            raise ClipsamError(f"warm-up failed: {one_line(exc, with_type=True)}") from exc
        self.get_logger().info(f"warm-up: {frames} frame(s) x {cameras} camera(s) in {seconds:.1f} s")

    def _subscribe(self, camera: Camera, msg_type, qos):
        """One camera's subscription; a publisher whose QoS cannot match it is named in the log
        (a reliable reader and a best-effort camera never connect: no frame, no error)."""
        def incompatible(info, topic=camera.topic):
            self.incompatible_publishers += info.total_count_change
            self.get_logger().error(
                f"a publisher on {topic} offers QoS incompatible with input.reliability="
                f"{self.cfg.input.reliability} ({qos_policy_name_from_kind(info.last_policy_kind)}): no frames "
                f"arrive from it; set input.reliability to what the camera publishes")
        events = SubscriptionEventCallbacks(incompatible_qos=incompatible)

        def on_image(msg, index=camera.index):
            self._on_image(msg, index)
        try:
            return self.create_subscription(msg_type, camera.topic, on_image, qos, event_callbacks=events)
        except UnsupportedEventTypeError:
            return self.create_subscription(msg_type, camera.topic, on_image, qos)

    # ------------------------------------------------------------ executor thread

    def _on_image(self, msg, camera: int = 0) -> None:
        now = time.monotonic()
        if not self._active:
            stats = self.stats         # None once cleanup has begun
            if stats is not None:
                stats.inactive()       # deactivated: no verdict at all, and never a "pass"
            return
        frame = Frame(msg=msg, received=now, seq=self.stats.received(now, camera), camera=camera)
        offer = self.queue.offer(frame)
        if offer.dropped is not None:
            self.stats.dropped()
        if not offer.accepted and not offer.refused:     # closed (a refused frame is answered in its turn)
            self._answer_error(frame, "shutdown", "the node is shutting down")

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Validate live changes with config's rules; accepted ones apply from the next frame."""
        changes = {p.name: p.value for p in params if p.name in self._keys}
        if not changes:
            return SetParametersResult(successful=True)
        if self.inspector is None:     # unconfigured: `configure` reads and checks the parameters
            reason = check_change(self.cfg, changes)
            return SetParametersResult(successful=not reason, reason=reason)
        # a key that needs a rebuild may still be "set" to its current value (`ros2 param load`
        # of the node's own dump): nothing changes, nothing to refuse
        current = flatten(self.cfg)
        rebuild = sorted(name for name in changes if needs_reload(name) and plain(changes[name]) != current[name])
        if rebuild:
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(rebuild)}: {READ_ONLY_NOTE}"))
        with self._cfg_lock:
            reason = check_change(self.cfg, {**self._pending, **changes})
            if reason:
                return SetParametersResult(successful=False, reason=reason)
            self._pending.update(changes)
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        stats = self.stats
        if stats is None:              # unconfigured: say why nothing is inspected, not go stale
            level, message = (2, f"configure failed: {self.configure_error}") if self.configure_error \
                else (0, "unconfigured: no models loaded")
            self.pub_diagnostics.publish(diagnostic_array(
                DiagnosticArray, DiagnosticStatus, KeyValue, self.get_clock().now().to_msg(),
                f"{self.get_fully_qualified_name()}: inspection", "", level, message, []))
            return
        snap = stats.snapshot()
        level, message = diagnostic_level(self._previous, snap, self._worker_ok(), active=self._active,
                                          stall_timeout_s=self.cfg.input.stall_timeout_s,
                                          topics=self._topics())
        self._previous = snap
        waiting, capacity = (len(self.queue), self.queue.capacity) if self.queue is not None else (0, 0)
        values = diagnostic_values(snap, waiting, capacity, self._about())
        values += camera_values(snap, [camera.name for camera in self.cameras])
        self.pub_diagnostics.publish(diagnostic_array(
            DiagnosticArray, DiagnosticStatus, KeyValue, self.get_clock().now().to_msg(),
            f"{self.get_fully_qualified_name()}: inspection", str(self.inspector.device), level, message, values))

    def _worker_ok(self) -> bool:
        return self._closed or (self._worker is not None and self._worker.is_alive())

    def _about(self) -> dict[str, str]:
        cfg = self.cfg
        return {
            "queue_policy": cfg.input.queue_policy,
            "reliability": cfg.input.reliability,
            "compressed": str(cfg.input.compressed).lower(),
            "device": str(self.inspector.device),
            "sam_variant": cfg.sam.variant,
            "localizer": cfg.localizer.method,
            "clip_model": cfg.clip.model if self.inspector.clip_encoder is not None else "unused",
            "refiner": cfg.refiner.method,
            "vision_msgs": "yes" if self.vision is not None else "missing",
            "cameras": self._topic_names(),
        }

    # ------------------------------------------------------------ inference thread

    def _work(self, queue: FrameQueue) -> None:
        window_s = self.cfg.input.batch_window_ms / 1000.0 if len(self.cameras) > 1 else 0.0
        while True:
            frames = queue.get_batch(window_s)
            if frames is None:
                return
            try:
                self._process(frames)
            except Exception as exc:  # a bug here must not cost a frame its verdict, nor stop the thread
                self.get_logger().error(f"frames {[f.seq for f in frames]}: {one_line(exc, with_type=True)}")
                for frame in frames:
                    if not frame.answered:
                        try:
                            self._answer_error(frame, "inference", one_line(exc, with_type=True))
                        except Exception as again:  # noqa: BLE001 - counted as error; keep the thread
                            self.get_logger().error(f"frame {frame.seq}: the error verdict could not be "
                                                    f"published: {one_line(again, with_type=True)}")

    def _apply_pending(self) -> None:
        with self._cfg_lock:
            for name, value in self._pending.items():
                set_value(self.cfg, name, plain(value))
                self.get_logger().info(f"{name} = {plain(value)!r}")
            self._pending.clear()

    def _process(self, frames: list[Frame]) -> None:
        """Decode each frame, inspect the decodable ones as one batch, publish per camera."""
        t0 = time.perf_counter()
        decoded: list[tuple[Frame, np.ndarray]] = []
        for frame in frames:
            if frame.refused:
                self._answer_error(frame, "overflow", frame.refused)
                continue
            rgb, why = decode_frame(self._decode, frame.msg)
            if rgb is None:
                self._answer_error(frame, "decode", why)
            else:
                decoded.append((frame, rgb))
        if not decoded:
            return
        t1 = time.perf_counter()
        self.stats.stage("decode", (t1 - t0) * 1000.0)
        self._apply_pending()
        # a batch shares one pass of each encoder; each frame keeps its camera's index (memory)
        results = self.inspector.inspect_batch([rgb for _, rgb in decoded],
                                               cameras=[frame.camera for frame, _ in decoded])
        t2 = time.perf_counter()
        self.stats.stage("inference", (t2 - t1) * 1000.0)
        for (frame, rgb), result in zip(decoded, results):
            self._publish_frame(frame, rgb, result)
        self.stats.stage("publish", (time.perf_counter() - t2) * 1000.0)

    def _publish_frame(self, frame: Frame, rgb: np.ndarray, result: InspectionResult) -> None:
        if result.verdict == Verdict.ERROR:
            self._answer_error(frame, "inference", result.error, rgb)
            return
        try:
            self._publish(frame, rgb, result)
        except Exception as exc:
            self._answer_error(frame, "publish", one_line(exc, with_type=True))
            return
        self._count(frame, result.verdict)

    def _publish(self, frame: Frame, rgb: np.ndarray | None, answer: InspectionResult | FrameError) -> None:
        """Build the frame's outputs (images only for subscribers) and publish them in table order."""
        camera = self.cameras[frame.camera]
        late = self._late(frame.msg.header)
        camera.publish(frame_messages(self.types, frame.msg.header, rgb, answer, camera.wanted(), late))
        if late:
            self.stats.late()

    def _late(self, header) -> bool | None:
        """Whether a verdict published now misses decision.deadline_ms from the frame's stamp
        (None when no deadline is set, or the frame has no stamp). The node's clock: sim time
        under use_sim_time."""
        deadline_ms = self.cfg.decision.deadline_ms
        if deadline_ms <= 0 or stamp_ns(header) == 0:    # 0: a camera that does not stamp its frames
            return None
        age_ns = self.get_clock().now().nanoseconds - stamp_ns(header)
        return age_ns > deadline_ms * 1e6

    # ------------------------------------------------------------ either thread

    def _count(self, frame: Frame, verdict: str, kind: str = "", error: str = "") -> None:
        frame.answered = True
        self.stats.answered(verdict, frame.received, time.monotonic(), kind, error)

    def _answer_error(self, frame: Frame, kind: str, error: str, rgb=None) -> None:
        """The fail-safe answer: verdict "error", reject true, one throttled log line per kind."""
        header = frame.msg.header
        camera = self.cameras[frame.camera]
        held = self._throttle(kind, time.monotonic())
        if held is not None:
            more = f" ({held} more since the last such line)" if held else ""
            source = f"camera '{camera.name}' " if camera.name else ""
            self.get_logger().warning(
                f"{source}frame {frame.seq} (stamp {header.stamp.sec}.{header.stamp.nanosec:09d}, frame_id "
                f"'{header.frame_id}'): {kind}: {error}; verdict error, reject{more}")
        try:
            try:
                self._publish(frame, rgb, FrameError(error))
            except Exception:  # noqa: BLE001 - the verdict must not depend on the overlay
                if rgb is None:
                    raise
                self._publish(frame, None, FrameError(error))
        finally:
            self._count(frame, Verdict.ERROR, kind, error)

    # ------------------------------------------------------------ shutdown

    def close(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """Stop taking frames, let the frame being inspected finish, then answer the rest
        (deactivate, shutdown, destroy_node).

        Under `all`, frames still waiting get an "error" verdict (a triggered part must
        not pass uninspected), after the frame in inference, so answers keep the frames'
        order; under `latest` they are counted as dropped.
        """
        if self._closed:
            return
        self._active = False
        self._closed = True
        waiting = self.queue.close()
        self._worker.join(timeout_s)
        if self._worker.is_alive():
            self.get_logger().error(f"the frame being inspected did not finish within {timeout_s:.0f} s; "
                                    f"the {len(waiting)} frame(s) waiting are answered before it")
        for frame in waiting:
            if frame.refused:
                self._answer_error(frame, "overflow", frame.refused)
            elif self.queue.policy == "all":
                self._answer_error(frame, "shutdown", "the node shut down before this frame was inspected")
            else:
                self.stats.dropped()

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()


def configure_and_activate(node: InspectorNode, stop: threading.Event | None = None) -> InspectorNode:
    """Bring `node` to active (what `clipsam-ros node` does without a lifecycle manager); a
    `stop` set while configuring (SIGTERM during a long model load) leaves it inactive.

    Raises ClipsamError with configure's one line when a transition fails."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        raise ClipsamError(node.configure_error or "configure failed")
    if stop is not None and stop.is_set():
        return node
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        raise ClipsamError("activate failed")
    return node


# ---------------------------------------------------------------- running it

def run(parameter_overrides=None, args: list[str] | None = None,
        inspector_factory: Callable[[Config], Inspector] | None = None, managed: bool = False) -> int:
    """Run the node until SIGINT or SIGTERM, then close it cleanly; returns the exit code.

    It goes to active by itself unless `managed` (a lifecycle manager or the launch file's
    autostart drive the transitions; the node waits unconfigured).

    rclpy's own signal handlers are off so the context stays usable while closing:
    the frames still queued can then be answered before the node goes.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    node = None
    try:
        node = InspectorNode(inspector_factory, parameter_overrides=parameter_overrides or [])
        if not managed:
            node.log_configure_errors = False     # main() prints the one line and exits 1
            configure_and_activate(node, stop)
            node.log_configure_errors = True
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
        node.get_logger().info("shutting down")
        # from any state (in-flight frame answered, models freed); a lifecycle manager may
        # have finalized the node already
        if node.lifecycle_state() != "finalized":
            node.trigger_shutdown()
        executor.remove_node(node)
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def config_overrides(path: str | None, sets: list[str], namespace: str | None = None):
    """Parameter overrides from `--config` / `--set`: a file gives every key (from its sections for
    this node in `namespace`), `--set` only its own."""
    cfg = load(path, sets, namespace)  # validates; ConfigError names the key
    if path:
        return overrides_from_config(cfg)
    return overrides_from_config(cfg, [item.split("=", 1)[0].strip() for item in sets])


def ros_namespace(argv: list[str]) -> str:
    """The namespace the ROS arguments give this node (`-r __ns:=/line3`, or
    `-r clipsam_inspector:__ns:=/line3`); '' when none."""
    namespace, in_ros_args = "", False
    for flag, value in zip(argv, argv[1:]):
        if flag == "--ros-args":
            in_ros_args = True
        elif flag == "--":
            in_ros_args = False
        elif in_ros_args and flag in ("-r", "--remap"):
            name, _, target = value.partition(":=")
            if name in ("__ns", f"{NODE_NAME}:__ns"):
                namespace = target
    return namespace


def main(argv: list[str] | None = None) -> int:
    """`clipsam_inspector [--config F] [--set k=v]... [--ros-args ...]` (ros2 run / ros2 launch)."""
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    parser = argparse.ArgumentParser(prog=NODE_NAME, description="The clipsam_ros inspection node. ROS "
                                     "arguments go after --ros-args (remaps, --params-file, -p).")
    parser.add_argument("--config", help="params YAML; it then wins over --params-file and -p "
                                         "(default: parameters come from ROS only)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set refiner.threshold=0.6 (repeatable)")
    parser.add_argument("--managed", action="store_true",
                        help="stay unconfigured for a lifecycle manager (default: configure and activate)")
    args = parser.parse_args(remove_ros_args(argv)[1:])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")   # no model hub on a line PC: never wait on one
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # the params file's sections for this node in its namespace, as ROS itself would pick them
        overrides = config_overrides(args.config, args.overrides, ros_namespace(argv))
        return run(overrides, argv, managed=args.managed)
    except Exception as exc:  # one line, non-zero exit, like the CLI
        print(f"{NODE_NAME}: error: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
