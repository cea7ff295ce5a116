"""Audio front ends: shapes, the 2-features-per-frame alignment rule, chunking, tiny HuBERT."""

import numpy as np
import pytest

from realtalk_cli.audio.features import AudioFrontEnd, mel_filterbank
from realtalk_cli.errors import RealtalkError


def test_mel_shape_and_exact_count():
    fe = AudioFrontEnd({"kind": "mel"})
    wav = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    assert fe(wav).shape == (50, 80) and fe.dim == 80
    assert fe.features_for_frames(wav, 30).shape == (60, 80)  # padded past the audio
    assert fe.features_for_frames(wav, 10).shape == (20, 80)  # trimmed
    with pytest.raises(RealtalkError):
        fe.features_for_frames(wav, 10, fps=30)


def test_alignment_rule_click_lands_in_its_video_frame():
    """A click inside video frame t (samples 640t..640t+640) shows up in features 2t and 2t+1."""
    fe = AudioFrontEnd({"kind": "mel"})
    for t, offset in ((7, 100), (7, 500), (12, 330)):
        wav = np.zeros(16000, np.float32)
        wav[640 * t + offset:640 * t + offset + 20] = 1.0
        energy = np.exp(fe.features_for_frames(wav, 25)).sum(1)
        assert energy.argmax() // 2 == t
        assert energy.argmax() == 2 * t + (offset >= 320)


def test_chunked_mel_equals_unchunked():
    wav = np.random.default_rng(1).normal(0, 0.1, 3 * 16000 + 123).astype(np.float32)
    whole = AudioFrontEnd({"kind": "mel", "chunk_seconds": 100})(wav)
    chunked = AudioFrontEnd({"kind": "mel", "chunk_seconds": 0.37})(wav)
    assert np.allclose(whole, chunked, atol=1e-4)


def test_filterbank_covers_spectrum():
    fb = mel_filterbank(80, 640, 16000, 0, 8000)
    assert fb.shape == (80, 321) and (fb.sum(1) > 0).all() and (fb >= 0).all()


def test_unknown_kind_and_settings_are_errors():
    with pytest.raises(RealtalkError):
        AudioFrontEnd({"kind": "wav2vec"})
    with pytest.raises(RealtalkError):
        AudioFrontEnd({"kind": "mel", "bogus": 1})


def test_hubert_hub_id_is_a_clear_error_not_a_download(tmp_path):
    with pytest.raises(RealtalkError, match="local copy.*save_pretrained.*--hubert") as e:
        AudioFrontEnd({"kind": "hubert", "hubert": "facebook/hubert-large-ls960-ft"})
    assert "facebook/hubert-large-ls960-ft" in str(e.value) and "\n" not in str(e.value)


def test_hubert_tiny_model(tiny_hubert):
    fe = AudioFrontEnd({"kind": "hubert", "hubert": str(tiny_hubert), "layer": 1})
    assert fe.dim == 32 and fe.to_dict()["kind"] == "hubert"
    wav = np.random.default_rng(2).normal(0, 0.1, 16000).astype(np.float32)
    feats = fe.features_for_frames(wav, 25)
    assert feats.shape == (50, 32) and np.isfinite(feats).all()
    # chunking with context approximates the whole-utterance features closely
    chunked = AudioFrontEnd({"kind": "hubert", "hubert": str(tiny_hubert), "layer": 1, "chunk_seconds": 0.4,
                             "context_seconds": 0.3}).features_for_frames(wav, 25)
    assert chunked.shape == feats.shape
    assert np.corrcoef(chunked.ravel(), feats.ravel())[0, 1] > 0.9


def test_hubert_input_normalisation_follows_preprocessor(tiny_hubert, tmp_path):
    import shutil

    from transformers import Wav2Vec2FeatureExtractor

    assert AudioFrontEnd({"kind": "hubert", "hubert": str(tiny_hubert)}).config.normalize is False
    large_like = tmp_path / "hubert_norm"
    shutil.copytree(tiny_hubert, large_like)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(large_like)
    fe = AudioFrontEnd({"kind": "hubert", "hubert": str(large_like)})
    assert fe.config.normalize is True
    wav = np.random.default_rng(3).normal(0, 0.1, 8000).astype(np.float32)
    assert np.allclose(fe(wav), fe(wav * 7 + 0.01), atol=1e-3)  # invariant to gain and offset


def test_hubert_bad_path_and_layer(tiny_hubert, tmp_path):
    with pytest.raises(RealtalkError):
        AudioFrontEnd({"kind": "hubert", "hubert": str(tmp_path / "nope")})
    with pytest.raises(RealtalkError):
        AudioFrontEnd({"kind": "hubert", "hubert": str(tiny_hubert), "layer": 5})
    with pytest.raises(RealtalkError):
        AudioFrontEnd({"kind": "hubert"})
