#include "net/splice.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#define SPLICE_CHUNK (1 << 20)
#define SPLICE_POOL  32         /* empty pipes kept per worker */

static int pool[SPLICE_POOL][2];
static int npool;

int lg_splice_open(lg_splice_t *sp, int64_t left)
{
    sp->inpipe = 0;
    sp->eof = left == 0;
    sp->left = left;
    sp->bytes = 0;
    if (npool > 0) {
        npool--;
        sp->fds[0] = pool[npool][0];
        sp->fds[1] = pool[npool][1];
        return 0;
    }
    if (pipe2(sp->fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        sp->fds[0] = sp->fds[1] = -1;
        return -1;
    }
    /* a larger pipe means fewer system calls per megabyte.  Best effort:
     * its pages are taken only while bytes are in it, but the size counts
     * against the user's pipe quota (/proc/sys/fs/pipe-user-pages-soft,
     * 64 such pipes), past which the kernel refuses and 64 KiB it is */
    fcntl(sp->fds[1], F_SETPIPE_SZ, SPLICE_CHUNK);
    return 0;
}

void lg_splice_close(lg_splice_t *sp)
{
    if (sp->fds[0] >= 0 && sp->fds[1] >= 0 && sp->inpipe == 0 && npool < SPLICE_POOL) {
        pool[npool][0] = sp->fds[0];
        pool[npool][1] = sp->fds[1];
        npool++;
        sp->fds[0] = sp->fds[1] = -1;
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (sp->fds[i] >= 0)
            close(sp->fds[i]);
        sp->fds[i] = -1;
    }
}

int lg_splice_run(lg_splice_t *sp, lg_end_t *src, lg_end_t *dst)
{
    for (;;) {
        if (sp->inpipe) {
            if (!dst->w_ready) {
                dst->want_w = 1;
                return 1;
            }
            ssize_t n = splice(sp->fds[0], NULL, dst->io.fd, NULL, sp->inpipe,
                               SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (n > 0) {
                sp->inpipe -= (size_t)n;
                sp->bytes += (uint64_t)n;
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                dst->w_ready = 0;
                dst->want_w = 1;
                return 1;
            }
            return -2;
        }
        if (sp->eof)
            return 0;
        if (!src->r_ready) {
            src->want_r = 1;
            return 1;
        }
        size_t want = SPLICE_CHUNK;
        if (sp->left >= 0 && (uint64_t)sp->left < want)
            want = (size_t)sp->left;
        ssize_t n = splice(src->io.fd, NULL, sp->fds[1], NULL, want,
                           SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            sp->inpipe += (size_t)n;
            if (sp->left >= 0 && (sp->left -= n) == 0)
                sp->eof = 1;
            continue;
        }
        if (n == 0) {
            if (sp->left > 0) {
                src->r_ready = 0;
                return -3;      /* closed before the bytes it owed */
            }
            sp->eof = 1;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {          /* the pipe is empty here, so the socket is */
            src->r_ready = 0;
            src->want_r = 1;
            return 1;
        }
        return -1;
    }
}
