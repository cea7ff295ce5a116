"""`realtalk dub --adapt`: learn the person from the input video itself, then dub it.

No public RealTalk weights exist and nothing can be downloaded, so a fresh machine must still be
able to dub: the video's own frames and its own audio track are the training data. The steps:

    preprocess the video (its audio is the training signal)   -> <cache>/data
    train a2e person-specifically, within a budget             -> <cache>/model/a2e
    renderer "bank" (default): keep the video's own frames     -> <cache>/model/bank
    renderer "fia": train the paper's renderer too             -> <cache>/model/e2f
    dub with that model directory (model/renderer.json says which renderer)

The frame bank needs no training: it re-uses the person's sharp mouths (realtalk_cli/bank), so the
whole budget goes to the a2e and a first dub comes in minutes. The FIA renderer must learn to paint
a face and takes most of a larger budget.

Everything lives in a cache directory keyed by a hash of the video's bytes, so dubbing the same video
again (with other speech) starts at once. Each step resumes: preprocessing skips finished clips,
training continues from its last checkpoint (Ctrl-C saves one), and the time budget counts the time
already spent, so an interrupted adaptation resumes where it stopped instead of starting over.

`init` starts from a generic model directory (a2e/ and e2f/ trained on many people): its face model
is used for preprocessing so the coefficients mean the same thing, and its weights start training.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.fsutil import atomic_file, require_file
from realtalk_cli.progress import console

CONFIGS = Path(__file__).resolve().parents[2] / "models" / "configs"
# defaults sized for the device: a small 128x128 configuration on CPU, the paper's on a GPU; the
# training budget (minutes) depends on the renderer: the frame bank trains only the a2e
DEFAULTS = {
    "cpu": {"minutes": {"bank": 3.0, "fia": 15.0}, "a2e": "adapt_cpu_a2e.json", "e2f": "adapt_cpu_e2f.json"},
    "cuda": {"minutes": {"bank": 5.0, "fia": 30.0}, "a2e": None, "e2f": None},
}
SHARE = {"bank": {"a2e": 1.0}, "fia": {"a2e": 0.25, "e2f": 0.75}}  # of the budget, per stage trained


@dataclass
class AdaptOptions:
    minutes: float | None = None          # total training budget; default by device (DEFAULTS)
    init: Path | None = None              # generic model directory to fine-tune
    cache: Path | None = None             # cache root; default $REALTALK_CACHE or ~/.cache/realtalk
    a2e_config: Path | None = None        # override the stage configs (JSON, as for `realtalk train`)
    e2f_config: Path | None = None
    renderer: str = "bank"                # "bank" (the video's own frames) or "fia" (the paper's renderer)


def cache_root() -> Path:
    return Path(os.environ.get("REALTALK_CACHE") or Path.home() / ".cache" / "realtalk")


def content_key(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hash of the file's bytes: a renamed or copied video still finds its cache; an edited one does not."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:20]


def adapt(video: str | os.PathLike, options: AdaptOptions | None = None, device: torch.device | str = "cpu") -> Path:
    """Make (or reuse) a person-specific model directory for `video`; returns its path."""
    from realtalk_cli.pipelines.preprocess import PreprocessConfig, preprocess_dataset
    from realtalk_cli.progress import progress
    from realtalk_cli.train.run import train

    options = options or AdaptOptions()
    video = require_file(video, "video")
    device = torch.device(device)
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    root = (options.cache or cache_root()) / "adapt" / content_key(video)
    data, model = root / "data", root / "model"
    root.mkdir(parents=True, exist_ok=True)
    (root / "source.json").write_text(json.dumps({"video": str(video.resolve()), "bytes": video.stat().st_size}))

    config = PreprocessConfig(val_fraction=0.0)
    if options.init is not None:
        config.face_model = str(_face_model_source(Path(options.init)))
    console.print(f"adapt: cache {root}")
    with progress() as p:
        result = preprocess_dataset([video.resolve()], data, config, progress=p)
    if not result.clips:
        reason = next((s.get("reason") for s in result.sources if s.get("status") != "ok"), "no usable clip")
        raise RealtalkError(f"cannot learn this person: {reason}", video)

    if options.renderer not in SHARE:
        raise UsageError(f"--renderer {options.renderer!r}: expected {' or '.join(SHARE)}")
    minutes = options.minutes if options.minutes is not None else defaults["minutes"][options.renderer]
    for stage, share in SHARE[options.renderer].items():
        run = model / stage
        done = run / "adapt_done.json"
        if done.is_file() and json.loads(done.read_text()).get("minutes", 0) >= minutes * share:
            continue  # trained with at least this budget before
        cfg = getattr(options, f"{stage}_config") or (CONFIGS / defaults[stage] if defaults[stage] else None)
        overrides = {"trainer": {"steps": 10**9, "max_minutes": minutes * share, "val_every": 0},
                     "task": {"split_frames": 0.0}}
        console.print(f"adapt: training {stage} for up to {minutes * share:.1f} min")
        init = Path(options.init) / stage if options.init is not None else None
        train(stage, data, run, config=cfg, overrides=overrides, resume=(run / "config.json").is_file(),
              device=str(device), init=init)
        done.write_text(json.dumps({"minutes": minutes * share}))
    if options.renderer == "bank" and not (model / "bank" / "config.json").is_file():
        from realtalk_cli.bank.store import build_bank

        with progress() as p:
            build_bank(data, model / "bank", video=video, progress=p)
    with atomic_file(model / "renderer.json") as tmp:
        tmp.write_text(json.dumps({"renderer": options.renderer}))
    return model


def _face_model_source(init: Path) -> Path:
    """The face model inside a generic model directory (its a2e checkpoint carries one)."""
    from realtalk_cli.pipelines.dub import resolve_run

    if not (init / "a2e").is_dir():
        raise RealtalkError("--init is not a model directory (no a2e/ inside)", init)
    return resolve_run(init / "a2e")
