#!/bin/sh
# Every example is what a user would write: it may include the standard library, system
# headers (<...>), the SDK's public headers ("fl/...") and the examples' own files, and
# nothing else of the SDK. Fails naming each offending line.
#   check_example_includes.sh EXAMPLES_DIR
set -eu
dir=$1
status=0
checked=0
for f in "$dir"/*.c "$dir"/*.cc "$dir"/*.h; do
  [ -f "$f" ] || continue
  checked=$((checked + 1))
  grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f" | while IFS= read -r line; do
    header=$(printf '%s\n' "$line" | sed 's/.*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/')
    case "$header" in
      fl/*) ;;
      */*) echo "$f:$line: not a public header"; exit 1 ;;
      *) [ -f "$dir/$header" ] || { echo "$f:$line: not an example file"; exit 1; } ;;
    esac
  done || status=1
  if grep -n 'fl::internal\|namespace internal' "$f"; then
    echo "$f: uses fl::internal"
    status=1
  fi
done
[ "$checked" -gt 0 ] || { echo "no example sources in $dir"; exit 1; }
[ "$status" -eq 0 ] && echo "$checked example files include only public headers"
exit "$status"
