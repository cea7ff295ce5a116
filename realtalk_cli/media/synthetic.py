"""A generated talking-face clip for benchmarks and tests: a real face photo with head motion.

The photo is scikit-image's `astronaut` (public domain, NASA), so scikit-image must be installed
(`pip install scikit-image`, part of the `dev` extra); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def astronaut_frames(n: int, size: tuple[int, int] = (192, 160), motion: float = 1.0, seed: int = 0):
    """A real face photo (scikit-image's astronaut) with smooth synthetic head motion: shift, turn, zoom."""
    import cv2

    try:
        from skimage.data import astronaut
    except ImportError:
        from realtalk_cli.errors import RealtalkError

        raise RealtalkError("a generated face clip needs scikit-image (pip install scikit-image); or pass your own video") from None

    img = astronaut()  # 512x512 RGB, face around (215, 115)
    w, h = size
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 4)
    for t in range(n):
        s = t / 25.0
        angle = motion * 4.0 * np.sin(2 * np.pi * 0.4 * s + phase[0])
        dx = motion * 6.0 * np.sin(2 * np.pi * 0.3 * s + phase[1])
        dy = motion * 4.0 * np.sin(2 * np.pi * 0.5 * s + phase[2])
        zoom = 1.0 + motion * 0.03 * np.sin(2 * np.pi * 0.2 * s + phase[3])
        m = cv2.getRotationMatrix2D((215.0, 130.0), angle, zoom * min(w, h) / 230.0)
        # put the face centre (215, 130) at the frame centre, shifted by (dx, dy)
        m[0, 2] = w / 2 + dx - (m[0, 0] * 215.0 + m[0, 1] * 130.0)
        m[1, 2] = h / 2 + dy - (m[1, 0] * 215.0 + m[1, 1] * 130.0)
        yield cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def make_face_video(path: Path, seconds: float = 2.0, size: tuple[int, int] = (192, 160), fps: float = 25,
                    audio: bool = True, blank: tuple[int, int] | None = None, motion: float = 1.0) -> Path:
    """An H.264 clip of the astronaut's face moving; frames in [blank[0], blank[1]) show no face."""
    from realtalk_cli.media import VideoWriter, mux

    n = int(round(seconds * fps))
    silent = path.with_name(path.stem + ".silent.mp4") if audio else path
    with VideoWriter(silent, size[0], size[1], fps) as w:
        for t, frame in enumerate(astronaut_frames(n, size, motion)):
            if blank and blank[0] <= t < blank[1]:
                frame = np.full_like(frame, 90)
            w.write(frame)
    if audio:
        # speech-like: a 150 Hz buzz switched on and off at syllable rate
        rate = 16000
        t = np.arange(int(seconds * rate)) / rate
        voice = 0.3 * np.sign(np.sin(2 * np.pi * 150 * t)) * (np.sin(2 * np.pi * 3 * t) > 0)
        mux(silent, voice.astype(np.float32), path, duration=seconds)
        silent.unlink()
    return path
