"""A synthetic camera recording: one product on a line, good parts and defects, with ground truth.

`write_synth_bag(OUT)` writes the rosbag2 OUT (mcap by default) with

* `/camera/image_raw`   sensor_msgs/Image rgb8, one part per frame at `rate_hz`;
* `/camera/defect_mask` sensor_msgs/Image mono8 (255 = defect), same header stamp,

and, next to it, the folder `OUT_good/` of normal parts of the same product
(the `train/good` images of the synthetic dataset). The offline profile's
reference localizer builds its memory bank from that folder:

    clipsam-ros replay OUT --image-topic /camera/image_raw --gt-topic /camera/defect_mask \
        --config config/offline.yaml --set localizer.reference_dir=OUT_good ...

Even frames are good parts, odd frames carry the product's defect kinds in turn.
Stamps start at a fixed time, so the same arguments give the same bag.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
from tqdm import tqdm

from ..bags.replay import good_dir_of
from ..bags.rosbag2 import BagWriter
from ..config import ConfigError
from ..outputs.builder import image_msg, make_header
from ..outputs.message_types import from_typestore
from .synth import PRODUCTS, make_sample, sample_seed

IMAGE_TOPIC = "/camera/image_raw"
GT_TOPIC = "/camera/defect_mask"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 1_000_000_000


@dataclass(frozen=True)
class SynthBag:
    bag: Path
    good_dir: Path
    frames: int
    defective: int


def frame_defect(product: str, index: int) -> str | None:
    kinds = PRODUCTS[product]
    return None if index % 2 == 0 else kinds[(index // 2) % len(kinds)]


def write_synth_bag(out: str | Path, n: int = 8, product: str = "metal", seed: int = 0,
                    size: tuple[int, int] = (640, 480), storage: str = "mcap", rate_hz: float = 5.0,
                    n_good: int = 4, progress: bool = True) -> SynthBag:
    if product not in PRODUCTS:
        raise ConfigError(f"product {product!r} is unknown (choose one of: {', '.join(PRODUCTS)})")
    if n < 1 or n_good < 2:
        raise ConfigError(f"need n >= 1 frames and n_good >= 2 good parts, got n={n}, n_good={n_good}")
    out = Path(out)
    good = good_dir_of(out)
    good.mkdir(parents=True, exist_ok=True)
    for j in range(n_good):
        rgb, _ = make_sample(product, None, sample_seed(seed, product, "train/good", j), size)
        cv2.imwrite(str(good / f"{j:03d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    period_ns = int(1e9 / rate_hz)
    defective = 0
    with BagWriter(out, storage=storage) as writer:
        types = from_typestore(writer.typestore)
        for i in tqdm(range(n), desc="synth bag", unit="frame", disable=not progress):
            defect = frame_defect(product, i)
            rgb, mask = make_sample(product, defect, sample_seed(seed, product, "bag", i), size)
            defective += defect is not None
            stamp = START_NS + i * period_ns
            header = make_header(types, stamp, FRAME_ID)
            writer.write(IMAGE_TOPIC, stamp, image_msg(types, header, rgb, "rgb8"))
            writer.write(GT_TOPIC, stamp, image_msg(types, header, mask, "mono8"))
    return SynthBag(out, good, n, defective)
