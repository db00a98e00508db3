/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva config check`: validates a deployment's configuration and everything it names outside
 * itself that can be checked without touching anything (certificate files and their validity,
 * the PKCS#11 module and PIN file, the admin files, the freshness contract), and says whether
 * the store exists yet. It opens no HSM session and writes nothing: `pkiva init` is the step
 * that logs into the token and creates the store. The systemd unit runs it before every start. */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <errno.h>
#include <feed/feed.h>
#include <getopt.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <util/util.h>

/* A certificate this close to its end is reported (serve warns daily from 30 days too). */
#define CONFIG_EXPIRY_WARN_S (30 * 86400LL)

static const char config_help[] =
    "usage: pkiva config check --config FILE\n"
    "       pkiva config check --data DIR        (DIR/pkiva.conf)\n\n"
    "Validates the configuration and what it names, touching nothing: every directive; the\n"
    "certificate files (readable PEM, valid now, expiry within 30 days reported); the PKCS#11\n"
    "module, the PIN file (owner-only) and the admin files; the freshness contract against\n"
    "[revocation] deadline. Prints the freshness contract and the HSM outage budget and whether\n"
    "the store exists. Opens no HSM session and creates no file: 'pkiva init --config FILE'\n"
    "checks the keys in the token and creates the store.\n"
    "Exit status: 0 valid, 1 a problem (each printed on stderr), 2 usage.\n";

/* One certificate file: readable PEM, valid now. must_be_valid: serve refuses to start with it
 * out of its validity (it signs OCSP responses or time stamps), else only a warning. */
static int check_cert(const char *what, const char *path, int must_be_valid)
{
    X509 *cert = NULL;
    int problems = 0;
    time_t now = time(NULL);
    int64_t not_after = 0;
    const ASN1_TIME *end;
    struct tm tm;

    cert = cli__load_pem_cert(path);
    if (cert == NULL) {
        fprintf(stderr, "pkiva config check: %s %s: not a readable PEM certificate\n", what, path);
        return 1;
    }
    end = X509_get0_notAfter(cert);
    if (ASN1_TIME_to_tm(end, &tm) == 1)
        not_after = (int64_t)timegm(&tm);
    ERR_clear_error();
    if (X509_cmp_time(X509_get0_notBefore(cert), &now) > 0 ||
        X509_cmp_time(X509_get0_notAfter(cert), &now) < 0) {
        fprintf(stderr, "pkiva config check: %s %s is not valid now (%s)\n", what, path,
                must_be_valid ? "pkiva serve refuses to start" : "warning");
        problems += must_be_valid;
    } else if (not_after > 0 && not_after - (int64_t)now < CONFIG_EXPIRY_WARN_S) {
        fprintf(stderr, "pkiva config check: warning: %s %s expires in %lld days\n", what, path,
                (long long)((not_after - (int64_t)now) / 86400));
    }
    ERR_clear_error();
    X509_free(cert);
    return problems;
}

static int check_readable(const char *what, const char *path)
{
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "pkiva config check: %s %s: %s\n", what, path, strerror(errno));
        return 1;
    }
    return 0;
}

/* A secret (PIN, token, TLS key): present and readable by its owner only, as serve demands. */
static int check_secret(const char *what, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "pkiva config check: %s %s: %s\n", what, path, strerror(errno));
        return 1;
    }
    if ((st.st_mode & 077) != 0) {
        fprintf(stderr,
                "pkiva config check: %s %s is readable by others (mode %03o): chmod 0600 it\n",
                what, path, (unsigned)(st.st_mode & 0777));
        return 1;
    }
    return check_readable(what, path);
}

int cli__config_check_files(const struct cli_config *cfg)
{
    struct feed_contract c;
    unsigned refused;
    int problems = 0;
    char what[128];

    problems += check_readable("[hsm] module", cfg->hsm.module);
    problems += check_secret("[hsm] pin_file", cfg->hsm.pin_file);
    if (cfg->hsm.softhsm_conf[0] != '\0')
        problems += check_readable("[hsm] softhsm_conf", cfg->hsm.softhsm_conf);
    if (cfg->hsm.provider[0] != '\0')
        problems += check_readable("[hsm] provider", cfg->hsm.provider);
    for (int i = 0; i < cfg->n_issuers; i++) {
        const struct cli_issuer *is = &cfg->issuers[i];
        (void)snprintf(what, sizeof(what), "[issuer.%s] cert", is->name);
        problems += check_cert(what, is->cert, is->ocsp_cert[0] == '\0');
        if (is->ocsp_cert[0] != '\0') {
            (void)snprintf(what, sizeof(what), "[issuer.%s] ocsp_cert", is->name);
            problems += check_cert(what, is->ocsp_cert, 1);
        }
    }
    for (int i = 0; i < cfg->n_tsa_units; i++) {
        const struct tsa_unit_settings *u = &cfg->tsa_units[i];
        (void)snprintf(what, sizeof(what), "[tsa.%s] cert", u->name);
        problems += check_cert(what, u->cert, 1);
        if (u->chain[0] != '\0') {
            (void)snprintf(what, sizeof(what), "[tsa.%s] chain", u->name);
            problems += check_readable(what, u->chain);
        }
        if (u->previous_certs[0] != '\0') {
            (void)snprintf(what, sizeof(what), "[tsa.%s] previous_certs", u->name);
            problems += check_readable(what, u->previous_certs);
        }
    }
    if (cfg->admin.token_file[0] != '\0')
        problems += check_secret("[admin] token_file", cfg->admin.token_file);
    if (cfg->admin.tls_cert[0] != '\0') {
        problems += check_readable("[admin] tls_cert", cfg->admin.tls_cert);
        problems += check_secret("[admin] tls_key", cfg->admin.tls_key);
    }
    if (cfg->admin.client_ca[0] != '\0')
        problems += check_readable("[admin] client_ca", cfg->admin.client_ca);

    cli__contract(cfg, &c);
    refused = c.exceeding & ~c.out_of_scope;
    for (int i = 0; i < FEED_CLIENT_N; i++) {
        if (refused & (1u << i)) {
            fprintf(stderr,
                    "pkiva config check: a %s client can keep a revoked certificate's old answer "
                    "for %lld s, past the %lld s [revocation] deadline: shorten %s (or name the "
                    "client class in [revocation] out_of_scope)\n",
                    feed_client_name(i), (long long)c.worst_s[i], (long long)c.deadline_s,
                    feed_client_directive(i));
            problems++;
        }
    }
    return problems;
}

void cli__print_contract(const struct cli_config *cfg, FILE *out)
{
    struct feed_contract c;
    char line[512];
    int64_t worst = 0;
    cli__contract(cfg, &c);
    for (int i = 0; i < FEED_CLIENT_N; i++)
        if (!(c.out_of_scope & (1u << i)) && c.worst_s[i] > worst)
            worst = c.worst_s[i];
    (void)feed_contract_format(&c, line, sizeof(line)); /* truncation only shortens the line */
    fprintf(out, "freshness contract: %s\n", line);
    fprintf(out,
            "  a revocation reaches every conforming client within %lld s of its request, inside "
            "the %lld s deadline;\n"
            "  the HSM may be unreachable for %lld s before served answers expire (alert well "
            "before: conf/prometheus/pkiva-rules.yml)\n",
            (long long)worst, (long long)c.deadline_s, (long long)c.outage_budget_s);
    for (int i = 0; i < FEED_CLIENT_N; i++)
        if (c.out_of_scope & (1u << i))
            fprintf(out,
                    "  FRESHNESS CONTRACT NOT KEPT for %s clients ([revocation] "
                    "out_of_scope)\n",
                    feed_client_name(i));
}

int cli__cmd_config(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *data_dir = NULL;
    struct cli_config *cfg = NULL;
    struct stat st;
    int opt, problems, status = 1;

    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(config_help, stdout);
        return 0;
    }
    if (argc < 2 || strcmp(argv[1], "check") != 0) {
        fputs(config_help, stderr);
        return 2;
    }
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'h': fputs(config_help, stdout); return 0;
        default: fputs(config_help, stderr); return 2;
        }
    }
    if (optind != argc || (config == NULL && data_dir == NULL)) {
        fputs(config_help, stderr);
        return 2;
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        fprintf(stderr, "pkiva config check: out of memory\n");
        return 1;
    }
    if (cli__load_config(config, data_dir, cfg) != 0)
        goto out;
    problems = cli__config_check_files(cfg);
    if (problems > 0) {
        fprintf(stderr, "pkiva config check: %s: %d problem%s\n", cfg->source, problems,
                problems == 1 ? "" : "s");
        goto out;
    }
    printf("%s: valid (%d issuer%s, %d TSA unit%s)\n", cfg->source, cfg->n_issuers,
           cfg->n_issuers == 1 ? "" : "s", cfg->n_tsa_units, cfg->n_tsa_units == 1 ? "" : "s");
    cli__print_contract(cfg, stdout);
    if (stat(cfg->store_path, &st) == 0)
        printf("store %s exists\n", cfg->store_path);
    else
        printf("store %s does not exist yet: run 'pkiva init --config %s'\n", cfg->store_path,
               cfg->source);
    status = 0;
out:
    free(cfg);
    return status;
}
