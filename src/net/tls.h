/*
 * TLS with OpenSSL: one SSL_CTX per server that has certificates, built by
 * the master before it forks (workers never read key files), SNI choosing
 * the server's context, ALPN, session tickets whose keys live in the shared
 * segment so any worker resumes a session another one issued, and key
 * rotation driven by the master.
 */
#ifndef LEGATE_NET_TLS_H
#define LEGATE_NET_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "core/shm.h"

typedef struct ssl_st SSL;

/*
 * Build the contexts of every server of `conf` (certificates, protocols,
 * ciphers, client CA, OCSP response).  Errors are "FILE:LINE: message"
 * lines in err.  0 or -1.  Safe to call for -t.
 */
int   lg_tls_prepare(lg_conf_t *conf, char *err, size_t errlen);

/* Master: attach the ticket-key zone (and make the first key). */
int   lg_tls_attach_shm(lg_shm_t *shm, char *err, size_t errlen);
/*
 * Master: attach the shared session cache of `size` bytes (0: none, each
 * worker keeps OpenSSL's own).  tls_sess.c.
 */
int   lg_tls_sess_attach(lg_shm_t *shm, size_t size, char *err, size_t errlen);
/* A server context's session-ID cache: the shared one if attached. */
struct ssl_ctx_st;
void  lg_tls_sess_setup(struct ssl_ctx_st *ctx, long timeout_s, int shared);
void  lg_tls_sess_stats(uint64_t *stored, uint64_t *hits, uint64_t *misses, uint64_t *evicted);
/* Master, from its loop: start a new ticket key when the current is old. */
void  lg_tls_rotate(lg_msec_t every);
/*
 * A fleet's keys, made and rotated in Redis (src/cluster/tickets.c): n keys
 * of 80 bytes (name 16, AES 32, HMAC 32); keys[cur] makes tickets, every
 * one opens them.  The master leaves rotation to the fleet until no
 * install came for three rotation periods.
 * 1: the keys changed, 0: they were these already, -1: bad arguments.
 */
int   lg_tls_tickets_install(const unsigned char *keys, int n, int cur, int64_t created_ms);

/* Chooses the server (hence certificate) for an SNI name; set by the proxy layer. */
typedef const lg_server_t *(*lg_tls_sni_fn)(const lg_bind_t *b, const char *name);
void  lg_tls_set_sni(lg_tls_sni_fn fn);

/* A server-side SSL for an accepted connection on bind b (NULL on failure). */
SSL  *lg_tls_accept(const lg_bind_t *b, int fd);
/* Step the handshake: 1 done, 0 want more (errno EAGAIN, flags in *want_r / *want_w), -1 failed. */
int   lg_tls_handshake(SSL *ssl, int *want_r, int *want_w, char *why, size_t whylen);
/* Send close_notify (best effort) and free. NULL-safe. */
void  lg_tls_close(SSL *ssl);

/*
 * Towards upstreams: a client-side SSL for a connected socket to server si
 * of up, with SNI, name verification and the last session of that server
 * for resumption.  NULL on failure.
 */
SSL  *lg_tls_connect(lg_upstream_t *up, size_t si, int fd);
/*
 * Towards the fleet's Redis (rediss://): a client-side SSL for a connected
 * socket, verifying redis_tls_name (also sent as SNI) or else Redis's IP.
 * NULL on failure.
 */
SSL  *lg_tls_connect_redis(const lg_cluster_conf_t *cf, int fd);
/* Why the peer's certificate was refused, or NULL. */
const char *lg_tls_verify_error(SSL *ssl);

/* Facts for variables and logs; "" when not applicable. */
const char *lg_tls_protocol(SSL *ssl);
/* The handshake chose HTTP/2 by ALPN. */
int   lg_tls_alpn_h2(SSL *ssl);
const char *lg_tls_cipher(SSL *ssl);
const char *lg_tls_server_name(SSL *ssl);
int   lg_tls_session_reused(SSL *ssl);
/* Client certificate: subject DN, SHA-256 fingerprint (hex), verify result
 * ("SUCCESS", "NONE", "FAILED:reason"); written into buf. */
void  lg_tls_client_subject(SSL *ssl, char *buf, size_t n);
void  lg_tls_client_fingerprint(SSL *ssl, char *buf, size_t n);
void  lg_tls_client_verify(SSL *ssl, char *buf, size_t n);

#endif
