"""Write an evaluation's report: report.json, report.md (the papers' table), curves, worst overlays.

Numbers in report.json are fractions (0..1), NaN written as null; report.md shows
percentages with one decimal, as the papers do. "mean" is the unweighted mean
over classes of each metric, ignoring classes where it is undefined.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from ..config import Config, to_dict
from ..imaging.files import read_rgb
from ..localize import learns_online, needs_references
from .metrics import METRIC_KEYS
from .runner import ClassResult, EvalResult, WorstImage
from .variants import PIPELINE

# the papers' columns first (pixel AUROC, F1-max, AP), then ours
COLUMNS = (("pixel_auroc", "pixel AUROC"), ("pixel_f1_max", "F1-max"), ("pixel_ap", "AP"),
           ("aupro", "AUPRO"), ("image_auroc", "image AUROC"))
TITLES = {"cps-stages": "CPS stages (Hou et al. Table 3) + the coarse map",
          "dilation": "PPG ring kernel, shape x size (Hou et al. Table 2)"}
GT_COLOUR = (60, 200, 60)   # BGR


def mean_metrics(per_class: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for key in METRIC_KEYS:
        values = [m[key] for m in per_class if not math.isnan(m[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def _clean(value):
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def _cell(value: float) -> str:
    return "–" if math.isnan(value) else f"{100 * value:.1f}"


def _table(rows: list[tuple[str, dict[str, float]]], first: str) -> list[str]:
    lines = [f"| {first} | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---|" + "---:|" * len(COLUMNS)]
    for label, metrics in rows:
        lines.append(f"| {label} | " + " | ".join(_cell(metrics[k]) for k, _ in COLUMNS) + " |")
    return lines


def build_json(result: EvalResult, cfg: Config, root: str, layout: str) -> dict:
    pipeline = PIPELINE
    classes = {c.name: c.metrics[pipeline] for c in result.classes}
    report = {
        "root": str(root), "layout": layout,
        "size": result.size or "native", "shots": result.shots,
        "image_score": "max of the pixel scores (InspectionResult.score)",
        "images": {c.name: c.images for c in result.classes},
        "confusion": {c.name: c.confusion for c in result.classes},
        # stream localizer: images that only filled a fresh memory (verdict "error" on a line), not scored
        "warmup_frames": {c.name: c.warmup_frames for c in result.classes},
        "classes": classes,
        "mean": mean_metrics(list(classes.values())),
        "ablations": {},
        "wall_s": result.wall_s,
        "stage_ms": result.stage_ms,
        "config": to_dict(cfg),
    }
    for ablation, variants in result.ablations.items():
        per_class = {c.name: {v.name: c.metrics[v.name] for v in variants} for c in result.classes}
        report["ablations"][ablation] = {
            "variants": [v.name for v in variants],
            "mean": {v.name: mean_metrics([c.metrics[v.name] for c in result.classes]) for v in variants},
            "classes": per_class,
        }
    return _clean(report)


def build_markdown(result: EvalResult, cfg: Config, root: str, layout: str, plots: list[str],
                   overlays: list[str]) -> str:
    pipeline = PIPELINE
    images = sum(c.images for c in result.classes)
    size = f"longer side {result.size} px" if result.size else "each image's own size"
    lines = [
        "# Evaluation report", "",
        f"- data: `{root}` ({layout}), {len(result.classes)} classes, {images} test images, at {size}",
        f"- pipeline: sam.variant={cfg.sam.variant}, localizer.method={cfg.localizer.method}, "
        f"refiner.method={cfg.refiner.method}" + _bank_note(result, cfg),
        "- pixel scores: the refiner's fused scores; image score: their maximum",
        f"- wall time: {result.wall_s:.1f} s", "",
        "## Pipeline", "",
        *_table([(c.name, c.metrics[pipeline]) for c in result.classes]
                + [("**mean**", mean_metrics([c.metrics[pipeline] for c in result.classes]))], "class"),
        "",
    ]
    lines += ["## Verdicts at the configured thresholds", "",
              "| class | good passed | good rejected | defective passed | defective rejected |",
              "|---|---|---|---|---|"]
    lines += [f"| {c.name} | {c.confusion['good']['pass']} | {c.confusion['good']['fail']} | "
              f"{c.confusion['defect']['pass']} | {c.confusion['defect']['fail']} |"
              for c in result.classes if c.confusion]
    lines.append("")
    for ablation, variants in result.ablations.items():
        lines += [f"## Ablation: {TITLES.get(ablation, ablation)}", "",
                  "Mean over classes (per class: report.json).", ""]
        lines += _table([(v.name, mean_metrics([c.metrics[v.name] for c in result.classes])) for v in variants],
                        "variant")
        if ablation == "cps-stages" and not cfg.refiner.mask_input:
            lines += ["", "Note: refiner.mask_input is false in this config, so stages 2 and 3 re-decode "
                          "without the previous stage's logits as SAM's mask prompt."]
        lines.append("")
    if plots:
        lines += ["## Curves (pipeline)", ""] + [f"![{p}]({p})" for p in plots] + [""]
    if overlays:
        lines += ["## Worst images (pipeline; red: prediction, green: ground truth)", ""]
        lines += [f"- [{o}]({o})" for o in overlays] + [""]
    return "\n".join(lines)


def _bank_note(result: EvalResult, cfg: Config) -> str:
    if learns_online(cfg):
        seeded = "seeded from localizer.reference_dir" if cfg.localizer.reference_dir else \
            f"{sum(c.warmup_frames for c in result.classes)} warm-up images left out"
        return f" (a fresh stream memory per class, test images in a shuffled line order; {seeded})"
    if not needs_references(cfg):
        return ""
    sizes = sorted({c.bank_images for c in result.classes})
    return f" (reference bank per class: {'/'.join(map(str, sizes))} train/good images)"


def _thin(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    step = max(1, len(x) // points)
    keep = np.r_[np.arange(0, len(x), step), len(x) - 1] if len(x) else np.arange(0)
    return x[keep], y[keep]


def write_plots(classes: list[ClassResult], out: Path) -> list[str]:
    """roc.png and pr.png with one curve per class; [] when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    for name, xlabel, ylabel, xy, metric in (
            ("roc.png", "false positive rate", "true positive rate",
             lambda c: (np.r_[0.0, c.fpr], np.r_[0.0, c.tpr]), "pixel_auroc"),
            ("pr.png", "recall", "precision", lambda c: (c.tpr, c.precision), "pixel_ap")):
        fig, ax = plt.subplots(figsize=(5.5, 5), dpi=100)
        for result in classes:
            if result.curves.n_pos == 0:
                continue
            x, y = _thin(*xy(result.curves))
            value = result.metrics[PIPELINE][metric]
            ax.plot(x, y, label=f"{result.name} ({'AUROC' if metric == 'pixel_auroc' else 'AP'} "
                                f"{_cell(value)})")
        if name == "roc.png":
            ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02),
               title=f"pixel {'ROC' if name == 'roc.png' else 'precision-recall'}")
        ax.legend(loc="lower right" if name == "roc.png" else "upper right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)
        written.append(name)
    return written


def write_overlays(classes: list[ClassResult], out: Path, size: int) -> list[str]:
    """worst/<class>_<rank>_<defect>_<stem>.png: the pipeline's overlay with the ground truth outlined."""
    from ..imaging.overlay import render_overlay

    folder = out / "worst"
    written = []
    for result in classes:
        for rank, item in enumerate(result.worst):
            image = read_rgb(item.sample.image, size)
            overlay = _overlay(render_overlay, image, item)
            name = f"worst/{result.name}_{rank}_{item.sample.defect}_{item.sample.image.stem}.png"
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / name), overlay)
            written.append(name)
    return written


def _overlay(render_overlay, image: np.ndarray, item: WorstImage) -> np.ndarray:
    out = render_overlay(image, item.pred.astype(np.uint8) * 255, item.defects, item.verdict, item.score)
    contours, _ = cv2.findContours(item.truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, GT_COLOUR, max(1, round(min(out.shape[:2]) / 320)))
    h = out.shape[0]
    cv2.putText(out, f"IoU {item.iou:.2f}  truth: {item.sample.defect}", (6, h - 8), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def write_report(result: EvalResult, cfg: Config, root: str, layout: str, out: str | Path) -> dict:
    """Everything into `out`; returns the report.json content."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = build_json(result, cfg, root, layout)
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    plots = write_plots(result.classes, out)
    overlays = write_overlays(result.classes, out, result.size)
    (out / "report.md").write_text(build_markdown(result, cfg, root, layout, plots, overlays))
    return data
