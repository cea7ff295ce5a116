"""The CLI shell: help, version, global options, exit codes and one-line errors."""

import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "realtalk_cli", *args], capture_output=True, text=True)


def test_help_lists_every_command():
    r = run("--help")
    assert r.returncode == 0
    for cmd in ("preprocess", "train", "dub", "bench", "export", "eval"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["preprocess", "train", "dub", "bench", "export", "eval"])
def test_each_command_has_help_with_example(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0
    assert "Example" in r.stdout and f"realtalk {cmd}" in r.stdout


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("realtalk ")


def test_usage_error_exit_code_2():
    r = run("dub")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("device", ["foo", "cuda:99"])
def test_bad_device_is_usage_error(device):
    r = run("--device", device, "eval", "x.mp4")
    assert r.returncode == 2
    assert "--device" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, names", [
    (["train"], "--stage"),                                   # missing option
    (["eval"], "video"),                                      # missing argument
    (["dub", "v.mp4", "s.wav", "-o", "o.mp4", "--crf", "99"], "--crf"),  # bad value
    (["bench", "--repeats", "x"], "--repeats"),                # bad value (not a number)
    (["dubb"], "dubb"),                                       # unknown command
    (["dub", "--bogus"], "--bogus"),                          # unknown option
])
def test_usage_errors_are_one_line(args, names):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], r.stderr
    assert "--help" in lines[0] and r.stdout == ""


def test_bad_bench_batches_is_usage_error():
    r = run("bench", "--batches", "0,-1")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == ["error: --batches '0,-1': expected comma-separated positive integers"]


def test_help_stays_rich():
    r = run("train", "--help")
    assert r.returncode == 0 and "Usage: realtalk train" in r.stdout and "╭" in r.stdout and r.stderr == ""


def test_dub_no_adapt_refuses_without_checkpoint(tmp_path):
    r = run("dub", tmp_path / "v.mp4", tmp_path / "s.wav", "-o", tmp_path / "o.mp4", "--no-adapt")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--checkpoint" in r.stderr


def test_preprocess_writes_where_train_reads():
    import typer.main

    from realtalk_cli.cli import app

    commands = typer.main.get_command(app).commands
    default = {c: next(p.default for p in commands[c].params if p.name == n) for c, n in (("preprocess", "out"), ("train", "data"))}
    assert default["preprocess"] == default["train"] and str(default["train"]) == "data"
