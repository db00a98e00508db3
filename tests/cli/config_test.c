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
    cr_assert_eq(cfg.feed.deadline_s, 12 * 3600);
    cr_assert_eq(cfg.feed.poll_ms, 200);
    cr_assert_eq(cfg.feed.max_feed_lag_ms, 5000);
    cr_assert_str_eq(cfg.feed.node_name, "");
    cr_assert_eq(cfg.n_tsa_units, 1);
    cr_assert_str_eq(cfg.tsa_units[0].policy, "1.3.6.1.4.1.99999.1.1");
    cr_assert_eq(cfg.tsa_units[0].n_accepted, 1);
    cr_assert_eq(cfg.tsa_units[0].accuracy_us, 1000000);
    cr_assert_eq(cfg.crl.coalesce_ms, 5000);
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
    cr_assert_eq(cfg.store.backend, STORE_BACKEND_POSTGRESQL);
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
    expect_error(text, "backend must be sqlite or postgresql");
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

/* [store] read_conninfo (a hot standby) becomes the libpq URI of the node's stale-tolerant reads,
 * with the same password file; read_max_lag bounds its lag (default 10 s). */
Test(config, store_read_conninfo)
{
    static const char base[] = "[hsm]\npin_file = /x/pin\n[issuer.ca]\ncert = ca.pem\n"
                               "key = pkcs11:object=ca\n[store]\n";
    char text[1024], pw[] = "/tmp/pkiva-pgpass-XXXXXX", err[512] = "", want[256];
    struct cli_config cfg;
    int fd = mkstemp(pw);

    cr_assert_geq(fd, 0);
    (void)close(fd);
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://pkiva@db1/v\n"
                   "read_conninfo = postgresql://pkiva@db2/v?sslmode=require\n"
                   "password_file = %s\nread_max_lag = 2500ms\n",
                   base, pw);
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    (void)snprintf(want, sizeof(want), "postgresql://pkiva@db2/v?sslmode=require&passfile=%s", pw);
    cr_assert_str_eq(cfg.store_read_path, want);
    cr_assert_eq(cfg.store.read_max_lag_ms, 2500);
    (void)unlink(pw);
    (void)snprintf(text, sizeof(text), "%sbackend = postgresql\nconninfo = postgresql://db1/v\n",
                   base);
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.store_read_path, "", "no replica unless configured");
    cr_assert_eq(cfg.store.read_max_lag_ms, 10000);
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://db1/v\n"
                   "read_conninfo = postgresql://u:secret@db2/v\n",
                   base);
    expect_error(text, "read_conninfo must be a libpq URI without a password");
    (void)snprintf(text, sizeof(text),
                   "%sbackend = postgresql\nconninfo = postgresql://db1/v\n"
                   "read_conninfo = db2\n",
                   base);
    expect_error(text, "read_conninfo must be a libpq URI");
    (void)snprintf(text, sizeof(text), "%sread_conninfo = postgresql://db2/v\n", base);
    expect_error(text, "read_conninfo needs backend = postgresql");
    (void)snprintf(text, sizeof(text), "%sread_max_lag = 10ms\n", base);
    expect_error(text, "read_max_lag must be at least 100ms");
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
    expect_error("[server]\nworkers = lots\n", "t.conf:2: workers: expected an integer");
    expect_error("[ocsp]\nvalidity = 4 days\n", "t.conf:2: validity: expected a duration");
    expect_error("[nope]\nx = 1\n", "unknown section [nope]");
    expect_error("[server]\nlisten = 8080\n", "t.conf:2: listen: expected HOST:PORT");
    expect_error("[server]\nlisten = 127.0.0.1:99999\n", "t.conf:2: listen: expected HOST:PORT");
    expect_error("this is not ini\n", "t.conf:1: syntax error");
    expect_error("[issuer.bad/name]\ncert = x\n", "issuer name");
    expect_error("[hsm]\nno_deinit = maybe\n", "t.conf:2: no_deinit: expected yes or no");
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
    cr_assert_str_eq(cfg.admin.tls_cert, "/etc/pkiva/admin/server.pem");
    cr_assert_str_eq(cfg.admin.tls_key, "/etc/pkiva/admin/server.key");
    cr_assert_str_eq(cfg.admin.client_ca, "/etc/pkiva/admin/ca.pem");
    cr_assert_eq(cfg.admin.require_client_cert, 1);
    cr_assert_str_eq(cfg.admin.server_ca, "");
    cr_assert_str_eq(cfg.admin.client_cert, "/etc/pkiva/admin/op.pem");
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
    cr_assert_str_eq(cfg.hsm.init_args, "");
    cr_assert_eq(cfg.hsm.ecdsa_verify_every, 16, "default: one ECDSA signature in 16 verified");
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.hsm.init_args, "configdir='sql:/db' certPrefix='' flags=");
    cr_assert_eq(cfg.hsm.ecdsa_verify_every, 4);
    cr_assert_eq(cli_config_parse_string("[hsm]\npin_file = /p\nverify_ecdsa = all\n[issuer.a]\n"
                                         "cert = c\nkey = pkcs11:x\n",
                                         "t.conf", "/", &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.hsm.ecdsa_verify_every, 1);
    cr_assert_eq(cli_config_parse_string("[hsm]\npin_file = /p\nverify_ecdsa = none\n[issuer.a]\n"
                                         "cert = c\nkey = pkcs11:x\n",
                                         "t.conf", "/", &cfg, err, sizeof(err)),
                 0, "%s", err);
    cr_assert_eq(cfg.hsm.ecdsa_verify_every, -1);
    expect_error("[hsm]\nverify_ecdsa = sometimes\n",
                 "t.conf:2: verify_ecdsa: expected all, none or sample N");
    expect_error("[hsm]\nverify_ecdsa = sample 0\n", "t.conf:2: verify_ecdsa: expected an integer");
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

/* Whether conf/pkiva.conf may show a value other than the default: for a default that is unset ("")
 * or derived ("0") it shows an example, and for a file (PATH) the packaged deployment's. */
static int example_allowed(const struct util_conf_directive *d)
{
    return strcmp(d->dflt, "") == 0 || strcmp(d->dflt, "0") == 0 || d->kind == UTIL_CONF_PATH;
}

/* The directive name in every table of section (cli_config_table), or NULL. */
static const struct util_conf_directive *find_directive(const char *section, const char *name)
{
    const char *sec = NULL;
    size_t n = 0;
    const struct util_conf_directive *table;
    for (size_t t = 0; (table = cli_config_table(t, &sec, &n)) != NULL; t++)
        for (size_t i = 0; strcmp(sec, section) == 0 && i < n; i++)
            if (strcmp(table[i].name, name) == 0)
                return &table[i];
    return NULL;
}

/* A section of conf/pkiva.conf against the directive tables the reader has for it: every
 * directive is documented there as "name = default" (or, where example_allowed, with an example
 * value, possibly commented out: "# name = ..."), and the section sets no directive the tables
 * lack. section is a name ("ocsp") or an instance prefix ("issuer."), whose first instance in the
 * file is checked. */
static void sample_matches_tables(const char *section)
{
    const char *prefix = section[strlen(section) - 1] == '.' ? section : NULL;
    char header[64], line[1024];
    int in_section = 0, instances_seen = 0;
    char seen[256][64];
    size_t n_seen = 0;
    FILE *f = fopen(PKIVA_SOURCE_DIR "/conf/pkiva.conf", "r");
    cr_assert_not_null(f);
    (void)snprintf(header, sizeof(header), "[%s]", section);
    while (fgets(line, sizeof(line), f) != NULL) {
        char key[128], value[512];
        int commented = line[0] == '#';
        const char *text = commented ? line + 1 : line;
        const struct util_conf_directive *d;
        line[strcspn(line, "\n")] = '\0';
        if (line[0] == '[') {
            in_section = prefix != NULL ? strncmp(line + 1, prefix, strlen(prefix)) == 0 &&
                                              instances_seen++ == 0
                                        : strcmp(line, header) == 0;
            continue;
        }
        if (!in_section || sscanf(text, " %127[a-z_] = %511[^\n]", key, value) != 2)
            continue;
        d = find_directive(section, key);
        if (commented) {
            /* Prose may look like a directive ("# backend = postgresql: ..."): only a line that
             * could document the directive counts. */
            if (d != NULL && (example_allowed(d) || strcmp(value, d->dflt) == 0))
                (void)snprintf(seen[n_seen++], sizeof(seen[0]), "%s", key);
            continue;
        }
        cr_assert_not_null(d, "[%s] %s is not a directive of its tables", section, key);
        if (!example_allowed(d))
            cr_assert_str_eq(value, d->dflt, "[%s] %s: conf/pkiva.conf says %s, the table %s",
                             section, key, value, d->dflt);
        (void)snprintf(seen[n_seen++], sizeof(seen[0]), "%s", key);
        cr_assert_lt(n_seen, sizeof(seen) / sizeof(seen[0]));
    }
    (void)fclose(f);
    {
        const char *sec = NULL;
        size_t n = 0;
        const struct util_conf_directive *table;
        for (size_t t = 0; (table = cli_config_table(t, &sec, &n)) != NULL; t++) {
            for (size_t i = 0; strcmp(sec, section) == 0 && i < n; i++) {
                size_t k = 0;
                while (k < n_seen && strcmp(seen[k], table[i].name) != 0)
                    k++;
                cr_assert_lt(k, n_seen, "[%s] %s is not documented in conf/pkiva.conf", section,
                             table[i].name);
            }
        }
    }
}

/* Every section: conf/pkiva.conf documents exactly the tables' directives and defaults; no two
 * tables of a section declare the same directive (the second would never be reached); every
 * directive has a doc line and a default that the reader accepts. */
Test(config, every_section_documents_its_tables)
{
    const char *sec = NULL;
    size_t n = 0;
    const struct util_conf_directive *table;
    size_t tables = 0;
    for (size_t t = 0; (table = cli_config_table(t, &sec, &n)) != NULL; t++, tables++) {
        sample_matches_tables(sec);
        for (size_t i = 0; i < n; i++) {
            char text[1024], err[512] = "";
            struct cli_config cfg;
            cr_assert(find_directive(sec, table[i].name) == &table[i], "[%s] %s is declared twice",
                      sec, table[i].name);
            cr_assert(table[i].doc != NULL && table[i].doc[0] != '\0', "[%s] %s: no doc line", sec,
                      table[i].name);
            if (table[i].dflt[0] == '\0')
                continue;
            /* An instance gets what the whole-file check requires of it first. */
            (void)snprintf(text, sizeof(text), "%s[%s%s]\n%s%s = %s\n", minimal, sec,
                           sec[strlen(sec) - 1] == '.' ? "x" : "",
                           strcmp(sec, "issuer.") == 0 ? "cert = c\nkey = pkcs11:x\n"
                           : strcmp(sec, "tsa.") == 0 ? "cert = c\nkey = pkcs11:x\npolicy = 1.2.3\n"
                                                      : "",
                           table[i].name, table[i].dflt);
            cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)), 0,
                         "[%s] %s = %s: %s", sec, table[i].name, table[i].dflt, err);
        }
    }
    cr_assert_geq(tables, 13, "every section has its table");
}

/* A rejected value is named by file, line and directive, whatever the section and kind. */
Test(config, errors_name_the_directive)
{
    const char *sec = NULL;
    size_t n = 0;
    const struct util_conf_directive *table;
    for (size_t t = 0; (table = cli_config_table(t, &sec, &n)) != NULL; t++) {
        for (size_t i = 0; i < n; i++) {
            char text[256], err[512] = "", want[128];
            struct cli_config cfg;
            if (table[i].kind == UTIL_CONF_PATH ||
                (table[i].kind == UTIL_CONF_STRING && table[i].choices == NULL))
                continue; /* any text is a valid value */
            (void)snprintf(text, sizeof(text), "[%s%s]\n%s = ~bad~\n", sec,
                           sec[strlen(sec) - 1] == '.' ? "x" : "", table[i].name);
            cr_assert_eq(cli_config_parse_string(text, "t.conf", "/", &cfg, err, sizeof(err)),
                         UTIL_ECONFIG, "[%s] %s accepted ~bad~", sec, table[i].name);
            (void)snprintf(want, sizeof(want), "t.conf:2: %s", table[i].name);
            cr_assert(strncmp(err, want, strlen(want)) == 0, "[%s] %s: '%s'", sec, table[i].name,
                      err);
        }
    }
}

/* The defaults are the tables': the reader's match each module's own default function, and the
 * module-level defaults that a configuration file can also set agree with the file's. */
Test(config, defaults_come_from_the_module_tables)
{
    struct cli_config cfg;
    struct hsm_settings hsm;
    struct http_limits limits;
    struct crl_config crl;
    struct feed_settings feed;
    cli_config_defaults(&cfg);
    hsm_settings_default(&hsm);
    http_limits_default(&limits);
    crl_config_default(&crl);
    feed_settings_default(&feed);
    cr_assert_eq(memcmp(&cfg.hsm, &hsm, sizeof(hsm)), 0);
    cr_assert_eq(memcmp(&cfg.http.limits, &limits, sizeof(limits)), 0);
    cr_assert_eq(memcmp(&cfg.feed, &feed, sizeof(feed)), 0);
    cr_assert_eq(cfg.hsm.ecdsa_verify_every, HSM_ECDSA_VERIFY_DEFAULT);
    cr_assert_eq(cfg.crl.coalesce_ms, crl.coalesce_ms);
    cr_assert_eq(cfg.crl.expired_retention_s, crl.expired_retention_seconds);
    cr_assert_eq(cfg.crl.deltas, crl.deltas);
    cr_assert_eq(cfg.crl.full_on_change, crl.full_on_change);
    cr_assert_eq(cfg.http.listeners[0].port, 8080);
    cr_assert_eq(cfg.http.listeners[0].kind, HTTP_PUBLIC);
    cr_assert_eq(cfg.http.listeners[1].kind, HTTP_ADMIN);
    cr_assert_eq(cfg.feed.deadline_s, 12 * 3600);
    cr_assert_eq(cfg.feed.poll_ms, 200);
    cr_assert_eq(cfg.hsm.restart_after_ms, 60000);
    cr_assert_str_eq(cfg.data_dir, "./var");
    cr_assert_eq(cfg.store.backend, STORE_BACKEND_SQLITE);
}

/* [issuer.NAME] and [tsa.NAME]: each instance starts from its table's defaults. */
Test(config, instance_sections)
{
    struct cli_config cfg;
    char err[512] = "";
    static const char text[] = "[hsm]\npin_file = /p\n[issuer.a]\ncert = c\nkey = pkcs11:x\n"
                               "digest = SHA384\n[issuer.b]\ncert = /d\nkey = pkcs11:y\n"
                               "[tsa.t]\ncert = t.pem\nkey = pkcs11:t\npolicy = 1.2.3\n"
                               "accepted_policies = 1.2.4, 1.2.5\n[issuer.a]\nrsa_pss = yes\n";
    cr_assert_eq(cli_config_parse_string(text, "t.conf", "/etc", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_eq(cfg.n_issuers, 2);
    cr_assert_str_eq(cfg.issuers[0].cert, "/etc/c");
    cr_assert_str_eq(cfg.issuers[0].digest, "SHA384");
    cr_assert_eq(cfg.issuers[0].rsa_pss, 1);
    cr_assert_str_eq(cfg.issuers[1].name, "b");
    cr_assert_str_eq(cfg.issuers[1].cert, "/d");
    cr_assert_eq(cfg.n_tsa_units, 1);
    cr_assert_str_eq(cfg.tsa_units[0].cert, "/etc/t.pem");
    cr_assert_eq(cfg.tsa_units[0].accuracy_us, 1000000);
    cr_assert_eq(cfg.tsa_units[0].n_accepted, 2);
    cr_assert_str_eq(cfg.tsa_units[0].accepted[1], "1.2.5");
    expect_error("[issuer.a]\ndigest = MD5\n", "t.conf:2: digest must be SHA256, SHA384 or SHA512");
    expect_error("[issuer.a]\ncolour = red\n",
                 "t.conf:2: unknown directive 'colour' in [issuer.a]");
    expect_error("[tsa.u]\ncolour = red\n", "t.conf:2: unknown directive 'colour' in [tsa.u]");
    expect_error("[tsa.u/v]\ncert = x\n", "t.conf:2: TSA unit name 'u/v' must be");
}

/* [ocsp]: the reader applies the table's defaults, and a mistake is named with its line. */
Test(config, ocsp_section)
{
    struct cli_config cfg;
    struct ocsp_config d;
    char err[512] = "";
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
    expect_error("[ocsp]\nmax_certids = 0\n",
                 "t.conf:2: max_certids: expected an integer in 1..1000");
    expect_error("[ocsp]\ncache_max = lots\n", "t.conf:2: cache_max: expected a size");
    expect_error("[ocsp]\nbogus = 1\n", "t.conf:2: unknown directive 'bogus' in [ocsp]");
}

/* [tsa]: the table's defaults, and a mistake is named with its line. */
Test(config, tsa_section)
{
    struct cli_config cfg;
    char err[512] = "";
    cr_assert_eq(cli_config_parse_string(minimal, "t.conf", "/", &cfg, err, sizeof(err)), 0, "%s",
                 err);
    cr_assert_str_eq(cfg.tsa.path, "/tsa");
    cr_assert_eq(cfg.tsa.durable_log, 1);
    cr_assert_eq(cfg.tsa.require_clock_sync, 1);
    cr_assert_eq(cfg.tsa.max_inflight, 4096);
    cr_assert_eq(cfg.tsa.serial_block, 4096);
    expect_error("[tsa]\npath = tsa\n", "t.conf:2: path must start with '/'");
    expect_error("[tsa]\nserial_block = 0\n",
                 "t.conf:2: serial_block: expected an integer in 1..1000000");
    expect_error("[tsa]\ndurable_log = maybe\n", "t.conf:2: durable_log: expected yes or no");
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
    cr_assert_eq(cfg.feed.max_feed_lag_ms, 2500);
    cr_assert_str_eq(cfg.feed.node_name, "ocsp-a");
    (void)snprintf(text, sizeof(text), "%s[store]\nfeed_poll = 1s\nmax_feed_lag = 1500ms\n",
                   minimal);
    expect_error(text, "max_feed_lag must be at least feed_poll");
}
