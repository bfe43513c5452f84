/*
 * The strict JSON reader, base64url and the JWS splitter (see json.h).
 * Recursion is bounded by the caller's max_depth; every loop advances
 * through the input or the node array, both bounded.
 */
#include "net/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jp {
    const unsigned char *p, *end;
    lg_json_t  *j;
    size_t      max_nodes;
    int         max_depth;
    char       *sp;         /* next free byte of j->strs */
    const char *why;
} jp_t;

static void ws(jp_t *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r'))
        x->p++;
}

static int fail(jp_t *x, const char *why)
{
    if (x->why == NULL)
        x->why = why;
    return -1;
}

/* One UTF-8 sequence at x->p (first byte >= 0x80), well formed and shortest
 * (RFC 3629: no overlongs, no surrogates, at most U+10FFFF); its length, or 0. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f;
    } else
        return 0;
    if ((size_t)(end - p) < n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return n;
}

static int hex4(const unsigned char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

static void put_utf8(char **o, unsigned cp)
{
    unsigned char *q = (unsigned char *)*o;
    if (cp < 0x80) {
        *q++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *q++ = (unsigned char)(0xc0 | cp >> 6);
        *q++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        *q++ = (unsigned char)(0xe0 | cp >> 12);
        *q++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *q++ = (unsigned char)(0x80 | (cp & 0x3f));
    } else {
        *q++ = (unsigned char)(0xf0 | cp >> 18);
        *q++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
        *q++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        *q++ = (unsigned char)(0x80 | (cp & 0x3f));
    }
    *o = (char *)q;
}

/* A string at x->p (on the opening quote), decoded into x->sp.  The decoded
 * form plus its NUL is never longer than the source with its two quotes. */
static int string(jp_t *x, const char **s, size_t *n)
{
    x->p++;
    char *o = x->sp, *start = o;
    for (;;) {
        if (x->p >= x->end)
            return fail(x, "unterminated string");
        unsigned c = *x->p;
        if (c == '"') {
            x->p++;
            break;
        }
        if (c < 0x20)
            return fail(x, "control character in a string");
        if (c >= 0x80) {
            size_t k = utf8_len(x->p, x->end);
            if (k == 0)
                return fail(x, "invalid UTF-8");
            memcpy(o, x->p, k);
            o += k;
            x->p += k;
            continue;
        }
        if (c != '\\') {
            *o++ = (char)c;
            x->p++;
            continue;
        }
        if (x->end - x->p < 2)
            return fail(x, "unterminated string");
        c = x->p[1];
        x->p += 2;
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            if (x->end - x->p < 4 || hex4(x->p, &cp) < 0)
                return fail(x, "bad \\u escape");
            x->p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff)
                return fail(x, "lone low surrogate");
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (x->end - x->p < 6 || x->p[0] != '\\' || x->p[1] != 'u' ||
                    hex4(x->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
                    return fail(x, "lone high surrogate");
                x->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            if (cp == 0)
                return fail(x, "\\u0000 in a string");
            put_utf8(&o, cp);
            break;
        }
        default:
            return fail(x, "bad escape");
        }
    }
    *o++ = '\0';
    *s = start;
    *n = (size_t)(o - start - 1);
    x->sp = o;
    return 0;
}

/* RFC 8259's number grammar, exactly (no '+', no leading zeros, no bare '.'). */
static int number(jp_t *x, lg_json_node_t *nd)
{
    const unsigned char *b = x->p, *p = x->p, *e = x->end;
    if (p < e && *p == '-')
        p++;
    if (p < e && *p == '0')
        p++;
    else if (p < e && *p >= '1' && *p <= '9')
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    else
        return fail(x, "bad number");
    if (p < e && *p == '.') {
        p++;
        if (p >= e || *p < '0' || *p > '9')
            return fail(x, "bad number");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        if (p >= e || *p < '0' || *p > '9')
            return fail(x, "bad number");
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    }
    size_t n = (size_t)(p - b);
    memcpy(x->sp, b, n);
    x->sp[n] = '\0';
    nd->s = x->sp;
    nd->n = n;
    nd->num = strtod(x->sp, NULL);      /* the grammar above is a subset of strtod's */
    x->sp += n + 1;
    x->p = p;
    return 0;
}

static int lit(jp_t *x, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(x->end - x->p) < n || memcmp(x->p, w, n) != 0)
        return fail(x, "unexpected character");
    x->p += n;
    return 0;
}

static int value(jp_t *x, int depth, const char *key, size_t keylen)
{
    lg_json_t *j = x->j;
    ws(x);
    if (x->p >= x->end)
        return fail(x, "unexpected end");
    if (j->n >= x->max_nodes)
        return fail(x, "too many values");
    size_t me = j->n++;
    lg_json_node_t *nd = &j->nodes[me];
    memset(nd, 0, sizeof(*nd));
    nd->key = key;
    nd->keylen = keylen;
    unsigned c = *x->p;
    switch (c) {
    case '{':
    case '[': {
        if (depth >= x->max_depth)
            return fail(x, "nested too deeply");
        int obj = c == '{';
        nd->type = obj ? LG_JSON_OBJECT : LG_JSON_ARRAY;
        x->p++;
        ws(x);
        if (x->p < x->end && *x->p == (obj ? '}' : ']')) {
            x->p++;
            break;
        }
        for (;;) {
            const char *k = NULL;
            size_t kn = 0;
            if (obj) {
                ws(x);
                if (x->p >= x->end || *x->p != '"')
                    return fail(x, "expected a member name");
                if (string(x, &k, &kn) < 0)
                    return -1;
                /* duplicate names: refused, so no reader can take the other one */
                for (size_t i = me + 1; i < j->n; i = j->nodes[i].next)
                    if (j->nodes[i].keylen == kn && memcmp(j->nodes[i].key, k, kn) == 0)
                        return fail(x, "duplicate member name");
                ws(x);
                if (x->p >= x->end || *x->p != ':')
                    return fail(x, "expected ':'");
                x->p++;
            }
            if (value(x, depth + 1, k, kn) < 0)
                return -1;
            j->nodes[me].nkids++;
            ws(x);
            if (x->p < x->end && *x->p == ',') {
                x->p++;
                continue;
            }
            if (x->p < x->end && *x->p == (obj ? '}' : ']')) {
                x->p++;
                break;
            }
            return fail(x, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        break;
    }
    case '"':
        nd->type = LG_JSON_STRING;
        if (string(x, &nd->s, &nd->n) < 0)
            return -1;
        break;
    case 't':
        nd->type = LG_JSON_TRUE;
        if (lit(x, "true") < 0)
            return -1;
        break;
    case 'f':
        nd->type = LG_JSON_FALSE;
        if (lit(x, "false") < 0)
            return -1;
        break;
    case 'n':
        nd->type = LG_JSON_NULL;
        if (lit(x, "null") < 0)
            return -1;
        break;
    default:
        nd->type = LG_JSON_NUMBER;
        if (number(x, nd) < 0)
            return -1;
        break;
    }
    j->nodes[me].next = j->n;
    return 0;
}

int lg_json_parse(lg_json_t *j, const char *text, size_t len, size_t max_nodes, int max_depth,
                  char *err, size_t errlen)
{
    memset(j, 0, sizeof(*j));
    if (max_nodes == 0)
        max_nodes = 1;
    j->nodes = malloc(max_nodes * sizeof(*j->nodes));
    /* strings and numbers: decoded + NUL <= source + 1 each, see string() */
    j->strs = malloc(len + max_nodes + 1);
    if (j->nodes == NULL || j->strs == NULL) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    jp_t x = { (const unsigned char *)text, (const unsigned char *)text + len, j, max_nodes,
               max_depth, j->strs, NULL };
    int rc = value(&x, 0, NULL, 0);
    if (rc == 0) {
        ws(&x);
        if (x.p != x.end)
            rc = fail(&x, "data after the value");
    }
    if (rc < 0 && err && errlen)
        snprintf(err, errlen, "%s at byte %zu", x.why, (size_t)(x.p - (const unsigned char *)text));
    return rc;
}

void lg_json_free(lg_json_t *j)
{
    free(j->nodes);
    free(j->strs);
    memset(j, 0, sizeof(*j));
}

const lg_json_node_t *lg_json_get(const lg_json_t *j, size_t obj, const char *key)
{
    if (obj >= j->n || j->nodes[obj].type != LG_JSON_OBJECT)
        return NULL;
    size_t kn = strlen(key);
    for (size_t i = obj + 1; i < j->nodes[obj].next; i = j->nodes[i].next)
        if (j->nodes[i].keylen == kn && memcmp(j->nodes[i].key, key, kn) == 0)
            return &j->nodes[i];
    return NULL;
}

/* ---- base64url ---- */

static const char b64u[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64u_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long lg_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap)
{
    if (len % 4 == 1)
        return -1;
    size_t need = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    if (need > outcap || need > (size_t)0x7fffffff)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64u_val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6 | (unsigned)v) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (bits && (acc & ((1u << bits) - 1)))
        return -1;                      /* not the canonical spelling */
    return (long)o;
}

size_t lg_b64url_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

void lg_b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64u[v >> 18];
        out[o++] = b64u[(v >> 12) & 63];
        out[o++] = b64u[(v >> 6) & 63];
        out[o++] = b64u[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64u[v >> 18];
        out[o++] = b64u[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64u[v >> 18];
        out[o++] = b64u[(v >> 12) & 63];
        out[o++] = b64u[(v >> 6) & 63];
    }
    out[o] = '\0';
}

/* ---- compact JWS ---- */

/* A token's header or payload: small documents, so small bounds. */
#define JWS_NODES 256
#define JWS_DEPTH 8

static int part_json(lg_json_t *j, const char *p, size_t n, const char **why, const char *what)
{
    unsigned char *buf = malloc(n / 4 * 3 + 3);
    if (buf == NULL) {
        *why = "out of memory";
        return -1;
    }
    long k = lg_b64url_decode(p, n, buf, n / 4 * 3 + 3);
    if (k < 0) {
        free(buf);
        *why = what[0] == 'h' ? "header is not base64url" : "payload is not base64url";
        return -1;
    }
    int rc = lg_json_parse(j, (const char *)buf, (size_t)k, JWS_NODES, JWS_DEPTH, NULL, 0);
    free(buf);
    if (rc < 0 || j->nodes[0].type != LG_JSON_OBJECT) {
        *why = what[0] == 'h' ? "header is not a JSON object" : "payload is not a JSON object";
        return -1;
    }
    return 0;
}

int lg_jws_decode(lg_jws_t *t, const char *tok, size_t len, const char **why)
{
    memset(t, 0, sizeof(*t));
    if (len > LG_JWS_MAX_TOKEN) {
        *why = "token too long";
        return -1;
    }
    const char *d1 = memchr(tok, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok)) : NULL;
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)) != NULL) {
        *why = "not three dot-separated parts";
        return -1;
    }
    if (part_json(&t->header, tok, (size_t)(d1 - tok), why, "header") < 0 ||
        part_json(&t->payload, d1 + 1, (size_t)(d2 - d1 - 1), why, "payload") < 0) {
        lg_jws_free(t);
        return -1;
    }
    size_t sn = len - (size_t)(d2 + 1 - tok);
    if ((t->sig = malloc(sn / 4 * 3 + 3)) == NULL) {
        *why = "out of memory";
        lg_jws_free(t);
        return -1;
    }
    long k = lg_b64url_decode(d2 + 1, sn, t->sig, sn / 4 * 3 + 3);
    if (k < 0) {
        *why = "signature is not base64url";
        lg_jws_free(t);
        return -1;
    }
    t->siglen = (size_t)k;
    t->signed_len = (size_t)(d2 - tok);
    return 0;
}

void lg_jws_free(lg_jws_t *t)
{
    lg_json_free(&t->header);
    lg_json_free(&t->payload);
    free(t->sig);
    t->sig = NULL;
}
