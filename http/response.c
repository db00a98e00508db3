/* SPDX-License-Identifier: Apache-2.0 */
/* Response rendering: the status line and headers written into the request's head buffer, the
 * body attached by reference (a cached blob) or copied, and the handover to the connection's
 * ordered queue, which writes responses in request order (conn.c). */
#include "http_int.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

static char *put_str(char *p, const char *s)
{
    return put(p, s, strlen(s));
}

static char *put_u64(char *p, uint64_t v)
{
    char digits[24];
    size_t n = 0;

    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    while (n > 0)
        *p++ = digits[--n];
    return p;
}

/* Renders status line and headers into req->head (inline when it fits) and sets up the body:
 * a blob by reference, or copied bytes (behind the headers when they fit, so one buffer). */
static int render(struct http_request *req, const struct http_response *resp)
{
    struct http__conn *conn = req->conn;
    struct http__loop *lp = req->lp;
    const char *server = lp->srv->server_header;
    int status = resp->status;
    const char *reason = NULL;
    const void *body = NULL;
    size_t body_len = 0;
    int no_body = 0;
    int send_body = 0;
    size_t extra_len = 0;
    size_t need = 0;
    char *p = NULL;
    int close = 0;

    if (status < 100 || status > 599)
        status = 500;
    reason = status_reason(status);
    no_body = status < 200 || status == 204 || status == 304;
    if (resp->body != NULL) {
        body = resp->body->data;
        body_len = resp->body->len;
    } else if (resp->body_bytes != NULL) {
        body = resp->body_bytes;
        body_len = resp->body_len;
    }
    if (no_body)
        body_len = 0;
    send_body = body_len > 0 && !req->is_head;
    /* The last response owed on a connection that reads no more says so. */
    close = !req->keep_alive || (conn->no_more && req->next == NULL && conn->cur == NULL);
    if (resp->headers != NULL)
        extra_len = resp->headers_len > 0 ? resp->headers_len : strlen(resp->headers);
    need = 9 + 3 + 1 + strlen(reason) + 2 + lp->date_len + 16 + 20 + 2 + 24 + extra_len + 2;
    if (server != NULL)
        need += 8 + strlen(server) + 2;
    if (resp->content_type != NULL)
        need += 14 + strlen(resp->content_type) + 2;
    if (send_body && resp->body == NULL && need + body_len <= sizeof(req->head_inline))
        need += body_len; /* small copied body rides behind the headers */
    if (need > sizeof(req->head_inline)) {
        req->head = malloc(need);
        if (req->head == NULL) {
            req->head = req->head_inline;
            return UTIL_ENOMEM;
        }
    }
    p = req->head;
    p = put(p, "HTTP/1.1 ", 9);
    p = put_u64(p, (uint64_t)status);
    *p++ = ' ';
    p = put_str(p, reason);
    p = put(p, "\r\n", 2);
    if (server != NULL) {
        p = put(p, "Server: ", 8);
        p = put_str(p, server);
        p = put(p, "\r\n", 2);
    }
    p = put(p, lp->date, lp->date_len);
    if (resp->content_type != NULL) {
        p = put(p, "Content-Type: ", 14);
        p = put_str(p, resp->content_type);
        p = put(p, "\r\n", 2);
    }
    if (!no_body) {
        p = put(p, "Content-Length: ", 16);
        p = put_u64(p, body_len);
        p = put(p, "\r\n", 2);
    }
    if (close)
        p = put(p, "Connection: close\r\n", 19);
    else if (req->http_minor == 0)
        p = put(p, "Connection: keep-alive\r\n", 24);
    if (extra_len > 0)
        p = put(p, resp->headers, extra_len);
    p = put(p, "\r\n", 2);
    req->head_len = (size_t)(p - req->head);
    req->close_after = close;
    req->status = status;
    if (!send_body)
        return UTIL_OK;
    if (resp->body != NULL) {
        req->blob = util_blob_ref(resp->body);
        req->body = (const char *)req->blob->data;
        req->body_len_out = body_len;
    } else if (req->head_len + body_len <= need) {
        memcpy(p, body, body_len);
        req->head_len += body_len;
    } else {
        req->body_heap = malloc(body_len);
        if (req->body_heap == NULL)
            return UTIL_ENOMEM;
        memcpy(req->body_heap, body, body_len);
        req->body = req->body_heap;
        req->body_len_out = body_len;
    }
    return UTIL_OK;
}

static void count_status(struct http__loop *lp, int status)
{
    if (status < 300)
        http__stat_add(&lp->stats.r2xx, 1);
    else if (status < 400)
        http__stat_add(&lp->stats.r3xx, 1);
    else if (status < 500)
        http__stat_add(&lp->stats.r4xx, 1);
    else
        http__stat_add(&lp->stats.r5xx, 1);
}

void http_request_respond(struct http_request *req, const struct http_response *resp)
{
    static const struct http_response internal_error = {.status = 500};
    static const struct http_response unavailable = {.status = 503};
    struct http__conn *conn = NULL;

    if (req == NULL)
        return;
    if (req->state != HTTP_REQ_HANDLING) {
        UTIL_ERROR("http", "http_request_respond called twice for one request");
        return;
    }
    conn = req->conn;
    if (conn == NULL) {
        /* The client left while the handler worked: drop the answer. */
        http__zombie_remove(req->lp, req);
        http__req_free(req);
        return;
    }
    if (resp == NULL)
        resp = &internal_error;
    if (render(req, resp) != 0) {
        /* Out of memory: a bodiless 503 always fits the inline buffer. */
        util_blob_unref(req->blob);
        req->blob = NULL;
        req->body = NULL;
        req->body_len_out = 0;
        (void)render(req, &unavailable); /* inline, cannot fail */
    }
    count_status(req->lp, req->status);
    req->state = HTTP_REQ_RESPONDED;
    /* While llhttp runs, responses collect and go out in one write after it returns. */
    if (!conn->in_parse)
        http__conn_pump(conn);
}

void http_request_respond_text(struct http_request *req, int status, const char *content_type,
                               const char *text)
{
    struct http_response resp = {0};

    resp.status = status;
    resp.content_type = content_type;
    resp.body_bytes = text;
    resp.body_len = text != NULL ? strlen(text) : 0;
    http_request_respond(req, &resp);
}
