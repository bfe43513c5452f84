/*
 * Access rules and Basic authentication for the reverse proxy, in the
 * ACCESS phase: nginx's allow/deny, auth_basic, auth_basic_user_file and
 * satisfy, as settings inherited http -> server -> route.
 *
 *   access_rules = [ "allow 10.0.0.0/8 192.168.0.0/16", "deny all" ];
 *   auth_basic = "Admin area";   auth_basic_user_file = "htpasswd";
 *   satisfy = "all";             # or "any"
 *
 * Order: the address rules first, then the password.  access_rules is one
 * ordered list (libconfig would lose the order between separate allow and
 * deny keys): the first entry containing the client's address decides, and
 * an address no entry contains is allowed, as in nginx.  The address is the
 * request's (r->peer: after the PROXY protocol and real_ip_from, which run
 * in POST_READ).  "all" also matches clients on a unix socket; a CIDR never
 * does.  satisfy = "all": a denied address is 403 before any password is
 * looked at, then the password must be right (401).  satisfy = "any": an
 * address an "allow" entry matched passes without a password; otherwise the
 * password decides, and without auth_basic a "deny" is a 403.
 *
 * Everything is built once per configuration generation in the master
 * (lg_access_prepare, which legate -t runs too): a CIDR set per run of
 * entries with the same verdict (so a lookup costs one search per run and
 * the first matching run is the first matching entry), and the htpasswd
 * files (net/htpasswd.c).  A level that inherits its parent's list or file
 * shares the parent's build.
 *
 * A password costs at most one hash per request, and usually none: a
 * success is remembered per connection (c->auth_ok, a digest of the
 * Authorization value and the file) and per file for a few minutes; an
 * address that keeps failing waits, without a hash, answered 429 with
 * Retry-After (lg_htpasswd_throttled).
 */
#include "feature/access.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "feature/metrics.h"
#include "net/acl.h"
#include "net/htpasswd.h"
#include "pipeline/headers.h"

typedef struct acc_run {
    lg_cidr_set_t *set;         /* NULL: "all" */
    int            allow;
} acc_run_t;

typedef struct acc_rules {
    acc_run_t *runs;
    size_t     nruns;
    int        has_allow;       /* some entry allows (satisfy any: may pass without a password) */
} acc_rules_t;

#define ERR(...) do { size_t u_ = strlen(err); \
        if (u_ < errlen) snprintf(err + u_, errlen - u_, __VA_ARGS__); } while (0)

static void rules_free(acc_rules_t *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->nruns; i++)
        lg_cidr_free(a->runs[i].set);
    free(a->runs);
    free(a);
}

/* "allow ADDR ..." / "deny ADDR ..." / "allow all" / "deny all". */
static acc_rules_t *rules_build(const lg_strv_t *v, const char *file, int line, char *err,
                                size_t errlen)
{
    acc_rules_t *a = calloc(1, sizeof(*a));
    if (a == NULL || (a->runs = calloc(v->n, sizeof(*a->runs))) == NULL) {
        free(a);
        ERR("%s:%d: out of memory\n", file, line);
        return NULL;
    }
    int bad = 0;
    for (size_t i = 0; i < v->n; i++) {
        const char *e = v->v[i];
        int allow = strncmp(e, "allow", 5) == 0 && (e[5] == ' ' || e[5] == '\t');
        int deny = strncmp(e, "deny", 4) == 0 && (e[4] == ' ' || e[4] == '\t');
        if (!allow && !deny) {
            ERR("%s:%d: 'access_rules': \"%s\" must be \"allow ADDRESS...\", \"deny ADDRESS...\", "
                "\"allow all\" or \"deny all\"\n", file, line, e);
            bad = 1;
            continue;
        }
        const char *rest = e + (allow ? 5 : 4);
        rest += strspn(rest, " \t");
        if (*rest == '\0') {
            ERR("%s:%d: 'access_rules': \"%s\" names no address\n", file, line, e);
            bad = 1;
            continue;
        }
        if (strcmp(rest, "all") == 0) {
            acc_run_t *r = &a->runs[a->nruns++];   /* its own run: it ends the matching */
            r->allow = allow;
            a->has_allow |= allow;
            continue;
        }
        acc_run_t *r = a->nruns ? &a->runs[a->nruns - 1] : NULL;
        if (r == NULL || r->set == NULL || r->allow != allow) {
            r = &a->runs[a->nruns++];
            r->allow = allow;
            if ((r->set = lg_cidr_new()) == NULL) {
                ERR("%s:%d: out of memory\n", file, line);
                bad = 1;
                break;
            }
        }
        char msg[256];
        if (strstr(rest, "all") || lg_cidr_add_list(r->set, rest, msg, sizeof(msg)) < 0) {
            ERR("%s:%d: 'access_rules': \"%s\": %s\n", file, line, e,
                strstr(rest, "all") ? "\"all\" stands alone" : msg);
            bad = 1;
        }
        a->has_allow |= allow;
    }
    for (size_t i = 0; !bad && i < a->nruns; i++) {
        char msg[256];
        if (a->runs[i].set && lg_cidr_build(a->runs[i].set, msg, sizeof(msg)) < 0) {
            ERR("%s:%d: 'access_rules': %s\n", file, line, msg);
            bad = 1;
        }
    }
    if (bad) {
        rules_free(a);
        return NULL;
    }
    return a;
}


/* One level's build; parent: the level it inherits from, or NULL (http). */
static int prepare_level(lg_common_t *c, const lg_common_t *parent, const lg_conf_t *conf,
                         int line, int serves, char *err, size_t errlen)
{
    const char *file = conf->file;
    int rc = 0;
    if (parent && c->access_rules == parent->access_rules)
        c->access_rt = parent->access_rt;
    else if (c->access_rules && c->access_rules->n &&
             (c->access_rt = rules_build(c->access_rules, file, line, err, errlen)) == NULL)
        rc = -1;
    if (parent && c->auth_basic_user_file == parent->auth_basic_user_file)
        c->auth_rt = parent->auth_rt;
    else if (c->auth_basic_user_file &&
             (c->auth_rt = lg_htpasswd_load(c->auth_basic_user_file, err, errlen)) == NULL)
        rc = -1;
    /* each level reports only what it wrote itself, not what it inherited */
    if (strcmp(c->satisfy, "all") != 0 && strcmp(c->satisfy, "any") != 0 &&
        (parent == NULL || c->satisfy != parent->satisfy)) {
        ERR("%s:%d: 'satisfy' must be \"all\" or \"any\"\n", file, line);
        rc = -1;
    }
    if (!lg_parse_quotable(c->auth_basic) && (parent == NULL || c->auth_basic != parent->auth_basic)) {
        ERR("%s:%d: 'auth_basic' (the realm) must not hold quotes, backslashes or control "
            "characters\n", file, line);
        rc = -1;
    }
    if (serves && strcmp(c->auth_basic, "off") != 0 && c->auth_basic_user_file == NULL) {
        ERR("%s:%d: 'auth_basic' needs 'auth_basic_user_file'\n", file, line);
        rc = -1;
    }
    return rc;
}

static void access_free(lg_conf_t *conf)
{
    /* a level owns its build unless it is its parent's */
    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        for (size_t j = 0; j < srv->nroutes; j++) {
            lg_common_t *c = &srv->routes[j].common;
            if (c->access_rt != srv->common.access_rt)
                rules_free(c->access_rt);
            if (c->auth_rt != srv->common.auth_rt)
                lg_htpasswd_free(c->auth_rt);
            c->access_rt = c->auth_rt = NULL;
        }
        if (srv->common.access_rt != conf->http.access_rt)
            rules_free(srv->common.access_rt);
        if (srv->common.auth_rt != conf->http.auth_rt)
            lg_htpasswd_free(srv->common.auth_rt);
        srv->common.access_rt = srv->common.auth_rt = NULL;
    }
    rules_free(conf->http.access_rt);
    lg_htpasswd_free(conf->http.auth_rt);
    conf->http.access_rt = conf->http.auth_rt = NULL;
}

int lg_access_prepare(lg_conf_t *conf, char *err, size_t errlen)
{
    conf->access_free = access_free;
    return lg_conf_each_level(conf, prepare_level, err, errlen);
}

/* ---- the worker side ---- */

/* The settings that hold for r: its route's, found now if need be. */
static const lg_common_t *settings(lg_req_t *r)
{
    int status;
    const lg_route_t *rt = lg_route_request(r, &status);
    return rt ? &rt->common : lg_req_common(r);
}

/* 1 allowed by an entry, -1 denied by one, 0 no entry matched; *why the entry. */
static int rules_verdict(lg_req_t *r, const acc_rules_t *a, const char **why)
{
    const struct sockaddr *sa = (const struct sockaddr *)&r->peer;
    for (size_t i = 0; a && i < a->nruns; i++) {
        const acc_run_t *run = &a->runs[i];
        int k = -1;
        if (run->set == NULL || (k = lg_cidr_lookup(run->set, sa)) >= 0) {
            *why = lg_arena_printf(&r->arena, "access_rules: %s %s", run->allow ? "allow" : "deny",
                                   run->set ? lg_cidr_rule(run->set, k) : "all");
            return run->allow ? 1 : -1;
        }
    }
    return 0;
}

static void memo_key(const lg_htpasswd_t *h, const http_header_t *a, unsigned char out[16])
{
    unsigned char d[32];
    unsigned int dl = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, &h, sizeof(h)) != 1 ||
        EVP_DigestUpdate(md, a->value, a->value_len) != 1 || EVP_DigestFinal_ex(md, d, &dl) != 1)
        memset(d, 0, sizeof(d));        /* never matches: the memo is only a shortcut */
    EVP_MD_CTX_free(md);
    memcpy(out, d, 16);
}

static int memo_hit(const lg_conn_t *c, const unsigned char k[16])
{
    static const unsigned char zero[16];
    return CRYPTO_memcmp(c->auth_ok, zero, 16) != 0 && CRYPTO_memcmp(c->auth_ok, k, 16) == 0;
}

/* 1: r->user set; 0: answered (401, 429). */
static int check_basic(lg_req_t *r, const lg_common_t *c)
{
    lg_htpasswd_t *h = c->auth_rt;
    const http_header_t *a = lg_headers_get(r, "authorization");
    char buf[1024];
    const char *user = NULL, *pass = NULL;
    r->auth_realm = c->auth_basic;
    if (a == NULL) {
        r->blocked = "auth_basic: no credentials";
        lg_respond_error(r, 401);
        return 0;
    }
    if (lg_htpasswd_basic(a->value, a->value_len, buf, sizeof(buf), &user, &pass) < 0) {
        r->blocked = "auth_basic: credentials are not Basic user:password";
        lg_info("auth_basic: malformed Authorization from %s", r->peer_text);
        lg_respond_error(r, 401);
        return 0;
    }
    unsigned char k[16];
    memo_key(h, a, k);
    if (memo_hit(r->conn, k)) {
        r->user = lg_arena_strdup(&r->arena, user);
        OPENSSL_cleanse(buf, sizeof(buf));
        return 1;
    }
    const struct sockaddr *sa = (const struct sockaddr *)&r->peer;
    lg_msec_t wait = lg_htpasswd_throttled(sa, lg_w.loop.now);
    if (wait > 0) {
        OPENSSL_cleanse(buf, sizeof(buf));
        r->blocked = "auth_basic: too many failed attempts from this address";
        r->local_extra = lg_arena_printf(&r->arena, "Retry-After: %lld\r\n",
                                         (long long)((wait + 999) / 1000));
        lg_respond_error(r, 429);
        return 0;
    }
    int ok = lg_htpasswd_check(h, user, pass, lg_w.loop.now);
    OPENSSL_cleanse((char *)pass, strlen(pass));
    lg_htpasswd_result(sa, ok, lg_w.loop.now);
    if (!ok) {
        r->blocked = "auth_basic: wrong user or password";
        lg_info("auth_basic: user \"%s\" from %s: wrong user or password (%s)", user,
                r->peer_text, lg_htpasswd_path(h));
        lg_respond_error(r, 401);
        return 0;
    }
    lg_debug("auth_basic: user \"%s\" from %s: password checked", user, r->peer_text);
    memcpy(r->conn->auth_ok, k, 16);
    r->user = lg_arena_strdup(&r->arena, user);
    OPENSSL_cleanse(buf, sizeof(buf));
    return 1;
}

static int authenticate(lg_req_t *r, const lg_common_t *c)
{
    int ok = check_basic(r, c);
    lg_mx_count(LG_MX_AUTH, "basic", NULL,
                ok ? "passed" : r->status == 429 ? "throttled" : "rejected", 1);
    return ok;
}

static void forbid(lg_req_t *r, const char *why)
{
    r->blocked = why;
    lg_info("access forbidden by %s, client: %s, request: \"%.*s %.*s\"", why, r->peer_text,
            (int)r->req.method_len, r->req.method, (int)r->req.target_len, r->req.target);
    lg_respond_error(r, 403);
}

static int access_phase(lg_req_t *r)
{
    if (lg_req_is_forward(r))
        return LG_DECLINED;     /* the forward proxy has its own rules (forward.c) */
    const lg_common_t *c = settings(r);
    const acc_rules_t *rules = c->access_rt;
    int auth = strcmp(c->auth_basic, "off") != 0 && c->auth_rt != NULL;
    if (rules == NULL && !auth)
        return LG_DECLINED;
    const char *why = NULL;
    int v = rules_verdict(r, rules, &why);
    if (rules)
        lg_mx_count(LG_MX_ACCESS, NULL, NULL, v < 0 ? "denied" : "allowed", 1);
    if (c->satisfy[1] == 'n') {         /* "any" */
        if (v > 0) {
            r->satisfied = 1;   /* an allowed address: no password, token or service asked */
            return LG_OK;
        }
        if (!auth && v == 0)
            return LG_OK;
        if (!auth) {
            if (strcmp(c->auth_jwt, "off") != 0 || c->auth_request)
                return LG_OK;   /* denied here, but a token or the service may still let it in */
            forbid(r, why);
            return LG_DONE;
        }
        /* a token instead of a password: the JWT check decides (it asks
         * for either when both are missing) */
        const http_header_t *a = lg_headers_get(r, "authorization");
        int basic = a && a->value_len > 6 && strncasecmp(a->value, "Basic ", 6) == 0;
        if (!basic && strcmp(c->auth_jwt, "off") != 0) {
            r->auth_realm = c->auth_basic;
            return LG_OK;
        }
        if (!authenticate(r, c))
            return LG_DONE;
        r->satisfied = 1;
        return LG_OK;
    }
    if (v < 0) {
        forbid(r, why);
        return LG_DONE;
    }
    if (auth && !authenticate(r, c))
        return LG_DONE;
    return LG_OK;
}

const lg_feature_t lg_feature_access = {
    .name = "access",
    .handlers = { { LG_PH_ACCESS, access_phase } },
};
