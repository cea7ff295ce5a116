"""ONNX export of the two networks, checked against PyTorch, and an onnxruntime runner for `dub`.

Both graphs take a dynamic batch. The a2e transformer has no dynamic sequence length by design: it
always reads one window of 2T audio features (longer audio is cut into windows by a2e inference),
and the renderer always works at its fixed crop size. The dynamo exporter is used because the
legacy one bakes attention sequence lengths into the graph.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.errors import RealtalkError
from realtalk_cli.inference.onnx import OnnxModel
from realtalk_cli.fsutil import atomic_file

# input names double as the keyword order the torch modules take
A2E_INPUTS = ("audio", "shape", "history", "frame_mask")
RENDERER_INPUTS = ("source", "reference", "coeffs", "mask")
TOLERANCE = 1e-3


def a2e_example(cfg, batch: int = 2) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, 2 * cfg.n_frames, cfg.audio_dim), torch.randn(batch, cfg.n_id),
            torch.randn(batch, cfg.n_history, cfg.n_exp), torch.ones(batch, cfg.n_frames, dtype=torch.bool))


def renderer_example(cfg, batch: int = 2) -> tuple[torch.Tensor, ...]:
    s = cfg.image_size
    return (torch.rand(batch, 3, s, s), torch.rand(batch, 3, s, s), torch.randn(batch, cfg.coeff_dim),
            torch.rand(batch, 1, s, s))


def export_module(model: torch.nn.Module, example: tuple[torch.Tensor, ...], names: tuple[str, ...],
                  output: str, path: str | os.PathLike) -> Path:
    """Export with a dynamic batch dimension; written atomically."""
    path = Path(path)
    batch = torch.export.Dim("batch", min=1, max=4096)
    model = model.eval().cpu()
    # the exporter prints progress lines to stdout; a library call must not
    with warnings.catch_warnings(), _quiet_exporter_logs(), contextlib.redirect_stdout(io.StringIO()), atomic_file(path) as tmp:
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, str(tmp), dynamo=True, input_names=list(names), output_names=[output],
                          dynamic_shapes=tuple({0: batch} for _ in example), external_data=False)
    return path


def verify(model: torch.nn.Module, path: str | os.PathLike, make_example, batches=(1, 3), seed: int = 0) -> float:
    """Max abs difference between onnxruntime and PyTorch on random inputs at several batch sizes."""
    runner = OnnxModel(path, device="cpu")
    torch.manual_seed(seed)
    worst = 0.0
    with torch.no_grad():
        for b in batches:
            example = make_example(b)
            want = model.eval().cpu()(*example).numpy()
            got = runner(*example).numpy()
            worst = max(worst, float(np.abs(want - got).max()))
    return worst


def export_pipeline(a2e: torch.nn.Module, renderer: torch.nn.Module | None, out_dir: str | os.PathLike,
                    metadata: dict | None = None) -> dict:
    """Export both networks into `out_dir` (only the a2e for a frame-bank model, which has no renderer
    network), verify each, and fail above TOLERANCE."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {}
    for name, model, example, names, output in (
        ("a2e", a2e, lambda b: a2e_example(a2e.cfg, b), A2E_INPUTS, "beta"),
        ("renderer", renderer, lambda b: renderer_example(renderer.cfg, b), RENDERER_INPUTS, "image"),
    ):
        if model is None:
            continue
        path = export_module(model, example(2), names, output, out_dir / f"{name}.onnx")
        diff = verify(model, path, example)
        report[name] = {"file": str(path), "max_abs_diff": diff, "size_mb": path.stat().st_size / 2**20}
        if diff > TOLERANCE:
            path.unlink()
            raise RealtalkError(f"ONNX {name} differs from PyTorch by {diff:.2e} (> {TOLERANCE:g})", path)
    (out_dir / "export.json").write_text(json.dumps({"models": report, **(metadata or {})}, indent=2))
    return report


class _quiet_exporter_logs:
    """The exporter logs a line per optional torchvision op it cannot find; we never use them."""

    def __enter__(self):
        self.logger = logging.getLogger("torch.onnx")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
