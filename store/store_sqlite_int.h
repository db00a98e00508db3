/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of the SQLite backend: the connection, the statement ids, and the
 * helpers every operation uses (statements, steps, transactions). store_sqlite.c holds the core
 * (schema and migrations, the statements' SQL, the connection, transactions, open and close, the
 * backend's vtable); store_sqlite_cert.c issuers, certificates, revocations and the change feed;
 * store_sqlite_search.c the directory's search index; store_sqlite_records.c SLA marks, CRL numbers
 * and records, TSA serials and the token log; store_sqlite_audit.c the audit chain and what its
 * verification walks. Only these files include sqlite3.h; nothing else includes this header. */
#ifndef PKIVA_STORE_SQLITE_INT_H
#define PKIVA_STORE_SQLITE_INT_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

enum sq_stmt_id {
    STORE_ST_BEGIN,
    STORE_ST_BEGIN_READ,
    STORE_ST_COMMIT,
    STORE_ST_ROLLBACK,
    STORE_ST_SAVEPOINT,
    STORE_ST_RELEASE,
    STORE_ST_ROLLBACK_TO,
    STORE_ST_PING,
    STORE_ST_ISSUER_BY_NAME,
    STORE_ST_ISSUER_INSERT,
    STORE_ST_ISSUER_LIST,
    STORE_ST_CERT_GET,
    STORE_ST_CERT_DER,
    STORE_ST_DER_INSERT,
    STORE_ST_CERT_INSERT,
    STORE_ST_CERT_SET_STATUS,
    STORE_ST_CERT_ITER_ALL,
    STORE_ST_CERT_ITER_ISSUER,
    STORE_ST_CERT_ITER_REVOKED_ALL,
    STORE_ST_CERT_ITER_REVOKED_ISSUER,
    STORE_ST_CERT_ITER_BELOW, /* an issuer's certificates with serial < ?2 */
    STORE_ST_CERT_ITER_FROM,  /* an issuer's certificates with serial >= ?2 */
    STORE_ST_CERT_SERIAL_FIRST,
    STORE_ST_CERT_SERIAL_LAST,
    STORE_ST_FEED_INSERT,
    STORE_ST_FEED_READ,
    STORE_ST_FEED_READ_NOT_ISSUE,
    STORE_ST_FEED_HEAD,
    STORE_ST_REVOCATION_INSERT,
    STORE_ST_SLA_EXISTS,
    STORE_ST_SLA_MARK_OCSP,
    STORE_ST_SLA_MARK_CRL,
    STORE_ST_SLA_UPTO_OCSP,
    STORE_ST_SLA_UPTO_CRL,
    STORE_ST_SLA_LIST_OPEN,
    STORE_ST_SLA_LIST_ALL,
    STORE_ST_CRL_NUMBER_NEXT,
    STORE_ST_CRL_RESERVED,
    STORE_ST_CRL_INSERT,
    STORE_ST_CRL_LATEST_FULL,
    STORE_ST_CRL_LATEST_DELTA,
    STORE_ST_TSA_RESERVE,
    STORE_ST_TSA_LOG,
    STORE_ST_TSA_TOKEN_GET,
    STORE_ST_AUDIT_LAST,
    STORE_ST_AUDIT_SEQ,
    STORE_ST_AUDIT_INSERT,
    STORE_ST_AUDIT_WALK,
    STORE_ST_CHANGE_WALK,
    STORE_ST_STATE_WALK,
    STORE_ST_ORPHAN_CHANGE,
    STORE_ST_ORPHAN_REVOCATION,
    STORE_ST_FEED_COUNT,
    STORE_ST_SEAL_LAST,
    STORE_ST_SEAL_PENDING,
    STORE_ST_SEAL_INSERT,
    STORE_ST_SEAL_WALK,
    STORE_ST_UNSEALED,
    STORE_ST_SEARCH_INSERT,
    STORE_ST_FTS_INSERT,
    STORE_ST_SEARCH_NAME,
    STORE_ST_SEARCH_SHA256,
    STORE_ST_SEARCH_SHA1,
    STORE_ST_SEARCH_SERIAL,
    STORE_ST_EMAIL_INSERT,
    STORE_ST_SEARCH_EMAIL,
    STORE_ST_BACKFILL_GET,
    STORE_ST_BACKFILL_BATCH,
    STORE_ST_BACKFILL_SET,
    STORE_ST_BACKFILL_DONE,
    STORE_ST_COUNT
};

/* One connection (see the DESIGN comment of store_sqlite.c). */
struct sq {
    struct store base; /* first: a struct store * is a struct sq * */
    sqlite3 *db;
    char *path;
    int depth; /* open explicit transactions (store_begin_blocking nesting) */
    int busy_ms;
    sqlite3_stmt *stmts[STORE_ST_COUNT];
};

/* Which kind of transaction an operation opened, so that it ends the same one. */
enum tx_kind { STORE_TX_OUTER = 1, STORE_TX_STEP = 2 };

/* store_sqlite.c: the helpers every operation uses. */
/* The backend behind a struct store (its first member). */
struct sq *store__sq_of(struct store *store);
/* The cached statement, or a one-off copy if the cached one is in use by a walk further up the
 * stack (a callback re-entering the store). Pair every store__sq_stmt_get with
 * store__sq_stmt_put. */
int store__sq_stmt_get(struct sq *s, enum sq_stmt_id id, sqlite3_stmt **out);
/* Resets a cached statement (and clears its bindings) or finalizes a one-off copy. NULL-safe. */
void store__sq_stmt_put(struct sq *s, enum sq_stmt_id id, sqlite3_stmt *stmt);
/* Runs one step: 0 with *row = 1 for a row, 0 with *row = 0 when done, else the mapped error. */
int store__sq_step(struct sq *s, sqlite3_stmt *stmt, const char *op, int *row);
/* One value for a statement parameter, made by the STORE_SQ_ macros below. */
struct sq_value {
    enum { SQ_VALUE_INT, SQ_VALUE_TEXT, SQ_VALUE_BLOB, SQ_VALUE_BLOB_COPY, SQ_VALUE_NULL } kind;
    int64_t i;
    const void *p; /* TEXT: a NUL-terminated string (NULL binds NULL); BLOB: len bytes */
    size_t len;
};
#define STORE_SQ_INT(v) ((struct sq_value){.kind = SQ_VALUE_INT, .i = (v)})
#define STORE_SQ_TEXT(str) ((struct sq_value){.kind = SQ_VALUE_TEXT, .p = (str)})
#define STORE_SQ_BLOB(bytes, n) ((struct sq_value){.kind = SQ_VALUE_BLOB, .p = (bytes), .len = (n)})
#define STORE_SQ_BLOB_COPY(bytes, n) \
    ((struct sq_value){.kind = SQ_VALUE_BLOB_COPY, .p = (bytes), .len = (n)})
#define STORE_SQ_NULL ((struct sq_value){.kind = SQ_VALUE_NULL})
/* Binds values[i] to parameter i + 1 of stmt, in order, and stops at the first failure (out of
 * memory, a blob too big, or a programming error), which it maps and logs with op like any other
 * SQLite error. TEXT and BLOB bytes are bound SQLITE_STATIC: they must stay valid until the
 * statement is reset (store__sq_stmt_put); BLOB_COPY is copied, for a buffer that changes while
 * the statement runs. Returns 0 or the mapped error. */
int store__sq_bind(struct sq *s, sqlite3_stmt *stmt, const char *op, const struct sq_value *values,
                   int n);
/* store__sq_bind with the values as arguments:
 *     rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id), STORE_SQ_BLOB(serial, len));
 * (sizeof does not evaluate its operand, so each value is computed once.) */
#define STORE_SQ_BIND(s, stmt, op, ...)                            \
    store__sq_bind(                                                \
        (s), (stmt), (op), (const struct sq_value[]){__VA_ARGS__}, \
        (int)(sizeof((const struct sq_value[]){__VA_ARGS__}) / sizeof(struct sq_value)))
/* Runs a statement that returns no rows. */
int store__sq_exec_stmt(struct sq *s, enum sq_stmt_id id, const char *op);
/* Opens the write transaction of one operation (BEGIN IMMEDIATE, or a SAVEPOINT inside an
 * open one); *kind says which, for store__sq_tx_finish. */
int store__sq_tx_start(struct sq *s, const char *op, enum tx_kind *kind);
/* Ends what store__sq_tx_start opened: commits (releases) when rc is 0, else undoes it; returns
 * rc or the commit's error. */
int store__sq_tx_finish(struct sq *s, enum tx_kind kind, int rc, const char *op);
/* Opens a read transaction when none is open (*opened = 1), so a walk reads one snapshot. */
int store__sq_rx_start(struct sq *s, const char *op, int *opened);
/* Ends what store__sq_rx_start opened. */
void store__sq_rx_finish(struct sq *s, int opened, const char *op);

/* The entries of the backend's struct store__ops (store_int.h; the operations are documented in
 * store.h), by file, and the helpers one file lends another. */

/* store_sqlite_cert.c */
/* Copies one row of STORE_CERT_COLS, from column first, into *c. */
int store__sq_read_cert(struct sq *s, sqlite3_stmt *stmt, int first, struct store_cert *c);
int store__sq_issuer_put(struct store *store, const char *name, const unsigned char *cert_der,
                         size_t cert_len, int64_t *id_out);
int store__sq_issuer_get(struct store *store, const char *name, struct store_issuer *out);
int store__sq_issuer_list(struct store *store,
                          int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx);
int store__sq_cert_add(struct store *store, const struct store_cert_new *cert,
                       const struct store_revocation *rev, int64_t *feed_id_out, int *created_out);
int store__sq_cert_get(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, struct store_cert *out);
int store__sq_cert_der(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, unsigned char **der, size_t *der_len);
int store__sq_cert_iterate(struct store *store, int64_t issuer_id, int filter,
                           int (*fn)(void *ctx, const struct store_cert *cert), void *ctx);
int store__sq_revoke(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                     int *changed_out);
int store__sq_unrevoke(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *actor, int64_t *feed_id_out);
int store__sq_feed_read(struct store *store, int64_t after_id, int max, unsigned opts,
                        int (*fn)(void *ctx, const struct store_change *change), void *ctx);
int store__sq_feed_head(struct store *store, int64_t *id_out);

/* store_sqlite_search.c */
/* Indexes one certificate for the directory (cert_add and the catch-up). */
int store__sq_search_index_add(struct sq *s, int64_t der_id, int64_t issuer_id,
                               const unsigned char *serial, size_t serial_len,
                               const unsigned char *der, size_t der_len, const char *op);
/* Indexes, in batches, the certificates stored before the search index existed (at open). */
int store__sq_search_backfill(struct sq *s);
int store__sq_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx);

/* store_sqlite_records.c */
int store__sq_sla_mark(struct store *store, int64_t feed_id, int stage, int64_t at_ms);
int store__sq_sla_mark_upto(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                            int stage, int64_t at_ms);
int store__sq_sla_list(struct store *store, int open_only, int limit,
                       int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx);
int store__sq_crl_number_next(struct store *store, int64_t issuer_id, int64_t floor,
                              int64_t *number_out);
int store__sq_crl_save(struct store *store, const struct store_crl_record *crl);
int store__sq_crl_latest(struct store *store, int64_t issuer_id, int delta,
                         struct store_crl_record *meta_out, unsigned char **der_out);
int store__sq_tsa_reserve(struct store *store, const char *unit, int64_t count, int64_t floor,
                          int64_t *first_out);
int store__sq_tsa_token_get(struct store *store, const unsigned char *cert_id, const char *unit,
                            int64_t serial, struct store_tsa_record *out);
int store__sq_tsa_log(struct store *store, const struct store_tsa_token *tokens, size_t n);

/* store_sqlite_audit.c */
int store__sq_audit_append(struct store *store, const struct store__audit_new *rec);
int store__sq_audit_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__audit_row *row), void *ctx,
                         int64_t *last_id_out);
int store__sq_change_walk(struct store *store, int64_t first, int64_t last,
                          int (*fn)(void *ctx, const struct store__change_row *row), void *ctx);
int store__sq_state_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__state_row *row), void *ctx);
int store__sq_orphans(struct store *store, int64_t *change_id, int64_t *revocation_id,
                      int64_t *changes);
int store__sq_seal_pending(struct store *store, int max,
                           int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                     size_t n, struct store__seal_row *seal),
                           void *ctx, int64_t *sealed_out);
int store__sq_seal_walk(struct store *store,
                        int (*fn)(void *ctx, const struct store__seal_row *row), void *ctx);
int store__sq_unsealed(struct store *store, int64_t *count_out);

#endif
