/* SPDX-License-Identifier: Apache-2.0 */
/* End-to-end tests of the OCSP responder: a small PKI whose keys are generated in a real SoftHSM2
 * token, a real store file, the real HTTP server on 127.0.0.1 (port 0), and real clients: the
 * openssl ocsp command (POST, nonce, -VAfile/-CAfile), curl for GET, 304 and headers, and GnuTLS
 * ocsptool verifying a response. */
#define _GNU_SOURCE /* strcasestr */
#include "pki.h"
#include "support.h"

#include <criterion/criterion.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <ocsp/ocsp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "pkiva"
#define PIN "123456"

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

struct e2e {
    char dir[64];
    struct hsm *hsm;
    struct hsm_key *root_key, *ca_key, *ocsp_key;
    X509 *root, *ca, *responder, *ee[4];
    EVP_PKEY *ee_key;
    struct store *store;
    int64_t issuer_id, feed_head;
    struct ocsp_responder *resp;
    struct http_server *srv;
    pthread_t run_thread;
    int port;
    char url[64];
};
static struct e2e E;

static void write_pem(const char *name, X509 *a, X509 *b)
{
    char path[256];
    FILE *f;
    (void)snprintf(path, sizeof(path), "%s/%s", E.dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert(PEM_write_X509(f, a));
    if (b != NULL)
        cr_assert(PEM_write_X509(f, b));
    fclose(f);
}

static X509 *sign_cert(struct hsm_key *by, X509 *issuer, EVP_PKEY *pub, const char *cn, long serial,
                       int kind, long days)
{
    EVP_MD_CTX *ctx = NULL;
    X509 *x;
    cr_assert_eq(hsm_sign_ctx_new_blocking(E.hsm, by, &ctx), 0);
    x = tp_cert(issuer, ctx, pub, cn, serial, kind, days);
    EVP_MD_CTX_free(ctx);
    cr_assert_not_null(x, "certificate %s", cn);
    return x;
}

static void add_cert(X509 *x)
{
    struct store_cert_new c;
    unsigned char serial[32];
    unsigned char *der = NULL;
    int der_len = i2d_X509(x, &der);
    memset(&c, 0, sizeof(c));
    c.issuer_id = E.issuer_id;
    c.serial_len = 0;
    {
        const ASN1_INTEGER *ai = X509_get0_serialNumber(x);
        c.serial_len = tp_serial_bytes(ASN1_INTEGER_get(ai), serial);
    }
    c.serial = serial;
    c.not_before = time(NULL) - 3600;
    c.not_after = time(NULL) + 86400 * 90;
    c.cert_der = der;
    c.cert_len = (size_t)der_len;
    cr_assert_eq(store_cert_add_blocking(E.store, &c, NULL), 0);
    OPENSSL_free(der);
}

static int revoke_in_store(long serial_value, int reason, int64_t *feed_id)
{
    struct store_revocation r;
    unsigned char serial[32];
    memset(&r, 0, sizeof(r));
    r.issuer_id = E.issuer_id;
    r.serial_len = tp_serial_bytes(serial_value, serial);
    r.serial = serial;
    r.reason = reason;
    r.actor = "test";
    return store_cert_revoke_blocking(E.store, &r, feed_id);
}

static void *run_server(void *arg)
{
    (void)arg;
    (void)http_server_run(E.srv); /* returns 0 after stop */
    return NULL;
}

static void setup(void)
{
    struct hsm_config hc;
    struct ocsp_config cfg;
    struct ocsp_issuer_config is;
    struct http_config http;
    char path[256];
    unsigned char *der = NULL;
    int der_len;

    memset(&E, 0, sizeof(E));
    cr_assert_eq(ts_tmpdir(E.dir, sizeof(E.dir)), 0);
    cr_assert_eq(ts_softhsm_token(E.dir, TOKEN, PIN), 0);
    memset(&hc, 0, sizeof(hc));
    (void)snprintf(path, sizeof(path), "%s/pin.txt", E.dir);
    hc.module_path = TS_SOFTHSM_MODULE;
    hc.pin_file = path;
    hc.softhsm_no_deinit = 1;
    hc.sessions = 2;
    hc.queue_max = 256;
    cr_assert_eq(hsm_open(&hc, &E.hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "root", HSM_EC_P256, &E.root_key), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "ca", HSM_EC_P256, &E.ca_key), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "ocsp", HSM_EC_P256, &E.ocsp_key), 0);

    E.root = sign_cert(E.root_key, NULL, E.root_key->pkey, "E2E Root", 1, TP_CA, 3650);
    E.ca = sign_cert(E.root_key, E.root, E.ca_key->pkey, "E2E Issuing CA", 2, TP_CA, 1825);
    E.responder = sign_cert(E.ca_key, E.ca, E.ocsp_key->pkey, "E2E OCSP", 3, TP_RESPONDER, 30);
    E.ee_key = EVP_EC_gen("P-256");
    for (int i = 0; i < 4; i++) {
        char cn[32];
        (void)snprintf(cn, sizeof(cn), "ee%d.example", i);
        E.ee[i] = sign_cert(E.ca_key, E.ca, E.ee_key, cn, 0x1000 + i, TP_EE, 90);
    }
    write_pem("root.pem", E.root, NULL);
    write_pem("ca.pem", E.ca, NULL);
    write_pem("chain.pem", E.root, E.ca);
    write_pem("responder.pem", E.responder, NULL);
    for (int i = 0; i < 4; i++) {
        char name[16];
        (void)snprintf(name, sizeof(name), "ee%d.pem", i);
        write_pem(name, E.ee[i], NULL);
    }

    /* the store: ee0 good, ee1 revoked (keyCompromise), ee2 good (revoked during a test), ee3
     * never registered (unknown) */
    (void)snprintf(path, sizeof(path), "%s/pkiva.db", E.dir);
    cr_assert_eq(store_open_blocking(path, STORE_OPEN_CREATE, &E.store), 0);
    der_len = i2d_X509(E.ca, &der);
    cr_assert_eq(store_issuer_put_blocking(E.store, "e2e-ca", der, (size_t)der_len, &E.issuer_id),
                 0);
    OPENSSL_free(der);
    for (int i = 0; i < 3; i++)
        add_cert(E.ee[i]);
    cr_assert_eq(revoke_in_store(0x1001, STORE_REASON_KEY_COMPROMISE, NULL), 0);
    {
        /* Responses signed in the second of the store's latest change earn a 304 by ETag only
         * (another status may have been served with that Last-Modified): start in the next
         * second, so that the If-Modified-Since cases below see responses signed after it. */
        time_t changed = time(NULL);
        struct timespec tick = {0, 50 * 1000 * 1000};
        while (time(NULL) <= changed)
            nanosleep(&tick, NULL);
    }

    config_default(&cfg);
    cfg.prefixes[0] = "/";
    cfg.prefixes[1] = "/ocsp";
    cfg.n_prefixes = 2;
    memset(&is, 0, sizeof(is));
    is.name = "e2e-ca";
    is.store_issuer_id = E.issuer_id;
    is.cert = E.ca;
    is.signer_cert = E.responder;
    is.signer_key = E.ocsp_key;
    cr_assert_eq(ocsp_responder_new(&cfg, &is, 1, E.hsm, &E.resp), 0);
    cr_assert_eq(ocsp_responder_load_blocking(E.resp, E.store, &E.feed_head), 0);

    memset(&http, 0, sizeof(http));
    http.workers = 2;
    http.n_listeners = 1;
    (void)snprintf(http.listeners[0].host, sizeof(http.listeners[0].host), "127.0.0.1");
    http.listeners[0].port = 0;
    http.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&http.limits);
    cr_assert_eq(http_server_new(&http, &E.srv), 0);
    cr_assert_eq(ocsp_responder_register(E.resp, E.srv), 0);
    cr_assert_eq(http_server_start(E.srv), 0);
    E.port = http_server_port(E.srv, 0);
    cr_assert_gt(E.port, 0);
    (void)snprintf(E.url, sizeof(E.url), "http://127.0.0.1:%d", E.port);
    cr_assert_eq(pthread_create(&E.run_thread, NULL, run_server, NULL), 0);
    cr_assert_eq(ocsp_responder_start(E.resp), 0);
}

static void teardown(void)
{
    if (E.srv != NULL) {
        http_server_stop(E.srv);
        (void)pthread_join(E.run_thread, NULL); /* our thread */
        http_server_free(E.srv);
    }
    ocsp_responder_stop(E.resp);
    ocsp_responder_free(E.resp);
    store_close(E.store);
    X509_free(E.root);
    X509_free(E.ca);
    X509_free(E.responder);
    for (int i = 0; i < 4; i++)
        X509_free(E.ee[i]);
    EVP_PKEY_free(E.ee_key);
    hsm_key_free(E.root_key);
    hsm_key_free(E.ca_key);
    hsm_key_free(E.ocsp_key);
    hsm_close(E.hsm);
    ts_rmrf(E.dir);
}

/* Runs a shell command in the test directory; returns its exit status and output. */
static int sh(char *out, size_t out_len, const char *fmt, ...)
{
    char cmd[2048];
    char full[2300];
    va_list ap;
    int status;
    va_start(ap, fmt);
    (void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    (void)snprintf(full, sizeof(full), "cd %s && %s", E.dir, cmd);
    status = ts_run(full, out, out_len);
    cr_log_info("$ %s\n-> %d\n%s", cmd, status, out != NULL ? out : "");
    return status;
}

static void ocsp_query(const char *cert, const char *extra, char *out, size_t out_len)
{
    (void)sh(out, out_len,
             "openssl ocsp -issuer ca.pem -cert %s -url %s/ -CAfile chain.pem -timeout 10 %s", cert,
             E.url, extra);
}

TestSuite(e2e, .init = setup, .fini = teardown, .timeout = 120);

Test(e2e, post_good_revoked_unknown_with_nonce)
{
    char out[8192];
    ocsp_query("ee0.pem", "", out, sizeof(out)); /* openssl sends a nonce by default */
    cr_assert_not_null(strstr(out, "Response verify OK"), "%s", out);
    cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
    cr_assert_null(strstr(out, "WARNING: no nonce"), "nonce not echoed: %s", out);

    ocsp_query("ee1.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "Response verify OK"), "%s", out);
    cr_assert_not_null(strstr(out, "ee1.pem: revoked"), "%s", out);
    cr_assert_not_null(strstr(out, "Reason: keyCompromise"), "%s", out);

    ocsp_query("ee3.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "ee3.pem: unknown"), "%s", out);

    /* two CertIDs in one request, trusted via -VAfile (the responder certificate itself) */
    (void)sh(out, sizeof(out),
             "openssl ocsp -issuer ca.pem -cert ee0.pem -cert ee1.pem -url %s/ocsp -VAfile "
             "responder.pem -no_nonce -timeout 10",
             E.url);
    cr_assert_not_null(strstr(out, "Response verify OK"), "%s", out);
    cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
    cr_assert_not_null(strstr(out, "ee1.pem: revoked"), "%s", out);
}

/* SHA-384 and SHA-512 CertIDs: matched and signed live (no pre-signed slot), the response repeats
 * the request's CertID, and a pre-signed SHA-1 answer is unaffected; MD5 stays unauthorized. */
static void ocsp_query_md(const char *md, const char *cert, char *out, size_t out_len)
{
    /* openssl ocsp wants the CertID digest before -cert */
    (void)sh(out, out_len,
             "openssl ocsp %s -issuer ca.pem -cert %s -url %s/ -CAfile chain.pem -timeout 10 "
             "-no_nonce -resp_text",
             md, cert, E.url);
}

Test(e2e, sha384_and_sha512_certids_signed_live)
{
    char out[8192];
    const char *algs[] = {"-sha384", "-sha512"};
    for (int i = 0; i < 2; i++) {
        ocsp_query_md(algs[i], "ee0.pem", out, sizeof(out));
        cr_assert_not_null(strstr(out, "Response verify OK"), "%s: %s", algs[i], out);
        cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s: %s", algs[i], out);
        cr_assert_not_null(
            strstr(out, i == 0 ? "Hash Algorithm: sha384" : "Hash Algorithm: sha512"),
            "%s: the CertID is not repeated: %s", algs[i], out);
        ocsp_query_md(algs[i], "ee1.pem", out, sizeof(out));
        cr_assert_not_null(strstr(out, "ee1.pem: revoked"), "%s: %s", algs[i], out);
    }
    ocsp_query("ee0.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
    ocsp_query_md("-md5", "ee0.pem", out, sizeof(out));
    cr_assert_not_null(strstr(out, "unauthorized"), "MD5 CertID: %s", out);
}

Test(e2e, unauthorized_and_malformed)
{
    char out[8192];
    /* the CA certificate asked of its root: an issuer this responder does not serve */
    (void)sh(out, sizeof(out),
             "openssl ocsp -issuer root.pem -cert ca.pem -url %s/ -no_nonce -timeout 10", E.url);
    cr_assert_not_null(strstr(out, "unauthorized"), "%s", out);

    (void)sh(out, sizeof(out),
             "printf 'garbage' | curl -s -o bad.der -w '%%{http_code}' -H 'Content-Type: "
             "application/ocsp-request' --data-binary @- %s/ && od -An -tx1 bad.der",
             E.url);
    cr_assert_not_null(strstr(out, "200"), "%s", out);
    cr_assert_not_null(strstr(out, "30 03 0a 01 01"), "malformedRequest expected: %s", out);

    (void)sh(out, sizeof(out),
             "curl -s -o /dev/null -w '%%{http_code}' -H 'Content-Type: text/plain' "
             "--data-binary x %s/",
             E.url);
    cr_assert_not_null(strstr(out, "415"), "%s", out);
}

/* An unknown status (ee3: issued, never registered) is cached for unknown_max_age (60 s) at most,
 * not the hour a good answer gets: a certificate asked about before its registration turns good
 * within a second of it, and an HTTP cache must not keep serving "unknown" (it kept 3600 s). */
Test(e2e, unknown_status_is_cached_briefly)
{
    char out[8192];
    char *p;

    cr_assert_eq(
        sh(out, sizeof(out), "openssl ocsp -issuer ca.pem -cert ee3.pem -no_nonce -reqout u.der"),
        0, "%s", out);
    cr_assert_eq(sh(out, sizeof(out),
                    "b64=$(openssl base64 -A -in u.der | sed -e 's/+/%%2B/g' -e 's|/|%%2F|g' "
                    "-e 's/=/%%3D/g') && curl -s -D uhdr.txt -o u.resp %s/ocsp/$b64 && "
                    "openssl ocsp -respin u.resp -noverify -resp_text | grep 'Cert Status' && "
                    "cat uhdr.txt",
                    E.url),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "Cert Status: unknown"), "%s", out);
    p = strcasestr(out, "max-age=");
    cr_assert_not_null(p, "%s", out);
    cr_assert(atoi(p + 8) > 0 && atoi(p + 8) <= 60, "max-age %d for unknown", atoi(p + 8));
    cr_assert_not_null(strcasestr(out, "must-revalidate"), "%s", out);
}

/* GET of ee0's request: headers, body verifies, 304 with the ETag. */
Test(e2e, get_headers_etag_304_and_ocsptool)
{
    char out[8192];
    char etag[128] = "";
    char *p;

    cr_assert_eq(
        sh(out, sizeof(out), "openssl ocsp -issuer ca.pem -cert ee0.pem -no_nonce -reqout req.der"),
        0, "%s", out);
    /* URL-encode the base64: '+' '/' '=' escaped, as RFC 6960 Appendix A asks */
    cr_assert_eq(
        sh(out, sizeof(out),
           "b64=$(openssl base64 -A -in req.der | sed -e 's/+/%%2B/g' -e 's|/|%%2F|g' "
           "-e 's/=/%%3D/g') && curl -s -D hdr.txt -o resp.der %s/ocsp/$b64 && cat hdr.txt",
           E.url),
        0, "%s", out);
    cr_assert_not_null(strstr(out, "200"), "%s", out);
    cr_assert_not_null(strcasestr(out, "Content-Type: application/ocsp-response"), "%s", out);
    cr_assert_not_null(strcasestr(out, "public, no-transform, must-revalidate"), "%s", out);
    cr_assert_not_null(strcasestr(out, "Last-Modified: "), "%s", out);
    cr_assert_not_null(strcasestr(out, "Expires: "), "%s", out);
    p = strcasestr(out, "max-age=");
    cr_assert_not_null(p);
    cr_assert(atoi(p + 8) > 3000 && atoi(p + 8) <= 3600, "max-age %d", atoi(p + 8));
    p = strcasestr(out, "ETag: ");
    cr_assert_not_null(p, "%s", out);
    (void)sscanf(p + 6, "%127[^\r\n]", etag);
    cr_assert_gt(strlen(etag), 2);

    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ocsp -respin resp.der -issuer ca.pem -cert ee0.pem -CAfile chain.pem"),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
    cr_assert_not_null(strstr(out, "Response verify OK"), "%s", out);

    /* GnuTLS verifies the same response against the CA (delegated responder) */
    cr_assert_eq(sh(out, sizeof(out), "ocsptool -e --load-signer=ca.pem --load-response=resp.der"),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "Success"), "%s", out);

    /* the same resource again, unescaped '/' and '+', no padding, doubled slash; with the ETag */
    cr_assert_eq(sh(out, sizeof(out),
                    "b64=$(openssl base64 -A -in req.der | tr -d '=') && curl -s -o /dev/null "
                    "-w '%%{http_code}' -H 'If-None-Match: %s' %s//$b64",
                    etag, E.url),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "304"), "expected 304: %s", out);

    /* If-Modified-Since (RFC 9110 13.1.3): at or after Last-Modified 304, before it 200; an
     * If-None-Match that does not match wins over a matching If-Modified-Since. */
    {
        static const struct {
            const char *headers;
            const char *want;
        } cases[] = {
            {"-H \"If-Modified-Since: $lm\"", "304"},
            {"-H 'If-Modified-Since: Fri, 01 Jan 2016 00:00:00 GMT'", "200"},
            {"-H 'If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT'", "304"},
            {"-H 'If-Modified-Since: yesterday'", "200"},
            {"-H \"If-Modified-Since: $lm\" -H 'If-None-Match: \"nope\"'", "200"},
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            cr_assert_eq(
                sh(out, sizeof(out),
                   "lm=$(grep -i '^Last-Modified:' hdr.txt | cut -d' ' -f2- | tr -d '\\r') "
                   "&& b64=$(openssl base64 -A -in req.der | tr -d '=') && curl -s "
                   "-o /dev/null -w '%%{http_code}' %s %s/$b64",
                   cases[i].headers, E.url),
                0, "%s", out);
            cr_assert_str_eq(out, cases[i].want, "case %zu (%s)", i, cases[i].headers);
        }
    }
}

static int apply_one(void *ctx, const struct store_change *ch)
{
    int *applied = ctx;
    cr_assert_eq(ocsp_responder_apply_change(E.resp, ch), 0);
    (*applied)++;
    return 0;
}

Test(e2e, revocation_through_change_feed)
{
    char out[8192];
    int64_t feed_id = 0;
    int64_t t0, visible_ms = -1;
    int applied = 0;

    ocsp_query("ee2.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "ee2.pem: good"), "%s", out);

    cr_assert_eq(revoke_in_store(0x1002, STORE_REASON_SUPERSEDED, &feed_id), 0);
    t0 = util_mono_ms();
    /* what the server's feed poller does; read twice: re-delivery must be harmless */
    for (int round = 0; round < 2; round++)
        cr_assert_geq(store_feed_read_blocking(E.store, E.feed_head, 100, apply_one, &applied), 1);
    cr_assert_eq(applied, 2);
    while (util_mono_ms() - t0 < 10000) {
        if (ocsp_responder_visible_feed_id(E.resp) >= feed_id) {
            visible_ms = util_mono_ms() - t0;
            break;
        }
        usleep(2000);
    }
    cr_log_info("revocation visible in OCSP after %lld ms", (long long)visible_ms);
    cr_assert_geq(visible_ms, 0, "revocation never became visible");
    cr_assert_lt(visible_ms, 1000, "revocation SLA: %lld ms", (long long)visible_ms);

    ocsp_query("ee2.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "ee2.pem: revoked"), "%s", out);
    cr_assert_not_null(strstr(out, "Reason: superseded"), "%s", out);
}

Test(e2e, presigner_fills_cache_and_stats)
{
    struct ocsp_stats st;
    int64_t t0 = util_mono_ms();
    do {
        ocsp_stats_get(E.resp, &st);
        if (st.cache_entries >= 3)
            break;
        usleep(20000);
    } while (util_mono_ms() - t0 < 20000);
    cr_assert_eq(st.index_entries, 3);
    cr_assert_eq(st.cache_entries, 3, "all three registered certificates pre-signed");
    cr_assert_geq(st.presigned, 3);
    {
        char out[8192];
        ocsp_query("ee0.pem", "-no_nonce", out, sizeof(out));
        cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
    }
    ocsp_stats_get(E.resp, &st);
    cr_assert_geq(st.served_cached, 1, "a pre-signed response should have been served");
    cr_assert_geq(st.requests_post, 1);
}

/* The load appends into an empty index without looking keys up (ocsp_load.c); a second load into
 * the same index must find them instead of adding every certificate twice. */
Test(e2e, second_load_adds_nothing)
{
    struct ocsp_stats st;
    char out[8192];
    cr_assert_eq(ocsp_responder_load_blocking(E.resp, E.store, NULL), 0);
    ocsp_stats_get(E.resp, &st);
    cr_assert_eq(st.index_entries, 3);
    ocsp_query("ee0.pem", "-no_nonce", out, sizeof(out));
    cr_assert_not_null(strstr(out, "ee0.pem: good"), "%s", out);
}
