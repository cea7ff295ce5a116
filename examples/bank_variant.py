"""One row per clip of the bank renderer's held-out test with some settings changed (issue 10, tuning).

    python examples/bank_variant.py runs/exp10 [compose.grid=32 compose.register=false retrieval.pose_scale=0.06 ...]
        [--drive tracked|audio] [--out DIR]

Uses what bank_experiment.sh left in the run directory (the held-out videos, the adapted bank models in
its cache, the frozen-mouth baseline's JSON): re-renders each held-out part with the given ComposeConfig /
RetrievalConfig fields, evaluates it against the source and prints mask PSNR (and its margin over the
baseline), mask SSIM, M-LMD, sharpness, teeth and flicker.
"""

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

from realtalk_cli.pipelines.dub import Dubber, DubOptions
from realtalk_cli.pipelines.evaluate import evaluate
from realtalk_cli.progress import set_quiet

CLIPS = ["mimictalk_German_20s", "dfrf_cnn2_25fps", "sadtalker_WDA_KatieHill_000"]


def bank_model(run: Path, clip: str) -> Path:
    """The adapted bank model of a clip's first 80% in the run's cache."""
    for d in sorted((run / "cache" / "adapt").iterdir()):
        if f"{clip}_train80" in (d / "source.json").read_text() and '"bank"' in (d / "model" / "renderer.json").read_text():
            return d / "model"
    raise SystemExit(f"no bank model of {clip} in {run}/cache/adapt (run examples/bank_experiment.sh first)")


def with_settings(config, settings: dict):
    """A copy of a config dataclass with the fields named in settings set (parsed as JSON, else a string)."""
    types = {f.name for f in fields(config)}
    unknown = set(settings) - types
    if unknown:
        raise SystemExit(f"unknown {type(config).__name__} field(s): {', '.join(sorted(unknown))}")
    return replace(config, **settings)


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", type=Path, help="run directory of examples/bank_experiment.sh")
parser.add_argument("settings", nargs="*", help="compose.FIELD=VALUE or retrieval.FIELD=VALUE")
parser.add_argument("--drive", default="tracked", choices=["tracked", "audio"])
parser.add_argument("--out", type=Path, help="where the dubs and JSON go (default: RUN/variant)")
args = parser.parse_args()
groups = {"compose": {}, "retrieval": {}}
for item in args.settings:
    key, _, value = item.partition("=")
    group, _, name = key.partition(".")
    if group not in groups or not name or not value:
        raise SystemExit(f"bad setting {item!r}: expected compose.FIELD=VALUE or retrieval.FIELD=VALUE")
    try:
        groups[group][name] = json.loads(value)
    except json.JSONDecodeError:
        groups[group][name] = value
set_quiet(True)
out = args.out or args.run / "variant"
out.mkdir(parents=True, exist_ok=True)
keys = ["psnr_mask", "ssim_mask", "m_lmd", "sharpness_ratio", "teeth_ratio", "flicker_ratio"]
print("| clip | PSNR mask (over baseline) | SSIM mask | M-LMD | sharpness | teeth | flicker |\n|---|---|---|---|---|---|---|")
for clip in CLIPS:
    held = args.run / f"{clip}_heldout20.mp4"
    dubber = Dubber.from_pretrained(bank_model(args.run, clip), renderer="bank")
    r = dubber.stage.renderer
    r.cfg, r.retrieval = with_settings(r.cfg, groups["compose"]), with_settings(r.retrieval, groups["retrieval"])
    dubbed = out / f"{clip}_{args.drive}.mp4"
    dubber.dub(held, held, dubbed, DubOptions(drive=args.drive, overwrite=True))
    result = evaluate(dubbed, held)
    (out / f"{clip}_{args.drive}.json").write_text(json.dumps(result.to_dict(), indent=1))
    v = {k: result.value(k) for k in keys}
    base = json.loads((args.run / f"{clip}_baseline.json").read_text())["metrics"]["psnr_mask"]["value"]
    cells = [f"{v['psnr_mask']:.2f} ({v['psnr_mask'] - base:+.2f})"] + ["-" if v[k] is None else f"{v[k]:.{3 if k == 'ssim_mask' else 2}f}" for k in keys[1:]]
    print(f"| {clip} | " + " | ".join(cells) + " |", flush=True)
