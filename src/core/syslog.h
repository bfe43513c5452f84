/*
 * Syslog targets (syslog.c): "syslog:server=HOST[:PORT]|unix:PATH[,facility=F][,tag=T]",
 * RFC 5424 lines over a datagram socket, never blocking.
 */
#ifndef LEGATE_CORE_SYSLOG_H
#define LEGATE_CORE_SYSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct lg_syslog {
    struct sockaddr_storage ss;
    socklen_t len;
    int       fd;               /* -1 until opened */
    int       facility;         /* 0..23, default local7 */
    char      tag[48];          /* APP-NAME, default "legate" */
    uint64_t  dropped;          /* lines the socket could not take */
} lg_syslog_t;

static inline int lg_is_syslog(const char *target)
{
    return target && target[0] == 's' && __builtin_strncmp(target, "syslog:", 7) == 0;
}
/* Parse a target: 0, or -1 with a message in err. */
int  lg_syslog_parse(const char *spec, lg_syslog_t *out, char *err, size_t errlen);
/* The socket: 0, or -1 (errno). */
int  lg_syslog_open(lg_syslog_t *s);
/* One line at a severity (0 emerg .. 7 debug). */
void lg_syslog_send(lg_syslog_t *s, int severity, const char *msg, size_t n);

#endif
