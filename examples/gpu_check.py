"""GPU check (issue 13): network speed of the paper and the CPU-adapt configurations on a lent GPU.

Run on the GPU machine from the repository root (it has torch, onnx and onnxruntime, no network):

    PYTHONPATH=$PWD python3 examples/gpu_check.py $OUT/gpu_check.json

Writes one JSON: for the paper configuration and for the CPU-adapt configurations (the a2e and the
128 px renderer that `dub --renderer fia` adapts on a CPU), ms per frame of the a2e and the renderer
with each backend (eager, torch.compile, fp16, bf16, onnx) at batch 1, 8 and 32. Within 8 minutes
(each measurement stops after --max-seconds).

What it leaves out, and why: an end-to-end dub and a stream on that machine need PyAV, MediaPipe and an
ffmpeg binary, which its image lacks and which must travel as wheels: measured 35.8 MB (av 18.1.0),
35.7 MB (mediapipe 0.10.14, cp312) and 68.0 MB (imageio-ffmpeg 0.8.1), over the 64 MiB a call may carry.
"""

import argparse
import dataclasses
import json
import time

import torch

from realtalk_cli.configs import config_path
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.nets.renderer import Renderer, RendererConfig
from realtalk_cli.pipelines.bench import bench_networks, environment, paper_networks

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", help="JSON file to write")
parser.add_argument("--max-seconds", type=float, default=15.0)
args = parser.parse_args()

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
coeff_dim = 80 + 64 + 6  # landmark face model at full size: n_id 80, n_exp 64, pose 6


def adapt_networks():
    a2e_cfg = json.loads(config_path("adapt_cpu_a2e").read_text())["model"]
    e2f_cfg = json.loads(config_path("adapt_cpu_e2f").read_text())["model"]
    a2e = A2ETransformer(dataclasses.replace(A2EConfig(audio_dim=80), **a2e_cfg))
    renderer = Renderer(dataclasses.replace(RendererConfig(coeff_dim=coeff_dim),
                                            **{k: tuple(v) if isinstance(v, list) else v for k, v in e2f_cfg.items()}))
    return a2e, renderer


result = {"environment": environment(device), "configs": {}}
start = time.perf_counter()
for name, make in (("paper", lambda: paper_networks(coeff_dim=coeff_dim)), ("adapt_cpu", adapt_networks)):
    a2e, renderer = make()
    rows = bench_networks(a2e, renderer, device, (1, 8, 32), None, repeats=5, max_seconds=args.max_seconds,
                          on_row=lambda r: print(f"{name} {r.stage} {r.backend} b{r.batch}: {r.ms_per_frame:.2f} ms/frame", flush=True))
    result["configs"][name] = [r.to_dict() for r in rows]
result["seconds"] = time.perf_counter() - start
with open(args.out, "w") as f:
    json.dump(result, f, indent=2)
print(f"wrote {args.out} in {result['seconds']:.0f} s")
