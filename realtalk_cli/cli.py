"""The `realtalk` command line: a thin layer over the library API.

Each command parses options, then calls one library function. Errors a user can act on are
RealtalkError and print as one line; a traceback is shown only with --debug.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from realtalk_cli import __version__
from realtalk_cli.errors import NotImplementedYet, RealtalkError
from realtalk_cli.progress import err_console, set_quiet


@dataclass
class GlobalOptions:
    device: str = "auto"
    quiet: bool = False
    debug: bool = False


OPTIONS = GlobalOptions()

app = typer.Typer(
    name="realtalk",
    help=(
        "Visual dubbing: re-sync the lips, jaw and lower face of a talking-face video to new speech.\n\n"
        "Typical use:  realtalk dub video.mp4 speech.wav -o out.mp4 --adapt"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool):
    if value:
        typer.echo(f"realtalk {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    device: str = typer.Option("auto", "--device", help="Compute device: auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summaries; errors only."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    OPTIONS.device, OPTIONS.quiet, OPTIONS.debug = device, quiet, debug
    set_quiet(quiet)
    from realtalk_cli.device import resolve_device

    resolve_device(device)  # fail early on a bad --device, before any long work


@app.command(epilog="Example:  realtalk preprocess clips/ -o data/ --workers 2")
def preprocess(
    inputs: list[Path] = typer.Argument(..., help="Video files or directories of videos."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to create or resume."),
):
    """Track faces, fit 3DMM coefficients and compute audio features: build a training dataset."""
    raise NotImplementedYet("realtalk preprocess")


@app.command(epilog="Example:  realtalk train --stage a2e --data data/ --out models/a2e-run1")
def train(
    stage: str = typer.Option(..., "--stage", help="a2e (audio-to-expression) or e2f (expression-to-face)."),
    data: Path = typer.Option(..., "--data", help="Dataset directory written by `realtalk preprocess`."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: config, metrics, checkpoints/step_N."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON config overriding the paper defaults (see models/configs/)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimizer steps (a resumed run may extend it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batch size per process."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its newest checkpoint."),
    val_every: Optional[int] = typer.Option(None, "--val-every", help="Validate every N steps (0: only at the end)."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", help="Write a checkpoint every N steps (0: only at the end)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (weights, batches, dropout)."),
    split_frames: Optional[float] = typer.Option(None, "--split-frames", help="Split inside every clip: this fraction of its first frames trains, the rest is held out (default: the dataset's clip split)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision on CUDA: auto, bf16, fp16 or off."),
):
    """Train the audio-to-expression transformer or the expression-to-face renderer (torchrun for multi-GPU)."""
    from realtalk_cli.train.run import train as run_train

    overrides = {
        "trainer": {"steps": steps, "val_every": val_every, "ckpt_every": ckpt_every, "seed": seed, "amp": amp},
        "task": {"batch_size": batch_size, "lr": lr, "split_frames": split_frames},
    }
    final = run_train(stage, data, out, config=config, overrides=overrides, resume=resume, device=OPTIONS.device)
    if not OPTIONS.quiet:
        typer.echo(f"checkpoint: {final}")


@app.command(epilog="Example:  realtalk dub video.mp4 speech.wav -o out.mp4 --adapt")
def dub(
    video: Path = typer.Argument(..., help="Source video of one person talking."),
    speech: Path = typer.Argument(..., help="New speech (wav, mp3, m4a, flac, or a video's audio)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output video (.mp4)."),
):
    """Dub a video: re-sync the lower face to new speech (the main job)."""
    raise NotImplementedYet("realtalk dub")


@app.command(epilog="Example:  realtalk bench --fps --json bench.json")
def bench(
    fps: bool = typer.Option(True, "--fps/--no-fps", help="Measure frames per second of every stage."),
):
    """Measure the speed of every stage on this device and backend."""
    raise NotImplementedYet("realtalk bench")


@app.command(epilog="Example:  realtalk export --checkpoint models/run1 -o models/run1-onnx")
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the ONNX files."),
):
    """Export the a2e and renderer networks to ONNX, checked against PyTorch."""
    raise NotImplementedYet("realtalk export")


@app.command(name="eval", epilog="Example:  realtalk eval dubbed.mp4 --source video.mp4 --json metrics.json")
def eval_(
    video: Path = typer.Argument(..., help="Dubbed video to evaluate."),
):
    """Quality metrics: PSNR/SSIM, lip and face landmark distance, jitter, mouth-audio agreement."""
    raise NotImplementedYet("realtalk eval")


def main(argv: Optional[list[str]] = None) -> None:
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        # standalone mode: typer/click print usage errors themselves and exit 2
        app(args=args, prog_name="realtalk", standalone_mode=True)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/red]")
        sys.exit(130)
    except RealtalkError as e:
        if debug or OPTIONS.debug:
            err_console.print_exception()
        err_console.print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if debug or OPTIONS.debug:
            raise
        err_console.print(f"[red]error:[/red] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                      markup=True, highlight=False, soft_wrap=True)
        sys.exit(1)
