/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the http server over real TCP on 127.0.0.1: each test starts a server (port 0, two loop
 * threads) with http_server_run on a background thread and talks to it with plain sockets and raw
 * request bytes, so framing, ordering, limits and timeouts are checked as a client sees them. */
#include <http/http.h>
#include <http/http_int.h>
#include <support.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- server fixture ------------------------------------------------------------------------- */

static struct http_server *g_srv;
static pthread_t g_runner;
static int g_run_rc = -100;
static _Atomic int g_run_done;
static int g_port;       /* public listener */
static int g_admin_port; /* admin listener */
static _Atomic int g_ready = 1;
static _Atomic int g_slow_done;
static _Atomic int g_inits, g_finis;
static struct util_blob *g_blob;

static void *run_thread(void *arg)
{
    g_run_rc = http_server_run(arg);
    atomic_store(&g_run_done, 1);
    return NULL;
}

static void base_config(struct http_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->workers = 2;
    cfg->n_listeners = 2;
    (void)snprintf(cfg->listeners[0].host, sizeof(cfg->listeners[0].host), "127.0.0.1");
    cfg->listeners[0].kind = HTTP_PUBLIC;
    (void)snprintf(cfg->listeners[1].host, sizeof(cfg->listeners[1].host), "127.0.0.1");
    cfg->listeners[1].kind = HTTP_ADMIN;
    http_limits_default(&cfg->limits);
    cfg->server_header = "pkiva-test";
}

/* Answers "<ctx>:<target>". */
static void text_handler(void *ctx, struct http_request *req)
{
    char body[512];
    size_t len = 0;
    const char *target = http_request_target(req, &len);

    (void)snprintf(body, sizeof(body), "%s:%.*s", (const char *)ctx, (int)len, target);
    http_request_respond_text(req, 200, "text/plain", body);
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
    resp.headers = "X-Echo: yes\r\n";
    http_request_respond(req, &resp);
}

/* Answers what the handler sees of a few fields: "auth=<Authorization>;ct=<Content-Type>;
 * x=<X-T>;n=<fields named X-T>;body=<body>" ("-" for an absent field). */
static void fields_handler(void *ctx, struct http_request *req)
{
    char out[1024];
    const char *names[3] = {"Authorization", "Content-Type", "X-T"};
    const char *labels[3] = {"auth", "ct", "x"};
    size_t used = 0, len = 0;
    const unsigned char *body = http_request_body(req, &len);

    (void)ctx;
    for (int i = 0; i < 3; i++) {
        size_t vlen = 0;
        const char *v = http_request_header(req, names[i], &vlen);
        used += (size_t)snprintf(out + used, sizeof(out) - used, "%s=%.*s;", labels[i],
                                 v != NULL ? (int)vlen : 1, v != NULL ? v : "-");
    }
    (void)snprintf(out + used, sizeof(out) - used, "n=%d;body=%.*s",
                   http_request_header_count(req, "X-T"), (int)len, (const char *)body);
    http_request_respond_text(req, 200, "text/plain", out);
}

static void blob_handler(void *ctx, struct http_request *req)
{
    struct http_response resp = {0};

    resp.status = 200;
    resp.content_type = "application/ocsp-response";
    resp.body = g_blob;
    http_request_respond(req, &resp);
}

/* Answers "slow:<target>" after ctx milliseconds, from a timer on the request's loop. */
struct slow_job {
    uv_timer_t timer;
    struct http_request *req;
};

static void slow_closed(uv_handle_t *handle)
{
    free(handle->data);
}

static void slow_fire(uv_timer_t *timer)
{
    struct slow_job *job = timer->data;
    char body[512];
    size_t len = 0;
    const char *target = http_request_target(job->req, &len);

    (void)snprintf(body, sizeof(body), "slow:%.*s", (int)len, target);
    http_request_respond_text(job->req, 200, "text/plain", body);
    atomic_fetch_add(&g_slow_done, 1);
    uv_close((uv_handle_t *)timer, slow_closed);
}

static void slow_handler(void *ctx, struct http_request *req)
{
    struct slow_job *job = calloc(1, sizeof(*job));

    cr_assert_not_null(job);
    cr_assert_eq(uv_timer_init(http_request_loop(req), &job->timer), 0);
    job->timer.data = job;
    job->req = req;
    cr_assert_eq(uv_timer_start(&job->timer, slow_fire, (uint64_t)(uintptr_t)ctx, 0), 0);
}

/* Never answers: the request must still be freed when the server shuts down. */
static void never_handler(void *ctx, struct http_request *req)
{
    atomic_fetch_add(&g_slow_done, 1);
}

static int ready_fn(void *ctx, char *why, size_t why_len)
{
    if (atomic_load(&g_ready))
        return 1;
    (void)snprintf(why, why_len, "store not open");
    return 0;
}

static void hook_init(void *ctx, uv_loop_t *loop, int index)
{
    atomic_fetch_add(&g_inits, 1);
}

static void hook_fini(void *ctx, uv_loop_t *loop, int index)
{
    atomic_fetch_add(&g_finis, 1);
}

static void start_server(const struct http_config *cfg)
{
    cr_assert_eq(http_server_new(cfg, &g_srv), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/", text_handler, "root"), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/a", text_handler, "a"), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/a/b", text_handler, "ab"), 0);
    cr_assert_eq(
        http_server_route(g_srv, HTTP_PUBLIC, "GET", "/slow", slow_handler, (void *)(uintptr_t)200),
        0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/slower", slow_handler,
                                   (void *)(uintptr_t)600),
                 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "POST", "/echo", echo_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "POST", "/fields", fields_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/never", never_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/blob", blob_handler, NULL), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_ADMIN, "GET", "/x-admin", text_handler, "admin"), 0);
    cr_assert_eq(http_server_route(g_srv, HTTP_ADMIN, "PUT", "/x-admin/put", text_handler, "put"),
                 0);
    cr_assert_eq(
        http_server_route(g_srv, HTTP_PUBLIC | HTTP_ADMIN, NULL, "/any", text_handler, "any"), 0);
    cr_assert_eq(http_server_on_loop(g_srv, hook_init, hook_fini, NULL), 0);
    http_server_set_ready_fn(g_srv, ready_fn, NULL);
    cr_assert_eq(http_server_start(g_srv), 0);
    /* Routes are frozen once started. */
    cr_assert_neq(http_server_route(g_srv, HTTP_PUBLIC, "GET", "/late", text_handler, "x"), 0);
    g_port = http_server_port(g_srv, 0);
    g_admin_port = http_server_port(g_srv, 1);
    cr_assert_gt(g_port, 0);
    cr_assert_gt(g_admin_port, 0);
    cr_assert_neq(g_port, g_admin_port);
    cr_assert_eq(pthread_create(&g_runner, NULL, run_thread, g_srv), 0);
}

static void start_default(void)
{
    struct http_config cfg;

    base_config(&cfg);
    start_server(&cfg);
}

static void stop_server(void)
{
    http_server_stop(g_srv);
    cr_assert_eq(pthread_join(g_runner, NULL), 0);
    cr_assert_eq(g_run_rc, 0);
    http_server_free(g_srv);
    g_srv = NULL;
}

/* ---- client helpers ------------------------------------------------------------------------- */

struct client {
    int fd;
    size_t len;
    char buf[1 << 17];
};

struct reply {
    int status;
    char head[8192];
    char body[1 << 16];
    size_t body_len;
    long content_length; /* -1 when absent */
};

static struct client *cl_open(int port)
{
    struct client *cl = calloc(1, sizeof(*cl));
    struct sockaddr_in sin;
    struct timeval tv = {.tv_sec = 5};
    int one = 1;

    cr_assert_not_null(cl);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(cl->fd, 0);
    cr_assert_eq(setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    cr_assert_eq(setsockopt(cl->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
    cr_assert_eq(connect(cl->fd, (struct sockaddr *)&sin, sizeof(sin)), 0, "connect: %s",
                 strerror(errno));
    return cl;
}

static void cl_close(struct client *cl)
{
    if (cl == NULL)
        return;
    (void)close(cl->fd); /* test socket */
    free(cl);
}

/* Closes with an RST (SO_LINGER 0), so the server sees the connection die, not just EOF. */
static void cl_reset(struct client *cl)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    cr_assert_eq(setsockopt(cl->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    cl_close(cl);
}

static void cl_send_len(struct client *cl, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(cl->fd, p, len, MSG_NOSIGNAL);
        cr_assert_gt(n, 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void cl_send(struct client *cl, const char *text)
{
    cl_send_len(cl, text, strlen(text));
}

/* Reads more bytes into the client buffer; returns bytes read, 0 on EOF, -1 on error/timeout. */
static ssize_t cl_fill(struct client *cl)
{
    ssize_t n = 0;

    /* One byte stays free for the NUL the readers put behind the data. */
    cr_assert_lt(cl->len + 1, sizeof(cl->buf), "client buffer full");
    n = recv(cl->fd, cl->buf + cl->len, sizeof(cl->buf) - 1 - cl->len, 0);
    if (n > 0)
        cl->len += (size_t)n;
    return n;
}

/* Reads one response. Returns 0, or -1 if the connection ended (or timed out) first. */
static int cl_read(struct client *cl, struct reply *r, int head_request)
{
    char *end = NULL;
    size_t head_len = 0;
    const char *cl_hdr = NULL;

    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    for (;;) {
        if (cl->len > 0) {
            cl->buf[cl->len] = '\0';
            end = strstr(cl->buf, "\r\n\r\n");
            if (end != NULL)
                break;
        }
        if (cl_fill(cl) <= 0)
            return -1;
    }
    head_len = (size_t)(end - cl->buf) + 4;
    cr_assert_lt(head_len, sizeof(r->head));
    memcpy(r->head, cl->buf, head_len);
    r->head[head_len] = '\0';
    cr_assert_eq(sscanf(r->head, "HTTP/1.1 %d", &r->status), 1, "bad status line: %s", r->head);
    cl_hdr = strstr(r->head, "\r\nContent-Length: ");
    if (cl_hdr != NULL)
        r->content_length = strtol(cl_hdr + 18, NULL, 10);
    if (!head_request && r->content_length > 0) {
        cr_assert_lt((size_t)r->content_length, sizeof(r->body));
        r->body_len = (size_t)r->content_length;
        while (cl->len < head_len + r->body_len) {
            if (cl_fill(cl) <= 0)
                return -1;
        }
        memcpy(r->body, cl->buf + head_len, r->body_len);
    }
    r->body[r->body_len] = '\0';
    memmove(cl->buf, cl->buf + head_len + r->body_len, cl->len - head_len - r->body_len);
    cl->len -= head_len + r->body_len;
    return 0;
}

/* Sends a request and reads its response on a fresh connection. */
static int fetch(int port, const char *request, struct reply *r)
{
    struct client *cl = cl_open(port);
    int rc = 0;

    cl_send(cl, request);
    rc = cl_read(cl, r, strncmp(request, "HEAD ", 5) == 0);
    cl_close(cl);
    return rc;
}

/* 1 if the server closed the connection within timeout_ms (EOF or reset), 0 if it stayed open,
 * -1 if it sent bytes instead. */
static int cl_wait_closed(struct client *cl, int timeout_ms)
{
    struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
    char byte = 0;
    ssize_t n = 0;

    if (cl->len > 0)
        return -1;
    if (poll(&pfd, 1, timeout_ms) == 0)
        return 0;
    n = recv(cl->fd, &byte, 1, 0);
    if (n == 0 || (n < 0 && errno == ECONNRESET))
        return 1;
    return n > 0 ? -1 : 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    (void)nanosleep(&ts, NULL); /* an early wake-up only shortens a test wait */
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: t\r\n\r\n"

/* ---- routing -------------------------------------------------------------------------------- */

/* IMF-fixdate both ways (English names whatever the locale), the obsolete forms refused; entity
 * tag lists as If-None-Match carries them. */
Test(http_date, format_parse_and_etags)
{
    char out[40];
    int64_t t = 0;
    static const char *const bad[] = {"Sunday, 06-Nov-94 08:49:37 GMT",
                                      "Sun Nov  6 08:49:37 1994",
                                      "Sun, 06 Nov 1994 08:49:37 UTC",
                                      "Sun, 06 Foo 1994 08:49:37 GMT",
                                      "Sun, 06 Nov 1994 25:49:37 GMT",
                                      "",
                                      "yesterday"};

    http_date_format(784111777, out, sizeof(out));
    cr_assert_str_eq(out, "Sun, 06 Nov 1994 08:49:37 GMT");
    cr_assert_eq(http__date_parse(out, strlen(out), &t), 0);
    cr_assert_eq(t, 784111777);
    http_date_format(4102444800LL, out, sizeof(out)); /* 2100-01-01 */
    cr_assert_str_eq(out, "Fri, 01 Jan 2100 00:00:00 GMT");
    cr_assert_eq(http__date_parse(out, strlen(out), &t), 0);
    cr_assert_eq(t, 4102444800LL);
    for (int64_t v = 0; v < 4102444800LL; v += 86400 * 37 + 3661) {
        http_date_format(v, out, sizeof(out));
        cr_assert_eq(http__date_parse(out, strlen(out), &t), 0, "%s", out);
        cr_assert_eq(t, v, "%s", out);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(http__date_parse(bad[i], strlen(bad[i]), &t), UTIL_EINVAL, "%s", bad[i]);

    cr_assert(http__etag_matches("\"abc\"", strlen("\"abc\""), "\"abc\""));
    cr_assert(http__etag_matches(" W/\"abc\" ", strlen(" W/\"abc\" "), "\"abc\""));
    cr_assert(http__etag_matches("\"x\", \"abc\"", strlen("\"x\", \"abc\""), "\"abc\""));
    cr_assert(http__etag_matches("*", strlen("*"), "\"abc\""));
    cr_assert_not(http__etag_matches("\"abc\"x", strlen("\"abc\"x"), "\"abc\""));
    cr_assert_not(http__etag_matches("\"ab\"", strlen("\"ab\""), "\"abc\""));
    cr_assert_not(http__etag_matches("", strlen(""), "\"abc\""));
}

Test(http, longest_prefix_and_listener_kinds, .init = start_default, .fini = stop_server)
{
    struct reply r;

    cr_assert_eq(fetch(g_port, GET("/a/b/c"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ab:/a/b/c");
    cr_assert_eq(fetch(g_port, GET("/a/x"), &r), 0);
    cr_assert_str_eq(r.body, "a:/a/x");
    cr_assert_eq(fetch(g_port, GET("/zzz?q=1"), &r), 0);
    cr_assert_str_eq(r.body, "root:/zzz?q=1");
    /* The admin route is not reachable from the public listener: "/" catches it there. */
    cr_assert_eq(fetch(g_port, GET("/x-admin"), &r), 0);
    cr_assert_str_eq(r.body, "root:/x-admin");
    cr_assert_eq(fetch(g_admin_port, GET("/x-admin/x"), &r), 0);
    cr_assert_str_eq(r.body, "admin:/x-admin/x");
    /* A route for both kinds and any method. */
    cr_assert_eq(fetch(g_admin_port, "DELETE /any HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_str_eq(r.body, "any:/any");
    cr_assert_eq(fetch(g_port, "DELETE /any HTTP/1.1\r\nHost: t\r\n\r\n", &r), 0);
    cr_assert_str_eq(r.body, "any:/any");
    /* Headers the server always adds. */
    cr_assert_not_null(strstr(r.head, "\r\nServer: pkiva-test\r\n"), "%s", r.head);
    cr_assert_not_null(strstr(r.head, "\r\nDate: "), "%s", r.head);
    cr_assert_not_null(strstr(r.head, " GMT\r\n"), "%s", r.head);
    cr_assert_not_null(strstr(r.head, "\r\nContent-Type: text/plain\r\n"), "%s", r.head);
}

Test(http, not_found_and_method_not_allowed, .init = start_default, .fini = stop_server)
{
    struct reply r;

    cr_assert_eq(fetch(g_admin_port, GET("/nothing"), &r), 0);
    cr_assert_eq(r.status, 404);
    cr_assert_eq(
        fetch(g_admin_port, "POST /x-admin/x HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r),
        0);
    cr_assert_eq(r.status, 405);
    cr_assert_not_null(strstr(r.head, "\r\nAllow: GET, HEAD\r\n"), "%s", r.head);
    cr_assert_eq(fetch(g_admin_port,
                       "POST /x-admin/put HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r),
                 0);
    cr_assert_eq(r.status, 405);
    cr_assert_not_null(strstr(r.head, "\r\nAllow: PUT, GET, HEAD\r\n"), "%s", r.head);
    cr_assert_eq(
        fetch(g_port, "POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", &r), 0);
    cr_assert_eq(r.status, 405);
}

Test(http, head_has_length_but_no_body, .init = start_default, .fini = stop_server)
{
    struct client *cl = NULL;
    struct reply r;
    static const char payload[] = "\x30\x03\x0a\x01\x00-signed-ocsp-response";

    g_blob = util_blob_new(payload, sizeof(payload) - 1);
    cr_assert_not_null(g_blob);
    cl = cl_open(g_port);
    cl_send(cl, "HEAD /blob HTTP/1.1\r\nHost: t\r\n\r\n" GET("/blob"));
    cr_assert_eq(cl_read(cl, &r, 1), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.content_length, (long)sizeof(payload) - 1);
    /* The next bytes must be the second response, not a body. */
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(r.body_len, sizeof(payload) - 1);
    cr_assert_eq(memcmp(r.body, payload, r.body_len), 0);
    cl_close(cl);
}

/* ---- connections ---------------------------------------------------------------------------- */

Test(http, keep_alive_many_requests_one_connection, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;
    struct http_stats st;
    int i = 0;

    for (i = 0; i < 20; i++) {
        char req[128];
        char want[64];
        (void)snprintf(req, sizeof(req), "GET /a/%d HTTP/1.1\r\nHost: t\r\n\r\n", i);
        (void)snprintf(want, sizeof(want), "a:/a/%d", i);
        cl_send(cl, req);
        cr_assert_eq(cl_read(cl, &r, 0), 0, "request %d", i);
        cr_assert_str_eq(r.body, want);
        cr_assert_null(strstr(r.head, "Connection: close"));
    }
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.connections_accepted, 1);
    cr_assert_eq(st.requests, 20);
    cr_assert_eq(st.responses_2xx, 20);
    cr_assert_eq(st.connections_open, 1);
    cl_close(cl);
}

Test(http, connection_close_and_http10, .init = start_default, .fini = stop_server)
{
    struct client *cl = NULL;
    struct reply r;

    cl = cl_open(g_port);
    cl_send(cl, "GET /a HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_not_null(strstr(r.head, "\r\nConnection: close\r\n"));
    cr_assert_eq(cl_wait_closed(cl, 2000), 1);
    cl_close(cl);

    cl = cl_open(g_port);
    cl_send(cl, "GET /a HTTP/1.0\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_not_null(strstr(r.head, "\r\nConnection: close\r\n"));
    cr_assert_eq(cl_wait_closed(cl, 2000), 1);
    cl_close(cl);

    cl = cl_open(g_port);
    cl_send(cl, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_not_null(strstr(r.head, "\r\nConnection: keep-alive\r\n"));
    cl_send(cl, "GET /a/b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "ab:/a/b");
    cl_close(cl);
}

Test(http, pipelined_responses_in_order_with_async_handler, .init = start_default,
     .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    /* The first is answered 200 ms later from a timer; the two behind it at once. */
    cl_send(cl, GET("/slow/1") GET("/a/2") GET("/a/b/3"));
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "slow:/slow/1");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "a:/a/2");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "ab:/a/b/3");
    /* Still usable afterwards. */
    cl_send(cl, GET("/a/4"));
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "a:/a/4");
    cl_close(cl);
}

static void start_pipeline_1(void)
{
    struct http_config cfg;

    base_config(&cfg);
    cfg.limits.max_pipelined = 1;
    start_server(&cfg);
}

Test(http, pipelining_bound_pauses_parser, .init = start_pipeline_1, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;
    char burst[4096] = "";
    int i = 0;

    /* Ten pipelined requests with max_pipelined = 1: the parser pauses after each one and
     * resumes on the leftover bytes when its response has been written. */
    for (i = 0; i < 10; i++) {
        char one[128];
        (void)snprintf(one, sizeof(one), "GET /%s/%d HTTP/1.1\r\nHost: t\r\n\r\n",
                       i % 3 == 0 ? "slow" : "a", i);
        strcat(burst, one);
    }
    cl_send(cl, burst);
    for (i = 0; i < 10; i++) {
        char want[64];
        (void)snprintf(want, sizeof(want), "%s:/%s/%d", i % 3 == 0 ? "slow" : "a",
                       i % 3 == 0 ? "slow" : "a", i);
        cr_assert_eq(cl_read(cl, &r, 0), 0, "response %d", i);
        cr_assert_str_eq(r.body, want);
    }
    cl_close(cl);
}

/* ---- bodies --------------------------------------------------------------------------------- */

static void start_small_limits(void)
{
    struct http_config cfg;

    base_config(&cfg);
    cfg.limits.max_body = 1024;
    cfg.limits.max_url = 64;
    cfg.limits.max_headers = 8;
    cfg.limits.max_header_bytes = 512;
    start_server(&cfg);
}

Test(http, post_content_length_and_chunked, .init = start_small_limits, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;
    char big[1024 + 1];

    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "hello world");
    cr_assert_not_null(strstr(r.head, "\r\nX-Echo: yes\r\n"));
    /* Chunked, with the chunks split across writes. */
    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc");
    sleep_ms(50);
    cl_send(cl, "de\r\n3\r\nfgh\r\n0\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "abcdefgh");
    /* Exactly max_body is fine, sent in pieces. */
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n");
    cl_send_len(cl, big, 500);
    sleep_ms(20);
    cl_send_len(cl, big + 500, 524);
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.body_len, 1024);
    cr_assert_eq(memcmp(r.body, big, 1024), 0);
    cl_close(cl);
}

/* Trailer fields of a chunked body are never read as header fields: an Authorization, a
 * Content-Type or a repeated field sent after the body is invisible to handlers, in one write or
 * split across writes, and the body and the next request on the connection are intact. */
Test(http, chunked_trailers_are_not_headers, .init = start_small_limits, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, "POST /fields HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nX-T: head\r\n"
                "\r\n3\r\nabc\r\n0\r\nAuthorization: Bearer from-the-trailer\r\n"
                "Content-Type: text/evil\r\nX-T: trailer\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "auth=-;ct=-;x=head;n=1;body=abc");
    /* A trailer arriving in pieces, the field name split from its value. */
    cl_send(cl, "POST /fields HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                "2\r\nde\r\n0\r\nAuthori");
    sleep_ms(30);
    cl_send(cl, "zation: Bear");
    sleep_ms(30);
    cl_send(cl, "er x\r\nX-T: 1\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "auth=-;ct=-;x=-;n=0;body=de");
    /* The connection goes on: the next request has its own fields. */
    cl_send(cl, "POST /fields HTTP/1.1\r\nHost: t\r\nContent-Type: a/b\r\nContent-Length: 1\r\n"
                "\r\nz");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "auth=-;ct=a/b;x=-;n=0;body=z");
    cl_close(cl);
    /* Trailers count against max_header_bytes (512 here): endless ones are refused. */
    {
        char big[600];
        cl = cl_open(g_port);
        memset(big, 'v', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        cl_send(cl, "POST /fields HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                    "1\r\na\r\n0\r\nX-Big: ");
        cl_send(cl, big);
        cl_send(cl, "\r\n\r\n");
        cr_assert_eq(cl_read(cl, &r, 0), 0);
        cr_assert_eq(r.status, 431);
        cl_close(cl);
    }
}

Test(http, expect_100_continue, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl,
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 100);
    cl_send(cl, "abc");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "abc");
    cl_close(cl);
}

Test(http, body_too_large_413, .init = start_small_limits, .fini = stop_server)
{
    struct client *cl = NULL;
    struct reply r;
    struct http_stats st;
    char chunk[700];

    /* Announced by Content-Length: rejected before any body byte is read. */
    cl = cl_open(g_port);
    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n0123456789");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 413);
    cr_assert_not_null(strstr(r.head, "\r\nConnection: close\r\n"));
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
    /* Chunked: rejected while streaming. */
    memset(chunk, 'y', sizeof(chunk));
    cl = cl_open(g_port);
    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2bc\r\n");
    cl_send_len(cl, chunk, 700);
    cl_send(cl, "\r\n2bc\r\n");
    cl_send_len(cl, chunk, 700);
    cl_send(cl, "\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 413);
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.limit_rejections, 2);
    cr_assert_eq(st.responses_4xx, 2);
}

Test(http, url_too_long_414, .init = start_small_limits, .fini = stop_server)
{
    struct reply r;
    char req[512];
    char path[200];

    memset(path, 'p', sizeof(path) - 1);
    path[sizeof(path) - 1] = '\0';
    (void)snprintf(req, sizeof(req), "GET /%s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    cr_assert_eq(fetch(g_port, req, &r), 0);
    cr_assert_eq(r.status, 414);
    /* Just under the bound still works. */
    path[40] = '\0';
    (void)snprintf(req, sizeof(req), "GET /a%s HTTP/1.1\r\nHost: t\r\n\r\n", path);
    cr_assert_eq(fetch(g_port, req, &r), 0);
    cr_assert_eq(r.status, 200);
}

Test(http, too_many_or_too_big_headers_431, .init = start_small_limits, .fini = stop_server)
{
    struct reply r;
    char req[2048] = "GET /a HTTP/1.1\r\nHost: t\r\n";
    char big[700];
    int i = 0;

    for (i = 0; i < 10; i++)
        strcat(req, "X-H: v\r\n");
    strcat(req, "\r\n");
    cr_assert_eq(fetch(g_port, req, &r), 0);
    cr_assert_eq(r.status, 431);

    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    (void)snprintf(req, sizeof(req), "GET /a HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    cr_assert_eq(fetch(g_port, req, &r), 0);
    cr_assert_eq(r.status, 431);

    /* Eight headers are allowed, and each can be looked up. */
    cr_assert_eq(fetch(g_port,
                       "GET /a HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\n"
                       "G: 7\r\nHost: t\r\n\r\n",
                       &r),
                 0);
    cr_assert_eq(r.status, 200);
}

Test(http, garbage_is_400_and_close, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, "THIS IS NOT HTTP\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 400);
    cr_assert_not_null(strstr(r.head, "\r\nConnection: close\r\n"));
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
    /* A bad request behind a good one: the good one is answered first. */
    cl = cl_open(g_port);
    cl_send(cl, GET("/a/1") "GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "a:/a/1");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 400);
    cl_close(cl);
}

/* RFC 9112 §3.2: an HTTP/1.1 request without Host, or any with two, is 400 (both were served);
 * HTTP/1.0 without Host is fine; an HTTP/2.0 request line is 505 (it was served as HTTP/1). */
Test(http, host_field_rules_and_version, .init = start_default, .fini = stop_server)
{
    static const char *const reqs[] = {
        "GET /a/1 HTTP/1.1\r\n\r\n",
        "GET /a/1 HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n",
        "GET /a/1 HTTP/2.0\r\nHost: t\r\n\r\n",
        "GET /a/1 HTTP/1.0\r\n\r\n",
    };
    static const int want[] = {400, 400, 505, 200};
    struct reply r;

    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        struct client *cl = cl_open(g_port);
        cl_send(cl, reqs[i]);
        cr_assert_eq(cl_read(cl, &r, 0), 0);
        cr_assert_eq(r.status, want[i], "%s-> %d", reqs[i], r.status);
        cl_close(cl);
    }
}

/* RFC 9112 §3.2.2: the absolute-form is accepted and routed by its path (it was 404). */
Test(http, absolute_form_targets_are_routed_by_path, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, "GET http://t/a/1 HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "a:/a/1");
    cl_send(cl, "GET HTTPS://t:8443/a/2?x=1 HTTP/1.1\r\nHost: t\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "a:/a/2?x=1");
    cl_send(cl, "GET http://t HTTP/1.1\r\nHost: t\r\n\r\n"); /* no path: "/" */
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "root:/");
    cl_close(cl);
}

/* RFC 9112 §6.1: a transfer coding other than chunked is 501 and a close (the body was de-chunked
 * and handed over still gzip-coded); chunked twice is llhttp's 400. " Chunked " alone is fine. */
Test(http, unknown_transfer_coding_is_501, .init = start_default, .fini = stop_server)
{
    static const char *const bad[] = {
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", /* llhttp: 400 */
    };
    static const int want[] = {501, 501, 400};
    struct client *cl;
    struct reply r;
    char req[512];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cl = cl_open(g_port);
        (void)snprintf(req, sizeof(req),
                       "POST /echo HTTP/1.1\r\nHost: t\r\n%s\r\n3\r\nabc\r\n0\r\n\r\n", bad[i]);
        cl_send(cl, req);
        cr_assert_eq(cl_read(cl, &r, 0), 0);
        cr_assert_eq(r.status, want[i], "%s: %d", bad[i], r.status);
        cr_assert_eq(cl_wait_closed(cl, 3000), 1);
        cl_close(cl);
    }
    cl = cl_open(g_port);
    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:  Chunked \r\n\r\n"
                "3\r\nabc\r\n0\r\n\r\n");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cl_close(cl);
}

/* Random bytes, and valid requests cut at random points and mutated, on many connections: the
 * server must answer or close each one and keep serving (run under ASan to catch memory errors;
 * the libFuzzer target is the thorough version of this). */
Test(http, random_input_does_not_hurt, .init = start_small_limits, .fini = stop_server)
{
    static const char *seeds[] = {
        GET("/a/b?x=1"),
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        "HEAD /blob HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    };
    struct reply r;
    unsigned seed = 12345;
    int i = 0;

    g_blob = util_blob_new("x", 1);
    for (i = 0; i < 300; i++) {
        struct client *cl = cl_open(g_port);
        char buf[2048];
        size_t len = 0;
        size_t j = 0;
        int mode = (int)(rand_r(&seed) % 3);
        const char *seed_req = seeds[rand_r(&seed) % 4];

        if (mode == 0) {
            len = (size_t)(rand_r(&seed) % sizeof(buf));
            for (j = 0; j < len; j++)
                buf[j] = (char)rand_r(&seed);
        } else {
            /* Several copies, pipelined, with a few bytes flipped and a random cut. */
            while (len + strlen(seed_req) < sizeof(buf) && rand_r(&seed) % 4 != 0) {
                memcpy(buf + len, seed_req, strlen(seed_req));
                len += strlen(seed_req);
            }
            for (j = 0; mode == 2 && len > 0 && j < 3; j++)
                buf[rand_r(&seed) % len] = (char)rand_r(&seed);
            if (len > 0 && rand_r(&seed) % 2)
                len = (size_t)(rand_r(&seed) % len);
        }
        if (len > 0)
            cl_send_len(cl, buf, len);
        if (rand_r(&seed) % 2)
            (void)shutdown(cl->fd, SHUT_WR); /* half-close: answered requests still arrive */
        if (rand_r(&seed) % 2) {
            /* Read what comes for a moment, so that the server's writes happen too. */
            struct pollfd pfd = {.fd = cl->fd, .events = POLLIN};
            while (poll(&pfd, 1, 20) > 0 && recv(cl->fd, buf, sizeof(buf), 0) > 0)
                continue;
        }
        cl_close(cl);
    }
    cr_assert_eq(fetch(g_port, GET("/healthz"), &r), 0);
    cr_assert_eq(r.status, 200);
    util_blob_unref(g_blob);
    g_blob = NULL;
}

/* ---- timeouts and connection limits --------------------------------------------------------- */

static void start_short_timeouts(void)
{
    struct http_config cfg;

    base_config(&cfg);
    cfg.limits.header_timeout_ms = 300;
    cfg.limits.body_timeout_ms = 300;
    cfg.limits.idle_timeout_ms = 400;
    start_server(&cfg);
}

Test(http, slowloris_header_timeout_408, .init = start_short_timeouts, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;
    struct http_stats st;

    cl_send(cl, "GET /a HTTP/1.1\r\nHost: t\r\nX-Slow: ");
    sleep_ms(100);
    cl_send(cl, "a"); /* trickling bytes does not extend the header deadline */
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 408);
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.timeouts, 1);
}

Test(http, body_timeout_408, .init = start_short_timeouts, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 408);
    cl_close(cl);
}

Test(http, idle_keep_alive_connection_closed, .init = start_short_timeouts, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, GET("/a"));
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
    /* A connection that never sends anything is closed as well. */
    cl = cl_open(g_port);
    cr_assert_eq(cl_wait_closed(cl, 3000), 1);
    cl_close(cl);
}

static void start_two_connections(void)
{
    struct http_config cfg;

    base_config(&cfg);
    cfg.limits.max_connections = 2;
    start_server(&cfg);
}

Test(http, max_connections, .init = start_two_connections, .fini = stop_server)
{
    struct client *a = cl_open(g_port);
    struct client *b = cl_open(g_port);
    struct client *c = NULL;
    struct reply r;
    struct http_stats st;

    /* Make sure both are accepted before the third arrives. */
    cl_send(a, GET("/a"));
    cr_assert_eq(cl_read(a, &r, 0), 0);
    cl_send(b, GET("/a"));
    cr_assert_eq(cl_read(b, &r, 0), 0);
    c = cl_open(g_port);
    cr_assert_eq(cl_wait_closed(c, 3000), 1);
    http_server_stats(g_srv, &st);
    cr_assert_eq(st.connections_rejected, 1);
    cr_assert_eq(st.connections_open, 2);
    cl_close(c);
    /* A slot freed is a slot available again. */
    cl_close(a);
    sleep_ms(200);
    c = cl_open(g_port);
    cl_send(c, GET("/a"));
    cr_assert_eq(cl_read(c, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cl_close(c);
    cl_close(b);
}

Test(http, client_disconnects_before_async_answer, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;
    struct http_stats st;
    int i = 0;

    cl_send(cl, GET("/slow/gone") GET("/a/queued"));
    sleep_ms(50);
    cl_reset(cl);
    /* The server drops the connection at once; the handler still holds its request. */
    for (i = 0; i < 100; i++) {
        http_server_stats(g_srv, &st);
        if (st.connections_open == 0)
            break;
        sleep_ms(10);
    }
    cr_assert_eq(st.connections_open, 0);
    cr_assert_eq(atomic_load(&g_slow_done), 0, "closed before the handler answered");
    for (i = 0; i < 200 && atomic_load(&g_slow_done) == 0; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&g_slow_done), 1, "the handler answered its orphaned request");
    /* The server is fine afterwards. */
    cr_assert_eq(fetch(g_port, GET("/a"), &r), 0);
    cr_assert_eq(r.status, 200);
}

Test(http, half_closed_client_still_gets_its_answers, .init = start_default, .fini = stop_server)
{
    struct client *cl = cl_open(g_port);
    struct reply r;

    cl_send(cl, GET("/slow/1") GET("/a/2"));
    cr_assert_eq(shutdown(cl->fd, SHUT_WR), 0);
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "slow:/slow/1");
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_str_eq(r.body, "a:/a/2");
    cr_assert_eq(cl_wait_closed(cl, 2000), 1);
    cl_close(cl);
}

/* ---- health, blobs, shutdown, bind ---------------------------------------------------------- */

Test(http, healthz_and_readyz, .init = start_default, .fini = stop_server)
{
    struct reply r;

    cr_assert_eq(fetch(g_port, GET("/healthz"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ok\n");
    cr_assert_eq(fetch(g_admin_port, GET("/healthz"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_eq(fetch(g_port, GET("/readyz"), &r), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "ready\n");
    atomic_store(&g_ready, 0);
    cr_assert_eq(fetch(g_admin_port, GET("/readyz"), &r), 0);
    cr_assert_eq(r.status, 503);
    cr_assert_str_eq(r.body, "store not open\n");
    /* Built-ins only own the exact paths: the "/" route still serves the rest. */
    cr_assert_eq(fetch(g_port, GET("/healthzz"), &r), 0);
    cr_assert_str_eq(r.body, "root:/healthzz");
}

Test(http, blob_reference_dropped_after_write, .init = start_default, .fini = stop_server)
{
    static const char payload[] = "immutable signed bytes";
    struct client *cl = NULL;
    struct reply r;
    int i = 0;

    g_blob = util_blob_new(payload, sizeof(payload) - 1);
    cr_assert_not_null(g_blob);
    cl = cl_open(g_port);
    for (i = 0; i < 5; i++) {
        cl_send(cl, GET("/blob"));
        cr_assert_eq(cl_read(cl, &r, 0), 0);
        cr_assert_str_eq(r.body, payload);
    }
    cr_assert_not_null(strstr(r.head, "Content-Type: application/ocsp-response\r\n"));
    /* The write callback runs on the loop after the bytes left; give it a moment. */
    for (i = 0; i < 100 && atomic_load(&g_blob->refs) != 1; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&g_blob->refs), 1);
    cl_close(cl);
    util_blob_unref(g_blob);
    g_blob = NULL;
}

/* Reads one response whose body may be large; returns the body (malloc'd) or NULL at EOF. */
static unsigned char *cl_read_big(struct client *cl, int *status, size_t *len)
{
    char *end = NULL;
    const char *hdr = NULL;
    unsigned char *body = NULL;
    size_t head_len = 0;
    size_t have = 0;

    for (;;) {
        cl->buf[cl->len] = '\0';
        end = cl->len > 0 ? strstr(cl->buf, "\r\n\r\n") : NULL;
        if (end != NULL)
            break;
        if (cl_fill(cl) <= 0)
            return NULL;
    }
    head_len = (size_t)(end - cl->buf) + 4;
    cr_assert_eq(sscanf(cl->buf, "HTTP/1.1 %d", status), 1);
    hdr = strstr(cl->buf, "\r\nContent-Length: ");
    cr_assert_not_null(hdr);
    *len = (size_t)strtoull(hdr + 18, NULL, 10);
    body = malloc(*len + 1);
    cr_assert_not_null(body);
    have = cl->len - head_len < *len ? cl->len - head_len : *len;
    memcpy(body, cl->buf + head_len, have);
    memmove(cl->buf, cl->buf + head_len + have, cl->len - head_len - have);
    cl->len -= head_len + have;
    while (have < *len) {
        ssize_t n = recv(cl->fd, body + have, *len - have, 0);
        cr_assert_gt(n, 0, "short body: %zu of %zu", have, *len);
        have += (size_t)n;
    }
    return body;
}

Test(http, large_bodies_partial_writes_in_order, .init = start_default, .fini = stop_server)
{
    size_t big = 8u << 20;
    struct client *cl = NULL;
    unsigned char *body = NULL;
    struct reply r;
    size_t len = 0;
    int status = 0;
    size_t i = 0;
    int k = 0;

    g_blob = util_blob_new(NULL, big);
    cr_assert_not_null(g_blob);
    for (i = 0; i < big; i++)
        g_blob->data[i] = (unsigned char)(i * 7 + (i >> 12));
    cl = cl_open(g_port);
    /* Three big responses and a small one, pipelined; the client reads late, so the socket
     * buffer fills and the writes complete through libuv's queue. */
    cl_send(cl, GET("/blob") GET("/blob") GET("/a/small") GET("/blob"));
    sleep_ms(200);
    for (k = 0; k < 4; k++) {
        if (k == 2) {
            cr_assert_eq(cl_read(cl, &r, 0), 0);
            cr_assert_str_eq(r.body, "a:/a/small");
            continue;
        }
        body = cl_read_big(cl, &status, &len);
        cr_assert_not_null(body, "response %d", k);
        cr_assert_eq(status, 200);
        cr_assert_eq(len, big);
        cr_assert_eq(memcmp(body, g_blob->data, big), 0, "response %d corrupted", k);
        free(body);
    }
    for (k = 0; k < 100 && atomic_load(&g_blob->refs) != 1; k++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&g_blob->refs), 1);
    cl_close(cl);
    util_blob_unref(g_blob);
    g_blob = NULL;
}

static void start_write_timeout(void)
{
    struct http_config cfg;

    base_config(&cfg);
    cfg.limits.write_timeout_ms = 300;
    start_server(&cfg);
}

Test(http, write_timeout_closes_a_client_that_does_not_read, .init = start_write_timeout,
     .fini = stop_server)
{
    struct client *cl = NULL;
    struct http_stats st;
    int rcvbuf = 4096;
    int i = 0;

    g_blob = util_blob_new(NULL, 32u << 20);
    cr_assert_not_null(g_blob);
    memset(g_blob->data, 'z', g_blob->len);
    cl = cl_open(g_port);
    cr_assert_eq(setsockopt(cl->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
    cl_send(cl, GET("/blob"));
    for (i = 0; i < 300; i++) {
        http_server_stats(g_srv, &st);
        if (st.timeouts > 0)
            break;
        sleep_ms(10);
    }
    cr_assert_eq(st.timeouts, 1, "stalled write closed by the timer");
    for (i = 0; i < 100 && atomic_load(&g_blob->refs) != 1; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&g_blob->refs), 1, "the cancelled write dropped its reference");
    cl_close(cl);
    util_blob_unref(g_blob);
    g_blob = NULL;
}

Test(http, graceful_stop_finishes_in_flight_request)
{
    struct client *cl = NULL;
    struct client *idle = NULL;
    struct reply r;
    int i = 0;

    start_default();
    cr_assert_eq(atomic_load(&g_inits), 2, "init hook on each loop before start returns");
    idle = cl_open(g_port);
    cl = cl_open(g_port);
    cl_send(cl, GET("/slower/inflight"));
    sleep_ms(100);
    http_server_stop(g_srv);
    http_server_stop(g_srv); /* idempotent */
    /* The idle keep-alive connection is closed promptly. */
    cr_assert_eq(cl_wait_closed(idle, 2000), 1);
    /* The in-flight one is answered, with Connection: close, then closed. */
    cr_assert_eq(cl_read(cl, &r, 0), 0);
    cr_assert_eq(r.status, 200);
    cr_assert_str_eq(r.body, "slow:/slower/inflight");
    cr_assert_not_null(strstr(r.head, "\r\nConnection: close\r\n"));
    cr_assert_eq(cl_wait_closed(cl, 2000), 1);
    for (i = 0; i < 300 && !atomic_load(&g_run_done); i++)
        sleep_ms(10);
    cr_assert(atomic_load(&g_run_done), "http_server_run returned");
    cr_assert_eq(pthread_join(g_runner, NULL), 0);
    cr_assert_eq(g_run_rc, 0);
    cr_assert_eq(atomic_load(&g_finis), 2, "fini hook on each loop");
    http_server_free(g_srv);
    g_srv = NULL;
    cl_close(cl);
    cl_close(idle);
}

Test(http, unanswered_request_ends_with_the_grace_period)
{
    struct client *cl = NULL;
    struct timespec t0, t1;
    double waited = 0;

    start_default();
    cl = cl_open(g_port);
    cl_send(cl, GET("/never"));
    while (atomic_load(&g_slow_done) == 0)
        sleep_ms(10);
    cr_assert_eq(clock_gettime(CLOCK_MONOTONIC, &t0), 0);
    http_server_stop(g_srv);
    cr_assert_eq(pthread_join(g_runner, NULL), 0);
    cr_assert_eq(clock_gettime(CLOCK_MONOTONIC, &t1), 0);
    waited = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* The grace period is 5 s, checked by a timer of up to 1 s period. */
    cr_assert(waited >= 4.5 && waited < 8.0, "shutdown took %.2f s", waited);
    cr_assert_eq(cl_wait_closed(cl, 1000), 1);
    http_server_free(g_srv); /* the zombie request is freed with its loop (ASan checks) */
    g_srv = NULL;
    cl_close(cl);
}

Test(http, sigterm_stops_run)
{
    start_default();
    /* http_server_run installs the handler on its own thread: give it a moment to get there. */
    sleep_ms(300);
    cr_assert_eq(kill(getpid(), SIGTERM), 0);
    cr_assert_eq(pthread_join(g_runner, NULL), 0);
    cr_assert_eq(g_run_rc, 0);
    http_server_free(g_srv);
    g_srv = NULL;
}

/* A port already listening makes start fail with a log line naming the address, whether its
 * holder is a plain listener or another process using SO_REUSEPORT (which would otherwise let
 * us bind too and silently share its connections). */
static void expect_bind_failure(int holder_reuseport)
{
    struct http_config cfg;
    struct http_server *srv = NULL;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    char log[4096] = "";
    char want[64];
    FILE *tmp = tmpfile();
    int saved_stderr = -1;
    int taken = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    int rc = 0;

    cr_assert_not_null(tmp);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (holder_reuseport)
        cr_assert_eq(setsockopt(taken, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
    cr_assert_eq(bind(taken, (struct sockaddr *)&sin, sizeof(sin)), 0);
    cr_assert_eq(listen(taken, 1), 0);
    cr_assert_eq(getsockname(taken, (struct sockaddr *)&sin, &len), 0);
    base_config(&cfg);
    cfg.n_listeners = 1;
    cfg.listeners[0].port = ntohs(sin.sin_port);
    cr_assert_eq(http_server_new(&cfg, &srv), 0);
    /* Capture the log line (stderr) around the failing start. */
    fflush(stderr);
    saved_stderr = dup(STDERR_FILENO);
    cr_assert_eq(dup2(fileno(tmp), STDERR_FILENO), STDERR_FILENO);
    rc = http_server_start(srv);
    fflush(stderr);
    cr_assert_eq(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
    (void)close(saved_stderr); /* restored above */
    cr_assert_neq(rc, 0, "started on a port another socket (reuseport %d) listens on",
                  holder_reuseport);
    rewind(tmp);
    len = (socklen_t)fread(log, 1, sizeof(log) - 1, tmp);
    log[len] = '\0';
    (void)snprintf(want, sizeof(want), "127.0.0.1:%d", cfg.listeners[0].port);
    cr_assert_not_null(strstr(log, want), "log does not name %s: %s", want, log);
    http_server_free(srv);
    (void)close(taken); /* test socket */
    (void)fclose(tmp);  /* temporary file */
}

Test(http, bind_failure_names_the_address)
{
    expect_bind_failure(0);
}

Test(http, port_shared_through_reuseport_is_refused)
{
    expect_bind_failure(1);
}

Test(http, config_is_validated)
{
    struct http_config cfg;
    struct http_server *srv = NULL;

    base_config(&cfg);
    cfg.workers = 0;
    cr_assert_neq(http_server_new(&cfg, &srv), 0);
    cr_assert_null(srv);
    base_config(&cfg);
    cfg.listeners[1].kind = 7;
    cr_assert_neq(http_server_new(&cfg, &srv), 0);
    base_config(&cfg);
    cr_assert_eq(http_server_new(&cfg, &srv), 0);
    cr_assert_neq(http_server_route(srv, 0, "GET", "/", text_handler, "x"), 0);
    cr_assert_neq(http_server_route(srv, HTTP_PUBLIC, "GET", NULL, text_handler, "x"), 0);
    cr_assert_eq(http_server_run(srv), UTIL_EINVAL, "run before start");
    http_server_free(srv); /* never started */
}

/* Out of memory in the server (STYLE: fail the Nth allocation). For every allocation that serving
 * one keep-alive connection with two pipelined requests makes, that one allocation fails, in
 * whichever thread it happens. The first request is built to need every kind the server makes
 * beyond its pools: the connection, more header slots than are inline, a request larger than the
 * inline arena, and an echoed body larger than the inline response head. Each time the client
 * must get correct answers, an error status, or a closed connection, and never wait for its read
 * timeout (a request silently dropped); the blob's reference count must come back (no response
 * leaked in flight), and the next connection is served normally. ASan also checks for leaks. */
Test(http, every_allocation_failure_is_survived, .init = start_default, .fini = stop_server,
     .timeout = 300)
{
    static const char payload[] = "immutable signed bytes";
    static char request[16384], body[3000];
    static struct reply first, second, check;
    int answered = 0, refused = 0;
    size_t len = 0;
    long n;

    g_blob = util_blob_new(payload, sizeof(payload) - 1);
    cr_assert_not_null(g_blob);
    memset(body, 'b', sizeof(body) - 1);
    len = (size_t)snprintf(request, sizeof(request), "POST /echo HTTP/1.1\r\nHost: t\r\n");
    for (int i = 0; i < 30; i++) /* more header slots than HTTP_HDRS_INLINE (24) */
        len += (size_t)snprintf(request + len, sizeof(request) - len, "X-H%d: %d\r\n", i, i);
    len += (size_t)snprintf(request + len, sizeof(request) - len,
                            "Content-Length: %zu\r\n\r\n%sGET /blob HTTP/1.1\r\nHost: t\r\n\r\n",
                            strlen(body), body);
    cr_assert_lt(len, sizeof(request) - 1);
    for (n = 1; n < 5000; n++) {
        struct client *cl = cl_open(g_port); /* the client's own allocation, before arming */
        int a, b = -1, hit, err = 0, completed;

        ts_failalloc_arm(n);
        cl_send(cl, request);
        a = cl_read(cl, &first, 0);
        err = a != 0 ? errno : 0;
        if (a == 0 && first.status == 200) {
            b = cl_read(cl, &second, 0);
            err = b != 0 ? errno : 0;
        }
        hit = ts_failalloc_disarm();
        cl_close(cl);
        cr_assert(err != EAGAIN && err != EWOULDBLOCK,
                  "allocation %ld: the server neither answered nor closed the connection", n);
        if (a == 0 && first.status == 200) {
            cr_assert_str_eq(first.body, body, "allocation %ld: wrong echo", n);
            if (b == 0 && second.status == 200)
                cr_assert_str_eq(second.body, payload, "allocation %ld: wrong blob", n);
            else if (b == 0)
                cr_assert(second.status == 503 || second.status == 500,
                          "allocation %ld: second status %d", n, second.status);
        } else if (a == 0) {
            cr_assert(first.status == 503 || first.status == 500, "allocation %ld: status %d", n,
                      first.status);
        }
        /* Completed: both answered 200 (their bytes were checked above). */
        completed = a == 0 && first.status == 200 && b == 0 && second.status == 200;
        answered += completed;
        refused += hit && !completed;
        cr_log_info("allocation %ld: %s (first %d, status %d; second %d)", n,
                    !hit        ? "not reached"
                    : completed ? "absorbed"
                                : "refused",
                    a, first.status, b);
        /* The server is intact: a fresh connection gets its answer. */
        cr_assert_eq(fetch(g_port, GET("/a"), &check), 0, "allocation %ld broke the server", n);
        cr_assert_str_eq(check.body, "a:/a");
        if (!hit)
            break; /* the exchange completed without reaching allocation n: every one was tried */
    }
    cr_log_info("http: %ld allocations failed in turn; %d exchanges completed, %d refused", n - 1,
                answered, refused);
    cr_assert_geq(n, 4, "only %ld allocations: the request no longer leaves the pools", n - 1);
    cr_assert_lt(n, 5000, "the exchange never completed without an injected failure");
    /* Some failures are absorbed (a response write that falls back); the answers were checked. */
    cr_assert_gt(refused, 0, "no injected failure showed: the test does not reach the server");
    for (int i = 0; i < 100 && atomic_load(&g_blob->refs) != 1; i++)
        sleep_ms(10);
    cr_assert_eq(atomic_load(&g_blob->refs), 1, "a response in flight kept the blob");
    util_blob_unref(g_blob);
    g_blob = NULL;
}

/* A SIGTERM that arrives after http_server_start, while the caller still starts its own services
 * (pkiva serve loads its OCSP index there, seconds for millions of certificates, and /healthz
 * already answers), is handled when the control loop runs: a graceful stop. It used to meet the
 * default action, which killed the process half started. */
Test(http, sigterm_between_start_and_run_stops_gracefully)
{
    struct http_config cfg;

    base_config(&cfg);
    cr_assert_eq(http_server_new(&cfg, &g_srv), 0);
    cr_assert_eq(http_server_start(g_srv), 0);
    cr_assert_eq(raise(SIGTERM), 0);
    cr_assert_eq(http_server_run(g_srv), 0, "run did not return after the signal");
    http_server_free(g_srv);
    g_srv = NULL;
}
