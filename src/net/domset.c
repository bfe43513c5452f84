/*
 * Domain sets: blocklists of names (see acl.h for the contract).
 *
 * Names are hashed from their last character to their first, so a lookup
 * that walks the queried name from the right has the hash of every suffix
 * on the way, for one multiply per character; at each label boundary it
 * probes the table once.  The same walk over a listed name gives the hash
 * it was stored under.
 */
#include "net/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "net/text.h"

#define NAME_MAX_LEN 253

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
            while (k < len && lg_text_lower((unsigned char)name[k]) == (unsigned char)r[k])
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
        unsigned char c = lg_text_lower((unsigned char)name[i]);
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
        h = dh_step(h, lg_text_lower((unsigned char)name[i]));
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
        while (t1 < eol && lg_text_space((unsigned char)*t1))
            t1++;
        if (t1 == eol) {
            p = next;
            continue;
        }
        const char *e1 = t1;
        while (e1 < eol && !lg_text_space((unsigned char)*e1))
            e1++;
        t2 = e1;
        while (t2 < eol && lg_text_space((unsigned char)*t2))
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
                while (e < eol && !lg_text_space((unsigned char)*e))
                    e++;
                if (is_local_name(t, (size_t)(e - t)))
                    L.st->skipped++;
                else if (add_token(&L, line, t, (size_t)(e - t)) < 0)
                    goto nomem;
                t = e;
                while (t < eol && lg_text_space((unsigned char)*t))
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
    char *buf = lg_text_read_file(path, &len, err, errlen);
    if (buf == NULL) {
        if (st != NULL)
            memset(st, 0, sizeof(*st));
        return -1;
    }
    int rc = lg_domset_load_mem(s, buf, len, path, fmt, st, err, errlen);
    free(buf);
    return rc;
}
