/*
 * Unit tests of cluster/wire.c: the purge message and the TLS ticket key
 * set as read back from Redis.  Anyone who can write to Redis writes these
 * bytes, so what is refused matters as much as what is read.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "cluster/wire.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

Test(cluster_wire, purge_messages_read)
{
    lg_purge_msg_t m;
    const char *s = "v1\tedge-1\t1\thttp://a/p*";
    cr_assert_eq(lg_purge_msg_parse(s, strlen(s), &m), 0);
    cr_assert_eq(m.node_len, 6);
    cr_assert(memcmp(m.node, "edge-1", 6) == 0);
    cr_assert_eq(m.soft, 1);
    cr_assert_eq(m.key_len, strlen("http://a/p*"));
    cr_assert(memcmp(m.key, "http://a/p*", m.key_len) == 0);
    /* the key runs to the end: tabs inside it belong to it */
    s = "v1\tn\t0\ta\tb";
    cr_assert_eq(lg_purge_msg_parse(s, strlen(s), &m), 0);
    cr_assert_eq(m.key_len, 3);
    cr_assert_eq(m.soft, 0);
}

Test(cluster_wire, purge_messages_refused)
{
    static const char *const bad[] = {
        "", "v1", "v1\t", "v1\tn", "v1\tn\t", "v1\tn\t0", "v1\tn\t0\t", "v1\t\t0\tk",
        "v2\tn\t0\tk", "V1\tn\t0\tk", "v1\tn\t2\tk", "v1\tn\t00\tk", "v1\tn x\t0\tk",
        "v1 n 0 k", "garbage",
    };
    lg_purge_msg_t m;
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(lg_purge_msg_parse(bad[i], strlen(bad[i]), &m), -1, "accepted \"%s\"", bad[i]);
    /* a key longer than LG_PURGE_MAX_KEY */
    static char big[LG_PURGE_MAX_KEY + 16];
    memcpy(big, "v1\tn\t0\t", 7);
    memset(big + 7, 'k', LG_PURGE_MAX_KEY + 1);
    cr_expect_eq(lg_purge_msg_parse(big, 7 + LG_PURGE_MAX_KEY + 1, &m), -1);
    cr_expect_eq(lg_purge_msg_parse(big, 7 + LG_PURGE_MAX_KEY, &m), 0);
}

static void key_hex(char *out, char c)
{
    memset(out, c, LG_TICKET_KEYHEX);
    out[LG_TICKET_KEYHEX] = '\0';
}

Test(cluster_wire, ticket_sets)
{
    char a[LG_TICKET_KEYHEX + 1], b[LG_TICKET_KEYHEX + 1], c[LG_TICKET_KEYHEX + 1];
    key_hex(a, 'a');
    key_hex(b, '0');
    key_hex(c, 'F');
    char v[600];
    unsigned char keys[240];
    int64_t created = 0;
    snprintf(v, sizeof(v), "v1 1764600000123 %s %s", a, b);
    cr_assert_eq(lg_ticket_set_parse(v, strlen(v), keys, &created), 2);
    cr_assert_eq(created, 1764600000123LL);
    cr_assert_eq(keys[0], 0xaa);
    cr_assert_eq(keys[80], 0x00);
    snprintf(v, sizeof(v), "v1 5 %s %s %s", a, b, c);
    cr_assert_eq(lg_ticket_set_parse(v, strlen(v), keys, &created), 3);
    cr_assert_eq(keys[160], 0xff);
    static const char *const fmt_bad[] = {
        "v1 5 %s",              /* one key: no current */
        "v1 5 %s %s %s %s",     /* four */
        "v1 5 %s %s ",          /* a trailing space */
        "v1  5 %s %s",          /* two spaces */
        "v0 5 %s %s",           /* another version */
        "v1 x %s %s",           /* no time */
        "v1 5 %s  %s",
    };
    for (size_t i = 0; i < ARRAY_SIZE(fmt_bad); i++) {
        snprintf(v, sizeof(v), fmt_bad[i], a, b, c, a);
        cr_expect_eq(lg_ticket_set_parse(v, strlen(v), keys, &created), -1, "accepted \"%.40s...\"", v);
    }
    a[10] = 'g';                /* not hex */
    snprintf(v, sizeof(v), "v1 5 %s %s", a, b);
    cr_expect_eq(lg_ticket_set_parse(v, strlen(v), keys, &created), -1);
    key_hex(a, 'a');
    snprintf(v, sizeof(v), "v1 5 %s %s", a, b);
    cr_expect_eq(lg_ticket_set_parse(v, strlen(v) - 1, keys, &created), -1, "a short last key");
}

Test(cluster_wire, relay_field)
{
    lg_relay_field_t f;
    const char *v = "node=edge-2; proto=https; for=192.0.2.7";
    cr_assert_eq(lg_relay_field_parse(v, strlen(v), &f), 0);
    cr_assert_eq(f.node_len, 6);
    cr_assert(strncmp(f.node, "edge-2", 6) == 0);
    cr_assert_eq(f.for_len, 9);
    cr_assert(strncmp(f.for_, "192.0.2.7", 9) == 0);
    cr_assert_eq(f.https, 1);
    /* any order, spaces, unknown parameters skipped, proto other than https */
    v = " for=::1 ;x=y; node=a ;proto=http";
    cr_assert_eq(lg_relay_field_parse(v, strlen(v), &f), 0);
    cr_assert_eq(f.node_len, 1);
    cr_assert_eq(f.for_len, 3);
    cr_assert_eq(f.https, 0);
    /* the length bounds it: no NUL needed, nothing read past it */
    v = "node=abcdef";
    cr_assert_eq(lg_relay_field_parse(v, 8, &f), 0);
    cr_assert_eq(f.node_len, 3);
    /* no node: refused, nothing set */
    const char *bad[] = { "", "proto=https", "node=", "node", "nodes=a", ";;;" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(lg_relay_field_parse(bad[i], strlen(bad[i]), &f), -1, "%s", bad[i]);
        cr_assert(f.node == NULL && f.for_ == NULL && f.https == 0);
    }
}
