/* SPDX-License-Identifier: Apache-2.0 */
/* Loading the status index from the store at start-up: a scan of each issuer's certificates in
 * the order the store reads fastest (the index is a hash table; SQLite reads the two halves of an
 * issuer's serials at once on two connections, PostgreSQL one sequential scan), with the index
 * inserts on another thread, so that decoding rows and filing them into the index overlap. The
 * store calls read_one on one thread at a time, not always this one.
 *
 * DESIGN
 * - The calling thread runs the store's iteration and copies each row into a batch of
 *   LOAD_BATCH rows; full batches go through a ring of LOAD_BATCHES to the inserter thread.
 *   Neither allocates per row: the batches are allocated once. When the ring is full the reader
 *   waits (the memory stays bounded whatever the store holds).
 * - The inserter appends a batch at a time (ocsp__index_append_many: grouped by shard, one lock
 *   per group, no probe: the store's primary key makes the keys distinct, and issuers have
 *   distinct store ids). At the end both threads build half of the shards' tables each, sized
 *   once for the final count, instead of growing them by doubling all along (which moved every
 *   entry about once more).
 * - Failures: out of memory in the index stops the scan (the caller refuses to start); a serial
 *   the index refuses is skipped, as the feed does. If the thread cannot be started, the reader
 *   does it all itself.
 * - The inserter only calls the index (which locks its shards): nothing else of the responder is
 *   shared with it. It is joined before the load returns; the load runs before the feed and the
 *   HTTP loops start, so nothing looks the index up meanwhile (if something did, a shard's table
 *   would catch up at that use). */
#include "ocsp_int.h"

#include <stdlib.h>
#include <string.h>

#define LOAD_BATCH 4096
#define LOAD_BATCHES 4

struct load_batch {
    size_t n;
    struct ocsp__put_item rows[LOAD_BATCH];
};

struct loader {
    struct ocsp__index *index;
    int64_t changed_sec; /* see read_one */
    int issuer;          /* the issuer being read */
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    struct load_batch *ring[LOAD_BATCHES];
    size_t head, tail; /* published batches: [tail, head), each modulo LOAD_BATCHES */
    int finished;      /* the reader published its last batch */
    int threaded;
    int rc;       /* UTIL_ENOMEM once an insert ran out of memory */
    int build_rc; /* the inserter's half of ocsp__index_build */
    /* The index was empty: rows are appended (ocsp__index_append_many). A second load into the
     * same index puts them one by one, which finds the keys already there. */
    int append;
};

static int load_rows(struct loader *ld, const struct load_batch *b)
{
    if (ld->append)
        return ocsp__index_append_many(ld->index, b->rows, b->n);
    for (size_t i = 0; i < b->n; i++) {
        const struct ocsp__put_item *x = &b->rows[i];
        int changed;
        if (ocsp__index_put(ld->index, x->issuer, x->serial, x->serial_len, &x->st, 0, &changed) ==
            UTIL_ENOMEM)
            return UTIL_ENOMEM; /* a bad serial is skipped; out of memory stops */
    }
    return UTIL_OK;
}

static void *inserter_main(void *opaque)
{
    struct loader *ld = opaque;

    util_thread_name("ocsp-load", -1);
    pthread_mutex_lock(&ld->mutex);
    for (;;) {
        struct load_batch *b;
        int rc;
        while (ld->tail == ld->head && !ld->finished)
            pthread_cond_wait(&ld->cond, &ld->mutex);
        if (ld->tail == ld->head)
            break; /* finished and drained */
        b = ld->ring[ld->tail % LOAD_BATCHES];
        pthread_mutex_unlock(&ld->mutex);
        rc = ld->rc == UTIL_OK ? load_rows(ld, b) : UTIL_OK;
        pthread_mutex_lock(&ld->mutex);
        if (rc != UTIL_OK)
            ld->rc = rc;
        ld->tail++;
        pthread_cond_broadcast(&ld->cond);
    }
    pthread_mutex_unlock(&ld->mutex);
    /* Every row is in: half of the tables are built here, half by the reader. */
    if (ld->rc == UTIL_OK)
        ld->build_rc = ocsp__index_build(ld->index, 1, 2);
    return NULL;
}

/* Hands the batch being filled to the inserter (or inserts it here without a thread). Returns
 * the loader's error, if any. */
static int publish(struct loader *ld)
{
    int rc;
    if (!ld->threaded) {
        struct load_batch *b = ld->ring[ld->head % LOAD_BATCHES];
        if (ld->rc == UTIL_OK)
            ld->rc = load_rows(ld, b);
        b->n = 0;
        return ld->rc;
    }
    pthread_mutex_lock(&ld->mutex);
    ld->head++;
    pthread_cond_broadcast(&ld->cond);
    /* The next batch to fill must be free: at most LOAD_BATCHES - 1 wait for the inserter. */
    while (ld->head - ld->tail >= LOAD_BATCHES)
        pthread_cond_wait(&ld->cond, &ld->mutex);
    rc = ld->rc;
    pthread_mutex_unlock(&ld->mutex);
    ld->ring[ld->head % LOAD_BATCHES]->n = 0;
    return rc;
}

static int read_one(void *opaque, const struct store_cert *cert)
{
    struct loader *ld = opaque;
    struct load_batch *b = ld->ring[ld->head % LOAD_BATCHES];
    struct ocsp__put_item *r = &b->rows[b->n++];

    r->serial_len = cert->serial_len; /* the store never gives more than STORE_SERIAL_MAX */
    memcpy(r->serial, cert->serial, cert->serial_len);
    r->issuer = ld->issuer;
    r->st.status = cert->status;
    r->st.reason = cert->reason;
    r->st.revoked_at = cert->revoked_at;
    r->st.invalidity_date = cert->invalidity_date;
    r->st.not_after = cert->not_after;
    r->st.feed_id = cert->feed_id;
    /* Its own change time is not loaded: the store's latest change is a bound (a previous
     * process may have served another status in that second). */
    r->st.changed_sec = ld->changed_sec;
    if (b->n == LOAD_BATCH && publish(ld) != UTIL_OK)
        return 1; /* stop the scan: out of memory */
    return 0;
}

int ocsp__load_blocking(struct ocsp_responder *resp, struct store *store, int64_t changed_sec)
{
    struct loader ld;
    pthread_t thread;
    struct ocsp__index_counts counts;
    int rc = UTIL_OK;

    memset(&ld, 0, sizeof(ld));
    ld.index = resp->index;
    ld.changed_sec = changed_sec;
    ocsp__index_counts(resp->index, &counts);
    ld.append = counts.entries == 0;
    for (int i = 0; i < LOAD_BATCHES; i++) {
        ld.ring[i] = malloc(sizeof(*ld.ring[i]));
        if (ld.ring[i] == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        ld.ring[i]->n = 0;
    }
    pthread_mutex_init(&ld.mutex, NULL);
    pthread_cond_init(&ld.cond, NULL);
    ld.threaded = pthread_create(&thread, NULL, inserter_main, &ld) == 0;
    for (int i = 0; i < resp->n_issuers && rc == UTIL_OK; i++) {
        ld.issuer = i;
        rc = store_cert_iterate_blocking(store, resp->issuers[i].store_id, STORE_ITER_ALL_ANY_ORDER,
                                         read_one, &ld);
        if (rc == 1)
            rc = UTIL_ENOMEM; /* read_one stopped the scan */
    }
    /* The last, partial batch; then the inserter drains the ring and ends. */
    if (rc == UTIL_OK && ld.ring[ld.head % LOAD_BATCHES]->n > 0)
        (void)publish(&ld); /* its error is ld.rc, read below */
    if (ld.threaded) {
        pthread_mutex_lock(&ld.mutex);
        ld.finished = 1;
        pthread_cond_broadcast(&ld.cond);
        while (ld.tail != ld.head) /* the inserter drains the ring, then builds its half */
            pthread_cond_wait(&ld.cond, &ld.mutex);
        pthread_mutex_unlock(&ld.mutex);
        if (rc == UTIL_OK && ld.rc == UTIL_OK)
            rc = ocsp__index_build(ld.index, 0, 2);
        (void)pthread_join(thread, NULL); /* our own joinable thread */
        if (rc == UTIL_OK)
            rc = ld.build_rc;
    } else if (rc == UTIL_OK && ld.rc == UTIL_OK) {
        rc = ocsp__index_build(ld.index, 0, 1);
    }
    if (rc == UTIL_OK)
        rc = ld.rc;
    pthread_mutex_destroy(&ld.mutex);
    pthread_cond_destroy(&ld.cond);
out:
    for (int i = 0; i < LOAD_BATCHES; i++)
        free(ld.ring[i]);
    return rc;
}
