"""What the ROS node costs on top of inference, per frame, measured in-process on loopback.

    python benchmarks/node_overhead.py [--frames 5] [--sizes 640x480 1920x1080] [--domain 70]

One rclpy context (DDS discovery on localhost only, its own domain) holds the
node with the real Inspector on the offline profile (LiteMedSAM + a reference
bank of synthetic good parts) and a client node that publishes synthetic
frames and subscribes to every output, so every output is built. Frames go one
at a time (queue_policy all, reliable): no queueing in the numbers.

Per frame the node itself times decode (message -> RGB), inference
(Inspector.inspect) and publish (overlay, image messages, verdict, reject);
the client times end to end, from publish() to the frame's `~/reject`
arriving. Overhead = decode + publish; `transport_ms` = end to end minus the
node's three stages (DDS both ways, executor hand-off). Prints JSON (p50 over
the measured frames, a warm-up frame excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def p50(values) -> float:
    return round(float(np.median(values)), 3)


def build_inspector(tmp: Path):
    from clipsam_ros.config import config_path, load
    from clipsam_ros.data.synth import generate_dataset
    from clipsam_ros.inspector import Inspector

    generate_dataset(tmp, n=3, seed=0, classes=["metal"])
    cfg = load(config_path("offline.yaml"), ["input.queue_policy=all", "input.reliability=reliable"])
    cfg.localizer.reference_dir = str(tmp / "metal" / "train" / "good")
    return Inspector.from_config(cfg, progress=False)


def measure(context, executor, inspector, size: tuple[int, int], frames: int) -> dict:
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from clipsam_ros.data.synth import make_sample
    from clipsam_ros.inspector import Inspector
    from clipsam_ros.outputs.builder import image_msg
    from clipsam_ros.ros.messages import rclpy_message_types
    from clipsam_ros.ros.node import InspectorNode, configure_and_activate
    from clipsam_ros.ros.params import overrides_from_config

    ns = f"bench_{size[0]}x{size[1]}"
    node = configure_and_activate(InspectorNode(
        lambda cfg: Inspector(cfg, inspector.sam, inspector.localizer, inspector.device),
        namespace=ns, parameter_overrides=overrides_from_config(inspector.cfg), context=context))
    client = rclpy.create_node(f"{ns}_client", context=context)
    arrived: dict[int, float] = {}
    done = threading.Event()

    def on_reject(_msg) -> None:
        arrived[len(arrived)] = time.perf_counter()
        done.set()

    outputs = node.camera.publishers      # every output, so every one is built and published
    for name, publisher in outputs.items():
        client.create_subscription(publisher.msg_type, f"/{ns}/clipsam_inspector/{name}",
                                   on_reject if name == "reject" else (lambda m: None), 10)
    pub = client.create_publisher(Image, f"/{ns}/image", 10)
    executor.add_node(node)
    executor.add_node(client)
    deadline = time.monotonic() + 20
    while not (pub.get_subscription_count() and all(p.get_subscription_count() for p in outputs.values())):
        if time.monotonic() > deadline:
            raise RuntimeError("publishers and subscriptions did not match on loopback")
        time.sleep(0.02)

    samples = [make_sample("metal", ("stain", None)[i % 2], seed=i, size=size)[0] for i in range(frames + 1)]
    e2e = []
    for i, rgb in enumerate(samples):
        header = Header(frame_id="bench")
        header.stamp.sec = i + 1
        msg = image_msg(rclpy_message_types(), header, rgb, "rgb8")
        done.clear()
        sent = time.perf_counter()
        pub.publish(msg)
        if not done.wait(300):
            raise RuntimeError(f"frame {i} got no reject within 300 s")
        e2e.append((arrived[i] - sent) * 1000.0)

    stages = {s: node.stats.recent(s)[1:] for s in ("decode", "inference", "publish")}   # drop warm-up
    e2e = e2e[1:]
    executor.remove_node(node)
    executor.remove_node(client)
    node.destroy_node()
    client.destroy_node()
    overhead = [d + p for d, p in zip(stages["decode"], stages["publish"])]
    transport = [t - d - i - p for t, d, i, p in zip(e2e, stages["decode"], stages["inference"], stages["publish"])]
    return {
        "size": list(size),
        "frame_mb": round(size[0] * size[1] * 3 / 1e6, 2),
        "decode_ms_p50": p50(stages["decode"]),
        "publish_ms_p50": p50(stages["publish"]),
        "overhead_ms_p50": p50(overhead),
        "inference_ms_p50": p50(stages["inference"]),
        "overhead_share_of_inference": round(p50(overhead) / p50(stages["inference"]), 5),
        "end_to_end_ms_p50": p50(e2e),
        "transport_ms_p50": p50(transport),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5, help="measured frames per size (plus one warm-up)")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1920x1080"], help="WxH frame sizes")
    parser.add_argument("--domain", type=int, default=70, help="ROS_DOMAIN_ID (loopback only)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]

    # DDS reads these at rclpy.init(): discovery stays on this machine, in a domain of its own
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(args.domain),
                      HF_HUB_OFFLINE="1")
    import rclpy
    import torch
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    with tempfile.TemporaryDirectory() as tmp:
        inspector = build_inspector(Path(tmp))
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=args.domain, signal_handler_options=SignalHandlerOptions.NO)
    executor = MultiThreadedExecutor(num_threads=2, context=context)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        results = [measure(context, executor, inspector, size, args.frames) for size in sizes]
    finally:
        executor.shutdown(timeout_sec=5)
        rclpy.try_shutdown(context=context)
    print(json.dumps({
        "device": str(inspector.device), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "profile": "offline (lite_medsam + reference bank)", "frames_per_size": args.frames,
        "overhead": "decode + publish (overlay render, mask/map/overlay Image messages, annotations, verdict, reject)",
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
