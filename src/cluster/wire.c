/*
 * The formats of src/cluster in Redis: a purge message on the channel,
 * the TLS ticket key set.  Each parser checks every byte it uses against
 * the length it was given (a Redis string is not NUL-terminated data).
 */
#include "cluster/wire.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

static int dec(const char *p, size_t n, uint64_t *v)
{
    if (n == 0 || n > 20)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

int lg_stream_id_parse(const char *p, size_t len, uint64_t *ms, uint64_t *seq)
{
    const char *dash = memchr(p, '-', len);
    if (dash == NULL)
        return -1;
    size_t a = (size_t)(dash - p);
    return dec(p, a, ms) == 0 && dec(dash + 1, len - a - 1, seq) == 0 ? 0 : -1;
}

int lg_purge_msg_parse(const char *p, size_t len, lg_purge_msg_t *out)
{
    const char *id = NULL;
    size_t id_len = 0;
    if (len >= 3 && memcmp(p, "v2\t", 3) == 0) {
        /* the channel's form: the log entry's id, then the entry */
        const char *t = memchr(p + 3, '\t', len - 3);
        uint64_t ms, seq;
        if (t == NULL || lg_stream_id_parse(p + 3, (size_t)(t - (p + 3)), &ms, &seq) < 0)
            return -1;
        id = p + 3;
        id_len = (size_t)(t - id);
        len -= (size_t)(t + 1 - p);
        p = t + 1;
    }
    const char *end = p + len;
    if (len < 3 || memcmp(p, "v1\t", 3) != 0)
        return -1;
    const char *node = p + 3;
    const char *t = memchr(node, '\t', (size_t)(end - node));
    if (t == NULL || t == node)
        return -1;
    /* soft flag, one digit, then a tab and at least one byte of key */
    if (end - t < 4 || (t[1] != '0' && t[1] != '1') || t[2] != '\t')
        return -1;
    const char *key = t + 3;
    if ((size_t)(end - key) > LG_PURGE_MAX_KEY)
        return -1;
    for (const char *q = node; q < t; q++)
        if ((unsigned char)*q <= ' ' || (unsigned char)*q >= 127)
            return -1;          /* node names are printable tokens (conf/load_cluster.c) */
    out->node = node;
    out->node_len = (size_t)(t - node);
    out->soft = t[1] == '1';
    out->key = key;
    out->key_len = (size_t)(end - key);
    out->id = id;
    out->id_len = id_len;
    return 0;
}

static int unhex(const char *h, unsigned char *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int k = 0; k < 2; k++) {
            char c = h[2 * i + k];
            int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
                    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return -1;
            v = v * 16 + d;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

int lg_ticket_set_parse(const char *v, size_t len, unsigned char keys[3 * 80], int64_t *created_ms)
{
    const char *p = v, *end = v + len;
    if (len < 3 || memcmp(p, "v1 ", 3) != 0)
        return -1;
    p += 3;
    int64_t created = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 18) {
        created = created * 10 + (*p++ - '0');
        digits++;
    }
    if (digits == 0 || p >= end || *p != ' ')
        return -1;
    p++;
    int n = 0;
    while (p < end && n < 3) {
        if (end - p < LG_TICKET_KEYHEX || (end - p > LG_TICKET_KEYHEX && p[LG_TICKET_KEYHEX] != ' ') ||
            unhex(p, keys + 80 * n, 80) < 0)
            return -1;
        n++;
        p += LG_TICKET_KEYHEX;
        if (p < end)
            p++;                /* the space; a trailing one leaves p == end: refused below */
        else
            break;
    }
    if (n < 2 || p != end || (len > 0 && v[len - 1] == ' '))
        return -1;
    *created_ms = created;
    return n;
}

/* One parameter "name=value" of v[i, j): into *p, *pn when its name is name. */
static int relay_param(const char *v, size_t i, size_t j, const char *name, const char **p, size_t *pn)
{
    size_t nl = strlen(name);
    if (j - i <= nl || v[i + nl] != '=' || strncasecmp(v + i, name, nl) != 0)
        return 0;
    size_t a = i + nl + 1, e = j;
    while (e > a && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    *p = v + a;
    *pn = e - a;
    return 1;
}

int lg_relay_field_parse(const char *v, size_t n, lg_relay_field_t *out)
{
    memset(out, 0, sizeof(*out));
    out->t = -1;
    const char *proto = NULL;
    size_t proto_len = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ';'))
            i++;
        size_t j = i;
        while (j < n && v[j] != ';')
            j++;
        const char *t = NULL;
        size_t tn = 0;
        if (!relay_param(v, i, j, "node", &out->node, &out->node_len) &&
            !relay_param(v, i, j, "for", &out->for_, &out->for_len) &&
            !relay_param(v, i, j, "hop", &out->hop, &out->hop_len) &&
            !relay_param(v, i, j, "sig", &out->sig, &out->sig_len) &&
            !relay_param(v, i, j, "t", &t, &tn))
            relay_param(v, i, j, "proto", &proto, &proto_len);
        uint64_t x;
        if (t && dec(t, tn, &x) == 0 && x <= INT64_MAX)
            out->t = (int64_t)x;
        i = j;
    }
    out->https = proto_len == 5 && strncasecmp(proto, "https", 5) == 0;
    if (out->node == NULL || out->node_len == 0) {
        memset(out, 0, sizeof(*out));
        out->t = -1;
        return -1;
    }
    return 0;
}
