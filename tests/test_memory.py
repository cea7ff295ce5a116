"""Slow tier: `dub` peak memory does not grow with video length (issue 12).

Skipped in the default run; run it with `python -m pytest -m slow tests/test_memory.py` or with
REALTALK_SLOW=1. It takes several minutes on a CPU (two minutes of 720p video are generated and dubbed).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fuzzgen

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "memory_flat.py"


@pytest.mark.slow
def test_dub_memory_flat_in_video_length(request, tmp_path):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("REALTALK_SLOW"):
        pytest.skip("slow tier: run with -m slow or REALTALK_SLOW=1")
    pytest.importorskip("skimage")
    _, _, model = fuzzgen.tiny_model(tmp_path)
    out = tmp_path / "memory"
    # 20 s of 720p dubbed with 20 s of speech; 120 s with 20 s and with 120 s of speech
    subprocess.run([sys.executable, str(EXAMPLE), str(out), str(model), "--short-seconds", "20", "--long-minutes", "2",
                    "--size", "1280x720"], check=True)
    short, long_video, long_both = json.loads((out / "memory_flat.json").read_text())
    assert long_both["frames"] == 6 * short["frames"] == 3000
    for row in (long_video, long_both):
        # flat: six times the video (and the output) costs at most a tenth more (plus allocator noise)
        assert row["peak_rss_mb"] <= 1.1 * short["peak_rss_mb"] + 30, (short, row)
