#!/bin/sh
# Usage: install_sdk.sh CMAKE BUILD_DIR SOURCE_DIR WORK_DIR
#
# Installs the build tree BUILD_DIR into the fresh prefix WORK_DIR/prefix
# (`cmake --install BUILD_DIR --prefix ...`) and checks what landed there: the shared
# libraries with their SONAME links, the CMake package and pkg-config files, public
# headers that include only the C++ standard library and fl/ headers, and no path into
# the source or build tree in the package files.
set -eu
cmake="$1"
build="$2"
source="$3"
work="$4"
prefix="$work/prefix"

rm -rf "$work"
mkdir -p "$work"
"$cmake" --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1 || {
  cat "$work/install.log"; echo "FAIL: cmake --install"; exit 1; }

fail=0
for f in lib/cmake/fl/flConfig.cmake lib/cmake/fl/flConfigVersion.cmake \
         lib/cmake/fl/flTargets.cmake lib/pkgconfig/fl_client.pc \
         include/fl/fl_client.h include/fl/client.h include/fl/algorithm.h; do
  [ -f "$prefix/$f" ] || { echo "FAIL: $f is not installed"; fail=1; }
done
for lib in "$prefix"/lib/libfl_*.so; do
  real=$(readlink -f "$lib")
  soname=$(objdump -p "$real" | awk '$1 == "SONAME" { print $2 }')
  [ -e "$prefix/lib/$soname" ] || { echo "FAIL: no $soname link for $lib"; fail=1; }
  echo "installed $(basename "$lib") -> $soname -> $(basename "$real")"
done
[ -e "$prefix/lib/libfl_client.so" ] || { echo "FAIL: libfl_client.so is not installed"; fail=1; }

# Public headers: <standard header> or "fl/...", nothing else (no nlohmann, grpc, torch).
foreign=$(grep -H -E '^[[:space:]]*#[[:space:]]*include' "$prefix"/include/fl/*.h |
  grep -v -E '#[[:space:]]*include[[:space:]]+("fl/[a-z0-9_]+\.h"|<[a-z_]+>|<std(def|int|bool|io|lib)\.h>)' || true)
if [ -n "$foreign" ]; then
  echo "FAIL: installed headers include more than the standard library and fl/:"
  echo "$foreign"
  fail=1
fi

# The package files must not point back into the trees the SDK was built from.
for tree in "$build" "$source"; do
  tree=$(cd "$tree" && pwd -P)
  if grep -r -l -F "$tree" "$prefix/lib/cmake" "$prefix/lib/pkgconfig" "$prefix/include"; then
    echo "FAIL: the files above refer to $tree"
    fail=1
  fi
done

[ "$fail" = 0 ] && echo "OK: installed into $prefix"
exit "$fail"
