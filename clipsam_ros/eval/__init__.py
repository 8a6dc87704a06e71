"""Measuring the Inspector: accuracy on datasets, speed on synthetic frames, the offline demo.

    metrics.py   pixel AUROC / AP / F1-max, AUPRO, image AUROC / F1-max, IoU (as the field computes them)
    runner.py    one pass over a dataset through the Inspector's own stages, every refiner variant
    variants.py  the papers' ablations as refiner configs
    report.py    report.json / report.md, curves and overlays of the worst images
    bench.py     per-stage latency, frames/s and memory; the per-call predictor for comparison
    demo.py      the main job: synthetic parts, a reference bank per product, PPG + CPS, IoU
"""
