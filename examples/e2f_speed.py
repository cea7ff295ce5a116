"""Renderer speed and size: parameters, FLOPs per frame and ms/frame at batch 1 and 8.

    python examples/e2f_speed.py realtalk_cli/configs/e2f_paper.json --device cpu --batches 1 8
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from realtalk_cli.device import resolve_device
from realtalk_cli.nets.renderer import Renderer, RendererConfig, load_json_config

# the coefficient width of the paper's BFM (alpha 80, beta 64, rho 6); it only sizes the AdaIN MLPs
PAPER_COEFF_DIM = 80 + 64 + 6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a run config JSON from realtalk_cli/configs/")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--align", default=None, help="override the alignment module (attention | flow | deform)")
    ap.add_argument("--fia-blocks", type=int, default=None, help="override the residual blocks per FIA block")
    args = ap.parse_args()

    rcfg = {**load_json_config(args.config)["model"], "coeff_dim": PAPER_COEFF_DIM}
    if args.align:
        rcfg["align"] = args.align
    if args.fia_blocks:
        rcfg["fia_blocks"] = args.fia_blocks
    cfg = RendererConfig.from_dict(rcfg)
    device = resolve_device(args.device)
    net = Renderer(cfg).to(device).eval()
    S = cfg.image_size
    report = {"config": args.config, "align": cfg.align, "fia_blocks": cfg.fia_blocks, "device": str(device),
              "threads": torch.get_num_threads(), "params_M": sum(p.numel() for p in net.parameters()) / 1e6}

    def inputs(b):
        return (torch.rand(b, 3, S, S, device=device), torch.rand(b, 3, S, S, device=device),
                torch.randn(b, cfg.coeff_dim, device=device), torch.ones(b, 1, S, S, device=device))

    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            net(*inputs(1))
        report["gflops_per_frame"] = fc.get_total_flops() / 1e9  # multiply-adds count as 2
        for b in args.batches:
            x = inputs(b)
            net(*x)  # warm-up (allocator, kernels)
            times = []
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                net(*x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            report[f"ms_per_frame_b{b}"] = 1000 * sorted(times)[len(times) // 2] / b  # median
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
