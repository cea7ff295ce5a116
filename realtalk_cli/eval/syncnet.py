"""SyncNet (Chung & Zisserman 2016) and LSE-D / LSE-C (Prajwal et al. 2020, Wav2Lip's evaluation).

The network is `syncnet_python`'s SyncNetModel (checkpoint `syncnet_v2.model`: `netcnnaud.0.weight`,
`netfcaud.0.weight`, `netcnnlip.0.weight`, `netfclip.3.bias`, ...). `realtalk eval --syncnet-weights PATH`.
Inputs as in syncnet_python: 5 consecutive 224x224 face crops, BGR in 0..255 (no normalisation),
against 13 MFCC x 20 steps (0.2 s of audio at 100 Hz, computed like python_speech_features on
int16-scaled samples).

LSE: for every 5-frame window, the distance between its video embedding and the audio embeddings at
offsets -15..15 frames; averaged over windows, the smallest mean distance is LSE-D (lower = better
sync) and median minus minimum is LSE-C (confidence, higher = better). The face crop here is ours
(the tracker's aligned crop), not syncnet_python's S3FD box, so numbers are comparable between runs of
this tool, and only roughly with published tables.
"""

from __future__ import annotations

import os
from collections import deque

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.fft import dct
from torch import Tensor, nn

from realtalk_cli.eval.weights import load_weights

INPUT_SIZE = 224
WINDOW = 5  # video frames per embedding
MFCC_PER_FRAME = 4  # 100 Hz MFCC against 25 fps video
VSHIFT = 15  # offsets searched, in frames, each side


def _block(conv: nn.Module, bn: nn.Module, pool: nn.Module | None = None) -> list[nn.Module]:
    return [conv, bn, nn.ReLU()] + ([pool] if pool is not None else [])


class SyncNet(nn.Module):
    def __init__(self, embedding: int = 1024):
        super().__init__()
        # Sequential indices must match syncnet_python (conv, bn, relu[, pool] per block)
        self.netcnnaud = nn.Sequential(
            *_block(nn.Conv2d(1, 64, 3, padding=1), nn.BatchNorm2d(64), nn.MaxPool2d(1, 1)),
            *_block(nn.Conv2d(64, 192, 3, padding=1), nn.BatchNorm2d(192), nn.MaxPool2d(3, (1, 2))),
            *_block(nn.Conv2d(192, 384, 3, padding=1), nn.BatchNorm2d(384)),
            *_block(nn.Conv2d(384, 256, 3, padding=1), nn.BatchNorm2d(256)),
            *_block(nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.MaxPool2d(3, 2)),
            *_block(nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512)),
        )
        self.netcnnlip = nn.Sequential(
            *_block(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), nn.BatchNorm3d(96), nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_block(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), nn.BatchNorm3d(256),
                    nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1))),
            *_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_block(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256), nn.MaxPool3d((1, 3, 3), (1, 2, 2))),
            *_block(nn.Conv3d(256, 512, (1, 6, 6)), nn.BatchNorm3d(512)),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding))

    def forward_aud(self, mfcc: Tensor) -> Tensor:
        """[B, 1, 13, 20] MFCC -> [B, D]."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: Tensor) -> Tensor:
        """[B, 3, 5, 224, 224] BGR 0..255 -> [B, D]."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SyncNet":
        return load_weights(cls(), path, "SyncNet")


def mfcc(audio: np.ndarray, sr: int = 16000) -> np.ndarray:
    """[N, 13] MFCC at 100 Hz with python_speech_features' defaults (syncnet_python's front end).

    25 ms rectangular frames every 10 ms (the last one zero-padded), pre-emphasis 0.97, 512-point
    power spectrum, 26 triangular mel filters, log, DCT-II (orthonormal), lifter 22, and the first
    coefficient replaced by the log frame energy. `audio` in [-1, 1] is scaled to int16 range first,
    as syncnet_python reads wav files as int16.
    """
    x = np.asarray(audio, np.float64) * 32768.0
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    flen, step, nfft = int(round(0.025 * sr)), int(round(0.01 * sr)), 512
    n = 1 if len(x) <= flen else 1 + int(np.ceil((len(x) - flen) / step))
    x = np.concatenate([x, np.zeros((n - 1) * step + flen - len(x))])
    frames = x[np.arange(flen)[None] + step * np.arange(n)[:, None]]
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    mel = np.linspace(0, 2595 * np.log10(1 + (sr / 2) / 700), 26 + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (mel / 2595) - 1)) / sr).astype(int)
    fbank = np.zeros((26, nfft // 2 + 1))
    for j in range(26):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        fbank[j, lo:mid] = (np.arange(lo, mid) - lo) / (mid - lo)
        fbank[j, mid:hi] = (hi - np.arange(mid, hi)) / (hi - mid)
    eps = np.finfo(float).eps
    feat = np.log(np.maximum(power @ fbank.T, eps))
    feat = dct(feat, type=2, axis=1, norm="ortho")[:, :13]
    feat *= 1 + 11 * np.sin(np.pi * np.arange(13) / 22)  # lifter L = 22: 1 + L/2 sin(pi n / L)
    feat[:, 0] = np.log(np.maximum(energy, eps))
    return feat


class LSEScorer:
    """Streams face crops (RGB uint8, any square size) of a video with its speech into SyncNet.

    Follows syncnet_python's `evaluate`: crops resized to 224x224 in BGR channel order (it reads frames
    with cv2.imread), 5-frame windows starting at every frame up to min(frames, audio frames) - 5, audio
    windows of 20 MFCC steps starting at 4 steps per frame. Memory: the last 5 crops and one batch.
    """

    def __init__(self, model: SyncNet, audio: np.ndarray, sr: int = 16000, batch_size: int = 20,
                 device: torch.device | str = "cpu"):
        self.model, self.batch_size, self.device = model, batch_size, torch.device(device)
        self.cc = torch.from_numpy(mfcc(audio, sr).T.astype(np.float32))  # [13, N]
        self.audio_frames = int(len(audio) // (sr / 25))  # whole video frames of audio
        self.recent: deque = deque(maxlen=WINDOW)
        self.pending: list[np.ndarray] = []
        self.video: list[Tensor] = []
        self.frames = 0

    def add(self, crop: np.ndarray) -> None:
        bgr = cv2.resize(crop, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)[..., ::-1]
        self.recent.append(bgr)
        self.frames += 1
        if len(self.recent) == WINDOW:
            self.pending.append(np.stack(self.recent))
            if len(self.pending) >= self.batch_size:
                self._flush()

    @torch.no_grad()
    def _flush(self) -> None:
        if self.pending:
            x = torch.from_numpy(np.stack(self.pending)).to(self.device).float().permute(0, 4, 1, 2, 3)  # [B, 3, 5, H, W]
            self.video.append(self.model.forward_lip(x).cpu())
            self.pending = []

    @torch.no_grad()
    def embeddings(self) -> tuple[Tensor, Tensor] | None:
        """(video, audio) embeddings [W, D] of the W windows; None when there are none."""
        self._flush()
        n = min(self.frames, self.audio_frames) - WINDOW
        if n < 1:
            return None
        video = torch.cat(self.video)[:n]
        span = 20
        starts = [i * MFCC_PER_FRAME for i in range(n)]
        audio = [self.model.forward_aud(torch.stack([self.cc[None, :, s : s + span] for s in starts[k : k + self.batch_size]]).to(self.device)).cpu()
                 for k in range(0, n, self.batch_size)]
        return video, torch.cat(audio)

    def result(self, vshift: int = VSHIFT) -> dict[str, float] | None:
        emb = self.embeddings()
        return None if emb is None else lse(*emb, vshift=vshift)


def lse(video_emb: Tensor, audio_emb: Tensor, vshift: int = VSHIFT) -> dict[str, float]:
    """LSE-D, LSE-C and the best audio offset (frames) as syncnet_python's `calc_pdist` computes them."""
    padded = F.pad(audio_emb, (0, 0, vshift, vshift))
    dists = torch.stack([F.pairwise_distance(video_emb[i : i + 1].expand(2 * vshift + 1, -1), padded[i : i + 2 * vshift + 1])
                         for i in range(len(video_emb))])  # [W, 2 vshift + 1]
    mean = dists.mean(0)
    best = int(mean.argmin())
    return {"lse_d": float(mean[best]), "lse_c": float(mean.median() - mean[best]), "offset": vshift - best}
