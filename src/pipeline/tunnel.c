/*
 * CONNECT and SOCKS5 tunnels: after the reply, bytes relayed both ways,
 * each direction's end passed on with a half-close, through the body pipes
 * at first and through kernel pipes (splice) once nothing is buffered.
 */
#include "proxy/proxy.h"

#include <sys/socket.h>

#include "net/tls.h"

void lg_tunnel_end(lg_session_t *s)
{
    s->bytes_in = s->head_len + s->reqp.body_bytes + s->sp_up.bytes;
    s->bytes_out = s->rspp.wire_bytes + s->sp_down.bytes;
    lg_accesslog_write(s);
    lg_session_close(s, "tunnel ended");
}

static void splice_step(lg_session_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (!s->half_up) {
        int rc = lg_splice_run(&s->sp_up, &s->e, &uc->e);
        if (rc == 0) {
            shutdown(uc->e.io.fd, SHUT_WR);
            s->half_up = 1;
        } else if (rc < 0) {
            lg_tunnel_end(s);
            return;
        }
    }
    if (!s->half_down) {
        int rc = lg_splice_run(&s->sp_down, &uc->e, &s->e);
        if (rc == 0) {
            shutdown(s->e.io.fd, SHUT_WR);
            s->half_down = 1;
        } else if (rc < 0) {
            lg_tunnel_end(s);
            return;
        }
    }
    if (s->half_up && s->half_down)
        lg_tunnel_end(s);
}

/*
 * CONNECT: relay bytes both ways with the same pipes as bodies.  When one
 * side ends, its end is passed on (shutdown for writing) and the other
 * direction goes on; when both have ended the tunnel is logged and closed.
 */
void lg_tunnel_step(lg_session_t *s)
{
    lg_uconn_t *uc = s->uc;
    if (!s->tunnel_up) {
        static const char ok[] = "HTTP/1.1 200 Connection established\r\n\r\n";
        static const char socks_ok[] = { 5, 0, 0, 1, 0, 0, 0, 0, 0, 0 };
        lg_buf_t *b = s->in;
        b->pos = b->start + s->head_len;    /* bytes sent after the head belong to the tunnel */
        lg_pipe_init(&s->reqp, b, b->pos, LG_BODY_CLOSE, 0, 0);
        if (uc->in == NULL && (uc->in = lg_buf_get()) == NULL) {
            lg_session_close(s, "no buffer for the tunnel");
            return;
        }
        lg_pipe_init(&s->rspp, uc->in, uc->in->start, LG_BODY_CLOSE, 0, 0);
        s->rspp.hdr = s->socks ? socks_ok : ok;
        s->rspp.hdr_len = s->socks ? sizeof(socks_ok) : sizeof(ok) - 1;
        s->status = 200;
        s->upstream_status = 200;
        s->tunnel_up = 1;
    }
    if (s->spliced) {
        splice_step(s);
        return;
    }
    if (!s->half_up) {
        lg_pipe_rc_t rc = lg_pipe_run(&s->reqp, &s->e, &uc->e);
        if (rc == LG_PIPE_DONE) {
            shutdown(uc->e.io.fd, SHUT_WR);
            s->half_up = 1;
        } else if (rc < 0) {
            goto done;
        }
    }
    if (!s->half_down) {
        lg_pipe_rc_t rc = lg_pipe_run(&s->rspp, &uc->e, &s->e);
        if (rc == LG_PIPE_DONE) {
            lg_tls_close(s->e.ssl);     /* close_notify, then the TCP end */
            s->e.ssl = NULL;
            shutdown(s->e.io.fd, SHUT_WR);
            s->half_down = 1;
        } else if (rc < 0) {
            goto done;
        }
    }
    if (!(s->half_up && s->half_down)) {
        /* plain sockets both ends, the reply out, nothing buffered: from
         * here on the kernel moves the bytes (splice), not us */
        if (!s->half_up && !s->half_down && s->e.ssl == NULL && uc->e.ssl == NULL &&
            s->rspp.hdr_sent == s->rspp.hdr_len && lg_buf_len(s->in) == 0 &&
            lg_buf_len(uc->in) == 0 && lg_splice_open(&s->sp_up) == 0) {
            if (lg_splice_open(&s->sp_down) < 0) {
                lg_splice_close(&s->sp_up);
                return;
            }
            s->spliced = 1;
            splice_step(s);
        }
        return;
    }
done:
    lg_tunnel_end(s);
}

