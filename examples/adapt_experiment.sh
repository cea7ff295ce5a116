#!/usr/bin/env bash
# dub --adapt on two real clips (issue 7): adapt on the first 80% of each clip, then
#  (1) dub it with 60 s of English speech (cross-audio), and
#  (2) dub its held-out last 20% with its own audio (reconstruction) and evaluate against the source,
#      next to the static-mouth baseline (the reference frame's lower face pasted into every frame).
# Usage: bash examples/adapt_experiment.sh OUT_DIR [MINUTES]     (needs ../shared/data)
set -euo pipefail
out=${1:?output directory}; minutes=${2:-12}
shared=$(cd "$(dirname "$0")/../.." && pwd)/shared/data
ff=$(python -c "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())")
speech=$shared/audio/musetalk_eng.wav
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # one thread per process: no spin-waiting on a shared 2-core CPU

split() {  # clip name, seconds for the first 80%
  $ff -y -loglevel error -i "$shared/video/$1.mp4" -t "$2" -c:v libx264 -crf 14 -preset veryfast -c:a aac "$out/$1_train80.mp4"
  $ff -y -loglevel error -ss "$2" -i "$shared/video/$1.mp4" -c:v libx264 -crf 14 -preset veryfast -c:a aac "$out/$1_heldout20.mp4"
}

run() {  # clip name
  local c=$1
  /usr/bin/time -v realtalk dub "$out/${c}_train80.mp4" "$speech" -o "$out/${c}_dub_eng60.mp4" --overwrite \
      --adapt --adapt-minutes "$minutes" --cache-dir "$out/cache" --preview "$out/${c}_dub_eng60_preview.mp4" \
      --mouth-curve "$out/${c}_dub_eng60.mouth.json" 2> "$out/${c}_adapt.log"
  local model
  model=$(ls -d "$out"/cache/adapt/*/model | while read -r m; do
    grep -q "${c}_train80" "$(dirname "$m")/source.json" && echo "$m"; done)
  realtalk dub "$out/${c}_heldout20.mp4" "$out/${c}_heldout20.mp4" -o "$out/${c}_recon.mp4" --overwrite \
      --checkpoint "$model" --preview "$out/${c}_recon_preview.mp4"
  realtalk eval "$out/${c}_recon.mp4" --source "$out/${c}_heldout20.mp4" --json "$out/${c}_recon_eval.json" \
      --report "$out/${c}_recon_eval.html"
  python "$(dirname "$0")/eval_reference_baseline.py" "$out/${c}_heldout20.mp4" "$out/${c}_baseline.mp4"
  realtalk eval "$out/${c}_baseline.mp4" --source "$out/${c}_heldout20.mp4" --json "$out/${c}_baseline_eval.json"
  realtalk eval "$out/${c}_dub_eng60.mp4" --speech "$speech" --mouth-curve "$out/${c}_dub_eng60.mouth.json" \
      --json "$out/${c}_dub_eng60_eval.json"
}

split mimictalk_German_20s 16
split dfrf_cnn2_25fps 56.96
run mimictalk_German_20s
run dfrf_cnn2_25fps
