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
  blur and flicker, each ours / the source's (1 is ideal):
    sharpness   Laplacian energy in the box around the source's lips
    teeth       teeth-like pixels in the source's inner-lip polygon, on frames where the source shows teeth
    flicker     mean |change| inside the mask between consecutive frames, head motion removed
  LPIPS, FID, CSIM   only with their weights (see realtalk_cli/eval/)

Cross-audio protocol (any dubbed video):
  mouth r vs curve   correlation of the tracked mouth opening with a curve the caller supplies (e.g.
                     the a2e prediction `dub` stores; eval/mouth_curve.py)
  silent lips        mouth motion during silent stretches of the speech (default: the dubbed
                     video's own audio track, which is the speech `dub` muxed in)
  LSE-D / LSE-C      SyncNet, only with its weights

`frames=(a, b)` evaluates frames [a, b) at `fps` (e.g. the held-out last 20% of a clip). Frames where
a needed face was not found are left out of that metric, and counted.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.eval import metrics as M
from realtalk_cli.eval.mouth_curve import read_mouth_curve
from realtalk_cli.eval.networks import Networks, PairBatcher
from realtalk_cli.face import align
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.tracker import FaceTrack, TrackerConfig, track_frames
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
    better: str = ""  # "higher", "lower", "one" (a ratio to the source: 1 is ideal) or "" (a reference value)
    protocol: str = ""  # "reconstruction" or "cross-audio"
    note: str = ""


@dataclass
class EvalResult:
    inputs: dict
    metrics: list[Metric]
    per_frame: dict[str, np.ndarray]  # curves over the evaluated frames, nan where undefined

    def value(self, key: str) -> float | None:
        for m in self.metrics:
            if m.key == key:
                return m.value
        raise KeyError(f"no metric {key!r} in this result (keys: {', '.join(m.key for m in self.metrics)})")

    def to_dict(self) -> dict:
        clean = lambda x: None if x is None or not math.isfinite(x) else round(float(x), 6)  # noqa: E731
        return {"inputs": self.inputs,
                "metrics": {m.key: {"label": m.label, "value": clean(m.value), "unit": m.unit, "better": m.better,
                                    "protocol": m.protocol, **({"note": m.note} if m.note else {})} for m in self.metrics},
                "per_frame": {k: [clean(v) for v in np.asarray(a, np.float64)] for k, a in self.per_frame.items()}}


# -- helpers --------------------------------------------------------------------------------------
def _reader(path: Path, options: EvalOptions, info) -> VideoReader:
    start, stop = options.frames or (0, None)
    return VideoReader(path, options.fps, info=info, start=start, stop=stop)


def _track(path: Path, options: EvalOptions, info, what: str, p) -> FaceTrack:
    reader = _reader(path, options, info)
    task = p.add_task(f"tracking {what}", total=reader.n_frames)
    return track_frames(reader, options.fps, TrackerConfig(smooth=False), on_frame=lambda i: p.update(task, advance=1))


def _to_size(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    return frame if frame.shape[:2] == (height, width) else cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)


# -- the protocols --------------------------------------------------------------------------------
@dataclass
class _Geometry:
    """Tracked landmarks of the evaluated frames, in crop pixels, and the crop transforms."""

    n: int
    found_d: np.ndarray  # [n] our face found
    tf_d: np.ndarray  # [n, 2, 3] our own crop (mouth curve, SyncNet)
    lm_d_own: np.ndarray  # [n, 478, 3] ours, in our own crop
    found_s: np.ndarray | None = None
    tf_s: np.ndarray | None = None  # [n, 2, 3] the source's crop: both videos are compared in it
    lm_d: np.ndarray | None = None  # ours, in the source's crop
    lm_s: np.ndarray | None = None  # the source's, in its crop
    scale: np.ndarray | None = None  # our frame pixels -> the source's (a dub written at another size)


def _geometry(track_d: FaceTrack, track_s: FaceTrack | None, info_d, info_s, crop_size: int, dubbed, source) -> _Geometry:
    n = len(track_d) if track_s is None else min(len(track_d), len(track_s))
    if n < 2:
        raise RealtalkError(f"only {n} frame(s) to evaluate in the requested range", dubbed)
    cfg = align.AlignConfig(crop_size=crop_size)
    found_d, lm_d_raw = track_d.found[:n], track_d.landmarks[:n]
    g = _Geometry(n, found_d, None, None)
    if track_s is not None:
        g.found_s = track_s.found[:n]
        if not g.found_s.any():
            raise RealtalkError("no face found in the source video (in the evaluated frames)", source)
        g.tf_s = align.crop_transforms(track_s.landmarks[:n], g.found_s, cfg)
        g.scale = np.float32([info_s.width / info_d.width, info_s.height / info_d.height, info_s.width / info_d.width])
        g.lm_d = align.transform_points(lm_d_raw * g.scale, g.tf_s)
        g.lm_s = align.transform_points(track_s.landmarks[:n], g.tf_s)
    if found_d.any():
        g.tf_d = align.crop_transforms(lm_d_raw, found_d, cfg)
    elif g.tf_s is not None:
        g.tf_d = g.tf_s  # our face is lost everywhere: its metrics are nan, crops still come from the source's place
    else:
        raise RealtalkError("no face found in the video (in the evaluated frames)", dubbed)
    g.lm_d_own = align.transform_points(lm_d_raw, g.tf_d)
    return g


class _BlurFlicker:
    """Per frame, for ours and for the source, all in the source's crop and with the source's landmarks:
    sharpness in the lip box, teeth fraction of the inner lips, flicker inside the mask."""

    def __init__(self, g: _Geometry, crop_size: int):
        self.g, self.S = g, crop_size
        self.curves = {f"{k}_{who}": np.full(g.n, np.nan) for k in ("sharp", "teeth", "flicker") for who in ("ours", "source")}
        self.prev: tuple[int, np.ndarray, np.ndarray] | None = None  # (index, our frame, source frame)

    def add(self, i: int, fd: np.ndarray, fs: np.ndarray, crop_d: np.ndarray, crop_s: np.ndarray, mask: np.ndarray) -> None:
        """Frame i: full frames (ours at the source's size) and their crops; `mask` the mask region."""
        g, S, c, lm = self.g, self.S, self.curves, self.g.lm_s[i, :, :2]
        lips = M.box_mask(lm[mesh.LIPS_OUTER], (S, S))
        c["sharp_ours"][i], c["sharp_source"][i] = M.laplacian_energy(crop_d, lips), M.laplacian_energy(crop_s, lips)
        inner = M.polygon_mask(lm[mesh.LIPS_INNER], (S, S))
        if inner.any():  # thresholds from the source's skin (the mask region without the lips), the same for both
            limits = M.teeth_thresholds(crop_s, mask & ~M.polygon_mask(lm[mesh.LIPS_OUTER], (S, S)))
            c["teeth_ours"][i] = (M.teeth_mask(crop_d, limits) & inner).sum() / inner.sum()
            c["teeth_source"][i] = (M.teeth_mask(crop_s, limits) & inner).sum() / inner.sum()
        if self.prev is not None and self.prev[0] == i - 1:
            # the previous frame cut so that the source's rigid upper face lands where it is in this
            # crop: the crop's smoothing and the head's motion are removed, the mouth's is left
            rigid, _ = cv2.estimateAffinePartial2D(g.lm_s[i - 1, M.RIGID_POINTS, :2], lm[M.RIGID_POINTS], method=cv2.LMEDS)
            if rigid is not None:
                a = (rigid @ np.vstack([g.tf_s[i - 1], [0, 0, 1]])).astype(np.float32)
                c["flicker_ours"][i] = M.mean_abs_difference(crop_d, align.warp_to_crop(self.prev[1], a, S), mask)
                c["flicker_source"][i] = M.mean_abs_difference(crop_s, align.warp_to_crop(self.prev[2], a, S), mask)
        self.prev = (i, fd, fs)


def _pixel_pass(dubbed, source, info_d, info_s, options: EvalOptions, g: _Geometry, track_d: FaceTrack,
                track_s: FaceTrack | None, pairs: PairBatcher, sync, p) -> dict[str, np.ndarray]:
    """Stream both videos once: per-frame PSNR/SSIM, blur and flicker, and crops for the networks.
    Returns the curves."""
    S, n = options.crop_size, g.n
    pix = {k: np.full(n, np.nan) for k in ("psnr", "ssim", "psnr_mask", "ssim_mask")}
    blur = _BlurFlicker(g, S) if source is not None else None
    task = p.add_task("measuring frames", total=n)
    readers = [_reader(dubbed, options, info_d)] + ([_reader(source, options, info_s)] if source is not None else [])
    try:
        for i, frames in enumerate(zip(*readers)):
            if i >= n:
                break
            fd = frames[0]
            if sync is not None:
                sync.add(align.warp_to_crop(fd, g.tf_d[i], S))
            if source is not None and g.found_s[i]:
                fs, fd = frames[1], _to_size(fd, info_s.width, info_s.height)
                crop_s, crop_d = align.warp_to_crop(fs, g.tf_s[i], S), align.warp_to_crop(fd, g.tf_s[i], S)
                mask = M.polygon_mask(g.lm_s[i, mesh.MASK_CONTOUR, :2], (S, S))
                pix["psnr"][i], pix["ssim"][i] = M.psnr(crop_d, crop_s), M.ssim(crop_d, crop_s)
                pix["psnr_mask"][i], pix["ssim_mask"][i] = M.psnr(crop_d, crop_s, mask), M.ssim(crop_d, crop_s, mask)
                blur.add(i, fd, fs, crop_d, crop_s, mask)
                faces = None
                if pairs.nets.arcface is not None and g.found_d[i]:
                    from realtalk_cli.eval.arcface import aligned_face

                    faces = (aligned_face(fd, track_d.landmarks[i] * g.scale), aligned_face(fs, track_s.landmarks[i]))
                pairs.add(i, crop_d, crop_s, faces)
            p.update(task, advance=1)
    finally:
        for reader in readers:  # stop the decoders: a longer video is not read to its end
            reader.close()
    pairs.flush()
    return pix if blur is None else {**pix, **blur.curves}


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _reconstruction_metrics(g: _Geometry, pix: dict, pairs: PairBatcher, per_frame: dict) -> list[Metric]:
    R = "reconstruction"
    both = g.found_d & g.found_s
    m_lmd = np.where(both, M.landmark_distances(g.lm_d, g.lm_s, M.MOUTH_POINTS), np.nan)
    f_lmd = np.where(both, M.landmark_distances(g.lm_d, g.lm_s), np.nan)
    per_frame.update(pix, m_lmd=m_lmd, f_lmd=f_lmd)
    jitter = lambda lm: M.jitter(np.where(both[:, None, None], lm, np.nan))  # noqa: E731
    mouth_r = M.correlation(np.where(both, per_frame["mouth_ours"], np.nan), per_frame["mouth_source"])
    nets = pairs.nets
    lpips = np.array([pairs.lpips.get(i, np.nan) for i in range(g.n)])
    if nets.lpips is not None:
        per_frame["lpips"] = lpips
    n_feats = sum(len(f) for f in pairs.feats_ours)
    fid = None
    if n_feats >= 2:
        from realtalk_cli.eval.inception import frechet_distance

        fid = frechet_distance(np.concatenate(pairs.feats_ours), np.concatenate(pairs.feats_source))
    csim = np.array([pairs.csim.get(i, np.nan) for i in range(g.n)])
    fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
    means = {k: _nanmean(v) for k, v in pix.items()}
    teeth = pix["teeth_source"] >= M.TEETH_MIN_FRACTION  # frames where the source shows teeth
    teeth_means = [_nanmean(pix[f"teeth_{who}"][teeth]) for who in ("ours", "source")]
    return [
        Metric("psnr", "PSNR, face crop", _nanmean(pix["psnr"]), "dB", "higher", R),
        Metric("ssim", "SSIM, face crop", _nanmean(pix["ssim"]), "", "higher", R),
        Metric("psnr_mask", "PSNR, mask region", _nanmean(pix["psnr_mask"]), "dB", "higher", R),
        Metric("ssim_mask", "SSIM, mask region", _nanmean(pix["ssim_mask"]), "", "higher", R),
        Metric("m_lmd", "M-LMD (lips)", _nanmean(m_lmd), "px", "lower", R),
        Metric("f_lmd", "F-LMD (whole face)", _nanmean(f_lmd), "px", "lower", R),
        Metric("jitter", "landmark jitter, ours", jitter(g.lm_d), "px/frame", "lower", R),
        Metric("jitter_source", "landmark jitter, source", jitter(g.lm_s), "px/frame", "", R),
        Metric("mouth_r_source", "mouth opening r vs source", mouth_r, "", "higher", R),
        Metric("sharpness_ratio", "mouth sharpness, ours / source", M.ratio(pix["sharp_ours"], pix["sharp_source"]), "", "one", R,
               f"Laplacian energy in the lip box: ours {fmt(means['sharp_ours'], '.1f')}, source {fmt(means['sharp_source'], '.1f')}"),
        Metric("teeth_ratio", "teeth visibility, ours / source",
               M.ratio(pix["teeth_ours"][teeth], pix["teeth_source"][teeth]), "", "one", R,
               f"{int(teeth.sum())} frames where the source shows teeth; teeth-like share of the inner lips there: "
               f"ours {fmt(teeth_means[0], '.1%')}, source {fmt(teeth_means[1], '.1%')}"),
        Metric("flicker_ratio", "flicker in the mask, ours / source", M.ratio(pix["flicker_ours"], pix["flicker_source"]), "", "one", R,
               f"mean |frame-to-frame change|, head motion removed: ours {fmt(means['flicker_ours'], '.2f')}, "
               f"source {fmt(means['flicker_source'], '.2f')} (0..255)"),
        Metric("lpips", "LPIPS, face crop", _nanmean(lpips), "", "lower", R, "" if nets.lpips is not None else unavailable("lpips")),
        Metric("fid", "FID, face crops", fid, "", "lower", R, f"{n_feats} frames" if nets.fid is not None else unavailable("fid")),
        Metric("csim", "CSIM (identity)", _nanmean(csim), "", "higher", R, "" if nets.arcface is not None else unavailable("csim")),
    ]


def _cross_audio_metrics(g: _Geometry, curve: np.ndarray | None, curve_name: str, audio: np.ndarray | None,
                         fps: float, lse: dict | None, lse_note: str, per_frame: dict) -> list[Metric]:
    X = "cross-audio"
    ours = np.where(g.found_d, per_frame["mouth_ours"], np.nan)
    out = []
    if curve is not None:
        per_frame["mouth_curve"] = np.pad(curve[: g.n], (0, max(0, g.n - len(curve))), constant_values=np.nan)
        out.append(Metric("mouth_r_curve", "mouth opening r vs given curve", M.correlation(ours, per_frame["mouth_curve"]),
                          "", "higher", X, curve_name))
    if audio is not None:
        rms = M.frame_rms(audio, g.n, SAMPLE_RATE, fps)
        silent = M.silent_frames(rms)
        per_frame["speech_rms"], per_frame["silent"] = rms, silent.astype(float)
        still = M.silent_lip_motion(ours, silent)
        note = f"{still['silent_frames']} silent frames (RMS {M.SILENCE_DB:g} dB below the loud level, >= {M.SILENCE_MIN_FRAMES} frames)"
        out += [Metric("silent_motion", "lip motion in silence, ours", still["motion"], "px/frame", "lower", X, note),
                Metric("silent_opening", "mouth opening in silence, ours", still["opening"], "px", "lower", X,
                       f"while speaking: {still['speech_opening']:.2f} px")]
        if g.found_s is not None:
            theirs = M.silent_lip_motion(np.where(g.found_s, per_frame["mouth_source"], np.nan), silent)
            out.append(Metric("silent_motion_source", "lip motion in silence, source", theirs["motion"], "px/frame", "", X))
    out += [Metric("lse_d", "LSE-D (SyncNet distance)", lse and lse["lse_d"], "", "lower", X, lse_note),
            Metric("lse_c", "LSE-C (SyncNet confidence)", lse and lse["lse_c"], "", "higher", X, lse_note)]
    return out


def evaluate(dubbed: str | os.PathLike, source: str | os.PathLike | None = None, speech: str | os.PathLike | None = None,
             mouth_curve: str | os.PathLike | None = None, options: EvalOptions | None = None) -> EvalResult:
    """Run every protocol the inputs allow; see the module docstring."""
    from realtalk_cli.device import resolve_device

    options = options or EvalOptions()
    dubbed, source = Path(dubbed), None if source is None else Path(source)
    info_d, info_s = probe(dubbed), None if source is None else probe(source)
    for path, info in ((dubbed, info_d), (source, info_s)):
        if info is not None and not info.has_video:
            raise RealtalkError("file has no video stream", path)
    if source is None and (options.fid_weights or options.lpips_weights or options.arcface_weights):
        raise UsageError("FID, LPIPS and CSIM compare with the source frames: pass --source too")
    start = (options.frames or (0, None))[0]
    curve = None
    if mouth_curve is not None:  # read before the long work: a wrong file fails at once
        curve, curve_fps = read_mouth_curve(mouth_curve)
        if curve_fps is not None and abs(curve_fps - options.fps) > 1e-3:
            raise RealtalkError(f"mouth curve is at {curve_fps:g} fps, evaluation at {options.fps:g} fps (pass --fps {curve_fps:g})", mouth_curve)
        curve = curve[start:]
    device = resolve_device(options.device)
    nets = Networks(options, device, reconstruction=source is not None)

    with progress(transient=True) as p:
        track_d = _track(dubbed, options, info_d, "dubbed video", p)
        track_s = _track(source, options, info_s, "source video", p) if source is not None else None
        g = _geometry(track_d, track_s, info_d, info_s, options.crop_size, dubbed, source)
        per_frame: dict[str, np.ndarray] = {"mouth_ours": M.mouth_opening(g.lm_d_own)}
        if source is not None:
            per_frame["mouth_source"] = M.mouth_opening(g.lm_s)
        audio = None
        if speech is not None or info_d.has_audio:  # `dub` muxes the speech into its output
            audio = load_audio(speech if speech is not None else dubbed, SAMPLE_RATE)
            a0 = int(round(start * SAMPLE_RATE / options.fps))
            audio = audio[a0 : a0 + int(round(g.n * SAMPLE_RATE / options.fps))]
        sync = None
        if nets.syncnet is not None and audio is not None:
            from realtalk_cli.eval.syncnet import LSEScorer

            sync = LSEScorer(nets.syncnet, audio, SAMPLE_RATE, options.batch_size, device)
        pairs = PairBatcher(nets, options.batch_size)
        pix = None
        if source is not None or sync is not None:
            pix = _pixel_pass(dubbed, source, info_d, info_s, options, g, track_d, track_s, pairs, sync, p)

    metrics = _reconstruction_metrics(g, pix, pairs, per_frame) if source is not None else []
    lse = sync.result() if sync is not None else None
    if nets.syncnet is None:
        lse_note = unavailable("lse")
    else:
        lse_note = f"audio offset {lse['offset']:+d} frames" if lse is not None else "no speech: pass --speech"
    metrics += _cross_audio_metrics(g, curve, Path(mouth_curve).name if mouth_curve else "", audio, options.fps, lse, lse_note, per_frame)
    inputs = {"dubbed": str(dubbed), "source": None if source is None else str(source),
              "speech": str(speech) if speech is not None else (f"{dubbed} (own audio)" if audio is not None else None),
              "mouth_curve": None if mouth_curve is None else str(mouth_curve),
              "fps": options.fps, "frames": [start, start + g.n], "crop_size": options.crop_size,
              "frames_read": {"dubbed": len(track_d), **({"source": len(track_s)} if source is not None else {})},
              "faces_found": {"dubbed": int(g.found_d.sum()), **({"source": int(g.found_s.sum())} if source is not None else {})}}
    return EvalResult(inputs, metrics, per_frame)
