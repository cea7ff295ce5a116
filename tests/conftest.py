"""Shared pytest helpers: a synthetic face and a tiny synthetic dataset that every stage can train on.

`make_tiny_dataset(tmp_path)` writes a real dataset through the project's own writer: synthetic
faces on the MediaPipe topology whose mouth opens with the loudness of the audio, a landmark face
model learned from them by PCA (face/fit.py) and coefficients fitted to them, so a2e can learn
audio -> mouth and e2f can learn coefficients -> image, in seconds on a CPU.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtalk_cli.face import mediapipe_mesh as mesh

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The test networks are tiny: on 2 shared cores they run 15-40x faster on one thread (no OpenMP
    spin-waiting). CLI subprocesses inherit it through OMP_NUM_THREADS."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Caches (adapted models, tracked videos) go to a temporary folder, never the user's ~/.cache."""
    os.environ["REALTALK_CACHE"] = str(tmp_path_factory.mktemp("realtalk_cache"))


@pytest.fixture(autouse=True)
def loud_console():
    """A CLI call with --quiet silences the shared console for the whole process; each test starts loud."""
    from realtalk_cli.progress import set_quiet

    set_quiet(False)
    yield
    set_quiet(False)


def _ring(n: int, cx: float, cy: float, ax: float, ay: float, start: float = np.pi, turn: float = 1.0) -> np.ndarray:
    a = start + turn * np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + ax * np.cos(a), cy - ay * np.sin(a)], 1)


def synthetic_face(rng: np.random.Generator | None = None, identity: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A plausible 478-point face in model units (y down) and its mouth-opening direction [478, 3].

    Rings start at the subject's right mouth corner / ear and run over the top first, like
    MediaPipe's. `identity` > 0 randomly stretches face width, mouth size and eye distance.
    """
    rng = rng or np.random.default_rng(0)
    k = identity * rng.standard_normal(4)
    pts = np.zeros((mesh.N_LANDMARKS, 3))
    # filler points inside the face oval, on a bulging surface
    fixed = np.random.default_rng(478)  # the same filler layout for every identity
    r, a = np.sqrt(fixed.uniform(0, 1, mesh.N_LANDMARKS)), fixed.uniform(0, 2 * np.pi, mesh.N_LANDMARKS)
    pts[:, 0], pts[:, 1] = 0.75 * r * np.cos(a), 1.0 * r * np.sin(a)
    oval = _ring(len(mesh.FACE_OVAL), 0, 0, 0.85 * (1 + k[0]), 1.1, start=np.pi / 2)
    pts[mesh.FACE_OVAL, :2] = oval * [-1, 1]  # 10 is the forehead top, then round to the subject's left
    pts[mesh.LIPS_OUTER, :2] = _ring(20, 0, 0.55, 0.32 * (1 + k[1]), 0.13, turn=-1.0)  # over the top first (y down)
    pts[mesh.LIPS_INNER, :2] = _ring(20, 0, 0.55, 0.24 * (1 + k[1]), 0.03, turn=-1.0)
    for eye, cx in ((mesh.RIGHT_EYE, -0.35 * (1 + k[2])), (mesh.LEFT_EYE, 0.35 * (1 + k[2]))):
        pts[eye, :2] = [[cx - 0.12, -0.2], [cx + 0.12, -0.2], [cx, -0.25], [cx, -0.15]]
    pts[[168, 6, 197, 195, 5, 4], :2] = [[0, y] for y in np.linspace(-0.25, 0.1, 6)]  # nose bridge
    pts[mesh.NOSE_TIP, :2], pts[mesh.NOSE_BOTTOM, :2] = [0, 0.15 + 0.05 * k[3]], [0, 0.3]
    pts[:, 2] = -0.6 * np.sqrt(np.clip(1 - (pts[:, 0] / 0.9) ** 2 - (pts[:, 1] / 1.2) ** 2, 0, 1))
    pts[mesh.NOSE_TIP, 2] -= 0.3
    # opening: lower lips and chin move down, more at the inner lower lip
    opening = np.zeros_like(pts)
    lower = pts[:, 1] > 0.55
    opening[lower, 1] = 0.25 * np.exp(-((pts[lower, 1] - 0.6) ** 2) / 0.5)
    opening[[i for i in mesh.LIPS_INNER if pts[i, 1] > 0.55], 1] += 0.1
    return pts.astype(np.float32), opening.astype(np.float32)


def render_face(points2d: np.ndarray, size: int) -> np.ndarray:
    """Flat-shaded cartoon of a posed face (crop pixels): skin, eyes, lips, dark mouth interior."""
    img = np.full((size, size, 3), 90, np.uint8)
    poly = lambda idx: np.round(points2d[idx] * 16).astype(np.int32)  # noqa: E731 (4 bits sub-pixel)
    cv2.fillPoly(img, [poly(mesh.FACE_OVAL)], (220, 170, 140), cv2.LINE_AA, shift=4)
    cv2.fillPoly(img, [poly(mesh.LIPS_OUTER)], (170, 60, 70), cv2.LINE_AA, shift=4)
    cv2.fillPoly(img, [poly(mesh.LIPS_INNER)], (40, 10, 15), cv2.LINE_AA, shift=4)
    for eye in (mesh.RIGHT_EYE, mesh.LEFT_EYE):
        cv2.fillPoly(img, [poly(eye)[[0, 2, 1, 3]]], (30, 30, 30), cv2.LINE_AA, shift=4)
    return img


def make_tiny_dataset(root: Path, n_clips: int = 2, n_frames: int = 40, crop_size: int = 64, n_exp: int = 8,
                      val_clips: int = 0, seed: int = 0):
    """Write and open a synthetic dataset under `root` (see module docstring). Returns a Dataset."""
    from realtalk_cli.audio.features import AudioFrontEnd
    from realtalk_cli.data.dataset import Dataset, write_clip, write_coeffs, write_manifest
    from realtalk_cli.face.align import AlignConfig
    from realtalk_cli.face.fit import build_landmark_model, fit_landmarks
    from realtalk_cli.face.model import FaceModel  # noqa: F401 (documents the type returned by .face_model)

    rng = np.random.default_rng(seed)
    root = Path(root)
    frontend = AudioFrontEnd({"kind": "mel"})
    clips = []
    for c in range(n_clips):
        shape, opening = synthetic_face(rng, identity=0.15 if c else 0.0)
        # loudness envelope per frame, smooth, with pauses; the mouth follows it
        env = np.clip(np.convolve(rng.uniform(-0.6, 1.0, n_frames + 4), np.ones(5) / 5, "valid"), 0, 1)
        t = np.arange(n_frames * 640) / 16000
        audio = (np.repeat(env, 640) * np.sin(2 * np.pi * 220 * t) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)
        smile = rng.normal(0, 0.02, (n_frames, 1, 1)) * np.sign(shape[None, :, :1]) * [1, 0, 0]
        shapes = shape + env[:, None, None] * opening + smile
        angle = np.cumsum(rng.normal(0, 0.01, n_frames))  # slow in-plane rotation
        rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], 1), np.stack([np.sin(angle), np.cos(angle)], 1)], 1)
        scale = crop_size * 0.3
        centre = crop_size / 2 + np.cumsum(rng.normal(0, 0.2, (n_frames, 2)), 0)
        lm = np.empty((n_frames, mesh.N_LANDMARKS, 3), np.float32)
        lm[..., :2] = scale * np.einsum("tij,tnj->tni", rot, shapes[..., :2]) + centre[:, None]
        lm[..., 2] = scale * shapes[..., 2]
        transforms = np.tile(np.array([[0.5, 0, 0], [0, 0.5, 0]], np.float32), (n_frames, 1, 1))
        clips.append(dict(name=f"synth{c:02d}", lm=lm, audio=audio, transforms=transforms,
                          crops=[render_face(p[:, :2], crop_size) for p in lm]))
    model = build_landmark_model([c["lm"] for c in clips], crop_size, n_id=max(n_clips - 1, 0), n_exp=n_exp)
    model.save(root / "face_model")
    entries = []
    for k, c in enumerate(clips):
        valid = np.ones(n_frames, bool)
        clip = write_clip(root, c["name"], c["crops"], landmarks=c["lm"], transforms=c["transforms"], valid=valid,
                          audio=c["audio"], features=frontend.features_for_frames(c["audio"], n_frames),
                          crop_size=crop_size, meta={"source": "synthetic"})
        fit = fit_landmarks(model, c["lm"], valid)
        write_coeffs(clip.dir, {"alpha": fit.alpha, "beta": fit.beta, "rho": fit.rho, "fit_error": fit.error},
                     model.fingerprint())
        entries.append({"name": c["name"], "source": "synthetic", "split": "val" if k >= n_clips - val_clips else "train",
                        "n_frames": n_frames, "fit_error": fit.mean_error()})
    # the same keys as a real dataset's config.json (trainers copy "features" and "align" into checkpoints)
    write_manifest(root, entries, [], {"crop_size": crop_size, "fps": 25.0, "features": frontend.to_dict(),
                                       "align": asdict(AlignConfig(crop_size=crop_size)), "face_model": "landmark"})
    return Dataset.open(root)


@pytest.fixture
def tiny_dataset(tmp_path):
    """A 2-clip, 40-frame, 64x64 synthetic dataset (train: synth00, synth01)."""
    return make_tiny_dataset(tmp_path / "tiny_data")


@pytest.fixture(scope="session")
def tiny_hubert(tmp_path_factory):
    """A randomly initialised 2-layer, 32-wide transformers HubertModel saved to a directory."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    config = transformers.HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=4)
    path = tmp_path_factory.mktemp("hubert")
    transformers.HubertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bank_model(tmp_path_factory):
    """A generated face video -> preprocess -> frame bank (+ a barely trained a2e): a model directory
    that dubs and streams with the bank renderer (root/model), its video (root/person.mp4) and data."""
    root = tmp_path_factory.mktemp("bank")
    from mediagen import make_face_video

    clip = make_face_video(root / "person.mp4", seconds=2.0)
    import subprocess
    import sys

    run = lambda *a: subprocess.run([sys.executable, "-m", "realtalk_cli", "--quiet", *map(str, a)],  # noqa: E731
                                    check=True, capture_output=True)
    run("preprocess", clip, "-o", root / "data", "--crop-size", 64, "--val-fraction", 0)
    run("train", "--stage", "a2e", "--data", root / "data", "--out", root / "model" / "a2e",
        "--config", "a2e_tiny", "--steps", 2, "--val-every", 0, "--ckpt-every", 0)
    from realtalk_cli.bank.store import build_bank

    build_bank(root / "data", root / "model" / "bank")
    return root
