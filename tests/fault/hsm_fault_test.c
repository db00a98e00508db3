/* SPDX-License-Identifier: Apache-2.0 */
/* Issue #8, "the HSM goes away and comes back" (and the same for the store), proved against the
 * real `pkiva serve` with real clients (openssl ocsp, curl, sqlite3). The token is SoftHSM2 seen
 * through libp11fault (p11fault.c), which fails, slows or unplugs it while a control file says so.
 * What must hold: pre-signed OCSP answers keep flowing, live (nonce) requests get tryLater fast,
 * /readyz says why, no loop blocks, and after the fault ends everything heals without a restart. */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PKIVA PKIVA_BINARY_DIR "/cli/pkiva"
#define SOFTHSM_LINE "module = " TS_SOFTHSM_MODULE

/* Bounds the issue sets: how fast a shed or cached answer must come, how soon things heal. */
#define FAST_MS 1000     /* a cached OCSP answer or /healthz, including the client's start-up */
#define TRYLATER_MS 2000 /* a live request while the token is away */
#define HEAL_MS 10000    /* from the token's return to signing and /readyz 200 */

struct server {
    char dir[256];
    char data[300];
    char fault[300];
    int port, admin_port;
    pid_t pid;
};

static struct server srv;

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Runs a shell command in the data folder with the token's environment; output in out. */
static int sh(char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int sh(char *out, size_t out_len, const char *fmt, ...)
{
    char cmd[4096];
    char full[4600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && SOFTHSM2_CONF=%s/hsm/softhsm2.conf %s", srv.data,
             srv.data, cmd);
    return ts_run(full, out, out_len);
}

/* `pkiva init` with our ports written into the config, then [hsm] module pointed at the fault
 * module. init_args: more `pkiva init` arguments, or NULL; edit: more sed expressions for
 * pkiva.conf, or NULL. */
static void init_data_with(const char *init_args, const char *edit)
{
    char out[8192];

    memset(&srv, 0, sizeof(srv));
    cr_assert_eq(ts_tmpdir(srv.dir, sizeof(srv.dir)), 0);
    snprintf(srv.data, sizeof(srv.data), "%s/var", srv.dir);
    snprintf(srv.fault, sizeof(srv.fault), "%s/fault", srv.dir);
    srv.port = ts_free_port();
    srv.admin_port = ts_free_port();
    {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 PKIVA " init --data %s --listen 127.0.0.1:%d --admin-listen 127.0.0.1:%d %s 2>&1",
                 srv.data, srv.port, srv.admin_port, init_args != NULL ? init_args : "");
        cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    }
    cr_assert_eq(sh(out, sizeof(out), "grep -c '^%s$' pkiva.conf", SOFTHSM_LINE), 0,
                 "the generated config no longer names SoftHSM2's module: %s", out);
    cr_assert_eq(sh(out, sizeof(out), "sed -i -e 's|^%s$|module = %s|' %s%s pkiva.conf 2>&1",
                    SOFTHSM_LINE, P11FAULT_MODULE, edit ? "-e " : "", edit ? edit : ""),
                 0, "%s", out);
}

static void init_data(const char *edit)
{
    init_data_with(NULL, edit);
}

/* ASan builds (tests/asan-ctest.sh sets LSAN_OPTIONS): pkcs11-provider 1.0 leaks small objects
 * on some PKCS#11 failure paths, which only this suite provokes in the product; the servers of
 * this suite only read lsan-fault.supp, which names the provider. The default unwinder stops at
 * OpenSSL's allocator (no frame pointers), so these servers unwind slowly, but only five frames
 * (malloc, OPENSSL_zalloc and three callers): enough to name the provider where it allocated
 * itself, not where OpenSSL allocated for pkiva deeper down, and cheap enough for the timing
 * checks of this suite. A report from here shows those five frames; to see the whole stack rerun
 * the test with a larger malloc_context_size.
 * Runs in the child before exec; the strings stay valid because exec copies the environment. */
static void sanitizer_env_for_faults(void)
{
    static char lsan[2048], asan[2048];
    const char *lsan_was = getenv("LSAN_OPTIONS");
    const char *asan_was = getenv("ASAN_OPTIONS");

    if (lsan_was == NULL)
        return;
    snprintf(lsan, sizeof(lsan), "%s:suppressions=%s/tests/fault/lsan-fault.supp", lsan_was,
             PKIVA_SOURCE_DIR);
    snprintf(asan, sizeof(asan), "%s%sfast_unwind_on_malloc=0:malloc_context_size=5",
             asan_was != NULL ? asan_was : "", asan_was != NULL ? ":" : "");
    (void)setenv("LSAN_OPTIONS", lsan, 1); /* at worst the default suppressions apply */
    (void)setenv("ASAN_OPTIONS", asan, 1);
}

static void start(const char *extra_env)
{
    char listen[64], admin[64], log[400];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", srv.port);
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", srv.admin_port);
    snprintf(log, sizeof(log), "%s/server.log", srv.dir);
    srv.pid = fork();
    cr_assert_geq(srv.pid, 0);
    if (srv.pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        setenv("PKIVA_P11FAULT_CONTROL", srv.fault, 1);
        setenv("PKIVA_P11FAULT_TRACE", "1", 1);
        sanitizer_env_for_faults();
        if (extra_env != NULL)
            putenv((char *)extra_env);
        execl(PKIVA, "pkiva", "serve", "--data", srv.data, "--listen", listen, "--admin-listen",
              admin, (char *)NULL);
        _exit(127);
    }
}

/* GET over curl; returns the HTTP status (0: no answer), the body in body. */
static int http_get(int port, const char *path, char *body, size_t body_len)
{
    static char buf[65536]; /* /metrics has a few lines per HSM key; one test thread */
    char cmd[1024];
    char *nl;
    buf[0] = '\0';
    /* The embedded default's admin listener speaks HTTPS (mutual TLS, token also accepted);
     * every route there, /metrics included, wants the operator's certificate (or the token). */
    if (port == srv.admin_port)
        snprintf(cmd, sizeof(cmd),
                 "curl -s --max-time 5 --cacert %s/admin/admin-ca.pem --cert "
                 "%s/admin/operator.pem --key %s/admin/operator.key -w '\\n%%{http_code}' "
                 "https://127.0.0.1:%d%s",
                 srv.data, srv.data, srv.data, port, path);
    else
        snprintf(cmd, sizeof(cmd),
                 "curl -s --max-time 5 -w '\\n%%{http_code}' http://127.0.0.1:%d%s", port, path);
    ts_run(cmd, buf, sizeof(buf));
    nl = strrchr(buf, '\n');
    if (nl == NULL)
        return 0;
    *nl = '\0';
    if (body != NULL)
        snprintf(body, body_len, "%s", buf);
    return atoi(nl + 1);
}

static void server_log_tail(char *out, size_t len)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "grep -v '^p11fault' %s/server.log | tail -15", srv.dir);
    ts_run(cmd, out, len);
}

static void wait_ready(void)
{
    char log[8192] = "";
    for (int i = 0; i < 600; i++) {
        int status;
        if (waitpid(srv.pid, &status, WNOHANG) == srv.pid) {
            srv.pid = 0;
            server_log_tail(log, sizeof(log));
            cr_assert_fail("pkiva exited during start-up: %s", log);
        }
        if (http_get(srv.port, "/readyz", NULL, 0) == 200)
            return;
        sleep_ms(100);
    }
    server_log_tail(log, sizeof(log));
    cr_assert_fail("pkiva not ready within 60 s: %s", log);
}

/* The server is the same process it was: healing happened without a restart. */
static void assert_still_running(void)
{
    int status;
    cr_assert_eq(waitpid(srv.pid, &status, WNOHANG), 0, "pkiva exited");
    cr_assert_eq(kill(srv.pid, 0), 0);
}

static void teardown(void)
{
    if (srv.pid > 0) {
        int status;
        kill(srv.pid, SIGTERM);
        for (int i = 0; i < 100 && waitpid(srv.pid, &status, WNOHANG) == 0; i++)
            sleep_ms(50);
        kill(srv.pid, SIGKILL); /* harmless if it has exited */
        waitpid(srv.pid, &status, 0);
        srv.pid = 0;
    }
    ts_rmrf(srv.dir);
}

/* Writes the control file with a rename, so the module sees one whole new version. */
static void fault_set(const char *what)
{
    char tmp[320];
    FILE *f;
    snprintf(tmp, sizeof(tmp), "%s.tmp", srv.fault);
    f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fprintf(f, "%s\n", what);
    fclose(f);
    cr_assert_eq(rename(tmp, srv.fault), 0);
}

static void fault_clear(void)
{
    cr_assert_eq(unlink(srv.fault), 0);
}

/* openssl ocsp for a demo certificate; returns the elapsed milliseconds, output in out. */
static long ocsp(const char *cert, int nonce, char *out, size_t out_len)
{
    long start = now_ms();
    sh(out, out_len,
       "openssl ocsp -issuer pki/issuing-ca.pem -cert pki/%s -url http://127.0.0.1:%d/ "
       "-CAfile pki/root-ca.pem -verify_other pki/issuing-ca.pem -timeout 10 %s 2>&1",
       cert, srv.port, nonce ? "-nonce" : "-no_nonce");
    return now_ms() - start;
}

static void assert_cached_answers(const char *when)
{
    char out[8192];
    long ms = ocsp("demo-good.pem", 0, out, sizeof(out));
    cr_assert(strstr(out, "demo-good.pem: good") != NULL, "%s: %s", when, out);
    cr_assert(strstr(out, "Response verify OK") != NULL, "%s: %s", when, out);
    cr_assert_lt(ms, FAST_MS, "%s: a pre-signed answer took %ld ms", when, ms);
    ms = ocsp("demo-revoked.pem", 0, out, sizeof(out));
    cr_assert(strstr(out, "demo-revoked.pem: revoked") != NULL, "%s: %s", when, out);
    cr_assert_lt(ms, FAST_MS, "%s: a pre-signed answer took %ld ms", when, ms);
}

static int live_answer_ok(char *out, size_t out_len)
{
    ocsp("demo-good.pem", 1, out, out_len);
    return strstr(out, "demo-good.pem: good") != NULL && strstr(out, "Response verify OK") &&
           strstr(out, "WARNING: no nonce") == NULL && strstr(out, "nonce verify error") == NULL;
}

/* The number of the CRL the server serves now, -1 if none could be read. */
static long crl_number(void)
{
    char out[256] = "";
    if (sh(out, sizeof(out),
           "curl -sf --max-time 5 http://127.0.0.1:%d/crl/demo-ca.crl | openssl crl -inform DER "
           "-noout -crlnumber 2>&1",
           srv.port) != 0)
        return -1;
    /* "crlNumber=0x0A" */
    return strstr(out, "=0x") ? strtol(strstr(out, "=0x") + 3, NULL, 16) : -1;
}

/* /readyz says the keys work, not that the first CRL and the pre-signed answers are out: on a
 * loaded machine (or an ASan build unwinding every allocation) they can come a little later.
 * Tests that check those at start wait for them first, bounded. */
static void wait_signed_at_start(void)
{
    char out[8192];
    for (int i = 0; i < 300; i++) {
        if (crl_number() > 0) {
            int good;
            (void)ocsp("demo-good.pem", 0, out, sizeof(out)); /* its time is checked later */
            good = strstr(out, "demo-good.pem: good") != NULL;
            (void)ocsp("demo-revoked.pem", 0, out, sizeof(out));
            if (good && strstr(out, "demo-revoked.pem: revoked") != NULL)
                return;
        }
        sleep_ms(200);
    }
    cr_assert_fail("no CRL or pre-signed OCSP answers within 60 s of /readyz");
}

static int metric(const char *name)
{
    static char body[65536];
    const char *p;
    cr_assert_eq(http_get(srv.admin_port, "/metrics", body, sizeof(body)), 200);
    p = strstr(body, name);
    cr_assert_not_null(p, "no %s in /metrics", name);
    return atoi(p + strlen(name) + 1);
}

/* One time stamp request through curl; the reply as openssl ts -reply -text prints it. */
static void time_stamp(char *out, size_t out_len)
{
    (void)sh(out, out_len,
             "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && curl -sS "
             "-H 'Content-Type: application/timestamp-query' --data-binary @q.tsq "
             "http://127.0.0.1:%d/tsa -o r.tsr && openssl ts -reply -in r.tsr -text 2>&1",
             srv.port);
}

/* A fresh demo, the fault in place before the server starts (its start-up self-checks meet it),
 * then the server ready. */
static void start_with_fault(const char *what)
{
    init_data(NULL);
    fault_set(what);
    start(NULL);
    wait_ready();
}

TestSuite(hsm_fault, .fini = teardown, .timeout = 60);

Test(hsm_fault, token_unplugged_then_back_heals_without_restart)
{
    char out[8192], body[512];
    long crl_before, crl_after = -1, t0, healed_ms = -1;
    int status = 0;

    init_data(NULL);
    start(NULL);
    wait_ready();
    wait_signed_at_start();
    cr_assert(live_answer_ok(out, sizeof(out)), "healthy: %s", out);
    assert_cached_answers("healthy");
    crl_before = crl_number();
    cr_assert_gt(crl_before, 0, "no CRL served at start");

    /* Unplugged: closes every session and the login, as a real removal does. */
    fault_set("down");
    t0 = now_ms();
    /* Without any signing traffic, the monitor's probe notices: /readyz says why. */
    while (now_ms() - t0 < 6000 &&
           (status = http_get(srv.port, "/readyz", body, sizeof(body))) != 503)
        sleep_ms(100);
    cr_assert_eq(status, 503, "/readyz did not notice the outage within 6 s");
    cr_assert(strstr(body, "HSM unavailable") != NULL, "%s", body);
    cr_assert_eq(http_get(srv.port, "/healthz", NULL, 0), 200, "the process is alive");

    assert_cached_answers("token away");
    /* A time stamp during the outage: systemFailure as a DER reply, at once. */
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Rejected") != NULL && strstr(out, "system failure") != NULL,
              "time stamp, token away: %s", out);
    for (int i = 0; i < 3; i++) {
        long ms = ocsp("demo-good.pem", 1, out, sizeof(out));
        cr_assert(strstr(out, "Responder Error: trylater") != NULL, "token away, nonce: %s", out);
        cr_assert_lt(ms, TRYLATER_MS, "tryLater took %ld ms", ms);
    }

    /* A CRL publication during the outage fails, and `pkiva crl publish` (which waits for it)
     * says so with a non-zero exit; the last good CRL stays served. */
    cr_assert_neq(sh(out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s",
                  out);
    cr_assert(strstr(out, "demo-ca: publication failed: HSM unavailable") != NULL, "%s", out);
    for (int i = 0; i < 50 && metric("pkiva_crl_failing{issuer=\"demo-ca\"}") != 1; i++)
        sleep_ms(100);
    cr_assert_eq(metric("pkiva_crl_failing{issuer=\"demo-ca\"}"), 1,
                 "the publication during the outage did not fail");
    cr_assert_eq(crl_number(), crl_before, "the served CRL changed during the outage");

    /* Back: within HEAL_MS live signing works again and /readyz is 200, same process. */
    fault_clear();
    t0 = now_ms();
    while (now_ms() - t0 < HEAL_MS) {
        if (live_answer_ok(out, sizeof(out)) && http_get(srv.port, "/readyz", NULL, 0) == 200) {
            healed_ms = now_ms() - t0;
            break;
        }
        sleep_ms(200);
    }
    server_log_tail(body, sizeof(body));
    cr_assert_geq(healed_ms, 0, "not healed %d ms after the token came back: %s\nlog: %s", HEAL_MS,
                  out, body);
    cr_log_info("healed %ld ms after the token came back", healed_ms);
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Granted") != NULL, "time stamp after the outage: %s", out);
    assert_still_running();
    assert_cached_answers("after the outage");

    /* CRL publication resumes: a new CRL with a higher number. */
    cr_assert_eq(sh(out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s", out);
    t0 = now_ms();
    while (now_ms() - t0 < HEAL_MS && (crl_after = crl_number()) <= crl_before)
        sleep_ms(200);
    cr_assert_gt(crl_after, crl_before, "no new CRL after the outage");
    /* The gauge clears when the whole round (full, then delta CRL) has been published, a moment
     * after the new full CRL is served. */
    t0 = now_ms();
    while (now_ms() - t0 < HEAL_MS && metric("pkiva_crl_failing{issuer=\"demo-ca\"}") != 0)
        sleep_ms(100);
    cr_assert_eq(metric("pkiva_crl_failing{issuer=\"demo-ca\"}"), 0);
    cr_assert_eq(sh(out, sizeof(out), "grep -c 'HSM available again' %s/server.log", srv.dir), 0,
                 "the recovery was not logged");
}

/* Issue 15.1: a module that lost the token's objects for the life of the process (SoftHSM2 after
 * running out of descriptors) never heals by looking the keys up again: the old monitor said
 * "not found" every 500 ms until an operator restarted pkiva. Now, after [hsm] restart_after of
 * failed reloads, pkiva exits with status 75 for its supervisor, and the new process signs. */
Test(hsm_fault, objects_lost_for_good_exit_for_a_supervisor_restart)
{
    char out[8192], log[8192];
    long t0;
    int status = 0, exited = 0;

    init_data(NULL);
    cr_assert_eq(sh(out, sizeof(out), "printf '\n[hsm]\nrestart_after = 3s\n' >> pkiva.conf"), 0);
    start(NULL);
    wait_ready();
    cr_assert(live_answer_ok(out, sizeof(out)), "healthy: %s", out);

    fault_set("lost");
    (void)live_answer_ok(out, sizeof(out)); /* a signature fails: the HSM is marked down */
    t0 = now_ms();
    while (now_ms() - t0 < 30000 && !exited) {
        exited = waitpid(srv.pid, &status, WNOHANG) == srv.pid;
        if (!exited)
            sleep_ms(100);
    }
    server_log_tail(log, sizeof(log));
    cr_assert(exited, "pkiva did not give up 30 s after its keys were lost: %s", log);
    srv.pid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 75, "exit status %d: %s", status, log);
    cr_assert(strstr(log, "so that the supervisor restarts pkiva") != NULL, "%s", log);

    /* The supervisor starts it again: a new process sees the objects and signs. */
    fault_clear();
    start(NULL);
    wait_ready();
    cr_assert(live_answer_ok(out, sizeof(out)), "after the restart: %s", out);
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Granted") != NULL, "time stamp after the restart: %s", out);
}

Test(hsm_fault, failed_signatures_recover_on_their_own)
{
    char out[8192];
    long t0;
    int ok = 0;

    init_data(NULL);
    start(NULL);
    wait_ready();
    /* Two failures with the sessions intact (a transient device error). */
    fault_set("fail-n 2");
    for (int i = 0; i < 2; i++) {
        long ms = ocsp("demo-good.pem", 1, out, sizeof(out));
        cr_assert_lt(ms, TRYLATER_MS, "took %ld ms: %s", ms, out);
    }
    t0 = now_ms();
    while (!ok && now_ms() - t0 < HEAL_MS) {
        ok = live_answer_ok(out, sizeof(out)) && http_get(srv.port, "/readyz", NULL, 0) == 200;
        if (!ok)
            sleep_ms(200);
    }
    cr_assert(ok, "not recovered after transient failures: %s", out);
    assert_cached_answers("after transient failures");
    assert_still_running();
}

Test(hsm_fault, slow_token_blocks_no_loop_and_sheds_a_flood)
{
    char out[16384], cmd[2048];
    int trylater = 0, signed_ok = 0, done = 0;

    /* One signing thread and two queue slots: the ninth request of a flood cannot wait. */
    init_data("'/^no_deinit = /a sessions = 1' -e '/^no_deinit = /a queue_max = 2'");
    start(NULL);
    wait_ready();
    wait_signed_at_start();
    cr_assert_eq(sh(out, sizeof(out),
                    "openssl ocsp -issuer pki/issuing-ca.pem -cert pki/demo-good.pem -nonce "
                    "-reqout %s/req.der 2>&1",
                    srv.dir),
                 0, "%s", out);
    fault_set("slow 2000");

    /* Ten live requests at once, in the background; each records its time and answer. */
    snprintf(cmd, sizeof(cmd),
             "cd %s && (for i in 0 1 2 3 4 5 6 7 8 9; do curl -s --max-time 30 -o resp.$i "
             "-w \"%%{time_total}\\n\" -H 'Content-Type: application/ocsp-request' "
             "--data-binary @req.der http://127.0.0.1:%d/ > time.$i & done; wait; touch flood.done)"
             " > /dev/null 2>&1 &",
             srv.dir, srv.port);
    cr_assert_eq(ts_run(cmd, NULL, 0), 0);
    sleep_ms(300);

    /* Meanwhile the loops answer at once: nothing waits for the token. */
    for (int i = 0; i < 3; i++) {
        long t0 = now_ms();
        cr_assert_eq(http_get(srv.port, "/healthz", NULL, 0), 200);
        cr_assert_lt(now_ms() - t0, FAST_MS, "/healthz took %ld ms", now_ms() - t0);
        assert_cached_answers("slow token");
    }
    cr_assert_eq(http_get(srv.port, "/readyz", NULL, 0), 200, "a slow token is not an outage");

    for (int i = 0; i < 250 && !done; i++) {
        char path[400];
        struct stat st;
        snprintf(path, sizeof(path), "%s/flood.done", srv.dir);
        done = stat(path, &st) == 0;
        if (!done)
            sleep_ms(100);
    }
    cr_assert(done, "the flood did not finish within 25 s");
    fault_clear();
    for (int i = 0; i < 10; i++) {
        double secs = 0;
        snprintf(cmd, sizeof(cmd),
                 "cd %s && cat time.%d && openssl ocsp -respin resp.%d -resp_text -noverify 2>&1",
                 srv.dir, i, i);
        ts_run(cmd, out, sizeof(out));
        secs = atof(out);
        if (strstr(out, "trylater") != NULL) {
            trylater++;
            cr_assert_lt(secs * 1000, FAST_MS, "a shed request took %.3f s", secs);
        } else if (strstr(out, "Cert Status: good") != NULL) {
            signed_ok++;
        } else {
            cr_assert_fail("request %d: neither signed nor tryLater: %s", i, out);
        }
    }
    cr_log_info("flood of 10: %d signed, %d tryLater", signed_ok, trylater);
    cr_assert_geq(signed_ok, 1, "no request of the flood was signed");
    cr_assert_geq(trylater, 5, "the full queue did not shed: %d tryLater", trylater);
    assert_still_running();
}

/* Sessions opened by the real module since the server started ($PKIVA_P11FAULT_SESSIONS). */
static int sessions_opened(const char *count_file)
{
    char out[64] = "";
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "cat %s 2>/dev/null | wc -l", count_file);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    return atoi(out);
}

/* Every signature must reuse a cached PKCS#11 session: opening and closing one per signature
 * cost SoftHSM2 a fifth of an RSA time stamp's CPU, and costs a network HSM a round trip or more
 * (pkcs11-provider's session cache was once sized to the signing threads alone, which the login
 * session and the loaded keys already filled). */
Test(hsm_fault, signatures_reuse_pkcs11_sessions)
{
    static char env[400];
    char out[8192], count_file[320];
    int before, after;

    init_data(NULL);
    snprintf(count_file, sizeof(count_file), "%s/sessions.log", srv.dir);
    snprintf(env, sizeof(env), "PKIVA_P11FAULT_SESSIONS=%s", count_file);
    start(env);
    wait_ready();
    cr_assert(live_answer_ok(out, sizeof(out)), "%s", out); /* every signing thread warmed up */
    cr_assert(live_answer_ok(out, sizeof(out)), "%s", out);
    before = sessions_opened(count_file);
    cr_assert_gt(before, 0, "the session counter of libp11fault counted nothing");

    /* 30 live OCSP signatures and 10 time stamps, sequential and in two parallel streams. */
    cr_assert_eq(sh(out, sizeof(out),
                    "true && for i in $(seq 15); do for j in 1 2; do openssl ocsp -issuer "
                    "pki/issuing-ca.pem -cert pki/demo-good.pem -url http://127.0.0.1:%d/ -nonce "
                    "-CAfile pki/root-ca.pem -verify_other pki/issuing-ca.pem > ocsp.$j 2>&1 & "
                    "done; wait; grep -q ': good' ocsp.1 && grep -q ': good' ocsp.2 || "
                    "{ cat ocsp.1 ocsp.2; exit 1; }; done",
                    srv.port),
                 0, "%s", out);
    cr_assert_eq(
        sh(out, sizeof(out),
           "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && "
           "for i in $(seq 10); do curl -sf -H 'Content-Type: application/timestamp-query' "
           "--data-binary @q.tsq http://127.0.0.1:%d/tsa -o r.tsr && openssl ts -reply "
           "-in r.tsr -text 2>&1 | grep -q 'Status: Granted' || exit 1; done",
           srv.port),
        0, "%s", out);
    after = sessions_opened(count_file);
    cr_log_info("sessions opened: %d at start, %d more for 40 signatures", before, after - before);
    cr_assert_leq(after - before, 4, "%d sessions opened for 40 signatures: not reused",
                  after - before);
}

/* ---- the store ------------------------------------------------------------------------------ */

/* Another process (the sqlite3 CLI) runs first, keeps its transaction open for seconds, then runs
 * last; in the background with every output closed, so that ts_run returns at once. It waits for
 * a lock taken by someone else (the caller's own probe for the lock, say) instead of failing. */
static void background_sql(const char *first, int seconds, const char *last)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "cd %s && ((echo '%s'; sleep %d; echo '%s') | sqlite3 -cmd '.timeout 5000' pkiva.db) "
             "> /dev/null 2>&1 &",
             srv.data, first, seconds, last);
    cr_assert_eq(ts_run(cmd, NULL, 0), 0);
}

Test(store_fault, locked_database_fails_revoke_clearly_and_keeps_serving, .fini = teardown)
{
    char out[8192], body[512];
    long t0, ms;
    int status = 0, revoked = 0;

    init_data(NULL);
    start("PKIVA_STORE_BUSY_MS=500");
    wait_ready();

    /* Another process holds the write lock for 4 s (the CLI default busy timeout is lowered).
     * Wait until it really holds it: on a loaded machine the sqlite3 CLI may take a while. */
    background_sql("BEGIN EXCLUSIVE;", 4, "COMMIT;");
    for (int i = 0; i < 100 && sh(out, sizeof(out),
                                  "cd %s && sqlite3 -cmd '.timeout 0' pkiva.db "
                                  "'BEGIN IMMEDIATE; ROLLBACK;' 2>&1",
                                  srv.data) == 0;
         i++)
        sleep_ms(20);
    t0 = now_ms();
    status = sh(out, sizeof(out),
                "PKIVA_STORE_BUSY_MS=1000 " PKIVA " revoke --data %s --cert pki/demo-good.pem "
                "--reason keyCompromise 2>&1",
                srv.data);
    ms = now_ms() - t0;
    cr_assert_neq(status, 0, "revoke succeeded under a lock: %s", out);
    cr_assert(strstr(out, "locked") != NULL, "no clear error: %s", out);
    cr_assert_lt(ms, 3000, "revoke took %ld ms to give up", ms);
    /* The server keeps answering, live signing included: OCSP does not need the store. */
    assert_cached_answers("store write-locked");
    cr_assert(live_answer_ok(out, sizeof(out)), "%s", out);

    /* In WAL mode no other process can lock the poller out (readers never wait for writers,
     * and an exclusive-locking-mode connection cannot get its lock while the server holds the
     * database open), so /readyz rightly stays 200 under the write lock. To make the poller's
     * read fail, the change feed is renamed away for a while (then renamed back): /readyz must
     * say "store unavailable" and come back by itself. */
    sleep_ms(4000); /* the write lock above is gone */
    cr_assert_eq(http_get(srv.port, "/readyz", NULL, 0), 200);
    cr_assert_eq(
        sh(out, sizeof(out), "sqlite3 pkiva.db 'ALTER TABLE feed RENAME TO feed_away' 2>&1"), 0,
        "%s", out);
    t0 = now_ms();
    while (now_ms() - t0 < 4000 &&
           (status = http_get(srv.port, "/readyz", body, sizeof(body))) != 503)
        sleep_ms(100);
    cr_assert_eq(
        sh(out, sizeof(out), "sqlite3 pkiva.db 'ALTER TABLE feed_away RENAME TO feed' 2>&1"), 0,
        "%s", out);
    cr_assert_eq(status, 503, "/readyz did not report the unreadable store");
    cr_assert(strstr(body, "store unavailable") != NULL, "%s", body);
    assert_cached_answers("store unreadable");

    /* Released: the store is ready again and a revocation now goes through to OCSP. */
    t0 = now_ms();
    while (now_ms() - t0 < HEAL_MS && http_get(srv.port, "/readyz", NULL, 0) != 200)
        sleep_ms(200);
    cr_assert_eq(http_get(srv.port, "/readyz", NULL, 0), 200, "store not ready again");
    cr_assert_eq(sh(out, sizeof(out),
                    PKIVA " revoke --data %s --cert pki/demo-good.pem --reason keyCompromise 2>&1",
                    srv.data),
                 0, "%s", out);
    for (int i = 0; i < 50 && !revoked; i++) {
        ocsp("demo-good.pem", 0, out, sizeof(out));
        revoked = strstr(out, "demo-good.pem: revoked") != NULL;
        if (!revoked)
            sleep_ms(100);
    }
    cr_assert(revoked, "%s", out);
    assert_still_running();
}

static char mounted[400];

static void unmount(void)
{
    char cmd[512];
    teardown();
    if (mounted[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "umount -l %s", mounted);
        ts_run(cmd, NULL, 0);
        mounted[0] = '\0';
    }
}

Test(store_fault, full_disk_fails_revoke_and_keeps_the_database, .fini = unmount)
{
    char out[8192], cmd[1024], db[450];
    int failed = 0;

    init_data(NULL);
    snprintf(mounted, sizeof(mounted), "%s/small", srv.dir);
    cr_assert_eq(mkdir(mounted, 0700), 0);
    snprintf(cmd, sizeof(cmd), "mount -t tmpfs -o size=2m tmpfs %s 2>&1", mounted);
    if (ts_run(cmd, out, sizeof(out)) != 0) {
        mounted[0] = '\0';
        cr_skip_test("disk-full test skipped: cannot mount a 2 MB tmpfs here (needs root or "
                     "CAP_SYS_ADMIN): %s",
                     out);
    }
    /* The store moves onto the small disk; everything else stays where it is. */
    snprintf(db, sizeof(db), "%s/pkiva.db", mounted);
    cr_assert_eq(sh(out, sizeof(out),
                    "sqlite3 pkiva.db 'PRAGMA wal_checkpoint(TRUNCATE)' > /dev/null && "
                    "mv pkiva.db %s && rm -f pkiva.db-wal pkiva.db-shm && "
                    "sed -i 's|^path = .*pkiva.db$|path = %s|' pkiva.conf && "
                    "grep -q '%s' pkiva.conf",
                    db, db, db),
                 0, "%s", out);
    start(NULL);
    wait_ready();
    assert_cached_answers("before the disk fills");

    /* Fill the disk, then revoke: SQLite must fail cleanly, nothing half-written. */
    snprintf(cmd, sizeof(cmd), "dd if=/dev/zero of=%s/filler bs=4k > /dev/null 2>&1; df -k %s",
             mounted, mounted);
    ts_run(cmd, out, sizeof(out));
    cr_log_info("%s", out);
    /* Several changes (hold released, placed again): the WAL may absorb the first ones in pages
     * it already owns. */
    for (int i = 0; i < 20 && !failed; i++) {
        int status = i % 2 == 0
                         ? sh(out, sizeof(out),
                              PKIVA " unrevoke --data %s --cert pki/demo-hold.pem 2>&1", srv.data)
                         : sh(out, sizeof(out),
                              PKIVA " revoke --data %s --cert pki/demo-hold.pem "
                                    "--reason certificateHold 2>&1",
                              srv.data);
        failed = status != 0;
    }
    cr_assert(failed, "revoke never failed on a full disk");
    cr_assert(strstr(out, "no space left on device") != NULL, "no clear error: %s", out);
    cr_assert_eq(sh(out, sizeof(out), "sqlite3 %s 'PRAGMA integrity_check' 2>&1", db), 0, "%s",
                 out);
    cr_assert(strstr(out, "ok") != NULL, "database damaged: %s", out);
    /* Earlier revocations are still served, and the process is fine. */
    assert_cached_answers("disk full");
    cr_assert_eq(http_get(srv.port, "/healthz", NULL, 0), 200);
    assert_still_running();
}

/* The line of /metrics whose text contains both parts (a metric name and a key label), or "". */
static void metric_line(const char *name, const char *label_part, char *line, size_t line_len)
{
    static char body[32768];
    const char *p;

    line[0] = '\0';
    cr_assert_eq(http_get(srv.admin_port, "/metrics", body, sizeof(body)), 200);
    for (p = body; p != NULL && *p != '\0'; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        size_t len = strcspn(p, "\n");
        if (strncmp(p, name, strlen(name)) == 0 && len < line_len) {
            memcpy(line, p, len);
            line[len] = '\0';
            if (strstr(line, label_part) != NULL)
                return;
        }
    }
    line[0] = '\0';
}

/* The served CRL verifies with the issuing CA's key; 1 if so. /readyz does not wait for the first
 * CRL (the publisher makes it right after start), so the fetch is retried for up to 10 s. */
static int crl_verifies(void)
{
    char out[1024] = "";
    sh(out, sizeof(out),
       "true; for i in $(seq 100); do curl -sf --max-time 5 -o served.crl "
       "http://127.0.0.1:%d/crl/demo-ca.crl && break; sleep 0.1; done; openssl crl "
       "-inform DER -in served.crl -noout -CAfile pki/issuing-ca.pem 2>&1",
       srv.port);
    return strstr(out, "verify OK") != NULL;
}

/* Issue 21, item 1: a token that returns wrong signatures with CKR_OK (p11fault "corrupt", and
 * "drop-digestinfo", which is pkcs11-provider 1.0's bug on openCryptoki) must never get one
 * served: not in an OCSP response with a nonce, not in a time-stamp token, not in a CRL. Each
 * bad signature is counted, the key is marked unhealthy (/metrics, /readyz), the token as a whole
 * stays available, and once the fault ends the key heals without a restart. RSA keys, whose
 * signatures are all verified. Before the fix every one of these was served as the token made it. */
Test(hsm_fault, bad_signatures_are_never_served, .timeout = 120)
{
    char out[8192], body[1024], line[1024];
    long crl_before, t0;
    int ok = 0;

    init_data_with("--alg rsa-2048", NULL);
    start(NULL);
    wait_ready();
    cr_assert(live_answer_ok(out, sizeof(out)), "healthy: %s", out);
    cr_assert(crl_verifies(), "the CRL at start does not verify");
    crl_before = crl_number();

    /* OCSP with a nonce, signed by the delegated responder's key. */
    fault_set("corrupt ocsp-responder");
    for (int i = 0; i < 3; i++) {
        ocsp("demo-good.pem", 1, out, sizeof(out));
        cr_assert(strstr(out, "Responder Error: trylater") != NULL,
                  "a corrupted OCSP signature was served (or no tryLater): %s", out);
    }
    cr_assert_geq(metric("\npkiva_hsm_bad_signatures_total"), 1);
    cr_assert_eq(metric("\npkiva_hsm_available"), 1, "one bad key is not a token outage");
    metric_line("pkiva_hsm_key_healthy", "object=ocsp-responder", line, sizeof(line));
    cr_assert(strstr(line, "} 0") != NULL, "the key is not marked unhealthy: '%s'", line);
    cr_assert_eq(http_get(srv.port, "/readyz", body, sizeof(body)), 200, "%s", body);
    cr_assert(strstr(body, "degraded") != NULL && strstr(body, "ocsp-responder") != NULL,
              "/readyz does not name the bad key: %s", body);
    cr_assert_eq(sh(out, sizeof(out), "grep -c 'BAD SIGNATURE' %s/server.log", srv.dir), 0,
                 "the bad signature was not logged");
    assert_cached_answers("a bad OCSP key"); /* pre-signed answers stay served */

    /* A time stamp. */
    fault_set("corrupt tsa");
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Rejected") != NULL && strstr(out, "system failure") != NULL,
              "a corrupted time-stamp token was served: %s", out);

    /* A CRL, the way openCryptoki 3.8.1 behind pkcs11-provider 1.0 signs: DigestInfo dropped. */
    fault_set("drop-digestinfo issuing-ca");
    cr_assert_neq(sh(out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0,
                  "a CRL publication with a bad signature did not fail: %s", out);
    for (int i = 0; i < 50 && metric("pkiva_crl_failing{issuer=\"demo-ca\"}") != 1; i++)
        sleep_ms(100);
    cr_assert_eq(metric("pkiva_crl_failing{issuer=\"demo-ca\"}"), 1,
                 "a CRL with a bad signature was not refused");
    cr_assert_eq(crl_number(), crl_before, "the served CRL changed");
    cr_assert(crl_verifies(), "a CRL with a bad signature is served");

    /* The fault ends: the monitor's self-check heals the keys, live signing works again. */
    fault_clear();
    t0 = now_ms();
    while (!ok && now_ms() - t0 < HEAL_MS) {
        ok = live_answer_ok(out, sizeof(out)) &&
             http_get(srv.port, "/readyz", body, sizeof(body)) == 200 &&
             strstr(body, "degraded") == NULL;
        if (!ok)
            sleep_ms(200);
    }
    cr_assert(ok, "the keys did not heal: %s / %s", out, body);
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Granted") != NULL, "time stamp after the fault: %s", out);
    assert_still_running();
}

/* Issue 21, item 2: one key the token will not use (CKR_MECHANISM_INVALID for the TSA's key, as
 * for EC keys on openCryptoki 3.8.1) is refused at start with module, mechanism and reason named,
 * and shown in /readyz and /metrics; the token is not declared unavailable and the OCSP and CRL
 * keys keep signing. Before the fix the whole HSM was marked unavailable: every issuer answered
 * tryLater and /readyz said 503. */
Test(hsm_fault, one_key_that_cannot_sign_leaves_the_others_signing, .timeout = 120)
{
    char out[8192], body[1024], line[1024];
    long crl_before, crl_after = -1, t0;

    start_with_fault("mech-invalid tsa");
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Rejected") != NULL, "the refused key signed: %s", out);
    /* Across several monitor turns (2 s each) the other keys keep signing. */
    t0 = now_ms();
    while (now_ms() - t0 < 5000) {
        cr_assert(live_answer_ok(out, sizeof(out)), "OCSP stopped signing: %s", out);
        cr_assert_eq(metric("\npkiva_hsm_available"), 1);
        sleep_ms(500);
    }
    cr_assert_eq(sh(out, sizeof(out),
                    "grep 'self-check FAILED' %s/server.log | grep tsa | grep CKM_ECDSA | grep -c "
                    "CKR_MECHANISM_INVALID",
                    srv.dir),
                 0, "the refused key is not reported with mechanism and reason: %s", out);
    cr_assert_eq(http_get(srv.port, "/readyz", body, sizeof(body)), 200, "%s", body);
    cr_assert(strstr(body, "degraded") != NULL && strstr(body, "object=tsa") != NULL &&
                  strstr(body, "CKR_MECHANISM_INVALID") != NULL,
              "/readyz: %s", body);
    metric_line("pkiva_hsm_key_healthy", "object=tsa", line, sizeof(line));
    cr_assert(strstr(line, "} 0") != NULL, "tsa key: '%s'", line);
    metric_line("pkiva_hsm_key_healthy", "object=ocsp-responder", line, sizeof(line));
    cr_assert(strstr(line, "} 1") != NULL, "ocsp key: '%s'", line);

    crl_before = crl_number();
    cr_assert_eq(sh(out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s", out);
    t0 = now_ms();
    while (now_ms() - t0 < HEAL_MS && (crl_after = crl_number()) <= crl_before)
        sleep_ms(200);
    cr_assert_gt(crl_after, crl_before, "no new CRL while the TSA key is refused");
    cr_assert(crl_verifies());
    assert_still_running();
}

/* One key's error must stay that key's: the token is still available to the others, and the log
 * never declared an outage. */
static void assert_no_outage(void)
{
    char out[4096];

    cr_assert_eq(metric("\npkiva_hsm_available"), 1, "one key's error taken for an outage");
    cr_assert_eq(sh(out, sizeof(out), "grep 'HSM unavailable: ' %s/server.log", srv.dir), 1,
                 "one key's error taken for an outage: %s", out);
}

/* A TSA key that passes its start-up self-check and fails right after it leaves its unit without
 * the token template, on OpenSSL's per-token path (about twice the CPU per token). Once the key
 * signs again, a signing thread builds the template, without a restart, and the tokens it makes
 * verify. Before, the unit kept OpenSSL's path until the next start. */
Test(hsm_fault, tsa_template_built_once_the_key_signs_again, .timeout = 120)
{
    char out[8192];
    long t0;
    int built = 0;

    start_with_fault("fail-after 1 tsa"); /* the self-check's signature, then no more */
    cr_assert_eq(sh(out, sizeof(out), "grep -c 'no token template' %s/server.log", srv.dir), 0,
                 "the unit was not reported without template: %s", out);
    time_stamp(out, sizeof(out));
    cr_assert(strstr(out, "Status: Rejected") != NULL, "the refused key signed: %s", out);
    /* The key's own error, seen through OpenSSL's TS_RESP_create_response (pkcs11-provider hides
     * the PKCS#11 code), is the key's: the token stays available for the other keys. Before, it
     * was taken for an outage: every issuer's live answers failed until the monitor's probe. */
    assert_no_outage();
    fault_clear();
    t0 = now_ms();
    while (!built && now_ms() - t0 < 3 * HEAL_MS) { /* a try every 10 s */
        time_stamp(out, sizeof(out));
        built = sh(out, sizeof(out), "grep 'token template built' %s/server.log", srv.dir) == 0;
        if (!built)
            sleep_ms(200);
    }
    if (!built)
        (void)sh(out, sizeof(out), "grep -E 'tsa|hsm' %s/server.log | tail -n 30", srv.dir);
    cr_assert(built, "no template after the key healed: %s", out);
    cr_assert_eq(
        sh(out, sizeof(out), "grep -c 'tsa: unit .*token template built' %s/server.log", srv.dir),
        0, "%s", out);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(sh(out, sizeof(out),
                        "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && "
                        "curl -sS -f -H 'Content-Type: application/timestamp-query' "
                        "--data-binary @q.tsq http://127.0.0.1:%d/tsa -o r.tsr && "
                        "openssl ts -verify -queryfile q.tsq -in r.tsr -CAfile pki/root-ca.pem "
                        "-untrusted pki/tsa-chain.pem 2>&1",
                        srv.port),
                     0, "a token from the late template does not verify: %s", out);
    assert_still_running();
}

/* The same for OCSP: the responder key fails right after its self-check, when the pre-signer's
 * first response (OpenSSL's builder, to learn the template) is signed. The key is marked
 * unhealthy, the token stays available, and once the key signs again live answers work. */
Test(hsm_fault, ocsp_key_error_in_openssls_builder_is_not_an_outage, .timeout = 120)
{
    char out[8192];
    long t0;
    int ok = 0;

    start_with_fault("fail-after 1 ocsp-responder");
    /* The pre-signer's first signature comes soon after /readyz: wait for its verdict. */
    for (int i = 0; i < 30 && !ok; i++) {
        ok = sh(out, sizeof(out), "grep -q 'object=ocsp-responder.*cannot sign' %s/server.log",
                srv.dir) == 0;
        if (!ok)
            sleep_ms(100);
    }
    cr_assert(ok, "the key's error was not seen as the key's");
    assert_no_outage();
    ok = 0;
    fault_clear();
    t0 = now_ms();
    while (!ok && now_ms() - t0 < HEAL_MS) {
        ok = live_answer_ok(out, sizeof(out));
        if (!ok)
            sleep_ms(200);
    }
    cr_assert(ok, "no live answer after the key healed: %s", out);
    assert_still_running();
}

/* Issue 21 and the monitor: the key it probes an idle token with is the first one that passed
 * its self-check. Were it a refused key, every probe would fail as that key's problem, never as
 * an outage, and an unplugged token would go unnoticed without traffic (the first issuer here is
 * `root`, whose key is refused). */
Test(hsm_fault, refused_probe_key_does_not_blind_the_monitor, .timeout = 120)
{
    char body[1024];
    long t0;
    int status = 0;

    start_with_fault("mech-invalid root-ca");
    cr_assert_eq(http_get(srv.port, "/readyz", body, sizeof(body)), 200, "%s", body);
    cr_assert(strstr(body, "object=root-ca") != NULL, "root's key not refused: %s", body);
    /* Let the monitor probe the idle token twice (every 2 s) before it goes away: a probe key
     * that the token refuses would be marked unhealthy by then and never probe again. */
    sleep_ms(5000);
    fault_set("down");
    t0 = now_ms();
    while (now_ms() - t0 < 6000 &&
           (status = http_get(srv.port, "/readyz", body, sizeof(body))) != 503)
        sleep_ms(100);
    cr_assert_eq(status, 503, "/readyz did not notice the outage within 6 s: %s", body);
    cr_assert(strstr(body, "HSM unavailable") != NULL, "%s", body);
    assert_still_running();
}
