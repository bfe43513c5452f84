/*
 * A small, strict JSON reader (RFC 8259) and base64url (RFC 4648 section 5),
 * for what legate reads in JSON: JSON Web Tokens' headers and claims and
 * JWKS key files (feature/jwt.c).  No allocation but two malloc()s per
 * document, no dependency, so the fuzz harness builds it alone.
 *
 * A document is read whole into a flat array of nodes in document order:
 * a container's members follow it, and each node knows the index just past
 * its subtree (.next), so walking is a bounded loop over indices.  Strings
 * are decoded (escapes, surrogate pairs) into one buffer, NUL-terminated.
 *
 * Strict on purpose, since a token's header decides how it is checked:
 * the input must be valid UTF-8; no NUL (raw or \u0000) in strings, no lone
 * surrogates, no control characters, no duplicate keys in an object (two
 * "alg" members must not be read one way here and another way elsewhere),
 * nothing after the value but white space; depth and node count bounded
 * by the caller.
 */
#ifndef LEGATE_NET_JSON_H
#define LEGATE_NET_JSON_H

#include <stddef.h>

typedef enum lg_json_type {
    LG_JSON_NULL = 0, LG_JSON_FALSE, LG_JSON_TRUE, LG_JSON_NUMBER, LG_JSON_STRING,
    LG_JSON_ARRAY, LG_JSON_OBJECT,
} lg_json_type_t;

typedef struct lg_json_node {
    lg_json_type_t type;
    size_t      next;       /* index just past this node's subtree */
    size_t      nkids;      /* members of an array or object */
    const char *key;        /* the member name when the parent is an object, else NULL */
    size_t      keylen;
    const char *s;          /* string: decoded; number: as written; NUL-terminated */
    size_t      n;          /* its length */
    double      num;        /* number: its value */
} lg_json_node_t;

typedef struct lg_json {
    lg_json_node_t *nodes;  /* nodes[0] is the document's value */
    size_t          n;
    char           *strs;   /* the decoded strings */
} lg_json_t;

/*
 * Read text[0..len).  0, or -1 with a message in err (may be NULL).  At most
 * max_nodes values and max_depth levels of nesting (1: no containers inside
 * the top one).  lg_json_free() after, whatever the result.
 */
int  lg_json_parse(lg_json_t *j, const char *text, size_t len, size_t max_nodes,
                   int max_depth, char *err, size_t errlen);
void lg_json_free(lg_json_t *j);

/* The member key of object node obj (an index), or NULL. */
const lg_json_node_t *lg_json_get(const lg_json_t *j, size_t obj, const char *key);

/* Base64url without padding, strictly: only the alphabet, no '=', no
 * length of 1 mod 4, unused trailing bits zero (so each value has one
 * spelling).  Writes at most outcap bytes; the length, or -1. */
long lg_b64url_decode(const char *in, size_t len, unsigned char *out, size_t outcap);
/* Encoded length for n bytes, and the encoder (for tests; out needs that + 1). */
size_t lg_b64url_len(size_t n);
void   lg_b64url_encode(const unsigned char *in, size_t n, char *out);

/*
 * A compact JWS (RFC 7515) split and decoded, without its signature checked:
 * three base64url parts separated by '.', header and payload JSON objects.
 * The caller checks the signature of tok[0..signed_len) against sig.
 * 0, or -1 with the reason in *why (a constant string).
 */
typedef struct lg_jws {
    lg_json_t      header, payload;
    size_t         signed_len;      /* "header.payload" */
    unsigned char *sig;             /* malloc'd */
    size_t         siglen;
} lg_jws_t;

#define LG_JWS_MAX_TOKEN 8192       /* longer tokens are refused unread */

int  lg_jws_decode(lg_jws_t *t, const char *tok, size_t len, const char **why);
void lg_jws_free(lg_jws_t *t);

#endif
