"""Run configurations shipped with the package: JSON files merged over a stage's paper defaults
(`realtalk train --config`, `dub --adapt`). They are package data, so a plain `pip install` has them."""

from __future__ import annotations

import os
from pathlib import Path

from realtalk_cli.errors import UsageError

DIR = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in DIR.glob("*.json"))


def config_path(name: str | os.PathLike) -> Path:
    """An existing file as given, else the shipped config of that name (`a2e_tiny` or `a2e_tiny.json`)."""
    path = Path(name)
    if path.is_file():
        return path
    if len(path.parts) == 1:
        shipped = DIR / f"{path.stem if path.suffix == '.json' else path.name}.json"
        if shipped.is_file():
            return shipped
    raise UsageError(f"config not found: not a file, nor a shipped config ({', '.join(names())})", path)
