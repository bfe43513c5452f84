/*
 * Subrequest authorisation (auth_request.c), nginx's auth_request: an
 * authentication service asked before a request goes on.
 */
#ifndef LEGATE_FEATURE_AUTH_REQUEST_H
#define LEGATE_FEATURE_AUTH_REQUEST_H

#include "pipeline/request.h"

extern const lg_feature_t lg_feature_auth_request;
/* Resolve every level's auth_request upstream (master and -t): 0, or -1
 * with FILE:LINE messages appended to err. */
int lg_auth_request_prepare(lg_conf_t *conf, char *err, size_t errlen);

#endif
