/*
 * Inside the gateways (gateway.c, ftp.c, gopher.c): one fetch of an
 * ftp:// or gopher:// URL for one request.
 *
 * Ownership: the request's stage drives it; the struct is malloc'd (its
 * descriptors' events may still be queued when the request ends, so it is
 * freed through the loop's deferred free) and r->uend points at its
 * control end, which is how the stage finds it.  The request's cleanup
 * closes both ends and lets it go: one teardown, whoever ends first.
 *
 * The answer to the client is written here, not by the proxy's pipes: a
 * file is relayed as it arrives (a buffer at a time, read only when the
 * last one went out), framed by Content-Length when the server said the
 * size, else chunked (HTTP/1.1) or by the close (HTTP/1.0).  A transfer
 * that ends short -- the data connection dropped, the server's final
 * reply not a success, fewer bytes than SIZE said -- ends the connection
 * without the last chunk, so no client takes it for complete.
 */
#ifndef LEGATE_FORWARD_GW_INT_H
#define LEGATE_FORWARD_GW_INT_H

#include "forward/gateway.h"
#include "pipeline/request.h"

#define LG_GW_MAGIC 0x47415445u
#define LG_GW_BUF   16384               /* body bytes relayed at a time */
#define LG_GW_CTL   8192                /* control replies buffered */
#define LG_GW_LIST_MAX (1024 * 1024)    /* a listing or menu read whole, at most */

typedef struct lg_gw {
    uint32_t   magic;
    lg_req_t  *r;               /* borrowed; NULL once the request went */
    lg_end_t   ctl;             /* owned: FTP control / the Gopher connection */
    lg_end_t   dat;             /* owned: FTP data connection, fd -1 without */
    int        ctl_connecting, dat_connecting;
    struct sockaddr_storage addr;       /* the server */
    lg_msec_t  read_timeout;

    /* control replies in, commands out */
    char       cin[LG_GW_CTL];
    size_t     cin_len;
    char       cout[1024];
    size_t     cout_len, cout_off;

    /* the answer */
    const char *head;           /* arena */
    size_t     head_len, head_off;
    int        chunked;
    int64_t    length;          /* -1: not known */
    uint64_t   body_bytes;      /* payload relayed so far */
    char       wbuf[16 + LG_GW_BUF + 8];
    size_t     wpos, wend;      /* framed bytes waiting for the client */
    int        src_eof;
    int        ending;          /* the last chunk is queued: finish once written */
    int        wait_client;     /* the last step waits for the client to take bytes */
    lg_gw_text_t text;          /* a listing or menu read whole */

    /* protocol state (each gateway's own enum) */
    int        state;
    int        code;            /* the last FTP reply's code */
    char       rtext[512];      /* ...and its first line, for the error page */
    size_t     rtext_len;
    int        final_code;      /* the reply that ended a transfer, 0 not yet */
    int        dport;           /* the data connection's port */
    lg_gw_text_t raw;           /* a listing as the server sent it */
    int        is_dir, mlsd, tried_pasv, epsv_ok, login_given, is_head;
    const char *user, *pass;    /* the login (arena) */
    char      *path;            /* decoded (arena) */
    size_t     path_len;
    char       gtype;           /* Gopher item type */
} lg_gw_t;

/* A fetch for r, handed its stage; NULL (r answered 500) without memory. */
lg_gw_t *lg_gw_new(lg_req_t *r, const lg_stage_t *st, const struct sockaddr_storage *ss);
static inline lg_gw_t *lg_gw_of(lg_req_t *r)
{
    lg_gw_t *g = (lg_gw_t *)(void *)((char *)r->uend - offsetof(lg_gw_t, ctl));
    LG_BUG_ON(g->magic != LG_GW_MAGIC);
    return g;
}
/* Connect e to ss (port set), non-blocking: 0, or -1 with errno. */
int  lg_gw_connect(lg_gw_t *g, lg_end_t *e, const struct sockaddr_storage *ss);
/* Is the connect of e done: LG_OK, LG_AGAIN, LG_ERROR (errno set). */
int  lg_gw_connected(lg_end_t *e);
/* Queue a command line (CRLF added) and send what can be sent. */
int  lg_gw_command(lg_gw_t *g, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Send the queued command: LG_OK, LG_AGAIN, LG_ERROR. */
int  lg_gw_send_ctl(lg_gw_t *g);
/* Read more of the control connection into cin: bytes, 0 at its end,
 * LG_AGAIN, LG_ERROR; -3 when cin is full. */
ssize_t lg_gw_read_ctl(lg_gw_t *g);

/* The answer's head: status, type, length (-1 unknown: chunked or close). */
int  lg_gw_head(lg_gw_t *g, int status, const char *ctype, int64_t length);
/* Relay src to the client: LG_OK once src ended and every byte went out,
 * LG_AGAIN, LG_ERROR with *why set (the source failed or the client). */
int  lg_gw_pump(lg_gw_t *g, lg_end_t *src, const char **why);
/* The transfer is complete: the last chunk, then the request finishes
 * (lg_gw_step_out drives it). */
void lg_gw_complete(lg_gw_t *g);
/* Write what is pending; LG_OK all out (and the request finished if it
 * was ending), LG_AGAIN, LG_ERROR (the request aborted). */
int  lg_gw_flush(lg_gw_t *g);
/* The whole answer is g->text: sent as a page (a listing, a menu). */
void lg_gw_page(lg_gw_t *g, int status, const char *ctype);
/*
 * It failed: before any byte went to the client, an error page with
 * status and the server's words (escaped); after, the connection is cut
 * so the answer cannot pass as complete.  g is closed either way.
 */
void lg_gw_fail(lg_gw_t *g, int status, const char *why, const char *detail, size_t dn);
/* Close both ends (idempotent): nothing more is read from the server. */
void lg_gw_close(lg_gw_t *g);

/* The stage's timer: the client's send_timeout while it is slow to take
 * bytes, proxy_connect_timeout while connecting, else the read timeout. */
lg_msec_t lg_gw_arm(lg_req_t *r, lg_tkind_t *kind);
void      lg_gw_timeout(lg_req_t *r, lg_tkind_t kind);

#endif
