"""Tiles at physical scale: a grid in µm laid in level-0 pixels, kept by tissue fraction, read in batches.

A tile grid is fixed by the slide's scale and the model's field of view (µm), so the model sees the
tissue at the scale it was trained on whatever the scanner. Reads stream one batch at a time,
the next batch read in a background thread (or in worker processes, each with its own open slide)
while the current one is used: memory holds two batches, however large the slide.
"""

from __future__ import annotations

import math
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histobreast.slides.reader import Slide, open_slide
from histobreast.slides.tissue import TissueMask


@dataclass(frozen=True)
class Tile:
    """One tile: its level-0 box and the share of it the tissue mask covers."""

    x: int
    y: int
    w: int
    h: int
    tissue: float

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def tile_grid(
    dimensions: tuple[int, int],
    mpp: float,
    tile_um: tuple[float, float],
    mask: TissueMask,
    *,
    overlap: float = 0.0,
    min_tissue: float = 0.5,
) -> list[Tile]:
    """Tiles of ``tile_um = (width, height)`` µm on a slide of level-0 ``dimensions`` at ``mpp`` µm/px,
    stepping by ``1 - overlap`` of a tile, row by row, kept when ``mask`` covers at least ``min_tissue``."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    width, height = dimensions
    tw, th = max(1, round(tile_um[0] / mpp)), max(1, round(tile_um[1] / mpp))
    sx, sy = max(1, round(tw * (1 - overlap))), max(1, round(th * (1 - overlap)))
    integral = np.pad(mask.mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    mh, mw = mask.mask.shape
    tiles = []
    for y in range(0, height - th + 1, sy):
        for x in range(0, width - tw + 1, sx):
            x0, y0 = min(mw - 1, int(x / mask.downsample)), min(mh - 1, int(y / mask.downsample))
            x1, y1 = (
                max(x0 + 1, min(mw, math.ceil((x + tw) / mask.downsample))),
                max(y0 + 1, min(mh, math.ceil((y + th) / mask.downsample))),
            )
            covered = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            fraction = covered / ((x1 - x0) * (y1 - y0))
            if fraction >= min_tissue:
                tiles.append(Tile(x, y, tw, th, round(float(fraction), 4)))
    return tiles


#: Threads reading the first chunk of an openslide slide, which nothing overlaps (the model waits for
#: it); later chunks are read by one thread while the model, on its own thread, works on the one before.
FIRST_CHUNK_THREADS = 2

# One open slide per worker process (set by the pool initializer).
_WORKER_SLIDE: Slide | None = None


def _open_in_worker(path: Path, mpp: float | None) -> None:
    global _WORKER_SLIDE
    _WORKER_SLIDE = open_slide(path, mpp)


def _read_in_worker(job: tuple[tuple[int, int, int, int], tuple[int, int]]) -> np.ndarray:
    assert _WORKER_SLIDE is not None
    return _WORKER_SLIDE.read_box(*job)


class TileReader:
    """Reads tiles of one slide, resampled to ``out_size`` px, one chunk ahead of its user: in a thread
    of this process (``workers=0``; the libraries' decoding and resizing release the GIL, so the
    reads run on another core while the model runs; the first chunk, which the model waits for, in
    :data:`FIRST_CHUNK_THREADS`) or in ``workers`` processes, each with its own open slide."""

    def __init__(self, slide: Slide, out_size: tuple[int, int], workers: int = 0) -> None:
        self.slide, self.out_size, self.workers = slide, tuple(out_size), workers
        self._pool = None
        self._thread = None
        if workers > 0:
            given = slide.mpp if slide.mpp_source == "given" else None
            self._pool = mp.get_context("spawn").Pool(workers, _open_in_worker, (slide.path, given))
        else:
            self._thread = ThreadPoolExecutor(FIRST_CHUNK_THREADS, thread_name_prefix="tile-reader")

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
        if self._thread is not None:  # a read under way finishes before the slide can be closed
            self._thread.shutdown(wait=True, cancel_futures=True)

    def _read(self, chunk: Sequence[Tile]) -> list[np.ndarray]:
        return [self.slide.read_box(t.box, self.out_size) for t in chunk]

    def _start(self, chunk: Sequence[Tile], threads: int = 1) -> Callable[[], list[np.ndarray]]:
        """Begin reading ``chunk`` in the background (in ``threads`` consecutive parts, without worker
        processes); the returned call waits for its pixels, in order."""
        if self._pool is not None:
            return self._pool.map_async(_read_in_worker, [(t.box, self.out_size) for t in chunk]).get
        assert self._thread is not None
        step = max(1, -(-len(chunk) // threads))
        parts = [self._thread.submit(self._read, chunk[i : i + step]) for i in range(0, len(chunk), step)]
        return lambda: [pixels for part in parts for pixels in part.result()]

    def batches(self, chunks: Sequence[Sequence[Tile]]) -> Iterator[list[np.ndarray]]:
        """The pixels of each chunk of tiles, in order; the next chunk is read while this one is used
        (two chunks in memory at most)."""
        # libopenslide reads one slide from many threads; tifffile's file handle (tiffslide) is unlocked
        first = FIRST_CHUNK_THREADS if self.slide.backend == "openslide" else 1
        pending = self._start(chunks[0], first) if chunks else None
        for index in range(len(chunks)):
            assert pending is not None
            arrays = pending()
            pending = self._start(chunks[index + 1]) if index + 1 < len(chunks) else None
            yield arrays
