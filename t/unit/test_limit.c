/*
 * Unit tests of the limits' shared tables (feature/limit_zone.c): the GCRA
 * arithmetic against nginx's leaky-bucket figures, delay and reject
 * boundaries, and the set-associative table: keys kept apart, the least
 * recently used key evicted when a set is full, idle entries reused without
 * an eviction, concurrency entries in use never evicted, counts shared
 * with a forked process.
 */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "feature/limit_zone.h"

#define SEC 1000000LL

/* 20 r/s, burst 10, nodelay: 11 at once, then one every 50 ms. */
Test(gcra, nodelay_burst_then_rate)
{
    int64_t tat = 0, w = 0, t0 = 100 * SEC, T = SEC / 20;
    for (int i = 0; i < 11; i++)
        cr_assert_eq(lg_gcra(&tat, t0, T, 10, 10, &w), LG_LZ_PASS, "request %d of the burst", i);
    cr_assert_eq(lg_gcra(&tat, t0, T, 10, 10, &w), LG_LZ_REJECT);
    cr_assert_eq(w, T, "conforms again one interval later (got %lld)", (long long)w);
    cr_assert_eq(lg_gcra(&tat, t0 + T - 1, T, 10, 10, &w), LG_LZ_REJECT, "not a microsecond early");
    cr_assert_eq(lg_gcra(&tat, t0 + T, T, 10, 10, &w), LG_LZ_PASS);
    cr_assert_eq(lg_gcra(&tat, t0 + T, T, 10, 10, &w), LG_LZ_REJECT);
}

/* Sustained: over 10 s of requests every millisecond, 200 + 11 pass. */
Test(gcra, ten_seconds_of_flood)
{
    int64_t tat = 0, w, t0 = 5 * SEC, T = SEC / 20;
    int passed = 0;
    for (int64_t t = t0; t < t0 + 10 * SEC; t += 1000)
        passed += lg_gcra(&tat, t, T, 10, 10, &w) == LG_LZ_PASS;
    cr_assert_eq(passed, 210, "passed %d", passed);
}

/* Without nodelay (delay 0): 1 at once, 10 delayed by 1..10 intervals. */
Test(gcra, delay_paces_up_to_burst)
{
    int64_t tat = 0, w, t0 = SEC, T = SEC / 10;
    cr_assert_eq(lg_gcra(&tat, t0, T, 10, 0, &w), LG_LZ_PASS);
    for (int i = 1; i <= 10; i++) {
        cr_assert_eq(lg_gcra(&tat, t0, T, 10, 0, &w), LG_LZ_DELAY);
        cr_assert_eq(w, i * T, "request %d waits %d intervals (got %lld)", i, i, (long long)w);
    }
    cr_assert_eq(lg_gcra(&tat, t0, T, 10, 0, &w), LG_LZ_REJECT);
}

/* nginx's delay=3: the first 3 past the rate go at once, the rest wait. */
Test(gcra, delay_threshold)
{
    int64_t tat = 0, w, t0 = SEC, T = SEC / 10;
    for (int i = 0; i < 4; i++)
        cr_assert_eq(lg_gcra(&tat, t0, T, 6, 3, &w), LG_LZ_PASS);
    cr_assert_eq(lg_gcra(&tat, t0, T, 6, 3, &w), LG_LZ_DELAY);
    cr_assert_eq(w, T);
    /* a reject leaves the state alone */
    int64_t before = tat;
    for (int i = 0; i < 2; i++)
        lg_gcra(&tat, t0, T, 6, 3, &w);
    cr_assert_eq(lg_gcra(&tat, t0, T, 6, 3, &w), LG_LZ_REJECT);
    cr_assert_eq(tat, before + 2 * T);
}

/* ---- the table ---- */

static lg_lz_t *zone(size_t size, int conn)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(p, MAP_FAILED);
    cr_assert_eq(lg_lz_init(p, size, conn, 42), 0);
    return p;
}

/* Keys that land in the same set as h (set-associative: chosen by hash). */
static uint64_t same_set(const lg_lz_t *z, uint64_t h, uint64_t k)
{
    (void)z;
    /* with one set every key shares it */
    return h + k;
}

Test(lz, keys_kept_apart)
{
    lg_lz_t *z = zone(1 << 16, 0);
    int64_t w, T = SEC, now = 10 * SEC;
    int ev = 0;
    uint64_t a = lg_lz_hash(z, "alice", 5), b = lg_lz_hash(z, "bob", 3);
    cr_assert_neq(a, b);
    cr_assert_eq(lg_lz_rate(z, a, now, T, 0, 0, &w, &ev), LG_LZ_PASS);
    cr_assert_eq(lg_lz_rate(z, a, now, T, 0, 0, &w, &ev), LG_LZ_REJECT);
    cr_assert_eq(lg_lz_rate(z, b, now, T, 0, 0, &w, &ev), LG_LZ_PASS, "bob has his own state");
    cr_assert_eq(ev, 0);
}

/* One set (the smallest zone): the 9th live key evicts the least recently used. */
Test(lz, lru_eviction_in_a_full_set)
{
    size_t size = sizeof(lg_lz_t) + sizeof(lg_lz_set_t);
    lg_lz_t *z = zone(size, 0);
    cr_assert_eq(z->nsets, 1);
    cr_assert_eq(lg_lz_capacity(z), LG_LZ_WAYS);
    int64_t w, T = 60 * SEC, now = 100 * SEC;   /* 1 r/m: every key stays live */
    int ev = 0;
    for (uint64_t k = 1; k <= LG_LZ_WAYS; k++)
        cr_assert_eq(lg_lz_rate(z, same_set(z, 1000, k), now + (int64_t)k, T, 0, 0, &w, &ev), LG_LZ_PASS);
    cr_assert_eq(ev, 0, "eight keys fit");
    /* key 1 used again: key 2 is now the least recently used */
    cr_assert_eq(lg_lz_rate(z, same_set(z, 1000, 1), now + 100, T, 0, 0, &w, &ev), LG_LZ_REJECT);
    cr_assert_eq(lg_lz_rate(z, same_set(z, 1000, 99), now + 200, T, 0, 0, &w, &ev), LG_LZ_PASS);
    cr_assert_eq(ev, 1, "a ninth key evicts");
    cr_assert_eq(lg_shm_get(&z->evictions), 1);
    /* key 1 kept its state, key 2 lost it */
    ev = 0;
    cr_assert_eq(lg_lz_rate(z, same_set(z, 1000, 1), now + 300, T, 0, 0, &w, &ev), LG_LZ_REJECT,
                 "the recently used key is still limited");
    cr_assert_eq(ev, 0);
    cr_assert_eq(lg_lz_rate(z, same_set(z, 1000, 2), now + 400, T, 0, 0, &w, &ev), LG_LZ_PASS,
                 "the evicted key starts afresh");
    cr_assert_eq(ev, 1);
}

/* Entries whose arrival time has passed are free: no eviction counted. */
Test(lz, idle_entries_reused_silently)
{
    lg_lz_t *z = zone(sizeof(lg_lz_t) + sizeof(lg_lz_set_t), 0);
    int64_t w, T = SEC / 10, now = 100 * SEC;
    int ev = 0;
    for (uint64_t k = 1; k <= 3 * LG_LZ_WAYS; k++)
        cr_assert_eq(lg_lz_rate(z, k, now + (int64_t)k * SEC, T, 0, 0, &w, &ev), LG_LZ_PASS);
    cr_assert_eq(ev, 0);
    cr_assert_eq(lg_shm_get(&z->evictions), 0);
}

Test(lz, conn_counts_and_full_set)
{
    lg_lz_t *z = zone(sizeof(lg_lz_t) + sizeof(lg_lz_set_t), 1);
    int64_t now = SEC;
    cr_assert_eq(lg_lz_conn_acquire(z, 7, now, 2, 0, 0), LG_LZ_PASS);
    cr_assert_eq(lg_lz_conn_acquire(z, 7, now, 2, 0, 0), LG_LZ_PASS);
    cr_assert_eq(lg_lz_conn_acquire(z, 7, now, 2, 0, 0), LG_LZ_REJECT);
    cr_assert_eq(lg_lz_conn_count(z, 7), 2, "a refusal is not counted");
    cr_assert_eq(lg_lz_conn_acquire(z, 7, now, 2, 1, 0), LG_LZ_REJECT, "dry run: would refuse");
    cr_assert_eq(lg_lz_conn_count(z, 7), 3, "...but counts it");
    lg_lz_conn_release(z, 7, 0);
    /* fill the other seven entries: busy entries are never evicted */
    for (uint64_t k = 100; k < 107; k++)
        cr_assert_eq(lg_lz_conn_acquire(z, k, now, 1, 0, 0), LG_LZ_PASS);
    cr_assert_eq(lg_lz_conn_acquire(z, 555, now, 1, 0, 0), LG_LZ_FULL);
    cr_assert_eq(lg_lz_conn_count(z, 7), 2, "key 7 kept");
    lg_lz_conn_release(z, 100, 0);
    cr_assert_eq(lg_lz_conn_acquire(z, 555, now, 1, 0, 0), LG_LZ_PASS, "a released entry is reused");
    lg_lz_conn_release(z, 7, 0);
    lg_lz_conn_release(z, 7, 0);
    lg_lz_conn_release(z, 7, 0);   /* one too many: stops at 0 */
    cr_assert_eq(lg_lz_conn_count(z, 7), 0);
}

/* A dead worker's lane is forgotten; the others' stay. */
Test(lz, clear_a_dead_workers_slot)
{
    lg_lz_t *z = zone(1 << 16, 1);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(lg_lz_conn_acquire(z, 5, SEC, 10, 0, 1), LG_LZ_PASS);
    cr_assert_eq(lg_lz_conn_acquire(z, 5, SEC, 10, 0, 2), LG_LZ_PASS);
    cr_assert_eq(lg_lz_conn_count(z, 5), 4);
    lg_lz_conn_clear_slot(z, 1);
    cr_assert_eq(lg_lz_conn_count(z, 5), 1, "slot 2's request still counted");
    lg_lz_conn_release(z, 5, 1);    /* a late release of the dead slot: stays at 0 */
    cr_assert_eq(lg_lz_conn_count(z, 5), 1);
    lg_lz_conn_release(z, 5, 2);
    cr_assert_eq(lg_lz_conn_count(z, 5), 0);
}

/* Another process sees and updates the same counts (the workers' case). */
Test(lz, shared_with_a_child)
{
    lg_lz_t *z = zone(1 << 16, 1);
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        for (int i = 0; i < 1000; i++)
            bad |= lg_lz_conn_acquire(z, 9, SEC, 1000000, 0, 0) != LG_LZ_PASS;
        _exit(bad);
    }
    for (int i = 0; i < 1000; i++)
        cr_assert_eq(lg_lz_conn_acquire(z, 9, SEC, 1000000, 0, 0), LG_LZ_PASS);
    int st;
    cr_assert_eq(waitpid(pid, &st, 0), pid);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    cr_assert_eq(lg_lz_conn_count(z, 9), 2000, "no increment lost: %lld",
                 (long long)lg_lz_conn_count(z, 9));
}
