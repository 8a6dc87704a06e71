"""`clipsam-ros synth`: a synthetic dataset (MVTec-AD layout) and/or a synthetic camera bag."""
from __future__ import annotations

import argparse

from ..config import ConfigError


def cmd_synth(args: argparse.Namespace) -> int:
    if not args.out and not args.bag:
        raise ConfigError("synth needs --out DIR (a dataset) or --bag OUT (a camera recording), or both")
    if args.out:
        from ..data.synth import generate_dataset

        summary = generate_dataset(args.out, n=args.n, seed=args.seed, size=tuple(args.size))
        print(f"wrote {summary.n_images} images of {', '.join(summary.classes)} to {args.out}")
    if args.bag:
        from ..data.synth_bag import GT_TOPIC, IMAGE_TOPIC, write_synth_bag

        bag = write_synth_bag(args.bag, n=args.n, product=args.product, seed=args.seed,
                              size=tuple(args.size), storage=args.storage)
        print(f"wrote {bag.frames} frames ({bag.defective} with a defect) of {args.product} to {bag.bag} "
              f"({IMAGE_TOPIC}, ground truth {GT_TOPIC}) and normal parts to {bag.good_dir}")
    return 0


def register(sub) -> None:
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
