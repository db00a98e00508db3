/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the ocsp module without HSM or network: the GET path decoder with every client
 * quirk, request parsing and planning (CertID matching, unauthorized, malformed, nonce lengths,
 * several CertIDs), responses signed with software keys and checked with OCSP_basic_verify, the
 * change feed (invalidation, idempotence), the pre-signer, the index at scale and the cache cap. */
#include "pki.h"
#include "support.h"

#include <criterion/criterion.h>
#include <hsm/hsm.h>
#include <ocsp/ocsp.h>
#include <ocsp/ocsp_int.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The module's defaults, with the timing a configuration file would derive from its deadline
 * (the module leaves it 0 = derived) and the queue and cache sizes these tests were written for. */
static void config_default(struct ocsp_config *cfg)
{
    ocsp_config_default(cfg);
    cfg->validity_seconds = 4 * 24 * 3600;
    cfg->max_age_seconds = 3600;
    cfg->nonce_queue_max = 64;
    cfg->cache_max_bytes = (size_t)512 << 20;
    cfg->expired_retention_seconds = 0;
}

/* ---- GET path decoding ---------------------------------------------------------------------- */

/* bytes whose base64 is "MAA+////AQID": '+' and a run of '/' */
static const unsigned char sample[] = {0x30, 0x00, 0x3e, 0xff, 0xff, 0xff, 0x01, 0x02, 0x03};

static void expect_decodes(const char *path)
{
    unsigned char out[64];
    int n = ocsp_get_path_decode(path, strlen(path), out, sizeof(out));
    cr_assert_eq(n, (int)sizeof(sample), "%s: got %d", path, n);
    cr_assert(memcmp(out, sample, sizeof(sample)) == 0, "%s: wrong bytes", path);
}

Test(get_decode, plain_and_quirks)
{
    unsigned char out[64];
    unsigned char b64[64];
    /* sanity: the plain base64 of sample, computed by OpenSSL */
    (void)EVP_EncodeBlock(b64, sample, sizeof(sample)); /* length not needed */
    cr_assert_str_eq((char *)b64, "MAA+////AQID");

    expect_decodes("MAA+////AQID");           /* unescaped '+' and '/' */
    expect_decodes("/MAA+////AQID");          /* leading slash */
    expect_decodes("//MAA+////AQID");         /* doubled leading slash */
    expect_decodes("MAA%2B%2F%2F%2F%2FAQID"); /* %2B and %2F */
    expect_decodes("MAA%2b%2f%2f%2f%2fAQID"); /* lower-case escapes */
    expect_decodes("MAA%2B/%2F//AQID");       /* mixed */
    expect_decodes("MAA ////AQID");           /* space for '+' */
    expect_decodes("MAA%20////AQID");         /* %20 for '+' */
    expect_decodes("MAA-____AQID");           /* base64url */
    expect_decodes("MAA+////AQID?x=1");       /* query string */
    expect_decodes("%4DAA+////AQID");         /* any character may be escaped */
    expect_decodes("MAA+////\r\nAQID");       /* line breaks of a wrapping encoder */

    /* missing padding: 8 bytes -> "MAA+////AQI=", 7 -> "MAA+////AQ==" */
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQI", 11, out, sizeof(out)), 8);
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQI=", 12, out, sizeof(out)), 8);
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQI%3D", 14, out, sizeof(out)), 8);
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQ", 10, out, sizeof(out)), 7);
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQ==", 12, out, sizeof(out)), 7);
    cr_assert(memcmp(out, sample, 7) == 0);
}

Test(get_decode, rejects)
{
    unsigned char out[8];
    cr_assert_lt(ocsp_get_path_decode("", 0, out, sizeof(out)), 0);
    cr_assert_lt(ocsp_get_path_decode("/", 1, out, sizeof(out)), 0);
    cr_assert_lt(ocsp_get_path_decode("MP*v", 4, out, sizeof(out)), 0);     /* not base64 */
    cr_assert_lt(ocsp_get_path_decode("MPv%zz", 6, out, sizeof(out)), 0);   /* bad escape */
    cr_assert_lt(ocsp_get_path_decode("MPv%2", 5, out, sizeof(out)), 0);    /* cut escape */
    cr_assert_lt(ocsp_get_path_decode("MPvvv", 5, out, sizeof(out)), 0);    /* lone digit */
    cr_assert_lt(ocsp_get_path_decode("MA==MA==", 8, out, sizeof(out)), 0); /* data after pad */
    /* longer than the output bound */
    cr_assert_lt(ocsp_get_path_decode("MAA+////AQID", 12, out, sizeof(out)), 0);
    cr_assert_eq(ocsp_get_path_decode("MAA+////AQ", 10, out, sizeof(out)), 7);
}

/* Random DER-like octets (0x30 first) of every length up to 300, encoded by OpenSSL, then dressed as clients and proxies
 * do (escapes at random places, '+' as a space, base64url, line breaks, padding cut): the decoder
 * (four digits at a time where it can, one at a time elsewhere) gives back the octets, with an
 * output bound of exactly their length, and refuses one octet less. */
Test(get_decode, random_octets_in_every_dress)
{
    unsigned char raw[300], out[300], b64[404];
    char path[1300];
    unsigned seed = 20261207;

    for (int iter = 0; iter < 20000; iter++) {
        size_t len = 1 + (size_t)rand_r(&seed) % sizeof(raw);
        size_t b64_len = 0, n = 0;
        int escape_every = 1 + rand_r(&seed) % 40, style = rand_r(&seed) % 4;
        for (size_t i = 0; i < len; i++)
            raw[i] = (unsigned char)rand_r(&seed);
        raw[0] = 0x30; /* DER's SEQUENCE: leading '/'s are the URL's, not data */
        b64_len = (size_t)EVP_EncodeBlock(b64, raw, (int)len);
        if (rand_r(&seed) % 2)
            while (b64_len > 0 && b64[b64_len - 1] == '=')
                b64_len--; /* no padding */
        path[n++] = '/';
        for (size_t i = 0; i < b64_len; i++) {
            char ch = (char)b64[i];
            if (style == 1 && ch == '+')
                ch = ' ';
            else if (style == 2 && (ch == '+' || ch == '/'))
                ch = ch == '+' ? '-' : '_';
            if (style == 3 && rand_r(&seed) % 64 == 0) {
                path[n++] = '\r';
                path[n++] = '\n';
            }
            if (rand_r(&seed) % escape_every == 0 || ch == '=')
                n += (size_t)snprintf(path + n, 4, "%%%02X", (unsigned char)ch);
            else
                path[n++] = ch;
        }
        cr_assert_eq(ocsp_get_path_decode(path, n, out, len), (int)len, "iteration %d: %.*s", iter,
                     (int)n, path);
        cr_assert(memcmp(out, raw, len) == 0, "iteration %d: other octets", iter);
        cr_assert_lt(ocsp_get_path_decode(path, n, out, len - 1), 0, "iteration %d", iter);
    }
}

/* ---- a software PKI and a responder without HSM --------------------------------------------- */

struct fixture {
    EVP_PKEY *root_key, *ca1_key, *ca2_key, *resp_key;
    X509 *root, *ca1, *ca2, *responder;
    struct hsm_key k_resp, k_ca2;
    struct ocsp_responder *resp;
    int64_t feed;
};
static struct fixture F;

static void pki_build(void)
{
    EVP_MD_CTX *ctx;
    memset(&F, 0, sizeof(F));
    F.root_key = EVP_EC_gen("P-256");
    F.ca1_key = EVP_EC_gen("P-256");
    F.ca2_key = EVP_EC_gen("P-256");
    F.resp_key = EVP_EC_gen("P-256");
    cr_assert(F.root_key && F.ca1_key && F.ca2_key && F.resp_key);
    ctx = tp_soft_ctx(F.root_key);
    F.root = tp_cert(NULL, ctx, F.root_key, "Test Root", 1, TP_CA, 3650);
    EVP_MD_CTX_free(ctx);
    ctx = tp_soft_ctx(F.root_key);
    F.ca1 = tp_cert(F.root, ctx, F.ca1_key, "Issuing CA 1", 2, TP_CA, 1825);
    EVP_MD_CTX_free(ctx);
    ctx = tp_soft_ctx(F.root_key);
    F.ca2 = tp_cert(F.root, ctx, F.ca2_key, "Issuing CA 2", 3, TP_CA, 1825);
    EVP_MD_CTX_free(ctx);
    ctx = tp_soft_ctx(F.ca1_key);
    F.responder = tp_cert(F.ca1, ctx, F.resp_key, "CA 1 OCSP", 100, TP_RESPONDER, 30);
    EVP_MD_CTX_free(ctx);
    cr_assert(F.root && F.ca1 && F.ca2 && F.responder);
    F.k_resp.pkey = F.resp_key;
    F.k_resp.uri = (char *)"soft:resp";
    strcpy(F.k_resp.md, "SHA256");
    F.k_ca2.pkey = F.ca2_key;
    F.k_ca2.uri = (char *)"soft:ca2";
    strcpy(F.k_ca2.md, "SHA256");
}

static int make_responder(const struct ocsp_config *cfg)
{
    struct ocsp_issuer_config is[2];
    memset(is, 0, sizeof(is));
    is[0].name = "ca1";
    is[0].store_issuer_id = 1;
    is[0].cert = F.ca1;
    is[0].signer_cert = F.responder;
    is[0].signer_key = &F.k_resp;
    is[1].name = "ca2";
    is[1].store_issuer_id = 2;
    is[1].cert = F.ca2;
    is[1].signer_key = &F.k_ca2; /* the CA signs its own responses */
    is[1].ignore_nonce = 1;
    return ocsp_responder_new(cfg, is, 2, NULL, &F.resp);
}

static void change(int kind, int64_t issuer_id, long serial, int status, int reason,
                   int64_t revoked_at)
{
    struct store_change ch;
    memset(&ch, 0, sizeof(ch));
    ch.id = ++F.feed;
    ch.kind = kind;
    ch.cert.issuer_id = issuer_id;
    ch.cert.serial_len = tp_serial_bytes(serial, ch.cert.serial);
    ch.cert.not_after = time(NULL) + 86400 * 90;
    ch.cert.status = status;
    ch.cert.revoked_at = revoked_at;
    ch.cert.reason = reason;
    ch.cert.feed_id = ch.id;
    cr_assert_eq(ocsp_responder_apply_change(F.resp, &ch), 0);
}

static void setup_cfg(const struct ocsp_config *cfg)
{
    pki_build();
    cr_assert_eq(make_responder(cfg), 0);
    change(STORE_CHANGE_ISSUE, 1, 0x1001, STORE_GOOD, STORE_REASON_NONE, 0);
    change(STORE_CHANGE_ISSUE, 1, 0x1002, STORE_GOOD, STORE_REASON_NONE, 0);
    change(STORE_CHANGE_ISSUE, 1, 0x1003, STORE_GOOD, STORE_REASON_NONE, 0);
    change(STORE_CHANGE_REVOKE, 1, 0x1003, STORE_REVOKED, STORE_REASON_KEY_COMPROMISE, 1700000000);
    change(STORE_CHANGE_ISSUE, 1, 0x1004, STORE_GOOD, STORE_REASON_NONE, 0);
    change(STORE_CHANGE_REVOKE, 1, 0x1004, STORE_REVOKED, STORE_REASON_UNSPECIFIED, 1700000100);
    change(STORE_CHANGE_ISSUE, 2, 0x2001, STORE_GOOD, STORE_REASON_NONE, 0);
}

static void setup(void)
{
    struct ocsp_config cfg;
    config_default(&cfg);
    setup_cfg(&cfg);
}

static void teardown(void)
{
    ocsp_responder_free(F.resp);
    X509_free(F.root);
    X509_free(F.ca1);
    X509_free(F.ca2);
    X509_free(F.responder);
    EVP_PKEY_free(F.root_key);
    EVP_PKEY_free(F.ca1_key);
    EVP_PKEY_free(F.ca2_key);
    EVP_PKEY_free(F.resp_key);
}

/* Plans a request built by tp_request. */
static void plan_of(OCSP_REQUEST *req, struct ocsp__plan *plan, int *slot)
{
    unsigned char *der = NULL;
    int len = tp_request_der(req, &der);
    cr_assert_gt(len, 0);
    cr_assert_eq(ocsp__plan_request(F.resp, der, (size_t)len, plan, slot), 0);
    OPENSSL_free(der);
}

static void plan_serials(X509 *issuer, const EVP_MD *md, const long *serials, int n, int nonce,
                         struct ocsp__plan *plan, int *slot)
{
    OCSP_REQUEST *req = tp_request(issuer, md, serials, n, nonce);
    cr_assert_not_null(req);
    plan_of(req, plan, slot);
    OCSP_REQUEST_free(req);
}

static void release_slot(int *slot)
{
    if (*slot)
        atomic_fetch_sub(&F.resp->nonce_inflight, 1);
    *slot = 0;
}

/* Signs a plan and parses the result; verifies the signature against root (+ca) as trust. */
static OCSP_BASICRESP *sign_and_verify(struct ocsp__plan *plan, X509 *trusted_ca, int64_t *tu)
{
    unsigned char *der = NULL;
    size_t len = 0;
    int64_t this_update, next_update;
    const unsigned char *p;
    OCSP_RESPONSE *rsp;
    OCSP_BASICRESP *bs;
    X509_STORE *store = X509_STORE_new();
    STACK_OF(X509) *extra = sk_X509_new_null();

    cr_assert_eq(plan->kind, OCSP__PLAN_SIGN);
    cr_assert_eq(ocsp__plan_sign_blocking(F.resp, plan, &der, &len, &this_update, &next_update), 0);
    cr_assert_gt(len, 0);
    p = der;
    rsp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    cr_assert_not_null(rsp);
    cr_assert_eq(OCSP_response_status(rsp), OCSP_RESPONSE_STATUS_SUCCESSFUL);
    bs = OCSP_response_get1_basic(rsp);
    cr_assert_not_null(bs);
    X509_STORE_add_cert(store, F.root);
    sk_X509_push(extra, trusted_ca);
    cr_assert_eq(OCSP_basic_verify(bs, extra, store, 0), 1, "OCSP_basic_verify failed");
    if (tu != NULL)
        *tu = this_update;
    cr_assert_eq(next_update - this_update, F.resp->cfg.validity_seconds);
    sk_X509_free(extra);
    X509_STORE_free(store);
    OCSP_RESPONSE_free(rsp);
    OPENSSL_free(der);
    return bs;
}

static int status_of(OCSP_BASICRESP *bs, X509 *issuer, const EVP_MD *md, long serial, int *reason,
                     long *revoked_at)
{
    ASN1_INTEGER *ai = ASN1_INTEGER_new();
    OCSP_CERTID *id;
    int status = -1, r = -1;
    ASN1_GENERALIZEDTIME *rev = NULL, *thisupd = NULL, *nextupd = NULL;
    ASN1_INTEGER_set(ai, serial);
    id = OCSP_cert_id_new(md, X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer), ai);
    if (!OCSP_resp_find_status(bs, id, &status, &r, &rev, &thisupd, &nextupd))
        status = -1;
    if (reason != NULL)
        *reason = r;
    if (revoked_at != NULL && rev != NULL) {
        struct tm tm;
        ASN1_TIME_to_tm(rev, &tm);
        *revoked_at = (long)timegm(&tm);
    }
    OCSP_CERTID_free(id);
    ASN1_INTEGER_free(ai);
    return status;
}

TestSuite(plan, .init = setup, .fini = teardown);

Test(plan, sha1_and_sha256_match_and_verify)
{
    const EVP_MD *mds[2] = {EVP_sha1(), EVP_sha256()};
    for (int i = 0; i < 2; i++) {
        struct ocsp__plan plan;
        int slot;
        long serial = 0x1001;
        OCSP_BASICRESP *bs;
        plan_serials(F.ca1, mds[i], &serial, 1, -1, &plan, &slot);
        cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
        cr_assert_eq(plan.cache_index, 1, "a known serial's miss must go to the cache");
        cr_assert_eq(plan.alg, i);
        cr_assert_eq(slot, 0, "cache misses do not use the nonce queue");
        bs = sign_and_verify(&plan, F.ca1, NULL);
        cr_assert_eq(status_of(bs, F.ca1, mds[i], serial, NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
        /* the responder certificate travels in certs and carries ocsp-nocheck */
        cr_assert_eq(sk_X509_num(OCSP_resp_get0_certs(bs)), 1);
        cr_assert_eq(X509_cmp(sk_X509_value(OCSP_resp_get0_certs(bs), 0), F.responder), 0);
        cr_assert_geq(X509_get_ext_by_NID(sk_X509_value(OCSP_resp_get0_certs(bs), 0),
                                          NID_id_pkix_OCSP_noCheck, -1),
                      0, "the responder certificate sent must carry id-pkix-ocsp-nocheck");
        cr_assert(X509_get_extended_key_usage(sk_X509_value(OCSP_resp_get0_certs(bs), 0)) &
                  XKU_OCSP_SIGN);
        /* byKey responder id */
        {
            const ASN1_OCTET_STRING *key_id = NULL;
            const X509_NAME *name = NULL;
            cr_assert_eq(OCSP_resp_get0_id(bs, &key_id, &name), 1);
            cr_assert_not_null(key_id);
            cr_assert_null(name);
        }
        OCSP_BASICRESP_free(bs);
        ocsp__plan_cleanup(&plan);
    }
}

/* Out of memory on the request path (STYLE: fail the Nth allocation): for every allocation the
 * planning and signing of a request make, that one allocation fails; each time the answer must be
 * a clean error (UTIL_ENOMEM -> tryLater, or a failed signature -> tryLater) or a correct response,
 * never a crash or a leak (the ASan build checks leaks), and the responder must still answer
 * correctly afterwards. Covers a cache miss (one CertID) and a live nonce request (two CertIDs). */
static int plan_and_sign_once(const unsigned char *der, size_t len, int *enomem)
{
    struct ocsp__plan plan;
    int slot = 0;
    int rc = ocsp__plan_request(F.resp, der, len, &plan, &slot);
    *enomem = rc == UTIL_ENOMEM;
    /* The request is valid: running out of memory is never the client's malformedRequest (the
     * decoder's and the CertID check's allocation failures were taken for garbage). */
    cr_assert(!(rc == 0 && plan.kind == OCSP__PLAN_ERROR &&
                plan.response_status == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST),
              "a valid request answered malformedRequest");
    /* The request is valid: running out of memory is never the client's malformedRequest (the
     * decoder's allocation failures were taken for garbage). */
    cr_assert(!(rc == 0 && plan.kind == OCSP__PLAN_ERROR &&
                plan.response_status == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST),
              "a valid request answered malformedRequest");
    if (rc == 0 && plan.kind == OCSP__PLAN_SIGN) {
        unsigned char *out = NULL;
        size_t out_len = 0;
        int64_t this_update = 0, next_update = 0;
        rc = ocsp__plan_sign_blocking(F.resp, &plan, &out, &out_len, &this_update, &next_update);
        if (rc == 0)
            cr_assert_gt(out_len, 0);
        OPENSSL_free(out);
        rc = rc == 0 ? 0 : 1;
    }
    ocsp__plan_cleanup(&plan);
    release_slot(&slot);
    ERR_clear_error();
    return rc;
}

Test(plan, every_allocation_failure_is_survived, .timeout = 120)
{
    long serials[2] = {0x1001, 0x1003};
    OCSP_REQUEST *reqs[2] = {tp_request(F.ca1, EVP_sha1(), serials, 1, -1),
                             tp_request(F.ca1, EVP_sha256(), serials, 2, 32)};
    for (int r = 0; r < 2; r++) {
        unsigned char *der = NULL;
        int len = tp_request_der(reqs[r], &der);
        long n;
        int failures_seen = 0;
        cr_assert_gt(len, 0);
        for (n = 1; n < 20000; n++) {
            int enomem = 0, hit, rc;
            ts_failalloc_arm(n);
            rc = plan_and_sign_once(der, (size_t)len, &enomem);
            hit = ts_failalloc_disarm();
            cr_assert(rc == 0 || rc == 1 || enomem, "allocation %ld: unexpected result %d", n, rc);
            failures_seen += hit && (rc != 0 || enomem);
            if (!hit)
                break; /* the whole path ran without reaching allocation n: all covered */
        }
        cr_assert_gt(n, 10, "request %d made only %ld allocations?", r, n);
        cr_assert_gt(failures_seen, 0, "no injected failure was reported as an error");
        /* And the responder is intact: the same request still gets a verified answer. */
        {
            int enomem = 0;
            cr_assert_eq(plan_and_sign_once(der, (size_t)len, &enomem), 0);
        }
        OPENSSL_free(der);
        OCSP_REQUEST_free(reqs[r]);
    }
}

Test(plan, revoked_reason_and_unspecified)
{
    struct ocsp__plan plan;
    int slot, reason;
    long revoked_at = 0;
    long serials[2] = {0x1003, 0x1004};
    OCSP_BASICRESP *bs;
    plan_serials(F.ca1, EVP_sha1(), serials, 2, -1, &plan, &slot);
    cr_assert_eq(plan.n, 2);
    cr_assert_eq(slot, 1, "several CertIDs are live work");
    bs = sign_and_verify(&plan, F.ca1, NULL);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha1(), 0x1003, &reason, &revoked_at),
                 V_OCSP_CERTSTATUS_REVOKED);
    cr_assert_eq(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
    cr_assert_eq(revoked_at, 1700000000);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha1(), 0x1004, &reason, &revoked_at),
                 V_OCSP_CERTSTATUS_REVOKED);
    cr_assert_eq(reason, -1, "unspecified must be omitted, got %d", reason);
    OCSP_BASICRESP_free(bs);
    release_slot(&slot);
    ocsp__plan_cleanup(&plan);
}

Test(plan, unknown_issuer_unauthorized)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1001;
    plan_serials(F.root, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    ocsp__plan_cleanup(&plan);
}

/* SHA-384 and SHA-512 CertIDs have no pre-signed slot: live work, bounded by the nonce slots. */
Test(plan, sha384_and_sha512_are_live_work)
{
    const EVP_MD *mds[2] = {EVP_sha384(), EVP_sha512()};
    for (int i = 0; i < 2; i++) {
        struct ocsp__plan plan;
        int slot;
        long serial = 0x1001;
        plan_serials(F.ca1, mds[i], &serial, 1, -1, &plan, &slot);
        cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
        cr_assert_eq(slot, 1, "a SHA-384/512 CertID must take a live slot");
        ocsp__plan_cleanup(&plan);
        release_slot(&slot);
    }
}

Test(plan, unsupported_hash_unauthorized)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1001;
    plan_serials(F.ca1, EVP_md5(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    ocsp__plan_cleanup(&plan);
}

Test(plan, garbage_malformed)
{
    static const unsigned char garbage[] = {0x30, 0x03, 0x02, 0x01, 0x05, 0xff};
    struct ocsp__plan plan;
    int slot;
    OCSP_REQUEST *req;
    unsigned char *der = NULL;
    int len;

    cr_assert_eq(ocsp__plan_request(F.resp, garbage, sizeof(garbage), &plan, &slot), 0);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    ocsp__plan_cleanup(&plan);
    /* a valid request followed by a trailing byte */
    {
        long serial = 0x1001;
        req = tp_request(F.ca1, EVP_sha1(), &serial, 1, -1);
    }
    len = tp_request_der(req, &der);
    {
        unsigned char *longer = malloc((size_t)len + 1);
        memcpy(longer, der, (size_t)len);
        longer[len] = 0;
        cr_assert_eq(ocsp__plan_request(F.resp, longer, (size_t)len + 1, &plan, &slot), 0);
        cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        ocsp__plan_cleanup(&plan);
        /* and truncated */
        cr_assert_eq(ocsp__plan_request(F.resp, der, (size_t)len - 1, &plan, &slot), 0);
        cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        ocsp__plan_cleanup(&plan);
        free(longer);
    }
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
}

static OCSP_CERTID *cid_of(X509 *issuer, const EVP_MD *md, long serial);

/* DER of one TLV (tag, content) at out; returns its length. */
static size_t der_put(unsigned char *out, unsigned char tag, const unsigned char *content,
                      size_t len)
{
    size_t h = 0;
    out[h++] = tag;
    if (len < 0x80) {
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = 0x82;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    }
    memmove(out + h, content, len);
    return h + len;
}

/* An OCSPRequest for (issuer, serial) by SHA-256 whose hashAlgorithm parameters are exactly
 * params (params_len 0: absent), which OpenSSL's request API cannot make. Returns its length. */
static size_t request_with_params(X509 *issuer, long serial, const unsigned char *params,
                                  size_t params_len, unsigned char *out, size_t cap)
{
    static const unsigned char oid_sha256[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                               0x65, 0x03, 0x04, 0x02, 0x01};
    OCSP_CERTID *id = cid_of(issuer, EVP_sha256(), serial);
    ASN1_OCTET_STRING *nh = NULL, *kh = NULL;
    ASN1_OBJECT *md = NULL;
    ASN1_INTEGER *ai = NULL;
    unsigned char *buf = malloc(cap), *tmp = malloc(cap), *p;
    size_t n = 0;
    int ilen;

    cr_assert(buf != NULL && tmp != NULL && params_len + 200 < cap);
    cr_assert_eq(OCSP_id_get0_info(&nh, &md, &kh, &ai, id), 1);
    memcpy(tmp, oid_sha256, sizeof(oid_sha256));
    if (params_len > 0) /* memcpy's source may not be NULL even for 0 bytes */
        memcpy(tmp + sizeof(oid_sha256), params, params_len);
    n = der_put(buf, 0x30, tmp, sizeof(oid_sha256) + params_len); /* AlgorithmIdentifier */
    n += der_put(buf + n, 0x04, ASN1_STRING_get0_data(nh), (size_t)ASN1_STRING_length(nh));
    n += der_put(buf + n, 0x04, ASN1_STRING_get0_data(kh), (size_t)ASN1_STRING_length(kh));
    p = buf + n;
    ilen = i2d_ASN1_INTEGER(ai, &p);
    cr_assert_gt(ilen, 0);
    n += (size_t)ilen;
    for (int level = 0; level < 5; level++) { /* CertID, Request, requestList, TBS, OCSPRequest */
        n = der_put(tmp, 0x30, buf, n);
        memcpy(buf, tmp, n);
    }
    memcpy(out, buf, n);
    free(buf);
    free(tmp);
    OCSP_CERTID_free(id);
    return n;
}

/* [issue 15.2] A CertID's hashAlgorithm parameters are absent or NULL, or the request is
 * malformed: a client's bytes there never reach a response. A response that goes to the shared
 * cache carries the server's own CertID (NULL parameters), whatever form the client used. */
Test(plan, certid_parameters_absent_or_null_only)
{
    static const unsigned char null_params[] = {0x05, 0x00};
    static const unsigned char int_params[] = {0x02, 0x01, 0x00};
    unsigned char junk[4 + 4096];
    unsigned char *der = malloc(8192);
    struct ocsp__plan plan;
    int slot;
    size_t len;

    memset(junk + 4, 'J', 4096);
    junk[0] = 0x04; /* OCTET STRING of 4096 attacker bytes */
    junk[1] = 0x82;
    junk[2] = 0x10;
    junk[3] = 0x00;
    len = request_with_params(F.ca1, 0x1001, junk, sizeof(junk), der, 8192);
    cr_assert_eq(ocsp__plan_request(F.resp, der, len, &plan, &slot), 0);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    ocsp__plan_cleanup(&plan);
    len = request_with_params(F.ca1, 0x1001, int_params, sizeof(int_params), der, 8192);
    cr_assert_eq(ocsp__plan_request(F.resp, der, len, &plan, &slot), 0);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    ocsp__plan_cleanup(&plan);
    /* Absent and NULL are both answered, each with the canonical CertID (NULL parameters),
     * which is what the cached response must carry. */
    for (int absent = 0; absent < 2; absent++) {
        static const unsigned char canonical_alg[] = {0x30, 0x0d, 0x06, 0x09, 0x60,
                                                      0x86, 0x48, 0x01, 0x65, 0x03,
                                                      0x04, 0x02, 0x01, 0x05, 0x00};
        unsigned char *cid_der = NULL;
        OCSP_BASICRESP *bs;
        int cid_len;
        len = request_with_params(F.ca1, 0x1001, null_params, absent ? 0 : sizeof(null_params), der,
                                  8192);
        cr_assert_eq(ocsp__plan_request(F.resp, der, len, &plan, &slot), 0);
        cr_assert_eq(plan.kind, OCSP__PLAN_SIGN, "absent=%d", absent);
        cr_assert_eq(plan.cache_index, 1);
        cid_len = i2d_OCSP_CERTID(plan.singles[0].cid, &cid_der);
        cr_assert_gt(cid_len, (int)sizeof(canonical_alg) + 2);
        cr_assert(memcmp(cid_der + 2, canonical_alg, sizeof(canonical_alg)) == 0,
                  "absent=%d: the cached response would not carry the canonical CertID", absent);
        OPENSSL_free(cid_der);
        bs = sign_and_verify(&plan, F.ca1, NULL);
        cr_assert_eq(status_of(bs, F.ca1, EVP_sha256(), 0x1001, NULL, NULL),
                     V_OCSP_CERTSTATUS_GOOD);
        OCSP_BASICRESP_free(bs);
        ocsp__plan_cleanup(&plan);
    }
    free(der);
}

Test(plan, nonce_lengths)
{
    const int lens[5] = {0, 1, 32, 128, 129};
    const int ok[5] = {0, 1, 1, 1, 0};
    for (int i = 0; i < 5; i++) {
        struct ocsp__plan plan;
        int slot;
        long serial = 0x1001;
        OCSP_REQUEST *req = tp_request(F.ca1, EVP_sha1(), &serial, 1, lens[i]);
        plan_of(req, &plan, &slot);
        if (!ok[i]) {
            cr_assert_eq(plan.kind, OCSP__PLAN_ERROR, "nonce %d", lens[i]);
            cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
        } else {
            OCSP_BASICRESP *bs;
            cr_assert_eq(plan.kind, OCSP__PLAN_SIGN, "nonce %d", lens[i]);
            cr_assert_eq(plan.use_nonce, 1);
            cr_assert_eq(plan.cache_index, 0, "nonce responses are never cached");
            cr_assert_eq(slot, 1);
            bs = sign_and_verify(&plan, F.ca1, NULL);
            cr_assert_eq(OCSP_check_nonce(req, bs), 1, "nonce %d not echoed", lens[i]);
            OCSP_BASICRESP_free(bs);
        }
        release_slot(&slot);
        ocsp__plan_cleanup(&plan);
        OCSP_REQUEST_free(req);
    }
}

Test(plan, nonce_queue_limit)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1001;
    atomic_store(&F.resp->nonce_inflight, F.resp->cfg.nonce_queue_max);
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, 16, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_TRYLATER);
    ocsp__plan_cleanup(&plan);
    /* with the fallback, the cached path answers without nonce */
    F.resp->cfg.nonce_overflow_cached = 1;
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, 16, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
    cr_assert_eq(plan.use_nonce, 0);
    cr_assert_eq(plan.cache_index, 1);
    ocsp__plan_cleanup(&plan);
    {
        struct ocsp_stats st;
        ocsp_stats_get(F.resp, &st);
        cr_assert_eq(st.nonce_rejected, 2);
    }
    atomic_store(&F.resp->nonce_inflight, 0);
}

Test(plan, ignore_nonce_issuer_uses_cache_path)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x2001;
    OCSP_BASICRESP *bs;
    plan_serials(F.ca2, EVP_sha1(), &serial, 1, 16, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
    cr_assert_eq(plan.use_nonce, 0);
    cr_assert_eq(plan.cache_index, 1);
    bs = sign_and_verify(&plan, F.ca2, NULL);
    /* the CA signs itself: no certificate in the response */
    cr_assert_leq(sk_X509_num(OCSP_resp_get0_certs(bs)), 0); /* -1: no certs field at all */
    cr_assert_eq(status_of(bs, F.ca2, EVP_sha1(), serial, NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
    OCSP_BASICRESP_free(bs);
    ocsp__plan_cleanup(&plan);
}

Test(plan, multi_certid_signers_and_bound)
{
    struct ocsp__plan plan;
    int slot;
    long serials[11];
    OCSP_REQUEST *req;
    OCSP_BASICRESP *bs;
    /* two CertIDs of CA 1, one SHA-1 one SHA-256 */
    req = tp_request(F.ca1, EVP_sha1(), (long[]){0x1001}, 1, -1);
    {
        ASN1_INTEGER *ai = ASN1_INTEGER_new();
        ASN1_INTEGER_set(ai, 0x1002);
        OCSP_request_add0_id(req, OCSP_cert_id_new(EVP_sha256(), X509_get_subject_name(F.ca1),
                                                   X509_get0_pubkey_bitstr(F.ca1), ai));
        ASN1_INTEGER_free(ai);
    }
    plan_of(req, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
    bs = sign_and_verify(&plan, F.ca1, NULL);
    cr_assert_eq(OCSP_resp_count(bs), 2);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha1(), 0x1001, NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha256(), 0x1002, NULL, NULL), V_OCSP_CERTSTATUS_GOOD);
    OCSP_BASICRESP_free(bs);
    release_slot(&slot);
    ocsp__plan_cleanup(&plan);
    OCSP_REQUEST_free(req);

    /* CA 1 (delegated responder) and CA 2 (self-signing) together: different signers */
    req = tp_request(F.ca1, EVP_sha1(), (long[]){0x1001}, 1, -1);
    {
        ASN1_INTEGER *ai = ASN1_INTEGER_new();
        ASN1_INTEGER_set(ai, 0x2001);
        OCSP_request_add0_id(req, OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(F.ca2),
                                                   X509_get0_pubkey_bitstr(F.ca2), ai));
        ASN1_INTEGER_free(ai);
    }
    plan_of(req, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_ERROR);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    cr_assert_eq(slot, 0);
    ocsp__plan_cleanup(&plan);
    OCSP_REQUEST_free(req);

    /* 11 CertIDs > max 10 */
    for (int i = 0; i < 11; i++)
        serials[i] = 0x1001;
    plan_serials(F.ca1, EVP_sha1(), serials, 11, -1, &plan, &slot);
    cr_assert_eq(plan.response_status, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    ocsp__plan_cleanup(&plan);
}

/* Simulates the loop's completion: sign, install in the index. */
static void fill_cache(long serial)
{
    struct ocsp__plan plan;
    int slot;
    unsigned char *der = NULL;
    size_t len;
    int64_t tu, nu;
    struct ocsp__cached *c;
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
    cr_assert_eq(ocsp__plan_sign_blocking(F.resp, &plan, &der, &len, &tu, &nu), 0);
    c = ocsp__cached_new(der, len, tu, nu, tu + (nu - tu) / 2, plan.worst_status);
    cr_assert_eq(ocsp__index_install(F.resp->index, plan.issuer, plan.serial, plan.serial_len,
                                     plan.alg, plan.feed_id, c),
                 1);
    ocsp__cached_unref(c);
    OPENSSL_free(der);
    ocsp__plan_cleanup(&plan);
}

Test(plan, cache_hit_then_revocation_invalidates)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1002;
    fill_cache(serial);
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_CACHED);
    cr_assert_not_null(plan.cached);
    cr_assert_str_neq(plan.cached->etag, "");
    cr_assert_not_null(strstr(plan.cached->headers, "Last-Modified: "));
    ocsp__plan_cleanup(&plan);

    /* the same change delivered twice changes nothing: still cached */
    {
        struct store_change ch;
        memset(&ch, 0, sizeof(ch));
        ch.id = 2; /* the issue of 0x1002, already applied */
        ch.kind = STORE_CHANGE_ISSUE;
        ch.cert.issuer_id = 1;
        ch.cert.serial_len = tp_serial_bytes(serial, ch.cert.serial);
        ch.cert.status = STORE_GOOD;
        cr_assert_eq(ocsp_responder_apply_change(F.resp, &ch), 0);
        plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
        cr_assert_eq(plan.kind, OCSP__PLAN_CACHED, "re-delivery must be idempotent");
        ocsp__plan_cleanup(&plan);
    }

    change(STORE_CHANGE_REVOKE, 1, serial, STORE_REVOKED, STORE_REASON_SUPERSEDED, time(NULL));
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN, "the stale good response must be gone");
    cr_assert_eq(plan.singles[0].cert_status, V_OCSP_CERTSTATUS_REVOKED);
    ocsp__plan_cleanup(&plan);
    /* nothing is visible until the pre-signer re-signed it */
    cr_assert_lt(ocsp_responder_visible_feed_id(F.resp), F.feed);
}

Test(plan, unknown_serial_status)
{
    struct ocsp__plan plan;
    int slot;
    long serial = 0x7777;
    OCSP_BASICRESP *bs;
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_SIGN);
    cr_assert_eq(plan.cache_recent, 1);
    cr_assert_eq(slot, 1, "unknown serials are bounded live work");
    bs = sign_and_verify(&plan, F.ca1, NULL);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha1(), serial, NULL, NULL), V_OCSP_CERTSTATUS_UNKNOWN);
    cr_assert_lt(OCSP_BASICRESP_get_ext_by_OBJ(bs, OBJ_txt2obj("1.3.6.1.5.5.7.48.1.9", 1), -1), 0);
    OCSP_BASICRESP_free(bs);
    release_slot(&slot);
    ocsp__plan_cleanup(&plan);
}

Test(extended, unknown_as_extended_revoke, .fini = teardown)
{
    struct ocsp_config cfg;
    struct ocsp__plan plan;
    int slot, reason;
    long revoked_at = -1;
    long serial = 0x7777;
    OCSP_BASICRESP *bs;
    ASN1_OBJECT *obj = OBJ_txt2obj("1.3.6.1.5.5.7.48.1.9", 1);
    int idx;
    config_default(&cfg);
    cfg.unknown_policy = OCSP_UNKNOWN_EXTENDED_REVOKE;
    cfg.archive_cutoff_seconds = 86400 * 365;
    setup_cfg(&cfg);
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    bs = sign_and_verify(&plan, F.ca1, NULL);
    cr_assert_eq(status_of(bs, F.ca1, EVP_sha1(), serial, &reason, &revoked_at),
                 V_OCSP_CERTSTATUS_REVOKED);
    cr_assert_eq(reason, OCSP_REVOKED_STATUS_CERTIFICATEHOLD);
    cr_assert_eq(revoked_at, 0);
    idx = OCSP_BASICRESP_get_ext_by_OBJ(bs, obj, -1);
    cr_assert_geq(idx, 0, "extended revoke extension missing");
    /* archive cutoff in the SingleResponse */
    cr_assert_geq(
        OCSP_SINGLERESP_get_ext_by_NID(OCSP_resp_get0(bs, 0), NID_id_pkix_OCSP_archiveCutoff, -1),
        0);
    ASN1_OBJECT_free(obj);
    OCSP_BASICRESP_free(bs);
    release_slot(&slot);
    ocsp__plan_cleanup(&plan);
}

Test(extended, byname_responder_id, .fini = teardown)
{
    struct ocsp_config cfg;
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1001;
    OCSP_BASICRESP *bs;
    const ASN1_OCTET_STRING *key_id = NULL;
    const X509_NAME *name = NULL;
    config_default(&cfg);
    cfg.responder_id = OCSP_RESPID_BY_NAME;
    setup_cfg(&cfg);
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    bs = sign_and_verify(&plan, F.ca1, NULL);
    cr_assert_eq(OCSP_resp_get0_id(bs, &key_id, &name), 1);
    cr_assert_null(key_id);
    cr_assert_eq(X509_NAME_cmp(name, X509_get_subject_name(F.responder)), 0);
    OCSP_BASICRESP_free(bs);
    ocsp__plan_cleanup(&plan);
}

Test(config, rejects_bad_signers, .fini = teardown)
{
    struct ocsp_config cfg;
    struct ocsp_issuer_config is;
    struct ocsp_responder *r = NULL;
    config_default(&cfg);
    pki_build();
    memset(&is, 0, sizeof(is));
    is.name = "ca1";
    is.store_issuer_id = 1;
    is.cert = F.ca1;
    is.signer_cert = F.responder;
    is.signer_key = &F.k_ca2; /* wrong key for the responder certificate */
    cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, NULL, &r), UTIL_ECONFIG);
    is.signer_cert = F.ca2; /* not issued by ca1, not an OCSP signer */
    cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, NULL, &r), UTIL_ECONFIG);
    (void)snprintf(cfg.path, sizeof(cfg.path), "ocsp"); /* fits */
    is.signer_cert = F.responder;
    is.signer_key = &F.k_resp;
    cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, NULL, &r), UTIL_ECONFIG);
    (void)snprintf(cfg.path, sizeof(cfg.path), "/ocsp"); /* fits */
    cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, NULL, &r), 0);
    ocsp_responder_free(r);
    r = NULL;
    {
        /* the same responder key in a certificate that expired yesterday */
        EVP_MD_CTX *ctx = tp_soft_ctx(F.ca1_key);
        X509 *expired = tp_cert(F.ca1, ctx, F.resp_key, "Expired Responder", 77, TP_RESPONDER, -1);
        cr_assert_not_null(expired);
        is.signer_cert = expired;
        cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, NULL, &r), UTIL_ECONFIG);
        X509_free(expired);
        EVP_MD_CTX_free(ctx);
    }
}

/* ---- pre-signer (software signing on its own thread) ---------------------------------------- */

static _Atomic int64_t seen_visible;
static void on_visible(void *ctx, int64_t feed_id)
{
    (void)ctx;
    atomic_store(&seen_visible, feed_id);
}

Test(presign, signs_all_and_resigns_revocation, .fini = teardown, .timeout = 60)
{
    struct ocsp_config cfg;
    struct ocsp_stats st;
    struct ocsp__plan plan;
    int slot;
    long serial = 0x1001;
    int64_t deadline;

    config_default(&cfg);
    cfg.on_visible = on_visible;
    setup_cfg(&cfg);
    cr_assert_eq(ocsp_responder_start(F.resp), 0);
    deadline = util_mono_ms() + 20000;
    do {
        ocsp_stats_get(F.resp, &st);
        if (st.cache_entries >= 5 && st.visible_feed_id == F.feed)
            break;
        usleep(20000);
    } while (util_mono_ms() < deadline);
    cr_assert_eq(st.index_entries, 5);
    cr_assert_eq(st.cache_entries, 5, "every certificate pre-signed (SHA-1)");
    cr_assert_eq(st.visible_feed_id, F.feed);

    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_CACHED);
    ocsp__plan_cleanup(&plan);

    /* revoke: visible (re-signed, cached as revoked) well within a second */
    {
        int64_t t0 = util_mono_ms();
        change(STORE_CHANGE_REVOKE, 1, serial, STORE_REVOKED, STORE_REASON_KEY_COMPROMISE,
               time(NULL));
        while (ocsp_responder_visible_feed_id(F.resp) < F.feed && util_mono_ms() - t0 < 5000)
            usleep(1000);
        cr_assert_eq(ocsp_responder_visible_feed_id(F.resp), F.feed);
        cr_log_info("revocation visible after %lld ms", (long long)(util_mono_ms() - t0));
        cr_assert_lt(util_mono_ms() - t0, 1000);
    }
    plan_serials(F.ca1, EVP_sha1(), &serial, 1, -1, &plan, &slot);
    cr_assert_eq(plan.kind, OCSP__PLAN_CACHED);
    cr_assert_eq(plan.cached->cert_status, V_OCSP_CERTSTATUS_REVOKED);
    ocsp__plan_cleanup(&plan);
    {
        int64_t t0 = util_mono_ms();
        while (atomic_load(&seen_visible) != F.feed && util_mono_ms() - t0 < 3000)
            usleep(1000);
        cr_assert_eq(atomic_load(&seen_visible), F.feed, "on_visible not called");
    }
    ocsp_responder_stop(F.resp);
}

/* ---- index scale and the cache cap ---------------------------------------------------------- */

Test(index, million_entries, .timeout = 120)
{
    struct ocsp__index *idx = NULL;
    const int n = 1000000;
    unsigned char serial[20];
    struct ocsp__status st = {
        .status = STORE_GOOD, .reason = STORE_REASON_NONE, .not_after = 2000000000, .feed_id = 1};
    int changed;
    int64_t t0;
    struct ocsp__index_counts counts;

    cr_assert_eq(ocsp__index_new(1 << 20, &idx), 0);
    t0 = util_mono_ms();
    for (int i = 0; i < n; i++) {
        /* 16-byte random-looking serials, like a real CA's */
        uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull;
        memcpy(serial, &x, 8);
        memcpy(serial + 8, &i, 4);
        memset(serial + 12, 0x5a, 4);
        serial[0] &= 0x7f;
        st.feed_id = i + 1;
        cr_assert_eq(ocsp__index_put(idx, i % 3, serial, 16, &st, 0, &changed), 0);
    }
    cr_log_info("index: %d inserts in %lld ms", n, (long long)(util_mono_ms() - t0));
    t0 = util_mono_ms();
    for (int i = 0; i < n; i++) {
        struct ocsp__status got;
        struct ocsp__cached *c;
        uint64_t x = (uint64_t)i * 0x9e3779b97f4a7c15ull;
        memcpy(serial, &x, 8);
        memcpy(serial + 8, &i, 4);
        memset(serial + 12, 0x5a, 4);
        serial[0] &= 0x7f;
        cr_assert_eq(ocsp__index_lookup(idx, i % 3, serial, 16, OCSP__SHA1, &got, &c), 1);
        cr_assert_eq(got.feed_id, i + 1);
        /* a different issuer index does not find it */
        if (i % 1000 == 0)
            cr_assert_eq(ocsp__index_lookup(idx, (i + 1) % 3, serial, 16, OCSP__SHA1, &got, &c), 0);
    }
    cr_log_info("index: %d lookups in %lld ms", n, (long long)(util_mono_ms() - t0));
    ocsp__index_counts(idx, &counts);
    cr_assert_eq(counts.entries, (uint64_t)n);
    ocsp__index_free(idx);
}

Test(index, cache_cap_evicts_good_first)
{
    struct ocsp__index *idx = NULL;
    unsigned char serial[4];
    unsigned char der[1000];
    struct ocsp__status st = {
        .status = STORE_GOOD, .reason = STORE_REASON_NONE, .not_after = 2000000000, .feed_id = 1};
    struct ocsp__index_counts counts;
    int changed;
    const size_t cap = 64 * 20000; /* about 18 responses per shard */

    memset(der, 0x30, sizeof(der));
    cr_assert_eq(ocsp__index_new(cap, &idx), 0);
    for (int i = 0; i < 4000; i++) {
        struct ocsp__cached *c = ocsp__cached_new(der, sizeof(der), 1, 2, 1, 0);
        memcpy(serial, &i, 4);
        serial[0] |= 1;
        st.status = i < 100 ? STORE_REVOKED : STORE_GOOD;
        st.feed_id = i + 1;
        cr_assert_eq(ocsp__index_put(idx, 0, serial, 4, &st, 0, &changed), 0);
        cr_assert_eq(ocsp__index_install(idx, 0, serial, 4, OCSP__SHA1, i + 1, c), 1);
        ocsp__cached_unref(c);
    }
    ocsp__index_counts(idx, &counts);
    cr_assert_leq(counts.bytes, cap, "cache holds %llu bytes > cap",
                  (unsigned long long)counts.bytes);
    cr_assert_gt(counts.evictions, 0);
    /* revoked responses survive while good ones can go */
    {
        int kept = 0;
        for (int i = 0; i < 100; i++) {
            struct ocsp__status got;
            struct ocsp__cached *c = NULL;
            memcpy(serial, &i, 4);
            serial[0] |= 1;
            cr_assert_eq(ocsp__index_lookup(idx, 0, serial, 4, OCSP__SHA1, &got, &c), 1);
            kept += c != NULL;
            ocsp__cached_unref(c);
        }
        cr_assert_geq(kept, 95, "only %d of 100 revoked responses kept", kept);
    }
    ocsp__index_free(idx);
}

/* ---- the plain request path ---------------------------------------------------------------- */

/* The plain path (ocsp__request_parse_plain) against OpenSSL's decoder: 1 when it took der; then
 * ocsp__request_parse must accept the same request with the same CertID values, the same nonce,
 * and the bytes the plain path would repeat (CertID, nonce Extension) must be OpenSSL's encoding
 * of what it read. */
static int plain_agrees(const unsigned char *der, size_t len)
{
    struct ocsp__parsed id_p, p;
    const struct ocsp__reqid *id = &id_p.one;
    int plain = ocsp__request_parse_plain(der, len, &id_p);

    cr_assert_eq(ocsp__request_parse(der, len, 10, &p), 0);
    if (plain) {
        unsigned char *cid = NULL, *ext = NULL;
        int cid_len = 0, ext_len = 0;
        cr_assert_eq(p.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
        cr_assert_eq(id_p.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
        cr_assert_eq(p.n, 1);
        cr_assert_eq(id_p.n, 1);
        cr_assert_eq(id_p.ids, id);
        cr_assert_null(id->cid);
        cr_assert_eq(id->alg, p.ids[0].alg);
        cr_assert_eq(id->name_hash_len, p.ids[0].name_hash_len);
        cr_assert_eq(id->key_hash_len, p.ids[0].key_hash_len);
        cr_assert_eq(id->serial_len, p.ids[0].serial_len);
        cr_assert_eq(memcmp(id->name_hash, p.ids[0].name_hash, id->name_hash_len), 0);
        cr_assert_eq(memcmp(id->key_hash, p.ids[0].key_hash, id->key_hash_len), 0);
        cr_assert_eq(memcmp(id->serial, p.ids[0].serial, id->serial_len), 0);
        cid_len = i2d_OCSP_CERTID(p.ids[0].cid, &cid);
        cr_assert_eq((size_t)cid_len, id->cid_der_len);
        cr_assert_eq(memcmp(cid, id->cid_der, id->cid_der_len), 0);
        cr_assert_eq(p.nonce != NULL, id_p.nonce_der != NULL);
        if (p.nonce != NULL) {
            cr_assert_eq(id_p.nonce_len, p.nonce_len);
            ext_len = i2d_X509_EXTENSION(p.nonce, &ext);
            cr_assert_eq((size_t)ext_len, id_p.nonce_der_len);
            cr_assert_eq(memcmp(ext, id_p.nonce_der, id_p.nonce_der_len), 0);
        }
        OPENSSL_free(cid);
        OPENSSL_free(ext);
    }
    ocsp__parsed_cleanup(&id_p);
    ocsp__parsed_cleanup(&p);
    return plain;
}

static int plain_file(const char *name)
{
    char path[512];
    unsigned char *data = NULL;
    size_t len = 0;
    int plain;

    (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/ocsp_request/%s", PKIVA_SOURCE_DIR,
                   name);
    cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
    plain = plain_agrees(data, len);
    free(data);
    return plain;
}

Test(corpus, plain_path_agrees_with_openssl)
{
    char path[512];
    unsigned char *data = NULL, *m;
    size_t len = 0;

    /* The common requests take the plain path; every other shape is left to OpenSSL. */
    cr_assert(plain_file("sha1-one.der"));
    cr_assert(plain_file("sha256-one.der"));
    cr_assert(plain_file("sha256-absent-params.der"));
    cr_assert(plain_file("sha256-null-params.der"));
    cr_assert(plain_file("regression-sha1-serial-1234"));
    cr_assert(plain_file("sha1-nonce.der"));
    cr_assert(!plain_file("sha1-three.der"));
    cr_assert(!plain_file("signed.der"));
    cr_assert(!plain_file("not-a-request.der"));
    cr_assert(!plain_file("not-sha256-junk-params.der"));
    cr_assert(!plain_file("not-sha256-two-params.der"));
    cr_assert(!plain_file("nonce-raw-legacy.der"));
    cr_assert(!plain_file("nonce-critical.der"));
    cr_assert(!plain_file("not-nonce-129.der"));
    cr_assert(!plain_file("nonce-and-other-ext.der"));
    /* Every truncation and every one-octet change of a plain request, with and without a nonce:
     * where the plain path takes the result, OpenSSL reads the same values and bytes. */
    for (int f = 0; f < 2; f++) {
        (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/ocsp_request/%s", PKIVA_SOURCE_DIR,
                       f == 0 ? "sha1-one.der" : "sha1-nonce.der");
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0);
        for (size_t cut = 0; cut < len; cut++)
            cr_assert(!plain_agrees(data, cut), "truncated to %zu", cut);
        m = malloc(len);
        cr_assert_not_null(m);
        for (size_t i = 0; i < len; i++) {
            static const unsigned char values[] = {0x00, 0x01, 0x02, 0x04, 0x05, 0x06, 0x30,
                                                   0x7f, 0x80, 0x81, 0x82, 0xa0, 0xa2, 0xff};
            for (size_t v = 0; v < sizeof(values); v++) {
                memcpy(m, data, len);
                m[i] = values[v];
                (void)plain_agrees(m, len);
                m[i] = (unsigned char)(data[i] + 1);
                (void)plain_agrees(m, len);
            }
        }
        free(m);
        free(data);
        data = NULL;
    }
}

Test(plan, metrics_text)
{
    char buf[4096];
    int need = ocsp_metrics(F.resp, buf, sizeof(buf));
    cr_assert_gt(need, 0);
    cr_assert_eq((size_t)need, strlen(buf));
    cr_assert_not_null(strstr(buf, "pkiva_ocsp_index_entries 5\n"), "%s", buf);
    cr_assert_not_null(strstr(buf, "pkiva_ocsp_requests_total{method=\"GET\"} 0\n"), "%s", buf);
    cr_assert_not_null(strstr(buf, "pkiva_ocsp_responses_total{status=\"good\"} "), "%s", buf);
    /* too small a buffer is said so */
    cr_assert_eq(ocsp_metrics(F.resp, buf, 10), UTIL_EINVAL);
}

/* ---- direct encoding (ocsp_der.c) ----------------------------------------------------------- */

/* The invariant of ocsp_der.c: for the same ocsp__build, producedAt and signature, the template
 * encodes the bytes OpenSSL's ocsp__response_build makes. Each shape is built by OpenSSL with key,
 * its template taken from that response and the response rebuilt with OpenSSL's signature; with an
 * RSA key (deterministic PKCS#1 v1.5) also signed afresh through ocsp__sign_mctx. */
struct shape {
    X509 *signer;
    EVP_PKEY *key;
    int include_signer, by_name;
    struct ocsp__single singles[4];
    int n;
    int64_t archive_cutoff;
    OCSP_REQUEST *nonce_from;
};

static OCSP_CERTID *cid_of(X509 *issuer, const EVP_MD *md, long serial)
{
    ASN1_INTEGER *ai = ASN1_INTEGER_new();
    OCSP_CERTID *id;
    cr_assert(ai != NULL && ASN1_INTEGER_set(ai, serial));
    id = OCSP_cert_id_new(md, X509_get_subject_name(issuer), X509_get0_pubkey_bitstr(issuer), ai);
    ASN1_INTEGER_free(ai);
    cr_assert_not_null(id);
    return id;
}

static void build_pair(const struct ocsp__build *b, EVP_PKEY *key, int deterministic,
                       const char *what)
{
    EVP_MD_CTX *mctx = tp_soft_ctx(key);
    unsigned char *ref = NULL, *again = NULL, *fresh = NULL;
    size_t ref_len = 0, again_len = 0, fresh_len = 0;
    struct ocsp__tmpl *t = NULL;
    struct ocsp__replay replay;
    int64_t produced;

    cr_assert_eq(ocsp__response_build(b, mctx, &ref, &ref_len), 0, "%s", what);
    EVP_MD_CTX_free(mctx);
    cr_assert_eq(ocsp__tmpl_from_response(ref, ref_len, &t, &produced, &replay.sig, &replay.len), 0,
                 "%s", what);
    cr_assert_eq(ocsp__tmpl_build(t, b, produced, ocsp__sign_replay, &replay, &again, &again_len),
                 0, "%s", what);
    cr_assert_eq(again_len, ref_len, "%s: %zu octets, OpenSSL %zu", what, again_len, ref_len);
    cr_assert(memcmp(again, ref, ref_len) == 0, "%s: other bytes than OpenSSL's", what);
    /* Signed through a DigestSign context like production: verifies; with RSA, same bytes. */
    mctx = tp_soft_ctx(key);
    cr_assert_eq(ocsp__tmpl_build(t, b, produced, ocsp__sign_mctx, mctx, &fresh, &fresh_len), 0);
    EVP_MD_CTX_free(mctx);
    if (deterministic)
        cr_assert(fresh_len == ref_len && memcmp(fresh, ref, ref_len) == 0, "%s: signed afresh",
                  what);
    {
        const unsigned char *p = fresh;
        OCSP_RESPONSE *rsp = d2i_OCSP_RESPONSE(NULL, &p, (long)fresh_len);
        OCSP_BASICRESP *bs = rsp != NULL ? OCSP_response_get1_basic(rsp) : NULL;
        STACK_OF(X509) *certs = sk_X509_new_null();
        cr_assert_not_null(bs, "%s", what);
        sk_X509_push(certs, b->signer_cert);
        cr_assert_eq(OCSP_basic_verify(bs, certs, NULL, OCSP_NOVERIFY), 1, "%s: signature", what);
        sk_X509_free(certs);
        OCSP_BASICRESP_free(bs);
        OCSP_RESPONSE_free(rsp);
    }
    OPENSSL_free(ref);
    OPENSSL_free(again);
    OPENSSL_free(fresh);
    ocsp__tmpl_free(t);
}

static void each_shape(X509 *signer, EVP_PKEY *key, int deterministic)
{
    const EVP_MD *mds[3] = {EVP_sha1(), EVP_sha256(), EVP_sha384()};
    long serials[1] = {0x1001};
    int nonce_lens[4] = {1, 16, 32, 128};
    int64_t now = (int64_t)time(NULL);

    for (int by_name = 0; by_name < 2; by_name++)
        for (int include = 0; include < 2; include++)
            for (int shape = 0; shape < 9; shape++) {
                struct ocsp__single s[3];
                struct ocsp__build b;
                char what[96];
                memset(s, 0, sizeof(s));
                memset(&b, 0, sizeof(b));
                b.signer_cert = signer;
                b.include_signer = include;
                b.by_name = by_name;
                b.singles = s;
                b.n = 1;
                b.this_update = now;
                b.next_update = now + 4 * 86400;
                s[0].cid = cid_of(F.ca1, mds[shape % 3], 0x1001 + shape);
                s[0].cert_status = V_OCSP_CERTSTATUS_GOOD;
                switch (shape) {
                case 1: /* revoked, keyCompromise, invalidity date */
                    s[0].cert_status = V_OCSP_CERTSTATUS_REVOKED;
                    s[0].reason = STORE_REASON_KEY_COMPROMISE;
                    s[0].revoked_at = 1700000000;
                    s[0].invalidity_date = 1699990000;
                    break;
                case 2: /* revoked, unspecified (no reason), before 1970 never happens: 1970 */
                    s[0].cert_status = V_OCSP_CERTSTATUS_REVOKED;
                    s[0].reason = STORE_REASON_UNSPECIFIED;
                    s[0].revoked_at = 1;
                    break;
                case 3: s[0].cert_status = V_OCSP_CERTSTATUS_UNKNOWN; break;
                case 4: /* never issued, answered as RFC 6960 extended revoke */
                    s[0].cert_status = V_OCSP_CERTSTATUS_REVOKED;
                    s[0].reason = STORE_REASON_CERTIFICATE_HOLD;
                    s[0].extended_revoke = 1;
                    break;
                case 5: /* archive cutoff, revoked with removeFromCRL-less reason and date */
                    b.archive_cutoff_seconds = 7 * 365 * 86400;
                    s[0].cert_status = V_OCSP_CERTSTATUS_REVOKED;
                    s[0].reason = STORE_REASON_SUPERSEDED;
                    s[0].revoked_at = 1600000000;
                    s[0].invalidity_date = 1500000000;
                    break;
                case 6: /* three answers of mixed status in one response */
                    b.n = 3;
                    s[1].cid = cid_of(F.ca1, EVP_sha256(), 0x7fffffffL);
                    s[1].cert_status = V_OCSP_CERTSTATUS_REVOKED;
                    s[1].reason = STORE_REASON_AA_COMPROMISE;
                    s[1].revoked_at = 1650000000;
                    s[2].cid = cid_of(F.ca1, EVP_sha1(), 3);
                    s[2].cert_status = V_OCSP_CERTSTATUS_UNKNOWN;
                    break;
                default: /* 0 good; 7, 8: good with a nonce */ break;
                }
                for (int k = 0; k < (shape >= 7 ? 4 : 1); k++) {
                    if (shape >= 7)
                        b.nonce_from = tp_request(F.ca1, EVP_sha1(), serials, 1, nonce_lens[k]);
                    if (shape == 8) { /* the same nonce, marked critical: copied as it came */
                        X509_EXTENSION *ext = OCSP_REQUEST_get_ext(b.nonce_from, 0);
                        cr_assert(ext != NULL && X509_EXTENSION_set_critical(ext, 1));
                    }
                    (void)snprintf(what, sizeof(what), "shape %d byName %d certs %d nonce %d",
                                   shape, by_name, include, shape >= 7 ? nonce_lens[k] : -1);
                    build_pair(&b, key, deterministic, what);
                    OCSP_REQUEST_free(b.nonce_from);
                    b.nonce_from = NULL;
                }
                for (int i = 0; i < 3; i++)
                    ocsp__single_cleanup(&s[i]);
            }
}

Test(template, every_shape_is_openssls_response_p256, .init = pki_build, .fini = teardown)
{
    each_shape(F.responder, F.resp_key, 0);
    each_shape(F.ca2, F.ca2_key, 0);
}

Test(template, every_shape_is_openssls_response_rsa, .init = pki_build, .fini = teardown)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048);
    EVP_MD_CTX *ctx = tp_soft_ctx(F.ca1_key);
    X509 *rsa_resp = tp_cert(F.ca1, ctx, rsa, "CA 1 OCSP RSA", 101, TP_RESPONDER, 30);
    cr_assert_not_null(rsa_resp);
    EVP_MD_CTX_free(ctx);
    each_shape(rsa_resp, rsa, 1);
    X509_free(rsa_resp);
    EVP_PKEY_free(rsa);
}

/* A CertID whose hashAlgorithm parameters are absent (accepted, and echoed in answers to that
 * client alone, such as nonce responses): the direct encoder still makes OpenSSL's bytes. */
Test(template, certid_without_parameters_is_openssls_response, .init = pki_build, .fini = teardown)
{
    unsigned char der[1024];
    size_t len = request_with_params(F.ca1, 0x1001, NULL, 0, der, sizeof(der));
    struct ocsp__parsed parsed;
    struct ocsp__single s;
    struct ocsp__build b;
    int64_t now = (int64_t)time(NULL);

    cr_assert_eq(ocsp__request_parse(der, len, 10, &parsed), 0);
    cr_assert_eq(parsed.status, OCSP_RESPONSE_STATUS_SUCCESSFUL);
    memset(&s, 0, sizeof(s));
    memset(&b, 0, sizeof(b));
    s.cid = parsed.ids[0].cid; /* borrowed */
    s.cert_status = V_OCSP_CERTSTATUS_GOOD;
    b.signer_cert = F.responder;
    b.include_signer = 1;
    b.singles = &s;
    b.n = 1;
    b.this_update = now;
    b.next_update = now + 86400;
    build_pair(&b, F.resp_key, 0, "absent parameters");
    ocsp__parsed_cleanup(&parsed);
}

/* Many answers in one response: lengths of two and three octets in the DER headers. */
Test(template, long_responses, .init = pki_build, .fini = teardown)
{
    static struct ocsp__single s[800];
    struct ocsp__build b;
    int64_t now = (int64_t)time(NULL);

    memset(&b, 0, sizeof(b));
    b.signer_cert = F.responder;
    b.include_signer = 1;
    b.singles = s;
    b.this_update = now;
    b.next_update = now + 3600;
    for (int i = 0; i < 800; i++) {
        s[i].cid = cid_of(F.ca1, i % 2 ? EVP_sha256() : EVP_sha1(), 1000 + i);
        s[i].cert_status = i % 3 == 0 ? V_OCSP_CERTSTATUS_GOOD : V_OCSP_CERTSTATUS_REVOKED;
        s[i].reason = i % 11;
        s[i].revoked_at = 1700000000 + i;
    }
    for (b.n = 1; b.n <= 800; b.n = b.n < 8 ? b.n + 1 : b.n * 3) {
        char what[32];
        (void)snprintf(what, sizeof(what), "%d answers", b.n);
        build_pair(&b, F.resp_key, 0, what);
    }
    b.n = 800;
    build_pair(&b, F.resp_key, 0, "800 answers");
    for (int i = 0; i < 800; i++)
        ocsp__single_cleanup(&s[i]);
}

/* A template is only taken from a well-formed successful response; any cut, error response or
 * garbage is refused without reading past its end (run under ASan in CI). */
Test(template, refuses_what_is_not_a_signed_response, .init = pki_build, .fini = teardown)
{
    struct ocsp__single s;
    struct ocsp__build b;
    EVP_MD_CTX *mctx = tp_soft_ctx(F.resp_key);
    unsigned char *ref = NULL, *cut;
    size_t ref_len = 0, err_len;
    struct ocsp__tmpl *t = NULL;
    const unsigned char *sig, *err;
    size_t sig_len;
    int64_t produced;

    memset(&s, 0, sizeof(s));
    memset(&b, 0, sizeof(b));
    s.cid = cid_of(F.ca1, EVP_sha1(), 5);
    s.cert_status = V_OCSP_CERTSTATUS_GOOD;
    b.signer_cert = F.responder;
    b.include_signer = 1;
    b.singles = &s;
    b.n = 1;
    b.this_update = time(NULL);
    b.next_update = b.this_update + 60;
    cr_assert_eq(ocsp__response_build(&b, mctx, &ref, &ref_len), 0);
    EVP_MD_CTX_free(mctx);
    for (size_t n = 0; n < ref_len; n++) {
        cut = malloc(n > 0 ? n : 1);
        memcpy(cut, ref, n);
        cr_assert_eq(ocsp__tmpl_from_response(cut, n, &t, &produced, &sig, &sig_len), UTIL_EINVAL,
                     "a response cut to %zu octets", n);
        cr_assert_null(t);
        free(cut);
    }
    err = ocsp__error_der(OCSP_RESPONSE_STATUS_TRYLATER, &err_len);
    cr_assert_eq(ocsp__tmpl_from_response(err, err_len, &t, &produced, &sig, &sig_len),
                 UTIL_EINVAL);
    ref[ref_len - 1] ^= 0xff; /* still well formed: accepted (the rebuild check catches content) */
    cr_assert_eq(ocsp__tmpl_from_response(ref, ref_len, &t, &produced, &sig, &sig_len), 0);
    ocsp__tmpl_free(t);
    OPENSSL_free(ref);
    ocsp__single_cleanup(&s);
}

/* The responder learns each signer's template from its first response and encodes the next ones
 * from it; those verify and carry the right status (the plan tests above check the rest). */
Test(template, responder_learns_and_uses_it, .init = setup, .fini = teardown)
{
    struct ocsp__plan plan;
    OCSP_BASICRESP *bs;
    long serials[2] = {0x1003, 0x1001};
    int slot = 0, reason = -1;

    cr_assert_eq(atomic_load(&F.resp->signers[0].tmpl_state), OCSP__TMPL_NONE);
    for (int round = 0; round < 2; round++) {
        plan_serials(F.ca1, EVP_sha256(), serials, 2, 16, &plan, &slot);
        bs = sign_and_verify(&plan, F.ca1, NULL);
        cr_assert_eq(atomic_load(&F.resp->signers[0].tmpl_state), OCSP__TMPL_READY, "round %d",
                     round);
        cr_assert_eq(status_of(bs, F.ca1, EVP_sha256(), 0x1003, &reason, NULL),
                     V_OCSP_CERTSTATUS_REVOKED);
        cr_assert_eq(reason, OCSP_REVOKED_STATUS_KEYCOMPROMISE);
        cr_assert_eq(status_of(bs, F.ca1, EVP_sha256(), 0x1001, NULL, NULL),
                     V_OCSP_CERTSTATUS_GOOD);
        OCSP_BASICRESP_free(bs);
        ocsp__plan_cleanup(&plan);
        release_slot(&slot);
    }
}
