/*
 * The forward proxy's gateways to protocols that are not HTTP, as Squid
 * has them: ftp:// (ftp.c) and gopher:// (gopher.c) URLs asked of the
 * HTTP proxy are fetched with their own protocol and answered as HTTP.
 *
 *   gateway.c   what both share: the destination connection(s) driven by
 *               the worker's loop, the answer streamed to the client with
 *               backpressure (Content-Length, chunked, or the close), and a
 *               transfer cut short signalled as such, never as complete
 *   gw_parse.c  the parsers of bytes from those servers (FTP replies,
 *               passive-mode answers, listings; Gopher menus) and the HTML
 *               they become, and the SOCKS5 UDP header (socks.c): pure
 *               functions, unit-tested and fuzzed (t/unit/test_ftp.c,
 *               t/fuzz/fuzz_ftp.c)
 */
#ifndef LEGATE_FORWARD_GATEWAY_H
#define LEGATE_FORWARD_GATEWAY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* ---- gw_parse.c: parsers (no allocation but the growing text below) ---- */

/*
 * One complete FTP reply at buf (RFC 959 4.2): "ddd text" or the
 * multi-line "ddd-text ... ddd text", lines ending in CRLF or LF.
 * Returns the bytes it takes (> 0) with *code set, 0 when more is needed,
 * -1 when the bytes are no FTP reply (a bad code, a NUL, a line over 4 KiB).
 */
#define LG_FTP_LINE_MAX 4096
ssize_t lg_ftp_reply_parse(const char *buf, size_t len, int *code);
/* The port of a 229 reply "(|||port|)" (RFC 2428), or -1. */
int     lg_ftp_epsv_port(const char *reply, size_t n);
/* The port of a 227 reply "(h1,h2,h3,h4,p1,p2)", or -1.  The address in
 * it is not used: the data connection goes to the control connection's
 * server (a reply naming another host is how FTP bounce attacks work). */
int     lg_ftp_pasv_port(const char *reply, size_t n);
/* The size in a 213 reply to SIZE, or -1. */
int64_t lg_ftp_size(const char *reply, size_t n);

/* A growing text, bounded: past max it stops growing and says so. */
typedef struct lg_gw_text {
    char   *p;          /* owned (malloc) */
    size_t  n, cap, max;
    int     full;       /* something did not fit */
} lg_gw_text_t;

void lg_gw_text_add(lg_gw_text_t *t, const char *s, size_t n);
void lg_gw_text_str(lg_gw_text_t *t, const char *s);
/* s as HTML text or attribute value: & < > " ' escaped, control bytes dropped */
void lg_gw_text_html(lg_gw_text_t *t, const char *s, size_t n);
/* s percent-encoded for a URL path (unreserved and "/" as they are) */
void lg_gw_text_url(lg_gw_text_t *t, const char *s, size_t n);
void lg_gw_text_free(lg_gw_text_t *t);

/* Percent-decode s into out (room n + 1): its length, or -1 for a bad
 * escape or a byte a command line cannot carry (NUL, CR, LF; and TAB
 * unless tab_ok: it separates a Gopher selector from its query). */
ssize_t lg_gw_unescape(const char *s, size_t n, char *out, int tab_ok);

/* An FTP directory listing (MLSD facts, or LIST lines in the Unix or
 * DOS style, anything else shown as it is) as an HTML page of links;
 * path: the decoded directory, shown as the title. */
void lg_ftp_render_listing(lg_gw_text_t *t, const char *path, size_t pn,
                           const char *list, size_t n, int mlsd);

/* A Gopher menu (RFC 1436: type, display, TAB selector, TAB host, TAB
 * port, lines up to a "." line) as an HTML page; every field escaped,
 * links only to well-formed hosts and ports. */
void lg_gopher_render_menu(lg_gw_text_t *t, const char *title, size_t tn,
                           const char *menu, size_t n);

/* A SOCKS5 UDP request header (RFC 1928 section 7: RSV RSV FRAG ATYP
 * DST.ADDR DST.PORT) at p, for socks.c: its length, with *frag, *port
 * and either *dst (an IPv4 or IPv6 destination, port set) or name (a
 * domain name, NUL-terminated; dst->ss_family AF_UNSPEC); -1 malformed
 * (reserved bytes not 0, an unknown ATYP, an empty name or one with a NUL,
 * too short). */
ssize_t lg_socks_udp_header(const unsigned char *p, size_t n, int *frag,
                            struct sockaddr_storage *dst, char name[256], unsigned *port);

/* ---- ftp.c, gopher.c: the gateways (forward.c hands requests to them) ---- */

struct lg_req;
/* The destination's address is resolved and allowed: fetch and answer. */
void lg_ftp_start(struct lg_req *r, const struct sockaddr_storage *ss);
void lg_gopher_start(struct lg_req *r, const struct sockaddr_storage *ss);

#endif
