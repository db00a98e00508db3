/* SPDX-License-Identifier: Apache-2.0 */
/* tsa: the RFC 3161 time-stamping authority (with RFC 5816 ESSCertIDv2). It answers TimeStampReq
 * bodies POSTed as application/timestamp-query with a DER TimeStampResp: a token signed in the HSM,
 * or a rejection (status + statusString + failInfo) that is a normal answer, never an HTTP error.
 * Several TSA units (each its own key, certificate, chain, policies and accuracy) share one service;
 * serial numbers (positive 63-bit integers, per TSA certificate) come from blocks durably reserved
 * in the store at or above (ms since the epoch) << 21 and never repeat, even after a rename or a
 * restored backup of the store (tsa_log.c), and every token issued is recorded in the store's token log (group commit)
 * before it is sent.
 *
 * Life cycle (start-up thread unless said otherwise):
 *   tsa_config_default -> fill -> tsa_service_new (loads keys and certificates, checks them, opens
 *   the store, reserves the first serial blocks) -> tsa_service_register (before http_server_start)
 *   -> tsa_service_start (the token-log thread) -> ... serve ... -> http_server_run returns ->
 *   tsa_service_stop -> tsa_service_free -> hsm_close (the units' keys live in the HSM's library
 *   context, so they go first). */
#ifndef PKIVA_TSA_H
#define PKIVA_TSA_H

#include <stddef.h>
#include <stdint.h>

struct hsm;
struct http_server;
struct tsa_service;

#define TSA_MAX_UNITS 16
#define TSA_MAX_POLICIES 8
#define TSA_NAME_MAX 64

/* PKIFailureInfo bit numbers (RFC 3161 §2.4.2). */
enum tsa_fail_info {
    TSA_FAIL_BAD_ALG = 0,
    TSA_FAIL_BAD_REQUEST = 2,
    TSA_FAIL_BAD_DATA_FORMAT = 5,
    TSA_FAIL_TIME_NOT_AVAILABLE = 14,
    TSA_FAIL_UNACCEPTED_POLICY = 15,
    TSA_FAIL_UNACCEPTED_EXTENSION = 16,
    TSA_FAIL_ADD_INFO_NOT_AVAILABLE = 17,
    TSA_FAIL_SYSTEM_FAILURE = 25,
};

/* What the clock check reports. synced: the kernel says the clock is disciplined (no STA_UNSYNC);
 * max_error_us: the kernel's bound on the clock's error (timex.maxerror). */
struct tsa_clock_state {
    int synced;
    int64_t max_error_us;
    int64_t est_error_us;
};
/* Reads the clock state. Called on loop threads for every request and for /readyz: must not block.
 * Returns 0 or a util error (then the clock counts as unsynchronized). */
typedef int (*tsa_clock_fn)(void *ctx, struct tsa_clock_state *out);

/* The default clock check: adjtimex(2) with modes = 0 (read only). */
int tsa_clock_adjtimex(void *ctx, struct tsa_clock_state *out);

/* Service-wide settings; tsa_config_default fills the defaults: the [tsa] table's for the
 * directives, the comments give the others. Strings are copied by tsa_service_new. */
/* The [tsa] directives are declared once, in the table in tsa_config.c (name, kind, limits,
 * default, doc line): tsa_config_default applies its defaults, the configuration reader parses with it,
 * and conf/pkiva.conf documents the same defaults (checked by tests/cli/config_test.c). */
#define TSA_PATH_MAX 64
struct tsa_config {
    const char *store_path;  /* the SQLite store (serial blocks, token log); required */
    char path[TSA_PATH_MAX]; /* URL path of the first unit ([tsa] path); unit NAME is also
                                served at path/NAME */
    int durable_log;         /* 1: a token is sent only once its log record is durable;
                                0: sent at once, logged right after (a crash may lose records) */
    int require_clock_sync;  /* 1: no token while the kernel reports the clock
                                unsynchronized or its error bound above a unit's accuracy
                                (timeNotAvailable); 0: labs, tests, CI */
    int max_inflight;        /* requests between parsing and answer, all units;
                                past it systemFailure at once */
    int log_batch_max;       /* log records per commit at most (default 1000) */
    int log_linger_us;       /* under load (the previous commit held several records), wait up to
                                this long for more before committing (default 2000); an idle TSA
                                commits at once. 0: group only what queued during the last commit */
    int64_t serial_block;    /* serials reserved per store transaction; a crash
                                skips at most two blocks */
    size_t max_query_bytes;  /* largest TimeStampReq accepted (default 16384); larger: badRequest */
    tsa_clock_fn clock_check; /* NULL (default): tsa_clock_adjtimex; tests inject their own */
    void *clock_ctx;
    int clock_reread_ms; /* requests reuse a clock reading this young (default 100; 0: read for
                            every request); its error bound is widened by the kernel's 500 ppm
                            per elapsed second, and /readyz always reads afresh */
};
void tsa_config_default(struct tsa_config *cfg);
/* The [tsa] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *tsa_config_directives(size_t *n);

/* One TSA unit. Strings are copied by tsa_service_new. */
struct tsa_unit_config {
    const char *name;       /* [A-Za-z0-9._-]{1,63}, unique: served at path/NAME; serials and
                                the token log are keyed by the certificate, so a rename is
                                harmless */
    const char *cert_file;  /* PEM TSA certificate: extendedKeyUsage critical, timeStamping only */
    const char *chain_file; /* optional PEM bundle of CA certificates, sent when certReq is true
                                (the TSA certificate itself, if in it, is sent once) */
    const char *key_uri;    /* PKCS#11 URI of the private key */
    const char *digest;     /* signature digest, NULL = the key's default (SHA256 / SHA384);
                                RSA keys sign with PKCS#1 v1.5 (OpenSSL's PKCS#7 signer, which
                                TS_RESP_CTX uses, has no RSASSA-PSS) */
    const char *ess_digest; /* ESSCertIDv2 hash (RFC 5816), NULL = SHA256; SHA1 is refused */
    const char *policy;     /* default policy OID (dotted), required */
    const char *accepted_policies[TSA_MAX_POLICIES]; /* further OIDs a request may ask for */
    int n_accepted_policies;
    int64_t accuracy_us;   /* TSTInfo accuracy in microseconds, 0 = omit; below one second
                                genTime carries milliseconds, below one millisecond microseconds */
    int tsa_name;          /* 1: TSTInfo tsa = directoryName of the certificate subject */
    int allow_weak_hashes; /* 1: also accept SHA-1 and MD5 imprints (default 0: badAlg) */
};

/* A [tsa.NAME] section of the configuration file as read (tsa_config.c declares each directive
 * once: name, kind, limits, default, doc line); the reader names the unit and checks that cert,
 * key and policy are set, and serve turns it into a tsa_unit_config. */
#define TSA_SETTING_MAX 512
struct tsa_unit_settings {
    char name[64];                        /* URL-safe; served at <tsa path>/NAME */
    char cert[TSA_SETTING_MAX];           /* PEM TSA certificate */
    char chain[TSA_SETTING_MAX];          /* optional PEM CA chain sent with certReq */
    char previous_certs[TSA_SETTING_MAX]; /* optional PEM: the unit's earlier certificates, which
                                             pkiva tsa check also accepts as the signer */
    char key_uri[TSA_SETTING_MAX];        /* PKCS#11 URI */
    char digest[16];                      /* "" = key default */
    char ess_digest[16];                  /* ESSCertIDv2 hash, "" = SHA256 */
    char policy[64];                      /* default policy OID */
    char accepted[TSA_MAX_POLICIES][64];
    int n_accepted;
    int64_t accuracy_us;
    int tsa_name;
    int allow_weak_hashes;
};
/* Fills u with the table's defaults (name empty). */
void tsa_unit_settings_default(struct tsa_unit_settings *u);
/* The [tsa.NAME] directive table (static storage) and its length. */
const struct util_conf_directive *tsa_unit_settings_directives(size_t *n);

/* Loads and checks every unit (certificate EKU, key in the HSM matching the certificate, chain,
 * OIDs), opens the store at cfg->store_path and reserves the first serial blocks. Configuration
 * problems return UTIL_ECONFIG after a log line naming the unit and the reason. hsm must outlive
 * the service. Free with tsa_service_free. */
int tsa_service_new(const struct tsa_config *cfg, const struct tsa_unit_config *units, int n_units,
                    struct hsm *hsm, struct tsa_service **out);
/* Registers POST cfg->path (and path/NAME) and the per-loop hooks. Before http_server_start. */
int tsa_service_register(struct tsa_service *svc, struct http_server *srv);
/* Starts the token-log thread (it owns the store connection from then on). */
int tsa_service_start(struct tsa_service *svc);
/* New requests get systemFailure; waits (bounded) for requests in flight, commits the pending
 * log records and joins the log thread. After http_server_run returned. NULL-safe, idempotent. */
void tsa_service_stop(struct tsa_service *svc);
/* After tsa_service_stop, before hsm_close. If requests were still in flight (stop timed out), a
 * signing thread may still point into the service: then it is left allocated (and logged). */
void tsa_service_free(struct tsa_service *svc);

/* For /readyz, on a loop thread (does not block): 1 if tokens can be issued, else 0 and a reason in
 * why (clock not synchronized, token log failing, serial blocks exhausted). */
int tsa_service_ready(struct tsa_service *svc, char *why, size_t why_len);

struct tsa_stats {
    uint64_t requests; /* POSTs with the TSA content type */
    uint64_t granted;
    uint64_t rejected[26];      /* by PKIFailureInfo bit (enum tsa_fail_info) */
    uint64_t unsupported_media; /* 415: not application/timestamp-query */
    uint64_t log_commits, log_records;
    uint64_t log_failures; /* failed commits */
    int inflight;
    int clock_ok; /* last clock check passed (or is not required) */
};
/* Relaxed snapshot for /metrics; any thread. */
void tsa_stats_get(const struct tsa_service *svc, struct tsa_stats *out);
/* The TSA section of /metrics (Prometheus text, pkiva_tsa_*) into buf (NUL-terminated). Returns
 * the length written, or UTIL_EINVAL when buf is too small. Any thread. */
int tsa_service_metrics(const struct tsa_service *svc, char *buf, size_t len);

#endif
