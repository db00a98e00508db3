/* SPDX-License-Identifier: Apache-2.0 */
/* Operator commands that work on the store directly: revoke, unrevoke, status, import and the SLA
 * report (`pkiva audit` is in audit.c). Each change is durable (and in the change feed) before the command reports
 * success; a running server applies it within a second. */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <admin/admin.h>
#include <ctype.h>
#include <dirent.h>
#include <feed/feed.h>
#include <getopt.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <util/util.h>

int cli__load_config(const char *config, const char *data_dir, struct cli_config *cfg)
{
    char path[CLI_PATH_MAX + 16];
    char err[1024];
    struct cli_demo_options defaults;
    if (config == NULL) {
        cli_demo_defaults(&defaults);
        (void)snprintf(path, sizeof(path), "%s/pkiva.conf",
                       data_dir ? data_dir : defaults.data_dir);
        config = path;
    }
    if (cli_config_load(config, cfg, err, sizeof(err)) != UTIL_OK) {
        fprintf(stderr, "pkiva: %s\n", err);
        return 1;
    }
    return 0;
}

void cli__apply_env(const struct cli_config *cfg)
{
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    if (cfg->hsm.softhsm_conf[0] != '\0')
        (void)setenv("SOFTHSM2_CONF", cfg->hsm.softhsm_conf, 1); /* only fails on ENOMEM */
    for (int i = 0; i < 4; i++)
        if (strcmp(cfg->log_level, levels[i]) == 0)
            util_log_set_level((enum util_log_level)i);
}

/* Options shared by the commands that name one certificate. */
struct cert_ref {
    const char *config, *data_dir, *issuer, *serial, *cert_file;
};

static int open_store_flags(const struct cli_config *cfg, int flags, struct store **store)
{
    int rc = store_open_blocking(cfg->store_path, flags, store);
    if (rc == UTIL_ENOTFOUND)
        fprintf(stderr,
                "pkiva: the store %s does not exist yet: run 'pkiva init --config %s' first "
                "(it checks the keys, creates the store and registers the issuers)\n",
                cfg->store_path, cfg->source);
    else if (rc != UTIL_OK)
        fprintf(stderr, "pkiva: cannot open the store %s: %s\n", cfg->store_path,
                util_strerror(rc));
    return rc;
}

static int open_store(const struct cli_config *cfg, struct store **store)
{
    return open_store_flags(cfg, 0, store);
}

/* Finds the registered issuer whose subject is a certificate's issuer and whose key signed it. */
struct issuer_find {
    X509 *cert;
    int64_t id;
};

/* 1 when the stored issuer issued cert: its subject is cert's issuer name and its key verifies
 * cert's signature; else 0. */
static int issued_by(X509 *cert, const struct store_issuer *is)
{
    const unsigned char *p = is->cert_der;
    X509 *ca = d2i_X509(NULL, &p, (long)is->cert_len);
    int found = 0;
    if (ca != NULL) {
        found = X509_NAME_cmp(X509_get_subject_name(ca), X509_get_issuer_name(cert)) == 0 &&
                X509_verify(cert, X509_get0_pubkey(ca)) == 1;
        X509_free(ca);
    }
    ERR_clear_error(); /* a non-matching issuer leaves verification errors behind */
    return found;
}

static int issuer_match(void *ctx, const struct store_issuer *is)
{
    struct issuer_find *find = ctx;
    int found = issued_by(find->cert, is);
    if (found)
        find->id = is->id;
    return found;
}

/* Resolves --issuer/--serial or --cert into (issuer id, serial octets). */
static int resolve_cert(struct store *store, const struct cert_ref *ref, int64_t *issuer_id,
                        unsigned char *serial, size_t *serial_len)
{
    struct store_issuer issuer;
    X509 *cert = NULL; /* --cert with --issuer: checked against that issuer below */
    int rc;
    memset(&issuer, 0, sizeof(issuer));
    if (ref->cert_file != NULL) {
        /* Find the issuer by name: the stored issuers whose subject is this cert's issuer. */
        FILE *f = fopen(ref->cert_file, "r");
        if (f == NULL) {
            fprintf(stderr, "pkiva: cannot open %s\n", ref->cert_file);
            return UTIL_ENOTFOUND;
        }
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        (void)fclose(f); /* read-only */
        if (cert == NULL) {
            fprintf(stderr, "pkiva: %s is not a PEM certificate\n", ref->cert_file);
            return UTIL_EINVAL;
        }
        if (store_serial_from_asn1(X509_get0_serialNumber(cert), serial, serial_len) != UTIL_OK) {
            X509_free(cert);
            fprintf(stderr, "pkiva: %s has an unusable serial number\n", ref->cert_file);
            return UTIL_EINVAL;
        }
        if (ref->issuer == NULL) {
            struct issuer_find find = {cert, 0};
            rc = store_issuer_list_blocking(store, issuer_match, &find);
            X509_free(cert);
            if (rc != UTIL_OK && rc != 1)
                return rc;
            if (find.id == 0) {
                fprintf(stderr, "pkiva: the issuer of %s is not registered\n", ref->cert_file);
                return UTIL_ENOTFOUND;
            }
            *issuer_id = find.id;
            return UTIL_OK;
        }
    } else {
        if (ref->issuer == NULL || ref->serial == NULL) {
            fprintf(stderr, "pkiva: name the certificate with --issuer NAME --serial HEX, or "
                            "--cert FILE\n");
            return UTIL_EINVAL;
        }
        if (admin_serial_parse(ref->serial, serial, serial_len) != UTIL_OK) {
            fprintf(stderr, "pkiva: --serial '%s' is not a hexadecimal serial number\n",
                    ref->serial);
            return UTIL_EINVAL;
        }
    }
    rc = store_issuer_get_blocking(store, ref->issuer, &issuer);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva: no issuer named '%s' in the store\n", ref->issuer);
        X509_free(cert);
        return rc;
    }
    /* --cert and --issuer together: the certificate must be that issuer's (name and signature),
     * or its serial would be looked up, and changed, under an issuer that never issued it. */
    if (cert != NULL && !issued_by(cert, &issuer)) {
        fprintf(stderr,
                "pkiva: %s was not issued by '%s' (its issuer name or signature does not match "
                "that CA certificate)\n",
                ref->cert_file, ref->issuer);
        rc = UTIL_EINVAL;
    }
    *issuer_id = issuer.id;
    store_issuer_cleanup(&issuer);
    X509_free(cert);
    return rc;
}

static void print_serial(FILE *out, const unsigned char *serial, size_t len)
{
    char hex[2 * STORE_SERIAL_MAX + 1];
    util_hex(serial, len, hex);
    fputs(hex, out);
}

static const struct option cert_opts[] = {{"config", required_argument, NULL, 'c'},
                                          {"data", required_argument, NULL, 'd'},
                                          {"issuer", required_argument, NULL, 'i'},
                                          {"serial", required_argument, NULL, 's'},
                                          {"cert", required_argument, NULL, 'C'},
                                          {"reason", required_argument, NULL, 'r'},
                                          {"revoked-at", required_argument, NULL, 't'},
                                          {"invalidity-date", required_argument, NULL, 'v'},
                                          {"request-id", required_argument, NULL, 'q'},
                                          {"received-at", required_argument, NULL, 'R'},
                                          {"actor", required_argument, NULL, 'a'},
                                          {"new", required_argument, NULL, 'n'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};

/* The options that name the configuration and one certificate, shared by revoke, supersede,
 * unrevoke and status. Returns 1 when opt was one of them. */
static int cert_ref_option(struct cert_ref *ref, int opt)
{
    switch (opt) {
    case 'c': ref->config = optarg; return 1;
    case 'd': ref->data_dir = optarg; return 1;
    case 'i': ref->issuer = optarg; return 1;
    case 's': ref->serial = optarg; return 1;
    case 'C': ref->cert_file = optarg; return 1;
    default: return 0;
    }
}

static const char revoke_help[] =
    "usage: pkiva revoke [--config FILE | --data DIR] (--issuer NAME --serial HEX | --cert FILE)\n"
    "                    [--reason REASON] [--revoked-at TIME] [--invalidity-date TIME]\n"
    "                    [--request-id ID] [--received-at TIME] [--actor WHO]\n\n"
    "Revokes a certificate durably; a running server answers 'revoked' within a second.\n"
    "REASON: unspecified (default), keyCompromise, cACompromise, affiliationChanged, superseded,\n"
    "        cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.\n"
    "TIME:   2026-11-21T10:00:00Z, '2026-11-21 10:00:00' or @UNIXSECONDS (UTC).\n"
    "--received-at is when the revocation request reached the CA (the 12-hour deadline runs\n"
    "from it); default now. --cert finds the issuer by the certificate's issuer name; with\n"
    "--issuer too, that issuer must have issued it (name and signature), else nothing changes.\n";

int cli__cmd_revoke(int argc, char **argv)
{
    struct cert_ref ref = {0};
    struct cli_config cfg;
    struct store *store = NULL;
    struct store_revocation rev;
    unsigned char serial[STORE_SERIAL_MAX];
    int64_t feed_id = 0, t;
    int opt, rc, status = 1;
    char actor[128];

    memset(&rev, 0, sizeof(rev));
    rev.reason = STORE_REASON_NONE;
    (void)snprintf(actor, sizeof(actor), "cli:%s", getenv("USER") ? getenv("USER") : "unknown");
    rev.actor = actor;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cert_opts, NULL)) != -1) {
        if (cert_ref_option(&ref, opt))
            continue;
        switch (opt) {
        case 'r':
            rev.reason = store_reason_from_name(optarg);
            if (rev.reason < -1) {
                fprintf(stderr, "pkiva revoke: unknown --reason '%s'\n%s", optarg, revoke_help);
                return 2;
            }
            if (rev.reason == STORE_REASON_UNSPECIFIED)
                rev.reason = STORE_REASON_NONE;
            break;
        case 't':
        case 'v':
        case 'R':
            if (util_time_parse(optarg, &t) != UTIL_OK) {
                fprintf(stderr,
                        "pkiva revoke: %s: '%s' is not a date in 1970-9999 (UTC, or @seconds)\n%s",
                        opt == 't'   ? "--revoked-at"
                        : opt == 'v' ? "--invalidity-date"
                                     : "--received-at",
                        optarg, revoke_help);
                return 2;
            }
            if (opt == 't')
                rev.revoked_at = t;
            else if (opt == 'v')
                rev.invalidity_date = t;
            else
                rev.received_at_ms = t * 1000;
            break;
        case 'q': rev.request_id = optarg; break;
        case 'a': rev.actor = optarg; break;
        case 'h': fputs(revoke_help, stdout); return 0;
        default: fputs(revoke_help, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pkiva revoke: unexpected argument '%s'\n%s", argv[optind], revoke_help);
        return 2;
    }
    if (cli__load_config(ref.config, ref.data_dir, &cfg) != 0)
        return 1;
    cli__apply_env(&cfg);
    if (open_store(&cfg, &store) != UTIL_OK)
        return 1;
    rc = resolve_cert(store, &ref, &rev.issuer_id, serial, &rev.serial_len);
    if (rc != UTIL_OK)
        goto out;
    rev.serial = serial;
    rc = admin_revoke_blocking(store, &rev, &feed_id);
    if (rc == UTIL_ENOTFOUND) {
        fprintf(stderr, "pkiva revoke: no such certificate under issuer '%s'\n",
                ref.issuer ? ref.issuer : "(from --cert)");
        goto out;
    }
    if (rc == UTIL_EEXIST) {
        fprintf(stderr, "pkiva revoke: the certificate is already revoked with another reason\n");
        goto out;
    }
    if (rc == UTIL_EINVAL && store_errmsg(store)[0] != '\0') {
        fprintf(stderr, "pkiva revoke: %s\n", store_errmsg(store)); /* names the field */
        goto out;
    }
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva revoke: %s\n", util_strerror(rc));
        goto out;
    }
    printf("revoked serial ");
    print_serial(stdout, serial, rev.serial_len);
    printf(" reason %s (change %lld)\n", store_reason_name(rev.reason), (long long)feed_id);
    status = 0;
out:
    store_close(store);
    return status;
}

static const char supersede_help[] =
    "usage: pkiva supersede [--config FILE | --data DIR] (--issuer NAME --serial HEX | --cert "
    "FILE)\n"
    "                       [--new NEW.pem] [--request-id ID] [--received-at TIME] [--actor "
    "WHO]\n\n"
    "Renewal or changed subscriber information in one call: revokes the certificate with reason\n"
    "superseded and, with --new, registers its replacement (same issuer) in the same durable\n"
    "transaction: both happen or neither does.\n";

int cli__cmd_supersede(int argc, char **argv)
{
    struct cert_ref ref = {0};
    struct cli_config cfg;
    struct store *store = NULL;
    struct store_revocation rev;
    unsigned char serial[STORE_SERIAL_MAX], new_serial[STORE_SERIAL_MAX];
    size_t new_serial_len = 0;
    unsigned char *new_der = NULL;
    size_t new_len = 0;
    const char *new_file = NULL;
    int64_t feed_id = 0, t;
    int opt, rc, status = 1;
    char actor[128];

    memset(&rev, 0, sizeof(rev));
    (void)snprintf(actor, sizeof(actor), "cli:%s", getenv("USER") ? getenv("USER") : "unknown");
    rev.actor = actor;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cert_opts, NULL)) != -1) {
        if (cert_ref_option(&ref, opt))
            continue;
        switch (opt) {
        case 'n': new_file = optarg; break;
        case 'q': rev.request_id = optarg; break;
        case 'a': rev.actor = optarg; break;
        case 'R':
            if (util_time_parse(optarg, &t) != UTIL_OK) {
                fprintf(stderr,
                        "pkiva supersede: --received-at: '%s' is not a date in 1970-9999 (UTC, "
                        "or @seconds)\n%s",
                        optarg, supersede_help);
                return 2;
            }
            rev.received_at_ms = t * 1000;
            break;
        case 'h': fputs(supersede_help, stdout); return 0;
        default: fputs(supersede_help, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pkiva supersede: unexpected argument '%s'\n%s", argv[optind],
                supersede_help);
        return 2;
    }
    if (new_file != NULL) {
        X509 *cert = cli__load_pem_cert(new_file);
        unsigned char *der = NULL;
        int len = cert ? i2d_X509(cert, &der) : -1;
        X509_free(cert);
        if (len <= 0) {
            fprintf(stderr, "pkiva supersede: --new %s is not a PEM certificate\n", new_file);
            return 1;
        }
        new_der = der;
        new_len = (size_t)len;
    }
    if (cli__load_config(ref.config, ref.data_dir, &cfg) != 0)
        goto out;
    cli__apply_env(&cfg);
    if (open_store(&cfg, &store) != UTIL_OK)
        goto out;
    rc = resolve_cert(store, &ref, &rev.issuer_id, serial, &rev.serial_len);
    if (rc != UTIL_OK)
        goto out;
    rev.serial = serial;
    rc = admin_supersede_blocking(store, &rev, new_der, new_len, new_serial, &new_serial_len,
                                  &feed_id);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva supersede: %s\n",
                rc == UTIL_ENOTFOUND ? "no such certificate under this issuer"
                : rc == UTIL_EEXIST  ? "the certificate is already revoked with another reason"
                : rc == UTIL_EINVAL && store_errmsg(store)[0] != '\0' ? store_errmsg(store)
                : rc == UTIL_EINVAL ? "the replacement is not a certificate of this issuer"
                                    : util_strerror(rc));
        goto out;
    }
    printf("superseded serial ");
    print_serial(stdout, serial, rev.serial_len);
    if (new_serial_len > 0) {
        printf(" by ");
        print_serial(stdout, new_serial, new_serial_len);
    }
    printf(" (change %lld)\n", (long long)feed_id);
    status = 0;
out:
    OPENSSL_free(new_der);
    store_close(store);
    return status;
}

static const char unrevoke_help[] =
    "usage: pkiva unrevoke [--config FILE | --data DIR] (--issuer NAME --serial HEX | --cert "
    "FILE)\n"
    "                      [--actor WHO]\n\n"
    "Releases a certificate from certificateHold (only holds can be released).\n";

int cli__cmd_unrevoke(int argc, char **argv)
{
    struct cert_ref ref = {0};
    struct cli_config cfg;
    struct store *store = NULL;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    int64_t issuer_id = 0, feed_id = 0;
    const char *actor = "cli";
    int opt, rc, status = 1;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cert_opts, NULL)) != -1) {
        if (cert_ref_option(&ref, opt))
            continue;
        switch (opt) {
        case 'a': actor = optarg; break;
        case 'h': fputs(unrevoke_help, stdout); return 0;
        default: fputs(unrevoke_help, stderr); return 2;
        }
    }
    if (cli__load_config(ref.config, ref.data_dir, &cfg) != 0)
        return 1;
    cli__apply_env(&cfg);
    if (open_store(&cfg, &store) != UTIL_OK)
        return 1;
    rc = resolve_cert(store, &ref, &issuer_id, serial, &serial_len);
    if (rc == UTIL_OK)
        rc = admin_unrevoke_blocking(store, issuer_id, serial, serial_len, actor, &feed_id);
    if (rc == UTIL_EINVAL)
        fprintf(stderr, "pkiva unrevoke: the certificate is not on hold\n");
    else if (rc == UTIL_ENOTFOUND)
        fprintf(stderr, "pkiva unrevoke: no such certificate\n");
    else if (rc != UTIL_OK)
        fprintf(stderr, "pkiva unrevoke: %s\n", util_strerror(rc));
    if (rc == UTIL_OK) {
        char hex[2 * STORE_SERIAL_MAX + 1];
        util_hex(serial, serial_len, hex);
        printf("released serial %s from hold (change %lld)\n", hex, (long long)feed_id);
        status = 0;
    }
    store_close(store);
    return status;
}

static const char status_help[] =
    "usage: pkiva status [--config FILE | --data DIR] (--issuer NAME --serial HEX | --cert FILE)\n";

static void print_time(const char *label, int64_t t)
{
    char buf[32];
    time_t tt = (time_t)t;
    struct tm tm;
    (void)gmtime_r(&tt, &tm);
    (void)strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%s: %s\n", label, buf);
}

int cli__cmd_status(int argc, char **argv)
{
    struct cert_ref ref = {0};
    struct cli_config cfg;
    struct store *store = NULL;
    struct store_cert cert;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    int64_t issuer_id = 0;
    int opt, rc, status = 1;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", cert_opts, NULL)) != -1) {
        if (cert_ref_option(&ref, opt))
            continue;
        switch (opt) {
        case 'h': fputs(status_help, stdout); return 0;
        default: fputs(status_help, stderr); return 2;
        }
    }
    if (cli__load_config(ref.config, ref.data_dir, &cfg) != 0)
        return 1;
    cli__apply_env(&cfg);
    if (open_store(&cfg, &store) != UTIL_OK)
        return 1;
    rc = resolve_cert(store, &ref, &issuer_id, serial, &serial_len);
    if (rc == UTIL_OK)
        rc = store_cert_get_blocking(store, issuer_id, serial, serial_len, &cert);
    if (rc == UTIL_ENOTFOUND) {
        printf("status: unknown (never issued by this issuer)\n");
        status = 3;
    } else if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva status: %s\n", util_strerror(rc));
    } else {
        printf("serial: ");
        print_serial(stdout, cert.serial, cert.serial_len);
        printf("\nstatus: %s\n", cert.status == STORE_REVOKED ? "revoked" : "good");
        if (cert.not_before)
            print_time("not_before", cert.not_before);
        print_time("not_after", cert.not_after);
        if (cert.status == STORE_REVOKED) {
            print_time("revoked_at", cert.revoked_at);
            printf("reason: %s\n", store_reason_name(cert.reason));
            if (cert.invalidity_date)
                print_time("invalidity_date", cert.invalidity_date);
        }
        printf("change: %lld\n", (long long)cert.feed_id);
        status = 0;
    }
    store_close(store);
    return status;
}

static const char import_help[] =
    "usage: pkiva import [--config FILE | --data DIR] PATH...\n"
    "       pkiva import [--config FILE | --data DIR] --index index.txt --issuer NAME\n\n"
    "Registers issued certificates from PEM or DER files or folders (each certificate's issuer is\n"
    "found among the configured issuers), or from an OpenSSL CA index.txt. Idempotent: an\n"
    "interrupted import resumes by running the same command again.\n";

struct progress {
    int64_t start_ms;
    int tty;
    int64_t expected;    /* estimated total, 0 = unknown */
    int64_t done_before; /* certificates of earlier paths of the same command */
};

/* Counts what an import will read, for the time-left estimate: lines of an index.txt, PEM
 * certificates of a file, certificate files of a folder. Reads the input once more, which is
 * cheap next to parsing and verifying every certificate. */
static int64_t count_expected(const char *path, int index)
{
    struct stat st;
    int64_t n = 0;
    if (stat(path, &st) != 0)
        return 0;
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        struct dirent *e;
        if (dir == NULL)
            return 0;
        while ((e = readdir(dir)) != NULL) {
            const char *dot = strrchr(e->d_name, '.');
            if (dot != NULL && (strcmp(dot, ".pem") == 0 || strcmp(dot, ".crt") == 0 ||
                                strcmp(dot, ".cer") == 0 || strcmp(dot, ".der") == 0))
                n++;
        }
        (void)closedir(dir); /* read-only */
        return n;
    }
    {
        FILE *f = fopen(path, "r");
        char line[512];
        int64_t pem = 0;
        if (f == NULL)
            return 0;
        while (fgets(line, sizeof(line), f) != NULL) {
            if (strchr(line, '\n') != NULL)
                n++;
            if (strncmp(line, "-----BEGIN CERTIFICATE-----", 27) == 0)
                pem++;
        }
        (void)fclose(f); /* read-only */
        return index ? n : (pem > 0 ? pem : 1);
    }
}

static void on_progress(void *ctx, const struct store_import_stats *s)
{
    struct progress *p = ctx;
    int64_t elapsed = util_mono_ms() - p->start_ms;
    int64_t done = p->done_before + s->added + s->existing + s->skipped;
    double rate = elapsed > 0 ? (double)done * 1000.0 / (double)elapsed : 0.0;
    if (!p->tty)
        return;
    if (p->expected > done && rate > 0)
        fprintf(stderr,
                "\r%lld of ~%lld certificates (%lld new, %lld known, %lld skipped), %.0f/s, "
                "%.0f s left   ",
                (long long)done, (long long)p->expected, (long long)s->added,
                (long long)s->existing, (long long)s->skipped, rate,
                (double)(p->expected - done) / rate);
    else
        fprintf(stderr, "\r%lld certificates (%lld new, %lld known, %lld skipped), %.0f/s   ",
                (long long)done, (long long)s->added, (long long)s->existing, (long long)s->skipped,
                rate);
}

int cli__cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"data", required_argument, NULL, 'd'},
        {"index", required_argument, NULL, 'x'},  {"issuer", required_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
    const char *config = NULL, *data_dir = NULL, *index = NULL, *issuer_name = NULL;
    struct cli_config cfg;
    struct store *store = NULL;
    struct store_import_stats total = {0};
    struct progress prog = {util_mono_ms(), isatty(STDERR_FILENO), 0, 0};
    int opt, rc = UTIL_OK, status = 1;

    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'x': index = optarg; break;
        case 'i': issuer_name = optarg; break;
        case 'h': fputs(import_help, stdout); return 0;
        default: fputs(import_help, stderr); return 2;
        }
    }
    if ((index == NULL && optind >= argc) || (index != NULL && issuer_name == NULL)) {
        fputs(import_help, stderr);
        return 2;
    }
    if (cli__load_config(config, data_dir, &cfg) != 0)
        return 1;
    cli__apply_env(&cfg);
    /* A bulk cache: an import of millions of rows otherwise re-reads the B-trees' pages from the
     * file for every insert (SQLite's default cache is 2 MiB). */
    if (open_store_flags(&cfg, STORE_OPEN_BULK, &store) != UTIL_OK)
        return 1;
    if (index != NULL) {
        struct store_issuer is;
        memset(&is, 0, sizeof(is));
        rc = store_issuer_get_blocking(store, issuer_name, &is);
        if (rc != UTIL_OK) {
            fprintf(stderr, "pkiva import: no issuer named '%s'\n", issuer_name);
            goto out;
        }
        if (prog.tty)
            prog.expected = count_expected(index, 1);
        rc = store_import_index_blocking(store, is.id, index, on_progress, &prog, &total);
        store_issuer_cleanup(&is);
    } else {
        for (int i = optind; prog.tty && i < argc; i++)
            prog.expected += count_expected(argv[i], 0);
        for (int i = optind; i < argc && rc == UTIL_OK; i++) {
            struct store_import_stats s = {0};
            rc = store_import_certs_blocking(store, argv[i], on_progress, &prog, &s);
            total.added += s.added;
            total.existing += s.existing;
            total.revoked += s.revoked;
            total.skipped += s.skipped;
            prog.done_before = total.added + total.existing + total.skipped;
            if (rc != UTIL_OK)
                fprintf(stderr, "\npkiva import: %s: %s\n", argv[i], util_strerror(rc));
        }
    }
    if (prog.tty)
        fputc('\n', stderr);
    {
        int64_t ms = util_mono_ms() - prog.start_ms;
        /* Each committed batch wrote its own audit record in its transaction (store_import.c). */
        printf("imported: %lld new, %lld already known, %lld revoked, %lld skipped (unknown "
               "issuer or unreadable) in %.1f s\n",
               (long long)total.added, (long long)total.existing, (long long)total.revoked,
               (long long)total.skipped, (double)ms / 1000.0);
    }
    if (rc == UTIL_OK)
        status = 0;
out:
    store_close(store);
    return status;
}

/* Shared by the commands whose only options are --config/--data/--help: parses argv from index
 * first, loads the configuration and opens the store. Returns -1 to go on, or the exit status. */
int cli__open_command(int argc, char **argv, int first, const char *help, int *operands,
                      struct cli_config *cfg, struct store **store)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *data_dir = NULL;
    int opt;

    optind = first;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: fputs(help, stderr); return 2;
        }
    }
    if (operands == NULL && optind != argc) {
        fprintf(stderr, "pkiva: unexpected argument '%s'\n%s", argv[optind], help);
        return 2;
    }
    if (operands != NULL && optind >= argc) {
        fputs(help, stderr);
        return 2;
    }
    if (operands != NULL)
        *operands = optind;
    if (cli__load_config(config, data_dir, cfg) != 0)
        return 1;
    cli__apply_env(cfg);
    if (open_store(cfg, store) != UTIL_OK)
        return 1;
    return -1;
}

#define SLA_NODES_MAX 64

struct sla_ctx {
    int64_t now_ms, deadline_ms;
    int64_t *durations;
    size_t n, cap;
    int open_rows;
    /* The cluster's nodes (issue 16): who has not applied a revocation yet. */
    struct store_node nodes[SLA_NODES_MAX];
    int n_nodes;
    int64_t live_since_ms;
};

static int sla_node_collect(void *opaque, const struct store_node *node)
{
    struct sla_ctx *ctx = opaque;

    if (ctx->n_nodes < SLA_NODES_MAX)
        ctx->nodes[ctx->n_nodes++] = *node;
    return 0;
}

/* Prints one line per node: position, how far behind, heartbeat, live or not. */
static int sla_print_nodes(struct store *store, struct sla_ctx *ctx, int64_t max_lag_ms)
{
    int64_t head = 0;
    int rc = store_node_list_blocking(store, sla_node_collect, ctx);

    if (rc == UTIL_OK)
        rc = store_feed_head_blocking(store, &head);
    if (rc != UTIL_OK)
        return rc;
    printf("nodes: %d (live: reported within [store] max_feed_lag %.1f s), feed head %lld\n",
           ctx->n_nodes, (double)max_lag_ms / 1000.0, (long long)head);
    for (int i = 0; i < ctx->n_nodes; i++) {
        const struct store_node *node = &ctx->nodes[i];
        int64_t behind = 0, lag_ms = 0;
        int live = node->heartbeat_ms >= ctx->live_since_ms;
        rc = store_node_lag_blocking(store, node, head, ctx->now_ms, &behind, &lag_ms);
        if (rc != UTIL_OK)
            return rc;
        printf("node  %-4lld %-32s applied %-8lld %s behind %lld change(s), lag %.1f s, "
               "heartbeat %.1f s ago%s\n",
               (long long)node->id, node->name, (long long)node->applied_feed_id,
               live ? "live" : "DOWN", (long long)behind, (double)lag_ms / 1000.0,
               (double)(ctx->now_ms - node->heartbeat_ms) / 1000.0,
               live && lag_ms > max_lag_ms ? " LAGGING" : "");
    }
    return UTIL_OK;
}

/* The live nodes that have not applied feed_id, separated by spaces, into out. */
static void sla_not_applied(const struct sla_ctx *ctx, int64_t feed_id, char *out, size_t len)
{
    size_t used = 0;

    out[0] = '\0';
    for (int i = 0; i < ctx->n_nodes && used < len; i++) {
        const struct store_node *node = &ctx->nodes[i];
        int n = 0;
        if (node->heartbeat_ms < ctx->live_since_ms || node->applied_feed_id >= feed_id)
            continue;
        n = snprintf(out + used, len - used, "%s%s", used ? " " : "", node->name);
        if (n < 0)
            break;
        used += (size_t)n; /* a cut list ends the loop */
    }
}

static int sla_row(void *opaque, const struct store_sla_row *row)
{
    struct sla_ctx *ctx = opaque;
    char hex[2 * STORE_SERIAL_MAX + 1];
    util_hex(row->serial, row->serial_len, hex);
    /* Open until it is both answered by OCSP and in a published CRL; one that cannot be signed
     * as stored is never complete (OCSP answers tryLater for it). */
    if (row->unsignable != NULL) {
        ctx->open_rows++;
        printf("open  change %-8lld serial %-40s UNSIGNABLE: %s\n", (long long)row->feed_id, hex,
               row->unsignable);
    } else if (row->crl_at_ms == 0 || row->ocsp_at_ms == 0) {
        int64_t left = row->received_at_ms + ctx->deadline_ms - ctx->now_ms;
        char missing[512];
        sla_not_applied(ctx, row->feed_id, missing, sizeof(missing));
        ctx->open_rows++;
        printf("open  change %-8lld serial %-40s request %-16s committed %s ocsp %s crl %s, "
               "%lld s %s deadline%s%s\n",
               (long long)row->feed_id, hex, row->request_id ? row->request_id : "-",
               row->committed_at_ms ? "yes" : "no", row->ocsp_at_ms ? "yes" : "pending",
               row->crl_at_ms ? "yes" : "pending", (long long)(left < 0 ? -left : left) / 1000,
               left < 0 ? "PAST the" : "to the", missing[0] ? ", not applied by: " : "", missing);
    } else if (ctx->n < ctx->cap) {
        ctx->durations[ctx->n++] = row->crl_at_ms - row->received_at_ms;
    }
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int cli__cmd_sla(int argc, char **argv)
{
    static const char help[] =
        "usage: pkiva sla [--config FILE | --data DIR]\n\n"
        "Lists the serving nodes with the feed position each has applied (a revocation is\n"
        "visible in OCSP once every live node has applied it) and how far behind each is, the\n"
        "revocations not yet in a published CRL with the time left to the deadline\n"
        "([revocation] deadline, 12h by default), then percentiles of received -> in CRL for the\n"
        "last 10,000 completed revocations.\n";
    struct cli_config cfg;
    struct store *store = NULL;
    struct sla_ctx ctx;
    int rc;

    rc = cli__open_command(argc, argv, 1, help, NULL, &cfg, &store);
    if (rc >= 0)
        return rc;
    memset(&ctx, 0, sizeof(ctx));
    ctx.now_ms = util_now_ms();
    ctx.deadline_ms = cfg.feed.deadline_s * 1000;
    ctx.cap = 10000;
    ctx.durations = calloc(ctx.cap, sizeof(int64_t));
    if (ctx.durations == NULL) {
        store_close(store);
        return 1;
    }
    ctx.live_since_ms = ctx.now_ms - cfg.feed.max_feed_lag_ms;
    rc = sla_print_nodes(store, &ctx, cfg.feed.max_feed_lag_ms);
    if (rc == UTIL_OK)
        rc = store_sla_list_blocking(store, 0, 10000, sla_row, &ctx);
    store_close(store);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva sla: %s\n", util_strerror(rc));
        free(ctx.durations);
        return 1;
    }
    printf("open revocations: %d\n", ctx.open_rows);
    {
        struct feed_contract c;
        char line[512];
        cli__contract(&cfg, &c);
        (void)feed_contract_format(&c, line, sizeof(line)); /* truncation shortens the line */
        printf("freshness contract: %s\n", line);
    }
    if (ctx.n > 0) {
        qsort(ctx.durations, ctx.n, sizeof(int64_t), cmp_i64);
        printf("completed: %zu, received -> in CRL: p50 %.1f s, p99 %.1f s, max %.1f s "
               "(deadline %lld s)\n",
               ctx.n, (double)ctx.durations[ctx.n / 2] / 1000.0,
               (double)ctx.durations[(ctx.n * 99) / 100] / 1000.0,
               (double)ctx.durations[ctx.n - 1] / 1000.0, (long long)cfg.feed.deadline_s);
    }
    free(ctx.durations);
    return 0;
}
