"""The linear a2e (`--adapt`'s CPU default): its convolution is the regression it was fitted as, the
closed-form fit recovers a linear map, and cross-validation regularises what audio cannot predict."""

import json
from functools import partial

import numpy as np
import pytest
import torch

from conftest import make_tiny_dataset
from realtalk_cli.audio.augment import shift_bands, warp_bands
from realtalk_cli.audio.features import mel_edges
from realtalk_cli.inference.a2e import load_a2e
from realtalk_cli.nets.a2e import A2EConfig, A2ELinear
from realtalk_cli.train.a2e_task import RIDGE_LAMBDAS, ClipArrays, fit_linear
from realtalk_cli.train.run import train


def _model(context=2, audio_dim=6, n_exp=3):
    return A2ELinear(A2EConfig(kind="linear", context=context, audio_dim=audio_dim, n_exp=n_exp, n_id=0))


def test_forward_is_the_design_rows_times_the_weights():
    torch.manual_seed(0)
    m = _model()
    m.set_stats((torch.randn(6), torch.rand(6) + 0.5))
    w, b = torch.randn(2 * 6 * 5, 3), torch.randn(3)
    m.set_weights(w, b)
    audio = torch.randn(2 * 20, 6)
    got = m(audio[None], None, None)[0]
    torch.testing.assert_close(got, m.design(audio) @ w + b, rtol=1e-4, atol=1e-4)
    assert got.shape == (20, 3)


def _clip(features, beta):
    n = len(beta)
    return ClipArrays("c", np.zeros(0), beta, np.zeros((n, 6)), features, np.ones(n, bool), (0, n), None)


def test_fit_recovers_a_linear_map_and_shrinks_what_it_cannot_predict():
    rng = np.random.default_rng(0)
    m = _model()
    feats = rng.standard_normal((2 * 400, 6)).astype(np.float32)
    w_true = rng.standard_normal((2 * 6 * 5, 3))
    with torch.no_grad():
        x = m.design(torch.as_tensor(feats)).double().numpy()
    beta = x @ w_true + 0.5 + 0.05 * rng.standard_normal((400, 3))
    clean = fit_linear(m, [_clip(feats, beta)])
    assert clean["lambda"] <= 10.0, clean  # clean data: little regularisation
    new = rng.standard_normal((2 * 100, 6)).astype(np.float32)
    with torch.no_grad():
        pred = m(torch.as_tensor(new)[None])[0].double().numpy()
        truth = m.design(torch.as_tensor(new)).double().numpy() @ w_true + 0.5
    assert np.abs(pred - truth).max() < 0.1 * truth.std()

    noise = rng.standard_normal((400, 3))  # targets the audio says nothing about
    fit = fit_linear(m, [_clip(feats, noise)])
    assert fit["lambda"] >= 100 * clean["lambda"], fit
    with torch.no_grad():
        pred = m(torch.as_tensor(new)[None])[0].numpy()
    assert pred.std(0).max() < 0.2 * noise.std()  # close to the mean, not fitted noise


def test_train_solves_the_linear_stage_in_one_step(tmp_path):
    data = make_tiny_dataset(tmp_path / "data", n_clips=2, n_frames=60)
    train("a2e", data.dir, tmp_path / "run", config="adapt_cpu_linear", device="cpu")
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["split"] == "train"] == [1] and log[0]["lambda"] in RIDGE_LAMBDAS
    model, config = load_a2e(tmp_path / "run")
    assert isinstance(model, A2ELinear) and config["model"]["kind"] == "linear" and config["step"] == 1
    assert model.conv.weight.abs().sum() > 0  # fitted, not the zero initialisation


def test_shift_bands_moves_features_and_repeats_the_edges():
    f = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(shift_bands(f, 2)[0], [0, 0, 0, 1, 2, 3])
    np.testing.assert_array_equal(shift_bands(f, -1)[1], [7, 8, 9, 10, 11, 11])
    assert shift_bands(f, 0) is f


@pytest.mark.parametrize("kind", ["bands", "warp"])
def test_voice_variants_make_the_fit_robust_to_a_voice_with_higher_formants(kind):
    """The mouth follows the energy of a narrow 'formant' band; another voice has it higher (two bands,
    or 1.5 semitones: the band near 1.5 kHz moves 2.3 bands up, between two of the fitted warps)."""
    rng = np.random.default_rng(1)
    bands, formant = (24, 10) if kind == "bands" else (80, 36)
    m = _model(context=1, audio_dim=bands, n_exp=1)
    n = 600
    feats = 0.3 * rng.standard_normal((2 * n, bands)).astype(np.float32)
    level = np.repeat(np.clip(np.convolve(rng.standard_normal(n + 4), np.ones(5) / 5, "valid"), 0, None), 2)
    feats[:, formant] += 3 * level
    beta = level[::2, None]
    if kind == "bands":
        other, variants = shift_bands(feats, 2), [partial(shift_bands, k=k) for k in (-2, -1, 1, 2)]
    else:
        other, variants = warp_bands(feats, 1.5), [partial(warp_bands, semitones=s) for s in (-2, -1, 1, 2)]
    r = {}
    for name, vs in (("plain", []), ("variants", variants)):
        fit_linear(m, [_clip(feats, beta)], vs)
        with torch.no_grad():
            pred = m(torch.as_tensor(other)[None])[0].numpy()
        r[name] = np.corrcoef(pred[:, 0], beta[:, 0])[0, 1]
    assert r["variants"] > 0.8 and r["plain"] < 0.5, r


def test_warp_bands_moves_a_peak_by_its_frequency_ratio():
    centres = mel_edges(80, 0.0, 8000.0)[1:-1]
    for hz, st in ((500.0, 3.0), (1500.0, 3.0), (3000.0, -2.0)):
        f = np.zeros((1, 80), np.float32)
        f[0, np.argmin(abs(centres - hz))] = 1.0
        moved = warp_bands(f, st)[0]
        target = centres[np.argmin(abs(centres - hz))] * 2 ** (st / 12)
        assert abs(centres[np.argmax(moved)] - target) <= np.diff(centres)[np.argmin(abs(centres - target))], (hz, st)
    f = np.sin(np.arange(80) / 6.0 + np.arange(3)[:, None]).astype(np.float32)  # smooth spectra
    assert warp_bands(f, 0) is f
    assert np.abs(warp_bands(warp_bands(f, 1.0), -1.0) - f)[:, 5:75].max() < 0.02  # and back


def test_linear_a2e_exports_to_onnx_and_runs_as_dub_runs_it(tmp_path):
    from realtalk_cli.inference.a2e import predict_expressions
    from realtalk_cli.inference.onnx import OnnxModel, OnnxNet
    from realtalk_cli.pipelines.export import export_pipeline

    torch.manual_seed(0)
    m = _model(context=4, audio_dim=8, n_exp=4).eval()
    m.set_weights(torch.randn(2 * 8 * 9, 4), torch.randn(4))
    report = export_pipeline(m, None, tmp_path)
    assert report["a2e"]["max_abs_diff"] < 1e-4
    onnx = OnnxNet(OnnxModel(tmp_path / "a2e.onnx"), m.cfg)
    feats = np.random.default_rng(0).standard_normal((2 * 50, 8)).astype(np.float32)
    history = np.zeros((m.cfg.n_history, 4), np.float32)
    np.testing.assert_allclose(predict_expressions(onnx, feats, np.zeros(0), history),
                               predict_expressions(m, feats, np.zeros(0), history), atol=1e-4)


def test_a_generic_prior_teaches_what_seconds_of_speech_cannot():
    """Many speakers share most of the map from sound to mouth; a new one has a few seconds of speech."""
    rng = np.random.default_rng(2)
    m = _model()
    shared = rng.standard_normal((2 * 6 * 5, 3))
    own = shared + 0.3 * rng.standard_normal(shared.shape)  # this person's map: close to the shared one

    def speech(n, w, noise=1.0):
        feats = rng.standard_normal((2 * n, 6)).astype(np.float32)
        with torch.no_grad():
            x = m.design(torch.as_tensor(feats)).double().numpy()
        return feats, x @ w + noise * rng.standard_normal((n, 3))

    fit_linear(m, [_clip(*speech(2000, shared))])  # the generic model, from many speakers
    prior = m.weights()[0].double().numpy()
    test_feats, _ = speech(200, own)
    with torch.no_grad():
        truth = m.design(torch.as_tensor(test_feats)).double().numpy() @ own

    def error(fit_clip, p):
        fit = fit_linear(m, [fit_clip], prior=p)
        with torch.no_grad():
            pred = m(torch.as_tensor(test_feats)[None])[0].double().numpy()
        return np.sqrt(((pred - pred.mean(0) - truth + truth.mean(0)) ** 2).mean()), fit

    few = _clip(*speech(40, own))  # a few seconds
    plain, fit_plain = error(few, None)
    guided, fit_guided = error(few, prior)
    assert fit_guided["prior"] == 1 and fit_plain["prior"] == 0
    assert guided < 0.5 * plain, (guided, plain)

    with torch.no_grad():
        generic = np.sqrt(((m.design(torch.as_tensor(test_feats)).double().numpy() @ (prior - own)) ** 2).mean())
    much = _clip(*speech(3000, own))  # minutes of this person move the fit from the generic map to theirs
    moved, _ = error(much, prior)
    assert moved < 0.3 * generic, (moved, generic)

    wrong = _clip(*speech(400, -shared))  # a prior that does not fit this person is not kept
    _, fit_wrong = error(wrong, prior)
    assert fit_wrong["prior"] == 0, fit_wrong


def test_voice_variants_change_the_mel_part_only(tmp_path):
    """With mel+phones features a warped copy is another voice saying the same phones: the 80 mel
    columns are warped, the phone posteriors beside them are kept."""
    from realtalk_cli.train.a2e_task import _on_mel

    rng = np.random.default_rng(0)
    f = rng.standard_normal((6, 80 + 42)).astype(np.float32)
    out = _on_mel(f, partial(warp_bands, semitones=2.0), n_mels=80)
    np.testing.assert_array_equal(out[:, 80:], f[:, 80:])
    np.testing.assert_allclose(out[:, :80], warp_bands(f[:, :80], 2.0))
    assert _on_mel(f[:, :80], partial(shift_bands, k=1), n_mels=80).shape == (6, 80)


def test_a_held_out_block_never_reaches_the_fit(tmp_path):
    """Cross-fitting (task.holdout): what the audio of the held-out block says cannot change the model,
    so a prediction of that block is a prediction of speech the model never heard."""
    from safetensors.numpy import load_file, save_file

    from realtalk_cli.data.dataset import Dataset

    data = make_tiny_dataset(tmp_path / "data", n_clips=1, n_frames=80)
    weights = []
    for name in ("as is", "block scrambled"):
        if name == "block scrambled":  # the audio features of frames 20..40, nothing else
            path = Dataset.open(data.dir).clips()[0].dir / "features.safetensors"
            feats = load_file(path)["features"]
            feats[40:80] = np.random.default_rng(1).standard_normal(feats[40:80].shape) * 5
            save_file({"features": feats}, path)
        train("a2e", data.dir, tmp_path / name, config="adapt_cpu_linear", device="cpu",
              overrides={"task": {"holdout": [0.25, 0.5]}})
        weights.append(load_a2e(tmp_path / name)[0].weights()[0])
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
    train("a2e", data.dir, tmp_path / "seen", config="adapt_cpu_linear", device="cpu")  # without: they count
    assert not torch.equal(load_a2e(tmp_path / "seen")[0].weights()[0], weights[1])
