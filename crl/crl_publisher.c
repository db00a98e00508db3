/* SPDX-License-Identifier: Apache-2.0 */
/* The CRL publisher of the server: one thread that decides when each issuer needs a new full or
 * delta CRL (periodic, coalesced after changes, on demand, retry after failures), generates it
 * through crl_gen.c and swaps the served copy; plus the thread-safe triggers and the statistics.
 *
 * DESIGN
 * - Threads: the publisher thread owns its store connection and does all generation (the walk and
 *   the hash here, the signature on an HSM signing thread through hsm_run_sync). Anyone may call
 *   crl_publisher_apply_change / crl_publish_now: they only set flags under the issuer mutex and
 *   signal the publisher's condition variable. HTTP loop threads only take a reference to the
 *   served CRL under the issuer mutex (held for a pointer copy, never across I/O).
 * - Ownership: a served CRL (struct crl__served) is immutable and refcounted; a new publication
 *   replaces the pointer and drops the publisher's reference, requests in flight keep theirs.
 * - Invariants: a served CRL was saved in the store's history first; a delta is published only
 *   against the full CRL being served (its base); the dirty flag is cleared before the feed head is
 *   read, so a change reported during a generation causes another one, never a lost update.
 * - Failures (HSM down, disk full, store locked): the served CRLs stay, the failure is logged and
 *   counted, and the issuer is retried after a doubling back-off (retry_min_ms .. retry_max_ms);
 *   crl_publish_now overrides the back-off. The store connection is reopened after an error. */
#include "crl_int.h"

#include <errno.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- served CRLs ---------------------------------------------------------------------------- */

struct crl__served *crl__served_new(struct util_blob *der, const struct crl_info *info)
{
    unsigned char digest[32];
    char hex[33];
    struct crl__served *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (EVP_Digest(der->data, der->len, digest, NULL, EVP_sha256(), NULL) != 1) {
        free(s);
        return NULL;
    }
    util_hex(digest, 16, hex);
    atomic_init(&s->refs, 1);
    s->der = util_blob_ref(der);
    s->info = *info;
    s->info.der_len = der->len;
    s->ims_ok = 1;
    (void)snprintf(s->etag, sizeof(s->etag), "\"%s\"", hex);
    http_date_format(info->this_update, s->last_modified, sizeof(s->last_modified));
    http_date_format(info->next_update, s->expires, sizeof(s->expires));
    return s;
}

void crl__served_unref(struct crl__served *s)
{
    if (s == NULL || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    util_blob_unref(s->der);
    free(s);
}

/* Replaces the served full or delta CRL of an issuer; takes over the caller's reference. Call with
 * the issuer mutex held. */
static void swap_served(struct crl__pub_issuer *pi, int delta, struct crl__served *s)
{
    struct crl__served **slot = delta ? &pi->delta : &pi->full;
    struct crl__served *old = *slot;
    /* Revalidation never resurrects an older CRL: a CRL whose thisUpdate second is not later than
     * its predecessor's has a Last-Modified that cannot tell them apart, so only its ETag may earn
     * a 304. Set before the pointer is published; immutable afterwards. */
    if (old != NULL && old->info.this_update >= s->info.this_update)
        s->ims_ok = 0;
    *slot = s;
    if (delta) {
        pi->stats.delta_number = s->info.number;
        pi->stats.delta_bytes = s->info.der_len;
        pi->stats.delta_entries = s->info.entries;
        pi->stats.delta_this_update = s->info.this_update;
    } else {
        pi->stats.full_number = s->info.number;
        pi->stats.this_update = s->info.this_update;
        pi->stats.next_update = s->info.next_update;
        pi->stats.full_bytes = s->info.der_len;
        pi->stats.full_entries = s->info.entries;
    }
    if (s->info.feed_id > pi->covered_feed_id)
        pi->covered_feed_id = s->info.feed_id;
    crl__served_unref(old); /* requests in flight hold their own references */
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static char *dup_opt(const char *s, int *failed)
{
    char *d = NULL;
    if (s == NULL)
        return NULL;
    d = strdup(s);
    if (d == NULL)
        *failed = 1;
    return d;
}

int crl_publisher_new(const struct crl_config *cfg, const struct crl_issuer_config *issuers,
                      int n_issuers, struct hsm *hsm, struct crl_publisher **out)
{
    struct crl_publisher *pub = NULL;
    pthread_condattr_t attr;
    int rc = UTIL_OK, failed = 0;

    *out = NULL;
    if (cfg == NULL || hsm == NULL || n_issuers < 0 || n_issuers > CRL_MAX_ISSUERS ||
        (n_issuers > 0 && issuers == NULL))
        return UTIL_EINVAL;
    if (cfg->validity_seconds <= 0 || cfg->interval_seconds <= 0 ||
        cfg->interval_seconds >= cfg->validity_seconds ||
        (cfg->deltas && cfg->delta_validity_seconds > 0 &&
         cfg->interval_seconds >= cfg->delta_validity_seconds) ||
        cfg->coalesce_ms < 0 || cfg->coalesce_ms > CRL_COALESCE_MAX_MS ||
        cfg->max_age_seconds < 0 || cfg->retry_min_ms <= 0 ||
        cfg->retry_max_ms < cfg->retry_min_ms || cfg->max_entries <= 0 ||
        cfg->delta_max_changes <= 0 || cfg->repo_threads < 1 || cfg->repo_queue_max < 1 ||
        cfg->lease_ms < CRL_LEASE_MIN_MS || cfg->lease_ms > CRL_LEASE_MAX_MS ||
        cfg->store_path == NULL || cfg->store_path[0] == '\0' ||
        (cfg->deltas && (cfg->public_url == NULL || cfg->public_url[0] == '\0'))) {
        UTIL_ERROR(CRL_MOD, "invalid CRL configuration (interval below the validities, coalesce "
                            "<= 60 s, lease 2 s .. 1 h, store path and, with deltas, public URL "
                            "required)");
        return UTIL_ECONFIG;
    }
    pub = calloc(1, sizeof(*pub));
    if (pub == NULL)
        return UTIL_ENOMEM;
    pub->cfg = *cfg;
    pub->publish_dir = dup_opt(cfg->publish_dir, &failed);
    pub->store_path = dup_opt(cfg->store_path, &failed);
    pub->public_url = dup_opt(cfg->public_url, &failed);
    pub->cfg.publish_dir = pub->publish_dir;
    pub->cfg.store_path = pub->store_path;
    pub->cfg.public_url = pub->public_url;
    pub->hsm = hsm;
    pthread_mutex_init(&pub->mutex, NULL);
    pthread_condattr_init(&attr);
    (void)pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* always supported on Linux */
    pthread_cond_init(&pub->cond, &attr);
    pthread_cond_init(&pub->done_cond, &attr);
    pthread_condattr_destroy(&attr);
    pub->issuers = calloc((size_t)(n_issuers > 0 ? n_issuers : 1), sizeof(*pub->issuers));
    if (failed || pub->issuers == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n_issuers; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        for (int j = 0; j < i; j++)
            if (issuers[i].name != NULL && strcmp(issuers[j].name, issuers[i].name) == 0) {
                UTIL_ERROR(CRL_MOD, "issuer %s configured twice", issuers[i].name);
                rc = UTIL_ECONFIG;
                goto out;
            }
        rc = crl__issuer_init(&pi->is, &pub->cfg, &issuers[i]);
        if (rc != UTIL_OK)
            goto out;
        pthread_mutex_init(&pi->mutex, NULL);
        (void)snprintf(pi->stats.name, sizeof(pi->stats.name), "%s", pi->is.name);
        pi->backoff_ms = cfg->retry_min_ms;
        pub->n++;
    }
    *out = pub;
    pub = NULL;
out:
    crl_publisher_free(pub);
    return rc;
}

void crl_publisher_free(struct crl_publisher *pub)
{
    if (pub == NULL)
        return;
    crl_publisher_stop(pub);
    util_pool_free(pub->repo_pool);
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        crl__served_unref(pi->full);
        crl__served_unref(pi->delta);
        crl__issuer_cleanup(&pi->is);
        pthread_mutex_destroy(&pi->mutex);
    }
    free(pub->issuers);
    free(pub->publish_dir);
    free(pub->store_path);
    free(pub->public_url);
    pthread_cond_destroy(&pub->cond);
    pthread_cond_destroy(&pub->done_cond);
    pthread_mutex_destroy(&pub->mutex);
    free(pub);
}

/* Loads one saved CRL as the served one, and writes it to the local file: a node that did not
 * publish it (another node of a cluster did, or it was published while this node was down) keeps
 * its [crl] publish_dir as current as what it serves. A failed write is logged; the file is
 * written again with the next CRL. */
static int load_one(const struct crl_publisher *pub, struct crl__pub_issuer *pi,
                    struct store *store, int delta)
{
    struct store_crl_record meta;
    struct util_blob *blob = NULL;
    struct crl__served *s = NULL;
    struct crl_info info;
    unsigned char *der = NULL;
    int swapped = 0;
    int rc;

    memset(&meta, 0, sizeof(meta));
    rc = store_crl_latest_blocking(store, pi->is.store_id, delta, &meta, &der);
    if (rc == UTIL_ENOTFOUND)
        return UTIL_OK;
    if (rc != UTIL_OK)
        goto out;
    blob = util_blob_new(der, meta.der_len);
    if (blob == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    memset(&info, 0, sizeof(info));
    info.number = meta.number;
    info.base_number = meta.base_number;
    info.this_update = meta.this_update;
    info.next_update = meta.next_update;
    info.feed_id = meta.feed_id;
    info.entries = -1;
    s = crl__served_new(blob, &info);
    if (s == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    /* Loaded at start: its predecessor, perhaps of the same second, is unknown here. Until the
     * next publication, only its ETag earns a 304. */
    s->ims_ok = 0;
    pthread_mutex_lock(&pi->mutex);
    /* A delta is served only with its base. */
    if (!delta || (pi->full != NULL && pi->full->info.number == meta.base_number)) {
        if (!delta) {
            pi->have_full = 1;
            pi->base_feed_id = meta.feed_id;
        }
        swap_served(pi, delta, s);
        s = NULL;
        swapped = 1;
    }
    pthread_mutex_unlock(&pi->mutex);
    if (swapped)
        (void)crl__file_write(&pub->cfg, &pi->is, delta, blob); /* logged; see above */
out:
    crl__served_unref(s);
    util_blob_unref(blob);
    free(der);
    return rc;
}

/* Several processes or nodes may publish into one store (a cluster on PostgreSQL): when the
 * store holds a newer CRL of this issuer than the one served (another publisher saved it), serve
 * that one, so that every node serves the same latest CRL bytes and none publishes a number that
 * the store would refuse as stale. Cheap when nothing is newer: one read without the DER per
 * kind. A delta is adopted only with its base (load_one). */
static int adopt_newer(struct crl_publisher *pub, struct crl__pub_issuer *pi, struct store *store)
{
    struct store_crl_record meta;
    int64_t served = 0;
    int rc = UTIL_OK;

    for (int delta = 0; delta <= (pub->cfg.deltas ? 1 : 0) && rc == UTIL_OK; delta++) {
        memset(&meta, 0, sizeof(meta));
        rc = store_crl_latest_blocking(store, pi->is.store_id, delta, &meta, NULL);
        if (rc == UTIL_ENOTFOUND) {
            rc = UTIL_OK;
            continue;
        }
        if (rc != UTIL_OK)
            break;
        pthread_mutex_lock(&pi->mutex);
        served = delta ? (pi->delta != NULL ? pi->delta->info.number : 0)
                       : (pi->full != NULL ? pi->full->info.number : 0);
        if (pi->own_number > served)
            served = pi->own_number; /* ours, saved but not published (failed): retried */
        pthread_mutex_unlock(&pi->mutex);
        if (meta.number <= served)
            continue;
        rc = load_one(pub, pi, store, delta);
        if (rc == UTIL_OK) {
            int64_t now = util_mono_ms();
            pthread_mutex_lock(&pi->mutex);
            if (!delta)
                pi->full_due = now + pub->cfg.interval_seconds * 1000;
            pi->delta_due = now + pub->cfg.interval_seconds * 1000;
            pthread_mutex_unlock(&pi->mutex);
            UTIL_INFO(CRL_MOD, "issuer %s: serving %s CRL %" PRId64 " published by another node",
                      pi->is.name, delta ? "delta" : "full", meta.number);
        }
    }
    return rc;
}

int crl_publisher_load_blocking(struct crl_publisher *pub, struct store *store)
{
    int rc = UTIL_OK;
    for (int i = 0; i < pub->n && rc == UTIL_OK; i++) {
        rc = load_one(pub, &pub->issuers[i], store, 0);
        if (rc == UTIL_OK)
            rc = load_one(pub, &pub->issuers[i], store, 1);
    }
    if (rc == UTIL_OK) {
        int64_t now = util_mono_ms(), now_s = util_now_ms() / 1000;
        for (int i = 0; i < pub->n; i++) {
            struct crl__pub_issuer *pi = &pub->issuers[i];
            pthread_mutex_lock(&pi->mutex);
            if (pi->full != NULL)
                pi->full_due =
                    now + (pi->full->info.this_update + pub->cfg.interval_seconds - now_s) * 1000;
            if (pi->delta == NULL || pi->full == NULL)
                pi->delta_due = now; /* no delta for the served base: make one */
            else
                pi->delta_due =
                    now + (pi->delta->info.this_update + pub->cfg.interval_seconds - now_s) * 1000;
            pthread_mutex_unlock(&pi->mutex);
        }
        pthread_mutex_lock(&pub->mutex);
        pub->loaded = 1;
        pthread_mutex_unlock(&pub->mutex);
    }
    return rc;
}

/* ---- triggers ------------------------------------------------------------------------------- */

static void wake(struct crl_publisher *pub)
{
    pthread_mutex_lock(&pub->mutex);
    pub->kicked = 1;
    pthread_cond_signal(&pub->cond);
    pthread_mutex_unlock(&pub->mutex);
}

/* A registration of a good certificate (STORE_CHANGE_ISSUE) changes no CRL; the feed relies on
 * it (cli/serve.c sets skip_issue: the start-up replay does not even read them). */
int crl_publisher_apply_change(struct crl_publisher *pub, const struct store_change *change)
{
    int hit = 0;
    if (pub == NULL || change == NULL || change->kind == STORE_CHANGE_ISSUE)
        return UTIL_OK;
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        if (pi->is.store_id != change->cert.issuer_id)
            continue;
        pthread_mutex_lock(&pi->mutex);
        /* A change the served CRLs already reflect (a re-delivery, or the catch-up replay of a
         * change published before a restart) needs no new CRL. */
        if (!pi->dirty && change->id > pi->covered_feed_id) {
            pi->dirty = 1;
            pi->dirty_due = util_mono_ms() + pub->cfg.coalesce_ms;
            hit = 1;
        }
        pthread_mutex_unlock(&pi->mutex);
    }
    if (hit)
        wake(pub);
    return UTIL_OK;
}

int crl_publish_now(struct crl_publisher *pub, const char *name)
{
    int found = 0;
    if (pub == NULL)
        return UTIL_EINVAL;
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        if (name != NULL && strcmp(pi->is.name, name) != 0)
            continue;
        pthread_mutex_lock(&pi->mutex);
        pi->forced = 1;
        pi->req_seq++;
        pthread_mutex_unlock(&pi->mutex);
        found = 1;
    }
    if (!found)
        return UTIL_ENOTFOUND;
    wake(pub);
    return UTIL_OK;
}

int64_t crl_publisher_published_upto(struct crl_publisher *pub)
{
    int64_t upto = INT64_MAX;
    for (int i = 0; pub != NULL && i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        pthread_mutex_lock(&pi->mutex);
        /* An issuer without a CRL publishes one at once, reading the feed head: nothing to
         * replay for it. */
        if (pi->have_full && pi->covered_feed_id < upto)
            upto = pi->covered_feed_id;
        pthread_mutex_unlock(&pi->mutex);
    }
    return upto;
}

int crl_publish_wait_blocking(struct crl_publisher *pub, const char *name, int64_t timeout_ms,
                              struct crl_publish_result *results, int max_results, int *n_out)
{
    uint64_t target[CRL_MAX_ISSUERS];
    struct timespec until;
    int rc = UTIL_OK, n = 0;

    *n_out = 0;
    if (pub == NULL || results == NULL || max_results < pub->n || timeout_ms <= 0)
        return UTIL_EINVAL;
    rc = crl_publish_now(pub, name);
    if (rc != UTIL_OK)
        return rc;
    /* Every request up to req_seq is covered by a run that starts after it was made. */
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        pthread_mutex_lock(&pi->mutex);
        target[i] = name == NULL || strcmp(pi->is.name, name) == 0 ? pi->req_seq : 0;
        pthread_mutex_unlock(&pi->mutex);
    }
    util_mono_deadline(&until, timeout_ms);
    pthread_mutex_lock(&pub->mutex);
    for (;;) {
        int waiting = 0;
        for (int i = 0; i < pub->n; i++)
            if (target[i] != 0 && pub->issuers[i].done_seq < target[i])
                waiting = 1;
        if (!waiting)
            break;
        if (pub->stopping) { /* not started yet: the run comes once it starts */
            rc = UTIL_ECLOSED;
            break;
        }
        if (pthread_cond_timedwait(&pub->done_cond, &pub->mutex, &until) == ETIMEDOUT) {
            rc = UTIL_ETIMEDOUT;
            break;
        }
    }
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        if (target[i] == 0)
            continue;
        memset(&results[n], 0, sizeof(results[n]));
        (void)snprintf(results[n].name, sizeof(results[n].name), "%s", pi->is.name);
        results[n].rc = pi->done_seq >= target[i] ? pi->done_rc : rc;
        results[n].elapsed_ms = pi->done_seq >= target[i] ? pi->done_ms : 0;
        n++;
    }
    pthread_mutex_unlock(&pub->mutex);
    for (int i = 0; i < n; i++) {
        struct crl_issuer_stats st;
        for (int j = 0; j < pub->n; j++)
            if (strcmp(pub->issuers[j].is.name, results[i].name) == 0 &&
                crl_publisher_stats(pub, j, &st) == UTIL_OK) {
                results[i].full_number = st.full_number;
                results[i].full_entries = st.full_entries;
                results[i].delta_number = st.delta_number;
                results[i].delta_entries = st.delta_entries;
            }
    }
    *n_out = n;
    return rc;
}

/* ---- the publisher thread ------------------------------------------------------------------- */

enum { WANT_FULL = 1, WANT_DELTA = 2 };

/* What issuer pi needs at time now (mono ms), and when it next needs something (*next). Call with
 * the issuer mutex held. */
static int wants(const struct crl_publisher *pub, const struct crl__pub_issuer *pi, int64_t now,
                 int64_t *next)
{
    const struct crl_config *cfg = &pub->cfg;
    int64_t due = INT64_MAX;
    int want = 0;

    if (pi->forced) {
        *next = now;
        return WANT_FULL | (cfg->deltas ? WANT_DELTA : 0);
    }
    if (!pi->have_full || now >= pi->full_due)
        want |= WANT_FULL;
    else if (pi->full_due < due)
        due = pi->full_due;
    if (pi->dirty) {
        if (now >= pi->dirty_due)
            want |= cfg->full_on_change ? WANT_FULL : WANT_DELTA;
        else if (pi->dirty_due < due)
            due = pi->dirty_due;
    }
    if (cfg->deltas) {
        if (want & WANT_FULL)
            want |= WANT_DELTA;
        else if (now >= pi->delta_due)
            want |= WANT_DELTA;
        else if (pi->delta_due < due)
            due = pi->delta_due;
    }
    if (want != 0 && pi->retry_at > now) {
        /* Backing off after a failure. */
        *next = pi->retry_at < due ? pi->retry_at : due;
        return 0;
    }
    *next = want ? now : due;
    return want;
}

static void note_failure(struct crl_publisher *pub, struct crl__pub_issuer *pi, int rc)
{
    pthread_mutex_lock(&pi->mutex);
    pi->stats.failures++;
    pi->stats.failing = 1;
    pi->retry_at = util_mono_ms() + pi->backoff_ms;
    UTIL_WARN(CRL_MOD,
              "issuer %s: publication failed (%s); the last good CRL stays served, "
              "retry in %lld ms",
              pi->is.name, util_strerror(rc), (long long)pi->backoff_ms);
    pi->backoff_ms =
        pi->backoff_ms * 2 > pub->cfg.retry_max_ms ? pub->cfg.retry_max_ms : pi->backoff_ms * 2;
    pthread_mutex_unlock(&pi->mutex);
}

/* Generates, publishes and serves one CRL. */
static int publish(struct crl_publisher *pub, struct crl__pub_issuer *pi, struct store *store,
                   const struct crl__base *base)
{
    struct util_blob *der = NULL;
    struct crl__served *s = NULL;
    struct crl_info info;
    int rc;

    rc = crl__generate_blocking(&pub->cfg, &pi->is, pub->hsm, store, base, &der, &info);
    if (rc == UTIL_OK) {
        pthread_mutex_lock(&pi->mutex);
        if (info.number > pi->own_number)
            pi->own_number = info.number;
        pthread_mutex_unlock(&pi->mutex);
    }
    if (rc == UTIL_OK)
        rc = crl__publish_one_blocking(&pub->cfg, &pi->is, store, der, &info, "crl-publisher");
    if (rc == UTIL_EEXIST) {
        /* Another publisher saved a newer CRL meanwhile (the store refused this older number):
         * serve that one instead. */
        util_blob_unref(der);
        return adopt_newer(pub, pi, store);
    }
    if (rc == UTIL_OK) {
        s = crl__served_new(der, &info);
        if (s == NULL)
            rc = UTIL_ENOMEM;
    }
    if (rc == UTIL_OK) {
        int64_t now = util_mono_ms();
        int recovered = 0;
        pthread_mutex_lock(&pi->mutex);
        swap_served(pi, base != NULL, s);
        s = NULL;
        pi->stats.published++;
        /* Not failing from the moment a new CRL is served (in the same step, so that no reader
         * sees the new number with the old failure). */
        recovered = pi->stats.failing;
        pi->stats.failing = 0;
        if (base == NULL) {
            pi->have_full = 1;
            pi->base_feed_id = info.feed_id;
            pi->full_due = now + pub->cfg.interval_seconds * 1000;
            pi->stats.last_build_ms = info.build_ms;
        }
        pi->delta_due = now + pub->cfg.interval_seconds * 1000;
        pthread_mutex_unlock(&pi->mutex);
        if (recovered)
            UTIL_INFO(CRL_MOD, "issuer %s: publishing again", pi->is.name);
        UTIL_INFO(CRL_MOD,
                  "issuer %s: %s CRL %" PRId64 " published: %" PRId64
                  " entries, %zu bytes, %" PRId64 " ms",
                  pi->is.name, base ? "delta" : "full", info.number, info.entries, info.der_len,
                  info.build_ms);
    }
    crl__served_unref(s);
    util_blob_unref(der);
    return rc;
}

static int run_issuer(struct crl_publisher *pub, struct crl__pub_issuer *pi, struct store *store,
                      int want)
{
    struct crl__base base;
    int64_t started = util_mono_ms();
    uint64_t seq;
    int rc = UTIL_OK;

    /* Clear the triggers before reading the feed head (inside generate): a change reported from
     * now on triggers another publication. */
    pthread_mutex_lock(&pi->mutex);
    pi->forced = 0;
    pi->dirty = 0;
    seq = pi->req_seq;
    pthread_mutex_unlock(&pi->mutex);
    if (want & WANT_FULL)
        rc = publish(pub, pi, store, NULL);
    /* A delta needs a base; with too many changes since the base (UTIL_EBUSY), a new base first.
     * Two rounds at most: a base just made has (almost) no changes after it. */
    for (int round = 0; rc == UTIL_OK && (want & WANT_DELTA) && round < 2; round++) {
        pthread_mutex_lock(&pi->mutex);
        base.number = pi->full != NULL ? pi->full->info.number : 0;
        base.feed_id = pi->base_feed_id;
        pthread_mutex_unlock(&pi->mutex);
        if (base.number == 0) {
            rc = publish(pub, pi, store, NULL);
            continue; /* the next round makes the delta against it */
        }
        rc = publish(pub, pi, store, &base);
        if (rc == UTIL_EBUSY && round == 0)
            rc = publish(pub, pi, store, NULL);
        else
            break;
    }
    if (rc == UTIL_OK) {
        pthread_mutex_lock(&pi->mutex);
        pi->retry_at = 0;
        pi->backoff_ms = pub->cfg.retry_min_ms;
        pthread_mutex_unlock(&pi->mutex);
    } else {
        /* Keep the reason to publish: the retry redoes it. */
        pthread_mutex_lock(&pi->mutex);
        if (want & WANT_FULL)
            pi->full_due = 0;
        else
            pi->delta_due = 0;
        pthread_mutex_unlock(&pi->mutex);
        note_failure(pub, pi, rc);
    }
    /* Whoever waits for a request made before this run started has its answer. */
    pthread_mutex_lock(&pub->mutex);
    if (seq > pi->done_seq || rc != UTIL_OK) {
        pi->done_seq = seq > pi->done_seq ? seq : pi->done_seq;
        pi->done_rc = rc;
        pi->done_ms = util_mono_ms() - started;
    }
    pthread_cond_broadcast(&pub->done_cond);
    pthread_mutex_unlock(&pub->mutex);
    return rc;
}

/* At a graceful stop: publishes at once what changes are waiting for (coalesce not waited out),
 * within CRL_STOP_GRACE_MS, so that a revocation made just before the stop is in the CRL served
 * from now on. What is not done here is caught up at the next start (feed/ replays it). */
static void flush_pending(struct crl_publisher *pub, struct store **store)
{
    int64_t until = util_mono_ms() + CRL__STOP_GRACE_MS;
    for (int i = 0; i < pub->n; i++) {
        struct crl__pub_issuer *pi = &pub->issuers[i];
        int want, rc;
        pthread_mutex_lock(&pi->mutex);
        want = pi->forced                ? WANT_FULL | WANT_DELTA
               : !pi->dirty              ? 0
               : pub->cfg.full_on_change ? WANT_FULL | WANT_DELTA
                                         : WANT_DELTA;
        pthread_mutex_unlock(&pi->mutex);
        if (!pub->cfg.deltas)
            want &= ~WANT_DELTA;
        if (want == 0)
            continue;
        if (util_mono_ms() >= until) {
            UTIL_WARN(CRL_MOD,
                      "issuer %s: stopping with a publication pending: the next start "
                      "publishes it",
                      pi->is.name);
            continue;
        }
        if (*store == NULL && store_open_blocking(pub->cfg.store_path, 0, store) != UTIL_OK) {
            UTIL_WARN(CRL_MOD, "stopping with publications pending and no store: the next start "
                               "publishes them");
            return;
        }
        UTIL_INFO(CRL_MOD, "issuer %s: publishing pending changes before stopping", pi->is.name);
        rc = run_issuer(pub, pi, *store, want);
        if (rc != UTIL_OK)
            UTIL_WARN(CRL_MOD,
                      "issuer %s: the publication before stopping failed (%s): the "
                      "next start publishes it",
                      pi->is.name, util_strerror(rc));
    }
}

static void *publisher_main(void *arg)
{
    struct crl_publisher *pub = arg;
    struct store *store = NULL;
    int loaded;

    util_thread_name("crl-publish", -1);
    pthread_mutex_lock(&pub->mutex);
    loaded = pub->loaded;
    pthread_mutex_unlock(&pub->mutex);
    for (;;) {
        int64_t now = util_mono_ms(), next = INT64_MAX;
        int busy = 0, rc = UTIL_OK;
        int held = 0;

        pthread_mutex_lock(&pub->mutex);
        if (pub->stopping) {
            pthread_mutex_unlock(&pub->mutex);
            if (loaded)
                flush_pending(pub, &store);
            break;
        }
        pub->kicked = 0; /* triggers from now on are seen by the scan below or stop the wait */
        pthread_mutex_unlock(&pub->mutex);

        if (store == NULL) {
            rc = store_open_blocking(pub->cfg.store_path, 0, &store);
            if (rc == UTIL_OK && !loaded) {
                rc = crl_publisher_load_blocking(pub, store);
                loaded = rc == UTIL_OK;
            }
            if (rc != UTIL_OK) {
                UTIL_ERROR(CRL_MOD, "cannot open the store %s: %s (retrying)", pub->cfg.store_path,
                           util_strerror(rc));
                store_close(store);
                store = NULL;
                next = now + pub->cfg.retry_min_ms;
            }
        }
        /* Nodes of a cluster publish one at a time: the holder of the store's "crl-publisher"
         * lease publishes, the others serve what it saved (adopt_newer) and publish only on
         * demand (crl_publish_now; the store's fencing keeps that safe). A node that becomes the
         * holder (the former one died or lost its connection) publishes everything at once, which
         * catches up whatever was pending. A holder hung for [crl] lease loses it (the store ends
         * its idle connection) and steps down when it runs again. On SQLite every publisher holds
         * the lease. */
        if (store != NULL && loaded &&
            store_lease_blocking(store, "crl-publisher", pub->cfg.lease_ms, &held) != 0)
            held = 0;
        if (store != NULL && loaded && (held ? 1 : 2) != pub->leader) {
            /* From follower to holder: the followers dropped their triggers, so publish all. At
             * the first turn the feed's start-up replay sets whatever is pending. */
            if (held && pub->leader == 2)
                UTIL_INFO(CRL_MOD, "this node publishes the CRLs now (lease taken over)");
            if (!held && pub->leader == 1)
                UTIL_WARN(CRL_MOD, "this node no longer holds the CRL lease (stalled or "
                                   "disconnected): it steps down and serves the CRLs of the "
                                   "new holder");
            for (int i = 0; held && pub->leader == 2 && i < pub->n; i++) {
                pthread_mutex_lock(&pub->issuers[i].mutex);
                pub->issuers[i].forced = 1;
                pthread_mutex_unlock(&pub->issuers[i].mutex);
            }
            pub->leader = held ? 1 : 2;
        }
        for (int i = 0; store != NULL && i < pub->n; i++) {
            struct crl__pub_issuer *pi = &pub->issuers[i];
            int64_t when = INT64_MAX;
            int want;
            if (loaded && adopt_newer(pub, pi, store) != UTIL_OK)
                UTIL_WARN(CRL_MOD, "issuer %s: cannot read the latest CRL of the store",
                          pi->is.name);
            pthread_mutex_lock(&pi->mutex);
            want = wants(pub, pi, util_mono_ms(), &when);
            if (loaded && !held && !pi->forced) {
                /* Another node publishes: its CRLs are adopted on the next turns. */
                want = 0;
                pi->dirty = 0;
                when = util_mono_ms() + 1000;
            }
            pthread_mutex_unlock(&pi->mutex);
            if (want != 0) {
                busy = 1;
                rc = run_issuer(pub, pi, store, want);
                if (rc == UTIL_ESTORE || rc == UTIL_ELOCKED) {
                    store_close(store); /* reopened on the next turn */
                    store = NULL;
                }
            } else if (when < next) {
                next = when;
            }
        }
        if (busy)
            continue; /* look again: something may have become due meanwhile */
        pthread_mutex_lock(&pub->mutex);
        if (!pub->stopping && !pub->kicked) {
            /* A trigger after the scan set kicked (under this mutex): then we do not sleep. The
             * 1 s cap only bounds the effect of a clock oddity. */
            int64_t wait_ms = next == INT64_MAX ? 1000 : next - util_mono_ms();
            if (wait_ms > 1000)
                wait_ms = 1000;
            if (wait_ms > 0) {
                struct timespec ts;
                util_mono_deadline(&ts, wait_ms);
                (void)pthread_cond_timedwait(&pub->cond, &pub->mutex, &ts); /* timeout is normal */
            }
        }
        pthread_mutex_unlock(&pub->mutex);
    }
    store_close(store);
    return NULL;
}

int crl_publisher_start(struct crl_publisher *pub)
{
    if (pub == NULL)
        return UTIL_EINVAL;
    if (pub->started)
        return UTIL_OK;
    pub->stopping = 0;
    if (pthread_create(&pub->thread, NULL, publisher_main, pub) != 0) {
        UTIL_ERROR(CRL_MOD, "cannot start the publisher thread");
        return UTIL_ENOMEM;
    }
    pthread_mutex_lock(&pub->mutex); /* crl_publish_wait_blocking reads it from other threads */
    pub->started = 1;
    pthread_mutex_unlock(&pub->mutex);
    return UTIL_OK;
}

void crl_publisher_stop(struct crl_publisher *pub)
{
    if (pub == NULL || !pub->started)
        return;
    pthread_mutex_lock(&pub->mutex);
    pub->stopping = 1;
    pthread_cond_signal(&pub->cond);
    pthread_mutex_unlock(&pub->mutex);
    (void)pthread_join(pub->thread, NULL); /* our own joinable thread */
    pthread_mutex_lock(&pub->mutex);
    pub->started = 0;
    pthread_cond_broadcast(&pub->done_cond); /* waiters still there get UTIL_ECLOSED */
    pthread_mutex_unlock(&pub->mutex);
}

/* ---- metrics -------------------------------------------------------------------------------- */

int crl_publisher_stats(const struct crl_publisher *pub, int i, struct crl_issuer_stats *out)
{
    struct crl__pub_issuer *pi = NULL;
    if (pub == NULL || out == NULL || i < 0 || i >= pub->n)
        return UTIL_EINVAL;
    pi = &pub->issuers[i];
    pthread_mutex_lock(&pi->mutex);
    *out = pi->stats;
    pthread_mutex_unlock(&pi->mutex);
    return UTIL_OK;
}

int crl_publisher_metrics(const struct crl_publisher *pub, char *buf, size_t len)
{
    size_t used = 0;
    int64_t now = util_now_ms() / 1000;
    int n;

    if (pub == NULL || buf == NULL || len == 0)
        return UTIL_EINVAL;
    n = snprintf(buf, len,
                 "# TYPE pkiva_crl_number gauge\n"
                 "# TYPE pkiva_crl_age_seconds gauge\n"
                 "# TYPE pkiva_crl_seconds_to_next_update gauge\n"
                 "# TYPE pkiva_crl_bytes gauge\n"
                 "# TYPE pkiva_crl_entries gauge\n"
                 "# TYPE pkiva_crl_build_seconds gauge\n"
                 "# TYPE pkiva_crl_published_total counter\n"
                 "# TYPE pkiva_crl_failures_total counter\n"
                 "# TYPE pkiva_crl_failing gauge\n"
                 "# TYPE pkiva_crl_http_total counter\n"
                 "pkiva_crl_http_total{result=\"served\"} %llu\n"
                 "pkiva_crl_http_total{result=\"not_modified\"} %llu\n"
                 "pkiva_crl_http_total{result=\"not_found\"} %llu\n"
                 "# TYPE pkiva_cert_repo_total counter\n"
                 "pkiva_cert_repo_total{result=\"served\"} %llu\n"
                 "pkiva_cert_repo_total{result=\"not_found\"} %llu\n"
                 "pkiva_cert_repo_total{result=\"rejected\"} %llu\n"
                 "pkiva_cert_repo_total{result=\"error\"} %llu\n",
                 (unsigned long long)atomic_load(&pub->http_served),
                 (unsigned long long)atomic_load(&pub->http_not_modified),
                 (unsigned long long)atomic_load(&pub->http_not_found),
                 (unsigned long long)atomic_load(&pub->repo_served),
                 (unsigned long long)atomic_load(&pub->repo_not_found),
                 (unsigned long long)atomic_load(&pub->repo_rejected),
                 (unsigned long long)atomic_load(&pub->repo_errors));
    if (n < 0 || (size_t)n >= len)
        return UTIL_EINVAL;
    used = (size_t)n;
    for (int i = 0; i < pub->n; i++) {
        struct crl_issuer_stats s;
        (void)crl_publisher_stats(pub, i, &s); /* i is in range */
        n = snprintf(buf + used, len - used,
                     "pkiva_crl_number{issuer=\"%s\",kind=\"full\"} %lld\n"
                     "pkiva_crl_number{issuer=\"%s\",kind=\"delta\"} %lld\n"
                     "pkiva_crl_age_seconds{issuer=\"%s\"} %lld\n"
                     "pkiva_crl_seconds_to_next_update{issuer=\"%s\"} %lld\n"
                     "pkiva_crl_bytes{issuer=\"%s\",kind=\"full\"} %zu\n"
                     "pkiva_crl_bytes{issuer=\"%s\",kind=\"delta\"} %zu\n"
                     "pkiva_crl_entries{issuer=\"%s\",kind=\"full\"} %lld\n"
                     "pkiva_crl_entries{issuer=\"%s\",kind=\"delta\"} %lld\n"
                     "pkiva_crl_build_seconds{issuer=\"%s\"} %.3f\n"
                     "pkiva_crl_published_total{issuer=\"%s\"} %llu\n"
                     "pkiva_crl_failures_total{issuer=\"%s\"} %llu\n"
                     "pkiva_crl_failing{issuer=\"%s\"} %d\n",
                     s.name, (long long)s.full_number, s.name, (long long)s.delta_number, s.name,
                     (long long)(s.full_number ? now - s.this_update : -1), s.name,
                     (long long)(s.full_number ? s.next_update - now : -1), s.name, s.full_bytes,
                     s.name, s.delta_bytes, s.name, (long long)s.full_entries, s.name,
                     (long long)s.delta_entries, s.name, (double)s.last_build_ms / 1000.0, s.name,
                     (unsigned long long)s.published, s.name, (unsigned long long)s.failures,
                     s.name, s.failing);
        if (n < 0 || (size_t)n >= len - used)
            return UTIL_EINVAL;
        used += (size_t)n;
    }
    return (int)used;
}
