/*
 * Max-Forwards (RFC 9110 7.6.2), a feature first in the ACCESS phase so it
 * holds for the reverse and the forward proxy alike: TRACE and OPTIONS
 * with Max-Forwards 0 are answered here, others go on decremented
 * (headers.c writes r->max_forwards - 1).
 */
#include "pipeline/request.h"

#include <string.h>

#include "pipeline/headers.h"

/*
 * Max-Forwards (RFC 9110 7.6.2) for TRACE and OPTIONS: at zero the request
 * stops here and legate answers it; otherwise it goes on decremented.
 */
static int max_forwards(lg_req_t *s)
{
    int trace = s->req.method_len == 5 && memcmp(s->req.method, "TRACE", 5) == 0;
    int options = s->req.method_len == 7 && memcmp(s->req.method, "OPTIONS", 7) == 0;
    const http_header_t *h = (trace || options) ? lg_headers_get(s, "max-forwards") : NULL;
    s->max_forwards = 0;
    if (h == NULL)
        return LG_DECLINED;
    long n = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        if (h->value[i] < '0' || h->value[i] > '9' || n > 100000) {
            lg_respond_error(s, 400);
            return LG_DONE;
        }
        n = n * 10 + (h->value[i] - '0');
    }
    if (n > 0) {
        s->max_forwards = (int)n;       /* (n - 1) + 1 */
        return LG_OK;
    }
    if (options) {
        s->route = NULL;
        s->local_extra = "Allow: GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS, TRACE, CONNECT\r\n";
        lg_respond(s, 200, "", NULL);
        return LG_DONE;
    }
    /* TRACE: the request as received, without what would leak credentials */
    char *msg = lg_arena_printf(&s->arena, "%.*s %.*s HTTP/%d.%d\r\n", (int)s->req.method_len,
                                s->req.method, (int)s->req.target_len, s->req.target,
                                s->req.version / 10, s->req.version % 10);
    for (size_t i = 0; msg && i < s->req.num_headers; i++) {
        const http_header_t *x = &s->req.headers[i];
        if (http_name_eq(x, "authorization") || http_name_eq(x, "proxy-authorization") ||
            http_name_eq(x, "cookie"))
            continue;
        msg = lg_arena_printf(&s->arena, "%s%.*s: %.*s\r\n", msg, (int)x->name_len, x->name,
                              (int)x->value_len, x->value);
    }
    s->route = NULL;
    s->local_ctype = "message/http";
    lg_respond(s, 200, msg ? msg : "", NULL);
    return LG_DONE;
}

const lg_feature_t lg_feature_max_forwards = {
    .name = "max_forwards",
    .handlers = { { LG_PH_ACCESS, max_forwards } },
};
