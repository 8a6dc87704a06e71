"""The cameras one node inspects: where each one's frames come from and its results go.

One camera (`input.image_topics` empty): the topic `image`, outputs directly under
`~/` as DESIGN.md lists them. Several: one subscription per topic, each camera's
outputs under `~/<camera>/`, the name being the topic without its last part
(`config.camera_names`: `cam_left/image_raw` -> `~/cam_left/mask`). The outputs
are those of `outputs.topics.OUTPUT_TOPICS` whose message classes are installed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import InputConfig, camera_names
from ..outputs.message_types import MessageTypes
from ..outputs.topics import OUTPUT_TOPICS, TOPICS
from .qos import IMAGE_OUT_DEPTH, RESULT_OUT_DEPTH, output_qos


@dataclass
class Camera:
    index: int
    name: str                  # "" for the single-camera node
    topic: str                 # as configured (relative names resolve in the node's namespace)
    publishers: dict[str, Any] = field(default_factory=dict)   # output name -> publisher, in table order
    subscription: Any = None

    def __getattr__(self, name: str) -> Any:
        # camera.mask, camera.reject, ...: an output's publisher (None where its type is not installed)
        if name in TOPICS:
            return self.publishers.get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def wanted(self) -> set[str]:
        """The outputs worth building now: every result, and the images someone subscribes to."""
        return {name for name, pub in self.publishers.items()
                if not TOPICS[name].image or pub.get_subscription_count()}

    def publish(self, messages: dict[str, Any]) -> None:
        """Publish one frame's messages in the order given (the builder's: the table's)."""
        for name, msg in messages.items():
            self.publishers[name].publish(msg)


def camera_topics(inp: InputConfig) -> list[tuple[str, str]]:
    """(name, topic) per camera: [("", "image")] for the single-camera node."""
    if not inp.image_topics:
        return [("", "image")]
    return list(zip(camera_names(inp.image_topics), inp.image_topics))


def create_cameras(node, inp: InputConfig, types: MessageTypes) -> list[Camera]:
    """Each camera's output publishers on `node` (subscriptions are the node's to make)."""
    images, results = output_qos(IMAGE_OUT_DEPTH), output_qos(RESULT_OUT_DEPTH)
    cameras = []
    for index, (name, topic) in enumerate(camera_topics(inp)):
        prefix = f"~/{name}/" if name else "~/"
        camera = Camera(index=index, name=name, topic=topic)
        for out in OUTPUT_TOPICS:
            cls = types.class_of(out.msgtype)
            if cls is not None:       # detections / verdict need vision_msgs
                camera.publishers[out.name] = node.create_publisher(cls, prefix + out.name,
                                                                    images if out.image else results)
        cameras.append(camera)
    return cameras
