/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva tsa check`: is this time-stamp token one we issued? For a token produced years ago and
 * shown as evidence, it finds the configured TSA unit whose certificate verifies the token's
 * signature, then the token log's record of that unit and serial, and compares the record with
 * the token (genTime, policy, hash algorithm and message imprint). Exit 0 only if every token
 * given verifies and matches its record. */
#define _GNU_SOURCE /* gmtime_r */
#include "cli_int.h"

#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ts.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <time.h>
#include <util/util.h>

#define TOKEN_MAX (1024 * 1024) /* tokens are a few KiB; a file larger than this is not one */

static const char help[] =
    "usage: pkiva tsa check [--config FILE | --data DIR] TOKEN...\n\n"
    "Checks time-stamp tokens against this TSA: the signature must verify with the certificate\n"
    "of a configured [tsa.NAME] unit, and the token log must hold that unit's record of the\n"
    "serial with the same genTime, policy and message imprint (a unit's previous_certs count\n"
    "as its certificate too, for tokens signed before a renewal). TOKEN is a DER TimeStampResp\n"
    "(as sent to the client) or the bare token (openssl ts -reply -token_out). Exit 0 if every\n"
    "token checks out, 1 otherwise.\n";

/* The token's ContentInfo as DER, from a TimeStampResp or a bare token; *cms parsed from it. */
static int read_token(const unsigned char *data, size_t len, CMS_ContentInfo **cms,
                      TS_TST_INFO **tst)
{
    const unsigned char *p = data;
    TS_RESP *resp = d2i_TS_RESP(NULL, &p, (long)len);
    PKCS7 *token = NULL;
    unsigned char *der = NULL;
    int der_len = 0;

    *cms = NULL;
    *tst = NULL;
    if (resp != NULL && p == data + len && TS_RESP_get_token(resp) != NULL) {
        der_len = i2d_PKCS7(TS_RESP_get_token(resp), &der);
    } else {
        p = data;
        token = d2i_PKCS7(NULL, &p, (long)len);
        if (token != NULL && p == data + len)
            der_len = i2d_PKCS7(token, &der);
    }
    if (der_len > 0) {
        const unsigned char *q = der;
        PKCS7 *p7 = d2i_PKCS7(NULL, &q, der_len);
        q = der;
        *cms = d2i_CMS_ContentInfo(NULL, &q, der_len);
        *tst = p7 != NULL ? PKCS7_to_TS_TST_INFO(p7) : NULL;
        PKCS7_free(p7);
    }
    OPENSSL_free(der);
    PKCS7_free(token);
    TS_RESP_free(resp);
    ERR_clear_error();
    if (*cms == NULL || *tst == NULL) {
        CMS_ContentInfo_free(*cms);
        TS_TST_INFO_free(*tst);
        *cms = NULL;
        *tst = NULL;
        return 0;
    }
    return 1;
}

/* genTime as seconds since the epoch and, when it has a fraction, its milliseconds (-1: none). */
static int gen_time(const ASN1_GENERALIZEDTIME *t, int64_t *sec, int *ms)
{
    const char *s = (const char *)ASN1_STRING_get0_data(t);
    const char *dot = memchr(s, '.', (size_t)ASN1_STRING_length(t));

    if (util_asn1_time_unix(t, sec) != UTIL_OK)
        return 0;
    *ms = -1;
    if (dot != NULL) {
        *ms = 0;
        for (int i = 1, scale = 100; i <= 3 && dot[i] >= '0' && dot[i] <= '9'; i++, scale /= 10)
            *ms += (dot[i] - '0') * scale;
    }
    return 1;
}

/* 1 if one of the PEM certificates in path verifies the token's signature (its certificates and
 * chain are not consulted: this is about who signed, not about a path to a root today); cert_id
 * then gets that certificate's SHA-256, the key of the token log. */
static int signed_by(CMS_ContentInfo *cms, const char *path,
                     unsigned char cert_id[STORE_TSA_CERT_ID_LEN])
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    BIO *in = BIO_new_file(path, "r");
    X509 *cert = NULL;
    int ok = 0;

    while (certs != NULL && in != NULL &&
           (cert = PEM_read_bio_X509(in, NULL, NULL, NULL)) != NULL) {
        if (!sk_X509_push(certs, cert)) {
            X509_free(cert);
            break;
        }
    }
    if (sk_X509_num(certs) > 0)
        ok = CMS_verify(cms, certs, NULL, NULL, NULL,
                        CMS_NOINTERN | CMS_NO_SIGNER_CERT_VERIFY | CMS_BINARY) == 1;
    if (ok) {
        /* The certificate that verified it: the token log's key. */
        STACK_OF(X509) *signers = CMS_get0_signers(cms);
        unsigned int n = 0;
        ok = sk_X509_num(signers) == 1 &&
             X509_digest(sk_X509_value(signers, 0), EVP_sha256(), cert_id, &n) == 1 &&
             n == STORE_TSA_CERT_ID_LEN;
        sk_X509_free(signers); /* the certificates belong to certs */
    } else if (sk_X509_num(certs) == 0)
        fprintf(stderr, "pkiva tsa check: no PEM certificate in %s\n", path);
    ERR_clear_error();
    BIO_free(in);
    sk_X509_pop_free(certs, X509_free);
    return ok;
}

/* Checks one token; prints what it found. 0: verified and matches the log, 1 otherwise. */
static int check_one(const struct cli_config *cfg, struct store *store, const char *path)
{
    unsigned char *data = NULL;
    size_t len = 0;
    CMS_ContentInfo *cms = NULL;
    TS_TST_INFO *tst = NULL;
    const struct tsa_unit_settings *unit = NULL;
    unsigned char cert_id[STORE_TSA_CERT_ID_LEN];
    struct store_tsa_record rec;
    int64_t serial = 0, sec = 0;
    int ms = -1, rc = 1, found;
    char policy[128] = "", when[64];
    const TS_MSG_IMPRINT *mi;
    const ASN1_OCTET_STRING *imprint;
    const char *alg;

    if (util_file_read(path, TOKEN_MAX, &data, &len) != UTIL_OK) {
        printf("%s: cannot read the file\n", path);
        return 1;
    }
    if (!read_token(data, len, &cms, &tst) ||
        !ASN1_INTEGER_get_int64(&serial, TS_TST_INFO_get_serial(tst)) ||
        !gen_time(TS_TST_INFO_get_time(tst), &sec, &ms)) {
        printf("%s: not a time-stamp token (DER TimeStampResp or token)\n", path);
        goto out;
    }
    (void)OBJ_obj2txt(policy, sizeof(policy), TS_TST_INFO_get_policy_id(tst), 1); /* truncates */
    /* The unit: the one whose certificate, current or previous (and nothing from the token),
     * verifies the signature. */
    for (int i = 0; i < cfg->n_tsa_units && unit == NULL; i++) {
        if (signed_by(cms, cfg->tsa_units[i].cert, cert_id) ||
            (cfg->tsa_units[i].previous_certs[0] != '\0' &&
             signed_by(cms, cfg->tsa_units[i].previous_certs, cert_id)))
            unit = &cfg->tsa_units[i];
    }
    {
        time_t t = (time_t)sec;
        struct tm tm;
        size_t n = strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm));
        if (ms >= 0)
            (void)snprintf(when + n, sizeof(when) - n, ".%03dZ", ms);
        else
            (void)snprintf(when + n, sizeof(when) - n, "Z");
    }
    if (unit == NULL) {
        printf("%s: serial %lld, genTime %s: the signature does not verify with the certificate "
               "of any configured TSA unit: not issued here\n",
               path, (long long)serial, when);
        goto out;
    }
    found = store_tsa_token_get_blocking(store, cert_id, unit->name, serial, &rec);
    if (found == UTIL_ENOTFOUND) {
        printf("%s: unit %s, serial %lld, genTime %s: signature OK, but NOT in the token log\n",
               path, unit->name, (long long)serial, when);
        goto out;
    }
    if (found != UTIL_OK) {
        printf("%s: the token log cannot be read: %s\n", path, util_strerror(found));
        goto out;
    }
    mi = TS_TST_INFO_get_msg_imprint(tst);
    imprint = TS_MSG_IMPRINT_get_msg((TS_MSG_IMPRINT *)mi);
    alg = OBJ_nid2sn(OBJ_obj2nid(TS_MSG_IMPRINT_get_algo((TS_MSG_IMPRINT *)mi)->algorithm));
    if (rec.gen_time_ms / 1000 != sec || (ms >= 0 && rec.gen_time_ms % 1000 != ms) ||
        strcmp(rec.policy, policy) != 0 || strcmp(rec.imprint_alg, alg) != 0 ||
        rec.imprint_len != (size_t)ASN1_STRING_length(imprint) ||
        memcmp(rec.imprint, ASN1_STRING_get0_data(imprint), rec.imprint_len) != 0) {
        printf("%s: unit %s, serial %lld: signature OK, but the token log's record differs "
               "(log: genTime %lld ms, policy %s, %s imprint; token: %s, policy %s, %s)\n",
               path, unit->name, (long long)serial, (long long)rec.gen_time_ms, rec.policy,
               rec.imprint_alg, when, policy, alg);
        goto out;
    }
    printf("%s: unit %s, serial %lld, genTime %s, policy %s, %s imprint: signature OK, matches "
           "the token log\n",
           path, unit->name, (long long)serial, when, policy, alg);
    rc = 0;
out:
    CMS_ContentInfo_free(cms);
    TS_TST_INFO_free(tst);
    free(data);
    ERR_clear_error();
    return rc;
}

int cli__cmd_tsa(int argc, char **argv)
{
    struct cli_config cfg;
    struct store *store = NULL;
    int first = 0, failed = 0, rc;

    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        int asked = argc >= 2 && strcmp(argv[1], "--help") == 0;
        fputs(help, asked ? stdout : stderr);
        return asked ? 0 : 2;
    }
    rc = cli__open_command(argc, argv, 2, help, &first, &cfg, &store);
    if (rc >= 0)
        return rc;
    if (cfg.n_tsa_units == 0) {
        fprintf(stderr, "pkiva tsa check: no [tsa.NAME] unit is configured\n");
        store_close(store);
        return 1;
    }
    for (int i = first; i < argc; i++)
        failed |= check_one(&cfg, store, argv[i]);
    store_close(store);
    return failed;
}
