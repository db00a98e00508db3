/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite backend's side of the directory's search index: indexing a certificate when it is
 * added, the catch-up that indexes what an older schema stored without it, and the searches by
 * name (full text), fingerprint, serial and e-mail address. The keys themselves are extracted by
 * store_search.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite_int.h"

/* ---- search index (writes) ------------------------------------------------------------------ */

/* Indexes one certificate for the directory (cert_add and the catch-up). A DER that does not parse
 * as a certificate is simply not searchable by name or fingerprint (its serial still is). */
int store__sq_search_index_add(struct sq *s, int64_t der_id, int64_t issuer_id,
                               const unsigned char *serial, size_t serial_len,
                               const unsigned char *der, size_t der_len, const char *op)
{
    struct store__search_keys *keys = NULL;
    sqlite3_stmt *stmt = NULL;
    sqlite3_stmt *fts = NULL;
    sqlite3_stmt *mail = NULL;
    char iss[32];
    int row = 0;
    int rc = 0;

    keys = malloc(sizeof(*keys));
    if (keys == NULL)
        return UTIL_ENOMEM;
    if (store__search_keys(der, der_len, keys) != UTIL_OK)
        goto out; /* logged when it was our failure; otherwise not a certificate */
    rc = store__sq_stmt_get(s, STORE_ST_SEARCH_INSERT, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(der_id), STORE_SQ_INT(issuer_id),
                       STORE_SQ_BLOB(serial, serial_len), STORE_SQ_INT(keys->fp_sha256),
                       STORE_SQ_INT(keys->fp_sha1));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0 || sqlite3_changes(s->db) != 1)
        goto out; /* already indexed (the catch-up met a certificate cert_add indexed) */
    (void)snprintf(iss, sizeof(iss), "i%lld", (long long)issuer_id); /* fits */
    rc = store__sq_stmt_get(s, STORE_ST_FTS_INSERT, &fts);
    if (rc != 0)
        goto out;
    rc =
        STORE_SQ_BIND(s, fts, op, STORE_SQ_INT(der_id), STORE_SQ_TEXT(iss), STORE_SQ_TEXT(keys->cn),
                      STORE_SQ_TEXT(keys->o), STORE_SQ_TEXT(keys->ou), STORE_SQ_TEXT(keys->email));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, fts, op, &row);
    for (const char *p = keys->email; rc == 0 && *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int64_t key = store__email_key(p, len);
        p += len;
        while (*p == ' ')
            p++;
        if (key == 0)
            continue;
        rc = store__sq_stmt_get(s, STORE_ST_EMAIL_INSERT, &mail);
        if (rc != 0)
            break;
        rc = STORE_SQ_BIND(s, mail, op, STORE_SQ_INT(key), STORE_SQ_INT(der_id));
        if (rc == 0)
            rc = store__sq_step(s, mail, op, &row);
        store__sq_stmt_put(s, STORE_ST_EMAIL_INSERT, mail);
        mail = NULL;
    }
out:
    store__sq_stmt_put(s, STORE_ST_EMAIL_INSERT, mail);
    store__sq_stmt_put(s, STORE_ST_FTS_INSERT, fts);
    store__sq_stmt_put(s, STORE_ST_SEARCH_INSERT, stmt);
    free(keys);
    return rc;
}

#define STORE_BACKFILL_BATCH 512

/* Indexes, in batches of one transaction each, the certificates registered before the search
 * index existed, from the position saved in search_backfill; removes that row when done. Runs at
 * a read-write open; a crash or a concurrent opener only repeats a batch (the inserts ignore
 * what is indexed already). */
int store__sq_search_backfill(struct sq *s)
{
    static const char op[] = "search index catch-up";
    unsigned char pos_serial[STORE_SERIAL_MAX];
    size_t pos_len = 0;
    int64_t pos_issuer = 0;
    int64_t done = 0;
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    /* The usual case, nothing to catch up, costs one read and no write lock. */
    rc = store__sq_stmt_get(s, STORE_ST_BACKFILL_GET, &stmt);
    if (rc == 0)
        rc = store__sq_step(s, stmt, op, &row);
    store__sq_stmt_put(s, STORE_ST_BACKFILL_GET, stmt);
    stmt = NULL;
    if (rc != 0 || !row)
        return rc;
    for (;;) {
        int n = 0;
        rc = store__sq_tx_start(s, op, &kind);
        if (rc != 0)
            goto out;
        rc = store__sq_stmt_get(s, STORE_ST_BACKFILL_GET, &stmt);
        if (rc == 0)
            rc = store__sq_step(s, stmt, op, &row);
        if (rc == 0 && row) {
            int len = sqlite3_column_bytes(stmt, 1);
            pos_issuer = sqlite3_column_int64(stmt, 0);
            pos_len = len > 0 && len <= STORE_SERIAL_MAX ? (size_t)len : 0;
            if (pos_len > 0)
                memcpy(pos_serial, sqlite3_column_blob(stmt, 1), pos_len);
        }
        store__sq_stmt_put(s, STORE_ST_BACKFILL_GET, stmt);
        stmt = NULL;
        if (rc != 0 || !row)
            goto out; /* nothing (left) to catch up */
        if (done == 0)
            UTIL_INFO(STORE_MOD,
                      "%s: indexing the certificates registered before the search "
                      "index existed",
                      s->path);
        rc = store__sq_stmt_get(s, STORE_ST_BACKFILL_BATCH, &stmt);
        if (rc != 0)
            goto out;
        rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(pos_issuer),
                           STORE_SQ_BLOB_COPY(pos_serial, pos_len),
                           STORE_SQ_INT(STORE_BACKFILL_BATCH));
        if (rc != 0)
            goto out;
        for (;;) {
            int len = 0;
            rc = store__sq_step(s, stmt, op, &row);
            if (rc != 0 || !row)
                break;
            len = sqlite3_column_bytes(stmt, 1);
            if (len < 1 || len > STORE_SERIAL_MAX)
                continue;
            pos_issuer = sqlite3_column_int64(stmt, 0);
            pos_len = (size_t)len;
            memcpy(pos_serial, sqlite3_column_blob(stmt, 1), pos_len);
            rc = store__sq_search_index_add(s, sqlite3_column_int64(stmt, 2), pos_issuer,
                                            pos_serial, pos_len, sqlite3_column_blob(stmt, 3),
                                            (size_t)sqlite3_column_bytes(stmt, 3), op);
            if (rc != 0)
                break;
            n++;
        }
        store__sq_stmt_put(s, STORE_ST_BACKFILL_BATCH, stmt);
        stmt = NULL;
        if (rc != 0)
            goto out;
        if (n < STORE_BACKFILL_BATCH) {
            rc = store__sq_exec_stmt(s, STORE_ST_BACKFILL_DONE, op);
        } else {
            rc = store__sq_stmt_get(s, STORE_ST_BACKFILL_SET, &stmt);
            if (rc == 0)
                rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(pos_issuer),
                                   STORE_SQ_BLOB(pos_serial, pos_len));
            if (rc == 0)
                rc = store__sq_step(s, stmt, op, &row);
            store__sq_stmt_put(s, STORE_ST_BACKFILL_SET, stmt);
            stmt = NULL;
        }
        rc = store__sq_tx_finish(s, kind, rc, op);
        kind = 0;
        if (rc != 0)
            goto out;
        done += n;
        if (done % (200 * STORE_BACKFILL_BATCH) < STORE_BACKFILL_BATCH || n < STORE_BACKFILL_BATCH)
            UTIL_INFO(STORE_MOD, "%s: %lld certificates indexed for search%s", s->path,
                      (long long)done, n < STORE_BACKFILL_BATCH ? ", done" : " so far");
        if (n < STORE_BACKFILL_BATCH)
            goto out;
    }
out:
    return store__sq_tx_finish(s, kind, rc, op);
}

/* ---- search (reads) ------------------------------------------------------------------------ */

/* The full-text query for a name search: the issuer filter, then every word of the text as a
 * quoted term in the chosen columns, the last one a prefix when it has 3 characters or more (as
 * a person types; a prefix of every word would expand short common words such as "so" into
 * thousands of terms: 57 ms instead of 1 ms a search at a million certificates). Words are runs of
 * bytes other than ASCII punctuation and spaces, so no FTS5 syntax can come from the user; what
 * the tokenizer finds inside a word (a right-to-left mark, say) only splits it into a phrase. */
static int build_match(const struct store_search *q, char *out, size_t out_len)
{
    static const char *const names[] = {"cn", "o", "ou", "email"};
    char folded[STORE_SEARCH_TEXT_MAX + 1];
    struct store__search_words words;
    size_t len = 0;
    int n = 0;

    store__search_fold(q->text, strlen(q->text), folded, sizeof(folded));
    if (store__search_words(folded, &words) != UTIL_OK)
        return UTIL_EINVAL;
#define STORE_APPEND(...)                                    \
    do {                                                     \
        n = snprintf(out + len, out_len - len, __VA_ARGS__); \
        if (n < 0 || (size_t)n >= out_len - len)             \
            return UTIL_EINVAL;                              \
        len += (size_t)n;                                    \
    } while (0)
    STORE_APPEND("iss : (");
    for (int i = 0; i < q->n_issuer_ids; i++)
        STORE_APPEND("%si%lld", i ? " OR " : "", (long long)q->issuer_ids[i]);
    STORE_APPEND(") AND {");
    for (unsigned b = 0; b < 4; b++)
        if (q->fields & (1u << b))
            STORE_APPEND("%s%s", len > 0 && out[len - 1] != '{' ? " " : "", names[b]);
    STORE_APPEND("} : (");
    for (int w = 0; w < words.n; w++)
        STORE_APPEND("%s\"%.*s\"%s", w > 0 ? " AND " : "", (int)words.len[w], words.start[w],
                     w == words.n - 1 && words.last_is_prefix ? "*" : "");
    STORE_APPEND(")");
#undef STORE_APPEND
    return 0;
}

static int issuer_listed(const struct store_search *q, int64_t issuer_id)
{
    for (int i = 0; i < q->n_issuer_ids; i++)
        if (q->issuer_ids[i] == issuer_id)
            return 1;
    return 0;
}

/* Steps through a bound search statement and hands each row that passes the checks to fn. */
static int search_rows(struct sq *s, sqlite3_stmt *stmt, const struct store_search *q,
                       int (*fn)(void *ctx, const struct store_search_row *row), void *ctx,
                       int *delivered)
{
    struct store_search_row r;
    int row = 0;
    int rc = 0;

    for (;;) {
        rc = store__sq_step(s, stmt, "search", &row);
        if (rc != 0 || !row || *delivered >= q->limit)
            return rc;
        memset(&r, 0, sizeof(r));
        rc = store__sq_read_cert(s, stmt, 3, &r.cert);
        if (rc != 0)
            return rc;
        r.cursor = sqlite3_column_int64(stmt, 0);
        r.der = sqlite3_column_blob(stmt, 1);
        r.der_len = (size_t)sqlite3_column_bytes(stmt, 1);
        r.subject = (const char *)sqlite3_column_text(stmt, 2);
        if (r.der_len == 0)
            r.der = NULL;
        if (!issuer_listed(q, r.cert.issuer_id))
            continue;
        if ((q->kind == STORE_SEARCH_SHA256 || q->kind == STORE_SEARCH_SHA1) &&
            !store__fp_matches(r.der, r.der_len, q->key, q->key_len))
            continue; /* another certificate with the same 8-octet key */
        if (q->kind == STORE_SEARCH_EMAIL) {
            struct store__search_keys *keys = malloc(sizeof(*keys));
            int listed;
            if (keys == NULL)
                return UTIL_ENOMEM;
            listed = r.der != NULL && store__search_keys(r.der, r.der_len, keys) == UTIL_OK &&
                     store__email_listed(keys->email, q->text);
            free(keys);
            if (!listed)
                continue; /* another address with the same 8-octet key */
        }
        rc = fn(ctx, &r);
        if (rc != 0)
            return rc;
        (*delivered)++;
    }
}

int store__sq_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx)
{
    static const char op[] = "search";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum sq_stmt_id id = 0;
    char match[2048];
    int64_t before = q->before > 0 ? q->before : INT64_MAX;
    int delivered = 0;
    int opened = 0;
    int rc = 0;

    rc = store__sq_rx_start(s, op, &opened);
    if (rc != 0)
        return rc;
    if (q->kind == STORE_SEARCH_SERIAL) {
        unsigned char forms[2][STORE_SERIAL_MAX + 1];
        size_t lens[2];
        int n_forms = store__serial_forms(q->key, q->key_len, forms, lens);
        id = STORE_ST_SEARCH_SERIAL;
        for (int i = 0; i < q->n_issuer_ids && rc == 0; i++) {
            for (int f = 0; f < n_forms && rc == 0; f++) {
                rc = store__sq_stmt_get(s, id, &stmt);
                if (rc != 0)
                    break;
                rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(q->issuer_ids[i]),
                                   STORE_SQ_BLOB(forms[f], lens[f]));
                if (rc == 0)
                    rc = search_rows(s, stmt, q, fn, ctx, &delivered);
                store__sq_stmt_put(s, id, stmt);
                stmt = NULL;
            }
        }
        goto out;
    }
    if (q->kind == STORE_SEARCH_NAME) {
        rc = build_match(q, match, sizeof(match));
        if (rc != 0)
            goto out;
        id = STORE_ST_SEARCH_NAME;
    } else if (q->kind == STORE_SEARCH_EMAIL) {
        id = STORE_ST_SEARCH_EMAIL;
    } else {
        id = q->kind == STORE_SEARCH_SHA256 ? STORE_ST_SEARCH_SHA256 : STORE_ST_SEARCH_SHA1;
    }
    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op,
                       q->kind == STORE_SEARCH_NAME ? STORE_SQ_TEXT(match)
                       : q->kind == STORE_SEARCH_EMAIL
                           ? STORE_SQ_INT(store__email_key(q->text, strlen(q->text)))
                           : STORE_SQ_INT(store__fp_key(q->key)),
                       STORE_SQ_INT(before), STORE_SQ_INT(q->limit));
    if (rc != 0)
        goto out;
    rc = search_rows(s, stmt, q, fn, ctx, &delivered);
out:
    store__sq_stmt_put(s, id, stmt);
    store__sq_rx_finish(s, opened, op);
    return rc != 0 ? rc : delivered;
}
