#!/usr/bin/env bash
# The a2e experiment of docs/experiments/a2e.md: one real clip, within-clip split (first 80% of the
# frames train, last 20% held out), mel features; the full model and the Table 5 ablation, two seeds
# each, then the held-out evaluation against the baselines. About 12 CPU-minutes.
set -euo pipefail
DATA=${DATA:-runs/data_cnn2}     # realtalk preprocess /work/shared/data/video/dfrf_cnn2_25fps.mp4 -o runs/data_cnn2
OUT=${OUT:-runs/a2e}
CFG=realtalk_cli/configs/a2e_cpu_small.json   # chosen on an inner split (a2e_inner_val.json), see the write-up
export OMP_NUM_THREADS=1         # small networks: one thread each is much faster than two that contend
train() { nice -n 10 realtalk --quiet train --stage a2e --data "$DATA" --split-frames 0.8 --config "$CFG" "$@"; }

for seed in 0 1; do
  train --seed $seed --out "$OUT/both_s$seed" &
  train --seed $seed --out "$OUT/no_prior_s$seed" --config realtalk_cli/configs/a2e_ablation_no_prior.json &
  wait
  train --seed $seed --out "$OUT/shape_only_s$seed" --config realtalk_cli/configs/a2e_ablation_shape_only.json &
  train --seed $seed --out "$OUT/history_only_s$seed" --config realtalk_cli/configs/a2e_ablation_history_only.json &
  wait
done
python examples/a2e_eval.py --data "$DATA" --split-frames 0.8 --json "$OUT/heldout.json" "$OUT"/*_s[01]
