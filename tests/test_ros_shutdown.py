"""`clipsam-ros node` as its own process (domain 59, loopback): it inspects a frame sent from
this process, then exits 0 on SIGINT; a bad config is one line and exit 1 before any ROS."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from clipsam_ros.resources import config_path  # noqa: E402
from clipsam_ros.synth import generate_dataset, make_sample  # noqa: E402

from ros_helpers import FRAME_SIZE, RosHarness, image, loopback_env, wait_until  # noqa: E402

DOMAIN_ID = 59
ROOT = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    out = dict(os.environ, **loopback_env(DOMAIN_ID), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return out


def test_node_process_inspects_then_exits_cleanly_on_sigint(tmp_path):
    generate_dataset(tmp_path, n=2, seed=0, size=FRAME_SIZE, classes=["metal"])
    cmd = [sys.executable, "-m", "clipsam_ros.cli", "node", "--config", str(config_path("offline.yaml")),
           "--set", "device=cpu", "--set", f"localizer.reference_dir={tmp_path / 'metal' / 'train' / 'good'}",
           "--set", "input.reliability=reliable", "--set", "input.queue_policy=all",
           "--ros-args", "-r", "__ns:=/sigint"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    ros = None
    try:
        wait_until(lambda: any("ready:" in ln for ln in lines) or proc.poll() is not None, 180, "the node")
        assert proc.poll() is None, "".join(lines)
        assert any("/sigint/image" in ln for ln in lines if "ready:" in ln)
        assert any("warm-up: 1 frame(s) x 1 camera(s)" in ln for ln in lines)   # offline.yaml's default

        ros = RosHarness(DOMAIN_ID)
        verdicts = ros.collect(String, "/sigint/clipsam_inspector/verdict_json")
        pub = ros.tester.create_publisher(Image, "/sigint/image", 10)
        wait_until(lambda: pub.get_subscription_count() > 0 and ros.tester.count_publishers(
            "/sigint/clipsam_inspector/verdict_json") > 0, 30, "discovery on loopback")
        stain, _ = make_sample("metal", "stain", seed=5, size=FRAME_SIZE)
        pub.publish(image(stain, 77))
        wait_until(lambda: verdicts, 90, "a verdict from the node process")
        assert json.loads(verdicts[0].data)["header"]["sec"] == 77

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
        reader.join(5)
        assert any("shutting down" in ln for ln in lines)
        assert not any("Traceback" in ln for ln in lines), "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if ros is not None:
            ros.close()


def test_a_bad_config_is_one_line_and_exit_1_before_ros_starts(capsys):
    from clipsam_ros.cli import main

    assert main(["node", "--set", "refiner.threshold=2"]) == 1               # clipsam-ros node
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refiner.threshold" in err[0] and "out of range" in err[0], err
    done = subprocess.run([sys.executable, "-m", "clipsam_ros.ros.node", "--set", "refiner.threshold=2"],
                          cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120)   # clipsam_inspector
    assert done.returncode == 1, done.stderr
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "refiner.threshold" in err[0] and "out of range" in err[0], done.stderr
