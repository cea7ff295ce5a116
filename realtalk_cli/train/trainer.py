"""The training loop both stages share (a2e and e2f).

A stage plugs in as a `Task`; the `Trainer` owns everything else: seeding, autocast, DDP, the
progress bar, validation, metrics (JSONL + PNG) and checkpoints with exact resume.

Writing a task
--------------
    class MyTask(Task):
        def __init__(self, config: dict, device):
            super().__init__(config, device)              # config = the whole run config (JSON-able)
            self.models = {"net": Net(...).to(device)}    # trainable networks, one checkpoint group each
        def optimizers(self):                             # name -> optimizer over self.models' params
            return {"main": torch.optim.Adam(self.models["net"].parameters(), lr=...)}
        def sample_batch(self, rng: np.random.Generator): # one training batch, on self.device
        def loss(self, batch) -> tuple[Tensor, dict]:     # scalar loss + floats to log
        def validate(self) -> dict[str, float]:           # held-out metrics (run under no_grad, eval mode)
        def checkpoint_extra(self) -> tuple[dict, dict]:  # extra config + tensor groups that make a
                                                          # checkpoint self-contained (face model, audio)
Tasks with several optimizers (a GAN) override `train_step(batch, trainer)` and call
`trainer.optimize(loss, "disc")`, `trainer.optimize(loss, "gen")` themselves; the default does
`trainer.optimize(self.loss(batch)[0], "main")`. Always call networks through `self.models[name]`:
under DDP the trainer replaces the entries with DistributedDataParallel wrappers. `self.trainer` is
set by the Trainer (read trainer.step, trainer.run_dir, e.g. to write preview images).

Run directory
-------------
    <run>/config.json                      the config the run used (task["config"])
    <run>/metrics.jsonl, metrics.png       {"step", "split": "train"|"val", metric: value, ...}
    <run>/checkpoints/step_0001000/        config.json + <model>.safetensors + optim_<name>.safetensors
                                           + the task's extra groups; written atomically

Weight averaging: with `ema` > 0 the trainer keeps an exponential moving average of every model's
weights (decay `ema` per step). Validation runs on the averaged weights and they are what
`<model>.safetensors` holds (what inference loads); the raw weights go to `raw_<model>.safetensors`
for resuming. Small datasets overfit fast; the average is less sensitive to when training stops.

Determinism: the batch and dropout randomness of step s on rank r are seeded from (seed, r, s), so a
resumed run draws exactly the batches the uninterrupted run would have drawn, and with the saved
model and optimizer state its next loss is identical. Checkpoints are written every `ckpt_every`
steps and at the end; `resume` continues from the newest one.

Multi-GPU: run under `torchrun --nproc_per_node N` (or multi-node torchrun). The process group is
initialised only when WORLD_SIZE > 1; each rank samples its own batches (batch_size is per rank),
rank 0 validates, logs and writes checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from realtalk_cli.checkpoint import latest_checkpoint, load_checkpoint, load_weights, save_checkpoint
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.fsutil import atomic_file
from realtalk_cli.progress import console, progress


AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainerConfig:
    steps: int = 1000
    val_every: int = 200  # 0: validate only at the end
    ckpt_every: int = 1000  # 0: checkpoint only at the end
    log_every: int = 10
    seed: int = 0
    amp: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 | fp16 | off
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    keep_last: int = 3  # checkpoints kept on disk (0 keeps all)
    ema: float = 0.0  # decay of the weight average used for validation and checkpoints; 0: off
    max_minutes: float = 0.0  # wall-clock budget, counted across resumes; 0: none (steps decide)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainerConfig":
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise UsageError(f"unknown trainer config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


class Task:
    """Base class of a training stage; see the module docstring."""

    models: dict[str, nn.Module]
    closed_form = False  # True: one train_step solves the task (e.g. a ridge regression), no optimizer

    def __init__(self, config: dict, device: torch.device):
        self.config = config
        self.device = device
        self.models = {}
        self.trainer: "Trainer | None" = None

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def sample_batch(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def train_step(self, batch: Any, trainer: "Trainer") -> dict[str, float]:
        loss, metrics = self.loss(batch)
        trainer.optimize(loss, "main")
        return {"loss": loss.item(), **metrics}

    def validate(self) -> dict[str, float]:
        return {}

    def checkpoint_extra(self) -> tuple[dict, dict[str, dict[str, torch.Tensor]]]:
        return {}, {}


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group when there is one (WORLD_SIZE > 1); otherwise a no-op."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
    return info


def step_seed(seed: int, rank: int, step: int) -> np.random.Generator:
    """The random stream of one step on one rank; also seeds torch (dropout) from the same triple."""
    ss = np.random.SeedSequence([seed, rank, step])
    torch.manual_seed(int(ss.generate_state(1, dtype=np.uint64)[0] >> 1))
    return np.random.default_rng(ss)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """Optimizer state as flat safetensors names ('<param index>.<key>') plus JSON param groups."""
    sd = opt.state_dict()
    tensors = {f"{i}.{k}": v if torch.is_tensor(v) else torch.tensor(v) for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


class Trainer:
    def __init__(self, task: Task, cfg: TrainerConfig, run_dir: str | os.PathLike, dist_info: DistInfo | None = None):
        self.task, self.cfg, self.run_dir = task, cfg, Path(run_dir)
        self.dist = dist_info or DistInfo()
        self.device = task.device
        self.step = 0
        self.elapsed_before, self.t_start = 0.0, None
        task.trainer = self
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            for name, m in task.models.items():
                if any(p.requires_grad for p in m.parameters()):
                    task.models[name] = nn.parallel.DistributedDataParallel(m, device_ids=ids)
        self.optimizers = task.optimizers()
        self.amp_dtype = self._amp_dtype(cfg.amp)
        fp16 = self.amp_dtype == torch.float16
        self.scalers = {n: torch.amp.GradScaler(self.device.type, enabled=fp16) for n in self.optimizers}
        self.ema = {n: {k: v.detach().clone() for k, v in unwrap(m).state_dict().items()}
                    for n, m in task.models.items()} if cfg.ema > 0 else {}

    def _amp_dtype(self, amp: str) -> torch.dtype | None:
        if amp not in AMP_MODES:
            raise UsageError(f"amp {amp!r}: expected {', '.join(AMP_MODES)}")
        if self.device.type != "cuda" or amp == "off":
            return None  # CPU autocast is slower than fp32 for these small networks
        if amp == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if amp == "bf16" else torch.float16

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # --- called by tasks -------------------------------------------------------------------------
    def optimize(self, loss: torch.Tensor, name: str = "main") -> None:
        """zero_grad, backward (loss-scaled under fp16), optional clipping, optimizer step."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.cfg.grad_clip > 0:
            scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()

    # --- weight averaging ------------------------------------------------------------------------
    @torch.no_grad()
    def _update_ema(self) -> None:
        for name, avg in self.ema.items():
            for k, v in unwrap(self.task.models[name]).state_dict().items():
                if v.is_floating_point():
                    avg[k].lerp_(v, 1.0 - self.cfg.ema)
                else:
                    avg[k].copy_(v)

    @contextlib.contextmanager
    def averaged_weights(self):
        """Temporarily put the averaged weights into the models (a no-op without ema)."""
        raw = {n: {k: v.clone() for k, v in unwrap(self.task.models[n]).state_dict().items()} for n in self.ema}
        for n, avg in self.ema.items():
            unwrap(self.task.models[n]).load_state_dict(avg)
        try:
            yield
        finally:
            for n, weights in raw.items():
                unwrap(self.task.models[n]).load_state_dict(weights)

    # --- checkpoints -----------------------------------------------------------------------------
    def save(self) -> Path:
        extra_cfg, extra_tensors = self.task.checkpoint_extra()
        tensors = {name: unwrap(m).state_dict() for name, m in self.task.models.items()}
        for name, avg in self.ema.items():  # inference loads <name>: the average
            tensors[f"raw_{name}"], tensors[name] = tensors[name], avg
        optim_cfg = {}
        for name, opt in self.optimizers.items():
            tensors[f"optim_{name}"], groups = optimizer_tensors(opt)
            optim_cfg[name] = {"param_groups": groups, "scaler": self.scalers[name].state_dict()}
        tensors.update(extra_tensors)
        config = {**self.task.config, **extra_cfg, "step": self.step, "optimizers": optim_cfg,
                  "elapsed_seconds": self.elapsed()}
        out = save_checkpoint(self.run_dir / "checkpoints" / f"step_{self.step:07d}", config, tensors)
        if self.cfg.keep_last > 0:
            for old in sorted((self.run_dir / "checkpoints").glob("step_*"))[: -self.cfg.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        return out

    def load(self, ckpt: Path) -> None:
        config, tensors = load_checkpoint(ckpt)
        for name, m in self.task.models.items():
            group = f"raw_{name}" if f"raw_{name}" in tensors else name
            load_weights(unwrap(m), tensors[group], ckpt, group)
            if name in self.ema:
                self.ema[name] = {k: v.to(self.device) for k, v in tensors[name].items()}
        for name, opt in self.optimizers.items():
            load_optimizer(opt, tensors.get(f"optim_{name}", {}), config["optimizers"][name]["param_groups"])
            self.scalers[name].load_state_dict(config["optimizers"][name]["scaler"])
        self.step = int(config["step"])
        self.elapsed_before = float(config.get("elapsed_seconds", 0.0))

    def elapsed(self) -> float:
        """Training seconds so far, including earlier (interrupted) sessions of this run."""
        return self.elapsed_before + (time.perf_counter() - self.t_start if self.t_start else 0.0)

    def out_of_time(self) -> bool:
        if self.cfg.max_minutes <= 0:
            return False
        over = self.elapsed() >= 60 * self.cfg.max_minutes
        if self.dist.world > 1:  # every rank must stop at the same step, or the next barrier hangs
            flag = torch.tensor([float(over)], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    # --- metrics ---------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        if self.dist.main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self) -> None:
        """On resume, forget records past the checkpoint so the log reads like one uninterrupted run."""
        path = self.run_dir / "metrics.jsonl"
        if self.dist.main and path.exists():
            keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= self.step]
            with atomic_file(path) as tmp:
                tmp.write_text("".join(line + "\n" for line in keep))

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> Path:
        """Train up to cfg.steps (one for a closed-form task); returns the final checkpoint directory."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        existing = latest_checkpoint(self.run_dir)
        if resume and existing is not None:
            self.load(existing)
            self._truncate_log()
        elif existing is not None:
            raise UsageError("run directory already holds checkpoints (pass --resume, or choose another --out)", self.run_dir)
        if self.dist.main:
            with atomic_file(self.run_dir / "config.json") as tmp:
                tmp.write_text(json.dumps(self.task.config, indent=2, sort_keys=True))

        cfg, stage = self.cfg, self.task.config.get("stage", "model")
        steps = 1 if self.task.closed_form else cfg.steps
        for m in self.task.models.values():
            m.train()
        sums: dict[str, float] = {}
        n_sum, t_last = 0, time.perf_counter()
        self.t_start = time.perf_counter()
        final, saved_step, over = None, self.step, self.out_of_time()
        # with a time budget the bar measures time (its estimate is then the time left), else steps
        timed = cfg.max_minutes > 0 and not self.task.closed_form
        total, done = (60 * cfg.max_minutes, self.elapsed()) if timed else (steps, self.step)
        try:
            with progress() as bar:
                task_id = bar.add_task(f"train {stage}", total=total, completed=done, info="")
                while self.step < steps and not over:
                    rng = step_seed(cfg.seed, self.dist.rank, self.step)
                    batch = self.task.sample_batch(rng)
                    with self.autocast():
                        metrics = self.task.train_step(batch, self)
                    if not all(math.isfinite(v) for v in metrics.values()):
                        raise RealtalkError(f"training diverged at step {self.step}: {metrics}", self.run_dir)
                    self._update_ema()
                    self.step += 1
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v
                    n_sum += 1
                    bar.update(task_id, completed=min(total, self.elapsed()) if timed else self.step)

                    over = self.out_of_time()
                    last = self.step == steps or over
                    if _due(self.step, cfg.log_every) or last:
                        now = time.perf_counter()
                        mean = {k: v / n_sum for k, v in sums.items()}
                        self._log({"step": self.step, "split": "train", **mean, "it_s": n_sum / (now - t_last)})
                        bar.update(task_id, info=f"loss {mean.get('loss', float('nan')):.4g}  {n_sum / (now - t_last):.1f} it/s")
                        sums, n_sum, t_last = {}, 0, now
                    if _due(self.step, cfg.val_every) or last:
                        self._validate()
                    if _due(self.step, cfg.ckpt_every) or last:
                        if self.dist.main:
                            final, saved_step = self.save(), self.step
                        if self.dist.world > 1:
                            dist.barrier()
        except KeyboardInterrupt:
            # Ctrl-C: keep what was learned since the last checkpoint; `--resume` continues from here
            if self.dist.main and self.step > saved_step:
                console.print(f"[yellow]interrupted: saving step {self.step} to resume later[/yellow]")
                self.save()
            raise
        if self.dist.main:
            plot_metrics(self.run_dir / "metrics.jsonl", self.run_dir / "metrics.png")
        return final or latest_checkpoint(self.run_dir)

    def _validate(self) -> None:
        if self.dist.main:
            for m in self.task.models.values():
                m.eval()
            with torch.no_grad(), self.autocast(), self.averaged_weights():
                metrics = self.task.validate()
            for m in self.task.models.values():
                m.train()
            if metrics:
                self._log({"step": self.step, "split": "val", **metrics})
                console.log(f"step {self.step}: " + "  ".join(f"val {k} {v:.4g}" for k, v in metrics.items()))
        if self.dist.world > 1:
            dist.barrier()


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def plot_metrics(jsonl: Path, png: Path) -> None:
    """One panel per metric, train and val curves, log scale where values are positive."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    records = [json.loads(line) for line in jsonl.read_text().splitlines() if line] if jsonl.exists() else []
    keys = sorted({k for r in records for k in r} - {"step", "split", "it_s"})
    if not keys:
        return
    cols = min(3, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows), layout="constrained")
    for i, key in enumerate(keys):
        ax = fig.add_subplot(rows, cols, i + 1)
        for split in ("train", "val"):
            pts = [(r["step"], r[key]) for r in records if r["split"] == split and key in r]
            if pts:
                ax.plot(*zip(*pts), label=split, marker="." if split == "val" else None)
        if all(r[key] > 0 for r in records if key in r):
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.legend()
    with atomic_file(png) as tmp:
        fig.savefig(tmp, dpi=90)
