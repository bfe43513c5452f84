/* HTTP-date parsing and formatting (date.c). */
#ifndef LEGATE_HTTP_DATE_H
#define LEGATE_HTTP_DATE_H

#include <stddef.h>
#include <stdint.h>

/* IMF-fixdate, RFC 850 and asctime dates: seconds since the epoch, or -1. */
int64_t lg_http_date(const char *s, size_t n);
/* IMF-fixdate into buf (at least 30 bytes). */
void    lg_http_date_fmt(int64_t t, char *buf);

#endif
