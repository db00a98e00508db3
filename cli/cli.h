/* SPDX-License-Identifier: Apache-2.0 */
/* cli: the program's entry point. Parses and validates the configuration, creates the embedded demo
 * PKI on first run, wires hsm, store, http and the protocol modules together for `pkiva serve`, and
 * implements the operator commands. The library part (config parsing, demo PKI) is a module of its
 * own so that tests and the config fuzz target can call it. */
#ifndef PKIVA_CLI_H
#define PKIVA_CLI_H

#include <directory/directory.h>
#include <http/http.h>
#include <ocsp/ocsp.h>
#include <tsa/tsa.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_MAX_ISSUERS 16
#define CLI_MAX_TSA_UNITS 8
#define CLI_MAX_TSA_POLICIES 8
#define CLI_PATH_MAX 512

/* [store] backend */
#define CLI_STORE_SQLITE 0
#define CLI_STORE_POSTGRESQL 1

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

struct cli_tsa_unit {
    char name[64];            /* URL-safe; served at <tsa path>/NAME, names its serial counter */
    char cert[CLI_PATH_MAX];  /* PEM TSA certificate (critical EKU timeStamping only) */
    char chain[CLI_PATH_MAX]; /* optional PEM CA chain sent with certReq */
    char previous_certs[CLI_PATH_MAX]; /* optional PEM: the unit's earlier certificates, which
                                          pkiva tsa check also accepts as the signer */
    char key_uri[CLI_PATH_MAX];        /* PKCS#11 URI */
    char digest[16];                   /* "" = key default */
    char ess_digest[16];               /* ESSCertIDv2 hash, "" = SHA256 */
    char policy[64];                   /* default policy OID */
    char accepted[CLI_MAX_TSA_POLICIES][64];
    int n_accepted;
    int64_t accuracy_us;
    int tsa_name;
    int allow_weak_hashes;
};

struct cli_config {
    char source[CLI_PATH_MAX]; /* the file it was read from */
    /* [server] */
    char data_dir[CLI_PATH_MAX];
    int workers; /* 0 = cli_default_workers() */
    char log_level[16];
    char public_url[CLI_PATH_MAX]; /* base URL embedded in certificates, printed at start */
    char run_user[64];             /* "" = keep the user; else switch to it once listening */
    struct http_config http;       /* listeners and limits */
    /* [hsm] */
    char hsm_module[CLI_PATH_MAX];
    char hsm_pin_file[CLI_PATH_MAX];
    char hsm_softhsm_conf[CLI_PATH_MAX]; /* exported as SOFTHSM2_CONF when set */
    char hsm_provider[CLI_PATH_MAX];     /* pkcs11-provider module; "" = OpenSSL's default */
    int hsm_no_deinit;
    int hsm_sessions;
    int hsm_queue_max;
    char hsm_init_args[CLI_PATH_MAX]; /* pkcs11-module-init-args (C_Initialize); "" = none */
    int hsm_ecdsa_verify_every;       /* verify_ecdsa: 1 all, N sample, HSM_VERIFY_NONE (-1) */
    int hsm_restart_after_ms;         /* 0 = never exit for a supervisor restart */
    /* [store] */
    char
        store_path[CLI_PATH_MAX]; /* what store_open_blocking gets: a file or a postgresql:// URI */
    int store_backend;            /* CLI_STORE_SQLITE or CLI_STORE_POSTGRESQL */
    char store_conninfo[CLI_PATH_MAX];
    char store_password_file[CLI_PATH_MAX];
    int feed_poll_ms;
    int store_max_feed_lag_ms; /* /readyz 503 past it; nodes not reporting within it are not live */
    char node_name[128];       /* this node's name in the store; "" = <hostname>:<first port> */
    /* [ocsp]: the module's own struct and table (ocsp_config_set); validity and max_age are
     * derived from [revocation] deadline when left 0. The callbacks are serve's to set. */
    struct ocsp_config ocsp;
    /* [crl] */
    char crl_publish_dir[CLI_PATH_MAX]; /* "" = <data_dir>/crl */
    int crl_deltas;
    int64_t crl_validity_s;
    int64_t crl_delta_validity_s;
    int64_t crl_interval_s;
    int crl_coalesce_ms;
    int crl_full_on_change;
    int64_t crl_expired_retention_s;
    int64_t crl_expired_on_crl_since; /* unix seconds; 0 = off */
    int64_t crl_max_age_s;
    /* [tsa]: the module's own struct and table (tsa_config_set); store_path and the clock hook
     * are serve's to set. */
    struct tsa_config tsa;
    /* [tsa.NAME] */
    int n_tsa_units;
    struct cli_tsa_unit tsa_units[CLI_MAX_TSA_UNITS];
    /* [revocation] */
    int64_t sla_deadline_s;
    int64_t sla_warn_s;
    unsigned sla_out_of_scope; /* bits (1u << enum feed_client) the operator excluded */
    /* [admin] */
    char admin_token_file[CLI_PATH_MAX];
    char admin_tls_cert[CLI_PATH_MAX];  /* "" = the admin listener speaks plain HTTP */
    char admin_tls_key[CLI_PATH_MAX];   /* an ordinary file, mode 0600 (not an HSM key) */
    char admin_client_ca[CLI_PATH_MAX]; /* "" = no client certificates; else they authenticate */
    int admin_require_client_cert;      /* 1: a bearer token alone is not enough */
    /* The client side, for `pkiva` commands that ask a running server (crl publish). */
    char admin_server_ca[CLI_PATH_MAX];   /* "" = client_ca, else tls_cert itself */
    char admin_client_cert[CLI_PATH_MAX]; /* "" = present no certificate (bearer token only) */
    char admin_client_key[CLI_PATH_MAX];
    /* Who may read /metrics, and the operator certificates' revocation. */
    int admin_metrics_without_auth;      /* 1: /metrics is served to anyone reaching the listener */
    char admin_client_crl[CLI_PATH_MAX]; /* "" = operator certificates' revocation not checked */
    /* [directory] (its directives are declared in directory/directory_config.c) */
    struct directory_config directory;
    /* [issuer.NAME] */
    int n_issuers;
    struct cli_issuer issuers[CLI_MAX_ISSUERS];
};

/* Fills every field with its documented default (conf/pkiva.conf). */
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
    char public_listen[64];        /* "127.0.0.1:8080" */
    char admin_listen[64];         /* "127.0.0.1:8081" */
    char public_url[CLI_PATH_MAX]; /* "" = http://<public_listen> */
};

/* Creates the embedded default in opts->data_dir unless DIR/pkiva.conf already exists: a SoftHSM2
 * token with its own softhsm2.conf and owner-only PIN file, keys generated in the token, the demo
 * PKI signed through the HSM, the store with issuers and demo certificates (one revoked), PEM files
 * under DIR/pki/, and finally DIR/pkiva.conf (written last: its presence marks a complete init;
 * leftovers of an interrupted init are removed and redone). Sets *created to 1 if it created. */
int cli_demo_init_blocking(const struct cli_demo_options *opts, int *created);

/* Runs the server with a loaded configuration until SIGTERM/SIGINT. Returns the exit status. */
int cli_serve(const struct cli_config *cfg);

#endif
