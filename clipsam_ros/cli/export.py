"""`clipsam-ros export`: the heavy networks a frame of this config runs, as ONNX graphs + one
manifest with sha256s, for `runtime.export_dir` (the node and the CLI also export on first use
into the weights cache): the SAM image encoder and prompt decoder, the localizer's ImageNet
backbone when it has one, and the CLIP image tower of a CLIP localizer."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from ..config import set_value
    from ..localize import build_localizer_clip
    from ..models.backbone import BackboneModel
    from ..models.export import write_export
    from ..models.sam import build_sam, checkpoint_path, sam_export_specs
    from .common import load_config

    cfg = load_config(args, "inspect.yaml")
    # export from the torch modules on the CPU: the graph is the same for every backend and device
    set_value(cfg, "runtime.backend", "torch")
    cpu = torch.device("cpu")
    sam = build_sam(cfg, cpu)
    specs = list(sam_export_specs(sam, checkpoint_path(cfg), cfg))
    if cfg.localizer.backbone != "sam":
        specs.append(BackboneModel(cfg.localizer.backbone, cpu, cfg.localizer.backbone_size,
                                   layers=cfg.localizer.backbone_layers).export_spec())
    # the CLIP the localizer runs, built as the localizer builds it (seeded: a random-init CLIP
    # exported here is the one it runs)
    clip = build_localizer_clip(cfg, cpu)
    if clip is not None:
        specs.append(clip.export_spec())
    out = Path(args.out).expanduser()
    manifest = write_export(specs, out)
    for network, entry in manifest["networks"].items():
        for name, digest in entry["files"].items():
            print(f"{out / name}  sha256 {digest}")
        print(f"  {network}: {json.dumps(entry['inputs'])} -> {json.dumps(entry['outputs'])}")
    print(f"{out / 'manifest.json'}: {len(specs)} graphs; use them with --set runtime.export_dir={out}")
    return 0


def register(sub) -> None:
    from .common import add_config_args

    p = sub.add_parser("export", help="export the SAM encoder and decoder (and the localizer's backbone or CLIP) "
                                      "to ONNX with a sha256 manifest")
    add_config_args(p)
    p.add_argument("--out", required=True, help="folder to write the graph(s) and manifest.json into")
    p.set_defaults(func=cmd_export)
