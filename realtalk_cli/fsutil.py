"""Atomic outputs: write beside the target, rename at the end, never leave a partial file."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import shutil
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
    try:  # the temp file the output will be written to: a read-only folder fails now, not after the work
        _new_temp(out.parent, out.stem, out.suffix, _create_file).unlink()
    except OSError as e:
        raise RealtalkError(f"cannot write in {out.parent} ({e.strerror})", out) from None
    return out


def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike):
    """Yield a temp path beside `target` (same suffix, so tools infer the format); rename on success."""
    target = Path(target)
    tmp = _new_temp(target.parent, target.stem, target.suffix, _create_file)
    try:
        yield tmp
        _umask_modes(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike):
    """Yield a temp directory beside `target`; it replaces `target` only when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp(target.parent, target.name, "", lambda p: p.mkdir(0o777))
    try:
        yield tmp
        _umask_modes(tmp)
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


def _umask_modes(path: Path) -> None:
    """Give `path` (and what is inside) the modes the user's umask asks for: some writers, such as
    safetensors, replace our temp file with one of mode 0600."""
    mask = _umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    try:  # Linux shows it; os.umask can only read it by changing it, racing other threads
        status = Path("/proc/self/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration):
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


# Temp names carry the writer's process id: `.{stem}.{pid}-{8 hex}.tmp{suffix}`. A run killed with
# SIGKILL cannot clean up, so the next run writing the same target removes temps whose process is gone.
def _temp_pattern(stem: str, suffix: str) -> re.Pattern:
    return re.compile(re.escape(f".{stem}.") + r"(\d+)-[0-9a-f]{8}\.tmp" + re.escape(suffix))


def _new_temp(parent: Path, stem: str, suffix: str, create) -> Path:
    """Create (with `create(path)`) a fresh temp entry in `parent`. Created by hand, not by tempfile's
    mkstemp/mkdtemp, so the user's umask applies (those force modes 0600/0700 on what becomes the output)."""
    remove_stale_temps(parent, stem, suffix)
    while True:
        tmp = parent / f".{stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"
        try:
            create(tmp)
            return tmp
        except FileExistsError:  # a one in 4 billion name clash: draw again
            continue


def remove_stale_temps(parent: Path, stem: str, suffix: str) -> list[Path]:
    """Remove our temps for this target left by processes that no longer run; returns them."""
    pattern, stale = _temp_pattern(stem, suffix), []
    for entry in parent.glob(glob.escape(f".{stem}.") + "*"):
        m = pattern.fullmatch(entry.name)
        if m and not _alive(int(m.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            stale.append(entry)
    return stale


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        pass
    return True


def read_json(path: str | os.PathLike, what: str = "file", error: type[RealtalkError] = RealtalkError,
              expect: type | None = None):
    """Parse a JSON file; a missing or malformed file (or, with `expect`, another top-level type) is a
    one-line error naming it."""
    import json

    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} not found", path) from None
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON ({e.msg}, line {e.lineno})", path) from None
    except UnicodeDecodeError:
        raise error(f"{what} is not text (binary or damaged file)", path) from None
    if expect is not None and not isinstance(value, expect):
        kinds = {dict: "an object {...}", list: "a list [...]"}
        raise error(f"{what} holds {type(value).__name__} JSON, expected {kinds.get(expect, expect.__name__)}", path)
    return value


def require_file(path: str | os.PathLike, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise RealtalkError(f"{what} not found", path)
    if path.is_dir():
        raise RealtalkError(f"expected a {what}, got a directory", path)
    if path.stat().st_size == 0:
        raise RealtalkError(f"{what} is empty (0 bytes)", path)
    return path


def content_key(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hash of the file's bytes: a renamed or copied video still finds its cache; an edited one does not."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:20]


def cache_root() -> Path:
    """Where realtalk keeps what it learned or computed for reuse: $REALTALK_CACHE or ~/.cache/realtalk."""
    return Path(os.environ.get("REALTALK_CACHE") or Path.home() / ".cache" / "realtalk")
