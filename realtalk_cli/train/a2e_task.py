"""Training task of the audio-to-expression transformer (plugs into train/trainer.py).

A sample is a window of T consecutive valid frames of one clip: its 2T audio features, the clip's
shape alpha (first frame), N historical expressions drawn at random from other valid frames of the
same clip (paper: "randomly selected during training and inference"), and the tracked beta, rho.

    loss = MSE(beta, beta_hat) + 0.1 * L_V                       paper eq. (3), (4)
    MSE  = mean over frames of ||beta - beta_hat||^2
    L_V  = mean over frames and mouth-region vertices of ||V(alpha, beta, rho) - V(alpha, beta_hat, rho)||^2
           (posed vertices, crop pixels)

A linear a2e (model kind "linear", nets/a2e.py: A2ELinear) is solved in closed form instead, in one
trainer step: ridge regression on the training frames, its regularisation chosen by cross-validation
over 5 contiguous blocks of them (`fit_linear`).

Splits: by default the dataset's own clip split (manifest). `split_frames = f > 0` splits inside
every clip instead: the first f of its frames train, the rest (up to `split_end`) are held out
(single-video experiments). `holdout = (a, b)` holds out the block [a, b) of every clip and trains on
the rest, with HOLDOUT_GAP frames left out on each side: moving the block over the clip predicts
every frame with a model that never heard it (cross-fitting, examples/cross_voice.py --rotate).
Held-out frames are predicted with inference/a2e.py exactly as at inference, with the history drawn
from the training frames of the same clip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from realtalk_cli.audio.augment import shift_bands, warp_bands
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear, A2ETransformer, build_a2e
from realtalk_cli.inference.a2e import history_indices, normalize_utterance, predict_expressions, sample_history
from realtalk_cli.train.trainer import Task, TrainerConfig, unwrap


@dataclass
class A2ETaskConfig:
    batch_size: int = 64  # per rank (paper: 64 x 8 GPUs)
    lr: float = 5e-5
    betas: tuple[float, float] = (0.95, 0.999)
    weight_decay: float = 0.0
    vertex_weight: float = 0.1
    split_frames: float = 0.0  # 0: the dataset's clip split; f in (0, 1): first f of every clip trains
    split_end: float = 1.0  # with split_frames: frames [f, split_end) are held out; < 1 keeps the tail
    # unseen (an inner validation split for choosing settings without touching the test frames)
    history_seed: int = 0  # seed of the held-out history draw (validation is deterministic)
    # augmentation: a training window reads, with probability `augment`, the features of an altered
    # copy of its clip's audio, timing kept (audio/augment.py): each voice shift in semitones, and
    # noise + reverb at each SNR; the copies are made once, when the task starts
    augment: float = 0.0
    augment_semitones: tuple[float, ...] = (-4.0, -2.0, 2.0, 4.0)
    augment_snr_db: tuple[float, ...] = (10.0, 20.0)
    # linear a2e: the fit also sees every frame with its features moved by these many mel bands
    # (audio/augment.shift_bands), and with its spectrum warped by these many semitones (warp_bands),
    # so other voices' formants land where the speaker's were (mel features only)
    band_shifts: tuple[int, ...] = ()
    warp_semitones: tuple[float, ...] = ()
    # instead of split_frames: (a, b), fractions of every clip: that block is held out, the rest trains
    holdout: tuple[float, ...] = ()
    # linear a2e: start from the lip prior of many people (nets/lip_prior.py): "builtin" (the shipped one)
    # or a directory; the model then takes the prior's features, window, context and projection
    prior: str = ""
    # linear a2e: scale the fitted motion up (never down, at most max_gain) until the mouth of its
    # predictions on the training audio moves as much as the tracked one: ridge shrinks toward the
    # still mouth, which a viewer sees as timid lips
    match_amplitude: bool = False
    max_gain: float = 2.5


HOLDOUT_GAP = 12  # frames left out on each side of a held-out block: half a second of context and mouth


def default_config() -> dict:
    """The paper's configuration; JSON config files override parts of it."""
    return {
        "stage": "a2e",
        "model": A2EConfig().to_dict(),
        "task": asdict(A2ETaskConfig()),
        "trainer": asdict(TrainerConfig(steps=200_000, val_every=2000, ckpt_every=10_000, log_every=50)),
    }


@dataclass
class ClipArrays:
    """One clip's arrays and the frame ranges [lo, hi) it contributes to training and validation."""

    name: str
    alpha: np.ndarray  # [n_id]
    beta: np.ndarray  # [n, n_exp]
    rho: np.ndarray  # [n, n_pose]
    features: np.ndarray  # [2n, F]
    valid: np.ndarray  # bool [n]
    train: tuple[int, int] | None
    val: tuple[int, int] | None


def load_clips(ds: Dataset, split_frames: float, split_end: float = 1.0, holdout: Sequence[float] = ()) -> list[ClipArrays]:
    if holdout:
        if split_frames or len(holdout) != 2 or not 0.0 <= holdout[0] < holdout[1] <= 1.0:
            raise UsageError(f"holdout needs two fractions 0 <= a < b <= 1 and no split_frames, got {list(holdout)}")
        chosen = [(c, "holdout") for c in ds.clips()]
    elif split_frames:
        if not 0.0 < split_frames < split_end <= 1.0:
            raise UsageError(f"need 0 < split_frames < split_end <= 1, got {split_frames}, {split_end}")
        chosen = [(c, "within") for c in ds.clips()]
    else:
        chosen = [(c, "train") for c in ds.clips("train")] + [(c, "val") for c in ds.clips("val")]
    out = []
    for clip, role in chosen:
        if not clip.has_coeffs:
            continue
        co, n = clip.coeffs(), clip.n_frames
        if role == "holdout":
            ranges = _around_block(n, *holdout)
        else:
            cut, end = int(round(split_frames * n)), int(round(split_end * n))
            ranges = [{"within": ((0, cut), (cut, end)), "train": ((0, n), None), "val": (None, (0, n))}[role]]
        out += [ClipArrays(clip.name, co["alpha"], co["beta"], co["rho"], clip.audio_features(), clip.valid(), *r)
                for r in ranges]
    return out


def _around_block(n: int, a: float, b: float) -> list[tuple]:
    """(train, val) ranges of a clip of n frames whose block [a n, b n) is held out: the part before it
    and the part after it train, each normalised as its own utterance; one of them carries the block."""
    lo, hi = int(round(a * n)), int(round(b * n))
    parts = [p for p in ((0, lo - HOLDOUT_GAP), (hi + HOLDOUT_GAP, n)) if p[1] > p[0]]
    if not parts:
        raise UsageError(f"holdout [{a}, {b}) leaves no training frames in a clip of {n} frames")
    return [(p, (lo, hi) if i == 0 else None) for i, p in enumerate(parts)]


def window_table(clips: list[ClipArrays], T: int) -> np.ndarray:
    """[M, 2] (clip index, start) of every training window whose T frames are all valid."""
    rows = []
    for ci, c in enumerate(clips):
        if c.train is None:
            continue
        lo, hi = c.train
        ok = c.valid[lo:hi].astype(np.int64)
        if len(ok) < T:
            continue
        full = np.convolve(ok, np.ones(T, np.int64), mode="valid") == T  # window fully valid
        rows += [(ci, lo + s) for s in np.flatnonzero(full)]
    return np.asarray(rows, np.int64).reshape(-1, 2)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0  # a constant prediction carries no signal


@torch.no_grad()
def expression_metrics(face, alpha: np.ndarray, beta_hat: np.ndarray, beta: np.ndarray, rho: np.ndarray) -> dict:
    """Held-out metrics of one clip's predicted frames (valid frames only, selected by the caller).

    exp_mse: paper eq. (3) (squared error summed over coefficients, mean over frames);
    mouth_corr: Pearson correlation of the mouth opening (inner-lip vertex distance) over time;
    mouth_mae: mean absolute mouth-opening error (crop pixels); vertex_mse: L_V on the mouth region.
    """
    dev = face.mean.device
    t = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)  # noqa: E731
    a = t(alpha)[None].expand(len(beta), -1)
    v_hat, v = face.vertices(a, t(beta_hat), t(rho)), face.vertices(a, t(beta), t(rho))
    region = face.groups["mouth_region"].to(dev)
    open_hat, open_true = face.mouth_opening(v_hat).cpu().numpy(), face.mouth_opening(v).cpu().numpy()
    return {
        "exp_mse": float(((beta_hat - beta) ** 2).sum(-1).mean()),
        "vertex_mse": float(((v_hat[:, region] - v[:, region]) ** 2).sum(-1).mean()),
        "mouth_corr": pearson(open_hat, open_true),
        "mouth_mae": float(np.abs(open_hat - open_true).mean()),
    }


def average_metrics(per_clip: list[tuple[int, dict]]) -> dict[str, float]:
    """Frame-weighted mean over clips (correlations are per clip: speakers differ in offset)."""
    total = sum(n for n, _ in per_clip)
    return {k: sum(n * m[k] for n, m in per_clip) / total for k in per_clip[0][1]} if total else {}


def predict_heldout(model: A2ETransformer, c: ClipArrays, history_seed: int = 0, features: np.ndarray | None = None) -> np.ndarray:
    """beta_hat for a clip's held-out frames [lo, hi), exactly as inference would produce them.

    History comes from the frames the model may see (the clip's training part, when it has one).
    `features` replaces the clip's audio features (the time-shifted-audio baseline).
    """
    lo, hi = c.val
    pool = c.valid.copy()
    if c.train is not None:
        pool[: c.train[0]], pool[c.train[1] :] = False, False
    history = sample_history(c.beta, pool, model.cfg.n_history, np.random.default_rng(history_seed))
    feats = c.features if features is None else features
    return predict_expressions(model, feats[2 * lo : 2 * hi], c.alpha, history)


def evaluate_heldout(face, clips: list[ClipArrays], predict: Callable[[ClipArrays], np.ndarray]) -> dict[str, float]:
    """expression_metrics over the valid held-out frames of every clip; predict(clip) -> [hi - lo, n_exp]."""
    per_clip = []
    for c in clips:
        if c.val is None:
            continue
        lo, hi = c.val
        keep = c.valid[lo:hi]
        if keep.sum() < 2:
            continue
        pred = predict(c)
        per_clip.append((int(keep.sum()), expression_metrics(face, c.alpha, pred[keep], c.beta[lo:hi][keep], c.rho[lo:hi][keep])))
    return average_metrics(per_clip) if per_clip else {}


RIDGE_LAMBDAS = 10.0 ** np.arange(0.0, 6.5, 0.5)  # candidates, on standardised features


def fit_linear(model: A2ELinear, clips: list[ClipArrays], variants: Sequence[Callable[[np.ndarray], np.ndarray]] = (),
               folds: int = 5, metric: np.ndarray | None = None, prior: np.ndarray | None = None) -> dict[str, float]:
    """Fit the ridge on every clip's valid training frames and on copies of them whose features went
    through each of `variants` (other voices made in the feature domain: band shifts, warps); returns the
    chosen lambda and its cross-validated error per frame, measured as e' metric e for an expression
    error e (`mouth_metric`: the mouth's vertex error; default: the plain squared error).

    lambda shrinks the weights toward `prior` (the weights of a generic model fitted on many speakers,
    in this model's design layout), or toward zero: with a few seconds of speech the fit stays close
    to what many speakers taught, and a minute moves it to this person.

    Only sums are kept per fold (X'X, X'Y, ...), so memory does not grow with the data. The folds are
    contiguous blocks in time (neighbouring frames are nearly equal, so random folds would reward
    overfitting); a frame's shifted copies train with it, and lambda is scored on the real frames only.
    """
    rows = sum(int(c.valid[slice(*c.train)].sum()) for c in clips if c.train is not None)
    if rows < 2 * folds:
        raise RealtalkError(f"too few valid training frames for the linear a2e ({rows})")
    empty = lambda: [dict(n=0, sx=0, sy=0, xx=0, xy=0, yy=0) for _ in range(folds)]  # noqa: E731
    train_sums, real_sums, seen = empty(), empty(), 0  # per fold: every version / the real frames only
    for c in clips:
        if c.train is None:
            continue
        lo, hi = c.train
        keep = c.valid[lo:hi]
        y = c.beta[lo:hi][keep].astype(np.float64)
        fold = (folds * (seen + np.arange(len(y)))) // rows
        seen += len(y)
        for v, variant in enumerate((None, *variants)):
            feats = c.features if variant is None else variant(c.features)
            with torch.no_grad():
                x = model.design(torch.as_tensor(feats, dtype=torch.float32)).double().numpy()
            x = x[lo:hi][keep]
            for f in np.unique(fold):
                for sums in (train_sums, real_sums) if v == 0 else (train_sums,):
                    xf, yf, st = x[fold == f], y[fold == f], sums[f]
                    st["n"] += len(xf); st["sx"] += xf.sum(0); st["sy"] += yf.sum(0)
                    st["xx"] += xf.T @ xf; st["xy"] += xf.T @ yf; st["yy"] += yf.T @ yf
    metric = np.eye(model.cfg.n_exp) if metric is None else metric
    # shrink toward zero, and toward the prior when there is one: cross-validation keeps the prior only
    # where it predicts this person's mouth better (a generic model may not fit a voice or a face)
    zero = np.zeros_like(train_sums[0]["xy"])
    priors = [zero] if prior is None or not np.any(prior) else [zero, np.asarray(prior, np.float64)]
    total = {k: sum(st[k] for st in train_sums) for k in train_sums[0]}
    errors, still = np.zeros(len(priors) * len(RIDGE_LAMBDAS)), 0.0  # still: predicting the training mean (w = 0)
    for held, st in zip(train_sums, real_sums):
        train = {k: total[k] - held[k] for k in total}
        fits = ridge_fit(train, RIDGE_LAMBDAS, priors) + [(zero, train["sy"] / train["n"])]
        for i, (w, b) in enumerate(fits):  # sum of e e' over the held-out real frames
            cross = np.outer(w.T @ st["sx"], b) - w.T @ st["xy"] - np.outer(b, st["sy"])
            ee = w.T @ st["xx"] @ w + cross + cross.T + st["n"] * np.outer(b, b) + st["yy"]
            if i < len(errors):
                errors[i] += (metric * ee).sum()
            else:
                still += (metric * ee).sum()
    best = int(np.argmin(errors))
    which, lam = divmod(best, len(RIDGE_LAMBDAS))
    w, b = ridge_fit(total, RIDGE_LAMBDAS[lam : lam + 1], priors[which : which + 1])[0]
    model.set_weights(torch.as_tensor(w), torch.as_tensor(b))
    # gain: the share of the still mouth's cross-validated error that the audio explains
    return {"lambda": float(RIDGE_LAMBDAS[lam]), "cv_mse": float(errors[best] / rows),
            "cv_gain": float(1.0 - errors[best] / still), "prior": float(which)}


def person_prior(prior, clips: list[ClipArrays], landmarks: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The lip prior (nets/lip_prior.py) as this person's linear a2e weights (w, b): their lip coordinates,
    measured on their own training frames (`landmarks` [T, 478, 3] per clip name), are mapped to their
    expression coefficients by least squares (beta ~ A y + c), so the prior's spread-normalised lip
    motion becomes beta = A s prior(audio) + c, s the spread of the person's own first lip coordinate."""
    ys, betas = [], []
    for c in clips:
        if c.train is not None:
            lo, hi = c.train
            keep = c.valid[lo:hi]
            ys.append(prior.coords(landmarks[c.name][lo:hi], keep)[keep])
            betas.append(c.beta[lo:hi][keep])
    y, beta = np.concatenate(ys).astype(np.float64), np.concatenate(betas).astype(np.float64)
    spread = max(float(y[:, 0].std()), 1e-6)
    yc, bc = y - y.mean(0), beta - beta.mean(0)
    a = np.linalg.solve(yc.T @ yc + 1e-6 * len(y) * np.eye(y.shape[1]), yc.T @ bc)  # [K, n_exp]
    w, b = (t.double().numpy() for t in prior.model.weights())
    return torch.as_tensor(w @ (spread * a)), torch.as_tensor(beta.mean(0) - y.mean(0) @ a + spread * b @ a)


@torch.no_grad()
def match_amplitude(model: A2ELinear, clips: list[ClipArrays], metric: np.ndarray, max_gain: float) -> float:
    """Scale a fitted linear a2e's motion about its mean by g in [1, max_gain] so that its mouth moves as
    much as the tracked mouth on the training frames (e' metric e summed); returns g."""
    pred, true = [], []
    for c in clips:
        if c.train is not None:
            lo, hi = c.train
            keep = c.valid[lo:hi]
            beta_hat = model(torch.as_tensor(c.features[2 * lo : 2 * hi], dtype=torch.float32)[None])[0].double().numpy()
            pred.append(beta_hat[keep]), true.append(c.beta[lo:hi][keep])
    spread = lambda x: float(np.einsum("ti,ij,tj->", x - x.mean(0), metric, x - x.mean(0)))  # noqa: E731
    p, t = np.concatenate(pred), np.concatenate(true).astype(np.float64)
    g = float(np.clip(np.sqrt(spread(t) / max(spread(p), 1e-12)), 1.0, max_gain))
    w, b = model.weights()
    x_mean = p.mean(0) - b.double().numpy()  # the mean of X w over these frames
    model.set_weights(w * g, b + torch.as_tensor((1 - g) * x_mean, dtype=b.dtype))
    return g


def _on_mel(features: np.ndarray, transform: Callable[[np.ndarray], np.ndarray], n_mels: int) -> np.ndarray:
    """`transform` of the mel part (the first n_mels columns); phone posteriors beside it stay as they are."""
    mel = transform(features[:, :n_mels])
    return mel if features.shape[1] == n_mels else np.concatenate([mel, features[:, n_mels:]], 1)


def mouth_metric(face) -> np.ndarray:
    """[n_exp, n_exp] M with e' M e = squared displacement of the mouth-region vertices (unposed) that
    an expression error e causes: what lip sync cares about, unlike the eyes and brows in beta."""
    basis = face.exp_basis[:, face.groups["mouth_region"]].reshape(face.n_exp, -1).double().cpu().numpy()
    return basis @ basis.T


def ridge_fit(st: dict, lambdas: np.ndarray, priors: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W, b) minimising ||X W + b - Y||^2 + lambda ||W - prior||^2 from the sums in `st`, for each prior
    and each lambda (prior-major)."""
    mx, my = st["sx"] / st["n"], st["sy"] / st["n"]
    gram = st["xx"] - st["n"] * np.outer(mx, mx)
    cross = st["xy"] - st["n"] * np.outer(mx, my)
    e, q = np.linalg.eigh(gram)
    out = []
    for prior in priors:
        qc = q.T @ (cross - gram @ prior)  # what the prior leaves unexplained
        for lam in lambdas:
            w = prior + q @ (qc / (np.maximum(e, 0.0) + lam)[:, None])
            out.append((w, my - mx @ w))
    return out


class A2ETask(Task):
    def __init__(self, data: str | Path, config: dict, device: torch.device):
        super().__init__(config, device)
        tc = config["task"]
        unknown = set(tc) - {f.name for f in fields(A2ETaskConfig)}
        if unknown:
            raise UsageError(f"unknown a2e task config keys: {', '.join(sorted(unknown))}")
        self.tc = A2ETaskConfig(**{**tc, "betas": tuple(tc.get("betas", (0.95, 0.999))),
                                   "augment_semitones": tuple(tc.get("augment_semitones", A2ETaskConfig.augment_semitones)),
                                   "augment_snr_db": tuple(tc.get("augment_snr_db", A2ETaskConfig.augment_snr_db)),
                                   "band_shifts": tuple(tc.get("band_shifts", ())),
                                   "warp_semitones": tuple(tc.get("warp_semitones", ())),
                                   "holdout": tuple(tc.get("holdout", ()))})
        self.ds = Dataset.open(data)
        self.face = self.ds.face_model.to(device).eval()
        self.clips = load_clips(self.ds, self.tc.split_frames, self.tc.split_end, self.tc.holdout)
        if not self.clips:
            raise RealtalkError("dataset has no clips with coefficients", data)

        # The data decides the input sizes; record them in the run config.
        mc = {**config["model"], "audio_dim": int(self.clips[0].features.shape[1]),
              "n_id": self.face.n_id, "n_exp": self.face.n_exp}
        self.prior = self._load_prior() if self.tc.prior else None
        if self.prior is not None:  # the prior's front end and layout, so its weights apply as they are
            pc = self.prior.model.cfg
            mc.update(kind="linear", utterance_norm=True, context=pc.context, project=pc.project, smooth=pc.smooth,
                      n_frames=pc.n_frames)
        config["model"] = mc
        self.model_cfg = A2EConfig.from_dict(mc)
        T = self.model_cfg.n_frames
        self.windows = window_table(self.clips, T)
        if len(self.windows) == 0:
            raise RealtalkError(f"no training window of {T} consecutive valid frames", data)

        # All training arrays live on the device, concatenated; a batch is a gather.
        self.offsets = np.cumsum([0] + [len(c.beta) for c in self.clips])
        cat = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.float32, device=device)  # noqa: E731
        versions = [[c.features for c in self.clips]] + self._augmented_features()
        if self.model_cfg.utterance_norm:  # each clip is an utterance (its training part sets the scale)
            versions = [[self._normalize(c, f) for c, f in zip(self.clips, v)] for v in versions]
            for c, f in zip(self.clips, versions[0]):
                c.features = f
        self.versions = torch.stack([cat(v) for v in versions])  # [K, total features, F]; K - 1 altered copies
        self.features = self.versions[0]
        self.beta, self.rho = cat([c.beta for c in self.clips]), cat([c.rho for c in self.clips])
        self.alpha = cat([c.alpha[None] for c in self.clips])
        self.region = self.face.groups["mouth_region"].to(device)

        model = build_a2e(self.model_cfg)
        model.set_stats(*self._training_stats())
        if self.prior is not None:
            model.set_stats((self.prior.model.audio_stats[0], self.prior.model.audio_stats[1]))
            model.set_projection(self.prior.model.projection)
            model.set_weights(*person_prior(self.prior, self.clips, {c.name: c.landmarks3d() for c in self.ds.clips()}))
        self.models = {"a2e": model.to(device)}
        self.closed_form = self.model_cfg.kind == "linear"

    def _load_prior(self):
        from realtalk_cli.nets.lip_prior import LipPrior

        prior = LipPrior.from_pretrained(self.tc.prior)
        kind = self.ds.config.get("features", {}).get("kind")
        if kind != prior.audio.get("kind"):
            raise UsageError(f"the lip prior hears {prior.audio.get('kind')} features, this dataset has {kind} "
                             f"(preprocess with --features {prior.audio.get('kind')}, or set task.prior to \"\")", self.ds.dir)
        return prior


    def _augmented_features(self) -> list[list[np.ndarray]]:
        """Features of each altered copy of every clip's audio (none without augmentation)."""
        if self.tc.augment <= 0:
            return []
        from realtalk_cli.audio.augment import noise_reverb, shift_voice
        from realtalk_cli.audio.features import AudioFrontEnd

        front = AudioFrontEnd(self.ds.config["features"], self.device)
        audio = {c.name: c.audio() for c in self.ds.clips()}
        alter = [lambda x, s=s: shift_voice(x, s) for s in self.tc.augment_semitones]
        alter += [lambda x, r=r: noise_reverb(x, snr_db=r, seed=int(r)) for r in self.tc.augment_snr_db]
        return [[front(f(audio[c.name]), n=len(c.features)) for c in self.clips] for f in alter]

    def _voice_variants(self) -> list[Callable[[np.ndarray], np.ndarray]]:
        """The linear fit's feature-domain voices: band shifts and spectral warps of the mel features."""
        if not (self.tc.band_shifts or self.tc.warp_semitones):
            return []
        mel = self.ds.config["features"]
        if mel.get("kind") not in ("mel", "mel+phones"):
            raise UsageError(f"task.band_shifts and task.warp_semitones need mel features, but {self.ds.dir} has "
                             f"{mel.get('kind')} features (set both to [] in the config)")
        variants = [partial(shift_bands, k=k) for k in self.tc.band_shifts]
        variants += [partial(warp_bands, semitones=s, fmin=mel["fmin"], fmax=mel["fmax"]) for s in self.tc.warp_semitones]
        return [partial(_on_mel, transform=v, n_mels=mel["n_mels"]) for v in variants]

    @staticmethod
    def _normalize(c: ClipArrays, features: np.ndarray) -> np.ndarray:
        lo, hi = c.train if c.train is not None else (0, len(c.beta))
        return normalize_utterance(features, features[2 * lo : 2 * hi])

    def _training_stats(self):
        """(mean, std) of audio features, shapes and expressions over the training frames."""
        feats, betas = [], []
        for c in self.clips:
            if c.train is not None:
                lo, hi = c.train
                keep = c.valid[lo:hi]
                feats.append(c.features[2 * lo : 2 * hi].reshape(-1, 2, c.features.shape[1])[keep].reshape(-1, c.features.shape[1]))
                betas.append(c.beta[lo:hi][keep])
        f, b = (torch.as_tensor(np.concatenate(x), dtype=torch.float64) for x in (feats, betas))
        alphas = torch.as_tensor(np.stack([c.alpha for c in self.clips if c.train is not None]), dtype=torch.float64)
        # Few speakers: a per-dimension std of alpha is meaningless, so shapes share one scale.
        # (A single-speaker landmark face model has no identity basis at all: n_id = 0.)
        shape_scale = alphas.pow(2).mean().sqrt().clamp_min(1e-6) if alphas.numel() else torch.tensor(1.0)
        shape = (torch.zeros(alphas.shape[1], dtype=torch.float64), shape_scale.expand(alphas.shape[1]))
        return (f.mean(0), f.std(0).clamp_min(1e-6)), shape, (b.mean(0), b.std(0).clamp_min(1e-6))

    def optimizers(self):
        if self.closed_form:
            return {}
        params = self.models["a2e"].parameters()
        return {"main": torch.optim.Adam(params, lr=self.tc.lr, betas=self.tc.betas, weight_decay=self.tc.weight_decay)}

    def train_step(self, batch, trainer) -> dict[str, float]:
        if self.closed_form:
            model = unwrap(self.models["a2e"])  # zero weights, or a generic model's (--init): the fit's prior
            fit = fit_linear(model, self.clips, self._voice_variants(), metric=mouth_metric(self.face),
                             prior=model.weights()[0].double().cpu().numpy())
            gain = match_amplitude(model, self.clips, mouth_metric(self.face), self.tc.max_gain) if self.tc.match_amplitude else 1.0
            return {"loss": fit["cv_mse"], "lambda": fit["lambda"], "cv_gain": fit["cv_gain"], "prior": fit["prior"],
                    "gain": gain}  # on the CV blocks
        return super().train_step(batch, trainer)

    def sample_batch(self, rng: np.random.Generator) -> dict[str, torch.Tensor] | None:
        if self.closed_form:
            return None
        T, N, B = self.model_cfg.n_frames, self.model_cfg.n_history, self.tc.batch_size
        rows = self.windows[rng.integers(len(self.windows), size=B)]
        first = self.offsets[rows[:, 0]] + rows[:, 1]  # global index of each window's first frame
        frames = first[:, None] + np.arange(T)
        feats = 2 * first[:, None] + np.arange(2 * T)
        version = np.where(rng.random(B) < self.tc.augment, rng.integers(1, len(self.versions), size=B), 0) \
            if len(self.versions) > 1 else np.zeros(B, np.int64)
        history = np.empty((B, N), np.int64)
        for b, (ci, start) in enumerate(rows):
            c = self.clips[ci]
            lo, hi = c.train
            pool = c.valid.copy()
            pool[:lo], pool[hi:], pool[start : start + T] = False, False, False  # never the target frames
            history[b] = self.offsets[ci] + history_indices(pool if pool.any() else c.valid, N, rng)
        idx = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return {
            "audio": self.versions[idx(version)[:, None], idx(feats)],
            "alpha": self.alpha[idx(rows[:, 0])],
            "history": self.beta[idx(history)],
            "beta": self.beta[idx(frames)],
            "rho": self.rho[idx(frames)],
        }

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        pred = self.models["a2e"](batch["audio"], batch["alpha"], batch["history"]).float()
        beta, rho = batch["beta"], batch["rho"]
        mse = ((pred - beta) ** 2).sum(-1).mean()
        B, T, _ = beta.shape
        alpha = batch["alpha"][:, None].expand(-1, T, -1).reshape(B * T, -1)
        v_hat = self.face.vertices(alpha, pred.reshape(B * T, -1), rho.reshape(B * T, -1))[:, self.region]
        v = self.face.vertices(alpha, beta.reshape(B * T, -1), rho.reshape(B * T, -1))[:, self.region]
        vertex = ((v_hat - v) ** 2).sum(-1).mean()
        loss = mse + self.tc.vertex_weight * vertex
        return loss, {"mse": mse.item(), "vertex": vertex.item()}

    def validate(self) -> dict[str, float]:
        model = unwrap(self.models["a2e"])
        return evaluate_heldout(self.face, self.clips, lambda c: predict_heldout(model, c, self.tc.history_seed))

    def checkpoint_extra(self):
        face_cfg, face_tensors = self.face.to_checkpoint()
        audio_cfg = self.ds.config.get("features")
        if audio_cfg is None:
            raise RealtalkError("dataset config.json lacks the audio feature settings ('features')", self.ds.dir)
        # the crop alignment travels with the model so `dub` cuts crops exactly as preprocessing did
        return {"face_model": face_cfg, "audio": audio_cfg, "align": self.ds.config.get("align")}, {"face_model": face_tensors}


def build_task(data: str | Path, config: dict, device: torch.device) -> A2ETask:
    return A2ETask(data, config, device)
