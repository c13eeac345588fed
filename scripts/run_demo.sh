#!/usr/bin/env bash
# The main job: train and evaluate the liver-lesion Hyper-UNet bundle on the offline demo data
# (generated on first use), then say where the model, metrics, plots and logs went.
#
#   bash scripts/run_demo.sh                       # fast CPU demo settings (bundles/.../configs/demo.json)
#   bash scripts/run_demo.sh --epochs 10           # any bundle override is passed on
#   PY=/path/to/python bash scripts/run_demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
B=bundles/liver_lesion_segmentation
ARGS=(--meta_file "$B/configs/metadata.json" --logging_file "$B/configs/logging.conf" --bundle_root "$B")

# A re-run starts again and moves the earlier run to $B/previous_runs/<time>/ (nothing is deleted),
# unless --resume true or --overwrite false is given.
TRAIN_ARGS=()
case " $* " in *" --resume "*|*" --overwrite "*|*" --resume="*|*" --overwrite="*) ;; *) TRAIN_ARGS=(--overwrite true) ;; esac
echo "== [1/2] training $B on the demo data (progress below; TensorBoard logs in $B/logs)"
"$PY" -m monai.bundle run --config_file "['$B/configs/train.json','$B/configs/demo.json']" "${ARGS[@]}" "${TRAIN_ARGS[@]}" "$@"
echo "== [2/2] evaluating the best checkpoint (volume-level Dice, slices stitched back)"
"$PY" -m monai.bundle run --config_file "['$B/configs/train.json','$B/configs/demo.json','$B/configs/evaluate.json']" "${ARGS[@]}" "$@"

echo
echo "== results"
for f in "$B/eval/summary.md" ; do [ -f "$f" ] && cat "$f"; done
echo
echo "model (best state_dict):     $B/models/model.pt"
echo "resumable checkpoint:        $B/models/checkpoint_last.pt   (re-run with --resume true --epochs N)"
echo "metrics, curves, predictions: $B/eval/   (CSV, Markdown, PNG, NIfTI)"
echo "TensorBoard:                 tensorboard --logdir $B/logs"
echo "earlier runs (if any):       $B/previous_runs/"
echo "demo data:                   $B/data/liver_demo   (point --dataset_dir at real data prepared by scripts/prepare_lits.py)"
