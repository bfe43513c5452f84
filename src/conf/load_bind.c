/*
 * The distinct listen addresses of a configuration (lg_bind_t): every
 * server's listen entries merged by address, with what each address
 * speaks (TLS, SOCKS5, HTTP/2, QUIC, a stream server's TCP or UDP, the
 * PROXY protocol) required to agree between the servers sharing it, and
 * the default server of each.
 */
#include "conf/load_int.h"

#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>
#include <netinet/in.h>

/* --- binds ------------------------------------------------------------- */

static int addr_equal(const lg_addr_t *a, const lg_addr_t *b)
{
    if (a->ss.ss_family != b->ss.ss_family)
        return 0;
    switch (a->ss.ss_family) {
    case AF_INET: {
        const struct sockaddr_in *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id
            && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    case AF_UNIX: {
        const struct sockaddr_un *x = (const void *)&a->ss, *y = (const void *)&b->ss;
        return strcmp(x->sun_path, y->sun_path) == 0;
    }
    }
    return 0;
}

/* The setting of servers[i].listens[j]: entries and slots correspond one to one. */
static const config_setting_t *listen_setting(ld_t *ld, size_t i, size_t j)
{
    const config_setting_t *list = ld->servers;
    size_t nhttp = list && config_setting_is_list(list) ? (size_t)config_setting_length(list) : 0;
    if (i >= nhttp) {           /* stream servers come after the http ones */
        list = ld->stream ? config_setting_get_member(ld->stream, "servers") : NULL;
        i -= nhttp;
    }
    const config_setting_t *g = list ? config_setting_get_elem(list, (unsigned)i) : NULL;
    const config_setting_t *l = g ? config_setting_get_member(g, "listen") : NULL;
    return l ? ld_entry_at(l, (int)j) : NULL;
}

/*
 * One lg_bind_t per distinct sockaddr (two spellings of one address are one
 * bind), in order of first appearance, listing its servers in config order.
 * The bind's backlog is the largest asked for.
 */
int ld_derive_binds(ld_t *ld, const config_setting_t *where)
{
    lg_conf_t               *conf = ld->conf;
    size_t                   total = 0;
    int                      rc = 0;
    const config_setting_t **dflt;      /* per bind: the listen that made it default */

    for (size_t i = 0; i < conf->nservers; i++)
        total += conf->servers[i].nlistens;
    if (total == 0)
        return 0;
    conf->binds = ld_calloc(ld, total, sizeof(*conf->binds));
    dflt = ld_calloc(ld, total, sizeof(*dflt));
    if (conf->binds == NULL || dflt == NULL)
        return ld_oom(ld, where);

    for (size_t i = 0; i < conf->nservers; i++) {
        lg_server_t *srv = &conf->servers[i];
        for (size_t j = 0; j < srv->nlistens; j++) {
            const lg_listen_t *l = &srv->listens[j];
            lg_bind_t         *b = NULL;
            size_t             k;

            if (l->addr.len == 0)
                continue;   /* bad address, already reported */
            for (k = 0; k < j && !(addr_equal(&srv->listens[k].addr, &l->addr) &&
                                   srv->listens[k].udp == l->udp); k++)
                ;
            if (k < j) {
                rc = ld_error(ld, listen_setting(ld, i, j), "duplicate listen address %s "
                              "in one server (also at line %d)", l->addr.text,
                              srv->listens[k].line);
                continue;
            }
            for (k = 0; k < conf->nbinds; k++)
                if (addr_equal(&conf->binds[k].addr, &l->addr) && conf->binds[k].udp == l->udp)
                    break;
            b = &conf->binds[k];
            if (k == conf->nbinds) {
                conf->nbinds++;
                b->addr = l->addr;
                b->backlog = l->backlog;
                b->tls = l->tls;
                b->socks = l->protocol && strcmp(l->protocol, "socks5") == 0;
                b->stream = srv->stream != NULL;
                b->udp = l->udp;
                b->proxy_protocol = l->proxy_protocol;
                b->http2 = l->http2;
                b->quic = l->quic;
                if ((b->servers = ld_calloc(ld, conf->nservers, sizeof(*b->servers))) == NULL)
                    return ld_oom(ld, where);
            }
            if (l->backlog > b->backlog)
                b->backlog = l->backlog;
            if (l->tls != b->tls)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is listed with tls = %s here "
                              "and tls = %s in another server", l->addr.text,
                              l->tls ? "true" : "false", b->tls ? "true" : "false");
            if (l->udp && srv->stream == NULL)
                rc = ld_error(ld, listen_setting(ld, i, j), "udp listens are for stream servers");
            else if ((srv->stream != NULL) != b->stream)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is a stream server's address and "
                              "an HTTP server's too", l->addr.text);
            else if (b->stream && b->nservers > 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is the address of two stream "
                              "servers", l->addr.text);
            else if (srv->stream && l->http2)
                rc = ld_error(ld, listen_setting(ld, i, j), "http2 on a stream listener");
            else if (srv->stream && l->protocol && strcmp(l->protocol, "stream") != 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "a stream server's listen has no "
                              "'protocol'");
            else if (srv->stream)
                ;   /* (its own checks are in load_stream.c) */
            else if (l->protocol && strcmp(l->protocol, "http") != 0 && strcmp(l->protocol, "socks5") != 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "'protocol' must be \"http\" or \"socks5\"");
            else if ((l->protocol && strcmp(l->protocol, "socks5") == 0) != b->socks)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s is socks5 in one server and not in "
                              "another", l->addr.text);
            else if (b->socks && srv->forward == NULL)
                rc = ld_error(ld, listen_setting(ld, i, j), "a socks5 listener needs the server's "
                              "'forward' settings");
            else if (b->socks && l->tls)
                rc = ld_error(ld, listen_setting(ld, i, j), "socks5 with tls is not supported");
            if (l->http2 != b->http2)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s has http2 in one server "
                              "and not in another", l->addr.text);
            else if (l->http2 && b->socks)
                rc = ld_error(ld, listen_setting(ld, i, j), "http2 on a socks5 listener");
            if (l->quic != b->quic)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s has quic in one server "
                              "and not in another", l->addr.text);
            else if (l->quic && !l->tls)
                rc = ld_error(ld, listen_setting(ld, i, j), "quic = true needs tls = true "
                              "(QUIC is always encrypted)");
            else if (l->quic && l->addr.ss.ss_family == AF_UNIX)
                rc = ld_error(ld, listen_setting(ld, i, j), "quic on a unix socket");
#ifndef LG_HAVE_HTTP3
            else if (l->quic)
                rc = ld_error(ld, listen_setting(ld, i, j), "quic = true, but this legate was "
                              "built without HTTP/3 (see legate -V; it needs libngtcp2-dev, libngtcp2-crypto-gnutls-dev, "
                              "libnghttp3-dev and libgnutls28-dev at build time)");
#endif
            if (l->proxy_protocol != b->proxy_protocol)
                rc = ld_error(ld, listen_setting(ld, i, j), "%s has proxy_protocol in one server "
                              "and not in another", l->addr.text);
            if (l->tls && srv->tls.ncerts == 0)
                rc = ld_error(ld, listen_setting(ld, i, j), "tls = true on %s but the server has "
                              "no 'tls_certificates'", l->addr.text);
            b->servers[b->nservers++] = srv;
            if (l->is_default == 1) {
                const config_setting_t *ls = listen_setting(ld, i, j);
                if (dflt[k] != NULL) {
                    rc = ld_error(ld, ls, "two default servers for %s (the other at %s:%u)",
                                  l->addr.text,
                                  ld_file_name(ld, config_setting_source_file(dflt[k])),
                                  config_setting_source_line(dflt[k]));
                } else {
                    dflt[k] = ls;
                    b->default_server = srv;
                }
            }
        }
    }
    for (size_t k = 0; k < conf->nbinds; k++)
        if (conf->binds[k].default_server == NULL)
            conf->binds[k].default_server = conf->binds[k].servers[0];
    /* QUIC takes its address's UDP port: a UDP stream server cannot have it too */
    for (size_t k = 0; k < conf->nbinds; k++)
        for (size_t u = 0; conf->binds[k].quic && u < conf->nbinds; u++)
            if (conf->binds[u].udp && addr_equal(&conf->binds[u].addr, &conf->binds[k].addr))
                rc = ld_error(ld, where, "%s is HTTP/3's UDP port (quic = true) and a UDP stream "
                              "listener at once", conf->binds[k].addr.text);
    return rc;
}

