/*
 * JSON Web Token validation in the ACCESS phase (jwt.c), nginx Plus's auth_jwt.
 */
#ifndef LEGATE_FEATURE_JWT_H
#define LEGATE_FEATURE_JWT_H

#include <stddef.h>

#include "pipeline/request.h"

/* Read every level's key file, in the master (and for legate -t): 0, or -1
 * with "FILE:LINE: message" lines appended to err. */
int lg_jwt_prepare(lg_conf_t *conf, char *err, size_t errlen);

extern const lg_feature_t lg_feature_jwt;

#endif
