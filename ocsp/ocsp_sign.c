/* SPDX-License-Identifier: Apache-2.0 */
/* Building OCSP responses: the BasicOCSPResponse for a set of SingleResponses, signed through a
 * DigestSign context (the HSM's in production), the constant unsigned error responses, and the
 * immutable cached form (DER + ETag + HTTP validator headers) that loop threads serve by reference. */
#include "ocsp_int.h"

#include <http/http.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* id-pkix-ocsp-extended-revoke (RFC 6960 §4.4.8); OpenSSL 3.0 has no NID for it. */
#define OID_EXTENDED_REVOKE "1.3.6.1.5.5.7.48.1.9"

struct ocsp__cached *ocsp__cached_new_no_store(const unsigned char *der, size_t len,
                                               int64_t this_update, int64_t next_update,
                                               int64_t refresh_at, int cert_status)
{
    struct ocsp__cached *c = calloc(1, sizeof(*c)); /* etag and headers stay "" */

    if (c == NULL)
        return NULL;
    c->der = util_blob_new(der, len);
    if (c->der == NULL) {
        free(c);
        return NULL;
    }
    atomic_init(&c->refs, 1);
    c->this_update = this_update;
    c->next_update = next_update;
    c->refresh_at = refresh_at;
    c->cert_status = cert_status;
    return c;
}

struct ocsp__cached *ocsp__cached_new(const unsigned char *der, size_t len, int64_t this_update,
                                      int64_t next_update, int64_t refresh_at, int cert_status)
{
    struct ocsp__cached *c =
        ocsp__cached_new_no_store(der, len, this_update, next_update, refresh_at, cert_status);
    unsigned char digest[32];
    char hex[33];
    char last_modified[40], expires[40];
    int n;

    if (c == NULL)
        return NULL;
    /* A strong validator: the response bytes' own hash (128 bits are plenty for an ETag). */
    if (EVP_Digest(der, len, digest, NULL, EVP_sha256(), NULL) != 1) {
        ERR_clear_error();
        memset(digest, 0, sizeof(digest)); /* never happens with the default provider */
    }
    util_hex(digest, 16, hex);
    (void)snprintf(c->etag, sizeof(c->etag), "\"%s\"", hex); /* 34 chars fit */
    http_date_format(this_update, last_modified, sizeof(last_modified));
    http_date_format(next_update, expires, sizeof(expires));
    n = snprintf(c->headers, sizeof(c->headers), /* 130 chars at most: fits */
                 "Last-Modified: %s\r\nExpires: %s\r\nETag: %s\r\n", last_modified, expires,
                 c->etag);
    c->headers_len = n > 0 && (size_t)n < sizeof(c->headers) ? (size_t)n : strlen(c->headers);
    return c;
}

struct ocsp__cached *ocsp__cached_ref(struct ocsp__cached *c)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    return c;
}

void ocsp__cached_unref(struct ocsp__cached *c)
{
    if (c == NULL)
        return;
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
        util_blob_unref(c->der);
        free(c);
    }
}

size_t ocsp__cached_cost(const struct ocsp__cached *c)
{
    return sizeof(*c) + sizeof(struct util_blob) + c->der->len;
}

/* ---- error responses ------------------------------------------------------------------------ */

/* OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED } without responseBytes. */
static const unsigned char err_der[7][5] = {
    {0x30, 0x03, 0x0a, 0x01, 0x00}, {0x30, 0x03, 0x0a, 0x01, 0x01}, {0x30, 0x03, 0x0a, 0x01, 0x02},
    {0x30, 0x03, 0x0a, 0x01, 0x03}, {0x30, 0x03, 0x0a, 0x01, 0x04}, {0x30, 0x03, 0x0a, 0x01, 0x05},
    {0x30, 0x03, 0x0a, 0x01, 0x06},
};

const unsigned char *ocsp__error_der(int response_status, size_t *len)
{
    if (response_status < 1 || response_status > 6 || response_status == 4)
        response_status = OCSP_RESPONSE_STATUS_INTERNALERROR;
    *len = sizeof(err_der[0]);
    return err_der[response_status];
}

/* ---- signed responses ----------------------------------------------------------------------- */

void ocsp__single_cleanup(struct ocsp__single *s)
{
    OCSP_CERTID_free(s->cid);
    s->cid = NULL;
}

/* OCSP_basic_add1_status for s, whose CertID is an OCSP_CERTID or the client's DER of one. */
static OCSP_SINGLERESP *add_status(OCSP_BASICRESP *bs, const struct ocsp__single *s, int reason,
                                   ASN1_TIME *revoked_at, ASN1_TIME *this_update,
                                   ASN1_TIME *next_update)
{
    OCSP_CERTID *cid = s->cid;
    OCSP_SINGLERESP *single;

    if (cid == NULL && s->cid_der != NULL) {
        const unsigned char *p = s->cid_der;
        cid = d2i_OCSP_CERTID(NULL, &p, (long)s->cid_der_len);
        if (cid == NULL)
            return NULL;
    }
    single = OCSP_basic_add1_status(bs, cid, s->cert_status, reason, revoked_at, this_update,
                                    next_update);
    if (cid != s->cid)
        OCSP_CERTID_free(cid);
    return single;
}

/* The request's nonce Extension, given as its DER, into the response's extensions (what
 * OCSP_copy_nonce does with a parsed request). */
static int add_nonce_der(OCSP_BASICRESP *bs, const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509_EXTENSION *ext = d2i_X509_EXTENSION(NULL, &p, (long)len);
    int ok = ext != NULL && OCSP_BASICRESP_add_ext(bs, ext, -1) == 1;

    X509_EXTENSION_free(ext);
    return ok ? UTIL_OK : UTIL_ECRYPTO;
}

static int add_extended_revoke(OCSP_BASICRESP *bs)
{
    static const unsigned char der_null[2] = {0x05, 0x00};
    ASN1_OBJECT *obj = NULL;
    ASN1_OCTET_STRING *value = NULL;
    X509_EXTENSION *ext = NULL;
    int rc = UTIL_ECRYPTO;

    obj = OBJ_txt2obj(OID_EXTENDED_REVOKE, 1);
    value = ASN1_OCTET_STRING_new();
    if (obj == NULL || value == NULL || !ASN1_OCTET_STRING_set(value, der_null, sizeof(der_null)))
        goto out;
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value);
    if (ext == NULL || !OCSP_BASICRESP_add_ext(bs, ext, -1))
        goto out;
    rc = UTIL_OK;
out:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(obj);
    return rc;
}

/* Replaces the signature OCSP_basic_sign_ctx made (with a software twin of the key) by b->resign's
 * over the same tbsResponseData. OpenSSL 3.0 has no setter for a BasicOCSPResponse's signature;
 * OCSP_resp_get0_signature returns the response's own BIT STRING (its unused-bits flags already
 * set by the signing), so it is written in place. */
static int resign(const struct ocsp__build *b, OCSP_BASICRESP *bs)
{
    unsigned char *tbs = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int tbs_len;
    int rc;

    tbs_len = i2d_OCSP_RESPDATA((OCSP_RESPDATA *)OCSP_resp_get0_respdata(bs), &tbs);
    if (tbs_len <= 0)
        return UTIL_ENOMEM;
    rc = b->resign(b->resign_arg, tbs, (size_t)tbs_len, &sig, &sig_len);
    if (rc == UTIL_OK && sig_len > INT_MAX)
        rc = UTIL_EINVAL; /* not reached: signatures are a few hundred bytes */
    if (rc == UTIL_OK && ASN1_BIT_STRING_set((ASN1_BIT_STRING *)OCSP_resp_get0_signature(bs), sig,
                                             (int)sig_len) != 1)
        rc = UTIL_ENOMEM;
    OPENSSL_free(sig);
    OPENSSL_free(tbs);
    return rc;
}

int ocsp__response_build(const struct ocsp__build *b, EVP_MD_CTX *mctx, unsigned char **der,
                         size_t *len)
{
    OCSP_BASICRESP *bs = NULL;
    OCSP_RESPONSE *rsp = NULL;
    ASN1_TIME *this_update = NULL;
    ASN1_TIME *next_update = NULL;
    ASN1_TIME *revoked_at = NULL;
    ASN1_GENERALIZEDTIME *cutoff = NULL;
    unsigned char *out = NULL;
    unsigned long flags = 0;
    int extended_revoke = 0;
    int out_len;
    int rc = UTIL_ECRYPTO;

    *der = NULL;
    *len = 0;
    ERR_clear_error();
    bs = OCSP_BASICRESP_new();
    this_update = ASN1_GENERALIZEDTIME_set(NULL, (time_t)b->this_update);
    next_update = ASN1_GENERALIZEDTIME_set(NULL, (time_t)b->next_update);
    if (bs == NULL || this_update == NULL || next_update == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (b->archive_cutoff_seconds > 0) {
        cutoff =
            ASN1_GENERALIZEDTIME_set(NULL, (time_t)(b->this_update - b->archive_cutoff_seconds));
        if (cutoff == NULL)
            goto out;
    }
    for (int i = 0; i < b->n; i++) {
        const struct ocsp__single *s = &b->singles[i];
        OCSP_SINGLERESP *single;
        int reason = OCSP_REVOKED_STATUS_NOSTATUS;

        ASN1_TIME_free(revoked_at);
        revoked_at = NULL;
        if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED) {
            revoked_at = ASN1_GENERALIZEDTIME_set(NULL, (time_t)s->revoked_at);
            if (revoked_at == NULL)
                goto out;
            /* RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out */
            if (s->reason != STORE_REASON_NONE && s->reason != STORE_REASON_UNSPECIFIED)
                reason = s->reason;
        }
        extended_revoke |= s->extended_revoke;
        single = add_status(bs, s, reason, revoked_at, this_update, next_update);
        if (single == NULL)
            goto out;
        if (cutoff != NULL &&
            !OCSP_SINGLERESP_add1_ext_i2d(single, NID_id_pkix_OCSP_archiveCutoff, cutoff, 0, 0))
            goto out;
        /* RFC 6960 4.4.7: CRL entry extensions may be singleExtensions; the invalidity date
         * tells a relying party from when signatures by the key are suspect. */
        if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED && s->invalidity_date > 0) {
            ASN1_GENERALIZEDTIME *inv = ASN1_GENERALIZEDTIME_set(NULL, (time_t)s->invalidity_date);
            int ok = inv != NULL &&
                     OCSP_SINGLERESP_add1_ext_i2d(single, NID_invalidity_date, inv, 0, 0) == 1;
            ASN1_GENERALIZEDTIME_free(inv);
            if (!ok)
                goto out;
        }
    }
    if (b->nonce_der != NULL ? add_nonce_der(bs, b->nonce_der, b->nonce_der_len) != UTIL_OK
                             : b->nonce_from != NULL && OCSP_copy_nonce(bs, b->nonce_from) == 0)
        goto out;
    if (extended_revoke && add_extended_revoke(bs) != UTIL_OK)
        goto out;

    if (!b->include_signer)
        flags |= OCSP_NOCERTS;
    if (!b->by_name)
        flags |= OCSP_RESPID_KEY;
    if (!OCSP_basic_sign_ctx(bs, b->signer_cert, mctx, NULL, flags)) {
        /* Logged at out, with OpenSSL's reasons, when it is UTIL_ECRYPTO. With resign, mctx is pkcs11-provider's, which hides the PKCS#11 error: not known to be
         * the token's (the caller asks hsm_blame_blocking). Without, a software key's. */
        if (b->resign == NULL)
            util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "signing a response failed");
        rc = b->resign != NULL ? UTIL_ECRYPTO : UTIL_EHSM;
        goto out;
    }
    if (b->resign != NULL) {
        rc = resign(b, bs);
        if (rc != UTIL_OK)
            goto out;
        rc = UTIL_ECRYPTO;
    }
    rsp = OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, bs);
    if (rsp == NULL)
        goto out;
    out_len = i2d_OCSP_RESPONSE(rsp, &out);
    if (out_len <= 0)
        goto out;
    *der = out;
    *len = (size_t)out_len;
    out = NULL;
    rc = UTIL_OK;
out:
    if (rc == UTIL_ECRYPTO || rc == UTIL_ENOMEM)
        util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "building a response failed: %s",
                         util_strerror(rc));
    OPENSSL_free(out);
    OCSP_RESPONSE_free(rsp);
    OCSP_BASICRESP_free(bs);
    ASN1_TIME_free(this_update);
    ASN1_TIME_free(next_update);
    ASN1_TIME_free(revoked_at);
    ASN1_GENERALIZEDTIME_free(cutoff);
    return rc;
}
