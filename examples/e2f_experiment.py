"""Held-out evaluation of a trained e2f run (docs/experiments/e2f.md).

    python examples/e2f_experiment.py runs/e2f_cnn2_128 --out runs/e2f_cnn2_128/eval

Renders every held-out frame of the run's dataset (reference = the clip's first frame, coefficients
= tracked ones), reports PSNR / SSIM over the mask region against the baseline that pastes the
reference's lower face, writes a preview grid of frames spread over the held-out part, checks that
the coefficients steer the mouth (the same held-out frames driven by the most-closed and the
most-open training expression), and times the data loader against one training step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.checkpoint import load_checkpoint
from realtalk_cli.inference.e2f import coefficients, face_masks
from realtalk_cli.train.e2f_task import E2FTask, write_grid, write_preview
from realtalk_cli.checkpoint import latest_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="training run directory (or one checkpoint directory)")
    ap.add_argument("--out", type=Path, required=True, help="directory for metrics.json and preview.png")
    ap.add_argument("--preview", type=int, default=6, help="rows of the preview grid")
    args = ap.parse_args()

    ckpt = latest_checkpoint(args.run) or args.run
    config, tensors = load_checkpoint(ckpt, required=("renderer",))
    task = E2FTask(config["data"], config, torch.device("cpu"))
    net = task.models["renderer"]
    net.load_state_dict(tensors["renderer"])
    net.eval()
    args.out.mkdir(parents=True, exist_ok=True)

    with torch.no_grad():
        t = time.perf_counter()
        metrics, _ = task.evaluate(task.val_idx)
        eval_s = time.perf_counter() - t
        rows = task.val_idx[np.linspace(0, len(task.val_idx) - 1, args.preview).round().astype(int)]
        b = task.make_batch(rows, task.ref_first[task.clip_of[rows]])
        write_preview(args.out / "preview.png", {**b, "output": net(b["source"], b["reference"], b["coeffs"], b["keep"])}, args.preview)

        control = mouth_control(task, args.out / "control.png")

    # loader vs model: batches per second of sample_batch alone, and of a full training step
    rng = np.random.default_rng(0)
    n = 20
    t = time.perf_counter()
    for _ in range(n):
        task.sample_batch(rng)
    loader_it_s = n / (time.perf_counter() - t)
    net.train()
    opts = task.optimizers()

    class _Optimize:  # the trainer's optimize() without the rest of the loop
        def optimize(self, loss, name):
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()

    batch = task.sample_batch(rng)
    task.train_step(batch, _Optimize())  # warm-up
    t = time.perf_counter()
    for _ in range(3):
        task.train_step(batch, _Optimize())
    step_it_s = 3 / (time.perf_counter() - t)

    report = {"checkpoint": str(ckpt), "step": config["step"], "held_out_frames": int(len(task.val_idx)),
              **{k: round(v, 4) for k, v in {**metrics, **control}.items()},
              "render_ms_per_frame_incl_masks_and_metrics": round(1000 * eval_s / len(task.val_idx), 1),
              "loader_it_s": round(loader_it_s, 1), "train_step_it_s": round(step_it_s, 2),
              "batch_size": task.tc.batch_size, "threads": torch.get_num_threads()}
    (args.out / "metrics.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def mouth_control(task: E2FTask, png: Path, n: int = 16) -> dict[str, float]:
    """Drive n held-out frames with the most-closed and the most-open training expression.

    Returns the mean luminance (0..1) of each rendering inside the inner-mouth polygon of the open
    drive: an open mouth is darker inside. Writes 4 rows of (closed drive | open drive).
    """
    face, net = task.face, task.models["renderer"]
    train = task.train_idx
    opening = face.mouth_opening(face.vertices(task.alpha[task.clip_of[train]], task.beta[train], task.rho[train]))
    drives = {"closed": train[int(opening.argmin())], "open": train[int(opening.argmax())]}
    src = task.val_idx[np.linspace(0, len(task.val_idx) - 1, n).round().astype(int)]
    b = task.make_batch(src, task.ref_first[task.clip_of[src]])
    alpha, rho = task.alpha[task.clip_of[src]], task.rho[src]
    outs, teeth = {}, None
    for name, frame in drives.items():
        beta = task.beta[np.full(n, frame)]
        keep, teeth = face_masks(face, task.mask_cfg, alpha, beta, rho, task.size)  # the open drive's comes last
        outs[name] = net(b["source"], b["reference"], coefficients(alpha, beta, rho), keep)
    report = {f"mouth_lum_{k}_drive": float((o.mean(1, keepdim=True) * teeth).sum() / teeth.sum()) for k, o in outs.items()}
    report |= {"mouth_opening_px_closed_drive": float(opening.min()), "mouth_opening_px_open_drive": float(opening.max())}
    write_grid(png, [outs["closed"], outs["open"]], 4)
    return report


if __name__ == "__main__":
    main()
