"""Inspector end to end on real LiteMedSAM: encoders once per frame, verdicts, fail-safe errors."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clipsam_ros.config import ConfigError
from clipsam_ros.data.synth import generate_dataset, make_sample
from clipsam_ros.eval.metrics import iou
from clipsam_ros.inspector import Inspector
from clipsam_ros.localize import build_localizer
from clipsam_ros.localize.reference import BankError, load_bank


@pytest.fixture(scope="module")
def metal_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=3, seed=0, classes=["metal"])
    return root


@pytest.fixture(scope="module")
def inspector(offline_cfg, lite_sam, metal_root, tmp_path_factory):
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.backbone = "sam"      # the bank on SAM cells: one encoder per frame (test_backbone: the other)
    cfg.localizer.reference_dir = str(metal_root / "metal" / "train" / "good")
    cfg.localizer.bank = str(tmp_path_factory.mktemp("bank") / "metal.safetensors")
    localizer = build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False)
    return Inspector(cfg, lite_sam, localizer, torch.device("cpu"))


def test_sam_encoder_runs_once_per_frame_and_clip_never(inspector):
    image, truth = make_sample("metal", "stain", seed=5)
    before = inspector.sam.encoder_calls
    results = [inspector.inspect(image) for _ in range(2)]
    assert inspector.sam.encoder_calls - before == 2
    for r in results:
        assert r.encoder_calls == {"sam": 1, "clip": 0}
        assert {"sam_encoder", "localize", "ppg", "cps", "fuse", "decide", "total"} <= set(r.timings_ms)
        assert "clip_encoder" not in r.timings_ms


def test_a_stain_fails_with_a_box_on_it(inspector):
    image, truth = make_sample("metal", "stain", seed=5)
    result = inspector.inspect(image)
    assert result.verdict == "fail" and result.reject
    ys, xs = np.nonzero(truth)
    x0, y0, x1, y1 = result.defects[0].bbox
    assert x0 <= xs.mean() <= x1 and y0 <= ys.mean() <= y1      # the top defect is on the stain
    assert result.mask.dtype == np.uint8 and set(np.unique(result.mask)) <= {0, 255}
    assert ((result.mask > 0) & (truth > 0)).sum() > 0.5 * (truth > 0).sum()
    assert result.anomaly_map.shape == truth.shape and 0 <= result.anomaly_map.min() <= result.anomaly_map.max() <= 1
    data = result.to_json()
    assert data["verdict"] == "fail" and data["defects"][0]["area_px"] > 0


def test_a_bad_frame_gets_an_error_verdict_and_the_next_is_inspected(inspector):
    bad = inspector.inspect(np.zeros((48, 64), np.float32))
    assert bad.verdict == "error" and bad.reject and "RGB uint8" in bad.error
    assert bad.mask.shape == (48, 64) and not bad.mask.any()
    image, _ = make_sample("metal", "hole", seed=2)
    assert inspector.inspect(image).verdict in ("pass", "fail")


def test_an_exception_inside_inference_is_contained(inspector):
    real = inspector.localizer

    class Broken:          # a localizer (base.Localizer) that fails like a GPU out of memory
        encoder = backbone = None

        def __call__(self, *args, **kwargs):
            raise RuntimeError("CUDA out of memory (simulated)")

    inspector.localizer = Broken()
    try:
        result = inspector.inspect(make_sample("metal", None, seed=1)[0])
    finally:
        inspector.localizer = real
    assert result.verdict == "error" and "out of memory" in result.error
    assert result.encoder_calls["sam"] == 1                  # it got that far, and it says so


def test_a_map_with_nan_is_an_error_never_a_pass(inspector):
    real = inspector.localizer

    class Overflowing:     # a localizer whose map overflowed (e.g. a reduced precision): NaN everywhere
        encoder, backbone = real.encoder, real.backbone

        def __call__(self, *args, **kwargs):
            estimate = real(*args, **kwargs)
            estimate.anomaly_map = np.full_like(estimate.anomaly_map, np.nan)
            return estimate

    inspector.localizer = Overflowing()
    try:
        result = inspector.inspect(make_sample("metal", None, seed=1)[0])
    finally:
        inspector.localizer = real
    assert result.verdict == "error" and result.reject and "NaN" in result.error


def test_bank_is_saved_and_reloaded_identically(inspector, offline_cfg, lite_sam):
    path = inspector.cfg.localizer.bank
    radius = inspector.cfg.localizer.spatial_radius
    bank = load_bank(path, "sam:lite_medsam", "sam", radius)
    assert torch.equal(bank.patches, inspector.localizer.bank.patches)
    assert bank.normal_distance == pytest.approx(inspector.localizer.bank.normal_distance)
    with pytest.raises(BankError, match="sam.variant"):
        load_bank(path, "sam:vit_h", "sam", radius)
    with pytest.raises(BankError, match="spatial_radius"):
        load_bank(path, "sam:lite_medsam", "sam", radius + 1)
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.bank, cfg.localizer.backbone = path, "sam"   # no reference_dir: the file is enough
    reloaded = build_localizer(cfg, lite_sam, torch.device("cpu"))
    image, _ = make_sample("metal", "scratch", seed=4)
    emb = lite_sam.encode(image)
    a = inspector.localizer(None, emb, image.shape[:2]).anomaly_map
    b = reloaded(None, emb, image.shape[:2]).anomaly_map
    assert np.array_equal(a, b)


def test_a_saved_bank_made_from_other_references_or_coreset_is_refused(inspector, lite_sam, tmp_path):
    """localizer.bank is reused only for what it was built from: the coreset ratio and the images
    in localizer.reference_dir (names and sizes); a bank whose folder is gone still loads."""
    import shutil

    cfg = copy.deepcopy(inspector.cfg)
    cfg.localizer.coreset_ratio = 0.5
    with pytest.raises(BankError, match="localizer.coreset_ratio=1, not 0.5; delete it") as info:
        build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False)
    assert "\n" not in str(info.value)
    cfg = copy.deepcopy(inspector.cfg)
    more = tmp_path / "good"
    shutil.copytree(cfg.localizer.reference_dir, more)
    first = sorted(more.iterdir())[0]
    shutil.copy(first, more / f"extra{first.suffix}")
    cfg.localizer.reference_dir = str(more)
    with pytest.raises(BankError, match="built from other images than localizer.reference_dir"):
        build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False)
    (more / f"extra{first.suffix}").unlink()                         # the same images again: reused
    assert build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False).bank.references
    recaptured = more / first.name                                   # same name, same size, other pixels
    data = bytearray(recaptured.read_bytes())
    data[-100] ^= 0xFF
    recaptured.write_bytes(bytes(data))
    with pytest.raises(BankError, match="built from other images"):
        build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False)
    cfg.localizer.reference_dir = str(tmp_path / "gone")
    assert build_localizer(cfg, lite_sam, torch.device("cpu"), progress=False).bank.normal_distance > 0


def test_reference_without_images_or_bank_is_a_config_error(offline_cfg, lite_sam, tmp_path):
    cfg = copy.deepcopy(offline_cfg)
    with pytest.raises(ConfigError, match="localizer.reference_dir"):
        build_localizer(cfg, lite_sam, torch.device("cpu"))
    cfg.localizer.reference_dir = str(tmp_path)
    with pytest.raises(BankError, match="at least 2 images"):
        build_localizer(cfg, lite_sam, torch.device("cpu"))
    bad = tmp_path / "bank.safetensors"
    bad.write_bytes(b"not a bank")
    cfg.localizer.bank = str(bad)
    with pytest.raises(BankError, match="delete it"):
        build_localizer(cfg, lite_sam, torch.device("cpu"))


@pytest.mark.slow   # a random CLIP ViT-L at 336 px
def test_clip_localizer_encodes_clip_once_per_frame(offline_cfg, lite_sam):
    """The CLIP path with a small random-init CLIP (no weights can be fetched here)."""
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.method = "clip_zero_shot"
    cfg.clip.model, cfg.clip.pretrained, cfg.clip.image_size, cfg.clip.layers = "ViT-B-32", "none", 224, [6, 12]
    localizer = build_localizer(cfg, lite_sam, torch.device("cpu"))
    inspector = Inspector(cfg, lite_sam, localizer, torch.device("cpu"))
    image, _ = make_sample("fabric", "hole", seed=0)
    text_before = localizer.text_encodes
    for _ in range(2):
        result = inspector.inspect(image)
        assert result.verdict != "error", result.error
        assert result.encoder_calls == {"sam": 1, "clip": 1}
        assert "clip_encoder" in result.timings_ms
    assert localizer.text_encodes == text_before              # text embeddings once per process


@pytest.mark.slow   # three frames through the real models
def test_frames_from_several_cameras_are_encoded_together_and_counted(inspector):
    stain, truth = make_sample("metal", "stain", seed=5)
    small_good, _ = make_sample("metal", None, seed=9, size=(320, 240))
    passes, images = inspector.sam.encoder_calls, inspector.sam.images_encoded
    results = inspector.inspect_batch([stain, np.zeros((4, 4), np.float32), small_good])
    # one pass for both good frames, or one per frame where the backend's graph has batch 1
    batched = inspector.sam.encoder_net.max_batch is None
    assert inspector.sam.encoder_calls - passes == (1 if batched else 2) and inspector.sam.images_encoded - images == 2
    assert [r.verdict for r in results] == ["fail", "error", "pass"]
    assert results[0].encoder_calls == {"sam": 1, "clip": 0} and results[2].mask.shape == (240, 320)
    single = inspector.inspect(stain)
    assert iou(single.mask, results[0].mask) > 0.98         # batching does not change the answer
