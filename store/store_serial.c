/* SPDX-License-Identifier: Apache-2.0 */
/* Serial numbers as the store keys them (store.h): from a certificate's ASN1_INTEGER and from hex
 * text, written once here for every module (import, OCSP requests, the CLI, the admin API, the
 * certificate repository, the directory, the demo PKI). */
#include "store.h"

#include <openssl/asn1.h>
#include <string.h>
#include <util/util.h>

int store_serial_from_asn1(const ASN1_INTEGER *serial, unsigned char *out, size_t *len)
{
    unsigned char buf[8 + STORE_SERIAL_MAX];
    unsigned char *p = buf;
    int der_len = i2d_ASN1_INTEGER(serial, NULL);

    /* The DER INTEGER is re-encoded into a stack buffer: OpenSSL refuses non-minimal encodings
     * when parsing, so these are the certificate's own octets. */
    if (der_len <= 2 || der_len > (int)sizeof(buf))
        return UTIL_EINVAL;
    if (i2d_ASN1_INTEGER(serial, &p) != der_len)
        return UTIL_EINVAL;
    /* Short-form length only: serials are at most STORE_SERIAL_MAX < 128 octets. */
    if ((buf[1] & 0x80) != 0 || (size_t)der_len - 2 != buf[1] || buf[1] == 0 ||
        buf[1] > STORE_SERIAL_MAX)
        return UTIL_EINVAL;
    memcpy(out, buf + 2, buf[1]);
    *len = buf[1];
    return UTIL_OK;
}

int store_serial_from_hex(const char *hex, size_t len, unsigned char *out, size_t *out_len)
{
    unsigned char tmp[STORE_SERIAL_MAX + 1];
    size_t n = 0, skip = 0;
    if (len == 0 || len > 2 * STORE_SERIAL_MAX)
        return UTIL_EINVAL;
    for (size_t i = 0; i < len;) {
        int hi, lo;
        if ((len - i) % 2 == 1) { /* odd length: a leading nibble */
            hi = 0;
            lo = util_hex_digit(hex[i]);
            i += 1;
        } else {
            hi = util_hex_digit(hex[i]);
            lo = util_hex_digit(hex[i + 1]);
            i += 2;
        }
        if (hi < 0 || lo < 0)
            return UTIL_EINVAL;
        tmp[n++] = (unsigned char)(hi << 4 | lo);
    }
    while (skip + 1 < n && tmp[skip] == 0)
        skip++;
    *out_len = 0;
    if (tmp[skip] & 0x80)
        out[(*out_len)++] = 0;
    if (*out_len + (n - skip) > STORE_SERIAL_MAX)
        return UTIL_EINVAL;
    memcpy(out + *out_len, tmp + skip, n - skip);
    *out_len += n - skip;
    return UTIL_OK;
}
