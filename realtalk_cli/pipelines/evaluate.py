"""`realtalk eval`: quality metrics of a dubbed video, streamed (memory does not grow with length).

Reconstruction protocol (`source` given; the source's own audio drove the dub, so the source frames
are ground truth). Both videos are tracked (MediaPipe, no landmark smoothing, so jitter is measured,
not filtered away); both are cut with the *source's* crop transforms, so pixels and landmarks are
compared in the same crop (AlignConfig, 256 px by default):
  PSNR / SSIM   over the whole crop, and over the mask region (the lower-face polygon MASK_CONTOUR
                of the source's landmarks, the part dubbing replaces)
  M-LMD / F-LMD mean landmark distance of the lips / of all 478 points, crop pixels
  jitter        frame-to-frame motion of the rigid upper-face points, ours and the source's
  mouth r       correlation of our mouth opening with the source's
  LPIPS, FID, CSIM   only with their weights (see realtalk_cli/eval/)

Cross-audio protocol (any dubbed video):
  mouth r vs curve   correlation of the tracked mouth opening with a curve the caller supplies (e.g.
                     the a2e prediction `dub` stores; `write_mouth_curve` / `read_mouth_curve`)
  silent lips        mouth motion during silent stretches of the speech (default: the dubbed
                     video's own audio track, which is the speech `dub` muxed in)
  LSE-D / LSE-C      SyncNet, only with its weights

`frames=(a, b)` evaluates frames [a, b) at `fps` (e.g. the held-out last 20% of a clip). Frames where
a needed face was not found are left out of that metric, and counted.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.eval import metrics as M
from realtalk_cli.face import align
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.tracker import FaceTrack, TrackerConfig, track_frames
from realtalk_cli.fsutil import atomic_file
from realtalk_cli.media import SAMPLE_RATE, VideoReader, load_audio, probe
from realtalk_cli.progress import progress

# the option that supplies each network's weights, named in "unavailable" messages
WEIGHT_OPTIONS = {"fid": "--fid-weights", "lpips": "--lpips-weights", "csim": "--arcface-weights", "lse": "--syncnet-weights"}


def unavailable(metric: str) -> str:
    return f"unavailable (no weights: pass {WEIGHT_OPTIONS[metric]} PATH)"


@dataclass
class EvalOptions:
    fps: float = 25.0
    frames: tuple[int, int | None] | None = None  # [a, b) at `fps`; None: every frame
    crop_size: int = 256
    fid_weights: Path | None = None
    lpips_weights: list[Path] = field(default_factory=list)  # heads + backbone, or one full state dict
    arcface_weights: Path | None = None
    syncnet_weights: Path | None = None
    device: str = "cpu"
    batch_size: int = 8  # frames per network call


@dataclass
class Metric:
    key: str
    label: str
    value: float | None  # None: not computed (`note` says why)
    unit: str = ""
    better: str = ""  # "higher", "lower" or "" (a reference value)
    protocol: str = ""  # "reconstruction" or "cross-audio"
    note: str = ""


@dataclass
class EvalResult:
    inputs: dict
    metrics: list[Metric]
    per_frame: dict[str, np.ndarray]  # curves over the evaluated frames, nan where undefined

    def value(self, key: str) -> float | None:
        return next(m.value for m in self.metrics if m.key == key)

    def to_dict(self) -> dict:
        clean = lambda x: None if x is None or not math.isfinite(x) else round(float(x), 6)  # noqa: E731
        return {"inputs": self.inputs,
                "metrics": {m.key: {"label": m.label, "value": clean(m.value), "unit": m.unit, "better": m.better,
                                    "protocol": m.protocol, **({"note": m.note} if m.note else {})} for m in self.metrics},
                "per_frame": {k: [clean(v) for v in np.asarray(a, np.float64)] for k, a in self.per_frame.items()}}


# -- mouth-curve sidecar ------------------------------------------------------------------------
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


# -- helpers --------------------------------------------------------------------------------------
def parse_frames(text: str | None) -> tuple[int, int | None] | None:
    """'a:b', 'a:' or ':b' -> (a, b) frame range; None/'' -> None."""
    if not text:
        return None
    try:
        a, b = text.split(":")
        start, stop = int(a) if a.strip() else 0, int(b) if b.strip() else None
    except ValueError:
        raise UsageError(f"--frames {text!r}: expected START:STOP frame indices, e.g. 400:500 or 400:") from None
    if start < 0 or (stop is not None and stop <= start):
        raise UsageError(f"--frames {text!r}: need 0 <= START < STOP")
    return start, stop


def _reader(path: Path, options: EvalOptions, info) -> VideoReader:
    start, stop = options.frames or (0, None)
    return VideoReader(path, options.fps, info=info, start=start, stop=stop)


def _track(path: Path, options: EvalOptions, info, what: str, p) -> FaceTrack:
    reader = _reader(path, options, info)
    task = p.add_task(f"tracking {what}", total=reader.n_frames)
    return track_frames(reader, options.fps, TrackerConfig(smooth=False), on_frame=lambda i: p.update(task, advance=1))


def _to_size(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return frame if frame.shape[:2] == (height, width) else cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


def _tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255


class _Networks:
    """The optional networks, loaded from their weights; `None` where no weights were given."""

    def __init__(self, options: EvalOptions, device: torch.device, reconstruction: bool):
        self.device = device
        self.fid = self.lpips = self.arcface = self.syncnet = None
        if reconstruction and options.fid_weights:
            from realtalk_cli.eval.inception import FIDInceptionV3

            self.fid = FIDInceptionV3.from_file(options.fid_weights).to(device)
        if reconstruction and options.lpips_weights:
            from realtalk_cli.eval.lpips import LPIPS

            self.lpips = LPIPS.from_files(options.lpips_weights).to(device)
        if reconstruction and options.arcface_weights:
            from realtalk_cli.eval.arcface import IResNet

            self.arcface = IResNet.from_file(options.arcface_weights).to(device)
        if options.syncnet_weights:
            from realtalk_cli.eval.syncnet import SyncNet

            self.syncnet = SyncNet.from_file(options.syncnet_weights).to(device)


class _PairBatcher:
    """Crop pairs (ours, source) -> LPIPS per frame, InceptionV3 features, CSIM per frame, in batches."""

    def __init__(self, nets: _Networks, batch_size: int):
        self.nets, self.batch_size = nets, batch_size
        self.pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self.lpips: dict[int, float] = {}
        self.csim: dict[int, float] = {}
        self.feats_ours: list[np.ndarray] = []
        self.feats_source: list[np.ndarray] = []

    def add(self, i: int, ours: np.ndarray, source: np.ndarray, faces: tuple | None) -> None:
        self.pending.append((i, ours, source, *(faces or (None, None))))
        if len(self.pending) >= self.batch_size:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if not self.pending:
            return
        idx, ours, source, face_o, face_s = zip(*self.pending)
        self.pending = []
        dev = self.nets.device
        if self.nets.lpips is not None or self.nets.fid is not None:
            a, b = _tensor(list(ours), dev), _tensor(list(source), dev)
            if self.nets.lpips is not None:
                self.lpips.update(zip(idx, self.nets.lpips(a, b).cpu().tolist()))
            if self.nets.fid is not None:
                self.feats_ours.append(self.nets.fid(a).cpu().numpy())
                self.feats_source.append(self.nets.fid(b).cpu().numpy())
        have = [k for k, f in enumerate(face_o) if f is not None]
        if self.nets.arcface is not None and have:
            from realtalk_cli.eval.arcface import cosine_similarity

            eo = self.nets.arcface(_tensor([face_o[k] for k in have], dev))
            es = self.nets.arcface(_tensor([face_s[k] for k in have], dev))
            self.csim.update(zip([idx[k] for k in have], cosine_similarity(eo, es).cpu().tolist()))


class _SyncWindows:
    """Streams dubbed face crops into SyncNet's 5-frame windows; audio embeddings per window."""

    def __init__(self, model, audio: np.ndarray, batch_size: int, device: torch.device):
        from realtalk_cli.eval import syncnet

        self.sn, self.model, self.device, self.batch_size = syncnet, model, device, batch_size
        self.cc = torch.from_numpy(syncnet.mfcc(audio, SAMPLE_RATE).T.astype(np.float32))  # [13, N]
        self.recent: deque = deque(maxlen=syncnet.WINDOW)
        self.windows: list[np.ndarray] = []
        self.video: list[torch.Tensor] = []
        self.n = 0

    def add(self, crop: np.ndarray) -> None:
        self.recent.append(cv2.resize(crop, (self.sn.INPUT_SIZE, self.sn.INPUT_SIZE), interpolation=cv2.INTER_AREA))
        if len(self.recent) == self.sn.WINDOW:
            self.windows.append(np.stack(self.recent))
            if len(self.windows) >= self.batch_size:
                self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if self.windows:
            x = torch.from_numpy(np.stack(self.windows)).to(self.device).float().permute(0, 4, 1, 2, 3)  # [B, 3, 5, H, W]
            self.video.append(self.model.forward_lip(x).cpu())
            self.n += len(self.windows)
            self.windows = []

    @torch.no_grad()
    def result(self) -> dict[str, float] | None:
        self.flush()
        if self.n < 1:
            return None
        step, span = self.sn.MFCC_PER_FRAME, 20
        cc = torch.nn.functional.pad(self.cc, (0, max(0, (self.n - 1) * step + span - self.cc.shape[1])))
        aud = [self.model.forward_aud(torch.stack([cc[None, :, i * step : i * step + span] for i in range(s, min(self.n, s + 64))]).to(self.device)).cpu()
               for s in range(0, self.n, 64)]
        return self.sn.lse(torch.cat(self.video), torch.cat(aud))


# -- the protocols --------------------------------------------------------------------------------
def evaluate(dubbed: str | os.PathLike, source: str | os.PathLike | None = None, speech: str | os.PathLike | None = None,
             mouth_curve: str | os.PathLike | None = None, options: EvalOptions | None = None) -> EvalResult:
    """Run every protocol the inputs allow; see the module docstring."""
    options = options or EvalOptions()
    dubbed = Path(dubbed)
    info_d = probe(dubbed)
    if not info_d.has_video:
        raise RealtalkError("file has no video stream", dubbed)
    info_s = None
    if source is not None:
        source = Path(source)
        info_s = probe(source)
        if not info_s.has_video:
            raise RealtalkError("file has no video stream", source)
    from realtalk_cli.device import resolve_device

    device = resolve_device(options.device)
    nets = _Networks(options, device, reconstruction=source is not None)
    start = (options.frames or (0, None))[0]
    S = options.crop_size
    align_cfg = align.AlignConfig(crop_size=S)

    with progress(transient=True) as p:
        track_d = _track(dubbed, options, info_d, "dubbed video", p)
        track_s = _track(source, options, info_s, "source video", p) if source is not None else None
        n = len(track_d) if track_s is None else min(len(track_d), len(track_s))
        if n < 2:
            raise RealtalkError(f"only {n} frame(s) to evaluate in the requested range", dubbed)
        if track_s is not None and not track_s.found[:n].any():
            raise RealtalkError("no face found in the source video (in the evaluated frames)", source)
        if track_s is not None:
            tf_s = align.crop_transforms(track_s.landmarks[:n], track_s.found[:n], align_cfg)
        if track_d.found[:n].any():
            tf_d = align.crop_transforms(track_d.landmarks[:n], track_d.found[:n], align_cfg)
        elif track_s is not None:
            tf_d = tf_s  # our face is lost everywhere: its metrics are nan, the crops still come from the source's place
        else:
            raise RealtalkError("no face found in the video (in the evaluated frames)", dubbed)
        lm_d_own = align.transform_points(track_d.landmarks[:n], tf_d)  # ours, in our own crop
        per_frame: dict[str, np.ndarray] = {"mouth_ours": M.mouth_opening(lm_d_own)}
        if track_s is not None:
            sx, sy = info_s.width / info_d.width, info_s.height / info_d.height  # a dubbed video at another size
            lm_d = align.transform_points(track_d.landmarks[:n] * np.float32([sx, sy, sx]), tf_s)
            lm_s = align.transform_points(track_s.landmarks[:n], tf_s)
            per_frame["mouth_source"] = M.mouth_opening(lm_s)

        # pixel pass: only when something needs pixels
        need_pixels = track_s is not None or nets.syncnet is not None
        audio = None
        if speech is not None or info_d.has_audio:
            audio = load_audio(speech if speech is not None else dubbed, SAMPLE_RATE)
            a0 = int(round(start * SAMPLE_RATE / options.fps))
            audio = audio[a0 : a0 + int(round(n * SAMPLE_RATE / options.fps))]
        sync = _SyncWindows(nets.syncnet, audio, options.batch_size, device) if nets.syncnet is not None and audio is not None else None
        pairs = _PairBatcher(nets, options.batch_size)
        pix = {k: np.full(n, np.nan) for k in ("psnr", "ssim", "psnr_mask", "ssim_mask")}
        if need_pixels:
            task = p.add_task("measuring frames", total=n)
            reader_d = _reader(dubbed, options, info_d)
            reader_s = _reader(source, options, info_s) if source is not None else None
            frames_d, frames_s = iter(reader_d), iter(reader_s) if reader_s is not None else None
            for i in range(n):
                fd = next(frames_d)
                if sync is not None:
                    sync.add(align.warp_to_crop(fd, tf_d[i], S))
                if frames_s is not None:
                    fs = next(frames_s)
                    fd = _to_size(fd, info_s.width, info_s.height)
                    crop_s, crop_d = align.warp_to_crop(fs, tf_s[i], S), align.warp_to_crop(fd, tf_s[i], S)
                    if track_s.found[i]:
                        mask = M.polygon_mask(lm_s[i, mesh.MASK_CONTOUR, :2], (S, S))
                        pix["psnr"][i], pix["ssim"][i] = M.psnr(crop_d, crop_s), M.ssim(crop_d, crop_s)
                        pix["psnr_mask"][i], pix["ssim_mask"][i] = M.psnr(crop_d, crop_s, mask), M.ssim(crop_d, crop_s, mask)
                        faces = None
                        if nets.arcface is not None and track_d.found[i]:
                            from realtalk_cli.eval.arcface import aligned_face

                            faces = (aligned_face(fd, track_d.landmarks[i] * np.float32([sx, sy, sx])),
                                     aligned_face(fs, track_s.landmarks[i]))
                        pairs.add(i, crop_d, crop_s, faces)
                p.update(task, advance=1)
            for reader in (reader_d, reader_s):  # stop the decoders: a longer video is not read to its end
                if reader is not None:
                    reader.close()
            pairs.flush()

    found_d = track_d.found[:n]
    metrics: list[Metric] = []
    R, X = "reconstruction", "cross-audio"
    if track_s is not None:
        found_s = track_s.found[:n]
        both = found_d & found_s
        m_lmd = np.where(both, M.landmark_distances(lm_d, lm_s, M.MOUTH_POINTS), np.nan)
        f_lmd = np.where(both, M.landmark_distances(lm_d, lm_s), np.nan)
        per_frame.update(pix, m_lmd=m_lmd, f_lmd=f_lmd)
        mean = lambda x: float(np.nanmean(x)) if np.isfinite(x).any() else None  # noqa: E731
        jit = lambda lm, ok: M.jitter(np.where(ok[:, None, None], lm, np.nan))  # noqa: E731
        metrics += [
            Metric("psnr", "PSNR, face crop", mean(pix["psnr"]), "dB", "higher", R),
            Metric("ssim", "SSIM, face crop", mean(pix["ssim"]), "", "higher", R),
            Metric("psnr_mask", "PSNR, mask region", mean(pix["psnr_mask"]), "dB", "higher", R),
            Metric("ssim_mask", "SSIM, mask region", mean(pix["ssim_mask"]), "", "higher", R),
            Metric("m_lmd", "M-LMD (lips)", mean(m_lmd), "px", "lower", R),
            Metric("f_lmd", "F-LMD (whole face)", mean(f_lmd), "px", "lower", R),
            Metric("jitter", "landmark jitter, ours", jit(lm_d, both), "px/frame", "lower", R),
            Metric("jitter_source", "landmark jitter, source", jit(lm_s, both), "px/frame", "", R),
            Metric("mouth_r_source", "mouth opening r vs source", M.correlation(np.where(both, per_frame["mouth_ours"], np.nan),
                                                                          per_frame["mouth_source"]), "", "higher", R),
        ]
        lp = np.array([pairs.lpips.get(i, np.nan) for i in range(n)])
        metrics.append(Metric("lpips", "LPIPS, face crop", mean(lp), "", "lower", R,
                              "" if nets.lpips is not None else unavailable("lpips")))
        if nets.lpips is not None:
            per_frame["lpips"] = lp
        fid = None
        if nets.fid is not None and len(pairs.feats_ours) and sum(len(f) for f in pairs.feats_ours) >= 2:
            from realtalk_cli.eval.inception import frechet_distance

            fid = frechet_distance(np.concatenate(pairs.feats_ours), np.concatenate(pairs.feats_source))
        metrics.append(Metric("fid", "FID, face crops", fid, "", "lower", R,
                              unavailable("fid") if nets.fid is None else f"{sum(len(f) for f in pairs.feats_ours)} frames"))
        cs = np.array([pairs.csim.get(i, np.nan) for i in range(n)])
        metrics.append(Metric("csim", "CSIM (identity)", mean(cs), "", "higher", R,
                              "" if nets.arcface is not None else unavailable("csim")))

    # cross-audio
    if mouth_curve is not None:
        curve, curve_fps = read_mouth_curve(mouth_curve)
        if curve_fps is not None and abs(curve_fps - options.fps) > 1e-3:
            raise RealtalkError(f"mouth curve is at {curve_fps:g} fps, evaluation at {options.fps:g} fps (pass --fps {curve_fps:g})", mouth_curve)
        curve = curve[start : start + n]
        per_frame["mouth_curve"] = np.pad(curve, (0, n - len(curve)), constant_values=np.nan)
        metrics.append(Metric("mouth_r_curve", "mouth opening r vs given curve",
                              M.correlation(np.where(found_d, per_frame["mouth_ours"], np.nan), per_frame["mouth_curve"]),
                              "", "higher", X, Path(mouth_curve).name))
    if audio is not None:
        rms = M.frame_rms(audio, n, SAMPLE_RATE, options.fps)
        silent = M.silent_frames(rms)
        per_frame["speech_rms"], per_frame["silent"] = rms, silent.astype(float)
        ours = M.silent_lip_motion(np.where(found_d, per_frame["mouth_ours"], np.nan), silent)
        note = f"{ours['silent_frames']} silent frames (RMS {M.SILENCE_DB:g} dB below the loud level, >= {M.SILENCE_MIN_FRAMES} frames)"
        metrics += [Metric("silent_motion", "lip motion in silence, ours", ours["motion"], "px/frame", "lower", X, note),
                    Metric("silent_opening", "mouth opening in silence, ours", ours["opening"], "px", "lower", X,
                           f"while speaking: {ours['speech_opening']:.2f} px")]
        if track_s is not None:
            theirs = M.silent_lip_motion(np.where(track_s.found[:n], per_frame["mouth_source"], np.nan), silent)
            metrics.append(Metric("silent_motion_source", "lip motion in silence, source", theirs["motion"], "px/frame", "", X))
    lse = sync.result() if sync is not None else None
    note = unavailable("lse") if nets.syncnet is None else ("" if audio is not None else "no speech: pass --speech")
    if lse is not None:
        note = f"audio offset {lse['offset']:+d} frames"
    metrics += [Metric("lse_d", "LSE-D (SyncNet distance)", lse and lse["lse_d"], "", "lower", X, note),
                Metric("lse_c", "LSE-C (SyncNet confidence)", lse and lse["lse_c"], "", "higher", X, note)]

    inputs = {"dubbed": str(dubbed), "source": None if source is None else str(source),
              "speech": str(speech) if speech is not None else (str(dubbed) + " (own audio)" if audio is not None else None),
              "mouth_curve": None if mouth_curve is None else str(mouth_curve),
              "fps": options.fps, "frames": [start, start + n], "crop_size": S,
              "faces_found": {"dubbed": int(found_d.sum()), **({"source": int(track_s.found[:n].sum())} if track_s is not None else {})}}
    return EvalResult(inputs, metrics, per_frame)


# -- the static-mouth baseline ----------------------------------------------------------------------
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
    from realtalk_cli.pipelines.preprocess import FPS, track_video

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
