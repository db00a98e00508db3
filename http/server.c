/* SPDX-License-Identifier: Apache-2.0 */
/* The http server's life cycle: configuration and the route table, one loop thread per worker with
 * its own SO_REUSEPORT listening sockets, accepting under a per-turn budget, the coarse per-loop
 * timer (timeouts and the cached Date header), routing, graceful shutdown and the statistics. */

/* DESIGN
 *
 * Threads. The thread that calls http_server_run owns a small control loop (SIGTERM, SIGINT and
 * the http_server_stop async). Each of cfg->workers threads owns one uv_loop_t and everything on
 * it: its listening sockets (one per configured listener, all bound to the same port with
 * SO_REUSEPORT so the kernel spreads connections), its connections, requests, buffers, a timer, and
 * its counters. Loops share nothing mutable except the process-wide connection count (an atomic)
 * and reference-counted immutable blobs handed in by handlers. The route table is built before
 * http_server_start and never changes afterwards, so lookups take no lock.
 *
 * Ownership. A connection (conn.c) owns its requests until the handler is called; from then until
 * http_request_respond the handler holds the request. If the connection dies meanwhile, requests the
 * handler still holds become zombies on the loop's list: detached from the connection, still
 * valid, freed by http_request_respond (or at loop teardown, when no handler can run any more).
 * A response the socket takes at once (uv_try_write) frees its request on the spot; one that must
 * wait is owned by its uv_write and freed in the write callback, which libuv runs before the
 * connection's close callback, so a connection is freed only after every write on it has
 * completed or been cancelled. A blob body is referenced until then, never copied.
 *
 * Invariants. Responses leave a connection in request order: a per-connection FIFO holds parsed
 * requests; a response is written only when every earlier one has been handed to uv_write. At most
 * max_pipelined requests per connection are parsed but unanswered; past that the parser pauses
 * and reading stops until a response has been written. Nothing in a request points into the read
 * buffer, so the buffer is reused freely (and lent back to the loop's pool when empty).
 *
 * Failure modes. Limits are answered with a status (400, 408, 413, 414, 431) and a close, counted,
 * and logged at DEBUG only. Over max_connections, or over max_connections_per_client for its
 * address, a connection is accepted and closed at once (counted). Out
 * of memory on the request path closes the one connection concerned (or answers 503 when a request
 * object exists); at start-up it fails http_server_start. Shutdown: listeners close first, idle
 * connections close, busy ones finish their parsed requests (answered with Connection: close)
 * within HTTP_GRACE_MS, then whatever is left is closed; the per-loop fini hook runs on the loop
 * thread once its connections are gone, then the thread exits and is joined. SO_REUSEPORT lets
 * any process of the same user bind the same port and take a share of the connections: run the
 * service under its own user.
 *
 * Descriptors. A flood of idle connections must never take the descriptors that the HSM, the store,
 * CRL files and logs need: SoftHSM2 that cannot open its object files fails signatures and, worse,
 * forgets its token's objects until the process restarts. So http_server_start raises the soft
 * RLIMIT_NOFILE to the hard limit, counts what is open, and clamps max_connections (logged) to what
 * leaves HTTP_FD_RESERVE descriptors free beyond the loops' own; an accept-and-close past the
 * limits holds one descriptor for an instant. If accept(2) still fails with EMFILE (something else
 * took the reserve), libuv drains the backlog with a descriptor it keeps spare; should that one be
 * gone, each loop has its own spare (spare_fd) and drains with it, so a listener that stays
 * readable never spins. max_connections_per_client keeps one address (an IPv6 /64) from taking
 * every connection slot.
 *
 * TLS. A listener with a certificate gets one SSL_CTX, built by http_server_new and shared
 * read-only by every loop (OpenSSL makes that safe once it is set up). Each connection owns an
 * SSL object whose input and output are memory BIOs, so libuv keeps doing all socket I/O: bytes
 * read are fed to the SSL object and what it decrypts goes into the read buffer that llhttp
 * parses; a batch of response buffers is encrypted into one heap buffer owned by the batch's
 * first request and then written exactly like a plain batch. Handshake messages, alerts and
 * close_notify go out as writes of their own; libuv keeps queued writes in order and a plain
 * uv_try_write never jumps them, so the ciphertext leaves in the order the SSL object made it.
 * The handshake must end within header_timeout; a failed one closes the connection, is counted
 * and logged at DEBUG. Client certificates are asked for but optional (SSL_VERIFY_PEER with a
 * callback that never aborts): what verified is recorded per connection and copied into each
 * request, so handlers decide. Plain listeners take none of these paths (conn->ssl is NULL). */
#include "http_int.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HTTP_LISTEN_BACKLOG 1024

static void on_ctl_async(uv_async_t *async);

static int config_valid(const struct http_config *cfg)
{
    const struct http_limits *l = &cfg->limits;
    int i = 0;

    if (cfg->workers < 1 || cfg->workers > 256)
        return 0;
    if (cfg->n_listeners < 1 || cfg->n_listeners > HTTP_MAX_LISTENERS)
        return 0;
    for (i = 0; i < cfg->n_listeners; i++) {
        const struct http_listener_config *lc = &cfg->listeners[i];
        if (lc->kind != HTTP_PUBLIC && lc->kind != HTTP_ADMIN)
            return 0;
        if (lc->port < 0 || lc->port > 65535)
            return 0;
        if (memchr(lc->host, '\0', sizeof(lc->host)) == NULL)
            return 0;
        /* Key and client CA only make sense with a certificate, client CRLs with a client CA. */
        if (lc->tls_cert_file == NULL &&
            (lc->tls_key_file != NULL || lc->tls_client_ca_file != NULL))
            return 0;
        if (lc->tls_client_crl_file != NULL && lc->tls_client_ca_file == NULL)
            return 0;
    }
    if (l->max_connections < 1 || l->max_connections_per_client < 0 || l->max_url < 1 ||
        l->max_headers < 1 || l->max_header_bytes < 1)
        return 0;
    if (l->max_pipelined < 1 || l->header_timeout_ms < 1 || l->body_timeout_ms < 1)
        return 0;
    if (l->idle_timeout_ms < 1 || l->write_timeout_ms < 1)
        return 0;
    /* The arena offsets are 32-bit. */
    if (l->max_url > (1u << 30) || l->max_header_bytes > (1u << 30) || l->max_body > (1u << 30))
        return 0;
    return 1;
}

int http_server_new(const struct http_config *cfg, struct http_server **out)
{
    struct http_server *srv = NULL;
    int rc = UTIL_OK;
    int loop_ok = 0;

    *out = NULL;
    if (cfg == NULL || !config_valid(cfg)) {
        UTIL_ERROR("http", "invalid server configuration");
        rc = UTIL_ECONFIG;
        goto out;
    }
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    srv->cfg = *cfg;
    srv->cfg.server_header = NULL;
    for (int i = 0; i < cfg->n_listeners; i++) {
        const struct http_listener_config *lc = &cfg->listeners[i];
        if (lc->tls_cert_file != NULL) {
            rc = http__tls_ctx_new(lc, &srv->tls_ctx[i]);
            if (rc != UTIL_OK)
                goto out;
        }
        /* The caller's strings need not outlive this call. */
        srv->cfg.listeners[i].tls_cert_file = NULL;
        srv->cfg.listeners[i].tls_key_file = NULL;
        srv->cfg.listeners[i].tls_client_ca_file = NULL;
        srv->cfg.listeners[i].tls_client_crl_file = NULL;
    }
    if (cfg->server_header != NULL) {
        srv->server_header = strdup(cfg->server_header);
        if (srv->server_header == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
    }
    if (uv_loop_init(&srv->ctl_loop) != 0) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    loop_ok = 1;
    /* Initialised here, not in run, so that http_server_stop works before run is entered. */
    if (uv_async_init(&srv->ctl_loop, &srv->ctl_async, on_ctl_async) != 0) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    srv->ctl_async.data = srv;
    if (uv_mutex_init(&srv->start_mutex) != 0) {
        uv_close((uv_handle_t *)&srv->ctl_async, NULL);
        (void)uv_run(&srv->ctl_loop, UV_RUN_DEFAULT); /* only runs the close callback */
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (uv_cond_init(&srv->start_cond) != 0) {
        uv_mutex_destroy(&srv->start_mutex);
        uv_close((uv_handle_t *)&srv->ctl_async, NULL);
        (void)uv_run(&srv->ctl_loop, UV_RUN_DEFAULT); /* only runs the close callback */
        rc = UTIL_ENOMEM;
        goto out;
    }
    *out = srv;
    srv = NULL;
out:
    if (srv != NULL) {
        if (loop_ok)
            (void)uv_loop_close(&srv->ctl_loop); /* nothing is open on it any more */
        for (int i = 0; i < HTTP_MAX_LISTENERS; i++)
            SSL_CTX_free(srv->tls_ctx[i]);
        free(srv->server_header);
        free(srv);
    }
    return rc;
}

int http_server_route(struct http_server *srv, unsigned kind_mask, const char *method,
                      const char *prefix, http_handler_fn handler, void *ctx)
{
    struct http__route *route = NULL;
    struct http__route *grown = NULL;
    int rc = UTIL_OK;

    if (srv == NULL || srv->started || prefix == NULL || handler == NULL ||
        (kind_mask & (HTTP_PUBLIC | HTTP_ADMIN)) == 0) {
        rc = UTIL_EINVAL;
        goto out;
    }
    if (method != NULL && (method[0] == '\0' || strlen(method) >= sizeof(route->method))) {
        rc = UTIL_EINVAL;
        goto out;
    }
    if (srv->n_routes == srv->routes_cap) {
        int cap = srv->routes_cap ? srv->routes_cap * 2 : 8;
        grown = realloc(srv->routes, (size_t)cap * sizeof(*grown));
        if (grown == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        srv->routes = grown;
        srv->routes_cap = cap;
    }
    route = &srv->routes[srv->n_routes];
    memset(route, 0, sizeof(*route));
    route->prefix = strdup(prefix);
    if (route->prefix == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    route->prefix_len = strlen(prefix);
    route->kind_mask = kind_mask;
    if (method != NULL)
        memcpy(route->method, method, strlen(method) + 1);
    route->handler = handler;
    route->ctx = ctx;
    srv->n_routes++;
out:
    return rc;
}

int http_server_on_loop(struct http_server *srv,
                        void (*init)(void *ctx, uv_loop_t *loop, int index),
                        void (*fini)(void *ctx, uv_loop_t *loop, int index), void *ctx)
{
    if (srv == NULL || srv->started)
        return UTIL_EINVAL;
    if (srv->n_hooks >= HTTP__MAX_LOOP_HOOKS)
        return UTIL_EBUSY;
    srv->hooks[srv->n_hooks].init = init;
    srv->hooks[srv->n_hooks].fini = fini;
    srv->hooks[srv->n_hooks].ctx = ctx;
    srv->n_hooks++;
    return UTIL_OK;
}

void http_server_set_ready_fn(struct http_server *srv,
                              int (*ready)(void *ctx, char *why, size_t why_len), void *ctx)
{
    if (srv == NULL || srv->started)
        return;
    srv->ready = ready;
    srv->ready_ctx = ctx;
}

/* ---- routing -------------------------------------------------------------------------------- */

/* Longest prefix first; equal lengths keep registration order (the table is small, so a stable
 * insertion sort is plenty). */
void http_server_set_start_hook(struct http_server *srv, int (*hook)(void *ctx), void *ctx)
{
    srv->start_hook = hook;
    srv->start_hook_ctx = ctx;
}

static void routes_sort(struct http_server *srv)
{
    int i = 0, j = 0;

    for (i = 1; i < srv->n_routes; i++) {
        struct http__route key = srv->routes[i];
        for (j = i - 1; j >= 0 && srv->routes[j].prefix_len < key.prefix_len; j--)
            srv->routes[j + 1] = srv->routes[j];
        srv->routes[j + 1] = key;
    }
}

static int path_is(const char *target, size_t len, const char *path)
{
    size_t plen = strlen(path);
    return len >= plen && memcmp(target, path, plen) == 0 && (len == plen || target[plen] == '?');
}

void http_request_respond_405(struct http_request *req, const char *allow)
{
    char headers[160];
    struct http_response resp = {0};

    (void)snprintf(headers, sizeof(headers), "Allow: %s\r\n", allow); /* allow is bounded */
    resp.status = 405;
    resp.content_type = "text/plain";
    resp.body_bytes = "method not allowed\n";
    resp.body_len = strlen("method not allowed\n");
    resp.headers = headers;
    http_request_respond(req, &resp);
}

static void serve_readyz(struct http_server *srv, struct http_request *req)
{
    char why[256] = "";
    char body[300];
    int ready = 1;

    if (srv->ready != NULL)
        ready = srv->ready(srv->ready_ctx, why, sizeof(why));
    why[sizeof(why) - 1] = '\0';
    if (ready) {
        /* Ready but degraded (one HSM key refused, say): 200, with the reason for operators. */
        if (why[0] != '\0') {
            (void)snprintf(body, sizeof(body), "ready (degraded): %s\n", why); /* may cut */
            http_request_respond_text(req, 200, "text/plain", body);
            return;
        }
        http_request_respond_text(req, 200, "text/plain", "ready\n");
        return;
    }
    if (why[0] == '\0')
        (void)snprintf(why, sizeof(why), "not ready");
    why[sizeof(why) - 1] = '\0';
    (void)snprintf(body, sizeof(body), "%s\n", why); /* truncation is harmless for a reason text */
    http_request_respond_text(req, 503, "text/plain", body);
}

void http__dispatch(struct http_request *req)
{
    struct http_server *srv = req->lp->srv;
    const char *method = req->is_head ? "GET" : req->method;
    size_t target_len = 0;
    const char *target = http_request_target(req, &target_len);
    char allow[128] = "";
    size_t allow_len = 0;
    int i = 0;

    if (path_is(target, target_len, "/healthz") || path_is(target, target_len, "/readyz")) {
        if (strcmp(method, "GET") != 0) {
            http_request_respond_405(req, "GET, HEAD");
        } else if (target[1] == 'h') {
            http_request_respond_text(req, 200, "text/plain", "ok\n");
        } else {
            serve_readyz(srv, req);
        }
        return;
    }
    for (i = 0; i < srv->n_routes; i++) {
        const struct http__route *route = &srv->routes[i];
        /* The second octet (the first is '/' on both sides) rules most routes out without a call. */
        if ((route->kind_mask & req->kind) == 0 || target_len < route->prefix_len ||
            (route->prefix_len > 1 && target[1] != route->prefix[1]) ||
            memcmp(target, route->prefix, route->prefix_len) != 0)
            continue;
        if (route->method[0] == '\0' || strcmp(route->method, method) == 0) {
            route->handler(route->ctx, req);
            return;
        }
        /* Path matches, method does not: remember the method for Allow (deduplicated). */
        if (strstr(allow, route->method) == NULL &&
            allow_len + strlen(route->method) + 8 < sizeof(allow)) {
            int n = snprintf(allow + allow_len, sizeof(allow) - allow_len, "%s%s%s",
                             allow_len ? ", " : "", route->method,
                             strcmp(route->method, "GET") == 0 ? ", HEAD" : "");
            if (n > 0)
                allow_len += (size_t)n;
        }
    }
    if (allow_len > 0)
        http_request_respond_405(req, allow);
    else
        http_request_respond_text(req, 404, "text/plain", "not found\n");
}

/* ---- per-loop machinery --------------------------------------------------------------------- */

static void loop_update_date(struct http__loop *lp)
{
    time_t now = time(NULL);
    char date[40];
    int n = 0;

    if ((int64_t)now == lp->date_sec)
        return;
    http_date_format((int64_t)now, date, sizeof(date));
    n = snprintf(lp->date, sizeof(lp->date), "Date: %s\r\n", date);
    if (n > 0 && (size_t)n < sizeof(lp->date)) {
        lp->date_len = (size_t)n;
        lp->date_sec = (int64_t)now;
    }
}

/* The timer period: a quarter of the shortest timeout, between 50 ms and 1 s. Timeouts fire up to
 * one period late, which is what "coarse" buys. */
static uint64_t tick_period(const struct http_limits *l)
{
    int shortest = l->header_timeout_ms;

    if (l->body_timeout_ms < shortest)
        shortest = l->body_timeout_ms;
    if (l->idle_timeout_ms < shortest)
        shortest = l->idle_timeout_ms;
    if (l->write_timeout_ms < shortest)
        shortest = l->write_timeout_ms;
    shortest /= 4;
    if (shortest < 50)
        shortest = 50;
    if (shortest > 1000)
        shortest = 1000;
    return (uint64_t)shortest;
}

static void loop_finish(struct http__loop *lp)
{
    struct http_server *srv = lp->srv;

    if (!lp->stopping || lp->fini_done || lp->n_conns > 0)
        return;
    lp->fini_done = 1;
    /* The fini hook runs while the loop still runs so that it may close handles it created. */
    /* Reverse order of init, like destructors. */
    for (int i = srv->n_hooks - 1; i >= 0; i--)
        if (srv->hooks[i].fini != NULL)
            srv->hooks[i].fini(srv->hooks[i].ctx, &lp->loop, lp->index);
    uv_close((uv_handle_t *)&lp->timer, NULL);
    uv_close((uv_handle_t *)&lp->stop_async, NULL);
    uv_close((uv_handle_t *)&lp->check, NULL);
    uv_close((uv_handle_t *)&lp->idle, NULL);
}

void http__loop_conn_closed(struct http__loop *lp)
{
    lp->n_conns--;
    loop_finish(lp);
}

static void on_tick(uv_timer_t *timer)
{
    struct http__loop *lp = timer->data;
    uint64_t now = uv_now(&lp->loop);
    struct http__conn *conn = NULL;
    struct http__conn *next = NULL;

    loop_update_date(lp);
    /* O(open connections) per tick, bounded by max_connections: a few microseconds per thousand
     * connections, cheaper than maintaining a timer per connection on every request. */
    for (conn = lp->conns; conn != NULL; conn = next) {
        next = conn->next;
        if (lp->stopping && now >= lp->stop_deadline)
            http__conn_close(conn);
        else
            http__conn_tick(conn, now);
    }
}

static void on_check(uv_check_t *check)
{
    struct http__loop *lp = check->data;
    int i = 0;

    for (i = 0; i < lp->n_listeners; i++)
        lp->listeners[i].accepts_this_turn = 0;
}

static void on_idle(uv_idle_t *idle)
{
    struct http__loop *lp = idle->data;
    int i = 0;
    int again = 0;

    for (i = 0; i < lp->n_listeners; i++) {
        struct http__listener *lst = &lp->listeners[i];
        if (!lst->deferred || !lst->open)
            continue;
        lst->deferred = 0;
        lst->accepts_this_turn = 1;
        /* Takes the connection libuv holds back; uv_accept then resumes polling the listener. */
        http__conn_accept(lst);
        again |= lst->deferred;
    }
    if (!again)
        (void)uv_idle_stop(idle); /* cannot fail */
}

/* accept(2) failed with EMFILE or ENFILE and libuv could not drain the backlog itself (its spare
 * descriptor is gone too): without help it would call accept again at once, for ever. Close this
 * loop's spare, accept and close everything pending until the backlog is empty, and take the
 * spare back; then libuv's next accept finds nothing and the loop goes on. Counted; warned at
 * most every 10 s. */
static void drain_backlog(struct http__listener *lst, int status)
{
    struct http__loop *lp = lst->lp;
    uv_os_fd_t listen_fd = -1;
    uint64_t now = uv_now(&lp->loop);
    int fd = -1;

    http__stat_add(&lp->stats.accept_emfile, 1);
    if (lp->emfile_logged_at == 0 || now - lp->emfile_logged_at >= 10000) {
        lp->emfile_logged_at = now;
        UTIL_WARN("http", "loop %d: accept: %s; closing pending connections", lp->index,
                  uv_strerror(status));
    }
    if (uv_fileno((const uv_handle_t *)&lst->tcp, &listen_fd) != 0)
        return;
    if (lp->spare_fd >= 0) {
        (void)close(lp->spare_fd); /* /dev/null: nothing to flush */
        lp->spare_fd = -1;
    }
    for (;;) {
        fd = accept(listen_fd, NULL, NULL);
        if (fd < 0 && errno == EINTR)
            continue;
        if (fd < 0)
            break;
        (void)close(fd); /* refused: never read */
    }
    lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct http__listener *lst = server->data;
    struct http__loop *lp = lst->lp;

    if (status == UV_EMFILE || status == UV_ENFILE) {
        drain_backlog(lst, status);
        return;
    }
    if (status < 0) {
        UTIL_DEBUG("http", "accept failed: %s", uv_strerror(status));
        return;
    }
    if (lst->accepts_this_turn >= HTTP_ACCEPTS_PER_TURN) {
        /* Leave it in libuv: it stops polling this listener until on_idle accepts next turn, so a
         * connection storm cannot starve the connections already being served. */
        lst->deferred = 1;
        (void)uv_idle_start(&lp->idle, on_idle); /* cannot fail with a callback */
        return;
    }
    lst->accepts_this_turn++;
    http__conn_accept(lst);
    if (lst->deferred)
        (void)uv_idle_start(&lp->idle, on_idle); /* out of memory: retry next turn */
}

static void on_stop_async(uv_async_t *async)
{
    struct http__loop *lp = async->data;
    struct http__conn *conn = NULL;
    struct http__conn *next = NULL;
    int i = 0;

    if (lp->stopping)
        return;
    lp->stopping = 1;
    lp->stop_deadline = uv_now(&lp->loop) + HTTP_GRACE_MS;
    for (i = 0; i < lp->n_listeners; i++) {
        if (lp->listeners[i].open) {
            lp->listeners[i].open = 0;
            uv_close((uv_handle_t *)&lp->listeners[i].tcp, NULL);
        }
    }
    (void)uv_idle_stop(&lp->idle); /* cannot fail */
    for (conn = lp->conns; conn != NULL; conn = next) {
        next = conn->next;
        http__conn_drain(conn);
    }
    loop_finish(lp);
}

static void close_any(uv_handle_t *handle, void *arg)
{
    if (!uv_is_closing(handle))
        uv_close(handle, NULL);
}

/* Closes whatever is still open on a loop that no longer runs, then the loop itself. */
static void loop_teardown(struct http__loop *lp)
{
    int n_zombies = 0;
    int rc = 0;

    if (lp->spare_fd >= 0) {
        (void)close(lp->spare_fd); /* /dev/null: nothing to flush */
        lp->spare_fd = -1;
    }
    if (!lp->handles_init)
        return;
    uv_walk(&lp->loop, close_any, NULL);
    (void)uv_run(&lp->loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    rc = uv_loop_close(&lp->loop);
    if (rc != 0)
        UTIL_WARN("http", "loop %d: close failed: %s", lp->index, uv_strerror(rc));
    n_zombies = http__loop_release(lp);
    if (n_zombies > 0)
        UTIL_WARN("http", "loop %d: %d request(s) never answered by their handler", lp->index,
                  n_zombies);
    lp->handles_init = 0;
}

static void worker_main(void *arg)
{
    struct http__loop *lp = arg;
    struct http_server *srv = lp->srv;

    util_thread_name("http", lp->index);
    for (int i = 0; i < srv->n_hooks; i++)
        if (srv->hooks[i].init != NULL)
            srv->hooks[i].init(srv->hooks[i].ctx, &lp->loop, lp->index);
    uv_mutex_lock(&srv->start_mutex);
    srv->n_ready++;
    uv_cond_signal(&srv->start_cond);
    uv_mutex_unlock(&srv->start_mutex);
    (void)uv_run(&lp->loop, UV_RUN_DEFAULT); /* returns once loop_finish closed everything */
    loop_teardown(lp);
}

/* ---- listening sockets ---------------------------------------------------------------------- */

static void format_addr(const char *host, int port, char *out, size_t out_len)
{
    if (strchr(host, ':') != NULL)
        (void)snprintf(out, out_len, "[%s]:%d", host, port); /* for logs; truncation harmless */
    else
        (void)snprintf(out, out_len, "%s:%d", host, port); /* for logs; truncation harmless */
}

/* SO_REUSEPORT lets any process of the same user bind a port that is already listening and take
 * a share of its connections: a second pkiva started by mistake would silently split the traffic
 * with the first. Before the first socket of a listener is bound, a probe bind without
 * SO_REUSEPORT fails with EADDRINUSE if anyone listens there already. */
static int port_is_free(const struct sockaddr *sa, socklen_t sa_len, const char *name)
{
    int one = 1;
    int rc = UTIL_OK;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return util_errno(errno);
    /* SO_REUSEADDR only: connections of an earlier run in TIME_WAIT must not block a restart. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, sa, sa_len) != 0) {
        int err = errno;
        rc = err == EADDRINUSE ? UTIL_EIO : util_errno(err);
        UTIL_ERROR("http", "cannot bind %s: %s%s", name, uv_strerror(-err),
                   err == EADDRINUSE ? " (another process listens there)" : "");
    }
    (void)close(fd); /* the probe never listened */
    return rc;
}

/* Creates, binds and listens one SO_REUSEPORT socket. Debian's libuv 1.44 has no
 * UV_TCP_REUSEPORT, so the options are set on a raw fd that uv_tcp_open adopts later. probe:
 * check first that no other process listens on the address (the first socket of a listener). */
static int listen_socket(const struct http_listener_config *lc, int port, int probe, int *fd_out,
                         int *port_out)
{
    struct sockaddr_storage ss;
    socklen_t ss_len = 0;
    char name[96];
    int fd = -1;
    int one = 1;
    int rc = UTIL_OK;

    memset(&ss, 0, sizeof(ss));
    format_addr(lc->host, port, name, sizeof(name));
    if (uv_ip4_addr(lc->host, port, (struct sockaddr_in *)&ss) == 0) {
        ss_len = sizeof(struct sockaddr_in);
    } else if (uv_ip6_addr(lc->host, port, (struct sockaddr_in6 *)&ss) == 0) {
        ss_len = sizeof(struct sockaddr_in6);
    } else {
        UTIL_ERROR("http", "listen %s: not a numeric IPv4 or IPv6 address", name);
        rc = UTIL_ECONFIG;
        goto out;
    }
    if (probe && port != 0) {
        rc = port_is_free((struct sockaddr *)&ss, ss_len, name);
        if (rc != UTIL_OK)
            goto out;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = util_errno(errno);
        UTIL_ERROR("http", "listen %s: socket: %s", name, uv_strerror(-errno));
        goto out;
    }
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        rc = util_errno(errno);
        UTIL_ERROR("http", "listen %s: setsockopt: %s", name, uv_strerror(-errno));
        goto out;
    }
    if (bind(fd, (struct sockaddr *)&ss, ss_len) != 0) {
        int err = errno;
        rc = UTIL_EIO;
        UTIL_ERROR("http", "cannot bind %s: %s", name, uv_strerror(-err));
        goto out;
    }
    if (listen(fd, HTTP_LISTEN_BACKLOG) != 0) {
        int err = errno;
        rc = UTIL_EIO;
        UTIL_ERROR("http", "cannot listen on %s: %s", name, uv_strerror(-err));
        goto out;
    }
    ss_len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &ss_len) != 0) {
        rc = util_errno(errno);
        goto out;
    }
    *port_out = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    *fd_out = fd;
    fd = -1;
out:
    if (fd >= 0)
        (void)close(fd); /* a socket that never listened: nothing to flush */
    return rc;
}

/* Descriptors beyond max_connections that the process may hold (listeners, store, HSM, logs). */
#define HTTP_FD_SLACK 1024

static void presize_poll_cb(uv_poll_t *handle, int status, int events)
{
    (void)handle; /* never runs: the handle is stopped before the loop first polls */
    (void)status;
    (void)events;
}

/* libuv keeps an array of watchers indexed by fd and grows it the first time a loop sees a higher
 * fd; when that realloc fails it aborts the process (uv__io_start -> maybe_resize, libuv 1.44),
 * so running out of memory while accepting one connection would kill the server. Each loop
 * therefore sizes the array once, at set-up, for the highest fd the process can have: a poll
 * handle is started and stopped on a socket duplicated to that fd, which leaves the array that
 * large (8 bytes a slot). That fd is the soft RLIMIT_NOFILE, capped at max_connections +
 * HTTP_FD_SLACK; a process allowed more descriptors than that may still grow it later. Failure
 * here only loses the guarantee: it is logged, never fatal. */
static void presize_watchers(struct http__loop *lp, int max_connections)
{
    struct rlimit rl;
    long top = (long)max_connections + HTTP_FD_SLACK;
    int sock = -1, fd = -1, rc = 0;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (long)rl.rlim_cur - 1 < top)
        top = (long)rl.rlim_cur - 1;
    sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sock >= 0)
        fd = fcntl(sock, F_DUPFD_CLOEXEC, (int)top);
    if (sock >= 0)
        (void)close(sock); /* only its number was wanted */
    if (fd < 0) {
        UTIL_WARN("http", "loop %d: cannot size the watcher table for fd %ld: %s", lp->index, top,
                  strerror(errno));
        return;
    }
    rc = uv_poll_init(&lp->loop, &lp->presize, fd);
    if (rc == 0) {
        rc = uv_poll_start(&lp->presize, UV_READABLE, presize_poll_cb);
        (void)uv_poll_stop(&lp->presize); /* cannot fail */
        uv_close((uv_handle_t *)&lp->presize, NULL);
    }
    if (rc != 0)
        UTIL_WARN("http", "loop %d: cannot size the watcher table: %s", lp->index, uv_strerror(rc));
    (void)close(fd); /* the handle is stopped: libuv no longer watches it */
}

static int loop_setup(struct http_server *srv, struct http__loop *lp, int *fds)
{
    int rc = 0;
    int i = 0;

    rc = uv_loop_init(&lp->loop);
    if (rc != 0)
        goto out;
    lp->handles_init = 1;
    /* None of these can fail on Unix once the loop exists, but a failure must not go unnoticed. */
    rc = uv_timer_init(&lp->loop, &lp->timer);
    if (rc == 0)
        rc = uv_async_init(&lp->loop, &lp->stop_async, on_stop_async);
    if (rc == 0)
        rc = uv_check_init(&lp->loop, &lp->check);
    if (rc == 0)
        rc = uv_idle_init(&lp->loop, &lp->idle);
    if (rc != 0)
        goto out;
    lp->timer.data = lp;
    lp->stop_async.data = lp;
    lp->check.data = lp;
    lp->idle.data = lp;
    rc = uv_check_start(&lp->check, on_check);
    if (rc != 0)
        goto out;
    uv_unref((uv_handle_t *)&lp->check);
    presize_watchers(lp, srv->max_connections);
    lp->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    loop_update_date(lp);
    for (i = 0; i < srv->cfg.n_listeners; i++) {
        struct http__listener *lst = &lp->listeners[i];
        lst->lp = lp;
        lst->kind = srv->cfg.listeners[i].kind;
        lst->tls_ctx = srv->tls_ctx[i];
        rc = uv_tcp_init(&lp->loop, &lst->tcp);
        if (rc != 0)
            goto out;
        lst->tcp.data = lst;
        lst->open = 1;
        lp->n_listeners = i + 1;
        rc = uv_tcp_open(&lst->tcp, fds[i]);
        if (rc != 0)
            goto out;
        fds[i] = -1; /* the handle owns it now */
        rc = uv_listen((uv_stream_t *)&lst->tcp, HTTP_LISTEN_BACKLOG, on_connection);
        if (rc != 0)
            goto out;
    }
    rc = uv_timer_start(&lp->timer, on_tick, tick_period(&srv->cfg.limits),
                        tick_period(&srv->cfg.limits));
out:
    if (rc != 0) {
        UTIL_ERROR("http", "loop %d: setup failed: %s", lp->index, uv_strerror(rc));
        return UTIL_ENOMEM;
    }
    return UTIL_OK;
}

/* Descriptors open in this process now (/proc/self/fd, less the one reading it); -1 if unknown. */
static long count_open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *entry = NULL;
    long n = 0;

    if (dir == NULL)
        return -1;
    while ((entry = readdir(dir)) != NULL)
        if (entry->d_name[0] != '.')
            n++;
    (void)closedir(dir); /* read-only directory stream */
    return n - 1;
}

/* Raises the soft RLIMIT_NOFILE to the hard limit and sets srv->max_connections to the configured
 * value, clamped (and logged) so that client connections leave HTTP_FD_RESERVE descriptors free
 * beyond what is open now and what the loops will open. UTIL_ECONFIG (logged) when fewer than
 * HTTP_MIN_CONNECTIONS connections would fit: a server that a handful of clients can starve of
 * descriptors is better not started. See "Descriptors" in the DESIGN comment. */
static int fd_budget(struct http_server *srv)
{
    const struct http_config *cfg = &srv->cfg;
    struct rlimit rl;
    long open_now = 0, loops = 0, budget = 0;

    srv->max_connections = cfg->limits.max_connections;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        UTIL_WARN("http", "getrlimit(RLIMIT_NOFILE): %s; max_connections not checked",
                  strerror(errno));
        return UTIL_OK;
    }
    if (rl.rlim_cur != rl.rlim_max) {
        rlim_t soft = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) == 0) {
            UTIL_INFO("http",
                      "raised the soft limit of open files (RLIMIT_NOFILE) from %llu to "
                      "the hard limit %llu",
                      (unsigned long long)soft, (unsigned long long)rl.rlim_max);
        } else {
            UTIL_WARN("http", "cannot raise RLIMIT_NOFILE from %llu to %llu: %s",
                      (unsigned long long)soft, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = soft;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)1 << 30)
        return UTIL_OK;
    open_now = count_open_fds();
    if (open_now < 0)
        open_now = 64; /* no /proc: a guess at what start-up opened */
    loops = (long)cfg->workers * (cfg->n_listeners + HTTP_FD_PER_LOOP);
    budget = (long)rl.rlim_cur - open_now - loops - HTTP_FD_RESERVE;
    if (budget < HTTP_MIN_CONNECTIONS) {
        UTIL_ERROR("http",
                   "too few file descriptors: RLIMIT_NOFILE is %llu, %ld are open, the loops "
                   "need %ld and %d are kept for the HSM, store, CRL files and logs, which "
                   "leaves %ld for connections (at least %d needed); raise the hard limit "
                   "(LimitNOFILE= in systemd, ulimit -Hn)",
                   (unsigned long long)rl.rlim_cur, open_now, loops, HTTP_FD_RESERVE,
                   budget < 0 ? 0 : budget, HTTP_MIN_CONNECTIONS);
        return UTIL_ECONFIG;
    }
    if (budget < srv->max_connections) {
        UTIL_WARN("http",
                  "max_connections %d clamped to %ld: RLIMIT_NOFILE is %llu, %ld descriptors are "
                  "open, the loops need %ld and %d are kept for the HSM, store, CRL files and "
                  "logs (raise the hard limit to allow more)",
                  srv->max_connections, budget, (unsigned long long)rl.rlim_cur, open_now, loops,
                  HTTP_FD_RESERVE);
        srv->max_connections = (int)budget;
    }
    return UTIL_OK;
}

static void ignore_sigpipe(void)
{
    struct sigaction sa;

    /* A peer that resets mid-write must yield EPIPE from writev, not kill the process. This is
     * process-wide, but a server process has no use for SIGPIPE. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_IGN;
    (void)sigemptyset(&sa.sa_mask);      /* cannot fail */
    (void)sigaction(SIGPIPE, &sa, NULL); /* cannot fail for SIGPIPE */
}

/* Sends the stop to a loop exactly once: the loop closes the async handle after the first, and a
 * send on a closed async aborts inside libuv. Called only from the thread running start or run. */
static void loop_send_stop(struct http__loop *lp)
{
    if (lp->stop_sent)
        return;
    lp->stop_sent = 1;
    (void)uv_async_send(&lp->stop_async); /* cannot fail on an open handle */
}

static void stop_workers_and_join(struct http_server *srv)
{
    int w = 0;

    for (w = 0; w < srv->cfg.workers; w++) {
        struct http__loop *lp = &srv->loops[w];
        if (lp->thread_started)
            loop_send_stop(lp);
    }
    for (w = 0; w < srv->cfg.workers; w++) {
        struct http__loop *lp = &srv->loops[w];
        if (!lp->thread_started)
            continue;
        (void)uv_thread_join(&lp->thread); /* fails only for a bad thread id */
        lp->thread_started = 0;
    }
}

static void on_signal(uv_signal_t *sig, int signum);

/* Watches SIGTERM and SIGINT on the control loop. Called by http_server_start before any loop
 * answers: a signal that arrives while the caller is still starting its own services (between
 * http_server_start and http_server_run) is then handled, gracefully, as soon as the control
 * loop runs, instead of by the default action that would kill the process half started. */
static void signals_start(struct http_server *srv)
{
    int rc = uv_signal_init(&srv->ctl_loop, &srv->sigterm);
    if (rc == 0) {
        srv->sigterm.data = srv;
        srv->signals_init |= 1;
        rc = uv_signal_init(&srv->ctl_loop, &srv->sigint);
    }
    if (rc == 0) {
        srv->sigint.data = srv;
        srv->signals_init |= 2;
        rc = uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    }
    if (rc == 0)
        rc = uv_signal_start(&srv->sigint, on_signal, SIGINT);
    if (rc != 0)
        UTIL_WARN("http", "cannot watch SIGTERM/SIGINT: %s", uv_strerror(rc));
}

/* Closes the signal watchers (once), so that the control loop can end. */
static void signals_close(struct http_server *srv)
{
    if ((srv->signals_init & 1) && !uv_is_closing((uv_handle_t *)&srv->sigterm))
        uv_close((uv_handle_t *)&srv->sigterm, NULL);
    if ((srv->signals_init & 2) && !uv_is_closing((uv_handle_t *)&srv->sigint))
        uv_close((uv_handle_t *)&srv->sigint, NULL);
}

int http_server_start(struct http_server *srv)
{
    const struct http_config *cfg = NULL;
    int *fds = NULL;
    int n_fds = 0;
    int rc = UTIL_OK;
    int i = 0, w = 0;

    if (srv == NULL || srv->started || srv->loops != NULL)
        return UTIL_EINVAL;
    cfg = &srv->cfg;
    srv->n_ready = 0;
    ignore_sigpipe();
    routes_sort(srv);
    rc = fd_budget(srv);
    if (rc != UTIL_OK)
        return rc;
    if (cfg->limits.max_connections_per_client > 0 && srv->peers == NULL) {
        rc = http__peers_new(srv->max_connections, &srv->peers);
        if (rc != UTIL_OK)
            return rc;
    }
    n_fds = cfg->workers * cfg->n_listeners;
    fds = malloc((size_t)n_fds * sizeof(*fds));
    srv->loops = calloc((size_t)cfg->workers, sizeof(*srv->loops));
    if (fds == NULL || srv->loops == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (i = 0; i < n_fds; i++)
        fds[i] = -1;
    /* Bind everything first, on this thread, so that a taken port fails start synchronously.
     * Workers after the first bind the port the first one got (port 0 picks one). */
    for (i = 0; i < cfg->n_listeners; i++) {
        int port = cfg->listeners[i].port;
        for (w = 0; w < cfg->workers; w++) {
            int got = 0;
            rc = listen_socket(&cfg->listeners[i], port, w == 0, &fds[w * cfg->n_listeners + i],
                               &got);
            if (rc != 0)
                goto out;
            port = got;
        }
        srv->ports[i] = port;
    }
    for (w = 0; w < cfg->workers; w++) {
        struct http__loop *lp = &srv->loops[w];
        lp->srv = srv;
        lp->index = w;
        lp->date_sec = -1;
        lp->spare_fd = -1;
        rc = loop_setup(srv, lp, &fds[w * cfg->n_listeners]);
        if (rc != 0)
            goto out;
    }
    /* Listening, but nothing accepted yet: connections wait in the kernel's backlog. */
    if (srv->start_hook != NULL && srv->start_hook(srv->start_hook_ctx) != 0) {
        rc = UTIL_EPERM;
        goto out;
    }
    if (srv->signals_init == 0)
        signals_start(srv);
    for (w = 0; w < cfg->workers; w++) {
        struct http__loop *lp = &srv->loops[w];
        if (uv_thread_create(&lp->thread, worker_main, lp) != 0) {
            UTIL_ERROR("http", "cannot start loop thread %d", w);
            rc = UTIL_ENOMEM;
            goto out;
        }
        lp->thread_started = 1;
    }
    uv_mutex_lock(&srv->start_mutex);
    while (srv->n_ready < cfg->workers)
        uv_cond_wait(&srv->start_cond, &srv->start_mutex);
    uv_mutex_unlock(&srv->start_mutex);
    srv->started = 1;
    for (i = 0; i < cfg->n_listeners; i++) {
        char name[96];
        format_addr(cfg->listeners[i].host, srv->ports[i], name, sizeof(name));
        UTIL_INFO("http", "listening on %s (%s%s), %d loop(s)", name,
                  cfg->listeners[i].kind == HTTP_ADMIN ? "admin" : "public",
                  srv->tls_ctx[i] != NULL ? ", TLS" : "", cfg->workers);
    }
out:
    if (rc != 0 && srv->loops != NULL) {
        /* Started threads shut down their own loops; the others are torn down here. */
        stop_workers_and_join(srv);
        for (w = 0; w < cfg->workers; w++)
            loop_teardown(&srv->loops[w]);
        free(srv->loops);
        srv->loops = NULL;
    }
    if (fds != NULL) {
        for (i = 0; i < n_fds; i++) {
            if (fds[i] >= 0)
                (void)close(fds[i]); /* never adopted by a loop */
        }
    }
    free(fds);
    return rc;
}

int http_server_port(const struct http_server *srv, int listener_index)
{
    if (srv == NULL || !srv->started || listener_index < 0 ||
        listener_index >= srv->cfg.n_listeners)
        return UTIL_EINVAL;
    return srv->ports[listener_index];
}

/* ---- stopping ------------------------------------------------------------------------------- */

static void ctl_shutdown(struct http_server *srv)
{
    int w = 0;

    if (uv_is_closing((uv_handle_t *)&srv->ctl_async))
        return;
    uv_close((uv_handle_t *)&srv->ctl_async, NULL);
    signals_close(srv);
    if (!srv->started)
        return; /* stop requested on a server that never started (seen at free) */
    UTIL_INFO("http", "stopping: finishing in-flight requests (grace %d ms)", HTTP_GRACE_MS);
    for (w = 0; w < srv->cfg.workers; w++)
        loop_send_stop(&srv->loops[w]);
}

static void on_ctl_async(uv_async_t *async)
{
    ctl_shutdown(async->data);
}

static void on_signal(uv_signal_t *sig, int signum)
{
    struct http_server *srv = sig->data;

    UTIL_INFO("http", "received signal %d", signum);
    atomic_store(&srv->stop_requested, 1);
    ctl_shutdown(srv);
}

void http_server_stop(struct http_server *srv)
{
    if (srv == NULL)
        return;
    /* Only the first caller touches the async handle: ctl_shutdown closes it. */
    if (atomic_exchange(&srv->stop_requested, 1) == 0)
        (void)uv_async_send(&srv->ctl_async); /* cannot fail on an open handle */
}

int http_server_run(struct http_server *srv)
{
    if (srv == NULL || !srv->started || srv->ran)
        return UTIL_EINVAL;
    srv->ran = 1;
    /* Returns after ctl_shutdown closed the handles; a signal that came since http_server_start
     * is delivered now. */
    (void)uv_run(&srv->ctl_loop, UV_RUN_DEFAULT);
    stop_workers_and_join(srv);
    UTIL_INFO("http", "stopped");
    return UTIL_OK;
}

void http_server_free(struct http_server *srv)
{
    int i = 0;

    if (srv == NULL)
        return;
    if (srv->started && !srv->ran) {
        /* Started but never run: shut the workers down the same way run would. */
        http_server_stop(srv);
        (void)http_server_run(srv); /* always 0 once started */
    }
    if (!uv_is_closing((uv_handle_t *)&srv->ctl_async))
        uv_close((uv_handle_t *)&srv->ctl_async, NULL);
    signals_close(srv);                           /* a start that failed after watching them */
    (void)uv_run(&srv->ctl_loop, UV_RUN_DEFAULT); /* runs pending close callbacks */
    if (uv_loop_close(&srv->ctl_loop) != 0)
        UTIL_WARN("http", "control loop still busy at free");
    uv_cond_destroy(&srv->start_cond);
    uv_mutex_destroy(&srv->start_mutex);
    for (i = 0; i < srv->n_routes; i++)
        free(srv->routes[i].prefix);
    free(srv->routes);
    free(srv->loops);
    http__peers_free(srv->peers);
    for (i = 0; i < HTTP_MAX_LISTENERS; i++)
        SSL_CTX_free(srv->tls_ctx[i]);
    free(srv->server_header);
    free(srv);
}

void http_server_stats(const struct http_server *srv, struct http_stats *out)
{
    int w = 0;

    memset(out, 0, sizeof(*out));
    if (srv == NULL || srv->loops == NULL)
        return;
    for (w = 0; w < srv->cfg.workers; w++) {
        const struct http__stats *s = &srv->loops[w].stats;
        out->connections_accepted += atomic_load_explicit(&s->accepted, memory_order_relaxed);
        out->connections_rejected += atomic_load_explicit(&s->rejected, memory_order_relaxed);
        out->connections_open += atomic_load_explicit(&s->open, memory_order_relaxed);
        out->requests += atomic_load_explicit(&s->requests, memory_order_relaxed);
        out->responses_2xx += atomic_load_explicit(&s->r2xx, memory_order_relaxed);
        out->responses_3xx += atomic_load_explicit(&s->r3xx, memory_order_relaxed);
        out->responses_4xx += atomic_load_explicit(&s->r4xx, memory_order_relaxed);
        out->responses_5xx += atomic_load_explicit(&s->r5xx, memory_order_relaxed);
        out->timeouts += atomic_load_explicit(&s->timeouts, memory_order_relaxed);
        out->limit_rejections += atomic_load_explicit(&s->limits, memory_order_relaxed);
        out->tls_handshakes += atomic_load_explicit(&s->tls_ok, memory_order_relaxed);
        out->tls_handshake_failures += atomic_load_explicit(&s->tls_failed, memory_order_relaxed);
        out->connections_rejected_per_client +=
            atomic_load_explicit(&s->rejected_per_client, memory_order_relaxed);
        out->accept_emfile += atomic_load_explicit(&s->accept_emfile, memory_order_relaxed);
    }
}

int http_server_metrics(const struct http_server *srv, char *buf, size_t len)
{
    struct http_stats ht;
    int n;
    http_server_stats(srv, &ht);
    n = snprintf(buf, len,
                 "# TYPE pkiva_http_requests_total counter\n"
                 "pkiva_http_requests_total %llu\n"
                 "# TYPE pkiva_http_responses_total counter\n"
                 "pkiva_http_responses_total{class=\"2xx\"} %llu\n"
                 "pkiva_http_responses_total{class=\"3xx\"} %llu\n"
                 "pkiva_http_responses_total{class=\"4xx\"} %llu\n"
                 "pkiva_http_responses_total{class=\"5xx\"} %llu\n"
                 "# TYPE pkiva_http_connections_open gauge\n"
                 "pkiva_http_connections_open %llu\n"
                 "# TYPE pkiva_http_rejections_total counter\n"
                 "pkiva_http_rejections_total{why=\"limit\"} %llu\n"
                 "pkiva_http_rejections_total{why=\"timeout\"} %llu\n"
                 "pkiva_http_rejections_total{why=\"connections\"} %llu\n"
                 "pkiva_http_rejections_total{why=\"connections_per_client\"} %llu\n"
                 "pkiva_http_rejections_total{why=\"accept_emfile\"} %llu\n"
                 "# TYPE pkiva_http_tls_handshakes_total counter\n"
                 "pkiva_http_tls_handshakes_total{result=\"ok\"} %llu\n"
                 "pkiva_http_tls_handshakes_total{result=\"failed\"} %llu\n",
                 (unsigned long long)ht.requests, (unsigned long long)ht.responses_2xx,
                 (unsigned long long)ht.responses_3xx, (unsigned long long)ht.responses_4xx,
                 (unsigned long long)ht.responses_5xx, (unsigned long long)ht.connections_open,
                 (unsigned long long)ht.limit_rejections, (unsigned long long)ht.timeouts,
                 (unsigned long long)ht.connections_rejected,
                 (unsigned long long)ht.connections_rejected_per_client,
                 (unsigned long long)ht.accept_emfile, (unsigned long long)ht.tls_handshakes,
                 (unsigned long long)ht.tls_handshake_failures);
    return n < 0 || (size_t)n >= len ? UTIL_EINVAL : n;
}
