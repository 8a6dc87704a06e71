"""`~/annotations`: the defects as a visualization_msgs/ImageMarker that Foxglove and RViz draw
over the raw camera image at its own resolution (no second image stream).

One marker per frame, a LINE_LIST: each defect's box (4 segments) and the outline of
every mask region (its contour, closed), each segment's colour per point
(`outline_colors`): boxes red, outlines yellow. A frame without defects gets an empty
list, so a viewer clears what the previous frame drew. Pixel coordinates, x right, y down.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from ..decision import Defect

NAMESPACE = "clipsam_defects"
BOX_RGBA = (1.0, 0.0, 0.0, 1.0)
OUTLINE_RGBA = (1.0, 0.85, 0.0, 1.0)
LINE_WIDTH_PX = 2.0


@dataclass(frozen=True)
class Segments:
    """Line segments as point pairs (N x 2 x 2, x then y) and a colour (RGBA) per segment."""
    points: np.ndarray
    colours: list[tuple[float, float, float, float]]


def box_segments(defects: Sequence[Defect]) -> np.ndarray:
    """The 4 edges of each defect's bbox [x0, y0, x1, y1] (inclusive pixels)."""
    out = []
    for d in defects:
        x0, y0, x1, y1 = (float(v) for v in d.bbox)
        corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        out += [(corners[i], corners[(i + 1) % 4]) for i in range(4)]
    return np.asarray(out, np.float64).reshape(-1, 2, 2)


def outline_segments(mask: np.ndarray) -> np.ndarray:
    """The closed outer contour of every region of `mask` (nonzero = defect), as segments."""
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        pts = contour.reshape(-1, 2).astype(np.float64)
        if len(pts) == 1:          # a one-pixel region: a dot, drawn as a zero-length segment
            out.append((pts[0], pts[0]))
            continue
        out += [(pts[i], pts[(i + 1) % len(pts)]) for i in range(len(pts))]
    return np.asarray(out, np.float64).reshape(-1, 2, 2)


def defect_segments(mask: np.ndarray | None, defects: Sequence[Defect]) -> Segments:
    boxes = box_segments(defects)
    outlines = outline_segments(mask) if mask is not None else np.zeros((0, 2, 2))
    return Segments(points=np.concatenate([boxes, outlines]),
                    colours=[BOX_RGBA] * len(boxes) + [OUTLINE_RGBA] * len(outlines))


def image_marker(types, header, segments: Segments):
    """The ImageMarker (rclpy or rosbags class, every field given: rosbags has no defaults)."""
    def colour(rgba):
        return types.ColorRGBA(r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3])

    def point(xy):
        return types.Point(x=float(xy[0]), y=float(xy[1]), z=0.0)
    points, colours = [], []
    for (a, b), rgba in zip(segments.points, segments.colours):
        points += [point(a), point(b)]
        colours += [colour(rgba), colour(rgba)]
    marker = types.ImageMarker
    return marker(header=header, ns=NAMESPACE, id=0, type=marker.LINE_LIST, action=marker.ADD,
                  position=point((0.0, 0.0)), scale=LINE_WIDTH_PX, outline_color=colour(OUTLINE_RGBA),
                  filled=0, fill_color=colour((0.0, 0.0, 0.0, 0.0)), lifetime=types.Duration(sec=0, nanosec=0),
                  points=points, outline_colors=colours)
