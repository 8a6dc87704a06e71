"""Export networks to ONNX once, with a manifest that says exactly what each was made from.

An export is a folder: one sub-folder per network (its graph and any weight side files,
which would collide between graphs in one folder) and `manifest.json` = {format, and per
network: source weights' sha256, the config keys that shape the graph, exporter version,
opset, input/output shapes (a dynamic axis by its name, e.g. "batch"), each file's sha256;
runtime library versions}. A network's identity (`key`) is the sha256 of everything but
the file digests and runtime versions, so a change of weights, variant, speed switch or
exporter version names another cache folder.

`ensure_export` is what the model builders call: a given `runtime.export_dir` (written by
`clipsam-ros export`, possibly several networks) is checked and refused in one line when it
does not match; otherwise the network's own folder in the weights cache is reused when
intact, and (re)built when missing, stale or corrupt; the cache keeps the last three used
exports of each network and removes older ones. Writes go to a temp folder next to
the target and are renamed into place, so a crash never leaves a folder a later start
would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..config import default_cache_dir
from ..errors import ClipsamError
from .weights import sha256_of

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
OPSET = 17
# 2: several networks per folder, one sub-folder each, dynamic axes by name
FORMAT = 2
BATCH = "batch"
# exports of one network kept in the weights cache (different configs or library versions)
KEEP_PER_NETWORK = 3
RECENT_S = 3600.0
_KEY = re.compile(r"[0-9a-f]{16}")


class ExportError(ClipsamError, RuntimeError):
    """An exported folder that cannot be used or written; one line naming the folder and the fix."""


@dataclass(frozen=True)
class ExportSpec:
    """What to export: the module, sample inputs, and what the graph's identity depends on."""

    network: str                    # e.g. "sam_image_encoder_lite_medsam": sub-folder, file stem, manifest key
    module: nn.Module
    sample: torch.Tensor | tuple[torch.Tensor, ...]   # the input(s) the graph is traced with
    source_sha256: str              # of the weight file the module was loaded from
    config: dict[str, Any]          # the config keys that change the graph
    input_names: tuple[str, ...] = ("pixels",)
    output_names: tuple[str, ...] = ("features",)
    # {input or output name: {axis: symbolic name}}: these stay free in the graph (any size)
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def samples(self) -> tuple[torch.Tensor, ...]:
        return self.sample if isinstance(self.sample, tuple) else (self.sample,)

    @property
    def file_name(self) -> str:
        return f"{self.network}.onnx"

    @property
    def relative_path(self) -> str:
        """The graph's path inside an export folder."""
        return f"{self.network}/{self.file_name}"

    def _shape(self, name: str, shape: Sequence[int]) -> list:
        free = self.dynamic_axes.get(name, {})
        return [free.get(axis, int(n)) for axis, n in enumerate(shape)]

    def identity(self) -> dict[str, Any]:
        return {
            "source_sha256": self.source_sha256,
            "config": dict(sorted(self.config.items())),
            "exporter": {"torch": torch.__version__, "onnx": _version("onnx"), "opset": OPSET},
            "inputs": {n: self._shape(n, x.shape) for n, x in zip(self.input_names, self.samples)},
        }

    def key(self) -> str:
        ident = {"format": FORMAT, "network": self.network, **self.identity()}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def batch_axes(spec_inputs: Sequence[str], spec_outputs: Sequence[str], name: str = BATCH) -> dict:
    """Axis 0 of every input and output free, under one name: frames (or rows) in one call."""
    return {n: {0: name} for n in (*spec_inputs, *spec_outputs)}


def cache_folder(spec: ExportSpec, cache_dir: str) -> Path:
    return default_cache_dir(cache_dir) / "exports" / f"{spec.network}-{spec.key()}"


def ensure_export(spec: ExportSpec, export_dir: str = "", cache_dir: str = "") -> Path:
    """The checked ONNX file for `spec`: from `export_dir` if given (refused when it does not
    match), else from the weights cache, exported there first when missing, stale or corrupt."""
    if export_dir:
        folder = Path(export_dir).expanduser()
        problem = check_export(folder, spec)
        if problem:
            raise ExportError(f"runtime.export_dir: {folder}: {problem}; run `clipsam-ros export --out {folder}` "
                              f"with this config, or clear runtime.export_dir to export into the cache")
        return folder / spec.relative_path
    folder = cache_folder(spec, cache_dir)
    with contextlib.suppress(OSError):   # the manifest's mtime is the folder's last use: touched first,
        os.utime(folder / MANIFEST)       # so another process's pruning leaves it alone while it loads
    problem = check_export(folder, spec)
    if problem:
        if folder.exists():
            log.warning("%s: %s; exporting it again", folder, problem)
        write_export([spec], folder)
        with contextlib.suppress(OSError):   # another process pruning at the same time
            prune_cache(folder, spec.network)
    return folder / spec.relative_path


def prune_cache(current: Path, network: str, keep: int = KEEP_PER_NETWORK, now: float | None = None) -> list[Path]:
    """Remove the cache's older exports of `network` beyond the `keep` last used (`current`
    among them), and temp folders a crashed export left; returns what was removed. Each upgrade
    of torch or of the weights names a new folder, and nothing else would ever delete the old
    ones. Nothing used or written within RECENT_S goes: another process may be loading it."""
    now = time.time() if now is None else now

    def last_used(folder: Path) -> float:
        for path in (folder / MANIFEST, folder):
            try:
                return path.stat().st_mtime
            except OSError:
                continue
        return 0.0
    siblings = [p for p in current.parent.glob(f"{network}-*")
                if p.is_dir() and p != current and _KEY.fullmatch(p.name[len(network) + 1:])]
    leftovers = [p for p in current.parent.glob(f".{network}-*.part-*") if p.is_dir()]
    stale = [p for p in sorted(siblings, key=last_used, reverse=True)[max(keep - 1, 0):] + leftovers
             if now - last_used(p) > RECENT_S]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("removed the stale export %s (the %d last used of %s are kept)", folder, keep, network)
    return stale


def check_export(folder: Path, spec: ExportSpec) -> str:
    """'' when `folder` holds an intact export of `spec`, else what is wrong (a phrase)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError) as exc:
        return f"{MANIFEST} is unreadable ({type(exc).__name__})"
    if not isinstance(manifest, dict):
        return f"{MANIFEST} is not an object"
    if manifest.get("format") != FORMAT:
        return f"written in export format {_short(manifest.get('format'))}, this version reads {FORMAT}"
    entry = (manifest.get("networks") or {}).get(spec.network) if isinstance(manifest.get("networks"), dict) \
        else None
    if not isinstance(entry, dict):
        return f"{MANIFEST} has no {spec.network}"
    for name, want in spec.identity().items():
        if entry.get(name) != want:
            return f"{spec.network} exported for another {name} ({_short(entry.get(name))}, need {_short(want)})"
    files = entry.get("files")
    if not isinstance(files, dict) or spec.relative_path not in files:
        return f"{MANIFEST} lists no {spec.relative_path}"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_of(path) != digest:
            return f"{name} does not match its sha256 in {MANIFEST} (changed or truncated)"
    return ""


def write_export(specs: Sequence[ExportSpec], folder: Path) -> dict[str, Any]:
    """Export `specs` into `folder` (replacing what is there) through a temp folder + rename;
    returns the manifest."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.part-", dir=folder.parent))
    except OSError as exc:
        raise ExportError(f"cannot write an export next to {folder} ({exc.strerror or exc}); "
                          f"set weights.cache_dir (or --out) to a writable folder") from None
    try:
        networks = {}
        for spec in specs:
            sub = tmp / spec.network
            sub.mkdir()
            _export_onnx(spec, sub / spec.file_name)
            networks[spec.network] = {
                **spec.identity(),
                "outputs": {n: spec._shape(n, s) for n, s in zip(spec.output_names, _output_shapes(spec))},
                # every file the export wrote (large graphs put their weights in side files)
                "files": {f"{spec.network}/{p.name}": sha256_of(p) for p in sorted(sub.iterdir()) if p.is_file()}}
        manifest = {"format": FORMAT, "networks": networks,
                    "runtimes": {name: _version(name) for name in ("onnxruntime", "openvino")},
                    "clipsam_ros": _version("clipsam_ros")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    log.info("exported %s to %s", ", ".join(s.network for s in specs), folder)
    return manifest


def _export_onnx(spec: ExportSpec, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad(), _mha_fastpath_off():
        # the tracer's notes on Python-side shape arithmetic: checked by the equivalence tests
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, spec.samples, str(path), opset_version=OPSET,
                          input_names=list(spec.input_names), output_names=list(spec.output_names),
                          dynamic_axes=spec.dynamic_axes or None, do_constant_folding=True, dynamo=False)


@contextlib.contextmanager
def _mha_fastpath_off():
    """nn.MultiheadAttention's inference fast path (CLIP's blocks) is one fused op that ONNX has
    no symbol for; off while tracing, it traces as plain matmuls and softmax (same numbers)."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def _output_shapes(spec: ExportSpec) -> list[torch.Size]:
    with torch.no_grad():
        out = spec.module(*spec.samples)
    return [t.shape for t in (out if isinstance(out, (tuple, list)) else (out,))]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
