/* SPDX-License-Identifier: Apache-2.0 */
/* store_sqlite.c: the core of the SQLite backend of the store: schema and its migrations, the
 * connection settings (WAL, synchronous=FULL, foreign keys, busy timeout), the per-connection cache
 * of prepared statements, transactions that nest through savepoints, and the mapping of SQLite's
 * result codes onto util's error enum. The operations are in the store_sqlite_*.c files (which
 * holds what: store_sqlite_int.h); only these files include sqlite3.h. */

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
#include "store/store_sqlite_int.h"
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
 *   next read-write open (store__sq_search_backfill(), store_sqlite_search.c); new certificates are
 *   indexed by cert_add. */
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

/* Version 5: nothing here. The PostgreSQL backend's version 5 is its search index (SQLite's came
 * with version 4, when PostgreSQL's version 4 added nothing); the versions stay in step. */
static const char schema_v5[] = "SELECT 1;";

/* Version 6 (issue 16): one row per serving node with the feed id its OCSP answers reflect and
 * the time it last reported (store_node_report_blocking); the cluster-wide SLA reads them. */
static const char schema_nodes[] = "CREATE TABLE nodes ("
                                   "  id INTEGER PRIMARY KEY,"
                                   "  name TEXT NOT NULL UNIQUE,"
                                   "  applied_feed_id INTEGER NOT NULL,"
                                   "  heartbeat_ms INTEGER NOT NULL"
                                   ");";

/* Version 7 (issue 16): a partial index of the changes that are not registrations of good
 * certificates (revocations, including certificates registered as revoked, and unrevocations).
 * The CRL publisher's start-up replay reads only these (STORE_FEED_SKIP_ISSUE): after an import
 * of millions of good certificates it walks a handful of index entries, not millions of rows.
 * Registrations of good certificates never enter it, so imports pay nothing for it. */
static const char schema_feed_changes[] =
    "CREATE INDEX feed_not_issue ON feed(id) WHERE kind <> 1;";

/* migrations[i] upgrades schema version i to i + 1. Append only; never edit a shipped entry. */
static const char *const migrations[] = {schema_v1, schema_v2,    schema_v3,          schema_search,
                                         schema_v5, schema_nodes, schema_feed_changes};
#define STORE_SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- statements ----------------------------------------------------------------------------- */

/* Column order shared by every query that fills a struct store_cert (see store__sq_read_cert). */
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
    [STORE_ST_CERT_ITER_BELOW] = "SELECT " STORE_CERT_COLS
                                 " FROM certs WHERE issuer_id = ?1 AND serial < ?2 ORDER BY serial",
    [STORE_ST_CERT_ITER_FROM] = "SELECT " STORE_CERT_COLS
                                " FROM certs WHERE issuer_id = ?1 AND serial >= ?2 ORDER BY serial",
    [STORE_ST_CERT_SERIAL_FIRST] =
        "SELECT serial FROM certs WHERE issuer_id = ?1 ORDER BY serial LIMIT 1",
    [STORE_ST_CERT_SERIAL_LAST] =
        "SELECT serial FROM certs WHERE issuer_id = ?1 ORDER BY serial DESC LIMIT 1",
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
    /* The same without registrations of good certificates, through the partial index. */
    [STORE_ST_FEED_READ_NOT_ISSUE] =
        "SELECT f.id, f.kind, f.at_ms, c.issuer_id, c.serial, c.not_before, "
        "c.not_after, c.status, c.revoked_at, c.reason, c.invalidity_date, c.feed_id "
        "FROM feed AS f INDEXED BY feed_not_issue CROSS JOIN certs AS c "
        "ON c.issuer_id = f.issuer_id AND c.serial = f.serial "
        "WHERE f.id > ?1 AND f.kind <> 1 ORDER BY f.id LIMIT ?2",
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
        "INSERT INTO crl_numbers (issuer_id, last_number) VALUES (?1, max(1, ?2)) "
        "ON CONFLICT (issuer_id) DO UPDATE SET last_number = max(last_number + 1, ?2) "
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
    /* Search rows: cursor, DER, subject, then STORE_CERT_COLS of certs (store__sq_read_cert from
     * 3). The CROSS JOINs pin the full-text or fingerprint index as the outer loop. */
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

struct sq *store__sq_of(struct store *store)
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
 * stack (a callback re-entering the store). Pair every store__sq_stmt_get with
 * store__sq_stmt_put. */
int store__sq_stmt_get(struct sq *s, enum sq_stmt_id id, sqlite3_stmt **out)
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

void store__sq_stmt_put(struct sq *s, enum sq_stmt_id id, sqlite3_stmt *stmt)
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
int store__sq_step(struct sq *s, sqlite3_stmt *stmt, const char *op, int *row)
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

int store__sq_bind(struct sq *s, sqlite3_stmt *stmt, const char *op, const struct sq_value *values,
                   int n)
{
    for (int i = 0; i < n; i++) {
        const struct sq_value *v = &values[i];
        int rc = SQLITE_OK;

        switch (v->kind) {
        case SQ_VALUE_INT: rc = sqlite3_bind_int64(stmt, i + 1, v->i); break;
        case SQ_VALUE_TEXT: rc = sqlite3_bind_text(stmt, i + 1, v->p, -1, SQLITE_STATIC); break;
        case SQ_VALUE_BLOB:
            rc = sqlite3_bind_blob(stmt, i + 1, v->p, (int)v->len, SQLITE_STATIC);
            break;
        case SQ_VALUE_BLOB_COPY:
            rc = sqlite3_bind_blob(stmt, i + 1, v->p, (int)v->len, SQLITE_TRANSIENT);
            break;
        case SQ_VALUE_NULL: rc = sqlite3_bind_null(stmt, i + 1); break;
        }
        if (rc != SQLITE_OK)
            return bind_err(s, op);
    }
    return 0;
}

/* Runs a statement that returns no rows (transaction control). */
int store__sq_exec_stmt(struct sq *s, enum sq_stmt_id id, const char *op)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
out:
    store__sq_stmt_put(s, id, stmt);
    return rc;
}

/* ---- transactions --------------------------------------------------------------------------- */

/* Opens the write transaction of one operation: BEGIN IMMEDIATE when none is open, else a
 * savepoint inside the caller's transaction. */
int store__sq_tx_start(struct sq *s, const char *op, enum tx_kind *kind)
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
        rc = store__sq_exec_stmt(s, STORE_ST_BEGIN, op);
        if (rc == 0)
            *kind = STORE_TX_OUTER;
        return rc;
    }
    rc = store__sq_exec_stmt(s, STORE_ST_SAVEPOINT, op);
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
        (void)store__sq_exec_stmt(s, STORE_ST_ROLLBACK,
                                  op); /* a failed rollback ends the transaction anyway */
        return;
    }
    /* Rolling back to a savepoint keeps it open; release it too. A failure here was logged and
     * leaves the enclosing transaction for the caller to roll back. */
    (void)store__sq_exec_stmt(s, STORE_ST_ROLLBACK_TO, op);
    (void)store__sq_exec_stmt(s, STORE_ST_RELEASE, op);
}

/* Ends the operation's transaction: commits (durably, for STORE_TX_OUTER) when rc is 0, else undoes
 * it. Returns rc, or the commit's error. */
int store__sq_tx_finish(struct sq *s, enum tx_kind kind, int rc, const char *op)
{
    if (kind == 0)
        return rc;
    if (rc != 0) {
        tx_undo(s, kind, op);
        return rc;
    }
    rc = store__sq_exec_stmt(s, kind == STORE_TX_OUTER ? STORE_ST_COMMIT : STORE_ST_RELEASE, op);
    if (rc != 0)
        tx_undo(s, kind, op);
    return rc;
}

/* Starts a read snapshot for an operation that reads several times and must see one state. */
int store__sq_rx_start(struct sq *s, const char *op, int *opened)
{
    int rc = 0;

    *opened = 0;
    if (!sqlite3_get_autocommit(s->db))
        return 0;
    rc = store__sq_exec_stmt(s, STORE_ST_BEGIN_READ, op);
    if (rc == 0)
        *opened = 1;
    return rc;
}

void store__sq_rx_finish(struct sq *s, int opened, const char *op)
{
    if (opened && !sqlite3_get_autocommit(s->db))
        (void)store__sq_exec_stmt(s, STORE_ST_COMMIT,
                                  op); /* ends a read-only transaction; nothing to lose */
}

static int sq_begin(struct store *store)
{
    struct sq *s = store__sq_of(store);
    enum tx_kind kind = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, "begin", &kind);
    if (rc == 0)
        s->depth++;
    return rc;
}

static int sq_commit(struct store *store)
{
    struct sq *s = store__sq_of(store);
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
    rc = store__sq_tx_finish(s, s->depth == 1 ? STORE_TX_OUTER : STORE_TX_STEP, 0, "commit");
    s->depth--;
    if (rc != 0 && sqlite3_get_autocommit(s->db))
        s->depth = 0;
    return rc;
}

static int sq_rollback(struct store *store)
{
    struct sq *s = store__sq_of(store);

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
    rc = store__sq_step(s, stmt, op, &row);
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
    rc = store__sq_step(s, stmt, "set journal_mode", &row);
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

static void sq_close(struct store *store)
{
    struct sq *s = store__sq_of(store);
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
    if ((flags & STORE_OPEN_BULK) != 0)
        rc = exec_sql(s, "PRAGMA cache_size = -262144; PRAGMA wal_autocheckpoint = 16384",
                      "configure bulk cache");
    if (rc != 0)
        goto out;
    rc = migrate(s, readonly);
    if (rc == 0 && !readonly)
        rc = store__sq_search_backfill(s);
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
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_PING, &stmt);
    if (rc == 0)
        rc = store__sq_step(s, stmt, "ping", &row);
    store__sq_stmt_put(s, STORE_ST_PING, stmt);
    return rc;
}

/* ---- cluster nodes -------------------------------------------------------------------------- */

/* One-off statements (a report a second): not worth a slot in the cached statement table. */
static int sq_node_report(struct store *store, const char *name, int64_t applied_feed_id,
                          int64_t at_ms, int64_t *id_out)
{
    static const char op[] = "node report";
    struct sq *s = store__sq_of(store);
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
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_TEXT(name), STORE_SQ_INT(applied_feed_id),
                       STORE_SQ_INT(at_ms));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc == 0 && row)
        *id_out = sqlite3_column_int64(stmt, 0);
    if (rc == 0 && row)
        rc = store__sq_step(s, stmt, op, &row); /* runs the statement to its end */
out:
    (void)sqlite3_finalize(stmt); /* repeats the last step's error, handled above */
    return rc;
}

static int sq_node_list(struct store *store, int (*fn)(void *ctx, const struct store_node *node),
                        void *ctx)
{
    static const char op[] = "node list";
    struct sq *s = store__sq_of(store);
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
    for (rc = store__sq_step(s, stmt, op, &row); rc == 0 && row;
         rc = store__sq_step(s, stmt, op, &row)) {
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
    .issuer_put = store__sq_issuer_put,
    .issuer_get = store__sq_issuer_get,
    .issuer_list = store__sq_issuer_list,
    .cert_add = store__sq_cert_add,
    .cert_get = store__sq_cert_get,
    .cert_der = store__sq_cert_der,
    .cert_iterate = store__sq_cert_iterate,
    .revoke = store__sq_revoke,
    .unrevoke = store__sq_unrevoke,
    .feed_read = store__sq_feed_read,
    .feed_head = store__sq_feed_head,
    .sla_mark = store__sq_sla_mark,
    .sla_mark_upto = store__sq_sla_mark_upto,
    .sla_list = store__sq_sla_list,
    .crl_number_next = store__sq_crl_number_next,
    .crl_save = store__sq_crl_save,
    .crl_latest = store__sq_crl_latest,
    .tsa_reserve = store__sq_tsa_reserve,
    .tsa_log = store__sq_tsa_log,
    .tsa_token_get = store__sq_tsa_token_get,
    .audit_append = store__sq_audit_append,
    .audit_walk = store__sq_audit_walk,
    .change_walk = store__sq_change_walk,
    .state_walk = store__sq_state_walk,
    .orphans = store__sq_orphans,
    .seal_pending = store__sq_seal_pending,
    .seal_walk = store__sq_seal_walk,
    .unsealed = store__sq_unsealed,
    .cert_search = store__sq_cert_search,
    .node_report = sq_node_report,
    .node_list = sq_node_list,
};
