/*
 * libFuzzer harness for the PROXY protocol reader (src/net/proxyproto.c),
 * v1 text and v2 binary: the input is what a client sends first on a
 * socket pair.  The reader must answer LG_OK, LG_AGAIN or LG_ERROR, never
 * read past what it peeked, never take a byte past the header (what follows
 * belongs to TLS or HTTP), and give an address of a family it knows.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -include config.h -Isrc -I. \
 *       src/net/proxyproto.c t/fuzz/fuzz_proxyproto.c -o fuzz_proxyproto
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/proxyproto.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 4096)
        return 0;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    CHECK(fcntl(sv[0], F_SETFL, O_NONBLOCK) == 0);
    if (n)
        CHECK(write(sv[1], data, n) == (ssize_t)n);
    struct sockaddr_storage src;
    memset(&src, 0, sizeof(src));
    src.ss_family = AF_UNIX;
    char why[128];
    why[0] = '\0';
    int rc = lg_proxyproto_read(sv[0], &src, why, sizeof(why));
    CHECK(rc == LG_OK || rc == LG_AGAIN || rc == LG_ERROR);
    if (rc == LG_OK) {
        CHECK(src.ss_family == AF_UNIX || src.ss_family == AF_INET || src.ss_family == AF_INET6);
        /* what is left is exactly what followed the header */
        char rest[4096];
        ssize_t left = recv(sv[0], rest, sizeof(rest), MSG_DONTWAIT);
        CHECK(left < 0 || (size_t)left <= n);
        if (left > 0)
            CHECK(memcmp(rest, data + (n - (size_t)left), (size_t)left) == 0);
    }
    CHECK(memchr(why, '\0', sizeof(why)) != NULL);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
