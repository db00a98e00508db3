/* SPDX-License-Identifier: Apache-2.0 */
/* One client connection: reading into a pooled buffer, llhttp parsing with every byte the request
 * exposes copied into the request's own arena, the ordered queue that keeps pipelined responses in
 * request order, scatter-gather writes, timeouts, lingering close, and the request accessors.
 * TLS listeners pass the bytes through conn_tls.c; response.c renders the responses. The
 * ownership rules are in the DESIGN comment of server.c. */
#include "http_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const llhttp_settings_t *parser_settings(void);
static void conn_read_start(struct http__conn *conn);

/* ---- pools ---------------------------------------------------------------------------------- */

char *http__loop_buf_get(struct http__loop *lp)
{
    if (lp->n_free_bufs > 0)
        return lp->free_bufs[--lp->n_free_bufs];
    return malloc(HTTP_READ_BUF_SIZE);
}

static void loop_buf_put(struct http__loop *lp, char *buf)
{
    if (buf == NULL)
        return;
#if HTTP_READ_BUF_POOL > 0
    if (lp->n_free_bufs < HTTP_READ_BUF_POOL) {
        lp->free_bufs[lp->n_free_bufs++] = buf;
        return;
    }
#else
    (void)lp; /* sanitizer builds recycle nothing, so that reuse cannot hide a use-after-free */
#endif
    free(buf);
}

int http__loop_release(struct http__loop *lp)
{
    struct http_request *req = NULL;
    int n_zombies = 0;

    /* Requests a handler never answered: the loop no longer runs, so none can answer now. */
    while (lp->zombies != NULL) {
        req = lp->zombies;
        lp->zombies = req->next;
        http__req_free(req);
        n_zombies++;
    }
    while (lp->n_free_bufs > 0)
        free(lp->free_bufs[--lp->n_free_bufs]);
    while (lp->free_reqs != NULL) {
        req = lp->free_reqs;
        lp->free_reqs = req->next;
        free(req);
    }
    lp->n_free_reqs = 0;
    return n_zombies;
}

static struct http_request *req_new(struct http__conn *conn)
{
    struct http__loop *lp = conn->lp;
    struct http_request *req = lp->free_reqs;

    if (req != NULL) {
        lp->free_reqs = req->next;
        lp->n_free_reqs--;
    } else {
        req = malloc(sizeof(*req));
        if (req == NULL)
            return NULL;
    }
    /* Only the bookkeeping part is cleared; the inline buffers are written before they are read. */
    memset(req, 0, offsetof(struct http_request, peer));
    req->conn = conn;
    req->lp = lp;
    req->kind = conn->kind;
    req->arena = req->arena_inline;
    req->arena_cap = sizeof(req->arena_inline);
    req->hdrs = req->hdrs_inline;
    req->hdrs_cap = HTTP_HDRS_INLINE;
    req->head = req->head_inline;
    req->started = uv_now(&lp->loop);
    req->tls = conn->ssl != NULL;
    /* Copied because a handler may outlive the connection. Out of memory leaves the request
     * unauthenticated by certificate, which fails closed. */
    if (conn->tls_subject != NULL)
        req->peer_subject = strdup(conn->tls_subject);
    memcpy(req->peer, conn->peer, sizeof(req->peer));
    return req;
}

void http__req_free(struct http_request *req)
{
    struct http__loop *lp = req->lp;

    util_blob_unref(req->blob);
    free(req->body_heap);
    free(req->tls_bytes);
    free(req->peer_subject);
    if (req->arena != req->arena_inline)
        free(req->arena);
    if (req->hdrs != req->hdrs_inline)
        free(req->hdrs);
    if (req->head != req->head_inline)
        free(req->head);
    if (lp->n_free_reqs < HTTP_REQ_POOL) {
        req->next = lp->free_reqs;
        lp->free_reqs = req;
        lp->n_free_reqs++;
    } else {
        free(req);
    }
}

static void zombie_add(struct http__loop *lp, struct http_request *req)
{
    req->conn = NULL;
    req->prev = NULL;
    req->next = lp->zombies;
    if (lp->zombies != NULL)
        lp->zombies->prev = req;
    lp->zombies = req;
}

void http__zombie_remove(struct http__loop *lp, struct http_request *req)
{
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        lp->zombies = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
}

/* Makes room for extra more bytes. Offsets stay valid; pointers into the arena do not. */
static int arena_reserve(struct http_request *req, size_t extra)
{
    size_t need = req->arena_len + extra;
    size_t cap = req->arena_cap * 2;
    char *grown = NULL;

    if (need <= req->arena_cap)
        return UTIL_OK;
    if (cap < need)
        cap = need;
    if (req->arena == req->arena_inline) {
        grown = malloc(cap);
        if (grown != NULL)
            memcpy(grown, req->arena, req->arena_len);
    } else {
        grown = realloc(req->arena, cap);
    }
    if (grown == NULL)
        return UTIL_ENOMEM;
    req->arena = grown;
    req->arena_cap = cap;
    return UTIL_OK;
}

/* Appends to the arena. The caller enforces the per-field limits, so the arena stays bounded by
 * max_url + max_header_bytes + max_body plus one NUL per field. */
static int arena_append(struct http_request *req, const char *at, size_t len)
{
    if (arena_reserve(req, len) != 0)
        return UTIL_ENOMEM;
    memcpy(req->arena + req->arena_len, at, len);
    req->arena_len += len;
    return UTIL_OK;
}

static int arena_nul(struct http_request *req)
{
    return arena_append(req, "", 1);
}

/* ---- queue ---------------------------------------------------------------------------------- */

static void queue_push(struct http__conn *conn, struct http_request *req)
{
    req->next = NULL;
    if (conn->q_tail != NULL)
        conn->q_tail->next = req;
    else
        conn->q_head = req;
    conn->q_tail = req;
    if (conn->q_unsent == NULL)
        conn->q_unsent = req;
    conn->n_pending++;
}

/* ---- parser callbacks ----------------------------------------------------------------------- */

static int reject_in_parser(struct http__conn *conn, int status)
{
    conn->error_status = status;
    return -1;
}

static int on_message_begin(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;

    if (conn->cur == NULL) {
        conn->cur = req_new(conn);
        if (conn->cur == NULL)
            return reject_in_parser(conn, 503);
    }
    return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;

    if (req->url_len + len > conn->lp->srv->cfg.limits.max_url)
        return reject_in_parser(conn, 414);
    if (arena_append(req, at, len) != 0)
        return reject_in_parser(conn, 503);
    req->url_len += (uint32_t)len;
    return 0;
}

/* RFC 9112 §3.2.2: a server MUST accept the absolute-form ("POST http://host/ HTTP/1.1", what a
 * client sends when it thinks it talks to a proxy). The target becomes the origin-form after the
 * authority; an empty path is "/" (the authority's last octet, never read again, becomes it). */
static void url_to_origin_form(struct http_request *req)
{
    char *url = req->arena + req->url_off;
    size_t len = req->url_len, i, scheme;

    if (len > 7 && strncasecmp(url, "http://", 7) == 0)
        scheme = 7;
    else if (len > 8 && strncasecmp(url, "https://", 8) == 0)
        scheme = 8;
    else
        return;
    for (i = scheme; i < len && url[i] != '/' && url[i] != '?'; i++)
        ;
    if (i == len || url[i] == '?') { /* no path: "/" in place of the authority's last octet */
        i--;
        url[i] = '/';
    }
    req->url_off += (uint32_t)i;
    req->url_len -= (uint32_t)i;
}

static int on_url_complete(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;

    if (arena_nul(conn->cur) != 0)
        return reject_in_parser(conn, 503);
    url_to_origin_form(conn->cur);
    return 0;
}

static int header_bytes_add(struct http__conn *conn, struct http_request *req, size_t len)
{
    req->header_bytes += len;
    return req->header_bytes > conn->lp->srv->cfg.limits.max_header_bytes ? -1 : 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;
    const struct http_limits *limits = &conn->lp->srv->cfg.limits;
    struct http__hdr *hdr = NULL;

    /* Trailer fields of a chunked body (llhttp reports them through the header callbacks, after
     * on_headers_complete) are dropped: a handler that asked for a header must never get a value
     * the sender put after the body, where proxies and other intermediaries do not look (an
     * Authorization or Content-Type there would otherwise decide what the request is). They
     * still count against max_header_bytes, so a client cannot stream them without end. */
    if (req->headers_done)
        return header_bytes_add(conn, req, len) == 0 ? 0 : reject_in_parser(conn, 431);
    /* A field may arrive in pieces (split across reads); only the first piece opens a slot. */
    if (req->n_hdrs == 0 || req->in_value) {
        if (req->n_hdrs >= limits->max_headers)
            return reject_in_parser(conn, 431);
        if (req->n_hdrs == req->hdrs_cap) {
            int cap = req->hdrs_cap * 2;
            struct http__hdr *grown = NULL;
            if (cap > limits->max_headers)
                cap = limits->max_headers;
            if (req->hdrs == req->hdrs_inline) {
                grown = malloc((size_t)cap * sizeof(*grown));
                if (grown != NULL)
                    memcpy(grown, req->hdrs, (size_t)req->n_hdrs * sizeof(*grown));
            } else {
                grown = realloc(req->hdrs, (size_t)cap * sizeof(*grown));
            }
            if (grown == NULL)
                return reject_in_parser(conn, 503);
            req->hdrs = grown;
            req->hdrs_cap = cap;
        }
        hdr = &req->hdrs[req->n_hdrs++];
        memset(hdr, 0, sizeof(*hdr));
        hdr->name_off = (uint32_t)req->arena_len;
        req->in_value = 0;
        if (header_bytes_add(conn, req, 4) != 0) /* ": " and CRLF */
            return reject_in_parser(conn, 431);
    }
    hdr = &req->hdrs[req->n_hdrs - 1];
    if (header_bytes_add(conn, req, len) != 0)
        return reject_in_parser(conn, 431);
    if (arena_append(req, at, len) != 0)
        return reject_in_parser(conn, 503);
    hdr->name_len += (uint32_t)len;
    return 0;
}

static int on_header_field_complete(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;
    struct http__hdr *hdr = NULL;

    if (req->n_hdrs == 0 || req->headers_done) /* no field yet, or a trailer (dropped) */
        return 0;
    hdr = &req->hdrs[req->n_hdrs - 1];
    if (arena_nul(req) != 0)
        return reject_in_parser(conn, 503);
    /* An empty value gets no on_header_value call: point it at an empty string now. */
    hdr->value_off = (uint32_t)req->arena_len;
    hdr->value_len = 0;
    req->in_value = 1;
    return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;
    struct http__hdr *hdr = NULL;

    if (req->headers_done) /* a trailer's value: counted, dropped (see on_header_field) */
        return header_bytes_add(conn, req, len) == 0 ? 0 : reject_in_parser(conn, 431);
    if (req->n_hdrs == 0)
        return 0;
    hdr = &req->hdrs[req->n_hdrs - 1];
    if (header_bytes_add(conn, req, len) != 0)
        return reject_in_parser(conn, 431);
    if (arena_append(req, at, len) != 0)
        return reject_in_parser(conn, 503);
    hdr->value_len += (uint32_t)len;
    return 0;
}

static int on_header_value_complete(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;

    if (conn->cur->headers_done)
        return 0; /* a trailer's value: dropped */
    return arena_nul(conn->cur) == 0 ? 0 : reject_in_parser(conn, 503);
}

static void on_continue_written(uv_write_t *wr, int status)
{
    struct http__conn *conn = wr->data;

    conn->continue_busy = 0;
}

/* "Expect: 100-continue": answer at once, but only when no earlier response is still owed, since
 * the interim response must not overtake them. Otherwise the client sends the body after its own
 * short wait anyway. */
static void maybe_send_continue(struct http__conn *conn, struct http_request *req)
{
    static char continue_line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    uv_buf_t buf = uv_buf_init(continue_line, sizeof(continue_line) - 1);
    size_t len = 0;
    const char *expect = http_request_header(req, "expect", &len);

    if (expect == NULL || len != 12 || strncasecmp(expect, "100-continue", 12) != 0)
        return;
    if (conn->q_head != NULL || conn->continue_busy || req->http_minor == 0)
        return;
    if (conn->ssl != NULL) {
        /* Encrypted in order with everything else; a failure shows on the next write. */
        ERR_clear_error();
        if (SSL_write(conn->ssl, continue_line, (int)buf.len) > 0)
            (void)http__conn_tls_send(conn);
        ERR_clear_error();
        return;
    }
    conn->continue_req.data = conn;
    if (uv_write(&conn->continue_req, (uv_stream_t *)&conn->tcp, &buf, 1, on_continue_written) == 0)
        conn->continue_busy = 1;
}

/* RFC 9112 §6.1: the only transfer coding pkiva decodes is chunked. A request with another
 * (gzip, "gzip, chunked", chunked twice) gets 501 Not Implemented and the connection is closed;
 * llhttp would otherwise de-chunk it and hand over a body still gzip-coded. */
static int transfer_coding_unsupported(const struct http_request *req)
{
    static const char chunked[] = "chunked";
    int n = http_request_header_count(req, "Transfer-Encoding");
    size_t len = 0;
    const char *v;

    if (n != 1)
        return n > 1;
    v = http_request_header(req, "Transfer-Encoding", &len);
    while (len > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        len--;
    }
    while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    return len != sizeof(chunked) - 1 || strncasecmp(v, chunked, len) != 0;
}

static int on_headers_complete(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;
    size_t max_body = conn->lp->srv->cfg.limits.max_body;
    int hosts;

    req->headers_done = 1;
    req->body_started = uv_now(&conn->lp->loop);
    req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(parser));
    req->is_head = llhttp_get_method(parser) == HTTP_HEAD;
    req->keep_alive = llhttp_should_keep_alive(parser);
    req->http_minor = llhttp_get_http_minor(parser);
    if (llhttp_get_http_major(parser) != 1) /* "HTTP/2.0" in an HTTP/1 request line */
        return reject_in_parser(conn, 505);
    /* RFC 9112 §3.2: an HTTP/1.1 request without a Host field, or any with two, is 400 (two
     * Hosts let a proxy in front and pkiva read different ones). HTTP/1.0 may omit it. */
    hosts = http_request_header_count(req, "Host");
    if (hosts > 1 || (hosts == 0 && req->http_minor >= 1))
        return reject_in_parser(conn, 400);
    if (transfer_coding_unsupported(req))
        return reject_in_parser(conn, 501);
    if ((parser->flags & F_CONTENT_LENGTH) != 0) {
        if (parser->content_length > max_body)
            return reject_in_parser(conn, 413);
        /* Reserve the whole body now: one allocation instead of doublings. */
        if (arena_reserve(req, (size_t)parser->content_length + 1) != 0)
            return reject_in_parser(conn, 503);
    }
    req->body_off = (uint32_t)req->arena_len;
    if ((parser->flags & (F_CONTENT_LENGTH | F_CHUNKED)) != 0)
        maybe_send_continue(conn, req);
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len)
{
    struct http__conn *conn = parser->data;
    struct http_request *req = conn->cur;

    if (req->body_len + len > conn->lp->srv->cfg.limits.max_body)
        return reject_in_parser(conn, 413);
    if (arena_append(req, at, len) != 0)
        return reject_in_parser(conn, 503);
    req->body_len += (uint32_t)len;
    return 0;
}

static int on_message_complete(llhttp_t *parser)
{
    struct http__conn *conn = parser->data;
    struct http__loop *lp = conn->lp;
    struct http_request *req = conn->cur;

    /* The body is NUL-terminated for handlers that read it as text (trailers are never stored). */
    if (arena_nul(req) != 0)
        return reject_in_parser(conn, 503);
    conn->cur = NULL;
    req->state = HTTP_REQ_HANDLING;
    queue_push(conn, req);
    http__stat_add(&lp->stats.requests, 1);
    if (!req->keep_alive || conn->draining)
        conn->no_more = 1;
    http__dispatch(req);
    if (conn->no_more)
        return HPE_PAUSED;
    if (conn->n_pending >= lp->srv->cfg.limits.max_pipelined) {
        conn->paused = 1;
        return HPE_PAUSED;
    }
    return 0;
}

static const llhttp_settings_t *parser_settings(void)
{
    static const llhttp_settings_t settings = {
        .on_message_begin = on_message_begin,
        .on_url = on_url,
        .on_header_field = on_header_field,
        .on_header_value = on_header_value,
        .on_headers_complete = on_headers_complete,
        .on_body = on_body,
        .on_message_complete = on_message_complete,
        .on_url_complete = on_url_complete,
        .on_header_field_complete = on_header_field_complete,
        .on_header_value_complete = on_header_value_complete,
    };
    return &settings;
}

/* ---- connection state ----------------------------------------------------------------------- */

static void on_close(uv_handle_t *handle)
{
    struct http__conn *conn = handle->data;
    struct http__loop *lp = conn->lp;

    if (conn->counted) {
        (void)atomic_fetch_sub_explicit(&lp->srv->n_connections, 1,
                                        memory_order_relaxed); /* old value not needed */
        http__stat_add(&lp->stats.open, -1);
    }
    if (conn->peer_counted)
        http__peers_release(lp->srv->peers, conn->peer_key);
    http__tls_conn_free(conn);
    free(conn);
    http__loop_conn_closed(lp);
}

void http__conn_close(struct http__conn *conn)
{
    struct http__loop *lp = conn->lp;
    struct http_request *req = NULL;
    struct http_request *next = NULL;
    struct http_request *last_writing = NULL;

    if (conn->closing)
        return;
    conn->closing = 1;
    conn->reading = 0;
    if (conn->counted) {
        if (conn->prev != NULL)
            conn->prev->next = conn->next;
        else
            lp->conns = conn->next;
        if (conn->next != NULL)
            conn->next->prev = conn->prev;
    }
    if (conn->cur != NULL) {
        http__req_free(conn->cur);
        conn->cur = NULL;
    }
    /* Requests already handed to uv_write stay: their write callbacks (cancelled by uv_close)
     * free them before on_close runs. The rest are freed now, except those a handler still
     * holds, which become zombies until the handler answers. */
    for (req = conn->q_head; req != NULL && req != conn->q_unsent; req = req->next)
        last_writing = req;
    for (req = conn->q_unsent; req != NULL; req = next) {
        next = req->next;
        conn->n_pending--;
        if (req->state == HTTP_REQ_HANDLING)
            zombie_add(lp, req);
        else
            http__req_free(req);
    }
    conn->q_unsent = NULL;
    conn->q_tail = last_writing;
    if (last_writing != NULL)
        last_writing->next = NULL;
    else
        conn->q_head = NULL;
    loop_buf_put(lp, conn->rbuf);
    conn->rbuf = NULL;
    conn->rlen = conn->rpos = 0;
    uv_close((uv_handle_t *)&conn->tcp, on_close);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct http__conn *conn = handle->data;

    if (conn->ssl != NULL) {
        /* Ciphertext goes into a pooled buffer that on_read_tls hands to the SSL object and
         * gives back at once; the decrypted bytes land in rbuf. */
        char *cipher = http__loop_buf_get(conn->lp);
        *buf = uv_buf_init(cipher, cipher != NULL ? HTTP_READ_BUF_SIZE : 0);
        return;
    }
    if (conn->rbuf == NULL)
        conn->rbuf = http__loop_buf_get(conn->lp);
    if (conn->rbuf == NULL || conn->rlen >= HTTP_READ_BUF_SIZE) {
        *buf = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS and closes */
        return;
    }
    *buf = uv_buf_init(conn->rbuf + conn->rlen, (unsigned)(HTTP_READ_BUF_SIZE - conn->rlen));
}

static void conn_release_buf(struct http__conn *conn)
{
    if (conn->rbuf != NULL && conn->rlen == 0) {
        loop_buf_put(conn->lp, conn->rbuf);
        conn->rbuf = NULL;
    }
}

static void conn_read_stop(struct http__conn *conn)
{
    if (conn->reading) {
        (void)uv_read_stop((uv_stream_t *)&conn->tcp); /* always 0 */
        conn->reading = 0;
    }
}

/* No further requests on this connection: a partial one is dropped, reading stops. */
static void conn_set_no_more(struct http__conn *conn)
{
    conn->no_more = 1;
    if (conn->cur != NULL) {
        http__req_free(conn->cur);
        conn->cur = NULL;
    }
    conn_read_stop(conn);
    conn->rlen = conn->rpos = 0;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct http__conn *conn)
{
    int rc = 0;

    if (conn->reading || conn->closing)
        return;
    rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rc != 0) {
        UTIL_DEBUG("http", "%s: read start failed: %s", conn->peer, uv_strerror(rc));
        http__conn_close(conn);
        return;
    }
    conn->reading = 1;
}

static void on_shutdown(uv_shutdown_t *sreq, int status)
{
    struct http__conn *conn = sreq->data;

    if (status < 0 && !conn->closing)
        http__conn_close(conn);
}

/* After a closing response: send FIN, then read and discard until the peer closes (or the linger
 * bound passes), so that unread request bytes do not turn our close into an RST that could
 * destroy the response before the client read it. */
static void conn_begin_linger(struct http__conn *conn)
{
    int rc = 0;

    conn->lingering = 1;
    conn->linger_until = uv_now(&conn->lp->loop) + HTTP_LINGER_MS;
    if (conn->ssl != NULL && conn->tls_done) {
        /* close_notify goes out ahead of the FIN (libuv keeps the order of queued writes). */
        ERR_clear_error();
        (void)SSL_shutdown(conn->ssl); /* 0: sent ours, the peer's is not awaited */
        ERR_clear_error();
        (void)http__conn_tls_send(conn); /* best effort: the FIN follows either way */
    }
    conn->shutdown_req.data = conn;
    rc = uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_shutdown);
    if (rc != 0) {
        http__conn_close(conn);
        return;
    }
    conn_read_start(conn);
}

static void conn_maybe_finish(struct http__conn *conn)
{
    if (conn->closing || conn->lingering || !conn->no_more)
        return;
    if (conn->cur != NULL || conn->n_pending > 0 || conn->writes_outstanding > 0)
        return;
    if (conn->read_eof || conn->lp->stopping)
        http__conn_close(conn);
    else
        conn_begin_linger(conn);
}

/* The peer sent all it will send: answer what was asked, or close. */
void http__conn_peer_eof(struct http__conn *conn)
{
    if (!conn->lingering && conn->n_pending > 0) {
        /* Half-close after sending requests: still answer what was asked. */
        conn->read_eof = 1;
        conn_set_no_more(conn);
        conn_maybe_finish(conn);
    } else {
        http__conn_close(conn);
    }
}

static void on_read_tls(struct http__conn *conn, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0 && conn->lingering) {
        conn->linger_bytes += (size_t)nread;
        if (conn->linger_bytes > HTTP_LINGER_BYTES)
            http__conn_close(conn);
    } else if (nread > 0) {
        /* A memory BIO takes everything or fails only for lack of memory. */
        if (BIO_write(conn->tls_in, buf->base, (int)nread) != (int)nread) {
            ERR_clear_error();
            http__conn_close(conn);
        } else {
            http__conn_tls_input(conn);
            http__conn_pump(conn);
        }
    } else if (nread == UV_EOF) {
        http__conn_peer_eof(conn);
    } else if (nread < 0) {
        http__conn_close(conn);
    }
    loop_buf_put(conn->lp, buf->base); /* NULL-safe */
    if (!conn->closing)
        conn_release_buf(conn);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct http__conn *conn = stream->data;

    if (conn->ssl != NULL) {
        on_read_tls(conn, nread, buf);
        return;
    }
    if (nread > 0 && conn->lingering) {
        /* rlen stays 0: the bytes are discarded. */
        conn->linger_bytes += (size_t)nread;
        if (conn->linger_bytes > HTTP_LINGER_BYTES)
            http__conn_close(conn);
    } else if (nread > 0) {
        conn->rlen += (size_t)nread;
        http__conn_parse(conn);
        http__conn_pump(conn);
    } else if (nread == UV_EOF) {
        http__conn_peer_eof(conn);
    } else if (nread < 0) {
        http__conn_close(conn);
    }
    if (!conn->closing)
        conn_release_buf(conn);
}

/* Queues a response generated by http itself (a limit, a parse error, a timeout) behind the
 * requests already queued, and ends the connection after it. */
static void conn_reject(struct http__conn *conn, int status, int is_timeout)
{
    struct http__loop *lp = conn->lp;
    struct http_request *req = conn->cur;
    char text[48];

    conn->cur = NULL;
    if (req == NULL)
        req = req_new(conn);
    if (req == NULL) {
        http__conn_close(conn);
        return;
    }
    conn_set_no_more(conn);
    if (is_timeout)
        http__stat_add(&lp->stats.timeouts, 1);
    else
        http__stat_add(&lp->stats.limits, 1);
    UTIL_DEBUG("http", "%s: rejected with %d", conn->peer, status);
    req->keep_alive = 0;
    req->is_head = 0;
    req->state = HTTP_REQ_HANDLING;
    queue_push(conn, req);
    (void)snprintf(text, sizeof(text), "%d\n", status); /* fits */
    http_request_respond_text(req, status, "text/plain", text);
}

/* Runs llhttp over the unparsed bytes. Handlers called from here answer into the queue only;
 * http__conn_pump writes afterwards, so a burst of pipelined requests leaves in one write. */
void http__conn_parse(struct http__conn *conn)
{
    const char *start = conn->rbuf + conn->rpos;
    size_t avail = conn->rlen - conn->rpos;
    llhttp_errno_t err = HPE_OK;

    conn->in_parse = 1;
    err = llhttp_execute(&conn->parser, start, avail);
    if (err == HPE_OK) {
        conn->rlen = conn->rpos = 0;
    } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
        /* Upgrades are not supported: the request was answered like any other, then the
         * connection ends. */
        if (err == HPE_PAUSED_UPGRADE)
            conn->no_more = 1;
        conn->rpos += (size_t)(llhttp_get_error_pos(&conn->parser) - start);
        if (conn->rpos >= conn->rlen || conn->no_more)
            conn->rlen = conn->rpos = 0;
        if (conn->no_more)
            conn_set_no_more(conn);
        else if (conn->paused)
            conn_read_stop(conn);
    } else {
        int status = conn->error_status ? conn->error_status : 400;
        UTIL_DEBUG("http", "%s: bad request: %s", conn->peer, llhttp_errno_name(err));
        conn->rlen = conn->rpos = 0;
        conn_reject(conn, status, 0);
    }
    conn->in_parse = 0;
}

/* Frees the n oldest requests, whose responses have been written. */
static void conn_complete(struct http__conn *conn, int n)
{
    int i = 0;

    for (i = 0; i < n; i++) {
        struct http_request *req = conn->q_head;
        conn->q_head = req->next;
        if (conn->q_head == NULL)
            conn->q_tail = NULL;
        conn->n_pending--;
        http__req_free(req);
    }
}

static void on_write(uv_write_t *wr, int status)
{
    struct http_request *first = wr->data;
    struct http__conn *conn = first->conn;

    conn_complete(conn, first->batch_count);
    conn->writes_outstanding--;
    conn->write_since = uv_now(&conn->lp->loop);
    if (conn->closing)
        return;
    if (status < 0) {
        UTIL_DEBUG("http", "%s: write failed: %s", conn->peer, uv_strerror(status));
        http__conn_close(conn);
        return;
    }
    http__conn_pump(conn);
}

/* Hands every response that is ready, in order, to the socket: consecutive ready responses go
 * out in one writev of header buffers and body references. With nothing queued in libuv the
 * write is tried at once (uv_try_write): the usual small response then completes right here,
 * without a write request, a deferred callback or the epoll_ctl libuv spends re-arming the
 * socket after each queued write. Whatever the socket does not take goes through uv_write. */
static void conn_flush(struct http__conn *conn)
{
    while (!conn->closing && conn->q_unsent != NULL &&
           conn->q_unsent->state == HTTP_REQ_RESPONDED) {
        uv_buf_t bufs[HTTP_WRITE_BATCH * 2];
        unsigned n_bufs = 0;
        unsigned skip = 0;
        struct http_request *first = conn->q_unsent;
        struct http_request *req = NULL;
        struct http_request *last = NULL;
        struct http_request *after = NULL;
        size_t total = 0;
        size_t written = 0;
        int close_after = 0;
        int n = 0;
        int rc = 0;

        for (req = first; req != NULL && req->state == HTTP_REQ_RESPONDED && n < HTTP_WRITE_BATCH;
             req = req->next) {
            bufs[n_bufs++] = uv_buf_init(req->head, (unsigned)req->head_len);
            total += req->head_len;
            if (req->body_len_out > 0) {
                bufs[n_bufs++] = uv_buf_init((char *)req->body, (unsigned)req->body_len_out);
                total += req->body_len_out;
            }
            last = req;
            n++;
            if (req->close_after)
                break;
        }
        after = last->next;
        close_after = last->close_after;
        if (conn->ssl != NULL && http__conn_tls_seal(conn, first, bufs, &n_bufs, &total) != 0) {
            http__conn_close(conn);
            return;
        }
        if (conn->writes_outstanding == 0 && !conn->continue_busy) {
            int tried = uv_try_write((uv_stream_t *)&conn->tcp, bufs, n_bufs);
            if (tried < 0 && tried != UV_EAGAIN) {
                UTIL_DEBUG("http", "%s: write failed: %s", conn->peer, uv_strerror(tried));
                http__conn_close(conn);
                return;
            }
            written = tried > 0 ? (size_t)tried : 0;
        }
        if (written == total) {
            /* Nothing is queued in libuv, so this batch is the head of the queue. */
            conn->q_unsent = after;
            conn_complete(conn, n);
        } else {
            while (written >= bufs[skip].len) {
                written -= bufs[skip].len;
                skip++;
            }
            bufs[skip].base += written;
            bufs[skip].len -= (unsigned)written;
            first->batch_count = n;
            first->write_req.data = first;
            rc = uv_write(&first->write_req, (uv_stream_t *)&conn->tcp, bufs + skip, n_bufs - skip,
                          on_write);
            if (rc != 0) {
                /* No callback will come: the batch stays unsent and is freed by the close. */
                UTIL_DEBUG("http", "%s: write failed: %s", conn->peer, uv_strerror(rc));
                http__conn_close(conn);
                return;
            }
            for (req = first; req != after; req = req->next)
                req->state = HTTP_REQ_WRITING;
            if (conn->writes_outstanding == 0)
                conn->write_since = uv_now(&conn->lp->loop);
            conn->writes_outstanding++;
            conn->q_unsent = after;
        }
        if (close_after) {
            /* Nothing may follow a closing response. */
            conn_set_no_more(conn);
            break;
        }
    }
}

/* Moves the connection forward after anything happened (bytes read, a handler answered, a write
 * completed): write what is ready, resume a parser paused on max_pipelined once responses have
 * drained, and end the connection when nothing is left to do. A loop, not recursion, so a long
 * pipelined burst cannot grow the stack. */
void http__conn_pump(struct http__conn *conn)
{
    const struct http_limits *limits = &conn->lp->srv->cfg.limits;

    for (;;) {
        if (conn->closing)
            return;
        conn_flush(conn);
        if (conn->closing)
            return;
        if (!conn->paused || conn->no_more || conn->n_pending >= limits->max_pipelined)
            break;
        conn->paused = 0;
        llhttp_resume(&conn->parser);
        if (conn->rlen > conn->rpos) {
            http__conn_parse(conn);
            continue;
        }
        if (conn->ssl != NULL && http__conn_tls_buffered(conn)) {
            /* No new bytes will come from the socket for what the SSL object already holds. */
            http__conn_tls_input(conn);
            continue;
        }
        conn_read_start(conn);
        break;
    }
    if (conn->closing)
        return;
    if (!conn->paused && !conn->no_more && !conn->reading)
        conn_read_start(conn);
    if (conn->n_pending == 0 && conn->cur == NULL && conn->writes_outstanding == 0)
        conn->idle_since = uv_now(&conn->lp->loop);
    conn_release_buf(conn);
    conn_maybe_finish(conn);
}

void http__conn_tick(struct http__conn *conn, uint64_t now)
{
    const struct http_limits *limits = &conn->lp->srv->cfg.limits;
    struct http_request *req = conn->cur;

    if (conn->lingering) {
        if (now >= conn->linger_until)
            http__conn_close(conn);
        return;
    }
    if (conn->ssl != NULL && !conn->tls_done) {
        /* The handshake counts against the header timeout: a client that opens a connection
         * and stalls mid-handshake costs no more than one that stalls in its headers. */
        if (now - conn->accepted_at >= (uint64_t)limits->header_timeout_ms) {
            UTIL_DEBUG("http", "%s: TLS handshake timeout", conn->peer);
            http__stat_add(&conn->lp->stats.timeouts, 1);
            http__conn_close(conn);
        }
        return;
    }
    if (conn->writes_outstanding > 0 &&
        now - conn->write_since >= (uint64_t)limits->write_timeout_ms) {
        UTIL_DEBUG("http", "%s: write timeout", conn->peer);
        http__stat_add(&conn->lp->stats.timeouts, 1);
        http__conn_close(conn);
        return;
    }
    if (req != NULL) {
        if ((!req->headers_done && now - req->started >= (uint64_t)limits->header_timeout_ms) ||
            (req->headers_done && now - req->body_started >= (uint64_t)limits->body_timeout_ms))
            conn_reject(conn, 408, 1);
        return;
    }
    if (!conn->no_more && conn->n_pending == 0 && conn->writes_outstanding == 0 &&
        now - conn->idle_since >= (uint64_t)limits->idle_timeout_ms) {
        UTIL_DEBUG("http", "%s: idle timeout", conn->peer);
        http__stat_add(&conn->lp->stats.timeouts, 1);
        http__conn_close(conn);
    }
}

void http__conn_drain(struct http__conn *conn)
{
    conn->draining = 1;
    if (conn->lingering) {
        http__conn_close(conn);
        return;
    }
    /* A request half received may still complete (within the grace period); otherwise no new
     * request is read, and the connection ends after its last owed response. */
    if (conn->cur == NULL) {
        conn_set_no_more(conn);
        if (conn->n_pending == 0 && conn->writes_outstanding == 0)
            http__conn_close(conn);
    }
}

/* conn->peer for logs and, when the address is known, conn->peer_key; returns 0 if it is not. */
static int format_peer(struct http__conn *conn)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";

    memset(&ss, 0, sizeof(ss));
    if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&ss, &len) != 0) {
        (void)snprintf(conn->peer, sizeof(conn->peer), "?"); /* fits */
        return 0;
    }
    http__peer_key((const struct sockaddr *)&ss, conn->peer_key);
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;
        (void)uv_ip6_name(sin6, ip, sizeof(ip)); /* on failure ip stays "?" */
        (void)snprintf(conn->peer, sizeof(conn->peer), "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
        (void)uv_ip4_name(sin, ip, sizeof(ip)); /* on failure ip stays "?" */
        (void)snprintf(conn->peer, sizeof(conn->peer), "%s:%u", ip, ntohs(sin->sin_port));
    }
    return 1;
}

void http__conn_accept(struct http__listener *lst)
{
    struct http__loop *lp = lst->lp;
    struct http_server *srv = lp->srv;
    struct http__conn *conn = NULL;
    int refuse = 0;
    int rc = 0;

    conn = calloc(1, sizeof(*conn));
    if (conn == NULL) {
        lst->deferred = 1; /* the connection waits in libuv; retried next loop turn */
        goto out;
    }
    conn->lp = lp;
    conn->kind = lst->kind;
    rc = uv_tcp_init(&lp->loop, &conn->tcp);
    if (rc != 0) {
        free(conn);
        conn = NULL;
        lst->deferred = 1;
        goto out;
    }
    conn->tcp.data = conn;
    lp->n_conns++;
    rc = uv_accept((uv_stream_t *)&lst->tcp, (uv_stream_t *)&conn->tcp);
    if (rc != 0) {
        UTIL_DEBUG("http", "accept failed: %s", uv_strerror(rc));
        refuse = 1;
        goto out;
    }
    if (format_peer(conn) && srv->peers != NULL) {
        if (!http__peers_take(srv->peers, conn->peer_key,
                              srv->cfg.limits.max_connections_per_client)) {
            http__stat_add(&lp->stats.rejected_per_client, 1);
            UTIL_DEBUG("http", "%s: connection refused: max_connections_per_client (%d) reached",
                       conn->peer, srv->cfg.limits.max_connections_per_client);
            refuse = 1;
            goto out;
        }
        conn->peer_counted = 1;
    }
    if (atomic_fetch_add_explicit(&srv->n_connections, 1, memory_order_relaxed) >=
        srv->max_connections) {
        (void)atomic_fetch_sub_explicit(&srv->n_connections, 1,
                                        memory_order_relaxed); /* undo; old value not needed */
        http__stat_add(&lp->stats.rejected, 1);
        UTIL_DEBUG("http", "connection refused: max_connections (%d) reached",
                   srv->max_connections);
        refuse = 1;
        goto out;
    }
    conn->counted = 1;
    http__stat_add(&lp->stats.accepted, 1);
    http__stat_add(&lp->stats.open, 1);
    (void)uv_tcp_nodelay(&conn->tcp, 1); /* latency only; the connection works without it */
    if (lst->tls_ctx != NULL && http__tls_conn_init(conn, lst->tls_ctx) != 0) {
        UTIL_DEBUG("http", "%s: out of memory for TLS", conn->peer);
        refuse = 1;
        goto out;
    }
    conn->accepted_at = uv_now(&lp->loop);
    llhttp_init(&conn->parser, HTTP_REQUEST, parser_settings());
    conn->parser.data = conn;
    conn->next = lp->conns;
    if (lp->conns != NULL)
        lp->conns->prev = conn;
    lp->conns = conn;
    conn->idle_since = uv_now(&lp->loop);
    conn_read_start(conn);
out:
    if (refuse) {
        /* Accepted only to be closed at once; on_close frees it and counts it down. Its
         * per-client slot is given back now, so that the table never holds more entries than
         * there are counted connections. */
        if (conn->peer_counted && !conn->counted) {
            http__peers_release(srv->peers, conn->peer_key);
            conn->peer_counted = 0;
        }
        conn->closing = 1;
        uv_close((uv_handle_t *)&conn->tcp, on_close);
    }
}

/* ---- request accessors ---------------------------------------------------------------------- */

const char *http_request_method(const struct http_request *req)
{
    return req->method != NULL ? req->method : "GET";
}

const char *http_request_target(const struct http_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->url_len;
    return req->arena + req->url_off;
}

/* Names of different lengths never match: the length test spares most strcasecmp calls (every
 * OCSP GET asks for two or three headers that the request does not have). */
static int hdr_is(const struct http_request *req, const struct http__hdr *hdr, const char *name,
                  size_t name_len)
{
    return hdr->name_len == name_len && strcasecmp(req->arena + hdr->name_off, name) == 0;
}

const char *http_request_header(const struct http_request *req, const char *name, size_t *len)
{
    size_t name_len = strlen(name);
    int i = 0;

    for (i = 0; i < req->n_hdrs; i++) {
        const struct http__hdr *hdr = &req->hdrs[i];
        if (hdr_is(req, hdr, name, name_len)) {
            if (len != NULL)
                *len = hdr->value_len;
            return req->arena + hdr->value_off;
        }
    }
    if (len != NULL)
        *len = 0;
    return NULL;
}

int http_request_header_count(const struct http_request *req, const char *name)
{
    size_t name_len = strlen(name);
    int i = 0;
    int n = 0;

    for (i = 0; i < req->n_hdrs; i++)
        if (hdr_is(req, &req->hdrs[i], name, name_len))
            n++;
    return n;
}

const unsigned char *http_request_body(const struct http_request *req, size_t *len)
{
    if (len != NULL)
        *len = req->body_len;
    return (const unsigned char *)req->arena + req->body_off;
}

int http_request_loop_index(const struct http_request *req)
{
    return req->lp->index;
}

uv_loop_t *http_request_loop(const struct http_request *req)
{
    return &req->lp->loop;
}

const char *http_request_peer(const struct http_request *req)
{
    return req->peer;
}

int http_request_tls(const struct http_request *req)
{
    return req->tls;
}

int http_request_peer_cert_verified(const struct http_request *req, char *subject, size_t len)
{
    if (req->peer_subject == NULL)
        return 0;
    if (subject != NULL && len > 0)
        (void)snprintf(subject, len, "%s", req->peer_subject); /* truncation documented */
    return 1;
}
