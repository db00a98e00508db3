/* SPDX-License-Identifier: Apache-2.0 */
/* The decoder of untrusted TSA input and the rejection encoder: checks a DER TimeStampReq against
 * what a unit accepts (on the loop thread, before any signing work is queued) and encodes every
 * rejection as a DER TimeStampResp with status, statusString and failInfo (RFC 3161 §2.4.2). */
#include "tsa_int.h"

#include <openssl/err.h>
#include <openssl/objects.h>
#include <string.h>

struct reject_text {
    int fail_info;
    const char *text;
};

/* Texts stay below 100 bytes so that every length in the encoding fits one octet. */
static const struct reject_text rejects[TSA__REJ_COUNT] = {
    [TSA__REJ_MALFORMED] = {TSA_FAIL_BAD_REQUEST, "request is not a DER TimeStampReq"},
    [TSA__REJ_VERSION] = {TSA_FAIL_BAD_REQUEST, "unsupported TimeStampReq version"},
    [TSA__REJ_TOO_LARGE] = {TSA_FAIL_BAD_REQUEST, "request too large"},
    [TSA__REJ_BAD_ALG] = {TSA_FAIL_BAD_ALG, "hash algorithm not accepted"},
    [TSA__REJ_ALG_PARAMS] = {TSA_FAIL_BAD_ALG, "hash algorithm parameters must be absent or NULL"},
    [TSA__REJ_IMPRINT_LENGTH] = {TSA_FAIL_BAD_DATA_FORMAT,
                                 "message imprint length does not match the hash algorithm"},
    [TSA__REJ_POLICY] = {TSA_FAIL_UNACCEPTED_POLICY, "requested policy not accepted"},
    [TSA__REJ_EXTENSION] = {TSA_FAIL_UNACCEPTED_EXTENSION, "request extensions are not supported"},
    [TSA__REJ_TIME] = {TSA_FAIL_TIME_NOT_AVAILABLE, "time source not synchronized"},
    [TSA__REJ_BUSY] = {TSA_FAIL_SYSTEM_FAILURE, "overloaded, try again later"},
    [TSA__REJ_SIGN] = {TSA_FAIL_SYSTEM_FAILURE, "signing failed"},
    [TSA__REJ_LOG] = {TSA_FAIL_SYSTEM_FAILURE, "token log unavailable"},
    [TSA__REJ_SERIALS] = {TSA_FAIL_SYSTEM_FAILURE, "serial numbers temporarily unavailable"},
    [TSA__REJ_INTERNAL] = {TSA_FAIL_SYSTEM_FAILURE, "internal error"},
    [TSA__REJ_STOPPING] = {TSA_FAIL_SYSTEM_FAILURE, "shutting down"},
    [TSA__REJ_CERT_EXPIRED] = {TSA_FAIL_SYSTEM_FAILURE, "TSA certificate expired"},
};

int tsa__reject_fail_info(int reason)
{
    if (reason < 0 || reason >= TSA__REJ_COUNT)
        return TSA_FAIL_SYSTEM_FAILURE;
    return rejects[reason].fail_info;
}

int tsa__reject_der(int reason, unsigned char *out, size_t out_max)
{
    unsigned char bits[8];
    size_t text_len, bits_len, info_len, n = 0;
    int bit;

    if (reason < 0 || reason >= TSA__REJ_COUNT)
        return UTIL_EINVAL;
    text_len = strlen(rejects[reason].text);
    bit = rejects[reason].fail_info;
    /* DER of a named BIT STRING drops trailing zero bits: the octet holding the only set bit is
     * the last one, and the bits after it in that octet are the unused ones. */
    bits_len = (size_t)bit / 8 + 1;
    memset(bits, 0, sizeof(bits));
    bits[bits_len - 1] = (unsigned char)(0x80u >> (bit % 8));
    /* PKIStatusInfo: INTEGER (3) + SEQUENCE OF UTF8String (2 + 2 + text) + BIT STRING. */
    info_len = 3 + (4 + text_len) + (3 + bits_len);
    if (info_len + 2 > 127 || out_max < info_len + 4)
        return UTIL_EINVAL;
    out[n++] = 0x30; /* TimeStampResp */
    out[n++] = (unsigned char)(info_len + 2);
    out[n++] = 0x30; /* PKIStatusInfo */
    out[n++] = (unsigned char)info_len;
    out[n++] = 0x02; /* status INTEGER rejection(2) */
    out[n++] = 0x01;
    out[n++] = 0x02;
    out[n++] = 0x30; /* statusString PKIFreeText */
    out[n++] = (unsigned char)(text_len + 2);
    out[n++] = 0x0c; /* UTF8String */
    out[n++] = (unsigned char)text_len;
    memcpy(out + n, rejects[reason].text, text_len);
    n += text_len;
    out[n++] = 0x03; /* failInfo BIT STRING */
    out[n++] = (unsigned char)(bits_len + 1);
    out[n++] = (unsigned char)(7 - bit % 8);
    memcpy(out + n, bits, bits_len);
    n += bits_len;
    return (int)n;
}

size_t tsa__md_len(int nid, int allow_weak)
{
    switch (nid) {
    case NID_sha256: return 32;
    case NID_sha384: return 48;
    case NID_sha512: return 64;
    case NID_sha3_256: return 32;
    case NID_sha3_384: return 48;
    case NID_sha3_512: return 64;
    case NID_sha1: return allow_weak ? 20 : 0;
    case NID_md5: return allow_weak ? 16 : 0;
    default: return 0;
    }
}

static int policy_index(const struct tsa__rules *rules, const ASN1_OBJECT *requested)
{
    if (requested == NULL || OBJ_cmp(requested, rules->policy) == 0)
        return -1;
    for (int i = 0; i < rules->n_accepted; i++) {
        if (OBJ_cmp(requested, rules->accepted[i]) == 0)
            return i;
    }
    return -2;
}

int tsa__query_check(const struct tsa__rules *rules, const unsigned char *der, size_t len,
                     struct tsa__query *out)
{
    return tsa__query_check_keep(rules, der, len, out, NULL);
}

int tsa__query_check_keep(const struct tsa__rules *rules, const unsigned char *der, size_t len,
                          struct tsa__query *out, TS_REQ **keep)
{
    TS_REQ *req = NULL;
    const unsigned char *p = der;
    TS_MSG_IMPRINT *mi = NULL;
    X509_ALGOR *alg = NULL;
    const ASN1_OBJECT *alg_oid = NULL;
    const void *param = NULL;
    int param_type = V_ASN1_UNDEF;
    ASN1_OCTET_STRING *imprint = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    size_t md_len;
    int rc = UTIL_OK;

    memset(out, 0, sizeof(*out));
    if (keep != NULL)
        *keep = NULL;
    out->reject = TSA__REJ_MALFORMED;
    out->policy_index = -1;
    if (der == NULL || len == 0 || len > (size_t)INT32_MAX)
        goto out;
    ERR_clear_error();
    req = d2i_TS_REQ(NULL, &p, (long)len);
    if (req == NULL) {
        /* Malformed input and allocation failure look alike here; only the latter is ours. */
        if (util_openssl_oom_clear())
            rc = UTIL_ENOMEM;
        goto out;
    }
    if (p != der + len) /* trailing bytes: not one DER TimeStampReq */
        goto out;
    if (TS_REQ_get_version(req) != 1) {
        out->reject = TSA__REJ_VERSION;
        goto out;
    }
    mi = TS_REQ_get_msg_imprint(req);
    alg = TS_MSG_IMPRINT_get_algo(mi);
    imprint = TS_MSG_IMPRINT_get_msg(mi);
    X509_ALGOR_get0(&alg_oid, &param_type, &param, alg);
    out->md_nid = OBJ_obj2nid(alg_oid);
    md_len = tsa__md_len(out->md_nid, rules->allow_weak_hashes);
    if (md_len == 0) {
        out->reject = TSA__REJ_BAD_ALG;
        goto out;
    }
    if (param_type != V_ASN1_UNDEF && param_type != V_ASN1_NULL) {
        out->reject = TSA__REJ_ALG_PARAMS;
        goto out;
    }
    if (imprint == NULL || (size_t)ASN1_STRING_length(imprint) != md_len) {
        out->reject = TSA__REJ_IMPRINT_LENGTH;
        goto out;
    }
    out->imprint_len = md_len;
    memcpy(out->imprint, ASN1_STRING_get0_data(imprint), md_len);
    out->policy_index = policy_index(rules, TS_REQ_get_policy_id(req));
    if (out->policy_index == -2) {
        out->reject = TSA__REJ_POLICY;
        goto out;
    }
    /* RFC 3161 §2.4.1: an extension the TSA does not recognise, "whether it is marked critical
     * or not critical", gets no token but unacceptedExtension. pkiva recognises none (as
     * OpenSSL's own TSA, whose default extension callback refuses every one). */
    exts = TS_REQ_get_exts(req);
    if (sk_X509_EXTENSION_num(exts) > 0) {
        out->reject = TSA__REJ_EXTENSION;
        goto out;
    }
    out->reject = -1;
    if (keep != NULL) {
        *keep = req;
        req = NULL;
    }
out:
    TS_REQ_free(req);
    ERR_clear_error(); /* the outcome is in *out; no later request may inherit these errors */
    return rc;
}
