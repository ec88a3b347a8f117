#!/usr/bin/env bash
# Builds the C++ core and its GoogleTest suite under ThreadSanitizer and runs it.
# Fails on any test failure or TSan report (TSan exits 66 on the first one).
# Boost is found like in the wheel build: cmeel-boost if the Python on PATH (or
# $PYTHON) can see it, else the system's libboost-dev; GoogleTest comes from
# the system (Debian: libgtest-dev).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FLASHSALE_CPP_BUILD_DIR:-$root/build/cpp-tsan}"
python="${PYTHON:-$(command -v python3 || command -v python || true)}"

configure=(
  -S "$root" -B "$build"
  -DFLASHSALE_SANITIZE=thread
  -DFLASHSALE_BUILD_TESTS=ON
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
)
if [[ -n "$python" ]]; then
  configure+=("-DPython_EXECUTABLE=$python")
fi

cmake "${configure[@]}"
cmake --build "$build" -j2

# The suppressions cover one known benign race inside Boost.Lockfree (see the file).
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 suppressions=$root/cpp/tests/tsan.supp${TSAN_OPTIONS:+ $TSAN_OPTIONS}"
ctest --test-dir "$build" --output-on-failure -j1
