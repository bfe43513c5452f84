/*
 * QUIC server connections: see quic.h.
 *
 * Lifetimes: the endpoint owns its connections (a list, and a table of
 * every connection ID each one answers to).  A connection is freed in one
 * place, q_free(), after the application's gone(); callbacks that end a
 * connection inside ngtcp2 only mark it (q->closing), and the connection
 * goes once ngtcp2 has returned -- never from inside its own call.
 */
#include "net/quic.h"

#ifdef LG_HAVE_HTTP3   /* the whole file: configure found ngtcp2, nghttp3, GnuTLS */

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/hash.h"
#include "core/log.h"
#include "net/steer.h"

#define SCID_LEN 18
#define CID_BUCKETS 1024
#define MAX_CIDS 8                      /* connection IDs a connection issues */
#define READ_BATCH 64                   /* datagrams read per event: others get their turn */
#define RECV_BATCH 16                   /* datagrams a recvmmsg takes */
#define RECV_SIZE 65536                 /* any datagram whole (pages are touched only as used) */
#define GSO_SEGS 16                     /* packets one sendmsg carries with UDP_SEGMENT */
#define WRITE_BURST 64                  /* packets written per flush */
#define PKT_MAX 1452
#define RETRY_TOKEN_MS 10000            /* a Retry token is good this long */
#define RESET_RATE 100                  /* stateless resets a second an endpoint sends at most */

/* TLS 1.3 only, the AEADs QUIC defines, no middlebox compatibility mode
 * (RFC 9001 8.4). */
#define QUIC_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:" \
                      "+CHACHA20-POLY1305:+AES-128-CCM:-GROUP-ALL:+GROUP-X25519:"           \
                      "+GROUP-SECP256R1:+GROUP-SECP384R1:+GROUP-SECP521R1:"                 \
                      "%DISABLE_TLS13_COMPAT_MODE"

typedef struct cid_ent {
    struct cid_ent *next;
    lg_quic_t      *q;
    uint8_t         len;
    uint8_t         data[NGTCP2_MAX_CIDLEN];
} cid_ent_t;

struct lg_quic_ep {
    lg_io_t          io;
    lg_loop_t       *loop;
    lg_quic_conf_t   conf;
    const lg_quic_app_t *app;
    void            *app_data;
    gnutls_certificate_credentials_t cred;
    struct sockaddr_storage local;
    socklen_t        local_len;
    cid_ent_t       *cids[CID_BUCKETS];
    lg_quic_t       *conns;
    unsigned         nconns;
    int              draining;
    uint64_t         seed;
    lg_post_t        again;             /* read on: a batch stopped before EAGAIN */
    uint8_t          secret[32];        /* conf.secret's copy (or a random one) */
    lg_msec_t        reset_t;           /* the second the reset count is of */
    unsigned         resets;
    int              no_gso;            /* the kernel refused UDP_SEGMENT here: one packet a send */
};

typedef enum q_state {
    Q_HANDSHAKE = 0,
    Q_OPEN      = 1,
    Q_CLOSING   = 2,                    /* CONNECTION_CLOSE sent (or none due): free at the next turn */
} q_state_t;

struct lg_quic {
    lg_quic_ep_t    *ep;
    ngtcp2_conn     *conn;
    gnutls_session_t ses;
    ngtcp2_crypto_conn_ref ref;
    q_state_t        state;
    int              app_open;
    int              in_call;           /* inside ngtcp2: no flush, no free */
    struct sockaddr_storage peer;
    socklen_t        peer_len;
    lg_timer_t       timer;
    lg_post_t        post;              /* a flush after this batch */
    void            *data;
    lg_quic_t       *prev, *next;
    cid_ent_t       *mine[MAX_CIDS + 2]; /* the table entries naming this connection */
    unsigned         nmine;
    uint64_t         close_code;
    int              close_app;         /* close_code is an application error */
    int              close_pending;     /* the application closed it inside a callback */
};

static ngtcp2_tstamp ts_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * NGTCP2_SECONDS + (uint64_t)t.tv_nsec;
}

static void rnd(uint8_t *d, size_t n)
{
    if (gnutls_rnd(GNUTLS_RND_RANDOM, d, n) != 0)
        memset(d, 0, n);        /* gnutls_rnd fails only before global init */
}

/* A connection ID of ours: random, but for the steering id of the
 * endpoint's socket in front (net/steer.h), which the kernel reads to
 * bring the connection's datagrams to this socket whatever address they
 * come from. */
static void new_cid(const lg_quic_ep_t *ep, uint8_t *d, size_t n)
{
    rnd(d, n);
    if (ep->conf.steer_id >= 0 && n >= LG_STEER_CID_BYTES)
        lg_steer_cid_mark(d, (unsigned)ep->conf.steer_id);
}

/* ---- the connection ID table ---- */

static size_t cid_bucket(const lg_quic_ep_t *ep, const uint8_t *d, size_t n)
{
    return (size_t)(lg_hash64(d, n, ep->seed) % CID_BUCKETS);
}

static lg_quic_t *cid_find(const lg_quic_ep_t *ep, const uint8_t *d, size_t n)
{
    for (cid_ent_t *e = ep->cids[cid_bucket(ep, d, n)]; e; e = e->next)
        if (e->len == n && memcmp(e->data, d, n) == 0)
            return e->q;
    return NULL;
}

static int cid_add(lg_quic_t *q, const uint8_t *d, size_t n)
{
    lg_quic_ep_t *ep = q->ep;
    if (q->nmine >= sizeof(q->mine) / sizeof(q->mine[0]) || n > NGTCP2_MAX_CIDLEN)
        return -1;
    cid_ent_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    e->q = q;
    e->len = (uint8_t)n;
    memcpy(e->data, d, n);
    size_t b = cid_bucket(ep, d, n);
    e->next = ep->cids[b];
    ep->cids[b] = e;
    q->mine[q->nmine++] = e;
    return 0;
}

static void cid_unlink(lg_quic_ep_t *ep, cid_ent_t *e)
{
    cid_ent_t **pp = &ep->cids[cid_bucket(ep, e->data, e->len)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp)
        *pp = e->next;
    free(e);
}

static void cid_remove(lg_quic_t *q, const uint8_t *d, size_t n)
{
    for (unsigned i = 0; i < q->nmine; i++) {
        cid_ent_t *e = q->mine[i];
        if (e->len == n && memcmp(e->data, d, n) == 0) {
            cid_unlink(q->ep, e);
            q->mine[i] = q->mine[--q->nmine];
            return;
        }
    }
}

/* ---- freeing ---- */

static void q_free(lg_quic_t *q)
{
    lg_quic_ep_t *ep = q->ep;
    if (q->app_open && ep->app->gone)
        ep->app->gone(q);
    q->app_open = 0;
    lg_timer_del(ep->loop, &q->timer);
    for (unsigned i = 0; i < q->nmine; i++)
        cid_unlink(ep, q->mine[i]);
    q->nmine = 0;
    if (q->prev)
        q->prev->next = q->next;
    else
        ep->conns = q->next;
    if (q->next)
        q->next->prev = q->prev;
    ep->nconns--;
    if (q->conn)
        ngtcp2_conn_del(q->conn);
    if (q->ses)
        gnutls_deinit(q->ses);
    q->conn = NULL;
    q->ses = NULL;
    /* a post of ours may be queued in this batch: the memory goes after it */
    lg_loop_defer_free(ep->loop, q);
}

/* ---- ngtcp2's callbacks ---- */

static void rand_cb(uint8_t *d, size_t n, const ngtcp2_rand_ctx *ctx)
{
    (void)ctx;
    rnd(d, n);
}

static int new_cid_cb(ngtcp2_conn *conn, ngtcp2_cid *cid, uint8_t *token, size_t len, void *ud)
{
    (void)conn;
    lg_quic_t *q = ud;
    for (int tries = 0; tries < 4; tries++) {
        new_cid(q->ep, cid->data, len);
        if (cid_find(q->ep, cid->data, len) == NULL)
            break;
    }
    cid->datalen = len;
    /* derived, not random: any worker can reset a connection by its CID */
    if (ngtcp2_crypto_generate_stateless_reset_token(token, q->ep->secret, sizeof(q->ep->secret), cid) != 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    return cid_add(q, cid->data, len) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int remove_cid_cb(ngtcp2_conn *conn, const ngtcp2_cid *cid, void *ud)
{
    (void)conn;
    cid_remove(ud, cid->data, cid->datalen);
    return 0;
}

static int app_open(lg_quic_t *q)
{
    if (q->app_open)
        return 0;
    q->app_open = 1;
    if (q->ep->app->open && q->ep->app->open(q) < 0)
        return -1;
    return 0;
}

static int handshake_done_cb(ngtcp2_conn *conn, void *ud)
{
    (void)conn;
    lg_quic_t *q = ud;
    q->state = Q_OPEN;
    return app_open(q) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int recv_stream_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t off,
                          const uint8_t *data, size_t len, void *ud, void *sud)
{
    (void)conn;
    (void)off;
    (void)sud;
    lg_quic_t *q = ud;
    if (app_open(q) < 0)
        return NGTCP2_ERR_CALLBACK_FAILURE;
    int rc = q->ep->app->recv(q, sid, data, len, (flags & NGTCP2_STREAM_DATA_FLAG_FIN) != 0);
    return rc < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int acked_cb(ngtcp2_conn *conn, int64_t sid, uint64_t off, uint64_t len, void *ud, void *sud)
{
    (void)conn;
    (void)off;
    (void)sud;
    lg_quic_t *q = ud;
    if (!q->app_open || q->ep->app->acked == NULL)
        return 0;
    return q->ep->app->acked(q, sid, len) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int stream_close_cb(ngtcp2_conn *conn, uint32_t flags, int64_t sid, uint64_t code, void *ud,
                           void *sud)
{
    (void)sud;
    lg_quic_t *q = ud;
    /* a request stream done: the client may open one more (ngtcp2 leaves
     * the credit to the application; without it a connection stops after
     * max_streams_bidi requests, as a browser's long-lived one would) */
    if (ngtcp2_is_bidi_stream(sid) && !ngtcp2_conn_is_local_stream(conn, sid))
        ngtcp2_conn_extend_max_streams_bidi(conn, 1);
    if (!(flags & NGTCP2_STREAM_CLOSE_FLAG_APP_ERROR_CODE_SET))
        code = 0x100;           /* H3_NO_ERROR: the stream ended cleanly */
    if (!q->app_open || q->ep->app->stream_close == NULL)
        return 0;
    return q->ep->app->stream_close(q, sid, code) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int stream_reset_cb(ngtcp2_conn *conn, int64_t sid, uint64_t final, uint64_t code, void *ud,
                           void *sud)
{
    (void)conn;
    (void)final;
    (void)sud;
    lg_quic_t *q = ud;
    if (!q->app_open || q->ep->app->stream_reset == NULL)
        return 0;
    return q->ep->app->stream_reset(q, sid, code) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static int stop_sending_cb(ngtcp2_conn *conn, int64_t sid, uint64_t code, void *ud, void *sud)
{
    return stream_reset_cb(conn, sid, 0, code, ud, sud);
}

static int extend_stream_cb(ngtcp2_conn *conn, int64_t sid, uint64_t max, void *ud, void *sud)
{
    (void)conn;
    (void)max;
    (void)sud;
    lg_quic_t *q = ud;
    if (!q->app_open || q->ep->app->unblock == NULL)
        return 0;
    return q->ep->app->unblock(q, sid) < 0 ? NGTCP2_ERR_CALLBACK_FAILURE : 0;
}

static ngtcp2_conn *ref_get_conn(ngtcp2_crypto_conn_ref *ref)
{
    return ((lg_quic_t *)ref->user_data)->conn;
}

static const ngtcp2_callbacks callbacks = {
    .recv_client_initial = ngtcp2_crypto_recv_client_initial_cb,
    .recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb,
    .handshake_completed = handshake_done_cb,
    .encrypt = ngtcp2_crypto_encrypt_cb,
    .decrypt = ngtcp2_crypto_decrypt_cb,
    .hp_mask = ngtcp2_crypto_hp_mask_cb,
    .recv_stream_data = recv_stream_cb,
    .acked_stream_data_offset = acked_cb,
    .stream_close = stream_close_cb,
    .stream_reset = stream_reset_cb,
    .stream_stop_sending = stop_sending_cb,
    .rand = rand_cb,
    .get_new_connection_id = new_cid_cb,
    .remove_connection_id = remove_cid_cb,
    .update_key = ngtcp2_crypto_update_key_cb,
    .extend_max_stream_data = extend_stream_cb,
    .delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb,
    .delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb,
    .get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb,
    .version_negotiation = ngtcp2_crypto_version_negotiation_cb,
};

/* ---- writing ---- */

static void q_arm(lg_quic_t *q);

static void q_send(lg_quic_t *q, const uint8_t *p, size_t n)
{
    ssize_t rc;
    do
        rc = sendto(q->ep->io.fd, p, n, MSG_DONTWAIT, (struct sockaddr *)&q->peer, q->peer_len);
    while (rc < 0 && errno == EINTR);
    /* a full socket buffer loses the packet: QUIC's loss recovery sends it again */
}

/*
 * Packets of one flight to one peer, sent together: with UDP generic
 * segmentation offload one sendmsg carries them all (each `seg` bytes, the
 * last maybe shorter) and the kernel cuts them into datagrams, which costs
 * one trip through the stack instead of one a packet.  Where the kernel or
 * the device says no, one sendto each from then on.
 */
typedef struct q_batch {
    uint8_t buf[GSO_SEGS * PKT_MAX];
    size_t  len, seg;
    int     count;
} q_batch_t;

static void batch_flush(lg_quic_t *q, q_batch_t *b)
{
    if (b->count == 0)
        return;
#ifdef UDP_SEGMENT
    if (b->count > 1 && !q->ep->no_gso) {
        struct iovec iov = { .iov_base = b->buf, .iov_len = b->len };
        union {
            char           buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } u;
        memset(&u, 0, sizeof(u));
        struct msghdr m = { .msg_name = &q->peer, .msg_namelen = q->peer_len, .msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        uint16_t seg = (uint16_t)b->seg;
        memcpy(CMSG_DATA(c), &seg, sizeof(seg));
        ssize_t rc;
        do
            rc = sendmsg(q->ep->io.fd, &m, MSG_DONTWAIT);
        while (rc < 0 && errno == EINTR);
        if (rc >= 0 || (errno != EIO && errno != EINVAL && errno != ENOPROTOOPT && errno != EOPNOTSUPP)) {
            b->len = b->seg = 0;
            b->count = 0;
            return;             /* sent, or lost as one sendto would be (EAGAIN) */
        }
        q->ep->no_gso = 1;
        lg_info("QUIC: no UDP segmentation offload here (%s): one packet a send", strerror(errno));
    }
#endif
    for (size_t off = 0; off < b->len; off += b->seg)
        q_send(q, b->buf + off, b->len - off < b->seg ? b->len - off : b->seg);
    b->len = b->seg = 0;
    b->count = 0;
}

/* Room for the next packet at the batch's end (flushed first if full). */
static uint8_t *batch_room(lg_quic_t *q, q_batch_t *b)
{
    if (b->count == GSO_SEGS)
        batch_flush(q, b);
    return b->buf + b->len;
}

/* The packet of n bytes written at batch_room() joins the batch: all but
 * the last are one size, so a shorter one ends the batch, and a longer
 * one starts the next. */
static void batch_add(lg_quic_t *q, q_batch_t *b, size_t n)
{
    if (b->count > 0 && n > b->seg) {
        uint8_t tmp[PKT_MAX];
        memcpy(tmp, b->buf + b->len, n);
        batch_flush(q, b);
        memcpy(b->buf, tmp, n);
    }
    if (b->count == 0)
        b->seg = n;
    b->len += n;
    b->count++;
    if (n < b->seg || q->ep->no_gso)
        batch_flush(q, b);
}

/* The connection ends: CONNECTION_CLOSE once (unless ngtcp2 says it is
 * already draining or to drop it), then freed at the next turn. */
static void q_closing(lg_quic_t *q, int send_close)
{
    if (q->state == Q_CLOSING)
        return;
    q->state = Q_CLOSING;
    if (send_close && q->conn) {
        uint8_t buf[PKT_MAX];
        ngtcp2_connection_close_error ccerr;
        ngtcp2_connection_close_error_default(&ccerr);
        if (q->close_app)
            ngtcp2_connection_close_error_set_application_error(&ccerr, q->close_code, NULL, 0);
        ngtcp2_path_storage ps;
        ngtcp2_path_storage_zero(&ps);
        ngtcp2_pkt_info pi;
        ngtcp2_ssize n = ngtcp2_conn_write_connection_close(q->conn, &ps.path, &pi, buf, sizeof(buf),
                                                           &ccerr, ts_now());
        if (n > 0)
            q_send(q, buf, (size_t)n);
    }
    lg_timer_set(q->ep->loop, &q->timer, 0);    /* q_timer_cb frees it */
}

/* Write what ngtcp2 and the application have: handshake, ACKs, stream data. */
static void q_flush(lg_quic_t *q)
{
    const lg_quic_app_t *app = q->ep->app;
    if (q->state == Q_CLOSING || q->in_call)
        return;
    q_batch_t batch;            /* 23 KiB of stack: callbacks below may flush another connection */
    q_batch_t *b = &batch;
    b->len = b->seg = 0;
    b->count = 0;
    ngtcp2_path_storage ps;
    ngtcp2_path_storage_zero(&ps);
    ngtcp2_pkt_info pi;
    ngtcp2_tstamp ts = ts_now();
    int packets = 0;
    for (int round = 0; round < WRITE_BURST * 4 && packets < WRITE_BURST; round++) {
        int64_t sid = -1;
        int fin = 0;
        lg_quic_vec_t v[16];
        ssize_t nv = 0;
        if (q->app_open && app->pull && ngtcp2_conn_get_max_data_left(q->conn)) {
            nv = app->pull(q, &sid, &fin, v, 16);
            if (nv < 0) {
                batch_flush(q, b);
                q->close_app = 1;
                q->close_code = 0x102;          /* H3_INTERNAL_ERROR */
                q_closing(q, 1);
                return;
            }
        }
        uint32_t flags = NGTCP2_WRITE_STREAM_FLAG_MORE | (fin ? NGTCP2_WRITE_STREAM_FLAG_FIN : 0);
        ngtcp2_ssize taken = -1;
        q->in_call++;
        uint8_t *buf = batch_room(q, b);
        ngtcp2_ssize n = ngtcp2_conn_writev_stream(q->conn, &ps.path, &pi, buf, PKT_MAX, &taken,
                                                   flags, sid, (const ngtcp2_vec *)v, (size_t)nv, ts);
        q->in_call--;
        if (n < 0) {
            if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED) {
                if (app->blocked)
                    app->blocked(q, sid);
                continue;
            }
            if (n == NGTCP2_ERR_STREAM_SHUT_WR) {
                if (app->shut_wr)
                    app->shut_wr(q, sid);
                continue;
            }
            if (n == NGTCP2_ERR_WRITE_MORE) {
                if (app->wrote && app->wrote(q, sid, (size_t)taken) < 0) {
                    batch_flush(q, b);
                    q_closing(q, 1);
                    return;
                }
                continue;
            }
            lg_info("QUIC client: write failed: %s", ngtcp2_strerror((int)n));
            batch_flush(q, b);
            q_closing(q, 1);
            return;
        }
        if (taken >= 0 && sid >= 0 && app->wrote && app->wrote(q, sid, (size_t)taken) < 0) {
            batch_flush(q, b);
            q_closing(q, 1);
            return;
        }
        if (n == 0)
            break;
        batch_add(q, b, (size_t)n);
        packets++;
    }
    batch_flush(q, b);
    q_arm(q);
}

static void q_posted(lg_post_t *p)
{
    lg_quic_t *q = (lg_quic_t *)((char *)p - offsetof(lg_quic_t, post));
    if (q->conn == NULL)
        return;                 /* freed meanwhile; the memory goes after the batch */
    if (q->close_pending) {
        q_closing(q, 1);
        return;
    }
    if (q->app_open && q->ep->app->settle && q->state != Q_CLOSING)
        q->ep->app->settle(q);
    q_flush(q);
}

/* ---- time ---- */

static void q_arm(lg_quic_t *q)
{
    if (q->state == Q_CLOSING)
        return;
    ngtcp2_tstamp exp = ngtcp2_conn_get_expiry(q->conn), now = ts_now();
    lg_msec_t ms = exp <= now ? 0 : (lg_msec_t)((exp - now + NGTCP2_MILLISECONDS - 1) / NGTCP2_MILLISECONDS);
    lg_timer_set(q->ep->loop, &q->timer, ms);
}

static void q_timer_cb(lg_timer_t *t)
{
    lg_quic_t *q = t->data;
    if (q->state == Q_CLOSING) {
        q_free(q);
        return;
    }
    int rc = ngtcp2_conn_handle_expiry(q->conn, ts_now());
    if (rc == NGTCP2_ERR_IDLE_CLOSE || rc == NGTCP2_ERR_HANDSHAKE_TIMEOUT) {
        lg_debug("QUIC client: %s", rc == NGTCP2_ERR_IDLE_CLOSE ? "idle timeout" : "handshake timeout");
        q_closing(q, 0);        /* silently (RFC 9000 10.1) */
        return;
    }
    if (rc != 0) {
        q_closing(q, 1);
        return;
    }
    q_flush(q);
}

/* ---- reading ---- */

static const char *peer_str(const struct sockaddr_storage *ss, char *buf, size_t n);

/* Answer an Initial without a token by a Retry whose token proves the
 * address (RFC 9000 8.1.2): nothing is kept until the client comes back. */
static void send_retry(lg_quic_ep_t *ep, const ngtcp2_pkt_hd *hd, const struct sockaddr_storage *peer,
                       socklen_t plen)
{
    ngtcp2_cid scid = { .datalen = SCID_LEN };
    new_cid(ep, scid.data, SCID_LEN);
    uint8_t token[NGTCP2_CRYPTO_MAX_RETRY_TOKENLEN], buf[PKT_MAX];
    ngtcp2_ssize tl = ngtcp2_crypto_generate_retry_token(token, ep->secret, sizeof(ep->secret), hd->version,
                                                         (const ngtcp2_sockaddr *)peer, plen, &scid,
                                                         &hd->dcid, ts_now());
    if (tl < 0)
        return;
    ngtcp2_ssize n = ngtcp2_crypto_write_retry(buf, sizeof(buf), hd->version, &hd->scid, &scid, &hd->dcid,
                                               token, (size_t)tl);
    if (n > 0)
        (void)sendto(ep->io.fd, buf, (size_t)n, MSG_DONTWAIT, (const struct sockaddr *)peer, plen);
}

static lg_quic_t *q_accept(lg_quic_ep_t *ep, const uint8_t *pkt, size_t len,
                           const struct sockaddr_storage *peer, socklen_t plen)
{
    ngtcp2_pkt_hd hd;
    if (ep->draining || ngtcp2_accept(&hd, pkt, len) != 0)
        return NULL;
    ngtcp2_cid odcid_buf, *odcid = NULL;
    if (hd.token.len && hd.token.base[0] == NGTCP2_CRYPTO_TOKEN_MAGIC_RETRY) {
        if (ngtcp2_crypto_verify_retry_token(&odcid_buf, hd.token.base, hd.token.len, ep->secret,
                                             sizeof(ep->secret), hd.version, (const ngtcp2_sockaddr *)peer,
                                             plen, &hd.dcid, (uint64_t)RETRY_TOKEN_MS * NGTCP2_MILLISECONDS,
                                             ts_now()) != 0) {
            char t[64];
            lg_info("QUIC client %s: a Retry token that does not verify: dropped",
                    peer_str(peer, t, sizeof(t)));
            return NULL;
        }
        odcid = &odcid_buf;
    } else if (ep->conf.retry) {
        send_retry(ep, &hd, peer, plen);
        return NULL;
    }
    if (ep->nconns >= ep->conf.max_conns)
        return NULL;            /* the client tries again, or falls back to TCP */
    unsigned same = 0;
    for (lg_quic_t *o = ep->conns; o && ep->conf.max_per_addr; o = o->next) {
        const struct sockaddr_storage *a = &o->peer;
        if (a->ss_family != peer->ss_family)
            continue;
        if (a->ss_family == AF_INET &&
            ((const struct sockaddr_in *)a)->sin_addr.s_addr == ((const struct sockaddr_in *)peer)->sin_addr.s_addr)
            same++;
        else if (a->ss_family == AF_INET6 &&
                 memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                        &((const struct sockaddr_in6 *)peer)->sin6_addr, 16) == 0)
            same++;
    }
    if (ep->conf.max_per_addr && same >= ep->conf.max_per_addr) {
        char t[64];
        lg_info("QUIC client %s: over %u connections from one address", peer_str(peer, t, sizeof(t)),
                ep->conf.max_per_addr);
        return NULL;
    }
    lg_quic_t *q = calloc(1, sizeof(*q));
    if (q == NULL)
        return NULL;
    q->ep = ep;
    q->peer = *peer;
    q->peer_len = plen;
    q->timer.cb = q_timer_cb;
    q->timer.data = q;
    q->post.fn = q_posted;
    q->next = ep->conns;
    if (ep->conns)
        ep->conns->prev = q;
    ep->conns = q;
    ep->nconns++;

    ngtcp2_cid scid = { .datalen = SCID_LEN };
    for (int tries = 0; tries < 4; tries++) {
        new_cid(ep, scid.data, SCID_LEN);
        if (cid_find(ep, scid.data, SCID_LEN) == NULL)
            break;
    }
    ngtcp2_settings s;
    ngtcp2_settings_default(&s);
    s.initial_ts = ts_now();
    s.handshake_timeout = (uint64_t)ep->conf.handshake_timeout * NGTCP2_MILLISECONDS;
    /* no window auto-tuning: the application holds a stream's unread
     * bytes in a buffer of stream_window bytes */
    s.max_stream_window = ep->conf.stream_window;
    s.max_window = ep->conf.conn_window;
    ngtcp2_transport_params p;
    ngtcp2_transport_params_default(&p);
    p.initial_max_stream_data_bidi_remote = ep->conf.stream_window;
    p.initial_max_stream_data_bidi_local = ep->conf.stream_window;
    p.initial_max_stream_data_uni = ep->conf.stream_window;
    p.initial_max_data = ep->conf.conn_window;
    p.initial_max_streams_bidi = ep->conf.max_streams_bidi;
    p.initial_max_streams_uni = 3;      /* the client's control and QPACK streams */
    p.max_idle_timeout = (uint64_t)ep->conf.idle_timeout * NGTCP2_MILLISECONDS;
    p.active_connection_id_limit = MAX_CIDS;
    p.stateless_reset_token_present = 1;
    if (ngtcp2_crypto_generate_stateless_reset_token(p.stateless_reset_token, ep->secret,
                                                     sizeof(ep->secret), &scid) != 0)
        goto fail;
    p.original_dcid = hd.dcid;
    if (odcid) {
        /* the address was validated by our Retry: say so (RFC 9000 7.3) */
        p.original_dcid = *odcid;
        p.retry_scid = hd.dcid;
        p.retry_scid_present = 1;
        s.token = hd.token;
    }
    ngtcp2_path path = {
        .local = { (ngtcp2_sockaddr *)&ep->local, ep->local_len },
        .remote = { (ngtcp2_sockaddr *)&q->peer, q->peer_len },
    };
    if (ngtcp2_conn_server_new(&q->conn, &hd.scid, &scid, &path, hd.version, &callbacks, &s, &p, NULL,
                               q) != 0)
        goto fail;
    gnutls_datum_t alpn = { (unsigned char *)"h3", 2 };
    if (gnutls_init(&q->ses, GNUTLS_SERVER | GNUTLS_ENABLE_EARLY_DATA | GNUTLS_NO_END_OF_EARLY_DATA) != 0 ||
        gnutls_priority_set_direct(q->ses, QUIC_PRIORITY, NULL) != 0 ||
        gnutls_credentials_set(q->ses, GNUTLS_CRD_CERTIFICATE, ep->cred) != 0 ||
        ngtcp2_crypto_gnutls_configure_server_session(q->ses) != 0 ||
        gnutls_alpn_set_protocols(q->ses, &alpn, 1, GNUTLS_ALPN_MANDATORY) != 0)
        goto fail;
    q->ref.get_conn = ref_get_conn;
    q->ref.user_data = q;
    gnutls_session_set_ptr(q->ses, &q->ref);
    ngtcp2_conn_set_tls_native_handle(q->conn, q->ses);
    /* packets name this connection by our SCID, and until the client has
     * seen it, by the DCID it chose */
    if (cid_add(q, scid.data, scid.datalen) < 0 || cid_add(q, hd.dcid.data, hd.dcid.datalen) < 0)
        goto fail;
    return q;
fail:
    q_free(q);
    return NULL;
}

static const char *peer_str(const struct sockaddr_storage *ss, char *buf, size_t n)
{
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (inet_ntop(ss->ss_family, a, buf, (socklen_t)n) == NULL)
        snprintf(buf, n, "?");
    return buf;
}

static void q_read(lg_quic_t *q, const uint8_t *pkt, size_t len, const struct sockaddr_storage *from,
                   socklen_t flen)
{
    lg_quic_ep_t *ep = q->ep;
    ngtcp2_path path = {
        .local = { (ngtcp2_sockaddr *)&ep->local, ep->local_len },
        .remote = { (ngtcp2_sockaddr *)from, flen },
    };
    ngtcp2_pkt_info pi = { 0 };
    q->in_call++;
    int rc = ngtcp2_conn_read_pkt(q->conn, &path, &pi, pkt, len, ts_now());
    q->in_call--;
    if (rc == 0) {
        /* a validated new path: replies go there (ngtcp2 checked it) */
        const ngtcp2_path *cur = ngtcp2_conn_get_path(q->conn);
        if (cur->remote.addrlen <= sizeof(q->peer) && cur->remote.addrlen) {
            memcpy(&q->peer, cur->remote.addr, cur->remote.addrlen);
            q->peer_len = (socklen_t)cur->remote.addrlen;
        }
        lg_loop_post(ep->loop, &q->post);
        return;
    }
    if (q->state == Q_CLOSING)
        return;
    switch (rc) {
    case NGTCP2_ERR_DRAINING:
    case NGTCP2_ERR_DROP_CONN:
    case NGTCP2_ERR_RETRY:
        q_closing(q, 0);
        break;
    case NGTCP2_ERR_CRYPTO: {
        char t[64];
        lg_info("QUIC client %s: TLS handshake failed (alert %u)", peer_str(from, t, sizeof(t)),
                (unsigned)ngtcp2_conn_get_tls_alert(q->conn));
        q_closing(q, 1);
        break;
    }
    default:
        lg_debug("QUIC client: %s", ngtcp2_strerror(rc));
        q_closing(q, 1);
        break;
    }
}

static void version_negotiation(lg_quic_ep_t *ep, const ngtcp2_version_cid *vc,
                                const struct sockaddr_storage *from, socklen_t flen)
{
    uint8_t buf[256], r;
    uint32_t sv[] = { NGTCP2_PROTO_VER_V1 };
    rnd(&r, 1);
    ngtcp2_ssize n = ngtcp2_pkt_write_version_negotiation(buf, sizeof(buf), r, vc->scid, vc->scidlen,
                                                           vc->dcid, vc->dcidlen, sv, 1);
    if (n > 0)
        (void)sendto(ep->io.fd, buf, (size_t)n, MSG_DONTWAIT, (const struct sockaddr *)from, flen);
}

/*
 * A short-header packet for no connection of ours (one this worker's
 * predecessor had, or garbage): a stateless reset tells a real client at
 * once that its connection is gone (RFC 9000 10.3).  Smaller than what
 * came, so two endpoints cannot bounce resets forever, and at most
 * RESET_RATE a second, so legate is no one's amplifier.
 */
static void stateless_reset(lg_quic_ep_t *ep, const uint8_t *pkt, size_t n, const uint8_t *dcid,
                            size_t dcidlen, const struct sockaddr_storage *from, socklen_t flen)
{
    (void)pkt;
    if (n < 1 + 20 + NGTCP2_STATELESS_RESET_TOKENLEN + 1 || dcidlen != SCID_LEN)
        return;                 /* too small to answer smaller, or not a CID we could have made */
    lg_msec_t sec = ep->loop->now / 1000;
    if (sec != ep->reset_t) {
        ep->reset_t = sec;
        ep->resets = 0;
    }
    if (++ep->resets > RESET_RATE)
        return;
    ngtcp2_cid cid;
    ngtcp2_cid_init(&cid, dcid, dcidlen);
    uint8_t token[NGTCP2_STATELESS_RESET_TOKENLEN], rbytes[64], buf[128];
    if (ngtcp2_crypto_generate_stateless_reset_token(token, ep->secret, sizeof(ep->secret), &cid) != 0)
        return;
    size_t randlen = n - 1 - NGTCP2_STATELESS_RESET_TOKENLEN - 1;
    if (randlen > sizeof(rbytes))
        randlen = sizeof(rbytes);
    rnd(rbytes, randlen);
    ngtcp2_ssize k = ngtcp2_pkt_write_stateless_reset(buf, sizeof(buf), token, rbytes, randlen);
    if (k > 0)
        (void)sendto(ep->io.fd, buf, (size_t)k, MSG_DONTWAIT, (const struct sockaddr *)from, flen);
}

void lg_quic_ep_input(lg_quic_ep_t *ep, const uint8_t *pkt, size_t n,
                      const struct sockaddr_storage *from, socklen_t flen)
{
    if (n == 0)
        return;                 /* ngtcp2 asserts on an empty datagram */
    ngtcp2_version_cid vc;
    int rc = ngtcp2_pkt_decode_version_cid(&vc, pkt, n, SCID_LEN);
    if (rc == NGTCP2_ERR_VERSION_NEGOTIATION) {
        version_negotiation(ep, &vc, from, flen);
        return;
    }
    if (rc != 0)
        return;                 /* not QUIC: dropped */
    lg_quic_t *q = cid_find(ep, vc.dcid, vc.dcidlen);
    if (q == NULL && !(pkt[0] & 0x80)) {
        stateless_reset(ep, pkt, n, vc.dcid, vc.dcidlen, from, flen);
        return;
    }
    if (q == NULL && (q = q_accept(ep, pkt, n, from, flen)) == NULL)
        return;
    if (q->state != Q_CLOSING)
        q_read(q, pkt, n, from, flen);
}

static void ep_read(lg_io_t *io, uint32_t events)
{
    lg_quic_ep_t *ep = io->data;
    if (!(events & EPOLLIN) || io->fd < 0)
        return;
    /* several datagrams a system call (recvmmsg); each is handled before
     * the next call reuses its buffer */
    static uint8_t pkt[RECV_BATCH][RECV_SIZE];
    struct sockaddr_storage from[RECV_BATCH];
    struct iovec iov[RECV_BATCH];
    struct mmsghdr mm[RECV_BATCH];
    for (int got = 0; got < READ_BATCH;) {
        for (int i = 0; i < RECV_BATCH; i++) {
            iov[i] = (struct iovec){ .iov_base = pkt[i], .iov_len = RECV_SIZE };
            mm[i].msg_hdr = (struct msghdr){ .msg_name = &from[i], .msg_namelen = sizeof(from[i]),
                                             .msg_iov = &iov[i], .msg_iovlen = 1 };
            mm[i].msg_len = 0;
        }
        int n = recvmmsg(io->fd, mm, RECV_BATCH, MSG_DONTWAIT, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;             /* EAGAIN: all read (edge-triggered: drained) */
        }
        for (int i = 0; i < n; i++)
            if (!(mm[i].msg_hdr.msg_flags & MSG_TRUNC))
                lg_quic_ep_input(ep, pkt[i], mm[i].msg_len, &from[i], mm[i].msg_hdr.msg_namelen);
        got += n;
        if (n < RECV_BATCH)
            return;             /* the queue is empty */
    }
    /* more may be queued (edge-triggered: no new event for them): come
     * back after the others had their turn */
    lg_loop_post(ep->loop, &ep->again);
}

static void ep_again(lg_post_t *p)
{
    lg_quic_ep_t *ep = (lg_quic_ep_t *)((char *)p - offsetof(lg_quic_ep_t, again));
    ep_read(&ep->io, EPOLLIN);
}

/* ---- the endpoint ---- */

static int load_pair(lg_quic_ep_t *ep, const char *cert, const char *key, char *why, size_t whylen)
{
    int rc = gnutls_certificate_set_x509_key_file(ep->cred, cert, key, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        snprintf(why, whylen, "QUIC: cannot load %s / %s into GnuTLS: %s", cert, key, gnutls_strerror(rc));
        return -1;
    }
    return 0;
}

lg_quic_ep_t *lg_quic_ep_new(lg_loop_t *loop, int fd, const lg_quic_conf_t *conf,
                             const lg_quic_app_t *app, void *app_data, char *why, size_t whylen)
{
    static int global;
    if (!global) {
        if (gnutls_global_init() != 0) {
            snprintf(why, whylen, "QUIC: GnuTLS did not initialize");
            return NULL;
        }
        global = 1;
    }
    lg_quic_ep_t *ep = calloc(1, sizeof(*ep));
    if (ep == NULL) {
        snprintf(why, whylen, "out of memory");
        return NULL;
    }
    ep->loop = loop;
    ep->conf = *conf;
    ep->app = app;
    ep->app_data = app_data;
    ep->again.fn = ep_again;
    rnd((uint8_t *)&ep->seed, sizeof(ep->seed));
    if (conf->secret && conf->secret_len) {
        for (size_t i = 0; i < sizeof(ep->secret); i++)
            ep->secret[i] = conf->secret[i % conf->secret_len];
    } else {
        rnd(ep->secret, sizeof(ep->secret));
    }
    ep->local_len = sizeof(ep->local);
    if (getsockname(fd, (struct sockaddr *)&ep->local, &ep->local_len) < 0 ||
        gnutls_certificate_allocate_credentials(&ep->cred) != 0) {
        snprintf(why, whylen, "QUIC: %s", strerror(errno));
        free(ep);
        return NULL;
    }
    if (load_pair(ep, conf->cert, conf->key, why, whylen) < 0 ||
        (conf->cert2 && load_pair(ep, conf->cert2, conf->key2, why, whylen) < 0)) {
        gnutls_certificate_free_credentials(ep->cred);
        free(ep);
        return NULL;
    }
    ep->io.fd = fd;
    ep->io.cb = ep_read;
    ep->io.data = ep;
    if (lg_io_add(loop, &ep->io, EPOLLIN | EPOLLET) < 0) {
        snprintf(why, whylen, "QUIC: epoll: %s", strerror(errno));
        gnutls_certificate_free_credentials(ep->cred);
        free(ep);
        return NULL;
    }
    ep_read(&ep->io, EPOLLIN);  /* what came before we listened */
    return ep;
}

void lg_quic_ep_free(lg_quic_ep_t *ep)
{
    if (ep == NULL)
        return;
    while (ep->conns)
        q_free(ep->conns);
    lg_io_del(ep->loop, &ep->io);
    ep->io.fd = -1;
    gnutls_certificate_free_credentials(ep->cred);
    lg_loop_defer_free(ep->loop, ep);
}

unsigned lg_quic_ep_drain(lg_quic_ep_t *ep)
{
    ep->draining = 1;
    return ep->nconns;
}

unsigned lg_quic_ep_count(const lg_quic_ep_t *ep) { return ep->nconns; }
void *lg_quic_ep_data(const lg_quic_ep_t *ep) { return ep->app_data; }

/* ---- for the application ---- */

void lg_quic_set_data(lg_quic_t *q, void *data) { q->data = data; }
void *lg_quic_data(const lg_quic_t *q) { return q->data; }
lg_quic_ep_t *lg_quic_ep(const lg_quic_t *q) { return q->ep; }
const struct sockaddr_storage *lg_quic_peer(const lg_quic_t *q) { return &q->peer; }

int lg_quic_open_uni(lg_quic_t *q, int64_t *sid)
{
    return ngtcp2_conn_open_uni_stream(q->conn, sid, NULL) == 0 ? 0 : -1;
}

void lg_quic_consumed(lg_quic_t *q, int64_t sid, size_t n)
{
    if (q->conn == NULL || n == 0)
        return;
    ngtcp2_conn_extend_max_stream_offset(q->conn, sid, n);
    ngtcp2_conn_extend_max_offset(q->conn, n);
    lg_quic_kick(q);            /* the window update goes out */
}

void lg_quic_stop_reading(lg_quic_t *q, int64_t sid, uint64_t code)
{
    if (q->conn)
        ngtcp2_conn_shutdown_stream_read(q->conn, sid, code);
    lg_quic_kick(q);
}

void lg_quic_reset(lg_quic_t *q, int64_t sid, uint64_t code)
{
    if (q->conn)
        ngtcp2_conn_shutdown_stream(q->conn, sid, code);
    lg_quic_kick(q);
}

void lg_quic_kick(lg_quic_t *q)
{
    if (q->conn && q->state != Q_CLOSING)
        lg_loop_post(q->ep->loop, &q->post);
}

void lg_quic_close(lg_quic_t *q, uint64_t code, const char *why)
{
    if (q->state == Q_CLOSING)
        return;
    lg_debug("QUIC connection closed: %s", why);
    q->close_app = 1;
    q->close_code = code;
    /* maybe inside ngtcp2 (a callback): the close goes out after the batch */
    q->close_pending = 1;
    lg_loop_post(q->ep->loop, &q->post);
}

#endif /* LG_HAVE_HTTP3 */
