/* SPDX-License-Identifier: Apache-2.0 */
/* dir_bench: the public directory at scale (issue 20). Driven by bench/dir_run; not run by ctest.
 *
 *   dir_bench fill   --db FILE --issuer NAME --n N [--issuer-cert PEM]
 *       (FILE may be a postgresql:// URI; --issuer-cert registers the issuer first, for a store
 *       that pkiva init did not make, as bench/dir_pg does) registers N certificates (real X.509
 *       DER, Vietnamese names, organisations, units, e-mail addresses; serial = 0x01 || i as 7
 *       octets) under the issuer, 20 000 per transaction (the next 20 000 encoded on a second
 *       thread meanwhile), and prints the rate. Their signatures do not verify (see make_der):
 *       search does not care.
 *   dir_bench query  --db FILE --issuer NAME --n N [--queries Q]
 *       runs Q searches of each kind through the store API on one read-only connection (what a
 *       directory worker thread does) and prints p50/p99/max per kind: a full name, one family
 *       name (a match set of N/16, first page only), a 3-letter prefix, an organisation, an
 *       e-mail address word by word (full-text) and whole (its own index), a serial, a SHA-256
 *       fingerprint.
 *   dir_bench load   --port P --ocsp-path PATH --n N [--seconds S] [--search-conns C]
 *                    [--search-rate R]
 *       OCSP GET of one pre-signed response on 4 keep-alive connections for S seconds alone, then
 *       again while C connections search /directory/search over HTTP at R searches/s (default 50,
 *       open loop), then while they search without pause; prints OCSP requests/s in each phase
 *       (the peer figure is the first) and the HTTP search p50/p99.
 *
 * Latencies are wall time per call on a shared machine: read them next to the peer figure
 * printed in the same run, never alone. */
#define _GNU_SOURCE
#include "bench.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <store/store.h>
#include <util/util.h>

static const char *const family[] = {"Nguyễn", "Trần", "Lê",    "Phạm", "Hoàng", "Huỳnh",
                                     "Phan",   "Vũ",   "Võ",    "Đặng", "Bùi",   "Đỗ",
                                     "Hồ",     "Ngô",  "Dương", "Lý"};
static const char *const family_ascii[] = {"nguyen", "tran", "le",    "pham", "hoang", "huynh",
                                           "phan",   "vu",   "vo",    "dang", "bui",   "do",
                                           "ho",     "ngo",  "duong", "ly"};
static const char *const middle[] = {"Văn",   "Thị",   "Hữu",  "Đức",  "Minh",
                                     "Quang", "Thanh", "Ngọc", "Xuân", "Hồng"};
static const char *const given[] = {
    "An",    "Bình",  "Cường", "Dũng",  "Giang", "Hà",    "Hải",  "Hạnh", "Hiếu",  "Hoa",  "Hùng",
    "Hương", "Khánh", "Lan",   "Linh",  "Long",  "Mai",   "Nam",  "Nga",  "Phong", "Phúc", "Quân",
    "Sơn",   "Tâm",   "Thảo",  "Thắng", "Trang", "Trung", "Tuấn", "Vân",  "Việt",  "Yến"};
static const char *const given_prefix[] = {"cuo", "dun", "gia", "hie", "huo", "kha", "lin", "lon",
                                           "pho", "phu", "qua", "tha", "tra", "tru", "tua", "vie"};
static const char *const bodies[] = {"Sở Tài chính",     "Sở Y tế",  "Sở Giáo dục và Đào tạo",
                                     "Kho bạc Nhà nước", "Cục Thuế", "Sở Tư pháp",
                                     "Ủy ban nhân dân",  "Công an",  "Sở Xây dựng",
                                     "Bảo hiểm xã hội"};
static const char *const provinces[] = {"Hà Nội",   "Hải Phòng",  "Đà Nẵng",    "Cần Thơ",
                                        "Huế",      "Nghệ An",    "Thanh Hóa",  "Quảng Ninh",
                                        "Lâm Đồng", "Đắk Lắk",    "Bình Dương", "Đồng Nai",
                                        "An Giang", "Kiên Giang", "Lào Cai",    "Sơn La"};
static const char *const units[] = {"Phòng Kế toán", "Văn phòng", "Phòng Tổ chức cán bộ",
                                    "Phòng Công nghệ thông tin", "Thanh tra"};

#define N_OF(a) ((long)(sizeof(a) / sizeof((a)[0])))

static double now_s(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Everything about certificate i is a function of i, so that query and load can name existing
 * ones without reading them back. */
static void cert_names(long i, char *cn, size_t cn_len, char *o, size_t o_len, char *ou,
                       size_t ou_len, char *email, size_t email_len)
{
    uint64_t h = (uint64_t)i * 0x9E3779B97F4A7C15ULL;
    long f = (long)(h % 16), m = (long)((h >> 8) % 10), g = (long)((h >> 16) % 32);
    long b = (long)((h >> 24) % 10), p = (long)((h >> 32) % 16), u = (long)((h >> 40) % 5);
    (void)snprintf(cn, cn_len, "%s %s %s", family[f], middle[m], given[g]);
    (void)snprintf(o, o_len, "%s %s", bodies[b], provinces[p]);
    (void)snprintf(ou, ou_len, "%s", units[u]);
    (void)snprintf(email, email_len, "%s.%ld@so%ld-t%ld.gov.vn", family_ascii[f], i, b, p);
}

static void serial_of(long i, unsigned char serial[8])
{
    serial[0] = 0x01;
    for (int k = 0; k < 7; k++)
        serial[7 - k] = (unsigned char)((uint64_t)i >> (8 * k));
}

/* Certificate i as DER. One X509 object is reused: it is signed once (so that it has a key and a
 * signature), then only its serial, subject and SAN change, and i2d re-encodes the modified
 * TBSCertificate with the old signature bytes. The result is well-formed DER whose signature does
 * not verify: search does not look at it, and signing a million certificates would time the
 * bench's own OpenSSL calls instead of pkiva. */
static unsigned char *make_der(long i, EVP_PKEY *key, X509_NAME *issuer, size_t *len)
{
    static X509 *x;
    char cn[128], o[128], ou[128], email[128], san[160];
    unsigned char serial[8], *der = NULL;
    X509_NAME *name = X509_NAME_new();
    ASN1_INTEGER *sn = NULL;
    BIGNUM *bn = NULL;
    X509_EXTENSION *ext = NULL;
    int n;

    if (x == NULL) {
        x = X509_new();
        (void)X509_set_version(x, 2);
        (void)X509_set_issuer_name(x, issuer);
        (void)X509_gmtime_adj(X509_getm_notBefore(x), 0);
        (void)X509_gmtime_adj(X509_getm_notAfter(x), 365 * 86400L);
        (void)X509_set_pubkey(x, key);
        (void)X509_sign(x, key, EVP_sha256());
    }
    cert_names(i, cn, sizeof(cn), o, sizeof(o), ou, sizeof(ou), email, sizeof(email));
    serial_of(i, serial);
    bn = BN_bin2bn(serial, 8, NULL);
    sn = BN_to_ASN1_INTEGER(bn, NULL);
    (void)X509_set_serialNumber(x, sn);
    (void)X509_NAME_add_entry_by_txt(name, "C", MBSTRING_UTF8, (const unsigned char *)"VN", -1, -1,
                                     0);
    (void)X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)o, -1, -1, 0);
    (void)X509_NAME_add_entry_by_txt(name, "OU", MBSTRING_UTF8, (const unsigned char *)ou, -1, -1,
                                     0);
    (void)X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                     0);
    (void)X509_set_subject_name(x, name);
    while (X509_get_ext_count(x) > 0)
        X509_EXTENSION_free(X509_delete_ext(x, 0));
    (void)snprintf(san, sizeof(san), "email:%s", email);
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    (void)X509_add_ext(x, ext, -1);
    n = i2d_re_X509_tbs(x, NULL) > 0 ? i2d_X509(x, &der) : -1;
    *len = n > 0 ? (size_t)n : 0;
    X509_EXTENSION_free(ext);
    ASN1_INTEGER_free(sn);
    BN_free(bn);
    X509_NAME_free(name);
    return n > 0 ? der : NULL;
}

static const char *issuer_cert_path;

/* --issuer-cert: registers the issuer from a PEM file (idempotent). */
static void issuer_register(struct store *s, const char *name)
{
    FILE *f = fopen(issuer_cert_path, "r");
    X509 *x = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    unsigned char *der = NULL;
    int len = x != NULL ? i2d_X509(x, &der) : -1;
    int64_t id = 0;

    if (len <= 0 || store_issuer_put_blocking(s, name, der, (size_t)len, &id) != UTIL_OK) {
        fprintf(stderr, "dir_bench: cannot register issuer %s from %s\n", name, issuer_cert_path);
        exit(1);
    }
    if (f != NULL)
        (void)fclose(f);
    OPENSSL_free(der);
    X509_free(x);
}

static int64_t issuer_id(struct store *s, const char *name, X509_NAME **subject)
{
    struct store_issuer is;
    const unsigned char *p;
    X509 *x;
    if (store_issuer_get_blocking(s, name, &is) != UTIL_OK) {
        fprintf(stderr, "dir_bench: no issuer %s in the store\n", name);
        exit(1);
    }
    p = is.cert_der;
    x = d2i_X509(NULL, &p, (long)is.cert_len);
    if (subject != NULL)
        *subject = x ? X509_NAME_dup(X509_get_subject_name(x)) : X509_NAME_new();
    X509_free(x);
    store_issuer_cleanup(&is);
    return is.id;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *lat, int n)
{
    if (n == 0) {
        printf("  %-28s no samples\n", what);
        return;
    }
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    printf("  %-28s n %6d  p50 %8.3f ms  p99 %8.3f ms  max %8.3f ms\n", what, n, lat[n / 2] * 1e3,
           lat[(int)(n * 0.99)] * 1e3, lat[n - 1] * 1e3);
}

/* ---- fill ----------------------------------------------------------------------------------- */

/* One transaction's certificates, made by the generator thread while the previous batch is
 * written: on two cores, encoding the next 20 000 certificates overlaps with SQLite writing these
 * (the writer is the bottleneck; the encoding was about a quarter of its thread's time). */
#define FILL_BATCH 20000
struct fill_batch {
    long first, count;
    EVP_PKEY *key;
    X509_NAME *issuer;
    unsigned char *der[FILL_BATCH];
    size_t len[FILL_BATCH];
};

static void *fill_generate(void *arg)
{
    struct fill_batch *b = arg;
    for (long k = 0; k < b->count; k++)
        b->der[k] = make_der(b->first + k, b->key, b->issuer, &b->len[k]);
    return NULL;
}

static int fill_write(struct store *s, int64_t id, struct fill_batch *b)
{
    int rc = store_begin_blocking(s);
    for (long k = 0; k < b->count && rc == UTIL_OK; k++) {
        unsigned char serial[8];
        struct store_cert_new cn = {.issuer_id = id,
                                    .serial = serial,
                                    .serial_len = 8,
                                    .not_before = 1700000000,
                                    .not_after = 2000000000,
                                    .cert_der = b->der[k],
                                    .cert_len = b->len[k]};
        serial_of(b->first + k, serial);
        if (b->der[k] == NULL || store_cert_add_blocking(s, &cn, NULL) != UTIL_OK) {
            fprintf(stderr, "dir_bench: certificate %ld failed\n", b->first + k);
            rc = UTIL_EINVAL;
        }
    }
    for (long k = 0; k < b->count; k++)
        OPENSSL_free(b->der[k]);
    return rc == UTIL_OK ? store_commit_blocking(s) : rc;
}

static int cmd_fill(const char *db, const char *issuer, long n)
{
    struct store *s = NULL;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    struct fill_batch *batch[2] = {calloc(1, sizeof(struct fill_batch)),
                                   calloc(1, sizeof(struct fill_batch))};
    pthread_t generator;
    int64_t id;
    double t0 = now_s();
    long first = 0;
    int cur = 0;

    if (batch[0] == NULL || batch[1] == NULL)
        return 1;
    if (store_open_blocking(db, STORE_OPEN_CREATE | STORE_OPEN_BULK, &s) != UTIL_OK)
        return 1;
    if (issuer_cert_path != NULL)
        issuer_register(s, issuer);
    id = issuer_id(s, issuer, &subject);
    for (int k = 0; k < 2; k++) {
        batch[k]->key = key;
        batch[k]->issuer = subject;
    }
    batch[0]->first = 0;
    batch[0]->count = n < FILL_BATCH ? n : FILL_BATCH;
    (void)fill_generate(batch[0]);
    for (first = 0; first < n; first += FILL_BATCH, cur ^= 1) {
        struct fill_batch *next = batch[cur ^ 1];
        int started = 0, rc;
        next->first = first + FILL_BATCH;
        next->count = n - next->first < FILL_BATCH ? n - next->first : FILL_BATCH;
        if (next->count > 0)
            started = pthread_create(&generator, NULL, fill_generate, next) == 0;
        if (next->count > 0 && !started)
            (void)fill_generate(next); /* no thread: generate it here, after this batch */
        rc = fill_write(s, id, batch[cur]);
        if (started)
            (void)pthread_join(generator, NULL);
        if (rc != UTIL_OK)
            return 1;
        if ((first / FILL_BATCH) % 10 == 9)
            fprintf(stderr, "  %ld certificates, %.0f/s\n", first + FILL_BATCH,
                    (double)(first + FILL_BATCH) / (now_s() - t0));
    }
    printf("fill: %ld certificates with DER and search index in %.1f s (%.0f/s)\n", n, now_s() - t0,
           (double)n / (now_s() - t0));
    X509_NAME_free(subject);
    EVP_PKEY_free(key);
    free(batch[0]);
    free(batch[1]);
    store_close(s);
    return 0;
}

/* ---- query ---------------------------------------------------------------------------------- */

static int count_row(void *ctx, const struct store_search_row *row)
{
    (*(long *)ctx)++;
    return 0;
}

static int cmd_query(const char *db, const char *issuer, long n, int queries)
{
    static const char *const kinds[] = {"full name (3 words)",    "family name (N/16 match)",
                                        "3-letter prefix",        "organisation (2 words)",
                                        "e-mail address (words)", "serial",
                                        "SHA-256 fingerprint",    "e-mail address (whole)"};
    struct store *s = NULL;
    X509_NAME *subject = NULL;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    double *lat = calloc((size_t)queries, sizeof(double));
    int64_t id;
    long total_rows = 0;

    if (store_open_blocking(db, STORE_OPEN_READONLY, &s) != UTIL_OK || lat == NULL)
        return 1;
    id = issuer_id(s, issuer, &subject);
    printf("query: %ld certificates, %d searches of each kind, 20 rows a page, one read-only "
           "connection\n",
           n, queries);
    for (int k = 0; k < N_OF(kinds); k++) {
        for (int q = 0; q < queries; q++) {
            long i = (long)(rnd() % (uint64_t)n);
            char cn[128], o[128], ou[128], email[128], text[256];
            unsigned char serial[8], md[32];
            unsigned int md_len = 0;
            struct store_search sq = {.issuer_ids = &id, .n_issuer_ids = 1, .limit = 20};
            long rows = 0;
            double t0;
            cert_names(i, cn, sizeof(cn), o, sizeof(o), ou, sizeof(ou), email, sizeof(email));
            serial_of(i, serial);
            sq.kind = STORE_SEARCH_NAME;
            sq.fields = STORE_FIELD_ALL;
            sq.text = text;
            switch (k) {
            case 0: (void)snprintf(text, sizeof(text), "%s", cn); break;
            case 1: (void)snprintf(text, sizeof(text), "%s", family_ascii[rnd() % 16]); break;
            case 2: (void)snprintf(text, sizeof(text), "%s", given_prefix[rnd() % 16]); break;
            case 3:
                sq.fields = STORE_FIELD_O;
                (void)snprintf(text, sizeof(text), "%s", o);
                break;
            case 4:
                sq.fields = STORE_FIELD_EMAIL;
                (void)snprintf(text, sizeof(text), "%s", email);
                break;
            case 7:
                sq.kind = STORE_SEARCH_EMAIL;
                (void)snprintf(text, sizeof(text), "%s", email);
                break;
            case 5:
                sq.kind = STORE_SEARCH_SERIAL;
                sq.key = serial;
                sq.key_len = 8;
                break;
            default: {
                /* The DER is rebuilt with the same names but another signature, so look the
                 * stored one up by serial first (outside the timing) and hash it. */
                unsigned char *der = NULL;
                size_t len = 0;
                if (store_cert_der_blocking(s, id, serial, 8, &der, &len) != UTIL_OK)
                    return 1;
                (void)EVP_Digest(der, len, md, &md_len, EVP_sha256(), NULL);
                free(der);
                sq.kind = STORE_SEARCH_SHA256;
                sq.key = md;
                sq.key_len = 32;
            }
            }
            t0 = now_s();
            if (store_cert_search_blocking(s, &sq, count_row, &rows) < 0) {
                fprintf(stderr, "dir_bench: search '%s' failed\n", text);
                return 1;
            }
            lat[q] = now_s() - t0;
            total_rows += rows;
            if ((k == 0 || k >= 4) && rows == 0) {
                fprintf(stderr, "dir_bench: certificate %ld not found by %s\n", i, kinds[k]);
                return 1;
            }
        }
        report(kinds[k], lat, queries);
    }
    printf("  (%ld rows returned in all)\n", total_rows);
    X509_NAME_free(subject);
    EVP_PKEY_free(key);
    free(lat);
    store_close(s);
    return 0;
}

/* ---- load ----------------------------------------------------------------------------------- */

static atomic_int stop_flag;
static atomic_long ocsp_done, ocsp_errors;
static int port;
static const char *ocsp_path;
static long n_certs;
static double search_rate; /* searches/s over all search connections; 0 = without pause */

/* One request on a keep-alive connection; reads the whole response. Returns the status. */
static int http_get(int *fd, const char *path)
{
    char req[1024], buf[65536];
    size_t have = 0, need = 0;
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", path);
    if (*fd < 0)
        *fd = bench_connect_local(port);
    if (*fd < 0 || write(*fd, req, (size_t)n) != n)
        goto fail;
    for (;;) {
        ssize_t r = read(*fd, buf + have, sizeof(buf) - have - 1);
        char *end;
        if (r <= 0)
            goto fail;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
        if (end != NULL && need == 0) {
            char *cl = strcasestr(buf, "Content-Length:");
            if (cl == NULL)
                goto fail;
            need = (size_t)(end + 4 - buf) + strtoul(cl + 15, NULL, 10);
        }
        if (need != 0 && have >= need)
            return atoi(buf + 9);
        if (have + 1 >= sizeof(buf))
            goto fail;
    }
fail:
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
    return 0;
}

static void *ocsp_thread(void *arg)
{
    int fd = -1;
    while (!atomic_load(&stop_flag)) {
        if (http_get(&fd, ocsp_path) == 200)
            atomic_fetch_add(&ocsp_done, 1);
        else
            atomic_fetch_add(&ocsp_errors, 1);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

struct search_thread {
    pthread_t t;
    double lat[200000];
    int n;
    long errors;
    uint64_t seed;
    int conns;
};

static void *search_thread(void *arg)
{
    struct search_thread *st = arg;
    int fd = -1;
    double next = now_s();
    while (!atomic_load(&stop_flag) && st->n < (int)(sizeof(st->lat) / sizeof(st->lat[0]))) {
        char cn[128], o[128], ou[128], email[128], path[512];
        long i;
        double t0;
        st->seed = st->seed * 6364136223846793005ULL + 1442695040888963407ULL;
        i = (long)((st->seed >> 16) % (uint64_t)n_certs);
        cert_names(i, cn, sizeof(cn), o, sizeof(o), ou, sizeof(ou), email, sizeof(email));
        if (st->n % 2 == 0)
            (void)snprintf(path, sizeof(path), "/directory/search?q=%s&format=json",
                           email); /* '@' and '.' are fine in a query */
        else
            (void)snprintf(path, sizeof(path), "/directory/search?q=01%014lx&format=json",
                           (unsigned long)i);
        if (search_rate > 0) { /* open loop: latency from the intended send time */
            double wait = next - now_s();
            if (wait > 0)
                (void)usleep((useconds_t)(wait * 1e6));
            t0 = next;
            next += st->conns / search_rate;
        } else {
            t0 = now_s();
        }
        if (http_get(&fd, path) == 200)
            st->lat[st->n++] = now_s() - t0;
        else
            st->errors++;
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

static double ocsp_phase(int seconds, int search_conns, struct search_thread *sts)
{
    pthread_t t[4];
    double t0;
    long before;
    atomic_store(&stop_flag, 0);
    for (int i = 0; i < search_conns; i++)
        (void)pthread_create(&sts[i].t, NULL, search_thread, &sts[i]);
    for (int i = 0; i < 4; i++)
        (void)pthread_create(&t[i], NULL, ocsp_thread, NULL);
    sleep(1); /* warm-up */
    before = atomic_load(&ocsp_done);
    t0 = now_s();
    sleep((unsigned)seconds);
    before = atomic_load(&ocsp_done) - before;
    t0 = now_s() - t0;
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 4; i++)
        (void)pthread_join(t[i], NULL);
    for (int i = 0; i < search_conns; i++)
        (void)pthread_join(sts[i].t, NULL);
    return (double)before / t0;
}

static void search_report(struct search_thread *sts, int search_conns, int seconds)
{
    int total = 0;
    long errors = 0;
    double *all;
    for (int i = 0; i < search_conns; i++) {
        total += sts[i].n;
        errors += sts[i].errors;
    }
    all = calloc((size_t)total + 1, sizeof(double));
    total = 0;
    for (int i = 0; i < search_conns; i++)
        for (int j = 0; j < sts[i].n; j++)
            all[total++] = sts[i].lat[j];
    printf("load:   %d HTTP searches (%.0f/s; by e-mail and by serial, JSON; %ld not 200):\n",
           total, total / (double)(seconds + 1), errors);
    report("search over HTTP", all, total);
    free(all);
    for (int i = 0; i < search_conns; i++) {
        sts[i].n = 0;
        sts[i].errors = 0;
    }
}

static int cmd_load(int seconds, int search_conns, double paced)
{
    struct search_thread *sts = calloc((size_t)search_conns, sizeof(*sts));
    double alone, with;
    if (sts == NULL)
        return 1;
    for (int i = 0; i < search_conns; i++) {
        sts[i].seed = 1234567 + (uint64_t)i;
        sts[i].conns = search_conns;
    }
    alone = ocsp_phase(seconds, 0, sts);
    printf("load: OCSP GET, 4 keep-alive connections, %d s: %.0f requests/s alone (errors %ld)\n",
           seconds, alone, atomic_load(&ocsp_errors));
    atomic_store(&ocsp_errors, 0);
    search_rate = paced;
    with = ocsp_phase(seconds, search_conns, sts);
    printf("load: OCSP GET while %d connections search at %.0f/s (open loop): %.0f requests/s "
           "(%.1f%% of alone; errors %ld)\n",
           search_conns, paced, with, 100.0 * with / alone, atomic_load(&ocsp_errors));
    search_report(sts, search_conns, seconds);
    atomic_store(&ocsp_errors, 0);
    search_rate = 0;
    with = ocsp_phase(seconds, search_conns, sts);
    printf("load: OCSP GET while %d connections search without pause (saturating the directory's "
           "threads): %.0f requests/s (%.1f%% of alone; errors %ld)\n",
           search_conns, with, 100.0 * with / alone, atomic_load(&ocsp_errors));
    search_report(sts, search_conns, seconds);
    free(sts);
    return 0;
}

int main(int argc, char **argv)
{
    const char *db = NULL, *issuer = "demo-ca";
    long n = 1000000;
    int queries = 1000, seconds = 15, search_conns = 4;
    double paced = 50;
    if (argc < 2) {
        fprintf(stderr, "usage: see the comment at the top of bench/dir_bench.c\n");
        return 2;
    }
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--db") == 0)
            db = argv[i + 1];
        else if (strcmp(argv[i], "--issuer") == 0)
            issuer = argv[i + 1];
        else if (strcmp(argv[i], "--issuer-cert") == 0)
            issuer_cert_path = argv[i + 1];
        else if (strcmp(argv[i], "--n") == 0)
            n = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--queries") == 0)
            queries = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--ocsp-path") == 0)
            ocsp_path = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--search-conns") == 0)
            search_conns = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--search-rate") == 0)
            paced = atof(argv[i + 1]);
    }
    n_certs = n;
    util_log_set_level(UTIL_LOG_WARN);
    if (strcmp(argv[1], "fill") == 0 && db != NULL)
        return cmd_fill(db, issuer, n);
    if (strcmp(argv[1], "query") == 0 && db != NULL)
        return cmd_query(db, issuer, n, queries);
    if (strcmp(argv[1], "load") == 0 && port > 0 && ocsp_path != NULL)
        return cmd_load(seconds, search_conns, paced);
    fprintf(stderr, "dir_bench: bad arguments\n");
    return 2;
}
