/*
 * Unit tests of forward/gw_parse.c: FTP control replies (single and
 * multi-line, split anywhere, refused when they are no FTP), the passive
 * mode and SIZE answers, listings and Gopher menus as HTML, decoding of
 * paths and selectors, SOCKS5 UDP headers.  Table driven where the cases
 * are one line each.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "forward/gateway.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    const char *in;
    ssize_t     took;           /* what the parser returns */
    int         code;
} replies[] = {
    { "220 hello\r\n", 11, 220 },
    { "220 hello\n", 10, 220 },                         /* a bare LF */
    { "200\r\n", 5, 200 },                              /* no text */
    { "230-Welcome\r\n to the server\r\n230 done\r\nNEXT", 39, 230 },
    { "230-a\r\n230-b\r\n231 not the end\r\n230 end\r\n", 40, 230 }, /* only "230 " ends it */
    { "230-a\r\n230\r\n", 12, 230 },                   /* the code alone ends it too */
    { "220 hel", 0, 0 },                                /* more to come */
    { "230-a\r\n more\r\n", 0, 0 },                     /* a multi-line reply unfinished */
    { "", 0, 0 },
    { "HTTP/1.1 200 OK\r\n", -1, 0 },                   /* not FTP */
    { "22 short\r\n", -1, 0 },
    { "620 out of range\r\n", -1, 0 },
    { "099 out of range\r\n", -1, 0 },
    { "220xno separator\r\n", -1, 0 },
    { "\r\n", -1, 0 },
};

Test(ftp, replies)
{
    for (size_t i = 0; i < ARRAY_SIZE(replies); i++) {
        const char *s = replies[i].in;
        size_t n = strlen(s);
        char *b = malloc(n + 1);        /* exact size: an over-read is ASan's */
        memcpy(b, s, n);
        int code = 0;
        ssize_t t = lg_ftp_reply_parse(b, n, &code);
        cr_expect_eq(t, replies[i].took, "%zu %s: took %zd", i, s, t);
        if (t > 0)
            cr_expect_eq(code, replies[i].code, "%s", s);
        free(b);
    }
}

Test(ftp, a_nul_or_an_endless_line_is_refused)
{
    int code;
    cr_expect_eq(lg_ftp_reply_parse("220 a\0b\r\n", 9, &code), -1);
    char *big = malloc(LG_FTP_LINE_MAX + 10);
    memcpy(big, "220 ", 4);
    memset(big + 4, 'x', LG_FTP_LINE_MAX + 6);
    cr_expect_eq(lg_ftp_reply_parse(big, LG_FTP_LINE_MAX + 10, &code), -1, "no end of line in 4 KiB");
    cr_expect_eq(lg_ftp_reply_parse(big, 100, &code), 0, "short of the limit: more may come");
    free(big);
}

Test(ftp, every_split_of_a_multiline_reply)
{
    const char *s = "150-Opening\r\n  data connection\r\n150 for file.bin (12 bytes)\r\n";
    size_t n = strlen(s);
    for (size_t k = 0; k < n; k++) {
        int code = 0;
        cr_expect_eq(lg_ftp_reply_parse(s, k, &code), 0, "cut at %zu", k);
    }
    int code = 0;
    cr_expect_eq(lg_ftp_reply_parse(s, n, &code), (ssize_t)n);
    cr_expect_eq(code, 150);
}

Test(ftp, passive_and_size_answers)
{
    static const struct { const char *in; int epsv, pasv; } t[] = {
        { "229 Entering Extended Passive Mode (|||6446|)", 6446, -1 },
        { "229 ok (!!!21!)", 21, -1 },
        { "229 ok (|||0|)", -1, -1 },
        { "229 ok (|||65536|)", -1, -1 },
        { "229 ok (|||12)", -1, -1 },
        { "229 ok (|1|2|3|)", -1, -1 },
        { "227 Entering Passive Mode (127,0,0,1,23,40)", -1, 23 * 256 + 40 },
        { "227 =10,9,8,7,4,1", -1, 1025 },
        { "227 (127,0,0,1,256,1)", -1, -1 },
        { "227 (127,0,0,1,23)", -1, -1 },
        { "227 (1,2,3,4,0,0)", -1, -1 },
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        cr_expect_eq(lg_ftp_epsv_port(t[i].in, strlen(t[i].in)), t[i].epsv, "%s", t[i].in);
        cr_expect_eq(lg_ftp_pasv_port(t[i].in, strlen(t[i].in)), t[i].pasv, "%s", t[i].in);
    }
    cr_expect_eq(lg_ftp_size("213 3000000", 11), 3000000);
    cr_expect_eq(lg_ftp_size("213 0", 5), 0);
    cr_expect_eq(lg_ftp_size("213 12x", 7), -1);
    cr_expect_eq(lg_ftp_size("213 ", 4), -1);
    cr_expect_eq(lg_ftp_size("550 no", 6), -1);
    cr_expect_eq(lg_ftp_size("213 99999999999999999999", 24), -1, "no overflow");
}

Test(ftp, unescape_refuses_what_a_command_cannot_carry)
{
    char out[64];
    cr_expect_eq(lg_gw_unescape("a%20b/%41", 9, out, 0), 5);
    cr_expect_str_eq(out, "a b/A");
    cr_expect_eq(lg_gw_unescape("a%0D%0ADELE x", 13, out, 0), -1, "CR LF");
    cr_expect_eq(lg_gw_unescape("a%00", 4, out, 0), -1, "NUL");
    cr_expect_eq(lg_gw_unescape("a%0", 3, out, 0), -1, "a cut escape");
    cr_expect_eq(lg_gw_unescape("a%zz", 4, out, 0), -1);
    cr_expect_eq(lg_gw_unescape("s%09q", 5, out, 0), -1, "TAB in an FTP path");
    cr_expect_eq(lg_gw_unescape("s%09q", 5, out, 1), 3, "TAB in a Gopher search");
}

static char *render_list(const char *list, int mlsd)
{
    lg_gw_text_t t = { .max = 1 << 20 };
    lg_ftp_render_listing(&t, "/pub", 4, list, strlen(list), mlsd);
    return t.p;
}

Test(ftp, listings)
{
    char *p = render_list("type=file;size=12;modify=20240101000000; a <b>.txt\r\n"
                          "type=dir;modify=20240101000000; sub dir\r\n"
                          "type=cdir; .\r\ntype=pdir; ..\r\ntype=file;size=1; x/y\r\n", 1);
    cr_expect(strstr(p, "<a href=\"a%20%3Cb%3E.txt\">a &lt;b&gt;.txt</a>") != NULL, "%s", p);
    cr_expect(strstr(p, "<td align=\"right\">12</td>") != NULL);
    cr_expect(strstr(p, "<a href=\"sub%20dir/\">sub dir/</a>") != NULL);
    cr_expect(strstr(p, "x/y") == NULL, "a name with a slash is no entry");
    cr_expect(strstr(p, "<a href=\"../\">") != NULL);
    free(p);
    p = render_list("total 8\r\n"
                    "drwxr-xr-x   2 user group 4096 Jan  1 00:00 pub lic\r\n"
                    "-rw-r--r--   1 u g 12 Jan  1  2024 \"q\".txt\r\n"
                    "lrwxrwxrwx   1 u g 3 Jan  1 00:00 link -> target\r\n"
                    "01-31-24  10:00AM       <DIR>          dos dir\r\n", 0);
    cr_expect(strstr(p, "<a href=\"pub%20lic/\">pub lic/</a>") != NULL, "%s", p);
    cr_expect(strstr(p, "<a href=\"%22q%22.txt\">&quot;q&quot;.txt</a>") != NULL);
    cr_expect(strstr(p, "<a href=\"link\">link</a>") != NULL, "a link's name without its target");
    cr_expect(strstr(p, "<a href=\"dos%20dir/\">dos dir/</a>") != NULL);
    cr_expect(strstr(p, "<td colspan=\"3\">total 8</td>") != NULL, "an odd line as it is");
    free(p);
}

Test(gopher, menus)
{
    const char *m = "iHello <b>\tfake\t(NULL)\t0\r\n"
                    "0Read me\t/r e\thost.example\t70\r\n"
                    "1Evil\t/x\tevil\"><script>\t70\r\n"
                    "1Bad port\t/x\thost\t99999\r\n"
                    "1Six\t/6\t::1\t7070\r\n"
                    "hWeb\tURL:http://e.example/?a&b\thost\t70\r\n"
                    "hNot web\tURL:javascript:alert(1)\thost\t70\r\n"
                    ".\r\n"
                    "0After the end\t/z\thost\t70\r\n";
    lg_gw_text_t t = { .max = 1 << 20 };
    lg_gopher_render_menu(&t, "/", 1, m, strlen(m));
    const char *p = t.p;
    cr_expect(strstr(p, "<pre>Hello &lt;b&gt;</pre>") != NULL, "%s", p);
    cr_expect(strstr(p, "<a href=\"gopher://host.example:70/0/r%20e\">Read me</a> (text)") != NULL);
    cr_expect(strstr(p, "<script") == NULL && strstr(p, "evil") == NULL);
    cr_expect(strstr(p, "<pre>Evil</pre>") != NULL, "a hostile host: no link");
    cr_expect(strstr(p, "<pre>Bad port</pre>") != NULL);
    cr_expect(strstr(p, "gopher://[::1]:7070/1/6") != NULL);
    cr_expect(strstr(p, "<a href=\"http://e.example/?a&amp;b\">Web</a>") != NULL);
    cr_expect(strstr(p, "javascript") == NULL ||
              strstr(p, "href=\"javascript") == NULL, "no script link");
    cr_expect(strstr(p, "After the end") == NULL, "the menu ends at \".\"");
    lg_gw_text_free(&t);
}

Test(gopher, text_is_bounded)
{
    lg_gw_text_t t = { .max = 64 };
    for (int i = 0; i < 100; i++)
        lg_gw_text_str(&t, "0123456789");
    cr_expect(t.full);
    cr_expect(t.n < 64);
    lg_gw_text_free(&t);
}

Test(socks_udp, headers)
{
    static const struct { const char *in; size_t n; ssize_t hl; int family, frag; unsigned port; } t[] = {
        { "\0\0\0\x01\x7f\0\0\x01\x00\x35" "dns", 13, 10, AF_INET, 0, 53 },
        { "\0\0\x01\x01\x7f\0\0\x01\x00\x35", 10, 10, AF_INET, 1, 53 },
        { "\0\0\0\x04\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01\x1f\x90", 22, 22, AF_INET6, 0, 8080 },
        { "\0\0\0\x03\x04test\x00\x07" "x", 12, 11, AF_UNSPEC, 0, 7 },
        { "\0\0\0\x03\x00\x00\x07", 7, -1, 0, 0, 0 },           /* an empty name */
        { "\0\0\0\x03\x04te\0t\x00\x07", 11, -1, 0, 0, 0 },    /* a NUL in it */
        { "\0\0\0\x03\x09test\x00\x07", 11, -1, 0, 0, 0 },      /* longer than the datagram */
        { "\0\x01\0\x01\x7f\0\0\x01\x00\x35", 10, -1, 0, 0, 0 }, /* RSV not 0 */
        { "\0\0\0\x02\x7f\0\0\x01\x00\x35", 10, -1, 0, 0, 0 },   /* ATYP 2 */
        { "\0\0\0\x01\x7f\0\0", 7, -1, 0, 0, 0 },                  /* short */
    };
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        unsigned char *b = malloc(t[i].n);
        memcpy(b, t[i].in, t[i].n);
        struct sockaddr_storage dst;
        char name[256];
        unsigned port = 0;
        int frag = -1;
        ssize_t hl = lg_socks_udp_header(b, t[i].n, &frag, &dst, name, &port);
        cr_expect_eq(hl, t[i].hl, "%zu: %zd", i, hl);
        if (hl > 0) {
            cr_expect_eq(dst.ss_family, t[i].family, "%zu", i);
            cr_expect_eq(frag, t[i].frag, "%zu", i);
            cr_expect_eq(port, t[i].port, "%zu", i);
            if (t[i].family == AF_UNSPEC)
                cr_expect_str_eq(name, "test");
            if (t[i].family == AF_INET)
                cr_expect_eq(ntohs(((struct sockaddr_in *)&dst)->sin_port), t[i].port);
        }
        free(b);
    }
}
