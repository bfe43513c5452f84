/*
 * Static files (a route with root or alias): nginx's root, alias, index,
 * try_files with a fallback to a named route, ETag / Last-Modified,
 * conditional requests and single byte ranges, answered in the CONTENT
 * phase and sent by a stage of its own.
 *
 * No way out of the root: the path is the normalised one routing matched
 * (percent-decoded, dot segments resolved, 400 when they climb above "/"),
 * and the file is opened relative to a descriptor of the root with
 * openat2(RESOLVE_BENEATH), so neither ".." nor a symlink leads outside
 * it; symlinks = "off" refuses every symlink, "on" follows them anywhere
 * as nginx does by default.
 *
 * The body goes out with sendfile(2) on a plain socket, a chunk at a time
 * while the socket takes it (as nginx without aio); over TLS or an HTTP/2
 * stream it is read into a buffer and written through the end.  Opening
 * and reading a file on local disk blocks for as long as the disk takes,
 * as in nginx without thread pools.
 */
#include "pipeline/request.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "http/date.h"
#include "http/message.h"
#include "pipeline/headers.h"
#include "pipeline/vars.h"

#include "feature/static.h"

#define CHUNK (128 * 1024)      /* one sendfile or read: other connections get their turn between */

/* ---- MIME types: /etc/mime.types, else a small table ---- */

typedef struct mime {
    char   *ext;
    char   *type;
    size_t  order;              /* line order: the first type naming an extension wins */
} mime_t;

static const struct { const char *ext, *type; } builtin_types[] = {
    { "css", "text/css" }, { "gif", "image/gif" }, { "htm", "text/html" },
    { "html", "text/html" }, { "ico", "image/x-icon" }, { "jpeg", "image/jpeg" },
    { "jpg", "image/jpeg" }, { "js", "text/javascript" }, { "json", "application/json" },
    { "mjs", "text/javascript" }, { "pdf", "application/pdf" }, { "png", "image/png" },
    { "svg", "image/svg+xml" }, { "txt", "text/plain" }, { "wasm", "application/wasm" },
    { "webp", "image/webp" }, { "woff", "font/woff" }, { "woff2", "font/woff2" },
    { "xml", "text/xml" }, { "zip", "application/zip" },
};

static mime_t *types;           /* sorted by extension, one entry each */
static size_t  ntypes;

static int mime_cmp(const void *a, const void *b)
{
    const mime_t *x = a, *y = b;
    int c = strcasecmp(x->ext, y->ext);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}

static int mime_add(size_t *cap, const char *ext, const char *type)
{
    if (ntypes == *cap) {
        size_t ncap = *cap ? *cap * 2 : 1024;
        mime_t *n = realloc(types, ncap * sizeof(*n));
        if (n == NULL)
            return -1;
        types = n;
        *cap = ncap;
    }
    types[ntypes] = (mime_t){ strdup(ext), strdup(type), ntypes };
    if (types[ntypes].ext == NULL || types[ntypes].type == NULL) {
        free(types[ntypes].ext);
        free(types[ntypes].type);
        return -1;
    }
    ntypes++;
    return 0;
}

/* "type ext ext ..." lines and '#' comments, as /etc/mime.types has them. */
static int mime_init(void)
{
    FILE *f = fopen("/etc/mime.types", "re");
    char line[2048];
    size_t cap = 0;
    if (types)
        return 0;
    while (f && fgets(line, sizeof(line), f)) {
        char *save = NULL, *type = strtok_r(line, " \t\r\n", &save);
        if (type == NULL || type[0] == '#' || strchr(type, '/') == NULL)
            continue;
        for (char *ext; (ext = strtok_r(NULL, " \t\r\n", &save)) != NULL && ext[0] != '#';)
            if (mime_add(&cap, ext, type) < 0)
                break;
    }
    if (f)
        fclose(f);
    if (ntypes == 0)
        for (size_t i = 0; i < sizeof(builtin_types) / sizeof(builtin_types[0]); i++)
            mime_add(&cap, builtin_types[i].ext, builtin_types[i].type);
    if (ntypes) {
        qsort(types, ntypes, sizeof(*types), mime_cmp);
        size_t k = 0;
        for (size_t i = 0; i < ntypes; i++) {
            if (k && strcasecmp(types[k - 1].ext, types[i].ext) == 0) {
                free(types[i].ext);
                free(types[i].type);
                continue;
            }
            types[k++] = types[i];
        }
        ntypes = k;
    }
    return 0;
}

/* The type of a file by its extension; NULL: the route's default_type. */
static const char *mime_of(const char *path)
{
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    if (dot == NULL || (slash && dot < slash) || dot[1] == '\0' || ntypes == 0)
        return NULL;
    mime_t key = { (char *)dot + 1, NULL, 0 };
    size_t lo = 0, hi = ntypes;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcasecmp(key.ext, types[mid].ext);
        if (c == 0)
            return types[mid].type;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* ---- opening below the root ---- */

/* Where the kernel says descriptor fd is; 0, or -1 when it cannot say. */
static int fd_path(int fd, char *out, size_t n)
{
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    ssize_t k = readlink(proc, out, n - 1);
    if (k <= 0 || (size_t)k >= n - 1)
        return -1;
    out[k] = '\0';
    return 0;
}

/*
 * rel (no leading '/', "" for the root itself) under the directory dirfd:
 * a descriptor open for reading, or -1 with errno (ENOENT, EACCES, ELOOP
 * for a refused symlink, EXDEV for a way out of the root).
 *
 * The name is first opened O_PATH, which opens nothing (no device, no
 * FIFO): only a regular file or a directory, where the kernel says it is,
 * is then opened for reading through /proc/self/fd.  "off": openat2 with
 * RESOLVE_NO_SYMLINKS and RESOLVE_BENEATH refuses any symlink and any way
 * up; "inside": symlinks are followed, and the file must be below the
 * root's own real path; "on": anywhere (nginx's disable_symlinks off).
 */
static int open_below(int dirfd, const char *rel, int symlinks)
{
    long pfd;
    if (rel[0] == '\0')
        rel = ".";
    if (symlinks == LG_SYMLINKS_OFF) {
        struct open_how how = {
            .flags = O_PATH | O_CLOEXEC,
            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        };
        do {
            pfd = syscall(SYS_openat2, dirfd, rel, &how, sizeof(how));
        } while (pfd < 0 && errno == EAGAIN);
    } else {
        pfd = openat(dirfd, rel, O_PATH | O_CLOEXEC);
    }
    if (pfd < 0)
        return -1;
    struct stat sb;
    char proc[64], at[PATH_MAX], root[PATH_MAX];
    int fd = -1, e = EACCES;
    if (fstat((int)pfd, &sb) < 0 || !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)))
        goto done;              /* devices, FIFOs, sockets: never opened */
    if (symlinks == LG_SYMLINKS_INSIDE) {
        if (fd_path((int)pfd, at, sizeof(at)) < 0 || fd_path(dirfd, root, sizeof(root)) < 0)
            goto done;
        size_t rl = strlen(root);
        if (rl == 1)
            rl = 0;             /* the root is "/" */
        if (strncmp(at, root, rl) != 0 || (at[rl] != '/' && at[rl] != '\0')) {
            e = EXDEV;
            goto done;
        }
    }
    snprintf(proc, sizeof(proc), "/proc/self/fd/%ld", pfd);
    fd = open(proc, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    e = errno;
done:
    close((int)pfd);
    errno = e;
    return fd;
}

/* ---- the request's state ---- */

typedef struct st {
    int      fd;                /* the file, -1 once closed */
    int64_t  off, end;          /* what is left to send: [off, end) */
    char    *buf;               /* TLS / HTTP/2: bytes read, not yet all written */
    size_t   bpos, blen;
} st_t;

static int static_slot;

static void st_close(void *arg)
{
    st_t *st = arg;
    if (st->fd >= 0) {
        close(st->fd);
        st->fd = -1;
    }
}

static void body_step(lg_req_t *r);

static lg_msec_t body_arm(lg_req_t *r, lg_tkind_t *kind)
{
    *kind = LG_T_SEND;
    return lg_req_common(r)->send_timeout;
}

static void body_timeout(lg_req_t *r, lg_tkind_t kind)
{
    (void)kind;
    lg_req_abort(r, "client timed out receiving a file");
}

static const lg_stage_t body_stage = {
    .name = "sending a file", .step = body_step, .arm = body_arm, .timeout = body_timeout,
};

static void body_step(lg_req_t *r)
{
    st_t *st = r->ctx[static_slot];
    lg_end_t *ce = r->cend;
    /* the head first */
    while (r->local_sent < r->local_len) {
        if (!ce->w_ready) {
            ce->want_w = 1;
            return;
        }
        ssize_t n = lg_end_send(ce, r->local + r->local_sent, r->local_len - r->local_sent);
        if (n > 0) {
            r->local_sent += (size_t)n;
            r->bytes_out += (uint64_t)n;
            continue;
        }
        if (n == LG_AGAIN)
            return;
        lg_req_abort(r, "send() to client failed");
        return;
    }
    /* until the socket is full: its buffer bounds what one turn sends */
    while (st->off < st->end || st->bpos < st->blen) {
        if (!ce->w_ready) {
            ce->want_w = 1;
            return;
        }
        if (ce->ops == NULL && ce->ssl == NULL) {
            size_t want = (size_t)(st->end - st->off) < CHUNK ? (size_t)(st->end - st->off) : CHUNK;
            off_t o = (off_t)st->off;
            ssize_t n = sendfile(ce->io.fd, st->fd, &o, want);
            if (n > 0) {
                st->off = o;
                r->bytes_out += (uint64_t)n;
                if ((size_t)n < want)
                    lg_end_short_write(ce);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN) {
                ce->w_ready = 0;
                ce->want_w = 1;
                return;
            }
            lg_error("sendfile() failed: %s (the file shrank?), client: %s, request: \"%.*s\"",
                     n < 0 ? strerror(errno) : "end of file", r->peer_text,
                     (int)r->ri.uri.n, r->ri.uri.p);
            lg_req_abort(r, "sendfile() failed");
            return;
        }
        if (st->bpos == st->blen) {
            size_t want = (size_t)(st->end - st->off) < CHUNK ? (size_t)(st->end - st->off) : CHUNK;
            ssize_t n = pread(st->fd, st->buf, want, (off_t)st->off);
            if (n <= 0) {
                if (n < 0 && errno == EINTR)
                    continue;
                lg_error("read() of a file failed: %s, client: %s, request: \"%.*s\"",
                         n < 0 ? strerror(errno) : "end of file (the file shrank?)",
                         r->peer_text, (int)r->ri.uri.n, r->ri.uri.p);
                lg_req_abort(r, "read() of a file failed");
                return;
            }
            st->off += n;
            st->bpos = 0;
            st->blen = (size_t)n;
        }
        ssize_t n = lg_end_send(ce, st->buf + st->bpos, st->blen - st->bpos);
        if (n > 0) {
            st->bpos += (size_t)n;
            r->bytes_out += (uint64_t)n;
            continue;
        }
        if (n == LG_AGAIN)
            return;
        lg_req_abort(r, "send() to client failed");
        return;
    }
    st_close(st);
    lg_req_finish(r);
}

/* ---- validators, conditions, ranges ---- */

/* nginx's ETag: "mtime-size" in hex, so the two agree on the same file. */
static void make_etag(const struct stat *sb, char *out, size_t n)
{
    snprintf(out, n, "\"%llx-%llx\"", (unsigned long long)sb->st_mtime,
             (unsigned long long)sb->st_size);
}

int lg_static_etag_listed(const char *v, size_t n, const char *etag, int weak)
{
    size_t el = strlen(etag);
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        if (p == end)
            break;
        if (*p == '*')
            return 1;
        int is_weak = end - p > 2 && p[0] == 'W' && p[1] == '/';
        const char *t = is_weak ? p + 2 : p;
        const char *q = t;
        if (q < end && *q == '"') {
            q = memchr(q + 1, '"', (size_t)(end - q - 1));
            q = q ? q + 1 : end;
        } else {
            while (q < end && *q != ',')
                q++;
        }
        if ((size_t)(q - t) == el && memcmp(t, etag, el) == 0 && (weak || !is_weak))
            return 1;
        p = q;
    }
    return 0;
}

/*
 * RFC 9110 13.2.2's order: If-Match, If-Unmodified-Since, If-None-Match,
 * If-Modified-Since.  0 (serve), 304 or 412.
 */
static int conditional(lg_req_t *r, const struct stat *sb, const char *etag)
{
    const http_header_t *h;
    if ((h = lg_headers_get(r, "if-match")) != NULL) {
        if (!lg_static_etag_listed(h->value, h->value_len, etag, 0))
            return 412;
    } else if ((h = lg_headers_get(r, "if-unmodified-since")) != NULL) {
        int64_t t = lg_http_date(h->value, h->value_len);
        if (t >= 0 && sb->st_mtime > t)
            return 412;
    }
    if ((h = lg_headers_get(r, "if-none-match")) != NULL) {
        if (lg_static_etag_listed(h->value, h->value_len, etag, 1))
            return 304;
    } else if ((h = lg_headers_get(r, "if-modified-since")) != NULL) {
        int64_t t = lg_http_date(h->value, h->value_len);
        if (t >= 0 && sb->st_mtime <= t)
            return 304;
    }
    return 0;
}

int lg_static_range(const char *v, size_t vn, int64_t n, int64_t *from, int64_t *to)
{
    const char *p = v, *end = v + vn;
    if (vn < 7 || strncasecmp(p, "bytes=", 6) != 0)
        return 0;
    p += 6;
    while (p < end && *p == ' ')
        p++;
    if (p < end && memchr(p, ',', (size_t)(end - p)))
        return 0;               /* several ranges: the whole file (multipart is not made) */
    int64_t a = -1, b = -1;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (a > (INT64_MAX - 9) / 10)
            return 0;
        a = (a < 0 ? 0 : a * 10) + (*p - '0');
    }
    if (p == end || *p != '-')
        return 0;
    p++;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (b > (INT64_MAX - 9) / 10)
            b = INT64_MAX / 10;         /* past any file: clipped below */
        b = (b < 0 ? 0 : b * 10) + (*p - '0');
    }
    while (p < end && *p == ' ')
        p++;
    if (p != end || (a < 0 && b < 0))
        return 0;
    if (n == 0)
        return -1;              /* no byte of an empty file can be sent */
    if (a < 0) {                /* "-N": the last N bytes */
        if (b == 0)
            return -1;
        *from = b >= n ? 0 : n - b;
        *to = n;
    } else {
        if (b >= 0 && b < a)
            return 0;           /* invalid: ignored */
        if (a >= n)
            return -1;
        *from = a;
        *to = b < 0 || b >= n ? n : b + 1;
    }
    return 1;
}

static int byte_range(lg_req_t *r, int64_t n, const char *etag, const char *lastmod,
                      int64_t *from, int64_t *to)
{
    const http_header_t *h = lg_headers_get(r, "range");
    if (h == NULL)
        return 0;
    const http_header_t *ir = lg_headers_get(r, "if-range");
    if (ir && !((ir->value_len == strlen(etag) && memcmp(ir->value, etag, ir->value_len) == 0) ||
                (ir->value_len == strlen(lastmod) && memcmp(ir->value, lastmod, ir->value_len) == 0)))
        return 0;               /* changed since: the whole file */
    return lg_static_range(h->value, h->value_len, n, from, to);
}

/* ---- answering ---- */

static int is_get_or_head(const lg_req_t *r)
{
    return (r->req.method_len == 3 && memcmp(r->req.method, "GET", 3) == 0) ||
           (r->req.method_len == 4 && memcmp(r->req.method, "HEAD", 4) == 0);
}

/* Send the open file fd (sb its stat, path its name for the type). */
static int serve(lg_req_t *r, const lg_route_t *rt, int fd, const struct stat *sb, const char *path)
{
    char etag[64], lastmod[32], extra[256];
    if (!is_get_or_head(r)) {
        close(fd);
        r->local_extra = "Allow: GET, HEAD\r\n";
        lg_respond_error(r, 405);
        return LG_DONE;
    }
    make_etag(sb, etag, sizeof(etag));
    lg_http_date_fmt((int64_t)sb->st_mtime, lastmod);
    int cond = conditional(r, sb, etag);
    if (cond) {
        close(fd);
        if (cond == 412) {
            lg_respond_error(r, 412);
            return LG_DONE;
        }
        size_t hl = 0;
        snprintf(extra, sizeof(extra), "Last-Modified: %s\r\nETag: %s\r\n", lastmod, etag);
        const char *head = lg_headers_file(r, 304, NULL, 0, extra, &hl);
        if (head == NULL) {
            lg_req_abort(r, "out of memory building a response");
            return LG_DONE;
        }
        lg_respond_raw(r, 304, head, hl, NULL, 0);
        return LG_DONE;
    }
    int64_t size = (int64_t)sb->st_size, from = 0, to = size;
    int rng = byte_range(r, size, etag, lastmod, &from, &to);
    int status = rng > 0 ? 206 : 200;
    if (rng < 0) {
        close(fd);
        r->local_extra = lg_arena_printf(&r->arena, "Content-Range: bytes */%lld\r\n",
                                         (long long)size);
        lg_respond(r, 416, NULL, NULL);
        return LG_DONE;
    }
    int el = snprintf(extra, sizeof(extra), "Last-Modified: %s\r\nETag: %s\r\nAccept-Ranges: bytes\r\n",
                      lastmod, etag);
    if (rng > 0)
        snprintf(extra + el, sizeof(extra) - (size_t)el, "Content-Range: bytes %lld-%lld/%lld\r\n",
                 (long long)from, (long long)(to - 1), (long long)size);
    const char *ctype = mime_of(path);
    if (ctype == NULL)
        ctype = rt->common.default_type;
    size_t hl = 0;
    const char *head = lg_headers_file(r, status, ctype, to - from, extra, &hl);
    st_t *st = lg_arena_calloc(&r->arena, sizeof(*st));
    if (head == NULL || st == NULL) {
        close(fd);
        lg_req_abort(r, "out of memory building a response");
        return LG_DONE;
    }
    st->fd = fd;
    lg_req_cleanup(r, st_close, st);
    st->off = from;
    st->end = r->ri.is_head ? from : to;
    if (r->cend->ops || r->cend->ssl) {
        if ((st->buf = lg_arena_alloc(&r->arena, CHUNK)) == NULL) {
            lg_req_abort(r, "out of memory for a file's buffer");
            return LG_DONE;
        }
    }
    r->ctx[static_slot] = st;
    r->status = lg_req_status(r, status);      /* as its head says */
    r->local = head;
    r->local_len = hl;
    r->local_sent = 0;
    r->bytes_out = 0;
    lg_req_set_stage(r, &body_stage);
    return LG_DONE;
}

typedef enum found {
    F_NONE = 0,                 /* not there (or not that kind): the next candidate */
    F_DONE = 1,                 /* answered */
} found_t;

/*
 * Where a directory asked without its '/' is redirected: the path with
 * it, the query kept, absolute as nginx's absolute_redirect and
 * port_in_redirect make it -- the scheme, the name of Host (else the
 * server's first name), and the port the request came to unless it is
 * the scheme's own.  Relative when no name is known.
 */
static const char *dir_location(lg_req_t *r)
{
    const char *q = r->ri.query.p ? "?" : "";
    int qn = (int)r->ri.query.n;
    const char *qp = r->ri.query.p ? r->ri.query.p : "";
    const char *host = r->ri.host.n ? r->ri.host.p : NULL;
    int hn = (int)r->ri.host.n;
    if (host == NULL && r->server && r->server->nnames && r->server->names[0].kind == LG_NAME_EXACT &&
        r->server->names[0].name[0]) {
        host = r->server->names[0].name;
        hn = (int)strlen(host);
    }
    if (host == NULL)
        return lg_arena_printf(&r->arena, "%.*s/%s%.*s", (int)r->ri.path.n, r->ri.path.p, q, qn, qp);
    int tls = lg_conn_tls(r->conn);
    const struct sockaddr_storage *ss = &r->conn->bind->addr.ss;
    unsigned port = ss->ss_family == AF_INET ? ntohs(((const struct sockaddr_in *)ss)->sin_port)
                  : ss->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)ss)->sin6_port) : 0;
    char ps[8] = "";
    if (port && port != (tls ? 443u : 80u))
        snprintf(ps, sizeof(ps), ":%u", port);
    return lg_arena_printf(&r->arena, "%s://%.*s%s%.*s/%s%.*s", tls ? "https" : "http", hn, host, ps,
                           (int)r->ri.path.n, r->ri.path.p, q, qn, qp);
}

/*
 * The candidate path (normalised, starting with '/') of route rt: a file
 * (served), a directory (its index, or a redirect to "path/"), or nothing.
 * dir_ok: a directory is what is looked for (try_files' "$uri/").
 */
static found_t try_path(lg_req_t *r, const lg_route_t *rt, const char *path, int dir_ok,
                        int *err)
{
    const char *base = rt->root ? rt->root : rt->alias;
    const char *rel = path;
    char one[PATH_MAX];
    if (rt->alias && rt->match != LG_MATCH_REGEX) {
        /* the matched prefix is replaced; an exact route's alias is the file */
        size_t pl = rt->pattern_len;
        if (strncmp(path, rt->pattern, pl) != 0)
            return F_NONE;      /* a try_files path outside the prefix */
        rel = path + pl;
    }
    while (*rel == '/')
        rel++;
    /* the path is normalised, but cutting an alias's prefix off "/img../x"
     * leaves "../x" (nginx's alias traversal): never a ".." segment, whatever
     * symlinks says */
    for (const char *q = rel; *q; q = strchr(q, '/') ? strchr(q, '/') + 1 : q + strlen(q))
        if (q[0] == '.' && q[1] == '.' && (q[2] == '/' || q[2] == '\0')) {
            *err = 404;
            return F_NONE;
        }
    int dirfd = open(base, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 && errno == ENOTDIR && rel[0] == '\0') {
        /* alias naming a file: open its directory, then it */
        const char *slash = strrchr(base, '/');
        if (slash == NULL || (size_t)(slash - base) >= sizeof(one))
            return F_NONE;
        memcpy(one, base, (size_t)(slash - base));
        one[slash - base] = '\0';
        dirfd = open(one[0] ? one : "/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        rel = slash + 1;
    }
    if (dirfd < 0) {
        lg_error("static root \"%s\" cannot be opened: %s", base, strerror(errno));
        *err = 404;
        return F_NONE;
    }
    int fd = open_below(dirfd, rel, rt->symlinks);
    int e = errno;
    struct stat sb;
    if (fd < 0) {
        close(dirfd);
        if (e == ELOOP || e == EXDEV || e == EACCES || e == EPERM) {
            if (*err == 0 || *err == 404)
                *err = 403;
            lg_error("\"%s/%s\" is refused: %s (symlinks = \"%s\"), client: %s, request: \"%.*s\"",
                     base, rel, strerror(e),
                     rt->symlinks == LG_SYMLINKS_OFF ? "off" : rt->symlinks == LG_SYMLINKS_ON ? "on" : "inside",
                     r->peer_text, (int)r->ri.uri.n, r->ri.uri.p);
        }
        return F_NONE;
    }
    if (fstat(fd, &sb) < 0) {
        close(fd);
        close(dirfd);
        return F_NONE;
    }
    if (S_ISDIR(sb.st_mode)) {
        close(fd);
        size_t pn = strlen(path);
        if (!dir_ok && rt->ntry_files) {
            close(dirfd);
            return F_NONE;      /* try_files' "$uri" looks for a file */
        }
        if (pn == 0 || path[pn - 1] != '/') {
            /* nginx: a directory without its '/' is redirected to it */
            close(dirfd);
            const char *loc = dir_location(r);
            if (loc == NULL) {
                lg_req_abort(r, "out of memory");
                return F_DONE;
            }
            lg_respond(r, 301, NULL, loc);
            return F_DONE;
        }
        for (size_t i = 0; rt->index && i < rt->index->n; i++) {
            char *ip = lg_arena_printf(&r->arena, "%s%s%s", rel, rel[0] ? "/" : "", rt->index->v[i]);
            if (ip == NULL)
                break;
            int xf = open_below(dirfd, ip, rt->symlinks);
            if (xf < 0)
                continue;
            if (fstat(xf, &sb) == 0 && S_ISREG(sb.st_mode)) {
                close(dirfd);
                serve(r, rt, xf, &sb, ip);
                return F_DONE;
            }
            close(xf);
        }
        close(dirfd);
        if (*err == 0 || *err == 404)
            *err = 403;         /* a directory without an index is not listed */
        return F_NONE;
    }
    close(dirfd);
    if (!S_ISREG(sb.st_mode) || dir_ok) {
        close(fd);
        return F_NONE;
    }
    serve(r, rt, fd, &sb, path);
    return F_DONE;
}

/* A route's own answer when it is reached as a fallback ("@name"). */
static int fallback(lg_req_t *r, const lg_route_t *to)
{
    r->route = to;
    switch (to->action) {
    case LG_ACTION_PROXY:
        r->up = to->upstream;
        return LG_DECLINED;     /* the reverse proxy, after this phase's handler */
    case LG_ACTION_RETURN: {
        const char *body = lg_vars_expand(r, to->body, LG_VARS_RAW, NULL);
        const char *location = lg_vars_expand(r, to->location, LG_VARS_RAW, NULL);
        if ((body == NULL && to->body) || (location == NULL && to->location)) {
            lg_req_abort(r, "out of memory expanding a body");
            return LG_DONE;
        }
        if (r->ri.body != LG_BODY_NONE)
            r->keep_alive = 0;
        if (body)
            r->local_ctype = to->common.default_type;
        lg_respond(r, to->status, body, location);
        return LG_DONE;
    }
    default:
        return LG_DECLINED;     /* status pages, files: their own features */
    }
}

static int content_phase(lg_req_t *r)
{
    const lg_route_t *rt = r->route;
    if (rt == NULL || rt->action != LG_ACTION_STATIC || lg_req_is_forward(r))
        return LG_DECLINED;
    if (r->ri.body != LG_BODY_NONE)
        r->keep_alive = 0;      /* the body is not read: close after */
    int err = 0;
    if (rt->ntry_files == 0) {
        if (try_path(r, rt, r->mpath ? r->mpath : "/", 0, &err) == F_DONE)
            return LG_DONE;
        lg_respond_error(r, err ? err : 404);
        return LG_DONE;
    }
    for (size_t i = 0; i < rt->ntry_files; i++) {
        size_t n = 0;
        const char *v = lg_vars_expand(r, rt->try_files[i], LG_VARS_RAW, &n);
        if (v == NULL) {
            lg_req_abort(r, "out of memory expanding try_files");
            return LG_DONE;
        }
        char *np = lg_arena_alloc(&r->arena, n + 2);
        ssize_t nn = np && n ? lg_http_normalize_path(v, n, np) : -1;
        if (nn < 0)
            continue;           /* not a path that stays below "/" */
        /* "$uri/" asks for a directory: normalising keeps its '/' */
        int dir = n > 1 && v[n - 1] == '/';
        size_t ml = r->mpath ? strlen(r->mpath) : 0;
        const char *cand = np;
        if (dir && ml && r->mpath[ml - 1] != '/' && (size_t)nn == ml + 1 &&
            memcmp(np, r->mpath, ml) == 0)
            cand = r->mpath;    /* nginx tests "$uri/" as "$uri", a directory: 301 to its '/' */
        if (try_path(r, rt, cand, dir, &err) == F_DONE)
            return LG_DONE;
    }
    if (rt->fallback)
        return fallback(r, rt->fallback);
    lg_respond(r, rt->try_status ? rt->try_status : 404, NULL, NULL);
    return LG_DONE;
}

const lg_feature_t lg_feature_static = {
    .name = "static",
    .handlers = { { LG_PH_CONTENT, content_phase } },
    .ctx_slot = &static_slot,
    .init = mime_init,
};
