"""`clipsam-ros export`: the heavy networks as ONNX graphs + a manifest with sha256s, for
`runtime.export_dir` (the node and the CLI also export on first use into the weights cache)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from ..config import set_value
    from ..models.export import write_export
    from ..models.sam import build_sam, checkpoint_path, sam_encoder_export_spec
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")
    # export from the torch modules on the CPU: the graph is the same for every backend and device
    set_value(cfg, "runtime.backend", "torch")
    sam = build_sam(cfg, torch.device("cpu"))
    out = Path(args.out).expanduser()
    manifest = write_export(sam_encoder_export_spec(sam, checkpoint_path(cfg), cfg), out)
    for name, digest in manifest["files"].items():
        print(f"{out / name}  sha256 {digest}")
    print(f"{out / 'manifest.json'}: {json.dumps(manifest['inputs'])} -> {json.dumps(manifest['outputs'])}; "
          f"use it with --set runtime.export_dir={out}")
    return 0


def register(sub) -> None:
    from .common import add_config_args

    p = sub.add_parser("export", help="export the SAM image encoder to ONNX with a sha256 manifest")
    add_config_args(p)
    p.add_argument("--out", required=True, help="folder to write the graph(s) and manifest.json into")
    p.set_defaults(func=cmd_export)
