/* SPDX-License-Identifier: Apache-2.0 */
/* TimeStampReq builder shared by the tsa tests (see tsa_req_build.h). */
#include "tsa_req_build.h"

#include <criterion/criterion.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>
#include <string.h>

/* Builds a DER TimeStampReq with OpenSSL's TS_REQ API. */
int build_req(const struct req_opts *o, unsigned char **der)
{
    TS_REQ *req = TS_REQ_new();
    TS_MSG_IMPRINT *mi = TS_MSG_IMPRINT_new();
    X509_ALGOR *alg = X509_ALGOR_new();
    unsigned char imprint[64];
    int len =
        o->imprint_len >= 0 ? o->imprint_len : EVP_MD_get_size(EVP_get_digestbynid(o->md_nid));

    memset(imprint, 0x5a, sizeof(imprint));
    cr_assert(TS_REQ_set_version(req, o->version ? o->version : 1));
    if (o->param_integer) {
        ASN1_INTEGER *i = ASN1_INTEGER_new();
        ASN1_INTEGER_set(i, 7);
        X509_ALGOR_set0(alg, OBJ_nid2obj(o->md_nid), V_ASN1_INTEGER, i);
    } else {
        X509_ALGOR_set0(alg, OBJ_nid2obj(o->md_nid), o->params_absent ? V_ASN1_UNDEF : V_ASN1_NULL,
                        NULL);
    }
    cr_assert(TS_MSG_IMPRINT_set_algo(mi, alg));
    cr_assert(TS_MSG_IMPRINT_set_msg(mi, imprint, len));
    cr_assert(TS_REQ_set_msg_imprint(req, mi));
    if (o->policy != NULL) {
        ASN1_OBJECT *p = OBJ_txt2obj(o->policy, 1);
        cr_assert(TS_REQ_set_policy_id(req, p));
        ASN1_OBJECT_free(p);
    }
    if (o->nonce || o->nonce_hex != NULL) {
        BIGNUM *bn = NULL;
        ASN1_INTEGER *n;
        cr_assert(BN_hex2bn(&bn, o->nonce_hex != NULL ? o->nonce_hex : "1122334455667788"));
        n = BN_to_ASN1_INTEGER(bn, NULL);
        cr_assert_not_null(n);
        cr_assert(TS_REQ_set_nonce(req, n));
        ASN1_INTEGER_free(n);
        BN_free(bn);
    }
    cr_assert(TS_REQ_set_cert_req(req, o->cert_req));
    if (o->ext) {
        ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.4.1.99999.9.9", 1);
        ASN1_OCTET_STRING *val = ASN1_OCTET_STRING_new();
        X509_EXTENSION *ext;
        ASN1_OCTET_STRING_set(val, (const unsigned char *)"\x05\x00", 2);
        ext = X509_EXTENSION_create_by_OBJ(NULL, oid, o->ext == 2, val);
        cr_assert(TS_REQ_add_ext(req, ext, -1));
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(val);
        ASN1_OBJECT_free(oid);
    }
    *der = NULL;
    len = i2d_TS_REQ(req, der);
    cr_assert_gt(len, 0);
    X509_ALGOR_free(alg);
    TS_MSG_IMPRINT_free(mi);
    TS_REQ_free(req);
    return len;
}
