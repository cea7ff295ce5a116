"""Write the static-mouth baseline of a clip, for `realtalk eval`'s reconstruction protocol.

    python examples/eval_reference_baseline.py video.mp4 baseline.mp4 [--reference 0]
    realtalk eval baseline.mp4 --source video.mp4 --frames 400: --json baseline.json

Every frame keeps the source, except its lower face (the dub mask region), which shows the
reference frame's lower face: what a renderer achieves that copies the reference mouth and learns
no motion.
"""

import argparse

from realtalk_cli.pipelines.baseline import reference_mouth_baseline

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("video", help="source video")
parser.add_argument("out", help="baseline video to write (.mp4)")
parser.add_argument("--reference", type=int, default=0, help="reference frame index at 25 fps (default: the first frame with a face)")
args = parser.parse_args()
print(reference_mouth_baseline(args.video, args.out, reference=args.reference))
