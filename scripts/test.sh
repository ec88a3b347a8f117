#!/usr/bin/env bash
# Installs what the tests need and runs every test: lint, types, the C++ suite
# under ThreadSanitizer, and the Python suite twice: on SQLite (the embedded default)
# and on PostgreSQL (started here if it is down), where the multi-instance proofs run.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages for the C++ suite (GoogleTest, Boost headers, a compiler) and wrk,
# the load generator of `flashsale bench http`.
missing=()
for pkg in cmake g++ libboost-dev libgtest-dev wrk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

echo "== install flashsale with its test and analysis extras"
python -m pip install -q --disable-pip-version-check ".[test,analysis]"

echo "== ruff"
ruff check python tests
ruff format --check python tests

echo "== clang-format"
clang-format --dry-run --Werror cpp/include/flashsale/*.hpp cpp/src/*.cpp cpp/bindings/*.cpp \
  cpp/bindings/*.hpp cpp/tests/*.cpp

echo "== mypy (strict)"
mypy

echo "== C++ tests (GoogleTest under ThreadSanitizer)"
bash scripts/test-cpp.sh

echo "== PostgreSQL"
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

# The package is imported from site-packages (the source lives under python/).
echo "== Python tests on SQLite"
FLASHSALE_TEST_DATABASE=sqlite python -m pytest -m "not instances" "$@"

echo "== Python tests on PostgreSQL (the C++ core and pure unit tests ran above)"
FLASHSALE_TEST_DATABASE=postgresql python -m pytest "$@" \
  tests/api tests/db tests/outbox tests/e2e tests/analysis
