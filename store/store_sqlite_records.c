/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite backend's records of the publishing services: SLA marks of each revocation (when
 * OCSP and the CRL first showed it), CRL numbers and the CRLs issued, TSA serial reservations and
 * the log of issued tokens. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite_int.h"

/* ---- SLA ------------------------------------------------------------------------------------ */

int store__sq_sla_mark(struct store *store, int64_t feed_id, int stage, int64_t at_ms)
{
    static const char op[] = "sla mark";
    struct sq *s = store__sq_of(store);
    enum sq_stmt_id id = stage == STORE_SLA_OCSP ? STORE_ST_SLA_MARK_OCSP : STORE_ST_SLA_MARK_CRL;
    sqlite3_stmt *mark = NULL;
    sqlite3_stmt *exists = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, id, &mark);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, mark, op, STORE_SQ_INT(feed_id), STORE_SQ_INT(at_ms));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, mark, op, &row);
    if (rc != 0 || sqlite3_changes(s->db) == 1)
        goto out;
    /* Nothing updated: either it was marked before (fine, the first time stays) or there is no
     * such revocation. */
    rc = store__sq_stmt_get(s, STORE_ST_SLA_EXISTS, &exists);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, exists, op, STORE_SQ_INT(feed_id));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, exists, op, &row);
    if (rc == 0 && !row)
        rc = UTIL_ENOTFOUND;
out:
    store__sq_stmt_put(s, id, mark);
    store__sq_stmt_put(s, STORE_ST_SLA_EXISTS, exists);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_sla_mark_upto(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                            int stage, int64_t at_ms)
{
    static const char op[] = "sla mark up to";
    struct sq *s = store__sq_of(store);
    enum sq_stmt_id id = stage == STORE_SLA_OCSP ? STORE_ST_SLA_UPTO_OCSP : STORE_ST_SLA_UPTO_CRL;
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id), STORE_SQ_INT(up_to_feed_id),
                       STORE_SQ_INT(at_ms));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
out:
    store__sq_stmt_put(s, id, stmt);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_sla_list(struct store *store, int open_only, int limit,
                       int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    static const char op[] = "sla list";
    struct sq *s = store__sq_of(store);
    enum sq_stmt_id id = open_only ? STORE_ST_SLA_LIST_OPEN : STORE_ST_SLA_LIST_ALL;
    sqlite3_stmt *stmt = NULL;
    struct store_sla_row sla;
    const void *serial = NULL;
    int serial_len = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    /* SQLite reads a negative LIMIT as "no limit". */
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(limit > 0 ? limit : -1));
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&sla, 0, sizeof(sla));
        sla.feed_id = sqlite3_column_int64(stmt, 0);
        sla.issuer_id = sqlite3_column_int64(stmt, 1);
        serial = sqlite3_column_blob(stmt, 2);
        serial_len = sqlite3_column_bytes(stmt, 2);
        if (serial_len < 1 || serial_len > STORE_SERIAL_MAX) {
            UTIL_ERROR(STORE_MOD, "%s: %s: revocation %" PRId64 " has a serial of %d octets", op,
                       s->path, sla.feed_id, serial_len);
            rc = UTIL_ESTORE;
            goto out;
        }
        memcpy(sla.serial, serial, (size_t)serial_len);
        sla.serial_len = (size_t)serial_len;
        sla.request_id = (const char *)sqlite3_column_text(stmt, 3);
        sla.received_at_ms = sqlite3_column_int64(stmt, 4);
        sla.committed_at_ms = sqlite3_column_int64(stmt, 5);
        sla.ocsp_at_ms = sqlite3_column_int64(stmt, 6);
        sla.crl_at_ms = sqlite3_column_int64(stmt, 7);
        sla.revoked_at = sqlite3_column_int64(stmt, 8);
        sla.invalidity_date = sqlite3_column_int64(stmt, 9);
        rc = fn(ctx, &sla);
        if (rc != 0)
            goto out;
    }
out:
    store__sq_stmt_put(s, id, stmt);
    return rc;
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

int store__sq_crl_number_next(struct store *store, int64_t issuer_id, int64_t floor,
                              int64_t *number_out)
{
    static const char op[] = "crl number next";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int64_t number = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_CRL_NUMBER_NEXT, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id), STORE_SQ_INT(floor));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        rc = UTIL_ESTORE;
        goto out;
    }
    number = sqlite3_column_int64(stmt, 0);
    /* Step to the end so the statement is finished before the commit. */
    rc = store__sq_step(s, stmt, op, &row);
out:
    store__sq_stmt_put(s, STORE_ST_CRL_NUMBER_NEXT, stmt);
    rc = store__sq_tx_finish(s, kind, rc, op);
    if (rc == 0)
        *number_out = number;
    return rc;
}

int store__sq_crl_save(struct store *store, const struct store_crl_record *crl)
{
    static const char op[] = "crl save";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *reserved = NULL;
    sqlite3_stmt *insert = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    if (crl->der_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    /* Saving a number that was never reserved would let a later reservation hand it out again. */
    rc = store__sq_stmt_get(s, STORE_ST_CRL_RESERVED, &reserved);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, reserved, op, STORE_SQ_INT(crl->issuer_id));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, reserved, op, &row);
    if (rc != 0)
        goto out;
    if (!row || sqlite3_column_int64(reserved, 0) < crl->number) {
        UTIL_ERROR(STORE_MOD,
                   "crl save: number %" PRId64 " of issuer %" PRId64 " was never reserved",
                   crl->number, crl->issuer_id);
        rc = UTIL_EINVAL;
        goto out;
    }
    rc = store__sq_stmt_get(s, STORE_ST_CRL_INSERT, &insert);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, insert, op, STORE_SQ_INT(crl->issuer_id), STORE_SQ_INT(crl->number),
                       STORE_SQ_INT(crl->base_number), STORE_SQ_INT(crl->this_update),
                       STORE_SQ_INT(crl->next_update), STORE_SQ_INT(crl->feed_id),
                       STORE_SQ_BLOB(crl->der, crl->der_len), STORE_SQ_INT(util_now_ms()));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, insert, op, &row);
out:
    store__sq_stmt_put(s, STORE_ST_CRL_RESERVED, reserved);
    store__sq_stmt_put(s, STORE_ST_CRL_INSERT, insert);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_crl_latest(struct store *store, int64_t issuer_id, int delta,
                         struct store_crl_record *meta_out, unsigned char **der_out)
{
    static const char op[] = "crl latest";
    struct sq *s = store__sq_of(store);
    enum sq_stmt_id id = delta ? STORE_ST_CRL_LATEST_DELTA : STORE_ST_CRL_LATEST_FULL;
    sqlite3_stmt *stmt = NULL;
    unsigned char *der = NULL;
    const void *blob = NULL;
    int len = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    blob = sqlite3_column_blob(stmt, 5);
    len = sqlite3_column_bytes(stmt, 5);
    if (der_out != NULL && len > 0) {
        der = malloc((size_t)len);
        if (der == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        memcpy(der, blob, (size_t)len);
    }
    meta_out->issuer_id = issuer_id;
    meta_out->number = sqlite3_column_int64(stmt, 0);
    meta_out->base_number = sqlite3_column_int64(stmt, 1);
    meta_out->this_update = sqlite3_column_int64(stmt, 2);
    meta_out->next_update = sqlite3_column_int64(stmt, 3);
    meta_out->feed_id = sqlite3_column_int64(stmt, 4);
    meta_out->der = der;
    meta_out->der_len = (size_t)len;
    if (der_out != NULL)
        *der_out = der;
    der = NULL;
out:
    free(der);
    store__sq_stmt_put(s, id, stmt);
    return rc;
}

/* ---- TSA ------------------------------------------------------------------------------------ */

int store__sq_tsa_reserve(struct store *store, const char *unit, int64_t count, int64_t floor,
                          int64_t *first_out)
{
    static const char op[] = "tsa reserve";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int64_t first = 0;
    int row = 0;
    int rc = 0;

    if (count >= INT64_MAX - 1 || floor > INT64_MAX - count)
        return UTIL_EINVAL;
    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_TSA_RESERVE, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_TEXT(unit), STORE_SQ_INT(count), STORE_SQ_INT(floor));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        UTIL_ERROR(STORE_MOD, "tsa reserve: serials of unit %s would overflow 64 bits", unit);
        rc = UTIL_EINVAL;
        goto out;
    }
    first = sqlite3_column_int64(stmt, 0);
    rc = store__sq_step(s, stmt, op, &row);
out:
    store__sq_stmt_put(s, STORE_ST_TSA_RESERVE, stmt);
    rc = store__sq_tx_finish(s, kind, rc, op);
    if (rc == 0)
        *first_out = first;
    return rc;
}

/* Copies a TEXT column into out (out_len bytes with the NUL); 0 if it does not fit. */
static int column_text(sqlite3_stmt *stmt, int col, char *out, size_t out_len)
{
    const unsigned char *text = sqlite3_column_text(stmt, col);
    int len = sqlite3_column_bytes(stmt, col);
    if (text == NULL || len < 0 || (size_t)len >= out_len)
        return 0;
    memcpy(out, text, (size_t)len);
    out[len] = '\0';
    return 1;
}

int store__sq_tsa_token_get(struct store *store, const unsigned char *cert_id, const char *unit,
                            int64_t serial, struct store_tsa_record *out)
{
    static const char op[] = "tsa token get";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    const void *blob = NULL;
    int len = 0, row = 0, rc = 0;

    if (strlen(unit) >= sizeof(out->unit))
        return UTIL_ENOTFOUND; /* no unit has such a name */
    rc = store__sq_stmt_get(s, STORE_ST_TSA_TOKEN_GET, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_TEXT(unit), STORE_SQ_INT(serial),
                       STORE_SQ_BLOB(cert_id != NULL ? (const void *)cert_id : "",
                                     cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    (void)snprintf(out->unit, sizeof(out->unit), "%s", unit); /* fits: checked above */
    out->serial = serial;
    out->gen_time_ms = sqlite3_column_int64(stmt, 0);
    blob = sqlite3_column_blob(stmt, 3);
    len = sqlite3_column_bytes(stmt, 3);
    if (!column_text(stmt, 1, out->policy, sizeof(out->policy)) ||
        !column_text(stmt, 2, out->imprint_alg, sizeof(out->imprint_alg)) || len < 0 ||
        (size_t)len > sizeof(out->imprint) || (len > 0 && blob == NULL)) {
        UTIL_ERROR(STORE_MOD, "tsa token get: the record of %s/%lld does not fit", unit,
                   (long long)serial);
        rc = UTIL_EINVAL;
        goto out;
    }
    if (len > 0)
        memcpy(out->imprint, blob, (size_t)len);
    out->imprint_len = (size_t)len;
    rc = store__sq_step(s, stmt, op, &row); /* to the end: resets cleanly */
out:
    store__sq_stmt_put(s, STORE_ST_TSA_TOKEN_GET, stmt);
    return rc;
}

int store__sq_tsa_log(struct store *store, const struct store_tsa_token *tokens, size_t n)
{
    static const char op[] = "tsa log";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    size_t i = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_TSA_LOG, &stmt);
    if (rc != 0)
        goto out;
    for (i = 0; i < n; i++) {
        const struct store_tsa_token *t = &tokens[i];
        if (t->imprint_len > INT32_MAX) {
            rc = UTIL_EINVAL;
            goto out;
        }
        (void)sqlite3_reset(stmt); /* the previous step succeeded; nothing to report */
        /* A zero-length blob bound from a NULL pointer would be stored as NULL; "" keeps it a
         * blob for the NOT NULL column. */
        rc = STORE_SQ_BIND(
            s, stmt, op, STORE_SQ_TEXT(t->unit), STORE_SQ_INT(t->serial),
            STORE_SQ_INT(t->gen_time_ms), STORE_SQ_TEXT(t->policy), STORE_SQ_TEXT(t->imprint_alg),
            STORE_SQ_BLOB(t->imprint != NULL ? (const void *)t->imprint : "", t->imprint_len),
            STORE_SQ_BLOB(t->cert_id != NULL ? (const void *)t->cert_id : "",
                          t->cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0));
        if (rc != 0)
            goto out;
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0) {
            UTIL_ERROR(STORE_MOD,
                       "tsa log: token %s/%" PRId64 " failed; none of the %zu tokens "
                       "of this group is recorded",
                       t->unit, t->serial, n);
            goto out;
        }
    }
out:
    store__sq_stmt_put(s, STORE_ST_TSA_LOG, stmt);
    return store__sq_tx_finish(s, kind, rc, op);
}
