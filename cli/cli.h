/* SPDX-License-Identifier: Apache-2.0 */
/* cli: the program's entry point. Parses and validates the configuration, creates the embedded demo
 * PKI on first run, wires hsm, store, http and the protocol modules together for `pkiva serve`, and
 * implements the operator commands. The library part (config parsing, demo PKI) is a module of its
 * own so that tests and the config fuzz target can call it. */
#ifndef PKIVA_CLI_H
#define PKIVA_CLI_H

#include <admin/admin.h>
#include <crl/crl.h>
#include <directory/directory.h>
#include <feed/feed.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <ocsp/ocsp.h>
#include <store/store.h>
#include <tsa/tsa.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_MAX_ISSUERS 16
#define CLI_MAX_TSA_UNITS 8
#define CLI_PATH_MAX 512

struct cli_issuer {
    char name[64];                /* URL-safe id, also the store's issuer name */
    char cert[CLI_PATH_MAX];      /* PEM file of the CA certificate */
    char key_uri[CLI_PATH_MAX];   /* PKCS#11 URI of the CA key (CRL signing; OCSP if no signer) */
    char ocsp_cert[CLI_PATH_MAX]; /* delegated OCSP responder certificate; empty = CA signs */
    char ocsp_key_uri[CLI_PATH_MAX]; /* its key */
    int ocsp_ignore_nonce;           /* serve the pre-signed response even when a nonce is asked */
    int rsa_pss;                     /* sign with RSASSA-PSS (RSA keys) */
    char digest[16];                 /* "" = key default */
};

/* The configuration: one struct per section, each owned by the module whose directive table
 * declares it (cli/config.c maps sections to tables); cli's own are [server]'s process settings
 * and [issuer.NAME]. */
struct cli_config {
    char source[CLI_PATH_MAX]; /* the file it was read from */
    /* [server]: cli's directives (cli/config.c) ... */
    char data_dir[CLI_PATH_MAX];
    int workers; /* 0 = cli_default_workers() */
    char log_level[16];
    char public_url[CLI_PATH_MAX]; /* base URL embedded in certificates, printed at start */
    char run_user[64];             /* "" = keep the user; else switch to it once listening */
    struct http_config http;       /* ... and http's: listeners and limits */
    struct hsm_settings hsm;       /* [hsm] */
    struct store_settings store;   /* [store] (but feed_poll) */
    /* What store_open_blocking gets, derived from [store]: a file or a postgresql:// URI. */
    char store_path[CLI_PATH_MAX];
    /* [store] read_conninfo with the password file, as opened; "" = no read replica. */
    char store_read_path[CLI_PATH_MAX];
    struct feed_settings feed; /* [revocation] and [store] feed_poll */
    /* [ocsp]: validity and max_age are derived from [revocation] deadline when left 0. The
     * callbacks are serve's to set. */
    struct ocsp_config ocsp;
    struct crl_settings crl; /* [crl]: the timing directives left 0 are derived likewise */
    /* [tsa]: store_path and the clock hook are serve's to set. */
    struct tsa_config tsa;
    /* [tsa.NAME] */
    int n_tsa_units;
    struct tsa_unit_settings tsa_units[CLI_MAX_TSA_UNITS];
    struct admin_settings admin;       /* [admin] */
    struct directory_config directory; /* [directory] */
    /* [issuer.NAME] */
    int n_issuers;
    struct cli_issuer issuers[CLI_MAX_ISSUERS];
};

/* The directive tables of cli's own: [issuer.NAME], and [server]'s process settings (static
 * storage, and their lengths). */
const struct util_conf_directive *cli_issuer_directives(size_t *n);
const struct util_conf_directive *cli_server_directives(size_t *n);
/* Every table the reader knows, for tests and documentation: the index-th (from 0) with its
 * section's name ("server", ..., or an instance prefix such as "issuer."), NULL past the last. */
const struct util_conf_directive *cli_config_table(size_t index, const char **section, size_t *n);

/* Fills every field with its documented default (conf/pkiva.conf), each from the table of the
 * module that owns it. */
void cli_config_defaults(struct cli_config *cfg);
/* Parses an INI file over the defaults, then validates it as a whole. On error returns UTIL_ECONFIG
 * and writes "FILE:LINE: reason" (or "FILE: reason" for whole-file checks) into err. Relative paths
 * in the file are resolved against the file's directory. Binds nothing, opens nothing. */
int cli_config_load(const char *path, struct cli_config *cfg, char *err, size_t err_len);
/* Same, from a string (for the fuzz target and tests); base_dir resolves relative paths. */
int cli_config_parse_string(const char *text, const char *name, const char *base_dir,
                            struct cli_config *cfg, char *err, size_t err_len);

/* "127.0.0.1:8080" or "[::1]:8080" -> host and port (kind untouched). */
int cli_parse_listen(const char *text, struct http_listener_config *out);
/* Durations "90", "90s", "15m", "12h", "4d" -> seconds. Returns 0 or UTIL_EINVAL. */
int cli_parse_duration(const char *text, int64_t *seconds);
/* Sizes "4096", "64k", "16M", "1G" -> bytes. */
int cli_parse_size(const char *text, int64_t *bytes);
/* Loop threads for `workers = 0`: one per CPU this process may run on (its affinity mask, so
 * taskset and cgroup cpusets count), less one for the signing threads, the store and CRL threads
 * and the kernel's network work; at least one. cli_workers_for_cpus is the rule itself. */
int cli_default_workers(void);
int cli_workers_for_cpus(int cpus);

struct cli_demo_options {
    char data_dir[CLI_PATH_MAX];
    char alg[16];                  /* "ec-p256" (default), "ec-p384", "rsa-2048", "rsa-3072" */
    char public_listen[64];        /* HOST:PORT */
    char admin_listen[64];         /* HOST:PORT */
    char public_url[CLI_PATH_MAX]; /* "" = http://<public_listen> */
};

/* The defaults of opts: [server] data_dir, listen and admin_listen as their tables write them. */
void cli_demo_defaults(struct cli_demo_options *opts);
/* Creates the embedded default in opts->data_dir unless DIR/pkiva.conf already exists: a SoftHSM2
 * token with its own softhsm2.conf and owner-only PIN file, keys generated in the token, the demo
 * PKI signed through the HSM, the store with issuers and demo certificates (one revoked), PEM files
 * under DIR/pki/, and finally DIR/pkiva.conf (written last: its presence marks a complete init;
 * leftovers of an interrupted init are removed and redone). Sets *created to 1 if it created. */
int cli_demo_init_blocking(const struct cli_demo_options *opts, int *created);

/* Runs the server with a loaded configuration until SIGTERM/SIGINT. Returns the exit status. */
int cli_serve(const struct cli_config *cfg);

#endif
