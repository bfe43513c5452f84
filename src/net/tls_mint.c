/*
 * TLS inspection's certificates (see tls_mint.h).
 *
 * A minted certificate: X.509 v3, a random 128-bit serial, valid from an
 * hour ago (clients' clocks drift) for 7 days, subject CN and
 * subjectAltName the server name, serverAuth only, not a CA, signed by
 * the operator's CA with SHA-256 (its own scheme for an Ed25519 CA).
 * Every certificate carries the same key, a P-256 key the master makes
 * once (lg_mint_attach_shm, before it forks) and every worker inherits:
 * one key generation, not one a name.  A certificate minted by one worker
 * goes, as DER, into a shared-memory zone ("tls-mint", LG_MINT_SHM_SLOTS
 * slots, probed by the name's hash) where the other workers find it; each
 * worker also keeps the last LG_MINT_CACHE it used as X509 objects.  One
 * older than a day is minted again, so none shown is near its end.  A
 * slot names the key (a random id) and the CA (a digest of its
 * certificate) it was made with: after a reload with another CA, or in a
 * new binary's segment with its own key, it is not used.
 *
 * The ClientHello the forward proxy read to learn the server name is no
 * longer in the socket: a small BIO gives those bytes to OpenSSL first,
 * then reads the descriptor, never more than OpenSSL asks for, so the
 * edge-triggered readiness of the end stays true.
 */
#include "net/tls_mint.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/hash.h"
#include "core/shm.h"

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct lg_mint_ca {
    X509     *cert;
    EVP_PKEY *key;
    uint64_t  id;               /* from the certificate's digest: which CA a shared slot is of */
};

#define MINT_VALID_S  (7 * 86400)
#define MINT_REFRESH_S 86400

typedef struct mint_entry {
    const lg_mint_ca_t *ca;     /* borrowed: whose it is */
    char                name[256];
    X509               *cert;   /* owned */
    time_t              made;
    unsigned long long  used;   /* LRU clock */
} mint_entry_t;

#define SHM_DER_MAX 2048
#define SHM_PROBE   8

typedef struct shm_slot {
    uint64_t hash;              /* 0: empty */
    uint64_t key_id, ca_id;
    int64_t  made;              /* time_t */
    uint32_t namelen, derlen;
    char     name[256];
    unsigned char der[SHM_DER_MAX];
} shm_slot_t;

typedef struct shm_zone {
    lg_shm_mutex_t mx;
    shm_slot_t     slots[LG_MINT_SHM_SLOTS];
} shm_zone_t;

/* the master's, inherited by its workers */
static EVP_PKEY         *leaf_key;
static uint64_t          leaf_key_id;
static shm_zone_t       *zone;
/* per worker (made after the fork, on first use) */
static mint_entry_t      cache[LG_MINT_CACHE];
static unsigned long long clock_lru;
static unsigned long      mints;           /* certificates this process signed */
static SSL_CTX          *srv_ctx;
static BIO_METHOD       *pre_method;

static void ssl_err(char *err, size_t errlen, const char *what)
{
    char e[256] = "";
    unsigned long le = ERR_get_error();
    if (le)
        ERR_error_string_n(le, e, sizeof(e));
    snprintf(err, errlen, "%s%s%s", what, e[0] ? ": " : "", e);
    ERR_clear_error();
}

lg_mint_ca_t *lg_mint_ca_load(const char *cert, const char *key, char *err, size_t errlen)
{
    lg_mint_ca_t *ca = calloc(1, sizeof(*ca));
    if (ca == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    FILE *f = fopen(cert, "r");
    if (f == NULL) {
        snprintf(err, errlen, "'tls_inspect_ca' \"%s\": cannot read: %s", cert, strerror(errno));
        goto fail;
    }
    ca->cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (ca->cert == NULL) {
        ssl_err(err, errlen, "'tls_inspect_ca': no PEM certificate in the file");
        goto fail;
    }
    if ((f = fopen(key, "r")) == NULL) {
        snprintf(err, errlen, "'tls_inspect_ca_key' \"%s\": cannot read: %s", key, strerror(errno));
        goto fail;
    }
    ca->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (ca->key == NULL) {
        ssl_err(err, errlen, "'tls_inspect_ca_key': no PEM private key in the file "
                "(a key with a passphrase cannot be used)");
        goto fail;
    }
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "'tls_inspect_ca_key' \"%s\" is not the key of 'tls_inspect_ca' \"%s\"",
                 key, cert);
        goto fail;
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(ca->cert, EVP_sha256(), md, &mdlen) == 1 && mdlen >= sizeof(ca->id))
        memcpy(&ca->id, md, sizeof(ca->id));
    if (X509_check_ca(ca->cert) != 1) {
        snprintf(err, errlen, "'tls_inspect_ca' \"%s\" is not a CA certificate "
                 "(basicConstraints CA:TRUE is missing)", cert);
        goto fail;
    }
    return ca;
fail:
    lg_mint_ca_free(ca);
    return NULL;
}

void lg_mint_ca_free(lg_mint_ca_t *ca)
{
    if (ca == NULL)
        return;
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    free(ca);
}

struct ssl_ctx_st *lg_mint_verify_ctx(const char *cafile, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        ssl_err(err, errlen, "SSL_CTX_new() failed");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int r = cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL)
                   : SSL_CTX_set_default_verify_paths(ctx);
    if (r != 1) {
        ssl_err(err, errlen, cafile ? "'tls_inspect_verify': cannot load the CA file"
                                    : "cannot load the system's CA store");
        SSL_CTX_free(ctx);
        return NULL;
    }
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    /* a destination's session is never offered again: records come and go,
     * and a resumed session would skip the name check */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    return ctx;
}

void lg_mint_ctx_free(struct ssl_ctx_st *ctx)
{
    SSL_CTX_free(ctx);
}

int lg_mint_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 253)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    unsigned char a[16];
    return inet_pton(AF_INET, name, a) != 1;     /* digits and dots: an address */
}

/* ---- the prefix BIO: pre[] first, then the descriptor ---- */

typedef struct pre_bio {
    int            fd;
    unsigned char *pre;         /* owned */
    size_t         n, off;
} pre_bio_t;

static int pre_read(BIO *b, char *out, int len)
{
    pre_bio_t *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    if (p->off < p->n) {
        size_t k = p->n - p->off < (size_t)len ? p->n - p->off : (size_t)len;
        memcpy(out, p->pre + p->off, k);
        p->off += k;
        return (int)k;
    }
    ssize_t r;
    do
        r = recv(p->fd, out, (size_t)len, 0);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_read(b);
    return (int)r;
}

static int pre_write(BIO *b, const char *in, int len)
{
    pre_bio_t *p = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t r;
    do
        r = send(p->fd, in, (size_t)len, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        BIO_set_retry_write(b);
    return (int)r;
}

static long pre_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    pre_bio_t *p = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_C_GET_FD:
        if (ptr)
            *(int *)ptr = p->fd;
        return p->fd;
    case BIO_CTRL_PENDING:
        return (long)(p->n - p->off);
    default:
        return 0;
    }
}

static int pre_destroy(BIO *b)
{
    pre_bio_t *p = BIO_get_data(b);
    if (p) {
        free(p->pre);
        free(p);
    }
    BIO_set_data(b, NULL);
    return 1;
}

static BIO *pre_bio(int fd, const void *pre, size_t n)
{
    if (pre_method == NULL) {
        pre_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "legate prefix");
        if (pre_method == NULL)
            return NULL;
        BIO_meth_set_read(pre_method, pre_read);
        BIO_meth_set_write(pre_method, pre_write);
        BIO_meth_set_ctrl(pre_method, pre_ctrl);
        BIO_meth_set_destroy(pre_method, pre_destroy);
    }
    pre_bio_t *p = calloc(1, sizeof(*p));
    if (p == NULL || (n && (p->pre = malloc(n)) == NULL)) {
        free(p);
        return NULL;
    }
    p->fd = fd;
    p->n = n;
    if (n)
        memcpy(p->pre, pre, n);
    BIO *b = BIO_new(pre_method);
    if (b == NULL) {
        free(p->pre);
        free(p);
        return NULL;
    }
    BIO_set_data(b, p);
    BIO_set_init(b, 1);
    return b;
}

/* ---- minting ---- */

static int alpn_h1(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h1[] = "\x08http/1.1";
    if (SSL_select_next_proto((unsigned char **)out, outlen, h1, sizeof(h1) - 1, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK;    /* no HTTP/1.1 offered: speak it without ALPN */
}

int lg_mint_attach_shm(lg_shm_t *shm, int want, char *err, size_t errlen)
{
    if (!want) {
        zone = NULL;            /* the new generation has none (an old zone may be swept) */
        return 0;
    }
    /* the key first: a worker that finds another's certificate must hold
     * its private key, so the master makes the one all of them use */
    if (leaf_key == NULL) {
        if ((leaf_key = EVP_EC_gen("P-256")) == NULL ||
            RAND_bytes((unsigned char *)&leaf_key_id, sizeof(leaf_key_id)) != 1) {
            ssl_err(err, errlen, "cannot make the key for minted certificates");
            return -1;
        }
    }
    int fresh = 0;
    shm_zone_t *z = lg_shm_zone(shm, "tls-mint", sizeof(*z), &fresh);
    if (z == NULL) {
        snprintf(err, errlen, "shared memory is too small for the minted certificates of tls_inspect");
        return -1;
    }
    if (fresh)
        lg_shm_mutex_init(&z->mx);
    zone = z;
    return 0;
}

size_t lg_mint_shm_size(int want)
{
    return want ? sizeof(shm_zone_t) + 4096 : 0;
}

static uint64_t name_hash(const char *name)
{
    char low[256];
    size_t n = 0;
    for (; name[n] && n < sizeof(low); n++)
        low[n] = (char)(name[n] >= 'A' && name[n] <= 'Z' ? name[n] + 32 : name[n]);
    uint64_t h = lg_hash64(low, n, 0x6d696e74u);
    return h ? h : 1;
}

/* Another worker's certificate for name, still fresh, of this CA and key. */
static X509 *shm_find(const lg_mint_ca_t *ca, const char *name, time_t now)
{
    if (zone == NULL)
        return NULL;
    uint64_t h = name_hash(name);
    unsigned char der[SHM_DER_MAX];
    size_t dl = 0;
    lg_shm_lock(&zone->mx);
    for (unsigned k = 0; k < SHM_PROBE; k++) {
        shm_slot_t *s = &zone->slots[(h + k) % LG_MINT_SHM_SLOTS];
        if (s->hash == h && s->key_id == leaf_key_id && s->ca_id == ca->id &&
            now - s->made < MINT_REFRESH_S && s->derlen <= sizeof(der) &&
            s->namelen < sizeof(s->name) && strncasecmp(s->name, name, sizeof(s->name)) == 0) {
            dl = s->derlen;
            memcpy(der, s->der, dl);
            break;
        }
    }
    lg_shm_unlock(&zone->mx);
    if (dl == 0)
        return NULL;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)dl);
    if (x == NULL)
        ERR_clear_error();      /* a damaged slot: mint anew */
    return x;
}

/* A certificate just minted, for the other workers: into an empty slot of
 * the name's probe run, the name's own, or the oldest. */
static void shm_store(const lg_mint_ca_t *ca, const char *name, X509 *x, time_t now)
{
    unsigned char der[SHM_DER_MAX], *p = der;
    int dl = i2d_X509(x, NULL);
    size_t nl = strlen(name);
    if (zone == NULL || dl <= 0 || (size_t)dl > sizeof(der) || nl >= sizeof(zone->slots[0].name) ||
        i2d_X509(x, &p) != dl)
        return;
    uint64_t h = name_hash(name);
    lg_shm_lock(&zone->mx);
    shm_slot_t *victim = NULL;
    for (unsigned k = 0; k < SHM_PROBE; k++) {
        shm_slot_t *s = &zone->slots[(h + k) % LG_MINT_SHM_SLOTS];
        if (s->hash == 0 || (s->hash == h && strncasecmp(s->name, name, sizeof(s->name)) == 0)) {
            victim = s;
            break;
        }
        if (victim == NULL || s->made < victim->made)
            victim = s;
    }
    victim->hash = h;
    victim->key_id = leaf_key_id;
    victim->ca_id = ca->id;
    victim->made = (int64_t)now;
    victim->namelen = (uint32_t)nl;
    memcpy(victim->name, name, nl + 1);
    victim->derlen = (uint32_t)dl;
    memcpy(victim->der, der, (size_t)dl);
    lg_shm_unlock(&zone->mx);
}

static int worker_setup(char *why, size_t wl)
{
    if (leaf_key == NULL && (leaf_key = EVP_EC_gen("P-256")) == NULL) {
        /* no master made one (legate -t, or a unit test): this process's own */
        ssl_err(why, wl, "cannot make the key for minted certificates");
        return -1;
    }
    if (srv_ctx == NULL) {
        srv_ctx = SSL_CTX_new(TLS_server_method());
        if (srv_ctx == NULL) {
            ssl_err(why, wl, "SSL_CTX_new() failed");
            return -1;
        }
        SSL_CTX_set_min_proto_version(srv_ctx, TLS1_2_VERSION);
        SSL_CTX_set_mode(srv_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                  SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
        /* every connection shows its own certificate: no session to resume
         * under another name's */
        SSL_CTX_set_session_cache_mode(srv_ctx, SSL_SESS_CACHE_OFF);
        SSL_CTX_set_options(srv_ctx, SSL_OP_NO_TICKET);
        SSL_CTX_set_alpn_select_cb(srv_ctx, alpn_h1, NULL);
    }
    return 0;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (e == NULL)
        return -1;
    int ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok == 1 ? 0 : -1;
}

/* name passed lg_mint_name_ok: nothing in it can break the SAN syntax */
static X509 *mint(const lg_mint_ca_t *ca, const char *name)
{
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    unsigned char serial[16];
    if (x == NULL || RAND_bytes(serial, sizeof(serial)) != 1)
        goto fail;
    serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x40);     /* positive, 16 bytes */
    if ((bn = BN_bin2bn(serial, sizeof(serial), NULL)) == NULL ||
        BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto fail;
    X509_set_version(x, 2);
    if (X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(x), MINT_VALID_S) == NULL ||
        X509_set_pubkey(x, leaf_key) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) != 1)
        goto fail;
    if (strlen(name) <= 64 &&       /* the CN's bound; the SAN is what clients check */
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                   (const unsigned char *)name, -1, -1, 0) != 1)
        goto fail;
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
    char san[300];
    snprintf(san, sizeof(san), "DNS:%s", name);
    if (add_ext(x, &v3, NID_subject_alt_name, san) < 0 ||
        add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") < 0)
        goto fail;
    int id = EVP_PKEY_get_base_id(ca->key);
    const EVP_MD *md = id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
    if (X509_sign(x, ca->key, md) <= 0)
        goto fail;
    BN_free(bn);
    return x;
fail:
    BN_free(bn);
    X509_free(x);
    return NULL;
}

/* The certificate for name: cached, or minted now into the oldest slot. */
static X509 *cert_for(const lg_mint_ca_t *ca, const char *name)
{
    time_t now = time(NULL);
    mint_entry_t *victim = &cache[0];
    for (size_t i = 0; i < LG_MINT_CACHE; i++) {
        mint_entry_t *e = &cache[i];
        if (e->cert && e->ca == ca && strcasecmp(e->name, name) == 0 &&
            now - e->made < MINT_REFRESH_S) {
            e->used = ++clock_lru;
            return e->cert;
        }
        if (e->used < victim->used)
            victim = e;
    }
    X509 *x = shm_find(ca, name, now);
    if (x == NULL) {
        if ((x = mint(ca, name)) == NULL)
            return NULL;
        shm_store(ca, name, x, now);
        mints++;
    }
    X509_free(victim->cert);
    victim->cert = x;
    victim->ca = ca;
    snprintf(victim->name, sizeof(victim->name), "%s", name);
    victim->made = now;
    victim->used = ++clock_lru;
    return x;
}

unsigned long lg_mint_count(void) { return mints; }

SSL *lg_mint_accept(const lg_mint_ca_t *ca, const char *name, int fd, const void *pre, size_t n,
                    char *why, size_t wl)
{
    if (worker_setup(why, wl) < 0)
        return NULL;
    X509 *cert = cert_for(ca, name);
    if (cert == NULL) {
        ssl_err(why, wl, "cannot mint a certificate");
        return NULL;
    }
    SSL *ssl = SSL_new(srv_ctx);
    if (ssl == NULL ||
        SSL_use_certificate(ssl, cert) != 1 || SSL_use_PrivateKey(ssl, leaf_key) != 1 ||
        SSL_add1_chain_cert(ssl, ca->cert) != 1) {
        ssl_err(why, wl, "cannot set up TLS for the client");
        SSL_free(ssl);
        return NULL;
    }
    BIO *b = pre_bio(fd, pre, n);
    if (b == NULL) {
        snprintf(why, wl, "out of memory");
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_bio(ssl, b, b);
    SSL_set_accept_state(ssl);
    return ssl;
}
