#!/bin/sh
# Usage: check_isa_copy_symbols.sh OBJECT...
# Of the given objects (fl_infer's), those compiled for AVX2 (*_avx2.cc.o) must define no
# linkable symbol whose name involves neither fl::internal::avx2 nor the renamed
# EigenAvx2. Any other one (an inline function or template of Eigen or of the standard
# library, compiled with AVX2) could be kept by the linker for the baseline code as well,
# which would then run AVX2 instructions on CPUs without them.
set -u
checked=0
fail=0
for obj in "$@"; do
  case "$obj" in
    *_avx2.cc.o) ;;
    *) continue ;;
  esac
  checked=$((checked + 1))
  symbols=$(nm --defined-only "$obj") || { echo "FAIL: nm failed on $obj"; exit 1; }
  # Local symbols (lower-case types but u, GNU unique) cannot be shared. Mangled names:
  # 9EigenAvx2 and 2fl8internal4avx2 are the two namespaces wherever they appear.
  bad=$(printf '%s\n' "$symbols" | awk '$2 !~ /^[a-tv-z]$/ { print $3 }' |
    grep -v -E '9EigenAvx2|2fl8internal4avx2|^DW\.ref\.__gxx_personality_v0$' | c++filt)
  if [ -n "$bad" ]; then
    echo "FAIL: $obj defines symbols outside fl::internal::avx2 and EigenAvx2:"
    printf '%s\n' "$bad" | head -20
    fail=1
  fi
done
if [ "$checked" = 0 ]; then
  echo "OK: no AVX2 copy in this build"
  exit 0
fi
[ "$fail" = 0 ] && echo "OK: $checked AVX2 object(s) keep their symbols to themselves"
exit "$fail"
