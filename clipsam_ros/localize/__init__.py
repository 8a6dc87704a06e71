"""Localizers: frame features -> anomaly map S_a and an image score."""
