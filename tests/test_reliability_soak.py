"""The CI share of the soak (issue 7.2): 300 frames per queue policy at 50 Hz through the real
node on loopback (domains 82, 83), the real Inspector (offline profile) and codec; inference
takes seconds, so `latest` drops most frames and `all` answers most with overflow errors.
The full run is `python benchmarks/soak.py --frames 5000` (figures in docs/RELIABILITY.md).
Memory is reported here, and checked (< 5 % after warm-up) by the full run.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from ros_helpers import build_offline_inspector  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inspector(offline_cfg, lite_sam, tmp_path_factory):
    return build_offline_inspector(offline_cfg, lite_sam, tmp_path_factory.mktemp("soak_bank"))


def test_latest_drops_what_it_cannot_inspect_and_answers_the_rest_once(soak, inspector):
    out = soak.run_soak(inspector, "latest", frames=300, rate_hz=50.0, domain_id=82)
    print(json.dumps(out))
    node = out["node"]
    assert out["checks"]["accounting_exact"] and out["checks"]["no_frame_answered_twice"], out
    # best effort may lose frames in transport on a loaded machine (the node cannot see those);
    # what it did receive is either inspected once or counted as dropped
    assert node["received"] >= 100 and node["dropped"] >= node["received"] - 10, out
    assert node["verdicts"]["error"] == 0, out
    assert out["inspected_latency_ms"]["n"] >= 1
    # the latency bound (p95 < 2 inference times) is a timing figure: benchmarks/soak.py reports
    # it on the full run; a shared CI machine cannot assert it without flaking


def test_all_gives_every_frame_exactly_one_verdict(soak, inspector):
    out = soak.run_soak(inspector, "all", frames=300, rate_hz=50.0, domain_id=83, queue_size=2)
    print(json.dumps(out))
    assert out["checks"]["every_frame_exactly_one_verdict"] and out["checks"]["accounting_exact"], out
    node = out["node"]
    assert node["received"] == 300 and node["dropped"] == 0 and node["lost_in_transport"] == 0
    assert node["errors"].get("overflow", 0) > 250 and set(node["errors"]) <= {"overflow"}, out
    assert out["verdicts_received"] == node["verdicts"]
