"""`dub` without a model adapts: learn the person from the video itself with a tiny budget, cache, reuse."""

import json
import subprocess
import sys

import pytest
import torch

from mediagen import make_face_video
from realtalk_cli.media import probe
from realtalk_cli.pipelines.adapt import AdaptOptions, cache_key


@pytest.mark.parametrize("renderer", ["bank", "bank+fia", "fia"])
def test_dub_without_checkpoint_adapts_then_reuses_cache(tmp_path, renderer):
    video = make_face_video(tmp_path / "me.mp4", seconds=2.0)
    speech = make_face_video(tmp_path / "other.mp4", seconds=1.2)  # any file with an audio track
    cache = tmp_path / "cache"
    args = ["dub", video, speech, "--adapt-minutes", "0.1", "--cache-dir", cache, "--renderer", renderer]  # no --checkpoint
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", *map(str, args), "-o", str(tmp_path / "a.mp4")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    options = AdaptOptions(minutes=60, steps=3, cache=cache, renderer=renderer)
    model = cache / "adapt" / cache_key(video, options, torch.device("cpu")) / "model"
    # first, one line: what it does, how long, where it caches, how to skip it next time
    line = r.stderr.splitlines()[0]
    assert line.startswith("adapt: learning this person"), r.stderr
    # on a CPU the a2e is linear, solved in seconds: only a network's share is timed (fia 0.75, bank+fia 0.5)
    timed = {"bank": "a linear a2e solved in seconds", "bank+fia": "0.05 min", "fia": "0.075 min"}[renderer]
    assert timed in line and (renderer == "bank" or "cpu" in line), line
    assert str(model.parent) in line and f"--checkpoint {model}" in line
    info = probe(tmp_path / "a.mp4")
    assert (info.width, info.height) == (192, 160) and abs(info.duration - 1.2) <= 0.04 + 1e-3

    trained = {"bank": ("a2e",), "bank+fia": ("a2e", "refine"), "fia": ("a2e", "e2f")}[renderer]  # the bank trains no network
    ckpts = {stage: sorted(p.name for p in (model / stage / "checkpoints").iterdir()) for stage in trained}
    assert all(ckpts.values())
    assert (model / "bank").is_dir() == (renderer != "fia")
    assert (model / "e2f").is_dir() == (renderer == "fia")
    assert json.loads((model / "renderer.json").read_text()) == {"renderer": renderer}
    # the lip prior adapted to this person: a linear a2e, even where this tone says nothing about the mouth
    a2e = json.loads((model / "a2e" / "config.json").read_text())
    assert a2e["model"]["kind"] == "linear" and a2e["task"]["prior"] == "builtin", a2e
    assert "training a transformer" not in r.stderr
    # the video is heard as Whisper states beside the mel, and the dub hears the new speech the same way
    from realtalk_cli.inference.a2e import load_a2e

    assert load_a2e(model / "a2e")[1]["audio"]["kind"] == "whisper+mel" and a2e["model"]["audio_dim"] == 80 + 512
    r = subprocess.run([sys.executable, "-m", "realtalk_cli", "--quiet", *map(str, args), "--adapt", "-o", str(tmp_path / "b.mp4")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # the second dub reuses the cache: no new checkpoints
    assert {stage: sorted(p.name for p in (model / stage / "checkpoints").iterdir()) for stage in ckpts} == ckpts


def test_cache_key_covers_what_shapes_the_model(tmp_path):
    video = make_face_video(tmp_path / "me.mp4", seconds=0.4)
    other = make_face_video(tmp_path / "other.mp4", seconds=0.5)
    cpu = torch.device("cpu")
    base = cache_key(video, AdaptOptions(), cpu)
    assert cache_key(video, AdaptOptions(minutes=1.0, cache=tmp_path), cpu) == base  # budget and place: same model
    assert cache_key(other, AdaptOptions(), cpu) != base
    assert cache_key(video, AdaptOptions(renderer="fia"), cpu) != base
    assert cache_key(video, AdaptOptions(a2e_config="a2e_tiny"), cpu) != base
    assert cache_key(video, AdaptOptions(), torch.device("cuda")) == base  # the bank: the same prior-based a2e anywhere
    assert cache_key(video, AdaptOptions(renderer="fia"), torch.device("cuda")) != cache_key(video, AdaptOptions(renderer="fia"), cpu)
    assert cache_key(video, AdaptOptions(e2f_config="e2f_tiny"), cpu) == base  # the bank trains no e2f
    init = tmp_path / "generic"
    for stage in ("a2e", "e2f"):
        (init / stage).mkdir(parents=True)
        (init / stage / "config.json").write_text("{}")
    with_init = cache_key(video, AdaptOptions(init=init), cpu)
    assert with_init != base
    (init / "e2f" / "config.json").write_text('{"retrained": true}')  # another model at the same path
    assert cache_key(video, AdaptOptions(init=init), cpu) != with_init


def test_failed_preprocessing_is_retried_not_reused(tmp_path):
    from mediagen import make_video
    from realtalk_cli.errors import RealtalkError
    from realtalk_cli.pipelines.adapt import adapt

    video = make_video(tmp_path / "noface.mp4", seconds=0.6)  # a test pattern: no face to learn
    options = AdaptOptions(minutes=60, steps=3, cache=tmp_path / "cache")
    stamps = []
    for _ in range(2):
        with pytest.raises(RealtalkError, match="cannot learn this person"):
            adapt(video, options)
        (record,) = (tmp_path / "cache" / "adapt").glob("*/data/sources/*.json")
        stamps.append((record.stat().st_mtime_ns, json.loads(record.read_text())["status"]))
    assert stamps[0][1] != "ok" and stamps[1][0] > stamps[0][0]  # the second run tried again


def test_linear_a2e_that_learns_nothing_falls_back_to_a_transformer(tmp_path, capfd):
    """Without the prior (the person's own mel+phones ridge, as when Whisper is missing), a video whose
    sound says nothing about its mouth: the linear fit explains none of it in cross-validation, so adapt
    trains the small transformer instead (and says so), within the budget."""
    from realtalk_cli.pipelines.adapt import adapt

    video = make_face_video(tmp_path / "me.mp4", seconds=3.0)  # a steady tone over a talking face
    model = adapt(video, AdaptOptions(minutes=60, steps=3, cache=tmp_path / "cache", a2e_config="adapt_cpu_linear"))
    said = capfd.readouterr().err
    assert said.index("fitting a2e (linear") < said.index("no better than a still one") < said.index("training a transformer")
    config = json.loads((model / "a2e" / "config.json").read_text())
    log = [json.loads(line) for line in (model / "a2e" / "metrics.jsonl").read_text().splitlines()]
    assert config["model"]["kind"] == "transformer" and log[-1]["step"] > 1
    assert (model / "bank" / "config.json").is_file()


def test_adapt_from_a_linear_generic_model(tmp_path, capfd):
    """--init with a linear generic a2e: the video is cropped and tracked as the generic model's data
    was, and the linear fit is shrunk toward the generic weights; where that still predicts nothing
    (this tone), the transformer fallback starts afresh instead of failing to load linear weights."""
    from conftest import make_tiny_dataset
    from realtalk_cli.data.dataset import Dataset
    from realtalk_cli.pipelines.adapt import adapt
    from realtalk_cli.train.run import train

    generic = tmp_path / "generic"
    data = make_tiny_dataset(tmp_path / "many", n_clips=3, n_frames=80)  # 64 px crops
    train("a2e", data.dir, generic / "a2e", config="adapt_cpu_linear", device="cpu")
    video = make_face_video(tmp_path / "me.mp4", seconds=3.0)
    model = adapt(video, AdaptOptions(minutes=60, steps=3, cache=tmp_path / "cache", init=generic))
    said = capfd.readouterr().err
    assert said.index("fitting a2e (linear, closed form, toward --init)") < said.index("training a transformer"), said
    (clip,) = Dataset.open(model.parent / "data").clips()
    assert clip.crops(slice(0, 1)).shape[1] == 64 and clip.coeffs()["alpha"].shape == (2,)  # the generic's crops and face model
    assert clip.audio_features().shape[1] == data.clips()[0].audio_features().shape[1] == 80  # and its front end (mel)
    config = json.loads((model / "a2e" / "config.json").read_text())
    assert config["model"]["kind"] == "transformer" and (model / "a2e" / "checkpoints").is_dir()


def test_adapt_from_a_transformer_generic_model_fine_tunes_it(tmp_path, capfd):
    """On a CPU the default a2e is linear; a transformer --init is fine-tuned as a transformer of its own size."""
    from conftest import make_tiny_dataset
    from realtalk_cli.pipelines.adapt import adapt
    from realtalk_cli.train.run import train

    generic = tmp_path / "generic"
    data = make_tiny_dataset(tmp_path / "many", n_clips=2, n_frames=60)
    train("a2e", data.dir, generic / "a2e", config="adapt_cpu_a2e", overrides={"trainer": {"steps": 2}, "model": {"d_model": 32}},
          device="cpu")
    model = adapt(make_face_video(tmp_path / "me.mp4", seconds=2.0), AdaptOptions(minutes=60, steps=3, cache=tmp_path / "cache", init=generic))
    said = capfd.readouterr().err
    assert "linear" not in said and "training a2e for up to" in said, said
    config = json.loads((model / "a2e" / "config.json").read_text())
    assert config["model"]["kind"] == "transformer" and config["model"]["d_model"] == 32
