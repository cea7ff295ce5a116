"""Training task of the bank+fia refiner (nets/refiner.py, bank/refine.py; plugs into train/trainer.py).

Pairs (composite, target, region) are made once from the person's video and its frame bank, each
frame re-composed from a bank frame at least a second away (bank/refine.training_pairs), and kept in
memory at the refiner's size (400 pairs at 128 px: 40 MB). Every `val_every`-th pair is held out.

    L = sum |C + R - target| * M / sum M       (L1 where the bank changed pixels; R = refiner residual)

Validation reports that L1 for the bank alone (R = 0) and refined, on the held-out pairs: the refiner
earns its place only where `l1_refined` < `l1_bank`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.nets.refiner import Refiner, RefinerConfig
from realtalk_cli.train.trainer import Task, TrainerConfig


@dataclass
class RefineTaskConfig:
    bank: str = ""                # frame bank directory (realtalk_cli/bank/store.py) of the dataset's video
    video: str = ""               # that video
    frames: int = 400             # training pairs, spread over the video
    exclude_seconds: float = 1.0  # a pair's bank frame is at least this far from its target
    val_every: int = 10           # every n-th pair is held out (0: none)
    batch_size: int = 8
    lr: float = 1e-3


def default_config() -> dict:
    return {"stage": "refine", "model": RefinerConfig().to_dict(), "task": asdict(RefineTaskConfig()),
            "trainer": asdict(TrainerConfig(steps=2000, val_every=500, ckpt_every=500, log_every=20))}


class RefineTask(Task):
    def __init__(self, data: str | Path, config: dict, device: torch.device):
        super().__init__(config, device)
        from realtalk_cli.bank.compose import BankRenderer
        from realtalk_cli.bank.refine import training_pairs
        from realtalk_cli.bank.store import FrameBank
        from realtalk_cli.progress import progress

        unknown = set(config["task"]) - {f.name for f in fields(RefineTaskConfig)}
        if unknown:
            raise UsageError(f"unknown refine task config keys: {', '.join(sorted(unknown))}")
        self.tc = tc = RefineTaskConfig(**config["task"])
        if not tc.bank or not tc.video:
            raise UsageError("the refiner trains on a frame bank and its video: set task.bank and task.video")
        self.cfg = RefinerConfig.from_dict(config["model"])
        with progress() as p:
            pairs = training_pairs(BankRenderer(FrameBank(tc.bank)), data, tc.video, self.cfg.image_size, tc.frames,
                                   tc.exclude_seconds, progress=p)
        n = len(pairs["composite"])
        if n == 0:
            raise RealtalkError("no training pair for the refiner: the video is shorter than the excluded span", tc.video)
        held = np.zeros(n, bool)
        if tc.val_every > 0 and n >= 2 * tc.val_every:
            held[tc.val_every - 1::tc.val_every] = True
        self.train_idx, self.val_idx = np.flatnonzero(~held), np.flatnonzero(held)
        # uint8 images stay uint8 in memory; a batch becomes float when it is drawn
        self.composite, self.target = torch.as_tensor(pairs["composite"]), torch.as_tensor(pairs["target"])
        self.region = torch.as_tensor(pairs["region"])
        self.models = {"refiner": Refiner(self.cfg).to(device)}

    def optimizers(self):
        return {"main": torch.optim.Adam(self.models["refiner"].parameters(), lr=self.tc.lr)}

    def _batch(self, idx: np.ndarray) -> dict[str, Tensor]:
        image = lambda x: x[idx].permute(0, 3, 1, 2).float().div(255).to(self.device)  # noqa: E731
        return {"composite": image(self.composite), "target": image(self.target),
                "region": self.region[idx][:, None].float().to(self.device)}

    def sample_batch(self, rng: np.random.Generator) -> dict[str, Tensor]:
        return self._batch(rng.choice(self.train_idx, size=self.tc.batch_size))

    @staticmethod
    def _l1(out: Tensor, b: dict[str, Tensor]) -> Tensor:
        return ((out - b["target"]).abs() * b["region"]).sum() / (3 * b["region"].sum()).clamp(min=1.0)

    def loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        loss = self._l1(batch["composite"] + self.models["refiner"](batch["composite"], batch["region"]), batch)
        return loss, {"l1": loss.item()}

    def validate(self) -> dict[str, float]:
        if len(self.val_idx) == 0:
            return {}
        b = self._batch(self.val_idx)
        refined = b["composite"] + self.models["refiner"](b["composite"], b["region"])
        return {"l1_bank": self._l1(b["composite"], b).item(), "l1_refined": self._l1(refined, b).item()}


def build_task(data: str | Path, config: dict, device: torch.device) -> RefineTask:
    return RefineTask(data, config, device)
