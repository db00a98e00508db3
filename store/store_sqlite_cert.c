/* SPDX-License-Identifier: Apache-2.0 */
/* The SQLite backend's issuers, certificates, revocations and change feed: every status change is
 * written together with its feed row (and its revocation record) in one transaction. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_sqlite_int.h"

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

int store__sq_issuer_put(struct store *store, const char *name, const unsigned char *cert_der,
                         size_t cert_len, int64_t *id_out)
{
    static const char op[] = "issuer put";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *find = NULL;
    sqlite3_stmt *insert = NULL;
    enum tx_kind kind = 0;
    int row = 0;
    int rc = 0;

    if (cert_len > INT32_MAX)
        return UTIL_EINVAL;
    rc = store__sq_tx_start(s, op, &kind);
    if (rc != 0)
        goto out;
    rc = store__sq_stmt_get(s, STORE_ST_ISSUER_BY_NAME, &find);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, find, op, STORE_SQ_TEXT(name));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, find, op, &row);
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
    rc = store__sq_stmt_get(s, STORE_ST_ISSUER_INSERT, &insert);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, insert, op, STORE_SQ_TEXT(name), STORE_SQ_BLOB(cert_der, cert_len),
                       STORE_SQ_INT(util_now_ms()));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, insert, op, &row);
    if (rc != 0)
        goto out;
    *id_out = sqlite3_last_insert_rowid(s->db);
    UTIL_INFO(STORE_MOD, "issuer %s registered with id %" PRId64, name, *id_out);
out:
    store__sq_stmt_put(s, STORE_ST_ISSUER_BY_NAME, find);
    store__sq_stmt_put(s, STORE_ST_ISSUER_INSERT, insert);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_issuer_get(struct store *store, const char *name, struct store_issuer *out)
{
    static const char op[] = "issuer get";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_ISSUER_BY_NAME, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_TEXT(name));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
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
    store__sq_stmt_put(s, STORE_ST_ISSUER_BY_NAME, stmt);
    return rc;
}

int store__sq_issuer_list(struct store *store,
                          int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx)
{
    static const char op[] = "issuer list";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_issuer issuer;
    int row = 0;
    int rc = 0;

    memset(&issuer, 0, sizeof(issuer));
    rc = store__sq_stmt_get(s, STORE_ST_ISSUER_LIST, &stmt);
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
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
    store__sq_stmt_put(s, STORE_ST_ISSUER_LIST, stmt);
    return rc;
}

/* ---- certificates --------------------------------------------------------------------------- */

/* Fills *c from the STORE_CERT_COLS columns starting at column first. */
int store__sq_read_cert(struct sq *s, sqlite3_stmt *stmt, int first, struct store_cert *c)
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
    rc = store__sq_stmt_get(s, STORE_ST_CERT_GET, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id), STORE_SQ_BLOB(serial, serial_len));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0 || !row)
        goto out;
    rc = store__sq_read_cert(s, stmt, 0, out);
    if (rc == 0)
        *found = 1;
out:
    store__sq_stmt_put(s, STORE_ST_CERT_GET, stmt);
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

    rc = store__sq_stmt_get(s, STORE_ST_FEED_INSERT, &stmt);
    if (rc != 0)
        goto out;
    rc =
        STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(kind), STORE_SQ_INT(issuer_id),
                      STORE_SQ_BLOB(serial, serial_len), STORE_SQ_INT(at_ms), STORE_SQ_TEXT(actor));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc == 0)
        *feed_id = sqlite3_last_insert_rowid(s->db);
out:
    store__sq_stmt_put(s, STORE_ST_FEED_INSERT, stmt);
    return rc;
}

/* Writes the certificate's new status and the id of the change that set it. */
static int cert_set_status(struct sq *s, const struct store_cert *c, const char *op)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_CERT_SET_STATUS, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(c->issuer_id),
                       STORE_SQ_BLOB(c->serial, c->serial_len), STORE_SQ_INT(c->status),
                       STORE_SQ_INT(c->revoked_at), STORE_SQ_INT(c->reason),
                       STORE_SQ_INT(c->invalidity_date), STORE_SQ_INT(c->feed_id));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc == 0 && sqlite3_changes(s->db) != 1) {
        UTIL_ERROR(STORE_MOD, "%s: %s: certificate row vanished inside the transaction", op,
                   s->path);
        rc = UTIL_ESTORE;
    }
out:
    store__sq_stmt_put(s, STORE_ST_CERT_SET_STATUS, stmt);
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

    rc = store__sq_stmt_get(s, STORE_ST_REVOCATION_INSERT, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(
        s, stmt, op, STORE_SQ_INT(feed_id), STORE_SQ_INT(c->issuer_id),
        STORE_SQ_BLOB(c->serial, c->serial_len), STORE_SQ_INT(c->reason),
        STORE_SQ_INT(c->revoked_at), STORE_SQ_INT(c->invalidity_date),
        STORE_SQ_TEXT(rev->request_id),
        STORE_SQ_INT(rev->received_at_ms != 0 ? rev->received_at_ms : committed_at_ms),
        STORE_SQ_INT(committed_at_ms), STORE_SQ_TEXT(rev->actor != NULL ? rev->actor : "unknown"));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
out:
    store__sq_stmt_put(s, STORE_ST_REVOCATION_INSERT, stmt);
    return rc;
}

static int der_insert(struct sq *s, const unsigned char *der, size_t der_len, const char *op,
                      int64_t *der_id)
{
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_DER_INSERT, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_BLOB(der, der_len));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc == 0)
        *der_id = sqlite3_last_insert_rowid(s->db);
out:
    store__sq_stmt_put(s, STORE_ST_DER_INSERT, stmt);
    return rc;
}

int store__sq_cert_add(struct store *store, const struct store_cert_new *cert,
                       const struct store_revocation *rev, int64_t *feed_id_out, int *created_out)
{
    static const char op[] = "cert add";
    struct sq *s = store__sq_of(store);
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
    rc = store__sq_tx_start(s, op, &kind);
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
    rc = store__sq_stmt_get(s, STORE_ST_CERT_INSERT, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(
        s, stmt, op, STORE_SQ_INT(c.issuer_id), STORE_SQ_BLOB(c.serial, c.serial_len),
        STORE_SQ_INT(c.not_before), STORE_SQ_INT(c.not_after), STORE_SQ_INT(c.status),
        STORE_SQ_INT(c.revoked_at), STORE_SQ_INT(c.reason), STORE_SQ_INT(c.invalidity_date),
        STORE_SQ_INT(c.feed_id), STORE_SQ_TEXT(cert->subject),
        der_id != 0 ? STORE_SQ_INT(der_id) : STORE_SQ_NULL);
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
    if (rc != 0)
        goto out;
    if (rev != NULL) {
        rc = revocation_insert(s, c.feed_id, &c, rev, now_ms, op);
        if (rc != 0)
            goto out;
    }
    if (der_id != 0) {
        rc = store__sq_search_index_add(s, der_id, c.issuer_id, c.serial, c.serial_len,
                                        cert->cert_der, cert->cert_len, op);
        if (rc != 0)
            goto out;
    }
    *feed_id_out = c.feed_id;
    *created_out = 1;
out:
    store__sq_stmt_put(s, STORE_ST_CERT_INSERT, stmt);
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_cert_get(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, struct store_cert *out)
{
    int found = 0;
    int rc = 0;

    rc = cert_lookup(store__sq_of(store), issuer_id, serial, serial_len, "cert get", out, &found);
    if (rc == 0 && !found)
        rc = UTIL_ENOTFOUND;
    return rc;
}

int store__sq_cert_der(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, unsigned char **der, size_t *der_len)
{
    static const char op[] = "cert der";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    const void *blob = NULL;
    int len = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_CERT_DER, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id), STORE_SQ_BLOB(serial, serial_len));
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, op, &row);
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
    store__sq_stmt_put(s, STORE_ST_CERT_DER, stmt);
    return rc;
}

/* ---- the status index's load: an issuer's certificates in two halves at once ---------------

 * DESIGN. STORE_ITER_ALL_ANY_ORDER for one issuer (the OCSP status index at start-up, where
 * SQLite's decoding of rows is most of the time to ready): the issuer's serials are split at the
 * middle of the range between its first and last one (their first 8 octets read as numbers, so
 * random and sequential serials both split about evenly; a bad split only costs balance, never a
 * row: the halves are serial < mid and serial >= mid, complementary in SQLite's octet order), and
 * the upper half is read on a second, read-only connection by a thread of its own while the
 * caller reads the lower one. The callback still runs on one thread at a time: each reader fills
 * a batch and hands it over under a mutex, in whatever order the batches come. Each connection
 * reads its own snapshot; the caller reads the change feed's head before the walk and replays
 * what changed after it (ocsp_responder_load_blocking), as with a single walk. Not inside an
 * explicit transaction (the second connection would not see its writes), and with one walk when
 * the issuer has fewer than two distinct prefixes or the second connection or thread cannot be
 * had. */
#define SCAN_BATCH 512
#define SCAN_STOPPED (-1000000) /* a half stopped because the other one failed or fn said stop */

struct scan_share {
    pthread_mutex_t deliver; /* fn runs under it: one batch at a time */
    int (*fn)(void *ctx, const struct store_cert *cert);
    void *ctx;
    _Atomic int stop;
};

struct scan_half {
    struct scan_share *share;
    struct sq *s;
    int64_t issuer_id;
    unsigned char mid[8];
    enum sq_stmt_id id; /* STORE_ST_CERT_ITER_BELOW or _FROM */
    int rc;
    int n;
    struct store_cert rows[SCAN_BATCH];
};

static int scan_deliver(struct scan_half *h)
{
    struct scan_share *sh = h->share;
    int rc = 0;

    pthread_mutex_lock(&sh->deliver);
    if (atomic_load(&sh->stop))
        rc = SCAN_STOPPED;
    for (int i = 0; i < h->n && rc == 0; i++)
        rc = sh->fn(sh->ctx, &h->rows[i]);
    if (rc != 0)
        atomic_store(&sh->stop, 1);
    pthread_mutex_unlock(&sh->deliver);
    h->n = 0;
    return rc;
}

static void *scan_half_run(void *arg)
{
    static const char op[] = "cert iterate";
    struct scan_half *h = arg;
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc;

    /* Through a memory map, as the single walk (see store__sq_cert_iterate). */
    (void)sqlite3_exec(h->s->db, "PRAGMA mmap_size = 68719476736", NULL, NULL, NULL);
    rc = store__sq_stmt_get(h->s, h->id, &stmt);
    if (rc == 0)
        rc = STORE_SQ_BIND(h->s, stmt, op, STORE_SQ_INT(h->issuer_id),
                           STORE_SQ_BLOB(h->mid, sizeof(h->mid)));
    while (rc == 0) {
        rc = store__sq_step(h->s, stmt, op, &row);
        if (rc != 0 || !row)
            break;
        rc = store__sq_read_cert(h->s, stmt, 0, &h->rows[h->n++]);
        if (rc == 0 && h->n == SCAN_BATCH)
            rc = scan_deliver(h);
    }
    if (rc == 0 && h->n > 0)
        rc = scan_deliver(h);
    if (rc != 0 && rc != SCAN_STOPPED)
        atomic_store(&h->share->stop, 1);
    store__sq_stmt_put(h->s, h->id, stmt);
    (void)sqlite3_exec(h->s->db, "PRAGMA mmap_size = 0", NULL, NULL, NULL);
    h->rc = rc;
    return NULL;
}

/* The first 8 octets of the issuer's first (last = 0) or last serial, zero-padded, as a number;
 * *found = 0 when the issuer has none. */
static int serial_prefix(struct sq *s, int64_t issuer_id, int last, uint64_t *out, int *found)
{
    static const char op[] = "cert iterate";
    enum sq_stmt_id id = last ? STORE_ST_CERT_SERIAL_LAST : STORE_ST_CERT_SERIAL_FIRST;
    sqlite3_stmt *stmt = NULL;
    const unsigned char *p;
    int len, rc;

    *out = 0;
    *found = 0;
    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc == 0)
        rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id));
    if (rc == 0)
        rc = store__sq_step(s, stmt, op, found);
    if (rc == 0 && *found) {
        p = sqlite3_column_blob(stmt, 0);
        len = sqlite3_column_bytes(stmt, 0);
        for (int i = 0; i < 8; i++)
            *out = (*out << 8) | (p != NULL && i < len ? p[i] : 0);
    }
    store__sq_stmt_put(s, id, stmt);
    return rc;
}

/* The upper half, on a thread of its own. */
static void *scan_upper_half_run(void *arg)
{
    util_thread_name("store-scan", -1);
    return scan_half_run(arg);
}

/* Walks issuer_id's certificates in two halves at once; *done = 0 (and nothing called) when it
 * falls back to the single walk. */
static int iterate_halves(struct sq *s, int64_t issuer_id,
                          int (*fn)(void *ctx, const struct store_cert *cert), void *ctx, int *done)
{
    struct scan_share share = {.fn = fn, .ctx = ctx};
    struct scan_half *lo = NULL, *hi = NULL;
    struct store *other = NULL;
    uint64_t first = 0, last = 0, mid;
    int found_first = 0, found_last = 0, rc;
    pthread_t thread;

    *done = 0;
    if (s->depth > 0)
        return 0;
    rc = serial_prefix(s, issuer_id, 0, &first, &found_first);
    if (rc == 0)
        rc = serial_prefix(s, issuer_id, 1, &last, &found_last);
    if (rc != 0 || !found_first || !found_last || last <= first)
        return rc;
    mid = first + (last - first) / 2 + 1; /* first < mid <= last */
    lo = calloc(1, sizeof(*lo));
    hi = calloc(1, sizeof(*hi));
    if (lo == NULL || hi == NULL ||
        store_open_blocking(s->path, STORE_OPEN_READONLY, &other) != UTIL_OK) {
        free(lo);
        free(hi);
        return 0; /* the single walk then */
    }
    pthread_mutex_init(&share.deliver, NULL);
    lo->share = hi->share = &share;
    lo->s = s;
    hi->s = store__sq_of(other);
    lo->issuer_id = hi->issuer_id = issuer_id;
    lo->id = STORE_ST_CERT_ITER_BELOW;
    hi->id = STORE_ST_CERT_ITER_FROM;
    for (int i = 0; i < 8; i++)
        lo->mid[i] = hi->mid[i] = (unsigned char)(mid >> (56 - 8 * i));
    if (pthread_create(&thread, NULL, scan_upper_half_run, hi) == 0) {
        *done = 1;
        (void)scan_half_run(lo);
        (void)pthread_join(thread, NULL); /* our own joinable thread */
        /* The first real outcome: an error of either half, or what fn returned to stop. */
        rc = lo->rc != 0 && lo->rc != SCAN_STOPPED ? lo->rc : hi->rc != SCAN_STOPPED ? hi->rc : 0;
    }
    pthread_mutex_destroy(&share.deliver);
    store_close(other);
    free(lo);
    free(hi);
    return rc;
}

int store__sq_cert_iterate(struct store *store, int64_t issuer_id, int filter,
                           int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    static const char op[] = "cert iterate";
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    struct store_cert c;
    enum sq_stmt_id id = 0;
    int row = 0;
    int rc = 0;

    if (filter == STORE_ITER_ALL_ANY_ORDER && issuer_id > 0) {
        int done = 0;
        rc = iterate_halves(s, issuer_id, fn, ctx, &done);
        if (rc != 0 || done)
            return rc;
    }
    if (filter == STORE_ITER_REVOKED)
        id = issuer_id > 0 ? STORE_ST_CERT_ITER_REVOKED_ISSUER : STORE_ST_CERT_ITER_REVOKED_ALL;
    else
        id = issuer_id > 0 ? STORE_ST_CERT_ITER_ISSUER : STORE_ST_CERT_ITER_ALL;
    /* A scan of every certificate (the OCSP index at start-up) reads the file through a memory
     * map instead of a read() and a copy per page (the kernel's share of the load's CPU fell from
     * about 10% to 3%, perf at 1 M certificates). Only for that scan, so that mapped pages do not
     * stay in the process's RSS. Not for the revoked ones (a CRL): that walk goes through an index
     * to rows all over the file, and every page it touched stayed mapped until its end: 659 MiB
     * of RSS for a CRL of 1 M entries, 15x its DER (bench/run, the goal is 3x), where read()
     * into SQLite's own small cache needs 89 MiB. SQLite clamps the size to its build's maximum
     * (2 GiB by default; beyond it, pages are read as before) and changes it only while no mapped
     * page is in use, so a nested scan is safe. */
    if (filter != STORE_ITER_REVOKED)
        (void)sqlite3_exec(s->db, "PRAGMA mmap_size = 68719476736", NULL, NULL, NULL); /* clamped */
    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    if (issuer_id > 0)
        rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(issuer_id));
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        rc = store__sq_read_cert(s, stmt, 0, &c);
        if (rc == 0)
            rc = fn(ctx, &c);
        if (rc != 0)
            goto out;
    }
out:
    store__sq_stmt_put(s, id, stmt);
    (void)sqlite3_exec(s->db, "PRAGMA mmap_size = 0", NULL, NULL, NULL); /* a hint, as above */
    return rc;
}

/* ---- revocation ----------------------------------------------------------------------------- */

int store__sq_revoke(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                     int *changed_out)
{
    static const char op[] = "revoke";
    struct sq *s = store__sq_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int64_t now_ms = 0;
    int found = 0;
    int rc = 0;

    *changed_out = 0;
    rc = store__sq_tx_start(s, op, &kind);
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
    return store__sq_tx_finish(s, kind, rc, op);
}

int store__sq_unrevoke(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *actor, int64_t *feed_id_out)
{
    static const char op[] = "unrevoke";
    struct sq *s = store__sq_of(store);
    struct store_cert c;
    enum tx_kind kind = 0;
    int found = 0;
    int rc = 0;

    rc = store__sq_tx_start(s, op, &kind);
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
    return store__sq_tx_finish(s, kind, rc, op);
}

/* ---- change feed ---------------------------------------------------------------------------- */

int store__sq_feed_read(struct store *store, int64_t after_id, int max, unsigned opts,
                        int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    static const char op[] = "feed read";
    struct sq *s = store__sq_of(store);
    enum sq_stmt_id id =
        (opts & STORE_FEED_SKIP_ISSUE) != 0 ? STORE_ST_FEED_READ_NOT_ISSUE : STORE_ST_FEED_READ;
    sqlite3_stmt *stmt = NULL;
    struct store_change change;
    int delivered = 0;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, id, &stmt);
    if (rc != 0)
        goto out;
    rc = STORE_SQ_BIND(s, stmt, op, STORE_SQ_INT(after_id), STORE_SQ_INT(max));
    if (rc != 0)
        goto out;
    for (;;) {
        rc = store__sq_step(s, stmt, op, &row);
        if (rc != 0 || !row)
            goto out;
        memset(&change, 0, sizeof(change));
        change.id = sqlite3_column_int64(stmt, 0);
        change.kind = sqlite3_column_int(stmt, 1);
        change.at_ms = sqlite3_column_int64(stmt, 2);
        rc = store__sq_read_cert(s, stmt, 3, &change.cert);
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
    store__sq_stmt_put(s, id, stmt);
    return rc != 0 ? rc : delivered;
}

int store__sq_feed_head(struct store *store, int64_t *id_out)
{
    struct sq *s = store__sq_of(store);
    sqlite3_stmt *stmt = NULL;
    int row = 0;
    int rc = 0;

    rc = store__sq_stmt_get(s, STORE_ST_FEED_HEAD, &stmt);
    if (rc != 0)
        goto out;
    rc = store__sq_step(s, stmt, "feed head", &row);
    if (rc == 0 && row)
        *id_out = sqlite3_column_int64(stmt, 0);
out:
    store__sq_stmt_put(s, STORE_ST_FEED_HEAD, stmt);
    return rc;
}
