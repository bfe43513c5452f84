/*
 * libFuzzer harness for what legate reads back from Redis (src/cluster/
 * wire.c): purge messages from the channel, the TLS ticket key set, and
 * the relay field a node adds to a request for a key's owner.  The parsers get the bytes with a length and no terminating NUL (the
 * input is copied into a buffer of exactly its size, so ASan catches any
 * read past it), must refuse or accept without crashing, and what they
 * accept must point inside the input and keep its promises.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -include config.h -Isrc -I. \
 *       src/cluster/wire.c t/fuzz/fuzz_cluster.c -o fuzz_cluster
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/wire.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 16384)
        return 0;
    char *p = malloc(n ? n : 1);
    CHECK(p != NULL);
    memcpy(p, data, n);
    lg_purge_msg_t m;
    if (lg_purge_msg_parse(p, n, &m) == 0) {
        CHECK(m.node >= p && m.node + m.node_len <= p + n && m.node_len > 0);
        CHECK(m.key >= p && m.key + m.key_len == p + n && m.key_len > 0);
        CHECK(m.key_len <= LG_PURGE_MAX_KEY);
        CHECK(m.soft == 0 || m.soft == 1);
        if (m.id) {
            uint64_t ms, seq;
            CHECK(m.id >= p && m.id + m.id_len < m.node && m.id_len < LG_STREAM_ID_MAX);
            CHECK(lg_stream_id_parse(m.id, m.id_len, &ms, &seq) == 0);
        }
    }
    uint64_t ms = 0, seq = 0;
    if (lg_stream_id_parse(p, n, &ms, &seq) == 0)
        CHECK(n >= 3 && n < LG_STREAM_ID_MAX && memchr(p, '-', n) != NULL);
    unsigned char keys[3 * 80];
    int64_t created = -1;
    int k = lg_ticket_set_parse(p, n, keys, &created);
    CHECK(k == -1 || k == 2 || k == 3);
    if (k > 0)
        CHECK(created >= 0 && n > 3 + (size_t)k * (LG_TICKET_KEYHEX + 1));
    lg_relay_field_t f;
    if (lg_relay_field_parse(p, n, &f) == 0) {
        CHECK(f.node >= p && f.node + f.node_len <= p + n && f.node_len > 0);
        CHECK(f.for_ == NULL || (f.for_ >= p && f.for_ + f.for_len <= p + n));
        CHECK(f.hop == NULL || (f.hop >= p && f.hop + f.hop_len <= p + n));
        CHECK(f.sig == NULL || (f.sig >= p && f.sig + f.sig_len <= p + n));
        CHECK(f.https == 0 || f.https == 1);
        CHECK(f.t >= -1);
    } else {
        CHECK(f.node == NULL && f.for_ == NULL && f.hop == NULL && f.sig == NULL && f.https == 0 &&
              f.t == -1);
    }
    free(p);
    return 0;
}
