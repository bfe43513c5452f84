/*
 * Stream servers (layer 4): nginx's stream { } and HAProxy's mode tcp.
 *
 * A stream server's connection is an lg_conn_t with the stream front end
 * (stream.c), and each session is one lg_req_t on it, so what connections
 * and requests already have is the stream's too: the PROXY protocol from
 * clients and TLS termination (conn.c), access rules and limit_conn (the
 * ACCESS phase), the upstream attempt with its balancers, retries,
 * connect timeout, passive health and max_conns (proxy/reverse.c, as for
 * a CONNECT), the two-way relay with half-close and splice
 * (pipeline/tunnel.c), the access log (LOG).  What is the stream's own:
 * reading the ClientHello to choose the upstream (ssl_preread, with
 * net/clienthello.c) and the PROXY protocol header sent upstream.
 */
#ifndef LEGATE_STREAM_STREAM_H
#define LEGATE_STREAM_STREAM_H

#include "pipeline/request.h"

/* The front end of stream listeners (proc/features.c registers it). */
void lg_stream_register(void);

/* ROUTE: a session goes to its upstream; LOG: its bytes set right.
 * Before the reverse proxy in the feature list. */
extern const lg_feature_t lg_feature_stream;

/* udp.c: a worker reads datagrams of a udp listen on fd (its socket for
 * this slot); on a graceful stop it reads no more but keeps the sockets for
 * the replies of the sessions left, and exits once none is (0 or -1). */
int  lg_udp_listen(int fd, const lg_bind_t *bind);
void lg_udp_quit(void);
int  lg_udp_sessions(void);

/* The PROXY protocol header (version 1 or 2) saying the connection came
 * from src to dst, written into out (at least 108 bytes); its length,
 * or 0 when the families differ or are not IP (v1 "UNKNOWN" / v2 LOCAL
 * are written then). */
size_t lg_stream_proxy_header(int version, const struct sockaddr_storage *src,
                              const struct sockaddr_storage *dst, unsigned char *out,
                              size_t outlen);

#endif
