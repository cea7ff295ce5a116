"""Whisper front end (audio/whisper.py): log-mel as Whisper's, alignment, windows and joins, exact
counts, errors, the packaged model's join into the cache, and the per-speech feature cache.

Hermetic: the models are tiny random Whispers converted to CTranslate2 here. "local" has its
attention output and positional embeddings zeroed, so each state depends only on the audio under its
convolutions: its states must not depend on how the speech is cut into windows, which checks the
window arithmetic exactly.
"""

import json
import os

import numpy as np
import pytest

from realtalk_cli.audio import whisper as W
from realtalk_cli.audio.features import AudioFeatureConfig, AudioFrontEnd
from realtalk_cli.errors import RealtalkError

SR = 16000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    root = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
                        max_source_positions=1500, max_target_positions=64, pad_token_id=0, bos_token_id=0,
                        eos_token_id=0, decoder_start_token_id=0, suppress_tokens=[], begin_suppress_tokens=[])
    model = WhisperForConditionalGeneration(cfg)
    # the converter takes the vocabulary from a tokenizer: a byte-level BPE with 27 tokens, no merges
    hf = root / "hf"
    hf.mkdir()
    (hf / "vocab.json").write_text(json.dumps({"<|endoftext|>": 0, **{chr(97 + i): i + 1 for i in range(26)}}))
    (hf / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = WhisperTokenizer(str(hf / "vocab.json"), str(hf / "merges.txt"))
    out = {}
    for name in ("tiny", "local"):
        if name == "local":
            with torch.no_grad():
                model.model.encoder.embed_positions.weight.zero_()
                for layer in model.model.encoder.layers:
                    layer.self_attn.out_proj.weight.zero_()
        model.save_pretrained(hf)
        tokenizer.save_pretrained(hf)
        TransformersConverter(str(hf)).convert(str(root / name), force=True)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def local(models):
    return W.WhisperEncoder(models["local"], compute_type="float32")


@pytest.fixture(scope="module")
def tiny(models):
    return W.WhisperEncoder(models["tiny"])  # int8, as on any CPU


def noise(seconds, seed=0, scale=0.1):
    return np.random.default_rng(seed).normal(0, scale, int(seconds * SR)).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.2, 1.0, 45.0, 70.0])
def test_exact_counts(tiny, seconds):
    wav = noise(seconds)
    n = int(np.ceil(len(wav) / 320))
    for m in (n, n + 7, max(1, n - 3)):  # as long as the speech, padded past it, trimmed
        states = tiny.states(wav, m)
        assert states.shape == (m, 32) and states.dtype == np.float32 and np.isfinite(states).all()


def test_front_end_kind_whisper(models):
    fe = AudioFrontEnd({"kind": "whisper", "whisper": str(models["tiny"])})
    assert fe.dim == 32 and fe.to_dict()["whisper"] == str(models["tiny"])
    assert AudioFeatureConfig.from_dict(fe.to_dict()).kind == "whisper"
    wav = noise(1.0)
    assert fe(wav).shape == (50, 32) and fe.features_for_frames(wav, 30).shape == (60, 32)
    assert fe(wav, 0).shape == (0, 32)


def test_log_mel_equals_transformers_feature_extractor():
    from transformers import WhisperFeatureExtractor

    for n_mels in (80, 128):
        fx = WhisperFeatureExtractor(feature_size=n_mels)
        for seconds in (1.3, 30.0, 31.0):  # zero-padded, exact, trimmed to 30 s
            wav = noise(seconds, seed=n_mels)
            ref = fx(wav, sampling_rate=SR, return_tensors="np").input_features[0]
            assert ref.shape == (n_mels, 3000)
            assert np.abs(W.log_mel(wav, n_mels) - ref).max() < 1e-4


def test_alignment_click_moves_only_the_states_over_it(local):
    """A click at the centre of hop interval m changes exactly rows m-1, m, m+1 (the convolutions'
    receptive field, centred on interval m): without the 160-sample lead it would be rows m-1..m+2."""
    wav = noise(4.0)
    wav[int(3.5 * SR):int(3.5 * SR) + 400] = 1.0  # the window's loudest frame, so a click cannot move the log-mel floor
    base = local.states(wav, 200)
    for m in (0, 1, 50, 101, 150):
        clicked = wav.copy()
        clicked[320 * m + 160] += 0.05
        changed = np.flatnonzero(np.abs(local.states(clicked, 200) - base).max(1) > 1e-6)
        assert changed.tolist() == [i for i in (m - 1, m, m + 1) if i >= 0], m


def test_windows_cover_and_weights_sum_to_one():
    for n_states in (1, 1500, 1501, 2500, 2501, 3501, 30001):
        total = np.zeros(n_states)
        for start, weight in W.window_plan(n_states):
            covered = weight[:n_states - start]
            assert not weight[n_states - start:].any()  # nothing past the end
            total[start:start + len(covered)] += covered
        assert np.allclose(total, 1)
    plan = W.window_plan(3501)  # 70 s: joins at 25, 45 and 65 s
    assert [s for s, _ in plan] == [0, 1000, 2000, 3000]
    first, second = plan[0][1], plan[1][1]
    assert first[:1150].min() == 1 and first[1350:].max() == 0 and second[:150].max() == 0
    assert 0 < first[1249] < 1 and abs(first[1249] + second[249] - 1) < 1e-6  # cross-faded around 1250


def test_no_seams_windowing_is_invisible_to_a_local_model(local):
    """70 s (4 windows) against one 30 s window centred on each join: the same states (a position-free,
    attention-free model sees only the audio under its convolutions, so any offset slip would show)."""
    wav = noise(70.0, seed=3)
    n = 3500
    states = local.states(wav, n)
    u = np.concatenate([np.zeros(W.LEAD, np.float32), wav])
    for join in (1250, 2250, 3250):  # joins, in states of u (the output drops u's state 0)
        c0 = join - 750
        ref = local._encode(W.log_mel(u[320 * c0:320 * c0 + W.WINDOW_SAMPLES]))
        rows = np.arange(join - 150, join + 150)
        assert np.abs(states[rows - 1] - ref[rows - c0]).max() < 1e-4


def test_joins_cross_fade_without_a_step(tiny):
    """A real Whisper's states depend on where a sound falls in the 30 s window (the tiny random
    model's mostly on that), so a hard cut at a join would be a step: the cross-fade spreads it."""
    states = tiny.states(noise(70.0, seed=4), 3500)
    step = np.linalg.norm(np.diff(states, axis=0), axis=1)
    typical = np.median(step)
    for join in (1249, 2249, 3249):
        assert step[join - W.FADE - 1:join + W.FADE].max() < 1.6 * typical


def test_long_speech_memory_is_bounded(tiny, monkeypatch):
    """10 minutes: 30 windows, each log-mel'd and encoded on its own."""
    sizes = []
    log_mel = W.log_mel
    monkeypatch.setattr(W, "log_mel", lambda a, n_mels: sizes.append(len(a)) or log_mel(a, n_mels))
    states = tiny.states(noise(600.0, scale=0.05), 30000)
    assert states.shape == (30000, 32) and len(sizes) == 30 and max(sizes) == W.WINDOW_SAMPLES


def test_model_dir_errors_name_the_path(models, tmp_path):
    import shutil

    with pytest.raises(RealtalkError, match="no such Whisper model directory") as e:
        W.WhisperEncoder(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RealtalkError, match="no model.bin") as e:
        W.WhisperEncoder(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(e.value)
    bad = tmp_path / "bad"
    shutil.copytree(models["tiny"], bad)
    size = (bad / "model.bin").stat().st_size
    for damage in (lambda f: os.truncate(f, size // 2), lambda f: f.write_bytes(os.urandom(size))):
        damage(bad / "model.bin")
        with pytest.raises(RealtalkError, match="cannot load the Whisper model") as e:
            W.WhisperEncoder(bad)
        assert str(bad / "model.bin") in str(e.value) and "\n" not in str(e.value)


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Two small 'wheels' and the constants that describe them; the cache in tmp_path/cache."""
    import hashlib

    halves = [os.urandom(3000), os.urandom(2000)]
    dirs = {}
    for i, (half, (package, name, _, _)) in enumerate(zip(halves, W.WHISPER_BASE_PARTS)):
        dirs[package] = tmp_path / f"pkg{i + 1}" / "data"
        dirs[package].mkdir(parents=True)
        (dirs[package] / name).write_bytes(half)
    for name in W.EXTRA_FILES:
        (dirs[W.WHISPER_BASE_PARTS[0][0]] / name).write_text("{}")
    monkeypatch.setattr(W, "_package_data", lambda package: dirs[package])
    monkeypatch.setattr(W, "WHISPER_BASE_PARTS", tuple(
        (package, name, len(half), hashlib.sha256(half).hexdigest())
        for half, (package, name, _, _) in zip(halves, W.WHISPER_BASE_PARTS)))
    monkeypatch.setattr(W, "WHISPER_BASE_SIZE", 5000)
    monkeypatch.setattr(W, "WHISPER_BASE_SHA256", hashlib.sha256(b"".join(halves)).hexdigest())
    monkeypatch.setenv("REALTALK_CACHE", str(tmp_path / "cache"))
    return [dirs[p] / name for p, name, _, _ in W.WHISPER_BASE_PARTS], b"".join(halves)


def test_default_model_dir_joins_once(fake_parts):
    parts, whole = fake_parts
    d = W.default_model_dir()
    assert d.parent == W.cache_root() and d.name == f"whisper-base-{W.WHISPER_BASE_SHA256[:12]}"
    assert (d / "model.bin").read_bytes() == whole and all((d / f).is_file() for f in W.EXTRA_FILES)
    parts[1].write_bytes(b"x" * 2000)  # a join now would fail: a second call must reuse the cache
    assert W.default_model_dir() == d
    os.truncate(d / "model.bin", 100)  # the size is checked every time: a damaged cache is joined again
    with pytest.raises(RealtalkError, match="sha256"):
        W.default_model_dir()
    assert W.whisper_unavailable() is None  # sizes are right; only the (later) join sees the hash


def test_wrong_part_is_an_error_and_leaves_no_cache(fake_parts):
    parts, _ = fake_parts
    parts[1].write_bytes(b"x" * 2000)  # right size, wrong bytes
    with pytest.raises(RealtalkError, match="sha256") as e:
        W.default_model_dir()
    assert str(parts[1]) in str(e.value) and "\n" not in str(e.value)
    assert not W.cache_root().exists() or not any(W.cache_root().iterdir())  # no half-written model, no temp dir
    parts[0].write_bytes(b"x" * 10)  # wrong size: found before any hashing or writing
    with pytest.raises(RealtalkError, match="10 bytes, expected 3000") as e:
        W.default_model_dir()
    assert str(parts[0]) in str(e.value) and str(parts[0]) in W.whisper_unavailable()


def test_missing_package_is_a_reason_not_a_crash(monkeypatch):
    monkeypatch.setattr(W, "WHISPER_BASE_PARTS", (("no_such_package_xyz", "model.bin.part1", 1, "0"),))
    assert "no-such-package-xyz" in W.whisper_unavailable()


def test_feature_cache_hit_skips_the_encoder(models, tmp_path, monkeypatch):
    monkeypatch.setenv("REALTALK_CACHE", str(tmp_path / "cache"))
    fe = AudioFrontEnd({"kind": "whisper", "whisper": str(models["tiny"])})
    wav = noise(2.0, seed=7)
    first = fe(wav, 100)
    assert len(list((tmp_path / "cache" / "features" / "whisper").glob("*.npy"))) == 1
    calls = []
    encode = fe._whisper._encode
    monkeypatch.setattr(fe._whisper, "_encode", lambda mel: calls.append(1) or encode(mel))
    assert np.array_equal(fe(wav, 100), first) and not calls  # from disk
    fe(wav, 90)
    fe(wav * 0.5, 100)
    assert len(calls) == 2  # another n, other samples: computed


@pytest.mark.skipif(bool(W.whisper_unavailable()), reason=W.whisper_unavailable() or "")
def test_packaged_whisper_base(tmp_path, monkeypatch):
    monkeypatch.setenv("REALTALK_CACHE", str(tmp_path / "cache"))
    fe = AudioFrontEnd({"kind": "whisper"})
    assert fe.dim == 512 and fe._whisper.n_mels == 80
    feats = fe(noise(1.0), 50)
    assert feats.shape == (50, 512) and np.isfinite(feats).all()
