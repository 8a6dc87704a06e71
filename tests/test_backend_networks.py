"""The localizer backbone (real EfficientNet-Lite0) and the SAM prompt decoder (real LiteMedSAM)
through every backend: torch fp32's numbers, one pass for several cameras, the encoder-once
counts, and the export cached, rebuilt when damaged and refused when it does not match.

Each test exports into a temporary weights cache once per module; speed is measured in
`clipsam-ros bench --backends`.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clipsam_ros.config import set_value
from clipsam_ros.data.synth import make_sample
from clipsam_ros.eval.metrics import iou
from clipsam_ros.models.backends import BACKENDS
from clipsam_ros.models.export import ExportError, check_export, write_export

CPU = torch.device("cpu")
FRAMES = [("metal", "stain", 5), ("metal", None, 9), ("metal", "scratch", 11), ("metal", "hole", 12)]
# float32 reorderings of a 2-core CPU graph vs eager torch; features are O(1..10)
FEATURE_ATOL = 1e-3
LOGIT_ATOL = 1e-3


def _cfg(offline_cfg, cache, backend, **more):
    cfg = copy.deepcopy(offline_cfg)
    for k, v in {"device": "cpu", "weights.cache_dir": str(cache), "runtime.backend": backend,
                 "runtime.warmup_frames": 0, "localizer.backbone": "efficientnet_lite0", **more}.items():
        set_value(cfg, k, v)
    return cfg


def _skip_unless_available(backend):
    why = BACKENDS[backend].unavailable(CPU)
    if why:
        pytest.skip(why)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("weights_cache")


@pytest.fixture(scope="module")
def images():
    return [make_sample(p, k, seed=s)[0] for p, k, s in FRAMES]


@pytest.mark.slow   # builds TinyViT and runs it twice at 256 px (~1 min on a busy 2-core machine)
def test_tinyvit_reads_its_batch_from_the_tensor_with_the_same_numbers():
    """What lets the exported SAM encoder take any batch: PatchMerging's `len(x)` (frozen by the
    tracer) replaced by `x.shape[0]`; the outputs are bit-identical."""
    from clipsam_ros.models.sam import _lite_medsam_sam, batchable_tiny_vit

    torch.manual_seed(0)
    encoder = _lite_medsam_sam().image_encoder.eval()
    original = copy.deepcopy(encoder)
    assert batchable_tiny_vit(encoder) == 3 and batchable_tiny_vit(encoder) == 0      # idempotent
    assert type(encoder.layers[0].downsample).__name__ == "BatchablePatchMerging"
    assert encoder.state_dict().keys() == original.state_dict().keys()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        assert torch.equal(encoder(x), original(x))


# ---------------------------------------------------------------- the localizer backbone

@pytest.mark.slow   # exports and compiles EfficientNet-Lite0 on every backend
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_backbone_gives_torch_fp32s_features_in_one_pass_on_every_backend(offline_cfg, cache, images, backend):
    from clipsam_ros.models.backbone import build_backbone

    _skip_unless_available(backend)
    want = build_backbone(_cfg(offline_cfg, cache, "torch"), CPU).encode_batch(images[:3])
    model = build_backbone(_cfg(offline_cfg, cache, backend), CPU)
    assert model.encoder_net.name == backend and model.encoder_net.max_batch is None
    got = model.encode_batch(images[:3])
    assert (model.encoder_calls, model.images_encoded) == (1, 3)
    for a, b in zip(want, got):
        side = model.size      # offline.yaml's localizer.backbone_size
        assert [tuple(x.shape) for x in b.levels] == [(1, 40, side // 8, side // 8), (1, 112, side // 16, side // 16)]
        for x, y in zip(a.levels, b.levels):
            assert (x - y).abs().max().item() < FEATURE_ATOL
    # one frame through the same free-batch graph
    assert (model.encode(images[1]).levels[1] - got[1].levels[1]).abs().max().item() < FEATURE_ATOL


@pytest.mark.slow   # exports EfficientNet-Lite0
def test_auto_runs_the_backbone_on_openvino_and_a_damaged_export_is_rebuilt_or_refused(offline_cfg, cache,
                                                                                       tmp_path):
    from clipsam_ros.models.backbone import build_backbone

    _skip_unless_available("openvino")
    model = build_backbone(_cfg(offline_cfg, cache, "auto"), CPU)
    assert model.encoder_net.name == "openvino"
    spec = model.export_spec()
    from clipsam_ros.models.export import cache_folder

    folder = cache_folder(spec, str(cache))
    onnx = folder / spec.relative_path
    onnx.write_bytes(onnx.read_bytes()[:-100])                           # truncated in the cache
    assert "does not match its sha256" in check_export(folder, spec)
    build_backbone(_cfg(offline_cfg, cache, "auto"), CPU)                 # rebuilt, not used
    assert check_export(folder, spec) == ""
    # a prepared folder without the backbone (exported for localizer.backbone: sam): one line
    sam_only = tmp_path / "sam_only"
    write_export([], sam_only)
    with pytest.raises(ExportError, match=r"runtime.export_dir: .*has no backbone_efficientnet_lite0") as err:
        build_backbone(_cfg(offline_cfg, cache, "openvino", **{"runtime.export_dir": str(sam_only)}), CPU)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def backbone_reference(offline_cfg, cache, images, tmp_path_factory):
    """torch fp32 with the reference localizer on EfficientNet-Lite0: its bank (saved for the
    other backends) and its results on the frames."""
    from clipsam_ros.inspector import Inspector
    from clipsam_ros.localize.reference import save_bank

    goods = [make_sample("metal", None, seed=s)[0] for s in range(20, 23)]
    cfg = _cfg(offline_cfg, cache, "torch", **{"localizer.coreset_ratio": 0.25})
    inspector = Inspector.from_config(cfg, progress=False, references=goods)
    bank = tmp_path_factory.mktemp("bank") / "bank.safetensors"
    save_bank(inspector.localizer.bank, bank)
    return bank, [inspector.inspect(image) for image in images]


@pytest.mark.slow   # the whole frame on every backend with the backbone localizer
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_a_torch_built_bank_on_every_backend_gives_the_same_masks_verdicts_and_counts(
        offline_cfg, cache, images, backbone_reference, backend):
    from clipsam_ros.inspector import Inspector

    _skip_unless_available(backend)
    bank, want = backbone_reference
    inspector = Inspector.from_config(_cfg(offline_cfg, cache, backend, **{"localizer.bank": str(bank),
                                                                          "localizer.coreset_ratio": 0.25}),
                                      progress=False)
    assert inspector.backbone.encoder_net.name == inspector.sam.decoder_net.name == backend
    got = [inspector.inspect(image) for image in images]
    for r, s in zip(want, got):
        assert s.verdict == r.verdict != "error"
        assert iou(s.mask > 0, r.mask > 0) >= 0.99 if r.mask.any() or s.mask.any() else True, \
            (iou(s.mask > 0, r.mask > 0), np.abs(s.anomaly_map - r.anomaly_map).max())
        assert np.abs(s.anomaly_map - r.anomaly_map).max() < 1e-3
        assert s.encoder_calls == r.encoder_calls == {"sam": 1, "clip": 0, "backbone": 1}
    assert {r.verdict for r in want} == {"pass", "fail"}
    # two cameras: one pass of each network for both frames, counted once per frame
    sam_passes, backbone_passes = inspector.sam.encoder_calls, inspector.backbone.encoder_calls
    batch = inspector.inspect_batch(images[:2])
    assert (inspector.sam.encoder_calls - sam_passes, inspector.backbone.encoder_calls - backbone_passes) == (1, 1)
    assert [r.verdict for r in batch] == [r.verdict for r in want[:2]]
    assert all(r.encoder_calls == {"sam": 1, "clip": 0, "backbone": 1} for r in batch)


# ---------------------------------------------------------------- the SAM prompt decoder

def _prompt_sets(rng: np.random.Generator):
    """Prompt sets as the refiners send them: one row, several rows of points, points + boxes
    (CPS stage 3), boxes alone, and rows with a low-res mask prompt (CPS stage 2)."""
    pts = rng.uniform(40, 440, size=(4, 3, 2))
    labels = np.array([[1, 0, -1], [1, 1, 0], [1, -1, -1], [1, 0, 0]])
    boxes = np.array([[60, 60, 300, 260], [200, 100, 420, 380], [10, 10, 120, 90], [100, 150, 250, 300]], float)
    mask = torch.as_tensor(rng.normal(0, 4, size=(4, 1, 256, 256)), dtype=torch.float32)
    return [dict(points=pts[:1, :1], labels=labels[:1, :1]),
            dict(points=pts, labels=labels, multimask=True),
            dict(points=pts, labels=labels, boxes=boxes, every_mask=True),
            dict(boxes=boxes[:2]),
            dict(points=pts[:, :2], labels=labels[:, :2], mask_input=mask)]


@pytest.mark.slow   # exports the decoder on every backend
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_prompt_decoder_gives_torch_fp32s_masks_for_any_rows_and_tokens(offline_cfg, cache, images, backend):
    from clipsam_ros.models.sam import build_sam

    _skip_unless_available(backend)
    ref = build_sam(_cfg(offline_cfg, cache, "torch"), CPU)
    sam = build_sam(_cfg(offline_cfg, cache, backend), CPU)
    assert sam.decoder_net.name == backend
    embedding = ref.encode(images[0])                 # the same embedding into both decoders
    for prompts in _prompt_sets(np.random.default_rng(0)):
        want, got = ref.decode(embedding, **prompts), sam.decode(embedding, **prompts)
        assert got.logits.shape == want.logits.shape
        assert (want.low_res_logits - got.low_res_logits).abs().max().item() < LOGIT_ATOL
        assert (want.iou_scores - got.iou_scores).abs().max().item() < 1e-4
        for a, b in zip(want.logits > 0, got.logits > 0):
            assert iou(a.numpy(), b.numpy()) >= 0.99 if a.any() or b.any() else True
    assert sam.encoder_calls == 0                     # decoding never runs the image encoder


# ---------------------------------------------------------------- the CLIP image encoder

# No CLIP weights can be fetched here (no network): the CLIP path is exported and checked on a
# RANDOMLY INITIALISED open_clip ViT-B-32 at 192 px, the same open_clip ViT code (ClipEncoder's
# vv and residual token paths) the profiles' ViT-L-14-336 runs, at a size a 2-core test affords.
# Both sides are built under one seed, so torch and the backend hold the same random weights.
CLIP_KEYS = {"clip.model": "ViT-B-32", "clip.pretrained": "none", "clip.image_size": 192,
             "clip.layers": [3, 6, 9, 12], "localizer.backbone": "sam"}


@pytest.mark.slow   # exports a random-init CLIP ViT-B-32 twice (both token paths) per backend
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_clip_image_tower_gives_torch_fp32s_tokens_in_one_pass_on_every_backend(offline_cfg, cache, images,
                                                                                      backend):
    from clipsam_ros.models.clip import build_clip, on_backend

    _skip_unless_available(backend)
    cfg = _cfg(offline_cfg, cache, backend, **CLIP_KEYS)
    for token_path in ("vv", "residual"):
        built = []
        for _ in range(2):
            torch.manual_seed(0)
            built.append(build_clip(cfg.clip, CPU, token_path=token_path))
        ref, encoder = built[0], on_backend(built[1], cfg)
        assert encoder.encoder_net.name == backend and encoder.encoder_net.max_batch is None
        want, got = ref.encode_image_batch(images[:3]), encoder.encode_image_batch(images[:3])
        assert (encoder.calls, encoder.images_encoded) == (1, 3)
        for a, b in zip(want, got):
            assert b.grid == a.grid == (6, 6) and len(b.patch_tokens) == 4
            for x, y in zip(a.patch_tokens + [a.image_embedding], b.patch_tokens + [b.image_embedding]):
                assert x.shape == y.shape and (x - y).abs().max().item() < 1e-4


@pytest.mark.slow   # the whole frame with the zero-shot CLIP localizer on every backend
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_the_clip_localizer_on_every_backend_gives_torch_fp32s_maps_verdicts_and_counts(offline_cfg, cache, images,
                                                                                        backend):
    from clipsam_ros.inspector import Inspector

    _skip_unless_available(backend)
    runs = {}
    for name in ("torch", backend):
        torch.manual_seed(0)                  # the same random-init CLIP on both sides
        # one positive point: a random-init CLIP's map is smooth over wide areas, where the second
        # and third spaced maxima lie on a near-flat ridge and move with the backends' 1e-7
        # differences (mask IoU 0.984); extra points on a real map are checked in the bank test above
        inspector = Inspector.from_config(_cfg(offline_cfg, cache, name, **CLIP_KEYS,
                                               **{"localizer.method": "clip_zero_shot",
                                                  "refiner.num_positive": 1}), progress=False)
        runs[name] = [inspector.inspect(image) for image in images]
    assert inspector.clip_encoder.encoder_net.name == backend
    for r, s in zip(runs["torch"], runs[backend]):
        assert s.verdict == r.verdict != "error"
        assert np.abs(s.anomaly_map - r.anomaly_map).max() < 1e-3
        assert iou(s.mask > 0, r.mask > 0) >= 0.99 if r.mask.any() or s.mask.any() else True, \
            (iou(s.mask > 0, r.mask > 0), np.abs(s.anomaly_map - r.anomaly_map).max())
        assert s.encoder_calls == r.encoder_calls == {"sam": 1, "clip": 1}
