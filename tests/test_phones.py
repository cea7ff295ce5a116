"""Phone posteriors from a Sphinx acoustic model (audio/phones.py) and the mel+phones front end."""

import struct

import numpy as np
import pytest
from scipy.signal import lfilter

from realtalk_cli.audio.features import AudioFeatureConfig, AudioFrontEnd
from realtalk_cli.audio.phones import SphinxPhoneModel, default_model_dir
from realtalk_cli.errors import RealtalkError

SR = 16000


def _vowel(f1: float, f2: float, seconds: float, f0: float = 120.0) -> np.ndarray:
    """A pulse train through three formant resonators: a synthetic vowel."""
    y = np.zeros(int(seconds * SR))
    y[:: int(SR / f0)] = 1.0
    for f, bw in ((f1, 80), (f2, 100), (2500, 150)):
        r, th = np.exp(-np.pi * bw / SR), 2 * np.pi * f / SR
        y = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], y)
    return 0.3 * y / np.abs(y).max()


def _quiet(seconds: float, rng) -> np.ndarray:
    return 1e-4 * rng.standard_normal(int(seconds * SR))


# -- writers of the Sphinx formats the loader reads -------------------------------------------------

def _write_s3(path, array):  # [codebooks, streams, densities, veclen] float32
    n_cb, n_feat, n_den, veclen = array.shape
    body = struct.pack("<I3i", 0x11223344, n_cb, n_feat, n_den) + struct.pack(f"<{n_feat}i", *[veclen] * n_feat)
    path.write_bytes(b"s3\nversion 1.0\nchksum0 no\nendhdr\n" + body + struct.pack("<i", array.size)
                     + array.astype("<f4").tobytes())


def _write_sendump(path, neg_log):  # uint8 [streams, codewords, senones]
    strings = [b"a tiny model", f"feature_count {neg_log.shape[0]}".encode(), b"cluster_count 0"]
    head = b"".join(struct.pack("<i", len(s) + 1) + s + b"\0" for s in strings) + struct.pack("<i", 0)
    path.write_bytes(head + struct.pack("<2i", neg_log.shape[1], neg_log.shape[2]) + neg_log.astype(np.uint8).tobytes())


def _write_mdef(path, phones, n_states):
    desc = b"BEGIN FILE FORMAT DESCRIPTION\0"
    head = struct.pack("<10i", len(phones), len(phones), n_states, n_states * len(phones), n_states * len(phones),
                       len(phones), len(phones), 3, 0, 0)
    path.write_bytes(b"BMDF" + struct.pack("<ii", 1, len(desc)) + desc + head + b"".join(p.encode() + b"\0" for p in phones))


def _tiny_model(directory, means, phones):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "feat.params").write_text("-lowerf 130\n-upperf 6800\n-nfilt 25\n-lifter 22\n-feat 1s_c_d_dd\n")
    _write_s3(directory / "means", means)
    _write_s3(directory / "variances", np.ones_like(means))
    P, S, K, _ = means.shape
    # weights exp(-0.1 v): density 0 carries (nearly) all of each senone's mass
    v = np.full((S, K, 3 * P), 255)
    v[:, 0] = 0
    _write_sendump(directory / "sendump", v)
    _write_mdef(directory / "mdef", phones, 3)
    return directory


def test_a_tiny_sphinx_model_built_here_loads_and_tells_its_phones_apart(tmp_path):
    """Two 'phones' whose Gaussians sit on the streams of quiet and of a vowel: the loader parses
    the files it wrote, and each part of the signal is given to its phone."""
    rng = np.random.default_rng(0)
    wav = np.concatenate([_quiet(0.5, rng), _vowel(730, 1090, 0.5), _quiet(0.5, rng)])
    zeros = np.zeros((2, 3, 2, 13))
    probe = SphinxPhoneModel(_tiny_model(tmp_path / "probe", zeros, ["SIL", "AA"]))
    streams = probe.streams(wav)  # 148 frames at 100 Hz
    means = zeros.copy()
    means[0, :, 0] = streams[10:40].mean(0)  # SIL: the first quiet part
    means[1, :, 0] = streams[60:90].mean(0)  # AA: the vowel
    model = SphinxPhoneModel(_tiny_model(tmp_path / "tiny", means, ["SIL", "AA"]))
    assert model.phones == ["SIL", "AA"] and model.means.shape == (2, 3, 2, 13)
    np.testing.assert_allclose(np.exp(model.log_w).sum(-1), 1.0, atol=0.02)  # weights are probabilities
    post = model.posteriors(wav)
    assert post.shape == (len(streams), 2) and np.allclose(post.sum(1), 1)
    assert (post[60:90, 1] > 0.9).all() and (post[110:140, 0] > 0.9).all()  # the second quiet part too


def test_the_en_us_model_of_the_pocketsphinx_package_hears_an_open_vowel():
    rng = np.random.default_rng(0)
    model = SphinxPhoneModel()
    assert model.dir == default_model_dir() and len(model.phones) == 42 and "SIL" in model.phones
    wav = np.concatenate([_quiet(0.6, rng), _vowel(730, 1090, 0.6), _quiet(0.6, rng)])
    rows = model.features(wav)  # 50 Hz
    assert rows.shape == (int(np.ceil(len(wav) / 320)), 42) and np.allclose(rows.sum(1), 1, atol=1e-5)
    vowel, quiet = rows[35:55].mean(0), rows[65:85].mean(0)
    assert model.phones[int(np.argmax(vowel))] == "AA"
    assert model.phones[int(np.argmax(quiet))] == "SIL"


def test_mel_plus_phones_is_the_mel_with_phone_posteriors_beside_it():
    rng = np.random.default_rng(1)
    wav = np.concatenate([_quiet(0.3, rng), _vowel(600, 1200, 0.4), _quiet(0.3, rng)]).astype(np.float32)
    mel = AudioFrontEnd(AudioFeatureConfig(kind="mel"))
    both = AudioFrontEnd(AudioFeatureConfig(kind="mel+phones"))
    assert both.dim == 80 + 42
    f = both(wav, 60)
    assert f.shape == (60, 122)
    np.testing.assert_allclose(f[:, :80], mel(wav, 60), atol=1e-5)
    np.testing.assert_allclose(f[:, 80:].sum(1), 1, atol=1e-5)


def test_a_broken_model_directory_is_one_clear_error(tmp_path):
    (tmp_path / "feat.params").write_text("-nfilt 25\n")
    with pytest.raises(RealtalkError, match="cannot read the Sphinx acoustic model"):
        SphinxPhoneModel(tmp_path)
