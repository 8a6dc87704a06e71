"""The ImageNet backbone (real EfficientNet-Lite weights) and the reference bank on it."""
from __future__ import annotations

import copy
from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
import torch
from conftest import rewrite_metadata

from clipsam_ros.data.synth import make_sample
from clipsam_ros.inspector import Inspector
from clipsam_ros.localize import build_localizer
from clipsam_ros.localize.reference import BankError, grid_to_frame, load_bank, map_to_frame, onto_finest
from clipsam_ros.models.backbone import BackboneModel, load_network, same_padding_shift, weight_file
from clipsam_ros.models.weights import WeightError

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def lite0():
    return BackboneModel("efficientnet_lite0", CPU)


def grace_hopper():
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_the_weights_are_real_imagenet_weights(lite0):
    assert int(lite0.classify(grace_hopper()).argmax()) == 652          # "military uniform"


@pytest.mark.slow
def test_lite2_classifies_as_its_weights_were_trained():
    # with timm's symmetric padding (not the weights' TensorFlow "SAME") lite2 said "bow tie"
    assert int(BackboneModel("efficientnet_lite2", CPU).classify(grace_hopper()).argmax()) == 652


def test_each_feature_level_sits_on_its_own_cells(lite0):
    """A dark dot on a grey frame: the centroid of each level's response, placed at its cells'
    centres, lies on the dot. Symmetric padding put it 7 px (stride 8) and 13 px (stride 16)
    down-right of the dot, and every anomaly map with it."""
    size = lite0.size
    grey = np.full((size, size, 3), 128, np.uint8)
    blank = lite0.encode(grey).levels
    for y, x in [(60, 150), (120, 90), (170, 170)]:
        frame = grey.copy()
        frame[y - 3:y + 4, x - 3:x + 4] = 0
        for level, base in zip(lite0.encode(frame).levels, blank):
            response = (level - base).norm(dim=1)[0].numpy()
            stride = size / response.shape[1]
            weight = np.clip(response - 0.2 * response.max(), 0, None)
            rows, cols = np.mgrid[:response.shape[0], :response.shape[1]]
            cy = ((weight * rows).sum() / weight.sum() + 0.5) * stride
            cx = ((weight * cols).sum() / weight.sum() + 0.5) * stride
            assert abs(cx - (x + 0.5)) < 4 and abs(cy - (y + 0.5)) < 4, (stride, cx, cy, x, y)


@pytest.mark.parametrize("size", [300, 260])
def test_cells_reaching_past_the_input_are_placed_where_they_lie(size):
    """Sizes the stride does not divide: "SAME" padding makes ceil(S/8) cells that start 4 px
    before the input. Squeezed over the input, a dot near the first corner came out ~4-5 px
    off; placed where the cells lie, within 1.5 px at both corners."""
    net = BackboneModel("efficientnet_lite0", CPU, size=size)
    grey = np.full((size, size, 3), 128, np.uint8)
    base = net.encode(grey).levels[0]
    rows, cols = np.mgrid[:size, :size]
    for centre in (24, size - 24):
        frame = grey.copy()
        frame[centre - 3:centre + 4, centre - 3:centre + 4] = 0
        features = net.encode(frame)
        response = (features.levels[0] - base).norm(dim=1)[0].numpy()
        response = np.clip(response - 0.2 * response.max(), 0, None)
        placed = map_to_frame(response, features, None, 0.0, (size, size))
        cy, cx = (placed * rows).sum() / placed.sum(), (placed * cols).sum() / placed.sum()
        assert abs(cy - centre) < 1.5 and abs(cx - centre) < 1.5, (centre, cy, cx)
        if centre == 24:
            squeezed = grid_to_frame(response, None, 0.0, (size, size))
            assert (squeezed * rows).sum() / squeezed.sum() > centre + 3        # the old placement


def test_the_coarser_level_is_resampled_where_its_cells_lie():
    """At 260 px stride 8 starts 4 px before the input and stride 16 12 px: upsampled as if the
    two spanned the same pixels, a dot's stride-16 response sat ~half a fine cell further on
    than at 448 px, where the cells nest; resampled at the fine cells' centres, as at 448."""

    def offset(size: int) -> float:
        net = BackboneModel("efficientnet_lite0", CPU, size=size)
        grey = np.full((size, size, 3), 128, np.uint8)
        base = net.encode(grey).levels
        gaps = []
        for centre in (size // 2 - 20, size // 2 + 17):
            frame = grey.copy()
            frame[centre - 3:centre + 4, centre - 3:centre + 4] = 0
            features = net.encode(frame)
            fine, coarse = [(level - b).norm(dim=1, keepdim=True) for level, b in zip(features.levels, base)]
            gaps.append(np.subtract(centroid(onto_finest(coarse, features, 1)), centroid(fine)))
        return float(np.mean(gaps))

    def centroid(response: torch.Tensor) -> tuple[float, float]:
        r = response[0, 0].numpy()
        r = np.clip(r - 0.2 * r.max(), 0, None)
        rows, cols = np.mgrid[:r.shape[0], :r.shape[1]]
        return (r * rows).sum() / r.sum(), (r * cols).sum() / r.sum()

    assert abs(offset(260) - offset(448)) < 0.15


def test_the_padding_shift_follows_the_odd_sizes():
    assert same_padding_shift(448, 16) == 0 and same_padding_shift(224, 8) == 0
    assert same_padding_shift(300, 8) == 4 and same_padding_shift(300, 16) == 4       # 300 150 75 38 19
    assert same_padding_shift(260, 16) == 12                                           # 260 130 65 33 17
    assert same_padding_shift(250, 8) == 6                                              # 250 125 63 32


def test_features_are_stride_8_and_16_and_a_batch_is_one_pass(lite0):
    a, _ = make_sample("metal", None, seed=0)
    b, _ = make_sample("metal", "stain", seed=1)
    passes, images = lite0.encoder_calls, lite0.images_encoded
    both = lite0.encode_batch([a, b])
    assert lite0.encoder_calls - passes == 1 and lite0.images_encoded - images == 2
    assert [tuple(level.shape[-2:]) for level in both[0].levels] == [(28, 28), (14, 14)]
    alone = lite0.encode(b)
    assert torch.allclose(alone.levels[1], both[1].levels[1], atol=1e-4)


def test_a_damaged_weight_file_is_one_line_naming_the_key_and_fix(tmp_path):
    bad = tmp_path / "efficientnet-lite0.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightError, match=r"localizer\.backbone=efficientnet_lite0.*reinstall") as info:
        load_network("efficientnet_lite0", bad)
    assert "\n" not in str(info.value)
    # lite1's weights into lite0's network: the shape-for-shape mapping refuses them
    with pytest.raises(WeightError, match="not efficientnet_lite0 ImageNet weights"):
        load_network("efficientnet_lite0", weight_file("efficientnet_lite1"))


@pytest.fixture(scope="module")
def metal_inspector(offline_cfg, lite_sam, tmp_path_factory):
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.backbone, cfg.localizer.coreset_ratio = "efficientnet_lite0", 0.25
    cfg.localizer.bank = str(tmp_path_factory.mktemp("bank") / "metal.safetensors")
    goods = [make_sample("metal", None, seed=s)[0] for s in range(3)]
    localizer = build_localizer(cfg, lite_sam, CPU, progress=False, references=goods)
    return Inspector(cfg, lite_sam, localizer, CPU)


def test_the_backbone_runs_once_per_frame_and_is_counted(metal_inspector):
    image, _ = make_sample("metal", "stain", seed=5)
    result = metal_inspector.inspect(image)
    assert result.encoder_calls == {"sam": 1, "clip": 0, "backbone": 1} and "backbone" in result.timings_ms
    passes = metal_inspector.backbone.encoder_calls
    batch = metal_inspector.inspect_batch([image, image])
    assert metal_inspector.backbone.encoder_calls - passes == 1
    assert [r.encoder_calls["backbone"] for r in batch] == [1, 1]
    assert batch[0].verdict == batch[1].verdict == result.verdict
    # a bad frame in a batch: an error with the same keys, no pass counted for it
    mixed = metal_inspector.inspect_batch([image, image[:0]])
    assert mixed[1].verdict == "error" and mixed[1].encoder_calls == {"sam": 0, "clip": 0, "backbone": 0}
    assert mixed[0].encoder_calls == {"sam": 1, "clip": 0, "backbone": 1}


def test_a_stain_scores_above_good_parts(metal_inspector):
    stain, _ = make_sample("metal", "stain", seed=7)
    good, _ = make_sample("metal", None, seed=8)
    assert metal_inspector.inspect(stain).image_score > metal_inspector.inspect(good).image_score


def test_the_unclipped_map_keeps_where_a_defect_peaks(metal_inspector):
    stain, truth = make_sample("metal", "stain", seed=7)
    estimate = metal_inspector.analyse(stain).estimate
    clipped, unclipped = estimate.anomaly_map, estimate.unclipped
    assert unclipped is not None and unclipped.shape == clipped.shape
    # clipping before smoothing can only lower a pixel
    assert (unclipped >= clipped - 1e-5).all() and clipped.max() <= 1.0
    # where the clipped map is a flat plateau at 1, the unclipped one still has its peak, on the stain
    assert unclipped.max() > 1.5
    y, x = np.unravel_index(int(unclipped.argmax()), unclipped.shape)
    assert truth[y, x] > 0


def test_the_refiner_boxes_the_peak_of_the_unclipped_map_it_is_handed(metal_inspector):
    stain, _ = make_sample("metal", "stain", seed=7)
    analysis = metal_inspector.analyse(stain)
    prompts = metal_inspector.conclude(analysis).refinement.prompts
    share, unclipped = metal_inspector.cfg.refiner.box_peak_share, analysis.estimate.unclipped
    assert share > 0 and prompts
    for p in prompts:
        assert np.array_equal(p.core, p.region & (unclipped >= share * unclipped[p.region].max()))
    # the clipped map's own peak (flat at 1) would be wider: the unclipped map reached the refiner
    assert any(p.core.sum() < (p.region & (analysis.estimate.anomaly_map >= share)).sum() for p in prompts)


def test_a_bank_built_with_another_backbone_is_refused(metal_inspector, offline_cfg, lite_sam, tmp_path):
    from clipsam_ros.localize.reference import save_bank

    path = tmp_path / "bank.safetensors"
    save_bank(metal_inspector.localizer.bank, path)
    layers = f"2,4@{metal_inspector.backbone.size}"
    bank = load_bank(path, "efficientnet_lite0", layers, metal_inspector.cfg.localizer.spatial_radius)
    assert torch.equal(bank.patches, metal_inspector.localizer.bank.patches)
    cfg = copy.deepcopy(metal_inspector.cfg)
    cfg.localizer.bank, cfg.localizer.backbone = str(path), "sam"
    with pytest.raises(BankError, match=r"built with localizer\.backbone=efficientnet_lite0.*delete it"):
        build_localizer(cfg, lite_sam, CPU, progress=False)


def test_a_bank_from_before_the_padding_fix_is_refused(metal_inspector, tmp_path):
    from clipsam_ros.localize.reference import save_bank

    path = tmp_path / "bank.safetensors"
    save_bank(metal_inspector.localizer.bank, path)
    rewrite_metadata(path, padding=None)  # what banks saved before the fix hold
    with pytest.raises(BankError, match=r"localizer\.bank=.*before the backbone's padding fix.*delete it") as info:
        load_bank(path, "efficientnet_lite0", f"2,4@{metal_inspector.backbone.size}",
                  metal_inspector.cfg.localizer.spatial_radius)
    assert "\n" not in str(info.value)


def test_backbone_layers_default_to_stride_8_and_16_and_can_add_stride_4(lite0, offline_cfg):
    from clipsam_ros.config import Config
    from clipsam_ros.localize.reference import backbone_grid, layers_id
    from clipsam_ros.models.backbone import LAYERS, build_backbone

    assert tuple(Config().localizer.backbone_layers) == LAYERS == lite0.layers == (2, 4)
    image, _ = make_sample("metal", "stain", seed=3)
    fine = BackboneModel("efficientnet_lite0", CPU, layers=[1, 2, 4])
    levels = fine.encode(image).levels
    assert [tuple(level.shape[1:]) for level in levels] == [(24, 56, 56), (40, 28, 28), (112, 14, 14)]
    # the stride-8 and stride-16 maps are the default's, the grid is the finest level's
    default = lite0.encode(image).levels
    assert torch.allclose(levels[1], default[0], atol=1e-5) and torch.allclose(levels[2], default[1], atol=1e-5)
    assert tuple(backbone_grid(fine.encode(image)).shape) == (56, 56, 24 + 40 + 112)
    assert layers_id(fine) == "1,2,4@224" and layers_id(lite0) == "2,4@224"
    # exported outputs are named by stride, by block where two share one
    assert fine.export_spec().output_names == ("stride4", "stride8", "stride16")
    spec = BackboneModel("efficientnet_lite0", CPU, layers=(3, 4)).export_spec()
    assert spec.output_names == ("block3", "block4")
    # an export of the symmetrically padded network (before the fix) has another key
    assert spec.config["architecture"] == "tf_efficientnet_lite0"
    # the configured key reaches the model the localizers build
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.backbone, cfg.localizer.backbone_layers = "efficientnet_lite0", [1, 2, 4]
    cfg.runtime.backend = "torch"
    assert build_backbone(cfg, CPU).layers == (1, 2, 4)
    with pytest.raises(ValueError, match=r"localizer\.backbone_layers=\[4, 2\] must list increasing"):
        BackboneModel("efficientnet_lite0", CPU, layers=[4, 2])


def test_a_bank_built_with_other_backbone_layers_is_refused(lite0, tmp_path):
    from clipsam_ros.localize.reference import backbone_grid, build_bank, save_bank

    goods = [make_sample("metal", None, seed=s)[0] for s in range(2)]
    bank = build_bank(goods, lambda image: backbone_grid(lite0.encode(image)), "efficientnet_lite0", "2,4@224", 1,
                      progress=False)
    path = tmp_path / "bank.safetensors"
    save_bank(bank, path)
    with pytest.raises(BankError, match=r"built with localizer\.backbone=efficientnet_lite0 "
                                        r"\(backbone_layers@backbone_size 2,4@224\), not .*1,2,4@224.*delete it"):
        load_bank(path, "efficientnet_lite0", "1,2,4@224", 1)
