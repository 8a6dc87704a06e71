"""Evaluation: anomaly-segmentation metrics (pixel AUROC / AP / F1-max, AUPRO, image AUROC / F1-max)."""
