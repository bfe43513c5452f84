/*
 * A body held for a slow peer: memory first, then an unlinked temporary
 * file, read back in order (nginx's proxy buffers and temp files).
 *
 *   mem:   [ read  )[ unread      )[ free )        mem_pos .. mem_len .. mem_cap
 *   file:  [ read  )[ unread      )                file_rpos .. file_wpos
 *   rbuf:  file bytes read back, not yet consumed  rb_pos .. rb_len
 *
 * Every memory byte comes before every file byte: once the file has bytes,
 * new ones go there too, until a queue is read empty and starts over at
 * zero (memory and file both).  A keep spool (a request body) never drops
 * what was read, so it can be read again from the start for a retry.  The
 * file is made on the first byte memory cannot take, with O_TMPFILE (no
 * name ever), else mkstemp and unlink: nothing is left on disk whatever
 * way the process ends, and closing the descriptor frees the space.
 */
#include "pipeline/spool.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lg_spool_init(lg_spool_t *sp, size_t mem_max, int64_t file_max, const char *dir,
                   const char *what, int keep)
{
    memset(sp, 0, sizeof(*sp));
    sp->fd = -1;
    sp->mem_max = mem_max;
    sp->file_max = file_max;
    sp->dir = dir ? dir : "/var/tmp";
    sp->what = what;
    sp->keep = keep;
}

static int file_open(lg_spool_t *sp)
{
    int fd = open(sp->dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* a file system without O_TMPFILE: a named file, unlinked at once */
        char path[4096];
        if (snprintf(path, sizeof(path), "%s/legate-spool.XXXXXX", sp->dir) < (int)sizeof(path)) {
            fd = mkostemp(path, O_CLOEXEC);
            if (fd >= 0)
                unlink(path);
        }
    }
    if (fd < 0) {
        lg_log_errno(LG_LOG_ERROR, errno,
                     "cannot create a temporary file in \"%s\" (proxy_temp_path): the %s "
                     "body is buffered in memory only, then streamed", sp->dir, sp->what);
        sp->no_file = 1;
        return -1;
    }
    sp->fd = fd;
    lg_info("a %s body is buffered to a temporary file in \"%s\"", sp->what, sp->dir);
    return 0;
}

/* Room at the end of memory for n more bytes: grow, or (a queue) slide the
 * unread bytes to the front when a quarter or more was read. */
static size_t mem_room(lg_spool_t *sp, size_t n)
{
    if (sp->mem_cap - sp->mem_len >= n || sp->mem_cap == sp->mem_max) {
        if (!sp->keep && sp->mem_len == sp->mem_cap && sp->mem_pos >= sp->mem_cap / 4 &&
            sp->mem_pos > 0) {
            memmove(sp->mem, sp->mem + sp->mem_pos, sp->mem_len - sp->mem_pos);
            sp->mem_len -= sp->mem_pos;
            sp->mem_pos = 0;
        }
        return sp->mem_cap - sp->mem_len;
    }
    size_t cap = sp->mem_cap ? sp->mem_cap : 16384;
    while (cap - sp->mem_len < n && cap < sp->mem_max)
        cap *= 2;
    if (cap > sp->mem_max)
        cap = sp->mem_max;
    char *m = realloc(sp->mem, cap);
    if (m) {
        sp->mem = m;
        sp->mem_cap = cap;
    }
    return sp->mem_cap - sp->mem_len;
}

size_t lg_spool_append(lg_spool_t *sp, const char *p, size_t n)
{
    size_t took = 0;
    if (n == 0)
        return 0;
    if (sp->file_wpos == 0) {
        size_t room = mem_room(sp, n);
        took = room < n ? room : n;
        memcpy(sp->mem + sp->mem_len, p, took);
        sp->mem_len += took;
        p += took;
        n -= took;
    }
    if (n == 0 || sp->file_max == 0 || sp->no_file)
        goto out;
    if (sp->fd < 0 && file_open(sp) < 0)
        goto out;
    int64_t left = sp->file_max - sp->file_wpos;
    size_t k = left <= 0 ? 0 : (uint64_t)left < n ? (size_t)left : n;
    if (k > LG_SPOOL_STEP)
        k = LG_SPOOL_STEP;
    if (k == 0)
        goto out;
    ssize_t w;
    do
        w = pwrite(sp->fd, p, k, sp->file_wpos);
    while (w < 0 && errno == EINTR);
    if (w < 0) {
        lg_log_errno(LG_LOG_ERROR, errno, "write to a temporary file in \"%s\" failed: the %s "
                     "body is streamed from here", sp->dir, sp->what);
        sp->no_file = 1;
        goto out;
    }
    sp->file_wpos += w;
    took += (size_t)w;
out:
    sp->total += took;
    return took;
}

uint64_t lg_spool_pending(const lg_spool_t *sp)
{
    return (uint64_t)(sp->mem_len - sp->mem_pos) + (sp->rb_len - sp->rb_pos) +
           (uint64_t)(sp->file_wpos - sp->file_rpos);
}

ssize_t lg_spool_peek(lg_spool_t *sp, const char **at)
{
    if (sp->mem_pos < sp->mem_len) {
        *at = sp->mem + sp->mem_pos;
        return (ssize_t)(sp->mem_len - sp->mem_pos);
    }
    if (sp->rb_pos == sp->rb_len && sp->file_rpos < sp->file_wpos) {
        if (sp->rbuf == NULL && (sp->rbuf = malloc(LG_SPOOL_STEP)) == NULL)
            return -1;
        int64_t left = sp->file_wpos - sp->file_rpos;
        size_t k = left < LG_SPOOL_STEP ? (size_t)left : LG_SPOOL_STEP;
        ssize_t r;
        do
            r = pread(sp->fd, sp->rbuf, k, sp->file_rpos);
        while (r < 0 && errno == EINTR);
        if (r <= 0) {
            lg_log_errno(LG_LOG_ERROR, r < 0 ? errno : 0,
                         "read from a temporary file in \"%s\" failed", sp->dir);
            return -1;
        }
        sp->file_rpos += r;
        sp->rb_pos = 0;
        sp->rb_len = (size_t)r;
    }
    *at = sp->rbuf + sp->rb_pos;
    return (ssize_t)(sp->rb_len - sp->rb_pos);
}

void lg_spool_consume(lg_spool_t *sp, size_t n)
{
    size_t k = sp->mem_len - sp->mem_pos;
    if (k) {
        k = k < n ? k : n;
        sp->mem_pos += k;
        n -= k;
    }
    sp->rb_pos += n < sp->rb_len - sp->rb_pos ? n : sp->rb_len - sp->rb_pos;
    if (!sp->keep && lg_spool_pending(sp) == 0) {
        /* a queue read empty starts over: memory from its start, the file
         * from offset 0 (its blocks freed) */
        if (sp->file_wpos > 0 && ftruncate(sp->fd, 0) < 0)
            lg_log_errno(LG_LOG_WARN, errno, "ftruncate() of a temporary file failed");
        sp->mem_pos = sp->mem_len = 0;
        sp->file_rpos = sp->file_wpos = 0;
        sp->rb_pos = sp->rb_len = 0;
    }
}

void lg_spool_rewind(lg_spool_t *sp)
{
    if (!sp->keep)
        return;
    sp->mem_pos = 0;
    sp->file_rpos = 0;
    sp->rb_pos = sp->rb_len = 0;
}

void lg_spool_unkeep(lg_spool_t *sp)
{
    sp->keep = 0;
}

void lg_spool_free(lg_spool_t *sp)
{
    if (sp->fd >= 0)
        close(sp->fd);
    sp->fd = -1;
    free(sp->mem);
    free(sp->rbuf);
    sp->mem = sp->rbuf = NULL;
    sp->mem_cap = sp->mem_len = sp->mem_pos = 0;
    sp->rb_pos = sp->rb_len = 0;
    sp->file_rpos = sp->file_wpos = 0;
}
