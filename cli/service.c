/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva serve` as a system service: tells systemd (sd_notify, Type=notify) that the service is
 * ready once /readyz would answer 200, keeps the unit's status line equal to /readyz's reason,
 * says when it stops, and handles SIGHUP by reading the configuration file again: what can change
 * safely while serving (log_level) is applied at once, every other changed directive is named in
 * the log as needing a restart, and a file that does not validate changes nothing.
 *
 * One thread, started once the server is up and stopped before it is torn down. The SIGHUP
 * handler only writes a byte into a self-pipe; the thread does the work. Without libsystemd
 * (PKIVA_SYSTEMD=OFF) the notifications are no-ops and SIGHUP works the same. */
#define _GNU_SOURCE /* pipe2 */
#include "cli_int.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <util/util.h>
#ifdef PKIVA_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#define MOD "service"
/* Directives compared on SIGHUP at most; a file with more is reported as "too large to compare"
 * (the bundled sample has about 90). */
#define SERVICE_MAX_DIRECTIVES 512
/* How often readiness is looked at before READY=1 and, afterwards, for the status line. */
#define SERVICE_READY_POLL_MS 100
#define SERVICE_STATUS_POLL_MS 1000

struct directive {
    char key[96]; /* "section\nname" */
    char value[CLI_PATH_MAX];
};

struct directives {
    int n;
    int too_many;
    struct directive d[SERVICE_MAX_DIRECTIVES];
};

struct cli_service {
    const struct cli_config *cfg;
    int (*ready)(void *ctx, char *why, size_t why_len);
    void *ready_ctx;
    pthread_t thread;
    struct directives *running; /* the file as it was when the server started */
};

/* The self-pipe: written by the SIGHUP handler ('h') and by cli__service_stop ('q'). */
static int wake_pipe[2] = {-1, -1};
/* The configuration file as it was when serve started (cli__service_signals reads it, before
 * the listeners open); the service thread takes it over. */
static struct directives *started_with;

static void on_sighup(int signum)
{
    int saved = errno;
    char byte = 'h';
    (void)signum;
    (void)write(wake_pipe[1], &byte, 1); /* a full pipe already holds a pending wake-up */
    errno = saved;
}

static void notify(const char *state)
{
#ifdef PKIVA_HAVE_SYSTEMD
    /* Returns 0 without NOTIFY_SOCKET (not started by systemd) and < 0 on a send error, which
     * only costs systemd a status line; readiness itself is retried by the caller. */
    (void)sd_notify(0, state);
#else
    (void)state;
#endif
}

static int collect(void *user, const char *section, const char *name, const char *value)
{
    struct directives *ds = user;
    char key[96];
    (void)snprintf(key, sizeof(key), "%s\n%s", section, name); /* longer names are refused by
                                                                   the config parser anyway */
    for (int i = 0; i < ds->n; i++) {
        if (strcmp(ds->d[i].key, key) == 0) { /* a repeated directive: the last one counts */
            (void)snprintf(ds->d[i].value, sizeof(ds->d[i].value), "%s", value);
            return 1;
        }
    }
    if (ds->n == SERVICE_MAX_DIRECTIVES) {
        ds->too_many = 1;
        return 1;
    }
    (void)snprintf(ds->d[ds->n].key, sizeof(ds->d[ds->n].key), "%s", key);
    (void)snprintf(ds->d[ds->n].value, sizeof(ds->d[ds->n].value), "%s", value);
    ds->n++;
    return 1;
}

/* Reads the directives of path as written (after the last of repeated ones); NULL if the file
 * cannot be read or memory ran out. */
static struct directives *read_directives(const char *path)
{
    struct directives *ds = calloc(1, sizeof(*ds));
    if (ds == NULL)
        return NULL;
    if (ini_parse(path, collect, ds) < 0) {
        free(ds);
        return NULL;
    }
    return ds;
}

static const char *find(const struct directives *ds, const char *key)
{
    for (int i = 0; i < ds->n; i++)
        if (strcmp(ds->d[i].key, key) == 0)
            return ds->d[i].value;
    return NULL;
}

static void report_change(const char *key, const char *verb)
{
    char section[96];
    const char *nl = strchr(key, '\n');
    size_t len = nl ? (size_t)(nl - key) : strlen(key);
    (void)snprintf(section, sizeof(section), "%.*s", (int)len, key);
    UTIL_WARN(MOD, "SIGHUP: [%s] %s %s: it takes effect only after a restart", section,
              nl ? nl + 1 : "", verb);
}

static void reload(struct cli_service *svc)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    struct cli_config *fresh = NULL;
    struct directives *now = NULL;
    char err[1024];
    int restart_needed = 0;

    fresh = calloc(1, sizeof(*fresh));
    if (fresh == NULL) {
        UTIL_ERROR(MOD, "SIGHUP: out of memory; nothing changed");
        goto out;
    }
    if (cli_config_load(svc->cfg->source, fresh, err, sizeof(err)) != UTIL_OK) {
        UTIL_ERROR(MOD, "SIGHUP: %s; nothing changed (the running configuration stays)", err);
        goto out;
    }
    now = read_directives(svc->cfg->source);
    if (now == NULL || svc->running == NULL || now->too_many || svc->running->too_many) {
        UTIL_WARN(MOD,
                  "SIGHUP: cannot compare %s with the running configuration; only "
                  "log_level is applied, restart to apply anything else",
                  svc->cfg->source);
        restart_needed = 1;
    } else {
        for (int i = 0; i < now->n; i++) {
            const char *old = find(svc->running, now->d[i].key);
            if (strcmp(now->d[i].key, "server\nlog_level") == 0)
                continue;
            if (old == NULL) {
                report_change(now->d[i].key, "was added");
                restart_needed = 1;
            } else if (strcmp(old, now->d[i].value) != 0) {
                report_change(now->d[i].key, "changed");
                restart_needed = 1;
            }
        }
        for (int i = 0; i < svc->running->n; i++) {
            if (strcmp(svc->running->d[i].key, "server\nlog_level") != 0 &&
                find(now, svc->running->d[i].key) == NULL) {
                report_change(svc->running->d[i].key, "was removed");
                restart_needed = 1;
            }
        }
    }
    for (int i = 0; i < 4; i++)
        if (strcmp(fresh->log_level, levels[i]) == 0)
            util_log_set_level((enum util_log_level)i);
    /* Logged at warn so that it shows whatever the new level is. */
    UTIL_WARN(MOD, "SIGHUP: %s read again: log_level = %s applied%s", svc->cfg->source,
              fresh->log_level,
              restart_needed ? "; the changes named above need `systemctl restart pkiva`"
                             : "; nothing else changed");
out:
    free(now);
    free(fresh);
}

static void *service_main(void *arg)
{
    struct cli_service *svc = arg;
    char why[256] = "", last[256] = "\1";
    int ready_sent = 0;

    util_thread_name("service", -1);
    for (;;) {
        struct pollfd pfd = {wake_pipe[0], POLLIN, 0};
        int n = poll(&pfd, 1, ready_sent ? SERVICE_STATUS_POLL_MS : SERVICE_READY_POLL_MS);
        if (n > 0) {
            char bytes[16];
            ssize_t got = read(wake_pipe[0], bytes, sizeof(bytes));
            int quit = 0, hup = 0;
            for (ssize_t i = 0; i < got; i++) {
                quit |= bytes[i] == 'q';
                hup |= bytes[i] == 'h';
            }
            if (quit)
                break;
            if (hup)
                reload(svc);
        }
        /* The same test /readyz makes (HSM, store, TSA clock). */
        if (svc->ready(svc->ready_ctx, why, sizeof(why))) {
            if (!ready_sent) {
                notify("READY=1\nSTATUS=serving");
                ready_sent = 1;
                UTIL_INFO(MOD, "ready (/readyz 200)");
            } else if (strcmp(last, "") != 0) {
                notify("STATUS=serving");
            }
            last[0] = '\0';
        } else if (strcmp(last, why) != 0) {
            char status[300];
            (void)snprintf(status, sizeof(status), "STATUS=not ready: %s", why);
            notify(status);
            (void)snprintf(last, sizeof(last), "%s", why);
        }
    }
    return NULL;
}

int cli__service_signals(const struct cli_config *cfg)
{
    struct sigaction sa;
    /* NULL (unreadable now, out of memory) is handled at SIGHUP: only log_level is applied. */
    free(started_with);
    started_with = read_directives(cfg->source);
    if (wake_pipe[0] < 0 && pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        UTIL_ERROR(MOD, "pipe: %s", strerror(errno));
        return util_errno(errno);
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sighup;
    sa.sa_flags = SA_RESTART;
    (void)sigemptyset(&sa.sa_mask); /* cannot fail with a valid pointer */
    if (sigaction(SIGHUP, &sa, NULL) != 0) {
        UTIL_ERROR(MOD, "sigaction(SIGHUP): %s", strerror(errno));
        return util_errno(errno);
    }
    return UTIL_OK;
}

int cli__service_start(const struct cli_config *cfg, int (*ready)(void *, char *, size_t),
                       void *ctx, struct cli_service **out)
{
    struct cli_service *svc = NULL;
    int rc;

    *out = NULL;
    if (wake_pipe[0] < 0)
        return UTIL_EINVAL; /* cli__service_signals first */
    svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return UTIL_ENOMEM;
    svc->cfg = cfg;
    svc->ready = ready;
    svc->ready_ctx = ctx;
    svc->running = started_with;
    started_with = NULL;
    rc = pthread_create(&svc->thread, NULL, service_main, svc);
    if (rc != 0) {
        free(svc->running);
        free(svc);
        return util_errno(rc);
    }
    *out = svc;
    return UTIL_OK;
}

void cli__service_stop(struct cli_service *svc)
{
    char byte = 'q';
    if (svc == NULL)
        return;
    notify("STOPPING=1\nSTATUS=stopping: publishing what is pending");
    /* The pipe is non-blocking: if it is full, the thread wakes anyway and reads the 'q' queued
     * behind the 'h's, so retry until the byte went in. */
    while (write(wake_pipe[1], &byte, 1) != 1 && errno == EAGAIN)
        (void)poll(NULL, 0, 10);           /* the thread is draining the pipe */
    (void)pthread_join(svc->thread, NULL); /* joinable, not joined before: cannot fail */
    free(svc->running);
    free(svc);
}
