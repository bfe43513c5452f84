/*
 * The configuration model: what conf/load.c builds from a libconfig file and
 * every other layer reads.  One lg_conf_t is one generation; all of it lives
 * in conf->arena and is freed whole (a failed reload frees the new one and
 * keeps the old).
 *
 * Inheritable settings (lg_common_t) follow nginx's merge: each level starts
 * "unset" (LG_UNSET / NULL), and after loading, http -> server -> route each
 * take their parent's value where they left one unset; http takes the
 * built-in default.  After lg_conf_load() returns, every lg_common_t in the
 * tree is fully set.
 */
#ifndef LEGATE_CONF_CONF_H
#define LEGATE_CONF_CONF_H

#include <regex.h>
#include <stddef.h>
#include <string.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/arena.h"
#include "core/log.h"

#define LG_UNSET (-1)

typedef int64_t lg_msec_t;

/* A socket address as written in the config, resolved at load time. */
typedef struct lg_addr {
    struct sockaddr_storage ss;
    socklen_t               len;
    char                   *text;   /* arena: "127.0.0.1:8080", "[::1]:80", "unix:/p" */
} lg_addr_t;

/*
 * A template with $variables, compiled when the configuration loads into
 * literal slices and references to variables by index, so that expanding it
 * for a request walks its parts and never looks a name up.  The indexes are
 * pipeline/vars.c's; this layer only asks the registered lookup (see
 * lg_conf_set_var_lookup) what a name is, so conf/ stays below pipeline/.
 */
#define LG_TPL_LITERAL   (-1)       /* part.var of a literal slice */
#define LG_TPL_UNCHECKED (-2)       /* part.var when no lookup was registered: expands to nothing */

typedef struct lg_tpl_part {
    const char *text;               /* literal: a slice of src; variable: its argument, NUL-ended
                                       ("user_agent" of $http_user_agent, "1" of $1, "" if none) */
    size_t      len;
    int         var;                /* LG_TPL_LITERAL, or the variable's index */
} lg_tpl_part_t;

typedef struct lg_tpl {
    const char    *src;             /* arena: as written (dumps, comparisons, the plain value) */
    lg_tpl_part_t *parts;
    size_t         nparts;
    size_t         nvars;           /* 0: src is the value, no expansion needed */
} lg_tpl_t;

/*
 * What the name name[0..n) (without '$' and braces) is: the variable's index
 * (>= 0), with *arg set to where its argument starts in name (n when none);
 * or -1 for an unknown name.
 */
typedef int (*lg_var_lookup_t)(const char *name, size_t n, size_t *arg);

/* Set before any configuration loads (main, unit tests). */
void lg_conf_set_var_lookup(lg_var_lookup_t fn);

/* Compile src into arena a.  NULL on an unknown variable (the message, such
 * as "unknown variable "$foo"", in err) or on no memory (err "out of memory"). */
lg_tpl_t *lg_tpl_compile(lg_arena_t *a, const char *src, char *err, size_t errlen);

/*
 * Variables the configuration declares ($name of a map or of a set): their
 * parts carry LG_TPL_USER + the index into conf->uvars.  The loader
 * registers the names (lg_tpl_set_user_vars) before any template compiles,
 * so a map can be used above the place it is declared.
 */
#define LG_TPL_USER 100000

void lg_tpl_set_user_vars(char *const *names, size_t n);
/* The built-in lookup alone (a declared name must not hide a built-in). */
int lg_tpl_lookup_builtin(const char *name, size_t n, size_t *arg);

typedef enum lg_map_kind {
    LG_MAPK_EXACT    = 0,               /* "example.com" (case-insensitive) */
    LG_MAPK_LEADING  = 1,               /* "*.example.com", stored as ".example.com" */
    LG_MAPK_TRAILING = 2,               /* "www.example.*", stored as "www.example." */
    LG_MAPK_REGEX    = 3,               /* "~re" (case-sensitive) or "~*re" */
} lg_map_kind_t;

typedef struct lg_map_entry {
    lg_map_kind_t kind;
    char         *key;                  /* arena, lower case unless a regex */
    size_t        len;
    regex_t      *re;                   /* LG_MAPK_REGEX; freed by lg_conf_free */
    lg_tpl_t     *value;                /* may use $1..$9 of its own regex */
} lg_map_entry_t;

/* maps = ( { variable = "pool"; source = "$host"; default = "a"; values = ( [ "k", "v" ] ); } ) */
typedef struct lg_map {
    lg_tpl_t       *source;
    lg_tpl_t       *dflt;               /* NULL: empty */
    lg_map_entry_t *v;                  /* config order */
    size_t          n;
    int             line;
} lg_map_t;

typedef struct lg_uvar {
    char     *name;                     /* arena, without '$' */
    lg_map_t *map;                      /* NULL: only set's give it a value */
} lg_uvar_t;

/* set = { name = "template"; }: at http, server or route level */
typedef struct lg_set {
    int       var;                      /* index into conf->uvars */
    lg_tpl_t *value;
} lg_set_t;

typedef struct lg_sets {
    lg_set_t *v;
    size_t    n;
} lg_sets_t;

typedef struct lg_header_op {       /* one add_*_headers entry */
    char     *name;                 /* arena */
    lg_tpl_t *value;
} lg_header_op_t;

typedef struct lg_strv {            /* arena array of arena strings */
    char  **v;
    size_t  n;
} lg_strv_t;

/* v lists s exactly (NULL is an empty list). */
static inline int lg_strv_has(const lg_strv_t *v, const char *s)
{
    for (size_t i = 0; v && i < v->n; i++)
        if (strcmp(v->v[i], s) == 0)
            return 1;
    return 0;
}

typedef struct lg_header_ops {
    lg_header_op_t *v;
    size_t          n;
} lg_header_ops_t;

/* cache_valid = [ "200 301 10m", "any 1m" ], parsed at load. */
typedef struct lg_valid_rule {
    char      *text;                /* as written */
    int       *status;              /* the codes it names (arena) */
    size_t     nstatus;
    int        any;                 /* "any": every status */
    lg_msec_t  ms;
} lg_valid_rule_t;

typedef struct lg_valid {
    lg_valid_rule_t *v;
    size_t           n;
} lg_valid_t;

/* error_pages = [ "404 errors/404.html", "502 503 504 errors/5xx.html" ]:
 * each file read when the configuration loads (nginx's error_page) */
typedef struct lg_errpage {
    int       *status;
    size_t     nstatus;
    char      *body;                    /* arena: the file's bytes, NUL-ended */
    size_t     len;
    const char *ctype;                  /* from the file's suffix */
    const char *text;                   /* as written */
    /* "404 @name": the route of the request's server named so answers
     * instead (an internal redirect; no page applies again), or NULL */
    const char *route;
    /* "=CODE": the answer's status; 0 ("=" alone): the route's own;
     * -1 (none): the error's own status, whatever the route answers */
    int         code;
    int         line;                   /* and file, for the check of route names */
    const char *file;
} lg_errpage_t;

typedef struct lg_errpages {
    lg_errpage_t *v;
    size_t        n;
} lg_errpages_t;

/* The page for status, or NULL. */
const lg_errpage_t *lg_errpage_find(const lg_errpages_t *p, int status);

/*
 * Request-rate and concurrency limits (feature/limit.c), nginx's
 * limit_req_zone / limit_conn_zone: a zone is declared once at http level
 * and its table lives in shared memory; rules at any level name a zone.
 */
typedef struct lg_limit_zone {
    char      *name;                    /* arena, unique among zones of its kind */
    int        conn;                    /* 0: a rate zone (limit_req), 1: a concurrency zone */
    lg_tpl_t  *key;                     /* what is counted: "$remote_addr", "$http_x_api_key" */
    int64_t    size;                    /* bytes of shared memory, default 1m */
    char      *rate;                    /* rate zones: as written, "20r/s", "30r/m", or bytes "512k/s" */
    int64_t    interval_us;             /* rate zones: one request's share of time, 1 s / rate */
    int64_t    bytes_rate;              /* a bandwidth zone ("512k/s"): bytes a second, else 0 */
    int        cluster;                 /* rate zones: counted by the fleet in Redis, default false */
    void      *table;                   /* its table in the shared segment, set by the master */
    int        index;
    int        line;
} lg_limit_zone_t;

typedef struct lg_limit_rule {          /* one limit_req or limit_conn entry */
    char            *zone_name;         /* as written */
    lg_limit_zone_t *zone;              /* borrowed: resolved once loading is done */
    int              burst;             /* limit_req: requests past the rate allowed, default 0 */
    int              delay;             /* limit_req: of those, how many go without delay;
                                           nodelay = burst; default 0 (all delayed) */
    int              nodelay;           /* limit_req: bool, as written */
    int              max;               /* limit_conn: requests in flight per key */
    int              line;
} lg_limit_rule_t;

typedef struct lg_limits {              /* arena array; n = 0 is "no limits here" */
    lg_limit_rule_t *v;
    size_t           n;
} lg_limits_t;

/* Settings inherited http -> server -> route. */
typedef struct lg_common {
    lg_msec_t client_header_timeout;    /* default 60s */
    lg_msec_t client_body_timeout;      /* default 60s */
    lg_msec_t send_timeout;             /* default 60s */
    lg_msec_t keepalive_timeout;        /* default 75s; 0 disables keep-alive */
    int64_t   keepalive_requests;       /* default 1000 */
    lg_msec_t proxy_connect_timeout;    /* default 5s */
    lg_msec_t proxy_send_timeout;       /* default 60s */
    lg_msec_t proxy_read_timeout;       /* default 60s */
    int64_t   client_max_body_size;     /* bytes, default 1m; 0 = unlimited */
    int       websocket;                /* bool, default 1: pass WebSocket upgrades (proxy/reverse.c) */
    lg_msec_t websocket_idle_timeout;   /* an open WebSocket tunnel with no traffic, default 1h */

    /* headers to upstream / to client; NULL = unset (inherit) */
    lg_header_ops_t *add_request_headers;
    lg_strv_t       *remove_request_headers;
    lg_header_ops_t *add_response_headers;
    lg_strv_t       *remove_response_headers;

    /* forwarding headers set on proxied requests (bools, default shown) */
    int x_forwarded_for;                /* 1: append client address */
    int x_forwarded_proto;              /* 1 */
    int x_forwarded_host;               /* 0 */
    int x_real_ip;                      /* 0 */
    int forwarded;                      /* 0: RFC 7239 header */
    int via;                            /* 1 */
    int server_timing;                  /* 0: Server-Timing on proxied answers (feature/server_timing.c) */

    int      gzip;                      /* bool, default 0: compress responses */
    int      gzip_level;                /* 1..9, default 1 */
    int64_t  gzip_min_length;           /* bytes, default 20: shorter known bodies stay as they are */
    lg_strv_t *gzip_types;              /* media types, "*" = any; default "text/html" */
    int      gunzip;                    /* bool, default 0: decompress for clients without gzip */
    int      brotli;                    /* bool, default 0: br for clients preferring it */
    int      brotli_level;              /* 0..6, default 4 (past 6 the state grows past 4 MiB) */
    int      zstd;                      /* bool, default 0: zstd for clients preferring it */
    int      zstd_level;                /* 1..6, default 3 (likewise) */
    int      gunzip_request_bodies;     /* bool, default 0: decompress gzip request bodies */
    int64_t  gunzip_request_max;        /* decompressed size limit, default 10m; past it 413 */

    int        cache;                   /* bool, default 0: use the shared cache */
    lg_tpl_t  *cache_key;               /* default "$scheme://$host$request_uri" */
    lg_valid_t *cache_valid;            /* lifetimes when the response gives none; default none */
    lg_msec_t  cache_lock_timeout;      /* collapsed forwarding wait, default 5s */
    lg_tpl_t  *cache_bypass;            /* non-empty and not "0" = skip the cache */
    lg_tpl_t  *cache_no_store;          /* non-empty and not "0" = do not store the answer */
    int        cache_min_uses;          /* requests for a key before its answer is stored, default 1 */
    lg_strv_t *cache_ignore_headers;    /* "Set-Cookie", "Cache-Control", "Expires", "Vary" */
    lg_strv_t *cache_purge_allow;       /* CIDRs allowed to PURGE; default none */
    void      *cache_purge_rt;          /* their set, built by the proxy layer (shared with the
                                           parent level when inherited); not a setting */
    int        cache_authorized;        /* bool: store answers to requests with Authorization */
    int        cache_private;           /* bool: a private cache (s-maxage, proxy-revalidate ignored) */
    int        cache_store_set_cookie;  /* bool: store responses with Set-Cookie, the cookie included */
    lg_strv_t *cache_vary_normalize;    /* request fields normalised for Vary; default Accept, Accept-Language, Accept-Charset */
    lg_strv_t *cache_targeted_fields;   /* RFC 9213 fields obeyed first; default CDN-Cache-Control */
    int        cache_targeted_remove;   /* bool: not passed to clients */
    int        cache_partial;           /* bool: Range on a miss goes upstream, 206s stored */
    int        cache_max_ranges;        /* ranges of one request served (multipart past 1), default 16;
                                           0: Range ignored (nginx's max_ranges) */
    lg_strv_t *cache_use_stale;         /* conditions a stale object covers (nginx's proxy_cache_use_stale) */

    /* access rules and Basic authentication (feature/access.c), as nginx's
     * allow/deny, auth_basic, auth_basic_user_file and satisfy */
    lg_strv_t *access_rules;            /* "allow CIDR ..." / "deny CIDR ..." / "allow all" / "deny all",
                                           first match wins; default none (everyone) */
    char      *auth_basic;              /* realm, or "off" (default) */
    char      *auth_basic_user_file;    /* htpasswd file, or NULL (default) */
    char      *satisfy;                 /* "all" (default) or "any" */
    void      *access_rt;               /* the rules built by feature/access.c (shared with the
                                           parent level when inherited); not a setting */
    void      *auth_rt;                 /* the htpasswd file read (likewise); not a setting */
    /* subrequest authorisation (feature/auth_request.c), as nginx's auth_request */
    char      *auth_request;            /* the upstream that authorises, or NULL (default) */
    char      *auth_request_uri;        /* the path asked there, default "/" */
    lg_strv_t *auth_request_headers;    /* request headers passed to it, default Authorization Cookie */
    lg_strv_t *auth_request_set;        /* its answer's headers put into the proxied request */
    lg_msec_t  auth_request_timeout;    /* default 5s */
    lg_msec_t  auth_request_cache_time; /* how long an answer is kept per key, 0 (default): not */
    lg_tpl_t  *auth_request_cache_key;  /* default "$request_method $request_uri $http_authorization $http_cookie" */
    void      *auth_request_up;         /* lg_upstream_t *, resolved at load; not a setting */
    /* JSON Web Tokens (feature/jwt.c), as nginx Plus's auth_jwt */
    char      *auth_jwt;                /* realm, or "off" (default) */
    char      *auth_jwt_key_file;       /* PEM public key or JWKS file, or NULL */
    char      *auth_jwt_secret_file;    /* HS256 shared secret file, or NULL */
    char      *auth_jwt_cookie;         /* read the token from this cookie, or NULL (Authorization) */
    lg_msec_t  auth_jwt_leeway;         /* clock skew allowed for exp / nbf, default 60s */
    char      *auth_jwt_issuer;         /* required "iss", or NULL */
    char      *auth_jwt_audience;       /* required in "aud", or NULL */
    void      *jwt_rt;                  /* the keys read by feature/jwt.c (shared with the
                                           parent level when inherited); not a setting */
    lg_limits_t *limit_req;             /* rate limits, NULL = none (feature/limit.c) */
    int        limit_req_status;        /* default 429 */
    int        limit_req_dry_run;       /* bool: log what would be refused, refuse nothing */
    lg_limits_t *limit_conn;            /* concurrency limits, NULL = none */
    int        limit_conn_status;       /* default 503 */
    int        limit_conn_dry_run;      /* bool */
    int64_t    limit_rate;              /* bytes a second of a proxied response body, 0 = none */
    int64_t    limit_rate_after;        /* ...after the first this many, default 0 */
    char      *default_type;            /* Content-Type of a return's body, default "text/plain" */
    int        headers_always;          /* bool: add_response_headers on legate's own answers too */
    lg_errpages_t *error_pages;         /* pages for legate's own errors; default none */
    int        intercept_errors;        /* bool: an upstream's error status gets the page too */
    lg_strv_t *proxy_redirect;          /* "default", "off", or "FROM TO" rewrites of Location/Refresh */
    lg_strv_t *proxy_cookie_domain;     /* "FROM TO" rewrites of Set-Cookie's Domain; default none */
    lg_strv_t *proxy_cookie_path;       /* "FROM TO" rewrites of Set-Cookie's Path; default none */
    lg_sets_t *sets;                    /* set = { var = "template"; }: this level's own (a custom
                                           row: a level without one shares its parent's) */
    lg_tpl_t  *access_log_if;           /* log only when this is neither empty nor "0"; NULL: always */
    int        access_log_sample;       /* log one request in N (per worker and log); default 1 */
    int        traceparent;             /* bool: W3C trace context propagated or started upstream */
    char      *request_id_header;       /* a trusted front end's request ID header, or NULL */
    char      *limit_rate_zone;         /* a bandwidth zone shared by the key's requests, or NULL */
    lg_limit_zone_t *limit_rate_z;      /* ...resolved once loading is done */
    int        proxy_buffering;         /* bool, default 0: a response body is read into a spool
                                           (memory, then a temporary file) while the client is slow */
    int64_t    proxy_buffers_size;      /* ...memory for it, default 256k */
    int64_t    proxy_max_temp_file_size; /* ...then file, default 1g; 0: none (backpressure) */
    int        proxy_request_buffering; /* bool, default 0: the whole request body is read
                                           before an upstream is chosen */
    int64_t    client_body_buffer_size; /* ...memory for it, default 16k, then a temporary file */

    char *access_log;                   /* path under prefix, or "off"; default "logs/access.log" */
    lg_tpl_t *log_format;               /* "combined" (default), "json", "forward", or a
                                         * template with $variables */
} lg_common_t;

typedef struct lg_upstream_server {
    lg_addr_t addr;
    int       weight;                   /* 1..1000, default 1 */
    int       max_conns;                /* requests in flight over all workers, 0 = no limit */
    int       backup;                   /* bool: used only when every primary is down */
    int       down;                     /* bool: taken out by configuration */
    int       mx;                       /* its metrics series (feature/metrics.c), + 1; 0 none */
    char     *host;                     /* the name written ("app.internal"), NULL for an address */
    int       port;
    int       unresolved;               /* resolve: no address yet (the name failed at load) */
    int       line;
} lg_upstream_server_t;

typedef enum lg_balance {
    LG_BAL_ROUND_ROBIN = 0,             /* smooth weighted round robin (default) */
    LG_BAL_LEAST_CONN  = 1,             /* weighted least connections, global */
    LG_BAL_IP_HASH     = 2,             /* client address */
    LG_BAL_HASH        = 3,             /* consistent (Maglev) hash of hash_key */
    LG_BAL_RANDOM      = 4,             /* random with two choices */
    LG_BAL_PEAK_EWMA   = 5,             /* latency-aware: peak EWMA, two choices */
} lg_balance_t;

struct lg_upstate;                      /* proxy/upstate.h: live state in shared memory */

/* Failure conditions, for next_upstream (retry) and fail_on (passive health). */
enum {
    LG_COND_ERROR          = 1 << 0,    /* connect error, reset, early close */
    LG_COND_TIMEOUT        = 1 << 1,    /* connect, send or read timeout */
    LG_COND_INVALID_HEADER = 1 << 2,    /* invalid response head */
    LG_COND_HTTP_500       = 1 << 3,
    LG_COND_HTTP_502       = 1 << 4,
    LG_COND_HTTP_503       = 1 << 5,
    LG_COND_HTTP_504       = 1 << 6,
    LG_COND_HTTP_429       = 1 << 7,
    LG_COND_NON_IDEMPOTENT = 1 << 8,    /* next_upstream only: retry POST, PATCH... too */
};

/* Active health checks of an upstream's servers (run by one worker). */
typedef struct lg_health {
    lg_msec_t interval;                 /* default 5s */
    lg_msec_t timeout;                  /* default 2s */
    char     *method;                   /* default "GET" */
    char     *path;                     /* default "/" */
    char     *host;                     /* Host header; default: the server's address */
    int       status_min, status_max;   /* from status = "200-399" (default) */
    char     *status;                   /* as written */
    char     *body;                     /* substring the body must contain, or NULL */
    int       rise;                     /* passes in a row to come back, default 2 */
    int       fall;                     /* failures in a row to go out, default 3 */
    char     *type;                     /* "http" (default) or "tcp": connect, maybe send/expect */
    char     *send;                     /* tcp: bytes sent once connected (C escapes), or NULL */
    size_t    send_len;
    char     *expect;                   /* tcp: bytes the answer must contain, or NULL */
    size_t    expect_len;
    int       tcp;                      /* derived: type is "tcp" */
} lg_health_t;

typedef struct lg_upstream {
    char                 *name;         /* arena */
    lg_upstream_server_t *servers;      /* arena array */
    size_t                nservers;
    int                   keepalive;    /* idle pooled connections per worker per server, default 32 */
    char                 *balance_name; /* "round_robin" (default) ... */
    lg_balance_t          balance;      /* derived from balance_name */
    lg_tpl_t             *hash_key;     /* LG_BAL_HASH: default "$request_uri" */
    int                   max_fails;    /* passive health: failures within fail_timeout; 0 = off; default 1 */
    char                 *fail_on;      /* conditions that count as failures, default "error timeout invalid_header" */
    unsigned              fail_mask;    /* derived from fail_on */
    char                 *next_upstream; /* when to try the next server, default "error timeout" */
    unsigned              next_mask;    /* derived */
    int                   next_upstream_tries;      /* tries in all, 0 = one per server (default) */
    lg_msec_t             next_upstream_timeout;    /* for all tries, 0 = no limit (default) */
    lg_msec_t             slow_start;   /* ramp a returning server's weight over this, 0 = off */
    int                   max_conns;    /* requests in flight to the whole upstream, all workers; 0 = no limit */
    int                   queue;        /* requests per worker that may wait for max_conns room, 0 = none */
    lg_msec_t             queue_timeout; /* how long one may wait, default 1s */
    lg_msec_t             fail_timeout; /* default 10s: the window, and how long the server stays out */
    lg_msec_t             connect_timeout; /* overrides the route's proxy_connect_timeout; 0 = the route's */
    lg_msec_t             read_timeout; /* overrides the route's proxy_read_timeout; 0 = the route's */
    uint16_t             *maglev;       /* LG_BAL_HASH: lookup table (malloc'd; freed by lg_conf_free) */
    lg_health_t          *health;       /* active health checks, or NULL */
    int                   tls;          /* bool: speak TLS to the servers */
    char                 *protocol;     /* "http/1.1" (default), "h2c" (prior knowledge), "h2" (TLS, ALPN) */
    int                   h2;           /* derived: 0 HTTP/1.1, 1 HTTP/2 (h2c or h2) */
    int                   h2_connections; /* HTTP/2: connections per server per worker, default 1 */
    int                   tls_verify;   /* bool, default 1: verify the server's certificate */
    char                 *tls_ca;       /* CA file; NULL = the system's trust store */
    char                 *tls_server_name; /* SNI and the name verified; NULL = the address's host */
    char                 *tls_certificate; /* client certificate (upstream mutual TLS), or NULL */
    char                 *tls_key;
    void                 *ssl_ctx;      /* SSL_CTX *, built by net/tls.c */
    struct lg_upstate    *state;        /* set by the master: shared, per server */
    int                   resolve;      /* bool: server names looked up again as they expire
                                           (proxy/reresolve.c; nginx: server ... resolve) */
    lg_strv_t            *resolvers;    /* "ip[:port]"; empty: /etc/resolv.conf's */
    lg_msec_t             resolve_valid; /* an answer is used this long; 0: its TTL */
    struct lg_dynup      *dyn;          /* forward proxy: a destination made at run time, else NULL */
    int                   index;        /* position in conf->upstreams */
    int                   stream;       /* declared in stream.upstreams (layer 4) */
    int                   line;
} lg_upstream_t;

typedef enum lg_match {
    LG_MATCH_EXACT  = 0,                /* exact = "/path" */
    LG_MATCH_PREFIX = 1,                /* prefix = "/path/" (or path = ...) */
    LG_MATCH_REGEX  = 2,                /* regex = "^/x/(.*)$", POSIX ERE */
} lg_match_t;

typedef enum lg_action {
    LG_ACTION_PROXY  = 0,               /* proxy_pass = "upstream" */
    LG_ACTION_RETURN = 1,               /* return = status (+ body or location) */
    LG_ACTION_STATUS = 2,               /* status = "metrics" | "json" | "html": legate's own state */
    LG_ACTION_STATIC = 3,               /* root = "/dir" | alias = "/dir/": files (feature/static.c) */
} lg_action_t;

typedef enum lg_name_kind {
    LG_NAME_EXACT    = 0,               /* "example.com" */
    LG_NAME_WILDCARD = 1,               /* "*.example.com" (stored without "*") */
    LG_NAME_SUFFIX   = 2,               /* "www.example.*" (stored without "*") */
    LG_NAME_REGEX    = 3,               /* "~^api[0-9]+\\.example\\.com$" */
} lg_name_kind_t;

typedef struct lg_server_name {
    lg_name_kind_t kind;
    char          *name;                /* arena, lower case */
    regex_t       *re;                  /* for LG_NAME_REGEX */
} lg_server_name_t;

/* A canary split: one upstream and its share of the cohorts. */
typedef struct lg_split {
    lg_upstream_t *upstream;            /* borrowed from conf->upstreams */
    int            weight;              /* 1..10000 */
} lg_split_t;

/* One condition of a route's "if": $var, !$var, or $var OP value. */
typedef enum lg_cond_op {
    LG_COND_TRUE    = 0,                /* "$v": neither empty nor "0" */
    LG_COND_EQ      = 1,                /* "$v = text" */
    LG_COND_REGEX   = 2,                /* "$v ~ re", "$v ~* re" */
} lg_cond_op_t;

typedef struct lg_cond {
    lg_tpl_t     *left;                 /* the variable (or template) tested */
    lg_cond_op_t  op;
    int           negate;               /* "!$v", "!=", "!~", "!~*" */
    lg_tpl_t     *right;                /* LG_COND_EQ: compared with */
    regex_t      *re;                   /* LG_COND_REGEX; freed by lg_conf_free */
    const char   *text;                 /* as written */
} lg_cond_t;

enum {
    LG_SYMLINKS_OFF    = 0,             /* no symlink followed (nginx: disable_symlinks on) */
    LG_SYMLINKS_INSIDE = 1,             /* followed while they stay below the root */
    LG_SYMLINKS_ON     = 2,             /* followed anywhere (nginx's default) */
};

typedef struct lg_route {
    lg_match_t     match;
    char          *pattern;             /* arena */
    size_t         pattern_len;
    regex_t       *re;                  /* arena-held, regcomp'd; freed by lg_conf_free */
    struct lg_relit *relit;             /* arena: re is a literal prefix, matched without regexec */
    lg_action_t    action;
    lg_upstream_t *upstream;            /* borrowed from conf->upstreams */
    lg_tpl_t      *rewrite;             /* proxy: new path ($1..$9 from regex), or NULL */
    int            status;              /* return: 100..599 */
    lg_tpl_t      *body;                /* return: body, or NULL */
    lg_tpl_t      *location;            /* return 3xx: Location, or NULL */
    /* extra conditions, all must hold for the route to match */
    lg_server_name_t *hosts;            /* host = name | [ names ]: as server_name */
    size_t         nhosts;
    lg_strv_t     *methods;             /* methods = [ "GET", ... ] */
    char          *header_name;         /* header = "Name" (present) or "Name: value" */
    char          *header_value;        /*   exact value, or NULL for presence */
    char          *query_name;          /* query = "name" (present) or "name=value" */
    char          *query_value;
    lg_strv_t     *countries;           /* countries = [ "FR", ... ]: the client's (geoip) */
    const char    *header_text;         /* header and query as written (dumps) */
    const char    *query_text;
    int            header_not;          /* header = "!Name...": the condition is negated */
    int            query_not;           /* query = "!name...": likewise */
    regex_t       *header_re;           /* header = "Name ~ re" / "Name ~* re" */
    struct lg_cond *conds;              /* if = [ "$var OP value", ... ]: all must hold */
    size_t         nconds;
    /* canary: split = ( { upstream = "stable"; weight = 90; }, ... ) */
    lg_split_t    *splits;
    size_t         nsplits;
    lg_tpl_t      *split_key;           /* empty value -> random; default "$remote_addr" */
    char          *split_cookie;        /* sticky cohort cookie legate sets, or NULL */
    char          *status_page;         /* status: "metrics", "json" or "html" */
    int            no_regex;            /* a prefix that, as the longest match, skips the regexes (^~) */
    int            icase;               /* iregex: the regex ignores case (~*) */
    int            mx;                  /* its metrics series (feature/metrics.c), + 1; 0 none */
    /* static files (feature/static.c) */
    char          *root;                /* root = "/dir": the path is appended (nginx's root) */
    char          *alias;               /* alias = "/dir/": replaces the matched prefix */
    lg_strv_t     *index;               /* default [ "index.html" ] */
    lg_tpl_t     **try_files;           /* try_files = [ "$uri", "$uri/", "@name" | "=404" ]: */
    size_t         ntry_files;          /*   the candidates, without the last entry */
    char          *try_fallback;        /*   "@name": that route's name, or NULL */
    int            try_status;          /*   "=code", or 0 */
    const struct lg_route *fallback;    /*   the route "@name" names (same server) */
    int            symlinks;            /* LG_SYMLINKS_*, default inside */
    char          *name;                /* name = "app": a target of try_files' "@app" */
    int            named_only;          /* no path matcher: only reached by its name */
    lg_common_t    common;
    int            line;
} lg_route_t;

typedef struct lg_listen {
    lg_addr_t addr;
    int       backlog;                  /* default 511 */
    int       tls;                      /* bool: TLS on this address */
    char     *protocol;                 /* "http" (default), "socks5", or "stream" (set for stream servers) */
    int       proxy_protocol;           /* bool: a PROXY v1/v2 header comes first */
    int       http2;                    /* bool: HTTP/2 (ALPN h2 with TLS, h2c prior knowledge without) */
    int       quic;                     /* bool: HTTP/3 over QUIC on the same UDP port (needs tls) */
    int       is_default;               /* default_server for this address */
    int       udp;                      /* bool: datagrams (stream servers only) */
    int       line;
} lg_listen_t;

typedef struct lg_cert {
    char *cert;                         /* PEM chain, resolved path */
    char *key;                          /* PEM private key, resolved path */
    int   line;
} lg_cert_t;

/* TLS settings of a server (used when it listens with tls = true). */
typedef struct lg_tls_conf {
    lg_cert_t *certs;                   /* RSA and/or ECDSA pairs */
    size_t     ncerts;
    char      *protocols;               /* default "TLSv1.2 TLSv1.3" */
    char      *ciphers;                 /* TLS 1.2 list, default Mozilla intermediate */
    char      *ciphersuites;            /* TLS 1.3 list, default OpenSSL's */
    char      *client_ca;               /* mutual TLS: CA file, or NULL */
    char      *verify_client;           /* "off" (default), "on", "optional" */
    int        verify_depth;            /* default 1 */
    char      *ocsp_response;           /* DER OCSP response file to staple, or NULL */
    char      *hsts;                    /* Strict-Transport-Security value, or NULL */
    lg_msec_t  handshake_timeout;       /* default 10s */
    int        session_tickets;         /* bool, default 1 */
    lg_msec_t  session_timeout;         /* resumable this long (IDs and tickets), default 5m */
    int        line;                    /* the server's line, for errors */
} lg_tls_conf_t;

/* A forward proxy's rule for some users: the first rule naming the user applies. */
typedef struct lg_user_rule {
    lg_strv_t *users;                   /* names, "@group", or "*" (any signed-in user) */
    lg_strv_t *allow_domains;           /* non-empty: only these names and their subdomains */
    lg_strv_t *block_domains;           /* and never these */
    char      *connect_ports;           /* NULL: the forward's connect_ports */
    char      *socks_ports;             /* NULL: the forward's socks_ports */
    int        line;
} lg_user_rule_t;

/* A forward proxy's parent rule (Squid's cache_peer ... parent with
 * cache_peer_domain): the first rule whose domains match applies. */
typedef struct lg_parent_rule {
    lg_strv_t *domains;                 /* names and their subdomains; empty: every destination */
    char      *upstream_name;           /* an upstream of http.upstreams: the parent proxies */
    struct lg_upstream *upstream;       /* found by the forward proxy's prepare (borrowed) */
    char      *login;                   /* "user:password" for the parent (Proxy-Authorization), or NULL */
    int        never_direct;            /* bool, default false: no failover to direct */
    int        line;
} lg_parent_rule_t;

/* Forward proxying for clients that chose legate (a server's forward = { }). */
typedef struct lg_forward {
    lg_strv_t *allow_clients;           /* CIDRs; default "127.0.0.0/8 ::1/128" */
    lg_strv_t *deny_clients;            /* CIDRs; default none */
    char      *connect_ports;           /* CONNECT allowlist, default "443" (Squid's SSL_ports) */
    char      *socks_ports;             /* SOCKS5 CONNECT allowlist, default Squid's Safe_ports */
    char      *http_ports;              /* absolute-form (http://) destinations, default Safe_ports */
    lg_strv_t *anonymous_domains;       /* what clients that did not sign in may reach; empty: anything */
    int        allow_private;           /* bool: allow private/loopback destinations (SSRF); default 0 */
    lg_strv_t *deny_destinations;       /* CIDRs of destination addresses; default none */
    lg_strv_t *blocklists;              /* files: hosts format or one domain per line */
    lg_strv_t *block_domains;           /* names, each also blocking its subdomains */
    lg_strv_t *url_filters;             /* POSIX ERE, case-insensitive, on the absolute URL */
    char      *anonymity;               /* "transparent" (default), "anonymous", "elite" */
    lg_strv_t *strip_headers;           /* request headers removed; default none */
    lg_strv_t *resolvers;               /* "ip:port"; default: the system's */
    char      *hosts_file;              /* answered before DNS; default none */
    char      *dns_family;              /* "ipv4_first" (default), "ipv6_first", "ipv4_only", "ipv6_only" */
    lg_msec_t  tunnel_idle_timeout;     /* CONNECT tunnels, default 5m */
    char      *connect_sni;             /* "off" (default), "check", "match": the tunnel's ClientHello */
    lg_msec_t  connect_sni_timeout;     /* for the ClientHello to come, default 10s */
    char      *connect_sni_missing;     /* no SNI (none in time, not TLS): "refuse" (default), "allow" */
    int        keepalive;               /* idle pooled connections per destination, default 8 */
    int        keepalive_total;         /* ... and over all destinations, per worker, default 256 */
    lg_msec_t  keepalive_timeout;       /* how long one stays idle, default 1m */
    char      *auth_file;               /* htpasswd file (bcrypt / SHA-crypt): Basic auth required; NULL = none */
    char      *auth_realm;              /* default "legate" */
    lg_strv_t *allow_countries;         /* ISO codes; non-empty: only these (unknown refused) */
    lg_strv_t *deny_countries;
    char      *auth_groups_file;        /* "group: user user ..." lines; NULL = none */
    lg_strv_t *allow_users;             /* names / "@group": who may use this listener; default any */
    lg_user_rule_t *user_rules;         /* in order */
    size_t     nuser_rules;
    lg_parent_rule_t *parents;          /* in order; none: every destination direct */
    size_t     nparents;
    lg_strv_t *always_direct;           /* names never sent to a parent (Squid's always_direct) */
    int        never_direct;            /* bool, default false: as a rule's, for every rule */
    char      *ftp_user;                /* ftp:// login without credentials, default "anonymous" */
    char      *ftp_password;            /* ...and its password, default "legate@" (Squid's ftp_user) */
    int        ftp_epsv;                /* bool: EPSV before PASV, default 1 (Squid's ftp_epsv) */
    /* TLS inspection (Squid's ssl_bump bump / splice; forward/forward.c, net/tls_mint.c) */
    lg_strv_t *tls_inspect;             /* server names intercepted; empty (default): none */
    lg_strv_t *tls_inspect_never;       /* never intercepted (wins over tls_inspect) */
    char      *tls_inspect_ca;          /* the operator's CA certificate (PEM), or NULL */
    char      *tls_inspect_ca_key;      /* ...and its private key */
    char      *tls_inspect_verify;      /* CA file destinations are verified with; NULL: the system's */
    int        tls_inspect_line;        /* where tls_inspect_ca was set (or the block) */
    int        line;
    void      *rt;                      /* built by the proxy layer (ACLs, lists) */
    void     (*rt_free)(void *rt);      /* and how to free it */
} lg_forward_t;

/*
 * A stream (layer 4) server's own settings (stream.servers, load_stream.c):
 * nginx's stream { server { } }, HAProxy's mode tcp.  The server is an
 * lg_server_t like any other, so its connections get the PROXY protocol,
 * TLS termination, access rules, limits and the access log of the HTTP
 * side; this says where its bytes go.
 */
typedef struct lg_stream_route {        /* routes = ( { server_name = ...; proxy_pass = ...; } ) */
    lg_server_name_t *names;            /* the ClientHello's SNI, as server_name; NULL: any */
    size_t            nnames;
    lg_strv_t        *alpn;             /* any of these ALPN protocols; NULL: any */
    int               no_sni;           /* server_name = "": only a ClientHello without SNI */
    char             *proxy_pass;       /* upstream name, as written */
    lg_upstream_t    *upstream;         /* borrowed, resolved after loading */
    lg_addr_t         http;             /* or http = "addr": the HTTP servers legate has there
                                           take the connection over (len 0: none) */
    const struct lg_bind *http_bind;    /* borrowed: that listen address's, once binds are made */
    int               line;
} lg_stream_route_t;

typedef struct lg_stream {
    char              *proxy_pass;      /* upstream name, or NULL when routes decide */
    lg_upstream_t     *upstream;        /* borrowed, resolved after loading */
    lg_msec_t          proxy_timeout;   /* idle both ways, default 10m (nginx proxy_timeout) */
    char              *proxy_protocol;  /* towards the upstream: "off" (default), "v1", "v2" */
    int                pp_version;      /* derived: 0, 1, 2 */
    int                ssl_preread;     /* bool: read the ClientHello (SNI, ALPN), do not decrypt */
    lg_msec_t          preread_timeout; /* default 30s (nginx preread_timeout) */
    lg_stream_route_t *routes;          /* ssl_preread: first match wins */
    size_t             nroutes;
    int                proxy_responses; /* udp: answers a datagram gets, then its session may
                                           end; 0 (default): any number, until proxy_timeout */
    int                udp_sessions;    /* udp: sessions per worker, default 4096 */
    int                line;
} lg_stream_t;

typedef struct lg_server {
    lg_listen_t      *listens;
    size_t            nlistens;
    lg_server_name_t *names;
    size_t            nnames;
    lg_route_t       *routes;           /* config order */
    size_t            nroutes;
    lg_common_t       common;
    lg_tls_conf_t     tls;
    lg_forward_t     *forward;          /* forward proxy settings, or NULL */
    lg_stream_t      *stream;           /* a stream server (stream.servers), or NULL */
    lg_strv_t        *real_ip_from;     /* CIDRs trusted to tell the client address */
    char             *real_ip_header;   /* default "X-Forwarded-For" */
    void             *real_ip_rt;       /* their CIDR set, built by the proxy layer */
    int               limit_routes;     /* a route's limits differ from the server's: the
                                           ACCESS phase finds the route (feature/limit.c) */
    void             *ssl_ctx;          /* SSL_CTX *, built by net/tls.c; NULL without certificates */
    int               mx;               /* metrics series of requests no route took, + 1 */
    int               index;
    int               line;
} lg_server_t;

/* One distinct listening address and the servers that share it. */
typedef struct lg_bind {
    lg_addr_t     addr;
    int           backlog;
    lg_server_t **servers;              /* borrowed */
    size_t        nservers;
    lg_server_t  *default_server;       /* borrowed: is_default, else first */
    int           tls;                  /* TLS on this address */
    int           socks;                /* SOCKS5 on this address (forward proxy) */
    int           stream;               /* a stream server's address (layer 4) */
    int           udp;                  /* ...for datagrams (its own sockets beside a TCP one) */
    int           proxy_protocol;       /* PROXY protocol header expected */
    int           http2;                /* HTTP/2 spoken here as well as HTTP/1.1 */
    int           quic;                 /* HTTP/3 on the UDP port of the same address */
} lg_bind_t;

/*
 * cluster = { ... }: the nodes of a fleet share purges and TLS ticket keys
 * through one Redis (src/cluster).  NULL in lg_conf_t when absent.
 */
typedef struct lg_cluster_conf {
    char      *redis;               /* "IP:port", "rediss://IP:port" or "unix:/path"; required */
    char      *redis_user;          /* ACL user (AUTH user password), or NULL */
    char      *redis_password;      /* AUTH password, or NULL */
    lg_msec_t  redis_timeout;       /* budget of one command, default 100ms */
    lg_msec_t  redis_connect_timeout; /* connect, TLS handshake and AUTH, default 1s */
    /* TLS to Redis: redis = "rediss://IP:port" (conf/load_cluster.c; the
     * context is made by net/tls.c's lg_tls_prepare, in the master) */
    int        redis_tls;           /* derived: the address was rediss:// */
    char      *redis_tls_ca;        /* CA file to verify Redis, or NULL: the system's store */
    char      *redis_tls_name;      /* name to verify and send as SNI, or NULL: verify the IP */
    char      *redis_tls_cert;      /* client certificate chain (tls-auth-clients), or NULL */
    char      *redis_tls_key;       /* its private key; set with redis_tls_cert */
    int        redis_tls_verify;    /* verify Redis's certificate, default true */
    void      *redis_ssl_ctx;       /* SSL_CTX *, built by net/tls.c; NULL without TLS */
    char      *name;                /* key and channel prefix, default "legate" */
    char      *node;                /* this node's name, default via_name */
    int        purge;               /* PURGE fan-out, default true */
    int        purge_log;           /* purges kept in Redis for nodes that were away, default 10000 */
    int        tls_tickets;         /* ticket keys from Redis, default true */
    int        health_votes;        /* nodes whose checks eject a server for all, default 2; 0 off */
    /* the sharded cache (cluster/shard.c): the nodes as an upstream, and
     * which of its servers is this node */
    char      *cache_peers;         /* upstream name, or NULL: every node caches for itself */
    char      *cache_self;          /* "IP:port" of this node there; default: a listen address */
    char      *cache_peers_secret;  /* signs the relay field (HMAC-SHA256); required with cache_peers */
    struct lg_upstream *peers;      /* derived: the upstream cache_peers names */
    int        self;                /* derived: this node's index in peers->servers */
    int        line;                /* of the group, for errors */
    /* derived at load */
    char       host[64];            /* the IP of redis, or "" for a unix socket */
    int        port;
    char      *unix_path;           /* arena, or NULL */
} lg_cluster_conf_t;

typedef struct lg_conf {
    lg_arena_t      arena;
    char           *file;               /* as given (absolute after -p resolution) */
    char           *prefix;             /* ends without '/' */

    int             worker_processes;   /* "auto" -> number of CPUs; default "auto" */
    char           *user;               /* NULL: do not change (default) */
    char           *via_name;           /* received-by in Via, and the loop check; default the host name */
    char           *group;
    char           *pid_file;           /* default "logs/legate.pid" (resolved) */
    char           *error_log;          /* default "logs/error.log" (resolved); "stderr" allowed */
    lg_log_level_t  error_log_level;    /* default notice */
    int             worker_connections; /* client connections per worker; 0 (default): from the open-file limit */
    int             worker_rlimit_nofile; /* 0 = leave as is (default) */
    lg_msec_t       shutdown_timeout;   /* default 10s */
    /* HTTP/2 connections (pipeline/h2.c) */
    int             http2_max_concurrent_streams;   /* default 128 */
    int64_t         http2_max_header_list_size;     /* decoded bytes of one head, default 16k */
    int             http2_reset_rate;       /* resets a second a connection may cause, default 100 */
    int             http2_control_rate;     /* SETTINGS/PING/empty frames a second, default 100 */
    int             quic_max_connections_per_address; /* QUIC connections from one client address, default 64 */
    int             quic_retry;         /* bool: every QUIC client's address validated by a Retry; default off */
    int             quic_steering;      /* bool: the kernel steers QUIC datagrams by connection ID (eBPF); default on */
    lg_strv_t      *metrics_buckets;        /* request duration histogram bounds, durations */
    lg_strv_t      *metrics_status_codes;   /* codes counted as themselves, not as a class */
#define LG_METRICS_BUCKETS 16
#define LG_METRICS_CODES 8              /* metrics_status_codes: at most this many */
    int64_t         shared_memory_size; /* bytes, default 1m: the segment workers share */
    int64_t         cache_size;         /* bytes of shared memory for the HTTP cache, 0 = none */
    int64_t         cache_max_object;   /* default 1m */
    char           *cache_path;         /* directory keeping the cache across restarts; NULL none */
    int64_t         cache_disk_size;    /* bytes of objects on disk under cache_path/disk, 0 = none */
    int64_t         cache_disk_max_object; /* default 1g */
    lg_msec_t       cache_disk_inactive;   /* unused that long: removed, default 10m */
    char           *proxy_temp_path;    /* buffering's temporary files (unlinked), NULL: /var/tmp */
    char           *geoip_mmdb;         /* MaxMind country database, or NULL */
    lg_strv_t      *geoip_csv_blocks;   /* GeoLite2 CSV blocks files (IPv4, IPv6) */
    char           *geoip_csv_locations; /* GeoLite2 CSV locations file */
    int             geoip_line;         /* of geoip_mmdb or geoip_csv_blocks, for errors */
    void           *geo;                /* lg_geo_t *, built by the proxy layer */
    void          (*proxy_free)(struct lg_conf *); /* frees what the proxy layer hung here */

    lg_common_t     http;               /* the http level's inheritable settings */
    int             http_line;          /* of the http group, for errors found after loading */
    lg_upstream_t  *upstreams;
    size_t          nupstreams;
    lg_server_t    *servers;
    size_t          nservers;
    lg_bind_t      *binds;              /* derived: distinct listen addresses */
    size_t          nbinds;
    lg_msec_t       tls_ticket_rotate;  /* session ticket keys rotate this often, default 1h */
    int64_t         tls_session_cache;  /* bytes of the shared session-ID cache, default 1m; 0 off */
    void          (*on_free)(struct lg_conf *); /* set by layers that hang state on the conf */
    void          (*access_free)(struct lg_conf *); /* frees what feature/access.c built */
    void          (*jwt_free)(struct lg_conf *);    /* frees what feature/jwt.c built */
    lg_limit_zone_t *limit_zones;       /* limit_req_zones then limit_conn_zones */
    size_t          nlimit_zones;
    lg_cluster_conf_t *cluster;         /* NULL: a node on its own */
    lg_uvar_t      *uvars;              /* declared variables (maps, set) */
    size_t          nuvars;
} lg_conf_t;

/*
 * Load and validate `file`.  Relative paths inside (pid, logs) resolve under
 * `prefix`, which the caller always supplies (main.c knows the default).
 * The file name itself, if relative, is taken relative to the current
 * directory, as nginx does with -c.  On failure returns NULL and writes every
 * error found, one per line as "FILE:LINE: message\n", into err (size errlen,
 * truncated if needed).
 */
lg_conf_t *lg_conf_load(const char *file, const char *prefix, char *err, size_t errlen);
/*
 * Every level of settings, http first, then each server followed by its
 * routes: fn gets the level, the one it inherits from (NULL for http), the
 * line it starts at and whether it serves requests (servers and routes do;
 * http only gives defaults).  What features build from settings once per
 * generation (access rules, key files) is made this way; fn appends its
 * FILE:LINE messages to err.  0, or -1 if any call returned -1 (every level is visited all the same, so every error
 * is reported).
 */
typedef int (*lg_conf_level_fn)(lg_common_t *c, const lg_common_t *parent,
                                const lg_conf_t *conf, int line, int serves,
                                char *err, size_t errlen);
int        lg_conf_each_level(lg_conf_t *conf, lg_conf_level_fn fn, char *err, size_t errlen);
/* s can stand inside a quoted header parameter (a realm): no quotes,
 * backslashes or control characters.  1 or 0. */
int        lg_parse_quotable(const char *s);
void       lg_conf_free(lg_conf_t *conf);         /* NULL-safe */

/* Write the effective configuration (after merging) in libconfig syntax. */
void       lg_conf_dump(const lg_conf_t *conf, FILE *out);

/* Helpers exported for unit tests and the other layers. */
int  lg_parse_duration(const char *s, lg_msec_t *out);  /* "10s" "500ms" "2m" "1h" "1d", bare = s */
int  lg_parse_size(const char *s, int64_t *out);        /* "512" "16k" "1m" "2g" */
int  lg_parse_addr(const char *s, int default_port, lg_addr_t *out, lg_arena_t *a,
                   char *err, size_t errlen);           /* host:port, [v6]:port, unix:/path, *:port */

#endif
