/*
 * The forward proxy (forward.c): absolute-form requests and CONNECT on a
 * server with a `forward` block -- client rules and authentication in the
 * ACCESS phase, the destination looked up and proxied in CONTENT -- and
 * the SOCKS5 front end (socks.c) whose requests go the same way.
 */
#ifndef LEGATE_FORWARD_FORWARD_H
#define LEGATE_FORWARD_FORWARD_H

#include "pipeline/request.h"

extern const lg_feature_t lg_feature_forward;
/* Build the rules' lookup structures (master and -t): 0, or -1 with err. */
int  lg_forward_prepare(lg_conf_t *conf, char *err, size_t errlen);
/* A user and password against the forward proxy's password file; on
 * success r->user is set. */
int  lg_forward_check_user(lg_req_t *r, const char *user, const char *pass);
void lg_socks_register(void);  /* the SOCKS5 front end (socks.c) */
/* A SOCKS5 UDP ASSOCIATE passed the client's checks: relay (socks.c). */
void lg_socks_udp_start(lg_req_t *r);
/* May a datagram of r's association go to ss, named name (NULL: by its
 * address) -- the port list of SOCKS5 CONNECT, the user's rules and
 * blocklists, the destination address checks?  0, or 1 with the reason in
 * why. */
int  lg_forward_udp_refusal(lg_req_t *r, const char *name, const struct sockaddr_storage *ss,
                            char *why, size_t wl);
/* The forward server's resolver in this worker (made on first use), or NULL. */
struct lg_resolver *lg_forward_resolver(lg_req_t *r);

#endif
