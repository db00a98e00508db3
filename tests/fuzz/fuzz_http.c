/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for HTTP framing: every input goes, unchanged, through a real TCP connection into
 * a real http_server (llhttp, the request arena, limits, pipelining, the ordered response queue,
 * deferred answers, lingering close). The server runs in this process (one loop thread, port 0,
 * deliberately small limits so that inputs of a few kilobytes reach every rejection), started
 * once. No internal entry point is needed, so the fuzzer sees exactly what a client can send.
 * The seed corpus in corpus/http replays as part of test_fuzz_replay. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <errno.h>
#include <http/http.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FUZZ_HTTP_DEADLINE_MS 10000 /* a connection the server neither answers nor closes: a hang */

static struct http_server *server;
static pthread_t runner;
static int port;

/* Reads every byte the handler may look at, so that an exposed span that is too long or not
 * NUL-terminated shows up under AddressSanitizer. */
static unsigned touch(const char *p, size_t len)
{
    unsigned sum = 0;
    for (size_t i = 0; i < len; i++)
        sum += (unsigned char)p[i];
    return sum + (unsigned char)p[len];
}

static void respond_summary(struct http_request *req)
{
    size_t target_len = 0, host_len = 0, ctype_len = 0, body_len = 0;
    const char *target = http_request_target(req, &target_len);
    const char *host = http_request_header(req, "Host", &host_len);
    const char *ctype = http_request_header(req, "content-type", &ctype_len);
    const unsigned char *body = http_request_body(req, &body_len);
    unsigned sum = touch(target, target_len) + touch(http_request_method(req), 0);
    char text[160];

    if (host != NULL)
        sum += touch(host, host_len);
    if (ctype != NULL)
        sum += touch(ctype, ctype_len);
    for (size_t i = 0; i < body_len; i++)
        sum += body[i];
    (void)snprintf(text, sizeof(text), "%s %zu %zu %zu %u %s\n", http_request_method(req),
                   target_len, host_len, body_len, sum, http_request_peer(req)); /* fits */
    http_request_respond_text(req, 200, "text/plain", text);
}

static void handle_now(void *ctx, struct http_request *req)
{
    (void)ctx;
    respond_summary(req);
}

static void timer_closed(uv_handle_t *handle)
{
    free(handle);
}

static void on_later(uv_timer_t *timer)
{
    respond_summary(timer->data);
    uv_close((uv_handle_t *)timer, timer_closed);
}

/* /later answers on a later loop turn, as the OCSP and admin handlers do after a worker job, so
 * that pipelined requests complete out of order and connections die while a handler holds one. */
static void handle_later(void *ctx, struct http_request *req)
{
    uv_timer_t *timer = malloc(sizeof(*timer));
    (void)ctx;
    if (timer == NULL || uv_timer_init(http_request_loop(req), timer) != 0) {
        free(timer);
        http_request_respond_text(req, 503, "text/plain", "busy\n");
        return;
    }
    timer->data = req;
    if (uv_timer_start(timer, on_later, 0, 0) != 0) {
        http_request_respond_text(req, 503, "text/plain", "busy\n");
        uv_close((uv_handle_t *)timer, timer_closed);
    }
}

static int ready(void *ctx, char *why, size_t why_len)
{
    static _Atomic unsigned calls;
    (void)ctx;
    if (calls++ % 2 == 0)
        return 1;
    (void)snprintf(why, why_len, "fuzzing");
    return 0;
}

static void *run_server(void *arg)
{
    (void)http_server_run(arg); /* returns 0 after http_server_stop */
    return NULL;
}

static void start_server(void)
{
    struct http_config cfg;

    memset(&cfg, 0, sizeof(cfg));
    cfg.workers = 1;
    cfg.n_listeners = 1;
    (void)snprintf(cfg.listeners[0].host, sizeof(cfg.listeners[0].host), "127.0.0.1");
    cfg.listeners[0].port = 0;
    cfg.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&cfg.limits);
    cfg.limits.max_url = 300;
    cfg.limits.max_headers = 12;
    cfg.limits.max_header_bytes = 1024;
    cfg.limits.max_body = 1024;
    cfg.limits.max_pipelined = 3;
    cfg.limits.header_timeout_ms = 3000;
    cfg.limits.body_timeout_ms = 3000;
    cfg.server_header = "pkiva-fuzz";
    util_log_set_level(UTIL_LOG_ERROR); /* limits log at debug: keep the fuzzer's output clean */
    if (http_server_new(&cfg, &server) != UTIL_OK ||
        http_server_route(server, HTTP_PUBLIC, NULL, "/", handle_now, NULL) != UTIL_OK ||
        http_server_route(server, HTTP_PUBLIC, "GET", "/later", handle_later, NULL) != UTIL_OK ||
        http_server_route(server, HTTP_PUBLIC, "POST", "/later", handle_later, NULL) != UTIL_OK) {
        fprintf(stderr, "fuzz_http: cannot create the server\n");
        abort();
    }
    http_server_set_ready_fn(server, ready, NULL);
    if (http_server_start(server) != UTIL_OK) {
        fprintf(stderr, "fuzz_http: cannot start the server\n");
        abort();
    }
    port = http_server_port(server, 0);
    if (pthread_create(&runner, NULL, run_server, server) != 0)
        abort();
}

static int64_t now_ms(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* cannot fail for CLOCK_MONOTONIC */
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t fuzz_http_exchange(const uint8_t *data, size_t size, char *resp, size_t resp_cap)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    struct sockaddr_in addr;
    struct linger no_linger = {1, 0};
    int64_t deadline;
    size_t sent = 0, got = 0;
    char scratch[4096];
    int fd;

    (void)pthread_once(&once, start_server);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        abort();
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 && errno != EINPROGRESS)
        abort();
    deadline = now_ms() + FUZZ_HTTP_DEADLINE_MS;
    if (size == 0)
        (void)shutdown(fd, SHUT_WR); /* fails only if the peer reset: nothing to do */
    /* Write everything, then half-close, reading all the while (the server may answer and close
     * before it has read the whole input). Done when the server closes. */
    for (;;) {
        struct pollfd pfd = {fd, POLLIN | (sent < size ? POLLOUT : 0), 0};
        int64_t left = deadline - now_ms();
        ssize_t n;
        if (left <= 0) {
            fprintf(stderr, "fuzz_http: the server neither answered nor closed within %d ms\n",
                    FUZZ_HTTP_DEADLINE_MS);
            abort();
        }
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            abort();
        if ((pfd.revents & POLLOUT) != 0 && sent < size) {
            n = send(fd, data + sent, size - sent, MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                sent = size; /* the server closed early: its answer is still readable */
            if (sent == size)
                (void)shutdown(fd, SHUT_WR); /* fails only if the peer reset: nothing to do */
        }
        if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
            char *dst = got < resp_cap ? resp + got : scratch;
            size_t room = got < resp_cap ? resp_cap - got : sizeof(scratch);
            n = recv(fd, dst, room, 0);
            if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
                break;
            if (n > 0 && got < resp_cap)
                got += (size_t)n;
        }
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof(no_linger)); /* no TIME_WAIT */
    (void)close(fd); /* nothing buffered to lose */
    return got;
}

void fuzz_http_shutdown(void)
{
    if (server == NULL)
        return;
    http_server_stop(server);
    (void)pthread_join(runner, NULL); /* our own joinable thread */
    http_server_free(server);
    server = NULL;
}

int fuzz_http_one(const uint8_t *data, size_t size)
{
    char resp[512];
    (void)fuzz_http_exchange(data, size, resp, sizeof(resp)); /* any answer is acceptable */
    return 0;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_http_one(data, size);
}
#endif
