/*
 * Content codings on the way through: which one a response gets (gzip,
 * br, zstd, gunzip for clients without gzip, or none) and setting up its
 * filter on the body pipe; and gunzip of request bodies.  The choice
 * follows nginx's gzip module; see legate.conf(5), "Compression".
 */
#include "feature/coding.h"

#include "pipeline/headers.h"

#include <string.h>
#include <strings.h>

#include "http/negotiate.h"
#include "http/codec.h"

/*
 * gunzip_request_bodies: a gzip request body goes up decompressed (and
 * chunked: its length is not known), bounded by gunzip_request_max so a
 * compression bomb ends in 413, not in a flood towards the upstream.
 */
void lg_coding_request_gunzip(lg_req_t *s)
{
    const lg_common_t *c = lg_req_common(s);
    const http_header_t *ce;
    if (!c->gunzip_request_bodies || s->ri.body == LG_BODY_NONE ||
        (ce = lg_headers_get(s, "content-encoding")) == NULL || ce->value_len != 4 ||
        strncasecmp(ce->value, "gzip", 4) != 0)
        return;
    lg_codec_t *codec = lg_arena_calloc(&s->arena, sizeof(*codec));
    lg_codec_params_t prm = { 0 };
    prm.max_out = (uint64_t)c->gunzip_request_max;
    if (codec == NULL || lg_codec_init(codec, LG_CODEC_GZIP_DECODE, &prm, &s->arena) < 0)
        return;
    if (lg_pipe_set_codec(&s->reqp, codec) < 0) {
        lg_codec_end(codec);
        return;
    }
    s->reqp.out_chunked = 1;
    s->reqp.kept = 0;               /* the filter consumes what it reads */
    s->body_gunzip = 1;
    s->ri.method_idempotent = 0;    /* the body is not kept whole: never resent */
}

static const http_header_t *rsp_header(const http_response_t *r, const char *name)
{
    for (size_t i = 0; i < r->num_headers; i++)
        if (http_name_eq(&r->headers[i], name))
            return &r->headers[i];
    return NULL;
}

/* Is the media type of Content-Type `ct` in the list? */
static int type_listed(const lg_strv_t *list, const http_header_t *ct)
{
    if (list->n == 1 && strcmp(list->v[0], "*") == 0)
        return 1;
    if (ct == NULL)
        return 0;
    size_t n = 0;
    while (n < ct->value_len && ct->value[n] != ';' && ct->value[n] != ' ' && ct->value[n] != '\t')
        n++;
    for (size_t i = 0; i < list->n; i++)
        if (strlen(list->v[i]) == n && strncasecmp(list->v[i], ct->value, n) == 0)
            return 1;
    return 0;
}

/*
 * Compress, decompress or pass the body as it is?  As nginx's gzip and
 * gunzip modules: never a body that has no room for it (HEAD, 1xx, 204,
 * 206, 304), never against Cache-Control: no-transform, never twice.
 */


int lg_coding_compressible(lg_req_t *s, const http_response_t *r, const lg_rsp_info_t *ri)
{
    const lg_common_t *c = lg_req_common(s);
    if (!(c->gzip || c->brotli || c->zstd) || r->status != 200 || ri->body == LG_BODY_NONE ||
        rsp_header(r, "content-encoding"))
        return 0;
    const http_header_t *cc = rsp_header(r, "cache-control");
    if (cc && lg_http_list_has(cc->value, cc->value_len, "no-transform"))
        return 0;
    if (ri->body == LG_BODY_LENGTH && ri->length < c->gzip_min_length)
        return 0;
    return type_listed(c->gzip_types, rsp_header(r, "content-type"));
}

lg_xform_t lg_coding_choose(lg_req_t *s, const http_response_t *r,
                                   const lg_rsp_info_t *ri)
{
    const lg_common_t *c = lg_req_common(s);
    if (!c->gzip && !c->gunzip && !c->brotli && !c->zstd)
        return LG_XFORM_NONE;
    if (ri->body == LG_BODY_NONE || r->status < 200 || r->status == 204 ||
        r->status == 206 || r->status == 304)
        return LG_XFORM_NONE;
    const http_header_t *cc = rsp_header(r, "cache-control");
    if (cc && lg_http_list_has(cc->value, cc->value_len, "no-transform"))
        return LG_XFORM_NONE;
    const http_header_t *ae = lg_headers_get(s, "accept-encoding");
    const http_header_t *ce = rsp_header(r, "content-encoding");
    if (ce) {
        /* an absent Accept-Encoding counts as "no gzip" here, as nginx */
        if (c->gunzip && ce->value_len == 4 && strncasecmp(ce->value, "gzip", 4) == 0 &&
            !(ae && lg_negotiate_gzip(ae->value, ae->value_len)))
            return LG_XFORM_GUNZIP;
        return LG_XFORM_NONE;
    }
    /* what we may produce here, and the client's preference among it */
    unsigned avail = (c->gzip ? LG_ENC_BIT(LG_ENC_GZIP) : 0u) |
                     (c->brotli ? LG_ENC_BIT(LG_ENC_BR) : 0u) |
                     (c->zstd ? LG_ENC_BIT(LG_ENC_ZSTD) : 0u);
    avail &= LG_ENC_BUILTIN;
    if (avail == 0 || ae == NULL)
        return LG_XFORM_NONE;
    lg_enc_t e = lg_negotiate_choose(ae->value, ae->value_len, avail);
    if (e != LG_ENC_GZIP && e != LG_ENC_BR && e != LG_ENC_ZSTD)
        return LG_XFORM_NONE;
    if (ri->body == LG_BODY_LENGTH && ri->length < c->gzip_min_length)
        return LG_XFORM_NONE;
    if (!type_listed(c->gzip_types, rsp_header(r, "content-type")))
        return LG_XFORM_NONE;
    return e == LG_ENC_BR ? LG_XFORM_BR : e == LG_ENC_ZSTD ? LG_XFORM_ZSTD : LG_XFORM_GZIP;
}

/* Set up the filter for xf; on failure the body goes through unchanged. */
lg_xform_t lg_coding_start(lg_req_t *s, lg_xform_t xf, const lg_rsp_info_t *ri)
{
    if (xf == LG_XFORM_NONE)
        return xf;
    lg_codec_t *codec = lg_arena_calloc(&s->arena, sizeof(*codec));
    lg_codec_params_t prm = { 0 };
    const lg_common_t *c = lg_req_common(s);
    prm.level = xf == LG_XFORM_BR ? c->brotli_level : xf == LG_XFORM_ZSTD ? c->zstd_level
                                                                          : c->gzip_level;
    if (xf == LG_XFORM_BR && prm.level == 0)
        prm.level = -1;         /* brotli quality 0 is real; the codec's 0 means "default" */
    if (ri->body == LG_BODY_LENGTH)
        prm.length_hint = (uint64_t)ri->length;
    lg_codec_kind_t kind = xf == LG_XFORM_GZIP ? LG_CODEC_GZIP_ENCODE
                         : xf == LG_XFORM_BR ? LG_CODEC_BR_ENCODE
                         : xf == LG_XFORM_ZSTD ? LG_CODEC_ZSTD_ENCODE : LG_CODEC_GZIP_DECODE;
    if (codec == NULL || lg_codec_init(codec, kind, &prm, &s->arena) < 0)
        return LG_XFORM_NONE;
    if (lg_pipe_set_codec(&s->rspp, codec) < 0) {
        lg_codec_end(codec);
        return LG_XFORM_NONE;
    }
    return xf;
}

/* ---- the phases ---- */

static int coding_request_body(lg_req_t *r)
{
    lg_coding_request_gunzip(r);
    return LG_OK;
}

/* RESPONSE: which coding; Vary: Accept-Encoding on whatever could have had one. */
static int coding_response(lg_req_t *r)
{
    r->xform = lg_coding_choose(r, r->rsp, r->rsp_ri);
    r->vary_ae = r->xform != LG_XFORM_NONE || lg_coding_compressible(r, r->rsp, r->rsp_ri);
    return LG_OK;
}

/* BODY: the filter on the response pipe (none if it cannot be had). */
static int coding_body(lg_req_t *r)
{
    r->xform = lg_coding_start(r, (lg_xform_t)r->xform, r->rsp_ri);
    return LG_OK;
}

const lg_feature_t lg_feature_coding = {
    .name = "content codings",
    .handlers = {
        { LG_PH_REQUEST_BODY, coding_request_body },
        { LG_PH_RESPONSE, coding_response },
        { LG_PH_BODY, coding_body },
    },
};
