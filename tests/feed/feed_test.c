/* SPDX-License-Identifier: Apache-2.0 */
/* feed/: the revocation pipeline over a real SQLite store (changes written before the start are
 * replayed to a subscriber whose durable output misses them, a refusing subscriber gets the same
 * change again and nothing is skipped, a stop delivers what was committed just before it, the
 * OCSP SLA marks are written at start), and the freshness contract arithmetic. */
#include <criterion/criterion.h>
#include <feed/feed.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <store/store.h>
#include <support.h>
#include <time.h>
#include <util/util.h>

static char dir[256], path[300];
static struct store *st;
static int64_t issuer;

static void setup(void)
{
    unsigned char der[16] = "fake-issuer";
    cr_assert_eq(ts_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/pkiva.db", dir);
    cr_assert_eq(store_open_blocking(path, STORE_OPEN_CREATE, &st), 0);
    cr_assert_eq(store_issuer_put_blocking(st, "ca", der, sizeof(der), &issuer), 0);
}

static void teardown(void)
{
    store_close(st);
    ts_rmrf(dir);
}

TestSuite(feed, .init = setup, .fini = teardown, .timeout = 60);

/* Registers serial {hi, n} as good; its feed id. */
static int64_t add_serial(unsigned char hi, unsigned char n)
{
    unsigned char serial[2] = {hi, n};
    struct store_cert_new cn = {.issuer_id = issuer,
                                .serial = serial,
                                .serial_len = 2,
                                .not_before = 1700000000,
                                .not_after = 1900000000,
                                .subject = "CN=t"};
    int64_t id = 0;
    cr_assert_eq(store_cert_add_blocking(st, &cn, &id), 0);
    return id;
}

static int64_t add(unsigned char n)
{
    return add_serial(0x10, n);
}

static int64_t revoke(unsigned char n)
{
    unsigned char serial[2] = {0x10, n};
    struct store_revocation r = {
        .issuer_id = issuer, .serial = serial, .serial_len = 2, .reason = 1, .actor = "test"};
    int64_t id = 0;
    cr_assert_eq(store_cert_revoke_blocking(st, &r, &id), 0);
    return id;
}

/* A subscriber that records the ids it took and can refuse the first offers of one change. */
struct recorder {
    pthread_mutex_t mutex;
    int64_t ids[256];
    int n;
    int64_t refuse_id; /* refuse this change ... */
    int refusals_left; /* ... this many times */
    int64_t published; /* published_upto */
};

static int record(void *ctx, const struct store_change *change)
{
    struct recorder *r = ctx;
    int rc = 0;
    pthread_mutex_lock(&r->mutex);
    if (change->id == r->refuse_id && r->refusals_left > 0) {
        r->refusals_left--;
        rc = UTIL_EBUSY;
    } else if (r->n < 256) {
        r->ids[r->n++] = change->id;
    }
    pthread_mutex_unlock(&r->mutex);
    return rc;
}

static int64_t upto(void *ctx)
{
    return ((struct recorder *)ctx)->published;
}

static int count(struct recorder *r)
{
    int n;
    pthread_mutex_lock(&r->mutex);
    n = r->n;
    pthread_mutex_unlock(&r->mutex);
    return n;
}

static void wait_count(struct recorder *r, int want)
{
    for (int i = 0; i < 1000 && count(r) < want; i++)
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    cr_assert_geq(count(r), want, "got %d changes, want %d", count(r), want);
}

static int durable_skip_issue; /* the durable subscriber's skip_issue (0 unless a test sets it) */

static struct feed *start(struct recorder *live, struct recorder *durable, int64_t start_after)
{
    struct feed_subscriber subs[2] = {{"live", record, NULL, live, 0},
                                      {"durable", record, upto, durable, durable_skip_issue}};
    struct feed_config fc = {path, 20, start_after, &issuer, 1,    43200, 3600,
                             subs, 2,  NULL,        NULL,    NULL, 0};
    struct feed *feed = NULL;
    cr_assert_eq(feed_new(&fc, &feed), 0);
    cr_assert_eq(feed_start(feed), 0);
    return feed;
}

Test(feed, changes_before_the_start_are_replayed_to_what_misses_them)
{
    struct recorder live = {.mutex = PTHREAD_MUTEX_INITIALIZER},
                    durable = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    int64_t head, r1, r2;
    struct feed *feed;

    add(1);
    add(2);
    r1 = revoke(1);
    /* Its durable output stops right before this revocation (a kill -9 before the CRL). */
    durable.published = r1 - 1;
    r2 = revoke(2);
    cr_assert_eq(store_feed_head_blocking(st, &head), 0);
    feed = start(&live, &durable, head); /* the status index was loaded at head */
    wait_count(&durable, 2);
    /* The replay gives the durable subscriber exactly what it missed, in order; the live one,
     * loaded at head, gets nothing of it. */
    cr_assert_eq(durable.ids[0], r1);
    cr_assert_eq(durable.ids[1], r2);
    cr_assert_eq(count(&live), 0);
    /* Live changes go to both. */
    add(3);
    wait_count(&live, 1);
    wait_count(&durable, 3);
    feed_free(feed);
}

/* A subscriber that ignores registrations of good certificates (the CRL publisher) is replayed
 * only the other changes, however many registrations lie between them; live it gets everything. */
Test(feed, the_replay_skips_registrations_for_a_subscriber_that_ignores_them)
{
    struct recorder live = {.mutex = PTHREAD_MUTEX_INITIALIZER},
                    durable = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    int64_t head, r1, r2, before;
    struct feed *feed;

    cr_assert_eq(store_feed_head_blocking(st, &before), 0);
    for (int i = 0; i < 200; i++)
        add((unsigned char)i);
    r1 = revoke(5);
    for (int i = 200; i < 256; i++)
        add((unsigned char)i);
    r2 = revoke(250);
    durable.published = before;
    durable_skip_issue = 1;
    cr_assert_eq(store_feed_head_blocking(st, &head), 0);
    feed = start(&live, &durable, head);
    wait_count(&durable, 2);
    cr_assert_eq(durable.ids[0], r1);
    cr_assert_eq(durable.ids[1], r2);
    /* Live changes, registrations too, go to both. */
    {
        int64_t id = add_serial(0x11, 1);
        wait_count(&live, 1);
        wait_count(&durable, 3);
        cr_assert_eq(durable.ids[2], id);
    }
    cr_assert_eq(count(&durable), 3, "the replay delivered registrations");
    feed_free(feed);
}

Test(feed, a_refused_change_is_delivered_again_and_nothing_is_skipped)
{
    struct recorder live = {.mutex = PTHREAD_MUTEX_INITIALIZER},
                    durable = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    struct feed *feed;
    int64_t head, ids[5];

    cr_assert_eq(store_feed_head_blocking(st, &head), 0);
    durable.published = INT64_MAX;
    feed = start(&live, &durable, head);
    for (int i = 0; i < 5; i++)
        ids[i] = add((unsigned char)(10 + i));
    pthread_mutex_lock(&live.mutex);
    live.refuse_id = ids[2];
    live.refusals_left = 3;
    pthread_mutex_unlock(&live.mutex);
    wait_count(&live, 5);
    for (int i = 0; i < 5; i++)
        cr_assert_eq(live.ids[i], ids[i], "change %d out of order or skipped", i);
    feed_free(feed);
}

Test(feed, a_stop_delivers_what_was_committed_just_before_it)
{
    struct recorder live = {.mutex = PTHREAD_MUTEX_INITIALIZER},
                    durable = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    struct feed *feed;
    int64_t head, last;
    struct feed_subscriber subs[2] = {{"live", record, NULL, &live, 0},
                                      {"durable", record, upto, &durable, 0}};
    /* A long poll interval: only the stop's drain can deliver the change in time. */
    struct feed_config fc = {path, 60000, 0, &issuer, 1, 43200, 3600, subs, 2, NULL, NULL, NULL, 0};

    cr_assert_eq(store_feed_head_blocking(st, &head), 0);
    fc.start_after = head;
    durable.published = INT64_MAX;
    cr_assert_eq(feed_new(&fc, &feed), 0);
    cr_assert_eq(feed_start(feed), 0);
    nanosleep(&(struct timespec){0, 200 * 1000000L}, NULL); /* let it go to sleep */
    /* Written through another connection, as `pkiva revoke` in another process would. */
    {
        struct store *other = NULL;
        unsigned char serial[2] = {0x20, 1};
        struct store_cert_new cn = {.issuer_id = issuer,
                                    .serial = serial,
                                    .serial_len = 2,
                                    .not_before = 1700000000,
                                    .not_after = 1900000000};
        cr_assert_eq(store_open_blocking(path, 0, &other), 0);
        cr_assert_eq(store_cert_add_blocking(other, &cn, &last), 0);
        store_close(other);
    }
    feed_stop(feed);
    cr_assert_eq(count(&live), 1);
    cr_assert_eq(live.ids[0], last);
    feed_free(feed);
}

static int sla_open_ocsp(void *ctx, const struct store_sla_row *row)
{
    if (row->ocsp_at_ms == 0)
        (*(int *)ctx)++;
    return 0;
}

Test(feed, revocations_loaded_at_start_are_marked_visible_in_ocsp)
{
    struct recorder live = {.mutex = PTHREAD_MUTEX_INITIALIZER},
                    durable = {.mutex = PTHREAD_MUTEX_INITIALIZER};
    struct feed *feed;
    int64_t head;
    int open = 0;
    struct feed_stats fs;

    add(1);
    revoke(1);
    cr_assert_eq(store_sla_list_blocking(st, 0, 0, sla_open_ocsp, &open), 0);
    cr_assert_eq(open, 1);
    cr_assert_eq(store_feed_head_blocking(st, &head), 0);
    durable.published = INT64_MAX;
    feed = start(&live, &durable, head);
    for (int i = 0; i < 500; i++) {
        feed_stats_get(feed, &fs);
        if (fs.caught_up)
            break;
        nanosleep(&(struct timespec){0, 10 * 1000000L}, NULL);
    }
    cr_assert(fs.caught_up);
    open = 0;
    cr_assert_eq(store_sla_list_blocking(st, 0, 0, sla_open_ocsp, &open), 0);
    cr_assert_eq(open, 0, "a revocation answered by OCSP since the start is still 'ocsp pending'");
    feed_free(feed);
}

/* ---- the contract --------------------------------------------------------------------------- */

static struct feed_contract_input defaults_for(int64_t deadline)
{
    struct feed_contract_defaults d;
    struct feed_contract_input in;
    feed_contract_defaults(deadline, &d);
    memset(&in, 0, sizeof(in));
    in.deadline_s = deadline;
    in.ocsp_validity_s = d.ocsp_validity_s;
    in.ocsp_refresh_percent = 50;
    in.ocsp_max_age_s = d.ocsp_max_age_s;
    in.feed_poll_ms = 200;
    in.crl_validity_s = d.crl_validity_s;
    in.crl_delta_validity_s = d.crl_delta_validity_s;
    in.crl_interval_s = d.crl_interval_s;
    in.crl_coalesce_ms = 5000;
    in.crl_deltas = 1;
    in.crl_full_on_change = 1;
    return in;
}

Test(feed, contract_of_the_defaults)
{
    struct feed_contract_input in = defaults_for(12 * 3600);
    struct feed_contract c;
    feed_contract_compute(&in, &c);
    cr_assert_eq(c.worst_s[FEED_CLIENT_OCSP_NEXT_UPDATE], 6 * 3600 + 1 + 1);
    cr_assert_eq(c.worst_s[FEED_CLIENT_OCSP_MAX_AGE], 3600 + 2);
    cr_assert_eq(c.worst_s[FEED_CLIENT_CRL], 6 * 3600 + 5);
    cr_assert_eq(c.worst_s[FEED_CLIENT_DELTA_CRL], 6 * 3600 + 5);
    cr_assert_eq(c.exceeding, 0);
    /* Half the deadline to spare for every class: room for one failed refresh. */
    for (int i = 0; i < FEED_CLIENT_N; i++)
        cr_assert_leq(c.worst_s[i], 12 * 3600 / 2 + 5, "%s", feed_client_name(i));
    cr_assert_eq(c.ocsp_budget_s, 3 * 3600);
    cr_assert_eq(c.crl_budget_s, 5 * 3600);
    cr_assert_eq(c.outage_budget_s, 3 * 3600);
    /* Derived for any deadline, the defaults keep the contract. */
    for (int64_t deadline = 600; deadline <= 7 * 86400; deadline *= 2) {
        in = defaults_for(deadline);
        feed_contract_compute(&in, &c);
        cr_assert_eq(c.exceeding, 0, "deadline %lld", (long long)deadline);
        cr_assert_lt(in.crl_interval_s, in.crl_validity_s);
    }
}

Test(feed, contract_of_the_old_defaults_is_broken)
{
    struct feed_contract_input in = defaults_for(12 * 3600);
    struct feed_contract c;
    in.ocsp_validity_s = 4 * 86400;
    in.crl_validity_s = 7 * 86400;
    in.crl_delta_validity_s = 86400;
    in.crl_full_on_change = 0; /* full CRLs follow the interval: + 1 h, not + coalesce */
    feed_contract_compute(&in, &c);
    cr_assert_eq(c.worst_s[FEED_CLIENT_OCSP_NEXT_UPDATE], 4 * 86400 + 2);
    cr_assert_eq(c.worst_s[FEED_CLIENT_CRL], 7 * 86400 + 3600);
    cr_assert_eq(c.worst_s[FEED_CLIENT_DELTA_CRL], 86400 + 5);
    cr_assert_eq(c.exceeding, (1u << FEED_CLIENT_OCSP_NEXT_UPDATE) | (1u << FEED_CLIENT_CRL) |
                                  (1u << FEED_CLIENT_DELTA_CRL));
    cr_assert_str_eq(feed_client_directive(FEED_CLIENT_CRL), "[crl] validity");
}

Test(feed, client_lists)
{
    unsigned bits = 0;
    cr_assert_eq(feed_client_parse_list("crl, delta_crl", &bits), 0);
    cr_assert_eq(bits, (1u << FEED_CLIENT_CRL) | (1u << FEED_CLIENT_DELTA_CRL));
    cr_assert_eq(feed_client_parse_list("", &bits), 0);
    cr_assert_eq(bits, 0);
    cr_assert_eq(feed_client_parse_list("crl,browsers", &bits), UTIL_EINVAL);
}
