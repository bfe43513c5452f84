/*
 * The gopher:// gateway (RFC 1436, RFC 4266 for the URL): the selector
 * is sent, the answer read to the server's close.  A menu (type 1) or a
 * search's answer (type 7, the URL's query sent after a TAB) becomes an
 * HTML page with every field escaped; anything else -- text (0), HTML
 * (h), binaries (9, 5, I, g, ...) -- is relayed as it arrives.
 *
 *   gopher://host[:port]/<type><selector>[%09<search>][?<search>]
 *
 *   CONNECT -> SEND (selector CRLF) -> READ -> page, or the relay
 */
#include "forward/gw_int.h"

#include <errno.h>
#include <string.h>

typedef enum gopher_state {
    GOPHER_CONNECT = 0,         /* the connection is being made */
    GOPHER_SEND    = 1,         /* the selector is being sent */
    GOPHER_MENU    = 2,         /* reading a menu whole */
    GOPHER_RELAY   = 3,         /* relaying an item */
} gopher_state_t;

static const char *ctype_of(char type)
{
    switch (type) {
    case '0': return "text/plain; charset=utf-8";
    case 'h': return "text/html";
    case 'g': return "image/gif";
    case 'I': return "image/jpeg";
    case 'p': return "image/png";
    case 's': return "audio/basic";
    case 'd': return "application/pdf";
    case '4': return "application/mac-binhex40";
    case '6': return "text/x-uuencode";
    default:  return "application/octet-stream";
    }
}

static void gopher_step(lg_req_t *r)
{
    lg_gw_t *g = lg_gw_of(r);
    if (g->ending) {
        lg_gw_flush(g);
        return;
    }
    if (g->ctl.io.fd < 0)
        return;
    switch ((gopher_state_t)g->state) {
    case GOPHER_CONNECT: {
        int rc = lg_gw_connected(&g->ctl);
        if (rc == LG_AGAIN)
            return;
        if (rc == LG_ERROR) {
            lg_gw_fail(g, 502, "cannot connect to the Gopher server", strerror(errno),
                       strlen(strerror(errno)));
            return;
        }
        g->ctl_connecting = 0;
        g->state = GOPHER_SEND;
    }
    /* fall through */
    case GOPHER_SEND: {
        int rc = lg_gw_send_ctl(g);
        if (rc == LG_AGAIN)
            return;
        if (rc == LG_ERROR) {
            lg_gw_fail(g, 502, "send() to the Gopher server failed", NULL, 0);
            return;
        }
        int menu = g->gtype == '1' || g->gtype == '7';
        if (!menu && lg_gw_head(g, 200, ctype_of(g->gtype), -1) < 0) {
            lg_gw_fail(g, 500, "out of memory", NULL, 0);
            return;
        }
        g->state = menu ? GOPHER_MENU : GOPHER_RELAY;
        r->conn->rerun = 1;
        return;
    }
    case GOPHER_MENU:
        for (int round = 0; round < 64; round++) {
            if (!g->ctl.r_ready) {
                g->ctl.want_r = 1;
                return;
            }
            ssize_t n = lg_end_recv(&g->ctl, g->wbuf, LG_GW_BUF);
            if (n == LG_AGAIN)
                return;
            if (n < 0) {
                lg_gw_fail(g, 502, "recv() from the Gopher server failed", NULL, 0);
                return;
            }
            if (n > 0) {
                lg_end_short_read(&g->ctl, (size_t)n, LG_GW_BUF);
                lg_gw_text_add(&g->raw, g->wbuf, (size_t)n);
            }
            if (n == 0 || g->raw.full) {
                if (g->raw.n == 0) {
                    lg_gw_fail(g, 502, "the Gopher server sent nothing", NULL, 0);
                    return;
                }
                const char *title = g->path_len ? g->path : "/";
                lg_gopher_render_menu(&g->text, title, strlen(title), g->raw.p, g->raw.n);
                lg_gw_page(g, 200, "text/html; charset=utf-8");
                return;
            }
        }
        r->conn->rerun = 1;
        return;
    case GOPHER_RELAY: {
        const char *why = NULL;
        int rc = lg_gw_pump(g, &g->ctl, &why);
        if (rc == LG_AGAIN)
            return;
        if (rc == LG_ERROR) {
            if (g->magic == LG_GW_MAGIC && g->r)    /* else the client went: aborted */
                lg_gw_fail(g, 502, why, NULL, 0);
            return;
        }
        if (g->body_bytes == 0 && !g->is_head) {
            lg_gw_fail(g, 502, "the Gopher server sent nothing", NULL, 0);
            return;
        }
        lg_gw_complete(g);      /* Gopher's end is the server's close */
        return;
    }
    }
}

static const lg_stage_t gopher_stage = {
    .name = "gopher gateway", .step = gopher_step, .arm = lg_gw_arm, .timeout = lg_gw_timeout,
};

void lg_gopher_start(lg_req_t *r, const struct sockaddr_storage *ss)
{
    if (!r->ri.is_head && !(r->req.method_len == 3 && memcmp(r->req.method, "GET", 3) == 0)) {
        r->local_extra = "Allow: GET, HEAD\r\n";
        lg_respond_error(r, 405);
        return;
    }
    /* "/" alone is the server's root menu */
    const char *p = r->ri.path.p;
    size_t n = r->ri.path.n;
    if (n && p[0] == '/') {
        p++;
        n--;
    }
    char type = n ? p[0] : '1';
    if (n) {
        p++;
        n--;
    }
    size_t qn = r->ri.query.n;
    char *sel = lg_arena_alloc(&r->arena, n + qn + 2);
    ssize_t sn = sel ? lg_gw_unescape(p, n, sel, type == '7') : -1;
    if (sn >= 0 && type == '7' && qn) {
        /* the search words of a "?" query: '+' was a space */
        char *q = sel + sn;
        *q++ = '\t';
        ssize_t w = lg_gw_unescape(r->ri.query.p, qn, q, 0);
        for (ssize_t i = 0; i < w; i++)
            if (q[i] == '+')
                q[i] = ' ';
        sn = w < 0 ? -1 : sn + 1 + w;
    }
    if (sn < 0 || (size_t)sn > 1000) {
        lg_respond_error(r, 400);
        return;
    }
    lg_gw_t *g = lg_gw_new(r, &gopher_stage, ss);
    if (g == NULL)
        return;
    g->gtype = type;
    g->path = sel;
    g->path_len = (size_t)sn;
    memcpy(g->cout, sel, (size_t)sn);
    memcpy(g->cout + sn, "\r\n", 2);
    g->cout_len = (size_t)sn + 2;
    g->state = GOPHER_CONNECT;
    if (lg_gw_connect(g, &g->ctl, ss) < 0) {
        lg_gw_fail(g, 502, "cannot connect to the Gopher server", strerror(errno),
                   strlen(strerror(errno)));
        return;
    }
    r->t_upstream = lg_w.loop.now;
    r->conn->rerun = 1;
}
