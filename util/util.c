/* SPDX-License-Identifier: Apache-2.0 */
/* The error enum's strings, errno mapping, clocks and small byte helpers shared by every module. */
#define _GNU_SOURCE /* timegm */
#include "util.h"

#include <errno.h>
#include <openssl/asn1.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *util_strerror(int err)
{
    switch (err) {
    case UTIL_OK: return "success";
    case UTIL_ENOMEM: return "out of memory";
    case UTIL_EINVAL: return "invalid argument or malformed input";
    case UTIL_EIO: return "I/O error";
    case UTIL_ENOTFOUND: return "not found";
    case UTIL_EBUSY: return "busy: queue full";
    case UTIL_EHSM: return "HSM unavailable or failed";
    case UTIL_ESTORE: return "database error";
    case UTIL_EEXIST: return "already exists or conflicting state";
    case UTIL_ETIMEDOUT: return "timed out";
    case UTIL_ECONFIG: return "invalid configuration";
    case UTIL_ECRYPTO: return "cryptographic operation failed";
    case UTIL_ENOSPC: return "no space left on device";
    case UTIL_ELOCKED: return "database locked";
    case UTIL_ECLOSED: return "shutting down";
    case UTIL_EPERM: return "permission denied";
    default: return "unknown error";
    }
}

int util_errno(int errnum)
{
    switch (errnum) {
    case 0: return UTIL_OK;
    case ENOMEM: return UTIL_ENOMEM;
    case ENOENT: return UTIL_ENOTFOUND;
    case EEXIST: return UTIL_EEXIST;
    case ENOSPC:
    case EDQUOT: return UTIL_ENOSPC;
    case EACCES:
    case EPERM:
    case EROFS: return UTIL_EPERM;
    case EINVAL: return UTIL_EINVAL;
    case ETIMEDOUT: return UTIL_ETIMEDOUT;
    case EAGAIN: return UTIL_EBUSY;
    default: return UTIL_EIO;
    }
}

int64_t util_now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_REALTIME, &ts); /* cannot fail for CLOCK_REALTIME */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int util_asn1_time_unix(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return UTIL_EINVAL;
    *out = (int64_t)timegm(&tm);
    return UTIL_OK;
}

int util_time_from_civil(int year, int month, int day, int hour, int min, int sec, int64_t *out)
{
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    int64_t y = 0, era = 0, yoe = 0, doy = 0, doe = 0;

    if (year < 1970 || year > 9999 || month < 1 || month > 12 || day < 1 ||
        day > month_days[month - 1] + (month == 2 && leap) || hour < 0 || hour > 23 || min < 0 ||
        min > 59 || sec < 0 || sec > 59)
        return UTIL_EINVAL;
    /* days_from_civil (H. Hinnant): exact for every Gregorian date, no timegm normalisation that
     * would quietly turn 2026-02-30 into 2026-03-02. */
    y = year - (month <= 2);
    era = y / 400; /* y >= 1969: never negative */
    yoe = y - era * 400;
    doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;
    doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    *out = (era * 146097 + doe - 719468) * 86400 + hour * 3600 + min * 60 + sec;
    return UTIL_OK;
}

/* Two decimal digits of v (0..99). */
static void put2(char *out, unsigned v)
{
    out[0] = (char)('0' + v / 10 % 10);
    out[1] = (char)('0' + v % 10);
}

int util_gentime(int64_t t, char *out)
{
    /* civil_from_days (H. Hinnant): the proleptic Gregorian date of a day number, as gmtime. */
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    int64_t secs = t - days * 86400;
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    unsigned day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    unsigned month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    int64_t year = yoe + era * 400 + (month <= 2);

    if (year < 0 || year > 9999)
        return UTIL_EINVAL;
    put2(out, (unsigned)(year / 100));
    put2(out + 2, (unsigned)(year % 100));
    put2(out + 4, month);
    put2(out + 6, day);
    put2(out + 8, (unsigned)(secs / 3600));
    put2(out + 10, (unsigned)(secs / 60 % 60));
    put2(out + 12, (unsigned)(secs % 60));
    out[14] = 'Z';
    return UTIL_OK;
}

/* n decimal digits at text as an int; -1 if one is not a digit. */
static int digits_value(const char *text, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -1;
        v = v * 10 + (text[i] - '0');
    }
    return v;
}

int util_time_parse(const char *text, int64_t *seconds)
{
    int v[6] = {0, 0, 0, 0, 0, 0};
    size_t len = text != NULL ? strlen(text) : 0;
    int64_t t = 0;

    if (len >= 2 && text[0] == '@') {
        /* Digits only (no sign, no space), accumulated with an overflow check at the bound. */
        for (size_t i = 1; i < len; i++) {
            if (text[i] < '0' || text[i] > '9' || t > (UTIL_TIME_MAX - (text[i] - '0')) / 10)
                return UTIL_EINVAL;
            t = t * 10 + (text[i] - '0');
        }
        *seconds = t;
        return UTIL_OK;
    }
    /* YYYY-MM-DD, then optionally [T ]HH:MM:SS, then optionally Z. */
    if (len < 10 || text[4] != '-' || text[7] != '-')
        return UTIL_EINVAL;
    v[0] = digits_value(text, 4);
    v[1] = digits_value(text + 5, 2);
    v[2] = digits_value(text + 8, 2);
    if (len > 10) {
        if ((text[10] != 'T' && text[10] != ' ') || len < 19 || text[13] != ':' ||
            text[16] != ':' || (len != 19 && !(len == 20 && text[19] == 'Z')))
            return UTIL_EINVAL;
        v[3] = digits_value(text + 11, 2);
        v[4] = digits_value(text + 14, 2);
        v[5] = digits_value(text + 17, 2);
    }
    for (int i = 0; i < 6; i++)
        if (v[i] < 0)
            return UTIL_EINVAL;
    return util_time_from_civil(v[0], v[1], v[2], v[3], v[4], v[5], seconds);
}

int64_t util_mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void util_mono_deadline(struct timespec *out, int64_t ms)
{
    (void)clock_gettime(CLOCK_MONOTONIC, out); /* cannot fail */
    out->tv_sec += (time_t)(ms / 1000);
    out->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (out->tv_nsec >= 1000000000L) {
        out->tv_sec++;
        out->tv_nsec -= 1000000000L;
    }
}

int util_ct_equal(const void *a, size_t a_len, const void *b, size_t b_len)
{
    const unsigned char *pa = a;
    const unsigned char *pb = b;
    size_t n = a_len < b_len ? a_len : b_len;
    unsigned char diff = (unsigned char)(a_len != b_len);
    /* Walk the longer length so that timing reveals only the lengths, never the first mismatch. */
    size_t len = a_len > b_len ? a_len : b_len;
    for (size_t i = 0; i < len; i++) {
        unsigned char x = i < n ? pa[i] : 0;
        unsigned char y = i < n ? pb[i] : 1;
        diff |= (unsigned char)(x ^ y);
    }
    return diff == 0;
}

int util_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int util_name_valid(const char *name)
{
    size_t len = name != NULL ? strlen(name) : 0;
    if (len == 0 || len >= UTIL_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

void util_hex(const unsigned char *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[data[i] >> 4];
        out[2 * i + 1] = digits[data[i] & 15];
    }
    out[2 * len] = '\0';
}

void util_thread_name(const char *role, int index)
{
    char name[32];

    if (index >= 0)
        (void)snprintf(name, sizeof(name), "%.10s-%d", role, index);
    else
        (void)snprintf(name, sizeof(name), "%.20s", role);
    name[15] = '\0';                                /* the kernel keeps 15 characters */
    (void)pthread_setname_np(pthread_self(), name); /* a name is a help, never a need */
}
