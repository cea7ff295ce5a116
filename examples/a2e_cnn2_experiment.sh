#!/usr/bin/env bash
# The a2e experiment of docs/experiments/a2e.md: one real clip, within-clip split (first 80% of the
# frames train, last 20% held out), mel features; full model + the Table 5 ablation, then the
# held-out evaluation against the baselines. About 25 CPU-minutes on a shared 2-core machine.
set -euo pipefail
DATA=${DATA:-runs/data_cnn2}     # realtalk preprocess ../shared/data/video/dfrf_cnn2_25fps.mp4 -o runs/data_cnn2
OUT=${OUT:-runs/a2e}
CFG=models/configs/a2e_cpu_small.json
export OMP_NUM_THREADS=1         # small networks: one thread each is much faster than two that contend
train() { nice -n 10 realtalk train --stage a2e --data "$DATA" --split-frames 0.8 --config "$CFG" "$@"; }

train --out "$OUT/both" &
train --out "$OUT/no_prior" --config models/configs/a2e_ablation_no_prior.json &
wait
train --out "$OUT/shape_only" --config models/configs/a2e_ablation_shape_only.json &
train --out "$OUT/history_only" --config models/configs/a2e_ablation_history_only.json &
wait
python examples/a2e_eval.py --data "$DATA" --split-frames 0.8 --json "$OUT/heldout.json" \
    "$OUT/both" "$OUT/no_prior" "$OUT/shape_only" "$OUT/history_only"
