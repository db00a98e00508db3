/* SPDX-License-Identifier: Apache-2.0 */
/* Time-stamp tokens from a per-unit template. Everything in a unit's tokens that never changes
 * (certificates, signer identifier, algorithm identifiers, the contentType and signingCertificateV2
 * attributes, accuracy, tsa name, policy OIDs) is DER-encoded once, by OpenSSL, from a reference
 * token that OpenSSL's TS_RESP_create_response signs at start-up; each token then encodes only
 * what changes (serial, genTime, imprint and nonce of the TSTInfo; signingTime and messageDigest),
 * has the HSM sign its attributes and joins the pieces under DER headers written by OpenSSL's
 * ASN1_put_object.
 *
 * DESIGN: TS_RESP_create_response per token re-parses the request, checks the key against the
 * certificate, hashes the certificate for ESSCertIDv2, builds a PKCS7 tree through a BIO chain and
 * encodes it: about 38 us of CPU per token on the benchmark machine, as much as a P-256 signature,
 * on cores that a soft token shares. The template path does the same encoding work once.
 * Invariant: a template token is byte for byte the token OpenSSL would make for the same request,
 * serial, time and signature. tsa__tmpl_init_blocking proves it for the unit's own settings at
 * start-up (it rebuilds the reference token from the template with the reference's signature and
 * compares the bytes) and falls back to OpenSSL's path when it does not hold; tests/tsa checks it
 * for every unit option, with deterministic RSA signatures byte for byte. */
#include "tsa_int.h"

#include <openssl/err.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SELF_CHECK_TRIES 3 /* a second boundary between genTime and OpenSSL's signingTime: retry */

/* ---- DER helpers --------------------------------------------------------------------------------
 * Lengths here are far below INT_MAX (a token is a few KiB, bounded by max_query_bytes and the
 * certificates), so the int casts for OpenSSL's DER functions cannot truncate. */

/* Size of a TLV with a low tag number (all of ours) around n content octets. */
static size_t tlv_size(size_t n)
{
    return (size_t)ASN1_object_size(1, (int)n, V_ASN1_SEQUENCE);
}

static unsigned char *put_header(unsigned char *p, int constructed, size_t n, int tag, int xclass)
{
    ASN1_put_object(&p, constructed, (int)n, tag, xclass);
    return p;
}

static unsigned char *put_der(unsigned char *p, const struct tsa__der *d)
{
    if (d->n > 0)
        memcpy(p, d->p, d->n);
    return p + d->n;
}

static void der_free(struct tsa__der *d)
{
    OPENSSL_free(d->p);
    d->p = NULL;
    d->n = 0;
}

/* Takes the result of an i2d_...(x, pp) call with *pp == NULL. pp, not *pp: the call's arguments
 * are evaluated in no set order, and *pp is set by the i2d call. */
static int der_take(struct tsa__der *d, int len, unsigned char **pp)
{
    unsigned char *p = *pp;

    if (len <= 0 || p == NULL) {
        OPENSSL_free(p);
        return 0;
    }
    d->p = p;
    d->n = (size_t)len;
    return 1;
}

static int der_concat(struct tsa__der *d, const struct tsa__der *a, const struct tsa__der *b,
                      const struct tsa__der *c)
{
    size_t n = a->n + b->n + (c != NULL ? c->n : 0);
    unsigned char *p = OPENSSL_malloc(n);

    if (p == NULL)
        return 0;
    d->p = p;
    d->n = n;
    p = put_der(p, a);
    p = put_der(p, b);
    if (c != NULL)
        (void)put_der(p, c); /* the end */
    return 1;
}

/* OpenSSL's DER SET OF order (crypto/asn1/tasn_enc.c der_cmp): octets, then length. */
static int der_cmp(const void *a, const void *b)
{
    const struct tsa__der *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->p, y->p, n);

    if (c != 0)
        return c;
    return (x->n > y->n) - (x->n < y->n);
}

/* ---- the template -------------------------------------------------------------------------- */

void tsa__tmpl_cleanup(struct tsa__tmpl *t)
{
    struct tsa__der *all[] = {&t->status,
                              &t->tst_version,
                              &t->accuracy,
                              &t->tsa_name,
                              &t->sd_head,
                              &t->certs,
                              &t->si_head,
                              &t->si_sig_alg,
                              &t->attr_content_type,
                              &t->attr_signing_cert,
                              &t->oid_signing_time,
                              &t->oid_message_digest,
                              &t->oid_tst_info,
                              &t->oid_signed_data};

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        der_free(all[i]);
    for (int i = 0; i < 1 + TSA_MAX_POLICIES; i++)
        der_free(&t->policy[i]);
    memset(t, 0, sizeof(*t));
}

static int oid_der(struct tsa__der *d, const ASN1_OBJECT *obj)
{
    unsigned char *p = NULL;
    return der_take(d, i2d_ASN1_OBJECT(obj, &p), &p);
}

/* The reference request: SHA-256 imprint, a nonce and certReq, so that the reference token holds
 * every optional part a request can ask for. */
static TS_REQ *reference_request(unsigned char **der, int *der_len)
{
    static const unsigned char imprint[32] = {1, 2, 3, 4, 5, 6, 7, 8};
    TS_REQ *req = TS_REQ_new();
    TS_MSG_IMPRINT *mi = TS_MSG_IMPRINT_new();
    X509_ALGOR *alg = X509_ALGOR_new();
    ASN1_INTEGER *nonce = ASN1_INTEGER_new();
    int ok = req != NULL && mi != NULL && alg != NULL && nonce != NULL &&
             X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL) &&
             TS_MSG_IMPRINT_set_algo(mi, alg) &&
             TS_MSG_IMPRINT_set_msg(mi, (unsigned char *)imprint, sizeof(imprint)) &&
             TS_REQ_set_version(req, 1) && TS_REQ_set_msg_imprint(req, mi) &&
             ASN1_INTEGER_set_int64(nonce, 0x0102030405060708LL) && TS_REQ_set_nonce(req, nonce) &&
             TS_REQ_set_cert_req(req, 1);

    *der = NULL;
    *der_len = ok ? i2d_TS_REQ(req, der) : 0;
    if (*der_len <= 0) {
        TS_REQ_free(req);
        req = NULL;
    }
    X509_ALGOR_free(alg);
    TS_MSG_IMPRINT_free(mi);
    ASN1_INTEGER_free(nonce);
    return req;
}

/* out = the DER of in under a constructed header (tag, xclass). 1 on success. */
static int der_wrap(struct tsa__der *out, const struct tsa__der *in, int tag, int xclass)
{
    size_t n = tlv_size(in->n);

    out->p = OPENSSL_malloc(n);
    if (out->p == NULL)
        return 0;
    out->n = n;
    (void)put_der(put_header(out->p, 1, in->n, tag, xclass), in); /* fills it */
    return 1;
}

/* The PKIStatusInfo and the constant parts of the TSTInfo: version, policies, accuracy, tsa. */
static int tmpl_tst_info(struct tsa__unit *unit, TS_RESP *resp, TS_TST_INFO *tst)
{
    struct tsa__tmpl *t = &unit->tmpl;
    struct tsa__der name = {0};
    ASN1_INTEGER *v = NULL;
    unsigned char *p = NULL;
    int ok = 0;

    if (!der_take(&t->status, i2d_TS_STATUS_INFO(TS_RESP_get_status_info(resp), &p), &p))
        goto out;
    v = ASN1_INTEGER_new();
    p = NULL;
    if (v == NULL || !ASN1_INTEGER_set(v, TS_TST_INFO_get_version(tst)) ||
        !der_take(&t->tst_version, i2d_ASN1_INTEGER(v, &p), &p))
        goto out;
    if (!oid_der(&t->policy[0], unit->policy))
        goto out;
    for (int i = 0; i < unit->n_accepted; i++) {
        if (!oid_der(&t->policy[1 + i], unit->accepted[i]))
            goto out;
    }
    p = NULL;
    if (TS_TST_INFO_get_accuracy(tst) != NULL &&
        !der_take(&t->accuracy, i2d_TS_ACCURACY(TS_TST_INFO_get_accuracy(tst), &p), &p))
        goto out;
    if (TS_TST_INFO_get_tsa(tst) != NULL) {
        p = NULL;
        /* tsa [0] GeneralName: a CHOICE, so the tag is explicit */
        if (!der_take(&name, i2d_GENERAL_NAME(TS_TST_INFO_get_tsa(tst), &p), &p) ||
            !der_wrap(&t->tsa_name, &name, 0, V_ASN1_CONTEXT_SPECIFIC))
            goto out;
    }
    ok = 1;
out:
    ASN1_INTEGER_free(v);
    der_free(&name);
    return ok;
}

/* The SignedData's head: version and digestAlgorithms (a SET of one); its certificates. */
static int tmpl_signed_data(struct tsa__tmpl *t, PKCS7_SIGNED *sd)
{
    struct tsa__der version = {0}, algs = {0}, dalg = {0};
    unsigned char *p = NULL, *q;
    size_t content = 0;
    int ok = 0;

    if (!der_take(&version, i2d_ASN1_INTEGER(sd->version, &p), &p))
        goto out;
    p = NULL;
    if (!der_take(&dalg, i2d_X509_ALGOR(sk_X509_ALGOR_value(sd->md_algs, 0), &p), &p) ||
        !der_wrap(&algs, &dalg, V_ASN1_SET, V_ASN1_UNIVERSAL) ||
        !der_concat(&t->sd_head, &version, &algs, NULL))
        goto out;
    for (int i = 0; i < sk_X509_num(sd->cert); i++) {
        int len = i2d_X509(sk_X509_value(sd->cert, i), NULL);
        if (len <= 0)
            goto out;
        content += (size_t)len;
    }
    t->certs.n = tlv_size(content);
    t->certs.p = OPENSSL_malloc(t->certs.n);
    if (t->certs.p == NULL)
        goto out;
    /* certificates [0] IMPLICIT, in the order OpenSSL added them */
    q = put_header(t->certs.p, 1, content, 0, V_ASN1_CONTEXT_SPECIFIC);
    for (int i = 0; i < sk_X509_num(sd->cert); i++)
        (void)i2d_X509(sk_X509_value(sd->cert, i), &q); /* sized above */
    ok = 1;
out:
    der_free(&version);
    der_free(&algs);
    der_free(&dalg);
    return ok;
}

/* The SignerInfo: version, sid and digestAlgorithm; signatureAlgorithm; the two constant signed
 * attributes (the other two, signingTime and messageDigest, are made per token). */
static int tmpl_signer_info(struct tsa__tmpl *t, PKCS7_SIGNER_INFO *si)
{
    struct tsa__der version = {0}, sid = {0}, dalg = {0};
    unsigned char *p = NULL;
    int ok = 0;

    if (!der_take(&version, i2d_ASN1_INTEGER(si->version, &p), &p))
        goto out;
    p = NULL;
    if (!der_take(&sid, i2d_PKCS7_ISSUER_AND_SERIAL(si->issuer_and_serial, &p), &p))
        goto out;
    p = NULL;
    if (!der_take(&dalg, i2d_X509_ALGOR(si->digest_alg, &p), &p) ||
        !der_concat(&t->si_head, &version, &sid, &dalg))
        goto out;
    p = NULL;
    if (!der_take(&t->si_sig_alg, i2d_X509_ALGOR(si->digest_enc_alg, &p), &p))
        goto out;
    for (int i = 0; i < 4; i++) {
        X509_ATTRIBUTE *attr = sk_X509_ATTRIBUTE_value(si->auth_attr, i);
        int nid = OBJ_obj2nid(X509_ATTRIBUTE_get0_object(attr));
        struct tsa__der *slot = nid == NID_pkcs9_contentType ? &t->attr_content_type
                                : nid == NID_id_smime_aa_signingCertificateV2
                                    ? &t->attr_signing_cert
                                    : NULL;
        if (slot == NULL) {
            if (nid != NID_pkcs9_signingTime && nid != NID_pkcs9_messageDigest)
                goto out;
            continue;
        }
        p = NULL;
        if (slot->p != NULL || !der_take(slot, i2d_X509_ATTRIBUTE(attr, &p), &p))
            goto out;
    }
    ok = t->attr_content_type.p != NULL && t->attr_signing_cert.p != NULL;
out:
    der_free(&version);
    der_free(&sid);
    der_free(&dalg);
    return ok;
}

/* Fills the template from the reference token; 0 if its shape is not the one we rebuild. */
static int tmpl_from_reference(struct tsa__unit *unit, TS_RESP *resp)
{
    struct tsa__tmpl *t = &unit->tmpl;
    PKCS7 *p7 = TS_RESP_get_token(resp);
    TS_TST_INFO *tst = TS_RESP_get_tst_info(resp);
    PKCS7_SIGNED *sd = NULL;
    PKCS7_SIGNER_INFO *si = NULL;

    if (p7 == NULL || tst == NULL || !PKCS7_type_is_signed(p7))
        return 0;
    sd = p7->d.sign;
    if (sk_X509_ALGOR_num(sd->md_algs) != 1 || sk_X509_CRL_num(sd->crl) > 0 ||
        sk_PKCS7_SIGNER_INFO_num(sd->signer_info) != 1 || sk_X509_num(sd->cert) < 1 ||
        TS_TST_INFO_get_ordering(tst) || TS_TST_INFO_get_exts(tst) != NULL)
        return 0;
    si = sk_PKCS7_SIGNER_INFO_value(sd->signer_info, 0);
    if (si->unauth_attr != NULL || sk_X509_ATTRIBUTE_num(si->auth_attr) != 4)
        return 0;
    return tmpl_tst_info(unit, resp, tst) && tmpl_signed_data(t, sd) && tmpl_signer_info(t, si) &&
           oid_der(&t->oid_signing_time, OBJ_nid2obj(NID_pkcs9_signingTime)) &&
           oid_der(&t->oid_message_digest, OBJ_nid2obj(NID_pkcs9_messageDigest)) &&
           oid_der(&t->oid_tst_info, OBJ_nid2obj(NID_id_smime_ct_TSTInfo)) &&
           oid_der(&t->oid_signed_data, OBJ_nid2obj(NID_pkcs7_signed));
}

/* ---- one token ----------------------------------------------------------------------------- */

/* genTime as OpenSSL's TS code writes it (ts_rsp_sign.c): YYYYMMDDhhmmss, then the fraction to the
 * unit's precision without trailing zeros (X.690 DER), then Z. */
static int gen_time(char *out, size_t out_len, const struct timespec *now, unsigned precision)
{
    char text[UTIL_GENTIME_LEN];
    int n = UTIL_GENTIME_LEN - 1; /* the digits, without the Z */

    if (out_len < 24 || util_gentime(now->tv_sec, text) != UTIL_OK)
        return -1;
    memcpy(out, text, (size_t)n);
    if (precision > 0) {
        char frac[24];
        (void)snprintf(frac, sizeof(frac), "%06ld", now->tv_nsec / 1000); /* 0..999999: 6 digits */
        frac[precision] = '\0';
        for (int i = (int)precision - 1; i >= 0 && frac[i] == '0'; i--)
            frac[i] = '\0';
        if (frac[0] != '\0')
            n += snprintf(out + n, out_len - (size_t)n, ".%s", frac); /* 22 chars at most */
    }
    out[n++] = 'Z';
    out[n] = '\0';
    return n;
}

/* attr: SEQUENCE { oid, SET { value } } into a fresh buffer. */
static int attr_der(struct tsa__der *attr, const struct tsa__der *oid, const unsigned char *value,
                    size_t value_len)
{
    size_t set = tlv_size(value_len);
    size_t n = tlv_size(oid->n + set);
    unsigned char *p = OPENSSL_malloc(n);

    if (p == NULL)
        return 0;
    attr->p = p;
    attr->n = n;
    p = put_header(p, 1, oid->n + set, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, oid);
    p = put_header(p, 1, value_len, V_ASN1_SET, V_ASN1_UNIVERSAL);
    memcpy(p, value, value_len);
    return 1;
}

int tsa__token_build(const struct tsa__unit *unit, TS_REQ *req, int policy_index, int64_t serial,
                     const struct timespec *now, tsa__sign_fn sign, void *sign_arg,
                     unsigned char **der, size_t *der_len)
{
    const struct tsa__tmpl *t = &unit->tmpl;
    const struct tsa__der *policy = &t->policy[policy_index < 0 ? 0 : 1 + policy_index];
    struct tsa__der imprint = {0}, nonce = {0}, serial_der = {0}, tst = {0}, time_der = {0};
    struct tsa__der attrs[4] = {{0}}, signed_attrs = {0};
    struct tsa__der gen = {0};
    ASN1_INTEGER *serial_int = NULL;
    ASN1_TIME *signing_time = NULL;
    unsigned char digest[EVP_MAX_MD_SIZE], md_value[2 + EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    unsigned char *sig = NULL, *p = NULL, *out = NULL;
    size_t sig_len = 0, attrs_len = 0, n;
    size_t si_len, sis_len, encap_len, sd_len, ci_len, resp_len;
    char time_txt[32];
    int time_len, certs = TS_REQ_get_cert_req(req);
    int rc = UTIL_ENOMEM;

    *der = NULL;
    *der_len = 0;
    ERR_clear_error();
    /* TSTInfo */
    p = NULL;
    if (!der_take(&imprint, i2d_TS_MSG_IMPRINT(TS_REQ_get_msg_imprint(req), &p), &p))
        goto out;
    p = NULL;
    if (TS_REQ_get_nonce(req) != NULL &&
        !der_take(&nonce, i2d_ASN1_INTEGER(TS_REQ_get_nonce(req), &p), &p))
        goto out;
    serial_int = ASN1_INTEGER_new();
    p = NULL;
    if (serial_int == NULL || !ASN1_INTEGER_set_int64(serial_int, serial) ||
        !der_take(&serial_der, i2d_ASN1_INTEGER(serial_int, &p), &p))
        goto out;
    time_len = gen_time(time_txt, sizeof(time_txt), now, t->precision);
    if (time_len < 0) {
        rc = UTIL_EINVAL;
        goto out;
    }
    gen.n = tlv_size((size_t)time_len);
    gen.p = OPENSSL_malloc(gen.n);
    if (gen.p == NULL)
        goto out;
    memcpy(put_header(gen.p, 0, (size_t)time_len, V_ASN1_GENERALIZEDTIME, V_ASN1_UNIVERSAL),
           time_txt, (size_t)time_len);
    n = t->tst_version.n + policy->n + imprint.n + serial_der.n + gen.n + t->accuracy.n + nonce.n +
        t->tsa_name.n;
    tst.n = tlv_size(n);
    tst.p = OPENSSL_malloc(tst.n);
    if (tst.p == NULL)
        goto out;
    p = put_header(tst.p, 1, n, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->tst_version);
    p = put_der(p, policy);
    p = put_der(p, &imprint);
    p = put_der(p, &serial_der);
    p = put_der(p, &gen);
    p = put_der(p, &t->accuracy);
    p = put_der(p, &nonce);
    (void)put_der(p, &t->tsa_name); /* the end */

    /* signed attributes: contentType, signingCertificateV2, signingTime, messageDigest */
    if (EVP_Digest(tst.p, tst.n, digest, &digest_len, unit->sign_md, NULL) != 1)
        goto out;
    signing_time = ASN1_TIME_set(NULL, now->tv_sec);
    p = NULL;
    if (signing_time == NULL || !der_take(&time_der, i2d_ASN1_TIME(signing_time, &p), &p))
        goto out;
    md_value[0] = V_ASN1_OCTET_STRING;
    md_value[1] = (unsigned char)digest_len; /* 64 at most: a one-octet length */
    memcpy(md_value + 2, digest, digest_len);
    attrs[0] = t->attr_content_type;
    attrs[1] = t->attr_signing_cert;
    if (!attr_der(&attrs[2], &t->oid_signing_time, time_der.p, time_der.n) ||
        !attr_der(&attrs[3], &t->oid_message_digest, md_value, 2 + digest_len))
        goto out;
    qsort(attrs, 4, sizeof(attrs[0]), der_cmp);
    for (int i = 0; i < 4; i++)
        attrs_len += attrs[i].n;
    signed_attrs.n = tlv_size(attrs_len);
    signed_attrs.p = OPENSSL_malloc(signed_attrs.n);
    sig = OPENSSL_malloc(t->sig_max);
    if (signed_attrs.p == NULL || sig == NULL)
        goto out;
    p = put_header(signed_attrs.p, 1, attrs_len, V_ASN1_SET, V_ASN1_UNIVERSAL);
    for (int i = 0; i < 4; i++)
        p = put_der(p, &attrs[i]);
    sig_len = t->sig_max;
    rc = sign(sign_arg, signed_attrs.p, signed_attrs.n, sig, &sig_len);
    if (rc != UTIL_OK)
        goto out;
    rc = UTIL_ENOMEM;

    /* TimeStampResp { status, ContentInfo { signedData, [0] SignedData { sd_head,
     * encapContentInfo { TSTInfo OID, [0] OCTET STRING tst }, [0] certs?, SET { SignerInfo } } } } */
    si_len = t->si_head.n + signed_attrs.n + t->si_sig_alg.n + tlv_size(sig_len);
    sis_len = tlv_size(si_len);
    encap_len = t->oid_tst_info.n + tlv_size(tlv_size(tst.n));
    sd_len = t->sd_head.n + tlv_size(encap_len) + (certs ? t->certs.n : 0) + tlv_size(sis_len);
    ci_len = t->oid_signed_data.n + tlv_size(tlv_size(sd_len));
    resp_len = t->status.n + tlv_size(ci_len);
    n = tlv_size(resp_len);
    out = OPENSSL_malloc(n);
    if (out == NULL)
        goto out;
    p = put_header(out, 1, resp_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->status);
    p = put_header(p, 1, ci_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->oid_signed_data);
    p = put_header(p, 1, tlv_size(sd_len), 0, V_ASN1_CONTEXT_SPECIFIC);
    p = put_header(p, 1, sd_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->sd_head);
    p = put_header(p, 1, encap_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->oid_tst_info);
    p = put_header(p, 1, tlv_size(tst.n), 0, V_ASN1_CONTEXT_SPECIFIC);
    p = put_header(p, 0, tst.n, V_ASN1_OCTET_STRING, V_ASN1_UNIVERSAL);
    p = put_der(p, &tst);
    if (certs)
        p = put_der(p, &t->certs);
    p = put_header(p, 1, sis_len, V_ASN1_SET, V_ASN1_UNIVERSAL);
    p = put_header(p, 1, si_len, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    p = put_der(p, &t->si_head);
    /* signedAttrs [0] IMPLICIT: the SET just signed, with the context tag (RFC 5652 §5.4) */
    p = put_header(p, 1, attrs_len, 0, V_ASN1_CONTEXT_SPECIFIC);
    for (int i = 0; i < 4; i++)
        p = put_der(p, &attrs[i]);
    p = put_der(p, &t->si_sig_alg);
    p = put_header(p, 0, sig_len, V_ASN1_OCTET_STRING, V_ASN1_UNIVERSAL);
    memcpy(p, sig, sig_len);
    if ((size_t)(p + sig_len - out) != n) { /* a sizing slip would be a bug: never send it */
        UTIL_ERROR(TSA_MOD, "unit %s: token encoding is %zu bytes, sized %zu", unit->name,
                   (size_t)(p + sig_len - out), n);
        rc = UTIL_EINVAL;
        goto out;
    }
    *der = out;
    *der_len = n;
    out = NULL;
    rc = UTIL_OK;
out:
    ERR_clear_error();
    OPENSSL_free(out);
    OPENSSL_free(sig);
    der_free(&signed_attrs);
    for (int i = 0; i < 4; i++) { /* the template's own two are borrowed */
        if (attrs[i].p != t->attr_content_type.p && attrs[i].p != t->attr_signing_cert.p)
            der_free(&attrs[i]);
    }
    der_free(&time_der);
    ASN1_TIME_free(signing_time);
    der_free(&tst);
    der_free(&gen);
    der_free(&serial_der);
    ASN1_INTEGER_free(serial_int);
    der_free(&nonce);
    der_free(&imprint);
    return rc;
}

/* ---- start-up: reference token, template, self-check --------------------------------------- */

int tsa__sign_replay(void *arg, const unsigned char *data, size_t len, unsigned char *sig,
                     size_t *sig_len)
{
    const struct tsa__replay *r = arg;
    (void)data;
    (void)len;
    if (r->len > *sig_len)
        return UTIL_EINVAL;
    memcpy(sig, r->sig, r->len);
    *sig_len = r->len;
    return UTIL_OK;
}

/* One try: a reference token now, the template from it, the rebuilt token compared. 1: the
 * template holds; 0: it does not (or a second boundary fell in between); <0: a util error. */
static int tmpl_try(struct tsa_service *svc, struct tsa__unit *unit, TS_REQ *req,
                    const unsigned char *req_der, int req_len)
{
    struct tsa__job *job = calloc(1, sizeof(*job) + (size_t)req_len);
    const unsigned char *q = NULL;
    TS_RESP *resp = NULL;
    PKCS7_SIGNER_INFO *si = NULL;
    unsigned char *rebuilt = NULL;
    size_t rebuilt_len = 0;
    struct tsa__replay replay;
    int rc;

    if (job == NULL)
        return UTIL_ENOMEM;
    job->svc = svc;
    job->unit = unit;
    job->serial = 1; /* never sent, never logged: serial numbers are not consumed */
    job->der_len = (size_t)req_len;
    memcpy(job->der, req_der, (size_t)req_len);
    (void)clock_gettime(CLOCK_REALTIME, &job->fixed); /* CLOCK_REALTIME always exists */
    /* OpenSSL takes the signingTime from time(), which glibc reads from the coarse clock (a tick
     * behind CLOCK_REALTIME): the seconds from the same clock make the two agree but for a
     * second boundary in between, which the next try gets past. */
    job->fixed.tv_sec = time(NULL);
    rc = tsa__sign_openssl(job);
    if (rc != UTIL_OK)
        goto out;
    q = job->reply->data;
    resp = d2i_TS_RESP(NULL, &q, (long)job->reply->len);
    tsa__tmpl_cleanup(&unit->tmpl);
    if (resp == NULL || !tmpl_from_reference(unit, resp)) {
        UTIL_WARN(TSA_MOD, "unit %s: the reference token has a shape the template cannot rebuild",
                  unit->name);
        rc = 0;
        goto out;
    }
    unit->tmpl.sig_max = (size_t)EVP_PKEY_get_size(unit->key->pkey);
    unit->tmpl.precision = unit->accuracy_us > 0 && unit->accuracy_us < 1000000
                               ? (unit->accuracy_us >= 1000 ? 3 : 6)
                               : 0;
    si = sk_PKCS7_SIGNER_INFO_value(TS_RESP_get_token(resp)->d.sign->signer_info, 0);
    replay.sig = ASN1_STRING_get0_data(si->enc_digest);
    replay.len = (size_t)ASN1_STRING_length(si->enc_digest);
    rc = tsa__token_build(unit, req, -1, job->serial, &job->fixed, tsa__sign_replay, &replay,
                          &rebuilt, &rebuilt_len);
    if (rc != UTIL_OK)
        goto out;
    rc = rebuilt_len == job->reply->len && memcmp(rebuilt, job->reply->data, rebuilt_len) == 0;
out:
    ERR_clear_error();
    OPENSSL_free(rebuilt);
    TS_RESP_free(resp);
    util_blob_unref(job->reply);
    free(job);
    return rc;
}

int tsa__tmpl_init_blocking(struct tsa_service *svc, struct tsa__unit *unit)
{
    unsigned char *req_der = NULL;
    int req_len = 0;
    TS_REQ *req = reference_request(&req_der, &req_len);
    int rc = req == NULL ? UTIL_ENOMEM : 0;

    for (int i = 0; rc == 0 && i < SELF_CHECK_TRIES; i++)
        rc = tmpl_try(svc, unit, req, req_der, req_len);
    if (rc == 1) {
        atomic_store_explicit(&unit->tmpl_retry, 0, memory_order_relaxed);
        atomic_store_explicit(&unit->tmpl_ready, 1, memory_order_release);
        rc = UTIL_OK;
    } else {
        tsa__tmpl_cleanup(&unit->tmpl);
        /* A token or memory failure may pass; a reference that differs will not. */
        atomic_store_explicit(&unit->tmpl_retry, rc < 0, memory_order_relaxed);
        UTIL_WARN(TSA_MOD,
                  "unit %s: no token template (%s); tokens come from OpenSSL's "
                  "TS_RESP_create_response, which costs more CPU per token%s",
                  unit->name, rc == 0 ? "the rebuilt reference token differs" : util_strerror(rc),
                  rc < 0 ? "; built again later" : "");
        rc = rc == UTIL_ENOMEM ? rc : UTIL_OK;
    }
    TS_REQ_free(req);
    OPENSSL_free(req_der);
    return rc;
}

void tsa__tmpl_retry_blocking(struct tsa_service *svc, struct tsa__unit *unit)
{
    int64_t now;
    int idle = 0;

    if (!atomic_load_explicit(&unit->tmpl_retry, memory_order_relaxed))
        return; /* a template that will not rebuild (see tsa__tmpl_init_blocking) */
    now = util_mono_ms();
    /* A key still refused waits for its health check (hsm/), which says when it signs again:
     * no try is spent on it. */
    if (now < atomic_load_explicit(&unit->tmpl_retry_ms, memory_order_relaxed) ||
        !hsm_key_usable(unit->key) ||
        !atomic_compare_exchange_strong(&unit->tmpl_building, &idle, 1))
        return;
    atomic_store_explicit(&unit->tmpl_retry_ms, now + TSA__TMPL_RETRY_MS, memory_order_relaxed);
    if (!atomic_load_explicit(&unit->tmpl_ready, memory_order_relaxed)) {
        (void)tsa__tmpl_init_blocking(svc, unit); /* logs its failure; ENOMEM: retried later */
        if (atomic_load_explicit(&unit->tmpl_ready, memory_order_relaxed))
            UTIL_INFO(TSA_MOD,
                      "unit %s: token template built; tokens no longer take OpenSSL's "
                      "per-token path",
                      unit->name);
    }
    atomic_store(&unit->tmpl_building, 0);
}
