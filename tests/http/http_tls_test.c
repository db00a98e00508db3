/* SPDX-License-Identifier: Apache-2.0 */
/* TLS on http listeners, over real TCP on 127.0.0.1 with real clients: curl and openssl s_client
 * for handshakes and client certificates (verified, untrusted, expired, absent), an in-process
 * OpenSSL client for pipelining and large responses, and raw sockets for plain HTTP sent to a TLS
 * port and for a handshake that stalls. Keys and certificates are made per test with openssl. */
#include <http/http.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char g_dir[256];
static struct http_server *g_srv;
static pthread_t g_runner;
static int g_run_rc = -100;
static int g_port;     /* public listener: plain HTTP */
static int g_tls_port; /* admin listener: TLS, client certificates optional */
static struct util_blob *g_blob;

/* Runs a shell command in the test folder; returns its exit status, output in out. */
static int sh(char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t out_len, const char *fmt, ...)
{
    char cmd[4096], full[4400];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    (void)snprintf(full, sizeof(full), "cd %s && %s", g_dir, cmd);
    return ts_run(full, out, out_len);
}

/* A CA; a server certificate for 127.0.0.1 and localhost; a client certificate it issued; one it
 * issued that has expired; two it issued for the same key without EKU clientAuth (no EKU at all,
 * serverAuth only); a self-signed client certificate nobody trusts; and a second key that
 * matches no certificate. */
static void make_pki(void)
{
    char out[8192];

    cr_assert_eq(ts_tmpdir(g_dir, sizeof(g_dir)), 0);
    cr_assert_eq(sh(out, sizeof(out),
                    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout ca.key -out ca.pem -subj '/O=pkiva test/CN=Test CA' -days 30 && "
                    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
                    "extendedKeyUsage=serverAuth\\n' > server.ext && "
                    "printf 'extendedKeyUsage=clientAuth\\n' > client.ext && "
                    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout server.key -out server.csr -subj '/CN=127.0.0.1' && "
                    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -days 30 "
                    "-extfile server.ext -out server.pem && "
                    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout client.key -out client.csr -subj '/O=pkiva test/CN=operator one' && "
                    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -days 30 "
                    "-extfile client.ext -out client.pem && "
                    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -days -1 "
                    "-extfile client.ext -out expired.pem && "
                    "printf 'basicConstraints=CA:FALSE\\n' > noeku.ext && "
                    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -days 30 "
                    "-extfile noeku.ext -out noeku.pem && "
                    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -days 30 "
                    "-extfile server.ext -out serverauth.pem && "
                    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout rogue.key -out rogue.pem -subj '/O=pkiva test/CN=operator one' "
                    "-days 30 && "
                    "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 "
                    "-out other.key 2>&1"),
                 0, "%s", out);
}

static void who_handler(void *ctx, struct http_request *req)
{
    char subject[512] = "", body[700];
    int verified = http_request_peer_cert_verified(req, subject, sizeof(subject));

    (void)snprintf(body, sizeof(body), "tls=%d verified=%d subject=%s\n", http_request_tls(req),
                   verified, subject);
    http_request_respond_text(req, 200, "text/plain", body);
}

static void blob_handler(void *ctx, struct http_request *req)
{
    struct http_response resp = {0};

    resp.status = 200;
    resp.content_type = "application/octet-stream";
    resp.body = g_blob;
    http_request_respond(req, &resp);
}

static void echo_handler(void *ctx, struct http_request *req)
{
    struct http_response resp = {0};
    size_t len = 0;
    const unsigned char *body = http_request_body(req, &len);

    resp.status = 200;
    resp.content_type = "application/octet-stream";
    resp.body_bytes = body;
    resp.body_len = len;
    http_request_respond(req, &resp);
}

static void *run_thread(void *arg)
{
    g_run_rc = http_server_run(arg);
    return NULL;
}

static void config(struct http_config *cfg, char paths[3][400], int with_client_ca)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 2;
    cfg->n_listeners = 2;
    (void)snprintf(cfg->listeners[0].host, sizeof(cfg->listeners[0].host), "127.0.0.1");
    cfg->listeners[0].kind = HTTP_PUBLIC;
    (void)snprintf(cfg->listeners[1].host, sizeof(cfg->listeners[1].host), "127.0.0.1");
    cfg->listeners[1].kind = HTTP_ADMIN;
    (void)snprintf(paths[0], sizeof(paths[0]), "%s/server.pem", g_dir);
    (void)snprintf(paths[1], sizeof(paths[1]), "%s/server.key", g_dir);
    (void)snprintf(paths[2], sizeof(paths[2]), "%s/ca.pem", g_dir);
    cfg->listeners[1].tls_cert_file = paths[0];
    cfg->listeners[1].tls_key_file = paths[1];
    cfg->listeners[1].tls_client_ca_file = with_client_ca ? paths[2] : NULL;
    http_limits_default(&cfg->limits);
    cfg->limits.header_timeout_ms = 400;
    cfg->server_header = "pkiva-test";
}

static void start_with(int with_client_ca)
{
    struct http_config cfg;
    char paths[3][400];

    make_pki();
    {
        unsigned char *bytes = malloc(300000);
        cr_assert_not_null(bytes);
        for (size_t i = 0; i < 300000; i++)
            bytes[i] = (unsigned char)('a' + i % 26);
        g_blob = util_blob_new(bytes, 300000);
        free(bytes);
    }
    cr_assert_not_null(g_blob);
    config(&cfg, paths, with_client_ca);
    cr_assert_eq(http_server_new(&cfg, &g_srv), 0);
    /* The strings were read by http_server_new; the server must not keep pointers to them. */
    memset(paths, 0, sizeof(paths));
    cr_assert_eq(
        http_server_route(g_srv, HTTP_PUBLIC | HTTP_ADMIN, "GET", "/who", who_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_ADMIN, "GET", "/blob", blob_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_ADMIN, "POST", "/echo", echo_handler, NULL), 0);
    cr_assert_eq(http_server_start(g_srv), 0);
    g_port = http_server_port(g_srv, 0);
    g_tls_port = http_server_port(g_srv, 1);
    cr_assert_eq(pthread_create(&g_runner, NULL, run_thread, g_srv), 0);
}

static void start_mtls(void)
{
    start_with(1);
}

static void start_tls_only(void)
{
    start_with(0);
}

static void stop(void)
{
    http_server_stop(g_srv);
    cr_assert_eq(pthread_join(g_runner, NULL), 0);
    cr_assert_eq(g_run_rc, 0);
    http_server_free(g_srv);
    g_srv = NULL;
    util_blob_unref(g_blob);
    g_blob = NULL;
    ts_rmrf(g_dir);
}

static int curl(char *out, size_t out_len, const char *extra, int port, const char *path)
{
    return sh(out, out_len, "curl -sS --max-time 5 --cacert ca.pem %s https://127.0.0.1:%d%s 2>&1",
              extra, port, path);
}

TestSuite(http_tls, .timeout = 60);

Test(http_tls, curl_over_tls_plain_listener_stays_plain, .init = start_mtls, .fini = stop)
{
    char out[8192];
    struct http_stats st;

    /* Two requests on one connection (curl reuses it): keep-alive over TLS. */
    cr_assert_eq(sh(out, sizeof(out),
                    "curl -sS --max-time 5 --cacert ca.pem https://127.0.0.1:%d/who "
                    "https://localhost:%d/who 2>&1",
                    g_tls_port, g_tls_port),
                 0, "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\ntls=1 verified=0 subject=\n");
    /* The public listener of the same server is plain HTTP. */
    cr_assert_eq(sh(out, sizeof(out), "curl -sS --max-time 5 http://127.0.0.1:%d/who 2>&1", g_port),
                 0, "%s", out);
    cr_assert_str_eq(out, "tls=0 verified=0 subject=\n");
    /* A client that does not trust the server's CA refuses it. */
    cr_assert_neq(
        sh(out, sizeof(out), "curl -sS --max-time 5 https://127.0.0.1:%d/who 2>&1", g_tls_port), 0,
        "%s", out);
    http_server_stats(g_srv, &st);
    cr_assert_geq(st.tls_handshakes, 2, "%llu", (unsigned long long)st.tls_handshakes);
}

Test(http_tls, client_certificate_verified_untrusted_expired_absent, .init = start_mtls,
     .fini = stop)
{
    char out[8192];

    cr_assert_eq(curl(out, sizeof(out), "--cert client.pem --key client.key", g_tls_port, "/who"),
                 0, "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=1 subject=CN=operator one,O=pkiva test\n");
    /* The same name, self-signed: the handshake succeeds (certificates are optional) but it
     * proves nothing. */
    cr_assert_eq(curl(out, sizeof(out), "--cert rogue.pem --key rogue.key", g_tls_port, "/who"), 0,
                 "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n");
    cr_assert_eq(curl(out, sizeof(out), "--cert expired.pem --key client.key", g_tls_port, "/who"),
                 0, "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n");
    cr_assert_eq(curl(out, sizeof(out), "", g_tls_port, "/who"), 0, "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n");
    /* Issued by the trusted CA, in validity, but not for client authentication (issue 15.10):
     * no EKU at all, or serverAuth alone, proves nothing. */
    cr_assert_eq(curl(out, sizeof(out), "--cert noeku.pem --key client.key", g_tls_port, "/who"), 0,
                 "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n", "no EKU: %s", out);
    cr_assert_eq(
        curl(out, sizeof(out), "--cert serverauth.pem --key client.key", g_tls_port, "/who"), 0,
        "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n", "serverAuth only: %s", out);
    /* openssl s_client, TLS 1.2 and 1.3, with the client certificate. */
    for (int v = 2; v <= 3; v++) {
        cr_assert_eq(sh(out, sizeof(out),
                        "printf 'GET /who HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n'"
                        " | openssl s_client -quiet -tls1_%d -connect 127.0.0.1:%d -CAfile ca.pem "
                        "-verify_return_error -cert client.pem -key client.key 2>/dev/null",
                        v, g_tls_port),
                     0, "%s", out);
        cr_assert(strstr(out, "HTTP/1.1 200 OK") != NULL, "TLS 1.%d: %s", v, out);
        cr_assert(strstr(out, "verified=1 subject=CN=operator one,O=pkiva test") != NULL,
                  "TLS 1.%d: %s", v, out);
    }
    /* TLS 1.1 and older are refused. */
    cr_assert_neq(sh(out, sizeof(out),
                     "openssl s_client -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' -connect "
                     "127.0.0.1:%d </dev/null 2>&1",
                     g_tls_port),
                  0, "%s", out);
}

Test(http_tls, without_client_ca_no_certificate_is_asked, .init = start_tls_only, .fini = stop)
{
    char out[8192];

    /* curl offers its certificate only when asked; nothing is verified. */
    cr_assert_eq(curl(out, sizeof(out), "--cert client.pem --key client.key", g_tls_port, "/who"),
                 0, "%s", out);
    cr_assert_str_eq(out, "tls=1 verified=0 subject=\n");
}

/* ---- raw sockets ---------------------------------------------------------------------------- */

static int connect_port(int port)
{
    struct sockaddr_in sin;
    struct timeval tv = {.tv_sec = 5};
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    cr_assert_geq(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "%s", strerror(errno));
    return fd;
}

/* Reads until the peer closes; returns the bytes read (at most cap - 1, NUL-terminated), or -1 if
 * the connection was still open after timeout_ms. */
static ssize_t read_until_closed(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t got = 0;

    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n = 0;
        if (poll(&pfd, 1, timeout_ms) <= 0)
            return -1;
        n = recv(fd, buf + got, cap - 1 - got, 0);
        if (n == 0 || (n < 0 && errno == ECONNRESET))
            break;
        if (n < 0)
            return -1;
        got += (size_t)n;
        if (got == cap - 1)
            break;
    }
    buf[got] = '\0';
    return (ssize_t)got;
}

Test(http_tls, plain_http_to_a_tls_port_is_closed, .init = start_mtls, .fini = stop)
{
    static const char request[] = "GET /who HTTP/1.1\r\nHost: t\r\n\r\n";
    char buf[4096];
    struct http_stats st;
    int fd = connect_port(g_tls_port);
    ssize_t n = 0;

    cr_assert_eq(send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL),
                 (ssize_t)sizeof(request) - 1);
    n = read_until_closed(fd, buf, sizeof(buf), 3000);
    cr_assert_geq(n, 0, "the connection stayed open");
    cr_assert_null(strstr(buf, "HTTP/1.1"), "answered in plain text: %s", buf);
    (void)close(fd); /* test socket */
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.tls_handshake_failures, 1);
    cr_assert_eq(st.requests, 0);
}

Test(http_tls, stalled_handshake_times_out, .init = start_mtls, .fini = stop)
{
    /* The first bytes of a TLS 1.2 ClientHello record, then nothing. */
    static const unsigned char partial[] = {0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00};
    char buf[256];
    struct http_stats st;
    struct timespec t0, t1;
    int fd = connect_port(g_tls_port);
    int idle = connect_port(g_tls_port); /* sends nothing at all */
    double waited = 0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(send(fd, partial, sizeof(partial), MSG_NOSIGNAL), (ssize_t)sizeof(partial));
    cr_assert_geq(read_until_closed(fd, buf, sizeof(buf), 3000), 0, "not closed");
    cr_assert_geq(read_until_closed(idle, buf, sizeof(buf), 3000), 0, "not closed");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert_geq(waited, 0.35, "closed before the header timeout: %.3f s", waited);
    (void)close(fd);   /* test socket */
    (void)close(idle); /* test socket */
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.timeouts, 2);
    cr_assert_eq(st.tls_handshakes, 0);
}

/* ---- in-process client ---------------------------------------------------------------------- */

static SSL *tls_client(SSL_CTX **ctx_out, int *fd_out)
{
    char ca[400];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    int fd = connect_port(g_tls_port);

    cr_assert_not_null(ctx);
    (void)snprintf(ca, sizeof(ca), "%s/ca.pem", g_dir);
    cr_assert_eq(SSL_CTX_load_verify_locations(ctx, ca, NULL), 1);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
    cr_assert_not_null(ssl);
    cr_assert_eq(SSL_set1_host(ssl, "127.0.0.1"), 1);
    cr_assert_eq(SSL_set_fd(ssl, fd), 1);
    cr_assert_eq(SSL_connect(ssl), 1);
    *ctx_out = ctx;
    *fd_out = fd;
    return ssl;
}

/* Reads everything until the server closes the TLS connection. Returns a malloc'd buffer. */
static char *tls_read_all(SSL *ssl, size_t *len)
{
    size_t cap = 1 << 20, got = 0;
    char *buf = malloc(cap + 1);

    cr_assert_not_null(buf);
    for (;;) {
        int n = SSL_read(ssl, buf + got, (int)(cap - got));
        if (n <= 0)
            break;
        got += (size_t)n;
        cr_assert_lt(got, cap, "reply too large");
    }
    buf[got] = '\0';
    *len = got;
    return buf;
}

static size_t count(const char *hay, size_t len, const char *needle)
{
    size_t n = 0, nlen = strlen(needle);

    for (size_t i = 0; i + nlen <= len; i++)
        if (memcmp(hay + i, needle, nlen) == 0)
            n++;
    return n;
}

Test(http_tls, pipelined_requests_and_large_bodies, .init = start_mtls, .fini = stop)
{
    SSL_CTX *ctx = NULL;
    int fd = -1;
    SSL *ssl = tls_client(&ctx, &fd);
    char *req = malloc(1 << 20);
    size_t len = 0, got = 0;
    char *reply = NULL;
    char *body = malloc(60000);

    cr_assert_not_null(req);
    cr_assert_not_null(body);
    memset(body, 'q', 60000);
    /* 20 small requests, a 60 KB POST and two 300 KB responses, all in one burst: more than
     * max_pipelined (16), so the parser pauses and must resume from bytes the SSL object holds. */
    for (int i = 0; i < 20; i++)
        len += (size_t)snprintf(req + len, 200, "GET /who HTTP/1.1\r\nHost: t\r\n\r\n");
    len += (size_t)snprintf(req + len, 200,
                            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 60000\r\n\r\n");
    memcpy(req + len, body, 60000);
    len += 60000;
    len += (size_t)snprintf(req + len, 200, "GET /blob HTTP/1.1\r\nHost: t\r\n\r\n");
    len += (size_t)snprintf(req + len, 200,
                            "GET /blob HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    cr_assert_eq(SSL_write(ssl, req, (int)len), (int)len);
    reply = tls_read_all(ssl, &got);
    cr_assert_eq(count(reply, got, "HTTP/1.1 200 OK"), 23, "%zu bytes", got);
    cr_assert_eq(count(reply, got, "tls=1 verified=0"), 20);
    cr_assert_eq(count(reply, got, "Content-Length: 300000\r\n"), 2);
    /* The last body arrives whole and intact. */
    cr_assert_geq(got, 300000);
    cr_assert_eq(memcmp(reply + got - 300000, g_blob->data, 300000), 0);
    free(reply);
    free(req);
    free(body);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    (void)close(fd); /* test socket */
}

/* ---- configuration -------------------------------------------------------------------------- */

Test(http_tls, bad_files_fail_creation)
{
    struct http_config cfg;
    struct http_server *srv = NULL;
    char paths[3][400], missing[400], other[400];

    make_pki();
    config(&cfg, paths, 1);
    (void)snprintf(missing, sizeof(missing), "%s/nope.pem", g_dir);
    (void)snprintf(other, sizeof(other), "%s/other.key", g_dir);
    cfg.listeners[1].tls_cert_file = missing;
    cr_assert_eq(http_server_new(&cfg, &srv), UTIL_ECONFIG);
    cfg.listeners[1].tls_cert_file = paths[0];
    cfg.listeners[1].tls_key_file = other; /* does not match the certificate */
    cr_assert_eq(http_server_new(&cfg, &srv), UTIL_ECONFIG);
    cfg.listeners[1].tls_key_file = paths[1];
    cfg.listeners[1].tls_client_ca_file = missing;
    cr_assert_eq(http_server_new(&cfg, &srv), UTIL_ECONFIG);
    cfg.listeners[1].tls_client_ca_file = NULL;
    cfg.listeners[1].tls_key_file = NULL; /* a certificate without a key */
    cr_assert_eq(http_server_new(&cfg, &srv), UTIL_ECONFIG);
    cfg.listeners[1].tls_cert_file = NULL;
    cfg.listeners[1].tls_key_file = paths[1]; /* a key without a certificate */
    cr_assert_eq(http_server_new(&cfg, &srv), UTIL_ECONFIG);
    cr_assert_null(srv);
    ts_rmrf(g_dir);
}
