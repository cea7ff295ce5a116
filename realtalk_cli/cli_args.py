"""Command-line values parsed into what the library takes: one place, one error style (a usage error
naming the option). The pipelines take plain Python values and parse nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from realtalk_cli.errors import RealtalkError, UsageError


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' -> (i, n); None -> (0, 1)."""
    if not text:
        return 0, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not int(m[1]) < int(m[2]):
        raise UsageError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(m[1]), int(m[2])


def parse_bbox(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise UsageError(f"--bbox must be x0,y0,x1,y1 in source pixels, got {text!r}")
    return box


def parse_val_list(text: str | None) -> list[str]:
    """A file with one source name per line, or a comma-separated list of names (file stems)."""
    if not text:
        return []
    path = Path(text)
    items = path.read_text().split() if path.is_file() else text.split(",")
    return [Path(i.strip()).stem for i in items if i.strip()]


def parse_frames(text: str | None) -> tuple[int, int | None] | None:
    """'a:b', 'a:' or ':b' -> (a, b) frame range; None/'' -> None."""
    if not text:
        return None
    try:
        a, b = text.split(":")
        start, stop = int(a) if a.strip() else 0, int(b) if b.strip() else None
    except ValueError:
        raise UsageError(f"--frames {text!r}: expected START:STOP frame indices, e.g. 400:500 or 400:") from None
    if start < 0 or (stop is not None and stop <= start):
        raise UsageError(f"--frames {text!r}: need 0 <= START < STOP")
    return start, stop


def parse_e2e(spec: str) -> list[tuple[str, tuple[int, int]]]:
    """'fia@1280x720,bank@512x512' -> [(renderer, (width, height)), ...]."""
    out = []
    for item in filter(None, (x.strip() for x in spec.split(","))):
        try:
            renderer, size = item.split("@")
            w, h = (int(v) for v in size.lower().split("x"))
            assert renderer in ("fia", "bank", "bank+fia") and w >= 64 and h >= 64
        except (ValueError, AssertionError):
            raise UsageError(f"--e2e {item!r}: expected RENDERER@WIDTHxHEIGHT with RENDERER fia, bank or bank+fia, e.g. bank@512x512") from None
        out.append((renderer, (w, h)))
    return out


def read_jobs(path: str | os.PathLike) -> list[tuple[Path, Path, Path]]:
    """Batch mode: a CSV (header video,speech,output) or a JSON list of {"video", "speech", "output"}."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise RealtalkError("jobs file not found", path)
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            rows = list(csv.DictReader(path.read_text().splitlines()))
        jobs = [(Path(r["video"]), Path(r["speech"]), Path(r["output"])) for r in rows]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise RealtalkError(f"cannot read jobs: expected video, speech, output for every job ({e})", path) from None
    if not jobs:
        raise RealtalkError("no jobs listed", path)
    base = path.parent
    return [(base / v, base / s, base / o) for v, s, o in jobs]
