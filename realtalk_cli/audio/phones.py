"""Phone posteriors from a CMU Sphinx acoustic model: what many speakers taught about speech sounds.

A person's own minute of speech cannot teach a mouth model that "ah" from a higher or foreign voice
is still "ah". An acoustic model trained on many speakers can. The en-us model that ships inside the
`pocketsphinx` wheel (CMU Sphinx, BSD licence) is one, with no download: a phonetically tied mixture
model (PTM) over 13 MFCC + deltas + double deltas, one 128-Gaussian codebook per phone per stream,
and mixture weights per senone (HMM state). We only read its files; pocketsphinx's decoder is not used.

Per 10 ms frame, each context-independent phone p scores max over its states s of
log p(x | s) = sum over streams of log sum_k w_sk N(x; mu_pk, var_pk); a softmax over phones gives
the posterior. Files read from the model directory (Sphinx formats):
  feat.params   front-end settings (-lowerf, -upperf, -nfilt, -lifter); the rest are Sphinx defaults
  means, variances   s3 Gaussian files: [phones, 3 streams, densities, 13]
  sendump       mixture weights, 8-bit negative logs, [3 streams, densities, senones]
  mdef          binary model definition: the phone names, and the CI senones (3 per phone, first)
Not reproduced: the front end's noise removal (-remove_noise); batch CMN is over the utterance.

`features(wav, n)` gives n rows at 50 Hz aligned like audio/features.py (row i: samples
[320 i, 320 (i + 1))): the mean posterior of the two 10 ms frames centred nearest that interval.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np
from scipy.fft import dct

from realtalk_cli.audio.features import HOP as FEATURE_HOP
from realtalk_cli.errors import RealtalkError

SAMPLE_RATE, HOP, WINDOW, NFFT = 16000, 160, 410, 512  # Sphinx defaults at 16 kHz: 100 frames/s, 25.6 ms
CHUNK, SCORE_CHUNK = 3000, 400  # frames per block of FFTs / of Gaussian scoring: memory stays bounded


def default_model_dir() -> Path:
    """The en-us model inside the installed pocketsphinx package."""
    try:
        import pocketsphinx
    except ImportError:
        raise RealtalkError("phone features need the pocketsphinx package (pip install pocketsphinx==5.1.1)") from None
    return Path(pocketsphinx.get_model_path()) / "en-us" / "en-us"


class SphinxPhoneModel:
    """Loads a Sphinx PTM model directory; `posteriors(wav)` -> [frames, phones] at 100 Hz."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = Path(directory) if directory else default_model_dir()
        try:
            params = self._params(self.dir / "feat.params")
            self.means, variances = (_read_gaussians(self.dir / name) for name in ("means", "variances"))
            self.phones, n_states, n_ci_senones = _read_mdef(self.dir / "mdef")
            weights = _read_sendump(self.dir / "sendump")  # [streams, densities, senones]
        except (OSError, ValueError, struct.error) as e:
            raise RealtalkError(f"cannot read the Sphinx acoustic model ({e})", self.dir) from None
        P, S, K, D = self.means.shape
        if len(self.phones) != P or n_ci_senones != P * n_states or weights.shape[:2] != (S, K):
            raise RealtalkError("inconsistent Sphinx acoustic model (phones, senones and codebooks disagree)", self.dir)
        self.n_states = n_states
        # CI senones come first, n_states per phone in order; weights are -log in units of 1/scale
        raw = weights[:, :, :n_ci_senones].astype(np.float64)
        scale = _weight_scale(weights)
        self.log_w = (-scale * raw).reshape(S, K, P, n_states).transpose(2, 3, 0, 1)  # [P, states, S, K]
        # log N(x; mu, var) = -x^2/2 . 1/var + x . mu/var + const: two matrix products per stream, [S, D, P K]
        var = np.maximum(variances, 1e-2)  # unused densities have zero variance
        self.prec = (1.0 / var).transpose(1, 3, 0, 2).reshape(S, D, P * K)
        self.lin = (self.means / var).transpose(1, 3, 0, 2).reshape(S, D, P * K)
        self.const = -0.5 * (self.means ** 2 / var + np.log(2 * np.pi * var)).sum(-1)  # [P, S, K]
        self.lowerf, self.upperf = float(params.get("lowerf", 130)), float(params.get("upperf", 6800))
        self.nfilt, self.lifter = int(params.get("nfilt", 25)), int(params.get("lifter", 22))
        self.n_cep = D
        self.filters = _sphinx_filterbank(self.nfilt, self.lowerf, self.upperf)

    @staticmethod
    def _params(path: Path) -> dict[str, str]:
        words = path.read_text().split()
        return {k.lstrip("-"): v for k, v in zip(words[::2], words[1::2])}

    def cepstra(self, wav: np.ndarray) -> np.ndarray:
        """[frames, 13] liftered MFCC, frame t from sample 160 t (as sphinx_fe computes them)."""
        x = np.asarray(wav, np.float64).reshape(-1) * 32768.0
        x = np.append(x[:1], x[1:] - 0.97 * x[:-1])
        n = 1 + max(0, (len(x) - WINDOW) // HOP) if len(x) else 0
        lift = 1 + (self.lifter / 2) * np.sin(np.pi * np.arange(self.n_cep) / self.lifter)
        window = np.hamming(WINDOW)
        out = np.zeros((n, self.n_cep))
        for t0 in range(0, n, CHUNK):
            t = np.arange(t0, min(n, t0 + CHUNK))
            frames = x[HOP * t[:, None] + np.arange(WINDOW)] * window
            power = np.abs(np.fft.rfft(frames, NFFT)) ** 2
            logmel = np.log(np.maximum(power @ self.filters.T, 1e-5))
            out[t] = dct(logmel, type=2, norm="ortho", axis=1)[:, : self.n_cep] * lift
        return out

    def streams(self, wav: np.ndarray) -> np.ndarray:
        """[frames, 3, 13]: cepstra after batch CMN, their deltas c[t+2] - c[t-2] and the deltas' deltas."""
        c = self.cepstra(wav)
        c = c - c.mean(0) if len(c) else c
        p = np.pad(c, ((3, 3), (0, 0)), mode="edge")
        d = p[4:] - p[:-4]  # for t = -1 .. n
        return np.stack([c, d[1:-1], d[2:] - d[:-2]], 1)

    def posteriors(self, wav: np.ndarray) -> np.ndarray:
        """[frames, phones]: softmax over phones of each phone's best state log-likelihood."""
        return self.score(self.streams(wav))

    def score(self, streams: np.ndarray) -> np.ndarray:
        """Phone posteriors [frames, phones] of feature streams [frames, 3, 13]."""
        P, S, K, _ = self.means.shape
        out = np.zeros((len(streams), P))
        for t0 in range(0, len(streams), SCORE_CHUNK):
            x = streams[t0:t0 + SCORE_CHUNK]
            dens = np.stack([(-0.5 * x[:, f] ** 2) @ self.prec[f] + x[:, f] @ self.lin[f] for f in range(S)], 1)
            dens = dens.reshape(len(x), S, P, K).transpose(0, 2, 1, 3) + self.const[None]  # [n, P, S, K] log N
            state = np.stack([_logsumexp(dens + self.log_w[None, :, j], -1).sum(-1) for j in range(self.n_states)], -1)
            score = state.max(-1)  # [n, P]: each phone's best state
            score = np.exp(score - score.max(1, keepdims=True))
            out[t0:t0 + len(x)] = score / score.sum(1, keepdims=True)
        return out

    def features(self, wav: np.ndarray, n: int | None = None) -> np.ndarray:
        """[n, phones] at 50 Hz (n defaults to ceil(len / 320)), aligned as audio/features.py."""
        wav = np.asarray(wav, np.float32).reshape(-1)
        n = math.ceil(len(wav) / FEATURE_HOP) if n is None else int(n)
        post = self.posteriors(wav)
        if len(post) == 0:
            post = np.full((1, len(self.phones)), 1.0 / len(self.phones))
        # 10 ms frame t is centred at sample 160 t + 205, 50 Hz row i at 320 i + 160: frames 2i - 1 and 2i
        first, second = np.clip(2 * np.arange(n) - 1, 0, len(post) - 1), np.clip(2 * np.arange(n), 0, len(post) - 1)
        return (0.5 * (post[first] + post[second])).astype(np.float32)


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis))


def _sphinx_filterbank(nfilt: int, lowerf: float, upperf: float) -> np.ndarray:
    """Triangular filters equally spaced on 2595 log10(1 + f / 700), unit area, [nfilt, NFFT/2 + 1]."""
    mel = lambda f: 2595.0 * np.log10(1 + np.asarray(f) / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(mel(lowerf), mel(upperf), nfilt + 2) / 2595.0) - 1)
    freqs = np.arange(NFFT // 2 + 1) * SAMPLE_RATE / NFFT
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    return tri * 2.0 / (hi - lo)


def _s3_header(data: bytes) -> int:
    """Offset after an s3 text header and its byte-order magic (little-endian files only)."""
    end = data.index(b"endhdr\n") + 7
    if struct.unpack("<I", data[end:end + 4])[0] != 0x11223344:
        raise ValueError("not a little-endian s3 file")
    return end + 4


def _read_gaussians(path: Path) -> np.ndarray:
    """s3 means/variances file -> [codebooks, streams, densities, veclen] (equal stream lengths)."""
    data = path.read_bytes()
    i = _s3_header(data)
    n_cb, n_feat, n_den = struct.unpack("<3i", data[i:i + 12])
    lens = struct.unpack(f"<{n_feat}i", data[i + 12:i + 12 + 4 * n_feat])
    if len(set(lens)) != 1:
        raise ValueError(f"{path.name}: streams of different lengths {lens}")
    i += 12 + 4 * n_feat + 4  # + the total count
    count = n_cb * n_feat * n_den * lens[0]
    return np.frombuffer(data[i:i + 4 * count], "<f4").astype(np.float64).reshape(n_cb, n_feat, n_den, lens[0])


def _read_sendump(path: Path) -> np.ndarray:
    """Sphinx sendump -> uint8 [streams, codewords, senones] (headed by length-prefixed strings)."""
    data = path.read_bytes()
    i, streams = 0, 0
    while (n := struct.unpack("<i", data[i:i + 4])[0]) != 0:
        text = data[i + 4:i + 4 + n].rstrip(b"\0").decode("latin1")
        if text.startswith("feature_count"):
            streams = int(text.split()[1])
        if text.startswith("cluster_count") and int(text.split()[1]) != 0:
            raise ValueError("clustered mixture weights are not supported")
        i += 4 + n
    n_cw, n_sen = struct.unpack("<2i", data[i + 4:i + 12])
    body = np.frombuffer(data[i + 12:i + 12 + streams * n_cw * n_sen], np.uint8)
    return body.reshape(streams, n_cw, n_sen)


def _weight_scale(weights: np.ndarray) -> float:
    """The factor k with mixture weights exp(-k v) summing to one per senone and stream (Sphinx stores
    -log w in log-base-1.0001 units shifted right by 10 bits: k is close to 0.1)."""
    v = weights[:, :, :: max(1, weights.shape[2] // 256)].astype(np.float64)  # a few hundred senones tell it
    ks = np.linspace(0.02, 0.5, 481)
    err = [abs(np.log(np.exp(-k * v).sum(1)).mean()) for k in ks]
    return float(ks[int(np.argmin(err))])


def _read_mdef(path: Path) -> tuple[list[str], int, int]:
    """Binary mdef -> (CI phone names, emitting states per phone, number of CI senones)."""
    data = path.read_bytes()
    if data[:4] != b"BMDF":
        raise ValueError("not a little-endian binary mdef")
    skip = struct.unpack("<i", data[8:12])[0]
    i = 12 + skip
    n_ci, _, n_states, n_ci_sen = struct.unpack("<4i", data[i:i + 16])
    i += 40
    names = []
    for _ in range(n_ci):
        j = data.index(b"\0", i)
        names.append(data[i:j].decode("latin1"))
        i = j + 1
    return names, n_states, n_ci_sen
