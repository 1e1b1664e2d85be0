#!/usr/bin/env bash
# Run the CRF tests against an AddressSanitizer + UndefinedBehaviorSanitizer build of the CPU extension.
#
#   PYTHON=.venv/bin/python scripts/asan_tests.sh [extra pytest args]
#
# ASAN_TESTS (default: tests/test_crf_*.py, relative to the repository) selects other test files; ASAN_TIMEOUT_S
# (default 1200) bounds the whole pass. The CUDA pipeline's host emulation in tests/test_crf_cuda.py is built with
# the sanitizers too (PYSEG_EMU_SANITIZE=1): its index arithmetic is the code that runs on the GPU.
#
# Builds _crf_cpu with -DPYSEG_SANITIZE=ON in build/asan (never installed into pyseg/crf/), copies the pyseg
# package into a temporary directory with the sanitized module in its crf/, and runs tests/test_crf_*.py
# there with libasan/libubsan preloaded into the (uninstrumented) Python. Any sanitizer report fails the run.
# Leak detection is off: CPython keeps objects alive at exit by design.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-.venv/bin/python}"
case "$PYTHON" in /*) ;; */*) PYTHON="$REPO/$PYTHON" ;; esac
command -v "$PYTHON" >/dev/null || { echo "asan_tests: python not found: $PYTHON" >&2; exit 2; }
BUILD="$REPO/build/asan"
# cmake / ninja installed into the venv live next to its python
export PATH="$(dirname "$PYTHON"):$PATH"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
CXX="${CXX:-g++}"
command -v "$CXX" >/dev/null || { echo "asan_tests: C++ compiler not found: $CXX" >&2; exit 2; }

echo "== configure + build (sanitized) in $BUILD"
PYBIND11_DIR="$("$PYTHON" -m pybind11 --cmakedir)"
cmake -S "$REPO" -B "$BUILD" "${GEN[@]}" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$CXX" \
  -DPYSEG_SANITIZE=ON -DPYSEG_CUDA=OFF \
  -DPython_EXECUTABLE="$PYTHON" -Dpybind11_DIR="$PYBIND11_DIR" >/dev/null
cmake --build "$BUILD" --target _crf_cpu
SO="$(find "$BUILD" -maxdepth 2 -name '_crf_cpu*.so' -newer "$BUILD/CMakeCache.txt" | head -n 1)"
[ -n "$SO" ] || SO="$(find "$BUILD" -maxdepth 2 -name '_crf_cpu*.so' | head -n 1)"
[ -n "$SO" ] || { echo "asan_tests: no _crf_cpu*.so built under $BUILD" >&2; exit 1; }
nm -D "$SO" | grep -q __asan_ || ldd "$SO" | grep -q libasan \
  || { echo "asan_tests: $SO is not an ASan build" >&2; exit 1; }

TMP="$(mktemp -d "${TMPDIR:-/tmp}/pyseg-asan.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# The package without any in-place extension modules or caches, plus the sanitized module.
(cd "$REPO" && tar cf - --exclude='__pycache__' --exclude='*.so' pyseg) | (cd "$TMP" && tar xf -)
cp "$SO" "$TMP/pyseg/crf/"

# A pytest plugin that fails the session unless the sanitized module was the one the tests imported, and unless
# the CUDA pipeline's host emulation (built sanitized: PYSEG_EMU_SANITIZE=1) ran wherever its tests were chosen.
cat > "$TMP/pyseg_asan_check.py" <<EOF
import sys

EMULATION, PASSED = set(), set()

def pytest_collection_modifyitems(items):
    EMULATION.update(i.nodeid for i in items if "emulator" in getattr(i, "fixturenames", ()))

def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed:
        PASSED.add(report.nodeid)

def pytest_sessionfinish(session, exitstatus):
    mod = sys.modules.get("pyseg.crf._crf_cpu")
    path = getattr(mod, "__file__", None)
    print("\n[asan] pyseg.crf._crf_cpu loaded from:", path)
    if path is None or not path.startswith("$TMP/"):
        print("[asan] ERROR: the tests did not use the sanitized module")
        session.exitstatus = 3
    tests = next((m for n, m in list(sys.modules.items()) if n.rpartition(".")[2] == "test_crf_cuda"), None)
    sanitized = bool(getattr(tests, "SANITIZE", False))
    print(f"[asan] host emulation of the CUDA pipeline (sanitized: {sanitized}): "
          f"{len(EMULATION & PASSED)} of {len(EMULATION)} tests passed")
    if EMULATION and not (sanitized and EMULATION & PASSED):
        print("[asan] ERROR: the host-emulation tests did not run a sanitized emulation")
        session.exitstatus = 3
EOF

ASAN_LIB="$("$CXX" -print-file-name=libasan.so)"
UBSAN_LIB="$("$CXX" -print-file-name=libubsan.so)"
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
  [ -e "$lib" ] || { echo "asan_tests: sanitizer runtime not found: $lib" >&2; exit 2; }
done
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:detect_odr_violation=0:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$TMP"
export PYTHONDONTWRITEBYTECODE=1
export PYSEG_EMU_SANITIZE=1  # tests/test_crf_cuda.py builds the CUDA pipeline's host emulation with ASan + UBSan

echo "== sanity: the sanitized module is the one imported"
(cd "$TMP" && "$PYTHON" -c "import pyseg.crf._crf_cpu as m, sys; print('[asan] module:', m.__file__); \
sys.exit(0 if m.__file__.startswith('$TMP/') else 1)")

TESTS=()
for t in ${ASAN_TESTS:-tests/test_crf_*.py}; do
  case "$t" in /*) TESTS+=("$t") ;; *) TESTS+=("$REPO/$t") ;; esac
done
echo "== CRF tests under ASan + UBSan: ${TESTS[*]}"
LOG="$TMP/pytest.log"
# -s: no output capture, so that a sanitizer report (written to fd 2 just before the process dies) is shown.
set +e
# A hang fails in minutes (pytest-timeout, per test, from pyproject.toml); ASAN_TIMEOUT_S bounds the whole pass.
(cd "$TMP" && timeout -k 30 "${ASAN_TIMEOUT_S:-1200}" "$PYTHON" -m pytest -p pyseg_asan_check -p no:cacheprovider \
   --rootdir="$REPO" -c "$REPO/pyproject.toml" -q -s \
   "${TESTS[@]}" "$@" 2>&1) | tee "$LOG"
status=${PIPESTATUS[0]}
[ "$status" -ne 124 ] && [ "$status" -ne 137 ] \
  || echo "asan_tests: the sanitizer pass ran past ASAN_TIMEOUT_S=${ASAN_TIMEOUT_S:-1200} s and was stopped" >&2
set -e
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: (Address|UndefinedBehavior)Sanitizer" "$LOG"; then
  echo "asan_tests: sanitizer report found (see above)" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "asan_tests: pytest exited with status $status" >&2
  exit "$status"
fi
echo "asan_tests: OK (no sanitizer reports)"
