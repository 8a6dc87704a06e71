"""Refiner variants for the ablations: each is the configured refiner with a few fields replaced.

* `cps-stages`: the paper's Table 3 (Hou et al.) plus the coarse map:
  coarse (refiner none: S_a > θ, score S_a) | only points (PPG, stage 1) |
  points+logit1 (stage 2) | points+box+logit2 (stage 3, full CPS).
* `dilation`: the paper's Table 2, ring kernel shape × size: cross, rect,
  ellipse × 21, 25, 29 px. The paper's sizes are 20/25/30; ours must be odd
  (a kernel with a centre pixel), so 20 and 30 become 21 and 29.

All other refiner settings (threshold, point counts, `mask_input`, our guards)
stay as configured, so a table compares exactly one change at a time.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..config import ConfigError, RefinerConfig

ABLATIONS = ("cps-stages", "dilation")
DILATION_SHAPES = ("cross", "rect", "ellipse")
DILATION_SIZES = (21, 25, 29)
PIPELINE = "pipeline"


@dataclass(frozen=True)
class Variant:
    name: str
    refiner: RefinerConfig

    @property
    def key(self) -> str:
        """Equal keys give equal results: such variants are computed once."""
        return repr(dataclasses.astuple(self.refiner))


def ablation_variants(ablation: str, base: RefinerConfig) -> list[Variant]:
    replace = dataclasses.replace
    if ablation == "cps-stages":
        return [
            Variant("coarse", replace(base, method="none")),
            Variant("only points", replace(base, method="cps", stage2_logits=False, stage3_box=False)),
            Variant("points+logit1", replace(base, method="cps", stage2_logits=True, stage3_box=False)),
            Variant("points+box+logit2", replace(base, method="cps", stage2_logits=True, stage3_box=True)),
        ]
    if ablation == "dilation":
        return [Variant(f"{shape} ({size},{size})",
                        replace(base, method="cps", dilation_shape=shape, dilation_size=size))
                for shape in DILATION_SHAPES for size in DILATION_SIZES]
    raise ConfigError(f"--ablation {ablation!r} is unknown (choose one of: {', '.join(ABLATIONS)})")

