"""Fit the lip prior (nets/lip_prior.py) on many people: `realtalk train --stage lip_prior --data DIR`.

Closed form, seconds on a CPU. Each clip of the dataset is one utterance of one person:

    template   the face every frame's pose is removed against (generalised Procrustes over all clips)
    basis      the first n_comps principal directions of lip motion (face/mouth.py: lip_basis)
    targets    a clip's lip coordinates on the basis, divided by the spread of its own first one, so a
               wide talker and a timid one count alike: the prior learns when and how, not how much
    features   utterance-normalised (the voice, level and microphone removed), standardised over all
               clips, each frame's two projected on the `project` principal directions, frames
               t - context .. t + context side by side
    ridge      one lambda (configs/lip_prior.json); chosen leave-one-speaker-out
               (examples/lip_prior_loso.py, docs/experiments/lip_prior.md)

Some clips' video is a few frames off their audio (the shared Obama clips by about 4). A first fit
measures each clip's lag (the shift of its mouth that best matches the fit's prediction); a clip whose
re-timed mouth correlates `min_lag_gain` better is re-timed and the ridge fitted again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.data.dataset import Dataset
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face.fit import generalised_procrustes
from realtalk_cli.face.mouth import lip_basis, lip_shapes
from realtalk_cli.inference.a2e import normalize_utterance
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear
from realtalk_cli.nets.lip_prior import LipPrior, LipPriorConfig
from realtalk_cli.train.a2e_task import pearson, ridge_fit


@dataclass
class PriorClip:
    name: str
    landmarks3d: np.ndarray  # [T, 478, 3]
    valid: np.ndarray  # bool [T]
    features: np.ndarray  # [2T, D], utterance-normalised


def load_prior_clips(data: str | os.PathLike, features: str) -> tuple[list[PriorClip], dict]:
    """Every clip of a dataset, and its audio feature settings (which must be of kind `features`)."""
    ds = Dataset.open(data)
    audio = ds.config.get("features", {})
    if audio.get("kind") != features:
        raise UsageError(f"the lip prior hears {features} features, this dataset has {audio.get('kind')} "
                         f"(preprocess with --features {features})", ds.dir)
    clips = [PriorClip(c.name, c.landmarks3d().astype(np.float32), c.valid(), normalize_utterance(c.audio_features()))
             for c in ds.clips()]
    return [c for c in clips if c.valid.sum() > 0], audio


def lip_targets(clip: PriorClip, basis: np.ndarray, template: np.ndarray) -> np.ndarray:
    """[T, n_comps] lip coordinates around the clip's mean, in units of the spread of its first."""
    lips = lip_shapes(clip.landmarks3d, template)
    y = (lips - lips[clip.valid].mean(0)) @ basis.T
    return y / max(float(y[clip.valid, 0].std()), 1e-6)


def fit_lip_prior(clips: list[PriorClip], audio: dict, cfg: LipPriorConfig) -> tuple[LipPrior, dict]:
    """The prior fitted on these clips, and per clip the lag it was re-timed by."""
    if len(clips) < 2:
        raise RealtalkError(f"a lip prior needs clips of several people, got {len(clips)}")
    template = generalised_procrustes([c.landmarks3d[c.valid] for c in clips])
    basis = lip_basis([lip_shapes(c.landmarks3d[c.valid], template) for c in clips], cfg.n_comps)
    targets = [lip_targets(c, basis, template) for c in clips]

    dim = clips[0].features.shape[1]
    stacked = np.concatenate([c.features for c in clips]).astype(np.float64)
    mean, std = stacked.mean(0), np.maximum(stacked.std(0), 1e-6)
    frames = np.concatenate([((c.features - mean) / std).reshape(-1, 2 * dim) for c in clips])
    _, _, vt = np.linalg.svd(frames[:: max(1, len(frames) // 20000)], full_matrices=False)  # principal directions
    model = A2ELinear(A2EConfig(kind="linear", audio_dim=dim, n_id=0, n_exp=cfg.n_comps, n_frames=cfg.n_frames,
                                context=cfg.context, project=cfg.project, smooth=cfg.smooth, utterance_norm=True))
    model.set_stats((torch.as_tensor(mean), torch.as_tensor(std)))
    model.set_projection(torch.as_tensor(vt[: cfg.project].T.copy()))
    with torch.no_grad():
        designs = [model.design(torch.as_tensor(c.features)).double().numpy() for c in clips]

    lags = np.zeros(len(clips), int)
    for _ in range(2 if cfg.max_lag else 1):
        w, b = _solve(designs, targets, clips, lags, cfg.ridge)
        if not cfg.max_lag or lags.any():
            break
        lags = np.array([_best_lag(d @ w[:, 0] + b[0], y[:, 0], c.valid, cfg) for d, y, c in zip(designs, targets, clips)])
        if not lags.any():
            break
    model.set_weights(torch.as_tensor(w), torch.as_tensor(b))
    info = {"clips": [c.name for c in clips], "frames": int(sum(c.valid.sum() for c in clips)),
            "lags": {c.name: int(lag) for c, lag in zip(clips, lags) if lag}}
    return LipPrior(model, basis, template, audio, cfg, info), info


def _shift(y: np.ndarray, valid: np.ndarray, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets re-timed: frame t is paired with the mouth of frame t + lag (ends no longer valid)."""
    if lag == 0:
        return y, valid
    out, keep = np.roll(y, -lag, 0), np.roll(valid, -lag)
    if lag > 0:
        keep[len(y) - lag:] = False
    else:
        keep[:-lag] = False
    return out, keep


def _solve(designs, targets, clips, lags, lam: float) -> tuple[np.ndarray, np.ndarray]:
    st = dict(n=0, sx=0, sy=0, xx=0, xy=0)
    for x, y, c, lag in zip(designs, targets, clips, lags):
        y, keep = _shift(y, c.valid, int(lag))
        x, y = x[keep], y[keep]
        st["n"] += len(x); st["sx"] += x.sum(0); st["sy"] += y.sum(0)
        st["xx"] += x.T @ x; st["xy"] += x.T @ y
    return ridge_fit(st, np.array([lam]), [np.zeros_like(st["xy"])])[0]


def _best_lag(pred: np.ndarray, y: np.ndarray, valid: np.ndarray, cfg: LipPriorConfig) -> int:
    """The lag that best re-times a clip's mouth against the prediction, if it helps by min_lag_gain."""
    def r(lag):
        yy, keep = _shift(y, valid, lag)
        return pearson(pred[keep], yy[keep]) if keep.sum() > 10 else -1.0

    scores = {lag: r(lag) for lag in range(-cfg.max_lag, cfg.max_lag + 1)}
    best = max(scores, key=scores.get)
    return best if scores[best] - scores[0] > cfg.min_lag_gain else 0


def default_config() -> dict:
    return {"stage": "lip_prior", "fit": asdict(LipPriorConfig())}


def fit_run(data: str | os.PathLike, out: str | os.PathLike, config: dict) -> Path:
    """`realtalk train --stage lip_prior`: fit on every clip of `data`, save to `out` with the config used."""
    unknown = set(config) - {"stage", "fit", "data", "trainer", "task", "model"}
    if unknown:
        raise UsageError(f"unknown lip prior config sections: {', '.join(sorted(unknown))}")
    cfg = LipPriorConfig.from_dict(config.get("fit", {}))
    clips, audio = load_prior_clips(data, cfg.features)
    prior, info = fit_lip_prior(clips, audio, cfg)
    out = Path(out)
    prior.save_pretrained(out)
    (out / "run_config.json").write_text(json.dumps({**config, "fit": asdict(cfg)}, indent=2))
    print(f"lip prior: {len(clips)} clips, {info['frames']} frames; re-timed {info['lags'] or 'none'}")
    return out
