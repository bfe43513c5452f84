/*
 * htpasswd files and Basic credentials (see htpasswd.h).
 *
 * bcrypt and SHA-crypt go to crypt_r(3); Apache's MD5 ($apr1$, and the
 * MD5-crypt $1$ it is a variant of) is done here because libxcrypt may be
 * built without it and never knows $apr1$; {SHA} is one SHA-1.  Every
 * comparison of a computed hash is constant-time (CRYPTO_memcmp).
 */
#include "net/htpasswd.h"

#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/hash.h"

#define LINE_MAX_LEN 4096       /* longer is not an htpasswd line */
#define OK_SLOTS 256
#define OK_MS (5 * 60 * 1000)

typedef struct htp_user {
    char *name;
    char *hash;
    int   line;
} htp_user_t;

typedef struct htp_ok {
    unsigned char key[32];      /* SHA-256 of "user\0password" */
    int64_t       until;
} htp_ok_t;

struct lg_htpasswd {
    char       *path;
    htp_user_t *users;          /* file order */
    size_t      n;
    htp_ok_t    ok[OK_SLOTS];   /* per worker once forked (copy on write) */
};

uint64_t lg_htpasswd_hashes;

#define ERR(...) do { size_t u_ = strlen(err); \
        if (u_ < errlen) snprintf(err + u_, errlen - u_, __VA_ARGS__); } while (0)

/* ---- hash shapes ---- */

static int is_crypt64(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '/';
}

static size_t span64(const char *s)
{
    size_t n = 0;
    while (is_crypt64((unsigned char)s[n]))
        n++;
    return n;
}

/* What one password check may cost at most (it runs in the event loop). */
#define MAX_BCRYPT_COST 15
#define MAX_SHA_ROUNDS  1000000

/* "$5$[rounds=N$]salt$hash" with hash of hlen characters, N at most MAX_SHA_ROUNDS. */
static int sha_crypt_shape(const char *h, size_t hlen)
{
    const char *p = h + 3;
    if (strncmp(p, "rounds=", 7) == 0) {
        p += 7;
        size_t d = strspn(p, "0123456789");
        if (d == 0 || d > 10 || p[d] != '$')
            return 0;
        if (strtoll(p, NULL, 10) > MAX_SHA_ROUNDS)
            return 0;           /* glibc allows 999,999,999: minutes a check */
        p += d + 1;
    }
    size_t s = strcspn(p, "$");
    if (s == 0 || s > 16 || p[s] != '$')
        return 0;
    p += s + 1;
    return span64(p) == hlen && p[hlen] == '\0';
}

/* "$apr1$salt$hash" / "$1$salt$hash": salt 1..8, hash 22 characters. */
static int md5_crypt_shape(const char *h, size_t magic)
{
    const char *p = h + magic;
    size_t s = strcspn(p, "$");
    if (s == 0 || s > 8 || p[s] != '$')
        return 0;
    p += s + 1;
    return span64(p) == 22 && p[22] == '\0';
}

static int b64_char(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

const char *lg_htpasswd_scheme(const char *h, const char **why)
{
    const char *dummy;
    if (why == NULL)
        why = &dummy;
    *why = NULL;
    size_t n = strlen(h);
    if (n == 0) {
        *why = "the password hash is empty";
        return NULL;
    }
    if (h[0] == '$' && h[1] == '2' && (h[2] == 'a' || h[2] == 'b' || h[2] == 'y') && h[3] == '$') {
        /* $2y$NN$ + 22 salt + 31 hash characters */
        int cost = (h[4] - '0') * 10 + (h[5] - '0');
        if (n == 60 && h[4] >= '0' && h[4] <= '3' && h[5] >= '0' && h[5] <= '9' && h[6] == '$' &&
            cost >= 4 && cost <= 31 && span64(h + 7) == 53) {
            /* one check must not hold the event loop for seconds: cost 16
             * is about 5 s here, htpasswd -B writes 5 unless told */
            if (cost > MAX_BCRYPT_COST) {
                *why = "bcrypt cost above 15: each check would stall a worker (rehash with a lower -C)";
                return NULL;
            }
            return "bcrypt";
        }
        *why = "malformed bcrypt hash (expected $2y$NN$ and 53 characters)";
        return NULL;
    }
    if (strncmp(h, "$5$", 3) == 0 || strncmp(h, "$6$", 3) == 0) {
        int five = h[1] == '5';
        if (sha_crypt_shape(h, five ? 43 : 86))
            return five ? "sha256-crypt" : "sha512-crypt";
        *why = five ? "malformed SHA-256-crypt hash" : "malformed SHA-512-crypt hash";
        return NULL;
    }
    if (strncmp(h, "$apr1$", 6) == 0) {
        if (md5_crypt_shape(h, 6))
            return "apr1";
        *why = "malformed Apache MD5 ($apr1$) hash";
        return NULL;
    }
    if (strncmp(h, "$1$", 3) == 0) {
        if (md5_crypt_shape(h, 3))
            return "md5-crypt";
        *why = "malformed MD5-crypt ($1$) hash";
        return NULL;
    }
    if (strncmp(h, "{SHA}", 5) == 0) {
        const char *b = h + 5;
        if (strlen(b) == 28 && b[27] == '=' && b[26] != '=') {
            int ok = 1;
            for (int i = 0; i < 27; i++)
                ok &= b64_char((unsigned char)b[i]);
            if (ok)
                return "sha1";
        }
        *why = "malformed {SHA} hash (expected 28 characters of base64)";
        return NULL;
    }
    if (h[0] == '$') {
        *why = "unsupported hash scheme (bcrypt, $5$, $6$, $apr1$, $1$ and {SHA} are)";
        return NULL;
    }
    if (n == 13 && span64(h) == 13) {
        *why = "traditional DES crypt is refused (it uses 8 bytes of the password): "
               "make the entry again with htpasswd -B";
        return NULL;
    }
    *why = "a plain-text password is refused: make the entry again with htpasswd -B";
    return NULL;
}

/* ---- Apache MD5 / MD5-crypt ---- */

static const char itoa64[] = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

static char *to64(char *out, unsigned v, int n)
{
    while (n-- > 0) {
        *out++ = itoa64[v & 0x3f];
        v >>= 6;
    }
    return out;
}

/*
 * The MD5-crypt construction (Poul-Henning Kamp's, which Apache keeps
 * with its own magic "$apr1$"): MD5 of password, magic and salt mixed
 * with an MD5 of password+salt+password, then 1000 rounds mixing password,
 * salt and the previous digest, written in crypt's base64 order.
 * out gets magic + salt + '$' + 22 characters; 0, or -1 (OpenSSL failed).
 */
static int md5_crypt(const char *pw, const char *magic, const char *setting, char out[64])
{
    size_t ml = strlen(magic), pl = strlen(pw);
    const char *salt = setting + ml;
    size_t sl = strcspn(salt, "$");
    if (sl > 8)
        sl = 8;
    unsigned char fin[16], alt[16];
    unsigned int dl;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    int ok = c != NULL;
    ok = ok && EVP_DigestInit_ex(c, EVP_md5(), NULL) && EVP_DigestUpdate(c, pw, pl) &&
         EVP_DigestUpdate(c, salt, sl) && EVP_DigestUpdate(c, pw, pl) &&
         EVP_DigestFinal_ex(c, alt, &dl);
    ok = ok && EVP_DigestInit_ex(c, EVP_md5(), NULL) && EVP_DigestUpdate(c, pw, pl) &&
         EVP_DigestUpdate(c, magic, ml) && EVP_DigestUpdate(c, salt, sl);
    for (size_t left = pl; ok && left > 0; left -= left > 16 ? 16 : left)
        ok = EVP_DigestUpdate(c, alt, left > 16 ? 16 : left);
    /* one byte per bit of the length: a zero byte for a set bit, else the
     * password's first byte (the historical "bug" every implementation keeps) */
    for (size_t i = pl; ok && i; i >>= 1)
        ok = EVP_DigestUpdate(c, (i & 1) ? "" : pw, 1);
    ok = ok && EVP_DigestFinal_ex(c, fin, &dl);
    for (int i = 0; ok && i < 1000; i++) {
        ok = EVP_DigestInit_ex(c, EVP_md5(), NULL) &&
             ((i & 1) ? EVP_DigestUpdate(c, pw, pl) : EVP_DigestUpdate(c, fin, 16)) &&
             (i % 3 == 0 || EVP_DigestUpdate(c, salt, sl)) &&
             (i % 7 == 0 || EVP_DigestUpdate(c, pw, pl)) &&
             ((i & 1) ? EVP_DigestUpdate(c, fin, 16) : EVP_DigestUpdate(c, pw, pl)) &&
             EVP_DigestFinal_ex(c, fin, &dl);
    }
    EVP_MD_CTX_free(c);
    if (!ok)
        return -1;
    char *p = out;
    memcpy(p, magic, ml);
    p += ml;
    memcpy(p, salt, sl);
    p += sl;
    *p++ = '$';
    static const int order[5][3] = { { 0, 6, 12 }, { 1, 7, 13 }, { 2, 8, 14 }, { 3, 9, 15 },
                                     { 4, 10, 5 } };
    for (int i = 0; i < 5; i++)
        p = to64(p, (unsigned)fin[order[i][0]] << 16 | (unsigned)fin[order[i][1]] << 8 |
                    fin[order[i][2]], 4);
    p = to64(p, fin[11], 2);
    *p = '\0';
    OPENSSL_cleanse(fin, sizeof(fin));
    OPENSSL_cleanse(alt, sizeof(alt));
    return 0;
}

static int sha1_b64(const char *pw, char out[32])
{
    unsigned char d[20];
    unsigned int dl = 0;
    if (EVP_Digest(pw, strlen(pw), d, &dl, EVP_sha1(), NULL) != 1 || dl != 20)
        return -1;
    EVP_EncodeBlock((unsigned char *)out, d, 20);   /* 28 characters and a NUL */
    return 0;
}

int lg_htpasswd_verify(const char *hash, const char *pass)
{
    const char *scheme = lg_htpasswd_scheme(hash, NULL);
    if (scheme == NULL)
        return 0;
    lg_htpasswd_hashes++;
    size_t hl = strlen(hash);
    if (strcmp(scheme, "sha1") == 0) {
        char b[32];
        return sha1_b64(pass, b) == 0 && CRYPTO_memcmp(b, hash + 5, 28) == 0;
    }
    if (strcmp(scheme, "apr1") == 0 || strcmp(scheme, "md5-crypt") == 0) {
        char b[64];
        return md5_crypt(pass, scheme[0] == 'a' ? "$apr1$" : "$1$", hash, b) == 0 &&
               strlen(b) == hl && CRYPTO_memcmp(b, hash, hl) == 0;
    }
    struct crypt_data *cd = calloc(1, sizeof(*cd));     /* 32 KiB with libxcrypt */
    if (cd == NULL)
        return 0;
    const char *c = crypt_r(pass, hash, cd);
    int ok = c && c[0] != '*' && strlen(c) == hl && CRYPTO_memcmp(c, hash, hl) == 0;
    OPENSSL_cleanse(cd, sizeof(*cd));
    free(cd);
    return ok;
}

/* ---- files ---- */

void lg_htpasswd_free(lg_htpasswd_t *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->n; i++) {
        free(h->users[i].name);
        free(h->users[i].hash);
    }
    free(h->users);
    free(h->path);
    free(h);
}

size_t lg_htpasswd_count(const lg_htpasswd_t *h)
{
    return h ? h->n : 0;
}

const char *lg_htpasswd_path(const lg_htpasswd_t *h)
{
    return h ? h->path : NULL;
}

static const htp_user_t *find_user(const lg_htpasswd_t *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->users[i].name, name) == 0)
            return &h->users[i];
    return NULL;
}

lg_htpasswd_t *lg_htpasswd_load(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        ERR("%s: cannot read: %s\n", path, strerror(errno));
        return NULL;
    }
    lg_htpasswd_t *h = calloc(1, sizeof(*h));
    if (h == NULL || (h->path = strdup(path)) == NULL) {
        fclose(f);
        free(h);
        ERR("%s: out of memory\n", path);
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0, ucap = 0;
    ssize_t len;
    int lineno = 0, bad = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        if ((size_t)len > LINE_MAX_LEN || strlen(line) != (size_t)len) {
            ERR("%s:%d: not an htpasswd line (too long, or a NUL byte)\n", path, lineno);
            bad = 1;
            continue;
        }
        char *colon = strchr(line, ':');
        if (colon == NULL) {
            ERR("%s:%d: expected user:hash\n", path, lineno);
            bad = 1;
            continue;
        }
        if (colon == line) {
            ERR("%s:%d: the user name is empty\n", path, lineno);
            bad = 1;
            continue;
        }
        *colon = '\0';
        char *hash = colon + 1, *end = strchr(hash, ':');
        if (end)
            *end = '\0';        /* user:hash:comment */
        int ctl = 0;
        for (const char *p = line; *p; p++)
            ctl |= (unsigned char)*p < 0x20 || *p == 0x7f;
        const char *why = NULL;
        if (ctl) {
            ERR("%s:%d: the user name has a control character\n", path, lineno);
            bad = 1;
            continue;
        }
        if (lg_htpasswd_scheme(hash, &why) == NULL) {
            ERR("%s:%d: user \"%s\": %s\n", path, lineno, line, why);
            bad = 1;
            continue;
        }
        const htp_user_t *dup = find_user(h, line);
        if (dup) {
            ERR("%s:%d: user \"%s\" is already defined at line %d\n", path, lineno, line,
                dup->line);
            bad = 1;
            continue;
        }
        if (h->n == ucap) {
            size_t nc = ucap ? ucap * 2 : 16;
            htp_user_t *u = realloc(h->users, nc * sizeof(*u));
            if (u == NULL) {
                ERR("%s: out of memory\n", path);
                bad = 1;
                break;
            }
            h->users = u;
            ucap = nc;
        }
        htp_user_t *u = &h->users[h->n];
        u->name = strdup(line);
        u->hash = strdup(hash);
        u->line = lineno;
        if (u->name == NULL || u->hash == NULL) {
            free(u->name);
            free(u->hash);
            ERR("%s: out of memory\n", path);
            bad = 1;
            break;
        }
        h->n++;
    }
    int rerr = ferror(f);
    free(line);
    fclose(f);
    if (rerr) {
        ERR("%s: read error\n", path);
        bad = 1;
    }
    if (bad) {
        lg_htpasswd_free(h);
        return NULL;
    }
    return h;
}

int lg_htpasswd_check(lg_htpasswd_t *h, const char *user, const char *pass, int64_t now)
{
    if (h == NULL || user == NULL || pass == NULL)
        return 0;
    unsigned char key[32];
    unsigned int kl = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, user, strlen(user) + 1) == 1 &&
             EVP_DigestUpdate(md, pass, strlen(pass)) == 1 && EVP_DigestFinal_ex(md, key, &kl) == 1;
    EVP_MD_CTX_free(md);
    if (!ok)
        return 0;
    htp_ok_t *slot = &h->ok[(key[0] | key[1] << 8) % OK_SLOTS];
    if (slot->until > now && CRYPTO_memcmp(slot->key, key, 32) == 0)
        return 1;
    const htp_user_t *u = find_user(h, user);
    if (u == NULL)
        return 0;
    if (!lg_htpasswd_verify(u->hash, pass))
        return 0;
    memcpy(slot->key, key, 32);
    slot->until = now + OK_MS;
    return 1;
}

/* ---- failures per address ---- */

#define FAIL_SLOTS 512
#define FAIL_FREE 5             /* failures in a row before any wait */
#define FAIL_FIRST_MS 1000
#define FAIL_MAX_SHIFT 6        /* 1 s << 6 = 64 s */
#define FAIL_FORGET_MS (10 * 60 * 1000)

typedef struct htp_fail {
    unsigned char addr[17];     /* family byte + address; all zero = free */
    unsigned      count;
    int64_t       last;         /* of the last failure */
    int64_t       until;        /* no attempt before this */
} htp_fail_t;

static htp_fail_t fails[FAIL_SLOTS];

/* The address as a key; 0 for one without (a unix socket: not throttled). */
static int addr_key(const struct sockaddr *sa, unsigned char k[17])
{
    memset(k, 0, 17);
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        k[0] = 4;
        memcpy(k + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        return 1;
    }
    if (sa->sa_family == AF_INET6) {
        k[0] = 6;
        memcpy(k + 1, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        return 1;
    }
    return 0;
}

static htp_fail_t *fail_slot(const unsigned char k[17])
{
    return &fails[lg_hash64(k, 17, 0x6874703a66ull) % FAIL_SLOTS];
}

int64_t lg_htpasswd_throttled(const struct sockaddr *client, int64_t now)
{
    unsigned char k[17];
    if (!addr_key(client, k))
        return 0;
    const htp_fail_t *f = fail_slot(k);
    if (memcmp(f->addr, k, 17) != 0 || f->until <= now)
        return 0;
    return f->until - now;
}

void lg_htpasswd_result(const struct sockaddr *client, int ok, int64_t now)
{
    unsigned char k[17];
    if (!addr_key(client, k))
        return;
    htp_fail_t *f = fail_slot(k);
    int mine = memcmp(f->addr, k, 17) == 0;
    if (ok) {
        if (mine)
            memset(f, 0, sizeof(*f));
        return;
    }
    /* a slot another address holds is taken over: the table is small on
     * purpose, and losing a count only makes the back-off start later */
    if (!mine || now - f->last > FAIL_FORGET_MS) {
        memset(f, 0, sizeof(*f));
        memcpy(f->addr, k, 17);
    }
    f->count++;
    f->last = now;
    if (f->count >= FAIL_FREE) {
        unsigned sh = f->count - FAIL_FREE;
        f->until = now + ((int64_t)FAIL_FIRST_MS << (sh > FAIL_MAX_SHIFT ? FAIL_MAX_SHIFT : sh));
    }
}

void lg_htpasswd_throttle_reset(void)
{
    memset(fails, 0, sizeof(fails));
}

/* ---- Basic credentials ---- */

int lg_htpasswd_basic(const char *value, size_t len, char *buf, size_t bufsize,
                      const char **user, const char **pass)
{
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len < 6 || strncasecmp(value, "Basic", 5) != 0 || (value[5] != ' ' && value[5] != '\t'))
        return -1;
    size_t i = 6;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    const char *b = value + i;
    size_t n = len - i;
    if (n == 0 || n % 4 != 0 || n / 4 * 3 + 1 > bufsize)
        return -1;
    for (size_t k = 0; k < n; k++)
        if (!b64_char((unsigned char)b[k]) && !(b[k] == '=' && k >= n - 2 &&
                                                (k == n - 1 || b[n - 1] == '=')))
            return -1;
    int dl = EVP_DecodeBlock((unsigned char *)buf, (const unsigned char *)b, (int)n);
    if (dl < 0)
        return -1;
    dl -= (b[n - 1] == '=') + (b[n - 2] == '=');   /* DecodeBlock counts the padding */
    buf[dl] = '\0';
    char *colon = memchr(buf, ':', (size_t)dl);
    if (colon == NULL || colon == buf)
        return -1;
    for (int k = 0; k < dl; k++)
        if ((unsigned char)buf[k] < 0x20 || buf[k] == 0x7f)
            return -1;
    *colon = '\0';
    *user = buf;
    *pass = colon + 1;
    return 0;
}
