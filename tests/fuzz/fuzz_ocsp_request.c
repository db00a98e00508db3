/* SPDX-License-Identifier: Apache-2.0 */
/* The DER OCSP request parser as a fuzz target. It also answers every request it parses, with the
 * request's CertIDs and nonce, both through OpenSSL (ocsp__response_build) and through the direct
 * encoder (ocsp_der.c) with OpenSSL's signature replayed, and aborts when the bytes differ. The
 * seed corpus in corpus/ocsp_request replays in test_fuzz_replay. */
#include "fuzz.h"

#include <ocsp/ocsp.h>
#include <ocsp/ocsp_int.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static EVP_PKEY *key;
static X509 *cert;

/* A P-256 key and a self-signed certificate for it, made once. */
static void signer_once(void)
{
    X509_NAME *name;

    if (cert != NULL)
        return;
    key = EVP_EC_gen("P-256");
    cert = X509_new();
    name = X509_NAME_new();
    if (key == NULL || cert == NULL || name == NULL ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1, -1,
                                    0) ||
        !X509_set_version(cert, X509_VERSION_3) || !X509_set_subject_name(cert, name) ||
        !X509_set_issuer_name(cert, name) || !X509_set_pubkey(cert, key) ||
        X509_gmtime_adj(X509_getm_notBefore(cert), 0) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), 86400) == NULL ||
        !X509_sign(cert, key, EVP_sha256()))
        abort();
    X509_NAME_free(name);
}

/* b answers from the plain path's bytes (singles[0].cid_der, b->nonce_der): OpenSSL builds the
 * response from them; the direct encoder, given OpenSSL's parse p instead and that response's
 * signature, must rebuild it byte for byte. */
static void plain_by_openssl(struct ocsp__build *b, struct ocsp__single *singles,
                             const struct ocsp__parsed *p)
{
    struct ocsp__tmpl *t = NULL;
    struct ocsp__replay replay;
    unsigned char *built = NULL, *again = NULL;
    size_t built_len = 0, again_len = 0;
    int64_t produced;
    EVP_MD_CTX *mctx = EVP_MD_CTX_new();

    if (mctx == NULL || EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, key) != 1 ||
        ocsp__response_build(b, mctx, &built, &built_len) != 0 ||
        ocsp__tmpl_from_response(built, built_len, &t, &produced, &replay.sig, &replay.len) != 0)
        abort();
    singles[0].cid = p->ids[0].cid;
    singles[0].cid_der = NULL;
    b->nonce_from = p->nonce != NULL ? p->req : NULL;
    b->nonce_der = NULL;
    if (ocsp__tmpl_build(t, b, produced, ocsp__sign_replay, &replay, &again, &again_len) != 0 ||
        again_len != built_len || memcmp(again, built, built_len) != 0)
        abort();
    EVP_MD_CTX_free(mctx);
    OPENSSL_free(built);
    OPENSSL_free(again);
    ocsp__tmpl_free(t);
}

/* The request's CertIDs answered (good, revoked with a reason, unknown: by serial length), with
 * its nonce, by OpenSSL and by the direct encoder: the same bytes or abort. With plain (the same
 * request read by the plain path) the direct encoder answers from plain's CertID and nonce bytes
 * too, and must give the very same response. */
static void answer_both_ways(const struct ocsp__parsed *p, const struct ocsp__parsed *plain)
{
    struct ocsp__single singles[10];
    struct ocsp__build b;
    struct ocsp__tmpl *t = NULL;
    struct ocsp__replay replay;
    unsigned char *ref = NULL, *again = NULL;
    size_t ref_len = 0, again_len = 0;
    int64_t produced;
    EVP_MD_CTX *mctx;

    signer_once();
    memset(singles, 0, sizeof(singles));
    memset(&b, 0, sizeof(b));
    for (int i = 0; i < p->n && i < 10; i++) {
        singles[i].cid = p->ids[i].cid; /* borrowed: never ocsp__single_cleanup'd here */
        singles[i].cert_status = (int)(p->ids[i].serial_len % 3);
        singles[i].reason = (int)(p->ids[i].serial[0] % 11) - 1;
        singles[i].revoked_at = 1700000000;
        singles[i].invalidity_date = p->ids[i].serial[0] & 1 ? 1600000000 : 0;
    }
    b.signer_cert = cert;
    b.include_signer = p->n % 2;
    b.by_name = p->nonce == NULL;
    b.singles = singles;
    b.n = p->n < 10 ? p->n : 10;
    b.this_update = 1800000000;
    b.next_update = b.this_update + 3600;
    b.archive_cutoff_seconds = p->n > 1 ? 86400 : 0;
    b.nonce_from = p->nonce != NULL ? p->req : NULL;
    mctx = EVP_MD_CTX_new();
    if (mctx == NULL || EVP_DigestSignInit(mctx, NULL, EVP_sha256(), NULL, key) != 1)
        abort();
    /* A CertID OpenSSL cannot encode again (an odd OID) gets no response from it: nothing to
     * compare (the responder answers such requests unauthorized before any signing). */
    if (ocsp__response_build(&b, mctx, &ref, &ref_len) == 0 &&
        (ocsp__tmpl_from_response(ref, ref_len, &t, &produced, &replay.sig, &replay.len) != 0 ||
         ocsp__tmpl_build(t, &b, produced, ocsp__sign_replay, &replay, &again, &again_len) != 0 ||
         again_len != ref_len || memcmp(again, ref, ref_len) != 0))
        abort();
    EVP_MD_CTX_free(mctx);
    if (plain != NULL && ref != NULL) {
        OPENSSL_free(again);
        again = NULL;
        singles[0].cid = NULL;
        singles[0].cid_der = plain->ids[0].cid_der;
        singles[0].cid_der_len = plain->ids[0].cid_der_len;
        b.nonce_from = NULL;
        b.nonce_der = plain->nonce_der;
        b.nonce_der_len = plain->nonce_der_len;
        if (ocsp__tmpl_build(t, &b, produced, ocsp__sign_replay, &replay, &again, &again_len) !=
                0 ||
            again_len != ref_len || memcmp(again, ref, ref_len) != 0)
            abort();
        /* OpenSSL's builder from the plain bytes (the path before a signer has its template)
         * gives what the direct encoder gives from OpenSSL's parse, with the same signature. */
        plain_by_openssl(&b, singles, p);
    }
    OPENSSL_free(ref);
    OPENSSL_free(again);
    ocsp__tmpl_free(t);
}

int fuzz_ocsp_request_check(const uint8_t *data, size_t size)
{
    struct ocsp__parsed p, pl;
    int plain = ocsp__request_parse_plain(data, size, &pl);
    int rc = ocsp__request_parse(data, size, 10, &p);
    const struct ocsp__reqid *id = &pl.one;

    /* What the plain path takes, OpenSSL's decoder reads the same way (the response bytes are
     * compared in answer_both_ways). */
    if (plain &&
        (rc != 0 || p.status != OCSP_RESPONSE_STATUS_SUCCESSFUL || p.n != 1 ||
         (p.nonce != NULL) != (pl.nonce_der != NULL) ||
         (p.nonce != NULL && p.nonce_len != pl.nonce_len) || id->alg != p.ids[0].alg ||
         id->serial_len != p.ids[0].serial_len || id->name_hash_len != p.ids[0].name_hash_len ||
         id->key_hash_len != p.ids[0].key_hash_len ||
         memcmp(id->serial, p.ids[0].serial, id->serial_len) != 0 ||
         memcmp(id->name_hash, p.ids[0].name_hash, id->name_hash_len) != 0 ||
         memcmp(id->key_hash, p.ids[0].key_hash, id->key_hash_len) != 0))
        abort();
    if (rc == 0 && p.status == OCSP_RESPONSE_STATUS_SUCCESSFUL)
        answer_both_ways(&p, plain ? &pl : NULL);
    rc = rc != 0 ? rc : p.status == OCSP_RESPONSE_STATUS_SUCCESSFUL;
    ocsp__parsed_cleanup(&p);
    ocsp__parsed_cleanup(&pl);
    return rc;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_ocsp_request_check(data, size); /* every outcome is data */
    return 0;
}
#endif
