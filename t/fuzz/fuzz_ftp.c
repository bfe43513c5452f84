/*
 * libFuzzer harness for src/forward/gw_parse.c: what FTP and Gopher
 * servers send the gateways, and SOCKS5 UDP headers from clients.  The
 * first byte chooses the parser (mod 9),
 * the rest is the server's bytes, on an exact-size heap copy so ASan sees
 * any read past the end.
 *
 *   0 FTP replies, one after another     4 an MLSD listing as HTML
 *   1 the port of an EPSV reply          5 a LIST listing as HTML
 *   2 the port of a PASV reply           6 a Gopher menu as HTML
 *   3 the size of a SIZE reply           7 percent-decoding a path
 *   8 a SOCKS5 UDP datagram's header
 *
 * Invariants checked (abort() when broken): a reply is taken whole or not
 * at all, never more than was given, and with a code from 100 to 599;
 * ports are 1..65535; no page holds a '<' the renderer did not write
 * itself (every tag it writes is one of a known few) and no raw '"'
 * inside an attribute; decoding never grows and never lets CR, LF or NUL
 * through; a UDP header is never longer than the datagram, its name a
 * string of at most 255 bytes.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       src/forward/gw_parse.c t/fuzz/fuzz_ftp.c -o fuzz_ftp
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "forward/gateway.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

/* Every '<' starts a tag the renderers write; attributes hold no '<', '>'
 * or stray quote (an escaped value cannot close its attribute). */
static void check_page(const char *p, size_t n)
{
    static const char *const tags[] = {
        "<!DOCTYPE html>", "<html>", "</html>", "<head>", "</head>", "<meta charset=\"utf-8\">",
        "<title>", "</title>", "<body>", "</body>", "<h1>", "</h1>", "<table>", "</table>",
        "<tr>", "</tr>", "<td>", "</td>", "<td colspan=\"3\">", "<td align=\"right\">",
        "<pre>", "</pre>", "<pre class=\"error\">", "</a>", "<hr>", "<address>", "</address>",
    };
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '<')
            continue;
        int known = 0;
        for (size_t k = 0; k < sizeof(tags) / sizeof(tags[0]) && !known; k++) {
            size_t tl = strlen(tags[k]);
            known = i + tl <= n && memcmp(p + i, tags[k], tl) == 0;
        }
        if (!known) {
            /* <a href="...">: the value up to its closing quote has no quote,
             * no angle bracket */
            CHECK(i + 9 <= n && memcmp(p + i, "<a href=\"", 9) == 0);
            size_t j = i + 9;
            while (j < n && p[j] != '"') {
                CHECK(p[j] != '<' && p[j] != '>' && p[j] != '\'');
                j++;
            }
            CHECK(j + 1 < n && p[j + 1] == '>');
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 1 || n > 65536)
        return 0;
    int mode = data[0] % 9;
    size_t len = n - 1;
    char *b = malloc(len ? len : 1);
    CHECK(b != NULL);
    memcpy(b, data + 1, len);
    switch (mode) {
    case 0: {
        size_t off = 0;
        for (int k = 0; k < 1000 && off < len; k++) {
            int code = 0;
            ssize_t t = lg_ftp_reply_parse(b + off, len - off, &code);
            if (t <= 0)
                break;
            CHECK((size_t)t <= len - off);
            CHECK(code >= 100 && code <= 599);
            off += (size_t)t;
        }
        break;
    }
    case 1: {
        int p = lg_ftp_epsv_port(b, len);
        CHECK(p == -1 || (p >= 1 && p <= 65535));
        break;
    }
    case 2: {
        int p = lg_ftp_pasv_port(b, len);
        CHECK(p == -1 || (p >= 1 && p <= 65535));
        break;
    }
    case 3:
        CHECK(lg_ftp_size(b, len) >= -1);
        break;
    case 4:
    case 5:
    case 6: {
        lg_gw_text_t t = { .max = 1 << 22 };
        if (mode == 6)
            lg_gopher_render_menu(&t, b, len < 64 ? len : 64, b, len);
        else
            lg_ftp_render_listing(&t, b, len < 64 ? len : 64, b, len, mode == 4);
        if (!t.full)
            check_page(t.p, t.n);
        lg_gw_text_free(&t);
        break;
    }
    case 7: {
        char *out = malloc(len + 1);
        CHECK(out != NULL);
        ssize_t k = lg_gw_unescape(b, len, out, 1);
        CHECK(k >= -1 && k <= (ssize_t)len);
        for (ssize_t i = 0; i < k; i++)
            CHECK(out[i] != '\r' && out[i] != '\n' && out[i] != '\0');
        free(out);
        break;
    }
    case 8: {
        struct sockaddr_storage dst;
        char name[256];
        unsigned port = 0;
        int frag = 0;
        ssize_t hl = lg_socks_udp_header((const unsigned char *)b, len, &frag, &dst, name, &port);
        CHECK(hl == -1 || (hl >= 7 && (size_t)hl <= len));
        if (hl > 0) {
            CHECK(port <= 65535 && frag >= 0 && frag <= 255);
            CHECK(dst.ss_family == AF_INET || dst.ss_family == AF_INET6 ||
                  (dst.ss_family == AF_UNSPEC && strlen(name) >= 1 && strlen(name) <= 255));
        }
        break;
    }
    }
    free(b);
    return 0;
}
