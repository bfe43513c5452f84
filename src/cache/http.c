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
 * This file decides (lookup, purge, what may be stored, the store); the
 * answers made from what is stored are serve.c's (http_int.h between them).
 *
 * A response with Vary is stored under a variant key (the base key plus the
 * request's values of the varied fields, Accept-Encoding normalised), with
 * a small marker under the base key naming the fields.
 */
#include "cache/http_int.h"

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
int lg_cache_slot;              /* the request's lg_cstate_t (CS) */

static const lg_stage_t wait_stage;

static void invalidate(lg_req_t *s, lg_cstate_t *cs);
static const char *conditional(lg_req_t *s, lg_cstate_t *cs);
static const char *key_of_uri(lg_req_t *s, const char *u);

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
int lg_cache_upstream_add(lg_req_t *s, const char *lines)
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

/* ---- the request ---- */

static void on_close(void *arg);

static lg_cstate_t *state(lg_req_t *s)
{
    if (CS(s) == NULL && (s->ctx[lg_cache_slot] = lg_arena_calloc(&s->arena, sizeof(lg_cstate_t)))) {
        CS(s)->s = s;
        CS(s)->dfd = -1;
        s->own_conditionals = 1;        /* the client's go nowhere: the cache answers them */
        lg_req_cleanup(s, on_close, s);
    }
    return CS(s);
}

static void drop_key(lg_req_t *s, const char *base, size_t n, int soft, int *count);

int (*lg_cache_shard)(lg_req_t *s, const char *key, size_t n);

/*
 * A miss: this worker fetches the key, unless another node of the fleet
 * owns it.  Then the fill mark goes at once (a local waiter goes to the
 * owner as well, where the fetches collapse), and the client's
 * conditionals and Range go on with the request.
 */
static int to_owner(lg_req_t *s, lg_cstate_t *cs)
{
    if (!lg_cache_shard || cs->have_partial || !lg_cache_shard(s, cs->base, cs->baselen))
        return 0;
    if (cs->filler) {
        lg_store_abandon(lg_cache, cs->base, cs->baselen);
        cs->filler = 0;
    }
    cs->pass = 1;
    s->own_conditionals = 0;
    s->cache_status = NULL;             /* the owner's X-Cache says what it did */
    return 1;
}

static int miss(lg_req_t *s, lg_cstate_t *cs)
{
    if (to_owner(s, cs))
        return 0;
    s->cache_status = "MISS";
    lg_cache_forward_range(s, cs);
    return 0;
}

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

int lg_cache_fresh_enough(lg_cstate_t *cs, int64_t now)
{
    return lg_cache_usable(&cs->req_cc, cs->meta.age0 * 1000 + (now - cs->meta.stored),
                           cs->meta.expires - now, (cs->meta.flags & LG_CF_MUST_REVALIDATE) != 0,
                           (cs->meta.flags & LG_CF_IMMUTABLE) != 0);
}

/* The object held for this request -- from memory, or a file of the disk
 * tier -- answers it. */
static void serve_held(lg_req_t *s, lg_cstate_t *cs, const char *xcache)
{
    if (cs->obj == NULL && cs->dheld)
        lg_cache_disk_serve(s, cs, xcache);
    else
        lg_cache_serve(s, cs, xcache);
}

/* The one refresh of a stale object (for all workers): 1 if it is ours. */
static int try_update(lg_cstate_t *cs, int64_t until)
{
    if (cs->obj == NULL && cs->dheld)
        return lg_disk_try_update(cs->key, cs->keylen, until);
    return lg_store_try_update(lg_cache, cs->key, cs->keylen, until);
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
    /* cache_min_uses is the owner's to count, for the whole fleet */
    if (c->cache_min_uses > 1 && !cs->filler && !cs->counted && to_owner(s, cs))
        return 0;
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
            if (lg_disk && lg_cache_disk_open(s, cs))
                break;                          /* a file: fresh or not, as from memory below */
            if (cs->req_cc.only_if_cached) {
                lg_respond_error(s, 504);
                return 1;
            }
            return miss(s, cs);
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
    if (cs->obj == NULL && !cs->dheld)
        return miss(s, cs);
    if (cs->meta.status == 206 && !cs->dheld) {
        /* a stored part: it answers ranges inside it while fresh; anything
         * else goes upstream, and what comes back may complete it */
        if (lg_cache_fresh_enough(cs, now) && lg_cache_partial_covers(s, cs)) {
            serve_held(s, cs, "HIT");
            return 1;
        }
        cs->have_partial = 1;
        cs->s->cache_status = "MISS";
        lg_cache_forward_range(s, cs);
        return 0;
    }
    if (lg_cache_fresh_enough(cs, now)) {
        serve_held(s, cs, "HIT");
        return 1;
    }
    if (cs->req_cc.only_if_cached) {
        serve_held(s, cs, "STALE");
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
        if (try_update(cs, until) &&
            lg_refresh_start(s) < 0)
            lg_error("cache: cannot start the background refresh of \"%s\"", cs->key);
        serve_held(s, cs, "UPDATING");
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
        if (!try_update(cs, until)) {
            serve_held(s, cs, "UPDATING");
            return 1;
        }
    }
    /* stale: keep it for a 304 or for stale-if-error, and revalidate */
    cs->stale_ok = cs->meta.stale_if_error > 0 &&
                   now - cs->meta.expires <= cs->meta.stale_if_error;
    cs->reval = (cs->meta.flags & LG_CF_HAS_VALIDATOR) != 0;
    cs->s->cache_status = "EXPIRED";
    if (cs->reval)
        lg_cache_upstream_add(s, conditional(s, cs));
    return 0;
}

/* Header lines for a conditional request upstream (revalidation), or NULL. */
static const char *conditional(lg_req_t *s, lg_cstate_t *cs)
{
    const char *head = cs->obj ? cs->obj : cs->dheld ? cs->dhead : NULL;
    size_t hl = cs->obj ? cs->hl : cs->dhl;
    if (head == NULL)
        return NULL;
    http_header_t hs[LG_MAX_HEADERS];
    http_response_t r = { .headers = hs };
    http_limits_t lim = { 16384, hl + 1, LG_MAX_HEADERS };
    size_t sc = 0;
    if (http_parse_response(head, hl, &r, &lim, &sc) <= 0)
        return NULL;
    const http_header_t *etag = lg_cache_find_h(&r, "etag"), *lm = lg_cache_find_h(&r, "last-modified");
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
        lg_cache_complete_partial(cs);           /* or stored as the part it is */
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
        char *z = lg_cache_compress_all(cs->s, LG_XFORM_GZIP, cs->cap, cs->caplen, &zl);
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

/* A body of unknown length outgrew the memory tier: what came so far goes
 * to a file of the disk tier, and the rest after it.  0, or -1 (not stored). */
static int spill(lg_cstate_t *cs)
{
    cs->spill = 0;
    cs->dfill = lg_arena_calloc(&cs->s->arena, sizeof(lg_disk_fill_t));
    if (cs->dfill == NULL)
        return -1;
    cs->dfill->fd = -1;
    const char *head = cs->phead ? cs->phead : cs->head;
    size_t hl = cs->phead ? cs->phl : cs->headlen;
    if (lg_disk_fill_start(cs->dfill, cs->key, cs->keylen, &cs->newmeta, head, hl,
                           LG_DISK_LEN_UNKNOWN) < 0 ||
        lg_disk_fill_write(cs->dfill, cs->cap, cs->caplen) < 0) {
        lg_disk_fill_abort(cs->dfill);
        cs->dfill = NULL;
        return -1;
    }
    free(cs->cap);
    cs->cap = NULL;
    cs->caplen = 0;
    cs->gz_store = 0;
    return 0;
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
        if (cs->spill && spill(cs) == 0) {
            if (lg_disk_fill_write(cs->dfill, p, n) < 0)
                cs->cap_over = 1;
            return;
        }
        cs->cap_over = 1;               /* too large: never stored */
        return;
    }
    memcpy(cs->cap + cs->caplen, p, n);
    cs->caplen += n;
}

/*
 * The head to store: as received, less fields not to be stored; for a body
 * stored compressed (gz), as a gzip response (weak ETag, Vary).  malloc'd,
 * *outlen, or NULL.
 */
static char *stored_head(const http_response_t *r, const lg_rsp_info_t *ri, const char *raw,
                         size_t rawlen, const facts_t *f, int rule, int gz, size_t *outlen)
{
    int vary_ae = 0;
    const lg_cc_t *cc = &f->cc;
    char *head = malloc(rawlen + 64);
    size_t hl = 0;
    if (head == NULL)
        return NULL;
    {
        const char *eol = memchr(raw, '\n', rawlen);
        size_t first = eol ? (size_t)(eol - raw) + 1 : 0;
        memcpy(head, raw, first);
        hl = first;
        for (size_t i = 0; i < r->num_headers; i++) {
            const http_header_t *h = &r->headers[i];
            if (lg_http_is_hop_by_hop(h, ri->connection) || http_name_eq(h, "age") ||
                (http_name_eq(h, "set-cookie") && rule != LG_STORE_YES) ||
                ((cc->no_cache_fields || cc->private_fields) && in_fields(cc->fields, h)))
                continue;
            if (gz && http_name_eq(h, "content-length"))
                continue;
            int weak = gz && http_name_eq(h, "etag") && h->value_len && h->value[0] == '"';
            int add_ae = 0;
            if (gz && http_name_eq(h, "vary")) {
                /* once, on the first line, if no line names it */
                add_ae = !vary_ae && !lg_vary_has(&f->vary, "accept-encoding");
                vary_ae = 1;
            }
            size_t need = h->name_len + h->value_len + 4 + 2 + 17;
            char *nh = realloc(head, hl + need + 3);
            if (nh == NULL)
                goto fail;
            head = nh;
            memcpy(head + hl, h->name, h->name_len);
            hl += h->name_len;
            memcpy(head + hl, weak ? ": W/" : ": ", weak ? 4 : 2);
            hl += weak ? 4 : 2;
            memcpy(head + hl, h->value, h->value_len);
            hl += h->value_len;
            if (add_ae) {
                memcpy(head + hl, ", Accept-Encoding", 17);
                hl += 17;
            }
            memcpy(head + hl, "\r\n", 2);
            hl += 2;
        }
        if (gz) {
            static const char ce[] = "Content-Encoding: gzip\r\n", va[] = "Vary: Accept-Encoding\r\n";
            char *nh = realloc(head, hl + sizeof(ce) + sizeof(va) + 3);
            if (nh == NULL)
                goto fail;
            head = nh;
            memcpy(head + hl, ce, sizeof(ce) - 1);
            hl += sizeof(ce) - 1;
            if (!vary_ae) {
                memcpy(head + hl, va, sizeof(va) - 1);
                hl += sizeof(va) - 1;
            }
        }
        memcpy(head + hl, "\r\n", 2);
        hl += 2;
    }
    *outlen = hl;
    return head;
fail:
    free(head);
    return NULL;
}

static int on_response(lg_req_t *s, const http_response_t *r, const lg_rsp_info_t *ri,
                         const char *raw, size_t rawlen)
{
    lg_cstate_t *cs = CS(s);
    if (cs == NULL || cs->base == NULL || cs->pass)
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
        lg_cache_serve(s, cs, "REVALIDATED");
        return 1;
    }
    /* a file of the disk tier revalidated: the merged head goes into a new
     * file (the body copied in the kernel), or for a body too large to
     * copy on the loop, the freshness alone in place; this client gets the
     * merged head either way */
    if (cs->reval && r->status == 304 && cs->obj == NULL && cs->dheld) {
        cs->obj = cs->dhead;
        cs->hl = cs->dhl;
        cs->bl = 0;
        if (refresh_from_304(s, cs, r, ri, now) == 0) {
            cs->dhead = cs->obj;        /* the old one was freed */
            cs->dhl = cs->hl;
            if (lg_disk_rehead(cs->dfd, cs->doff, cs->dblen, cs->key, cs->keylen, &cs->meta, cs->dhead,
                               cs->dhl) < 0)
                lg_disk_refresh(cs->dfd, cs->key, cs->keylen, &cs->meta);
        }
        cs->obj = NULL;
        cs->hl = 0;
        lg_cache_disk_serve(s, cs, "REVALIDATED");
        return 1;
    }
    /* an error from the upstream, and a stale copy allowed to cover it */
    int held = cs->obj || cs->dheld;
    const char *sw = cs->use_stale && held ? lg_cache_stale_word(LG_STALE_ANSWERED, r->status)
                                           : NULL;
    if ((r->status >= 500 && cs->stale_ok && held) || (sw && use_stale(c, sw))) {
        serve_held(s, cs, "STALE");
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
    const http_header_t *crh = r->status == 206 ? lg_cache_find_h(r, "content-range") : NULL;
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
        if (lg_disk == NULL || r->status == 206 || ri->length > lg_disk_max_object())
            goto not_stored;
        to_disk = 1;
    }

    /* the head to store: as received, less fields not to be stored; for a
     * body stored compressed, as a gzip response (weak ETag, Vary) */
    cs->gz_store = !to_disk && r->status != 206 && lg_req_common(s)->gzip &&
                   lg_coding_compressible(s, r, ri);
    free(cs->head);
    cs->head = stored_head(r, ri, raw, rawlen, &f, rule, cs->gz_store, &cs->headlen);
    if (cs->head == NULL)
        goto not_stored;
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
    if (ri->body != LG_BODY_LENGTH && lg_disk && r->status != 206) {
        /* no length said (chunked): in memory while it fits, in a file of
         * the disk tier once it does not (with the head as received, not
         * the gzip one) */
        cs->spill = 1;
        if (cs->gz_store) {
            free(cs->phead);
            cs->phead = stored_head(r, ri, raw, rawlen, &f, rule, 0, &cs->phl);
            cs->spill = cs->phead != NULL;
        }
    }
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
    lg_cache_disk_release(cs);
    free(cs->phead);
    cs->phead = NULL;
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
void lg_cache_drop_targeted(const lg_common_t *c, http_response_t *r)
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
    if (s->err_route)
        return LG_OK;           /* an error page's route answers: not the key's answer */
    if (on_response(s, s->rsp, s->rsp_ri, s->rsp_raw, s->rsp_raw_len))
        return LG_DONE;
    /* what was stored keeps them; what the client gets does not.  The head
     * is the reader's (non-const, on its stack) for this phase. */
    if (CS(s) && CS(s)->base)
        lg_cache_drop_targeted(lg_req_common(s), (http_response_t *)s->rsp);
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
    if (cs == NULL || (cs->obj == NULL && !cs->dheld) || s->err_route)
        return LG_DECLINED;
    const char *sw = cs->use_stale ? failure_word(s->upstream_cond) : NULL;
    if (!cs->stale_ok && !(sw && use_stale(lg_req_common(s), sw)))
        return LG_DECLINED;
    serve_held(s, cs, "STALE");
    return LG_DONE;
}

static int cache_log(lg_req_t *s)
{
    on_finish(s, 1);
    return LG_OK;
}

/*
 * Objects leaving the memory tier go on in the disk tier: fresh ones of any
 * status but 206, the cache's gzip copies included (their flags and length
 * go with them); not Vary markers -- a variant whose marker left memory is
 * fetched again.
 */
static void demote(void *arg, const char *key, size_t kl, const lg_cmeta_t *m, const char *head,
                   size_t hl, const char *body, size_t bl)
{
    int64_t now = *(const int64_t *)arg;
    if (m->status == 206 || m->expires <= now ||
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
    .ctx_slot = &lg_cache_slot,
};

/* After the access log, so the log still sees the cache's view. */
const lg_feature_t lg_feature_cache_log = {
    .name = "cache bookkeeping",
    .handlers = { { LG_PH_LOG, cache_log } },
};
