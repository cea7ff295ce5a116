"""examples/cross_voice.py --rotate: every frame predicted by a model that never heard it, on a
synthetic speaker whose mouth follows the loudness of his voice."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import make_tiny_dataset

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cross_voice.py"


def test_rotation_predicts_every_block_from_its_own_audio(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_clips=1, n_frames=240, n_exp=8)
    out = tmp_path / "rot.json"
    cmd = [sys.executable, str(EXAMPLE), "--rotate", "4", "--data", str(data.dir), "--out", str(tmp_path / "runs"),
           "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [f"block{k}" for k in range(4)]
    own = rows["own"]
    assert len(own["block_r"]) == 4 and min(own["block_r"]) > 0.5, own  # each block heard only by the others' model
    assert own["mouth_r"] > rows["mean expression"]["mouth_r"] + 0.5
    assert own["mouth_r_95"][0] < own["mouth_r"] < own["mouth_r_95"][1]
    # a rerun reuses the fitted blocks (resume) and gives the same numbers
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and json.loads(out.read_text())["rows"]["own"]["block_r"] == own["block_r"]
