#!/usr/bin/env bash
# One-shot check of pyseg's training path on a GPU machine without a package registry (issue 15):
#   bash benchmarks/gpu_train_check.sh DATA_DIR            # GPU: about 7 minutes on one H100/H200
#   bash benchmarks/gpu_train_check.sh --smoke DATA_DIR    # CPU: the same steps, tiny model, 2 iterations
# DATA_DIR holds images/ and train.json, val.json, test.json (the shared trashcan data, copied into an ignored
# folder of the repository so that it travels with it). Steps: (1) pip install with CUDA for sm_90 (skipped
# by --smoke, which uses the installed package); (2) the CUDA-marked training and predict tests; (3) training
# throughput of pyseg's deeplabv3_resnet50 / deeplabv3plus_resnet50 against torchvision's deeplabv3_resnet50
# (same batch, size, AMP, memory format; synthetic tensors) and pyseg's loop with the real loader against
# ready-made batches; (4) deeplabv3plus_resnet50 from random weights on train.json for as many epochs as fit
# about 3 minutes at the measured speed; (5) val.json without and with the CUDA CRF; (6) the CRF tuned on val;
# (7) test.json predicted with the tuned CRF, and again without it (the difference is the CRF's share);
# (8) the submission checked by pyseg's validator. A summary table is printed last.
# Output in $OUT (default gpu_train_out/), at most 8 files: gpu_train_check.log, summary.json, submission.csv,
# metrics.csv, confusion_val.png, plots/{lr,loss,miou}.png.
# Environment: PYTHON (default python3), PYSEG_CUDA_ARCHITECTURES (default 90), TRAIN_SECONDS (default 180).
set -uo pipefail
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
if [ $# -ne 1 ] || [ ! -f "$1/train.json" ] || [ ! -f "$1/val.json" ] || [ ! -f "$1/test.json" ]; then
  echo "usage: bash benchmarks/gpu_train_check.sh [--smoke] DATA_DIR   (DATA_DIR with train.json, val.json," \
       "test.json and the images they name; got '${1:-}')" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$(cd "$1" && pwd)
source "$ROOT/benchmarks/check_lib.sh"
start_log "${OUT:-$ROOT/gpu_train_out}" gpu_train_check
OUT=$LOG
mkdir -p "$OUT/plots"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyseg-gpu-train.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"  # python -m from here: the source tree (no compiled modules) must not shadow the installed package
if [ $SMOKE -eq 1 ]; then
  DEV=cpu; AMP=none; CRFDEV=cpu
  SPEED=(--device cpu --amp none --size 64 --batch-size 2 --steps 1 --rounds 1 --warmup 0
         --only "deeplabv3_resnet50 (OS16)" torchvision --loop-model deeplabv3plus_resnet18 --loop-steps 2
         --workers 1 --cache ram)
  TRAIN=(model.name=deeplabv3plus_resnet18 "model.kwargs={aspp_channels: 16, decoder_channels: 16}" data.image_size=64 data.batch_size=2 data.num_workers=1 train.max_train_batches=2
         train.max_val_batches=2 train.device=cpu train.amp=none train.channels_last=false)
  EVAL=(--input-size 64 --limit 6)
  TUNE=(--max-images 2 --coarse-only --iterations 2)
else
  DEV=cuda; AMP=bf16; CRFDEV=cuda
  SPEED=(--device cuda --amp bf16 --size 256 --batch-size 16 --channels-last --steps 10 --rounds 5 --warmup 5
         --loop-steps 40 --workers 8 --cache ram)
  TRAIN=(data.num_workers=8 train.device=cuda train.amp=bf16 train.channels_last=true)
  EVAL=()
  TUNE=(--max-images 50)
fi

step "environment"
if [ $SMOKE -eq 0 ]; then nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1; fi
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
echo "data: $DATA  out: $OUT  smoke: $SMOKE"

if [ $SMOKE -eq 0 ] && [ "${PYSEG_GPU_INSTALLED:-0}" != 1 ]; then  # gpu_all_check.sh installs once for all
  step "pip install (PYSEG_CUDA=ON, architectures $ARCH)"
  (cd "$ROOT" && PYSEG_CUDA=ON PYSEG_CUDA_ARCHITECTURES=$ARCH timeout 300 $PY -m pip install --no-build-isolation \
    --no-deps . > "$WORK/pip_install.txt" 2>&1)
  rc=$?; grep -E "pyseg: CUDA module|rror" "$WORK/pip_install.txt" | head -20; record "pip install (CUDA, sm_$ARCH)" $rc
fi
$PY -c "import pyseg.crf as c; print(c.backends())"

step "CUDA-marked training and predict tests"
timeout 300 $PY -m pytest -p no:cacheprovider -q -rs -m cuda -c "$ROOT/pyproject.toml" --rootdir "$ROOT" \
  "$ROOT/tests/test_train_gpu_path.py" "$ROOT/tests/test_predict.py" "$ROOT/tests/test_predict_cli.py" \
  2>&1 | tee "$WORK/pytest.txt"
rc=${PIPESTATUS[0]}
if [ $SMOKE -eq 1 ] && grep -q "needs a CUDA GPU" "$WORK/pytest.txt"; then rc=0; fi  # on a CPU they skip
if [ $SMOKE -eq 0 ] && grep -q "needs a CUDA GPU" "$WORK/pytest.txt"; then rc=1; fi  # on a GPU none may skip
record "pytest -m cuda (training, predict)" $rc

step "training throughput: pyseg vs torchvision, and the data pipeline"
timeout 240 $PY "$ROOT/benchmarks/train_speed.py" "${SPEED[@]}" --loop "$DATA" --json "$WORK/train_speed.json"
record "benchmarks/train_speed.py" $?

step "train deeplabv3plus_resnet50 from random weights on $DATA/train.json"
EPOCHS=$($PY - "$WORK/train_speed.json" "$DATA/train.json" "${TRAIN_SECONDS:-180}" "$SMOKE" <<'EOF'
import json, sys
speed, ann, seconds, smoke = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), float(sys.argv[3]), sys.argv[4]
if smoke == "1":
    print(1)
else:  # images/s of the real loop; validation adds about a tenth
    rate = speed["loop"]["img_s"]["real loader"]
    print(max(1, min(200, int(seconds * rate / (1.1 * len(ann["images"]))))))
EOF
)
echo "epochs: ${EPOCHS:-?} (about ${TRAIN_SECONDS:-180} s at the measured loop speed)"
timeout 900 $PY -m pyseg.train --config "$ROOT/configs/trashcan_deeplabv3plus_resnet50.yaml" \
  --output-dir "$WORK/run" --epochs "${EPOCHS:-1}" --set data.root="$DATA" model.kwargs.pretrained_backbone=null \
  optim.lr=1e-3 optim.backbone_lr=null data.cache=ram "${TRAIN[@]}"
record "pyseg-train (${EPOCHS:-?} epochs)" $?
CKPT=$WORK/run/checkpoints/best.pt
cp "$WORK/run/metrics.csv" "$OUT/" 2>/dev/null
cp "$WORK/run/plots/"{lr,loss,miou}.png "$OUT/plots/" 2>/dev/null

step "evaluate val.json without and with the CRF ($CRFDEV)"
timeout 300 $PY -m pyseg.cli.evaluate --checkpoint "$CKPT" --data-root "$DATA" --ann val.json --crf deeplab \
  --crf-device $CRFDEV --device $DEV --json "$WORK/val_metrics.json" --plot "$OUT/confusion_val.png" "${EVAL[@]}"
record "pyseg-evaluate (val, CRF deeplab)" $?

step "tune the CRF on val.json"
timeout 400 $PY -m pyseg.cli.tune_crf --checkpoint "$CKPT" --data-root "$DATA" --ann val.json --device $DEV \
  --out "$WORK/crf.json" "${TUNE[@]}" "${EVAL[@]}"
record "pyseg-tune-crf (val)" $?

step "predict test.json with the tuned CRF, then without it"
s0=$(date +%s.%N)
timeout 300 $PY -m pyseg.cli.predict --checkpoint "$CKPT" --data-root "$DATA" --ann test.json --crf "$WORK/crf.json" \
  --crf-device $CRFDEV --device $DEV --out "$OUT/submission.csv" --batch-size 16
rc=$?; s1=$(date +%s.%N); record "pyseg-predict (test, tuned CRF)" $rc
timeout 300 $PY -m pyseg.cli.predict --checkpoint "$CKPT" --data-root "$DATA" --ann test.json --crf off \
  --device $DEV --out "$WORK/submission_nocrf.csv" --batch-size 16
rc=$?; s2=$(date +%s.%N); record "pyseg-predict (test, no CRF)" $rc

step "validate the submission"
$PY -c "
import sys
from pyseg.submission import image_ids_from_json, validate_submission
s = validate_submission(sys.argv[1], image_ids_from_json(sys.argv[2]), size=256)
print('valid:', s['rows'], 'rows')" "$OUT/submission.csv" "$DATA/test.json"
record "submission passes pyseg's validator" $?

step "summary"
$PY - "$WORK" "$OUT" "$s0" "$s1" "$s2" "$SMOKE" "${EPOCHS:-0}" <<'EOF'
import json, os, sys
work, out, s0, s1, s2, smoke, epochs = sys.argv[1:]
def load(name):
    try:
        with open(os.path.join(work, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
speed, val, crf = load("train_speed.json"), load("val_metrics.json"), load("crf.json")
t_crf, t_plain = float(s1) - float(s0), float(s2) - float(s1)
summary = {"smoke": smoke == "1", "epochs": int(epochs), "train_speed": speed, "crf_params": crf,
           "predict_test_s": {"with_tuned_crf": t_crf, "without_crf": t_plain,
                              "crf_share": (t_crf - t_plain) / t_crf if t_crf > 0 else None}}
if val:
    summary["val"] = {k: {m: val[k][m] for m in ("miou", "miou_per_image", "pixel_acc")} if val.get(k) else None
                      for k in ("no_crf", "crf")}
tmp = os.path.join(out, ".summary.json.tmp")
with open(tmp, "w") as f:
    json.dump(summary, f, indent=1)
os.replace(tmp, os.path.join(out, "summary.json"))
rows = []
if speed:
    for k, v in speed["models"].items():
        rows.append((f"train img/s {k}", f"{v['img_s']:.1f}"))
    tv = [v["img_s"] for k, v in speed["models"].items() if k.startswith("torchvision")]
    for k, v in speed["models"].items():
        if tv and not k.startswith("torchvision"):
            rows.append((f"  vs torchvision OS8: {k}", f"{v['img_s'] / tv[0]:.2f}x"))
    if "loop" in speed:
        rows.append(("loop: real loader / synthetic", f"{speed['loop']['efficiency']:.0%}"))
rows.append(("epochs trained", epochs))
if val:
    for k in ("no_crf", "crf"):
        if val.get(k):
            rows.append((f"val mIoU global / per image ({k})", f"{val[k]['miou']:.4f} / {val[k]['miou_per_image']:.4f}"))
    if val.get("crf"):
        rows.append(("CRF gain on val (global mIoU)", f"{val['crf']['miou'] - val['no_crf']['miou']:+.4f}"))
if crf:
    rows.append(("tuned CRF gain on val (tuning set)", f"{crf['gain']:+.4f}"))
rows.append(("predict test: with tuned CRF / without", f"{t_crf:.1f} s / {t_plain:.1f} s"))
if t_crf > 0:
    rows.append(("  CRF share of prediction", f"{(t_crf - t_plain) / t_crf:.0%}"))
width = max(len(r[0]) for r in rows)
for a, b in rows:
    print(f"{a:<{width}}  {b}")
EOF
echo
echo "== checks ($(( $(date +%s) - T0 )) s; files in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
