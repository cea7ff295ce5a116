"""Peak memory of `realtalk dub` on a short and a long generated face video (issue 6).

    python examples/memory_flat.py OUT_DIR MODEL_DIR [--long-minutes 10] [--short-seconds 10] [--size 1920x1080]

Generates a 10-second and a long 1080p clip (by default) of a face with head motion (scikit-image's astronaut),
dubs each with speech as long as the short clip and the long one with speech as long as itself, and prints each run's peak
resident memory and frames per second. Only the dub process itself is measured: the ffmpeg children's
high-water mark would include the parent's pages they inherit between fork and exec.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from realtalk_cli.media import VideoWriter, save_wav
from realtalk_cli.media.synthetic import astronaut_frames

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", type=Path)
parser.add_argument("model", type=Path, help="model directory for dub --checkpoint")
parser.add_argument("--long-minutes", type=float, default=10.0)
parser.add_argument("--short-seconds", type=float, default=10.0)
parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the generated clips")
parser.add_argument("--skip-long-speech", action="store_true", help="dub the long clip with 10 s of speech only")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)
width, height = (int(v) for v in args.size.split("x"))


def clip(seconds: float) -> Path:
    path = args.out / f"face_{width}x{height}_{seconds:g}s.mp4"
    if not path.exists():
        with VideoWriter(path, width, height, 25, crf=23, preset="ultrafast") as w:
            for frame in astronaut_frames(int(seconds * 25), (width, height)):
                w.write(frame)
    return path


def speech(seconds: float) -> Path:
    path = args.out / f"speech_{seconds:g}s.wav"
    t = np.arange(int(seconds * 16000)) / 16000
    save_wav(path, (0.3 * np.sign(np.sin(2 * np.pi * 150 * t)) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32))
    return path


# run the CLI in a child that reports its own peak RSS at exit
PEAK = ("import os, resource, runpy, sys\n"
        "peak = os.environ['REALTALK_PEAK_FILE']\n"
        "sys.argv = ['realtalk'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('realtalk_cli', run_name='__main__')\n"
        "finally:\n    open(peak, 'w').write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n")

rows = []
long_s = args.long_minutes * 60
short_s = args.short_seconds
jobs = [(short_s, short_s), (long_s, short_s)] + ([] if args.skip_long_speech else [(long_s, long_s)])
for video_s, speech_s in jobs:
    v, s = clip(video_s), speech(speech_s)
    out = args.out / f"dub_{video_s:g}s_video_{speech_s:g}s_speech.mp4"
    peak = Path(str(out) + ".peak")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", PEAK, "--quiet", "dub", str(v), str(s), "-o", str(out), "--overwrite",
                    "--checkpoint", str(args.model)], check=True, env={**os.environ, "REALTALK_PEAK_FILE": str(peak)})
    sec = time.perf_counter() - t0
    self_kb = int(peak.read_text())
    rows.append({"video_s": video_s, "speech_s": speech_s, "frames": int(speech_s * 25), "seconds": round(sec, 1),
                 "fps": round(speech_s * 25 / sec, 2), "peak_rss_mb": round(self_kb / 1024, 1)})
    print(json.dumps(rows[-1]), flush=True)
(args.out / "memory_flat.json").write_text(json.dumps(rows, indent=2))
