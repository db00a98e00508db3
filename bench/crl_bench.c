/* SPDX-License-Identifier: Apache-2.0 */
/* CRL generation benchmark: a SoftHSM2 token and a store with N revoked certificates (default one
 * million, prepared once and cached under /tmp), then the time to build and HSM-sign the full CRL
 * (median of 3, each in a fresh child process so that its peak RSS can be measured), the DER size
 * and peak memory / DER size, next to `openssl ca -gencrl` over an index.txt of the same
 * revocations with a software key of the same type.
 *
 *   crl_bench [--entries N] [--cache DIR] [--runs R]   (not part of ctest) */
#include <crl/crl.h>
#include <errno.h>
#include <hsm/hsm.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>
#include <util/util.h>

#define TOKEN "bench"
#define PIN "1234"
#define KEY_URI "pkcs11:token=" TOKEN ";object=ca;type=private"

static char cache[256];
static long entries = 1000000;

static int sh(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int open_hsm(struct hsm **out)
{
    char conf[512], pin[512];
    struct hsm_config cfg = {.module_path = "/usr/lib/softhsm/libsofthsm2.so",
                             .softhsm_no_deinit = 1,
                             .sessions = 1,
                             .queue_max = 16};
    (void)snprintf(conf, sizeof(conf), "%s/softhsm2.conf", cache);
    (void)snprintf(pin, sizeof(pin), "%s/pin.txt", cache);
    (void)setenv("SOFTHSM2_CONF", conf, 1); /* only fails without memory */
    cfg.pin_file = pin;
    return hsm_open(&cfg, out);
}

static void serial_of(long i, unsigned char *s, size_t *n)
{
    /* 16-octet serials like real CAs' random ones, positive, deterministic. */
    uint64_t a = (uint64_t)i * 0x9E3779B97F4A7C15ull, b = (uint64_t)i;
    s[0] = 0x40 | (unsigned char)(a >> 58);
    for (int k = 1; k < 8; k++)
        s[k] = (unsigned char)(a >> (8 * (7 - k)));
    for (int k = 0; k < 8; k++)
        s[8 + k] = (unsigned char)(b >> (8 * (7 - k)));
    *n = 16;
}

/* Token, CA certificate, store with N revoked certificates, index.txt and openssl ca config. */
static int prepare(void)
{
    char cmd[4096], path[512];
    struct hsm *hsm = NULL;
    struct hsm_key *key = NULL;
    struct store *store = NULL;
    X509 *ca = NULL;
    X509_NAME *name = NULL;
    EVP_MD_CTX *ctx = NULL;
    FILE *f = NULL, *idx = NULL;
    unsigned char *der = NULL;
    int64_t issuer_id = 0, now = util_now_ms() / 1000, t0;
    int len, rc = 1;

    (void)snprintf(path, sizeof(path), "%s/ready", cache);
    if (access(path, F_OK) == 0)
        return 0;
    printf("preparing %s (once) ...\n", cache);
    fflush(stdout);
    (void)snprintf(cmd, sizeof(cmd),
                   "rm -rf %s && mkdir -p %s/tokens && printf 'directories.tokendir = %s/tokens\\n"
                   "objectstore.backend = file\\nlog.level = ERROR\\n' > %s/softhsm2.conf && "
                   "printf '%s\\n' > %s/pin.txt && chmod 600 %s/pin.txt && "
                   "SOFTHSM2_CONF=%s/softhsm2.conf softhsm2-util --init-token --free --label %s "
                   "--pin %s --so-pin %s >/dev/null",
                   cache, cache, cache, cache, PIN, cache, cache, cache, TOKEN, PIN, PIN);
    if (sh(cmd) != 0)
        goto out;
    if (open_hsm(&hsm) != 0 || hsm_key_generate_blocking(hsm, TOKEN, "ca", HSM_EC_P256, &key))
        goto out;
    ca = X509_new();
    name = X509_NAME_new();
    (void)X509_set_version(ca, X509_VERSION_3);
    (void)ASN1_INTEGER_set(X509_get_serialNumber(ca), 1);
    (void)X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"Bench CA",
                                     -1, -1, 0);
    (void)X509_set_subject_name(ca, name);
    (void)X509_set_issuer_name(ca, name);
    (void)X509_gmtime_adj(X509_getm_notBefore(ca), -86400);
    (void)X509_gmtime_adj(X509_getm_notAfter(ca), 3650L * 86400);
    (void)X509_set_pubkey(ca, key->pkey);
    {
        X509V3_CTX v3;
        X509_EXTENSION *ext = NULL;
        X509V3_set_ctx(&v3, ca, ca, NULL, NULL, 0);
        ext = X509V3_EXT_conf(NULL, &v3, "subjectKeyIdentifier", "hash");
        (void)X509_add_ext(ca, ext, -1);
        X509_EXTENSION_free(ext);
    }
    if (hsm_sign_ctx_new_blocking(hsm, key, &ctx) != 0 || X509_sign_ctx(ca, ctx) <= 0)
        goto out;
    (void)snprintf(path, sizeof(path), "%s/ca.pem", cache);
    f = fopen(path, "w");
    if (f == NULL || PEM_write_X509(f, ca) != 1)
        goto out;
    (void)fclose(f);
    f = NULL;
    (void)snprintf(path, sizeof(path), "%s/pkiva.db", cache);
    if (store_open_blocking(path, STORE_OPEN_CREATE, &store) != 0)
        goto out;
    len = i2d_X509(ca, &der);
    if (len <= 0 || store_issuer_put_blocking(store, "bench", der, (size_t)len, &issuer_id) != 0)
        goto out;
    (void)snprintf(path, sizeof(path), "%s/index.txt", cache);
    idx = fopen(path, "w");
    if (idx == NULL)
        goto out;
    t0 = util_mono_ms();
    if (store_begin_blocking(store) != 0)
        goto out;
    for (long i = 1; i <= entries; i++) {
        unsigned char s[16];
        char hex[33];
        size_t n = 0;
        struct store_cert_new c = {0};
        struct store_revocation r = {0};
        int reason = (int)(i % 4 == 0 ? STORE_REASON_NONE : i % 4); /* none, 1, 2, 3 */
        serial_of(i, s, &n);
        c.issuer_id = issuer_id;
        c.serial = s;
        c.serial_len = n;
        c.not_before = now - 86400 - 3600 - entries; /* before every revoked_at below (the store
                                                        refuses a revocation before notBefore) */
        c.not_after = now + 365 * 86400;
        r.issuer_id = issuer_id;
        r.serial = s;
        r.serial_len = n;
        r.reason = reason;
        r.revoked_at = now - 3600 - i;
        r.actor = "bench";
        if (store_cert_add_blocking(store, &c, NULL) != 0 ||
            store_cert_revoke_blocking(store, &r, NULL) != 0)
            goto out;
        util_hex(s, n, hex);
        {
            static const char *names[] = {"", "keyCompromise", "CACompromise",
                                          "affiliationChanged"};
            struct tm tm;
            time_t rt = (time_t)r.revoked_at;
            char when[32];
            (void)gmtime_r(&rt, &tm);
            /* index.txt keeps UTCTime: two-digit years */
            (void)snprintf(when, sizeof(when), "%02d%02d%02d%02d%02d%02dZ", tm.tm_year % 100,
                           tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
            fprintf(idx, "R\t351231000000Z\t%s%s%s\t%s\tunknown\t/CN=c%ld\n", when,
                    reason > 0 ? "," : "", reason > 0 ? names[reason] : "", hex, i);
        }
        if (i % 200000 == 0) {
            printf("  %ld certificates (%.1f s)\n", i, (double)(util_mono_ms() - t0) / 1000.0);
            fflush(stdout);
        }
    }
    if (store_commit_blocking(store) != 0)
        goto out;
    if (fclose(idx) != 0)
        goto out;
    idx = NULL;
    /* openssl ca with a software P-256 key over the same revocations */
    (void)snprintf(cmd, sizeof(cmd),
                   "cd %s && openssl ecparam -name prime256v1 -genkey -noout -out soft.key && "
                   "openssl req -x509 -new -key soft.key -subj /CN=SoftCA -days 3650 -out soft.pem "
                   "&& echo 01 > crlnumber && printf '[ca]\\ndefault_ca=d\\n[d]\\ndir=.\\n"
                   "database=index.txt\\ncertificate=soft.pem\\nprivate_key=soft.key\\n"
                   "crlnumber=crlnumber\\ndefault_md=sha256\\ndefault_crl_days=7\\n"
                   "unique_subject=no\\n' > ca.cnf && echo 'unique_subject = no' > index.txt.attr"
                   " && touch ready",
                   cache);
    if (sh(cmd) != 0)
        goto out;
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "crl_bench: preparation failed\n");
    if (idx != NULL)
        (void)fclose(idx); /* error path */
    if (f != NULL)
        (void)fclose(f); /* error path */
    OPENSSL_free(der);
    EVP_MD_CTX_free(ctx);
    X509_NAME_free(name);
    X509_free(ca);
    store_close(store);
    hsm_key_free(key);
    hsm_close(hsm);
    return rc;
}

/* Child: one generation; prints "ms rss_delta_kb der_len entries". */
static int child(void)
{
    char path[512];
    struct hsm *hsm = NULL;
    struct hsm_key *key = NULL;
    struct store *store = NULL;
    struct store_issuer issuer = {0};
    struct crl_config cfg;
    struct crl_issuer_config ic;
    struct crl_info info;
    struct util_blob *der = NULL;
    struct rusage before, after;
    const unsigned char *q;
    X509 *ca = NULL;
    int64_t t0, t1;
    int rc = 1;

    util_log_set_level(UTIL_LOG_WARN);
    (void)snprintf(path, sizeof(path), "%s/pkiva.db", cache);
    if (open_hsm(&hsm) != 0 || hsm_key_load_blocking(hsm, KEY_URI, NULL, 0, &key) != 0 ||
        store_open_blocking(path, 0, &store) != 0 ||
        store_issuer_get_blocking(store, "bench", &issuer) != 0)
        goto out;
    q = issuer.cert_der;
    ca = d2i_X509(NULL, &q, (long)issuer.cert_len);
    if (ca == NULL || hsm_probe_blocking(hsm, key) != 0) /* log in before measuring */
        goto out;
    crl_config_default(&cfg);
    cfg.public_url = "http://127.0.0.1:8080";
    ic.name = "bench";
    ic.store_issuer_id = issuer.id;
    ic.cert = ca;
    ic.key = key;
    (void)getrusage(RUSAGE_SELF, &before); /* cannot fail */
    t0 = util_mono_ms();
    rc = crl_generate_blocking(&cfg, &ic, hsm, store, &der, &info);
    t1 = util_mono_ms();
    (void)getrusage(RUSAGE_SELF, &after);
    if (rc != 0)
        goto out;
    (void)snprintf(path, sizeof(path), "%s/pkiva.crl", cache);
    if (util_file_write_atomic(path, der->data, der->len, 0644) != 0)
        goto out;
    printf("%lld %ld %zu %lld\n", (long long)(t1 - t0), after.ru_maxrss - before.ru_maxrss,
           der->len, (long long)info.entries);
    rc = 0;
out:
    util_blob_unref(der);
    X509_free(ca);
    store_issuer_cleanup(&issuer);
    store_close(store);
    hsm_key_free(key);
    hsm_close(hsm);
    return rc;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long long ms[9], ossl_ms[9];
    long rss_max = 0;
    size_t der_len = 0;
    long long n_entries = 0;
    int runs = 3, is_child = 0;
    const char *self = argv[0];
    char cmd[2048], line[256];
    struct utsname un;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--entries") == 0 && i + 1 < argc)
            entries = atol(argv[++i]);
        else if (strcmp(argv[i], "--cache") == 0 && i + 1 < argc)
            (void)snprintf(cache, sizeof(cache), "%s", argv[++i]);
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--child") == 0)
            is_child = 1;
        else {
            fprintf(stderr, "usage: crl_bench [--entries N] [--cache DIR] [--runs R]\n");
            return 2;
        }
    }
    if (runs < 1 || runs > 9 || entries < 1)
        return 2;
    if (cache[0] == '\0')
        (void)snprintf(cache, sizeof(cache), "/tmp/pkiva-crl-bench-%ld", entries);
    if (is_child)
        return child();
    util_log_set_level(UTIL_LOG_WARN);
    if (prepare() != 0)
        return 1;
    for (int r = 0; r < runs; r++) {
        FILE *p = NULL;
        long rss = 0;
        (void)snprintf(cmd, sizeof(cmd), "%s --child --cache %s --entries %ld", self, cache,
                       entries);
        p = popen(cmd, "r");
        if (p == NULL || fgets(line, sizeof(line), p) == NULL ||
            sscanf(line, "%lld %ld %zu %lld", &ms[r], &rss, &der_len, &n_entries) != 4) {
            fprintf(stderr, "crl_bench: child run failed\n");
            if (p != NULL)
                (void)pclose(p); /* failing anyway */
            return 1;
        }
        (void)pclose(p); /* its output was read */
        if (rss > rss_max)
            rss_max = rss;
    }
    (void)snprintf(cmd, sizeof(cmd),
                   "openssl crl -noout -inform DER -in %s/pkiva.crl "
                   "-verify -CAfile %s/ca.pem 2>&1 | grep -q 'verify OK'",
                   cache, cache);
    if (sh(cmd) != 0) {
        fprintf(stderr, "crl_bench: the generated CRL does not verify\n");
        return 1;
    }
    for (int r = 0; r < runs; r++) {
        int64_t t0 = util_mono_ms();
        (void)snprintf(cmd, sizeof(cmd),
                       "cd %s && openssl ca -gencrl -batch -config ca.cnf -out soft.crl "
                       ">/dev/null 2>&1",
                       cache);
        if (sh(cmd) != 0) {
            fprintf(stderr, "crl_bench: openssl ca -gencrl failed\n");
            return 1;
        }
        ossl_ms[r] = util_mono_ms() - t0;
    }
    qsort(ms, (size_t)runs, sizeof(ms[0]), cmp_ll);
    qsort(ossl_ms, (size_t)runs, sizeof(ossl_ms[0]), cmp_ll);
    (void)uname(&un);
    printf("machine: %s %s, %ld cores; commit: ", un.nodename, un.machine,
           sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);
    (void)sh("git -C " PKIVA_SOURCE_DIR " rev-parse --short HEAD 2>/dev/null || echo unknown");
    printf("command: crl_bench --entries %ld --runs %d (cache %s)\n", entries, runs, cache);
    printf("pkiva CRL (ec-p256 in SoftHSM2): %lld entries, DER %zu bytes\n", n_entries, der_len);
    printf("  build + HSM sign: median %lld ms of %d\n", ms[runs / 2], runs);
    printf("  peak RSS growth: %ld KiB = %.2f x DER size\n", rss_max,
           (double)rss_max * 1024.0 / (double)der_len);
    printf("openssl ca -gencrl (software P-256 key): median %lld ms of %d\n", ossl_ms[runs / 2],
           runs);
    printf("speed ratio: %.1f x faster\n",
           (double)ossl_ms[runs / 2] / (double)(ms[runs / 2] ? ms[runs / 2] : 1));
    return 0;
}
