"""Export a network to ONNX once, with a manifest that says exactly what it was made from.

An export is a folder: the graph file(s) and `manifest.json` = {network, source weights'
sha256, the config keys that shape the graph, exporter and runtime library versions,
input/output shapes, opset, and each exported file's sha256}. Its identity (`key`) is the
sha256 of everything but the file digests and runtime versions, so a change of weights,
variant, speed switch or exporter version names another folder.

`ensure_export` is what the model builders call: a given `runtime.export_dir` is checked
and refused in one line when it does not match; otherwise the folder in the weights cache
is reused when intact, and (re)built when missing, stale or corrupt. Writes go to a temp
folder next to the target and are renamed into place, so a crash never leaves a folder a
later start would trust.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ClipsamError
from .weights import default_cache_dir, sha256_of

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
OPSET = 17
FORMAT = 1


class ExportError(ClipsamError, RuntimeError):
    """An exported folder that cannot be used or written; one line naming the folder and the fix."""


@dataclass(frozen=True)
class ExportSpec:
    """What to export: the module, a sample input, and what the graph's identity depends on."""

    network: str                    # e.g. "sam_image_encoder": the file stem and the manifest's name
    module: nn.Module
    sample: torch.Tensor            # the input the graph is traced with (its shape is fixed)
    source_sha256: str              # of the weight file the module was loaded from
    config: dict[str, Any]          # the config keys that change the graph
    input_name: str = "pixels"
    output_name: str = "features"

    @property
    def file_name(self) -> str:
        return f"{self.network}.onnx"

    def identity(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "network": self.network,
            "source_sha256": self.source_sha256,
            "config": dict(sorted(self.config.items())),
            "exporter": {"torch": torch.__version__, "onnx": _version("onnx"), "opset": OPSET},
            "inputs": {self.input_name: list(self.sample.shape)},
        }

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]


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
        return folder / spec.file_name
    folder = cache_folder(spec, cache_dir)
    problem = check_export(folder, spec)
    if problem:
        if folder.exists():
            log.warning("%s: %s; exporting it again", folder, problem)
        write_export(spec, folder)
    return folder / spec.file_name


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
    expected = spec.identity()
    for field, want in expected.items():
        if manifest.get(field) != want:
            return f"exported for another {field} ({_short(manifest.get(field))}, need {_short(want)})"
    files = manifest.get("files")
    if not isinstance(files, dict) or spec.file_name not in files:
        return f"{MANIFEST} lists no {spec.file_name}"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_of(path) != digest:
            return f"{name} does not match its sha256 in {MANIFEST} (changed or truncated)"
    return ""


def write_export(spec: ExportSpec, folder: Path) -> dict[str, Any]:
    """Export `spec` into `folder` (replacing what is there) through a temp folder + rename;
    returns the manifest."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.part-", dir=folder.parent))
    except OSError as exc:
        raise ExportError(f"cannot write an export next to {folder} ({exc.strerror or exc}); "
                          f"set weights.cache_dir (or --out) to a writable folder") from None
    try:
        _export_onnx(spec, tmp / spec.file_name)
        manifest = {**spec.identity(),
                    "outputs": {spec.output_name: list(_output_shape(spec))},
                    "runtimes": {name: _version(name) for name in ("onnxruntime", "openvino")},
                    "clipsam_ros": _version("clipsam_ros"),
                    # every file the export wrote (large graphs put their weights in side files)
                    "files": {p.name: sha256_of(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    log.info("exported %s to %s", spec.network, folder)
    return manifest


def _export_onnx(spec: ExportSpec, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer's notes on Python-side shape arithmetic: the shapes are fixed on purpose
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, (spec.sample,), str(path), opset_version=OPSET,
                          input_names=[spec.input_name], output_names=[spec.output_name],
                          do_constant_folding=True, dynamo=False)


def _output_shape(spec: ExportSpec) -> torch.Size:
    with torch.no_grad():
        return spec.module(spec.sample).shape


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
