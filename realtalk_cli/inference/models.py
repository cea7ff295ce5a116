"""A model directory -> the networks and the render stage that dub with it.

A model directory holds `a2e/` (a checkpoint or a training run: its newest checkpoint is used) and a
renderer: `bank/` (the person's own frames, realtalk_cli/bank), with `refine/` for bank+fia (a network
refining the bank's picture, bank/refine.py), and/or `e2f/` (the paper's network);
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

RENDERERS = ("bank", "bank+fia", "fia")
PARTS = {"bank": ("bank",), "bank+fia": ("bank", "refine"), "fia": ("e2f",)}  # what each one loads


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
    has = [r for r in RENDERERS if all((model_dir / d).is_dir() for d in PARTS[r])]
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
    how = {"a2e": "train it with `realtalk train --stage a2e`", "bank": "build it with `realtalk dub --adapt --renderer bank`",
           "refine": "make it with `realtalk dub --adapt --renderer bank+fia`",
           "e2f": f"train it with `realtalk train --stage e2f --out {model_dir / 'e2f'}`"}
    part = PARTS[renderer][0]
    for d in ("a2e", *PARTS[renderer]):
        if not (model_dir / d).is_dir():
            raise RealtalkError(f"not a realtalk model directory for the {renderer} renderer (no {d}/ inside; {how[d]})", model_dir)
    a2e, a2e_config = load_a2e(model_dir / "a2e", device)
    a2e_face = FaceModel.from_checkpoint(a2e_config["face_model"], _face_tensors(model_dir / "a2e")).fingerprint()
    if part == "bank":
        bank = FrameBank(model_dir / "bank")
        refiner = None
        if renderer == "bank+fia":
            from realtalk_cli.bank.refine import BankRefiner

            refiner = BankRefiner.from_pretrained(model_dir / "refine", bank.face.crop_size, device)
        stage = BankStage(BankRenderer(bank), refiner)
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
