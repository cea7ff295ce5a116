"""Held-out evaluation of a2e runs against two baselines (docs/experiments/a2e.md).

    python examples/a2e_eval.py --data runs/data_cnn2 --split-frames 0.8 runs/a2e_both runs/a2e_none ...
    python examples/a2e_eval.py --time-paper-config      # parameters and per-window CPU time

For every run: the model on the held-out frames, and the model on audio shifted by --shift-seconds
(the same speech, out of sync: what a model that ignores timing would score). Once per dataset:
the clip's mean training expression (a constant: no mouth motion at all).
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
from realtalk_cli.pipelines.a2e_infer import load_a2e
from realtalk_cli.train.a2e_task import evaluate_heldout, load_clips, predict_heldout

FEATURES_PER_SECOND = 50


def mean_expression(c):
    lo, hi = c.train
    mean = c.beta[lo:hi][c.valid[lo:hi]].mean(0)
    return np.broadcast_to(mean, (c.val[1] - c.val[0], len(mean)))


def evaluate(data: Path, split_frames: float, runs: list[Path], shift_seconds: float) -> dict[str, dict]:
    ds = Dataset.open(data)
    clips = load_clips(ds, split_frames)
    face = ds.face_model
    shift = int(round(shift_seconds * FEATURES_PER_SECOND))
    results = {"mean expression": evaluate_heldout(face, clips, mean_expression)}
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
    ap.add_argument("--shift-seconds", type=float, default=2.0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--time-paper-config", action="store_true")
    args = ap.parse_args()
    results = {}
    if args.time_paper_config:
        results["paper_config_cpu"] = time_paper_config()
        print(json.dumps(results["paper_config_cpu"], indent=2))
    if args.data:
        table = evaluate(args.data, args.split_frames, args.runs, args.shift_seconds)
        results["heldout"] = table
        print("| predictor | exp MSE (eq. 3) | mouth-opening corr | mouth-opening MAE (px) | mouth vertex MSE (px^2) |")
        print("|---|---|---|---|---|")
        for name, m in table.items():
            print(f"| {name} | {m['exp_mse']:.4f} | {m['mouth_corr']:.3f} | {m['mouth_mae']:.3f} | {m['vertex_mse']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
