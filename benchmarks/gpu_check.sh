#!/usr/bin/env bash
# One-shot GPU check of the CUDA dense CRF (issue 3), for a machine with an NVIDIA GPU (written for an H100).
#   bash benchmarks/gpu_check.sh
# Steps, essentials first: (1) stand-alone check without torch: GPU against the host emulation of the same
# pipeline, bitwise repeat, poisoned outputs; (2) pip install (PYSEG_CUDA=ON) and the CUDA tests; (3) timing
# table (CUDA events after warm-up); (4) compute-sanitizer memcheck, racecheck, initcheck, synccheck.
# About 4-6 minutes on an H100 machine. Output: stdout (summary last) and, in $OUT (or build/gpucheck/out),
# at most 5 files: gpu_check.log (everything printed), pip_install.txt, sanitizer.txt, speed.json.
# Environment: PYTHON (default python3), PYSEG_CUDA_ARCHITECTURES (default 90), PYSEG_SHARED_DATA (a folder
# holding crf_examples/; default build/gpucheck/data when present) for the real-image test and natural images.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p build/gpucheck
source "$ROOT/benchmarks/check_lib.sh"
start_log "${OUT:-$ROOT/build/gpucheck/out}" gpu_check
if [ -z "${PYSEG_SHARED_DATA:-}" ] && [ -d "$ROOT/build/gpucheck/data/crf_examples" ]; then
  export PYSEG_SHARED_DATA=$ROOT/build/gpucheck/data
fi

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv 2>&1
nvcc --version 2>&1 | tail -2
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
echo "shared data: ${PYSEG_SHARED_DATA:-none}"
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer /opt/nvidia/*/compute-sanitizer \
  2>/dev/null | head -1)
echo "compute-sanitizer: ${SAN:-not found}"

step "stand-alone check: build (nvcc sm_$ARCH)"
nvcc -std=c++17 -O3 -arch=sm_$ARCH -lineinfo -Icsrc csrc/cuda/standalone_check.cu csrc/cuda/crf_cuda.cu \
  -o build/gpucheck/check 2>&1 | tail -20
rc=${PIPESTATUS[0]}; record "stand-alone build (nvcc sm_$ARCH)" $rc
if [ $rc -eq 0 ]; then
  step "stand-alone check: GPU vs host emulation"
  timeout 120 build/gpucheck/check
  record "GPU vs host emulation, bitwise repeat, all outputs written" $?
fi

if [ "${PYSEG_GPU_INSTALLED:-0}" != 1 ]; then  # gpu_all_check.sh installs once for all the checks
  step "pip install (PYSEG_CUDA=ON, architectures $ARCH)"
  PYSEG_CUDA=ON PYSEG_CUDA_ARCHITECTURES=$ARCH timeout 300 $PY -m pip install --no-build-isolation --no-deps -v . \
    > "$LOG/pip_install.txt" 2>&1
  rc=$?; grep -E "pyseg: CUDA module|rror" "$LOG/pip_install.txt" | head -20; record "pip install" $rc
fi
(cd /tmp && $PY -c "from pyseg.crf import cuda_backend, backends; print(cuda_backend.status(), backends())")
(cd /tmp && $PY -c "from pyseg.crf import cuda_backend; raise SystemExit(0 if cuda_backend.status()[0] else 1)")
record "installed module imports and sees the GPU" $?

step "pytest (installed package)"
# From /tmp, so that the source tree (no built modules in it) does not shadow the installed package.
(cd /tmp && timeout 300 $PY -m pytest -p no:cacheprovider -q -rs -c "$ROOT/pyproject.toml" --rootdir "$ROOT" \
  "$ROOT/tests/test_crf_cuda.py" 2>&1) | tee "$LOG/.pytest_cuda.txt"
record "pytest tests/test_crf_cuda.py" ${PIPESTATUS[0]}
if grep -q "needs a CUDA GPU" "$LOG/.pytest_cuda.txt"; then record "CUDA tests ran (none skipped for want of a GPU)" 1; fi
rm -f "$LOG/.pytest_cuda.txt"
OTHER=$(grep -l "mark.cuda" "$ROOT"/tests/test_crf*.py 2>/dev/null | grep -v test_crf_cuda.py | tr '\n' ' ')
if [ -n "$OTHER" ]; then
  step "pytest -m cuda: $OTHER"
  # shellcheck disable=SC2086
  (cd /tmp && timeout 200 $PY -m pytest -p no:cacheprovider -q -rs -m cuda -c "$ROOT/pyproject.toml" \
    --rootdir "$ROOT" $OTHER 2>&1)
  record "pytest -m cuda ($OTHER)" $?
fi

step "timing (CUDA events after warm-up, median)"
if [ -x build/gpucheck/check ]; then
  timeout 120 build/gpucheck/check --bench
  record "stand-alone bench" $?
fi
(cd /tmp && timeout 240 $PY "$ROOT/benchmarks/crf_speed_cuda.py" --json "$LOG/speed.json" 2>&1)
record "benchmarks/crf_speed_cuda.py" $?

: > "$LOG/sanitizer.txt"
if [ -x build/gpucheck/check ] && [ -n "$SAN" ]; then
  for tool in memcheck racecheck initcheck synccheck; do
    if [ $(( $(date +%s) - T0 )) -gt 420 ] || out_of_time 100; then
      record "compute-sanitizer $tool (skipped: out of time)" 1; continue
    fi
    step "compute-sanitizer --tool $tool (small cases)"
    echo "== $tool" >> "$LOG/sanitizer.txt"
    timeout 90 "$SAN" --tool $tool --error-exitcode 99 build/gpucheck/check --small >> "$LOG/sanitizer.txt" 2>&1
    rc=$?; tail -3 "$LOG/sanitizer.txt"; record "compute-sanitizer $tool" $rc
  done
elif [ -z "$SAN" ]; then
  record "compute-sanitizer (not found)" 1
fi

echo
echo "== summary ($(( $(date +%s) - T0 )) s; logs in $LOG)"
printf '%s\n' "${SUMMARY[@]}"
grep -h "standalone bench\|target\|images/s" "$LOG/gpu_check.log" 2>/dev/null | grep -v "^==" | tail -8
exit $FAILED
