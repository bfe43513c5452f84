/*
 * The HTTP/3 front end (h3.c): what a worker hands its QUIC endpoints.
 */
#ifndef LEGATE_PIPELINE_H3_H
#define LEGATE_PIPELINE_H3_H

#include "net/quic.h"

/* What a client may send on a stream before the request reads it: the
 * QUIC stream window, and the buffer a stream holds its body in. */
#define LG_H3_STREAM_WINDOW (64 * 1024)

/* The application a QUIC endpoint of a listener runs: its app_data is the
 * listener's lg_bind_t. */
const lg_quic_app_t *lg_h3_app(void);

#endif
