/*
 * Asynchronous DNS on c-ares (see resolve.h for the contracts).
 *
 * Who owns what:
 *   - lg_resolver_t owns the c-ares channel, the tables (cache, queries in
 *     flight, hosts), the socket wrappers and two timers: one follows
 *     ares_timeout(), the other (0 ms) delivers ready answers.
 *   - An answer_t is refcounted: the cache holds one reference and every
 *     lookup it is being delivered to holds one, so an entry may be evicted
 *     while its answer waits for the delivery timer.
 *   - A query_t is what c-ares calls back with; it lives until c-ares calls
 *     back, even when every lookup waiting for it has been cancelled (its
 *     answer is still cached).  lg_resolver_free() detaches the queries
 *     (q->r = NULL) before ares_destroy(), whose callbacks then only free.
 *
 * User code runs only in deliver(), from the 0 ms timer, never under a
 * c-ares call, so a callback may do anything with the resolver, freeing it
 * included (deliver() then stops: see r->alive).
 */
#include "net/resolve.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

#define RESOLVER_MAGIC  0x52534c56u     /* "RSLV" */
#define LOOKUP_MAGIC    0x52534c51u     /* "RSLQ": waiting or ready */
#define LOOKUP_RUNNING  0x52534c43u     /* "RSLC": inside its callback */

#define NAME_MAX_LEN    253             /* without the trailing dot */
#define MAX_ADDRS_CAP   64
#define HOSTS_MAX_SIZE  (16u << 20)

/* ---- intrusive circular lists ---- */

typedef struct link {
    struct link *prev, *next;
} link_t;

#define CONTAINER_OF(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

static void list_init(link_t *h)
{
    h->prev = h->next = h;
}

static int list_empty(const link_t *h)
{
    return h->next == h;
}

static void list_add_tail(link_t *h, link_t *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

static void list_add_head(link_t *h, link_t *n)
{
    list_add_tail(h->next, n);
}

static void list_del(link_t *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Moves every node of from to the end of to; from ends empty. */
static void list_splice(link_t *to, link_t *from)
{
    if (list_empty(from))
        return;
    link_t *first = from->next, *last = from->prev;
    first->prev = to->prev;
    to->prev->next = first;
    last->next = to;
    to->prev = last;
    list_init(from);
}

/* ---- answers ---- */

typedef struct answer {
    uint32_t                refs;
    int                     status;     /* lg_resolve_status_t */
    size_t                  n;
    struct sockaddr_storage a[];
} answer_t;

static answer_t *answer_new(int status, size_t n)
{
    answer_t *a = malloc(sizeof(*a) + n * sizeof(a->a[0]));
    if (a == NULL)
        return NULL;
    a->refs = 1;
    a->status = status;
    a->n = n;
    return a;
}

static answer_t *answer_ref(answer_t *a)
{
    a->refs++;
    return a;
}

static void answer_unref(answer_t *a)
{
    if (a != NULL && --a->refs == 0)
        free(a);
}

/* ---- name tables: chained hashing, grown at load factor 1 ---- */

typedef struct hnode {
    struct hnode *next;
    uint64_t      h;
    size_t        len;
    char         *name;             /* lower case, no trailing dot */
} hnode_t;

typedef struct htab {
    hnode_t **b;                    /* owned */
    size_t    mask;                 /* buckets - 1 */
    size_t    n;
} htab_t;

static int htab_init(htab_t *t, size_t hint)
{
    size_t nb = 16;
    while (nb < hint && nb < ((size_t)1 << 30))
        nb <<= 1;
    t->b = calloc(nb, sizeof(*t->b));
    t->mask = nb - 1;
    t->n = 0;
    return t->b ? 0 : -1;
}

static hnode_t *htab_find(const htab_t *t, uint64_t h, const char *name, size_t len)
{
    for (hnode_t *n = t->b[h & t->mask]; n; n = n->next)
        if (n->h == h && n->len == len && memcmp(n->name, name, len) == 0)
            return n;
    return NULL;
}

static void htab_grow(htab_t *t)
{
    size_t nb = (t->mask + 1) * 2;
    hnode_t **b = calloc(nb, sizeof(*b));
    if (b == NULL)
        return;                     /* longer chains, still correct */
    for (size_t i = 0; i <= t->mask; i++) {
        hnode_t *n = t->b[i], *next;
        for (; n; n = next) {
            next = n->next;
            n->next = b[n->h & (nb - 1)];
            b[n->h & (nb - 1)] = n;
        }
    }
    free(t->b);
    t->b = b;
    t->mask = nb - 1;
}

static void htab_insert(htab_t *t, hnode_t *n)
{
    if (t->n > t->mask)
        htab_grow(t);
    hnode_t **head = &t->b[n->h & t->mask];
    n->next = *head;
    *head = n;
    t->n++;
}

static void htab_remove(htab_t *t, hnode_t *n)
{
    for (hnode_t **pp = &t->b[n->h & t->mask]; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            t->n--;
            return;
        }
    }
}

/* ---- the resolver ---- */

typedef struct centry {             /* a cached answer */
    hnode_t   hn;                   /* hn.name points into name[] */
    link_t    lru;                  /* r->lru, most recently used first */
    lg_msec_t expires;
    answer_t *ans;                  /* one reference */
    char      name[];
} centry_t;

typedef struct hentry {             /* a hosts-file name */
    hnode_t   hn;
    answer_t *ans;                  /* one reference */
    char      name[];
} hentry_t;

typedef struct query {              /* one c-ares lookup in flight */
    hnode_t        hn;
    link_t         waiters;         /* lg_resolve_t.link */
    lg_resolver_t *r;               /* NULL: the resolver is being freed */
    char           name[];
} query_t;

struct lg_resolve {
    uint32_t       magic;
    link_t         link;            /* in q->waiters, r->ready or a batch */
    answer_t      *ans;             /* set when ready: one reference */
    lg_resolve_cb  cb;
    void          *arg;
};

typedef struct rsock {              /* a socket c-ares asked us to watch */
    lg_io_t        io;              /* io.fd = -1 once c-ares is done with it */
    lg_resolver_t *r;
    uint32_t       events;
    struct rsock  *next;
} rsock_t;

struct lg_resolver {
    uint32_t           magic;
    lg_loop_t         *loop;        /* borrowed */
    ares_channel       ch;
    int                ch_ok;
    lg_resolver_opts_t o;           /* copy; its pointers are not kept */
    int                ai_family;   /* AF_INET, AF_INET6 or AF_UNSPEC */
    uint64_t           seed;

    rsock_t           *socks;       /* owned list */
    lg_timer_t         ares_timer;  /* ares_timeout() */
    lg_timer_t         ready_timer; /* 0 ms: deliver ready lookups */
    link_t             ready;       /* lg_resolve_t waiting for the timer */
    link_t            *batch;       /* the ones deliver() is going through */
    int               *alive;       /* deliver()'s flag, cleared by free */

    htab_t             cache;       /* centry_t */
    link_t             lru;
    htab_t             pending;     /* query_t */
    htab_t             hosts;       /* hentry_t */
    answer_t          *localhost;   /* owned reference, or NULL */
    answer_t          *nomem;       /* owned reference: LG_RESOLVE_ENOMEM */

    lg_resolver_stats_t st;
};

static const char *status_names[] = {
    [LG_RESOLVE_OK]        = "ok",
    [LG_RESOLVE_ENOTFOUND] = "NXDOMAIN (no such name)",
    [LG_RESOLVE_ENODATA]   = "no address for the name",
    [LG_RESOLVE_ETIMEOUT]  = "DNS timed out",
    [LG_RESOLVE_ESERVFAIL] = "DNS server failure",
    [LG_RESOLVE_EBADNAME]  = "invalid host name",
    [LG_RESOLVE_EBUSY]     = "too many DNS queries in flight",
    [LG_RESOLVE_ENOMEM]    = "out of memory",
    [LG_RESOLVE_EFAIL]     = "DNS lookup failed",
};

const char *lg_resolve_strerror(int status)
{
    if (status < 0 || (size_t)status >= sizeof(status_names) / sizeof(status_names[0]))
        return "unknown DNS status";
    return status_names[status];
}

void lg_resolver_opts_init(lg_resolver_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    o->family = LG_RESOLVE_V4_FIRST;
    o->cache_size = 1024;
    o->min_ttl = 0;
    o->max_ttl = 3600;
    o->neg_ttl = 5;
    o->timeout_ms = 1000;
    o->tries = 2;
    o->max_addrs = 8;
    o->max_queries = 1024;
}

static uint64_t name_hash(const lg_resolver_t *r, const char *s, size_t n)
{
    uint64_t h = r->seed ^ 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

/*
 * Host name syntax, leniently: letters, digits, '-' and '_' (seen in real
 * names), labels of 1..63, at most 253 in all.  Writes the lower-case form
 * without the trailing dot into key[NAME_MAX_LEN + 1].
 */
static int name_normalize(const char *name, size_t len, char *key, size_t *klen)
{
    if (len > 0 && name[len - 1] == '.')
        len--;
    if (len == 0 || len > NAME_MAX_LEN)
        return -1;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '.') {
            if (label == 0)
                return -1;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            label++;
        } else if (c >= 'A' && c <= 'Z') {
            c = (unsigned char)(c - 'A' + 'a');
            label++;
        } else {
            return -1;
        }
        if (label > 63)
            return -1;
        key[i] = (char)c;
    }
    if (label == 0)
        return -1;
    key[len] = '\0';
    *klen = len;
    return 0;
}

int lg_resolve_literal(const char *text, size_t len, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN + 1];
    int bracket = len >= 2 && text[0] == '[' && text[len - 1] == ']';
    if (bracket) {
        text++;
        len -= 2;
    }
    if (len == 0 || len >= sizeof(buf))
        return -1;
    memcpy(buf, text, len);
    buf[len] = '\0';
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (!bracket && inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        return 0;
    }
    return -1;
}

static int family_usable(const lg_resolver_t *r, int family)
{
    switch (r->o.family) {
    case LG_RESOLVE_V4_ONLY: return family == AF_INET;
    case LG_RESOLVE_V6_ONLY: return family == AF_INET6;
    default:                 return family == AF_INET || family == AF_INET6;
    }
}

/*
 * Keeps the usable families, drops duplicates, puts the preferred family
 * first (stable: c-ares' order within a family is the server's) and
 * truncates to max_addrs.  Returns the new count.
 */
static size_t addrs_arrange(const lg_resolver_t *r, struct sockaddr_storage *a, size_t n)
{
    struct sockaddr_storage tmp[MAX_ADDRS_CAP];
    int first = r->o.family == LG_RESOLVE_V6_FIRST ? AF_INET6 : AF_INET;
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n && k < MAX_ADDRS_CAP; i++) {
            int f = a[i].ss_family;
            if (!family_usable(r, f) || (pass == 0) != (f == first))
                continue;
            size_t sz = f == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
            int dup = 0;
            for (size_t j = 0; j < k && !dup; j++)
                dup = tmp[j].ss_family == f && memcmp(&tmp[j], &a[i], sz) == 0;
            if (!dup)
                tmp[k++] = a[i];
        }
    }
    if (k > r->o.max_addrs)
        k = r->o.max_addrs;
    memcpy(a, tmp, k * sizeof(*a));
    return k;
}

/* ---- delivery ---- */

static void lookup_free(lg_resolve_t *h)
{
    answer_unref(h->ans);
    h->magic = 0;
    free(h);
}

static void free_list(link_t *l)
{
    while (!list_empty(l)) {
        lg_resolve_t *h = CONTAINER_OF(l->next, lg_resolve_t, link);
        list_del(&h->link);
        lookup_free(h);
    }
}

/* Queues h for the delivery timer with a reference to a. */
static void make_ready(lg_resolver_t *r, lg_resolve_t *h, answer_t *a)
{
    h->ans = answer_ref(a);
    if (a->status != LG_RESOLVE_OK)
        r->st.failures++;
    list_add_tail(&r->ready, &h->link);
    if (!lg_timer_armed(&r->ready_timer))
        lg_timer_set(r->loop, &r->ready_timer, 0);
}

/* The same with a new answer of one status and no address. */
static void make_ready_status(lg_resolver_t *r, lg_resolve_t *h, int status)
{
    answer_t *a = answer_new(status, 0);
    if (a == NULL)
        a = answer_ref(r->nomem);
    make_ready(r, h, a);
    answer_unref(a);
}

/*
 * Delivers the lookups that were ready when the timer fired.  Those made
 * ready by the callbacks go into r->ready and a new run of the timer (still
 * within this lg_loop_once(), the timer being due at once), so no callback
 * ever runs inside another.
 */
static void deliver(lg_timer_t *t)
{
    lg_resolver_t *r = t->data;
    link_t batch;
    int alive = 1;

    list_init(&batch);
    list_splice(&batch, &r->ready);
    r->batch = &batch;
    r->alive = &alive;
    while (!list_empty(&batch)) {
        lg_resolve_t *h = CONTAINER_OF(batch.next, lg_resolve_t, link);
        list_del(&h->link);
        h->magic = LOOKUP_RUNNING;
        answer_t *a = h->ans;
        h->cb(h->arg, a->status, a->n ? a->a : NULL, a->n);
        lookup_free(h);
        if (!alive)
            return;                 /* r was freed, and the rest of batch with it */
    }
    r->batch = NULL;
    r->alive = NULL;
}

/* ---- c-ares plumbing ---- */

static void ares_timer_arm(lg_resolver_t *r)
{
    struct timeval tv, *tvp = ares_timeout(r->ch, NULL, &tv);
    if (tvp == NULL) {
        lg_timer_del(r->loop, &r->ares_timer);
        return;
    }
    /* round up, or the timer fires a little early and spins until it is due */
    lg_msec_t ms = (lg_msec_t)tvp->tv_sec * 1000 + (tvp->tv_usec + 999) / 1000;
    lg_timer_set(r->loop, &r->ares_timer, ms);
}

static void on_ares_timer(lg_timer_t *t)
{
    lg_resolver_t *r = t->data;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ares_timer_arm(r);
}

static void on_sock_event(lg_io_t *io, uint32_t events)
{
    rsock_t *s = io->data;
    lg_resolver_t *r = s->r;
    ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;
    uint32_t bad = EPOLLERR | EPOLLHUP;

    if ((events & (EPOLLIN | EPOLLRDHUP)) || ((events & bad) && (s->events & EPOLLIN)))
        rfd = io->fd;
    if ((events & EPOLLOUT) || ((events & bad) && (s->events & EPOLLOUT)))
        wfd = io->fd;
    /* s may be closed (and its memory deferred) in here: use r afterwards */
    ares_process_fd(r->ch, rfd, wfd);
    ares_timer_arm(r);
}

/*
 * c-ares' socket-state callback.  Level-triggered registration: c-ares
 * reads a TCP socket once per ares_process_fd(), so with EPOLLET the rest
 * of a reply could sit unnoticed.
 */
static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
    lg_resolver_t *r = data;
    rsock_t **pp = &r->socks, *s;
    while ((s = *pp) != NULL && s->io.fd != fd)
        pp = &s->next;

    if (!readable && !writable) {
        if (s != NULL) {
            *pp = s->next;
            lg_io_del(r->loop, &s->io);
            s->io.fd = -1;          /* events already queued for it are skipped */
            lg_loop_defer_free(r->loop, s);
        }
        return;
    }
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return;                 /* unwatched: the query times out */
        s->io.fd = fd;
        s->io.cb = on_sock_event;
        s->io.data = s;
        s->r = r;
        s->events = ev;
        if (lg_io_add(r->loop, &s->io, ev) < 0) {
            free(s);
            return;
        }
        s->next = r->socks;
        r->socks = s;
    } else if (s->events != ev) {
        if (lg_io_mod(r->loop, &s->io, ev) == 0)
            s->events = ev;
    }
}

static int status_from_ares(int st)
{
    switch (st) {
    case ARES_SUCCESS:      return LG_RESOLVE_OK;
    case ARES_ENOTFOUND:    return LG_RESOLVE_ENOTFOUND;
    case ARES_ENODATA:      return LG_RESOLVE_ENODATA;
    case ARES_ETIMEOUT:     return LG_RESOLVE_ETIMEOUT;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED:
    case ARES_EFORMERR:
    case ARES_EBADRESP:
    case ARES_ENOTIMP:      return LG_RESOLVE_ESERVFAIL;
    case ARES_EBADNAME:     return LG_RESOLVE_EBADNAME;
    case ARES_ENOMEM:       return LG_RESOLVE_ENOMEM;
    default:                return LG_RESOLVE_EFAIL;
    }
}

/* The answer for a c-ares result; *ttl is the smallest TTL in it. */
static answer_t *answer_from_ares(lg_resolver_t *r, int status, struct ares_addrinfo *ai,
                                  uint32_t *ttl)
{
    struct sockaddr_storage tmp[MAX_ADDRS_CAP];
    size_t n = 0;
    int64_t min = INT32_MAX;

    if (status == ARES_SUCCESS && ai != NULL) {
        for (struct ares_addrinfo_node *p = ai->nodes; p && n < MAX_ADDRS_CAP; p = p->ai_next) {
            size_t sz;
            if (p->ai_family == AF_INET)
                sz = sizeof(struct sockaddr_in);
            else if (p->ai_family == AF_INET6)
                sz = sizeof(struct sockaddr_in6);
            else
                continue;
            if (p->ai_addr == NULL || p->ai_addrlen < sz)
                continue;
            memset(&tmp[n], 0, sizeof(tmp[n]));
            memcpy(&tmp[n], p->ai_addr, sz);
            if (p->ai_family == AF_INET) {
                ((struct sockaddr_in *)&tmp[n])->sin_port = 0;
            } else {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&tmp[n];
                s6->sin6_port = 0;
                s6->sin6_flowinfo = 0;
                s6->sin6_scope_id = 0;
            }
            n++;
            if (p->ai_ttl < min)
                min = p->ai_ttl;
        }
        for (struct ares_addrinfo_cname *c = ai->cnames; c; c = c->next)
            if (c->ttl < min)
                min = c->ttl;
    }
    *ttl = min < 0 ? 0 : (uint32_t)min;

    int st = status_from_ares(status);
    n = st == LG_RESOLVE_OK ? addrs_arrange(r, tmp, n) : 0;
    if (st == LG_RESOLVE_OK && n == 0)
        st = LG_RESOLVE_ENODATA;
    answer_t *a = answer_new(st, n);
    if (a == NULL)
        return answer_ref(r->nomem);
    memcpy(a->a, tmp, n * sizeof(tmp[0]));
    return a;
}

/* ---- the cache ---- */

static void cache_remove(lg_resolver_t *r, centry_t *e)
{
    htab_remove(&r->cache, &e->hn);
    list_del(&e->lru);
    answer_unref(e->ans);
    free(e);
}

static void cache_insert(lg_resolver_t *r, const hnode_t *key, answer_t *a, uint32_t ttl)
{
    if (r->o.cache_size == 0 || ttl == 0)
        return;
    hnode_t *old = htab_find(&r->cache, key->h, key->name, key->len);
    if (old != NULL)
        cache_remove(r, CONTAINER_OF(old, centry_t, hn));
    while (r->cache.n >= r->o.cache_size && !list_empty(&r->lru))
        cache_remove(r, CONTAINER_OF(r->lru.prev, centry_t, lru));

    centry_t *e = malloc(sizeof(*e) + key->len + 1);
    if (e == NULL)
        return;
    memcpy(e->name, key->name, key->len + 1);
    e->hn.name = e->name;
    e->hn.len = key->len;
    e->hn.h = key->h;
    e->expires = r->loop->now + (lg_msec_t)ttl * 1000;
    e->ans = answer_ref(a);
    htab_insert(&r->cache, &e->hn);
    list_add_head(&r->lru, &e->lru);
}

void lg_resolver_flush(lg_resolver_t *r)
{
    while (!list_empty(&r->lru))
        cache_remove(r, CONTAINER_OF(r->lru.next, centry_t, lru));
}

/* c-ares is done with a query: cache the answer and queue its waiters. */
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    query_t *q = arg;
    lg_resolver_t *r = q->r;
    (void)timeouts;

    if (r == NULL) {                /* lg_resolver_free(): nobody to tell */
        if (ai != NULL)
            ares_freeaddrinfo(ai);
        free(q);
        return;
    }
    htab_remove(&r->pending, &q->hn);

    uint32_t ttl;
    answer_t *a = answer_from_ares(r, status, ai, &ttl);
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    if (a->status == LG_RESOLVE_OK) {
        if (ttl < r->o.min_ttl)
            ttl = r->o.min_ttl;
        if (ttl > r->o.max_ttl)
            ttl = r->o.max_ttl;
        cache_insert(r, &q->hn, a, ttl);
    } else if (a->status == LG_RESOLVE_ENOTFOUND || a->status == LG_RESOLVE_ENODATA) {
        cache_insert(r, &q->hn, a, r->o.neg_ttl);
    }
    while (!list_empty(&q->waiters)) {
        lg_resolve_t *h = CONTAINER_OF(q->waiters.next, lg_resolve_t, link);
        list_del(&h->link);
        make_ready(r, h, a);
    }
    answer_unref(a);
    free(q);
}

/* ---- lookups ---- */

lg_resolve_t *lg_resolve(lg_resolver_t *r, const char *name, lg_resolve_cb cb, void *arg)
{
    LG_BUG_ON(r == NULL || r->magic != RESOLVER_MAGIC);
    lg_resolve_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->magic = LOOKUP_MAGIC;
    h->cb = cb;
    h->arg = arg;
    list_init(&h->link);
    r->st.lookups++;

    size_t len = strlen(name);
    struct sockaddr_storage ss;
    if (lg_resolve_literal(name, len, &ss) == 0) {
        r->st.literals++;
        answer_t *a = answer_new(LG_RESOLVE_OK, 1);
        if (a == NULL) {
            make_ready(r, h, r->nomem);
            return h;
        }
        a->a[0] = ss;
        make_ready(r, h, a);
        answer_unref(a);
        return h;
    }

    char key[NAME_MAX_LEN + 2];
    size_t klen;
    if (name_normalize(name, len, key, &klen) < 0) {
        make_ready_status(r, h, LG_RESOLVE_EBADNAME);
        return h;
    }
    uint64_t hv = name_hash(r, key, klen);

    hnode_t *n = htab_find(&r->hosts, hv, key, klen);
    if (n != NULL) {
        r->st.hosts_hits++;
        make_ready(r, h, CONTAINER_OF(n, hentry_t, hn)->ans);
        return h;
    }
    if (r->localhost != NULL &&
        ((klen == 9 && memcmp(key, "localhost", 9) == 0) ||
         (klen > 10 && memcmp(key + klen - 10, ".localhost", 10) == 0))) {
        r->st.hosts_hits++;
        make_ready(r, h, r->localhost);
        return h;
    }

    n = htab_find(&r->cache, hv, key, klen);
    if (n != NULL) {
        centry_t *e = CONTAINER_OF(n, centry_t, hn);
        if (e->expires > r->loop->now) {
            r->st.cache_hits++;
            list_del(&e->lru);
            list_add_head(&r->lru, &e->lru);
            make_ready(r, h, e->ans);
            return h;
        }
        cache_remove(r, e);
    }

    n = htab_find(&r->pending, hv, key, klen);
    if (n != NULL) {
        r->st.joined++;
        list_add_tail(&CONTAINER_OF(n, query_t, hn)->waiters, &h->link);
        return h;
    }
    if (r->pending.n >= r->o.max_queries) {
        make_ready_status(r, h, LG_RESOLVE_EBUSY);
        return h;
    }

    query_t *q = malloc(sizeof(*q) + klen + 1);
    if (q == NULL) {
        make_ready(r, h, r->nomem);
        return h;
    }
    memcpy(q->name, key, klen + 1);
    q->hn.name = q->name;
    q->hn.len = klen;
    q->hn.h = hv;
    q->r = r;
    list_init(&q->waiters);
    list_add_tail(&q->waiters, &h->link);
    htab_insert(&r->pending, &q->hn);
    r->st.queries++;

    /* absolute unless search domains were asked for and the name has no final dot */
    if (!r->o.search || name[len - 1] == '.') {
        key[klen] = '.';
        key[klen + 1] = '\0';
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = r->ai_family;
    hints.ai_flags = ARES_AI_NOSORT;        /* we order by family ourselves */
    /* may call on_addrinfo() at once (and free q): q is not used after this */
    ares_getaddrinfo(r->ch, key, NULL, &hints, on_addrinfo, q);
    ares_timer_arm(r);
    return h;
}

void lg_resolve_cancel(lg_resolve_t *h)
{
    if (h == NULL || h->magic == LOOKUP_RUNNING)
        return;                     /* inside its own callback: nothing left to stop */
    LG_BUG_ON(h->magic != LOOKUP_MAGIC);
    list_del(&h->link);
    lookup_free(h);
}

void lg_resolver_get_stats(const lg_resolver_t *r, lg_resolver_stats_t *st)
{
    *st = r->st;
    st->cache_entries = r->cache.n;
    st->in_flight = r->pending.n;
}

/* ---- the hosts file ---- */

static int hosts_add(lg_resolver_t *r, const char *name, size_t len,
                     const struct sockaddr_storage *ss)
{
    char key[NAME_MAX_LEN + 2];
    size_t klen;
    if (name_normalize(name, len, key, &klen) < 0 || !family_usable(r, ss->ss_family))
        return 0;                   /* skipped, like libc does */
    uint64_t hv = name_hash(r, key, klen);
    hnode_t *n = htab_find(&r->hosts, hv, key, klen);
    hentry_t *e;
    if (n == NULL) {
        e = malloc(sizeof(*e) + klen + 1);
        if (e == NULL)
            return -1;
        memcpy(e->name, key, klen + 1);
        e->hn.name = e->name;
        e->hn.len = klen;
        e->hn.h = hv;
        e->ans = answer_new(LG_RESOLVE_OK, 0);
        if (e->ans == NULL) {
            free(e);
            return -1;
        }
        htab_insert(&r->hosts, &e->hn);
    } else {
        e = CONTAINER_OF(n, hentry_t, hn);
    }
    if (e->ans->n >= MAX_ADDRS_CAP)
        return 0;
    answer_t *a = realloc(e->ans, sizeof(*a) + (e->ans->n + 1) * sizeof(a->a[0]));
    if (a == NULL)
        return -1;
    a->a[a->n++] = *ss;
    e->ans = a;
    return 0;
}

static int hosts_load(lg_resolver_t *r, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > HOSTS_MAX_SIZE) {
        snprintf(err, errlen, "%s: not a regular file of at most 16 MiB", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)sb.st_size, got = 0;
    char *buf = malloc(size + 1);
    if (buf == NULL) {
        snprintf(err, errlen, "%s: out of memory", path);
        close(fd);
        return -1;
    }
    while (got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(err, errlen, "%s: %s", path, k < 0 ? strerror(errno) : "short read");
            free(buf);
            close(fd);
            return -1;
        }
        got += (size_t)k;
    }
    close(fd);
    buf[size] = '\0';

    int rc = 0;
    for (char *line = buf, *next; line != NULL && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        const char *ws = " \t\r\f\v";
        char *save = NULL;
        char *tok = strtok_r(line, ws, &save);
        struct sockaddr_storage ss;
        if (tok == NULL || lg_resolve_literal(tok, strlen(tok), &ss) < 0 || tok[0] == '[')
            continue;
        while (rc == 0 && (tok = strtok_r(NULL, ws, &save)) != NULL)
            rc = hosts_add(r, tok, strlen(tok), &ss);
    }
    free(buf);
    if (rc < 0) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* order each name's addresses; a name left with none goes to DNS */
    for (size_t i = 0; i <= r->hosts.mask; i++) {
        for (hnode_t **pp = &r->hosts.b[i]; *pp;) {
            hentry_t *e = CONTAINER_OF(*pp, hentry_t, hn);
            e->ans->n = addrs_arrange(r, e->ans->a, e->ans->n);
            if (e->ans->n == 0) {
                *pp = e->hn.next;
                r->hosts.n--;
                answer_unref(e->ans);
                free(e);
            } else {
                pp = &e->hn.next;
            }
        }
    }
    return 0;
}

static void hosts_free(lg_resolver_t *r)
{
    if (r->hosts.b == NULL)
        return;
    for (size_t i = 0; i <= r->hosts.mask; i++) {
        hnode_t *n = r->hosts.b[i], *next;
        for (; n; n = next) {
            next = n->next;
            hentry_t *e = CONTAINER_OF(n, hentry_t, hn);
            answer_unref(e->ans);
            free(e);
        }
    }
    free(r->hosts.b);
    r->hosts.b = NULL;
}

static answer_t *localhost_answer(lg_resolver_t *r)
{
    struct sockaddr_storage a[2];
    lg_resolve_literal("127.0.0.1", 9, &a[0]);
    lg_resolve_literal("::1", 3, &a[1]);
    size_t n = addrs_arrange(r, a, 2);
    answer_t *ans = answer_new(LG_RESOLVE_OK, n);
    if (ans != NULL)
        memcpy(ans->a, a, n * sizeof(a[0]));
    return ans;
}

/* ---- life cycle ---- */

static int set_servers(lg_resolver_t *r, const lg_resolver_opts_t *o, char *err, size_t errlen)
{
    size_t total = 1;
    for (size_t i = 0; i < o->nservers; i++) {
        const char *s = o->servers[i];
        if (s == NULL || s[0] == '\0' || strpbrk(s, ", \t") != NULL) {
            snprintf(err, errlen, "bad name server address \"%s\"", s ? s : "(null)");
            return -1;
        }
        total += strlen(s) + 1;
    }
    char *csv = malloc(total);
    if (csv == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t off = 0;
    for (size_t i = 0; i < o->nservers; i++) {
        size_t l = strlen(o->servers[i]);
        if (i)
            csv[off++] = ',';
        memcpy(csv + off, o->servers[i], l);
        off += l;
    }
    csv[off] = '\0';
    int rc = ares_set_servers_ports_csv(r->ch, csv);
    if (rc != ARES_SUCCESS)
        snprintf(err, errlen, "bad name server list \"%s\": %s", csv, ares_strerror(rc));
    free(csv);
    return rc == ARES_SUCCESS ? 0 : -1;
}

lg_resolver_t *lg_resolver_new(lg_loop_t *loop, const lg_resolver_opts_t *o,
                               char *err, size_t errlen)
{
    lg_resolver_opts_t defaults;
    if (o == NULL) {
        lg_resolver_opts_init(&defaults);
        o = &defaults;
    }
    if (o->family > LG_RESOLVE_V6_ONLY || o->max_addrs == 0 || o->max_addrs > MAX_ADDRS_CAP ||
        o->max_queries == 0 || o->tries == 0 || o->timeout_ms == 0 || o->min_ttl > o->max_ttl) {
        snprintf(err, errlen, "bad resolver options (family, max_addrs 1..%d, "
                 "max_queries, tries, timeout must be set, min_ttl <= max_ttl)", MAX_ADDRS_CAP);
        return NULL;
    }
    int rc = ares_library_init(ARES_LIB_INIT_ALL);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        return NULL;
    }
    lg_resolver_t *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        ares_library_cleanup();
        return NULL;
    }
    r->magic = RESOLVER_MAGIC;
    r->loop = loop;
    r->o = *o;
    r->o.servers = NULL;
    r->o.hosts_file = NULL;
    r->ai_family = o->family == LG_RESOLVE_V4_ONLY ? AF_INET
                 : o->family == LG_RESOLVE_V6_ONLY ? AF_INET6 : AF_UNSPEC;
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        r->seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                  ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)r;
    }
    r->ares_timer.cb = on_ares_timer;
    r->ares_timer.data = r;
    r->ready_timer.cb = deliver;
    r->ready_timer.data = r;
    list_init(&r->ready);
    list_init(&r->lru);

    if (htab_init(&r->cache, o->cache_size < 65536 ? o->cache_size : 65536) < 0 ||
        htab_init(&r->pending, 64) < 0 ||
        htab_init(&r->hosts, 16) < 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    r->nomem = answer_new(LG_RESOLVE_ENOMEM, 0);
    r->localhost = localhost_answer(r);
    if (r->nomem == NULL || r->localhost == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (o->hosts_file != NULL && hosts_load(r, o->hosts_file, err, errlen) < 0)
        goto fail;

    struct ares_options ao;
    memset(&ao, 0, sizeof(ao));
    ao.flags = o->search ? 0 : ARES_FLAG_NOSEARCH;
    ao.timeout = (int)o->timeout_ms;
    ao.tries = (int)o->tries;
    ao.lookups = (char *)"b";       /* DNS only: our hosts table was consulted first */
    ao.sock_state_cb = sock_state_cb;
    ao.sock_state_cb_data = r;
    rc = ares_init_options(&r->ch, &ao, ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
                           ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB);
    if (rc != ARES_SUCCESS) {
        snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
        goto fail;
    }
    r->ch_ok = 1;
    if (o->nservers > 0 && set_servers(r, o, err, errlen) < 0)
        goto fail;
    return r;

fail:
    lg_resolver_free(r);
    return NULL;
}

void lg_resolver_free(lg_resolver_t *r)
{
    if (r == NULL)
        return;
    LG_BUG_ON(r->magic != RESOLVER_MAGIC);
    if (r->alive != NULL)
        *r->alive = 0;              /* deliver() is on the stack: stop it */
    free_list(&r->ready);
    if (r->batch != NULL)
        free_list(r->batch);
    lg_timer_del(r->loop, &r->ready_timer);
    lg_timer_del(r->loop, &r->ares_timer);

    /* detach the queries: ares_destroy() calls back, and on_addrinfo frees them */
    if (r->pending.b != NULL) {
        for (size_t i = 0; i <= r->pending.mask; i++) {
            for (hnode_t *n = r->pending.b[i]; n; n = n->next) {
                query_t *q = CONTAINER_OF(n, query_t, hn);
                free_list(&q->waiters);
                q->r = NULL;
            }
        }
    }
    if (r->ch_ok)
        ares_destroy(r->ch);        /* closes sockets through sock_state_cb */
    while (r->socks != NULL)        /* any c-ares did not report */
        sock_state_cb(r, r->socks->io.fd, 0, 0);
    free(r->pending.b);

    if (r->cache.b != NULL)
        lg_resolver_flush(r);
    free(r->cache.b);
    hosts_free(r);
    answer_unref(r->localhost);
    answer_unref(r->nomem);
    r->magic = 0;
    free(r);
    ares_library_cleanup();
}
