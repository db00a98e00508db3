/* SPDX-License-Identifier: Apache-2.0 */
/* crl tests, no mocks: a CA whose key is generated in a real SoftHSM2 token, a real store file
 * with certificates and revocations, CRLs checked by OpenSSL (d2i_X509_CRL and `openssl crl
 * -verify`) and GnuTLS (`certtool --crl-info`, `--verify-crl`), the publisher thread driven by the
 * change feed, a failing HSM, and the HTTP endpoints through a real server and curl. */
#include <criterion/criterion.h>
#include <crl/crl.h>
#include <crl/crl_int.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <store/store.h>
#include <string.h>
#include <support.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN "crltest"
#define PIN "1234"
#define CA_NAME "test-ca"

static char dir[64];
static char path_buf[256];
static struct hsm *hsm;
static struct hsm_key *ca_key;
static X509 *ca_cert;
static struct store *store;
static int64_t issuer_id;
static char store_path[128], pub_dir[128], ca_pem[128], ca_der[128];
static int64_t now_s;

/* <dir>/pub/<issuer><suffix>: a published file. */
static const char *pubf(const char *suffix)
{
    (void)snprintf(path_buf, sizeof(path_buf), "%s/pub/%s%s", dir, CA_NAME, suffix);
    return path_buf;
}

/* ---- fixture -------------------------------------------------------------------------------- */

static X509 *make_ca(struct hsm_key *key)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    EVP_MD_CTX *ctx = NULL;
    X509V3_CTX v3;
    X509_EXTENSION *ext = NULL;
    const char *exts[][2] = {{"basicConstraints", "critical,CA:TRUE"},
                             {"keyUsage", "critical,keyCertSign,cRLSign"},
                             {"subjectKeyIdentifier", "hash"}};
    cr_assert_not_null(cert);
    cr_assert_eq(X509_set_version(cert, X509_VERSION_3), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    cr_assert_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                            (const unsigned char *)"CRL Test CA", -1, -1, 0),
                 1);
    cr_assert_eq(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                            (const unsigned char *)"pkiva tests", -1, -1, 0),
                 1);
    cr_assert_eq(X509_set_subject_name(cert, name), 1);
    cr_assert_eq(X509_set_issuer_name(cert, name), 1);
    X509_NAME_free(name);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(cert), -86400));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(cert), 3650L * 86400));
    cr_assert_eq(X509_set_pubkey(cert, key->pkey), 1);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        ext = X509V3_EXT_conf(NULL, &v3, exts[i][0], exts[i][1]);
        cr_assert_not_null(ext);
        cr_assert_eq(X509_add_ext(cert, ext, -1), 1);
        X509_EXTENSION_free(ext);
    }
    cr_assert_eq(hsm_sign_ctx_new_blocking(hsm, key, &ctx), 0);
    cr_assert_gt(X509_sign_ctx(cert, ctx), 0);
    EVP_MD_CTX_free(ctx);
    return cert;
}

static void add_cert(long serial, int64_t not_after)
{
    unsigned char s[8];
    size_t n = 0;
    struct store_cert_new c;
    /* minimal positive DER INTEGER content */
    for (int i = 7; i >= 0; i--) {
        unsigned char b = (unsigned char)(serial >> (8 * i));
        if (n == 0 && b == 0 && i > 0)
            continue;
        if (n == 0 && (b & 0x80))
            s[n++] = 0;
        s[n++] = b;
    }
    memset(&c, 0, sizeof(c));
    c.issuer_id = issuer_id;
    c.serial = s;
    c.serial_len = n;
    c.not_after = not_after ? not_after : now_s + 365 * 86400;
    c.not_before = not_after ? not_after - 365 * 86400 : now_s - 86400; /* revocable since */
    c.cert_der = s; /* any bytes: the repository serves what is stored */
    c.cert_len = n;
    cr_assert_eq(store_cert_add_blocking(store, &c, NULL), 0);
}

static size_t serial_bytes(long serial, unsigned char *s)
{
    size_t n = 0;
    for (int i = 7; i >= 0; i--) {
        unsigned char b = (unsigned char)(serial >> (8 * i));
        if (n == 0 && b == 0 && i > 0)
            continue;
        if (n == 0 && (b & 0x80))
            s[n++] = 0;
        s[n++] = b;
    }
    return n;
}

static int64_t do_revoke(struct store *st, long serial, int reason, int64_t at, int64_t invalidity)
{
    unsigned char s[9];
    struct store_revocation r;
    int64_t feed = 0;
    memset(&r, 0, sizeof(r));
    r.issuer_id = issuer_id;
    r.serial = s;
    r.serial_len = serial_bytes(serial, s);
    r.reason = reason;
    r.revoked_at = at;
    r.invalidity_date = invalidity;
    r.actor = "test";
    cr_assert_eq(store_cert_revoke_blocking(st, &r, &feed), 0, "revoke %ld", serial);
    return feed;
}

static void release(struct store *st, long serial)
{
    unsigned char s[9];
    size_t n = serial_bytes(serial, s);
    cr_assert_eq(store_cert_unrevoke_blocking(st, issuer_id, s, n, "test", NULL), 0);
}

static void setup_alg(int alg, int pss)
{
    char pin_path[128];
    struct hsm_config cfg = {
        .module_path = TS_SOFTHSM_MODULE, .softhsm_no_deinit = 1, .sessions = 2, .queue_max = 64};
    unsigned char *der = NULL;
    int len;
    FILE *f = NULL;

    now_s = util_now_ms() / 1000;
    cr_assert_eq(ts_tmpdir(dir, sizeof(dir)), 0);
    cr_assert_eq(ts_softhsm_token(dir, TOKEN, PIN), 0);
    (void)snprintf(pin_path, sizeof(pin_path), "%s/pin.txt", dir);
    cfg.pin_file = pin_path;
    cr_assert_eq(hsm_open(&cfg, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "ca", alg, &ca_key), 0);
    ca_key->rsa_pss = pss;
    ca_cert = make_ca(ca_key);
    (void)snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", dir);
    f = fopen(ca_pem, "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_X509(f, ca_cert), 1);
    cr_assert_eq(fclose(f), 0);
    (void)snprintf(ca_der, sizeof(ca_der), "%s/ca.der", dir);
    f = fopen(ca_der, "w");
    cr_assert_not_null(f);
    cr_assert_eq(i2d_X509_fp(f, ca_cert), 1);
    cr_assert_eq(fclose(f), 0);
    (void)snprintf(store_path, sizeof(store_path), "%s/pkiva.db", dir);
    (void)snprintf(pub_dir, sizeof(pub_dir), "%s/pub", dir);
    cr_assert_eq(mkdir(pub_dir, 0755), 0);
    cr_assert_eq(store_open_blocking(store_path, STORE_OPEN_CREATE, &store), 0);
    len = i2d_X509(ca_cert, &der);
    cr_assert_gt(len, 0);
    cr_assert_eq(store_issuer_put_blocking(store, CA_NAME, der, (size_t)len, &issuer_id), 0);
    OPENSSL_free(der);
    /* 1..20 good; some revoked with every kind of detail */
    for (long s = 1; s <= 20; s++)
        add_cert(s, 0);
    add_cert(0x80, 0);                 /* needs a leading 0x00 */
    add_cert(100, now_s - 30 * 86400); /* expired a month ago */
    do_revoke(store, 2, STORE_REASON_KEY_COMPROMISE, now_s - 3600, now_s - 7200);
    do_revoke(store, 3, STORE_REASON_NONE, now_s - 3000, 0);
    do_revoke(store, 4, STORE_REASON_UNSPECIFIED, now_s - 2000, 0);
    do_revoke(store, 5, STORE_REASON_CERTIFICATE_HOLD, now_s - 1000, 0);
    do_revoke(store, 6, STORE_REASON_CERTIFICATE_HOLD, now_s - 900, 0);
    do_revoke(store, 0x80, STORE_REASON_SUPERSEDED, now_s - 500, 0);
    do_revoke(store, 100, STORE_REASON_CESSATION, now_s - 60 * 86400, 0);
    {
        /* A revocation dated 2051 (GeneralizedTime in a CRL entry) is refused at every door now
         * (it is in the future), so it is written behind the store's checks: the generator must
         * still encode whatever the store holds. */
        char cmd[512], out[1024];
        (void)snprintf(cmd, sizeof(cmd),
                       "sqlite3 %s \"UPDATE certs SET revoked_at = 2556144000 "
                       "WHERE serial = X'0080'\" 2>&1",
                       store_path);
        cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    }
}

static void setup(void)
{
    setup_alg(HSM_EC_P256, 0);
}

static void teardown(void)
{
    store_close(store);
    store = NULL;
    X509_free(ca_cert);
    ca_cert = NULL;
    hsm_key_free(ca_key);
    ca_key = NULL;
    hsm_close(hsm);
    hsm = NULL;
    ts_rmrf(dir);
}

static void base_cfg(struct crl_config *cfg)
{
    crl_config_default(cfg);
    cfg->publish_dir = pub_dir;
    cfg->store_path = store_path;
    cfg->public_url = "http://127.0.0.1:8080";
}

static struct crl_issuer_config issuer_cfg(void)
{
    struct crl_issuer_config ic = {CA_NAME, issuer_id, ca_cert, ca_key};
    return ic;
}

/* ---- checking helpers ----------------------------------------------------------------------- */

static X509_CRL *read_crl(const char *path)
{
    unsigned char *der = NULL;
    const unsigned char *q;
    size_t len = 0;
    X509_CRL *crl;
    cr_assert_eq(util_file_read(path, 1 << 26, &der, &len), 0, "%s", path);
    q = der;
    crl = d2i_X509_CRL(NULL, &q, (long)len);
    cr_assert_not_null(crl, "%s does not parse", path);
    cr_assert_eq((size_t)(q - der), len, "trailing bytes");
    free(der);
    return crl;
}

static long crl_int_ext(X509_CRL *crl, int nid, int *crit)
{
    ASN1_INTEGER *v = X509_CRL_get_ext_d2i(crl, nid, crit, NULL);
    long r;
    if (v == NULL)
        return -1;
    r = ASN1_INTEGER_get(v);
    ASN1_INTEGER_free(v);
    return r;
}

static X509_REVOKED *find_entry(X509_CRL *crl, long serial)
{
    STACK_OF(X509_REVOKED) *revs = X509_CRL_get_REVOKED(crl);
    for (int i = 0; i < sk_X509_REVOKED_num(revs); i++) {
        X509_REVOKED *r = sk_X509_REVOKED_value(revs, i);
        if (ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(r)) == serial)
            return r;
    }
    return NULL;
}

static int entry_reason(X509_REVOKED *r)
{
    int crit = 0;
    ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, &crit, NULL);
    int v;
    if (e == NULL)
        return -1;
    v = (int)ASN1_ENUMERATED_get(e);
    ASN1_ENUMERATED_free(e);
    return v;
}

static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    cr_assert_eq(ASN1_TIME_to_tm(t, &tm), 1);
    return (int64_t)timegm(&tm);
}

static int n_entries(X509_CRL *crl)
{
    STACK_OF(X509_REVOKED) *revs = X509_CRL_get_REVOKED(crl);
    return revs ? sk_X509_REVOKED_num(revs) : 0;
}

static void tools_verify(const char *crl_path)
{
    char cmd[1024], out[8192];
    int rc;
    (void)snprintf(cmd, sizeof(cmd), "openssl crl -verify -noout -CAfile %s -in %s -inform DER",
                   ca_pem, crl_path);
    rc = ts_run(cmd, out, sizeof(out));
    cr_assert_eq(rc, 0, "openssl crl -verify: %s", out);
    cr_assert_not_null(strstr(out, "verify OK"), "%s", out);
    (void)snprintf(cmd, sizeof(cmd), "certtool --crl-info --inder --infile %s", crl_path);
    rc = ts_run(cmd, out, sizeof(out));
    cr_assert_eq(rc, 0, "certtool --crl-info: %s", out);
    (void)snprintf(cmd, sizeof(cmd),
                   "certtool --verify-crl --inder --load-ca-certificate %s --infile %s", ca_der,
                   crl_path);
    rc = ts_run(cmd, out, sizeof(out));
    cr_assert_eq(rc, 0, "certtool --verify-crl: %s", out);
    cr_assert_not_null(strstr(out, "Verified"), "%s", out);
}

/* ---- tests ---------------------------------------------------------------------------------- */

TestSuite(crl, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(crl_alg);
TestSuite(crl_der);

Test(crl_der, der_time_switches_to_generalized_in_2050)
{
    unsigned char out[20];
    size_t n = crl__der_time(out, 2524607999LL); /* 2049-12-31T23:59:59Z */
    cr_assert_eq(n, 15);
    cr_assert_eq(out[0], 0x17);
    cr_assert_eq(memcmp(out + 2, "491231235959Z", 13), 0);
    n = crl__der_time(out, 2524608000LL); /* 2050-01-01T00:00:00Z */
    cr_assert_eq(n, 17);
    cr_assert_eq(out[0], 0x18);
    cr_assert_eq(memcmp(out + 2, "20500101000000Z", 15), 0);
    n = crl__der_time(out, 951782400LL); /* 2000-02-29 (leap day) */
    cr_assert_eq(memcmp(out + 2, "000229000000Z", 13), 0);
    n = crl__der_gentime(out, 0);
    cr_assert_eq(memcmp(out + 2, "19700101000000Z", 15), 0);
}

Test(crl, full_and_delta_verify_and_entries_are_exact)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_info full, delta;
    X509_CRL *crl = NULL;
    X509_REVOKED *r = NULL;
    ASN1_GENERALIZEDTIME *inv = NULL;
    AUTHORITY_KEYID *akid = NULL;
    STACK_OF(DIST_POINT) *fresh = NULL;
    int crit = -1;

    base_cfg(&cfg);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_BOTH, "test", &full, &delta), 0);
    cr_assert_gt(delta.number, full.number);
    cr_assert_eq(delta.base_number, full.number);
    tools_verify(pubf(".crl"));
    tools_verify(pubf("-delta.crl"));

    crl = read_crl(pubf(".crl"));
    cr_assert_eq(X509_CRL_get_version(crl), 1, "v2");
    cr_assert_eq(X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca_cert)), 0);
    cr_assert_eq(crl_int_ext(crl, NID_crl_number, &crit), full.number);
    cr_assert_eq(crit, 0);
    cr_assert_eq(crl_int_ext(crl, NID_delta_crl, &crit), -1, "no delta indicator on a full CRL");
    akid = X509_CRL_get_ext_d2i(crl, NID_authority_key_identifier, &crit, NULL);
    cr_assert_not_null(akid);
    cr_assert_eq(ASN1_OCTET_STRING_cmp(akid->keyid, X509_get0_subject_key_id(ca_cert)), 0);
    AUTHORITY_KEYID_free(akid);
    fresh = X509_CRL_get_ext_d2i(crl, NID_freshest_crl, &crit, NULL);
    cr_assert_not_null(fresh);
    {
        GENERAL_NAME *gn =
            sk_GENERAL_NAME_value(sk_DIST_POINT_value(fresh, 0)->distpoint->name.fullname, 0);
        cr_assert_str_eq((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
                         "http://127.0.0.1:8080/crl/" CA_NAME "-delta.crl");
    }
    sk_DIST_POINT_pop_free(fresh, DIST_POINT_free);
    cr_assert_eq(asn1_time_unix(X509_CRL_get0_nextUpdate(crl)) -
                     asn1_time_unix(X509_CRL_get0_lastUpdate(crl)),
                 7 * 86400);
    /* 2, 3, 4, 5, 6, 0x80 (100 expired beyond the 7 day retention) */
    cr_assert_eq(n_entries(crl), 6);
    cr_assert_null(find_entry(crl, 100), "expired beyond retention");
    r = find_entry(crl, 2);
    cr_assert_not_null(r);
    cr_assert_eq(entry_reason(r), 1);
    cr_assert_eq(asn1_time_unix(X509_REVOKED_get0_revocationDate(r)), now_s - 3600);
    inv = X509_REVOKED_get_ext_d2i(r, NID_invalidity_date, &crit, NULL);
    cr_assert_not_null(inv);
    cr_assert_eq(asn1_time_unix(inv), now_s - 7200);
    ASN1_GENERALIZEDTIME_free(inv);
    cr_assert_eq(entry_reason(find_entry(crl, 3)), -1, "no reasonCode for none");
    cr_assert_eq(entry_reason(find_entry(crl, 4)), -1, "no reasonCode for unspecified");
    cr_assert_eq(X509_REVOKED_get_ext_count(find_entry(crl, 3)), 0);
    cr_assert_eq(entry_reason(find_entry(crl, 5)), 6, "certificateHold");
    r = find_entry(crl, 0x80);
    cr_assert_not_null(r);
    cr_assert_eq(entry_reason(r), 4);
    cr_assert_eq(ASN1_STRING_type(X509_REVOKED_get0_revocationDate(r)), V_ASN1_GENERALIZEDTIME);
    cr_assert_eq(asn1_time_unix(X509_REVOKED_get0_revocationDate(r)), 2556144000LL);
    cr_assert_eq(ASN1_STRING_type(X509_CRL_get0_lastUpdate(crl)), V_ASN1_UTCTIME);
    X509_CRL_free(crl);

    crl = read_crl(pubf("-delta.crl"));
    cr_assert_eq(crl_int_ext(crl, NID_delta_crl, &crit), full.number);
    cr_assert_eq(crit, 1, "Delta CRL Indicator is critical");
    cr_assert_eq(crl_int_ext(crl, NID_crl_number, &crit), delta.number);
    cr_assert_eq(n_entries(crl), 0, "nothing changed since the base");
    X509_CRL_free(crl);
}

static void alg_roundtrip(void)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    base_cfg(&cfg);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_BOTH, "test", NULL, NULL), 0);
    tools_verify(pubf(".crl"));
    tools_verify(pubf("-delta.crl"));
}

static void setup_rsa(void)
{
    setup_alg(HSM_RSA_2048, 0);
}
static void setup_pss(void)
{
    setup_alg(HSM_RSA_2048, 1);
}
static void setup_p384(void)
{
    setup_alg(HSM_EC_P384, 0);
}

Test(crl_alg, rsa_pkcs1_verifies, .init = setup_rsa, .fini = teardown, .timeout = 120)
{
    X509_CRL *crl;
    alg_roundtrip();
    crl = read_crl(pubf(".crl"));
    cr_assert_eq(X509_CRL_get_signature_nid(crl), NID_sha256WithRSAEncryption);
    X509_CRL_free(crl);
}

Test(crl_alg, rsa_pss_verifies, .init = setup_pss, .fini = teardown, .timeout = 120)
{
    X509_CRL *crl;
    alg_roundtrip();
    crl = read_crl(pubf(".crl"));
    cr_assert_eq(X509_CRL_get_signature_nid(crl), NID_rsassaPss);
    X509_CRL_free(crl);
}

Test(crl_alg, ec_p384_verifies, .init = setup_p384, .fini = teardown, .timeout = 120)
{
    X509_CRL *crl;
    alg_roundtrip();
    crl = read_crl(pubf(".crl"));
    cr_assert_eq(X509_CRL_get_signature_nid(crl), NID_ecdsa_with_SHA384);
    X509_CRL_free(crl);
}

Test(crl, numbers_rise_across_publications_and_restart)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_info f1, d1, f2, d2, f3;
    unsigned char *der = NULL;
    struct store_crl_record meta;

    base_cfg(&cfg);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_BOTH, "t", &f1, &d1), 0);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_BOTH, "t", &f2, &d2), 0);
    cr_assert(f1.number < d1.number && d1.number < f2.number && f2.number < d2.number);
    store_close(store);
    cr_assert_eq(store_open_blocking(store_path, 0, &store), 0);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_FULL, "t", &f3, NULL), 0);
    cr_assert_gt(f3.number, d2.number);
    cr_assert_eq(store_crl_latest_blocking(store, issuer_id, 0, &meta, &der), 0);
    cr_assert_eq(meta.number, f3.number);
    free(der);
    der = NULL;
    cr_assert_eq(store_crl_latest_blocking(store, issuer_id, 1, &meta, &der), 0);
    cr_assert_eq(meta.number, d2.number);
    cr_assert_eq(meta.base_number, f2.number);
    free(der);
}

Test(crl, delta_is_exactly_the_changes_and_released_hold_leaves)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_info full, delta, full2;
    X509_CRL *crl = NULL;
    X509_REVOKED *r = NULL;
    int crit = 0;

    base_cfg(&cfg);
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_FULL, "t", &full, NULL), 0);
    do_revoke(store, 7, STORE_REASON_AFFILIATION_CHANGED, now_s - 10, 0);
    do_revoke(store, 8, STORE_REASON_CERTIFICATE_HOLD, now_s - 5, 0);
    do_revoke(store, 6, STORE_REASON_KEY_COMPROMISE, now_s - 4, 0); /* hold -> keyCompromise */
    release(store, 5);                                              /* hold released */
    add_cert(21, 0);                                                /* an issue: not a CRL change */
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_DELTA, "t", NULL, &delta), 0);
    cr_assert_eq(delta.base_number, full.number);
    tools_verify(pubf("-delta.crl"));
    crl = read_crl(pubf("-delta.crl"));
    cr_assert_eq(crl_int_ext(crl, NID_delta_crl, &crit), full.number);
    cr_assert_eq(n_entries(crl), 4);
    cr_assert_eq(entry_reason(find_entry(crl, 7)), 3);
    cr_assert_eq(entry_reason(find_entry(crl, 8)), 6);
    cr_assert_eq(entry_reason(find_entry(crl, 6)), 1);
    r = find_entry(crl, 5);
    cr_assert_not_null(r);
    cr_assert_eq(entry_reason(r), 8, "removeFromCRL");
    cr_assert_null(find_entry(crl, 2), "unchanged entries stay in the base only");
    X509_CRL_free(crl);

    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_FULL, "t", &full2, NULL), 0);
    crl = read_crl(pubf(".crl"));
    cr_assert_null(find_entry(crl, 5), "released hold gone from the next full CRL");
    cr_assert_not_null(find_entry(crl, 7));
    cr_assert_eq(entry_reason(find_entry(crl, 6)), 1);
    cr_assert_eq(n_entries(crl), 7); /* 2 3 4 6 7 8 0x80 */
    X509_CRL_free(crl);
}

Test(crl, expired_certs_on_crl_keeps_them_with_the_extension)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    X509_CRL *crl = NULL;
    ASN1_GENERALIZEDTIME *since = NULL;
    int crit = 0;

    base_cfg(&cfg);
    cfg.expired_on_crl_since = now_s - 365 * 86400;
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_FULL, "t", NULL, NULL), 0);
    tools_verify(pubf(".crl"));
    crl = read_crl(pubf(".crl"));
    cr_assert_not_null(find_entry(crl, 100), "expired certificate kept");
    {
        /* OpenSSL 3.0 has no NID for ExpiredCertsOnCRL (2.5.29.60): decode it by hand. */
        ASN1_OBJECT *oid = OBJ_txt2obj("2.5.29.60", 1);
        int at = X509_CRL_get_ext_by_OBJ(crl, oid, -1);
        X509_EXTENSION *ext = NULL;
        const ASN1_OCTET_STRING *val = NULL;
        const unsigned char *q = NULL;
        cr_assert_geq(at, 0);
        ext = X509_CRL_get_ext(crl, at);
        crit = X509_EXTENSION_get_critical(ext);
        cr_assert_eq(crit, 0);
        val = X509_EXTENSION_get_data(ext);
        q = ASN1_STRING_get0_data(val);
        since = d2i_ASN1_GENERALIZEDTIME(NULL, &q, ASN1_STRING_length(val));
        cr_assert_not_null(since);
        ASN1_OBJECT_free(oid);
    }
    cr_assert_eq(asn1_time_unix(since), now_s - 365 * 86400);
    ASN1_GENERALIZEDTIME_free(since);
    X509_CRL_free(crl);
    /* and with a long retention instead, it stays too (no extension) */
    base_cfg(&cfg);
    cfg.expired_retention_seconds = 90 * 86400;
    cr_assert_eq(crl_publish_blocking(&cfg, &ic, hsm, store, CRL_FULL, "t", NULL, NULL), 0);
    crl = read_crl(pubf(".crl"));
    cr_assert_not_null(find_entry(crl, 100));
    {
        ASN1_OBJECT *oid = OBJ_txt2obj("2.5.29.60", 1);
        cr_assert_eq(X509_CRL_get_ext_by_OBJ(crl, oid, -1), -1);
        ASN1_OBJECT_free(oid);
    }
    X509_CRL_free(crl);
}

/* ---- the publisher ---------------------------------------------------------------------------- */

static int wait_for(struct crl_publisher *pub, int64_t min_full, uint64_t min_failures,
                    int timeout_ms, struct crl_issuer_stats *st)
{
    int64_t end = util_mono_ms() + timeout_ms;
    do {
        cr_assert_eq(crl_publisher_stats(pub, 0, st), 0);
        if (st->full_number >= min_full && st->failures >= min_failures &&
            (min_full == 0 || st->delta_number > st->full_number))
            return 1;
        usleep(20000);
    } while (util_mono_ms() < end);
    return 0;
}

static int count_open(void *c, const struct store_sla_row *row)
{
    if (row->issuer_id == issuer_id)
        (*(int *)c)++;
    return 0;
}

static int change_cb(void *ctx, const struct store_change *ch)
{
    struct crl_publisher *pub = ctx;
    return crl_publisher_apply_change(pub, ch);
}

Test(crl, publisher_publishes_a_change_within_the_coalesce_delay)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_publisher *pub = NULL;
    struct crl_issuer_stats st;
    X509_CRL *crl = NULL;
    int64_t feed, first, last_full, t0, took;

    base_cfg(&cfg);
    cfg.coalesce_ms = 300;
    cr_assert_eq(crl_publisher_new(&cfg, &ic, 1, hsm, &pub), 0);
    cr_assert_eq(crl_publisher_start(pub), 0);
    cr_assert(wait_for(pub, 1, 0, 10000, &st), "first CRL");
    first = st.full_number;
    feed = do_revoke(store, 9, STORE_REASON_KEY_COMPROMISE, 0, 0);
    t0 = util_mono_ms();
    cr_assert_eq(store_feed_read_blocking(store, feed - 1, 10, change_cb, pub), 1);
    cr_assert(wait_for(pub, first + 1, 0, 5000, &st), "published after the change");
    took = util_mono_ms() - t0;
    last_full = st.full_number;
    cr_assert_geq(took, 250, "coalesced, not immediate: %lld ms", (long long)took);
    cr_assert_leq(took, 3000, "within the delay plus generation: %lld ms", (long long)took);
    crl = read_crl(pubf(".crl"));
    cr_assert_not_null(find_entry(crl, 9));
    X509_CRL_free(crl);
    crl_publisher_stop(pub);
    crl_publisher_free(pub);
    pub = NULL;
    {
        /* the deadline report: no open revocation left for this issuer */
        int open = 0;
        cr_assert_eq(store_sla_list_blocking(store, 1, 0, count_open, &open), 0);
        cr_assert_eq(open, 0);
    }
    /* a restarted publisher serves the saved CRLs at once */
    cr_assert_eq(crl_publisher_new(&cfg, &ic, 1, hsm, &pub), 0);
    cr_assert_eq(crl_publisher_load_blocking(pub, store), 0);
    cr_assert_eq(crl_publisher_stats(pub, 0, &st), 0);
    cr_assert_eq(st.full_number, last_full, "loaded the last full CRL");
    crl_publisher_free(pub);
}

Test(crl, failed_publication_keeps_the_previous_crl_and_recovers)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_publisher *pub = NULL;
    struct crl_issuer_stats st;
    unsigned char *before = NULL, *after = NULL;
    size_t before_len = 0, after_len = 0;
    char cmd[512], out[4096];
    int64_t number;

    base_cfg(&cfg);
    cfg.retry_min_ms = 100;
    cfg.retry_max_ms = 200;
    cr_assert_eq(crl_publisher_new(&cfg, &ic, 1, hsm, &pub), 0);
    cr_assert_eq(crl_publisher_start(pub), 0);
    cr_assert(wait_for(pub, 1, 0, 10000, &st));
    number = st.full_number;
    cr_assert_eq(util_file_read(pubf(".crl"), 1 << 20, &before, &before_len), 0);
    /* The publication folder becomes unusable (a file where the folder was): every publication
     * fails at the atomic write, like a full disk. */
    (void)snprintf(cmd, sizeof(cmd), "mv %s %s.away && touch %s", pub_dir, pub_dir, pub_dir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    do_revoke(store, 10, STORE_REASON_KEY_COMPROMISE, 0, 0);
    cr_assert_eq(crl_publish_now(pub, CA_NAME), 0);
    cr_assert(wait_for(pub, 0, 2, 10000, &st), "failures counted and retried");
    cr_assert_eq(st.full_number, number, "the last good CRL stays served");
    cr_assert_eq(st.failing, 1);
    (void)snprintf(cmd, sizeof(cmd), "%s.away/%s.crl", pub_dir, CA_NAME);
    cr_assert_eq(util_file_read(cmd, 1 << 20, &after, &after_len), 0);
    cr_assert_eq(after_len, before_len);
    cr_assert_eq(memcmp(before, after, before_len), 0, "the published file is untouched");
    cr_assert_eq(crl_publish_now(pub, "no-such-issuer"), UTIL_ENOTFOUND);
    /* The folder comes back: the retry publishes, with a higher number. */
    (void)snprintf(cmd, sizeof(cmd), "rm %s && mv %s.away %s", pub_dir, pub_dir, pub_dir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert(wait_for(pub, number + 1, 0, 10000, &st), "recovered");
    cr_assert_eq(st.failing, 0);
    free(before);
    free(after);
    crl_publisher_free(pub);
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

static void *run_http(void *arg)
{
    (void)http_server_run(arg); /* returns after http_server_stop */
    return NULL;
}

static int curl(const char *args, char *out, size_t len)
{
    char cmd[1024];
    (void)snprintf(cmd, sizeof(cmd), "curl -s -S %s", args);
    return ts_run(cmd, out, len);
}

Test(crl, http_serves_crls_with_validators_and_the_repository)
{
    struct crl_config cfg;
    struct crl_issuer_config ic = issuer_cfg();
    struct crl_publisher *pub = NULL;
    struct crl_issuer_stats st;
    struct http_config hc;
    struct http_server *srv = NULL;
    pthread_t thread;
    char args[1024], out[8192], etag[64] = "", lm[64] = "";
    const char *h;
    int port;

    base_cfg(&cfg);
    cr_assert_eq(crl_publisher_new(&cfg, &ic, 1, hsm, &pub), 0);
    memset(&hc, 0, sizeof(hc));
    hc.workers = 1;
    hc.n_listeners = 1;
    (void)snprintf(hc.listeners[0].host, sizeof(hc.listeners[0].host), "127.0.0.1");
    hc.listeners[0].port = 0;
    hc.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&hc.limits);
    cr_assert_eq(http_server_new(&hc, &srv), 0);
    cr_assert_eq(crl_publisher_register(pub, srv), 0);
    cr_assert_eq(http_server_start(srv), 0);
    cr_assert_eq(pthread_create(&thread, NULL, run_http, srv), 0);
    port = http_server_port(srv, 0);
    cr_assert_eq(crl_publisher_start(pub), 0);
    cr_assert(wait_for(pub, 1, 0, 10000, &st));

    (void)snprintf(args, sizeof(args), "-D - -o %s/got.crl http://127.0.0.1:%d/crl/" CA_NAME ".crl",
                   dir, port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0, "%s", out);
    cr_assert_not_null(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_not_null(strstr(out, "Content-Type: application/pkix-crl"), "%s", out);
    cr_assert_not_null(strstr(out, "public, no-transform"), "%s", out);
    cr_assert_not_null(strstr(out, "Cache-Control: max-age=3600"), "%s", out);
    cr_assert_not_null(strstr(out, "Expires: "), "%s", out);
    h = strstr(out, "ETag: ");
    cr_assert_not_null(h);
    (void)sscanf(h + 6, "%63[^\r]", etag);
    h = strstr(out, "Last-Modified: ");
    cr_assert_not_null(h);
    (void)sscanf(h + 15, "%63[^\r]", lm);
    {
        unsigned char *a = NULL, *b = NULL;
        size_t al = 0, bl = 0;
        char got[160];
        (void)snprintf(got, sizeof(got), "%s/got.crl", dir);
        cr_assert_eq(util_file_read(got, 1 << 20, &a, &al), 0);
        cr_assert_eq(util_file_read(pubf(".crl"), 1 << 20, &b, &bl), 0);
        cr_assert_eq(al, bl);
        cr_assert_eq(memcmp(a, b, al), 0, "served bytes = published file");
        free(a);
        free(b);
        tools_verify(got);
    }
    (void)snprintf(args, sizeof(args),
                   "-D - -o /dev/null -H 'If-None-Match: %s' http://127.0.0.1:%d/crl/" CA_NAME
                   ".crl",
                   etag, port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 304"), "%s", out);
    (void)snprintf(
        args, sizeof(args),
        "-D - -o /dev/null -H 'If-None-Match: \"other\"' http://127.0.0.1:%d/crl/" CA_NAME ".crl",
        port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 200"), "%s", out);
    (void)snprintf(args, sizeof(args),
                   "-D - -o /dev/null -H 'If-Modified-Since: %s' http://127.0.0.1:%d/crl/" CA_NAME
                   ".crl",
                   lm, port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 304"), "%s", out);
    (void)snprintf(args, sizeof(args),
                   "-D - -o /dev/null -H 'If-Modified-Since: Mon, 01 Jan 2001 00:00:00 GMT' "
                   "http://127.0.0.1:%d/crl/" CA_NAME ".crl",
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 200"), "%s", out);
    (void)snprintf(args, sizeof(args),
                   "-D - -o %s/got-delta.crl http://127.0.0.1:%d/crl/" CA_NAME "-delta.crl", dir,
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 200"), "%s", out);
    (void)snprintf(args, sizeof(args), "%s/got-delta.crl", dir);
    tools_verify(args);
    (void)snprintf(args, sizeof(args), "-D - -o /dev/null http://127.0.0.1:%d/crl/nobody.crl",
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 404"), "%s", out);
    /* the repository: serial 0x80 is stored as 00 80; both spellings find it */
    (void)snprintf(args, sizeof(args), "-D - http://127.0.0.1:%d/certs/" CA_NAME "/80.crt", port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_not_null(strstr(out, "HTTP/1.1 200"), "%s", out);
    cr_assert_not_null(strstr(out, "Content-Type: application/pkix-cert"), "%s", out);
    cr_assert_not_null(strstr(out, "Content-Length: 2"), "%s", out);
    (void)snprintf(args, sizeof(args),
                   "-o /dev/null -w '%%{http_code}' "
                   "http://127.0.0.1:%d/certs/" CA_NAME "/0080.crt",
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "200");
    (void)snprintf(args, sizeof(args),
                   "-o /dev/null -w '%%{http_code}' "
                   "http://127.0.0.1:%d/certs/" CA_NAME "/4242.crt",
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "404");
    (void)snprintf(args, sizeof(args),
                   "-o /dev/null -w '%%{http_code}' "
                   "http://127.0.0.1:%d/certs/other/01.crt",
                   port);
    cr_assert_eq(curl(args, out, sizeof(out)), 0);
    cr_assert_str_eq(out, "404");
    {
        char metrics[8192];
        cr_assert_gt(crl_publisher_metrics(pub, metrics, sizeof(metrics)), 0);
        cr_assert_not_null(
            strstr(metrics, "pkiva_crl_number{issuer=\"" CA_NAME "\",kind=\"full\"}"));
        cr_assert_not_null(strstr(metrics, "pkiva_crl_http_total{result=\"not_modified\"} 2"), "%s",
                           metrics);
        cr_assert_not_null(strstr(metrics, "pkiva_cert_repo_total{result=\"served\"} 2"), "%s",
                           metrics);
    }
    crl_publisher_stop(pub);
    http_server_stop(srv);
    cr_assert_eq(pthread_join(thread, NULL), 0);
    http_server_free(srv);
    crl_publisher_free(pub);
}
