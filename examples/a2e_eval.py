"""Held-out evaluation of a2e runs against two baselines (docs/experiments/a2e.md).

    python examples/a2e_eval.py --data runs/data_cnn2 --split-frames 0.8 runs/a2e/both_s0 runs/a2e/no_prior_s0 ...
    python examples/a2e_eval.py --time-paper-config      # parameters and per-window CPU time

For every run: the model on the held-out frames, and the model on audio shifted by --shift-seconds
(the same speech, out of sync: what a model that ignores timing would score). Once per dataset:
the clip's mean training expression (a constant: no mouth motion at all), and, as a diagnostic, a
ridge regression from the mel features of the surrounding +-8 frames to beta (a linear audio model,
its regularisation chosen on the last 20% of the training frames).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.data.dataset import Dataset
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.inference.a2e import load_a2e
from realtalk_cli.train.a2e_task import evaluate_heldout, load_clips, predict_heldout

FEATURES_PER_SECOND = 50


def mean_expression(c):
    lo, hi = c.train
    mean = c.beta[lo:hi][c.valid[lo:hi]].mean(0)
    return np.broadcast_to(mean, (c.val[1] - c.val[0], len(mean)))


def context_features(features: np.ndarray, radius: int = 8) -> np.ndarray:
    """[n, (2 radius + 1) * 2F]: the features of frames t - radius .. t + radius (edges repeated)."""
    per_frame = features.reshape(len(features) // 2, -1)
    n = len(per_frame)
    idx = np.clip(np.arange(n)[:, None] + np.arange(-radius, radius + 1), 0, n - 1)
    return per_frame[idx].reshape(n, -1)


def ridge_predictor(c):
    """Fit beta ~ W x + b on the clip's training frames; returns the held-out predictions."""
    x, (lo, hi) = context_features(c.features), c.train
    keep = np.flatnonzero(c.valid[lo:hi]) + lo
    mu, sd = x[keep].mean(0), x[keep].std(0) + 1e-6
    z = (x - mu) / sd

    def fit(rows, lam):
        a = np.c_[z[rows], np.ones(len(rows))]
        return np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ c.beta[rows])

    def apply(w, rows):
        return np.c_[z[rows], np.ones(len(rows))] @ w

    inner = int(0.8 * len(keep))
    errs = {lam: ((apply(fit(keep[:inner], lam), keep[inner:]) - c.beta[keep[inner:]]) ** 2).sum(-1).mean()
            for lam in (1e1, 1e2, 1e3, 1e4, 1e5)}
    w = fit(keep, min(errs, key=errs.get))
    return apply(w, np.arange(*c.val))


def evaluate(data: Path, split_frames: float, runs: list[Path], shift_seconds: float, split_end: float = 1.0) -> dict[str, dict]:
    ds = Dataset.open(data)
    clips = load_clips(ds, split_frames, split_end)
    face = ds.face_model
    shift = int(round(shift_seconds * FEATURES_PER_SECOND))
    results = {"mean expression": evaluate_heldout(face, clips, mean_expression),
               "ridge on mel context (linear)": evaluate_heldout(face, clips, ridge_predictor)}
    for run in runs:
        model, config = load_a2e(run)
        results[run.name] = evaluate_heldout(face, clips, lambda c: predict_heldout(model, c))
        results[f"{run.name}, audio shifted {shift_seconds:g} s"] = evaluate_heldout(
            face, clips, lambda c: predict_heldout(model, c, features=np.roll(c.features, shift, axis=0)))
        results[run.name]["step"] = config["step"]
    return results


def time_paper_config(repeats: int = 50) -> dict:
    model = A2ETransformer(A2EConfig()).eval()
    cfg = model.cfg
    x = (torch.randn(1, cfg.n_audio, cfg.audio_dim), torch.randn(1, cfg.n_id), torch.randn(1, cfg.n_history, cfg.n_exp))
    times = []
    with torch.no_grad():
        for i in range(repeats + 5):
            t = time.perf_counter()
            model(*x)
            if i >= 5:
                times.append(1000 * (time.perf_counter() - t))
    hubert = A2ETransformer(A2EConfig(audio_dim=1024)).n_params()
    return {"params_mel80": model.n_params(), "params_hubert1024": hubert, "threads": torch.get_num_threads(),
            "ms_per_window_median": statistics.median(times), "ms_per_window_min": min(times)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="*", type=Path, help="a2e run or checkpoint directories")
    ap.add_argument("--data", type=Path)
    ap.add_argument("--split-frames", type=float, default=0.8)
    ap.add_argument("--split-end", type=float, default=1.0, help="end of the held-out frames (inner validation: < 1)")
    ap.add_argument("--shift-seconds", type=float, default=2.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--time-paper-config", action="store_true")
    args = ap.parse_args()
    results = {}
    if args.time_paper_config:
        results["paper_config_cpu"] = time_paper_config()
        print(json.dumps(results["paper_config_cpu"], indent=2))
    if args.data:
        table = evaluate(args.data, args.split_frames, args.runs, args.shift_seconds, args.split_end)
        results["heldout"] = table
        print("| predictor | exp MSE (eq. 3) | mouth-opening corr | mouth-opening MAE (px) | mouth vertex MSE (px^2) |")
        print("|---|---|---|---|---|")
        for name, m in table.items():
            print(f"| {name} | {m['exp_mse']:.4f} | {m['mouth_corr']:.3f} | {m['mouth_mae']:.3f} | {m['vertex_mse']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
