"""Datasets (MVTec-AD, VisA, folders), synthetic parts and synthetic camera bags."""
