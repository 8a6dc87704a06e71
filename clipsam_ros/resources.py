"""Where the package's shared files (config/, launch/) are, installed or in a checkout."""
from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "clipsam_ros"


def share_dirs() -> list[Path]:
    """Candidate share folders, most specific first."""
    dirs = [Path(__file__).resolve().parents[1]]                 # a source checkout / editable install
    dirs.append(Path(sys.prefix) / "share" / PACKAGE)              # pip / colcon data_files
    try:  # a sourced ROS 2 workspace; ament_index_python is not rclpy
        from ament_index_python.packages import get_package_share_directory

        dirs.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:
        pass
    return dirs


def config_path(name: str) -> Path:
    for base in share_dirs():
        candidate = base / "config" / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config/{name} is not installed with {PACKAGE}; pass --config FILE")
