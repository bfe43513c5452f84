/*
 * TLS inspection's certificates (tls_mint.c): the operator's CA, the
 * certificates minted with it for the server names the forward proxy
 * intercepts, the server-side TLS a client's intercepted tunnel gets, and
 * the client context that verifies the real destinations.
 *
 * The CA and the verifying context are made by the master (and by -t, so
 * a bad file is a FILE:LINE error), and so is the minting key, which every
 * worker inherits; minted certificates are shared by the workers through
 * shared memory (and each keeps the ones it used), the server context is
 * each worker's; nothing is written to disk.
 */
#ifndef LEGATE_NET_TLS_MINT_H
#define LEGATE_NET_TLS_MINT_H

#include <stddef.h>

typedef struct ssl_st SSL;
struct ssl_ctx_st;
typedef struct lg_mint_ca lg_mint_ca_t;

/* Minted certificates kept per worker (least recently used goes first),
 * and shared by all workers in shared memory (DER, probed by name). */
#define LG_MINT_CACHE 256
#define LG_MINT_SHM_SLOTS 512

typedef struct lg_shm lg_shm_t;
/* Master, when some forward server inspects (want): the minting key every
 * worker will use (made once, kept across reloads) and the zone of shared
 * certificates.  0, or -1 with err. */
int           lg_mint_attach_shm(lg_shm_t *shm, int want, char *err, size_t errlen);
size_t        lg_mint_shm_size(int want);               /* the room it needs */
/* Certificates this process has signed (a test's view of sharing). */
unsigned long lg_mint_count(void);

/* The CA certificate and its key (PEM files): NULL with why in err when a
 * file is unreadable, the key is not the certificate's, or the
 * certificate is no CA. */
lg_mint_ca_t *lg_mint_ca_load(const char *cert, const char *key, char *err, size_t errlen);
void          lg_mint_ca_free(lg_mint_ca_t *ca);        /* NULL-safe */

/* A client context that verifies a destination's chain against cafile
 * (NULL: the system's store) and offers ALPN http/1.1 only; the name is
 * checked per connection (SSL_set1_host, net/tls.c).  NULL with err. */
struct ssl_ctx_st *lg_mint_verify_ctx(const char *cafile, char *err, size_t errlen);
void          lg_mint_ctx_free(struct ssl_ctx_st *ctx); /* NULL-safe */

/* May `name` be minted for: a DNS name of letters, digits, '-', '_' and
 * dots, not an address (an address is never intercepted). */
int           lg_mint_name_ok(const char *name);

/*
 * Worker: a server-side SSL on fd showing the client a certificate for
 * `name` signed by ca (made now or taken from the cache), ALPN http/1.1
 * only.  pre[0..n) are bytes already read from fd (the ClientHello the
 * forward proxy judged): the handshake reads them first.  NULL with why.
 */
SSL          *lg_mint_accept(const lg_mint_ca_t *ca, const char *name, int fd,
                             const void *pre, size_t n, char *why, size_t wl);

#endif
