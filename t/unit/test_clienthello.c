/*
 * Unit tests of net/clienthello.c: ClientHellos built here byte by byte
 * (so each case says exactly what is on the wire), read whole, in every
 * prefix, split over records, and spoiled in the ways that must be
 * refused.  A ClientHello from OpenSSL itself is read too.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "net/clienthello.h"

typedef struct { unsigned char b[70000]; size_t n; } bytes_t;

static void put(bytes_t *o, const void *p, size_t n) { memcpy(o->b + o->n, p, n); o->n += n; }
static void put8(bytes_t *o, unsigned v) { o->b[o->n++] = (unsigned char)v; }
static void put16(bytes_t *o, unsigned v) { put8(o, v >> 8); put8(o, v & 255); }

static void ext_sni(bytes_t *e, const char *name)
{
    size_t n = strlen(name);
    put16(e, 0);
    put16(e, (unsigned)n + 5);
    put16(e, (unsigned)n + 3);
    put8(e, 0);
    put16(e, (unsigned)n);
    put(e, name, n);
}

static void ext_alpn(bytes_t *e, const char *const *names, size_t k)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++)
        total += 1 + strlen(names[i]);
    put16(e, 16);
    put16(e, (unsigned)total + 2);
    put16(e, (unsigned)total);
    for (size_t i = 0; i < k; i++) {
        put8(e, (unsigned)strlen(names[i]));
        put(e, names[i], strlen(names[i]));
    }
}

/* The handshake message (type 1, 3-byte length, body) with these extensions. */
static void hello(bytes_t *hs, const bytes_t *exts, int with_ext_block)
{
    bytes_t body = { .n = 0 };
    put16(&body, 0x0303);
    for (int i = 0; i < 32; i++)
        put8(&body, (unsigned)i);
    put8(&body, 0);                     /* session id */
    put16(&body, 2);
    put16(&body, 0x1301);               /* TLS_AES_128_GCM_SHA256 */
    put8(&body, 1);
    put8(&body, 0);                     /* null compression */
    if (with_ext_block) {
        put16(&body, (unsigned)exts->n);
        put(&body, exts->b, exts->n);
    }
    hs->n = 0;
    put8(hs, 1);
    put8(hs, (unsigned)(body.n >> 16));
    put16(hs, (unsigned)(body.n & 0xffff));
    put(hs, body.b, body.n);
}

/* hs in records of at most `frag` bytes each. */
static void records(bytes_t *out, const bytes_t *hs, size_t frag)
{
    out->n = 0;
    for (size_t off = 0; off < hs->n; off += frag) {
        size_t k = hs->n - off < frag ? hs->n - off : frag;
        put8(out, 22);
        put16(out, 0x0301);
        put16(out, (unsigned)k);
        put(out, hs->b + off, k);
    }
}

static bytes_t ex, hs, wire;

static void standard(void)
{
    static const char *const protos[] = { "h2", "http/1.1" };
    ex.n = 0;
    put16(&ex, 0x000a);                 /* supported_groups, ignored */
    put16(&ex, 4);
    put16(&ex, 2);
    put16(&ex, 0x001d);
    ext_sni(&ex, "WWW.Example.COM.");
    ext_alpn(&ex, protos, 2);
    hello(&hs, &ex, 1);
    records(&wire, &hs, 16384);
}

Test(clienthello, reads_sni_and_alpn)
{
    lg_clienthello_t ch;
    standard();
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK);
    cr_assert(ch.has_sni);
    cr_assert_str_eq(ch.sni, "www.example.com");   /* lower case, no trailing dot */
    cr_assert_eq(ch.sni_len, 15);
    cr_assert(ch.has_alpn);
    cr_assert(lg_clienthello_has_alpn(&ch, "h2"));
    cr_assert(lg_clienthello_has_alpn(&ch, "http/1.1"));
    cr_assert(!lg_clienthello_has_alpn(&ch, "http/1"));
    cr_assert_eq(ch.consumed, wire.n);
    cr_assert_eq(ch.version, 0x0303);
    size_t pos = 0, l;
    const char *p;
    int k = 0;
    while (lg_clienthello_alpn_next(&ch, &pos, &p, &l))
        k++;
    cr_assert_eq(k, 2);
}

Test(clienthello, every_prefix_needs_more)
{
    lg_clienthello_t ch;
    standard();
    for (size_t n = 0; n < wire.n; n++)
        cr_assert_eq(lg_clienthello_parse(wire.b, n, &ch), LG_CH_MORE, "prefix %zu", n);
}

Test(clienthello, split_over_records_of_any_size)
{
    lg_clienthello_t ch;
    standard();
    for (size_t frag = 1; frag < hs.n + 2; frag += (frag < 8 ? 1 : 7)) {
        records(&wire, &hs, frag);
        cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK, "records of %zu", frag);
        cr_assert_str_eq(ch.sni, "www.example.com");
        cr_assert_eq(ch.consumed, wire.n);
        /* a record cut short: more */
        cr_assert_eq(lg_clienthello_parse(wire.b, wire.n - 1, &ch), LG_CH_MORE);
    }
}

Test(clienthello, bytes_after_the_hello_do_not_matter)
{
    lg_clienthello_t ch;
    standard();
    size_t n = wire.n;
    put(&wire, "\x14\x03\x03\x00\x01\x01", 6);      /* a ChangeCipherSpec after it */
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK);
    cr_assert_eq(ch.consumed, n);
}

Test(clienthello, no_extensions_and_no_sni)
{
    lg_clienthello_t ch;
    ex.n = 0;
    hello(&hs, &ex, 0);
    records(&wire, &hs, 16384);
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK);
    cr_assert(!ch.has_sni && !ch.has_alpn);
    cr_assert_str_eq(ch.sni, "");
    hello(&hs, &ex, 1);                 /* an empty extension block */
    records(&wire, &hs, 16384);
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK);
    cr_assert(!ch.has_sni);
}

Test(clienthello, not_tls)
{
    lg_clienthello_t ch;
    static const char *const texts[] = { "GET / HTTP/1.1\r\n", "SSH-2.0-OpenSSH_9.2\r\n",
                                         "\x80\x2e\x01\x03\x01", "\x16\x02\x00", "\x17\x03\x03\x00\x10" };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        cr_assert_eq(lg_clienthello_parse((const unsigned char *)texts[i], strlen(texts[i]), &ch),
                     LG_CH_NOT_TLS, "%zu", i);
    cr_assert_eq(lg_clienthello_parse((const unsigned char *)"\x16", 1, &ch), LG_CH_MORE);
    cr_assert_eq(lg_clienthello_parse((const unsigned char *)"\x16\x03", 2, &ch), LG_CH_MORE);
}

static lg_ch_rc_t with_exts(const bytes_t *e)
{
    lg_clienthello_t ch;
    hello(&hs, e, 1);
    records(&wire, &hs, 16384);
    return lg_clienthello_parse(wire.b, wire.n, &ch);
}

Test(clienthello, malformed_is_refused)
{
    lg_clienthello_t ch;
    /* a ServerHello, not a ClientHello */
    standard();
    wire.b[5] = 2;
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_MALFORMED);
    /* an empty record */
    cr_assert_eq(lg_clienthello_parse((const unsigned char *)"\x16\x03\x01\x00\x00", 5, &ch),
                 LG_CH_MALFORMED);
    /* the hello says it is larger than any real one */
    cr_assert_eq(lg_clienthello_parse((const unsigned char *)"\x16\x03\x01\x00\x04\x01\x01\x00\x00",
                                      9, &ch), LG_CH_MALFORMED);
    /* an alert record in the middle of the hello */
    standard();
    records(&wire, &hs, 20);
    wire.b[25] = 21;
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_MALFORMED);
    /* SNI twice */
    ex.n = 0;
    ext_sni(&ex, "a.test");
    ext_sni(&ex, "b.test");
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    /* a name with a space, a NUL, or longer than 255 */
    ex.n = 0;
    ext_sni(&ex, "a b.test");
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ex.n = 0;
    ext_sni(&ex, longname);
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    /* an extension whose length runs past the block */
    ex.n = 0;
    ext_sni(&ex, "a.test");
    ex.b[3] += 5;
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    /* an SNI list length that disagrees with its extension */
    ex.n = 0;
    ext_sni(&ex, "a.test");
    ex.b[5] -= 1;
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    /* an empty ALPN name */
    static const char *const empty[] = { "" };
    ex.n = 0;
    ext_alpn(&ex, empty, 1);
    cr_assert_eq(with_exts(&ex), LG_CH_MALFORMED);
    /* odd cipher suite bytes */
    standard();
    hs.b[4 + 2 + 32 + 1 + 1] = 3;       /* the suites' length, low byte */
    records(&wire, &hs, 16384);
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_MALFORMED);
}

Test(clienthello, unknown_sni_types_are_skipped)
{
    lg_clienthello_t ch;
    ex.n = 0;
    put16(&ex, 0);
    put16(&ex, 2 + 3 + 1 + 3 + 6);
    put16(&ex, 3 + 1 + 3 + 6);
    put8(&ex, 7);                       /* a name type nobody defined */
    put16(&ex, 1);
    put8(&ex, 'x');
    put8(&ex, 0);
    put16(&ex, 6);
    put(&ex, "a.test", 6);
    hello(&hs, &ex, 1);
    records(&wire, &hs, 16384);
    cr_assert_eq(lg_clienthello_parse(wire.b, wire.n, &ch), LG_CH_OK);
    cr_assert_str_eq(ch.sni, "a.test");
}

Test(clienthello, reads_what_openssl_sends)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    cr_assert_not_null(ctx);
    static const unsigned char alpn[] = "\x02h2\x04imap";
    cr_assert_eq(SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1), 0);
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_set_tlsext_host_name(ssl, "mail.example.org");
    SSL_set_connect_state(ssl);
    cr_assert_leq(SSL_do_handshake(ssl), 0);       /* waits for the server */
    char *p;
    long n = BIO_get_mem_data(wb, &p);
    cr_assert_gt(n, 100);
    lg_clienthello_t ch;
    cr_assert_eq(lg_clienthello_parse((const unsigned char *)p, (size_t)n, &ch), LG_CH_OK);
    cr_assert_str_eq(ch.sni, "mail.example.org");
    cr_assert(lg_clienthello_has_alpn(&ch, "imap"));
    cr_assert(lg_clienthello_has_alpn(&ch, "h2"));
    for (long k = 0; k < n; k++)
        cr_assert_eq(lg_clienthello_parse((const unsigned char *)p, (size_t)k, &ch), LG_CH_MORE);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    ERR_clear_error();
}
