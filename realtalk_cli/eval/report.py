"""Presenting an evaluation: a rich table, JSON, and a PNG of curves (alone or inside a small HTML page)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from realtalk_cli.fsutil import atomic_file


def _fmt(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    digits = 4 if abs(value) < 10 else 2
    return f"{value:.{digits}f}" + (f" {unit}" if unit else "")


def table(result, title: str = "realtalk eval"):
    """Metrics grouped by protocol; arrows say which direction is better."""
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("metric", no_wrap=True)
    t.add_column("value", justify="right", no_wrap=True)
    t.add_column("note", overflow="fold")
    protocol = None
    for m in result.metrics:
        if m.protocol != protocol:
            if protocol is not None:
                t.add_section()
            protocol = m.protocol
            t.add_row(f"[bold]{protocol}[/bold]", "", "")
        arrow = {"higher": " (↑)", "lower": " (↓)", "one": " (→1)"}.get(m.better, "")
        t.add_row(f"  {m.label}{arrow}", _fmt(m.value, m.unit), m.note)
    return t


def write_json(result, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps(result.to_dict(), indent=1))


# (per-frame key, label, axis) groups drawn one panel each, when present
PANELS = [
    ([("psnr", "face crop"), ("psnr_mask", "mask region")], "PSNR (dB)"),
    ([("ssim", "face crop"), ("ssim_mask", "mask region")], "SSIM"),
    ([("m_lmd", "M-LMD (lips)"), ("f_lmd", "F-LMD (face)")], "landmark distance (px)"),
    ([("mouth_ours", "dubbed (tracked)"), ("mouth_source", "source (tracked)"), ("mouth_curve", "given curve")], "mouth opening (px)"),
    ([("sharp_ours", "dubbed"), ("sharp_source", "source")], "lip-box sharpness"),
    ([("teeth_ours", "dubbed"), ("teeth_source", "source")], "teeth share of inner lips"),
    ([("flicker_ours", "dubbed"), ("flicker_source", "source")], "flicker in mask"),
]


def figure_png(result) -> bytes:
    """PNG bytes: one panel per metric group over frame index; silent stretches shaded on the mouth panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pf = result.per_frame
    panels = [(lines, axis) for lines, axis in PANELS if any(k in pf for k, _ in lines)]
    start = result.inputs["frames"][0]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.3 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (lines, axis) in zip(axes[:, 0], panels):
        for style, (key, label) in zip(("-", "--", ":"), lines):  # dashes keep coinciding curves visible
            if key not in pf:
                continue
            y = np.asarray(pf[key], np.float64)
            x = start + np.arange(len(y))
            if key == "mouth_curve":  # a curve in another unit: scale it onto the tracked one for the eye
                ref = np.asarray(pf["mouth_ours"], np.float64)
                ok = np.isfinite(y) & np.isfinite(ref)
                if ok.sum() > 2 and np.nanstd(y[ok]) > 0:
                    y = (y - np.nanmean(y[ok])) / np.nanstd(y[ok]) * np.nanstd(ref[ok]) + np.nanmean(ref[ok])
                    label += " (rescaled)"
            ax.plot(x, y, style, lw=1.3, label=label)
        silent = np.asarray(pf.get("silent", []), np.float64) > 0
        if axis.startswith("mouth") and silent.any():
            x = start + np.arange(len(silent))
            ax.fill_between(x, 0, 1, where=silent, transform=ax.get_xaxis_transform(), color="0.85", label="silent speech")
        ax.set_ylabel(axis)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8, ncol=3, framealpha=0.7)
    axes[-1, 0].set_xlabel(f"frame ({result.inputs['fps']:g} fps)")
    fig.suptitle(Path(result.inputs["dubbed"]).name + (f"  vs  {Path(result.inputs['source']).name}" if result.inputs["source"] else ""))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_report(result, path: str | os.PathLike) -> None:
    """`.png`: the figure; `.html`: a self-contained page with the metric table and the figure."""
    path = Path(path)
    png = figure_png(result)
    with atomic_file(path) as tmp:
        if path.suffix.lower() == ".png":
            Path(tmp).write_bytes(png)
            return
        rows = "".join(
            f"<tr><td>{html.escape(m.protocol)}</td><td>{html.escape(m.label)}</td><td class=n>{html.escape(_fmt(m.value, m.unit))}</td>"
            f"<td>{ {'higher': '&uarr;', 'lower': '&darr;', 'one': '&rarr;1'}.get(m.better, '')}</td><td>{html.escape(m.note)}</td></tr>"
            for m in result.metrics)
        inputs = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v if isinstance(v, str) else json.dumps(v))}</li>"
                         for k, v in result.inputs.items())
        Path(tmp).write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>realtalk eval: {html.escape(Path(result.inputs['dubbed']).name)}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:4px 10px;text-align:left}}td.n{{text-align:right;font-family:monospace}}</style></head>
<body><h1>realtalk eval</h1><ul>{inputs}</ul>
<table><tr><th>protocol</th><th>metric</th><th>value</th><th>better</th><th>note</th></tr>{rows}</table>
<p><img alt="per-frame metrics" src="data:image/png;base64,{base64.b64encode(png).decode()}" style="max-width:100%"></p>
</body></html>
""")
