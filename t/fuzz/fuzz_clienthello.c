/*
 * libFuzzer harness for the ClientHello reader (src/net/clienthello.c):
 * the input is what a client sends first on a stream server with
 * ssl_preread.  The reader must give one of its four answers, fill `out`
 * consistently (a NUL-ended lower-case name that fits, an ALPN list that
 * walks to its end), and agree with itself on prefixes: a prefix of a
 * complete hello is never complete, and bytes after what it consumed do
 * not change its answer.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -include config.h -Isrc -I. \
 *       src/net/clienthello.c t/fuzz/fuzz_clienthello.c -o fuzz_clienthello
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/clienthello.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 65536)
        return 0;
    /* a copy of exactly n bytes: ASan catches any read past the end */
    unsigned char *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    memcpy(p, data, n);
    lg_clienthello_t ch;
    lg_ch_rc_t rc = lg_clienthello_parse(p, n, &ch);
    CHECK(rc == LG_CH_MORE || rc == LG_CH_OK || rc == LG_CH_NOT_TLS || rc == LG_CH_MALFORMED);
    CHECK(lg_clienthello_rc_name(rc)[0] != '?');
    if (rc == LG_CH_OK) {
        CHECK(ch.consumed > 0 && ch.consumed <= n);
        CHECK(ch.sni_len < sizeof(ch.sni) && ch.sni[ch.sni_len] == '\0');
        CHECK(strlen(ch.sni) == ch.sni_len);
        CHECK(ch.has_sni == (ch.sni_len > 0));
        for (size_t i = 0; i < ch.sni_len; i++)
            CHECK(!(ch.sni[i] >= 'A' && ch.sni[i] <= 'Z'));
        size_t pos = 0, total = 0, l;
        const char *name;
        while (lg_clienthello_alpn_next(&ch, &pos, &name, &l)) {
            CHECK(l > 0);
            total += 1 + l;
        }
        CHECK(total == ch.alpn_len);
        /* the same bytes end where it said: a shorter input is not complete */
        lg_clienthello_t ch2;
        CHECK(lg_clienthello_parse(p, ch.consumed, &ch2) == LG_CH_OK);
        CHECK(ch2.sni_len == ch.sni_len && memcmp(ch2.sni, ch.sni, ch.sni_len) == 0);
        if (ch.consumed > 1)
            CHECK(lg_clienthello_parse(p, ch.consumed - 1, &ch2) != LG_CH_OK);
    }
    if (n > 1) {
        /* more bytes never turn an answer back into "more", nor "not TLS"
         * into anything else */
        lg_clienthello_t ch3;
        lg_ch_rc_t half = lg_clienthello_parse(p, n / 2, &ch3);
        if (half == LG_CH_NOT_TLS)
            CHECK(rc == LG_CH_NOT_TLS);
        if (half == LG_CH_OK)
            CHECK(rc == LG_CH_OK);
    }
    free(p);
    return 0;
}
