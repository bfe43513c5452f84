/*
 * Unit tests of net/steer.c: the connection ID mark and its check byte,
 * and -- where the kernel lets this process load BPF (root) -- the program
 * itself, on four real SO_REUSEPORT UDP sockets of two banks: marked short
 * and long header datagrams reach the socket their id names, unmarked ones
 * (a client's first Initial) reach the current bank only, and an id whose
 * socket closed falls back to the current bank.
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/steer.h"

Test(steer, mark_and_read_back)
{
    uint8_t cid[18];
    for (unsigned id = 0; id < LG_STEER_IDS; id += 97) {
        memset(cid, 0xee, sizeof(cid));
        lg_steer_cid_mark(cid, id);
        cr_assert_eq(lg_steer_cid_id(cid, sizeof(cid)), (int)id);
        cr_assert_eq(cid[3], 0xee, "only the first bytes are the mark");
    }
    lg_steer_cid_mark(cid, 513);
    cid[2] ^= 1;
    cr_assert_eq(lg_steer_cid_id(cid, sizeof(cid)), -1, "a wrong check byte is no id");
    cr_assert_eq(lg_steer_cid_id(cid, 2), -1, "too short");
    /* an id past the banks, with a right check byte */
    uint8_t big[3] = { 0xff, 0xff, 0xff ^ 0xff ^ 0x5a };
    cr_assert_eq(lg_steer_cid_id(big, 3), -1);
}

static int bound(int port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0), one = 1;
    cr_assert(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Which of socks[0..n) got the datagram (polled, bounded), or -1. */
static int receiver(const int *socks, int n)
{
    struct pollfd p[8];
    for (int i = 0; i < n; i++)
        p[i] = (struct pollfd){ .fd = socks[i], .events = POLLIN };
    if (poll(p, (nfds_t)n, 2000) <= 0)
        return -1;
    int who = -1;
    for (int i = 0; i < n; i++) {
        char b[256];
        if (socks[i] >= 0 && recv(socks[i], b, sizeof(b), 0) > 0)
            who = i;
    }
    return who;
}

Test(steer, the_kernel_steers_by_the_mark)
{
    char why[512];
    int map = lg_steer_new(why, sizeof(why));
    if (map < 0)
        cr_skip_test("no BPF here: %s", why);
    /* a free port: bind one, then the group beside it */
    int probe = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof(a);
    cr_assert(bind(probe, (struct sockaddr *)&a, sizeof(a)) == 0);
    getsockname(probe, (struct sockaddr *)&a, &al);
    close(probe);
    int port = ntohs(a.sin_port);
    int s[4];
    unsigned ids[4] = { 0, 1, 512, 513 };   /* bank 0 (old), bank 1 (current) */
    for (int i = 0; i < 4; i++) {
        s[i] = bound(port);
        cr_assert(s[i] >= 0, "bind %d", port);
        cr_assert_eq(lg_steer_add(map, ids[i], s[i]), 0, "add: %s", strerror(errno));
    }
    cr_assert_eq(lg_steer_attach(map, s[0], 512, 2, why, sizeof(why)), 0, "%s", why);

    int c = socket(AF_INET, SOCK_DGRAM, 0);
    uint8_t pkt[64];
    for (int i = 0; i < 4; i++) {
        memset(pkt, 0, sizeof(pkt));
        pkt[0] = 0x40;                      /* short header: DCID at 1 */
        lg_steer_cid_mark(pkt + 1, ids[i]);
        sendto(c, pkt, sizeof(pkt), 0, (struct sockaddr *)&a, sizeof(a));
        cr_assert_eq(receiver(s, 4), i, "short header, id %u", ids[i]);
        memset(pkt, 0, sizeof(pkt));
        pkt[0] = 0xc0;                      /* long header: version, DCID length, DCID */
        pkt[5] = 18;
        lg_steer_cid_mark(pkt + 6, ids[i]);
        sendto(c, pkt, sizeof(pkt), 0, (struct sockaddr *)&a, sizeof(a));
        cr_assert_eq(receiver(s, 4), i, "long header, id %u", ids[i]);
    }
    /* unmarked, from many source ports: the current bank only */
    for (int k = 0; k < 24; k++) {
        int c2 = socket(AF_INET, SOCK_DGRAM, 0);
        memset(pkt, 0x11, sizeof(pkt));
        pkt[0] = 0xc0;
        sendto(c2, pkt, sizeof(pkt), 0, (struct sockaddr *)&a, sizeof(a));
        int r = receiver(s, 4);
        cr_assert(r == 2 || r == 3, "an unmarked datagram went to %d", r);
        close(c2);
    }
    /* an old id whose socket closed: the current bank */
    close(s[0]);
    s[0] = -1;
    memset(pkt, 0, sizeof(pkt));
    pkt[0] = 0x40;
    lg_steer_cid_mark(pkt + 1, 0);
    sendto(c, pkt, sizeof(pkt), 0, (struct sockaddr *)&a, sizeof(a));
    int r = receiver(s + 1, 3);
    cr_assert(r == 1 || r == 2, "a dead id went to %d", r + 1);
    close(c);
    for (int i = 1; i < 4; i++)
        close(s[i]);
    close(map);
}
