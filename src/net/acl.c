/*
 * Allow/deny building blocks (see acl.h for the contracts).
 *
 * CIDR sets: one sorted array per family, grouped by prefix length, longest
 * first; a lookup masks the address to each length present and binary
 * searches that group, so the first hit is the longest match.  A trie would
 * be faster for thousands of distinct lengths, but there are at most 129.
 *
 * Domain sets: names are hashed from their last character to their first,
 * so a lookup that walks the queried name from the right has the hash of
 * every suffix on the way, for one multiply per character; at each label
 * boundary it probes the table once.  The same walk over a listed name
 * gives the hash it was stored under.
 */
#include "net/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/log.h"

#define NAME_MAX_LEN 253

static int is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* Reads a whole regular file into a NUL-terminated malloc'd buffer. */
static char *read_file(const char *path, size_t *lenp, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > (off_t)1 << 30) {
        snprintf(err, errlen, "%s: not a regular file of at most 1 GiB", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)sb.st_size, got = 0;
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        close(fd);
        return NULL;
    }
    while (got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (k == 0)
            break;                  /* shrank meanwhile: take what is there */
        got += (size_t)k;
    }
    close(fd);
    buf[got] = '\0';
    *lenp = got;
    return buf;
}

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
        while (*p == ',' || is_space((unsigned char)*p))
            p++;
        if (*p == '\0')
            return count;
        size_t n = 0;
        while (p[n] != '\0' && p[n] != ',' && !is_space((unsigned char)p[n]))
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
    uint8_t     doc;                /* only with LG_ACL_PRIV_DOC */
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
        if ((a & m) == r->net && (!r->doc || (flags & LG_ACL_PRIV_DOC)))
            return r->name;
    }
    return NULL;
}

const char *lg_acl_private(const struct sockaddr *sa, unsigned flags)
{
    if (sa->sa_family == AF_INET)
        return private4((const unsigned char *)
                        &((const struct sockaddr_in *)(const void *)sa)->sin_addr, flags);
    if (sa->sa_family != AF_INET6)
        return "not an IP address";
    const unsigned char *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
    for (size_t i = 0; i < sizeof(pr6) / sizeof(pr6[0]); i++) {
        const prange6_t *r = &pr6[i];
        if (!bytes_prefix_eq(b, r->net, r->len) || (r->doc && !(flags & LG_ACL_PRIV_DOC)))
            continue;
        switch (r->kind) {
        case P6_EMBED12: return private4(b + 12, flags);
        case P6_EMBED2:  return private4(b + 2, flags);
        default:         return r->name;
        }
    }
    return NULL;
}

/* ================================================================== */
/* domain sets                                                         */

/*
 * A name is stored at buf[off]: the source number (2 bytes, little
 * endian), the length (1 byte), the name in lower case, a NUL.  off == 0
 * marks an empty slot (buf[0] is never a record).
 */
typedef struct dslot {
    uint32_t fp;                    /* high half of the hash; its low bits pick the slot */
    uint32_t off;
} dslot_t;

struct lg_domset {
    char    *buf;                   /* owned */
    size_t   blen, bcap;
    dslot_t *slots;                 /* owned; cap a power of 2, at most 3/4 full */
    size_t   cap, n;
    char   **src;                   /* owned array of owned strings */
    size_t   nsrc, capsrc;
};

#define DH_SEED  0x9e3779b97f4a7c15ull
#define DH_PRIME 0x100000001b3ull

static inline uint64_t dh_step(uint64_t h, unsigned char c)
{
    return (h ^ c) * DH_PRIME;
}

static inline uint64_t dh_final(uint64_t h)
{
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

/* The hash of a lower-case name, read from its end, as lookups see it. */
static uint64_t dh_name(const char *s, size_t len)
{
    uint64_t h = DH_SEED;
    for (size_t i = len; i-- > 0;)
        h = dh_step(h, (unsigned char)s[i]);
    return dh_final(h);
}

static const char *rec_name(const lg_domset_t *s, uint32_t off)
{
    return s->buf + off + 3;
}

static size_t rec_len(const lg_domset_t *s, uint32_t off)
{
    return (unsigned char)s->buf[off + 2];
}

static unsigned rec_src(const lg_domset_t *s, uint32_t off)
{
    return (unsigned char)s->buf[off] | (unsigned)(unsigned char)s->buf[off + 1] << 8;
}

/* The record of a name; name need not be lower case (ci: fold while comparing). */
static uint32_t ds_find(const lg_domset_t *s, uint64_t h, const char *name, size_t len, int ci)
{
    size_t mask = s->cap - 1;
    uint32_t fp = (uint32_t)(h >> 32);
    for (size_t i = fp & mask;; i = (i + 1) & mask) {
        const dslot_t *sl = &s->slots[i];
        if (sl->off == 0)
            return 0;
        if (sl->fp != fp || rec_len(s, sl->off) != len)
            continue;
        const char *r = rec_name(s, sl->off);
        size_t k = 0;
        if (ci) {
            while (k < len && lower((unsigned char)name[k]) == (unsigned char)r[k])
                k++;
        } else {
            k = memcmp(r, name, len) == 0 ? len : 0;
        }
        if (k == len)
            return sl->off;
    }
}

static void ds_place(dslot_t *slots, size_t cap, uint32_t fp, uint32_t off)
{
    size_t mask = cap - 1, i = fp & mask;
    while (slots[i].off != 0)
        i = (i + 1) & mask;
    slots[i].fp = fp;
    slots[i].off = off;
}

/* Makes room for `more` names at a load of at most 3/4 (rehashing needs only the slots). */
static int ds_reserve(lg_domset_t *s, size_t more)
{
    size_t cap = s->cap ? s->cap : 1024;
    while ((s->n + more) * 4 > cap * 3) {
        if (cap > ((size_t)1 << 31))
            return -1;
        cap *= 2;
    }
    if (cap == s->cap)
        return 0;
    dslot_t *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < s->cap; i++)
        if (s->slots[i].off != 0)
            ds_place(slots, cap, s->slots[i].fp, s->slots[i].off);
    free(s->slots);
    s->slots = slots;
    s->cap = cap;
    return 0;
}

lg_domset_t *lg_domset_new(void)
{
    lg_domset_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->bcap = 64 * 1024;
    s->buf = malloc(s->bcap);
    if (s->buf == NULL || ds_reserve(s, 1) < 0) {
        lg_domset_free(s);
        return NULL;
    }
    s->buf[0] = '\0';
    s->blen = 1;
    return s;
}

void lg_domset_free(lg_domset_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->nsrc; i++)
        free(s->src[i]);
    free(s->src);
    free(s->slots);
    free(s->buf);
    free(s);
}

size_t lg_domset_count(const lg_domset_t *s)
{
    return s->n;
}

size_t lg_domset_memory(const lg_domset_t *s)
{
    return sizeof(*s) + s->bcap + s->cap * sizeof(dslot_t) + s->capsrc * sizeof(char *);
}

/*
 * Lower case, without a trailing dot or a leading "*." or ".", checked
 * (see acl.h).  Returns the length written to key[NAME_MAX_LEN + 1], or -1.
 */
static int domain_normalize(const char *name, size_t len, char *key)
{
    if (len >= 2 && name[0] == '*' && name[1] == '.') {
        name += 2;
        len -= 2;
    } else if (len >= 1 && name[0] == '.') {
        name++;
        len--;
    }
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > NAME_MAX_LEN)
        return -1;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = lower((unsigned char)name[i]);
        if (c == '.') {
            if (label == 0)
                return -1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63)
                return -1;
        } else {
            return -1;
        }
        key[i] = (char)c;
    }
    if (label == 0)
        return -1;
    key[len] = '\0';
    return (int)len;
}

static int source_index(lg_domset_t *s, const char *source)
{
    if (source == NULL)
        source = "-";
    for (size_t i = s->nsrc; i-- > 0;)     /* usually the last one */
        if (strcmp(s->src[i], source) == 0)
            return (int)i;
    if (s->nsrc >= 65535)
        return -1;
    if (s->nsrc == s->capsrc) {
        size_t cap = s->capsrc ? s->capsrc * 2 : 8;
        char **v = realloc(s->src, cap * sizeof(*v));
        if (v == NULL)
            return -1;
        s->src = v;
        s->capsrc = cap;
    }
    char *copy = strdup(source);
    if (copy == NULL)
        return -1;
    s->src[s->nsrc] = copy;
    return (int)s->nsrc++;
}

int lg_domset_add(lg_domset_t *s, const char *name, size_t len, const char *source)
{
    char key[NAME_MAX_LEN + 1];
    int klen = domain_normalize(name, len, key);
    if (klen < 0)
        return -1;
    uint64_t h = dh_name(key, (size_t)klen);
    if (ds_find(s, h, key, (size_t)klen, 0) != 0)
        return 0;
    int si = source_index(s, source);
    if (si < 0)
        return -2;
    if (ds_reserve(s, 1) < 0)
        return -2;
    size_t need = 3 + (size_t)klen + 1;
    if (s->blen + need > UINT32_MAX)
        return -2;
    if (s->blen + need > s->bcap) {
        size_t cap = s->bcap * 2;
        while (cap < s->blen + need)
            cap *= 2;
        char *b = realloc(s->buf, cap);
        if (b == NULL)
            return -2;
        s->buf = b;
        s->bcap = cap;
    }
    uint32_t off = (uint32_t)s->blen;
    char *r = s->buf + off;
    r[0] = (char)(si & 0xff);
    r[1] = (char)(si >> 8);
    r[2] = (char)klen;
    memcpy(r + 3, key, (size_t)klen + 1);
    s->blen += need;
    ds_place(s->slots, s->cap, (uint32_t)(h >> 32), off);
    s->n++;
    return 1;
}

int lg_domset_match(const lg_domset_t *s, const char *name, size_t len, lg_domset_hit_t *hit)
{
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || s->n == 0)
        return 0;
    uint64_t h = DH_SEED;
    uint32_t best = 0;
    for (size_t i = len; i-- > 0;) {
        h = dh_step(h, lower((unsigned char)name[i]));
        if ((i == 0 || name[i - 1] == '.') && len - i <= NAME_MAX_LEN) {
            uint32_t off = ds_find(s, dh_final(h), name + i, len - i, 1);
            if (off != 0)
                best = off;         /* later hits are longer */
        }
    }
    if (best == 0)
        return 0;
    if (hit != NULL) {
        hit->rule = rec_name(s, best);
        hit->source = s->src[rec_src(s, best)];
    }
    return 1;
}

/* ---- loading ---- */

static const char *const hosts_local_names[] = {
    "localhost", "localhost.localdomain", "local", "broadcasthost", "0.0.0.0",
    "ip6-localhost", "ip6-loopback", "ip6-localnet", "ip6-mcastprefix",
    "ip6-allnodes", "ip6-allrouters", "ip6-allhosts",
};

static int is_local_name(const char *t, size_t n)
{
    if (n > 0 && t[n - 1] == '.')
        n--;
    for (size_t i = 0; i < sizeof(hosts_local_names) / sizeof(hosts_local_names[0]); i++) {
        const char *l = hosts_local_names[i];
        if (strlen(l) == n && strncasecmp(l, t, n) == 0)
            return 1;
    }
    return 0;
}

/* An IPv4 or IPv6 address, with a "%zone" allowed as in hosts files. */
static int is_ip_token(const char *t, size_t n)
{
    char buf[INET6_ADDRSTRLEN + 1];
    unsigned char b[16];
    const char *pct = memchr(t, '%', n);
    if (pct != NULL)
        n = (size_t)(pct - t);
    if (n == 0 || n >= sizeof(buf))
        return 0;
    memcpy(buf, t, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, b) == 1 || inet_pton(AF_INET6, buf, b) == 1;
}

typedef struct loader {
    lg_domset_t       *s;
    const char        *source;
    lg_domset_stats_t *st;
    char               bad[84];     /* the first invalid entry, printable */
    const char        *bad_what;
} loader_t;

static void note_bad(loader_t *L, size_t line, const char *what, const char *t, size_t n)
{
    L->st->invalid++;
    if (L->st->first_bad_line != 0)
        return;
    L->st->first_bad_line = line;
    L->bad_what = what;
    size_t k = n < 80 ? n : 80;
    for (size_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)t[i];
        L->bad[i] = c >= 0x20 && c < 0x7f && c != '"' ? (char)c : '?';
    }
    L->bad[k] = '\0';
}

/* 0, or -1 when out of memory. */
static int add_token(loader_t *L, size_t line, const char *t, size_t n)
{
    switch (lg_domset_add(L->s, t, n, L->source)) {
    case 1:  L->st->added++; return 0;
    case 0:  L->st->duplicates++; return 0;
    case -1: note_bad(L, line, "name", t, n); return 0;
    default: return -1;
    }
}

int lg_domset_load_mem(lg_domset_t *s, const char *buf, size_t len, const char *source,
                       lg_domset_format_t fmt, lg_domset_stats_t *st, char *err, size_t errlen)
{
    lg_domset_stats_t dummy;
    loader_t L = { .s = s, .source = source, .st = st ? st : &dummy };
    memset(L.st, 0, sizeof(*L.st));
    if (errlen > 0)
        err[0] = '\0';

    /* one slot per line at most: size the table once */
    size_t nl = 1;
    for (const char *q = buf; (q = memchr(q, '\n', (size_t)(buf + len - q))) != NULL; q++)
        nl++;
    if (ds_reserve(s, nl) < 0) {
        snprintf(err, errlen, "%s: out of memory", source);
        return -1;
    }

    const char *p = buf, *end = buf + len;
    size_t line = 0;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *next = eol ? eol + 1 : end;
        if (eol == NULL)
            eol = end;
        line++;
        const char *hash = memchr(p, '#', (size_t)(eol - p));
        if (hash != NULL)
            eol = hash;

        /* up to the first two tokens; the rest are read on demand */
        const char *t1 = p, *t2;
        while (t1 < eol && is_space((unsigned char)*t1))
            t1++;
        if (t1 == eol) {
            p = next;
            continue;
        }
        const char *e1 = t1;
        while (e1 < eol && !is_space((unsigned char)*e1))
            e1++;
        t2 = e1;
        while (t2 < eol && is_space((unsigned char)*t2))
            t2++;

        int hosts = 0;
        if (t2 == eol) {                    /* one token */
            if (fmt == LG_DOMSET_HOSTS)
                note_bad(&L, line, "hosts line", t1, (size_t)(eol - t1));
            else if (add_token(&L, line, t1, (size_t)(e1 - t1)) < 0)
                goto nomem;
        } else if (fmt == LG_DOMSET_PLAIN || !is_ip_token(t1, (size_t)(e1 - t1))) {
            note_bad(&L, line, fmt == LG_DOMSET_HOSTS ? "hosts line" : "line",
                     t1, (size_t)(eol - t1));
        } else {
            hosts = 1;
        }
        if (hosts) {
            const char *t = t2;
            while (t < eol) {
                const char *e = t;
                while (e < eol && !is_space((unsigned char)*e))
                    e++;
                if (is_local_name(t, (size_t)(e - t)))
                    L.st->skipped++;
                else if (add_token(&L, line, t, (size_t)(e - t)) < 0)
                    goto nomem;
                t = e;
                while (t < eol && is_space((unsigned char)*t))
                    t++;
            }
        }
        p = next;
    }
    L.st->lines = line;
    if (s->bcap - s->blen > s->blen / 4) {  /* give back what doubling left over */
        char *b = realloc(s->buf, s->blen);
        if (b != NULL) {
            s->buf = b;
            s->bcap = s->blen;
        }
    }
    if (L.st->invalid > 0)
        snprintf(err, errlen, "%s:%zu: invalid %s \"%s\" (%zu invalid entr%s skipped)",
                 source, L.st->first_bad_line, L.bad_what, L.bad, L.st->invalid,
                 L.st->invalid == 1 ? "y" : "ies");
    return 0;

nomem:
    L.st->lines = line;
    snprintf(err, errlen, "%s:%zu: out of memory", source, line);
    return -1;
}

int lg_domset_load(lg_domset_t *s, const char *path, lg_domset_format_t fmt,
                   lg_domset_stats_t *st, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_file(path, &len, err, errlen);
    if (buf == NULL) {
        if (st != NULL)
            memset(st, 0, sizeof(*st));
        return -1;
    }
    int rc = lg_domset_load_mem(s, buf, len, path, fmt, st, err, errlen);
    free(buf);
    return rc;
}

/* ================================================================== */
/* URL regex filters                                                   */

struct lg_urlre {
    regex_t *re;                    /* owned array, each regcomp'd */
    char   **pat;                   /* owned array of owned strings */
    size_t   n, cap;
};

lg_urlre_t *lg_urlre_new(void)
{
    return calloc(1, sizeof(lg_urlre_t));
}

void lg_urlre_free(lg_urlre_t *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++) {
        regfree(&s->re[i]);
        free(s->pat[i]);
    }
    free(s->re);
    free(s->pat);
    free(s);
}

int lg_urlre_add(lg_urlre_t *s, const char *pattern, char *err, size_t errlen)
{
    if (s->n >= INT32_MAX) {
        snprintf(err, errlen, "too many patterns");
        return -1;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        regex_t *re = realloc(s->re, cap * sizeof(*re));
        if (re == NULL)
            goto nomem;
        s->re = re;
        char **pat = realloc(s->pat, cap * sizeof(*pat));
        if (pat == NULL)
            goto nomem;
        s->pat = pat;
        s->cap = cap;
    }
    char *copy = strdup(pattern);
    if (copy == NULL)
        goto nomem;
    int rc = regcomp(&s->re[s->n], pattern, REG_EXTENDED | REG_ICASE | REG_NOSUB);
    if (rc != 0) {
        char msg[200];
        regerror(rc, &s->re[s->n], msg, sizeof(msg));
        snprintf(err, errlen, "bad regular expression \"%s\": %s", pattern, msg);
        free(copy);
        return -1;
    }
    s->pat[s->n] = copy;
    return (int)s->n++;

nomem:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int lg_urlre_load(lg_urlre_t *s, const char *path, char *err, size_t errlen)
{
    size_t len;
    char *buf = read_file(path, &len, err, errlen);
    if (buf == NULL)
        return -1;
    int count = 0;
    size_t line = 0;
    (void)len;
    for (char *p = buf, *eol; p != NULL; p = eol ? eol + 1 : NULL) {
        eol = strchr(p, '\n');
        if (eol != NULL)
            *eol = '\0';
        line++;
        char *e = p + strlen(p);
        while (p < e && is_space((unsigned char)*p))
            p++;
        while (e > p && is_space((unsigned char)e[-1]))
            *--e = '\0';
        if (*p == '\0' || *p == '#')
            continue;
        char msg[512];
        if (lg_urlre_add(s, p, msg, sizeof(msg)) < 0) {
            snprintf(err, errlen, "%s:%zu: %s", path, line, msg);
            free(buf);
            return -1;
        }
        count++;
    }
    free(buf);
    return count;
}

int lg_urlre_match(const lg_urlre_t *s, const char *url, size_t len)
{
    for (size_t i = 0; i < s->n; i++) {
        regmatch_t m[1];
        m[0].rm_so = 0;
        m[0].rm_eo = (regoff_t)len;
        if (regexec(&s->re[i], url, 1, m, REG_STARTEND) == 0)
            return (int)i;
    }
    return -1;
}

const char *lg_urlre_pattern(const lg_urlre_t *s, int idx)
{
    return idx >= 0 && (size_t)idx < s->n ? s->pat[idx] : NULL;
}

size_t lg_urlre_count(const lg_urlre_t *s)
{
    return s->n;
}

/* ================================================================== */
/* port lists                                                          */

void lg_portset_clear(lg_portset_t *p)
{
    memset(p, 0, sizeof(*p));
}

static const char *port_number(const char *q, unsigned *out)
{
    unsigned v = 0;
    const char *start = q;
    while (*q >= '0' && *q <= '9' && q - start < 6)
        v = v * 10 + (unsigned)(*q++ - '0');
    if (q == start || (*q >= '0' && *q <= '9'))
        return NULL;
    *out = v;
    return q;
}

/* Parses text; with p, applies it.  0 or -1. */
static int portset_scan(lg_portset_t *p, const char *text, char *err, size_t errlen)
{
    const char *q = text;
    int items = 0;
    for (;;) {
        while (*q == ',' || is_space((unsigned char)*q))
            q++;
        if (*q == '\0')
            break;
        const char *item = q;
        unsigned lo, hi;
        q = port_number(q, &lo);
        if (q == NULL)
            goto bad;
        hi = lo;
        const char *r = q;
        while (*r == ' ' || *r == '\t')
            r++;
        if (*r == '-') {
            r++;
            while (*r == ' ' || *r == '\t')
                r++;
            q = port_number(r, &hi);
            if (q == NULL)
                goto bad;
        }
        if (*q != '\0' && *q != ',' && !is_space((unsigned char)*q))
            goto bad;
        if (lo == 0 || hi > 65535 || lo > hi) {
            snprintf(err, errlen, "bad port range \"%.*s\" (ports are 1..65535, low-high)",
                     (int)(q - item), item);
            return -1;
        }
        if (p != NULL)
            for (unsigned port = lo; port <= hi; port++)
                p->bits[port >> 6] |= 1ull << (port & 63);
        items++;
        continue;
bad:
        {
            size_t n = strcspn(item, ", \t\r\n");
            snprintf(err, errlen, "bad port \"%.*s\" in \"%s\"", (int)(n ? n : 1), item, text);
        }
        return -1;
    }
    if (items == 0) {
        snprintf(err, errlen, "empty port list");
        return -1;
    }
    return 0;
}

int lg_portset_parse(lg_portset_t *p, const char *text, char *err, size_t errlen)
{
    if (portset_scan(NULL, text, err, errlen) < 0)
        return -1;
    return portset_scan(p, text, err, errlen);
}
