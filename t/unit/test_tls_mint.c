/*
 * Unit tests of net/tls_mint.c: which names may be minted for, the CA's
 * checks (unreadable, not a CA, a key that is not its key), and a minted
 * certificate as a client sees it over a real handshake through a socket
 * pair: it verifies against the CA for the name (and not for another),
 * carries the name in its SAN, and a second handshake gets the cached one.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "net/tls_mint.h"

static const char *src(const char *rel)
{
    static char path[2][1024];
    static int k;
    const char *srcdir = getenv("srcdir");
    k ^= 1;
    snprintf(path[k], sizeof(path[k]), "%s/%s", srcdir ? srcdir : ".", rel);
    return path[k];
}

Test(tls_mint, names)
{
    static const struct { const char *name; int ok; } cases[] = {
        { "example.com", 1 }, { "a-b_c.example.com", 1 }, { "localhost", 1 },
        { "EXAMPLE.com", 1 }, { "", 0 }, { "127.0.0.1", 0 }, { "::1", 0 },
        { "a,DNS:b.com", 0 }, { "a b", 0 }, { "x\n", 0 }, { "*.example.com", 0 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_expect_eq(lg_mint_name_ok(cases[i].name), cases[i].ok, "%s", cases[i].name);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    cr_expect_eq(lg_mint_name_ok(longname), 0, "longer than 253");
}

Test(tls_mint, ca_checks)
{
    char err[512];
    lg_mint_ca_t *ca = lg_mint_ca_load(src("conf/examples/inspect-ca/ca.pem"),
                                       src("conf/examples/inspect-ca/ca.key"), err, sizeof(err));
    cr_assert_not_null(ca, "%s", err);
    lg_mint_ca_free(ca);
    cr_expect_null(lg_mint_ca_load("/nonexistent/ca.pem", src("conf/examples/inspect-ca/ca.key"),
                                   err, sizeof(err)));
    cr_expect(strstr(err, "cannot read") != NULL, "%s", err);
    cr_expect_null(lg_mint_ca_load(src("conf/examples/inspect-ca/ca.pem"),
                                   src("conf/examples/certs/server-rsa.key"), err, sizeof(err)));
    cr_expect(strstr(err, "is not the key of") != NULL, "%s", err);
    cr_expect_null(lg_mint_ca_load(src("conf/examples/certs/server-rsa.pem"),
                                   src("conf/examples/certs/server-rsa.key"), err, sizeof(err)));
    cr_expect(strstr(err, "is not a CA") != NULL, "%s", err);
    cr_expect_null(lg_mint_verify_ctx("/nonexistent/ca.pem", err, sizeof(err)));
}

/* Both sides of a handshake on a socket pair, stepped in turn (each is
 * non-blocking): the leaf the client got, or NULL. */
static X509 *handshake(const lg_mint_ca_t *ca, const char *name, const char *cafile, long *verify)
{
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    char why[256];
    SSL *srv = lg_mint_accept(ca, name, sv[0], NULL, 0, why, sizeof(why));
    cr_assert_not_null(srv, "%s", why);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(cctx, cafile, NULL);
    SSL *cli = SSL_new(cctx);
    SSL_set_fd(cli, sv[1]);
    SSL_set_connect_state(cli);
    SSL_set_tlsext_host_name(cli, name);
    SSL_set1_host(cli, name);
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone && SSL_do_handshake(cli) == 1)
            cdone = 1;
        if (!sdone && SSL_do_handshake(srv) == 1)
            sdone = 1;
    }
    ERR_clear_error();
    cr_expect(cdone && sdone, "the handshake completed");
    X509 *leaf = SSL_get1_peer_certificate(cli);
    *verify = SSL_get_verify_result(cli);
    SSL_free(cli);
    SSL_CTX_free(cctx);
    SSL_free(srv);
    close(sv[0]);
    close(sv[1]);
    return leaf;
}

Test(tls_mint, minted_certificate)
{
    char err[512];
    const char *cafile = src("conf/examples/inspect-ca/ca.pem");
    lg_mint_ca_t *ca = lg_mint_ca_load(cafile, src("conf/examples/inspect-ca/ca.key"), err,
                                       sizeof(err));
    cr_assert_not_null(ca, "%s", err);
    long v;
    X509 *a = handshake(ca, "shop.example", cafile, &v);
    cr_assert_not_null(a);
    cr_expect_eq(v, X509_V_OK, "verifies against the CA for its name: %s",
                 X509_verify_cert_error_string(v));
    cr_expect_eq(X509_check_host(a, "shop.example", 0, 0, NULL), 1, "the name in the SAN");
    cr_expect_neq(X509_check_host(a, "other.example", 0, 0, NULL), 1, "no other name");
    cr_expect_eq(X509_check_ca(a), 0, "not a CA");
    X509 *b = handshake(ca, "shop.example", cafile, &v);
    cr_expect_eq(X509_cmp(a, b), 0, "the second handshake shows the cached certificate");
    X509 *c = handshake(ca, "other.example", src("conf/examples/certs/ca.pem"), &v);
    cr_expect_neq(v, X509_V_OK, "another CA does not vouch for it");
    cr_expect_neq(X509_cmp(a, c), 0, "another name, another certificate");
    cr_expect_neq(ASN1_INTEGER_cmp(X509_get0_serialNumber(a), X509_get0_serialNumber(c)), 0,
                  "serials differ");
    X509_free(a);
    X509_free(b);
    X509_free(c);
    lg_mint_ca_free(ca);
}
