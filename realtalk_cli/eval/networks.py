"""The optional evaluation networks (FID, LPIPS, CSIM, SyncNet) and the batches of crop pairs they see."""

from __future__ import annotations

import numpy as np
import torch


def _tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float() / 255


class Networks:
    """The optional networks, loaded from their weights; `None` where no weights were given."""

    def __init__(self, options, device: torch.device, reconstruction: bool):
        """`options`: anything with fid_weights, lpips_weights, arcface_weights, syncnet_weights (EvalOptions)."""
        self.device = device
        self.fid = self.lpips = self.arcface = self.syncnet = None
        if reconstruction and options.fid_weights:
            from realtalk_cli.eval.inception import FIDInceptionV3

            self.fid = FIDInceptionV3.from_file(options.fid_weights).to(device)
        if reconstruction and options.lpips_weights:
            from realtalk_cli.eval.lpips import LPIPS

            self.lpips = LPIPS.from_files(options.lpips_weights).to(device)
        if reconstruction and options.arcface_weights:
            from realtalk_cli.eval.arcface import IResNet

            self.arcface = IResNet.from_file(options.arcface_weights).to(device)
        if options.syncnet_weights:
            from realtalk_cli.eval.syncnet import SyncNet

            self.syncnet = SyncNet.from_file(options.syncnet_weights).to(device)


class PairBatcher:
    """Crop pairs (ours, source) -> LPIPS per frame, InceptionV3 features, CSIM per frame, in batches."""

    def __init__(self, nets: Networks, batch_size: int):
        self.nets, self.batch_size = nets, batch_size
        self.pending: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]] = []
        self.lpips: dict[int, float] = {}
        self.csim: dict[int, float] = {}
        self.feats_ours: list[np.ndarray] = []
        self.feats_source: list[np.ndarray] = []

    def add(self, i: int, ours: np.ndarray, source: np.ndarray, faces: tuple | None) -> None:
        if self.nets.fid is None and self.nets.lpips is None and self.nets.arcface is None:
            return
        self.pending.append((i, ours, source, *(faces or (None, None))))
        if len(self.pending) >= self.batch_size:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if not self.pending:
            return
        idx, ours, source, face_o, face_s = zip(*self.pending)
        self.pending = []
        dev = self.nets.device
        if self.nets.lpips is not None or self.nets.fid is not None:
            a, b = _tensor(list(ours), dev), _tensor(list(source), dev)
            if self.nets.lpips is not None:
                self.lpips.update(zip(idx, self.nets.lpips(a, b).cpu().tolist()))
            if self.nets.fid is not None:
                self.feats_ours.append(self.nets.fid(a).cpu().numpy())
                self.feats_source.append(self.nets.fid(b).cpu().numpy())
        have = [k for k, f in enumerate(face_o) if f is not None]
        if self.nets.arcface is not None and have:
            from realtalk_cli.eval.arcface import cosine_similarity

            eo = self.nets.arcface(_tensor([face_o[k] for k in have], dev))
            es = self.nets.arcface(_tensor([face_s[k] for k in have], dev))
            self.csim.update(zip([idx[k] for k in have], cosine_similarity(eo, es).cpu().tolist()))
