/* SPDX-License-Identifier: Apache-2.0 */
/* revoke_lat: how long a revocation takes to become visible. For each serial it runs
 * `pkiva revoke` (fork/exec, the operator's real path), and from the moment that process has
 * returned polls, over keep-alive connections to the running server, the OCSP GET answer for the
 * serial every --ocsp-poll-ms (until it says "revoked") and, for the first --crl-samples serials,
 * the full CRL every --crl-poll-ms (until it lists the serial). Revocations run one after another,
 * each waiting for its own results, so each measures a quiet server (no coalescing with a
 * previous one).
 *
 *   revoke_lat --pkiva BIN --data DIR --port P --issuer-cert PEM --serials FILE
 *              [--issuer demo-ca] [--count N] [--crl-samples M] [--ocsp-poll-ms 5]
 *              [--crl-poll-ms 20] [--timeout-s 90]
 *
 * Prints one line per revocation and a summary (nearest-rank percentiles):
 *   revoke_lat: ocsp n=N p50_ms=.. p99_ms=.. max_ms=..; crl n=M p50_ms=.. p99_ms=.. max_ms=..
 * Not run by ctest. */
#define _GNU_SOURCE /* memmem, strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REVOKE_LAT_MAX 10000
#define REVOKE_LAT_BODY_MAX (64 * 1024 * 1024)

struct conn {
    int fd;
    int port;
    unsigned char *buf; /* response bytes: headers, then the body */
    size_t cap;
};

static double now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
    struct timespec ts;
    if (ms <= 0)
        return;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (double)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int conn_open(struct conn *c)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
    int one = 1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    (void)setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* latency only */
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        (void)close(c->fd); /* failed connect */
        c->fd = -1;
        return -1;
    }
    return 0;
}

/* One GET on the keep-alive connection (reopened when the server closed it). Returns the HTTP
 * status and sets *body / *body_len into c->buf, or -1. */
static int http_get(struct conn *c, const char *path, const unsigned char **body, size_t *body_len)
{
    char req[4096];
    int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path);
    size_t have = 0, head = 0, want = 0;
    int status = -1;

    if (n <= 0 || (size_t)n >= sizeof(req))
        return -1;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->fd < 0 && conn_open(c) != 0)
            return -1;
        if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) == n)
            break;
        (void)close(c->fd); /* stale keep-alive connection: retry once on a new one */
        c->fd = -1;
    }
    if (c->fd < 0)
        return -1;
    for (;;) {
        ssize_t r;
        if (have == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 65536;
            unsigned char *p = cap <= REVOKE_LAT_BODY_MAX + 65536 ? realloc(c->buf, cap) : NULL;
            if (p == NULL)
                goto fail;
            c->buf = p;
            c->cap = cap;
        }
        r = recv(c->fd, c->buf + have, c->cap - have, 0);
        if (r <= 0)
            goto fail;
        have += (size_t)r;
        if (head == 0) {
            unsigned char *end = memmem(c->buf, have, "\r\n\r\n", 4);
            const char *cl;
            if (end == NULL)
                continue;
            head = (size_t)(end - c->buf) + 4;
            c->buf[head - 1] = '\0'; /* headers as a string (the final LF is not needed) */
            if (sscanf((const char *)c->buf, "HTTP/1.%*d %d", &status) != 1)
                goto fail;
            cl = strcasestr((const char *)c->buf, "\r\nContent-Length:");
            if (cl == NULL)
                goto fail;
            want = strtoul(cl + 17, NULL, 10);
            if (want > REVOKE_LAT_BODY_MAX)
                goto fail;
        }
        if (head != 0 && have >= head + want)
            break;
    }
    *body = c->buf + head;
    *body_len = want;
    return status;
fail:
    (void)close(c->fd); /* the next call reconnects */
    c->fd = -1;
    return -1;
}

/* OCSP status of id in a DER response: V_OCSP_CERTSTATUS_*, or -1. */
static int ocsp_status(const unsigned char *der, size_t len, OCSP_CERTID *id)
{
    const unsigned char *p = der;
    OCSP_RESPONSE *resp = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
    OCSP_BASICRESP *basic = NULL;
    int status = -1, reason = 0;

    if (resp == NULL || OCSP_response_status(resp) != OCSP_RESPONSE_STATUS_SUCCESSFUL)
        goto out;
    basic = OCSP_response_get1_basic(resp);
    if (basic == NULL || OCSP_resp_find_status(basic, id, &status, &reason, NULL, NULL, NULL) != 1)
        status = -1;
out:
    OCSP_BASICRESP_free(basic);
    OCSP_RESPONSE_free(resp);
    return status;
}

static int crl_lists(const unsigned char *der, size_t len, const ASN1_INTEGER *serial)
{
    const unsigned char *p = der;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)len);
    X509_REVOKED *rev = NULL;
    int found = crl != NULL && X509_CRL_get0_by_serial(crl, &rev, serial) == 1;
    X509_CRL_free(crl);
    return found;
}

/* "/" + url-encoded base64 of a one-CertID request without nonce. */
static int get_path(OCSP_CERTID *id, char *out, size_t out_max)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *copy = OCSP_CERTID_dup(id);
    unsigned char *der = NULL, b64[2048];
    int len, b64_len, rc = -1;
    size_t o = 0;

    if (req == NULL || copy == NULL || OCSP_request_add0_id(req, copy) == NULL)
        goto out;
    copy = NULL; /* owned by req */
    len = i2d_OCSP_REQUEST(req, &der);
    if (len <= 0 || (len + 2) / 3 * 4 >= (int)sizeof(b64))
        goto out;
    b64_len = EVP_EncodeBlock(b64, der, len);
    out[o++] = '/';
    for (int i = 0; i < b64_len; i++) {
        const char *esc = b64[i] == '+'   ? "%2B"
                          : b64[i] == '/' ? "%2F"
                          : b64[i] == '=' ? "%3D"
                                          : NULL;
        if (o + 4 >= out_max)
            goto out;
        if (esc != NULL) {
            memcpy(out + o, esc, 3);
            o += 3;
        } else {
            out[o++] = (char)b64[i];
        }
    }
    out[o] = '\0';
    rc = 0;
out:
    OCSP_CERTID_free(copy);
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    return rc;
}

static int run_revoke(const char *pkiva, const char *data, const char *issuer, const char *serial)
{
    int status = 0;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            (void)dup2(null, 1); /* keep the bench output readable; errors still go to stderr */
        execl(pkiva, pkiva, "revoke", "--data", data, "--issuer", issuer, "--serial", serial,
              "--reason", "keyCompromise", (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double p)
{
    int rank = (int)(p / 100.0 * n + 0.999999);
    if (n == 0)
        return 0;
    if (rank < 1)
        rank = 1;
    return v[(rank > n ? n : rank) - 1];
}

int main(int argc, char **argv)
{
    const char *pkiva = NULL, *data = NULL, *issuer_pem = NULL, *serials_file = NULL;
    const char *issuer = "demo-ca";
    int port = 0, count = 10, crl_samples = 10;
    double ocsp_poll = 5, crl_poll = 20, timeout_s = 90;
    static double ocsp_ms[REVOKE_LAT_MAX], crl_ms[REVOKE_LAT_MAX];
    int n_ocsp = 0, n_crl = 0;
    struct conn ocsp_conn = {.fd = -1}, crl_conn = {.fd = -1};
    char crl_path[256], line[256];
    X509 *ca = NULL;
    FILE *f;

    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (strcmp(a, "--pkiva") == 0)
            pkiva = v;
        else if (strcmp(a, "--data") == 0)
            data = v;
        else if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "--issuer-cert") == 0)
            issuer_pem = v;
        else if (strcmp(a, "--serials") == 0)
            serials_file = v;
        else if (strcmp(a, "--issuer") == 0)
            issuer = v;
        else if (strcmp(a, "--count") == 0)
            count = atoi(v);
        else if (strcmp(a, "--crl-samples") == 0)
            crl_samples = atoi(v);
        else if (strcmp(a, "--ocsp-poll-ms") == 0)
            ocsp_poll = atof(v);
        else if (strcmp(a, "--crl-poll-ms") == 0)
            crl_poll = atof(v);
        else if (strcmp(a, "--timeout-s") == 0)
            timeout_s = atof(v);
        else
            goto usage;
    }
    if (pkiva == NULL || data == NULL || issuer_pem == NULL || serials_file == NULL || port <= 0 ||
        count < 1 || count > REVOKE_LAT_MAX || crl_samples < 0 || ocsp_poll <= 0 || crl_poll <= 0)
        goto usage;
    ocsp_conn.port = crl_conn.port = port;
    (void)snprintf(crl_path, sizeof(crl_path), "/crl/%s.crl", issuer);
    f = fopen(issuer_pem, "r");
    ca = f != NULL ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f != NULL)
        (void)fclose(f); /* read-only */
    if (ca == NULL) {
        fprintf(stderr, "revoke_lat: cannot read %s\n", issuer_pem);
        return 1;
    }
    f = fopen(serials_file, "r");
    if (f == NULL) {
        fprintf(stderr, "revoke_lat: cannot read %s\n", serials_file);
        return 1;
    }
    for (int i = 0; i < count; i++) {
        char path[4096];
        BIGNUM *bn = NULL;
        ASN1_INTEGER *serial = NULL;
        OCSP_CERTID *id = NULL;
        const unsigned char *body;
        size_t body_len;
        double t0, deadline, next_ocsp, next_crl, ocsp_seen = -1, crl_seen = -1;
        int want_crl = i < crl_samples;

        if (fgets(line, sizeof(line), f) == NULL) {
            fprintf(stderr, "revoke_lat: only %d serials in %s\n", i, serials_file);
            return 1;
        }
        line[strcspn(line, "\r\n")] = '\0';
        if (BN_hex2bn(&bn, line) == 0 || (serial = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
            (id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(ca),
                                   X509_get0_pubkey_bitstr(ca), serial)) == NULL ||
            get_path(id, path, sizeof(path)) != 0) {
            fprintf(stderr, "revoke_lat: bad serial '%s'\n", line);
            return 1;
        }
        /* The certificate must be known and good first, or the measurement means nothing. */
        if (http_get(&ocsp_conn, path, &body, &body_len) != 200 ||
            ocsp_status(body, body_len, id) != V_OCSP_CERTSTATUS_GOOD) {
            fprintf(stderr, "revoke_lat: serial %s is not 'good' before its revocation\n", line);
            return 1;
        }
        if (run_revoke(pkiva, data, issuer, line) != 0) {
            fprintf(stderr, "revoke_lat: pkiva revoke failed for %s\n", line);
            return 1;
        }
        t0 = now_ms();
        deadline = t0 + timeout_s * 1000;
        next_ocsp = next_crl = t0;
        while (ocsp_seen < 0 || (want_crl && crl_seen < 0)) {
            double t = now_ms(), wake;
            if (t > deadline) {
                fprintf(stderr,
                        "revoke_lat: serial %s not visible within %.0f s (ocsp %s, crl %s)\n", line,
                        timeout_s, ocsp_seen < 0 ? "no" : "yes", crl_seen < 0 ? "no" : "yes");
                return 1;
            }
            if (ocsp_seen < 0 && t >= next_ocsp) {
                if (http_get(&ocsp_conn, path, &body, &body_len) == 200 &&
                    ocsp_status(body, body_len, id) == V_OCSP_CERTSTATUS_REVOKED)
                    ocsp_seen = now_ms() - t0;
                next_ocsp = t + ocsp_poll;
            }
            if (want_crl && crl_seen < 0 && t >= next_crl) {
                if (http_get(&crl_conn, crl_path, &body, &body_len) == 200 &&
                    crl_lists(body, body_len, serial))
                    crl_seen = now_ms() - t0;
                next_crl = t + crl_poll;
            }
            wake = ocsp_seen < 0 ? next_ocsp : 1e300;
            if (want_crl && crl_seen < 0 && next_crl < wake)
                wake = next_crl;
            if (wake < 1e300)
                sleep_ms(wake - now_ms());
        }
        ocsp_ms[n_ocsp++] = ocsp_seen;
        if (want_crl)
            crl_ms[n_crl++] = crl_seen;
        printf("  revocation %3d serial %s: OCSP %.1f ms", i + 1, line, ocsp_seen);
        if (want_crl)
            printf(", CRL %.1f ms", crl_seen);
        printf("\n");
        fflush(stdout);
        OCSP_CERTID_free(id);
        ASN1_INTEGER_free(serial);
        BN_free(bn);
    }
    (void)fclose(f); /* read-only */
    qsort(ocsp_ms, (size_t)n_ocsp, sizeof(double), cmp_double);
    qsort(crl_ms, (size_t)n_crl, sizeof(double), cmp_double);
    printf("revoke_lat: ocsp n=%d p50_ms=%.1f p99_ms=%.1f max_ms=%.1f; crl n=%d p50_ms=%.1f "
           "p99_ms=%.1f max_ms=%.1f\n",
           n_ocsp, pct(ocsp_ms, n_ocsp, 50), pct(ocsp_ms, n_ocsp, 99), ocsp_ms[n_ocsp - 1], n_crl,
           pct(crl_ms, n_crl, 50), pct(crl_ms, n_crl, 99), n_crl ? crl_ms[n_crl - 1] : 0.0);
    X509_free(ca);
    free(ocsp_conn.buf);
    free(crl_conn.buf);
    return 0;
usage:
    fprintf(stderr,
            "usage: revoke_lat --pkiva BIN --data DIR --port P --issuer-cert PEM --serials FILE "
            "[--issuer NAME] [--count N] [--crl-samples M] [--ocsp-poll-ms MS] "
            "[--crl-poll-ms MS] [--timeout-s S]\n");
    return 2;
}
