"""Checkpoint directories: `config.json` plus one `<name>.safetensors` per tensor group.

A checkpoint holds everything needed to run a model without the data it was trained on: the model
config, its weights, the face model basis and the audio front-end settings. Nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from realtalk_cli.errors import RealtalkError
from realtalk_cli.fsutil import atomic_dir, read_json

CONFIG_NAME = "config.json"


def save_checkpoint(directory: str | os.PathLike, config: dict, tensors: dict[str, dict[str, torch.Tensor]]) -> Path:
    """Write `config` and each tensor group atomically: a reader never sees a half-written checkpoint."""
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True, default=_json_default))
        for name, group in tensors.items():
            flat = {k: v.detach().contiguous().cpu() for k, v in group.items()}
            save_file(flat, str(tmp / f"{name}.safetensors"))
    return directory


def load_checkpoint(directory: str | os.PathLike, required: tuple[str, ...] = ()) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
    """Return (config, {group: tensors}); a clear error when the directory is not a checkpoint."""
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not directory.is_dir():
        raise RealtalkError("checkpoint directory not found", directory)
    if not cfg_path.is_file():
        raise RealtalkError(f"not a realtalk checkpoint (no {CONFIG_NAME})", directory)
    config = read_json(cfg_path, CONFIG_NAME, expect=dict)
    tensors = {}
    for f in sorted(directory.glob("*.safetensors")):
        try:
            tensors[f.stem] = load_file(str(f))
        except Exception as e:  # safetensors raises several types for a damaged file
            raise RealtalkError(f"cannot read weights ({e})", f) from None
    missing = [r for r in required if r not in tensors]
    if missing:
        raise RealtalkError(f"checkpoint lacks {', '.join(m + '.safetensors' for m in missing)}", directory)
    return config, tensors


def config_field(config: dict, key: str, directory: str | os.PathLike, kind: type = dict):
    """config[key] of a checkpoint: missing or of the wrong type is one line naming the file and field."""
    value = config.get(key)
    if not isinstance(value, kind):
        problem = "missing" if value is None else f"a {type(value).__name__}, expected a {kind.__name__}"
        raise RealtalkError(f"field {key!r} is {problem}", Path(directory) / CONFIG_NAME)
    return value


def build_from_config(factory, config: dict, key: str, directory: str | os.PathLike):
    """factory(config[key]), e.g. a network built from its config section: unknown or badly typed
    settings name the file and the field instead of surfacing as a TypeError."""
    section = config_field(config, key, directory)
    try:
        return factory(section)
    except (TypeError, ValueError) as e:
        raise RealtalkError(f"field {key!r} does not fit this version of realtalk ({e})", Path(directory) / CONFIG_NAME) from None


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], directory: str | os.PathLike, name: str) -> None:
    """model.load_state_dict(state); weights of another shape or architecture are one line naming the
    file and the first mismatch (torch lists every one, often dozens of lines)."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        first = problems[0] if problems else str(e)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise RealtalkError(f"weights do not match the model's config: {first}{more}",
                            Path(directory) / f"{name}.safetensors") from None


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run directory (names are zero-padded, so they sort by step)."""
    ckpts = [c for c in sorted((Path(run_dir) / "checkpoints").glob("step_*")) if re.fullmatch(r"step_\d+", c.name)]
    return ckpts[-1] if ckpts else None


def resolve_run(path: str | os.PathLike) -> Path:
    """A training run directory -> its newest checkpoint; a checkpoint directory stays as it is."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        return latest_checkpoint(path) or path
    return path


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """A third-party weights file (.pth read with weights_only=True, never unpickled, or .safetensors)
    -> a flat name -> tensor dict; a missing, damaged or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise RealtalkError(f"{what} weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged or foreign file raises several exception types
        raise RealtalkError(f"cannot read {what} weights ({type(e).__name__}: {e})", path) from None
    for key in ("state_dict", "model", "net_recon"):  # wrappers used by common training scripts
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RealtalkError(f"not a {what} state dict (expected a mapping of names to tensors)", path)
    return {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
