"""Face model (landmark kind): geometry conventions, fitting, pose recovery, checkpoint round trip."""

import collections

import numpy as np
import pytest
import torch

from conftest import synthetic_face
from realtalk_cli.errors import RealtalkError
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.fit import build_landmark_model, fit_landmarks, procrustes
from realtalk_cli.face.model import FaceModel, euler_rotation, rotation_to_euler


def _clip(rng, n=30, identity=0.0, angles=(0, 0, 0), scale=20.0, centre=(32, 34)):
    shape, opening = synthetic_face(rng, identity)
    env = rng.uniform(0, 1, n)
    shapes = shape + env[:, None, None] * opening
    r = euler_rotation(torch.tensor(angles, dtype=torch.float64)).numpy()
    pts = scale * shapes @ r.T
    pts[..., :2] += centre
    return pts.astype(np.float32), env


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    clips = [_clip(rng, identity=0.1 * (i > 0))[0] for i in range(3)]
    return build_landmark_model(clips, crop_size=64, n_id=4, n_exp=6)


def test_mediapipe_rings_follow_mediapipe_edges():
    fm = pytest.importorskip("mediapipe").solutions.face_mesh
    for ring, edges in ((mesh.LIPS_OUTER, fm.FACEMESH_LIPS), (mesh.LIPS_INNER, fm.FACEMESH_LIPS),
                        (mesh.FACE_OVAL, fm.FACEMESH_FACE_OVAL)):
        adj = collections.defaultdict(set)
        for a, b in edges:
            adj[a].add(b), adj[b].add(a)
        assert all(ring[(i + 1) % len(ring)] in adj[ring[i]] for i in range(len(ring)))
    oval = set(mesh.FACE_OVAL)
    assert set(mesh.JAW) <= oval and mesh.CHIN in mesh.JAW


def test_euler_roundtrip():
    angles = np.array([[0.1, -0.4, 0.3], [-0.2, 0.5, -1.0]])
    r = euler_rotation(torch.from_numpy(angles)).numpy()
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-9)
    assert np.allclose(rotation_to_euler(r), angles, atol=1e-9)


def test_procrustes_recovers_similarity():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(1, 50, 3))
    r = euler_rotation(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)).numpy()
    dst = 2.5 * src @ r.T + [1.0, -2.0, 0.5]
    s, rr, t = procrustes(src, dst)
    assert np.isclose(s[0], 2.5) and np.allclose(rr[0], r) and np.allclose(t[0], [1.0, -2.0, 0.5])


def test_build_model_dimensions_and_groups(model):
    assert model.n_id == 2  # identity from 3 clip means: at most clips - 1 directions
    assert 1 <= model.n_exp <= 6 and model.n_pose == 6 and model.crop_size == 64
    for name in ("lips_outer", "lips_inner", "mouth", "jaw", "mask_contour", "mouth_region"):
        assert model.groups[name].numel() > 0
    # mouth region: below the nose, includes the lips, excludes the eyes
    region = set(model.groups["mouth_region"].tolist())
    assert set(mesh.LIPS_INNER) <= region and not set(mesh.LEFT_EYE) & region
    exp = model.exp_basis.reshape(model.n_exp, -1)
    assert torch.allclose(exp @ exp.T, torch.eye(model.n_exp), atol=1e-4)  # orthonormal


def test_fit_reproduces_landmarks_and_mouth_opening(model):
    rng = np.random.default_rng(5)
    lm, env = _clip(rng, identity=0.1, angles=(0.05, 0.1, -0.05))
    fit = fit_landmarks(model, lm)
    # synthetic faces lie in the model span up to the new identity: well under a pixel
    assert fit.mean_error() < 0.5, fit.mean_error()
    verts = model.vertices(torch.from_numpy(np.tile(fit.alpha, (len(lm), 1))), torch.from_numpy(fit.beta),
                           torch.from_numpy(fit.rho))
    assert np.abs(model.project(verts).numpy() - lm[..., :2]).max() < 3.0
    opening = model.mouth_opening(verts).numpy()
    assert np.corrcoef(opening, env)[0, 1] > 0.99  # the mouth opening follows the synthetic envelope


@pytest.mark.parametrize("angles_deg", [(10, 0, 0), (0, 25, 0), (0, 0, -15), (-8, 20, 6)])
def test_pose_recovered(model, angles_deg):
    rng = np.random.default_rng(2)
    lm, _ = _clip(rng, angles=np.radians(angles_deg), scale=18.0, centre=(30, 36))
    fit = fit_landmarks(model, lm)
    err = np.degrees(np.abs(fit.rho[:, :3] - np.radians(angles_deg))).max()
    assert err < 1.0, err  # stated accuracy: within 1 degree on synthetic rotations
    scale = np.exp(fit.rho[:, 5])
    assert scale.std() / scale.mean() < 0.01  # the mouth opening is expression, not scale
    half = fit_landmarks(model, (lm - [30, 36, 0]) / 2 + [30, 36, 0])
    assert np.allclose(scale / np.exp(half.rho[:, 5]), 2.0, rtol=1e-3)
    assert fit.rho[:, 3:5].std(0).max() < 0.05
    shifted = fit_landmarks(model, lm + [5, -3, 0])
    assert np.allclose(shifted.rho[:, 3:5] - fit.rho[:, 3:5], (5, -3), atol=1e-3)


def test_vertices_are_differentiable(model):
    alpha = torch.zeros(2, model.n_id, requires_grad=True)
    beta = torch.zeros(2, model.n_exp, requires_grad=True)
    rho = torch.tensor([[0.0, 0.1, 0.0, 32, 32, 3.0]] * 2, requires_grad=True)
    model.mouth_opening(model.vertices(alpha, beta, rho)).sum().backward()
    assert beta.grad.abs().sum() > 0 and rho.grad is not None


def test_checkpoint_roundtrip(model, tmp_path):
    model.save(tmp_path / "fm")
    loaded = FaceModel.load(tmp_path / "fm")
    assert loaded.fingerprint() == model.fingerprint()
    assert all(torch.equal(loaded.groups[k], v) for k, v in model.groups.items())
    config, tensors = model.to_checkpoint()
    again = FaceModel.from_checkpoint(config, tensors)
    rho = torch.tensor([[0.1, 0.2, 0.3, 10, 20, 3.0]])
    a, b = torch.zeros(1, model.n_id), torch.randn(1, model.n_exp)
    assert torch.allclose(again.vertices(a, b, rho), model.vertices(a, b, rho))
    with pytest.raises(RealtalkError):
        FaceModel.from_checkpoint({"format": "something else"}, tensors)
    half = again.to(torch.float64)  # dtype changes touch the bases, never the integer groups
    assert half.mean.dtype == torch.float64 and half.groups["mouth"].dtype == torch.long
