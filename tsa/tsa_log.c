/* SPDX-License-Identifier: Apache-2.0 */
/* Serial numbers and the token log. Serials come from blocks durably reserved in the store; loop
 * threads take them from the current block and ask the log thread to reserve the next one ahead of
 * need. The log thread records every issued token in the store, many per transaction (group
 * commit), and in durable mode answers each request only after its record committed.
 *
 * DESIGN: one log thread per service, with its own store connection (opened at start-up, reopened
 * after a failure). Its input is a fixed ring of records (capacity max_inflight, so a request in
 * flight always finds room) filled by signing threads under one mutex; it takes up to log_batch_max
 * records, commits them with store_tsa_log_blocking and hands the jobs to their loops. While a
 * commit runs, new records queue up and go together in the next one; under load (the previous
 * batch held more than one record) it also waits up to log_linger_us for more, which makes fewer,
 * larger commits. An idle TSA commits a lone record at once. Serial blocks: each unit holds a current block and a spare
 * one, both durably reserved before any serial of them is used. When a loop starts on the spare,
 * it asks for a new spare; the log thread reserves it between commits. If the store fails, the
 * spare runs out and requests get systemFailure at once (never a serial that was not reserved).
 * Invariant: a serial is handed out at most once, because it comes from a block that the store
 * reserved durably for this unit and the in-memory counter only moves forward; after a crash the
 * unused rest of the blocks is skipped.
 *
 * Serials unique per TSA, whatever the store remembers (issue 15.3). RFC 3161 wants a serial unique
 * for the TSA, whose identity is its certificate, not the unit's name in pkiva.conf: the counter
 * is keyed by the certificate's SHA-256 (renaming a unit continues it; the log records the
 * certificate too). And the store's memory may go back in time (a backup restored, a fail-over
 * to a copy that lagged), so a block never starts below TSA_SERIAL_TIME_SHIFT bits of the current
 * time: floor = (ms since the epoch) << 21. A block (at most 1000000 serials, below 2^21) reserved
 * at time t holds only serials below (t + 1 ms) << 21, so a block reserved later, even from a
 * store that forgot every earlier block, starts above all of them as long as the clock has not
 * gone back across the restart; and while the store keeps its history, the counter alone keeps
 * serials unique even if the clock does go back. Serials are positive and fit in 63 bits (8 DER
 * octets, within RFC 3161's 160 bits) until the year 2109. Two processes serving one TSA
 * certificate at the same moment from two stores (active-active) are not covered: give each its
 * own certificate. */
#include "tsa_int.h"

#include <errno.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- serials --------------------------------------------------------------------------------- */

/* The lowest serial a block reserved now may start at (see the DESIGN comment). */
static int64_t serial_floor(void)
{
    struct timespec now;
    (void)clock_gettime(CLOCK_REALTIME, &now); /* cannot fail for CLOCK_REALTIME */
    return ((int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000) << TSA_SERIAL_TIME_SHIFT;
}

int tsa__serials_init_blocking(struct tsa__unit *unit, struct store *store, int64_t block)
{
    struct tsa__serials *s = &unit->serials;
    unsigned int id_len = 0;
    int64_t first = 0, spare = 0;
    int rc;

    s->block = block;
    if (X509_digest(unit->cert, EVP_sha256(), unit->cert_id, &id_len) != 1 ||
        id_len != sizeof(unit->cert_id)) {
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: cannot hash its certificate",
                         unit->name);
        return UTIL_ECRYPTO;
    }
    memcpy(s->key, "sha256:", 7);
    for (unsigned i = 0; i < id_len; i++)
        (void)snprintf(s->key + 7 + 2 * i, 3, "%02x", unit->cert_id[i]); /* fits: 7 + 64 < 80 */
    rc = store_tsa_reserve_from_blocking(store, s->key, block, serial_floor(), &first);
    if (rc == UTIL_OK)
        rc = store_tsa_reserve_from_blocking(store, s->key, block, serial_floor(), &spare);
    if (rc != UTIL_OK) {
        UTIL_ERROR(TSA_MOD, "unit %s: cannot reserve serial numbers: %s", unit->name,
                   util_strerror(rc));
        return rc;
    }
    s->next = first;
    s->end = first + block;
    s->spare_first = spare;
    s->spare_end = spare + block;
    s->refill_wanted = 0;
    UTIL_INFO(TSA_MOD, "unit %s: serials %lld.. reserved", unit->name, (long long)first);
    return UTIL_OK;
}

int tsa__serial_take(struct tsa_service *svc, struct tsa__unit *unit, int64_t *serial)
{
    struct tsa__serials *s = &unit->serials;
    int ask = 0;

    pthread_mutex_lock(&s->mu);
    if (s->next >= s->end && s->spare_first > 0) {
        s->next = s->spare_first;
        s->end = s->spare_end;
        s->spare_first = 0;
        s->spare_end = 0;
    }
    if (s->next >= s->end) {
        pthread_mutex_unlock(&s->mu);
        atomic_store(&svc->serials_exhausted, 1);
        return UTIL_EBUSY;
    }
    *serial = s->next++;
    if (s->spare_first == 0 && !s->refill_wanted) {
        s->refill_wanted = 1;
        ask = 1;
    }
    pthread_mutex_unlock(&s->mu);
    atomic_store(&svc->serials_exhausted, 0);
    if (ask)
        tsa__log_wake(svc);
    return UTIL_OK;
}

/* Reserves a spare block for every unit that asked. Log thread. Returns 0 or the first error. */
static int refill_serials(struct tsa_service *svc)
{
    int result = UTIL_OK;

    for (int i = 0; i < svc->n_units; i++) {
        struct tsa__unit *unit = &svc->units[i];
        struct tsa__serials *s = &unit->serials;
        int64_t first = 0;
        int wanted, rc;

        pthread_mutex_lock(&s->mu);
        wanted = s->refill_wanted;
        pthread_mutex_unlock(&s->mu);
        if (!wanted)
            continue;
        rc = store_tsa_reserve_from_blocking(svc->log.store, s->key, s->block, serial_floor(),
                                             &first);
        if (rc != UTIL_OK) {
            result = rc;
            continue;
        }
        pthread_mutex_lock(&s->mu);
        s->spare_first = first;
        s->spare_end = first + s->block;
        s->refill_wanted = 0;
        pthread_mutex_unlock(&s->mu);
        UTIL_DEBUG(TSA_MOD, "unit %s: serials %lld.. reserved", unit->name, (long long)first);
    }
    return result;
}

static int refill_wanted(struct tsa_service *svc)
{
    int wanted = 0;
    for (int i = 0; i < svc->n_units && !wanted; i++) {
        pthread_mutex_lock(&svc->units[i].serials.mu);
        wanted = svc->units[i].serials.refill_wanted;
        pthread_mutex_unlock(&svc->units[i].serials.mu);
    }
    return wanted;
}

/* ---- the log thread -------------------------------------------------------------------------- */

void tsa__log_wake(struct tsa_service *svc)
{
    pthread_mutex_lock(&svc->log.mu);
    (void)pthread_cond_signal(&svc->log.cond); /* cannot fail on an initialised condvar */
    pthread_mutex_unlock(&svc->log.mu);
}

int tsa__log_push(struct tsa_service *svc, struct tsa__job *job, int with_job)
{
    struct tsa__log *log = &svc->log;
    struct tsa__record *r;
    int rc = UTIL_OK;

    pthread_mutex_lock(&log->mu);
    if (log->count >= log->capacity) {
        rc = UTIL_EBUSY;
        goto out;
    }
    r = &log->ring[(log->head + log->count) % log->capacity];
    r->unit = job->unit;
    r->job = with_job ? job : NULL;
    r->serial = job->serial;
    r->gen_time_ms = job->gen_time_ms;
    r->policy_txt = job->query.policy_index < 0 ? job->unit->policy_txt
                                                : job->unit->accepted_txt[job->query.policy_index];
    r->md_nid = job->query.md_nid;
    r->imprint_len = job->query.imprint_len;
    memcpy(r->imprint, job->query.imprint, job->query.imprint_len);
    log->count++;
    /* Only when the log thread waits for this many: a signal per record would wake a lingering
     * log thread once per token for nothing. */
    if (log->wake_at > 0 && log->count >= log->wake_at)
        (void)pthread_cond_signal(&log->cond); /* cannot fail on an initialised condvar */
out:
    pthread_mutex_unlock(&log->mu);
    return rc;
}

static void deadline_in(struct timespec *ts, long us)
{
    (void)clock_gettime(CLOCK_REALTIME, ts); /* CLOCK_REALTIME always works */
    ts->tv_nsec += (us % 1000000) * 1000;
    ts->tv_sec += us / 1000000 + ts->tv_nsec / 1000000000;
    ts->tv_nsec %= 1000000000;
}

/* Commits n records; answers their jobs. Log thread. */
static void commit_batch(struct tsa_service *svc, struct tsa__record *batch,
                         struct store_tsa_token *tokens, int n, int *error_logged)
{
    struct tsa__log *log = &svc->log;
    int rc = UTIL_OK;

    for (int i = 0; i < n; i++) {
        tokens[i].unit = batch[i].unit->name;
        tokens[i].cert_id = batch[i].unit->cert_id;
        tokens[i].serial = batch[i].serial;
        tokens[i].gen_time_ms = batch[i].gen_time_ms;
        tokens[i].policy = batch[i].policy_txt;
        tokens[i].imprint_alg = OBJ_nid2sn(batch[i].md_nid);
        tokens[i].imprint = batch[i].imprint;
        tokens[i].imprint_len = batch[i].imprint_len;
    }
    if (log->store == NULL)
        rc = store_open_blocking(log->store_path, 0, &log->store);
    if (rc == UTIL_OK)
        rc = store_tsa_log_blocking(log->store, tokens, (size_t)n);
    if (rc == UTIL_OK) {
        atomic_fetch_add_explicit(&svc->log_commits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&svc->log_records, (uint64_t)n, memory_order_relaxed);
        if (*error_logged)
            UTIL_WARN(TSA_MOD, "token log writable again");
        *error_logged = 0;
        atomic_store(&log->failing, 0);
    } else {
        atomic_fetch_add_explicit(&svc->log_failures, 1, memory_order_relaxed);
        atomic_store(&log->failing, 1);
        if (!*error_logged)
            UTIL_ERROR(TSA_MOD,
                       "token log commit failed: %s (durable requests get "
                       "systemFailure until it recovers)",
                       util_strerror(rc));
        *error_logged = 1;
        for (int i = 0; i < n; i++) {
            if (batch[i].job == NULL) /* already answered (durable_log = no): record lost */
                UTIL_ERROR(TSA_MOD, "token %s/%lld issued but not logged", batch[i].unit->name,
                           (long long)batch[i].serial);
        }
        store_close(log->store); /* reopened for the next batch */
        log->store = NULL;
    }
    for (int i = 0; i < n; i++) {
        struct tsa__job *job = batch[i].job;
        if (job == NULL)
            continue;
        if (rc != UTIL_OK)
            job->reject = TSA__REJ_LOG;
        tsa__deliver(job);
    }
}

static void *log_main(void *arg)
{
    struct tsa_service *svc = arg;
    struct tsa__log *log = &svc->log;
    int batch_max = svc->cfg.log_batch_max;
    struct tsa__record *batch = calloc((size_t)batch_max, sizeof(*batch));
    struct store_tsa_token *tokens = calloc((size_t)batch_max, sizeof(*tokens));
    int error_logged = 0, refill_failed = 0, last_batch = 0;

    util_thread_name("tsa-log", -1);
    if (batch == NULL || tokens == NULL) {
        /* Checked by tsa__log_start's probe allocation; keep the thread correct anyway. */
        UTIL_ERROR(TSA_MOD, "log thread: out of memory; tokens cannot be logged");
        batch_max = 0;
    }
    for (;;) {
        int n = 0, stopping;

        pthread_mutex_lock(&log->mu);
        while (!log->stopping && log->count == 0 && (refill_failed || !refill_wanted(svc))) {
            if (refill_failed) {
                struct timespec ts;
                deadline_in(&ts, 200000); /* retry a failed reservation every 200 ms */
                if (pthread_cond_timedwait(&log->cond, &log->mu, &ts) == ETIMEDOUT)
                    refill_failed = 0;
            } else {
                log->wake_at = 1;
                (void)pthread_cond_wait(&log->cond, &log->mu); /* spurious wake-ups loop */
                log->wake_at = 0;
            }
        }
        stopping = log->stopping;
        if (stopping && log->count == 0) {
            pthread_mutex_unlock(&log->mu);
            break;
        }
        pthread_mutex_unlock(&log->mu);

        if (!refill_failed && !stopping && refill_wanted(svc)) {
            int rc =
                log->store == NULL ? store_open_blocking(log->store_path, 0, &log->store) : UTIL_OK;
            if (rc == UTIL_OK)
                rc = refill_serials(svc);
            if (rc != UTIL_OK) {
                UTIL_ERROR(TSA_MOD, "reserving serial numbers failed: %s (retrying)",
                           util_strerror(rc));
                refill_failed = 1;
                atomic_store(&log->failing, 1);
            }
        }

        pthread_mutex_lock(&log->mu);
        /* Linger only under load (the previous batch had company): an idle TSA commits a lone
         * record at once. */
        if (svc->cfg.log_linger_us > 0 && last_batch > 1 && log->count > 0 &&
            log->count < batch_max && !log->stopping) {
            struct timespec ts;
            deadline_in(&ts, svc->cfg.log_linger_us);
            log->wake_at = batch_max;
            while (log->count < batch_max && !log->stopping &&
                   pthread_cond_timedwait(&log->cond, &log->mu, &ts) != ETIMEDOUT)
                ; /* records keep arriving: wait until the batch is full or the linger is over */
            log->wake_at = 0;
        }
        while (n < batch_max && log->count > 0) {
            batch[n++] = log->ring[log->head];
            log->head = (log->head + 1) % log->capacity;
            log->count--;
        }
        if (batch_max == 0 && log->count > 0) {
            /* No batch memory: fail the queued jobs one by one rather than hang them. */
            struct tsa__record r = log->ring[log->head];
            log->head = (log->head + 1) % log->capacity;
            log->count--;
            pthread_mutex_unlock(&log->mu);
            if (r.job != NULL) {
                r.job->reject = TSA__REJ_LOG;
                tsa__deliver(r.job);
            }
            continue;
        }
        pthread_mutex_unlock(&log->mu);
        if (n > 0)
            commit_batch(svc, batch, tokens, n, &error_logged);
        last_batch = n;
    }
    free(batch);
    free(tokens);
    return NULL;
}

int tsa__log_start(struct tsa_service *svc)
{
    struct tsa__log *log = &svc->log;

    if (log->started)
        return UTIL_EEXIST;
    if (pthread_create(&log->thread, NULL, log_main, svc) != 0) {
        UTIL_ERROR(TSA_MOD, "cannot start the token log thread");
        return UTIL_ENOMEM;
    }
    log->started = 1;
    return UTIL_OK;
}

void tsa__log_stop(struct tsa_service *svc)
{
    struct tsa__log *log = &svc->log;

    if (!log->started)
        return;
    pthread_mutex_lock(&log->mu);
    log->stopping = 1;
    (void)pthread_cond_signal(&log->cond); /* cannot fail on an initialised condvar */
    pthread_mutex_unlock(&log->mu);
    (void)pthread_join(log->thread, NULL); /* our own joinable thread */
    log->started = 0;
}
