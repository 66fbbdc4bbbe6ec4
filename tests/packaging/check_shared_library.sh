#!/bin/sh
# Usage: check_shared_library.sh LIBRARY SONAME [--allow-torch] [ARCHIVE...]
#
# Checks a shared library of the SDK (packaging/CMakeLists.txt):
#  - its SONAME is SONAME;
#  - every dynamic symbol it defines is public API: the C ABI (fl_*) or fl:: (with its
#    typeinfo and vtables), never fl::internal, std::, google::, grpc, absl or anything
#    else (but for the wire protocol, below);
#  - ldd resolves all its dependencies, and none is LibTorch (libtorch*, libc10*) unless
#    --allow-torch;
#  - the static libraries ARCHIVE... whose objects it is made of define nothing in
#    namespace fl (outside fl::internal) with hidden visibility: a public function or
#    class that lacks FL_EXPORT would be missing from the library.
set -u
lib="$1"
want_soname="$2"
shift 2
allow_torch=0
if [ "${1:-}" = "--allow-torch" ]; then
  allow_torch=1
  shift
fi
fail=0

soname=$(objdump -p "$lib" | awk '$1 == "SONAME" { print $2 }')
if [ "$soname" != "$want_soname" ]; then
  echo "FAIL: SONAME of $lib is '$soname', expected '$want_soname'"
  fail=1
fi

# The generated wire-protocol code (fl::v1, protobuf) is internal like fl::internal.
symbols=$(nm -D --defined-only -C "$lib" | cut -d' ' -f3-) || {
  echo "FAIL: nm failed on $lib"; exit 1; }
bad=$(printf '%s\n' "$symbols" |
  sed -E 's/^(typeinfo name for|typeinfo for|vtable for|VTT for|guard variable for|non-virtual thunk to|virtual thunk to) //' |
  grep -v -E '^fl_[A-Za-z0-9_]+$' |
  grep -v -E '^fl::' ; \
  printf '%s\n' "$symbols" | grep -E '^[^(<]*fl::(internal|v1)::|descriptor_table')
if [ -n "$bad" ]; then
  echo "FAIL: $lib exports symbols outside the public API:"
  printf '%s\n' "$bad" | head -40
  fail=1
fi
total=$(printf '%s\n' "$symbols" | grep -c .)
c_abi=$(printf '%s\n' "$symbols" | grep -c -E '^fl_')
echo "$lib: $total exported symbols ($c_abi C ABI, $((total - c_abi)) fl::)"

deps=$(ldd "$lib") || { echo "FAIL: ldd failed on $lib"; exit 1; }
if printf '%s\n' "$deps" | grep -q 'not found'; then
  echo "FAIL: unresolved dependencies of $lib:"
  printf '%s\n' "$deps" | grep 'not found'
  fail=1
fi
if [ "$allow_torch" = 0 ] && printf '%s\n' "$deps" | grep -q -E 'lib(torch|c10)[^ ]*\.so'; then
  echo "FAIL: $lib depends on LibTorch:"
  printf '%s\n' "$deps" | grep -E 'lib(torch|c10)[^ ]*\.so'
  fail=1
fi

for archive in "$@"; do
  # Strong (non-inline) definitions with hidden visibility, demangled.
  hidden=$(readelf -sW "$archive" | awk '$5 == "GLOBAL" && $6 == "HIDDEN" && $7 != "UND" { print $8 }' |
    c++filt | grep -E '^fl::' | grep -v -E '^fl::(internal|v1)::' | sort -u)
  if [ -n "$hidden" ]; then
    echo "FAIL: $archive defines public-namespace symbols without FL_EXPORT (hidden):"
    printf '%s\n' "$hidden" | head -40
    fail=1
  fi
done

[ "$fail" = 0 ] && echo "OK: $lib (SONAME $soname) exports only the public API"
exit "$fail"
