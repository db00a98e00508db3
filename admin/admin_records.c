/* SPDX-License-Identifier: Apache-2.0 */
/* The single path for operator changes, shared by the CLI and the admin API: the durable store
 * change (which puts it in the change feed the server follows) together with its audit record. */
#include "admin.h"

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <store/store.h>
#include <time.h>
#include <util/util.h>

#define MOD "records"

/* The store writes each change's audit record in the change's own transaction (store.h), so a
 * change can never be durable without its record, and an idempotent repeat writes none. */
int admin_revoke_blocking(struct store *store, const struct store_revocation *rev, int64_t *feed_id)
{
    return store_cert_revoke_blocking(store, rev, feed_id);
}

int admin_unrevoke_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, const char *actor, int64_t *feed_id)
{
    return store_cert_unrevoke_blocking(store, issuer_id, serial, serial_len, actor, feed_id);
}

struct issuer_by_id {
    int64_t id;
    X509 *cert;
};

static int find_issuer(void *ctx, const struct store_issuer *is)
{
    struct issuer_by_id *f = ctx;
    const unsigned char *p = is->cert_der;
    if (is->id != f->id)
        return 0;
    f->cert = d2i_X509(NULL, &p, (long)is->cert_len);
    return 1;
}

int admin_register_blocking(struct store *store, int64_t issuer_id, const unsigned char *der,
                            size_t der_len, const char *actor, unsigned char *serial,
                            size_t *serial_len, int64_t *feed_id)
{
    int rc = UTIL_EINVAL;
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)der_len);
    struct issuer_by_id f = {issuer_id, NULL};
    struct store_cert_new nc;
    char subject[256];

    if (cert == NULL)
        goto out;
    rc = store_issuer_list_blocking(store, find_issuer, &f);
    if (rc != UTIL_OK && rc != 1)
        goto out;
    rc = UTIL_EINVAL;
    ERR_clear_error();
    if (f.cert == NULL ||
        X509_NAME_cmp(X509_get_subject_name(f.cert), X509_get_issuer_name(cert)) != 0 ||
        X509_verify(cert, X509_get0_pubkey(f.cert)) != 1)
        goto out;
    if (store_serial_from_asn1(X509_get0_serialNumber(cert), serial, serial_len) != UTIL_OK)
        goto out;
    memset(&nc, 0, sizeof(nc));
    nc.issuer_id = issuer_id;
    nc.serial = serial;
    nc.serial_len = *serial_len;
    (void)util_asn1_time_unix(X509_get0_notBefore(cert), &nc.not_before); /* else stays 0 */
    (void)util_asn1_time_unix(X509_get0_notAfter(cert), &nc.not_after);
    (void)X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    nc.subject = subject;
    nc.cert_der = der;
    nc.cert_len = der_len;
    nc.actor = actor;
    rc = store_cert_add_blocking(store, &nc, feed_id);
out:
    ERR_clear_error(); /* verification failures of foreign certificates are expected */
    X509_free(cert);
    X509_free(f.cert);
    return rc;
}

int admin_supersede_blocking(struct store *store, const struct store_revocation *rev,
                             const unsigned char *new_der, size_t new_len,
                             unsigned char *new_serial, size_t *new_serial_len, int64_t *feed_id)
{
    struct store_revocation superseded = *rev;
    int64_t new_feed = 0;
    int rc;

    /* One transaction: the replacement is registered and the old certificate revoked together,
     * or neither is (a renewal must not leave the subscriber with no valid certificate, nor with
     * two). */
    *new_serial_len = 0;
    superseded.reason = STORE_REASON_SUPERSEDED;
    rc = store_begin_blocking(store);
    if (rc != UTIL_OK)
        return rc;
    if (new_der != NULL) {
        rc = admin_register_blocking(store, rev->issuer_id, new_der, new_len,
                                     rev->actor ? rev->actor : "unknown", new_serial,
                                     new_serial_len, &new_feed);
        if (rc == UTIL_OK && *new_serial_len == rev->serial_len &&
            memcmp(new_serial, rev->serial, rev->serial_len) == 0)
            rc = UTIL_EINVAL; /* a certificate cannot supersede itself */
    }
    if (rc == UTIL_OK)
        rc = admin_revoke_blocking(store, &superseded, feed_id);
    if (rc == UTIL_OK)
        rc = store_commit_blocking(store);
    if (rc != UTIL_OK) {
        /* Nothing of the pair may stay; the caller reports rc. */
        (void)store_rollback_blocking(store);
        *new_serial_len = 0;
    }
    return rc;
}

int admin_serial_parse(const char *hex, unsigned char *out, size_t *len)
{
    char digits[2 * STORE_SERIAL_MAX + 1];
    size_t n = 0;
    if (strncmp(hex, "0x", 2) == 0 || strncmp(hex, "0X", 2) == 0)
        hex += 2;
    /* Colons (as OpenSSL prints serials) are dropped; the digits go to the store's parser. */
    for (const char *p = hex; *p; p++) {
        if (*p == ':')
            continue;
        if (n == sizeof(digits) - 1)
            return UTIL_EINVAL; /* longer than any serial */
        digits[n++] = *p;
    }
    return store_serial_from_hex(digits, n, out, len);
}
