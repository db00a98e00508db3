/* SPDX-License-Identifier: Apache-2.0 */
/* store.c: the public face of the store module. It validates arguments, fills the defaults that the
 * header promises ("0 = now"), picks the backend from the database path and forwards every call
 * through the backend vtable; the audit chain's hash and its verification live here too, so that
 * every backend chains records in exactly the same way. */

/* DESIGN
 *
 * Layers. store.c (this file, no storage code) -> struct store__ops (store_int.h) -> one backend:
 * store_sqlite.c (a file path) or store_pg.c (a postgresql:// URI, for a cluster). Import (store_import.c) is written against the public API plus the
 * backend's cert_add, so a PostgreSQL backend gets import for free.
 *
 * Threads. A struct store is one database connection with its own prepared statements and its own
 * transaction state; it is used by one thread at a time and never shared. Parallelism comes from
 * several connections (one per store worker thread) and from several processes (server and CLI)
 * opening the same file; the database's own locking makes their writes take turns.
 *
 * Invariants.
 * - Every write function is one atomic, durable transaction, or one atomic step inside an explicit
 *   transaction opened with store_begin_blocking (then durable at store_commit_blocking).
 * - Feed ids strictly increase and are never reused; a certificate's feed_id is the id of its last
 *   change, and every status change writes exactly one feed row in the same transaction. Because
 *   writers are serialised, changes become visible in id order, so a reader polling "id > last
 *   seen" never misses one.
 * - A CRL number or TSA serial block, once returned, is committed, so it is never handed out again.
 * - The audit log is a hash chain from record 1; ids are contiguous and never reused.
 * - Every change of a certificate (feed row, with its revocation row) is covered by exactly one
 *   audit record written in the same transaction: the public write functions open a transaction
 *   (a savepoint inside a caller's), make the change, write the record, and commit both or
 *   neither. A record names the feed ids it covers (one change, or an import batch) and a digest
 *   of those rows and their revocation rows; an idempotent repeat changes nothing and writes no
 *   record. Record details are JSON built with jansson, never pasted strings.
 *
 * Audit log and insiders. Anyone who can write the database can recompute a plain hash chain, so
 * the chain is anchored in the HSM by seals: signatures (made through a caller's signer, in
 * practice the first issuer's CA key, cli/audit.c) over the hashes of a run of records. Seals
 * tile the log from record 1: signed outside the write lock, inserted under it only if no seal
 * came first, so they never overlap.
 * store_audit_verify_blocking then checks, offline with the public certificates: the chain, every
 * seal and every sealed record against it, that every feed row is covered by one record with a
 * matching digest, and that each certificate's status replays from its changes (legal transitions
 * only: back to good only from hold). What it cannot see: records written after the last seal can
 * still be rewritten by an insider (reported as "not yet sealed"); removing every seal turns the
 * whole log into "not yet sealed", which `--sealed` refuses and an anchor written down outside the
 * machine catches; the issuers table and the CRL/TSA tables other than their audit records are
 * not replayed.
 *
 * Failure modes. Lock contention beyond the busy timeout is UTIL_ELOCKED (retry later), a full disk
 * UTIL_ENOSPC, anything else from the database UTIL_ESTORE, each with a log line naming the
 * operation and the database's message. A failed write leaves nothing behind. */

#include <inttypes.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

/* Every hash and signature input of the audit log starts with its own tag, so that none can be
 * confused with another, or with anything else a key signs (none of them starts like DER); bump
 * the version when an encoding changes. v1 records (before schema 2) stay verifiable. */
static const char audit_domain_v1[] = "pkiva-audit-v1";
static const char audit_domain_v2[] = "pkiva-audit-v2";
static const char changes_domain[] = "pkiva-audit-changes-v1";
static const char seal_domain[] = "pkiva-audit-seal-v1";

static const struct {
    int reason;
    const char *name;
} reason_names[] = {
    {STORE_REASON_NONE, "none"},
    {STORE_REASON_UNSPECIFIED, "unspecified"},
    {STORE_REASON_KEY_COMPROMISE, "keyCompromise"},
    {STORE_REASON_CA_COMPROMISE, "cACompromise"},
    {STORE_REASON_AFFILIATION_CHANGED, "affiliationChanged"},
    {STORE_REASON_SUPERSEDED, "superseded"},
    {STORE_REASON_CESSATION, "cessationOfOperation"},
    {STORE_REASON_CERTIFICATE_HOLD, "certificateHold"},
    {STORE_REASON_REMOVE_FROM_CRL, "removeFromCRL"},
    {STORE_REASON_PRIVILEGE_WITHDRAWN, "privilegeWithdrawn"},
    {STORE_REASON_AA_COMPROMISE, "aACompromise"},
};

int store_reason_from_name(const char *name)
{
    size_t i = 0;

    if (name == NULL)
        return -2;
    for (i = 0; i < sizeof(reason_names) / sizeof(reason_names[0]); i++) {
        if (strcasecmp(name, reason_names[i].name) == 0)
            return reason_names[i].reason;
    }
    return -2;
}

const char *store_reason_name(int reason)
{
    size_t i = 0;

    for (i = 0; i < sizeof(reason_names) / sizeof(reason_names[0]); i++) {
        if (reason_names[i].reason == reason)
            return reason_names[i].name;
    }
    return "unknown";
}

int store__reason_valid_for_revoke(int reason)
{
    /* removeFromCRL only appears in delta CRLs when a hold is released; it is not a reason to
     * revoke, and 7 is unassigned in RFC 5280. */
    if (reason == STORE_REASON_NONE)
        return 1;
    if (reason < STORE_REASON_UNSPECIFIED || reason > STORE_REASON_AA_COMPROMISE)
        return 0;
    return reason != 7 && reason != STORE_REASON_REMOVE_FROM_CRL;
}

void store_issuer_cleanup(struct store_issuer *issuer)
{
    if (issuer == NULL)
        return;
    free(issuer->cert_der);
    issuer->cert_der = NULL;
    issuer->cert_len = 0;
}

static int serial_ok(const unsigned char *serial, size_t serial_len)
{
    return serial != NULL && serial_len >= 1 && serial_len <= STORE_SERIAL_MAX;
}

/* Ends the transaction a write function opened around its change and its audit record: commits
 * when rc is 0 (or releases the savepoint inside a caller's transaction), else undoes both. */
static int tx_end(struct store *store, int rc)
{
    if (rc != 0) {
        (void)store->ops->rollback(store); /* undoes the change; rc says why */
        return rc;
    }
    return store->ops->commit(store);
}

static int audit_cert_change(struct store *store, const char *actor, const char *action,
                             const struct store_cert *c, const char *request_id);

/* ---- open/close ----------------------------------------------------------------------------- */

int store_open_blocking(const char *path, int flags, struct store **out)
{
    if (out == NULL)
        return UTIL_EINVAL;
    *out = NULL;
    if (path == NULL || path[0] == '\0') {
        UTIL_ERROR(STORE_MOD, "open: empty database path");
        return UTIL_EINVAL;
    }
    if ((flags & STORE_OPEN_CREATE) != 0 && (flags & STORE_OPEN_READONLY) != 0) {
        UTIL_ERROR(STORE_MOD, "open %s: create and read-only are exclusive", path);
        return UTIL_EINVAL;
    }
    if ((flags & STORE_OPEN_STALE_READS) != 0) {
        int rc = store__replica_open(path, flags, out); /* store_replica.c */
        if (rc != 0 || *out != NULL)
            return rc;
        flags &= ~STORE_OPEN_STALE_READS;
    }
    /* A libpq URI selects the PostgreSQL backend (store_pg.c); anything else is a SQLite file. */
    if (strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0)
        return store__pg_open(path, flags, out);
    return store__sqlite_open(path, flags, out);
}

void store_close(struct store *store)
{
    if (store == NULL)
        return;
    store->ops->close(store);
}

int store_ping_blocking(struct store *store)
{
    if (store == NULL)
        return UTIL_EINVAL;
    return store->ops->ping(store);
}

int store_begin_blocking(struct store *store)
{
    if (store == NULL)
        return UTIL_EINVAL;
    store->errmsg[0] = '\0';
    return store->ops->begin(store);
}

int store_commit_blocking(struct store *store)
{
    if (store == NULL)
        return UTIL_EINVAL;
    return store->ops->commit(store);
}

int store_rollback_blocking(struct store *store)
{
    if (store == NULL)
        return UTIL_EINVAL;
    return store->ops->rollback(store);
}

/* ---- issuers -------------------------------------------------------------------------------- */

int store_issuer_put_blocking(struct store *store, const char *name, const unsigned char *cert_der,
                              size_t cert_len, int64_t *id_out)
{
    int64_t id = 0;
    int rc = 0;

    if (store == NULL || cert_der == NULL || cert_len == 0)
        return UTIL_EINVAL;
    if (!util_name_valid(name)) {
        UTIL_ERROR(STORE_MOD, "issuer name must be 1-%d characters of [A-Za-z0-9._-]",
                   STORE_NAME_MAX - 1);
        return UTIL_EINVAL;
    }
    rc = store->ops->issuer_put(store, name, cert_der, cert_len, &id);
    if (rc == 0 && id_out != NULL)
        *id_out = id;
    return rc;
}

int store_issuer_get_blocking(struct store *store, const char *name, struct store_issuer *out)
{
    if (store == NULL || name == NULL || out == NULL)
        return UTIL_EINVAL;
    store->errmsg[0] = '\0';
    memset(out, 0, sizeof(*out));
    if (!util_name_valid(name))
        return UTIL_ENOTFOUND;
    return store->ops->issuer_get(store, name, out);
}

int store_issuer_list_blocking(struct store *store,
                               int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx)
{
    if (store == NULL || fn == NULL)
        return UTIL_EINVAL;
    return store->ops->issuer_list(store, fn, ctx);
}

/* ---- certificates --------------------------------------------------------------------------- */

int store_cert_add_blocking(struct store *store, const struct store_cert_new *cert,
                            int64_t *feed_id_out)
{
    int64_t feed_id = 0;
    int created = 0;
    int rc = 0;

    if (store == NULL || cert == NULL || cert->issuer_id <= 0)
        return UTIL_EINVAL;
    store->errmsg[0] = '\0';
    if (!serial_ok(cert->serial, cert->serial_len)) {
        UTIL_ERROR(STORE_MOD, "cert add: serial must be 1-%d octets", STORE_SERIAL_MAX);
        return UTIL_EINVAL;
    }
    if (cert->cert_der == NULL && cert->cert_len != 0)
        return UTIL_EINVAL;
    rc = store->ops->begin(store);
    if (rc != 0)
        return rc;
    rc = store->ops->cert_add(store, cert, NULL, &feed_id, &created);
    if (rc == 0 && created) {
        struct store_cert c;
        rc = store->ops->cert_get(store, cert->issuer_id, cert->serial, cert->serial_len, &c);
        if (rc == 0)
            rc = audit_cert_change(store, cert->actor != NULL ? cert->actor : "unknown", "register",
                                   &c, NULL);
    }
    rc = tx_end(store, rc);
    if (rc == 0 && feed_id_out != NULL)
        *feed_id_out = feed_id;
    return rc;
}

int store_cert_get_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, struct store_cert *out)
{
    if (store == NULL || out == NULL)
        return UTIL_EINVAL;
    memset(out, 0, sizeof(*out));
    if (!serial_ok(serial, serial_len))
        return UTIL_EINVAL;
    return store->ops->cert_get(store, issuer_id, serial, serial_len, out);
}

int store_cert_der_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, unsigned char **der, size_t *der_len)
{
    if (store == NULL || der == NULL || der_len == NULL)
        return UTIL_EINVAL;
    *der = NULL;
    *der_len = 0;
    if (!serial_ok(serial, serial_len))
        return UTIL_EINVAL;
    return store->ops->cert_der(store, issuer_id, serial, serial_len, der, der_len);
}

int store_cert_iterate_blocking(struct store *store, int64_t issuer_id, int filter,
                                int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    if (store == NULL || fn == NULL || issuer_id < 0)
        return UTIL_EINVAL;
    if (filter != STORE_ITER_ALL && filter != STORE_ITER_REVOKED &&
        filter != STORE_ITER_ALL_ANY_ORDER)
        return UTIL_EINVAL;
    return store->ops->cert_iterate(store, issuer_id, filter, fn, ctx);
}

/* ---- revocation ----------------------------------------------------------------------------- */

const char *store_errmsg(const struct store *store)
{
    return store != NULL ? store->errmsg : "";
}

/* t as 2026-11-21T10:00:00Z, or @t when no four-digit year can write it. */
static void format_time(int64_t t, char *out, size_t len)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t < 0 || t > UTIL_TIME_MAX || gmtime_r(&tt, &tm) == NULL ||
        strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        (void)snprintf(out, len, "@%lld", (long long)t);
}

/* Fills store->errmsg with "field: <t> <why> <limit>" and returns UTIL_EINVAL. */
static int refuse(struct store *store, const char *field, int64_t t, const char *why, int64_t limit)
{
    char at[32], bound[32];

    format_time(t, at, sizeof(at));
    format_time(limit, bound, sizeof(bound));
    (void)snprintf(store->errmsg, sizeof(store->errmsg), "%s: %s %s %s", field, at, why, bound);
    UTIL_WARN(STORE_MOD, "revoke refused: %s", store->errmsg);
    return UTIL_EINVAL;
}

int store__revocation_check(struct store *store, const struct store_revocation *rev, int64_t now_ms)
{
    struct store_cert cert;
    int rc = 0;

    /* An unknown certificate (an index line registering it revoked) has no notBefore to check;
     * a revoke of one is refused by the write itself. */
    memset(&cert, 0, sizeof(cert));
    rc = store->ops->cert_get(store, rev->issuer_id, rev->serial, rev->serial_len, &cert);
    if (rc == UTIL_ENOTFOUND)
        return store__revocation_check_cert(store, rev, now_ms, NULL);
    if (rc != 0)
        return rc;
    return store__revocation_check_cert(store, rev, now_ms, &cert);
}

int store__revocation_check_cert(struct store *store, const struct store_revocation *rev,
                                 int64_t now_ms, const struct store_cert *stored)
{
    struct store_cert cert;
    int64_t latest = now_ms / 1000 + STORE_CLOCK_SKEW_S;
    int64_t revoked_at = rev->revoked_at;
    int64_t invalidity = rev->invalidity_date;

    store->errmsg[0] = '\0';
    if (rev->revoked_at < 0)
        return refuse(store, "revoked_at", rev->revoked_at, "is before", 0);
    if (rev->invalidity_date < 0)
        return refuse(store, "invalidity_date", rev->invalidity_date, "is before", 0);
    if (rev->received_at_ms < 0)
        return refuse(store, "received_at", rev->received_at_ms / 1000, "is before", 0);
    /* Each bound is checked before the one that relies on it, so that no sum below overflows. */
    if (rev->received_at_ms / 1000 > latest)
        return refuse(store, "received_at", rev->received_at_ms / 1000,
                      "is in the future; latest accepted (server clock + skew):", latest);
    if (revoked_at > latest)
        return refuse(store, "revoked_at", revoked_at,
                      "is in the future; latest accepted (server clock + skew):", latest);
    memset(&cert, 0, sizeof(cert));
    if (stored != NULL)
        cert = *stored;
    if (revoked_at != 0 && cert.not_before > 0 && revoked_at < cert.not_before)
        return refuse(store, "revoked_at", revoked_at, "is before the certificate's notBefore",
                      cert.not_before);
    /* The revocation time the write will store: given, the hold's, or now. */
    if (revoked_at == 0)
        revoked_at = cert.status == STORE_REVOKED ? cert.revoked_at : now_ms / 1000;
    if (invalidity == 0 && cert.status == STORE_REVOKED)
        invalidity = cert.invalidity_date;
    if (invalidity > revoked_at)
        return refuse(store, "invalidity_date", invalidity, "is after the revocation time",
                      revoked_at);
    return 0;
}

int store_cert_revoke_blocking(struct store *store, const struct store_revocation *rev,
                               int64_t *feed_id_out)
{
    struct store_revocation filled;
    int64_t now_ms = util_now_ms();
    int64_t feed_id = 0;
    int changed = 0;
    int rc = 0;

    if (store == NULL || rev == NULL || rev->issuer_id <= 0)
        return UTIL_EINVAL;
    store->errmsg[0] = '\0';
    if (!serial_ok(rev->serial, rev->serial_len))
        return UTIL_EINVAL;
    if (!store__reason_valid_for_revoke(rev->reason)) {
        UTIL_ERROR(STORE_MOD, "revoke: %d is not a reason to revoke a certificate", rev->reason);
        return UTIL_EINVAL;
    }
    filled = *rev;
    if (filled.received_at_ms == 0)
        filled.received_at_ms = now_ms;
    if (filled.actor == NULL)
        filled.actor = "unknown";
    rc = store__revocation_check(store, &filled, now_ms);
    if (rc != 0)
        return rc;
    /* The change and its audit record commit together or not at all; an idempotent repeat
     * changes nothing and so records nothing. */
    rc = store->ops->begin(store);
    if (rc != 0)
        return rc;
    rc = store->ops->revoke(store, &filled, &feed_id, &changed);
    if (rc == 0 && changed) {
        struct store_cert c;
        rc = store->ops->cert_get(store, rev->issuer_id, rev->serial, rev->serial_len, &c);
        if (rc == 0)
            rc = audit_cert_change(store, filled.actor, "revoke", &c, filled.request_id);
    }
    rc = tx_end(store, rc);
    if (rc == 0 && feed_id_out != NULL)
        *feed_id_out = feed_id;
    return rc;
}

int store_cert_unrevoke_blocking(struct store *store, int64_t issuer_id,
                                 const unsigned char *serial, size_t serial_len, const char *actor,
                                 int64_t *feed_id_out)
{
    int64_t feed_id = 0;
    int rc = 0;

    if (store == NULL || issuer_id <= 0 || !serial_ok(serial, serial_len))
        return UTIL_EINVAL;
    store->errmsg[0] = '\0';
    if (actor == NULL)
        actor = "unknown";
    rc = store->ops->begin(store);
    if (rc != 0)
        return rc;
    rc = store->ops->unrevoke(store, issuer_id, serial, serial_len, actor, &feed_id);
    if (rc == 0) {
        struct store_cert c;
        rc = store->ops->cert_get(store, issuer_id, serial, serial_len, &c);
        if (rc == 0)
            rc = audit_cert_change(store, actor, "unrevoke", &c, NULL);
    }
    rc = tx_end(store, rc);
    if (rc == 0 && feed_id_out != NULL)
        *feed_id_out = feed_id;
    return rc;
}

/* ---- change feed ---------------------------------------------------------------------------- */

/* fn returning a negative value stops the read and that value is returned; a positive value stops
 * it quietly and the count delivered so far (including that change) is returned. */
int store_feed_read_blocking(struct store *store, int64_t after_id, int max,
                             int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    return store_feed_read_opt_blocking(store, after_id, max, 0, fn, ctx);
}

int store_feed_read_opt_blocking(struct store *store, int64_t after_id, int max, unsigned opts,
                                 int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    if (store == NULL || fn == NULL || after_id < 0 || (opts & ~STORE_FEED_SKIP_ISSUE) != 0)
        return UTIL_EINVAL;
    if (max <= 0)
        return 0;
    return store->ops->feed_read(store, after_id, max, opts, fn, ctx);
}

int store_feed_head_blocking(struct store *store, int64_t *id_out)
{
    if (store == NULL || id_out == NULL)
        return UTIL_EINVAL;
    *id_out = 0;
    return store->ops->feed_head(store, id_out);
}

/* ---- SLA ------------------------------------------------------------------------------------ */

static int stage_ok(int stage)
{
    return stage == STORE_SLA_OCSP || stage == STORE_SLA_CRL;
}

int store_sla_mark_blocking(struct store *store, int64_t feed_id, int stage, int64_t at_ms)
{
    if (store == NULL || feed_id <= 0 || !stage_ok(stage) || at_ms < 0)
        return UTIL_EINVAL;
    return store->ops->sla_mark(store, feed_id, stage, at_ms != 0 ? at_ms : util_now_ms());
}

int store_sla_mark_upto_blocking(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                                 int stage, int64_t at_ms)
{
    if (store == NULL || issuer_id <= 0 || up_to_feed_id < 0 || !stage_ok(stage) || at_ms < 0)
        return UTIL_EINVAL;
    return store->ops->sla_mark_upto(store, issuer_id, up_to_feed_id, stage,
                                     at_ms != 0 ? at_ms : util_now_ms());
}

/* The rules of store__revocation_check applied to a stored row, with its commit time as "now":
 * what a writer that bypassed them left behind. NULL when the row is signable. */
static const char *stored_revocation_problem(const struct store_sla_row *row)
{
    int64_t latest = row->committed_at_ms / 1000 + STORE_CLOCK_SKEW_S;

    if (row->revoked_at < 0 || row->revoked_at > latest)
        return "revoked_at: out of range (after the time it was recorded): it cannot be signed";
    if (row->invalidity_date < 0 || row->invalidity_date > row->revoked_at)
        return "invalidity_date: after the revocation time: it cannot be signed";
    if (row->received_at_ms < 0 || row->received_at_ms / 1000 > latest)
        return "received_at: after the time it was recorded: the deadline is meaningless";
    return NULL;
}

struct sla_check {
    int (*fn)(void *ctx, const struct store_sla_row *row);
    void *ctx;
};

static int sla_check_row(void *opaque, const struct store_sla_row *row)
{
    const struct sla_check *check = opaque;
    struct store_sla_row checked = *row;

    checked.unsignable = stored_revocation_problem(row);
    return check->fn(check->ctx, &checked);
}

/* open_only lists the oldest open revocation first (the one closest to missing its deadline); the
 * full list is newest first. limit applies to both. */
int store_sla_list_blocking(struct store *store, int open_only, int limit,
                            int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    struct sla_check check = {fn, ctx};

    if (store == NULL || fn == NULL)
        return UTIL_EINVAL;
    return store->ops->sla_list(store, open_only != 0, limit, sla_check_row, &check);
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

int store_crl_number_next_blocking(struct store *store, int64_t issuer_id, int64_t floor,
                                   int64_t *number_out)
{
    if (store == NULL || issuer_id <= 0 || floor < 0 || floor == INT64_MAX || number_out == NULL)
        return UTIL_EINVAL;
    *number_out = 0;
    return store->ops->crl_number_next(store, issuer_id, floor, number_out);
}

/* Fencing of CRL publishers (several processes, or nodes of a cluster): inside the save's write
 * transaction, a CRL whose number is not above every saved CRL of the issuer (full and delta CRLs
 * share one number sequence) is refused with UTIL_EEXIST, so a publisher that reserved a number,
 * stalled and came back after another one published can never store an older or duplicate number
 * as the latest. */
static int crl_fence(struct store *store, const struct store_crl_record *crl)
{
    struct store_crl_record latest;
    int delta = 0;
    int rc = 0;

    for (delta = 0; delta <= 1; delta++) {
        memset(&latest, 0, sizeof(latest));
        rc = store->ops->crl_latest(store, crl->issuer_id, delta, &latest, NULL);
        if (rc == UTIL_ENOTFOUND)
            continue;
        if (rc != 0)
            return rc;
        if (latest.number >= crl->number) {
            UTIL_WARN(STORE_MOD,
                      "crl save: issuer %" PRId64 " already has CRL number %" PRId64
                      "; number %" PRId64 " is stale and not saved (another publisher was first)",
                      crl->issuer_id, latest.number, crl->number);
            return UTIL_EEXIST;
        }
    }
    return 0;
}

int store_crl_save_blocking(struct store *store, const struct store_crl_record *crl)
{
    json_t *detail = NULL;
    char *text = NULL;
    int rc = 0;

    if (store == NULL || crl == NULL || crl->issuer_id <= 0 || crl->number <= 0)
        return UTIL_EINVAL;
    if (crl->der == NULL || crl->der_len == 0 || crl->base_number < 0 ||
        crl->base_number >= crl->number)
        return UTIL_EINVAL;
    detail = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "issuer_id",
                       (json_int_t)crl->issuer_id, "number", (json_int_t)crl->number, "base",
                       (json_int_t)crl->base_number, "this_update", (json_int_t)crl->this_update,
                       "next_update", (json_int_t)crl->next_update, "feed_id",
                       (json_int_t)crl->feed_id, "bytes", (json_int_t)crl->der_len);
    text = detail != NULL ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(detail);
    if (text == NULL)
        return UTIL_ENOMEM;
    rc = store->ops->begin(store);
    if (rc != 0)
        goto out;
    rc = crl_fence(store, crl);
    if (rc == 0)
        rc = store->ops->crl_save(store, crl);
    if (rc == 0)
        rc = store_audit_append_blocking(store, crl->actor != NULL ? crl->actor : "crl",
                                         "crl-publish", text);
    rc = tx_end(store, rc);
out:
    free(text);
    return rc;
}

int store_lease_blocking(struct store *store, const char *name, int64_t ttl_ms, int *held_out)
{
    uint64_t key = 1469598103934665603ULL; /* FNV-1a of the name */

    if (store == NULL || name == NULL || name[0] == '\0' || held_out == NULL || ttl_ms < 0 ||
        ttl_ms > INT32_MAX)
        return UTIL_EINVAL;
    *held_out = 1;
    if (store->ops->lease == NULL)
        return 0;
    for (const char *c = name; *c != '\0'; c++)
        key = (key ^ (unsigned char)*c) * 1099511628211ULL;
    return store->ops->lease(store, (int64_t)(key >> 1), ttl_ms, held_out);
}

/* ---- cluster nodes -------------------------------------------------------------------------- */

int store_node_report_blocking(struct store *store, const char *name, int64_t applied_feed_id,
                               int64_t at_ms, int64_t *id_out)
{
    int64_t id = 0;
    size_t len = name != NULL ? strlen(name) : 0;
    int rc = 0;

    if (store == NULL || len == 0 || len >= STORE_NODE_NAME_MAX || applied_feed_id < 0 || at_ms < 0)
        return UTIL_EINVAL;
    rc = store->ops->node_report(store, name, applied_feed_id, at_ms != 0 ? at_ms : util_now_ms(),
                                 &id);
    if (rc == 0 && id_out != NULL)
        *id_out = id;
    return rc;
}

int store_node_list_blocking(struct store *store,
                             int (*fn)(void *ctx, const struct store_node *node), void *ctx)
{
    if (store == NULL || fn == NULL)
        return UTIL_EINVAL;
    return store->ops->node_list(store, fn, ctx);
}

struct node_min {
    int64_t since_ms, exclude_id, applied;
    int live;
};

static int node_min_row(void *ctx, const struct store_node *node)
{
    struct node_min *m = ctx;

    if (node->heartbeat_ms < m->since_ms || node->id == m->exclude_id)
        return 0;
    m->live++;
    if (node->applied_feed_id < m->applied)
        m->applied = node->applied_feed_id;
    return 0;
}

int store_node_min_applied_blocking(struct store *store, int64_t live_since_ms, int64_t exclude_id,
                                    int64_t *applied_out, int *live_out)
{
    struct node_min m = {live_since_ms, exclude_id, INT64_MAX, 0};
    int rc = 0;

    if (applied_out == NULL)
        return UTIL_EINVAL;
    rc = store_node_list_blocking(store, node_min_row, &m);
    *applied_out = m.applied;
    if (live_out != NULL)
        *live_out = m.live;
    return rc;
}

static int first_change_at(void *ctx, const struct store_change *change)
{
    *(int64_t *)ctx = change->at_ms;
    return 1; /* one is enough */
}

int store_node_lag_blocking(struct store *store, const struct store_node *node, int64_t head,
                            int64_t now_ms, int64_t *changes, int64_t *lag_ms)
{
    int64_t at_ms = 0;
    int rc = 0;

    if (store == NULL || node == NULL || changes == NULL || lag_ms == NULL)
        return UTIL_EINVAL;
    *changes = head > node->applied_feed_id ? head - node->applied_feed_id : 0;
    *lag_ms = 0;
    if (*changes == 0)
        return 0;
    rc = store_feed_read_blocking(store, node->applied_feed_id, 1, first_change_at, &at_ms);
    if (rc < 0)
        return rc;
    if (at_ms > 0 && now_ms > at_ms)
        *lag_ms = now_ms - at_ms;
    return 0;
}

int store_crl_latest_blocking(struct store *store, int64_t issuer_id, int delta,
                              struct store_crl_record *meta_out, unsigned char **der_out)
{
    if (store == NULL || issuer_id <= 0 || meta_out == NULL)
        return UTIL_EINVAL;
    memset(meta_out, 0, sizeof(*meta_out));
    if (der_out != NULL)
        *der_out = NULL;
    return store->ops->crl_latest(store, issuer_id, delta != 0, meta_out, der_out);
}

/* ---- TSA ------------------------------------------------------------------------------------ */

int store_tsa_reserve_blocking(struct store *store, const char *unit, int64_t count,
                               int64_t *first_out)
{
    if (store == NULL || unit == NULL || unit[0] == '\0' || count <= 0 || first_out == NULL)
        return UTIL_EINVAL;
    *first_out = 0;
    return store->ops->tsa_reserve(store, unit, count, 1, first_out);
}

int store_tsa_reserve_from_blocking(struct store *store, const char *key, int64_t count,
                                    int64_t floor, int64_t *first_out)
{
    if (store == NULL || key == NULL || key[0] == '\0' || count <= 0 || floor < 1 ||
        first_out == NULL)
        return UTIL_EINVAL;
    *first_out = 0;
    return store->ops->tsa_reserve(store, key, count, floor, first_out);
}

int store_tsa_log_blocking(struct store *store, const struct store_tsa_token *tokens, size_t n)
{
    size_t i = 0;

    if (store == NULL || (tokens == NULL && n > 0))
        return UTIL_EINVAL;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        const struct store_tsa_token *t = &tokens[i];
        if (t->unit == NULL || t->unit[0] == '\0' || t->serial <= 0 || t->policy == NULL ||
            t->imprint_alg == NULL || (t->imprint == NULL && t->imprint_len > 0))
            return UTIL_EINVAL;
    }
    return store->ops->tsa_log(store, tokens, n);
}

int store_tsa_token_get_blocking(struct store *store, const unsigned char *cert_id,
                                 const char *unit, int64_t serial, struct store_tsa_record *out)
{
    if (store == NULL || unit == NULL || out == NULL)
        return UTIL_EINVAL;
    memset(out, 0, sizeof(*out));
    return store->ops->tsa_token_get(store, cert_id, unit, serial, out);
}

/* ---- audit: hashes and digests -------------------------------------------------------------- */

static void put_u64(unsigned char *out, uint64_t v)
{
    int i = 0;

    for (i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

static int digest_u64(EVP_MD_CTX *md, int64_t v)
{
    unsigned char b[8];

    put_u64(b, (uint64_t)v);
    return EVP_DigestUpdate(md, b, sizeof(b)) == 1;
}

/* Feeds bytes as an 8-byte big-endian length followed by the bytes, so that moving bytes from one
 * field into its neighbour always changes the hash input. */
static int digest_bytes(EVP_MD_CTX *md, const void *data, size_t n)
{
    if (!digest_u64(md, (int64_t)n))
        return 0;
    return n == 0 || EVP_DigestUpdate(md, data, n) == 1;
}

static int digest_str(EVP_MD_CTX *md, const char *s)
{
    return digest_bytes(md, s, strlen(s));
}

/* v1 (before schema 2): SHA-256("pkiva-audit-v1" || prev_hash[32] || be64(id) || be64(at_ms) ||
 * lp(actor) || lp(action) || lp(detail)), lp = be64 length prefix.
 * v2: SHA-256("pkiva-audit-v2" || prev_hash[32] || be64(id) || be64(at_ms) || be64(feed_first) ||
 * be64(feed_last) || lp(changes) || lp(actor) || lp(action) || lp(detail)). Every field has a
 * fixed size or a length prefix, so the encoding is unambiguous. */
int store__audit_hash(const unsigned char *prev_hash, const struct store__audit_row *row,
                      unsigned char *out)
{
    EVP_MD_CTX *md = NULL;
    unsigned int out_len = 0;
    int ok = 0;
    int rc = UTIL_ECRYPTO;

    ERR_clear_error();
    md = EVP_MD_CTX_new();
    if (md == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    ok = EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    if (row->version == 1)
        ok = ok && EVP_DigestUpdate(md, audit_domain_v1, sizeof(audit_domain_v1) - 1) == 1 &&
             EVP_DigestUpdate(md, prev_hash, STORE_AUDIT_HASH_LEN) == 1 &&
             digest_u64(md, row->id) && digest_u64(md, row->at_ms);
    else
        ok = ok && EVP_DigestUpdate(md, audit_domain_v2, sizeof(audit_domain_v2) - 1) == 1 &&
             EVP_DigestUpdate(md, prev_hash, STORE_AUDIT_HASH_LEN) == 1 &&
             digest_u64(md, row->id) && digest_u64(md, row->at_ms) &&
             digest_u64(md, row->feed_first) && digest_u64(md, row->feed_last) &&
             digest_bytes(md, row->changes, row->changes != NULL ? row->changes_len : 0);
    ok = ok && digest_str(md, row->actor != NULL ? row->actor : "") &&
         digest_str(md, row->action != NULL ? row->action : "") &&
         digest_str(md, row->detail != NULL ? row->detail : "") &&
         EVP_DigestFinal_ex(md, out, &out_len) == 1 && out_len == STORE_AUDIT_HASH_LEN;
    if (!ok) {
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "audit: SHA-256 failed");
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    return rc;
}

struct changes_digest {
    EVP_MD_CTX *md;
    int64_t count;
};

static int changes_row(void *ctx, const struct store__change_row *r)
{
    struct changes_digest *d = ctx;

    d->count++;
    if (!digest_u64(d->md, r->id) || !digest_u64(d->md, r->kind) ||
        !digest_u64(d->md, r->issuer_id) || !digest_bytes(d->md, r->serial, r->serial_len) ||
        !digest_u64(d->md, r->has_revocation) || !digest_u64(d->md, r->reason) ||
        !digest_u64(d->md, r->revoked_at) || !digest_u64(d->md, r->invalidity_date))
        return UTIL_ECRYPTO;
    return 0;
}

/* The digest of the changes with first <= id <= last, each with its revocation row:
 * SHA-256("pkiva-audit-changes-v1" || per change: be64 id, kind, issuer_id || lp(serial) ||
 * be64 has_revocation, reason, revoked_at, invalidity_date || be64 count). */
static int changes_digest(struct store *store, int64_t first, int64_t last, unsigned char *out,
                          int64_t *count)
{
    struct changes_digest d;
    unsigned int out_len = 0;
    int rc = 0;

    memset(&d, 0, sizeof(d));
    ERR_clear_error();
    d.md = EVP_MD_CTX_new();
    if (d.md == NULL)
        return UTIL_ENOMEM;
    if (EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(d.md, changes_domain, sizeof(changes_domain) - 1) != 1) {
        rc = UTIL_ECRYPTO;
        goto out;
    }
    rc = store->ops->change_walk(store, first, last, changes_row, &d);
    if (rc != 0)
        goto out;
    if (!digest_u64(d.md, d.count) || EVP_DigestFinal_ex(d.md, out, &out_len) != 1 ||
        out_len != STORE_AUDIT_HASH_LEN) {
        rc = UTIL_ECRYPTO;
        goto out;
    }
    if (count != NULL)
        *count = d.count;
out:
    if (rc == UTIL_ECRYPTO)
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "audit: SHA-256 failed");
    EVP_MD_CTX_free(d.md);
    return rc;
}

/* ---- audit: writing ------------------------------------------------------------------------- */

int store__audit_changes(struct store *store, const char *actor, const char *action,
                         const char *detail, int64_t first, int64_t last)
{
    unsigned char changes[STORE_AUDIT_HASH_LEN];
    struct store__audit_new rec;
    int rc = 0;

    rc = changes_digest(store, first, last, changes, NULL);
    if (rc != 0)
        return rc;
    memset(&rec, 0, sizeof(rec));
    rec.actor = actor;
    rec.action = action;
    rec.detail = detail;
    rec.feed_first = first;
    rec.feed_last = last;
    rec.changes = changes;
    return store->ops->audit_append(store, &rec);
}

/* The record of one certificate's change (c is its state after the change): the detail is built
 * with jansson, so operator text (request ids) can only ever be a JSON string value. */
static int audit_cert_change(struct store *store, const char *actor, const char *action,
                             const struct store_cert *c, const char *request_id)
{
    char hex[2 * STORE_SERIAL_MAX + 1];
    json_t *detail = NULL;
    json_t *value = NULL;
    char *text = NULL;
    int rc = UTIL_ENOMEM;

    util_hex(c->serial, c->serial_len, hex);
    detail = json_pack("{s:I, s:s, s:I, s:s}", "issuer_id", (json_int_t)c->issuer_id, "serial", hex,
                       "change", (json_int_t)c->feed_id, "status",
                       c->status == STORE_REVOKED ? "revoked" : "good");
    if (detail == NULL)
        goto out;
    if (c->status == STORE_REVOKED &&
        (json_object_set_new(detail, "reason", json_string(store_reason_name(c->reason))) != 0 ||
         json_object_set_new(detail, "revoked_at", json_integer((json_int_t)c->revoked_at)) != 0))
        goto out;
    if (c->invalidity_date != 0 &&
        json_object_set_new(detail, "invalidity_date",
                            json_integer((json_int_t)c->invalidity_date)) != 0)
        goto out;
    if (request_id != NULL) {
        /* json_string refuses text that is not UTF-8; such an id is kept as hex instead. */
        value = json_string(request_id);
        if (value != NULL) {
            if (json_object_set_new(detail, "request_id", value) != 0)
                goto out;
        } else {
            size_t n = strlen(request_id);
            char *id_hex = malloc(2 * n + 1);
            if (id_hex == NULL)
                goto out;
            util_hex((const unsigned char *)request_id, n, id_hex);
            rc = json_object_set_new(detail, "request_id_hex", json_string(id_hex));
            free(id_hex);
            if (rc != 0) {
                rc = UTIL_ENOMEM;
                goto out;
            }
        }
    }
    text = json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS);
    if (text == NULL)
        goto out;
    rc = store__audit_changes(store, actor, action, text, c->feed_id, c->feed_id);
out:
    json_decref(detail);
    free(text);
    return rc;
}

int store_audit_append_blocking(struct store *store, const char *actor, const char *action,
                                const char *detail)
{
    struct store__audit_new rec;

    if (store == NULL || actor == NULL || action == NULL || action[0] == '\0')
        return UTIL_EINVAL;
    memset(&rec, 0, sizeof(rec));
    rec.actor = actor;
    rec.action = action;
    rec.detail = detail != NULL ? detail : "";
    return store->ops->audit_append(store, &rec);
}

/* ---- audit: seals --------------------------------------------------------------------------- */

/* The signed bytes of a seal: "pkiva-audit-seal-v1" || be64 first_id || be64 last_id ||
 * be64 at_ms || lp(cert_sha256) || lp(md) || be64 rsa_pss || lp(hashes). malloc'd. */
static int seal_tbs(const struct store__seal_row *seal, unsigned char **out, size_t *out_len)
{
    size_t md_len = strlen(seal->md);
    size_t n = sizeof(seal_domain) - 1 + 8 * 4 + 8 + seal->cert_sha256_len + 8 + md_len + 8 +
               seal->hashes_len;
    unsigned char *buf = malloc(n);
    unsigned char *p = buf;

    *out = NULL;
    if (buf == NULL)
        return UTIL_ENOMEM;
    memcpy(p, seal_domain, sizeof(seal_domain) - 1);
    p += sizeof(seal_domain) - 1;
    put_u64(p, (uint64_t)seal->first_id);
    put_u64(p + 8, (uint64_t)seal->last_id);
    put_u64(p + 16, (uint64_t)seal->at_ms);
    put_u64(p + 24, (uint64_t)seal->cert_sha256_len);
    p += 32;
    memcpy(p, seal->cert_sha256, seal->cert_sha256_len);
    p += seal->cert_sha256_len;
    put_u64(p, (uint64_t)md_len);
    memcpy(p + 8, seal->md, md_len);
    p += 8 + md_len;
    put_u64(p, (uint64_t)(seal->rsa_pss != 0));
    put_u64(p + 8, (uint64_t)seal->hashes_len);
    p += 16;
    memcpy(p, seal->hashes, seal->hashes_len);
    *out = buf;
    *out_len = n;
    return 0;
}

struct seal_ctx {
    const struct store_audit_signer *signer;
    unsigned char cert_sha256[STORE_AUDIT_HASH_LEN];
    unsigned char *signature; /* of the seal being written; freed by store_audit_seal_blocking */
};

static int seal_make(void *opaque, int64_t first_id, const unsigned char *hashes, size_t n,
                     struct store__seal_row *seal)
{
    struct seal_ctx *ctx = opaque;
    unsigned char *tbs = NULL;
    size_t tbs_len = 0;
    size_t sig_len = 0;
    int rc = 0;

    seal->first_id = first_id;
    seal->last_id = first_id + (int64_t)n - 1;
    seal->at_ms = util_now_ms();
    seal->cert_sha256 = ctx->cert_sha256;
    seal->cert_sha256_len = sizeof(ctx->cert_sha256);
    seal->md = ctx->signer->md;
    seal->rsa_pss = ctx->signer->rsa_pss != 0;
    seal->hashes = hashes;
    seal->hashes_len = n * STORE_AUDIT_HASH_LEN;
    rc = seal_tbs(seal, &tbs, &tbs_len);
    if (rc != 0)
        return rc;
    free(ctx->signature);
    ctx->signature = NULL;
    rc = ctx->signer->sign(ctx->signer->ctx, tbs, tbs_len, &ctx->signature, &sig_len);
    free(tbs);
    if (rc != 0)
        return rc;
    if (ctx->signature == NULL || sig_len == 0)
        return UTIL_ECRYPTO;
    seal->signature = ctx->signature;
    seal->signature_len = sig_len;
    return 0;
}

int store_audit_seal_blocking(struct store *store, const struct store_audit_signer *signer,
                              int64_t *sealed_out)
{
    struct seal_ctx ctx;
    unsigned int fpr_len = 0;
    int64_t total = 0;
    int64_t sealed = 0;
    int rc = 0;

    if (sealed_out != NULL)
        *sealed_out = 0;
    if (store == NULL || signer == NULL || signer->sign == NULL || signer->cert_der == NULL ||
        signer->cert_len == 0 || signer->md == NULL || signer->md[0] == '\0')
        return UTIL_EINVAL;
    memset(&ctx, 0, sizeof(ctx));
    ctx.signer = signer;
    ERR_clear_error();
    if (EVP_Digest(signer->cert_der, signer->cert_len, ctx.cert_sha256, &fpr_len, EVP_sha256(),
                   NULL) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "audit seal: SHA-256 failed");
        return UTIL_ECRYPTO;
    }
    /* A long backlog is sealed in runs of STORE_AUDIT_SEAL_MAX records, each its own commit. */
    do {
        rc = store->ops->seal_pending(store, STORE_AUDIT_SEAL_MAX, seal_make, &ctx, &sealed);
        total += sealed;
    } while (rc == 0 && sealed == STORE_AUDIT_SEAL_MAX);
    free(ctx.signature);
    if (sealed_out != NULL)
        *sealed_out = total;
    return rc;
}

int store_audit_unsealed_blocking(struct store *store, int64_t *count_out)
{
    if (store == NULL || count_out == NULL)
        return UTIL_EINVAL;
    *count_out = 0;
    return store->ops->unsealed(store, count_out);
}

/* ---- audit: verification -------------------------------------------------------------------- */

struct trusted_key {
    unsigned char sha256[STORE_AUDIT_HASH_LEN];
    EVP_PKEY *pkey;
};

/* A seal whose signature verified: the record hashes it vouches for. */
struct good_seal {
    int64_t id, first_id, last_id;
    unsigned char *hashes;
};

/* The changes one record covers, for naming the record behind a change. */
struct covered_range {
    int64_t first, last, record_id;
};

struct replay;

struct verify {
    struct store *store;
    struct store_audit_report *rep;
    struct trusted_key *keys;
    size_t n_keys;
    struct good_seal *seals;
    size_t n_seals, cap_seals;
    int64_t prev_seal_last; /* tiling check */
    size_t seal_at;         /* seals[seal_at] is the first that may cover the next record */
    unsigned char prev[STORE_AUDIT_HASH_LEN];
    int64_t expect_id;
    int64_t last_range_end;
    int64_t covered; /* changes digested by the records' ranges */
    struct covered_range *ranges;
    size_t n_ranges, cap_ranges;
    struct replay *replay;
    const struct store_audit_anchor *anchor;
    int anchor_seen;
    int err; /* an error that stopped the check (not a finding) */
};

#define STORE_AUDIT_PROBLEMS_LOGGED 20

/* Records one finding. The report keeps the text of the one with the lowest record id (the first
 * bad record), or of the first one found when none names a record. */
static void problem(struct verify *v, int64_t record_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct verify *v, int64_t record_id, const char *fmt, ...)
{
    struct store_audit_report *rep = v->rep;
    char text[sizeof(rep->first_problem)];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(text, sizeof(text), fmt, ap); /* truncation keeps the start */
    va_end(ap);
    if (rep->problems < STORE_AUDIT_PROBLEMS_LOGGED)
        UTIL_ERROR(STORE_MOD, "audit verify: %s", text);
    if ((record_id > 0 && (rep->bad_record == 0 || record_id < rep->bad_record)) ||
        rep->problems == 0) {
        if (record_id > 0)
            rep->bad_record = record_id;
        memcpy(rep->first_problem, text, sizeof(text));
    }
    rep->problems++;
}

static int grow(void **array, size_t *cap, size_t n, size_t size)
{
    size_t new_cap = *cap == 0 ? 64 : 2 * *cap;
    void *p = NULL;

    if (n < *cap)
        return 0;
    p = realloc(*array, new_cap * size);
    if (p == NULL)
        return UTIL_ENOMEM;
    *array = p;
    *cap = new_cap;
    return 0;
}

/* The record that covers change id (0 if none), by binary search over the ranges. */
static int64_t record_of_change(const struct verify *v, int64_t change_id)
{
    size_t lo = 0, hi = v->n_ranges;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->ranges[mid].last < change_id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < v->n_ranges && v->ranges[lo].first <= change_id)
        return v->ranges[lo].record_id;
    return 0;
}

static int load_trusted(struct verify *v, const unsigned char *const *der, const size_t *len,
                        size_t n)
{
    size_t i = 0;

    v->keys = calloc(n > 0 ? n : 1, sizeof(*v->keys));
    if (v->keys == NULL)
        return UTIL_ENOMEM;
    for (i = 0; i < n; i++) {
        const unsigned char *p = der[i];
        X509 *cert = NULL;
        unsigned int fpr_len = 0;

        ERR_clear_error();
        cert = d2i_X509(NULL, &p, (long)len[i]);
        if (cert == NULL || EVP_Digest(der[i], len[i], v->keys[v->n_keys].sha256, &fpr_len,
                                       EVP_sha256(), NULL) != 1) {
            util_log_openssl(UTIL_LOG_ERROR, STORE_MOD,
                             "audit verify: trusted certificate %zu is not usable", i + 1);
            X509_free(cert);
            return UTIL_EINVAL;
        }
        v->keys[v->n_keys].pkey = X509_get_pubkey(cert);
        X509_free(cert);
        if (v->keys[v->n_keys].pkey == NULL)
            return UTIL_EINVAL;
        v->n_keys++;
    }
    return 0;
}

static int seal_signature_ok(const struct verify *v, const struct store__seal_row *row,
                             int *known_key)
{
    EVP_MD_CTX *md = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *tbs = NULL;
    size_t tbs_len = 0;
    size_t i = 0;
    int ok = 0;

    *known_key = 0;
    for (i = 0; i < v->n_keys; i++)
        if (row->cert_sha256_len == STORE_AUDIT_HASH_LEN &&
            memcmp(row->cert_sha256, v->keys[i].sha256, STORE_AUDIT_HASH_LEN) == 0)
            break;
    if (i == v->n_keys)
        return 0;
    *known_key = 1;
    if (seal_tbs(row, &tbs, &tbs_len) != 0)
        return -1;
    ERR_clear_error();
    md = EVP_MD_CTX_new();
    ok = md != NULL &&
         EVP_DigestVerifyInit_ex(md, &pctx, row->md, NULL, NULL, v->keys[i].pkey, NULL) == 1 &&
         (!row->rsa_pss || (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
                            EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) > 0)) &&
         EVP_DigestVerify(md, row->signature, row->signature_len, tbs, tbs_len) == 1;
    ERR_clear_error(); /* a bad signature is a finding, reported by the caller */
    EVP_MD_CTX_free(md);
    free(tbs);
    return ok;
}

static int verify_seal(void *opaque, const struct store__seal_row *row)
{
    struct verify *v = opaque;
    int64_t n = row->last_id - row->first_id + 1;
    struct good_seal *g = NULL;
    int known = 0;
    int ok = 0;

    if (row->first_id != v->prev_seal_last + 1)
        problem(v, row->first_id < v->prev_seal_last + 1 ? row->first_id : v->prev_seal_last + 1,
                "seal %" PRId64 " covers records %" PRId64 "-%" PRId64
                " but the previous seal ended at record %" PRId64
                " (a seal was removed, or seals overlap)",
                row->id, row->first_id, row->last_id, v->prev_seal_last);
    if (row->last_id > v->prev_seal_last)
        v->prev_seal_last = row->last_id;
    if (n < 1 || (uint64_t)n * STORE_AUDIT_HASH_LEN != row->hashes_len || row->md == NULL) {
        problem(v, row->first_id > 0 ? row->first_id : 0, "seal %" PRId64 " is malformed", row->id);
        return 0;
    }
    ok = seal_signature_ok(v, row, &known);
    if (ok < 0) {
        v->err = UTIL_ENOMEM;
        return 1;
    }
    if (!known) {
        problem(v, row->first_id,
                "seal %" PRId64 " (records %" PRId64 "-%" PRId64
                ") is signed by a key whose certificate is not trusted",
                row->id, row->first_id, row->last_id);
        return 0;
    }
    if (!ok) {
        problem(v, row->first_id,
                "seal %" PRId64 " (records %" PRId64 "-%" PRId64 "): the signature does not verify",
                row->id, row->first_id, row->last_id);
        return 0;
    }
    if (grow((void **)&v->seals, &v->cap_seals, v->n_seals, sizeof(*v->seals)) != 0) {
        v->err = UTIL_ENOMEM;
        return 1;
    }
    g = &v->seals[v->n_seals];
    g->hashes = malloc(row->hashes_len);
    if (g->hashes == NULL) {
        v->err = UTIL_ENOMEM;
        return 1;
    }
    memcpy(g->hashes, row->hashes, row->hashes_len);
    g->id = row->id;
    g->first_id = row->first_id;
    g->last_id = row->last_id;
    v->n_seals++;
    v->rep->seals++;
    if (row->last_id > v->rep->sealed_through)
        v->rep->sealed_through = row->last_id;
    return 0;
}

/* The verified seal covering record id, or NULL. Records come in id order and the seals were
 * checked to tile, so a cursor suffices. */
static const struct good_seal *seal_for(struct verify *v, int64_t id)
{
    while (v->seal_at < v->n_seals && v->seals[v->seal_at].last_id < id)
        v->seal_at++;
    if (v->seal_at < v->n_seals && v->seals[v->seal_at].first_id <= id)
        return &v->seals[v->seal_at];
    return NULL;
}

static int verify_record(void *opaque, const struct store__audit_row *row)
{
    struct verify *v = opaque;
    unsigned char hash[STORE_AUDIT_HASH_LEN];
    unsigned char changes[STORE_AUDIT_HASH_LEN];
    const struct good_seal *seal = NULL;
    int64_t count = 0;
    int rc = 0;

    v->rep->records++;
    if (row->id != v->expect_id) {
        if (row->id > v->expect_id)
            problem(v, v->expect_id,
                    "record %" PRId64 " is missing (records %" PRId64 "-%" PRId64 " removed)",
                    v->expect_id, v->expect_id, row->id - 1);
        else
            problem(v, row->id, "record %" PRId64 " is out of order", row->id);
    }
    v->expect_id = row->id + 1;
    if (row->version != 1 && row->version != 2) {
        problem(v, row->id, "record %" PRId64 " has an unknown version %d", row->id, row->version);
        return 0;
    }
    if (row->prev_hash == NULL || row->prev_hash_len != STORE_AUDIT_HASH_LEN ||
        memcmp(row->prev_hash, v->prev, STORE_AUDIT_HASH_LEN) != 0)
        problem(v, row->id,
                "record %" PRId64 " does not chain to the record before it (edited, removed or "
                "reordered)",
                row->id);
    rc = store__audit_hash(v->prev, row, hash);
    if (rc != 0) {
        v->err = rc;
        return 1;
    }
    if (row->hash == NULL || row->hash_len != STORE_AUDIT_HASH_LEN ||
        memcmp(hash, row->hash, STORE_AUDIT_HASH_LEN) != 0)
        problem(v, row->id, "record %" PRId64 " was edited (its hash does not match its content)",
                row->id);
    if (v->anchor != NULL && v->anchor->record_id == row->id) {
        v->anchor_seen = 1;
        if (memcmp(hash, v->anchor->hash, STORE_AUDIT_HASH_LEN) != 0)
            problem(v, row->id,
                    "record %" PRId64 " is not the record the anchor names (the log was "
                    "rewritten)",
                    row->id);
    }
    seal = seal_for(v, row->id);
    if (seal != NULL && row->id == seal->last_id && row->id >= v->rep->sealed_through)
        memcpy(v->rep->sealed_hash, hash, STORE_AUDIT_HASH_LEN);
    if (seal != NULL &&
        memcmp(hash, seal->hashes + (row->id - seal->first_id) * STORE_AUDIT_HASH_LEN,
               STORE_AUDIT_HASH_LEN) != 0)
        problem(v, row->id,
                "record %" PRId64 " is not the record that seal %" PRId64
                " signed (the log was rewritten)",
                row->id, seal->id);
    /* Continue from the stored hash, so that one edit is reported once and not for every record
     * after it (the seals still catch a chain that was recomputed). */
    if (row->hash != NULL && row->hash_len == STORE_AUDIT_HASH_LEN)
        memcpy(v->prev, row->hash, STORE_AUDIT_HASH_LEN);
    else
        memcpy(v->prev, hash, STORE_AUDIT_HASH_LEN);

    if (row->feed_first == 0 && row->feed_last == 0)
        return 0;
    if (row->feed_first < 1 || row->feed_last < row->feed_first ||
        row->feed_first <= v->last_range_end) {
        problem(v, row->id,
                "record %" PRId64 " covers changes %" PRId64 "-%" PRId64
                ", which overlap an earlier record's",
                row->id, row->feed_first, row->feed_last);
        return 0;
    }
    v->last_range_end = row->feed_last;
    rc = changes_digest(v->store, row->feed_first, row->feed_last, changes, &count);
    if (rc != 0) {
        v->err = rc;
        return 1;
    }
    v->covered += count;
    if (row->changes == NULL || row->changes_len != STORE_AUDIT_HASH_LEN ||
        memcmp(changes, row->changes, STORE_AUDIT_HASH_LEN) != 0)
        problem(v, row->id,
                "record %" PRId64 ": changes %" PRId64 "-%" PRId64
                " are not what it recorded (a change or revocation row was edited, added or "
                "removed)",
                row->id, row->feed_first, row->feed_last);
    if (grow((void **)&v->ranges, &v->cap_ranges, v->n_ranges, sizeof(*v->ranges)) != 0) {
        v->err = UTIL_ENOMEM;
        return 1;
    }
    v->ranges[v->n_ranges].first = row->feed_first;
    v->ranges[v->n_ranges].last = row->feed_last;
    v->ranges[v->n_ranges].record_id = row->id;
    v->n_ranges++;
    return 0;
}

/* Names the first change no record covers (only run when the counts disagree). */
static int find_uncovered(void *opaque, const struct store__change_row *row)
{
    struct verify *v = opaque;

    if (record_of_change(v, row->id) != 0)
        return 0;
    problem(v, 0,
            "change %" PRId64 " (a %s) has no audit record: it was written around pkiva or its "
            "record was removed",
            row->id,
            row->kind == STORE_CHANGE_ISSUE    ? "registration"
            : row->kind == STORE_CHANGE_REVOKE ? "revocation"
                                               : "release of a hold");
    return 1;
}

/* Replays each certificate's changes: where the history leads must be the stored status. */
struct replay {
    int active;
    struct store_cert cert;
    int status; /* -1 before the first change */
    int reason;
    int64_t revoked_at, invalidity_date, last_change;
};

static const char *state_text(int status, int reason, char *buf, size_t len)
{
    if (status < 0)
        return "unknown";
    if (status == STORE_GOOD)
        return "good";
    (void)snprintf(buf, len, "revoked (%s)", store_reason_name(reason));
    return buf;
}

static void replay_finish(struct verify *v, struct replay *r)
{
    const struct store_cert *c = &r->cert;
    char hex[2 * STORE_SERIAL_MAX + 1];
    char want[64];
    char have[64];
    int64_t record = 0;

    if (!r->active)
        return;
    r->active = 0;
    v->rep->certificates++;
    util_hex(c->serial, c->serial_len, hex);
    if (r->last_change == 0) {
        problem(v, 0,
                "certificate %s of issuer %" PRId64
                " has no change in the history (added around pkiva)",
                hex, c->issuer_id);
        return;
    }
    if (r->status == c->status && c->feed_id == r->last_change &&
        (r->status == STORE_GOOD
             ? c->reason == STORE_REASON_NONE && c->revoked_at == 0 && c->invalidity_date == 0
             : c->reason == r->reason && c->revoked_at == r->revoked_at &&
                   c->invalidity_date == r->invalidity_date))
        return;
    record = record_of_change(v, r->last_change);
    problem(v, record,
            "certificate %s of issuer %" PRId64 " is %s in the store, but its history (change "
            "%" PRId64 ", audit record %" PRId64 ") says %s",
            hex, c->issuer_id, state_text(c->status, c->reason, have, sizeof(have)), r->last_change,
            record, state_text(r->status, r->reason, want, sizeof(want)));
}

static int verify_state_row(void *opaque, const struct store__state_row *row)
{
    struct verify *v = opaque;
    struct replay *r = v->replay;
    const struct store__change_row *ch = &row->change;
    int legal = 0;

    if (r->active &&
        (r->cert.issuer_id != row->cert.issuer_id || r->cert.serial_len != row->cert.serial_len ||
         memcmp(r->cert.serial, row->cert.serial, row->cert.serial_len) != 0))
        replay_finish(v, r);
    if (!r->active) {
        memset(r, 0, sizeof(*r));
        r->active = 1;
        r->cert = row->cert;
        r->status = -1;
    }
    if (ch->id == 0)
        return 0;
    switch (ch->kind) {
    case STORE_CHANGE_ISSUE: legal = r->status < 0; break;
    case STORE_CHANGE_REVOKE:
        legal = ch->has_revocation &&
                (r->status != STORE_REVOKED || r->reason == STORE_REASON_CERTIFICATE_HOLD);
        break;
    case STORE_CHANGE_UNREVOKE:
        legal = r->status == STORE_REVOKED && r->reason == STORE_REASON_CERTIFICATE_HOLD;
        break;
    default: legal = 0; break;
    }
    if (!legal) {
        char hex[2 * STORE_SERIAL_MAX + 1];
        char was[64];
        util_hex(row->cert.serial, row->cert.serial_len, hex);
        problem(v, record_of_change(v, ch->id),
                "change %" PRId64 " (audit record %" PRId64 ") of certificate %s: kind %d is not "
                "possible from %s%s",
                ch->id, record_of_change(v, ch->id), hex, ch->kind,
                state_text(r->status, r->reason, was, sizeof(was)),
                ch->kind == STORE_CHANGE_REVOKE && !ch->has_revocation
                    ? " (its revocation row is missing)"
                    : "");
    }
    r->status = ch->kind == STORE_CHANGE_REVOKE ? STORE_REVOKED : STORE_GOOD;
    r->reason = ch->kind == STORE_CHANGE_REVOKE ? ch->reason : STORE_REASON_NONE;
    r->revoked_at = ch->kind == STORE_CHANGE_REVOKE ? ch->revoked_at : 0;
    r->invalidity_date = ch->kind == STORE_CHANGE_REVOKE ? ch->invalidity_date : 0;
    r->last_change = ch->id;
    return 0;
}

int store_audit_verify_blocking(struct store *store, const unsigned char *const *trusted_der,
                                const size_t *trusted_len, size_t n_trusted,
                                const struct store_audit_anchor *anchor,
                                struct store_audit_report *report)
{
    struct store_audit_report local;
    struct replay replay;
    struct verify v;
    int64_t last_id = 0;
    int64_t changes = 0;
    int64_t orphan_change = 0;
    int64_t orphan_revocation = 0;
    size_t i = 0;
    int rc = 0;

    if (report == NULL)
        report = &local;
    memset(report, 0, sizeof(*report));
    if (store == NULL || (n_trusted > 0 && (trusted_der == NULL || trusted_len == NULL)))
        return UTIL_EINVAL;
    memset(&v, 0, sizeof(v));
    memset(&replay, 0, sizeof(replay));
    v.store = store;
    v.rep = report;
    v.replay = &replay;
    v.expect_id = 1;
    v.anchor = anchor;
    rc = load_trusted(&v, trusted_der, trusted_len, n_trusted);
    if (rc != 0)
        goto out;

    /* 1. Seals: signatures and tiling. */
    rc = store->ops->seal_walk(store, verify_seal, &v);
    if (rc < 0 || v.err != 0)
        goto out;
    /* 2. Records: chain, hashes against the seals, the changes each one covers. */
    rc = store->ops->audit_walk(store, verify_record, &v, &last_id);
    if (rc < 0 || v.err != 0)
        goto out;
    if (last_id > v.expect_id - 1)
        problem(&v, v.expect_id,
                "records %" PRId64 "-%" PRId64 " were removed from the end of the log", v.expect_id,
                last_id);
    else if (v.prev_seal_last > v.expect_id - 1)
        problem(&v, v.expect_id,
                "sealed records %" PRId64 "-%" PRId64 " were removed from the end of the log",
                v.expect_id, v.prev_seal_last);
    if (anchor != NULL && !v.anchor_seen)
        problem(&v, anchor->record_id,
                "record %" PRId64 ", which the anchor names, is not in the log", anchor->record_id);
    report->unsealed = report->records - report->sealed_through;
    if (report->unsealed < 0)
        report->unsealed = 0;
    /* 3. Every change is covered by a record, and no change or revocation row is orphaned. */
    rc = store->ops->orphans(store, &orphan_change, &orphan_revocation, &changes);
    if (rc != 0)
        goto out;
    report->changes = changes;
    if (v.covered != changes) {
        rc = store->ops->change_walk(store, 1, INT64_MAX, find_uncovered, &v);
        if (rc < 0)
            goto out;
    }
    if (orphan_change != 0)
        problem(&v, record_of_change(&v, orphan_change),
                "change %" PRId64 " names a certificate that is not in the store (deleted)",
                orphan_change);
    if (orphan_revocation != 0)
        problem(&v, 0,
                "the revocation row of change %" PRId64
                " belongs to no revocation in the history (added around pkiva)",
                orphan_revocation);
    /* 4. Every certificate's status is where its history leads. */
    rc = store->ops->state_walk(store, verify_state_row, &v);
    if (rc < 0)
        goto out;
    replay_finish(&v, &replay);
    rc = report->problems > 0 ? UTIL_EINVAL : 0;
out:
    if (rc == 0 && v.err != 0)
        rc = v.err;
    if (rc > 0)
        rc = v.err != 0 ? v.err : UTIL_ESTORE;
    for (i = 0; i < v.n_keys; i++)
        EVP_PKEY_free(v.keys[i].pkey);
    free(v.keys);
    for (i = 0; i < v.n_seals; i++)
        free(v.seals[i].hashes);
    free(v.seals);
    free(v.ranges);
    return rc;
}

/* ---- search --------------------------------------------------------------------------------- */

int store_cert_search_blocking(struct store *store, const struct store_search *q,
                               int (*fn)(void *ctx, const struct store_search_row *row), void *ctx)
{
    if (store == NULL || q == NULL || fn == NULL)
        return UTIL_EINVAL;
    if (q->limit < 1 || q->limit > STORE_SEARCH_LIMIT_MAX || q->before < 0 ||
        q->issuer_ids == NULL || q->n_issuer_ids < 1 || q->n_issuer_ids > STORE_SEARCH_ISSUERS_MAX)
        return UTIL_EINVAL;
    switch (q->kind) {
    case STORE_SEARCH_NAME:
        if (q->text == NULL || q->text[0] == '\0' || strlen(q->text) > STORE_SEARCH_TEXT_MAX ||
            q->fields == 0 || (q->fields & ~STORE_FIELD_ALL) != 0)
            return UTIL_EINVAL;
        break;
    case STORE_SEARCH_SERIAL:
        if (q->key == NULL || q->key_len < 1 || q->key_len > STORE_SERIAL_MAX)
            return UTIL_EINVAL;
        break;
    case STORE_SEARCH_EMAIL:
        if (q->text == NULL || q->text[0] == '\0' || strlen(q->text) > STORE_SEARCH_TEXT_MAX)
            return UTIL_EINVAL;
        break;
    case STORE_SEARCH_SHA256:
    case STORE_SEARCH_SHA1:
        if (q->key == NULL || q->key_len != (q->kind == STORE_SEARCH_SHA256 ? 32u : 20u))
            return UTIL_EINVAL;
        break;
    default: return UTIL_EINVAL;
    }
    return store->ops->cert_search(store, q, fn, ctx);
}
