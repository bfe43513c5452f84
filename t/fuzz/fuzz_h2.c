/*
 * libFuzzer harness for the HTTP/2 front end (src/pipeline/h2.c) through
 * libnghttp2's callbacks: the input is what a client sends after the
 * connection preface, on a socket pair, to a worker set up as legate's
 * (the real configuration loader, front ends, features and event loop).
 * Frames reach h2.c's callbacks (headers into requests, DATA into stream
 * ends, resets, floods), the requests pass the phases and the stages write
 * their answers through the stream ends back into frames.  Nothing may
 * crash, leak or trip a sanitizer; the connection must end when the
 * input does.
 *
 * Built by t/fuzz/run.sh from every file of src/ but main.c.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "pipeline/request.h"
#include "proc/proc.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static const char conf_text[] =
    "worker_processes = 1;\n"
    "error_log = \"stderr\";\n"
    "error_log_level = \"emerg\";\n"
    "http2_max_concurrent_streams = 8;\n"
    "http = {\n"
    "  access_log = \"off\";\n"
    "  servers = ( {\n"
    "    listen = ( { address = \"127.0.0.1:1\"; http2 = true; } );\n"
    "    routes = (\n"
    "      { prefix = \"/r\"; return = 302; location = \"/x\"; },\n"
    "      { prefix = \"/e\"; return = 404; },\n"
    "      { prefix = \"/\"; return = 200; body = \"hello\"; }\n"
    "    );\n"
    "  } );\n"
    "};\n";

static lg_conf_t *conf;

static void setup(void)
{
    char path[] = "/tmp/legate-fuzz-h2-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, conf_text, sizeof(conf_text) - 1) == (ssize_t)sizeof(conf_text) - 1);
    close(fd);
    char err[1024];
    conf = lg_conf_load(path, "/tmp", err, sizeof(err));
    unlink(path);
    if (conf == NULL) {
        fprintf(stderr, "fuzz_h2: %s\n", err);
        abort();
    }
    lg_log_set_level(LG_LOG_EMERG);
    memset(&lg_w, 0, sizeof(lg_w));
    lg_w.conf = conf;
    CHECK(lg_loop_init(&lg_w.loop) == 0);
    lg_features_setup();
    CHECK(lg_feature_init_all() == 0);
}

/* Read and drop what legate wrote, so it never waits on a full socket. */
static void drain(int fd)
{
    char sink[65536];
    while (read(fd, sink, sizeof(sink)) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (conf == NULL)
        setup();
    if (n > 60000)
        return 0;
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    CHECK(write(sv[1], preface, sizeof(preface) - 1) == (ssize_t)sizeof(preface) - 1);
    size_t off = 0;
    struct sockaddr_storage peer;
    memset(&peer, 0, sizeof(peer));
    peer.ss_family = AF_UNIX;
    lg_conn_t *c = lg_conn_new(sv[0], &conf->binds[0], &peer);
    CHECK(c != NULL);
    lg_conn_begin(c);
    for (int round = 0; round < 200 && lg_w.nconns > 0; round++) {
        if (off < n) {
            ssize_t w = write(sv[1], data + off, n - off);
            if (w > 0)
                off += (size_t)w;
            if (off == n)
                shutdown(sv[1], SHUT_WR);   /* the end of the input: the client is done */
        } else if (off == 0) {
            shutdown(sv[1], SHUT_WR);
            off = 1;
        }
        lg_loop_once(&lg_w.loop, 0);
        drain(sv[1]);
    }
    if (lg_w.nconns > 0)
        lg_conn_close(c, "fuzz input over");
    lg_loop_once(&lg_w.loop, 0);        /* deferred frees */
    close(sv[1]);
    return 0;
}
