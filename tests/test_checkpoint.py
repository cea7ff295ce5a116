"""Damaged checkpoints, configs and manifests: one line naming the file and the field, never a KeyError,
TypeError or a page of size mismatches."""

import json

import pytest

from conftest import make_tiny_dataset
from realtalk_cli.checkpoint import save_checkpoint
from realtalk_cli.configs import config_path
from realtalk_cli.data.dataset import Dataset
from realtalk_cli.errors import RealtalkError
from realtalk_cli.nets.a2e import A2EConfig, A2ETransformer
from realtalk_cli.inference.a2e import load_a2e


@pytest.fixture
def a2e_ckpt(tmp_path):
    model_cfg = json.loads(config_path("a2e_tiny").read_text())["model"]
    model = A2ETransformer(A2EConfig.from_dict(model_cfg))
    config = {"stage": "a2e", "model": model_cfg, "audio": {"kind": "mel"}, "face_model": {"kind": "landmark"}}
    return save_checkpoint(tmp_path / "ckpt", config, {"a2e": model.state_dict()}), config


def edit_config(ckpt, config):
    (ckpt / "config.json").write_text(json.dumps(config))


def one_line(excinfo):
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_good_checkpoint_loads(a2e_ckpt):
    ckpt, _ = a2e_ckpt
    model, config = load_a2e(ckpt)
    assert config["stage"] == "a2e"


@pytest.mark.parametrize("damage, field", [
    (lambda c: c.pop("model"), "'model' is missing"),
    (lambda c: c.update(model=[1, 2]), "'model' is a list"),
    (lambda c: c["model"].update(bogus=1), "bogus"),
    (lambda c: c["model"].update(d_model="wide"), "'model'"),
    (lambda c: c.pop("audio"), "'audio' is missing"),
    (lambda c: c["model"].update(d_model=32), "a2e.safetensors: weights do not match"),
])
def test_damaged_a2e_checkpoint_is_one_line(a2e_ckpt, damage, field):
    ckpt, config = a2e_ckpt
    damage(config)
    edit_config(ckpt, config)
    with pytest.raises(RealtalkError) as e:
        load_a2e(ckpt)
    text = one_line(e)
    assert str(ckpt) in text and field in text, text


def test_config_json_of_another_type_and_truncated_weights(a2e_ckpt):
    ckpt, _ = a2e_ckpt
    (ckpt / "config.json").write_text("[1, 2]")
    with pytest.raises(RealtalkError) as e:
        load_a2e(ckpt)
    assert "config.json" in one_line(e) and "expected an object" in str(e.value)
    weights = ckpt / "a2e.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    (ckpt / "config.json").write_text("{}")
    with pytest.raises(RealtalkError) as e:
        load_a2e(ckpt)
    assert str(weights) in one_line(e)


@pytest.mark.parametrize("manifest, field", [
    ([], "expected an object"),
    ({"format": "other"}, "'format'"),
    ({"format": "realtalk-dataset", "version": "x"}, "'version'"),
    ({"format": "realtalk-dataset", "version": 1, "clips": {"a": 1}}, "'clips'"),
    ({"format": "realtalk-dataset", "version": 1, "clips": [{"name": "a"}]}, "'clips'"),
])
def test_damaged_manifest_is_one_line(tmp_path, manifest, field):
    make_tiny_dataset(tmp_path / "data", n_clips=1, n_frames=8)
    (tmp_path / "data" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RealtalkError) as e:
        Dataset.open(tmp_path / "data")
    assert "manifest.json" in one_line(e) and field in str(e.value), str(e.value)
