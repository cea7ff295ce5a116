"""Cross-voice protocol (issue 11, item 2): how the a2e does on voices and rooms it never heard.

An a2e trained on the first 80% of a clip (a dataset made from that part only) is driven, on the
held-out last 20%, by
  own          the held-out part's own audio
  voice +-3 st the same audio with pitch and formants shifted 3 semitones up / down, timing kept
  noise+reverb the same audio in a reverberant room (RT60 0.5 s) with white noise at 10 dB SNR
(realtalk_cli/audio/augment.py). The ground truth in every case is the source's own mouth, tracked
on the held-out video with the model's face model (as `dub` tracks a source). The prediction is
posed with the tracked shape and pose, so only the expression differs. Each condition runs with the
silence gate off and on (rest expression and history from the training part, as `dub` would take
them from the video it dubs). Also: the training part's mean expression, a constant baseline, and
the ridge regression of docs/experiments/a2e.md (examples/a2e_eval.py) fitted on the training part
and driven by the same audio.

Metrics (realtalk_cli/eval/metrics.py): mouth-opening Pearson r with its 95% block-bootstrap
interval (a held-out part of a few seconds pins r down only to +-0.1 or worse), M-LMD (mean distance of the lip
landmarks, 256 px face crop), and lip motion in silent stretches (mean |change of mouth opening|
per frame where the own audio is silent, eval's definition; the source's value is printed too).

    OMP_NUM_THREADS=1 python examples/cross_voice.py --a2e RUN/a2e --data DATASET_OF_FIRST_80 \\
        --heldout LAST_20.mp4 [--json out.json]

Rotation (cross-fitting): a few seconds held out pin r down to +-0.15 at best. With --rotate K on a
dataset of the whole clip, K a2e models are trained (`realtalk train --stage a2e`, task.holdout), each
with one fifth (for K = 5) of the clip held out and half a second left out on each side; each predicts
its block from that block's audio alone, in every condition. r is taken over the whole clip, and
within each block (their mean is what one held-out 20% reports, averaged over where it could sit).
Every frame is then predicted by a model that never heard it, each trained on the other 80% less the
gaps. The ground truth is the dataset's own tracking of the clip (not a separate tracking of the
held-out video).

    OMP_NUM_THREADS=1 python examples/cross_voice.py --rotate 5 --data DATASET_OF_WHOLE_CLIP \\
        --config adapt_cpu_linear --out RUNS_DIR [--json out.json]
    python examples/cross_voice.py --table runs/*/<variant>[_s1].json ...   # markdown, mean over seeds
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from realtalk_cli.audio.augment import noise_reverb, shift_voice
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.eval import metrics as M
from realtalk_cli.media import load_audio
from realtalk_cli.inference.a2e import SilenceGate, load_a2e, normalize_utterance
from realtalk_cli.pipelines.dub import Dubber, DubOptions, SourceTrack
from realtalk_cli.train.a2e_task import ClipArrays, load_clips
from realtalk_cli.train.run import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from a2e_eval import ridge_predictor  # noqa: E402 (the linear audio model of docs/experiments/a2e.md)

FPS = 25.0


def conditions(audio: np.ndarray) -> dict[str, np.ndarray]:
    return {"own": audio, "voice +3 st": shift_voice(audio, 3.0), "voice -3 st": shift_voice(audio, -3.0),
            "noise+reverb": noise_reverb(audio, snr_db=10.0, rt60=0.5)}


def mouth(face, alpha, beta, rho) -> tuple[np.ndarray, np.ndarray]:
    """(mouth opening [T], landmarks [T, V, 2] in crop pixels) of expressions posed like the source."""
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        v = face.vertices(t(alpha)[None].expand(len(beta), -1), t(beta), t(rho))
        return face.mouth_opening(v).numpy(), face.project(v).numpy()


def score(face, held, beta, silent) -> dict[str, float]:
    ok = held.found
    opening, lm = mouth(face, held.alpha, beta, held.rho)
    true_opening, true_lm = mouth(face, held.alpha, held.beta, held.rho)
    return {"mouth_r": M.correlation(opening[ok], true_opening[ok]),
            "mouth_r_95": M.correlation_interval(opening[ok], true_opening[ok]),
            "m_lmd": M.lmd(lm[ok], true_lm[ok], M.MOUTH_POINTS),
            "silent_motion": M.silent_lip_motion(opening, silent & ok)["motion"]}


def ridge(co: dict, train_features: np.ndarray, valid: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Ridge fitted on the training part, applied to other features [2n, F] (a clip = both, back to back)."""
    n0, n = len(co["beta"]), len(features) // 2
    c = ClipArrays("ridge", co["alpha"], np.concatenate([co["beta"], np.zeros((n, co["beta"].shape[1]))]), None,
                   np.concatenate([train_features, features]), np.concatenate([valid, np.ones(n, bool)]), (0, n0), (n0, n0 + n))
    return ridge_predictor(c)


def run(a2e: Path, data: Path, heldout: Path) -> dict:
    model, cfg = load_a2e(a2e)
    ds = Dataset.open(data)
    face = ds.face_model
    if face.n_vertices != 478:
        raise SystemExit("M-LMD needs a landmark face model (MediaPipe's 478 points)")
    # only tracking and the a2e are used: the renderer slot needs nothing but the face model
    dubber = Dubber(model, SimpleNamespace(face=face), cfg, torch.device("cpu"))
    clip = ds.clips()[0]  # the training part: history and rest expression come from it
    co, train_audio = clip.coeffs(), clip.audio()
    n_train = len(co["beta"])
    source = SourceTrack(n_train, 0, 0, clip.valid(), np.zeros((n_train, 2, 3)), co["alpha"], co["beta"], co["rho"], 0.0, 0)

    held = dubber.track(heldout, DubOptions(fps=FPS))
    audio = load_audio(heldout)
    n = held.n_frames
    silent = M.silent_frames(M.frame_rms(audio, n, 16000, FPS))
    true_opening, _ = mouth(face, held.alpha, held.beta, held.rho)
    rows = {"source": {"silent_motion": M.silent_lip_motion(true_opening, silent & held.found)["motion"]},
            "mean expression": score(face, held, np.tile(co["beta"][clip.valid()].mean(0), (n, 1)), silent)}
    for name, wav in conditions(audio).items():
        for gate in (False, True):
            beta = dubber.expressions(wav, n, source, seed=0, fps=FPS, source_audio=train_audio if gate else None,
                                      gate=SilenceGate() if gate else None)
            rows[f"{name}{' + gate' if gate else ''}"] = score(face, held, beta, silent)
        feats = dubber.audio(wav, n=2 * n)
        rows[f"ridge, {name}"] = score(face, held, ridge(co, clip.audio_features(), clip.valid(), feats), silent)
        rows[f"ridge+norm, {name}"] = score(face, held, ridge(co, normalize_utterance(clip.audio_features()), clip.valid(),
                                                              normalize_utterance(feats)), silent)
    return {"a2e": str(a2e), "heldout": str(heldout), "frames": n, "silent_frames": int(silent.sum()), "rows": rows}


def rotate(data: Path, config: list[str], blocks: int, out: Path) -> dict:
    """Cross-fitting over `blocks` contiguous blocks of a one-clip dataset (see the module docstring)."""
    ds = Dataset.open(data)
    face = ds.face_model
    clips = ds.clips()
    if len(clips) != 1 or face.n_vertices != 478:
        raise SystemExit(f"--rotate needs a dataset of one clip and the landmark face model: {data} has {len(clips)} clips")
    clip = clips[0]
    co, audio, valid, n = clip.coeffs(), clip.audio(), clip.valid(), clip.n_frames
    per_frame = len(audio) / n  # samples per video frame (the dataset's audio covers its frames)
    held = SimpleNamespace(alpha=co["alpha"], beta=co["beta"], rho=co["rho"], found=valid)
    preds = {f"{name}{gate}": np.zeros_like(co["beta"]) for name in conditions(audio[:1]) for gate in ("", " + gate")}
    mean_beta = np.zeros_like(co["beta"])
    bounds = []
    for k in range(blocks):
        holdout = [k / blocks, (k + 1) / blocks]
        ckpt = train("a2e", data, out / f"block{k}", config=config, device="cpu", resume=True,  # a rerun reuses a finished fit
                     overrides={"task": {"holdout": holdout}, "trainer": {"val_every": 0}})
        model, cfg = load_a2e(ckpt)
        dubber = Dubber(model, SimpleNamespace(face=face), cfg, torch.device("cpu"))
        parts = load_clips(ds, 0.0, holdout=holdout)  # the block and the frames its model trained on, as the task cut them
        (lo, hi), seen = next(p.val for p in parts if p.val), np.zeros(n, bool)
        for p in parts:
            seen[slice(*p.train)] = valid[slice(*p.train)]
        bounds.append((lo, hi))
        source = SourceTrack(n, 0, 0, seen, np.zeros((n, 2, 3)), co["alpha"], co["beta"], co["rho"], 0.0, 0)
        wav = audio[int(round(lo * per_frame)) : int(round(hi * per_frame))]
        for name, w in conditions(wav).items():
            preds[name][lo:hi] = dubber.expressions(w, hi - lo, source, seed=0, fps=FPS)
            # the rest face comes from the frames the model trained on, as `dub` takes it from the video
            preds[f"{name} + gate"][lo:hi] = dubber.expressions(w, hi - lo, source, seed=0, fps=FPS, source_audio=audio,
                                                                gate=SilenceGate())
        mean_beta[lo:hi] = co["beta"][seen].mean(0)
    silent = M.silent_frames(M.frame_rms(audio, n, 16000, FPS))
    true_opening, _ = mouth(face, held.alpha, held.beta, held.rho)
    rows = {"source": {"silent_motion": M.silent_lip_motion(true_opening, silent & valid)["motion"]},
            "mean expression": score(face, held, mean_beta, silent)}
    for name, beta in preds.items():
        rows[name] = score(face, held, beta, silent)
        opening = mouth(face, held.alpha, beta, held.rho)[0]
        # r within each block: what one held-out part would report (models differ in offset, which the
        # pooled r counts against them: see the mean expression's pooled r)
        rows[name]["block_r"] = [M.correlation(opening[lo:hi][valid[lo:hi]], true_opening[lo:hi][valid[lo:hi]])
                                 for lo, hi in bounds]
        rows[name]["block_r_mean"] = float(np.mean(rows[name]["block_r"]))
    return {"a2e": str(out), "heldout": f"{clip.name}_heldout_rotated", "frames": n, "silent_frames": int(silent.sum()),
            "blocks": blocks, "rows": rows}


TABLE_ROWS = ("own", "voice +3 st", "voice -3 st", "noise+reverb")


def table(paths: list[Path]) -> str:
    """Markdown: one row per (variant, clip), the mean of its seeds (files <variant>.json, <variant>_s<k>.json)."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for p in paths:
        r = json.loads(p.read_text())
        variant, clip = p.stem.split("_s")[0], Path(r["heldout"]).name.split("_heldout")[0]
        groups.setdefault((variant, clip), []).append(r["rows"])
        for ridge_kind in ("ridge", "ridge+norm"):  # deterministic: once per clip, from the baseline's file
            if variant == "a2e" and f"{ridge_kind}, own" in r["rows"]:
                groups.setdefault((ridge_kind, clip), [{k: r["rows"][f"{ridge_kind}, {k}"] for k in TABLE_ROWS}])
    head = ["variant", "clip", "seeds"] + [f"r {c}" for c in TABLE_ROWS] + ["r own 95% (one seed)", "M-LMD own", "M-LMD noise", "silent motion own (source)", "r own + gate"]
    rotated = any("block_r_mean" in rows[0]["own"] for rows in groups.values())
    if rotated:  # --rotate: also the mean of the per-block r of each condition
        head += [f"block mean r {c}" for c in TABLE_ROWS]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mean = lambda rows, key, m: np.mean([r[key].get(m, np.nan) if key in r else np.nan for r in rows])  # noqa: E731
    for (variant, clip), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = [variant, clip, str(len(rows))] + [f"{mean(rows, c, 'mouth_r'):.2f}" for c in TABLE_ROWS]
        ci = rows[0]["own"].get("mouth_r_95") if len(rows) == 1 else None
        cells += ["[{:.2f}, {:.2f}]".format(*ci) if ci else "-", f"{mean(rows, 'own', 'm_lmd'):.2f}", f"{mean(rows, 'noise+reverb', 'm_lmd'):.2f}",
                  f"{mean(rows, 'own', 'silent_motion'):.3f} ({mean(rows, 'source', 'silent_motion'):.3f})",
                  f"{mean(rows, 'own + gate', 'mouth_r'):.2f}"]
        if rotated:
            cells += [f"{mean(rows, c, 'block_r_mean'):.2f}" for c in TABLE_ROWS]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a2e", type=Path, help="a2e checkpoint or run directory")
    ap.add_argument("--data", type=Path, help="the dataset it was trained on (the first 80%%)")
    ap.add_argument("--heldout", type=Path, help="video of the held-out last 20%%")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--table", type=Path, nargs="+", help="instead: summarise these --json files as a markdown table")
    ap.add_argument("--rotate", type=int, help="instead: cross-fit over this many blocks of --data (a whole clip)")
    ap.add_argument("--config", nargs="+", default=["adapt_cpu_linear"], help="a2e config(s) for --rotate")
    ap.add_argument("--out", type=Path, help="run directory of the --rotate models")
    a = ap.parse_args()
    if a.table:
        print(table(a.table))
        return
    if a.rotate:
        if not (a.data and a.out) or a.rotate < 2:
            ap.error("--rotate K needs K >= 2, --data and --out")
        result = rotate(a.data, a.config, a.rotate, a.out)
    elif not (a.a2e and a.data and a.heldout):
        ap.error("--a2e, --data and --heldout are needed (or --table, or --rotate)")
    else:
        result = run(a.a2e, a.data, a.heldout)
    print(f"{result['heldout']}: {result['frames']} frames, {result['silent_frames']} silent")
    print(f"{'condition':<24}{'mouth r':>9}{'(95%)':>16}{'M-LMD px':>10}{'silent motion':>15}")
    fmt = lambda v: "-" if v is None or not np.isfinite(v) else f"{v:.3f}"  # noqa: E731
    for name, m in result["rows"].items():
        ci = "[{}, {}]".format(*map(fmt, m["mouth_r_95"])) if "mouth_r_95" in m else "-"
        print(f"{name:<24}{fmt(m.get('mouth_r')):>9}{ci:>16}{fmt(m.get('m_lmd')):>10}{fmt(m.get('silent_motion')):>15}"
              + ("   blocks " + " ".join(map(fmt, m["block_r"])) if "block_r" in m else ""))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
