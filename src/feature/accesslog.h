/*
 * The access log (accesslog.c): a line per request in the LOG phase,
 * buffered per file and written whole; reopened on USR1.
 */
#ifndef LEGATE_FEATURE_ACCESSLOG_H
#define LEGATE_FEATURE_ACCESSLOG_H

#include "pipeline/request.h"

extern const lg_feature_t lg_feature_accesslog;
int  lg_accesslog_open_all(const lg_conf_t *conf);   /* in the worker */
void lg_accesslog_write(lg_req_t *r);
/* A line made elsewhere (a UDP session's, stream/udp.c) into the log at path. */
void lg_accesslog_line(const char *path, const char *line);
void lg_accesslog_flush(void);
void lg_accesslog_reopen(void);

#endif
