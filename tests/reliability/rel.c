/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the reliability and security suites (see rel.h). Failures abort the current
 * criterion test with a message. */
#include "rel.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void rel_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

long long rel_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int rel_sh(const struct rel_server *s, char *out, size_t out_len, const char *fmt, ...)
{
    char cmd[8192];
    char full[8600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && export SOFTHSM2_CONF=%s/hsm/softhsm2.conf && %s",
             s->data, s->data, cmd);
    return ts_run(full, out, out_len);
}

void rel_setup(struct rel_server *s)
{
    char out[8192], path[400];
    FILE *f;
    memset(s, 0, sizeof(*s));
    cr_assert_eq(ts_tmpdir(s->dir, sizeof(s->dir)), 0);
    snprintf(s->data, sizeof(s->data), "%s/var", s->dir);
    snprintf(s->log, sizeof(s->log), "%s/server.log", s->dir);
    s->port = ts_free_port();
    s->admin_port = ts_free_port();
    /* The first run is told the listeners, so the demo certificates' AIA and CRL distribution
     * points name this server (relying parties under test find it through them). */
    snprintf(path, sizeof(path),
             REL_PKIVA " init --data %s --listen 127.0.0.1:%d --admin-listen 127.0.0.1:%d 2>&1",
             s->data, s->port, s->admin_port);
    cr_assert_eq(ts_run(path, out, sizeof(out)), 0, "pkiva init: %s", out);
    snprintf(path, sizeof(path), "%s/admin.token", s->data);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(s->token, sizeof(s->token), f));
    fclose(f);
    s->token[strcspn(s->token, "\r\n")] = '\0';
    cr_assert_geq(strlen(s->token), 16);
    snprintf(path, sizeof(path), "%s/pki/issuing-ca.pem", s->data);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    s->issuer = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(s->issuer);
}

void rel_teardown(struct rel_server *s)
{
    if (s->pid > 0)
        rel_kill9(s);
    X509_free(s->issuer);
    s->issuer = NULL;
    if (getenv("PKIVA_KEEP_TEST_DIRS") == NULL)
        ts_rmrf(s->dir);
}

void rel_conf_append(struct rel_server *s, const char *text)
{
    char path[400];
    FILE *f;
    snprintf(path, sizeof(path), "%s/pkiva.conf", s->data);
    f = fopen(path, "a");
    cr_assert_not_null(f);
    fprintf(f, "\n%s\n", text);
    fclose(f);
}

static pid_t spawn(struct rel_server *s)
{
    char listen[64], admin[64];
    pid_t pid;
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", s->admin_port);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
        signal(SIGPIPE, SIG_DFL);
        if (s->nofile > 0) {
            struct rlimit rl = {(rlim_t)s->nofile,
                                (rlim_t)(s->nofile_hard > 0 ? s->nofile_hard : s->nofile)};
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                _exit(126);
        }
        execl(REL_PKIVA, "pkiva", "serve", "--data", s->data, "--listen", listen, "--admin-listen",
              admin, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void log_tail(const struct rel_server *s, char *out, size_t len)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "tail -20 %s", s->log);
    ts_run(cmd, out, len);
}

int rel_start(struct rel_server *s, int timeout_s)
{
    long long t0 = rel_now_ms();
    s->pid = spawn(s);
    while (rel_now_ms() - t0 < timeout_s * 1000LL) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            char log[8192] = "";
            s->pid = 0;
            log_tail(s, log, sizeof(log));
            cr_assert_fail("pkiva exited during start-up: %s", log);
        }
        if (rel_get(s->port, "/healthz", NULL, 0, 1000) == 200)
            return (int)(rel_now_ms() - t0);
        rel_sleep_ms(20);
    }
    cr_assert_fail("pkiva did not start within %d s", timeout_s);
    return -1;
}

int rel_run_to_exit(struct rel_server *s, int timeout_s)
{
    long long t0 = rel_now_ms();
    pid_t pid = spawn(s);
    int status = 0;
    while (rel_now_ms() - t0 < timeout_s * 1000LL) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        rel_sleep_ms(20);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    cr_assert_fail("pkiva did not exit within %d s", timeout_s);
    return -1;
}

int rel_stop(struct rel_server *s)
{
    int status = 0;
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 400; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        rel_sleep_ms(25);
    }
    rel_kill9(s);
    return -2;
}

void rel_kill9(struct rel_server *s)
{
    int status;
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
}

void rel_raise_nofile(int n)
{
    struct rlimit rl;
    cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur >= (rlim_t)n)
        return;
    if (rl.rlim_max < (rlim_t)n)
        rl.rlim_max = (rlim_t)n; /* we run as root in CI; otherwise this fails clearly */
    rl.rlim_cur = (rlim_t)n;
    cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0, "cannot raise RLIMIT_NOFILE to %d: %s", n,
                 strerror(errno));
}

long rel_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

static int parse_reply(char *buf, size_t got, char *body, size_t body_cap);

int rel_http(int port, const void *request, size_t len, char *body, size_t body_cap, int timeout_ms)
{
    struct sockaddr_in addr;
    char buf[65536];
    size_t got = 0, sent = 0;
    long long deadline = rel_now_ms() + timeout_ms;
    int fd;

    if (body != NULL && body_cap > 0)
        body[0] = '\0';
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return 0;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return 0;
    }
    for (;;) {
        struct pollfd pfd = {fd, POLLIN | (sent < len ? POLLOUT : 0), 0};
        long long left = deadline - rel_now_ms();
        ssize_t n;
        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        if ((pfd.revents & POLLOUT) && sent < len) {
            n = send(fd, (const char *)request + sent, len - sent, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN)
                break;
            if (n > 0)
                sent += (size_t)n;
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
            if (n <= 0 && !(n < 0 && errno == EAGAIN))
                break;
            if (n > 0)
                got += (size_t)n;
            if (got == sizeof(buf) - 1)
                break;
        }
    }
    close(fd);
    return parse_reply(buf, got, body, body_cap);
}

/* One request over TLS (the embedded default's admin listener: HTTPS, the server verified
 * against DATA/admin/admin-ca.pem, no client certificate) on a fresh connection. */
static int rel_https(const struct rel_server *s, const void *request, size_t len, char *body,
                     size_t body_cap, int timeout_ms)
{
    struct sockaddr_in addr;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    char buf[65536], ca[400];
    size_t got = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = -1;

    if (body != NULL && body_cap > 0)
        body[0] = '\0';
    /* SSL_write uses write(2): a server killed mid-request must not kill the test with SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    cr_assert_not_null(ctx);
    snprintf(ca, sizeof(ca), "%s/admin/admin-ca.pem", s->data);
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1, "%s", ca);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)s->admin_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        goto out;
    ssl = SSL_new(ctx);
    cr_assert_not_null(ssl);
    SSL_set1_host(ssl, "127.0.0.1");
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1 || SSL_write(ssl, request, (int)len) != (int)len)
        goto out;
    for (;;) {
        int n = SSL_read(ssl, buf + got, (int)(sizeof(buf) - 1 - got));
        if (n <= 0)
            break;
        got += (size_t)n;
        if (got == sizeof(buf) - 1)
            break;
    }
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return parse_reply(buf, got, body, body_cap);
}

static int parse_reply(char *buf, size_t got, char *body, size_t body_cap)
{
    int status = 0;
    const char *p;

    buf[got] = '\0';
    if (got < 12 || strncmp(buf, "HTTP/1.", 7) != 0)
        return 0;
    status = atoi(buf + 9);
    p = strstr(buf, "\r\n\r\n");
    if (body != NULL && body_cap > 0 && p != NULL) {
        size_t blen = got - (size_t)(p + 4 - buf);
        if (blen >= body_cap)
            blen = body_cap - 1;
        memcpy(body, p + 4, blen);
        body[blen] = '\0';
    }
    return status;
}

int rel_get(int port, const char *path, char *body, size_t body_cap, int timeout_ms)
{
    char req[1024];
    int n =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", path);
    return rel_http(port, req, (size_t)n, body, body_cap, timeout_ms);
}

int rel_admin(const struct rel_server *s, const char *path, const char *json,
              const char *auth_lines, char *body, size_t body_cap)
{
    char auth[256];
    size_t json_len = json ? strlen(json) : 0;
    size_t cap;
    char *req;
    int n, status;
    if (auth_lines == NULL) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", s->token);
        auth_lines = auth;
    }
    cap = json_len + strlen(auth_lines) + 1024;
    req = malloc(cap);
    cr_assert_not_null(req);
    n = snprintf(req, cap,
                 "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n%sContent-Type: "
                 "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                 json ? "POST" : "GET", path, auth_lines, json_len, json ? json : "");
    status = rel_admin_raw(s, req, (size_t)n, body, body_cap);
    free(req);
    return status;
}

int rel_admin_raw(const struct rel_server *s, const void *request, size_t len, char *body,
                  size_t body_cap)
{
    /* pkiva init makes the admin listener HTTPS (DATA/admin/); a data folder without it (a test
     * that removed the directives) is plain HTTP. */
    char conf[8192] = "";
    char conf_path[400];
    FILE *f;
    size_t got = 0;
    snprintf(conf_path, sizeof(conf_path), "%s/pkiva.conf", s->data);
    f = fopen(conf_path, "r");
    cr_assert_not_null(f);
    got = fread(conf, 1, sizeof(conf) - 1, f);
    fclose(f);
    conf[got] = '\0';
    if (strstr(conf, "\ntls_cert") != NULL)
        return rel_https(s, request, len, body, body_cap, 15000);
    return rel_http(s->admin_port, request, len, body, body_cap, 15000);
}

int rel_ocsp(const struct rel_server *s, const char *serial_hex, int nonce, int *reason)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    OCSP_CERTID *id = NULL, *id_copy = NULL;
    BIGNUM *bn = NULL;
    ASN1_INTEGER *serial = NULL;
    unsigned char *der = NULL;
    char *http = NULL;
    char resp[16384];
    const unsigned char *p;
    OCSP_RESPONSE * or = NULL;
    OCSP_BASICRESP *bs = NULL;
    int der_len, n, status = -1, cert_status = -1, why = -1;

    cr_assert_not_null(req);
    cr_assert(BN_hex2bn(&bn, serial_hex) > 0);
    serial = BN_to_ASN1_INTEGER(bn, NULL);
    id = OCSP_cert_id_new(EVP_sha1(), X509_get_subject_name(s->issuer),
                          X509_get0_pubkey_bitstr(s->issuer), serial);
    cr_assert_not_null(id);
    id_copy = OCSP_CERTID_dup(id);
    cr_assert_not_null(OCSP_request_add0_id(req, id));
    if (nonce)
        cr_assert_eq(OCSP_request_add1_nonce(req, NULL, -1), 1);
    der_len = i2d_OCSP_REQUEST(req, &der);
    cr_assert_gt(der_len, 0);
    http = malloc((size_t)der_len + 256);
    n = snprintf(http, 256,
                 "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: "
                 "application/ocsp-request\r\nContent-Length: %d\r\n\r\n",
                 der_len);
    memcpy(http + n, der, (size_t)der_len);
    /* Binary bodies: read the raw answer to find the DER after the headers. */
    {
        struct sockaddr_in addr;
        size_t got = 0, sent = 0, total = (size_t)n + (size_t)der_len;
        long long deadline = rel_now_ms() + 15000;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        memset(&addr, 0, sizeof(addr));
        addr.sin_family = AF_INET;
        addr.sin_port = htons((uint16_t)s->port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0) {
            struct timeval tv = {15, 0};
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            while (sent < total) {
                ssize_t w = send(fd, http + sent, total - sent, MSG_NOSIGNAL);
                if (w <= 0)
                    break;
                sent += (size_t)w;
            }
            while (got < sizeof(resp) && rel_now_ms() < deadline) {
                ssize_t r = recv(fd, resp + got, sizeof(resp) - got, 0);
                if (r <= 0)
                    break;
                got += (size_t)r;
            }
        }
        if (fd >= 0)
            close(fd);
        p = NULL;
        for (size_t i = 0; i + 4 <= got; i++)
            if (memcmp(resp + i, "\r\n\r\n", 4) == 0) {
                p = (const unsigned char *)resp + i + 4;
                break;
            }
        if (got > 12 && strncmp(resp, "HTTP/1.1 200", 12) == 0 && p != NULL)
            or = d2i_OCSP_RESPONSE(NULL, &p,
                                   (long)(got - (size_t)(p - (const unsigned char *)resp)));
    }
    if (or != NULL) {
        int rs = OCSP_response_status(or);
        if (rs == OCSP_RESPONSE_STATUS_TRYLATER)
            status = 3;
        else if (rs == OCSP_RESPONSE_STATUS_SUCCESSFUL && (bs = OCSP_response_get1_basic(or)) &&
                 OCSP_resp_find_status(bs, id_copy, &cert_status, &why, NULL, NULL, NULL) == 1)
            status = cert_status == V_OCSP_CERTSTATUS_GOOD      ? 0
                     : cert_status == V_OCSP_CERTSTATUS_REVOKED ? 1
                                                                : 2;
    }
    if (reason != NULL)
        *reason = why;
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(or);
    OCSP_CERTID_free(id_copy);
    OCSP_REQUEST_free(req);
    OPENSSL_free(der);
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    free(http);
    return status;
}

void rel_register_serials(struct rel_server *s, int n, char (*serials)[33])
{
    char path[400], out[8192];
    FILE *f;
    snprintf(path, sizeof(path), "%s/index.txt", s->dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < n; i++) {
        unsigned char rnd[16];
        cr_assert_eq(RAND_bytes(rnd, sizeof(rnd)), 1);
        rnd[0] = (unsigned char)(0x10 | (rnd[0] & 0x3f)); /* positive, 16 octets, no leading 0 */
        for (int j = 0; j < 16; j++)
            snprintf(serials[i] + 2 * j, 3, "%02X", rnd[j]);
        fprintf(f, "V\t351231235959Z\t\t%s\tunknown\t/CN=reliability %d\n", serials[i], i);
    }
    fclose(f);
    cr_assert_eq(rel_sh(s, out, sizeof(out),
                        REL_PKIVA " import --data %s --index %s "
                                  "--issuer demo-ca 2>&1",
                        s->data, path),
                 0, "import: %s", out);
}
