/*
 * The HTTP cache on the proxy path (RFC 9111), on top of the shared store
 * (cache/store.c) and the rules of cache/policy.c.
 *
 *   request  -> PURGE? bypass? lookup:
 *               fresh hit         -> served here (304 / 206 / HEAD / gzip as asked)
 *               stale, validators -> conditional request upstream (304 refreshes)
 *               another worker is fetching it -> wait (collapsed forwarding)
 *               miss              -> upstream, and this worker fills the key
 *   response -> storable? capture the body as it streams to the client,
 *               store it when complete (never a truncated object)
 *   errors   -> stale-if-error serves the stale copy
 *   unsafe methods that succeed invalidate the URI, Location, Content-Location
 *
 * A response with Vary is stored under a variant key (the base key plus the
 * request's values of the varied fields, Accept-Encoding normalised), with
 * a small marker under the base key naming the fields.
 */
#include "cache/http.h"

#include "feature/coding.h"
#include "feature/metrics.h"
#include "pipeline/headers.h"
#include "core/event.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "cache/policy.h"
#include "http/date.h"
#include "cache/store.h"
#include "cache/disk.h"
#include "core/hash.h"
#include "core/log.h"
#include "net/acl.h"
#include "http/negotiate.h"
#include "http/codec.h"
#include "pipeline/vars.h"

lg_cache_t *lg_cache;           /* attached by the master before fork, or NULL */

#define VARY_MARK "LEGATE-VARY:"

/* The request's view of the cache lives in its context slot. */
static int cache_slot;
#define CS(s) ((lg_cstate_t *)(s)->ctx[cache_slot])

static const lg_stage_t wait_stage;

typedef struct lg_cstate {
    const char *base;           /* arena, or the configuration's: the base key */
    size_t      baselen;
    const char *key;            /* the key in use (variant or base) */
    size_t      keylen;
    int         filler;         /* we hold the FILLING mark of base */
    const char *status;         /* X-Cache */
    char       *obj;            /* malloc: a stored object (stale, kept for 304 / errors) */
    size_t      hl, bl;
    lg_cmeta_t  meta;
    int         reval;          /* a conditional request went upstream */
    int         stale_ok;       /* obj may serve on errors (stale-if-error) */
    char       *cap;            /* malloc: the body captured for storing */
    size_t      caplen, capmax;
    int         capturing, cap_over;
    char       *head;           /* malloc: the head to store */
    size_t      headlen;
    lg_cmeta_t  newmeta;
    char       *vary;           /* arena: the varied fields, or NULL */
    char       *out;            /* malloc: a response made here from the cache */
    lg_cc_t     req_cc;
    char       *also[2];        /* arena: Location, Content-Location of an unsafe request's answer */
    int         not_yet;        /* cache_min_uses not reached: fetch, do not store */
    int         counted;        /* this request's use is counted (once, not per wait) */
    int         gz_store;       /* store the body gzip-compressed (the route compresses) */
    int         range_up;       /* cache_partial: the client's Range went upstream */
    int         have_partial;   /* obj is a stored 206 that the answer may complete */
    int         use_stale;      /* obj is stale and may cover what cache_use_stale names */
    lg_disk_fill_t *dfill;      /* arena: the body goes to a file of the disk tier, or NULL */
    /* an answer from a file of the disk tier (disk_stage) */
    int         dfd;            /* -1 none (0 never: the state is calloc'd, see state()) */
    char       *dhead;          /* malloc: the head as stored */
    uint64_t    d_off, d_end;   /* the file bytes left to send */
    char       *dbuf;           /* malloc: one read of it */
    size_t      dpos, dlen;
    lg_req_t *s;            /* whose state this is */
} lg_cstate_t;

static void invalidate(lg_req_t *s, lg_cstate_t *cs);
static const char *conditional(lg_req_t *s, lg_cstate_t *cs);
static const char *key_of_uri(lg_req_t *s, const char *u);
static void drop_targeted(const lg_common_t *c, http_response_t *r);
static void forward_range(lg_req_t *s, lg_cstate_t *cs);
static int partial_covers(lg_req_t *s, lg_cstate_t *cs);
static void serve_partial(lg_req_t *s, lg_cstate_t *cs, http_response_t *r, const char *xcache);

/* The cache key template: a forward-proxy request keys on the absolute URI,
 * port included, unless cache_key was set to something else. */
static const lg_tpl_t *key_template(const lg_req_t *s, const lg_common_t *c)
{
    static const lg_tpl_t *forward;
    if (s->route != NULL || strcmp(c->cache_key->src, "$scheme://$host$request_uri") != 0)
        return c->cache_key;
    if (forward == NULL)
        forward = lg_vars_builtin("$scheme://$proxy_host$request_uri");
    return forward;
}

/* Header lines for the upstream request, after those earlier phases gave
 * (auth_request_set): 1, or 0 if there was nothing to add. */
static int upstream_add(lg_req_t *s, const char *lines)
{
    if (lines == NULL || lines[0] == '\0')
        return 0;
    const char *all = s->upstream_extra
                      ? lg_arena_printf(&s->arena, "%s%s", s->upstream_extra, lines) : lines;
    if (all == NULL)
        return 0;
    s->upstream_extra = all;
    return 1;
}

/* ---- keys ---- */

static int in_strv(const lg_strv_t *v, const char *name)
{
    for (size_t i = 0; v && i < v->n; i++)
        if (strcasecmp(v->v[i], name) == 0)
            return 1;
    return 0;
}

static char *variant_key(lg_req_t *s, const char *base, const char *fields)
{
    char *k = lg_arena_printf(&s->arena, "%s\n", base);
    for (const char *p = fields; k && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, " ,");
        if (n == 0)
            break;
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)(n < 63 ? n : 63), p);
        const http_header_t *h = lg_headers_get(s, name);
        char val[256] = "";
        if (strcasecmp(name, "accept-encoding") == 0) {
            lg_accept_t ae;
            lg_negotiate_init(&ae);
            if (h)
                lg_negotiate_add(&ae, h->value, h->value_len);
            lg_negotiate_normalise(&ae, LG_ENC_BUILTIN, val, sizeof(val));
        } else if (h && in_strv(lg_req_common(s)->cache_vary_normalize, name)) {
            lg_vary_normalise(h->value, h->value_len, val, sizeof(val));
        } else if (h) {
            snprintf(val, sizeof(val), "%.*s", (int)(h->value_len < 255 ? h->value_len : 255),
                     h->value);
        }
        k = lg_arena_printf(&s->arena, "%s%s=%s\n", k, name, val);
        p += n;
    }
    return k;
}

/* ---- serving from the cache ---- */

static int etag_match(const char *list, size_t ln, const char *etag, size_t en)
{
    /* weak comparison (RFC 9110 13.1.2): W/ prefixes do not matter */
    if (en >= 2 && etag[0] == 'W' && etag[1] == '/') {
        etag += 2;
        en -= 2;
    }
    if (ln == 1 && list[0] == '*')
        return 1;
    size_t i = 0;
    while (i < ln) {
        while (i < ln && (list[i] == ' ' || list[i] == ','))
            i++;
        size_t s = i;
        if (i + 1 < ln && list[i] == 'W' && list[i + 1] == '/') {
            i += 2;
            s = i;
        }
        while (i < ln && list[i] != ',')
            i++;
        size_t e = i;
        while (e > s && list[e - 1] == ' ')
            e--;
        if (e - s == en && memcmp(list + s, etag, en) == 0)
            return 1;
    }
    return 0;
}

static const http_header_t *find_h(const http_response_t *r, const char *name)
{
    for (size_t i = 0; i < r->num_headers; i++)
        if (http_name_eq(&r->headers[i], name))
            return &r->headers[i];
    return NULL;
}

/*
 * The client's ranges of a representation of len bytes (lg_range_parse,
 * at most cache_max_ranges of them): n >= 1 in *rs (arena), 0 none (or
 * to be ignored: the whole is sent), -1 unsatisfiable.
 */
static int client_ranges(lg_req_t *s, int64_t len, lg_range_t **rs)
{
    const http_header_t *h = lg_headers_get(s, "range");
    int max = lg_req_common(s)->cache_max_ranges;
    if (h == NULL || max <= 0)
        return 0;
    if (max > LG_RANGES_LIMIT)
        max = LG_RANGES_LIMIT;
    lg_range_t *out = lg_arena_alloc(&s->arena, sizeof(lg_range_t) * (size_t)max);
    if (out == NULL)
        return 0;
    *rs = out;
    return lg_range_parse(h->value, h->value_len, len, out, max);
}

/*
 * If-Range (RFC 9110 13.1.5): the Range applies only to the representation
 * the client already has part of -- an entity tag that matches the stored
 * one strongly, or a date equal to its Last-Modified.  Otherwise the whole.
 */
static int if_range_holds(lg_req_t *s, const http_header_t *etag, const http_header_t *lm)
{
    const http_header_t *ir = lg_headers_get(s, "if-range");
    if (ir == NULL)
        return 1;
    if (ir->value_len && (ir->value[0] == '"' || ir->value[0] == 'W'))
        return ir->value[0] == '"' && etag && etag->value_len == ir->value_len &&
               etag->value[0] == '"' && memcmp(etag->value, ir->value, ir->value_len) == 0;
    return lm && lm->value_len == ir->value_len &&
           memcmp(lm->value, ir->value, ir->value_len) == 0 &&
           lg_http_date(ir->value, ir->value_len) >= 0;
}

/*
 * A multipart/byteranges body (RFC 9110 14.6) with the ranges rs[n] of a
 * representation of `complete` bytes, whose bytes from `first` on are at
 * `bytes`; each part says the Content-Type ct (or none).  malloc'd, *outlen.
 */
static char *multipart(const char *bytes, int64_t first, int64_t complete, const lg_range_t *rs,
                       int n, const http_header_t *ct, const char *boundary, size_t *outlen)
{
    size_t bl = strlen(boundary), room = bl + 8;
    for (int i = 0; i < n; i++)
        room += bl + 8 + (ct ? ct->value_len + 16 : 0) + 80 + (size_t)(rs[i].to - rs[i].from + 1);
    char *out = malloc(room);
    if (out == NULL)
        return NULL;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        k += (size_t)snprintf(out + k, room - k, "--%s\r\n", boundary);
        if (ct)
            k += (size_t)snprintf(out + k, room - k, "Content-Type: %.*s\r\n", (int)ct->value_len,
                                  ct->value);
        k += (size_t)snprintf(out + k, room - k, "Content-Range: bytes %lld-%lld/%lld\r\n\r\n",
                              (long long)rs[i].from, (long long)rs[i].to, (long long)complete);
        size_t len = (size_t)(rs[i].to - rs[i].from + 1);
        memcpy(out + k, bytes + (rs[i].from - first), len);
        k += len;
        memcpy(out + k, "\r\n", 2);
        k += 2;
    }
    k += (size_t)snprintf(out + k, room - k, "--%s--\r\n", boundary);
    *outlen = k;
    return out;
}

/*
 * The head of a multipart answer: its Content-Type names the boundary
 * (replacing the representation's, which each part carries).  The old
 * field in *ct; 0, or -1 when there is no room for the field.
 */
static int multipart_type(lg_req_t *s, http_response_t *r, const http_header_t **ct,
                          char *boundary, size_t blen)
{
    snprintf(boundary, blen, "legate-%016llx",
             (unsigned long long)lg_rand_next(&lg_w.rng));
    const char *v = lg_arena_printf(&s->arena, "multipart/byteranges; boundary=%s", boundary);
    if (v == NULL)
        return -1;
    *ct = NULL;
    for (size_t i = 0; i < r->num_headers; i++)
        if (http_name_eq(&r->headers[i], "content-type")) {
            http_header_t *old = lg_arena_alloc(&s->arena, sizeof(*old));
            if (old == NULL)
                return -1;
            *old = r->headers[i];
            *ct = old;
            r->headers[i].value = v;
            r->headers[i].value_len = strlen(v);
            return 0;
        }
    if (r->num_headers >= LG_MAX_HEADERS)
        return -1;
    r->headers[r->num_headers].name = "Content-Type";
    r->headers[r->num_headers].name_len = 12;
    r->headers[r->num_headers].value = v;
    r->headers[r->num_headers].value_len = strlen(v);
    r->num_headers++;
    return 0;
}

/*
 * Answer from the stored object: a 304 for a matching conditional, a 206 for
 * one range or several (multipart/byteranges), HEAD without a body, gzip on
 * the fly if the client asks and the route compresses.  X-Cache says how,
 * Age how old.
 */
/* The whole body of an object stored compressed, for a client without gzip. */
static char *gunzip_all(lg_req_t *s, const char *in, size_t n, size_t out_len)
{
    lg_codec_t codec;
    lg_codec_params_t prm = { 0 };
    prm.max_out = out_len;
    char *out = malloc(out_len + 1);
    if (out == NULL || lg_codec_init(&codec, LG_CODEC_GZIP_DECODE, &prm, &s->arena) != 0) {
        free(out);
        return NULL;
    }
    size_t used = 0;
    ssize_t got = lg_codec_run(&codec, in, n, &used, out, out_len + 1, LG_CODEC_FINISH);
    lg_codec_end(&codec);
    if (got != (ssize_t)out_len || used != n) {
        free(out);
        return NULL;
    }
    return out;
}

/* The whole body compressed (gzip, br or zstd at the route's level), or NULL. */
static char *compress_all(lg_req_t *s, lg_xform_t xf, const char *in, size_t n,
                          size_t *out_len)
{
    const lg_common_t *c = lg_req_common(s);
    lg_codec_t codec;
    lg_codec_params_t prm = { 0 };
    prm.level = xf == LG_XFORM_BR ? (c->brotli_level ? c->brotli_level : -1)
              : xf == LG_XFORM_ZSTD ? c->zstd_level : c->gzip_level;
    prm.length_hint = n;
    lg_codec_kind_t kind = xf == LG_XFORM_BR ? LG_CODEC_BR_ENCODE
                         : xf == LG_XFORM_ZSTD ? LG_CODEC_ZSTD_ENCODE : LG_CODEC_GZIP_ENCODE;
    size_t room = n + n / 8 + 1024;
    char *out = malloc(room);
    if (out == NULL || lg_codec_init(&codec, kind, &prm, &s->arena) != 0) {
        free(out);
        return NULL;
    }
    size_t used = 0;
    ssize_t got = lg_codec_run(&codec, in, n, &used, out, room, LG_CODEC_FINISH);
    int done = codec.done;
    lg_codec_end(&codec);
    if (got <= 0 || !done || used != n) {
        free(out);
        return NULL;
    }
    *out_len = (size_t)got;
    return out;
}

static void serve(lg_req_t *s, lg_cstate_t *cs, const char *xcache)
{
    http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, cs->hl + 1, LG_MAX_HEADERS };
    size_t scanned = 0;
    if (hs == NULL || http_parse_response(cs->obj, cs->hl, &r, &lim, &scanned) <= 0) {
        lg_respond_error(s, 500);
        return;
    }
    drop_targeted(lg_req_common(s), &r);
    if (r.status == 206) {
        serve_partial(s, cs, &r, xcache);
        return;
    }
    const char *body = cs->obj + cs->hl;
    size_t blen = cs->bl;
    cs->s->cache_status = xcache;
    int64_t now = lg_wall_ms();
    s->cache_age = cs->meta.age0 + (now - cs->meta.stored) / 1000;
    if (s->cache_age < 0)
        s->cache_age = 0;

    /* client conditionals (RFC 9110 13.1) */
    const http_header_t *inm = lg_headers_get(s, "if-none-match");
    const http_header_t *ims = lg_headers_get(s, "if-modified-since");
    const http_header_t *etag = find_h(&r, "etag"), *lm = find_h(&r, "last-modified");
    /* stored compressed here: as is for gzip clients, gunzipped for the others
     * (and for ranges, which are about the identity bytes) */
    char *plain = NULL;
    int gzipped = (cs->meta.flags & LG_CF_GZIPPED) != 0, gunz = 0;
    if (gzipped) {
        const http_header_t *ae = lg_headers_get(s, "accept-encoding");
        int gz_ok = ae && lg_negotiate_choose(ae->value, ae->value_len, LG_ENC_BIT(LG_ENC_GZIP)) ==
                          LG_ENC_GZIP;
        if (!gz_ok || lg_headers_get(s, "range")) {
            plain = gunzip_all(s, body, blen, (size_t)cs->meta.identity_len);
            if (plain == NULL) {
                lg_error("cache: a stored object of \"%s\" does not decompress", cs->key);
                lg_respond_error(s, 500);
                return;
            }
            body = plain;
            blen = (size_t)cs->meta.identity_len;
            gunz = 1;
        }
    }
    size_t full = blen;                 /* for Content-Range */
    int not_modified = 0;
    if (inm && etag)
        not_modified = etag_match(inm->value, inm->value_len, etag->value, etag->value_len);
    else if (!inm && ims && lm && r.status == 200) {
        int64_t a = lg_http_date(ims->value, ims->value_len), b = lg_http_date(lm->value, lm->value_len);
        not_modified = a >= 0 && b >= 0 && b <= a;
    }
    lg_rsp_info_t ri = { .body = LG_BODY_LENGTH, .length = (int64_t)blen, .keep_alive = 1 };
    int status = r.status;
    lg_xform_t xf = LG_XFORM_NONE;
    size_t from = 0, to = blen ? blen - 1 : 0;
    int range = 0;
    lg_range_t *rs = NULL;
    if (not_modified && (r.status == 200)) {
        status = 304;
        blen = 0;
    } else {
        xf = gzipped ? LG_XFORM_NONE : lg_coding_choose(s, &r, &ri);
        if (xf == LG_XFORM_NONE && r.status == 200 && (!gzipped || gunz) &&
            if_range_holds(s, etag, lm) &&
            (range = client_ranges(s, (int64_t)blen, &rs)) != 0)
            status = range > 0 ? 206 : 416;
        if (range == 1) {
            from = (size_t)rs[0].from;
            to = (size_t)rs[0].to;
        }
    }
    char *mp = NULL;
    size_t mplen = 0;
    if (range > 1) {
        /* several ranges: one body of parts, each with its own Content-Range */
        char boundary[32];
        const http_header_t *ct = NULL;
        if (multipart_type(s, &r, &ct, boundary, sizeof(boundary)) < 0 ||
            (mp = multipart(body, 0, (int64_t)full, rs, range, ct, boundary, &mplen)) == NULL) {
            free(plain);
            lg_respond_error(s, 500);
            return;
        }
    }
    char *gz = NULL;
    size_t gzlen = 0;
    if ((xf == LG_XFORM_GZIP || xf == LG_XFORM_BR || xf == LG_XFORM_ZSTD) && blen) {
        /* stored as the origin sent it: compressed for this client */
        gz = compress_all(s, xf, body, blen, &gzlen);
        if (gz == NULL)
            xf = LG_XFORM_NONE;
    } else if (xf == LG_XFORM_GUNZIP) {
        xf = LG_XFORM_NONE;             /* stored as the origin sent it: no gunzip here */
    }
    if (gunz)
        xf = LG_XFORM_GUNZIP;           /* the head loses its Content-Encoding */
    const char *out_body = gz ? gz : mp ? mp : body + from;
    size_t out_len = gz ? gzlen : mp ? mplen : status == 206 ? to - from + 1
                   : status == 416 || status == 304 ? 0 : blen;
    r.status = status;
    r.reason = lg_http_reason(status);
    r.reason_len = strlen(r.reason);
    s->cache_length = (int64_t)out_len;
    if (status == 206 && mp == NULL)
        s->cache_range = lg_arena_printf(&s->arena, "bytes %zu-%zu/%zu", from, to, full);
    else if (status == 416)
        s->cache_range = lg_arena_printf(&s->arena, "bytes */%zu", full);
    s->cache_serving = 1;
    size_t hl = 0;
    char *head = lg_headers_client(s, &r, &ri, 0, xf,
                                   xf != LG_XFORM_NONE || lg_coding_compressible(s, &r, &ri), &hl);
    if (head == NULL) {
        free(gz);
        free(mp);
        free(plain);
        lg_respond_error(s, 500);
        return;
    }
    if (s->ri.is_head || status == 304 || status == 416)
        out_len = 0;
    /* the head from the arena, the body where it lies (the object copied
     * out of the cache, the gzip output, the parts): one writev, no third copy */
    free(cs->out);
    cs->out = gz ? gz : mp ? mp : plain;        /* freed with the state */
    if (gz || mp)
        free(plain);
    s->upstream_status = 0;
    lg_respond_raw(s, status, head, hl, out_body, out_len);
}

/* ---- answers from the disk tier ---- */

#define DCHUNK (64 * 1024)      /* one pread(2): the longest the loop waits on the disk */

static const lg_stage_t disk_stage;

/* The head, then the file's bytes in reads of DCHUNK, as the client takes them. */
static void disk_step(lg_req_t *s)
{
    lg_cstate_t *cs = CS(s);
    lg_end_t *ce = s->cend;
    for (;;) {
        if (s->local_sent >= s->local_len && cs->dpos == cs->dlen) {
            if (cs->d_off == cs->d_end)
                break;
            uint64_t left = cs->d_end - cs->d_off;
            ssize_t n = pread(cs->dfd, cs->dbuf, left < DCHUNK ? (size_t)left : DCHUNK,
                              (off_t)cs->d_off);
            if (n <= 0) {
                lg_error("cache: reading a file of the disk tier for \"%s\" failed", cs->key);
                lg_req_abort(s, "cache file read failed");
                return;
            }
            cs->dpos = 0;
            cs->dlen = (size_t)n;
            cs->d_off += (uint64_t)n;
        }
        if (!ce->w_ready) {
            ce->want_w = 1;
            return;
        }
        struct iovec iov[2];
        int cnt = 0;
        if (s->local_sent < s->local_len) {
            iov[cnt].iov_base = (void *)(s->local + s->local_sent);
            iov[cnt++].iov_len = s->local_len - s->local_sent;
        }
        if (cs->dpos < cs->dlen) {
            iov[cnt].iov_base = cs->dbuf + cs->dpos;
            iov[cnt++].iov_len = cs->dlen - cs->dpos;
        }
        ssize_t n = lg_end_writev(ce, iov, cnt);
        if (n == LG_AGAIN)
            return;
        if (n < 0) {
            lg_req_abort(s, "send() to client failed");
            return;
        }
        size_t k = (size_t)n;
        s->bytes_out += k;
        if (s->local_sent < s->local_len) {
            size_t h = s->local_len - s->local_sent < k ? s->local_len - s->local_sent : k;
            s->local_sent += h;
            k -= h;
        }
        cs->dpos += k;
    }
    close(cs->dfd);
    cs->dfd = -1;
    lg_req_finish(s);
}

static lg_msec_t disk_arm(lg_req_t *s, lg_tkind_t *kind)
{
    *kind = LG_T_SEND;
    return lg_req_common(s)->send_timeout;
}

static void disk_timeout(lg_req_t *s, lg_tkind_t kind)
{
    (void)kind;
    lg_req_abort(s, "client timed out receiving the response");
}

static const lg_stage_t disk_stage = {
    .name = "sending from the disk cache", .step = disk_step, .arm = disk_arm,
    .timeout = disk_timeout,
};

static int fresh_enough(lg_cstate_t *cs, int64_t now);

/*
 * A fresh file of the disk tier for the key in use: answered from it (1),
 * or 0 (none, stale -- fetched again and replaced --, or damaged).  As
 * from memory: 304 for a matching conditional, HEAD, one range (206 or
 * 416); several ranges get the whole, and no coding is applied.
 */
static int disk_hit(lg_req_t *s, lg_cstate_t *cs, int64_t now)
{
    char *head = NULL;
    size_t hl = 0;
    uint64_t off = 0, blen = 0;
    lg_cmeta_t meta;
    int fd = lg_disk_open(cs->key, cs->keylen, &meta, &head, &hl, &off, &blen);
    if (fd < 0)
        return 0;
    cs->meta = meta;
    http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, hl + 1, LG_MAX_HEADERS };
    size_t scanned = 0;
    if (!fresh_enough(cs, now) || hs == NULL ||
        http_parse_response(head, hl, &r, &lim, &scanned) <= 0 || r.status != 200) {
        close(fd);
        free(head);
        return 0;
    }
    if (cs->filler) {
        lg_store_abandon(lg_cache, cs->base, cs->baselen);
        cs->filler = 0;
    }
    drop_targeted(lg_req_common(s), &r);
    cs->s->cache_status = "HIT";
    s->cache_age = meta.age0 + (now - meta.stored) / 1000;
    if (s->cache_age < 0)
        s->cache_age = 0;
    const http_header_t *inm = lg_headers_get(s, "if-none-match");
    const http_header_t *ims = lg_headers_get(s, "if-modified-since");
    const http_header_t *etag = find_h(&r, "etag"), *lm = find_h(&r, "last-modified");
    int status = 200;
    if (inm && etag && etag_match(inm->value, inm->value_len, etag->value, etag->value_len))
        status = 304;
    else if (!inm && ims && lm) {
        int64_t a = lg_http_date(ims->value, ims->value_len), b = lg_http_date(lm->value, lm->value_len);
        if (a >= 0 && b >= 0 && b <= a)
            status = 304;
    }
    uint64_t from = 0, to = blen ? blen - 1 : 0;
    lg_range_t *rs = NULL;
    int range = status == 200 && if_range_holds(s, etag, lm) ? client_ranges(s, (int64_t)blen, &rs) : 0;
    if (range == 1) {
        status = 206;
        from = (uint64_t)rs[0].from;
        to = (uint64_t)rs[0].to;
        s->cache_range = lg_arena_printf(&s->arena, "bytes %llu-%llu/%llu", (unsigned long long)from,
                                         (unsigned long long)to, (unsigned long long)blen);
    } else if (range < 0) {
        status = 416;
        s->cache_range = lg_arena_printf(&s->arena, "bytes */%llu", (unsigned long long)blen);
    }
    uint64_t out = status == 206 ? to - from + 1 : status == 200 ? blen : 0;
    r.status = status;
    r.reason = lg_http_reason(status);
    r.reason_len = strlen(r.reason);
    lg_rsp_info_t ri = { .body = LG_BODY_LENGTH, .length = (int64_t)out, .keep_alive = 1 };
    s->cache_length = (int64_t)out;
    s->cache_serving = 1;
    size_t len = 0;
    char *h = lg_headers_client(s, &r, &ri, 0, LG_XFORM_NONE, 0, &len);
    s->upstream_status = 0;
    if (h == NULL || s->ri.is_head || out == 0) {
        close(fd);
        free(head);
        if (h == NULL)
            lg_respond_error(s, 500);
        else
            lg_respond_raw(s, status, h, len, NULL, 0);
        return 1;
    }
    cs->dbuf = malloc(DCHUNK);
    if (cs->dbuf == NULL) {
        close(fd);
        free(head);
        lg_respond_error(s, 500);
        return 1;
    }
    free(cs->dhead);
    cs->dhead = head;           /* r's fields point into it until the head is built: freed later */
    cs->dfd = fd;
    cs->d_off = off + from;
    cs->d_end = off + from + out;
    cs->dpos = cs->dlen = 0;
    s->status = status;
    s->local = h;
    s->local_len = len;
    s->local_sent = 0;
    s->bytes_out = 0;
    lg_req_set_stage(s, &disk_stage);
    return 1;
}

/* ---- the request ---- */

static void on_close(void *arg);

static lg_cstate_t *state(lg_req_t *s)
{
    if (CS(s) == NULL && (s->ctx[cache_slot] = lg_arena_calloc(&s->arena, sizeof(lg_cstate_t)))) {
        CS(s)->s = s;
        CS(s)->dfd = -1;
        s->own_conditionals = 1;        /* the client's go nowhere: the cache answers them */
        lg_req_cleanup(s, on_close, s);
    }
    return CS(s);
}

static void drop_key(lg_req_t *s, const char *base, size_t n, int soft, int *count);

int (*lg_cache_purge_fanout)(lg_req_t *s, const char *key, size_t n, int soft,
                             int status, const char *body);

int lg_cache_purge_key(const char *key, size_t n, int soft)
{
    if (lg_cache == NULL || n == 0)
        return 0;
    if (key[n - 1] == '*')
        return lg_store_purge_prefix(lg_cache, key, n - 1, soft);
    /* as drop_key(): the object (or its Vary marker) and every variant */
    int count = soft ? lg_store_expire(lg_cache, key, n) : lg_store_delete(lg_cache, key, n);
    char *vp = malloc(n + 1);
    if (vp) {
        memcpy(vp, key, n);
        vp[n] = '\n';
        count += lg_store_purge_prefix(lg_cache, vp, n + 1, soft);
        free(vp);
    }
    return count;
}

static int purge(lg_req_t *s, lg_cstate_t *cs)
{
    const lg_common_t *c = lg_req_common(s);
    const lg_cidr_set_t *set = c->cache_purge_rt;
    int allowed = set && (s->peer.ss_family == AF_UNIX ||
                          lg_cidr_lookup(set, (const struct sockaddr *)&s->peer) >= 0);
    if (!allowed) {
        lg_mx_count(LG_MX_CACHE_PURGE, NULL, NULL, "refused", 1);
        lg_respond(s, 403, "PURGE is not allowed from this address\n", NULL);
        return 1;
    }
    const http_header_t *mode = lg_headers_get(s, "purge-mode");
    int soft = mode && mode->value_len == 4 && strncasecmp(mode->value, "soft", 4) == 0;
    int n = 0;
    if (cs->baselen && cs->base[cs->baselen - 1] == '*') {
        n = lg_store_purge_prefix(lg_cache, cs->base, cs->baselen - 1, soft);  /* a trailing star */
        n += lg_disk_remove_prefix(cs->base, cs->baselen - 1);
    }
    else
        drop_key(s, cs->base, cs->baselen, soft, &n);
    char *msg = lg_arena_printf(&s->arena, "{\"purged\": %d, \"soft\": %s}\n", n, soft ? "true" : "false");
    lg_mx_count(LG_MX_CACHE_PURGE, NULL, NULL, n ? "purged" : "not_found", 1);
    if (lg_cache_purge_fanout && msg &&
        lg_cache_purge_fanout(s, cs->base, cs->baselen, soft, n ? 200 : 404, msg))
        return 1;
    lg_respond(s, n ? 200 : 404, msg, NULL);
    return 1;
}

/* cache_use_stale: does the route let a stale object cover this condition? */
static int use_stale(const lg_common_t *c, const char *word)
{
    return c->cache_use_stale &&
           lg_cache_stale_named(c->cache_use_stale->v, c->cache_use_stale->n, word);
}

/* The word for an upstream failure of condition cond (LG_COND_*). */
static const char *failure_word(unsigned cond)
{
    return lg_cache_stale_word(cond & LG_COND_TIMEOUT ? LG_STALE_TIMEOUT
                               : cond & LG_COND_INVALID_HEADER ? LG_STALE_INVALID
                               : LG_STALE_ERROR, 0);
}

static int fresh_enough(lg_cstate_t *cs, int64_t now)
{
    return lg_cache_usable(&cs->req_cc, cs->meta.age0 * 1000 + (now - cs->meta.stored),
                           cs->meta.expires - now, (cs->meta.flags & LG_CF_MUST_REVALIDATE) != 0,
                           (cs->meta.flags & LG_CF_IMMUTABLE) != 0);
}

static int on_request(lg_req_t *s)
{
    const lg_common_t *c = lg_req_common(s);
    /* a request that may switch protocols opens a conversation, not a
     * representation: nothing to serve it from, nothing to store */
    if (lg_cache == NULL || !c->cache || s->upgrade)
        return 0;
    lg_cstate_t *cs = state(s);
    if (cs == NULL)
        return 0;
    if (cs->base == NULL) {
        cs->base = lg_vars_expand(s, key_template(s, c), LG_VARS_ESCAPE, NULL);
        if (cs->base == NULL)
            return 0;
        cs->baselen = strlen(cs->base);
        cs->key = cs->base;
        cs->keylen = cs->baselen;
        lg_cc_init(&cs->req_cc);
        for (size_t i = 0; i < s->req.num_headers; i++)
            if (http_name_eq(&s->req.headers[i], "cache-control"))
                lg_cc_parse(&cs->req_cc, s->req.headers[i].value, s->req.headers[i].value_len);
        if (s->conn->refresh)
            cs->req_cc.no_cache = 1;    /* a background refresh: ask the origin */
        const http_header_t *pragma = lg_headers_get(s, "pragma");
        if (pragma && pragma->value_len >= 8 && strncasecmp(pragma->value, "no-cache", 8) == 0 &&
            lg_headers_get(s, "cache-control") == NULL)
            cs->req_cc.no_cache = 1;
    }
    int is_get = s->req.method_len == 3 && memcmp(s->req.method, "GET", 3) == 0;
    if (s->req.method_len == 5 && memcmp(s->req.method, "PURGE", 5) == 0)
        return purge(s, cs);
    if (!is_get && !s->ri.is_head) {
        cs->s->cache_status = NULL;              /* unsafe methods: invalidation after the response */
        return 0;
    }
    const char *bypass = lg_vars_expand(s, c->cache_bypass, LG_VARS_RAW, NULL);
    if ((bypass && bypass[0] && strcmp(bypass, "0") != 0) || cs->req_cc.no_store) {
        cs->s->cache_status = "BYPASS";
        return 0;
    }
    int64_t now = lg_wall_ms();
    if (c->cache_min_uses > 1 && !cs->filler && !cs->counted++ &&
        !lg_store_count_use(lg_cache, cs->base, cs->baselen, c->cache_min_uses)) {
        cs->s->cache_status = "MISS";            /* asked for too few times yet to be stored */
        cs->not_yet = 1;
        return 0;
    }
    for (int hop = 0; hop < 2; hop++) {
        free(cs->obj);
        cs->obj = NULL;
        int filler = 0;
        /* the token tells this request's fill from the others of this worker */
        uint64_t token = s->conn->id << 20 | (s->conn->requests & 0xfffff);
        lg_cache_look_t look = lg_store_get(lg_cache, cs->key, cs->keylen, hop == 0 && !cs->filler,
                                            c->cache_lock_timeout, token, &cs->obj, &cs->hl,
                                            &cs->bl, &cs->meta, &filler);
        if (filler)
            cs->filler = 1;
        if (look == LG_CACHE_WAIT) {
            if (lg_w.loop.now - s->t_start < c->cache_lock_timeout) {
                if (s->stage != &wait_stage)    /* the first wait, not a look again */
                    lg_mx_count(LG_MX_CACHE_COLLAPSED, NULL, NULL, NULL, 1);
                lg_req_suspend(s, &wait_stage); /* collapsed forwarding: look again soon */
                return 1;
            }
            look = LG_CACHE_MISS;               /* waited long enough: go ourselves */
        }
        if (look == LG_CACHE_MISS) {
            if (lg_disk && disk_hit(s, cs, now))
                return 1;
            if (cs->req_cc.only_if_cached) {
                lg_respond_error(s, 504);
                return 1;
            }
            cs->s->cache_status = "MISS";
            forward_range(s, cs);
            return 0;
        }
        /* a hit: a Vary marker sends us to the variant */
        if (cs->hl >= sizeof(VARY_MARK) - 1 && memcmp(cs->obj, VARY_MARK, sizeof(VARY_MARK) - 1) == 0) {
            char fields[256];
            snprintf(fields, sizeof(fields), "%.*s", (int)(cs->hl - (sizeof(VARY_MARK) - 1)),
                     cs->obj + sizeof(VARY_MARK) - 1);
            cs->vary = lg_arena_strdup(&s->arena, fields);
            cs->key = variant_key(s, cs->base, fields);
            cs->keylen = cs->key ? strlen(cs->key) : 0;
            if (cs->key == NULL)
                return 0;
            continue;
        }
        break;
    }
    if (cs->obj == NULL) {
        cs->s->cache_status = "MISS";
        forward_range(s, cs);
        return 0;
    }
    if (cs->meta.status == 206) {
        /* a stored part: it answers ranges inside it while fresh; anything
         * else goes upstream, and what comes back may complete it */
        if (fresh_enough(cs, now) && partial_covers(s, cs)) {
            serve(s, cs, "HIT");
            return 1;
        }
        cs->have_partial = 1;
        cs->s->cache_status = "MISS";
        forward_range(s, cs);
        return 0;
    }
    if (fresh_enough(cs, now)) {
        serve(s, cs, "HIT");
        return 1;
    }
    if (cs->req_cc.only_if_cached) {
        serve(s, cs, "STALE");
        return 1;
    }
    /*
     * stale-while-revalidate (RFC 5861): within its window, answer with the
     * stale copy at once and let one background request -- for all workers,
     * the first to claim it -- refresh it.  Not when the origin said
     * must-revalidate, nor for a client asking for a validated answer, nor
     * for the refresh itself.
     */
    if (!s->conn->refresh && cs->meta.stale_while_revalidate > 0 &&
        now - cs->meta.expires <= cs->meta.stale_while_revalidate &&
        !(cs->meta.flags & LG_CF_MUST_REVALIDATE) && !cs->req_cc.no_cache &&
        cs->req_cc.max_age == LG_CC_UNSET) {
        int64_t until = now + c->proxy_connect_timeout + c->proxy_read_timeout + 1000;
        if (lg_store_try_update(lg_cache, cs->key, cs->keylen, until) &&
            lg_refresh_start(s) < 0)
            lg_error("cache: cannot start the background refresh of \"%s\"", cs->key);
        serve(s, cs, "UPDATING");
        return 1;
    }
    /*
     * cache_use_stale: never for what the origin said must be revalidated
     * (must-revalidate, no-cache, proxy-revalidate or s-maxage here: RFC
     * 9111 4.2.4 forbids serving those stale, whatever a setting says).
     */
    cs->use_stale = !(cs->meta.flags & LG_CF_MUST_REVALIDATE) && c->cache_use_stale != NULL;
    if (cs->use_stale && use_stale(c, "updating") && !s->conn->refresh) {
        /* another request is fetching it: it is "being updated", and this
         * one gets the stale copy instead of a second fetch */
        int64_t until = now + c->proxy_connect_timeout + c->proxy_read_timeout + 1000;
        if (!lg_store_try_update(lg_cache, cs->key, cs->keylen, until)) {
            serve(s, cs, "UPDATING");
            return 1;
        }
    }
    /* stale: keep it for a 304 or for stale-if-error, and revalidate */
    cs->stale_ok = cs->meta.stale_if_error > 0 &&
                   now - cs->meta.expires <= cs->meta.stale_if_error;
    cs->reval = (cs->meta.flags & LG_CF_HAS_VALIDATOR) != 0;
    cs->s->cache_status = "EXPIRED";
    if (cs->reval)
        upstream_add(s, conditional(s, cs));
    return 0;
}

/* Header lines for a conditional request upstream (revalidation), or NULL. */
static const char *conditional(lg_req_t *s, lg_cstate_t *cs)
{
    if (cs->obj == NULL)
        return NULL;
    http_header_t hs[LG_MAX_HEADERS];
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, cs->hl + 1, LG_MAX_HEADERS };
    size_t sc = 0;
    if (http_parse_response(cs->obj, cs->hl, &r, &lim, &sc) <= 0)
        return NULL;
    const http_header_t *etag = find_h(&r, "etag"), *lm = find_h(&r, "last-modified");
    return lg_arena_printf(&s->arena, "%s%.*s%s%s%.*s%s",
                           etag ? "If-None-Match: " : "", etag ? (int)etag->value_len : 0,
                           etag ? etag->value : "", etag ? "\r\n" : "",
                           lm ? "If-Modified-Since: " : "", lm ? (int)lm->value_len : 0,
                           lm ? lm->value : "", lm ? "\r\n" : "");
}

/* ---- the response ---- */

static int ignored(const lg_common_t *c, const char *name)
{
    for (size_t i = 0; c->cache_ignore_headers && i < c->cache_ignore_headers->n; i++)
        if (strcasecmp(c->cache_ignore_headers->v[i], name) == 0)
            return 1;
    return 0;
}

/* cache_valid: lifetime in ms, or -1. */
static int64_t valid_for(const lg_common_t *c, int status)
{
    for (size_t i = 0; c->cache_valid && i < c->cache_valid->n; i++) {
        const lg_valid_rule_t *r = &c->cache_valid->v[i];
        if (r->any)
            return r->ms;
        for (size_t k = 0; k < r->nstatus; k++)
            if (r->status[k] == status)
                return r->ms;
    }
    return -1;
}

/* Is the field list (comma-separated, lower case) naming h? */
static int in_fields(const char *fields, const http_header_t *h)
{
    for (const char *p = fields; *p;) {
        size_t n = strcspn(p, ",");
        if (n == h->name_len && strncasecmp(p, h->name, n) == 0)
            return 1;
        p += n;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* What a response head says about caching it. */
typedef struct facts {
    lg_cc_t     cc;
    lg_vary_t   vary;
    int         nexpires, cookie;
    const http_header_t *expires, *date, *lm, *etag;
    int64_t     age;            /* the first valid Age line, or -1 */
} facts_t;

/*
 * RFC 9213: the first field of cache_targeted_fields present with only
 * valid lines gives the directives, instead of Cache-Control and Expires.
 * 1 if one did.
 */
static int targeted(const lg_common_t *c, const http_response_t *r, lg_cc_t *cc)
{
    for (size_t t = 0; c->cache_targeted_fields && t < c->cache_targeted_fields->n; t++) {
        const char *name = c->cache_targeted_fields->v[t];
        int lines = 0, bad = 0;
        for (size_t i = 0; i < r->num_headers && !bad; i++) {
            const http_header_t *h = &r->headers[i];
            if (!http_name_eq(h, name))
                continue;
            lines++;
            bad = !lg_sf_dictionary_valid(h->value, h->value_len);
        }
        if (lines == 0 || bad)
            continue;                   /* absent, or not one to obey: the next */
        for (size_t i = 0; i < r->num_headers; i++)
            if (http_name_eq(&r->headers[i], name))
                lg_cc_parse(cc, r->headers[i].value, r->headers[i].value_len);
        return 1;
    }
    return 0;
}

static void facts_of(const lg_common_t *c, const http_response_t *r, facts_t *f)
{
    memset(f, 0, sizeof(*f));
    lg_cc_init(&f->cc);
    lg_vary_init(&f->vary);
    f->age = -1;
    int tcc = targeted(c, r, &f->cc);
    for (size_t i = 0; i < r->num_headers; i++) {
        const http_header_t *h = &r->headers[i];
        if (http_name_eq(h, "cache-control")) {
            if (!tcc && !ignored(c, "Cache-Control"))
                lg_cc_parse(&f->cc, h->value, h->value_len);
        } else if (tcc && http_name_eq(h, "expires"))
            continue;
        else if (http_name_eq(h, "vary") && !ignored(c, "Vary"))
            lg_vary_add(&f->vary, h->value, h->value_len);  /* every line, "*" anywhere */
        else if (http_name_eq(h, "expires") && !ignored(c, "Expires")) {
            f->expires = h;
            f->nexpires++;
        } else if (http_name_eq(h, "date"))
            f->date = h;
        else if (http_name_eq(h, "last-modified"))
            f->lm = h;
        else if (http_name_eq(h, "etag"))
            f->etag = h;
        else if (http_name_eq(h, "age")) {
            if (f->age < 0)             /* the first valid line (RFC 9111 5.1) */
                f->age = lg_cache_age(h->value, h->value_len);
        } else if (http_name_eq(h, "set-cookie"))
            f->cookie = 1;
    }
}

/*
 * The stored object's freshness from those facts: lifetime, age when
 * stored, revalidation flags, stale windows.  Returns the lifetime in ms
 * (-1: none; m->expires is then "now", stale).
 */
static int64_t fill_meta(const lg_common_t *c, const facts_t *f, int status, int64_t now,
                         lg_cmeta_t *m, int *explicit_)
{
    int shared = !c->cache_private;
    int64_t d = f->date ? lg_cache_date(f->date->value, f->date->value_len) : -1;
    lg_fresh_in_t fin = {
        .cc = &f->cc, .shared = shared, .status = status, .now = now / 1000, .date = d,
        .nexpires = f->nexpires,
        .expires = f->expires ? lg_cache_date(f->expires->value, f->expires->value_len) : -1,
        .last_modified = f->lm ? lg_cache_date(f->lm->value, f->lm->value_len) : -1,
        .configured = valid_for(c, status),
    };
    int64_t life = lg_cache_lifetime(&fin, explicit_);
    memset(m, 0, sizeof(*m));
    m->status = status;
    m->stored = now;
    m->age0 = f->age > 0 ? f->age : 0;
    if (d >= 0 && now / 1000 > d && now / 1000 - d > m->age0)
        m->age0 = now / 1000 - d;               /* apparent age */
    if (m->age0 > LG_DELTA_MAX)
        m->age0 = LG_DELTA_MAX;
    m->expires = now + (life > 0 ? life : 0) - m->age0 * 1000;
    if (lg_cache_must_revalidate(&f->cc, shared))
        m->flags |= LG_CF_MUST_REVALIDATE;
    if (f->cc.no_cache)
        m->expires = now - 1;                   /* stored, but checked each time */
    if (f->etag || f->lm)
        m->flags |= LG_CF_HAS_VALIDATOR;
    if (f->cc.immutable)
        m->flags |= LG_CF_IMMUTABLE;
    if (f->cc.stale_if_error != LG_CC_UNSET)
        m->stale_if_error = f->cc.stale_if_error * 1000;
    if (f->cc.stale_while_revalidate != LG_CC_UNSET)
        m->stale_while_revalidate = f->cc.stale_while_revalidate * 1000;
    return life;
}

/*
 * RFC 9111 3.2 and 4.3.4: a 304 to our conditional request.  Its fields
 * replace the stored ones of the same name, except those a 304 must not
 * change: framing and hop-by-hop fields, Content-Encoding / Content-Range
 * (they describe the stored bytes), Vary (the key depends on it), Age and
 * Set-Cookie (never stored), and for a body compressed here its ETag (the
 * stored one is the weak form).  The freshness is worked out again from
 * the merged head, as for a new response.  0, or -1 (out of memory: the
 * old object is served as it was).
 */
static int no_update(const http_header_t *h, const lg_rsp_info_t *ri, int gzipped)
{
    return lg_http_is_hop_by_hop(h, ri->connection) ||
           !lg_cache_304_updates(h->name, h->name_len, gzipped);
}

static int refresh_from_304(lg_req_t *s, lg_cstate_t *cs, const http_response_t *r,
                            const lg_rsp_info_t *ri, int64_t now)
{
    const lg_common_t *c = lg_req_common(s);
    int gzipped = (cs->meta.flags & LG_CF_GZIPPED) != 0;
    http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
    http_response_t old = { .headers = hs };
    http_limits_t lim = { 16384, cs->hl + 1, LG_MAX_HEADERS };
    size_t sc = 0;
    if (hs == NULL || http_parse_response(cs->obj, cs->hl, &old, &lim, &sc) <= 0)
        return -1;
    size_t room = cs->hl + 2 * old.num_headers + 64;
    for (size_t i = 0; i < r->num_headers; i++)
        room += r->headers[i].name_len + r->headers[i].value_len + 4;
    char *obj = malloc(room + cs->bl);
    if (obj == NULL)
        return -1;
    const char *eol = memchr(cs->obj, '\n', cs->hl);
    size_t hl = eol ? (size_t)(eol - cs->obj) + 1 : 0;
    memcpy(obj, cs->obj, hl);
#define PUT(h) do {                                                     \
        memcpy(obj + hl, (h)->name, (h)->name_len);                     \
        hl += (h)->name_len;                                            \
        memcpy(obj + hl, ": ", 2);                                      \
        hl += 2;                                                        \
        memcpy(obj + hl, (h)->value, (h)->value_len);                   \
        hl += (h)->value_len;                                           \
        memcpy(obj + hl, "\r\n", 2);                                    \
        hl += 2;                                                        \
    } while (0)
    for (size_t i = 0; i < old.num_headers; i++) {
        const http_header_t *h = &old.headers[i];
        int replaced = 0;
        for (size_t k = 0; k < r->num_headers && !replaced; k++)
            replaced = !no_update(&r->headers[k], ri, gzipped) &&
                       r->headers[k].name_len == h->name_len &&
                       strncasecmp(r->headers[k].name, h->name, h->name_len) == 0;
        if (!replaced)
            PUT(h);
    }
    for (size_t k = 0; k < r->num_headers; k++)
        if (!no_update(&r->headers[k], ri, gzipped))
            PUT(&r->headers[k]);
#undef PUT
    memcpy(obj + hl, "\r\n", 2);
    hl += 2;
    memcpy(obj + hl, cs->obj + cs->hl, cs->bl);

    /* the freshness of the merged head (its Age is the 304's) */
    http_response_t merged = { .headers = hs };
    lim.max_head = hl + 1;
    sc = 0;
    if (http_parse_response(obj, hl, &merged, &lim, &sc) <= 0) {
        free(obj);
        return -1;
    }
    facts_t f, f304;
    facts_of(c, &merged, &f);
    facts_of(c, r, &f304);
    f.age = f304.age;
    lg_cmeta_t m;
    int explicit_;
    fill_meta(c, &f, cs->meta.status, now, &m, &explicit_);
    m.flags |= cs->meta.flags & LG_CF_GZIPPED;
    m.identity_len = cs->meta.identity_len;
    free(cs->obj);
    cs->obj = obj;
    cs->hl = hl;
    cs->meta = m;
    return 0;
}

/* ---- partial content (cache_partial) ---- */

/* The stored head's Content-Range. */
static int stored_range(const char *head, size_t hl, int64_t *a, int64_t *b, int64_t *c)
{
    for (const char *p = head, *end = head + hl; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);
        if (n > 14 && strncasecmp(p, "content-range:", 14) == 0) {
            const char *v = p + 14;
            size_t vl = n - 14;
            while (vl && (*v == ' ' || *v == '\t'))
                v++, vl--;
            while (vl && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            return lg_content_range(v, vl, a, b, c);
        }
        p += n + 1;
    }
    return 0;
}

/* The client's ranges (one or several), all inside the stored part? */
static int partial_covers(lg_req_t *s, lg_cstate_t *cs)
{
    int64_t a, b, c;
    lg_range_t *rs = NULL;
    if (lg_headers_get(s, "if-range") || !stored_range(cs->obj, cs->hl, &a, &b, &c) ||
        (size_t)(b - a + 1) != cs->bl)
        return 0;
    int n = client_ranges(s, c, &rs);
    for (int i = 0; i < n; i++)
        if (rs[i].from < a || rs[i].to > b)
            return 0;
    return n > 0;
}

/* cache_partial: on a miss, ask the upstream for the client's range only. */
static void forward_range(lg_req_t *s, lg_cstate_t *cs)
{
    const http_header_t *rg = lg_headers_get(s, "range");
    if (!lg_req_common(s)->cache_partial || rg == NULL || lg_headers_get(s, "if-range") ||
        rg->value_len > 1024 || rg->value_len < 7 || strncasecmp(rg->value, "bytes=", 6) != 0 ||
        memchr(rg->value, ',', rg->value_len) || memchr(rg->value, '\r', rg->value_len))
        return;
    cs->range_up = upstream_add(s, lg_arena_printf(&s->arena, "Range: %.*s\r\n",
                                                   (int)rg->value_len, rg->value));
}

/* A 206 from the cache: the client's ranges, cut from the stored part
 * (partial_covers said they are in it). */
static void serve_partial(lg_req_t *s, lg_cstate_t *cs, http_response_t *r, const char *xcache)
{
    int64_t a, b, c, from, to;
    lg_range_t *rs = NULL;
    int n = 0;
    int inside = stored_range(cs->obj, cs->hl, &a, &b, &c) && (n = client_ranges(s, c, &rs)) >= 1;
    for (int i = 0; inside && i < n; i++)
        inside = rs[i].from >= a && rs[i].to <= b;
    if (!inside) {
        lg_respond_error(s, 500);
        return;
    }
    from = rs[0].from;
    to = rs[0].to;
    if (n > 1) {
        char boundary[32];
        const http_header_t *ct = NULL;
        size_t mplen = 0;
        char *mp = NULL;
        if (multipart_type(s, r, &ct, boundary, sizeof(boundary)) < 0 ||
            (mp = multipart(cs->obj + cs->hl, a, c, rs, n, ct, boundary, &mplen)) == NULL) {
            lg_respond_error(s, 500);
            return;
        }
        free(cs->out);
        cs->out = mp;                   /* freed with the state */
        cs->s->cache_status = xcache;
        int64_t now = lg_wall_ms();
        s->cache_age = cs->meta.age0 + (now - cs->meta.stored) / 1000;
        if (s->cache_age < 0)
            s->cache_age = 0;
        lg_rsp_info_t ri = { .body = LG_BODY_LENGTH, .length = (int64_t)mplen, .keep_alive = 1 };
        s->cache_length = (int64_t)mplen;
        s->cache_range = NULL;
        s->cache_serving = 1;
        size_t hl = 0;
        char *head = lg_headers_client(s, r, &ri, 0, LG_XFORM_NONE, 0, &hl);
        if (head == NULL) {
            lg_respond_error(s, 500);
            return;
        }
        s->upstream_status = 0;
        lg_respond_raw(s, 206, head, hl, mp, s->ri.is_head ? 0 : mplen);
        return;
    }
    cs->s->cache_status = xcache;
    int64_t now = lg_wall_ms();
    s->cache_age = cs->meta.age0 + (now - cs->meta.stored) / 1000;
    if (s->cache_age < 0)
        s->cache_age = 0;
    size_t out_len = (size_t)(to - from + 1);
    lg_rsp_info_t ri = { .body = LG_BODY_LENGTH, .length = (int64_t)out_len, .keep_alive = 1 };
    s->cache_length = (int64_t)out_len;
    s->cache_range = lg_arena_printf(&s->arena, "bytes %lld-%lld/%lld", (long long)from,
                                     (long long)to, (long long)c);
    s->cache_serving = 1;
    size_t hl = 0;
    char *head = lg_headers_client(s, r, &ri, 0, LG_XFORM_NONE, 0, &hl);
    if (head == NULL) {
        lg_respond_error(s, 500);
        return;
    }
    s->upstream_status = 0;
    lg_respond_raw(s, 206, head, hl, cs->obj + cs->hl + (from - a), s->ri.is_head ? 0 : out_len);
}

/*
 * A stored part and a new one of the same representation (same complete
 * length, same strong ETag) that overlap or touch: one part, or the whole
 * response (a 200) once nothing is missing.  Replaces cs->head / cs->cap
 * and cs->newmeta.status; 0, or -1 to store the new part as it is.
 */
static int complete_partial(lg_cstate_t *cs)
{
    int64_t a1, b1, c1, a2, b2, c2, a, b;
    if (!cs->have_partial || cs->obj == NULL ||
        !stored_range(cs->obj, cs->hl, &a1, &b1, &c1) ||
        !stored_range(cs->head, cs->headlen, &a2, &b2, &c2) || c1 != c2 ||
        (size_t)(b1 - a1 + 1) != cs->bl || (size_t)(b2 - a2 + 1) != cs->caplen ||
        !lg_range_union(a1, b1, a2, b2, &a, &b))
        return -1;
    /* the same strong validator, or the parts may be of two versions */
    http_header_t h1[LG_MAX_HEADERS], h2[LG_MAX_HEADERS];
    http_response_t r1 = { .headers = h1 }, r2 = { .headers = h2 };
    http_limits_t l1 = { 16384, cs->hl + 1, LG_MAX_HEADERS }, l2 = { 16384, cs->headlen + 1, LG_MAX_HEADERS };
    size_t sc1 = 0, sc2 = 0;
    if (http_parse_response(cs->obj, cs->hl, &r1, &l1, &sc1) <= 0 ||
        http_parse_response(cs->head, cs->headlen, &r2, &l2, &sc2) <= 0)
        return -1;
    const http_header_t *e1 = find_h(&r1, "etag"), *e2 = find_h(&r2, "etag");
    if (e1 == NULL || e2 == NULL || e1->value_len != e2->value_len || e1->value_len < 2 ||
        e1->value[0] != '"' || memcmp(e1->value, e2->value, e1->value_len) != 0)
        return -1;
    size_t len = (size_t)(b - a + 1);
    if (len > cs->capmax)
        return -1;
    char *body = malloc(len ? len : 1);
    int full = a == 0 && b == c1 - 1;
    size_t room = cs->headlen + 256;    /* a longer status line and Content-Range */
    char *head = malloc(room);
    if (body == NULL || head == NULL) {
        free(body);
        free(head);
        return -1;
    }
    memcpy(body + (a1 - a), cs->obj + cs->hl, cs->bl);
    memcpy(body + (a2 - a), cs->cap, cs->caplen);      /* the newer bytes win */
    /* the new part's head, its Content-Range (and status) made the union's */
    size_t hl = 0;
    for (const char *p = cs->head, *end = cs->head + cs->headlen; p < end;) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t n = eol ? (size_t)(eol - p) + 1 : (size_t)(end - p);
        if (p == cs->head && full) {
            hl += (size_t)snprintf(head + hl, room - hl, "HTTP/1.1 200 OK\r\n");
        } else if (n > 14 && strncasecmp(p, "content-range:", 14) == 0) {
            if (!full)
                hl += (size_t)snprintf(head + hl, room - hl, "Content-Range: bytes %lld-%lld/%lld\r\n",
                                       (long long)a, (long long)b, (long long)c1);
        } else if (n > 15 && strncasecmp(p, "content-length:", 15) == 0) {
            /* the length of the whole: served ones get their own */
        } else {
            memcpy(head + hl, p, n);
            hl += n;
        }
        p += n;
    }
    free(cs->cap);
    free(cs->head);
    cs->cap = body;
    cs->caplen = len;
    cs->head = head;
    cs->headlen = hl;
    if (full)
        cs->newmeta.status = 200;
    return 0;
}

/* The response came whole from upstream: store it (and its Vary marker). */
static void store(lg_cstate_t *cs)
{
    if (!cs->capturing || cs->cap_over)
        return;
    cs->capturing = 0;
    if (cs->dfill) {
        /* the file in place and indexed; the Vary marker in memory as always */
        int ok = lg_disk_fill_finish(cs->dfill) == 0;
        if (ok)
            lg_store_delete(lg_cache, cs->key, cs->keylen);   /* an older copy in memory would win */
        if (ok && cs->vary) {
            size_t ml = strlen(VARY_MARK) + strlen(cs->vary);
            char *mark = malloc(ml + 1);
            if (mark) {
                snprintf(mark, ml + 1, VARY_MARK "%s", cs->vary);
                lg_store_put(lg_cache, cs->base, cs->baselen, &cs->newmeta, mark, ml, "", 0);
                free(mark);
                cs->filler = 0;         /* the put released it */
            }
        }
        if (cs->filler) {
            lg_store_abandon(lg_cache, cs->base, cs->baselen);     /* the waiters look again */
            cs->filler = 0;
        }
        return;
    }
    if (cs->newmeta.status == 206)
        complete_partial(cs);           /* or stored as the part it is */
    if (cs->vary) {
        size_t ml = strlen(VARY_MARK) + strlen(cs->vary);
        char *mark = malloc(ml + 1);
        lg_cmeta_t mm = cs->newmeta;
        if (mark) {
            snprintf(mark, ml + 1, VARY_MARK "%s", cs->vary);
            lg_store_put(lg_cache, cs->base, cs->baselen, &mm, mark, ml, "", 0);
            free(mark);
        }
    }
    if (cs->gz_store) {
        /* compressed once, here, for every later gzip client (no gzip per hit) */
        size_t zl = 0;
        char *z = compress_all(cs->s, LG_XFORM_GZIP, cs->cap, cs->caplen, &zl);
        if (z == NULL) {
            lg_store_abandon(lg_cache, cs->base, cs->baselen);
            cs->filler = 0;
            return;
        }
        lg_cmeta_t m = cs->newmeta;
        m.flags |= LG_CF_GZIPPED;
        m.identity_len = (int64_t)cs->caplen;
        lg_store_put(lg_cache, cs->key, cs->keylen, &m, cs->head, cs->headlen, z, zl);
        free(z);
        cs->filler = 0;
        return;
    }
    lg_store_put(lg_cache, cs->key, cs->keylen, &cs->newmeta, cs->head, cs->headlen,
                 cs->cap, cs->caplen);
    cs->filler = 0;
}

static void cap_append(void *arg, const char *p, size_t n)
{
    lg_cstate_t *cs = arg;
    if (p == NULL) {                    /* the source is complete */
        if (lg_cache)
            store(cs);
        return;
    }
    if (!cs->capturing || cs->cap_over)
        return;
    if (cs->dfill) {
        if (lg_disk_fill_write(cs->dfill, p, n) < 0)
            cs->cap_over = 1;           /* dropped: never stored */
        return;
    }
    if (cs->caplen + n > cs->capmax) {
        cs->cap_over = 1;               /* too large: never stored */
        return;
    }
    memcpy(cs->cap + cs->caplen, p, n);
    cs->caplen += n;
}

static int on_response(lg_req_t *s, const http_response_t *r, const lg_rsp_info_t *ri,
                         const char *raw, size_t rawlen)
{
    lg_cstate_t *cs = CS(s);
    if (cs == NULL || cs->base == NULL)
        return 0;
    const lg_common_t *c = lg_req_common(s);
    int64_t now = lg_wall_ms();
    int is_get = s->req.method_len == 3 && memcmp(s->req.method, "GET", 3) == 0;

    if (!is_get && !s->ri.is_head) {
        /* an unsafe method: what its answer points at is invalidated too */
        for (size_t i = 0; i < r->num_headers; i++) {
            const http_header_t *h = &r->headers[i];
            int k = http_name_eq(h, "location") ? 0 : http_name_eq(h, "content-location") ? 1 : -1;
            if (k >= 0 && cs->also[k] == NULL && h->value_len < 4096)
                cs->also[k] = lg_arena_printf(&s->arena, "%.*s", (int)h->value_len, h->value);
        }
        /* now, before a byte of the answer reaches the client: its next
         * request, on any worker, must not find what this one changed */
        if (r->status >= 200 && r->status < 400)
            invalidate(s, cs);
    }

    /* revalidated: the stored response is still good, with the 304's fields */
    if (cs->reval && r->status == 304 && cs->obj) {
        if (refresh_from_304(s, cs, r, ri, now) == 0)
            lg_store_put(lg_cache, cs->key, cs->keylen, &cs->meta, cs->obj, cs->hl,
                         cs->obj + cs->hl, cs->bl);
        if (cs->filler)
            cs->filler = 0;     /* the put released it */
        serve(s, cs, "REVALIDATED");
        return 1;
    }
    /* an error from the upstream, and a stale copy allowed to cover it */
    const char *sw = cs->use_stale && cs->obj ? lg_cache_stale_word(LG_STALE_ANSWERED, r->status)
                                              : NULL;
    if ((r->status >= 500 && cs->stale_ok && cs->obj) || (sw && use_stale(c, sw))) {
        serve(s, cs, "STALE");
        return 1;
    }
    /* RFC 9110 9.3.3: a POST answer naming its own URI in Content-Location,
     * with explicit freshness, may answer later GETs of it */
    int is_post = s->req.method_len == 4 && memcmp(s->req.method, "POST", 4) == 0;
    const char *cl_key = is_post && cs->also[1] ? key_of_uri(s, cs->also[1]) : NULL;
    int post_store = cl_key && strcmp(cl_key, cs->base) == 0;
    if (!post_store && (!is_get || cs->s->cache_status == NULL ||
                        strcmp(cs->s->cache_status, "BYPASS") == 0))
        return 0;

    facts_t f;
    facts_of(c, r, &f);
    const lg_cc_t *cc = &f.cc;
    /* storable? (RFC 9111 3), and what the configuration says */
    if (cs->not_yet)
        goto not_stored;
    const char *ns = lg_vars_expand(s, c->cache_no_store, LG_VARS_RAW, NULL);
    if (ns && ns[0] && strcmp(ns, "0") != 0)
        goto not_stored;
    lg_store_in_t sin = {
        .cc = cc, .status = r->status, .shared = !c->cache_private,
        .req_no_store = cs->req_cc.no_store,
        .authorized = lg_headers_get(s, "authorization") != NULL,
        .store_authorized = c->cache_authorized, .set_cookie = f.cookie,
        .cookie_ignored = ignored(c, "Set-Cookie"), .store_set_cookie = c->cache_store_set_cookie,
    };
    int rule = lg_cache_store_rule(&sin);
    int64_t pa, pb, pc;
    const http_header_t *crh = r->status == 206 ? find_h(r, "content-range") : NULL;
    int part_ok = crh && cs->range_up && ri->body == LG_BODY_LENGTH &&
                  lg_content_range(crh->value, crh->value_len, &pa, &pb, &pc) &&
                  ri->length == pb - pa + 1;
    if (rule == LG_STORE_NO || f.vary.star || f.vary.overflow ||
        ri->body == LG_BODY_CLOSE || (r->status == 206 && !part_ok))
        goto not_stored;
    int explicit_ = 0;
    lg_cmeta_t *m = &cs->newmeta;
    int64_t life = fill_meta(c, &f, r->status, now, m, &explicit_);
    int validator = (m->flags & LG_CF_HAS_VALIDATOR) != 0;
    if (life < 0 && !(cc->no_cache && validator))
        goto not_stored;
    if (life <= 0 && !validator)
        goto not_stored;                        /* stale at once, and nothing to revalidate with */
    if (!lg_status_heuristic(r->status) && !explicit_ && !cc->public_ &&
        valid_for(c, r->status) < 0)
        goto not_stored;
    if (post_store && !lg_cache_post_storable(r->status, cc, f.nexpires, !c->cache_private))
        goto not_stored;
    int to_disk = 0;
    if (ri->body == LG_BODY_LENGTH && (size_t)ri->length > lg_store_max_object(lg_cache)) {
        /* too large for the memory tier: a file of the disk tier, if there
         * is one (a whole 200, its bytes as they came) */
        if (lg_disk == NULL || r->status != 200 || ri->length > lg_disk_max_object())
            goto not_stored;
        to_disk = 1;
    }

    /* the head to store: as received, less fields not to be stored; for a
     * body stored compressed, as a gzip response (weak ETag, Vary) */
    cs->gz_store = !to_disk && r->status != 206 && lg_req_common(s)->gzip &&
                   lg_coding_compressible(s, r, ri);
    int vary_ae = 0;
    free(cs->head);
    cs->head = malloc(rawlen + 64);
    if (cs->head == NULL)
        goto not_stored;
    {
        const char *eol = memchr(raw, '\n', rawlen);
        size_t first = eol ? (size_t)(eol - raw) + 1 : 0;
        memcpy(cs->head, raw, first);
        cs->headlen = first;
        for (size_t i = 0; i < r->num_headers; i++) {
            const http_header_t *h = &r->headers[i];
            if (lg_http_is_hop_by_hop(h, ri->connection) || http_name_eq(h, "age") ||
                (http_name_eq(h, "set-cookie") && rule != LG_STORE_YES) ||
                ((cc->no_cache_fields || cc->private_fields) && in_fields(cc->fields, h)))
                continue;
            if (cs->gz_store && http_name_eq(h, "content-length"))
                continue;
            int weak = cs->gz_store && http_name_eq(h, "etag") && h->value_len && h->value[0] == '"';
            int add_ae = 0;
            if (cs->gz_store && http_name_eq(h, "vary")) {
                /* once, on the first line, if no line names it */
                add_ae = !vary_ae && !lg_vary_has(&f.vary, "accept-encoding");
                vary_ae = 1;
            }
            size_t need = h->name_len + h->value_len + 4 + 2 + 17;
            char *nh = realloc(cs->head, cs->headlen + need + 3);
            if (nh == NULL)
                goto not_stored;
            cs->head = nh;
            memcpy(cs->head + cs->headlen, h->name, h->name_len);
            cs->headlen += h->name_len;
            memcpy(cs->head + cs->headlen, weak ? ": W/" : ": ", weak ? 4 : 2);
            cs->headlen += weak ? 4 : 2;
            memcpy(cs->head + cs->headlen, h->value, h->value_len);
            cs->headlen += h->value_len;
            if (add_ae) {
                memcpy(cs->head + cs->headlen, ", Accept-Encoding", 17);
                cs->headlen += 17;
            }
            memcpy(cs->head + cs->headlen, "\r\n", 2);
            cs->headlen += 2;
        }
        if (cs->gz_store) {
            static const char ce[] = "Content-Encoding: gzip\r\n", va[] = "Vary: Accept-Encoding\r\n";
            char *nh = realloc(cs->head, cs->headlen + sizeof(ce) + sizeof(va) + 3);
            if (nh == NULL)
                goto not_stored;
            cs->head = nh;
            memcpy(cs->head + cs->headlen, ce, sizeof(ce) - 1);
            cs->headlen += sizeof(ce) - 1;
            if (!vary_ae) {
                memcpy(cs->head + cs->headlen, va, sizeof(va) - 1);
                cs->headlen += sizeof(va) - 1;
            }
        }
        memcpy(cs->head + cs->headlen, "\r\n", 2);
        cs->headlen += 2;
    }
    if (f.vary.len) {
        /* the variant key, and a marker under the base naming the fields */
        cs->vary = lg_arena_strndup(&s->arena, f.vary.fields, f.vary.len);
        char *vk = cs->vary ? variant_key(s, cs->base, cs->vary) : NULL;
        if (vk == NULL)
            goto not_stored;
        cs->key = vk;
        cs->keylen = strlen(vk);
    } else {
        cs->key = cs->base;
        cs->keylen = cs->baselen;
    }
    if (to_disk) {
        cs->dfill = lg_arena_calloc(&s->arena, sizeof(lg_disk_fill_t));
        if (cs->dfill == NULL)
            goto not_stored;
        cs->dfill->fd = -1;
        if (lg_disk_fill_start(cs->dfill, cs->key, cs->keylen, &cs->newmeta, cs->head,
                               cs->headlen, (uint64_t)ri->length) < 0)
            goto not_stored;
        cs->capturing = 1;      /* the tap writes the file */
        return 0;
    }
    cs->capmax = lg_store_max_object(lg_cache);
    cs->cap = malloc(ri->body == LG_BODY_LENGTH ? (size_t)ri->length + 1 : cs->capmax);
    if (cs->cap == NULL)
        goto not_stored;
    cs->caplen = 0;
    cs->capturing = 1;          /* lg_cache_tap() hooks it to the body pipe */
    return 0;

not_stored:
    if (cs->filler) {
        lg_store_abandon(lg_cache, cs->base, cs->baselen);
        cs->filler = 0;
    }
    return 0;
}

/* An unsafe method that succeeded invalidates what it may have changed (RFC 9111 4.4). */
static void drop_key(lg_req_t *s, const char *base, size_t n, int soft, int *count)
{
    /* the object (or its Vary marker) and every variant: "base\n..." */
    *count += soft ? lg_store_expire(lg_cache, base, n) : lg_store_delete(lg_cache, base, n);
    /* a file of the disk tier is removed even by a soft purge: it is
     * fetched again instead of revalidated */
    *count += lg_disk_remove(base, n);
    char *vp = lg_arena_printf(&s->arena, "%.*s\n", (int)n, base);
    if (vp) {
        *count += lg_store_purge_prefix(lg_cache, vp, n + 1, soft);
        *count += lg_disk_remove_prefix(vp, n + 1);
    }
}

/*
 * RFC 9111 4.4: the target URI, and the URIs in Location and
 * Content-Location when they are of the same origin (a path, or an absolute
 * URI naming the request's own authority): their keys are made with the
 * route's cache_key as if they had been requested.
 */
/* The key a same-origin URI (a path, or an absolute URI with the request's
 * authority) would have, made with the route's cache_key; NULL for another
 * origin. */
static const char *key_of_uri(lg_req_t *s, const char *u)
{
    if (strncasecmp(u, "http://", 7) == 0 || strncasecmp(u, "https://", 8) == 0) {
        const char *a = strstr(u, "://") + 3;
        size_t al = strcspn(a, "/?#");
        if (al != s->ri.authority.n || strncasecmp(a, s->ri.authority.p, al) != 0)
            return NULL;                /* another origin: not ours to touch */
        u = a + al;
    }
    if (u[0] != '/')
        return NULL;
    lg_str_t saved = s->ri.uri;
    s->ri.uri.p = u;
    s->ri.uri.n = strcspn(u, "#");
    const char *key = lg_vars_expand(s, key_template(s, lg_req_common(s)), LG_VARS_ESCAPE, NULL);
    s->ri.uri = saved;
    return key;
}

static void invalidate(lg_req_t *s, lg_cstate_t *cs)
{
    int n = 0;
    drop_key(s, cs->base, cs->baselen, 0, &n);
    for (int k = 0; k < 2; k++) {
        const char *key = cs->also[k] ? key_of_uri(s, cs->also[k]) : NULL;
        if (key && strcmp(key, cs->base) != 0)
            drop_key(s, key, strlen(key), 0, &n);
    }
}

static void on_finish(lg_req_t *s, int complete)
{
    lg_cstate_t *cs = CS(s);
    if (cs == NULL || lg_cache == NULL)
        return;
    if (complete && s->rspp.done)
        store(cs);                      /* a body the tap never saw end (empty, close-delimited) */
    on_close(s);
}

static void on_close(void *arg)
{
    lg_req_t *s = arg;
    lg_cstate_t *cs = CS(s);
    if (cs == NULL)
        return;
    if (cs->filler && lg_cache) {
        lg_store_abandon(lg_cache, cs->base, cs->baselen);
        cs->filler = 0;
    }
    s->rspp.tap = NULL;
    if (cs->dfill)
        lg_disk_fill_abort(cs->dfill);  /* not complete: its temporary file goes */
    if (cs->dfd >= 0)
        close(cs->dfd);
    cs->dfd = -1;
    free(cs->dhead);
    free(cs->dbuf);
    cs->dhead = cs->dbuf = NULL;
    free(cs->obj);
    free(cs->cap);
    free(cs->head);
    free(cs->out);
    cs->obj = cs->cap = cs->head = cs->out = NULL;
    cs->capturing = 0;
}

/* ---- the phases ---- */

/* CACHE: a stored answer, a purge, or a wait for another worker's fill. */
static int cache_lookup(lg_req_t *s)
{
    if (s->ri.connect || (s->route == NULL && !lg_req_is_forward(s)))
        return LG_DECLINED;
    if (!on_request(s))
        return LG_OK;
    return s->stage == &wait_stage ? LG_AGAIN : LG_DONE;
}

static lg_msec_t wait_arm(lg_req_t *s, lg_tkind_t *kind)
{
    (void)s;
    *kind = LG_T_WAIT;
    return 10;
}

static void wait_step(lg_req_t *s)
{
    (void)s;                    /* the timer looks again */
}

/* Look again: answered, still waiting, or fetch it ourselves after all. */
static void wait_timeout(lg_req_t *s, lg_tkind_t kind)
{
    (void)kind;
    if (on_request(s))
        return;
    lg_req_resume(s);
}

static const lg_stage_t wait_stage = {
    .name = "waiting for the cache", .step = wait_step, .arm = wait_arm, .timeout = wait_timeout,
};

/* cache_targeted_remove: the targeted fields are this cache's, not the client's */
static void drop_targeted(const lg_common_t *c, http_response_t *r)
{
    if (!c->cache_targeted_remove || c->cache_targeted_fields == NULL)
        return;
    size_t k = 0;
    for (size_t i = 0; i < r->num_headers; i++) {
        int drop = 0;
        for (size_t t = 0; t < c->cache_targeted_fields->n && !drop; t++)
            drop = http_name_eq(&r->headers[i], c->cache_targeted_fields->v[t]);
        if (!drop)
            r->headers[k++] = r->headers[i];
    }
    r->num_headers = k;
}

/* RESPONSE: store it, or answer from the cache instead (a 304, stale on error). */
static int cache_response(lg_req_t *s)
{
    if (on_response(s, s->rsp, s->rsp_ri, s->rsp_raw, s->rsp_raw_len))
        return LG_DONE;
    /* what was stored keeps them; what the client gets does not.  The head
     * is the reader's (non-const, on its stack) for this phase. */
    if (CS(s) && CS(s)->base)
        drop_targeted(lg_req_common(s), (http_response_t *)s->rsp);
    return LG_OK;
}

/* BODY: the fill sees every byte of the body. */
static int cache_body(lg_req_t *s)
{
    lg_cstate_t *cs = CS(s);
    if (cs && cs->capturing) {
        s->rspp.tap = cap_append;
        s->rspp.tap_arg = cs;
    }
    return LG_OK;
}

/* UPSTREAM_ERROR: stale-if-error, cache_use_stale error / timeout / invalid_header. */
static int cache_error(lg_req_t *s)
{
    lg_cstate_t *cs = CS(s);
    if (cs == NULL || cs->obj == NULL)
        return LG_DECLINED;
    const char *sw = cs->use_stale ? failure_word(s->upstream_cond) : NULL;
    if (!cs->stale_ok && !(sw && use_stale(lg_req_common(s), sw)))
        return LG_DECLINED;
    serve(s, cs, "STALE");
    return LG_DONE;
}

static int cache_log(lg_req_t *s)
{
    on_finish(s, 1);
    return LG_OK;
}

/*
 * Objects leaving the memory tier go on in the disk tier: fresh whole 200
 * answers stored as they came (not those the cache compressed, not Vary
 * markers -- a variant whose marker left memory is fetched again).
 */
static void demote(void *arg, const char *key, size_t kl, const lg_cmeta_t *m, const char *head,
                   size_t hl, const char *body, size_t bl)
{
    int64_t now = *(const int64_t *)arg;
    if (m->status != 200 || (m->flags & LG_CF_GZIPPED) || m->expires <= now ||
        (hl >= sizeof(VARY_MARK) - 1 && memcmp(head, VARY_MARK, sizeof(VARY_MARK) - 1) == 0))
        return;
    lg_disk_put(key, kl, m, head, hl, body, bl);
}

/* Worker 0 keeps the disk tier: reads it back after a restart, a few files
 * every 10 ms; then, every 100 ms, moves what is about to leave the memory
 * tier there (at most 4 MiB each time), and once a second removes inactive
 * files. */
static lg_timer_t disk_timer;

static void disk_tick(lg_timer_t *t)
{
    static unsigned ticks;
    if (!lg_disk_ready()) {
        lg_disk_tick();
        lg_timer_set(&lg_w.loop, t, 10);
        return;
    }
    int64_t now = lg_wall_ms();
    if (lg_cache)
        lg_store_demote(lg_cache, 4 << 20, demote, &now);
    if (++ticks % 10 == 0)
        lg_disk_tick();
    lg_timer_set(&lg_w.loop, t, 100);
}

static int cache_init(void)
{
    if (lg_disk && lg_w.slot == 0) {
        disk_timer.cb = disk_tick;
        lg_timer_set(&lg_w.loop, &disk_timer, 10);
    }
    return 0;
}

const lg_feature_t lg_feature_cache = {
    .name = "cache",
    .init = cache_init,
    .handlers = {
        { LG_PH_CACHE, cache_lookup },
        { LG_PH_RESPONSE, cache_response },
        { LG_PH_BODY, cache_body },
        { LG_PH_UPSTREAM_ERROR, cache_error },
    },
    .ctx_slot = &cache_slot,
};

/* After the access log, so the log still sees the cache's view. */
const lg_feature_t lg_feature_cache_log = {
    .name = "cache bookkeeping",
    .handlers = { { LG_PH_LOG, cache_log } },
};
