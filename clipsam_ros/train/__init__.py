"""Training of the CLIP heads (clip_adapter, UMCI)."""
