#!/usr/bin/env bash
# The MS bundle (default recipe, fold 0) for several seeds, each into its own bundle root, plus the
# FLAIR-threshold baseline on the same split. Same data for every seed.
#
#   bash scripts/ms_demo_seeds.sh                          # seeds 0 1 2 -> /tmp/ms_seeds
#   OUT=/tmp/x SEEDS="0" bash scripts/ms_demo_seeds.sh --epochs 5
#   RECIPE=paper bash scripts/ms_demo_seeds.sh             # the papers' recipe (configs/paper.json) -> $OUT/paper/seed<k>
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-/tmp/ms_seeds}"
SEEDS="${SEEDS:-0 1 2}"
RECIPE="${RECIPE:-default}"
B=bundles/ms_lesion_segmentation
DATA="$OUT/data/ms_demo"
mkdir -p "$OUT"
case "$RECIPE" in
  default) NAME=hyper; CFG=("$B/configs/train.json") ;;
  paper) NAME=paper; CFG=("$B/configs/train.json" "$B/configs/paper.json") ;;
  *) echo "unknown RECIPE '$RECIPE' (default, paper)" >&2; exit 2 ;;
esac
CFGS="[$(printf "'%s'," "${CFG[@]}")]"
"$PY" scripts/demo_baselines.py --task ms --data "$DATA" --fold 0 --out "$OUT/baselines"
for s in $SEEDS; do
  R="$OUT/$NAME/seed$s"
  if [ -f "$R/eval/summary.json" ]; then echo "== $R done, skipped"; continue; fi
  ARGS=(--meta_file "$B/configs/metadata.json" --logging_file "$B/configs/logging.conf" --bundle_root "$R" --dataset_dir "$DATA" --seed "$s")
  echo "== seed $s -> $R"
  if [ ! -f "$R/train_seconds.txt" ]; then
    t0=$(date +%s)
    "$PY" -m monai.bundle run --config_file "$CFGS" "${ARGS[@]}" "$@"
    echo "$(( $(date +%s) - t0 ))" > "$R/train_seconds.txt"
  fi
  "$PY" -m monai.bundle run --config_file "$B/configs/evaluate.json" "${ARGS[@]}" "$@"
done
echo "== done: $OUT (baselines in $OUT/baselines)"
