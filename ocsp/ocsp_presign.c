/* SPDX-License-Identifier: Apache-2.0 */
/* The pre-signer thread: keeps every certificate's SHA-1 response (and any SHA-256 one a client
 * asked for) signed ahead of time, serving the urgent list (status changes from the feed) before
 * any sweep, with a per-entry back-off for entries whose signature keeps failing. The threads,
 * the revocation path and the failure rules are in the DESIGN comment of ocsp_responder.c. */
#include "ocsp_int.h"

#include <hsm/hsm.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Per-entry back-off, owned by the pre-signer thread (no lock). */
#define BACKOFF_MAX 1024     /* failing entries remembered; past it the next one due is reused */
#define BACKOFF_FIRST_S 1    /* the first retry after a failure */
#define BACKOFF_LIMIT_S 300  /* an entry that keeps failing is tried at most every 5 minutes */
#define BACKOFF_LOG_MS 10000 /* at most one log line per 10 s about failing entries */

struct backoff_rec {
    int issuer, alg;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int64_t feed_id; /* the version that failed: a new change to the entry gets a fresh attempt */
    unsigned failures;
    int64_t retry_at; /* unix seconds */
};

struct backoff {
    struct backoff_rec recs[BACKOFF_MAX];
    size_t n;
    int64_t logged_ms; /* monotonic time of the last log line */
    uint64_t unlogged; /* failures since that line */
};

static struct backoff_rec *backoff_find(struct backoff *bo, const struct ocsp__due *d)
{
    for (size_t i = 0; i < bo->n; i++) {
        struct backoff_rec *r = &bo->recs[i];
        if (r->issuer == d->issuer && r->alg == d->alg && r->serial_len == d->serial_len &&
            memcmp(r->serial, d->serial, d->serial_len) == 0)
            return r;
    }
    return NULL;
}

/* Removes from items those backing off at now; returns how many are left. */
static size_t backoff_filter(struct backoff *bo, struct ocsp__due *items, size_t n, int64_t now)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const struct backoff_rec *r = bo->n > 0 ? backoff_find(bo, &items[i]) : NULL;
        if (r != NULL && r->feed_id == items[i].st.feed_id && r->retry_at > now)
            continue;
        if (kept != i)
            items[kept] = items[i];
        kept++;
    }
    return kept;
}

/* Records the outcome of one item's signature. An HSM that is down or busy is not the entry's
 * fault (the whole batch backs off instead), so only other failures count against it. */
static void backoff_note(struct ocsp_responder *resp, struct backoff *bo, const struct ocsp__due *d,
                         int result, int64_t now)
{
    struct backoff_rec *r = backoff_find(bo, d);
    int64_t delay = BACKOFF_LIMIT_S;
    char hex[2 * STORE_SERIAL_MAX + 1];

    if (result == UTIL_OK || result == UTIL_EHSM || result == UTIL_EBUSY) {
        if (result == UTIL_OK && r != NULL)
            *r = bo->recs[--bo->n];
        atomic_store(&resp->presign_failing, bo->n);
        return;
    }
    if (r == NULL) {
        if (bo->n < BACKOFF_MAX) {
            r = &bo->recs[bo->n++];
        } else {
            /* Full: reuse the record due soonest; that entry is then tried like a new one. */
            r = &bo->recs[0];
            for (size_t i = 1; i < bo->n; i++)
                if (bo->recs[i].retry_at < r->retry_at)
                    r = &bo->recs[i];
        }
        memset(r, 0, sizeof(*r));
        r->issuer = d->issuer;
        r->alg = d->alg;
        memcpy(r->serial, d->serial, d->serial_len);
        r->serial_len = d->serial_len;
    }
    if (r->feed_id != d->st.feed_id)
        r->failures = 0;
    r->feed_id = d->st.feed_id;
    r->failures++;
    if (r->failures <= 9 && (BACKOFF_FIRST_S << (r->failures - 1)) < BACKOFF_LIMIT_S)
        delay = BACKOFF_FIRST_S << (r->failures - 1);
    r->retry_at = now + delay;
    atomic_store(&resp->presign_failing, bo->n);
    bo->unlogged++;
    if (bo->logged_ms != 0 && util_mono_ms() - bo->logged_ms < BACKOFF_LOG_MS)
        return;
    util_hex(d->serial, d->serial_len, hex);
    UTIL_ERROR(OCSP_MOD,
               "pre-signer: cannot sign serial %s of issuer %s (change %lld): %s; failed %u "
               "time(s), next attempt in %lld s; OCSP answers tryLater for it. %zu entries "
               "failing, %llu failures since the last such line. Check its stored revocation.",
               hex, resp->issuers[d->issuer].name, (long long)d->st.feed_id, util_strerror(result),
               r->failures, (long long)delay, bo->n, (unsigned long long)bo->unlogged);
    bo->logged_ms = util_mono_ms();
    bo->unlogged = 0;
}

struct presign_batch {
    struct ocsp_responder *resp;
    size_t n;
    struct ocsp__due *items;
    int *results;
    unsigned char **der;
    size_t *len;
    int64_t *this_update, *next_update;
    int *cert_status;
};

static OCSP_CERTID *certid_for(const struct ocsp_responder *resp, const struct ocsp__due *d)
{
    return ocsp__canonical_certid(resp, d->issuer, d->alg, d->serial, d->serial_len);
}

/* Runs on a signing thread: signs every item of the batch, stops at the first HSM failure. */
static int presign_work(void *thread_state, void *opaque)
{
    struct presign_batch *b = opaque;
    struct ocsp_responder *resp = b->resp;
    int64_t now = (int64_t)time(NULL);
    (void)thread_state; /* hsm_sign_ctx_new_blocking finds the thread's session itself */

    for (size_t i = 0; i < b->n; i++) {
        struct ocsp__single single;
        memset(&single, 0, sizeof(single));
        (void)ocsp__decide_status(resp, 1, &b->items[i].st, now, &single); /* caller filtered */
        single.cid = certid_for(resp, &b->items[i]);
        if (single.cid == NULL) {
            b->results[i] = UTIL_ENOMEM;
            continue;
        }
        b->cert_status[i] = single.cert_status;
        b->results[i] = ocsp__sign_singles(resp, resp->issuers[b->items[i].issuer].signer, &single,
                                           1, NULL, NULL, 0, &b->der[i], &b->len[i],
                                           &b->this_update[i], &b->next_update[i]);
        ocsp__single_cleanup(&single);
        /* A signer whose key is unhealthy (hsm/key.c) fails alone (its entries back off); only a
         * token-wide failure stops the batch, so the other issuers sign on. */
        if (b->results[i] == UTIL_EHSM &&
            (resp->hsm == NULL ||
             hsm_key_usable(resp->signers[resp->issuers[b->items[i].issuer].signer].key))) {
            for (size_t j = i + 1; j < b->n; j++)
                b->results[j] = UTIL_EHSM;
            return UTIL_EHSM;
        }
    }
    return UTIL_OK;
}

/* Signs and installs a batch. Returns the number installed, or a negative error when the HSM could
 * not be used at all (then the caller backs off). */
static int presign_run(struct ocsp_responder *resp, struct ocsp__due *items, size_t n,
                       struct backoff *bo, int64_t now)
{
    struct presign_batch b;
    int rc;
    int installed = 0;

    memset(&b, 0, sizeof(b));
    b.resp = resp;
    b.n = n;
    b.items = items;
    b.results = calloc(n, sizeof(*b.results));
    b.der = calloc(n, sizeof(*b.der));
    b.len = calloc(n, sizeof(*b.len));
    b.this_update = calloc(n, sizeof(*b.this_update));
    b.next_update = calloc(n, sizeof(*b.next_update));
    b.cert_status = calloc(n, sizeof(*b.cert_status));
    if (b.results == NULL || b.der == NULL || b.len == NULL || b.this_update == NULL ||
        b.next_update == NULL || b.cert_status == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (resp->hsm != NULL)
        rc = hsm_run_sync(resp->hsm, presign_work, &b);
    else
        rc = presign_work(NULL, &b);
    for (size_t i = 0; i < n; i++) {
        struct ocsp__cached *c;
        int64_t validity;
        if (b.results[i] != UTIL_OK || b.der[i] == NULL) {
            if (rc == UTIL_OK || rc == UTIL_EHSM)
                OCSP__STAT(resp, presign_errors);
            backoff_note(resp, bo, &items[i], b.results[i] != UTIL_OK ? b.results[i] : UTIL_EHSM,
                         now);
            continue;
        }
        validity = b.next_update[i] - b.this_update[i];
        c = ocsp__cached_new(b.der[i], b.len[i], b.this_update[i], b.next_update[i],
                             b.this_update[i] + validity * resp->cfg.refresh_percent / 100,
                             b.cert_status[i]);
        if (c == NULL)
            continue;
        if (ocsp__index_install(resp->index, items[i].issuer, items[i].serial, items[i].serial_len,
                                items[i].alg, items[i].st.feed_id, c)) {
            installed++;
            OCSP__STAT(resp, presigned);
            backoff_note(resp, bo, &items[i], UTIL_OK, now);
        }
        ocsp__cached_unref(c);
    }
out:
    for (size_t i = 0; b.der != NULL && i < n; i++)
        OPENSSL_free(b.der[i]);
    free(b.results);
    free(b.der);
    free(b.len);
    free(b.this_update);
    free(b.next_update);
    free(b.cert_status);
    return rc != UTIL_OK ? rc : installed;
}

/* Takes up to max urgent items (without removing them) as due work with the entry's current
 * state. Returns how many queue items were looked at. */
static size_t urgent_collect(struct ocsp_responder *resp, struct ocsp__due *out, size_t max,
                             size_t *n_out, int64_t now)
{
    size_t looked = 0;
    struct ocsp__urgent *u;
    int64_t skip_before = INT64_MIN;
    *n_out = 0;

    if (resp->cfg.archive_cutoff_seconds == 0 && resp->cfg.expired_retention_seconds > 0)
        skip_before = now - resp->cfg.expired_retention_seconds;
    pthread_mutex_lock(&resp->mutex);
    u = resp->urgent_head;
    pthread_mutex_unlock(&resp->mutex);
    /* Only the pre-signer removes items, so the prefix it walks stays valid without the lock;
     * next pointers are read under the lock because apply_change appends. */
    while (u != NULL && looked < max) {
        struct ocsp__due *d = &out[*n_out];
        struct ocsp__cached *cached = NULL;
        looked++;
        if (ocsp__index_lookup(resp->index, u->issuer, u->serial, u->serial_len, OCSP__SHA1, &d->st,
                               &cached) &&
            d->st.not_after >= skip_before) {
            d->issuer = u->issuer;
            d->alg = OCSP__SHA1;
            memcpy(d->serial, u->serial, u->serial_len);
            d->serial_len = u->serial_len;
            /* Already re-signed on demand with this version: nothing to do. */
            if (cached == NULL || cached->refresh_at <= now)
                (*n_out)++;
        }
        ocsp__cached_unref(cached);
        pthread_mutex_lock(&resp->mutex);
        u = u->next;
        pthread_mutex_unlock(&resp->mutex);
    }
    return looked;
}

static void urgent_pop(struct ocsp_responder *resp, size_t count)
{
    struct ocsp__urgent *done = NULL;
    pthread_mutex_lock(&resp->mutex);
    while (count-- > 0 && resp->urgent_head != NULL) {
        struct ocsp__urgent *u = resp->urgent_head;
        resp->urgent_head = u->next;
        if (resp->urgent_head == NULL)
            resp->urgent_tail = NULL;
        resp->urgent_len--;
        u->next = done;
        done = u;
    }
    ocsp__update_visible_locked(resp);
    pthread_mutex_unlock(&resp->mutex);
    while (done != NULL) {
        struct ocsp__urgent *next = done->next;
        free(done);
        done = next;
    }
}

static void *presign_main(void *opaque)
{
    struct ocsp_responder *resp = opaque;
    size_t batch = (size_t)resp->cfg.presign_batch;
    struct ocsp__due *items = calloc(batch, sizeof(*items));
    struct ocsp__scan scan = {0, 0, 0};
    struct backoff *bo = calloc(1, sizeof(*bo));
    size_t sweep_found = 0;
    size_t sweep_installed = 0;
    int64_t last_visible = atomic_load(&resp->visible_feed_id);

    util_thread_name("ocsp-presign", -1);
    if (items == NULL || bo == NULL) {
        free(items);
        free(bo);
        UTIL_ERROR(OCSP_MOD, "pre-signer: out of memory, responses will be signed on demand");
        return NULL;
    }
    for (;;) {
        int64_t now = (int64_t)time(NULL);
        size_t n = 0, looked;
        int rc = 0;
        int idle = 0;

        pthread_mutex_lock(&resp->mutex);
        if (resp->stopping) {
            pthread_mutex_unlock(&resp->mutex);
            break;
        }
        pthread_mutex_unlock(&resp->mutex);

        looked = urgent_collect(resp, items, batch, &n, now);
        n = backoff_filter(bo, items, n, now);
        if (looked > 0) {
            if (n > 0)
                rc = presign_run(resp, items, n, bo, now);
            if (rc >= 0)
                urgent_pop(resp, looked);
        } else {
            struct ocsp__index_counts counts;
            int64_t skip_before = INT64_MIN;
            int allow_new;
            ocsp__index_counts(resp->index, &counts);
            allow_new = counts.bytes < ocsp__index_max_bytes(resp->index) / 10 * 9;
            if (resp->cfg.archive_cutoff_seconds == 0 && resp->cfg.expired_retention_seconds > 0)
                skip_before = now - resp->cfg.expired_retention_seconds;
            n = ocsp__index_collect_due(resp->index, &scan, now, allow_new, skip_before, items,
                                        batch);
            n = backoff_filter(bo, items, n, now);
            sweep_found += n;
            if (n > 0)
                rc = presign_run(resp, items, n, bo, now);
            if (rc > 0)
                sweep_installed += (size_t)rc;
            if (scan.wrapped) {
                pthread_mutex_lock(&resp->mutex);
                atomic_store(&resp->presign_backlog, sweep_found + resp->urgent_len);
                pthread_mutex_unlock(&resp->mutex);
                /* A pass that signed nothing, whatever it found, waits: what failed is retried
                 * after its back-off, never in a loop. */
                idle = sweep_installed == 0;
                sweep_found = 0;
                sweep_installed = 0;
            }
        }
        if (resp->cfg.on_visible != NULL) {
            int64_t v = atomic_load(&resp->visible_feed_id);
            if (v != last_visible) {
                last_visible = v;
                resp->cfg.on_visible(resp->cfg.on_visible_ctx, v);
            }
        }
        if (rc < 0 || idle) {
            /* HSM trouble: back off briefly; idle: sleep until the next change or a second. */
            struct timespec until;
            (void)clock_gettime(CLOCK_REALTIME, &until); /* cannot fail */
            until.tv_nsec += rc < 0 ? 200000000L : 0;
            until.tv_sec += rc < 0 ? 0 : 1;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&resp->mutex);
            if (!resp->stopping && (rc < 0 || resp->urgent_head == NULL))
                (void)pthread_cond_timedwait(&resp->cond, &resp->mutex, &until); /* timeout ok */
            pthread_mutex_unlock(&resp->mutex);
        }
    }
    free(items);
    free(bo);
    return NULL;
}

int ocsp_responder_start(struct ocsp_responder *resp)
{
    if (resp->thread_started)
        return UTIL_OK;
    resp->stopping = 0;
    if (pthread_create(&resp->thread, NULL, presign_main, resp) != 0)
        return UTIL_ENOMEM;
    resp->thread_started = 1;
    return UTIL_OK;
}

void ocsp_responder_stop(struct ocsp_responder *resp)
{
    if (resp == NULL || !resp->thread_started)
        return;
    pthread_mutex_lock(&resp->mutex);
    resp->stopping = 1;
    pthread_cond_broadcast(&resp->cond);
    pthread_mutex_unlock(&resp->mutex);
    (void)pthread_join(resp->thread, NULL); /* our own joinable thread */
    resp->thread_started = 0;
}
