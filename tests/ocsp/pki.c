/* SPDX-License-Identifier: Apache-2.0 */
/* Test PKI helpers (see pki.h). Test code: failures return NULL and the test asserts. */
#include "pki.h"

#include <openssl/x509v3.h>
#include <string.h>

EVP_MD_CTX *tp_soft_ctx(EVP_PKEY *key)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx != NULL && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1) {
        EVP_MD_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

X509 *tp_cert(X509 *issuer, EVP_MD_CTX *sign_ctx, EVP_PKEY *pub, const char *cn, long serial,
              int kind, long not_after_days)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    X509V3_CTX v3;
    int ok = x != NULL && name != NULL;

    ok = ok && X509_set_version(x, X509_VERSION_3);
    ok = ok && ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    ok = ok && X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"pkiva",
                                          -1, -1, 0);
    ok = ok &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    ok = ok && X509_set_subject_name(x, name);
    ok = ok && X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    ok = ok && X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    ok = ok && X509_time_adj_ex(X509_getm_notAfter(x), (int)not_after_days, 0, NULL);
    ok = ok && X509_set_pubkey(x, pub);
    if (ok) {
        X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
        ok = add_ext(x, &v3, NID_subject_key_identifier, "hash");
        ok = ok && add_ext(x, &v3, NID_authority_key_identifier, "keyid");
        if (kind == TP_CA) {
            ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
            ok = ok &&
                 add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign,digitalSignature");
        } else if (kind == TP_RESPONDER) {
            ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
            ok = ok && add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
            ok = ok && add_ext(x, &v3, NID_ext_key_usage, "OCSPSigning");
            ok = ok && add_ext(x, &v3, NID_id_pkix_OCSP_noCheck, "ignored");
        } else {
            ok = ok && add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
            ok = ok && add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
        }
    }
    ok = ok && X509_sign_ctx(x, sign_ctx) > 0;
    X509_NAME_free(name);
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

size_t tp_serial_bytes(long serial, unsigned char *out)
{
    ASN1_INTEGER *ai = ASN1_INTEGER_new();
    unsigned char buf[64];
    unsigned char *p = buf;
    int len;
    ASN1_INTEGER_set(ai, serial);
    len = i2d_ASN1_INTEGER(ai, &p);
    ASN1_INTEGER_free(ai);
    memcpy(out, buf + 2, (size_t)len - 2);
    return (size_t)len - 2;
}

OCSP_REQUEST *tp_request(X509 *issuer, const EVP_MD *md, const long *serials, int n, int nonce_len)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    for (int i = 0; i < n; i++) {
        ASN1_INTEGER *ai = ASN1_INTEGER_new();
        OCSP_CERTID *id;
        ASN1_INTEGER_set(ai, serials[i]);
        id = OCSP_cert_id_new(md, X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer),
                              ai);
        ASN1_INTEGER_free(ai);
        if (id == NULL || OCSP_request_add0_id(req, id) == NULL) {
            OCSP_REQUEST_free(req);
            return NULL;
        }
    }
    if (nonce_len == 0) {
        /* OCSP_request_add1_nonce cannot make an empty nonce: build the extension by hand. */
        static const unsigned char empty_octets[2] = {0x04, 0x00};
        ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
        X509_EXTENSION *ext;
        ASN1_OCTET_STRING_set(v, empty_octets, 2);
        ext = X509_EXTENSION_create_by_NID(NULL, NID_id_pkix_OCSP_Nonce, 0, v);
        OCSP_REQUEST_add_ext(req, ext, -1);
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(v);
    } else if (nonce_len > 0) {
        OCSP_request_add1_nonce(req, NULL, nonce_len);
    }
    return req;
}

int tp_request_der(OCSP_REQUEST *req, unsigned char **der)
{
    *der = NULL;
    return i2d_OCSP_REQUEST(req, der);
}
