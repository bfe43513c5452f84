/*
 * br and zstd encoders for lg_codec (codec_brzstd.c); codec.c dispatches
 * LG_CODEC_BR_ENCODE and LG_CODEC_ZSTD_ENCODE here.  Not for other callers.
 */
#ifndef LEGATE_HTTP_CODEC_BRZSTD_H
#define LEGATE_HTTP_CODEC_BRZSTD_H

#include "http/codec.h"

/* 1 if this build has the encoder for kind. */
int     lg_codec_brzstd_available(lg_codec_kind_t kind);
int     lg_codec_brzstd_init(lg_codec_t *c, const lg_codec_params_t *p);
ssize_t lg_codec_brzstd_run(lg_codec_t *c, const char *in, size_t in_len, size_t *in_used,
                          char *out, size_t out_len, int flags);
void    lg_codec_brzstd_end(lg_codec_t *c);

#endif
