/*
 * Unit tests of the load-balancing algorithms (proxy/balance.c).
 *
 * Most checks run every picker through the same tables: the share each
 * server gets over 100,000 picks (idle, and with the load each pick adds
 * fed back), and that unusable servers are never picked.  Then one block
 * per algorithm for what is particular to it: nginx's WRR sequence, least
 * connections, IP-hash stickiness, Maglev disruption, peak-EWMA reactions.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/balance.h"

#define MAXN  16

/* No libm: the constants the EWMA checks need, and |x|. */
#define E_M1    0.36787944117144233     /* e^-1 */
#define E_M2    0.13533528323661270     /* e^-2 */
#define E_M001  0.99004983374916805     /* e^-0.01 */

static double fabs_(double x)
{
    return x < 0 ? -x : x;
}
#define PICKS 100000

/* ---- a uniform way to drive every picker ---- */

typedef struct ctx {
    int32_t   cur[MAXN];            /* WRR state */
    uint64_t  rng;
    uint16_t *table;                /* Maglev, built for the servers of the case */
} ctx_t;

typedef int (*pick_fn)(ctx_t *c, const lg_bal_server_t *s, size_t n);

static int pick_wrr(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    return lg_bal_wrr(s, n, c->cur);
}

static int pick_lc(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    return lg_bal_least_conn(s, n, &c->rng);
}

static int pick_p2c(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    return lg_bal_p2c(s, n, &c->rng);
}

static int pick_ewma(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    return lg_bal_peak_ewma(s, n, &c->rng);
}

/* A random client address each time (only its first three octets count). */
static int pick_ip(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = (uint32_t)lg_rand_next(&c->rng);
    return lg_bal_ip_hash(s, n, (const struct sockaddr *)&a);
}

/* A random key each time. */
static int pick_maglev(ctx_t *c, const lg_bal_server_t *s, size_t n)
{
    uint64_t key = lg_rand_next(&c->rng);
    return lg_bal_maglev(c->table, LG_MAGLEV_M, s, n, &key, sizeof(key));
}

typedef struct {
    const char *name;
    pick_fn     pick;
    int         uses_load;          /* follows active/inflight, not only weight */
} algo_t;

static const algo_t algos[] = {
    { "wrr",        pick_wrr,    0 },
    { "least_conn", pick_lc,     1 },
    { "p2c",        pick_p2c,    1 },
    { "peak_ewma",  pick_ewma,   1 },
    { "ip_hash",    pick_ip,     0 },
    { "maglev",     pick_maglev, 0 },
};

#define NALGOS (sizeof(algos) / sizeof(algos[0]))

static const char *ids[MAXN] = {
    "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80",
    "10.0.0.5:80", "10.0.0.6:80", "10.0.0.7:80", "10.0.0.8:80",
    "10.0.0.9:80", "10.0.0.10:80", "10.0.0.11:80", "10.0.0.12:80",
    "10.0.0.13:80", "10.0.0.14:80", "10.0.0.15:80", "10.0.0.16:80",
};

static void servers(lg_bal_server_t *s, size_t n, const uint32_t *w)
{
    memset(s, 0, n * sizeof(*s));
    for (size_t i = 0; i < n; i++) {
        s[i].weight = w ? w[i] : 1;
        s[i].usable = 1;
    }
}

static void ctx_init(ctx_t *c, const lg_bal_server_t *s, size_t n, uint64_t seed)
{
    char err[128];
    memset(c->cur, 0, sizeof(c->cur));
    lg_rand_seed(&c->rng, seed);
    c->table = malloc(LG_MAGLEV_M * sizeof(*c->table));
    cr_assert_not_null(c->table);
    cr_assert_eq(lg_maglev_build(c->table, LG_MAGLEV_M, s, n, ids, err, sizeof(err)), 0, "%s", err);
}

static void ctx_free(ctx_t *c)
{
    free(c->table);
    c->table = NULL;
}

/* ---- distribution: every picker, every weight set, idle and loaded ---- */

typedef struct {
    uint32_t w[MAXN];
    size_t   n;
    int      loaded;                /* each pick adds a connection that never ends */
} dist_case_t;

static const dist_case_t dist_cases[] = {
    { { 1, 2, 3 },          3, 0 },
    { { 1, 2, 3 },          3, 1 },
    { { 1, 1, 1, 1 },       4, 0 },
    { { 1, 1, 1, 1 },       4, 1 },
    { { 5, 1, 1 },          3, 0 },
    { { 1, 10 },            2, 0 },
    { { 1, 10 },            2, 1 },
    { { 100, 200, 300, 400, 1, 1000, 7, 50 }, 8, 0 },
    { { 100, 200, 300, 400, 1, 1000, 7, 50 }, 8, 1 },
};

#define SHARE_TOLERANCE 0.01        /* absolute: 1% of the picks */

Test(balance, distribution_follows_weight)
{
    for (size_t ci = 0; ci < sizeof(dist_cases) / sizeof(dist_cases[0]); ci++) {
        const dist_case_t *dc = &dist_cases[ci];
        lg_bal_server_t s[MAXN];
        uint32_t total = 0;
        for (size_t i = 0; i < dc->n; i++)
            total += dc->w[i];
        for (size_t a = 0; a < NALGOS; a++) {
            ctx_t c;
            servers(s, dc->n, dc->w);
            if (dc->loaded)
                for (size_t i = 0; i < dc->n; i++)
                    s[i].ewma_us = 1000;
            ctx_init(&c, s, dc->n, 1234 + ci);
            unsigned count[MAXN] = { 0 };
            for (int k = 0; k < PICKS; k++) {
                int i = algos[a].pick(&c, s, dc->n);
                cr_assert(i >= 0 && (size_t)i < dc->n, "%s case %zu: picked %d", algos[a].name, ci, i);
                count[i]++;
                if (dc->loaded) {
                    s[i].active++;
                    s[i].inflight++;
                }
            }
            for (size_t i = 0; i < dc->n; i++) {
                double got = (double)count[i] / PICKS, want = (double)dc->w[i] / total;
                cr_expect(fabs_(got - want) <= SHARE_TOLERANCE,
                          "%s case %zu%s: server %zu (weight %u) got %.4f of the picks, want %.4f",
                          algos[a].name, ci, dc->loaded ? " loaded" : "", i, dc->w[i], got, want);
            }
            ctx_free(&c);
        }
    }
}

/* ---- unusable servers: never picked, -1 when none is left ---- */

Test(balance, unusable_never_picked)
{
    static const uint32_t w[MAXN] = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3 };
    lg_bal_server_t s[MAXN];
    uint64_t rng;
    lg_rand_seed(&rng, 99);
    for (size_t a = 0; a < NALGOS; a++) {
        ctx_t c;
        servers(s, MAXN, w);
        ctx_init(&c, s, MAXN, 7);
        for (int round = 0; round < 200; round++) {
            /* a random set of usable servers, sometimes empty */
            uint32_t mask = (uint32_t)lg_rand_next(&rng) & 0xffff;
            if (round % 7 == 0)
                mask &= (uint32_t)lg_rand_next(&rng);
            if (round % 50 == 0)
                mask = 0;
            for (size_t i = 0; i < MAXN; i++) {
                s[i].usable = (mask >> i) & 1;
                s[i].active = (uint32_t)lg_rand_below(&rng, 5);
                s[i].inflight = (uint32_t)lg_rand_below(&rng, 5);
                s[i].ewma_us = lg_rand_below(&rng, 3) * 1000;
            }
            for (int k = 0; k < 200; k++) {
                int i = algos[a].pick(&c, s, MAXN);
                if (mask == 0) {
                    cr_assert_eq(i, -1, "%s: picked %d with none usable", algos[a].name, i);
                } else {
                    cr_assert(i >= 0 && i < MAXN && s[i].usable,
                              "%s: picked %d, mask %04x", algos[a].name, i, mask);
                }
            }
        }
        cr_expect_eq(algos[a].pick(&c, s, 0), -1, "%s with no servers", algos[a].name);
        ctx_free(&c);
    }
}

Test(balance, single_usable_server_always_picked)
{
    lg_bal_server_t s[5];
    for (size_t a = 0; a < NALGOS; a++) {
        ctx_t c;
        servers(s, 5, NULL);
        ctx_init(&c, s, 5, 3);
        for (size_t i = 0; i < 5; i++)
            s[i].usable = i == 3;
        s[3].active = 1000;
        for (int k = 0; k < 100; k++)
            cr_assert_eq(algos[a].pick(&c, s, 5), 3, "%s", algos[a].name);
        ctx_free(&c);
    }
}

/* ---- smooth weighted round robin ---- */

Test(balance, wrr_is_nginx_sequence)
{
    static const uint32_t w[] = { 5, 1, 1 };
    lg_bal_server_t s[3];
    int32_t cur[3] = { 0 };
    char seq[15] = "";
    servers(s, 3, w);
    for (int k = 0; k < 14; k++)
        seq[k] = (char)('a' + lg_bal_wrr(s, 3, cur));
    cr_expect_str_eq(seq, "aabacaaaabacaa");
    cr_expect(cur[0] == 0 && cur[1] == 0 && cur[2] == 0, "state not back to zero after a cycle");
}

Test(balance, wrr_uses_effective_weight_and_skips_unusable)
{
    static const uint32_t w[] = { 5, 1, 1 };
    lg_bal_server_t s[3];
    int32_t cur[3] = { 0 };
    servers(s, 3, w);
    s[0].eff_weight = 1;                /* slow start: counts as 1 for now */
    unsigned count[3] = { 0 };
    for (int k = 0; k < 300; k++)
        count[lg_bal_wrr(s, 3, cur)]++;
    cr_expect(count[0] == 100 && count[1] == 100 && count[2] == 100,
              "%u %u %u", count[0], count[1], count[2]);

    s[0].eff_weight = 0;
    s[1].usable = 0;
    memset(count, 0, sizeof(count));
    for (int k = 0; k < 600; k++)
        count[lg_bal_wrr(s, 3, cur)]++;
    cr_expect_eq(count[1], 0);
    cr_expect(count[0] == 500 && count[2] == 100, "%u %u", count[0], count[2]);
}

/* ---- least connections ---- */

typedef struct {
    uint32_t active[4];
    uint32_t w[4];
    int      usable[4];
    size_t   n;
    int      want;                  /* -1: one of those in `ties` */
    unsigned ties;                  /* bit mask of the servers that tie */
} lc_case_t;

static const lc_case_t lc_cases[] = {
    { { 3, 1, 2 },    { 1, 1, 1 },    { 1, 1, 1 },    3, 1, 0 },
    { { 3, 1, 2 },    { 4, 1, 1 },    { 1, 1, 1 },    3, 0, 0 },   /* 3/4 < 1/1 */
    { { 3, 1, 2 },    { 1, 1, 1 },    { 1, 0, 1 },    3, 2, 0 },   /* the least is down */
    { { 10, 10, 9, 10 }, { 1, 1, 1, 1 }, { 1, 1, 1, 1 }, 4, 2, 0 },
    { { 0, 0, 5 },    { 1, 1, 1 },    { 1, 1, 1 },    3, -1, 0x3 },
    { { 2, 4, 3 },    { 1, 2, 0 },    { 1, 1, 1 },    3, -1, 0x3 },  /* 2/1 = 4/2 < 3/1 (0 reads as 1) */
    { { 7, 0, 0, 0 }, { 1, 1, 1, 1 }, { 1, 0, 0, 0 }, 4, 0, 0 },
};

Test(balance, least_conn_picks_least_loaded)
{
    uint64_t rng;
    lg_rand_seed(&rng, 5);
    for (size_t ci = 0; ci < sizeof(lc_cases) / sizeof(lc_cases[0]); ci++) {
        const lc_case_t *lc = &lc_cases[ci];
        lg_bal_server_t s[4];
        servers(s, lc->n, lc->w);
        for (size_t i = 0; i < lc->n; i++) {
            s[i].active = lc->active[i];
            s[i].usable = lc->usable[i];
        }
        unsigned seen = 0;
        for (int k = 0; k < 1000; k++) {
            int i = lg_bal_least_conn(s, lc->n, &rng);
            if (lc->want >= 0)
                cr_assert_eq(i, lc->want, "case %zu: picked %d", ci, i);
            else
                cr_assert(i >= 0 && (lc->ties >> i & 1), "case %zu: picked %d", ci, i);
            seen |= 1u << i;
        }
        if (lc->want < 0)
            cr_expect_eq(seen, lc->ties, "case %zu: ties not all used (%x)", ci, seen);
    }
}

Test(balance, least_conn_ties_follow_weight)
{
    static const uint32_t w[] = { 1, 3 };
    lg_bal_server_t s[2];
    uint64_t rng;
    servers(s, 2, w);
    lg_rand_seed(&rng, 11);
    unsigned count[2] = { 0 };
    for (int k = 0; k < PICKS; k++)
        count[lg_bal_least_conn(s, 2, &rng)]++;
    cr_expect(fabs_((double)count[1] / PICKS - 0.75) < SHARE_TOLERANCE, "%u %u", count[0], count[1]);
}

/* ---- power of two choices ---- */

Test(balance, p2c_never_picks_the_most_loaded)
{
    lg_bal_server_t s[5];
    uint64_t rng;
    lg_rand_seed(&rng, 8);
    servers(s, 5, NULL);
    static const uint32_t active[] = { 4, 9, 1, 3, 2 };
    for (size_t i = 0; i < 5; i++)
        s[i].active = active[i];
    unsigned count[5] = { 0 };
    for (int k = 0; k < PICKS; k++)
        count[lg_bal_p2c(s, 5, &rng)]++;
    cr_expect_eq(count[1], 0, "the most loaded server was picked %u times", count[1]);
    /* the least loaded wins every pair it is in: 2 of every 5 draws */
    cr_expect(fabs_((double)count[2] / PICKS - 0.4) < SHARE_TOLERANCE, "least loaded got %u", count[2]);

    /* two servers: both are always drawn, so the lighter one always wins */
    static const uint32_t w[] = { 1, 4 };
    servers(s, 2, w);
    s[0].active = 1;
    s[1].active = 3;                    /* 3/4 < 1/1 */
    for (int k = 0; k < 1000; k++)
        cr_assert_eq(lg_bal_p2c(s, 2, &rng), 1);
}

/* ---- IP hash ---- */

static int ip4(const lg_bal_server_t *s, size_t n, const char *text)
{
    struct sockaddr_in a = { .sin_family = AF_INET };
    cr_assert_eq(inet_pton(AF_INET, text, &a.sin_addr), 1, "%s", text);
    return lg_bal_ip_hash(s, n, (const struct sockaddr *)&a);
}

static int ip6(const lg_bal_server_t *s, size_t n, const char *text)
{
    struct sockaddr_in6 a = { .sin6_family = AF_INET6 };
    cr_assert_eq(inet_pton(AF_INET6, text, &a.sin6_addr), 1, "%s", text);
    return lg_bal_ip_hash(s, n, (const struct sockaddr *)&a);
}

Test(balance, ip_hash_is_sticky)
{
    lg_bal_server_t s[10];
    servers(s, 10, NULL);
    int a = ip4(s, 10, "192.0.2.1");
    for (int k = 0; k < 10; k++)
        cr_expect_eq(ip4(s, 10, "192.0.2.1"), a);
    /* the last octet does not count: a /24 sticks together */
    cr_expect_eq(ip4(s, 10, "192.0.2.200"), a);
    cr_expect_eq(ip4(s, 10, "192.0.2.255"), a);
    /* IPv4-mapped IPv6 is the same client */
    cr_expect_eq(ip6(s, 10, "::ffff:192.0.2.77"), a);
    /* the /24s are spread */
    unsigned seen = 0;
    char buf[32];
    for (int k = 0; k < 256; k++) {
        snprintf(buf, sizeof(buf), "198.51.%d.1", k);
        seen |= 1u << ip4(s, 10, buf);
    }
    cr_expect_eq(seen, 0x3ff, "not every server gets clients: %x", seen);
    /* IPv6: all sixteen bytes count */
    int b = ip6(s, 10, "2001:db8::1");
    cr_expect_eq(ip6(s, 10, "2001:db8::1"), b);
    int differs = 0;
    for (int k = 2; k < 256 && !differs; k++) {
        snprintf(buf, sizeof(buf), "2001:db8::%x", k);
        differs = ip6(s, 10, buf) != b;
    }
    cr_expect(differs, "the last IPv6 byte is ignored");
    /* other families all go to one server */
    struct sockaddr_un u = { .sun_family = AF_UNIX };
    int c = lg_bal_ip_hash(s, 10, (const struct sockaddr *)&u);
    cr_expect(c >= 0 && c < 10);
    strcpy(u.sun_path, "/tmp/x");
    cr_expect_eq(lg_bal_ip_hash(s, 10, (const struct sockaddr *)&u), c);
    cr_expect_eq(lg_bal_ip_hash(s, 10, NULL), c);
}

Test(balance, ip_hash_down_server_moves_only_its_clients)
{
    enum { N = 10, CLIENTS = 20000 };
    lg_bal_server_t s[N];
    uint64_t rng;
    servers(s, N, NULL);
    lg_rand_seed(&rng, 21);
    static int before[CLIENTS];
    static uint32_t addr[CLIENTS];
    for (int k = 0; k < CLIENTS; k++) {
        struct sockaddr_in a = { .sin_family = AF_INET };
        addr[k] = a.sin_addr.s_addr = (uint32_t)lg_rand_next(&rng);
        before[k] = lg_bal_ip_hash(s, N, (const struct sockaddr *)&a);
    }
    s[4].usable = 0;
    unsigned moved_to[N] = { 0 };
    for (int k = 0; k < CLIENTS; k++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = addr[k] };
        int now = lg_bal_ip_hash(s, N, (const struct sockaddr *)&a);
        cr_assert_neq(now, 4);
        if (before[k] != 4)
            cr_assert_eq(now, before[k], "client %d moved from %d to %d", k, before[k], now);
        else
            moved_to[now]++;
        /* the rehash is stable too */
        cr_assert_eq(lg_bal_ip_hash(s, N, (const struct sockaddr *)&a), now);
    }
    for (int i = 0; i < N; i++)
        if (i != 4)
            cr_expect_gt(moved_to[i], 0, "server %d got none of the down server's clients", i);

    /* everything but one down: all go there (20 rehashes, then the scan) */
    for (int i = 0; i < N; i++)
        s[i].usable = i == 7;
    for (int k = 0; k < 1000; k++) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = addr[k] };
        cr_assert_eq(lg_bal_ip_hash(s, N, (const struct sockaddr *)&a), 7);
    }
}

/* ---- Maglev ---- */

static uint16_t *maglev(const lg_bal_server_t *s, size_t n, const char *const *names)
{
    char err[128];
    uint16_t *t = malloc(LG_MAGLEV_M * sizeof(*t));
    cr_assert_not_null(t);
    cr_assert_eq(lg_maglev_build(t, LG_MAGLEV_M, s, n, names, err, sizeof(err)), 0, "%s", err);
    return t;
}

Test(balance, maglev_build_checks)
{
    lg_bal_server_t s[3];
    uint16_t t[101];
    char err[128];
    servers(s, 3, NULL);
    cr_expect_eq(lg_maglev_build(t, 100, s, 3, ids, err, sizeof(err)), -1, "100 is not prime");
    cr_expect_neq(err[0], '\0');
    cr_expect_eq(lg_maglev_build(t, 2, s, 3, ids, err, sizeof(err)), -1, "smaller than n");
    cr_expect_eq(lg_maglev_build(t, 101, s, 0, ids, err, sizeof(err)), -1, "no servers");
    cr_expect_eq(lg_maglev_build(t, 3, s, 3, ids, err, sizeof(err)), 0, "%s", err);
    cr_expect(t[0] != t[1] && t[1] != t[2] && t[0] != t[2], "m = n: one entry each");
    cr_expect_eq(lg_maglev_build(t, 101, s, 3, ids, err, sizeof(err)), 0, "%s", err);
    unsigned count[3] = { 0 };
    for (size_t i = 0; i < 101; i++) {
        cr_assert_lt(t[i], 3);
        count[t[i]]++;
    }
    cr_expect(count[0] >= 33 && count[1] >= 33 && count[2] >= 33, "%u %u %u",
              count[0], count[1], count[2]);
}

Test(balance, maglev_table_shares_follow_weight)
{
    static const uint32_t w[] = { 1, 2, 3, 1000, 7, 1, 1, 50 };
    enum { N = sizeof(w) / sizeof(w[0]) };
    lg_bal_server_t s[N];
    servers(s, N, w);
    uint16_t *t = maglev(s, N, ids);
    unsigned count[N] = { 0 }, total = 0;
    for (size_t i = 0; i < LG_MAGLEV_M; i++)
        count[t[i]]++;
    for (size_t i = 0; i < N; i++)
        total += w[i];
    for (size_t i = 0; i < N; i++) {
        double want = (double)LG_MAGLEV_M * w[i] / total;
        cr_expect(fabs_(count[i] - want) <= 1 + want * 0.002,
                  "server %zu (weight %u): %u entries, want %.1f", i, w[i], count[i], want);
    }
    free(t);
}

#define KEYS 100000

static void maglev_map(const uint16_t *t, const lg_bal_server_t *s, size_t n, int *out)
{
    char key[32];
    for (int k = 0; k < KEYS; k++) {
        int len = snprintf(key, sizeof(key), "/objects/%d", k);
        out[k] = lg_bal_maglev(t, LG_MAGLEV_M, s, n, key, (size_t)len);
    }
}

Test(balance, maglev_down_server_moves_only_its_keys)
{
    enum { N = 10 };
    lg_bal_server_t s[N];
    servers(s, N, NULL);
    uint16_t *t = maglev(s, N, ids);
    static int before[KEYS], after[KEYS];
    maglev_map(t, s, N, before);
    s[6].usable = 0;
    maglev_map(t, s, N, after);
    unsigned moved = 0, on6 = 0, moved_to[N] = { 0 };
    for (int k = 0; k < KEYS; k++) {
        on6 += before[k] == 6;
        if (after[k] != before[k]) {
            moved++;
            moved_to[after[k]]++;
            cr_assert_eq(before[k], 6, "key %d moved from %d, which is still up", k, before[k]);
        }
    }
    cr_expect_eq(moved, on6);
    cr_expect(moved > KEYS * 0.5 / N && moved < KEYS * 1.6 / N, "moved %u", moved);
    for (int i = 0; i < N; i++)
        if (i != 6)
            cr_expect(moved_to[i] > on6 / (N - 1) / 2,
                      "server %d took %u of the %u keys", i, moved_to[i], on6);
    /* and they come back when it does */
    s[6].usable = 1;
    maglev_map(t, s, N, after);
    cr_expect_arr_eq(after, before, sizeof(before));
    free(t);
}

/*
 * Configuration changes rebuild the table.  Ideal: only 1/N of the keys
 * move, all from the removed server or to the added one.  Maglev moves a
 * little more (0.2-0.3% of all keys here); this bounds that extra.
 */
#define MAGLEV_EXTRA_MAX 0.01       /* of all keys */

Test(balance, maglev_rebuild_disruption)
{
    enum { N = 10 };
    lg_bal_server_t s[N + 1];
    static int base[KEYS], other[KEYS];
    servers(s, N + 1, NULL);
    uint16_t *t10 = maglev(s, N, ids);
    maglev_map(t10, s, N, base);

    /* add an eleventh server */
    uint16_t *t11 = maglev(s, N + 1, ids);
    maglev_map(t11, s, N + 1, other);
    unsigned moved = 0, extra = 0;
    for (int k = 0; k < KEYS; k++) {
        if (other[k] != base[k]) {
            moved++;
            extra += other[k] != N;     /* moved, but not to the new server */
        }
    }
    cr_expect(moved > KEYS * 0.5 / N && moved < KEYS * 1.6 / N, "adding moved %u keys", moved);
    cr_expect(extra < KEYS * MAGLEV_EXTRA_MAX, "adding moved %u keys between old servers", extra);
    cr_log_info("maglev add 10->11: moved %.2f%% of keys, %.2f%% between old servers",
                100.0 * moved / KEYS, 100.0 * extra / KEYS);

    /* remove the fourth (the rest keep their ids, not their indexes) */
    const char *ids9[N - 1];
    lg_bal_server_t s9[N - 1];
    int old_index[N - 1];
    for (int i = 0, j = 0; i < N; i++) {
        if (i == 3)
            continue;
        ids9[j] = ids[i];
        s9[j] = s[i];
        old_index[j++] = i;
    }
    uint16_t *t9 = maglev(s9, N - 1, ids9);
    maglev_map(t9, s9, N - 1, other);
    moved = extra = 0;
    for (int k = 0; k < KEYS; k++) {
        int now = old_index[other[k]];
        cr_assert_neq(now, 3);
        if (now != base[k]) {
            moved++;
            extra += base[k] != 3;      /* moved, though its server is still there */
        }
    }
    cr_expect(moved > KEYS * 0.5 / N && moved < KEYS * 1.6 / N, "removing moved %u keys", moved);
    cr_expect(extra < KEYS * MAGLEV_EXTRA_MAX, "removing moved %u keys of remaining servers", extra);
    cr_log_info("maglev remove 10->9: moved %.2f%% of keys, %.2f%% from remaining servers",
                100.0 * moved / KEYS, 100.0 * extra / KEYS);
    free(t9);
    free(t11);
    free(t10);
}

Test(balance, maglev_is_deterministic)
{
    lg_bal_server_t s[5];
    servers(s, 5, NULL);
    uint16_t *a = maglev(s, 5, ids), *b = maglev(s, 5, ids);
    cr_expect_arr_eq(a, b, LG_MAGLEV_M * sizeof(*a), "two builds differ");
    int k = lg_bal_maglev(a, LG_MAGLEV_M, s, 5, "key", 3);
    cr_expect_eq(lg_bal_maglev_h(a, LG_MAGLEV_M, s, 5, lg_maglev_hash("key", 3)), k);
    /* a table built for more servers than the caller passes: their entries are skipped */
    for (int i = 0; i < 1000; i++) {
        uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        int x = lg_bal_maglev_h(a, LG_MAGLEV_M, s, 3, h);
        cr_assert(x >= 0 && x < 3);
    }
    free(a);
    free(b);
}

/* ---- peak EWMA ---- */

#define TAU 10000000ull             /* 10 s */

Test(balance, ewma_update_and_decay)
{
    lg_ewma_t e = { 0 };
    cr_expect_eq(lg_ewma_get(&e, 0, TAU), 0, "unknown before any sample");
    lg_ewma_update(&e, 1000, 1000000, TAU);
    cr_expect_eq(lg_ewma_get(&e, 1000000, TAU), 1000, "the first sample is the estimate");

    /* a higher sample takes over at once, however recent the last one */
    lg_ewma_update(&e, 50000, 1000001, TAU);
    cr_expect_eq(lg_ewma_get(&e, 1000001, TAU), 50000);

    /* a lower one counts for 1 - e^(-dt/tau) */
    lg_ewma_update(&e, 10000, 1000001 + TAU, TAU);
    double want = 50000 * E_M1 + 10000 * (1 - E_M1);
    cr_expect(fabs_(e.value_us - want) < want * 1e-6, "%f, want %f", e.value_us, want);
    lg_ewma_update(&e, 1, 1000001 + TAU, TAU);
    cr_expect(fabs_(e.value_us - want) < want * 1e-6, "dt = 0 must not move it: %f", e.value_us);

    /* unread for a while, it decays towards 0 but never back to "unknown" */
    uint64_t t0 = 1000001 + TAU;
    cr_expect(fabs_((double)lg_ewma_get(&e, t0 + 2 * TAU, TAU) - want * E_M2) <= 1);
    cr_expect(fabs_((double)lg_ewma_get(&e, t0 + TAU / 100, TAU) - want * E_M001) <= 1);
    cr_expect_eq(lg_ewma_get(&e, t0 + 1000 * TAU, TAU), 1);
    cr_expect(lg_ewma_get(&e, t0 - 5, TAU) > 0, "a clock behind the stamp");

    /* 0 us samples count as 1 us, so that 0 keeps meaning "no sample" */
    lg_ewma_t z = { 0 };
    lg_ewma_update(&z, 0, 5, TAU);
    cr_expect_eq(lg_ewma_get(&z, 5, TAU), 1);
}

typedef struct {
    uint64_t ewma[3];
    uint32_t inflight[3];
    uint32_t w[3];
    size_t   n;
    int      want;                  /* the pick, or -1: any but `never` */
    int      never;
} ewma_case_t;

static const ewma_case_t ewma_cases[] = {
    { { 1000, 10000 },      { 0, 0 },    { 1, 1 },    2, 0, -1 },
    { { 10000, 1000 },      { 0, 0 },    { 1, 1 },    2, 1, -1 },
    { { 1000, 3000 },       { 5, 0 },    { 1, 1 },    2, 1, -1 },  /* 6000 > 3000 */
    { { 1000, 3000 },       { 1, 0 },    { 1, 1 },    2, 0, -1 },  /* 2000 < 3000 */
    { { 1000, 3000 },       { 5, 0 },    { 4, 1 },    2, 0, -1 },  /* 1500 < 3000 */
    { { 0, 1000000 },       { 0, 0 },    { 1, 1 },    2, 0, -1 },  /* unknown and idle: try it */
    { { 0, 1000000 },       { 1, 9 },    { 1, 1 },    2, 1, -1 },  /* unknown and busy: wait */
    { { 5000, 3000, 1000 }, { 0, 0, 0 }, { 1, 1, 1 }, 3, -1, 0 },  /* never the slowest of three */
};

Test(balance, peak_ewma_prefers_cheaper)
{
    uint64_t rng;
    lg_rand_seed(&rng, 4);
    for (size_t ci = 0; ci < sizeof(ewma_cases) / sizeof(ewma_cases[0]); ci++) {
        const ewma_case_t *ec = &ewma_cases[ci];
        lg_bal_server_t s[3];
        servers(s, ec->n, ec->w);
        for (size_t i = 0; i < ec->n; i++) {
            s[i].ewma_us = ec->ewma[i];
            s[i].inflight = ec->inflight[i];
        }
        for (int k = 0; k < 1000; k++) {
            int i = lg_bal_peak_ewma(s, ec->n, &rng);
            if (ec->want >= 0)
                cr_assert_eq(i, ec->want, "case %zu: picked %d", ci, i);
            else
                cr_assert(i >= 0 && i != ec->never, "case %zu: picked %d", ci, i);
        }
    }
}

/*
 * Two servers answering in 1 ms and 10 ms, one request per millisecond.
 * The fast one gets nearly everything; one 100 ms answer from it sends the
 * very next requests to the other; after a few tau unread it is tried again.
 */
Test(balance, peak_ewma_reacts_to_a_spike)
{
    static const uint64_t latency[2] = { 1000, 10000 };
    lg_bal_server_t s[2];
    lg_ewma_t e[2] = { { 0 } };
    uint64_t rng, now = 1;
    lg_rand_seed(&rng, 6);
    servers(s, 2, NULL);
    unsigned count[2] = { 0 };
    for (int k = 0; k < 10000; k++, now += 1000) {
        for (int i = 0; i < 2; i++)
            s[i].ewma_us = lg_ewma_get(&e[i], now, TAU);
        int i = lg_bal_peak_ewma(s, 2, &rng);
        count[i]++;
        lg_ewma_update(&e[i], latency[i], now, TAU);
    }
    cr_expect_gt(count[1], 0, "the slow server was never measured");
    cr_expect_gt(count[0], 9900, "the fast server got only %u of 10000", count[0]);

    lg_ewma_update(&e[0], 100000, now, TAU);          /* a 100 ms answer */
    for (int k = 0; k < 100; k++, now += 1000) {
        for (int i = 0; i < 2; i++)
            s[i].ewma_us = lg_ewma_get(&e[i], now, TAU);
        int i = lg_bal_peak_ewma(s, 2, &rng);
        cr_assert_eq(i, 1, "request %d after the spike went to the spiking server", k);
        lg_ewma_update(&e[i], latency[i], now, TAU);
    }

    /*
     * Traffic keeps the slow server's estimate at 10 ms while the fast one's
     * decays unread from 100 ms: it is tried again after ln(100/10) tau.
     */
    uint64_t spike = now;
    int back = 0;
    for (; now < spike + 4 * TAU && !back; now += 1000) {
        for (int i = 0; i < 2; i++)
            s[i].ewma_us = lg_ewma_get(&e[i], now, TAU);
        int i = lg_bal_peak_ewma(s, 2, &rng);
        back = i == 0;
        lg_ewma_update(&e[i], latency[i], now, TAU);
    }
    cr_assert(back, "never tried again");
    double after = (double)(now - spike) / TAU;
    cr_expect(after > 2.2 && after < 2.4, "tried again after %.2f tau, want about 2.3", after);
}

/* ---- hashing and randomness ---- */

Test(balance, hash_basics)
{
    cr_expect_eq(lg_hash64("abc", 3, 0), lg_hash64("abc", 3, 0));
    cr_expect_neq(lg_hash64("abc", 3, 0), lg_hash64("abc", 3, 1), "seed ignored");
    cr_expect_neq(lg_hash64("", 0, 0), lg_hash64("\0", 1, 0), "length ignored");
    cr_expect_neq(lg_hash64("abcdefgh", 8, 0), lg_hash64("abcdefgi", 8, 0));
    cr_expect_neq(lg_hash64("abcdefghijkl", 12, 0), lg_hash64("abcdefghijkm", 12, 0));
    /* the bytes of a /24 differ in the low bits only */
    cr_expect_neq(lg_hash64("\xc0\x00\x02", 3, 0) >> 60, lg_hash64("\xc0\x00\x03", 3, 0) >> 60);
}

/* Keys ending right before a PROT_NONE page: reading one byte too far crashes. */
Test(balance, hash_reads_only_its_bytes)
{
    long page = sysconf(_SC_PAGESIZE);
    char *m = mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    cr_assert_eq(mprotect(m + page, (size_t)page, PROT_NONE), 0);
    memset(m, 'x', (size_t)page);
    uint64_t prev = 0;
    for (size_t n = 0; n <= 100; n++) {
        uint64_t h = lg_hash64(m + page - n, n, 0);
        cr_expect_neq(h, prev, "length %zu", n);
        prev = h;
    }
    munmap(m, (size_t)page * 2);
}

/* Flipping one input bit flips about half the output bits. */
Test(balance, hash_avalanche)
{
    uint64_t rng;
    lg_rand_seed(&rng, 2);
    static const size_t lens[] = { 3, 8, 16, 21 };
    for (size_t li = 0; li < sizeof(lens) / sizeof(lens[0]); li++) {
        size_t n = lens[li];
        double flips = 0;
        int trials = 0;
        unsigned char buf[32];
        for (int r = 0; r < 200; r++) {
            for (size_t i = 0; i < n; i++)
                buf[i] = (unsigned char)lg_rand_next(&rng);
            uint64_t h = lg_hash64(buf, n, 0);
            for (size_t bit = 0; bit < n * 8; bit++) {
                buf[bit / 8] ^= (unsigned char)(1u << bit % 8);
                flips += __builtin_popcountll(h ^ lg_hash64(buf, n, 0));
                buf[bit / 8] ^= (unsigned char)(1u << bit % 8);
                trials++;
            }
        }
        double avg = flips / trials;
        cr_expect(avg > 31 && avg < 33, "length %zu: %.2f bits flip on average", n, avg);
    }
}

Test(balance, rng)
{
    uint64_t a, b;
    lg_rand_seed(&a, 0);
    cr_expect_neq(a, 0, "a zero xorshift state never leaves zero");
    lg_rand_seed(&b, 0);
    cr_expect_eq(lg_rand_next(&a), lg_rand_next(&b), "not reproducible");
    unsigned count[7] = { 0 };
    for (int k = 0; k < 70000; k++) {
        uint32_t x = lg_rand_below(&a, 7);
        cr_assert_lt(x, 7);
        count[x]++;
    }
    for (int i = 0; i < 7; i++)
        cr_expect(count[i] > 9500 && count[i] < 10500, "%d: %u", i, count[i]);
}
