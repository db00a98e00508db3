/* SPDX-License-Identifier: Apache-2.0 */
/* TLS for http listeners: one SSL_CTX per listener, built from PEM files when the server is
 * created, and the per-connection SSL object with its two memory BIOs. The bytes themselves move
 * in conn_tls.c, where conn.c's read and write paths pass them through the SSL object. */
#include "http_int.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

/* 1 when cert says it is for TLS client authentication: an extendedKeyUsage extension that
 * lists id-kp-clientAuth. OpenSSL's own purpose check accepts a certificate without the
 * extension; an operator certificate must state its purpose, so one without it proves nothing
 * (nor does anyExtendedKeyUsage, or serverAuth alone). */
static int client_auth_eku(X509 *cert)
{
    return (X509_get_extension_flags(cert) & EXFLAG_XKUSAGE) != 0 &&
           (X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0;
}

/* Called for every certificate of the client's chain. The handshake goes on whatever the
 * outcome: a client certificate is optional on these listeners (a bearer token may be presented
 * instead), so a failed check only means that the certificate proves nothing. Remembering any
 * failure here, on top of SSL_get_verify_result, keeps that decision conservative. */
static int verify_cb(int preverify_ok, X509_STORE_CTX *store_ctx)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store_ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct http__conn *conn = ssl != NULL ? SSL_get_app_data(ssl) : NULL;
    X509 *cert = X509_STORE_CTX_get_current_cert(store_ctx);

    if (conn == NULL)
        return 1;
    if (!preverify_ok)
        conn->tls_verify_failed = 1;
    if (X509_STORE_CTX_get_error_depth(store_ctx) == 0 && (cert == NULL || !client_auth_eku(cert)))
        conn->tls_verify_failed = 1;
    return 1;
}

/* Loads the CRLs of lc->tls_client_crl_file into ctx's store and makes every client certificate
 * checked against them: one that is revoked, or whose issuer has no current CRL in the file
 * (missing or past its nextUpdate), does not verify (fails closed). */
static int load_client_crls(SSL_CTX *ctx, const struct http_listener_config *lc)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());

    if (lookup == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "cannot set up the TLS client CRL store");
        return UTIL_ENOMEM;
    }
    if (X509_load_crl_file(lookup, lc->tls_client_crl_file, X509_FILETYPE_PEM) <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "TLS client CRL %s: cannot load a PEM CRL from it",
                         lc->tls_client_crl_file);
        return UTIL_ECONFIG;
    }
    if (X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "cannot turn on CRL checking");
        return UTIL_ENOMEM;
    }
    return UTIL_OK;
}

int http__tls_ctx_new(const struct http_listener_config *lc, SSL_CTX **out)
{
    SSL_CTX *ctx = NULL;
    STACK_OF(X509_NAME) *ca_names = NULL;
    int rc = UTIL_ECONFIG;

    *out = NULL;
    if (lc->tls_key_file == NULL) {
        UTIL_ERROR("http", "TLS certificate %s: no key file", lc->tls_cert_file);
        goto out;
    }
    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "cannot create a TLS context");
        rc = UTIL_ENOMEM;
        goto out;
    }
    /* TLS 1.2 and 1.3 only; no renegotiation (a client could otherwise make the server redo
     * handshakes at will); no session tickets or cache: clients are few (operators, an RA). */
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "cannot set the minimum TLS version");
        goto out;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_TICKET);
    (void)SSL_CTX_set_num_tickets(ctx, 0); /* only fails for a client context */
    (void)SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF); /* returns the old mode */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, lc->tls_cert_file) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "TLS certificate %s: cannot load",
                         lc->tls_cert_file);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, lc->tls_key_file, SSL_FILETYPE_PEM) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "TLS key %s: cannot load", lc->tls_key_file);
        goto out;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, "http", "TLS key %s does not match the certificate %s",
                         lc->tls_key_file, lc->tls_cert_file);
        goto out;
    }
    if (lc->tls_client_ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, lc->tls_client_ca_file, NULL) != 1) {
            util_log_openssl(UTIL_LOG_ERROR, "http", "TLS client CA %s: cannot load",
                             lc->tls_client_ca_file);
            goto out;
        }
        /* Sent in the CertificateRequest so that clients pick a certificate this CA issued. */
        ca_names = SSL_load_client_CA_file(lc->tls_client_ca_file);
        if (ca_names == NULL) {
            util_log_openssl(UTIL_LOG_ERROR, "http", "TLS client CA %s: no certificate in it",
                             lc->tls_client_ca_file);
            goto out;
        }
        SSL_CTX_set_client_CA_list(ctx, ca_names); /* takes ownership */
        ca_names = NULL;
        if (lc->tls_client_crl_file != NULL) {
            rc = load_client_crls(ctx, lc);
            if (rc != UTIL_OK)
                goto out;
            rc = UTIL_ECONFIG;
        }
        /* SSL_VERIFY_PEER without FAIL_IF_NO_PEER_CERT: asked for, not required. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
        SSL_CTX_set_verify_depth(ctx, 4);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    *out = ctx;
    ctx = NULL;
    rc = UTIL_OK;
out:
    SSL_CTX_free(ctx);
    return rc;
}

int http__tls_conn_init(struct http__conn *conn, SSL_CTX *ctx)
{
    SSL *ssl = NULL;
    BIO *in = NULL, *out = NULL;
    int rc = UTIL_ENOMEM;

    ssl = SSL_new(ctx);
    in = BIO_new(BIO_s_mem());
    out = BIO_new(BIO_s_mem());
    if (ssl == NULL || in == NULL || out == NULL)
        goto out;
    /* An empty input BIO means "no more bytes yet", not end of file. */
    BIO_set_mem_eof_return(in, -1);
    BIO_set_mem_eof_return(out, -1);
    SSL_set_bio(ssl, in, out); /* the SSL object owns both now */
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, conn);
    conn->ssl = ssl;
    conn->tls_in = in;
    conn->tls_out = out;
    ssl = NULL;
    in = out = NULL;
    rc = UTIL_OK;
out:
    if (rc != UTIL_OK)
        ERR_clear_error(); /* an allocation failure: nothing worth logging per connection */
    SSL_free(ssl);
    BIO_free(in);
    BIO_free(out);
    return rc;
}

void http__tls_conn_free(struct http__conn *conn)
{
    SSL_free(conn->ssl); /* NULL-safe; frees both BIOs */
    conn->ssl = NULL;
    conn->tls_in = conn->tls_out = NULL;
    free(conn->tls_subject);
    conn->tls_subject = NULL;
}
