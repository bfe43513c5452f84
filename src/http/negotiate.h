/*
 * Accept-Encoding negotiation (RFC 9110 section 12.5.3).
 *
 * A field value is a list of `coding [OWS ";" OWS "q=" qvalue]`.  Codings
 * are compared case-insensitively.  "x-gzip" is read as "gzip" (RFC 9110
 * 8.4.1.3: a recipient SHOULD treat them as equivalent), though legate
 * always answers "Content-Encoding: gzip".  "deflate", "compress" and
 * unknown codings are parsed, then ignored: legate produces none of them.
 * The rules:
 *
 *  - No Accept-Encoding field at all: every coding is acceptable
 *    (lg_negotiate_ok() and lg_negotiate_gzip() say yes), but legate chooses
 *    identity, as every deployed server does: a client that did not ask is
 *    rarely ready to decode.
 *  - An empty field value: only identity is acceptable.
 *  - A listed coding with q=0 is not acceptable; a coding that is not listed
 *    takes the q of "*" if "*" is listed, else it is not acceptable.
 *  - identity is acceptable unless excluded by "identity;q=0", or by "*;q=0"
 *    with no identity element.  When it is acceptable without being listed
 *    it ranks below every listed coding with q > 0 (RFC 9110 gives it no
 *    weight; ranking it first would never compress "gzip;q=0.5").
 *  - An element whose q is not a valid qvalue ("q=1.001", "q=.5", "q=0.0001",
 *    "q = 1"), or which has any other parameter or a coding outside tchar, is
 *    dropped as if absent.  Empty list elements (",,") are allowed.
 *  - A coding listed twice keeps its lowest q: refused anywhere is refused.
 *  - Ties go to the coding that compresses best: zstd, then br, then gzip,
 *    then identity.
 *
 * Nothing here allocates; value need not be NUL-terminated and is only read
 * within [value, value + len).
 */
#ifndef LEGATE_HTTP_NEGOTIATE_H
#define LEGATE_HTTP_NEGOTIATE_H

#include <stddef.h>
#include <stdint.h>

typedef enum lg_enc {
    LG_ENC_NONE     = -1,       /* nothing acceptable, not even identity */
    LG_ENC_IDENTITY = 0,        /* no content coding */
    LG_ENC_GZIP     = 1,        /* gzip (and x-gzip) */
    LG_ENC_BR       = 2,        /* brotli, RFC 7932 */
    LG_ENC_ZSTD     = 3,        /* zstandard, RFC 8878 */
} lg_enc_t;

#define LG_ENC_COUNT 4          /* identity .. zstd */

/* Bit masks of codings for the `available` / `codings` arguments. */
#define LG_ENC_BIT(e)   (1u << (unsigned)(e))
#define LG_ENC_KNOWN    (LG_ENC_BIT(LG_ENC_GZIP) | LG_ENC_BIT(LG_ENC_BR) | \
                         LG_ENC_BIT(LG_ENC_ZSTD))

/* What this build can produce: gzip always, br and zstd when compiled in. */
#if defined(LG_HAVE_BROTLI) && defined(LG_HAVE_ZSTD)
#define LG_ENC_BUILTIN  LG_ENC_KNOWN
#elif defined(LG_HAVE_BROTLI)
#define LG_ENC_BUILTIN  (LG_ENC_BIT(LG_ENC_GZIP) | LG_ENC_BIT(LG_ENC_BR))
#elif defined(LG_HAVE_ZSTD)
#define LG_ENC_BUILTIN  (LG_ENC_BIT(LG_ENC_GZIP) | LG_ENC_BIT(LG_ENC_ZSTD))
#else
#define LG_ENC_BUILTIN  LG_ENC_BIT(LG_ENC_GZIP)
#endif

/* Room for the longest normalised value, "zstd,br,gzip", and its NUL. */
#define LG_ACCEPT_NORM_SIZE 16

/* The parsed field: q-values in thousandths (0..1000), -1 = not listed. */
typedef struct lg_accept {
    int     present;            /* at least one field line was added */
    int16_t q[LG_ENC_COUNT];    /* indexed by lg_enc_t */
    int16_t star;               /* q of "*" */
} lg_accept_t;

/*
 * A request may carry several Accept-Encoding lines: init once, add each
 * line's value (the list is their concatenation), then pick.  Without any
 * add() the header counts as absent.
 */
void     lg_negotiate_init(lg_accept_t *ae);
void     lg_negotiate_add(lg_accept_t *ae, const char *value, size_t len);

/* Is coding e acceptable to the client?  (LG_ENC_NONE: never.) */
int      lg_negotiate_ok(const lg_accept_t *ae, lg_enc_t e);

/*
 * The coding to send: the one the client prefers among those in `available`
 * (LG_ENC_BIT() mask; pass LG_ENC_BUILTIN, or less where compression is off),
 * else LG_ENC_IDENTITY, else LG_ENC_NONE when the client refuses identity as
 * well.  On LG_ENC_NONE send the response uncompressed all the same, as
 * nginx does; a 415/406 helps nobody.
 */
lg_enc_t lg_negotiate_pick(const lg_accept_t *ae, unsigned available);

/*
 * The normalised Accept-Encoding used in cache keys (RFC 9111 4.1, Vary):
 * the codings of `codings` (mask) that could ever be chosen, most preferred
 * first and ties in the order zstd, br, gzip, comma-separated with no spaces:
 * "gzip", "br,gzip", "zstd,br,gzip", or "" when identity would be sent.
 * Two values with the same normalised form get the same lg_negotiate_pick() for
 * every `available` within `codings`: the first listed coding that is
 * available, else identity (or LG_ENC_NONE, which also sends identity), so
 * one cached variant serves both.  Writes a NUL-terminated string into out
 * (truncated if out_len < LG_ACCEPT_NORM_SIZE) and returns its untruncated
 * length.
 */
size_t   lg_negotiate_normalise(const lg_accept_t *ae, unsigned codings, char *out,
                             size_t out_len);

/* One-shot forms over a single field value; value NULL = no header. */
lg_enc_t lg_negotiate_choose(const char *value, size_t len, unsigned available);

/*
 * Whether a gzip-coded response may be passed as is (otherwise gunzip it).
 * Per RFC 9110 an absent header (NULL) accepts gzip; nginx's gunzip module
 * instead decompresses for clients that sent no Accept-Encoding, so a caller
 * wanting that test `value != NULL && lg_negotiate_gzip(value, len)`.
 */
int      lg_negotiate_gzip(const char *value, size_t len);

/* "identity", "gzip", "br", "zstd" or "none": for logs and the
 * Content-Encoding field (never emit it for identity). */
const char *lg_enc_name(lg_enc_t e);

#endif
