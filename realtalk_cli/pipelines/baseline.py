"""The static-mouth baseline of the reconstruction protocol (`examples/eval_reference_baseline.py`)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from realtalk_cli.errors import RealtalkError
from realtalk_cli.eval import metrics as M
from realtalk_cli.face import align
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.tracker import TrackerConfig
from realtalk_cli.media import SAMPLE_RATE, VideoReader, load_audio, probe
from realtalk_cli.progress import progress


def reference_mouth_baseline(source: str | os.PathLike, out: str | os.PathLike, reference: int = 0,
                             feather: float = 0.04, crf: int = 18, overwrite: bool = True) -> Path:
    """The baseline for the reconstruction protocol: `source` untouched, except that in every frame the
    mask region (the lower-face polygon MASK_CONTOUR of that frame) shows the reference frame's lower
    face instead, cut from the reference's own crop and pasted through the frame's crop transform.

    A method that renders the mouth from the reference must beat this to have learnt anything about
    motion. Frames without a face stay untouched; the source's audio is kept. 25 fps, like `dub`.
    """
    from realtalk_cli.fsutil import check_output_path
    from realtalk_cli.media import VideoWriter, mux
    from realtalk_cli.face.video_track import FPS, track_video

    source, out = Path(source), check_output_path(out, [source], overwrite)
    with progress(transient=True) as p:
        task = p.add_task("tracking source", total=VideoReader(source, FPS).n_frames)
        track = track_video(source, TrackerConfig(), on_frame=lambda i: p.update(task, advance=1))
    if not track.found.any():
        raise RealtalkError("no face found in the video", source)
    ref = reference if 0 <= reference < len(track.found) and track.found[reference] else int(np.flatnonzero(track.found)[0])
    S = align.AlignConfig().crop_size  # track_video's crop
    lm_crop = track.crop_landmarks()
    ref_frame = next(iter(VideoReader(source, FPS, start=ref, stop=ref + 1)))
    ref_crop = align.warp_to_crop(ref_frame, track.transforms[ref], S)
    k = max(1, int(feather * S)) | 1
    silent = out.with_name(out.stem + ".silent.mp4")
    with progress(transient=True) as p, VideoWriter(silent, track.width, track.height, FPS, crf=crf) as writer:
        task = p.add_task("writing baseline", total=len(track.found))
        for i, frame in enumerate(VideoReader(source, FPS)):
            if i < len(track.found) and track.found[i]:
                mask = M.polygon_mask(lm_crop[i, mesh.MASK_CONTOUR, :2], (S, S)).astype(np.float32)
                frame = align.paste_back(frame, ref_crop, track.transforms[i], cv2.GaussianBlur(mask, (k, k), 0))
            writer.write(frame)
            p.update(task, advance=1)
    try:
        if probe(source).has_audio:
            mux(silent, load_audio(source, SAMPLE_RATE), out)
        else:
            silent.replace(out)
    finally:
        silent.unlink(missing_ok=True)
    return out
