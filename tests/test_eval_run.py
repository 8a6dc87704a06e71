"""`clipsam-ros eval` on a tiny synthetic set with real LiteMedSAM: report, plots, ablation rows."""
from __future__ import annotations

import json

import pytest

from clipsam_ros.cli.main import main
from clipsam_ros.config import config_path
from clipsam_ros.data.synth import generate_dataset
from clipsam_ros.eval.metrics import METRIC_KEYS

pytestmark = pytest.mark.slow   # an eval run over a synthetic dataset


@pytest.fixture(scope="module")
def metal_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_synth")
    generate_dataset(root, n=2, classes=["metal"], size=(320, 240))
    # one image per defect kind is enough here: 2 bank + 4 test images, each encoded once
    for extra in (root / "metal" / "test").glob("*/001.png"):
        extra.unlink()
    return root


@pytest.fixture(scope="module")
def report(metal_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_report")
    rc = main(["eval", "--root", str(metal_root), "--layout", "synth", "--config", str(config_path("offline.yaml")),
               "--ablation", "cps-stages", "--report", str(out)])
    assert rc == 0
    return out


def test_report_json_has_the_contract_shape(report):
    data = json.loads((report / "report.json").read_text())
    assert set(data["classes"]) == {"metal"} and set(data["mean"]) == set(METRIC_KEYS)
    for value in data["classes"]["metal"].values():
        assert value is None or 0.0 <= value <= 1.0
    assert data["classes"]["metal"]["pixel_auroc"] > 0.5          # real maps, not noise
    assert data["config"]["sam"]["variant"] == "lite_medsam"
    assert data["images"] == {"metal": 4}
    stages = data["ablations"]["cps-stages"]
    assert stages["variants"] == ["coarse", "only points", "points+logit1", "points+box+logit2"]
    # the configured refiner is the full cascade: its row is the pipeline's numbers
    assert stages["mean"]["points+box+logit2"] == data["mean"]
    assert stages["mean"]["coarse"] != stages["mean"]["only points"]


def test_report_md_has_the_papers_columns_and_every_row(report):
    text = (report / "report.md").read_text()
    assert "| class | pixel AUROC | F1-max | AP | AUPRO | image AUROC |" in text
    for row in ("| metal |", "| **mean** |", "| coarse |", "| only points |", "| points+logit1 |",
                "| points+box+logit2 |"):
        assert row in text


def test_plots_and_worst_overlays_are_images(report):
    import cv2

    for name in ("roc.png", "pr.png"):
        image = cv2.imread(str(report / name))
        assert image is not None and image.shape[0] > 100
    overlays = sorted((report / "worst").glob("metal_*.png"))
    assert len(overlays) == 3
    assert cv2.imread(str(overlays[0])).shape == (240, 320, 3)


def test_a_wrong_layout_is_one_line_before_any_model_loads(tmp_path, capsys):
    rc = main(["eval", "--root", str(tmp_path), "--layout", "visa", "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and f"expected {tmp_path}/split_csv/1cls.csv" in err[0]


# ------------------------------------------------------------------ the stream localizer under eval

def test_line_order_is_a_fixed_shuffle_of_the_same_samples():
    from clipsam_ros.eval.runner import line_order

    samples = list(range(20))
    order = line_order(samples)
    assert sorted(order) == samples and order != samples
    assert line_order(samples) == order                       # the same every run


@pytest.fixture(scope="module")
def two_products(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_stream")
    generate_dataset(root, n=2, classes=["metal", "washer"], size=(320, 240))
    return root


def test_stream_eval_leaves_each_products_warm_up_out_and_scores_the_rest(two_products, tmp_path):
    out = tmp_path / "report"
    rc = main(["eval", "--root", str(two_products), "--layout", "synth", "--config", str(config_path("offline.yaml")),
               "--set", "localizer.method=stream", "--set", "localizer.warmup_frames=3",
               "--set", "localizer.window=6", "--report", str(out), "--worst", "0"])
    assert rc == 0
    data = json.loads((out / "report.json").read_text())
    # each product's memory starts afresh: its first 3 images are warm-up, the rest are scored
    assert data["warmup_frames"] == {"metal": 3, "washer": 3}
    scored = {name: len(list((two_products / name / "test").glob("*/*.png"))) - 3 for name in ("metal", "washer")}
    assert data["images"] == scored and min(scored.values()) >= 3
    for name in ("metal", "washer"):
        confusion = data["confusion"][name]
        assert sum(confusion["good"].values()) + sum(confusion["defect"].values()) == scored[name]
        assert data["classes"][name]["pixel_auroc"] is not None
    assert "6 warm-up images left out" in (out / "report.md").read_text()
