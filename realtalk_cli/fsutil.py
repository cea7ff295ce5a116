"""Atomic outputs: write beside the target, rename at the end, never leave a partial file."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from realtalk_cli.errors import RealtalkError, UsageError


def check_output_path(out: str | os.PathLike, inputs=(), overwrite: bool = True) -> Path:
    """Validate an output path before any work starts, so a long job never fails at the end."""
    out = Path(out)
    if not out.parent.exists():
        raise UsageError(f"output directory {out.parent} does not exist", out)
    if out.is_dir():
        raise UsageError("output path is a directory", out)
    for inp in inputs:
        if inp is not None and Path(inp).exists() and out.exists() and os.path.samefile(inp, out):
            raise UsageError("output would overwrite an input file", out)
        if inp is not None and Path(inp).resolve() == out.resolve():
            raise UsageError("output would overwrite an input file", out)
    if out.exists() and not overwrite:
        raise UsageError("output exists (pass --overwrite to replace it)", out)
    return out


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike):
    """Yield a temp path beside `target` (same suffix, so tools infer the format); rename on success."""
    target = Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory beside `target`; it replaces `target` only when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike, what: str = "file", error: type[RealtalkError] = RealtalkError):
    """Parse a JSON file; a missing or malformed file is a one-line error naming it."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} not found", path) from None
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON ({e.msg}, line {e.lineno})", path) from None


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise RealtalkError(f"{what} not found", path)
    if path.is_dir():
        raise RealtalkError(f"expected a {what}, got a directory", path)
    if path.stat().st_size == 0:
        raise RealtalkError(f"{what} is empty (0 bytes)", path)
    return path
