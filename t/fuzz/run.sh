#!/bin/sh
# Build the libFuzzer harnesses with clang and run each briefly over its
# seed corpus (in a scratch copy, so the tree is not changed).  A crash,
# a sanitizer report or a leak of legate's fails.
#   parse       src/http/parse.c: request/response heads, chunked bodies
#   conf        src/conf/: libconfig text through the directive tables
#   proxyproto  src/net/proxyproto.c: PROXY protocol v1 and v2
#   htpasswd    src/net/htpasswd.c: password files, every hash scheme
#   json        src/net/json.c: JSON, base64url, JWS (for JWT)
#   cache       src/cache/policy.c: strict HTTP-dates, Age, Vary, Cache-Control
#   h2          src/pipeline/h2.c through libnghttp2's callbacks: frames from a
#               client into requests and back, on the whole worker (all of src/)
#   nginx       src/import/nginx_parse.c: nginx.conf tokens and blocks (--import-nginx)
#   ftp         src/forward/gw_parse.c: FTP replies, EPSV/PASV/SIZE answers, MLSD
#               and LIST listings and Gopher menus as HTML (a mode byte chooses)
#   quic        src/net/quic.c: client datagrams into a QUIC endpoint (ngtcp2, GnuTLS);
#               skipped when legate is built without HTTP/3
#   cluster     src/cluster/wire.c: purge messages and TLS ticket key sets read from Redis,
#               and the relay field of a request sent to the owner of a cache key
#   clienthello src/net/clienthello.c: TLS ClientHello records, SNI and ALPN (ssl_preread)
# Names as arguments run only those: sh t/fuzz/run.sh clienthello
#   edge        Range and If-None-Match (feature/static.c), Set-Cookie rewriting
#               (pipeline/headers.c), map lookups (pipeline/vars.c); all of src/
set -u
SRC=${LEGATE_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BLD=${LEGATE_BUILDDIR:-$(pwd)}
CC=${CLANG:-clang}
SECS=${FUZZ_SECONDS:-20}
if ! command -v "$CC" >/dev/null 2>&1; then
    echo "clang not found: skipped"
    exit 77
fi
W=$(mktemp -d /tmp/legate-fuzz.XXXXXX)
trap 'rm -rf "$W"' EXIT
# config.h is configure's; in a VPATH build it is in the build tree
CFG=$BLD/config.h
[ -f "$CFG" ] || CFG=$SRC/config.h
export LSAN_OPTIONS="suppressions=$SRC/t/fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
passed=0 failed=0
QUIC_LIBS=""
if grep -q "define LG_HAVE_HTTP3 1" "$CFG"; then
    QUIC_LIBS=$(pkg-config --libs libngtcp2 libngtcp2_crypto_gnutls libnghttp3 gnutls)
    HARNESSES="parse conf proxyproto htpasswd json cache h2 nginx ftp cluster clienthello edge quic"
else
    HARNESSES="parse conf proxyproto htpasswd json cache h2 nginx ftp cluster clienthello edge"
fi
# the harnesses of the whole worker (h2, edge): all of src/, with src/cluster's
# hiredis files or their stand-in as configure chose
if grep -q "define LG_HAVE_HIREDIS" "$CFG"; then nocl='^src/cluster/none\.c$'
else nocl='^src/cluster/(redis|cluster|purge|tickets|ratelimit|votes)\.c$'; fi
ALL_SRCS=$(cd "$SRC" && ls src/*/*.c | grep -Ev "$nocl")
ALL_LIBS="$(pkg-config --libs openssl libconfig zlib libcares libmaxminddb libnghttp2 \
            libbrotlienc libzstd 2>/dev/null) $(pkg-config --libs libsystemd 2>/dev/null) \
            $(pkg-config --libs hiredis 2>/dev/null) -lcrypt $QUIC_LIBS"
# sh t/fuzz/run.sh [NAME ...]: only those harnesses
for h in ${*:-$HARNESSES}; do
    case $h in
    parse)      srcs="src/http/parse.c"; libs=""; corpus=corpus; secs=$SECS ;;
    conf)       srcs="src/conf/dump.c src/conf/load.c src/conf/load_error.c src/conf/load_bind.c src/conf/load_limit.c src/conf/load_route.c src/conf/load_value.c src/conf/load_cluster.c
                      src/conf/load_server.c src/conf/load_upstream.c src/conf/load_stream.c src/conf/parse_util.c
                      src/conf/tpl.c src/conf/load_map.c src/conf/include.c src/core/arena.c src/core/log.c src/core/hash.c
                      src/core/syslog.c src/core/relit.c"
                libs="-lconfig"; corpus=corpus-conf; secs=$(( (SECS + 1) / 2 )) ;;
    proxyproto) srcs="src/net/proxyproto.c"; libs=""; corpus=corpus-proxyproto; secs=$(( (SECS + 1) / 2 )) ;;
    htpasswd)   srcs="src/net/htpasswd.c src/core/hash.c"; libs="-lcrypto -lcrypt"
                corpus=corpus-htpasswd; secs=$(( (SECS + 1) / 2 )) ;;
    json)       srcs="src/net/json.c"; libs=""; corpus=corpus_json; secs=$(( (SECS + 1) / 2 )) ;;
    cache)      srcs="src/cache/policy.c"; libs=""; corpus=corpus-cache; secs=$(( (SECS + 1) / 2 )) ;;
    h2)         srcs=$ALL_SRCS; libs=$ALL_LIBS; corpus=corpus-h2; secs=$SECS ;;
    nginx)      srcs="src/import/nginx_parse.c"; libs=""; corpus=corpus-nginx; secs=$(( (SECS + 1) / 2 )) ;;
    ftp)        srcs="src/forward/gw_parse.c"; libs=""; corpus=corpus-ftp; secs=$(( (SECS + 1) / 2 )) ;;
    quic)       srcs="src/net/quic.c src/net/steer.c src/core/event.c src/core/hash.c src/core/log.c src/core/syslog.c"
                libs="$QUIC_LIBS"; corpus=corpus-quic; secs=$(( (SECS + 1) / 2 )) ;;
    cluster)    srcs="src/cluster/wire.c"; libs=""; corpus=corpus-cluster; secs=$(( (SECS + 1) / 2 )) ;;
    clienthello) srcs="src/net/clienthello.c"; libs=""; corpus=corpus-clienthello; secs=$(( (SECS + 1) / 2 )) ;;
    edge)       srcs=$ALL_SRCS; libs=$ALL_LIBS; corpus=corpus-edge; secs=$(( (SECS + 1) / 2 )) ;;
    *)          echo "no fuzz harness \"$h\""; failed=$((failed + 1)); continue ;;
    esac
    cp -r "$SRC/t/fuzz/$corpus" "$W/corpus-$h"
    set --
    for s in $srcs; do set -- "$@" "$SRC/$s"; done
    if ! "$CC" -g -O1 -fsanitize=fuzzer,address,undefined -include "$CFG" -I"$SRC/src" -I"$BLD" \
            "$@" "$SRC/t/fuzz/fuzz_$h.c" $libs -o "$W/fuzz_$h" 2>"$W/cc_$h.log"; then
        echo "fuzz_$h: does not build"
        cat "$W/cc_$h.log"
        failed=$((failed + 1))
        continue
    fi
    # -timeout: an input slower than that is a finding (a hash no check may cost), not a wait
    if "$W/fuzz_$h" -max_total_time="$secs" -timeout=25 -artifact_prefix="$W/" "$W/corpus-$h" >"$W/run_$h.log" 2>&1; then
        echo "fuzz_$h: $(grep -E "^Done" "$W/run_$h.log" | tail -n 1)"
        passed=$((passed + 1))
    else
        echo "fuzz_$h: FAILED"
        tail -n 40 "$W/run_$h.log"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
