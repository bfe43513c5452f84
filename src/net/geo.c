#include "net/geo.h"

#include <errno.h>
#include <maxminddb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "net/acl.h"

struct lg_geo {
    int            is_mmdb;
    MMDB_s         mmdb;
    lg_cidr_set_t *cidrs;       /* CSV: network -> rule index */
    char         (*codes)[3];   /* rule index -> country code */
    size_t         ncodes, capcodes;
};

typedef struct loc {
    long id;
    char code[3];
} loc_t;

static int loc_cmp(const void *a, const void *b)
{
    long x = ((const loc_t *)a)->id, y = ((const loc_t *)b)->id;
    return x < y ? -1 : x > y;
}

/* Split a CSV line in place (the GeoLite2 files quote only text columns). */
static int csv_split(char *line, char **f, int max)
{
    int n = 0;
    char *p = line;
    while (n < max) {
        if (*p == '"') {
            f[n++] = ++p;
            while (*p && *p != '"')
                p++;
            if (*p)
                *p++ = '\0';
            if (*p == ',')
                p++;
        } else {
            f[n++] = p;
            while (*p && *p != ',' && *p != '\r' && *p != '\n')
                p++;
            if (*p != ',') {
                *p = '\0';
                break;
            }
            *p++ = '\0';
        }
        if (*p == '\0' || *p == '\r' || *p == '\n')
            break;
    }
    return n;
}

static int load_csv(lg_geo_t *g, char *const *blocks, size_t nblocks, const char *locations,
                    char *err, size_t errlen)
{
    FILE *f = fopen(locations, "r");
    if (f == NULL) {
        snprintf(err, errlen, "%s: %s", locations, strerror(errno));
        return -1;
    }
    loc_t *locs = NULL;
    size_t nlocs = 0, cap = 0;
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof(line), f)) {
        char *fl[8];
        lineno++;
        /* geoname_id,locale_code,continent_code,continent_name,country_iso_code,... */
        if (lineno == 1 || csv_split(line, fl, 8) < 5)
            continue;
        if (nlocs == cap) {
            cap = cap ? cap * 2 : 256;
            loc_t *n = realloc(locs, cap * sizeof(*n));
            if (n == NULL) {
                snprintf(err, errlen, "%s: out of memory", locations);
                fclose(f);
                free(locs);
                return -1;
            }
            locs = n;
        }
        locs[nlocs].id = strtol(fl[0], NULL, 10);
        snprintf(locs[nlocs].code, 3, "%s", fl[4]);
        nlocs++;
    }
    fclose(f);
    qsort(locs, nlocs, sizeof(*locs), loc_cmp);
    g->cidrs = lg_cidr_new();
    int rc = 0;
    for (size_t b = 0; b < nblocks && rc == 0; b++) {
        f = fopen(blocks[b], "r");
        if (f == NULL) {
            snprintf(err, errlen, "%s: %s", blocks[b], strerror(errno));
            rc = -1;
            break;
        }
        lineno = 0;
        while (fgets(line, sizeof(line), f)) {
            char *fl[8], msg[128];
            lineno++;
            /* network,geoname_id,registered_country_geoname_id,... */
            if (lineno == 1 || line[0] == '\n' || line[0] == '\r')
                continue;
            if (csv_split(line, fl, 8) < 3) {
                snprintf(err, errlen, "%s:%d: expected network,geoname_id,"
                         "registered_country_geoname_id,...", blocks[b], lineno);
                rc = -1;
                break;
            }
            long id = strtol(fl[1][0] ? fl[1] : fl[2], NULL, 10);
            loc_t key = { id, "" }, *hit = bsearch(&key, locs, nlocs, sizeof(*locs), loc_cmp);
            if (hit == NULL || hit->code[0] == '\0')
                continue;
            int idx = lg_cidr_add(g->cidrs, fl[0], msg, sizeof(msg));
            if (idx < 0) {
                snprintf(err, errlen, "%s:%d: %s", blocks[b], lineno, msg);
                rc = -1;
                break;
            }
            if ((size_t)idx >= g->capcodes) {
                size_t nc = g->capcodes ? g->capcodes * 2 : 1024;
                while (nc <= (size_t)idx)
                    nc *= 2;
                char (*n)[3] = realloc(g->codes, nc * sizeof(*n));
                if (n == NULL) {
                    snprintf(err, errlen, "%s: out of memory", blocks[b]);
                    rc = -1;
                    break;
                }
                g->codes = n;
                g->capcodes = nc;
            }
            memcpy(g->codes[idx], hit->code, 3);
            if ((size_t)idx + 1 > g->ncodes)
                g->ncodes = (size_t)idx + 1;
        }
        fclose(f);
    }
    free(locs);
    if (rc == 0 && lg_cidr_build(g->cidrs, err, errlen) < 0)
        rc = -1;
    return rc;
}

lg_geo_t *lg_geo_open(const char *mmdb, char *const *blocks, size_t nblocks,
                      const char *locations, char *err, size_t errlen)
{
    lg_geo_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    if (mmdb) {
        /* libmaxminddb does not keep errno: ask first, for "No such file" */
        if (access(mmdb, R_OK) < 0) {
            snprintf(err, errlen, "%s: %s", mmdb, strerror(errno));
            free(g);
            return NULL;
        }
        int rc = MMDB_open(mmdb, MMDB_MODE_MMAP, &g->mmdb);
        if (rc != MMDB_SUCCESS) {
            snprintf(err, errlen, "%s: %s", mmdb, MMDB_strerror(rc));
            free(g);
            return NULL;
        }
        g->is_mmdb = 1;
        return g;
    }
    if (load_csv(g, blocks, nblocks, locations, err, errlen) < 0) {
        lg_geo_free(g);
        return NULL;
    }
    return g;
}

void lg_geo_free(lg_geo_t *g)
{
    if (g == NULL)
        return;
    if (g->is_mmdb)
        MMDB_close(&g->mmdb);
    lg_cidr_free(g->cidrs);
    free(g->codes);
    free(g);
}

const char *lg_geo_country(const lg_geo_t *g, const struct sockaddr *sa, char out[3])
{
    out[0] = '\0';
    if (g == NULL || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6))
        return out;
    if (g->is_mmdb) {
        int err = 0;
        MMDB_lookup_result_s r = MMDB_lookup_sockaddr((MMDB_s *)&g->mmdb, sa, &err);
        if (err != MMDB_SUCCESS || !r.found_entry)
            return out;
        MMDB_entry_data_s d;
        if (MMDB_get_value(&r.entry, &d, "country", "iso_code", NULL) == MMDB_SUCCESS &&
            d.has_data && d.type == MMDB_DATA_TYPE_UTF8_STRING && d.data_size == 2) {
            memcpy(out, d.utf8_string, 2);
            out[2] = '\0';
        }
        return out;
    }
    int idx = lg_cidr_lookup(g->cidrs, sa);
    if (idx >= 0 && (size_t)idx < g->ncodes)
        memcpy(out, g->codes[idx], 3);
    return out;
}
