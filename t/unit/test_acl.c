/*
 * Unit tests of the allow/deny building blocks (net/cidr.c, domset.c, urlre.c, portset.c): CIDR sets and
 * the private-address classification as tables of address -> expected
 * rule, domain-set semantics as tables of name -> expected rule, both file
 * formats from files written into a temporary directory (so the
 * "FILE:LINE" of messages is exact), a generated 200,000-name blocklist
 * (load time and lookup cost are printed, not asserted), URL regex lists
 * and port lists.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "net/acl.h"
#include "net/geo.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lg-acl-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_expect_eq(system(cmd), 0);
}

TestSuite(acl, .init = setup, .fini = teardown, .timeout = 60);

static const char *write_file(const char *name, const char *text)
{
    static char path[4][256];
    static int k;
    char *p = path[k++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    FILE *f = fopen(p, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* A sockaddr from text (IPv4 or IPv6), for the tables. */
static struct sockaddr_storage sa_of(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(8080);
    } else {
        cr_assert_eq(inet_pton(AF_INET6, text, &sin6->sin6_addr), 1, "bad test address %s", text);
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(443);
    }
    return ss;
}

static int lookup(const lg_cidr_set_t *s, const char *addr)
{
    struct sockaddr_storage ss = sa_of(addr);
    return lg_cidr_lookup(s, (const struct sockaddr *)&ss);
}

static lg_cidr_set_t *cidr_of(const char *const *rules, size_t n)
{
    char err[256];
    lg_cidr_set_t *s = lg_cidr_new();
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(lg_cidr_add(s, rules[i], err, sizeof(err)), (int)i, "%s: %s", rules[i], err);
    cr_assert_eq(lg_cidr_build(s, err, sizeof(err)), 0);
    return s;
}

/* ================================================================== */
/* CIDR sets                                                           */

Test(acl, cidr_longest_prefix)
{
    static const char *const rules[] = {
        /* 0 */ "10.0.0.0/8",
        /* 1 */ "10.1.0.0/16",
        /* 2 */ "10.1.2.3",
        /* 3 */ "2001:db8::/32",
        /* 4 */ "2001:db8:1::/48",
        /* 5 */ "::1/128",
        /* 6 */ "fe80::/10",
        /* 7 */ "::ffff:172.16.0.0/108",      /* = 172.16.0.0/12 */
        /* 8 */ "100.64.0.0/10",
        /* 9 */ "203.0.113.7/32",
        /* 10 */ "2001:db8::/32",             /* duplicate of 3 */
        /* 11 */ "2001:db8:1::1",
    };
    static const struct {
        const char *addr;
        int         rule;
    } cases[] = {
        { "10.2.3.4", 0 },          { "10.255.255.255", 0 },   { "10.0.0.0", 0 },
        { "10.1.9.9", 1 },          { "10.1.2.3", 2 },         { "10.1.2.4", 1 },
        { "11.0.0.1", -1 },         { "9.255.255.255", -1 },
        { "::ffff:10.1.2.3", 2 },   { "::ffff:10.9.9.9", 0 },  { "::ffff:11.0.0.1", -1 },
        { "::a01:203", -1 },        /* IPv4-compatible is not mapped */
        { "2001:db8:1::5", 4 },     { "2001:db8:1::1", 11 },   { "2001:db8:2::5", 3 },
        { "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 3 },
        { "2001:db9::", -1 },       { "2001:db7:ffff::", -1 },
        { "::1", 5 },               { "::2", -1 },             { "::", -1 },
        { "fe80::1", 6 },           { "febf:ffff::1", 6 },     { "fec0::1", -1 },
        { "172.20.0.1", 7 },        { "::ffff:172.31.255.255", 7 }, { "172.32.0.0", -1 },
        { "172.15.255.255", -1 },
        { "100.127.255.255", 8 },   { "100.128.0.0", -1 },     { "100.63.255.255", -1 },
        { "203.0.113.7", 9 },       { "203.0.113.8", -1 },     { "203.0.113.6", -1 },
    };
    lg_cidr_set_t *s = cidr_of(rules, ARRAY_SIZE(rules));
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        int got = lookup(s, cases[i].addr);
        cr_expect_eq(got, cases[i].rule, "%s: rule %d (%s), expected %d", cases[i].addr, got,
                     got >= 0 ? lg_cidr_rule(s, got) : "-", cases[i].rule);
        struct sockaddr_storage ss = sa_of(cases[i].addr);
        cr_expect_eq(lg_cidr_contains(s, (struct sockaddr *)&ss), cases[i].rule >= 0);
    }
    cr_expect_str_eq(lg_cidr_rule(s, 7), "::ffff:172.16.0.0/108");
    cr_expect_null(lg_cidr_rule(s, 12));
    cr_expect_null(lg_cidr_rule(s, -1));
    cr_expect_eq(lg_cidr_count(s), ARRAY_SIZE(rules));

    /* a non-IP family never matches */
    struct sockaddr sa = { .sa_family = AF_UNIX };
    cr_expect_eq(lg_cidr_lookup(s, &sa), -1);
    lg_cidr_free(s);
}

Test(acl, cidr_edge_prefix_lengths)
{
    static const char *const all4[] = { "0.0.0.0/0" };
    static const char *const all6[] = { "::/0" };
    static const char *const edges[] = {
        /* 0 */ "255.255.255.255/32",
        /* 1 */ "::/128",
        /* 2 */ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
        /* 3 */ "128.0.0.0/1",
        /* 4 */ "8000::/1",
        /* 5 */ "0.0.0.0/32",
        /* 6 */ "1234:5678:9abc:def0::/64",
        /* 7 */ "1234:5678:9abc:def0:8000::/65",
        /* 8 */ "::ffff:0:0/96",              /* = 0.0.0.0/0 */
    };
    lg_cidr_set_t *s = cidr_of(all4, 1);
    cr_expect_eq(lookup(s, "0.0.0.0"), 0);
    cr_expect_eq(lookup(s, "255.255.255.255"), 0);
    cr_expect_eq(lookup(s, "::ffff:1.2.3.4"), 0);
    cr_expect_eq(lookup(s, "2001::1"), -1);
    cr_expect_eq(lookup(s, "::"), -1);
    lg_cidr_free(s);

    s = cidr_of(all6, 1);
    cr_expect_eq(lookup(s, "::"), 0);
    cr_expect_eq(lookup(s, "ffff::"), 0);
    cr_expect_eq(lookup(s, "1.2.3.4"), -1);
    cr_expect_eq(lookup(s, "::ffff:1.2.3.4"), -1, "mapped addresses are IPv4");
    lg_cidr_free(s);

    s = cidr_of(edges, ARRAY_SIZE(edges));
    static const struct {
        const char *addr;
        int         rule;
    } cases[] = {
        { "255.255.255.255", 0 }, { "255.255.255.254", 3 }, { "128.0.0.0", 3 },
        { "127.255.255.255", 8 }, { "0.0.0.0", 5 },         { "0.0.0.1", 8 },
        { "::", 1 },              { "::1", -1 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 2 },
        { "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 4 },
        { "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", -1 },
        { "1234:5678:9abc:def0::1", 6 },
        { "1234:5678:9abc:def0:7fff:ffff:ffff:ffff", 6 },
        { "1234:5678:9abc:def0:8000::", 7 },
        { "1234:5678:9abc:def0:ffff:ffff:ffff:ffff", 7 },
        { "1234:5678:9abc:def1::", -1 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
        cr_expect_eq(lookup(s, cases[i].addr), cases[i].rule, "%s", cases[i].addr);
    lg_cidr_free(s);
}

Test(acl, cidr_errors_and_lists)
{
    static const struct {
        const char *rule;
        const char *msg;            /* a part of the message */
    } bad[] = {
        { "10.0.0.1/8", "did you mean 10.0.0.0/8?" },
        { "2001:db8::1/32", "did you mean 2001:db8::/32?" },
        { "10.0.0.0/33", "prefix length" },
        { "::/129", "prefix length" },
        { "10.0.0.0/", "prefix length" },
        { "10.0.0.0/-1", "prefix length" },
        { "10.0.0.0/8x", "prefix length" },
        { "10.0.0.0/1000", "prefix length" },
        { "10.0.0/8", "bad address" },
        { "example.com", "bad address" },
        { "", "bad address" },
        { "/8", "bad address" },
        { "fe80::1%eth0", "bad address" },
    };
    char err[256];
    lg_cidr_set_t *s = lg_cidr_new();
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        cr_expect_eq(lg_cidr_add(s, bad[i].rule, err, sizeof(err)), -1, "%s", bad[i].rule);
        cr_expect(strstr(err, bad[i].msg) != NULL, "%s: \"%s\"", bad[i].rule, err);
    }
    cr_expect_eq(lg_cidr_count(s), 0);

    cr_expect_eq(lg_cidr_add_list(s, " 10.0.0.0/8, 192.168.0.0/16 ::1,,\t fc00::/7 ", err,
                                  sizeof(err)), 4, "%s", err);
    cr_expect_eq(lg_cidr_add_list(s, "1.2.3.4, nope", err, sizeof(err)), -1);
    cr_expect(strstr(err, "nope") != NULL, "%s", err);
    cr_assert_eq(lg_cidr_build(s, err, sizeof(err)), 0);
    cr_expect_eq(lookup(s, "192.168.1.1"), 1);
    cr_expect_eq(lookup(s, "fd00::1"), 3);
    cr_expect_eq(lookup(s, "1.2.3.4"), 4, "added before the bad one");

    /* more rules after a build, then build again */
    cr_expect_eq(lg_cidr_add(s, "192.168.1.0/24", err, sizeof(err)), 5);
    cr_assert_eq(lg_cidr_build(s, err, sizeof(err)), 0);
    cr_expect_eq(lookup(s, "192.168.1.1"), 5);
    cr_expect_eq(lookup(s, "192.168.2.1"), 1);
    lg_cidr_free(s);
    lg_cidr_free(NULL);
}

Test(acl, cidr_lookup_before_build_is_a_bug, .signal = SIGABRT)
{
    char err[64];
    lg_cidr_set_t *s = lg_cidr_new();
    lg_cidr_add(s, "10.0.0.0/8", err, sizeof(err));
    lookup(s, "10.0.0.1");
}

/* A large set: every lookup agrees with a linear scan. */
Test(acl, cidr_random_against_linear_scan)
{
    enum { RULES = 2000, PROBES = 20000 };
    static struct {
        uint32_t net;
        unsigned len;
    } r[RULES];
    uint64_t x = 88172645463325252ull;
    char err[128], text[32];
    lg_cidr_set_t *s = lg_cidr_new();
    for (int i = 0; i < RULES; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        r[i].len = 8 + (unsigned)(x % 25);
        r[i].net = (uint32_t)(x >> 20) & (0xffffffffu << (32 - r[i].len));
        r[i].net = (r[i].net & 0x00ffffffu) | 0x0a000000u;     /* all in 10/8: overlaps */
        r[i].net &= 0xffffffffu << (32 - r[i].len);
        struct in_addr a = { htonl(r[i].net) };
        snprintf(text, sizeof(text), "%s/%u", inet_ntoa(a), r[i].len);
        cr_assert_eq(lg_cidr_add(s, text, err, sizeof(err)), i, "%s: %s", text, err);
    }
    lg_cidr_build(s, err, sizeof(err));
    for (int k = 0; k < PROBES; k++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        uint32_t a = (uint32_t)x;
        if (k % 2)
            a = r[(x >> 32) % RULES].net | ((uint32_t)(x >> 40) & 0xff);
        int want = -1;
        unsigned best = 0;
        for (int i = 0; i < RULES; i++) {
            uint32_t m = 0xffffffffu << (32 - r[i].len);
            if ((a & m) == r[i].net && (want < 0 || r[i].len > best)) {
                want = i;
                best = r[i].len;
            }
        }
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr = { htonl(a) } };
        cr_assert_eq(lg_cidr_lookup(s, (struct sockaddr *)&sin), want, "probe %08x", a);
    }
    lg_cidr_free(s);
}

/* ================================================================== */
/* private addresses                                                   */

Test(acl, private_ranges)
{
    static const struct {
        const char *addr;
        const char *cls;            /* NULL: public */
        const char *with_doc;       /* with LG_CIDR_PRIV_DOC */
    } cases[] = {
        { "0.0.0.0",          "this network", "this network" },
        { "0.255.255.255",    "this network", "this network" },
        { "1.1.1.1",          NULL, NULL },
        { "8.8.8.8",          NULL, NULL },
        { "9.255.255.255",    NULL, NULL },
        { "10.0.0.1",         "private", "private" },
        { "11.0.0.0",         NULL, NULL },
        { "100.63.255.255",   NULL, NULL },
        { "100.64.0.1",       "shared address space (CGNAT)", "shared address space (CGNAT)" },
        { "100.127.255.255",  "shared address space (CGNAT)", "shared address space (CGNAT)" },
        { "100.128.0.0",      NULL, NULL },
        { "127.0.0.1",        "loopback", "loopback" },
        { "127.255.255.254",  "loopback", "loopback" },
        { "169.254.169.254",  "link-local", "link-local" },
        { "169.255.0.1",      NULL, NULL },
        { "172.15.255.255",   NULL, NULL },
        { "172.16.0.1",       "private", "private" },
        { "172.31.255.255",   "private", "private" },
        { "172.32.0.0",       NULL, NULL },
        { "192.0.0.8",        "IETF protocol assignments", "IETF protocol assignments" },
        { "192.0.2.1",        NULL, "documentation" },
        { "192.168.1.1",      "private", "private" },
        { "192.169.0.0",      NULL, NULL },
        { "198.18.0.1",       "benchmarking", "benchmarking" },
        { "198.19.255.255",   "benchmarking", "benchmarking" },
        { "198.20.0.0",       NULL, NULL },
        { "198.51.100.7",     NULL, "documentation" },
        { "203.0.113.9",      NULL, "documentation" },
        { "223.255.255.255",  NULL, NULL },
        { "224.0.0.1",        "multicast", "multicast" },
        { "239.255.255.255",  "multicast", "multicast" },
        { "240.0.0.1",        "reserved", "reserved" },
        { "255.255.255.254",  "reserved", "reserved" },
        { "255.255.255.255",  "broadcast", "broadcast" },
        { "::",               "unspecified", "unspecified" },
        { "::1",              "loopback", "loopback" },
        { "::2",              "IPv4-compatible (deprecated)", "IPv4-compatible (deprecated)" },
        { "::ffff:127.0.0.1", "loopback", "loopback" },
        { "::ffff:10.1.1.1",  "private", "private" },
        { "::ffff:8.8.8.8",   NULL, NULL },
        { "64:ff9b::7f00:1",  "loopback", "loopback" },
        { "64:ff9b::a9fe:a9fe", "link-local", "link-local" },
        { "64:ff9b::808:808", NULL, NULL },
        { "64:ff9b:1::1",     "local-use NAT64", "local-use NAT64" },
        { "100::1",           "discard-only", "discard-only" },
        { "100:0:0:1::",      NULL, NULL },
        { "2001:db8::1",      NULL, "documentation" },
        { "3fff::1",          NULL, "documentation" },
        { "3fff:1000::",      NULL, NULL },
        { "2002:7f00:1::",    "loopback", "loopback" },
        { "2002:c0a8:101::1", "private", "private" },
        { "2002:808:808::1",  NULL, NULL },
        { "2606:4700::1111",  NULL, NULL },
        { "fc00::1",          "unique local", "unique local" },
        { "fdff:ffff::1",     "unique local", "unique local" },
        { "fe00::1",          NULL, NULL },
        { "fe80::1",          "link-local", "link-local" },
        { "febf::1",          "link-local", "link-local" },
        { "fec0::1",          "site-local (deprecated)", "site-local (deprecated)" },
        { "ff02::1",          "multicast", "multicast" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        struct sockaddr_storage ss = sa_of(cases[i].addr);
        const char *got = lg_cidr_private((struct sockaddr *)&ss, 0);
        const char *doc = lg_cidr_private((struct sockaddr *)&ss, LG_CIDR_PRIV_DOC);
        if (cases[i].cls == NULL)
            cr_expect_null(got, "%s: \"%s\"", cases[i].addr, got);
        else
            cr_expect(got != NULL && strcmp(got, cases[i].cls) == 0, "%s: \"%s\", expected \"%s\"",
                      cases[i].addr, got ? got : "public", cases[i].cls);
        if (cases[i].with_doc == NULL)
            cr_expect_null(doc, "%s (doc): \"%s\"", cases[i].addr, doc);
        else
            cr_expect(doc != NULL && strcmp(doc, cases[i].with_doc) == 0,
                      "%s (doc): \"%s\", expected \"%s\"", cases[i].addr, doc ? doc : "public",
                      cases[i].with_doc);
    }
    struct sockaddr sa = { .sa_family = AF_UNIX };
    cr_expect_str_eq(lg_cidr_private(&sa, 0), "not an IP address");
}

/* ================================================================== */
/* domain sets                                                         */

static lg_domset_t *domset_of(const char *const *names, size_t n, const char *source)
{
    lg_domset_t *s = lg_domset_new();
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(lg_domset_add(s, names[i], strlen(names[i]), source), 1, "%s", names[i]);
    return s;
}

/* The rule matching name, or "" for none. */
static const char *match(const lg_domset_t *s, const char *name)
{
    lg_domset_hit_t hit = { NULL, NULL };
    int m = lg_domset_match(s, name, strlen(name), &hit);
    if (!m)
        return "";
    cr_assert_not_null(hit.rule);
    cr_assert_not_null(hit.source);
    return hit.rule;
}

Test(acl, domain_suffix_semantics)
{
    static const char *const listed[] = {
        "ads.example.com", "*.tracker.test", ".cdn.bad", "UPPER.Example.ORG.", "single",
        "deep.a.b.c.d.e.test", "under_score.test", "xn--bcher-kva.test",
    };
    static const struct {
        const char *name;
        const char *rule;
    } cases[] = {
        { "ads.example.com",        "ads.example.com" },
        { "x.ads.example.com",      "ads.example.com" },
        { "a.b.c.ads.example.com",  "ads.example.com" },
        { "ADS.EXAMPLE.COM",        "ads.example.com" },
        { "Ads.Example.Com.",       "ads.example.com" },
        { "x.ads.example.com.",     "ads.example.com" },
        { "notads.example.com",     "" },
        { "ads-example.com",        "" },
        { "example.com",            "" },
        { "com",                    "" },
        { "ads.example.com.evil",   "" },
        { "ads.example.co",         "" },
        { "ds.example.com",         "" },
        { "tracker.test",           "tracker.test" },
        { "x.tracker.test",         "tracker.test" },
        { "xtracker.test",          "" },
        { "cdn.bad",                "cdn.bad" },
        { "img.cdn.bad",            "cdn.bad" },
        { "upper.example.org",      "upper.example.org" },
        { "x.UPPER.example.org",    "upper.example.org" },
        { "single",                 "single" },
        { "x.single",               "single" },
        { "singles",                "" },
        { "e.test",                 "" },
        { "a.b.c.d.e.test",         "" },
        { "deep.a.b.c.d.e.test",    "deep.a.b.c.d.e.test" },
        { "under_score.test",       "under_score.test" },
        { "www.xn--bcher-kva.test", "xn--bcher-kva.test" },
        { "",                       "" },
        { ".",                      "" },
        { "..",                     "" },
        { ".ads.example.com",       "ads.example.com" },
    };
    lg_domset_t *s = domset_of(listed, ARRAY_SIZE(listed), "inline");
    cr_expect_eq(lg_domset_count(s), ARRAY_SIZE(listed));
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
        cr_expect_str_eq(match(s, cases[i].name), cases[i].rule, "\"%s\"", cases[i].name);

    /* the hit names its source; a NULL hit is allowed */
    lg_domset_hit_t hit;
    cr_assert_eq(lg_domset_match(s, "x.cdn.bad", 9, &hit), 1);
    cr_expect_str_eq(hit.source, "inline");
    cr_expect_eq(lg_domset_match(s, "x.cdn.bad", 9, NULL), 1);
    /* the length is respected: no NUL needed */
    cr_expect_eq(lg_domset_match(s, "cdn.badly", 7, NULL), 1);
    cr_expect_eq(lg_domset_match(s, "cdn.badly", 9, NULL), 0);

    /* duplicates, in any spelling */
    cr_expect_eq(lg_domset_add(s, "ADS.example.com.", 16, "other"), 0);
    cr_expect_eq(lg_domset_add(s, "*.single", 8, "other"), 0);
    cr_expect_eq(lg_domset_count(s), ARRAY_SIZE(listed));
    lg_domset_free(s);
}

Test(acl, domain_most_specific_rule_wins)
{
    lg_domset_t *s = lg_domset_new();
    cr_assert_eq(lg_domset_add(s, "example.com", 11, "broad.txt"), 1);
    cr_assert_eq(lg_domset_add(s, "ads.example.com", 15, "ads.txt"), 1);
    lg_domset_hit_t hit;
    cr_assert_eq(lg_domset_match(s, "x.ads.example.com", 17, &hit), 1);
    cr_expect_str_eq(hit.rule, "ads.example.com");
    cr_expect_str_eq(hit.source, "ads.txt");
    cr_assert_eq(lg_domset_match(s, "www.example.com", 15, &hit), 1);
    cr_expect_str_eq(hit.rule, "example.com");
    cr_expect_str_eq(hit.source, "broad.txt");
    lg_domset_free(s);
}

Test(acl, domain_invalid_names)
{
    char label64[80], long254[300], ok253[300];
    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".test");
    /* 253 = 3 labels of 63 + 1 label of 61, dots between */
    memset(ok253, 'b', 253);
    ok253[63] = ok253[127] = ok253[191] = '.';
    ok253[253] = '\0';
    memcpy(long254, ok253, 253);
    long254[253] = 'b';
    long254[254] = '\0';

    const char *bad[] = {
        "", ".", "*", "*.", "*.*.x.test", "a..b", ".a..b", "bad name", "a/b", "a:b", "x@y",
        "with\ttab", "é.test", label64, long254, "..", "*x.test",
    };
    lg_domset_t *s = lg_domset_new();
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(lg_domset_add(s, bad[i], strlen(bad[i]), "x"), -1, "\"%s\"", bad[i]);
    cr_expect_eq(lg_domset_add(s, ok253, 253, "x"), 1);
    cr_expect_eq(lg_domset_add(s, "a.", 2, "x"), 1);
    cr_expect_eq(lg_domset_count(s), 2);
    cr_expect_str_eq(match(s, ok253), ok253);
    lg_domset_free(s);
}

Test(acl, domain_file_plain)
{
    const char *path = write_file("plain.txt",
        "# a blocklist\n"                       /* 1 */
        "ads.example.com\n"                     /* 2 */
        "\n"                                    /* 3 */
        "   tracker.test   # trailing comment\n" /* 4 */
        "*.wild.test\r\n"                       /* 5: CRLF */
        "bad name here\n"                       /* 6: bad line */
        "ok_underscore.test\n"                  /* 7 */
        "inv@lid.test\n"                        /* 8: bad name */
        "dup.test\n"                            /* 9 */
        "DUP.test.\n"                           /* 10: duplicate */
        "\t# indented comment\n"                /* 11 */
        "last.test");                           /* 12: no newline */
    char err[512];
    lg_domset_stats_t st;
    lg_domset_t *s = lg_domset_new();
    cr_assert_eq(lg_domset_load(s, path, LG_DOMSET_PLAIN, &st, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(st.lines, 12);
    cr_expect_eq(st.added, 6);
    cr_expect_eq(st.duplicates, 1);
    cr_expect_eq(st.invalid, 2);
    cr_expect_eq(st.skipped, 0);
    cr_expect_eq(st.first_bad_line, 6);
    char want[512];
    snprintf(want, sizeof(want), "%s:6: invalid line \"bad name here\" (2 invalid entries skipped)",
             path);
    cr_expect_str_eq(err, want);
    cr_expect_str_eq(match(s, "x.wild.test"), "wild.test");
    cr_expect_str_eq(match(s, "last.test"), "last.test");
    cr_expect_str_eq(match(s, "a.tracker.test"), "tracker.test");
    lg_domset_hit_t hit;
    cr_assert_eq(lg_domset_match(s, "ads.example.com", 15, &hit), 1);
    cr_expect_str_eq(hit.source, path);

    /* AUTO reads the same file the same way */
    lg_domset_t *a = lg_domset_new();
    lg_domset_stats_t st2;
    cr_assert_eq(lg_domset_load(a, path, LG_DOMSET_AUTO, &st2, err, sizeof(err)), 0);
    cr_expect_eq(st2.added, 6);
    cr_expect_eq(st2.invalid, 2);
    lg_domset_free(a);
    lg_domset_free(s);
}

Test(acl, domain_file_hosts)
{
    const char *path = write_file("hosts",
        "# hosts-file blocklist\n"                                  /* 1 */
        "127.0.0.1 localhost\n"                                     /* 2 */
        "::1 localhost ip6-localhost ip6-loopback\n"                /* 3 */
        "0.0.0.0 0.0.0.0\n"                                         /* 4 */
        "0.0.0.0 ads.hosts.test\n"                                  /* 5 */
        "127.0.0.1\ta.hosts.test b.hosts.test  c.hosts.test # c\n"  /* 6 */
        "fe80::1%lo0 localhost\n"                                   /* 7 */
        "notanip something.test\n"                                  /* 8: bad line */
        "0.0.0.0 bad!name.test good.hosts.test\n"                   /* 9: one bad name */
        "0.0.0.0\n"                                                 /* 10: no name */
        "0.0.0.0 ADS.hosts.test\n"                                  /* 11: duplicate */
        "255.255.255.255 broadcasthost\n");                         /* 12 */
    char err[512];
    lg_domset_stats_t st;
    lg_domset_t *s = lg_domset_new();
    cr_assert_eq(lg_domset_load(s, path, LG_DOMSET_HOSTS, &st, err, sizeof(err)), 0, "%s", err);
    cr_expect_eq(st.lines, 12);
    cr_expect_eq(st.added, 5);
    cr_expect_eq(st.duplicates, 1);
    cr_expect_eq(st.skipped, 7);
    cr_expect_eq(st.invalid, 3);
    cr_expect_eq(st.first_bad_line, 8);
    cr_expect(strstr(err, ":8: invalid hosts line \"notanip something.test\" (3 invalid") != NULL,
              "%s", err);
    static const char *const yes[] = {
        "ads.hosts.test", "a.hosts.test", "b.hosts.test", "c.hosts.test", "good.hosts.test",
        "x.c.hosts.test",
    };
    static const char *const no[] = {
        "localhost", "ip6-localhost", "0.0.0.0", "something.test", "hosts.test",
        "bad!name.test", "broadcasthost", "d.hosts.test",
    };
    for (size_t i = 0; i < ARRAY_SIZE(yes); i++)
        cr_expect_neq(match(s, yes[i])[0], '\0', "%s", yes[i]);
    for (size_t i = 0; i < ARRAY_SIZE(no); i++)
        cr_expect_str_eq(match(s, no[i]), "", "%s", no[i]);
    lg_domset_free(s);

    /* AUTO: the same, and plain lines may be mixed in */
    const char *mixed = write_file("mixed",
        "0.0.0.0 one.test two.test\n"
        "three.test\n"
        "four.test five.test\n"         /* two names, no address: bad */
        ":: six.test\n");
    s = lg_domset_new();
    cr_assert_eq(lg_domset_load(s, mixed, LG_DOMSET_AUTO, &st, err, sizeof(err)), 0);
    cr_expect_eq(st.added, 4);
    cr_expect_eq(st.invalid, 1);
    cr_expect_eq(st.first_bad_line, 3);
    cr_expect_str_eq(match(s, "six.test"), "six.test");
    lg_domset_free(s);
}

Test(acl, domain_file_errors)
{
    char err[512];
    lg_domset_stats_t st;
    lg_domset_t *s = lg_domset_new();
    cr_expect_eq(lg_domset_load(s, "/nonexistent/list.txt", LG_DOMSET_AUTO, &st, err,
                                sizeof(err)), -1);
    cr_expect(strstr(err, "/nonexistent/list.txt") != NULL, "%s", err);
    cr_expect_eq(lg_domset_load(s, tmpdir, LG_DOMSET_AUTO, &st, err, sizeof(err)), -1);
    cr_expect(strstr(err, tmpdir) != NULL, "%s", err);

    /* a clean file leaves err empty */
    const char *path = write_file("clean", "a.test\nb.test\n");
    strcpy(err, "junk");
    cr_expect_eq(lg_domset_load(s, path, LG_DOMSET_PLAIN, NULL, err, sizeof(err)), 0);
    cr_expect_str_eq(err, "");
    /* an empty file is fine */
    path = write_file("empty", "");
    cr_expect_eq(lg_domset_load(s, path, LG_DOMSET_PLAIN, &st, err, sizeof(err)), 0);
    cr_expect_eq(st.lines, 0);
    /* from memory, with a name of our choosing */
    static const char mem[] = "x.test\n0.0.0.0 y.test\nbad name\n";
    cr_expect_eq(lg_domset_load_mem(s, mem, sizeof(mem) - 1, "conf:12", LG_DOMSET_AUTO, &st,
                                    err, sizeof(err)), 0);
    cr_expect_str_eq(err, "conf:12:3: invalid line \"bad name\" (1 invalid entry skipped)");
    cr_expect_eq(lg_domset_count(s), 4);
    lg_domset_free(s);
    lg_domset_free(NULL);
}

/* ---- a 200,000-name list ---- */

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Listed name number i: unique by construction, 2 to 4 labels. */
static void listed_name(char *buf, size_t len, unsigned i)
{
    static const char *const tlds[] = { "com", "net", "org", "io", "info", "co.uk" };
    switch (i % 3) {
    case 0: snprintf(buf, len, "ads%u.tracker-%u.%s", i, i % 977, tlds[i % 6]); break;
    case 1: snprintf(buf, len, "x%x.cdn%u.%s", i * 2654435761u, i, tlds[i % 6]); break;
    default: snprintf(buf, len, "metrics-%u.%s", i, tlds[i % 6]); break;
    }
}

Test(acl, domain_200k_file)
{
    enum { N = 200000, PROBES = 1000, TIMED = 2000000 };
    char path[128];
    snprintf(path, sizeof(path), "%s/big.txt", tmpdir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("# generated\n", f);
    char name[128];
    for (unsigned i = 0; i < N; i++) {
        listed_name(name, sizeof(name), i);
        if (i % 2)
            fprintf(f, "0.0.0.0 %s\n", name);       /* hosts lines and plain lines */
        else
            fprintf(f, "%s\n", name);
    }
    fclose(f);

    char err[256];
    lg_domset_stats_t st;
    lg_domset_t *s = lg_domset_new();
    double t0 = now_s();
    cr_assert_eq(lg_domset_load(s, path, LG_DOMSET_AUTO, &st, err, sizeof(err)), 0, "%s", err);
    double load = now_s() - t0;
    cr_assert_eq(st.added, N, "%s", err);
    cr_assert_eq(st.invalid, 0, "%s", err);
    cr_assert_eq(lg_domset_count(s), N);

    /* 1,000 random lookups: listed names, names under them, unlisted ones */
    uint64_t x = 0x2545F4914F6CDD1Dull;
    char q[300], want[128];
    for (int k = 0; k < PROBES; k++) {
        unsigned i = (unsigned)(rng_next(&x) % N);
        listed_name(want, sizeof(want), i);
        switch (k % 4) {
        case 0:                     /* the name itself, upper case */
            snprintf(q, sizeof(q), "%s", want);
            for (char *c = q; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 32);
            break;
        case 1:                     /* a name under it */
            snprintf(q, sizeof(q), "sub%u.deeper.%s.", k, want);
            break;
        case 2:                     /* its parent ("cdnN.net", "com"...): not listed */
            snprintf(q, sizeof(q), "%s", strchr(want, '.') + 1);
            want[0] = '\0';
            break;
        default:                    /* a look-alike: not listed */
            snprintf(q, sizeof(q), "not%s", want);
            want[0] = '\0';
            break;
        }
        cr_assert_str_eq(match(s, q), want, "lookup %d: \"%s\"", k, q);
    }

    /* the cost of a lookup: half hits (one label under a listed name), half misses */
    enum { NQ = 4096 };
    static char names[NQ][160];
    static size_t lens[NQ];
    for (int k = 0; k < NQ; k++) {
        listed_name(want, sizeof(want), (unsigned)(rng_next(&x) % N));
        if (k % 2)
            snprintf(names[k], sizeof(names[k]), "www.%s", want);
        else
            snprintf(names[k], sizeof(names[k]), "www.unlisted%d.example.com", k);
        lens[k] = strlen(names[k]);
    }
    volatile int sink = 0;
    t0 = now_s();
    for (int k = 0; k < TIMED; k++)
        sink += lg_domset_match(s, names[k % NQ], lens[k % NQ], NULL);
    double per = (now_s() - t0) / TIMED * 1e9;
    cr_expect_eq(sink, TIMED / 2);

    fprintf(stderr, "domain set: %d names loaded in %.1f ms (%.0f ns/name), %.1f MiB, "
            "lookup %.0f ns (names of ~30 chars, half hits)\n",
            N, load * 1e3, load * 1e9 / N, (double)lg_domset_memory(s) / (1 << 20), per);
    lg_domset_free(s);
}

/* ================================================================== */
/* URL regex filters                                                   */

Test(acl, url_regex)
{
    char err[512];
    lg_urlre_t *s = lg_urlre_new();
    cr_assert_eq(lg_urlre_add(s, "^https?://[^/]*\\.doubleclick\\.net/", err, sizeof(err)), 0);
    cr_assert_eq(lg_urlre_add(s, "/ads/", err, sizeof(err)), 1);
    cr_assert_eq(lg_urlre_add(s, "\\.(exe|msi)$", err, sizeof(err)), 2);
    cr_assert_eq(lg_urlre_add(s, "[?&]utm_[a-z]+=", err, sizeof(err)), 3);
    cr_expect_eq(lg_urlre_add(s, "ads[", err, sizeof(err)), -1);
    cr_expect(strstr(err, "ads[") != NULL, "%s", err);
    cr_expect_eq(lg_urlre_add(s, "(unclosed", err, sizeof(err)), -1);
    cr_expect_eq(lg_urlre_count(s), 4);

    static const struct {
        const char *url;
        int         idx;
    } cases[] = {
        { "http://ad.doubleclick.net/x", 0 },
        { "HTTPS://AD.DOUBLECLICK.NET/x", 0 },
        { "https://ad.doubleclick.net.evil/x", -1 },
        { "http://example.com/ads/banner.png", 1 },
        { "http://example.com/ADS/banner.png", 1 },
        { "http://ad.doubleclick.net/ads/", 0 },        /* the first match wins */
        { "http://example.com/setup.EXE", 2 },
        { "http://example.com/setup.exe?x=1", -1 },
        { "http://example.com/?a=1&utm_source=x", 3 },
        { "http://example.com/", -1 },
        { "", -1 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
        cr_expect_eq(lg_urlre_match(s, cases[i].url, strlen(cases[i].url)), cases[i].idx,
                     "%s", cases[i].url);
    /* only len bytes are looked at: "$" anchors at len */
    const char *u = "http://example.com/setup.exe.txt";
    cr_expect_eq(lg_urlre_match(s, u, strlen(u)), -1);
    cr_expect_eq(lg_urlre_match(s, u, strlen(u) - 4), 2);
    cr_expect_str_eq(lg_urlre_pattern(s, 1), "/ads/");
    cr_expect_null(lg_urlre_pattern(s, 4));

    const char *path = write_file("filters",
        "# URL filters\n"
        "  /banners?/  \n"
        "\n"
        "   # indented comment\n"
        "track(er|ing)\\.js$\n");
    cr_expect_eq(lg_urlre_load(s, path, err, sizeof(err)), 2, "%s", err);
    cr_expect_eq(lg_urlre_match(s, "http://x/banner/1.gif", 21), 4);
    cr_expect_eq(lg_urlre_match(s, "http://x/Tracking.js", 20), 5);

    path = write_file("badfilters", "ok\n# c\n(bad\n");
    cr_expect_eq(lg_urlre_load(s, path, err, sizeof(err)), -1);
    char want[300];
    snprintf(want, sizeof(want), "%s:3: bad regular expression \"(bad\"", path);
    cr_expect(strncmp(err, want, strlen(want)) == 0, "%s", err);
    cr_expect_eq(lg_urlre_load(s, "/nonexistent/filters", err, sizeof(err)), -1);
    lg_urlre_free(s);
    lg_urlre_free(NULL);
}

/* ================================================================== */
/* port lists                                                          */

Test(acl, port_lists)
{
    static const struct {
        const char *text;
        const char *yes;            /* ports in the set, space separated */
        const char *no;
    } good[] = {
        { "443", "443", "0 80 442 444 65535" },
        { "443, 8443, 1000-2000", "443 8443 1000 1500 2000", "999 2001 444 8442" },
        { "80 443", "80 443", "81" },
        { " 80,443 ,, 8080 ", "80 443 8080", "8081" },
        { "1-65535", "1 2 65534 65535", "0" },
        { "65535", "65535", "65534" },
        { "1", "1", "0 2" },
        { "80 - 90", "80 85 90", "79 91" },
        { "100-100", "100", "99 101" },
        { "8000-8003,22", "22 8000 8001 8002 8003", "8004 23" },
    };
    static const char *const bad[] = {
        "", " , ", "0", "65536", "80-70", "abc", "80,x", "1000-", "-5", "80;443", "443/tcp",
        "99999999999", "80-90-100", "0-10",
    };
    char err[256];
    for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
        lg_portset_t p;
        lg_portset_clear(&p);
        cr_assert_eq(lg_portset_parse(&p, good[i].text, err, sizeof(err)), 0, "\"%s\": %s",
                     good[i].text, err);
        char buf[128];
        snprintf(buf, sizeof(buf), "%s", good[i].yes);
        for (char *t = strtok(buf, " "); t; t = strtok(NULL, " "))
            cr_expect(lg_portset_has(&p, (unsigned)atoi(t)), "\"%s\" lacks %s", good[i].text, t);
        snprintf(buf, sizeof(buf), "%s", good[i].no);
        for (char *t = strtok(buf, " "); t; t = strtok(NULL, " "))
            cr_expect(!lg_portset_has(&p, (unsigned)atoi(t)), "\"%s\" has %s", good[i].text, t);
    }
    lg_portset_t p, before;
    lg_portset_clear(&p);
    cr_assert_eq(lg_portset_parse(&p, "443", err, sizeof(err)), 0);
    memcpy(&before, &p, sizeof(p));
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        cr_expect_eq(lg_portset_parse(&p, bad[i], err, sizeof(err)), -1, "\"%s\"", bad[i]);
        cr_expect_neq(err[0], '\0', "\"%s\": no message", bad[i]);
        cr_expect_eq(memcmp(&p, &before, sizeof(p)), 0, "\"%s\" changed the set", bad[i]);
    }
    /* parse adds to what is there */
    cr_assert_eq(lg_portset_parse(&p, "80", err, sizeof(err)), 0);
    cr_expect(lg_portset_has(&p, 80) && lg_portset_has(&p, 443));
    cr_expect(!lg_portset_has(&p, 65536));
}

/* GeoLite2 CSV: quoted names holding commas, IPv4 and IPv6 blocks files,
 * nested networks (the longest wins), the registered-country fallback,
 * CRLF line ends, a location with no country code. */
Test(acl, geo_csv)
{
    const char *loc = write_file("loc.csv",
        "geoname_id,locale_code,continent_code,continent_name,country_iso_code,country_name,is_in_european_union\r\n"
        "1835841,en,AS,Asia,KR,\"Korea, Republic of\",0\r\n"
        "3017382,en,EU,Europe,FR,France,1\r\n"
        "6255148,en,EU,Europe,,,0\r\n");
    const char *b4 = write_file("b4.csv",
        "network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider\r\n"
        "1.0.0.0/8,3017382,3017382,,0,0\r\n"
        "1.2.0.0/16,1835841,1835841,,0,0\r\n"
        "5.0.0.0/24,,1835841,,0,0\r\n"
        "6.0.0.0/24,6255148,6255148,,0,0\r\n");
    const char *b6 = write_file("b6.csv",
        "network,geoname_id,registered_country_geoname_id,represented_country_geoname_id,is_anonymous_proxy,is_satellite_provider\n"
        "2001:db8::/32,3017382,3017382,,0,0\n");
    char *const blocks[] = { (char *)b4, (char *)b6 };
    char err[256] = "";
    lg_geo_t *g = lg_geo_open(NULL, blocks, 2, loc, err, sizeof(err));
    cr_assert_not_null(g, "%s", err);
    static const struct { const char *addr, *cc; } t[] = {
        { "1.1.1.1", "FR" }, { "1.2.3.4", "KR" }, { "1.3.0.0", "FR" },
        { "5.0.0.9", "KR" },            /* registered country only */
        { "6.0.0.1", "" },              /* a continent, no country */
        { "7.0.0.1", "" }, { "2001:db8::1", "FR" }, { "2001:db9::1", "" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        struct sockaddr_storage ss = sa_of(t[i].addr);
        char cc[3];
        cr_expect_str_eq(lg_geo_country(g, (const struct sockaddr *)&ss, cc), t[i].cc,
                         "%s", t[i].addr);
    }
    lg_geo_free(g);

    char *const bad[] = { (char *)write_file("bad.csv", "network,geoname_id,r\n1.2.3.0/33,3017382,\n") };
    cr_expect_null(lg_geo_open(NULL, bad, 1, loc, err, sizeof(err)));
    cr_expect(strstr(err, "bad.csv:2:") != NULL, "%s", err);
    char *const shrt[] = { (char *)write_file("short.csv", "network,geoname_id,r\n\n1.2.3.0/24\n") };
    cr_expect_null(lg_geo_open(NULL, shrt, 1, loc, err, sizeof(err)));
    cr_expect(strstr(err, "short.csv:3: expected network") != NULL, "%s", err);
    cr_expect_null(lg_geo_open(NULL, blocks, 2, "/nonexistent/loc.csv", err, sizeof(err)));
    cr_expect(strstr(err, "/nonexistent/loc.csv") != NULL, "%s", err);
    cr_expect_null(lg_geo_open("/nonexistent/x.mmdb", NULL, 0, NULL, err, sizeof(err)));
    cr_expect(strstr(err, "No such file") != NULL, "%s", err);
    char cc[3];
    struct sockaddr_storage ss = sa_of("1.1.1.1");
    cr_expect_str_eq(lg_geo_country(NULL, (const struct sockaddr *)&ss, cc), "", "no database");
}
