"""Speech probability per video frame from Silero VAD, and a smooth lip gate made from it.

Why. The energy gate (inference/a2e.py `voice_activity`) cannot tell a breath, a cough or room noise
from a quiet word; a trained voice-activity detector can. Silero VAD (MIT licence) ships its models
inside the `silero-vad` wheel, so nothing is downloaded.

Model. The TorchScript file `silero_vad/data/silero_vad.jit` of the installed package, run with torch
(a core dependency; onnxruntime is only an extra). The file is found without importing `silero_vad`:
that import sets torch's global thread count to 1 for the whole process. Call protocol (silero-vad
6.x, as its own `get_speech_timestamps` uses it): `reset_states()`, then `model(chunk, 16000)` for
consecutive 512-sample chunks (32 ms), each giving P(speech) as a [1, 1] tensor; the model carries its
recurrent state and the previous chunk's last 64 samples (context) from call to call itself. The last
chunk is zero-padded. That state lives in the one shared model, so calls take a lock.

Frames. Chunk k speaks for samples [512 k, 512 (k + 1)); frame i is the audio of
[round(i 16000 / fps), round((i + 1) 16000 / fps)), as `frame_rms` counts it. A frame's probability is
the mean over its samples of their chunk's probability (the share of the frame that is speech); samples
past the end of the audio count as 0, so frames past the end are 0.

Gate. `vad_weight` turns probabilities into a lip weight (1 speech, 0 rest): two-threshold hysteresis,
short pauses bridged, blips dropped, speech started earlier (the lips move before the sound), then a
raised-cosine ramp outside the speech so the lips never snap; speech frames themselves stay exactly 1.
Silero rises within a chunk or two of an onset but holds P(speech) high for 0.1-0.3 s after speech
ends (through the breath noise that follows, too), so it finds long pauses and loud non-speech (noise)
rather than the short pauses between phrases: on German_20s its weight is 0 only in the first 0.16 s
(and dips to 0.5 once), where the energy gate rests 12% of the frames. Taken with the energy gate (the
lower of the two weights) it vetoes loud non-speech that energy alone would animate.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt, label

from realtalk_cli.audio.features import SAMPLE_RATE
from realtalk_cli.errors import RealtalkError

CHUNK = 512  # samples per Silero step at 16 kHz (32 ms)
MODEL_FILE = "silero_vad.jit"
INSTALL_HINT = "pip install silero-vad==6.2.3"

_lock = threading.Lock()  # the model's recurrent state is shared: one call at a time
_model: torch.jit.ScriptModule | None = None


def model_path() -> Path:
    """The TorchScript model inside the installed silero-vad package (the package is not imported)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RealtalkError(f"voice activity detection needs the silero-vad package ({INSTALL_HINT})")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / MODEL_FILE


def load_vad_model(path: str | os.PathLike | None = None) -> torch.jit.ScriptModule:
    """Load a Silero VAD TorchScript file and check it answers one silent chunk with a probability."""
    path = Path(path) if path is not None else model_path()
    if not path.is_file():
        raise RealtalkError(f"Silero VAD model file is missing ({INSTALL_HINT} to reinstall it)", path)
    try:
        with warnings.catch_warnings():  # torch 2.13 marks TorchScript deprecated; it still loads this file
            warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
            model = torch.jit.load(str(path), map_location="cpu").eval()
        with torch.inference_mode():
            model.reset_states()
            p = model(torch.zeros(1, CHUNK), SAMPLE_RATE)
        ok = p.numel() == 1 and 0.0 <= float(p) <= 1.0
    except Exception as e:  # a third-party file: any failure to load or run it means the same to the user
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise RealtalkError(f"cannot load the Silero VAD model ({reason})", path) from None
    if not ok:
        raise RealtalkError("not a Silero VAD model (it does not give one speech probability per chunk)", path)
    return model


def _shared_model() -> torch.jit.ScriptModule:
    """The packaged model, loaded once per process (failures are not cached: the next call retries)."""
    global _model
    with _lock:
        if _model is None:
            _model = load_vad_model()
        return _model


def vad_unavailable() -> str | None:
    """None when the packaged model loads; otherwise why not, in one line (fall back to the energy gate)."""
    try:
        _shared_model()
    except RealtalkError as e:
        return str(e)
    return None


def chunk_probabilities(wav: np.ndarray) -> np.ndarray:
    """P(speech) [ceil(len / 512)] of consecutive 32 ms chunks of 16 kHz mono audio, from a fresh state."""
    x = np.asarray(wav, np.float32)
    if x.ndim != 1:
        raise ValueError(f"expected mono audio [samples], got shape {x.shape}")
    n_chunks = -(-len(x) // CHUNK)
    out = np.zeros(n_chunks, np.float32)
    if n_chunks == 0:
        return out
    padded = np.zeros(n_chunks * CHUNK, np.float32)
    padded[: len(x)] = x
    chunks = torch.from_numpy(padded).view(n_chunks, 1, CHUNK)
    model = _shared_model()
    with _lock, torch.inference_mode():
        model.reset_states()
        for k in range(n_chunks):
            out[k] = float(model(chunks[k], SAMPLE_RATE))
    return out


def frames_from_chunks(chunk_p: np.ndarray, n_samples: int, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """Chunk probabilities -> per-frame [n_frames]: the mean over each frame's samples (0 past the audio)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    chunk_p = np.asarray(chunk_p, np.float64)
    # cumulative "speech samples" at chunk edges; the zero padding of the last chunk is not audio
    edges = np.minimum(np.arange(len(chunk_p) + 1) * CHUNK, n_samples)
    area = np.concatenate([[0.0], np.cumsum(chunk_p * np.diff(edges))])
    bounds = np.round(np.arange(n_frames + 1) * SAMPLE_RATE / fps)
    cum = np.interp(bounds, edges, area)  # flat past the last edge: silence
    return np.clip(np.diff(cum) / np.diff(bounds), 0, 1).astype(np.float32)


def speech_probability(wav: np.ndarray, n_frames: int, fps: float = 25.0) -> np.ndarray:
    """P(speech) [n_frames] float32 of frame i's audio [i / fps, (i + 1) / fps) (16 kHz mono in)."""
    n_frames = int(n_frames)
    if n_frames <= 0:
        return np.zeros(0, np.float32)
    wav = np.asarray(wav, np.float32)
    return frames_from_chunks(chunk_probabilities(wav), len(wav), n_frames, fps)


@dataclass(frozen=True)
class VadGate:
    """How speech probabilities become a lip weight; times in seconds so any fps gets the same gate."""

    threshold: float = 0.5  # speech where P(speech) reaches this (Silero's own default)
    release: float = 0.35  # ...and on either side while it stays above this: a word's weak ending doesn't flicker
    max_gap_s: float = 0.2  # shorter pauses inside speech stay speech: the mouth doesn't rest between words
    min_speech_s: float = 0.1  # shorter speech is dropped: a click or a cough's onset doesn't twitch the lips
    lead_s: float = 0.08  # speech starts this much earlier: the lips move before the sound (and Silero rises late)
    lag_s: float = 0.0  # none after: Silero already stays high 0.1-0.3 s past the sound (German_20s)
    ramp_s: float = 0.12  # raised cosine from 1 to 0 over this, outside speech: the lips never snap (~3 frames)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of True: (label per frame, 0 outside; length per label; touches an end, per label)."""
    lab, n = label(mask)
    lengths = np.bincount(lab, minlength=n + 1)
    at_end = np.zeros(n + 1, bool)
    at_end[[lab[0], lab[-1]]] = True
    return lab, lengths, at_end


def speech_mask(prob: np.ndarray, fps: float = 25.0, gate: VadGate | None = None) -> np.ndarray:
    """Boolean [n] speech frames: hysteresis, pauses bridged, blips dropped (before widening)."""
    gate = gate or VadGate()
    p = np.asarray(prob, np.float64)
    if len(p) == 0:
        return np.zeros(0, bool)
    # hysteresis: a run above `release` is speech when it reaches `threshold` somewhere
    lab, lengths, _ = _runs(p >= gate.release)
    keep = np.zeros(len(lengths), bool)
    keep[lab[p >= gate.threshold]] = True
    keep[0] = False
    speech = keep[lab]
    # pauses between two stretches of speech (not the leading or trailing silence)
    lab, lengths, at_end = _runs(~speech)
    bridge = (lengths < gate.max_gap_s * fps) & ~at_end
    bridge[0] = False
    speech |= bridge[lab]
    lab, lengths, _ = _runs(speech)
    short = lengths < gate.min_speech_s * fps
    short[0] = False
    return speech & ~short[lab]


def vad_weight(prob: np.ndarray, fps: float = 25.0, gate: VadGate | None = None) -> np.ndarray:
    """Lip weight [n] float32 in [0, 1] (1 speech, 0 rest) from per-frame speech probabilities."""
    gate = gate or VadGate()
    speech = speech_mask(prob, fps, gate)
    if not speech.any():
        return np.zeros(len(speech), np.float32)
    widened = speech.copy()
    for k in range(1, int(round(gate.lead_s * fps)) + 1):
        widened[:-k] |= speech[k:]
    for k in range(1, int(round(gate.lag_s * fps)) + 1):
        widened[k:] |= speech[:-k]
    ramp = int(round(gate.ramp_s * fps))
    d = distance_transform_edt(~widened)  # frames to the nearest speech frame
    w = np.where(d <= ramp, 0.5 * (1 + np.cos(np.pi * d / (ramp + 1))), 0.0)
    return w.astype(np.float32)
