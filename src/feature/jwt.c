/*
 * JSON Web Token validation for the reverse proxy, in the ACCESS phase,
 * without an external service: nginx Plus's auth_jwt, as settings inherited
 * http -> server -> route.
 *
 *   auth_jwt = "api";                      # the realm, or "off"
 *   auth_jwt_key_file = "keys.jwks";       # PEM public key or JWKS
 *   auth_jwt_secret_file = "hs.secret";    # or: an HS256 shared secret
 *   auth_jwt_cookie = "token";             # instead of Authorization: Bearer
 *   auth_jwt_leeway = "60s";  auth_jwt_issuer = "...";  auth_jwt_audience = "...";
 *
 * Keys are read once per configuration generation in the master
 * (lg_jwt_prepare, which legate -t runs too), so a bad file is a FILE:LINE
 * error and a reload with one keeps the old configuration.  Each key has
 * exactly one algorithm, fixed by its type (RSA: RS256, EC P-256: ES256,
 * Ed25519: EdDSA, a secret: HS256); a token is checked only with a key of
 * the algorithm its header names, so "none" and algorithm confusion (an
 * RSA public key used as an HMAC secret) cannot happen.  With a "kid" in
 * the token only the key with that kid is tried.
 *
 * A missing or invalid token is a 401 with an RFC 6750 challenge; the
 * reason is in $blocked.  A valid token's string, number and boolean
 * claims become $jwt_claim_NAME (r->claim_names / claim_values).
 */
#include "feature/jwt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>

#include "feature/metrics.h"
#include "net/json.h"
#include "pipeline/headers.h"

typedef enum jwt_alg { ALG_HS256 = 1, ALG_RS256, ALG_ES256, ALG_EDDSA } jwt_alg_t;

static const char *const alg_names[] = { "", "HS256", "RS256", "ES256", "EdDSA" };

typedef struct jwt_key {
    jwt_alg_t      alg;
    char          *kid;         /* or NULL */
    EVP_PKEY      *pkey;        /* public-key algorithms */
    unsigned char *secret;      /* HS256 */
    size_t         secretlen;
} jwt_key_t;

typedef struct jwt_keys {
    jwt_key_t *k;
    size_t     n;
} jwt_keys_t;

#define ERR(...) do { size_t u_ = strlen(err); \
        if (u_ < errlen) snprintf(err + u_, errlen - u_, __VA_ARGS__); } while (0)

#define MAX_KEY_FILE (1 << 20)  /* a JWKS of a few hundred keys fits */
#define MAX_KEYS     256
#define JWKS_NODES   8192
#define JWKS_DEPTH   6
#define MAX_CLAIMS   64

static void keys_free(jwt_keys_t *ks)
{
    if (ks == NULL)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        EVP_PKEY_free(ks->k[i].pkey);
        if (ks->k[i].secret)
            OPENSSL_clear_free(ks->k[i].secret, ks->k[i].secretlen);
        free(ks->k[i].kid);
    }
    free(ks->k);
    free(ks);
}

/* The whole file, NUL-terminated; NULL with errno. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    char *b = malloc(MAX_KEY_FILE + 1);
    size_t n = b ? fread(b, 1, MAX_KEY_FILE + 1, f) : 0;
    int bad = b == NULL || ferror(f) || n > MAX_KEY_FILE;
    fclose(f);
    if (bad) {
        free(b);
        errno = b == NULL ? ENOMEM : EFBIG;
        return NULL;
    }
    b[n] = '\0';
    *len = n;
    return b;
}

/* The algorithm a public key is used with, or 0 for a kind legate refuses. */
static jwt_alg_t pkey_alg(EVP_PKEY *pk)
{
    if (EVP_PKEY_is_a(pk, "RSA"))
        return EVP_PKEY_get_bits(pk) >= 2048 ? ALG_RS256 : 0;
    if (EVP_PKEY_is_a(pk, "ED25519"))
        return ALG_EDDSA;
    if (EVP_PKEY_is_a(pk, "EC")) {
        char g[64];
        size_t gl = 0;
        if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, g, sizeof(g), &gl) == 1 &&
            (strcmp(g, "prime256v1") == 0 || strcmp(g, "P-256") == 0))
            return ALG_ES256;
    }
    return 0;
}

static int add_key(jwt_keys_t *ks, jwt_key_t *k)
{
    if (ks->n >= MAX_KEYS)
        return -1;
    jwt_key_t *nk = realloc(ks->k, (ks->n + 1) * sizeof(*nk));
    if (nk == NULL)
        return -1;
    ks->k = nk;
    ks->k[ks->n++] = *k;
    return 0;
}

/* A base64url member of a JWK, decoded into a malloc'd buffer. */
static unsigned char *jwk_bytes(const lg_json_t *j, size_t at, const char *name, size_t *len)
{
    const lg_json_node_t *v = lg_json_get(j, at, name);
    if (v == NULL || v->type != LG_JSON_STRING || v->n == 0)
        return NULL;
    unsigned char *b = malloc(v->n / 4 * 3 + 3);
    long k = b ? lg_b64url_decode(v->s, v->n, b, v->n / 4 * 3 + 3) : -1;
    if (k <= 0) {
        free(b);
        return NULL;
    }
    *len = (size_t)k;
    return b;
}

static EVP_PKEY *from_data(const char *type, OSSL_PARAM *params)
{
    EVP_PKEY *pk = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pk = NULL;
    EVP_PKEY_CTX_free(ctx);
    return pk;
}

/* One JWK (RFC 7517/7518/8037) at node at: 0, or -1 with *why. */
static int jwk_one(const lg_json_t *j, size_t at, jwt_key_t *k, const char **why)
{
    memset(k, 0, sizeof(*k));
    const lg_json_node_t *kty = lg_json_get(j, at, "kty"), *kid = lg_json_get(j, at, "kid"),
                         *use = lg_json_get(j, at, "use"), *alg = lg_json_get(j, at, "alg");
    if (j->nodes[at].type != LG_JSON_OBJECT || kty == NULL || kty->type != LG_JSON_STRING) {
        *why = "a key without a \"kty\"";
        return -1;
    }
    if (use && (use->type != LG_JSON_STRING || strcmp(use->s, "sig") != 0)) {
        *why = "a key whose \"use\" is not \"sig\"";
        return -1;
    }
    if (kid && kid->type != LG_JSON_STRING) {
        *why = "a \"kid\" that is not a string";
        return -1;
    }
    unsigned char *a = NULL, *b = NULL;
    size_t an = 0, bn = 0;
    *why = NULL;
    if (strcmp(kty->s, "oct") == 0) {
        if ((a = jwk_bytes(j, at, "k", &an)) == NULL || an < 16)
            *why = "an \"oct\" key needs \"k\", at least 16 bytes";
        else {
            k->alg = ALG_HS256;
            k->secret = a;
            k->secretlen = an;
            a = NULL;
        }
    } else if (strcmp(kty->s, "RSA") == 0) {
        if ((a = jwk_bytes(j, at, "n", &an)) == NULL || (b = jwk_bytes(j, at, "e", &bn)) == NULL)
            *why = "an RSA key needs \"n\" and \"e\"";
        else {
            BIGNUM *n = BN_bin2bn(a, (int)an, NULL), *e = BN_bin2bn(b, (int)bn, NULL);
            OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
            OSSL_PARAM *p = NULL;
            if (n && e && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) &&
                OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
                p = OSSL_PARAM_BLD_to_param(bld);
            k->pkey = p ? from_data("RSA", p) : NULL;
            OSSL_PARAM_free(p);
            OSSL_PARAM_BLD_free(bld);
            BN_free(n);
            BN_free(e);
            if (k->pkey == NULL)
                *why = "an RSA key OpenSSL does not accept";
        }
    } else if (strcmp(kty->s, "EC") == 0) {
        const lg_json_node_t *crv = lg_json_get(j, at, "crv");
        if (crv == NULL || crv->type != LG_JSON_STRING || strcmp(crv->s, "P-256") != 0)
            *why = "an EC key must be on \"crv\": \"P-256\"";
        else if ((a = jwk_bytes(j, at, "x", &an)) == NULL || an != 32 ||
                 (b = jwk_bytes(j, at, "y", &bn)) == NULL || bn != 32)
            *why = "an EC key needs 32-byte \"x\" and \"y\"";
        else {
            unsigned char pt[65];
            pt[0] = 0x04;           /* uncompressed point */
            memcpy(pt + 1, a, 32);
            memcpy(pt + 33, b, 32);
            OSSL_PARAM p[] = {
                OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
                OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt)),
                OSSL_PARAM_construct_end(),
            };
            if ((k->pkey = from_data("EC", p)) == NULL)
                *why = "an EC key whose point is not on P-256";
        }
    } else if (strcmp(kty->s, "OKP") == 0) {
        const lg_json_node_t *crv = lg_json_get(j, at, "crv");
        if (crv == NULL || crv->type != LG_JSON_STRING || strcmp(crv->s, "Ed25519") != 0)
            *why = "an OKP key must be on \"crv\": \"Ed25519\"";
        else if ((a = jwk_bytes(j, at, "x", &an)) == NULL || an != 32)
            *why = "an Ed25519 key needs a 32-byte \"x\"";
        else if ((k->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a, an)) == NULL)
            *why = "an Ed25519 key OpenSSL does not accept";
    } else
        *why = "a \"kty\" other than RSA, EC, OKP or oct";
    free(a);
    free(b);
    if (*why == NULL && k->pkey && (k->alg = pkey_alg(k->pkey)) == 0)
        *why = "an RSA key shorter than 2048 bits";
    if (*why == NULL && alg && (alg->type != LG_JSON_STRING || strcmp(alg->s, alg_names[k->alg]) != 0))
        *why = "an \"alg\" that does not go with the key's type";
    if (*why == NULL && kid && (k->kid = strdup(kid->s)) == NULL)
        *why = "out of memory";
    if (*why) {
        EVP_PKEY_free(k->pkey);
        if (k->secret)
            OPENSSL_clear_free(k->secret, k->secretlen);
        memset(k, 0, sizeof(*k));
        return -1;
    }
    return 0;
}

static int load_jwks(jwt_keys_t *ks, const char *path, const char *text, size_t len,
                     const char *file, int line, char *err, size_t errlen)
{
    lg_json_t j;
    char msg[128];
    int rc = -1;
    if (lg_json_parse(&j, text, len, JWKS_NODES, JWKS_DEPTH, msg, sizeof(msg)) < 0) {
        ERR("%s:%d: 'auth_jwt_key_file' \"%s\": not valid JSON: %s\n", file, line, path, msg);
        goto out;
    }
    const lg_json_node_t *keys = lg_json_get(&j, 0, "keys");
    if (keys == NULL || keys->type != LG_JSON_ARRAY || keys->nkids == 0) {
        ERR("%s:%d: 'auth_jwt_key_file' \"%s\": a JWKS needs a non-empty \"keys\" array\n", file,
            line, path);
        goto out;
    }
    size_t ai = (size_t)(keys - j.nodes), nth = 0;
    rc = 0;
    for (size_t i = ai + 1; i < keys->next; i = j.nodes[i].next, nth++) {
        jwt_key_t k;
        const char *why;
        if (jwk_one(&j, i, &k, &why) < 0 || (add_key(ks, &k) < 0 && (why = "too many keys"))) {
            ERR("%s:%d: 'auth_jwt_key_file' \"%s\": key %zu: %s\n", file, line, path, nth, why);
            rc = -1;
        }
    }
out:
    lg_json_free(&j);
    return rc;
}

/* The keys of one level: its key file and/or its secret file. */
static jwt_keys_t *keys_load(const lg_common_t *c, const char *file, int line, char *err,
                             size_t errlen)
{
    jwt_keys_t *ks = calloc(1, sizeof(*ks));
    if (ks == NULL) {
        ERR("%s:%d: out of memory\n", file, line);
        return NULL;
    }
    int bad = 0;
    size_t len = 0;
    char *t;
    if (c->auth_jwt_key_file) {
        const char *path = c->auth_jwt_key_file;
        if ((t = slurp(path, &len)) == NULL) {
            ERR("%s:%d: 'auth_jwt_key_file' \"%s\": %s\n", file, line, path, strerror(errno));
            bad = 1;
        } else {
            size_t sk = strspn(t, " \t\r\n");
            if (t[sk] == '{')
                bad |= load_jwks(ks, path, t, len, file, line, err, errlen) < 0;
            else {
                BIO *bio = BIO_new_mem_buf(t, (int)len);
                EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
                BIO_free(bio);
                jwt_key_t k = { .pkey = pk };
                if (pk == NULL) {
                    ERR("%s:%d: 'auth_jwt_key_file' \"%s\": neither a JWKS nor a PEM public key\n",
                        file, line, path);
                    bad = 1;
                } else if ((k.alg = pkey_alg(pk)) == 0 || add_key(ks, &k) < 0) {
                    ERR("%s:%d: 'auth_jwt_key_file' \"%s\": the key must be RSA of 2048 bits or "
                        "more, EC P-256 or Ed25519\n", file, line, path);
                    EVP_PKEY_free(pk);
                    bad = 1;
                }
            }
            OPENSSL_clear_free(t, MAX_KEY_FILE + 1);
        }
    }
    if (c->auth_jwt_secret_file) {
        const char *path = c->auth_jwt_secret_file;
        if ((t = slurp(path, &len)) == NULL) {
            ERR("%s:%d: 'auth_jwt_secret_file' \"%s\": %s\n", file, line, path, strerror(errno));
            bad = 1;
        } else {
            while (len && (t[len - 1] == '\n' || t[len - 1] == '\r'))
                len--;          /* an editor's final newline is not part of the secret */
            jwt_key_t k = { .alg = ALG_HS256, .secret = malloc(len ? len : 1), .secretlen = len };
            if (len < 16) {
                ERR("%s:%d: 'auth_jwt_secret_file' \"%s\": a secret of at least 16 bytes is "
                    "needed\n", file, line, path);
                free(k.secret);
                bad = 1;
            } else if (k.secret == NULL || (memcpy(k.secret, t, len), add_key(ks, &k) < 0)) {
                ERR("%s:%d: out of memory\n", file, line);
                free(k.secret);
                bad = 1;
            }
            OPENSSL_clear_free(t, MAX_KEY_FILE + 1);
        }
    }
    if (bad) {
        keys_free(ks);
        return NULL;
    }
    return ks;
}


static int prepare_level(lg_common_t *c, const lg_common_t *parent, const lg_conf_t *conf,
                         int line, int serves, char *err, size_t errlen)
{
    const char *file = conf->file;
    int rc = 0;
    c->jwt_rt = NULL;
    if (parent && c->auth_jwt_key_file == parent->auth_jwt_key_file &&
        c->auth_jwt_secret_file == parent->auth_jwt_secret_file)
        c->jwt_rt = parent->jwt_rt;
    else if ((c->auth_jwt_key_file || c->auth_jwt_secret_file) &&
             (c->jwt_rt = keys_load(c, file, line, err, errlen)) == NULL)
        rc = -1;
    if (!lg_parse_quotable(c->auth_jwt) && (parent == NULL || c->auth_jwt != parent->auth_jwt)) {
        ERR("%s:%d: 'auth_jwt' (the realm) must not hold quotes, backslashes or control "
            "characters\n", file, line);
        rc = -1;
    }
    if (serves && strcmp(c->auth_jwt, "off") != 0 && c->auth_jwt_key_file == NULL &&
        c->auth_jwt_secret_file == NULL) {
        ERR("%s:%d: 'auth_jwt' needs 'auth_jwt_key_file' or 'auth_jwt_secret_file'\n", file, line);
        rc = -1;
    }
    return rc;
}

static void jwt_free(lg_conf_t *conf)
{
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        for (size_t j = 0; j < srv->nroutes; j++) {
            lg_common_t *c = &srv->routes[j].common;
            if (c->jwt_rt != srv->common.jwt_rt)
                keys_free(c->jwt_rt);
            c->jwt_rt = NULL;
        }
        if (srv->common.jwt_rt != conf->http.jwt_rt)
            keys_free(srv->common.jwt_rt);
        srv->common.jwt_rt = NULL;
    }
    keys_free(conf->http.jwt_rt);
    conf->http.jwt_rt = NULL;
}

int lg_jwt_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    conf->jwt_free = jwt_free;
    return lg_conf_each_level(conf, prepare_level, err, errlen);
}

/* ---- the worker side ---- */

static const lg_common_t *settings(lg_req_t *r)
{
    int status;
    const lg_route_t *rt = lg_route_request(r, &status);
    return rt ? &rt->common : lg_req_common(r);
}

/* Does key k's signature sig check over data?  1 yes, 0 no. */
static int verify(const jwt_key_t *k, const unsigned char *data, size_t n,
                  const unsigned char *sig, size_t siglen)
{
    if (k->alg == ALG_HS256) {
        unsigned char mac[32];
        size_t ml = 0;
        if (siglen != 32 || EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k->secret, k->secretlen,
                                      data, n, mac, sizeof(mac), &ml) == NULL || ml != 32)
            return 0;
        return CRYPTO_memcmp(mac, sig, 32) == 0;
    }
    unsigned char *der = NULL;
    int ok = 0;
    if (k->alg == ALG_ES256) {
        /* JWS carries r||s (RFC 7518 3.4); OpenSSL verifies DER */
        if (siglen != 64)
            return 0;
        ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *br = BN_bin2bn(sig, 32, NULL), *bs = BN_bin2bn(sig + 32, 32, NULL);
        int dl = -1;
        if (es && br && bs && ECDSA_SIG_set0(es, br, bs) == 1) {
            br = bs = NULL;
            dl = i2d_ECDSA_SIG(es, &der);
        }
        BN_free(br);
        BN_free(bs);
        ECDSA_SIG_free(es);
        if (dl <= 0)
            return 0;
        sig = der;
        siglen = (size_t)dl;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md && EVP_DigestVerifyInit(md, NULL, k->alg == ALG_EDDSA ? NULL : EVP_sha256(), NULL,
                                   k->pkey) == 1)
        ok = EVP_DigestVerify(md, sig, siglen, data, n) == 1;
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    return ok;
}

/* A NumericDate claim: 1 absent, 0 present (*v), -1 not a number. */
static int num_claim(const lg_json_t *p, const char *name, double *v)
{
    const lg_json_node_t *x = lg_json_get(p, 0, name);
    if (x == NULL)
        return 1;
    if (x->type != LG_JSON_NUMBER)
        return -1;
    *v = x->num;
    return 0;
}

/* NULL: the token holds; else why not. */
static const char *check(lg_req_t *r, const lg_common_t *c, const char *tok, size_t len)
{
    const jwt_keys_t *ks = c->jwt_rt;
    lg_jws_t t;
    const char *why;
    if (lg_jws_decode(&t, tok, len, &why) < 0)
        return why;
    const lg_json_node_t *alg = lg_json_get(&t.header, 0, "alg"),
                         *kid = lg_json_get(&t.header, 0, "kid"),
                         *crit = lg_json_get(&t.header, 0, "crit");
    jwt_alg_t a = 0;
    for (int i = ALG_HS256; alg && alg->type == LG_JSON_STRING && i <= ALG_EDDSA; i++)
        if (strcmp(alg->s, alg_names[i]) == 0)
            a = (jwt_alg_t)i;
    why = NULL;
    if (alg == NULL || alg->type != LG_JSON_STRING)
        why = "no alg in the header";
    else if (a == 0)
        why = lg_arena_printf(&r->arena, "algorithm %.32s not accepted", alg->s);
    else if (kid && kid->type != LG_JSON_STRING)
        why = "kid is not a string";
    else if (crit)
        why = "crit header parameters are not understood";     /* RFC 7515 4.1.11 */
    if (why)
        goto out;
    int tried = 0, good = 0;
    for (size_t i = 0; ks && i < ks->n && !good; i++) {
        const jwt_key_t *k = &ks->k[i];
        if (k->alg != a || (kid && (k->kid == NULL || strcmp(k->kid, kid->s) != 0)))
            continue;
        tried++;
        good = verify(k, (const unsigned char *)tok, t.signed_len, t.sig, t.siglen);
    }
    if (!good) {
        why = tried ? "bad signature" : kid ? "no key with the token's kid and alg"
                                            : "no key for the token's alg";
        goto out;
    }
    /* the claims: only a token whose signature checked gets this far */
    double now = (double)time(NULL), skew = (double)c->auth_jwt_leeway / 1000.0, v = 0;
    int k;
    if ((k = num_claim(&t.payload, "exp", &v)) < 0 || (k == 0 && now - skew >= v)) {
        why = k < 0 ? "exp is not a number" : "token expired";
        goto out;
    }
    if ((k = num_claim(&t.payload, "nbf", &v)) < 0 || (k == 0 && now + skew < v)) {
        why = k < 0 ? "nbf is not a number" : "token not yet valid";
        goto out;
    }
    if (c->auth_jwt_issuer) {
        const lg_json_node_t *iss = lg_json_get(&t.payload, 0, "iss");
        if (iss == NULL || iss->type != LG_JSON_STRING || strcmp(iss->s, c->auth_jwt_issuer) != 0) {
            why = "wrong issuer";
            goto out;
        }
    }
    if (c->auth_jwt_audience) {
        const lg_json_node_t *aud = lg_json_get(&t.payload, 0, "aud");
        int found = 0;
        if (aud && aud->type == LG_JSON_STRING)
            found = strcmp(aud->s, c->auth_jwt_audience) == 0;
        else if (aud && aud->type == LG_JSON_ARRAY) {
            size_t ai = (size_t)(aud - t.payload.nodes);
            for (size_t i = ai + 1; i < aud->next && !found; i = t.payload.nodes[i].next)
                found = t.payload.nodes[i].type == LG_JSON_STRING &&
                        strcmp(t.payload.nodes[i].s, c->auth_jwt_audience) == 0;
        }
        if (!found) {
            why = "wrong audience";
            goto out;
        }
    }
    /* the top-level scalars, for $jwt_claim_NAME */
    const lg_json_t *p = &t.payload;
    size_t cap = p->nodes[0].nkids < MAX_CLAIMS ? p->nodes[0].nkids : MAX_CLAIMS;
    r->claim_names = lg_arena_alloc(&r->arena, (cap ? cap : 1) * sizeof(char *));
    r->claim_values = lg_arena_alloc(&r->arena, (cap ? cap : 1) * sizeof(char *));
    r->nclaims = 0;
    for (size_t i = 1; r->claim_names && r->claim_values && i < p->n && r->nclaims < cap;
         i = p->nodes[i].next) {
        const lg_json_node_t *x = &p->nodes[i];
        const char *val = x->type == LG_JSON_STRING || x->type == LG_JSON_NUMBER ? x->s
                          : x->type == LG_JSON_TRUE ? "true" : x->type == LG_JSON_FALSE ? "false"
                          : NULL;
        /* a claim may hold any character JSON can escape; one with a control
         * character (CR, LF...) would split a header it is put into, so it
         * is left out of the variables */
        for (const char *q = val; val && *q; q++)
            if ((unsigned char)*q < 0x20 || *q == 0x7f)
                val = NULL;
        if (val == NULL)
            continue;
        const char *nm = lg_arena_strndup(&r->arena, x->key, x->keylen);
        const char *vv = lg_arena_strdup(&r->arena, val);
        if (nm == NULL || vv == NULL)
            break;
        r->claim_names[r->nclaims] = nm;
        r->claim_values[r->nclaims++] = vv;
    }
out:
    lg_jws_free(&t);
    return why;
}

static int jwt_phase(lg_req_t *r)
{
    if (lg_req_is_forward(r))
        return LG_DECLINED;
    const lg_common_t *c = settings(r);
    if (strcmp(c->auth_jwt, "off") == 0 || c->jwt_rt == NULL || r->satisfied)
        return LG_DECLINED;     /* satisfy = "any" and another check let it in */
    const char *tok = NULL;
    size_t len = 0;
    if (c->auth_jwt_cookie) {
        lg_str_t v = lg_headers_cookie(r, c->auth_jwt_cookie);
        tok = v.p;
        len = v.n;
    } else {
        const http_header_t *a = lg_headers_get(r, "authorization");
        if (a && a->value_len > 7 && strncasecmp(a->value, "Bearer ", 7) == 0) {
            tok = a->value + 7;
            len = a->value_len - 7;
            while (len && *tok == ' ') {
                tok++;
                len--;
            }
        }
    }
    const char *why = tok && len ? check(r, c, tok, len) : "no token";
    lg_mx_count(LG_MX_AUTH, "jwt", NULL, why ? "rejected" : "passed", 1);
    if (why == NULL)
        return LG_OK;
    r->nclaims = 0;
    r->blocked = lg_arena_printf(&r->arena, "auth_jwt: %s", why);
    lg_info("auth_jwt: %s, client: %s, request: \"%.*s %.*s\"", why, r->peer_text,
            (int)r->req.method_len, r->req.method, (int)r->req.target_len, r->req.target);
    /* RFC 6750 3: no error code when the request carried no token */
    r->local_extra = lg_arena_printf(&r->arena, "WWW-Authenticate: Bearer realm=\"%s\"%s\r\n",
                                     c->auth_jwt, tok && len ? ", error=\"invalid_token\"" : "");
    /* satisfy = "any" with auth_basic too: the 401 offers both (r->auth_realm
     * adds the Basic challenge); under "all" the password was checked first */
    if (!(c->satisfy[1] == 'n' && strcmp(c->auth_basic, "off") != 0))
        r->auth_realm = NULL;
    lg_respond_error(r, 401);
    return LG_DONE;
}

const lg_feature_t lg_feature_jwt = {
    .name = "jwt",
    .handlers = { { LG_PH_ACCESS, jwt_phase } },
};
