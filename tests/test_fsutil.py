"""Outputs: the user's umask applies, and temps left by a killed run are removed by the next writer."""

import os
import signal
import subprocess
import sys

import pytest
import torch

from realtalk_cli.checkpoint import save_checkpoint
from realtalk_cli.fsutil import atomic_dir, atomic_file


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_outputs_follow_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    with atomic_file(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    with atomic_dir(tmp_path / "clip") as tmp:
        (tmp / "x.txt").write_text("x")
    save_checkpoint(tmp_path / "ckpt", {"stage": "a2e"}, {"a2e": {"w": torch.zeros(2)}})
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "out.json") == file_mode
    assert mode(tmp_path / "clip") == dir_mode and mode(tmp_path / "ckpt") == dir_mode
    assert mode(tmp_path / "ckpt" / "a2e.safetensors") == file_mode


def test_kill_9_leftovers_removed_by_next_writer(tmp_path):
    target = tmp_path / "out.mp4"
    # a writer killed with SIGKILL mid-write (nothing of ours can run to clean up)
    code = ("import os, signal, sys\nfrom realtalk_cli.fsutil import atomic_file, atomic_dir\n"
            "f, d = atomic_file(sys.argv[1]), atomic_dir(sys.argv[1][:-4])  # out.mp4 and out/\n"
            "f.__enter__().write_bytes(b'partial'); d.__enter__()\nos.kill(os.getpid(), signal.SIGKILL)")
    r = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True)
    assert r.returncode == -signal.SIGKILL
    stale = sorted(p.name for p in tmp_path.iterdir())
    assert len(stale) == 2 and all(p.startswith(".out.") for p in stale)  # a file and a directory
    # not ours to remove: a live process's temp, and names that only look alike
    live = tmp_path / f".out.{os.getppid()}-0123abcd.tmp.mp4"
    others = [tmp_path / ".out.mp4.tmp", tmp_path / ".out.notapid-0123abcd.tmp.mp4", tmp_path / ".other.1-0123abcd.tmp.mp4"]
    for p in (live, *others):
        p.write_text("keep")
    with atomic_file(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert not any((tmp_path / name).exists() for name in stale if name.endswith(".mp4"))
    assert live.exists() and all(p.exists() for p in others)
    with atomic_dir(tmp_path / "out") as tmp:  # the directory temp goes with the next directory write
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")) == sorted(
        [live.name, ".out.mp4.tmp", ".out.notapid-0123abcd.tmp.mp4"])
