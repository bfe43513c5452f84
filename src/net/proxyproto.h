/*
 * The PROXY protocol (HAProxy's, v1 text and v2 binary): the client's
 * address as an L4 balancer in front of legate saw it, sent before
 * anything else on the connection.  Read with MSG_PEEK first so that not
 * one byte past the header is taken from the socket (TLS reads the rest
 * straight from it).
 */
#ifndef LEGATE_NET_PROXYPROTO_H
#define LEGATE_NET_PROXYPROTO_H

#include <stddef.h>
#include <sys/socket.h>

#include "core/rc.h"

/* LG_OK: header read, *src set (unchanged for LOCAL / UNKNOWN); LG_AGAIN:
 * not all here yet (wait for readable); LG_ERROR: not a valid header (why
 * says). */
int lg_proxyproto_read(int fd, struct sockaddr_storage *src, char *why, size_t whylen);

#endif
