/* SPDX-License-Identifier: Apache-2.0 */
/* util: what every pkiva module shares and nothing more: the one error enum, logging that drains the
 * OpenSSL error queue, wall and monotonic clocks, immutable reference-counted blobs (signed responses,
 * CRLs) and the bounded worker pool that runs blocking work (HSM signing, SQLite) off the loop
 * threads and hands results back to the loop that asked. */
#ifndef PKIVA_UTIL_H
#define PKIVA_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- errors --------------------------------------------------------------------------------- */

/* One enum for the whole program. Functions return 0 on success or one of these (negative). */
enum util_err {
    UTIL_OK = 0,
    UTIL_ENOMEM = -1,    /* allocation failed */
    UTIL_EINVAL = -2,    /* bad argument or malformed input */
    UTIL_EIO = -3,       /* file or socket I/O failed */
    UTIL_ENOTFOUND = -4, /* no such row, key, file, issuer */
    UTIL_EBUSY = -5,     /* a bounded queue is full; try later */
    UTIL_EHSM = -6,      /* the HSM / PKCS#11 token failed or is unavailable */
    UTIL_ESTORE = -7,    /* the database failed */
    UTIL_EEXIST = -8,    /* already exists / conflicting state */
    UTIL_ETIMEDOUT = -9, /* an operation did not finish in time */
    UTIL_ECONFIG = -10,  /* configuration invalid */
    UTIL_ECRYPTO = -11,  /* an OpenSSL operation failed (not the HSM) */
    UTIL_ENOSPC = -12,   /* disk full */
    UTIL_ELOCKED = -13,  /* database locked by another process beyond the busy timeout */
    UTIL_ECLOSED = -14,  /* the component is shutting down */
    UTIL_EPERM = -15,    /* permission problem (file modes, credentials) */
};

/* Static string for an error code; never NULL. */
const char *util_strerror(int err);

/* Map an errno value to the enum (ENOSPC -> UTIL_ENOSPC, ENOENT -> UTIL_ENOTFOUND, ...). */
int util_errno(int errnum);

/* ---- logging -------------------------------------------------------------------------------- */

enum util_log_level { UTIL_LOG_DEBUG = 0, UTIL_LOG_INFO, UTIL_LOG_WARN, UTIL_LOG_ERROR };

/* Process-wide settings; call once at start-up before threads exist. Output is one line per record
 * on stderr: "2026-11-21T12:00:00.123Z level module: message". Thread-safe (one write(2) per line).
 * util_log and util_log_openssl leave errno as they found it. */
void util_log_set_level(enum util_log_level level);
void util_log(enum util_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like util_log, then appends every queued OpenSSL error (and clears the queue) to the same line. */
void util_log_openssl(enum util_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Empties this thread's OpenSSL error queue; 1 when one of its errors was an allocation failure.
 * For telling a client's garbage (their error: malformedRequest, badRequest, 400) from running out
 * of memory (ours: tryLater, systemFailure, 503) after a decoder failed: OpenSSL's decoders raise
 * the allocation failure first and "nested asn1 error"s over it as they unwind, so the whole queue
 * is looked through, not only its last error. */
int util_openssl_oom_clear(void);

#define UTIL_DEBUG(mod, ...) util_log(UTIL_LOG_DEBUG, mod, __VA_ARGS__)
#define UTIL_INFO(mod, ...) util_log(UTIL_LOG_INFO, mod, __VA_ARGS__)
#define UTIL_WARN(mod, ...) util_log(UTIL_LOG_WARN, mod, __VA_ARGS__)
#define UTIL_ERROR(mod, ...) util_log(UTIL_LOG_ERROR, mod, __VA_ARGS__)

/* ---- time ----------------------------------------------------------------------------------- */

int64_t util_now_ms(void);  /* wall clock, milliseconds since the Unix epoch */
int64_t util_mono_ms(void); /* monotonic clock, milliseconds */
/* *out = now + ms on CLOCK_MONOTONIC, for pthread_cond_timedwait on a condition variable made
 * with pthread_condattr_setclock(CLOCK_MONOTONIC). */
struct timespec;
void util_mono_deadline(struct timespec *out, int64_t ms);
/* An OpenSSL ASN1_TIME (UTCTime or GeneralizedTime; a fraction is dropped) as seconds since the
 * Unix epoch: 0, or UTIL_EINVAL if t is NULL or not a valid time. */
struct asn1_string_st;
int util_asn1_time_unix(const struct asn1_string_st *t, int64_t *out);

/* The latest instant every time field pkiva signs can carry: 9999-12-31T23:59:59Z, the last second
 * a four-digit GeneralizedTime (RFC 5280 4.1.2.5.2) can write. */
#define UTIL_TIME_MAX INT64_C(253402300799)
/* Seconds since the epoch of a UTC calendar date and time, refusing what no calendar has: month
 * outside 1-12, a day past the month's end (2026-02-30), hour > 23, minute or second > 59 (a leap
 * second cannot be told apart from the next second in Unix time), years outside 1970-9999.
 * Returns 0 and *out, or UTIL_EINVAL (then *out is unchanged). */
int util_time_from_civil(int year, int month, int day, int hour, int min, int sec, int64_t *out);
/* The one GeneralizedTime encoder (every DER writer: CRLs, OCSP responses, time-stamp tokens): the
 * text "YYYYMMDDhhmmssZ" of seconds t since the epoch (UTC) into out (UTIL_GENTIME_LEN bytes, no
 * NUL). Integer arithmetic only (no gmtime, no snprintf): the CRL writer calls it for every entry.
 * Returns 0, or UTIL_EINVAL for a year outside 0000-9999 (out untouched). */
#define UTIL_GENTIME_LEN 15
int util_gentime(int64_t t, char *out);
/* An operator's time: "2026-11-21T10:00:00Z", "2026-11-21 10:00:00" (UTC, with or without the Z),
 * "2026-11-21" (midnight UTC) or "@UNIXSECONDS". Every form must lie in 0..UTIL_TIME_MAX, so
 * milliseconds given as seconds ("@1764633600000" is year 57887) and numbers that would overflow
 * once scaled to milliseconds are refused, as are impossible dates. Returns 0 and *seconds, or
 * UTIL_EINVAL (then *seconds is unchanged). */
int util_time_parse(const char *text, int64_t *seconds);

/* ---- immutable reference-counted blobs ------------------------------------------------------ */

/* A blob's bytes never change after util_blob_new returns; holders share it by reference. The last
 * util_blob_unref frees it. Refcounting is atomic, so blobs may cross threads. */
struct util_blob {
    _Atomic long refs;
    size_t len;
    unsigned char data[];
};

/* Copies len bytes from data (data may be NULL to leave the bytes for the caller to fill before
 * publishing the blob). Returns NULL on allocation failure. The caller owns one reference. */
struct util_blob *util_blob_new(const void *data, size_t len);
struct util_blob *util_blob_ref(struct util_blob *blob); /* returns blob; NULL-safe */
void util_blob_unref(struct util_blob *blob);            /* NULL-safe */

/* ---- bounded worker pool -------------------------------------------------------------------- */

/* DESIGN: a pool is N named threads and one bounded FIFO of jobs. A loop thread submits a job through
 * its own util_pool_port; a worker runs job->work(thread_state, arg) and the result comes back to the
 * submitting loop, where job->done(arg, result) runs. A full queue refuses at once (UTIL_EBUSY), so
 * callers can answer tryLater/503 without waiting. thread_init runs once on each worker thread (e.g.
 * to open that thread's own SQLite connection) and thread_fini when the pool is freed. Jobs still
 * queued at util_pool_free get done(arg, UTIL_ECLOSED). */
struct util_pool;
struct util_pool_port;

typedef int (*util_pool_work_fn)(void *thread_state, void *arg);
typedef void (*util_pool_done_fn)(void *arg, int result);
typedef int (*util_pool_thread_init_fn)(void *pool_ctx, void **thread_state);
typedef void (*util_pool_thread_fini_fn)(void *pool_ctx, void *thread_state);

struct util_pool_config {
    const char *name;                     /* thread name prefix, <= 10 chars, e.g. "sign" */
    int threads;                          /* >= 1 */
    int queue_max;                        /* jobs waiting (not running) at most; >= 1 */
    util_pool_thread_init_fn thread_init; /* optional; a non-zero return fails util_pool_new */
    util_pool_thread_fini_fn thread_fini; /* optional */
    void *ctx;                            /* passed to thread_init/thread_fini */
};

/* Starts the threads. Returns 0 and *out, or an error (then nothing is left running). */
int util_pool_new(const struct util_pool_config *cfg, struct util_pool **out);
/* Stops accepting, finishes the running jobs, fails queued ones with UTIL_ECLOSED, joins threads.
 * Ports must be closed first. NULL-safe. */
void util_pool_free(struct util_pool *pool);

/* A port binds a pool to one uv loop: completions are delivered on that loop's thread. Create and
 * close it on the loop's thread. util_pool_port_close is asynchronous (uv_close); the port memory is
 * released in the close callback and after the last job that refers to it. A job whose port is
 * closed before its done was delivered still gets exactly one done(arg, UTIL_ECLOSED), not on the
 * loop: inside util_pool_port_close if it had finished, else on the worker thread that finishes it.
 * Such a done must only free its job: the loop, its handles and its requests are gone. */
int util_pool_port_new(struct util_pool *pool, uv_loop_t *loop, struct util_pool_port **out);
void util_pool_port_close(struct util_pool_port *port);

/* Queue a job. From a loop thread pass that loop's port; done runs later on that loop. With port ==
 * NULL, done (if not NULL) runs on the worker thread right after work. Returns 0, UTIL_EBUSY when the
 * queue is full, UTIL_ECLOSED when the pool is stopping, UTIL_ENOMEM. On error done is never called;
 * on success it is called exactly once (see util_pool_port_close for a port closed meanwhile). */
int util_pool_submit(struct util_pool *pool, struct util_pool_port *port, util_pool_work_fn work,
                     util_pool_done_fn done, void *arg);

/* A completion owed to a port by a thread that is not one of a pool's workers (the TSA token log
 * thread): the port's mailbox without the pool's queue. util_pool_port_expect, on the port's loop
 * thread when the work is accepted, allocates the completion and keeps the port's memory alive for
 * it; util_pool_complete, from any thread and exactly once, delivers done(arg, result) on the loop,
 * or, if the port was closed meanwhile, calls done(arg, UTIL_ECLOSED) right there (the same rule as
 * for pool jobs). Both free the completion. util_pool_completion_drop gives back a completion that
 * will never be completed (the work was refused before it started) without calling done. Returns
 * 0, UTIL_ENOMEM, or UTIL_ECLOSED for a closed port. */
struct util_pool_completion;
int util_pool_port_expect(struct util_pool_port *port, util_pool_done_fn done, void *arg,
                          struct util_pool_completion **out);
void util_pool_complete(struct util_pool_completion *completion, int result);
void util_pool_completion_drop(struct util_pool_completion *completion);

/* Run work(thread_state, arg) on a pool thread and wait for its result: for start-up and CLI code that
 * is not on a loop thread. Still bounded: returns UTIL_EBUSY if the queue is full. */
int util_pool_run_sync(struct util_pool *pool, util_pool_work_fn work, void *arg);

/* Gauges for /metrics. */
int util_pool_queue_depth(const struct util_pool *pool);
uint64_t util_pool_rejected(const struct util_pool *pool);

/* ---- small helpers -------------------------------------------------------------------------- */

/* Reads a whole file (at most max_len bytes, else UTIL_EINVAL) into a malloc'd buffer the caller
 * frees; a NUL is appended (not counted in *len). */
int util_file_read(const char *path, size_t max_len, unsigned char **out, size_t *len);
/* Writes atomically: temp file in the same directory, fsync, rename, fsync of the directory.
 * mode is the new file's permission bits. */
int util_file_write_atomic(const char *path, const void *data, size_t len, int mode);
/* Constant-time comparison of two byte strings; different lengths compare unequal (the time depends
 * only on the lengths). Returns 1 when equal. */
int util_ct_equal(const void *a, size_t a_len, const void *b, size_t b_len);
/* Lower-case hex of len bytes into out (2*len+1 bytes). */
void util_hex(const unsigned char *data, size_t len, char *out);
/* The value of one hexadecimal digit (either case), or -1. */
int util_hex_digit(char c);

/* Names the calling thread for ps -L, top -H, perf and debuggers: "%s" or "%s-%d" (index >= 0),
 * cut to the kernel's 15 characters. Every long-lived thread of pkiva names itself on entry, so
 * that where the CPU goes can be read per role (bench/run splits the live paths' CPU this way). */
void util_thread_name(const char *role, int index);

/* Names of issuers and TSA units appear in URLs, file names and the store: 1 to UTIL_NAME_MAX - 1
 * characters of [A-Za-z0-9._-]. Returns 1 when name is one (NULL-safe). */
#define UTIL_NAME_MAX 64
int util_name_valid(const char *name);

/* ---- configuration directives --------------------------------------------------------------- */

/* DESIGN: each module declares the directives of its section once, in a table of
 * util_conf_directive next to its config struct (nginx's ngx_command_t): name, kind, offset into
 * the struct, limits, default (as written in conf/pkiva.conf) and one doc line. The module's
 * defaults come from applying every default of the table; the configuration reader (cli/config.c)
 * maps each section to its tables and hands each line to util_conf_set; the test of
 * conf/pkiva.conf reads the same tables. A default of "0" for a timing directive means "derived"
 * (from [revocation] deadline, by the reader, feed_contract_defaults); a default of "" means unset.
 * Adding a directive is one line: UTIL_CONF(kind, struct, field, min, max, extra, default, doc). */
enum util_conf_kind {
    UTIL_CONF_BOOL,     /* int: yes/true/on/1 or no/false/off/0 */
    UTIL_CONF_INT,      /* int in min..max */
    UTIL_CONF_INT64,    /* int64_t in min..max */
    UTIL_CONF_DURATION, /* int64_t seconds: 90s, 15m, 12h, 4d (or plain seconds) */
    UTIL_CONF_MS,       /* int milliseconds: 250ms, or 10s, 2m (at most 1h); at most max */
    UTIL_CONF_SIZE,     /* size_t bytes: 4096, 64k, 16M, 1G, in min..max */
    UTIL_CONF_CHOICE,   /* int: the index in choices (extra) of the value */
    UTIL_CONF_STRING,   /* char[]: any text; with choices (extra), one of them */
    UTIL_CONF_PATH,     /* char[]: a file; relative to the configuration file's folder */
    UTIL_CONF_URL_PATH, /* char[]: a URL path, starting with '/' */
    UTIL_CONF_CUSTOM    /* the owner's parser (extra) sets the field */
};

struct util_conf_directive;
/* A UTIL_CONF_CUSTOM parser: sets d's field of config (the section's struct) from value, or
 * returns UTIL_EINVAL with a reason that names d->name in err. */
typedef int (*util_conf_parse_fn)(const struct util_conf_directive *d, void *config,
                                  const char *value, char *err, size_t err_len);

struct util_conf_directive {
    const char *name;
    enum util_conf_kind kind;
    size_t offset;              /* offsetof() the field in the module's config struct */
    size_t size;                /* sizeof() the field (the bound of the text kinds) */
    int64_t min, max;           /* INT, INT64, MS, SIZE: the accepted range */
    const char *const *choices; /* CHOICE, STRING: the names, NULL-terminated */
    util_conf_parse_fn parse;   /* CUSTOM */
    const char *dflt;           /* the default, as conf/pkiva.conf writes it */
    const char *doc;            /* one line: what it is */
};

/* One directive of a table: kind is the suffix of UTIL_CONF_* (INT, PATH, ...), field a member
 * of type (nested members allowed), extra the choices (CHOICE, STRING) or the parser (CUSTOM). */
#define UTIL_CONF(kind, name, type, field, min, max, extra, dflt, doc)                       \
    {                                                                                        \
        name, UTIL_CONF_##kind, offsetof(type, field), sizeof(((type *)0)->field), min, max, \
            UTIL_CONF_CHOICES_##kind(extra), UTIL_CONF_PARSE_##kind(extra), dflt, doc        \
    }
#define UTIL_CONF_CHOICES_BOOL(x) NULL
#define UTIL_CONF_CHOICES_INT(x) NULL
#define UTIL_CONF_CHOICES_INT64(x) NULL
#define UTIL_CONF_CHOICES_DURATION(x) NULL
#define UTIL_CONF_CHOICES_MS(x) NULL
#define UTIL_CONF_CHOICES_SIZE(x) NULL
#define UTIL_CONF_CHOICES_CHOICE(x) x
#define UTIL_CONF_CHOICES_STRING(x) x
#define UTIL_CONF_CHOICES_PATH(x) NULL
#define UTIL_CONF_CHOICES_URL_PATH(x) NULL
#define UTIL_CONF_CHOICES_CUSTOM(x) NULL
#define UTIL_CONF_PARSE_BOOL(x) NULL
#define UTIL_CONF_PARSE_INT(x) NULL
#define UTIL_CONF_PARSE_INT64(x) NULL
#define UTIL_CONF_PARSE_DURATION(x) NULL
#define UTIL_CONF_PARSE_MS(x) NULL
#define UTIL_CONF_PARSE_SIZE(x) NULL
#define UTIL_CONF_PARSE_CHOICE(x) NULL
#define UTIL_CONF_PARSE_STRING(x) NULL
#define UTIL_CONF_PARSE_PATH(x) NULL
#define UTIL_CONF_PARSE_URL_PATH(x) NULL
#define UTIL_CONF_PARSE_CUSTOM(x) x
/* A number as the text of a default: UTIL_CONF_STR(HSM_ECDSA_VERIFY_DEFAULT). */
#define UTIL_CONF_STR(x) UTIL_CONF_STR_(x)
#define UTIL_CONF_STR_(x) #x

/* Applies every default of table (n directives) to config; a default that does not parse is a
 * bug of the table, logged. */
void util_conf_defaults(const struct util_conf_directive *table, size_t n, void *config);
/* Sets the directive key of table to value in config; base_dir (NULL = none) resolves relative
 * PATH values. Returns 0; UTIL_EINVAL with the reason, naming the directive, in err (without file
 * and line: the reader adds them); UTIL_ENOTFOUND when table has no such key. */
int util_conf_set(const struct util_conf_directive *table, size_t n, void *config, const char *key,
                  const char *value, const char *base_dir, char *err, size_t err_len);
/* The error helper of CUSTOM parsers: formats err and returns UTIL_EINVAL. */
int util_conf_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* "90s", "15m", "12h", "4d" or plain seconds -> seconds; "4096", "64k", "16M", "1G" -> bytes. */
int util_parse_duration(const char *text, int64_t *seconds);
int util_parse_size(const char *text, int64_t *bytes);

#endif
