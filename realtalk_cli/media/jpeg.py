"""JPEG for stored face images (dataset crops, frame-bank images): RGB in, RGB out."""

from __future__ import annotations

import os

import cv2
import numpy as np

from realtalk_cli.errors import RealtalkError


def encode_rgb(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RealtalkError("cannot encode an image as JPEG")
    return buf.tobytes()


def decode_rgb(data: np.ndarray | bytes, what: str, where: str | os.PathLike, dst: np.ndarray | None = None) -> np.ndarray:
    """uint8 RGB [h, w, 3] (into `dst` when given); a damaged image is a one-line error naming `what` and `where`."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RealtalkError(f"{what} cannot be decoded", where)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=dst)
