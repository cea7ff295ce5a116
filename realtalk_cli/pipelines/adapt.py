"""`realtalk dub` without --checkpoint (or with --adapt): learn the person from the input video itself,
then dub it.

No public RealTalk weights exist and nothing can be downloaded, so a fresh machine must still be
able to dub: the video's own frames and its own audio track are the training data. The steps:

    preprocess the video (its audio is the training signal)   -> <cache>/data
    fit the a2e person-specifically                            -> <cache>/model/a2e
      (on a CPU a linear a2e solved in seconds, which follows a minute of speech better than a
      transformer trained for minutes: docs/experiments/sync.md; a small transformer within the budget
      when the video holds too little speech for it; on a GPU the paper's transformer within the budget)
    renderer "bank" (default): keep the video's own frames     -> <cache>/model/bank
    renderer "bank+fia": the bank, and a small network that learns what the bank's picture leaves
      wrong on this video (bank/refine.py)                     -> <cache>/model/bank, model/refine
    renderer "fia": train the paper's renderer too             -> <cache>/model/e2f
    dub with that model directory (model/renderer.json says which renderer)

The frame bank needs no training: it re-uses the person's sharp mouths (realtalk_cli/bank), so on a
CPU a first dub comes as soon as the video is preprocessed. The FIA renderer must learn to paint
a face and takes most of a larger budget.

Everything lives in a cache directory keyed by the video's bytes and everything else that shapes the
model (the renderer, the --init model, the stage configs, the dataset format), so dubbing the same video
again (with other speech) starts at once, and changing any of those learns anew instead of reusing a
stale model. Each step resumes: preprocessing skips finished clips,
training continues from its last checkpoint (Ctrl-C saves one), and the time budget counts the time
already spent, so an interrupted adaptation resumes where it stopped instead of starting over.

`init` starts from a generic model directory (a2e/ and e2f/ trained on many people): its face model
is used for preprocessing so the coefficients mean the same thing, and its weights start training.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.audio.features import AudioFeatureConfig
from realtalk_cli.configs import config_path
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.fsutil import atomic_file, cache_root, content_key, read_json, require_file
from realtalk_cli.progress import console

# defaults sized for the device: the lip prior of many people adapted to this person (a linear a2e, solved
# in seconds anywhere) and a small 128x128 renderer on CPU (shipped configs), the paper's on a GPU; the
# training budget (minutes) depends on the renderer (the frame bank trains only the a2e) and binds only
# stages trained by gradient descent
DEFAULTS = {
    "cpu": {"minutes": {"bank": 3.0, "bank+fia": 6.0, "fia": 15.0}, "e2f": "adapt_cpu_e2f"},
    "cuda": {"minutes": {"bank": 5.0, "bank+fia": 10.0, "fia": 30.0}, "e2f": None},
}
# how the a2e hears speech: Whisper + mel through the lip prior (docs/experiments/lip_prior.md); without
# the Whisper model or the prior, the person's own mel+phones ridge (sync.md, 7)
LIPS = {"prior": {"features": "whisper+mel", "a2e": "adapt_cpu_prior"},
        "own": {"features": "mel+phones", "a2e": "adapt_cpu_linear"}}
SHARE = {"bank": {"a2e": 1.0}, "bank+fia": {"a2e": 0.5, "refine": 0.5}, "fia": {"a2e": 0.25, "e2f": 0.75}}  # of the budget
BANKED = ("bank", "bank+fia")  # renderers that dub from the frame bank
# when the person's own linear a2e (no prior) finds nothing it can predict (a few seconds of speech), a
# small transformer within the budget: on KatieHill (6 s) it follows the held-out mouth at r 0.49 where
# the ridge stays at its mean; with the prior there is always something to predict with
FALLBACK = {"a2e": "adapt_cpu_a2e"}


def lip_route() -> dict[str, str]:
    """LIPS["prior"] when the Whisper model and the lip prior are installed, else LIPS["own"] (said once)."""
    from realtalk_cli.audio.whisper import whisper_unavailable
    from realtalk_cli.nets.lip_prior import prior_unavailable

    why = whisper_unavailable() or prior_unavailable()
    if why is None:
        return LIPS["prior"]
    if why not in _SAID:
        _SAID.add(why)
        console.print(f"adapt: {why}; hearing the speech through mel+phones instead (the lips follow other voices "
                      "less closely)", soft_wrap=True, highlight=False)
    return LIPS["own"]


_SAID: set[str] = set()


@dataclass
class AdaptOptions:
    minutes: float | None = None          # total training budget; default by device (DEFAULTS)
    steps: int | None = None              # also stop each trained stage after this many steps (tests, reproducible runs)
    init: Path | None = None              # generic model directory to fine-tune
    cache: Path | None = None             # cache root; default $REALTALK_CACHE or ~/.cache/realtalk
    a2e_config: Path | None = None        # override the stage configs (JSON, as for `realtalk train`)
    e2f_config: Path | None = None
    renderer: str = "bank"                # "bank" (the video's own frames), "bank+fia" (refined) or "fia" (the paper's)


def stage_configs(options: AdaptOptions, device: torch.device) -> dict[str, Path | None]:
    """The config file each stage this renderer needs trains with (None: the paper defaults)."""
    defaults = {**DEFAULTS["cuda" if device.type == "cuda" else "cpu"], "a2e": lip_route()["a2e"]}
    given = {"a2e": options.a2e_config, "e2f": options.e2f_config}
    configs = {stage: config_path(given.get(stage) or defaults.get(stage)) if given.get(stage) or defaults.get(stage) else None
               for stage in SHARE[options.renderer]}
    if options.init is not None:  # fine-tuning keeps the generic a2e's kind
        kind = _init_config(Path(options.init)).get("model", {}).get("kind")
        configs["a2e"] = _fine_tune_config(kind, options.a2e_config, configs["a2e"])
    return configs


def cache_key(video: Path, options: AdaptOptions, device: torch.device) -> str:
    """The cache entry: the video's bytes plus everything else that shapes what is learned from it."""
    from realtalk_cli.data.dataset import VERSION

    parts = {
        "video": content_key(video),
        "renderer": options.renderer,
        "configs": {stage: f and f.read_text() for stage, f in stage_configs(options, device).items()},
        "fallbacks": {stage: config_path(name).read_text() for stage, name in FALLBACK.items()},
        "init": _init_fingerprint(Path(options.init)) if options.init is not None else None,
        "prior": _prior_fingerprint(stage_configs(options, device).get("a2e")),
        "features": asdict(audio_features(options, device)),
        "dataset_version": VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


def audio_features(options: AdaptOptions, device: torch.device) -> AudioFeatureConfig:
    """The audio front end the video is preprocessed with: the generic model's with --init (its a2e
    hears only those), otherwise the device's default."""
    if options.init is not None:
        return AudioFeatureConfig.from_dict(_init_config(Path(options.init)).get("audio", {}))
    if options.a2e_config is not None:  # a given a2e config: the front end its prior hears, if any
        prior = read_json(config_path(options.a2e_config), "config file", UsageError).get("task", {}).get("prior")
        if not prior:
            return AudioFeatureConfig(kind=LIPS["own"]["features"])
        from realtalk_cli.nets.lip_prior import LipPrior

        return AudioFeatureConfig(kind=LipPrior.from_pretrained(prior).audio.get("kind", "whisper+mel"))
    return AudioFeatureConfig(kind=lip_route()["features"])


def _init_fingerprint(init: Path) -> list:
    """Name, size and modification time of every file of --init's checkpoints (cheap: no hashing
    of weights); a retrained or replaced model gets a new cache entry."""
    from realtalk_cli.checkpoint import resolve_run

    files = sorted(f for stage in ("a2e", "e2f") for f in resolve_run(init / stage).glob("*") if f.is_file())
    return [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _prior_fingerprint(config: Path | None) -> list | None:
    """The bytes of the lip prior the a2e config starts from: a refitted prior learns anew."""
    if config is None or not _uses_prior(config):
        return None
    from realtalk_cli.nets.lip_prior import SHIPPED

    prior = read_json(config, "config file", UsageError)["task"]["prior"]
    directory = SHIPPED if prior == "builtin" else Path(prior)
    return [(f.name, content_key(f)) for f in sorted(directory.glob("*.safetensors"))]


def _trained(run: Path, minutes: float) -> bool:
    """Trained before with at least this budget."""
    done = run / "adapt_done.json"
    return done.is_file() and json.loads(done.read_text()).get("minutes", 0) >= minutes


def _complete(model: Path, minutes: float, renderer: str) -> bool:
    """Every step of an earlier adaptation with at least this budget is there."""
    return ((model / "renderer.json").is_file() and (renderer not in BANKED or (model / "bank" / "config.json").is_file())
            and all(_trained(model / stage, minutes * share) for stage, share in SHARE[renderer].items()))


def adapt(video: str | os.PathLike, options: AdaptOptions | None = None, device: torch.device | str = "cpu") -> Path:
    """Make (or reuse) a person-specific model directory for `video`; returns its path."""
    from realtalk_cli.face.align import AlignConfig
    from realtalk_cli.pipelines.preprocess import PreprocessConfig, preprocess_dataset
    from realtalk_cli.progress import progress
    from realtalk_cli.train.run import train

    options = options or AdaptOptions()
    video = require_file(video, "video")
    device = torch.device(device)
    if options.renderer not in SHARE:
        raise UsageError(f"--renderer {options.renderer!r}: expected {' or '.join(SHARE)}")
    defaults = DEFAULTS["cuda" if device.type == "cuda" else "cpu"]
    minutes = options.minutes if options.minutes is not None else defaults["minutes"][options.renderer]
    config = PreprocessConfig(val_fraction=0.0, features=audio_features(options, device))
    if options.init is not None:  # crops and coefficients as the generic model was trained on
        config.face_model = str(_init_checkpoint(Path(options.init)))
        config.align = AlignConfig(**_init_config(Path(options.init)).get("align", {}))
    configs = stage_configs(options, device)
    root = (options.cache or cache_root()) / "adapt" / cache_key(video, options, device)
    data, model = root / "data", root / "model"
    if _complete(model, minutes, options.renderer):
        console.print(f"adapt: reusing the model learned from this video before ({model}); "
                      f"pass --checkpoint {model} to skip adaptation", soft_wrap=True, highlight=False)
        return model
    timed = [stage for stage in SHARE[options.renderer] if not _closed_form(configs[stage])]
    work = (f"about {minutes * sum(SHARE[options.renderer][s] for s in timed):g} min of training on {device.type}"
            if timed else "a linear a2e solved in seconds")
    console.print(f"adapt: learning this person from {video.name} first: preprocessing and {work}, cached in {root}; "
                  f"next time pass --checkpoint {model} to skip it", soft_wrap=True, highlight=False)  # one line
    root.mkdir(parents=True, exist_ok=True)
    (root / "source.json").write_text(json.dumps({"video": str(video.resolve()), "bytes": video.stat().st_size}))
    with progress() as p:  # retry_failed: a failure may have been an interruption or a since-fixed bug
        result = preprocess_dataset([video.resolve()], data, config, retry_failed=True, progress=p)
    if not result.clips:
        reason = next((s.get("reason") for s in result.sources if s.get("status") != "ok"), "no usable clip")
        raise RealtalkError(f"cannot learn this person: {reason}", video)

    if options.renderer in BANKED and not (model / "bank" / "config.json").is_file():
        from realtalk_cli.bank.store import build_bank

        with progress() as p:
            build_bank(data, model / "bank", video=video, progress=p)
    for stage, share in SHARE[options.renderer].items():
        run = model / stage
        if _trained(run, minutes * share):
            continue
        task = ({"bank": str(model / "bank"), "video": str(video.resolve())} if stage == "refine"  # refine: bank/refine.py
                else {"split_frames": 0.0})
        overrides = {"trainer": {"steps": options.steps or 10**9, "max_minutes": minutes * share, "val_every": 0}, "task": task}
        init = Path(options.init) / stage if options.init is not None else None
        config, announced, init_model = configs[stage], False, {}
        if init is not None and stage == "a2e":  # fine-tuning keeps the generic model's architecture
            init_model = _init_config(Path(options.init)).get("model", {})

        def fit(config, init):
            train(stage, data, run, config=config, overrides={**overrides, **({"model": init_model} if init else {})},
                  device=str(device), resume=(run / "config.json").is_file(), init=init)

        if _closed_form(config) and (run / "config.json").is_file() and not _closed_form(run / "config.json"):
            config, init = config_path(FALLBACK[stage]), None  # an interrupted fallback (below) resumes as one
        if _closed_form(config):
            console.print(f"adapt: fitting {stage} (linear, closed form{', toward --init' if init else ''})")
            fit(config, init)
            if not _learned(run) and not _uses_prior(config):  # the fallback starts afresh: a linear generic model cannot start a transformer
                console.print(f"adapt: in cross-validation the linear {stage} predicts this video's mouth no better than a "
                              f"still one (too little speech?); training a transformer for up to {minutes * share:.1f} min "
                              "instead", soft_wrap=True, highlight=False)
                shutil.rmtree(run)
                config, announced, init = config_path(FALLBACK[stage]), True, None
        if not _closed_form(config):
            if not announced:
                console.print(f"adapt: training {stage} for up to {minutes * share:.1f} min")
            fit(config, init)
        (run / "adapt_done.json").write_text(json.dumps({"minutes": minutes * share}))
    with atomic_file(model / "avatar.json") as tmp:  # what `realtalk stream --avatar` plays
        tmp.write_text(json.dumps({"video": str(video.resolve())}))
    with atomic_file(model / "renderer.json") as tmp:
        tmp.write_text(json.dumps({"renderer": options.renderer}))
    return model


def _fine_tune_config(kind: str | None, given: Path | None, config: Path | None) -> Path | None:
    """The training config for a generic a2e of this kind (unless one was given): a linear generic model
    is the prior of a linear fit (train/a2e_task.py: fit_linear), a transformer is fine-tuned as the
    device's transformer would be trained."""
    if given is None and kind == "linear":
        return config_path("adapt_cpu_linear")
    if given is None and _closed_form(config):
        return config_path(FALLBACK["a2e"])
    return config


def _init_config(init: Path) -> dict:
    """The generic a2e checkpoint's config: its model settings and the crop its data was made with."""

    return read_json(_init_checkpoint(init) / "config.json", "--init model config")


def _learned(run: Path, min_gain: float = 0.02) -> bool:
    """The linear fit explains at least `min_gain` of a still mouth's cross-validated error (German_20s:
    0.07, cnn2: 0.21; KatieHill's 6 s: -0.01, nothing)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return any(r.get("cv_gain", -np.inf) >= min_gain for r in records)


def _uses_prior(config: Path) -> bool:
    """The a2e config starts from the lip prior (task.prior)."""
    return bool(read_json(config, "config file", UsageError).get("task", {}).get("prior"))


def _closed_form(config: Path | None) -> bool:
    """The stage's model is solved in one step (the linear a2e), so no time budget applies to it."""

    return config is not None and read_json(config, "config file", UsageError).get("model", {}).get("kind") == "linear"


def _init_checkpoint(init: Path) -> Path:
    """A generic model directory's a2e checkpoint (it carries the face model the video is tracked with)."""
    from realtalk_cli.checkpoint import resolve_run

    if not (init / "a2e").is_dir():
        raise RealtalkError("--init is not a model directory (no a2e/ inside)", init)
    return resolve_run(init / "a2e")
