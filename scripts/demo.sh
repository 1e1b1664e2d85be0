#!/usr/bin/env bash
# The README's main command: on a fresh machine, sets up .venv, makes the embedded synthetic demo data, trains
# a small DeepLab v3+ on it (CPU, a few minutes), evaluates it with and without the dense CRF, and writes a
# competition submission (CRF on) with overlays and training plots. Everything lands in demo_run/<timestamp>/.
#   scripts/demo.sh [extra pyseg-train --set overrides, e.g. train.epochs=5]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PYSEG_VENV:-.venv}
BIN="$VENV/bin"
OUT=demo_run/$(date +%Y%m%d-%H%M%S)
DATA=demo_run/data
mkdir -p "$OUT"
if [ ! -f "$DATA/test.json" ]; then
  echo "== demo data -> $DATA"
  "$BIN/pyseg-demo-data" "$DATA"
fi
SETS=(data.root="$DATA")
for kv in "$@"; do SETS+=("$kv"); done
echo "== train -> $OUT/train"
"$BIN/pyseg-train" --config configs/demo.yaml --output-dir "$OUT/train" --set "${SETS[@]}"
CKPT="$OUT/train/checkpoints/best.pt"
echo "== evaluate on val, without and with the CRF"
"$BIN/pyseg-evaluate" --checkpoint "$CKPT" --data-root "$DATA" --ann val.json --crf krahenbuhl \
  --plot "$OUT/confusion_val.png" --json "$OUT/val_metrics.json"
echo "== predict test.json with the CRF -> $OUT/submission.csv"
"$BIN/pyseg-predict" --checkpoint "$CKPT" --data-root "$DATA" --ann test.json --crf krahenbuhl \
  --out "$OUT/submission.csv" --size 256 --vis "$OUT/vis"
echo
echo "done: $OUT"
echo "  training curves:   $OUT/train/plots/"
echo "  metrics per epoch: $OUT/train/metrics.csv"
echo "  val metrics:       $OUT/val_metrics.json, $OUT/confusion_val.png"
echo "  submission:        $OUT/submission.csv (overlays in $OUT/vis/)"
