/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP dates and conditional requests (RFC 9110 §5.6.7, §13): the IMF-fixdate every module writes
 * in Date, Last-Modified and Expires, its parser, and the 304 decision for If-None-Match and
 * If-Modified-Since, in one place for every endpoint that serves cacheable bytes. */
#include "http_int.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static const char day_names[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char month_names[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                        "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

void http_date_format(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;

    /* Names by hand, not strftime's %a/%b: those follow the locale, HTTP dates are English. */
    if (t < 0 || gmtime_r(&tt, &tm) == NULL || tm.tm_year + 1900 > 9999) {
        (void)snprintf(out, len, "Thu, 01 Jan 1970 00:00:00 GMT"); /* out of range: the epoch */
        return;
    }
    (void)snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday % 7],
                   tm.tm_mday, month_names[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
                   tm.tm_min, tm.tm_sec);
}

int http__date_parse(const char *text, size_t len, int64_t *t)
{
    char buf[64];
    int day = 0, year = 0, hh = 0, mm = 0, ss = 0, mon = -1, n = 0;
    char month[4] = {0};
    int64_t y, m, days;

    if (len < 29 || len >= sizeof(buf))
        return UTIL_EINVAL;
    memcpy(buf, text, len);
    buf[len] = '\0';
    if (buf[3] != ',' ||
        sscanf(buf + 5, "%2d %3s %4d %2d:%2d:%2d GMT%n", &day, month, &year, &hh, &mm, &ss, &n) !=
            6 ||
        n == 0)
        return UTIL_EINVAL;
    for (int i = 0; i < 12; i++)
        if (strcmp(month, month_names[i]) == 0)
            mon = i;
    if (mon < 0 || day < 1 || day > 31 || year < 1970 || hh > 23 || mm > 59 || ss > 60)
        return UTIL_EINVAL;
    /* days_from_civil (H. Hinnant) */
    y = year - (mon + 1 <= 2);
    m = mon + 1;
    {
        int64_t era = (y >= 0 ? y : y - 399) / 400;
        int64_t yoe = y - era * 400;
        int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + day - 1;
        int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        days = era * 146097 + doe - 719468;
    }
    *t = days * 86400 + hh * 3600 + mm * 60 + ss;
    return UTIL_OK;
}

int http__etag_matches(const char *value, size_t len, const char *etag)
{
    size_t etag_len = strlen(etag);
    size_t i = 0;

    while (i < len) {
        size_t start, end;
        while (i < len && (value[i] == ' ' || value[i] == '\t' || value[i] == ','))
            i++;
        start = i;
        while (i < len && value[i] != ',')
            i++;
        end = i;
        while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t'))
            end--;
        if (end - start == 1 && value[start] == '*')
            return 1;
        if (end - start > 2 && value[start] == 'W' && value[start + 1] == '/')
            start += 2; /* the weak comparison of §8.8.3.2, which If-None-Match uses */
        if (end - start == etag_len && memcmp(value + start, etag, etag_len) == 0)
            return 1;
    }
    return 0;
}

int http_request_not_modified(const struct http_request *req, const char *etag,
                              int64_t last_modified)
{
    size_t len = 0;
    const char *value = http_request_header(req, "If-None-Match", &len);
    int64_t since = 0;

    /* §13.2.2: If-None-Match decides when present; If-Modified-Since only without it, and only
     * for a representation whose Last-Modified is later than its predecessor's (> 0). */
    if (value != NULL)
        return etag != NULL && http__etag_matches(value, len, etag);
    value = http_request_header(req, "If-Modified-Since", &len);
    return value != NULL && last_modified > 0 && http__date_parse(value, len, &since) == UTIL_OK &&
           last_modified <= since;
}
