/*
 * Per-server TLS settings and forward-proxy settings (part of the
 * configuration loader, see load.c).
 */
#include "conf/load_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fn_tls_certs(ld_t *, const config_setting_t *, void *);
static int fn_user_rules(ld_t *, const config_setting_t *, void *);
static int fn_countries(ld_t *, const config_setting_t *, void *);
static int fn_parents(ld_t *, const config_setting_t *, void *);

#define TLS_CIPHERS "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"


/* TLS settings of a server: rows on lg_tls_conf_t. */
const directive_t ld_tls_dirs[] = {
    CUSTOM("tls_certificates", fn_tls_certs),
    ROW("tls_protocols",     D_STRING,   0, 0, "TLSv1.2 TLSv1.3", lg_tls_conf_t, protocols),
    ROW("tls_ciphers",       D_STRING,   0, 0, TLS_CIPHERS, lg_tls_conf_t, ciphers),
    ROW("tls_ciphersuites",  D_STRING,   0, 0, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
        lg_tls_conf_t, ciphersuites),
    PATH("tls_client_ca",    NULL, NULL, lg_tls_conf_t, client_ca),
    ROW("tls_verify_client", D_STRING,   0, 0, "off", lg_tls_conf_t, verify_client),
    ROW("tls_verify_depth",  D_INT,      1, 100, "1", lg_tls_conf_t, verify_depth),
    PATH("tls_ocsp_response", NULL, NULL, lg_tls_conf_t, ocsp_response),
    ROW("hsts",              D_STRING,   0, 0, NULL, lg_tls_conf_t, hsts),
    ROW("tls_handshake_timeout", D_DURATION, 1, WEEK, "10s", lg_tls_conf_t, handshake_timeout),
    ROW("tls_session_tickets", D_BOOL,   0, 1, "true", lg_tls_conf_t, session_tickets),
    ROW("tls_session_timeout", D_DURATION, 1000, WEEK, "5m", lg_tls_conf_t, session_timeout),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* Squid's default Safe_ports: http, ftp, https, gopher, wais, unregistered
 * ports, http-mgmt, gss-http, filemaker, multiling http */
#define SAFE_PORTS "80 21 443 70 210 1025-65535 280 488 591 777"

static const directive_t forward_dirs[] = {
    ROW("allow_clients",     D_STRLIST, 0, 0, "127.0.0.0/8 ::1/128", lg_forward_t, allow_clients),
    ROW("deny_clients",      D_STRLIST, 0, 0, "", lg_forward_t, deny_clients),
    ROW("connect_ports",     D_STRING,  0, 0, "443", lg_forward_t, connect_ports),
    ROW("socks_ports",       D_STRING,  0, 0, SAFE_PORTS, lg_forward_t, socks_ports),
    ROW("http_ports",        D_STRING,  0, 0, SAFE_PORTS, lg_forward_t, http_ports),
    ROW("anonymous_domains", D_STRLIST, 0, 0, "", lg_forward_t, anonymous_domains),
    ROW("allow_private",     D_BOOL,    0, 1, "false", lg_forward_t, allow_private),
    ROW("deny_destinations", D_STRLIST, 0, 0, "", lg_forward_t, deny_destinations),
    { "blocklists", D_STRLIST, 0, 0, "", offsetof(lg_forward_t, blocklists), "paths", NULL },
    ROW("block_domains",     D_STRLIST, 0, 0, "", lg_forward_t, block_domains),
    ROW("url_filters",       D_STRLIST, 0, 0, "", lg_forward_t, url_filters),
    ROW("anonymity",         D_STRING,  0, 0, "transparent", lg_forward_t, anonymity),
    ROW("strip_headers",     D_NAMES,   0, 0, "", lg_forward_t, strip_headers),
    ROW("resolvers",         D_STRLIST, 0, 0, "", lg_forward_t, resolvers),
    PATH("hosts_file",       NULL, NULL, lg_forward_t, hosts_file),
    ROW("dns_family",        D_STRING,  0, 0, "ipv4_first", lg_forward_t, dns_family),
    ROW("tunnel_idle_timeout", D_DURATION, 1, WEEK, "5m", lg_forward_t, tunnel_idle_timeout),
    ROW("connect_sni",       D_STRING,  0, 0, "off", lg_forward_t, connect_sni),
    ROW("connect_sni_timeout", D_DURATION, 1, WEEK, "10s", lg_forward_t, connect_sni_timeout),
    ROW("connect_sni_missing", D_STRING, 0, 0, "refuse", lg_forward_t, connect_sni_missing),
    ROW("keepalive",         D_INT,     0, 10000, "8", lg_forward_t, keepalive),
    ROW("keepalive_total",   D_INT,     0, 1000000, "256", lg_forward_t, keepalive_total),
    ROW("keepalive_timeout", D_DURATION, 1, WEEK, "1m", lg_forward_t, keepalive_timeout),
    PATH("auth_file",        NULL, NULL, lg_forward_t, auth_file),
    ROW("auth_realm",        D_STRING,  0, 0, "legate", lg_forward_t, auth_realm),
    CUSTOM("allow_countries", fn_countries),
    CUSTOM("deny_countries",  fn_countries),
    PATH("auth_groups_file", NULL, NULL, lg_forward_t, auth_groups_file),
    ROW("allow_users",       D_STRLIST, 0, 0, "", lg_forward_t, allow_users),
    CUSTOM("user_rules",     fn_user_rules),
    ROW("ftp_user",          D_STRING,  0, 0, "anonymous", lg_forward_t, ftp_user),
    ROW("ftp_password",      D_STRING,  0, 0, "legate@", lg_forward_t, ftp_password),
    ROW("ftp_epsv",          D_BOOL,    0, 1, "true", lg_forward_t, ftp_epsv),
    CUSTOM("parents",        fn_parents),
    ROW("always_direct",     D_STRLIST, 0, 0, "", lg_forward_t, always_direct),
    ROW("never_direct",      D_BOOL,    0, 1, "false", lg_forward_t, never_direct),
    ROW("tls_inspect",       D_STRLIST, 0, 0, "", lg_forward_t, tls_inspect),
    ROW("tls_inspect_never", D_STRLIST, 0, 0, "", lg_forward_t, tls_inspect_never),
    PATH("tls_inspect_ca",   NULL, NULL, lg_forward_t, tls_inspect_ca),
    PATH("tls_inspect_ca_key", NULL, NULL, lg_forward_t, tls_inspect_ca_key),
    PATH("tls_inspect_verify", NULL, NULL, lg_forward_t, tls_inspect_verify),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t parent_dirs[] = {
    ROW("domains",           D_STRLIST, 0, 0, "", lg_parent_rule_t, domains),
    ROW("upstream",          D_STRING,  0, 0, NULL, lg_parent_rule_t, upstream_name),
    ROW("login",             D_STRING,  0, 0, NULL, lg_parent_rule_t, login),
    ROW("never_direct",      D_BOOL,    0, 1, "false", lg_parent_rule_t, never_direct),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

static const directive_t user_rule_dirs[] = {
    ROW("users",             D_STRLIST, 0, 0, NULL, lg_user_rule_t, users),
    ROW("allow_domains",     D_STRLIST, 0, 0, "", lg_user_rule_t, allow_domains),
    ROW("block_domains",     D_STRLIST, 0, 0, "", lg_user_rule_t, block_domains),
    ROW("connect_ports",     D_STRING,  0, 0, NULL, lg_user_rule_t, connect_ports),
    ROW("socks_ports",       D_STRING,  0, 0, NULL, lg_user_rule_t, socks_ports),
    { NULL, 0, 0, 0, NULL, 0, NULL, NULL }
};

/* allow_countries / deny_countries: checked as the route's countries */
static int fn_countries(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_forward_t *f = base;
    int deny = strcmp(config_setting_name(s), "deny_countries") == 0;
    return ld_countries(ld, s, deny ? &f->deny_countries : &f->allow_countries);
}

/* user_rules = ( { users = [ "@interns" ]; allow_domains = [ ... ]; }, ... ) */
static int fn_user_rules(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_forward_t *f = base;
    int n = ld_entry_count(ld, s, 1, "a list of groups { users = [ ... ]; ... }");
    if (n <= 0)
        return n;
    if ((f->user_rules = ld_calloc(ld, (size_t)n, sizeof(*f->user_rules))) == NULL)
        return ld_oom(ld, s);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        lg_user_rule_t *r = &f->user_rules[f->nuser_rules++];
        r->line = (int)config_setting_source_line(e);
        ld_table_unset(user_rule_dirs, r);
        int erc = ld_parse_block(ld, e, "user rule", user_rule_dirs, r, NULL, NULL);
        erc |= ld_table_defaults(ld, user_rule_dirs, r);
        if (erc == 0 && (r->users == NULL || r->users->n == 0))
            erc = ld_error(ld, e, "a user rule needs 'users' (names, \"@group\" or \"*\")");
        rc |= erc;
    }
    return rc;
}

/* parents = ( { domains = [ ... ]; upstream = "corp"; login = "u:p"; }, ... ) */
static int fn_parents(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_forward_t *f = base;
    int n = ld_entry_count(ld, s, 1, "a list of groups { upstream = \"name\"; ... }");
    if (n <= 0)
        return n;
    if ((f->parents = ld_calloc(ld, (size_t)n, sizeof(*f->parents))) == NULL)
        return ld_oom(ld, s);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *e = ld_entry_at(s, i);
        lg_parent_rule_t *r = &f->parents[f->nparents++];
        r->line = (int)config_setting_source_line(e);
        ld_table_unset(parent_dirs, r);
        int erc = ld_parse_block(ld, e, "parent rule", parent_dirs, r, NULL, NULL);
        erc |= ld_table_defaults(ld, parent_dirs, r);
        if (erc == 0 && r->upstream_name == NULL)
            erc = ld_error(ld, e, "a parent rule needs 'upstream' (the upstream of the parent proxies)");
        if (erc == 0 && r->login && strchr(r->login, ':') == NULL)
            erc = ld_error(ld, config_setting_get_member(e, "login"),
                           "'login' is \"user:password\"");
        rc |= erc;
    }
    return rc;
}

static int fn_tls_certs(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_tls_conf_t *t = base;
    if (!config_setting_is_list(s) && !config_setting_is_group(s))
        return ld_error(ld, s, "'tls_certificates' must be { cert = ...; key = ...; } or a list of them");
    int one = config_setting_is_group(s);
    int n = one ? 1 : config_setting_length(s);
    if (n == 0)
        return ld_error(ld, s, "'tls_certificates' is empty");
    if ((t->certs = ld_calloc(ld, (size_t)n, sizeof(*t->certs))) == NULL)
        return ld_oom(ld, s);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        const config_setting_t *g = one ? s : config_setting_get_elem(s, (unsigned)i);
        const config_setting_t *c = config_setting_get_member(g, "cert");
        const config_setting_t *k = config_setting_get_member(g, "key");
        lg_cert_t *ce = &t->certs[t->ncerts++];
        ce->line = (int)config_setting_source_line(g);
        if (!config_setting_is_group(g) || c == NULL || k == NULL || config_setting_length(g) != 2) {
            rc = ld_error(ld, g, "a certificate is { cert = \"file.pem\"; key = \"file.key\"; }");
            continue;
        }
        const char *cv = ld_get_string(ld, c), *kv = ld_get_string(ld, k);
        if (cv == NULL || kv == NULL) {
            rc = -1;
            continue;
        }
        ce->cert = ld_resolve_path(ld, cv);
        ce->key = ld_resolve_path(ld, kv);
        if (ce->cert == NULL || ce->key == NULL)
            rc = ld_oom(ld, g);
    }
    return rc;
}

int ld_fn_forward(ld_t *ld, const config_setting_t *s, void *base)
{
    lg_server_t *srv = base;
    if (!config_setting_is_group(s))
        return ld_error(ld, s, "'forward' must be a group { allow_clients = ...; }");
    lg_forward_t *f = ld_calloc(ld, 1, sizeof(*f));
    if (f == NULL)
        return ld_oom(ld, s);
    f->line = (int)config_setting_source_line(s);
    ld_table_unset(forward_dirs, f);
    int rc = ld_parse_block(ld, s, "forward", forward_dirs, f, NULL, NULL);
    rc |= ld_table_defaults(ld, forward_dirs, f);
    if (rc == 0) {
        static const char *const anon[] = { "transparent", "anonymous", "elite", NULL };
        static const char *const fam[] = { "ipv4_first", "ipv6_first", "ipv4_only", "ipv6_only", NULL };
        int ok = 0;
        for (int i = 0; anon[i]; i++)
            ok |= strcmp(f->anonymity, anon[i]) == 0;
        if (!ok)
            rc = ld_error(ld, config_setting_get_member(s, "anonymity"),
                          "'anonymity' must be \"transparent\", \"anonymous\" or \"elite\"");
        ok = 0;
        for (int i = 0; fam[i]; i++)
            ok |= strcmp(f->dns_family, fam[i]) == 0;
        if (!ok)
            rc = ld_error(ld, config_setting_get_member(s, "dns_family"),
                          "'dns_family' must be ipv4_first, ipv6_first, ipv4_only or ipv6_only");
        if (strcmp(f->connect_sni, "off") && strcmp(f->connect_sni, "check") &&
            strcmp(f->connect_sni, "match"))
            rc = ld_error(ld, config_setting_get_member(s, "connect_sni"),
                          "'connect_sni' must be \"off\", \"check\" or \"match\"");
        if (strcmp(f->connect_sni_missing, "refuse") && strcmp(f->connect_sni_missing, "allow"))
            rc = ld_error(ld, config_setting_get_member(s, "connect_sni_missing"),
                          "'connect_sni_missing' must be \"refuse\" or \"allow\"");
        /* TLS inspection needs the CA that signs what it mints, and the key */
        const config_setting_t *ca = config_setting_get_member(s, "tls_inspect_ca");
        f->tls_inspect_line = ca ? (int)config_setting_source_line(ca) : f->line;
        if (f->tls_inspect && f->tls_inspect->n && (f->tls_inspect_ca == NULL ||
                                                    f->tls_inspect_ca_key == NULL))
            rc = ld_error(ld, config_setting_get_member(s, "tls_inspect"),
                          "'tls_inspect' needs 'tls_inspect_ca' and 'tls_inspect_ca_key' "
                          "(the CA that signs the certificates legate shows the clients)");
        if ((f->tls_inspect_ca == NULL) != (f->tls_inspect_ca_key == NULL))
            rc = ld_error(ld, ca ? ca : config_setting_get_member(s, "tls_inspect_ca_key"),
                          "'tls_inspect_ca' and 'tls_inspect_ca_key' go together");
        /* rules about users need users */
        static const char *const need_auth[] = { "allow_users", "user_rules", "auth_groups_file", NULL };
        for (int i = 0; need_auth[i] && f->auth_file == NULL; i++) {
            const config_setting_t *m = config_setting_get_member(s, need_auth[i]);
            if (m)
                rc = ld_error(ld, m, "'%s' needs 'auth_file' (users sign in to be told apart)",
                              need_auth[i]);
        }
    }
    srv->forward = f;
    return rc;
}
