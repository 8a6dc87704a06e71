"""The cameras one node inspects: where each one's frames come from and its results go.

One camera (`input.image_topics` empty): the topic `image`, outputs directly under
`~/` as DESIGN.md lists them. Several: one subscription per topic, each camera's
outputs under `~/<camera>/`, the name being the topic without its last part
(`config.camera_names`: `cam_left/image_raw` -> `~/cam_left/mask`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sensor_msgs.msg import Image
from std_msgs.msg import Bool, String

from ..config import InputConfig, camera_names
from .qos import IMAGE_OUT_DEPTH, RESULT_OUT_DEPTH, output_qos


@dataclass
class Camera:
    index: int
    name: str                  # "" for the single-camera node
    topic: str                 # as configured (relative names resolve in the node's namespace)
    mask: Any                  # publishers
    anomaly_map: Any
    overlay: Any
    verdict_json: Any
    reject: Any
    detections: Any = None     # None without vision_msgs
    verdict: Any = None
    subscription: Any = None

    @property
    def result_publishers(self) -> tuple:
        return (self.mask, self.anomaly_map, self.overlay, self.verdict_json, self.reject)


def camera_topics(inp: InputConfig) -> list[tuple[str, str]]:
    """(name, topic) per camera: [("", "image")] for the single-camera node."""
    if not inp.image_topics:
        return [("", "image")]
    return list(zip(camera_names(inp.image_topics), inp.image_topics))


def create_cameras(node, inp: InputConfig, vision) -> list[Camera]:
    """Each camera's output publishers on `node` (subscriptions are the node's to make)."""
    images, results = output_qos(IMAGE_OUT_DEPTH), output_qos(RESULT_OUT_DEPTH)
    cameras = []
    for index, (name, topic) in enumerate(camera_topics(inp)):
        prefix = f"~/{name}/" if name else "~/"
        camera = Camera(
            index=index, name=name, topic=topic,
            mask=node.create_publisher(Image, prefix + "mask", images),
            anomaly_map=node.create_publisher(Image, prefix + "anomaly_map", images),
            overlay=node.create_publisher(Image, prefix + "overlay", images),
            verdict_json=node.create_publisher(String, prefix + "verdict_json", results),
            reject=node.create_publisher(Bool, prefix + "reject", results))
        if vision is not None:
            camera.detections = node.create_publisher(vision.Detection2DArray, prefix + "detections", results)
            camera.verdict = node.create_publisher(vision.Classification, prefix + "verdict", results)
        cameras.append(camera)
    return cameras
