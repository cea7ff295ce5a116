"""The mouth-curve sidecar: a mouth opening per output frame (`dub --mouth-curve`, read by `eval`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import atomic_file


def write_mouth_curve(path: str | os.PathLike, opening: np.ndarray, fps: float, source: str = "a2e") -> None:
    """Store a per-output-frame mouth-opening curve (any unit; e.g. FaceModel.mouth_opening of beta_hat)."""
    data = {"format": "realtalk-mouth-curve", "fps": fps, "source": source,
            "mouth_opening": [None if not np.isfinite(v) else float(v) for v in np.asarray(opening, np.float64)]}
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(data))


def read_mouth_curve(path: str | os.PathLike) -> tuple[np.ndarray, float | None]:
    """(curve [T], fps or None) from a sidecar written by `write_mouth_curve` or a plain JSON list."""
    path = Path(path)
    if not path.is_file():
        raise RealtalkError("mouth-curve file not found", path)
    try:
        data = json.loads(path.read_text())
        values, fps = (data, None) if isinstance(data, list) else (data["mouth_opening"], data.get("fps"))
        curve = np.array([np.nan if v is None else float(v) for v in values], np.float64)
    except (ValueError, KeyError, TypeError) as e:
        raise RealtalkError(f"not a mouth-curve JSON (a list of numbers, or {{\"mouth_opening\": [...]}}): {e}", path) from None
    return curve, fps
