#!/usr/bin/env bash
# Quick start, command 2: installs dependencies, builds and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
cd "${FL_BUILD_DIR:-build}"
ctest --output-on-failure -j "${FL_TEST_JOBS:-2}" --timeout 600
