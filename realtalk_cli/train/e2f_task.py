"""Training task of the expression-to-face renderer (plugs into train/trainer.py).

A sample is one valid frame of a clip: the source crop I_s, the reference crop I_r of the same clip
(its first training frame, or a random training frame: `reference`), the tracked coefficients
(alpha, beta, rho) of the source frame (the paper trains the renderer on tracked coefficients) and
the masks drawn from them (inference/e2f.face_masks, the same code as at inference).

    L = w_l1 * L1 + w_vgg * VGG + w_adv * GAN + w_teeth * L1_teeth           paper eq. (9), (10)
    L1       mean |I_hat - I_s| over the image (outside the mask it is exactly 0 by construction)
    VGG      weighted L1 of VGG19 relu1_1..relu5_1 features (off without --config task.vgg_weights)
    GAN      non-saturating loss against a PatchGAN (-log D(I_hat)); D minimises the usual BCE
    L1_teeth mean |I_hat - I_s| over the teeth mask M' (normalised by its area so it stays local)

Data: every crop is decoded once and kept in memory at the model resolution when they fit in
`cache_mb` (a batch is then a gather, far faster than a GPU step); otherwise crops are decoded per
batch. `data_ms` in metrics.jsonl is the time sample_batch took (decode, upload, masks).

Validation (held-out frames, reference = the clip's first training frame): L1, PSNR and SSIM
(eval/metrics.py) over the mask region (where the network generates), the same for the baseline that pastes the
reference's lower face (M * I_s + (1 - M) * I_r), and a preview grid
<run>/previews/step_XXXXXXX.png with rows of (masked input | reference | output | target).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from realtalk_cli.data.dataset import Clip, Dataset
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.eval.metrics import psnr, ssim
from realtalk_cli.fsutil import atomic_file
from realtalk_cli.nets.discriminator import DiscriminatorConfig, PatchDiscriminator
from realtalk_cli.nets.mask import MaskConfig
from realtalk_cli.nets.renderer import Renderer, RendererConfig
from realtalk_cli.nets.vgg import PerceptualLoss, VGG19Features
from realtalk_cli.inference.e2f import coefficients, face_masks, to_tensor, to_uint8
from realtalk_cli.progress import console
from realtalk_cli.train.trainer import Task, TrainerConfig, unwrap


@dataclass
class E2FTaskConfig:
    batch_size: int = 10  # per rank (paper: 10 x 8 GPUs)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 1e-5
    disc_lr: float = 1e-4
    w_l1: float = 1.0
    w_vgg: float = 1.0
    w_adv: float = 0.1
    w_teeth: float = 1.0
    reference: str = "first"  # "first": the clip's first training frame (paper) | "random": any training frame
    split_frames: float = 0.0  # 0: the dataset's clip split; f in (0, 1): first f of every clip trains
    vgg_weights: str | None = None  # torchvision-layout VGG19 ImageNet state dict (.pth / .safetensors)
    cache_mb: int = 4096  # keep decoded crops in memory when they fit
    val_frames: int = 64  # held-out frames per validation (evenly spaced over the held-out frames)
    preview_frames: int = 4


def default_config() -> dict:
    """The paper's configuration; JSON config files (realtalk_cli/configs/e2f_*.json) override parts of it."""
    return {
        "stage": "e2f",
        "model": RendererConfig().to_dict(),
        "mask": asdict(MaskConfig()),
        "discriminator": DiscriminatorConfig().to_dict(),
        "task": asdict(E2FTaskConfig()),
        "trainer": asdict(TrainerConfig(steps=100_000, val_every=2000, ckpt_every=5000, log_every=50)),
    }


def _section(cls, d: dict, name: str):
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise UsageError(f"unknown e2f {name} config keys: {', '.join(sorted(unknown))}")
    return cls(**d)


class FrameStore:
    """Crops of several clips at the model resolution, addressed by a global frame index."""

    def __init__(self, clips: list[Clip], size: int, cache_mb: int):
        self.clips, self.size = clips, size
        self.offsets = np.cumsum([0] + [c.n_frames for c in clips])
        self.cache: np.ndarray | None = None
        if self.offsets[-1] * size * size * 3 <= cache_mb * 2**20:
            self.cache = np.concatenate([self._decode(ci, np.arange(c.n_frames)) for ci, c in enumerate(clips)])

    def _decode(self, ci: int, frames: np.ndarray) -> np.ndarray:
        crops = self.clips[ci].crops(frames)
        if crops.shape[1] == self.size:
            return crops
        interp = cv2.INTER_AREA if crops.shape[1] > self.size else cv2.INTER_LINEAR
        return np.stack([cv2.resize(c, (self.size, self.size), interpolation=interp) for c in crops])

    def get(self, idx: np.ndarray) -> np.ndarray:
        """uint8 [k, S, S, 3] of global frame indices."""
        if self.cache is not None:
            return self.cache[idx]
        ci = np.searchsorted(self.offsets, idx, side="right") - 1
        return np.concatenate([self._decode(c, np.array([i - self.offsets[c]])) for c, i in zip(ci, idx)])


class E2FTask(Task):
    def __init__(self, data: str | Path, config: dict, device: torch.device):
        super().__init__(config, device)
        self.tc = _section(E2FTaskConfig, {**config["task"], "betas": tuple(config["task"].get("betas", (0.9, 0.96)))}, "task")
        if self.tc.reference not in ("first", "random"):
            raise UsageError(f"task.reference must be 'first' or 'random', not {self.tc.reference!r}")
        self.mask_cfg = _section(MaskConfig, config["mask"], "mask")
        self.ds = Dataset.open(data)
        self.face = self.ds.face_model.to(device).eval()
        if self.tc.split_frames:
            if not 0.0 < self.tc.split_frames < 1.0:
                raise UsageError(f"split_frames must be in (0, 1), got {self.tc.split_frames}")
            chosen = [(c, "within") for c in self.ds.clips()]
        else:
            chosen = [(c, "train") for c in self.ds.clips("train")] + [(c, "val") for c in self.ds.clips("val")]
        chosen = [(c, role) for c, role in chosen if c.has_coeffs]
        if not chosen:
            raise RealtalkError("dataset has no clips with coefficients", data)
        clips = [c for c, _ in chosen]
        self._split(chosen)

        # The face model decides the condition size; record it in the run config.
        config["model"] = {**config["model"], "coeff_dim": self.face.n_id + self.face.n_exp + self.face.n_pose}
        self.model_cfg = _section(RendererConfig, config["model"], "model")
        self.size = self.model_cfg.image_size

        cat = lambda xs: torch.as_tensor(np.concatenate(xs), dtype=torch.float32, device=device)  # noqa: E731
        self.alpha = cat([c.coeffs()["alpha"][None] for c in clips])  # per clip
        self.beta = cat([c.coeffs()["beta"] for c in clips])  # per global frame
        self.rho = cat([c.coeffs()["rho"] for c in clips])
        t0 = time.perf_counter()
        self.frames = FrameStore(clips, self.size, self.tc.cache_mb)
        console.log(f"e2f data: {len(self.train_idx)} training / {len(self.val_idx)} held-out frames, "
                    f"{'cached' if self.frames.cache is not None else 'decoded per batch'} at {self.size}px "
                    f"({time.perf_counter() - t0:.1f} s)")

        renderer = Renderer(self.model_cfg)
        train_coeffs = coefficients(self.alpha[self.clip_of[self.train_idx]], self.beta[self.train_idx], self.rho[self.train_idx])
        renderer.set_coeff_stats(train_coeffs.mean(0), train_coeffs.std(0))
        self.models = {"renderer": renderer.to(device)}
        if self.tc.w_adv > 0:
            self.models["discriminator"] = PatchDiscriminator(_section(DiscriminatorConfig, config["discriminator"], "discriminator")).to(device)
        self.perceptual = None
        if self.tc.w_vgg > 0 and self.tc.vgg_weights:
            self.perceptual = PerceptualLoss(VGG19Features.from_file(self.tc.vgg_weights)).to(device)
        elif self.tc.w_vgg > 0:
            console.log("[yellow]e2f: no VGG19 weights given (task.vgg_weights): the perceptual loss is OFF[/]")
        self._data_s = 0.0

    def _split(self, chosen: list[tuple[Clip, str]]) -> None:
        """Global indices of valid training / held-out frames, each frame's clip, each clip's reference."""
        offsets = np.cumsum([0] + [c.n_frames for c, _ in chosen])
        train, val, refs, clip_of = [], [], [], []
        for ci, (c, role) in enumerate(chosen):
            n, valid = c.n_frames, c.valid()
            cut = {"within": int(round(self.tc.split_frames * n)), "train": n, "val": 0}[role]
            ids = offsets[ci] + np.arange(n)
            train.append(ids[:cut][valid[:cut]])
            val.append(ids[cut:][valid[cut:]])
            # a val-only clip (dataset split) takes its reference from its own first valid frame
            pool = train[-1] if len(train[-1]) else val[-1]
            refs.append(pool[:1] if len(pool) else ids[:1])
            clip_of.append(np.full(n, ci))
        self.train_idx, self.val_idx = np.concatenate(train), np.concatenate(val)
        self.ref_first = np.concatenate(refs)
        self.train_pools = train
        self.clip_of = np.concatenate(clip_of)
        if len(self.train_idx) == 0:
            raise RealtalkError("no valid training frames", self.ds.dir)

    # --- data --------------------------------------------------------------------------------------
    def sample_batch(self, rng: np.random.Generator) -> dict[str, Tensor]:
        t0 = time.perf_counter()
        idx = self.train_idx[rng.integers(len(self.train_idx), size=self.tc.batch_size)]
        clip = self.clip_of[idx]
        if self.tc.reference == "first":
            ref = self.ref_first[clip]
        else:
            ref = np.array([rng.choice(self.train_pools[c]) for c in clip])
        batch = self.make_batch(idx, ref)
        self._data_s = time.perf_counter() - t0
        return batch

    def make_batch(self, idx: np.ndarray, ref: np.ndarray) -> dict[str, Tensor]:
        dev, S = self.device, self.size
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        alpha = self.alpha[t(self.clip_of[idx])]
        beta, rho = self.beta[t(idx)], self.rho[t(idx)]
        keep, teeth = face_masks(self.face, self.mask_cfg, alpha, beta, rho, S)
        return {
            "source": to_tensor(self.frames.get(idx), S, dev),
            "reference": to_tensor(self.frames.get(ref), S, dev),
            "coeffs": coefficients(alpha, beta, rho),
            "keep": keep,
            "teeth": teeth,
        }

    # --- optimisation ------------------------------------------------------------------------------
    def optimizers(self):
        tc = self.tc
        opts = {"gen": torch.optim.Adam(self.models["renderer"].parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay)}
        if "discriminator" in self.models:
            opts["disc"] = torch.optim.Adam(self.models["discriminator"].parameters(), lr=tc.disc_lr, betas=tc.betas, weight_decay=tc.weight_decay)
        return opts

    def generator_loss(self, batch: dict[str, Tensor], out: Tensor) -> tuple[Tensor, dict[str, float]]:
        tc, target = self.tc, batch["source"]
        diff = (out - target).abs()
        l1 = diff.mean()
        teeth = (diff * batch["teeth"]).sum() / (3 * batch["teeth"].sum()).clamp_min(1.0)
        loss = tc.w_l1 * l1 + tc.w_teeth * teeth
        metrics = {"l1": l1.item(), "teeth_l1": teeth.item()}
        if self.perceptual is not None:
            vgg = self.perceptual(out, target)
            loss = loss + tc.w_vgg * vgg
            metrics["vgg"] = vgg.item()
        if "discriminator" in self.models:
            # the bare module: D is not updated in this step, so no DDP gradient sync for it
            adv = F.softplus(-unwrap(self.models["discriminator"])(out)).mean()  # = BCE(D(out), real)
            loss = loss + tc.w_adv * adv
            metrics["adv_g"] = adv.item()
        return loss, metrics

    def train_step(self, batch: dict[str, Tensor], trainer) -> dict[str, float]:
        disc = self.models.get("discriminator")
        if disc is not None:
            unwrap(disc).requires_grad_(False)  # the generator step must not accumulate D gradients
        out = self.models["renderer"](batch["source"], batch["reference"], batch["coeffs"], batch["keep"])
        loss, metrics = self.generator_loss(batch, out)
        trainer.optimize(loss, "gen")
        if disc is not None:
            unwrap(disc).requires_grad_(True)
            # real and fake in one forward (one DDP forward per backward; InstanceNorm is per sample)
            real, fake = disc(torch.cat([batch["source"], out.detach()])).chunk(2)
            d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
            trainer.optimize(d_loss, "disc")
            metrics["adv_d"] = d_loss.item()
        return {"loss": loss.item(), **metrics, "data_ms": 1000 * self._data_s}

    # --- validation --------------------------------------------------------------------------------
    def heldout_frames(self) -> np.ndarray:
        idx = self.val_idx
        if len(idx) > self.tc.val_frames:
            idx = idx[np.linspace(0, len(idx) - 1, self.tc.val_frames).round().astype(int)]
        return idx

    def evaluate(self, idx: np.ndarray) -> tuple[dict[str, float], dict[str, Tensor]]:
        """Metrics of frames `idx` (reference: each clip's first training frame) and the first batch's images."""
        net = unwrap(self.models["renderer"])
        sums: dict[str, float] = defaultdict(float)
        first = None
        for lo in range(0, len(idx), self.tc.batch_size):
            chunk = idx[lo : lo + self.tc.batch_size]
            b = self.make_batch(chunk, self.ref_first[self.clip_of[chunk]])
            out = net(b["source"], b["reference"], b["coeffs"], b["keep"]).float()
            paste = b["keep"] * b["source"] + (1 - b["keep"]) * b["reference"]
            region = (b["keep"] < 0.5)[:, 0].cpu().numpy()  # where the network generates
            target = to_float255(b["source"])
            for name, img in (("", out), ("paste_", paste)):
                for x, y, r in zip(to_float255(img), target, region):
                    sums[f"{name}psnr_mask"] += psnr(x, y, r)
                    sums[f"{name}ssim_mask"] += ssim(x, y, r)
            sums["l1"] += (out - b["source"]).abs().mean(dim=(1, 2, 3)).sum().item()
            if first is None:
                first = {**b, "output": out}
        return {k: v / len(idx) for k, v in sums.items()}, first

    def validate(self) -> dict[str, float]:
        idx = self.heldout_frames()
        if len(idx) == 0:
            return {}
        metrics, images = self.evaluate(idx)
        if self.trainer is not None:
            step = self.trainer.step
            write_preview(self.trainer.run_dir / "previews" / f"step_{step:07d}.png", images, self.tc.preview_frames)
        return metrics

    def checkpoint_extra(self):
        face_cfg, face_tensors = self.face.to_checkpoint()
        return {"face_model": face_cfg}, {"face_model": face_tensors}


def build_task(data: str | Path, config: dict, device: torch.device) -> E2FTask:
    return E2FTask(data, config, device)


# --- metrics and previews ------------------------------------------------------------------------


def to_float255(x: Tensor) -> np.ndarray:
    """[B,3,H,W] in [0,1] -> float [B,H,W,3] in 0..255 (eval.metrics' convention, no rounding)."""
    return (x.clamp(0, 1) * 255).permute(0, 2, 3, 1).double().cpu().numpy()


def write_preview(path: Path, b: dict[str, Tensor], rows: int) -> None:
    """PNG grid, one row per frame: masked input | reference | output | target."""
    write_grid(path, [b["source"] * b["keep"], b["reference"], b["output"], b["source"]], rows)


def write_grid(path: Path, columns: list[Tensor], rows: int) -> None:
    """PNG of image batches [B,3,S,S] in [0,1] side by side, the first `rows` frames of each."""
    grid = np.concatenate([np.concatenate(list(to_uint8(c[:rows])), axis=0) for c in columns], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
            raise RealtalkError("cannot write preview image", path)
