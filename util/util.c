/* SPDX-License-Identifier: Apache-2.0 */
/* The error enum's strings, errno mapping, clocks and small byte helpers shared by every module. */
#define _GNU_SOURCE /* timegm */
#include "util.h"

#include <errno.h>
#include <openssl/asn1.h>
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

int64_t util_mono_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
