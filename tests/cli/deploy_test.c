/* SPDX-License-Identifier: Apache-2.0 */
/* Deploying pkiva as a service (issue 19), with the real binary and a real SoftHSM2 token: the
 * bundled sample configuration (conf/pkiva.conf) pointed at a token and certificates made by the
 * embedded demo stands for a real CA's files. `pkiva config check` touches nothing, `pkiva init
 * --config` proves every key signs for its certificate, creates the store and registers the
 * issuers (twice: idempotent), refuses a wrong or missing key without changing anything, and
 * `pkiva import` before it says what to run. Every command's --help is its own and --version
 * prints the CMake project version. `pkiva serve` survives SIGHUP (log_level applied, other
 * changes named as needing a restart) and tells systemd READY=1 only once /readyz is 200. */
#include "../reliability/rel.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* One server folder per test (criterion runs each test in its own process). The suite's fini
 * removes it and kills a server left running, also after a failed assertion. */
static struct rel_server the_server;

static void teardown(void)
{
    if (the_server.dir[0] != '\0')
        rel_teardown(&the_server);
}

TestSuite(deploy, .fini = teardown);

/* DIR/etc/pkiva.conf: the bundled sample with its /etc/pkiva and /var/lib/pkiva paths replaced
 * by the demo's token and PKI and a fresh state folder DIR/state (not created). */
static void write_real_conf(struct rel_server *s)
{
    char out[4096];
    int rc = rel_sh(s, out, sizeof(out),
                    "mkdir -p %s/etc && sed -e 's#/var/lib/pkiva#%s/state#g' "
                    "-e 's#/etc/pkiva/user.pin#%s/hsm/user.pin#' "
                    "-e 's@^# softhsm_conf = .*@softhsm_conf = %s/hsm/softhsm2.conf@' "
                    "-e 's#/etc/pkiva/admin.token#%s/admin.token#' "
                    "-e 's#/etc/pkiva/#%s/pki/#g' "
                    "-e 's#require_clock_sync = yes#require_clock_sync = no#' "
                    "%s/conf/pkiva.conf > %s/etc/pkiva.conf 2>&1",
                    s->dir, s->dir, s->data, s->data, s->data, s->data, PKIVA_SOURCE_DIR, s->dir);
    cr_assert_eq(rc, 0, "%s", out);
}

static int file_exists(const char *dir, const char *name)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

Test(deploy, init_config_checks_keys_creates_store_and_is_idempotent, .timeout = 120)
{
    struct rel_server *s = &the_server;
    char out[16384];
    int rc;
    rel_setup(s);
    write_real_conf(s);

    /* Before init: import says what to run; config check validates and creates nothing. */
    rc = rel_sh(s, out, sizeof(out),
                REL_PKIVA " import --config %s/etc/pkiva.conf --index /dev/null --issuer demo-ca "
                          "2>&1",
                s->dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "run 'pkiva init --config") != NULL, "%s", out);
    rc = rel_sh(s, out, sizeof(out), REL_PKIVA " config check --config %s/etc/pkiva.conf 2>&1",
                s->dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "valid (1 issuer, 1 TSA unit)") != NULL, "%s", out);
    cr_assert(strstr(out, "HSM outage budget 10800 s") != NULL, "%s", out);
    cr_assert(strstr(out, "does not exist yet") != NULL, "%s", out);
    cr_assert(!file_exists(s->dir, "state"), "config check created the state folder");

    /* init: every key signs for its certificate; store created; issuers registered. */
    rc = rel_sh(s, out, sizeof(out), REL_PKIVA " init --config %s/etc/pkiva.conf 2>&1", s->dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "ok  [issuer.demo-ca] key") != NULL, "%s", out);
    cr_assert(strstr(out, "ok  [issuer.demo-ca] ocsp_key") != NULL, "%s", out);
    cr_assert(strstr(out, "ok  [tsa.main] key") != NULL, "%s", out);
    cr_assert(strstr(out, "created") != NULL, "%s", out);
    cr_assert(strstr(out, "new issuer demo-ca") != NULL, "%s", out);
    cr_assert(strstr(out, "freshness contract: deadline 43200 s") != NULL, "%s", out);
    cr_assert(strstr(out, "pkiva import --config") != NULL, "%s", out);
    cr_assert(file_exists(s->dir, "state/pkiva.db"));
    cr_assert(file_exists(s->dir, "state/crl"));

    /* Again: nothing changes, and it says so. */
    rc = rel_sh(s, out, sizeof(out), REL_PKIVA " init --config %s/etc/pkiva.conf 2>&1", s->dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "exists, schema current") != NULL, "%s", out);
    cr_assert(strstr(out, "ok  issuer demo-ca") != NULL, "%s", out);

    /* The operator commands now work on the store init made. */
    rc = rel_sh(s, out, sizeof(out),
                REL_PKIVA " import --config %s/etc/pkiva.conf pki/demo-good.pem 2>&1", s->dir);
    cr_assert_eq(rc, 0, "%s", out);
    rc = rel_sh(s, out, sizeof(out),
                REL_PKIVA " status --config %s/etc/pkiva.conf --cert pki/demo-good.pem 2>&1",
                s->dir);
    cr_assert_eq(rc, 0, "%s", out);
    cr_assert(strstr(out, "good") != NULL, "%s", out);
}

Test(deploy, init_refuses_a_key_that_is_not_the_certificates_and_changes_nothing, .timeout = 120)
{
    struct rel_server *s = &the_server;
    char out[16384];
    int rc;
    rel_setup(s);
    write_real_conf(s);
    /* The TSA's key where the OCSP responder's belongs: it signs, but not for that certificate. */
    rc = rel_sh(s, out, sizeof(out),
                "sed -i 's#object=ocsp-responder#object=tsa#' %s/etc/pkiva.conf && " REL_PKIVA
                " init --config %s/etc/pkiva.conf 2>&1",
                s->dir, s->dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "do not belong together") != NULL, "%s", out);
    cr_assert(strstr(out, "nothing was changed") != NULL, "%s", out);
    cr_assert(!file_exists(s->dir, "state"), "a refused init created the state folder");
    /* A URI that names no key. */
    rc = rel_sh(s, out, sizeof(out),
                "sed -i 's#object=tsa;type=private#object=no-such-key;type=private#' "
                "%s/etc/pkiva.conf && " REL_PKIVA " init --config %s/etc/pkiva.conf 2>&1",
                s->dir, s->dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "object=no-such-key;type=private: no such private key in the token") !=
                  NULL,
              "%s", out);
    cr_assert(!file_exists(s->dir, "state"));
}

Test(deploy, config_check_names_each_problem, .timeout = 60)
{
    struct rel_server *s = &the_server;
    char out[16384];
    int rc;
    rel_setup(s);
    write_real_conf(s);
    rc = rel_sh(s, out, sizeof(out),
                "chmod 0644 hsm/user.pin && sed -i 's#pki/tsa.pem#pki/missing.pem#' "
                "%s/etc/pkiva.conf && " REL_PKIVA " config check --config %s/etc/pkiva.conf 2>&1",
                s->dir, s->dir);
    cr_assert_eq(rc, 1, "%s", out);
    cr_assert(strstr(out, "[hsm] pin_file") != NULL && strstr(out, "chmod 0600") != NULL, "%s",
              out);
    cr_assert(strstr(out, "[tsa.main] cert") != NULL, "%s", out);
    cr_assert(strstr(out, "2 problems") != NULL, "%s", out);
    rc = rel_sh(s, out, sizeof(out), REL_PKIVA " config check 2>&1");
    cr_assert_eq(rc, 2, "%s", out);
}

Test(deploy, every_command_has_its_own_help_and_version_is_cmakes, .timeout = 60)
{
    static const char *const commands[] = {"serve",    "init",   "revoke", "supersede",
                                           "unrevoke", "status", "import", "audit",
                                           "crl",      "tsa",    "sla",    "config"};
    char out[8192], cmd[256], want[64];
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        snprintf(cmd, sizeof(cmd), REL_PKIVA " %s --help 2>&1", commands[i]);
        cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s: %s", cmd, out);
        snprintf(want, sizeof(want), "usage: pkiva %s ", commands[i]);
        cr_assert(strncmp(out, want, strlen(want)) == 0, "%s prints: %s", cmd, out);
        /* The top-level usage lists it. */
        cr_assert_eq(ts_run(REL_PKIVA " --help", out, sizeof(out)), 0);
        snprintf(want, sizeof(want), "\n  %s ", commands[i]);
        cr_assert(strstr(out, want) != NULL, "pkiva --help does not list %s", commands[i]);
    }
    cr_assert_eq(ts_run(REL_PKIVA " --version", out, sizeof(out)), 0);
    cr_assert_str_eq(out, "pkiva " PKIVA_VERSION "\n");
}

/* The server log as last read by log_has, for failure messages. */
static char log_text[65536];

/* Waits (bounded) for text in the server log. */
static int log_has(const struct rel_server *s, const char *text, int timeout_ms)
{
    char *out = log_text;
    size_t out_len = sizeof(log_text);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "cat %s", s->log);
    for (int waited = 0; waited <= timeout_ms; waited += 50) {
        if (ts_run(cmd, out, out_len) == 0 && strstr(out, text) != NULL)
            return 1;
        rel_sleep_ms(50);
    }
    return 0;
}

Test(deploy, sighup_applies_log_level_and_names_what_needs_a_restart, .timeout = 120)
{
    struct rel_server *s = &the_server;
    char body[256];
    rel_setup(s);
    rel_start(s, 60);
    rel_conf_append(s, "[server]\nlog_level = debug\nmax_connections = 500\n");
    cr_assert_eq(kill(s->pid, SIGHUP), 0);
    cr_assert(log_has(s, "[server] max_connections was added: it takes effect only after a restart",
                      10000),
              "%s", log_text);
    cr_assert(log_has(s, "log_level = debug applied", 10000), "%s", log_text);
    cr_assert_eq(rel_get(s->port, "/healthz", body, sizeof(body), 5000), 200,
                 "the server did not survive SIGHUP");
    /* A file that does not validate changes nothing and is said to. */
    rel_conf_append(s, "[server]\nmax_connections = many\n");
    cr_assert_eq(kill(s->pid, SIGHUP), 0);
    cr_assert(log_has(s, "nothing changed (the running configuration stays)", 10000), "%s",
              log_text);
    cr_assert_eq(rel_get(s->port, "/healthz", body, sizeof(body), 5000), 200);
    cr_assert_eq(rel_stop(s), 0);
}

Test(deploy, systemd_hears_ready_only_when_readyz_is_200_and_stopping_at_the_end, .timeout = 120)
{
#ifndef PKIVA_HAVE_SYSTEMD
    cr_skip_test("built with PKIVA_SYSTEMD=OFF: no sd_notify");
#else
    struct rel_server *s = &the_server;
    struct sockaddr_un addr;
    char msg[512], body[256];
    int fd, got_ready = 0, got_stopping = 0;
    rel_setup(s);
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0);
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/notify.sock", s->dir);
    cr_assert_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    {
        struct timeval tv = {0, 200000};
        cr_assert_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    }
    /* The server inherits it, as from systemd. */
    cr_assert_eq(setenv("NOTIFY_SOCKET", addr.sun_path, 1), 0);
    rel_start(s, 60);
    cr_assert_eq(unsetenv("NOTIFY_SOCKET"), 0);
    for (int i = 0; i < 100 && !got_ready; i++) {
        ssize_t n = recv(fd, msg, sizeof(msg) - 1, 0);
        if (n > 0) {
            msg[n] = '\0';
            got_ready = strstr(msg, "READY=1") != NULL;
        }
    }
    cr_assert(got_ready, "no READY=1 within 20 s");
    cr_assert_eq(rel_get(s->port, "/readyz", body, sizeof(body), 5000), 200, "%s", body);
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 100 && !got_stopping; i++) {
        ssize_t n = recv(fd, msg, sizeof(msg) - 1, 0);
        if (n > 0) {
            msg[n] = '\0';
            got_stopping = strstr(msg, "STOPPING=1") != NULL;
        }
    }
    cr_assert(got_stopping, "no STOPPING=1 at SIGTERM");
    /* One SIGTERM, as systemd sends: the graceful stop ends with exit status 0. */
    {
        int status = -1;
        for (int i = 0; i < 400 && waitpid(s->pid, &status, WNOHANG) != s->pid; i++)
            rel_sleep_ms(50);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d: %s", status,
                  (log_has(s, "", 0), log_text));
        s->pid = 0;
    }
    close(fd);
#endif
}
