"""Dub every real clip with every real speech, at 25 fps and at the source rate, and check each output
(issue 12, "Done when"): frame count, duration, audio rate and channels, frame size.

    OMP_NUM_THREADS=1 python examples/real_material.py OUT_DIR [--minutes 0.3] [--shared ../shared/data]

Each clip is adapted once (`--adapt --adapt-minutes MINUTES --cache-dir OUT_DIR/cache`; later dubs of the
same clip reuse the cached model), then every dub runs as its own `realtalk dub` process, so one failure
cannot hide another. Writes OUT_DIR/real_material.json and prints a table, one row per dub.
Expected output: frames = round(speech seconds x fps) (at least 1), duration within one frame of the
speech, the speech's own sample rate and channels, the source's width and height.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from realtalk_cli.media import probe

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("out", type=Path)
parser.add_argument("--minutes", type=float, default=0.3, help="adaptation budget per clip")
parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
args = parser.parse_args()
args.out.mkdir(parents=True, exist_ok=True)

videos = sorted((args.shared / "video").glob("*.mp4"), key=lambda v: probe(v).duration)  # short clips first
speeches = sorted((args.shared / "audio").glob("*.wav"))
rows = []


def check(video, speech, out, fps) -> list[str]:
    """What is wrong with `out` (empty when it is right)."""
    src, sp, got = probe(video), probe(speech), probe(out)
    rate = src.fps if fps == "source" else float(fps)
    seconds = sf.info(str(speech)).duration  # exact: samples / rate (probe's duration is rounded to 10 ms)
    want_frames = max(1, round(seconds * rate))
    problems = []
    if got.video_frames != want_frames:
        problems.append(f"frames {got.video_frames} != {want_frames}")
    if abs(got.duration - want_frames / rate) > 1 / rate + 0.05:  # AAC padding is at most one frame of 1024 samples
        problems.append(f"duration {got.duration:.3f} != {want_frames / rate:.3f}")
    if (got.audio_rate, got.audio_channels) != (sp.audio_rate, sp.audio_channels):
        problems.append(f"audio {got.audio_rate} Hz x{got.audio_channels} != {sp.audio_rate} Hz x{sp.audio_channels}")
    if (got.width, got.height) != (src.width, src.height):
        problems.append(f"size {got.width}x{got.height} != {src.width}x{src.height}")
    return problems


for video in videos:
    for fps in ("25", "source"):
        for speech in speeches:
            out = args.out / f"{video.stem}__{speech.stem}__{fps}.mp4"
            cmd = [sys.executable, "-m", "realtalk_cli", "--quiet", "dub", str(video), str(speech), "-o", str(out),
                   "--overwrite", "--fps", fps, "--adapt", "--adapt-minutes", str(args.minutes),
                   "--cache-dir", str(args.out / "cache")]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            row = {"video": video.name, "speech": speech.name, "fps": fps, "rc": r.returncode,
                   "seconds": round(time.perf_counter() - t0, 1)}
            if r.returncode == 0:
                info = probe(out)
                row.update(frames=info.video_frames, duration=round(info.duration, 3), audio=f"{info.audio_rate}x{info.audio_channels}",
                           size=f"{info.width}x{info.height}", problems=check(video, speech, out, fps))
                out.unlink()  # derived from the clip's pixels: checked, not kept
            else:
                row["problems"] = [(r.stderr.strip().splitlines() or ["(no message)"])[-1]]
            row["ok"] = not row["problems"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            (args.out / "real_material.json").write_text(json.dumps(rows, indent=2))

print(f"\n{'video':34} {'speech':30} {'fps':>6} {'frames':>6} {'dur s':>7} {'audio':>8} {'size':>9} {'sec':>6}  result")
for r in rows:
    print(f"{r['video']:34} {r['speech']:30} {r['fps']:>6} {r.get('frames', '-'):>6} {r.get('duration', '-'):>7} "
          f"{r.get('audio', '-'):>8} {r.get('size', '-'):>9} {r['seconds']:>6}  {'ok' if r['ok'] else '; '.join(r['problems'])}")
print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} dubs pass")
sys.exit(0 if all(r["ok"] for r in rows) else 1)
