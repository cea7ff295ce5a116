"""The lip prior: fitted on many people, mapped onto one, shipped with the package (nets/lip_prior.py,
train/lip_prior.py, train/a2e_task.py: task.prior, match_amplitude)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from conftest import make_tiny_dataset
from realtalk_cli.errors import RealtalkError, UsageError
from realtalk_cli.face.mouth import LIP_POINTS, lip_gap, lip_shapes
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear
from realtalk_cli.nets.lip_prior import LipPrior, LipPriorConfig
from realtalk_cli.train.a2e_task import A2ETask, default_config, match_amplitude, mouth_metric, pearson
from realtalk_cli.train.lip_prior import fit_lip_prior, load_prior_clips
from realtalk_cli.train.run import merge, read_config

SMALL = LipPriorConfig(features="mel", n_comps=3, project=16, context=2, ridge=10.0, smooth=1.0, max_lag=4, n_frames=16)


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """Four synthetic people whose mouths follow their loudness (mel features)."""
    return make_tiny_dataset(tmp_path_factory.mktemp("people"), n_clips=4, n_frames=150, crop_size=48).dir


def predicted_gap(prior: LipPrior, clip) -> np.ndarray:
    y = prior.coords(clip.landmarks3d, clip.valid)
    with torch.no_grad():
        pred = prior.model(torch.as_tensor(clip.features)[None])[0].numpy() * y[clip.valid, 0].std()
    lips = lip_shapes(clip.landmarks3d, prior.template)
    return lip_gap(lips[clip.valid].mean(0) + pred @ prior.basis)


def test_prior_from_other_people_predicts_a_new_persons_mouth(people):
    clips, audio = load_prior_clips(people, "mel")
    prior, _ = fit_lip_prior(clips[:3], audio, SMALL)
    new = clips[3]
    truth = lip_gap(lip_shapes(new.landmarks3d, prior.template))
    assert pearson(predicted_gap(prior, new), truth) > 0.7
    # the same fit on features that say nothing about the mouth predicts nothing
    rng = np.random.default_rng(0)
    for c in clips[:3]:
        c.features = rng.standard_normal(c.features.shape).astype(np.float32)
    blind, _ = fit_lip_prior(clips[:3], audio, SMALL)
    assert abs(pearson(predicted_gap(blind, new), truth)) < 0.3


def test_a_clip_whose_video_lags_its_audio_is_retimed(people):
    clips, audio = load_prior_clips(people, "mel")
    _, info = fit_lip_prior(clips, audio, SMALL)
    assert info["lags"] == {}
    clips[1].landmarks3d = np.roll(clips[1].landmarks3d, 3, axis=0)  # its mouth shows the audio of 3 frames before
    _, info = fit_lip_prior(clips, audio, SMALL)
    # measured against a first fit that heard this clip too, so it may come out a frame short
    assert list(info["lags"]) == ["synth01"] and info["lags"]["synth01"] in (2, 3)


def test_prior_saves_and_loads_and_says_what_is_wrong(people, tmp_path):
    clips, audio = load_prior_clips(people, "mel")
    prior, _ = fit_lip_prior(clips, audio, SMALL)
    prior.save_pretrained(tmp_path / "prior")
    again = LipPrior.from_pretrained(tmp_path / "prior")
    x = torch.as_tensor(clips[0].features)[None]
    with torch.no_grad():
        assert torch.equal(prior.model(x), again.model(x))
    assert np.array_equal(prior.basis, again.basis) and again.fit == SMALL and again.audio["kind"] == "mel"
    with pytest.raises(RealtalkError, match="no lip prior"):
        LipPrior.from_pretrained(tmp_path / "nothing")
    with pytest.raises(UsageError, match="hears whisper\\+mel features, this dataset has mel"):
        load_prior_clips(people, "whisper+mel")


def test_cli_fits_a_prior_and_writes_the_config_it_used(people, tmp_path):
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps({"fit": SMALL.__dict__}))
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "train", "--stage", "lip_prior", "--data", str(people),
                        "--out", str(tmp_path / "p"), "--config", str(cfg)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert LipPrior.from_pretrained(tmp_path / "p").info["clips"] == ["synth00", "synth01", "synth02", "synth03"]
    assert json.loads((tmp_path / "p" / "run_config.json").read_text())["fit"]["project"] == 16


def person_task(data, prior_dir, split=0.7, **task):
    cfg = merge(default_config(), read_config("adapt_cpu_prior"))
    cfg = merge(cfg, {"task": {"prior": str(prior_dir), "split_frames": split, **task}})
    return A2ETask(data, cfg, torch.device("cpu"))


def test_person_starts_from_the_prior_and_moves_as_much_as_they_do(people, tmp_path):
    clips, audio = load_prior_clips(people, "mel")
    prior, _ = fit_lip_prior(clips, audio, SMALL)
    prior.save_pretrained(tmp_path / "prior")
    person = make_tiny_dataset(tmp_path / "person", n_clips=1, n_frames=150, crop_size=48, seed=7).dir
    task = person_task(person, tmp_path / "prior")
    model = task.models["a2e"]
    assert model.cfg.project == SMALL.project and model.cfg.context == SMALL.context and model.cfg.n_frames == 16
    assert torch.any(model.weights()[0] != 0)
    # before any fit to this person, the prior alone follows their held-out mouth
    assert task.validate()["mouth_corr"] > 0.6
    # the amplitude is matched by scaling the motion about its mean
    c = task.clips[0]
    x = torch.as_tensor(c.features[: 2 * c.train[1]])[None]
    with torch.no_grad():
        before = model(x)[0].double().numpy()
    g = match_amplitude(model, task.clips, mouth_metric(task.face), max_gain=10.0)
    with torch.no_grad():
        after = model(x)[0].double().numpy()
    assert g > 1.0
    assert np.allclose(after - after.mean(0), g * (before - before.mean(0)), atol=1e-4)
    m = mouth_metric(task.face)
    spread = lambda b: np.einsum("ti,ij,tj->", b - b.mean(0), m, b - b.mean(0))  # noqa: E731
    assert spread(after) == pytest.approx(spread(c.beta[: c.train[1]].astype(np.float64)), rel=1e-3)
    # the closed-form step (as `dub --adapt` runs it) records the gain it applied
    logged = person_task(person, tmp_path / "prior").train_step(None, None)
    assert 1.0 <= logged["gain"] <= 2.5 and logged["cv_gain"] > 0


def test_a_prior_that_hears_other_features_is_refused(people, tmp_path):
    clips, audio = load_prior_clips(people, "mel")
    prior, _ = fit_lip_prior(clips, audio, SMALL)
    prior.audio = {**prior.audio, "kind": "whisper+mel"}
    prior.save_pretrained(tmp_path / "prior")
    with pytest.raises(UsageError, match="lip prior hears whisper\\+mel features, this dataset has mel"):
        person_task(people, tmp_path / "prior")


def test_linear_projection_and_smoothing():
    torch.manual_seed(0)
    cfg = A2EConfig(kind="linear", audio_dim=5, n_id=0, n_exp=3, n_frames=20, context=2, project=4)
    model = A2ELinear(cfg)
    model.set_projection(torch.randn(10, 4))
    w, b = torch.randn(4 * 5, 3), torch.randn(3)
    model.set_weights(w, b)
    audio = torch.randn(40, 5)
    with torch.no_grad():
        plain = model(audio[None])[0]
    assert model.design(audio).shape == (20, 4 * 5)
    assert torch.allclose(plain, model.design(audio) @ w + b, atol=1e-5)
    smooth = A2ELinear(A2EConfig(**{**cfg.to_dict(), "smooth": 1.5}))
    smooth.load_state_dict(model.state_dict())
    expected = gaussian_filter1d(plain.numpy(), 1.5, axis=0, mode="nearest", truncate=3.0)
    assert np.allclose(smooth(audio[None])[0].detach().numpy(), expected, atol=1e-5)


def test_shipped_prior_hears_whisper_and_mel_and_opens_the_mouth_first():
    prior = LipPrior.from_pretrained()
    assert prior.audio["kind"] == "whisper+mel" and prior.model.cfg.audio_dim == 80 + 512
    assert prior.basis.shape == (prior.fit.n_comps, 2 * len(LIP_POINTS))
    rest = prior.template[LIP_POINTS, :2].reshape(1, -1)
    assert lip_gap(rest + 0.05 * prior.basis[:1])[0] > lip_gap(rest)[0] + 0.01
    assert len(prior.info["clips"]) >= 20  # many people (its MODEL_CARD.md lists them)


def test_without_whisper_adapt_falls_back_to_mel_and_phones_and_says_so(monkeypatch, capfd):
    import realtalk_cli.audio.whisper as whisper
    from realtalk_cli.pipelines import adapt

    assert adapt.lip_route() == adapt.LIPS["prior"]
    monkeypatch.setattr(whisper, "whisper_unavailable", lambda: "whisper-base is not installed (pip install ...)")
    monkeypatch.setattr(adapt, "_SAID", set())
    assert adapt.lip_route() == adapt.LIPS["own"] and adapt.lip_route() == adapt.LIPS["own"]
    err = capfd.readouterr().err
    assert err.count("whisper-base is not installed") == 1 and "mel+phones" in err
