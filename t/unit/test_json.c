/*
 * Unit tests of net/json.c: the strict JSON reader (what it accepts, what it
 * refuses and why each refusal matters for tokens), base64url (RFC 4648
 * test vectors and the non-canonical spellings refused), and the JWS
 * splitter.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "net/json.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static int parses(const char *s)
{
    lg_json_t j;
    int rc = lg_json_parse(&j, s, strlen(s), 64, 4, NULL, 0);
    lg_json_free(&j);
    return rc == 0;
}

Test(json, accepts_the_grammar)
{
    static const char *const ok[] = {
        "{}", "[]", " { } ", "0", "-0", "1.5e10", "-2E-3", "\"x\"", "true", "false", "null",
        "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}", "\"\\u00e9\\ud83d\\ude00\\n\\/\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
    };
    for (size_t i = 0; i < ARRAY_SIZE(ok); i++)
        cr_expect(parses(ok[i]), "%s", ok[i]);
}

Test(json, refuses_what_is_not_strict_json)
{
    static const char *const bad[] = {
        "", "{", "[1,]", "{\"a\":1,}", "01", "+1", ".5", "1.", "1e", "-", "tru", "nul",
        "{\"a\" 1}", "{a:1}", "'x'", "\"a", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
        "\"\\u0000\"", "\"a\tb\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf5\x80\x80\x80\"",
        "\"\xe2\x82\"", "{} {}", "1 2",
        "{\"alg\":\"HS256\",\"alg\":\"none\"}",     /* duplicate names */
        "[[[[[1]]]]]",                              /* deeper than 4 */
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect(!parses(bad[i]), "%s", bad[i]);
}

Test(json, node_bound_and_message)
{
    lg_json_t j;
    char err[80];
    cr_expect_eq(lg_json_parse(&j, "[1,2,3]", 7, 3, 4, err, sizeof(err)), -1);
    cr_expect(strstr(err, "too many values") != NULL, "%s", err);
    lg_json_free(&j);
    cr_expect_eq(lg_json_parse(&j, "[1,2,3]", 7, 4, 4, err, sizeof(err)), 0);
    lg_json_free(&j);
}

Test(json, members_values_and_siblings)
{
    lg_json_t j;
    const char *s = "{\"s\":\"a\\\"b\",\"n\":-12.5e1,\"o\":{\"x\":1},\"t\":true,\"arr\":[\"p\",\"q\"]}";
    cr_assert_eq(lg_json_parse(&j, s, strlen(s), 64, 4, NULL, 0), 0);
    cr_expect_eq(j.nodes[0].nkids, 5);
    const lg_json_node_t *v = lg_json_get(&j, 0, "s");
    cr_assert(v);
    cr_expect_str_eq(v->s, "a\"b");
    v = lg_json_get(&j, 0, "n");
    cr_assert(v);
    cr_expect_str_eq(v->s, "-12.5e1");
    cr_expect(v->num == -125.0);
    cr_expect(lg_json_get(&j, 0, "x") == NULL, "a nested member is not the top's");
    v = lg_json_get(&j, 0, "o");
    cr_assert(v);
    cr_expect(lg_json_get(&j, (size_t)(v - j.nodes), "x") != NULL);
    v = lg_json_get(&j, 0, "arr");
    cr_assert(v);
    cr_expect_eq(v->nkids, 2);
    cr_expect_str_eq(j.nodes[(v - j.nodes) + 2].s, "q");
    lg_json_free(&j);
}

Test(b64url, rfc4648_vectors_both_ways)
{
    static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
    static const char *const enc[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy" };
    for (size_t i = 0; i < ARRAY_SIZE(plain); i++) {
        char out[16];
        unsigned char dec[16];
        lg_b64url_encode((const unsigned char *)plain[i], strlen(plain[i]), out);
        cr_expect_str_eq(out, enc[i]);
        cr_expect_eq(lg_b64url_len(strlen(plain[i])), strlen(enc[i]));
        long n = lg_b64url_decode(enc[i], strlen(enc[i]), dec, sizeof(dec));
        cr_expect_eq(n, (long)strlen(plain[i]));
        cr_expect(memcmp(dec, plain[i], (size_t)n) == 0);
    }
    unsigned char d[4];
    cr_expect_eq(lg_b64url_decode("-_8", 3, d, sizeof(d)), 2);
    cr_expect(d[0] == 0xfb && d[1] == 0xff);
}

Test(b64url, refuses_padding_other_alphabets_and_noncanonical)
{
    static const char *const bad[] = { "Zg==", "Zm8=", "Z", "Zm9vY", "+/8", "Zm 9v", "Zh", "Zm9" };
    unsigned char d[16];
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(lg_b64url_decode(bad[i], strlen(bad[i]), d, sizeof(d)), -1, "%s", bad[i]);
    cr_expect_eq(lg_b64url_decode("Zm9vYmFy", 8, d, 5), -1, "too small a buffer");
}

Test(jws, splits_and_decodes)
{
    /* {"alg":"HS256"} . {"sub":"a"} . 3 bytes */
    const char *tok = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.AAEC";
    lg_jws_t t;
    const char *why = NULL;
    cr_assert_eq(lg_jws_decode(&t, tok, strlen(tok), &why), 0, "%s", why);
    cr_expect_str_eq(lg_json_get(&t.header, 0, "alg")->s, "HS256");
    cr_expect_str_eq(lg_json_get(&t.payload, 0, "sub")->s, "a");
    cr_expect_eq(t.siglen, 3);
    cr_expect_eq(t.signed_len, strlen("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0"));
    lg_jws_free(&t);
    static const char *const bad[] = {
        "a.b", "a.b.c.d", "eyJhbGciOiJIUzI1NiJ9..AAEC", "WzFd.eyJzdWIiOiJhIn0.AAEC",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.AA=C",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        cr_expect_eq(lg_jws_decode(&t, bad[i], strlen(bad[i]), &why), -1, "%s", bad[i]);
        lg_jws_free(&t);
    }
}
