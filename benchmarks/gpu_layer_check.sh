#!/usr/bin/env bash
# One-shot GPU check of the CRF layer's CUDA path (issue 16), for a machine with an NVIDIA GPU (H100/H200):
#   bash benchmarks/gpu_layer_check.sh           # GPU: about 4 minutes (most of it the sm_90 build)
#   bash benchmarks/gpu_layer_check.sh --smoke   # CPU: the installed package, the same steps at batch 2, 128x128
# Steps: (1) pip install with CUDA for sm_90 (skipped by --smoke); (2) the layer tests, tests/test_crf_layer.py
# and tests/test_crf_layer_cuda.py (host emulation and the cuda-marked ones: the layer on CUDA tensors against
# the CPU layer and the float64 oracle, no host round trip); a cuda-marked test skipped for want of a GPU fails
# the check (not with --smoke); (3) benchmarks/crf_layer_speed.py --device cuda --batch-size 16 --size 256:
# the layer's forward and forward + backward against a deeplabv3plus_resnet50 training step, its peak extra
# memory (torch.cuda.max_memory_allocated) and its lattices' size. A summary table is printed last.
# Output in $OUT (default build/gpulayer/out): gpu_layer_check.log, pip_install.txt, layer_speed.json.
# Environment: PYTHON (default python3), PYSEG_CUDA_ARCHITECTURES (default 90).
set -uo pipefail
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
cd "$(dirname "$0")/.."
ROOT=$PWD
source "$ROOT/benchmarks/check_lib.sh"
start_log "${OUT:-$ROOT/build/gpulayer/out}" gpu_layer_check
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pyseg-gpu-layer.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"  # from here the source tree (no compiled modules in it) does not shadow the installed package

step "environment"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

if [ $SMOKE -eq 0 ] && [ "${PYSEG_GPU_INSTALLED:-0}" != 1 ]; then  # gpu_all_check.sh installs once for all
  step "pip install (PYSEG_CUDA=ON, architectures $ARCH)"
  (cd "$ROOT" && PYSEG_CUDA=ON PYSEG_CUDA_ARCHITECTURES=$ARCH timeout 400 $PY -m pip install --no-build-isolation \
    --no-deps -v . > "$LOG/pip_install.txt" 2>&1)
  rc=$?; grep -E "pyseg: CUDA module|rror" "$LOG/pip_install.txt" | head -20; record "pip install (sm_$ARCH)" $rc
  $PY -c "from pyseg.crf import cuda_backend; ok, why = cuda_backend.status(); print(ok, why)
raise SystemExit(0 if ok else 1)"
  record "CUDA backend usable" $?
fi

step "pytest: the layer on CPU, emulated CUDA and (GPU) CUDA tensors"
timeout 300 $PY -m pytest -p no:cacheprovider -q -rs -c "$ROOT/pyproject.toml" --rootdir "$ROOT" \
  "$ROOT/tests/test_crf_layer.py" "$ROOT/tests/test_crf_layer_cuda.py" 2>&1 | tee "$WORK/pytest.txt"
record "pytest tests/test_crf_layer.py tests/test_crf_layer_cuda.py" ${PIPESTATUS[0]}
if [ $SMOKE -eq 0 ] && grep -q "needs a CUDA GPU" "$WORK/pytest.txt"; then
  record "cuda-marked layer tests ran (none skipped for want of a GPU)" 1
fi

if [ $SMOKE -eq 0 ]; then
  BENCH=(--device cuda --batch-size 16 --size 256)
else
  BENCH=(--quick)
fi
step "benchmarks/crf_layer_speed.py ${BENCH[*]}"
timeout 300 $PY "$ROOT/benchmarks/crf_layer_speed.py" "${BENCH[@]}" --json "$LOG/layer_speed.json"
record "benchmarks/crf_layer_speed.py ${BENCH[*]}" $?
if [ $SMOKE -eq 0 ]; then
  $PY -c "import json, sys; m = json.load(open(sys.argv[1]))['memory']
raise SystemExit(0 if m[\"within the issue's 1 GiB\"] else 1)" "$LOG/layer_speed.json"
  record "layer peak extra memory within 1 GiB (batch 16, 256x256, 11 labels, 5 iterations)" $?
fi

echo
echo "== summary ($(( $(date +%s) - T0 )) s; logs in $LOG)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
