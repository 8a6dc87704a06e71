"""Refiners: anomaly map + one SAM embedding -> defect mask (PPG/CPS, MMR, threshold)."""
