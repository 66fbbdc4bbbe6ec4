#!/bin/sh
# Usage: check_no_torch.sh BINARY [CONTROL]
# Fails unless BINARY runs (--help) and nothing in its dynamic dependency closure is
# LibTorch (libtorch*, libc10*). CONTROL, a binary known to link LibTorch, must be
# flagged by the same check, which shows the check can fail on this system.
set -u
torch_deps() {
  deps=$(ldd "$1") || { echo "ldd failed on $1" >&2; exit 1; }
  printf '%s\n' "$deps" | grep -E 'lib(torch|c10)[^ ]*\.so'
}
bin="$1"
if found=$(torch_deps "$bin"); then
  echo "FAIL: $bin depends on LibTorch:"
  echo "$found"
  exit 1
fi
"$bin" --help > /dev/null || { echo "FAIL: $bin --help failed"; exit 1; }
if [ $# -ge 2 ]; then
  torch_deps "$2" > /dev/null || { echo "FAIL: control $2 shows no LibTorch; the check is blind"; exit 1; }
fi
echo "OK: $bin runs and loads no LibTorch"
