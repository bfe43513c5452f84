#include "net/io.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/tls.h"

/* Map an OpenSSL result to the end's convention. */
static ssize_t ssl_result(lg_end_t *e, int n, int is_read)
{
    if (n > 0)
        return n;
    int err = SSL_get_error(e->ssl, n);
    switch (err) {
    case SSL_ERROR_WANT_READ:
        e->r_ready = 0;
        e->want_r = 1;
        (void)is_read;
        return LG_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        e->w_ready = 0;
        e->want_w = 1;
        return LG_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0;               /* close_notify: a clean end */
    case SSL_ERROR_SYSCALL:
        ERR_clear_error();
        if (errno == 0 || n == 0)
            return 0;           /* EOF without close_notify: treat as an end */
        return LG_ERROR;
    default:
        ERR_clear_error();
        errno = EPROTO;
        return LG_ERROR;
    }
}

/* A plain socket's result in the end's convention. */
static ssize_t sock_result(lg_end_t *e, ssize_t n, int is_read)
{
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (is_read) {
            e->r_ready = 0;
            e->want_r = 1;
        } else {
            e->w_ready = 0;
            e->want_w = 1;
        }
        return LG_AGAIN;
    }
    return LG_ERROR;
}

ssize_t lg_end_recv(lg_end_t *e, void *buf, size_t n)
{
    if (__builtin_expect(e->ops != NULL, 0))
        return e->ops->recv(e, buf, n);
    if (e->ssl == NULL) {
        ssize_t r;
        do
            r = recv(e->io.fd, buf, n, 0);
        while (r < 0 && errno == EINTR);
        return sock_result(e, r, 1);
    }
    errno = 0;
    int r = SSL_read(e->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    return ssl_result(e, r, 1);
}

ssize_t lg_end_send(lg_end_t *e, const void *buf, size_t n)
{
    struct iovec iov = { (void *)buf, n };
    return lg_end_writev(e, &iov, 1);
}

/*
 * TLS writes: small vectors are gathered into one record (head + chunk
 * framing + body would otherwise be three records); larger ones go piece
 * by piece.  A retry after EAGAIN always starts with the same bytes, as
 * OpenSSL requires (SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER is set).
 */
ssize_t lg_end_writev(lg_end_t *e, const struct iovec *iov, int cnt)
{
    if (__builtin_expect(e->ops != NULL, 0))
        return e->ops->writev(e, iov, cnt);
    static char gather[16384];
    if (e->ssl == NULL) {
        /* send(2) where one piece (or a small head and body gathered)
         * will do: sendmsg's copying in of the header and the vector was
         * 0.5 us of a 1 KiB proxied request (perf), the memcpy far less */
        const void *one = iov[0].iov_base;
        size_t len = iov[0].iov_len;
        if (cnt == 2 && len + iov[1].iov_len <= 2048) {
            memcpy(gather, iov[0].iov_base, len);
            memcpy(gather + len, iov[1].iov_base, iov[1].iov_len);
            one = gather;
            len += iov[1].iov_len;
            cnt = 1;
        }
        ssize_t r;
        if (cnt == 1) {
            do
                r = send(e->io.fd, one, len, MSG_NOSIGNAL);
            while (r < 0 && errno == EINTR);
        } else {
            struct msghdr mh = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)cnt };
            do
                r = sendmsg(e->io.fd, &mh, MSG_NOSIGNAL);
            while (r < 0 && errno == EINTR);
        }
        return sock_result(e, r, 0);
    }
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    if (cnt > 1 && total <= sizeof(gather)) {
        size_t off = 0;
        for (int i = 0; i < cnt; i++) {
            memcpy(gather + off, iov[i].iov_base, iov[i].iov_len);
            off += iov[i].iov_len;
        }
        errno = 0;
        return ssl_result(e, SSL_write(e->ssl, gather, (int)total), 0);
    }
    ssize_t done = 0;
    for (int i = 0; i < cnt; i++) {
        size_t len = iov[i].iov_len;
        const char *p = iov[i].iov_base;
        while (len) {
            int chunk = len > (1 << 30) ? (1 << 30) : (int)len;
            errno = 0;
            ssize_t n = ssl_result(e, SSL_write(e->ssl, p, chunk), 0);
            if (n <= 0)
                return done ? done : n;
            done += n;
            if (n < chunk)
                return done;
            p += n;
            len -= (size_t)n;
        }
    }
    return done;
}

int lg_end_handshake(lg_end_t *e, char *why, size_t whylen)
{
    int want_r = 0, want_w = 0;
    int rc = lg_tls_handshake(e->ssl, &want_r, &want_w, why, whylen);
    if (rc == 1)
        return LG_OK;
    if (rc < 0)
        return LG_ERROR;
    if (want_r) {
        e->r_ready = 0;
        e->want_r = 1;
    }
    if (want_w) {
        e->w_ready = 0;
        e->want_w = 1;
    }
    return LG_AGAIN;
}

void lg_end_shutdown(lg_end_t *e)
{
    if (e->ops) {
        e->ops->shutdown(e);
        return;
    }
    /* close_notify, then the TCP end; the TLS stays for reading, as the
     * other direction of a tunnel may go on (a half-close through TLS) */
    if (e->ssl && SSL_is_init_finished(e->ssl))
        SSL_shutdown(e->ssl);
    ERR_clear_error();
    shutdown(e->io.fd, SHUT_WR);
}

/* ---- writes held to the end of the batch ---- */

#define HOLD_MAX 512            /* more in one batch are written at once */

static lg_loop_t *hold_loop;
static lg_end_t *held[HOLD_MAX];
static int nheld;

static void release_held(lg_post_t *p)
{
    (void)p;
    /* dispatching is over, so nothing is held again meanwhile; a callback
     * may close an end further on (lg_end_close clears its slot) */
    for (int i = 0; i < nheld; i++) {
        lg_end_t *e = held[i];
        if (e == NULL)
            continue;
        held[i] = NULL;
        e->held = 0;
        /* ready again even if its callback ignores EPOLLOUT (a connection
         * back in the upstream pool meanwhile): no edge would come */
        e->w_ready = 1;
        if (e->io.fd >= 0)
            e->io.cb(&e->io, EPOLLOUT);
    }
    nheld = 0;
}

static lg_post_t hold_post = { release_held, NULL, 0 };

void lg_end_hold_init(lg_loop_t *l)
{
    hold_loop = l;
}

int lg_end_hold(lg_end_t *e)
{
    if (hold_loop == NULL || !hold_loop->dispatching || e->ops != NULL || e->io.fd < 0)
        return 0;
    if (!e->held) {
        if (nheld == HOLD_MAX)
            return 0;
        held[nheld++] = e;
        e->held = 1;
        lg_loop_post(hold_loop, &hold_post);
    }
    e->w_ready = 0;
    e->want_w = 1;
    return 1;
}

void lg_end_close(lg_end_t *e, lg_loop_t *loop)
{
    if (e->held) {
        for (int i = 0; i < nheld; i++)
            if (held[i] == e)
                held[i] = NULL;
        e->held = 0;
    }
    lg_tls_close(e->ssl);
    e->ssl = NULL;
    if (e->io.fd >= 0) {
        lg_io_del(loop, &e->io);
        close(e->io.fd);
        e->io.fd = -1;
    }
}
