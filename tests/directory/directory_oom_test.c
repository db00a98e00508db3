/* SPDX-License-Identifier: Apache-2.0 */
/* Out of memory along the directory's whole request path (STYLE: fail the Nth allocation): the
 * real HTTP server with the directory registered on it, its store worker pool on a real SQLite
 * file holding one certificate, and a real TCP client. For each request kind (a search answered as
 * JSON, a certificate's page, a status check of an uploaded certificate), every allocation that
 * serving it makes fails once in turn, in whichever thread it happens (loop, directory worker,
 * SQLite, OpenSSL). Each time the client must get the complete right answer, a 500 or 503, or a
 * closed connection, never wait for its read timeout (a request dropped); and the next request is
 * answered normally. The ASan build checks for leaks at exit. */
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <directory/directory.h>
#include <http/http.h>
#include <store/store.h>
#include <util/util.h>

#include "support.h"

static char g_dir[256];
static struct http_server *g_srv;
static struct directory *g_directory;
static pthread_t g_runner;
static int g_port;
static X509 *g_ca;
static char g_serial[80];          /* the leaf's serial, lower-case hex */
static unsigned char g_leaf[4096]; /* its DER */
static size_t g_leaf_len;
static int64_t g_issuer_id;

static void *run_thread(void *arg)
{
    (void)http_server_run(arg); /* its result is checked by the stop below */
    return NULL;
}

static X509 *read_pem(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = NULL;

    cr_assert_not_null(f, "%s", path);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f); /* read only */
    cr_assert_not_null(x, "%s", path);
    return x;
}

/* A CA and one leaf signed by it (openssl), the leaf registered with its DER in a fresh store. */
static void make_store(const char *db)
{
    char cmd[2048], out[4096];
    unsigned char *p = g_leaf, *ca_der = NULL;
    struct store *s = NULL;
    X509 *leaf = NULL;
    const ASN1_INTEGER *sn = NULL;
    BIGNUM *bn = NULL;
    char *hex = NULL;
    unsigned char serial[32];
    int ca_len = 0, n = 0;

    (void)snprintf(cmd, sizeof(cmd),
                   "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                   "-keyout ca.key -out ca.pem -subj '/CN=OOM Test CA/O=pkiva' -days 30 && "
                   "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "
                   "leaf.key -out leaf.csr -subj '/CN=Nguyen Van Test/O=So Tai chinh' && "
                   "printf 'subjectAltName=email:test@example.gov.vn\\n' > ext.cnf && "
                   "openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
                   "-extfile ext.cnf -days 30 -out leaf.pem 2>&1",
                   g_dir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    (void)snprintf(cmd, sizeof(cmd), "%s/ca.pem", g_dir);
    g_ca = read_pem(cmd);
    (void)snprintf(cmd, sizeof(cmd), "%s/leaf.pem", g_dir);
    leaf = read_pem(cmd);
    n = i2d_X509(leaf, NULL);
    cr_assert(n > 0 && (size_t)n <= sizeof(g_leaf));
    g_leaf_len = (size_t)i2d_X509(leaf, &p);
    sn = X509_get0_serialNumber(leaf);
    bn = ASN1_INTEGER_to_BN(sn, NULL);
    hex = BN_bn2hex(bn);
    for (size_t i = 0; hex[i] != '\0' && i + 1 < sizeof(g_serial); i++)
        g_serial[i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
    n = BN_bn2bin(bn, serial);
    ca_len = i2d_X509(g_ca, &ca_der);
    cr_assert_gt(ca_len, 0);
    cr_assert_eq(store_open_blocking(db, STORE_OPEN_CREATE, &s), 0);
    cr_assert_eq(store_issuer_put_blocking(s, "oom-ca", ca_der, (size_t)ca_len, &g_issuer_id), 0);
    struct store_cert_new cn = {.issuer_id = g_issuer_id,
                                .serial = serial,
                                .serial_len = (size_t)n,
                                .not_before = 1700000000,
                                .not_after = 2000000000,
                                .cert_der = g_leaf,
                                .cert_len = g_leaf_len,
                                .subject = "CN=Nguyen Van Test,O=So Tai chinh"};
    cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
    store_close(s);
    OPENSSL_free(hex);
    OPENSSL_free(ca_der);
    BN_free(bn);
    X509_free(leaf);
}

static void setup(void)
{
    struct http_config hc;
    struct directory_config dc;
    struct directory_params dp;
    struct directory_issuer is;
    char db[300];

    cr_assert_eq(ts_tmpdir(g_dir, sizeof(g_dir)), 0);
    (void)snprintf(db, sizeof(db), "%s/pkiva.db", g_dir);
    make_store(db);
    memset(&is, 0, sizeof(is));
    is.store_issuer_id = g_issuer_id;
    is.name = "oom-ca";
    is.cert = g_ca;
    directory_config_default(&dc);
    dc.rate_per_minute = 1000000; /* every request reaches the workers */
    dc.rate_burst = 1000000;
    memset(&dp, 0, sizeof(dp));
    dp.store_path = db;
    dp.public_url = "http://127.0.0.1";
    dp.ocsp_url = "http://127.0.0.1/ocsp";
    dp.issuers = &is;
    dp.n_issuers = 1;
    cr_assert_eq(directory_new(&dc, &dp, &g_directory), 0);
    memset(&hc, 0, sizeof(hc));
    hc.workers = 1;
    hc.n_listeners = 1;
    (void)snprintf(hc.listeners[0].host, sizeof(hc.listeners[0].host), "127.0.0.1");
    hc.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&hc.limits);
    hc.server_header = "pkiva-test";
    cr_assert_eq(http_server_new(&hc, &g_srv), 0);
    cr_assert_eq(directory_register(g_directory, g_srv), 0);
    cr_assert_eq(http_server_start(g_srv), 0);
    g_port = http_server_port(g_srv, 0);
    cr_assert_gt(g_port, 0);
    cr_assert_eq(pthread_create(&g_runner, NULL, run_thread, g_srv), 0);
}

static void teardown(void)
{
    if (g_srv != NULL) {
        http_server_stop(g_srv);
        cr_assert_eq(pthread_join(g_runner, NULL), 0);
        http_server_free(g_srv);
        g_srv = NULL;
    }
    directory_free(g_directory);
    g_directory = NULL;
    X509_free(g_ca);
    g_ca = NULL;
    ts_rmrf(g_dir);
}

struct reply {
    int status;    /* 0: the connection closed before a status line */
    int complete;  /* the whole body (Content-Length) arrived */
    int timed_out; /* the server neither answered nor closed */
    char data[1 << 16];
    size_t len;
    const char *body;
};

/* One request on a fresh connection ("Connection: close"), read to the end. Makes no allocation
 * (it runs while an allocation failure is armed). */
static void exchange(const void *request, size_t request_len, struct reply *r)
{
    struct sockaddr_in sin;
    struct timeval tv = {.tv_sec = 60}; /* far beyond any answer; a timeout is a dropped request */
    const char *p = request;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(r, 0, sizeof(*r));
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)g_port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        r->status = -1;
        if (fd >= 0)
            (void)close(fd); /* test socket */
        return;
    }
    while (request_len > 0) {
        ssize_t n = send(fd, p, request_len, MSG_NOSIGNAL);
        if (n <= 0)
            break; /* the server may close early: read what it said */
        p += n;
        request_len -= (size_t)n;
    }
    for (;;) {
        ssize_t n = recv(fd, r->data + r->len, sizeof(r->data) - 1 - r->len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            r->timed_out = 1;
        if (n <= 0)
            break;
        r->len += (size_t)n;
        if (r->len + 1 >= sizeof(r->data))
            break;
    }
    (void)close(fd); /* test socket */
    r->data[r->len] = '\0';
    if (r->len > 12 && strncmp(r->data, "HTTP/1.1 ", 9) == 0)
        r->status = atoi(r->data + 9);
    const char *end = strstr(r->data, "\r\n\r\n");
    const char *cl = strstr(r->data, "\r\nContent-Length: ");
    if (end != NULL && cl != NULL && cl < end) {
        r->body = end + 4;
        r->complete = (size_t)atol(cl + 18) == r->len - (size_t)(r->body - r->data);
    }
}

/* 1 when two answers are the same page: byte for byte, but that a digit may differ from a digit (a
 * page shows the time it was made). Anything left out or cut changes the length. */
static int same_page(const char *a, const char *b)
{
    for (; *a != '\0' && *b != '\0'; a++, b++)
        if (*a != *b && !(*a >= '0' && *a <= '9' && *b >= '0' && *b <= '9'))
            return 0;
    return *a == *b;
}

/* Fails every allocation of one request in turn; want is a string the complete answer holds. Every
 * 200 must be the page served without a failure (same_page). */
static void every_allocation(const char *what, const void *request, size_t request_len,
                             const char *want)
{
    static struct reply r, after;
    int completed = 0, refused = 0, closed = 0;
    long n;

    exchange(request, request_len, &after); /* warm: statements prepared, caches filled */
    cr_assert_eq(after.status, 200, "%s: %.500s", what, after.data);
    cr_assert(after.complete && strstr(after.body, want) != NULL, "%s: %.2000s", what, after.data);
    for (n = 1; n < 20000; n++) {
        int hit;
        ts_failalloc_arm(n);
        exchange(request, request_len, &r);
        hit = ts_failalloc_disarm();
        /* The server is intact: the next request gets its full answer. */
        exchange(request, request_len, &after);
        cr_assert(after.status == 200 && after.complete && strstr(after.body, want) != NULL,
                  "%s: allocation %ld broke the server: %.500s", what, n, after.data);
        cr_assert(!r.timed_out, "%s, allocation %ld: the server neither answered nor closed", what,
                  n);
        cr_assert_neq(r.status, -1, "%s, allocation %ld: cannot connect", what, n);
        if (r.status == 200) {
            cr_assert(r.complete && same_page(r.body, after.body),
                      "%s, allocation %ld: a 200 with another body: %.3000s", what, n, r.body);
            completed++;
        } else if (r.status != 0) {
            cr_assert(r.status == 500 || r.status == 503, "%s, allocation %ld: status %d: %.500s",
                      what, n, r.status, r.data);
            cr_assert(r.complete, "%s, allocation %ld: a cut error answer", what, n);
            refused++;
        } else {
            cr_assert_eq(r.len, 0, "%s, allocation %ld: a cut answer: %.500s", what, n, r.data);
            closed++;
        }
        if (!hit)
            break; /* served without reaching allocation n: every one was tried */
    }
    cr_log_info("directory %s: %ld allocations failed in turn; %d answered, %d refused (500/503), "
                "%d closed",
                what, n - 1, completed, refused, closed);
    fprintf(stderr,
            "directory %s: %ld allocations failed in turn; %d answered, %d refused, %d closed\n",
            what, n - 1, completed, refused, closed);
    cr_assert_gt(n, 10, "%s: only %ld allocations?", what, n - 1);
    cr_assert_gt(refused + closed, 0, "%s: no failure ever showed", what);
}

TestSuite(directory_oom, .init = setup, .fini = teardown, .timeout = 900);

Test(directory_oom, a_search)
{
    char request[512];
    int len = snprintf(request, sizeof(request),
                       "GET /directory/search?q=nguyen+test&format=json HTTP/1.1\r\nHost: t\r\n"
                       "Connection: close\r\n\r\n");
    every_allocation("search", request, (size_t)len, g_serial);
}

Test(directory_oom, a_certificate_page)
{
    char request[512];
    int len = snprintf(request, sizeof(request),
                       "GET /directory/cert/oom-ca/%s?lang=en HTTP/1.1\r\nHost: t\r\n"
                       "Connection: close\r\n\r\n",
                       g_serial);
    every_allocation("certificate page", request, (size_t)len, "test@example.gov.vn");
}

Test(directory_oom, a_status_check_of_an_upload)
{
    static char request[8192];
    int len = snprintf(request, sizeof(request),
                       "POST /directory/check?format=json HTTP/1.1\r\nHost: t\r\n"
                       "Content-Type: application/pkix-cert\r\nContent-Length: %zu\r\n"
                       "Connection: close\r\n\r\n",
                       g_leaf_len);
    cr_assert_lt((size_t)len + g_leaf_len, sizeof(request));
    memcpy(request + len, g_leaf, g_leaf_len);
    every_allocation("status check", request, (size_t)len + g_leaf_len, g_serial);
}
