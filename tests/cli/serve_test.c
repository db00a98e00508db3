/* SPDX-License-Identifier: Apache-2.0 */
/* Integration tests of the real `pkiva` binary: first run creates the embedded default (SoftHSM2
 * token, demo PKI, store), the service answers real clients (openssl ocsp, curl) on 127.0.0.1,
 * an operator's revocation from another process shows within a second or so, restarts reuse
 * everything, keys cannot leave the token, and bad setups fail clearly. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PKIVA PKIVA_BINARY_DIR "/cli/pkiva"

struct server {
    char dir[256];
    char data[300];
    int port, admin_port;
    pid_t pid;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Runs a shell command with the server's environment; returns exit status, output in out. */
static int sh(const struct server *s, char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int sh(const struct server *s, char *out, size_t out_len, const char *fmt, ...)
{
    char cmd[4096];
    char full[4400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    snprintf(full, sizeof(full), "cd %s && SOFTHSM2_CONF=%s/hsm/softhsm2.conf %s", s->data, s->data,
             cmd);
    return ts_run(full, out, out_len);
}

static pid_t spawn_server(struct server *s)
{
    char listen[64], admin[64], log[400];
    pid_t pid;
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    snprintf(admin, sizeof(admin), "127.0.0.1:%d", s->admin_port);
    snprintf(log, sizeof(log), "%s/server.log", s->dir);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(PKIVA, "pkiva", "serve", "--data", s->data, "--listen", listen, "--admin-listen",
              admin, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* The embedded default's admin listener is HTTPS (verified against DATA/admin/admin-ca.pem). */
static int http_status(const struct server *s, int port, const char *path)
{
    char out[64] = "";
    char cmd[1024];
    if (port == s->admin_port) /* authenticated with the operator certificate */
        snprintf(cmd, sizeof(cmd),
                 "curl -s -o /dev/null -w '%%{http_code}' --max-time 5 --cacert "
                 "%s/admin/admin-ca.pem --cert %s/admin/operator.pem --key %s/admin/operator.key "
                 "https://127.0.0.1:%d%s",
                 s->data, s->data, s->data, port, path);
    else
        snprintf(cmd, sizeof(cmd),
                 "curl -s -o /dev/null -w '%%{http_code}' --max-time 5 http://127.0.0.1:%d%s", port,
                 path);
    if (ts_run(cmd, out, sizeof(out)) != 0)
        return 0;
    return atoi(out);
}

static void start(struct server *s)
{
    s->pid = spawn_server(s);
    /* First run generates keys and certificates: allow a generous start-up time. */
    for (int i = 0; i < 600; i++) {
        int status;
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            char log[8192] = "";
            char cmd[400];
            snprintf(cmd, sizeof(cmd), "tail -20 %s/server.log", s->dir);
            ts_run(cmd, log, sizeof(log));
            cr_assert_fail("pkiva exited during start-up: %s", log);
        }
        if (http_status(s, s->port, "/healthz") == 200)
            return;
        sleep_ms(100);
    }
    cr_assert_fail("pkiva did not start within 60 s");
}

static int stop(struct server *s)
{
    int status = 0;
    if (s->pid <= 0)
        return -1;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 200; i++) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    return -2;
}

static void setup_server(struct server *s)
{
    memset(s, 0, sizeof(*s));
    cr_assert_eq(ts_tmpdir(s->dir, sizeof(s->dir)), 0);
    snprintf(s->data, sizeof(s->data), "%s/var", s->dir);
    s->port = ts_free_port();
    s->admin_port = ts_free_port();
}

static void teardown_server(struct server *s)
{
    if (s->pid > 0)
        stop(s);
    ts_rmrf(s->dir);
}

/* openssl ocsp against the running server; returns its output. */
static int ocsp_query(const struct server *s, const char *issuer, const char *cert, char *out,
                      size_t out_len, const char *extra)
{
    return sh(s, out, out_len,
              "openssl ocsp -issuer pki/%s -cert pki/%s -url http://127.0.0.1:%d/ "
              "-CAfile pki/root-ca.pem -verify_other pki/issuing-ca.pem %s 2>&1",
              issuer, cert, s->port, extra ? extra : "");
}

static struct server srv;

static void fixture_setup(void)
{
    setup_server(&srv);
}

static void fixture_teardown(void)
{
    teardown_server(&srv);
}

TestSuite(serve, .init = fixture_setup, .fini = fixture_teardown, .timeout = 240);

Test(serve, first_run_creates_the_default_and_answers_real_clients)
{
    char out[8192];
    static const char *const files[] = {"root-ca.pem",        "issuing-ca.pem",   "ca-chain.pem",
                                        "ocsp-responder.pem", "tsa.pem",          "tsa-chain.pem",
                                        "demo-good.pem",      "demo-revoked.pem", "demo-hold.pem"};
    struct stat st;
    char path[512];

    start(&srv);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(path, sizeof(path), "%s/pki/%s", srv.data, files[i]);
        cr_assert_eq(stat(path, &st), 0, "missing %s", path);
    }
    snprintf(path, sizeof(path), "%s/hsm/user.pin", srv.data);
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "PIN file readable by others: %o", st.st_mode & 0777);

    cr_assert_eq(http_status(&srv, srv.port, "/healthz"), 200);
    cr_assert_eq(http_status(&srv, srv.port, "/readyz"), 200);
    cr_assert_eq(http_status(&srv, srv.admin_port, "/metrics"), 200);
    /* every certificate pkiva signs under, with its notAfter (the demo's: years ahead) */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "curl -s --max-time 5 --cacert %s/admin/admin-ca.pem --cert "
                    "admin/operator.pem --key admin/operator.key https://127.0.0.1:%d/metrics | "
                    "grep '^pkiva_cert_not_after_timestamp_seconds'",
                    srv.data, srv.admin_port),
                 0, "%s", out);
    for (const char *want = "role=\"ca\",name=\"demo-ca\"\0role=\"ca\",name=\"root\"\0"
                            "role=\"ocsp\",name=\"demo-ca\"\0role=\"tsa\",name=\"demo-tsa\"\0";
         *want != '\0'; want += strlen(want) + 1) {
        const char *line = strstr(out, want);
        cr_assert_not_null(line, "no %s in:\n%s", want, out);
        cr_assert_gt(strtoll(strchr(line, '}') + 1, NULL, 10), (long long)time(NULL) + 86400 * 300,
                     "%s", out);
    }
    cr_assert_eq(http_status(&srv, srv.port, "/ca/demo-ca.crt"), 200);
    cr_assert_eq(http_status(&srv, srv.port, "/ca/nope.crt"), 404);

    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), NULL), 0,
                 "%s", out);
    cr_assert(strstr(out, "Response verify OK") != NULL, "%s", out);
    cr_assert(strstr(out, "demo-good.pem: good") != NULL, "%s", out);

    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-revoked.pem", out, sizeof(out), NULL), 0,
                 "%s", out);
    cr_assert(strstr(out, "demo-revoked.pem: revoked") != NULL, "%s", out);
    cr_assert(strstr(out, "keyCompromise") != NULL, "%s", out);

    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-hold.pem", out, sizeof(out), "-nonce"), 0,
                 "%s", out);
    cr_assert(strstr(out, "certificateHold") != NULL, "%s", out);
    cr_assert(strstr(out, "WARNING: no nonce") == NULL, "%s", out);

    /* The root answers for the issuing CA with its own key. */
    cr_assert_eq(ocsp_query(&srv, "root-ca.pem", "issuing-ca.pem", out, sizeof(out), NULL), 0, "%s",
                 out);
    cr_assert(strstr(out, "issuing-ca.pem: good") != NULL, "%s", out);
    cr_assert(strstr(out, "Response verify OK") != NULL, "%s", out);

    cr_assert_eq(stop(&srv), 0, "SIGTERM must stop the server with status 0");
}

Test(serve, revocation_from_another_process_shows_in_ocsp)
{
    char out[8192];
    int revoked = 0;
    start(&srv);
    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), NULL), 0);
    cr_assert(strstr(out, "demo-good.pem: good") != NULL, "%s", out);

    cr_assert_eq(sh(&srv, out, sizeof(out),
                    PKIVA " revoke --data %s --cert pki/demo-good.pem --reason keyCompromise "
                          "--request-id REQ-1 --invalidity-date 2026-01-02T03:04:05Z",
                    srv.data),
                 0, "%s", out);
    /* The figure (about feed_poll + one signature) is measured by bench/; here a generous bound. */
    for (int i = 0; i < 100 && !revoked; i++) {
        ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), NULL);
        revoked = strstr(out, "demo-good.pem: revoked") != NULL;
        if (!revoked)
            sleep_ms(100);
    }
    cr_assert(revoked, "still not revoked after 10 s: %s", out);
    cr_assert(strstr(out, "keyCompromise") != NULL, "%s", out);
    /* The invalidity date travels as a singleExtension (RFC 6960 4.4.7). */
    ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), "-resp_text");
    cr_assert(strstr(out, "Invalidity Date") != NULL && strstr(out, "Jan  2 03:04:05 2026") != NULL,
              "%s", out);

    /* Hold released from the CLI: good again. */
    cr_assert_eq(
        sh(&srv, out, sizeof(out), PKIVA " unrevoke --data %s --cert pki/demo-hold.pem", srv.data),
        0, "%s", out);
    revoked = 1;
    for (int i = 0; i < 100 && revoked; i++) {
        ocsp_query(&srv, "issuing-ca.pem", "demo-hold.pem", out, sizeof(out), NULL);
        revoked = strstr(out, "demo-hold.pem: good") == NULL;
        if (revoked)
            sleep_ms(100);
    }
    cr_assert_not(revoked, "hold not released after 10 s: %s", out);

    /* The status command reads the store; the audit chain holds every change. */
    cr_assert_eq(
        sh(&srv, out, sizeof(out), PKIVA " status --data %s --cert pki/demo-good.pem", srv.data), 0,
        "%s", out);
    cr_assert(strstr(out, "status: revoked") != NULL, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " audit verify --data %s", srv.data), 0, "%s",
                 out);
    cr_assert(strstr(out, "intact") != NULL, "%s", out);
    /* Every state change is audited, including the server's own CRL publications. */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "sqlite3 pkiva.db \"select action, actor from audit\" | sort -u"),
                 0, "%s", out);
    cr_assert(strstr(out, "revoke|") != NULL && strstr(out, "unrevoke|") != NULL, "%s", out);
    cr_assert(strstr(out, "crl-publish|crl-publisher") != NULL, "%s", out);
    cr_assert(strstr(out, "start|pkiva-serve") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

Test(serve, second_run_reuses_token_pki_and_store)
{
    char before[8192] = "", after[8192] = "", out[8192];
    char cmd[512];
    start(&srv);
    cr_assert_eq(stop(&srv), 0);
    snprintf(cmd, sizeof(cmd), "sha256sum %s/pki/root-ca.pem %s/hsm/user.pin", srv.data, srv.data);
    cr_assert_eq(ts_run(cmd, before, sizeof(before)), 0);
    start(&srv);
    cr_assert_eq(ts_run(cmd, after, sizeof(after)), 0);
    cr_assert_str_eq(before, after, "the second run recreated the PKI");
    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-revoked.pem", out, sizeof(out), NULL), 0,
                 "%s", out);
    cr_assert(strstr(out, "revoked") != NULL, "%s", out);
    snprintf(cmd, sizeof(cmd), "grep -c 'first run' %s/server.log", srv.dir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    cr_assert_eq(atoi(out), 1, "first-run init ran %d times", atoi(out));
    /* Every thread but the main one says what it is (top -H, perf; bench/run splits CPU so). */
    snprintf(cmd, sizeof(cmd), "cat /proc/%d/task/*/comm | sort | tr '\\n' ' '", (int)srv.pid);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    for (const char *want = "http-0 |hsm-sign-0 |hsm-monitor |feed |tsa-log |crl-publish |"
                            "ocsp-presign |audit-seal |service |store-0 ";
         *want != '\0';) {
        const char *bar = strchr(want, '|');
        char one[32];
        size_t n = bar != NULL ? (size_t)(bar - want) : strlen(want);
        snprintf(one, sizeof(one), "%.*s", (int)n, want);
        cr_expect(strstr(out, one) != NULL, "no thread '%s' among: %s", one, out);
        want += n + (bar != NULL);
    }
    cr_expect(strstr(out, "pkiva ") != NULL && strstr(strstr(out, "pkiva ") + 6, "pkiva ") == NULL,
              "threads without a name of their own: %s", out);
}

/* GET and HEAD on the TSA's path: 405 with Allow: POST (RFC 3161 section 3.4 has only POST), not
 * an OCSP malformedRequest from OCSP's GET route at "/", which took them before. */
Test(serve, get_on_the_tsa_path_is_405_not_an_ocsp_answer)
{
    char out[8192], cmd[512];
    start(&srv);
    snprintf(cmd, sizeof(cmd), "curl -si --max-time 5 http://127.0.0.1:%d/tsa", srv.port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    cr_expect(strncmp(out, "HTTP/1.1 405", 12) == 0, "%s", out);
    cr_expect(strstr(out, "Allow: POST\r\n") != NULL, "%s", out);
    cr_expect(strstr(out, "application/ocsp-response") == NULL, "%s", out);
    snprintf(cmd, sizeof(cmd), "curl -sI --max-time 5 http://127.0.0.1:%d/tsa", srv.port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    cr_expect(strncmp(out, "HTTP/1.1 405", 12) == 0, "%s", out);
    /* OCSP's GET at "/" is untouched */
    cr_assert_eq(http_status(&srv, srv.port, "/MAMGAQA="), 200);
}

Test(serve, private_keys_cannot_leave_the_token)
{
    char out[16384];
    int keys = 0;
    const char *p;
    cr_assert_eq(ts_run(PKIVA " init --data /dev/null/x 2>&1", out, sizeof(out)) != 0, 1);
    {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), PKIVA " init --data %s 2>&1", srv.data);
        cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    }
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --login "
                    "--pin \"$(cat hsm/user.pin)\" --list-objects --type privkey"),
                 0, "%s", out);
    for (p = strstr(out, "Private Key Object"); p != NULL;
         p = strstr(p + 1, "Private Key Object")) {
        char block[1024];
        const char *next = strstr(p + 1, "Private Key Object");
        size_t len = next ? (size_t)(next - p) : strlen(p);
        if (len >= sizeof(block))
            len = sizeof(block) - 1;
        memcpy(block, p, len);
        block[len] = '\0';
        cr_assert(strstr(block, "Access:") != NULL, "%s", block);
        cr_assert(strstr(block, "sensitive") != NULL, "key not sensitive: %s", block);
        cr_assert(strstr(block, "never extractable") != NULL, "key extractable: %s", block);
        keys++;
    }
    cr_assert_eq(keys, 4, "expected root, issuing CA, OCSP and TSA keys, found %d: %s", keys, out);
}

Test(serve, bad_setups_fail_clearly_without_partial_state)
{
    char out[8192], cmd[1024], path[512];
    FILE *f;

    /* A config error names the file and the line. */
    snprintf(path, sizeof(path), "%s/bad.conf", srv.dir);
    f = fopen(path, "w");
    fputs("[server]\nworkers = 2\nlisten = nowhere\n", f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), PKIVA " serve --config %s 2>&1", path);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "bad.conf:3:") != NULL, "%s", out);

    /* A missing config file. */
    snprintf(cmd, sizeof(cmd), PKIVA " serve --config %s/none.conf 2>&1", srv.dir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "none.conf") != NULL, "%s", out);

    /* An unusable data directory. */
    snprintf(cmd, sizeof(cmd), PKIVA " serve --data %s/bad.conf/var 2>&1", srv.dir);
    cr_assert_neq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert(strstr(out, "bad.conf/var") != NULL, "%s", out);

    /* Make a real default, then break its PIN file in two ways. */
    snprintf(cmd, sizeof(cmd), PKIVA " init --data %s 2>&1", srv.data);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    snprintf(cmd, sizeof(cmd), "chmod 0644 %s/hsm/user.pin", srv.data);
    cr_assert_eq(ts_run(cmd, NULL, 0), 0);
    snprintf(cmd, sizeof(cmd),
             PKIVA " serve --data %s --listen 127.0.0.1:%d "
                   "--admin-listen 127.0.0.1:%d 2>&1",
             srv.data, srv.port, srv.admin_port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "user.pin") != NULL, "%s", out);

    snprintf(cmd, sizeof(cmd),
             "cp %s/hsm/user.pin %s/pin.saved && printf 0000 > %s/hsm/user.pin"
             " && chmod 0600 %s/hsm/user.pin",
             srv.data, srv.dir, srv.data, srv.data);
    cr_assert_eq(ts_run(cmd, NULL, 0), 0);
    snprintf(cmd, sizeof(cmd),
             PKIVA " serve --data %s --listen 127.0.0.1:%d "
                   "--admin-listen 127.0.0.1:%d 2>&1",
             srv.data, srv.port, srv.admin_port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 1, "%s", out);
    cr_assert(strstr(out, "0000") == NULL, "the PIN appeared in the output: %s", out);
    cr_assert(strstr(out, "HSM") != NULL || strstr(out, "hsm") != NULL, "%s", out);
}

/* curl against the admin API (HTTPS, the server verified against the admin CA), presenting the
 * client certificate and key of cert_opts (curl options, "" = none); returns the HTTP status
 * (0: no answer), body in out. */
static int admin_call_cert(const struct server *s, const char *cert_opts, const char *token,
                           const char *path, const char *json, char *out, size_t out_len)
{
    char cmd[4096];
    char buf[8192] = "";
    char *nl;
    snprintf(cmd, sizeof(cmd),
             "cd %s && curl -s --max-time 10 --cacert admin/admin-ca.pem %s "
             "-w '\\n%%{http_code}' %s%s%s -H 'Content-Type: "
             "application/json' %s%s%s https://127.0.0.1:%d%s",
             s->data, cert_opts, token ? "-H 'Authorization: Bearer " : "", token ? token : "",
             token ? "'" : "", json ? "--data-binary '" : "", json ? json : "", json ? "'" : "",
             s->admin_port, path);
    ts_run(cmd, buf, sizeof(buf));
    nl = strrchr(buf, '\n');
    if (nl == NULL)
        return 0;
    *nl = '\0';
    snprintf(out, out_len, "%s", buf);
    return atoi(nl + 1);
}

static int admin_call(const struct server *s, const char *token, const char *path, const char *json,
                      char *out, size_t out_len)
{
    return admin_call_cert(s, "", token, path, json, out, out_len);
}

Test(serve, admin_api_authenticates_and_revokes)
{
    char token[128] = "", out[8192], cmd[512], serial[128] = "", json[512];
    int revoked = 0;
    start(&srv);
    snprintf(cmd, sizeof(cmd), "cat %s/admin.token", srv.data);
    cr_assert_eq(ts_run(cmd, token, sizeof(token)), 0);

    /* No credentials, a wrong token: 401 and nothing changes. */
    cr_assert_eq(admin_call(&srv, NULL, "/admin/revoke", "{}", out, sizeof(out)), 401, "%s", out);
    cr_assert_eq(
        admin_call(&srv, "wrong-token-wrong-token", "/admin/revoke", "{}", out, sizeof(out)), 401,
        "%s", out);
    cr_assert(strstr(out, "\"error\"") != NULL, "%s", out);
    /* The public listener has no admin route: even with the right token, an admin path there is
     * only an (undecodable) OCSP GET or POST, never JSON. */
    snprintf(cmd, sizeof(cmd),
             "curl -s -o /dev/null -w '%%{content_type}' -H 'Authorization: Bearer %s' "
             "http://127.0.0.1:%d/admin/sla",
             token, srv.port);
    ts_run(cmd, out, sizeof(out));
    cr_assert(strstr(out, "json") == NULL, "admin route on the public listener: %s", out);
    /* Malformed and incomplete JSON: 400 with a JSON error. */
    cr_assert_eq(admin_call(&srv, token, "/admin/revoke", "{not json", out, sizeof(out)), 400, "%s",
                 out);
    cr_assert(strstr(out, "malformed JSON") != NULL, "%s", out);
    cr_assert_eq(
        admin_call(&srv, token, "/admin/revoke", "{\"issuer\":\"demo-ca\"}", out, sizeof(out)), 400,
        "%s", out);
    cr_assert_eq(admin_call(&srv, token, "/admin/revoke",
                            "{\"issuer\":\"demo-ca\",\"serial\":\"01\",\"reason\":\"bogus\"}", out,
                            sizeof(out)),
                 400, "%s", out);
    cr_assert_eq(admin_call(&srv, token, "/admin/revoke",
                            "{\"issuer\":\"demo-ca\",\"serial\":\"0badbad0\"}", out, sizeof(out)),
                 404, "%s", out);
    /* Oversized body: 413 before any parsing. */
    snprintf(cmd, sizeof(cmd),
             "head -c 200000 /dev/zero | tr '\\0' a | curl -s -o /dev/null -w '%%{http_code}' "
             "-H 'Authorization: Bearer %s' -H 'Content-Type: application/json' "
             "--cacert %s/admin/admin-ca.pem --data-binary @- https://127.0.0.1:%d/admin/revoke",
             token, srv.data, srv.admin_port);
    ts_run(cmd, out, sizeof(out));
    cr_assert_eq(atoi(out), 413, "%s", out);

    /* A real revocation through the API shows in OCSP. */
    cr_assert_eq(
        sh(&srv, serial, sizeof(serial),
           "openssl x509 -in pki/demo-good.pem -noout -serial | cut -d= -f2 | tr -d '\\n'"),
        0);
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"superseded\","
             "\"request_id\":\"RA-7\",\"received_at\":\"2026-01-01T00:00:00Z\"}",
             serial);
    cr_assert_eq(admin_call(&srv, token, "/admin/revoke", json, out, sizeof(out)), 200, "%s", out);
    cr_assert(strstr(out, "\"durable\":true") != NULL, "%s", out);
    for (int i = 0; i < 100 && !revoked; i++) {
        ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), NULL);
        revoked = strstr(out, "demo-good.pem: revoked") != NULL;
        if (!revoked)
            sleep_ms(100);
    }
    cr_assert(revoked, "%s", out);
    cr_assert(strstr(out, "superseded") != NULL, "%s", out);
    /* The same revocation again is idempotent; the SLA report lists it. */
    cr_assert_eq(admin_call(&srv, token, "/admin/revoke", json, out, sizeof(out)), 200, "%s", out);
    cr_assert_eq(admin_call(&srv, token, "/admin/sla", NULL, out, sizeof(out)), 200, "%s", out);
    cr_assert(strstr(out, "RA-7") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

Test(serve, sla_report_follows_a_revocation_to_the_crl)
{
    char out[8192], cmd[1024];
    int closed = 0;
    snprintf(cmd, sizeof(cmd), PKIVA " init --data %s 2>&1", srv.data);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    /* Recorded while no server runs, received long ago: open and past the 12-hour deadline. */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    PKIVA " revoke --data %s --cert pki/demo-good.pem --reason cessationOfOperation"
                          " --request-id OLD-1 --received-at 2026-01-01T00:00:00Z",
                    srv.data),
                 0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " sla --data %s", srv.data), 0, "%s", out);
    cr_assert(strstr(out, "OLD-1") != NULL, "%s", out);
    cr_assert(strstr(out, "PAST the deadline") != NULL, "%s", out);
    cr_assert(strstr(out, "ocsp pending") != NULL, "%s", out);
    /* The server publishes it in OCSP and in a CRL; the report then counts it as completed. */
    start(&srv);
    for (int i = 0; i < 150 && !closed; i++) {
        sh(&srv, out, sizeof(out), PKIVA " sla --data %s", srv.data);
        closed = strstr(out, "open revocations: 0") != NULL;
        if (!closed)
            sleep_ms(100);
    }
    cr_assert(closed, "still open after 15 s: %s", out);
    cr_assert(strstr(out, "completed: ") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

Test(serve, supersede_is_one_call)
{
    char out[8192], cmd[1024], token[128] = "", serial[128] = "", json[4096];
    int revoked = 0;
    start(&srv);
    snprintf(cmd, sizeof(cmd), "cat %s/admin.token", srv.data);
    cr_assert_eq(ts_run(cmd, token, sizeof(token)), 0);
    /* CLI: renewal of demo-good by demo-hold's certificate (already registered: idempotent). */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    PKIVA " supersede --data %s --cert pki/demo-good.pem --new pki/demo-hold.pem "
                          "--request-id RENEW-1",
                    srv.data),
                 0, "%s", out);
    cr_assert(strstr(out, "superseded serial") != NULL && strstr(out, " by ") != NULL, "%s", out);
    for (int i = 0; i < 100 && !revoked; i++) {
        ocsp_query(&srv, "issuing-ca.pem", "demo-good.pem", out, sizeof(out), NULL);
        revoked = strstr(out, "demo-good.pem: revoked") != NULL;
        if (!revoked)
            sleep_ms(100);
    }
    cr_assert(revoked, "%s", out);
    cr_assert(strstr(out, "superseded") != NULL, "%s", out);

    /* API: a supersede must not carry another reason; a garbage replacement changes nothing. */
    cr_assert_eq(sh(&srv, serial, sizeof(serial),
                    "openssl x509 -in pki/demo-revoked.pem -noout -serial | cut -d= -f2 | "
                    "tr -d '\\n'"),
                 0);
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", serial);
    cr_assert_eq(admin_call(&srv, token, "/admin/supersede", json, out, sizeof(out)), 400, "%s",
                 out);
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"certificate\":\"-----BEGIN nope\"}",
             serial);
    cr_assert_eq(admin_call(&srv, token, "/admin/supersede", json, out, sizeof(out)), 400, "%s",
                 out);
    /* demo-revoked is revoked for keyCompromise already: superseding it is a conflict, and the
     * replacement of the refused call is not registered either (one transaction). */
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", serial);
    cr_assert_eq(admin_call(&srv, token, "/admin/supersede", json, out, sizeof(out)), 409, "%s",
                 out);
    cr_assert_eq(
        sh(&srv, out, sizeof(out), PKIVA " status --data %s --cert pki/demo-revoked.pem", srv.data),
        0, "%s", out);
    cr_assert(strstr(out, "keyCompromise") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

/* [issue #5] pkiva tsa check: a token the server issued verifies with the unit's certificate and
 * matches its log record (as the response, and as the bare token); a log record that was altered
 * or removed, a token of another TSA and a file that is no token all fail, each saying why. */
Test(serve, tsa_check_matches_tokens_against_the_log)
{
    char out[8192];
    start(&srv);
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && "
                    "curl -sf -H 'Content-Type: application/timestamp-query' --data-binary @q.tsq "
                    "http://127.0.0.1:%d/tsa -o r.tsr && "
                    "openssl ts -reply -in r.tsr -token_out -out t.der 2>&1",
                    srv.port),
                 0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " tsa check --data %s r.tsr t.der", srv.data), 0,
                 "%s", out);
    cr_assert(strstr(out, "r.tsr: unit demo-tsa, serial ") != NULL, "%s", out);
    cr_assert(strstr(out, "t.der: unit demo-tsa, serial ") != NULL, "%s", out);
    cr_assert(strstr(out, "SHA256 imprint: signature OK, matches the token log") != NULL, "%s",
              out);

    /* another TSA: a software key and certificate of its own, openssl ts -reply */
    cr_assert_eq(
        sh(&srv, out, sizeof(out),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout o.key "
           "-subj /CN=other-tsa -addext extendedKeyUsage=critical,timeStamping -days 2 "
           "-out o.pem 2>&1 && printf '[tsa]\ndefault_tsa = t\n[t]\nserial = o.serial\n"
           "signer_digest = sha256\ndefault_policy = 1.2.3.4\ndigests = sha256\n"
           "ess_cert_id_alg = sha256\n' > o.cnf && echo 7FFFFF01 > o.serial && "
           "openssl ts -reply -config o.cnf -queryfile q.tsq -signer o.pem -inkey o.key "
           "-out o.tsr 2>&1"),
        0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " tsa check --data %s o.tsr", srv.data), 1, "%s",
                 out);
    cr_assert(strstr(out, "does not verify with the certificate of any configured TSA unit") !=
                  NULL,
              "%s", out);
    /* the same certificate named as the unit's previous one (a renewal): recognised as its
     * signer, and its serial is then looked up in the unit's log */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "sed -i '/^\\[tsa.demo-tsa\\]/a previous_certs = %s/o.pem' pkiva.conf && " PKIVA
                    " tsa check --data %s o.tsr",
                    srv.data, srv.data),
                 1, "%s", out);
    cr_assert(strstr(out, "o.tsr: unit demo-tsa, serial 2147483394") != NULL &&
                  strstr(out, "signature OK, but NOT in the token log") != NULL,
              "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " tsa check --data %s q.tsq", srv.data), 1, "%s",
                 out);
    cr_assert(strstr(out, "not a time-stamp token") != NULL, "%s", out);

    /* the log record altered, then removed */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "sqlite3 pkiva.db \"UPDATE tsa_tokens SET imprint = zeroblob(32)\" 2>&1"),
                 0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " tsa check --data %s r.tsr", srv.data), 1, "%s",
                 out);
    cr_assert(strstr(out, "the token log's record differs") != NULL, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), "sqlite3 pkiva.db \"DELETE FROM tsa_tokens\" 2>&1"), 0,
                 "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " tsa check --data %s t.der", srv.data), 1, "%s",
                 out);
    cr_assert(strstr(out, "signature OK, but NOT in the token log") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

/* [issue #6] The embedded default's admin API is HTTPS with mutual TLS: a verified operator
 * certificate authenticates without a token; untrusted, expired or absent certificates do not;
 * plain HTTP to the admin port gets no answer; require_client_cert = yes refuses the token
 * alone; pkiva crl publish reaches the server over TLS. */
Test(serve, admin_api_mutual_tls)
{
    char token[128] = "", out[8192], cmd[2048], serial[128] = "", json[512];
    static const char op[] = "--cert admin/operator.pem --key admin/operator.key";
    struct stat st;
    char path[512];

    /* The ports go into pkiva.conf, where pkiva crl publish finds the running server. */
    snprintf(cmd, sizeof(cmd),
             PKIVA " init --data %s --listen 127.0.0.1:%d --admin-listen 127.0.0.1:%d 2>&1",
             srv.data, srv.port, srv.admin_port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    {
        static const char *const files[] = {"admin-ca.pem", "server.pem", "server.key",
                                            "operator.pem", "operator.key"};
        for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
            snprintf(path, sizeof(path), "%s/admin/%s", srv.data, files[i]);
            cr_assert_eq(stat(path, &st), 0, "missing %s", path);
            if (strstr(files[i], ".key") != NULL)
                cr_assert_eq(st.st_mode & 077, 0, "%s readable by others", path);
        }
    }
    /* A CA of the test's own (the admin CA's key was discarded), trusted alongside the admin CA,
     * issues a valid and an expired client certificate; a self-signed one is trusted by nobody. */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "printf 'extendedKeyUsage=clientAuth\\n' > t-client.ext && "
                    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout t-ca.key -out t-ca.pem -subj '/CN=test ops CA' -days 30 && "
                    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout t-op.key -out t-op.csr -subj '/O=ops/CN=second operator' && "
                    "openssl x509 -req -in t-op.csr -CA t-ca.pem -CAkey t-ca.key -days 30 "
                    "-extfile t-client.ext -out t-op.pem && "
                    "openssl x509 -req -in t-op.csr -CA t-ca.pem -CAkey t-ca.key -days -1 "
                    "-extfile t-client.ext -out t-expired.pem && "
                    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                    "-keyout t-rogue.key -out t-rogue.pem -days 30 "
                    "-subj '/O=pkiva demo/CN=pkiva demo operator' && "
                    "cat admin/admin-ca.pem t-ca.pem > t-clients.pem && "
                    "printf '\\n[admin]\\nclient_ca = t-clients.pem\\n' >> pkiva.conf 2>&1"),
                 0, "%s", out);
    start(&srv);
    snprintf(cmd, sizeof(cmd), "cat %s/admin.token", srv.data);
    cr_assert_eq(ts_run(cmd, token, sizeof(token)), 0);
    cr_assert_eq(
        sh(&srv, serial, sizeof(serial),
           "openssl x509 -in pki/demo-good.pem -noout -serial | cut -d= -f2 | tr -d '\\n'"),
        0);
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", serial);

    /* No certificate, no token: 401. The token alone still works. */
    cr_assert_eq(admin_call(&srv, NULL, "/admin/status", json, out, sizeof(out)), 401, "%s", out);
    cr_assert_eq(admin_call(&srv, token, "/admin/status", json, out, sizeof(out)), 200, "%s", out);
    /* The operator certificate alone. */
    cr_assert_eq(admin_call_cert(&srv, op, NULL, "/admin/status", json, out, sizeof(out)), 200,
                 "%s", out);
    cr_assert(strstr(out, "\"status\":\"good\"") != NULL, "%s", out);
    /* A certificate from the second trusted CA. */
    cr_assert_eq(admin_call_cert(&srv, "--cert t-op.pem --key t-op.key", NULL, "/admin/status",
                                 json, out, sizeof(out)),
                 200, "%s", out);
    /* Untrusted (self-signed, same name as the operator) and expired: 401, even with a wrong
     * token beside them. */
    cr_assert_eq(admin_call_cert(&srv, "--cert t-rogue.pem --key t-rogue.key", NULL,
                                 "/admin/status", json, out, sizeof(out)),
                 401, "%s", out);
    cr_assert_eq(admin_call_cert(&srv, "--cert t-expired.pem --key t-op.key", NULL, "/admin/status",
                                 json, out, sizeof(out)),
                 401, "%s", out);
    cr_assert_eq(admin_call_cert(&srv, "--cert t-expired.pem --key t-op.key",
                                 "wrong-token-wrong-token", "/admin/status", json, out,
                                 sizeof(out)),
                 401, "%s", out);
    /* Plain HTTP to the admin port gets no HTTP answer. */
    snprintf(cmd, sizeof(cmd),
             "curl -s -o /dev/null -w '%%{http_code}' --max-time 5 http://127.0.0.1:%d/metrics",
             srv.admin_port);
    ts_run(cmd, out, sizeof(out));
    cr_assert_eq(atoi(out), 0, "plain HTTP answered: %s", out);
    /* A revocation by certificate is audited under the certificate's subject. */
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\","
             "\"actor\":\"somebody else\"}",
             serial);
    cr_assert_eq(admin_call_cert(&srv, op, NULL, "/admin/revoke", json, out, sizeof(out)), 200,
                 "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), "sqlite3 pkiva.db 'select actor from audit'"), 0, "%s",
                 out);
    cr_assert(strstr(out, "admin-mtls:CN=pkiva demo operator,O=pkiva demo") != NULL, "%s", out);
    cr_assert(strstr(out, "somebody else") == NULL, "%s", out);
    /* pkiva crl publish asks the running server, over TLS. */
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s",
                 out);
    cr_assert(strstr(out, "demo-ca: CRL number ") != NULL && strstr(out, "served now") != NULL,
              "%s", out);
    /* The handshakes are counted in /metrics. */
    snprintf(cmd, sizeof(cmd),
             "curl -s --max-time 5 --cacert %s/admin/admin-ca.pem --cert %s/admin/operator.pem "
             "--key %s/admin/operator.key https://127.0.0.1:%d/metrics",
             srv.data, srv.data, srv.data, srv.admin_port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    cr_assert(strstr(out, "pkiva_http_tls_handshakes_total{result=\"ok\"}") != NULL, "%s", out);
    cr_assert(strstr(out, "pkiva_http_tls_handshakes_total{result=\"failed\"} 0") == NULL,
              "the plain HTTP attempt was not counted: %s", out);
    cr_assert_eq(stop(&srv), 0);

    /* require_client_cert = yes: the token alone is refused, the certificate still works. */
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "printf '\\n[admin]\\nrequire_client_cert = yes\\n' >> pkiva.conf"),
                 0, "%s", out);
    start(&srv);
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", serial);
    cr_assert_eq(admin_call(&srv, token, "/admin/status", json, out, sizeof(out)), 401, "%s", out);
    cr_assert_eq(admin_call_cert(&srv, op, NULL, "/admin/status", json, out, sizeof(out)), 200,
                 "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s",
                 out);
    cr_assert_eq(stop(&srv), 0);
}

/* Data folders made before the admin API had TLS (no tls_cert in [admin]) keep plain HTTP. */
Test(serve, admin_api_without_tls_directives_stays_plain_http)
{
    char out[8192], cmd[1024], token[128] = "";

    snprintf(cmd, sizeof(cmd),
             PKIVA " init --data %s --listen 127.0.0.1:%d --admin-listen 127.0.0.1:%d 2>&1",
             srv.data, srv.port, srv.admin_port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "sed -i -e '/^tls_cert/d' -e '/^tls_key/d' -e '/^client_ca/d' "
                    "-e '/^server_ca/d' -e '/^client_cert/d' -e '/^client_key/d' pkiva.conf"),
                 0, "%s", out);
    start(&srv);
    snprintf(cmd, sizeof(cmd), "cat %s/admin.token", srv.data);
    cr_assert_eq(ts_run(cmd, token, sizeof(token)), 0);
    snprintf(cmd, sizeof(cmd),
             "curl -s -o /dev/null -w '%%{http_code}' --max-time 5 -H 'Authorization: Bearer %s' "
             "http://127.0.0.1:%d/admin/sla",
             token, srv.admin_port);
    ts_run(cmd, out, sizeof(out));
    cr_assert_eq(atoi(out), 200, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), PKIVA " crl publish --data %s 2>&1", srv.data), 0, "%s",
                 out);
    cr_assert(strstr(out, "demo-ca: CRL number ") != NULL && strstr(out, "served now") != NULL,
              "%s", out);
    cr_assert_eq(stop(&srv), 0);
}

/* The embedded default with RSA keys (--alg rsa-2048): every signed object verifies with real
 * clients, as with the default P-256. */
Test(serve, rsa_default_signs_ocsp_crl_and_time_stamps, .timeout = 300)
{
    char out[16384], cmd[1024];
    snprintf(cmd, sizeof(cmd), PKIVA " init --data %s --alg rsa-2048 --listen 127.0.0.1:%d 2>&1",
             srv.data, srv.port);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out), "openssl x509 -in pki/issuing-ca.pem -noout -text"), 0);
    cr_assert(strstr(out, "rsaEncryption") != NULL && strstr(out, "2048 bit") != NULL, "%s", out);
    start(&srv);
    cr_assert_eq(ocsp_query(&srv, "issuing-ca.pem", "demo-revoked.pem", out, sizeof(out), "-nonce"),
                 0, "%s", out);
    cr_assert(strstr(out, "Response verify OK") != NULL, "%s", out);
    cr_assert(strstr(out, "demo-revoked.pem: revoked") != NULL, "%s", out);
    /* /readyz does not wait for the first CRLs, which the publisher makes right after start:
     * under ASan on a busy machine that takes a second or two. */
    cr_assert_eq(
        sh(&srv, out, sizeof(out),
           "true; for i in $(seq 100); do curl -sf http://127.0.0.1:%d/crl/demo-ca.crl -o c.crl && "
           "break; sleep 0.1; done; "
           "openssl crl -inform DER -in c.crl -CAfile pki/ca-chain.pem -verify -noout 2>&1",
           srv.port),
        0, "%s", out);
    cr_assert(strstr(out, "verify OK") != NULL, "%s", out);
    cr_assert_eq(sh(&srv, out, sizeof(out),
                    "echo rsa > f.txt && openssl ts -query -data f.txt -sha384 -cert -out q.tsq && "
                    "curl -sf -H 'Content-Type: application/timestamp-query' --data-binary @q.tsq "
                    "http://127.0.0.1:%d/tsa -o r.tsr && "
                    "openssl ts -verify -data f.txt -in r.tsr -CAfile pki/root-ca.pem "
                    "-untrusted pki/tsa-chain.pem 2>&1",
                    srv.port),
                 0, "%s", out);
    cr_assert(strstr(out, "Verification: OK") != NULL, "%s", out);
    cr_assert_eq(stop(&srv), 0);
}
