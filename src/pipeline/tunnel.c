/*
 * The tunnel relay (see tunnel.h).  When one side ends, its end is passed
 * on (shutdown for writing) and the other direction goes on; when both
 * have ended, or the tunnel sat idle for its timeout, the request is
 * finished (logged with its bytes both ways) and the connection closed.
 */
#include "pipeline/tunnel.h"

#include <sys/socket.h>

#include "net/tls.h"

static const lg_stage_t tunnel_stage;

void (*lg_tunnel_open_hook)(lg_req_t *r, lg_tunnel_t *t);

static void tunnel_end(lg_req_t *r, const char *why)
{
    lg_tunnel_t *t = r->tunnel;
    lg_conn_t *c = r->conn;
    if (t->ended == NULL)
        t->ended = "closed";
    r->bytes_in = r->head_len + r->reqp.body_bytes + t->sp_up.bytes;
    r->bytes_out = r->rspp.wire_bytes + t->sp_down.bytes;
    lg_req_finish(r);
    if (!c->fe->multiplexed)
        lg_conn_close(c, why);  /* the connection was the tunnel */
}

/* The request goes away with its connection: the kernel pipes too. */
static void tunnel_cleanup(void *arg)
{
    lg_tunnel_t *t = arg;
    lg_tls_close(t->takeover);
    t->takeover = NULL;
    if (t->spliced) {
        lg_splice_close(&t->sp_up);
        lg_splice_close(&t->sp_down);
        t->spliced = 0;
    }
}

void lg_tunnel_start(lg_req_t *r, int status, const char *open, size_t open_len, lg_buf_t *ub,
                     lg_msec_t idle_timeout)
{
    lg_tunnel_t *t = lg_arena_calloc(&r->arena, sizeof(*t));
    lg_buf_t *b = lg_req_in(r);
    if (t == NULL || b == NULL || ub == NULL) {
        lg_req_abort(r, "no memory for the tunnel");
        return;
    }
    /* a stream server's session: its own proxy_timeout (nginx's), whoever opened it */
    t->idle_timeout = r->server && r->server->stream ? r->server->stream->proxy_timeout
                                                     : idle_timeout;
    r->tunnel = t;
    lg_req_cleanup(r, tunnel_cleanup, t);
    b->pos = b->start + r->head_len;    /* bytes sent after the head belong to the tunnel */
    lg_pipe_init(&r->reqp, b, b->pos, LG_BODY_CLOSE, 0, 0);
    lg_pipe_init(&r->rspp, ub, ub->start, LG_BODY_CLOSE, 0, 0);
    r->rspp.hdr = open;
    r->rspp.hdr_len = open_len;
    /* limit_rate holds what goes to the client, as for a response body
     * (Squid's delay pools on CONNECT); the kernel cannot splice at a rate */
    const lg_common_t *c = lg_req_common(r);
    r->rspp.rate = (uint64_t)c->limit_rate;
    r->rspp.rate_after = (uint64_t)c->limit_rate_after;
    r->rspp.rate_t0 = lg_w.loop.now;
    r->rspp.rate_fn = r->rate_fn;
    r->rspp.rate_arg = r->rate_arg;
    r->status = status;
    r->upstream_status = status;
    r->keep_alive = 0;          /* the connection is the tunnel's now */
    if (lg_tunnel_open_hook)
        lg_tunnel_open_hook(r, t);
    lg_req_set_stage(r, &tunnel_stage);
}

static void splice_step(lg_req_t *r)
{
    lg_tunnel_t *t = r->tunnel;
    lg_end_t *ce = r->cend, *ue = r->uend;
    if (!t->half_up) {
        int rc = lg_splice_run(&t->sp_up, ce, ue);
        if (rc == 0) {
            lg_end_shutdown(ue);
            t->half_up = 1;
        } else if (rc < 0) {
            t->ended = rc == -1 ? "client error" : "upstream error";
            tunnel_end(r, "tunnel ended");
            return;
        }
    }
    if (!t->half_down) {
        int rc = lg_splice_run(&t->sp_down, ue, ce);
        if (rc == 0) {
            lg_end_shutdown(ce);
            t->half_down = 1;
        } else if (rc < 0) {
            t->ended = rc == -1 ? "upstream error" : "client error";
            tunnel_end(r, "tunnel ended");
            return;
        }
    }
    if (t->half_up && t->half_down)
        tunnel_end(r, "tunnel ended");
}

/* The gate has let the bytes through: the up pipe starts with them all
 * (the bytes read so far sit in its buffer from pos on, nothing taken). */
static void gate_pass(lg_req_t *r)
{
    lg_tunnel_t *t = r->tunnel;
    lg_buf_t *b = r->reqp.buf;
    t->gate = NULL;
    lg_pipe_init(&r->reqp, b, b->pos, LG_BODY_CLOSE, 0, 0);
}

/* The gate took the connection over (answer 2): the tunnel's request is
 * logged and freed (its upstream connection goes with it), and the
 * connection, its client's bytes now the SSL's, starts TLS. */
static void takeover(lg_req_t *r)
{
    lg_tunnel_t *t = r->tunnel;
    lg_conn_t *c = r->conn;
    SSL *ssl = t->takeover;
    t->takeover = NULL;
    if (t->ended == NULL)
        t->ended = "taken over";
    r->bytes_in = r->head_len + r->reqp.body_bytes;
    r->bytes_out = r->rspp.wire_bytes;
    r->stage = NULL;
    lg_feature_run_one(r, LG_PH_LOG);
    c->requests++;
    lg_req_free(r);
    lg_conn_start_tls(c, ssl);
}

/* 1 still judging or passed, 0 the tunnel ended (r is gone). */
static int gate_decide(lg_req_t *r, lg_gate_why_t why)
{
    lg_tunnel_t *t = r->tunnel;
    lg_buf_t *b = r->reqp.buf;
    int rc = t->gate(r, (const unsigned char *)b->pos, (size_t)(b->last - b->pos), why);
    if (rc == 2 && t->takeover && !r->conn->fe->multiplexed) {
        takeover(r);
        return 0;
    }
    if (rc == 1) {
        gate_pass(r);
        return 1;
    }
    if (rc == 0 && why == LG_GATE_BYTES)
        return 1;
    if (t->ended == NULL)
        t->ended = "refused";
    tunnel_end(r, "tunnel refused");
    return 0;
}

/* Read the client's bytes for the gate (into the up pipe's buffer, after
 * what is there); 1 while it is judging or it let them through, 0 when
 * the tunnel ended (r is gone). */
static int gate_step(lg_req_t *r)
{
    lg_tunnel_t *t = r->tunnel;
    lg_end_t *ce = r->cend;
    lg_buf_t *b = r->reqp.buf;
    /* bytes the client sent with its request head come first (the
     * socket may have nothing more to say: no edge would come) */
    if (b->last > b->pos && !gate_decide(r, LG_GATE_BYTES))
        return 0;
    while (t->gate) {       /* each read adds a byte or returns: the buffer bounds it */
        if (b->last == b->end)
            return gate_decide(r, LG_GATE_FULL);
        if (!ce->r_ready) {
            ce->want_r = 1;
            return 1;
        }
        size_t room = (size_t)(b->end - b->last);
        ssize_t n = lg_end_recv(ce, b->last, room);
        if (n > 0) {
            b->last += n;
            lg_end_short_read(ce, (size_t)n, room);
            if (!gate_decide(r, LG_GATE_BYTES))
                return 0;
        } else if (n == 0) {
            ce->r_ready = 1;    /* the up pipe reads the end again once relaying */
            return gate_decide(r, LG_GATE_EOF);
        } else if (n == LG_AGAIN) {
            return 1;
        } else {
            t->ended = "client error";
            tunnel_end(r, "tunnel ended");
            return 0;
        }
    }
    return 1;
}

static void tunnel_step(lg_req_t *r)
{
    lg_tunnel_t *t = r->tunnel;
    lg_end_t *ce = r->cend, *ue = r->uend;
    if (t->spliced) {
        splice_step(r);
        return;
    }
    if (t->gate && !gate_step(r))
        return;                 /* refused: the request is finished */
    if (!t->half_up && t->gate == NULL) {
        lg_pipe_rc_t rc = lg_pipe_run(&r->reqp, ce, ue);
        if (rc == LG_PIPE_DONE) {
            lg_end_shutdown(ue);
            t->half_up = 1;
        } else if (rc < 0) {
            t->ended = rc == LG_PIPE_ERR_DST ? "upstream error" : "client error";
            tunnel_end(r, "tunnel ended");
            return;
        }
    }
    if (!t->half_down) {
        lg_pipe_rc_t rc = lg_pipe_run(&r->rspp, ue, ce);
        if (rc == LG_PIPE_DONE) {
            lg_end_shutdown(ce);
            t->half_down = 1;
        } else if (rc < 0) {
            t->ended = rc == LG_PIPE_ERR_DST ? "client error" : "upstream error";
            tunnel_end(r, "tunnel ended");
            return;
        }
    }
    if (t->half_up && t->half_down) {
        tunnel_end(r, "tunnel ended");
        return;
    }
    /* plain sockets both ends, the reply out, nothing buffered: from here
     * on the kernel moves the bytes (splice), not us */
    if (!t->half_up && !t->half_down && t->gate == NULL && ce->ssl == NULL && ue->ssl == NULL &&
        ce->ops == NULL && ue->ops == NULL && r->rspp.rate == 0 && r->rspp.rate_fn == NULL &&
        r->rspp.hdr_sent == r->rspp.hdr_len && lg_buf_len(r->reqp.buf) == 0 &&
        lg_buf_len(r->rspp.buf) == 0 && lg_splice_open(&t->sp_up, -1) == 0) {
        if (lg_splice_open(&t->sp_down, -1) < 0) {
            lg_splice_close(&t->sp_up);
            return;
        }
        t->spliced = 1;
        splice_step(r);
    }
}

static lg_msec_t tunnel_arm(lg_req_t *r, lg_tkind_t *kind)
{
    if (r->rspp.rate_wait) {
        /* held back by limit_rate: the timer lets it go on */
        *kind = LG_T_RATE;
        return r->rspp.rate_wait > lg_w.loop.now ? r->rspp.rate_wait - lg_w.loop.now : 0;
    }
    *kind = LG_T_TUNNEL;
    if (r->tunnel->gate)
        return r->tunnel->gate_deadline > lg_w.loop.now ? r->tunnel->gate_deadline - lg_w.loop.now
                                                        : 0;
    return r->tunnel->idle_timeout;
}

static void tunnel_timeout(lg_req_t *r, lg_tkind_t kind)
{
    if (kind == LG_T_RATE) {
        r->rspp.rate_wait = 0;  /* the driver runs the step again: the relay goes on */
        return;
    }
    if (r->tunnel->gate) {
        (void)gate_decide(r, LG_GATE_TIMEOUT);  /* passed: the driver runs the step again */
        return;
    }
    r->tunnel->ended = "idle";
    tunnel_end(r, "tunnel idle timeout");
}

static const lg_stage_t tunnel_stage = {
    .name = "tunnel", .step = tunnel_step, .arm = tunnel_arm, .timeout = tunnel_timeout,
};
