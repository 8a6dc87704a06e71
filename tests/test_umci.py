"""UMCI heads and localizer: the interactions go where the design says, checkpoints round-trip, mismatches refused.

The module tests run the real `UmciBlock` on random tokens (no CLIP needed);
the localizer tests use a small random-init ViT-B-32 at 160 px (5x5 grid) built
like the factory builds it, and two prompt templates to keep the text tower cheap.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from clipsam_ros.config import ConfigError, load
from clipsam_ros.data.synth import make_sample
from clipsam_ros.localize import build_heads_clip, build_localizer
from clipsam_ros.localize.clip_adapter import (
    AdapterMismatchError,
    AdapterMissingError,
    adapter_meta,
    head_probabilities,
    make_heads,
    save_adapter,
)
from clipsam_ros.localize.umci import (
    UMCI_FORMAT,
    UmciBlock,
    UmciHeads,
    UmciLocalizer,
    checkpoint_method,
    load_umci,
    make_umci,
    save_umci,
    umci_meta,
)

FEW_TEMPLATES = ("a photo of a {}.", "a cropped photo of the {}.")
CLIP_SETS = ["clip.model=ViT-B-32", "clip.pretrained=none", "clip.image_size=160", "clip.layers=[3,6,9,12]",
             "device=cpu", "localizer.method=umci"]
H, W = 5, 7


@pytest.fixture(scope="module")
def cfg():
    return load(None, CLIP_SETS)


@pytest.fixture(scope="module")
def encoder(cfg):
    return build_heads_clip(cfg, torch.device("cpu"))


@pytest.fixture(scope="module")
def frame():
    return make_sample("metal", "stain", seed=1, size=(240, 180))[0]


@pytest.fixture(scope="module")
def feats(encoder, frame):
    return encoder.encode_image(frame)


def _text(dim: int = 16) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(2, dim), dim=-1)


def _open_only(block: UmciBlock, path: str) -> None:
    with torch.no_grad():
        for name, gate in block.gates.items():
            gate.fill_(1.0 if name == path else 0.0)


def test_untrained_umci_is_the_adapter_head():
    # zero gates: every interaction is closed, only the projection (the adapter's head) remains
    torch.manual_seed(0)
    heads = UmciHeads(width=24, dim=16, n_layers=2)
    linear = torch.nn.ModuleList(block.proj for block in heads.blocks)
    tokens, text = [torch.randn(3, H * W, 24) for _ in range(2)], _text()
    torch.testing.assert_close(heads(tokens, (H, W), text, 0.07), head_probabilities(linear, tokens, text, 0.07))


@pytest.mark.parametrize("path, reach", [
    ("row", lambda y, x: (np.arange(H)[:, None] == y) & np.ones((1, W), bool)),
    ("col", lambda y, x: np.ones((H, 1), bool) & (np.arange(W)[None] == x)),
    ("pixel1", lambda y, x: (np.arange(H)[:, None] == y) & (np.arange(W)[None] == x)),
    ("pixel3", lambda y, x: (abs(np.arange(H)[:, None] - y) <= 1) & (abs(np.arange(W)[None] - x) <= 1)),
])
def test_each_interaction_reaches_its_row_column_or_neighbourhood(path, reach):
    """Change one patch with only one path open: the output moves exactly where that path carries it."""
    torch.manual_seed(1)
    block = UmciBlock(width=24, dim=16)
    _open_only(block, path)
    # the projection's own contribution is per patch: remove it so only the interaction shows
    with torch.no_grad():
        tokens = torch.randn(1, H * W, 24)
        text = _text()
        base = block(tokens, (H, W), text) - block.proj(tokens)
        y, x = 2, 3
        changed = tokens.clone()
        changed[0, y * W + x] += 3.0 * torch.randn(24)
        moved = block(changed, (H, W), text) - block.proj(changed)
    diff = (moved - base).abs().amax(dim=-1).reshape(H, W).numpy() > 1e-6
    np.testing.assert_array_equal(diff, reach(y, x))


def test_gates_learn_from_zero():
    torch.manual_seed(2)
    heads = UmciHeads(width=24, dim=16, n_layers=1)
    probs = heads([torch.randn(2, H * W, 24)], (H, W), _text(), 0.07)
    probs[..., 1].mean().backward()
    gate_grads = [g.grad.abs().sum() for g in heads.blocks[0].gates.values()]
    assert all(float(g) > 0 for g in gate_grads)          # closed gates still receive a gradient


def test_checkpoint_round_trip_gives_identical_maps(encoder, cfg, feats, frame, tmp_path):
    torch.manual_seed(3)
    heads = make_umci(encoder)
    with torch.no_grad():                                  # open the gates: a trained-looking UMCI
        for block in heads.blocks:
            for gate in block.gates.values():
                gate.normal_(0.0, 0.5)
    first = UmciLocalizer(encoder, heads, cfg.localizer, templates=FEW_TEMPLATES)(feats, None, frame.shape[:2])
    path = tmp_path / "umci.safetensors"
    save_umci(path, heads, umci_meta(encoder, heads))
    assert checkpoint_method(path) == "umci"
    loaded = load_umci(path, encoder)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    again = UmciLocalizer(encoder, loaded, cfg.localizer, templates=FEW_TEMPLATES)(feats, None, frame.shape[:2])
    np.testing.assert_array_equal(first.anomaly_map, again.anomaly_map)
    assert first.image_score == again.image_score
    assert first.anomaly_map.shape == frame.shape[:2] and first.anomaly_map.max() - first.anomaly_map.min() > 1e-6
    # the file says what it was trained for
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == UMCI_FORMAT and meta["method"] == "umci"
    assert (meta["clip_model"], meta["image_size"], meta["layers"]) == ("ViT-B-32", "160", "3,6,9,12")


@pytest.mark.parametrize("field, value, key", [("image_size", "224", "clip.image_size"),
                                               ("layers", "6,12", "clip.layers"),
                                               ("clip_model", "ViT-L-14-336", "clip.model")])
def test_umci_checkpoint_for_another_clip_is_refused_in_one_line(encoder, tmp_path, field, value, key):
    heads = make_umci(encoder)
    path = tmp_path / "other.safetensors"
    save_umci(path, heads, umci_meta(encoder, heads) | {field: value})
    with pytest.raises(AdapterMismatchError) as err:
        load_umci(path, encoder)
    message = str(err.value)
    assert key in message and value in message and "\n" not in message


def test_wrong_kind_of_checkpoint_names_the_method(encoder, cfg, tmp_path):
    adapter = tmp_path / "adapter.safetensors"
    save_adapter(adapter, make_heads(encoder), adapter_meta(encoder))
    with pytest.raises(AdapterMismatchError, match="localizer.method=clip_adapter") as err:
        load_umci(adapter, encoder)
    assert "\n" not in str(err.value)
    # the factory says it before building any CLIP
    mixed = copy.deepcopy(cfg)
    mixed.localizer.checkpoint = str(adapter)
    with pytest.raises(ConfigError, match="localizer.method=clip_adapter"):
        build_localizer(mixed, None, torch.device("cpu"))
    with pytest.raises(AdapterMissingError, match="localizer.checkpoint"):
        load_umci(tmp_path / "missing.safetensors", encoder)
    with pytest.raises(AdapterMissingError, match="localizer.checkpoint"):
        load_umci("", encoder)


def test_heads_clip_is_the_same_in_every_build(encoder, cfg):
    # random init (clip.pretrained=none): train and inference must see the same CLIP
    torch.manual_seed(123)                                  # whatever ran before
    before = torch.random.get_rng_state()
    again = build_heads_clip(cfg, torch.device("cpu"))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global RNG is left alone
    for a, b in zip(encoder.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
