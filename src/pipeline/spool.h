/*
 * A body held for a slow peer (spool.c): bytes appended in order, kept in
 * memory up to a bound and past it in an unlinked temporary file, read
 * back in the same order.  proxy_buffering puts one between the upstream
 * and a slow client, proxy_request_buffering between a slow uploader and
 * the upstream.  Owned by the pipe that uses it (pipe.h).
 */
#ifndef LEGATE_PIPELINE_SPOOL_H
#define LEGATE_PIPELINE_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* What one read or write of the temporary file moves at most: the loop
 * thread does file I/O, so each step stays short (the page cache has it). */
#define LG_SPOOL_STEP (64 * 1024)

typedef struct lg_spool {
    char       *mem;            /* owned (malloc): grows up to mem_max */
    size_t      mem_cap, mem_max;
    size_t      mem_pos;        /* next byte to read in mem */
    size_t      mem_len;        /* bytes written to mem */
    int         fd;             /* owned: the unlinked temporary file, or -1 */
    int64_t     file_max;       /* bytes the file may hold, 0: no file */
    int64_t     file_rpos;      /* next file offset to read into rbuf */
    int64_t     file_wpos;      /* bytes written to the file */
    char       *rbuf;           /* owned (malloc, LG_SPOOL_STEP): file bytes read back */
    size_t      rb_pos, rb_len;
    const char *dir;            /* borrowed (the configuration): where the file goes */
    const char *what;           /* borrowed: "response" / "request", for the log */
    int         keep;           /* 1: nothing read is dropped (a request body, resent
                                 * on a retry: lg_spool_rewind); 0: a queue */
    int         no_file;        /* the file could not be made or written: memory only */
    uint64_t    total;          /* bytes appended since the start */
} lg_spool_t;

/* A spool of at most mem_max bytes of memory, then file_max of file in dir. */
void     lg_spool_init(lg_spool_t *sp, size_t mem_max, int64_t file_max, const char *dir,
                       const char *what, int keep);
/* Take up to n bytes: how many were taken; fewer (0) when memory and file
 * are full or the file cannot be made (logged once: the caller falls back
 * to backpressure, which is streaming). */
size_t   lg_spool_append(lg_spool_t *sp, const char *p, size_t n);
/* The next unread bytes, contiguous (*at valid until the next call): their
 * count, 0 when everything was read, -1 when the file cannot be read. */
ssize_t  lg_spool_peek(lg_spool_t *sp, const char **at);
void     lg_spool_consume(lg_spool_t *sp, size_t n);
/* Unread bytes. */
uint64_t lg_spool_pending(const lg_spool_t *sp);
/* Read again from the first byte (keep spools only). */
void     lg_spool_rewind(lg_spool_t *sp);
/* From now on a queue: read bytes are dropped (a kept body that did not
 * fit goes on streaming). */
void     lg_spool_unkeep(lg_spool_t *sp);
/* The file, memory and buffer go; idempotent. */
void     lg_spool_free(lg_spool_t *sp);

#endif
