/*
 * TLS contexts, handshakes and shared session-ticket keys.
 *
 * Ticket keys live in one shared-memory zone ("tls-tickets"):
 *
 *   mutex | current | keys[3] = { name[16], aes[32], hmac[32], created_ms }
 *
 * The master makes a new key every tls_ticket_rotate and makes it current;
 * the two before it still decrypt (a ticket renewed with the current key on
 * use), so a ticket lives at most three rotations.  Workers take the robust
 * mutex only to copy a key (tens of nanoseconds); a worker killed while
 * holding it leaves the keys valid (they are written before `current`
 * moves), and the next locker just marks the mutex consistent.
 */
#include "net/tls.h"
#include "core/event.h"

#include <errno.h>
#include <stdarg.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"

#define NKEYS 3

typedef struct ticket_key {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
    int64_t       created_ms;
} ticket_key_t;

typedef struct ticket_zone {
    lg_shm_mutex_t mx;
    int            current;     /* index into keys; -1 before the first */
    int64_t        external_ms; /* keys last installed by the cluster (wall ms); 0 never */
    ticket_key_t   keys[NKEYS];
} ticket_zone_t;

static ticket_zone_t *tickets;  /* in shared memory (attached by the master) */
static EVP_CIPHER *ticket_cipher; /* fetched once: a fetch per ticket costs locks and lookups */
static lg_tls_sni_fn sni_fn;
static int ex_bind = -1;        /* SSL ex_data index: the lg_bind_t */
static int ex_server = -1;      /* SSL_CTX ex_data index: the lg_server_t */

typedef struct ocsp_blob {
    unsigned char *der;
    long           len;
} ocsp_blob_t;

/* ---- errors ---- */

static void add_err(char *err, size_t errlen, size_t *used, const char *file, int line,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static void add_err(char *err, size_t errlen, size_t *used, const char *file, int line,
                    const char *fmt, ...)
{
    if (*used >= errlen)
        return;
    int n = snprintf(err + *used, errlen - *used, "%s:%d: ", file, line);
    if (n > 0)
        *used += (size_t)n < errlen - *used ? (size_t)n : errlen - *used;
    va_list ap;
    va_start(ap, fmt);
    n = vsnprintf(err + *used, errlen - *used, fmt, ap);
    va_end(ap);
    if (n > 0)
        *used += (size_t)n < errlen - *used ? (size_t)n : errlen - *used;
    unsigned long e = ERR_peek_last_error();
    if (e && *used < errlen) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof(buf));
        n = snprintf(err + *used, errlen - *used, " (%s)", buf);
        if (n > 0)
            *used += (size_t)n < errlen - *used ? (size_t)n : errlen - *used;
    }
    ERR_clear_error();
    if (*used < errlen - 1) {
        err[(*used)++] = '\n';
        err[*used] = '\0';
    }
}

/* SHA-256 of what makes a server a different TLS endpoint: names,
 * certificates, client-certificate policy. */
static void server_identity(const lg_server_t *srv, unsigned char out[32])
{
    const lg_tls_conf_t *t = &srv->tls;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int n = 0;
    memset(out, 0, 32);
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return;
    }
    for (size_t i = 0; i < srv->nnames; i++)
        if (srv->names[i].name)
            EVP_DigestUpdate(md, srv->names[i].name, strlen(srv->names[i].name) + 1);
    for (size_t i = 0; i < t->ncerts; i++)
        if (t->certs[i].cert)
            EVP_DigestUpdate(md, t->certs[i].cert, strlen(t->certs[i].cert) + 1);
    EVP_DigestUpdate(md, "|", 1);
    if (t->client_ca)
        EVP_DigestUpdate(md, t->client_ca, strlen(t->client_ca) + 1);
    if (t->verify_client)
        EVP_DigestUpdate(md, t->verify_client, strlen(t->verify_client) + 1);
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
}

/* ---- callbacks ---- */

/* The server (hence context) for an SNI name: certificate, verification. */
static void switch_ctx(SSL *ssl, const char *name)
{
    const lg_bind_t *b = SSL_get_ex_data(ssl, ex_bind);
    if (name == NULL || b == NULL || sni_fn == NULL)
        return;
    const lg_server_t *srv = sni_fn(b, name);
    if (srv && srv->ssl_ctx && srv->ssl_ctx != SSL_get_SSL_CTX(ssl)) {
        SSL_CTX *ctx = srv->ssl_ctx;
        SSL_set_SSL_CTX(ssl, ctx);
        /* the new context's verification settings apply to this handshake */
        SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), SSL_CTX_get_verify_callback(ctx));
        SSL_set_verify_depth(ssl, SSL_CTX_get_verify_depth(ctx));
        SSL_set_client_CA_list(ssl, SSL_dup_CA_list(SSL_CTX_get_client_CA_list(ctx)));
    }
}

/*
 * The server is chosen here, from the raw ClientHello, before OpenSSL looks
 * up a session to resume: the lookup then compares the session's context
 * with the chosen server's, so a session (ID or ticket) made on one server
 * never resumes on another one sharing the address -- which would skip
 * that server's client-certificate check (nginx's CVE-2025-23419).  By the
 * time the servername callback runs, a TLS 1.2 resumption is decided and
 * SSL_get_servername() reports the old session's name.
 */
static int client_hello_cb(SSL *ssl, int *al, void *arg)
{
    (void)al;
    (void)arg;
    const unsigned char *p;
    size_t n;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &n))
        return SSL_CLIENT_HELLO_SUCCESS;
    /* ServerNameList: u16 length, then { u8 type, u16 length, name } */
    if (n < 5 || (size_t)(p[0] << 8 | p[1]) + 2 != n || p[2] != TLSEXT_NAMETYPE_host_name)
        return SSL_CLIENT_HELLO_SUCCESS;
    size_t len = (size_t)(p[3] << 8 | p[4]);
    if (len == 0 || len > 255 || len + 5 > n || memchr(p + 5, '\0', len))
        return SSL_CLIENT_HELLO_SUCCESS;
    char name[256];
    memcpy(name, p + 5, len);
    name[len] = '\0';
    switch_ctx(ssl, name);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Still set: clients of old OpenSSL builds without the hello callback path. */
static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    (void)arg;
    if (!SSL_session_reused(ssl))
        switch_ctx(ssl, SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
    return SSL_TLSEXT_ERR_OK;
}

static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    /* what we speak, in order of preference: h2 where the listener has it */
    static const unsigned char h2[] = "\x02h2\x08http/1.1";
    static const unsigned char h1[] = "\x08http/1.1";
    const lg_bind_t *b = SSL_get_ex_data(ssl, ex_bind);
    const unsigned char *ours = b && b->http2 ? h2 : h1;
    unsigned n = b && b->http2 ? sizeof(h2) - 1 : sizeof(h1) - 1;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, n, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_ALERT_FATAL;      /* the client offers nothing we speak */
}

int lg_tls_alpn_h2(SSL *ssl)
{
    const unsigned char *p = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

static int ocsp_cb(SSL *ssl, void *arg)
{
    const ocsp_blob_t *b = arg;
    if (b == NULL || b->der == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    unsigned char *copy = OPENSSL_malloc((size_t)b->len);
    if (copy == NULL)
        return SSL_TLSEXT_ERR_NOACK;
    memcpy(copy, b->der, (size_t)b->len);
    SSL_set_tlsext_status_ocsp_resp(ssl, copy, b->len);
    return SSL_TLSEXT_ERR_OK;
}

static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    (void)ssl;
    if (tickets == NULL)
        return 0;
    ticket_key_t k;
    int found = -1, cur;
    lg_shm_lock(&tickets->mx);      /* 1 (owner died) is fine: keys are complete */
    cur = tickets->current;
    if (enc) {
        if (cur >= 0)
            k = tickets->keys[cur];
        found = cur;
    } else {
        for (int i = 0; i < NKEYS; i++) {
            if (tickets->keys[i].created_ms && memcmp(tickets->keys[i].name, name, 16) == 0) {
                k = tickets->keys[i];
                found = i;
                break;
            }
        }
    }
    lg_shm_unlock(&tickets->mx);
    if (found < 0)
        return 0;                   /* unknown key: a full handshake */
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (ticket_cipher == NULL && (ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL)) == NULL)
        return -1;
    if (enc) {
        memcpy(name, k.name, 16);
        if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(ticket_cipher)) <= 0 ||
            EVP_EncryptInit_ex(ectx, ticket_cipher, NULL, k.aes, iv) != 1 ||
            EVP_MAC_init(hctx, k.hmac, sizeof(k.hmac), params) != 1)
            return -1;
        return 1;
    }
    if (EVP_MAC_init(hctx, k.hmac, sizeof(k.hmac), params) != 1 ||
        EVP_DecryptInit_ex(ectx, ticket_cipher, NULL, k.aes, iv) != 1)
        return -1;
    /*
     * 2: valid, and issue a fresh ticket.  TLS 1.3 always wants one: the
     * server sends no NewSessionTicket after a resumption unless asked, and
     * a client that keeps only its latest session (wrk, many HTTP
     * libraries) would make a full handshake every other connection.
     */
    return found == cur && SSL_version(ssl) != TLS1_3_VERSION ? 1 : 2;
}

/* ---- contexts ---- */

static int parse_protocols(const char *s, int *min, int *max)
{
    static const struct { const char *name; int v; } known[] = {
        { "TLSv1.2", TLS1_2_VERSION }, { "TLSv1.3", TLS1_3_VERSION },
        { "TLSv1.1", TLS1_1_VERSION }, { "TLSv1", TLS1_VERSION },
    };
    *min = 0;
    *max = 0;
    for (const char *p = s; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        size_t n = strcspn(p, " ,");
        if (n == 0)
            break;
        size_t i;
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
            if (strlen(known[i].name) == n && strncmp(known[i].name, p, n) == 0)
                break;
        if (i == sizeof(known) / sizeof(known[0]))
            return -1;
        if (*min == 0 || known[i].v < *min)
            *min = known[i].v;
        if (known[i].v > *max)
            *max = known[i].v;
        p += n;
    }
    return *min ? 0 : -1;
}

static void free_ctx(SSL_CTX *ctx)
{
    ocsp_blob_t *b = NULL;
    SSL_CTX_get_tlsext_status_arg(ctx, (void **)&b);
    if (b) {
        free(b->der);
        free(b);
    }
    SSL_CTX_free(ctx);
}

static void tls_on_free(lg_conf_t *conf)
{
    for (size_t i = 0; i < conf->nupstreams; i++) {
        if (conf->upstreams[i].ssl_ctx)
            SSL_CTX_free(conf->upstreams[i].ssl_ctx);
        conf->upstreams[i].ssl_ctx = NULL;
    }
    for (size_t i = 0; i < conf->nservers; i++) {
        if (conf->servers[i].ssl_ctx)
            free_ctx(conf->servers[i].ssl_ctx);
        conf->servers[i].ssl_ctx = NULL;
    }
    if (conf->cluster && conf->cluster->redis_ssl_ctx) {
        SSL_CTX_free(conf->cluster->redis_ssl_ctx);
        conf->cluster->redis_ssl_ctx = NULL;
    }
}

static SSL_CTX *server_ctx(lg_conf_t *conf, lg_server_t *srv, char *err, size_t errlen,
                           size_t *used)
{
    const lg_tls_conf_t *t = &srv->tls;
    const char *file = conf->file;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        add_err(err, errlen, used, file, srv->line, "SSL_CTX_new() failed");
        return NULL;
    }
    int ok = 1, min, max;
    if (parse_protocols(t->protocols, &min, &max) < 0) {
        add_err(err, errlen, used, file, srv->line,
                "'tls_protocols' must list TLSv1.2 and/or TLSv1.3 (got \"%s\")", t->protocols);
        ok = 0;
    } else {
        SSL_CTX_set_min_proto_version(ctx, min);
        SSL_CTX_set_max_proto_version(ctx, max);
    }
    if (SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        add_err(err, errlen, used, file, srv->line, "bad 'tls_ciphers' \"%s\"", t->ciphers);
        ok = 0;
    }
    if (SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        add_err(err, errlen, used, file, srv->line, "bad 'tls_ciphersuites' \"%s\"",
                t->ciphersuites);
        ok = 0;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    for (size_t i = 0; i < t->ncerts; i++) {
        const lg_cert_t *c = &t->certs[i];
        if (c->cert == NULL || c->key == NULL)
            continue;
        /* both pairs (RSA and ECDSA) sit in one context; OpenSSL chooses by
         * what the client can verify */
        if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
            add_err(err, errlen, used, file, c->line, "cannot load certificate \"%s\": %s",
                    c->cert, errno ? strerror(errno) : "bad PEM");
            ok = 0;
            continue;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
            add_err(err, errlen, used, file, c->line, "cannot load key \"%s\": %s", c->key,
                    errno ? strerror(errno) : "bad PEM");
            ok = 0;
            continue;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            add_err(err, errlen, used, file, c->line, "key \"%s\" does not match certificate \"%s\"",
                    c->key, c->cert);
            ok = 0;
        }
    }
    if (t->client_ca && strcmp(t->verify_client, "off") != 0) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca);
        if (names == NULL || SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
            add_err(err, errlen, used, file, srv->line, "cannot load 'tls_client_ca' \"%s\"",
                    t->client_ca);
            ok = 0;
        } else {
            SSL_CTX_set_client_CA_list(ctx, names);
            names = NULL;
        }
        if (names)
            sk_X509_NAME_pop_free(names, X509_NAME_free);
        int mode = SSL_VERIFY_PEER;
        if (strcmp(t->verify_client, "on") == 0)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_verify_depth(ctx, t->verify_depth);
    }
    if (t->ocsp_response) {
        FILE *f = fopen(t->ocsp_response, "rb");
        ocsp_blob_t *b = calloc(1, sizeof(*b));
        if (f == NULL || b == NULL) {
            add_err(err, errlen, used, file, srv->line, "cannot read 'tls_ocsp_response' \"%s\": %s",
                    t->ocsp_response, strerror(errno));
            ok = 0;
            free(b);
        } else {
            fseek(f, 0, SEEK_END);
            b->len = ftell(f);
            fseek(f, 0, SEEK_SET);
            b->der = b->len > 0 ? malloc((size_t)b->len) : NULL;
            if (b->der == NULL || fread(b->der, 1, (size_t)b->len, f) != (size_t)b->len) {
                add_err(err, errlen, used, file, srv->line, "cannot read 'tls_ocsp_response' \"%s\"",
                        t->ocsp_response);
                ok = 0;
                free(b->der);
                free(b);
            } else {
                SSL_CTX_set_tlsext_status_cb(ctx, ocsp_cb);
                SSL_CTX_set_tlsext_status_arg(ctx, b);
            }
        }
        if (f)
            fclose(f);
    }
    SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    SSL_CTX_set_tlsext_servername_callback(ctx, sni_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    if (t->session_tickets) {
        SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
        /* one TLS 1.3 ticket per handshake (OpenSSL sends two): a client
         * resumes with one, and each costs an encryption and a record */
        SSL_CTX_set_num_tickets(ctx, 1);
    } else {
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
    /* TLS 1.2 clients without tickets: the shared session cache */
    lg_tls_sess_setup(ctx, (long)(t->session_timeout / 1000), conf->tls_session_cache > 0);
    /*
     * Sessions (cached or in tickets, which all servers share the keys of)
     * resume only on the server that made them: a session authenticated
     * under one server's certificate or client CA must not skip the
     * checks of another.  OpenSSL compares this context on resumption.
     */
    unsigned char sid_ctx[32];
    server_identity(srv, sid_ctx);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx));
    SSL_CTX_set_ex_data(ctx, ex_server, srv);
    if (!ok) {
        free_ctx(ctx);
        return NULL;
    }
    return ctx;
}

/* ---- towards upstreams ---- */

static int ex_peer = -1;        /* SSL ex_data: the upstream session slot */

typedef struct up_session {
    const lg_upstream_t *up;
    size_t               si;
    SSL_SESSION         *sess;      /* owned: the last one the server gave */
    struct up_session   *next;
} up_session_t;

static up_session_t *up_sessions;  /* per process (worker) */

static up_session_t *session_slot(const lg_upstream_t *up, size_t si)
{
    for (up_session_t *p = up_sessions; p; p = p->next)
        if (p->up == up && p->si == si)
            return p;
    up_session_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->up = up;
    p->si = si;
    p->next = up_sessions;
    up_sessions = p;
    return p;
}

/* A new session from an upstream (TLS 1.3: a ticket after the handshake). */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    up_session_t *slot = SSL_get_ex_data(ssl, ex_peer);
    if (slot == NULL)
        return 0;
    if (slot->sess)
        SSL_SESSION_free(slot->sess);
    slot->sess = sess;
    return 1;                   /* we keep the reference */
}

/*
 * A client context (an upstream's, the fleet's Redis): TLS 1.2 or later,
 * the peer verified against ca (NULL: the system's store) when verify, and
 * a client certificate when cert.  `what` and the two names say in the
 * error which settings failed: "upstream \"app\": ", "tls_ca"...
 */
static SSL_CTX *client_ctx(const lg_conf_t *conf, int line, const char *what, int verify,
                           const char *ca, const char *ca_name, const char *cert, const char *key,
                           const char *cert_name, const char *key_name, char *err, size_t errlen,
                           size_t *used)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        add_err(err, errlen, used, conf->file, line, "SSL_CTX_new() failed");
        return NULL;
    }
    int ok = 1;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int r = ca ? SSL_CTX_load_verify_locations(ctx, ca, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (r != 1) {
            add_err(err, errlen, used, conf->file, line, "%scannot load '%s' \"%s\"", what, ca_name,
                    ca ? ca : "(system)");
            ok = 0;
        }
    }
    if (cert && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                 SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
                 SSL_CTX_check_private_key(ctx) != 1)) {
        add_err(err, errlen, used, conf->file, line, "%scannot use '%s' \"%s\" with '%s' \"%s\"",
                what, cert_name, cert, key_name, key);
        ok = 0;
    }
    if (!ok) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static SSL_CTX *upstream_ctx(const lg_conf_t *conf, lg_upstream_t *up, char *err, size_t errlen,
                             size_t *used)
{
    char what[300];
    snprintf(what, sizeof(what), "upstream \"%s\": ", up->name);
    SSL_CTX *ctx = client_ctx(conf, up->line, what, up->tls_verify, up->tls_ca, "tls_ca",
                              up->tls_certificate, up->tls_key, "tls_certificate", "tls_key",
                              err, errlen, used);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);    /* many pooled connections sit idle */
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    return ctx;
}

SSL *lg_tls_connect(lg_upstream_t *up, size_t si, int fd)
{
    SSL *ssl = up->ssl_ctx ? SSL_new(up->ssl_ctx) : NULL;
    if (ssl == NULL)
        return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    /* the name to ask for (SNI) and to verify: configured, else the host of
     * the server's address when it is a name */
    char host[256];
    const char *name = up->tls_server_name;
    const char *text = up->servers[si].addr.text;
    if (name == NULL && text[0] != '[' && strncmp(text, "unix:", 5) != 0) {
        size_t n = strcspn(text, ":");
        if (n < sizeof(host)) {
            memcpy(host, text, n);
            host[n] = '\0';
            struct in_addr a4;
            if (inet_pton(AF_INET, host, &a4) != 1)
                name = host;
        }
    }
    if (name) {
        SSL_set_tlsext_host_name(ssl, name);
        if (up->tls_verify)
            SSL_set1_host(ssl, name);
    } else if (up->tls_verify && text[0] != '[') {
        size_t n = strcspn(text, ":");
        if (n < sizeof(host)) {
            memcpy(host, text, n);
            host[n] = '\0';
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
        }
    }
    /* a forward proxy's destination (made at run time, TLS inspection)
     * keeps no session: its records come and go */
    up_session_t *slot = up->dyn ? NULL : session_slot(up, si);
    SSL_set_ex_data(ssl, ex_peer, slot);
    if (slot && slot->sess)
        SSL_set_session(ssl, slot->sess);
    return ssl;
}

/*
 * Towards the fleet's Redis (rediss://, src/cluster/redis.c): a client
 * context like an upstream's, without ALPN or session resumption (one
 * long-lived connection per worker, made again only after a failure).
 */
static SSL_CTX *redis_ctx(const lg_conf_t *conf, const lg_cluster_conf_t *cf, char *err, size_t errlen,
                          size_t *used)
{
    SSL_CTX *ctx = client_ctx(conf, cf->line, "cluster: ", cf->redis_tls_verify, cf->redis_tls_ca,
                              "redis_tls_ca", cf->redis_tls_cert, cf->redis_tls_key, "redis_tls_cert",
                              "redis_tls_key", err, errlen, used);
    if (ctx)
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

SSL *lg_tls_connect_redis(const lg_cluster_conf_t *cf, int fd)
{
    SSL *ssl = cf->redis_ssl_ctx ? SSL_new(cf->redis_ssl_ctx) : NULL;
    if (ssl == NULL)
        return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_connect_state(ssl);
    /* redis_tls_name: sent as SNI and verified; else Redis's IP is verified
     * (its certificate then needs an IP subjectAltName) and no SNI goes out,
     * as SNI never carries an address */
    int ok = 1;
    if (cf->redis_tls_name) {
        ok = SSL_set_tlsext_host_name(ssl, cf->redis_tls_name) == 1;
        if (ok && cf->redis_tls_verify)
            ok = SSL_set1_host(ssl, cf->redis_tls_name) == 1;
    } else if (cf->redis_tls_verify && cf->host[0]) {
        ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), cf->host) == 1;
    }
    if (!ok) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

const char *lg_tls_verify_error(SSL *ssl)
{
    long r = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    return r == X509_V_OK ? NULL : X509_verify_cert_error_string(r);
}

int lg_tls_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    if (ex_bind < 0) {
        ex_peer = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        ex_bind = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
        ex_server = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    }
    size_t used = 0;
    int rc = 0;
    err[0] = '\0';
    conf->on_free = tls_on_free;
    for (size_t i = 0; i < conf->nupstreams; i++) {
        lg_upstream_t *up = &conf->upstreams[i];
        if (up->tls && (up->ssl_ctx = upstream_ctx(conf, up, err, errlen, &used)) == NULL)
            rc = -1;
    }
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        if (srv->tls.ncerts == 0)
            continue;
        srv->ssl_ctx = server_ctx(conf, srv, err, errlen, &used);
        if (srv->ssl_ctx == NULL)
            rc = -1;
    }
    lg_cluster_conf_t *cf = conf->cluster;
    if (cf && cf->redis_tls && (cf->redis_ssl_ctx = redis_ctx(conf, cf, err, errlen, &used)) == NULL)
        rc = -1;
    return rc;
}

void lg_tls_set_sni(lg_tls_sni_fn fn)
{
    sni_fn = fn;
}

/* ---- ticket keys ---- */

static void new_key(void)
{
    int next = (tickets->current + 1) % NKEYS;
    ticket_key_t k;
    if (RAND_bytes(k.name, sizeof(k.name)) <= 0 || RAND_bytes(k.aes, sizeof(k.aes)) <= 0 ||
        RAND_bytes(k.hmac, sizeof(k.hmac)) <= 0) {
        lg_alert("RAND_bytes() failed: session ticket keys not rotated");
        return;
    }
    k.created_ms = lg_wall_ms();
    lg_shm_lock(&tickets->mx);
    tickets->keys[next] = k;
    tickets->current = next;
    lg_shm_unlock(&tickets->mx);
}

int lg_tls_attach_shm(lg_shm_t *shm, char *err, size_t errlen)
{
    int fresh = 0;
    ticket_zone_t *z = lg_shm_zone(shm, "tls-tickets", sizeof(*z), &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for TLS ticket keys");
        return -1;
    }
    tickets = z;
    if (fresh) {
        lg_shm_mutex_init(&z->mx);
        z->current = -1;
        new_key();
    }
    return 0;
}

int lg_tls_tickets_install(const unsigned char *keys, int n, int cur, int64_t created_ms)
{
    if (tickets == NULL || n < 1 || n > NKEYS || cur < 0 || cur >= n)
        return -1;
    ticket_key_t k[NKEYS];
    memset(k, 0, sizeof(k));
    for (int i = 0; i < n; i++) {
        memcpy(k[i].name, keys + 80 * i, 16);
        memcpy(k[i].aes, keys + 80 * i + 16, 32);
        memcpy(k[i].hmac, keys + 80 * i + 48, 32);
        k[i].created_ms = created_ms > 0 ? created_ms : 1;
    }
    int changed = 0;
    lg_shm_lock(&tickets->mx);
    for (int i = 0; i < NKEYS && !changed; i++)
        changed = memcmp(tickets->keys[i].name, k[i].name, 16) != 0 ||
                  memcmp(tickets->keys[i].aes, k[i].aes, 32) != 0 ||
                  (tickets->keys[i].created_ms != 0) != (k[i].created_ms != 0);
    changed |= tickets->current != cur;
    if (changed) {
        memcpy(tickets->keys, k, sizeof(k));
        tickets->current = cur;
    }
    tickets->external_ms = lg_wall_ms();
    lg_shm_unlock(&tickets->mx);
    OPENSSL_cleanse(k, sizeof(k));
    return changed;
}

void lg_tls_rotate(lg_msec_t every)
{
    if (tickets == NULL || tickets->current < 0)
        return;
    /* the fleet rotates; a node cut off from it keeps the fleet's keys for
     * as long as they live in the fleet (three rotations), then goes on alone */
    if (tickets->external_ms && lg_wall_ms() - tickets->external_ms < 3 * every)
        return;
    if (lg_wall_ms() - tickets->keys[tickets->current].created_ms >= every) {
        new_key();
        lg_info("TLS session ticket key rotated");
    }
}

/* ---- connections ---- */

SSL *lg_tls_accept(const lg_bind_t *b, int fd)
{
    const lg_server_t *srv = b->default_server;
    SSL_CTX *ctx = srv->ssl_ctx;
    for (size_t i = 0; ctx == NULL && i < b->nservers; i++)
        ctx = b->servers[i]->ssl_ctx;
    if (ctx == NULL)
        return NULL;
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL)
        return NULL;
    SSL_set_fd(ssl, fd);
    SSL_set_accept_state(ssl);
    SSL_set_ex_data(ssl, ex_bind, (void *)b);
    return ssl;
}

int lg_tls_handshake(SSL *ssl, int *want_r, int *want_w, char *why, size_t whylen)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl);
    if (rc == 1) {
        /*
         * From now on read whole records with one read(2) rather than a
         * header-then-body pair.  Not during the handshake: measured, it
         * halved the rate of new connections (wrk, TLS 1.3 resumption).
         */
        SSL_set_read_ahead(ssl, 1);
        return 1;
    }
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        *want_r = 1;
        errno = EAGAIN;
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        *want_w = 1;
        errno = EAGAIN;
        return 0;
    }
    unsigned long le = ERR_get_error();
    if (le)
        ERR_error_string_n(le, why, whylen);
    else
        snprintf(why, whylen, "%s", e == SSL_ERROR_SYSCALL ? "connection closed" : "handshake failed");
    ERR_clear_error();
    return -1;
}

void lg_tls_close(SSL *ssl)
{
    if (ssl == NULL)
        return;
    if (SSL_is_init_finished(ssl))
        SSL_shutdown(ssl);          /* close_notify, not waiting for the peer's */
    ERR_clear_error();
    SSL_free(ssl);
}

const char *lg_tls_protocol(SSL *ssl) { return ssl ? SSL_get_version(ssl) : ""; }
const char *lg_tls_cipher(SSL *ssl) { return ssl ? SSL_get_cipher_name(ssl) : ""; }
int lg_tls_session_reused(SSL *ssl) { return ssl ? SSL_session_reused(ssl) : 0; }

const char *lg_tls_server_name(SSL *ssl)
{
    const char *n = ssl ? SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) : NULL;
    return n ? n : "";
}

void lg_tls_client_subject(SSL *ssl, char *buf, size_t n)
{
    buf[0] = '\0';
    X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (x == NULL)
        return;
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL)
        return;
    X509_NAME_print_ex(b, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
    int len = BIO_read(b, buf, (int)n - 1);
    buf[len > 0 ? len : 0] = '\0';
    BIO_free(b);
}

void lg_tls_client_fingerprint(SSL *ssl, char *buf, size_t n)
{
    buf[0] = '\0';
    X509 *x = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (x == NULL || X509_digest(x, EVP_sha256(), md, &mdlen) != 1)
        return;
    for (unsigned int i = 0; i < mdlen && 2 * i + 2 < n; i++)
        snprintf(buf + 2 * i, 3, "%02x", md[i]);
}

void lg_tls_client_verify(SSL *ssl, char *buf, size_t n)
{
    if (ssl == NULL || SSL_get0_peer_certificate(ssl) == NULL) {
        snprintf(buf, n, "NONE");
        return;
    }
    long r = SSL_get_verify_result(ssl);
    if (r == X509_V_OK)
        snprintf(buf, n, "SUCCESS");
    else
        snprintf(buf, n, "FAILED:%s", X509_verify_cert_error_string(r));
}
