/*
 * Content codings (coding.c): gzip, br and zstd on the way to the client,
 * gunzip for clients without gzip, gunzip of request bodies.  A feature
 * of the pipeline (REQUEST_BODY, RESPONSE, BODY); the cache asks it too,
 * for answers it serves itself.
 */
#ifndef LEGATE_FEATURE_CODING_H
#define LEGATE_FEATURE_CODING_H

#include "pipeline/request.h"

extern const lg_feature_t lg_feature_coding;
/* gzip would apply to this response, whatever the client accepts (the cache
 * stores such answers compressed, once). */
int        lg_coding_compressible(lg_req_t *r, const http_response_t *rsp, const lg_rsp_info_t *ri);
lg_xform_t lg_coding_choose(lg_req_t *r, const http_response_t *rsp, const lg_rsp_info_t *ri);
/* Set up the response's filter for xf (NONE if it cannot). */
lg_xform_t lg_coding_start(lg_req_t *r, lg_xform_t xf, const lg_rsp_info_t *ri);
void       lg_coding_request_gunzip(lg_req_t *r);

#endif
