#!/usr/bin/env bash
# Quick start, command 1: installs dependencies, builds (Release) and runs the
# fmnist-cnn FedAvg simulation on Fashion-MNIST. Extra arguments go to fl-sim,
# e.g. `scripts/demo.sh --rounds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec "${FL_BUILD_DIR:-build}/simulations/fl-sim" run --preset fmnist-cnn "$@"
