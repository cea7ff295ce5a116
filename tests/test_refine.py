"""bank+fia: the refiner network, its training pairs, its training run and a dub with it."""

import numpy as np
import pytest
import torch

from realtalk_cli.nets.refiner import Refiner, RefinerConfig


def test_untrained_refiner_returns_the_composite_and_touches_only_the_region():
    torch.manual_seed(0)
    net = Refiner(RefinerConfig(image_size=32, channels=[4, 8]))
    image, region = torch.rand(2, 3, 32, 32), torch.zeros(2, 1, 32, 32)
    region[:, :, 8:24, 8:24] = 1.0
    assert net(image, region).abs().max() == 0  # zero head: the bank's picture unchanged
    torch.nn.init.normal_(net.head.weight, std=0.1)
    out = net(image, region)
    assert out[region.expand_as(out) == 0].abs().max() == 0 and out.abs().max() > 0


def _renderer(bank_model):
    from realtalk_cli.bank.compose import BankRenderer
    from realtalk_cli.bank.store import FrameBank

    return BankRenderer(FrameBank(bank_model / "model" / "bank"))


def test_training_pairs_come_from_other_times(bank_model):
    """Each pair's bank frame is at least the excluded span away from its target; the composite
    differs from the target only inside the region (outside it is the target's own pixels)."""
    from realtalk_cli.bank.refine import training_pairs

    pairs = training_pairs(_renderer(bank_model), bank_model / "data", bank_model / "person.mp4", 32, frames=12,
                           exclude_seconds=0.6)
    assert 8 <= len(pairs["frame"]) <= 12
    assert (np.abs(pairs["source"] - pairs["frame"]) >= 15).all()
    diff = np.abs(pairs["composite"].astype(int) - pairs["target"]).max(-1)
    assert diff[pairs["region"] > 0.5].mean() > 2  # another mouth was put there
    assert diff[pairs["region"] == 0].max() <= 2   # elsewhere only the crop's resampling of the same frame


def test_refiner_trains_and_dubs_changing_only_the_region(bank_model, tmp_path):
    import json
    import shutil

    from realtalk_cli.checkpoint import load_checkpoint
    from realtalk_cli.pipelines.dub import DubOptions, Dubber
    from realtalk_cli.train.run import train
    from mediagen import make_face_video

    model = tmp_path / "model"
    shutil.copytree(bank_model / "model", model)
    task = {"bank": str(model / "bank"), "video": str(bank_model / "person.mp4"), "frames": 20, "val_every": 4,
            "exclude_seconds": 0.6}
    final = train("refine", bank_model / "data", model / "refine", overrides={
        "model": {"image_size": 32, "channels": [8, 16], "smooth": 4}, "task": task,
        "trainer": {"steps": 60, "val_every": 0, "ckpt_every": 0, "log_every": 10}}, device="cpu")
    config, tensors = load_checkpoint(final)
    assert config["stage"] == "refine" and "refiner" in tensors
    val = [json.loads(line) for line in (model / "refine" / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert val and {"l1_bank", "l1_refined"} <= set(val[-1])  # held-out pairs: bank alone vs refined

    dubber = Dubber.from_pretrained(model, "cpu", renderer="bank+fia")
    assert dubber.stage.name == "bank+fia"
    speech = make_face_video(tmp_path / "speech.mp4", seconds=0.8)
    changed = []

    def check(i, src, out, paste):
        m = paste.mask(*src.shape[:2])
        assert np.array_equal(src[m == 0], out[m == 0])
        changed.append(not np.array_equal(src, out))

    dubber.dub(bank_model / "person.mp4", speech, tmp_path / "out.mp4", DubOptions(), on_frame=check)
    assert (tmp_path / "out.mp4").is_file() and sum(changed) > 10


def test_refiner_learns_light_the_bank_misses(bank_model, tmp_path):
    """Targets lit brighter inside the region than any bank frame (a lamp switched on): the trained
    refiner takes most of that offset away on the pairs it trains on and on the held-out ones."""
    from realtalk_cli.train.refine_task import RefineTask, default_config
    from realtalk_cli.train.run import merge
    from realtalk_cli.train.trainer import Trainer, TrainerConfig

    torch.manual_seed(0)
    config = merge(default_config(), {"model": {"image_size": 32, "channels": [8, 16], "smooth": 4}, "task": {
        "bank": str(bank_model / "model" / "bank"), "video": str(bank_model / "person.mp4"), "frames": 20,
        "val_every": 4, "exclude_seconds": 0.6, "lr": 3e-3}})
    task = RefineTask(bank_model / "data", config, torch.device("cpu"))
    lit = task.target.float() + 25 * task.region[..., None]
    task.target = lit.clamp(0, 255).round().to(torch.uint8)
    before = task.validate()
    Trainer(task, TrainerConfig(steps=150, val_every=0, ckpt_every=0, log_every=50), tmp_path / "run").fit()
    after = task.validate()
    assert after["l1_refined"] < 0.6 * before["l1_bank"], (before, after)
