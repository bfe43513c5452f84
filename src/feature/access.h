/*
 * Access rules and Basic authentication for the reverse proxy (access.c).
 */
#ifndef LEGATE_FEATURE_ACCESS_H
#define LEGATE_FEATURE_ACCESS_H

#include <stddef.h>

#include "pipeline/request.h"

/* Build every level's rules and read its htpasswd file, in the master (and
 * for legate -t): 0, or -1 with "FILE:LINE: message" lines appended to err. */
int lg_access_prepare(lg_conf_t *conf, char *err, size_t errlen);

extern const lg_feature_t lg_feature_access;

#endif
