/*
 * The error log.  One file per process image (the master opens it; workers
 * inherit the descriptor), written with single write(2) calls of whole lines
 * in O_APPEND mode, so lines from several processes never interleave.
 * With -F the lines are copied to stderr as well.  lg_log_reopen() is what
 * USR1 triggers.
 *
 * Helpers below this layer do not log; they write a message into a caller's
 * buffer (see conf/) and the caller decides.
 */
#ifndef LEGATE_CORE_LOG_H
#define LEGATE_CORE_LOG_H

typedef enum lg_log_level {
    LG_LOG_DEBUG = 0, LG_LOG_INFO = 1, LG_LOG_NOTICE = 2, LG_LOG_WARN = 3,
    LG_LOG_ERROR = 4, LG_LOG_CRIT = 5, LG_LOG_ALERT = 6, LG_LOG_EMERG = 7,
} lg_log_level_t;

const char *lg_log_level_name(lg_log_level_t l);
int  lg_log_level_parse(const char *s, lg_log_level_t *out);     /* 0, or -1 unknown */

int  lg_log_open(const char *path, lg_log_level_t level, int also_stderr);
int  lg_log_reopen(void);               /* returns 0 or -1 (old fd kept) */
void lg_log_set_worker(int slot);       /* "PID#slot" in lines; master is 0 */
void lg_log_set_level(lg_log_level_t level);
int  lg_log_enabled(lg_log_level_t level);
int  lg_log_fd(void);
void lg_log(lg_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void lg_log_errno(lg_log_level_t level, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define lg_debug(...)  do { if (lg_log_enabled(LG_LOG_DEBUG)) lg_log(LG_LOG_DEBUG, __VA_ARGS__); } while (0)
#define lg_info(...)   lg_log(LG_LOG_INFO, __VA_ARGS__)
#define lg_notice(...) lg_log(LG_LOG_NOTICE, __VA_ARGS__)
#define lg_warn(...)   lg_log(LG_LOG_WARN, __VA_ARGS__)
#define lg_error(...)  lg_log(LG_LOG_ERROR, __VA_ARGS__)
#define lg_crit(...)   lg_log(LG_LOG_CRIT, __VA_ARGS__)
#define lg_alert(...)  lg_log(LG_LOG_ALERT, __VA_ARGS__)
#define lg_emerg(...)  lg_log(LG_LOG_EMERG, __VA_ARGS__)

/*
 * BUG_ON stays on in production (HAProxy's habit): a broken invariant stops
 * the worker loudly, the master logs and replaces it.
 */
#define LG_BUG_ON(cond) do { if (__builtin_expect(!!(cond), 0)) \
    lg_bug(__FILE__, __LINE__, #cond); } while (0)
void lg_bug(const char *file, int line, const char *what) __attribute__((noreturn));
/* Checks too costly for every request in production (magic numbers on
 * entry): on in debug and sanitizer builds (configure defines LG_DEBUG). */
#ifdef LG_DEBUG
#define LG_DEBUG_BUG_ON(cond) LG_BUG_ON(cond)
#else
#define LG_DEBUG_BUG_ON(cond) do { (void)sizeof(cond); } while (0)
#endif

#endif
