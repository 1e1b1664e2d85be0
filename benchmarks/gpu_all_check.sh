#!/usr/bin/env bash
# Every GPU check in one device call (a lent GPU gives a session about one call of at most 600 s):
#   bash benchmarks/gpu_all_check.sh DATA_DIR            # GPU: install once, then the three checks
#   bash benchmarks/gpu_all_check.sh --smoke DATA_DIR    # CPU: the layer's and the training's --smoke runs
# DATA_DIR as for gpu_train_check.sh (the trashcan data copied into an ignored folder, e.g. .gpudata/trashcan).
# Steps: pip install with CUDA for sm_90 once (PYSEG_GPU_INSTALLED=1 then tells each check to skip its own);
# then, most wanted first, each given what is left of BUDGET_SECONDS: gpu_layer_check.sh (the CRF layer,
# issue 16), gpu_train_check.sh (training and the submission, issue 15; TRAIN_SECONDS from the time left) and
# gpu_check.sh (the CUDA dense CRF; its sanitizers only where time is left). A check that would start with
# under 60 s left is skipped and marked FAILED.
# Output in $OUT (default build/gpuall/out), 7 files at most, as the device tool brings back 8:
# gpu_all_check.log (this driver, with each check's summary table), layer.log, train.log, crf.log (each
# check's whole log), summary.json (the training check's), layer_speed.json, results.tar.gz (every other file).
# Environment: BUDGET_SECONDS (default 540), PYTHON (default python3), PYSEG_CUDA_ARCHITECTURES (default 90).
set -uo pipefail
SMOKE=()
if [ "${1:-}" = "--smoke" ]; then SMOKE=(--smoke); shift; fi
if [ $# -ne 1 ] || [ ! -f "$1/train.json" ]; then
  echo "usage: bash benchmarks/gpu_all_check.sh [--smoke] DATA_DIR   (DATA_DIR as gpu_train_check.sh takes it;" \
       "got '${1:-}')" >&2
  exit 2
fi
DATA=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/benchmarks/check_lib.sh"
start_log "${OUT:-$ROOT/build/gpuall/out}" gpu_all_check
DEST=$LOG
PARTS=$(mktemp -d "${TMPDIR:-/tmp}/pyseg-gpu-all.XXXXXX")
trap 'rm -rf "$PARTS"' EXIT
export PYSEG_CHECK_DEADLINE=$(( T0 + ${BUDGET_SECONDS:-540} ))
left() { echo $(( PYSEG_CHECK_DEADLINE - $(date +%s) )); }

if [ ${#SMOKE[@]} -eq 0 ]; then
  step "pip install once (PYSEG_CUDA=ON, architectures $ARCH)"
  PYSEG_CUDA=ON PYSEG_CUDA_ARCHITECTURES=$ARCH timeout 300 $PY -m pip install --no-build-isolation --no-deps -v . \
    > "$PARTS/pip_install.txt" 2>&1
  rc=$?; grep -E "pyseg: CUDA module|rror" "$PARTS/pip_install.txt" | head -20; record "pip install (sm_$ARCH)" $rc
  (cd /tmp && $PY -c "from pyseg.crf import cuda_backend; ok, why = cuda_backend.status(); print(ok, why)
raise SystemExit(0 if ok else 1)")
  record "the installed CUDA backend is usable" $?
  export PYSEG_GPU_INSTALLED=1
fi

# run_check NAME LOGNAME CAP_SECONDS SCRIPT ARGS...: the check with OUT=$PARTS/NAME, stopped after CAP seconds or at
# the deadline; its log becomes DEST/NAME.log and its summary lines are repeated here.
run_check() {
  local name=$1 logname=$2 cap=$3 budget
  shift 3
  budget=$(left)
  [ "$budget" -lt "$cap" ] || budget=$cap
  if [ "$budget" -lt 60 ]; then record "$name (skipped: $(left) s left)" 1; return; fi
  step "$name ($budget s at most)"
  OUT=$PARTS/$name timeout "$budget" bash "$@" > /dev/null 2>&1
  local rc=$?
  [ $rc -eq 124 ] && echo "stopped after $budget s"
  cp "$PARTS/$name/$logname.log" "$DEST/$name.log" 2>/dev/null && rm -f "$PARTS/$name/$logname.log"
  sed -n '/^== \(summary\|checks\)/,$p' "$DEST/$name.log" 2>/dev/null | tail -40
  record "$name: $*" $rc
}

run_check layer gpu_layer_check 240 benchmarks/gpu_layer_check.sh "${SMOKE[@]}"
# the training check spends about 4 minutes besides its training (tests, speed, evaluate, tune, predict twice)
TRAIN=$(( $(left) - 300 ))
[ $TRAIN -le 180 ] || TRAIN=180
[ $TRAIN -ge 30 ] || TRAIN=30
export TRAIN_SECONDS=$TRAIN
run_check train gpu_train_check 900 benchmarks/gpu_train_check.sh "${SMOKE[@]}" "$DATA"
if [ ${#SMOKE[@]} -eq 0 ]; then
  run_check crf gpu_check 600 benchmarks/gpu_check.sh
else
  echo "gpu_check.sh has no CPU mode: not run with --smoke"
fi

step "collect the files"
mv "$PARTS/train/summary.json" "$DEST/summary.json" 2>/dev/null
mv "$PARTS/layer/layer_speed.json" "$DEST/layer_speed.json" 2>/dev/null
tar -czf "$DEST/results.tar.gz" -C "$PARTS" .
record "files collected" $?
ls -l "$DEST"

echo
echo "== summary ($(( $(date +%s) - T0 )) s of ${BUDGET_SECONDS:-540}; files in $DEST)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
