/* SPDX-License-Identifier: Apache-2.0 */
/* The revocation pipeline's thread: catch-up at start, the live change feed, the SLA marks and the
 * deadline alarms, and the graceful drain at stop.
 *
 * DESIGN
 * - Invariant: every committed change is reflected in OCSP at once and in a published CRL within
 *   [crl] coalesce, whether it was written before the start, while running, by another process,
 *   or just before a stop. The store is the only memory; nothing is remembered only in a timer:
 *   - written before the start (server down, `pkiva import`, a kill -9 between commit and CRL):
 *     the OCSP index is loaded from the store at start_after, so OCSP answers it at once, and the
 *     SLA rows up to start_after are marked visible in OCSP when the feed starts. Each subscriber
 *     with published_upto (the CRL publisher: the feed id its latest published CRLs reflect, kept
 *     in the store's CRL history) is replayed the changes after that position, so that the CRL
 *     catches up within coalesce of the start (never left to the periodic interval). A subscriber
 *     that ignores registrations of good certificates (skip_issue: the CRL publisher) is read
 *     only the other changes, through a partial index: every revocation, unrevocation and
 *     registration of a revoked certificate still reaches it, and a start after an import of
 *     millions of good certificates replays a handful of rows instead of millions;
 *   - written while running, by anyone: read from the feed every poll_ms, sooner when inotify
 *     sees the database written, and handed to every subscriber in feed order;
 *   - written just before a stop: feed_stop reads the feed once more and delivers what it finds
 *     before the subscribers are stopped (the CRL publisher then publishes pending work within
 *     its grace period); what still cannot be finished is caught up at the next start.
 * - Order and re-delivery: a subscriber that cannot take a change (OCSP re-sign backlog full)
 *   stops the walk; the same change is delivered again to every subscriber shortly after, so
 *   subscribers treat re-delivery as a no-op. Nothing is skipped.
 * - Threads: one feed thread with its own store connection; feed_mark_visible and the stats are
 *   the only entry points from other threads (a mutex, atomics).
 * - Failures: a store that cannot be read is reopened every turn, store_ok drops to 0 (/readyz),
 *   and the position is kept, so nothing is lost when it comes back.
 * - Cluster (issue 16): each turn the thread reports this node's OCSP-visible position to the
 *   store's node rows (at least once a second) and reads the lowest position of the other live
 *   nodes; OCSP SLA marks never go past it, so "visible in OCSP" means on every live node. The
 *   lag (/readyz) is the age of the start of the last turn that found everything committed
 *   applied: it grows whether the feed is behind, blocked, or stuck on a hanging connection. */
#include "feed.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>
#include <util/util.h>

#define MOD "feed"
#define FEED_BATCH 1000
#define FEED_PATH_MAX 4096
#define FEED_DEADLINE_CHECK_MS 2000
#define FEED_DEADLINE_LOG_MS 30000
#define FEED_STOP_DRAIN_MS 2000 /* feed_stop delivers what it can read within this */
/* The start-up replay runs in slices of this long, one per turn, so that the turns between them
 * keep confirming that OCSP is in step with the store (the feed lag of /readyz) however long the
 * replay of a large import to the CRL publisher takes. */
#define FEED_REPLAY_SLICE_MS 500

struct feed {
    char store_path[FEED_PATH_MAX];
    int poll_ms;
    int64_t start_after;
    int64_t deadline_ms, warn_ms;
    int64_t issuer_ids[FEED_MAX_ISSUERS];
    int n_issuers;
    struct feed_subscriber subs[FEED_MAX_SUBSCRIBERS];
    int n_subs;
    void (*tick)(void *ctx);
    void *tick_ctx;
    char node_name[FEED_NODE_NAME_MAX];
    int64_t live_ms;
    int64_t reported_id, reported_mono; /* the feed thread's last node report */
    /* The lowest position of the other live nodes (INT64_MAX: none) as the last report read it,
     * as the report before read it, and when a report saw it rise (unix ms). */
    int64_t others_visible, others_before, others_rose_ms;
    int report_logged; /* a failed report was logged; quiet until one works */
    int64_t replay_from[FEED_MAX_SUBSCRIBERS]; /* where each start-up replay began */
    int64_t replay_read[FEED_MAX_SUBSCRIBERS]; /* changes its replay read from the store */

    pthread_t thread;
    int started;
    _Atomic int stopping;
    int wake_fd; /* eventfd: feed_stop interrupts the wait */

    _Atomic int store_ok, caught_up, backlog, past_deadline;
    _Atomic int64_t head, applied, oldest_pending_ms, in_sync_mono, node_id;

    pthread_mutex_t visible_mutex; /* guards the two fields below */
    int64_t visible_id, visible_at_ms;
};

int feed_new(const struct feed_config *cfg, struct feed **out)
{
    struct feed *feed = NULL;
    *out = NULL;
    if (cfg == NULL || cfg->store_path == NULL || cfg->store_path[0] == '\0' ||
        strlen(cfg->store_path) >= FEED_PATH_MAX || cfg->poll_ms <= 0 || cfg->n_issuers < 0 ||
        cfg->n_issuers > FEED_MAX_ISSUERS || (cfg->n_issuers > 0 && cfg->issuer_ids == NULL) ||
        cfg->n_subscribers < 0 || cfg->n_subscribers > FEED_MAX_SUBSCRIBERS ||
        (cfg->n_subscribers > 0 && cfg->subscribers == NULL) || cfg->deadline_s <= 0 ||
        (cfg->node_name != NULL && strlen(cfg->node_name) >= FEED_NODE_NAME_MAX) ||
        cfg->live_ms < 0)
        return UTIL_EINVAL;
    for (int i = 0; i < cfg->n_subscribers; i++)
        if (cfg->subscribers[i].apply == NULL)
            return UTIL_EINVAL;
    feed = calloc(1, sizeof(*feed));
    if (feed == NULL)
        return UTIL_ENOMEM;
    feed->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (feed->wake_fd < 0) {
        int err = util_errno(errno);
        free(feed);
        return err;
    }
    (void)snprintf(feed->store_path, sizeof(feed->store_path), "%s", cfg->store_path);
    feed->poll_ms = cfg->poll_ms;
    feed->start_after = cfg->start_after;
    feed->deadline_ms = cfg->deadline_s * 1000;
    feed->warn_ms = cfg->warn_s * 1000;
    if (cfg->n_issuers > 0)
        memcpy(feed->issuer_ids, cfg->issuer_ids, (size_t)cfg->n_issuers * sizeof(int64_t));
    feed->n_issuers = cfg->n_issuers;
    if (cfg->n_subscribers > 0)
        memcpy(feed->subs, cfg->subscribers, (size_t)cfg->n_subscribers * sizeof(feed->subs[0]));
    feed->n_subs = cfg->n_subscribers;
    feed->tick = cfg->tick;
    feed->tick_ctx = cfg->tick_ctx;
    if (cfg->node_name != NULL)
        (void)snprintf(feed->node_name, sizeof(feed->node_name), "%s", cfg->node_name);
    feed->live_ms = cfg->live_ms > 0 ? cfg->live_ms : 5000;
    feed->reported_id = -1;
    feed->others_visible = INT64_MAX;
    feed->others_before = INT64_MAX;
    atomic_init(&feed->in_sync_mono, util_mono_ms()); /* the index was just loaded at start_after */
    atomic_init(&feed->node_id, 0);
    atomic_init(&feed->store_ok, 1);
    atomic_init(&feed->head, cfg->start_after);
    atomic_init(&feed->applied, cfg->start_after);
    feed->visible_id = cfg->start_after;
    feed->visible_at_ms = util_now_ms();
    pthread_mutex_init(&feed->visible_mutex, NULL);
    *out = feed;
    return UTIL_OK;
}

void feed_free(struct feed *feed)
{
    if (feed == NULL)
        return;
    feed_stop(feed);
    (void)close(feed->wake_fd); /* nothing to flush */
    pthread_mutex_destroy(&feed->visible_mutex);
    free(feed);
}

void feed_mark_visible(struct feed *feed, int64_t feed_id)
{
    if (feed == NULL)
        return;
    pthread_mutex_lock(&feed->visible_mutex);
    if (feed_id > feed->visible_id) {
        feed->visible_id = feed_id;
        feed->visible_at_ms = util_now_ms();
    }
    pthread_mutex_unlock(&feed->visible_mutex);
}

/* ---- delivery ------------------------------------------------------------------------------- */

struct batch {
    struct feed *feed;
    int only;      /* -1: every subscriber; else this one (catch-up replay) */
    int64_t upto;  /* deliver changes with id <= upto only (INT64_MAX: all) */
    int64_t last;  /* last change taken by everyone concerned */
    int blocked;   /* a subscriber refused: deliver again from last + 1 */
    int past_upto; /* a change beyond upto was seen: the walk is done */
};

static int deliver(void *ctx, const struct store_change *change)
{
    struct batch *b = ctx;
    if (change->id > b->upto) {
        b->past_upto = 1;
        return 1;
    }
    for (int i = 0; i < b->feed->n_subs; i++) {
        const struct feed_subscriber *s = &b->feed->subs[i];
        if (b->only >= 0 && i != b->only)
            continue;
        if (s->apply(s->ctx, change) != UTIL_OK) {
            b->blocked = 1;
            return 1; /* stop the walk; delivered again next turn */
        }
    }
    b->last = change->id;
    return 0;
}

/* Delivers the changes in (*pos, upto] (to one subscriber, or all with only = -1) in batches, at
 * most until deadline_mono (0: no limit). A subscriber with skip_issue (only >= 0) is read only
 * the changes other than registrations of good certificates. Advances *pos. Returns 0 when
 * everything up to upto (or the end of the feed) was taken, 1 when a subscriber refused or time
 * ran out, or a store error. */
static int deliver_range(struct feed *feed, struct store *store, int only, int64_t *pos,
                         int64_t upto, int64_t deadline_mono)
{
    unsigned opts = only >= 0 && feed->subs[only].skip_issue ? STORE_FEED_SKIP_ISSUE : 0;
    for (;;) {
        struct batch b = {feed, only, upto, *pos, 0, 0};
        int rc = store_feed_read_opt_blocking(store, *pos, FEED_BATCH, opts, deliver, &b);
        if (rc < 0)
            return rc;
        if (only >= 0)
            feed->replay_read[only] += rc;
        *pos = b.last;
        if (b.blocked)
            return 1;
        if (b.past_upto || rc < FEED_BATCH)
            return 0;
        if (atomic_load(&feed->stopping) && deadline_mono == 0)
            return 1;
        if (deadline_mono != 0 && util_mono_ms() >= deadline_mono)
            return 1;
    }
}

/* ---- SLA bookkeeping ------------------------------------------------------------------------ */

static int mark_ocsp_upto(struct feed *feed, struct store *store, int64_t upto, int64_t at_ms)
{
    for (int i = 0; i < feed->n_issuers; i++) {
        int rc =
            store_sla_mark_upto_blocking(store, feed->issuer_ids[i], upto, STORE_SLA_OCSP, at_ms);
        if (rc != UTIL_OK)
            return rc;
    }
    return UTIL_OK;
}

struct deadline_scan {
    int64_t now_ms, deadline_ms, warn_ms;
    int near, past, open;
    int64_t worst_left_ms, worst_feed_id, oldest_received_ms;
};

static int deadline_row(void *ctx, const struct store_sla_row *row)
{
    struct deadline_scan *d = ctx;
    int64_t left = row->received_at_ms + d->deadline_ms - d->now_ms;
    if (d->open++ == 0 || row->received_at_ms < d->oldest_received_ms)
        d->oldest_received_ms = row->received_at_ms;
    if (left <= 0)
        d->past++;
    else if (left <= d->warn_ms)
        d->near++;
    else
        return 0;
    if (d->near + d->past == 1 || left < d->worst_left_ms) {
        d->worst_left_ms = left;
        d->worst_feed_id = row->feed_id;
    }
    return 0;
}

/* Updates the backlog gauges and, when loud is set, logs revocations close to (or past) the
 * deadline and not yet in a published CRL. */
static void check_deadlines(struct feed *feed, struct store *store, int loud)
{
    struct deadline_scan d;
    memset(&d, 0, sizeof(d));
    d.now_ms = util_now_ms();
    d.deadline_ms = feed->deadline_ms;
    d.warn_ms = feed->warn_ms;
    if (store_sla_list_blocking(store, 1, 100000, deadline_row, &d) != UTIL_OK)
        return; /* the next check retries; store errors are reported by the feed loop */
    atomic_store(&feed->backlog, d.open);
    atomic_store(&feed->past_deadline, d.past);
    atomic_store(&feed->oldest_pending_ms, d.open ? d.now_ms - d.oldest_received_ms : 0);
    if (!loud)
        return;
    if (d.past > 0)
        UTIL_ERROR(MOD,
                   "REVOCATION DEADLINE MISSED: %d revocation(s) past the %lld s deadline "
                   "and not yet in a published CRL (worst: change %lld, %lld s late); %d "
                   "more within %lld s of it. See `pkiva sla`.",
                   d.past, (long long)(feed->deadline_ms / 1000), (long long)d.worst_feed_id,
                   (long long)(-d.worst_left_ms / 1000), d.near, (long long)(feed->warn_ms / 1000));
    else if (d.near > 0)
        UTIL_WARN(MOD,
                  "REVOCATION DEADLINE NEAR: %d revocation(s) not yet in a published CRL "
                  "within %lld s of the deadline (first: change %lld, %lld s left). See "
                  "`pkiva sla`.",
                  d.near, (long long)(feed->warn_ms / 1000), (long long)d.worst_feed_id,
                  (long long)(d.worst_left_ms / 1000));
}

/* ---- the cluster-wide SLA ------------------------------------------------------------------- */

/* Reports this node's position (the feed id visible in OCSP) when it moved or FEED_REPORT_MS
 * passed, then reads the lowest position of the other live nodes (feed->others_visible). A
 * failure is logged once and retried next turn; it does not stop the feed (OCSP stays current,
 * only the cluster-wide marks wait). */
static void cluster_report(struct feed *feed, struct store *store, int64_t visible)
{
    int64_t now_mono = util_mono_ms();
    int64_t now_ms = util_now_ms();
    int64_t id = 0, others = 0;
    int live = 0;
    int rc = UTIL_OK;

    if (feed->node_name[0] == '\0')
        return;
    if (visible == feed->reported_id && now_mono - feed->reported_mono < FEED_REPORT_MS)
        return;
    rc = store_node_report_blocking(store, feed->node_name, visible, now_ms, &id);
    if (rc == UTIL_OK)
        rc = store_node_min_applied_blocking(store, now_ms - feed->live_ms, id, &others, &live);
    if (rc != UTIL_OK) {
        if (!feed->report_logged)
            UTIL_WARN(MOD, "cannot report this node's feed position to the store: %s (retrying)",
                      util_strerror(rc));
        feed->report_logged = 1;
        return;
    }
    feed->report_logged = 0;
    feed->others_before = feed->others_visible;
    if (others > feed->others_visible)
        feed->others_rose_ms = now_ms;
    feed->others_visible = others;
    atomic_store(&feed->node_id, id);
    feed->reported_id = visible;
    feed->reported_mono = now_mono;
}

/* The OCSP SLA marks up to visible (made visible here at visible_at), but never past what every
 * other live node answers: a revocation is visible in OCSP when it is visible on all of them. Its
 * time is when the last of them made it visible: here, at visible_at; or, when the others reached
 * it only after the report before the last one, when the last report saw them rise (at most a
 * report interval late). */
static int mark_cluster_upto(struct feed *feed, struct store *store, int64_t visible,
                             int64_t visible_at, int64_t *marked_upto)
{
    int64_t upto = visible < feed->others_visible ? visible : feed->others_visible;
    int64_t at = visible_at;
    int rc = UTIL_OK;

    if (upto <= *marked_upto)
        return UTIL_OK;
    if (feed->others_before < upto && feed->others_rose_ms > at)
        at = feed->others_rose_ms;
    rc = mark_ocsp_upto(feed, store, upto, at);
    if (rc == UTIL_OK)
        *marked_upto = upto;
    return rc;
}

/* ---- waiting for writes --------------------------------------------------------------------- */

/* The feed is read every poll_ms; on top of that, inotify on the store's folder wakes the thread
 * as soon as any process on this host appends to the database (its WAL file is written), so a
 * revocation recorded by `pkiva revoke` is picked up in milliseconds rather than on the next
 * tick. */
struct watch {
    int fd; /* inotify descriptor, -1 when unavailable (then polling only) */
    char db_name[FEED_PATH_MAX];
    char wal_name[FEED_PATH_MAX + 8];
};

static void watch_open(struct watch *w, const char *store_path)
{
    char dir[FEED_PATH_MAX];
    const char *slash = strrchr(store_path, '/');
    /* A database server (a postgresql:// URI) is written by other hosts too: no file to watch. */
    if (strstr(store_path, "://") != NULL) {
        w->fd = -1;
        UTIL_INFO(MOD, "the store is a database server: the change feed is polled every tick");
        return;
    }
    if (slash == NULL) {
        (void)snprintf(dir, sizeof(dir), ".");
        (void)snprintf(w->db_name, sizeof(w->db_name), "%s", store_path);
    } else {
        (void)snprintf(dir, sizeof(dir), "%.*s", (int)(slash - store_path), store_path);
        (void)snprintf(w->db_name, sizeof(w->db_name), "%s", slash + 1);
    }
    (void)snprintf(w->wal_name, sizeof(w->wal_name), "%s-wal", w->db_name);
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd >= 0 && inotify_add_watch(w->fd, dir[0] ? dir : "/", IN_MODIFY | IN_CREATE) < 0) {
        (void)close(w->fd); /* polling alone still works */
        w->fd = -1;
    }
    if (w->fd < 0)
        UTIL_WARN(MOD, "no inotify on %s (%s): the change feed is polled every tick only", dir,
                  strerror(errno));
}

/* Waits up to timeout_ms, less if the database was written or wake_fd was signalled (stop). */
static void watch_wait(struct watch *w, int wake_fd, int timeout_ms)
{
    struct pollfd p[2] = {{wake_fd, POLLIN, 0}, {w->fd, POLLIN, 0}};
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    int woken = 0;
    while (!woken && poll(p, w->fd >= 0 ? 2 : 1, timeout_ms) > 0) {
        ssize_t n;
        if (p[0].revents != 0)
            return; /* stopping: the counter is left set, later waits return at once too */
        while ((n = read(w->fd, buf, sizeof(buf))) > 0) {
            for (char *at = buf; at < buf + n;) {
                const struct inotify_event *e = (const struct inotify_event *)at;
                if (e->len > 0 &&
                    (strcmp(e->name, w->wal_name) == 0 || strcmp(e->name, w->db_name) == 0))
                    woken = 1;
                at += sizeof(*e) + e->len;
            }
        }
        /* Other files of the folder changed: keep waiting, but only for a short while more. */
        timeout_ms = timeout_ms > 10 ? timeout_ms / 2 : 0;
    }
}

/* ---- the thread ----------------------------------------------------------------------------- */

/* The start-up duties, once the store is open: OCSP SLA marks up to start_after, then the replay
 * of what each subscriber's durable output misses. Returns 0 when done, 1 to try again later (a
 * subscriber refused), or a store error. *replay_pos holds each subscriber's progress. */
static int catch_up(struct feed *feed, struct store *store, int64_t *replay_pos, int *marked)
{
    if (!*marked) {
        /* The rest, when another live node is behind, is marked by the turns that follow. */
        int64_t upto =
            feed->start_after < feed->others_visible ? feed->start_after : feed->others_visible;
        int rc = mark_ocsp_upto(feed, store, upto, util_now_ms());
        if (rc != UTIL_OK)
            return rc;
        *marked = 1;
    }
    for (int i = 0; i < feed->n_subs; i++) {
        int rc;
        if (replay_pos[i] >= feed->start_after)
            continue;
        rc = deliver_range(feed, store, i, &replay_pos[i], feed->start_after,
                           util_mono_ms() + FEED_REPLAY_SLICE_MS);
        if (rc < 0 || rc == 1)
            return rc;
        UTIL_INFO(MOD,
                  "%s caught up: changes %lld..%lld committed before the start replayed "
                  "(%lld read from the store%s)",
                  feed->subs[i].name, (long long)feed->replay_from[i] + 1,
                  (long long)feed->start_after, (long long)feed->replay_read[i],
                  feed->subs[i].skip_issue ? ", registrations of good certificates skipped" : "");
        replay_pos[i] = feed->start_after;
    }
    return UTIL_OK;
}

static void *feed_main(void *arg)
{
    struct feed *feed = arg;
    struct store *store = NULL;
    int64_t last = feed->start_after, sla_marked = 0;
    int64_t replay_pos[FEED_MAX_SUBSCRIBERS];
    int64_t next_deadline_check = 0, next_deadline_log = 0, last_turn = 0;
    int store_error_logged = 0, marked = 0, caught_up = 0;
    struct watch watch;

    util_thread_name("feed", -1);
    for (int i = 0; i < feed->n_subs; i++) {
        int64_t pos = feed->subs[i].published_upto ? feed->subs[i].published_upto(feed->subs[i].ctx)
                                                   : feed->start_after;
        replay_pos[i] = pos < 0 ? 0 : pos;
        feed->replay_from[i] = replay_pos[i];
    }
    watch_open(&watch, feed->store_path);
    for (;;) {
        int stopping = atomic_load(&feed->stopping);
        int blocked = 0, rc = UTIL_OK;
        int64_t head = 0, visible, visible_at;
        int64_t turn_mono = util_mono_ms();

        if (store == NULL)
            rc = store_open_blocking(feed->store_path, STORE_OPEN_STALE_READS, &store);
        if (rc == UTIL_OK) {
            pthread_mutex_lock(&feed->visible_mutex);
            visible = feed->visible_id;
            pthread_mutex_unlock(&feed->visible_mutex);
            cluster_report(feed, store, visible);
        }
        if (rc == UTIL_OK && !caught_up) {
            rc = catch_up(feed, store, replay_pos, &marked);
            if (rc == 1) {
                blocked = 1;
                rc = UTIL_OK;
            } else if (rc == UTIL_OK) {
                caught_up = 1;
                atomic_store(&feed->caught_up, 1);
            }
        }
        if (rc == UTIL_OK)
            rc = store_feed_head_blocking(store, &head);
        if (rc == UTIL_OK && caught_up && last < head) {
            /* At a stop: one last drain, bounded in time. */
            rc = deliver_range(feed, store, -1, &last, head,
                               stopping ? util_mono_ms() + FEED_STOP_DRAIN_MS : 0);
            blocked = rc == 1;
            if (rc == 1)
                rc = UTIL_OK;
        }
        if (rc == UTIL_OK) {
            atomic_store(&feed->head, head);
            atomic_store(&feed->applied, last);
            /* Everything committed before this turn began is applied (during the start-up
             * replay too: OCSP was loaded at start_after, the replay only feeds the CRLs). */
            if (last >= head)
                atomic_store(&feed->in_sync_mono, turn_mono);
            if (!atomic_load(&feed->store_ok) && store_error_logged)
                UTIL_WARN(MOD, "store available again");
            atomic_store(&feed->store_ok, 1);
            store_error_logged = 0;
        } else {
            atomic_store(&feed->store_ok, 0);
            if (!store_error_logged)
                UTIL_ERROR(MOD, "reading the change feed failed: %s (retrying)", util_strerror(rc));
            store_error_logged = 1;
            store_close(store);
            store = NULL;
        }
        /* Record, for the deadline report, when revocations became visible in OCSP. */
        pthread_mutex_lock(&feed->visible_mutex);
        visible = feed->visible_id;
        visible_at = feed->visible_at_ms;
        pthread_mutex_unlock(&feed->visible_mutex);
        if (store != NULL && marked)
            (void)mark_cluster_upto(feed, store, visible, visible_at,
                                    &sla_marked); /* a failure is retried next turn */
        if (stopping) {
            if (blocked || last < head)
                UTIL_WARN(MOD,
                          "stopping with changes %lld..%lld not delivered: the next start "
                          "catches them up",
                          (long long)last + 1, (long long)head);
            break;
        }
        if (store != NULL && util_mono_ms() >= next_deadline_check) {
            int loud = util_mono_ms() >= next_deadline_log;
            check_deadlines(feed, store, loud);
            next_deadline_check = util_mono_ms() + FEED_DEADLINE_CHECK_MS;
            if (loud)
                next_deadline_log = util_mono_ms() + FEED_DEADLINE_LOG_MS;
        }
        if (feed->tick != NULL)
            feed->tick(feed->tick_ctx);
        /* At most one turn per 2 ms: a busy store (TSA group commits) must not spin the feed. */
        if (util_mono_ms() - last_turn < 2)
            (void)nanosleep(&(struct timespec){0, 2 * 1000000L}, NULL); /* short pause */
        last_turn = util_mono_ms();
        if (atomic_load(&feed->stopping))
            continue; /* the drain turn */
        if (!blocked && store != NULL)
            watch_wait(&watch, feed->wake_fd, feed->poll_ms);
        else /* backlog: soon; store down: retry at a slower pace */
            watch_wait(&(struct watch){.fd = -1}, feed->wake_fd, store ? 20 : 200);
    }
    if (watch.fd >= 0)
        (void)close(watch.fd); /* inotify descriptor: nothing to flush */
    store_close(store);
    return NULL;
}

int feed_start(struct feed *feed)
{
    if (feed == NULL)
        return UTIL_EINVAL;
    if (feed->started)
        return UTIL_OK;
    if (pthread_create(&feed->thread, NULL, feed_main, feed) != 0) {
        UTIL_ERROR(MOD, "cannot start the feed thread");
        return UTIL_ENOMEM;
    }
    feed->started = 1;
    return UTIL_OK;
}

void feed_stop(struct feed *feed)
{
    if (feed == NULL || !feed->started)
        return;
    atomic_store(&feed->stopping, 1);
    (void)eventfd_write(feed->wake_fd, 1);  /* cannot fail short of overflowing the counter */
    (void)pthread_join(feed->thread, NULL); /* our own joinable thread */
    feed->started = 0;
}

/* ---- stats ---------------------------------------------------------------------------------- */

void feed_stats_get(const struct feed *feed, struct feed_stats *out)
{
    struct feed *f = (struct feed *)feed; /* the mutex is not part of the observable state */
    memset(out, 0, sizeof(*out));
    if (feed == NULL)
        return;
    out->store_ok = atomic_load(&f->store_ok);
    out->head = atomic_load(&f->head);
    out->applied = atomic_load(&f->applied);
    out->caught_up = atomic_load(&f->caught_up);
    out->backlog = atomic_load(&f->backlog);
    out->past_deadline = atomic_load(&f->past_deadline);
    out->oldest_pending_ms = atomic_load(&f->oldest_pending_ms);
    out->lag_ms = util_mono_ms() - atomic_load(&f->in_sync_mono);
    if (out->lag_ms < 0)
        out->lag_ms = 0;
    out->node_id = atomic_load(&f->node_id);
    pthread_mutex_lock(&f->visible_mutex);
    out->visible = f->visible_id;
    pthread_mutex_unlock(&f->visible_mutex);
}

int feed_metrics(const struct feed *feed, char *buf, size_t len)
{
    struct feed_stats s;
    int n;
    feed_stats_get(feed, &s);
    n = snprintf(buf, len,
                 "# TYPE pkiva_feed_lag gauge\n"
                 "pkiva_feed_lag %lld\n"
                 "# TYPE pkiva_feed_visible_id gauge\n"
                 "pkiva_feed_visible_id %lld\n"
                 "# TYPE pkiva_feed_caught_up gauge\n"
                 "pkiva_feed_caught_up %d\n"
                 "# TYPE pkiva_feed_store_ok gauge\n"
                 "pkiva_feed_store_ok %d\n"
                 "# TYPE pkiva_revocation_backlog gauge\n"
                 "pkiva_revocation_backlog %d\n"
                 "# TYPE pkiva_revocation_past_deadline gauge\n"
                 "pkiva_revocation_past_deadline %d\n"
                 "# TYPE pkiva_revocation_oldest_pending_seconds gauge\n"
                 "pkiva_revocation_oldest_pending_seconds %.3f\n"
                 "# TYPE pkiva_feed_lag_seconds gauge\n"
                 "pkiva_feed_lag_seconds %.3f\n",
                 (long long)(s.head > s.visible ? s.head - s.visible : 0), (long long)s.visible,
                 s.caught_up, s.store_ok, s.backlog, s.past_deadline,
                 (double)s.oldest_pending_ms / 1000.0, (double)s.lag_ms / 1000.0);
    if (n < 0 || (size_t)n >= len)
        return UTIL_EINVAL;
    return n;
}
