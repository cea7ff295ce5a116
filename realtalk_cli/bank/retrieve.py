"""Which bank frame lends its mouth to each output frame: nearest mouths, chosen as a smooth path.

Per output frame, the candidates are the bank frames whose lips (the face model's inner and outer lip
rings, without head pose) are closest to the predicted lips, moving the same way, and whose head pose
is close to the shown frame's (the warp bends less). The motion counts because lips of one shape look
different opening and closing (the teeth, the stretch of the lips): beside the shape, the lips' change
since the frame before, per 1/25 s, with weight `motion`. Measured on the held-out parts of
German_20s / cnn2 / KatieHill (docs/experiments/bank.md), it raised mask PSNR driven by the tracked
expressions by +0.26 / +0.13 / +0.31 dB and German's mouth sharpness from 0.89 to 0.93 of the source's.
A Viterbi pass over the whole output then picks one candidate per frame, trading the match cost
against a switching cost: playing the bank on from the previous choice (its successor in the video)
is free, holding it costs a little, jumping elsewhere costs `switch_cost`. The mouth therefore keeps
one source for stretches of frames instead of flickering between sources, and its texture moves as
the person's really did.

At a jump, the previous source can be faded out over `crossfade` frames (both are warped to the
same target geometry, so only the texture blends). Off by default: measured on German_20s held out,
a 2-frame fade averaged two sets of teeth into a blur (mouth sharpness 0.74 of the source's, teeth
0.12) while a hard cut with a higher switching cost kept them (0.89, 0.40) at flicker 1.06.

Planning goes block by block (8 frames, each block continuing from the last frame of the one before),
so a live stream, which cannot see the future, chooses exactly what an offline dub chooses. On the
same held-out frames this matched the Viterbi over the whole output (mask PSNR 30.61 vs 30.58 dB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from realtalk_cli.face.model import FaceModel


@dataclass
class RetrievalConfig:
    candidates: int = 12      # nearest bank frames per output frame
    pose_scale: float = 0.12  # radians of head-angle difference that cost as much as one typical lip mismatch
    switch_cost: float = 3.0  # in units of a typical lip mismatch
    hold_cost: float = 0.4    # showing the same bank frame again
    motion: float = 1.0       # weight of the lips' change per 1/25 s beside their shape (0: shape only)
    crossfade: int = 0        # frames over which a replaced source fades out
    block: int = 8            # plan this many frames at a time, each continuing the last (0: the whole output at once)
    lookahead: int = 0        # with blocks: frames past the block that its choice may look at


def lip_descriptors(face: FaceModel, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """[B, D] lip shape without pose (model units): what retrieval compares."""
    idx = torch.cat([face.groups["lips_outer"], face.groups["lips_inner"]]).cpu()
    b = torch.as_tensor(np.asarray(beta, np.float32))
    with torch.no_grad():
        shape = face.shape(torch.as_tensor(np.asarray(alpha, np.float32))[None].expand(len(b), -1), b)[:, idx]
    shape = shape - shape.mean(1, keepdim=True)  # centred: the lips' place in the face is not their shape
    return shape.reshape(len(b), -1).numpy()


def with_motion(desc: np.ndarray, before: np.ndarray, gap: np.ndarray, weight: float) -> np.ndarray:
    """[N, 2D]: each lip descriptor beside its change from `before` [N, D] (the frame before it), `gap` [N]
    being the time between them in 1/25 s (a bank subsampled by k has gap k; output at 50 fps 0.5)."""
    return np.concatenate([desc, weight * (desc - before) / np.asarray(gap, np.float64)[:, None]], 1).astype(desc.dtype)


def match_costs(target: np.ndarray, bank: np.ndarray, target_pose: np.ndarray, bank_pose: np.ndarray,
                scale: float, cfg: RetrievalConfig) -> np.ndarray:
    """[T, K] cost of showing bank frame k at output frame t (lip mismatch + pose difference)."""
    lips = ((target[:, None] - bank[None]) ** 2).sum(-1) / scale
    pose = ((target_pose[:, None, :3] - bank_pose[None, :, :3]) ** 2).sum(-1) / cfg.pose_scale ** 2
    return lips + pose


def typical_mismatch(bank: np.ndarray) -> float:
    """Median squared lip distance between a bank frame and its nearest other frame: the unit of cost."""
    n = len(bank)
    if n < 2:
        return 1.0
    sample = bank[np.linspace(0, n - 1, min(n, 256)).astype(int)]
    d = ((sample[:, None] - bank[None]) ** 2).sum(-1)
    d[d <= 0] = np.inf
    return float(max(np.median(d.min(1)), 1e-8))


def best_path(costs: np.ndarray, successor: np.ndarray, cfg: RetrievalConfig, prev: int | None = None) -> np.ndarray:
    """[T] bank frame per output frame minimising the sum of match costs and transition costs.

    Candidates at t are the `candidates` cheapest frames plus, for each candidate at t-1, itself and
    its successor, so playing on or holding is always possible. `prev`: the frame shown just before
    (a path that continues another one pays the transition from it)."""
    T, K = costs.shape
    c = min(cfg.candidates, K)
    top = np.argpartition(costs, c - 1, axis=1)[:, :c] if c < K else np.tile(np.arange(K), (T, 1))
    prev_cands = top[0]
    score = costs[0, prev_cands]
    if prev is not None:
        follow = [successor[prev]] if successor[prev] >= 0 else []
        prev_cands = np.unique(np.concatenate([prev_cands, [prev], follow]).astype(np.int64))
        score = costs[0, prev_cands] + np.where(prev_cands == prev, cfg.hold_cost,
                                                np.where(prev_cands == successor[prev], 0.0, cfg.switch_cost))
    back, cands = [], [prev_cands]
    for t in range(1, T):
        follow = successor[prev_cands]
        cand = np.unique(np.concatenate([top[t], prev_cands, follow[follow >= 0]]))
        trans = np.full((len(prev_cands), len(cand)), cfg.switch_cost)
        trans[prev_cands[:, None] == cand[None]] = cfg.hold_cost
        trans[follow[:, None] == cand[None]] = 0.0
        total = score[:, None] + trans
        arg = total.argmin(0)
        score = total[arg, np.arange(len(cand))] + costs[t, cand]
        back.append(arg)
        cands.append(cand)
        prev_cands = cand
    path = np.empty(T, np.int64)
    j = int(score.argmin())
    for t in range(T - 1, -1, -1):
        path[t] = cands[t][j]
        if t > 0:
            j = int(back[t - 1][j])
    return path


def planned_path(costs: np.ndarray, successor: np.ndarray, cfg: RetrievalConfig, prev: int | None = None) -> np.ndarray:
    """best_path over the whole output, or block by block (each block may look `lookahead` frames past
    its end and continues the previous block's last frame): what a live stream can do, so offline
    and live dubs choose the same frames."""
    if cfg.block <= 0:
        return best_path(costs, successor, cfg, prev)
    path = []
    for a in range(0, len(costs), cfg.block):
        p = best_path(costs[a:a + cfg.block + cfg.lookahead], successor, cfg, prev)[:cfg.block]
        path.append(p)
        prev = int(p[-1])
    return np.concatenate(path)


def sources_per_frame(path: np.ndarray, successor: np.ndarray, crossfade: int) -> list[list[tuple[int, float]]]:
    """[(bank frame, weight), ...] per output frame: the path's frame, plus the previous source played
    on (or held) and fading out for `crossfade` frames after a jump."""
    out = [[(int(k), 1.0)] for k in path]
    for t in range(1, len(path)):
        prev = int(path[t - 1])
        if path[t] in (prev, successor[prev]):
            continue
        old = prev
        for i in range(crossfade):
            if t + i >= len(path):
                break
            old = int(successor[old]) if successor[old] >= 0 else old
            w_old = (crossfade - i) / (crossfade + 1)
            out[t + i] = [(k, w * (1 - w_old)) for k, w in out[t + i]] + [(old, w_old)]
    return out
