/*
 * A TLS ClientHello reader: the server name (SNI) and the ALPN list a
 * client offers, read from the bytes it sent before any key is used, so a
 * connection can be routed without being decrypted (nginx's ssl_preread).
 * Used by stream servers (stream/stream.c) and usable by anything else
 * that holds a client's first bytes (a CONNECT tunnel's SNI rules).
 *
 * The contract is picohttpparser's: no allocation, no state between calls.
 * Give it every byte read so far, from the first; it says whether more are
 * needed.  The handshake message may be split over several TLS records and
 * the records over any number of reads.  What it returns points into the
 * caller's bytes only through `out` (copied: out is self-contained).
 */
#ifndef LEGATE_NET_CLIENTHELLO_H
#define LEGATE_NET_CLIENTHELLO_H

#include <stddef.h>
#include <stdint.h>

/* The largest ClientHello handshake message read (bytes after its 4-byte
 * header).  Real ones are 200 bytes to 2 KiB (a post-quantum key share);
 * a larger one is refused as malformed rather than buffered. */
#define LG_CLIENTHELLO_MAX 16384

typedef enum lg_ch_rc {
    LG_CH_MORE      = 0,        /* a valid beginning: read more */
    LG_CH_OK        = 1,        /* complete and valid: out is filled */
    LG_CH_NOT_TLS   = 2,        /* the first bytes are not a TLS handshake record */
    LG_CH_MALFORMED = 3,        /* a TLS record, but not a well-formed ClientHello */
} lg_ch_rc_t;

typedef struct lg_clienthello {
    uint16_t      version;      /* legacy_version of the hello (0x0303 for TLS 1.2 and 1.3) */
    int           has_sni;      /* a host_name was offered */
    char          sni[256];     /* lower case, NUL-ended, without a trailing dot */
    size_t        sni_len;
    int           has_alpn;     /* the ALPN extension was sent */
    unsigned char alpn[512];    /* its protocol list as sent: length byte, name, ... */
    size_t        alpn_len;
    size_t        consumed;     /* bytes from the first up to the hello's last one */
} lg_clienthello_t;

lg_ch_rc_t lg_clienthello_parse(const unsigned char *p, size_t n, lg_clienthello_t *out);

/* The ALPN protocols one by one: start with *pos = 0; 1 and (name, len)
 * for each, 0 after the last. */
int lg_clienthello_alpn_next(const lg_clienthello_t *ch, size_t *pos, const char **name,
                             size_t *len);

/* ch offers ALPN protocol name (exactly), 1 or 0. */
int lg_clienthello_has_alpn(const lg_clienthello_t *ch, const char *name);

const char *lg_clienthello_rc_name(lg_ch_rc_t rc);

#endif
