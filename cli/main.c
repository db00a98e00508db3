/* SPDX-License-Identifier: Apache-2.0 */
/* pkiva's entry point: sub-command dispatch. `serve` creates or reuses the embedded default (or reads
 * a real deployment's config) and runs the server; the operator commands (revoke, unrevoke, status,
 * import, audit, sla) work on the store directly, whether or not a server is running: a running
 * server picks their changes up from the change feed within a second. */
#include "cli.h"
#include "cli_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <util/util.h>

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: pkiva COMMAND [OPTIONS]\n\n"
        "commands:\n"
        "  serve      run the OCSP/CRL/TSA service (creates the embedded default on first run)\n"
        "  init       prepare a deployment (--config FILE: check keys, create the store)\n"
        "             or create the embedded default without serving\n"
        "  config     validate a configuration without touching anything (config check)\n"
        "  revoke     revoke a certificate\n"
        "  supersede  revoke as superseded and register the replacement, in one step\n"
        "  unrevoke   release a certificate from certificateHold\n"
        "  status     show a certificate's status\n"
        "  import     register issued certificates (PEM/DER files, folders, OpenSSL index.txt)\n"
        "  audit      verify the audit chain (audit verify)\n"
        "  crl        publish CRLs now (crl publish)\n"
        "  tsa        check time-stamp tokens against the token log (tsa check)\n"
        "  sla        revocation deadline report\n\n"
        "Run 'pkiva COMMAND --help' for a command's options; 'pkiva --version' for the "
        "version.\n");
}

int main(int argc, char **argv)
{
    const char *cmd;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("pkiva %s\n", PKIVA_VERSION);
        return 0;
    }
    if (strcmp(cmd, "config") == 0)
        return cli__cmd_config(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return cli__cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "init") == 0)
        return cli__cmd_init(argc - 1, argv + 1);
    if (strcmp(cmd, "revoke") == 0)
        return cli__cmd_revoke(argc - 1, argv + 1);
    if (strcmp(cmd, "supersede") == 0)
        return cli__cmd_supersede(argc - 1, argv + 1);
    if (strcmp(cmd, "unrevoke") == 0)
        return cli__cmd_unrevoke(argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return cli__cmd_status(argc - 1, argv + 1);
    if (strcmp(cmd, "import") == 0)
        return cli__cmd_import(argc - 1, argv + 1);
    if (strcmp(cmd, "audit") == 0)
        return cli__cmd_audit(argc - 1, argv + 1);
    if (strcmp(cmd, "crl") == 0)
        return cli__cmd_crl(argc - 1, argv + 1);
    if (strcmp(cmd, "tsa") == 0)
        return cli__cmd_tsa(argc - 1, argv + 1);
    if (strcmp(cmd, "sla") == 0)
        return cli__cmd_sla(argc - 1, argv + 1);
    fprintf(stderr, "pkiva: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
