/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration parsing: the sample file is valid, and every kind of mistake is named with its
 * file, line and reason. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <cli/cli.h>
#include <criterion/criterion.h>
#include <sched.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <util/util.h>

static const char minimal[] = "[hsm]\npin_file = /x/pin\n"
                              "[issuer.ca]\ncert = ca.pem\nkey = pkcs11:object=ca\n";

Test(config, sample_file_is_valid_and_complete)
{
    struct cli_config cfg;
    char err[512] = "";
    int rc = cli_config_load(PKIVA_SOURCE_DIR "/conf/pkiva.conf", &cfg, err, sizeof(err));
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(cfg.n_issuers, 1);
    cr_assert_str_eq(cfg.issuers[0].name, "demo-ca");
    cr_assert_eq(cfg.http.listeners[0].port, 8080);
    cr_assert_eq(cfg.http.listeners[1].port, 8081);
    cr_assert_eq(cfg.ocsp.validity_seconds, 6 * 3600); /* derived: half of the 12 h deadline */
    cr_assert_eq(cfg.sla_deadline_s, 12 * 3600);
    cr_assert_eq(cfg.feed_poll_ms, 200);
    cr_assert_eq(cfg.store_max_feed_lag_ms, 5000);
    cr_assert_str_eq(cfg.node_name, "");
    cr_assert_eq(cfg.n_tsa_units, 1);
    cr_assert_str_eq(cfg.tsa_units[0].policy, "1.3.6.1.4.1.99999.1.1");
    cr_assert_eq(cfg.tsa_units[0].n_accepted, 1);
    cr_assert_eq(cfg.tsa_units[0].accuracy_us, 1000000);
    cr_assert_eq(cfg.crl_coalesce_ms, 5000);
}

static void expect_error(const char *text, const char *needle)
{
    struct cli_config cfg;
    char err[512] = "";
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), UTIL_ECONFIG,
                 "accepted: %s", text);
    cr_assert(strstr(err, needle) != NULL, "error '%s' lacks '%s'", err, needle);
}

/* [store] backend = postgresql: conninfo (a URI without a password) and an owner-only password
 * file become the libpq URI every store connection opens. */
Test(config, store_backend_postgresql)
{
    static const char base[] = "[hsm]\npin_file = /x/pin\n[issuer.ca]\ncert = ca.pem\n"
                               "key = pkcs11:object=ca\n[store]\n";
    char text[1024], pw[] = "/tmp/pkiva-pgpass-XXXXXX", err[512] = "";
    struct cli_config cfg;
    int fd = mkstemp(pw);

    cr_assert_geq(fd, 0);
    (void)close(fd);
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://pkiva@db/v\n"
                   "password_file = %s\n",
                   base, pw);
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(cfg.store_backend, CLI_STORE_POSTGRESQL);
    char want[256];
    (void)snprintf(want, sizeof(want), "postgresql://pkiva@db/v?passfile=%s", pw);
    cr_assert_str_eq(cfg.store_path, want);
    cr_assert_eq(chmod(pw, 0640), 0);
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://db/v?x=1\n"
                   "password_file = %s\n",
                   base, pw);
    expect_error(text, "group/other may access it");
    (void)unlink(pw);

    (void)snprintf(text, sizeof(text), "%sbackend = mysql\n", base);
    expect_error(text, "expected sqlite or postgresql");
    (void)snprintf(text, sizeof(text), "%sbackend = postgresql\n", base);
    expect_error(text, "conninfo must be a libpq URI");
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://u:pw@db/v\n", base);
    expect_error(text, "must not hold a password");
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://db/v\n"
                   "path = /x.db\n",
                   base);
    expect_error(text, "path is for the sqlite backend");
    (void)snprintf(text, sizeof(text), "%sconninfo = postgresql://db/v\n", base);
    expect_error(text, "need backend = postgresql");
}

Test(config, tsa_and_crl_errors)
{
    expect_error("[crl]\ncoalesce = 2m\n", "t.conf:2: coalesce must be at most 60s");
    expect_error("[tsa.a]\npolicy = not.an.oid\n", "t.conf:2: policy must be a dotted OID");
    expect_error("[tsa.a]\naccuracy = 1 sec\n", "t.conf:2: accuracy must be like");
    expect_error("[tsa.a]\nkey = /tmp/k.pem\n", "t.conf:2: key must be a PKCS#11 URI");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[tsa.t]\ncert = t.pem\n",
                 "[tsa.t] needs cert, key and policy");
}

Test(config, defaults_and_relative_paths)
{
    struct cli_config cfg;
    char err[512] = "";
    cr_assert_eq(cli_config_parse_string(minimal, "t.conf", "/etc/pkiva", &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_str_eq(cfg.issuers[0].cert, "/etc/pkiva/ca.pem");
    cr_assert_str_eq(cfg.issuers[0].key_uri, "pkcs11:object=ca");
    cr_assert_str_eq(cfg.public_url, "http://127.0.0.1:8080");
    cr_assert_eq(cfg.ocsp.max_age_seconds, 3600);
}

Test(config, errors_name_file_line_and_reason)
{
    expect_error("[server]\nworkers = 2\nbogus = 1\n", "t.conf:3: unknown directive 'bogus'");
    expect_error("[server]\nworkers = lots\n", "t.conf:2: expected an integer");
    expect_error("[ocsp]\nvalidity = 4 days\n", "t.conf:2: expected a duration");
    expect_error("[nope]\nx = 1\n", "unknown section [nope]");
    expect_error("[server]\nlisten = 8080\n", "t.conf:2: expected HOST:PORT");
    expect_error("[server]\nlisten = 127.0.0.1:99999\n", "t.conf:2: expected HOST:PORT");
    expect_error("this is not ini\n", "t.conf:1: syntax error");
    expect_error("[issuer.bad/name]\ncert = x\n", "issuer name");
    expect_error("[hsm]\nno_deinit = maybe\n", "expected yes or no");
}

Test(config, whole_file_checks)
{
    expect_error("[server]\nworkers = 1\n", "pin_file is required");
    expect_error("[hsm]\npin_file = /p\n", "at least one [issuer.NAME]");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c.pem\n", "needs cert and key");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c.pem\nkey = /tmp/key.pem\n",
                 "PKCS#11 URIs");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\nocsp_cert = o\n",
                 "go together");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[ocsp]\nvalidity = 1h\nmax_age = 2h\n",
                 "max_age must not exceed validity");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[server]\nlisten = 127.0.0.1:9\nadmin_listen = 127.0.0.1:9\n",
                 "must differ");
}

Test(config, durations_and_sizes)
{
    int64_t v = 0;
    cr_assert_eq(cli_parse_duration("90", &v), 0);
    cr_assert_eq(v, 90);
    cr_assert_eq(cli_parse_duration("15m", &v), 0);
    cr_assert_eq(v, 900);
    cr_assert_eq(cli_parse_duration("12h", &v), 0);
    cr_assert_eq(v, 43200);
    cr_assert_eq(cli_parse_duration("4d", &v), 0);
    cr_assert_eq(v, 345600);
    cr_assert_eq(cli_parse_duration("-1", &v), UTIL_EINVAL);
    cr_assert_eq(cli_parse_duration("1w", &v), UTIL_EINVAL);
    cr_assert_eq(cli_parse_duration("5mm", &v), UTIL_EINVAL);
    cr_assert_eq(cli_parse_duration("99999999999999999999", &v), UTIL_EINVAL);
    cr_assert_eq(cli_parse_size("64k", &v), 0);
    cr_assert_eq(v, 65536);
    cr_assert_eq(cli_parse_size("1G", &v), 0);
    cr_assert_eq(v, 1073741824);
    cr_assert_eq(cli_parse_size("", &v), UTIL_EINVAL);
}

Test(config, admin_tls_directives)
{
    struct cli_config cfg;
    char err[512] = "";
    static const char good[] = "[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                               "[admin]\ntls_cert = admin/server.pem\ntls_key = admin/server.key\n"
                               "client_ca = admin/ca.pem\nrequire_client_cert = yes\n"
                               "client_cert = admin/op.pem\nclient_key = admin/op.key\n";
    cr_assert_eq(cli_config_parse_string(good, "t.conf", "/etc/pkiva", &cfg, err, sizeof(err)), 0,
                 "%s", err);
    cr_assert_str_eq(cfg.admin_tls_cert, "/etc/pkiva/admin/server.pem");
    cr_assert_str_eq(cfg.admin_tls_key, "/etc/pkiva/admin/server.key");
    cr_assert_str_eq(cfg.admin_client_ca, "/etc/pkiva/admin/ca.pem");
    cr_assert_eq(cfg.admin_require_client_cert, 1);
    cr_assert_str_eq(cfg.admin_server_ca, "");
    cr_assert_str_eq(cfg.admin_client_cert, "/etc/pkiva/admin/op.pem");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[admin]\ntls_cert = s.pem\n",
                 "tls_cert and tls_key go together");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[admin]\ntls_key = s.key\n",
                 "tls_cert and tls_key go together");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[admin]\nclient_ca = ca.pem\n",
                 "client_ca needs tls_cert");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[admin]\ntls_cert = s.pem\ntls_key = s.key\nrequire_client_cert = yes\n",
                 "require_client_cert needs client_ca");
    expect_error("[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                 "[admin]\nclient_cert = o.pem\n",
                 "client_cert and client_key go together");
    expect_error("[admin]\nrequire_client_cert = maybe\n", "t.conf:2:");
}

/* workers = 0: one loop per CPU less one (the signing, store and CRL threads and the kernel's
 * network work need a core too; on 2 cores shared with a load generator one loop served 1.3x the
 * requests of two with half the p99), never none. */
Test(config, default_workers_leave_a_cpu_and_never_go_below_one)
{
    struct cli_config cfg;

    cr_assert_eq(cli_workers_for_cpus(0), 1);
    cr_assert_eq(cli_workers_for_cpus(1), 1);
    cr_assert_eq(cli_workers_for_cpus(2), 1);
    cr_assert_eq(cli_workers_for_cpus(4), 3);
    cr_assert_eq(cli_workers_for_cpus(64), 63);
    cli_config_defaults(&cfg);
    cr_assert_eq(cfg.workers, 0, "the documented default is 0 = automatic");
}

/* The count follows the process's affinity mask (taskset, cgroup cpusets), not the machine's. */
Test(config, default_workers_follow_the_affinity_mask)
{
    cpu_set_t all, one;

    cr_assert_eq(sched_getaffinity(0, sizeof(all), &all), 0);
    cr_assert_eq(cli_default_workers(), cli_workers_for_cpus(CPU_COUNT(&all)));
    CPU_ZERO(&one);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &all)) {
            CPU_SET(c, &one);
            break;
        }
    cr_assert_eq(sched_setaffinity(0, sizeof(one), &one), 0);
    int n = cli_default_workers();
    cr_assert_eq(sched_setaffinity(0, sizeof(all), &all), 0);
    cr_assert_eq(n, 1);
}

/* Issue 21: [hsm] init_args (kept verbatim, quotes and all) and verify_ecdsa. */
Test(config, hsm_init_args_and_verify_ecdsa)
{
    static const char text[] = "[hsm]\npin_file = /x/pin\n"
                               "init_args = configdir='sql:/db' certPrefix='' flags=\n"
                               "verify_ecdsa = sample 4\n"
                               "[issuer.ca]\ncert = ca.pem\nkey = pkcs11:object=ca\n";
    struct cli_config cfg;
    char err[512] = "";

    cr_assert_eq(cli_config_parse_string(minimal, "t.conf", "/", &cfg, err, sizeof(err)), 0);
    cr_assert_str_eq(cfg.hsm_init_args, "");
    cr_assert_eq(cfg.hsm_ecdsa_verify_every, 16, "default: one ECDSA signature in 16 verified");
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.hsm_init_args, "configdir='sql:/db' certPrefix='' flags=");
    cr_assert_eq(cfg.hsm_ecdsa_verify_every, 4);
    cr_assert_eq(cli_config_parse_string("[hsm]\npin_file = /p\nverify_ecdsa = all\n[issuer.a]\n"
                                         "cert = c\nkey = pkcs11:x\n",
                                         "t.conf", "/", &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.hsm_ecdsa_verify_every, 1);
    cr_assert_eq(cli_config_parse_string("[hsm]\npin_file = /p\nverify_ecdsa = none\n[issuer.a]\n"
                                         "cert = c\nkey = pkcs11:x\n",
                                         "t.conf", "/", &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.hsm_ecdsa_verify_every, -1);
    expect_error("[hsm]\nverify_ecdsa = sometimes\n", "t.conf:2: expected all, none or sample N");
    expect_error("[hsm]\nverify_ecdsa = sample 0\n", "t.conf:2: expected an integer");
}

/* [directory]: the sample file states exactly the defaults of the directive table, and mistakes
 * are named with their line. */
Test(config, directory_section)
{
    struct cli_config cfg;
    struct directory_config d;
    char err[512] = "";
    cr_assert_eq(cli_config_load(PKIVA_SOURCE_DIR "/conf/pkiva.conf", &cfg, err, sizeof(err)), 0,
                 "%s", err);
    directory_config_default(&d);
    cr_assert_eq(memcmp(&cfg.directory, &d, sizeof(d)), 0,
                 "conf/pkiva.conf [directory] differs "
                 "from the defaults");
    cr_assert_eq(d.enabled, 1);
    cr_assert_eq(d.search_fields, DIRECTORY_FIELD_ALL);
    cr_assert_eq(d.utc_offset_minutes, 7 * 60);
    cr_assert_eq(d.upload_max, 64 * 1024);
    cr_assert_str_eq(d.default_lang, "vi");
    cr_assert_eq(
        cli_config_parse_string("[directory]\nsearch_fields = cn, serial\nshow_email = no\n"
                                "utc_offset = -03:30\nissuers = a\n"
                                "[hsm]\npin_file = /p\n[issuer.a]\ncert = c\n"
                                "key = pkcs11:x\n",
                                "t.conf", "/", &cfg, err, sizeof(err)),
        0, "%s", err);
    cr_assert_eq(cfg.directory.search_fields, DIRECTORY_FIELD_CN | DIRECTORY_FIELD_SERIAL);
    cr_assert_eq(cfg.directory.show_email, 0);
    cr_assert_eq(cfg.directory.utc_offset_minutes, -210);
    cr_assert_str_eq(cfg.directory.issuers, "a");
    expect_error("[directory]\nsearch_fields = cn, phone\n", "t.conf:2: search_fields: a list of");
    expect_error("[directory]\npage_size = 1000\n", "t.conf:2: page_size: expected an integer");
    expect_error("[directory]\nutc_offset = 7\n", "t.conf:2: utc_offset: expected +HH:MM");
    expect_error("[directory]\nupload_max = 10M\n", "t.conf:2: upload_max: expected a size");
    expect_error("[directory]\ncolour = blue\n", "t.conf:2: unknown directive 'colour'");
    expect_error("[directory]\nissuers = a b/c\n", "t.conf:2: issuers: 'b/c' is not");
    expect_error("[directory]\nissuers = a, z\n[hsm]\npin_file = /p\n[issuer.a]\ncert = c\n"
                 "key = pkcs11:x\n",
                 "[directory] issuers: no [issuer.z] section");
}

/* A section of conf/pkiva.conf against its module's directive table: every directive of the
 * table is documented there as "name = default" (or, for a default of 0 = derived, as a
 * commented-out example "# name = ..."), and the section names no directive the table lacks. */
static void sample_matches_table(const char *section, const struct util_conf_directive *table,
                                 size_t n)
{
    char header[64], line[1024];
    int in_section = 0;
    int seen[64] = {0};
    FILE *f = fopen(PKIVA_SOURCE_DIR "/conf/pkiva.conf", "r");
    cr_assert_not_null(f);
    cr_assert_leq(n, sizeof(seen) / sizeof(seen[0]));
    (void)snprintf(header, sizeof(header), "[%s]", section);
    while (fgets(line, sizeof(line), f) != NULL) {
        char key[128], value[512];
        int commented = line[0] == '#';
        const char *text = commented ? line + 1 : line;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '[') {
            in_section = strcmp(line, header) == 0;
            continue;
        }
        if (!in_section || sscanf(text, " %127[a-z_] = %511[^\n]", key, value) != 2)
            continue;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(key, table[i].name) != 0)
                continue;
            if (commented)
                cr_assert_str_eq(table[i].dflt, "0", "[%s] %s: only derived defaults are commented",
                                 section, key);
            else
                cr_assert_str_eq(value, table[i].dflt, "[%s] %s: conf/pkiva.conf says %s", section,
                                 key, value);
            seen[i] = 1;
            break;
        }
        if (!commented) {
            size_t i = 0;
            while (i < n && strcmp(key, table[i].name) != 0)
                i++;
            cr_assert_lt(i, n, "[%s] %s is not a directive of the table", section, key);
        }
    }
    (void)fclose(f);
    for (size_t i = 0; i < n; i++)
        cr_assert(seen[i], "[%s] %s is not documented in conf/pkiva.conf", section, table[i].name);
}

/* [ocsp]: the sample file documents exactly the directive table's defaults, the reader applies
 * them, and a mistake is named with its line. */
Test(config, ocsp_section)
{
    size_t n = 0;
    const struct util_conf_directive *table = ocsp_config_directives(&n);
    struct cli_config cfg;
    struct ocsp_config d;
    char err[512] = "";
    sample_matches_table("ocsp", table, n);
    cr_assert_eq(cli_config_parse_string(minimal, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    ocsp_config_default(&d);
    cr_assert_eq(d.validity_seconds, 0); /* derived */
    cr_assert_eq(cfg.ocsp.validity_seconds, 6 * 3600);
    cr_assert_eq(cfg.ocsp.nonce_queue_max, d.nonce_queue_max);
    cr_assert_eq(cfg.ocsp.nonce_queue_max, 256);
    cr_assert_eq(cfg.ocsp.cache_max_bytes, (size_t)1 << 30);
    cr_assert_eq(cfg.ocsp.expired_retention_seconds, 3650LL * 86400);
    cr_assert_str_eq(cfg.ocsp.path, "/");
    expect_error("[ocsp]\nunknown_serials = maybe\n",
                 "t.conf:2: unknown_serials must be unknown or revoked, got 'maybe'");
    expect_error("[ocsp]\nresponder_id = hash\n", "t.conf:2: responder_id must be key or name");
    expect_error("[ocsp]\npath = ocsp\n", "t.conf:2: path must start with '/'");
    expect_error("[ocsp]\nmax_certids = 0\n", "t.conf:2: expected an integer in 1..1000");
    expect_error("[ocsp]\ncache_max = lots\n", "t.conf:2: expected a size");
    expect_error("[ocsp]\nbogus = 1\n", "t.conf:2: unknown directive 'bogus' in [ocsp]");
}

/* [tsa]: the sample file documents exactly the directive table's defaults, and a mistake is
 * named with its line. */
Test(config, tsa_section)
{
    size_t n = 0;
    const struct util_conf_directive *table = tsa_config_directives(&n);
    struct cli_config cfg;
    char err[512] = "";
    sample_matches_table("tsa", table, n);
    cr_assert_eq(cli_config_parse_string(minimal, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.tsa.path, "/tsa");
    cr_assert_eq(cfg.tsa.durable_log, 1);
    cr_assert_eq(cfg.tsa.require_clock_sync, 1);
    cr_assert_eq(cfg.tsa.max_inflight, 4096);
    cr_assert_eq(cfg.tsa.serial_block, 4096);
    expect_error("[tsa]\npath = tsa\n", "t.conf:2: path must start with '/'");
    expect_error("[tsa]\nserial_block = 0\n", "t.conf:2: expected an integer in 1..1000000");
    expect_error("[tsa]\ndurable_log = maybe\n", "t.conf:2: expected yes or no");
    expect_error("[tsa]\nbogus = 1\n", "t.conf:2: unknown directive 'bogus' in [tsa]");
}

/* [store] max_feed_lag (the /readyz bound on the feed lag, and the cluster SLA's live bound) and
 * node_name; the bound must leave room for a poll and a report. */
Test(config, store_max_feed_lag_and_node_name)
{
    struct cli_config cfg;
    char text[512], err[512] = "";

    (void)snprintf(text, sizeof(text), "%s[store]\nmax_feed_lag = 2500ms\nnode_name = ocsp-a\n",
                   minimal);
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(cfg.store_max_feed_lag_ms, 2500);
    cr_assert_str_eq(cfg.node_name, "ocsp-a");
    (void)snprintf(text, sizeof(text), "%s[store]\nfeed_poll = 1s\nmax_feed_lag = 1500ms\n",
                   minimal);
    expect_error(text, "max_feed_lag must be at least feed_poll");
}
