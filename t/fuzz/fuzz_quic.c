/*
 * libFuzzer harness for net/quic.c: datagrams from clients into a QUIC
 * endpoint (connection-ID routing, Initial acceptance, the per-address cap,
 * version negotiation, ngtcp2's packet decoding behind them), with the
 * same GnuTLS certificate set-up as a worker.
 *
 * An input is a sequence of datagrams, each a 2-byte big-endian length, a
 * byte choosing the client's source port, then the datagram; each input
 * gets a fresh endpoint, so inputs do not depend on each other.
 */
#include <arpa/inet.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/event.h"
#include "core/log.h"
#include "net/quic.h"

static lg_loop_t loop;
static int fd = -1;
static char cert[4096], key[4096];

static int app_recv(lg_quic_t *q, int64_t sid, const uint8_t *p, size_t n, int fin)
{
    (void)fin;
    (void)p;
    lg_quic_consumed(q, sid, n);
    return 0;
}

static const lg_quic_app_t app = { .recv = app_recv };

static void setup(void)
{
    char here[4096];
    snprintf(here, sizeof(here), "%s", __FILE__);
    const char *dir = dirname(here);
    snprintf(cert, sizeof(cert), "%s/../../conf/examples/certs/server-ecdsa.pem", dir);
    snprintf(key, sizeof(key), "%s/../../conf/examples/certs/server-ecdsa.key", dir);
    if (lg_loop_init(&loop) < 0)
        abort();
    fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET };
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
        abort();
    lg_log_set_level(LG_LOG_EMERG);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd < 0)
        setup();
    lg_quic_conf_t qc = {
        .cert = cert, .key = key, .idle_timeout = 1000, .handshake_timeout = 1000,
        .max_streams_bidi = 8, .stream_window = 65536, .conn_window = 1 << 20,
        .max_conns = 16, .max_per_addr = 4,
    };
    char why[256];
    lg_quic_ep_t *ep = lg_quic_ep_new(&loop, fd, &qc, &app, NULL, why, sizeof(why));
    if (ep == NULL) {
        fprintf(stderr, "%s\n", why);
        abort();
    }
    size_t off = 0;
    for (int i = 0; i < 64 && off + 3 <= size; i++) {
        size_t n = ((size_t)data[off] << 8) | data[off + 1];
        struct sockaddr_storage ss;
        memset(&ss, 0, sizeof(ss));
        struct sockaddr_in *from = (struct sockaddr_in *)&ss;
        from->sin_family = AF_INET;
        from->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        from->sin_port = htons((uint16_t)(40000 + data[off + 2]));
        off += 3;
        if (n > size - off)
            n = size - off;
        /* a copy of exactly n bytes: ASan sees any read past the datagram */
        uint8_t *pkt = malloc(n ? n : 1);
        memcpy(pkt, data + off, n);
        lg_quic_ep_input(ep, pkt, n, &ss, sizeof(*from));
        free(pkt);
        off += n;
        lg_loop_once(&loop, 0);         /* posts: replies, closes */
    }
    lg_quic_ep_free(ep);
    lg_loop_once(&loop, 0);             /* the deferred frees */
    return 0;
}
