"""Dataset format: the tiny synthetic dataset loads back with the documented shapes and errors."""

import json

import numpy as np
import pytest

from conftest import make_tiny_dataset
from realtalk_cli.data.dataset import ClipWriter, Dataset
from realtalk_cli.errors import RealtalkError


def test_tiny_dataset_reads_back(tiny_dataset):
    ds = tiny_dataset
    assert [c.name for c in ds.clips("train")] == ["synth00", "synth01"] and ds.clips("val") == []
    fm = ds.face_model
    clip = ds.clips()[0]
    T = clip.n_frames
    co = clip.coeffs()
    assert co["alpha"].shape == (fm.n_id,) and co["beta"].shape == (T, fm.n_exp) and co["rho"].shape == (T, fm.n_pose)
    assert all(v.dtype == np.float32 for v in co.values())
    assert clip.audio_features().shape == (2 * T, ds.config["features"]["dim"])
    assert clip.valid().dtype == bool and clip.valid().all()
    assert clip.landmarks().shape == (T, 478, 2) and clip.transforms().shape == (T, 2, 3)
    assert clip.audio().dtype == np.float32 and len(clip.audio()) == 640 * T
    crops = clip.crops([5, 0, 5])
    assert crops.shape == (3, 64, 64, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops[0], crops[2]) and not np.array_equal(crops[0], crops[1])
    assert clip.crops().shape[0] == T
    assert co["fit_error"].mean() < 1.0  # synthetic faces fit their own model to sub-pixel error


def test_val_split(tmp_path):
    ds = make_tiny_dataset(tmp_path / "d", n_clips=3, n_frames=20, val_clips=1)
    assert [c.name for c in ds.clips("val")] == ["synth02"] and len(ds.clips("train")) == 2


def test_not_a_dataset(tmp_path):
    with pytest.raises(RealtalkError, match="not a realtalk dataset"):
        Dataset.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(RealtalkError):
        Dataset.open(tmp_path)


def test_clip_writer_is_atomic(tmp_path):
    with pytest.raises(RuntimeError):
        with ClipWriter(tmp_path, "broken", 16) as w:
            w.add_crop(np.zeros((16, 16, 3), np.uint8))
            raise RuntimeError("tracking crashed")
    with pytest.raises(RuntimeError):
        with ClipWriter(tmp_path, "unfinished", 16) as w:
            w.add_crop(np.zeros((16, 16, 3), np.uint8))
    assert list((tmp_path / "clips").iterdir()) == []  # no partial clip, no temp dir left behind
