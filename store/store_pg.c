/* SPDX-License-Identifier: Apache-2.0 */
/* store_pg.c: the PostgreSQL backend of the store, for a cluster of pkiva nodes sharing one
 * database: the schema and its migrations (the same versions as the SQLite backend), the
 * connection (libpq), transactions that nest through savepoints, the cluster-wide writer lock and
 * the mapping of SQLSTATEs onto util's error enum. Only this file includes libpq-fe.h. */

/* DESIGN (PostgreSQL backend; the module's DESIGN comment is in store.c)
 *
 * Connection. One PGconn per struct store, used by one thread at a time like the SQLite handle.
 * Statements are sent with PQexecParams: parameters as text, except bytea which goes binary;
 * results come back as text (bytea unescaped with PQunescapeBytea). No result is kept between
 * calls, so a callback may re-enter the store during a walk. A connection found broken (the
 * server restarted, the network dropped) is reset at the next call made outside a transaction,
 * so a node recovers from an outage without a restart; a call made while it is down fails with
 * UTIL_ESTORE and a log line that says the database is unreachable, and nothing is acknowledged.
 *
 * Writer lock. The store's invariants (store.c) rest on writers taking turns: feed ids visible in
 * id order, CRL numbers and TSA blocks never handed out twice, one audit chain. SQLite gets this
 * from BEGIN IMMEDIATE; here every transaction that writes a change, an audit record, a CRL
 * number or a seal takes one transaction-level advisory lock (pg_advisory_xact_lock) right after
 * BEGIN, before it reads anything, and holds it until COMMIT. Nodes therefore serialise their
 * writes exactly like processes on one SQLite file. Out-of-order commits cannot happen: a writer
 * takes its feed id under the lock, and PostgreSQL makes a commit visible (ProcArrayEndTransaction)
 * before it releases the transaction's locks, so the next writer's ids, taken after it got the
 * lock, become visible only after every smaller id. A follower reading id > last_seen (feed/)
 * therefore never skips a change; tests/store/store_pg_test.c checks it with concurrent writers.
 * Feed ids come from a sequence, taken under the lock (so in commit order); a rolled-back step
 * leaves a gap, which no reader minds, and an id is never reused. Audit ids must be contiguous:
 * the last id + 1, with the highest id ever used kept in a counter row updated in the writing
 * transaction, as sqlite_sequence does. (A counter row for the feed would be updated once per
 * certificate of an import batch, and a row updated n times in one transaction costs O(n) per
 * update: the import would be quadratic.) The lock is taken at
 * the outermost level only: a savepoint rolled back would release a lock taken inside it. Writes
 * that need no order (the TSA token log, SLA marks, a TSA block, which its row lock orders) skip
 * the lock. The lock waits at most the busy timeout (lock_timeout; PKIVA_STORE_BUSY_MS as for
 * SQLite), then UTIL_ELOCKED.
 *
 * CRL fencing. store.c refuses (UTIL_EEXIST) a CRL whose number is not above every CRL saved for
 * that issuer, inside the save's locked transaction, so a stalled former publisher can never store
 * an older or duplicate number after a newer one.
 *
 * Schema. Table pkiva_schema holds the version; pg_migrations[i] takes version i to i + 1 with
 * the same meaning as the SQLite list (store_sqlite.c), run in one transaction under a migration
 * advisory lock so that nodes starting together migrate once. */

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_int.h"
#include "store/store_pg_int.h"
#include "util/util.h"

#define PG_BUSY_MS_DEFAULT 5000
#define PG_BUSY_MS_MAX 3600000
/* Advisory lock keys: "pkiv" in the high word, the purpose in the low one. */
#define PG_LOCK_WRITER ((int64_t)0x706b697600000001LL)
#define PG_LOCK_MIGRATE ((int64_t)0x706b697600000002LL)
#define PG_MAX_PARAMS 16
/* Rows fetched per round trip by cert_iterate, which may walk millions of certificates. */
#define PG_PAGE_ROWS 2000
#define PG_PAGE_ROWS_TEXT "2000"

/* ---- schema --------------------------------------------------------------------------------- */

/* Version 1: the tables of schema_v1 in store_sqlite.c, with the same columns and meanings.
 * Differences: bytea for BLOB, bigint for INTEGER; certs is an ordinary table keyed by (issuer_id,
 * serial); feed ids come from the sequence feed_ids and audit ids from pkiva_counters, both under
 * the writer lock (see DESIGN); the counter remembers the highest audit id ever used, as
 * sqlite_sequence does. */
static const char pg_schema_v1[] =
    "CREATE TABLE issuers ("
    "  id bigserial PRIMARY KEY,"
    "  name text NOT NULL UNIQUE,"
    "  cert_der bytea NOT NULL,"
    "  created_at_ms bigint NOT NULL"
    ");"
    "CREATE TABLE pkiva_counters ("
    "  name text PRIMARY KEY,"
    "  value bigint NOT NULL"
    ");"
    "INSERT INTO pkiva_counters VALUES ('audit', 0);"
    "CREATE SEQUENCE feed_ids;"
    "CREATE TABLE feed ("
    "  id bigint PRIMARY KEY,"
    "  kind integer NOT NULL CHECK (kind IN (1, 2, 3)),"
    "  issuer_id bigint NOT NULL REFERENCES issuers(id),"
    "  serial bytea NOT NULL,"
    "  at_ms bigint NOT NULL,"
    "  actor text"
    ");"
    "CREATE INDEX feed_by_cert ON feed (issuer_id, serial);"
    "CREATE TABLE cert_ders ("
    "  id bigserial PRIMARY KEY,"
    "  der bytea NOT NULL"
    ");"
    "CREATE TABLE certs ("
    "  issuer_id bigint NOT NULL REFERENCES issuers(id),"
    "  serial bytea NOT NULL CHECK (length(serial) BETWEEN 1 AND 32),"
    "  not_before bigint NOT NULL,"
    "  not_after bigint NOT NULL,"
    "  status integer NOT NULL CHECK (status IN (0, 1)),"
    "  revoked_at bigint NOT NULL DEFAULT 0,"
    "  reason integer NOT NULL DEFAULT -1,"
    "  invalidity_date bigint NOT NULL DEFAULT 0,"
    "  feed_id bigint NOT NULL,"
    "  subject text,"
    "  der_id bigint REFERENCES cert_ders(id),"
    "  PRIMARY KEY (issuer_id, serial)"
    ");"
    "CREATE INDEX certs_revoked ON certs(issuer_id, serial) WHERE status = 1;"
    "CREATE TABLE revocations ("
    "  feed_id bigint PRIMARY KEY REFERENCES feed(id),"
    "  issuer_id bigint NOT NULL REFERENCES issuers(id),"
    "  serial bytea NOT NULL,"
    "  reason integer NOT NULL,"
    "  revoked_at bigint NOT NULL,"
    "  invalidity_date bigint NOT NULL DEFAULT 0,"
    "  request_id text,"
    "  received_at_ms bigint NOT NULL,"
    "  committed_at_ms bigint NOT NULL,"
    "  actor text NOT NULL,"
    "  ocsp_at_ms bigint,"
    "  crl_at_ms bigint"
    ");"
    "CREATE INDEX revocations_open_ocsp ON revocations(feed_id) WHERE ocsp_at_ms IS NULL;"
    "CREATE INDEX revocations_open_crl ON revocations(feed_id) WHERE crl_at_ms IS NULL;"
    "CREATE TABLE crl_numbers ("
    "  issuer_id bigint PRIMARY KEY REFERENCES issuers(id),"
    "  last_number bigint NOT NULL CHECK (last_number >= 1)"
    ");"
    "CREATE TABLE crl_history ("
    "  id bigserial PRIMARY KEY,"
    "  issuer_id bigint NOT NULL REFERENCES issuers(id),"
    "  number bigint NOT NULL,"
    "  base_number bigint NOT NULL DEFAULT 0,"
    "  this_update bigint NOT NULL,"
    "  next_update bigint NOT NULL,"
    "  feed_id bigint NOT NULL,"
    "  der bytea NOT NULL,"
    "  created_at_ms bigint NOT NULL,"
    "  UNIQUE (issuer_id, number)"
    ");"
    "CREATE TABLE tsa_serials ("
    "  unit text PRIMARY KEY,"
    "  next_serial bigint NOT NULL CHECK (next_serial >= 1)"
    ");"
    "CREATE TABLE tsa_tokens ("
    "  unit text NOT NULL,"
    "  serial bigint NOT NULL,"
    "  gen_time_ms bigint NOT NULL,"
    "  policy text NOT NULL,"
    "  imprint_alg text NOT NULL,"
    "  imprint bytea NOT NULL,"
    "  PRIMARY KEY (unit, serial)"
    ");"
    "CREATE TABLE audit ("
    "  id bigint PRIMARY KEY,"
    "  at_ms bigint NOT NULL,"
    "  actor text NOT NULL,"
    "  action text NOT NULL,"
    "  detail text NOT NULL,"
    "  prev_hash bytea NOT NULL,"
    "  hash bytea NOT NULL"
    ");"
    /* Registering a certificate is one round trip (bulk import calls it once per certificate):
     * lookup, feed id, feed row, certificate row and (revoked at import) revocation row. The inner
     * block is a subtransaction, so a failure undoes this certificate alone and leaves an
     * enclosing transaction usable; the SQLSTATE and message come back as values. */
    "CREATE FUNCTION pkiva_cert_add(p_issuer bigint, p_serial bytea, p_not_before bigint,"
    "  p_not_after bigint, p_subject text, p_der bytea, p_now bigint, p_revoked boolean,"
    "  p_reason integer, p_revoked_at bigint, p_invalidity bigint, p_request_id text,"
    "  p_received bigint, p_actor text,"
    "  OUT o_feed_id bigint, OUT o_created boolean, OUT o_state text, OUT o_message text)"
    " LANGUAGE plpgsql AS $f$"
    " DECLARE v_der bigint;"
    " BEGIN"
    "  o_created := false;"
    "  SELECT c.feed_id INTO o_feed_id FROM certs AS c"
    "   WHERE c.issuer_id = p_issuer AND c.serial = p_serial;"
    "  IF FOUND THEN RETURN; END IF;"
    "  BEGIN"
    "   IF p_der IS NOT NULL THEN"
    "    INSERT INTO cert_ders (der) VALUES (p_der) RETURNING id INTO v_der;"
    "   END IF;"
    "   o_feed_id := nextval('feed_ids');"
    "   INSERT INTO feed (id, kind, issuer_id, serial, at_ms, actor) VALUES (o_feed_id,"
    "    CASE WHEN p_revoked THEN 2 ELSE 1 END, p_issuer, p_serial, p_now,"
    "    CASE WHEN p_revoked THEN p_actor END);"
    "   INSERT INTO certs (issuer_id, serial, not_before, not_after, status, revoked_at, reason,"
    "    invalidity_date, feed_id, subject, der_id) VALUES (p_issuer, p_serial, p_not_before,"
    "    p_not_after, CASE WHEN p_revoked THEN 1 ELSE 0 END,"
    "    CASE WHEN p_revoked THEN p_revoked_at ELSE 0 END,"
    "    CASE WHEN p_revoked THEN p_reason ELSE -1 END,"
    "    CASE WHEN p_revoked THEN p_invalidity ELSE 0 END, o_feed_id, p_subject, v_der);"
    "   IF p_revoked THEN"
    "    INSERT INTO revocations (feed_id, issuer_id, serial, reason, revoked_at,"
    "     invalidity_date, request_id, received_at_ms, committed_at_ms, actor) VALUES"
    "     (o_feed_id, p_issuer, p_serial, p_reason, p_revoked_at, p_invalidity, p_request_id,"
    "     p_received, p_now, COALESCE(p_actor, 'unknown'));"
    "   END IF;"
    "   o_created := true;"
    "  EXCEPTION WHEN OTHERS THEN"
    "   o_feed_id := 0; o_state := SQLSTATE; o_message := SQLERRM;"
    "  END;"
    " END $f$;";

/* Version 2: schema_v2 of store_sqlite.c (audit record versions, change ranges, seals). */
static const char pg_schema_v2[] =
    "ALTER TABLE audit ADD COLUMN version integer NOT NULL DEFAULT 1;"
    "ALTER TABLE audit ADD COLUMN feed_first bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE audit ADD COLUMN feed_last bigint NOT NULL DEFAULT 0;"
    "ALTER TABLE audit ADD COLUMN changes bytea;"
    "CREATE TABLE audit_seals ("
    "  id bigserial PRIMARY KEY,"
    "  first_id bigint NOT NULL,"
    "  last_id bigint NOT NULL,"
    "  at_ms bigint NOT NULL,"
    "  cert_sha256 bytea NOT NULL,"
    "  md text NOT NULL,"
    "  rsa_pss integer NOT NULL,"
    "  hashes bytea NOT NULL,"
    "  signature bytea NOT NULL"
    ");";

/* Version 3: schema_v3 of store_sqlite.c (the token log keyed by the TSA certificate). */
static const char pg_schema_v3[] =
    "ALTER TABLE tsa_tokens ADD COLUMN cert_id bytea NOT NULL DEFAULT '\\x'::bytea;"
    "CREATE UNIQUE INDEX tsa_tokens_by_cert ON tsa_tokens (cert_id, serial) "
    "WHERE cert_id <> '\\x'::bytea;";

/* Version 4: the SQLite list's version 4 is the public directory's search index (schema_search in
 * store_sqlite.c). The PostgreSQL backend had no search index then, so its version 4 adds
 * nothing; version 5 (store__pg_schema_search in store_pg_search.c) brings it, with the catch-up
 * of the certificates registered before it, and is a no-op on SQLite. */
static const char pg_schema_v4[] = "SELECT 1";

/* Version 6: schema_nodes of store_sqlite.c (each node's applied feed position and heartbeat). */
static const char pg_schema_v6[] = "CREATE TABLE nodes ("
                                   "  id bigserial PRIMARY KEY,"
                                   "  name text NOT NULL UNIQUE,"
                                   "  applied_feed_id bigint NOT NULL,"
                                   "  heartbeat_ms bigint NOT NULL"
                                   ");";

/* Version 7: schema_feed_changes of store_sqlite.c (the partial index of the changes other than
 * registrations of good certificates, read by the CRL publisher's start-up replay). */
static const char pg_schema_v7[] = "CREATE INDEX feed_not_issue ON feed (id) WHERE kind <> 1;";

/* pg_migrations[i] upgrades version i to i + 1, in step with the SQLite list: the same version
 * number means the same tables and columns in both backends. Append only. */
static const char *const pg_migrations[] = {
    pg_schema_v1, pg_schema_v2, pg_schema_v3, pg_schema_v4, store__pg_schema_search,
    pg_schema_v6, pg_schema_v7};
#define PG_SCHEMA_VERSION ((int)(sizeof(pg_migrations) / sizeof(pg_migrations[0])))

/* ---- connection ----------------------------------------------------------------------------- */

struct pg {
    struct store base; /* first: a struct store * is a struct pg * */
    PGconn *conn;
    char *conninfo;
    char *where; /* host/db for log lines, never the password */
    int depth;   /* open explicit transactions */
    int busy_ms;
    int readonly;
    int64_t lease_key; /* the session advisory lock this connection holds (0: none) */
};

enum tx_kind { PG_TX_OUTER = 1, PG_TX_STEP = 2 };
enum tx_lock { PG_NO_LOCK = 0, PG_WRITER_LOCK = 1 };

/* Query parameters: values as text, bytea as binary. */
struct pg_params {
    int n;
    const char *values[PG_MAX_PARAMS];
    int lengths[PG_MAX_PARAMS];
    int formats[PG_MAX_PARAMS];
    char text[PG_MAX_PARAMS][24];
};

static struct pg *pg_of(struct store *store)
{
    return (struct pg *)store;
}

static void p_i64(struct pg_params *p, int64_t v)
{
    (void)snprintf(p->text[p->n], sizeof(p->text[p->n]), "%" PRId64, v); /* always fits */
    p->values[p->n] = p->text[p->n];
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}

static void p_text(struct pg_params *p, const char *v) /* NULL: SQL NULL */
{
    p->values[p->n] = v;
    p->lengths[p->n] = 0;
    p->formats[p->n] = 0;
    p->n++;
}

static void p_blob(struct pg_params *p, const void *v, size_t len)
{
    /* A zero-length value must still be a value, not NULL. */
    p->values[p->n] = v != NULL ? (const char *)v : "";
    p->lengths[p->n] = (int)len;
    p->formats[p->n] = 1;
    p->n++;
}

/* Maps a failed result (or a broken connection when res is NULL) to util's enum, logging it. */
static int pg_err(struct pg *s, const PGresult *res, const char *op)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(s->conn);
    size_t len = msg != NULL ? strlen(msg) : 0;

    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == ' '))
        len--;
    if (PQstatus(s->conn) == CONNECTION_BAD || state == NULL || strncmp(state, "08", 2) == 0 ||
        strncmp(state, "57P", 3) == 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: the PostgreSQL store is unreachable: %.*s", op, s->where,
                   (int)len, msg != NULL ? msg : "");
        return UTIL_ESTORE;
    }
    if (strcmp(state, "55P03") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0) {
        UTIL_WARN(STORE_MOD,
                  "%s: %s: locked by another writer beyond the busy timeout (%d ms): %.*s", op,
                  s->where, s->busy_ms, (int)len, msg);
        return UTIL_ELOCKED;
    }
    if (strcmp(state, "53100") == 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: disk full: %.*s", op, s->where, (int)len, msg);
        return UTIL_ENOSPC;
    }
    if (strcmp(state, "53200") == 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: out of memory", op, s->where);
        return UTIL_ENOMEM;
    }
    if (strncmp(state, "23", 2) == 0) {
        UTIL_WARN(STORE_MOD, "%s: %s: %.*s", op, s->where, (int)len, msg);
        if (strcmp(state, "23503") == 0)
            return UTIL_ENOTFOUND;
        if (strcmp(state, "23505") == 0)
            return UTIL_EEXIST;
        return UTIL_EINVAL;
    }
    if (strcmp(state, "25006") == 0 || strcmp(state, "42501") == 0 ||
        strncmp(state, "28", 2) == 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: not permitted: %.*s", op, s->where, (int)len, msg);
        return UTIL_EPERM;
    }
    UTIL_ERROR(STORE_MOD, "%s: %s: %.*s (SQLSTATE %s)", op, s->where, (int)len, msg, state);
    return UTIL_ESTORE;
}

/* Reconnects a broken connection when no transaction depends on it. */
static int pg_alive(struct pg *s, const char *op)
{
    if (PQstatus(s->conn) == CONNECTION_OK)
        return 0;
    if (s->depth > 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: the connection was lost inside a transaction; roll it back",
                   op, s->where);
        return UTIL_ESTORE;
    }
    PQreset(s->conn);
    s->lease_key = 0; /* the old session's locks went with it */
    if (PQstatus(s->conn) != CONNECTION_OK)
        return pg_err(s, NULL, op);
    UTIL_INFO(STORE_MOD, "%s: reconnected to the PostgreSQL store", s->where);
    return 0;
}

/* Runs one statement; *res (may be NULL when the caller wants no rows) gets the result on success,
 * which the caller clears. */
static int q(struct pg *s, const char *sql, const struct pg_params *p, const char *op,
             PGresult **res)
{
    PGresult *r = NULL;
    ExecStatusType st;
    int rc = 0;

    if (res != NULL)
        *res = NULL;
    rc = pg_alive(s, op);
    if (rc != 0)
        return rc;
    /* Without parameters, PQexec: it also runs several statements (settings, migrations). */
    if (p == NULL)
        r = PQexec(s->conn, sql);
    else
        r = PQexecParams(s->conn, sql, p->n, NULL, p->values, p->lengths, p->formats, 0);
    if (r == NULL) {
        if (PQstatus(s->conn) == CONNECTION_BAD)
            return pg_err(s, NULL, op);
        UTIL_ERROR(STORE_MOD, "%s: %s: out of memory", op, s->where);
        return UTIL_ENOMEM;
    }
    st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        rc = pg_err(s, r, op);
        PQclear(r);
        return rc;
    }
    if (res != NULL)
        *res = r;
    else
        PQclear(r);
    return 0;
}

static int64_t g_i64(const PGresult *r, int row, int col)
{
    const char *v = PQgetvalue(r, row, col);
    if (PQgetisnull(r, row, col) || v == NULL)
        return 0;
    if (v[0] == 't' && v[1] == '\0')
        return 1; /* booleans */
    if (v[0] == 'f' && v[1] == '\0')
        return 0;
    return (int64_t)strtoll(v, NULL, 10);
}

static const char *g_text(const PGresult *r, int row, int col) /* NULL for SQL NULL */
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

/* Unescapes a bytea column: *out is NULL for SQL NULL, else malloc'd (PQfreemem). */
static int g_blob(const PGresult *r, int row, int col, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (PQgetisnull(r, row, col))
        return 0;
    *out = PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), len);
    return *out == NULL ? UTIL_ENOMEM : 0;
}

/* Runs a query that returns one integer. */
static int q_int(struct pg *s, const char *sql, const struct pg_params *p, const char *op,
                 int64_t *value)
{
    PGresult *r = NULL;
    int rc = q(s, sql, p, op, &r);

    *value = 0;
    if (rc == 0 && PQntuples(r) > 0)
        *value = g_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

/* ---- transactions --------------------------------------------------------------------------- */

static int tx_start(struct pg *s, const char *op, enum tx_kind *kind, enum tx_lock lock)
{
    struct pg_params p = {0};
    int rc = 0;

    *kind = 0;
    rc = pg_alive(s, op);
    if (rc != 0)
        return rc;
    switch (PQtransactionStatus(s->conn)) {
    case PQTRANS_IDLE:
        if (s->depth > 0) {
            UTIL_ERROR(STORE_MOD,
                       "%s: %s: the open transaction was aborted by an earlier error; roll it back",
                       op, s->where);
            return UTIL_ESTORE;
        }
        rc = q(s, "BEGIN", NULL, op, NULL);
        if (rc != 0)
            return rc;
        *kind = PG_TX_OUTER;
        if (lock == PG_WRITER_LOCK && !s->readonly) {
            p_i64(&p, PG_LOCK_WRITER);
            rc = q(s, "SELECT pg_advisory_xact_lock($1)", &p, op, NULL);
            if (rc != 0) {
                (void)q(s, "ROLLBACK", NULL, op, NULL); /* the lock's error is the one to report */
                *kind = 0;
            }
        }
        return rc;
    case PQTRANS_INTRANS:
        rc = q(s, "SAVEPOINT store_step", NULL, op, NULL);
        if (rc == 0)
            *kind = PG_TX_STEP;
        return rc;
    default:
        UTIL_ERROR(STORE_MOD,
                   "%s: %s: the open transaction was aborted by an earlier error; roll it back", op,
                   s->where);
        return UTIL_ESTORE;
    }
}

static void tx_undo(struct pg *s, enum tx_kind kind, const char *op)
{
    if (kind == 0 || PQstatus(s->conn) != CONNECTION_OK ||
        PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        return;
    if (kind == PG_TX_OUTER) {
        (void)q(s, "ROLLBACK", NULL, op, NULL); /* a failed rollback ends it anyway */
        return;
    }
    /* Rolling back to a savepoint also clears an aborted state; release it too. */
    (void)q(s, "ROLLBACK TO SAVEPOINT store_step", NULL, op, NULL);
    (void)q(s, "RELEASE SAVEPOINT store_step", NULL, op, NULL);
}

static int tx_finish(struct pg *s, enum tx_kind kind, int rc, const char *op)
{
    if (kind == 0)
        return rc;
    if (rc != 0) {
        tx_undo(s, kind, op);
        return rc;
    }
    rc = q(s, kind == PG_TX_OUTER ? "COMMIT" : "RELEASE SAVEPOINT store_step", NULL, op, NULL);
    if (rc != 0)
        tx_undo(s, kind, op);
    return rc;
}

/* A read snapshot for an operation that reads several times and must see one state. */
static int rx_start(struct pg *s, const char *op, int *opened)
{
    int rc = 0;

    *opened = 0;
    rc = pg_alive(s, op);
    if (rc != 0 || PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        return rc;
    rc = q(s, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", NULL, op, NULL);
    if (rc == 0)
        *opened = 1;
    return rc;
}

static void rx_finish(struct pg *s, int opened, const char *op)
{
    if (opened && PQstatus(s->conn) == CONNECTION_OK &&
        PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        (void)q(s, "COMMIT", NULL, op, NULL); /* read-only: nothing to lose */
}

static int pg_begin(struct store *store)
{
    struct pg *s = pg_of(store);
    enum tx_kind kind = 0;
    int rc = tx_start(s, "begin", &kind, PG_WRITER_LOCK);

    if (rc == 0)
        s->depth++;
    return rc;
}

static int pg_commit(struct store *store)
{
    struct pg *s = pg_of(store);
    int rc = 0;

    if (s->depth == 0) {
        UTIL_ERROR(STORE_MOD, "commit: no transaction is open");
        return UTIL_EINVAL;
    }
    if (PQstatus(s->conn) != CONNECTION_OK || PQtransactionStatus(s->conn) != PQTRANS_INTRANS) {
        /* An earlier statement failed (PostgreSQL aborts the transaction, or the savepoint of a
         * nested begin) or the connection was lost: undo this level and report it. */
        UTIL_ERROR(STORE_MOD, "commit: %s: the transaction was aborted by an earlier error",
                   s->where);
        tx_undo(s, s->depth == 1 ? PG_TX_OUTER : PG_TX_STEP, "commit");
        s->depth--;
        if (PQstatus(s->conn) != CONNECTION_OK || PQtransactionStatus(s->conn) == PQTRANS_IDLE)
            s->depth = 0;
        return UTIL_ESTORE;
    }
    rc = tx_finish(s, s->depth == 1 ? PG_TX_OUTER : PG_TX_STEP, 0, "commit");
    s->depth--;
    if (rc != 0 && PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        s->depth = 0;
    return rc;
}

static int pg_rollback(struct store *store)
{
    struct pg *s = pg_of(store);

    if (s->depth == 0) {
        UTIL_ERROR(STORE_MOD, "rollback: no transaction is open");
        return UTIL_EINVAL;
    }
    tx_undo(s, s->depth == 1 ? PG_TX_OUTER : PG_TX_STEP, "rollback");
    s->depth--;
    if (PQstatus(s->conn) != CONNECTION_OK || PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        s->depth = 0;
    return 0;
}

/* ---- open, migrate, close ------------------------------------------------------------------- */

static int busy_ms_from_env(void)
{
    const char *env = getenv("PKIVA_STORE_BUSY_MS");
    char *end = NULL;
    long value = 0;

    if (env == NULL || env[0] == '\0')
        return PG_BUSY_MS_DEFAULT;
    errno = 0;
    value = strtol(env, &end, 10);
    if (errno != 0 || *end != '\0' || value < 0 || value > PG_BUSY_MS_MAX) {
        UTIL_WARN(STORE_MOD, "PKIVA_STORE_BUSY_MS=%s is not 0-%d; using %d ms", env, PG_BUSY_MS_MAX,
                  PG_BUSY_MS_DEFAULT);
        return PG_BUSY_MS_DEFAULT;
    }
    return (int)value;
}

/* Schema 1 -> 2 on an existing database: as audit_upgrade in store_sqlite.c. */
static int audit_upgrade(struct pg *s)
{
    int64_t head = 0;
    int rc = q_int(s, "SELECT COALESCE(MAX(id), 0) FROM feed", NULL, "audit upgrade", &head);

    if (rc != 0 || head == 0)
        return rc;
    return store__audit_changes(&s->base, "pkiva", "schema-upgrade",
                                "{\"note\":\"changes before audit schema 2, as they stood\"}", 1,
                                head);
}

static int migrate(struct pg *s)
{
    static const char op[] = "migrate";
    struct pg_params p = {0};
    int64_t version = 0;
    int64_t exists = 0;
    int64_t objects = 0;
    int in_tx = 0;
    int i = 0;
    int rc = 0;

    rc = q_int(s, "SELECT to_regclass('pkiva_schema') IS NOT NULL", NULL, op, &exists);
    if (rc == 0 && exists)
        rc = q_int(s, "SELECT version FROM pkiva_schema", NULL, op, &version);
    if (rc != 0)
        goto out;
    if (version == PG_SCHEMA_VERSION)
        goto out;
    if (version > PG_SCHEMA_VERSION) {
        UTIL_ERROR(STORE_MOD,
                   "open %s: schema version %" PRId64 " is newer than this pkiva (%d); upgrade "
                   "pkiva",
                   s->where, version, PG_SCHEMA_VERSION);
        rc = UTIL_ESTORE;
        goto out;
    }
    if (s->readonly) {
        UTIL_ERROR(STORE_MOD,
                   "open %s: schema version %" PRId64 " needs migrating to %d; open it read-write "
                   "once",
                   s->where, version, PG_SCHEMA_VERSION);
        rc = UTIL_ESTORE;
        goto out;
    }
    rc = q(s, "BEGIN", NULL, op, NULL);
    if (rc != 0)
        goto out;
    in_tx = 1;
    p_i64(&p, PG_LOCK_MIGRATE);
    rc = q(s, "SELECT pg_advisory_xact_lock($1)", &p, op, NULL);
    if (rc == 0)
        rc = q(s, "CREATE TABLE IF NOT EXISTS pkiva_schema (version integer NOT NULL)", NULL, op,
               NULL);
    if (rc == 0)
        rc = q(s, "INSERT INTO pkiva_schema SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM pkiva_schema)",
               NULL, op, NULL);
    if (rc == 0)
        rc = q_int(s, "SELECT version FROM pkiva_schema", NULL, op, &version);
    if (rc != 0)
        goto out;
    if (version == 0) {
        rc = q_int(s,
                   "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() AND "
                   "tablename <> 'pkiva_schema'",
                   NULL, op, &objects);
        if (rc != 0)
            goto out;
        if (objects != 0) {
            UTIL_ERROR(STORE_MOD, "open %s: not a pkiva database (it has other tables)", s->where);
            rc = UTIL_ECONFIG;
            goto out;
        }
    }
    for (i = (int)version; i < PG_SCHEMA_VERSION; i++) {
        rc = q(s, pg_migrations[i], NULL, op, NULL);
        if (rc != 0) {
            UTIL_ERROR(STORE_MOD, "open %s: migration to schema version %d failed", s->where,
                       i + 1);
            goto out;
        }
    }
    if (version == 1) {
        rc = audit_upgrade(s);
        if (rc != 0)
            goto out;
    }
    memset(&p, 0, sizeof(p));
    p_i64(&p, PG_SCHEMA_VERSION);
    rc = q(s, "UPDATE pkiva_schema SET version = $1", &p, op, NULL);
    if (rc == 0)
        rc = q(s, "COMMIT", NULL, op, NULL);
    if (rc != 0)
        goto out;
    in_tx = 0;
    if (version < PG_SCHEMA_VERSION)
        UTIL_INFO(STORE_MOD, "%s: schema migrated from version %" PRId64 " to %d", s->where,
                  version, PG_SCHEMA_VERSION);
out:
    if (in_tx && PQtransactionStatus(s->conn) != PQTRANS_IDLE)
        (void)q(s, "ROLLBACK", NULL, op, NULL); /* nothing else to do on failure */
    return rc;
}

static void pg_close(struct store *store)
{
    struct pg *s = pg_of(store);

    if (s->depth > 0)
        UTIL_WARN(STORE_MOD, "close %s: an explicit transaction was still open and is rolled back",
                  s->where);
    if (s->conn != NULL)
        PQfinish(s->conn);
    free(s->conninfo);
    free(s->where);
    free(s);
}

/* libpq prints notices (e.g. "relation already exists, skipping") on stderr by default. */
static void pg_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static const struct store__ops pg_ops;

int store__pg_open(const char *conninfo, int flags, struct store **out)
{
    struct pg *s = NULL;
    char where[256];
    char settings[96];
    int rc = 0;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return UTIL_ENOMEM;
    s->base.ops = &pg_ops;
    s->readonly = (flags & STORE_OPEN_READONLY) != 0;
    s->busy_ms = busy_ms_from_env();
    s->conninfo = strdup(conninfo);
    if (s->conninfo == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    s->conn = PQconnectdb(conninfo);
    if (s->conn == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    (void)snprintf(where, sizeof(where), "postgresql %s@%s:%s/%s",
                   PQuser(s->conn) != NULL ? PQuser(s->conn) : "?",
                   PQhost(s->conn) != NULL ? PQhost(s->conn) : "?",
                   PQport(s->conn) != NULL ? PQport(s->conn) : "?",
                   PQdb(s->conn) != NULL ? PQdb(s->conn) : "?"); /* truncation only shortens logs */
    s->where = strdup(where);
    if (s->where == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (PQstatus(s->conn) != CONNECTION_OK) {
        rc = pg_err(s, NULL, "open");
        goto out;
    }
    (void)PQsetNoticeProcessor(s->conn, pg_notice, NULL); /* returns the old processor */
    /* Durability as with SQLite's synchronous=FULL: a commit returns once it is on disk (and on
     * the synchronous standbys the server is configured with). */
    (void)snprintf(settings, sizeof(settings),
                   "SET synchronous_commit = on; SET lock_timeout = %d; SET client_encoding = UTF8",
                   s->busy_ms > 0 ? s->busy_ms : 1); /* 0 would mean: wait forever */
    rc = q(s, settings, NULL, "configure connection", NULL);
    if (rc == 0 && s->readonly)
        rc = q(s, "SET default_transaction_read_only = on", NULL, "configure connection", NULL);
    if (rc != 0)
        goto out;
    rc = migrate(s);
    if (rc == 0 && !s->readonly)
        rc = store__pg_search_backfill(&s->base);
    if (rc != 0)
        goto out;
    *out = &s->base;
    s = NULL;
out:
    if (s != NULL)
        pg_close(&s->base);
    return rc;
}

static int pg_ping(struct store *store)
{
    return q(pg_of(store), "SELECT 1", NULL, "ping", NULL);
}

/* ---- issuers -------------------------------------------------------------------------------- */

static int read_issuer(const PGresult *r, int row, struct store_issuer *out)
{
    unsigned char *der = NULL;
    size_t len = 0;
    int rc = 0;

    memset(out, 0, sizeof(*out));
    out->id = g_i64(r, row, 0);
    (void)snprintf(out->name, sizeof(out->name), "%s", PQgetvalue(r, row, 1)); /* bounded at put */
    rc = g_blob(r, row, 2, &der, &len);
    if (rc != 0 || len == 0)
        goto out;
    out->cert_der = malloc(len);
    if (out->cert_der == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    memcpy(out->cert_der, der, len);
    out->cert_len = len;
out:
    PQfreemem(der);
    return rc;
}

static int pg_issuer_put(struct store *store, const char *name, const unsigned char *cert_der,
                         size_t cert_len, int64_t *id_out)
{
    static const char op[] = "issuer put";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    PGresult *r = NULL;
    unsigned char *der = NULL;
    size_t der_len = 0;
    enum tx_kind kind = 0;
    int rc = 0;

    if (cert_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    p_text(&p, name);
    rc = q(s, "SELECT id, cert_der FROM issuers WHERE name = $1", &p, op, &r);
    if (rc != 0)
        goto out;
    if (PQntuples(r) > 0) {
        rc = g_blob(r, 0, 1, &der, &der_len);
        if (rc != 0)
            goto out;
        if (der_len != cert_len || memcmp(der, cert_der, cert_len) != 0) {
            UTIL_ERROR(STORE_MOD, "issuer %s is already registered with a different certificate",
                       name);
            rc = UTIL_EEXIST;
            goto out;
        }
        *id_out = g_i64(r, 0, 0);
        goto out;
    }
    PQclear(r);
    r = NULL;
    p_blob(&p, cert_der, cert_len);
    p_i64(&p, util_now_ms());
    rc =
        q(s, "INSERT INTO issuers (name, cert_der, created_at_ms) VALUES ($1, $2, $3) RETURNING id",
          &p, op, &r);
    if (rc != 0)
        goto out;
    *id_out = g_i64(r, 0, 0);
    UTIL_INFO(STORE_MOD, "issuer %s registered with id %" PRId64, name, *id_out);
out:
    PQfreemem(der);
    PQclear(r);
    return tx_finish(s, kind, rc, op);
}

static int pg_issuer_get(struct store *store, const char *name, struct store_issuer *out)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    int rc = 0;

    p_text(&p, name);
    rc = q(pg_of(store), "SELECT id, name, cert_der FROM issuers WHERE name = $1", &p, "issuer get",
           &r);
    if (rc == 0 && PQntuples(r) == 0)
        rc = UTIL_ENOTFOUND;
    if (rc == 0) {
        rc = read_issuer(r, 0, out);
        if (rc != 0)
            store_issuer_cleanup(out);
    }
    PQclear(r);
    return rc;
}

static int pg_issuer_list(struct store *store,
                          int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx)
{
    struct store_issuer issuer;
    PGresult *r = NULL;
    int rc = 0;
    int i = 0;

    rc = q(pg_of(store), "SELECT id, name, cert_der FROM issuers ORDER BY id", NULL, "issuer list",
           &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        rc = read_issuer(r, i, &issuer);
        if (rc == 0)
            rc = fn(ctx, &issuer);
        store_issuer_cleanup(&issuer);
    }
    PQclear(r);
    return rc;
}

/* ---- certificates --------------------------------------------------------------------------- */

#define PG_CERT_COLS                                                         \
    "issuer_id, serial, not_before, not_after, status, revoked_at, reason, " \
    "invalidity_date, feed_id"

/* Fills *c from the PG_CERT_COLS columns starting at column first. */
static int read_cert(struct pg *s, const PGresult *r, int row, int first, struct store_cert *c)
{
    unsigned char *serial = NULL;
    size_t len = 0;
    int rc = 0;

    memset(c, 0, sizeof(*c));
    rc = g_blob(r, row, first + 1, &serial, &len);
    if (rc != 0)
        return rc;
    if (len < 1 || len > STORE_SERIAL_MAX) {
        UTIL_ERROR(STORE_MOD, "%s: a certificate row has a serial of %zu octets", s->where, len);
        PQfreemem(serial);
        return UTIL_ESTORE;
    }
    c->issuer_id = g_i64(r, row, first);
    memcpy(c->serial, serial, len);
    c->serial_len = len;
    c->not_before = g_i64(r, row, first + 2);
    c->not_after = g_i64(r, row, first + 3);
    c->status = (int)g_i64(r, row, first + 4);
    c->revoked_at = g_i64(r, row, first + 5);
    c->reason = (int)g_i64(r, row, first + 6);
    c->invalidity_date = g_i64(r, row, first + 7);
    c->feed_id = g_i64(r, row, first + 8);
    PQfreemem(serial);
    return 0;
}

static int cert_lookup(struct pg *s, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *op, struct store_cert *out, int *found)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    int rc = 0;

    *found = 0;
    p_i64(&p, issuer_id);
    p_blob(&p, serial, serial_len);
    rc =
        q(s, "SELECT " PG_CERT_COLS " FROM certs WHERE issuer_id = $1 AND serial = $2", &p, op, &r);
    if (rc == 0 && PQntuples(r) > 0) {
        rc = read_cert(s, r, 0, 0, out);
        if (rc == 0)
            *found = 1;
    }
    PQclear(r);
    return rc;
}

static int feed_append(struct pg *s, int kind, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, int64_t at_ms, const char *actor, const char *op,
                       int64_t *feed_id)
{
    struct pg_params p = {0};
    int rc = q_int(s, "SELECT nextval('feed_ids')", NULL, op, feed_id);

    if (rc != 0)
        return rc;
    p_i64(&p, *feed_id);
    p_i64(&p, kind);
    p_i64(&p, issuer_id);
    p_blob(&p, serial, serial_len);
    p_i64(&p, at_ms);
    p_text(&p, actor);
    return q(s,
             "INSERT INTO feed (id, kind, issuer_id, serial, at_ms, actor) "
             "VALUES ($1, $2, $3, $4, $5, $6)",
             &p, op, NULL);
}

static int cert_set_status(struct pg *s, const struct store_cert *c, const char *op)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    int rc = 0;

    p_i64(&p, c->issuer_id);
    p_blob(&p, c->serial, c->serial_len);
    p_i64(&p, c->status);
    p_i64(&p, c->revoked_at);
    p_i64(&p, c->reason);
    p_i64(&p, c->invalidity_date);
    p_i64(&p, c->feed_id);
    rc = q(s,
           "UPDATE certs SET status = $3, revoked_at = $4, reason = $5, invalidity_date = $6, "
           "feed_id = $7 WHERE issuer_id = $1 AND serial = $2",
           &p, op, &r);
    if (rc == 0 && strcmp(PQcmdTuples(r), "1") != 0) {
        UTIL_ERROR(STORE_MOD, "%s: %s: certificate row vanished inside the transaction", op,
                   s->where);
        rc = UTIL_ESTORE;
    }
    PQclear(r);
    return rc;
}

static int revocation_insert(struct pg *s, int64_t feed_id, const struct store_cert *c,
                             const struct store_revocation *rev, int64_t committed_at_ms,
                             const char *op)
{
    struct pg_params p = {0};

    p_i64(&p, feed_id);
    p_i64(&p, c->issuer_id);
    p_blob(&p, c->serial, c->serial_len);
    p_i64(&p, c->reason);
    p_i64(&p, c->revoked_at);
    p_i64(&p, c->invalidity_date);
    p_text(&p, rev->request_id);
    p_i64(&p, rev->received_at_ms != 0 ? rev->received_at_ms : committed_at_ms);
    p_i64(&p, committed_at_ms);
    p_text(&p, rev->actor != NULL ? rev->actor : "unknown");
    return q(s,
             "INSERT INTO revocations (feed_id, issuer_id, serial, reason, revoked_at, "
             "invalidity_date, request_id, received_at_ms, committed_at_ms, actor) "
             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
             &p, op, NULL);
}

static int pg_cert_add(struct store *store, const struct store_cert_new *cert,
                       const struct store_revocation *rev, int64_t *feed_id_out, int *created_out)
{
    static const char op[] = "cert add";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    PGresult *r = NULL;
    enum tx_kind kind = 0;
    const char *state = NULL;
    int64_t now_ms = 0;
    int rc = 0;

    *created_out = 0;
    if (cert->cert_len > INT32_MAX)
        return UTIL_EINVAL;
    /* Inside a caller's transaction the function is its own undoable step (see the schema); alone,
     * it gets a transaction with the writer lock. */
    rc = pg_alive(s, op);
    if (rc == 0 && PQtransactionStatus(s->conn) == PQTRANS_IDLE)
        rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    now_ms = util_now_ms();
    p_i64(&p, cert->issuer_id);
    p_blob(&p, cert->serial, cert->serial_len);
    p_i64(&p, cert->not_before);
    p_i64(&p, cert->not_after);
    p_text(&p, cert->subject);
    if (cert->cert_der != NULL && cert->cert_len > 0)
        p_blob(&p, cert->cert_der, cert->cert_len);
    else
        p_text(&p, NULL);
    p_i64(&p, now_ms);
    p_text(&p, rev != NULL ? "true" : "false");
    p_i64(&p, rev != NULL ? rev->reason : -1);
    p_i64(&p, rev != NULL ? (rev->revoked_at != 0 ? rev->revoked_at : now_ms / 1000) : 0);
    p_i64(&p, rev != NULL ? rev->invalidity_date : 0);
    p_text(&p, rev != NULL ? rev->request_id : NULL);
    p_i64(&p, rev != NULL && rev->received_at_ms != 0 ? rev->received_at_ms : now_ms);
    p_text(&p, rev != NULL ? rev->actor : NULL);
    rc = q(s,
           "SELECT o_feed_id, o_created, o_state, o_message FROM pkiva_cert_add($1, $2, $3, $4, "
           "$5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
           &p, op, &r);
    if (rc != 0)
        goto out;
    state = g_text(r, 0, 2);
    if (state != NULL) {
        const char *message = g_text(r, 0, 3);
        if (strcmp(state, "23503") == 0) {
            UTIL_WARN(STORE_MOD, "%s: %s: %s", op, s->where, message != NULL ? message : "");
            rc = UTIL_ENOTFOUND;
        } else if (strcmp(state, "23505") == 0) {
            UTIL_WARN(STORE_MOD, "%s: %s: %s", op, s->where, message != NULL ? message : "");
            rc = UTIL_EEXIST;
        } else {
            UTIL_ERROR(STORE_MOD, "%s: %s: %s (SQLSTATE %s)", op, s->where,
                       message != NULL ? message : "", state);
            rc = strncmp(state, "23", 2) == 0 ? UTIL_EINVAL : UTIL_ESTORE;
        }
        goto out;
    }
    *feed_id_out = g_i64(r, 0, 0);
    *created_out = (int)g_i64(r, 0, 1);
    if (*created_out && cert->cert_der != NULL && cert->cert_len > 0)
        rc = store__pg_search_index(store, cert->issuer_id, cert->serial, cert->serial_len,
                                    cert->cert_der, cert->cert_len);
out:
    PQclear(r);
    return tx_finish(s, kind, rc, op);
}

static int pg_cert_get(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, struct store_cert *out)
{
    int found = 0;
    int rc = cert_lookup(pg_of(store), issuer_id, serial, serial_len, "cert get", out, &found);

    if (rc == 0 && !found)
        rc = UTIL_ENOTFOUND;
    return rc;
}

static int pg_cert_der(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, unsigned char **der, size_t *der_len)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    unsigned char *blob = NULL;
    size_t len = 0;
    int rc = 0;

    p_i64(&p, issuer_id);
    p_blob(&p, serial, serial_len);
    rc = q(pg_of(store),
           "SELECT d.der FROM certs AS c JOIN cert_ders AS d ON d.id = c.der_id "
           "WHERE c.issuer_id = $1 AND c.serial = $2",
           &p, "cert der", &r);
    if (rc == 0 && PQntuples(r) > 0)
        rc = g_blob(r, 0, 0, &blob, &len);
    if (rc != 0)
        goto out;
    if (blob == NULL || len == 0) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    *der = malloc(len);
    if (*der == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    memcpy(*der, blob, len);
    *der_len = len;
out:
    PQfreemem(blob);
    PQclear(r);
    return rc;
}

static int cert_pages(struct store *store, int64_t issuer_id, int filter,
                      int (*fn)(void *ctx, const struct store_cert *cert), void *ctx);

/* Walks in pages of PG_PAGE_ROWS keyed by (issuer_id, serial), so that memory stays bounded for
 * millions of certificates and a callback may re-enter the store between rows.
 * DESIGN: each page must be an ordered scan of certs_pkey that stops after PG_PAGE_ROWS rows.
 * Without statistics (a start right after `pkiva import`, before autovacuum analyzed certs) the
 * planner estimates a few hundred rows for the range and prefers a bitmap scan of the whole rest
 * of the table plus a sort, so every page costs the rest of the table: a million certificates
 * took 34 s to load, ten million would take hours. enable_sort is turned off for the walk (it
 * only penalises sorts; a query that needs one still gets it), which leaves the ordered index
 * scan: 10 ms a page of 2 000 whatever the statistics. */
static int cert_scan(struct pg *s, int64_t issuer_id,
                     int (*fn)(void *ctx, const struct store_cert *cert), void *ctx);

static int pg_cert_iterate(struct store *store, int64_t issuer_id, int filter,
                           int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    static const char op[] = "cert iterate";
    struct pg *s = pg_of(store);
    int rc = 0;

    if (filter == STORE_ITER_ALL_ANY_ORDER)
        return cert_scan(s, issuer_id, fn, ctx);
    rc = q(s, "SET enable_sort = off", NULL, op, NULL);
    if (rc != 0)
        return rc;
    rc = cert_pages(store, issuer_id, filter, fn, ctx);
    /* After a failure inside a transaction the RESET fails too; the rollback undoes the SET. */
    if (PQtransactionStatus(s->conn) != PQTRANS_INERROR)
        (void)q(s, "RESET enable_sort", NULL, op, NULL); /* logged; the next walk sets it again */
    return rc;
}

/* DESIGN (STORE_ITER_ALL_ANY_ORDER, the OCSP index load). Even as ordered index scans, pages in
 * serial order visit the heap in random order (serials are random): once certs outgrows
 * shared_buffers every row costs a page read (a million certificates: 24 s). One sequential scan
 * through a cursor reads each heap page once, PG_PAGE_ROWS rows a round trip, memory bounded;
 * index scans are turned off for it (SET LOCAL, undone at the end of its transaction) because
 * without statistics the planner would pick the primary key for "issuer_id = ...". The cursor
 * lives in a transaction of its own (a savepoint inside the caller's), so the callback must not
 * use the store. */
static int cert_scan(struct pg *s, int64_t issuer_id,
                     int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    static const char op[] = "cert scan";
    enum tx_kind kind = 0;
    char sql[512], where[64] = "";
    int rc = tx_start(s, op, &kind, PG_NO_LOCK);
    int n = PG_PAGE_ROWS, stop = 0;

    if (issuer_id > 0)
        (void)snprintf(where, sizeof(where), " WHERE issuer_id = %lld", (long long)issuer_id);
    (void)snprintf(sql, sizeof(sql),
                   "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off; "
                   "DECLARE pkiva_scan NO SCROLL CURSOR FOR SELECT " PG_CERT_COLS " FROM certs%s",
                   where); /* fits */
    if (rc == 0)
        rc = q(s, sql, NULL, op, NULL);
    while (rc == 0 && n == PG_PAGE_ROWS) {
        PGresult *r = NULL;
        struct store_cert c;
        rc = q(s, "FETCH " PG_PAGE_ROWS_TEXT " FROM pkiva_scan", NULL, op, &r);
        n = rc == 0 ? PQntuples(r) : 0;
        for (int i = 0; rc == 0 && i < n; i++) {
            rc = read_cert(s, r, i, 0, &c);
            if (rc == 0)
                rc = fn(ctx, &c);
        }
        PQclear(r);
    }
    /* A callback's stop (> 0) is not a failure: the cursor is closed (a savepoint's release
     * would leave it open) and the read-only transaction ends. */
    if (rc >= 0 && kind != 0) {
        int closed = q(s, "CLOSE pkiva_scan", NULL, op, NULL);
        if (rc == 0)
            rc = closed;
    }
    stop = rc > 0 ? rc : 0;
    rc = tx_finish(s, kind, rc > 0 ? 0 : rc, op);
    return rc != 0 ? rc : stop;
}

static int cert_pages(struct store *store, int64_t issuer_id, int filter,
                      int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    static const char op[] = "cert iterate";
    struct pg *s = pg_of(store);
    struct store_cert c;
    struct store_cert last;
    int have_last = 0;
    int rc = 0;
    int i = 0;
    int n = 0;

    memset(&last, 0, sizeof(last));
    for (;;) {
        struct pg_params p = {0};
        PGresult *r = NULL;
        char sql[512];

        p_i64(&p, issuer_id);
        p_i64(&p, filter == STORE_ITER_REVOKED ? 1 : 0);
        p_i64(&p, have_last ? last.issuer_id : 0);
        p_blob(&p, have_last ? last.serial : (const unsigned char *)"",
               have_last ? last.serial_len : 0);
        p_i64(&p, PG_PAGE_ROWS);
        (void)snprintf(sql, sizeof(sql),
                       "SELECT " PG_CERT_COLS " FROM certs WHERE ($1 = 0 OR issuer_id = $1) "
                       "AND (%s OR $2::integer = 0) AND (issuer_id, serial) > ($3, $4) "
                       "ORDER BY issuer_id, serial LIMIT $5",
                       filter == STORE_ITER_REVOKED ? "status = 1" : "false"); /* fits */
        rc = q(s, sql, &p, op, &r);
        if (rc != 0)
            return rc;
        n = PQntuples(r);
        for (i = 0; rc == 0 && i < n; i++) {
            rc = read_cert(s, r, i, 0, &c);
            if (rc == 0) {
                last = c;
                have_last = 1;
                rc = fn(ctx, &c);
            }
        }
        PQclear(r);
        if (rc != 0 || n < PG_PAGE_ROWS)
            return rc;
    }
}

/* ---- revocation ----------------------------------------------------------------------------- */

static int pg_revoke(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                     int *changed_out)
{
    static const char op[] = "revoke";
    struct pg *s = pg_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int64_t now_ms = 0;
    int found = 0;
    int rc = 0;

    *changed_out = 0;
    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    rc = cert_lookup(s, rev->issuer_id, rev->serial, rev->serial_len, op, &c, &found);
    if (rc != 0)
        goto out;
    if (!found) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    now_ms = util_now_ms();
    if (c.status == STORE_REVOKED) {
        if (c.reason == rev->reason) {
            *feed_id_out = c.feed_id;
            goto out;
        }
        if (c.reason != STORE_REASON_CERTIFICATE_HOLD) {
            UTIL_WARN(STORE_MOD,
                      "revoke: certificate already revoked (%s); only a hold may change reason",
                      store_reason_name(c.reason));
            rc = UTIL_EEXIST;
            goto out;
        }
        /* A hold made permanent keeps the date of the hold unless the request names one. */
        if (rev->revoked_at != 0)
            c.revoked_at = rev->revoked_at;
        if (rev->invalidity_date != 0)
            c.invalidity_date = rev->invalidity_date;
    } else {
        c.status = STORE_REVOKED;
        c.revoked_at = rev->revoked_at != 0 ? rev->revoked_at : now_ms / 1000;
        c.invalidity_date = rev->invalidity_date;
    }
    c.reason = rev->reason;
    rc = feed_append(s, STORE_CHANGE_REVOKE, c.issuer_id, c.serial, c.serial_len, now_ms,
                     rev->actor, op, &c.feed_id);
    if (rc == 0)
        rc = cert_set_status(s, &c, op);
    if (rc == 0)
        rc = revocation_insert(s, c.feed_id, &c, rev, now_ms, op);
    if (rc != 0)
        goto out;
    *feed_id_out = c.feed_id;
    *changed_out = 1;
out:
    return tx_finish(s, kind, rc, op);
}

static int pg_unrevoke(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *actor, int64_t *feed_id_out)
{
    static const char op[] = "unrevoke";
    struct pg *s = pg_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int found = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    rc = cert_lookup(s, issuer_id, serial, serial_len, op, &c, &found);
    if (rc != 0)
        goto out;
    if (!found) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    if (c.status != STORE_REVOKED || c.reason != STORE_REASON_CERTIFICATE_HOLD) {
        UTIL_WARN(STORE_MOD, "unrevoke: certificate is not on hold");
        rc = UTIL_EINVAL;
        goto out;
    }
    c.status = STORE_GOOD;
    c.revoked_at = 0;
    c.reason = STORE_REASON_NONE;
    c.invalidity_date = 0;
    rc = feed_append(s, STORE_CHANGE_UNREVOKE, issuer_id, serial, serial_len, util_now_ms(), actor,
                     op, &c.feed_id);
    if (rc == 0)
        rc = cert_set_status(s, &c, op);
    if (rc == 0)
        *feed_id_out = c.feed_id;
out:
    return tx_finish(s, kind, rc, op);
}

/* ---- change feed ---------------------------------------------------------------------------- */

static int pg_feed_read(struct store *store, int64_t after_id, int max, unsigned opts,
                        int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    struct store_change change;
    PGresult *r = NULL;
    int delivered = 0;
    int rc = 0;
    int i = 0;

    p_i64(&p, after_id);
    p_i64(&p, max);
    /* With STORE_FEED_SKIP_ISSUE the literal "kind <> 1" matches the partial index
     * feed_not_issue (a bound parameter would not let the planner prove it). */
    rc = q(s,
           (opts & STORE_FEED_SKIP_ISSUE) != 0
               ? "SELECT f.id, f.kind, f.at_ms, c.issuer_id, c.serial, c.not_before, c.not_after, "
                 "c.status, c.revoked_at, c.reason, c.invalidity_date, c.feed_id "
                 "FROM feed AS f JOIN certs AS c ON c.issuer_id = f.issuer_id AND c.serial = "
                 "f.serial WHERE f.id > $1 AND f.kind <> 1 ORDER BY f.id LIMIT $2"
               : "SELECT f.id, f.kind, f.at_ms, c.issuer_id, c.serial, c.not_before, c.not_after, "
                 "c.status, c.revoked_at, c.reason, c.invalidity_date, c.feed_id "
                 "FROM feed AS f JOIN certs AS c ON c.issuer_id = f.issuer_id AND c.serial = "
                 "f.serial WHERE f.id > $1 ORDER BY f.id LIMIT $2",
           &p, "feed read", &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&change, 0, sizeof(change));
        change.id = g_i64(r, i, 0);
        change.kind = (int)g_i64(r, i, 1);
        change.at_ms = g_i64(r, i, 2);
        rc = read_cert(s, r, i, 3, &change.cert);
        if (rc != 0)
            break;
        delivered++;
        rc = fn(ctx, &change);
        /* A negative return is the callback's error; a positive one just stops early. */
        if (rc > 0) {
            rc = 0;
            break;
        }
    }
    PQclear(r);
    return rc != 0 ? rc : delivered;
}

static int pg_feed_head(struct store *store, int64_t *id_out)
{
    return q_int(pg_of(store), "SELECT COALESCE(MAX(id), 0) FROM feed", NULL, "feed head", id_out);
}

/* ---- SLA ------------------------------------------------------------------------------------ */

static int pg_sla_mark(struct store *store, int64_t feed_id, int stage, int64_t at_ms)
{
    static const char op[] = "sla mark";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    PGresult *r = NULL;
    int64_t exists = 0;
    int rc = 0;

    p_i64(&p, feed_id);
    p_i64(&p, at_ms);
    rc = q(s,
           stage == STORE_SLA_OCSP
               ? "UPDATE revocations SET ocsp_at_ms = $2 WHERE feed_id = $1 AND ocsp_at_ms IS NULL"
               : "UPDATE revocations SET crl_at_ms = $2 WHERE feed_id = $1 AND crl_at_ms IS NULL",
           &p, op, &r);
    if (rc != 0 || strcmp(PQcmdTuples(r), "1") == 0)
        goto out;
    /* Nothing updated: marked before (the first time stays) or no such revocation. */
    p.n = 1;
    rc = q_int(s, "SELECT count(*) FROM revocations WHERE feed_id = $1", &p, op, &exists);
    if (rc == 0 && exists == 0)
        rc = UTIL_ENOTFOUND;
out:
    PQclear(r);
    return rc;
}

static int pg_sla_mark_upto(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                            int stage, int64_t at_ms)
{
    struct pg_params p = {0};

    p_i64(&p, issuer_id);
    p_i64(&p, up_to_feed_id);
    p_i64(&p, at_ms);
    return q(pg_of(store),
             stage == STORE_SLA_OCSP ? "UPDATE revocations SET ocsp_at_ms = $3 WHERE ocsp_at_ms IS "
                                       "NULL AND feed_id <= $2 AND issuer_id = $1"
                                     : "UPDATE revocations SET crl_at_ms = $3 WHERE crl_at_ms IS "
                                       "NULL AND feed_id <= $2 AND issuer_id = $1",
             &p, "sla mark up to", NULL);
}

static int pg_sla_list(struct store *store, int open_only, int limit,
                       int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    static const char op[] = "sla list";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    struct store_sla_row sla;
    unsigned char *serial = NULL;
    size_t serial_len = 0;
    PGresult *r = NULL;
    int rc = 0;
    int i = 0;

    if (limit > 0)
        p_i64(&p, limit);
    else
        p_text(&p, NULL); /* LIMIT NULL: no limit */
    rc = q(s,
           open_only ? "SELECT feed_id, issuer_id, serial, request_id, received_at_ms, "
                       "committed_at_ms, COALESCE(ocsp_at_ms, 0), COALESCE(crl_at_ms, 0), "
                       "revoked_at, invalidity_date FROM revocations WHERE crl_at_ms IS NULL "
                       "ORDER BY feed_id LIMIT $1"
                     : "SELECT feed_id, issuer_id, serial, request_id, received_at_ms, "
                       "committed_at_ms, COALESCE(ocsp_at_ms, 0), COALESCE(crl_at_ms, 0), "
                       "revoked_at, invalidity_date FROM revocations ORDER BY feed_id DESC "
                       "LIMIT $1",
           &p, op, &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&sla, 0, sizeof(sla));
        sla.feed_id = g_i64(r, i, 0);
        sla.issuer_id = g_i64(r, i, 1);
        rc = g_blob(r, i, 2, &serial, &serial_len);
        if (rc != 0)
            break;
        if (serial_len < 1 || serial_len > STORE_SERIAL_MAX) {
            UTIL_ERROR(STORE_MOD, "%s: %s: revocation %" PRId64 " has a serial of %zu octets", op,
                       s->where, sla.feed_id, serial_len);
            rc = UTIL_ESTORE;
            break;
        }
        memcpy(sla.serial, serial, serial_len);
        sla.serial_len = serial_len;
        PQfreemem(serial);
        serial = NULL;
        sla.request_id = g_text(r, i, 3);
        sla.received_at_ms = g_i64(r, i, 4);
        sla.committed_at_ms = g_i64(r, i, 5);
        sla.ocsp_at_ms = g_i64(r, i, 6);
        sla.crl_at_ms = g_i64(r, i, 7);
        sla.revoked_at = g_i64(r, i, 8);
        sla.invalidity_date = g_i64(r, i, 9);
        rc = fn(ctx, &sla);
    }
    PQfreemem(serial);
    PQclear(r);
    return rc;
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

static int pg_crl_number_next(struct store *store, int64_t issuer_id, int64_t floor,
                              int64_t *number_out)
{
    static const char op[] = "crl number next";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    enum tx_kind kind = 0;
    int64_t number = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    p_i64(&p, issuer_id);
    p_i64(&p, floor);
    rc = q_int(s,
               "INSERT INTO crl_numbers (issuer_id, last_number) "
               "VALUES ($1, GREATEST(1, $2::bigint)) "
               "ON CONFLICT (issuer_id) DO UPDATE SET "
               "last_number = GREATEST(crl_numbers.last_number + 1, $2::bigint) "
               "RETURNING last_number",
               &p, op, &number);
    if (rc == 0 && number <= 0)
        rc = UTIL_ESTORE;
out:
    rc = tx_finish(s, kind, rc, op);
    if (rc == 0)
        *number_out = number;
    return rc;
}

static int pg_crl_save(struct store *store, const struct store_crl_record *crl)
{
    static const char op[] = "crl save";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    enum tx_kind kind = 0;
    int64_t reserved = 0;
    int rc = 0;

    if (crl->der_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc != 0)
        goto out;
    p_i64(&p, crl->issuer_id);
    rc = q_int(s, "SELECT COALESCE(MAX(last_number), 0) FROM crl_numbers WHERE issuer_id = $1", &p,
               op, &reserved);
    if (rc != 0)
        goto out;
    /* Saving a number that was never reserved would let a later reservation hand it out again. */
    if (reserved < crl->number) {
        UTIL_ERROR(STORE_MOD,
                   "crl save: number %" PRId64 " of issuer %" PRId64 " was never reserved",
                   crl->number, crl->issuer_id);
        rc = UTIL_EINVAL;
        goto out;
    }
    p_i64(&p, crl->number);
    p_i64(&p, crl->base_number);
    p_i64(&p, crl->this_update);
    p_i64(&p, crl->next_update);
    p_i64(&p, crl->feed_id);
    p_blob(&p, crl->der, crl->der_len);
    p_i64(&p, util_now_ms());
    rc = q(s,
           "INSERT INTO crl_history (issuer_id, number, base_number, this_update, next_update, "
           "feed_id, der, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
           &p, op, NULL);
out:
    return tx_finish(s, kind, rc, op);
}

static int pg_crl_latest(struct store *store, int64_t issuer_id, int delta,
                         struct store_crl_record *meta_out, unsigned char **der_out)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    unsigned char *blob = NULL;
    unsigned char *der = NULL;
    size_t len = 0;
    int rc = 0;

    /* Without der_out only the length travels: publishers of a cluster poll this to adopt a
     * newer CRL saved by another node, and a CRL may be megabytes. */
    p_i64(&p, issuer_id);
    p_text(&p, der_out != NULL ? "true" : "false");
    rc = q(pg_of(store),
           delta ? "SELECT number, base_number, this_update, next_update, feed_id, "
                   "octet_length(der), CASE WHEN $2::boolean THEN der END FROM crl_history "
                   "WHERE issuer_id = $1 AND base_number <> 0 ORDER BY number DESC LIMIT 1"
                 : "SELECT number, base_number, this_update, next_update, feed_id, "
                   "octet_length(der), CASE WHEN $2::boolean THEN der END FROM crl_history "
                   "WHERE issuer_id = $1 AND base_number = 0 ORDER BY number DESC LIMIT 1",
           &p, "crl latest", &r);
    if (rc != 0)
        goto out;
    if (PQntuples(r) == 0) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    len = (size_t)g_i64(r, 0, 5);
    if (der_out != NULL) {
        rc = g_blob(r, 0, 6, &blob, &len);
        if (rc != 0)
            goto out;
        if (len > 0) {
            der = malloc(len);
            if (der == NULL) {
                rc = UTIL_ENOMEM;
                goto out;
            }
            memcpy(der, blob, len);
        }
    }
    meta_out->issuer_id = issuer_id;
    meta_out->number = g_i64(r, 0, 0);
    meta_out->base_number = g_i64(r, 0, 1);
    meta_out->this_update = g_i64(r, 0, 2);
    meta_out->next_update = g_i64(r, 0, 3);
    meta_out->feed_id = g_i64(r, 0, 4);
    meta_out->der = der;
    meta_out->der_len = len;
    if (der_out != NULL)
        *der_out = der;
    der = NULL;
out:
    free(der);
    PQfreemem(blob);
    PQclear(r);
    return rc;
}

/* ---- TSA ------------------------------------------------------------------------------------ */

/* The upsert's row lock orders reservations of one counter across nodes; blocks never overlap. */
static int pg_tsa_reserve(struct store *store, const char *unit, int64_t count, int64_t floor,
                          int64_t *first_out)
{
    static const char op[] = "tsa reserve";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    enum tx_kind kind = 0;
    PGresult *r = NULL;
    int64_t first = 0;
    int rc = 0;

    if (count >= INT64_MAX - 1 || floor > INT64_MAX - count)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind, PG_NO_LOCK);
    if (rc != 0)
        goto out;
    p_text(&p, unit);
    p_i64(&p, count);
    p_i64(&p, floor);
    rc = q(s,
           "INSERT INTO tsa_serials (unit, next_serial) VALUES ($1, $3::bigint + $2::bigint) "
           "ON CONFLICT (unit) DO UPDATE SET next_serial = "
           "greatest(tsa_serials.next_serial, $3::bigint) + $2::bigint "
           "WHERE greatest(tsa_serials.next_serial, $3::bigint) <= 9223372036854775807 - "
           "$2::bigint RETURNING next_serial - $2::bigint",
           &p, op, &r);
    if (rc != 0)
        goto out;
    if (PQntuples(r) == 0) {
        UTIL_ERROR(STORE_MOD, "tsa reserve: serials of unit %s would overflow 64 bits", unit);
        rc = UTIL_EINVAL;
        goto out;
    }
    first = g_i64(r, 0, 0);
out:
    PQclear(r);
    rc = tx_finish(s, kind, rc, op);
    if (rc == 0)
        *first_out = first;
    return rc;
}

static int copy_text(const char *text, char *out, size_t out_len)
{
    size_t len = text != NULL ? strlen(text) : 0;

    if (text == NULL || len >= out_len)
        return 0;
    memcpy(out, text, len + 1);
    return 1;
}

static int pg_tsa_token_get(struct store *store, const unsigned char *cert_id, const char *unit,
                            int64_t serial, struct store_tsa_record *out)
{
    struct pg_params p = {0};
    PGresult *r = NULL;
    unsigned char *imprint = NULL;
    size_t len = 0;
    int rc = 0;

    if (strlen(unit) >= sizeof(out->unit))
        return UTIL_ENOTFOUND; /* no unit has such a name */
    p_text(&p, unit);
    p_i64(&p, serial);
    p_blob(&p, cert_id, cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0);
    rc = q(pg_of(store),
           "SELECT gen_time_ms, policy, imprint_alg, imprint FROM tsa_tokens WHERE serial = $2 "
           "AND ((cert_id = $3 AND cert_id <> '\\x'::bytea) OR (cert_id = '\\x'::bytea AND "
           "unit = $1)) ORDER BY cert_id DESC LIMIT 1",
           &p, "tsa token get", &r);
    if (rc != 0)
        goto out;
    if (PQntuples(r) == 0) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    (void)snprintf(out->unit, sizeof(out->unit), "%s", unit); /* fits: checked above */
    out->serial = serial;
    out->gen_time_ms = g_i64(r, 0, 0);
    rc = g_blob(r, 0, 3, &imprint, &len);
    if (rc != 0)
        goto out;
    if (!copy_text(g_text(r, 0, 1), out->policy, sizeof(out->policy)) ||
        !copy_text(g_text(r, 0, 2), out->imprint_alg, sizeof(out->imprint_alg)) ||
        len > sizeof(out->imprint)) {
        UTIL_ERROR(STORE_MOD, "tsa token get: the record of %s/%lld does not fit", unit,
                   (long long)serial);
        rc = UTIL_EINVAL;
        goto out;
    }
    if (len > 0)
        memcpy(out->imprint, imprint, len);
    out->imprint_len = len;
out:
    PQfreemem(imprint);
    PQclear(r);
    return rc;
}

static int pg_tsa_log(struct store *store, const struct store_tsa_token *tokens, size_t n)
{
    static const char op[] = "tsa log";
    struct pg *s = pg_of(store);
    enum tx_kind kind = 0;
    size_t i = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind, PG_NO_LOCK);
    for (i = 0; rc == 0 && i < n; i++) {
        const struct store_tsa_token *t = &tokens[i];
        struct pg_params p = {0};

        if (t->imprint_len > INT32_MAX) {
            rc = UTIL_EINVAL;
            break;
        }
        p_text(&p, t->unit);
        p_i64(&p, t->serial);
        p_i64(&p, t->gen_time_ms);
        p_text(&p, t->policy);
        p_text(&p, t->imprint_alg);
        p_blob(&p, t->imprint, t->imprint_len);
        p_blob(&p, t->cert_id, t->cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0);
        rc = q(s,
               "INSERT INTO tsa_tokens (unit, serial, gen_time_ms, policy, imprint_alg, imprint, "
               "cert_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
               &p, op, NULL);
        if (rc != 0)
            UTIL_ERROR(STORE_MOD,
                       "tsa log: token %s/%" PRId64 " failed; none of the %zu tokens of this "
                       "group is recorded",
                       t->unit, t->serial, n);
    }
    return tx_finish(s, kind, rc, op);
}

/* ---- audit ---------------------------------------------------------------------------------- */

static int pg_audit_append(struct store *store, const struct store__audit_new *rec)
{
    static const char op[] = "audit append";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    struct store__audit_row row;
    unsigned char prev[STORE_AUDIT_HASH_LEN];
    unsigned char hash[STORE_AUDIT_HASH_LEN];
    unsigned char *last_hash = NULL;
    size_t last_hash_len = 0;
    PGresult *r = NULL;
    enum tx_kind kind = 0;
    int64_t last_id = 0;
    int64_t seq = 0;
    int has_changes = rec->feed_first > 0 && rec->changes != NULL;
    int rc = 0;

    memset(prev, 0, sizeof(prev));
    memset(&row, 0, sizeof(row));
    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc == 0)
        rc = q(s, "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", NULL, op, &r);
    if (rc != 0)
        goto out;
    if (PQntuples(r) > 0) {
        rc = g_blob(r, 0, 1, &last_hash, &last_hash_len);
        if (rc != 0)
            goto out;
        if (last_hash_len != STORE_AUDIT_HASH_LEN) {
            UTIL_ERROR(STORE_MOD,
                       "audit append: %s: the last record's hash is damaged; run the audit "
                       "verification",
                       s->where);
            rc = UTIL_ESTORE;
            goto out;
        }
        last_id = g_i64(r, 0, 0);
        memcpy(prev, last_hash, STORE_AUDIT_HASH_LEN);
    }
    /* Continue after the highest id ever used, so that a removed tail stays visible as a gap. */
    rc = q_int(s, "SELECT value FROM pkiva_counters WHERE name = 'audit'", NULL, op, &seq);
    if (rc != 0)
        goto out;
    row.id = (seq > last_id ? seq : last_id) + 1;
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
    p_i64(&p, row.id);
    p_i64(&p, row.at_ms);
    p_text(&p, row.actor);
    p_text(&p, row.action);
    p_text(&p, row.detail);
    p_blob(&p, prev, sizeof(prev));
    p_blob(&p, hash, sizeof(hash));
    p_i64(&p, row.feed_first);
    p_i64(&p, row.feed_last);
    if (has_changes)
        p_blob(&p, row.changes, row.changes_len);
    else
        p_text(&p, NULL);
    rc = q(s,
           "INSERT INTO audit (id, at_ms, actor, action, detail, prev_hash, hash, version, "
           "feed_first, feed_last, changes) VALUES ($1, $2, $3, $4, $5, $6, $7, 2, $8, $9, $10)",
           &p, op, NULL);
    if (rc == 0) {
        memset(&p, 0, sizeof(p));
        p_i64(&p, row.id);
        rc = q(s, "UPDATE pkiva_counters SET value = $1 WHERE name = 'audit'", &p, op, NULL);
    }
out:
    PQfreemem(last_hash);
    PQclear(r);
    return tx_finish(s, kind, rc, op);
}

static int pg_audit_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__audit_row *row), void *ctx,
                         int64_t *last_id_out)
{
    static const char op[] = "audit walk";
    struct pg *s = pg_of(store);
    struct store__audit_row a;
    unsigned char *prev = NULL, *hash = NULL, *changes = NULL;
    PGresult *r = NULL;
    int opened = 0;
    int rc = 0;
    int i = 0;

    *last_id_out = 0;
    /* One snapshot for the rows and the counter, so that a concurrent append cannot look like a
     * removed tail. */
    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = q(s,
               "SELECT id, at_ms, actor, action, detail, prev_hash, hash, version, feed_first, "
               "feed_last, changes FROM audit ORDER BY id",
               NULL, op, &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&a, 0, sizeof(a));
        a.id = g_i64(r, i, 0);
        a.at_ms = g_i64(r, i, 1);
        a.actor = g_text(r, i, 2);
        a.action = g_text(r, i, 3);
        a.detail = g_text(r, i, 4);
        rc = g_blob(r, i, 5, &prev, &a.prev_hash_len);
        if (rc == 0)
            rc = g_blob(r, i, 6, &hash, &a.hash_len);
        if (rc == 0)
            rc = g_blob(r, i, 10, &changes, &a.changes_len);
        a.prev_hash = prev;
        a.hash = hash;
        a.changes = changes;
        a.version = (int)g_i64(r, i, 7);
        a.feed_first = g_i64(r, i, 8);
        a.feed_last = g_i64(r, i, 9);
        if (rc == 0)
            rc = fn(ctx, &a);
        PQfreemem(prev);
        PQfreemem(hash);
        PQfreemem(changes);
        prev = hash = changes = NULL;
    }
    if (rc == 0)
        rc = q_int(s, "SELECT value FROM pkiva_counters WHERE name = 'audit'", NULL, op,
                   last_id_out);
    PQclear(r);
    rx_finish(s, opened, op);
    return rc;
}

static int pg_change_walk(struct store *store, int64_t first, int64_t last,
                          int (*fn)(void *ctx, const struct store__change_row *row), void *ctx)
{
    struct pg_params p = {0};
    struct store__change_row ch;
    unsigned char *serial = NULL;
    PGresult *r = NULL;
    int rc = 0;
    int i = 0;

    p_i64(&p, first);
    p_i64(&p, last);
    rc = q(pg_of(store),
           "SELECT f.id, f.kind, f.issuer_id, f.serial, r.feed_id IS NOT NULL, "
           "COALESCE(r.reason, 0), COALESCE(r.revoked_at, 0), COALESCE(r.invalidity_date, 0) "
           "FROM feed AS f LEFT JOIN revocations AS r ON r.feed_id = f.id "
           "WHERE f.id BETWEEN $1 AND $2 ORDER BY f.id",
           &p, "change walk", &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&ch, 0, sizeof(ch));
        ch.id = g_i64(r, i, 0);
        ch.kind = (int)g_i64(r, i, 1);
        ch.issuer_id = g_i64(r, i, 2);
        rc = g_blob(r, i, 3, &serial, &ch.serial_len);
        ch.serial = serial;
        ch.has_revocation = (int)g_i64(r, i, 4);
        ch.reason = (int)g_i64(r, i, 5);
        ch.revoked_at = g_i64(r, i, 6);
        ch.invalidity_date = g_i64(r, i, 7);
        if (rc == 0)
            rc = fn(ctx, &ch);
        PQfreemem(serial);
        serial = NULL;
    }
    PQclear(r);
    return rc;
}

static int pg_state_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__state_row *row), void *ctx)
{
    static const char op[] = "state walk";
    struct pg *s = pg_of(store);
    struct store__state_row st;
    PGresult *r = NULL;
    int opened = 0;
    int rc = 0;
    int i = 0;

    /* TODO: one result in memory; page it like cert_iterate before verifying stores of millions
     * of certificates on PostgreSQL. */
    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = q(s,
               "SELECT c.issuer_id, c.serial, c.not_before, c.not_after, c.status, c.revoked_at, "
               "c.reason, c.invalidity_date, c.feed_id, COALESCE(f.id, 0), COALESCE(f.kind, 0), "
               "r.feed_id IS NOT NULL, COALESCE(r.reason, 0), COALESCE(r.revoked_at, 0), "
               "COALESCE(r.invalidity_date, 0) FROM certs AS c LEFT JOIN feed AS f "
               "ON f.issuer_id = c.issuer_id AND f.serial = c.serial "
               "LEFT JOIN revocations AS r ON r.feed_id = f.id "
               "ORDER BY c.issuer_id, c.serial, f.id",
               NULL, op, &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&st, 0, sizeof(st));
        rc = read_cert(s, r, i, 0, &st.cert);
        if (rc != 0)
            break;
        st.change.id = g_i64(r, i, 9);
        st.change.kind = (int)g_i64(r, i, 10);
        st.change.issuer_id = st.cert.issuer_id;
        st.change.serial = st.cert.serial;
        st.change.serial_len = st.cert.serial_len;
        st.change.has_revocation = (int)g_i64(r, i, 11);
        st.change.reason = (int)g_i64(r, i, 12);
        st.change.revoked_at = g_i64(r, i, 13);
        st.change.invalidity_date = g_i64(r, i, 14);
        rc = fn(ctx, &st);
    }
    PQclear(r);
    rx_finish(s, opened, op);
    return rc;
}

static int pg_orphans(struct store *store, int64_t *change_id, int64_t *revocation_id,
                      int64_t *changes)
{
    static const char op[] = "audit orphans";
    struct pg *s = pg_of(store);
    int opened = 0;
    int rc = 0;

    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = q_int(s,
                   "SELECT COALESCE(MIN(f.id), 0) FROM feed AS f WHERE NOT EXISTS "
                   "(SELECT 1 FROM certs AS c WHERE c.issuer_id = f.issuer_id AND "
                   "c.serial = f.serial)",
                   NULL, op, change_id);
    if (rc == 0)
        rc = q_int(s,
                   "SELECT COALESCE(MIN(r.feed_id), 0) FROM revocations AS r LEFT JOIN feed AS f "
                   "ON f.id = r.feed_id WHERE f.id IS NULL OR f.kind <> 2 OR "
                   "f.issuer_id <> r.issuer_id OR f.serial <> r.serial",
                   NULL, op, revocation_id);
    if (rc == 0)
        rc = q_int(s, "SELECT count(*) FROM feed", NULL, op, changes);
    rx_finish(s, opened, op);
    return rc;
}

/* As seal_read_pending in store_sqlite.c. */
static int seal_read_pending(struct pg *s, int max, int64_t *sealed_last, unsigned char *hashes,
                             size_t *n, const char *op)
{
    struct pg_params p = {0};
    unsigned char *hash = NULL;
    size_t len = 0;
    PGresult *r = NULL;
    int rc = 0;
    int i = 0;

    *n = 0;
    rc = q_int(s, "SELECT COALESCE(MAX(last_id), 0) FROM audit_seals", NULL, op, sealed_last);
    if (rc != 0)
        return rc;
    p_i64(&p, *sealed_last);
    p_i64(&p, max);
    rc = q(s, "SELECT id, hash FROM audit WHERE id > $1 ORDER BY id LIMIT $2", &p, op, &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        rc = g_blob(r, i, 1, &hash, &len);
        if (rc != 0)
            break;
        if (g_i64(r, i, 0) != *sealed_last + 1 + (int64_t)*n || len != STORE_AUDIT_HASH_LEN) {
            UTIL_ERROR(STORE_MOD,
                       "audit seal: %s: record %" PRId64
                       " is missing or damaged; not sealing (run pkiva audit verify)",
                       s->where, *sealed_last + 1 + (int64_t)*n);
            rc = UTIL_ESTORE;
            break;
        }
        memcpy(hashes + *n * STORE_AUDIT_HASH_LEN, hash, STORE_AUDIT_HASH_LEN);
        (*n)++;
        PQfreemem(hash);
        hash = NULL;
    }
    PQfreemem(hash);
    PQclear(r);
    return rc;
}

/* As sq_seal_pending: signs outside the writer lock, inserts under it only if nothing changed. */
static int pg_seal_pending(struct store *store, int max,
                           int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                     size_t n, struct store__seal_row *seal),
                           void *ctx, int64_t *sealed_out)
{
    static const char op[] = "audit seal";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    struct store__seal_row seal;
    unsigned char *hashes = NULL;
    unsigned char *again = NULL;
    enum tx_kind kind = 0;
    int64_t sealed_last = 0;
    int64_t sealed_last_again = 0;
    size_t n = 0;
    size_t n_again = 0;
    int opened = 0;
    int rc = 0;

    *sealed_out = 0;
    memset(&seal, 0, sizeof(seal));
    hashes = malloc(2 * (size_t)max * STORE_AUDIT_HASH_LEN);
    if (hashes == NULL)
        return UTIL_ENOMEM;
    again = hashes + (size_t)max * STORE_AUDIT_HASH_LEN;
    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = seal_read_pending(s, max, &sealed_last, hashes, &n, op);
    rx_finish(s, opened, op);
    if (rc != 0 || n == 0)
        goto out;
    rc = fn(ctx, sealed_last + 1, hashes, n, &seal);
    if (rc != 0)
        goto out;
    rc = tx_start(s, op, &kind, PG_WRITER_LOCK);
    if (rc == 0)
        rc = seal_read_pending(s, max, &sealed_last_again, again, &n_again, op);
    if (rc != 0)
        goto out;
    if (sealed_last_again != sealed_last || n_again < n ||
        memcmp(again, hashes, n * STORE_AUDIT_HASH_LEN) != 0) {
        UTIL_INFO(STORE_MOD, "audit seal: %s: sealed or changed meanwhile; sealing again later",
                  s->where);
        goto out;
    }
    p_i64(&p, seal.first_id);
    p_i64(&p, seal.last_id);
    p_i64(&p, seal.at_ms);
    p_blob(&p, seal.cert_sha256, seal.cert_sha256_len);
    p_text(&p, seal.md);
    p_i64(&p, seal.rsa_pss);
    p_blob(&p, seal.hashes, seal.hashes_len);
    p_blob(&p, seal.signature, seal.signature_len);
    rc = q(s,
           "INSERT INTO audit_seals (first_id, last_id, at_ms, cert_sha256, md, rsa_pss, hashes, "
           "signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
           &p, op, NULL);
    if (rc == 0)
        *sealed_out = (int64_t)n;
out:
    rc = tx_finish(s, kind, rc, op);
    free(hashes);
    if (rc != 0)
        *sealed_out = 0;
    return rc;
}

static int pg_seal_walk(struct store *store,
                        int (*fn)(void *ctx, const struct store__seal_row *row), void *ctx)
{
    struct store__seal_row a;
    unsigned char *cert = NULL, *hashes = NULL, *sig = NULL;
    PGresult *r = NULL;
    int rc = 0;
    int i = 0;

    rc = q(pg_of(store),
           "SELECT id, first_id, last_id, at_ms, cert_sha256, md, rsa_pss, hashes, signature "
           "FROM audit_seals ORDER BY first_id, id",
           NULL, "audit seal walk", &r);
    for (i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&a, 0, sizeof(a));
        a.id = g_i64(r, i, 0);
        a.first_id = g_i64(r, i, 1);
        a.last_id = g_i64(r, i, 2);
        a.at_ms = g_i64(r, i, 3);
        rc = g_blob(r, i, 4, &cert, &a.cert_sha256_len);
        a.md = g_text(r, i, 5) != NULL ? g_text(r, i, 5) : "";
        a.rsa_pss = (int)g_i64(r, i, 6);
        if (rc == 0)
            rc = g_blob(r, i, 7, &hashes, &a.hashes_len);
        if (rc == 0)
            rc = g_blob(r, i, 8, &sig, &a.signature_len);
        a.cert_sha256 = cert;
        a.hashes = hashes;
        a.signature = sig;
        if (rc == 0)
            rc = fn(ctx, &a);
        PQfreemem(cert);
        PQfreemem(hashes);
        PQfreemem(sig);
        cert = hashes = sig = NULL;
    }
    PQclear(r);
    return rc;
}

static int pg_unsealed(struct store *store, int64_t *count_out)
{
    return q_int(pg_of(store),
                 "SELECT (SELECT COALESCE(MAX(id), 0) FROM audit) - "
                 "(SELECT COALESCE(MAX(last_id), 0) FROM audit_seals)",
                 NULL, "audit unsealed", count_out);
}

/* Bounds a lease in time: PostgreSQL itself ends this session once it has been idle (or idle in a
 * transaction) for ttl_ms, which releases its advisory locks. A holder that hangs with its socket
 * open (SIGSTOP, a stuck thread) therefore loses the lease after ttl_ms without anyone else having
 * to judge it dead, and finds its connection gone when it runs again. Set before the lock is
 * tried, so that a lock is never held without the bound; the settings go with the session.
 * DESIGN: a lease row with an expiry would need every holder's clock and a renewal write per
 * turn; the server's own idle timers (PostgreSQL 14 and later) need neither. */
static int pg_lease_bound(struct pg *s, int64_t ttl_ms)
{
    struct pg_params p = {0};
    char ms[24];

    if (ttl_ms <= 0)
        return 0;
    (void)snprintf(ms, sizeof(ms), "%lld", (long long)ttl_ms); /* fits */
    p_text(&p, ms);
    return q(s,
             "SELECT set_config('idle_session_timeout', $1, false), "
             "set_config('idle_in_transaction_session_timeout', $1, false)",
             &p, "lease", NULL);
}

/* A lease is a session-level advisory lock: PostgreSQL releases it when the holder's connection
 * ends (process death closes the socket at once; a silent network loss after the server's TCP
 * keepalive; a hang after ttl_ms, pg_lease_bound). One lease per connection, which is all the
 * publisher needs. */
static int pg_lease(struct store *store, int64_t key, int64_t ttl_ms, int *held_out)
{
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    int64_t got = 0;
    int rc = 0;

    *held_out = 0;
    rc = pg_alive(s, "lease");
    if (rc != 0)
        return rc;
    if (s->lease_key == key) {
        /* A round trip: it renews the lease (the session's idle timer) and finds a session that
         * the server ended (the caller is told; the next call reconnects, without the lease). */
        rc = q(s, "SELECT 1", NULL, "lease", NULL);
        *held_out = rc == 0;
        return rc;
    }
    if (s->lease_key != 0) {
        UTIL_ERROR(STORE_MOD, "lease: this connection already holds another lease");
        return UTIL_EINVAL;
    }
    rc = pg_lease_bound(s, ttl_ms);
    if (rc != 0)
        return rc;
    p_i64(&p, key);
    rc = q_int(s, "SELECT pg_try_advisory_lock($1)::integer", &p, "lease", &got);
    if (rc == 0 && got) {
        s->lease_key = key;
        *held_out = 1;
    }
    return rc;
}

/* ---- cluster nodes -------------------------------------------------------------------------- */

static int pg_node_report(struct store *store, const char *name, int64_t applied_feed_id,
                          int64_t at_ms, int64_t *id_out)
{
    struct pg_params p = {0};

    p_text(&p, name);
    p_i64(&p, applied_feed_id);
    p_i64(&p, at_ms);
    /* No writer lock: a node's own row orders nothing, and the report must not wait behind an
     * import holding the lock for seconds. */
    return q_int(pg_of(store),
                 "INSERT INTO nodes (name, applied_feed_id, heartbeat_ms) VALUES ($1, $2, $3) "
                 "ON CONFLICT (name) DO UPDATE SET applied_feed_id = excluded.applied_feed_id, "
                 "heartbeat_ms = excluded.heartbeat_ms RETURNING id",
                 &p, "node report", id_out);
}

static int pg_node_list(struct store *store, int (*fn)(void *ctx, const struct store_node *node),
                        void *ctx)
{
    struct pg *s = pg_of(store);
    struct store_node node;
    PGresult *r = NULL;
    int rc = q(s, "SELECT id, name, applied_feed_id, heartbeat_ms FROM nodes ORDER BY id", NULL,
               "node list", &r);

    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        memset(&node, 0, sizeof(node));
        node.id = g_i64(r, i, 0);
        (void)snprintf(node.name, sizeof(node.name), "%s", PQgetvalue(r, i, 1)); /* bounded */
        node.applied_feed_id = g_i64(r, i, 2);
        node.heartbeat_ms = g_i64(r, i, 3);
        rc = fn(ctx, &node);
    }
    PQclear(r);
    return rc;
}

/* ---- bulk registration (COPY) --------------------------------------------------------------- */

/* DESIGN (bulk registration). One round trip per certificate bounds an import by the network
 * latency (4 600-7 000 certificates/s measured). cert_add_bulk instead streams a batch into a
 * temporary staging table with COPY in binary format (no escaping, no parsing of text numbers)
 * and registers it with one INSERT .. SELECT whose data-modifying CTEs write the DERs, the feed,
 * the certificates and the revocations, under the writer lock the caller's transaction holds, so
 * feed ids are still taken in commit order. The staging table is per session (ON COMMIT DELETE
 * ROWS) and emptied first; the whole step runs in a savepoint, so a bad row (a value PostgreSQL
 * refuses, e.g. text that is not UTF-8) undoes the step alone and the caller rolls back. */
#define PG_COPY_CHUNK (256 * 1024)
#define PG_BULK_FIELDS 14

struct copy_buf {
    unsigned char *data;
    size_t len, cap;
    int oom;
};

static void cb_put(struct copy_buf *b, const void *data, size_t len)
{
    if (b->oom)
        return;
    if (b->len + len > b->cap) {
        size_t cap = b->cap != 0 ? b->cap : PG_COPY_CHUNK * 2;
        unsigned char *grown = NULL;
        while (cap < b->len + len)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL) {
            b->oom = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
}

static void cb_be(struct copy_buf *b, uint64_t v, int bytes)
{
    unsigned char out[8];
    for (int i = 0; i < bytes; i++)
        out[i] = (unsigned char)(v >> (8 * (bytes - 1 - i)));
    cb_put(b, out, (size_t)bytes);
}

static void cb_i64(struct copy_buf *b, int64_t v)
{
    cb_be(b, 8, 4);
    cb_be(b, (uint64_t)v, 8);
}

static void cb_i32(struct copy_buf *b, int32_t v)
{
    cb_be(b, 4, 4);
    cb_be(b, (uint32_t)v, 4);
}

static void cb_bytes(struct copy_buf *b, const void *data, size_t len) /* NULL: SQL NULL */
{
    if (data == NULL) {
        cb_be(b, 0xffffffffu, 4);
        return;
    }
    cb_be(b, (uint32_t)len, 4);
    cb_put(b, data, len);
}

static void cb_text(struct copy_buf *b, const char *text)
{
    cb_bytes(b, text, text != NULL ? strlen(text) : 0);
}

/* One staging row in binary COPY format (the column order of bulk_stage_sql). */
static void cb_row(struct copy_buf *b, size_t seq, const struct store__bulk_row *row,
                   int64_t now_ms)
{
    const struct store_cert_new *c = &row->cert;
    const struct store_revocation *rev = &row->rev;
    unsigned char revoked = row->revoked ? 1 : 0;

    cb_be(b, PG_BULK_FIELDS, 2);
    cb_i32(b, (int32_t)seq);
    cb_i64(b, c->issuer_id);
    cb_bytes(b, c->serial, c->serial_len);
    cb_i64(b, c->not_before);
    cb_i64(b, c->not_after);
    cb_text(b, c->subject);
    cb_bytes(b, c->cert_der != NULL && c->cert_len > 0 ? c->cert_der : NULL, c->cert_len);
    cb_bytes(b, &revoked, 1);
    cb_i32(b, row->revoked ? rev->reason : -1);
    cb_i64(b, row->revoked ? (rev->revoked_at != 0 ? rev->revoked_at : now_ms / 1000) : 0);
    cb_i64(b, row->revoked ? rev->invalidity_date : 0);
    cb_text(b, row->revoked ? rev->request_id : NULL);
    cb_i64(b, row->revoked && rev->received_at_ms != 0 ? rev->received_at_ms : now_ms);
    cb_text(b, row->revoked ? rev->actor : NULL);
}

static const char bulk_stage_sql[] =
    "CREATE TEMP TABLE IF NOT EXISTS pkiva_import (seq integer, issuer_id bigint, serial bytea,"
    " not_before bigint, not_after bigint, subject text, der bytea, revoked boolean,"
    " reason integer, revoked_at bigint, invalidity bigint, request_id text, received bigint,"
    " actor text) ON COMMIT DELETE ROWS; TRUNCATE pkiva_import";

/* The rows whose certificate is not stored yet get feed ids (and DER ids), in row order as the
 * staging table is scanned (no sort: the caller sends no repeats); everything is written from
 * them; their seqs come back. $1: the time of the changes. */
static const char bulk_insert_sql[] =
    "WITH fresh AS MATERIALIZED ("
    "  SELECT s.*, nextval('feed_ids') AS feed_id,"
    "   CASE WHEN s.der IS NOT NULL THEN nextval('cert_ders_id_seq') END AS der_id"
    "  FROM pkiva_import AS s WHERE NOT EXISTS (SELECT 1 FROM certs AS c"
    "   WHERE c.issuer_id = s.issuer_id AND c.serial = s.serial)),"
    " ders AS (INSERT INTO cert_ders (id, der) SELECT der_id, der FROM fresh"
    "  WHERE der_id IS NOT NULL),"
    " feeds AS (INSERT INTO feed (id, kind, issuer_id, serial, at_ms, actor)"
    "  SELECT feed_id, CASE WHEN revoked THEN 2 ELSE 1 END, issuer_id, serial, $1,"
    "   CASE WHEN revoked THEN actor END FROM fresh),"
    " added AS (INSERT INTO certs (issuer_id, serial, not_before, not_after, status, revoked_at,"
    "  reason, invalidity_date, feed_id, subject, der_id)"
    "  SELECT issuer_id, serial, not_before, not_after, CASE WHEN revoked THEN 1 ELSE 0 END,"
    "   CASE WHEN revoked THEN revoked_at ELSE 0 END, CASE WHEN revoked THEN reason ELSE -1 END,"
    "   CASE WHEN revoked THEN invalidity ELSE 0 END, feed_id, subject, der_id FROM fresh),"
    " revs AS (INSERT INTO revocations (feed_id, issuer_id, serial, reason, revoked_at,"
    "  invalidity_date, request_id, received_at_ms, committed_at_ms, actor)"
    "  SELECT feed_id, issuer_id, serial, reason, revoked_at, invalidity, request_id, received,"
    "   $1, COALESCE(actor, 'unknown') FROM fresh WHERE revoked)"
    " SELECT seq FROM fresh";

/* Sends what b holds as COPY data and empties it. */
static int copy_flush(struct pg *s, struct copy_buf *b)
{
    if (b->oom)
        return UTIL_ENOMEM;
    if (b->len > 0 && PQputCopyData(s->conn, (const char *)b->data, (int)b->len) != 1)
        return pg_err(s, NULL, "bulk copy");
    b->len = 0;
    return 0;
}

/* Streams the rows into the staging table: COPY .. FROM STDIN, the data, the end, the result. */
static int bulk_copy(struct pg *s, const struct store__bulk_row *rows, size_t n, int64_t now_ms)
{
    static const char header[] = "PGCOPY\n\377\r\n";
    struct copy_buf b = {0};
    PGresult *r = NULL;
    int started = 0;
    int rc = 0;

    r = PQexec(s->conn, "COPY pkiva_import FROM STDIN (FORMAT binary)");
    if (r == NULL || PQresultStatus(r) != PGRES_COPY_IN) {
        rc = pg_err(s, r, "bulk copy");
        goto out;
    }
    started = 1;
    cb_put(&b, header, sizeof(header)); /* 11 bytes with the final NUL */
    cb_be(&b, 0, 4);                    /* flags */
    cb_be(&b, 0, 4);                    /* header extension length */
    for (size_t i = 0; rc == 0 && i < n; i++) {
        cb_row(&b, i, &rows[i], now_ms);
        if (b.len >= PG_COPY_CHUNK)
            rc = copy_flush(s, &b);
    }
    cb_be(&b, 0xffff, 2); /* trailer: -1 fields */
    if (rc == 0)
        rc = copy_flush(s, &b);
    started = 0;
    if (PQputCopyEnd(s->conn, rc != 0 ? "aborted by pkiva" : NULL) != 1 && rc == 0)
        rc = pg_err(s, NULL, "bulk copy");
    PQclear(r);
    r = PQgetResult(s->conn);
    if (rc == 0 && (r == NULL || PQresultStatus(r) != PGRES_COMMAND_OK))
        rc = pg_err(s, r, "bulk copy");
out:
    if (started)
        (void)PQputCopyEnd(s->conn, "aborted by pkiva"); /* the error above is the one to report */
    PQclear(r);
    while ((r = PQgetResult(s->conn)) != NULL)
        PQclear(r);
    free(b.data);
    return rc;
}

static int pg_cert_add_bulk(struct store *store, const struct store__bulk_row *rows, size_t n,
                            unsigned char *created)
{
    static const char op[] = "cert add bulk";
    struct pg *s = pg_of(store);
    struct pg_params p = {0};
    PGresult *r = NULL;
    enum tx_kind kind = 0;
    int64_t now_ms = 0;
    int rc = 0;

    memset(created, 0, n);
    if (n == 0)
        return 0;
    if (n > INT32_MAX || PQtransactionStatus(s->conn) != PQTRANS_INTRANS) {
        UTIL_ERROR(STORE_MOD, "%s: needs an open transaction and at most 2^31 rows", op);
        return UTIL_EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        if (rows[i].cert.cert_len > INT32_MAX)
            return UTIL_EINVAL;
    rc = tx_start(s, op, &kind, PG_NO_LOCK); /* a savepoint: the caller holds the writer lock */
    if (rc == 0)
        rc = q(s, bulk_stage_sql, NULL, op, NULL);
    now_ms = util_now_ms();
    if (rc == 0)
        rc = bulk_copy(s, rows, n, now_ms);
    if (rc != 0)
        goto out;
    p_i64(&p, now_ms);
    rc = q(s, bulk_insert_sql, &p, op, &r);
    for (int i = 0; rc == 0 && i < PQntuples(r); i++) {
        int64_t seq = g_i64(r, i, 0);
        if (seq >= 0 && (size_t)seq < n)
            created[seq] = 1;
    }
    /* The directory's search index, as pg_cert_add keeps it: one statement per certificate that
     * came with its DER (an index.txt import has none, and stays one COPY a batch). */
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (created[i] && rows[i].cert.cert_der != NULL && rows[i].cert.cert_len > 0)
            rc = store__pg_search_index(store, rows[i].cert.issuer_id, rows[i].cert.serial,
                                        rows[i].cert.serial_len, rows[i].cert.cert_der,
                                        rows[i].cert.cert_len);
out:
    PQclear(r);
    return tx_finish(s, kind, rc, op);
}

static const struct store__ops pg_ops = {
    .name = "postgresql",
    .close = pg_close,
    .ping = pg_ping,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .issuer_put = pg_issuer_put,
    .issuer_get = pg_issuer_get,
    .issuer_list = pg_issuer_list,
    .cert_add = pg_cert_add,
    .cert_get = pg_cert_get,
    .cert_der = pg_cert_der,
    .cert_iterate = pg_cert_iterate,
    .revoke = pg_revoke,
    .unrevoke = pg_unrevoke,
    .feed_read = pg_feed_read,
    .feed_head = pg_feed_head,
    .sla_mark = pg_sla_mark,
    .sla_mark_upto = pg_sla_mark_upto,
    .sla_list = pg_sla_list,
    .crl_number_next = pg_crl_number_next,
    .crl_save = pg_crl_save,
    .crl_latest = pg_crl_latest,
    .tsa_reserve = pg_tsa_reserve,
    .tsa_log = pg_tsa_log,
    .tsa_token_get = pg_tsa_token_get,
    .audit_append = pg_audit_append,
    .audit_walk = pg_audit_walk,
    .change_walk = pg_change_walk,
    .state_walk = pg_state_walk,
    .orphans = pg_orphans,
    .seal_pending = pg_seal_pending,
    .seal_walk = pg_seal_walk,
    .unsealed = pg_unsealed,
    .cert_search = store__pg_cert_search,
    .lease = pg_lease,
    .node_report = pg_node_report,
    .node_list = pg_node_list,
    .cert_add_bulk = pg_cert_add_bulk,
};

/* ---- for the other files of the backend (store_pg_int.h) ------------------------------------ */

void store__pg_arg_i64(struct store__pg_args *a, int64_t v)
{
    (void)snprintf(a->text[a->n], sizeof(a->text[a->n]), "%" PRId64, v); /* always fits */
    a->values[a->n] = a->text[a->n];
    a->lengths[a->n] = 0;
    a->formats[a->n] = 0;
    a->n++;
}

void store__pg_arg_text(struct store__pg_args *a, const char *v)
{
    a->values[a->n] = v;
    a->lengths[a->n] = 0;
    a->formats[a->n] = 0;
    a->n++;
}

void store__pg_arg_blob(struct store__pg_args *a, const void *v, size_t len)
{
    a->values[a->n] = v != NULL ? (const char *)v : ""; /* a zero-length value is not NULL */
    a->lengths[a->n] = (int)len;
    a->formats[a->n] = 1;
    a->n++;
}

int store__pg_exec(struct store *store, const char *sql, const struct store__pg_args *a,
                   const char *op, PGresult **res)
{
    struct pg_params p = {0};

    if (a == NULL)
        return q(pg_of(store), sql, NULL, op, res);
    p.n = a->n;
    for (int i = 0; i < a->n; i++) {
        p.values[i] = a->values[i];
        p.lengths[i] = a->lengths[i];
        p.formats[i] = a->formats[i];
    }
    return q(pg_of(store), sql, &p, op, res);
}

const char *store__pg_where(struct store *store)
{
    return pg_of(store)->where;
}

int store__pg_read_cert(struct store *store, const PGresult *r, int row, int first,
                        struct store_cert *out)
{
    return read_cert(pg_of(store), r, row, first, out);
}

int store__pg_blob(const PGresult *r, int row, int col, unsigned char **out, size_t *len)
{
    return g_blob(r, row, col, out, len);
}

int64_t store__pg_i64(const PGresult *r, int row, int col)
{
    return g_i64(r, row, col);
}
