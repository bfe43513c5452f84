/*
 * Load-balancing algorithms (see balance.h for the contracts).
 *
 * Consistent hashing is Maglev rather than a ketama ring, because:
 *  - a lookup is one hash and one read of a 128 KiB table, whatever the
 *    weights; a ring is a binary search over 160 points per weight unit,
 *    which with weights up to 1000 means up to 160,000 points (1.3 MB) per
 *    server, rebuilt and sorted on every reload;
 *  - every server gets its weighted share of the table to within about one
 *    entry, where 160 random points per unit leave a ring's shares several
 *    percent apart;
 *  - the price is stability across configuration changes: rebuilding with
 *    a server added or removed moves a little more than the 1/n of the keys
 *    a ring moves (0.2-0.3% of all keys more with 10 servers, checked in
 *    t/unit/test_balance.c).  Servers that go down or are ejected at run
 *    time do not change the table at all: their keys, and only theirs, move
 *    to the next usable entries.
 */
#include "proxy/balance.h"

#include <float.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hashing and randomness ---- */

/* ---- helpers ---- */

static inline uint32_t cfg_weight(const lg_bal_server_t *s)
{
    return s->weight ? s->weight : 1;
}

static inline uint32_t eff_weight(const lg_bal_server_t *s)
{
    return s->eff_weight ? s->eff_weight : cfg_weight(s);
}

/* The usable server holding weight unit r of the usable ones, skipping `except`. */
static int weight_unit(const lg_bal_server_t *s, size_t n, uint64_t r, size_t except)
{
    int last = -1;
    for (size_t i = 0; i < n; i++) {
        if (!s[i].usable || i == except)
            continue;
        uint32_t w = eff_weight(&s[i]);
        if (r < w)
            return (int)i;
        r -= w;
        last = (int)i;
    }
    return last;                        /* not reached when r < the total */
}

/*
 * Draw two distinct usable servers, each in proportion to effective weight
 * (the second among the rest).  Returns how many usable servers there are,
 * capped at 2; with one, *a is it.
 */
static int draw_two(const lg_bal_server_t *s, size_t n, uint64_t *rng, int *a, int *b)
{
    uint64_t total = 0;
    int cnt = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].usable) {
            total += eff_weight(&s[i]);
            if (cnt++ == 0)
                *a = (int)i;
        }
    }
    if (cnt < 2)
        return cnt;
    *a = weight_unit(s, n, lg_scale64(lg_rand_next(rng), total), (size_t)-1);
    total -= eff_weight(&s[*a]);
    *b = weight_unit(s, n, lg_scale64(lg_rand_next(rng), total), (size_t)*a);
    return 2;
}

/* ---- pickers ---- */

int lg_bal_wrr(const lg_bal_server_t *s, size_t n, int32_t *current)
{
    int best = -1;
    int32_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!s[i].usable)
            continue;
        int32_t w = (int32_t)eff_weight(&s[i]);
        current[i] += w;
        total += w;
        if (best < 0 || current[i] > current[best])
            best = (int)i;
    }
    if (best >= 0)
        current[best] -= total;
    return best;
}

int lg_bal_least_conn(const lg_bal_server_t *s, size_t n, uint64_t *rng)
{
    int best = -1;
    uint64_t tie = 0;                   /* weight of the servers tied with best */
    for (size_t i = 0; i < n; i++) {
        if (!s[i].usable)
            continue;
        uint32_t w = eff_weight(&s[i]);
        if (best < 0) {
            best = (int)i;
            tie = w;
            continue;
        }
        /* active_i / w_i  vs  active_best / w_best, without division */
        uint64_t li = (uint64_t)s[i].active * eff_weight(&s[best]);
        uint64_t lb = (uint64_t)s[best].active * w;
        if (li < lb) {
            best = (int)i;
            tie = w;
        } else if (li == lb) {
            tie += w;                   /* weighted reservoir sampling over the ties */
            if (lg_scale64(lg_rand_next(rng), tie) < w)
                best = (int)i;
        }
    }
    return best;
}

int lg_bal_p2c(const lg_bal_server_t *s, size_t n, uint64_t *rng)
{
    int a = -1, b = -1;
    int cnt = draw_two(s, n, rng, &a, &b);
    if (cnt < 2)
        return cnt ? a : -1;
    uint64_t la = (uint64_t)s[a].active * eff_weight(&s[b]);
    uint64_t lb = (uint64_t)s[b].active * eff_weight(&s[a]);
    return lb < la ? b : a;
}

static double ewma_cost(const lg_bal_server_t *s)
{
    if (s->ewma_us == 0)
        return s->inflight ? DBL_MAX : 0.0;
    return (double)s->ewma_us * ((double)s->inflight + 1.0) / eff_weight(s);
}

int lg_bal_peak_ewma(const lg_bal_server_t *s, size_t n, uint64_t *rng)
{
    int a = -1, b = -1;
    int cnt = draw_two(s, n, rng, &a, &b);
    if (cnt < 2)
        return cnt ? a : -1;
    return ewma_cost(&s[b]) < ewma_cost(&s[a]) ? b : a;
}

#define IP_HASH_TRIES 20                /* nginx's */

int lg_bal_ip_hash(const lg_bal_server_t *s, size_t n, const struct sockaddr *sa)
{
    static const unsigned char pseudo[3];   /* AF_UNIX and others: all alike */
    static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    const unsigned char *a = pseudo;
    size_t len = 3;
    if (sa && sa->sa_family == AF_INET) {
        a = (const unsigned char *)sa + offsetof(struct sockaddr_in, sin_addr);
    } else if (sa && sa->sa_family == AF_INET6) {
        a = (const unsigned char *)sa + offsetof(struct sockaddr_in6, sin6_addr);
        if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0)
            a += sizeof(v4mapped);
        else
            len = 16;
    }
    if (n == 0)
        return -1;

    /* All servers count, usable or not: the mapping must not shift when one goes down. */
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += cfg_weight(&s[i]);

    uint64_t h = 0;
    size_t p = 0;
    for (int t = 0; t < IP_HASH_TRIES; t++) {
        h = lg_hash64(a, len, h);
        uint64_t w = lg_scale64(h, total);
        for (p = 0; w >= cfg_weight(&s[p]); p++)
            w -= cfg_weight(&s[p]);
        if (s[p].usable)
            return (int)p;
    }
    for (size_t k = 1; k < n; k++) {
        size_t q = (p + k) % n;
        if (s[q].usable)
            return (int)q;
    }
    return -1;
}

/* ---- Maglev ---- */

static int is_prime(uint64_t m)
{
    if (m < 2)
        return 0;
    for (uint64_t d = 2; d * d <= m; d++)
        if (m % d == 0)
            return 0;
    return 1;
}

#define MAGLEV_EMPTY    0xffffu
#define MAGLEV_SEED_OFF 0x6d61676c65766f66ull   /* arbitrary, fixed forever */
#define MAGLEV_SEED_SKP 0x6d61676c6576736bull

typedef struct maglev_fill {
    uint64_t cur;                       /* next table position in this server's permutation */
    uint64_t skip;                      /* step of the permutation, 1..m-1 */
    uint64_t target;                    /* turns are taken while iteration * weight >= target */
} maglev_fill_t;

int lg_maglev_build(uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                    const char *const *ids, char *err, size_t errlen)
{
    if (n == 0 || n >= MAGLEV_EMPTY) {
        snprintf(err, errlen, "maglev: %zu servers (1..%u supported)", n, MAGLEV_EMPTY - 1);
        return -1;
    }
    if (m < n || m > UINT32_MAX || !is_prime(m)) {
        snprintf(err, errlen, "maglev: table size %zu is not a prime >= %zu", m, n);
        return -1;
    }
    maglev_fill_t *f = calloc(n, sizeof(*f));
    if (f == NULL) {
        snprintf(err, errlen, "maglev: out of memory");
        return -1;
    }
    uint64_t wmax = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(ids[i]);
        f[i].cur = lg_hash64(ids[i], len, MAGLEV_SEED_OFF) % m;
        f[i].skip = lg_hash64(ids[i], len, MAGLEV_SEED_SKP) % (m - 1) + 1;
        if (cfg_weight(&s[i]) > wmax)
            wmax = cfg_weight(&s[i]);
    }

    /*
     * Weighted Maglev as Envoy builds it: in iteration k a server of weight w
     * takes a turn whenever k * w has reached its target, which then grows
     * by the largest weight.  The heaviest server takes a turn in every
     * iteration, the others in proportion; each turn claims the next entry
     * of the server's permutation that is still empty.  In iteration 1 every
     * server takes a turn, so each one owns at least one entry.
     */
    for (size_t i = 0; i < m; i++)
        table[i] = MAGLEV_EMPTY;
    size_t filled = 0;
    for (uint64_t k = 1; filled < m; k++) {
        for (size_t i = 0; i < n && filled < m; i++) {
            if (k * cfg_weight(&s[i]) < f[i].target)
                continue;
            f[i].target += wmax;
            while (table[f[i].cur] != MAGLEV_EMPTY) {
                f[i].cur += f[i].skip;
                if (f[i].cur >= m)
                    f[i].cur -= m;
            }
            table[f[i].cur] = (uint16_t)i;
            filled++;
        }
    }
    free(f);
    return 0;
}

uint64_t lg_maglev_hash(const void *key, size_t keylen)
{
    return lg_hash64(key, keylen, 0);
}

#define MAGLEV_PROBES 16                /* before checking that any server is usable */

int lg_bal_maglev_h(const uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                    uint64_t h)
{
    if (n == 0 || m == 0)
        return -1;
    size_t i = (size_t)lg_scale64(h, m);
    for (size_t probe = 0; probe < m; probe++) {
        uint16_t x = table[i];
        if (x < n && s[x].usable)
            return x;
        if (probe == MAGLEV_PROBES) {
            size_t u = 0;
            while (u < n && !s[u].usable)
                u++;
            if (u == n)
                return -1;
        }
        if (++i == m)
            i = 0;
    }
    return -1;                          /* a table built for other servers */
}

int lg_bal_maglev(const uint16_t *table, size_t m, const lg_bal_server_t *s, size_t n,
                  const void *key, size_t keylen)
{
    return lg_bal_maglev_h(table, m, s, n, lg_maglev_hash(key, keylen));
}

/* ---- peak EWMA ---- */

/* e^-x for x >= 0 without libm: halve into range, Taylor, square back. */
static double exp_neg(double x)
{
    if (!(x > 0))
        return 1.0;
    if (x > 40)
        return 0.0;                     /* < 5e-18 */
    int k = 0;
    while (x > 1.0 / 32) {
        x *= 0.5;
        k++;
    }
    double y = 1 - x * (1 - x * (1.0 / 2 - x * (1.0 / 6 - x * (1.0 / 24 - x * (1.0 / 120)))));
    while (k-- > 0)
        y *= y;
    return y;
}

void lg_ewma_update(lg_ewma_t *e, uint64_t sample_us, uint64_t now_us, uint64_t tau_us)
{
    double v = sample_us ? (double)sample_us : 1.0;     /* 0 means "no sample" */
    if (e->value_us <= 0 || v >= e->value_us || tau_us == 0) {
        e->value_us = v;                /* peak: jump up at once */
    } else {
        double dt = now_us > e->stamp_us ? (double)(now_us - e->stamp_us) : 0.0;
        double w = exp_neg(dt / (double)tau_us);
        e->value_us = e->value_us * w + v * (1 - w);
    }
    if (now_us > e->stamp_us)
        e->stamp_us = now_us;
}

uint64_t lg_ewma_get(const lg_ewma_t *e, uint64_t now_us, uint64_t tau_us)
{
    if (e->value_us <= 0)
        return 0;
    double v = e->value_us;
    if (tau_us && now_us > e->stamp_us)
        v *= exp_neg((double)(now_us - e->stamp_us) / (double)tau_us);
    uint64_t r = (uint64_t)(v + 0.5);
    return r ? r : 1;                   /* measured once: never "unknown" again */
}
