"""The a2e over audio that arrives as it is spoken: the offline windows, computed as soon as they can be.

Offline (inference/a2e.py: predict_expressions) windows of T frames start every H = T/2 frames and are blended
with Hann weights. Here window s runs as soon as the audio reaches the end of its last frame (plus one
frame for the mel window's overhang); frames [s, s + H) are then final, because no later window
touches them. So the look-ahead is T + 1 frames (0.68 s for the paper's T = 16 at 25 fps) and every
frame equals the offline one, except the last < H frames: offline ends on a window moved back to the
last frame, which a stream cannot know in advance. The offline dub therefore computes its expressions
with this class too (`expressions_25hz`), and a whole file streamed gives the offline dub frame for frame.

A model trained with per-utterance feature normalisation (A2EConfig.utterance_norm) needs the whole
utterance's statistics: offline it gets them; live, the statistics of the speech heard so far.
"""

from __future__ import annotations

import numpy as np
import torch

from realtalk_cli.audio.features import FEATURES_PER_FRAME, SAMPLE_RATE
from realtalk_cli.inference.a2e import a2e_frames, predict_expressions, window_weights

SAMPLES_PER_FRAME = SAMPLE_RATE // 25


class StreamingA2E:
    def __init__(self, model, frontend, alpha: np.ndarray, history: np.ndarray):
        self.model, self.frontend = model, frontend
        self.T = model.cfg.n_frames
        self.H = max(1, self.T // 2)
        self.w = window_weights(self.T)
        dev = next(model.parameters()).device
        self._alpha = torch.as_tensor(np.asarray(alpha, np.float32), device=dev)[None]
        self._history = torch.as_tensor(np.asarray(history, np.float32), device=dev)[None]
        self._mask = torch.ones(1, self.T, dtype=torch.bool, device=dev)
        # audio buffer: starts one frame before frame 0 (zeros), as the offline front end pads
        self._buf = np.zeros(SAMPLES_PER_FRAME, np.float32)
        self._base = -SAMPLES_PER_FRAME  # absolute sample index of _buf[0]
        self._next = 0                   # start frame of the next window
        self._prev: np.ndarray | None = None  # the previous window's prediction [T, n_exp]
        self.emitted = 0                 # frames handed out so far
        self._stats: np.ndarray | None = None  # features seen so far (utterance_norm models only)

    @property
    def lookahead_frames(self) -> int:
        return self.T + 1

    def _window(self, s: int) -> np.ndarray:
        a = SAMPLES_PER_FRAME * (s - 1) - self._base
        piece = self._buf[a:a + SAMPLES_PER_FRAME * (self.T + 2)]
        feats = self.frontend(piece, n=FEATURES_PER_FRAME * (self.T + 2))[2:2 + FEATURES_PER_FRAME * self.T]
        if self.model.cfg.utterance_norm:  # the statistics of the speech so far (its first half window new)
            fresh = feats if s == 0 else feats[-FEATURES_PER_FRAME * self.H:]
            self._stats = fresh if self._stats is None else np.concatenate([self._stats, fresh])
            feats = (feats - self._stats.mean(0)) / np.maximum(self._stats.std(0), 1e-3)
        audio = torch.as_tensor(feats, device=self._alpha.device)[None]
        with torch.no_grad():
            return self.model(audio, self._alpha, self._history, self._mask).float().cpu().numpy()[0]

    def _blend(self, pred: np.ndarray, frames: int) -> np.ndarray:
        """The first `frames` frames of window `pred` blended with the previous window's second half."""
        if self._prev is None:
            return pred[:frames]
        w0, w1 = self.w[self.H:self.H + frames, None], self.w[:frames, None]
        return (w0 * self._prev[self.H:self.H + frames] + w1 * pred[:frames]) / (w0 + w1)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples; returns the expressions [k, n_exp] that became final (k may be 0)."""
        self._buf = np.concatenate([self._buf, np.asarray(samples, np.float32).reshape(-1)])
        out = []
        while self._base + len(self._buf) >= SAMPLES_PER_FRAME * (self._next + self.T + 1):
            pred = self._window(self._next)
            out.append(self._blend(pred, self.H))
            self._prev, self._next = pred, self._next + self.H
            self._trim()
        return self._emit(out)

    def finish(self, n_frames: int) -> np.ndarray:
        """The rest, once the audio has ended: `n_frames` frames in all (the audio is zero-padded)."""
        out, done = [], self.emitted
        while done < n_frames:
            self._buf = np.concatenate([self._buf, np.zeros(SAMPLES_PER_FRAME * (self.T + 2), np.float32)])
            pred = self._window(self._next)
            left = n_frames - done
            part = self._blend(pred, min(left, self.H))
            if left <= self.T:  # the last window: its second half is final too
                part = np.concatenate([part, pred[self.H:left]])
            out.append(part)
            done += len(part)
            self._prev, self._next = pred, self._next + self.H
        return self._emit(out)

    def _trim(self) -> None:
        keep_from = SAMPLES_PER_FRAME * (self._next - 1) - self._base  # the next window's first sample
        if keep_from > 0:
            self._buf, self._base = self._buf[keep_from:], self._base + keep_from

    def _emit(self, parts: list[np.ndarray]) -> np.ndarray:
        if not parts:
            return np.zeros((0, self.model.cfg.n_exp), np.float32)
        out = np.concatenate(parts).astype(np.float32)
        self.emitted += len(out)
        return out


def expressions_25hz(model, frontend, alpha: np.ndarray, history: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """The a2e over a whole speech on its 25 Hz grid, computed as a live stream computes it, so that
    offline and live dubs agree; with per-utterance normalisation, offline takes the whole utterance."""
    n = a2e_frames(len(speech))
    if model.cfg.utterance_norm:
        return predict_expressions(model, frontend(speech, n=FEATURES_PER_FRAME * n), alpha, history, n_frames=n)
    stream = StreamingA2E(model, frontend, alpha, history)
    return np.concatenate([stream.push(speech), stream.finish(n)])
