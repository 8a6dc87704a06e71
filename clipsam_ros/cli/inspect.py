"""`clipsam-ros inspect`: image files in; mask, overlay and JSON per image out (the CLI contract)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..decision import Verdict
from ..errors import one_line
from ..imaging.files import ImageFileError
from .common import EXIT_ERROR, add_config_args, load_config


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..imaging.files import read_rgb
    from ..inspector import Inspector
    from ..outputs.files import result_stems, write_error, write_result

    cfg = load_config(args, "inspect.yaml")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # before the model loading, not after
        raise ImageFileError(f"image {missing[0]} does not exist ({len(missing)} missing)")
    inspector = Inspector.from_config(cfg)
    if len(args.images) > 1:
        # every image's timings_ms then is a warm frame's; for one image a warm-up only doubles the run
        inspector.warm_up()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for path, stem in zip(args.images, result_stems(args.images)):
        try:
            image = read_rgb(path)
        except (OSError, ValueError) as exc:  # one bad file loses nothing else
            write_error(out, stem, str(exc))
            print(f"clipsam-ros inspect: error: {one_line(exc)}", file=sys.stderr)
            status = EXIT_ERROR
            continue
        result = inspector.inspect(image)
        write_result(out, stem, image, result)
        print(f"{path}: {result.verdict} score={result.score:.3f} defects={len(result.defects)}"
              + (f" ({result.error})" if result.error else ""))
        if result.verdict == Verdict.ERROR:
            status = EXIT_ERROR
    inspector.close()
    return status


def register(sub) -> None:
    p = sub.add_parser("inspect", help="inspect image files; writes mask, overlay and JSON per image")
    add_config_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=cmd_inspect)
