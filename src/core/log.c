#include "core/log.h"

#include "core/syslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
    int            fd;          /* -1: stderr only */
    char          *path;        /* owned (strdup) */
    lg_log_level_t level;
    int            also_stderr;
    int            slot;
    lg_syslog_t    sys;         /* error_log = "syslog:...": lines go there instead */
    int            use_sys;
} L = { -1, NULL, LG_LOG_NOTICE, 1, 0, { .fd = -1 }, 0 };

static const char *const level_names[] = {
    "debug", "info", "notice", "warn", "error", "crit", "alert", "emerg",
};

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    return fd;
}

int lg_log_open(const char *path, lg_log_level_t level, int also_stderr)
{
    L.level = level;
    L.also_stderr = also_stderr;
    if (path == NULL || strcmp(path, "stderr") == 0) {
        if (L.fd >= 0)
            close(L.fd);
        L.fd = -1;
        free(L.path);
        L.path = NULL;
        L.also_stderr = 1;
        return 0;
    }
    if (lg_is_syslog(path)) {
        char err[256];
        lg_syslog_t sys;
        if (lg_syslog_parse(path, &sys, err, sizeof(err)) < 0 || lg_syslog_open(&sys) < 0)
            return -1;
        if (L.use_sys && L.sys.fd >= 0)
            close(L.sys.fd);
        L.sys = sys;
        L.use_sys = 1;
        if (L.fd >= 0)
            close(L.fd);
        L.fd = -1;
        L.also_stderr = also_stderr;
        free(L.path);
        L.path = NULL;          /* nothing to reopen */
        return 0;
    }
    int fd = open_log(path);
    if (fd < 0)
        return -1;
    if (L.fd >= 0)
        close(L.fd);
    L.fd = fd;
    L.use_sys = 0;
    free(L.path);
    L.path = strdup(path);
    return 0;
}

int lg_log_reopen(void)
{
    if (L.path == NULL)
        return 0;
    int fd = open_log(L.path);
    if (fd < 0) {
        lg_log_errno(LG_LOG_ALERT, errno, "cannot reopen error log \"%s\"", L.path);
        return -1;
    }
    /* dup2 keeps the descriptor number, which children may share */
    if (L.fd >= 0) {
        dup2(fd, L.fd);
        close(fd);
    } else {
        L.fd = fd;
    }
    return 0;
}

void lg_log_set_worker(int slot) { L.slot = slot; }
void lg_log_set_level(lg_log_level_t level) { L.level = level; }
int  lg_log_enabled(lg_log_level_t level) { return level >= L.level; }
int  lg_log_fd(void) { return L.fd; }

static void vlog(lg_log_level_t level, int err, const char *fmt, va_list ap)
{
    if (level < L.level)
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d/%02d/%02d %02d:%02d:%02d [%s] %d#%d: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                     tm.tm_min, tm.tm_sec, level_names[level], (int)getpid(), L.slot);
    n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    if ((size_t)n >= sizeof(line) - 64)
        n = (int)sizeof(line) - 64;
    if (err)
        n += snprintf(line + n, sizeof(line) - (size_t)n, " (%d: %s)", err, strerror(err));
    line[n++] = '\n';
    if (L.use_sys) {
        /* the syslog line carries its own time and pid: the message only */
        const char *msg = strchr(line, ':');
        msg = msg ? strchr(msg + 1, ':') : NULL;
        msg = msg ? strchr(msg + 1, ':') : NULL;    /* past HH:MM:SS */
        msg = msg ? strstr(msg, ": ") : NULL;       /* past "pid#slot" */
        static const int sev[] = { 7, 6, 5, 4, 3, 2, 1, 0 };
        const char *m = msg ? msg + 2 : line;
        char tagged[2100];
        int k = snprintf(tagged, sizeof(tagged), "[%s] %.*s", level_names[level],
                         (int)(line + n - m), m);
        lg_syslog_send(&L.sys, sev[level], tagged, k > 0 ? (size_t)k : 0);
        if (L.also_stderr) {
            ssize_t w = write(STDERR_FILENO, line, (size_t)n);
            (void)w;
        }
        return;
    }
    if (L.fd >= 0) {
        ssize_t w = write(L.fd, line, (size_t)n);
        (void)w;
    }
    if (L.also_stderr || L.fd < 0) {
        ssize_t w = write(STDERR_FILENO, line, (size_t)n);
        (void)w;
    }
}

void lg_log(lg_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, 0, fmt, ap);
    va_end(ap);
}

void lg_log_errno(lg_log_level_t level, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(level, err, fmt, ap);
    va_end(ap);
}

void lg_bug(const char *file, int line, const char *what)
{
    lg_log(LG_LOG_ALERT, "BUG at %s:%d: %s", file, line, what);
    abort();
}

const char *lg_log_level_name(lg_log_level_t l)
{
    if ((unsigned)l >= sizeof(level_names) / sizeof(level_names[0]))
        return "unknown";
    return level_names[l];
}

int lg_log_level_parse(const char *s, lg_log_level_t *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (s != NULL && strcmp(s, level_names[i]) == 0) {
            *out = (lg_log_level_t)i;
            return 0;
        }
    }
    return -1;
}
