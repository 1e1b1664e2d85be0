# Shared by the one-shot GPU checks (gpu_check.sh, gpu_train_check.sh): sourced, not run.
# record NAME STATUS adds a line to the summary table (and sets FAILED); step TITLE prints a timed header.
SUMMARY=()
FAILED=0
T0=$(date +%s)
record() {
  if [ "$2" -eq 0 ]; then SUMMARY+=("ok      $1"); else SUMMARY+=("FAILED  $1 (exit $2)"); FAILED=1; fi
}
step() { echo; echo "== $1   [$(date -u +%T), $(( $(date +%s) - T0 )) s]"; }
