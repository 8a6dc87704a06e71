"""clipsam_ros: zero-shot defect segmentation (CLIP locates, SAM outlines) as a ROS 2 node."""
__version__ = "0.1.0"
