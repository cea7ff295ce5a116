"""Output-to-source frame mapping (trim, loop, pingpong) and streaming the source in that order."""

import numpy as np
import pytest

from mediagen import make_face_video, make_video
from realtalk_cli.errors import UsageError
from realtalk_cli.media import VideoReader
from realtalk_cli.pipelines.timeline import extend_indices, frames_in_order, runs


def test_extend_modes():
    assert extend_indices(3, 5).tolist() == [0, 1, 2]  # shorter speech: trimmed
    assert extend_indices(7, 3, "loop").tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert extend_indices(9, 4, "pingpong").tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert extend_indices(3, 1).tolist() == [0, 0, 0]
    with pytest.raises(UsageError):
        extend_indices(3, 3, "bounce")


def test_runs():
    assert runs(np.array([0, 1, 2, 3, 2, 1, 0, 1])) == [(0, 3, 1), (2, 0, -1), (1, 1, 1)]
    assert runs(np.array([0, 1, 0, 1])) == [(0, 1, 1), (0, 1, 1)]


@pytest.mark.parametrize("mode", ["pingpong", "loop"])
def test_frames_in_order_match_full_read(tmp_path, mode):
    v = make_video(tmp_path / "v.mp4", seconds=1.2, size="64x48", fps=25, audio=False, extra=("-g", "12"))
    full = list(VideoReader(v))
    idx = extend_indices(75, len(full), mode)
    got = list(frames_in_order(v, idx, chunk=7))
    assert [i for i, _ in got] == idx.tolist()
    assert all(np.array_equal(f, full[i]) for i, f in got)


@pytest.mark.parametrize("fps", [25, None, 29.97])
def test_range_read_equals_full_read_at_30fps(tmp_path, fps):
    # our own writer uses B-frames (negative decode timestamps), a case lavfi+ultrafast does not cover
    v = make_face_video(tmp_path / "v30.mp4", seconds=2, size=(64, 48), fps=30, audio=False)
    full = list(VideoReader(v, fps=fps))
    for a, b in [(3, 17), (len(full) - 5, len(full)), (40, None)]:
        part = list(VideoReader(v, fps=fps, start=a, stop=b))
        assert len(part) == len(full[a:b])
        assert all(np.array_equal(x, y) for x, y in zip(part, full[a:b]))
