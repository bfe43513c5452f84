/*
 * The ftp:// gateway (Squid's): GET or HEAD of an ftp:// URL through the
 * HTTP forward proxy.  One control connection per request, passive mode
 * only (EPSV first, as RFC 2428 asks and IPv6 needs; PASV if the server
 * refuses it), binary type.
 *
 *   CONNECT -> GREETING -> USER [-> PASS] -> TYPE I
 *     file:       SIZE -> EPSV|PASV -> data connect -> RETR -> relay -> 226
 *                 (RETR 550 -> CWD: a directory after all is a 301 to "path/")
 *     directory:  [CWD] -> EPSV|PASV -> data connect -> MLSD (or LIST) -> 226
 *                 -> the listing as an HTML page
 *
 * The login is the URL's user and password, else the client's
 * Authorization (Basic, as a browser sends after a 401), else the forward
 * block's ftp_user / ftp_password.  FTP replies become HTTP statuses: 530
 * at login 401 (with a challenge, so a browser asks), 550 404, 4xx 503,
 * anything else and bytes that are no FTP reply 502, no connection 502, a
 * timeout 504.  The data connection always goes to the control
 * connection's server, whatever address a PASV reply names.
 */
#include "forward/gw_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/htpasswd.h"
#include "pipeline/headers.h"

#include <openssl/crypto.h>

typedef enum ftp_state {
    FTP_CONNECT  = 0,           /* the control connection is being made */
    FTP_GREETING = 1,           /* waiting for 220 */
    FTP_USER     = 2,           /* USER sent */
    FTP_PASS     = 3,           /* PASS sent */
    FTP_TYPE     = 4,           /* TYPE I sent */
    FTP_SIZE     = 5,           /* SIZE sent (files) */
    FTP_CWD      = 6,           /* CWD sent (directories) */
    FTP_EPSV     = 7,           /* EPSV sent */
    FTP_PASV     = 8,           /* PASV sent */
    FTP_DCONNECT = 9,           /* the data connection is being made */
    FTP_RETR     = 10,          /* RETR / MLSD / LIST sent: waiting for 150 */
    FTP_XFER     = 11,          /* relaying the data connection */
    FTP_FINAL    = 12,          /* the data ended: waiting for 226 */
    FTP_ISDIR    = 13,          /* RETR said 550: CWD to see if it is a directory */
} ftp_state_t;

static const lg_stage_t ftp_stage;

/* What the login uses, in the request's arena. */
static int credentials(lg_req_t *r, const char **user, const char **pass)
{
    const lg_forward_t *f = r->server->forward;
    *user = f->ftp_user;
    *pass = f->ftp_password;
    if (r->ri.userinfo.n) {
        const char *u = r->ri.userinfo.p;
        size_t n = r->ri.userinfo.n;
        const char *colon = memchr(u, ':', n);
        size_t un = colon ? (size_t)(colon - u) : n;
        char *ub = lg_arena_alloc(&r->arena, un + 1);
        char *pb = lg_arena_alloc(&r->arena, n - un + 1);
        if (ub == NULL || pb == NULL || lg_gw_unescape(u, un, ub, 0) < 0)
            return -1;
        *user = ub;
        if (colon) {
            if (lg_gw_unescape(colon + 1, n - un - 1, pb, 0) < 0)
                return -1;
            *pass = pb;
        } else {
            *pass = "";
        }
        return 1;
    }
    const http_header_t *h = lg_headers_get(r, "authorization");
    char buf[512];
    const char *u, *p;
    if (h && lg_htpasswd_basic(h->value, h->value_len, buf, sizeof(buf), &u, &p) == 0) {
        int bad = strpbrk(u, "\r\n") || strpbrk(p, "\r\n");
        *user = lg_arena_strdup(&r->arena, u);
        *pass = lg_arena_strdup(&r->arena, p);
        OPENSSL_cleanse(buf, sizeof(buf));
        return bad || *user == NULL || *pass == NULL ? -1 : 1;
    }
    return 0;
}

/* The type a file's name suggests; the bytes go as they are. */
static const char *ctype_of(const char *path, size_t n)
{
    static const struct { const char *ext, *type; } t[] = {
        { ".txt", "text/plain" }, { ".html", "text/html" }, { ".htm", "text/html" },
        { ".css", "text/css" }, { ".gz", "application/gzip" }, { ".tgz", "application/gzip" },
        { ".tar", "application/x-tar" }, { ".zip", "application/zip" },
        { ".xz", "application/x-xz" }, { ".bz2", "application/x-bzip2" },
        { ".pdf", "application/pdf" }, { ".iso", "application/x-iso9660-image" },
        { ".png", "image/png" }, { ".jpg", "image/jpeg" }, { ".jpeg", "image/jpeg" },
        { ".gif", "image/gif" }, { ".json", "application/json" }, { ".xml", "text/xml" },
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        size_t el = strlen(t[i].ext);
        if (n >= el && strncasecmp(path + n - el, t[i].ext, el) == 0)
            return t[i].type;
    }
    return "application/octet-stream";
}

/* The FTP reply's status for the client. */
static int status_of(int code, int at_login)
{
    if (code == 530 || code == 332)
        return at_login ? 401 : 403;
    if (code == 550)
        return 404;
    if (code == 421 || (code >= 400 && code < 500))
        return 503;
    return 502;
}

static void fail_reply(lg_gw_t *g, const char *why, int at_login)
{
    /* a transfer that failed (426, 451) is the server's failure: 502 */
    int st = g->state == FTP_XFER || g->state == FTP_FINAL ? 502 : status_of(g->code, at_login);
    if (st == 401) {
        g->r->auth_realm = lg_arena_printf(&g->r->arena, "FTP %.*s", (int)g->r->ri.host.n,
                                           g->r->ri.host.p);
    }
    lg_gw_fail(g, st, why, g->rtext, g->rtext_len);
}

/* The next complete reply (not a 1xx unless want_prelim): its code, or
 * LG_AGAIN; on a broken or closed connection the request is answered
 * and LG_ERROR returned. */
static int reply(lg_gw_t *g, int want_prelim)
{
    for (int round = 0; round < 64; round++) {
        int code = 0;
        ssize_t took = lg_ftp_reply_parse(g->cin, g->cin_len, &code);
        if (took < 0) {
            lg_gw_fail(g, 502, "the server's answer is not FTP", g->cin,
                       g->cin_len < 80 ? g->cin_len : 80);
            return LG_ERROR;
        }
        if (took > 0) {
            const char *eol = memchr(g->cin, '\n', (size_t)took);   /* took ends in one */
            size_t ln = eol ? (size_t)(eol - g->cin) : (size_t)took;
            if (ln && g->cin[ln - 1] == '\r')
                ln--;
            g->rtext_len = ln < sizeof(g->rtext) ? ln : sizeof(g->rtext) - 1;
            memcpy(g->rtext, g->cin, g->rtext_len);
            g->rtext[g->rtext_len] = '\0';
            memmove(g->cin, g->cin + took, g->cin_len - (size_t)took);
            g->cin_len -= (size_t)took;
            g->code = code;
            if (code < 200 && !want_prelim)
                continue;       /* a preliminary reply nobody waits for */
            return code;
        }
        ssize_t n = lg_gw_read_ctl(g);
        if (n == LG_AGAIN)
            return LG_AGAIN;
        if (n > 0)
            continue;
        lg_gw_fail(g, 502, n == 0 ? "the server closed the control connection"
                           : n == -3 ? "the server's reply is too long"
                           : "recv() from the server failed", NULL, 0);
        return LG_ERROR;
    }
    g->r->conn->rerun = 1;
    return LG_AGAIN;
}

static int command(lg_gw_t *g, int next, const char *fmt, const char *arg)
{
    g->state = next;
    if (lg_gw_command(g, fmt, arg) == LG_ERROR) {
        lg_gw_fail(g, 502, "cannot send to the server", NULL, 0);
        return LG_ERROR;
    }
    return LG_OK;
}

/* The passive-mode command: EPSV unless refused or switched off. */
static int passive(lg_gw_t *g)
{
    if (g->epsv_ok && !g->tried_pasv)
        return command(g, FTP_EPSV, "EPSV%s", "");
    return command(g, FTP_PASV, "PASV%s", "");
}

/* The command that starts the transfer, once the data connection is up. */
static int transfer(lg_gw_t *g)
{
    if (!g->is_dir)
        return command(g, FTP_RETR, "RETR %s", g->path);
    return command(g, FTP_RETR, g->mlsd ? "MLSD%s" : "LIST%s", "");
}

static int data_connect(lg_gw_t *g, int port)
{
    struct sockaddr_storage ss = g->addr;
    if (ss.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
    if (lg_gw_connect(g, &g->dat, &ss) < 0) {
        lg_gw_fail(g, 502, "cannot connect the data connection", strerror(errno),
                   strlen(strerror(errno)));
        return LG_ERROR;
    }
    g->state = FTP_DCONNECT;
    return LG_OK;
}

/* The transfer ended well on both connections: the answer is complete. */
static void finished(lg_gw_t *g)
{
    /* a polite goodbye if the socket takes it at once; nothing waits for it */
    if (lg_gw_command(g, "QUIT%s", "") != LG_OK)
        g->cout_len = g->cout_off = 0;
    if (g->is_dir) {
        const char *shown = g->path_len ? g->path : "/";
        lg_ftp_render_listing(&g->text, shown, strlen(shown), g->raw.p ? g->raw.p : "",
                              g->raw.n, g->mlsd);
        lg_gw_page(g, 200, "text/html; charset=utf-8");
        return;
    }
    if (g->length >= 0 && g->body_bytes != (uint64_t)g->length) {
        lg_gw_fail(g, 502, "the file ended short of the size the server gave", NULL, 0);
        return;
    }
    lg_gw_complete(g);
}

/* One step of the conversation: LG_OK go on, LG_AGAIN wait, LG_ERROR the
 * request was answered or aborted (g may be closed, r gone). */
static int ftp_advance(lg_gw_t *g)
{
    lg_req_t *r = g->r;
    int code;
    switch ((ftp_state_t)g->state) {
    case FTP_CONNECT: {
        int rc = lg_gw_connected(&g->ctl);
        if (rc == LG_AGAIN)
            return LG_AGAIN;
        if (rc == LG_ERROR) {
            lg_gw_fail(g, 502, "cannot connect to the FTP server", strerror(errno),
                       strlen(strerror(errno)));
            return LG_ERROR;
        }
        g->ctl_connecting = 0;
        g->state = FTP_GREETING;
        return LG_OK;
    }
    case FTP_GREETING: {
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code != 220) {
            fail_reply(g, "the FTP server refused the connection", 0);
            return LG_ERROR;
        }
        return command(g, FTP_USER, "USER %s", g->user);
    }
    case FTP_USER:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code == 230)
            return command(g, FTP_TYPE, "TYPE %s", "I");
        if (code == 331 || code == 332)
            return command(g, FTP_PASS, "PASS %s", g->pass);
        fail_reply(g, "the FTP server refused the login", 1);
        return LG_ERROR;
    case FTP_PASS:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code != 230 && code != 202) {
            fail_reply(g, "the FTP server refused the login", 1);
            return LG_ERROR;
        }
        return command(g, FTP_TYPE, "TYPE %s", "I");
    case FTP_TYPE:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code / 100 != 2) {
            fail_reply(g, "the FTP server refused binary mode", 0);
            return LG_ERROR;
        }
        if (!g->is_dir)
            return command(g, FTP_SIZE, "SIZE %s", g->path);
        if (g->path_len)
            return command(g, FTP_CWD, "CWD %s", g->path);
        return passive(g);
    case FTP_SIZE:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code == 213)
            g->length = lg_ftp_size(g->rtext, g->rtext_len);
        if (g->is_head && g->length >= 0) {
            /* the head is all a HEAD wants, and SIZE gave what it says */
            if (lg_gw_head(g, 200, ctype_of(g->path, g->path_len), g->length) < 0) {
                lg_gw_fail(g, 500, "out of memory", NULL, 0);
                return LG_ERROR;
            }
            lg_gw_complete(g);
            return LG_ERROR;
        }
        return passive(g);
    case FTP_CWD:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code / 100 != 2) {
            fail_reply(g, "no such directory", 0);
            return LG_ERROR;
        }
        return passive(g);
    case FTP_EPSV:
    case FTP_PASV: {
        if ((code = reply(g, 0)) < 0)
            return code;
        int port = -1;
        if (g->state == FTP_EPSV && code == 229)
            port = lg_ftp_epsv_port(g->rtext, g->rtext_len);
        else if (g->state == FTP_PASV && code == 227)
            port = lg_ftp_pasv_port(g->rtext, g->rtext_len);
        if (port > 0)
            return data_connect(g, port);
        if (g->state == FTP_EPSV && g->addr.ss_family == AF_INET) {
            g->tried_pasv = 1;  /* an older server: PASV (IPv4 only) */
            return passive(g);
        }
        fail_reply(g, "the FTP server refused passive mode", 0);
        return LG_ERROR;
    }
    case FTP_DCONNECT: {
        int rc = lg_gw_connected(&g->dat);
        if (rc == LG_AGAIN)
            return LG_AGAIN;
        if (rc == LG_ERROR) {
            lg_gw_fail(g, 502, "cannot connect the data connection", strerror(errno),
                       strlen(strerror(errno)));
            return LG_ERROR;
        }
        g->dat_connecting = 0;
        return transfer(g);
    }
    case FTP_RETR:
        if ((code = reply(g, 1)) < 0)
            return code;
        if (code == 125 || code == 150) {
            if (!g->is_dir) {
                if (lg_gw_head(g, 200, ctype_of(g->path, g->path_len), g->length) < 0) {
                    lg_gw_fail(g, 500, "out of memory", NULL, 0);
                    return LG_ERROR;
                }
            }
            g->state = FTP_XFER;
            return LG_OK;
        }
        if (code < 200)
            return LG_OK;       /* another preliminary reply */
        lg_end_close(&g->dat, &lg_w.loop);
        if (g->is_dir && g->mlsd && code >= 500 && code != 550) {
            g->mlsd = 0;        /* no MLSD (RFC 3659): the old LIST, on a new connection */
            return passive(g);
        }
        if (!g->is_dir && code == 550)
            return command(g, FTP_ISDIR, "CWD %s", g->path);
        fail_reply(g, g->is_dir ? "the FTP server refused the listing"
                                : "the FTP server refused the file", 0);
        return LG_ERROR;
    case FTP_ISDIR:
        if ((code = reply(g, 0)) < 0)
            return code;
        if (code / 100 == 2) {
            /* a directory named without its "/": where its listing is, as Squid */
            char *loc = lg_arena_printf(&r->arena, "ftp://%.*s%.*s/", (int)r->ri.authority.n,
                                        r->ri.authority.p, (int)r->ri.path.n, r->ri.path.p);
            lg_gw_close(g);
            r->upstream_status = 301;
            lg_respond(r, 301, NULL, loc);
            return LG_ERROR;
        }
        g->code = 550;
        fail_reply(g, "no such file", 0);
        return LG_ERROR;
    case FTP_XFER: {
        /* the final reply may come before the data's end: noted, and a
         * failure (426, 451) ends the transfer as cut short at once */
        if (g->final_code == 0 && g->ctl.r_ready) {
            code = reply(g, 0);
            if (code == LG_ERROR)
                return LG_ERROR;
            if (code > 0) {
                if (code / 100 != 2) {
                    fail_reply(g, "the transfer failed", 0);
                    return LG_ERROR;
                }
                g->final_code = code;
            }
        }
        const char *why = NULL;
        int rc;
        if (g->is_dir) {
            rc = LG_OK;
            for (int round = 0; round < 64 && !g->src_eof; round++) {
                if (!g->dat.r_ready) {
                    g->dat.want_r = 1;
                    return LG_AGAIN;
                }
                ssize_t n = lg_end_recv(&g->dat, g->wbuf, LG_GW_BUF);
                if (n == LG_AGAIN)
                    return LG_AGAIN;
                if (n < 0) {
                    lg_gw_fail(g, 502, "recv() from the server failed", NULL, 0);
                    return LG_ERROR;
                }
                if (n == 0) {
                    g->src_eof = 1;
                    break;
                }
                lg_end_short_read(&g->dat, (size_t)n, LG_GW_BUF);
                lg_gw_text_add(&g->raw, g->wbuf, (size_t)n);
                if (g->raw.full) {
                    lg_gw_page(g, 200, "text/html");    /* the 502 for a listing too large */
                    return LG_ERROR;
                }
            }
            if (!g->src_eof) {
                r->conn->rerun = 1;
                return LG_AGAIN;
            }
        } else {
            rc = lg_gw_pump(g, &g->dat, &why);
            if (rc == LG_AGAIN)
                return LG_AGAIN;
            if (rc == LG_ERROR) {
                if (g->magic == LG_GW_MAGIC && g->r)     /* else the client went: aborted */
                    lg_gw_fail(g, 502, why, NULL, 0);
                return LG_ERROR;
            }
            if (g->is_head) {
                lg_gw_complete(g);
                return LG_ERROR;
            }
        }
        lg_end_close(&g->dat, &lg_w.loop);
        g->state = FTP_FINAL;
        return LG_OK;
    }
    case FTP_FINAL:
        if (g->final_code == 0) {
            if ((code = reply(g, 0)) < 0)
                return code;
            if (code / 100 != 2) {
                fail_reply(g, "the transfer failed", 0);
                return LG_ERROR;
            }
            g->final_code = code;
        }
        finished(g);
        return LG_ERROR;        /* answered */
    }
    return LG_ERROR;
}

static void ftp_step(lg_req_t *r)
{
    lg_gw_t *g = lg_gw_of(r);
    if (g->ending) {
        lg_gw_flush(g);         /* the last bytes wait for the client */
        return;
    }
    for (int round = 0; round < 64; round++) {
        if (g->ctl.io.fd < 0)
            return;             /* answered: the local stage or the finish has it */
        if (g->cout_off < g->cout_len) {
            int rc = lg_gw_send_ctl(g);
            if (rc == LG_AGAIN)
                return;
            if (rc == LG_ERROR) {
                lg_gw_fail(g, 502, "send() to the server failed", NULL, 0);
                return;
            }
        }
        if (ftp_advance(g) != LG_OK)
            return;
    }
    r->conn->rerun = 1;
}

static const lg_stage_t ftp_stage = {
    .name = "ftp gateway", .step = ftp_step, .arm = lg_gw_arm, .timeout = lg_gw_timeout,
};

void lg_ftp_start(lg_req_t *r, const struct sockaddr_storage *ss)
{
    if (!r->ri.is_head && !(r->req.method_len == 3 && memcmp(r->req.method, "GET", 3) == 0)) {
        r->local_extra = "Allow: GET, HEAD\r\n";
        lg_respond_error(r, 405);
        return;
    }
    /* the path, decoded: one argument of one command line, no CR or LF;
     * ";type=a|i|d" (RFC 1738 3.2.2) is dropped, binary is used */
    const char *p = r->ri.path.p;
    size_t n = r->ri.path.n;
    if (n >= 7 && memcmp(p + n - 7, ";type=", 6) == 0)
        n -= 7;
    while (n && p[0] == '/') {
        p++;
        n--;
    }
    char *path = lg_arena_alloc(&r->arena, n + 1);
    ssize_t pn = path ? lg_gw_unescape(p, n, path, 0) : -1;
    if (pn < 0) {
        lg_respond_error(r, 400);
        return;
    }
    const char *user, *pass;
    int given = credentials(r, &user, &pass);
    if (given < 0) {
        lg_respond_error(r, 400);       /* a CR or LF would be a second command */
        return;
    }
    if (r->ri.userinfo.n) {
        /* the password has been read: the access log's request line shows
         * stars in its place, as Squid hides it */
        const char *colon = memchr(r->ri.userinfo.p, ':', r->ri.userinfo.n);
        if (colon)
            memset((char *)colon + 1, '*', (size_t)(r->ri.userinfo.p + r->ri.userinfo.n - colon - 1));
    }
    lg_gw_t *g = lg_gw_new(r, &ftp_stage, ss);
    if (g == NULL)
        return;
    g->login_given = given;
    g->user = user;
    g->pass = pass;             /* for PASS; in the arena, as long as the request */
    g->path = path;
    g->path_len = (size_t)pn;
    g->is_dir = pn == 0 || path[pn - 1] == '/';
    if (g->is_dir && pn > 1)
        path[--g->path_len] = '\0';   /* CWD takes the name without the "/" */
    g->mlsd = 1;
    g->epsv_ok = r->server->forward->ftp_epsv;
    g->state = FTP_CONNECT;
    if (lg_gw_connect(g, &g->ctl, ss) < 0) {
        lg_gw_fail(g, 502, "cannot connect to the FTP server", strerror(errno),
                   strlen(strerror(errno)));
        return;
    }
    r->t_upstream = lg_w.loop.now;
    r->conn->rerun = 1;
}
