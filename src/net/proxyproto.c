#include "net/proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const unsigned char v2sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51,
                                         0x55, 0x49, 0x54, 0x0a };

static int consume(int fd, size_t n)
{
    char sink[536];
    while (n) {
        ssize_t r = recv(fd, sink, n < sizeof(sink) ? n : sizeof(sink), 0);
        if (r <= 0)
            return -1;
        n -= (size_t)r;
    }
    return 0;
}

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n" (at most 107 bytes) */
static int v1(int fd, const char *b, size_t n, struct sockaddr_storage *src, char *why, size_t wl)
{
    const char *crlf = memmem(b, n, "\r\n", 2);
    if (crlf == NULL) {
        if (n >= 107) {
            snprintf(why, wl, "PROXY v1 line too long");
            return -1;
        }
        return 0;
    }
    char line[108];
    size_t len = (size_t)(crlf - b);
    if (len >= sizeof(line)) {          /* the CRLF came, but past the longest line */
        snprintf(why, wl, "PROXY v1 line too long");
        return -1;
    }
    memcpy(line, b, len);
    line[len] = '\0';
    char proto[8], sa[64], da[64];
    unsigned sp, dp;
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0)
        return consume(fd, len + 2) < 0 ? -1 : 1;
    if (sscanf(line, "PROXY %7s %63s %63s %u %u", proto, sa, da, &sp, &dp) != 5 || sp > 65535) {
        snprintf(why, wl, "bad PROXY v1 line");
        return -1;
    }
    memset(src, 0, sizeof(*src));
    if (strcmp(proto, "TCP4") == 0) {
        struct sockaddr_in *a = (struct sockaddr_in *)src;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)sp);
        if (inet_pton(AF_INET, sa, &a->sin_addr) != 1) {
            snprintf(why, wl, "bad PROXY v1 address");
            return -1;
        }
    } else if (strcmp(proto, "TCP6") == 0) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)src;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)sp);
        if (inet_pton(AF_INET6, sa, &a->sin6_addr) != 1) {
            snprintf(why, wl, "bad PROXY v1 address");
            return -1;
        }
    } else {
        snprintf(why, wl, "bad PROXY v1 protocol");
        return -1;
    }
    return consume(fd, len + 2) < 0 ? -1 : 1;
}

static int v2(int fd, const unsigned char *b, size_t n, struct sockaddr_storage *src, char *why,
              size_t wl)
{
    if (n < 16)
        return 0;
    size_t len = (size_t)b[14] << 8 | b[15];
    if ((b[12] & 0xf0) != 0x20) {
        snprintf(why, wl, "bad PROXY v2 version");
        return -1;
    }
    if (n < 16 + len)
        return len > 520 ? -1 : 0;
    int cmd = b[12] & 0x0f, fam = b[13];
    if (cmd == 0x1) {                           /* PROXY: take the source */
        if (fam == 0x11 && len >= 12) {         /* TCP over IPv4 */
            memset(src, 0, sizeof(*src));
            struct sockaddr_in *a = (struct sockaddr_in *)src;
            a->sin_family = AF_INET;
            memcpy(&a->sin_addr, b + 16, 4);
            memcpy(&a->sin_port, b + 24, 2);
        } else if (fam == 0x21 && len >= 36) {  /* TCP over IPv6 */
            memset(src, 0, sizeof(*src));
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)src;
            a->sin6_family = AF_INET6;
            memcpy(&a->sin6_addr, b + 16, 16);
            memcpy(&a->sin6_port, b + 48, 2);
        } else if (fam != 0x00) {               /* UNSPEC: the connection's own, as LOCAL */
            snprintf(why, wl, "unsupported PROXY v2 address family");
            return -1;
        }
    } else if (cmd != 0x0) {                    /* LOCAL keeps the connection's own */
        snprintf(why, wl, "bad PROXY v2 command");
        return -1;
    }
    return consume(fd, 16 + len) < 0 ? -1 : 1;
}

/* 1 read, 0 not all here yet, -1 invalid. */
static int read_header(int fd, struct sockaddr_storage *src, char *why, size_t whylen)
{
    unsigned char b[536];
    ssize_t n = recv(fd, b, sizeof(b), MSG_PEEK);
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    if (n == 0) {
        snprintf(why, whylen, "closed before the PROXY header");
        return -1;
    }
    if ((size_t)n >= 12 && memcmp(b, v2sig, 12) == 0)
        return v2(fd, b, (size_t)n, src, why, whylen);
    if ((size_t)n < 6)
        return memcmp(b, "PROXY ", (size_t)n) == 0 || memcmp(b, v2sig, (size_t)n) == 0 ? 0 : -1;
    if (memcmp(b, "PROXY ", 6) == 0)
        return v1(fd, (const char *)b, (size_t)n, src, why, whylen);
    snprintf(why, whylen, "no PROXY header");
    return -1;
}

int lg_proxyproto_read(int fd, struct sockaddr_storage *src, char *why, size_t whylen)
{
    int rc = read_header(fd, src, why, whylen);
    return rc > 0 ? LG_OK : rc == 0 ? LG_AGAIN : LG_ERROR;
}
