"""CLIP encoder and the CLIP localizers, on a small random-init ViT (no weights, no network).

One ViT-B-32 at 192 px (native 224: the positional embedding is interpolated
to a 6x6 grid) is built once for the module and one frame is encoded once per
token path; prompts use two templates so the text tower stays cheap on a CPU.
"""
from __future__ import annotations

import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from torch import nn

from clipsam_ros.config import ClipConfig, LocalizerConfig
from clipsam_ros.localize.clip_adapter import (
    AdapterMismatchError,
    AdapterMissingError,
    ClipAdapterLocalizer,
    adapter_meta,
    load_adapter,
    make_heads,
    save_adapter,
)
from clipsam_ros.localize.clip_zero_shot import ClipZeroShotLocalizer
from clipsam_ros.models.clip import (
    ClipEncoder,
    ClipLoadError,
    _encode_text_trimmed,
    _vv_branch,
    build_clip,
    interpolate_pos_embed,
    set_input_size,
)

MODEL = "ViT-B-32"
SIZE = 192
GRID = 6
N = GRID * GRID
LAYERS = [3, 6, 9, 12]
FEW_TEMPLATES = ("a photo of a {}.", "a cropped photo of the {}.")


@pytest.fixture(scope="module")
def encoder() -> ClipEncoder:
    torch.manual_seed(0)
    return build_clip(ClipConfig(model=MODEL, pretrained="none", image_size=SIZE, layers=LAYERS),
                      torch.device("cpu"))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.integers(60, 120, size=(120, 200, 3), dtype=np.uint8)
    img[40:70, 120:160] = 250     # a bright "defect" so the map has structure
    return img


@pytest.fixture(scope="module")
def residual(encoder) -> ClipEncoder:
    return encoder.with_token_path("residual")


@pytest.fixture(scope="module")
def feats(encoder, frame):
    return encoder.encode_image(frame)


@pytest.fixture(scope="module")
def res_feats(residual, frame):
    return residual.encode_image(frame)


def test_input_size_override_and_token_shapes(encoder, feats):
    assert encoder.grid == (GRID, GRID)
    assert tuple(encoder.visual.image_size) == (SIZE, SIZE)
    assert encoder.visual.positional_embedding.shape == (N + 1, encoder.width)
    assert not any(p.requires_grad for p in encoder.model.parameters())
    assert not encoder.model.training
    assert feats.grid == (GRID, GRID)
    assert len(feats.patch_tokens) == len(LAYERS)
    for tokens in feats.patch_tokens:
        assert tokens.shape == (N, encoder.embed_dim)
        assert torch.isfinite(tokens).all()
    assert feats.image_embedding.shape == (encoder.embed_dim,)


def test_class_embedding_is_the_unchanged_model_output(encoder, frame, feats):
    # the vv path runs beside the original one: the pooled output must be open_clip's own
    with torch.no_grad():
        ref = encoder.model.encode_image(encoder.preprocess([frame]))[0]
    torch.testing.assert_close(feats.image_embedding, ref)


def test_pos_embed_native_size_unchanged_and_matches_open_clip(encoder):
    from open_clip.model import resize_pos_embed

    pos = torch.randn(7 * 7 + 1, 32)
    assert torch.equal(interpolate_pos_embed(pos, (7, 7), (7, 7)), pos)
    visual = copy.deepcopy(encoder.visual)
    before = visual.positional_embedding.detach().clone()
    set_input_size(visual, SIZE)               # already at this size: nothing may move
    assert torch.equal(visual.positional_embedding, before)
    # a real resize agrees with open_clip's loader-side resize; class-token row kept
    new = interpolate_pos_embed(pos, (7, 7), (GRID, GRID))
    state = {"visual.positional_embedding": pos}
    fake = nn.Module()
    fake.visual = nn.Module()
    fake.visual.grid_size = (GRID, GRID)
    resize_pos_embed(state, fake)
    torch.testing.assert_close(new, state["visual.positional_embedding"])
    assert torch.equal(new[0], pos[0])


def test_calls_count_forward_passes(encoder, frame):
    before, images = encoder.calls, encoder.images_encoded
    encoder.encode_image(frame)
    assert encoder.calls == before + 1 and encoder.images_encoded == images + 1
    out = encoder.encode_image_batch([frame, frame[::-1].copy()])
    assert len(out) == 2 and encoder.calls == before + 2 and encoder.images_encoded == images + 3


def test_vv_tokens_differ_from_residual_tokens(encoder, residual, feats, res_feats):
    assert residual.model is encoder.model          # a view, not a second model
    vv, res = feats.patch_tokens, res_feats.patch_tokens
    assert res[0].shape == (N, encoder.width)
    for a, b in zip(vv, res):
        projected = b @ encoder.visual.proj         # the residual path in the same space
        assert not torch.allclose(a, projected, atol=1e-3)


def test_vv_branch_matches_reference_for_both_attention_kinds():
    from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

    torch.manual_seed(1)
    dim, heads = 32, 4
    mha_block = ResidualAttentionBlock(dim, heads).eval()
    custom = CustomResidualAttentionBlock(dim, heads).eval()
    # same weights in both blocks
    custom.ln_1.load_state_dict(mha_block.ln_1.state_dict())
    custom.attn.in_proj_weight.data.copy_(mha_block.attn.in_proj_weight.data)
    custom.attn.in_proj_bias.data.copy_(mha_block.attn.in_proj_bias.data)
    custom.attn.out_proj.load_state_dict(mha_block.attn.out_proj.state_dict())
    x = torch.randn(2, 10, dim)
    with torch.no_grad():
        got_mha, got_custom = _vv_branch(mha_block, x), _vv_branch(custom, x)
        # the textbook formula, head by head
        v = nn.functional.linear(mha_block.ln_1(x), mha_block.attn.in_proj_weight[2 * dim:],
                                 mha_block.attn.in_proj_bias[2 * dim:])
        d = dim // heads
        outs = []
        for h in range(heads):
            vh = v[..., h * d:(h + 1) * d]
            outs.append(torch.softmax(vh @ vh.transpose(1, 2) / d ** 0.5, dim=-1) @ vh)
        ref = mha_block.attn.out_proj(torch.cat(outs, dim=-1))
    torch.testing.assert_close(got_mha, ref)
    torch.testing.assert_close(got_custom, ref)


def test_trimmed_text_encoding_is_exact(encoder):
    tokens = encoder.tokenizer(["a photo of a flawless object.", "damaged object"])
    with torch.no_grad():
        torch.testing.assert_close(_encode_text_trimmed(encoder.model, tokens),
                                   encoder.model.encode_text(tokens), atol=1e-4, rtol=1e-4)


def test_zero_shot_map_and_text_once(encoder, frame, feats):
    cfg = LocalizerConfig(method="clip_zero_shot", sigma=4.0, temperature=0.07)
    loc = ClipZeroShotLocalizer(encoder, cfg, "screw", templates=FEW_TEMPLATES)
    assert loc.encoder is encoder
    assert loc.text.shape == (2, encoder.embed_dim)
    encodes, text_calls = loc.text_encodes, encoder.text_calls
    for _ in range(3):
        est = loc(feats, None, frame.shape[:2])
        amap = est.anomaly_map
        assert amap.shape == frame.shape[:2] and amap.dtype == np.float32
        assert 0.0 <= amap.min() and amap.max() <= 1.0
        assert amap.max() - amap.min() > 1e-6
        assert 0.0 <= est.image_score <= 1.0
    assert loc.text_encodes == encodes == 1
    assert encoder.text_calls == text_calls


def test_adapter_save_load_identical_maps(residual, res_feats, frame, tmp_path):
    cfg = LocalizerConfig(method="clip_adapter", sigma=2.0)
    torch.manual_seed(3)
    heads = make_heads(residual)
    loc = ClipAdapterLocalizer(residual, heads, cfg, templates=FEW_TEMPLATES)
    assert loc.encoder is residual
    feats = res_feats
    first = loc(feats, None, frame.shape[:2])
    assert first.anomaly_map.shape == frame.shape[:2] and first.anomaly_map.dtype == np.float32
    assert first.anomaly_map.max() - first.anomaly_map.min() > 1e-6

    path = tmp_path / "heads.safetensors"
    save_adapter(path, heads, adapter_meta(residual))
    loaded = load_adapter(path, residual)
    again = ClipAdapterLocalizer(residual, loaded, cfg, templates=FEW_TEMPLATES)(feats, None, frame.shape[:2])
    np.testing.assert_array_equal(first.anomaly_map, again.anomaly_map)
    assert first.image_score == again.image_score


@pytest.mark.parametrize("field, value, key", [("image_size", "518", "clip.image_size"),
                                               ("layers", "6,12,18,24", "clip.layers"),
                                               ("clip_model", "ViT-L-14-336", "clip.model")])
def test_adapter_refuses_other_clip(residual, tmp_path, field, value, key):
    meta = adapter_meta(residual) | {field: value}
    path = tmp_path / "other.safetensors"
    save_adapter(path, make_heads(residual), meta)
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(path, residual)
    assert key in str(err.value) and "\n" not in str(err.value)


def test_adapter_refuses_other_layers_encoder(encoder, residual, tmp_path):
    path = tmp_path / "heads.safetensors"
    save_adapter(path, make_heads(residual), adapter_meta(residual))
    fewer = ClipEncoder(encoder.model, encoder.tokenizer, model_name=MODEL, image_size=SIZE, layers=[6, 12],
                        mean=encoder.mean.flatten().tolist(), std=encoder.std.flatten().tolist(),
                        device=encoder.device, token_path="residual")
    with pytest.raises(AdapterMismatchError, match="clip.layers"):
        load_adapter(path, fewer)


def test_adapter_missing_file(encoder, tmp_path):
    with pytest.raises(AdapterMissingError, match="localizer.checkpoint") as err:
        load_adapter(tmp_path / "nope.safetensors", encoder)
    assert "\n" not in str(err.value)
    with pytest.raises(AdapterMissingError, match="localizer.checkpoint"):
        load_adapter("", encoder)


def test_build_clip_missing_local_file(tmp_path):
    cfg = ClipConfig(model=MODEL, pretrained=str(tmp_path / "missing.pt"), image_size=SIZE, layers=LAYERS)
    with pytest.raises(ClipLoadError, match="clip.pretrained") as err:
        build_clip(cfg, torch.device("cpu"))
    assert "\n" not in str(err.value)
    with pytest.raises(ClipLoadError, match="clip.pretrained"):
        build_clip(ClipConfig(model=MODEL, pretrained="none"), torch.device("cpu"),
                   pretrained_file=tmp_path / "missing.safetensors")


def test_build_clip_unobtainable_tag_fails_fast(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(ClipLoadError) as err:
        build_clip(ClipConfig(model=MODEL, pretrained="openai", image_size=SIZE, layers=LAYERS),
                   torch.device("cpu"))
    assert time.monotonic() - start < 20
    message = str(err.value)
    assert "\n" not in message and "openai" in message and "clip.pretrained" in message and "none" in message


def test_build_clip_unknown_tag_and_model():
    with pytest.raises(ClipLoadError, match="clip.pretrained"):
        build_clip(ClipConfig(model=MODEL, pretrained="no-such-tag"), torch.device("cpu"))
    with pytest.raises(ClipLoadError, match="clip.model"):
        build_clip(ClipConfig(model="ViT-Q-99", pretrained="none"), torch.device("cpu"))


def test_build_clip_from_local_file_interpolates_loaded_weights(tmp_path):
    # a tiny registered ViT keeps the checkpoint small; the loading path is the real one
    import json

    import open_clip

    tiny = {"embed_dim": 32,
            "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    (tmp_path / "clipsam-test-tiny.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(tmp_path / "clipsam-test-tiny.json")
    torch.manual_seed(2)
    raw = open_clip.create_model("clipsam-test-tiny", pretrained=None)
    path = tmp_path / "clip.pt"
    torch.save(raw.state_dict(), path)
    pos4 = raw.visual.positional_embedding.detach()
    loaded = build_clip(ClipConfig(model="clipsam-test-tiny", pretrained=str(path), image_size=96, layers=[1, 2]),
                        torch.device("cpu"))
    assert loaded.grid == (6, 6)
    assert torch.equal(loaded.visual.positional_embedding, interpolate_pos_embed(pos4, (4, 4), (6, 6)))
    assert torch.equal(loaded.visual.conv1.weight, raw.visual.conv1.weight)
    assert torch.equal(loaded.model.token_embedding.weight, raw.token_embedding.weight)
    feats = loaded.encode_image(np.zeros((50, 70, 3), np.uint8))
    assert [t.shape for t in feats.patch_tokens] == [(36, 32), (36, 32)]


def test_openai_tag_forces_quick_gelu(monkeypatch):
    import open_clip

    seen = {}

    def fake_create(name, pretrained=None, **kwargs):
        seen.update(kwargs, name=name, pretrained=pretrained)
        raise RuntimeError("offline")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(ClipLoadError, match="openai"):
        build_clip(ClipConfig(model=MODEL, pretrained="openai"), torch.device("cpu"))
    assert seen["pretrained"] == "openai" and seen.get("force_quick_gelu") is True


def test_the_localizer_clip_is_built_alike_wherever_it_is_built():
    """`clipsam-ros export`, training and the localizer all build the CLIP through
    `build_localizer_clip`: seeded, so a random-init tower (the weights' digest names the export)
    is the same whatever was drawn before; the CLIP-free methods get none."""
    from clipsam_ros.config import Config
    from clipsam_ros.localize import build_localizer_clip

    cfg = Config()
    cfg.clip = ClipConfig(model=MODEL, pretrained="none", image_size=SIZE, layers=LAYERS)
    cfg.localizer.method = "clip_zero_shot"
    first = build_localizer_clip(cfg, torch.device("cpu"))
    torch.manual_seed(1234)
    again = build_localizer_clip(cfg, torch.device("cpu"))
    assert first is not None and again is not None and first.token_path == "vv"
    assert first.export_spec().source_sha256 == again.export_spec().source_sha256
    cfg.localizer.method = "umci"
    heads = build_localizer_clip(cfg, torch.device("cpu"))
    assert heads is not None and heads.token_path == "residual"
    cfg.localizer.method = "reference"
    assert build_localizer_clip(cfg, torch.device("cpu")) is None
