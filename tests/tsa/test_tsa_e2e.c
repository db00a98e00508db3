/* SPDX-License-Identifier: Apache-2.0 */
/* End-to-end tests of the TSA: a CA and TSA certificates whose keys are generated in a real SoftHSM2
 * token, a real store file, the real HTTP server on 127.0.0.1 (port 0), and real clients: openssl ts
 * to make requests and to verify replies, curl to POST them, and a small keep-alive client for the
 * concurrency tests. Every failure code is checked as a DER TimeStampResp. */
#define _GNU_SOURCE /* strcasestr */
#include "support.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <tsa/tsa.h>
#include <tsa/tsa_int.h>

#include "tsa_req_build.h"
#include <unistd.h>

/* criterion runs each test in a child whose leak report does not fail the test: a test that is
 * about leaks asks LeakSanitizer itself (ASan builds; elsewhere it checks nothing). */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define LEAKS_FOUND() __lsan_do_recoverable_leak_check()
#else
#define LEAKS_FOUND() 0
#endif

#define TOKEN "pkiva"
#define PIN "123456"
#define POLICY "1.3.6.1.4.1.99999.1.1"
#define POLICY2 "1.3.6.1.4.1.99999.1.2"
#define POLICY_UNIT2 "1.3.6.1.4.1.99999.2.1"

enum cert_kind { K_CA = 1, K_TSA, K_TSA_NO_EKU, K_TSA_NONCRIT_EKU, K_TSA_TWO_EKU, K_TSA_4S };

struct e2e {
    char dir[64];
    char url[64];
    struct hsm *hsm;
    struct hsm_key *ca_key, *tsa_key, *tsa2_key;
    X509 *ca, *tsa, *tsa2;
    struct tsa_service *svc;
    struct http_server *srv;
    pthread_t run_thread;
    int port;
    int running;
};
static struct e2e E;
static _Atomic int clock_broken;
static _Atomic int clock_reads;            /* calls of test_clock */
static _Atomic int64_t clock_max_error_us; /* what test_clock reports; 0: 2000 */

static int test_clock(void *ctx, struct tsa_clock_state *out)
{
    int64_t max_error = atomic_load(&clock_max_error_us);
    (void)ctx;
    atomic_fetch_add(&clock_reads, 1);
    out->synced = !atomic_load(&clock_broken);
    out->max_error_us = max_error > 0 ? max_error : 2000;
    out->est_error_us = 100;
    return 0;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    cr_assert_not_null(ext, "extension %d=%s", nid, value);
    cr_assert(X509_add_ext(x, ext, -1));
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(struct hsm_key *by, X509 *issuer, EVP_PKEY *pub, const char *cn, long serial,
                       int kind)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    EVP_MD_CTX *ctx = NULL;

    cr_assert(X509_set_version(x, 2));
    cr_assert(ASN1_INTEGER_set(X509_get_serialNumber(x), serial));
    cr_assert(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                         (const unsigned char *)"pkiva test", -1, -1, 0));
    cr_assert(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0));
    cr_assert(X509_set_subject_name(x, name));
    cr_assert(X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name));
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), kind == K_TSA_4S ? 4 : 86400L * 365);
    cr_assert(X509_set_pubkey(x, pub));
    add_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (issuer != NULL)
        add_ext(x, issuer, NID_authority_key_identifier, "keyid");
    if (kind == K_CA) {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        if (kind == K_TSA || kind == K_TSA_4S)
            add_ext(x, issuer, NID_ext_key_usage, "critical,timeStamping");
        else if (kind == K_TSA_NONCRIT_EKU)
            add_ext(x, issuer, NID_ext_key_usage, "timeStamping");
        else if (kind == K_TSA_TWO_EKU)
            add_ext(x, issuer, NID_ext_key_usage, "critical,timeStamping,codeSigning");
    }
    cr_assert_eq(hsm_sign_ctx_new_blocking(E.hsm, by, &ctx), 0);
    cr_assert_gt(X509_sign_ctx(x, ctx), 0, "signing %s", cn);
    EVP_MD_CTX_free(ctx);
    X509_NAME_free(name);
    return x;
}

static void write_pem(const char *file, X509 *x)
{
    char path[256];
    FILE *f;
    (void)snprintf(path, sizeof(path), "%s/%s", E.dir, file);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert(PEM_write_X509(f, x));
    fclose(f);
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

static void *run_server(void *arg)
{
    (void)arg;
    (void)http_server_run(E.srv); /* returns 0 after stop */
    return NULL;
}

struct svc_opts {
    int durable_log;
    int64_t serial_block;
    int max_inflight;
};

/* paths: 4 buffers. Unit main's chain is a tsa-chain.pem style bundle that starts with the TSA
 * certificate itself (the service must send it once); unit second's is just the CA. */
static void fill_units(struct tsa_unit_config *u, char paths[][256])
{
    (void)snprintf(paths[0], 256, "%s/tsa.pem", E.dir);
    (void)snprintf(paths[1], 256, "%s/tsa-chain.pem", E.dir);
    (void)snprintf(paths[2], 256, "%s/tsa2.pem", E.dir);
    (void)snprintf(paths[3], 256, "%s/ca.pem", E.dir);
    memset(u, 0, 2 * sizeof(*u));
    u[0].name = "main";
    u[0].cert_file = paths[0];
    u[0].chain_file = paths[1];
    u[0].key_uri = E.tsa_key->uri;
    u[0].policy = POLICY;
    u[0].accepted_policies[0] = POLICY2;
    u[0].n_accepted_policies = 1;
    u[0].accuracy_us = 500000;
    u[0].tsa_name = 1;
    u[1].name = "second";
    u[1].cert_file = paths[2];
    u[1].chain_file = paths[3];
    u[1].key_uri = E.tsa2_key->uri;
    u[1].policy = POLICY_UNIT2;
    u[1].accuracy_us = 1000000;
}

static void start_http(void);

static void start_service(const struct svc_opts *o)
{
    struct tsa_config cfg;
    struct tsa_unit_config u[2];
    char paths[4][256];
    char store[256];

    tsa_config_default(&cfg);
    (void)snprintf(store, sizeof(store), "%s/pkiva.db", E.dir);
    cfg.store_path = store;
    cfg.clock_check = test_clock;
    cfg.durable_log = o != NULL ? o->durable_log : 1;
    if (o != NULL && o->serial_block > 0)
        cfg.serial_block = o->serial_block;
    if (o != NULL && o->max_inflight > 0)
        cfg.max_inflight = o->max_inflight;
    fill_units(u, paths);
    cr_assert_eq(tsa_service_new(&cfg, u, 2, E.hsm, &E.svc), 0);
    start_http();
    cr_assert_eq(tsa_service_start(E.svc), 0);
    E.running = 1;
}

/* An HTTP server for E.svc (which may have served an earlier one). */
static void start_http(void)
{
    struct http_config http;

    memset(&http, 0, sizeof(http));
    http.workers = 2;
    http.n_listeners = 1;
    (void)snprintf(http.listeners[0].host, sizeof(http.listeners[0].host), "127.0.0.1");
    http.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&http.limits);
    cr_assert_eq(http_server_new(&http, &E.srv), 0);
    cr_assert_eq(tsa_service_register(E.svc, E.srv), 0);
    cr_assert_eq(http_server_start(E.srv), 0);
    E.port = http_server_port(E.srv, 0);
    (void)snprintf(E.url, sizeof(E.url), "http://127.0.0.1:%d", E.port);
    cr_assert_eq(pthread_create(&E.run_thread, NULL, run_server, NULL), 0);
}

static void stop_http(void)
{
    http_server_stop(E.srv);
    (void)pthread_join(E.run_thread, NULL); /* our thread */
}

static void stop_service(void)
{
    if (!E.running)
        return;
    stop_http();
    tsa_service_stop(E.svc);
    http_server_free(E.srv);
    tsa_service_free(E.svc);
    E.srv = NULL;
    E.svc = NULL;
    E.running = 0;
}

static void setup_pki(void)
{
    struct hsm_config hc;
    char pin[256];

    memset(&E, 0, sizeof(E));
    atomic_store(&clock_broken, 0);
    cr_assert_eq(ts_tmpdir(E.dir, sizeof(E.dir)), 0);
    cr_assert_eq(ts_softhsm_token(E.dir, TOKEN, PIN), 0);
    (void)snprintf(pin, sizeof(pin), "%s/pin.txt", E.dir);
    memset(&hc, 0, sizeof(hc));
    hc.module_path = TS_SOFTHSM_MODULE;
    hc.pin_file = pin;
    hc.softhsm_no_deinit = 1;
    hc.sessions = 2;
    hc.queue_max = 64; /* at least the concurrent clients of the serial tests */
    cr_assert_eq(hsm_open(&hc, &E.hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "ca", HSM_EC_P256, &E.ca_key), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "tsa", HSM_EC_P256, &E.tsa_key), 0);
    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "tsa2", HSM_EC_P384, &E.tsa2_key), 0);
    E.ca = make_cert(E.ca_key, NULL, E.ca_key->pkey, "TSA Test Root", 1, K_CA);
    E.tsa = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "TSA Unit Main", 2, K_TSA);
    E.tsa2 = make_cert(E.ca_key, E.ca, E.tsa2_key->pkey, "TSA Unit Second", 3, K_TSA);
    write_pem("ca.pem", E.ca);
    write_pem("tsa.pem", E.tsa);
    write_pem("tsa2.pem", E.tsa2);
    cr_assert_eq(sh(NULL, 0, "cat tsa.pem ca.pem > tsa-chain.pem"), 0);
    cr_assert_eq(sh(NULL, 0, "echo 'pkiva time stamp test data' > data.txt"), 0);
}

static void setup(void)
{
    setup_pki();
    start_service(NULL);
}

static void teardown(void)
{
    stop_service();
    X509_free(E.ca);
    X509_free(E.tsa);
    X509_free(E.tsa2);
    hsm_key_free(E.ca_key);
    hsm_key_free(E.tsa_key);
    hsm_key_free(E.tsa2_key);
    hsm_close(E.hsm);
    ts_rmrf(E.dir);
}

/* ---- a small HTTP/1.1 keep-alive client ------------------------------------------------------ */

static int connect_local(int port)
{
    struct sockaddr_in sa;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* POSTs body on fd, reads one response; returns the status, body in out (malloc'd). */
static int post_fd(int fd, const char *path, const char *ctype, const void *body, size_t len,
                   unsigned char **out, size_t *out_len)
{
    char head[512];
    char buf[65536];
    size_t have = 0, clen = 0;
    char *end = NULL, *cl;
    int n, status = 0;

    n = snprintf(head, sizeof(head),
                 "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
                 "Content-Length: %zu\r\n\r\n",
                 path, ctype, len);
    /* send(MSG_NOSIGNAL): a server killed mid-burst (crash suite) must fail the request, not
     * kill the test process with SIGPIPE. */
    if (send(fd, head, (size_t)n, MSG_NOSIGNAL) != n ||
        send(fd, body, len, MSG_NOSIGNAL) != (ssize_t)len)
        return -1;
    while (end == NULL) {
        ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    (void)sscanf(buf, "HTTP/1.1 %d", &status);
    cl = strcasestr(buf, "Content-Length:");
    if (cl != NULL && cl < end)
        clen = strtoul(cl + 15, NULL, 10);
    end += 4;
    while ((size_t)(buf + have - end) < clen) {
        ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (r <= 0)
            return -1;
        have += (size_t)r;
    }
    *out = malloc(clen + 1);
    memcpy(*out, end, clen);
    *out_len = clen;
    return status;
}

static int post(const char *path, const char *ctype, const void *body, size_t len,
                unsigned char **out, size_t *out_len)
{
    int fd = connect_local(E.port);
    int status = post_fd(fd, path, ctype, body, len, out, out_len);
    close(fd);
    return status;
}

static unsigned char *read_file(const char *name, size_t *len)
{
    char path[256];
    unsigned char *buf = malloc(65536);
    FILE *f;
    (void)snprintf(path, sizeof(path), "%s/%s", E.dir, name);
    f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    *len = fread(buf, 1, 65536, f);
    fclose(f);
    return buf;
}

static TS_RESP *parse_resp(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    TS_RESP *resp = d2i_TS_RESP(NULL, &p, (long)len);
    cr_assert_not_null(resp, "reply is not a DER TimeStampResp");
    cr_assert_eq(p, der + len, "trailing bytes after the TimeStampResp");
    return resp;
}

static long resp_status(TS_RESP *resp)
{
    return ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(TS_RESP_get_status_info(resp)));
}

/* Asserts a rejection with exactly failInfo bit. */
static void expect_reject(const unsigned char *der, size_t len, int bit)
{
    TS_RESP *resp = parse_resp(der, len);
    const ASN1_BIT_STRING *fi = TS_STATUS_INFO_get0_failure_info(TS_RESP_get_status_info(resp));
    cr_assert_eq(resp_status(resp), TS_STATUS_REJECTION);
    cr_assert_not_null(fi);
    for (int b = 0; b < 32; b++)
        cr_assert_eq(ASN1_BIT_STRING_get_bit(fi, b), b == bit, "failInfo bit %d (want %d)", b, bit);
    cr_assert_null(TS_RESP_get_token(resp));
    TS_RESP_free(resp);
}

static int64_t resp_serial(TS_RESP *resp)
{
    int64_t v = 0;
    TS_TST_INFO *tst = TS_RESP_get_tst_info(resp);
    cr_assert_not_null(tst);
    cr_assert(ASN1_INTEGER_get_int64(&v, TS_TST_INFO_get_serial(tst)));
    return v;
}

static int64_t db_count(const char *where)
{
    char out[256];
    cr_assert_eq(
        sh(out, sizeof(out), "sqlite3 pkiva.db 'SELECT count(*) FROM tsa_tokens %s'", where), 0);
    return strtoll(out, NULL, 10);
}

TestSuite(e2e, .init = setup, .fini = teardown, .timeout = 240);

/* Every accepted hash, with and without nonce and certReq, through openssl ts and curl. */
Test(e2e, openssl_ts_every_hash_verifies)
{
    static const char *hashes[] = {"sha256",   "sha384",   "sha512",
                                   "sha3-256", "sha3-384", "sha3-512"};
    static const char *opts[] = {"", "-cert", "-no_nonce", "-cert -no_nonce"};
    char out[16384];

    for (size_t h = 0; h < sizeof(hashes) / sizeof(hashes[0]); h++) {
        for (size_t o = 0; o < sizeof(opts) / sizeof(opts[0]); o++) {
            int rc = sh(out, sizeof(out),
                        "openssl ts -query -data data.txt -%s %s -out q.tsq 2>/dev/null && "
                        "curl -sS -f -o r.tsr --data-binary @q.tsq "
                        "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                        "openssl ts -reply -in r.tsr -text 2>/dev/null && "
                        "openssl ts -verify -data data.txt -in r.tsr -CAfile ca.pem "
                        "-untrusted tsa.pem 2>/dev/null && "
                        "openssl ts -verify -queryfile q.tsq -in r.tsr -CAfile ca.pem "
                        "-untrusted tsa.pem 2>/dev/null",
                        hashes[h], opts[o], E.url);
            cr_assert_eq(rc, 0, "%s %s: %s", hashes[h], opts[o], out);
            cr_assert_not_null(strstr(out, "Status: Granted."), "%s", out);
            cr_assert_not_null(strstr(out, "Policy OID: " POLICY), "%s", out);
            cr_assert_not_null(strstr(out, "0x01F4 millis"), "accuracy: %s", out);
            cr_assert_not_null(strstr(out, "TSA: DirName:"), "tsa name: %s", out);
            cr_assert_not_null(strstr(out, "Ordering: no"), "%s", out);
            /* the nonce is echoed exactly (-queryfile above compares it with the request) */
            cr_assert_not_null(
                strstr(out, strstr(opts[o], "no_nonce") ? "Nonce: unspecified" : "Nonce: 0x"), "%s",
                out);
            cr_assert_eq(strstr(out, "Verification: OK") != NULL, 1, "%s", out);
        }
    }
}

/* The second unit: its own P-384 key, policy and path; verified against its own certificate. */
Test(e2e, second_unit_by_path)
{
    char out[16384];
    int rc = sh(out, sizeof(out),
                "openssl ts -query -data data.txt -sha512 -cert -out q.tsq 2>/dev/null && "
                "curl -sS -f -o r.tsr --data-binary @q.tsq "
                "-H 'Content-Type: application/timestamp-query' %s/tsa/second && "
                "openssl ts -reply -in r.tsr -text 2>/dev/null && "
                "openssl ts -verify -data data.txt -in r.tsr -CAfile ca.pem 2>/dev/null",
                E.url);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_not_null(strstr(out, "Policy OID: " POLICY_UNIT2), "%s", out);
    cr_assert_not_null(strstr(out, "Accuracy: 0x01 seconds"), "%s", out);
    cr_assert_not_null(strstr(out, "TSA: unspecified"), "%s", out);
    /* /tsa/main is the first unit by name; an unknown unit is 404 */
    rc = sh(out, sizeof(out),
            "curl -sS -o r2.tsr -w '%%{http_code}' --data-binary @q.tsq "
            "-H 'Content-Type: application/timestamp-query' %s/tsa/main && "
            "openssl ts -verify -data data.txt -in r2.tsr -CAfile ca.pem 2>/dev/null >/dev/null && "
            "curl -sS -o /dev/null -w ' %%{http_code}' --data-binary @q.tsq "
            "-H 'Content-Type: application/timestamp-query' %s/tsa/nope",
            E.url, E.url);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_str_eq(out, "200 404");
}

/* The token's fields and SignedData, read with OpenSSL's own parsers. */
Test(e2e, token_contents_ess_v2_only)
{
    char out[4096];
    unsigned char *der, *qder;
    size_t len, qlen;
    TS_RESP *resp;
    TS_REQ *req;
    const unsigned char *p;
    PKCS7 *token;
    PKCS7_SIGNER_INFO *si;
    TS_TST_INFO *tst;
    const ASN1_GENERALIZEDTIME *gt;
    const char *frac;

    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ts -query -data data.txt -sha256 -cert -out q.tsq 2>/dev/null && "
                    "curl -sS -f -o r.tsr --data-binary @q.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa",
                    E.url),
                 0, "%s", out);
    der = read_file("r.tsr", &len);
    qder = read_file("q.tsq", &qlen);
    resp = parse_resp(der, len);
    p = qder;
    req = d2i_TS_REQ(NULL, &p, (long)qlen);
    cr_assert_eq(resp_status(resp), TS_STATUS_GRANTED);
    tst = TS_RESP_get_tst_info(resp);
    cr_assert_eq(TS_TST_INFO_get_version(tst), 1);
    cr_assert_eq(ASN1_INTEGER_cmp(TS_TST_INFO_get_nonce(tst), TS_REQ_get_nonce(req)), 0);
    cr_assert_eq(ASN1_OCTET_STRING_cmp(TS_MSG_IMPRINT_get_msg(TS_TST_INFO_get_msg_imprint(tst)),
                                       TS_MSG_IMPRINT_get_msg(TS_REQ_get_msg_imprint(req))),
                 0);
    cr_assert_eq(TS_TST_INFO_get_ordering(tst), 0);
    cr_assert_not_null(TS_TST_INFO_get_tsa(tst));
    cr_assert_gt(resp_serial(resp), 0);
    /* genTime: YYYYMMDDHHMMSS[.fff]Z, fraction without trailing zeros, at most milliseconds */
    gt = TS_TST_INFO_get_time(tst);
    cr_assert_eq(((const char *)ASN1_STRING_get0_data(gt))[ASN1_STRING_length(gt) - 1], 'Z');
    frac = strchr((const char *)ASN1_STRING_get0_data(gt), '.');
    if (frac != NULL) {
        const char *start = (const char *)ASN1_STRING_get0_data(gt);
        size_t digits = (size_t)ASN1_STRING_length(gt) - (size_t)(frac - start) - 2;
        cr_assert(digits >= 1 && digits <= 3, "genTime %s", ASN1_STRING_get0_data(gt));
        cr_assert_neq(frac[digits], '0', "trailing zero in %s", ASN1_STRING_get0_data(gt));
    }
    /* SignedData: v2 signingCertificate only, certificates because certReq was true */
    token = TS_RESP_get_token(resp);
    si = sk_PKCS7_SIGNER_INFO_value(PKCS7_get_signer_info(token), 0);
    cr_assert_not_null(PKCS7_get_signed_attribute(si, NID_id_smime_aa_signingCertificateV2),
                       "ESSCertIDv2 (1.2.840.113549.1.9.16.2.47) missing");
    cr_assert_null(PKCS7_get_signed_attribute(si, NID_id_smime_aa_signingCertificate),
                   "ESSCertID v1 (1.2.840.113549.1.9.16.2.12) present");
    cr_assert_eq(sk_X509_num(token->d.sign->cert), 2, "TSA certificate (once) + CA");
    TS_RESP_free(resp);
    TS_REQ_free(req);
    free(der);
    free(qder);

    /* certReq false: no certificates */
    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ts -query -data data.txt -sha256 -out q.tsq 2>/dev/null && "
                    "curl -sS -f -o r.tsr --data-binary @q.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa",
                    E.url),
                 0, "%s", out);
    der = read_file("r.tsr", &len);
    resp = parse_resp(der, len);
    token = TS_RESP_get_token(resp);
    cr_assert_leq(sk_X509_num(token->d.sign->cert), 0); /* -1: no certificates field */
    TS_RESP_free(resp);
    free(der);
}

static void post_file_expect(const char *file, int bit)
{
    size_t len, rlen;
    unsigned char *q = read_file(file, &len);
    unsigned char *r = NULL;
    cr_assert_eq(post("/tsa", "application/timestamp-query", q, len, &r, &rlen), 200);
    expect_reject(r, rlen, bit);
    free(q);
    free(r);
}

static void post_file_granted(const char *file)
{
    size_t len, rlen;
    unsigned char *q = read_file(file, &len);
    unsigned char *r = NULL;
    TS_RESP *resp;
    cr_assert_eq(post("/tsa", "application/timestamp-query", q, len, &r, &rlen), 200);
    resp = parse_resp(r, rlen);
    cr_assert_eq(resp_status(resp), TS_STATUS_GRANTED);
    TS_RESP_free(resp);
    free(q);
    free(r);
}

Test(e2e, rejections_are_der)
{
    char out[4096];
    unsigned char *r = NULL;
    size_t rlen;
    static const unsigned char garbage[] = "this is not DER";
    /* a SHA-256 TimeStampReq with a 31-octet imprint */
    static const unsigned char short_imprint[] = {
        0x30, 0x33, 0x02, 0x01, 0x01, 0x30, 0x2e, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48,
        0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x1f, 1,    2,    3,    4,    5,    6,
        7,    8,    9,    10,   11,   12,   13,   14,   15,   16,   17,   18,   19,   20,
        21,   22,   23,   24,   25,   26,   27,   28,   29,   30,   31};
    /* a SHA-256 TimeStampReq with a critical unknown extension: extensions [0] IMPLICIT
     * { Extension { 1.3.6.1.4.1.99999.9.9, critical TRUE, OCTET STRING { NULL } } } */
    static const unsigned char crit_ext[] = {
        0x30, 0x4b, 0x02, 0x01, 0x01, 0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86,
        0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20, 1,    2,    3,    4,
        5,    6,    7,    8,    9,    10,   11,   12,   13,   14,   15,   16,   17,
        18,   19,   20,   21,   22,   23,   24,   25,   26,   27,   28,   29,   30,
        31,   32,   0xa0, 0x15, 0x30, 0x13, 0x06, 0x0a, 0x2b, 0x06, 0x01, 0x04, 0x01,
        0x86, 0x8d, 0x1f, 0x09, 0x09, 0x01, 0x01, 0xff, 0x04, 0x02, 0x05, 0x00};
    /* the same extension, not critical: refused as well (RFC 3161 §2.4.1; it was granted) */
    static const unsigned char noncrit_ext[] = {
        0x30, 0x48, 0x02, 0x01, 0x01, 0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
        0x65, 0x03, 0x04, 0x02, 0x01, 0x04, 0x20, 1,    2,    3,    4,    5,    6,    7,    8,
        9,    10,   11,   12,   13,   14,   15,   16,   17,   18,   19,   20,   21,   22,   23,
        24,   25,   26,   27,   28,   29,   30,   31,   32,   0xa0, 0x12, 0x30, 0x10, 0x06, 0x0a,
        0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x09, 0x09, 0x04, 0x02, 0x05, 0x00};

    /* badAlg: SHA-1 is not enabled */
    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha1 -out q1.tsq 2>&1"),
                 0);
    post_file_expect("q1.tsq", TSA_FAIL_BAD_ALG);
    /* unacceptedPolicy; an accepted non-default policy is granted with that policy */
    cr_assert_eq(
        sh(out, sizeof(out),
           "openssl ts -query -data data.txt -sha256 -tspolicy 1.2.3.4 -out qp.tsq 2>&1 && "
           "openssl ts -query -data data.txt -sha256 -tspolicy " POLICY2 " -out qa.tsq 2>&1"),
        0);
    post_file_expect("qp.tsq", TSA_FAIL_UNACCEPTED_POLICY);
    cr_assert_eq(sh(out, sizeof(out),
                    "curl -sS -f -o ra.tsr --data-binary @qa.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                    "openssl ts -reply -in ra.tsr -text 2>/dev/null",
                    E.url),
                 0);
    cr_assert_not_null(strstr(out, "Policy OID: " POLICY2), "%s", out);
    /* badDataFormat: wrong imprint length for SHA-256 */
    cr_assert_eq(post("/tsa", "application/timestamp-query", short_imprint, sizeof(short_imprint),
                      &r, &rlen),
                 200);
    expect_reject(r, rlen, TSA_FAIL_BAD_DATA_FORMAT);
    free(r);
    /* unacceptedExtension */
    cr_assert_eq(post("/tsa", "application/timestamp-query", crit_ext, sizeof(crit_ext), &r, &rlen),
                 200);
    expect_reject(r, rlen, TSA_FAIL_UNACCEPTED_EXTENSION);
    free(r);
    cr_assert_eq(
        post("/tsa", "application/timestamp-query", noncrit_ext, sizeof(noncrit_ext), &r, &rlen),
        200);
    expect_reject(r, rlen, TSA_FAIL_UNACCEPTED_EXTENSION);
    free(r);
    /* badRequest: garbage, and an empty body */
    cr_assert_eq(post("/tsa", "application/timestamp-query", garbage, sizeof(garbage), &r, &rlen),
                 200);
    expect_reject(r, rlen, TSA_FAIL_BAD_REQUEST);
    free(r);
    cr_assert_eq(post("/tsa", "application/timestamp-query", "", 0, &r, &rlen), 200);
    expect_reject(r, rlen, TSA_FAIL_BAD_REQUEST);
    free(r);
    /* not a TSA content type: 415, not a TimeStampResp */
    cr_assert_eq(post("/tsa", "application/octet-stream", garbage, sizeof(garbage), &r, &rlen),
                 415);
    free(r);
    /* openssl ts -reply reads the rejection */
    cr_assert_eq(sh(out, sizeof(out),
                    "curl -sS -o rg.tsr --data-binary 'garbage' "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                    "openssl ts -reply -in rg.tsr -text 2>/dev/null",
                    E.url),
                 0);
    cr_assert_not_null(strstr(out, "Status: Rejected."), "%s", out);
    cr_assert_not_null(strstr(out, "request is not a DER TimeStampReq"), "%s", out);
    cr_assert_not_null(strstr(out, "transaction not permitted or supported"), "%s", out);
    {
        struct tsa_stats st;
        tsa_stats_get(E.svc, &st);
        cr_assert_geq(st.rejected[TSA_FAIL_BAD_REQUEST], 3);
        cr_assert_eq(st.rejected[TSA_FAIL_BAD_ALG], 1);
        cr_assert_eq(st.unsupported_media, 1);
        cr_assert_eq(st.granted, 1);
    }
}

/* Requests reuse one clock reading for clock_reread_ms (adjtimex(2) was a tenth of a loop
 * thread's time under load), and a reused reading's error bound grows with the kernel's 500 ppm:
 * a unit whose accuracy the clock meets only just stops issuing as the reading ages. */
Test(e2e, clock_read_once_per_interval_and_its_bound_widens)
{
    char out[4096];
    int reads;

    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    cr_assert_eq(E.svc->cfg.clock_reread_ms, 100, "the default changed: revisit this test");
    reads = atomic_load(&clock_reads);
    for (int i = 0; i < 40; i++)
        post_file_granted("q.tsq");
    reads = atomic_load(&clock_reads) - reads;
    cr_log_info("40 requests, %d clock readings", reads);
    cr_assert_leq(reads, 20, "%d clock readings for 40 requests", reads);

    /* Error bound 499 990 us against the main unit's accuracy of 500 000: met when read (the
     * readiness check reads afresh), not met once the reading is 20 ms old (+10 us), so a
     * request 30 ms later is refused. The clock then also reports itself unsynchronized, so
     * that a machine too slow to send the request within clock_reread_ms (a fresh reading)
     * still sees a refusal; the widening alone decides otherwise. */
    atomic_store(&clock_max_error_us, 499990);
    cr_assert_eq(tsa_service_ready(E.svc, out, sizeof(out)), 1);
    atomic_store(&clock_broken, 1);
    usleep(30000);
    post_file_expect("q.tsq", TSA_FAIL_TIME_NOT_AVAILABLE);
    atomic_store(&clock_broken, 0);
    atomic_store(&clock_max_error_us, 0);
    cr_assert_eq(tsa_service_ready(E.svc, out, sizeof(out)), 1);
    post_file_granted("q.tsq");
}

Test(e2e, time_not_available_and_readiness)
{
    char out[4096], why[128];
    cr_assert_eq(tsa_service_ready(E.svc, why, sizeof(why)), 1);
    atomic_store(&clock_broken, 1);
    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    /* Requests reuse a reading for clock_reread_ms: the change shows once it is older. */
    usleep(1000 * (useconds_t)(E.svc->cfg.clock_reread_ms + 20));
    post_file_expect("q.tsq", TSA_FAIL_TIME_NOT_AVAILABLE);
    cr_assert_eq(tsa_service_ready(E.svc, why, sizeof(why)), 0);
    cr_assert_not_null(strstr(why, "clock"), "%s", why);
    atomic_store(&clock_broken, 0);
    cr_assert_eq(tsa_service_ready(E.svc, why, sizeof(why)), 1);
    cr_assert_eq(sh(out, sizeof(out),
                    "curl -sS -f -o r.tsr --data-binary @q.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                    "openssl ts -verify -data data.txt -in r.tsr -CAfile ca.pem -untrusted tsa.pem",
                    E.url),
                 0, "%s", out);
}

/* A job that holds a signing thread until released: fills the HSM pool deterministically. */
static pthread_mutex_t block_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t block_cond = PTHREAD_COND_INITIALIZER;
static int block_release;

static int block_work(void *state, void *arg)
{
    (void)state;
    (void)arg;
    pthread_mutex_lock(&block_mu);
    while (!block_release)
        pthread_cond_wait(&block_cond, &block_mu);
    pthread_mutex_unlock(&block_mu);
    return 0;
}

Test(e2e, system_failure_when_hsm_queue_full)
{
    char out[4096];
    int queued = 0;

    block_release = 0;
    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    /* Workers take jobs off the queue as they start: fill it again until it stays full. */
    for (int round = 0; round < 3; round++) {
        while (hsm_submit(E.hsm, NULL, block_work, NULL, NULL) == 0)
            queued++;
        usleep(100000);
    }
    cr_assert_geq(queued, 4);
    post_file_expect("q.tsq", TSA_FAIL_SYSTEM_FAILURE);
    pthread_mutex_lock(&block_mu);
    block_release = 1;
    pthread_cond_broadcast(&block_cond);
    pthread_mutex_unlock(&block_mu);
    /* the queue drains; the next request is granted */
    for (int i = 0; i < 100; i++) {
        unsigned char *r = NULL, *q;
        size_t rlen, qlen;
        TS_RESP *resp;
        long status;
        q = read_file("q.tsq", &qlen);
        cr_assert_eq(post("/tsa", "application/timestamp-query", q, qlen, &r, &rlen), 200);
        resp = parse_resp(r, rlen);
        status = resp_status(resp);
        TS_RESP_free(resp);
        free(q);
        free(r);
        if (status == TS_STATUS_GRANTED)
            return;
        usleep(20000);
    }
    cr_assert_fail("never granted after the queue drained");
}

/* The TSA key is deleted from the token while serving: never a bad token. pkcs11-provider may still
 * hold a session copy of the key (PKCS#11 keeps session objects until their session closes), so a
 * token may still be granted, and then it must verify against the TSA certificate; otherwise the
 * answer is systemFailure as DER. (Signing failures proper: tests/fault, token unplugged.) */
Test(e2e, key_deleted_from_token_never_yields_a_bad_token)
{
    char out[8192];
    size_t len, rlen;
    unsigned char *q = NULL, *r = NULL;
    TS_RESP *resp = NULL;
    int rc = sh(out, sizeof(out),
                "command -v pkcs11-tool >/dev/null || exit 77; "
                "pkcs11-tool --module " TS_SOFTHSM_MODULE " --token-label " TOKEN
                " --login --pin " PIN " --delete-object --type privkey --label tsa 2>&1");
    if (rc == 77) {
        cr_log_warn("pkcs11-tool not installed: skipped");
        return;
    }
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    q = read_file("q.tsq", &len);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(post("/tsa", "application/timestamp-query", q, len, &r, &rlen), 200);
        resp = parse_resp(r, rlen);
        if (resp_status(resp) == TS_STATUS_GRANTED) {
            FILE *f = NULL;
            char path[128];
            (void)snprintf(path, sizeof(path), "%s/r.tsr", E.dir);
            f = fopen(path, "wb");
            cr_assert_not_null(f);
            cr_assert_eq(fwrite(r, 1, rlen, f), rlen);
            fclose(f);
            cr_assert_eq(sh(out, sizeof(out),
                            "openssl ts -verify -data data.txt -in r.tsr -CAfile ca.pem "
                            "-untrusted tsa.pem 2>&1"),
                         0, "a granted token that does not verify: %s", out);
        } else {
            expect_reject(r, rlen, TSA_FAIL_SYSTEM_FAILURE);
        }
        TS_RESP_free(resp);
        free(r);
        r = NULL;
    }
    free(q);
}

struct client_arg {
    int requests;
    int64_t *serials;
    const unsigned char *query;
    size_t query_len;
    int failures;
    char first_failure[128];
};

static void *client_main(void *p)
{
    struct client_arg *a = p;
    int fd = connect_local(E.port);
    for (int i = 0; i < a->requests; i++) {
        unsigned char *r = NULL;
        size_t rlen = 0;
        const unsigned char *rp;
        TS_RESP *resp;
        int64_t v = 0;
        int status =
            post_fd(fd, "/tsa", "application/timestamp-query", a->query, a->query_len, &r, &rlen);
        rp = r;
        resp = status == 200 ? d2i_TS_RESP(NULL, &rp, (long)rlen) : NULL;
        if (resp != NULL && TS_RESP_get_tst_info(resp) != NULL &&
            ASN1_INTEGER_get_int64(&v, TS_TST_INFO_get_serial(TS_RESP_get_tst_info(resp))))
            a->serials[i] = v;
        else if (a->failures++ == 0) {
            const ASN1_BIT_STRING *fi =
                resp != NULL ? TS_STATUS_INFO_get0_failure_info(TS_RESP_get_status_info(resp))
                             : NULL;
            int bit = -1;
            for (int b = 0; fi != NULL && b < 32 && bit < 0; b++)
                bit = ASN1_BIT_STRING_get_bit(fi, b) ? b : -1;
            (void)snprintf(a->first_failure, sizeof(a->first_failure),
                           "request %d: HTTP %d, failInfo bit %d", i, status, bit);
        }
        TS_RESP_free(resp);
        free(r);
    }
    close(fd);
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Runs clients x per requests concurrently, appends the serials to all[*n]. */
static void burst(int clients, int per, int64_t *all, int *n)
{
    pthread_t th[16];
    struct client_arg args[16];
    size_t qlen;
    unsigned char *q = read_file("q.tsq", &qlen);

    for (int c = 0; c < clients; c++) {
        args[c].requests = per;
        args[c].serials = all + *n + c * per;
        args[c].query = q;
        args[c].query_len = qlen;
        args[c].failures = 0;
        cr_assert_eq(pthread_create(&th[c], NULL, client_main, &args[c]), 0);
    }
    for (int c = 0; c < clients; c++) {
        (void)pthread_join(th[c], NULL);
        cr_assert_eq(args[c].failures, 0, "client %d: %d failures, first %s", c, args[c].failures,
                     args[c].first_failure);
    }
    *n += clients * per;
    free(q);
}

static void check_unique(int64_t *all, int n)
{
    int64_t *sorted = malloc(sizeof(*sorted) * (size_t)n);
    memcpy(sorted, all, sizeof(*sorted) * (size_t)n);
    qsort(sorted, (size_t)n, sizeof(*sorted), cmp64);
    for (int i = 1; i < n; i++)
        cr_assert_neq(sorted[i], sorted[i - 1], "serial %lld issued twice", (long long)sorted[i]);
    free(sorted);
}

/* The TSA certificate expires while serving: from then on systemFailure ("TSA certificate
 * expired"), never a token that would not verify. */
TestSuite(expiry, .init = setup_pki, .fini = teardown, .timeout = 60);

Test(expiry, no_token_after_the_certificate_expired)
{
    char out[8192];
    size_t len, rlen;
    unsigned char *q = NULL, *r = NULL;
    TS_RESP *resp = NULL;
    X509 *short_lived = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "TSA Unit Main", 9, K_TSA_4S);
    time_t expires = time(NULL) + 4;
    const ASN1_UTF8STRING *text;

    write_pem("tsa.pem", short_lived); /* unit main's certificate */
    X509_free(short_lived);
    start_service(NULL);
    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    q = read_file("q.tsq", &len);
    cr_assert_eq(post("/tsa", "application/timestamp-query", q, len, &r, &rlen), 200);
    resp = parse_resp(r, rlen);
    cr_assert_eq(resp_status(resp), TS_STATUS_GRANTED, "before expiry");
    TS_RESP_free(resp);
    free(r);
    while (time(NULL) <= expires + 1)
        usleep(200 * 1000);
    cr_assert_eq(post("/tsa", "application/timestamp-query", q, len, &r, &rlen), 200);
    expect_reject(r, rlen, TSA_FAIL_SYSTEM_FAILURE);
    resp = parse_resp(r, rlen);
    text = sk_ASN1_UTF8STRING_value(TS_STATUS_INFO_get0_text(TS_RESP_get_status_info(resp)), 0);
    cr_assert_not_null(text);
    cr_assert_str_eq((const char *)ASN1_STRING_get0_data(text), "TSA certificate expired");
    TS_RESP_free(resp);
    free(r);
    free(q);
}

/* ---- token template: byte for byte OpenSSL's token ------------------------------------------ */

struct sig_hsm {
    const struct hsm_key *key;
};

static int sign_hsm(void *arg, const unsigned char *data, size_t len, unsigned char *sig,
                    size_t *sig_len)
{
    const struct sig_hsm *s = arg;
    EVP_MD_CTX *ctx = NULL;
    cr_assert_eq(hsm_sign_ctx_new_blocking(E.hsm, s->key, &ctx), 0);
    cr_assert_eq(EVP_DigestSign(ctx, sig, sig_len, data, len), 1);
    EVP_MD_CTX_free(ctx);
    return 0;
}

/* A TimeStampReq in DER (tsa_req_build.c): imprint of md_nid (hash parameters NULL, or absent),
 * optional nonce (negative or long ones too), certReq, optional policy. */
static int make_query(int md_nid, const char *nonce_hex, int cert_req, const char *policy,
                      int absent_params, unsigned char **der)
{
    struct req_opts o = {.md_nid = md_nid,
                         .imprint_len = -1,
                         .policy = policy,
                         .nonce_hex = nonce_hex,
                         .cert_req = cert_req,
                         .params_absent = absent_params};
    return build_req(&o, der);
}

/* The same request, serial and time through OpenSSL's TS_RESP_create_response and through the
 * template: identical bytes (the template given OpenSSL's signature; with RSA PKCS#1 v1.5, which
 * is deterministic, also with its own signature from the HSM). */
static void compare_one(struct tsa_service *svc, const unsigned char *q, int qlen, long nsec,
                        int rsa)
{
    struct tsa__unit *unit = &svc->units[0];
    int same = 0;

    for (int attempt = 0; attempt < 3 && !same; attempt++) {
        struct tsa__job *job = calloc(1, sizeof(*job) + (size_t)qlen);
        struct tsa__query query;
        TS_REQ *parsed = NULL;
        const unsigned char *p = NULL;
        TS_RESP *ref = NULL;
        PKCS7_SIGNER_INFO *si;
        struct tsa__replay replay;
        struct sig_hsm hsm_signer = {unit->key};
        unsigned char *mine = NULL, *own = NULL;
        size_t mine_len = 0, own_len = 0;

        cr_assert_eq(tsa__query_check_keep(&unit->rules, q, (size_t)qlen, &query, &parsed), 0);
        cr_assert_lt(query.reject, 0, "request rejected: %d", query.reject);
        job->svc = svc;
        job->unit = unit;
        /* A serial as the allocator makes them: (ms since the epoch) << 21, 8 octets. */
        job->serial = (((int64_t)time(NULL) * 1000) << 21) + attempt;
        job->der_len = (size_t)qlen;
        memcpy(job->der, q, (size_t)qlen);
        /* seconds from time(), as OpenSSL's signingTime (glibc: the coarse clock) */
        job->fixed.tv_sec = time(NULL);
        job->fixed.tv_nsec = nsec;
        cr_assert_eq(tsa__sign_openssl(job), 0);
        p = job->reply->data;
        ref = d2i_TS_RESP(NULL, &p, (long)job->reply->len);
        cr_assert_not_null(ref);
        si = sk_PKCS7_SIGNER_INFO_value(TS_RESP_get_token(ref)->d.sign->signer_info, 0);
        replay.sig = ASN1_STRING_get0_data(si->enc_digest);
        replay.len = (size_t)ASN1_STRING_length(si->enc_digest);
        cr_assert_eq(tsa__token_build(unit, parsed, query.policy_index, job->serial, &job->fixed,
                                      tsa__sign_replay, &replay, &mine, &mine_len),
                     0);
        same = mine_len == job->reply->len && memcmp(mine, job->reply->data, mine_len) == 0;
        if (same && rsa) {
            cr_assert_eq(tsa__token_build(unit, parsed, query.policy_index, job->serial,
                                          &job->fixed, sign_hsm, &hsm_signer, &own, &own_len),
                         0);
            same = own_len == job->reply->len && memcmp(own, job->reply->data, own_len) == 0;
        }
        if (!same) { /* a second boundary fell between genTime and OpenSSL's signingTime? */
            FILE *f;
            char path[256];
            (void)snprintf(path, sizeof(path), "%s/ref.der", E.dir);
            f = fopen(path, "wb");
            fwrite(job->reply->data, 1, job->reply->len, f);
            fclose(f);
            (void)snprintf(path, sizeof(path), "%s/mine.der", E.dir);
            f = fopen(path, "wb");
            fwrite(own != NULL ? own : mine, 1, own != NULL ? own_len : mine_len, f);
            fclose(f);
        }
        OPENSSL_free(mine);
        OPENSSL_free(own);
        TS_RESP_free(ref);
        TS_REQ_free(parsed);
        util_blob_unref(job->reply);
        free(job);
    }
    if (!same) {
        char out[16384];
        (void)sh(out, sizeof(out),
                 "openssl asn1parse -inform DER -in ref.der -i > ref.txt; openssl asn1parse "
                 "-inform DER -in mine.der -i > mine.txt; diff ref.txt mine.txt | head -40");
        cr_assert_fail("template token differs from OpenSSL's (nsec %ld):\n%s", nsec, out);
    }
}

struct tmpl_case {
    const char *label;
    int key;           /* 0 P-256, 1 P-384, 2 RSA-2048 */
    const char *chain; /* file in E.dir or NULL */
    int64_t accuracy_us;
    int tsa_name;
};

TestSuite(template, .init = setup, .fini = teardown, .timeout = 240);

Test(template, tokens_are_byte_for_byte_openssl_s)
{
    static const struct tmpl_case cases[] = {
        {"P-256, chain bundle, tsa name, 0.5 s", 0, "tsa-chain.pem", 500000, 1},
        {"P-384, CA chain, 1 s", 1, "ca.pem", 1000000, 0},
        {"P-256, no chain, no accuracy", 0, NULL, 0, 0},
        {"P-256, 250 us (6 digits)", 0, "ca.pem", 250, 1},
        {"P-256, 1.5 s", 0, NULL, 1500000, 0},
        {"RSA-2048, chain, tsa name, 10 ms", 2, "ca.pem", 10000, 1},
    };
    static const long nsecs[] = {0, 100000000, 120000000, 123456789, 999999999, 5000, 7};
    struct hsm_key *rsa_key = NULL;
    X509 *rsa_cert = NULL;

    cr_assert_eq(hsm_key_generate_blocking(E.hsm, TOKEN, "tsarsa", HSM_RSA_2048, &rsa_key), 0);
    rsa_cert = make_cert(E.ca_key, E.ca, rsa_key->pkey, "TSA Unit RSA", 4, K_TSA);
    write_pem("tsarsa.pem", rsa_cert);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        const struct tmpl_case *tc = &cases[c];
        struct tsa_config cfg;
        struct tsa_unit_config u;
        struct tsa_service *svc = NULL;
        char store[256], cert[256], chain[256];
        unsigned char *q = NULL;
        int qlen;

        tsa_config_default(&cfg);
        (void)snprintf(store, sizeof(store), "%s/tmpl.db", E.dir);
        (void)snprintf(cert, sizeof(cert), "%s/%s", E.dir,
                       tc->key == 0   ? "tsa.pem"
                       : tc->key == 1 ? "tsa2.pem"
                                      : "tsarsa.pem");
        (void)snprintf(chain, sizeof(chain), "%s/%s", E.dir, tc->chain ? tc->chain : "");
        cfg.store_path = store;
        cfg.clock_check = test_clock;
        memset(&u, 0, sizeof(u));
        u.name = "t";
        u.cert_file = cert;
        u.chain_file = tc->chain != NULL ? chain : NULL;
        u.key_uri = tc->key == 0 ? E.tsa_key->uri : tc->key == 1 ? E.tsa2_key->uri : rsa_key->uri;
        u.policy = POLICY;
        u.accepted_policies[0] = POLICY2;
        u.n_accepted_policies = 1;
        u.accuracy_us = tc->accuracy_us;
        u.tsa_name = tc->tsa_name;
        cr_assert_eq(tsa_service_new(&cfg, &u, 1, E.hsm, &svc), 0, "%s", tc->label);
        cr_assert(atomic_load(&svc->units[0].tmpl_ready),
                  "%s: the start-up self-check refused the template", tc->label);
        for (size_t n = 0; n < sizeof(nsecs) / sizeof(nsecs[0]); n++) {
            qlen = make_query(NID_sha256, "0123456789ABCDEF", n % 2, NULL, n % 3 == 0, &q);
            compare_one(svc, q, qlen, nsecs[n], tc->key == 2);
            OPENSSL_free(q);
        }
        /* every request shape: hashes, no nonce, negative / long / small nonces, policies */
        qlen = make_query(NID_sha512, NULL, 1, POLICY2, 1, &q);
        compare_one(svc, q, qlen, 500000000, tc->key == 2);
        OPENSSL_free(q);
        qlen = make_query(NID_sha3_384, "-7F", 0, POLICY, 0, &q);
        compare_one(svc, q, qlen, 1000, tc->key == 2);
        OPENSSL_free(q);
        qlen = make_query(NID_sha384,
                          "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100"
                          "FFEEDDCCBBAA99887766554433221100FFEEDDCCBBAA99887766554433221100",
                          1, NULL, 0, &q);
        compare_one(svc, q, qlen, 999000000, tc->key == 2);
        OPENSSL_free(q);
        qlen = make_query(NID_sha256, "0", 1, NULL, 0, &q);
        compare_one(svc, q, qlen, 1, tc->key == 2);
        OPENSSL_free(q);
        tsa_service_free(svc);
    }
    X509_free(rsa_cert);
    hsm_key_free(rsa_key);
}

/* Both units of the running service got their template, and the tokens served through HTTP
 * verify with openssl ts -verify against the request. */
Test(template, served_tokens_use_it)
{
    char out[16384];
    cr_assert(atomic_load(&E.svc->units[0].tmpl_ready));
    cr_assert(atomic_load(&E.svc->units[1].tmpl_ready));
    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ts -query -data data.txt -sha256 -cert -out q.tsq 2>&1 && "
                    "curl -sS -f -o r.tsr --data-binary @q.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                    "openssl ts -verify -queryfile q.tsq -in r.tsr -CAfile ca.pem "
                    "-untrusted tsa.pem 2>&1",
                    E.url),
                 0, "%s", out);
}

/* A unit without template (the start-up self-check refused it, say under another OpenSSL) signs
 * through TS_RESP_create_response: the same service, tokens that verify. */
Test(template, units_without_template_still_issue_tokens)
{
    char out[16384];
    atomic_store(&E.svc->units[0].tmpl_ready,
                 0); /* no request in flight: the signing threads read it per job */
    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ts -query -data data.txt -sha512 -cert -out q.tsq 2>&1 && "
                    "curl -sS -f -o r.tsr --data-binary @q.tsq "
                    "-H 'Content-Type: application/timestamp-query' %s/tsa && "
                    "openssl ts -reply -in r.tsr -text 2>&1 | grep -q 'Status: Granted' && "
                    "openssl ts -verify -queryfile q.tsq -in r.tsr -CAfile ca.pem "
                    "-untrusted tsa.pem 2>&1",
                    E.url),
                 0, "%s", out);
    atomic_store(&E.svc->units[0].tmpl_ready, 1);
}

/* Out of memory while building a token (STYLE: fail the Nth allocation): every allocation of
 * tsa__token_build fails once in turn; each time the result is a token or UTIL_ENOMEM (the job
 * then answers systemFailure), never a crash, a leak (the ASan build checks) or an OpenSSL error
 * left queued. No service threads run: only this thread allocates while armed. */
TestSuite(template_oom, .init = setup_pki, .fini = teardown, .timeout = 120);

Test(template_oom, every_allocation_failure_is_survived)
{
    static const unsigned char fake_sig[72] = {0x30, 0x46};
    struct tsa_config cfg;
    struct tsa_unit_config u;
    struct tsa_service *svc = NULL;
    struct tsa__replay replay = {fake_sig, sizeof(fake_sig)};
    struct tsa__query query;
    TS_REQ *parsed = NULL;
    struct timespec now;
    char store[256], cert[256], chain[256];
    unsigned char *q = NULL;
    int qlen, enomem_seen = 0;
    long n;

    tsa_config_default(&cfg);
    (void)snprintf(store, sizeof(store), "%s/oom.db", E.dir);
    (void)snprintf(cert, sizeof(cert), "%s/tsa.pem", E.dir);
    (void)snprintf(chain, sizeof(chain), "%s/ca.pem", E.dir);
    cfg.store_path = store;
    cfg.clock_check = test_clock;
    memset(&u, 0, sizeof(u));
    u.name = "t";
    u.cert_file = cert;
    u.chain_file = chain;
    u.key_uri = E.tsa_key->uri;
    u.policy = POLICY;
    u.accuracy_us = 500000;
    u.tsa_name = 1;
    cr_assert_eq(tsa_service_new(&cfg, &u, 1, E.hsm, &svc), 0);
    cr_assert(atomic_load(&svc->units[0].tmpl_ready));
    qlen = make_query(NID_sha256, "0123456789ABCDEF", 1, NULL, 0, &q);
    cr_assert_eq(tsa__query_check_keep(&svc->units[0].rules, q, (size_t)qlen, &query, &parsed), 0);
    cr_assert_eq(clock_gettime(CLOCK_REALTIME, &now), 0);
    for (n = 1; n < 20000; n++) {
        unsigned char *der = NULL;
        size_t der_len = 0;
        int rc, hit;
        ts_failalloc_arm(n);
        rc = tsa__token_build(&svc->units[0], parsed, -1, 42, &now, tsa__sign_replay, &replay, &der,
                              &der_len);
        hit = ts_failalloc_disarm();
        cr_assert(rc == 0 || rc == UTIL_ENOMEM, "allocation %ld: %d", n, rc);
        cr_assert_eq(rc == 0, der != NULL, "allocation %ld: result and token disagree", n);
        cr_assert_eq(ERR_peek_error(), 0, "allocation %ld left an OpenSSL error queued", n);
        enomem_seen += rc == UTIL_ENOMEM;
        OPENSSL_free(der);
        if (!hit)
            break;
    }
    cr_assert_gt(n, 5, "the builder made only %ld allocations?", n);
    cr_assert_gt(enomem_seen, 0, "no allocation failure was reported");
    TS_REQ_free(parsed);
    OPENSSL_free(q);
    tsa_service_free(svc);
}

/* Serials from many concurrent keep-alive clients, small serial blocks (many refills), then a
 * restart on the same store: never a duplicate, and every token is in the durable log. */
TestSuite(serials, .init = setup_pki, .fini = teardown, .timeout = 240);

Test(serials, unique_under_concurrency_and_across_restart)
{
    struct svc_opts o = {.durable_log = 1, .serial_block = 64};
    int64_t *all = calloc(2000, sizeof(*all));
    int n = 0;
    char out[256];

    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    start_service(&o);
    burst(8, 60, all, &n);
    check_unique(all, n);
    cr_assert_eq(db_count(""), n);
    stop_service();

    o.durable_log = 0; /* the other mode, same guarantees for serials */
    start_service(&o);
    burst(4, 50, all, &n);
    stop_service(); /* commits the pending records */
    check_unique(all, n);
    cr_assert_eq(db_count(""), n);
    free(all);
}

/* The durable log: once the reply arrived, the record is in the store. */
Test(serials, record_durable_before_reply)
{
    unsigned char *q, *r = NULL;
    size_t qlen, rlen;
    char where[256]; /* serials start at (ms since the epoch) << 21: 19 digits */
    char out[256];
    TS_RESP *resp;

    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha384 -out q.tsq 2>&1"),
                 0);
    start_service(NULL);
    q = read_file("q.tsq", &qlen);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(post("/tsa", "application/timestamp-query", q, qlen, &r, &rlen), 200);
        resp = parse_resp(r, rlen);
        (void)snprintf(where, sizeof(where),
                       "WHERE unit = \"main\" AND serial = %lld AND imprint_alg = \"SHA384\" "
                       "AND policy = \"" POLICY "\" AND length(imprint) = 48",
                       (long long)resp_serial(resp));
        cr_assert_eq(db_count(where), 1);
        TS_RESP_free(resp);
        free(r);
    }
    free(q);
}

/* ---- an HTTP server stopped under load -------------------------------------------------------- */

struct load_client {
    int port;
    const unsigned char *query;
    size_t query_len;
    _Atomic int *answered;
};

/* Posts on keep-alive connections until the server refuses a connection (it stopped). */
static void *load_client_main(void *p)
{
    struct load_client *c = p;
    struct sockaddr_in sa;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)c->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            if (fd >= 0)
                close(fd);
            return NULL;
        }
        for (;;) {
            unsigned char *r = NULL;
            size_t rlen = 0;
            int status = post_fd(fd, "/tsa", "application/timestamp-query", c->query, c->query_len,
                                 &r, &rlen);
            free(r);
            if (status != 200)
                break;
            atomic_fetch_add(c->answered, 1);
        }
        close(fd);
    }
}

/* The HTTP server stops while its loops have requests at the signing and log threads: each of
 * those jobs is freed once (its loop's port cancels it), the per-loop state goes with the loop
 * (with ASan's leak check, the old per-loop mailboxes, freed only with the service, leaked when a
 * second server replaced them), and a new server on the same service answers every request. */
Test(serials, http_server_stopped_under_load_then_replaced)
{
    struct svc_opts o = {.durable_log = 1, .serial_block = 64};
    struct load_client clients[4];
    pthread_t th[4];
    _Atomic int answered = 0;
    struct tsa_stats st;
    int64_t *all = calloc(40, sizeof(*all));
    int n = 0;
    char out[256];
    unsigned char *q;
    size_t qlen;

    cr_assert_eq(sh(out, sizeof(out), "openssl ts -query -data data.txt -sha256 -out q.tsq 2>&1"),
                 0);
    q = read_file("q.tsq", &qlen);
    start_service(&o);
    for (int i = 0; i < 4; i++) {
        clients[i] = (struct load_client){E.port, q, qlen, &answered};
        cr_assert_eq(pthread_create(&th[i], NULL, load_client_main, &clients[i]), 0);
    }
    while (atomic_load(&answered) < 40)
        (void)nanosleep(&(struct timespec){0, 1000000L},
                        NULL); /* waits for load, asserts nothing */
    stop_http();               /* four clients keep requests at the signing and log threads */
    http_server_free(E.srv);
    E.srv = NULL;
    for (int i = 0; i < 4; i++)
        (void)pthread_join(th[i], NULL); /* our threads: they end when connections are refused */
    /* Every job of the stopped loops is freed, without tsa_service_stop: the loops' ports
     * cancelled them. The wait is for other threads to finish, and asserts no time. */
    do {
        tsa_stats_get(E.svc, &st);
        if (st.inflight > 0)
            (void)nanosleep(&(struct timespec){0, 1000000L}, NULL);
    } while (st.inflight > 0);

    start_http();
    burst(2, 20, all, &n);
    check_unique(all, n);
    stop_service();
    free(all);
    free(q);
    cr_assert_eq(LEAKS_FOUND(), 0, "leaks (with PKIVA_ASAN): see the LeakSanitizer report above");
}

/* ---- refusal to start ----------------------------------------------------------------------- */

TestSuite(config, .init = setup_pki, .fini = teardown, .timeout = 120);

static int try_new(X509 *cert, struct hsm_key *key)
{
    struct tsa_config cfg;
    struct tsa_unit_config u[2];
    char paths[4][256];
    char store[256];
    struct tsa_service *svc = NULL;
    int rc;

    write_pem("try.pem", cert);
    tsa_config_default(&cfg);
    (void)snprintf(store, sizeof(store), "%s/pkiva.db", E.dir);
    cfg.store_path = store;
    fill_units(u, paths);
    (void)snprintf(paths[0], 256, "%s/try.pem", E.dir);
    u[0].key_uri = key->uri;
    rc = tsa_service_new(&cfg, u, 1, E.hsm, &svc);
    tsa_service_free(svc);
    return rc;
}

Test(config, refuses_tsa_cert_without_critical_timestamping_eku)
{
    X509 *no = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "no eku", 10, K_TSA_NO_EKU);
    X509 *noncrit = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "noncrit", 11, K_TSA_NONCRIT_EKU);
    X509 *two = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "two", 12, K_TSA_TWO_EKU);
    X509 *good = make_cert(E.ca_key, E.ca, E.tsa_key->pkey, "good", 13, K_TSA);

    cr_assert_eq(try_new(no, E.tsa_key), UTIL_ECONFIG);
    cr_assert_eq(try_new(noncrit, E.tsa_key), UTIL_ECONFIG);
    cr_assert_eq(try_new(two, E.tsa_key), UTIL_ECONFIG);
    cr_assert_eq(try_new(good, E.tsa2_key), UTIL_ECONFIG, "key does not match the certificate");
    cr_assert_eq(try_new(good, E.tsa_key), 0);
    X509_free(no);
    X509_free(noncrit);
    X509_free(two);
    X509_free(good);
}

/* ---- real signing tools using the TSA --------------------------------------------------------- */

TestSuite(clients, .init = setup, .fini = teardown, .timeout = 240);

/* jarsigner -tsa: Java's RFC 3161 client (SHA-256, nonce, certReq) accepts the token and
 * jarsigner -verify finds the time stamp. */
Test(clients, jarsigner_tsa)
{
    char out[16384];
    int rc =
        sh(out, sizeof(out),
           "command -v jarsigner >/dev/null && command -v keytool >/dev/null || exit 77; "
           "keytool -genkeypair -alias signer -keyalg EC -groupname secp256r1 "
           "-keystore ks.p12 -storetype PKCS12 -storepass changeit -dname CN=signer "
           "-validity 10 >/dev/null 2>&1 && "
           "jar cf test.jar data.txt && "
           "jarsigner -keystore ks.p12 -storepass changeit -tsa %s/tsa test.jar signer 2>&1 && "
           "jarsigner -verify -verbose -certs test.jar 2>&1",
           E.url);
    if (rc == 77) {
        cr_log_warn("jarsigner not installed: skipped");
        return;
    }
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_not_null(strstr(out, "jar verified"), "%s", out);
    cr_assert_not_null(strstr(out, "Timestamped by"), "%s", out);
    cr_assert_not_null(strstr(out, "TSA Unit Main"), "%s", out);
}

/* osslsigncode -ts: Authenticode with an RFC 3161 counter-signature on a PowerShell script; the
 * verification checks the time stamp against our CA. */
Test(clients, osslsigncode_ts)
{
    char out[16384];
    int rc = sh(out, sizeof(out),
                "command -v osslsigncode >/dev/null || exit 77; "
                "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                "-keyout cs.key -out cs.pem -days 10 -subj /CN=codesigner "
                "-addext extendedKeyUsage=codeSigning >/dev/null 2>&1 && "
                "printf 'Write-Output \"hello\"\\r\\n' > script.ps1 && "
                "osslsigncode sign -certs cs.pem -key cs.key -ts %s/tsa -in script.ps1 "
                "-out signed.ps1 2>&1 && "
                "osslsigncode verify -CAfile cs.pem -TSA-CAfile ca.pem -in signed.ps1 2>&1",
                E.url);
    if (rc == 77) {
        cr_log_warn("osslsigncode not installed: skipped");
        return;
    }
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert_not_null(strstr(out, "Timestamp Server Signature verification: ok"), "%s", out);
}

/* ---- crash: kill -9 in the middle of a burst ------------------------------------------------ */

static pid_t spawn_helper(int *port)
{
    char port_file[256];
    FILE *f;
    pid_t pid;

    (void)snprintf(port_file, sizeof(port_file), "%s/port", E.dir);
    (void)unlink(port_file); /* may not exist */
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        execl(TSA_SERVE_HELPER, "tsa_serve_helper", E.dir, E.tsa_key->uri, port_file, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        f = fopen(port_file, "r");
        if (f != NULL) {
            cr_assert_eq(fscanf(f, "%d", port), 1);
            fclose(f);
            return pid;
        }
        usleep(50000);
    }
    kill(pid, SIGKILL);
    cr_assert_fail("the helper did not start");
    return -1;
}

struct crash_client {
    int max;
    int n;
    int64_t serials[400];
};

/* Sends requests until max or until the connection breaks (the server was killed). */
static void *crash_client_main(void *p)
{
    struct crash_client *c = p;
    struct sockaddr_in sa;
    size_t qlen;
    unsigned char *q = read_file("q.tsq", &qlen);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)E.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        while (c->n < c->max) {
            unsigned char *r = NULL;
            size_t rlen = 0;
            const unsigned char *rp;
            TS_RESP *resp;
            int64_t v = 0;
            if (post_fd(fd, "/tsa", "application/timestamp-query", q, qlen, &r, &rlen) != 200)
                break;
            rp = r;
            resp = d2i_TS_RESP(NULL, &rp, (long)rlen);
            if (resp != NULL && TS_RESP_get_tst_info(resp) != NULL &&
                ASN1_INTEGER_get_int64(&v, TS_TST_INFO_get_serial(TS_RESP_get_tst_info(resp))))
                c->serials[c->n++] = v;
            TS_RESP_free(resp);
            free(r);
        }
    }
    if (fd >= 0)
        close(fd);
    free(q);
    return NULL;
}

static int crash_burst(int clients, int max, int64_t *all, int n)
{
    pthread_t th[8];
    struct crash_client *cs = calloc((size_t)clients, sizeof(*cs));
    for (int i = 0; i < clients; i++) {
        cs[i].max = max;
        cr_assert_eq(pthread_create(&th[i], NULL, crash_client_main, &cs[i]), 0);
    }
    for (int i = 0; i < clients; i++) {
        (void)pthread_join(th[i], NULL);
        memcpy(all + n, cs[i].serials, sizeof(int64_t) * (size_t)cs[i].n);
        n += cs[i].n;
    }
    free(cs);
    return n;
}

/* Every serial in the token log, read with the sqlite3 shell (out: a large buffer). */
static int db_serials(int64_t *out, int max)
{
    static char text[1 << 20];
    char *p = text;
    int n = 0;
    cr_assert_eq(sh(NULL, 0, "sqlite3 pkiva.db 'SELECT serial FROM tsa_tokens' > serials.txt"), 0);
    {
        char path[256];
        FILE *f;
        size_t len;
        (void)snprintf(path, sizeof(path), "%s/serials.txt", E.dir);
        f = fopen(path, "r");
        cr_assert_not_null(f);
        len = fread(text, 1, sizeof(text) - 1, f);
        text[len] = '\0';
        fclose(f);
    }
    while (*p != '\0' && n < max) {
        char *end;
        out[n++] = strtoll(p, &end, 10);
        p = end;
        while (*p == '\n')
            p++;
    }
    return n;
}

static pid_t crash_pid;
static void *killer(void *arg)
{
    (void)arg;
    usleep(700000);
    kill(crash_pid, SIGKILL);
    return NULL;
}

TestSuite(crash, .init = setup_pki, .fini = teardown, .timeout = 240);

/* A durable TSA killed with SIGKILL mid-burst: every token a client received is in the log, and
 * after a restart on the same store no serial is issued twice. */
Test(crash, kill9_mid_burst_then_restart)
{
    int64_t *granted = calloc(8000, sizeof(int64_t));
    int64_t *logged = calloc(20000, sizeof(int64_t));
    int n = 0, n_before, n_logged;
    int64_t max_logged = 0;
    pthread_t kt;
    int status;

    cr_assert_eq(sh(NULL, 0, "openssl ts -query -data data.txt -sha256 -out q.tsq 2>/dev/null"), 0);
    crash_pid = spawn_helper(&E.port);
    cr_assert_eq(pthread_create(&kt, NULL, killer, NULL), 0);
    n = crash_burst(8, 400, granted, n);
    (void)pthread_join(kt, NULL);
    cr_assert_eq(waitpid(crash_pid, &status, 0), crash_pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "the helper was not killed");
    cr_assert_gt(n, 0, "no token before the kill");
    cr_assert_lt(n, 8 * 400, "the burst ended before the kill");
    n_before = n;

    /* every token a client got is durable */
    n_logged = db_serials(logged, 20000);
    cr_assert_geq(n_logged, n_before);
    for (int i = 0; i < n_before; i++) {
        int found = 0;
        for (int j = 0; j < n_logged && !found; j++)
            found = logged[j] == granted[i];
        cr_assert(found, "token %lld was answered but is not in the log", (long long)granted[i]);
    }
    for (int j = 0; j < n_logged; j++)
        max_logged = logged[j] > max_logged ? logged[j] : max_logged;

    /* restart on the same store */
    crash_pid = spawn_helper(&E.port);
    n = crash_burst(4, 50, granted, n);
    kill(crash_pid, SIGTERM);
    cr_assert_eq(waitpid(crash_pid, &status, 0), crash_pid);
    cr_assert_eq(n - n_before, 200, "requests failed after the restart");
    for (int i = n_before; i < n; i++)
        cr_assert_gt(granted[i], max_logged, "serial %lld at or below one issued before the crash",
                     (long long)granted[i]);
    check_unique(granted, n);
    cr_log_info("%d tokens before the kill, %d logged, %d after the restart", n_before, n_logged,
                n - n_before);
    free(granted);
    free(logged);
}
