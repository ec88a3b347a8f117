#!/usr/bin/env bash
# Installs what the tests need and runs every test: lint, types, the docs build, the
# C++ suite under ThreadSanitizer, and the Python suite twice: on SQLite (the embedded default)
# and on PostgreSQL (started here if it is down), where the multi-instance proofs run.
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Each stage says how long the previous one took, and the total is printed at the end.
stage_started=$SECONDS
stage_name=""
stage() {
  if [ -n "$stage_name" ]; then
    echo "   ($stage_name: $((SECONDS - stage_started)) s)"
  fi
  stage_name=$1
  stage_started=$SECONDS
  [ -z "$1" ] || echo "== $1"
}
trap 'stage ""; echo "== all stages: $SECONDS s"' EXIT

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

stage "install flashsale with its test and analysis extras"
python -m pip install -q --disable-pip-version-check ".[test,analysis]"

stage "ruff"
ruff check python tests
ruff format --check python tests

stage "clang-format"
clang-format --dry-run --Werror cpp/include/flashsale/*.hpp cpp/src/*.cpp cpp/bindings/*.cpp \
  cpp/bindings/*.hpp cpp/tests/*.cpp

stage "mypy (strict)"
mypy

stage "docs (mkdocs build --strict)"
# The docs extra's packages, read from pyproject.toml (installing ".[docs]" would
# build the package and its C++ core once more).
mapfile -t docs_requirements < <(python -c 'import tomllib
print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["docs"], sep="\n")')
python -m pip install -q --disable-pip-version-check "${docs_requirements[@]}"
docs_site="$(mktemp -d)"
# NO_MKDOCS_2_WARNING: Material prints a notice about its future on every build.
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir "$docs_site"
rm -rf "$docs_site"

stage "C++ tests (GoogleTest under ThreadSanitizer)"
bash scripts/test-cpp.sh

stage "PostgreSQL"
# shellcheck source=scripts/postgres.sh
source scripts/postgres.sh

# The package is imported from site-packages (the source lives under python/).
stage "Python tests on SQLite"
FLASHSALE_TEST_DATABASE=sqlite python -m pytest -m "not instances" "$@"

stage "Python tests on PostgreSQL (the C++ core and pure unit tests ran above)"
FLASHSALE_TEST_DATABASE=postgresql python -m pytest "$@" \
  tests/api tests/db tests/outbox tests/e2e tests/analysis
