"""Audio-to-expression transformer, its training task, the shared trainer and windowed inference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realtalk_cli.checkpoint import load_checkpoint
from realtalk_cli.configs import config_path
from realtalk_cli.cli import main
from realtalk_cli.data.dataset import write_clip, write_manifest
from realtalk_cli.face.model import GROUP_NAMES, FaceModel
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.inference.a2e import blend_windows, load_a2e, predict_expressions, window_starts
from realtalk_cli.train.run import train

TINY = json.loads(config_path("a2e_tiny").read_text())
N_EXP, N_ID, AUDIO_DIM, V = 4, 3, 6, 12


def tiny_model(**kw) -> A2ETransformer:
    torch.manual_seed(0)
    cfg = A2EConfig(**{**TINY["model"], "audio_dim": AUDIO_DIM, "n_id": N_ID, "n_exp": N_EXP, **kw})
    return A2ETransformer(cfg).eval()


def make_dataset(root: Path, n_frames: int = 96, seed: int = 0) -> Path:
    """One synthetic clip whose audio features are a noisy linear function of its expressions."""
    rng = np.random.default_rng(seed)
    groups = {g: torch.arange(4) for g in GROUP_NAMES}
    groups["mouth_region"] = torch.arange(V // 2, V)
    face = FaceModel("landmark", torch.randn(V, 3, generator=torch.Generator().manual_seed(seed)) * 10,
                     torch.randn(N_ID, V, 3) * 0.5, torch.randn(N_EXP, V, 3), groups,
                     torch.tensor([[6, 7], [8, 9]]), crop_size=16)
    face.save(root / "face_model")
    t = np.arange(n_frames)[:, None, None]  # smooth, stationary "expressions": sums of sines
    beta = np.sin(t * rng.uniform(0.1, 0.8, (1, N_EXP, 3)) + rng.uniform(0, 6, (1, N_EXP, 3))).sum(-1).astype(np.float32)
    mix = rng.normal(size=(2, N_EXP, AUDIO_DIM))
    feats = np.stack([beta @ mix[0], beta @ mix[1]], 1).reshape(2 * n_frames, AUDIO_DIM)
    feats += rng.normal(0, 0.05, feats.shape)
    rho = np.zeros((n_frames, 6), np.float32)
    rho[:, 3:5] = 8.0
    valid = np.ones(n_frames, bool)
    valid[n_frames // 3] = False  # windows across an untracked frame must not be trained on
    write_clip(root, "clip0", (np.zeros((16, 16, 3), np.uint8) for _ in range(n_frames)),
               landmarks=np.zeros((n_frames, 478, 3)), transforms=np.zeros((n_frames, 2, 3)), valid=valid,
               audio=np.zeros(n_frames * 640, np.float32), features=feats, crop_size=16,
               coeffs={"alpha": rng.normal(size=N_ID), "beta": beta, "rho": rho},
               face_model_fingerprint=face.fingerprint())
    write_manifest(root, [{"name": "clip0", "split": "train"}], config={"features": {"kind": "mel", "dim": AUDIO_DIM}})
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("a2e_data"))


def tiny_config(tmp: Path, **trainer) -> Path:
    cfg = json.loads(json.dumps(TINY))
    cfg["task"]["split_frames"] = 0.75
    cfg["trainer"].update(trainer)
    path = tmp / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["split"] == "train"}


# --- network -------------------------------------------------------------------------------------


@pytest.mark.parametrize("use_shape,use_history", [(True, True), (False, True), (True, False), (False, False)])
def test_forward_shapes_and_ablation_tokens(use_shape, use_history):
    m = tiny_model(use_shape=use_shape, use_history=use_history)
    T, N = m.cfg.n_frames, m.cfg.n_history
    out = m(torch.randn(3, 2 * T, AUDIO_DIM), torch.randn(3, N_ID), torch.randn(3, N, N_EXP))
    assert out.shape == (3, T, N_EXP)
    assert m.cfg.n_tokens == 2 * T + use_shape + N * use_history
    # without the history prior the prediction ignores it
    out2 = m(torch.randn(3, 2 * T, AUDIO_DIM), torch.randn(3, N_ID), torch.randn(3, N, N_EXP))
    assert not torch.equal(out, out2)


def test_padding_is_masked():
    """Predictions for real frames do not depend on what fills the padded tail of a window."""
    m = tiny_model()
    T = m.cfg.n_frames
    audio, shape, hist = torch.randn(1, 2 * T, AUDIO_DIM), torch.randn(1, N_ID), torch.randn(1, m.cfg.n_history, N_EXP)
    mask = torch.arange(T)[None] < 3
    other = audio.clone()
    other[:, 6:] = 1e3
    a, b = m(audio, shape, hist, mask), m(other, shape, hist, mask)
    assert torch.allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not torch.allclose(m(audio, shape, hist)[:, :3], m(other, shape, hist)[:, :3])  # unmasked: it would


@pytest.mark.parametrize("n", [1, 3, 4, 5, 9, 37])
def test_inference_any_length(n):
    m = tiny_model()
    feats = np.random.default_rng(n).normal(size=(2 * n, AUDIO_DIM)).astype(np.float32)
    out = predict_expressions(m, feats, np.zeros(N_ID), np.zeros((m.cfg.n_history, N_EXP)))
    assert out.shape == (n, N_EXP) and np.isfinite(out).all()
    T = m.cfg.n_frames
    if n < T:  # a short clip is one masked window: same as the network on the padded window
        pad = np.concatenate([feats, np.zeros((2 * (T - n), AUDIO_DIM), np.float32)])
        ref = m(torch.as_tensor(pad)[None], torch.zeros(1, N_ID), torch.zeros(1, m.cfg.n_history, N_EXP),
                (torch.arange(T) < n)[None])
        np.testing.assert_allclose(out, ref[0, :n].detach().numpy(), atol=1e-5)


def test_windows_cover_every_frame():
    for n in (1, 15, 16, 17, 40, 100):
        starts = window_starts(n, 16, 8)
        covered = np.zeros(max(n, 16), int)
        for s in starts:
            covered[s : s + 16] += 1
        assert covered[:n].min() >= 1 and starts[-1] + 16 >= n
        assert max(n, 16) == starts[-1] + 16  # the last window ends at the last frame


def test_blending_is_continuous_at_borders():
    T, n = 16, 100
    starts = window_starts(n, T, T // 2)
    # neighbouring windows disagree by 1: hard cuts would step by 1 at every border
    preds = np.stack([np.full((T, 1), k % 2, float) for k in range(len(starts))])
    out = blend_windows(preds, starts, n)[:, 0]
    assert np.abs(np.diff(out)).max() < 0.25
    # windows that agree (a smooth signal seen through each window) are reproduced exactly
    signal = np.sin(np.arange(n) / 5.0)[:, None]
    preds = np.stack([signal[s : s + T] for s in starts])
    np.testing.assert_allclose(blend_windows(preds, starts, n), signal, atol=1e-12)


# --- training ------------------------------------------------------------------------------------


def test_tiny_model_overfits(dataset, tmp_path):
    run = tmp_path / "run"
    ckpt = train("a2e", dataset, run, config=tiny_config(tmp_path, steps=300, log_every=10, val_every=0, ckpt_every=0), device="cpu")
    curve = losses(run)
    assert curve[10] / curve[300] >= 10, curve
    assert (run / "metrics.png").stat().st_size > 0 and (run / "config.json").is_file()
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"val"' in line]
    assert val and val[-1]["mouth_corr"] > 0.5  # held-out frames follow the "audio"
    assert ckpt == run / "checkpoints" / "step_0000300"


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_resume_gives_identical_next_loss(dataset, tmp_path, ema):
    cfg = tiny_config(tmp_path, log_every=1, val_every=0, ckpt_every=3, ema=ema)
    full, part = tmp_path / "full", tmp_path / "part"
    train("a2e", dataset, full, config=cfg, overrides={"trainer": {"steps": 6}}, device="cpu")
    train("a2e", dataset, part, config=cfg, overrides={"trainer": {"steps": 3}}, device="cpu")
    train("a2e", dataset, part, overrides={"trainer": {"steps": 6}}, resume=True, device="cpu")
    a, b = losses(full), losses(part)
    assert a[4] == b[4] and a[6] == b[6]  # exact: same weights, optimizer state, batch and dropout
    assert sorted(b) == list(range(1, 7))  # the log reads like one run
    _, ta = load_checkpoint(full / "checkpoints" / "step_0000006")
    _, tb = load_checkpoint(part / "checkpoints" / "step_0000006")
    for k, v in ta["a2e"].items():  # the weights inference loads (the average, with ema) agree too
        assert torch.equal(v, tb["a2e"][k]), k
    assert ("raw_a2e" in ta) == (ema > 0)
    if ema:
        assert not torch.equal(ta["a2e"]["head.weight"], ta["raw_a2e"]["head.weight"])


def test_checkpoint_round_trip_is_bit_exact(dataset, tmp_path):
    run = tmp_path / "run"
    ckpt = train("a2e", dataset, run, config=tiny_config(tmp_path, steps=2, val_every=0), device="cpu")
    model, config = load_a2e(run)  # a run directory resolves to its newest checkpoint
    _, tensors = load_checkpoint(ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors["a2e"][k]), k
    assert config["audio"]["kind"] == "mel" and config["model"]["audio_dim"] == AUDIO_DIM
    face = FaceModel.load(ckpt)  # self-contained: the face model basis travels with the weights
    assert torch.equal(face.exp_basis, FaceModel.load(dataset / "face_model").exp_basis)
    # save -> load -> save gives the same bytes
    from realtalk_cli.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "again", config, {"a2e": model.state_dict()})
    assert (tmp_path / "again" / "a2e.safetensors").read_bytes() == (ckpt / "a2e.safetensors").read_bytes()


def test_cli_train_and_errors(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--quiet", "train", "--stage", "a2e", "--data", str(dataset), "--out", str(run),
            "--config", str(tiny_config(tmp_path)), "--steps", "2", "--val-every", "0"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0 and (run / "checkpoints" / "step_0000002" / "a2e.safetensors").is_file()
    with pytest.raises(SystemExit) as e:  # an existing run is not overwritten silently
        main(args)
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "--stage", "a2e", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r2")])
    assert e.value.code == 2


@pytest.mark.slow
def test_runs_under_torchrun_ddp(dataset, tmp_path):
    """Two CPU processes (gloo): DDP wrapping, per-rank batches, rank 0 alone logs and checkpoints."""
    import os
    import subprocess
    import sys

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "realtalk_cli", "--quiet",
           "train", "--stage", "a2e", "--data", str(dataset), "--out", str(run),
           "--config", str(tiny_config(tmp_path, log_every=1, ckpt_every=2)), "--steps", "3", "--val-every", "0"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000002", "step_0000003"]
    assert sorted(losses(run)) == [1, 2, 3]  # one log line per step: rank 0 only


def test_within_clip_split_ranges(dataset):
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.train.a2e_task import load_clips, window_table

    (c,) = load_clips(Dataset.open(dataset), 0.5, 0.75)
    assert c.train == (0, 48) and c.val == (48, 72)  # frames 72.. stay unseen (inner validation)
    starts = window_table([c], 4)[:, 1]
    assert starts.max() + 4 <= 48  # training windows never reach held-out frames
    assert not any(s <= 32 < s + 4 for s in starts)  # nor cover the untracked frame (n_frames // 3)


def test_holdout_block_trains_on_both_sides_of_it(dataset):
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.errors import UsageError
    from realtalk_cli.train.a2e_task import HOLDOUT_GAP, load_clips, window_table

    before, after = load_clips(Dataset.open(dataset), 0.0, holdout=(0.25, 0.5))  # 96 frames: block 24..48
    assert before.train == (0, 24 - HOLDOUT_GAP) and before.val == (24, 48)
    assert after.train == (48 + HOLDOUT_GAP, 96) and after.val is None
    starts = window_table([before, after], 4)
    assert all(s + 4 <= 24 - HOLDOUT_GAP or s >= 48 + HOLDOUT_GAP for _, s in starts)
    (only,) = load_clips(Dataset.open(dataset), 0.0, holdout=(0.0, 0.2))  # nothing to train before the block
    assert only.train == (19 + HOLDOUT_GAP, 96) and only.val == (0, 19)
    for bad in ((0.5, 0.25), (0.2,), (0.0, 1.0)):
        with pytest.raises(UsageError):
            load_clips(Dataset.open(dataset), 0.0, holdout=bad)
