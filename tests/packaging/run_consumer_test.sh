#!/bin/sh
# Usage: run_consumer_test.sh CMAKE CONSUMER_SOURCE_DIR WORK_DIR
#
# Builds and runs tests/consumer against the SDK installed in WORK_DIR/prefix (by
# install_sdk.sh), knowing nothing but that prefix: the consumer's sources are copied out
# first, CMake finds the SDK through CMAKE_PREFIX_PATH alone, and the C program is built a
# second time with nothing but `pkg-config --cflags --libs fl_client`.
set -eu
cmake="$1"
consumer="$2"
work="$3"
prefix="$work/prefix"
[ -f "$prefix/lib/cmake/fl/flConfig.cmake" ] || { echo "FAIL: nothing installed in $prefix"; exit 1; }

rm -rf "$work/src" "$work/build" "$work/pc"
cp -R "$consumer" "$work/src"
generator=""
command -v ninja > /dev/null && generator="-G Ninja"
# shellcheck disable=SC2086
"$cmake" -S "$work/src" -B "$work/build" $generator -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF > "$work/configure.log" 2>&1 || {
  cat "$work/configure.log"; echo "FAIL: configuring the consumer"; exit 1; }
"$cmake" --build "$work/build" > "$work/build.log" 2>&1 || {
  cat "$work/build.log"; echo "FAIL: building the consumer"; exit 1; }

fail=0
for program in cpp_client c_client client_and_server; do
  if [ -x "$work/build/$program" ]; then
    echo "== $program (CMake, find_package(fl))"
    "$work/build/$program" || fail=1
  elif [ "$program" != client_and_server ] || [ -e "$prefix/lib/libfl_server.so" ]; then
    echo "FAIL: $program was not built"
    fail=1
  fi
done

echo "== c_client (pkg-config fl_client)"
mkdir -p "$work/pc"
flags=$(PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH="" \
  pkg-config --cflags --libs fl_client) || { echo "FAIL: pkg-config fl_client"; exit 1; }
echo "pkg-config --cflags --libs fl_client: $flags"
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Wall -Werror -o "$work/pc/c_client" "$work/src/c_client.c" $flags || {
  echo "FAIL: compiling with pkg-config's flags"; exit 1; }
LD_LIBRARY_PATH="$prefix/lib" "$work/pc/c_client" || fail=1

[ "$fail" = 0 ] && echo "OK: the consumer builds and runs against $prefix alone"
exit "$fail"
