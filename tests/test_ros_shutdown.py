"""`clipsam-ros node` as its own process (domain 59, loopback): it inspects a frame sent from
this process, then exits 0 on SIGINT; a bad config is one line and exit 1 before any ROS."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from clipsam_ros.config import config_path  # noqa: E402
from clipsam_ros.data.synth import generate_dataset, make_sample  # noqa: E402

from ros_helpers import FRAME_SIZE, ROOT, NodeProcess, RosHarness, image, process_env, wait_until  # noqa: E402

pytestmark = pytest.mark.slow   # subprocesses: the node stopped by signals

DOMAIN_ID = 59


def test_node_process_inspects_then_exits_cleanly_on_sigint(tmp_path):
    generate_dataset(tmp_path, n=2, seed=0, size=FRAME_SIZE, classes=["metal"])
    cmd = [sys.executable, "-m", "clipsam_ros.cli.main", "node", "--config", str(config_path("offline.yaml")),
           "--set", "device=cpu", "--set", f"localizer.reference_dir={tmp_path / 'metal' / 'train' / 'good'}",
           "--set", "input.reliability=reliable", "--set", "input.queue_policy=all",
           "--ros-args", "-r", "__ns:=/sigint"]
    with NodeProcess(cmd, DOMAIN_ID) as node:
        node.wait_ready(180)
        assert any("/sigint/image" in ln for ln in node.lines if "ready:" in ln)
        assert any("warm-up: 1 frame(s) x 1 camera(s)" in ln for ln in node.lines)   # offline.yaml's default
        ros = RosHarness(DOMAIN_ID)
        try:
            verdicts = ros.collect(String, "/sigint/clipsam_inspector/verdict_json")
            pub = ros.tester.create_publisher(Image, "/sigint/image", 10)
            wait_until(lambda: pub.get_subscription_count() > 0 and ros.tester.count_publishers(
                "/sigint/clipsam_inspector/verdict_json") > 0, 30, "discovery on loopback")
            stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
            pub.publish(image(stain, 77))
            wait_until(lambda: verdicts, 90, "a verdict from the node process")
            assert json.loads(verdicts[0].data)["header"]["sec"] == 77
            assert node.stop(signal.SIGINT, timeout=60) == 0, node.output
            assert any("shutting down" in ln for ln in node.lines)
            assert "Traceback" not in node.output, node.output
        finally:
            ros.close()


def test_a_bad_config_is_one_line_and_exit_1_before_ros_starts(capsys):
    from clipsam_ros.cli.main import main

    assert main(["node", "--set", "refiner.threshold=2"]) == 1               # clipsam-ros node
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refiner.threshold" in err[0] and "out of range" in err[0], err
    # clipsam_inspector, the ros2 run / ros2 launch entry point
    done = subprocess.run([sys.executable, "-m", "clipsam_ros.ros.node", "--set", "refiner.threshold=2"],
                          cwd=ROOT, env=process_env(DOMAIN_ID), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "refiner.threshold" in err[0] and "out of range" in err[0], done.stderr
