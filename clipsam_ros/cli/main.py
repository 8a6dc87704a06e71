"""`clipsam-ros`: the command line. Every error is one line on stderr and a non-zero exit."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from ..decision import Verdict
from ..errors import one_line

EXIT_USAGE, EXIT_ERROR = 2, 1


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="ROS 2 params YAML (default: the package's config/offline.yaml "
                                         "for demo, config/inspect.yaml otherwise)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config key, e.g. --set refiner.threshold=0.6 (repeatable)")


def load_config(args: argparse.Namespace, default_name: str):
    from ..config import load
    from ..resources import config_path

    return load(args.config or config_path(default_name), args.overrides)


def cmd_inspect(args: argparse.Namespace) -> int:
    from ..imaging.files import read_rgb
    from ..outputs.files import write_error, write_result
    from ..inspector import Inspector

    cfg = load_config(args, "inspect.yaml")
    missing = [p for p in args.images if not Path(p).is_file()]
    if missing:  # before the model loading, not after
        raise FileNotFoundError(f"image {missing[0]} does not exist ({len(missing)} missing)")
    inspector = Inspector.from_config(cfg)
    if len(args.images) > 1:
        # every image's timings_ms then is a warm frame's; for one image a warm-up only doubles the run
        inspector.warm_up()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    status = 0
    for path in args.images:
        stem = Path(path).stem
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
    return status


def cmd_synth(args: argparse.Namespace) -> int:
    if not args.out and not args.bag:
        raise ValueError("synth needs --out DIR (a dataset) or --bag OUT (a camera recording), or both")
    if args.out:
        from ..data.synth import generate_dataset

        summary = generate_dataset(args.out, n=args.n, seed=args.seed, size=tuple(args.size))
        print(f"wrote {summary.n_images} images of {', '.join(summary.classes)} to {args.out}")
    if args.bag:
        from ..data.synth_bag import IMAGE_TOPIC, GT_TOPIC, write_synth_bag

        bag = write_synth_bag(args.bag, n=args.n, product=args.product, seed=args.seed,
                              size=tuple(args.size), storage=args.storage)
        print(f"wrote {bag.frames} frames ({bag.defective} with a defect) of {args.product} to {bag.bag} "
              f"({IMAGE_TOPIC}, ground truth {GT_TOPIC}) and normal parts to {bag.good_dir}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..eval.demo import run_demo

    cfg = load_config(args, "offline.yaml")
    run_demo(cfg, Path(args.out), n=args.n, seed=args.seed, classes=args.classes)
    return 0


# Subcommands that live in their own modules: each has `register(subparsers)`, which adds
# its parser and sets `func`. Imported lazily so `--help` stays fast and a missing
# optional dependency only affects its own subcommand.
COMMAND_MODULES: list[str] = [
    "clipsam_ros.cli.node",
    "clipsam_ros.cli.replay",
    "clipsam_ros.cli.eval",
    "clipsam_ros.cli.train",
    "clipsam_ros.cli.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipsam-ros", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="inspect image files; writes mask, overlay and JSON per image")
    add_config_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("images", nargs="+", help="image files")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("synth", help="write a synthetic production-line dataset (MVTec-AD layout) "
                                     "and/or a synthetic camera bag")
    p.add_argument("--out", help="dataset folder to write (MVTec-AD layout)")
    p.add_argument("--bag", help="rosbag2 to write: frames on /camera/image_raw, ground truth on "
                                 "/camera/defect_mask, normal parts in BAG_good/ (see docs/EVAL.md)")
    p.add_argument("--n", type=int, default=8, help="images per folder / frames in the bag (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--product", default="metal", choices=["metal", "fabric", "washer"],
                   help="--bag: the product on the line (default metal)")
    p.add_argument("--size", type=int, nargs=2, default=(640, 480), metavar=("W", "H"),
                   help="image / frame size (default 640 480)")
    p.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"], help="--bag: storage (default mcap)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("demo", help="the offline demo: synth parts → reference bank → PPG+CPS → summary")
    add_config_args(p)
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--n", type=int, default=2, help="synth images per folder (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", help="synthetic products to run (default: all)")
    p.set_defaults(func=cmd_demo)

    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # no model hub here or on a line PC: never wait on one
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        print("clipsam-ros: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the contract: one line, non-zero exit
        if args.verbose:
            raise
        print(f"clipsam-ros {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
