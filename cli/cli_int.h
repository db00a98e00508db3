/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of the cli module: the sub-commands and their option helpers. */
#ifndef PKIVA_CLI_INT_H
#define PKIVA_CLI_INT_H

#include "cli.h"

/* Each returns the process exit status: 0 success, 1 failure, 2 usage error. */
int cli__cmd_serve(int argc, char **argv);
int cli__cmd_init(int argc, char **argv);
int cli__cmd_revoke(int argc, char **argv);
int cli__cmd_unrevoke(int argc, char **argv);
int cli__cmd_supersede(int argc, char **argv);
int cli__cmd_status(int argc, char **argv);
int cli__cmd_import(int argc, char **argv);
int cli__cmd_audit(int argc, char **argv);
int cli__cmd_sla(int argc, char **argv);

/* Resolves --config FILE or --data DIR (DIR/pkiva.conf) into a loaded configuration; prints the
 * reason and returns non-zero when it cannot. */
int cli__load_config(const char *config, const char *data_dir, struct cli_config *cfg);
/* Exports SOFTHSM2_CONF when the configuration names one and sets the log level. */
void cli__apply_env(const struct cli_config *cfg);

struct store;
struct crl_config;

/* [server] user (privdrop.c). prepare looks the user up, checks that we run as root and creates
 * the CRL publish folder for the user (logs why and returns UTIL_ECONFIG otherwise; nothing to do
 * when the directive is unset). apply (a struct cli_privdrop * as ctx, the shape of an http start
 * hook) switches groups, group and user for every thread and verifies that root cannot be
 * regained; it returns 0 or a negative util error. */
#include <sys/types.h>
struct cli_privdrop {
    const struct cli_config *cfg;
    int active;
    uid_t uid;
    gid_t gid;
};
int cli__privdrop_prepare(const struct cli_config *cfg, struct cli_privdrop *out);
int cli__privdrop_apply(void *privdrop);

/* The [crl] settings as the crl module's configuration (pointers into cfg). */
void cli__crl_config(const struct cli_config *cfg, struct crl_config *cc);
/* Creates the CRL publish folder if missing. */
int cli__publish_dir_ready(const struct cli_config *cfg);
int cli__cmd_crl(int argc, char **argv);
/* `pkiva tsa check`: tokens against the TSA units' certificates and the token log. */
int cli__cmd_tsa(int argc, char **argv);
/* The common start of a store command: --config/--data/--help from argv[first], the config, the
 * environment, the store. operands NULL: no operands allowed; else at least one, and *operands is
 * the index of the first. Returns -1 when the command may go on (*store open: the caller closes
 * it), else the exit status to return (help printed: 0, usage error: 2, failure: 1). */
int cli__open_command(int argc, char **argv, int first, const char *help, int *operands,
                      struct cli_config *cfg, struct store **store);
/* The [hsm] settings as the hsm module's configuration (pointers into cfg), with the signing
 * threads and queue bound of the caller (a command signs from one thread; serve has a pool). */
struct hsm_config;
void cli__hsm_config(const struct cli_config *cfg, int sessions, int queue_max,
                     struct hsm_config *out);
/* The freshness contract of this configuration (feed_contract_compute on its timing directives). */
struct feed_contract;
void cli__contract(const struct cli_config *cfg, struct feed_contract *out);
/* Reads one PEM certificate; logs why and returns NULL when it cannot. */
#include <openssl/x509.h>
X509 *cli__load_pem_cert(const char *path);

/* `pkiva init --config FILE` (init_cmd.c) and `pkiva config check` (config_cmd.c). */
int cli__cmd_config(int argc, char **argv);
/* The embedded demo's `pkiva init [--data DIR] ...` (serve.c): argv as for cli__cmd_init. */
int cli__init_demo(int argc, char **argv);
/* Checks what a configuration names outside itself, touching nothing: certificate files (readable
 * PEM, valid now), the PKCS#11 module and PIN file (present, PIN owner-only), and the freshness
 * contract. Prints one line per problem to stderr; returns the number of problems. */
int cli__config_check_files(const struct cli_config *cfg);
/* Prints the freshness contract and the HSM outage budget of cfg to out. */
void cli__print_contract(const struct cli_config *cfg, FILE *out);

/* The service manager's side of serve (service.c). cli__service_signals installs the SIGHUP
 * handler and notes the configuration file as it is (call it early, before threads start). cli__service_start starts the thread that sends
 * READY=1 to systemd once ready(ctx) (the /readyz test) first says yes, keeps STATUS= current,
 * and on SIGHUP reads cfg->source again (log_level applied, other changes named as needing a
 * restart). cli__service_stop sends STOPPING=1, joins and frees; NULL-safe. */
struct cli_service;
int cli__service_signals(const struct cli_config *cfg);
int cli__service_start(const struct cli_config *cfg, int (*ready)(void *, char *, size_t),
                       void *ctx, struct cli_service **out);
void cli__service_stop(struct cli_service *svc);

/* Audit seals (audit.c): seals every record not yet sealed, signing with key (on the hsm's pool)
 * whose certificate is cert. The sealer is the server's thread that seals periodically and once
 * more in cli__audit_sealer_stop; hsm, key and cert must outlive it. */
struct hsm;
struct hsm_key;
struct cli_audit_sealer;
int cli__audit_seal_blocking(struct store *store, struct hsm *hsm, const struct hsm_key *key,
                             X509 *cert, int64_t *sealed);
int cli__audit_sealer_start(const struct cli_config *cfg, struct hsm *hsm,
                            const struct hsm_key *key, X509 *cert, struct cli_audit_sealer **out);
void cli__audit_sealer_stop(struct cli_audit_sealer *sealer); /* NULL-safe */

#endif
