/*
 * Answers made from what the cache holds (see http_int.h): a stored
 * object served whole or as 304, one range or several (multipart/byteranges),
 * recoded for the client (gunzip, or a coding the route chose), a stored
 * partial answer, and files of the disk tier sent in pieces by a stage of
 * their own.
 */
#include "cache/http_int.h"

#include "feature/coding.h"
#include "feature/metrics.h"
#include "pipeline/headers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <fcntl.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "http/codec.h"
#include "http/date.h"
#include "http/negotiate.h"

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

const http_header_t *lg_cache_find_h(const http_response_t *r, const char *name)
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
char *lg_cache_compress_all(lg_req_t *s, lg_xform_t xf, const char *in, size_t n, size_t *out_len)
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

void lg_cache_serve(lg_req_t *s, lg_cstate_t *cs, const char *xcache)
{
    http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, cs->hl + 1, LG_MAX_HEADERS };
    size_t scanned = 0;
    if (hs == NULL || http_parse_response(cs->obj, cs->hl, &r, &lim, &scanned) <= 0) {
        lg_respond_error(s, 500);
        return;
    }
    lg_cache_drop_targeted(lg_req_common(s), &r);
    if (r.status == 206) {
        lg_cache_serve_partial(s, cs, &r, xcache);
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
    const http_header_t *etag = lg_cache_find_h(&r, "etag"), *lm = lg_cache_find_h(&r, "last-modified");
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
        gz = lg_cache_compress_all(s, xf, body, blen, &gzlen);
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

/*
 * A file's bytes never hold the worker for long.  The next piece is first
 * asked for without waiting for the disk: for sendfile(2) mincore(2) on a
 * mapping of the file says whether it is in the page cache, for a read
 * preadv2(RWF_NOWAIT) reads only what is there.  A piece that is not
 * there is asked of the kernel's readahead (POSIX_FADV_WILLNEED), and the
 * answer waits on its timer -- 1, 2, 4, 8, 16 ms, then 16 ms again --
 * while the worker serves others; after DWAIT_MAX turns (about 0.1 s) it
 * is read on the loop after all, one piece: a disk that slow is counted
 * (legate_cache_disk_blocked_reads_total), not waited for forever.
 * Opening a file and reading its header (a few KiB) happen on the loop.
 */
#define DCHUNK    (64 * 1024)   /* one read into the buffer (TLS, HTTP/2, HTTP/3) */
#define SCHUNK    (256 * 1024)  /* one sendfile(2) on a plain socket */
#define AHEAD     (1024 * 1024) /* what the readahead is asked for when a piece is missing */
#define DWAIT_MAX 10

static const lg_stage_t disk_stage;

void lg_cache_disk_release(lg_cstate_t *cs)
{
    if (cs->dcoding)
        lg_codec_end(&cs->dcodec);
    cs->dcoding = 0;
    free(cs->obuf);
    cs->obuf = NULL;
    if (cs->dmap)
        munmap(cs->dmap, cs->dmaplen);
    cs->dmap = NULL;
    if (cs->dfd >= 0)
        close(cs->dfd);
    cs->dfd = -1;
    free(cs->dhead);
    free(cs->dbuf);
    cs->dhead = cs->dbuf = NULL;
    cs->dheld = 0;
}

/* Is [off, off + n) of the file in the page cache?  (1 when it cannot tell.) */
static int resident(lg_cstate_t *cs, uint64_t off, size_t n)
{
    static size_t pg;
    if (pg == 0)
        pg = (size_t)sysconf(_SC_PAGESIZE);
    uint64_t a = off & ~(uint64_t)(pg - 1);
    size_t len = (size_t)(off + n - a);
    unsigned char vec[SCHUNK / 512 + 2];
    if (cs->dmap == NULL || (len + pg - 1) / pg > sizeof(vec) ||
        mincore(cs->dmap + a, len, vec) < 0)
        return 1;
    for (size_t i = 0; i < (len + pg - 1) / pg; i++)
        if (!(vec[i] & 1))
            return 0;
    return 1;
}

/* The piece at off is not in memory: 0 and a turn waited (readahead asked
 * for it), or 1 when it has been waited for long enough: read it now. */
static int disk_wait(lg_cstate_t *cs, uint64_t off, uint64_t left)
{
    if (cs->dwaits >= DWAIT_MAX) {
        cs->dwaits = 0;
        lg_disk_count(LG_DISK_BLOCKED, 1);
        return 1;
    }
    if (cs->dwaits++ == 0) {
        posix_fadvise(cs->dfd, (off_t)off, (off_t)(left < AHEAD ? left : AHEAD), POSIX_FADV_WILLNEED);
        lg_disk_count(LG_DISK_WAIT, 1);
    }
    cs->dwaiting = 1;
    return 0;
}

/* The next piece of the file range left bytes long at off: sent with
 * sendfile(2), or read into the buffer.  LG_OK (go on), LG_AGAIN (the
 * socket is full, or the disk is being waited for), LG_ERROR (aborted). */
static int disk_piece(lg_req_t *s, lg_cstate_t *cs, uint64_t off, uint64_t left)
{
    lg_end_t *ce = s->cend;
    if (cs->dsendfile) {
        size_t want = left < SCHUNK ? (size_t)left : SCHUNK;
        if (!resident(cs, off, want) && !disk_wait(cs, off, left))
            return LG_AGAIN;
        off_t o = (off_t)off;
        ssize_t n = sendfile(ce->io.fd, cs->dfd, &o, want);
        if (n > 0) {
            cs->dsent += (uint64_t)n;
            s->bytes_out += (uint64_t)n;
            cs->dwaits = 0;
            lg_disk_count(LG_DISK_SENDFILE, (uint64_t)n);
            if ((size_t)n < want)
                lg_end_short_write(ce);
            return LG_OK;
        }
        if (n < 0 && errno == EINTR)
            return LG_OK;
        if (n < 0 && errno == EAGAIN) {
            ce->w_ready = 0;
            ce->want_w = 1;
            return LG_AGAIN;
        }
        lg_error("cache: sendfile() of a file of the disk tier for \"%s\" failed: %s", cs->key,
                 n < 0 ? strerror(errno) : "end of file");
        lg_req_abort(s, "sendfile() failed");
        return LG_ERROR;
    }
    size_t want = left < DCHUNK ? (size_t)left : DCHUNK;
    struct iovec v = { cs->dbuf, want };
    ssize_t n = -1;
    errno = EAGAIN;
    if (cs->dnowait) {
        n = preadv2(cs->dfd, &v, 1, (off_t)off, RWF_NOWAIT);
        if (n < 0 && (errno == EOPNOTSUPP || errno == EINVAL))
            cs->dnowait = 0;    /* not on this file system: plain reads */
    }
    if (n < 0 && errno == EAGAIN && cs->dnowait && !disk_wait(cs, off, left))
        return LG_AGAIN;
    if (n < 0 && (errno == EAGAIN || !cs->dnowait))
        n = pread(cs->dfd, cs->dbuf, want, (off_t)off);
    if (n < 0 && errno == EINTR)
        return LG_OK;
    if (n <= 0) {
        lg_error("cache: reading a file of the disk tier for \"%s\" failed: %s", cs->key,
                 n < 0 ? strerror(errno) : "end of file");
        lg_req_abort(s, "cache file read failed");
        return LG_ERROR;
    }
    cs->dwaits = 0;
    cs->dpos = 0;
    cs->dlen = (size_t)n;
    cs->dsent += (uint64_t)n;
    lg_disk_count(LG_DISK_READ, (uint64_t)n);
    return LG_OK;
}

#define OCAP (DCHUNK + 64)      /* coded output: one chunk and its framing */
#define OHDR 16                 /* room before it for the chunk's size line */

/* A coded answer: the file's next bytes through the encoder into obuf,
 * framed as a chunk for HTTP/1.1 (the last one after the coder's end).
 * LG_OK, LG_AGAIN (the disk is being waited for), LG_ERROR (aborted). */
static int disk_code(lg_req_t *s, lg_cstate_t *cs, const lg_dseg_t *g)
{
    if (cs->dpos == cs->dlen && cs->dsent < g->len) {
        int rc = disk_piece(s, cs, g->off + cs->dsent, g->len - cs->dsent);
        if (rc != LG_OK)
            return rc;
    }
    int last = cs->dsent == g->len;
    size_t used = 0, room = OCAP - OHDR - 7;        /* CRLF, and "0" CRLF CRLF */
    ssize_t k = lg_codec_run(&cs->dcodec, cs->dbuf + cs->dpos, cs->dlen - cs->dpos, &used,
                             cs->obuf + OHDR, room, last ? LG_CODEC_FINISH : 0);
    if (k < 0) {
        lg_error("cache: coding a file of the disk tier for \"%s\" failed (%d)", cs->key, (int)k);
        lg_req_abort(s, "coding failed");
        return LG_ERROR;
    }
    cs->dpos += used;
    size_t start = OHDR, end = OHDR + (size_t)k;
    if (cs->dchunked && k > 0) {
        char hx[OHDR];
        int hn = snprintf(hx, sizeof(hx), "%zx\r\n", (size_t)k);
        start = OHDR - (size_t)hn;
        memcpy(cs->obuf + start, hx, (size_t)hn);
        memcpy(cs->obuf + end, "\r\n", 2);
        end += 2;
    }
    if (last && cs->dcodec.done && cs->dpos == cs->dlen && (size_t)k < room) {
        if (cs->dexpect >= 0 && cs->dcodec.total_out != (uint64_t)cs->dexpect) {
            /* the head announced the identity's length */
            lg_error("cache: a file of the disk tier for \"%s\" does not decompress to its length",
                     cs->key);
            lg_req_abort(s, "stored gzip copy is damaged");
            return LG_ERROR;
        }
        if (cs->dchunked) {
            memcpy(cs->obuf + end, "0\r\n\r\n", 5);
            end += 5;
        }
        cs->dcoded = 1;
    }
    cs->opos = start;
    cs->olen = end;
    return LG_OK;
}

/* The head, then the pieces: memory as it is, the file's ranges piece by
 * piece as the client takes them (or coded on the way). */
static void disk_step(lg_req_t *s)
{
    lg_cstate_t *cs = CS(s);
    lg_end_t *ce = s->cend;
    cs->dwaiting = 0;
    for (;;) {
        const lg_dseg_t *g = cs->dcur < cs->dnseg ? &cs->dseg[cs->dcur] : NULL;
        struct iovec iov[2];
        int cnt = 0, mem = 0;
        if (s->local_sent < s->local_len) {
            iov[cnt].iov_base = (void *)(s->local + s->local_sent);
            iov[cnt++].iov_len = s->local_len - s->local_sent;
        }
        if (cs->dcoding) {
            if (cs->opos < cs->olen) {
                iov[cnt].iov_base = cs->obuf + cs->opos;
                iov[cnt++].iov_len = cs->olen - cs->opos;
            }
        } else if (cs->dpos < cs->dlen) {
            iov[cnt].iov_base = cs->dbuf + cs->dpos;
            iov[cnt++].iov_len = cs->dlen - cs->dpos;
        } else if (g && g->mem && cs->dsent < g->len) {
            iov[cnt].iov_base = (void *)(g->mem + cs->dsent);
            iov[cnt++].iov_len = (size_t)(g->len - cs->dsent);
            mem = 1;
        }
        if (cnt == 0) {
            if (g == NULL)
                break;          /* all sent */
            if (cs->dcoding) {
                if (cs->dcoded) {
                    cs->dcur++;
                    continue;
                }
                if (disk_code(s, cs, g) != LG_OK)
                    return;
                continue;
            }
            if (cs->dsent == g->len) {
                cs->dcur++;
                cs->dsent = 0;
                continue;
            }
            if (!ce->w_ready) {
                ce->want_w = 1;
                return;
            }
            if (disk_piece(s, cs, g->off + cs->dsent, g->len - cs->dsent) != LG_OK)
                return;
            continue;
        }
        if (!ce->w_ready) {
            ce->want_w = 1;
            return;
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
        if (cs->dcoding)
            cs->opos += k;
        else if (mem)
            cs->dsent += k;
        else
            cs->dpos += k;
    }
    lg_cache_disk_release(cs);
    lg_req_finish(s);
}

static lg_msec_t disk_arm(lg_req_t *s, lg_tkind_t *kind)
{
    lg_cstate_t *cs = CS(s);
    if (cs->dwaiting) {
        *kind = LG_T_WAIT;
        return (lg_msec_t)1 << (cs->dwaits < 5 ? cs->dwaits - 1 : 4);
    }
    *kind = LG_T_SEND;
    return lg_req_common(s)->send_timeout;
}

static void disk_timeout(lg_req_t *s, lg_tkind_t kind)
{
    if (kind == LG_T_WAIT)
        return;                 /* the step looks at the page cache again */
    lg_req_abort(s, "client timed out receiving the response");
}

static const lg_stage_t disk_stage = {
    .name = "sending from the disk cache", .step = disk_step, .arm = disk_arm,
    .timeout = disk_timeout,
};

int lg_cache_disk_open(lg_req_t *s, lg_cstate_t *cs)
{
    (void)s;
    lg_cache_disk_release(cs);
    lg_cmeta_t meta;
    int fd = lg_disk_open(cs->key, cs->keylen, &meta, &cs->dhead, &cs->dhl, &cs->doff, &cs->dblen);
    if (fd < 0)
        return 0;
    cs->dfd = fd;
    cs->dheld = 1;
    cs->meta = meta;
    return 1;
}

/* One more piece of the answer's body (arena): 0 or -1. */
static int add_seg(lg_req_t *s, lg_cstate_t *cs, int room, const char *mem, uint64_t off, uint64_t len)
{
    if (cs->dseg == NULL && (cs->dseg = lg_arena_alloc(&s->arena, sizeof(lg_dseg_t) * (size_t)room)) == NULL)
        return -1;
    if (cs->dnseg >= room)
        return -1;
    cs->dseg[cs->dnseg++] = (lg_dseg_t){ .mem = mem, .off = off, .len = len };
    return 0;
}

/*
 * As from memory: 304 for a matching conditional, HEAD, one range (206 or
 * 416) or several (multipart/byteranges, the parts' bytes sent from the
 * file); a stored status other than 200 as it is.  The stored bytes as
 * they are: no coding is applied on the way.
 */
void lg_cache_disk_serve(lg_req_t *s, lg_cstate_t *cs, const char *xcache)
{
    int64_t now = lg_wall_ms();
    http_header_t *hs = lg_arena_alloc(&s->arena, sizeof(http_header_t) * LG_MAX_HEADERS);
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, cs->dhl + 1, LG_MAX_HEADERS };
    size_t scanned = 0;
    if (hs == NULL || http_parse_response(cs->dhead, cs->dhl, &r, &lim, &scanned) <= 0) {
        lg_cache_disk_release(cs);
        lg_respond_error(s, 500);
        return;
    }
    if (cs->filler) {
        lg_store_abandon(lg_cache, cs->base, cs->baselen);
        cs->filler = 0;
    }
    lg_cache_drop_targeted(lg_req_common(s), &r);
    cs->s->cache_status = xcache;
    s->cache_age = cs->meta.age0 + (now - cs->meta.stored) / 1000;
    if (s->cache_age < 0)
        s->cache_age = 0;
    uint64_t blen = cs->dblen;
    const http_header_t *inm = lg_headers_get(s, "if-none-match");
    const http_header_t *ims = lg_headers_get(s, "if-modified-since");
    const http_header_t *etag = lg_cache_find_h(&r, "etag"), *lm = lg_cache_find_h(&r, "last-modified");
    int status = r.status;
    if (r.status == 200 && inm && etag && etag_match(inm->value, inm->value_len, etag->value, etag->value_len))
        status = 304;
    else if (r.status == 200 && !inm && ims && lm) {
        int64_t a = lg_http_date(ims->value, ims->value_len), b = lg_http_date(lm->value, lm->value_len);
        if (a >= 0 && b >= 0 && b <= a)
            status = 304;
    }
    /* as from memory: the route's coding for a client that takes it (a
     * stored body the origin compressed is sent as it is), and then no
     * ranges (they are about the identity bytes) */
    lg_rsp_info_t ri = { .body = LG_BODY_LENGTH, .length = (int64_t)blen, .keep_alive = 1 };
    lg_xform_t xf = LG_XFORM_NONE;
    int gzipped = (cs->meta.flags & LG_CF_GZIPPED) != 0;
    if (status != 304 && !gzipped)
        xf = lg_coding_choose(s, &r, &ri);
    if (xf != LG_XFORM_GZIP && xf != LG_XFORM_BR && xf != LG_XFORM_ZSTD)
        xf = LG_XFORM_NONE;
    int vary_ae = xf != LG_XFORM_NONE || lg_coding_compressible(s, &r, &ri);
    uint64_t out = status == 304 ? 0 : blen;
    if (gzipped) {
        /* the cache's gzip copy: as it is for a gzip client, gunzipped on
         * the way (its length known) for the others */
        const http_header_t *ae = lg_headers_get(s, "accept-encoding");
        if (!(ae && lg_negotiate_choose(ae->value, ae->value_len, LG_ENC_BIT(LG_ENC_GZIP)) ==
                    LG_ENC_GZIP)) {
            xf = LG_XFORM_GUNZIP;
            if (out)
                out = (uint64_t)cs->meta.identity_len;
        }
    }
    /* ranges are about the identity bytes: not of a coded answer, nor of
     * the gzip copy (the whole is sent; memory's copy is gunzipped for them) */
    lg_range_t *rs = NULL;
    int range = status == 200 && xf == LG_XFORM_NONE && !gzipped && if_range_holds(s, etag, lm)
                ? client_ranges(s, (int64_t)blen, &rs) : 0;
    cs->dseg = NULL;
    cs->dnseg = cs->dcur = 0;
    cs->dsent = 0;
    s->cache_range = NULL;
    if (range == 1) {
        status = 206;
        out = (uint64_t)(rs[0].to - rs[0].from + 1);
        s->cache_range = lg_arena_printf(&s->arena, "bytes %lld-%lld/%llu", (long long)rs[0].from,
                                         (long long)rs[0].to, (unsigned long long)blen);
        if (add_seg(s, cs, 1, NULL, cs->doff + (uint64_t)rs[0].from, out) < 0)
            goto fail;
    } else if (range > 1) {
        /* the parts' headers in memory, their bytes from the file */
        char boundary[32];
        const http_header_t *ct = NULL;
        if (multipart_type(s, &r, &ct, boundary, sizeof(boundary)) < 0)
            goto fail;
        status = 206;
        out = 0;
        for (int i = 0; i < range; i++) {
            const char *ph = lg_arena_printf(&s->arena, "%s--%s\r\n%s%.*s%sContent-Range: bytes %lld-%lld/%llu\r\n\r\n",
                                             i ? "\r\n" : "", boundary, ct ? "Content-Type: " : "",
                                             ct ? (int)ct->value_len : 0, ct ? ct->value : "",
                                             ct ? "\r\n" : "", (long long)rs[i].from,
                                             (long long)rs[i].to, (unsigned long long)blen);
            uint64_t len = (uint64_t)(rs[i].to - rs[i].from + 1);
            if (ph == NULL || add_seg(s, cs, 2 * range + 1, ph, 0, strlen(ph)) < 0 ||
                add_seg(s, cs, 2 * range + 1, NULL, cs->doff + (uint64_t)rs[i].from, len) < 0)
                goto fail;
            out += strlen(ph) + len;
        }
        const char *end = lg_arena_printf(&s->arena, "\r\n--%s--\r\n", boundary);
        if (end == NULL || add_seg(s, cs, 2 * range + 1, end, 0, strlen(end)) < 0)
            goto fail;
        out += strlen(end);
    } else if (range < 0) {
        status = 416;
        out = 0;
        s->cache_range = lg_arena_printf(&s->arena, "bytes */%llu", (unsigned long long)blen);
    } else if (out && add_seg(s, cs, 1, NULL, cs->doff, blen) < 0) {
        goto fail;
    }
    r.status = status;
    r.reason = lg_http_reason(status);
    r.reason_len = strlen(r.reason);
    ri.length = (int64_t)out;
    s->cache_length = (int64_t)out;
    s->cache_serving = 1;
    int chunked = 0;
    if (xf == LG_XFORM_GUNZIP) {
        /* the length is the identity's, known */
    } else if (xf != LG_XFORM_NONE && out) {
        /* coded on the way: a length nobody knows yet -- chunks for
         * HTTP/1.1, the stream's own framing for HTTP/2 and HTTP/3, the
         * close for HTTP/1.0 */
        s->cache_length = -1;
        chunked = s->req.version == 11;
        if (s->req.version < 11)
            s->keep_alive = 0;
    } else {
        xf = LG_XFORM_NONE;
    }
    size_t len = 0;
    char *h = lg_headers_client(s, &r, &ri, chunked, xf, vary_ae, &len);
    s->upstream_status = 0;
    if (h == NULL)
        goto fail;
    if (s->ri.is_head || out == 0) {
        lg_cache_disk_release(cs);
        lg_respond_raw(s, status, h, len, NULL, 0);
        return;
    }
    /* a plain socket takes the file's bytes with sendfile(2); TLS and the
     * streams of HTTP/2 and HTTP/3 get them through a buffer */
    cs->dsendfile = s->cend->ops == NULL && s->cend->ssl == NULL && xf == LG_XFORM_NONE;
    cs->dnowait = 1;
    cs->dcoded = 0;
    if (xf != LG_XFORM_NONE) {
        const lg_common_t *c = lg_req_common(s);
        lg_codec_params_t prm = { 0 };
        prm.level = xf == LG_XFORM_BR ? (c->brotli_level ? c->brotli_level : -1)
                  : xf == LG_XFORM_ZSTD ? c->zstd_level : c->gzip_level;
        prm.length_hint = blen;
        lg_codec_kind_t kind = xf == LG_XFORM_BR ? LG_CODEC_BR_ENCODE
                             : xf == LG_XFORM_ZSTD ? LG_CODEC_ZSTD_ENCODE
                             : xf == LG_XFORM_GUNZIP ? LG_CODEC_GZIP_DECODE : LG_CODEC_GZIP_ENCODE;
        if (xf == LG_XFORM_GUNZIP) {
            prm = (lg_codec_params_t){ .max_out = out };    /* what the head said */
            cs->dexpect = (int64_t)out;
        } else {
            cs->dexpect = -1;
        }
        if ((cs->obuf = malloc(OCAP)) == NULL ||
            lg_codec_init(&cs->dcodec, kind, &prm, &s->arena) != 0)
            goto fail;
        cs->dcoding = 1;
        cs->dchunked = chunked;
        cs->opos = cs->olen = 0;
    }
    cs->dwaits = cs->dwaiting = 0;
    cs->dpos = cs->dlen = 0;
    if (!cs->dsendfile && (cs->dbuf = malloc(DCHUNK)) == NULL)
        goto fail;
    cs->dmaplen = (size_t)(cs->doff + cs->dblen);
    if (cs->dsendfile) {
        void *m = mmap(NULL, cs->dmaplen, PROT_READ, MAP_SHARED, cs->dfd, 0);
        cs->dmap = m == MAP_FAILED ? NULL : m;
        if (cs->dmap == NULL && (cs->dbuf = malloc(DCHUNK)) == NULL)
            goto fail;
        if (cs->dmap == NULL)
            cs->dsendfile = 0;  /* no way to ask the page cache: reads, which can */
    }
    s->status = status;
    s->local = h;
    s->local_len = len;
    s->local_sent = 0;
    s->bytes_out = 0;
    lg_req_set_stage(s, &disk_stage);
    return;

fail:
    lg_cache_disk_release(cs);
    lg_respond_error(s, 500);
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
int lg_cache_partial_covers(lg_req_t *s, lg_cstate_t *cs)
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
void lg_cache_forward_range(lg_req_t *s, lg_cstate_t *cs)
{
    const http_header_t *rg = lg_headers_get(s, "range");
    if (!lg_req_common(s)->cache_partial || rg == NULL || lg_headers_get(s, "if-range") ||
        rg->value_len > 1024 || rg->value_len < 7 || strncasecmp(rg->value, "bytes=", 6) != 0 ||
        memchr(rg->value, ',', rg->value_len) || memchr(rg->value, '\r', rg->value_len))
        return;
    cs->range_up = lg_cache_upstream_add(s, lg_arena_printf(&s->arena, "Range: %.*s\r\n",
                                                   (int)rg->value_len, rg->value));
}

/* A 206 from the cache: the client's ranges, cut from the stored part
 * (partial_covers said they are in it). */
void lg_cache_serve_partial(lg_req_t *s, lg_cstate_t *cs, http_response_t *r, const char *xcache)
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
int lg_cache_complete_partial(lg_cstate_t *cs)
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
    const http_header_t *e1 = lg_cache_find_h(&r1, "etag"), *e2 = lg_cache_find_h(&r2, "etag");
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

