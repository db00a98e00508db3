/* SPDX-License-Identifier: Apache-2.0 */
/* store_sqlite.c: the SQLite backend of the store: schema and its migrations, the connection
 * settings (WAL, synchronous=FULL, foreign keys, busy timeout), the per-connection cache of
 * prepared statements, transactions that nest through savepoints, and the mapping of SQLite's
 * result codes onto util's error enum. Only this file includes sqlite3.h. */

/* DESIGN (SQLite backend; the module's DESIGN comment is in store.c)
 *
 * Connection. One sqlite3 handle per struct store, opened SQLITE_OPEN_NOMUTEX because the header
 * already restricts a struct store to one thread at a time. Its statements are prepared once, on
 * first use, and kept (SQLITE_PREPARE_PERSISTENT) until store_close. A statement is always reset
 * right after use, so no connection keeps a read snapshot open between calls: a reader sees every
 * commit made before its call, by any connection or process, and checkpoints are not held back. A
 * callback that re-enters the store while its walk is running gets a one-off statement instead of
 * the busy cached one.
 *
 * Locking. Writes start with BEGIN IMMEDIATE, so a writer takes the write lock before reading what
 * it will change and no two writers can interleave a read-modify-write (CRL numbers, TSA serials,
 * feed ids, the audit chain). In WAL mode readers never wait for the writer. A writer that cannot
 * get the lock within the busy timeout fails with UTIL_ELOCKED; the timeout is 5000 ms, or
 * PKIVA_STORE_BUSY_MS from the environment (0-3600000), read when the connection is opened: tests
 * use it to make a lock fail fast, operators may raise it for a slow disk.
 *
 * Transactions. depth counts explicit store_begin_blocking calls. The outermost begin is BEGIN
 * IMMEDIATE; a nested begin, and every write function called while a transaction is open, is a
 * SAVEPOINT, so a failed step (a revoke refused with UTIL_EEXIST during an import) is undone alone
 * and the enclosing transaction carries on. If SQLite itself aborted the transaction (disk full,
 * I/O error) every later call in it fails until the caller rolls back.
 *
 * Durability. synchronous=FULL in WAL mode fsyncs the WAL at every commit, so what a function
 * reports as done survives a power cut. Bulk imports get their speed from committing many rows per
 * transaction, not from weaker syncing.
 *
 * Schema. PRAGMA user_version is the schema version; migrations[i] takes version i to i+1, and all
 * pending ones run in one IMMEDIATE transaction at open, so two processes starting together migrate
 * once. PRAGMA application_id marks the file as pkiva's, so a stray SQLite file is refused rather
 * than silently given our tables. */

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

#define STORE_BUSY_MS_DEFAULT 5000
#define STORE_BUSY_MS_MAX 3600000
#define STORE_APPLICATION_ID 0x706b6976 /* "pkiv" */

/* ---- schema --------------------------------------------------------------------------------- */

/* Version 1. Notes on choices that must stay true:
 * - certs is WITHOUT ROWID keyed by (issuer_id, serial), the OCSP lookup key, so a status lookup is
 *   one B-tree descent. Such tables work best with small rows, so the certificate DER (1-2 KB)
 *   lives in cert_ders, an ordinary rowid table, referenced by der_id.
 * - feed.id is AUTOINCREMENT so ids are never reused, even after the highest row is deleted.
 * - certs_revoked, a partial index, holds only revoked certificates: CRL generation walks it
 *   without touching the (much larger) set of good ones.
 * - revocations_open_* are partial indexes of revocations not yet seen in OCSP / a CRL; they
 *   stay small because rows leave them once marked.
 * - crl_history keys CRLs by (issuer_id, number): full and delta CRLs share one number sequence
 *   (RFC 5280 5.2.3).
 * - audit.id is AUTOINCREMENT: sqlite_sequence remembers the highest id ever used, which exposes a
 *   deleted tail of the chain. */
static const char schema_v1[] =
    "CREATE TABLE issuers ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  cert_der BLOB NOT NULL,"
    "  created_at_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE feed ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
    "  issuer_id INTEGER NOT NULL REFERENCES issuers(id),"
    "  serial BLOB NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  actor TEXT"
    ");"
    "CREATE TABLE cert_ders ("
    "  id INTEGER PRIMARY KEY,"
    "  der BLOB NOT NULL"
    ");"
    "CREATE TABLE certs ("
    "  issuer_id INTEGER NOT NULL REFERENCES issuers(id),"
    "  serial BLOB NOT NULL CHECK (length(serial) BETWEEN 1 AND 32),"
    "  not_before INTEGER NOT NULL,"
    "  not_after INTEGER NOT NULL,"
    "  status INTEGER NOT NULL CHECK (status IN (0, 1)),"
    "  revoked_at INTEGER NOT NULL DEFAULT 0,"
    "  reason INTEGER NOT NULL DEFAULT -1,"
    "  invalidity_date INTEGER NOT NULL DEFAULT 0,"
    "  feed_id INTEGER NOT NULL,"
    "  subject TEXT,"
    "  der_id INTEGER REFERENCES cert_ders(id),"
    "  PRIMARY KEY (issuer_id, serial)"
    ") WITHOUT ROWID;"
    "CREATE INDEX certs_revoked ON certs(issuer_id, serial) WHERE status = 1;"
    "CREATE TABLE revocations ("
    "  feed_id INTEGER PRIMARY KEY REFERENCES feed(id),"
    "  issuer_id INTEGER NOT NULL REFERENCES issuers(id),"
    "  serial BLOB NOT NULL,"
    "  reason INTEGER NOT NULL,"
    "  revoked_at INTEGER NOT NULL,"
    "  invalidity_date INTEGER NOT NULL DEFAULT 0,"
    "  request_id TEXT,"
    "  received_at_ms INTEGER NOT NULL,"
    "  committed_at_ms INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  ocsp_at_ms INTEGER,"
    "  crl_at_ms INTEGER"
    ");"
    "CREATE INDEX revocations_open_ocsp ON revocations(feed_id) WHERE ocsp_at_ms IS NULL;"
    "CREATE INDEX revocations_open_crl ON revocations(feed_id) WHERE crl_at_ms IS NULL;"
    "CREATE TABLE crl_numbers ("
    "  issuer_id INTEGER PRIMARY KEY REFERENCES issuers(id),"
    "  last_number INTEGER NOT NULL CHECK (last_number >= 1)"
    ");"
    "CREATE TABLE crl_history ("
    "  id INTEGER PRIMARY KEY,"
    "  issuer_id INTEGER NOT NULL REFERENCES issuers(id),"
    "  number INTEGER NOT NULL,"
    "  base_number INTEGER NOT NULL DEFAULT 0,"
    "  this_update INTEGER NOT NULL,"
    "  next_update INTEGER NOT NULL,"
    "  feed_id INTEGER NOT NULL,"
    "  der BLOB NOT NULL,"
    "  created_at_ms INTEGER NOT NULL,"
    "  UNIQUE (issuer_id, number)"
    ");"
    "CREATE TABLE tsa_serials ("
    "  unit TEXT PRIMARY KEY,"
    "  next_serial INTEGER NOT NULL CHECK (next_serial >= 1)"
    ");"
    "CREATE TABLE tsa_tokens ("
    "  unit TEXT NOT NULL,"
    "  serial INTEGER NOT NULL,"
    "  gen_time_ms INTEGER NOT NULL,"
    "  policy TEXT NOT NULL,"
    "  imprint_alg TEXT NOT NULL,"
    "  imprint BLOB NOT NULL,"
    "  PRIMARY KEY (unit, serial)"
    ") WITHOUT ROWID;"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  at_ms INTEGER NOT NULL,"
    "  actor TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  detail TEXT NOT NULL,"
    "  prev_hash BLOB NOT NULL,"
    "  hash BLOB NOT NULL"
    ");";

/* Version 2: the audit log vouches for the state tables and is sealed by the HSM (store.c DESIGN).
 * - audit.version tells the hash encoding (1: the records written before this version).
 * - audit.feed_first/feed_last/changes: the change-feed ids a record covers and their digest.
 * - audit_seals: signed runs of record hashes; seals tile the log from record 1.
 * Changes made before this version are covered by one "schema-upgrade" record written right after
 * the migration (see migrate): they are taken as they stood, which is all that can be said of
 * them. */
static const char schema_v2[] =
    "ALTER TABLE audit ADD COLUMN version INTEGER NOT NULL DEFAULT 1;"
    "ALTER TABLE audit ADD COLUMN feed_first INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE audit ADD COLUMN feed_last INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE audit ADD COLUMN changes BLOB;"
    "CREATE TABLE audit_seals ("
    "  id INTEGER PRIMARY KEY,"
    "  first_id INTEGER NOT NULL,"
    "  last_id INTEGER NOT NULL,"
    "  at_ms INTEGER NOT NULL,"
    "  cert_sha256 BLOB NOT NULL,"
    "  md TEXT NOT NULL,"
    "  rsa_pss INTEGER NOT NULL,"
    "  hashes BLOB NOT NULL,"
    "  signature BLOB NOT NULL"
    ");";

/* The public directory's search index (issue 20). Notes on choices that must stay true:
 * - cert_search has one row per certificate kept with its DER, keyed by the DER's row id, which is
 *   also the rowid of its cert_fts row: a name match leads to (issuer_id, serial) and the DER
 *   through two primary-key probes, and rowid order is registration order (newest first paging).
 * - Fingerprints are indexed by their first 8 octets (an integer key, half the size of the
 *   digests); a hit is confirmed against the digest of the DER. Whole e-mail addresses likewise
 *   (cert_email, keyed by the SHA-256 of the folded lower-case address), confirmed against the
 *   addresses read from the DER: finding "an@x.vn" is one probe, not a full-text query.
 * - cert_fts is contentless (content=''): it stores the inverted index only, and we never read
 *   text back (pages render from the DER). Rows are never deleted (certificates are not), so a
 *   contentless table's inability to delete does not matter. unicode61 with remove_diacritics 2
 *   folds case and Vietnamese diacritics; đ/Đ, a letter of its own, is folded to d before
 *   indexing (store__search_fold). iss holds "i<issuer id>" so that an issuer filter is part of
 *   the full-text query, not a scan of its results.
 * - search_backfill exists while certificates registered before this migration are not indexed
 *   yet: it holds the (issuer_id, serial) position of the catch-up, which runs in batches at the
 *   next read-write open (search_backfill() below); new certificates are indexed by cert_add. */
static const char schema_search[] =
    "CREATE TABLE cert_search ("
    "  der_id INTEGER PRIMARY KEY REFERENCES cert_ders(id),"
    "  issuer_id INTEGER NOT NULL,"
    "  serial BLOB NOT NULL,"
    "  fp_sha256 INTEGER NOT NULL,"
    "  fp_sha1 INTEGER NOT NULL"
    ");"
    "CREATE INDEX cert_search_sha256 ON cert_search(fp_sha256);"
    "CREATE INDEX cert_search_sha1 ON cert_search(fp_sha1);"
    "CREATE VIRTUAL TABLE cert_fts USING fts5(iss, cn, o, ou, email, content='', columnsize=0,"
    "  tokenize='unicode61 remove_diacritics 2', prefix='3');"
    "CREATE TABLE cert_email ("
    "  email_key INTEGER NOT NULL,"
    "  der_id INTEGER NOT NULL,"
    "  PRIMARY KEY (email_key, der_id)"
    ") WITHOUT ROWID;"
    "CREATE TABLE search_backfill ("
    "  issuer_id INTEGER NOT NULL,"
    "  serial BLOB NOT NULL"
    ");"
    "INSERT INTO search_backfill (issuer_id, serial) "
    "  SELECT 0, x'' WHERE EXISTS (SELECT 1 FROM certs WHERE der_id IS NOT NULL);";

/* Version 3 (issue 15.3): the token log keyed by the TSA certificate, not the unit's name, which
 * may change; rows from before keep an empty cert_id and are found by (unit, serial). */
static const char schema_v3[] =
    "ALTER TABLE tsa_tokens ADD COLUMN cert_id BLOB NOT NULL DEFAULT x'';"
    "CREATE UNIQUE INDEX tsa_tokens_by_cert ON tsa_tokens (cert_id, serial) "
    "WHERE cert_id <> x'';";

/* Version 5 (issue 16): one row per serving node with the feed id its OCSP answers reflect and
 * the time it last reported (store_node_report_blocking); the cluster-wide SLA reads them. */
static const char schema_nodes[] = "CREATE TABLE nodes ("
                                   "  id INTEGER PRIMARY KEY,"
                                   "  name TEXT NOT NULL UNIQUE,"
                                   "  applied_feed_id INTEGER NOT NULL,"
                                   "  heartbeat_ms INTEGER NOT NULL"
                                   ");";

/* migrations[i] upgrades schema version i to i + 1. Append only; never edit a shipped entry. */
static const char *const migrations[] = {schema_v1, schema_v2, schema_v3, schema_search,
                                         schema_nodes};
#define STORE_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- statements ----------------------------------------------------------------------------- */

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
    STORE_ST_FEED_INSERT,
    STORE_ST_FEED_READ,
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

/* Column order shared by every query that fills a struct store_cert (see read_cert). */
#define STORE_CERT_COLS                                                      \
    "issuer_id, serial, not_before, not_after, status, revoked_at, reason, " \
    "invalidity_date, feed_id"
#define STORE_SEARCH_CERT_COLS                                                             \
    "c.issuer_id, c.serial, c.not_before, c.not_after, c.status, c.revoked_at, c.reason, " \
    "c.invalidity_date, c.feed_id"
#define STORE_SLA_COLS                                                          \
    "feed_id, issuer_id, serial, request_id, received_at_ms, committed_at_ms, " \
    "COALESCE(ocsp_at_ms, 0), COALESCE(crl_at_ms, 0), revoked_at, invalidity_date"

/* INDEXED BY below is deliberate: if a schema change ever made the intended index unusable, the
 * statement fails to prepare (loudly, in tests) instead of silently scanning a big table. */
static const char *const stmt_sql[STORE_ST_COUNT] = {
    [STORE_ST_BEGIN] = "BEGIN IMMEDIATE",
    [STORE_ST_BEGIN_READ] = "BEGIN",
    [STORE_ST_COMMIT] = "COMMIT",
    [STORE_ST_ROLLBACK] = "ROLLBACK",
    [STORE_ST_SAVEPOINT] = "SAVEPOINT store_step",
    [STORE_ST_RELEASE] = "RELEASE store_step",
    [STORE_ST_ROLLBACK_TO] = "ROLLBACK TO store_step",
    [STORE_ST_PING] = "SELECT count(*) FROM issuers",
    [STORE_ST_ISSUER_BY_NAME] = "SELECT id, name, cert_der FROM issuers WHERE name = ?1",
    [STORE_ST_ISSUER_INSERT] =
        "INSERT INTO issuers (name, cert_der, created_at_ms) VALUES (?1, ?2, ?3)",
    [STORE_ST_ISSUER_LIST] = "SELECT id, name, cert_der FROM issuers ORDER BY id",
    [STORE_ST_CERT_GET] =
        "SELECT " STORE_CERT_COLS " FROM certs WHERE issuer_id = ?1 AND serial = ?2",
    [STORE_ST_CERT_DER] =
        "SELECT d.der FROM certs AS c CROSS JOIN cert_ders AS d ON d.id = c.der_id "
        "WHERE c.issuer_id = ?1 AND c.serial = ?2",
    [STORE_ST_DER_INSERT] = "INSERT INTO cert_ders (der) VALUES (?1)",
    [STORE_ST_CERT_INSERT] = "INSERT INTO certs (issuer_id, serial, not_before, not_after, status, "
                             "revoked_at, reason, invalidity_date, feed_id, subject, der_id) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    [STORE_ST_CERT_SET_STATUS] = "UPDATE certs SET status = ?3, revoked_at = ?4, reason = ?5, "
                                 "invalidity_date = ?6, feed_id = ?7 "
                                 "WHERE issuer_id = ?1 AND serial = ?2",
    [STORE_ST_CERT_ITER_ALL] = "SELECT " STORE_CERT_COLS " FROM certs ORDER BY issuer_id, serial",
    [STORE_ST_CERT_ITER_ISSUER] =
        "SELECT " STORE_CERT_COLS " FROM certs WHERE issuer_id = ?1 ORDER BY serial",
    [STORE_ST_CERT_ITER_REVOKED_ALL] =
        "SELECT " STORE_CERT_COLS " FROM certs INDEXED BY certs_revoked "
        "WHERE status = 1 ORDER BY issuer_id, serial",
    [STORE_ST_CERT_ITER_REVOKED_ISSUER] =
        "SELECT " STORE_CERT_COLS " FROM certs INDEXED BY certs_revoked "
        "WHERE status = 1 AND issuer_id = ?1 ORDER BY serial",
    [STORE_ST_FEED_INSERT] = "INSERT INTO feed (kind, issuer_id, serial, at_ms, actor) "
                             "VALUES (?1, ?2, ?3, ?4, ?5)",
    /* CROSS JOIN pins feed as the outer loop: a range scan on its rowid, then one certs lookup per
     * change. */
    [STORE_ST_FEED_READ] =
        "SELECT f.id, f.kind, f.at_ms, c.issuer_id, c.serial, c.not_before, "
        "c.not_after, c.status, c.revoked_at, c.reason, c.invalidity_date, c.feed_id "
        "FROM feed AS f CROSS JOIN certs AS c "
        "ON c.issuer_id = f.issuer_id AND c.serial = f.serial "
        "WHERE f.id > ?1 ORDER BY f.id LIMIT ?2",
    [STORE_ST_FEED_HEAD] = "SELECT COALESCE(MAX(id), 0) FROM feed",
    [STORE_ST_REVOCATION_INSERT] = "INSERT INTO revocations (feed_id, issuer_id, serial, reason, "
                                   "revoked_at, invalidity_date, request_id, received_at_ms, "
                                   "committed_at_ms, actor) "
                                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [STORE_ST_SLA_EXISTS] = "SELECT 1 FROM revocations WHERE feed_id = ?1",
    [STORE_ST_SLA_MARK_OCSP] = "UPDATE revocations SET ocsp_at_ms = ?2 "
                               "WHERE feed_id = ?1 AND ocsp_at_ms IS NULL",
    [STORE_ST_SLA_MARK_CRL] = "UPDATE revocations SET crl_at_ms = ?2 "
                              "WHERE feed_id = ?1 AND crl_at_ms IS NULL",
    [STORE_ST_SLA_UPTO_OCSP] =
        "UPDATE revocations INDEXED BY revocations_open_ocsp SET ocsp_at_ms = ?3 "
        "WHERE ocsp_at_ms IS NULL AND feed_id <= ?2 AND issuer_id = ?1",
    [STORE_ST_SLA_UPTO_CRL] =
        "UPDATE revocations INDEXED BY revocations_open_crl SET crl_at_ms = ?3 "
        "WHERE crl_at_ms IS NULL AND feed_id <= ?2 AND issuer_id = ?1",
    [STORE_ST_SLA_LIST_OPEN] =
        "SELECT " STORE_SLA_COLS " FROM revocations INDEXED BY revocations_open_crl "
        "WHERE crl_at_ms IS NULL ORDER BY feed_id LIMIT ?1",
    [STORE_ST_SLA_LIST_ALL] =
        "SELECT " STORE_SLA_COLS " FROM revocations ORDER BY feed_id DESC LIMIT ?1",
    [STORE_ST_CRL_NUMBER_NEXT] =
        "INSERT INTO crl_numbers (issuer_id, last_number) VALUES (?1, 1) "
        "ON CONFLICT (issuer_id) DO UPDATE SET last_number = last_number + 1 "
        "RETURNING last_number",
    [STORE_ST_CRL_RESERVED] = "SELECT last_number FROM crl_numbers WHERE issuer_id = ?1",
    [STORE_ST_CRL_INSERT] = "INSERT INTO crl_history (issuer_id, number, base_number, this_update, "
                            "next_update, feed_id, der, created_at_ms) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [STORE_ST_CRL_LATEST_FULL] =
        "SELECT number, base_number, this_update, next_update, feed_id, der "
        "FROM crl_history WHERE issuer_id = ?1 AND base_number = 0 "
        "ORDER BY number DESC LIMIT 1",
    [STORE_ST_CRL_LATEST_DELTA] =
        "SELECT number, base_number, this_update, next_update, feed_id, der "
        "FROM crl_history WHERE issuer_id = ?1 AND base_number <> 0 "
        "ORDER BY number DESC LIMIT 1",
    /* The WHERE of the upsert refuses a block that would overflow 64 bits; then no row returns. */
    [STORE_ST_TSA_RESERVE] =
        "INSERT INTO tsa_serials (unit, next_serial) VALUES (?1, ?3 + ?2) "
        "ON CONFLICT (unit) DO UPDATE SET next_serial = max(next_serial, ?3) + ?2 "
        "WHERE max(next_serial, ?3) <= 9223372036854775807 - ?2 "
        "RETURNING next_serial - ?2",
    [STORE_ST_TSA_LOG] = "INSERT INTO tsa_tokens (unit, serial, gen_time_ms, policy, imprint_alg, "
                         "imprint, cert_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* By certificate first; rows without one (schema version 1) by unit name. */
    [STORE_ST_TSA_TOKEN_GET] = "SELECT gen_time_ms, policy, imprint_alg, imprint FROM tsa_tokens "
                               "WHERE serial = ?2 AND ((cert_id = ?3 AND cert_id <> x'') OR "
                               "(cert_id = x'' AND unit = ?1)) ORDER BY cert_id DESC LIMIT 1",
    [STORE_ST_AUDIT_LAST] = "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
    [STORE_ST_AUDIT_SEQ] = "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
    [STORE_ST_AUDIT_INSERT] =
        "INSERT INTO audit (id, at_ms, actor, action, detail, prev_hash, hash, version, "
        "feed_first, feed_last, changes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 2, ?8, ?9, ?10)",
    [STORE_ST_AUDIT_WALK] = "SELECT id, at_ms, actor, action, detail, prev_hash, hash, version, "
                            "feed_first, feed_last, changes FROM audit ORDER BY id",
    /* The columns of a struct store__change_row (see read_change). */
    [STORE_ST_CHANGE_WALK] =
        "SELECT f.id, f.kind, f.issuer_id, f.serial, r.feed_id IS NOT NULL, "
        "COALESCE(r.reason, 0), COALESCE(r.revoked_at, 0), COALESCE(r.invalidity_date, 0) "
        "FROM feed AS f LEFT JOIN revocations AS r ON r.feed_id = f.id "
        "WHERE f.id BETWEEN ?1 AND ?2 ORDER BY f.id",
    /* Every certificate with its changes. feed has no index on (issuer_id, serial); SQLite builds
     * a transient one for the join, so this stays O(n log n) for a verification run. */
    [STORE_ST_STATE_WALK] =
        "SELECT c.issuer_id, c.serial, c.not_before, c.not_after, c.status, c.revoked_at, "
        "c.reason, c.invalidity_date, c.feed_id, COALESCE(f.id, 0), COALESCE(f.kind, 0), "
        "r.feed_id IS NOT NULL, COALESCE(r.reason, 0), "
        "COALESCE(r.revoked_at, 0), COALESCE(r.invalidity_date, 0) "
        "FROM certs AS c LEFT JOIN feed AS f ON f.issuer_id = c.issuer_id AND f.serial = c.serial "
        "LEFT JOIN revocations AS r ON r.feed_id = f.id "
        "ORDER BY c.issuer_id, c.serial, f.id",
    [STORE_ST_ORPHAN_CHANGE] =
        "SELECT COALESCE(MIN(f.id), 0) FROM feed AS f WHERE NOT EXISTS "
        "(SELECT 1 FROM certs AS c WHERE c.issuer_id = f.issuer_id AND c.serial = f.serial)",
    [STORE_ST_ORPHAN_REVOCATION] =
        "SELECT COALESCE(MIN(r.feed_id), 0) FROM revocations AS r LEFT JOIN feed AS f "
        "ON f.id = r.feed_id WHERE f.id IS NULL OR f.kind <> 2 OR f.issuer_id <> r.issuer_id "
        "OR f.serial <> r.serial",
    [STORE_ST_FEED_COUNT] = "SELECT count(*) FROM feed",
    [STORE_ST_SEAL_LAST] = "SELECT COALESCE(MAX(last_id), 0) FROM audit_seals",
    [STORE_ST_SEAL_PENDING] = "SELECT id, hash FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
    [STORE_ST_SEAL_INSERT] = "INSERT INTO audit_seals (first_id, last_id, at_ms, cert_sha256, md, "
                             "rsa_pss, hashes, signature) "
                             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [STORE_ST_SEAL_WALK] = "SELECT id, first_id, last_id, at_ms, cert_sha256, md, rsa_pss, hashes, "
                           "signature FROM audit_seals ORDER BY first_id, id",
    [STORE_ST_UNSEALED] = "SELECT (SELECT COALESCE(MAX(id), 0) FROM audit) - "
                          "(SELECT COALESCE(MAX(last_id), 0) FROM audit_seals)",
    [STORE_ST_SEARCH_INSERT] = "INSERT OR IGNORE INTO cert_search "
                               "(der_id, issuer_id, serial, fp_sha256, fp_sha1) "
                               "VALUES (?1, ?2, ?3, ?4, ?5)",
    [STORE_ST_FTS_INSERT] = "INSERT INTO cert_fts (rowid, iss, cn, o, ou, email) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    /* Search rows: cursor, DER, subject, then STORE_CERT_COLS of certs (read_cert from 3). The
     * CROSS JOINs pin the full-text or fingerprint index as the outer loop. */
    [STORE_ST_SEARCH_NAME] =
        "SELECT s.der_id, d.der, c.subject, " STORE_SEARCH_CERT_COLS
        " FROM cert_fts CROSS JOIN cert_search AS s ON s.der_id = cert_fts.rowid "
        "CROSS JOIN certs AS c ON c.issuer_id = s.issuer_id AND c.serial = s.serial "
        "CROSS JOIN cert_ders AS d ON d.id = s.der_id "
        "WHERE cert_fts MATCH ?1 AND cert_fts.rowid < ?2 ORDER BY cert_fts.rowid DESC LIMIT ?3",
    [STORE_ST_SEARCH_SHA256] =
        "SELECT s.der_id, d.der, c.subject, " STORE_SEARCH_CERT_COLS
        " FROM cert_search AS s INDEXED BY cert_search_sha256 "
        "CROSS JOIN certs AS c ON c.issuer_id = s.issuer_id AND c.serial = s.serial "
        "CROSS JOIN cert_ders AS d ON d.id = s.der_id "
        "WHERE s.fp_sha256 = ?1 AND s.der_id < ?2 ORDER BY s.der_id DESC LIMIT ?3",
    [STORE_ST_SEARCH_SHA1] =
        "SELECT s.der_id, d.der, c.subject, " STORE_SEARCH_CERT_COLS
        " FROM cert_search AS s INDEXED BY cert_search_sha1 "
        "CROSS JOIN certs AS c ON c.issuer_id = s.issuer_id AND c.serial = s.serial "
        "CROSS JOIN cert_ders AS d ON d.id = s.der_id "
        "WHERE s.fp_sha1 = ?1 AND s.der_id < ?2 ORDER BY s.der_id DESC LIMIT ?3",
    [STORE_ST_SEARCH_SERIAL] =
        "SELECT COALESCE(c.der_id, 0), d.der, c.subject, " STORE_SEARCH_CERT_COLS
        " FROM certs AS c LEFT JOIN cert_ders AS d ON d.id = c.der_id "
        "WHERE c.issuer_id = ?1 AND c.serial = ?2",
    [STORE_ST_EMAIL_INSERT] =
        "INSERT OR IGNORE INTO cert_email (email_key, der_id) VALUES (?1, ?2)",
    [STORE_ST_SEARCH_EMAIL] =
        "SELECT s.der_id, d.der, c.subject, " STORE_SEARCH_CERT_COLS
        " FROM cert_email AS e CROSS JOIN cert_search AS s ON s.der_id = e.der_id "
        "CROSS JOIN certs AS c ON c.issuer_id = s.issuer_id AND c.serial = s.serial "
        "CROSS JOIN cert_ders AS d ON d.id = s.der_id "
        "WHERE e.email_key = ?1 AND e.der_id < ?2 ORDER BY e.der_id DESC LIMIT ?3",
    [STORE_ST_BACKFILL_GET] = "SELECT issuer_id, serial FROM search_backfill LIMIT 1",
    [STORE_ST_BACKFILL_BATCH] =
        "SELECT c.issuer_id, c.serial, c.der_id, d.der FROM certs AS c "
        "CROSS JOIN cert_ders AS d ON d.id = c.der_id "
        "WHERE (c.issuer_id, c.serial) > (?1, ?2) ORDER BY c.issuer_id, c.serial LIMIT ?3",
    [STORE_ST_BACKFILL_SET] = "UPDATE search_backfill SET issuer_id = ?1, serial = ?2",
    [STORE_ST_BACKFILL_DONE] = "DELETE FROM search_backfill",
};

/* ---- connection ----------------------------------------------------------------------------- */

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

static struct sq *sq_of(struct store *store)
{
    return (struct sq *)store;
}

/* Maps a SQLite result code (extended codes are on) to util's enum and logs it with the operation
 * and the connection's message. Read the message before any other call on the connection. */
static int sq_err(struct sq *s, int rc, const char *op)
{
    int sys = sqlite3_system_errno(s->db);
    const char *msg = sqlite3_errmsg(s->db);

    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        UTIL_WARN(STORE_MOD,
                  "%s: %s is locked by another connection beyond the busy timeout (%d ms): %s", op,
                  s->path, s->busy_ms, msg);
        return UTIL_ELOCKED;
    case SQLITE_FULL:
        UTIL_ERROR(STORE_MOD, "%s: %s: disk full: %s", op, s->path, msg);
        return UTIL_ENOSPC;
    case SQLITE_IOERR:
        if (sys == ENOSPC) {
            UTIL_ERROR(STORE_MOD, "%s: %s: disk full: %s", op, s->path, msg);
            return UTIL_ENOSPC;
        }
        UTIL_ERROR(STORE_MOD, "%s: %s: I/O error: %s (errno %d)", op, s->path, msg, sys);
        return UTIL_ESTORE;
    case SQLITE_NOMEM:
        UTIL_ERROR(STORE_MOD, "%s: %s: out of memory", op, s->path);
        return UTIL_ENOMEM;
    case SQLITE_CONSTRAINT:
        /* Callers check the expected conflicts first; reaching here means the request named
         * something that does not exist (foreign key) or collided with a concurrent writer. */
        UTIL_WARN(STORE_MOD, "%s: %s: %s", op, s->path, msg);
        if (rc == SQLITE_CONSTRAINT_FOREIGNKEY)
            return UTIL_ENOTFOUND;
        if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            return UTIL_EEXIST;
        return UTIL_EINVAL;
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
        UTIL_ERROR(STORE_MOD, "%s: %s: not permitted: %s", op, s->path, msg);
        return UTIL_EPERM;
    default:
        UTIL_ERROR(STORE_MOD, "%s: %s: %s (SQLite code %d)", op, s->path, msg, rc);
        return UTIL_ESTORE;
    }
}

/* The cached statement, or a one-off copy if the cached one is in use by a walk further up the
 * stack (a callback re-entering the store). Pair every stmt_get with stmt_put. */
static int stmt_get(struct sq *s, enum sq_stmt_id id, sqlite3_stmt **out)
{
    sqlite3_stmt *stmt = s->stmts[id];
    unsigned int flags = 0;
    int rc = 0;

    *out = NULL;
    if (stmt != NULL && !sqlite3_stmt_busy(stmt)) {
        *out = stmt;
        return 0;
    }
    flags = stmt == NULL ? SQLITE_PREPARE_PERSISTENT : 0;
    stmt = NULL;
    rc = sqlite3_prepare_v3(s->db, stmt_sql[id], -1, flags, &stmt, NULL);
    if (rc != SQLITE_OK) {
        rc = sq_err(s, rc, "prepare");
        UTIL_ERROR(STORE_MOD, "prepare failed for: %s", stmt_sql[id]);
        return rc;
    }
    if (s->stmts[id] == NULL)
        s->stmts[id] = stmt;
    *out = stmt;
    return 0;
}

static void stmt_put(struct sq *s, enum sq_stmt_id id, sqlite3_stmt *stmt)
{
    if (stmt == NULL)
        return;
    if (stmt == s->stmts[id]) {
        /* reset's return repeats the last step's error, which the caller already handled. */
        (void)sqlite3_reset(stmt);
        (void)sqlite3_clear_bindings(stmt); /* cannot fail on a valid statement */
    } else {
        (void)sqlite3_finalize(stmt); /* same: it only repeats the last step's error */
    }
}

/* Runs one step: 0 with *row = 1 for a row, 0 with *row = 0 when done, else the mapped error. */
static int step(struct sq *s, sqlite3_stmt *stmt, const char *op, int *row)
{
    int rc = sqlite3_step(stmt);

    *row = 0;
    if (rc == SQLITE_ROW) {
        *row = 1;
        return 0;
    }
    if (rc == SQLITE_DONE)
        return 0;
    return sq_err(s, rc, op);
}

/* A bind failed (out of memory, blob too big, or a programming error): map the connection's code.
 */
static int bind_err(struct sq *s, const char *op)
{
    return sq_err(s, sqlite3_extended_errcode(s->db), op);
}

/* Runs a statement that returns no rows (transaction control). */
static int exec_stmt(struct sq *s, enum sq_stmt_id id, const char *op)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = step(s, stmt, op, &row);
out:
    stmt_put(s, id, stmt);
    return rc;
}

/* ---- transactions --------------------------------------------------------------------------- */

/* Opens the write transaction of one operation: BEGIN IMMEDIATE when none is open, else a
 * savepoint inside the caller's transaction. */
static int tx_start(struct sq *s, const char *op, enum tx_kind *kind)
{
    int rc = 0;

    *kind = 0;
    if (sqlite3_get_autocommit(s->db)) {
        if (s->depth > 0) {
            UTIL_ERROR(STORE_MOD,
                       "%s: %s: the open transaction was aborted by an earlier error; "
                       "roll it back",
                       op, s->path);
            return UTIL_ESTORE;
        }
        rc = exec_stmt(s, STORE_ST_BEGIN, op);
        if (rc == 0)
            *kind = STORE_TX_OUTER;
        return rc;
    }
    rc = exec_stmt(s, STORE_ST_SAVEPOINT, op);
    if (rc == 0)
        *kind = STORE_TX_STEP;
    return rc;
}

/* Undoes what the operation wrote. SQLite may already have rolled the whole transaction back after
 * an I/O or disk-full error; then there is nothing left to undo here. */
static void tx_undo(struct sq *s, enum tx_kind kind, const char *op)
{
    if (kind == 0 || sqlite3_get_autocommit(s->db))
        return;
    if (kind == STORE_TX_OUTER) {
        (void)exec_stmt(s, STORE_ST_ROLLBACK,
                        op); /* a failed rollback ends the transaction anyway */
        return;
    }
    /* Rolling back to a savepoint keeps it open; release it too. A failure here was logged and
     * leaves the enclosing transaction for the caller to roll back. */
    (void)exec_stmt(s, STORE_ST_ROLLBACK_TO, op);
    (void)exec_stmt(s, STORE_ST_RELEASE, op);
}

/* Ends the operation's transaction: commits (durably, for STORE_TX_OUTER) when rc is 0, else undoes
 * it. Returns rc, or the commit's error. */
static int tx_finish(struct sq *s, enum tx_kind kind, int rc, const char *op)
{
    if (kind == 0)
        return rc;
    if (rc != 0) {
        tx_undo(s, kind, op);
        return rc;
    }
    rc = exec_stmt(s, kind == STORE_TX_OUTER ? STORE_ST_COMMIT : STORE_ST_RELEASE, op);
    if (rc != 0)
        tx_undo(s, kind, op);
    return rc;
}

/* Starts a read snapshot for an operation that reads several times and must see one state. */
static int rx_start(struct sq *s, const char *op, int *opened)
{
    int rc = 0;

    *opened = 0;
    if (!sqlite3_get_autocommit(s->db))
        return 0;
    rc = exec_stmt(s, STORE_ST_BEGIN_READ, op);
    if (rc == 0)
        *opened = 1;
    return rc;
}

static void rx_finish(struct sq *s, int opened, const char *op)
{
    if (opened && !sqlite3_get_autocommit(s->db))
        (void)exec_stmt(s, STORE_ST_COMMIT, op); /* ends a read-only transaction; nothing to lose */
}

static int sq_begin(struct store *store)
{
    struct sq *s = sq_of(store);
    enum tx_kind kind = 0;
    int rc = 0;

    rc = tx_start(s, "begin", &kind);
    if (rc == 0)
        s->depth++;
    return rc;
}

static int sq_commit(struct store *store)
{
    struct sq *s = sq_of(store);
    int rc = 0;

    if (s->depth == 0) {
        UTIL_ERROR(STORE_MOD, "commit: no transaction is open");
        return UTIL_EINVAL;
    }
    if (sqlite3_get_autocommit(s->db)) {
        UTIL_ERROR(STORE_MOD, "commit: %s: the transaction was aborted by an earlier error",
                   s->path);
        s->depth = 0;
        return UTIL_ESTORE;
    }
    rc = tx_finish(s, s->depth == 1 ? STORE_TX_OUTER : STORE_TX_STEP, 0, "commit");
    s->depth--;
    if (rc != 0 && sqlite3_get_autocommit(s->db))
        s->depth = 0;
    return rc;
}

static int sq_rollback(struct store *store)
{
    struct sq *s = sq_of(store);

    if (s->depth == 0) {
        UTIL_ERROR(STORE_MOD, "rollback: no transaction is open");
        return UTIL_EINVAL;
    }
    tx_undo(s, s->depth == 1 ? STORE_TX_OUTER : STORE_TX_STEP, "rollback");
    s->depth--;
    if (sqlite3_get_autocommit(s->db))
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
        return STORE_BUSY_MS_DEFAULT;
    errno = 0;
    value = strtol(env, &end, 10);
    if (errno != 0 || *end != '\0' || value < 0 || value > STORE_BUSY_MS_MAX) {
        UTIL_WARN(STORE_MOD, "PKIVA_STORE_BUSY_MS=%s is not 0-%d; using %d ms", env,
                  STORE_BUSY_MS_MAX, STORE_BUSY_MS_DEFAULT);
        return STORE_BUSY_MS_DEFAULT;
    }
    return (int)value;
}

/* Runs SQL text with no parameters (pragmas, the schema). */
static int exec_sql(struct sq *s, const char *sql, const char *op)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return sq_err(s, rc, op);
    return 0;
}

/* Reads a pragma or query that returns one integer. */
static int query_int(struct sq *s, const char *sql, const char *op, int64_t *value)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    *value = 0;
    rc = sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        rc = sq_err(s, rc, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc == 0 && row)
        *value = sqlite3_column_int64(stmt, 0);
out:
    (void)sqlite3_finalize(stmt); /* repeats the step's error, already handled */
    return rc;
}

static int set_wal(struct sq *s)
{
    sqlite3_stmt *stmt = NULL;
    const unsigned char *mode = NULL;
    int row = 0;
    int rc = 0;

    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &stmt, NULL);
    if (rc != SQLITE_OK) {
        rc = sq_err(s, rc, "set journal_mode");
        goto out;
    }
    rc = step(s, stmt, "set journal_mode", &row);
    if (rc != 0)
        goto out;
    mode = row ? sqlite3_column_text(stmt, 0) : NULL;
    /* SQLite keeps the old mode where WAL is impossible (no shared memory, e.g. some network file
     * systems); several processes could then not share the file safely, so refuse. */
    if (mode == NULL || strcmp((const char *)mode, "wal") != 0) {
        UTIL_ERROR(STORE_MOD, "open %s: cannot switch to WAL mode (journal_mode is %s)", s->path,
                   mode != NULL ? (const char *)mode : "unknown");
        rc = UTIL_ESTORE;
        goto out;
    }
    rc = 0;
out:
    (void)sqlite3_finalize(stmt); /* repeats the step's error, already handled */
    return rc;
}

/* Schema 1 -> 2: the changes made so far get one audit record, so that the verification can hold
 * every later change to the history (see schema_v2). Runs inside the migration's transaction. */
static int audit_upgrade(struct sq *s)
{
    int64_t head = 0;
    int rc = 0;

    rc = query_int(s, "SELECT COALESCE(MAX(id), 0) FROM feed", "audit upgrade", &head);
    if (rc != 0 || head == 0)
        return rc;
    rc = store__audit_changes(&s->base, "pkiva", "schema-upgrade",
                              "{\"note\":\"changes before audit schema 2, as they stood\"}", 1,
                              head);
    if (rc == 0)
        UTIL_INFO(STORE_MOD,
                  "%s: audit log upgraded; changes 1-%" PRId64 " are recorded as they stood",
                  s->path, head);
    return rc;
}

/* Brings the schema to STORE_SCHEMA_VERSION. The version is read again under the write lock because
 * another process may have migrated the file while this one waited. */
static int migrate(struct sq *s, int readonly)
{
    char sql[64];
    int64_t version = 0;
    int64_t app_id = 0;
    int64_t objects = 0;
    int in_tx = 0;
    int i = 0;
    int rc = 0;

    rc = query_int(s, "PRAGMA user_version", "read schema version", &version);
    if (rc != 0)
        goto out;
    if (version == STORE_SCHEMA_VERSION)
        goto out;
    if (version > STORE_SCHEMA_VERSION) {
        UTIL_ERROR(STORE_MOD,
                   "open %s: schema version %" PRId64 " is newer than this pkiva (%d); "
                   "upgrade pkiva",
                   s->path, version, STORE_SCHEMA_VERSION);
        rc = UTIL_ESTORE;
        goto out;
    }
    if (readonly) {
        UTIL_ERROR(STORE_MOD,
                   "open %s: schema version %" PRId64 " needs migrating to %d; open it "
                   "read-write once",
                   s->path, version, STORE_SCHEMA_VERSION);
        rc = UTIL_ESTORE;
        goto out;
    }
    rc = exec_sql(s, "BEGIN IMMEDIATE", "migrate");
    if (rc != 0)
        goto out;
    in_tx = 1;
    rc = query_int(s, "PRAGMA user_version", "read schema version", &version);
    if (rc != 0)
        goto out;
    if (version == 0) {
        rc = query_int(s, "PRAGMA application_id", "read application id", &app_id);
        if (rc == 0)
            rc = query_int(s, "SELECT count(*) FROM sqlite_schema", "read schema", &objects);
        if (rc != 0)
            goto out;
        if (objects != 0 && app_id != STORE_APPLICATION_ID) {
            UTIL_ERROR(STORE_MOD, "open %s: not a pkiva database (it has other tables)", s->path);
            rc = UTIL_ECONFIG;
            goto out;
        }
        (void)snprintf(sql, sizeof(sql), "PRAGMA application_id = %d", STORE_APPLICATION_ID);
        rc = exec_sql(s, sql, "set application id"); /* fits: sql is large enough by far */
        if (rc != 0)
            goto out;
    }
    for (i = (int)version; i < STORE_SCHEMA_VERSION; i++) {
        rc = exec_sql(s, migrations[i], "migrate");
        if (rc != 0) {
            UTIL_ERROR(STORE_MOD, "open %s: migration to schema version %d failed", s->path, i + 1);
            goto out;
        }
    }
    if (version == 1) {
        rc = audit_upgrade(s);
        if (rc != 0)
            goto out;
    }
    (void)snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
    rc = exec_sql(s, sql, "set schema version");
    if (rc != 0)
        goto out;
    rc = exec_sql(s, "COMMIT", "migrate");
    if (rc != 0)
        goto out;
    in_tx = 0;
    if (version < STORE_SCHEMA_VERSION)
        UTIL_INFO(STORE_MOD, "%s: schema migrated from version %" PRId64 " to %d", s->path, version,
                  STORE_SCHEMA_VERSION);
out:
    if (in_tx && !sqlite3_get_autocommit(s->db))
        (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); /* nothing else to do on failure */
    return rc;
}

/* ---- search index (writes) ------------------------------------------------------------------ */

/* Indexes one certificate for the directory (cert_add and the catch-up). A DER that does not parse
 * as a certificate is simply not searchable by name or fingerprint (its serial still is). */
static int search_index_add(struct sq *s, int64_t der_id, int64_t issuer_id,
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
    rc = stmt_get(s, STORE_ST_SEARCH_INSERT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, der_id) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 3, serial, (int)serial_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, keys->fp_sha256) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 5, keys->fp_sha1) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0 || sqlite3_changes(s->db) != 1)
        goto out; /* already indexed (the catch-up met a certificate cert_add indexed) */
    (void)snprintf(iss, sizeof(iss), "i%lld", (long long)issuer_id); /* fits */
    rc = stmt_get(s, STORE_ST_FTS_INSERT, &fts);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(fts, 1, der_id) != SQLITE_OK ||
        sqlite3_bind_text(fts, 2, iss, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(fts, 3, keys->cn, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(fts, 4, keys->o, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(fts, 5, keys->ou, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(fts, 6, keys->email, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, fts, op, &row);
    for (const char *p = keys->email; rc == 0 && *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int64_t key = store__email_key(p, len);
        p += len;
        while (*p == ' ')
            p++;
        if (key == 0)
            continue;
        rc = stmt_get(s, STORE_ST_EMAIL_INSERT, &mail);
        if (rc != 0)
            break;
        if (sqlite3_bind_int64(mail, 1, key) != SQLITE_OK ||
            sqlite3_bind_int64(mail, 2, der_id) != SQLITE_OK)
            rc = bind_err(s, op);
        if (rc == 0)
            rc = step(s, mail, op, &row);
        stmt_put(s, STORE_ST_EMAIL_INSERT, mail);
        mail = NULL;
    }
out:
    stmt_put(s, STORE_ST_EMAIL_INSERT, mail);
    stmt_put(s, STORE_ST_FTS_INSERT, fts);
    stmt_put(s, STORE_ST_SEARCH_INSERT, stmt);
    free(keys);
    return rc;
}

#define STORE_BACKFILL_BATCH 512

/* Indexes, in batches of one transaction each, the certificates registered before the search
 * index existed, from the position saved in search_backfill; removes that row when done. Runs at
 * a read-write open; a crash or a concurrent opener only repeats a batch (the inserts ignore
 * what is indexed already). */
static int search_backfill(struct sq *s)
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
    rc = stmt_get(s, STORE_ST_BACKFILL_GET, &stmt);
    if (rc == 0)
        rc = step(s, stmt, op, &row);
    stmt_put(s, STORE_ST_BACKFILL_GET, stmt);
    stmt = NULL;
    if (rc != 0 || !row)
        return rc;
    for (;;) {
        int n = 0;
        rc = tx_start(s, op, &kind);
        if (rc != 0)
            goto out;
        rc = stmt_get(s, STORE_ST_BACKFILL_GET, &stmt);
        if (rc == 0)
            rc = step(s, stmt, op, &row);
        if (rc == 0 && row) {
            int len = sqlite3_column_bytes(stmt, 1);
            pos_issuer = sqlite3_column_int64(stmt, 0);
            pos_len = len > 0 && len <= STORE_SERIAL_MAX ? (size_t)len : 0;
            if (pos_len > 0)
                memcpy(pos_serial, sqlite3_column_blob(stmt, 1), pos_len);
        }
        stmt_put(s, STORE_ST_BACKFILL_GET, stmt);
        stmt = NULL;
        if (rc != 0 || !row)
            goto out; /* nothing (left) to catch up */
        if (done == 0)
            UTIL_INFO(STORE_MOD,
                      "%s: indexing the certificates registered before the search "
                      "index existed",
                      s->path);
        rc = stmt_get(s, STORE_ST_BACKFILL_BATCH, &stmt);
        if (rc != 0)
            goto out;
        if (sqlite3_bind_int64(stmt, 1, pos_issuer) != SQLITE_OK ||
            sqlite3_bind_blob(stmt, 2, pos_serial, (int)pos_len, SQLITE_TRANSIENT) != SQLITE_OK ||
            sqlite3_bind_int(stmt, 3, STORE_BACKFILL_BATCH) != SQLITE_OK) {
            rc = bind_err(s, op);
            goto out;
        }
        for (;;) {
            int len = 0;
            rc = step(s, stmt, op, &row);
            if (rc != 0 || !row)
                break;
            len = sqlite3_column_bytes(stmt, 1);
            if (len < 1 || len > STORE_SERIAL_MAX)
                continue;
            pos_issuer = sqlite3_column_int64(stmt, 0);
            pos_len = (size_t)len;
            memcpy(pos_serial, sqlite3_column_blob(stmt, 1), pos_len);
            rc = search_index_add(s, sqlite3_column_int64(stmt, 2), pos_issuer, pos_serial, pos_len,
                                  sqlite3_column_blob(stmt, 3),
                                  (size_t)sqlite3_column_bytes(stmt, 3), op);
            if (rc != 0)
                break;
            n++;
        }
        stmt_put(s, STORE_ST_BACKFILL_BATCH, stmt);
        stmt = NULL;
        if (rc != 0)
            goto out;
        if (n < STORE_BACKFILL_BATCH) {
            rc = exec_stmt(s, STORE_ST_BACKFILL_DONE, op);
        } else {
            rc = stmt_get(s, STORE_ST_BACKFILL_SET, &stmt);
            if (rc == 0 &&
                (sqlite3_bind_int64(stmt, 1, pos_issuer) != SQLITE_OK ||
                 sqlite3_bind_blob(stmt, 2, pos_serial, (int)pos_len, SQLITE_STATIC) != SQLITE_OK))
                rc = bind_err(s, op);
            if (rc == 0)
                rc = step(s, stmt, op, &row);
            stmt_put(s, STORE_ST_BACKFILL_SET, stmt);
            stmt = NULL;
        }
        rc = tx_finish(s, kind, rc, op);
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
    return tx_finish(s, kind, rc, op);
}

static void sq_close(struct store *store)
{
    struct sq *s = sq_of(store);
    int i = 0;

    if (s->depth > 0)
        UTIL_WARN(STORE_MOD, "close %s: an explicit transaction was still open and is rolled back",
                  s->path);
    for (i = 0; i < STORE_ST_COUNT; i++)
        (void)sqlite3_finalize(s->stmts[i]); /* NULL-safe; errors were reported by their steps */
    if (s->db != NULL && sqlite3_close(s->db) != SQLITE_OK)
        UTIL_ERROR(STORE_MOD, "close %s: %s", s->path, sqlite3_errmsg(s->db));
    free(s->path);
    free(s);
}

static const struct store__ops sq_ops;

int store__sqlite_open(const char *path, int flags, struct store **out)
{
    struct sq *s = NULL;
    struct stat st;
    int readonly = (flags & STORE_OPEN_READONLY) != 0;
    int oflags = SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    int rc = 0;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    s->base.ops = &sq_ops;
    s->path = strdup(path);
    if (s->path == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    s->busy_ms = busy_ms_from_env();
    if ((flags & STORE_OPEN_CREATE) == 0 && stat(path, &st) != 0) {
        rc = util_errno(errno);
        UTIL_ERROR(STORE_MOD, "open %s: %s", path, strerror(errno));
        goto out;
    }
    if (readonly)
        oflags |= SQLITE_OPEN_READONLY;
    else
        oflags |= SQLITE_OPEN_READWRITE | ((flags & STORE_OPEN_CREATE) ? SQLITE_OPEN_CREATE : 0);
    rc = sqlite3_open_v2(path, &s->db, oflags, NULL);
    if (rc != SQLITE_OK) {
        if (s->db == NULL) {
            UTIL_ERROR(STORE_MOD, "open %s: out of memory", path);
            rc = UTIL_ENOMEM;
            goto out;
        }
        rc = sq_err(s, rc, "open");
        goto out;
    }
    (void)sqlite3_extended_result_codes(s->db, 1); /* always SQLITE_OK on an open handle */
    (void)sqlite3_busy_timeout(s->db, s->busy_ms); /* same */
    /* trusted_schema = OFF: the file may be writable by another process; do not let SQL functions
     * in its schema run with our privileges. */
    rc = exec_sql(s,
                  "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; "
                  "PRAGMA trusted_schema = OFF",
                  "configure connection");
    if (rc != 0)
        goto out;
    if (!readonly) {
        rc = set_wal(s);
        if (rc != 0)
            goto out;
    }
    rc = migrate(s, readonly);
    if (rc == 0 && !readonly)
        rc = search_backfill(s);
    if (rc != 0)
        goto out;
    *out = &s->base;
    s = NULL;
out:
    if (s != NULL)
        sq_close(&s->base);
    return rc;
}

static int sq_ping(struct store *store)
{
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_PING, &stmt);
    if (rc == 0)
        rc = step(s, stmt, "ping", &row);
    stmt_put(s, STORE_ST_PING, stmt);
    return rc;
}

/* ---- issuers -------------------------------------------------------------------------------- */

/* Copies one issuer row (id, name, cert_der) into *out; the caller cleans it up. */
static int read_issuer(sqlite3_stmt *stmt, struct store_issuer *out)
{
    const unsigned char *name = sqlite3_column_text(stmt, 1);
    const void *der = sqlite3_column_blob(stmt, 2);
    int der_len = sqlite3_column_bytes(stmt, 2);

    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(stmt, 0);
    if (name != NULL)
        (void)snprintf(out->name, sizeof(out->name), "%s", (const char *)name); /* names are
                                                                                  bounded at put */
    if (der_len > 0) {
        out->cert_der = malloc((size_t)der_len);
        if (out->cert_der == NULL)
            return UTIL_ENOMEM;
        memcpy(out->cert_der, der, (size_t)der_len);
        out->cert_len = (size_t)der_len;
    }
    return 0;
}

static int sq_issuer_put(struct store *store, const char *name, const unsigned char *cert_der,
                         size_t cert_len, int64_t *id_out)
{
    static const char op[] = "issuer put";
    struct sq *s = sq_of(store);
    sqlite3_stmt *find = NULL;
    sqlite3_stmt *insert = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    if (cert_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_ISSUER_BY_NAME, &find);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_text(find, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, find, op, &row);
    if (rc != 0)
        goto out;
    if (row) {
        int same = (size_t)sqlite3_column_bytes(find, 2) == cert_len &&
                   memcmp(sqlite3_column_blob(find, 2), cert_der, cert_len) == 0;
        if (!same) {
            UTIL_ERROR(STORE_MOD, "issuer %s is already registered with a different certificate",
                       name);
            rc = UTIL_EEXIST;
            goto out;
        }
        *id_out = sqlite3_column_int64(find, 0);
        goto out;
    }
    rc = stmt_get(s, STORE_ST_ISSUER_INSERT, &insert);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_text(insert, 1, name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 2, cert_der, (int)cert_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 3, util_now_ms()) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, insert, op, &row);
    if (rc != 0)
        goto out;
    *id_out = sqlite3_last_insert_rowid(s->db);
    UTIL_INFO(STORE_MOD, "issuer %s registered with id %" PRId64, name, *id_out);
out:
    stmt_put(s, STORE_ST_ISSUER_BY_NAME, find);
    stmt_put(s, STORE_ST_ISSUER_INSERT, insert);
    return tx_finish(s, kind, rc, op);
}

static int sq_issuer_get(struct store *store, const char *name, struct store_issuer *out)
{
    static const char op[] = "issuer get";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_ISSUER_BY_NAME, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    rc = read_issuer(stmt, out);
    if (rc != 0)
        store_issuer_cleanup(out);
out:
    stmt_put(s, STORE_ST_ISSUER_BY_NAME, stmt);
    return rc;
}

static int sq_issuer_list(struct store *store,
                          int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx)
{
    static const char op[] = "issuer list";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_issuer issuer;
    int row = 0;
    int rc = 0;

    memset(&issuer, 0, sizeof(issuer));
    rc = stmt_get(s, STORE_ST_ISSUER_LIST, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        rc = read_issuer(stmt, &issuer);
        if (rc == 0)
            rc = fn(ctx, &issuer);
        store_issuer_cleanup(&issuer);
        if (rc != 0)
            goto out;
    }
out:
    stmt_put(s, STORE_ST_ISSUER_LIST, stmt);
    return rc;
}

/* ---- certificates --------------------------------------------------------------------------- */

/* Fills *c from the STORE_CERT_COLS columns starting at column first. */
static int read_cert(struct sq *s, sqlite3_stmt *stmt, int first, struct store_cert *c)
{
    const void *serial = sqlite3_column_blob(stmt, first + 1);
    int serial_len = sqlite3_column_bytes(stmt, first + 1);

    memset(c, 0, sizeof(*c));
    if (serial_len < 1 || serial_len > STORE_SERIAL_MAX) {
        UTIL_ERROR(STORE_MOD, "%s: a certificate row has a serial of %d octets", s->path,
                   serial_len);
        return UTIL_ESTORE;
    }
    c->issuer_id = sqlite3_column_int64(stmt, first);
    memcpy(c->serial, serial, (size_t)serial_len);
    c->serial_len = (size_t)serial_len;
    c->not_before = sqlite3_column_int64(stmt, first + 2);
    c->not_after = sqlite3_column_int64(stmt, first + 3);
    c->status = sqlite3_column_int(stmt, first + 4);
    c->revoked_at = sqlite3_column_int64(stmt, first + 5);
    c->reason = sqlite3_column_int(stmt, first + 6);
    c->invalidity_date = sqlite3_column_int64(stmt, first + 7);
    c->feed_id = sqlite3_column_int64(stmt, first + 8);
    return 0;
}

/* Looks a certificate up; *found = 0 if absent. */
static int cert_lookup(struct sq *s, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *op, struct store_cert *out, int *found)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    *found = 0;
    rc = stmt_get(s, STORE_ST_CERT_GET, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, serial, (int)serial_len, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0 || !row)
        goto out;
    rc = read_cert(s, stmt, 0, out);
    if (rc == 0)
        *found = 1;
out:
    stmt_put(s, STORE_ST_CERT_GET, stmt);
    return rc;
}

/* Appends one change to the feed and returns its id. */
static int feed_append(struct sq *s, int kind, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, int64_t at_ms, const char *actor, const char *op,
                       int64_t *feed_id)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_FEED_INSERT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int(stmt, 1, kind) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 3, serial, (int)serial_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, at_ms) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 5, actor, -1, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc == 0)
        *feed_id = sqlite3_last_insert_rowid(s->db);
out:
    stmt_put(s, STORE_ST_FEED_INSERT, stmt);
    return rc;
}

/* Writes the certificate's new status and the id of the change that set it. */
static int cert_set_status(struct sq *s, const struct store_cert *c, const char *op)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_CERT_SET_STATUS, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, c->issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, c->serial, (int)c->serial_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 3, c->status) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, c->revoked_at) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 5, c->reason) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 6, c->invalidity_date) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 7, c->feed_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc == 0 && sqlite3_changes(s->db) != 1) {
        UTIL_ERROR(STORE_MOD, "%s: %s: certificate row vanished inside the transaction", op,
                   s->path);
        rc = UTIL_ESTORE;
    }
out:
    stmt_put(s, STORE_ST_CERT_SET_STATUS, stmt);
    return rc;
}

/* Records a revocation request for the SLA report; committed_at_ms is the time the write lock was
 * held, i.e. just before the commit that makes it durable. */
static int revocation_insert(struct sq *s, int64_t feed_id, const struct store_cert *c,
                             const struct store_revocation *rev, int64_t committed_at_ms,
                             const char *op)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_REVOCATION_INSERT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, feed_id) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, c->issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 3, c->serial, (int)c->serial_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 4, c->reason) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 5, c->revoked_at) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 6, c->invalidity_date) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 7, rev->request_id, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 8,
                           rev->received_at_ms != 0 ? rev->received_at_ms : committed_at_ms) !=
            SQLITE_OK ||
        sqlite3_bind_int64(stmt, 9, committed_at_ms) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 10, rev->actor != NULL ? rev->actor : "unknown", -1,
                          SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
out:
    stmt_put(s, STORE_ST_REVOCATION_INSERT, stmt);
    return rc;
}

static int der_insert(struct sq *s, const unsigned char *der, size_t der_len, const char *op,
                      int64_t *der_id)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_DER_INSERT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_blob(stmt, 1, der, (int)der_len, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc == 0)
        *der_id = sqlite3_last_insert_rowid(s->db);
out:
    stmt_put(s, STORE_ST_DER_INSERT, stmt);
    return rc;
}

static int sq_cert_add(struct store *store, const struct store_cert_new *cert,
                       const struct store_revocation *rev, int64_t *feed_id_out, int *created_out)
{
    static const char op[] = "cert add";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_cert c;
    enum tx_kind kind = 0;
    int64_t now_ms = 0;
    int64_t der_id = 0;
    int found = 0;
    int row = 0;
    int rc = 0;

    *created_out = 0;
    if (cert->cert_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = cert_lookup(s, cert->issuer_id, cert->serial, cert->serial_len, op, &c, &found);
    if (rc != 0)
        goto out;
    if (found) {
        *feed_id_out = c.feed_id;
        goto out;
    }
    now_ms = util_now_ms();
    memset(&c, 0, sizeof(c));
    c.issuer_id = cert->issuer_id;
    memcpy(c.serial, cert->serial, cert->serial_len);
    c.serial_len = cert->serial_len;
    c.not_before = cert->not_before;
    c.not_after = cert->not_after;
    c.status = STORE_GOOD;
    c.reason = STORE_REASON_NONE;
    if (rev != NULL) {
        c.status = STORE_REVOKED;
        c.reason = rev->reason;
        c.revoked_at = rev->revoked_at != 0 ? rev->revoked_at : now_ms / 1000;
        c.invalidity_date = rev->invalidity_date;
    }
    if (cert->cert_der != NULL && cert->cert_len > 0) {
        rc = der_insert(s, cert->cert_der, cert->cert_len, op, &der_id);
        if (rc != 0)
            goto out;
    }
    rc = feed_append(s, rev != NULL ? STORE_CHANGE_REVOKE : STORE_CHANGE_ISSUE, c.issuer_id,
                     c.serial, c.serial_len, now_ms, rev != NULL ? rev->actor : NULL, op,
                     &c.feed_id);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_CERT_INSERT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, c.issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, c.serial, (int)c.serial_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, c.not_before) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 4, c.not_after) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 5, c.status) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 6, c.revoked_at) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 7, c.reason) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 8, c.invalidity_date) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 9, c.feed_id) != SQLITE_OK ||
        sqlite3_bind_text(stmt, 10, cert->subject, -1, SQLITE_STATIC) != SQLITE_OK ||
        (der_id != 0 ? sqlite3_bind_int64(stmt, 11, der_id) : sqlite3_bind_null(stmt, 11)) !=
            SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (rev != NULL) {
        rc = revocation_insert(s, c.feed_id, &c, rev, now_ms, op);
        if (rc != 0)
            goto out;
    }
    if (der_id != 0) {
        rc = search_index_add(s, der_id, c.issuer_id, c.serial, c.serial_len, cert->cert_der,
                              cert->cert_len, op);
        if (rc != 0)
            goto out;
    }
    *feed_id_out = c.feed_id;
    *created_out = 1;
out:
    stmt_put(s, STORE_ST_CERT_INSERT, stmt);
    return tx_finish(s, kind, rc, op);
}

static int sq_cert_get(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, struct store_cert *out)
{
    int found = 0;
    int rc = 0;

    rc = cert_lookup(sq_of(store), issuer_id, serial, serial_len, "cert get", out, &found);
    if (rc == 0 && !found)
        rc = UTIL_ENOTFOUND;
    return rc;
}

static int sq_cert_der(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, unsigned char **der, size_t *der_len)
{
    static const char op[] = "cert der";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    const void *blob = NULL;
    int len = 0;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_CERT_DER, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 2, serial, (int)serial_len, SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    blob = row ? sqlite3_column_blob(stmt, 0) : NULL;
    len = row ? sqlite3_column_bytes(stmt, 0) : 0;
    if (blob == NULL || len <= 0) {
        rc = UTIL_ENOTFOUND;
        goto out;
    }
    *der = malloc((size_t)len);
    if (*der == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    memcpy(*der, blob, (size_t)len);
    *der_len = (size_t)len;
out:
    stmt_put(s, STORE_ST_CERT_DER, stmt);
    return rc;
}

static int sq_cert_iterate(struct store *store, int64_t issuer_id, int filter,
                           int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    static const char op[] = "cert iterate";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_cert c;
    enum sq_stmt_id id = 0;
    int row = 0;
    int rc = 0;

    if (filter == STORE_ITER_REVOKED)
        id = issuer_id > 0 ? STORE_ST_CERT_ITER_REVOKED_ISSUER : STORE_ST_CERT_ITER_REVOKED_ALL;
    else
        id = issuer_id > 0 ? STORE_ST_CERT_ITER_ISSUER : STORE_ST_CERT_ITER_ALL;
    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    if (issuer_id > 0 && sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    for (;;) {
        rc = step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        rc = read_cert(s, stmt, 0, &c);
        if (rc == 0)
            rc = fn(ctx, &c);
        if (rc != 0)
            goto out;
    }
out:
    stmt_put(s, id, stmt);
    return rc;
}

/* ---- revocation ----------------------------------------------------------------------------- */

static int sq_revoke(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                     int *changed_out)
{
    static const char op[] = "revoke";
    struct sq *s = sq_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int64_t now_ms = 0;
    int found = 0;
    int rc = 0;

    *changed_out = 0;
    rc = tx_start(s, op, &kind);
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
                      "revoke: certificate already revoked (%s); only a hold may change "
                      "reason",
                      store_reason_name(c.reason));
            rc = UTIL_EEXIST;
            goto out;
        }
        /* A hold made permanent: the certificate has been unusable since the hold, so its
         * revocation date stays unless the request names one. */
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

static int sq_unrevoke(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *actor, int64_t *feed_id_out)
{
    static const char op[] = "unrevoke";
    struct sq *s = sq_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int found = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind);
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

static int sq_feed_read(struct store *store, int64_t after_id, int max,
                        int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    static const char op[] = "feed read";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_change change;
    int delivered = 0;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_FEED_READ, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, after_id) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 2, max) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    for (;;) {
        rc = step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&change, 0, sizeof(change));
        change.id = sqlite3_column_int64(stmt, 0);
        change.kind = sqlite3_column_int(stmt, 1);
        change.at_ms = sqlite3_column_int64(stmt, 2);
        rc = read_cert(s, stmt, 3, &change.cert);
        if (rc != 0)
            goto out;
        delivered++;
        rc = fn(ctx, &change);
        /* A negative return is the callback's error; a positive one just stops early. */
        if (rc < 0)
            goto out;
        if (rc > 0) {
            rc = 0;
            goto out;
        }
    }
out:
    stmt_put(s, STORE_ST_FEED_READ, stmt);
    return rc != 0 ? rc : delivered;
}

static int sq_feed_head(struct store *store, int64_t *id_out)
{
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_FEED_HEAD, &stmt);
    if (rc != 0)
        goto out;
    rc = step(s, stmt, "feed head", &row);
    if (rc == 0 && row)
        *id_out = sqlite3_column_int64(stmt, 0);
out:
    stmt_put(s, STORE_ST_FEED_HEAD, stmt);
    return rc;
}

/* ---- SLA ------------------------------------------------------------------------------------ */

static int sq_sla_mark(struct store *store, int64_t feed_id, int stage, int64_t at_ms)
{
    static const char op[] = "sla mark";
    struct sq *s = sq_of(store);
    enum sq_stmt_id id = stage == STORE_SLA_OCSP ? STORE_ST_SLA_MARK_OCSP : STORE_ST_SLA_MARK_CRL;
    sqlite3_stmt *mark = NULL;
    sqlite3_stmt *exists = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, id, &mark);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(mark, 1, feed_id) != SQLITE_OK ||
        sqlite3_bind_int64(mark, 2, at_ms) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, mark, op, &row);
    if (rc != 0 || sqlite3_changes(s->db) == 1)
        goto out;
    /* Nothing updated: either it was marked before (fine, the first time stays) or there is no
     * such revocation. */
    rc = stmt_get(s, STORE_ST_SLA_EXISTS, &exists);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(exists, 1, feed_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, exists, op, &row);
    if (rc == 0 && !row)
        rc = UTIL_ENOTFOUND;
out:
    stmt_put(s, id, mark);
    stmt_put(s, STORE_ST_SLA_EXISTS, exists);
    return tx_finish(s, kind, rc, op);
}

static int sq_sla_mark_upto(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                            int stage, int64_t at_ms)
{
    static const char op[] = "sla mark up to";
    struct sq *s = sq_of(store);
    enum sq_stmt_id id = stage == STORE_SLA_OCSP ? STORE_ST_SLA_UPTO_OCSP : STORE_ST_SLA_UPTO_CRL;
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, up_to_feed_id) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, at_ms) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
out:
    stmt_put(s, id, stmt);
    return tx_finish(s, kind, rc, op);
}

static int sq_sla_list(struct store *store, int open_only, int limit,
                       int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    static const char op[] = "sla list";
    struct sq *s = sq_of(store);
    enum sq_stmt_id id = open_only ? STORE_ST_SLA_LIST_OPEN : STORE_ST_SLA_LIST_ALL;
    sqlite3_stmt *stmt = NULL;
    struct store_sla_row sla;
    const void *serial = NULL;
    int serial_len = 0;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    /* SQLite reads a negative LIMIT as "no limit". */
    if (sqlite3_bind_int(stmt, 1, limit > 0 ? limit : -1) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    for (;;) {
        rc = step(s, stmt, op, &row);
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
    stmt_put(s, id, stmt);
    return rc;
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

static int sq_crl_number_next(struct store *store, int64_t issuer_id, int64_t *number_out)
{
    static const char op[] = "crl number next";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int64_t number = 0;
    int row = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_CRL_NUMBER_NEXT, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        rc = UTIL_ESTORE;
        goto out;
    }
    number = sqlite3_column_int64(stmt, 0);
    /* Step to the end so the statement is finished before the commit. */
    rc = step(s, stmt, op, &row);
out:
    stmt_put(s, STORE_ST_CRL_NUMBER_NEXT, stmt);
    rc = tx_finish(s, kind, rc, op);
    if (rc == 0)
        *number_out = number;
    return rc;
}

static int sq_crl_save(struct store *store, const struct store_crl_record *crl)
{
    static const char op[] = "crl save";
    struct sq *s = sq_of(store);
    sqlite3_stmt *reserved = NULL;
    sqlite3_stmt *insert = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    if (crl->der_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    /* Saving a number that was never reserved would let a later reservation hand it out again. */
    rc = stmt_get(s, STORE_ST_CRL_RESERVED, &reserved);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(reserved, 1, crl->issuer_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, reserved, op, &row);
    if (rc != 0)
        goto out;
    if (!row || sqlite3_column_int64(reserved, 0) < crl->number) {
        UTIL_ERROR(STORE_MOD,
                   "crl save: number %" PRId64 " of issuer %" PRId64 " was never reserved",
                   crl->number, crl->issuer_id);
        rc = UTIL_EINVAL;
        goto out;
    }
    rc = stmt_get(s, STORE_ST_CRL_INSERT, &insert);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(insert, 1, crl->issuer_id) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 2, crl->number) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 3, crl->base_number) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 4, crl->this_update) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 5, crl->next_update) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 6, crl->feed_id) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 7, crl->der, (int)crl->der_len, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 8, util_now_ms()) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, insert, op, &row);
out:
    stmt_put(s, STORE_ST_CRL_RESERVED, reserved);
    stmt_put(s, STORE_ST_CRL_INSERT, insert);
    return tx_finish(s, kind, rc, op);
}

static int sq_crl_latest(struct store *store, int64_t issuer_id, int delta,
                         struct store_crl_record *meta_out, unsigned char **der_out)
{
    static const char op[] = "crl latest";
    struct sq *s = sq_of(store);
    enum sq_stmt_id id = delta ? STORE_ST_CRL_LATEST_DELTA : STORE_ST_CRL_LATEST_FULL;
    sqlite3_stmt *stmt = NULL;
    unsigned char *der = NULL;
    const void *blob = NULL;
    int len = 0;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, issuer_id) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
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
    stmt_put(s, id, stmt);
    return rc;
}

/* ---- TSA ------------------------------------------------------------------------------------ */

static int sq_tsa_reserve(struct store *store, const char *unit, int64_t count, int64_t floor,
                          int64_t *first_out)
{
    static const char op[] = "tsa reserve";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    int64_t first = 0;
    int row = 0;
    int rc = 0;

    if (count >= INT64_MAX - 1 || floor > INT64_MAX - count)
        return UTIL_EINVAL;
    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_TSA_RESERVE, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_text(stmt, 1, unit, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, count) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, floor) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (!row) {
        UTIL_ERROR(STORE_MOD, "tsa reserve: serials of unit %s would overflow 64 bits", unit);
        rc = UTIL_EINVAL;
        goto out;
    }
    first = sqlite3_column_int64(stmt, 0);
    rc = step(s, stmt, op, &row);
out:
    stmt_put(s, STORE_ST_TSA_RESERVE, stmt);
    rc = tx_finish(s, kind, rc, op);
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

static int sq_tsa_token_get(struct store *store, const unsigned char *cert_id, const char *unit,
                            int64_t serial, struct store_tsa_record *out)
{
    static const char op[] = "tsa token get";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    const void *blob = NULL;
    int len = 0, row = 0, rc = 0;

    if (strlen(unit) >= sizeof(out->unit))
        return UTIL_ENOTFOUND; /* no unit has such a name */
    rc = stmt_get(s, STORE_ST_TSA_TOKEN_GET, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_text(stmt, 1, unit, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, serial) != SQLITE_OK ||
        sqlite3_bind_blob(stmt, 3, cert_id != NULL ? (const void *)cert_id : "",
                          cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0,
                          SQLITE_STATIC) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
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
    rc = step(s, stmt, op, &row); /* to the end: resets cleanly */
out:
    stmt_put(s, STORE_ST_TSA_TOKEN_GET, stmt);
    return rc;
}

static int sq_tsa_log(struct store *store, const struct store_tsa_token *tokens, size_t n)
{
    static const char op[] = "tsa log";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum tx_kind kind = 0;
    size_t i = 0;
    int row = 0;
    int rc = 0;

    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_TSA_LOG, &stmt);
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
        if (sqlite3_bind_text(stmt, 1, t->unit, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 2, t->serial) != SQLITE_OK ||
            sqlite3_bind_int64(stmt, 3, t->gen_time_ms) != SQLITE_OK ||
            sqlite3_bind_text(stmt, 4, t->policy, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_text(stmt, 5, t->imprint_alg, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_blob(stmt, 6, t->imprint != NULL ? (const void *)t->imprint : "",
                              (int)t->imprint_len, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_bind_blob(stmt, 7, t->cert_id != NULL ? (const void *)t->cert_id : "",
                              t->cert_id != NULL ? STORE_TSA_CERT_ID_LEN : 0,
                              SQLITE_STATIC) != SQLITE_OK) {
            rc = bind_err(s, op);
            goto out;
        }
        rc = step(s, stmt, op, &row);
        if (rc != 0) {
            UTIL_ERROR(STORE_MOD,
                       "tsa log: token %s/%" PRId64 " failed; none of the %zu tokens "
                       "of this group is recorded",
                       t->unit, t->serial, n);
            goto out;
        }
    }
out:
    stmt_put(s, STORE_ST_TSA_LOG, stmt);
    return tx_finish(s, kind, rc, op);
}

/* ---- audit ---------------------------------------------------------------------------------- */

static int sq_audit_append(struct store *store, const struct store__audit_new *rec)
{
    static const char op[] = "audit append";
    struct sq *s = sq_of(store);
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
    rc = tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_AUDIT_LAST, &last);
    if (rc == 0)
        rc = step(s, last, op, &rc_row);
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
    rc = stmt_get(s, STORE_ST_AUDIT_SEQ, &seq);
    if (rc == 0)
        rc = step(s, seq, op, &rc_row);
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
    rc = stmt_get(s, STORE_ST_AUDIT_INSERT, &insert);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(insert, 1, row.id) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 2, row.at_ms) != SQLITE_OK ||
        sqlite3_bind_text(insert, 3, row.actor, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(insert, 4, row.action, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_text(insert, 5, row.detail, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 6, prev, sizeof(prev), SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 7, hash, sizeof(hash), SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 8, row.feed_first) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 9, row.feed_last) != SQLITE_OK ||
        (has_changes
             ? sqlite3_bind_blob(insert, 10, row.changes, (int)row.changes_len, SQLITE_STATIC)
             : sqlite3_bind_null(insert, 10)) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, insert, op, &rc_row);
out:
    stmt_put(s, STORE_ST_AUDIT_LAST, last);
    stmt_put(s, STORE_ST_AUDIT_SEQ, seq);
    stmt_put(s, STORE_ST_AUDIT_INSERT, insert);
    return tx_finish(s, kind, rc, op);
}

static int sq_audit_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__audit_row *row), void *ctx,
                         int64_t *last_id_out)
{
    static const char op[] = "audit walk";
    struct sq *s = sq_of(store);
    sqlite3_stmt *walk = NULL;
    sqlite3_stmt *seq = NULL;
    struct store__audit_row r;
    int opened = 0;
    int row = 0;
    int rc = 0;

    *last_id_out = 0;
    /* One snapshot for the rows and the sequence, so that a concurrent append cannot look like a
     * removed tail. */
    rc = rx_start(s, op, &opened);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_AUDIT_WALK, &walk);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = step(s, walk, op, &row);
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
    rc = stmt_get(s, STORE_ST_AUDIT_SEQ, &seq);
    if (rc == 0)
        rc = step(s, seq, op, &row);
    if (rc == 0 && row)
        *last_id_out = sqlite3_column_int64(seq, 0);
out:
    stmt_put(s, STORE_ST_AUDIT_WALK, walk);
    stmt_put(s, STORE_ST_AUDIT_SEQ, seq);
    rx_finish(s, opened, op);
    return rc;
}

static int sq_change_walk(struct store *store, int64_t first, int64_t last,
                          int (*fn)(void *ctx, const struct store__change_row *row), void *ctx)
{
    static const char op[] = "change walk";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__change_row ch;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_CHANGE_WALK, &stmt);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(stmt, 1, first) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, last) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    for (;;) {
        rc = step(s, stmt, op, &row);
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
    stmt_put(s, STORE_ST_CHANGE_WALK, stmt);
    return rc;
}

static int sq_state_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__state_row *row), void *ctx)
{
    static const char op[] = "state walk";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__state_row r;
    int opened = 0;
    int row = 0;
    int rc = 0;

    rc = rx_start(s, op, &opened);
    if (rc != 0)
        goto out;
    rc = stmt_get(s, STORE_ST_STATE_WALK, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&r, 0, sizeof(r));
        rc = read_cert(s, stmt, 0, &r.cert);
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
    stmt_put(s, STORE_ST_STATE_WALK, stmt);
    rx_finish(s, opened, op);
    return rc;
}

/* Runs a cached one-integer query. */
static int query_stmt_int(struct sq *s, enum sq_stmt_id id, const char *op, int64_t *value)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    *value = 0;
    rc = stmt_get(s, id, &stmt);
    if (rc == 0)
        rc = step(s, stmt, op, &row);
    if (rc == 0 && row)
        *value = sqlite3_column_int64(stmt, 0);
    stmt_put(s, id, stmt);
    return rc;
}

static int sq_orphans(struct store *store, int64_t *change_id, int64_t *revocation_id,
                      int64_t *changes)
{
    static const char op[] = "audit orphans";
    struct sq *s = sq_of(store);
    int opened = 0;
    int rc = 0;

    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_ORPHAN_CHANGE, op, change_id);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_ORPHAN_REVOCATION, op, revocation_id);
    if (rc == 0)
        rc = query_stmt_int(s, STORE_ST_FEED_COUNT, op, changes);
    rx_finish(s, opened, op);
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
        rc = stmt_get(s, STORE_ST_SEAL_PENDING, &pending);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(pending, 1, *sealed_last) != SQLITE_OK ||
        sqlite3_bind_int(pending, 2, max) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    for (;;) {
        rc = step(s, pending, op, &row);
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
    stmt_put(s, STORE_ST_SEAL_PENDING, pending);
    return rc;
}

/* Signs outside the write lock (an HSM may be slow or queued behind OCSP signing; writers must not
 * wait for it), then inserts under the lock only if nobody sealed meanwhile and the records are
 * still the ones signed; otherwise the seal is dropped and the next round seals again. */
static int sq_seal_pending(struct store *store, int max,
                           int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                     size_t n, struct store__seal_row *seal),
                           void *ctx, int64_t *sealed_out)
{
    static const char op[] = "audit seal";
    struct sq *s = sq_of(store);
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
    rc = rx_start(s, op, &opened);
    if (rc == 0)
        rc = seal_read_pending(s, max, &sealed_last, hashes, &n, op);
    rx_finish(s, opened, op);
    if (rc != 0 || n == 0)
        goto out;
    rc = fn(ctx, sealed_last + 1, hashes, n, &seal);
    if (rc != 0)
        goto out;
    rc = tx_start(s, op, &kind);
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
    rc = stmt_get(s, STORE_ST_SEAL_INSERT, &insert);
    if (rc != 0)
        goto out;
    if (sqlite3_bind_int64(insert, 1, seal.first_id) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 2, seal.last_id) != SQLITE_OK ||
        sqlite3_bind_int64(insert, 3, seal.at_ms) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 4, seal.cert_sha256, (int)seal.cert_sha256_len, SQLITE_STATIC) !=
            SQLITE_OK ||
        sqlite3_bind_text(insert, 5, seal.md, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int(insert, 6, seal.rsa_pss) != SQLITE_OK ||
        sqlite3_bind_blob(insert, 7, seal.hashes, (int)seal.hashes_len, SQLITE_STATIC) !=
            SQLITE_OK ||
        sqlite3_bind_blob(insert, 8, seal.signature, (int)seal.signature_len, SQLITE_STATIC) !=
            SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, insert, op, &row);
    if (rc == 0)
        *sealed_out = (int64_t)n;
out:
    stmt_put(s, STORE_ST_SEAL_INSERT, insert);
    rc = tx_finish(s, kind, rc, op);
    free(hashes);
    if (rc != 0)
        *sealed_out = 0;
    return rc;
}

static int sq_seal_walk(struct store *store,
                        int (*fn)(void *ctx, const struct store__seal_row *row), void *ctx)
{
    static const char op[] = "audit seal walk";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store__seal_row r;
    int row = 0;
    int rc = 0;

    rc = stmt_get(s, STORE_ST_SEAL_WALK, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = step(s, stmt, op, &row);
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
    stmt_put(s, STORE_ST_SEAL_WALK, stmt);
    return rc;
}

static int sq_unsealed(struct store *store, int64_t *count_out)
{
    return query_stmt_int(sq_of(store), STORE_ST_UNSEALED, "audit unsealed", count_out);
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
    size_t len = 0;
    int words = 0;
    int n = 0;

    store__search_fold(q->text, strlen(q->text), folded, sizeof(folded));
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
    {
        const char *starts[STORE_SEARCH_WORDS_MAX];
        size_t lens[STORE_SEARCH_WORDS_MAX];
        for (const char *p = folded; *p != '\0';) {
            const char *start;
            while (*p != '\0' && (unsigned char)*p < 0x80 && !isalnum((unsigned char)*p))
                p++;
            start = p;
            while (*p != '\0' && ((unsigned char)*p >= 0x80 || isalnum((unsigned char)*p)))
                p++;
            if (p == start)
                continue;
            if (words >= STORE_SEARCH_WORDS_MAX)
                return UTIL_EINVAL;
            starts[words] = start;
            lens[words++] = (size_t)(p - start);
        }
        for (int w = 0; w < words; w++) {
            size_t chars = 0;
            for (size_t i = 0; i < lens[w]; i++)
                chars += ((unsigned char)starts[w][i] & 0xC0) != 0x80;
            STORE_APPEND("%s\"%.*s\"%s", w > 0 ? " AND " : "", (int)lens[w], starts[w],
                         w == words - 1 && chars >= 3 ? "*" : "");
        }
    }
    STORE_APPEND(")");
#undef STORE_APPEND
    return words > 0 ? 0 : UTIL_EINVAL;
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
        rc = step(s, stmt, "search", &row);
        if (rc != 0 || !row || *delivered >= q->limit)
            return rc;
        memset(&r, 0, sizeof(r));
        rc = read_cert(s, stmt, 3, &r.cert);
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

static int sq_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx)
{
    static const char op[] = "search";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    enum sq_stmt_id id = 0;
    char match[2048];
    int64_t before = q->before > 0 ? q->before : INT64_MAX;
    int delivered = 0;
    int opened = 0;
    int rc = 0;

    rc = rx_start(s, op, &opened);
    if (rc != 0)
        return rc;
    if (q->kind == STORE_SEARCH_SERIAL) {
        /* Both DER forms of the number: as typed without leading zero octets, and with the one
         * zero octet a DER INTEGER has when its top bit is set. */
        unsigned char forms[2][STORE_SERIAL_MAX + 1];
        size_t lens[2];
        size_t skip = 0;
        int n_forms = 0;
        while (skip + 1 < q->key_len && q->key[skip] == 0)
            skip++;
        lens[0] = q->key_len - skip;
        memcpy(forms[0], q->key + skip, lens[0]);
        n_forms = 1;
        if (lens[0] < STORE_SERIAL_MAX) {
            forms[1][0] = 0;
            memcpy(forms[1] + 1, q->key + skip, lens[0]);
            lens[1] = lens[0] + 1;
            n_forms = 2;
        }
        id = STORE_ST_SEARCH_SERIAL;
        for (int i = 0; i < q->n_issuer_ids && rc == 0; i++) {
            for (int f = 0; f < n_forms && rc == 0; f++) {
                rc = stmt_get(s, id, &stmt);
                if (rc != 0)
                    break;
                if (sqlite3_bind_int64(stmt, 1, q->issuer_ids[i]) != SQLITE_OK ||
                    sqlite3_bind_blob(stmt, 2, forms[f], (int)lens[f], SQLITE_STATIC) != SQLITE_OK)
                    rc = bind_err(s, op);
                if (rc == 0)
                    rc = search_rows(s, stmt, q, fn, ctx, &delivered);
                stmt_put(s, id, stmt);
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
    rc = stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    if ((q->kind == STORE_SEARCH_NAME ? sqlite3_bind_text(stmt, 1, match, -1, SQLITE_STATIC)
         : q->kind == STORE_SEARCH_EMAIL
             ? sqlite3_bind_int64(stmt, 1, store__email_key(q->text, strlen(q->text)))
             : sqlite3_bind_int64(stmt, 1, store__fp_key(q->key))) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, before) != SQLITE_OK ||
        sqlite3_bind_int(stmt, 3, q->limit) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = search_rows(s, stmt, q, fn, ctx, &delivered);
out:
    stmt_put(s, id, stmt);
    rx_finish(s, opened, op);
    return rc != 0 ? rc : delivered;
}

/* ---- cluster nodes -------------------------------------------------------------------------- */

/* One-off statements (a report a second): not worth a slot in the cached statement table. */
static int sq_node_report(struct store *store, const char *name, int64_t applied_feed_id,
                          int64_t at_ms, int64_t *id_out)
{
    static const char op[] = "node report";
    struct sq *s = sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = sqlite3_prepare_v2(
        s->db,
        "INSERT INTO nodes (name, applied_feed_id, heartbeat_ms) VALUES (?1, ?2, ?3) "
        "ON CONFLICT (name) DO UPDATE SET applied_feed_id = excluded.applied_feed_id, "
        "heartbeat_ms = excluded.heartbeat_ms RETURNING id",
        -1, &stmt, NULL);

    if (rc != SQLITE_OK) {
        rc = sq_err(s, rc, op);
        goto out;
    }
    if (sqlite3_bind_text(stmt, 1, name, -1, SQLITE_STATIC) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 2, applied_feed_id) != SQLITE_OK ||
        sqlite3_bind_int64(stmt, 3, at_ms) != SQLITE_OK) {
        rc = bind_err(s, op);
        goto out;
    }
    rc = step(s, stmt, op, &row);
    if (rc == 0 && row)
        *id_out = sqlite3_column_int64(stmt, 0);
    if (rc == 0 && row)
        rc = step(s, stmt, op, &row); /* runs the statement to its end */
out:
    (void)sqlite3_finalize(stmt); /* repeats the last step's error, handled above */
    return rc;
}

static int sq_node_list(struct store *store, int (*fn)(void *ctx, const struct store_node *node),
                        void *ctx)
{
    static const char op[] = "node list";
    struct sq *s = sq_of(store);
    struct store_node node;
    sqlite3_stmt *stmt = NULL;
    int row = 1;
    int rc = sqlite3_prepare_v2(
        s->db, "SELECT id, name, applied_feed_id, heartbeat_ms FROM nodes ORDER BY id", -1, &stmt,
        NULL);

    if (rc != SQLITE_OK) {
        rc = sq_err(s, rc, op);
        goto out;
    }
    for (rc = step(s, stmt, op, &row); rc == 0 && row; rc = step(s, stmt, op, &row)) {
        const unsigned char *name = sqlite3_column_text(stmt, 1);
        memset(&node, 0, sizeof(node));
        node.id = sqlite3_column_int64(stmt, 0);
        (void)snprintf(node.name, sizeof(node.name), "%s",
                       name != NULL ? (const char *)name : ""); /* bounded */
        node.applied_feed_id = sqlite3_column_int64(stmt, 2);
        node.heartbeat_ms = sqlite3_column_int64(stmt, 3);
        rc = fn(ctx, &node);
        if (rc != 0)
            break;
    }
out:
    (void)sqlite3_finalize(stmt); /* repeats the last step's error, handled above */
    return rc;
}

static const struct store__ops sq_ops = {
    .name = "sqlite",
    .close = sq_close,
    .ping = sq_ping,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .issuer_put = sq_issuer_put,
    .issuer_get = sq_issuer_get,
    .issuer_list = sq_issuer_list,
    .cert_add = sq_cert_add,
    .cert_get = sq_cert_get,
    .cert_der = sq_cert_der,
    .cert_iterate = sq_cert_iterate,
    .revoke = sq_revoke,
    .unrevoke = sq_unrevoke,
    .feed_read = sq_feed_read,
    .feed_head = sq_feed_head,
    .sla_mark = sq_sla_mark,
    .sla_mark_upto = sq_sla_mark_upto,
    .sla_list = sq_sla_list,
    .crl_number_next = sq_crl_number_next,
    .crl_save = sq_crl_save,
    .crl_latest = sq_crl_latest,
    .tsa_reserve = sq_tsa_reserve,
    .tsa_log = sq_tsa_log,
    .tsa_token_get = sq_tsa_token_get,
    .audit_append = sq_audit_append,
    .audit_walk = sq_audit_walk,
    .change_walk = sq_change_walk,
    .state_walk = sq_state_walk,
    .orphans = sq_orphans,
    .seal_pending = sq_seal_pending,
    .seal_walk = sq_seal_walk,
    .unsealed = sq_unsealed,
    .cert_search = sq_cert_search,
    .node_report = sq_node_report,
    .node_list = sq_node_list,
};
