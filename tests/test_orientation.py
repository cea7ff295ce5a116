"""Phone videos carry a display matrix: four rotations, each mirrored or not (front cameras mirror).
Every frame we decode must be the picture ffmpeg's own autorotate shows."""

import subprocess

import numpy as np
import pytest

from realtalk_cli.media import VideoReader, ffmpeg_exe, probe


def _ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    path = tmp_path_factory.mktemp("orient") / "stored.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=96x64:r=25:d=0.2", "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p", path)
    return path


@pytest.mark.parametrize("mirrored", [False, True])
@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_every_orientation_decodes_as_ffmpeg_autorotates(stored, tmp_path, rotation, mirrored):
    phone = tmp_path / "phone.mp4"
    _ffmpeg("-display_rotation", rotation, *(["-display_hflip"] if mirrored else []), "-i", stored, "-c", "copy", phone)
    raw = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(phone), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout  # ffmpeg turns and flips by default
    info = probe(phone)
    want = np.frombuffer(raw, np.uint8).reshape(-1, info.height, info.width, 3)
    got = np.stack(list(VideoReader(phone, None)))
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 2.0  # the same picture up to colour conversion
    upright = np.stack(list(VideoReader(stored, None)))
    if rotation in (90, 270):
        assert got.shape[1:3] == upright.shape[2:0:-1]
    else:  # the same size: the picture must still have flipped when the matrix says so
        assert (np.abs(got.astype(int) - upright).mean() > 10) == (rotation != 0 or mirrored)
