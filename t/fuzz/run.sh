#!/bin/sh
# Build the libFuzzer harness with clang and run it briefly over the seed
# corpus (in a scratch copy, so the tree is not changed).  A crash fails.
set -u
SRC=${LEGATE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
CC=${CLANG:-clang}
SECS=${FUZZ_SECONDS:-20}
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "clang not found: skipped"
    exit 77
fi
W=$(mktemp -d /tmp/legate-fuzz.XXXXXX)
trap 'rm -rf "$W"' EXIT
cp -r "$SRC/t/fuzz/corpus" "$W/corpus"
if ! "$CC" -g -O1 -fsanitize=fuzzer,address,undefined -I"$SRC/src" \
        "$SRC/src/http/parse.c" "$SRC/t/fuzz/fuzz_parse.c" -o "$W/fuzz" 2>"$W/cc.log"; then
    cat "$W/cc.log"
    echo "0 passed, 1 failed"
    exit 1
fi
if "$W/fuzz" -max_total_time="$SECS" -artifact_prefix="$W/" "$W/corpus" >"$W/run.log" 2>&1; then
    tail -n 3 "$W/run.log"
    echo "1 passed, 0 failed"
    exit 0
fi
tail -n 40 "$W/run.log"
echo "0 passed, 1 failed"
exit 1
