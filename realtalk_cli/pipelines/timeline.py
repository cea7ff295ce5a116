"""Which source frame each output frame shows, and streaming the source in that order.

Output lasts as long as the speech. A shorter speech trims the video; a longer one continues it by
`loop` (0..n-1, 0..n-1, ...) or `pingpong` (0..n-1, n-2..1, 0.., no frame shown twice at a turn), the
two ways peers extend a video. Backward runs are read in chunks from the end, so memory stays at
`chunk` frames whatever the length.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from realtalk_cli.errors import UsageError
from realtalk_cli.media import VideoReader

EXTEND_MODES = ("pingpong", "loop")


def extend_indices(n_out: int, n_src: int, mode: str = "pingpong") -> np.ndarray:
    """Source frame index for each of `n_out` output frames."""
    if mode not in EXTEND_MODES:
        raise UsageError(f"--extend {mode!r}: expected one of {', '.join(EXTEND_MODES)}")
    if n_src <= 0:
        raise UsageError("the source video has no frames")
    i = np.arange(n_out)
    if mode == "loop" or n_src == 1:
        return i % n_src
    period = 2 * n_src - 2
    k = i % period
    return np.where(k < n_src, k, period - k)


def runs(indices: np.ndarray) -> list[tuple[int, int, int]]:
    """Split an index sequence into maximal runs of step +1 or -1: (first, last, step)."""
    out = []
    first = prev = int(indices[0])
    step = 0
    for x in map(int, indices[1:]):
        d = x - prev
        if abs(d) == 1 and step in (0, d):
            step = d
        else:
            out.append((first, prev, step or 1))
            first, step = x, 0
        prev = x
    out.append((first, prev, step or 1))
    return out


def frames_in_order(path: str | os.PathLike, indices: np.ndarray, fps: float = 25.0, chunk: int = 32,
                    info=None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (source index, RGB frame) following `indices`, holding at most `chunk` frames."""
    for first, last, step in runs(indices):
        if step == 1:
            for k, frame in enumerate(VideoReader(path, fps, info=info, start=first, stop=last + 1)):
                yield first + k, frame
        else:
            hi = first + 1
            while hi > last:
                lo = max(last, hi - chunk)
                block = list(VideoReader(path, fps, info=info, start=lo, stop=hi))
                for k in range(len(block) - 1, -1, -1):
                    yield lo + k, block[k]
                hi = lo
