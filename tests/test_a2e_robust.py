"""A speaker-robust a2e for little data: per-utterance feature normalisation and audio augmentation."""

import json

import numpy as np
import torch

from conftest import make_tiny_dataset
from realtalk_cli.configs import config_path
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.inference.a2e import predict_expressions
from realtalk_cli.train.a2e_task import build_task, default_config
from realtalk_cli.train.run import merge

TINY = json.loads(config_path("a2e_tiny").read_text())


def test_utterance_norm_ignores_level_and_channel():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 6)).astype(np.float32)
    louder = 1.5 * feats + rng.normal(size=6).astype(np.float32)  # another gain and microphone per mel band
    shape, history = np.zeros(2), rng.normal(size=(4, 3))
    outs = {}
    for norm in (False, True):
        cfg = A2EConfig(**{**TINY["model"], "audio_dim": 6, "n_id": 2, "n_exp": 3, "utterance_norm": norm})
        model = A2ETransformer(cfg).eval()
        outs[norm] = [predict_expressions(model, f, shape, history) for f in (feats, louder)]
    change = {norm: np.abs(a - b).max() for norm, (a, b) in outs.items()}
    assert change[True] < 0.01 * change[False], change  # (an untrained network's output barely moves either way)


def test_augmentation_reads_altered_copies_of_the_audio(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_frames=40).dir
    cfg = merge(default_config(), {"model": TINY["model"], "task": {
        "batch_size": 8, "augment": 1.0, "augment_semitones": [3.0], "augment_snr_db": [10.0]}})
    task = build_task(data, cfg, torch.device("cpu"))
    assert task.versions.shape[0] == 3  # the real audio, one other voice, one noisy room
    assert not torch.equal(task.versions[1], task.versions[0]) and not torch.equal(task.versions[2], task.versions[0])
    batch = task.sample_batch(np.random.default_rng(0))
    real = task.features  # version 0: the real audio
    T = task.model_cfg.n_frames
    # every window of the batch (augment = 1) reads one of the altered copies, never the real audio
    for a in batch["audio"]:
        starts = [s for s in range(len(real) - 2 * T + 1) if torch.equal(real[s : s + 2 * T], a)]
        assert not starts
    loss, _ = task.loss(batch)
    assert torch.isfinite(loss)
