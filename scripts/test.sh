#!/usr/bin/env bash
# The README's test command: sets up .venv (first time: a few minutes), builds pyseg (CPU module, and the
# CUDA module when nvcc is found), runs the whole test suite, then the CRF tests again against an
# AddressSanitizer + UndefinedBehaviorSanitizer build of the extension.
#   scripts/test.sh [pytest args...]      e.g. scripts/test.sh -k crf
# Environment: PYSEG_SKIP_ASAN=1 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${PYSEG_VENV:-.venv}
echo "== structure: import cycles, function lengths"
"$VENV/bin/python" scripts/check_structure.py
echo "== pytest"
# The pytest script (not python -m) keeps the source tree off sys.path: tests import the installed package.
"$VENV/bin/pytest" -p no:cacheprovider "$@"
if [ "${PYSEG_SKIP_ASAN:-0}" != "1" ]; then
  echo "== CRF tests under AddressSanitizer + UBSan"
  PYTHON="$VENV/bin/python" bash scripts/asan_tests.sh
fi
