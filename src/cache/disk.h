/*
 * The cache's disk tier (disk.c): objects larger than cache_max_object --
 * too large for the shared-memory ring -- and at most cache_disk_max_object
 * live in files under cache_path/disk, one file per key, as nginx's
 * proxy_cache_path.  An index in shared memory (zone "cache-disk") names
 * them: key, size, freshness, last use.  The tier is bounded by
 * cache_disk_size (the least recently used leave first) and by
 * cache_disk_inactive (what nobody asked for that long leaves).
 *
 * A file is written while the body streams to the client, under a
 * temporary name, and renamed into place once complete: a file under its
 * final name is always whole.  It starts with a fixed header (magic,
 * lengths, freshness, a CRC of key and head), then the key, the head and
 * the body; a reader checks the header against the file's size and the
 * key before it serves a byte, and drops a file that does not match.
 *
 * After a restart the index is empty: worker 0 reads the directory back in
 * the background, a few files a tick, so the start is not held up; until a
 * file is indexed again a request for it is a miss (and its answer is
 * stored anew).
 *
 * Locking: one robust process-shared mutex guards the index, held for a
 * lookup or an update (a scan of the slots when room must be made); file
 * I/O and unlink(2) happen outside it.
 */
#ifndef LEGATE_CACHE_DISK_H
#define LEGATE_CACHE_DISK_H

#include <stddef.h>
#include <stdint.h>

#include "cache/store.h"
#include "core/shm.h"

typedef struct lg_disk lg_disk_t;
extern lg_disk_t *lg_disk;      /* attached by the master before fork, or NULL */

#define LG_DISK_KEY_MAX 240     /* longer keys are not stored on disk */

/* The zone's size for a tier of disk_size bytes of objects larger than min_object. */
size_t     lg_disk_zone_size(int64_t disk_size, int64_t min_object);
/* Master: attach (and on first use format) the index; dir/disk is made if missing. */
lg_disk_t *lg_disk_attach(lg_shm_t *shm, const char *dir, int64_t disk_size, int64_t min_object,
                          int64_t max_object, int64_t inactive_ms, char *err, size_t errlen);
int64_t    lg_disk_max_object(void);

/* The fixed header at the start of each file (host byte order). */
#define LG_DISK_MAGIC "LGDISK01"
typedef struct lg_disk_hdr {
    char     magic[8];
    uint32_t keylen, headlen;
    uint64_t bodylen;
    lg_cmeta_t meta;
    uint32_t crc;               /* CRC-32 of key and head */
    uint32_t pad;
} lg_disk_hdr_t;

/*
 * The first n bytes of a file of fsize bytes: 0 and *h when they hold a
 * whole header, key and head that agree with the file's size; -1 for
 * anything else (too short, another magic, lengths past the file or the
 * limits, a CRC that does not match).
 */
int  lg_disk_header_check(const char *p, size_t n, uint64_t fsize, lg_disk_hdr_t *h);
/* CRC-32 (IEEE) of n bytes, continuing crc (0 to start). */
uint32_t lg_disk_crc(uint32_t crc, const void *p, size_t n);

/* A file being written for one response. */
#define LG_DISK_LEN_UNKNOWN UINT64_MAX  /* a chunked body: at most cache_disk_max_object */
typedef struct lg_disk_fill {
    int      fd;                /* -1: none */
    int      unknown;           /* started with LG_DISK_LEN_UNKNOWN */
    uint64_t want, got;         /* body bytes announced (or the most allowed), written */
    uint64_t fixed;             /* header, key and head */
    uint64_t size;              /* the file's bytes once complete */
    char     key[LG_DISK_KEY_MAX + 1];
    size_t   keylen;
    int64_t  expires;
    char     tmp[64];           /* its temporary name under the directory */
} lg_disk_fill_t;

/* Start a file for key with meta and head, for a body of bodylen bytes
 * (LG_DISK_LEN_UNKNOWN: as many as come, written into the header by
 * lg_disk_fill_finish; past cache_disk_max_object the fill is dropped): 0 or -1. */
int  lg_disk_fill_start(lg_disk_fill_t *f, const char *key, size_t kl, const lg_cmeta_t *m,
                        const char *head, size_t hl, uint64_t bodylen);
/* Body bytes (a write to the page cache): 0, or -1 (the fill is dropped). */
int  lg_disk_fill_write(lg_disk_fill_t *f, const char *p, size_t n);
/* The body is complete: in place and indexed (0), or dropped (-1). */
int  lg_disk_fill_finish(lg_disk_fill_t *f);
void lg_disk_fill_abort(lg_disk_fill_t *f);
/* A whole object at once (one leaving the memory tier): 0 or -1. */
int  lg_disk_put(const char *key, size_t kl, const lg_cmeta_t *m, const char *head, size_t hl,
                 const char *body, size_t bl);

/*
 * Open the file of key: its descriptor, *meta, the head (malloc'd, *hl
 * bytes) and where its body starts and how long it is; -1 when there is
 * none (a file that does not match its index entry or its key is dropped).
 * Counts as a use (cache_disk_inactive).
 */
int  lg_disk_open(const char *key, size_t kl, lg_cmeta_t *meta, char **head, size_t *hl,
                  uint64_t *body_off, uint64_t *bodylen);
/* Remove key; every key starting with prefix (n bytes).  How many went. */
int  lg_disk_remove(const char *key, size_t kl);
int  lg_disk_remove_prefix(const char *prefix, size_t n);

/* A stale file's refresh: 1 if this caller may run it (none runs for key
 * until `until`, wall ms, from now on), 0 if one runs or there is no file. */
int  lg_disk_try_update(const char *key, size_t kl, int64_t until);
/* A 304 revalidated the file open at fd: its freshness m written into its
 * header (in place: the CRC covers key and head only) and the index; the
 * head in the file stays as it was.  0, or -1 (replaced meanwhile). */
int  lg_disk_refresh(int fd, const char *key, size_t kl, const lg_cmeta_t *m);
/* A 304 revalidated the file open at fd and changed its head (RFC 9111
 * 4.3.4): a new file with freshness m and head, the body copied from fd
 * (copy_file_range: in the kernel, LG_DISK_REHEAD_MAX bytes at most, so
 * the loop is held a few milliseconds), renamed over the old one.  0, or
 * -1 (nothing changed: the caller refreshes the freshness alone). */
#define LG_DISK_REHEAD_MAX (8 << 20)
int  lg_disk_rehead(int fd, uint64_t body_off, uint64_t bodylen, const char *key, size_t kl,
                    const lg_cmeta_t *m, const char *head, size_t hl);

/* Worker 0, from a timer: read the directory back after a restart, a few
 * files at a time, and remove what was not used for cache_disk_inactive. */
void lg_disk_tick(void);
/* 1 once the directory has been read back (or the index survived a reload). */
int  lg_disk_ready(void);

/* Counts of how answers were sent from files (for the metrics page). */
typedef enum lg_disk_counter {
    LG_DISK_SENDFILE = 0,       /* body bytes sent with sendfile(2) */
    LG_DISK_READ = 1,           /* body bytes read into a buffer and written */
    LG_DISK_WAIT = 2,           /* times an answer waited for the disk (not in the page cache) */
    LG_DISK_BLOCKED = 3,        /* times it waited too long and read on the loop after all */
    LG_DISK_NCOUNT = 4,
} lg_disk_counter_t;
void lg_disk_count(lg_disk_counter_t what, uint64_t n);

typedef struct lg_disk_stats {
    uint64_t objects, used, capacity;
    uint64_t count[LG_DISK_NCOUNT];
} lg_disk_stats_t;
void lg_disk_stats(lg_disk_stats_t *st);

#endif
