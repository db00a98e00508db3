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
int cli__cmd_status(int argc, char **argv);
int cli__cmd_import(int argc, char **argv);
int cli__cmd_audit(int argc, char **argv);
int cli__cmd_sla(int argc, char **argv);

/* Resolves --config FILE or --data DIR (DIR/pkiva.conf) into a loaded configuration; prints the
 * reason and returns non-zero when it cannot. */
int cli__load_config(const char *config, const char *data_dir, struct cli_config *cfg);
/* Exports SOFTHSM2_CONF when the configuration names one and sets the log level. */
void cli__apply_env(const struct cli_config *cfg);

/* "2026-11-21T10:00:00Z", "2026-11-21 10:00:00", or unix seconds "@1700000000" -> unix seconds. */
int cli__parse_time(const char *text, int64_t *seconds);
/* Hex serial (optional 0x, colons allowed) -> DER INTEGER content octets (minimal, positive). */
int cli__parse_serial(const char *hex, unsigned char *out, size_t *len);

#endif
