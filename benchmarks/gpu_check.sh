#!/usr/bin/env bash
# One-shot GPU check of the CUDA dense CRF (issue 3), for a machine with an NVIDIA GPU (written for an H100).
#   bash benchmarks/gpu_check.sh
# Steps: (1) stand-alone check without torch: GPU against the host emulation of the same pipeline,
# bitwise repeat, poisoned outputs; (2) compute-sanitizer memcheck, racecheck, initcheck, synccheck on it;
# (3) pip install (PYSEG_CUDA=ON) and the CUDA tests; (4) timing table (CUDA events after warm-up).
# Logs go to $OUT (or build/gpucheck/out). The summary is printed last. About 4-6 minutes on an H100 machine.
# Environment: PYTHON (default python3), PYSEG_CUDA_ARCHITECTURES (default 90), PYSEG_SHARED_DATA (a folder
# holding crf_examples/; default build/gpucheck/data when present) for the real-image test and natural images.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LOG=${OUT:-$ROOT/build/gpucheck/out}
mkdir -p "$LOG" build/gpucheck
PY=${PYTHON:-python3}
ARCH=${PYSEG_CUDA_ARCHITECTURES:-90}
export PYTHONUNBUFFERED=1
if [ -z "${PYSEG_SHARED_DATA:-}" ] && [ -d "$ROOT/build/gpucheck/data/crf_examples" ]; then
  export PYSEG_SHARED_DATA=$ROOT/build/gpucheck/data
fi
SUMMARY=()
FAILED=0
record() {  # name, exit status
  if [ "$2" -eq 0 ]; then SUMMARY+=("ok      $1"); else SUMMARY+=("FAILED  $1 (exit $2)"); FAILED=1; fi
}
step() { echo; echo "== $1   [$(date -u +%T)]"; }
T0=$(date +%s)

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1 | tee "$LOG/env.txt"
nvcc --version 2>&1 | tail -2 | tee -a "$LOG/env.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())" \
  2>&1 | tee -a "$LOG/env.txt"
echo "shared data: ${PYSEG_SHARED_DATA:-none}" | tee -a "$LOG/env.txt"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)

step "stand-alone check: build"
nvcc -std=c++17 -O3 -arch=sm_$ARCH -lineinfo -Icsrc csrc/cuda/standalone_check.cu csrc/cuda/crf_cuda.cu \
  -o build/gpucheck/check > "$LOG/standalone_build.log" 2>&1
rc=$?; record "stand-alone build (nvcc sm_$ARCH)" $rc; tail -5 "$LOG/standalone_build.log"
if [ $rc -eq 0 ]; then
  step "stand-alone check: GPU vs host emulation"
  timeout 120 build/gpucheck/check 2>&1 | tee "$LOG/standalone.txt"
  record "GPU vs host emulation, bitwise repeat, all outputs written" ${PIPESTATUS[0]}
  if [ -n "$SAN" ]; then
    for tool in memcheck racecheck initcheck synccheck; do
      step "compute-sanitizer --tool $tool"
      timeout 240 "$SAN" --tool $tool --error-exitcode 99 build/gpucheck/check > "$LOG/sanitizer_$tool.txt" 2>&1
      rc=$?; tail -4 "$LOG/sanitizer_$tool.txt"; record "compute-sanitizer $tool" $rc
    done
  else
    record "compute-sanitizer (not found)" 1
  fi
fi

step "pip install (PYSEG_CUDA=ON, architectures $ARCH)"
PYSEG_CUDA=ON PYSEG_CUDA_ARCHITECTURES=$ARCH $PY -m pip install --no-build-isolation --no-deps -v . \
  > "$LOG/pip_install.txt" 2>&1
rc=$?; grep -E "pyseg: CUDA module|error|Error" "$LOG/pip_install.txt" | head -20; record "pip install" $rc
(cd /tmp && $PY -c "from pyseg.crf import cuda_backend; print('cuda backend:', cuda_backend.status())") 2>&1 \
  | tee "$LOG/import.txt"
record "installed module imports and sees the GPU" $([ "$(grep -c 'True' "$LOG/import.txt")" -ge 1 ]; echo $?)

step "pytest (installed package; CUDA tests and CPU-side tests of the CUDA backend)"
# Run from /tmp so that the source tree (without built modules) does not shadow the installed package.
(cd /tmp && timeout 300 $PY -m pytest -p no:cacheprovider -q -rs -c "$ROOT/pyproject.toml" --rootdir "$ROOT" \
  "$ROOT/tests/test_crf_cuda.py" 2>&1) | tee "$LOG/pytest_cuda.txt"
record "pytest tests/test_crf_cuda.py" ${PIPESTATUS[0]}
if grep -q "skipped" "$LOG/pytest_cuda.txt" && grep -q "needs a CUDA GPU" "$LOG/pytest_cuda.txt"; then
  record "CUDA tests actually ran (not skipped)" 1
fi
OTHER=$(grep -l "mark.cuda" "$ROOT"/tests/test_crf*.py 2>/dev/null | grep -v test_crf_cuda.py | tr '\n' ' ')
if [ -n "$OTHER" ]; then
  (cd /tmp && timeout 200 $PY -m pytest -p no:cacheprovider -q -rs -m cuda -c "$ROOT/pyproject.toml" \
    --rootdir "$ROOT" $OTHER 2>&1) | tee "$LOG/pytest_other_cuda.txt"
  record "pytest -m cuda in $OTHER" ${PIPESTATUS[0]}
fi

step "timing (CUDA events after warm-up, median)"
if [ -x build/gpucheck/check ]; then
  timeout 120 build/gpucheck/check --bench 2>&1 | tee "$LOG/standalone_bench.txt"
  record "stand-alone bench" ${PIPESTATUS[0]}
fi
(cd /tmp && timeout 240 $PY "$ROOT/benchmarks/crf_speed_cuda.py" --json "$LOG/speed.json" 2>&1) | tee "$LOG/speed.txt"
record "benchmarks/crf_speed_cuda.py" ${PIPESTATUS[0]}

echo
echo "== summary ($(( $(date +%s) - T0 )) s; logs in $LOG)"
printf '%s\n' "${SUMMARY[@]}"
grep -h "standalone bench\|target" "$LOG/standalone_bench.txt" "$LOG/speed.txt" 2>/dev/null
exit $FAILED
