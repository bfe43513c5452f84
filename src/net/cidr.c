/*
 * CIDR sets and the special-purpose address ranges (see acl.h for the
 * contracts).
 *
 * CIDR sets: one sorted array per family, grouped by prefix length, longest
 * first; a lookup masks the address to each length present and binary
 * searches that group, so the first hit is the longest match.  A trie would
 * be faster for thousands of distinct lengths, but there are at most 129.
 */
#include "net/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/arena.h"
#include "net/text.h"

/* ================================================================== */
/* CIDR sets                                                           */

typedef struct ckey {
    uint64_t hi, lo;                /* IPv4: the address in the top 32 bits of hi */
} ckey_t;

typedef struct cent {
    ckey_t  k;                      /* masked to len */
    uint8_t len;
    uint8_t v6;
    int32_t rule;
} cent_t;

typedef struct cgroup {
    uint32_t len, begin, end;       /* ents[begin..end) have this length */
} cgroup_t;

struct lg_cidr_set {
    lg_arena_t arena;               /* rule texts */
    char     **rules;               /* owned array of arena strings */
    size_t     nrules, caprules;
    cent_t    *ents;                /* owned; sorted and deduplicated by build */
    size_t     nents, capents;
    cgroup_t   groups[2][129];      /* [v6], longest first */
    size_t     ngroups[2];
    int        built;
};

static ckey_t ckey_mask(ckey_t k, unsigned len)
{
    if (len == 0)
        return (ckey_t){ 0, 0 };
    if (len <= 64) {
        k.hi &= ~0ull << (64 - len);
        k.lo = 0;
    } else {
        k.lo &= ~0ull << (128 - len);
    }
    return k;
}

static int ckey_cmp(ckey_t a, ckey_t b)
{
    if (a.hi != b.hi)
        return a.hi < b.hi ? -1 : 1;
    if (a.lo != b.lo)
        return a.lo < b.lo ? -1 : 1;
    return 0;
}

static ckey_t ckey_v4(const unsigned char *b)
{
    return (ckey_t){ (uint64_t)b[0] << 56 | (uint64_t)b[1] << 48 |
                     (uint64_t)b[2] << 40 | (uint64_t)b[3] << 32, 0 };
}

static ckey_t ckey_v6(const unsigned char *b)
{
    ckey_t k = { 0, 0 };
    for (int i = 0; i < 8; i++) {
        k.hi = k.hi << 8 | b[i];
        k.lo = k.lo << 8 | b[8 + i];
    }
    return k;
}

static const unsigned char v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* The lookup key of an address: 0 (IPv4), 1 (IPv6) or -1 (other family). */
static int ckey_of(const struct sockaddr *sa, ckey_t *k)
{
    if (sa->sa_family == AF_INET) {
        *k = ckey_v4((const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const unsigned char *b =
            ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
        if (memcmp(b, v4mapped_prefix, 12) == 0) {
            *k = ckey_v4(b + 12);
            return 0;
        }
        *k = ckey_v6(b);
        return 1;
    }
    return -1;
}

lg_cidr_set_t *lg_cidr_new(void)
{
    lg_cidr_set_t *s = calloc(1, sizeof(*s));
    if (s != NULL)
        lg_arena_init(&s->arena, 4096, 0);
    return s;
}

void lg_cidr_free(lg_cidr_set_t *s)
{
    if (s == NULL)
        return;
    lg_arena_destroy(&s->arena);
    free(s->rules);
    free(s->ents);
    free(s);
}

int lg_cidr_add(lg_cidr_set_t *s, const char *text, char *err, size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(text, '/');
    size_t alen = slash ? (size_t)(slash - text) : strlen(text);
    unsigned char b[16];
    int v6;

    if (alen == 0 || alen >= sizeof(addr)) {
        snprintf(err, errlen, "bad address \"%s\"", text);
        return -1;
    }
    memcpy(addr, text, alen);
    addr[alen] = '\0';
    if (inet_pton(AF_INET, addr, b) == 1)
        v6 = 0;
    else if (inet_pton(AF_INET6, addr, b) == 1)
        v6 = 1;
    else {
        snprintf(err, errlen, "bad address \"%s\"", text);
        return -1;
    }
    unsigned max = v6 ? 128 : 32, len = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t nd = strspn(p, "0123456789");
        if (nd == 0 || nd > 3 || p[nd] != '\0' || (len = (unsigned)atoi(p)) > max) {
            snprintf(err, errlen, "bad prefix length in \"%s\"", text);
            return -1;
        }
    }
    cent_t e = { .len = (uint8_t)len, .v6 = (uint8_t)v6 };
    e.k = v6 ? ckey_v6(b) : ckey_v4(b);
    ckey_t m = ckey_mask(e.k, len);
    if (ckey_cmp(m, e.k) != 0) {
        char fix[INET6_ADDRSTRLEN];
        unsigned char mb[16];
        for (int i = 0; i < 8; i++) {
            mb[i] = (unsigned char)(m.hi >> (56 - 8 * i));
            mb[8 + i] = (unsigned char)(m.lo >> (56 - 8 * i));
        }
        inet_ntop(v6 ? AF_INET6 : AF_INET, mb, fix, sizeof(fix));
        snprintf(err, errlen, "\"%s\" has bits set past the prefix (did you mean %s/%u?)",
                 text, fix, len);
        return -1;
    }
    /* ::ffff:a.b.c.d/96+n is the IPv4 rule a.b.c.d/n */
    if (v6 && len >= 96 && memcmp(b, v4mapped_prefix, 12) == 0) {
        e.v6 = 0;
        e.len = (uint8_t)(len - 96);
        e.k = ckey_v4(b + 12);
    }

    if (s->nrules == s->caprules) {
        size_t cap = s->caprules ? s->caprules * 2 : 16;
        char **r = realloc(s->rules, cap * sizeof(*r));
        if (r == NULL)
            goto nomem;
        s->rules = r;
        s->caprules = cap;
    }
    if (s->nents == s->capents) {
        size_t cap = s->capents ? s->capents * 2 : 16;
        cent_t *n = realloc(s->ents, cap * sizeof(*n));
        if (n == NULL)
            goto nomem;
        s->ents = n;
        s->capents = cap;
    }
    char *copy = lg_arena_strdup(&s->arena, text);
    if (copy == NULL)
        goto nomem;
    e.rule = (int32_t)s->nrules;
    s->rules[s->nrules++] = copy;
    s->ents[s->nents++] = e;
    s->built = 0;
    return e.rule;

nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int lg_cidr_add_list(lg_cidr_set_t *s, const char *list, char *err, size_t errlen)
{
    int count = 0;
    const char *p = list;
    for (;;) {
        while (*p == ',' || lg_text_space((unsigned char)*p))
            p++;
        if (*p == '\0')
            return count;
        size_t n = 0;
        while (p[n] != '\0' && p[n] != ',' && !lg_text_space((unsigned char)p[n]))
            n++;
        char one[128];
        if (n >= sizeof(one)) {
            snprintf(err, errlen, "bad address \"%.40s...\"", p);
            return -1;
        }
        memcpy(one, p, n);
        one[n] = '\0';
        if (lg_cidr_add(s, one, err, errlen) < 0)
            return -1;
        count++;
        p += n;
    }
}

static int cent_cmp(const void *pa, const void *pb)
{
    const cent_t *a = pa, *b = pb;
    if (a->v6 != b->v6)
        return a->v6 - b->v6;
    if (a->len != b->len)
        return b->len - a->len;     /* longest first */
    int c = ckey_cmp(a->k, b->k);
    if (c != 0)
        return c;
    return a->rule < b->rule ? -1 : a->rule > b->rule;
}

int lg_cidr_build(lg_cidr_set_t *s, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    if (s->nents > 1)
        qsort(s->ents, s->nents, sizeof(s->ents[0]), cent_cmp);
    size_t k = 0;
    for (size_t i = 0; i < s->nents; i++) {
        const cent_t *e = &s->ents[i];
        if (k > 0 && s->ents[k - 1].v6 == e->v6 && s->ents[k - 1].len == e->len &&
            ckey_cmp(s->ents[k - 1].k, e->k) == 0)
            continue;               /* a duplicate: the first added wins */
        s->ents[k++] = *e;
    }
    s->nents = k;
    s->ngroups[0] = s->ngroups[1] = 0;
    for (size_t i = 0; i < s->nents; i++) {
        const cent_t *e = &s->ents[i];
        size_t *ng = &s->ngroups[e->v6];
        cgroup_t *g = &s->groups[e->v6][*ng ? *ng - 1 : 0];
        if (*ng == 0 || g->len != e->len) {
            g = &s->groups[e->v6][(*ng)++];
            g->len = e->len;
            g->begin = (uint32_t)i;
        }
        g->end = (uint32_t)i + 1;
    }
    s->built = 1;
    return 0;
}

int lg_cidr_lookup(const lg_cidr_set_t *s, const struct sockaddr *sa)
{
    LG_BUG_ON(!s->built);
    ckey_t k;
    int fam = ckey_of(sa, &k);
    if (fam < 0)
        return -1;
    for (size_t gi = 0; gi < s->ngroups[fam]; gi++) {
        const cgroup_t *g = &s->groups[fam][gi];
        ckey_t m = ckey_mask(k, g->len);
        size_t lo = g->begin, hi = g->end;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = ckey_cmp(s->ents[mid].k, m);
            if (c == 0)
                return s->ents[mid].rule;
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    return -1;
}

int lg_cidr_contains(const lg_cidr_set_t *s, const struct sockaddr *sa)
{
    return lg_cidr_lookup(s, sa) >= 0;
}

const char *lg_cidr_rule(const lg_cidr_set_t *s, int idx)
{
    return idx >= 0 && (size_t)idx < s->nrules ? s->rules[idx] : NULL;
}

size_t lg_cidr_count(const lg_cidr_set_t *s)
{
    return s->nrules;
}

/* ================================================================== */
/* private addresses                                                   */

typedef struct prange4 {
    uint32_t    net;
    uint8_t     len;
    uint8_t     doc;                /* only with LG_CIDR_PRIV_DOC */
    const char *name;
} prange4_t;

static const prange4_t pr4[] = {
    { 0x00000000u,  8, 0, "this network" },
    { 0x0a000000u,  8, 0, "private" },
    { 0x64400000u, 10, 0, "shared address space (CGNAT)" },
    { 0x7f000000u,  8, 0, "loopback" },
    { 0xa9fe0000u, 16, 0, "link-local" },
    { 0xac100000u, 12, 0, "private" },
    { 0xc0000000u, 24, 0, "IETF protocol assignments" },
    { 0xc0000200u, 24, 1, "documentation" },
    { 0xc0a80000u, 16, 0, "private" },
    { 0xc6120000u, 15, 0, "benchmarking" },
    { 0xc6336400u, 24, 1, "documentation" },
    { 0xcb007100u, 24, 1, "documentation" },
    { 0xe0000000u,  4, 0, "multicast" },
    { 0xffffffffu, 32, 0, "broadcast" },
    { 0xf0000000u,  4, 0, "reserved" },
};

enum { P6_NAME = 0, P6_EMBED12 = 1, P6_EMBED2 = 2 };

typedef struct prange6 {
    unsigned char net[16];
    uint8_t       len;
    uint8_t       doc;
    uint8_t       kind;             /* P6_NAME, or where an IPv4 address sits */
    const char   *name;
} prange6_t;

/* first match wins: specific ranges before the ones containing them */
static const prange6_t pr6[] = {
    { { 0 }, 128, 0, P6_NAME, "unspecified" },
    { { [15] = 1 }, 128, 0, P6_NAME, "loopback" },
    { { [10] = 0xff, [11] = 0xff }, 96, 0, P6_EMBED12, "IPv4-mapped" },
    { { 0 }, 96, 0, P6_NAME, "IPv4-compatible (deprecated)" },
    { { 0x00, 0x64, 0xff, 0x9b }, 96, 0, P6_EMBED12, "NAT64" },
    { { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 }, 48, 0, P6_NAME, "local-use NAT64" },
    { { 0x01, 0x00 }, 64, 0, P6_NAME, "discard-only" },
    { { 0x20, 0x01, 0x0d, 0xb8 }, 32, 1, P6_NAME, "documentation" },
    { { 0x3f, 0xff }, 20, 1, P6_NAME, "documentation" },
    { { 0x20, 0x02 }, 16, 0, P6_EMBED2, "6to4" },
    { { 0xfc }, 7, 0, P6_NAME, "unique local" },
    { { 0xfe, 0x80 }, 10, 0, P6_NAME, "link-local" },
    { { 0xfe, 0xc0 }, 10, 0, P6_NAME, "site-local (deprecated)" },
    { { 0xff }, 8, 0, P6_NAME, "multicast" },
};

static int bytes_prefix_eq(const unsigned char *a, const unsigned char *net, unsigned len)
{
    unsigned full = len / 8, rest = len % 8;
    if (memcmp(a, net, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char m = (unsigned char)(0xff << (8 - rest));
    return (a[full] & m) == (net[full] & m);
}

static const char *private4(const unsigned char *b, unsigned flags)
{
    uint32_t a = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    for (size_t i = 0; i < sizeof(pr4) / sizeof(pr4[0]); i++) {
        const prange4_t *r = &pr4[i];
        uint32_t m = r->len ? ~0u << (32 - r->len) : 0;
        if ((a & m) == r->net && (!r->doc || (flags & LG_CIDR_PRIV_DOC)))
            return r->name;
    }
    return NULL;
}

const char *lg_cidr_private(const struct sockaddr *sa, unsigned flags)
{
    if (sa->sa_family == AF_INET)
        return private4((const unsigned char *)
                        &((const struct sockaddr_in *)(const void *)sa)->sin_addr, flags);
    if (sa->sa_family != AF_INET6)
        return "not an IP address";
    const unsigned char *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    for (size_t i = 0; i < sizeof(pr6) / sizeof(pr6[0]); i++) {
        const prange6_t *r = &pr6[i];
        if (!bytes_prefix_eq(b, r->net, r->len) || (r->doc && !(flags & LG_CIDR_PRIV_DOC)))
            continue;
        switch (r->kind) {
        case P6_EMBED12: return private4(b + 12, flags);
        case P6_EMBED2:  return private4(b + 2, flags);
        default:         return r->name;
        }
    }
    return NULL;
}
