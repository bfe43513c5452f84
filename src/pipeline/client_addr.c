/*
 * Who the client is: the connection's address, or the one a PROXY protocol
 * header or a trusted load balancer (real_ip_from) gives, and its country.
 */
#include "proxy/proxy.h"

#include <arpa/inet.h>
#include <string.h>

#include "net/acl.h"
#include "net/geo.h"

void lg_session_set_peer(lg_session_t *s, const struct sockaddr_storage *ss)
{
    memcpy(&s->peer, ss, sizeof(*ss));
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, s->peer_text, sizeof(s->peer_text));
        s->peer_port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, s->peer_text, sizeof(s->peer_text));
        s->peer_port = ntohs(a->sin6_port);
    } else {
        strcpy(s->peer_text, "unix:");
    }
}

/*
 * real_ip_from: a trusted front end (a load balancer, a CDN) tells the
 * client's address in real_ip_header; take the rightmost address there
 * that is not itself trusted (nginx's realip with recursion).
 */
void lg_session_real_ip(lg_session_t *s)
{
    const lg_cidr_set_t *trust = s->server->real_ip_rt;
    if (s->peer_replaced) {
        /* keep-alive from a load balancer carries many clients: start over */
        lg_session_set_peer(s, &s->conn_peer);
        s->peer_replaced = 0;
        s->country_done = 0;
    }
    if (trust == NULL || lg_cidr_lookup(trust, (const struct sockaddr *)&s->peer) < 0)
        return;
    /* every line of the header, last line first: together they are one list
     * (a balancer may add its own line rather than append to the client's) */
    const char *name = s->server->real_ip_header;
    for (size_t li = s->req.num_headers; li-- > 0;) {
        const http_header_t *h = &s->req.headers[li];
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
            char ip[64];
            if (b - a > 0 && b - a < sizeof(ip)) {
                memcpy(ip, h->value + a, b - a);
                ip[b - a] = '\0';
                struct sockaddr_storage ss;
                memset(&ss, 0, sizeof(ss));
                struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
                struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
                if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
                    ss.ss_family = AF_INET;
                else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
                    ss.ss_family = AF_INET6;
                else
                    return;             /* garbage: keep what we have */
                lg_session_set_peer(s, &ss);
                s->peer_replaced = 1;
                s->country_done = 0;
                if (lg_cidr_lookup(trust, (const struct sockaddr *)&ss) < 0)
                    return;             /* the first untrusted one is the client */
            }
            end = start > 0 ? start - 1 : 0;
        }
    }
}

const char *lg_session_country(lg_session_t *s)
{
    if (!s->country_done) {
        lg_geo_country(lg_w.conf->geo, (const struct sockaddr *)&s->peer, s->country);
        s->country_done = 1;
    }
    return s->country;
}
