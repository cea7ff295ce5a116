#!/usr/bin/env bash
# Renderers compared on held-out frames (issue 10), all rows from one run of this script:
#   frozen-mouth baseline | fia (the paper's renderer at 128 px, CPU-adapted) | bank (the person's own frames)
#   | bank+fia (the bank refined by a network trained on the clip; half the budget trains it)
# on German_20s, cnn2 and KatieHill: adapt on the first 80% of each clip (same CPU budget for every
# renderer), then re-render the held-out last 20%
#   (a) renderer alone: driven by the held-out frames' own tracked expressions (`dub --drive tracked`)
#   (b) whole chain:    driven by the held-out audio through the adapted a2e
# and evaluate against the source (`realtalk eval --source`). Writes OUT/table.md.
# Usage: bash examples/bank_experiment.sh OUT_DIR [MINUTES]        (needs ../shared/data)
#        RENDERERS="bank" bash examples/bank_experiment.sh ...     only some renderers (default: bank bank+fia fia)
set -euo pipefail
out=${1:?output directory}; minutes=${2:-3}
here=$(cd "$(dirname "$0")" && pwd)
shared=$here/../../shared/data
ff=$(python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per process: no spin-waiting on a shared 2-core CPU
mkdir -p "$out"

clips=("mimictalk_German_20s 16" "dfrf_cnn2_25fps 56.96" "sadtalker_WDA_KatieHill_000 6.44")
for entry in "${clips[@]}"; do
  read -r c cut <<< "$entry"
  train=$out/${c}_train80.mp4; held=$out/${c}_heldout20.mp4
  [ -f "$train" ] || $ff -y -loglevel error -i "$shared/video/$c.mp4" -t "$cut" -c:v libx264 -crf 14 -preset veryfast -c:a aac "$train"
  [ -f "$held" ] || $ff -y -loglevel error -ss "$cut" -i "$shared/video/$c.mp4" -c:v libx264 -crf 14 -preset veryfast -c:a aac "$held"
  for r in ${RENDERERS:-bank bank+fia fia}; do
    # adapt on the first 80% (cached under $out/cache; the dub itself is a short throwaway)
    /usr/bin/time -f "%e s wall, %M KB peak" realtalk --quiet dub "$train" "$held" -o "$out/${c}_${r}_adapt.mp4" --overwrite \
        --adapt --adapt-minutes "$minutes" --renderer "$r" --cache-dir "$out/cache" 2> "$out/${c}_${r}_adapt.time"
    model=$(for d in "$out"/cache/adapt/*/; do  # the cache entry of this clip and renderer
      if grep -q "${c}_train80" "$d/source.json" && grep -q "\"$r\"" "$d/model/renderer.json"; then echo "${d}model"; fi
    done | head -1)
    for drive in tracked audio; do
      realtalk --quiet dub "$held" "$held" -o "$out/${c}_${r}_${drive}.mp4" --overwrite --checkpoint "$model" \
          --renderer "$r" --drive "$drive" --preview "$out/${c}_${r}_${drive}_preview.mp4" > "$out/${c}_${r}_${drive}.log"
      realtalk --quiet eval "$out/${c}_${r}_${drive}.mp4" --source "$held" --json "$out/${c}_${r}_${drive}.json" > /dev/null
    done
  done
  python "$here/eval_reference_baseline.py" "$held" "$out/${c}_baseline.mp4" > /dev/null
  realtalk --quiet eval "$out/${c}_baseline.mp4" --source "$held" --json "$out/${c}_baseline.json" > /dev/null
done
python "$here/bank_table.py" "$out" | tee "$out/table.md"
