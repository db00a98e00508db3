/* SPDX-License-Identifier: Apache-2.0 */
/* http internals shared by server.c (lifecycle, loops, listeners, routing, the coarse timer) and
 * conn.c (one client connection: reading, llhttp parsing, the ordered response queue, writing),
 * conn_tls.c (its TLS record path), response.c (rendering) and tls.c (TLS contexts). Nothing
 * outside http/ includes this file but its tests. */
#ifndef PKIVA_HTTP_INT_H
#define PKIVA_HTTP_INT_H

#define HTTP__MAX_LOOP_HOOKS 8 /* modules with per-loop state */

#include "http.h"

#include <llhttp.h>
#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdint.h>

/* Tunables that are not configuration: they bound per-loop work and caches, not client behaviour. */
#define HTTP_READ_BUF_SIZE 16384 /* per-connection read buffer, lent from a per-loop pool */
/* Under AddressSanitizer the pools keep nothing, so that a use after free is caught instead of
 * landing silently in a recycled object. */
#if defined(__SANITIZE_ADDRESS__)
#define HTTP_READ_BUF_POOL 0
#define HTTP_REQ_POOL 0
#else
#define HTTP_READ_BUF_POOL 64 /* idle read buffers a loop keeps for reuse */
#define HTTP_REQ_POOL 256     /* freed requests a loop keeps for reuse */
#endif
#define HTTP_ACCEPTS_PER_TURN 32     /* accept(2) calls per listener per loop iteration */
#define HTTP_WRITE_BATCH 16          /* responses gathered into one uv_write */
#define HTTP_GRACE_MS 5000           /* graceful shutdown: in-flight requests get this long */
#define HTTP_LINGER_MS 2000          /* after a closing response: drain the peer this long */
#define HTTP_LINGER_BYTES (1u << 20) /* ... or this many bytes, whichever comes first */
#define HTTP_ARENA_INLINE 1024       /* request bytes (target, headers, body) stored inline */
#define HTTP_HDRS_INLINE 24          /* header slots stored inline */
#define HTTP_HEAD_INLINE 384         /* rendered status line + headers stored inline */
#define HTTP_PEER_LEN 56             /* "[ipv6]:port" */
#define HTTP__PEER_KEY_LEN 16        /* a client address as max_connections_per_client counts it */
/* Descriptors kept free for everything but client connections: the HSM (SoftHSM2 opens its object
 * files for each operation; network HSMs hold a socket per session), the store's SQLite
 * connections (database, -wal and -shm each), CRL files being written, the log and the operator
 * commands' admin connections. max_connections is clamped so that connections never touch it. */
#define HTTP_FD_RESERVE 128
#define HTTP_FD_PER_LOOP 8      /* a loop's own: epoll, eventfd, libuv's spare, ours, a few more */
#define HTTP_MIN_CONNECTIONS 16 /* below this, a start with the descriptors available is refused */

struct http__loop;
struct http__conn;

/* Per-loop counters. Only the owning loop thread writes them (relaxed load + store, no lock
 * prefix); http_server_stats reads them from any thread with relaxed loads. */
struct http__stats {
    _Atomic uint64_t accepted, rejected, open, requests;
    _Atomic uint64_t r2xx, r3xx, r4xx, r5xx, timeouts, limits;
    _Atomic uint64_t tls_ok, tls_failed;
    _Atomic uint64_t rejected_per_client, accept_emfile;
};

static inline void http__stat_add(_Atomic uint64_t *counter, int64_t delta)
{
    uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
    atomic_store_explicit(counter, v + (uint64_t)delta, memory_order_relaxed);
}

struct http__route {
    unsigned kind_mask;
    char method[16]; /* "" = any method */
    char *prefix;
    size_t prefix_len;
    http_handler_fn handler;
    void *ctx;
};

/* One listening socket of one loop. */
struct http__listener {
    uv_tcp_t tcp;
    struct http__loop *lp;
    unsigned kind;
    SSL_CTX *tls_ctx; /* the server's, shared read-only by every loop; NULL = plain HTTP */
    int accepts_this_turn;
    int deferred; /* a connection is waiting in libuv for uv_accept (accept budget spent) */
    int open;
};

struct http__hdr {
    uint32_t name_off, name_len, value_off, value_len;
};

enum http__req_state {
    HTTP_REQ_PARSING = 0, /* conn->cur: bytes still arriving */
    HTTP_REQ_HANDLING,    /* in the connection queue (or a zombie): the handler owes a response */
    HTTP_REQ_RESPONDED,   /* rendered, waiting for the responses before it */
    HTTP_REQ_WRITING,     /* handed to uv_write; freed in write_cb */
};

/* A request owns every byte it exposes (target, headers, body are copied out of the read buffer
 * into the arena as llhttp reports them), so the read buffer may be reused or returned to the pool
 * after every llhttp_execute, however many requests it held. Offsets, not pointers, are stored
 * while parsing because the arena may move when it grows; it never moves once the message is
 * complete, so pointers handed to the handler stay valid until http_request_respond. */
struct http_request {
    struct http_request *next; /* connection queue, zombie list or loop free list */
    struct http_request *prev; /* zombie list only */
    struct http__conn *conn;   /* NULL once the connection is gone (a zombie) */
    struct http__loop *lp;
    unsigned kind;
    enum http__req_state state;
    const char *method;
    int is_head;
    int keep_alive;
    int http_minor;
    int headers_done;
    int in_value;    /* the last header callback was a value (a new field starts a new slot) */
    int close_after; /* the rendered response says Connection: close */
    int status;
    uint64_t started; /* uv_now when the first byte arrived */
    uint64_t body_started;
    int tls;            /* arrived over TLS */
    char *peer_subject; /* verified client certificate's subject (RFC 2253), heap; or NULL */

    char *arena;
    size_t arena_len, arena_cap;
    uint32_t url_off, url_len, body_off, body_len;
    size_t header_bytes;
    struct http__hdr *hdrs;
    int n_hdrs, hdrs_cap;

    /* Response. */
    uv_write_t write_req;
    int batch_count; /* requests covered by write_req (this one and the following ones) */
    char *head;      /* rendered status line + headers: head_inline or malloc'd */
    size_t head_len;
    const char *body;
    size_t body_len_out;
    struct util_blob *blob; /* referenced body; unref'd when the request is freed */
    char *body_heap;        /* copied body that did not fit behind the headers */
    char *tls_bytes;        /* TLS: this batch's encrypted bytes while uv_write sends them */

    char peer[HTTP_PEER_LEN];
    struct http__hdr hdrs_inline[HTTP_HDRS_INLINE];
    char head_inline[HTTP_HEAD_INLINE];
    char arena_inline[HTTP_ARENA_INLINE];
};

struct http__conn {
    uv_tcp_t tcp; /* first: the handle pointer is the connection pointer */
    struct http__loop *lp;
    struct http__conn *next, *prev; /* the loop's connection list */
    unsigned kind;
    llhttp_t parser;
    char *rbuf; /* from the loop pool while bytes are buffered or a read is pending */
    size_t rlen, rpos;
    struct http_request *cur;                        /* request being parsed */
    struct http_request *q_head, *q_tail, *q_unsent; /* ordered: writing, then unsent */
    int n_pending;                                   /* parsed requests not yet fully written */
    int writes_outstanding;
    int error_status; /* set by a parser callback that rejects: 413, 414, 431, 503 */
    unsigned reading : 1, paused : 1, no_more : 1, read_eof : 1, closing : 1, lingering : 1,
        in_parse : 1, draining : 1, continue_busy : 1, counted : 1, peer_counted : 1;
    unsigned char peer_key[HTTP__PEER_KEY_LEN]; /* when peer_counted: its per-client slot */
    uint64_t idle_since;  /* uv_now when the connection last had nothing to do */
    uint64_t write_since; /* uv_now of the last write progress while writes are outstanding */
    uint64_t linger_until;
    size_t linger_bytes;
    uv_write_t continue_req;
    uv_shutdown_t shutdown_req;
    char peer[HTTP_PEER_LEN];
    /* TLS (tls.c): the SSL object reads ciphertext from tls_in and writes it to tls_out, two
     * memory BIOs it owns; the socket is driven by libuv as for plain HTTP. */
    SSL *ssl;
    BIO *tls_in, *tls_out;
    uint64_t accepted_at;      /* uv_now at accept: the handshake must end within header_timeout */
    unsigned tls_done : 1,     /* handshake complete */
        tls_verify_failed : 1, /* some check of the client's chain failed */
        tls_peer_verified : 1;
    char *tls_subject; /* verified client certificate's subject, heap; or NULL */
};

struct http__loop {
    struct http_server *srv;
    int index;
    uv_loop_t loop;
    uv_thread_t thread;
    int thread_started;
    int stop_sent; /* touched only by the start/run thread */
    struct http__listener listeners[HTTP_MAX_LISTENERS];
    int n_listeners;
    uv_timer_t timer;
    uv_async_t stop_async;
    uv_check_t check;
    uv_idle_t idle;
    uv_poll_t presize; /* started and stopped once at setup: see presize_watchers */
    int handles_init;
    int stopping;
    int fini_done;
    uint64_t stop_deadline;
    struct http__conn *conns; /* all open connections (not yet closing) */
    int n_conns;              /* connections whose handle is not yet closed */
    struct http_request *zombies;
    struct http_request *free_reqs;
    int n_free_reqs;
    char *free_bufs[HTTP_READ_BUF_POOL + 1]; /* + 1: never a zero-length array */
    int n_free_bufs;
    char date[64]; /* "Date: ...\r\n" */
    size_t date_len;
    int64_t date_sec;
    int spare_fd;              /* kept open to drain the backlog when accept fails with EMFILE */
    uint64_t emfile_logged_at; /* uv_now of the last EMFILE warning (rate limit) */
    struct http__stats stats;
};

struct http_server {
    struct http_config cfg; /* the listeners' tls_* pointers are cleared: see http_server_new */
    SSL_CTX *tls_ctx[HTTP_MAX_LISTENERS];
    char *server_header;
    struct http__route *routes;
    int n_routes, routes_cap;
    /* Per-loop hooks of every module that asked (OCSP, CRL, admin, ...), run in order. */
    struct {
        void (*init)(void *ctx, uv_loop_t *loop, int index);
        void (*fini)(void *ctx, uv_loop_t *loop, int index);
        void *ctx;
    } hooks[HTTP__MAX_LOOP_HOOKS];
    int n_hooks;
    int (*ready)(void *ctx, char *why, size_t why_len);
    void *ready_ctx;
    int (*start_hook)(
        void *ctx); /* between binding and accepting; see http_server_set_start_hook */
    void *start_hook_ctx;
    struct http__loop *loops;
    int ports[HTTP_MAX_LISTENERS];
    _Atomic int n_connections; /* process-wide, for max_connections */
    int max_connections;       /* cfg's, clamped to what RLIMIT_NOFILE allows (fd_budget) */
    struct http__peers *peers; /* per-client counts; NULL = max_connections_per_client off */
    _Atomic int stop_requested;
    int started, ran;
    uv_loop_t ctl_loop;
    uv_async_t ctl_async;
    uv_signal_t sigterm, sigint;
    int signals_init; /* bit 0: sigterm, bit 1: sigint */
    uv_mutex_t start_mutex;
    uv_cond_t start_cond;
    int n_ready;
};

/* peers.c: open connections per client address (max_connections_per_client). */
struct http__peers;
/* A table for up to max_entries addresses (one per connection at most). UTIL_ENOMEM. */
int http__peers_new(int max_entries, struct http__peers **out);
void http__peers_free(struct http__peers *peers); /* NULL-safe */
/* The key a peer address counts under: an IPv4 address, or an IPv6 /64. */
void http__peer_key(const struct sockaddr *sa, unsigned char key[HTTP__PEER_KEY_LEN]);
/* Counts one more connection of key and returns 1, or returns 0 when key already has cap. */
int http__peers_take(struct http__peers *peers, const unsigned char *key, int cap);
void http__peers_release(struct http__peers *peers, const unsigned char *key);

/* conn.c */
void http__conn_accept(struct http__listener *lst);
void http__conn_close(struct http__conn *conn);
void http__conn_tick(struct http__conn *conn, uint64_t now);
void http__conn_drain(struct http__conn *conn);
/* After the loop stopped: frees unanswered (zombie) requests and the pools; returns how many
 * zombies there were. */
int http__loop_release(struct http__loop *lp);
/* A read buffer from the loop's pool (or the heap); NULL when out of memory. */
char *http__loop_buf_get(struct http__loop *lp);
/* Frees a request and everything it owns (its arena, head, body, blob reference). */
void http__req_free(struct http_request *req);
/* Unlinks an unanswered request from the loop's list of requests whose client left. */
void http__zombie_remove(struct http__loop *lp, struct http_request *req);
/* Feeds the bytes read (conn->rbuf from rpos to rlen) to llhttp. */
void http__conn_parse(struct http__conn *conn);
/* Writes the responses that are ready, in request order, and resumes reading when it can. */
void http__conn_pump(struct http__conn *conn);
/* The peer sent all it will send: answer what was asked, or close. */
void http__conn_peer_eof(struct http__conn *conn);

/* conn_tls.c: the TLS record path of a connection (conn->ssl != NULL). */
/* Queues whatever the SSL object has written (0, UTIL_ENOMEM or UTIL_EIO). */
int http__conn_tls_send(struct http__conn *conn);
/* After ciphertext arrived (or the parser resumed): handshake, then decrypt and parse. */
void http__conn_tls_input(struct http__conn *conn);
/* 1 when the SSL object holds bytes the parser has not seen. */
int http__conn_tls_buffered(struct http__conn *conn);
/* Encrypts a batch of response buffers into one heap buffer owned by first (first->tls_bytes)
 * that then stands in for them: bufs[0], *n_bufs 1. 0, UTIL_ECRYPTO or UTIL_ENOMEM. */
int http__conn_tls_seal(struct http__conn *conn, struct http_request *first, uv_buf_t *bufs,
                        unsigned *n_bufs, size_t *total);

/* tls.c */
/* One SSL_CTX for a listener from its PEM files; logs (naming the file) and fails otherwise. */
int http__tls_ctx_new(const struct http_listener_config *lc, SSL_CTX **out);
/* Per connection: sets up conn->ssl and its BIOs (0 or UTIL_ENOMEM). */
int http__tls_conn_init(struct http__conn *conn, SSL_CTX *ctx);
void http__tls_conn_free(struct http__conn *conn);

/* server.c */
void http__dispatch(struct http_request *req);
void http__loop_conn_closed(struct http__loop *lp);

/* http_date.c: the two halves of http_not_modified (tests/http calls them directly). */
/* Parses an IMF-fixdate (the obsolete RFC 850 and asctime forms are refused: a validator that
 * cannot be read is ignored, and the full response is always a correct answer). UTIL_EINVAL if
 * it is not one. */
int http__date_parse(const char *text, size_t len, int64_t *t);
/* Whether an If-None-Match value (a list of entity tags, or "*") names etag, comparing weakly. */
int http__etag_matches(const char *value, size_t len, const char *etag);

#endif
