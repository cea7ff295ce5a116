"""The lip prior: how the lips of many people move with speech, in a mouth space shared by every face.

One person's minute cannot teach a mapping that holds for every voice; many people can. The prior is
a linear a2e (nets/a2e.py: A2ELinear, with its feature projection and output smoothing) from the
utterance-normalised audio features (Whisper states beside the log-mel) to the first K coordinates
of the pose-free lip shape (face/mouth.py), each clip's coordinates divided by the spread of its own
opening, so it learns the timing and the shape of a mouth, not any one person's amplitude.

A person's a2e starts from it (train/a2e_task.py, task.prior): their lip coordinates are mapped to
their expression coefficients by a least-squares fit on their own video, which turns the prior into
the weights of their own linear a2e; their minute of speech then moves those weights only where
cross-validation says it predicts their mouth better.

Stored like a checkpoint (config.json, lip_prior.safetensors); the package ships one fitted on the
shared corpus (realtalk_cli/models/lip_prior, its MODEL_CARD.md says from what and how well).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.checkpoint import load_checkpoint, save_checkpoint
from realtalk_cli.errors import RealtalkError
from realtalk_cli.face.mouth import lip_shapes
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "lip_prior"
STAGE = "lip_prior"


@dataclass
class LipPriorConfig:
    """How a prior is fitted (train/lip_prior.py); the shipped values are configs/lip_prior.json."""

    features: str = "whisper+mel"  # audio feature kind the prior hears
    n_comps: int = 6  # lip coordinates predicted (principal directions of lip motion; the first opens)
    project: int = 192  # per-frame feature directions the ridge reads
    context: int = 6  # frames of audio either side
    ridge: float = 1e5  # lambda, on standardised projected features
    smooth: float = 1.5  # Gaussian sigma of the output, frames
    max_lag: int = 6  # a clip whose video is off its audio by up to this many frames is re-timed
    min_lag_gain: float = 0.05  # ... when its re-timed mouth correlates this much better with the fit
    n_frames: int = 32  # window of the person's a2e made from it (inference/a2e.py)

    @classmethod
    def from_dict(cls, d: dict) -> "LipPriorConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise RealtalkError(f"unknown lip prior settings: {', '.join(sorted(unknown))}")
        return cls(**d)


class LipPrior:
    """model: A2ELinear [features -> n_comps lip coordinates]; basis [n_comps, 80] lip directions;
    template [478, 3] the face the pose is removed against; audio: the feature settings it hears."""

    def __init__(self, model: A2ELinear, basis: np.ndarray, template: np.ndarray, audio: dict,
                 fit: LipPriorConfig, info: dict | None = None):
        self.model, self.audio, self.fit, self.info = model.eval(), audio, fit, info or {}
        self.basis, self.template = np.asarray(basis, np.float32), np.asarray(template, np.float32)

    def coords(self, landmarks3d: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """A person's lip coordinates [T, n_comps] from tracked landmarks [T, 478, 3]: change from their
        mean lips over the valid frames, on the prior's basis (units of the template, not z-scored)."""
        lips = lip_shapes(landmarks3d, self.template)
        if not valid.any():
            raise RealtalkError("no tracked frame to measure the lips on")
        return (lips - lips[valid].mean(0)) @ self.basis.T

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        config = {"stage": STAGE, "model": self.model.cfg.to_dict(), "audio": self.audio,
                  "fit": asdict(self.fit), "info": self.info}
        tensors = {"a2e": self.model.state_dict(),
                   "lips": {"basis": torch.from_numpy(self.basis), "template": torch.from_numpy(self.template)}}
        return save_checkpoint(directory, config, tensors)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike | None = None) -> "LipPrior":
        """A saved prior; None or "builtin": the one shipped with the package."""
        directory = SHIPPED if directory in (None, "", "builtin") else Path(directory)
        if not (directory / "config.json").is_file():
            raise RealtalkError("no lip prior here (config.json missing)", directory)
        config, tensors = load_checkpoint(directory, required=("a2e", "lips"))
        if config.get("stage") != STAGE:
            raise RealtalkError(f"not a lip prior (stage {config.get('stage')!r})", directory)
        model = A2ELinear(A2EConfig.from_dict(config["model"]))
        model.load_state_dict(tensors["a2e"])
        return cls(model, tensors["lips"]["basis"].numpy(), tensors["lips"]["template"].numpy(), config["audio"],
                   LipPriorConfig.from_dict(config.get("fit", {})), config.get("info"))


def prior_unavailable(directory: str | os.PathLike | None = None) -> str | None:
    """Why the (shipped) prior cannot be used, or None; cheap: reads no weights."""
    directory = SHIPPED if directory in (None, "", "builtin") else Path(directory)
    return None if (directory / "config.json").is_file() else f"no lip prior in {directory}"
