# Shared by the one-shot GPU checks (gpu_check.sh, gpu_train_check.sh, gpu_layer_check.sh): sourced, not run.
# start_log DIR NAME: DIR made absolute (in LOG), all output also to DIR/NAME.log, PY, nvcc on PATH, ARCH.
# record NAME STATUS adds a line to the summary table (and sets FAILED); step TITLE prints a timed header;
# out_of_time SECONDS is true when fewer are left before PYSEG_CHECK_DEADLINE (epoch seconds; unset: never).
SUMMARY=()
FAILED=0
T0=$(date +%s)
record() {
  if [ "$2" -eq 0 ]; then SUMMARY+=("ok      $1"); else SUMMARY+=("FAILED  $1 (exit $2)"); FAILED=1; fi
}
step() { echo; echo "== $1   [$(date -u +%T), $(( $(date +%s) - T0 )) s]"; }
out_of_time() { [ -n "${PYSEG_CHECK_DEADLINE:-}" ] && [ $(( PYSEG_CHECK_DEADLINE - $(date +%s) )) -lt "$1" ]; }
start_log() {
  mkdir -p "$1"
  LOG=$(cd "$1" && pwd)
  exec > >(tee "$LOG/$2.log") 2>&1
  PY=${PYTHON:-python3}
  command -v nvcc > /dev/null || export PATH=/usr/local/cuda/bin:$PATH
  ARCH=${PYSEG_CUDA_ARCHITECTURES:-90}
  export PYTHONUNBUFFERED=1
}
