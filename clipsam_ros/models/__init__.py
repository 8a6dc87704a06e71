"""Model wrappers and their weight files."""
