"""`dub --adapt`: learn the person from the video itself with a tiny budget, cache, reuse."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediagen import make_face_video
from realtalk_cli.media import probe
from realtalk_cli.pipelines.adapt import content_key

CONFIGS = Path(__file__).resolve().parents[1] / "models" / "configs"


@pytest.mark.parametrize("renderer", ["bank", "fia"])
def test_adapt_end_to_end_and_cache_reuse(tmp_path, renderer):
    video = make_face_video(tmp_path / "me.mp4", seconds=2.0)
    speech = make_face_video(tmp_path / "other.mp4", seconds=1.2)  # any file with an audio track
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "realtalk_cli", "--quiet", "dub", video, speech, "--adapt", "--adapt-minutes", "0.1",
           "--cache-dir", cache, "--renderer", renderer]
    t0 = time.perf_counter()
    r = subprocess.run([*map(str, cmd), "-o", str(tmp_path / "a.mp4")], capture_output=True, text=True)
    first = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    info = probe(tmp_path / "a.mp4")
    assert (info.width, info.height) == (192, 160) and abs(info.duration - 1.2) <= 0.04 + 1e-3

    model = cache / "adapt" / content_key(video) / "model"
    trained = ("a2e",) if renderer == "bank" else ("a2e", "e2f")  # the bank renderer trains no network
    ckpts = {stage: sorted(p.name for p in (model / stage / "checkpoints").iterdir()) for stage in trained}
    assert all(ckpts.values())
    assert (model / "bank").is_dir() == (renderer == "bank")
    assert (model / "e2f").is_dir() == (renderer == "fia")
    assert json.loads((model / "renderer.json").read_text()) == {"renderer": renderer}
    t0 = time.perf_counter()
    r = subprocess.run([*map(str, cmd), "-o", str(tmp_path / "b.mp4")], capture_output=True, text=True)
    second = time.perf_counter() - t0
    assert r.returncode == 0, r.stderr
    # the second dub reuses the cache: no new checkpoints, and no training time
    assert {stage: sorted(p.name for p in (model / stage / "checkpoints").iterdir()) for stage in ckpts} == ckpts
    assert second < first - 5, (first, second)
