"""The frame bank: the person's own video, kept as sharp face crops with what retrieval needs.

Built once per video (by `dub --adapt` or `build_bank`) from a preprocessed dataset and the source
video, and saved with the model:

    bank/
      config.json        format, frames, stride, build settings
      bank.safetensors   frames [K] (source frame at 25 fps), segment [K], beta [K,n_exp], rho [K,6],
                         alpha [n_id], affines [K,2,3] (bank image -> face-model crop), triangles [F,3]
      face_model.safetensors   the face model the coefficients belong to
      crops.bin          one JPEG per bank frame, concatenated (offsets in bank.safetensors)

A bank image is the box of the source frame around the face, cut out as it is: no rotation and no
resampling (a larger-than-`max_side` box is shrunk), so the warp at dub time is the only resampling
and the bank keeps the lip and teeth detail the video has. A long video is subsampled (every k-th
frame) to at most `max_frames`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from realtalk_cli.checkpoint import load_checkpoint
from realtalk_cli.errors import RealtalkError
from realtalk_cli.face import align
from realtalk_cli.face.model import FaceModel
from realtalk_cli.fsutil import atomic_dir
from realtalk_cli.media.jpeg import decode_rgb, encode_rgb

FORMAT, VERSION = "realtalk-frame-bank", 1


@dataclass
class BankConfig:
    max_frames: int = 1500       # a longer video is subsampled to this many frames
    max_side: int = 720          # a bank image larger than this (a face filling a 4K frame) is shrunk
    jpeg_quality: int = 95


def warp_points(face: FaceModel) -> torch.Tensor:
    """Vertices the warp follows: the whole mesh for the landmark model, the named groups for a
    dense model (tens of thousands of vertices would only slow the triangulation)."""
    if face.n_vertices <= 1000:
        return torch.arange(face.n_vertices)
    names = ("lips_outer", "lips_inner", "mouth", "jaw", "mask_contour", "keypoints", "pose_points")
    return torch.unique(torch.cat([face.groups[n].cpu() for n in names]))


def border_anchors(size: float) -> np.ndarray:
    """Eight fixed points on a square a quarter of the crop outside it: the same place in every aligned
    crop, so the warp is close to the identity away from the face and defined over the whole mask."""
    lo, hi, mid = -0.25 * size, 1.25 * size, 0.5 * size
    return np.array([[lo, lo], [mid, lo], [hi, lo], [hi, mid], [hi, hi], [mid, hi], [lo, hi], [lo, mid]], np.float32)


def project(face: FaceModel, alpha, beta, rho, index: torch.Tensor | None = None) -> np.ndarray:
    """Projected model points [B, P, 2] in face-model crop pixels (alpha shared by the batch)."""
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    beta, rho = t(beta), t(rho)
    with torch.no_grad():
        v = face.project(face.vertices(t(alpha)[None].expand(len(beta), -1), beta, rho))
    return (v if index is None else v[:, index]).numpy()


class FrameBank:
    """Bank frames: crops on demand (one JPEG decode), coefficients and points in memory."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        config, tensors = load_checkpoint(self.dir, required=("bank", "face_model"))
        if config.get("format") != FORMAT:
            raise RealtalkError("not a realtalk frame bank (config format mismatch)", self.dir)
        self.config = config
        self.face = FaceModel.from_checkpoint(config["face_model"], tensors["face_model"])
        b = {k: v.numpy() for k, v in tensors["bank"].items()}
        self.frames, self.segment = b["frames"].astype(np.int64), b["segment"].astype(np.int64)
        self.beta, self.rho, self.alpha = b["beta"], b["rho"], b["alpha"]
        self.triangles, self.offsets = b["triangles"].astype(np.int32), b["offsets"].astype(np.int64)
        self.index = warp_points(self.face)
        # source points of the warp: the model's points, then the fixed anchors, in each bank image
        crop_pts = project(self.face, self.alpha, self.beta, self.rho, self.index)
        crop_pts = np.concatenate([crop_pts, np.broadcast_to(border_anchors(self.face.crop_size), (len(crop_pts), 8, 2))], 1)
        self.points = align.transform_points(crop_pts, align.invert(b["affines"]))
        self._crops = np.memmap(self.dir / "crops.bin", dtype=np.uint8, mode="r")

    def __len__(self) -> int:
        return len(self.frames)

    def crop(self, k: int) -> np.ndarray:
        """uint8 RGB image [h, w, 3] of bank frame k (the face's box of its source frame)."""
        return decode_rgb(self._crops[self.offsets[k]:self.offsets[k + 1]], f"bank crop {k}", self.dir / "crops.bin")

    def successor(self) -> np.ndarray:
        """[K] the bank frame that follows each one in its video (-1 at a segment's end): playing on
        from a chosen frame is the most natural next frame."""
        nxt = np.arange(1, len(self) + 1)
        nxt[-1] = -1
        ends = np.flatnonzero(self.segment[1:] != self.segment[:-1])
        nxt[ends] = -1
        return nxt


def face_box(transform: np.ndarray, crop_size: int, width: int, height: int) -> tuple[int, int, int, int]:
    """The source-frame box (x0, y0, x1, y1) covering a face-model crop, clipped to the frame."""
    corners = np.array([[0, 0], [crop_size, 0], [0, crop_size], [crop_size, crop_size]], np.float32)
    pts = align.transform_points(corners, align.invert(transform))
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int), [width, height])
    return int(x0), int(y0), int(x1), int(y1)


def build_bank(dataset_dir: str | os.PathLike, out: str | os.PathLike, cfg: BankConfig | None = None,
               video: str | os.PathLike | None = None, progress=None) -> Path:
    """Build the frame bank of every clip in a dataset, cutting crops from the clips' source videos
    (or from `video`, for a dataset made from that one video, wherever it lies now)."""
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.media import VideoReader

    cfg = cfg or BankConfig()
    ds = Dataset.open(dataset_dir)
    face = ds.face_model
    clips = ds.clips()
    if not clips:
        raise RealtalkError("dataset has no clips to build a frame bank from", dataset_dir)
    valid = [c.valid() for c in clips]
    stride = max(1, math.ceil(sum(int(v.sum()) for v in valid) / cfg.max_frames))
    frames, segment, betas, rhos, affines, offsets = [], [], [], [], [], [0]
    alpha = clips[0].coeffs()["alpha"]
    with atomic_dir(out) as tmp, open(tmp / "crops.bin", "wb") as blob:
        task = progress.add_task("frame bank", total=sum(len(c) for c in clips), info="") if progress else None
        for seg, (clip, ok) in enumerate(zip(clips, valid)):
            start, stop = clip.meta.get("segment", [0, len(clip)])
            keep = np.flatnonzero(ok)[::stride]
            wanted = set(keep.tolist())
            coeffs, transforms = clip.coeffs(), clip.transforms()
            source = Path(video if video is not None else clip.meta["source"])
            if not source.is_file():
                raise RealtalkError(f"source video of clip {clip.name} not found (needed for the frame bank)", source)
            reader = VideoReader(source, clip.fps, start=start, stop=stop)
            for t, frame in enumerate(reader):
                if progress:
                    progress.update(task, advance=1)
                if t not in wanted:
                    continue
                x0, y0, x1, y1 = face_box(transforms[t], face.crop_size, frame.shape[1], frame.shape[0])
                crop = frame[y0:y1, x0:x1]
                shrink = min(1.0, cfg.max_side / max(crop.shape[:2]))
                if shrink < 1.0:
                    crop = cv2.resize(crop, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
                # bank image pixels -> source pixels -> face-model crop pixels
                to_source = np.array([[1 / shrink, 0, x0], [0, 1 / shrink, y0], [0, 0, 1]])
                affines.append(transforms[t] @ to_source)
                data = encode_rgb(crop, cfg.jpeg_quality)
                blob.write(data)
                offsets.append(offsets[-1] + len(data))
                frames.append(start + t)
                segment.append(seg)
                betas.append(coeffs["beta"][t])
                rhos.append(coeffs["rho"][t])
        if len(frames) == 0:
            raise RealtalkError("no frame of the video could be read into the frame bank", dataset_dir)
        betas, rhos = np.stack(betas).astype(np.float32), np.stack(rhos).astype(np.float32)
        triangles = _triangulation(face, alpha, betas, rhos)
        fm_config, fm_tensors = face.to_checkpoint()
        config = {"format": FORMAT, "version": VERSION, "stride": stride, "frames": len(frames),
                  "face_model": fm_config, "build": asdict(cfg), "source": sorted({c.meta["source"] for c in clips})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        arrays = {"frames": np.asarray(frames, np.int64), "segment": np.asarray(segment, np.int64), "beta": betas,
                  "rho": rhos, "alpha": np.asarray(alpha, np.float32), "triangles": triangles,
                  "affines": np.asarray(affines, np.float32),
                  "offsets": np.asarray(offsets, np.int64)}
        from safetensors.torch import save_file

        save_file({k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in arrays.items()}, str(tmp / "bank.safetensors"))
        save_file(fm_tensors, str(tmp / "face_model.safetensors"))
    return Path(out)


def _triangulation(face: FaceModel, alpha, betas, rhos) -> np.ndarray:
    """Triangles over the warp points and the anchors, from the bank frame with the widest-open mouth
    (so the mouth interior is triangulated across, upper lip to lower lip)."""
    from realtalk_cli.bank.warp import triangulate

    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        verts = face.vertices(t(alpha)[None].expand(len(betas), -1), t(betas), t(rhos))
        widest = int(face.mouth_opening(verts).argmax())
    pts = project(face, alpha, betas[widest:widest + 1], rhos[widest:widest + 1], warp_points(face))[0]
    return triangulate(np.vstack([pts, border_anchors(face.crop_size)]))
