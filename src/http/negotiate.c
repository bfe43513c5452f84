/*
 * Accept-Encoding negotiation; the rules are listed in accept.h.
 *
 * Preferences are compared as ranks, twice the q-value in thousandths, so
 * that an identity which is acceptable without being listed can rank 1: above
 * "not acceptable" (0) and below every listed q > 0 (at least 2).
 */
#include "http/negotiate.h"

#include <string.h>

#define Q_UNLISTED (-1)

/* Tie order: the best compressor first. */
static const lg_enc_t enc_order[] = { LG_ENC_ZSTD, LG_ENC_BR, LG_ENC_GZIP };
#define ENC_ORDER_N (sizeof(enc_order) / sizeof(enc_order[0]))

static const struct {
    const char *name;
    size_t      len;
    lg_enc_t    enc;
} enc_names[] = {
    { "gzip",     4, LG_ENC_GZIP },
    { "x-gzip",   6, LG_ENC_GZIP },
    { "br",       2, LG_ENC_BR },
    { "zstd",     4, LG_ENC_ZSTD },
    { "identity", 8, LG_ENC_IDENTITY },
};

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* RFC 9110 5.6.2 tchar */
static int is_tchar(char ch)
{
    unsigned char u = (unsigned char)ch;

    if ((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') ||
        (u >= '0' && u <= '9'))
        return 1;
    return u != 0 && strchr("!#$%&'*+-.^_`|~", u) != NULL;
}

static char lower(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

static int token_eq(const char *s, size_t n, const char *lit, size_t lit_len)
{
    if (n != lit_len)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower(s[i]) != lit[i])
            return 0;
    return 1;
}

/*
 * qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), exactly
 * (RFC 9110 12.4.2).  Returns thousandths, or -1 if s[0..n) is not one.
 */
static int parse_qvalue(const char *s, size_t n)
{
    if (n == 0 || n > 5 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.')
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++) {
        if (s[i] < '0' || s[i] > '9' || (q == 1000 && s[i] != '0'))
            return -1;
        q += (s[i] - '0') * scale;
        scale /= 10;
    }
    return q;
}

/*
 * One list element s[0..n), OWS already trimmed from both ends and n > 0.
 * Records its q, or drops it if it does not match the grammar.
 */
static void accept_element(lg_accept_t *ae, const char *s, size_t n)
{
    size_t i = 0;

    while (i < n && is_tchar(s[i]))
        i++;
    size_t tok_len = i;
    if (tok_len == 0)
        return;

    int q = 1000;
    if (i < n) {
        while (i < n && is_ows(s[i]))
            i++;
        if (i == n || s[i] != ';')
            return;
        i++;
        while (i < n && is_ows(s[i]))
            i++;
        if (n - i < 2 || lower(s[i]) != 'q' || s[i + 1] != '=')
            return;
        q = parse_qvalue(s + i + 2, n - i - 2);
        if (q < 0)
            return;
    }

    int16_t *slot = NULL;
    if (tok_len == 1 && s[0] == '*') {
        slot = &ae->star;
    } else {
        for (size_t k = 0; k < sizeof(enc_names) / sizeof(enc_names[0]); k++)
            if (token_eq(s, tok_len, enc_names[k].name, enc_names[k].len)) {
                slot = &ae->q[enc_names[k].enc];
                break;
            }
    }
    if (slot == NULL)
        return;                 /* deflate, compress, unknown: ignored */
    if (*slot == Q_UNLISTED || q < *slot)
        *slot = (int16_t)q;
}

void lg_negotiate_init(lg_accept_t *ae)
{
    ae->present = 0;
    for (int e = 0; e < LG_ENC_COUNT; e++)
        ae->q[e] = Q_UNLISTED;
    ae->star = Q_UNLISTED;
}

void lg_negotiate_add(lg_accept_t *ae, const char *value, size_t len)
{
    ae->present = 1;
    if (len == 0)
        return;                 /* empty: identity only */

    const char *p = value, *end = value + len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *e = comma ? comma : end;
        const char *s = p;

        while (s < e && is_ows(*s))
            s++;
        const char *t = e;
        while (t > s && is_ows(t[-1]))
            t--;
        if (t > s)
            accept_element(ae, s, (size_t)(t - s));
        p = comma ? comma + 1 : end;
    }
}

/* Rank of coding e (see the top of the file); 0 = not acceptable. */
static int accept_rank(const lg_accept_t *ae, lg_enc_t e)
{
    if (e < 0 || e >= LG_ENC_COUNT)
        return 0;
    if (ae->q[e] != Q_UNLISTED)
        return 2 * ae->q[e];
    if (e == LG_ENC_IDENTITY)
        return ae->star == 0 ? 0 : 1;
    return ae->star > 0 ? 2 * ae->star : 0;
}

int lg_negotiate_ok(const lg_accept_t *ae, lg_enc_t e)
{
    if (e < 0 || e >= LG_ENC_COUNT)
        return 0;
    return !ae->present || accept_rank(ae, e) > 0;
}

lg_enc_t lg_negotiate_pick(const lg_accept_t *ae, unsigned available)
{
    if (!ae->present)
        return LG_ENC_IDENTITY;

    lg_enc_t best = LG_ENC_NONE;
    int best_rank = 0;
    for (size_t k = 0; k < ENC_ORDER_N; k++) {
        lg_enc_t e = enc_order[k];
        int r = accept_rank(ae, e);
        if ((available & LG_ENC_BIT(e)) && r > best_rank) {
            best = e;
            best_rank = r;
        }
    }
    /* strictly greater: a coding wins a tie with identity */
    if (accept_rank(ae, LG_ENC_IDENTITY) > best_rank)
        best = LG_ENC_IDENTITY;
    return best;
}

size_t lg_negotiate_normalise(const lg_accept_t *ae, unsigned codings, char *out,
                           size_t out_len)
{
    lg_enc_t list[ENC_ORDER_N];
    int rank[ENC_ORDER_N];
    size_t n = 0;

    if (ae->present) {
        int id_rank = accept_rank(ae, LG_ENC_IDENTITY);
        /* insertion sort, stable: equal ranks keep the tie order */
        for (size_t k = 0; k < ENC_ORDER_N; k++) {
            lg_enc_t e = enc_order[k];
            int r = accept_rank(ae, e);
            if (!(codings & LG_ENC_BIT(e)) || r == 0 || r < id_rank)
                continue;       /* never chosen: identity would win */
            size_t j = n++;
            while (j > 0 && rank[j - 1] < r) {
                list[j] = list[j - 1];
                rank[j] = rank[j - 1];
                j--;
            }
            list[j] = e;
            rank[j] = r;
        }
    }

    char tmp[LG_ACCEPT_NORM_SIZE];
    size_t len = 0;
    for (size_t k = 0; k < n; k++) {
        const char *name = lg_enc_name(list[k]);
        size_t nl = strlen(name);
        if (k)
            tmp[len++] = ',';
        memcpy(tmp + len, name, nl);
        len += nl;
    }
    if (out_len) {
        size_t c = len < out_len - 1 ? len : out_len - 1;
        memcpy(out, tmp, c);
        out[c] = '\0';
    }
    return len;
}

lg_enc_t lg_negotiate_choose(const char *value, size_t len, unsigned available)
{
    lg_accept_t ae;

    lg_negotiate_init(&ae);
    if (value)
        lg_negotiate_add(&ae, value, len);
    return lg_negotiate_pick(&ae, available);
}

int lg_negotiate_gzip(const char *value, size_t len)
{
    lg_accept_t ae;

    lg_negotiate_init(&ae);
    if (value)
        lg_negotiate_add(&ae, value, len);
    return lg_negotiate_ok(&ae, LG_ENC_GZIP);
}

const char *lg_enc_name(lg_enc_t e)
{
    switch (e) {
    case LG_ENC_NONE:     return "none";
    case LG_ENC_IDENTITY: return "identity";
    case LG_ENC_GZIP:     return "gzip";
    case LG_ENC_BR:       return "br";
    case LG_ENC_ZSTD:     return "zstd";
    }
    return "?";
}
