/* SPDX-License-Identifier: Apache-2.0 */
/* The TLS record path of a connection on a listener that has TLS: ciphertext that arrived is fed
 * to the SSL object through its input memory BIO, the handshake is completed, plaintext is
 * decrypted into the connection's read buffer for the parser, and a batch of responses is sealed
 * into one buffer for conn.c's write path. tls.c builds the SSL_CTX and the SSL object. */
#include "http_int.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

/* TLS bytes that are not part of a response batch (handshake, alerts, 100 Continue,
 * close_notify), copied out of the SSL object's output BIO and owned by their write. */
struct tls_write {
    uv_write_t req;
    struct http__conn *conn;
    char bytes[];
};

static void on_tls_written(uv_write_t *wr, int status)
{
    struct tls_write *w = wr->data;
    struct http__conn *conn = w->conn;

    free(w);
    if (status < 0 && !conn->closing) {
        UTIL_DEBUG("http", "%s: write failed: %s", conn->peer, uv_strerror(status));
        http__conn_close(conn);
    }
}

/* Queues whatever the SSL object has written. libuv sends queued writes in order, and
 * conn_flush's uv_try_write never jumps a queued one, so the ciphertext leaves in the order the
 * SSL object produced it. */
int http__conn_tls_send(struct http__conn *conn)
{
    size_t len = BIO_ctrl_pending(conn->tls_out);
    struct tls_write *w = NULL;
    uv_buf_t buf;

    if (len == 0)
        return UTIL_OK;
    w = malloc(sizeof(*w) + len);
    if (w == NULL)
        return UTIL_ENOMEM;
    if (BIO_read(conn->tls_out, w->bytes, (int)len) != (int)len) {
        ERR_clear_error();
        free(w);
        return UTIL_ENOMEM;
    }
    w->conn = conn;
    w->req.data = w;
    buf = uv_buf_init(w->bytes, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&conn->tcp, &buf, 1, on_tls_written) != 0) {
        free(w);
        return UTIL_EIO;
    }
    return UTIL_OK;
}

/* Records what the client's certificate proved, once, when the handshake completes. */
static void conn_tls_peer(struct http__conn *conn)
{
    X509 *cert = SSL_get0_peer_certificate(conn->ssl);
    BIO *mem = NULL;
    char *text = NULL;
    long len = 0;

    if (cert == NULL || conn->tls_verify_failed || SSL_get_verify_result(conn->ssl) != X509_V_OK)
        return;
    mem = BIO_new(BIO_s_mem());
    if (mem == NULL || X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0)
        goto out;
    len = BIO_get_mem_data(mem, &text);
    if (len < 0 || len > 4096)
        goto out;
    conn->tls_subject = malloc((size_t)len + 1);
    if (conn->tls_subject == NULL)
        goto out;
    memcpy(conn->tls_subject, text, (size_t)len);
    conn->tls_subject[len] = '\0';
    conn->tls_peer_verified = 1;
out:
    ERR_clear_error();
    BIO_free(mem);
}

/* Returns 0 once the handshake is complete, 1 while it needs more bytes, -1 if the connection
 * was closed (a failed handshake: counted, logged at debug level, the alert sent if the socket
 * takes it at once). */
static int conn_tls_handshake(struct http__conn *conn)
{
    struct http__loop *lp = conn->lp;
    int n = 0;
    int err = 0;

    ERR_clear_error();
    n = SSL_do_handshake(conn->ssl);
    if (n == 1) {
        conn->tls_done = 1;
        conn->idle_since = uv_now(&lp->loop);
        http__stat_add(&lp->stats.tls_ok, 1);
        conn_tls_peer(conn);
        if (http__conn_tls_send(conn) != 0) {
            http__conn_close(conn);
            return -1;
        }
        return 0;
    }
    err = SSL_get_error(conn->ssl, n);
    if (err == SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        if (http__conn_tls_send(conn) != 0) {
            http__conn_close(conn);
            return -1;
        }
        return 1;
    }
    http__stat_add(&lp->stats.tls_failed, 1);
    util_log_openssl(UTIL_LOG_DEBUG, "http", "%s: TLS handshake failed", conn->peer);
    {
        char alert[256];
        int len = BIO_read(conn->tls_out, alert, sizeof(alert));
        if (len > 0) {
            uv_buf_t buf = uv_buf_init(alert, (unsigned)len);
            (void)uv_try_write((uv_stream_t *)&conn->tcp, &buf, 1); /* courtesy only */
        }
        ERR_clear_error();
    }
    http__conn_close(conn);
    return -1;
}

/* Decrypts into the read buffer. Returns bytes added, 0 when the SSL object needs more input
 * (or the buffer is full), -1 if the connection ended (close_notify or a TLS error). */
static int conn_tls_pull(struct http__conn *conn)
{
    size_t room = 0;
    int n = 0;
    int err = 0;

    if (conn->rbuf == NULL)
        conn->rbuf = http__loop_buf_get(conn->lp);
    if (conn->rbuf == NULL) {
        http__conn_close(conn);
        return -1;
    }
    room = HTTP_READ_BUF_SIZE - conn->rlen;
    if (room == 0)
        return 0;
    ERR_clear_error();
    n = SSL_read(conn->ssl, conn->rbuf + conn->rlen, (int)room);
    if (n > 0) {
        conn->rlen += (size_t)n;
        return n;
    }
    err = SSL_get_error(conn->ssl, n);
    if (err == SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        return 0;
    }
    if (err == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        http__conn_peer_eof(conn);
        return -1;
    }
    util_log_openssl(UTIL_LOG_DEBUG, "http", "%s: TLS read failed", conn->peer);
    http__conn_close(conn);
    return -1;
}

/* Bytes the SSL object holds that the parser has not seen: decrypted ones, or ciphertext of
 * which a whole record may have arrived. */
int http__conn_tls_buffered(struct http__conn *conn)
{
    return SSL_pending(conn->ssl) > 0 || BIO_ctrl_pending(conn->tls_in) > 0;
}

/* After ciphertext arrived (or the parser resumed): completes the handshake, then decrypts and
 * parses for as long as the parser takes bytes. What the SSL object wrote meanwhile (handshake
 * messages, a key update) is queued for sending. */
void http__conn_tls_input(struct http__conn *conn)
{
    if (!conn->tls_done && conn_tls_handshake(conn) != 0)
        return;
    while (!conn->closing && !conn->paused && !conn->no_more) {
        if (conn->rlen > conn->rpos) {
            http__conn_parse(conn);
            continue;
        }
        if (conn_tls_pull(conn) <= 0)
            break;
    }
    if (!conn->closing && http__conn_tls_send(conn) != 0)
        http__conn_close(conn);
}

/* Encrypts a batch of response buffers into one heap buffer that then stands in for them:
 * bufs[0] (n_bufs 1) points at it and first owns it until the batch is freed. */
int http__conn_tls_seal(struct http__conn *conn, struct http_request *first, uv_buf_t *bufs,
                        unsigned *n_bufs, size_t *total)
{
    size_t len = 0;
    unsigned i = 0;

    ERR_clear_error();
    for (i = 0; i < *n_bufs; i++) {
        /* A memory BIO grows as needed, so SSL_write takes each piece whole or fails. */
        if (SSL_write(conn->ssl, bufs[i].base, (int)bufs[i].len) <= 0) {
            util_log_openssl(UTIL_LOG_DEBUG, "http", "%s: TLS write failed", conn->peer);
            return UTIL_ECRYPTO;
        }
    }
    len = BIO_ctrl_pending(conn->tls_out);
    first->tls_bytes = malloc(len);
    if (first->tls_bytes == NULL)
        return UTIL_ENOMEM;
    if (BIO_read(conn->tls_out, first->tls_bytes, (int)len) != (int)len) {
        ERR_clear_error();
        return UTIL_ENOMEM;
    }
    bufs[0] = uv_buf_init(first->tls_bytes, (unsigned)len);
    *n_bufs = 1;
    *total = len;
    return UTIL_OK;
}
