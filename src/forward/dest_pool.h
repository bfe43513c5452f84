/*
 * Forward-proxy destinations (dest_pool.c): an upstream of one server
 * made at run time for each (scheme, host, port, address) a client asked
 * for, whose idle connections are kept in the same per-worker keep-alive
 * pool as a configured upstream's (proxy/upstream.c).  Per worker; no
 * shared state.
 */
#ifndef LEGATE_FORWARD_DEST_POOL_H
#define LEGATE_FORWARD_DEST_POOL_H

#include <sys/socket.h>

#include "conf/conf.h"

/* The record for host:port at address ss (the port already in ss), made
 * or found; tunnels get their own records, never pooled.  tls_ctx (an
 * SSL_CTX that verifies): https://host:port, TLS with SNI host and its
 * name verified (TLS inspection); NULL: http://.  NULL: out of memory. */
lg_upstream_t *lg_dest_get(const lg_forward_t *f, const char *host, unsigned port,
                           const struct sockaddr_storage *ss, int tunnel, void *tls_ctx);
/* A record of f's for http://host:port (https:// with tls) holding an idle connection now, or
 * NULL: a request for it needs no name lookup (its address was judged by
 * f's rules when the connection was made -- another forward block's
 * records never count, their rules may differ). */
lg_upstream_t *lg_dest_idle(const lg_forward_t *f, const char *host, unsigned port, int tls);

#endif
