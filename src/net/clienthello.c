/*
 * The ClientHello reader (see clienthello.h).  RFC 8446 4.1.2 (the hello),
 * 5.1 (records: a handshake message may span records), RFC 6066 3 (SNI),
 * RFC 7301 3.1 (ALPN).
 *
 * Two passes over what arrived: gather the handshake bytes from the
 * records (stopping at the first incomplete one), then read the hello if
 * it is all there.  Every length is checked against what holds it before
 * it is used.
 */
#include "net/clienthello.h"

#include <string.h>

#define REC_HANDSHAKE  22
#define HS_CLIENTHELLO 1
#define EXT_SNI        0
#define EXT_ALPN       16
#define REC_MAX        (16384 + 2048)   /* TLSCiphertext bound; a plaintext record is 2^14 */

static unsigned get16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }

/* A reader over [p, end): each take fails (returns NULL) instead of passing end. */
typedef struct rd {
    const unsigned char *p, *end;
} rd_t;

static const unsigned char *take(rd_t *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n)
        return NULL;
    const unsigned char *q = r->p;
    r->p += n;
    return q;
}

/* A vector with a 1- or 2-byte length in front: *out is its contents. */
static int take_vec(rd_t *r, int lenbytes, rd_t *out)
{
    const unsigned char *l = take(r, (size_t)lenbytes);
    if (l == NULL)
        return -1;
    size_t n = lenbytes == 1 ? l[0] : get16(l);
    const unsigned char *v = take(r, n);
    if (v == NULL)
        return -1;
    out->p = v;
    out->end = v + n;
    return 0;
}

static lg_ch_rc_t read_sni(rd_t e, lg_clienthello_t *out)
{
    rd_t list;
    if (take_vec(&e, 2, &list) < 0 || e.p != e.end || list.p == list.end)
        return LG_CH_MALFORMED;
    while (list.p < list.end) {
        const unsigned char *type = take(&list, 1);
        rd_t name;
        if (type == NULL || take_vec(&list, 2, &name) < 0)
            return LG_CH_MALFORMED;
        if (type[0] != 0 || out->has_sni)
            continue;           /* only the first host_name counts (RFC 6066: one of a type) */
        size_t n = (size_t)(name.end - name.p);
        if (n == 0 || n >= sizeof(out->sni))
            return LG_CH_MALFORMED;
        for (size_t i = 0; i < n; i++) {
            unsigned char c = name.p[i];
            if (c <= 0x20 || c >= 0x7f)
                return LG_CH_MALFORMED;    /* a host name is ASCII (A-labels) */
            out->sni[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        if (n > 1 && out->sni[n - 1] == '.')
            n--;
        out->sni[n] = '\0';
        out->sni_len = n;
        out->has_sni = 1;
    }
    return LG_CH_OK;
}

static lg_ch_rc_t read_alpn(rd_t e, lg_clienthello_t *out)
{
    rd_t list;
    if (take_vec(&e, 2, &list) < 0 || e.p != e.end || list.p == list.end)
        return LG_CH_MALFORMED;
    out->has_alpn = 1;
    while (list.p < list.end) {
        rd_t name;
        if (take_vec(&list, 1, &name) < 0 || name.p == name.end)
            return LG_CH_MALFORMED;
        size_t n = (size_t)(name.end - name.p);
        if (out->alpn_len + 1 + n <= sizeof(out->alpn)) {  /* what does not fit is left out */
            out->alpn[out->alpn_len] = (unsigned char)n;
            memcpy(out->alpn + out->alpn_len + 1, name.p, n);
            out->alpn_len += 1 + n;
        }
    }
    return LG_CH_OK;
}

static lg_ch_rc_t read_hello(const unsigned char *h, size_t n, lg_clienthello_t *out)
{
    rd_t r = { h, h + n }, v;
    const unsigned char *ver = take(&r, 2);
    if (ver == NULL || take(&r, 32) == NULL)        /* random */
        return LG_CH_MALFORMED;
    out->version = (uint16_t)get16(ver);
    if (ver[0] != 3)
        return LG_CH_MALFORMED;
    if (take_vec(&r, 1, &v) < 0 || v.end - v.p > 32)                    /* session id */
        return LG_CH_MALFORMED;
    if (take_vec(&r, 2, &v) < 0 || v.p == v.end || (v.end - v.p) % 2)   /* cipher suites */
        return LG_CH_MALFORMED;
    if (take_vec(&r, 1, &v) < 0 || v.p == v.end)                        /* compression */
        return LG_CH_MALFORMED;
    if (r.p == r.end)
        return LG_CH_OK;        /* no extensions at all (an old client): no SNI, no ALPN */
    rd_t exts;
    if (take_vec(&r, 2, &exts) < 0 || r.p != r.end)
        return LG_CH_MALFORMED;
    int seen_sni = 0, seen_alpn = 0;
    while (exts.p < exts.end) {
        const unsigned char *type = take(&exts, 2);
        rd_t e;
        if (type == NULL || take_vec(&exts, 2, &e) < 0)
            return LG_CH_MALFORMED;
        unsigned t = get16(type);
        lg_ch_rc_t rc = LG_CH_OK;
        if (t == EXT_SNI) {
            if (seen_sni++)
                return LG_CH_MALFORMED;     /* RFC 8446 4.2: one of each type */
            rc = read_sni(e, out);
        } else if (t == EXT_ALPN) {
            if (seen_alpn++)
                return LG_CH_MALFORMED;
            rc = read_alpn(e, out);
        }
        if (rc != LG_CH_OK)
            return rc;
    }
    return LG_CH_OK;
}

lg_ch_rc_t lg_clienthello_parse(const unsigned char *p, size_t n, lg_clienthello_t *out)
{
    unsigned char hs[4 + LG_CLIENTHELLO_MAX];
    size_t have = 0, need = 0, off = 0;

    memset(out, 0, sizeof(*out));
    if (n >= 1 && p[0] != REC_HANDSHAKE)
        return LG_CH_NOT_TLS;
    if (n >= 2 && p[1] != 3)
        return LG_CH_NOT_TLS;               /* SSLv2 hellos and everything else */
    for (;;) {
        if (n - off < 5)
            return LG_CH_MORE;
        const unsigned char *rec = p + off;
        if (rec[0] != REC_HANDSHAKE || rec[1] != 3)
            return off == 0 ? LG_CH_NOT_TLS : LG_CH_MALFORMED;  /* the hello came first, whole? */
        size_t len = get16(rec + 3);
        if (len == 0 || len > REC_MAX)
            return LG_CH_MALFORMED;
        /* take what this record holds of the message, even if not all came */
        size_t avail = n - off - 5 < len ? n - off - 5 : len;
        size_t room = sizeof(hs) - have;
        size_t want = need ? 4 + need - have : room;
        size_t k = avail < want ? avail : want;
        if (k > room)
            return LG_CH_MALFORMED;
        memcpy(hs + have, rec + 5, k);
        have += k;
        size_t excess = 0;
        if (need == 0 && have >= 4) {
            if (hs[0] != HS_CLIENTHELLO)
                return LG_CH_MALFORMED;
            need = (size_t)hs[1] << 16 | (size_t)hs[2] << 8 | hs[3];
            if (need > LG_CLIENTHELLO_MAX || need < 38)
                return LG_CH_MALFORMED;
            if (have > 4 + need) {
                excess = have - (4 + need);     /* the record holds more than the hello */
                have = 4 + need;
            }
        }
        if (need && have >= 4 + need) {
            out->consumed = off + 5 + k - excess;
            return read_hello(hs + 4, need, out);
        }
        if (avail < len)
            return LG_CH_MORE;      /* this record is not all here yet */
        off += 5 + len;
    }
}

int lg_clienthello_alpn_next(const lg_clienthello_t *ch, size_t *pos, const char **name,
                             size_t *len)
{
    if (*pos >= ch->alpn_len)
        return 0;
    size_t l = ch->alpn[*pos];
    if (*pos + 1 + l > ch->alpn_len)
        return 0;
    *name = (const char *)ch->alpn + *pos + 1;
    *len = l;
    *pos += 1 + l;
    return 1;
}

int lg_clienthello_has_alpn(const lg_clienthello_t *ch, const char *name)
{
    size_t pos = 0, l, want = strlen(name);
    const char *p;
    while (lg_clienthello_alpn_next(ch, &pos, &p, &l))
        if (l == want && memcmp(p, name, l) == 0)
            return 1;
    return 0;
}

const char *lg_clienthello_rc_name(lg_ch_rc_t rc)
{
    switch (rc) {
    case LG_CH_MORE:      return "incomplete";
    case LG_CH_OK:        return "ClientHello";
    case LG_CH_NOT_TLS:   return "not TLS";
    case LG_CH_MALFORMED: return "malformed ClientHello";
    }
    return "?";
}
