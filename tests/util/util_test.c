/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for util: the worker pool's bounds and loop hand-off, blobs, atomic files, helpers. */
#define _GNU_SOURCE /* pthread_getname_np */
#include <criterion/criterion.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <util/util.h>

static int work_double(void *state, void *arg)
{
    (void)state;
    return *(int *)arg * 2;
}

struct loop_job {
    int input;
    int result;
    pthread_t done_thread;
    int *remaining;
    uv_loop_t *loop;
};

static void done_record(void *arg, int result)
{
    struct loop_job *job = arg;
    job->result = result;
    job->done_thread = pthread_self();
    (*job->remaining)--;
}

static int work_job(void *state, void *arg)
{
    struct loop_job *job = arg;
    (void)state;
    return job->input + 1;
}

Test(pool, completions_run_on_the_submitting_loop)
{
    struct util_pool_config cfg = {.name = "t", .threads = 2, .queue_max = 64};
    struct util_pool *pool = NULL;
    struct util_pool_port *port = NULL;
    uv_loop_t loop;
    struct loop_job jobs[50];
    int remaining = 50;

    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    cr_assert_eq(util_pool_port_new(pool, &loop, &port), 0);
    for (int i = 0; i < 50; i++) {
        jobs[i] = (struct loop_job){.input = i, .remaining = &remaining, .loop = &loop};
        cr_assert_eq(util_pool_submit(pool, port, work_job, done_record, &jobs[i]), 0);
    }
    while (remaining > 0)
        (void)uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 50; i++) {
        cr_assert_eq(jobs[i].result, i + 1);
        cr_assert(pthread_equal(jobs[i].done_thread, pthread_self()));
    }
    util_pool_port_close(port);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    util_pool_free(pool);
}

static _Atomic int gate;

static int work_wait_gate(void *state, void *arg)
{
    (void)state;
    (void)arg;
    while (!atomic_load(&gate))
        usleep(1000);
    return 0;
}

/* A job whose port closes before it runs (and one that finished but was not yet delivered) still
 * gets exactly one done, with UTIL_ECLOSED, off the closed loop. */
struct closed_job {
    _Atomic int dones;
    _Atomic int result;
};

static void done_closed(void *arg, int result)
{
    struct closed_job *job = arg;
    atomic_store(&job->result, result);
    atomic_fetch_add(&job->dones, 1);
}

static int work_zero(void *state, void *arg)
{
    (void)state;
    (void)arg;
    return 0;
}

Test(pool, a_job_whose_port_closed_gets_one_cancelled_done)
{
    struct util_pool_config cfg = {.name = "t", .threads = 1, .queue_max = 8};
    struct util_pool *pool = NULL;
    struct util_pool_port *port = NULL;
    uv_loop_t loop;
    struct closed_job waiting = {0}, finished = {0};

    atomic_store(&gate, 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    cr_assert_eq(util_pool_port_new(pool, &loop, &port), 0);
    /* The only worker blocks on the gate, so the second job is still queued when the port closes. */
    cr_assert_eq(util_pool_submit(pool, port, work_wait_gate, done_closed, &finished), 0);
    cr_assert_eq(util_pool_submit(pool, port, work_zero, done_closed, &waiting), 0);
    util_pool_port_close(port);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(uv_loop_close(&loop), 0);
    atomic_store(&gate, 1);
    util_pool_free(pool); /* joins the worker: every done has run by now */
    cr_assert_eq(atomic_load(&finished.dones), 1);
    cr_assert_eq(atomic_load(&finished.result), UTIL_ECLOSED);
    cr_assert_eq(atomic_load(&waiting.dones), 1);
    cr_assert_eq(atomic_load(&waiting.result), UTIL_ECLOSED);
}

/* A completion that a thread of its own owes a port (the TSA log thread's): delivered on the loop
 * with its result while the port is open; with UTIL_ECLOSED on the completing thread once the port
 * closed; never for a dropped one. */
struct expected {
    _Atomic int dones;
    _Atomic int result;
    pthread_t done_thread;
};

static void done_expected(void *arg, int result)
{
    struct expected *e = arg;
    e->done_thread = pthread_self();
    atomic_store(&e->result, result);
    atomic_fetch_add(&e->dones, 1);
}

static void *complete_main(void *arg)
{
    util_pool_complete(arg, 7);
    return NULL;
}

static void complete_on_thread(struct util_pool_completion *c, pthread_t *th)
{
    cr_assert_eq(pthread_create(th, NULL, complete_main, c), 0);
    (void)pthread_join(*th, NULL); /* our thread */
}

Test(pool, an_expected_completion_comes_once_or_cancelled)
{
    struct util_pool_port *port = NULL;
    struct util_pool_completion *open_c = NULL, *closed_c = NULL, *dropped_c = NULL, *late = NULL;
    struct expected open_e = {0}, closed_e = {0}, dropped_e = {0};
    pthread_t open_th, closed_th;
    uv_loop_t loop;

    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_port_new(NULL, &loop, &port), 0);
    cr_assert_eq(util_pool_port_expect(port, done_expected, &open_e, &open_c), 0);
    cr_assert_eq(util_pool_port_expect(port, done_expected, &closed_e, &closed_c), 0);
    cr_assert_eq(util_pool_port_expect(port, done_expected, &dropped_e, &dropped_c), 0);
    util_pool_completion_drop(dropped_c);

    complete_on_thread(open_c, &open_th);
    cr_assert_eq(atomic_load(&open_e.dones), 0, "delivered on the loop, not the completing thread");
    (void)uv_run(&loop, UV_RUN_NOWAIT);
    cr_assert_eq(atomic_load(&open_e.dones), 1);
    cr_assert_eq(atomic_load(&open_e.result), 7);
    cr_assert(pthread_equal(open_e.done_thread, pthread_self()));

    util_pool_port_close(port);
    cr_assert_eq(util_pool_port_expect(port, done_expected, &dropped_e, &late), UTIL_ECLOSED);
    cr_assert_null(late);
    (void)uv_run(&loop, UV_RUN_DEFAULT); /* the handle closes; the port waits for closed_c */
    cr_assert_eq(uv_loop_close(&loop), 0);
    complete_on_thread(closed_c, &closed_th); /* the port's memory goes with this completion */
    cr_assert_eq(atomic_load(&closed_e.dones), 1);
    cr_assert_eq(atomic_load(&closed_e.result), UTIL_ECLOSED);
    cr_assert(pthread_equal(closed_e.done_thread, closed_th));
    cr_assert_eq(atomic_load(&dropped_e.dones), 0);
}

Test(pool, full_queue_refuses_at_once)
{
    struct util_pool_config cfg = {.name = "t", .threads = 1, .queue_max = 2};
    struct util_pool *pool = NULL;
    int busy = 0;
    atomic_store(&gate, 0);
    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    /* One runs, two wait; the rest must be refused immediately. */
    for (int i = 0; i < 10; i++)
        if (util_pool_submit(pool, NULL, work_wait_gate, NULL, NULL) == UTIL_EBUSY)
            busy++;
    cr_assert_geq(busy, 7);
    cr_assert_geq(util_pool_rejected(pool), 7u);
    atomic_store(&gate, 1);
    util_pool_free(pool);
}

Test(pool, run_sync_returns_the_work_result)
{
    struct util_pool_config cfg = {.name = "t", .threads = 1, .queue_max = 4};
    struct util_pool *pool = NULL;
    int x = 21;
    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    cr_assert_eq(util_pool_run_sync(pool, work_double, &x), 42);
    util_pool_free(pool);
}

struct sync_caller {
    struct util_pool *pool;
    int calls, ok;
};

static void *sync_caller_main(void *arg)
{
    struct sync_caller *c = arg;
    int x = 1;
    for (int i = 0; i < c->calls; i++)
        c->ok += util_pool_run_sync(c->pool, work_double, &x) == 2;
    return NULL;
}

/* Workers go idle between almost every job here (each caller waits for its one job): a submit
 * that skipped the wake-up of an idle worker would leave a job queued for ever and hang a caller
 * (the suite's timeout fails it). Submits wake a worker only when one waits, outside the mutex. */
Test(pool, no_wake_up_is_lost_when_workers_idle_between_jobs, .timeout = 120)
{
    struct util_pool_config cfg = {.name = "t", .threads = 2, .queue_max = 64};
    struct util_pool *pool = NULL;
    struct sync_caller callers[3];
    pthread_t th[3];

    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    for (int i = 0; i < 3; i++) {
        callers[i] = (struct sync_caller){.pool = pool, .calls = 20000};
        cr_assert_eq(pthread_create(&th[i], NULL, sync_caller_main, &callers[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_assert_eq(callers[i].ok, 20000);
    }
    util_pool_free(pool);
}

struct pair_round {
    pthread_barrier_t both_running;
    sem_t done;
};

static int work_meet(void *state, void *arg)
{
    struct pair_round *r = arg;
    (void)state;
    (void)pthread_barrier_wait(&r->both_running); /* returns only when the other job runs too */
    sem_post(&r->done);
    return 0;
}

/* Two jobs submitted to two idle workers run at the same time: each waits for the other, so a
 * submit that left the second idle worker asleep (the first one busy with the first job) hangs
 * the round and the suite's timeout fails it. */
Test(pool, each_job_wakes_an_idle_worker, .timeout = 120)
{
    struct util_pool_config cfg = {.name = "t", .threads = 2, .queue_max = 64};
    struct util_pool *pool = NULL;
    struct pair_round r;

    cr_assert_eq(pthread_barrier_init(&r.both_running, NULL, 2), 0);
    cr_assert_eq(sem_init(&r.done, 0, 0), 0);
    cr_assert_eq(util_pool_new(&cfg, &pool), 0);
    for (int round = 0; round < 2000; round++) {
        cr_assert_eq(util_pool_submit(pool, NULL, work_meet, NULL, &r), 0);
        cr_assert_eq(util_pool_submit(pool, NULL, work_meet, NULL, &r), 0);
        cr_assert_eq(sem_wait(&r.done), 0);
        cr_assert_eq(sem_wait(&r.done), 0);
    }
    util_pool_free(pool);
    (void)pthread_barrier_destroy(&r.both_running);
    (void)sem_destroy(&r.done);
}

static int init_fail(void *ctx, void **state)
{
    (void)ctx;
    (void)state;
    return UTIL_ESTORE;
}

Test(pool, failing_thread_init_fails_creation)
{
    struct util_pool_config cfg = {
        .name = "t", .threads = 2, .queue_max = 4, .thread_init = init_fail};
    struct util_pool *pool = NULL;
    cr_assert_eq(util_pool_new(&cfg, &pool), UTIL_ESTORE);
    cr_assert_null(pool);
}

Test(blob, refcount_frees_on_last_unref)
{
    struct util_blob *b = util_blob_new("abc", 3);
    cr_assert_not_null(b);
    cr_assert_eq(util_blob_ref(b), b);
    cr_assert_eq(atomic_load(&b->refs), 2);
    util_blob_unref(b);
    cr_assert_eq(atomic_load(&b->refs), 1);
    cr_assert_eq(memcmp(b->data, "abc", 3), 0);
    util_blob_unref(b);
    util_blob_unref(NULL);
}

Test(file, atomic_write_then_read)
{
    char dir[] = "/tmp/pkiva-util.XXXXXX";
    char path[256];
    unsigned char *data = NULL;
    size_t len = 0;
    struct stat st;
    cr_assert_not_null(mkdtemp(dir));
    (void)snprintf(path, sizeof(path), "%s/x.crl", dir);
    cr_assert_eq(util_file_write_atomic(path, "hello", 5, 0640), 0);
    cr_assert_eq(util_file_write_atomic(path, "world!", 6, 0640), 0);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0640);
    cr_assert_eq(util_file_read(path, 100, &data, &len), 0);
    cr_assert_eq(len, 6);
    cr_assert_str_eq((char *)data, "world!");
    free(data);
    cr_assert_eq(util_file_read(path, 3, &data, &len), UTIL_EINVAL);
    (void)snprintf(path, sizeof(path), "%s/missing", dir);
    cr_assert_eq(util_file_read(path, 100, &data, &len), UTIL_ENOTFOUND);
    (void)snprintf(path, sizeof(path), "rm -rf %s", dir);
    (void)system(path);
}

Test(helpers, ct_equal_and_hex)
{
    char hex[9];
    cr_assert(util_ct_equal("abcd", 4, "abcd", 4));
    cr_assert_not(util_ct_equal("abcd", 4, "abce", 4));
    cr_assert_not(util_ct_equal("abcd", 4, "abc", 3));
    cr_assert_not(util_ct_equal("", 0, "a", 1));
    util_hex((const unsigned char *)"\x01\xab\xff\x00", 4, hex);
    cr_assert_str_eq(hex, "01abff00");
    cr_assert_str_eq(util_strerror(UTIL_EHSM), "HSM unavailable or failed");
    cr_assert_eq(util_hex_digit('7'), 7);
    cr_assert_eq(util_hex_digit('b'), 11);
    cr_assert_eq(util_hex_digit('F'), 15);
    cr_assert_eq(util_hex_digit('g'), -1);
}

Test(helpers, url_safe_names)
{
    char longest[UTIL_NAME_MAX];
    memset(longest, 'a', sizeof(longest) - 1);
    longest[sizeof(longest) - 1] = '\0';
    cr_assert(util_name_valid("demo-ca"));
    cr_assert(util_name_valid("ca.2026_v1"));
    cr_assert(util_name_valid(longest));
    cr_assert_not(util_name_valid(""));
    cr_assert_not(util_name_valid(NULL));
    cr_assert_not(util_name_valid("a/b"));
    cr_assert_not(util_name_valid("a b"));
    cr_assert_not(util_name_valid("ca%2F"));
    longest[0] = '\0';
    memset(longest, 'a', sizeof(longest) - 1);
    cr_assert(util_name_valid(longest));
}

/* Operator times (issue 14 item 4): impossible dates and out-of-range numbers are refused, not
 * normalised or wrapped. */
Test(util, time_parse_accepts_the_documented_forms)
{
    int64_t t = 0;
    cr_assert_eq(util_time_parse("2026-11-21T10:00:00Z", &t), UTIL_OK);
    cr_assert_eq(t, 1795255200);
    cr_assert_eq(util_time_parse("2026-11-21 10:00:00", &t), UTIL_OK);
    cr_assert_eq(t, 1795255200);
    cr_assert_eq(util_time_parse("2026-11-21", &t), UTIL_OK);
    cr_assert_eq(t, 1795219200);
    cr_assert_eq(util_time_parse("2024-02-29", &t), UTIL_OK); /* a leap day */
    cr_assert_eq(util_time_parse("@1764633600", &t), UTIL_OK);
    cr_assert_eq(t, 1764633600);
    cr_assert_eq(util_time_parse("9999-12-31T23:59:59Z", &t), UTIL_OK);
    cr_assert_eq(t, UTIL_TIME_MAX);
    cr_assert_eq(util_time_parse("@253402300799", &t), UTIL_OK);
}

Test(util, time_parse_refuses_impossible_dates_and_overflow)
{
    static const char *const bad[] = {
        "2026-02-30", /* no such day */
        "2025-02-29", /* not a leap year */
        "2100-02-29", /* century, not a leap year */
        "2026-04-31T00:00:00Z",
        "2026-13-01",
        "2026-00-10",
        "2026-11-21T24:00:00Z",
        "2026-11-21T10:60:00Z",
        "2026-11-21T10:00:60Z",
        "1969-12-31",
        "@1764633600000",     /* milliseconds given as seconds: year 57887 */
        "@18446744073709552", /* wrapped to 384 ms once scaled to milliseconds */
        "@99999999999999999999999",
        "@-1",
        "@",
        "@12a",
        "@ 12",
        "2026-11-21T10:00:00+01:00",
        "2026-11-21X10:00:00",
        "2026-1-21",
        "",
        "10000-01-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t t = 42;
        cr_assert_eq(util_time_parse(bad[i], &t), UTIL_EINVAL, "accepted '%s'", bad[i]);
        cr_assert_eq(t, 42, "'%s' changed the output", bad[i]);
    }
}

/* util_gentime, the one GeneralizedTime encoder, writes what gmtime says, across the epoch, leap
 * days, centuries and the ends of the four-digit years; it refuses what four digits cannot say. */
Test(time, gentime_matches_gmtime)
{
    const int64_t samples[] = {0,          -1,          951782400,      951868799,      1700000000,
                               4102444800, -2208988800, 253402300799LL, -62167219200LL, 1234567890};
    char text[UTIL_GENTIME_LEN + 1];
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]) + 2000; i++) {
        int64_t t = i < sizeof(samples) / sizeof(samples[0])
                        ? samples[i]
                        : (int64_t)(i * 7919ULL * 86413ULL % 253402300800ULL);
        time_t tt = (time_t)t;
        struct tm tm;
        char want[64];
        cr_assert_not_null(gmtime_r(&tt, &tm));
        (void)snprintf(want, sizeof(want), "%04d%02d%02d%02d%02d%02dZ", tm.tm_year + 1900,
                       tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
        cr_assert_eq(util_gentime(t, text), UTIL_OK, "t=%lld", (long long)t);
        text[UTIL_GENTIME_LEN] = '\0';
        cr_assert_str_eq(text, want, "t=%lld", (long long)t);
    }
    cr_assert_eq(util_gentime(253402300800LL, text), UTIL_EINVAL); /* year 10000 */
    cr_assert_eq(util_gentime(-62167219201LL, text), UTIL_EINVAL); /* year -1 */
}

/* ---- util_conf: the kinds of directive ------------------------------------------------------- */

struct conf_sample {
    char path[32];
    char key[32];
    char level[8];
    int timeout_ms;
    int even;
};

static int parse_even(const struct util_conf_directive *d, void *config, const char *value,
                      char *err, size_t err_len)
{
    struct conf_sample *s = config;
    if (strcmp(value, "2") != 0 && strcmp(value, "4") != 0)
        return util_conf_fail(err, err_len, "%s must be 2 or 4, got '%s'", d->name, value);
    s->even = value[0] - '0';
    return UTIL_OK;
}

static const char *const levels[] = {"low", "high", NULL};

#define CS struct conf_sample
static const struct util_conf_directive conf_table[] = {
    UTIL_CONF(PATH, "path", CS, path, 0, 0, 0, "", "a file"),
    UTIL_CONF(STRING, "key", CS, key, 0, 0, 0, "pkcs11:x", "a URI"),
    UTIL_CONF(STRING, "level", CS, level, 0, 0, levels, "low", "low or high"),
    UTIL_CONF(MS, "timeout", CS, timeout_ms, 0, 60000, 0, "250ms", "at most a minute"),
    UTIL_CONF(CUSTOM, "even", CS, even, 0, 0, parse_even, "2", "2 or 4"),
};
#define CONF_N (sizeof(conf_table) / sizeof(conf_table[0]))

static int conf_set(struct conf_sample *s, const char *key, const char *value, char *err)
{
    return util_conf_set(conf_table, CONF_N, s, key, value, "/etc/x", err, 256);
}

/* PATH is resolved against the file's folder (but absolute paths, PKCS#11 URIs and unset); text
 * kinds refuse what does not fit; STRING with choices, MS with its maximum, CUSTOM through its
 * parser; every message names the directive. */
Test(conf, kinds_parse_resolve_and_name_the_directive)
{
    struct conf_sample s;
    char err[256] = "";
    memset(&s, 0x55, sizeof(s));
    util_conf_defaults(conf_table, CONF_N, &s);
    cr_assert_str_eq(s.path, "");
    cr_assert_str_eq(s.key, "pkcs11:x");
    cr_assert_str_eq(s.level, "low");
    cr_assert_eq(s.timeout_ms, 250);
    cr_assert_eq(s.even, 2);
    cr_assert_eq(conf_set(&s, "path", "a.pem", err), 0);
    cr_assert_str_eq(s.path, "/etc/x/a.pem");
    cr_assert_eq(conf_set(&s, "path", "/a.pem", err), 0);
    cr_assert_str_eq(s.path, "/a.pem");
    cr_assert_eq(conf_set(&s, "path", "pkcs11:object=a", err), 0);
    cr_assert_str_eq(s.path, "pkcs11:object=a");
    cr_assert_eq(conf_set(&s, "path", "", err), 0);
    cr_assert_str_eq(s.path, "");
    cr_assert_eq(conf_set(&s, "path", "a-rather-long-file-name.pem", err), UTIL_EINVAL);
    cr_assert(strstr(err, "path: path too long") != NULL, "%s", err);
    cr_assert_eq(conf_set(&s, "key", "a-value-of-more-than-32-characters", err), UTIL_EINVAL);
    cr_assert(strstr(err, "key: value too long") != NULL, "%s", err);
    cr_assert_eq(conf_set(&s, "level", "high", err), 0);
    cr_assert_str_eq(s.level, "high");
    cr_assert_eq(conf_set(&s, "level", "mid", err), UTIL_EINVAL);
    cr_assert_str_eq(err, "level must be low or high, got 'mid'");
    cr_assert_eq(conf_set(&s, "timeout", "2s", err), 0);
    cr_assert_eq(s.timeout_ms, 2000);
    cr_assert_eq(conf_set(&s, "timeout", "0", err), 0);
    cr_assert_eq(s.timeout_ms, 0);
    cr_assert_eq(conf_set(&s, "timeout", "0ms", err), UTIL_EINVAL);
    cr_assert_eq(conf_set(&s, "timeout", "2m", err), UTIL_EINVAL);
    cr_assert_str_eq(err, "timeout must be at most 60s, got '2m'");
    cr_assert_eq(conf_set(&s, "timeout", "2h", err), UTIL_EINVAL);
    cr_assert(strstr(err, "timeout: expected a duration like 250ms") == err, "%s", err);
    cr_assert_eq(conf_set(&s, "even", "3", err), UTIL_EINVAL);
    cr_assert_str_eq(err, "even must be 2 or 4, got '3'");
    cr_assert_eq(conf_set(&s, "odd", "3", err), UTIL_ENOTFOUND);
}

static void *name_worker(void *arg)
{
    char *out = arg;
    util_thread_name("a-very-long-role", 12);
    pthread_getname_np(pthread_self(), out, 16);
    util_thread_name("tsa-log", -1);
    pthread_getname_np(pthread_self(), out + 16, 16);
    util_thread_name("http", 3);
    pthread_getname_np(pthread_self(), out + 32, 16);
    return NULL;
}

Test(util, thread_names_fit_the_kernels_15_characters)
{
    char names[48] = "";
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, name_worker, names), 0);
    cr_assert_eq(pthread_join(t, NULL), 0);
    cr_expect_str_eq(names, "a-very-lon-12");
    cr_expect_str_eq(names + 16, "tsa-log");
    cr_expect_str_eq(names + 32, "http-3");
}
