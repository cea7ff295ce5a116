"""A model directory -> the networks and the render stage that dub with it.

A model directory holds `a2e/` (a checkpoint or a training run: its newest checkpoint is used) and a
renderer: `bank/` (the person's own frames, realtalk_cli/bank) and/or `e2f/` (the paper's network);
`renderer.json` records which one adaptation chose; `onnx/` holds exports from `realtalk export`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from realtalk_cli.checkpoint import resolve_run
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face.model import FaceModel
from realtalk_cli.inference.onnx import OnnxModel, OnnxNet
from realtalk_cli.inference.a2e import load_a2e
from realtalk_cli.inference.e2f import E2FModel, load_renderer

RENDERERS = ("bank", "fia")


def renderer_choice(model_dir: Path) -> str:
    """Which renderer a model directory dubs with: the one recorded by adaptation (renderer.json),
    else the only one present, else the frame bank."""
    rec = model_dir / "renderer.json"
    if rec.is_file():
        from realtalk_cli.fsutil import read_json

        choice = read_json(rec).get("renderer")
        if choice not in RENDERERS:
            raise RealtalkError(f"unknown renderer {choice!r} (expected {' or '.join(RENDERERS)})", rec)
        return choice
    has = [r for r, d in (("bank", "bank"), ("fia", "e2f")) if (model_dir / d).is_dir()]
    return has[0] if has else "fia"


def load_models(model_dir: str | os.PathLike, device: torch.device, backend: str = "torch", renderer: str | None = None):
    """(a2e, render stage, a2e config) from a model directory with `a2e/` and `e2f/` or `bank/` inside."""
    from realtalk_cli.bank.compose import BankRenderer
    from realtalk_cli.bank.store import FrameBank
    from realtalk_cli.inference.render_stage import BankStage, FIAStage

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise RealtalkError("model directory not found", model_dir)
    renderer = renderer or renderer_choice(model_dir)
    if renderer not in RENDERERS:
        raise UsageError(f"--renderer {renderer!r}: expected {' or '.join(RENDERERS)}")
    part = "bank" if renderer == "bank" else "e2f"
    for d, how in (("a2e", "train it with `realtalk train --stage a2e`"),
                   (part, "build it with `realtalk dub --adapt --renderer bank`" if part == "bank" else
                    f"train it with `realtalk train --stage e2f --out {model_dir / 'e2f'}`")):
        if not (model_dir / d).is_dir():
            raise RealtalkError(f"not a realtalk model directory for the {renderer} renderer (no {d}/ inside; {how})", model_dir)
    a2e, a2e_config = load_a2e(model_dir / "a2e", device)
    a2e_face = FaceModel.from_checkpoint(a2e_config["face_model"], _face_tensors(model_dir / "a2e")).fingerprint()
    if renderer == "bank":
        stage = BankStage(BankRenderer(FrameBank(model_dir / "bank")))
    else:
        e2f = load_renderer(resolve_run(model_dir / "e2f"), device)
        if backend == "onnx":
            e2f = E2FModel(OnnxNet(OnnxModel(model_dir / "onnx" / "renderer.onnx", device), e2f.renderer.cfg), e2f.face, e2f.mask)
        crop = (a2e_config.get("align") or {}).get("crop_size", e2f.face.crop_size)
        stage = FIAStage(e2f, crop, device)
    if stage.face.fingerprint() != a2e_face:
        raise RealtalkError(f"a2e and {part} were made with different face models; build both from one dataset", model_dir)
    if backend == "onnx":
        a2e = OnnxNet(OnnxModel(model_dir / "onnx" / "a2e.onnx", device), a2e.cfg)
    elif backend != "torch":
        raise UsageError(f"--backend {backend!r}: expected torch or onnx")
    return a2e, stage, a2e_config


def _face_tensors(a2e_dir: Path) -> dict:
    """Only the face-model file of the a2e checkpoint (not its weights and optimizer state again)."""
    from safetensors.torch import load_file

    return load_file(str(resolve_run(a2e_dir) / "face_model.safetensors"))
