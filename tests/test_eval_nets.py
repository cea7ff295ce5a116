"""Evaluation networks: each loads a state dict under the public checkpoint's parameter names (saved
here from a random initialisation, nothing downloaded) and refuses files that do not fit."""

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from realtalk_cli.errors import RealtalkError
from realtalk_cli.eval.arcface import ARCFACE_TEMPLATE, MESH_FIVE, IResNet, IResNetConfig, aligned_face
from realtalk_cli.eval.inception import FEATURE_DIM, FIDInceptionV3, frechet_distance
from realtalk_cli.eval.lpips import LPIPS, LPIPSConfig
from realtalk_cli.eval.syncnet import LSEScorer, SyncNet, lse


def randomised(model: torch.nn.Module, seed: int = 0) -> dict:
    """A state dict with every float tensor (running stats included) drawn at random."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            r = torch.rand(v.shape, generator=g)
            state[k] = r + 0.5 if k.endswith("running_var") else (r - 0.5) * 0.2
        else:
            state[k] = v
    return state


def assert_loaded(model, state):
    for k, v in model.state_dict().items():
        if k in state:
            assert torch.equal(v, state[k]), k


def test_inception_round_trip_and_features(tmp_path):
    net = FIDInceptionV3()
    state = randomised(net)
    state["fc.weight"] = torch.zeros(1008, FEATURE_DIM)  # pytorch-fid's file has a classifier: ignored
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    loaded = FIDInceptionV3.from_file(path)
    assert_loaded(loaded, state)
    with torch.no_grad():
        feats = loaded(torch.rand(2, 3, 75, 75), resize=False)  # the smallest input the graph takes
    assert feats.shape == (2, FEATURE_DIM) and torch.isfinite(feats).all()


def test_inception_rejects_foreign_weights(tmp_path):
    lpips_file = tmp_path / "lpips.pth"
    torch.save(LPIPS().state_dict(), lpips_file)
    with pytest.raises(RealtalkError, match="missing Conv2d_1a_3x3"):
        FIDInceptionV3.from_file(lpips_file)
    with pytest.raises(RealtalkError, match="not found"):
        FIDInceptionV3.from_file(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RealtalkError, match="cannot read"):
        FIDInceptionV3.from_file(junk)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, (200, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    # two Gaussians with the same covariance: FD = ||mu_a - mu_b||^2
    assert frechet_distance(a, a + [3, 0, 0, 0]) == pytest.approx(9.0, rel=1e-6)
    near, far = frechet_distance(a, rng.normal(0.2, 1, (200, 4))), frechet_distance(a, rng.normal(1, 2, (200, 4)))
    assert 0 < near < far
    # fewer samples than dimensions: the sample-space trace agrees with the matrix square root
    x, y = rng.normal(0, 1, (12, 30)), rng.normal(0.3, 1.5, (9, 30))
    sa, sb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(sa + sb - 2 * scipy.linalg.sqrtm(sa @ sb).real)
    assert frechet_distance(x, y) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("backbone", ["alex", "vgg"])
def test_lpips_loads_split_and_full_checkpoints(tmp_path, backbone):
    net = LPIPS(LPIPSConfig(backbone))
    state = randomised(net)
    for k in state:  # trained heads are non-negative
        if k.startswith("lin"):
            state[k] = state[k].abs()
    heads = {k: v for k, v in state.items() if k.startswith("lin")}
    backbone_sd = {k: v for k, v in state.items() if k.startswith("features.")}
    backbone_sd["classifier.1.weight"] = torch.zeros(3, 3)  # torchvision's file: ignored
    torch.save(heads, tmp_path / "heads.pth")
    save_file(backbone_sd, str(tmp_path / "backbone.safetensors"))
    split = LPIPS.from_files([tmp_path / "heads.pth", tmp_path / "backbone.safetensors"])
    assert split.config.backbone == backbone
    assert_loaded(split, state)
    # the lpips package's own state dict names the backbone net.sliceK.<torchvision index>
    full = {**heads, "scaling_layer.shift": torch.zeros(1, 3, 1, 1)}
    for k, v in backbone_sd.items():
        if k.startswith("features."):
            full["net.slice1." + k.removeprefix("features.")] = v
    torch.save(full, tmp_path / "full.pth")
    assert_loaded(LPIPS.from_files(tmp_path / "full.pth"), state)
    if backbone == "vgg":
        return  # the behaviour below does not depend on the backbone; VGG16 is slow here
    # behaviour: zero for identical images, grows with the amount of noise
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        d = [float(split(x, (x + s * torch.randn_like(x)).clamp(0, 1))) for s in (0.0, 0.05, 0.3)]
    assert d[0] == 0 and d[0] < d[1] < d[2]
    with pytest.raises(RealtalkError, match="missing features.0.weight"):
        LPIPS.from_files(tmp_path / "heads.pth")  # heads alone are not enough


def test_arcface_depth_from_checkpoint_and_alignment(tmp_path):
    net = IResNet(IResNetConfig([1, 2, 1, 1], embedding=16))
    state = randomised(net)
    state["fc.weight"] *= 0.05
    path = tmp_path / "backbone.pth"
    torch.save({"state_dict": state}, path)
    loaded = IResNet.from_file(path)
    assert loaded.config.layers == [1, 2, 1, 1] and loaded.config.embedding == 16
    assert_loaded(loaded, state)
    with torch.no_grad():
        assert loaded(torch.rand(2, 3, 112, 112)).shape == (2, 16)
    # alignment puts the five MediaPipe points on the template
    lm = np.zeros((478, 3), np.float32)
    lm[MESH_FIVE, :2] = ARCFACE_TEMPLATE * 2 + [30, 10]
    img = np.zeros((400, 400, 3), np.uint8)
    for x, y in lm[MESH_FIVE, :2].astype(int):
        img[y - 2 : y + 3, x - 2 : x + 3] = 255
    crop = aligned_face(img, lm)
    for x, y in np.round(ARCFACE_TEMPLATE).astype(int):
        assert crop[y, x].max() > 0


def test_syncnet_round_trip_and_lse(tmp_path):
    net = SyncNet()
    state = randomised(net)
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    loaded = SyncNet.from_file(path)
    assert_loaded(loaded, state)
    rng = np.random.default_rng(0)
    scorer = LSEScorer(loaded, rng.normal(0, 0.1, 9 * 640).astype(np.float32), batch_size=2)
    for _ in range(10):  # one frame more than the audio: syncnet_python's count, min(frames, audio) - 5
        scorer.add(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))
    video, audio = scorer.embeddings()
    assert video.shape == audio.shape == (4, 1024)
    # audio embedding k equal to video embedding k + 2: found at syncnet_python's offset +2, distance 0
    ahead = torch.cat([video[2:], torch.zeros(2, 1024)])
    out = lse(video, ahead, vshift=3)
    assert out["offset"] == 2
    same = lse(video, video, vshift=3)
    assert same["offset"] == 0 and same["lse_d"] == pytest.approx(0, abs=1e-3) and same["lse_c"] > 0
    assert lse(video, torch.cat([torch.zeros(2, 1024), video])[: len(video)], vshift=3)["offset"] == -2
