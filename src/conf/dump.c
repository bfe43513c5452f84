/*
 * lg_conf_dump(): the effective configuration (defaults filled in, inherited
 * settings merged, paths resolved) in libconfig syntax, for -T.
 *
 * It reads only the public model of conf.h, like every other layer, and
 * writes every setting at every level, so the output is both a complete
 * answer to "what value applies here?" and a file legate loads again to the
 * same lg_conf_t (t/unit/test_conf.c checks the round trip with every
 * setting away from its default: a setting added to the loader but not here
 * fails that test).  Durations are written as "60s" or "500ms", sizes in
 * bytes, addresses in their resolved numeric form.
 */
#include "conf/conf.h"

#include <inttypes.h>
#include <stdio.h>

/* Indentation, four columns a level. */
#define IND(out, n) fprintf((out), "%*s", (n) * 4, "")

static void put_str(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        switch (c) {
        case '"':  fputs("\\\"", out); break;
        case '\\': fputs("\\\\", out); break;
        case '\n': fputs("\\n", out); break;
        case '\r': fputs("\\r", out); break;
        case '\t': fputs("\\t", out); break;
        case '\f': fputs("\\f", out); break;
        default:
            if (c < 0x20 || c == 0x7f)
                fprintf(out, "\\x%02x", c);
            else
                fputc(c, out);
        }
    }
    fputc('"', out);
}

static void kv_str(FILE *out, int ind, const char *name, const char *v)
{
    IND(out, ind);
    fprintf(out, "%s = ", name);
    put_str(out, v);
    fputs(";\n", out);
}

/* libconfig 1.5 silently truncates a plain integer to 32 bits: add "L". */
static void kv_int(FILE *out, int ind, const char *name, int64_t v)
{
    IND(out, ind);
    fprintf(out, "%s = %" PRId64 "%s;\n", name, v, v > INT32_MAX || v < INT32_MIN ? "L" : "");
}

static void kv_bool(FILE *out, int ind, const char *name, int v)
{
    IND(out, ind);
    fprintf(out, "%s = %s;\n", name, v ? "true" : "false");
}

/* "60s" when whole seconds, else "1500ms". */
static void kv_msec(FILE *out, int ind, const char *name, lg_msec_t ms)
{
    IND(out, ind);
    if (ms % 1000 == 0)
        fprintf(out, "%s = \"%" PRId64 "s\";\n", name, ms / 1000);
    else
        fprintf(out, "%s = \"%" PRId64 "ms\";\n", name, ms);
}

static void kv_headers(FILE *out, int ind, const char *name, const lg_header_ops_t *h)
{
    IND(out, ind);
    fprintf(out, "%s = {", name);
    for (size_t i = 0; h != NULL && i < h->n; i++) {
        fprintf(out, " %s = ", h->v[i].name);
        put_str(out, h->v[i].value->src);
        fputc(';', out);
    }
    fputs(" };\n", out);
}

static void kv_names(FILE *out, int ind, const char *name, const lg_strv_t *sv)
{
    IND(out, ind);
    fprintf(out, "%s = [", name);
    for (size_t i = 0; sv != NULL && i < sv->n; i++) {
        fputs(i ? ", " : " ", out);
        put_str(out, sv->v[i]);
    }
    fputs(" ];\n", out);
}

/* limit_req / limit_conn: a list of groups, () when turned off here */
static void kv_limits(FILE *out, int ind, const char *name, const lg_limits_t *l, int conn)
{
    if (l == NULL)
        return;
    IND(out, ind);
    fprintf(out, "%s = (", name);
    for (size_t i = 0; i < l->n; i++) {
        fputs(i ? ", { zone = " : " { zone = ", out);
        put_str(out, l->v[i].zone_name);
        if (conn)
            fprintf(out, "; max = %d; }", l->v[i].max);
        else
            fprintf(out, "; burst = %d; delay = %d; }", l->v[i].burst, l->v[i].delay);
    }
    fputs(" );\n", out);
}

static const lg_uvar_t *uvars;     /* the configuration being dumped's (set names) */

static void dump_common(FILE *out, int ind, const lg_common_t *c)
{
    kv_msec(out, ind, "client_header_timeout", c->client_header_timeout);
    kv_msec(out, ind, "client_body_timeout", c->client_body_timeout);
    kv_msec(out, ind, "send_timeout", c->send_timeout);
    kv_msec(out, ind, "keepalive_timeout", c->keepalive_timeout);
    kv_int(out, ind, "keepalive_requests", c->keepalive_requests);
    kv_msec(out, ind, "proxy_connect_timeout", c->proxy_connect_timeout);
    kv_msec(out, ind, "proxy_send_timeout", c->proxy_send_timeout);
    kv_msec(out, ind, "proxy_read_timeout", c->proxy_read_timeout);
    kv_int(out, ind, "client_max_body_size", c->client_max_body_size);
    kv_bool(out, ind, "websocket", c->websocket);
    kv_msec(out, ind, "websocket_idle_timeout", c->websocket_idle_timeout);
    kv_headers(out, ind, "add_request_headers", c->add_request_headers);
    kv_names(out, ind, "remove_request_headers", c->remove_request_headers);
    kv_headers(out, ind, "add_response_headers", c->add_response_headers);
    kv_names(out, ind, "remove_response_headers", c->remove_response_headers);
    kv_bool(out, ind, "x_forwarded_for", c->x_forwarded_for);
    kv_bool(out, ind, "x_forwarded_proto", c->x_forwarded_proto);
    kv_bool(out, ind, "x_forwarded_host", c->x_forwarded_host);
    kv_bool(out, ind, "x_real_ip", c->x_real_ip);
    kv_bool(out, ind, "forwarded", c->forwarded);
    if (c->via != LG_UNSET)     /* (the http level's, when not written: the servers decide) */
        kv_bool(out, ind, "via", c->via);
    kv_bool(out, ind, "server_timing", c->server_timing);
    kv_bool(out, ind, "gzip", c->gzip);
    kv_int(out, ind, "gzip_level", c->gzip_level);
    kv_int(out, ind, "gzip_min_length", c->gzip_min_length);
    kv_names(out, ind, "gzip_types", c->gzip_types);
    kv_bool(out, ind, "brotli", c->brotli);
    kv_int(out, ind, "brotli_level", c->brotli_level);
    kv_bool(out, ind, "zstd", c->zstd);
    kv_int(out, ind, "zstd_level", c->zstd_level);
    kv_bool(out, ind, "gunzip", c->gunzip);
    kv_bool(out, ind, "gunzip_request_bodies", c->gunzip_request_bodies);
    kv_bool(out, ind, "cache", c->cache);
    kv_str(out, ind, "cache_key", c->cache_key->src);
    IND(out, ind);
    fputs("cache_valid = [", out);
    for (size_t i = 0; c->cache_valid && i < c->cache_valid->n; i++) {
        fputs(i ? ", " : " ", out);
        put_str(out, c->cache_valid->v[i].text);
    }
    fputs(" ];\n", out);
    kv_msec(out, ind, "cache_lock_timeout", c->cache_lock_timeout);
    kv_str(out, ind, "cache_bypass", c->cache_bypass->src);
    kv_str(out, ind, "cache_no_store", c->cache_no_store->src);
    kv_int(out, ind, "cache_min_uses", c->cache_min_uses);
    kv_names(out, ind, "cache_ignore_headers", c->cache_ignore_headers);
    kv_names(out, ind, "cache_purge_allow", c->cache_purge_allow);
    kv_bool(out, ind, "cache_authorized", c->cache_authorized);
    kv_bool(out, ind, "cache_private", c->cache_private);
    kv_bool(out, ind, "cache_store_set_cookie", c->cache_store_set_cookie);
    kv_names(out, ind, "cache_vary_normalize", c->cache_vary_normalize);
    kv_names(out, ind, "cache_targeted_fields", c->cache_targeted_fields);
    kv_bool(out, ind, "cache_targeted_remove", c->cache_targeted_remove);
    kv_bool(out, ind, "cache_partial", c->cache_partial);
    kv_int(out, ind, "cache_max_ranges", c->cache_max_ranges);
    kv_names(out, ind, "cache_use_stale", c->cache_use_stale);
    kv_int(out, ind, "gunzip_request_max", c->gunzip_request_max);
    kv_names(out, ind, "access_rules", c->access_rules);
    kv_str(out, ind, "auth_basic", c->auth_basic);
    if (c->auth_basic_user_file)
        kv_str(out, ind, "auth_basic_user_file", c->auth_basic_user_file);
    kv_str(out, ind, "satisfy", c->satisfy);
    if (c->auth_request)
        kv_str(out, ind, "auth_request", c->auth_request);
    kv_str(out, ind, "auth_request_uri", c->auth_request_uri);
    kv_names(out, ind, "auth_request_headers", c->auth_request_headers);
    kv_names(out, ind, "auth_request_set", c->auth_request_set);
    kv_msec(out, ind, "auth_request_timeout", c->auth_request_timeout);
    kv_msec(out, ind, "auth_request_cache_time", c->auth_request_cache_time);
    kv_str(out, ind, "auth_request_cache_key", c->auth_request_cache_key->src);
    kv_str(out, ind, "auth_jwt", c->auth_jwt);
    if (c->auth_jwt_key_file)
        kv_str(out, ind, "auth_jwt_key_file", c->auth_jwt_key_file);
    if (c->auth_jwt_secret_file)
        kv_str(out, ind, "auth_jwt_secret_file", c->auth_jwt_secret_file);
    if (c->auth_jwt_cookie)
        kv_str(out, ind, "auth_jwt_cookie", c->auth_jwt_cookie);
    kv_msec(out, ind, "auth_jwt_leeway", c->auth_jwt_leeway);
    if (c->auth_jwt_issuer)
        kv_str(out, ind, "auth_jwt_issuer", c->auth_jwt_issuer);
    if (c->auth_jwt_audience)
        kv_str(out, ind, "auth_jwt_audience", c->auth_jwt_audience);
    kv_limits(out, ind, "limit_req", c->limit_req, 0);
    kv_int(out, ind, "limit_req_status", c->limit_req_status);
    kv_bool(out, ind, "limit_req_dry_run", c->limit_req_dry_run);
    kv_limits(out, ind, "limit_conn", c->limit_conn, 1);
    kv_int(out, ind, "limit_conn_status", c->limit_conn_status);
    kv_bool(out, ind, "limit_conn_dry_run", c->limit_conn_dry_run);
    kv_int(out, ind, "limit_rate", c->limit_rate);
    kv_int(out, ind, "limit_rate_after", c->limit_rate_after);
    if (c->limit_rate_zone)
        kv_str(out, ind, "limit_rate_zone", c->limit_rate_zone);
    kv_bool(out, ind, "proxy_buffering", c->proxy_buffering);
    kv_int(out, ind, "proxy_buffers_size", c->proxy_buffers_size);
    kv_int(out, ind, "proxy_max_temp_file_size", c->proxy_max_temp_file_size);
    kv_bool(out, ind, "proxy_request_buffering", c->proxy_request_buffering);
    kv_int(out, ind, "client_body_buffer_size", c->client_body_buffer_size);
    kv_str(out, ind, "default_type", c->default_type);
    kv_bool(out, ind, "add_response_headers_always", c->headers_always);
    if (c->error_pages && c->error_pages->n) {
        IND(out, ind);
        fputs("error_pages = [", out);
        for (size_t i = 0; i < c->error_pages->n; i++) {
            fputs(i ? ", " : " ", out);
            put_str(out, c->error_pages->v[i].text);
        }
        fputs(" ];\n", out);
    }
    kv_bool(out, ind, "intercept_errors", c->intercept_errors);
    kv_names(out, ind, "proxy_redirect", c->proxy_redirect);
    kv_names(out, ind, "proxy_cookie_domain", c->proxy_cookie_domain);
    kv_names(out, ind, "proxy_cookie_path", c->proxy_cookie_path);
    if (c->sets && c->sets->n && uvars) {
        IND(out, ind);
        fputs("set = {", out);
        for (size_t i = 0; i < c->sets->n; i++) {
            fprintf(out, " %s = ", uvars[c->sets->v[i].var].name);
            put_str(out, c->sets->v[i].value->src);
            fputc(';', out);
        }
        fputs(" };\n", out);
    }
    if (c->access_log_if)
        kv_str(out, ind, "access_log_if", c->access_log_if->src);
    if (c->access_log_sample > 1)
        kv_int(out, ind, "access_log_sample", c->access_log_sample);
    kv_bool(out, ind, "traceparent", c->traceparent);
    if (c->request_id_header)
        kv_str(out, ind, "request_id_header", c->request_id_header);
    kv_str(out, ind, "access_log", c->access_log);
    kv_str(out, ind, "log_format", c->log_format->src);
}

/* Back to the written form: ".example.com" -> "*.example.com" and so on. */
static void put_server_name(FILE *out, const lg_server_name_t *sn)
{
    switch (sn->kind) {
    case LG_NAME_WILDCARD:
        fprintf(out, "\"*%s\"", sn->name);      /* names hold no quote or '\' */
        break;
    case LG_NAME_SUFFIX:
        fprintf(out, "\"%s*\"", sn->name);
        break;
    default:
        put_str(out, sn->name);                 /* a regex keeps its "~" */
        break;
    }
}

static void dump_route(FILE *out, int ind, const lg_route_t *rt)
{
    static const char *const match[] = { "exact", "prefix", "regex" };

    IND(out, ind);
    fputs("{\n", out);
    if (rt->named_only)
        kv_str(out, ind + 1, "name", rt->name);
    else
        kv_str(out, ind + 1, rt->icase ? "iregex" : match[rt->match], rt->pattern);
    if (rt->name && !rt->named_only)
        kv_str(out, ind + 1, "name", rt->name);
    if (rt->no_regex)
        kv_bool(out, ind + 1, "no_regex", 1);
    if (rt->nhosts) {
        IND(out, ind + 1);
        fputs("host = [ ", out);
        for (size_t i = 0; i < rt->nhosts; i++) {
            put_server_name(out, &rt->hosts[i]);
            fputs(i + 1 < rt->nhosts ? ", " : " ];\n", out);
        }
    }
    if (rt->methods && rt->methods->n)
        kv_names(out, ind + 1, "methods", rt->methods);
    if (rt->header_text)
        kv_str(out, ind + 1, "header", rt->header_text);
    if (rt->query_text)
        kv_str(out, ind + 1, "query", rt->query_text);
    if (rt->nconds) {
        IND(out, ind + 1);
        fputs("if = [", out);
        for (size_t i = 0; i < rt->nconds; i++) {
            fputs(i ? ", " : " ", out);
            put_str(out, rt->conds[i].text);
        }
        fputs(" ];\n", out);
    }
    if (rt->countries && rt->countries->n)
        kv_names(out, ind + 1, "countries", rt->countries);
    if (rt->nsplits) {
        IND(out, ind + 1);
        fputs("split = (", out);
        for (size_t i = 0; i < rt->nsplits; i++)
            fprintf(out, " { upstream = \"%s\"; weight = %d; }%s", rt->splits[i].upstream->name,
                    rt->splits[i].weight, i + 1 < rt->nsplits ? "," : " );\n");
        kv_str(out, ind + 1, "split_key", rt->split_key->src);
        if (rt->split_cookie)
            kv_str(out, ind + 1, "split_cookie", rt->split_cookie);
        if (rt->rewrite != NULL)
            kv_str(out, ind + 1, "rewrite", rt->rewrite->src);
    } else if (rt->action == LG_ACTION_STATUS) {
        kv_str(out, ind + 1, "status", rt->status_page);
    } else if (rt->action == LG_ACTION_STATIC) {
        kv_str(out, ind + 1, rt->root ? "root" : "alias", rt->root ? rt->root : rt->alias);
        kv_names(out, ind + 1, "index", rt->index);
        kv_str(out, ind + 1, "symlinks", rt->symlinks == LG_SYMLINKS_OFF ? "off" :
                                         rt->symlinks == LG_SYMLINKS_ON ? "on" : "inside");
        if (rt->ntry_files) {
            IND(out, ind + 1);
            fputs("try_files = [", out);
            for (size_t i = 0; i < rt->ntry_files; i++) {
                fputs(i ? ", " : " ", out);
                put_str(out, rt->try_files[i]->src);
            }
            if (rt->try_fallback)
                fprintf(out, ", \"@%s\" ];\n", rt->try_fallback);
            else
                fprintf(out, ", \"=%d\" ];\n", rt->try_status);
        }
    } else if (rt->action == LG_ACTION_PROXY) {
        kv_str(out, ind + 1, "proxy_pass", rt->upstream->name);
        if (rt->rewrite != NULL)
            kv_str(out, ind + 1, "rewrite", rt->rewrite->src);
    } else {
        kv_int(out, ind + 1, "return", rt->status);
        if (rt->body != NULL)
            kv_str(out, ind + 1, "body", rt->body->src);
        if (rt->location != NULL)
            kv_str(out, ind + 1, "location", rt->location->src);
    }
    dump_common(out, ind + 1, &rt->common);
    IND(out, ind);
    fputc('}', out);
}

static void dump_tls(FILE *out, int ind, const lg_tls_conf_t *t)
{
    if (t->ncerts) {
        IND(out, ind);
        fputs("tls_certificates = (", out);
        for (size_t i = 0; i < t->ncerts; i++) {
            fputs(" { cert = ", out);
            put_str(out, t->certs[i].cert ? t->certs[i].cert : "");
            fputs("; key = ", out);
            put_str(out, t->certs[i].key ? t->certs[i].key : "");
            fputs(i + 1 < t->ncerts ? "; }," : "; } );\n", out);
        }
    }
    kv_str(out, ind, "tls_protocols", t->protocols);
    kv_str(out, ind, "tls_ciphers", t->ciphers);
    kv_str(out, ind, "tls_ciphersuites", t->ciphersuites);
    if (t->client_ca)
        kv_str(out, ind, "tls_client_ca", t->client_ca);
    kv_str(out, ind, "tls_verify_client", t->verify_client);
    kv_int(out, ind, "tls_verify_depth", t->verify_depth);
    if (t->ocsp_response)
        kv_str(out, ind, "tls_ocsp_response", t->ocsp_response);
    if (t->hsts)
        kv_str(out, ind, "hsts", t->hsts);
    kv_msec(out, ind, "tls_handshake_timeout", t->handshake_timeout);
    kv_bool(out, ind, "tls_session_tickets", t->session_tickets);
    kv_msec(out, ind, "tls_session_timeout", t->session_timeout);
}

static void dump_forward(FILE *out, int ind, const lg_forward_t *f)
{
    if (f == NULL)
        return;
    IND(out, ind);
    fputs("forward = {\n", out);
    kv_names(out, ind + 1, "allow_clients", f->allow_clients);
    kv_names(out, ind + 1, "deny_clients", f->deny_clients);
    kv_str(out, ind + 1, "connect_ports", f->connect_ports);
    kv_str(out, ind + 1, "socks_ports", f->socks_ports);
    kv_str(out, ind + 1, "http_ports", f->http_ports);
    kv_names(out, ind + 1, "anonymous_domains", f->anonymous_domains);
    kv_bool(out, ind + 1, "allow_private", f->allow_private);
    kv_names(out, ind + 1, "deny_destinations", f->deny_destinations);
    kv_names(out, ind + 1, "blocklists", f->blocklists);
    kv_names(out, ind + 1, "block_domains", f->block_domains);
    kv_names(out, ind + 1, "url_filters", f->url_filters);
    kv_str(out, ind + 1, "anonymity", f->anonymity);
    kv_names(out, ind + 1, "strip_headers", f->strip_headers);
    kv_names(out, ind + 1, "resolvers", f->resolvers);
    if (f->hosts_file)
        kv_str(out, ind + 1, "hosts_file", f->hosts_file);
    kv_str(out, ind + 1, "dns_family", f->dns_family);
    kv_msec(out, ind + 1, "tunnel_idle_timeout", f->tunnel_idle_timeout);
    kv_str(out, ind + 1, "connect_sni", f->connect_sni);
    kv_msec(out, ind + 1, "connect_sni_timeout", f->connect_sni_timeout);
    kv_str(out, ind + 1, "connect_sni_missing", f->connect_sni_missing);
    kv_int(out, ind + 1, "keepalive", f->keepalive);
    kv_int(out, ind + 1, "keepalive_total", f->keepalive_total);
    kv_msec(out, ind + 1, "keepalive_timeout", f->keepalive_timeout);
    kv_names(out, ind + 1, "always_direct", f->always_direct);
    kv_bool(out, ind + 1, "never_direct", f->never_direct);
    if (f->nparents) {
        IND(out, ind + 1);
        fputs("parents = (\n", out);
        for (size_t i = 0; i < f->nparents; i++) {
            const lg_parent_rule_t *r = &f->parents[i];
            IND(out, ind + 2);
            fputs("{\n", out);
            kv_names(out, ind + 3, "domains", r->domains);
            kv_str(out, ind + 3, "upstream", r->upstream_name);
            if (r->login)
                kv_str(out, ind + 3, "login", "hidden:hidden");  /* -T output is shared in bug reports */
            kv_bool(out, ind + 3, "never_direct", r->never_direct);
            IND(out, ind + 2);
            fputs(i + 1 < f->nparents ? "},\n" : "}\n", out);
        }
        IND(out, ind + 1);
        fputs(");\n", out);
    }
    if (f->auth_file)
        kv_str(out, ind + 1, "auth_file", f->auth_file);
    kv_str(out, ind + 1, "auth_realm", f->auth_realm);
    kv_names(out, ind + 1, "allow_countries", f->allow_countries);
    kv_names(out, ind + 1, "deny_countries", f->deny_countries);
    if (f->auth_groups_file)
        kv_str(out, ind + 1, "auth_groups_file", f->auth_groups_file);
    if (f->auth_file)
        kv_names(out, ind + 1, "allow_users", f->allow_users);
    kv_str(out, ind + 1, "ftp_user", f->ftp_user);
    kv_str(out, ind + 1, "ftp_password", f->ftp_password);
    kv_bool(out, ind + 1, "ftp_epsv", f->ftp_epsv);
    kv_names(out, ind + 1, "tls_inspect", f->tls_inspect);
    kv_names(out, ind + 1, "tls_inspect_never", f->tls_inspect_never);
    if (f->tls_inspect_ca)
        kv_str(out, ind + 1, "tls_inspect_ca", f->tls_inspect_ca);
    if (f->tls_inspect_ca_key)
        kv_str(out, ind + 1, "tls_inspect_ca_key", f->tls_inspect_ca_key);
    if (f->tls_inspect_verify)
        kv_str(out, ind + 1, "tls_inspect_verify", f->tls_inspect_verify);
    if (f->nuser_rules) {
        IND(out, ind + 1);
        fputs("user_rules = (\n", out);
        for (size_t i = 0; i < f->nuser_rules; i++) {
            const lg_user_rule_t *r = &f->user_rules[i];
            IND(out, ind + 2);
            fputs("{\n", out);
            kv_names(out, ind + 3, "users", r->users);
            kv_names(out, ind + 3, "allow_domains", r->allow_domains);
            kv_names(out, ind + 3, "block_domains", r->block_domains);
            if (r->connect_ports)
                kv_str(out, ind + 3, "connect_ports", r->connect_ports);
            if (r->socks_ports)
                kv_str(out, ind + 3, "socks_ports", r->socks_ports);
            IND(out, ind + 2);
            fputs(i + 1 < f->nuser_rules ? "},\n" : "}\n", out);
        }
        IND(out, ind + 1);
        fputs(");\n", out);
    }
    IND(out, ind);
    fputs("};\n", out);
}

static void dump_server(FILE *out, int ind, const lg_server_t *srv)
{
    IND(out, ind);
    fputs("{\n", out);
    IND(out, ind + 1);
    fputs("listen = (\n", out);
    for (size_t i = 0; i < srv->nlistens; i++) {
        const lg_listen_t *l = &srv->listens[i];
        IND(out, ind + 2);
        fputs("{ address = ", out);
        put_str(out, l->addr.text);
        fprintf(out, "; backlog = %d; default = %s; tls = %s; protocol = \"%s\"; "
                "proxy_protocol = %s; http2 = %s; quic = %s; }%s\n",
                l->backlog, l->is_default ? "true" : "false", l->tls ? "true" : "false",
                l->protocol ? l->protocol : "http", l->proxy_protocol ? "true" : "false",
                l->http2 ? "true" : "false", l->quic ? "true" : "false",
                i + 1 < srv->nlistens ? "," : "");
    }
    IND(out, ind + 1);
    fputs(");\n", out);
    if (srv->nnames > 0) {
        IND(out, ind + 1);
        fputs("server_name = [", out);
        for (size_t i = 0; i < srv->nnames; i++) {
            fputs(i ? ", " : " ", out);
            put_server_name(out, &srv->names[i]);
        }
        fputs(" ];\n", out);
    }
    dump_common(out, ind + 1, &srv->common);
    kv_names(out, ind + 1, "real_ip_from", srv->real_ip_from);
    kv_str(out, ind + 1, "real_ip_header", srv->real_ip_header);
    dump_tls(out, ind + 1, &srv->tls);
    dump_forward(out, ind + 1, srv->forward);
    IND(out, ind + 1);
    fputs("routes = (\n", out);
    for (size_t i = 0; i < srv->nroutes; i++) {
        dump_route(out, ind + 2, &srv->routes[i]);
        fputs(i + 1 < srv->nroutes ? ",\n" : "\n", out);
    }
    IND(out, ind + 1);
    fputs(");\n", out);
    IND(out, ind);
    fputc('}', out);
}

static void dump_upstream(FILE *out, int ind, const lg_upstream_t *up)
{
    IND(out, ind);
    fprintf(out, "%s = {\n", up->name);
    kv_int(out, ind + 1, "keepalive", up->keepalive);
    kv_str(out, ind + 1, "balance", up->balance_name);
    kv_str(out, ind + 1, "hash_key", up->hash_key->src);
    kv_int(out, ind + 1, "max_fails", up->max_fails);
    kv_msec(out, ind + 1, "fail_timeout", up->fail_timeout);
    if (up->connect_timeout)
        kv_msec(out, ind + 1, "proxy_connect_timeout", up->connect_timeout);
    if (up->read_timeout)
        kv_msec(out, ind + 1, "proxy_read_timeout", up->read_timeout);
    kv_str(out, ind + 1, "fail_on", up->fail_on);
    kv_str(out, ind + 1, "next_upstream", up->next_upstream);
    kv_int(out, ind + 1, "next_upstream_tries", up->next_upstream_tries);
    kv_msec(out, ind + 1, "next_upstream_timeout", up->next_upstream_timeout);
    kv_msec(out, ind + 1, "slow_start", up->slow_start);
    kv_bool(out, ind + 1, "tls", up->tls);
    kv_str(out, ind + 1, "protocol", up->protocol);
    kv_int(out, ind + 1, "h2_connections", up->h2_connections);
    kv_bool(out, ind + 1, "tls_verify", up->tls_verify);
    if (up->tls_ca)
        kv_str(out, ind + 1, "tls_ca", up->tls_ca);
    if (up->tls_server_name)
        kv_str(out, ind + 1, "tls_server_name", up->tls_server_name);
    if (up->tls_certificate) {
        kv_str(out, ind + 1, "tls_certificate", up->tls_certificate);
        kv_str(out, ind + 1, "tls_key", up->tls_key);
    }
    kv_int(out, ind + 1, "max_conns", up->max_conns);
    kv_int(out, ind + 1, "queue", up->queue);
    kv_msec(out, ind + 1, "queue_timeout", up->queue_timeout);
    if (up->resolve) {
        kv_bool(out, ind + 1, "resolve", 1);
        kv_names(out, ind + 1, "resolvers", up->resolvers);
        kv_msec(out, ind + 1, "resolve_valid", up->resolve_valid);
    }
    if (up->health) {
        const lg_health_t *h = up->health;
        IND(out, ind + 1);
        fputs("health_check = {\n", out);
        kv_msec(out, ind + 2, "interval", h->interval);
        kv_msec(out, ind + 2, "timeout", h->timeout);
        kv_str(out, ind + 2, "method", h->method);
        kv_str(out, ind + 2, "path", h->path);
        if (h->host)
            kv_str(out, ind + 2, "host", h->host);
        kv_str(out, ind + 2, "status", h->status);
        if (h->body)
            kv_str(out, ind + 2, "body", h->body);
        kv_int(out, ind + 2, "rise", h->rise);
        kv_int(out, ind + 2, "fall", h->fall);
        kv_str(out, ind + 2, "type", h->type);
        if (h->send)
            kv_str(out, ind + 2, "send", h->send);
        if (h->expect)
            kv_str(out, ind + 2, "expect", h->expect);
        IND(out, ind + 1);
        fputs("};\n", out);
    }
    IND(out, ind + 1);
    fputs("servers = (\n", out);
    for (size_t i = 0; i < up->nservers; i++) {
        IND(out, ind + 2);
        fputs("{ address = ", out);
        put_str(out, up->servers[i].addr.text);
        fprintf(out, "; weight = %d; max_conns = %d; backup = %s; down = %s; }%s\n",
                up->servers[i].weight, up->servers[i].max_conns,
                up->servers[i].backup ? "true" : "false", up->servers[i].down ? "true" : "false",
                i + 1 < up->nservers ? "," : "");
    }
    IND(out, ind + 1);
    fputs(");\n", out);
    IND(out, ind);
    fputs("};\n", out);
}

/* ---- stream servers (issue 21) ---- */
static void dump_stream(FILE *out, const lg_conf_t *conf, size_t first)
{
    fputs("\nstream = {\n    upstreams = {\n", out);
    for (size_t i = 0; i < conf->nupstreams; i++)
        if (conf->upstreams[i].stream)
            dump_upstream(out, 2, &conf->upstreams[i]);
    fputs("    };\n\n    servers = (\n", out);
    for (size_t i = first; i < conf->nservers; i++) {
        const lg_server_t *srv = &conf->servers[i];
        const lg_stream_t *st = srv->stream;
        fputs("        {\n            listen = (\n", out);
        for (size_t k = 0; k < srv->nlistens; k++) {
            const lg_listen_t *l = &srv->listens[k];
            fputs("                { address = ", out);
            put_str(out, l->addr.text);
            fprintf(out, "; backlog = %d; tls = %s; proxy_protocol = %s; udp = %s; }%s\n",
                    l->backlog, l->tls ? "true" : "false", l->proxy_protocol ? "true" : "false",
                    l->udp ? "true" : "false", k + 1 < srv->nlistens ? "," : "");
        }
        fputs("            );\n", out);
        if (st->proxy_pass)
            kv_str(out, 3, "proxy_pass", st->proxy_pass);
        kv_msec(out, 3, "proxy_connect_timeout", srv->common.proxy_connect_timeout);
        kv_msec(out, 3, "proxy_timeout", st->proxy_timeout);
        kv_str(out, 3, "send_proxy_protocol", st->proxy_protocol);
        kv_bool(out, 3, "ssl_preread", st->ssl_preread);
        kv_msec(out, 3, "preread_timeout", st->preread_timeout);
        kv_int(out, 3, "proxy_responses", st->proxy_responses);
        kv_int(out, 3, "udp_sessions", st->udp_sessions);
        kv_str(out, 3, "access_log", srv->common.access_log);
        kv_str(out, 3, "log_format", srv->common.log_format->src);
        kv_int(out, 3, "limit_rate", srv->common.limit_rate);
        kv_int(out, 3, "limit_rate_after", srv->common.limit_rate_after);
        if (srv->tls.ncerts)
            dump_tls(out, 3, &srv->tls);
        if (st->nroutes) {
            fputs("            routes = (\n", out);
            for (size_t k = 0; k < st->nroutes; k++) {
                const lg_stream_route_t *rt = &st->routes[k];
                fputs("                {", out);
                if (rt->no_sni)
                    fputs(" server_name = \"\";", out);
                else if (rt->nnames) {
                    fputs(" server_name = [", out);
                    for (size_t j = 0; j < rt->nnames; j++) {
                        fputs(j ? ", " : " ", out);
                        put_server_name(out, &rt->names[j]);
                    }
                    fputs(" ];", out);
                }
                if (rt->alpn) {
                    fputs(" alpn = [", out);
                    for (size_t j = 0; j < rt->alpn->n; j++) {
                        fputs(j ? ", " : " ", out);
                        put_str(out, rt->alpn->v[j]);
                    }
                    fputs(" ];", out);
                }
                if (rt->proxy_pass) {
                    fputs(" proxy_pass = ", out);
                    put_str(out, rt->proxy_pass);
                    fputs(";", out);
                } else {
                    fputs(" http = ", out);
                    put_str(out, rt->http.text);
                    fputs(";", out);
                }
                fputs(k + 1 < st->nroutes ? " },\n" : " }\n", out);
            }
            fputs("            );\n", out);
        }
        fputs(i + 1 < conf->nservers ? "        },\n" : "        }\n", out);
    }
    fputs("    );\n};\n", out);
}

void lg_conf_dump(const lg_conf_t *conf, FILE *out)
{
    fprintf(out, "# legate: effective configuration of %s\n"
            "# (defaults filled in, inherited settings merged, paths resolved)\n\n",
            conf->file ? conf->file : "?");
    kv_int(out, 0, "worker_processes", conf->worker_processes);
    if (conf->user != NULL)
        kv_str(out, 0, "user", conf->user);
    if (conf->group != NULL)
        kv_str(out, 0, "group", conf->group);
    kv_str(out, 0, "pid", conf->pid_file);
    kv_str(out, 0, "error_log", conf->error_log);
    kv_str(out, 0, "error_log_level", lg_log_level_name(conf->error_log_level));
    kv_int(out, 0, "worker_connections", conf->worker_connections);
    kv_int(out, 0, "worker_rlimit_nofile", conf->worker_rlimit_nofile);
    kv_msec(out, 0, "shutdown_timeout", conf->shutdown_timeout);
    kv_int(out, 0, "http2_max_concurrent_streams", conf->http2_max_concurrent_streams);
    kv_int(out, 0, "http2_max_header_list_size", conf->http2_max_header_list_size);
    kv_int(out, 0, "http2_reset_rate", conf->http2_reset_rate);
    kv_int(out, 0, "http2_control_rate", conf->http2_control_rate);
    kv_int(out, 0, "quic_max_connections_per_address", conf->quic_max_connections_per_address);
    kv_bool(out, 0, "quic_retry", conf->quic_retry);
    kv_bool(out, 0, "quic_steering", conf->quic_steering);
    kv_names(out, 0, "metrics_buckets", conf->metrics_buckets);
    if (conf->metrics_status_codes && conf->metrics_status_codes->n)
        kv_names(out, 0, "metrics_status_codes", conf->metrics_status_codes);
    kv_int(out, 0, "shared_memory_size", conf->shared_memory_size);
    kv_msec(out, 0, "tls_ticket_rotate", conf->tls_ticket_rotate);
    kv_int(out, 0, "tls_session_cache", conf->tls_session_cache);
    kv_str(out, 0, "via_name", conf->via_name);
    kv_int(out, 0, "cache_size", conf->cache_size);
    kv_int(out, 0, "cache_max_object", conf->cache_max_object);
    if (conf->cache_path)
        kv_str(out, 0, "cache_path", conf->cache_path);
    kv_int(out, 0, "cache_disk_size", conf->cache_disk_size);
    kv_int(out, 0, "cache_disk_max_object", conf->cache_disk_max_object);
    kv_msec(out, 0, "cache_disk_inactive", conf->cache_disk_inactive);
    if (conf->proxy_temp_path)
        kv_str(out, 0, "proxy_temp_path", conf->proxy_temp_path);
    if (conf->geoip_mmdb)
        kv_str(out, 0, "geoip_mmdb", conf->geoip_mmdb);
    kv_names(out, 0, "geoip_csv_blocks", conf->geoip_csv_blocks);
    if (conf->geoip_csv_locations)
        kv_str(out, 0, "geoip_csv_locations", conf->geoip_csv_locations);
    if (conf->cluster) {
        const lg_cluster_conf_t *cl = conf->cluster;
        fputs("\ncluster = {\n", out);
        kv_str(out, 1, "redis", cl->redis);
        if (cl->redis_user)
            kv_str(out, 1, "redis_user", cl->redis_user);
        if (cl->redis_password)
            kv_str(out, 1, "redis_password", cl->redis_password);
        kv_msec(out, 1, "redis_timeout", cl->redis_timeout);
        kv_msec(out, 1, "redis_connect_timeout", cl->redis_connect_timeout);
        if (cl->redis_tls) {
            if (cl->redis_tls_ca)
                kv_str(out, 1, "redis_tls_ca", cl->redis_tls_ca);
            if (cl->redis_tls_name)
                kv_str(out, 1, "redis_tls_name", cl->redis_tls_name);
            if (cl->redis_tls_cert) {
                kv_str(out, 1, "redis_tls_cert", cl->redis_tls_cert);
                kv_str(out, 1, "redis_tls_key", cl->redis_tls_key);
            }
            kv_bool(out, 1, "redis_tls_verify", cl->redis_tls_verify);
        }
        kv_str(out, 1, "name", cl->name);
        kv_str(out, 1, "node", cl->node ? cl->node : conf->via_name);
        kv_bool(out, 1, "purge", cl->purge);
        kv_int(out, 1, "purge_log", cl->purge_log);
        kv_bool(out, 1, "tls_tickets", cl->tls_tickets);
        kv_int(out, 1, "health_votes", cl->health_votes);
        if (cl->peers) {
            kv_str(out, 1, "cache_peers", cl->peers->name);
            kv_str(out, 1, "cache_self", cl->peers->servers[cl->self].addr.text);
            kv_str(out, 1, "cache_peers_secret", cl->cache_peers_secret);
        }
        fputs("};\n", out);
    }

    fputs("\nhttp = {\n", out);
    uvars = conf->uvars;
    dump_common(out, 1, &conf->http);
    int nmaps = 0;
    for (size_t i = 0; i < conf->nuvars; i++) {
        const lg_map_t *m = conf->uvars[i].map;
        if (m == NULL)
            continue;
        fputs(nmaps++ ? ",\n        { variable = " : "    maps = (\n        { variable = ", out);
        put_str(out, conf->uvars[i].name);
        fputs("; source = ", out);
        put_str(out, m->source->src);
        if (m->dflt) {
            fputs("; default = ", out);
            put_str(out, m->dflt->src);
        }
        fputs(";\n          values = (", out);
        for (size_t k = 0; k < m->n; k++) {
            const lg_map_entry_t *e = &m->v[k];
            char key[1024];
            if (e->kind == LG_MAPK_LEADING)
                snprintf(key, sizeof(key), "*%s", e->key);
            else if (e->kind == LG_MAPK_TRAILING)
                snprintf(key, sizeof(key), "%s*", e->key);
            else if (e->kind == LG_MAPK_EXACT && (e->key[0] == '~' || e->key[0] == '*'))
                snprintf(key, sizeof(key), "\\%s", e->key);
            else
                snprintf(key, sizeof(key), "%s", e->key);
            fputs(k ? ", [ " : " [ ", out);
            put_str(out, key);
            fputs(", ", out);
            put_str(out, e->value->src);
            fputs(" ]", out);
        }
        fputs(" ); }", out);
    }
    if (nmaps)
        fputs("\n    );\n", out);
    for (int conn = 0; conn < 2; conn++) {
        int any = 0;
        for (size_t i = 0; i < conf->nlimit_zones; i++) {
            const lg_limit_zone_t *z = &conf->limit_zones[i];
            if (z->conn != conn)
                continue;
            fputs(any++ ? ",\n        { name = " : conn ? "    limit_conn_zones = (\n        { name = "
                                                        : "    limit_req_zones = (\n        { name = ", out);
            put_str(out, z->name);
            fputs("; key = ", out);
            put_str(out, z->key->src);
            fprintf(out, "; size = %lld;", (long long)z->size);
            if (!conn) {
                fputs(" rate = ", out);
                put_str(out, z->rate);
                fputs(";", out);
                if (z->cluster)
                    fputs(" cluster = true;", out);
            }
            fputs(" }", out);
        }
        if (any)
            fputs("\n    );\n", out);
    }
    fputs("\n    upstreams = {\n", out);
    for (size_t i = 0; i < conf->nupstreams; i++)
        if (!conf->upstreams[i].stream)
            dump_upstream(out, 2, &conf->upstreams[i]);
    fputs("    };\n\n    servers = (\n", out);
    size_t nhttp = 0;
    while (nhttp < conf->nservers && conf->servers[nhttp].stream == NULL)
        nhttp++;                /* (stream servers come after the http ones) */
    for (size_t i = 0; i < nhttp; i++) {
        dump_server(out, 2, &conf->servers[i]);
        fputs(i + 1 < nhttp ? ",\n" : "\n", out);
    }
    fputs("    );\n};\n", out);
    if (nhttp < conf->nservers)
        dump_stream(out, conf, nhttp);
}
