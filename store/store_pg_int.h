/* SPDX-License-Identifier: Apache-2.0 */
/* store_pg_int.h: what the files of the PostgreSQL backend share: store_pg.c owns the connection
 * and its error mapping; store_pg_search.c (the directory's search index) and store_pg_replica.c
 * (reads from a hot standby) send their statements through it. Only these files include
 * libpq-fe.h. */
#ifndef PKIVA_STORE_PG_INT_H
#define PKIVA_STORE_PG_INT_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

#define STORE__PG_MAX_ARGS 8

/* Parameters of one statement: text, except bytea which goes binary. Values are borrowed; the
 * integers' text lives in text[]. */
struct store__pg_args {
    int n;
    const char *values[STORE__PG_MAX_ARGS];
    int lengths[STORE__PG_MAX_ARGS];
    int formats[STORE__PG_MAX_ARGS];
    char text[STORE__PG_MAX_ARGS][24];
};
void store__pg_arg_i64(struct store__pg_args *a, int64_t v);
void store__pg_arg_text(struct store__pg_args *a, const char *v); /* NULL: SQL NULL */
void store__pg_arg_blob(struct store__pg_args *a, const void *v, size_t len);

/* Runs one statement on the backend's connection (reconnecting a broken one outside a
 * transaction, mapping SQLSTATEs onto UTIL_E* and logging a failure under op). a == NULL runs sql
 * as a simple query (several statements allowed). *res, when res is not NULL, gets the result on
 * success; the caller PQclears it. */
int store__pg_exec(struct store *store, const char *sql, const struct store__pg_args *a,
                   const char *op, PGresult **res);
/* "postgresql user@host:port/db" for log lines (never the password); valid while store is open. */
const char *store__pg_where(struct store *store);
/* Fills *out from the certificate columns issuer_id, serial, not_before, not_after, status,
 * revoked_at, reason, invalidity_date, feed_id of row, starting at column first. */
int store__pg_read_cert(struct store *store, const PGresult *r, int row, int first,
                        struct store_cert *out);
/* A bytea column, unescaped into a malloc'd buffer (PQfreemem); NULL for SQL NULL. */
int store__pg_blob(const PGresult *r, int row, int col, unsigned char **out, size_t *len);
int64_t store__pg_i64(const PGresult *r, int row, int col);

/* ---- the directory's search index (store_pg_search.c) --------------------------------------- */

/* The schema of the index (a migration of store_pg.c): cert_search with a tsvector of the folded
 * names (GIN), fingerprint keys (btree), cert_email (whole addresses) and search_backfill. */
extern const char store__pg_schema_search[];
/* Indexes the certificate (issuer_id, serial) whose DER is der, registered in the caller's open
 * transaction; a DER that is not a certificate is simply not indexed. */
int store__pg_search_index(struct store *store, int64_t issuer_id, const unsigned char *serial,
                           size_t serial_len, const unsigned char *der, size_t der_len);
/* Indexes the certificates registered before the index existed (search_backfill's position), in
 * batches of one transaction each; one node at a time (a session advisory lock, others skip). */
int store__pg_search_backfill(struct store *store);
/* store__ops.cert_search. */
int store__pg_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx);

#endif
