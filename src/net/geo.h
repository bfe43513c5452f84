/*
 * The client's country, for geofencing: from a MaxMind GeoIP2/GeoLite2
 * country database (MMDB, through libmaxminddb, memory-mapped by the master
 * and shared with the workers by fork), or from the GeoLite2 CSV files
 * (blocks and locations), loaded into a longest-prefix table.
 */
#ifndef LEGATE_NET_GEO_H
#define LEGATE_NET_GEO_H

#include <stddef.h>
#include <sys/socket.h>

typedef struct lg_geo lg_geo_t;

/* mmdb, or blocks (NULL-terminated list) + locations; err on failure. */
lg_geo_t *lg_geo_open(const char *mmdb, char *const *blocks, size_t nblocks,
                      const char *locations, char *err, size_t errlen);
void      lg_geo_free(lg_geo_t *g);
/* The ISO 3166 code ("FR") into out[3], or "" when unknown.  Returns out. */
const char *lg_geo_country(const lg_geo_t *g, const struct sockaddr *sa, char out[3]);

#endif
