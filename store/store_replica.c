/* SPDX-License-Identifier: Apache-2.0 */
/* store_replica.c: a store connection that reads from a hot-standby replica and writes to the
 * primary ([store] read_conninfo): the reads a node may serve stale (its OCSP index load, the
 * change feed it follows, CRLs and certificates it serves, directory searches) go to the replica,
 * everything else to the primary; and the replica's lag, measured and bounded. */

/* DESIGN (reads from a replica)
 *
 * Which reads. A connection opened with STORE_OPEN_STALE_READS for the primary named in
 * store_read_replica_set is a pair of connections behind one struct store. Reads listed in
 * stale_ok below go to the replica, unless an explicit transaction is open (then everything goes
 * to the primary: a transaction reads its own writes). Writes, leases, the audit chain and every
 * other read go to the primary. A replica is the primary as it was a little earlier, and all the
 * stale reads of one connection come from the same replica, so what a node builds from them (its
 * OCSP index, then the feed from the position that index was loaded at) is consistent, just
 * late; it catches up as the replica replays. What must never be late is not given such a
 * connection: the CRL publisher generates from the primary (a CRL built from a lagging replica
 * could drop a revocation an earlier CRL listed), and the admin API and the CLI write and read
 * the primary.
 *
 * Lag. Measured at most once a second by each such connection when it reads the feed (the node's
 * feed thread polls every feed_poll): the replica's newest change id, then on the primary the
 * first change after it; the lag is how long that change has been committed (0 when the replica
 * has every change). The newest measurement is kept for the process (store_replica_lag_ms, read
 * by /readyz on a loop thread without blocking); past the configured bound the node reports
 * "replica lagging" and logs it once. Changes only: a replica that is behind while nothing
 * changes serves nothing stale. */

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

#define REPLICA_MEASURE_EVERY_MS 1000
/* At start-up the replica may not have replayed the primary's latest migration yet. */
#define REPLICA_OPEN_TRIES 50
#define REPLICA_OPEN_WAIT_MS 200

static pthread_mutex_t cfg_lock = PTHREAD_MUTEX_INITIALIZER;
static char *cfg_primary, *cfg_replica;
static int64_t cfg_max_lag_ms;
static _Atomic int64_t lag_ms = -1;
static _Atomic int lag_reported;

struct split {
    struct store base; /* first: a struct store * is a struct split * */
    struct store *primary, *replica;
    int depth; /* explicit transactions open (on the primary) */
    int64_t next_measure_ms;
};

static struct split *split_of(struct store *store)
{
    return (struct split *)store;
}

int store_read_replica_set(const char *path, const char *read_path, int64_t max_lag_ms)
{
    char *p = NULL, *r = NULL;
    int rc = 0;

    if (path != NULL && read_path != NULL && read_path[0] != '\0') {
        p = strdup(path);
        r = strdup(read_path);
        if (p == NULL || r == NULL) {
            free(p);
            free(r);
            return UTIL_ENOMEM;
        }
    }
    (void)pthread_mutex_lock(&cfg_lock); /* a default mutex cannot fail here */
    free(cfg_primary);
    free(cfg_replica);
    cfg_primary = p;
    cfg_replica = r;
    cfg_max_lag_ms = max_lag_ms > 0 ? max_lag_ms : 0;
    (void)pthread_mutex_unlock(&cfg_lock);
    atomic_store(&lag_ms, -1);
    atomic_store(&lag_reported, 0);
    return rc;
}

int64_t store_replica_lag_ms(void)
{
    return atomic_load(&lag_ms);
}

int store_replica_lagging(char *why, size_t why_len)
{
    int64_t lag = atomic_load(&lag_ms);
    int64_t max = 0;

    (void)pthread_mutex_lock(&cfg_lock);
    max = cfg_replica != NULL ? cfg_max_lag_ms : 0;
    (void)pthread_mutex_unlock(&cfg_lock);
    if (max <= 0 || lag <= max)
        return 0;
    if (why != NULL && why_len > 0)
        (void)snprintf(why, why_len, "replica lagging %" PRId64 " ms (bound %" PRId64 " ms)", lag,
                       max); /* may cut: a reason text */
    return 1;
}

/* ---- measuring the lag ---------------------------------------------------------------------- */

static int first_change(void *ctx, const struct store_change *change)
{
    *(int64_t *)ctx = change->at_ms;
    return 0;
}

static void measure(struct split *s)
{
    int64_t now = util_now_ms();
    int64_t head = 0, at_ms = 0, lag = 0, max = 0;
    int rc = 0;

    if (s->depth > 0 || util_mono_ms() < s->next_measure_ms)
        return;
    s->next_measure_ms = util_mono_ms() + REPLICA_MEASURE_EVERY_MS;
    rc = s->replica->ops->feed_head(s->replica, &head);
    if (rc == 0)
        rc = s->primary->ops->feed_read(s->primary, head, 1, 0, first_change, &at_ms);
    if (rc < 0)
        return; /* logged by the backend; the reads themselves report the outage */
    lag = at_ms > 0 && now > at_ms ? now - at_ms : 0;
    atomic_store(&lag_ms, lag);
    (void)pthread_mutex_lock(&cfg_lock);
    max = cfg_max_lag_ms;
    (void)pthread_mutex_unlock(&cfg_lock);
    if (max > 0 && lag > max && !atomic_exchange(&lag_reported, 1))
        UTIL_WARN(STORE_MOD,
                  "the read replica lags %" PRId64 " ms behind the primary (bound %" PRId64
                  " ms; change %" PRId64 " and later not replayed): /readyz answers 503",
                  lag, max, head + 1);
    else if (lag <= max && atomic_exchange(&lag_reported, 0))
        UTIL_INFO(STORE_MOD, "the read replica caught up (lag %" PRId64 " ms)", lag);
}

/* ---- routing -------------------------------------------------------------------------------- */

/* The connection for a read that may be stale. */
static struct store *reader(struct split *s)
{
    return s->depth > 0 ? s->primary : s->replica;
}

/* After a call on inner: its refusal reason, if any, is the pair's (store_errmsg). */
static int done(struct split *s, struct store *inner, int rc)
{
    if (inner->errmsg[0] != '\0')
        (void)snprintf(s->base.errmsg, sizeof(s->base.errmsg), "%s", inner->errmsg);
    inner->errmsg[0] = '\0';
    return rc;
}

#define PRIMARY(call) done(split_of(store), split_of(store)->primary, call)
#define STALE(call) stale_done(split_of(store), __func__, call)
/* After a read that may be stale: a failure names the replica in the log. */
static int stale_done(struct split *s, const char *op, int rc)
{
    if (rc < 0 && rc != UTIL_ENOTFOUND && s->depth == 0)
        UTIL_WARN(STORE_MOD, "%s on the read replica: %s", op + 3, util_strerror(rc));
    return rc;
}

#define P (split_of(store)->primary)
#define R (reader(split_of(store)))

static void sp_close(struct store *store)
{
    struct split *s = split_of(store);

    store_close(s->primary);
    store_close(s->replica);
    free(s);
}

static int sp_ping(struct store *store)
{
    int rc = P->ops->ping(P);
    return rc != 0 ? rc : split_of(store)->replica->ops->ping(split_of(store)->replica);
}

static int sp_begin(struct store *store)
{
    int rc = P->ops->begin(P);
    if (rc == 0)
        split_of(store)->depth++;
    return done(split_of(store), P, rc);
}

static int sp_commit(struct store *store)
{
    int rc = P->ops->commit(P);
    if (split_of(store)->depth > 0)
        split_of(store)->depth--;
    return done(split_of(store), P, rc);
}

static int sp_rollback(struct store *store)
{
    int rc = P->ops->rollback(P);
    if (split_of(store)->depth > 0)
        split_of(store)->depth--;
    return done(split_of(store), P, rc);
}

static int sp_issuer_put(struct store *store, const char *name, const unsigned char *der,
                         size_t len, int64_t *id_out)
{
    return PRIMARY(P->ops->issuer_put(P, name, der, len, id_out));
}

/* Issuers are read back right after a node registers them: from the primary. */
static int sp_issuer_get(struct store *store, const char *name, struct store_issuer *out)
{
    return PRIMARY(P->ops->issuer_get(P, name, out));
}

static int sp_issuer_list(struct store *store,
                          int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx)
{
    return PRIMARY(P->ops->issuer_list(P, fn, ctx));
}

static int sp_cert_add(struct store *store, const struct store_cert_new *cert,
                       const struct store_revocation *rev, int64_t *feed_id_out, int *created_out)
{
    return PRIMARY(P->ops->cert_add(P, cert, rev, feed_id_out, created_out));
}

static int sp_cert_get(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, struct store_cert *out)
{
    return STALE(R->ops->cert_get(R, issuer_id, serial, serial_len, out));
}

static int sp_cert_der(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, unsigned char **der, size_t *der_len)
{
    return STALE(R->ops->cert_der(R, issuer_id, serial, serial_len, der, der_len));
}

static int sp_cert_iterate(struct store *store, int64_t issuer_id, int filter,
                           int (*fn)(void *ctx, const struct store_cert *cert), void *ctx)
{
    return STALE(R->ops->cert_iterate(R, issuer_id, filter, fn, ctx));
}

static int sp_revoke(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                     int *changed_out)
{
    return PRIMARY(P->ops->revoke(P, rev, feed_id_out, changed_out));
}

static int sp_unrevoke(struct store *store, int64_t issuer_id, const unsigned char *serial,
                       size_t serial_len, const char *actor, int64_t *feed_id_out)
{
    return PRIMARY(P->ops->unrevoke(P, issuer_id, serial, serial_len, actor, feed_id_out));
}

static int sp_feed_read(struct store *store, int64_t after_id, int max, unsigned opts,
                        int (*fn)(void *ctx, const struct store_change *change), void *ctx)
{
    measure(split_of(store));
    return STALE(R->ops->feed_read(R, after_id, max, opts, fn, ctx));
}

static int sp_feed_head(struct store *store, int64_t *id_out)
{
    measure(split_of(store));
    return STALE(R->ops->feed_head(R, id_out));
}

static int sp_sla_mark(struct store *store, int64_t feed_id, int stage, int64_t at_ms)
{
    return PRIMARY(P->ops->sla_mark(P, feed_id, stage, at_ms));
}

static int sp_sla_mark_upto(struct store *store, int64_t issuer_id, int64_t up_to, int stage,
                            int64_t at_ms)
{
    return PRIMARY(P->ops->sla_mark_upto(P, issuer_id, up_to, stage, at_ms));
}

static int sp_sla_list(struct store *store, int open_only, int limit,
                       int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx)
{
    return PRIMARY(P->ops->sla_list(P, open_only, limit, fn, ctx));
}

static int sp_crl_number_next(struct store *store, int64_t issuer_id, int64_t floor,
                              int64_t *number_out)
{
    return PRIMARY(P->ops->crl_number_next(P, issuer_id, floor, number_out));
}

static int sp_crl_save(struct store *store, const struct store_crl_record *crl)
{
    return PRIMARY(P->ops->crl_save(P, crl));
}

static int sp_crl_latest(struct store *store, int64_t issuer_id, int delta,
                         struct store_crl_record *meta_out, unsigned char **der_out)
{
    return STALE(R->ops->crl_latest(R, issuer_id, delta, meta_out, der_out));
}

static int sp_tsa_reserve(struct store *store, const char *unit, int64_t count, int64_t floor,
                          int64_t *first_out)
{
    return PRIMARY(P->ops->tsa_reserve(P, unit, count, floor, first_out));
}

static int sp_tsa_log(struct store *store, const struct store_tsa_token *tokens, size_t n)
{
    return PRIMARY(P->ops->tsa_log(P, tokens, n));
}

static int sp_tsa_token_get(struct store *store, const unsigned char *cert_id, const char *unit,
                            int64_t serial, struct store_tsa_record *out)
{
    return PRIMARY(P->ops->tsa_token_get(P, cert_id, unit, serial, out));
}

static int sp_audit_append(struct store *store, const struct store__audit_new *rec)
{
    return PRIMARY(P->ops->audit_append(P, rec));
}

static int sp_audit_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__audit_row *row), void *ctx,
                         int64_t *last_id_out)
{
    return PRIMARY(P->ops->audit_walk(P, fn, ctx, last_id_out));
}

static int sp_change_walk(struct store *store, int64_t first, int64_t last,
                          int (*fn)(void *ctx, const struct store__change_row *row), void *ctx)
{
    return PRIMARY(P->ops->change_walk(P, first, last, fn, ctx));
}

static int sp_state_walk(struct store *store,
                         int (*fn)(void *ctx, const struct store__state_row *row), void *ctx)
{
    return PRIMARY(P->ops->state_walk(P, fn, ctx));
}

static int sp_orphans(struct store *store, int64_t *change_id, int64_t *revocation_id,
                      int64_t *changes)
{
    return PRIMARY(P->ops->orphans(P, change_id, revocation_id, changes));
}

static int sp_seal_pending(struct store *store, int max,
                           int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                     size_t n, struct store__seal_row *seal),
                           void *ctx, int64_t *sealed_out)
{
    return PRIMARY(P->ops->seal_pending(P, max, fn, ctx, sealed_out));
}

static int sp_seal_walk(struct store *store,
                        int (*fn)(void *ctx, const struct store__seal_row *row), void *ctx)
{
    return PRIMARY(P->ops->seal_walk(P, fn, ctx));
}

static int sp_unsealed(struct store *store, int64_t *count_out)
{
    return PRIMARY(P->ops->unsealed(P, count_out));
}

static int sp_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx)
{
    return STALE(R->ops->cert_search(R, q, fn, ctx));
}

static int sp_lease(struct store *store, int64_t key, int64_t ttl_ms, int *held_out)
{
    if (P->ops->lease == NULL) {
        *held_out = 1;
        return 0;
    }
    return PRIMARY(P->ops->lease(P, key, ttl_ms, held_out));
}

/* The nodes table is written by each node and read for the cluster-wide SLA: the primary's. */
static int sp_node_report(struct store *store, const char *name, int64_t applied_feed_id,
                          int64_t at_ms, int64_t *id_out)
{
    return PRIMARY(P->ops->node_report(P, name, applied_feed_id, at_ms, id_out));
}

static int sp_node_list(struct store *store, int (*fn)(void *ctx, const struct store_node *node),
                        void *ctx)
{
    return PRIMARY(P->ops->node_list(P, fn, ctx));
}

#undef PRIMARY
#undef STALE
#undef P
#undef R

static const struct store__ops split_ops = {
    .name = "postgresql with a read replica",
    .close = sp_close,
    .ping = sp_ping,
    .begin = sp_begin,
    .commit = sp_commit,
    .rollback = sp_rollback,
    .issuer_put = sp_issuer_put,
    .issuer_get = sp_issuer_get,
    .issuer_list = sp_issuer_list,
    .cert_add = sp_cert_add,
    .cert_get = sp_cert_get,
    .cert_der = sp_cert_der,
    .cert_iterate = sp_cert_iterate,
    .revoke = sp_revoke,
    .unrevoke = sp_unrevoke,
    .feed_read = sp_feed_read,
    .feed_head = sp_feed_head,
    .sla_mark = sp_sla_mark,
    .sla_mark_upto = sp_sla_mark_upto,
    .sla_list = sp_sla_list,
    .crl_number_next = sp_crl_number_next,
    .crl_save = sp_crl_save,
    .crl_latest = sp_crl_latest,
    .tsa_reserve = sp_tsa_reserve,
    .tsa_log = sp_tsa_log,
    .tsa_token_get = sp_tsa_token_get,
    .audit_append = sp_audit_append,
    .audit_walk = sp_audit_walk,
    .change_walk = sp_change_walk,
    .state_walk = sp_state_walk,
    .orphans = sp_orphans,
    .seal_pending = sp_seal_pending,
    .seal_walk = sp_seal_walk,
    .unsealed = sp_unsealed,
    .cert_search = sp_cert_search,
    .lease = sp_lease,
    .node_report = sp_node_report,
    .node_list = sp_node_list,
};

/* 1 and a copy of the replica's path when path is the primary named in store_read_replica_set. */
static int replica_of(const char *path, char **read_path)
{
    *read_path = NULL;
    (void)pthread_mutex_lock(&cfg_lock);
    if (cfg_primary != NULL && strcmp(cfg_primary, path) == 0)
        *read_path = strdup(cfg_replica);
    (void)pthread_mutex_unlock(&cfg_lock);
    return *read_path != NULL;
}

int store__replica_open(const char *path, int flags, struct store **out)
{
    struct split *s = NULL;
    char *read_path = NULL;
    int rc = 0;

    *out = NULL;
    flags &= ~STORE_OPEN_STALE_READS;
    if (!replica_of(path, &read_path))
        return 0; /* no replica for this path: *out stays NULL, the caller opens path alone */
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    s->base.ops = &split_ops;
    rc = store_open_blocking(path, flags, &s->primary);
    for (int i = 0; i < REPLICA_OPEN_TRIES && s->primary != NULL; i++) {
        rc = store_open_blocking(read_path, STORE_OPEN_READONLY, &s->replica);
        if (rc != UTIL_ESTORE || i + 1 == REPLICA_OPEN_TRIES)
            break;
        {
            /* e.g. the primary's latest migration not replayed there yet */
            struct timespec wait = {0, REPLICA_OPEN_WAIT_MS * 1000000L};
            (void)nanosleep(&wait, NULL); /* an interrupted wait only retries sooner */
        }
    }
    if (rc != 0) {
        UTIL_ERROR(STORE_MOD, "cannot open the primary and its read replica: %s",
                   util_strerror(rc));
        goto out;
    }
    measure(s);
    *out = &s->base;
    s = NULL;
out:
    if (s != NULL) {
        store_close(s->primary);
        store_close(s->replica);
        free(s);
    }
    free(read_path);
    return rc;
}
