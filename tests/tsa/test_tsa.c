/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of tsa/ without HSM or network: the rejection encoder (every reason parses back with
 * OpenSSL as a DER TimeStampResp with the right status, text and failInfo), the request checker
 * (each accept/reject rule) and robustness of the decoder against truncated and mutated requests
 * (the fuzz seed corpus replays in tests/fuzz). */
#include <criterion/criterion.h>
#include <openssl/err.h>
#include <support.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tsa/tsa_int.h>

#include "tsa_req_build.h"

#define POLICY "1.3.6.1.4.1.99999.1.1"
#define POLICY2 "1.3.6.1.4.1.99999.1.2"

static ASN1_OBJECT *policy, *policy2;
static struct tsa__rules rules;

static void setup(void)
{
    policy = OBJ_txt2obj(POLICY, 1);
    policy2 = OBJ_txt2obj(POLICY2, 1);
    memset(&rules, 0, sizeof(rules));
    rules.policy = policy;
    rules.accepted[0] = policy2;
    rules.n_accepted = 1;
}

static void teardown(void)
{
    ASN1_OBJECT_free(policy);
    ASN1_OBJECT_free(policy2);
}

static int check(const struct req_opts *o)
{
    unsigned char *der = NULL;
    struct tsa__query q;
    int len = build_req(o, &der);
    cr_assert_eq(tsa__query_check(&rules, der, (size_t)len, &q), 0);
    OPENSSL_free(der);
    return q.reject;
}

TestSuite(reject, .timeout = 30);

Test(reject, every_reason_is_a_der_timestampresp)
{
    for (int r = 0; r < TSA__REJ_COUNT; r++) {
        unsigned char der[256];
        const unsigned char *p = der;
        unsigned char *again = NULL;
        int len = tsa__reject_der(r, der, sizeof(der));
        TS_RESP *resp;
        TS_STATUS_INFO *si;
        const ASN1_BIT_STRING *fi;
        const STACK_OF(ASN1_UTF8STRING) * text;
        int bit = tsa__reject_fail_info(r);

        cr_assert_gt(len, 0, "reason %d", r);
        resp = d2i_TS_RESP(NULL, &p, len);
        cr_assert_not_null(resp, "reason %d does not parse", r);
        cr_assert_eq(p, der + len);
        si = TS_RESP_get_status_info(resp);
        cr_assert_eq(ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(si)), TS_STATUS_REJECTION);
        fi = TS_STATUS_INFO_get0_failure_info(si);
        cr_assert_not_null(fi);
        for (int b = 0; b < 32; b++)
            cr_assert_eq(ASN1_BIT_STRING_get_bit(fi, b), b == bit, "reason %d bit %d", r, b);
        text = TS_STATUS_INFO_get0_text(si);
        cr_assert_eq(sk_ASN1_UTF8STRING_num(text), 1);
        cr_assert_gt(ASN1_STRING_length(sk_ASN1_UTF8STRING_value(text, 0)), 5);
        cr_assert_null(TS_RESP_get_token(resp));
        /* DER is canonical: OpenSSL re-encodes the same bytes (trailing zero bits dropped). */
        cr_assert_eq(i2d_TS_RESP(resp, &again), len);
        cr_assert_eq(memcmp(again, der, (size_t)len), 0, "reason %d is not canonical DER", r);
        OPENSSL_free(again);
        TS_RESP_free(resp);
    }
    cr_assert_lt(tsa__reject_der(TSA__REJ_COUNT, (unsigned char[256]){0}, 256), 0);
    cr_assert_lt(tsa__reject_der(0, (unsigned char[8]){0}, 8), 0);
}

TestSuite(check, .init = setup, .fini = teardown, .timeout = 30);

Test(check, accepted_hashes)
{
    static const int nids[] = {NID_sha256,   NID_sha384,   NID_sha512,
                               NID_sha3_256, NID_sha3_384, NID_sha3_512};
    for (size_t i = 0; i < sizeof(nids) / sizeof(nids[0]); i++) {
        struct req_opts o = {.md_nid = nids[i], .imprint_len = -1, .nonce = 1, .cert_req = 1};
        cr_assert_eq(check(&o), -1, "nid %d", nids[i]);
    }
}

Test(check, weak_hashes_bad_alg_unless_allowed)
{
    struct req_opts sha1 = {.md_nid = NID_sha1, .imprint_len = 20};
    struct req_opts md5 = {.md_nid = NID_md5, .imprint_len = 16};
    cr_assert_eq(check(&sha1), TSA__REJ_BAD_ALG);
    cr_assert_eq(check(&md5), TSA__REJ_BAD_ALG);
    rules.allow_weak_hashes = 1;
    cr_assert_eq(check(&sha1), -1);
    cr_assert_eq(check(&md5), -1);
    struct req_opts unknown = {.md_nid = NID_sm3, .imprint_len = 32};
    cr_assert_eq(check(&unknown), TSA__REJ_BAD_ALG);
}

Test(check, imprint_length_and_parameters)
{
    struct req_opts short_ = {.md_nid = NID_sha256, .imprint_len = 31};
    struct req_opts long_ = {.md_nid = NID_sha384, .imprint_len = 64};
    struct req_opts empty = {.md_nid = NID_sha512, .imprint_len = 0};
    struct req_opts params = {.md_nid = NID_sha256, .imprint_len = -1, .param_integer = 1};
    cr_assert_eq(check(&short_), TSA__REJ_IMPRINT_LENGTH);
    cr_assert_eq(check(&long_), TSA__REJ_IMPRINT_LENGTH);
    cr_assert_eq(check(&empty), TSA__REJ_IMPRINT_LENGTH);
    cr_assert_eq(check(&params), TSA__REJ_ALG_PARAMS);
}

Test(check, version_policy_extensions)
{
    struct req_opts v2 = {.md_nid = NID_sha256, .imprint_len = -1, .version = 2};
    struct req_opts def = {.md_nid = NID_sha256, .imprint_len = -1, .policy = POLICY};
    struct req_opts acc = {.md_nid = NID_sha256, .imprint_len = -1, .policy = POLICY2};
    struct req_opts bad = {.md_nid = NID_sha256, .imprint_len = -1, .policy = "1.2.3.4"};
    struct req_opts ext = {.md_nid = NID_sha256, .imprint_len = -1, .ext = 1};
    struct req_opts crit = {.md_nid = NID_sha256, .imprint_len = -1, .ext = 2};
    unsigned char *der = NULL;
    struct tsa__query q;
    int len;

    cr_assert_eq(check(&v2), TSA__REJ_VERSION);
    cr_assert_eq(check(&def), -1);
    cr_assert_eq(check(&bad), TSA__REJ_POLICY);
    /* RFC 3161 §2.4.1: an unrecognised extension is refused critical or not (was granted) */
    cr_assert_eq(check(&ext), TSA__REJ_EXTENSION);
    cr_assert_eq(check(&crit), TSA__REJ_EXTENSION);
    len = build_req(&acc, &der);
    cr_assert_eq(tsa__query_check(&rules, der, (size_t)len, &q), 0);
    cr_assert_eq(q.reject, -1);
    cr_assert_eq(q.policy_index, 0);
    cr_assert_eq(q.md_nid, NID_sha256);
    cr_assert_eq(q.imprint_len, 32);
    OPENSSL_free(der);
}

Test(check, garbage_and_trailing_bytes)
{
    struct req_opts o = {.md_nid = NID_sha256, .imprint_len = -1};
    unsigned char *der = NULL;
    unsigned char buf[256];
    struct tsa__query q;
    int len = build_req(&o, &der);

    memcpy(buf, der, (size_t)len);
    buf[len] = 0;
    cr_assert_eq(tsa__query_check(&rules, buf, (size_t)len + 1, &q), 0);
    cr_assert_eq(q.reject, TSA__REJ_MALFORMED);
    cr_assert_eq(tsa__query_check(&rules, (const unsigned char *)"hello", 5, &q), 0);
    cr_assert_eq(q.reject, TSA__REJ_MALFORMED);
    cr_assert_eq(tsa__query_check(&rules, NULL, 0, &q), 0);
    cr_assert_eq(q.reject, TSA__REJ_MALFORMED);
    OPENSSL_free(der);
}

/* Truncations and random mutations of valid requests: the checker must neither crash nor read out
 * of bounds (run under ASan to see the latter), and must not leave OpenSSL errors behind. */
Test(check, fuzz_truncated_and_mutated)
{
    struct req_opts variants[] = {
        {.md_nid = NID_sha256, .imprint_len = -1, .nonce = 1, .cert_req = 1},
        {.md_nid = NID_sha512, .imprint_len = -1, .policy = POLICY2, .ext = 2},
    };
    unsigned int seed = 12345;

    for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
        unsigned char *der = NULL;
        int len = build_req(&variants[v], &der);
        for (int cut = 0; cut < len; cut++) {
            unsigned char *copy = malloc((size_t)cut + 1); /* exact size: ASan sees overreads */
            struct tsa__query q;
            memcpy(copy, der, (size_t)cut);
            cr_assert_eq(tsa__query_check(&rules, copy, (size_t)cut, &q), 0);
            cr_assert_neq(q.reject, -1, "truncated to %d accepted", cut);
            free(copy);
        }
        for (int round = 0; round < 20000; round++) {
            unsigned char *copy = malloc((size_t)len);
            struct tsa__query q;
            int flips = 1 + rand_r(&seed) % 4;
            memcpy(copy, der, (size_t)len);
            for (int f = 0; f < flips; f++)
                copy[rand_r(&seed) % len] = (unsigned char)rand_r(&seed);
            cr_assert_eq(tsa__query_check(&rules, copy, (size_t)len, &q), 0);
            cr_assert_eq(ERR_peek_error(), 0);
            free(copy);
        }
        OPENSSL_free(der);
    }
}

/* Out of memory while checking a request (STYLE: fail the Nth allocation): every allocation the
 * checker makes fails once in turn; each time the outcome is UTIL_ENOMEM (-> systemFailure) or the
 * right verdict, never a crash or a leak (the ASan build checks leaks), and the error queue is
 * left empty. */
Test(check, every_allocation_failure_is_survived)
{
    struct req_opts o = {.md_nid = NID_sha256,
                         .imprint_len = -1,
                         .nonce = 1,
                         .cert_req = 1,
                         .policy = POLICY2}; /* every field an acceptable request can have */
    unsigned char *der = NULL;
    int len = build_req(&o, &der);
    long n;
    int enomem_seen = 0;
    for (n = 1; n < 20000; n++) {
        struct tsa__query q;
        int rc, hit;
        ts_failalloc_arm(n);
        rc = tsa__query_check(&rules, der, (size_t)len, &q);
        hit = ts_failalloc_disarm();
        cr_assert(rc == 0 || rc == UTIL_ENOMEM, "allocation %ld: %d", n, rc);
        cr_assert_eq(ERR_peek_error(), 0, "allocation %ld left an OpenSSL error queued", n);
        enomem_seen += rc == UTIL_ENOMEM;
        if (!hit)
            break;
    }
    cr_assert_gt(n, 5, "the checker made only %ld allocations?", n);
    cr_assert_gt(enomem_seen, 0, "no allocation failure was reported");
    {
        struct tsa__query q;
        cr_assert_eq(tsa__query_check(&rules, der, (size_t)len, &q), 0);
        cr_assert_eq(q.reject, -1, "the checker no longer accepts a valid request");
    }
    OPENSSL_free(der);
}
