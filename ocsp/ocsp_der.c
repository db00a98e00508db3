/* SPDX-License-Identifier: Apache-2.0 */
/* Signed OCSP responses encoded directly: what a signer's responses share (ResponderID,
 * signatureAlgorithm, certs) is taken once from a response OpenSSL built and signed; each response
 * then encodes only its SingleResponses, producedAt and extensions, has the key sign the
 * ResponseData and joins the pieces under DER headers.
 *
 * DESIGN: ocsp__response_build (OpenSSL's OCSP_basic_sign_ctx) per response builds an ASN.1 tree,
 * checks the key against the certificate, hashes the signer's public key for the ResponderID,
 * copies the certificate and encodes everything twice (to sign, then to send). Every nonce answer
 * and every pre-signed answer pays for it next to the signature itself.
 * Invariant: an encoded response is byte for byte the one ocsp__response_build makes for the same
 * ocsp__build, producedAt and signature. ocsp__sign_singles (ocsp_responder.c) proves it for each
 * signer on its first response (it re-encodes OpenSSL's response with OpenSSL's signature and
 * compares) and keeps OpenSSL's path when it does not hold; tests/ocsp checks it for every
 * response shape. */
#include "ocsp_int.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ocsp__tmpl {
    const unsigned char *rid; /* ResponderID TLV: [1] byName or [2] byKey */
    size_t rid_len;
    const unsigned char *alg; /* signatureAlgorithm TLV */
    size_t alg_len;
    const unsigned char *certs; /* [0] EXPLICIT SEQUENCE OF Certificate TLV; certs_len 0: none */
    size_t certs_len;
    unsigned char mem[]; /* the three, in this order */
};

/* id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1) */
static const unsigned char oid_basic[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x05,
                                          0x05, 0x07, 0x30, 0x01, 0x01};
/* Extension { id-pkix-ocsp-extended-revoke (1.3.6.1.5.5.7.48.1.9), OCTET STRING { NULL } } */
static const unsigned char ext_extended_revoke[] = {0x30, 0x0f, 0x06, 0x09, 0x2b, 0x06,
                                                    0x01, 0x05, 0x05, 0x07, 0x30, 0x01,
                                                    0x09, 0x04, 0x02, 0x05, 0x00};
/* the extnID of id-pkix-ocsp-archive-cutoff (1.3.6.1.5.5.7.48.1.6) and of invalidityDate
 * (2.5.29.24); their extnValue is an OCTET STRING around a GeneralizedTime */
static const unsigned char oid_archive_cutoff[] = {0x06, 0x09, 0x2b, 0x06, 0x01, 0x05,
                                                   0x05, 0x07, 0x30, 0x01, 0x06};
static const unsigned char oid_invalidity_date[] = {0x06, 0x03, 0x55, 0x1d, 0x18};

#define GT_TLV 17                     /* GeneralizedTime "YYYYMMDDHHMMSSZ" */
#define TIME_EXT_VALUE (2 + GT_TLV)   /* OCTET STRING { GeneralizedTime } */
#define MAX_DER_LEN ((size_t)1 << 24) /* headers below are written for lengths under 16 MiB */

/* ---- DER writing -------------------------------------------------------------------------- */

/* Size of a TLV with a one-octet tag around n content octets (n < MAX_DER_LEN). */
static size_t tlv(size_t n)
{
    return n + (n < 0x80 ? 2 : n < 0x100 ? 3 : n < 0x10000 ? 4 : 5);
}

static unsigned char *put_header(unsigned char *p, unsigned char tag, size_t n)
{
    *p++ = tag;
    if (n < 0x80) {
        *p++ = (unsigned char)n;
    } else if (n < 0x100) {
        *p++ = 0x81;
        *p++ = (unsigned char)n;
    } else if (n < 0x10000) {
        *p++ = 0x82;
        *p++ = (unsigned char)(n >> 8);
        *p++ = (unsigned char)n;
    } else {
        *p++ = 0x83;
        *p++ = (unsigned char)(n >> 16);
        *p++ = (unsigned char)(n >> 8);
        *p++ = (unsigned char)n;
    }
    return p;
}

static unsigned char *put(unsigned char *p, const void *d, size_t n)
{
    if (n > 0)
        memcpy(p, d, n);
    return p + n;
}

/* GeneralizedTime text of t, as OpenSSL's ASN1_GENERALIZEDTIME_set writes it (NUL-terminated). */
static int gt_text(int64_t t, char out[16])
{
    if (util_gentime(t, out) != UTIL_OK)
        return UTIL_EINVAL;
    out[UTIL_GENTIME_LEN] = '\0';
    return UTIL_OK;
}

static unsigned char *put_gt(unsigned char *p, const char text[16])
{
    p = put_header(p, 0x18, 15);
    return put(p, text, 15);
}

/* A buffer for a DER object of len octets: UTIL_EINVAL past what the headers here can say. */
static int der_alloc(size_t len, unsigned char **out)
{
    if (len >= MAX_DER_LEN)
        return UTIL_EINVAL;
    *out = OPENSSL_malloc(len);
    return *out != NULL ? UTIL_OK : UTIL_ENOMEM;
}

/* The writers stopped at p, want octets after start: else sizes and writers disagree (a bug). */
static int check_written(const unsigned char *start, const unsigned char *p, size_t want)
{
    if ((size_t)(p - start) == want)
        return UTIL_OK;
    UTIL_ERROR(OCSP_MOD, "response encoder: %zu octets written for %zu", (size_t)(p - start), want);
    return UTIL_EINVAL;
}

/* Extension { extnID, OCTET STRING { GeneralizedTime } } */
static unsigned char *put_time_ext(unsigned char *p, const unsigned char *oid, size_t oid_len,
                                   const char text[16])
{
    p = put_header(p, 0x30, oid_len + TIME_EXT_VALUE);
    p = put(p, oid, oid_len);
    p = put_header(p, 0x04, GT_TLV);
    return put_gt(p, text);
}

/* ---- DER reading (the reference response) ------------------------------------------------- */

struct span {
    unsigned char tag;        /* the identifier octet */
    const unsigned char *all; /* the whole TLV */
    size_t all_len;
    const unsigned char *c; /* its content */
    size_t n;
};

/* The TLV at *p (below end), definite length only; advances *p past it. */
static int next_tlv(const unsigned char **p, const unsigned char *end, struct span *s)
{
    const unsigned char *q = *p;
    long n = 0;
    int tag, xclass, r;

    if (q >= end)
        return 0;
    r = ASN1_get_object(&q, &n, &tag, &xclass, (long)(end - *p));
    if ((r & 0x80) != 0 || (r & 0x01) != 0 || tag > 30) {
        ERR_clear_error();
        return 0;
    }
    s->tag = **p;
    s->all = *p;
    s->c = q;
    s->n = (size_t)n;
    s->all_len = (size_t)(q - *p) + s->n;
    *p = q + n;
    return 1;
}

/* Enters a constructed TLV with the given tag: *p and *end become its content. */
static int enter(const unsigned char **p, const unsigned char **end, unsigned char tag,
                 struct span *s)
{
    if (!next_tlv(p, *end, s) || s->tag != tag)
        return 0;
    *p = s->c;
    *end = s->c + s->n;
    return 1;
}

void ocsp__tmpl_free(struct ocsp__tmpl *t)
{
    free(t);
}

int ocsp__tmpl_from_response(const unsigned char *der, size_t len, struct ocsp__tmpl **out,
                             int64_t *produced_at, const unsigned char **sig, size_t *sig_len)
{
    const unsigned char *p = der, *end = der + len, *basic_end, *tbs_end, *tp;
    struct span s, rid, produced, alg, bits, certs;
    ASN1_GENERALIZEDTIME *gt = NULL;
    struct ocsp__tmpl *t;
    int ok;

    *out = NULL;
    memset(&certs, 0, sizeof(certs));
    /* OCSPResponse { successful, [0] { SEQUENCE { id-pkix-ocsp-basic, OCTET STRING } } } */
    ok = enter(&p, &end, 0x30, &s) && next_tlv(&p, end, &s) && s.tag == 0x0a && s.n == 1 &&
         s.c[0] == 0 && enter(&p, &end, 0xa0, &s) && enter(&p, &end, 0x30, &s) &&
         next_tlv(&p, end, &s) && s.all_len == sizeof(oid_basic) &&
         memcmp(s.all, oid_basic, sizeof(oid_basic)) == 0 && next_tlv(&p, end, &s) &&
         s.tag == 0x04 && p == end;
    if (!ok)
        return UTIL_EINVAL;
    /* BasicOCSPResponse { tbsResponseData, signatureAlgorithm, signature, [0] certs OPTIONAL } */
    p = s.c;
    end = s.c + s.n;
    if (!next_tlv(&p, end, &s) || s.tag != 0x30 || p != end) /* the OCTET STRING, all of it */
        return UTIL_EINVAL;
    p = s.c;
    end = s.c + s.n;
    basic_end = end;
    tp = p;
    tbs_end = basic_end;
    if (!enter(&tp, &tbs_end, 0x30, &s))
        return UTIL_EINVAL;
    p = s.c + s.n; /* past tbsResponseData */
    /* ResponseData { responderID, producedAt, ... }: no version (v1 is the default) */
    ok = next_tlv(&tp, tbs_end, &rid) && (rid.tag == 0xa1 || rid.tag == 0xa2) &&
         next_tlv(&tp, tbs_end, &produced) && produced.tag == 0x18 && produced.n == 15 &&
         next_tlv(&p, basic_end, &alg) && alg.tag == 0x30 && next_tlv(&p, basic_end, &bits) &&
         bits.tag == 0x03 && bits.n >= 2 && bits.c[0] == 0;
    if (ok && p < basic_end)
        ok = next_tlv(&p, basic_end, &certs) && certs.tag == 0xa0 && p == basic_end;
    if (!ok)
        return UTIL_EINVAL;
    tp = produced.all;
    gt = d2i_ASN1_GENERALIZEDTIME(NULL, &tp, (long)produced.all_len);
    ok = gt != NULL && util_asn1_time_unix(gt, produced_at) == UTIL_OK;
    ASN1_GENERALIZEDTIME_free(gt);
    ERR_clear_error();
    if (!ok)
        return UTIL_EINVAL;

    t = malloc(sizeof(*t) + rid.all_len + alg.all_len + certs.all_len);
    if (t == NULL)
        return UTIL_ENOMEM;
    t->rid = t->mem;
    t->rid_len = rid.all_len;
    t->alg = t->rid + t->rid_len;
    t->alg_len = alg.all_len;
    t->certs = t->alg + t->alg_len;
    t->certs_len = certs.all_len;
    memcpy(t->mem, rid.all, rid.all_len);
    memcpy(t->mem + rid.all_len, alg.all, alg.all_len);
    if (certs.all_len > 0)
        memcpy(t->mem + rid.all_len + alg.all_len, certs.all, certs.all_len);
    *sig = bits.c + 1;
    *sig_len = bits.n - 1;
    *out = t;
    return UTIL_OK;
}

/* ---- encoding a response ------------------------------------------------------------------ */

struct enc_single {
    unsigned char *cid_owned; /* i2d of the CertID (OPENSSL_malloc'd), or NULL */
    const unsigned char *cid; /* cid_owned, or the client's CertID DER (ocsp__single.cid_der) */
    size_t cid_len;
    size_t status_len;  /* the certStatus TLV */
    size_t revoked_len; /* RevokedInfo content */
    int reason;         /* revoked: CRLReason, -1 = none */
    size_t exts_len;    /* the SEQUENCE OF Extension content; 0 = no singleExtensions */
    size_t len;         /* the SingleResponse content */
    char revoked_at[16], invalidity[16];
};

int ocsp__sign_mctx(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                    size_t *sig_len)
{
    EVP_MD_CTX *mctx = arg;
    unsigned char *buf;
    size_t n = 0;

    ERR_clear_error();
    if (EVP_DigestSign(mctx, NULL, &n, tbs, len) != 1 || n == 0)
        goto fail;
    buf = OPENSSL_malloc(n);
    if (buf == NULL)
        return UTIL_ENOMEM;
    if (EVP_DigestSign(mctx, buf, &n, tbs, len) != 1) {
        OPENSSL_free(buf);
        goto fail;
    }
    *sig = buf;
    *sig_len = n;
    return UTIL_OK;
fail:
    util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "signing a response failed");
    return UTIL_EHSM;
}

int ocsp__sign_replay(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                      size_t *sig_len)
{
    const struct ocsp__replay *r = arg;

    (void)tbs;
    (void)len;
    *sig = OPENSSL_malloc(r->len > 0 ? r->len : 1);
    if (*sig == NULL)
        return UTIL_ENOMEM;
    memcpy(*sig, r->sig, r->len);
    *sig_len = r->len;
    return UTIL_OK;
}

/* Sizes one SingleResponse as ocsp__response_build lays it out (OCSP_basic_add1_status, then the
 * archiveCutoff and invalidityDate singleExtensions in that order). */
static int size_single(const struct ocsp__single *s, int has_cutoff, struct enc_single *e)
{
    if (s->cid == NULL && s->cid_der != NULL) {
        e->cid = s->cid_der;
        e->cid_len = s->cid_der_len;
    } else {
        int len = i2d_OCSP_CERTID(s->cid, &e->cid_owned);
        if (len <= 0)
            return UTIL_ENOMEM;
        e->cid = e->cid_owned;
        e->cid_len = (size_t)len;
    }
    e->reason = -1;
    if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED) {
        if (gt_text(s->revoked_at, e->revoked_at) != UTIL_OK)
            return UTIL_EINVAL;
        /* RFC 5280 §5.3.1: unspecified is expressed by leaving the reason out */
        if (s->reason != STORE_REASON_NONE && s->reason != STORE_REASON_UNSPECIFIED) {
            if (s->reason < 0 || s->reason > 127)
                return UTIL_EINVAL;
            e->reason = s->reason;
        }
        e->revoked_len = GT_TLV + (e->reason >= 0 ? 5 : 0); /* [0] { ENUMERATED } */
        e->status_len = tlv(e->revoked_len);
    } else if (s->cert_status == V_OCSP_CERTSTATUS_GOOD ||
               s->cert_status == V_OCSP_CERTSTATUS_UNKNOWN) {
        e->status_len = 2; /* [0] or [2] IMPLICIT NULL */
    } else {
        return UTIL_EINVAL;
    }
    e->exts_len = 0;
    if (has_cutoff)
        e->exts_len += tlv(sizeof(oid_archive_cutoff) + TIME_EXT_VALUE);
    if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED && s->invalidity_date > 0) {
        if (gt_text(s->invalidity_date, e->invalidity) != UTIL_OK)
            return UTIL_EINVAL;
        e->exts_len += tlv(sizeof(oid_invalidity_date) + TIME_EXT_VALUE);
    }
    e->len = e->cid_len + e->status_len + GT_TLV + tlv(GT_TLV) +
             (e->exts_len > 0 ? tlv(tlv(e->exts_len)) : 0);
    return UTIL_OK;
}

static unsigned char *put_single(unsigned char *p, const struct ocsp__single *s,
                                 const struct enc_single *e, const char this_update[16],
                                 const char next_update[16], const char *cutoff)
{
    p = put_header(p, 0x30, e->len);
    p = put(p, e->cid, e->cid_len);
    if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED) {
        p = put_header(p, 0xa1, e->revoked_len);
        p = put_gt(p, e->revoked_at);
        if (e->reason >= 0) {
            static const unsigned char reason_hdr[] = {0xa0, 0x03, 0x0a, 0x01};
            p = put(p, reason_hdr, sizeof(reason_hdr));
            *p++ = (unsigned char)e->reason;
        }
    } else {
        *p++ = s->cert_status == V_OCSP_CERTSTATUS_GOOD ? 0x80 : 0x82;
        *p++ = 0x00;
    }
    p = put_gt(p, this_update);
    p = put_header(p, 0xa0, GT_TLV);
    p = put_gt(p, next_update);
    if (e->exts_len > 0) {
        p = put_header(p, 0xa1, tlv(e->exts_len));
        p = put_header(p, 0x30, e->exts_len);
        if (cutoff != NULL)
            p = put_time_ext(p, oid_archive_cutoff, sizeof(oid_archive_cutoff), cutoff);
        if (s->cert_status == V_OCSP_CERTSTATUS_REVOKED && s->invalidity_date > 0)
            p = put_time_ext(p, oid_invalidity_date, sizeof(oid_invalidity_date), e->invalidity);
    }
    return p;
}

int ocsp__tmpl_build(const struct ocsp__tmpl *t, const struct ocsp__build *b, int64_t produced_at,
                     ocsp__sign_fn sign, void *sign_arg, unsigned char **der, size_t *len)
{
    struct enc_single *es = NULL;
    unsigned char *nonce_owned = NULL, *tbs = NULL, *sig = NULL, *out = NULL, *p;
    const unsigned char *nonce = b->nonce_der;
    size_t nonce_len = b->nonce_der != NULL ? b->nonce_der_len : 0, sig_len = 0, singles_len = 0,
           rext_len = 0, tbs_content, tbs_len;
    size_t basic_len, bytes_len, total;
    char produced[16], this_update[16], next_update[16], cutoff[16];
    int extended_revoke = 0, rc = UTIL_ENOMEM;

    *der = NULL;
    *len = 0;
    if (b->n < 1 || gt_text(produced_at, produced) != UTIL_OK ||
        gt_text(b->this_update, this_update) != UTIL_OK ||
        gt_text(b->next_update, next_update) != UTIL_OK ||
        (b->archive_cutoff_seconds > 0 &&
         gt_text(b->this_update - b->archive_cutoff_seconds, cutoff) != UTIL_OK))
        return UTIL_EINVAL;
    es = calloc((size_t)b->n, sizeof(*es));
    if (es == NULL)
        return UTIL_ENOMEM;
    for (int i = 0; i < b->n; i++) {
        rc = size_single(&b->singles[i], b->archive_cutoff_seconds > 0, &es[i]);
        if (rc != UTIL_OK)
            goto out;
        singles_len += tlv(es[i].len);
        extended_revoke |= b->singles[i].extended_revoke;
    }
    /* responseExtensions: the request's nonce extension as it came (OCSP_copy_nonce), then
     * extended-revoke */
    if (b->nonce_der == NULL && b->nonce_from != NULL) {
        int idx = OCSP_REQUEST_get_ext_by_NID(b->nonce_from, NID_id_pkix_OCSP_Nonce, -1);
        if (idx >= 0) {
            int n = i2d_X509_EXTENSION(OCSP_REQUEST_get_ext(b->nonce_from, idx), &nonce_owned);
            rc = UTIL_ENOMEM;
            if (n <= 0)
                goto out;
            nonce = nonce_owned;
            nonce_len = (size_t)n;
        }
    }
    rext_len = nonce_len + (extended_revoke ? sizeof(ext_extended_revoke) : 0);
    tbs_content = t->rid_len + GT_TLV + tlv(singles_len) + (rext_len > 0 ? tlv(tlv(rext_len)) : 0);
    tbs_len = tlv(tbs_content);
    rc = der_alloc(tbs_len, &tbs);
    if (rc != UTIL_OK)
        goto out;
    /* ResponseData { responderID, producedAt, responses, [1] responseExtensions } */
    p = put_header(tbs, 0x30, tbs_content);
    p = put(p, t->rid, t->rid_len);
    p = put_gt(p, produced);
    p = put_header(p, 0x30, singles_len);
    for (int i = 0; i < b->n; i++)
        p = put_single(p, &b->singles[i], &es[i], this_update, next_update,
                       b->archive_cutoff_seconds > 0 ? cutoff : NULL);
    if (rext_len > 0) {
        p = put_header(p, 0xa1, tlv(rext_len));
        p = put_header(p, 0x30, rext_len);
        p = put(p, nonce, nonce_len);
        if (extended_revoke)
            p = put(p, ext_extended_revoke, sizeof(ext_extended_revoke));
    }
    rc = check_written(tbs, p, tbs_len);
    if (rc != UTIL_OK)
        goto out;

    rc = sign(sign_arg, tbs, tbs_len, &sig, &sig_len);
    if (rc != UTIL_OK)
        goto out;
    /* BasicOCSPResponse { tbsResponseData, signatureAlgorithm, BIT STRING, [0] certs }, inside
     * OCSPResponse { successful, [0] { SEQUENCE { id-pkix-ocsp-basic, OCTET STRING } } } */
    basic_len = tlv(tbs_len + t->alg_len + tlv(1 + sig_len) + t->certs_len);
    bytes_len = sizeof(oid_basic) + tlv(basic_len);
    total = tlv(3 + tlv(tlv(bytes_len)));
    rc = der_alloc(total, &out);
    if (rc != UTIL_OK)
        goto out;
    p = put_header(out, 0x30, 3 + tlv(tlv(bytes_len)));
    *p++ = 0x0a;
    *p++ = 0x01;
    *p++ = 0x00; /* successful */
    p = put_header(p, 0xa0, tlv(bytes_len));
    p = put_header(p, 0x30, bytes_len);
    p = put(p, oid_basic, sizeof(oid_basic));
    p = put_header(p, 0x04, basic_len);
    p = put_header(p, 0x30, tbs_len + t->alg_len + tlv(1 + sig_len) + t->certs_len);
    p = put(p, tbs, tbs_len);
    p = put(p, t->alg, t->alg_len);
    p = put_header(p, 0x03, 1 + sig_len);
    *p++ = 0x00; /* no unused bits */
    p = put(p, sig, sig_len);
    p = put(p, t->certs, t->certs_len);
    rc = check_written(out, p, total);
    if (rc != UTIL_OK)
        goto out;
    *der = out;
    *len = total;
    out = NULL;
    rc = UTIL_OK;
out:
    for (int i = 0; es != NULL && i < b->n; i++)
        OPENSSL_free(es[i].cid_owned);
    free(es);
    OPENSSL_free(nonce_owned);
    OPENSSL_free(tbs);
    OPENSSL_free(sig);
    OPENSSL_free(out);
    return rc;
}
