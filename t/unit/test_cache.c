/* The shared cache store: hits, replacement, FIFO eviction, collapsed
 * fills across processes, purges. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cache/store.h"
#include "core/shm.h"

static lg_cache_t *mk(size_t size, lg_shm_t **shm)
{
    char err[256];
    *shm = lg_shm_create(size + 65536, err, sizeof(err));
    cr_assert_not_null(*shm, "%s", err);
    lg_cache_t *c = lg_store_attach(*shm, size, err, sizeof(err));
    cr_assert_not_null(c, "%s", err);
    return c;
}

static lg_cmeta_t meta(int status)
{
    lg_cmeta_t m = { 0 };
    m.status = status;
    m.expires = 1;
    return m;
}

Test(cache, put_get_replace)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler;
    cr_assert_eq(lg_store_get(c, "k1", 2, 1, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS);
    cr_assert_eq(filler, 1);
    lg_cmeta_t w = meta(200);
    cr_assert_eq(lg_store_put(c, "k1", 2, &w, "HEAD", 4, "body", 4), 0);
    cr_assert_eq(lg_store_get(c, "k1", 2, 1, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_HIT);
    cr_assert_eq(hl, 4);
    cr_assert_eq(bl, 4);
    cr_assert(memcmp(obj, "HEADbody", 8) == 0);
    cr_assert_eq(m.status, 200);
    free(obj);
    w.status = 404;
    lg_store_put(c, "k1", 2, &w, "H2", 2, "", 0);
    cr_assert_eq(lg_store_get(c, "k1", 2, 0, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_HIT);
    cr_assert_eq(m.status, 404);
    cr_assert_eq(bl, 0);
    free(obj);
    cr_assert_eq(lg_store_delete(c, "k1", 2), 1);
    cr_assert_eq(lg_store_get(c, "k1", 2, 0, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS);
    lg_shm_destroy(shm);
}

Test(cache, fifo_eviction_keeps_recent)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    char body[10000];
    memset(body, 'x', sizeof(body));
    char key[32];
    for (int i = 0; i < 500; i++) {          /* ~5 MB through a 1 MB ring */
        int n = snprintf(key, sizeof(key), "key%d", i);
        lg_cmeta_t w = meta(200);
        lg_store_put(c, key, (size_t)n, &w, "h", 1, body, sizeof(body));
    }
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler, recent = 0, old = 0;
    for (int i = 0; i < 500; i++) {
        int n = snprintf(key, sizeof(key), "key%d", i);
        if (lg_store_get(c, key, (size_t)n, 0, 0, 7, &obj, &hl, &bl, &m, &filler) == LG_CACHE_HIT) {
            cr_assert_eq(bl, sizeof(body));
            cr_assert(memcmp(obj + 1, body, sizeof(body)) == 0, "an intact object, never torn");
            free(obj);
            if (i >= 450)
                recent++;
            if (i < 100)
                old++;
        }
    }
    cr_expect_eq(recent, 50, "the newest objects are all there");
    cr_expect_eq(old, 0, "the oldest were evicted");
    lg_cache_stats_t st;
    lg_store_stats(c, &st);
    cr_expect_gt(st.evictions, 0);
    lg_shm_destroy(shm);
}

Test(cache, collapsed_fill_across_processes)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler;
    cr_assert_eq(lg_store_get(c, "k", 1, 1, 5000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS);
    cr_assert_eq(filler, 1);
    pid_t pid = fork();
    if (pid == 0) {
        int f2;
        int r = lg_store_get(c, "k", 1, 1, 5000, 7, &obj, &hl, &bl, &m, &f2);
        _exit(r == LG_CACHE_WAIT ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    cr_assert_eq(WEXITSTATUS(status), 0, "another process waits for the filler");
    lg_cmeta_t w = meta(200);
    lg_store_put(c, "k", 1, &w, "h", 1, "b", 1);
    pid = fork();
    if (pid == 0) {
        int f2;
        int r = lg_store_get(c, "k", 1, 1, 5000, 7, &obj, &hl, &bl, &m, &f2);
        _exit(r == LG_CACHE_HIT ? 0 : 1);
    }
    waitpid(pid, &status, 0);
    cr_assert_eq(WEXITSTATUS(status), 0, "then it is a hit there");
    lg_shm_destroy(shm);
}

Test(cache, dead_filler_is_taken_over)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    pid_t pid = fork();
    if (pid == 0) {
        char *obj;
        size_t hl, bl;
        lg_cmeta_t m;
        int f;
        lg_store_get(c, "k", 1, 1, 60000, 7, &obj, &hl, &bl, &m, &f);
        kill(getpid(), SIGKILL);            /* dies mid-fill */
    }
    int status;
    waitpid(pid, &status, 0);
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler;
    cr_assert_eq(lg_store_get(c, "k", 1, 1, 5000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS);
    cr_assert_eq(filler, 1, "a dead filler does not block the key");
    lg_shm_destroy(shm);
}

Test(cache, purge_prefix_and_soft)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    const char *keys[] = { "GET http://a/x/1", "GET http://a/x/2", "GET http://a/y" };
    for (int i = 0; i < 3; i++) {
        lg_cmeta_t w = meta(200);
        w.expires = INT64_MAX;
        lg_store_put(c, keys[i], strlen(keys[i]), &w, "h", 1, "b", 1);
    }
    cr_assert_eq(lg_store_purge_prefix(c, "GET http://a/x/", 15, 1), 2);
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler;
    cr_assert_eq(lg_store_get(c, keys[0], strlen(keys[0]), 0, 0, 7, &obj, &hl, &bl, &m, &filler),
                 LG_CACHE_HIT);
    cr_assert_lt(m.expires, INT64_MAX, "soft purge: still there, but stale");
    free(obj);
    cr_assert_eq(lg_store_purge_prefix(c, "GET http://a/x/", 15, 0), 2);
    cr_assert_eq(lg_store_get(c, keys[1], strlen(keys[1]), 0, 0, 7, &obj, &hl, &bl, &m, &filler),
                 LG_CACHE_MISS);
    cr_assert_eq(lg_store_get(c, keys[2], strlen(keys[2]), 0, 0, 7, &obj, &hl, &bl, &m, &filler),
                 LG_CACHE_HIT);
    free(obj);
    lg_shm_destroy(shm);
}

/* A key that keeps being asked for survives a stream of others through a
 * small ring (FIFO alone would drop it after one lap); a key nobody asks
 * for does not. */
Test(cache, used_objects_are_kept_lru_like)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    char body[10000];
    memset(body, 'y', sizeof(body));
    lg_cmeta_t w = meta(200);
    lg_store_put(c, "hot", 3, &w, "h", 1, body, sizeof(body));
    lg_store_put(c, "cold", 4, &w, "h", 1, body, sizeof(body));
    char key[32], *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler, hot_hits = 0;
    for (int i = 0; i < 500; i++) {          /* ~5 laps of the ring */
        int n = snprintf(key, sizeof(key), "other%d", i);
        lg_store_put(c, key, (size_t)n, &w, "h", 1, body, sizeof(body));
        if (i % 10 == 0 &&
            lg_store_get(c, "hot", 3, 0, 0, 7, &obj, &hl, &bl, &m, &filler) == LG_CACHE_HIT) {
            cr_assert(bl == sizeof(body) && memcmp(obj + 1, body, sizeof(body)) == 0,
                      "a promoted object is intact");
            free(obj);
            hot_hits++;
        }
    }
    cr_expect_eq(hot_hits, 50, "every look at the hot key was a hit");
    cr_expect_eq(lg_store_get(c, "cold", 4, 0, 0, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS,
                 "the key nobody asked for was evicted");
    lg_cache_stats_t st;
    lg_store_stats(c, &st);
    cr_expect_gt(st.promotions, 3, "promoted about once a lap");
    cr_expect_lt(st.promotions, 20, "but not on every hit");
    lg_shm_destroy(shm);
}

Test(cache, min_uses_counts_then_stores)
{
    lg_shm_t *shm;
    lg_cache_t *c = mk(1 << 20, &shm);
    cr_expect_eq(lg_store_count_use(c, "k", 1, 3), 0);
    cr_expect_eq(lg_store_count_use(c, "k", 1, 3), 0);
    cr_expect_eq(lg_store_count_use(c, "k", 1, 3), 1, "the third use");
    char *obj;
    size_t hl, bl;
    lg_cmeta_t m;
    int filler;
    cr_expect_eq(lg_store_get(c, "k", 1, 1, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_MISS);
    cr_expect_eq(filler, 1);
    lg_cmeta_t w = meta(200);
    cr_expect_eq(lg_store_put(c, "k", 1, &w, "h", 1, "b", 1), 0);
    cr_expect_eq(lg_store_count_use(c, "k", 1, 3), 1, "stored: always");
    cr_expect_eq(lg_store_get(c, "k", 1, 0, 1000, 7, &obj, &hl, &bl, &m, &filler), LG_CACHE_HIT);
    free(obj);
    cr_expect_eq(lg_store_count_use(c, "other", 5, 1), 1, "min_uses 1: no counting");
    lg_shm_destroy(shm);
}
