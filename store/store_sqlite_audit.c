/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite backend's audit chain: appending a hash-chained record, and the walks its
 * verification reads (records, changes, current state, orphans, seals). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite_int.h"

int store__sq_audit_append(struct store *store, const struct store__audit_new *rec)
{
    static const char op[] = "audit append";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *last = NULL;
    sqlite3_stmt *seq = NULL;
    sqlite3_stmt *insert = NULL;
    struct store__audit_row row;
    unsigned char prev[STORE_AUDIT_HASH_LEN];
    unsigned char hash[STORE_AUDIT_HASH_LEN];
    enum tx_kind kind = 0;
    int64_t last_id = 0;
    int has_changes = rec->feed_first > 0 && rec->changes != NULL;
    int rc_row = 0;
    int rc = 0;

    memset(prev, 0, sizeof(prev));
    memset(&row, 0, sizeof(row));
    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_AUDIT_LAST, &last);
    if (rc == 0)
        rc = store__sq_step(s, last, op, &rc_row);
    if (rc != 0)
        goto out;
    if (rc_row) {
        if (sqlite3_column_bytes(last, 1) != STORE_AUDIT_HASH_LEN) {
            UTIL_ERROR(STORE_MOD,
                       "audit append: %s: the last record's hash is damaged; run the audit "
                       "verification",
                       s->path);
            rc = UTIL_ESTORE;
            goto out;
        }
        last_id = sqlite3_column_int64(last, 0);
        memcpy(prev, sqlite3_column_blob(last, 1), STORE_AUDIT_HASH_LEN);
    }
    rc = store__sq_stmt_get(s, STORE_ST_AUDIT_SEQ, &seq);
    if (rc == 0)
        rc = store__sq_step(s, seq, op, &rc_row);
    if (rc != 0)
        goto out;
    /* Continue after the highest id ever used, so that a removed tail stays visible as a gap. */
    row.id = (rc_row && sqlite3_column_int64(seq, 0) > last_id ? sqlite3_column_int64(seq, 0)
                                                               : last_id) +
             1;
    row.at_ms = util_now_ms();
    row.version = 2;
    row.feed_first = has_changes ? rec->feed_first : 0;
    row.feed_last = has_changes ? rec->feed_last : 0;
    row.changes = has_changes ? rec->changes : NULL;
    row.changes_len = has_changes ? STORE_AUDIT_HASH_LEN : 0;
    row.actor = rec->actor;
    row.action = rec->action;
    row.detail = rec->detail;
    rc = store__audit_hash(prev, &row, hash);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_AUDIT_INSERT, &insert);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, insert, op, STORE_SQ_INT(row.id), STORE_SQ_INT(row.at_ms),
                       STORE_SQ_TEXT(row.actor), STORE_SQ_TEXT(row.action),
                       STORE_SQ_TEXT(row.detail), STORE_SQ_BLOB(prev, sizeof(prev)),
                       STORE_SQ_BLOB(hash, sizeof(hash)), STORE_SQ_INT(row.feed_first),
                       STORE_SQ_INT(row.feed_last),
                       has_changes ? STORE_SQ_BLOB(row.changes, row.changes_len) : STORE_SQ_NULL);
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, insert, op, &rc_row);
out:
    store__sq_stmt_put(s, STORE_ST_AUDIT_LAST, last);
    store__sq_stmt_put(s, STORE_ST_AUDIT_SEQ, seq);
    store__sq_stmt_put(s, STORE_ST_AUDIT_INSERT, insert);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_audit_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__audit_row *row), void *ctx,
                         int64_t *last_id_out)
{
    static const char op[] = "audit walk";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *walk = NULL;
    sqlite3_stmt *seq = NULL;
    struct store__audit_row r;
    int opened = 0;
    int row = 0;
    int rc = 0;

    *last_id_out = 0;
    /* One snapshot for the rows and the sequence, so that a concurrent append cannot look like a
     * removed tail. */
    rc = store__sq_rx_start(s, op, &opened);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_AUDIT_WALK, &walk);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, walk, op, &row);
        if (rc != 0 || !row)
            break;
        memset(&r, 0, sizeof(r));
        r.id = sqlite3_column_int64(walk, 0);
        r.at_ms = sqlite3_column_int64(walk, 1);
        r.actor = (const char *)sqlite3_column_text(walk, 2);
        r.action = (const char *)sqlite3_column_text(walk, 3);
        r.detail = (const char *)sqlite3_column_text(walk, 4);
        r.prev_hash = sqlite3_column_blob(walk, 5);
        r.prev_hash_len = (size_t)sqlite3_column_bytes(walk, 5);
        r.hash = sqlite3_column_blob(walk, 6);
        r.hash_len = (size_t)sqlite3_column_bytes(walk, 6);
        r.version = sqlite3_column_int(walk, 7);
        r.feed_first = sqlite3_column_int64(walk, 8);
        r.feed_last = sqlite3_column_int64(walk, 9);
        r.changes = sqlite3_column_blob(walk, 10);
        r.changes_len = (size_t)sqlite3_column_bytes(walk, 10);
        rc = fn(ctx, &r);
        if (rc != 0)
            goto out;
    }
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_AUDIT_SEQ, &seq);
    if (rc == 0)
        rc = store__sq_step(s, seq, op, &row);
    if (rc == 0 && row)
        *last_id_out = sqlite3_column_int64(seq, 0);
out:
    store__sq_stmt_put(s, STORE_ST_AUDIT_WALK, walk);
    store__sq_stmt_put(s, STORE_ST_AUDIT_SEQ, seq);
    store__sq_rx_finish(s, opened, op);
    return rc;
}

int store__sq_change_walk(struct store *store, int64_t first, int64_t last,
                          int (*fn)(void *ctx, const struct store__change_row *row), void *ctx)
{
    static const char op[] = "change walk";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__change_row ch;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_CHANGE_WALK, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(first), STORE_SQ_INT(last));
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&ch, 0, sizeof(ch));
        ch.id = sqlite3_column_int64(stmt, 0);
        ch.kind = sqlite3_column_int(stmt, 1);
        ch.issuer_id = sqlite3_column_int64(stmt, 2);
        ch.serial = sqlite3_column_blob(stmt, 3);
        ch.serial_len = (size_t)sqlite3_column_bytes(stmt, 3);
        ch.has_revocation = sqlite3_column_int(stmt, 4);
        ch.reason = sqlite3_column_int(stmt, 5);
        ch.revoked_at = sqlite3_column_int64(stmt, 6);
        ch.invalidity_date = sqlite3_column_int64(stmt, 7);
        rc = fn(ctx, &ch);
        if (rc != 0)
            goto out;
    }
out:
    store__sq_stmt_put(s, STORE_ST_CHANGE_WALK, stmt);
    return rc;
}

int store__sq_state_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__state_row *row), void *ctx)
{
    static const char op[] = "state walk";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__state_row r;
    int opened = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_rx_start(s, op, &opened);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_STATE_WALK, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&r, 0, sizeof(r));
        rc = store__sq_read_cert(s, stmt, 0, &r.cert);
        if (rc != 0)
            goto out;
        r.change.id = sqlite3_column_int64(stmt, 9);
        r.change.kind = sqlite3_column_int(stmt, 10);
        r.change.issuer_id = r.cert.issuer_id;
        r.change.serial = r.cert.serial;
        r.change.serial_len = r.cert.serial_len;
        r.change.has_revocation = sqlite3_column_int(stmt, 11);
        r.change.reason = sqlite3_column_int(stmt, 12);
        r.change.revoked_at = sqlite3_column_int64(stmt, 13);
        r.change.invalidity_date = sqlite3_column_int64(stmt, 14);
        rc = fn(ctx, &r);
        if (rc != 0)
            goto out;
    }
out:
    store__sq_stmt_put(s, STORE_ST_STATE_WALK, stmt);
    store__sq_rx_finish(s, opened, op);
    return rc;
}

/* Runs a cached one-integer query. */
static int query_stmt_int(struct sq *s, enum sq_stmt_id id, const char *op, int64_t *value)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    *value = 0;
    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc == 0)
        rc = store__sq_step(s, stmt, op, &row);
    if (rc == 0 && row)
        *value = sqlite3_column_int64(stmt, 0);
    store__sq_stmt_put(s, id, stmt);
    return rc;
}

int store__sq_orphans(struct store *store, int64_t *change_id, int64_t *revocation_id,
                      int64_t *changes)
{
    static const char op[] = "audit orphans";
    struct sq *s = store__sq_of(store);
    int opened = 0;
    int rc = 0;

    rc = store__sq_rx_start(s, op, &opened);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_ORPHAN_CHANGE, op, change_id);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_ORPHAN_REVOCATION, op, revocation_id);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_FEED_COUNT, op, changes);
    store__sq_rx_finish(s, opened, op);
    return rc;
}

/* Reads the id after the last seal and the hashes of up to max records from there into hashes
 * (max * 32 bytes); *n gets their count. Refuses a gap or a damaged hash: sealing over one would
 * vouch for it, and reporting it is the verification's job. */
static int seal_read_pending(struct sq *s, int max, int64_t *sealed_last, unsigned char *hashes,
                             size_t *n, const char *op)
{
    sqlite3_stmt *pending = NULL;
    int row = 0;
    int rc = 0;

    *n = 0;
    rc = query_stmt_int(s, STORE_ST_SEAL_LAST, op, sealed_last);
    if (rc == 0)
        rc = store__sq_stmt_get(s, STORE_ST_SEAL_PENDING, &pending);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, pending, op, STORE_SQ_INT(*sealed_last), STORE_SQ_INT(max));
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, pending, op, &row);
        if (rc != 0 || !row)
            goto out;
        if (sqlite3_column_int64(pending, 0) != *sealed_last + 1 + (int64_t)*n ||
            sqlite3_column_bytes(pending, 1) != STORE_AUDIT_HASH_LEN) {
            UTIL_ERROR(STORE_MOD,
                       "audit seal: %s: record %" PRId64
                       " is missing or damaged; not sealing (run pkiva audit verify)",
                       s->path, *sealed_last + 1 + (int64_t)*n);
            rc = UTIL_ESTORE;
            goto out;
        }
        memcpy(hashes + *n * STORE_AUDIT_HASH_LEN, sqlite3_column_blob(pending, 1),
               STORE_AUDIT_HASH_LEN);
        (*n)++;
    }
out:
    store__sq_stmt_put(s, STORE_ST_SEAL_PENDING, pending);
    return rc;
}

/* Signs outside the write lock (an HSM may be slow or queued behind OCSP signing; writers must not
 * wait for it), then inserts under the lock only if nobody sealed meanwhile and the records are
 * still the ones signed; otherwise the seal is dropped and the next round seals again. */
int store__sq_seal_pending(struct store *store, int max,
                           int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                     size_t n, struct store__seal_row *seal),
                           void *ctx, int64_t *sealed_out)
{
    static const char op[] = "audit seal";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *insert = NULL;
    struct store__seal_row seal;
    unsigned char *hashes = NULL;
    unsigned char *again = NULL;
    enum tx_kind kind = 0;
    int64_t sealed_last = 0;
    int64_t sealed_last_again = 0;
    size_t n = 0;
    size_t n_again = 0;
    int opened = 0;
    int row = 0;
    int rc = 0;

    *sealed_out = 0;
    memset(&seal, 0, sizeof(seal));
    hashes = malloc(2 * (size_t)max * STORE_AUDIT_HASH_LEN);
    if (hashes == NULL)
        return UTIL_ENOMEM;
    again = hashes + (size_t)max * STORE_AUDIT_HASH_LEN;
    rc = store__sq_rx_start(s, op, &opened);
    if (rc == 0)
        rc = seal_read_pending(s, max, &sealed_last, hashes, &n, op);
    store__sq_rx_finish(s, opened, op);
    if (rc != 0 || n == 0)
        goto out;
    rc = fn(ctx, sealed_last + 1, hashes, n, &seal);
    if (rc != 0)
        goto out;
    rc = store__sq_tx_start(s, op, &kind);
    if (rc == 0)
        rc = seal_read_pending(s, max, &sealed_last_again, again, &n_again, op);
    if (rc != 0)
        goto out;
    if (sealed_last_again != sealed_last || n_again < n ||
        memcmp(again, hashes, n * STORE_AUDIT_HASH_LEN) != 0) {
        UTIL_INFO(STORE_MOD, "audit seal: %s: sealed or changed meanwhile; sealing again later",
                  s->path);
        goto out;
    }
    rc = store__sq_stmt_get(s, STORE_ST_SEAL_INSERT, &insert);
    if (rc != 0)
        goto out;
    rc =
        STORE_SQ_BIND(s, insert, op, STORE_SQ_INT(seal.first_id), STORE_SQ_INT(seal.last_id),
                      STORE_SQ_INT(seal.at_ms),
                      STORE_SQ_BLOB(seal.cert_sha256, seal.cert_sha256_len), STORE_SQ_TEXT(seal.md),
                      STORE_SQ_INT(seal.rsa_pss), STORE_SQ_BLOB(seal.hashes, seal.hashes_len),
                      STORE_SQ_BLOB(seal.signature, seal.signature_len));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, insert, op, &row);
    if (rc == 0)
        *sealed_out = (int64_t)n;
out:
    store__sq_stmt_put(s, STORE_ST_SEAL_INSERT, insert);
    rc = store__sq_tx_finish(s, kind, rc, op);
    free(hashes);
    if (rc != 0)
        *sealed_out = 0;
    return rc;
}

int store__sq_seal_walk(struct store *store,
                        int (*fn)(void *ctx, const struct store__seal_row *row), void *ctx)
{
    static const char op[] = "audit seal walk";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__seal_row r;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_SEAL_WALK, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&r, 0, sizeof(r));
        r.id = sqlite3_column_int64(stmt, 0);
        r.first_id = sqlite3_column_int64(stmt, 1);
        r.last_id = sqlite3_column_int64(stmt, 2);
        r.at_ms = sqlite3_column_int64(stmt, 3);
        r.cert_sha256 = sqlite3_column_blob(stmt, 4);
        r.cert_sha256_len = (size_t)sqlite3_column_bytes(stmt, 4);
        r.md = (const char *)sqlite3_column_text(stmt, 5);
        r.rsa_pss = sqlite3_column_int(stmt, 6);
        r.hashes = sqlite3_column_blob(stmt, 7);
        r.hashes_len = (size_t)sqlite3_column_bytes(stmt, 7);
        r.signature = sqlite3_column_blob(stmt, 8);
        r.signature_len = (size_t)sqlite3_column_bytes(stmt, 8);
        if (r.md == NULL)
            r.md = "";
        rc = fn(ctx, &r);
        if (rc != 0)
            goto out;
    }
out:
    store__sq_stmt_put(s, STORE_ST_SEAL_WALK, stmt);
    return rc;
}

int store__sq_unsealed(struct store *store, int64_t *count_out)
{
    return query_stmt_int(store__sq_of(store), STORE_ST_UNSEALED, "audit unsealed", count_out);
}
