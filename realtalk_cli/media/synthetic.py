"""A generated talking-face clip for benchmarks and tests: a real face photo with head motion.

The photo is scikit-image's `astronaut` (public domain, NASA) when scikit-image is installed (the `dev`
extra: the tests' face), else the Grace Hopper portrait that matplotlib (a dependency) ships as sample
data, so `realtalk bench` works on a plain install; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _photo():
    """(RGB photo, face centre (x, y), the photo's span that fills the frame's shorter side)."""
    import cv2

    try:
        from skimage.data import astronaut
    except ImportError:
        import matplotlib.cbook

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)  # 512x600, face width ~185 px
        return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), (266.0, 240.0), 460.0
    return astronaut(), (215.0, 130.0), 230.0  # 512x512, face width ~92 px


def astronaut_frames(n: int, size: tuple[int, int] = (192, 160), motion: float = 1.0, seed: int = 0):
    """A real face photo (see the module docstring) with smooth synthetic head motion: shift, turn, zoom."""
    import cv2

    img, (cx, cy), span = _photo()
    w, h = size
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 4)
    for t in range(n):
        s = t / 25.0
        angle = motion * 4.0 * np.sin(2 * np.pi * 0.4 * s + phase[0])
        dx = motion * 6.0 * np.sin(2 * np.pi * 0.3 * s + phase[1])
        dy = motion * 4.0 * np.sin(2 * np.pi * 0.5 * s + phase[2])
        zoom = 1.0 + motion * 0.03 * np.sin(2 * np.pi * 0.2 * s + phase[3])
        m = cv2.getRotationMatrix2D((cx, cy), angle, zoom * min(w, h) / span)
        # put the face centre at the frame centre, shifted by (dx, dy)
        m[0, 2] = w / 2 + dx - (m[0, 0] * cx + m[0, 1] * cy)
        m[1, 2] = h / 2 + dy - (m[1, 0] * cx + m[1, 1] * cy)
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
