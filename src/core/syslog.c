/*
 * Logs to syslog (RFC 5424 over a datagram socket), as nginx's "syslog:"
 * targets: "syslog:server=127.0.0.1:514,facility=local7,tag=legate" or
 * "syslog:server=unix:/dev/log".  One datagram a line, never blocking: a
 * line the socket cannot take now is dropped and counted, so a slow or
 * absent collector never holds a request up.
 */
#include "core/syslog.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char *const facilities[] = {
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "audit", "alert", "clock",
    "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
};

int lg_syslog_parse(const char *spec, lg_syslog_t *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->fd = -1;
    out->facility = 23;         /* local7, as nginx */
    snprintf(out->tag, sizeof(out->tag), "legate");
    if (strncmp(spec, "syslog:", 7) != 0) {
        snprintf(err, errlen, "not a syslog target");
        return -1;
    }
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", spec + 7);
    int have_server = 0;
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "\"%s\" in a syslog target is not name=value", kv);
            return -1;
        }
        *eq = 0;
        const char *v = eq + 1;
        if (strcmp(kv, "server") == 0) {
            have_server = 1;
            if (strncmp(v, "unix:", 5) == 0) {
                struct sockaddr_un *un = (struct sockaddr_un *)&out->ss;
                if (strlen(v + 5) >= sizeof(un->sun_path)) {
                    snprintf(err, errlen, "syslog socket path too long");
                    return -1;
                }
                un->sun_family = AF_UNIX;
                strcpy(un->sun_path, v + 5);
                out->len = sizeof(*un);
                continue;
            }
            char host[256];
            snprintf(host, sizeof(host), "%s", v);
            int port = 514;
            char *colon = strrchr(host, ':');
            if (colon && !strchr(colon, ']')) {
                port = atoi(colon + 1);
                *colon = 0;
            }
            char *h = host;
            if (h[0] == '[') {
                h++;
                h[strcspn(h, "]")] = 0;
            }
            struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
            if (port < 1 || port > 65535) {
                snprintf(err, errlen, "bad port in syslog server \"%s\"", v);
                return -1;
            }
            if (inet_pton(AF_INET, h, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t)port);
                out->len = sizeof(*in4);
            } else if (inet_pton(AF_INET6, h, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)port);
                out->len = sizeof(*in6);
            } else {
                snprintf(err, errlen, "syslog server \"%s\" must be an IP address or unix:PATH", v);
                return -1;
            }
        } else if (strcmp(kv, "facility") == 0) {
            int f = -1;
            for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
                if (strcmp(v, facilities[i]) == 0)
                    f = (int)i;
            if (f < 0) {
                snprintf(err, errlen, "unknown syslog facility \"%s\"", v);
                return -1;
            }
            out->facility = f;
        } else if (strcmp(kv, "tag") == 0) {
            if (*v == 0 || strlen(v) >= sizeof(out->tag)) {
                snprintf(err, errlen, "syslog tag must be 1 to %zu characters", sizeof(out->tag) - 1);
                return -1;
            }
            snprintf(out->tag, sizeof(out->tag), "%s", v);
        } else {
            snprintf(err, errlen, "unknown syslog parameter \"%s\" (server, facility, tag)", kv);
            return -1;
        }
    }
    if (!have_server) {
        snprintf(err, errlen, "a syslog target needs server=ADDRESS[:PORT] or server=unix:PATH");
        return -1;
    }
    return 0;
}

int lg_syslog_open(lg_syslog_t *s)
{
    int fd = socket(s->ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    /* connected, so each line is one send(2), and a collector that is not
     * there (ECONNREFUSED) is seen rather than written into the void */
    if (connect(fd, (struct sockaddr *)&s->ss, s->len) < 0 && errno != ENOENT &&
        errno != ECONNREFUSED) {
        close(fd);
        return -1;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = fd;
    return 0;
}

void lg_syslog_send(lg_syslog_t *s, int severity, const char *msg, size_t n)
{
    if (s->fd < 0)
        return;
    char head[200];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char host[64];
    if (gethostname(host, sizeof(host)) != 0)
        snprintf(host, sizeof(host), "-");
    host[sizeof(host) - 1] = 0;
    /* RFC 5424: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG */
    int hl = snprintf(head, sizeof(head), "<%d>1 %04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s %d - - ",
                      s->facility * 8 + severity, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, host, s->tag,
                      (int)getpid());
    while (n && (msg[n - 1] == '\n'))
        n--;
    struct iovec iov[2] = { { head, (size_t)hl }, { (void *)msg, n } };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    if (sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
        s->dropped++;
}
