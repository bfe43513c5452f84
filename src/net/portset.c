/* Port lists ("443 8000-8999") parsed once (see acl.h for the contract). */
#include "net/acl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/text.h"

/* ================================================================== */
/* port lists                                                          */

void lg_portset_clear(lg_portset_t *p)
{
    memset(p, 0, sizeof(*p));
}

static const char *port_number(const char *q, unsigned *out)
{
    unsigned v = 0;
    const char *start = q;
    while (*q >= '0' && *q <= '9' && q - start < 6)
        v = v * 10 + (unsigned)(*q++ - '0');
    if (q == start || (*q >= '0' && *q <= '9'))
        return NULL;
    *out = v;
    return q;
}

/* Parses text; with p, applies it.  0 or -1. */
static int portset_scan(lg_portset_t *p, const char *text, char *err, size_t errlen)
{
    const char *q = text;
    int items = 0;
    for (;;) {
        while (*q == ',' || lg_text_space((unsigned char)*q))
            q++;
        if (*q == '\0')
            break;
        const char *item = q;
        unsigned lo, hi;
        q = port_number(q, &lo);
        if (q == NULL)
            goto bad;
        hi = lo;
        const char *r = q;
        while (*r == ' ' || *r == '\t')
            r++;
        if (*r == '-') {
            r++;
            while (*r == ' ' || *r == '\t')
                r++;
            q = port_number(r, &hi);
            if (q == NULL)
                goto bad;
        }
        if (*q != '\0' && *q != ',' && !lg_text_space((unsigned char)*q))
            goto bad;
        if (lo == 0 || hi > 65535 || lo > hi) {
            snprintf(err, errlen, "bad port range \"%.*s\" (ports are 1..65535, low-high)",
                     (int)(q - item), item);
            return -1;
        }
        if (p != NULL)
            for (unsigned port = lo; port <= hi; port++)
                p->bits[port >> 6] |= 1ull << (port & 63);
        items++;
        continue;
bad:
        {
            size_t n = strcspn(item, ", \t\r\n");
            snprintf(err, errlen, "bad port \"%.*s\" in \"%s\"", (int)(n ? n : 1), item, text);
        }
        return -1;
    }
    if (items == 0) {
        snprintf(err, errlen, "empty port list");
        return -1;
    }
    return 0;
}

int lg_portset_parse(lg_portset_t *p, const char *text, char *err, size_t errlen)
{
    if (portset_scan(NULL, text, err, errlen) < 0)
        return -1;
    return portset_scan(p, text, err, errlen);
}
