"""Dataset readers and ablation variants: no models, fast."""
from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from clipsam_ros.config import Config, set_value
from clipsam_ros.data.datasets import DatasetError, load_dataset, read_mask
from clipsam_ros.data.synth import generate_dataset
from clipsam_ros.eval.runner import pick_shots
from clipsam_ros.eval.variants import PIPELINE, Variant, ablation_variants
from clipsam_ros.imaging.files import read_rgb, resize_longest


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=1, classes=["metal", "washer"], size=(96, 64))
    return root


def test_synth_layout_lists_classes_with_masks_only_on_defects(synth_root):
    classes = load_dataset(synth_root, "synth")
    assert [c.name for c in classes] == ["metal", "washer"]
    metal = classes[0]
    assert len(metal.train_good) == 1
    good = [s for s in metal.test if s.defect == "good"]
    bad = [s for s in metal.test if s.defect != "good"]
    assert len(good) == 1 and good[0].mask is None and good[0].label == 0
    assert {s.defect for s in bad} == {"scratch", "hole", "stain"} and all(s.label == 1 for s in bad)
    assert not read_mask(good[0], (64, 96)).any()
    assert read_mask(bad[0], (64, 96)).any()


def test_class_filter_and_its_error(synth_root):
    assert [c.name for c in load_dataset(synth_root, "mvtec", ["washer"])] == ["washer"]
    with pytest.raises(DatasetError, match="--classes bottle: not in .*classes there: metal, washer"):
        load_dataset(synth_root, "mvtec", ["bottle"])


def test_wrong_layout_says_what_was_expected_where(tmp_path, synth_root):
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path, "mvtec")
    assert f"{tmp_path}/<class>/train/good/" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DatasetError, match=r"expected .*split_csv/1cls\.csv"):
        load_dataset(synth_root, "visa")


def test_a_missing_mask_is_named(tmp_path):
    generate_dataset(tmp_path, n=1, classes=["metal"], size=(96, 64))
    (tmp_path / "metal" / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match="expected the mask .*hole/000_mask.png for the test image"):
        load_dataset(tmp_path, "mvtec")


def _write(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_visa_layout_from_its_split_csv(tmp_path):
    img = np.full((40, 60, 3), 128, np.uint8)
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:30] = 1                      # VisA masks hold small ids, not 255
    rows = [("candle", "train", "normal", "candle/Data/Images/Normal/0000.JPG", "")]
    rows += [("candle", "train", "normal", "candle/Data/Images/Normal/0001.JPG", "")]
    rows += [("candle", "test", "normal", "candle/Data/Images/Normal/0002.JPG", "")]
    rows += [("candle", "test", "anomaly", "candle/Data/Images/Anomaly/000.JPG",
              "candle/Data/Masks/Anomaly/000.png")]
    for _, _, _, image, mask_path in rows:
        _write(tmp_path / image, img)
        if mask_path:
            _write(tmp_path / mask_path, mask)
    (tmp_path / "split_csv").mkdir()
    with open(tmp_path / "split_csv" / "1cls.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    (candle,) = load_dataset(tmp_path, "visa")
    assert candle.name == "candle" and len(candle.train_good) == 2
    labels = {s.image.name: (s.label, s.defect) for s in candle.test}
    assert labels == {"0002.JPG": (0, "good"), "000.JPG": (1, "anomaly")}
    anomalous = next(s for s in candle.test if s.label)
    assert read_mask(anomalous, (40, 60)).sum() == 200
    assert read_mask(anomalous, (20, 30)).shape == (20, 30)


def test_eval_size_keeps_the_aspect(synth_root):
    image = read_rgb(synth_root / "metal" / "train" / "good" / "000.png", 48)
    assert image.shape == (32, 48, 3)
    assert resize_longest(np.zeros((10, 20), bool).view(np.uint8), 0).shape == (10, 20)
    assert pick_shots(list(range(10)), 3) == [0, 4, 9]
    assert pick_shots(list(range(3)), 8) == [0, 1, 2]


def test_ablation_variants_change_one_thing_and_are_valid_configs():
    base = Config().refiner
    stages = ablation_variants("cps-stages", base)
    assert [v.name for v in stages] == ["coarse", "only points", "points+logit1", "points+box+logit2"]
    assert stages[0].refiner.method == "none"
    assert [(v.refiner.stage2_logits, v.refiner.stage3_box) for v in stages[1:]] == \
        [(False, False), (True, False), (True, True)]
    # the full cascade with the default config is the pipeline itself: computed once
    assert stages[-1].key == Variant(PIPELINE, base).key
    dilation = ablation_variants("dilation", base)
    assert len({v.key for v in dilation}) == 9
    cfg = Config()
    for v in dilation:   # the config's own validation accepts every variant (odd sizes)
        set_value(cfg, "refiner.dilation_size", v.refiner.dilation_size)
        set_value(cfg, "refiner.dilation_shape", v.refiner.dilation_shape)
    assert base.dilation_size == 25 and base.method == "cps"     # the base was not modified


@pytest.mark.slow   # an eval run over a generated folder tree
def test_folders_layout_keeps_references_out_of_the_test_and_counts_verdicts(tmp_path, capsys):
    """A line's own folder tree: good/, one defect kind with masks, one without."""
    import json

    from clipsam_ros.cli.main import main
    from clipsam_ros.config import config_path
    from clipsam_ros.data.synth import make_sample

    root = tmp_path / "line"
    for kind, defect, seeds in (("good", None, range(5)), ("stain", "stain", range(2)),
                                ("scratch", "scratch", range(1))):
        (root / kind).mkdir(parents=True)
        for seed in seeds:
            image, mask = make_sample("metal", defect, seed=seed, size=(160, 120))
            cv2.imwrite(str(root / kind / f"{seed:03d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if kind == "stain":
                (root / "masks" / kind).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "masks" / kind / f"{seed:03d}_mask.png"), mask)
    data = load_dataset(root, "folders")[0]
    assert len(data.train_good) == 5 and [s.pixel_truth for s in data.test if s.label] == [False, True, True]
    out = tmp_path / "report"
    rc = main(["eval", "--root", str(root), "--layout", "folders", "--shots", "2", "--worst", "0",
               "--config", str(config_path("offline.yaml")), "--set", "localizer.backbone=efficientnet_lite0",
               "--set", "refiner.method=none", "--report", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["images"]["line"] == 3 + 3                        # 5 good - 2 references, 3 defective
    confusion = report["confusion"]["line"]
    assert sum(confusion["good"].values()) == 3 and sum(confusion["defect"].values()) == 3
    assert 0.0 <= report["classes"]["line"]["image_auroc"] <= 1.0
    assert report["classes"]["line"]["pixel_auroc"] is not None       # the stain masks give pixel metrics
