"""Audio features -> expression coefficients for any number of frames, with the a2e transformer.

Windows. The network sees T frames (2T audio features) at a time. Windows start every H = T/2
frames; the last one is moved back to end exactly at the last frame, and audio shorter than one
window is zero-padded with its padding masked out inside the network.

Blending (no seam). Each window's predictions are weighted by a Hann window
w(t) = sin^2(pi (t + 0.5) / T), t = 0..T-1, and the overlapping predictions are averaged with these
weights. With 50% overlap the weights of two neighbouring windows sum to one, so inside the sequence
this is a pure cross-fade: a window's weight at its own border frame is sin^2(pi / 2T) (1% for T=16),
so where two windows disagree by d the output steps by at most ~0.01 d at a border instead of d.
Frames covered by a single window (the first and last H of the sequence) take that window's output.

Frame rate. The network only knows its own 25 Hz grid (two 50 Hz features per frame, audio/features.py:
frame k is the face at time k / 25 s, paired with the audio of [k / 25, (k + 1) / 25)). Output at any
other rate is made by running the network on that grid and interpolating each coefficient linearly
to the output frame times i / fps (`predict_at_times`). We resample the expressions, not the features:
the transformer's windows, positional code and temporal attention were learned at 25 Hz, so features
fed at another rate would play the speech faster or slower to it, whereas expressions are smooth
per-frame quantities that interpolate well; the network's cost also stays the same at any fps.

Silence. The network may open the mouth on breaths or noise between words: it has seen little
silence. `voice_activity` weighs every frame from 0 (silent) to 1 (speech) by its audio energy,
against a threshold set below the recording's own speech level (so it follows the recording's gain),
and `predict_at_times` blends silent frames toward the speaker's rest expression: the median tracked
expression over the source video's own silent frames (`rest_expression`), so the lips rest as the
source's do.

History. The N historical expressions are drawn once per call, at random (seeded) from the valid
tracked expressions of the source video, and shared by every window.

Streaming latency. Audio arriving in chunks can be dubbed in blocks of H frames: frames
[kH, kH + H) are final once the window starting at kH has run, which needs audio up to the end of
frame kH + T - 1. The first frame of a block therefore waits T frames of audio:
T / 25 fps = 640 ms for the paper's T = 16, plus the audio front end's look-ahead (mel: its 40 ms
window reaches 10 ms past the hop it describes) and one window of compute (25-42 ms for the paper
config on one shared core of our CPU, see docs/experiments/a2e.md): about 0.68 s in all. HuBERT features
need more look-ahead (its context); a smaller T trades accuracy for latency.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from scipy.ndimage import maximum_filter1d

from realtalk_cli.audio.features import SAMPLE_RATE
from realtalk_cli.checkpoint import build_from_config, config_field, load_checkpoint, load_weights, resolve_run
from realtalk_cli.errors import RealtalkError
from realtalk_cli.eval.metrics import frame_rms
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear, A2ETransformer, build_a2e

A2E_FPS = 25.0  # the a2e's frame grid (FEATURES_PER_FRAME features per frame)


def a2e_frames(n_samples: int) -> int:
    """25 Hz frames that cover `n_samples` of 16 kHz audio (at least one)."""
    return max(1, math.ceil(n_samples * A2E_FPS / SAMPLE_RATE))


def resample_frames(values: np.ndarray, times: np.ndarray, rate: float = A2E_FPS) -> np.ndarray:
    """Linear interpolation of a sequence [n, C] sampled at k / rate seconds to `times` [m] (seconds);
    times outside the sequence take its first or last value."""
    values = np.asarray(values)
    u = np.clip(np.asarray(times, np.float64) * rate, 0, len(values) - 1)
    i0 = np.minimum(np.floor(u).astype(int), len(values) - 1)
    i1 = np.minimum(i0 + 1, len(values) - 1)
    w = (u - i0)[:, None]
    return ((1 - w) * values[i0] + w * values[i1]).astype(values.dtype)


@dataclass
class SilenceGate:
    below_level_db: float = 25.0  # silent: quieter than the speech level minus this (breaths are ~25-35 dB down)
    ramp_db: float = 6.0  # from silent to speech over this many dB above the threshold
    level_percentile: float = 95.0  # a recording's speech level: this percentile of its frame levels (as eval's)
    hold_frames: int = 1  # speech widened by this many frames each side: lips move just before and after sound
    min_silent_frames: int = 5  # a source with fewer silent frames gives no rest expression (and no gate)


def frame_db(wav: np.ndarray, n_frames: int, fps: float = A2E_FPS) -> np.ndarray:
    """Level in dB of each frame's audio [i / fps, (i + 1) / fps); past the end counts as silence."""
    return 20 * np.log10(frame_rms(wav, n_frames, SAMPLE_RATE, fps) + 1e-5)


def voice_activity(db: np.ndarray, gate: SilenceGate) -> np.ndarray:
    """Per-frame weight in [0, 1] (0 silent, 1 speech) from frame energies of one recording."""
    threshold = np.percentile(db, gate.level_percentile) - gate.below_level_db
    w = np.clip((db - threshold) / gate.ramp_db, 0, 1)
    if gate.hold_frames:
        w = maximum_filter1d(w, 2 * gate.hold_frames + 1, mode="nearest")
    return w


def rest_expression(beta: np.ndarray, found: np.ndarray, audio: np.ndarray, fps: float,
                    gate: SilenceGate) -> np.ndarray | None:
    """The speaker's face in silence: median tracked expression over the source frames (at `fps`)
    whose own audio is silent; None when the source has too few."""
    silent = found & (voice_activity(frame_db(audio, len(beta), fps), gate) == 0)
    return np.median(beta[silent], 0) if silent.sum() >= gate.min_silent_frames else None


def normalize_utterance(features: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each feature dimension z-scored over the whole utterance (or over `reference`, a part of it):
    removes the level, the microphone and some of the voice's timbre (log-mel: cepstral mean and
    variance normalisation)."""
    f = np.asarray(features, np.float32)
    ref = f if reference is None else np.asarray(reference, np.float32)
    return (f - ref.mean(0)) / np.maximum(ref.std(0), 1e-3)


def window_starts(n_frames: int, win: int, hop: int) -> list[int]:
    """First frames of the windows covering [0, n_frames); the last window ends at n_frames."""
    if n_frames <= win:
        return [0]
    starts = list(range(0, n_frames - win + 1, hop))
    if starts[-1] != n_frames - win:
        starts.append(n_frames - win)
    return starts


def window_weights(win: int) -> np.ndarray:
    t = np.arange(win)
    return np.sin(math.pi * (t + 0.5) / win) ** 2


def blend_windows(preds: np.ndarray, starts: list[int], n_frames: int) -> np.ndarray:
    """Weighted overlap-add of per-window predictions [K, T, C] into one sequence [n_frames, C]."""
    K, win, C = preds.shape
    w = window_weights(win)
    length = max(n_frames, win)  # audio shorter than a window: one padded window
    out, norm = np.zeros((length, C)), np.zeros(length)
    for k, s in enumerate(starts):
        out[s : s + win] += w[:, None] * preds[k]
        norm[s : s + win] += w
    return (out / norm[:, None])[:n_frames]


def history_indices(valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """N frame indices drawn at random among the valid ones (without replacement when possible)."""
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        raise RealtalkError("no valid tracked frame to take historical expressions from")
    return np.sort(rng.choice(idx, size=n, replace=len(idx) < n))


def sample_history(betas: np.ndarray, valid: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """N expressions of the speaker [n, n_exp], drawn from the valid frames of the source video."""
    return betas[history_indices(valid, n, rng)]


@torch.no_grad()
def predict_expressions(
    model: A2ETransformer,
    features: np.ndarray | torch.Tensor,  # [2 * n_frames, audio_dim]: features 2t, 2t+1 belong to frame t
    shape: np.ndarray | torch.Tensor,  # [n_id] alpha of the source video's first frame
    history: np.ndarray | torch.Tensor,  # [N, n_exp]
    n_frames: int | None = None,  # default len(features) // 2; missing features are padded by repeating the last
    hop: int | None = None,  # default T // 2 (the blending above assumes 50% overlap for a pure cross-fade)
    batch_size: int = 64,
) -> np.ndarray:  # [n_frames, n_exp]
    cfg = model.cfg
    T = cfg.n_frames
    device = next(model.parameters()).device
    if cfg.utterance_norm:
        features = normalize_utterance(features)
    feats = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    n = len(feats) // 2 if n_frames is None else int(n_frames)
    if n <= 0 or len(feats) == 0:
        raise RealtalkError("no audio features to predict expressions from")
    need = 2 * max(n, T)
    if len(feats) < need:  # tail padding; frames beyond n (short audio) are masked below
        feats = torch.cat([feats, feats[-1:].expand(need - len(feats), -1)])
    feats = feats[:need]
    starts = window_starts(n, T, hop or max(1, T // 2))

    shape_t = torch.as_tensor(np.asarray(shape), dtype=torch.float32, device=device)[None]
    hist_t = torch.as_tensor(np.asarray(history), dtype=torch.float32, device=device)[None]
    frame_mask = (torch.arange(T) < n)[None].to(device)
    was_training = model.training
    model.eval()
    preds = []
    for i in range(0, len(starts), batch_size):
        chunk = starts[i : i + batch_size]
        audio = torch.stack([feats[2 * s : 2 * (s + T)] for s in chunk]).to(device)
        B = len(chunk)
        preds.append(model(audio, shape_t.expand(B, -1), hist_t.expand(B, -1, -1), frame_mask.expand(B, -1)).float().cpu())
    model.train(was_training)
    return blend_windows(torch.cat(preds).numpy(), starts, n)


def predict_at_times(
    model: A2ETransformer,
    features: np.ndarray | torch.Tensor,  # [2 * n, audio_dim] on the 25 Hz grid (see predict_expressions)
    shape: np.ndarray | torch.Tensor,
    history: np.ndarray | torch.Tensor,
    times: np.ndarray,  # [m] seconds from the start of the audio, e.g. np.arange(n_out) / fps
    speech: np.ndarray | None = None,  # with rest: the 16 kHz audio the features came from
    rest: np.ndarray | None = None,  # [n_exp] expression silent frames are blended toward (rest_expression)
    gate: SilenceGate | None = None,
    **kw,
) -> np.ndarray:  # [m, n_exp]
    """Expressions at any output times: the network on its 25 Hz grid, silent frames blended toward
    the rest expression, then linear interpolation to `times`."""
    return rest_and_resample(predict_expressions(model, features, shape, history, **kw), times, speech, rest, gate)


def speech_weight(speech: np.ndarray, n_frames: int, gate: SilenceGate | None = None) -> np.ndarray:
    """Per-frame lip weight [n_frames] (0 rest, 1 speech) of 16 kHz speech on the 25 Hz grid: the lower of
    the energy gate and Silero VAD's (audio/vad.py), so loud non-speech (noise, coughs) rests the lips
    too; the energy gate alone when the VAD model is not installed."""
    from realtalk_cli.audio.vad import speech_probability, vad_unavailable, vad_weight

    w = voice_activity(frame_db(speech, n_frames), gate or SilenceGate())
    if vad_unavailable() is None:
        w = np.minimum(w, vad_weight(speech_probability(speech, n_frames, A2E_FPS), A2E_FPS))
    return w


def rest_and_resample(beta: np.ndarray, times: np.ndarray, speech: np.ndarray | None = None,
                      rest: np.ndarray | None = None, gate: SilenceGate | None = None) -> np.ndarray:
    """25 Hz expressions [n, n_exp] -> at `times`, silent frames (of `speech`) blended toward `rest` first."""
    if rest is not None and speech is not None:
        w = speech_weight(speech, len(beta), gate)[:, None]
        beta = np.where(w < 1, rest + w * (beta - rest), beta)  # speech frames exactly as predicted
    return resample_frames(beta, times)


def load_a2e(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[A2ETransformer | A2ELinear, dict]:
    """Load an a2e checkpoint directory (or a run directory: its newest checkpoint).

    Returns (model in eval mode, checkpoint config); the config holds "audio" (front-end settings)
    and "face_model" (use FaceModel.load(path) for the basis the model was trained with).
    """
    path = resolve_run(path)
    config, tensors = load_checkpoint(path, required=("a2e",))
    if config.get("stage") != "a2e":
        raise RealtalkError(f"not an a2e checkpoint (stage {config.get('stage')!r})", path)
    model = build_from_config(lambda d: build_a2e(A2EConfig.from_dict(d)), config, "model", path)
    load_weights(model, tensors["a2e"], path, "a2e")
    for key in ("audio", "face_model"):  # what dubbing reads from this config next
        config_field(config, key, path)
    return model.to(device).eval(), config
