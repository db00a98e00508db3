/* SPDX-License-Identifier: Apache-2.0 */
/* The bounded worker pool behind HSM signing and store access: named threads, one FIFO with a hard
 * limit, and per-loop ports that carry results back to the loop thread that submitted the job.
 *
 * DESIGN
 * - Threads: cfg->threads workers block on one condition variable; loop threads only lock the queue
 *   mutex long enough to append (never wait on it for a job to finish), and signal the condition
 *   only when a worker waits on it, after the unlock (a worker woken under the mutex would first
 *   block on it: a wasted wake-up and context switch per job under load).
 * - Bound: at most queue_max jobs wait; a submit past that fails at once with UTIL_EBUSY and is
 *   counted, so overload turns into fast tryLater/503 answers instead of latency.
 * - Ports: a port owns a uv_async_t on its loop and a list of finished jobs. A worker appends the
 *   finished job and calls uv_async_send while holding the port's mutex, so that a concurrent
 *   util_pool_port_close (which takes the same mutex before uv_close) can never race a send on a
 *   closing handle. Each job in flight holds a reference on its port; the port's memory is released
 *   when both its handle is closed and no job refers to it.
 * - Every job gets exactly one done (as libuv's after_work_cb with UV_ECANCELED). A job whose port
 *   was closed gets done(arg, UTIL_ECLOSED) without its result: on the worker thread that finished
 *   it, or, if it had finished but not yet been delivered, on the thread calling
 *   util_pool_port_close. Its loop is gone, so such a done only frees the job.
 * - A completion expected by a thread of its own (util_pool_port_expect) is a job without work that
 *   takes the same path: a reference on the port, then job_finish from the thread that completes it.
 * - Shutdown: util_pool_free fails waiting jobs with UTIL_ECLOSED, lets running jobs finish and joins. */
#define _GNU_SOURCE
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pool_job {
    struct pool_job *next;
    util_pool_work_fn work;
    util_pool_done_fn done;
    void *arg;
    struct util_pool_port *port;
    int result;
};

struct util_pool_port {
    uv_async_t async;
    pthread_mutex_t mutex;
    struct pool_job *head, *tail; /* finished jobs waiting for the loop */
    int refs;                     /* jobs in flight that will report here */
    int closed;                   /* util_pool_port_close was called */
    int handle_closed;            /* the uv handle's close callback ran */
};

struct util_pool {
    struct util_pool_config cfg;
    char name[16];
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    struct pool_job *head, *tail;
    int queued;
    int idle; /* workers waiting on cond */
    int stopping;
    pthread_t *threads;
    int started;
    _Atomic int depth;
    _Atomic uint64_t rejected;
    /* start-up handshake for thread_init results */
    int init_done, init_failed;
    pthread_cond_t init_cond;
};

struct pool_thread_arg {
    struct util_pool *pool;
    int index;
};

static void port_unref(struct util_pool_port *port)
{
    int release;
    pthread_mutex_lock(&port->mutex);
    port->refs--;
    release = port->refs == 0 && port->handle_closed;
    pthread_mutex_unlock(&port->mutex);
    if (release) {
        pthread_mutex_destroy(&port->mutex);
        free(port);
    }
}

/* Hands a finished job to its submitter: on its port's loop, or right here without a port. */
static void job_finish(struct pool_job *job)
{
    struct util_pool_port *port = job->port;
    if (port == NULL) {
        if (job->done != NULL)
            job->done(job->arg, job->result);
        free(job);
        return;
    }
    pthread_mutex_lock(&port->mutex);
    if (port->closed) {
        pthread_mutex_unlock(&port->mutex);
        /* The loop is gone: cancelled here, on this worker thread (see DESIGN). */
        if (job->done != NULL)
            job->done(job->arg, UTIL_ECLOSED);
        free(job);
        port_unref(port);
        return;
    }
    job->next = NULL;
    if (port->tail != NULL)
        port->tail->next = job;
    else
        port->head = job;
    port->tail = job;
    /* Sent under the mutex: see DESIGN. uv_async_send only fails on a closing handle. */
    (void)uv_async_send(&port->async);
    pthread_mutex_unlock(&port->mutex);
}

static void *pool_thread(void *opaque)
{
    struct pool_thread_arg *targ = opaque;
    struct util_pool *pool = targ->pool;
    void *state = NULL;
    int rc = 0;

    util_thread_name(pool->name, targ->index);
    free(targ);

    if (pool->cfg.thread_init != NULL)
        rc = pool->cfg.thread_init(pool->cfg.ctx, &state);
    pthread_mutex_lock(&pool->mutex);
    pool->init_done++;
    if (rc != 0)
        pool->init_failed = rc;
    pthread_cond_broadcast(&pool->init_cond);
    pthread_mutex_unlock(&pool->mutex);
    if (rc != 0)
        return NULL;

    for (;;) {
        struct pool_job *job;
        pthread_mutex_lock(&pool->mutex);
        while (pool->head == NULL && !pool->stopping) {
            pool->idle++;
            pthread_cond_wait(&pool->cond, &pool->mutex);
            pool->idle--;
        }
        if (pool->head == NULL) {
            pthread_mutex_unlock(&pool->mutex);
            break;
        }
        job = pool->head;
        pool->head = job->next;
        if (pool->head == NULL)
            pool->tail = NULL;
        pool->queued--;
        atomic_store_explicit(&pool->depth, pool->queued, memory_order_relaxed);
        pthread_mutex_unlock(&pool->mutex);

        job->result = job->work(state, job->arg);
        job_finish(job);
    }
    if (pool->cfg.thread_fini != NULL)
        pool->cfg.thread_fini(pool->cfg.ctx, state);
    return NULL;
}

static void pool_stop_threads(struct util_pool *pool)
{
    struct pool_job *waiting;
    pthread_mutex_lock(&pool->mutex);
    pool->stopping = 1;
    waiting = pool->head;
    pool->head = pool->tail = NULL;
    pool->queued = 0;
    atomic_store(&pool->depth, 0);
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->mutex);
    while (waiting != NULL) {
        struct pool_job *next = waiting->next;
        waiting->result = UTIL_ECLOSED;
        job_finish(waiting);
        waiting = next;
    }
    for (int i = 0; i < pool->started; i++)
        (void)pthread_join(pool->threads[i], NULL); /* our own joinable threads */
    pool->started = 0;
}

int util_pool_new(const struct util_pool_config *cfg, struct util_pool **out)
{
    int rc = UTIL_OK;
    struct util_pool *pool = NULL;

    if (cfg->threads < 1 || cfg->queue_max < 1)
        return UTIL_EINVAL;
    pool = calloc(1, sizeof(*pool));
    if (pool == NULL)
        return UTIL_ENOMEM;
    pool->cfg = *cfg;
    (void)snprintf(pool->name, sizeof(pool->name), "%s", cfg->name ? cfg->name : "pool");
    pool->cfg.name = pool->name;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->cond, NULL);
    pthread_cond_init(&pool->init_cond, NULL);
    pool->threads = calloc((size_t)cfg->threads, sizeof(pthread_t));
    if (pool->threads == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < cfg->threads; i++) {
        struct pool_thread_arg *targ = malloc(sizeof(*targ));
        if (targ == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        targ->pool = pool;
        targ->index = i;
        if (pthread_create(&pool->threads[i], NULL, pool_thread, targ) != 0) {
            free(targ);
            rc = UTIL_ENOMEM;
            goto out;
        }
        pool->started++;
    }
    pthread_mutex_lock(&pool->mutex);
    while (pool->init_done < pool->started)
        pthread_cond_wait(&pool->init_cond, &pool->mutex);
    if (pool->init_failed != 0)
        rc = pool->init_failed;
    pthread_mutex_unlock(&pool->mutex);
out:
    if (rc != UTIL_OK) {
        util_pool_free(pool);
        return rc;
    }
    *out = pool;
    return UTIL_OK;
}

void util_pool_free(struct util_pool *pool)
{
    if (pool == NULL)
        return;
    pool_stop_threads(pool);
    pthread_mutex_destroy(&pool->mutex);
    pthread_cond_destroy(&pool->cond);
    pthread_cond_destroy(&pool->init_cond);
    free(pool->threads);
    free(pool);
}

static void port_async_cb(uv_async_t *handle)
{
    struct util_pool_port *port = handle->data;
    struct pool_job *job;

    pthread_mutex_lock(&port->mutex);
    job = port->head;
    port->head = port->tail = NULL;
    pthread_mutex_unlock(&port->mutex);
    while (job != NULL) {
        struct pool_job *next = job->next;
        if (job->done != NULL)
            job->done(job->arg, job->result);
        free(job);
        port_unref(port);
        job = next;
    }
}

static void port_close_cb(uv_handle_t *handle)
{
    struct util_pool_port *port = handle->data;
    int release;
    pthread_mutex_lock(&port->mutex);
    port->handle_closed = 1;
    release = port->refs == 0;
    pthread_mutex_unlock(&port->mutex);
    if (release) {
        pthread_mutex_destroy(&port->mutex);
        free(port);
    }
}

int util_pool_port_new(struct util_pool *pool, uv_loop_t *loop, struct util_pool_port **out)
{
    struct util_pool_port *port = calloc(1, sizeof(*port));
    (void)pool; /* ports are not tied to one pool: any pool may complete into them */
    if (port == NULL)
        return UTIL_ENOMEM;
    pthread_mutex_init(&port->mutex, NULL);
    if (uv_async_init(loop, &port->async, port_async_cb) != 0) {
        pthread_mutex_destroy(&port->mutex);
        free(port);
        return UTIL_EIO;
    }
    port->async.data = port;
    *out = port;
    return UTIL_OK;
}

void util_pool_port_close(struct util_pool_port *port)
{
    struct pool_job *job;
    if (port == NULL)
        return;
    pthread_mutex_lock(&port->mutex);
    port->closed = 1;
    job = port->head;
    port->head = port->tail = NULL;
    pthread_mutex_unlock(&port->mutex);
    /* Finished but undelivered jobs are cancelled here: the loop that wanted them is going away. */
    while (job != NULL) {
        struct pool_job *next = job->next;
        if (job->done != NULL)
            job->done(job->arg, UTIL_ECLOSED);
        free(job);
        port_unref(port);
        job = next;
    }
    uv_close((uv_handle_t *)&port->async, port_close_cb);
}

int util_pool_submit(struct util_pool *pool, struct util_pool_port *port, util_pool_work_fn work,
                     util_pool_done_fn done, void *arg)
{
    struct pool_job *job = malloc(sizeof(*job));
    int wake;
    if (job == NULL)
        return UTIL_ENOMEM;
    job->next = NULL;
    job->work = work;
    job->done = done;
    job->arg = arg;
    job->port = port;
    job->result = 0;

    pthread_mutex_lock(&pool->mutex);
    if (pool->stopping || pool->queued >= pool->cfg.queue_max) {
        int rc = pool->stopping ? UTIL_ECLOSED : UTIL_EBUSY;
        pthread_mutex_unlock(&pool->mutex);
        atomic_fetch_add_explicit(&pool->rejected, 1, memory_order_relaxed);
        free(job);
        return rc;
    }
    if (port != NULL) {
        pthread_mutex_lock(&port->mutex);
        port->refs++;
        pthread_mutex_unlock(&port->mutex);
    }
    if (pool->tail != NULL)
        pool->tail->next = job;
    else
        pool->head = job;
    pool->tail = job;
    pool->queued++;
    atomic_store_explicit(&pool->depth, pool->queued, memory_order_relaxed);
    wake = pool->idle > 0;
    pthread_mutex_unlock(&pool->mutex);
    /* After the unlock: a worker woken under the mutex would first block on it. No wake-up is
     * lost: a worker counts itself idle and waits under the mutex this submit held. */
    if (wake)
        pthread_cond_signal(&pool->cond);
    return UTIL_OK;
}

/* An expected completion is a pool job that no pool runs: job_finish delivers it like one. */
struct util_pool_completion {
    struct pool_job job; /* first: job_finish frees the job, which is the completion */
};

int util_pool_port_expect(struct util_pool_port *port, util_pool_done_fn done, void *arg,
                          struct util_pool_completion **out)
{
    struct util_pool_completion *c = NULL;
    int closed;

    *out = NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return UTIL_ENOMEM;
    c->job.done = done;
    c->job.arg = arg;
    c->job.port = port;
    pthread_mutex_lock(&port->mutex);
    closed = port->closed;
    if (!closed)
        port->refs++;
    pthread_mutex_unlock(&port->mutex);
    if (closed) {
        free(c);
        return UTIL_ECLOSED;
    }
    *out = c;
    return UTIL_OK;
}

void util_pool_complete(struct util_pool_completion *completion, int result)
{
    completion->job.result = result;
    job_finish(&completion->job);
}

void util_pool_completion_drop(struct util_pool_completion *completion)
{
    struct util_pool_port *port;
    if (completion == NULL)
        return;
    port = completion->job.port;
    free(completion);
    port_unref(port);
}

struct sync_wait {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int finished;
    int result;
    util_pool_work_fn work;
    void *arg;
};

static int sync_work(void *state, void *opaque)
{
    struct sync_wait *w = opaque;
    return w->work(state, w->arg);
}

static void sync_done(void *opaque, int result)
{
    struct sync_wait *w = opaque;
    pthread_mutex_lock(&w->mutex);
    w->finished = 1;
    w->result = result;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mutex);
}

int util_pool_run_sync(struct util_pool *pool, util_pool_work_fn work, void *arg)
{
    struct sync_wait w;
    int rc;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mutex, NULL);
    pthread_cond_init(&w.cond, NULL);
    w.work = work;
    w.arg = arg;
    rc = util_pool_submit(pool, NULL, sync_work, sync_done, &w);
    if (rc == UTIL_OK) {
        pthread_mutex_lock(&w.mutex);
        while (!w.finished)
            pthread_cond_wait(&w.cond, &w.mutex);
        rc = w.result;
        pthread_mutex_unlock(&w.mutex);
    }
    pthread_mutex_destroy(&w.mutex);
    pthread_cond_destroy(&w.cond);
    return rc;
}

int util_pool_queue_depth(const struct util_pool *pool)
{
    return atomic_load_explicit(&((struct util_pool *)pool)->depth, memory_order_relaxed);
}

uint64_t util_pool_rejected(const struct util_pool *pool)
{
    return atomic_load_explicit(&((struct util_pool *)pool)->rejected, memory_order_relaxed);
}
