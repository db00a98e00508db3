/* SPDX-License-Identifier: Apache-2.0 */
/* http: the HTTP/1.1 server every pkiva endpoint sits on. It knows nothing of OCSP, CRLs or time
 * stamps: modules register handlers for (listener, method, path prefix) and answer with bytes, a
 * content type and headers; http frames them. One libuv loop per worker thread, each with its own
 * SO_REUSEPORT listening socket per listener, keep-alive and pipelining, llhttp parsing in place,
 * every buffer bounded, idle and slow clients closed by one coarse timer per loop. */
#ifndef PKIVA_HTTP_H
#define PKIVA_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <util/util.h>
#include <uv.h>

struct http_server;
struct http_request;

/* Listener kinds, also used as route masks. */
#define HTTP_PUBLIC 1u
#define HTTP_ADMIN 2u

#define HTTP_MAX_LISTENERS 4

struct http_listener_config {
    char host[64]; /* numeric IPv4 or IPv6 address */
    int port;      /* 0 = pick a free port (tests); see http_server_port */
    unsigned kind; /* HTTP_PUBLIC or HTTP_ADMIN */
    /* Optional TLS (HTTPS) on this listener. The files are PEM and are read once, by
     * http_server_new, so these strings need to live only until it returns. tls_cert_file NULL =
     * plain HTTP (the public listener: OCSP, CRLs and time stamps are served over http:// by
     * protocol). The key is an ordinary file (mode 0600): the HSM keys sign OCSP responses, CRLs
     * and time stamps, not TLS handshakes. TLS 1.2 or later, OpenSSL's default ciphers, no
     * renegotiation. */
    const char *tls_cert_file; /* certificate, then any intermediates */
    const char *tls_key_file;  /* its private key */
    /* Client certificates: NULL = none asked for. Otherwise asked for but optional (a bearer
     * token may authenticate instead): the handshake succeeds without one, or with one that does
     * not verify, and http_request_peer_cert_verified tells the handler what was proven. */
    const char *tls_client_ca_file; /* trusted CA certificates for client certificates */
    /* PEM CRLs of those CAs, or NULL (revocation not checked). When set, a client certificate
     * that is revoked, or whose issuer has no current CRL in the file, does not verify. Read
     * once, like the other files. */
    const char *tls_client_crl_file;
};

struct http_limits {
    /* Per process, all listeners; past it new connections are closed. http_server_start raises
     * the soft RLIMIT_NOFILE to the hard limit and clamps this (logged) so that connections leave
     * HTTP_FD_RESERVE descriptors free for the HSM, the store, CRL files and logs; it refuses to
     * start when fewer than 16 connections would fit. */
    int max_connections;
    /* Open connections per client address (IPv4 address, IPv6 /64), all listeners together; past
     * it the client's new connections are closed at once. 0 = no cap. */
    int max_connections_per_client;
    size_t max_url;          /* bytes of request target; past it 414 */
    int max_headers;         /* header fields; past it 431 */
    size_t max_header_bytes; /* all header bytes of one request; past it 431 */
    size_t max_body;         /* request body bytes; past it 413 */
    int max_pipelined; /* requests parsed ahead of responses per connection; past it reading pauses */
    int header_timeout_ms; /* a request's headers must arrive within this; else 408 and close */
    int body_timeout_ms;   /* a request's body must arrive within this; else 408 and close */
    int idle_timeout_ms;   /* keep-alive connection with no request in progress closed after this */
    int write_timeout_ms;  /* a response not drained by the client within this: close */
};
/* The defaults documented in conf/pkiva.conf (the [server] table of http_config.c). */
void http_limits_default(struct http_limits *limits);

struct http_config {
    int workers; /* loop threads, >= 1 */
    int n_listeners;
    struct http_listener_config listeners[HTTP_MAX_LISTENERS];
    struct http_limits limits;
    const char *server_header; /* value of Server:, NULL = none */
};

/* The listeners and limits of the [server] section are declared once, in the table of
 * http_config.c (name, kind, limits, default, doc line). http_config_default fills cfg with its
 * defaults: the public listener (index 0) and the admin listener (index 1), no TLS, workers 0 (the
 * caller picks). http_config_directives returns the table (static storage) and its length. */
void http_config_default(struct http_config *cfg);
struct util_conf_directive;
const struct util_conf_directive *http_config_directives(size_t *n);
/* "127.0.0.1:8080" or "[::1]:8080" -> host and port (kind and TLS untouched). Returns 0 or
 * UTIL_EINVAL. */
int http_listener_parse(const char *text, struct http_listener_config *out);

/* A handler runs on the loop thread of the connection. It must not block. It answers with
 * http_request_respond, now or later (e.g. after a signing job), exactly once, on that same loop. */
typedef void (*http_handler_fn)(void *ctx, struct http_request *req);

/* Creates the server (no sockets yet). */
int http_server_new(const struct http_config *cfg, struct http_server **out);
/* Registers a handler for requests on listeners in kind_mask whose method matches (NULL = any; HEAD
 * is served by the GET handler with the body left out) and whose path starts with prefix. The longest
 * matching prefix wins. Only before http_server_start. prefix is copied. */
int http_server_route(struct http_server *srv, unsigned kind_mask, const char *method,
                      const char *prefix, http_handler_fn handler, void *ctx);
/* Per-loop hooks: init runs on each loop thread before it accepts (create util_pool ports there),
 * fini on the same thread after it stopped serving. Several modules may register (at most 8);
 * inits run in registration order, finis in reverse. */
int http_server_on_loop(struct http_server *srv,
                        void (*init)(void *ctx, uv_loop_t *loop, int index),
                        void (*fini)(void *ctx, uv_loop_t *loop, int index), void *ctx);
/* /readyz asks this (on a loop thread: must not block). Return 1 if ready, else 0 and a reason. */
void http_server_set_ready_fn(struct http_server *srv,
                              int (*ready)(void *ctx, char *why, size_t why_len), void *ctx);
/* hook runs once inside http_server_start, on the calling thread, after every listener is bound
 * and listening and before any loop thread starts accepting; a non-zero return fails the start
 * (nothing was accepted). For what must happen between binding and serving, such as giving up
 * root (cli/privdrop.c). Only before http_server_start. */
void http_server_set_start_hook(struct http_server *srv, int (*hook)(void *ctx), void *ctx);
/* Binds every listener on every worker (errors name the address), starts the worker threads, and
 * returns once all are accepting. */
int http_server_start(struct http_server *srv);
/* Actual port of listener i (after start; useful with port 0). */
int http_server_port(const struct http_server *srv, int listener_index);
/* Blocks until SIGTERM/SIGINT or http_server_stop, then shuts down gracefully: stops accepting,
 * lets in-flight requests finish (bounded by a grace period), closes, joins the threads. Returns 0. */
int http_server_run(struct http_server *srv);
/* Thread-safe request to stop; http_server_run returns after the graceful shutdown. */
void http_server_stop(struct http_server *srv);
void http_server_free(struct http_server *srv); /* after run returned; NULL-safe */

/* ---- requests ------------------------------------------------------------------------------- */
/* All pointers returned below stay valid until http_request_respond is called. */

const char *http_request_method(const struct http_request *req); /* "GET", "POST", ... */
/* The request target as received (not decoded), e.g. "/MFMwUTBPME0w%2B...". */
const char *http_request_target(const struct http_request *req, size_t *len);
/* The value of the first header with this name (case-insensitive), or NULL. */
const char *http_request_header(const struct http_request *req, const char *name, size_t *len);
/* How many header fields have this name (case-insensitive). For fields that must occur once
 * (Authorization, Content-Type): a request repeating one is ambiguous and should be refused. */
int http_request_header_count(const struct http_request *req, const char *name);
const unsigned char *http_request_body(const struct http_request *req, size_t *len);

/* ---- dates and conditional requests (http_date.c) --------------------------------------------- */

/* t (seconds since the epoch) as an IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", into out (30
 * bytes suffice); out of range: the epoch. */
void http_date_format(int64_t t, char *out, size_t len);
/* RFC 9110 §13.2.2 for GET/HEAD of a representation with this ETag and Last-Modified time: 1 if
 * it may be answered 304 Not Modified. If-None-Match decides when present; otherwise
 * If-Modified-Since, when last_modified is not after it. Pass last_modified 0 when the Last-Modified
 * second does not tell this representation from the one it replaced (both made in the same second):
 * then only a matching ETag earns a 304, so that a cache revalidating a replaced OCSP response or
 * CRL by date alone is never told to keep it. */
int http_request_not_modified(const struct http_request *req, const char *etag,
                              int64_t last_modified);
int http_request_loop_index(const struct http_request *req);
uv_loop_t *http_request_loop(const struct http_request *req);
/* Peer address as text ("127.0.0.1:53211"), for logs. */
const char *http_request_peer(const struct http_request *req);
/* 1 if the request arrived over TLS, else 0. */
int http_request_tls(const struct http_request *req);
/* 1 if the client presented a certificate that verified against the listener's
 * tls_client_ca_file during the handshake (chain, validity period, signatures, an
 * extendedKeyUsage with clientAuth, and not revoked when tls_client_crl_file is set), else 0. When 1
 * and subject is not NULL, the certificate's subject in RFC 2253 form is copied into subject
 * (NUL-terminated, truncated to len - 1 bytes). Authentication decisions are the caller's: this
 * says only what the handshake proved. */
int http_request_peer_cert_verified(const struct http_request *req, char *subject, size_t len);

struct http_response {
    int status;               /* 200, 304, 400, ... */
    const char *content_type; /* NULL = no Content-Type */
    struct util_blob *body;   /* sent by reference: http takes its own reference. May be NULL. */
    const void *body_bytes;   /* alternative to body: copied. */
    size_t body_len;
    const char *headers; /* extra header lines, each ending in "\r\n", copied; may be NULL */
    size_t headers_len;  /* strlen(headers), or 0: http measures it */
};

/* Sends the response (Content-Length, Date, Connection handled by http). Call exactly once, on the
 * request's loop thread. If the client has gone away, the response is dropped and the request freed. */
void http_request_respond(struct http_request *req, const struct http_response *resp);
/* 405 Method Not Allowed with "Allow: <allow>" (e.g. "GET, HEAD") and a short text body. */
void http_request_respond_405(struct http_request *req, const char *allow);
/* Shorthand: a small text/plain or application/json body with a status. */
void http_request_respond_text(struct http_request *req, int status, const char *content_type,
                               const char *text);

struct http_stats {
    uint64_t connections_accepted, connections_rejected, connections_open;
    uint64_t requests;
    uint64_t responses_2xx, responses_3xx, responses_4xx, responses_5xx;
    uint64_t timeouts, limit_rejections;
    uint64_t tls_handshakes;         /* completed TLS handshakes */
    uint64_t tls_handshake_failures; /* failed ones: bad or plain-text input, a broken peer */
    uint64_t connections_rejected_per_client; /* closed at once: max_connections_per_client */
    uint64_t accept_emfile; /* accept(2) found no free descriptor (the backlog was drained) */
};
/* Sums the per-loop counters (relaxed atomics; a consistent-enough snapshot for /metrics). */
void http_server_stats(const struct http_server *srv, struct http_stats *out);
/* The HTTP section of /metrics (Prometheus text, pkiva_http_*) into buf (NUL-terminated).
 * Returns the length written, or UTIL_EINVAL when buf is too small. Any thread. */
int http_server_metrics(const struct http_server *srv, char *buf, size_t len);

#endif
