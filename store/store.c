/* SPDX-License-Identifier: Apache-2.0 */
/* store.c: the public face of the store module. It validates arguments, fills the defaults that the
 * header promises ("0 = now"), picks the backend from the database path and forwards every call
 * through the backend vtable; the audit chain's hash and its verification live here too, so that
 * every backend chains records in exactly the same way. */

/* DESIGN
 *
 * Layers. store.c (this file, no storage code) -> struct store__ops (store_int.h) -> one backend:
 * store_sqlite.c today. Import (store_import.c) is written against the public API plus the
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
 *
 * Failure modes. Lock contention beyond the busy timeout is UTIL_ELOCKED (retry later), a full disk
 * UTIL_ENOSPC, anything else from the database UTIL_ESTORE, each with a log line naming the
 * operation and the database's message. A failed write leaves nothing behind. */

#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

/* The audit hash input starts with this tag so that a record hash can never be confused with a
 * hash computed for another purpose over similar bytes; bump the version if the encoding changes.
 */
static const char audit_domain[] = "pkiva-audit-v1";

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
    /* A URL scheme selects another backend; only SQLite files exist today. */
    if (strncmp(path, "postgres://", 11) == 0 || strncmp(path, "postgresql://", 13) == 0) {
        UTIL_ERROR(STORE_MOD, "open: the PostgreSQL backend is not built into this pkiva");
        return UTIL_ECONFIG;
    }
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
    if (!serial_ok(cert->serial, cert->serial_len)) {
        UTIL_ERROR(STORE_MOD, "cert add: serial must be 1-%d octets", STORE_SERIAL_MAX);
        return UTIL_EINVAL;
    }
    if (cert->cert_der == NULL && cert->cert_len != 0)
        return UTIL_EINVAL;
    rc = store->ops->cert_add(store, cert, NULL, &feed_id, &created);
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
    if (filter != STORE_ITER_ALL && filter != STORE_ITER_REVOKED)
        return UTIL_EINVAL;
    return store->ops->cert_iterate(store, issuer_id, filter, fn, ctx);
}

/* ---- revocation ----------------------------------------------------------------------------- */

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
    if (!serial_ok(rev->serial, rev->serial_len))
        return UTIL_EINVAL;
    if (!store__reason_valid_for_revoke(rev->reason)) {
        UTIL_ERROR(STORE_MOD, "revoke: %d is not a reason to revoke a certificate", rev->reason);
        return UTIL_EINVAL;
    }
    if (rev->revoked_at < 0 || rev->invalidity_date < 0 || rev->received_at_ms < 0)
        return UTIL_EINVAL;
    filled = *rev;
    if (filled.received_at_ms == 0)
        filled.received_at_ms = now_ms;
    if (filled.actor == NULL)
        filled.actor = "unknown";
    rc = store->ops->revoke(store, &filled, &feed_id, &changed);
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
    rc = store->ops->unrevoke(store, issuer_id, serial, serial_len,
                              actor != NULL ? actor : "unknown", &feed_id);
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
    if (store == NULL || fn == NULL || after_id < 0)
        return UTIL_EINVAL;
    if (max <= 0)
        return 0;
    return store->ops->feed_read(store, after_id, max, fn, ctx);
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

/* open_only lists the oldest open revocation first (the one closest to missing its deadline); the
 * full list is newest first. limit applies to both. */
int store_sla_list_blocking(struct store *store, int open_only, int limit,
                            int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    if (store == NULL || fn == NULL)
        return UTIL_EINVAL;
    return store->ops->sla_list(store, open_only != 0, limit, fn, ctx);
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

int store_crl_number_next_blocking(struct store *store, int64_t issuer_id, int64_t *number_out)
{
    if (store == NULL || issuer_id <= 0 || number_out == NULL)
        return UTIL_EINVAL;
    *number_out = 0;
    return store->ops->crl_number_next(store, issuer_id, number_out);
}

int store_crl_save_blocking(struct store *store, const struct store_crl_record *crl)
{
    if (store == NULL || crl == NULL || crl->issuer_id <= 0 || crl->number <= 0)
        return UTIL_EINVAL;
    if (crl->der == NULL || crl->der_len == 0 || crl->base_number < 0 ||
        crl->base_number >= crl->number)
        return UTIL_EINVAL;
    return store->ops->crl_save(store, crl);
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
    return store->ops->tsa_reserve(store, unit, count, first_out);
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

int store_tsa_token_get_blocking(struct store *store, const char *unit, int64_t serial,
                                 struct store_tsa_record *out)
{
    if (store == NULL || unit == NULL || out == NULL)
        return UTIL_EINVAL;
    memset(out, 0, sizeof(*out));
    return store->ops->tsa_token_get(store, unit, serial, out);
}

/* ---- audit ---------------------------------------------------------------------------------- */

static void put_u64(unsigned char *out, uint64_t v)
{
    int i = 0;

    for (i = 7; i >= 0; i--) {
        out[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* Feeds a string as an 8-byte big-endian length followed by its bytes, so that moving bytes from
 * one field into its neighbour always changes the hash input. */
static int digest_str(EVP_MD_CTX *md, const char *s)
{
    unsigned char len[8];
    size_t n = strlen(s);

    put_u64(len, (uint64_t)n);
    if (EVP_DigestUpdate(md, len, sizeof(len)) != 1)
        return 0;
    return EVP_DigestUpdate(md, s, n) == 1;
}

/* hash = SHA-256("pkiva-audit-v1" || prev_hash[32] || be64(id) || be64(at_ms) || be64(len) actor ||
 * be64(len) action || be64(len) detail). Every field has a fixed size or a length prefix, so the
 * encoding is unambiguous. */
int store__audit_hash(const unsigned char *prev_hash, int64_t id, int64_t at_ms, const char *actor,
                      const char *action, const char *detail, unsigned char *out)
{
    EVP_MD_CTX *md = NULL;
    unsigned char num[16];
    unsigned int out_len = 0;
    int rc = UTIL_ECRYPTO;

    ERR_clear_error();
    md = EVP_MD_CTX_new();
    if (md == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    put_u64(num, (uint64_t)id);
    put_u64(num + 8, (uint64_t)at_ms);
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, audit_domain, sizeof(audit_domain) - 1) != 1 ||
        EVP_DigestUpdate(md, prev_hash, STORE_AUDIT_HASH_LEN) != 1 ||
        EVP_DigestUpdate(md, num, sizeof(num)) != 1 || !digest_str(md, actor) ||
        !digest_str(md, action) || !digest_str(md, detail != NULL ? detail : "") ||
        EVP_DigestFinal_ex(md, out, &out_len) != 1 || out_len != STORE_AUDIT_HASH_LEN) {
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "audit: SHA-256 failed");
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    return rc;
}

int store_audit_append_blocking(struct store *store, const char *actor, const char *action,
                                const char *detail)
{
    if (store == NULL || actor == NULL || action == NULL || action[0] == '\0')
        return UTIL_EINVAL;
    return store->ops->audit_append(store, actor, action, detail != NULL ? detail : "");
}

struct audit_verify {
    unsigned char prev[STORE_AUDIT_HASH_LEN];
    int64_t expect_id;
    int64_t count;
    int64_t bad_id;
    int err; /* an error other than a broken chain (hash failure) */
};

static int audit_verify_row(void *ctx, const struct store__audit_row *row)
{
    struct audit_verify *v = ctx;
    unsigned char hash[STORE_AUDIT_HASH_LEN];
    int rc = 0;

    /* A gap in the ids means records were removed; the first record after the gap is the first
     * one whose predecessor is not what it claims. */
    if (row->id != v->expect_id || row->prev_hash == NULL ||
        row->prev_hash_len != STORE_AUDIT_HASH_LEN ||
        memcmp(row->prev_hash, v->prev, STORE_AUDIT_HASH_LEN) != 0 || row->hash == NULL ||
        row->hash_len != STORE_AUDIT_HASH_LEN) {
        v->bad_id = row->id;
        return 1;
    }
    rc = store__audit_hash(v->prev, row->id, row->at_ms, row->actor != NULL ? row->actor : "",
                           row->action != NULL ? row->action : "", row->detail, hash);
    if (rc != 0) {
        v->err = rc;
        return 1;
    }
    if (memcmp(hash, row->hash, STORE_AUDIT_HASH_LEN) != 0) {
        v->bad_id = row->id;
        return 1;
    }
    memcpy(v->prev, row->hash, STORE_AUDIT_HASH_LEN);
    v->expect_id++;
    v->count++;
    return 0;
}

int store_audit_verify_blocking(struct store *store, int64_t *bad_id, int64_t *count)
{
    struct audit_verify v;
    int64_t last_id = 0;
    int rc = 0;

    if (store == NULL)
        return UTIL_EINVAL;
    memset(&v, 0, sizeof(v));
    v.expect_id = 1;
    rc = store->ops->audit_walk(store, audit_verify_row, &v, &last_id);
    if (rc < 0)
        goto out;
    if (v.err != 0) {
        rc = v.err;
        goto out;
    }
    /* The walk stopped early (rc == 1) on a bad record, or it ended: then the last record must be
     * the last one ever written, else the tail was cut off. */
    if (rc == 0 && v.expect_id - 1 != last_id)
        v.bad_id = v.expect_id;
    if (v.bad_id != 0) {
        UTIL_ERROR(STORE_MOD, "audit chain broken at record %lld (%lld records intact before it)",
                   (long long)v.bad_id, (long long)v.count);
        rc = UTIL_EINVAL;
        goto out;
    }
    rc = 0;
out:
    if (bad_id != NULL)
        *bad_id = v.bad_id;
    if (count != NULL)
        *count = v.count;
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
    case STORE_SEARCH_SHA256:
    case STORE_SEARCH_SHA1:
        if (q->key == NULL || q->key_len != (q->kind == STORE_SEARCH_SHA256 ? 32u : 20u))
            return UTIL_EINVAL;
        break;
    default: return UTIL_EINVAL;
    }
    return store->ops->cert_search(store, q, fn, ctx);
}
