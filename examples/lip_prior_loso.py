"""Lip-sync protocol of the lip prior (issue 23): every score comes from a model that never saw the
speaker it is scored on.

    python examples/lip_prior_loso.py --corpus DATA --person P_WHISPER --person-mel P_MELPHONES \\
        [--person ...] --out DIR

DATA: `realtalk preprocess <the shared corpus and videos> --features whisper+mel`: every clip, one
person's utterance. P_WHISPER / P_MELPHONES: the person to dub, preprocessed alone with whisper+mel
and with mel+phones (as `dub --adapt` would, one face model for the person). Speakers are grouped by
SPEAKERS below (docs: shared/data/SOURCES.md, "same person").

Opening: the signed inner-lip gap clipped at 0 (face/mouth.py: lip_gap), in template units (face size
1); a prediction that closes past closed counts as closed, as the frame bank renders it.

1. prior alone, leave one speaker out: the prior fitted on the other speakers predicts each clip's
   lip coordinates from its audio; r of the predicted against the tracked opening.
2. the person driven by other speakers (cross-speaker): the person's a2e (rows below) predicts, from
   each other speaker's audio, the person's expressions; the person's mouth opening (face model,
   unposed) against that speaker's own tracked opening. The prior of each row leaves out both the
   person and the driving speaker. Amplitude ratio: the std of the person's predicted opening over
   the std of the driver's tracked opening (both in template units, face size 1); amplitude_vs_own: the
   same std over the std of the person's own tracked opening in their video.
3. own voice, 70/30: trained on the first 70% of the person's video, driven by the last 30% of its audio.
4. silence: mean |change of opening| per frame in the driver's silent frames (Silero), over the same
   in speech frames, with the dub's silence gate.

Rows: mel+phones (the person's own ridge, the old default), whisper (the person's own ridge on
Whisper + mel, projected on the prior's principal directions), whisper+prior (the prior mapped to the
person, amplitude matched), whisper+prior+adaptation (the person's ridge shrunk toward that prior,
amplitude matched: `dub --adapt`'s default).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.audio.features import AudioFrontEnd
from realtalk_cli.audio.vad import speech_mask, speech_probability
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.face.mouth import LIP_POINTS, lip_gap, lip_shapes
from realtalk_cli.inference.a2e import SilenceGate, predict_expressions, rest_and_resample, rest_expression
from realtalk_cli.nets.lip_prior import LipPrior, LipPriorConfig
from realtalk_cli.train.a2e_task import A2ETask, default_config, match_amplitude, mouth_metric, pearson
from realtalk_cli.train.lip_prior import fit_lip_prior, load_prior_clips
from realtalk_cli.train.run import merge, read_config

SPEAKERS = {"pcavs_517600055": "pcavs_00002", "pcavs_741400163": "pcavs_741400104",
            "styletalk_Obama_clip2": "styletalk_Obama_clip1", "styletalk_Obama_clip3": "styletalk_Obama_clip1",
            "styletalk_andrew_clip_2": "styletalk_andrew_clip_1", "styletalk_feifeili_clip2_short": "styletalk_feifeili_clip1",
            "styletalk_feifeili_clip3": "styletalk_feifeili_clip1"}
ROWS = ("mel+phones", "whisper", "whisper+prior", "whisper+prior+adaptation")


def speaker(name: str) -> str:
    return SPEAKERS.get(name, name)


def z(x):
    return (x - x.mean()) / max(x.std(), 1e-9)


def scores(pairs: list[tuple[np.ndarray, np.ndarray]], max_lag: int = 4) -> dict:
    """Pooled r (each clip z-scored), per-clip r, best-lag r (each clip at its own best lag within
    +-max_lag frames), amplitude ratio (median over clips of std dubbed / std real)."""
    per = [pearson(p, t) for p, t in pairs]

    def at(p, t, lag):
        return (p[: len(p) - lag], t[lag:]) if lag >= 0 else (p[-lag:], t[: len(t) + lag])

    best = [max(range(-max_lag, max_lag + 1), key=lambda k: pearson(*at(p, t, k))) for p, t in pairs]
    pooled = pearson(np.concatenate([z(p) for p, _ in pairs]), np.concatenate([z(t) for _, t in pairs]))
    lagged = [at(p, t, k) for (p, t), k in zip(pairs, best)]
    pooled_lag = pearson(np.concatenate([z(p) for p, _ in lagged]), np.concatenate([z(t) for _, t in lagged]))
    amp = [p.std() / max(t.std(), 1e-9) for p, t in pairs]
    return {"pooled_r": pooled, "median_r": float(np.median(per)), "pooled_r_best_lag": pooled_lag,
            "lags": best, "amplitude_ratio": float(np.median(amp)), "per_clip_r": per, "n": len(pairs)}


class Person:
    """One person to dub: their whisper+mel and mel+phones datasets and face."""

    def __init__(self, whisper_data: Path, mel_data: Path):
        self.whisper_data, self.mel_data = whisper_data, mel_data
        ds = Dataset.open(whisper_data)
        clip = ds.clips()[0]
        self.name, self.face = clip.name, ds.face_model.eval()
        co = clip.coeffs()
        self.alpha, self.beta, self.valid, self.audio = co["alpha"], co["beta"], clip.valid(), clip.audio()
        self.features = {"whisper+mel": clip.audio_features(), "mel+phones": Dataset.open(mel_data).clips()[0].audio_features()}
        self.rest = rest_expression(self.beta, self.valid, self.audio, 25.0, SilenceGate())

    @torch.no_grad()
    def opening(self, beta: np.ndarray) -> np.ndarray:
        alpha = torch.as_tensor(self.alpha, dtype=torch.float32)[None].expand(len(beta), -1)
        verts = self.face.shape(alpha, torch.as_tensor(beta, dtype=torch.float32)).numpy()
        return lip_gap(verts[:, LIP_POINTS, :2].reshape(len(beta), -1))

    def task(self, row: str, prior_dir: Path | None, split: float = 0.0) -> A2ETask:
        """The row's a2e fitted on this person (as `dub --adapt` fits it), split: first share trains."""
        data = self.mel_data if row == "mel+phones" else self.whisper_data
        cfg = merge(default_config(), read_config("adapt_cpu_linear" if row == "mel+phones" else "adapt_cpu_prior"))
        cfg = merge(cfg, {"task": {"split_frames": split, **({"prior": str(prior_dir)} if row != "mel+phones" else {})}})
        task = A2ETask(data, cfg, torch.device("cpu"))
        model = task.models["a2e"]
        if row == "whisper":  # the person alone: no prior to shrink toward
            w, b = model.weights()
            model.set_weights(torch.zeros_like(w), b)
        if row == "whisper+prior":
            match_amplitude(model, task.clips, mouth_metric(task.face), task.tc.max_gain)
        else:
            task.train_step(None, None)
        return task

    def dub(self, task: A2ETask, features: np.ndarray, speech: np.ndarray, n: int) -> np.ndarray:
        """Mouth opening [n] of this person driven by these features, silence gate as `dub` applies it."""
        model = task.models["a2e"]
        beta = predict_expressions(model, features, self.alpha, self.beta[:16], n_frames=n)
        beta = rest_and_resample(beta, np.arange(n) / 25.0, speech, self.rest, SilenceGate())
        return self.opening(beta)


def silence_motion(dubbed: list[np.ndarray], audios: list[np.ndarray], margin: int = 5) -> float:
    """Mean |change of opening| per frame in pauses over the same in speech frames (pooled); a pause is
    a frame more than `margin` frames (0.2 s) from any speech frame (Silero), so the lips' way into
    and out of rest, which the gate ramps over 0.12 s, counts as neither."""
    from scipy.ndimage import distance_transform_edt

    silent, spoken = [], []
    for o, wav in zip(dubbed, audios):
        mask = speech_mask(speech_probability(wav, len(o)))
        far = distance_transform_edt(~mask) > margin if mask.any() else np.ones(len(o), bool)
        d = np.abs(np.diff(o))
        silent.append(d[far[1:] & far[:-1]]), spoken.append(d[mask[1:]])
    s, v = np.concatenate(silent), np.concatenate(spoken)
    return float(s.mean() / max(v.mean(), 1e-12)) if len(s) >= 5 else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, required=True)
    ap.add_argument("--person", type=Path, action="append", default=[])
    ap.add_argument("--person-mel", type=Path, action="append", default=[])
    ap.add_argument("--cross", type=int, default=1, help="cross-speaker for the first N persons")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = LipPriorConfig.from_dict(read_config("lip_prior")["fit"])
    clips, audio = load_prior_clips(args.corpus, cfg.features)
    corpus = Dataset.open(args.corpus)
    audios = {c.name: c.audio() for c in corpus.clips()}
    mel = AudioFrontEnd({"kind": "mel+phones"})
    priors: dict[frozenset, Path] = {}

    def prior_without(*names: str) -> Path:
        """A prior fitted on every clip but those of these speakers (cached on disk)."""
        left = frozenset(speaker(n) for n in names)
        if left not in priors:
            d = args.out / "priors" / "-".join(sorted(left))
            if not (d / "config.json").is_file():
                fit_lip_prior([c for c in clips if speaker(c.name) not in left], audio, cfg)[0].save_pretrained(d)
            priors[left] = d
        return priors[left]

    results = {"config": cfg.__dict__}
    # 1. the prior alone, leave one speaker out
    pairs = []
    for group in sorted({speaker(c.name) for c in clips}):
        prior = LipPrior.from_pretrained(prior_without(group))
        for c in (c for c in clips if speaker(c.name) == group):
            y = prior.coords(c.landmarks3d, c.valid)
            spread = y[c.valid, 0].std()
            with torch.no_grad():
                pred = prior.model(torch.as_tensor(c.features)[None])[0].numpy() * spread
            lips = lip_shapes(c.landmarks3d, prior.template)
            mean = lips[c.valid].mean(0)
            pairs.append((lip_gap(mean + pred @ prior.basis)[c.valid], lip_gap(lips)[c.valid]))
    results["prior_loso"] = scores(pairs)
    print("prior alone, LOSO:", {k: v for k, v in results["prior_loso"].items() if k != "per_clip_r"}, flush=True)

    for i, (pw, pm) in enumerate(zip(args.person, args.person_mel)):
        person = Person(pw, pm)
        res = results.setdefault(person.name, {})
        # 3. own voice 70/30
        n = len(person.beta)
        cut = int(round(0.7 * n))
        held = np.arange(cut, n)
        held = held[person.valid[held]]
        real = person.opening(person.beta)[held]
        for row in ROWS:
            task = person.task(row, prior_without(person.name) if row != "mel+phones" else None, split=0.7)
            feats = person.features[row if row == "mel+phones" else "whisper+mel"]
            speech = person.audio[cut * 640 :]
            o = person.dub(task, feats[2 * cut :], speech, n - cut)
            res.setdefault("own_70_30", {})[row] = scores([(o[held - cut], real)])
            print(person.name, "own 70/30", row, res["own_70_30"][row]["pooled_r"], res["own_70_30"][row]["amplitude_ratio"], flush=True)
        if i >= args.cross:
            continue
        # 2. cross-speaker, 4. silence
        drivers = [c for c in clips if speaker(c.name) != speaker(person.name)]
        truth = {c.name: lip_gap(lip_shapes(c.landmarks3d, LipPrior.from_pretrained(prior_without(person.name)).template))
                 for c in drivers}
        mel_feats = {c.name: mel(audios[c.name], len(c.features)) for c in drivers}
        fixed = {row: person.task(row, prior_without(person.name)) for row in ("mel+phones", "whisper")}
        for row in ROWS:
            dubbed, pairs, tasks = [], [], {}
            for c in drivers:
                if row not in fixed and speaker(c.name) not in tasks:
                    tasks[speaker(c.name)] = person.task(row, prior_without(person.name, c.name))
                task = fixed.get(row) or tasks[speaker(c.name)]
                o = person.dub(task, mel_feats[c.name] if row == "mel+phones" else c.features, audios[c.name], len(c.valid))
                dubbed.append(o)
                pairs.append((o[c.valid], truth[c.name][c.valid]))
            own = float(person.opening(person.beta)[person.valid].std())  # how wide this person's mouth moves
            res.setdefault("cross", {})[row] = {**scores(pairs), "silence_motion": silence_motion(dubbed, [audios[c.name] for c in drivers]),
                                                "amplitude_vs_own": float(np.median([p.std() for p, _ in pairs]) / own)}
            np.savez(args.out / f"{person.name}_{row}.npz", **{c.name: o for c, o in zip(drivers, dubbed)})
            r = res["cross"][row]
            print(person.name, "cross", row, {k: r[k] for k in ("pooled_r", "median_r", "pooled_r_best_lag", "amplitude_ratio", "amplitude_vs_own", "silence_motion")}, flush=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
