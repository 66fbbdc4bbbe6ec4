#!/usr/bin/env bash
# Installs every build, test and data dependency from Debian's packages.
# Idempotent: packages already present are skipped by apt.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libssl-dev openssl libsqlite3-dev sqlite3
  libtorch-dev
  # Debian's LibTorch calls whatever libblas.so.3 is selected; with the reference
  # BLAS training is ~7.6x slower, so OpenBLAS must be installed.
  libopenblas0-pthread libopenblas-dev
  libeigen3-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libyaml-cpp-dev
  zlib1g-dev
  libopenmpi-dev openmpi-bin  # fl-sim's MPI backend (mpirun -np P fl-sim run ...)
  dataset-fashion-mnist
  fortunes fortunes-de fortunes-es fortunes-it
  python3 python3-numpy python3-torch
  time  # /usr/bin/time -v: peak RSS in tests/bench/registry_scale.sh
  clang libfuzzer-14-dev  # opt-in fuzz targets (tests/fuzz, -DFL_BUILD_FUZZERS=ON)
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[install-deps] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Prefer OpenBLAS for libblas.so.3 (LibTorch's CPU matmuls go through it).
if command -v update-alternatives >/dev/null; then
  for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
    cand=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -1 || true)
    [ -n "$cand" ] && $SUDO update-alternatives --set "$alt" "$cand" >/dev/null || true
  done
fi
echo "[install-deps] ok"
