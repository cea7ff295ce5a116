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
