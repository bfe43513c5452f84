/*
 * htpasswd files (Apache's format, as `htpasswd` and `openssl passwd`
 * write them) and HTTP Basic credentials, for every part of legate that
 * asks for a password: the reverse proxy's auth_basic (feature/access.c)
 * and the forward proxy's auth_file (Proxy-Authorization, SOCKS5).
 *
 * A file is read once per configuration generation, in the master (so
 * `legate -t` and a reload see a bad line), into an lg_htpasswd_t the
 * workers share by fork.  Lines are "user:hash" (a trailing ":comment"
 * is allowed, as nginx allows it); blank lines and lines starting with
 * '#' are skipped.  Accepted hashes:
 *
 *   $2y$ $2a$ $2b$   bcrypt                 crypt_r(3) (libxcrypt)
 *   $5$ $6$          SHA-256/SHA-512-crypt  crypt_r(3)
 *   $apr1$ $1$       Apache MD5, MD5-crypt  here, with OpenSSL's MD5
 *   {SHA}            base64 of SHA-1        here, with OpenSSL's SHA-1
 *
 * Plain-text passwords and traditional DES crypt (13 characters, 8
 * significant password bytes) are refused, and so is any line that is not
 * one of the above: each is a "FILE:LINE: message" error, never skipped.
 *
 * Checking costs at most one hash.  Two bounds keep the event loop from
 * being spent on hashes (bcrypt is made to be slow, and the check runs in
 * the loop):
 *   - a success is remembered per file for 5 minutes (SHA-256 of
 *     "user\0password", 256 slots), so a client opening new connections
 *     does not pay again; callers also remember a success per connection;
 *   - failures are counted per client address in a small table per worker
 *     (lg_htpasswd_throttled): after 5 failures in a row an address waits
 *     1 s, then 2 s, 4 s ... up to 64 s between attempts, without any hash
 *     being computed; a success, or 10 minutes without a failure, clears it.
 */
#ifndef LEGATE_NET_HTPASSWD_H
#define LEGATE_NET_HTPASSWD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

typedef struct lg_htpasswd lg_htpasswd_t;

/* Read path.  NULL on any error, each appended to err (from its current
 * end, as "path:line: message\n") within errlen. */
lg_htpasswd_t *lg_htpasswd_load(const char *path, char *err, size_t errlen);
void   lg_htpasswd_free(lg_htpasswd_t *h);      /* NULL is fine */
size_t lg_htpasswd_count(const lg_htpasswd_t *h);
const char *lg_htpasswd_path(const lg_htpasswd_t *h);

/* The scheme of a hash as written in a file ("bcrypt", "sha512-crypt",
 * "apr1", "sha1"...), or NULL with why it is refused in *why. */
const char *lg_htpasswd_scheme(const char *hash, const char **why);

/* Does pass match hash?  1 yes, 0 no.  One hash computed, always. */
int lg_htpasswd_verify(const char *hash, const char *pass);

/* user/pass against the file: 1 known user with that password, else 0.
 * now: the loop's clock (ms), for the success cache. */
int lg_htpasswd_check(lg_htpasswd_t *h, const char *user, const char *pass, int64_t now);

/* Hashes computed by this process (lg_htpasswd_verify calls): for tests. */
extern uint64_t lg_htpasswd_hashes;

/* ---- failures per client address (this process) ---- */

/* 0: go ahead; else the milliseconds the address must still wait. */
int64_t lg_htpasswd_throttled(const struct sockaddr *client, int64_t now);
/* After a check: ok clears the address's count, a failure counts. */
void    lg_htpasswd_result(const struct sockaddr *client, int ok, int64_t now);
void    lg_htpasswd_throttle_reset(void);       /* tests */

/* ---- Basic credentials ---- */

/*
 * The value of an Authorization / Proxy-Authorization header: "Basic "
 * (any case) and base64 of "user:password".  Decodes into buf (size
 * bufsize) and points *user and *pass into it.  0, or -1 when it is not
 * well-formed Basic credentials (another scheme, bad base64, no colon, an
 * empty user, a NUL or control character, too long).
 */
int lg_htpasswd_basic(const char *value, size_t len, char *buf, size_t bufsize,
                      const char **user, const char **pass);

#endif
