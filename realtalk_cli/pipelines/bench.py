"""`realtalk bench`: how fast is every stage, on this device, with each backend.

Timings are medians over repeated runs after warm-up, with min and max as the spread; CUDA work is
synchronised before the clock is read. Without a checkpoint the networks are the paper
configuration with random weights: speed does not depend on the weights.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from realtalk_cli.device import device_name
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.nets.renderer import Renderer, RendererConfig

# RealTalk paper, Table 7 and section 4.4: one V100, batch 1
PAPER_V100 = {"a2e_ms": 2.3, "e2f_ms": 30.8, "total_ms": 33.1, "fps": 30.0}
CUDA_BACKENDS = ("eager", "compile", "fp16", "bf16", "onnx")
CPU_BACKENDS = ("eager", "onnx")  # torch.compile works on CPU too (`--backends eager,compile`) but compiles for minutes


@dataclass
class Row:
    stage: str            # "a2e" | "renderer" | a dub stage
    backend: str
    batch: int
    ms_median: float      # per call
    ms_min: float
    ms_max: float
    frames_per_call: float

    @property
    def ms_per_frame(self) -> float:
        return self.ms_median / self.frames_per_call

    @property
    def fps(self) -> float:
        return 1000.0 / self.ms_per_frame if self.ms_per_frame > 0 else float("inf")

    def to_dict(self) -> dict:
        return {**asdict(self), "ms_per_frame": self.ms_per_frame, "fps": self.fps}


def measure(fn, device: torch.device, warmup: int = 2, repeats: int = 5, max_seconds: float = 60.0) -> list[float]:
    """Milliseconds per call; stops early (after at least two timed calls) past `max_seconds`."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times, start = [], time.perf_counter()
    while len(times) < repeats and (len(times) < 2 or time.perf_counter() - start < max_seconds):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def _row(stage, backend, batch, times, frames_per_call) -> Row:
    return Row(stage, backend, batch, statistics.median(times), min(times), max(times), frames_per_call)


def unavailable(backend: str, device: torch.device) -> str | None:
    """Why `backend` cannot run here (None: it can)."""
    if backend in ("fp16", "bf16") and device.type != "cuda":
        return "half precision is timed on CUDA only"
    if backend == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install 'realtalk[onnx]', or 'realtalk[gpu]')"
    return None


def _runner(model: torch.nn.Module, example_fn, backend: str, device: torch.device, tmpdir: str, name: str):
    """A callable taking the example tensors for `backend`, or None when the backend is unavailable here."""
    if unavailable(backend, device):
        return None
    model = model.to(device).eval()
    if backend == "eager":
        return lambda *x: model(*x)
    if backend == "compile":
        compiled = torch.compile(model)
        return lambda *x: compiled(*x)
    if backend in ("fp16", "bf16"):
        dtype = torch.float16 if backend == "fp16" else torch.bfloat16

        def run(*x):
            with torch.autocast("cuda", dtype=dtype):
                return model(*x)
        return run
    if backend == "onnx":
        from realtalk_cli.inference.onnx import OnnxModel
        from realtalk_cli.pipelines.export import export_module

        names = _input_names(name)
        path = export_module(model.cpu(), example_fn(2), names, "out", f"{tmpdir}/{name}.onnx")
        model.to(device)
        runner = OnnxModel(path, device)
        return lambda *x: runner(*x)
    raise ValueError(f"unknown backend {backend!r}")


def _input_names(name: str) -> tuple[str, ...]:
    from realtalk_cli.pipelines.export import A2E_INPUTS, RENDERER_INPUTS

    return A2E_INPUTS if name == "a2e" else RENDERER_INPUTS


def bench_networks(a2e: A2ETransformer, renderer: Renderer, device: torch.device, batches=(1, 8, 32),
                   backends=None, repeats: int = 5, max_seconds: float = 60.0, on_row=None) -> list[Row]:
    """a2e per window (batch 1) and renderer per frame at each batch size, for each backend."""
    import tempfile

    from realtalk_cli.pipelines.export import a2e_example, renderer_example

    backends = backends or (CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode(False), torch.no_grad():
        for backend in backends:
            # a2e: one window of T frames; in dubbing windows overlap by half, so each yields T/2 new frames
            run = _runner(a2e, lambda b: a2e_example(a2e.cfg, b), backend, device, tmp, "a2e")
            if run is not None:
                x = [t.to(device) for t in a2e_example(a2e.cfg, 1)]
                rows.append(_row("a2e", backend, 1, measure(lambda: run(*x), device, repeats=repeats, max_seconds=max_seconds),
                                 a2e.cfg.n_frames / 2))
                on_row and on_row(rows[-1])
            run = _runner(renderer, lambda b: renderer_example(renderer.cfg, b), backend, device, tmp, "renderer")
            if run is None:
                continue
            for b in batches:
                x = [t.to(device) for t in renderer_example(renderer.cfg, b)]
                rows.append(_row("renderer", backend, b, measure(lambda: run(*x), device, repeats=repeats,
                                                                 max_seconds=max_seconds), b))
                on_row and on_row(rows[-1])
    return rows


def paper_networks(audio_dim: int = 80, coeff_dim: int = 80 + 64 + 6) -> tuple[A2ETransformer, Renderer]:
    """The paper configuration with random weights (mel features, landmark face model dimensions)."""
    a2e = A2ETransformer(A2EConfig(audio_dim=audio_dim))
    renderer = Renderer(RendererConfig(coeff_dim=coeff_dim))
    return a2e, renderer


def environment(device: torch.device) -> dict:
    import cv2

    env = {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
           "numpy": np.__version__, "opencv": cv2.__version__, "platform": platform.platform()}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime"] = None
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
    return env


def run_bench(device: torch.device, a2e: A2ETransformer | None = None, renderer: Renderer | None = None,
              batches=(1, 8, 32), backends=None, repeats: int = 5, max_seconds: float = 60.0,
              e2e_seconds: float = 0.0, on_row=None, e2e=(("fia", (1280, 720)),), whisper_seconds: float = 0.0) -> dict:
    """Time the networks (paper config unless given), if `e2e_seconds` > 0 whole dubs with each
    (renderer, frame size) in `e2e`, and if `whisper_seconds` > 0 the Whisper front end."""
    if a2e is None or renderer is None:  # a frame-bank model has no renderer network: time the paper's
        paper_a2e, paper_renderer = paper_networks()
        a2e, renderer = a2e or paper_a2e, renderer or paper_renderer
    backends = backends or (CUDA_BACKENDS if device.type == "cuda" else CPU_BACKENDS)
    skipped = {b: why for b in backends if (why := unavailable(b, device))}
    rows = bench_networks(a2e, renderer, device, batches, [b for b in backends if b not in skipped], repeats,
                          max_seconds, on_row)
    result = {"environment": environment(device), "paper_v100": PAPER_V100, "skipped": skipped,
              "a2e_params_m": sum(p.numel() for p in a2e.parameters()) / 1e6,
              "renderer_params_m": sum(p.numel() for p in renderer.parameters()) / 1e6,
              "rows": [r.to_dict() for r in rows]}
    if e2e_seconds > 0:
        result["dubs"] = [bench_dub(device, e2e_seconds, size, a2e_cfg=a2e.cfg, renderer_cfg=renderer.cfg, renderer=kind)
                          for kind, size in e2e]
    if whisper_seconds > 0:
        result["whisper"] = bench_whisper(device, whisper_seconds, repeats, max_seconds)
    return result


def bench_whisper(device: torch.device, seconds: float = 60.0, repeats: int = 5, max_seconds: float = 60.0) -> dict:
    """The Whisper front end (packaged whisper-base, its default compute type here) on `seconds` of
    speech-like noise: milliseconds per second of speech, log-mel and encoder, no disk cache."""
    from realtalk_cli.audio.whisper import WhisperEncoder, whisper_unavailable, window_plan

    if why := whisper_unavailable():
        return {"skipped": why}
    encoder = WhisperEncoder(None, device)
    rng = np.random.default_rng(0)
    n = int(seconds * 50)
    # noise under a 4 Hz syllable envelope: the encoder's cost does not depend on what is said
    t = np.arange(n * 320) / 16000
    wav = (0.1 * rng.standard_normal(len(t)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float32)
    times = measure(lambda: encoder.states(wav, n), device, warmup=1, repeats=repeats, max_seconds=max_seconds)
    ms = statistics.median(times)
    return {"seconds": seconds, "windows": len(window_plan(n + 1)), "compute_type": encoder.compute_type,
            "threads": encoder.threads, "d_model": encoder.dim, "ms_median": ms, "ms_min": min(times),
            "ms_max": max(times), "ms_per_second": ms / seconds}


def bench_dub(device: torch.device, seconds: float = 4.0, size: tuple[int, int] = (1280, 720),
              a2e_cfg: A2EConfig | None = None, renderer_cfg: RendererConfig | None = None, batch_size: int = 8,
              renderer: str = "fia") -> dict:
    """Dub a generated face clip end to end with random-weight networks; seconds per stage.

    The face model is learned from the clip itself (the landmark model needs no weights); the
    networks take the given configurations with input sizes set to that face model. The bank
    renderer's frame bank is built from the same clip (preprocessed first, not timed).
    """
    import dataclasses
    import tempfile
    from pathlib import Path

    from realtalk_cli.media.synthetic import make_face_video
    from realtalk_cli.pipelines.dub import DubOptions, Dubber
    from realtalk_cli.pipelines.preprocess import PreprocessConfig, preprocess_dataset

    a2e_cfg = a2e_cfg or A2EConfig(audio_dim=80)
    with tempfile.TemporaryDirectory() as tmp:
        clip = make_face_video(Path(tmp) / "clip.mp4", seconds, size)
        preprocess_dataset([clip], Path(tmp) / "data", PreprocessConfig(val_fraction=0.0))
        from realtalk_cli.data.dataset import Dataset

        face = Dataset.open(Path(tmp) / "data").face_model
        a2e = A2ETransformer(dataclasses.replace(a2e_cfg, n_id=face.n_id, n_exp=face.n_exp))
        if renderer in ("bank", "bank+fia"):
            from realtalk_cli.bank.compose import BankRenderer
            from realtalk_cli.bank.refine import BankRefiner
            from realtalk_cli.bank.store import FrameBank, build_bank
            from realtalk_cli.inference.render_stage import BankStage
            from realtalk_cli.nets.refiner import Refiner, RefinerConfig

            refiner = BankRefiner(Refiner(RefinerConfig()), face.crop_size, device) if renderer == "bank+fia" else None
            stage = BankStage(BankRenderer(FrameBank(build_bank(Path(tmp) / "data", Path(tmp) / "bank"))), refiner)
        else:
            from realtalk_cli.nets.mask import MaskConfig
            from realtalk_cli.inference.e2f import E2FModel
            from realtalk_cli.inference.render_stage import FIAStage

            net = Renderer(dataclasses.replace(renderer_cfg or RendererConfig(), coeff_dim=face.n_id + face.n_exp + face.n_pose))
            stage = FIAStage(E2FModel(net.to(device).eval(), face.to(device), MaskConfig()), face.crop_size, device)
        dubber = Dubber(a2e.to(device).eval(), stage, {"audio": {"kind": "mel"}}, device)
        result = dubber.dub(clip, clip, Path(tmp) / "out.mp4", DubOptions(batch_size=batch_size))
    out = result.to_dict()
    out.pop("output")
    out["renderer"] = renderer
    out["video_fps"] = out.pop("fps")
    out["fps"] = out.pop("frames_per_second")
    return out


def print_report(result: dict, console) -> None:
    from rich.table import Table

    paper = result["paper_v100"]
    env = result["environment"]
    t = Table(title=f"realtalk bench on {env['device']} (torch {env['torch']})")
    for col in ("stage", "backend", "batch", "ms/call", "min-max", "ms/frame", "FPS", "V100 paper ms/frame"):
        t.add_column(col, justify="left" if col in ("stage", "backend") else "right")
    for r in result["rows"]:
        ref = paper["a2e_ms"] if r["stage"] == "a2e" else paper["e2f_ms"] if r["stage"] == "renderer" else None
        t.add_row(r["stage"], r["backend"], str(r["batch"]), f"{r['ms_median']:.1f}", f"{r['ms_min']:.1f}-{r['ms_max']:.1f}",
                  f"{r['ms_per_frame']:.2f}", f"{r['fps']:.1f}", "" if ref is None else f"{ref}")
    console.print(t)
    console.print(f"parameters: a2e {result['a2e_params_m']:.2f} M, renderer {result['renderer_params_m']:.2f} M "
                  f"(paper renderer 69.24 M); paper total {paper['total_ms']} ms/frame = {paper['fps']:.0f} FPS on a V100")
    for backend, why in result.get("skipped", {}).items():
        console.print(f"skipped {backend}: {why}", markup=False)
    for d in result.get("dubs", []):
        t = Table(title=f"end-to-end dub, {d['renderer']} renderer: {d['frames']} frames {d['width']}x{d['height']}, "
                        f"{d['fps']:.1f} frames/s overall")
        for col in ("stage", "seconds", "ms/frame", "frames/s"):
            t.add_column(col, justify="left" if col == "stage" else "right")
        for stage, sec in d["stages"].items():
            t.add_row(stage, f"{sec:.2f}", f"{1000 * sec / d['frames']:.2f}", f"{d['frames'] / sec:.1f}" if sec > 0 else "-")
        console.print(t)
    w = result.get("whisper")
    if w and "skipped" in w:
        console.print(f"skipped whisper front end: {w['skipped']}", markup=False)
    elif w:
        console.print(f"whisper front end (whisper-base, {w['compute_type']}, {w['threads']} threads): "
                      f"{w['ms_per_second']:.1f} ms per second of speech ({w['seconds']:g} s in {w['windows']} "
                      f"windows: median {w['ms_median'] / 1000:.2f} s, {w['ms_min'] / 1000:.2f}-{w['ms_max'] / 1000:.2f})")
