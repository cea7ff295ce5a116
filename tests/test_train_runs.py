"""`realtalk train` without --data/--out follows the documented layout; SIGTERM stops it like Ctrl-C."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_tiny_dataset
from realtalk_cli.cli import main
from realtalk_cli.train.run import default_run_dir


def test_default_run_dirs_pair_stages_and_never_overwrite(tmp_path):
    made = []
    for stage in ("a2e", "e2f", "a2e", "a2e", "e2f"):
        run = default_run_dir(stage, resume=False, root=tmp_path)
        assert not run.exists()
        run.mkdir(parents=True)
        made.append(run.relative_to(tmp_path).as_posix())
    assert made == ["run/a2e", "run/e2f", "run2/a2e", "run3/a2e", "run3/e2f"]
    (tmp_path / "run1").mkdir()  # not in the scheme (run is the first): ignored
    assert default_run_dir("a2e", resume=True, root=tmp_path) == tmp_path / "run3" / "a2e"
    assert default_run_dir("e2f", resume=False, root=tmp_path) == tmp_path / "run4" / "e2f"


def test_cli_train_defaults_new_run_then_resume(tmp_path, monkeypatch):
    make_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)

    def train(*extra):
        with pytest.raises(SystemExit) as e:
            main(["--quiet", "train", "--stage", "a2e", "--config", "a2e_tiny", "--val-every", "0", *extra])
        assert e.value.code == 0

    def steps(run):
        return sorted(p.name for p in (tmp_path / "models" / run / "a2e" / "checkpoints").iterdir())

    train("--steps", "1")
    train("--steps", "1")  # a second run never touches the first
    assert steps("run") == steps("run2") == ["step_0000001"]
    train("--steps", "2", "--resume")  # continues the newest
    assert steps("run2") == ["step_0000001", "step_0000002"] and steps("run") == ["step_0000001"]


def test_sigterm_stops_training_like_ctrl_c(tmp_path):
    """A real process sent SIGTERM mid-run: exit 143, the steps done are saved, no temp file left."""
    make_tiny_dataset(tmp_path / "data")
    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "realtalk_cli", "train", "--stage", "a2e", "--data", str(tmp_path / "data"),
                          "--out", str(run), "--config", "a2e_tiny", "--steps", "1000000", "--val-every", "0",
                          "--ckpt-every", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # the first logged steps: training is under way
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert list((run / "checkpoints").iterdir()), "the steps done were not saved"
    assert not [f for f in Path(tmp_path).rglob("*") if ".tmp" in f.name]


def test_config_by_path_or_shipped_name(tmp_path):
    from realtalk_cli.configs import config_path
    from realtalk_cli.errors import UsageError

    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert config_path(own) == own
    assert config_path("a2e_tiny") == config_path("a2e_tiny.json") and config_path("a2e_tiny").is_file()
    with pytest.raises(UsageError, match="a2e_tiny"):  # the message lists what is shipped
        config_path("a2e_huge")
