"""`realtalk train`: build the run config, the stage's task and the trainer, then fit.

A stage module (train/a2e_task.py, train/e2f_task.py) provides
    default_config() -> dict            the paper configuration: {"stage", "model", "task", "trainer"}
    build_task(data, config, device)    -> trainer.Task (it may complete config, e.g. input sizes)
Config precedence: stage defaults < --config JSON files in order (any subset, merged per section)
< command-line options; e.g. `--config a2e_cpu_small.json --config a2e_ablation_no_history.json`. A resumed run starts from the config.json its run directory recorded.
"""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path

import torch

from realtalk_cli.checkpoint import latest_checkpoint
from realtalk_cli.device import resolve_device
from realtalk_cli.errors import NotImplementedYet, UsageError
from realtalk_cli.fsutil import read_json
from realtalk_cli.progress import console, set_quiet
from realtalk_cli.train.trainer import Trainer, TrainerConfig, init_distributed

STAGES = {"a2e": "realtalk_cli.train.a2e_task", "e2f": "realtalk_cli.train.e2f_task", "refine": "realtalk_cli.train.refine_task",
          "lip_prior": "realtalk_cli.train.lip_prior"}  # lip_prior: closed form over many people, no trainer


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: override's leaves win."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config(path: str | os.PathLike) -> dict:
    """A config file: a path, or the name of a shipped config (realtalk_cli/configs/)."""
    from realtalk_cli.configs import config_path

    return read_json(config_path(path), "config file", UsageError)


RUNS = Path("models")  # default home of training runs: models/run/<stage>, models/run2/<stage>, ...


def _run_number(path: Path) -> int | None:
    """models/run -> 1, models/run2 -> 2, ...; None for anything else."""
    m = re.fullmatch(r"run([2-9]|[1-9]\d+)?", path.name)
    return int(m.group(1) or 1) if m and path.is_dir() else None


def run_dirs(root: Path = RUNS) -> list[Path]:
    """models/run, models/run2, models/run3, ... that exist, oldest first."""
    return sorted((p for p in root.glob("run*") if _run_number(p)), key=_run_number)


def default_run_dir(stage: str, resume: bool, root: Path = RUNS) -> Path:
    """Where `train` writes without --out. A new run goes into the newest run directory if that has
    no <stage> yet (so a2e then e2f pair up in one directory for `dub --checkpoint`), else into the
    next number; nothing is ever overwritten. --resume continues the newest run of this stage."""
    runs = run_dirs(root)
    if resume:
        have = [r for r in runs if (r / stage).is_dir()]
        if have:
            return have[-1] / stage
    if runs and not (runs[-1] / stage).exists():
        return runs[-1] / stage
    n = _run_number(runs[-1]) + 1 if runs else 1
    return root / ("run" if n == 1 else f"run{n}") / stage


def init_weights(task, path: str | os.PathLike) -> None:
    """Start from another run's weights (fine-tuning a generic model); optimizer state starts fresh."""
    from realtalk_cli.checkpoint import load_checkpoint, load_weights
    from realtalk_cli.errors import RealtalkError

    path = Path(path)
    ckpt = latest_checkpoint(path) or path if (path / "checkpoints").is_dir() else path
    _, tensors = load_checkpoint(ckpt)
    for name, model in task.models.items():
        if name not in tensors:
            raise RealtalkError(f"init checkpoint has no {name} weights", ckpt)
        load_weights(model, tensors[name], ckpt, name)


def stage_module(stage: str):
    if stage not in STAGES:
        raise UsageError(f"--stage {stage!r}: expected one of {', '.join(STAGES)}")
    try:
        return importlib.import_module(STAGES[stage])
    except ModuleNotFoundError as e:
        if e.name == STAGES[stage]:
            raise NotImplementedYet(f"realtalk train --stage {stage}") from None
        raise


def train(
    stage: str,
    data: str | os.PathLike = "data",
    out: str | os.PathLike | None = None,  # default: default_run_dir(stage, resume)
    config: str | os.PathLike | list | None = None,  # one JSON file or several, merged in order
    overrides: dict | None = None,  # {"trainer": {...}, "task": {...}, "model": {...}} from the command line
    resume: bool = False,
    device: str = "auto",
    init: str | os.PathLike | None = None,  # checkpoint (or run) whose weights start a new run
) -> Path:
    """Train one stage into run directory `out`; returns the final checkpoint directory."""
    module = stage_module(stage)
    data = Path(data)
    if not data.is_dir():
        raise UsageError("dataset directory not found (make one with `realtalk preprocess VIDEOS -o DIR`)", data)
    if out is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # every rank would pick its own number
            raise UsageError("under torchrun give --out: all processes must write one run directory")
        out = default_run_dir(stage, resume)
        console.print(f"train: run directory {out}{' (resumed)' if resume and out.is_dir() else ''}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError("run directory is a file", out)
    files = [] if config is None else [config] if isinstance(config, (str, os.PathLike)) else list(config)
    if resume and (out / "config.json").is_file():
        cfg = read_config(out / "config.json")  # the run's own config; --config may only retune training
        if cfg.get("stage") != stage:
            raise UsageError(f"run directory holds a {cfg.get('stage')} run, not {stage}", out)
        for f in files:
            new = merge(cfg, read_config(f))
            if new.get("model") != cfg.get("model"):
                raise UsageError("--config changes the model of the run being resumed", f)
            cfg = new
    else:
        cfg = module.default_config()
        for f in files:
            cfg = merge(cfg, read_config(f))
        cfg["stage"] = stage
    cfg = merge(cfg, {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in (overrides or {}).items()})
    cfg["data"] = str(data)
    if hasattr(module, "fit_run"):  # solved in one step: no trainer, no devices
        return module.fit_run(data, out, cfg)

    dist = init_distributed()
    if not dist.main:
        set_quiet(True)  # one progress bar per job, from rank 0
    dev = torch.device("cuda", dist.local_rank) if dist.world > 1 and torch.cuda.is_available() else resolve_device(device)
    trainer_cfg = TrainerConfig.from_dict(cfg["trainer"])
    torch.manual_seed(trainer_cfg.seed)  # same initial weights on every rank and every rerun
    try:
        task = module.build_task(data, cfg, dev)
        if init is not None and not (resume and latest_checkpoint(out)):
            init_weights(task, init)
        final = Trainer(task, trainer_cfg, out, dist).fit(resume=resume)
        if dist.world > 1:
            torch.distributed.barrier()  # every rank finishes together (gloo aborts on a lone exit)
        return final
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
