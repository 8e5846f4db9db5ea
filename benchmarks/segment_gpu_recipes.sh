#!/usr/bin/env bash
# ChangeNet-Segmentation GPU recipes side by side on one GPU, then the GPU runtimes of the chosen one.
#
# A small model at batch 16 leaves an H200 mostly idle (data loading and Python set the pace), so
# the recipes train at the same time, each with its own process and workdir, in about the wall
# time of one. Afterwards the chosen checkpoint is timed alone (nothing else on the GPU) by
# benchmarks/segment_gpu.py --checkpoint: the cheapest recipe that reaches TAO's val IoU 86.15,
# or the most accurate one when none does. If time is left, the TAO-width decoder is timed too
# (the headline variant only).
#
#   OUT=/tmp/gpu bash benchmarks/segment_gpu_recipes.sh                        # on the GPU box
#   DEVICE=cpu TRAIN_MINUTES=2 TIME_MINUTES=1.5 EXTRA="--set ..." bash benchmarks/segment_gpu_recipes.sh
#
# Environment: OUT (where the JSONs and the log go), DATA (MVTec AD transistor), DEVICE (cuda|cpu),
# TRAIN_MINUTES (each recipe's whole budget), TIME_MINUTES (the timing run's), DEADLINE_MINUTES
# (the whole script's: the second timing only runs inside it), PYTHON (python3), EXTRA (arguments for every run,
# e.g. --set overrides for a smoke test), WORK (the runs' workdirs; a new temporary folder by default).
# Render the RESULTS.md section afterwards with
#   python benchmarks/segment_gpu.py --render-only $OUT/*.json
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-benchmarks/results/gpu}
DATA=${DATA:-../shared/data/mvtec_ad_256/transistor}
DEVICE=${DEVICE:-cuda}
TRAIN_MINUTES=${TRAIN_MINUTES:-6.0}
TIME_MINUTES=${TIME_MINUTES:-3.0}
DEADLINE_MINUTES=${DEADLINE_MINUTES:-9.4}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/segment-gpu-recipes.XXXXXX")}  # each run's workdir, checkpoints, log
mkdir -p "$WORK"
mkdir -p "$OUT"
EMA='segment.train.ema={decay: 0.998, warmup: true}'

# name | overrides on params.yaml + infra/params/gpu-retrain.yaml
RECIPES=(
  "tao|"
  "tao_ema|--set '$EMA'"
  "light64_ema|--set segment.model.upsample_dim=64 --set '$EMA'"
)

common() {  # the arguments every run shares
  echo "--device $DEVICE --data $DATA --no-results-md $EXTRA"
}

for recipe in "${RECIPES[@]}"; do
  name=${recipe%%|*}
  sets=${recipe#*|}
  # a few intra-op threads each: three processes with a thread per core would fight over the cores
  eval "OMP_NUM_THREADS=4 $PYTHON benchmarks/segment_gpu.py $(common) --minutes $TRAIN_MINUTES --reserve-minutes 0.7 --no-timing \
    --workdir $WORK/$name --results $OUT/recipe-$name.json $sets" >"$WORK/$name.log" 2>&1 &
done
wait
for recipe in "${RECIPES[@]}"; do
  name=${recipe%%|*}
  echo "===== recipe $name" >>"$OUT/log.txt"
  cat "$WORK/$name.log" >>"$OUT/log.txt"
done

# The recipe to time: the cheapest (fewest decoder FLOPs, listed last) at or above 86.15, else the best.
read -r chosen other <<<"$($PYTHON - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
runs = {}
for path in sorted(out.glob("recipe-*.json")):
    data = json.loads(path.read_text())
    if data.get("val", {}).get("iou") is not None:
        runs[path.stem.removeprefix("recipe-")] = data["val"]["iou"]
order = ["light64_ema", "tao_ema", "tao"]  # cheapest first
passing = [name for name in order if runs.get(name, 0) >= 0.8615]
chosen = passing[0] if passing else max(runs, key=runs.get, default="none")
other = next((name for name in ("tao_ema", "tao") if name != chosen and name in runs), "none")
print(chosen, other)
EOF
)"
echo "===== chosen $chosen, other $other" | tee -a "$OUT/log.txt"
[ "$chosen" = none ] && exit 1

time_recipe() {  # name, minutes, extra arguments
  local name=$1 minutes=$2
  shift 2
  eval "$PYTHON benchmarks/segment_gpu.py $(common) --minutes $minutes --reserve-minutes 0 \
    --workdir $WORK/time-$name --checkpoint $WORK/$name/checkpoints/best.ckpt \
    --results $OUT/timing-$name.json $(recipe_sets "$name") $*" >>"$OUT/log.txt" 2>&1
}
recipe_sets() {  # the overrides a recipe was trained with (the model must be rebuilt the same)
  for recipe in "${RECIPES[@]}"; do
    [ "${recipe%%|*}" = "$1" ] && echo "${recipe#*|}"
  done
}

echo "===== timing $chosen" >>"$OUT/log.txt"
time_recipe "$chosen" "$TIME_MINUTES"
left=$($PYTHON -c "print(round(($DEADLINE_MINUTES * 60 - ($(date +%s) - $start)) / 60, 2))")
if [ "$other" != none ] && $PYTHON -c "import sys; sys.exit(not $left >= 1.5)"; then
  echo "===== timing $other (headline variant, $left min left)" >>"$OUT/log.txt"
  time_recipe "$other" "$left" --variant "'pytorch $DEVICE fp16 channels-last compile'"
fi
echo "===== done in $(( $(date +%s) - start )) s" | tee -a "$OUT/log.txt"
