/*
 * Unit tests of the shared-memory segment (core/shm.c): zone find-or-create
 * and reload semantics, alignment, running out of room, and what other
 * processes see: a forked child's writes, robust mutexes whose owner dies
 * (by _exit and by SIGKILL), exact totals under contention.
 *
 * Children never call cr_assert: they report through their exit status,
 * which the parent checks.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/shm.h"

static lg_shm_t *shm;
static char err[256];

static void setup(void)
{
    err[0] = '\0';
    shm = lg_shm_create(1 << 20, err, sizeof(err));
    cr_assert_not_null(shm, "lg_shm_create: %s", err);
}

static void teardown(void)
{
    lg_shm_destroy(shm);
    shm = NULL;
}

TestSuite(shm, .init = setup, .fini = teardown, .timeout = 30);

/* Wait for pid and return its exit status, or 128 + signal. */
static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        cr_assert_eq(errno, EINTR, "waitpid: %s", strerror(errno));
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static pid_t spawn(void (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    return pid;
}

/* ---- creation ---- */

Test(shm, create_rejects_bad_sizes)
{
    char e[128] = "";
    cr_expect_null(lg_shm_create(0, e, sizeof(e)));
    cr_expect_neq(e[0], '\0', "no message");
    e[0] = '\0';
    cr_expect_null(lg_shm_create(SIZE_MAX, e, sizeof(e)));
    cr_expect_neq(e[0], '\0', "no message");
    lg_shm_destroy(NULL);               /* NULL-safe */
}

/* ---- find-or-create: one step per line, against the same segment ---- */

#define NAME31 "abcdefghijklmnopqrstuvwxyz01234"
#define NAME32 "abcdefghijklmnopqrstuvwxyz012345"

typedef struct {
    const char *name;
    size_t      size;
    int         fresh;      /* expected *fresh */
    int         same_as;    /* step whose pointer must come back, or -1 for new memory */
    int         err;        /* expected errno when NULL, 0 for success */
} zone_step_t;

static const zone_step_t zone_steps[] = {
    /* 0 */ { "a",    100, 1, -1, 0 },
    /* 1 */ { "a",    100, 0,  0, 0 },          /* found again: same memory */
    /* 2 */ { "b",    100, 1, -1, 0 },
    /* 3 */ { "a",    200, 1, -1, 0 },          /* resized: new memory */
    /* 4 */ { "a",    200, 0,  3, 0 },
    /* 5 */ { "b",    100, 0,  2, 0 },
    /* 6 */ { "",      10, 0, -1, EINVAL },
    /* 7 */ { NAME32,  10, 0, -1, EINVAL },
    /* 8 */ { NAME31,  10, 1, -1, 0 },
    /* 9 */ { NAME31,  10, 0,  8, 0 },
    /*10 */ { "c",      0, 0, -1, EINVAL },
    /*11 */ { NULL,    10, 0, -1, EINVAL },
    /*12 */ { "huge", (size_t)1 << 21, 0, -1, ENOSPC },
    /*13 */ { "A",    100, 1, -1, 0 },          /* names are case-sensitive */
};

#define NSTEPS (sizeof(zone_steps) / sizeof(zone_steps[0]))

Test(shm, zone_find_or_create)
{
    void *got[NSTEPS];
    for (size_t i = 0; i < NSTEPS; i++) {
        const zone_step_t *z = &zone_steps[i];
        int fresh = -1;
        errno = 0;
        got[i] = lg_shm_zone(shm, z->name, z->size, &fresh);
        if (z->err) {
            cr_expect_null(got[i], "step %zu: expected NULL", i);
            cr_expect_eq(errno, z->err, "step %zu: errno %d, want %d", i, errno, z->err);
            cr_expect_eq(fresh, 0, "step %zu: fresh %d on failure", i, fresh);
            continue;
        }
        cr_assert_not_null(got[i], "step %zu: %s", i, strerror(errno));
        cr_expect_eq(fresh, z->fresh, "step %zu: fresh %d, want %d", i, fresh, z->fresh);
        for (size_t j = 0; j < i; j++) {
            if (zone_steps[j].err)
                continue;
            if ((int)j == z->same_as)
                cr_expect_eq(got[i], got[j], "step %zu: not the memory of step %zu", i, j);
            else if (z->same_as < 0)
                cr_expect_neq(got[i], got[j], "step %zu: reused the memory of step %zu", i, j);
        }
        if (z->fresh) {
            unsigned char *p = got[i];
            for (size_t k = 0; k < z->size; k++)
                cr_assert_eq(p[k], 0, "step %zu: fresh zone not zeroed at %zu", i, k);
            memset(p, 0xA5, z->size);   /* later steps see it if they get the same memory */
        } else {
            cr_expect_eq(((unsigned char *)got[i])[z->size - 1], 0xA5,
                         "step %zu: contents not kept", i);
        }
    }
}

Test(shm, fresh_may_be_null)
{
    cr_expect_not_null(lg_shm_zone(shm, "x", 8, NULL));
    cr_expect_not_null(lg_shm_zone(shm, "x", 8, NULL));
}

Test(shm, zones_are_aligned_and_disjoint)
{
    static const size_t sizes[] = { 1, 63, 64, 65, 127, 128, 129, 1000, 4095, 4096, 4097, 7 };
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    char *p[N];
    for (size_t i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof(name), "z%zu", i);
        p[i] = lg_shm_zone(shm, name, sizes[i], NULL);
        cr_assert_not_null(p[i]);
        cr_expect_eq((uintptr_t)p[i] % LG_SHM_ALIGN, 0, "zone %zu (size %zu) misaligned", i, sizes[i]);
        cr_expect_gt(lg_shm_off(shm, p[i]), 0);
        memset(p[i], (int)i + 1, sizes[i]);
    }
    for (size_t i = 0; i < N; i++)
        for (size_t k = 0; k < sizes[i]; k++)
            cr_assert_eq(p[i][k], (char)(i + 1), "zone %zu overwritten at %zu", i, k);
}

/* ---- running out ---- */

Test(shm, table_full)
{
    char name[16];
    for (int i = 0; i < LG_SHM_MAX_ZONES; i++) {
        snprintf(name, sizeof(name), "z%d", i);
        cr_assert_not_null(lg_shm_zone(shm, name, 64, NULL), "zone %d", i);
    }
    errno = 0;
    cr_expect_null(lg_shm_zone(shm, "one-more", 64, NULL));
    cr_expect_eq(errno, ENOSPC);
    /* finding an existing zone needs no slot */
    int fresh = -1;
    cr_expect_not_null(lg_shm_zone(shm, "z5", 64, &fresh));
    cr_expect_eq(fresh, 0);
    /* resizing one does: it fails and the old zone stays */
    cr_expect_null(lg_shm_zone(shm, "z5", 128, NULL));
    cr_expect_not_null(lg_shm_zone(shm, "z5", 64, &fresh));
    cr_expect_eq(fresh, 0);
}

Test(shm, space_full)
{
    char e[128];
    lg_shm_t *small = lg_shm_create(8192, e, sizeof(e));
    cr_assert_not_null(small, "%s", e);
    char name[16];
    char *z[LG_SHM_MAX_ZONES];
    int n = 0;
    for (;;) {
        snprintf(name, sizeof(name), "z%d", n);
        errno = 0;
        z[n] = lg_shm_zone(small, name, 1000, NULL);
        if (z[n] == NULL)
            break;
        memset(z[n], n + 1, 1000);
        cr_assert_lt(++n, LG_SHM_MAX_ZONES, "never full");
    }
    cr_expect_eq(errno, ENOSPC);
    cr_expect_geq(n, 8, "only %d zones of 1000 bytes in 8 KiB", n);
    cr_expect_null(lg_shm_zone(small, "big", 8192, NULL));
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 1000; k++)
            cr_assert_eq(z[i][k], (char)(i + 1), "zone %d damaged", i);
    lg_shm_destroy(small);
}

/* ---- reload: generations, sweep, reuse ---- */

Test(shm, reload_keeps_requested_and_sweeps_the_rest)
{
    int fresh;
    uint64_t *a = lg_shm_zone(shm, "a", 64, &fresh);
    uint64_t *b = lg_shm_zone(shm, "b", 64, &fresh);
    uint64_t *c = lg_shm_zone(shm, "c", 100, &fresh);
    cr_assert(a && b && c);
    *a = 1; *b = 2; *c = 3;

    /* reload: the new configuration wants a (same), c (bigger), not b */
    unsigned g2 = lg_shm_mark_unused(shm);
    cr_expect_eq(g2, 2);
    cr_expect_eq(lg_shm_zone(shm, "a", 64, &fresh), a);
    cr_expect_eq(fresh, 0);
    cr_expect_eq(*a, 1);
    uint64_t *c2 = lg_shm_zone(shm, "c", 200, &fresh);
    cr_expect_eq(fresh, 1);
    cr_expect_neq(c2, c);
    cr_expect_eq(*c2, 0);

    /* workers of generation 1 still run: nothing may go */
    cr_expect_eq(lg_shm_sweep(shm, 1), 0);
    cr_expect_eq(*b, 2);
    cr_expect_eq(*c, 3);

    /* they have exited: b and the old c are released */
    cr_expect_eq(lg_shm_sweep(shm, g2), 2);
    cr_expect_eq(lg_shm_zone(shm, "a", 64, &fresh), a);
    cr_expect_eq(fresh, 0);
    cr_expect_eq(lg_shm_zone(shm, "c", 200, &fresh), c2);
    cr_expect_eq(fresh, 0);

    /* released space is handed out again, zeroed */
    uint64_t *b2 = lg_shm_zone(shm, "b", 64, &fresh);
    cr_expect_eq(fresh, 1);
    cr_expect_eq(b2, b, "first fit should reuse the lowest free range");
    cr_expect_eq(*b2, 0);
    uint64_t *d = lg_shm_zone(shm, "d", 100, &fresh);
    cr_expect_eq(d, c, "the old c's range is free again");
    cr_expect_eq(*d, 0);
}

Test(shm, failed_requests_do_not_disturb)
{
    int fresh;
    uint64_t *a = lg_shm_zone(shm, "a", 64, &fresh);
    *a = 7;
    lg_shm_mark_unused(shm);
    cr_expect_null(lg_shm_zone(shm, "a", (size_t)1 << 22, &fresh));    /* too big */
    cr_expect_eq(lg_shm_zone(shm, "a", 64, &fresh), a);
    cr_expect_eq(fresh, 0);
    cr_expect_eq(*a, 7);
}

/* ---- other processes ---- */

typedef struct {
    uint64_t msg_off;           /* where the child put its message: an offset, not a pointer */
    uint64_t len;
} note_t;

static void child_tries_zone(void *arg)
{
    (void)arg;
    note_t *n = lg_shm_zone(shm, "note", sizeof(note_t), NULL);     /* EPERM: not the owner */
    if (n != NULL || errno != EPERM)
        _exit(2);
    _exit(0);
}

Test(shm, child_may_not_edit_the_table)
{
    cr_expect_eq(reap(spawn(child_tries_zone, NULL)), 0, "a worker created a zone");
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int bad = lg_shm_mark_unused(shm) != 0 || lg_shm_sweep(shm, 100) != -1 || errno != EPERM;
        _exit(bad);
    }
    cr_expect_eq(reap(pid), 0, "a worker swept the table");
}

static note_t *note;
static char *text;

static void child_leaves_note(void *arg)
{
    (void)arg;
    static const char msg[] = "written by the child";
    char *p = text + 100;
    memcpy(p, msg, sizeof(msg));
    note->len = sizeof(msg);
    note->msg_off = lg_shm_off(shm, p);
}

Test(shm, child_writes_parent_reads)
{
    note = lg_shm_zone(shm, "note", sizeof(*note), NULL);
    text = lg_shm_zone(shm, "text", 4096, NULL);
    cr_assert(note && text);
    cr_expect_eq(reap(spawn(child_leaves_note, NULL)), 0);

    /* the parent finds the zone by name again and follows the offset */
    int fresh;
    note_t *n = lg_shm_zone(shm, "note", sizeof(*n), &fresh);
    cr_expect_eq(fresh, 0);
    cr_assert_neq(n->msg_off, 0, "the child's write is not visible");
    const char *msg = lg_shm_ptr(shm, n->msg_off);
    cr_expect_eq(msg, text + 100);
    cr_expect_eq(n->len, sizeof("written by the child"));
    cr_expect_str_eq(msg, "written by the child");
    cr_expect_null(lg_shm_ptr(shm, 0));
    cr_expect_eq(lg_shm_off(shm, NULL), 0);
}

/* ---- robust mutexes ---- */

typedef struct {
    lg_shm_mutex_t mx;
    uint64_t       n;
    lg_shm_counter_t an;
} locked_t;

static locked_t *lk;

static void lk_setup(void)
{
    setup();
    int fresh;
    lk = lg_shm_zone(shm, "lock", sizeof(*lk), &fresh);
    cr_assert_not_null(lk);
    cr_assert_eq(fresh, 1);
    cr_assert_eq(lg_shm_mutex_init(&lk->mx), 0);
}

static void child_locks_and_exits(void *arg)
{
    (void)arg;
    if (lg_shm_lock(&lk->mx) != 0)
        _exit(2);
    lk->n = 42;                         /* half-way through an update */
    _exit(0);                           /* without unlocking */
}

Test(shm, lock_owner_exited, .init = lk_setup, .fini = teardown)
{
    cr_assert_eq(reap(spawn(child_locks_and_exits, NULL)), 0);
    cr_expect_eq(lg_shm_lock(&lk->mx), 1, "the dead owner is not reported");
    cr_expect_eq(lk->n, 42);
    lk->n = 0;                          /* the repair */
    lg_shm_unlock(&lk->mx);
    cr_expect_eq(lg_shm_lock(&lk->mx), 0, "the mutex stayed broken");
    lg_shm_unlock(&lk->mx);
    cr_expect_eq(lg_shm_lock(&lk->mx), 0);
    lg_shm_unlock(&lk->mx);
}

static int ready[2];

static void child_locks_and_waits(void *arg)
{
    (void)arg;
    if (lg_shm_lock(&lk->mx) != 0)
        _exit(2);
    if (write(ready[1], "x", 1) != 1)
        _exit(3);
    for (;;)
        pause();                        /* until SIGKILL */
}

static void child_waits_for_lock(void *arg)
{
    (void)arg;
    int rc = lg_shm_lock(&lk->mx);
    lg_shm_unlock(&lk->mx);
    _exit(rc == 1 ? 0 : 10 + rc);
}

Test(shm, lock_owner_killed, .init = lk_setup, .fini = teardown)
{
    cr_assert_eq(pipe(ready), 0);
    pid_t holder = spawn(child_locks_and_waits, NULL);
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1);

    /* another worker blocks on the lock while its holder is killed */
    pid_t waiter = spawn(child_waits_for_lock, NULL);
    usleep(50 * 1000);
    cr_assert_eq(kill(holder, SIGKILL), 0);
    cr_expect_eq(reap(holder), 128 + SIGKILL);
    cr_expect_eq(reap(waiter), 0, "the waiter did not get the lock with \"owner died\"");

    cr_expect_eq(lg_shm_lock(&lk->mx), 0);
    lg_shm_unlock(&lk->mx);
    close(ready[0]);
    close(ready[1]);
}

Test(shm, lock_owner_killed_nobody_waiting, .init = lk_setup, .fini = teardown)
{
    cr_assert_eq(pipe(ready), 0);
    pid_t holder = spawn(child_locks_and_waits, NULL);
    char c;
    cr_assert_eq(read(ready[0], &c, 1), 1);
    cr_assert_eq(kill(holder, SIGKILL), 0);
    cr_expect_eq(reap(holder), 128 + SIGKILL);
    cr_expect_eq(lg_shm_lock(&lk->mx), 1);
    lg_shm_unlock(&lk->mx);
    cr_expect_eq(lg_shm_lock(&lk->mx), 0);
    lg_shm_unlock(&lk->mx);
    close(ready[0]);
    close(ready[1]);
}

#define INCREMENTS 100000

static int gate[2];             /* children start together when the parent closes it */

static void child_increments(void *arg)
{
    (void)arg;
    char c;
    close(gate[1]);
    if (read(gate[0], &c, 1) != 0)
        _exit(3);
    for (int i = 0; i < INCREMENTS; i++) {
        if (lg_shm_lock(&lk->mx) != 0)
            _exit(2);
        lk->n++;
        lg_shm_unlock(&lk->mx);
        lg_shm_add(&lk->an, 1);
    }
}

Test(shm, two_processes_exact_total, .init = lk_setup, .fini = teardown)
{
    cr_assert_eq(pipe(gate), 0);
    pid_t a = spawn(child_increments, NULL);
    pid_t b = spawn(child_increments, NULL);
    close(gate[0]);
    close(gate[1]);
    cr_expect_eq(reap(a), 0);
    cr_expect_eq(reap(b), 0);
    cr_expect_eq(lk->n, 2 * INCREMENTS, "locked total %llu", (unsigned long long)lk->n);
    cr_expect_eq(lg_shm_get(&lk->an), 2 * INCREMENTS);
}

/* ---- atomic helpers ---- */

Test(shm, counters)
{
    lg_shm_counter_t *c = lg_shm_zone(shm, "c", sizeof(*c), NULL);
    cr_assert_not_null(c);
    cr_expect_eq(lg_shm_get(c), 0);
    cr_expect_eq(lg_shm_add(c, 5), 5);
    cr_expect_eq(lg_shm_sub_sat(c, 2), 3);
    cr_expect_eq(lg_shm_sub_sat(c, 10), 0, "wrapped below zero");
    cr_expect_eq(lg_shm_max(c, 9), 9);
    cr_expect_eq(lg_shm_max(c, 4), 9);
    lg_shm_set(c, 1);
    cr_expect_eq(lg_shm_get(c), 1);
}
