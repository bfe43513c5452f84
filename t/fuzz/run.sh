#!/bin/sh
# Build each libFuzzer harness with clang and run it briefly over its seed
# corpus (in a scratch copy, so the tree is not changed).  A crash fails.
#   fuzz_parse: src/http/parse.c over t/fuzz/corpus
#   fuzz_json:  src/net/json.c (JSON, base64url, JWS) over t/fuzz/corpus_json
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
pass=0
fail=0
# one harness: NAME SOURCE CORPUS
run_one() {
    mkdir -p "$W/$1"
    cp -r "$SRC/t/fuzz/$3" "$W/$1/corpus"
    if ! "$CC" -g -O1 -fsanitize=fuzzer,address,undefined -I"$SRC/src" \
            "$SRC/$2" "$SRC/t/fuzz/$1.c" -o "$W/$1/fuzz" 2>"$W/$1/cc.log"; then
        cat "$W/$1/cc.log"
        fail=$((fail + 1))
        return
    fi
    if "$W/$1/fuzz" -max_total_time="$SECS" -artifact_prefix="$W/$1/" "$W/$1/corpus" \
            >"$W/$1/run.log" 2>&1; then
        tail -n 3 "$W/$1/run.log"
        pass=$((pass + 1))
    else
        tail -n 40 "$W/$1/run.log"
        fail=$((fail + 1))
    fi
}
run_one fuzz_parse src/http/parse.c corpus
run_one fuzz_json src/net/json.c corpus_json
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
