"""Fuzz corpus (issue 12): malformed and edge-case inputs for every command, run in-process.

Each case builds its inputs in its own folder and runs `realtalk --quiet ...`. It asserts the exit
code (2 usage, 1 failure, 0 success), that a failure is one `error:` line naming the file or option
and no traceback, and that nothing is left behind: the case folder holds exactly what it held before
(plus the outputs of a success), the shared media are untouched, and the temp folder is empty.
Successes are checked for frame count, duration, frame size and audio format.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import fuzzgen as g
from realtalk_cli.cli import main
from realtalk_cli.media import probe

pytest.importorskip("skimage")  # the generated face clip is scikit-image's astronaut


@dataclass
class Media:
    root: Path
    face: Path       # 1 s, 25 fps, 192x160, with audio
    speech: Path     # 1 s, 16 kHz mono WAV
    model: Path      # a2e/ + e2f/, tiny, two steps each
    data: Path       # the dataset the model was trained on


def realtalk(capsys, *args) -> tuple[int, str, str]:
    """Run the CLI in this process: (exit code, stdout, stderr)."""
    try:
        main(["--quiet", *map(str, args)])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_media")
    face, data, model = g.tiny_model(root)
    return Media(root, face, g.speech(root / "speech.wav", 1.0), model, data)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `root`, hidden ones too; files with size and mtime (a modified input shows)."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in root.rglob("*")}


# ---- the corpus ----------------------------------------------------------------------------------
# (id, exit code, text the error line must hold (a file or option name), build(media, folder) -> argv,
#  for successes: {"out": name, "frames": n, "size": (w, h), "audio": (rate, channels), "seconds": s})

def dub(m: Media, video, speech, out="out.mp4", *extra):
    return ["dub", video, speech, "-o", out, "--checkpoint", m.model, *extra]


def copy_model(m: Media, d: Path) -> Path:
    shutil.copytree(m.model, d / "model")
    return d / "model"


def a2e_ckpt(model: Path) -> Path:
    return sorted((model / "a2e" / "checkpoints").iterdir())[-1]


def corrupt_config(m: Media, d: Path, edit) -> Path:
    model = copy_model(m, d)
    cfg = a2e_ckpt(model) / "config.json"
    cfg.write_text(edit(cfg.read_text()))
    return model


def set_config(text: str, **changes) -> str:
    cfg = json.loads(text)
    for key, value in changes.items():
        cfg["model"][key] = value
    return json.dumps(cfg)


def jobs_file(d: Path, name: str, text: str) -> Path:
    (d / name).write_text(text)
    return d / name


def csv_jobs(d: Path, rows) -> Path:
    return jobs_file(d, "jobs.csv", "video,speech,output\n" + "".join(f"{v},{s},{o}\n" for v, s, o in rows))


def copy_data(m: Media, d: Path) -> Path:
    shutil.copytree(m.data, d / "data")
    return d / "data"


def unwritable(d: Path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: use /proc)."""
    if os.geteuid() == 0:
        return Path("/proc/self")
    (d / "ro").mkdir()
    os.chmod(d / "ro", 0o555)
    return d / "ro"


ONE_SECOND = {"frames": 25, "size": (192, 160), "audio": (16000, 1), "seconds": 1.0}

DUB = [
    # the video
    ("dub-video-empty", 1, "video.mp4", lambda m, d: dub(m, g.empty(d / "video.mp4"), m.speech, d / "out.mp4"), None),
    ("dub-video-text-as-mp4", 1, "video.mp4", lambda m, d: dub(m, g.text(d / "video.mp4"), m.speech, d / "out.mp4"), None),
    ("dub-video-missing", 1, "nope.mp4", lambda m, d: dub(m, d / "nope.mp4", m.speech, d / "out.mp4"), None),
    ("dub-video-directory", 1, "clips", lambda m, d: dub(m, (d / "clips").mkdir() or d / "clips", m.speech, d / "out.mp4"), None),
    ("dub-video-truncated-faststart", 1, "cut.mp4",
     lambda m, d: dub(m, g.truncated(g.faststart(m.face, d / "fs.mp4"), d / "cut.mp4", 0.6), m.speech, d / "out.mp4"), None),
    ("dub-video-truncated-moov-at-end", 1, "cut.mp4",
     lambda m, d: dub(m, g.truncated(m.face, d / "cut.mp4", 0.6), m.speech, d / "out.mp4"), None),
    ("dub-video-audio-only-mp4", 1, "sound.mp4", lambda m, d: dub(m, g.audio_only_mp4(d / "sound.mp4"), m.speech, d / "out.mp4"), None),
    ("dub-video-too-small-for-a-face", 1, "tiny.mp4",
     lambda m, d: dub(m, g.reencode(m.face, d / "tiny.mp4", "-vf", "scale=16:16"), m.speech, d / "out.mp4"), None),
    ("dub-video-without-audio", 0, None, lambda m, d: dub(m, g.reencode(m.face, d / "silent.mp4", "-an"), m.speech, d / "out.mp4"),
     ONE_SECOND),
    ("dub-video-one-frame", 0, None, lambda m, d: dub(m, g.reencode(m.face, d / "one.mp4", "-frames:v", "1"), m.speech, d / "out.mp4"),
     ONE_SECOND),
    ("dub-video-odd-size", 0, None,
     lambda m, d: dub(m, g.reencode(m.face, d / "odd.mp4", "-vf", "scale=333:207", pix_fmt="yuv444p"), m.speech, d / "out.mp4"),
     {**ONE_SECOND, "size": (334, 208)}),  # H.264 4:2:0 needs even sides: padded by one edge row and column
    ("dub-video-1fps-source-rate", 0, None,
     lambda m, d: dub(m, g.reencode(m.face, d / "v1.mp4", "-r", "1"), g.speech(d / "s.wav", 2.0), d / "out.mp4", "--fps", "source"),
     {**ONE_SECOND, "frames": 2, "seconds": 2.0}),
    ("dub-video-60fps-source-rate", 0, None,
     lambda m, d: dub(m, g.reencode(m.face, d / "v60.mp4", "-r", "60"), m.speech, d / "out.mp4", "--fps", "source"),
     {**ONE_SECOND, "frames": 60}),
    ("dub-video-29.97fps-source-rate", 0, None,
     lambda m, d: dub(m, g.reencode(m.face, d / "ntsc.mp4", "-r", "30000/1001"), m.speech, d / "out.mp4", "--fps", "source"),
     {**ONE_SECOND, "frames": 30}),
    ("dub-video-vfr", 0, None, lambda m, d: dub(m, g.vfr(m.face, d / "vfr.mp4"), m.speech, d / "out.mp4"), ONE_SECOND),
    ("dub-video-rotated-phone", 0, None, lambda m, d: dub(m, g.rotated(m.face, d / "phone.mp4", 90), m.speech, d / "out.mp4"),
     {**ONE_SECOND, "size": (160, 192)}),
    # the speech
    ("dub-speech-empty", 1, "s.wav", lambda m, d: dub(m, m.face, g.empty(d / "s.wav"), d / "out.mp4"), None),
    ("dub-speech-text-as-wav", 1, "s.wav", lambda m, d: dub(m, m.face, g.text(d / "s.wav"), d / "out.mp4"), None),
    ("dub-speech-missing", 1, "nope.wav", lambda m, d: dub(m, m.face, d / "nope.wav", d / "out.mp4"), None),
    ("dub-speech-lying-wav-header", 1, "lying.wav", lambda m, d: dub(m, m.face, g.lying_wav(d / "lying.wav"), d / "out.mp4"), None),
    ("dub-speech-zero-samples", 1, "zero.wav", lambda m, d: dub(m, m.face, g.speech(d / "zero.wav", 0.0), d / "out.mp4"), None),
    ("dub-speech-nan-samples", 1, "nan.wav",
     lambda m, d: dub(m, m.face, g.sf.write(str(d / "nan.wav"), np.full(1600, np.nan, np.float32), 16000, subtype="FLOAT")
                      or d / "nan.wav", d / "out.mp4"), None),
    ("dub-speech-video-without-audio", 1, "silent.mp4",
     lambda m, d: dub(m, m.face, g.reencode(m.face, d / "silent.mp4", "-an"), d / "out.mp4"), None),
    ("dub-speech-48k-stereo", 0, None, lambda m, d: dub(m, m.face, g.speech(d / "st.wav", 1.0, 48000, 2, "PCM_24"), d / "out.mp4"),
     {**ONE_SECOND, "audio": (48000, 2)}),
    ("dub-speech-flac-44k", 0, None, lambda m, d: dub(m, m.face, g.speech(d / "s.flac", 1.0, 44100), d / "out.mp4"),
     {**ONE_SECOND, "audio": (44100, 1)}),
    ("dub-speech-from-a-video", 0, None, lambda m, d: dub(m, m.face, m.face, d / "out.mp4"), {**ONE_SECOND, "frames": 50, "seconds": 2.0}),
    ("dub-speech-longer-than-video", 0, None, lambda m, d: dub(m, m.face, g.speech(d / "long.wav", 2.6), d / "out.mp4"),
     {**ONE_SECOND, "frames": 65, "seconds": 2.6}),
    ("dub-speech-shorter-than-a-frame", 0, None, lambda m, d: dub(m, m.face, g.speech(d / "click.wav", 0.01), d / "out.mp4"),
     {**ONE_SECOND, "frames": 1, "seconds": 0.04}),
    # options
    *[(f"dub-fps-{v}", 2, "--fps", lambda m, d, v=v: dub(m, m.face, m.speech, d / "out.mp4", "--fps", v), None)
      for v in ("0", "-1", "abc", "nan", "inf")],
    ("dub-extend-bogus", 2, "--extend", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--extend", "bounce"), None),
    ("dub-renderer-bogus", 2, "--renderer", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--renderer", "gan"), None),
    ("dub-drive-bogus", 2, "--drive", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--drive", "video"), None),
    ("dub-bbox-three-numbers", 2, "--bbox", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--bbox", "1,2,3"), None),
    ("dub-bbox-outside-frame", 2, "--bbox", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--bbox", "500,10,600,90"), None),
    ("dub-face-index-too-high", 1, "--face-index", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--face-index", 3), None),
    ("dub-face-index-negative", 2, "--face-index", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--face-index", -1), None),
    ("dub-batch-size-zero", 2, "--batch-size", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--batch-size", 0), None),
    ("dub-crf-99", 2, "--crf", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--crf", 99), None),
    ("dub-backend-bogus", 2, "--backend", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--backend", "tpu"), None),
    ("dub-backend-onnx-not-exported", 1, "renderer.onnx", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--backend", "onnx"), None),
    ("dub-checkpoint-and-adapt", 2, "--adapt", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--adapt"), None),
    ("dub-no-adapt-no-checkpoint", 2, "--checkpoint",
     lambda m, d: ["dub", m.face, m.speech, "-o", d / "out.mp4", "--no-adapt"], None),
    ("dub-adapt-minutes-with-checkpoint", 2, "--adapt-minutes",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--adapt-minutes", 1), None),
    ("dub-adapt-minutes-negative", 2, "--adapt-minutes",
     lambda m, d: ["dub", m.face, m.speech, "-o", d / "out.mp4", "--adapt-minutes", -1, "--cache-dir", d / "cache"], None),
    ("dub-missing-arguments", 2, "VIDEO SPEECH", lambda m, d: ["dub", m.face], None),
    # the output
    ("dub-out-missing-dir", 2, "nope", lambda m, d: dub(m, m.face, m.speech, d / "nope" / "out.mp4"), None),
    ("dub-out-unwritable-dir", 1, "out.mp4", lambda m, d: dub(m, m.face, m.speech, unwritable(d) / "out.mp4"), None),
    ("dub-out-no-extension", 2, "out", lambda m, d: dub(m, m.face, m.speech, d / "out"), None),
    ("dub-out-wav", 2, "out.wav", lambda m, d: dub(m, m.face, m.speech, d / "out.wav"), None),
    ("dub-out-is-video", 2, "face.mp4", lambda m, d: dub(m, m.face, m.speech, m.face), None),
    ("dub-out-is-speech", 2, "speech.wav", lambda m, d: dub(m, m.face, m.speech, m.speech), None),
    ("dub-out-is-directory", 2, "outdir", lambda m, d: dub(m, m.face, m.speech, (d / "outdir").mkdir() or d / "outdir"), None),
    ("dub-out-exists", 2, "--overwrite", lambda m, d: dub(m, m.face, m.speech, g.text(d / "out.mp4", "old")), None),
    ("dub-preview-is-output", 2, "out.mp4", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--preview", d / "out.mp4"), None),
    ("dub-mouth-curve-missing-dir", 2, "nope", lambda m, d: dub(m, m.face, m.speech, d / "out.mp4", "--mouth-curve", d / "nope" / "m.json"), None),
    ("dub-out-mkv", 0, None, lambda m, d: dub(m, m.face, m.speech, d / "out.mkv"), {**ONE_SECOND, "out": "out.mkv"}),
    # batch jobs
    ("dub-jobs-binary", 1, "jobs.csv", lambda m, d: ["dub", "--jobs", g.truncated(m.face, d / "jobs.csv", 0.1), "--checkpoint", m.model], None),
    ("dub-jobs-missing-column", 1, "jobs.csv",
     lambda m, d: ["dub", "--jobs", jobs_file(d, "jobs.csv", f"video,speech\n{m.face},{m.speech}\n"), "--checkpoint", m.model], None),
    ("dub-jobs-json-not-a-list", 1, "jobs.json",
     lambda m, d: ["dub", "--jobs", jobs_file(d, "jobs.json", json.dumps({"video": str(m.face)})), "--checkpoint", m.model], None),
    ("dub-jobs-json-invalid", 1, "jobs.json", lambda m, d: ["dub", "--jobs", jobs_file(d, "jobs.json", "[{"), "--checkpoint", m.model], None),
    ("dub-jobs-empty", 1, "jobs.csv", lambda m, d: ["dub", "--jobs", jobs_file(d, "jobs.csv", "video,speech,output\n"), "--checkpoint", m.model], None),
    ("dub-jobs-missing-file", 1, "nojobs.csv", lambda m, d: ["dub", "--jobs", d / "nojobs.csv", "--checkpoint", m.model], None),
    ("dub-jobs-shared-output", 2, "same.mp4",
     lambda m, d: ["dub", "--jobs", csv_jobs(d, [(m.face, m.speech, "same.mp4")] * 2), "--checkpoint", m.model], None),
    ("dub-jobs-output-is-another-jobs-input", 2, "v2.mp4",
     lambda m, d: ["dub", "--jobs", csv_jobs(d, [(m.face, m.speech, "v2.mp4"), (shutil.copy(m.face, d / "v2.mp4"), m.speech, "b.mp4")]),
                   "--checkpoint", m.model], None),
    ("dub-jobs-second-video-missing", 1, "gone.mp4",
     lambda m, d: ["dub", "--jobs", csv_jobs(d, [(m.face, m.speech, "a.mp4"), (d / "gone.mp4", m.speech, "b.mp4")]),
                   "--checkpoint", m.model], None),
    ("dub-jobs-and-arguments", 2, "--jobs",
     lambda m, d: ["dub", m.face, m.speech, "-o", d / "o.mp4", "--jobs", csv_jobs(d, []), "--checkpoint", m.model], None),
    ("dub-jobs-two", 0, None, lambda m, d: ["dub", "--jobs", csv_jobs(d, [(m.face, m.speech, "a.mp4"), (m.face, m.speech, "b.mp4")]),
                                           "--checkpoint", m.model], {**ONE_SECOND, "out": "a.mp4", "also": ["b.mp4"]}),
    # the model directory
    ("dub-checkpoint-missing", 1, "nomodel", lambda m, d: ["dub", m.face, m.speech, "-o", d / "out.mp4", "--checkpoint", d / "nomodel"], None),
    ("dub-checkpoint-a2e-only", 1, "half",
     lambda m, d: ["dub", m.face, m.speech, "-o", d / "out.mp4", "--checkpoint", shutil.copytree(m.model / "a2e", d / "half" / "a2e").parent], None),
    ("dub-checkpoint-config-not-json", 1, "config.json",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [corrupt_config(m, d, lambda t: t[:len(t) // 2])], None),
    ("dub-checkpoint-config-a-list", 1, "config.json",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [corrupt_config(m, d, lambda t: "[1, 2]")], None),
    ("dub-checkpoint-config-unknown-key", 1, "config.json",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [corrupt_config(m, d, lambda t: set_config(t, wings=2))], None),
    ("dub-checkpoint-config-wrong-size", 1, "a2e",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [corrupt_config(m, d, lambda t: set_config(t, d_model=48))], None),
    ("dub-checkpoint-weights-garbage", 1, "a2e.safetensors",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [damage_weights(m, d, lambda b: b"\x00garbage" * 100)], None),
    ("dub-checkpoint-weights-truncated", 1, "a2e.safetensors",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [damage_weights(m, d, lambda b: b[:len(b) // 2])], None),
    ("dub-checkpoint-renderer-json-bad", 1, "renderer.json",
     lambda m, d: dub(m, m.face, m.speech, d / "out.mp4")[:-1] + [g.text(copy_model(m, d) / "renderer.json", "{oops") and d / "model"], None),
]


def damage_weights(m: Media, d: Path, edit) -> Path:
    model = copy_model(m, d)
    w = a2e_ckpt(model) / "a2e.safetensors"
    w.write_bytes(edit(w.read_bytes()))
    return model


def records(name: str) -> dict:
    """A preprocess run whose every video failed keeps only their failure records (for --retry-failed)."""
    return {"leaves": ["data", "data/sources", f"data/sources/{name}.json"]}


PREPROCESS = [
    ("preprocess-input-missing", 2, "nope.mp4", lambda m, d: ["preprocess", d / "nope.mp4", "-o", d / "data"], None),
    ("preprocess-empty-dir", 2, "clips", lambda m, d: ["preprocess", (d / "clips").mkdir() or d / "clips", "-o", d / "data"], None),
    # the failure records stay in data/sources (for --retry-failed); no clip, no manifest
    ("preprocess-only-bad-video", 1, "bad.mp4", lambda m, d: ["preprocess", g.text(d / "bad.mp4"), "-o", d / "data"], records("bad")),
    ("preprocess-video-without-audio", 1, "silent.mp4",
     lambda m, d: ["preprocess", g.reencode(m.face, d / "silent.mp4", "-an"), "-o", d / "data"], records("silent")),
    ("preprocess-shard-out-of-range", 2, "--shard", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--shard", "3/2"], None),
    ("preprocess-shard-garbage", 2, "--shard", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--shard", "x"], None),
    ("preprocess-val-fraction-2", 2, "--val-fraction", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--val-fraction", 2], None),
    ("preprocess-crop-size-0", 2, "--crop-size", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--crop-size", 0], None),
    ("preprocess-features-bogus", 2, "--features", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--features", "wav2vec"], None),
    ("preprocess-hubert-hub-id", 1, "facebook/hubert-large-ls960-ft",
     lambda m, d: ["preprocess", m.face, "-o", d / "data", "--features", "hubert", "--hubert", "facebook/hubert-large-ls960-ft"], None),
    ("preprocess-out-is-a-file", 2, "data", lambda m, d: ["preprocess", m.face, "-o", g.text(d / "data")], None),
    ("preprocess-workers-0", 2, "--workers", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--workers", 0], None),
    ("preprocess-bbox-garbage", 2, "--bbox", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--bbox", "a,b"], None),
    ("preprocess-n-exp-0", 2, "--n-exp", lambda m, d: ["preprocess", m.face, "-o", d / "data", "--n-exp", 0], None),
]


def train(m: Media, d: Path, *extra, data=None):
    return ["train", "--stage", "a2e", "--data", data or m.data, "--out", d / "run", "--config", "a2e_tiny", "--steps", 1, *extra]


def damage_data(m: Media, d: Path, name: str, text: str) -> Path:
    data = copy_data(m, d)
    (data / name).write_text(text)
    return data


TRAIN = [
    ("train-stage-bogus", 2, "--stage", lambda m, d: ["train", "--stage", "gan", "--data", m.data, "--out", d / "run"], None),
    ("train-data-missing", 2, "nodata", lambda m, d: train(m, d, data=d / "nodata"), None),
    ("train-manifest-not-json", 1, "manifest.json", lambda m, d: train(m, d, data=damage_data(m, d, "manifest.json", "{")), None),
    ("train-manifest-a-list", 1, "manifest.json", lambda m, d: train(m, d, data=damage_data(m, d, "manifest.json", "[]")), None),
    ("train-dataset-config-not-json", 1, "config.json", lambda m, d: train(m, d, data=damage_data(m, d, "config.json", "nope")), None),
    ("train-config-unknown-name", 2, "nosuch", lambda m, d: train(m, d, "--config", "nosuch"), None),
    ("train-config-not-json", 2, "bad.json", lambda m, d: train(m, d, "--config", g.text(d / "bad.json", "{")), None),
    ("train-config-unknown-key", 1, "wings", lambda m, d: train(m, d, "--config", g.text(d / "c.json", '{"model": {"wings": 2}}')), None),
    ("train-steps-0", 2, "--steps", lambda m, d: train(m, d, "--steps", 0), None),
    ("train-batch-size-0", 2, "--batch-size", lambda m, d: train(m, d, "--batch-size", 0), None),
    ("train-lr-negative", 2, "--lr", lambda m, d: train(m, d, "--lr", -1), None),
    ("train-amp-bogus", 2, "--amp", lambda m, d: train(m, d, "--amp", "fp8"), None),
    ("train-split-frames-1.5", 2, "--split-frames", lambda m, d: train(m, d, "--split-frames", 1.5), None),
    ("train-out-is-a-file", 2, "run", lambda m, d: train(m, d)[:5] + ["--out", g.text(d / "run")] + train(m, d)[7:], None),
]

EXPORT = [
    ("export-checkpoint-missing", 1, "nomodel", lambda m, d: ["export", "--checkpoint", d / "nomodel", "-o", d / "onnx"], None),
    ("export-checkpoint-config-not-json", 1, "config.json",
     lambda m, d: ["export", "--checkpoint", corrupt_config(m, d, lambda t: "{"), "-o", d / "onnx"], None),
    ("export-checkpoint-weights-garbage", 1, "a2e.safetensors",
     lambda m, d: ["export", "--checkpoint", damage_weights(m, d, lambda b: b"junk"), "-o", d / "onnx"], None),
    ("export-out-is-a-file", 2, "onnx", lambda m, d: ["export", "--checkpoint", m.model, "-o", g.text(d / "onnx")], None),
]

EVAL = [
    ("eval-video-missing", 1, "nope.mp4", lambda m, d: ["eval", d / "nope.mp4"], None),
    ("eval-video-empty", 1, "v.mp4", lambda m, d: ["eval", g.empty(d / "v.mp4")], None),
    ("eval-video-text", 1, "v.mp4", lambda m, d: ["eval", g.text(d / "v.mp4")], None),
    ("eval-video-truncated", 1, "cut.mp4", lambda m, d: ["eval", g.truncated(g.faststart(m.face, d / "fs.mp4"), d / "cut.mp4", 0.5)], None),
    ("eval-source-missing", 1, "nosrc.mp4", lambda m, d: ["eval", m.face, "--source", d / "nosrc.mp4"], None),
    ("eval-frames-garbage", 2, "--frames", lambda m, d: ["eval", m.face, "--frames", "a:b"], None),
    ("eval-frames-backwards", 2, "--frames", lambda m, d: ["eval", m.face, "--frames", "10:5"], None),
    ("eval-report-txt", 2, "r.txt", lambda m, d: ["eval", m.face, "--report", d / "r.txt"], None),
    ("eval-json-is-video", 2, "face.mp4", lambda m, d: ["eval", m.face, "--json", m.face], None),
    ("eval-json-missing-dir", 2, "nope", lambda m, d: ["eval", m.face, "--json", d / "nope" / "m.json"], None),
    ("eval-fps-0", 2, "--fps", lambda m, d: ["eval", m.face, "--fps", 0], None),
    ("eval-mouth-curve-not-json", 1, "m.json", lambda m, d: ["eval", m.face, "--mouth-curve", g.text(d / "m.json", "[1,")], None),
    ("eval-lpips-weights-missing", 1, "lpips.pth", lambda m, d: ["eval", m.face, "--lpips-weights", d / "lpips.pth"], None),
]

BENCH = [
    ("bench-batches-zero-negative", 2, "--batches", lambda m, d: ["bench", "--batches", "0,-1"], None),
    ("bench-batches-garbage", 2, "--batches", lambda m, d: ["bench", "--batches", "x"], None),
    ("bench-backends-bogus", 2, "--backends", lambda m, d: ["bench", "--backends", "tpu"], None),
    ("bench-e2e-bad-size", 2, "--e2e", lambda m, d: ["bench", "--e2e", "bank@0x0"], None),
    ("bench-e2e-bad-renderer", 2, "--e2e", lambda m, d: ["bench", "--e2e", "gan@512x512"], None),
    ("bench-json-missing-dir", 2, "nope", lambda m, d: ["bench", "--json", d / "nope" / "b.json", "--batches", "1"], None),
    ("bench-checkpoint-missing", 1, "nomodel", lambda m, d: ["bench", "--checkpoint", d / "nomodel"], None),
    ("bench-repeats-0", 2, "--repeats", lambda m, d: ["bench", "--repeats", 0], None),
    ("bench-no-fps", 2, "--fps", lambda m, d: ["bench", "--no-fps"], None),
    ("bench-max-seconds-negative", 2, "--max-seconds", lambda m, d: ["bench", "--max-seconds", -1], None),
    ("bench-e2e-seconds-negative", 2, "--e2e-seconds", lambda m, d: ["bench", "--e2e-seconds", -1], None),
]

CASES = {c[0]: c[1:] for c in DUB + PREPROCESS + TRAIN + EXPORT + EVAL + BENCH}


@pytest.mark.parametrize("name", list(CASES))
def test_fuzz(name, media, tmp_path, capsys, monkeypatch):
    code, names, build, expect = CASES[name]
    case = tmp_path / "case"
    case.mkdir()
    spill = tmp_path / "tmp"
    spill.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spill))  # realtalk's own temp folders land here
    monkeypatch.chdir(case)  # relative defaults (data/, models/) land in the case folder too
    argv = build(media, case)
    shared_before, case_before = tree(media.root), tree(case)
    got, stdout, stderr = realtalk(capsys, *argv)
    try:
        assert "Traceback" not in stderr and "Traceback" not in stdout
        assert got == code, f"exit {got}: {stderr}"
        assert tree(media.root) == shared_before, "a shared input was changed"
        assert list(spill.iterdir()) == [], "temp files left behind"
        if code:
            lines = stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: "), stderr
            assert names in lines[0], f"the message does not name {names!r}"
            left = {k: v for k, v in tree(case).items() if k not in (expect or {}).get("leaves", ())}
            assert left == case_before, "a failed run left files behind"
        else:
            outs = [expect.get("out", "out.mp4"), *expect.get("also", [])]
            assert set(tree(case)) == set(case_before) | set(outs), "unexpected files beside the output"
            for out in outs:
                info = probe(case / out)
                fps = expect["frames"] / expect["seconds"]
                assert info.video_frames == expect["frames"]
                assert abs(info.duration - expect["seconds"]) <= 1 / fps + 0.03
                assert (info.width, info.height) == expect["size"]
                assert (info.audio_rate, info.audio_channels) == expect["audio"]
    finally:
        for p in (case, *case.rglob("*")):  # let pytest clean up a read-only folder
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)


def test_corpus_size():
    assert len(CASES) >= 60 and {n.split("-")[0] for n in CASES} == {"dub", "preprocess", "train", "export", "eval", "bench"}
