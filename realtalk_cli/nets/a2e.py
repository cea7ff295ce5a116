"""Audio-to-expression transformer (RealTalk, ECCV 2024, section 3.1).

    tokens  = [Lin_w(w_1..w_l), Lin_a(alpha_1), Lin_b(beta_1..beta_N)]      l + 1 + N tokens
    memory  = CMSA^N1(tokens + periodic positional encoding)                 eq. (1)
    beta_hat_1..T = Linear(TCA^N2(zero queries + positional encoding, memory)) eq. (2)

l = 2T audio features (50 Hz features, 25 fps video: features 2t and 2t+1 belong to frame t), the
shape alpha_1 of the clip's first frame and N historical expressions of the same speaker. The Table 5
ablation drops the shape token (`use_shape`) and/or the history tokens (`use_history`); the token
count is then fixed by the config, so every shape in the graph is static (ONNX friendly).

Any audio length: a window shorter than T frames is zero-padded and `frame_mask` marks the real
frames. Padded audio tokens and padded queries are masked out as attention keys, so predictions for
real frames do not depend on the padding (tests/test_a2e.py checks this).

Inputs and outputs are raw coefficients / features; per-dimension statistics of the training set are
buffers of the model (saved in its checkpoint) and standardise everything inside, so one learning
rate suits any face model or audio front end.

`A2ELinear` (config kind "linear") is the small-data alternative `--adapt` fits on a CPU: a ridge
regression from the features of the frames t - c .. t + c to beta_t, one speaker, solved in closed
form (train/a2e_task.py). On a minute of video it follows the mouth better than a transformer trained
for minutes (docs/experiments/sync.md). It takes the transformer's inputs, so windows, streaming and
export treat both alike. Wide features (Whisper's 512 per state) are first projected on a few hundred
principal directions (`project`), so the ridge stays small; `smooth` low-passes the output, as the
lips are slower than the speech. The lip prior (nets/lip_prior.py) is such a model, fitted on many people.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class A2EConfig:
    audio_dim: int = 80  # feature size of the audio front end (80 log-mel bins; 1024 for HuBERT-large)
    n_id: int = 80  # shape coefficients alpha
    n_exp: int = 64  # expression coefficients beta
    n_frames: int = 16  # T: expression frames predicted per window (l = 2T audio features)
    n_history: int = 16  # N: historical expressions of the same speaker
    d_model: int = 256
    n_heads: int = 8
    n_enc_layers: int = 8  # N1 CMSA layers
    n_dec_layers: int = 8  # N2 TCA layers
    ffn_mult: int = 4
    dropout: float = 0.1
    pe_period: int = 50  # positions repeat every second of 50 Hz audio features (FaceFormer-style)
    use_shape: bool = True  # Table 5 ablation switches
    use_history: bool = True
    utterance_norm: bool = False  # features z-scored per utterance before the network (inference/a2e.py), for any voice/channel
    kind: str = "transformer"  # "linear": A2ELinear below (d_model .. pe_period then unused)
    context: int = 4  # linear: frames of audio either side of the predicted frame
    project: int = 0  # linear: per-frame features first projected on this many principal directions (0: none)
    smooth: float = 0.0  # linear: output smoothed over time by a Gaussian of this sigma, frames (0: none)

    @property
    def n_audio(self) -> int:  # l
        return 2 * self.n_frames

    @property
    def n_tokens(self) -> int:
        return self.n_audio + int(self.use_shape) + self.n_history * int(self.use_history)

    def __post_init__(self):
        if self.kind not in ("transformer", "linear"):
            raise ValueError(f"a2e kind {self.kind!r}: expected transformer or linear")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.kind == "transformer" and self.pe_period < 2 * self.n_frames:
            raise ValueError("pe_period must cover one window of audio features (2 * n_frames)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "A2EConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown a2e config keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def periodic_encoding(positions: torch.Tensor, dim: int, period: int) -> torch.Tensor:
    """Sinusoidal encoding of `positions` taken modulo `period` (FaceFormer's periodic PE): [P, dim]."""
    pos = (positions % period).float()[:, None]
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe = torch.zeros(len(positions), dim)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)
    return pe


class Attention(nn.Module):
    """Multi-head attention; `keep` [B, S_kv] marks the keys that may be attended to."""

    def __init__(self, cfg: A2EConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        B, S, D = x.shape
        heads = lambda t: t.view(B, -1, self.n_heads, D // self.n_heads).transpose(1, 2)  # noqa: E731
        q = heads(self.q(x))
        k, v = (heads(t) for t in self.kv(context).chunk(2, dim=-1))
        mask = None if keep is None else keep[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, S, D))


class FeedForward(nn.Sequential):
    def __init__(self, cfg: A2EConfig):
        super().__init__(
            nn.Linear(cfg.d_model, cfg.ffn_mult * cfg.d_model),
            nn.GELU(),
            nn.Linear(cfg.ffn_mult * cfg.d_model, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )


class CMSALayer(nn.Module):
    """Cross-modal multi-head self-attention: audio, shape and history tokens attend to each other."""

    def __init__(self, cfg: A2EConfig):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.ffn = nn.LayerNorm(cfg.d_model), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, h, keep))
        return x + self.ffn(self.ln2(x))


class TCALayer(nn.Module):
    """Temporal multi-head cross-attention: the T expression queries talk to each other, then read the memory."""

    def __init__(self, cfg: A2EConfig):
        super().__init__()
        self.ln1, self.self_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln2, self.cross_attn = nn.LayerNorm(cfg.d_model), Attention(cfg)
        self.ln3, self.ffn = nn.LayerNorm(cfg.d_model), FeedForward(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, q: torch.Tensor, memory: torch.Tensor, q_keep: torch.Tensor, m_keep: torch.Tensor) -> torch.Tensor:
        h = self.ln1(q)
        q = q + self.drop(self.self_attn(h, h, q_keep))
        q = q + self.drop(self.cross_attn(self.ln2(q), memory, m_keep))
        return q + self.ffn(self.ln3(q))


class A2ETransformer(nn.Module):
    def __init__(self, cfg: A2EConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.d_model
        self.embed_audio = nn.Linear(cfg.audio_dim, D)
        with warnings.catch_warnings():  # a single-speaker landmark face model has n_id = 0: the
            warnings.simplefilter("ignore", UserWarning)  # shape token is then a learned constant
            self.embed_shape = nn.Linear(cfg.n_id, D) if cfg.use_shape else None
        self.embed_history = nn.Linear(cfg.n_exp, D) if cfg.use_history else None
        self.encoder = nn.ModuleList(CMSALayer(cfg) for _ in range(cfg.n_enc_layers))
        self.decoder = nn.ModuleList(TCALayer(cfg) for _ in range(cfg.n_dec_layers))
        self.ln_memory = nn.LayerNorm(D)
        self.ln_out = nn.LayerNorm(D)
        self.head = nn.Linear(D, cfg.n_exp)

        # Token positions in audio-feature units: query t sits at 2t, the phase of its own audio
        # features 2t and 2t+1, which makes the audio-to-frame alignment easy to learn.
        self.register_buffer("pe_tokens", periodic_encoding(torch.arange(cfg.n_tokens), D, cfg.pe_period), persistent=False)
        self.register_buffer("pe_queries", periodic_encoding(2 * torch.arange(cfg.n_frames), D, cfg.pe_period), persistent=False)
        # Training-set statistics (mean, std) per dimension; identity until set_stats() is called.
        for name, dim in (("audio", cfg.audio_dim), ("shape", cfg.n_id), ("exp", cfg.n_exp)):
            self.register_buffer(f"{name}_stats", torch.stack([torch.zeros(dim), torch.ones(dim)]))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    @torch.no_grad()
    def set_stats(self, audio: tuple, shape: tuple, exp: tuple) -> None:
        """Set the (mean, std) pairs, per dimension, of the training set's inputs and targets."""
        for buf, (mean, std) in ((self.audio_stats, audio), (self.shape_stats, shape), (self.exp_stats, exp)):
            buf.copy_(torch.stack([torch.as_tensor(mean), torch.as_tensor(std)]).to(buf))

    @staticmethod
    def _norm(x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        return (x - stats[0]) / stats[1]

    def forward(
        self,
        audio: torch.Tensor,  # [B, 2T, audio_dim]
        shape: torch.Tensor,  # [B, n_id]   alpha_1
        history: torch.Tensor,  # [B, N, n_exp] beta of N other frames of the speaker
        frame_mask: torch.Tensor | None = None,  # [B, T] bool, True for real frames; None = all real
    ) -> torch.Tensor:  # [B, T, n_exp] beta_hat
        cfg = self.cfg
        B = audio.shape[0]
        if frame_mask is None:
            frame_mask = torch.ones(B, cfg.n_frames, dtype=torch.bool, device=audio.device)
        audio_mask = frame_mask.repeat_interleave(2, dim=1)

        tokens = [self.embed_audio(self._norm(audio, self.audio_stats) * audio_mask[..., None])]
        keep = [audio_mask]
        if self.embed_shape is not None:
            tokens.append(self.embed_shape(self._norm(shape, self.shape_stats))[:, None])
            keep.append(torch.ones_like(frame_mask[:, :1]))
        if self.embed_history is not None:
            tokens.append(self.embed_history(self._norm(history, self.exp_stats)))
            keep.append(torch.ones_like(history[..., 0], dtype=torch.bool))
        x = torch.cat(tokens, dim=1) + self.pe_tokens
        keep = torch.cat(keep, dim=1)

        for layer in self.encoder:
            x = layer(x, keep)
        memory = self.ln_memory(x)

        q = torch.zeros(B, cfg.n_frames, cfg.d_model, dtype=x.dtype, device=x.device) + self.pe_queries
        for layer in self.decoder:
            q = layer(q, memory, frame_mask, keep)
        beta = self.head(self.ln_out(q))
        return beta * self.exp_stats[1] + self.exp_stats[0]

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class A2ELinear(nn.Module):
    """beta_t = W [standardised features of frames t - c .. t + c] + b; edges of a window repeated.

    One Conv1d over per-frame features (2 audio features per frame, concatenated). Shape and history
    are accepted for the transformer's interface and unused: the model is fitted to one person.
    """

    def __init__(self, cfg: A2EConfig):
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv1d(cfg.project or 2 * cfg.audio_dim, cfg.n_exp, 2 * cfg.context + 1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("audio_stats", torch.stack([torch.zeros(cfg.audio_dim), torch.ones(cfg.audio_dim)]))
        if cfg.project:  # set with set_projection (the prior's principal directions)
            self.register_buffer("projection", torch.eye(2 * cfg.audio_dim, cfg.project))
        if cfg.smooth > 0:
            r = int(math.ceil(3 * cfg.smooth))
            g = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / cfg.smooth) ** 2)
            self.register_buffer("smoothing", (g / g.sum()).expand(cfg.n_exp, 1, -1).clone(), persistent=False)

    @torch.no_grad()
    def set_stats(self, audio: tuple, shape: tuple | None = None, exp: tuple | None = None) -> None:
        """(mean, std) of the training features per dimension (shape and expression stats unused)."""
        self.audio_stats.copy_(torch.stack([torch.as_tensor(audio[0]), torch.as_tensor(audio[1])]).to(self.audio_stats))

    def frames(self, audio: torch.Tensor) -> torch.Tensor:
        """[B, 2T, audio_dim] -> [B, 2 audio_dim, T + 2c]: standardised, one column per frame, edges repeated."""
        B, L, D = audio.shape
        x = ((audio - self.audio_stats[0]) / self.audio_stats[1]).reshape(B, L // 2, 2 * D)
        if self.cfg.project:
            x = x @ self.projection
        return F.pad(x.transpose(1, 2), (self.cfg.context, self.cfg.context), mode="replicate")

    @torch.no_grad()
    def set_projection(self, projection: torch.Tensor) -> None:
        """[2 audio_dim, project]: the directions standardised per-frame features are projected on."""
        self.projection.copy_(torch.as_tensor(projection).to(self.projection))

    def design(self, audio: torch.Tensor) -> torch.Tensor:
        """The regression's inputs for every frame of one sequence [2T, audio_dim] -> [T, inputs (2c + 1)],
        laid out like the convolution's weights (inputs: 2 audio_dim, or `project`)."""
        x = self.frames(audio[None])[0]  # [2D, T + 2c]
        return x.unfold(1, 2 * self.cfg.context + 1, 1).permute(1, 0, 2).reshape(x.shape[1] - 2 * self.cfg.context, -1)

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, b) as `set_weights` takes them."""
        return self.conv.weight.detach().reshape(self.cfg.n_exp, -1).T, self.conv.bias.detach()

    @torch.no_grad()
    def set_weights(self, w: torch.Tensor, b: torch.Tensor) -> None:
        """w [inputs (2c + 1), n_exp] and b [n_exp] as fitted on `design` rows."""
        self.conv.weight.copy_(w.T.reshape(self.conv.weight.shape).to(self.conv.weight))
        self.conv.bias.copy_(b.to(self.conv.bias))

    def forward(self, audio: torch.Tensor, shape: torch.Tensor | None = None, history: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None) -> torch.Tensor:  # [B, T, n_exp]
        y = self.conv(self.frames(audio))
        if self.cfg.smooth > 0:
            r = self.smoothing.shape[-1] // 2
            y = F.conv1d(F.pad(y, (r, r), mode="replicate"), self.smoothing, groups=self.cfg.n_exp)
        return y.transpose(1, 2)


def build_a2e(cfg: A2EConfig) -> nn.Module:
    return A2ELinear(cfg) if cfg.kind == "linear" else A2ETransformer(cfg)
