"""The bfm face model path: a tiny synthetic BFM .mat and a randomly initialised regressor saved by the test."""

import numpy as np
import pytest
import torch
from scipy.io import savemat

from realtalk_cli.errors import RealtalkError
from realtalk_cli.face.bfm import BFMFitter, load_bfm
from realtalk_cli.face.model import FaceModel
from realtalk_cli.nets.d3dfr import D3DFRRegressor

N_V = 200


@pytest.fixture
def tiny_bfm(tmp_path):
    rng = np.random.default_rng(0)
    # a bumpy disc about 1.6 units wide facing +z (the camera), y up, as in BFM
    xy = rng.uniform(-0.8, 0.8, (N_V, 2))
    mean = np.concatenate([xy, 0.3 * np.cos(xy[:, :1] * 2)], 1) + [0.1, 0.2, 0.3]
    path = tmp_path / "BFM_model_front.mat"
    savemat(path, {"meanshape": mean.reshape(1, -1), "idBase": rng.normal(0, 1e-3, (3 * N_V, 80)),
                   "exBase": rng.normal(0, 1e-3, (3 * N_V, 64)),
                   "keypoints": (np.arange(68) * 2 + 1).reshape(1, -1).astype(np.float64)})
    return path


def test_tiny_bfm_loads_and_projects(tiny_bfm, tmp_path):
    fm = load_bfm(tiny_bfm, crop_size=256)
    assert (fm.kind, fm.n_id, fm.n_exp, fm.n_pose, fm.n_vertices) == ("bfm", 80, 64, 6, N_V)
    assert torch.allclose(fm.mean.mean(0), torch.zeros(3), atol=1e-5)  # recentred
    assert fm.groups["jaw"].tolist() == [2 * i for i in range(17)]  # one-based keypoints -> zero-based
    zeros = torch.zeros(1, 80), torch.zeros(1, 64), torch.zeros(1, 6)
    v = fm.vertices(*zeros)
    # camera at distance 10 and focal 1015 on 224: the model centre projects to the crop centre
    centre = fm.project(v)[0].mean(0) / 256 * 224
    assert torch.allclose(centre, torch.tensor([111.0, 111.0]), atol=2.0)
    # moving the head up (+y in BFM) moves it up in the image (smaller y)
    up = fm.vertices(zeros[0], zeros[1], torch.tensor([[0, 0, 0, 0, 0.5, 0.0]]))
    assert (fm.project(up)[0, :, 1] < fm.project(v)[0, :, 1]).all()
    fm.save(tmp_path / "fm")
    assert FaceModel.load(tmp_path / "fm").fingerprint() == fm.fingerprint()


@pytest.fixture(scope="module")
def d3dfr_checkpoint(tmp_path_factory):
    """A randomly initialised regressor saved like the public epoch_20.pth ({"net_recon": state})."""
    torch.manual_seed(0)
    net = D3DFRRegressor()
    for layer in net.final_layers:  # non-zero heads so the output depends on the image
        torch.nn.init.normal_(layer.weight, std=1e-4)
    path = tmp_path_factory.mktemp("d3dfr") / "epoch_20.pth"
    torch.save({"net_recon": net.state_dict()}, path)
    return path, net.eval()


def test_regressor_loads_public_layout_and_fits(tiny_bfm, d3dfr_checkpoint):
    path, net = d3dfr_checkpoint
    state = torch.load(path, weights_only=True)["net_recon"]
    assert "backbone.layer4.2.conv3.weight" in state and "final_layers.6.bias" in state
    loaded = D3DFRRegressor.load(path)
    x = torch.rand(1, 3, 64, 64)  # fully convolutional up to the pooling: a small input checks the weights
    assert torch.allclose(loaded(x), net(x), atol=1e-5) and loaded(x).shape == (1, 257)

    fm = load_bfm(tiny_bfm, crop_size=64)
    fitter = BFMFitter(fm, path, batch_size=2)
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    landmarks = np.full((2, 478, 2), 32.0, np.float32)
    fit = fitter.fit(crops, landmarks, np.array([True, False]))
    assert fit.alpha.shape == (80,) and fit.beta.shape == (2, 64) and fit.rho.shape == (2, 6)
    assert np.isfinite(fit.error).all() and fit.error.shape == (2,)
    assert np.allclose(fit.alpha, fitter.regress(crops[:1])[0, :80], atol=1e-5)  # identity from valid frames only


def test_bad_files(tmp_path):
    with pytest.raises(RealtalkError):
        load_bfm(tmp_path / "missing.mat")
    savemat(tmp_path / "x.mat", {"foo": np.zeros(3)})
    with pytest.raises(RealtalkError):
        load_bfm(tmp_path / "x.mat")
    torch.save({"net_recon": {"conv.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(RealtalkError, match="not a Deep3DFaceRecon"):
        D3DFRRegressor.load(tmp_path / "bad.pth")


@pytest.mark.slow
def test_preprocess_with_bfm(tiny_bfm, d3dfr_checkpoint, tmp_path):
    from mediagen import make_face_video
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.face.align import AlignConfig
    from realtalk_cli.pipelines import preprocess as pp

    video = make_face_video(tmp_path / "short.mp4", seconds=0.24)
    config = pp.PreprocessConfig(align=AlignConfig(crop_size=64), face_model="bfm", bfm=str(tiny_bfm),
                                 d3dfr=str(d3dfr_checkpoint[0]), min_frames=5)
    result = pp.preprocess_dataset([video], tmp_path / "data", config)
    assert result.sources[0]["status"] == "ok", result.sources[0]
    ds = Dataset.open(tmp_path / "data")
    assert ds.face_model.kind == "bfm" and ds.face_model.n_vertices == N_V
    co = ds.clips()[0].coeffs()
    assert co["alpha"].shape == (80,) and co["beta"].shape == (6, 64) and co["rho"].shape == (6, 6)
