"""The CLI contracts of DESIGN.md: inspect's files, demo's summary, one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from clipsam_ros.cli.main import main
from clipsam_ros.config import config_path
from clipsam_ros.data.synth import generate_dataset

pytestmark = pytest.mark.slow   # subprocesses: the clipsam-ros command line


@pytest.fixture(scope="module")
def metal(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=2, seed=0, classes=["metal"], size=(320, 240))
    return root / "metal"


def test_inspect_writes_mask_overlay_and_json(metal, tmp_path, capsys):
    images = [metal / "test" / "stain" / "000.png", metal / "test" / "good" / "000.png"]
    code = main(["inspect", "--config", str(config_path("offline.yaml")),
                 "--set", f"localizer.reference_dir={metal / 'train' / 'good'}",
                 "--out", str(tmp_path), *map(str, images)])
    assert code == 0
    # both stems are 000: each result is named by its folder too, none overwrites the other
    assert not (tmp_path / "000.json").exists()
    for stem in ("stain_000", "good_000"):
        mask = cv2.imread(str(tmp_path / f"{stem}_mask.png"), cv2.IMREAD_UNCHANGED)
        overlay = cv2.imread(str(tmp_path / f"{stem}_overlay.png"))
        assert mask.shape == (240, 320) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert overlay.shape == (240, 320, 3)
    assert json.loads((tmp_path / "good_000.json").read_text())["verdict"] == "pass"
    data = json.loads((tmp_path / "stain_000.json").read_text())
    assert set(data) >= {"verdict", "score", "defects", "timings_ms", "encoder_calls"}
    assert data["verdict"] == "fail" and data["encoder_calls"] == {"sam": 1, "clip": 0, "backbone": 1}
    for defect in data["defects"]:
        assert set(defect) == {"bbox", "area_px", "score"} and len(defect["bbox"]) == 4
    assert "stain/000.png: fail" in capsys.readouterr().out


def test_errors_are_one_line_and_nonzero():
    run = subprocess.run([sys.executable, "-m", "clipsam_ros.cli.main", "inspect", "--set", "refiner.threshold=2",
                          "--out", "/tmp/unused", "x.png"], capture_output=True, text=True)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "refiner.threshold" in lines[0], run.stderr


def test_unreadable_image_is_a_clear_error(metal, tmp_path, capsys):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    code = main(["inspect", "--config", str(config_path("offline.yaml")),
                 "--set", f"localizer.reference_dir={metal / 'train' / 'good'}",
                 "--out", str(tmp_path), str(junk)])
    last = capsys.readouterr().err.strip().splitlines()[-1]      # after the bank's progress bar
    assert code != 0 and "junk.png" in last and "not a readable image" in last
    assert json.loads((tmp_path / "junk.json").read_text())["verdict"] == "error"


def test_demo_writes_the_summary_contract(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--n", "2", "--classes", "washer"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["mean_iou"]) == {"coarse", "refined"}
    assert len(summary["images"]) == 7                            # 3 defects × 2 + 1 good
    for row in summary["images"]:
        assert {"image", "verdict", "iou", "encoder_calls"} <= set(row)
        assert row["encoder_calls"] == {"sam": 1, "clip": 0, "backbone": 1}
        assert (tmp_path / f"{row['image']}_overlay.png").exists()
    # the refiner must add something over the thresholded map, on the real pipeline too
    assert summary["mean_iou"]["refined"] > summary["mean_iou"]["coarse"]
    assert "IoU coarse → refined" in capsys.readouterr().out


def test_result_names_are_unique_and_stay_plain_where_they_can():
    from clipsam_ros.outputs.files import result_stems

    assert result_stems(["r/test/hole/000.png", "r/test/good/000.png", "r/x/001.jpg"]) == \
        ["hole_000", "good_000", "001"]
    assert result_stems(["a/x/000.png", "b/x/000.png"]) == ["a_x_000", "b_x_000"]
    assert result_stems(["same.png", "same.png", "same.png"]) == ["same", "same_1", "same_2"]
