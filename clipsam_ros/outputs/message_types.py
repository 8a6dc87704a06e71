"""The message classes the outputs are built from, as one typed bundle.

The builder (`builder.py`) takes every class from a `MessageTypes`, so the same
code builds rclpy messages on the node (`ros/messages.rclpy_message_types`) and
`rosbags` typestore messages for replay and synthetic bags (`from_typestore`).
Besides the classes, the two libraries differ in what a uint8[] field takes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .vision_msgs import VisionTypes, vision_types_from_store

_OWN_CLASSES = ("Header", "Time", "Image", "String", "Bool")


@dataclass(frozen=True)
class MessageTypes:
    Header: Any                          # std_msgs
    Time: Any                            # builtin_interfaces
    Image: Any                           # sensor_msgs
    String: Any                          # std_msgs
    Bool: Any                            # std_msgs
    vision: VisionTypes | None           # None where vision_msgs is missing: no detections, no verdict
    uint8_array: Callable[[bytes], Any]  # a uint8[] field's value from bytes, as this library wants it
    # ~/annotations; None where visualization_msgs is missing
    ImageMarker: Any = None              # visualization_msgs
    Point: Any = None                    # geometry_msgs
    ColorRGBA: Any = None                # std_msgs
    Duration: Any = None                 # builtin_interfaces

    def class_of(self, msgtype: str) -> Any | None:
        """The class of a ROS 2 type name ("std_msgs/msg/Bool"); None where this bundle lacks it."""
        package, _, name = msgtype.split("/")
        if package == "vision_msgs":
            return getattr(self.vision, name, None)
        if package == "visualization_msgs":
            return self.ImageMarker if name == "ImageMarker" else None
        return getattr(self, name) if name in _OWN_CLASSES else None


def _numpy_uint8(data: bytes) -> np.ndarray:
    return np.frombuffer(data, np.uint8)    # rosbags serializes uint8[] from a numpy array


def from_typestore(typestore) -> MessageTypes:
    """The classes of a `rosbags` Typestore (vision_msgs where it was registered, see vision_msgs_defs)."""
    t = typestore.types
    vision = vision_types_from_store(t) if "vision_msgs/msg/Classification" in t else None
    return MessageTypes(Header=t["std_msgs/msg/Header"], Time=t["builtin_interfaces/msg/Time"],
                        Image=t["sensor_msgs/msg/Image"], String=t["std_msgs/msg/String"],
                        Bool=t["std_msgs/msg/Bool"], vision=vision, uint8_array=_numpy_uint8,
                        ImageMarker=t.get("visualization_msgs/msg/ImageMarker"), Point=t["geometry_msgs/msg/Point"],
                        ColorRGBA=t["std_msgs/msg/ColorRGBA"], Duration=t["builtin_interfaces/msg/Duration"])
