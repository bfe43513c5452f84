/*
 * Who the client of a request is: the connection's address (after any
 * PROXY header), or the one a trusted load balancer gives (real_ip_from),
 * and its country.  real_ip runs in the POST_READ phase, so every later
 * phase -- rules, routes by country, limits, logs -- sees the same address.
 */
#include "pipeline/request.h"

#include <arpa/inet.h>
#include <string.h>

#include "net/acl.h"
#include "net/geo.h"

static void set_peer(lg_req_t *r, const struct sockaddr_storage *ss)
{
    memcpy(&r->peer, ss, sizeof(*ss));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, r->peer_text, sizeof(r->peer_text));
        r->peer_port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, r->peer_text, sizeof(r->peer_text));
        r->peer_port = ntohs(a->sin6_port);
    }
    r->country_done = 0;
}

int lg_req_set_client(lg_req_t *r, const char *ip, size_t n)
{
    char text[64];
    if (ip == NULL || n == 0 || n >= sizeof(text))
        return -1;
    memcpy(text, ip, n);
    text[n] = '\0';
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, text, &v4->sin_addr) == 1)
        ss.ss_family = AF_INET;
    else if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1)
        ss.ss_family = AF_INET6;
    else
        return -1;
    set_peer(r, &ss);
    return 0;
}

/*
 * real_ip_from: a trusted front end (a load balancer, a CDN) tells the
 * client's address in real_ip_header; take the rightmost address there
 * that is not itself trusted (nginx's realip with recursion).  Each
 * request starts from the connection's address: keep-alive from a load
 * balancer carries many clients.
 */
static int real_ip(lg_req_t *r)
{
    const lg_cidr_set_t *trust = r->server->real_ip_rt;
    if (trust == NULL || lg_cidr_lookup(trust, (const struct sockaddr *)&r->peer) < 0)
        return LG_DECLINED;
    /* every line of the header, last line first: together they are one list
     * (a balancer may add its own line rather than append to the client's) */
    const char *name = r->server->real_ip_header;
    for (size_t li = r->req.num_headers; li-- > 0;) {
        const http_header_t *h = &r->req.headers[li];
        if (!http_name_eq(h, name))
            continue;
        size_t end = h->value_len;
        while (end > 0) {
            size_t start = end;
            while (start > 0 && h->value[start - 1] != ',')
                start--;
            size_t a = start, b = end;
            while (a < b && (h->value[a] == ' ' || h->value[a] == '\t'))
                a++;
            while (b > a && (h->value[b - 1] == ' ' || h->value[b - 1] == '\t'))
                b--;
            if (b - a > 0 && b - a < 64) {     /* longer: not an address, skipped */
                if (lg_req_set_client(r, h->value + a, b - a) < 0)
                    return LG_DECLINED;     /* garbage: keep what we have */
                if (lg_cidr_lookup(trust, (const struct sockaddr *)&r->peer) < 0)
                    return LG_DECLINED;     /* the first untrusted one is the client */
            }
            end = start > 0 ? start - 1 : 0;
        }
    }
    return LG_DECLINED;
}

const char *lg_realip_country(lg_req_t *r)
{
    if (!r->country_done) {
        lg_geo_country(lg_w.conf->geo, (const struct sockaddr *)&r->peer, r->country);
        r->country_done = 1;
    }
    return r->country;
}

const lg_feature_t lg_feature_realip = {
    .name = "real_ip",
    .handlers = { { LG_PH_POST_READ, real_ip } },
};
