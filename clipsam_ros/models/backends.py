"""Runtimes for an exported network: one Protocol, one registry, no if/elif over names.

A `CompiledNet` takes float32 tensors (one per graph input, in order) and returns a torch
tensor on the model's device, or a tuple of them for a graph with several outputs (the
backbone's two feature levels, the decoder's masks and scores). `BACKENDS` maps each
`runtime.backend` name to a `Backend`, which says whether it can run on a device (and why
not, in one line), which precisions it offers there, and how to load an exported ONNX
file. `torch` is not in the registry: it runs the module itself (today's eager path,
channels-last and all) and needs no export.

`resolve_backend` turns `runtime.backend` + `precision` into what runs: `auto` is the
first entry of `AUTO_ORDER` that is installed and offers the precision on the device.
"""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Protocol, Union

import numpy as np
import torch

from ..config import Config
from ..errors import ClipsamError
from .export import ExportSpec, ensure_export


class BackendError(ClipsamError, RuntimeError):
    """A backend that cannot run here or with this precision; one line naming the key and the fix."""


Outputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]


class CompiledNet(Protocol):
    """A compiled network: float32 tensors in, a tensor (or a tuple, several outputs) out on the
    model's device."""

    name: str              # backend name, for reports
    max_batch: int | None  # frames one call takes (axis 0 of the first input); None = any number

    def __call__(self, *inputs: torch.Tensor) -> Outputs: ...


@dataclass(frozen=True)
class Backend:
    name: str
    # "" when it can run on the device, else why not (a phrase)
    unavailable: Callable[[torch.device], str]
    # precisions it computes in on the device, each checked against torch fp32 by
    # tests/test_backends.py (mask IoU >= 0.99, same verdicts): only those are offered
    precisions: Callable[[torch.device], tuple[str, ...]]
    load: Callable[[Path, torch.device, str], CompiledNet]


# ---------------------------------------------------------------- torch (today's path)

class TorchNet:
    """The module itself, eager (or torch.compile'd): channels-last input and autocast as
    the speed switches say. Any batch."""

    name = "torch"
    max_batch = None

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], precision: str, device: torch.device,
                 channels_last: bool):
        self.module, self.precision, self.device, self.channels_last = module, precision, device, channels_last

    def __call__(self, x: torch.Tensor, *rest: torch.Tensor) -> Outputs:
        from .accel import channels_last_input, encoder_autocast

        with encoder_autocast(self.precision, self.device):
            return self.module(channels_last_input(x, self.channels_last), *rest)


# ---------------------------------------------------------------- ONNX Runtime

class OrtNet:
    def __init__(self, path: Path, providers: list, name: str, device: torch.device):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3      # its warnings about unused initialisers are noise
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.name, self.device = name, device
        self.max_batch = _static_batch(self.session.get_inputs()[0].shape)

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        outs = self.session.run(None, {name: _numpy(x) for name, x in zip(self.inputs, inputs)})
        return _torch(outs, self.device)


def _ort_unavailable(device: torch.device) -> str:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    if device.type == "cuda" and "CUDAExecutionProvider" not in _ort_providers():
        return "this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu)"
    return ""


def _ort_load(path: Path, device: torch.device, precision: str) -> CompiledNet:
    providers = (["CUDAExecutionProvider"] if device.type == "cuda" else []) + ["CPUExecutionProvider"]
    return OrtNet(path, providers, "onnxruntime", device)


def _trt_unavailable(device: torch.device) -> str:
    if device.type != "cuda" or not torch.cuda.is_available():
        return "TensorRT needs a CUDA device (set device: cuda on a GPU machine, or another backend)"
    if importlib.util.find_spec("onnxruntime") is None or "TensorrtExecutionProvider" not in _ort_providers():
        return "onnxruntime has no TensorRT execution provider (install onnxruntime-gpu and TensorRT)"
    return ""


def _trt_load(path: Path, device: torch.device, precision: str) -> CompiledNet:
    # engines are built once and cached next to the exported graph, like the export itself
    trt = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(path.parent),
           "trt_fp16_enable": precision == "fp16", "trt_bf16_enable": precision == "bf16"}
    return OrtNet(path, [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"],
                  "tensorrt", device)


@lru_cache(maxsize=1)
def _ort_providers() -> tuple[str, ...]:
    import onnxruntime as ort

    return tuple(ort.get_available_providers())


# ---------------------------------------------------------------- OpenVINO

_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


@lru_cache(maxsize=1)
def _ov_core():
    """One OpenVINO Core for the process, as OpenVINO recommends. Compiling sets an alternate signal
    stack on the calling thread, which a Core restores when it goes; Cores freed in another order
    than made (the encoder's before the decoder's, when a node is cleaned up) left it pointing at
    freed memory, and the next SIGTERM crashed the process (SIGSEGV)."""
    import openvino as ov

    return ov.Core()


class OpenVinoNet:
    def __init__(self, path: Path, precision: str, device: torch.device):
        core = _ov_core()
        model = core.read_model(str(path))
        self.compiled = core.compile_model(model, "CPU", {
            # explicit: OpenVINO's default on a BF16 CPU is bf16, which changes numbers silently
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY",
        })
        self.request = self.compiled.create_infer_request()
        # one request, reused (its buffers stay allocated); a request serves one call at a time, and
        # a model may be shared by several inspectors or threads, like a torch module
        self._lock = threading.Lock()
        self.name, self.device = "openvino", device
        self.max_batch = _static_batch([d.get_length() if d.is_static else None
                                        for d in model.inputs[0].get_partial_shape()])

    def __call__(self, *inputs: torch.Tensor) -> Outputs:
        with self._lock:
            result = self.request.infer({i: _numpy(x) for i, x in enumerate(inputs)})
            # the request reuses its output buffers on the next call: copy them out
            outs = [np.array(result[i], copy=True) for i in range(len(self.compiled.outputs))]
        return _torch(outs, self.device)


def _ov_unavailable(device: torch.device) -> str:
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install openvino)"
    if device.type != "cpu":
        return "this build runs OpenVINO on the CPU only (set device: cpu, or another backend)"
    return ""


def _ov_precisions(device: torch.device) -> tuple[str, ...]:
    # bf16 would be ~1.7x faster on a BF16 CPU, but it does not hold (see REFUSED)
    return ("fp32",)


# ---------------------------------------------------------------- the registry

def _fp32_only(device: torch.device) -> tuple[str, ...]:
    return ("fp32",)


def _gpu_half(device: torch.device) -> tuple[str, ...]:
    return ("fp32", "fp16", "bf16") if device.type == "cuda" else ("fp32",)


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend("onnxruntime", _ort_unavailable, _fp32_only, _ort_load),
    "openvino": Backend("openvino", _ov_unavailable, _ov_precisions,
                        lambda path, device, precision: OpenVinoNet(path, precision, device)),
    "tensorrt": Backend("tensorrt", _trt_unavailable, _gpu_half, _trt_load),
}
# pairs measured and found to change results (benchmarks/backend_equivalence.py, docs/SPEED.md)
REFUSED: dict[tuple[str, str], str] = {
    ("openvino", "bf16"): "measured on synth frames it changes masks (mask IoU below 0.99 vs torch fp32: "
                          "0.90 mean, 0.64 worst, same verdicts 8/8)",
}
TORCH = "torch"
BACKEND_NAMES = ("auto", TORCH, *BACKENDS)
# fastest first, per device type (docs/SPEED.md); torch is the fallback that is always there
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cpu": ("openvino", "onnxruntime"),
    # torch bf16 on CUDA is today's measured path; TensorRT is opt-in until measured on a GPU
    "cuda": (),
}


@dataclass(frozen=True)
class Choice:
    """What runs: a backend name (`torch` or a key of BACKENDS) and its precision."""

    backend: str
    precision: str


def resolve_backend(requested: str, precision: str, device: torch.device) -> Choice:
    """`runtime.backend` + `precision` on `device` -> the backend that runs; one-line errors."""
    device = torch.device(device)
    if requested == TORCH:
        return Choice(TORCH, precision)
    if requested == "auto":
        # torch on the cpu computes fp32 whatever `precision` says (autocast is GPU-only), so
        # there auto looks for the fastest fp32 backend rather than falling back to torch
        wanted = "fp32" if device.type == "cpu" else precision
        for name in AUTO_ORDER.get(device.type, ()):
            backend = BACKENDS[name]
            if not backend.unavailable(device) and wanted in backend.precisions(device):
                return Choice(name, wanted)
        return Choice(TORCH, precision)
    backend = BACKENDS.get(requested)
    if backend is None:
        raise BackendError(f"runtime.backend={requested!r} is unknown; use one of {', '.join(BACKEND_NAMES)}")
    why = backend.unavailable(device)
    if why:
        raise BackendError(f"runtime.backend={requested}: {why}")
    offered = backend.precisions(device)
    if precision not in offered:
        why = REFUSED.get((requested, precision), f"not offered on {device.type} (offered: {', '.join(offered)})")
        raise BackendError(f"precision={precision} with runtime.backend={requested}: {why}; set precision: fp32")
    return Choice(requested, precision)


def load_exported(spec: ExportSpec, choice: Choice, cfg: Config, device: torch.device,
                  precision: str | None = None) -> CompiledNet:
    """`spec`'s network on `choice`'s backend (not torch): exported on first use into the weights
    cache, or taken from `runtime.export_dir` (`ensure_export`), then loaded in `precision`
    (default: the choice's)."""
    path = ensure_export(spec, cfg.runtime.export_dir, cfg.weights.cache_dir)
    return BACKENDS[choice.backend].load(path, device, choice.precision if precision is None else precision)


def run_batched(net: CompiledNet, x: torch.Tensor) -> tuple[Outputs, int]:
    """`net` over the batch `x` in as few calls as its graph allows: (outputs, calls). A graph
    with a fixed batch runs once per frame, and each of those passes is a counted call."""
    step = net.max_batch or len(x)
    chunks = [net(x[i:i + step]) for i in range(0, len(x), step)]
    if len(chunks) == 1:
        return chunks[0], 1
    if isinstance(chunks[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*chunks)), len(chunks)
    return torch.cat(chunks), len(chunks)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())


def _torch(outs: list[np.ndarray], device: torch.device) -> Outputs:
    tensors = tuple(torch.from_numpy(out).to(device) for out in outs)
    return tensors[0] if len(tensors) == 1 else tensors


def _static_batch(shape: list) -> int | None:
    """The batch a graph is fixed to, or None when its first dimension is dynamic."""
    first = shape[0] if shape else None
    # ONNX Runtime names a dynamic dimension ("batch"), OpenVINO's comes here as None
    return first if isinstance(first, int) and first > 0 else None
