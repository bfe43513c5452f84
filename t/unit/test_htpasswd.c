/*
 * Unit tests of net/htpasswd.c: every accepted hash format against vectors
 * made by other tools (openssl passwd -1/-5/-6/-apr1, Python's crypt for
 * bcrypt, openssl sha1 | base64 for {SHA}), the refusals (plain text, DES,
 * malformed lines) with their FILE:LINE, the success cache (counted in
 * lg_htpasswd_hashes), the failure back-off, and Basic credentials.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/htpasswd.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const struct { const char *hash, *scheme; } vectors[] = {
    { "$1$saltsalt$ftLgCtGIyrDobedc9tcIg/", "md5-crypt" },
    { "$5$saltsalt$oKVGlMEwBudmTTTEP95mx4t66d5Z9Ga939GYRQDqML/", "sha256-crypt" },
    { "$6$saltsalt$M.kqAYJWq.fT7Vf85q3zVo8k5MdeXccB1v8WOuU9WDO98nJtIKpQbMBMzVWnGRhfys/YJ6ZnmYvAU/T19c1X..",
      "sha512-crypt" },
    { "$apr1$saltsalt$eb4gsOJgQU63dF3hZvPOr/", "apr1" },
    { "{SHA}I4o8nF+NGnsORu2ro4i9NawjA4g=", "sha1" },
    { "$2b$04$abcdefghijklmnopqrstuuwq6DJ3sn14Mwlm8kxdoPtkvDUaoudM6", "bcrypt" },
    { "$2y$05$abcdefghijklmnopqrstuuLk3bgemofh5P5YZDkl/mJuV0xSTGapG", "bcrypt" },
    { "$2a$04$ABCDEFGHIJKLMNOPQRSTUOZ3Skd23YjRrl4puMfhYvm6aP573lH5.", "bcrypt" },
};

Test(htpasswd, every_format_verifies_legate_and_nothing_else)
{
    for (size_t i = 0; i < ARRAY_SIZE(vectors); i++) {
        const char *why = NULL;
        const char *sc = lg_htpasswd_scheme(vectors[i].hash, &why);
        cr_assert_not_null(sc, "%s: %s", vectors[i].hash, why);
        cr_expect_str_eq(sc, vectors[i].scheme);
        cr_expect(lg_htpasswd_verify(vectors[i].hash, "legate"), "%s", vectors[i].hash);
        cr_expect(!lg_htpasswd_verify(vectors[i].hash, "Legate"), "%s", vectors[i].hash);
        cr_expect(!lg_htpasswd_verify(vectors[i].hash, ""), "%s", vectors[i].hash);
        cr_expect(!lg_htpasswd_verify(vectors[i].hash, "legate "), "%s", vectors[i].hash);
    }
}

Test(htpasswd, md5_crypt_short_salt_empty_and_long_passwords)
{
    /* openssl passwd -apr1 -salt ab '' ; openssl passwd -1 -salt x <long> */
    cr_expect(lg_htpasswd_verify("$apr1$ab$S8K6Sgp3W8c9Jb6LxgywZ.", ""));
    cr_expect(lg_htpasswd_verify("$1$x$zy4hiTff7E0Ipo6HNZjgD.",
                                 "a-much-longer-password-than-sixteen-bytes"));
    cr_expect(!lg_htpasswd_verify("$1$x$zy4hiTff7E0Ipo6HNZjgD.",
                                  "a-much-longer-password-than-sixteen-byteS"));
}

Test(htpasswd, refused_hashes_say_why)
{
    static const struct { const char *hash, *why; } bad[] = {
        { "legate", "plain-text" },
        { "secret-password-1", "plain-text" },
        { "abJnggxhB/yWI", "DES" },
        { "$2y$05$tooshort", "malformed bcrypt" },
        { "$2y$99$abcdefghijklmnopqrstuuLk3bgemofh5P5YZDkl/mJuV0xSTGapG", "malformed bcrypt" },
        /* a check that would stall a worker for seconds or minutes */
        { "$2y$16$abcdefghijklmnopqrstuuLk3bgemofh5P5YZDkl/mJuV0xSTGapG", "bcrypt cost above 15" },
        { "$5$rounds=999999999$salt$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ", "malformed SHA-256-crypt" },
        { "$6$salt", "malformed SHA-512" },
        { "$5$saltsalt$short", "malformed SHA-256" },
        { "$apr1$saltsalt$eb4gsOJgQU63dF3hZvPOr", "malformed Apache MD5" },
        { "$1$toolongsalt$ftLgCtGIyrDobedc9tcIg/", "malformed MD5" },
        { "{SHA}I4o8nF+NGnsORu2ro4i9Naw", "malformed {SHA}" },
        { "$y$j9T$abc$def", "unsupported" },
        { "", "empty" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        const char *why = NULL;
        cr_expect_null(lg_htpasswd_scheme(bad[i].hash, &why), "%s", bad[i].hash);
        cr_assert_not_null(why);
        cr_expect(strstr(why, bad[i].why) != NULL, "%s: %s", bad[i].hash, why);
        cr_expect(!lg_htpasswd_verify(bad[i].hash, bad[i].hash));
    }
}

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/lg-htp-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_expect_eq(system(cmd), 0);
}

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

Test(htpasswd, file_with_every_format, .init = setup, .fini = teardown)
{
    char text[2048] = "# users\n\n";
    for (size_t i = 0; i < ARRAY_SIZE(vectors); i++)
        snprintf(text + strlen(text), sizeof(text) - strlen(text), "u%zu:%s%s\r\n", i,
                 vectors[i].hash, i == 2 ? ":a comment" : "");
    const char *path = write_file("users", text);
    char err[1024] = "";
    lg_htpasswd_t *h = lg_htpasswd_load(path, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    cr_expect_eq(lg_htpasswd_count(h), ARRAY_SIZE(vectors));
    for (size_t i = 0; i < ARRAY_SIZE(vectors); i++) {
        char u[8];
        snprintf(u, sizeof(u), "u%zu", i);
        cr_expect(lg_htpasswd_check(h, u, "legate", 1000), "%s", u);
        cr_expect(!lg_htpasswd_check(h, u, "wrong", 1000), "%s", u);
    }
    cr_expect(!lg_htpasswd_check(h, "nobody", "legate", 1000));
    lg_htpasswd_free(h);
}

Test(htpasswd, bad_lines_are_file_line_errors, .init = setup, .fini = teardown)
{
    const char *path = write_file("bad",
        "ok:$apr1$saltsalt$eb4gsOJgQU63dF3hZvPOr/\n"   /* 1 */
        "plain:legate\n"                                /* 2 */
        "des:abJnggxhB/yWI\n"                           /* 3 */
        "no colon here\n"                               /* 4 */
        ":$apr1$saltsalt$eb4gsOJgQU63dF3hZvPOr/\n"      /* 5 */
        "ok:$1$saltsalt$ftLgCtGIyrDobedc9tcIg/\n"       /* 6: a second "ok" */
        "empty:\n");                                    /* 7 */
    char err[4096] = "";
    cr_expect_null(lg_htpasswd_load(path, err, sizeof(err)));
    char want[512];
    static const struct { int line; const char *what; } e[] = {
        { 2, "plain-text" }, { 3, "DES" }, { 4, "expected user:hash" },
        { 5, "user name is empty" }, { 6, "already defined at line 1" }, { 7, "empty" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(e); i++) {
        snprintf(want, sizeof(want), "%s:%d: ", path, e[i].line);
        const char *at = strstr(err, want);
        cr_expect_not_null(at, "no %s in:\n%s", want, err);
        if (at)
            cr_expect(strstr(at, e[i].what) && strstr(at, e[i].what) < strchr(at, '\n'),
                      "line %d: want %s in:\n%s", e[i].line, e[i].what, err);
    }
    snprintf(want, sizeof(want), "%s:1: ", path);
    cr_expect_null(strstr(err, want), "a good line reported:\n%s", err);
    err[0] = '\0';
    cr_expect_null(lg_htpasswd_load("/nonexistent/htpasswd", err, sizeof(err)));
    cr_expect(strstr(err, "/nonexistent/htpasswd: cannot read") != NULL, "%s", err);
}

Test(htpasswd, a_success_is_hashed_once_per_file, .init = setup, .fini = teardown)
{
    const char *path = write_file("one", "bob:$2b$04$abcdefghijklmnopqrstuuwq6DJ3sn14Mwlm8kxdoPtkvDUaoudM6\n");
    char err[512] = "";
    lg_htpasswd_t *h = lg_htpasswd_load(path, err, sizeof(err));
    cr_assert_not_null(h, "%s", err);
    uint64_t before = lg_htpasswd_hashes;
    cr_expect(lg_htpasswd_check(h, "bob", "legate", 1000));
    cr_expect_eq(lg_htpasswd_hashes, before + 1);
    for (int i = 0; i < 10; i++)
        cr_expect(lg_htpasswd_check(h, "bob", "legate", 2000 + i));
    cr_expect_eq(lg_htpasswd_hashes, before + 1, "a remembered success was hashed again");
    cr_expect(!lg_htpasswd_check(h, "bob", "nope", 3000));
    cr_expect(!lg_htpasswd_check(h, "bob", "nope", 3000));
    cr_expect_eq(lg_htpasswd_hashes, before + 3, "failures are not remembered");
    cr_expect(!lg_htpasswd_check(h, "alice", "legate", 3000));
    cr_expect_eq(lg_htpasswd_hashes, before + 3, "an unknown user costs no hash");
    /* 5 minutes later the success is checked again */
    cr_expect(lg_htpasswd_check(h, "bob", "legate", 1000 + 5 * 60 * 1000 + 1));
    cr_expect_eq(lg_htpasswd_hashes, before + 4);
    lg_htpasswd_free(h);
}

static struct sockaddr_storage addr(const char *ip)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        cr_assert_eq(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        cr_assert_eq(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return ss;
}

Test(htpasswd, failures_back_off_per_address)
{
    lg_htpasswd_throttle_reset();
    struct sockaddr_storage a = addr("192.0.2.7"), b = addr("2001:db8::7");
    const struct sockaddr *sa = (const struct sockaddr *)&a, *sb = (const struct sockaddr *)&b;
    int64_t t = 100000;
    for (int i = 0; i < 4; i++) {
        lg_htpasswd_result(sa, 0, t);
        cr_expect_eq(lg_htpasswd_throttled(sa, t), 0, "after %d failures", i + 1);
    }
    lg_htpasswd_result(sa, 0, t);                      /* the 5th */
    cr_expect_eq(lg_htpasswd_throttled(sa, t), 1000);
    cr_expect_eq(lg_htpasswd_throttled(sa, t + 999), 1);
    cr_expect_eq(lg_htpasswd_throttled(sa, t + 1000), 0);
    cr_expect_eq(lg_htpasswd_throttled(sb, t), 0, "another address waits for nothing");
    lg_htpasswd_result(sa, 0, t + 1000);                /* the 6th: 2 s */
    cr_expect_eq(lg_htpasswd_throttled(sa, t + 1000), 2000);
    for (int i = 0; i < 20; i++)
        lg_htpasswd_result(sa, 0, t + 2000);
    cr_expect_eq(lg_htpasswd_throttled(sa, t + 2000), 64000, "capped at 64 s");
    lg_htpasswd_result(sa, 1, t + 70000);
    cr_expect_eq(lg_htpasswd_throttled(sa, t + 70000), 0, "a success clears it");
    for (int i = 0; i < 5; i++)
        lg_htpasswd_result(sb, 0, t);
    cr_expect_gt(lg_htpasswd_throttled(sb, t), 0);
    /* forgotten after 10 minutes without a failure: counting starts again */
    lg_htpasswd_result(sb, 0, t + 11 * 60 * 1000);
    cr_expect_eq(lg_htpasswd_throttled(sb, t + 11 * 60 * 1000), 0);
}

Test(htpasswd, basic_credentials)
{
    char buf[256];
    const char *u, *p;
    /* "admin:legate" */
    cr_assert_eq(lg_htpasswd_basic("Basic YWRtaW46bGVnYXRl", 22, buf, sizeof(buf), &u, &p), 0);
    cr_expect_str_eq(u, "admin");
    cr_expect_str_eq(p, "legate");
    /* "a:b:c": the password may hold colons; "basic" in any case, padding */
    const char *v = "bAsIc   YTpiOmM=";
    cr_assert_eq(lg_htpasswd_basic(v, strlen(v), buf, sizeof(buf), &u, &p), 0);
    cr_expect_str_eq(u, "a");
    cr_expect_str_eq(p, "b:c");
    /* "u:" : empty password is well-formed */
    v = "Basic dTo=";
    cr_assert_eq(lg_htpasswd_basic(v, strlen(v), buf, sizeof(buf), &u, &p), 0);
    cr_expect_str_eq(p, "");
    static const char *bad[] = {
        "Bearer YWRtaW46bGVnYXRl", "Basic", "Basic ", "BasicYWRtaW46bGVnYXRl",
        "Basic YWRtaW46bGVnYXR", "Basic YWRtaW46bGVn!XRl", "Basic bm9jb2xvbg==" /* nocolon */,
        "Basic OnB3" /* ":pw": no user */, "Basic YQphOmI=" /* "a\na:b" */,
        "Basic YT1i=ZZZ",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
        cr_expect_eq(lg_htpasswd_basic(bad[i], strlen(bad[i]), buf, sizeof(buf), &u, &p), -1,
                     "%s", bad[i]);
    char tiny[4];
    cr_expect_eq(lg_htpasswd_basic("Basic YWRtaW46bGVnYXRl", 22, tiny, sizeof(tiny), &u, &p), -1);
}
