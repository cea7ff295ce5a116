"""The face model (the paper's "3DMM"): a differentiable linear morphable model V(alpha, beta, rho).

    shape  = mean + alpha @ id_basis + beta @ exp_basis              # [B, V, 3], model units
    verts  = pose(shape, rho)                                        # [B, V, 3], crop pixels (x right, y down)
    pixels = project(verts) = verts[..., :2]                         # [B, V, 2]

One class serves both implementations; they differ only in where the bases come from and in the
camera that `pose` applies:
  * `landmark` (default): bases learned by PCA on MediaPipe's 478-point mesh (face/fit.py), weak
    perspective (orthographic) camera. rho = [pitch, yaw, roll, tx, ty, log_scale] (6):
    verts = exp(log_scale) * shape @ R^T + [tx, ty, 0], angles in radians, t in crop pixels.
  * `bfm`: Basel Face Model bases (face/bfm.py), Deep3DFaceRecon's perspective camera (focal 1015 on
    a 224 crop, camera 10 units in front of the face). rho = [pitch, yaw, roll, tx, ty, tz] (6);
    verts = (x, y) in crop pixels and z = depth from the camera.
R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in both, as in Deep3DFaceRecon, so angles mean the same thing.

Named vertex groups (`groups`, LongTensors indexing V) are what the rest of the project uses:
lips_outer / lips_inner (ordered rings), mouth (ordered inner-mouth/teeth polygon), jaw (ordered
contour ear to ear under the chin), mask_contour (ordered lower-face polygon: cheeks down round the
chin; e2f extends it towards the neck), mouth_region (vertices for the a2e vertex loss), keypoints
(vertices compared with tracked landmarks to measure fit error) and keypoint_landmarks (the MediaPipe
landmark index matching each keypoint, same length), pose_points (rigid vertices for pose estimation).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtalk_cli.checkpoint import load_checkpoint, save_checkpoint
from realtalk_cli.errors import RealtalkError

FORMAT = "realtalk-face-model"
KINDS = ("landmark", "bfm")
GROUP_NAMES = ("lips_outer", "lips_inner", "mouth", "jaw", "mask_contour", "mouth_region", "keypoints",
               "keypoint_landmarks", "pose_points")


def euler_rotation(angles: torch.Tensor) -> torch.Tensor:
    """[..., 3] (pitch about x, yaw about y, roll about z) in radians -> [..., 3, 3] = Rz @ Ry @ Rx."""
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1)
    shape = angles.shape[:-1] + (3, 3)
    return rz.reshape(shape) @ ry.reshape(shape) @ rx.reshape(shape)


def rotation_to_euler(r: np.ndarray) -> np.ndarray:
    """Inverse of `euler_rotation` for [..., 3, 3] numpy rotations (|yaw| < 90 degrees)."""
    pitch = np.arctan2(r[..., 2, 1], r[..., 2, 2])
    yaw = np.arcsin(np.clip(-r[..., 2, 0], -1.0, 1.0))
    roll = np.arctan2(r[..., 1, 0], r[..., 0, 0])
    return np.stack([pitch, yaw, roll], -1)


class FaceModel(nn.Module):
    """V(alpha, beta, rho) with named vertex groups; see the module docstring for conventions."""

    def __init__(
        self,
        kind: str,
        mean: torch.Tensor,
        id_basis: torch.Tensor,
        exp_basis: torch.Tensor,
        groups: dict[str, torch.Tensor],
        opening_pairs: torch.Tensor,
        crop_size: int,
        camera: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__()
        if kind not in KINDS:
            raise RealtalkError(f"unknown face model kind {kind!r} (expected one of {', '.join(KINDS)})")
        missing = [g for g in GROUP_NAMES if g not in groups]
        if missing:
            raise RealtalkError(f"face model lacks vertex groups: {', '.join(missing)}")
        self.kind = kind
        self.crop_size = int(crop_size)
        self.camera = dict(camera or {})
        self.extra = dict(extra or {})  # free-form provenance (clips, frames, explained variance)
        self.register_buffer("mean", mean.float().reshape(-1, 3))
        n_v = self.mean.shape[0]
        self.register_buffer("id_basis", id_basis.float().reshape(-1, n_v, 3))
        self.register_buffer("exp_basis", exp_basis.float().reshape(-1, n_v, 3))
        self.register_buffer("opening_pairs", opening_pairs.long().reshape(-1, 2))
        self.groups = {k: v.long() for k, v in groups.items()}
        self.n_id, self.n_exp, self.n_pose = self.id_basis.shape[0], self.exp_basis.shape[0], 6

    def _apply(self, fn, *args, **kwargs):
        """Move the index groups with the module (.to(device)); they are not buffers so that they
        can stay a plain dict."""
        super()._apply(fn, *args, **kwargs)
        self.groups = {k: fn(v) for k, v in self.groups.items()}
        return self

    @property
    def n_vertices(self) -> int:
        return self.mean.shape[0]

    # -- geometry -------------------------------------------------------------------------------
    def shape(self, alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        """Unposed shape [B, V, 3] in model units."""
        out = self.mean + torch.einsum("bi,ivc->bvc", alpha, self.id_basis)
        return out + torch.einsum("be,evc->bvc", beta, self.exp_basis)

    def pose(self, shape: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Apply rotation, translation and the camera: model units -> crop pixels (x, y) and z."""
        rotated = shape @ euler_rotation(rho[:, :3]).transpose(1, 2)
        if self.kind == "landmark":
            offset = torch.cat([rho[:, 3:5], torch.zeros_like(rho[:, :1])], -1)
            return rho[:, 5, None, None].exp() * rotated + offset[:, None]
        cam = self.camera  # Deep3DFaceRecon: perspective camera at z = distance looking down -z
        p = rotated + rho[:, None, 3:6]
        depth = cam["distance"] - p[..., 2]
        s = self.crop_size / cam["image_size"]
        x = (cam["focal"] * p[..., 0] / depth + cam["center"]) * s
        y = (cam["image_size"] - 1 - (cam["focal"] * p[..., 1] / depth + cam["center"])) * s  # image y points down
        return torch.stack([x, y, depth], -1)

    def vertices(self, alpha: torch.Tensor, beta: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Posed vertices [B, V, 3]: x, y in crop pixels (x right, y down), z along the view axis."""
        return self.pose(self.shape(alpha, beta), rho)

    forward = vertices

    @staticmethod
    def project(verts: torch.Tensor) -> torch.Tensor:
        """Crop pixel coordinates [B, V, 2] of posed vertices (the camera is already applied)."""
        return verts[..., :2]

    def mouth_opening(self, verts: torch.Tensor) -> torch.Tensor:
        """Mean distance between facing upper/lower inner-lip vertices, [B], crop pixels."""
        a, b = self.opening_pairs[:, 0], self.opening_pairs[:, 1]
        return (verts[:, a] - verts[:, b]).norm(dim=-1).mean(-1)

    # -- persistence ----------------------------------------------------------------------------
    def to_checkpoint(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """(config, tensors) to embed this model in any checkpoint (e.g. group "face_model")."""
        config = {"format": FORMAT, "kind": self.kind, "crop_size": self.crop_size, "n_id": self.n_id,
                  "n_exp": self.n_exp, "n_pose": self.n_pose, "camera": self.camera, "extra": self.extra,
                  "fingerprint": self.fingerprint()}
        tensors = {"mean": self.mean, "id_basis": self.id_basis, "exp_basis": self.exp_basis,
                   "opening_pairs": self.opening_pairs}
        tensors.update({f"group.{k}": v for k, v in self.groups.items()})
        return config, {k: v.detach().cpu().clone() for k, v in tensors.items()}  # no shared storage

    @classmethod
    def from_checkpoint(cls, config: dict, tensors: dict[str, torch.Tensor]) -> "FaceModel":
        if config.get("format") != FORMAT:
            raise RealtalkError("not a realtalk face model (config format mismatch)")
        try:
            groups = {k[len("group."):]: v for k, v in tensors.items() if k.startswith("group.")}
            return cls(config["kind"], tensors["mean"], tensors["id_basis"], tensors["exp_basis"], groups,
                       tensors["opening_pairs"], config["crop_size"], config.get("camera"), config.get("extra"))
        except KeyError as e:
            raise RealtalkError(f"face model checkpoint lacks {e.args[0]!r}") from None

    def save(self, directory: str | os.PathLike) -> Path:
        config, tensors = self.to_checkpoint()
        return save_checkpoint(directory, config, {"face_model": tensors})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "FaceModel":
        """Load a face model directory, or the face model embedded in any realtalk checkpoint/dataset."""
        directory = Path(directory)
        if (directory / "face_model" / "config.json").is_file():  # a dataset directory
            directory = directory / "face_model"
        config, tensors = load_checkpoint(directory, required=("face_model",))
        config = config.get("face_model", config)  # model checkpoints nest the face model config
        return cls.from_checkpoint(config, tensors["face_model"])

    def fingerprint(self) -> str:
        """Short hash of the bases: coefficients are only meaningful with the basis they were fit with."""
        h = hashlib.sha1()
        for t in (self.mean, self.id_basis, self.exp_basis):
            h.update(t.detach().cpu().numpy().tobytes())
        h.update(f"{self.kind}{self.crop_size}".encode())
        return h.hexdigest()[:12]

    def extra_repr(self) -> str:
        return f"kind={self.kind}, V={self.n_vertices}, n_id={self.n_id}, n_exp={self.n_exp}, crop={self.crop_size}"
