"""Speed switches (issue 6): each must leave the answers as they were.

On the CPU: sdpa attention equals SAM's / TinyViT's own, channels-last and
torch.compile leave encoder outputs equal, `run_encoders` runs each encoder once,
and `Inspector.warm_up` leaves no trace a real frame could see. The CUDA tests at
the end (bf16 + streams + pinned + channels-last against fp32) are skipped without
a GPU; none was available where this file was written, so they have not run yet.
"""
from __future__ import annotations

import copy
import dataclasses
from functools import partial

import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from clipsam_ros.data.synth import generate_dataset, make_sample
from clipsam_ros.eval.metrics import iou
from clipsam_ros.inspector import Inspector
from clipsam_ros.localize import build_localizer
from clipsam_ros.models.accel import (
    AccelSettings,
    HostStager,
    SdpaSamAttention,
    channels_last_input,
    maybe_compile,
    run_encoders,
    to_channels_last,
    use_sdpa,
)
from clipsam_ros.models.sam import SamModel

CPU = torch.device("cpu")
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_sam(seed: int = 0) -> Sam:
    """A small SAM: a 3-block ViT (windowed with padding, then global) with random rel-pos tables."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(img_size=64, patch_size=8, embed_dim=32, depth=3, num_heads=4, mlp_ratio=2.0,
                              out_chans=16, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                              use_rel_pos=True, window_size=3, global_attn_indexes=(2,))
    for name, p in encoder.named_parameters():
        if "rel_pos" in name:              # segment_anything zero-inits them: make the bias matter
            torch.nn.init.normal_(p, std=0.5)
    return Sam(image_encoder=encoder,
               prompt_encoder=PromptEncoder(embed_dim=16, image_embedding_size=(8, 8), input_image_size=(64, 64),
                                            mask_in_chans=4),
               mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=16, iou_head_depth=2,
                                        iou_head_hidden_dim=16,
                                        transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32,
                                                                      num_heads=2))).eval()


def frame(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


# ---------------------------------------------------------------- sdpa

def test_sdpa_matches_sam_vit_attention_with_rel_pos():
    encoder = tiny_sam().image_encoder
    fast = copy.deepcopy(encoder)
    assert use_sdpa(fast) == 3 and all(type(b.attn) is SdpaSamAttention for b in fast.blocks)
    assert use_sdpa(fast) == 0                                    # idempotent
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want, got = encoder(x), fast(x)
        # the bias is large enough that dropping it would show
        no_bias = copy.deepcopy(fast)
        for block in no_bias.blocks:
            block.attn.use_rel_pos = False
        assert (no_bias(x) - want).abs().max() > 1e-2
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    assert fast.state_dict().keys() == encoder.state_dict().keys()
    assert use_sdpa(fast, enabled=False) == 3 and type(fast.blocks[0].attn) is type(encoder.blocks[0].attn)


@pytest.fixture(scope="module")
def tiny_vit(lite_sam):
    """LiteMedSAM's TinyViT encoder with its own attention (the session SAM may have sdpa on)."""
    encoder = copy.deepcopy(lite_sam.sam.image_encoder)
    use_sdpa(encoder, enabled=False)
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        return encoder, x, encoder(x)


def test_sdpa_matches_tiny_vit_attention(tiny_vit):
    encoder, x, want = tiny_vit
    fast = copy.deepcopy(encoder)
    attention = [m for m in encoder.modules() if type(m).__name__ == "Attention"]
    assert use_sdpa(fast) == len(attention) > 0
    with torch.no_grad():
        # one block alone first: its bias table is non-zero, so this compares more than softmax(QK^T)
        a, b = attention[0], [m for m in fast.modules() if type(m).__name__.endswith("Attention")][0]
        assert a.ab.abs().max() > 0
        tokens = torch.randn(3, a.attention_bias_idxs.shape[0], a.qkv.in_features)
        assert torch.allclose(b(tokens), a(tokens), atol=1e-5, rtol=1e-5)
        got = fast(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_channels_last_leaves_encoder_outputs_equal(tiny_vit):
    # applied on the CPU here; the config applies it on cuda only
    encoder, x, want = tiny_vit
    fast = to_channels_last(copy.deepcopy(encoder))
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in fast.parameters())
    with torch.no_grad():
        got = fast(channels_last_input(x, True))
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), (got - want).abs().max()


def test_sam_model_with_every_switch_gives_the_plain_embedding():
    """SamModel with sdpa + channels-last + compile (on the CPU) against the plain one."""
    sam = tiny_sam()
    plain = SamModel(copy.deepcopy(sam), "tiny", CPU)
    fast = SamModel(copy.deepcopy(sam), "tiny", CPU,
                    accel=AccelSettings(sdpa=True, channels_last=True, compile=True))
    image = frame()
    want = plain.encode(image).features
    got = fast.encode(image)
    assert got.features.is_contiguous() and fast.encoder_calls == 1 and fast.images_encoded == 1
    assert torch.allclose(got.features, want, atol=1e-5, rtol=1e-5)
    # the compiled encoder is a separate handle: the network and its state dict keep their names
    assert fast.encoder_net.module is not fast.sam.image_encoder
    assert fast.sam.state_dict().keys() == plain.sam.state_dict().keys()


def test_clip_encoder_compiled_and_channels_last_gives_the_same_features():
    """ClipEncoder's one-pass forward (vv path) compiled, on a tiny random open_clip ViT."""
    import open_clip

    from clipsam_ros.models.clip import ClipEncoder

    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=32, vision_cfg={"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
                           text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2,
                                     "layers": 2}).eval()
    geometry = dict(model_name="tiny", image_size=64, layers=[1, 2], mean=(0.5,) * 3, std=(0.25,) * 3, device=CPU)
    plain = ClipEncoder(model, None, **geometry)
    want = plain.encode_image(frame())
    fast = ClipEncoder(model, None, **geometry, accel=AccelSettings(compile=True, channels_last=True))
    got = fast.encode_image(frame())
    assert fast.calls == 1 and fast._compiled_forward != fast._forward
    for a, b in zip(want.patch_tokens + [want.image_embedding], got.patch_tokens + [got.image_embedding]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def test_maybe_compile_off_is_the_same_callable():
    module = torch.nn.Linear(2, 2)
    assert maybe_compile(module, False) is module


def test_accel_settings_from_config(offline_cfg):
    cfg = copy.deepcopy(offline_cfg)
    on_cpu = AccelSettings.from_config(cfg, CPU)
    assert on_cpu == AccelSettings(sdpa=True, channels_last=True)   # the GPU-only switches stay off
    cfg.compile, cfg.runtime.sdpa, cfg.runtime.channels_last = True, False, False
    assert AccelSettings.from_config(cfg, CPU) == AccelSettings(compile=True)
    on_gpu = AccelSettings.from_config(offline_cfg, torch.device("cuda"))   # no GPU needed to decide
    assert on_gpu == AccelSettings(sdpa=True, channels_last=True, pinned_memory=True, cuda_streams=True)


def test_host_stager_off_cuda_is_a_plain_copy():
    stager = HostStager(CPU, pinned=True)
    assert not stager.pinned                                      # pin_memory needs CUDA
    image = frame()
    assert torch.equal(stager.to_device(image), torch.from_numpy(image))


# ---------------------------------------------------------------- run_encoders

def test_run_encoders_on_cpu_runs_each_once_in_turn():
    order: list[str] = []

    def clip():
        order.append("clip")
        return torch.ones(2)

    def sam():
        order.append("sam")
        return [torch.zeros(3)]

    run = run_encoders(clip, sam, CPU, streams=True)              # streams ask for cuda: sequential here
    assert order == ["clip", "sam"] and not run.overlapped
    assert torch.equal(run.clip, torch.ones(2)) and torch.equal(run.sam[0], torch.zeros(3))
    assert run.clip_ms >= 0 and run.sam_ms >= 0 and run.wall_ms >= run.clip_ms + run.sam_ms - 1e-3
    alone = run_encoders(None, sam, CPU)
    assert alone.clip is None and alone.clip_ms is None and order == ["clip", "sam", "sam"]


# ---------------------------------------------------------------- warm-up

@pytest.fixture(scope="module")
def reference_cfg(offline_cfg, lite_sam, tmp_path_factory):
    """The offline profile with a saved bank of good metal parts: later inspectors load it cheaply.
    On SAM cells (`backbone: sam`): these tests wrap the localizer, and the warm-up is the subject."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, n=3, seed=0, classes=["metal"])
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.backbone = "sam"
    cfg.localizer.reference_dir = str(root / "metal" / "train" / "good")
    cfg.localizer.bank = str(tmp_path_factory.mktemp("bank") / "metal.safetensors")
    build_localizer(cfg, lite_sam, CPU, progress=False)
    return cfg


@dataclasses.dataclass
class CountingLocalizer:
    """Forwards to the real localizer and counts frames (a spy: the localizer itself runs)."""

    inner: object
    calls: int = 0
    peaks: list = dataclasses.field(default_factory=list)

    @property
    def encoder(self):
        return self.inner.encoder

    @property
    def backbone(self):
        return self.inner.backbone

    def __call__(self, clip, sam, size, **frame):
        self.calls += 1
        estimate = self.inner(clip, sam, size, **frame)
        self.peaks.append(float(estimate.anomaly_map.max()))
        return estimate


def fresh_inspector(cfg, sam) -> Inspector:
    return Inspector(cfg, sam, build_localizer(cfg, sam, CPU, progress=False), CPU)


@pytest.mark.slow   # whole warm-up frames through the real models
def test_warm_up_runs_frames_that_count_nowhere(reference_cfg, lite_sam):
    cold, warm = fresh_inspector(reference_cfg, lite_sam), fresh_inspector(reference_cfg, lite_sam)
    spy = warm.localizer = CountingLocalizer(warm.localizer)
    passes, images = lite_sam.encoder_calls, lite_sam.images_encoded
    seconds = warm.warm_up(frames=2)
    assert seconds > 0 and spy.calls == 2
    # a part with a defect: the map crosses the threshold, so the prompt decoder ran too
    assert min(spy.peaks) > reference_cfg.refiner.threshold
    assert warm.frames == 0 and (lite_sam.encoder_calls, lite_sam.images_encoded) == (passes, images)
    assert warm.warm_up(frames=0) == 0.0 and spy.calls == 2

    image, _ = make_sample("metal", "scratch", seed=4)
    a, b = cold.inspect(image), warm.inspect(image)
    assert b.verdict == a.verdict != "error"
    assert b.encoder_calls == a.encoder_calls == {"sam": 1, "clip": 0}
    for field in ("mask", "anomaly_map", "pixel_scores"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert a.score == b.score and [d.bbox for d in a.defects] == [d.bbox for d in b.defects]
    assert warm.frames == cold.frames == 1


def test_warm_up_batch_runs_the_batch_shape(reference_cfg, lite_sam, monkeypatch):
    inspector = fresh_inspector(reference_cfg, lite_sam)
    inspector.cfg = dataclasses.replace(reference_cfg, runtime=dataclasses.replace(reference_cfg.runtime,
                                                                                   warmup_frames=1))
    spy = inspector.localizer = CountingLocalizer(inspector.localizer)
    passes = lite_sam.encoder_calls
    batches: list[int] = []
    real = lite_sam.encode_batch
    # a spy on the real encoder: it records the batch size and encodes
    monkeypatch.setattr(lite_sam, "encode_batch", lambda images: (batches.append(len(images)), real(images))[1])
    inspector.warm_up(batch=2, size=(240, 320))                   # frames from runtime.warmup_frames
    assert batches == [2] and spy.calls == 2
    assert inspector.frames == 0 and lite_sam.encoder_calls == passes


# ---------------------------------------------------------------- CUDA (skipped without a GPU)

def _gpu_inspector(cfg, fast: bool) -> Inspector:
    cfg = copy.deepcopy(cfg)
    cfg.device = "cuda"
    cfg.precision = "bf16" if fast else "fp32"
    cfg.runtime = dataclasses.replace(cfg.runtime, sdpa=fast, channels_last=fast, pinned_memory=fast,
                                      cuda_streams=fast)
    # one positive point: on a flat map the second and third spaced maxima move with the
    # precision's differences (see test_backend_networks' CLIP localizer test); these check the encoders
    cfg.refiner = dataclasses.replace(cfg.refiner, num_positive=1)
    return Inspector.from_config(cfg, progress=False)


@cuda_only
def test_gpu_bf16_fast_path_masks_match_fp32(reference_cfg):
    """bf16 + sdpa + channels-last + pinned copies on the reference profile (SAM only)."""
    plain, fast = _gpu_inspector(reference_cfg, False), _gpu_inspector(reference_cfg, True)
    fast.warm_up(frames=1)
    image, _ = make_sample("metal", "stain", seed=5)
    a, b = plain.inspect(image), fast.inspect(image)
    assert a.verdict == b.verdict == "fail"
    assert iou(a.mask, b.mask) > 0.99


@cuda_only
def test_gpu_streams_overlap_clip_and_sam_with_the_same_answer(offline_cfg):
    """CLIP and SAM on two streams (random-init ViT-B-32: nothing to fetch), bf16 and every switch on."""
    cfg = copy.deepcopy(offline_cfg)
    cfg.localizer.method = "clip_zero_shot"
    cfg.clip.model, cfg.clip.pretrained, cfg.clip.image_size, cfg.clip.layers = "ViT-B-32", "none", 224, [6, 12]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = _gpu_inspector(cfg, False)
        torch.manual_seed(0)
        fast = _gpu_inspector(cfg, True)
    image, _ = make_sample("metal", "stain", seed=5)
    for _ in range(2):                                            # the second frame reuses the pinned buffers
        a, b = plain.inspect(image), fast.inspect(image)
        assert b.verdict != "error", b.error
        assert b.encoder_calls == a.encoder_calls == {"sam": 1, "clip": 1}
        assert "encoders" in b.timings_ms and "encoders" not in a.timings_ms
        assert b.timings_ms["encoders"] <= b.timings_ms["total"]
        assert iou(a.mask, b.mask) > 0.99
    results = fast.inspect_batch([image, image])
    assert [r.encoder_calls for r in results] == [{"sam": 1, "clip": 1}] * 2
    assert iou(results[0].mask, a.mask) > 0.99


@cuda_only
def test_gpu_pinned_buffer_reuse_keeps_each_copy():
    stager = HostStager(torch.device("cuda"), pinned=True)
    first, second = frame(seed=1), frame(seed=2)
    a, b = stager.to_device(first), stager.to_device(second)     # same shape: the same pinned buffer
    assert a.is_cuda and torch.equal(a.cpu(), torch.from_numpy(first))
    assert torch.equal(b.cpu(), torch.from_numpy(second))
