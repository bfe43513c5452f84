/* The cache's disk tier (cache/disk.c): files written, indexed, opened,
 * bounded by size (least recently used out), removed, damaged ones
 * dropped, and the directory read back into a new index. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache/disk.h"
#include "core/event.h"
#include "core/shm.h"

static char dir[64];
static lg_shm_t *shm;

static void attach(int64_t size)
{
    char err[256];
    shm = lg_shm_create(lg_disk_zone_size(size, 4096) + 65536, err, sizeof(err));
    cr_assert_not_null(shm, "%s", err);
    cr_assert_not_null(lg_disk_attach(shm, dir, size, 4096, 1 << 20, 60000, err, sizeof(err)),
                       "%s", err);
}

static void setup(void)
{
    snprintf(dir, sizeof(dir), "/tmp/legate-disk-unit.XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    attach(40000);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
    lg_shm_destroy(shm);
}

static const char HEAD[] = "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n";

/* Store key with a body of 10000 bytes of c: 0 or -1. */
static int put(const char *key, char c)
{
    lg_disk_fill_t f;
    lg_cmeta_t m = { 0 };
    m.status = 200;
    m.expires = 12345;
    char body[10000];
    memset(body, c, sizeof(body));
    if (lg_disk_fill_start(&f, key, strlen(key), &m, HEAD, sizeof(HEAD) - 1, sizeof(body)) < 0)
        return -1;
    if (lg_disk_fill_write(&f, body, 4000) < 0 || lg_disk_fill_write(&f, body + 4000, 6000) < 0)
        return -1;
    return lg_disk_fill_finish(&f);
}

/* The body's first byte of key's file, or -1 when there is none. */
static int first_byte(const char *key)
{
    lg_cmeta_t m;
    char *head;
    size_t hl;
    uint64_t off, len;
    int fd = lg_disk_open(key, strlen(key), &m, &head, &hl, &off, &len);
    if (fd < 0)
        return -1;
    cr_assert_eq(hl, sizeof(HEAD) - 1);
    cr_assert_eq(memcmp(head, HEAD, hl), 0);
    cr_assert_eq(len, 10000);
    cr_assert_eq(m.expires, 12345);
    char b;
    cr_assert_eq(pread(fd, &b, 1, (off_t)(off + len - 1)), 1);
    free(head);
    close(fd);
    return b;
}

static int files(void)
{
    char d[96];
    snprintf(d, sizeof(d), "%s/disk", dir);
    DIR *dp = opendir(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(dp)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(dp);
    return n;
}

TestSuite(cache_disk, .init = setup, .fini = teardown);

Test(cache_disk, written_opened_removed)
{
    cr_assert_eq(first_byte("k1"), -1, "nothing yet");
    cr_assert_eq(put("k1", 'a'), 0);
    cr_assert_eq(first_byte("k1"), 'a');
    cr_assert_eq(put("k1", 'b'), 0, "replaced");
    cr_assert_eq(first_byte("k1"), 'b');
    cr_assert_eq(files(), 1);
    lg_disk_stats_t st;
    lg_disk_stats(&st);
    cr_assert_eq(st.objects, 1, "replacing counts once");
    cr_assert_eq(lg_disk_remove("k1", 2), 1);
    cr_assert_eq(first_byte("k1"), -1);
    cr_assert_eq(files(), 0, "the file goes with it");
    cr_assert_eq(put("p/1", 'x'), 0);
    cr_assert_eq(put("p/2", 'y'), 0);
    cr_assert_eq(put("q/1", 'z'), 0);
    cr_assert_eq(lg_disk_remove_prefix("p/", 2), 2);
    cr_assert_eq(first_byte("q/1"), 'z');
    cr_assert_eq(files(), 1);
}

Test(cache_disk, least_recently_used_leave_first)
{
    /* 40000 bytes hold three files of ~10100 */
    /* last uses are told apart by the millisecond: a few between them */
    cr_assert_eq(put("a", 'a'), 0);
    usleep(3000);
    cr_assert_eq(put("b", 'b'), 0);
    usleep(3000);
    cr_assert_eq(put("c", 'c'), 0);
    usleep(3000);
    cr_assert_eq(first_byte("a"), 'a', "a is used again: b is the coldest");
    cr_assert_eq(put("d", 'd'), 0);
    cr_assert_eq(first_byte("b"), -1, "b left");
    cr_assert_eq(first_byte("a"), 'a');
    cr_assert_eq(first_byte("d"), 'd');
    cr_assert_eq(files(), 3);
}

Test(cache_disk, bad_fills_leave_nothing)
{
    lg_disk_fill_t f;
    lg_cmeta_t m = { 0 };
    m.status = 200;
    cr_assert_eq(lg_disk_fill_start(&f, "t", 1, &m, HEAD, sizeof(HEAD) - 1, 10), 0);
    cr_assert_eq(lg_disk_fill_write(&f, "0123456789x", 11), -1, "more than announced");
    cr_assert_eq(lg_disk_fill_finish(&f), -1);
    cr_assert_eq(lg_disk_fill_start(&f, "t", 1, &m, HEAD, sizeof(HEAD) - 1, 10), 0);
    cr_assert_eq(lg_disk_fill_write(&f, "01234", 5), 0);
    cr_assert_eq(lg_disk_fill_finish(&f), -1, "less than announced");
    cr_assert_eq(lg_disk_fill_start(&f, "t", 1, &m, HEAD, sizeof(HEAD) - 1, 10), 0);
    lg_disk_fill_abort(&f);
    cr_assert_eq(files(), 0, "no temporary file left");
    cr_assert_eq(first_byte("t"), -1);
    cr_assert_eq(lg_disk_fill_start(&f, "t", 1, &m, HEAD, sizeof(HEAD) - 1, 2 << 20), -1,
                 "past cache_disk_max_object");
}

Test(cache_disk, a_fill_of_unknown_length)
{
    /* a chunked answer: the length is written into the header at the end */
    lg_disk_fill_t f;
    lg_cmeta_t m = { 0 };
    m.status = 200;
    m.expires = 12345;
    char body[10000];
    memset(body, 'u', sizeof(body));
    cr_assert_eq(lg_disk_fill_start(&f, "u", 1, &m, HEAD, sizeof(HEAD) - 1, LG_DISK_LEN_UNKNOWN), 0);
    cr_assert_eq(lg_disk_fill_write(&f, body, 3000), 0);
    cr_assert_eq(lg_disk_fill_write(&f, body + 3000, 7000), 0);
    cr_assert_eq(lg_disk_fill_finish(&f), 0);
    cr_assert_eq(first_byte("u"), 'u', "whole, with its length");
    /* bounded by cache_disk_max_object (1 MiB here): dropped past it */
    static char big[(1 << 20) + 1];
    cr_assert_eq(lg_disk_fill_start(&f, "v", 1, &m, HEAD, sizeof(HEAD) - 1, LG_DISK_LEN_UNKNOWN), 0);
    cr_assert_eq(lg_disk_fill_write(&f, big, sizeof(big)), -1, "past the limit: dropped");
    cr_assert_eq(lg_disk_fill_finish(&f), -1);
    cr_assert_eq(first_byte("v"), -1);
    cr_assert_eq(files(), 1, "no temporary file left");
}

Test(cache_disk, one_refresh_at_a_time_and_a_304_renews_the_file)
{
    cr_assert_eq(lg_disk_try_update("r", 1, 1), 0, "no file");
    cr_assert_eq(put("r", 'r'), 0);
    cr_assert_eq(lg_disk_try_update("r", 1, lg_wall_ms() + 60000), 1, "the first");
    cr_assert_eq(lg_disk_try_update("r", 1, lg_wall_ms() + 60000), 0, "one runs");
    lg_cmeta_t m;
    char *head;
    size_t hl;
    uint64_t off, len;
    int fd = lg_disk_open("r", 1, &m, &head, &hl, &off, &len);
    cr_assert(fd >= 0);
    free(head);
    cr_assert_eq(m.expires, 12345);
    m.expires = 99999;
    cr_assert_eq(lg_disk_refresh(fd, "r", 1, &m), 0);
    cr_assert_eq(lg_disk_try_update("r", 1, lg_wall_ms() + 60000), 1, "the refresh is over");
    lg_cmeta_t m2;
    int fd2 = lg_disk_open("r", 1, &m2, &head, &hl, &off, &len);
    cr_assert(fd2 >= 0, "still whole: the CRC does not cover the freshness");
    free(head);
    cr_assert_eq(m2.expires, 99999, "the new freshness, in the file");
    close(fd2);
    /* a newer fill renamed over it: the old descriptor's 304 changes nothing */
    cr_assert_eq(put("r", 's'), 0);
    m.expires = 5;
    cr_assert_eq(lg_disk_refresh(fd, "r", 1, &m), -1);
    close(fd);
    fd2 = lg_disk_open("r", 1, &m2, &head, &hl, &off, &len);
    cr_assert(fd2 >= 0);
    free(head);
    close(fd2);
    cr_assert_eq(m2.expires, 12345, "the newer file's own");
}

Test(cache_disk, a_damaged_file_is_dropped)
{
    cr_assert_eq(put("k", 'a'), 0);
    char d[96];
    snprintf(d, sizeof(d), "%s/disk", dir);
    DIR *dp = opendir(d);
    char path[400] = "";
    for (struct dirent *e; (e = readdir(dp)) != NULL;)
        if (e->d_name[0] != '.')
            snprintf(path, sizeof(path), "%s/%s", d, e->d_name);
    closedir(dp);
    cr_assert_eq(truncate(path, 5000), 0);
    cr_assert_eq(first_byte("k"), -1, "cut short: not served");
    cr_assert_eq(access(path, F_OK), -1, "and removed");
}

Test(cache_disk, read_back_into_a_new_index)
{
    cr_assert_eq(put("r1", '1'), 0);
    cr_assert_eq(put("r2", '2'), 0);
    char tmp[128];
    snprintf(tmp, sizeof(tmp), "%s/disk/tmp.999999999.7", dir);   /* a dead fill */
    int fd = open(tmp, O_WRONLY | O_CREAT, 0600);
    cr_assert(fd >= 0);
    close(fd);
    char junk[128];
    snprintf(junk, sizeof(junk), "%s/disk/0123456789abcdef", dir);  /* named as ours, not one */
    fd = open(junk, O_WRONLY | O_CREAT, 0600);
    cr_assert_eq(write(fd, "junk", 4), 4);
    close(fd);
    lg_shm_destroy(shm);
    attach(40000);             /* a new segment: as after a restart */
    cr_assert(!lg_disk_ready());
    cr_assert_eq(first_byte("r1"), -1, "not indexed yet");
    for (int i = 0; i < 100 && !lg_disk_ready(); i++)
        lg_disk_tick();
    cr_assert(lg_disk_ready());
    cr_assert_eq(first_byte("r1"), '1');
    cr_assert_eq(first_byte("r2"), '2');
    cr_assert_eq(access(tmp, F_OK), -1, "the dead fill removed");
    cr_assert_eq(access(junk, F_OK), -1, "the damaged file removed");
    cr_assert_eq(files(), 2);
}

/* ---- the memory tier's feed to the disk (store.c: lg_store_demote) ---- */

static char offered[64][16];
static int noffered;

static void collect(void *arg, const char *key, size_t kl, const lg_cmeta_t *m, const char *head,
                    size_t hl, const char *body, size_t bl)
{
    (void)arg;
    (void)m;
    cr_assert_eq(hl, 5);
    cr_assert_eq(memcmp(head, "HEAD\n", 5), 0);
    cr_assert_eq(bl, 30000);
    cr_assert_eq(body[0], key[kl - 1], "the object's own bytes");
    if (noffered < 64)
        snprintf(offered[noffered++], sizeof(offered[0]), "%.*s", (int)kl, key);
}

Test(cache_disk, objects_about_to_leave_memory_are_offered_once)
{
    char err[256];
    lg_shm_t *s = lg_shm_create((1 << 20) + 65536, err, sizeof(err));
    cr_assert_not_null(s, "%s", err);
    lg_cache_t *c = lg_store_attach(s, 1 << 20, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    lg_cmeta_t m = { 0 };
    m.status = 200;
    char body[30000];
    noffered = 0;
    cr_assert_eq(lg_store_demote(c, 1 << 20, collect, NULL), 0, "an empty ring: nothing");
    /* 27 objects of 30 KB are less than 7/8 of the 933 KB ring: none is near its end */
    for (int i = 0; i < 27; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%c", 'A' + i);
        memset(body, 'A' + i, sizeof(body));
        cr_assert_eq(lg_store_put(c, key, 2, &m, "HEAD\n", 5, body, sizeof(body)), 0);
    }
    cr_assert_eq(lg_store_demote(c, 1 << 20, collect, NULL), 0, "nothing near the end yet");
    /* 31 are past 7/8 (and not yet past the end): the first few are the next to go */
    for (int i = 27; i < 31; i++) {
        char key[8];
        snprintf(key, sizeof(key), "k%c", 'A' + i);
        memset(body, 'A' + i, sizeof(body));
        cr_assert_eq(lg_store_put(c, key, 2, &m, "HEAD\n", 5, body, sizeof(body)), 0);
    }
    int n = lg_store_demote(c, 1 << 20, collect, NULL);
    cr_assert(n >= 1, "the oldest are offered: %d", n);
    cr_assert_str_eq(offered[0], "kA", "the oldest first");
    for (int i = 0; i < noffered; i++)
        cr_assert(offered[i][1] < 'A' + 8, "only the oldest: %s", offered[i]);
    cr_assert_eq(lg_store_demote(c, 1 << 20, collect, NULL), 0, "and only once");
    int before = noffered;
    memset(body, 'z', sizeof(body));
    cr_assert_eq(lg_store_put(c, "kz", 2, &m, "HEAD\n", 5, body, sizeof(body)), 0);
    lg_store_demote(c, 1 << 20, collect, NULL);
    for (int i = before; i < noffered; i++)
        cr_assert_str_neq(offered[i], "kz", "the newest is not offered");
    lg_shm_destroy(s);
}
