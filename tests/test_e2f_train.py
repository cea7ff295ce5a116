"""e2f training on the tiny synthetic dataset: overfitting, checkpoints, previews, losses, metrics."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from realtalk_cli.configs import config_path
from realtalk_cli.nets.vgg import VGG19Features
from realtalk_cli.inference.e2f import load_renderer, render
from realtalk_cli.train import run
from realtalk_cli.train.e2f_task import E2FTask
from realtalk_cli.train.run import merge, read_config

TINY = config_path("e2f_tiny")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Clip synth00 trains, synth01 is held out; 12 frames of 64x64 each."""
    root = tmp_path_factory.mktemp("e2f") / "data"
    make_tiny_dataset(root, n_clips=2, n_frames=12, crop_size=64, val_clips=1)
    return root


def tiny_config(tmp_path, **sections) -> str:
    cfg = merge(read_config(TINY), sections)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_tiny_renderer_overfits_one_clip(data_dir, tmp_path):
    cfg = merge(read_config(tiny_config(tmp_path)), {"stage": "e2f", "task": {"w_adv": 0.0, "batch_size": 4}})
    torch.manual_seed(0)
    task = E2FTask(data_dir, cfg, torch.device("cpu"))
    net = task.models["renderer"]
    frames = task.train_idx

    def train_l1() -> float:
        net.eval()
        with torch.no_grad():
            return task.evaluate(frames)[0]["l1"]

    before = train_l1()
    opt = task.optimizers()["gen"]
    rng = np.random.default_rng(0)
    net.train()
    for _ in range(250):
        b = task.sample_batch(rng)
        loss, _ = task.generator_loss(b, net(b["source"], b["reference"], b["coeffs"], b["keep"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = train_l1()
    assert after < before / 5, (before, after)


def test_train_run_writes_checkpoint_preview_and_metrics(data_dir, tmp_path):
    out = tmp_path / "run"
    ckpt = run.train("e2f", data_dir, out, config=tiny_config(tmp_path, trainer={"steps": 4, "val_every": 2, "log_every": 2}), device="cpu")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert {"l1", "teeth_l1", "adv_g", "adv_d", "data_ms"} <= set(train[-1])  # GAN on: both optimizers ran
    assert {"psnr_mask", "ssim_mask", "paste_psnr_mask", "paste_ssim_mask"} <= set(val[-1])
    preview = cv2.imread(str(out / "previews" / "step_0000004.png"))
    assert preview.shape == (4 * 64, 4 * 64, 3)  # 4 held-out rows x (masked | reference | output | target)
    assert not np.array_equal(preview[:, :64], preview[:, 192:])  # the input is masked

    run_cfg = json.loads((out / "config.json").read_text())
    assert run_cfg["model"]["coeff_dim"] > 0 and run_cfg["mask"]["kind"] == "learnable"

    # the checkpoint round-trips: the loaded renderer reproduces the trained one exactly
    model = load_renderer(ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    task = E2FTask(data_dir, cfg, torch.device("cpu"))
    task.models["renderer"].load_state_dict(model.renderer.state_dict())
    for key, t in model.renderer.state_dict().items():
        assert torch.equal(t, task.models["renderer"].state_dict()[key])
    task.models["renderer"].eval()
    idx = task.val_idx[:3]
    b = task.make_batch(idx, task.ref_first[task.clip_of[idx]])
    with torch.no_grad():
        expected = task.models["renderer"](b["source"], b["reference"], b["coeffs"], b["keep"])
    clip = task.ds.clips("val")[0]
    co = clip.coeffs()
    frames = idx - task.frames.offsets[1]
    got = render(model, clip.crops(frames), clip.crops([0])[0], co["alpha"], co["beta"][frames], co["rho"][frames])
    assert np.abs(got.astype(int) - (expected.permute(0, 2, 3, 1).numpy() * 255).round().astype(int)).max() <= 1


def test_perceptual_loss_on_with_weights_off_without(data_dir, tmp_path):
    vgg_path = tmp_path / "vgg19.pth"
    torch.save({k: torch.randn_like(v) * 0.05 for k, v in VGG19Features().state_dict().items()}, vgg_path)
    base = merge(read_config(tiny_config(tmp_path)), {"stage": "e2f", "task": {"w_adv": 0.0}})
    with_vgg = E2FTask(data_dir, merge(base, {"task": {"vgg_weights": str(vgg_path)}}), torch.device("cpu"))
    b = with_vgg.sample_batch(np.random.default_rng(0))
    out = with_vgg.models["renderer"](b["source"], b["reference"], b["coeffs"], b["keep"])
    _, metrics = with_vgg.generator_loss(b, out)
    assert metrics["vgg"] > 0
    without = E2FTask(data_dir, base, torch.device("cpu"))
    assert without.perceptual is None and "vgg" not in without.generator_loss(b, out)[1]


def test_reference_modes_and_bad_config(data_dir, tmp_path):
    base = merge(read_config(tiny_config(tmp_path)), {"stage": "e2f"})
    task = E2FTask(data_dir, merge(base, {"task": {"reference": "random", "batch_size": 16}}), torch.device("cpu"))
    refs = set()
    rng = np.random.default_rng(0)
    for _ in range(3):
        b = task.sample_batch(rng)
        refs |= {float(r.sum()) for r in b["reference"]}
    assert len(refs) > 1  # random references differ
    first = E2FTask(data_dir, base, torch.device("cpu")).sample_batch(rng)
    assert torch.equal(first["reference"][0], first["reference"][-1])  # one clip trains: one reference
    with pytest.raises(Exception, match="reference"):
        E2FTask(data_dir, merge(base, {"task": {"reference": "last"}}), torch.device("cpu"))
    with pytest.raises(Exception, match="unknown e2f model"):
        E2FTask(data_dir, merge(base, {"model": {"widht": 3}}), torch.device("cpu"))
