"""Trainer features `dub --adapt` relies on: a wall-clock budget kept across resumes, a checkpoint
on Ctrl-C, and starting a new run from another run's weights."""

import json

import pytest
import torch

from realtalk_cli.checkpoint import load_checkpoint
from realtalk_cli.errors import RealtalkError
from realtalk_cli.train.run import train
from realtalk_cli.checkpoint import latest_checkpoint
from test_a2e import make_dataset, tiny_config


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("budget_data"))


def test_time_budget_stops_and_counts_across_resume(dataset, tmp_path):
    cfg = tiny_config(tmp_path, steps=10**6, max_minutes=0.02, val_every=0, ckpt_every=0)
    run = tmp_path / "run"
    final = train("a2e", dataset, run, config=cfg, device="cpu")
    config, _ = load_checkpoint(final)
    assert config["elapsed_seconds"] >= 1.2 and 0 < config["step"] < 10**6  # stopped by the clock, not the steps
    # resuming a run whose budget is spent trains no further
    again = train("a2e", dataset, run, config=cfg, resume=True, device="cpu")
    assert load_checkpoint(again)[0]["step"] == config["step"]


def test_ctrl_c_saves_a_resumable_checkpoint(dataset, tmp_path, monkeypatch):
    from realtalk_cli.train import a2e_task

    real = a2e_task.A2ETask.sample_batch
    calls = {"n": 0}

    def interrupt_at_5(self, rng):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return real(self, rng)

    monkeypatch.setattr(a2e_task.A2ETask, "sample_batch", interrupt_at_5)
    run = tmp_path / "run"
    cfg = tiny_config(tmp_path, steps=50, val_every=0, ckpt_every=0)
    with pytest.raises(KeyboardInterrupt):
        train("a2e", dataset, run, config=cfg, device="cpu")
    assert load_checkpoint(latest_checkpoint(run))[0]["step"] == 5
    monkeypatch.setattr(a2e_task.A2ETask, "sample_batch", real)
    assert load_checkpoint(train("a2e", dataset, run, config=cfg, resume=True, device="cpu"))[0]["step"] == 50


def test_init_from_other_run(dataset, tmp_path):
    cfg = tiny_config(tmp_path, steps=3, val_every=0, ckpt_every=0)
    first = train("a2e", dataset, tmp_path / "a", config=cfg, device="cpu")
    frozen = json.loads(tiny_config(tmp_path, steps=1, val_every=0, ckpt_every=0).read_text())
    frozen["task"]["lr"] = 0.0  # one step that changes nothing: the checkpoint shows the initial weights
    (tmp_path / "frozen.json").write_text(json.dumps(frozen))
    second = train("a2e", dataset, tmp_path / "b", config=tmp_path / "frozen.json", device="cpu", init=tmp_path / "a")
    w1, w2 = load_checkpoint(first)[1]["a2e"], load_checkpoint(second)[1]["a2e"]
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    bigger = json.loads(tiny_config(tmp_path, steps=3, val_every=0, ckpt_every=0).read_text())
    bigger["model"]["d_model"] *= 2
    (tmp_path / "big.json").write_text(json.dumps(bigger))
    with pytest.raises(RealtalkError, match="do not match the model"):
        train("a2e", dataset, tmp_path / "c", config=tmp_path / "big.json", device="cpu", init=tmp_path / "a")
