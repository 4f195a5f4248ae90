"""One image's explanation and the geometry that puts network maps back onto the image.

Every map of an :class:`Explanation` lies over the raw image (views already turned back) at the
*map size*: the image shrunk so its longest side is at most :data:`MAP_SIDE` px (never enlarged),
float32 in [0, 1] with 1 the map's strongest evidence for the class explained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from histobreast.data.records import ImageRecord

Box = tuple[int, int, int, int]  # (x, y, w, h) in the image's pixels

#: Longest side of stored maps in px (BACH's 1024x768 copies: 512x384 maps).
MAP_SIDE = 512
#: What a box on a map marks: a System A patch the vote filter dropped, or a System B crop.
DROPPED, CROP = "dropped", "crop"


@dataclass
class Explanation:
    """Where one image's call comes from: named maps (the headline first) and the boxes drawn on them."""

    image_id: str
    path: str
    classes: list[str]
    probs: np.ndarray  # (C,) the model's headline probabilities for the image
    target: int  # index of the class explained
    method: str
    image_size: tuple[int, int]  # (width, height) of the image
    maps: dict[str, np.ndarray]  # name -> (h, w) at map_size(image_size), headline first
    boxes: dict[str, list[tuple[Box, str]]] = field(default_factory=dict)  # map name -> (box, DROPPED | CROP)

    @classmethod
    def of_record(
        cls,
        record: ImageRecord,
        *,
        classes: Sequence[str],
        probs: Any,
        target: int,
        method: str,
        image_size: tuple[int, int],
        maps: dict[str, np.ndarray],
        boxes: dict[str, list[tuple[Box, str]]] | None = None,
    ) -> Explanation:
        """The explanation of ``record``'s image (its id and path); ``probs`` any (C,) array or CPU tensor."""
        return cls(
            record.image_id,
            str(record.path),
            list(classes),
            np.asarray(probs, dtype=np.float64),
            target,
            method,
            image_size,
            maps,
            boxes or {},
        )

    @property
    def headline(self) -> str:
        """The name of the map shown on its own (cards, the overlay's first panel)."""
        return next(iter(self.maps))

    @property
    def target_class(self) -> str:
        """The class explained."""
        return self.classes[self.target]


def map_size(image_size: tuple[int, int], side: int = MAP_SIDE) -> tuple[int, int]:
    """``(width, height)`` of the maps of an image of ``image_size``: longest side at most ``side``."""
    width, height = image_size
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A 2-D map resized to ``size = (width, height)``: area-averaged when shrinking, bilinear when enlarging."""
    width, height = size
    if values.shape == (height, width):
        return values.astype(np.float32)
    shrinking = width * height < values.shape[0] * values.shape[1]
    flag = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(values, dtype=np.float32), (width, height), interpolation=flag)


def box_on_map(box: Box, image_size: tuple[int, int], size: tuple[int, int]) -> Box:
    """``box`` (image pixels) in the pixels of a map of ``size``, at least 1 px wide and high."""
    sx, sy = size[0] / image_size[0], size[1] / image_size[1]
    x, y = round(box[0] * sx), round(box[1] * sy)
    return x, y, max(1, round((box[0] + box[2]) * sx) - x), max(1, round((box[1] + box[3]) * sy) - y)


def grid_boxes(image_size: tuple[int, int], grid: tuple[int, int]) -> list[Box]:
    """Row-major boxes (image pixels) of a ``grid = (columns, rows)`` laid over the whole image, as
    System A's patches are (the image resized to the grid, then cut)."""
    width, height = image_size
    cols, rows = grid
    xs = [round(c * width / cols) for c in range(cols + 1)]
    ys = [round(r * height / rows) for r in range(rows + 1)]
    return [(xs[c], ys[r], xs[c + 1] - xs[c], ys[r + 1] - ys[r]) for r in range(rows) for c in range(cols)]
