#!/usr/bin/env bash
# The liver demo (scripts/run_demo.sh settings) for several seeds and networks, each into its own
# bundle root, then the tables and curves of docs/training.md section 6. Same data, recipe and
# budget for every network; only network_def differs.
#
#   bash scripts/liver_demo_seeds.sh                        # hyper basicunet unet x seeds 0 1 2 -> /tmp/liver_seeds
#   OUT=/tmp/x SEEDS="0 1" NETS="hyper unet" bash scripts/liver_demo_seeds.sh --epochs 10
#
# Networks: hyper = the bundle's Hyper-UNet 5x5 N_L=4; unet = the same PaperUNet with plain 5x5
# convs; unet3 = the papers' UNet 3x3 baseline; basicunet = MONAI's BasicUNet at the demo width
# (features 8, 8, 16, 32, 64, 8: its default (32, 32, 64, 128, 256, 32) at a quarter, as the demo
# runs our nets at 8 instead of 32 start channels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
OUT="${OUT:-/tmp/liver_seeds}"
SEEDS="${SEEDS:-0 1 2}"
NETS="${NETS:-hyper basicunet unet}"
B=bundles/liver_lesion_segmentation
DATA="$OUT/data/liver_demo"
mkdir -p "$OUT"
"$PY" scripts/demo_baselines.py --task liver --data "$DATA" --out "$OUT/baselines"

for net in $NETS; do
  case "$net" in
    hyper) NET=() ;;
    unet) NET=(--network_def#conv conv) ;;
    unet3) NET=(--network_def#conv conv --network_def#kernel_size 3) ;;
    basicunet) NET=(--network_def "{'_target_': 'monai.networks.nets.BasicUNet', 'spatial_dims': 2, 'in_channels': 1, 'out_channels': 1, 'features': [8, 8, 16, 32, 64, 8]}") ;;
    *) echo "unknown network '$net' (hyper, unet, unet3, basicunet)" >&2; exit 2 ;;
  esac
  for s in $SEEDS; do
    R="$OUT/$net/seed$s"
    if [ -f "$R/eval/summary.json" ]; then echo "== $R done, skipped"; continue; fi
    ARGS=(--meta_file "$B/configs/metadata.json" --logging_file "$B/configs/logging.conf" --bundle_root "$R" --dataset_dir "$DATA" --seed "$s")
    echo "== $net seed $s -> $R"
    if [ -f "$R/train_seconds.txt" ]; then
      echo "== $R trained, evaluating"
    else
      t0=$(date +%s)
      "$PY" -m monai.bundle run --config_file "['$B/configs/train.json','$B/configs/demo.json']" "${ARGS[@]}" "${NET[@]}" "$@"
      echo "$(( $(date +%s) - t0 ))" > "$R/train_seconds.txt"
    fi
    "$PY" -m monai.bundle run --config_file "['$B/configs/train.json','$B/configs/demo.json','$B/configs/evaluate.json']" "${ARGS[@]}" "${NET[@]}" "$@"
  done
done
echo "== done: $OUT (baselines in $OUT/baselines/baselines.md)"
