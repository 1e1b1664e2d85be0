#!/usr/bin/env bash
# Where the CUDA dense CRF's time goes, for tuning on a GPU machine (the full check is gpu_check.sh):
#   bash benchmarks/gpu_profile.sh
# Builds the stand-alone check (and, when build/gpucheck/base/csrc holds an older csrc/, that version too,
# for an A/B on the same warm machine), prints both --bench tables, then ncu's per-kernel GPU time of one
# 512x512 call and one batch of 64 at 256x256 (benchmarks/ncu_summary.py). About a minute on an H100.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${OUT:-$PWD/build/gpucheck/out}
mkdir -p "$LOG" build/gpucheck
command -v nvcc > /dev/null || export PATH=/usr/local/cuda/bin:$PATH
ARCH=${PYSEG_CUDA_ARCHITECTURES:-90}
T0=$(date +%s)
build() {  # csrc dir, output binary
  nvcc -std=c++17 -O3 -arch=sm_$ARCH -lineinfo -I"$1" "$1/cuda/standalone_check.cu" "$1/cuda/crf_cuda.cu" -o "$2"
}
build csrc build/gpucheck/check > build/gpucheck/nvcc.txt 2>&1 &
if [ -d build/gpucheck/base/csrc ]; then build build/gpucheck/base/csrc build/gpucheck/check_base >> build/gpucheck/nvcc.txt 2>&1 & fi
wait
echo "== built in $(( $(date +%s) - T0 )) s"; grep -i "error" build/gpucheck/nvcc.txt | head
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
if [ -x build/gpucheck/check_base ]; then echo "== base"; timeout 120 build/gpucheck/check_base --bench; fi
echo "== current: correctness (GPU vs host emulation, graphs on)"; timeout 120 build/gpucheck/check
echo "== current"; timeout 120 build/gpucheck/check --bench
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
if [ -n "$NCU" ]; then
  timeout 240 "$NCU" --metrics gpu__time_duration.sum --cache-control none --clock-control none --csv --print-kernel-base demangled \
    --print-units base build/gpucheck/check --profile > "$LOG/ncu.csv" 2> build/gpucheck/ncu_err.txt
  echo "== ncu exit $? ($(( $(date +%s) - T0 )) s)"; tail -3 build/gpucheck/ncu_err.txt
  python3 benchmarks/ncu_summary.py "$LOG/ncu.csv"
  # Details of the first 512x512 call's first iteration (after the 8 launches of its normalisation pass).
  timeout 120 "$NCU" --kernel-name-base demangled -k regex:"SplatPieces<|SplatReduce>|Update<|Blur>" \
    --launch-skip 8 --launch-count 9 --section SpeedOfLight --section MemoryWorkloadAnalysis \
    --section Occupancy --cache-control none --clock-control none --csv build/gpucheck/check --profile \
    > "$LOG/ncu_detail.csv" 2> build/gpucheck/ncu_detail_err.txt
  python3 benchmarks/ncu_summary.py --detail "$LOG/ncu_detail.csv"
else
  echo "ncu not found"
fi
echo "== done in $(( $(date +%s) - T0 )) s"
