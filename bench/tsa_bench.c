/* SPDX-License-Identifier: Apache-2.0 */
/* tsa_bench: time-stamp tokens per second over HTTP against the raw signing rate of the same
 * SoftHSM2 token and key, measured in the same run.
 *
 *   peer:  a loop of C_SignInit + C_Sign (CKM_ECDSA over a SHA-256 digest, P-256 key) through the
 *          dlopen'ed PKCS#11 module, 1 thread and N threads, one session each: the most signatures
 *          the token can make, with nothing else around them.
 *   pkiva: the TSA service (durable token log on and off) in this process behind the real HTTP
 *          server on 127.0.0.1, C keep-alive clients in threads POSTing a SHA-256 TimeStampReq;
 *          granted tokens per second, median of 3 runs.
 *
 * Prints both and the ratio TSA / raw(N threads) (goal >= 0.8). Clients, HTTP loops, the log thread
 * and the signing threads share the same cores, so the ratio is a lower bound on a machine where
 * clients run elsewhere. --alg rsa-2048 measures an RSA TSA key (PKCS#1 v1.5 SHA-256, the raw peer
 * signs with CKM_SHA256_RSA_PKCS): there the token, not the host CPU, is the limit, as with a real
 * HSM. Usage: tsa_bench [--quick] [--alg ec-p256|rsa-2048] [--threads N] [--loops L] [--clients C]
 * [--seconds S] [--linger US].
 * Not run by ctest. */
#define _GNU_SOURCE /* strcasestr */
#include "bench.h"

#include <dlfcn.h>
#include <errno.h>
#include <hsm/hsm.h>
#include <cli/cli.h>
#include <http/http.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ts.h>
#include <openssl/x509v3.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <tsa/tsa.h>
#include <unistd.h>

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "bench"
#define PIN "1234"
#define MAX_THREADS 64

static char dir[64];
static int loops = 0; /* HTTP loop threads; 0 = pkiva serve's default (cli_default_workers) */
static int threads = 0,
           clients = 64; /* as wrk -c64 in bench/run: enough to keep the pipeline full */
static double seconds = 3.0;
static int linger_us = 2000; /* the default of tsa_config_default */
static int rsa = 0;          /* --alg rsa-2048: the TSA key is RSA-2048 instead of P-256 */

static double cpu_s(clockid_t id)
{
    struct timespec ts;
    (void)clock_gettime(id, &ts); /* thread and process CPU clocks always exist on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* never fails for CLOCK_MONOTONIC */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "tsa_bench: %s\n", what);
    exit(1);
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return rc == 0 ? 0 : -1;
}

/* ---- token and PKI -------------------------------------------------------------------------- */

static void make_token(void)
{
    char path[256], cmd[512];
    FILE *f;

    (void)snprintf(dir, sizeof(dir), "/tmp/pkiva-bench.XXXXXX");
    if (mkdtemp(dir) == NULL)
        die("mkdtemp");
    (void)snprintf(path, sizeof(path), "%s/tokens", dir);
    if (mkdir(path, 0700) != 0)
        die("mkdir tokens");
    (void)snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    f = fopen(path, "w");
    if (f == NULL)
        die("softhsm2.conf");
    fprintf(f, "directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir);
    fclose(f);
    setenv("SOFTHSM2_CONF", path, 1);
    (void)snprintf(cmd, sizeof(cmd),
                   "softhsm2-util --init-token --free --label " TOKEN " --pin " PIN " --so-pin " PIN
                   " >/dev/null");
    if (run(cmd) != 0)
        die("softhsm2-util --init-token");
    (void)snprintf(path, sizeof(path), "%s/pin.txt", dir);
    f = fopen(path, "w");
    if (f == NULL)
        die("pin file");
    fprintf(f, PIN "\n");
    fclose(f);
    (void)chmod(path, 0600);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL || !X509_add_ext(x, ext, -1))
        die("extension");
    X509_EXTENSION_free(ext);
}

static X509 *make_cert(struct hsm *hsm, struct hsm_key *by, X509 *issuer, EVP_PKEY *pub,
                       const char *cn, int ca)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    EVP_MD_CTX *ctx = NULL;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_subject_name(x, name);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pub);
    if (ca) {
        add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(x, issuer, NID_key_usage, "critical,keyCertSign");
    } else {
        add_ext(x, issuer, NID_key_usage, "critical,digitalSignature");
        add_ext(x, issuer, NID_ext_key_usage, "critical,timeStamping");
    }
    if (hsm_sign_ctx_new_blocking(hsm, by, &ctx) != 0 || X509_sign_ctx(x, ctx) <= 0)
        die("signing a certificate");
    EVP_MD_CTX_free(ctx);
    X509_NAME_free(name);
    return x;
}

/* ---- peer: raw C_Sign ----------------------------------------------------------------------- */

static CK_FUNCTION_LIST_PTR p11;
static CK_SLOT_ID slot;

static void p11_open(void)
{
    void *lib = dlopen(MODULE, RTLD_NOW);
    CK_C_GetFunctionList get;
    CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_RV rv;

    if (lib == NULL)
        die("dlopen " MODULE);
    get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (get == NULL || get(&p11) != CKR_OK)
        die("C_GetFunctionList");
    rv = p11->C_Initialize(&init);
    /* pkcs11-provider in this process initialised the same module already */
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        die("C_Initialize");
    if (p11->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        die("C_GetSlotList");
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (p11->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
            memcmp(ti.label, TOKEN, strlen(TOKEN)) == 0 && ti.label[strlen(TOKEN)] == ' ') {
            slot = slots[i];
            return;
        }
    }
    die("token not found");
}

struct raw_arg {
    double seconds;
    long count;
    double cpu;
};

static void *raw_main(void *p)
{
    struct raw_arg *a = p;
    CK_SESSION_HANDLE s;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, "tsa", 3}};
    CK_OBJECT_HANDLE key;
    CK_ULONG found = 0;
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    CK_MECHANISM rsa_pkcs = {CKM_SHA256_RSA_PKCS, NULL, 0};
    unsigned char digest[32], sig[512];
    double end;
    CK_RV rv;

    if (p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) != CKR_OK)
        die("C_OpenSession");
    rv = p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)PIN, strlen(PIN));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        die("C_Login");
    if (p11->C_FindObjectsInit(s, tmpl, 2) != CKR_OK ||
        p11->C_FindObjects(s, &key, 1, &found) != CKR_OK || found != 1)
        die("the key 'tsa' in the token");
    (void)p11->C_FindObjectsFinal(s); /* nothing to release on failure */
    {
        /* A session copy of the key, as pkcs11-provider makes (see p11sign.c): the token's best. */
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE session_object = {CKA_TOKEN, &no, sizeof(no)};
        CK_OBJECT_HANDLE copy;
        if (p11->C_CopyObject(s, key, &session_object, 1, &copy) == CKR_OK)
            key = copy;
    }
    end = now_s() + a->seconds;
    a->cpu = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    while (now_s() < end) {
        CK_ULONG sig_len = sizeof(sig);
        /* what pkcs11-provider does for a SHA-256 ECDSA signature: hash here, sign the digest
         * (RSA: the token hashes the 32 octets and signs PKCS#1 v1.5, as p11sign does) */
        SHA256((const unsigned char *)&a->count, sizeof(a->count), digest);
        if (p11->C_SignInit(s, rsa ? &rsa_pkcs : &ecdsa, key) != CKR_OK ||
            p11->C_Sign(s, digest, sizeof(digest), sig, &sig_len) != CKR_OK)
            die("C_Sign");
        a->count++;
    }
    a->cpu = cpu_s(CLOCK_THREAD_CPUTIME_ID) - a->cpu;
    (void)p11->C_CloseSession(s); /* the benchmark is over; nothing to do on failure */
    return NULL;
}

static double raw_cpu_per_sig; /* seconds of CPU per signature, all raw runs */

static double raw_rate(int n)
{
    pthread_t th[MAX_THREADS];
    struct raw_arg args[MAX_THREADS];
    long total = 0;
    double cpu = 0;
    double t0 = now_s(), t1;

    for (int i = 0; i < n; i++) {
        args[i].seconds = seconds;
        args[i].count = 0;
        if (pthread_create(&th[i], NULL, raw_main, &args[i]) != 0)
            die("pthread_create");
    }
    for (int i = 0; i < n; i++) {
        (void)pthread_join(th[i], NULL); /* our threads */
        total += args[i].count;
        cpu += args[i].cpu;
    }
    t1 = now_s();
    raw_cpu_per_sig = cpu / (double)total;
    return (double)total / (t1 - t0);
}

/* ---- pkiva: HTTP clients -------------------------------------------------------------------- */

static int port;
static unsigned char query[256];
static int query_len;

struct client_arg {
    double end;
    long granted, other;
    double cpu;
};

static void *client_main(void *p)
{
    struct client_arg *a = p;
    char req[1024];
    char buf[16384];
    int fd = bench_connect_local(port);
    int head = snprintf(req, sizeof(req),
                        "POST /tsa HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        "Content-Type: application/timestamp-query\r\nContent-Length: %d\r\n\r\n",
                        query_len);
    if (fd < 0)
        die("connect");
    memcpy(req + head, query, (size_t)query_len);

    a->cpu = cpu_s(CLOCK_THREAD_CPUTIME_ID);
    while (now_s() < a->end) {
        size_t have = 0, clen = 0;
        char *end = NULL, *cl, *body;
        if (write(fd, req, (size_t)(head + query_len)) != head + query_len)
            die("write");
        while (end == NULL) {
            ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
            if (r <= 0)
                die("read");
            have += (size_t)r;
            buf[have] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        cl = strcasestr(buf, "content-length:");
        if (cl == NULL)
            die("no Content-Length");
        clen = strtoul(cl + 15, NULL, 10);
        body = end + 4;
        while ((size_t)(buf + have - body) < clen) {
            ssize_t r = read(fd, buf + have, sizeof(buf) - 1 - have);
            if (r <= 0)
                die("read body");
            have += (size_t)r;
        }
        /* granted: 30 82 LL LL 30 03 02 01 00 (status granted, no text) */
        if (clen > 9 && memcmp(body + 4, "\x30\x03\x02\x01\x00", 5) == 0)
            a->granted++;
        else
            a->other++;
    }
    a->cpu = cpu_s(CLOCK_THREAD_CPUTIME_ID) - a->cpu;
    close(fd);
    return NULL;
}

/* Server CPU per granted token: process CPU minus the client threads' own CPU. */
static double tsa_rate(long *other, double *server_cpu_per_token)
{
    pthread_t th[MAX_THREADS];
    struct client_arg args[MAX_THREADS];
    long total = 0;
    double t0 = now_s(), end = t0 + seconds;
    double cpu0 = cpu_s(CLOCK_PROCESS_CPUTIME_ID), client_cpu = 0;

    *other = 0;
    for (int i = 0; i < clients; i++) {
        args[i].end = end;
        args[i].granted = args[i].other = 0;
        if (pthread_create(&th[i], NULL, client_main, &args[i]) != 0)
            die("pthread_create");
    }
    for (int i = 0; i < clients; i++) {
        (void)pthread_join(th[i], NULL); /* our threads */
        total += args[i].granted;
        *other += args[i].other;
        client_cpu += args[i].cpu;
    }
    *server_cpu_per_token =
        (cpu_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0 - client_cpu) / (double)(total > 0 ? total : 1);
    return (double)total / (now_s() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static struct http_server *srv;
static void *run_server(void *arg)
{
    (void)arg;
    (void)http_server_run(srv); /* returns after http_server_stop */
    return NULL;
}

/* Starts the TSA (durable or not), measures 3 runs, prints the median. */
static double measure_tsa(struct hsm *hsm, struct hsm_key *key, int durable, int workers)
{
    struct tsa_config cfg;
    struct tsa_unit_config unit;
    struct http_config http;
    struct tsa_service *svc = NULL;
    struct tsa_stats st;
    pthread_t run_thread;
    char store[128], cert[128], chain[128];
    double runs[3], cpus[3];
    long other = 0, other_total = 0;

    tsa_config_default(&cfg);
    (void)snprintf(store, sizeof(store), "%s/pkiva.db", dir);
    (void)snprintf(cert, sizeof(cert), "%s/tsa.pem", dir);
    (void)snprintf(chain, sizeof(chain), "%s/ca.pem", dir);
    cfg.store_path = store;
    cfg.durable_log = durable;
    cfg.log_linger_us = linger_us;
    cfg.require_clock_sync = 0; /* benchmark machines and CI often run unsynchronized */
    memset(&unit, 0, sizeof(unit));
    unit.name = "bench";
    unit.cert_file = cert;
    unit.chain_file = chain;
    unit.key_uri = key->uri;
    unit.policy = "1.3.6.1.4.1.99999.1.1";
    unit.accuracy_us = 100000;
    if (tsa_service_new(&cfg, &unit, 1, hsm, &svc) != 0)
        die("tsa_service_new");
    memset(&http, 0, sizeof(http));
    http.workers = workers;
    http.n_listeners = 1;
    (void)snprintf(http.listeners[0].host, sizeof(http.listeners[0].host), "127.0.0.1");
    http.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&http.limits);
    if (http_server_new(&http, &srv) != 0 || tsa_service_register(svc, srv) != 0 ||
        http_server_start(srv) != 0 || tsa_service_start(svc) != 0)
        die("starting the server");
    port = http_server_port(srv, 0);
    if (pthread_create(&run_thread, NULL, run_server, NULL) != 0)
        die("pthread_create");
    for (int r = 0; r < 3; r++) {
        runs[r] = tsa_rate(&other, &cpus[r]);
        other_total += other;
    }
    qsort(runs, 3, sizeof(runs[0]), cmp_double);
    qsort(cpus, 3, sizeof(cpus[0]), cmp_double);
    http_server_stop(srv);
    (void)pthread_join(run_thread, NULL); /* our thread */
    tsa_service_stop(svc);
    tsa_stats_get(svc, &st);
    printf("  pkiva TSA, durable_log=%-3s %2d clients: %8.0f tokens/s  (runs %.0f %.0f %.0f; "
           "%ld not granted; %llu log commits, %.1f records/commit)\n",
           durable ? "yes" : "no", clients, runs[1], runs[0], runs[1], runs[2], other_total,
           (unsigned long long)st.log_commits,
           st.log_commits ? (double)st.log_records / (double)st.log_commits : 0.0);
    printf(
        "      server CPU per token %.0f us (raw C_Sign: %.0f us CPU per signature; share of the "
        "server's CPU that is signing: %.2f)\n",
        cpus[1] * 1e6, raw_cpu_per_sig * 1e6, raw_cpu_per_sig / cpus[1]);
    http_server_free(srv);
    tsa_service_free(svc);
    return runs[1];
}

int main(int argc, char **argv)
{
    struct hsm_config hc;
    struct hsm *hsm = NULL;
    struct hsm_key *ca_key = NULL, *tsa_key = NULL;
    X509 *ca, *tsa;
    FILE *f;
    char path[256], pin[128], commit[64] = "unknown", cpu[128] = "unknown", line[256];
    struct utsname un;
    double raw1, rawn, durable_rate, fast_rate;
    TS_REQ *req;
    TS_MSG_IMPRINT *mi;
    X509_ALGOR *alg;
    unsigned char digest[32], *p;
    int quick = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "--loops") == 0 && i + 1 < argc)
            loops = atoi(argv[++i]);
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc)
            clients = atoi(argv[++i]);
        else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--linger") == 0 && i + 1 < argc)
            linger_us = atoi(argv[++i]);
        else if (strcmp(argv[i], "--alg") == 0 && i + 1 < argc &&
                 (strcmp(argv[i + 1], "ec-p256") == 0 || strcmp(argv[i + 1], "rsa-2048") == 0))
            rsa = strcmp(argv[++i], "rsa-2048") == 0;
        else {
            fprintf(stderr, "usage: tsa_bench [--quick] [--alg ec-p256|rsa-2048] [--threads N] "
                            "[--loops L] [--clients C] [--seconds S] [--linger US]\n");
            return 2;
        }
    }
    if (quick)
        seconds = 1.0;
    if (threads <= 0)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (loops <= 0)
        loops = cli_default_workers();
    if (threads < 1 || threads > MAX_THREADS || clients < 1 || clients > MAX_THREADS ||
        loops > MAX_THREADS)
        die("threads, loops and clients: 1..64");
    util_log_set_level(UTIL_LOG_WARN);

    make_token();
    memset(&hc, 0, sizeof(hc));
    (void)snprintf(pin, sizeof(pin), "%s/pin.txt", dir);
    hc.module_path = MODULE;
    hc.pin_file = pin;
    hc.softhsm_no_deinit = 1;
    hc.sessions = threads;
    hc.queue_max = 1024;
    if (hsm_open(&hc, &hsm) != 0 ||
        hsm_key_generate_blocking(hsm, TOKEN, "ca", HSM_EC_P256, &ca_key) != 0 ||
        hsm_key_generate_blocking(hsm, TOKEN, "tsa", rsa ? HSM_RSA_2048 : HSM_EC_P256, &tsa_key) !=
            0)
        die("HSM set-up");
    ca = make_cert(hsm, ca_key, NULL, ca_key->pkey, "Bench CA", 1);
    tsa = make_cert(hsm, ca_key, ca, tsa_key->pkey, "Bench TSA", 0);
    (void)snprintf(path, sizeof(path), "%s/ca.pem", dir);
    f = fopen(path, "w");
    PEM_write_X509(f, ca);
    fclose(f);
    (void)snprintf(path, sizeof(path), "%s/tsa.pem", dir);
    f = fopen(path, "w");
    PEM_write_X509(f, tsa);
    fclose(f);

    /* one SHA-256 request with nonce and certReq, like `openssl ts -query -sha256 -cert` */
    req = TS_REQ_new();
    mi = TS_MSG_IMPRINT_new();
    alg = X509_ALGOR_new();
    RAND_bytes(digest, sizeof(digest));
    X509_ALGOR_set0(alg, OBJ_nid2obj(NID_sha256), V_ASN1_NULL, NULL);
    TS_REQ_set_version(req, 1);
    TS_MSG_IMPRINT_set_algo(mi, alg);
    TS_MSG_IMPRINT_set_msg(mi, digest, sizeof(digest));
    TS_REQ_set_msg_imprint(req, mi);
    {
        ASN1_INTEGER *nonce = ASN1_INTEGER_new();
        ASN1_INTEGER_set_int64(nonce, 0x0123456789abcdefLL);
        TS_REQ_set_nonce(req, nonce);
        ASN1_INTEGER_free(nonce);
    }
    TS_REQ_set_cert_req(req, 1);
    p = query;
    query_len = i2d_TS_REQ(req, NULL);
    if (query_len <= 0 || query_len > (int)sizeof(query))
        die("request");
    (void)i2d_TS_REQ(req, &p);
    TS_REQ_free(req);
    TS_MSG_IMPRINT_free(mi);
    X509_ALGOR_free(alg);

    f = popen("git -C " PKIVA_SOURCE_DIR " rev-parse --short HEAD 2>/dev/null", "r");
    if (f != NULL) {
        if (fgets(commit, sizeof(commit), f) != NULL)
            commit[strcspn(commit, "\n")] = '\0';
        (void)pclose(f); /* informational */
    }
    f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            (void)snprintf(cpu, sizeof(cpu), "%s", strchr(line, ':') + 2);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    (void)uname(&un);
    printf("tsa_bench%s: %d signing threads, %d HTTP loop(s), %d keep-alive clients, %.1f s per "
           "run, log_linger_us %d\n",
           quick ? " --quick" : "", threads, loops, clients, seconds, linger_us);
    printf("  commit %s; %s %s; %ld cores: %s\n", commit, un.sysname, un.release,
           sysconf(_SC_NPROCESSORS_ONLN), cpu);
    printf("  SoftHSM2 token, %s TSA key, SHA-256 TimeStampReq with nonce and certReq\n",
           rsa ? "RSA-2048" : "ECDSA P-256");

    p11_open();
    raw1 = raw_rate(1);
    printf("  raw C_Sign (peer),  1 thread : %8.0f signatures/s\n", raw1);
    rawn = raw_rate(threads);
    printf("  raw C_Sign (peer), %2d threads: %8.0f signatures/s\n", threads, rawn);
    durable_rate = measure_tsa(hsm, tsa_key, 1, loops);
    fast_rate = measure_tsa(hsm, tsa_key, 0, loops);
    printf(
        "  ratio TSA / raw(%d threads): durable_log=yes %.2f, durable_log=no %.2f (goal >= 0.8)\n",
        threads, durable_rate / rawn, fast_rate / rawn);

    X509_free(ca);
    X509_free(tsa);
    hsm_key_free(ca_key);
    hsm_key_free(tsa_key);
    hsm_close(hsm);
    (void)snprintf(line, sizeof(line), "rm -rf %s", dir);
    (void)run(line);
    return 0;
}
