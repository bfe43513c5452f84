/*
 * What the two halves of the cache feature share (private to src/cache):
 * http.c decides -- lookup, purge, what may be stored, the store itself --
 * and serve.c answers from what is stored -- whole, conditional, ranges,
 * recoded, from a stored part or from a file of the disk tier.
 */
#ifndef LEGATE_CACHE_HTTP_INT_H
#define LEGATE_CACHE_HTTP_INT_H

#include "cache/disk.h"
#include "cache/http.h"
#include "cache/policy.h"
#include "cache/store.h"
#include "http/codec.h"

#define VARY_MARK "LEGATE-VARY:"

/* A piece of an answer from a file: bytes in memory (a part's header of
 * multipart/byteranges), or a range of the file. */
typedef struct lg_dseg {
    const char *mem;            /* arena, or NULL: the file's bytes from off */
    uint64_t    off, len;
} lg_dseg_t;

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
    int         pass;           /* another node owns the key: passed through, not stored */
    int         counted;        /* this request's use is counted (once, not per wait) */
    int         gz_store;       /* store the body gzip-compressed (the route compresses) */
    int         range_up;       /* cache_partial: the client's Range went upstream */
    int         have_partial;   /* obj is a stored 206 that the answer may complete */
    int         use_stale;      /* obj is stale and may cover what cache_use_stale names */
    lg_disk_fill_t *dfill;      /* arena: the body goes to a file of the disk tier, or NULL */
    int         spill;          /* a body of unknown length: to a file once past capmax */
    char       *phead;          /* malloc: the head to store in that file (never the gzip one) */
    size_t      phl;
    /* a file of the disk tier for the key in use (fresh or stale: dheld),
     * then the answer made from it, sent by disk_stage */
    int         dheld;
    int         dfd;            /* -1 none (0 never: the state is calloc'd, see state()) */
    char       *dhead;          /* malloc: the head as stored (or as a 304 updated it) */
    size_t      dhl;
    uint64_t    doff, dblen;    /* where the body starts in the file, its length */
    char       *dmap;           /* mmap of the file (mincore: is it in the page cache?), or NULL */
    size_t      dmaplen;
    lg_dseg_t  *dseg;           /* arena: what the body is made of */
    int         dnseg, dcur;    /* how many, the one being sent */
    uint64_t    dsent;          /* bytes of dseg[dcur] sent (memory) or read (file) */
    char       *dbuf;           /* malloc: one read of the file */
    size_t      dpos, dlen;
    int         dsendfile;      /* a plain socket: file bytes go with sendfile(2) */
    int         dnowait;        /* preadv2(RWF_NOWAIT) works on this file */
    int         dwaits;         /* turns waited for the disk for the next piece */
    int         dwaiting;       /* waiting for it now (the stage's timer) */
    int         dcoding;        /* dcodec is live: the body is coded on the way */
    int         dchunked;       /* ...and framed as chunks (HTTP/1.1) */
    int         dcoded;         /* ...and its end is in obuf */
    int64_t     dexpect;        /* gunzip: the bytes the head announced, or -1 */
    lg_codec_t  dcodec;
    char       *obuf;           /* malloc: coded output (dbuf is the file's input then) */
    size_t      opos, olen;
    lg_req_t *s;            /* whose state this is */
} lg_cstate_t;

/* The request's view of the cache lives in its context slot. */
extern int lg_cache_slot;
#define CS(s) ((lg_cstate_t *)(s)->ctx[lg_cache_slot])

/* serve.c */
void lg_cache_serve(lg_req_t *s, lg_cstate_t *cs, const char *xcache);
/* The file of the key in use, held in cs (fresh or stale): 1, or 0 (none). */
int  lg_cache_disk_open(lg_req_t *s, lg_cstate_t *cs);
/* An answer from the held file (as lg_cache_serve from memory). */
void lg_cache_disk_serve(lg_req_t *s, lg_cstate_t *cs, const char *xcache);
/* The held file let go (descriptor, mapping, buffers). */
void lg_cache_disk_release(lg_cstate_t *cs);
int  lg_cache_partial_covers(lg_req_t *s, lg_cstate_t *cs);
void lg_cache_forward_range(lg_req_t *s, lg_cstate_t *cs);
void lg_cache_serve_partial(lg_req_t *s, lg_cstate_t *cs, http_response_t *r, const char *xcache);
int  lg_cache_complete_partial(lg_cstate_t *cs);
/* the whole body in the coding xf (what the route compresses with): malloc'd, *out_len */
char *lg_cache_compress_all(lg_req_t *s, lg_xform_t xf, const char *in, size_t n, size_t *out_len);

/* http.c, for serve.c */
int  lg_cache_fresh_enough(lg_cstate_t *cs, int64_t now);
const http_header_t *lg_cache_find_h(const http_response_t *r, const char *name);
/* Header lines for the upstream request after earlier phases' (1, or 0: nothing) */
int  lg_cache_upstream_add(lg_req_t *s, const char *lines);
/* Drop the targeted cache-control fields the route says to (RFC 9213) */
void lg_cache_drop_targeted(const lg_common_t *c, http_response_t *r);

#endif
