/*
 * Unit tests of cluster/redis.c against a scripted "Redis": a unix socket
 * this test listens on and answers by hand, byte by byte if it likes.
 * Replies split anywhere answer the waiting commands in order; a command
 * past its budget gets NULL and its late reply is dropped; bytes that are
 * not RESP drop the connection (every waiting callback gets NULL) and it
 * is made again; a refused AUTH keeps it from READY.  Every wait is a
 * bounded run of the real event loop.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cluster/redis.h"
#include "core/event.h"

static lg_loop_t loop;
static lg_cluster_conf_t cf;
static lg_redis_t r;
static int lfd = -1, peer = -1;
static char path[108];

typedef struct got {
    int         calls;
    int         null;           /* calls with no reply */
    long long   integer;
    char        str[64];
} got_t;

static void record(void *arg, redisReply *rep)
{
    got_t *g = arg;
    g->calls++;
    if (rep == NULL) {
        g->null++;
        return;
    }
    g->integer = rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1;
    snprintf(g->str, sizeof(g->str), "%s", rep->str ? rep->str : "");
}

/* Run the loop until cond holds, at most ms. */
static int spin(int (*cond)(void), int ms)
{
    lg_loop_update_time(&loop);
    lg_msec_t end = loop.now + ms;
    while (!cond()) {
        if (loop.now >= end)
            return 0;
        lg_loop_once(&loop, 5);
    }
    return 1;
}

static int accepted(void)
{
    if (peer < 0)
        peer = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    return peer >= 0;
}

static int ready(void) { return lg_redis_ready(&r); }
static int idle(void) { return r.st == LG_RS_IDLE; }

/* What legate wrote to the peer so far (after running the loop a while). */
static void expect_written(const char *want)
{
    char buf[512];
    size_t got = 0, n = strlen(want);
    lg_loop_update_time(&loop);
    lg_msec_t end = loop.now + 2000;
    while (got < n && loop.now < end) {
        lg_loop_once(&loop, 5);
        ssize_t k = recv(peer, buf + got, sizeof(buf) - 1 - got, MSG_DONTWAIT);
        if (k > 0)
            got += (size_t)k;
    }
    buf[got] = '\0';
    cr_assert_str_eq(buf, want);
}

static void say(const char *bytes)
{
    cr_assert_eq(send(peer, bytes, strlen(bytes), MSG_NOSIGNAL), (ssize_t)strlen(bytes));
}

static void setup(void)
{
    cr_assert_eq(lg_loop_init(&loop), 0);
    snprintf(path, sizeof(path), "/tmp/legate-test-redis-%d.sock", (int)getpid());
    unlink(path);
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    cr_assert(lfd >= 0);
    struct sockaddr_un un = { .sun_family = AF_UNIX };
    strcpy(un.sun_path, path);
    cr_assert_eq(bind(lfd, (struct sockaddr *)&un, sizeof(un)), 0);
    cr_assert_eq(listen(lfd, 8), 0);
    memset(&cf, 0, sizeof(cf));
    cf.redis = path;
    cf.unix_path = path;
    cf.redis_timeout = 200;
    cf.redis_connect_timeout = 1000;
    memset(&r, 0, sizeof(r));
    peer = -1;
}

static void teardown(void)
{
    lg_redis_stop(&r);
    if (peer >= 0)
        close(peer);
    close(lfd);
    unlink(path);
    lg_loop_destroy(&loop);
}

/* Connect and answer PING: READY. */
static void connect_ready(void)
{
    lg_redis_start(&r, &cf, &loop, "test");
    cr_assert(spin(accepted, 2000), "legate connected");
    expect_written("*1\r\n$4\r\nPING\r\n");
    cr_assert_eq(r.st, LG_RS_CONNECTING);
    say("+PO");
    lg_loop_once(&loop, 5);
    cr_assert_eq(r.st, LG_RS_CONNECTING, "half a reply is no answer");
    say("NG\r\n");
    cr_assert(spin(ready, 2000), "READY after PONG");
}

static lg_rcmd_t *get(const char *key, got_t *g, lg_msec_t budget)
{
    const char *v[2] = { "GET", key };
    size_t l[2] = { 3, strlen(key) };
    return lg_redis_command(&r, 2, v, l, budget, record, g);
}

Test(redis, replies_in_pieces_answer_in_order, .init = setup, .fini = teardown)
{
    connect_ready();
    got_t a = { 0 }, b = { 0 }, c = { 0 };
    cr_assert_not_null(get("a", &a, 0));
    cr_assert_not_null(get("b", &b, 0));
    cr_assert_not_null(get("c", &c, 0));
    expect_written("*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\n"
                   "*2\r\n$3\r\nGET\r\n$1\r\nc\r\n");
    /* three replies, one byte at a time */
    const char *replies = ":42\r\n$3\r\nfoo\r\n-ERR nope\r\n";
    for (const char *p = replies; *p; p++) {
        char one[2] = { *p, 0 };
        say(one);
        lg_loop_once(&loop, 1);
    }
    lg_loop_once(&loop, 5);
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(a.integer, 42);
    cr_assert_eq(b.calls, 1);
    cr_assert_str_eq(b.str, "foo");
    cr_assert_eq(c.calls, 1);
    cr_assert_str_eq(c.str, "ERR nope");
    cr_assert_eq(r.nwaiting, 0);
    cr_assert(lg_redis_ready(&r));
}

static got_t *late;
static int late_answered(void) { return late->calls > 0; }

Test(redis, budget_then_late_reply_is_dropped, .init = setup, .fini = teardown)
{
    connect_ready();
    got_t a = { 0 }, b = { 0 };
    cr_assert_not_null(get("slow", &a, 50));
    late = &a;
    cr_assert(spin(late_answered, 2000), "the budget ran out");
    cr_assert_eq(a.null, 1, "NULL past the budget");
    cr_assert_not_null(get("next", &b, 0));
    say("$4\r\nlate\r\n$4\r\nnext\r\n");   /* the late reply, then the next one's */
    late = &b;
    cr_assert(spin(late_answered, 2000));
    cr_assert_eq(a.calls, 1, "the late reply went nowhere");
    cr_assert_str_eq(b.str, "next", "the next command got its own reply");
}

Test(redis, not_resp_drops_and_reconnects, .init = setup, .fini = teardown)
{
    connect_ready();
    got_t a = { 0 }, b = { 0 };
    cr_assert_not_null(get("a", &a, 1000));
    cr_assert_not_null(get("b", &b, 1000));
    say("!garbage\r\n");
    cr_assert(spin(idle, 2000), "dropped");
    cr_assert_eq(a.null + b.null, 2, "every waiting callback got NULL");
    cr_assert_null(get("c", &a, 0), "nothing goes out without a connection");
    close(peer);
    peer = -1;
    cr_assert(spin(accepted, 3000), "made again after the backoff");
    expect_written("*1\r\n$4\r\nPING\r\n");
    say("+PONG\r\n");
    cr_assert(spin(ready, 2000));
}

Test(redis, refused_auth_is_not_ready, .init = setup, .fini = teardown)
{
    cf.redis_password = "pw";
    lg_redis_start(&r, &cf, &loop, "test");
    cr_assert(spin(accepted, 2000));
    expect_written("*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n");
    say("-WRONGPASS invalid username-password pair\r\n");
    cr_assert(spin(idle, 2000), "dropped after a refused AUTH");
    cr_assert_eq(r.nwaiting, 0);
}

static int closed_by_legate(void)
{
    char c;
    return recv(peer, &c, 1, MSG_DONTWAIT) == 0;
}

Test(redis, silence_is_bounded_by_connect_timeout, .init = setup, .fini = teardown)
{
    cf.redis_connect_timeout = 100;
    lg_redis_start(&r, &cf, &loop, "test");
    cr_assert(spin(accepted, 2000));
    expect_written("*1\r\n$4\r\nPING\r\n");
    /* never answer: dropped within the connect budget */
    cr_assert(spin(closed_by_legate, 1000), "closed within redis_connect_timeout");
    cr_assert_eq(r.st, LG_RS_IDLE);
}
