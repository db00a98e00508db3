/* SPDX-License-Identifier: Apache-2.0 */
/* Security of the service itself, against the real binary: the admin API cannot be entered
 * without exactly the right bearer token, and a refused request changes nothing; the public
 * listener has no admin route; the PIN and the admin token never reach the log, even at debug
 * level and through failures; `[server] user` drops root for good after binding, and refuses to
 * start when it cannot. */
#include "rel.h"

#include <criterion/criterion.h>
#include <openssl/pem.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <unistd.h>
#include <util/util.h>

static struct rel_server srv;

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(security, .init = setup, .fini = teardown, .timeout = 90);

static void demo_serial(const char *pem_name, char *hex, size_t len)
{
    char out[256];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl x509 -in pki/%s -noout -serial | cut -d= -f2 | tr -d '\\n'",
                        pem_name),
                 0);
    snprintf(hex, len, "%s", out);
}

/* What a refused request could have changed: the change feed, the revocation records, the
 * certificates' statuses. (The audit chain and the CRL history also grow on their own: start-up,
 * scheduled publications.) */
static void store_fingerprint(char *out, size_t len)
{
    cr_assert_eq(rel_sh(&srv, out, len,
                        "sqlite3 pkiva.db 'select count(*), max(id) from feed; select count(*) "
                        "from revocations; select hex(serial), status, reason from certs order "
                        "by serial'"),
                 0, "%s", out);
}

Test(security, admin_authentication_cannot_be_bypassed)
{
    char serial[80], json[512], body[4096], before[8192], after[8192];
    char *long_token = malloc(9000);
    const size_t tl = strlen(srv.token);
    char variants[16][9200];
    int n = 0;

    demo_serial("demo-good.pem", serial, sizeof(serial));
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", serial);
    memset(long_token, 'A', 8000);
    long_token[8000] = '\0';
    snprintf(variants[n++], sizeof(variants[0]), "%s", ""); /* no header */
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer \r\n");
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer\r\n");
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: \r\n");
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer %.*s\r\n", (int)(tl - 1),
             srv.token); /* prefix */
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer %s\r\n",
             srv.token + 1); /* suffix */
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer %sX\r\n", srv.token);
    /* (A lowercase "bearer" scheme is accepted: RFC 9110 11.1 makes scheme names
     * case-insensitive. A lowercase scheme with a wrong token must still fail.) */
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: bearer %sX\r\n", srv.token);
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: %s\r\n", srv.token);
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Basic %s\r\n", srv.token);
    snprintf(variants[n++], sizeof(variants[0]), "X-Authorization: Bearer %s\r\n", srv.token);
    snprintf(variants[n++], sizeof(variants[0]),
             "Authorization: Bearer wrong-wrong-wrong-wrong\r\nAuthorization: Bearer %s\r\n",
             srv.token);
    snprintf(variants[n++], sizeof(variants[0]),
             "Authorization: Bearer %s\r\nAuthorization: Bearer wrong-wrong-wrong-wrong\r\n",
             srv.token);
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer %s\r\n", long_token);
    snprintf(variants[n++], sizeof(variants[0]), "Authorization: Bearer %s%s\r\n", srv.token,
             srv.token);
    free(long_token);

    rel_start(&srv, 30);
    store_fingerprint(before, sizeof(before));
    for (int i = 0; i < n; i++) {
        static const char *const paths[] = {"/admin/revoke", "/admin/crl/publish", "/admin/status",
                                            "/admin/certificates"};
        for (size_t p = 0; p < sizeof(paths) / sizeof(paths[0]); p++) {
            int status = rel_admin(&srv, paths[p], json, variants[i], body, sizeof(body));
            cr_expect_eq(status, 401, "variant %d on %s: %d %s (%.60s)", i, paths[p], status, body,
                         variants[i]);
        }
        cr_expect_eq(rel_admin(&srv, "/admin/sla", NULL, variants[i], body, sizeof(body)), 401,
                     "variant %d on /admin/sla", i);
    }
    /* The public listener has no admin route, even with the right token. */
    {
        char req[2048];
        int len = snprintf(req, sizeof(req),
                           "POST /admin/revoke HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                           "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                           "Content-Length: %zu\r\n\r\n%s",
                           srv.token, strlen(json), json);
        int status = rel_http(srv.port, req, (size_t)len, body, sizeof(body), 5000);
        cr_expect_neq(status, 200, "public listener: %d", status);
        cr_expect_null(strstr(body, "durable"), "admin route on the public listener: %s", body);
    }
    rel_sleep_ms(600); /* anything that slipped through would be in the feed by now */
    store_fingerprint(after, sizeof(after));
    cr_assert_str_eq(before, after, "a refused request changed the store");
    cr_assert_eq(rel_ocsp(&srv, serial, 0, NULL), 0);

    /* Control: the exact token is accepted, so the refusals above were about the token. */
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s", body);
    store_fingerprint(after, sizeof(after));
    cr_assert_str_neq(before, after);
    cr_assert_eq(rel_stop(&srv), 0);
}

static void read_secret(const char *name, char *out, size_t len)
{
    char path[400];
    FILE *f;
    snprintf(path, sizeof(path), "%s/%s", srv.data, name);
    f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    cr_assert_not_null(fgets(out, (int)len, f));
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    cr_assert_geq(strlen(out), 4, "%s", path);
}

Test(security, pin_and_tokens_never_reach_the_log)
{
    char pin[256], so_pin[256], serial[80], json[512], body[4096], out[8192], auth[512];
    const char *const secrets[] = {pin, so_pin, srv.token, "0000111122223333"};
    const char *const names[] = {"user PIN", "SO PIN", "admin token", "wrong PIN"};

    read_secret("hsm/user.pin", pin, sizeof(pin));
    read_secret("hsm/so.pin", so_pin, sizeof(so_pin));
    demo_serial("demo-good.pem", serial, sizeof(serial));
    rel_conf_append(&srv, "[server]\nlog_level = debug\n");

    rel_start(&srv, 30);
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"superseded\"}", serial);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s", body);
    /* Wrong tokens built from the secrets: a log line quoting the presented token would leak. */
    snprintf(auth, sizeof(auth), "Authorization: Bearer %sX\r\n", srv.token);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, auth, body, sizeof(body)), 401);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\n", pin);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, auth, body, sizeof(body)), 401);
    cr_assert_eq(rel_admin(&srv, "/admin/crl/publish", "{}", NULL, body, sizeof(body)), 202);
    cr_assert_geq(rel_ocsp(&srv, serial, 1, NULL), 0);
    rel_sleep_ms(500);
    cr_assert_eq(rel_stop(&srv), 0);

    /* A restart with a wrong PIN must fail, and say so without the PIN. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "cp hsm/user.pin ../pin.saved && printf '%s\\n' > hsm/user.pin && "
                        "chmod 0600 hsm/user.pin",
                        secrets[3]),
                 0, "%s", out);
    cr_assert_neq(rel_run_to_exit(&srv, 30), 0, "the server started with a wrong PIN");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "cp ../pin.saved hsm/user.pin"), 0);
    /* ... and the right one works again (the failure above was the PIN). */
    rel_start(&srv, 30);
    cr_assert_eq(rel_stop(&srv), 0);

    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep -c ' debug ' %s", srv.log), 0,
                 "no debug lines: the test did not run at debug level");
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
        int found = rel_sh(&srv, out, sizeof(out), "grep -F -n -e '%s' %s", secrets[i], srv.log);
        cr_expect_neq(found, 0, "the %s appears in the log: %s", names[i], out);
    }
    /* The operator-facing errors of the CLI either. */
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         "printf '%s\\n' > hsm/user.pin && " REL_PKIVA
                         " status --data %s --cert pki/demo-good.pem 2>&1; " REL_PKIVA
                         " crl publish --data %s 2>&1; cp ../pin.saved hsm/user.pin; exit 1",
                         secrets[3], srv.data, srv.data),
                  0);
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        cr_expect_null(strstr(out, secrets[i]), "the %s appears in CLI output: %s", names[i], out);
}

#define RUN_USER "pkiva-test"

static int ensure_user(uid_t *uid, gid_t *gid)
{
    struct passwd *pw;
    char out[1024];
    if (geteuid() != 0)
        return 0;
    if (getpwnam(RUN_USER) == NULL)
        cr_assert_eq(ts_run("useradd --system --no-create-home --shell /usr/sbin/nologin " RUN_USER
                            " 2>&1",
                            out, sizeof(out)),
                     0, "useradd: %s", out);
    pw = getpwnam(RUN_USER);
    cr_assert_not_null(pw);
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 1;
}

/* "Uid:\t1\t2\t3\t4" -> the four ids. */
static void proc_ids(pid_t pid, const char *key, long ids[4])
{
    char path[64], line[512];
    FILE *f;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    ids[0] = ids[1] = ids[2] = ids[3] = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, strlen(key)) == 0)
            sscanf(line + strlen(key), "%ld %ld %ld %ld", &ids[0], &ids[1], &ids[2], &ids[3]);
    fclose(f);
}

static void proc_field(pid_t pid, const char *key, char *out, size_t len)
{
    char path[64], line[512];
    FILE *f;
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    out[0] = '\0';
    while (fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, key, strlen(key)) == 0)
            snprintf(out, len, "%s", line + strlen(key));
    fclose(f);
}

Test(security, server_user_drops_root_after_binding)
{
    uid_t uid;
    gid_t gid;
    long ids[4];
    char serial[80], json[512], body[4096], out[8192], field[256];
    int revoked = 0;

    if (!ensure_user(&uid, &gid))
        cr_skip_test("needs root to switch users");
    demo_serial("demo-good.pem", serial, sizeof(serial));
    /* The data folder belongs to the user (documented in conf/pkiva.conf). */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "chown -R " RUN_USER ": %s", srv.dir), 0, "%s",
                 out);
    rel_conf_append(&srv, "[server]\nuser = " RUN_USER "\n[crl]\ncoalesce = 200ms\n");
    rel_start(&srv, 30);

    proc_ids(srv.pid, "Uid:", ids);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ids[i], (long)uid, "uid %d is %ld, not %ld", i, ids[i], (long)uid);
    proc_ids(srv.pid, "Gid:", ids);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ids[i], (long)gid, "gid %d is %ld, not %ld", i, ids[i], (long)gid);
    proc_field(srv.pid, "Groups:", field, sizeof(field));
    cr_assert_eq(strtol(field, NULL, 10), (long)gid, "supplementary groups: %s", field);
    proc_field(srv.pid, "CapEff:", field, sizeof(field));
    cr_assert_eq(strtoull(field, NULL, 16), 0, "capabilities left: %s", field);
    proc_field(srv.pid, "CapPrm:", field, sizeof(field));
    cr_assert_eq(strtoull(field, NULL, 16), 0, "permitted capabilities left: %s", field);

    /* Everything still works as the user: the store (admin pool, poller), the token (pre-signer,
     * live signing), the CRL publisher (store and publish folder). */
    cr_assert_eq(rel_get(srv.port, "/readyz", body, sizeof(body), 5000), 200, "%s", body);
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", serial);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s", body);
    for (int i = 0; i < 100 && !revoked; i++) {
        revoked = rel_ocsp(&srv, serial, 0, NULL) == 1;
        if (!revoked)
            rel_sleep_ms(100);
    }
    cr_assert(revoked, "revocation not visible in OCSP as " RUN_USER);
    cr_assert_eq(rel_ocsp(&srv, serial, 1, NULL), 1, "live (nonce) signing as " RUN_USER);
    cr_assert_eq(rel_admin(&srv, "/admin/crl/publish", "{}", NULL, body, sizeof(body)), 202);
    {
        int published = 0;
        for (int i = 0; i < 100 && !published; i++) {
            published = rel_sh(&srv, out, sizeof(out),
                               "openssl crl -inform DER -in crl/demo-ca.crl -noout -text | "
                               "grep -qi '%s'",
                               serial) == 0;
            if (!published)
                rel_sleep_ms(100);
        }
        cr_assert(published, "no CRL with the revocation published as " RUN_USER);
    }
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "stat -c %%U crl/demo-ca.crl"), 0);
    cr_assert_not_null(strstr(out, RUN_USER), "CRL file owner: %s", out);
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "grep -c 'running as user " RUN_USER "' %s", srv.log), 0,
        "no log line about the switch");
    cr_assert_eq(rel_stop(&srv), 0);
}

Test(security, server_user_refuses_to_start_when_it_cannot_switch)
{
    uid_t uid;
    gid_t gid;
    char out[8192], conf[400];

    if (!ensure_user(&uid, &gid))
        cr_skip_test("needs root to switch users");
    snprintf(conf, sizeof(conf), "%s/pkiva.conf", srv.data);
    /* A user that does not exist. */
    rel_conf_append(&srv, "[server]\nuser = no-such-user-pkiva\n");
    cr_assert_eq(rel_run_to_exit(&srv, 30), 1);
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "grep -c 'no-such-user-pkiva: no such user' %s", srv.log), 0,
        "no clear error");
    /* Root itself. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sed -i 's/^user = no-such-user-pkiva$/user = "
                        "root/' pkiva.conf"),
                 0);
    cr_assert_eq(rel_run_to_exit(&srv, 30), 1);
    /* Not started as root: refused, not silently ignored. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sed -i 's/^user = root$/user = " RUN_USER
                        "/' pkiva.conf && chown -R " RUN_USER ": %s && setpriv --reuid " RUN_USER
                        " --regid " RUN_USER " --clear-groups " REL_PKIVA
                        " serve --data %s --listen 127.0.0.1:%d "
                        "--admin-listen 127.0.0.1:%d 2>&1",
                        srv.dir, srv.data, srv.port, srv.admin_port),
                 1, "%s", out);
    cr_assert_not_null(strstr(out, "needs pkiva serve to be started as root"), "%s", out);
    /* Nothing was left listening. */
    cr_assert_eq(rel_get(srv.port, "/healthz", NULL, 0, 1000), 0);
}

/* ---- issue 15.3: time-stamp serials never repeat ---------------------------------------------- */

#define TSA_SERIALS_MAX 64

struct serial_set {
    unsigned long long v[TSA_SERIALS_MAX];
    int n;
};

static int serial_seen(const struct serial_set *set, unsigned long long v)
{
    for (int i = 0; i < set->n; i++)
        if (set->v[i] == v)
            return 1;
    return 0;
}

/* Issues n time stamps (saved as DATA/<tag><i>.tsr); checks each serial is positive and at most 20
 * octets (RFC 3161), and adds it to got. */
static void issue_time_stamps(const char *tag, int n, struct serial_set *got)
{
    char out[4096];
    for (int i = 0; i < n; i++) {
        const char *p;
        size_t hex_len;
        cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                            "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && "
                            "curl -sS --max-time 10 -H 'Content-Type: application/timestamp-query' "
                            "--data-binary @q.tsq http://127.0.0.1:%d/tsa -o %s%d.tsr && openssl "
                            "ts -reply -in %s%d.tsr -text 2>&1",
                            srv.port, tag, i, tag, i),
                     0, "%s", out);
        cr_assert(strstr(out, "Status: Granted") != NULL, "%s", out);
        p = strstr(out, "Serial number: ");
        cr_assert_not_null(p, "%s", out);
        p += strlen("Serial number: ");
        cr_assert(strncmp(p, "0x", 2) == 0, "not a positive serial: %.40s", p);
        p += 2;
        hex_len = strspn(p, "0123456789ABCDEFabcdef");
        cr_assert(hex_len > 0 && hex_len <= 40, "serial of %zu hex digits", hex_len);
        cr_assert_leq(hex_len, 16, "serial beyond what this test reads: %.40s", p);
        cr_assert_lt(got->n, TSA_SERIALS_MAX);
        got->v[got->n++] = strtoull(p, NULL, 16);
    }
}

/* Every serial of the token log (the sqlite3 shell on a stopped server's store). */
static void token_log_serials(struct serial_set *out)
{
    char buf[8192], *line, *save = NULL;
    cr_assert_eq(rel_sh(&srv, buf, sizeof(buf),
                        "sqlite3 pkiva.db 'SELECT printf(\"%%x\", serial) FROM tsa_tokens'"),
                 0, "%s", buf);
    out->n = 0;
    for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        cr_assert_lt(out->n, TSA_SERIALS_MAX);
        out->v[out->n++] = strtoull(line, NULL, 16);
    }
}

/* Serials were keyed by the unit's name and counted by the store: renaming a unit restarted them
 * at 1, restoring a copy of the store issued the same serials again. Now no serial ever issued
 * comes again: checked against the token log of every earlier run. */
Test(security, time_stamp_serials_survive_rename_and_restored_store)
{
    struct serial_set before_backup = {0}, logged = {0}, run = {0}, all = {0};
    char out[4096];

    rel_start(&srv, 30);
    issue_time_stamps("a", 3, &before_backup);
    cr_assert_eq(rel_stop(&srv), 0);
    /* A copy of the store, taken while the server is stopped. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "cp pkiva.db backup.db && rm -f backup.db-wal && "
                        "{ [ ! -f pkiva.db-wal ] || cp pkiva.db-wal backup.db-wal; }"),
                 0, "%s", out);
    rel_start(&srv, 30);
    issue_time_stamps("b", 3, &run);
    cr_assert_eq(rel_stop(&srv), 0);
    token_log_serials(&logged);
    cr_assert_eq(logged.n, 6, "the token log has %d records", logged.n);
    all = logged;

    /* The older copy comes back (a restored backup, a fail-over to a lagging replica). */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "rm -f pkiva.db-wal pkiva.db-shm && cp backup.db "
                        "pkiva.db && { [ ! -f backup.db-wal ] || cp "
                        "backup.db-wal pkiva.db-wal; }"),
                 0, "%s", out);
    rel_start(&srv, 30);
    run.n = 0;
    issue_time_stamps("c", 3, &run);
    cr_assert_eq(rel_stop(&srv), 0);
    for (int i = 0; i < run.n; i++) {
        cr_assert(!serial_seen(&all, run.v[i]), "serial %llx issued again after the restore",
                  run.v[i]);
        all.v[all.n++] = run.v[i];
    }

    /* The unit renamed (same key, same certificate). */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sed -i 's/^\\[tsa\\.demo-tsa\\]$/[tsa.renamed]/' pkiva.conf && grep -c "
                        "'^\\[tsa\\.renamed\\]$' pkiva.conf"),
                 0, "%s", out);
    rel_start(&srv, 30);
    run.n = 0;
    issue_time_stamps("d", 3, &run);
    cr_assert_eq(rel_stop(&srv), 0);
    for (int i = 0; i < run.n; i++)
        cr_assert(!serial_seen(&all, run.v[i]), "serial %llx issued again after the rename",
                  run.v[i]);
    /* The log still finds tokens from before and after the rename. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " tsa check --data . c0.tsr d0.tsr 2>&1"),
                 0, "%s", out);
    (void)before_backup;
}

/* The highest CRL number (full or delta) the running server publishes for demo-ca after
 * `pkiva crl publish` (which waits for the publication), read back from the served CRLs. */
static long long publish_crls(void)
{
    char out[4096];
    long long hi = 0;
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " crl publish --data . >/dev/null 2>&1 && for c in demo-ca "
                                  "demo-ca-delta; do curl -sS --max-time 10 "
                                  "http://127.0.0.1:%d/crl/$c.crl | openssl crl -inform DER "
                                  "-noout -crlnumber || exit 1; done",
                        srv.port),
                 0, "%s", out);
    for (const char *p = strstr(out, "crlNumber=0x"); p != NULL;
         p = strstr(p + 1, "crlNumber=0x")) {
        long long v = strtoll(p + strlen("crlNumber=0x"), NULL, 16);
        if (v > hi)
            hi = v;
    }
    cr_assert_gt(hi, 0, "no CRL number read: %s", out);
    return hi;
}

/* CRL numbers came from a counter in the store: a store restored from an older backup issued
 * again the numbers published since the backup (RFC 5280 §5.2.3: they only ever increase, and a
 * relying party holding a newer CRL ignores an older-numbered one). The number is now at least
 * the clock in ms: after the restore, the next CRL is numbered above every one published. */
Test(security, crl_numbers_never_repeat_after_a_restored_store)
{
    char out[4096];
    long long before = 0, published = 0, after = 0;

    rel_start(&srv, 30);
    before = publish_crls();
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "sqlite3 pkiva.db \".backup 'backup.db'\""), 0,
                 "%s", out);
    rel_start(&srv, 30);
    for (int i = 0; i < 3; i++)
        published = publish_crls();
    cr_assert_gt(published, before);
    cr_assert_eq(rel_stop(&srv), 0);

    /* The backup comes back (the README's restore: the copy in place, no -wal or -shm). */
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "rm -f pkiva.db-wal pkiva.db-shm && cp backup.db pkiva.db"),
        0, "%s", out);
    rel_start(&srv, 30);
    after = publish_crls();
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_gt(after, published, "CRL number %llx after the restore, %llx published before it",
                 after, published);
}
