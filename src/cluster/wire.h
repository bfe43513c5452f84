/*
 * What the nodes write into Redis and read back, and the field they add
 * to a request relayed to another node (wire.c): pure parsers, no Redis
 * and no I/O, so a fuzzer can hammer them.  Bytes from Redis are
 * untrusted: anyone with access to it may have written them.
 */
#ifndef LEGATE_CLUSTER_WIRE_H
#define LEGATE_CLUSTER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define LG_PURGE_MAX_KEY 8192
#define LG_TICKET_KEYHEX 160    /* one key as hex: name 16, AES 32, HMAC 32 bytes */

/*
 * A purge: "v1 TAB node TAB soft(0|1) TAB key" (an entry of the purge log,
 * a stream), or on the channel "v2 TAB id TAB " and the same, id being the
 * log entry's ("ms-seq"; "0-0" when the log could not take it).  Pointers
 * into the message; id NULL for a v1.
 */
typedef struct lg_purge_msg {
    const char *node;
    size_t      node_len;
    int         soft;
    const char *key;            /* a trailing '*': a prefix */
    size_t      key_len;
    const char *id;
    size_t      id_len;
} lg_purge_msg_t;

#define LG_STREAM_ID_MAX 41     /* "18446744073709551615-18446744073709551615" */

/* 0, or -1 for anything else (an old or future version, garbage). */
int lg_purge_msg_parse(const char *p, size_t len, lg_purge_msg_t *out);

/* A stream entry ID "ms-seq" (decimal, each at most 20 digits): 0 and its
 * two parts, or -1. */
int lg_stream_id_parse(const char *p, size_t len, uint64_t *ms, uint64_t *seq);

/*
 * "v1 SP created_ms SP next SP current [SP previous]", keys as hex: into
 * keys (3 x 80 bytes), newest first.  The count (2 or 3), or -1.
 */
int lg_ticket_set_parse(const char *v, size_t len, unsigned char keys[3 * 80], int64_t *created_ms);

/*
 * The relay field a node adds for the owner of a key (shard.c), from a
 * request header:
 *
 *   node=A; proto=https; for=192.0.2.7; hop=10.0.0.5; t=1764640000; sig=HEX
 *
 * parameters in any order, unknown ones skipped.  Each value points into v
 * ({NULL, 0} when absent); `https` is 1 only for proto=https; t is the
 * decimal seconds (-1 absent or not a number).  0, or -1 when there is no
 * node.
 */
typedef struct lg_relay_field {
    const char *node, *for_, *hop, *sig;
    size_t      node_len, for_len, hop_len, sig_len;
    int         https;
    int64_t     t;
} lg_relay_field_t;

int lg_relay_field_parse(const char *v, size_t n, lg_relay_field_t *out);

#endif
