/*
 * Allow/deny building blocks: address sets and the built-in "private
 * address" classification (SSRF defence) in cidr.c, domain blocklists in
 * domset.c, URL regex filters in urlre.c and port lists in portset.c; each
 * file's functions carry its name (lg_cidr_*, lg_domset_*, lg_urlre_*,
 * lg_portset_*).  The reverse proxy's access rules, real_ip_from and purge
 * ACLs use the CIDR sets too.
 *
 * Everything is built once per configuration generation (in the master,
 * before fork, so workers share the pages copy-on-write) and never changed
 * afterwards.  Building allocates; matching does not allocate, lock or
 * block, and takes const pointers, so any number of lookups may run at
 * once.  (The one exception is regexec(3), which allocates internally in
 * glibc.)  Nothing here logs: errors go into the caller's buffer as
 * "FILE:LINE: message" where there is a file.
 *
 * Matching returns which rule matched, so the 403 page and the log can say
 * "blocked by blocklist /etc/x.txt (ads.example.com)".
 */
#ifndef LEGATE_NET_ACL_H
#define LEGATE_NET_ACL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* ---- CIDR sets ---- */

/*
 * Rules are "10.0.0.0/8", "2001:db8::/32" or a bare address (a /32 or
 * /128).  Bits set past the prefix are an error ("10.0.0.1/8": did you mean
 * 10.0.0.0/8?).  An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is looked up
 * as IPv4, and rules inside ::ffff:0:0/96 are stored as the IPv4 rules they
 * mean; IPv6 rules shorter than /96 (such as ::/0) do not match IPv4.
 *
 * Lookups cost one binary search per distinct prefix length present in the
 * family (at most 33 for IPv4, 129 for IPv6; real lists have a handful).
 *
 * Use: lg_cidr_add() any number of times, lg_cidr_build(), then look up.
 * Rules are numbered from 0 in the order added; a duplicate keeps the
 * first number.
 */
typedef struct lg_cidr_set lg_cidr_set_t;

lg_cidr_set_t *lg_cidr_new(void);
void lg_cidr_free(lg_cidr_set_t *s);                    /* NULL is fine */

/* Returns the rule's number, or -1 with a message in err. */
int lg_cidr_add(lg_cidr_set_t *s, const char *text, char *err, size_t errlen);

/* Rules separated by commas and/or white space; returns how many, or -1. */
int lg_cidr_add_list(lg_cidr_set_t *s, const char *list, char *err, size_t errlen);

/* Prepares the lookup tables; again after more lg_cidr_add(). 0 or -1 (memory). */
int lg_cidr_build(lg_cidr_set_t *s, char *err, size_t errlen);

/*
 * The number of the longest rule containing sa (AF_INET or AF_INET6; the
 * port is ignored), or -1.  lg_cidr_contains() is the same as a yes/no.
 * Calling either before lg_cidr_build() is a bug (LG_BUG_ON).
 */
int lg_cidr_lookup(const lg_cidr_set_t *s, const struct sockaddr *sa);
int lg_cidr_contains(const lg_cidr_set_t *s, const struct sockaddr *sa);

const char *lg_cidr_rule(const lg_cidr_set_t *s, int idx);     /* as written */
size_t      lg_cidr_count(const lg_cidr_set_t *s);             /* rules added */

/* ---- private addresses (SSRF defence) ---- */

/*
 * lg_cidr_private() names the special-purpose range sa is in, or returns
 * NULL for an ordinary public address.  The list (from the IANA special-
 * purpose registries, the ranges a forward proxy must not let clients
 * reach by default):
 *
 *   IPv4  0.0.0.0/8        "this network"
 *         10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16   "private"
 *         100.64.0.0/10    "shared address space (CGNAT)"
 *         127.0.0.0/8      "loopback"
 *         169.254.0.0/16   "link-local"
 *         192.0.0.0/24     "IETF protocol assignments"
 *         198.18.0.0/15    "benchmarking"
 *         224.0.0.0/4      "multicast"
 *         255.255.255.255  "broadcast"
 *         240.0.0.0/4      "reserved"
 *   IPv6  ::               "unspecified"
 *         ::1              "loopback"
 *         ::/96 (other)    "IPv4-compatible (deprecated)"
 *         100::/64         "discard-only"
 *         64:ff9b:1::/48   "local-use NAT64"
 *         fc00::/7         "unique local"
 *         fe80::/10        "link-local"
 *         fec0::/10        "site-local (deprecated)"
 *         ff00::/8         "multicast"
 *   with LG_CIDR_PRIV_DOC also the documentation ranges 192.0.2.0/24,
 *   198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 and 3fff::/20
 *   ("documentation"); they are not routed, but a lab network may use them.
 *
 * Addresses that carry an IPv4 address are judged by it: IPv4-mapped
 * ::ffff:0:0/96, NAT64 64:ff9b::/96 and 6to4 2002::/16 (so
 * 64:ff9b::7f00:1 is "loopback").  Families other than AF_INET and
 * AF_INET6 are "not an IP address": refuse them too.
 */
#define LG_CIDR_PRIV_DOC 0x1u

const char *lg_cidr_private(const struct sockaddr *sa, unsigned flags);

/* ---- domain sets (blocklists) ---- */

/*
 * A listed name matches itself and every name under it: "ads.example.com"
 * matches "x.ads.example.com" but not "notads.example.com" or
 * "example.com".  "*.ads.example.com" and ".ads.example.com" mean the same
 * as "ads.example.com".  Case and a trailing dot do not matter.
 *
 * Valid names: letters, digits, '-' and '_', labels of 1..63, at most 253
 * characters.  Anything else in a file is counted and skipped, not an error.
 *
 * Storage: one open-addressing table of 8-byte slots (kept at most 3/4
 * full, so 8-21 bytes per name) and the names packed in one buffer (the
 * name + 4 bytes each): about 45 bytes per name, 9 MiB for 200,000.  A lookup walks the name once from the
 * right, keeping a hash of the suffix read so far, and probes the table at
 * each label boundary: time proportional to the name's length, no
 * allocation.  When several rules match, the longest one is reported.
 */
typedef struct lg_domset lg_domset_t;

typedef enum lg_domset_format {
    LG_DOMSET_AUTO  = 0,        /* per line: "ADDR NAME..." is hosts, "NAME" plain */
    LG_DOMSET_PLAIN = 1,        /* one name per line */
    LG_DOMSET_HOSTS = 2,        /* hosts(5): "0.0.0.0 ads.example.com", "127.0.0.1 a b c" */
} lg_domset_format_t;

/*
 * In every format '#' starts a comment, blank lines are skipped, CRLF is
 * fine.  In hosts lines the address is ignored and the standard local names
 * (localhost, localhost.localdomain, local, broadcasthost, 0.0.0.0 and the
 * ip6-* names) are skipped: they are not blocklist entries.
 */
typedef struct lg_domset_stats {
    size_t lines;               /* lines read */
    size_t added;               /* new names */
    size_t duplicates;          /* names already in the set */
    size_t skipped;             /* local names of hosts lines */
    size_t invalid;             /* names or lines that were not valid */
    size_t first_bad_line;      /* 0: none */
} lg_domset_stats_t;

typedef struct lg_domset_hit {
    const char *rule;           /* the listed name, normalized (no "*.", lower case) */
    const char *source;         /* the file (or source name) it came from */
} lg_domset_hit_t;

lg_domset_t *lg_domset_new(void);
void lg_domset_free(lg_domset_t *s);                    /* NULL is fine */

/*
 * Adds one name.  Returns 1 if added, 0 if already present, -1 if invalid,
 * -2 when out of memory.  source is copied (consecutive calls with the same
 * source share one copy); at most 65535 distinct sources.
 */
int lg_domset_add(lg_domset_t *s, const char *name, size_t len, const char *source);

/*
 * Loads a file, or a buffer named source.  Returns 0, or -1 on an error
 * (unreadable file, out of memory), with the message in err.  Invalid lines
 * are not errors: they are counted in st (may be NULL), and err then holds
 * "FILE:LINE: invalid name "x" (N invalid entries skipped)" for the first
 * one; with none, err is "".
 */
int lg_domset_load(lg_domset_t *s, const char *path, lg_domset_format_t fmt,
                   lg_domset_stats_t *st, char *err, size_t errlen);
int lg_domset_load_mem(lg_domset_t *s, const char *buf, size_t len, const char *source,
                       lg_domset_format_t fmt, lg_domset_stats_t *st, char *err, size_t errlen);

/* 1 and *hit filled (hit may be NULL) if name or a parent of it is listed, else 0. */
int lg_domset_match(const lg_domset_t *s, const char *name, size_t len, lg_domset_hit_t *hit);

size_t lg_domset_count(const lg_domset_t *s);
size_t lg_domset_memory(const lg_domset_t *s);          /* bytes held */

/* ---- URL regex filters ---- */

/*
 * POSIX extended regular expressions, case-insensitive, unanchored unless
 * the pattern says ^ or $.  Patterns are tried in order; each costs a
 * regexec(), so keep lists to hundreds, not thousands (use a domain set
 * for those).
 */
typedef struct lg_urlre lg_urlre_t;

lg_urlre_t *lg_urlre_new(void);
void lg_urlre_free(lg_urlre_t *s);                      /* NULL is fine */

/* Returns the pattern's index, or -1 with regerror()'s message in err. */
int lg_urlre_add(lg_urlre_t *s, const char *pattern, char *err, size_t errlen);

/*
 * One pattern per line, surrounding white space trimmed; lines whose first
 * non-blank character is '#', and blank lines, are skipped.  A pattern that
 * does not compile IS an error (a filter that silently does nothing is
 * worse than a refused config): -1 with "FILE:LINE: message".  Returns the
 * number of patterns added.
 */
int lg_urlre_load(lg_urlre_t *s, const char *path, char *err, size_t errlen);

/* The index of the first pattern matching url[0..len) (no NUL needed), or -1. */
int lg_urlre_match(const lg_urlre_t *s, const char *url, size_t len);

const char *lg_urlre_pattern(const lg_urlre_t *s, int idx);
size_t      lg_urlre_count(const lg_urlre_t *s);

/* ---- port lists ---- */

/* A bitmap of the 65536 ports (8 KiB), embeddable in a config struct. */
typedef struct lg_portset {
    uint64_t bits[65536 / 64];
} lg_portset_t;

void lg_portset_clear(lg_portset_t *p);

/*
 * Adds "443, 8443, 1000-2000" (commas and/or white space between items,
 * 1..65535, ranges low-high) to p.  0, or -1 with a message in err (and p
 * unchanged).
 */
int lg_portset_parse(lg_portset_t *p, const char *text, char *err, size_t errlen);

static inline int lg_portset_has(const lg_portset_t *p, unsigned port)
{
    return port < 65536 && (p->bits[port >> 6] >> (port & 63) & 1);
}

#endif
