/* HTTP-date (RFC 9110 5.6.7): the three forms a recipient must accept, and IMF-fixdate out. */
#include "http/date.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int month_of(const char *m)
{
    static const char *const names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
    for (int i = 0; i < 12; i++)
        if (strncmp(m, names[i], 3) == 0)
            return i;
    return -1;
}

int64_t lg_http_date(const char *s, size_t n)
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    char mon[4] = { 0 }, wk[16];
    int d, y, hh, mm, ss;
    if (sscanf(buf, "%3s, %d %3s %d %d:%d:%d GMT", wk, &d, mon, &y, &hh, &mm, &ss) == 7) {
        /* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
    } else if (sscanf(buf, "%15[A-Za-z], %d-%3s-%d %d:%d:%d GMT", wk, &d, mon, &y, &hh, &mm, &ss) == 7) {
        y += y < 70 ? 2000 : y < 100 ? 1900 : 0;   /* RFC 850 */
    } else if (sscanf(buf, "%3s %3s %d %d:%d:%d %d", wk, mon, &d, &hh, &mm, &ss, &y) == 7) {
        /* asctime */
    } else {
        return -1;
    }
    int m = month_of(mon);
    if (m < 0 || d < 1 || d > 31 || hh > 23 || mm > 59 || ss > 60)
        return -1;
    tm.tm_year = y - 1900;
    tm.tm_mon = m;
    tm.tm_mday = d;
    tm.tm_hour = hh;
    tm.tm_min = mm;
    tm.tm_sec = ss;
    return (int64_t)timegm(&tm);
}

void lg_http_date_fmt(int64_t t, char *buf)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, 30, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}
