/* SPDX-License-Identifier: Apache-2.0 */
/* Decoding of untrusted OCSP input: the GET path (URL-encoded base64, with the quirks real clients
 * and proxies produce) and the DER OCSPRequest (CertIDs, serials, the RFC 9654 nonce). Pure
 * functions: no responder state, no I/O, so fuzzers and unit tests call them directly. */
#include "ocsp_int.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

/* What each octet of a GET path is: a base64 digit's value (standard and URL alphabets; ' ' is a
 * '+' that a form-encoding client or proxy turned into a space), or one of the classes below. A
 * table, not a chain of comparisons: the path of every OCSP GET goes through here. */
enum { INV = 64, PAD, SKP, PCT, END }; /* invalid, '=', CR/LF/TAB, '%', '?' or '#' */
/* clang-format off */
static const unsigned char path_class[256] = {
    /* 0x00 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, SKP, SKP, INV, INV, SKP, INV, INV,
    /* 0x10 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0x20 */  62, INV, INV, END, INV, PCT, INV, INV, INV, INV, INV,  62, INV,  62, INV,  63,
    /* 0x30 */  52,  53,  54,  55,  56,  57,  58,  59,  60,  61, INV, INV, INV, PAD, INV, END,
    /* 0x40 */ INV,   0,   1,   2,   3,   4,   5,   6,   7,   8,   9,  10,  11,  12,  13,  14,
    /* 0x50 */  15,  16,  17,  18,  19,  20,  21,  22,  23,  24,  25, INV, INV, INV, INV,  63,
    /* 0x60 */ INV,  26,  27,  28,  29,  30,  31,  32,  33,  34,  35,  36,  37,  38,  39,  40,
    /* 0x70 */  41,  42,  43,  44,  45,  46,  47,  48,  49,  50,  51, INV, INV, INV, INV, INV,
    /* 0x80 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0x90 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xA0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xB0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xC0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xD0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xE0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
    /* 0xF0 */ INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV, INV,
};
/* clang-format on */

int ocsp_get_path_decode(const char *in, size_t in_len, unsigned char *out, size_t out_max)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t n_out = 0;
    size_t i = 0;
    int padding = 0;

    /* Leading slashes (the prefix's own, doubled ones, escaped ones) never carry data: DER starts
     * with 0x30, whose base64 is 'M'. Interior ones are base64 digits. */
    while (i < in_len) {
        if (in[i] == '/')
            i++;
        else if (in[i] == '%' && i + 2 < in_len && in[i + 1] == '2' && (in[i + 2] | 0x20) == 'f')
            i += 3;
        else
            break;
    }
    for (; i < in_len; i++) {
        unsigned v;
        /* Four plain digits at once (almost every path is only those): three octets out. */
        while (i + 4 <= in_len && !padding && n_out + 3 <= out_max) {
            const unsigned char *q = (const unsigned char *)in + i;
            unsigned a = path_class[q[0]], b = path_class[q[1]], c = path_class[q[2]],
                     d = path_class[q[3]];
            if ((a | b | c | d) >= INV)
                break;
            acc = (acc << 24) | (a << 18) | (b << 12) | (c << 6) | d; /* < 2^30: bits <= 6 */
            out[n_out++] = (unsigned char)(acc >> (bits + 16));
            out[n_out++] = (unsigned char)(acc >> (bits + 8));
            out[n_out++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
            i += 4;
        }
        if (i >= in_len)
            break;
        v = path_class[(unsigned char)in[i]];
        if (v >= INV) {
            if (v == END)
                break; /* query or fragment: not part of the request */
            if (v == PCT) {
                int hi, lo;
                if (i + 2 >= in_len)
                    return UTIL_EINVAL;
                hi = util_hex_digit(in[i + 1]);
                lo = util_hex_digit(in[i + 2]);
                if (hi < 0 || lo < 0)
                    return UTIL_EINVAL;
                i += 2;
                v = path_class[hi * 16 + lo];
                if (v == END || v == PCT) /* an escaped '?', '#' or '%' is no base64 digit */
                    v = INV;
            }
            if (v == PAD) {
                padding = 1;
                continue;
            }
            if (v == SKP)
                continue;
            if (v == INV)
                return UTIL_EINVAL;
        }
        if (padding)
            return UTIL_EINVAL; /* data after padding */
        acc = (acc << 6) | v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n_out >= out_max)
                return UTIL_EINVAL;
            out[n_out++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits: 0 (complete), 2 or 4 (missing padding) are fine; 6 means one base64 digit
     * alone, which cannot encode a byte. */
    if (bits >= 6 || n_out == 0)
        return UTIL_EINVAL;
    return (int)n_out;
}

ASN1_INTEGER *ocsp__serial_to_asn1(const unsigned char *serial, size_t len)
{
    unsigned char der[2 + STORE_SERIAL_MAX];
    const unsigned char *p = der;
    if (len == 0 || len > STORE_SERIAL_MAX)
        return NULL;
    der[0] = V_ASN1_INTEGER;
    der[1] = (unsigned char)len;
    memcpy(der + 2, serial, len);
    return d2i_ASN1_INTEGER(NULL, &p, (long)(len + 2));
}

static int alg_of(const ASN1_OBJECT *obj)
{
    switch (OBJ_obj2nid(obj)) {
    case NID_sha1: return OCSP__SHA1;
    case NID_sha256: return OCSP__SHA256;
    case NID_sha384: return OCSP__SHA384;
    case NID_sha512: return OCSP__SHA512;
    default: return -1;
    }
}

/* 1 when the CertID's hashAlgorithm has no parameters or NULL ones, the only forms its hash
 * algorithms define (RFC 5754 §2: SHA-2 parameters absent, or NULL from implementations that put
 * it; RFC 3279 for SHA-1), else 0. Anything else is a client's bytes that the response would
 * repeat: refused, so that no response carries them (issue 15.2). OpenSSL keeps the
 * AlgorithmIdentifier opaque, so it is read from the CertID's DER: SEQUENCE { SEQUENCE { OID,
 * params } ... }, the inner SEQUENCE's content past the OID must be empty or NULL (05 00). */
static int certid_params_ok(const OCSP_CERTID *cid) /* -1: out of memory */
{
    unsigned char *der = NULL;
    const unsigned char *p, *alg_end;
    long len = 0, rest;
    int der_len = i2d_OCSP_CERTID((OCSP_CERTID *)cid, &der);
    int tag = 0, xclass = 0, ok = 0;

    if (der_len <= 0) /* a decoded CertID that cannot be encoded again is not answered */
        return util_openssl_oom_clear() ? -1 : 0;
    p = der;
    /* The outer SEQUENCE, then the AlgorithmIdentifier SEQUENCE, then its OID. */
    if ((ASN1_get_object(&p, &len, &tag, &xclass, der_len) & 0x80) != 0 || tag != V_ASN1_SEQUENCE)
        goto out;
    rest = (long)(der + der_len - p);
    if ((ASN1_get_object(&p, &len, &tag, &xclass, rest) & 0x80) != 0 || tag != V_ASN1_SEQUENCE)
        goto out;
    alg_end = p + len;
    rest = len;
    if ((ASN1_get_object(&p, &len, &tag, &xclass, rest) & 0x80) != 0 || tag != V_ASN1_OBJECT)
        goto out;
    p += len;
    ok = p == alg_end || (alg_end - p == 2 && p[0] == V_ASN1_NULL && p[1] == 0);
out:
    ERR_clear_error(); /* a parse failure above is the client's, not ours */
    OPENSSL_free(der);
    return ok;
}

/* RFC 9654: extnValue holds the DER of Nonce ::= OCTET STRING. Some old clients put the raw bytes
 * there instead; then the raw length is the nonce length. Either way the extension is echoed
 * verbatim. */
static size_t nonce_length(X509_EXTENSION *ext)
{
    ASN1_OCTET_STRING *value = X509_EXTENSION_get_data(ext);
    const unsigned char *p = ASN1_STRING_get0_data(value);
    long vlen = ASN1_STRING_length(value);
    const unsigned char *q = p;
    ASN1_OCTET_STRING *inner = d2i_ASN1_OCTET_STRING(NULL, &q, vlen);
    size_t len;

    if (inner != NULL && q == p + vlen) {
        len = (size_t)ASN1_STRING_length(inner);
    } else {
        ERR_clear_error(); /* not wrapped: expected for legacy clients, not an error */
        len = (size_t)vlen;
    }
    ASN1_OCTET_STRING_free(inner);
    return len;
}

int ocsp__request_parse(const unsigned char *der, size_t len, int max_certids,
                        struct ocsp__parsed *out)
{
    const unsigned char *p = der;
    int n;
    int idx;

    memset(out, 0, sizeof(*out));
    out->status = OCSP_RESPONSE_STATUS_MALFORMEDREQUEST;
    if (len == 0 || len > OCSP_POST_DER_MAX)
        return UTIL_OK;
    ERR_clear_error();
    out->req = d2i_OCSP_REQUEST(NULL, &p, (long)len);
    if (out->req == NULL || p != der + len) /* a client's garbage, or out of memory: ours */
        return util_openssl_oom_clear() ? UTIL_ENOMEM : UTIL_OK;
    n = OCSP_request_onereq_count(out->req);
    if (n < 1 || n > max_certids)
        return UTIL_OK;
    out->ids = calloc((size_t)n, sizeof(*out->ids));
    if (out->ids == NULL)
        return UTIL_ENOMEM;
    out->n = n;
    for (int i = 0; i < n; i++) {
        struct ocsp__reqid *id = &out->ids[i];
        OCSP_ONEREQ *one = OCSP_request_onereq_get0(out->req, i);
        ASN1_OCTET_STRING *name_hash = NULL;
        ASN1_OCTET_STRING *key_hash = NULL;
        ASN1_OBJECT *md = NULL;
        ASN1_INTEGER *serial = NULL;

        id->cid = OCSP_onereq_get0_id(one);
        if (id->cid == NULL || OCSP_id_get0_info(&name_hash, &md, &key_hash, &serial, id->cid) != 1)
            return UTIL_OK;
        switch (certid_params_ok(id->cid)) {
        case 1: break;
        case 0: return UTIL_OK; /* malformedRequest */
        default: return UTIL_ENOMEM;
        }
        id->alg = alg_of(md);
        id->name_hash = ASN1_STRING_get0_data(name_hash);
        id->name_hash_len = (size_t)ASN1_STRING_length(name_hash);
        id->key_hash = ASN1_STRING_get0_data(key_hash);
        id->key_hash_len = (size_t)ASN1_STRING_length(key_hash);
        if (store_serial_from_asn1(serial, id->serial, &id->serial_len) != UTIL_OK)
            return UTIL_OK;
    }
    idx = OCSP_REQUEST_get_ext_by_NID(out->req, NID_id_pkix_OCSP_Nonce, -1);
    if (idx >= 0) {
        out->nonce = OCSP_REQUEST_get_ext(out->req, idx);
        out->nonce_len = nonce_length(out->nonce);
        if (out->nonce_len < OCSP__NONCE_MIN || out->nonce_len > OCSP__NONCE_MAX)
            return UTIL_OK;
    }
    out->status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
    return UTIL_OK;
}

/* ---- the plain request, read directly -------------------------------------------------------- */

/* One DER TLV at *p (before end) with tag: definite length, short form or minimal long form of at
 * most 2 octets. 1 with the content in *c / *clen and *p past it; 0 for anything else (then the
 * caller leaves the request to OpenSSL). */
static int plain_tlv(const unsigned char **p, const unsigned char *end, unsigned char tag,
                     const unsigned char **c, size_t *clen)
{
    const unsigned char *q = *p;
    size_t len, n;

    if (end - q < 2 || q[0] != tag)
        return 0;
    len = q[1];
    q += 2;
    if (len & 0x80) {
        n = len & 0x7f;
        if (n == 0 || n > 2 || (size_t)(end - q) < n || q[0] == 0)
            return 0;
        len = n == 1 ? q[0] : ((size_t)q[0] << 8 | q[1]);
        q += n;
        if (len < 128)
            return 0;
    }
    if ((size_t)(end - q) < len)
        return 0;
    *c = q;
    *clen = len;
    *p = q + len;
    return 1;
}

/* The content of the TLV that must fill [*p, end) exactly. */
static int plain_only(const unsigned char **p, const unsigned char *end, unsigned char tag,
                      const unsigned char **c, size_t *clen)
{
    return plain_tlv(p, end, tag, c, clen) && *p == end;
}

static const unsigned char oid_sha1[] = {0x2b, 0x0e, 0x03, 0x02, 0x1a};
static const unsigned char oid_sha256[] = {0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01};

static const unsigned char oid_nonce[] = {0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02};

/* requestExtensions [2] EXPLICIT Extensions filling [p, end), with exactly one Extension: the RFC
 * 9654 nonce, not marked critical (DER leaves a FALSE default out), its extnValue the DER of an
 * OCTET STRING of OCSP__NONCE_MIN..MAX octets. 1 with its TLV in *ext / *ext_len and the nonce
 * length in *nonce_len; 0 for anything else (a legacy unwrapped nonce, other extensions: OpenSSL
 * reads those). */
static int plain_nonce(const unsigned char *p, const unsigned char *end, const unsigned char **ext,
                       size_t *ext_len, size_t *nonce_len)
{
    const unsigned char *c, *e, *oid, *value, *inner;
    size_t n, oid_len, value_len, inner_len;

    if (!plain_only(&p, end, 0xa2, &c, &n) || !plain_only(&c, c + n, 0x30, &e, &n))
        return 0;
    *ext = e;
    p = e;
    if (!plain_only(&p, e + n, 0x30, &c, &n))
        return 0;
    *ext_len = (size_t)(p - e);
    if (!plain_tlv(&c, p, 0x06, &oid, &oid_len) || oid_len != sizeof(oid_nonce) ||
        memcmp(oid, oid_nonce, oid_len) != 0 || !plain_only(&c, p, 0x04, &value, &value_len) ||
        !plain_only(&value, value + value_len, 0x04, &inner, &inner_len))
        return 0;
    *nonce_len = inner_len;
    return inner_len >= OCSP__NONCE_MIN && inner_len <= OCSP__NONCE_MAX;
}

/* DESIGN: the request almost every client sends (RFC 5019: one CertID, SHA-1, no extensions, no
 * signature; or SHA-256; or the same with a nonce, as OpenSSL, GnuTLS and Windows send it) is read
 * here in place, without OpenSSL's template decoder: d2i, the re-encoding that checks the
 * hashAlgorithm parameters, and the free took 60% of the instructions of a pre-signed GET answer
 * (callgrind: 21.5 k of 35.7 k per request), and 27% of the HTTP loop's CPU per live-signed nonce
 * answer (perf). Only strict DER of exactly that shape is taken (minimal lengths, SHA-1 or
 * SHA-256 with parameters absent or NULL, a minimal INTEGER serial of 1..STORE_SERIAL_MAX octets,
 * at most one extension: a DER-wrapped nonce of 1..128 octets); anything else (a version, a
 * requestor name, other extensions, several CertIDs, other hashes, a signature, BER) returns 0
 * and goes through ocsp__request_parse as before, which accepts every request this accepts with
 * the same values and the same bytes to repeat (test corpus.plain_path_agrees_with_openssl, and
 * the fuzz target checks it, and the responses built both ways, on every input). */
int ocsp__request_parse_plain(const unsigned char *der, size_t len, struct ocsp__parsed *out)
{
    const unsigned char *p = der, *c, *tbs, *alg, *oid, *name, *key, *serial, *cid;
    size_t n, tbs_len, alg_len, oid_len, name_len, key_len, serial_len, cid_len;
    struct ocsp__reqid *id = &out->one;

    memset(out, 0, sizeof(*out));
    out->status = OCSP_RESPONSE_STATUS_MALFORMEDREQUEST;
    /* OCSPRequest { TBSRequest { requestList { Request { CertID } } [2] { nonce } } } */
    if (len > OCSP_POST_DER_MAX || !plain_only(&p, der + len, 0x30, &tbs, &tbs_len))
        return 0;
    p = tbs;
    if (!plain_only(&p, tbs + tbs_len, 0x30, &tbs, &tbs_len))
        return 0;
    p = tbs;
    if (!plain_tlv(&p, tbs + tbs_len, 0x30, &c, &n) ||
        (p != tbs + tbs_len &&
         !plain_nonce(p, tbs + tbs_len, &out->nonce_der, &out->nonce_der_len, &out->nonce_len)))
        return 0;
    p = c;
    if (!plain_only(&p, c + n, 0x30, &c, &n))
        return 0; /* one Request */
    cid = c;
    p = c;
    if (!plain_only(&p, c + n, 0x30, &c, &n))
        return 0; /* its CertID, no singleRequestExtensions */
    cid_len = (size_t)(p - cid);
    p = c;
    /* CertID { AlgorithmIdentifier { OID [NULL] }, nameHash, keyHash, serialNumber } */
    if (!plain_tlv(&p, c + n, 0x30, &alg, &alg_len) ||
        !plain_tlv(&p, c + n, 0x04, &name, &name_len) ||
        !plain_tlv(&p, c + n, 0x04, &key, &key_len) ||
        !plain_only(&p, c + n, 0x02, &serial, &serial_len))
        return 0;
    c = alg;
    if (!plain_tlv(&c, alg + alg_len, 0x06, &oid, &oid_len) ||
        !(c == alg + alg_len || (alg + alg_len - c == 2 && c[0] == 0x05 && c[1] == 0)))
        return 0;
    if (oid_len == sizeof(oid_sha1) && memcmp(oid, oid_sha1, oid_len) == 0)
        id->alg = OCSP__SHA1;
    else if (oid_len == sizeof(oid_sha256) && memcmp(oid, oid_sha256, oid_len) == 0)
        id->alg = OCSP__SHA256;
    else
        return 0;
    /* A minimal INTEGER: its octets are the serial as store_serial_from_asn1 gives it. */
    if (serial_len == 0 || serial_len > STORE_SERIAL_MAX ||
        (serial_len > 1 && ((serial[0] == 0x00 && (serial[1] & 0x80) == 0) ||
                            (serial[0] == 0xff && (serial[1] & 0x80) != 0))))
        return 0;
    id->name_hash = name;
    id->name_hash_len = name_len;
    id->key_hash = key;
    id->key_hash_len = key_len;
    memcpy(id->serial, serial, serial_len);
    id->serial_len = serial_len;
    id->cid_der = cid;
    id->cid_der_len = cid_len;
    out->ids = id;
    out->n = 1;
    out->status = OCSP_RESPONSE_STATUS_SUCCESSFUL;
    return 1;
}

int ocsp__request_parse_fast(const unsigned char *der, size_t len, int max_certids,
                             struct ocsp__parsed *out)
{
    if (max_certids < 1 || !ocsp__request_parse_plain(der, len, out))
        return ocsp__request_parse(der, len, max_certids, out);
    return UTIL_OK;
}

void ocsp__parsed_cleanup(struct ocsp__parsed *p)
{
    OCSP_REQUEST_free(p->req);
    if (p->ids != &p->one)
        free(p->ids);
    memset(p, 0, sizeof(*p));
}
