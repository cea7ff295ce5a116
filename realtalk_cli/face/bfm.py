"""The `bfm` face model: Basel Face Model bases + Deep3DFaceRecon's regressor (both user-supplied).

`BFM_model_front.mat` (Deep3DFaceRecon's cropped BFM 2009: meanshape [1, 3V], idBase [3V, 80],
exBase [3V, 64], keypoints [1, 68] one-based) becomes a FaceModel with the perspective camera of
Deep3DFaceRecon. Coefficients come from the ResNet-50 regressor run on our aligned crops resized
to 224: our crop (face centred, eyes level, chin and a little neck inside) is close to, not equal
to, Deep3DFaceRecon's 5-point alignment, which the network tolerates. alpha is the per-clip mean of
the predicted identity over valid frames, since identity does not change within a clip.
BFM is licensed for non-commercial research only: never ship it or a checkpoint embedding it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.errors import RealtalkError
from realtalk_cli.face import mediapipe_mesh as mesh
from realtalk_cli.face.fit import Fit
from realtalk_cli.face.model import FaceModel
from realtalk_cli.nets.d3dfr import INPUT_SIZE, D3DFRRegressor

CAMERA = {"focal": 1015.0, "center": 112.0, "distance": 10.0, "image_size": float(INPUT_SIZE)}
# iBUG-68 keypoints that have a clear MediaPipe counterpart, for the fit error:
# eye corners, nose tip, mouth corners, chin
KEYPOINTS_68 = [36, 39, 42, 45, 30, 48, 54, 8]
KEYPOINTS_MP = [33, 133, 362, 263, mesh.NOSE_TIP, 61, 291, mesh.CHIN]


def load_bfm(path: str | os.PathLike, crop_size: int = 256) -> FaceModel:
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise RealtalkError("BFM file not found (BFM_model_front.mat from Deep3DFaceRecon)", path)
    try:
        m = loadmat(str(path))
        mean = m["meanshape"].reshape(-1, 3).astype(np.float32)
        n_v = len(mean)
        id_basis = m["idBase"].reshape(n_v, 3, -1).transpose(2, 0, 1).astype(np.float32)
        exp_basis = m["exBase"].reshape(n_v, 3, -1).transpose(2, 0, 1).astype(np.float32)
        kp = m["keypoints"].reshape(-1).astype(np.int64) - 1  # one-based in the file
    except (KeyError, ValueError) as e:
        raise RealtalkError(f"not a BFM_model_front.mat file ({e})", path) from None
    if len(kp) != 68 or kp.min() < 0 or kp.max() >= n_v:
        raise RealtalkError("BFM keypoints must be 68 one-based vertex indices", path)
    mean -= mean.mean(0)  # Deep3DFaceRecon recentres the mean shape
    nose_bottom_y = mean[kp[33], 1]  # BFM y points up
    groups = {"lips_outer": kp[48:60], "lips_inner": kp[60:68], "mouth": kp[60:68], "jaw": kp[0:17],
              "mask_contour": kp[1:16], "mouth_region": np.nonzero(mean[:, 1] < nose_bottom_y)[0],
              "keypoints": kp[KEYPOINTS_68], "keypoint_landmarks": np.array(KEYPOINTS_MP), "pose_points": kp[17:48]}
    groups = {k: torch.as_tensor(np.asarray(v), dtype=torch.long) for k, v in groups.items()}
    opening = torch.tensor([[kp[61], kp[67]], [kp[62], kp[66]], [kp[63], kp[65]]])
    return FaceModel("bfm", torch.from_numpy(mean), torch.from_numpy(id_basis), torch.from_numpy(exp_basis), groups,
                     opening, crop_size, camera=CAMERA, extra={"source": path.name})


class BFMFitter:
    """Regress (alpha, beta, rho) for a clip's crops with Deep3DFaceRecon, batch by batch."""

    def __init__(self, model: FaceModel, net: D3DFRRegressor | str | os.PathLike, device: str | torch.device = "cpu",
                 batch_size: int = 16):
        if model.kind != "bfm":
            raise RealtalkError("the Deep3DFaceRecon regressor needs a bfm face model")
        self.model = model
        self.net = (net if isinstance(net, D3DFRRegressor) else D3DFRRegressor.load(net)).to(device).eval()
        self.device, self.batch_size = torch.device(device), batch_size

    @torch.no_grad()
    def regress(self, crops: np.ndarray) -> np.ndarray:
        """uint8 [k, S, S, 3] crops -> [k, 257] coefficients."""
        x = torch.from_numpy(np.ascontiguousarray(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255
        x = torch.nn.functional.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True,
                                            align_corners=False)
        return self.net(x).cpu().numpy()

    def fit(self, crops, landmarks: np.ndarray, valid: np.ndarray) -> Fit:
        """`crops`: a callable indices -> uint8 crops (e.g. Clip.crops) or an array; landmarks [T, 478, 2+]."""
        get = crops if callable(crops) else (lambda idx: crops[idx])
        t = len(landmarks)
        coeffs = np.concatenate([self.regress(get(np.arange(i, min(t, i + self.batch_size))))
                                 for i in range(0, t, self.batch_size)])
        alpha = coeffs[valid, :80].mean(0) if valid.any() else coeffs[:, :80].mean(0)
        beta, rho = coeffs[:, 80:144], np.concatenate([coeffs[:, 224:227], coeffs[:, 254:257]], 1)
        m = self.model
        with torch.no_grad():
            verts = m.vertices(torch.from_numpy(np.tile(alpha, (t, 1))), torch.from_numpy(beta), torch.from_numpy(rho))
        kp = m.project(verts)[:, m.groups["keypoints"]].numpy()
        error = np.linalg.norm(kp - landmarks[:, m.groups["keypoint_landmarks"].numpy(), :2], axis=-1).mean(1)
        return Fit(alpha.astype(np.float32), beta.astype(np.float32), rho.astype(np.float32), error.astype(np.float32))
