/* SPDX-License-Identifier: Apache-2.0 */
/* hsm: every private-key operation of pkiva, made inside a PKCS#11 token through pkcs11-provider.
 * Keys are found by PKCS#11 URI (RFC 7512) through OSSL_STORE in a library context of their own and
 * come back as EVP_PKEY handles whose private half never leaves the token. No ENGINE. Every
 * signature pkiva serves comes from hsm_sign_blocking / hsm_sign_digest_blocking, which have the
 * token sign a digest and verify the result before returning it (see the DESIGN comment in key.c);
 * keys have a health of their own, so one key that cannot sign does not stop the others.
 *
 * Signing runs only on the hsm's worker pool (one thread per configured HSM session, bounded queue);
 * loop threads submit work through a util_pool_port and get the result back on their own loop. */
#ifndef PKIVA_HSM_H
#define PKIVA_HSM_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>
#include <util/util.h>

struct hsm;

struct hsm_config {
    const char *module_path;   /* PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so */
    const char *pin_file;      /* user PIN, one line; must not be readable by group/other */
    const char *provider_path; /* pkcs11-provider .so; NULL = OpenSSL's modules dir "pkcs11" */
    int softhsm_no_deinit; /* 1: pkcs11-module-quirks = no-deinit (SoftHSM2 2.6.1 crashes at exit
                                  without it) */
    int sessions;          /* signing threads, >= 1 */
    int queue_max;         /* signing jobs waiting at most, >= 1 */
    /* C_Initialize's pReserved string, as pkcs11-provider's pkcs11-module-init-args (NSS's
     * softoken: "configdir='sql:/path' certPrefix='' keyPrefix='' secmod='secmod.db'"); NULL or
     * "" = none. */
    const char *init_args;
    /* How many ECDSA signatures are verified before they leave the hsm: every one in
     * ecdsa_verify_every (1 = all, HSM_VERIFY_NONE = none, 0 = HSM_ECDSA_VERIFY_DEFAULT). RSA
     * signatures are always verified. */
    int ecdsa_verify_every;
    /* Self-heal of last resort (see hsm_monitor_start): when the monitor has failed to load the
     * keys again for this long, the process exits with HSM_EXIT_STALE for its supervisor to
     * restart it. 0 = never (wait for the token however long it takes). */
    int restart_after_ms;
    /* 1: every signature through pkcs11-provider; 0 (default): ECDSA signatures on the signing
     * threads' own sessions (p11direct.c), the provider for the rest and on any failure. */
    int provider_only;
};

#define HSM_VERIFY_NONE (-1)
#define HSM_ECDSA_VERIFY_DEFAULT 16

/* The [hsm] section of the configuration file as read (hsm_config.c declares each directive once:
 * name, kind, limits, default, doc line). */
#define HSM_SETTING_MAX 512
struct hsm_settings {
    char module[HSM_SETTING_MAX];
    char pin_file[HSM_SETTING_MAX];
    char softhsm_conf[HSM_SETTING_MAX]; /* exported as SOFTHSM2_CONF when set */
    char provider[HSM_SETTING_MAX];     /* pkcs11-provider module; "" = OpenSSL's default */
    int no_deinit;
    int sessions;
    int queue_max;
    char init_args[HSM_SETTING_MAX]; /* pkcs11-module-init-args (C_Initialize); "" = none */
    int ecdsa_verify_every;          /* verify_ecdsa: 1 all, N sample, HSM_VERIFY_NONE */
    int restart_after_ms;            /* 0 = never exit for a supervisor restart */
    int direct;                      /* direct_sign: ECDSA on the threads' own sessions */
};
/* Fills s with the table's defaults. */
void hsm_settings_default(struct hsm_settings *s);
/* The [hsm] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *hsm_settings_directives(size_t *n);

/* Exit status of a process that gave up on its PKCS#11 state (EX_TEMPFAIL): restart it. */
#define HSM_EXIT_STALE 75

/* Creates the library context (default + pkcs11 providers), checks the PIN file's permissions
 * (UTIL_EPERM if group/other may read it), logs into the token lazily on first use. The PIN never
 * appears in a log line or error. Starts the signing pool. Free with hsm_close. */
int hsm_open(const struct hsm_config *cfg, struct hsm **out);
void hsm_close(struct hsm *hsm); /* NULL-safe; stops the pool first */

/* The library context holding the provider keys. Use it for every operation that touches them. */
OSSL_LIB_CTX *hsm_libctx(struct hsm *hsm);

/* ---- keys ----------------------------------------------------------------------------------- */

enum hsm_alg { HSM_EC_P256 = 1, HSM_EC_P384, HSM_RSA_2048, HSM_RSA_3072, HSM_RSA_4096 };
/* "ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096" <-> enum; -1 / NULL if unknown. */
int hsm_alg_from_name(const char *name);
const char *hsm_alg_name(int alg);

struct hsm_key {
    EVP_PKEY *pkey; /* provider key: public half readable, private half stays in the token */
    char *uri;      /* the PKCS#11 URI it was loaded from */
    char md[16];    /* digest used with it: "SHA256" for P-256/RSA, "SHA384" for P-384 */
    int rsa_pss;    /* 1: RSASSA-PSS instead of PKCS#1 v1.5 (RSA keys only) */
};

/* Loads the private key at uri (e.g. "pkcs11:token=pkiva;object=ocsp-signer;type=private").
 * md: digest name or NULL for the key's default; rsa_pss as above. UTIL_ENOTFOUND if no such key,
 * UTIL_EHSM if the token is unusable (wrong PIN, missing token). Free with hsm_key_free. */
int hsm_key_load_blocking(struct hsm *hsm, const char *uri, const char *md, int rsa_pss,
                          struct hsm_key **out);
/* Generates a key pair inside the token, private key sensitive and not extractable, labelled label
 * (CKA_LABEL and CKA_ID derived from it), then loads it as hsm_key_load_blocking would. */
int hsm_key_generate_blocking(struct hsm *hsm, const char *token_label, const char *label, int alg,
                              struct hsm_key **out);
void hsm_key_free(struct hsm_key *key); /* NULL-safe */

/* A digest-sign context for the key, ready for X509_sign_ctx / X509_CRL_sign_ctx /
 * OCSP_basic_sign_ctx / EVP_DigestSign (PSS padding set when rsa_pss). Signatures made with it
 * come from pkcs11-provider's own digest-and-sign path and are NOT checked: use it only for
 * certificates made at set-up (pkiva init), to read the AlgorithmIdentifier, and for OpenSSL's
 * structure builders whose signature the caller then replaces with hsm_sign_blocking's; every
 * signature pkiva serves comes from hsm_sign_blocking / hsm_sign_digest_blocking. Call only on a signing
 * thread or from start-up code. The caller frees it with EVP_MD_CTX_free. */
int hsm_sign_ctx_new_blocking(struct hsm *hsm, const struct hsm_key *key, EVP_MD_CTX **out);
/* The one signing path (see the DESIGN comment in key.c): hashes data in software with key->md,
 * has the token sign the digest (EVP_PKEY_sign: CKM_RSA_PKCS over a DigestInfo built here,
 * CKM_RSA_PKCS_PSS, CKM_ECDSA), and verifies the signature against the key's public key (the
 * certificate's once hsm_key_check_blocking bound one) before returning it: every RSA signature,
 * ECDSA as configured. A signature that does not verify is never returned: it is counted, logged
 * and marks the key unhealthy (UTIL_EHSM). A key that is not healthy fails at once (UTIL_EHSM)
 * without touching the token. *sig is malloc'd; caller frees. Signing thread or start-up only. */
int hsm_sign_blocking(struct hsm *hsm, const struct hsm_key *key, const unsigned char *data,
                      size_t len, unsigned char **sig, size_t *sig_len);
/* After a signature made through hsm_sign_ctx_new_blocking's context failed: pkcs11-provider
 * hides the PKCS#11 error, so one test signature through hsm_sign_blocking says whose fault it
 * was. UTIL_EHSM with the key marked unhealthy (an error of that key alone: the token stays
 * available, the other keys keep signing) or as a token failure (an outage, as usual); or
 * UTIL_ECRYPTO when that signature works (the failure was not the token's). Signing thread or
 * start-up only. */
int hsm_blame_blocking(struct hsm *hsm, const struct hsm_key *key);
/* The same for a digest made by the caller with key->md (digest_len must be its size). */
int hsm_sign_digest_blocking(struct hsm *hsm, const struct hsm_key *key,
                             const unsigned char *digest, size_t digest_len, unsigned char **sig,
                             size_t *sig_len);
/* ---- per-key health ------------------------------------------------------------------------- */

enum hsm_key_health {
    HSM_KEY_OK = 0,
    HSM_KEY_UNHEALTHY, /* a bad signature or a key-specific PKCS#11 error while serving; the
                          monitor runs the self-check again and clears it when that passes */
    HSM_KEY_FAILED,    /* the start-up self-check failed: never used until a restart */
};
/* The start-up self-check: binds cert's public key to key (it must be the key's public half;
 * cert may be NULL to keep the token's), then signs a test value through hsm_sign_blocking with
 * verification forced. On failure the key is marked HSM_KEY_FAILED and the error names the
 * module, the mechanism and the reason; the other keys are not affected. Returns 0, UTIL_ECONFIG
 * (cert does not match the key) or UTIL_EHSM. Signing thread or start-up code. */
int hsm_key_check_blocking(struct hsm *hsm, struct hsm_key *key, X509 *cert);
/* The key's health; why (may be NULL) gets the reason of the last failure. */
int hsm_key_health(const struct hsm_key *key, char *why, size_t why_len);
/* 1 when key may sign (HSM_KEY_OK). */
int hsm_key_usable(const struct hsm_key *key);
/* For work that signs through OpenSSL's own code with key->pkey: 1 when the key may not sign,
 * and then the current job's UTIL_EHSM is booked as the key's failure, not the token's. */
int hsm_key_refused(const struct hsm_key *key);
/* Keys of this hsm that are not HSM_KEY_OK (the monitor's own probe key excepted); *total (may be
 * NULL) gets the number of keys; why (may be NULL) gets "key <uri> ...: <reason>" of the first. */
int hsm_keys_unhealthy(struct hsm *hsm, int *total, char *why, size_t why_len);
/* Appends Prometheus lines (pkiva_hsm_key_healthy, pkiva_hsm_key_signatures_total,
 * pkiva_hsm_key_bad_signatures_total, pkiva_hsm_key_errors_total per key, labelled by URI) to
 * buf. Returns the bytes written, or -1 when buf is too small. */
int hsm_keys_metrics(struct hsm *hsm, char *buf, size_t len);

/* ---- the signing pool ----------------------------------------------------------------------- */

/* The hsm's signing pool, for util_pool_port_new. */
struct util_pool *hsm_pool(struct hsm *hsm);

/* Queues work on a signing thread; as util_pool_submit (UTIL_EBUSY at once when the queue is full).
 * work should return UTIL_EHSM when a PKCS#11 operation failed: the hsm then counts an error, marks
 * itself unavailable and logs once per episode; the next success marks it available again and logs
 * the recovery. A failure that hsm_sign_* put down to one key (a bad signature, a mechanism the
 * token refuses for that key, a key not healthy) is counted for that key only: the token and the
 * other keys stay available. */
int hsm_submit(struct hsm *hsm, struct util_pool_port *port, util_pool_work_fn work,
               util_pool_done_fn done, void *arg);
/* Same, waiting for the result (start-up, CLI). */
int hsm_run_sync(struct hsm *hsm, util_pool_work_fn work, void *arg);

/* Report the outcome of a PKCS#11 operation made outside hsm_submit (start-up code). */
void hsm_note_result(struct hsm *hsm, int result);

/* 1 when the last signing attempt succeeded (or none failed yet), 0 during an outage. */
int hsm_available(const struct hsm *hsm);
/* Makes one real signature with key on a signing thread to check the token (for /readyz, and to
 * notice recovery during an outage). */
int hsm_probe_blocking(struct hsm *hsm, const struct hsm_key *key);

/* Starts the monitor: a thread that notices an outage and heals it without a restart. Call once,
 * from start-up code, after the keys are loaded. It loads its own probe key from probe_uri
 * (a private key URI, as for hsm_key_load_blocking; failure is returned and nothing starts).
 * - While available, it signs once with the probe key whenever interval_ms passed without any
 *   successful job, so an outage without traffic still shows in hsm_available (/readyz).
 * - While unavailable, every min(interval_ms, 500) ms it looks every live key up again and, once
 *   the token gives them all, swaps their handles (key->pkey) and probes; the first success ends
 *   the outage. After a token is removed or a network HSM reconnects, the old object handles are
 *   dead (pkcs11-provider 1.0 does not renew them), so this reload is what heals signing.
 * - When the keys could not be loaded again for cfg->restart_after_ms (not 0) in a row, it exits
 *   the process with HSM_EXIT_STALE: a module that lost track of its objects heals only in a new
 *   process (see the DESIGN comment in hsm.c).
 * - While it runs and the hsm is unavailable, hsm_submit and hsm_run_sync refuse at once with
 *   UTIL_EHSM instead of queueing work for a token that fails or hangs (counted as rejected); the
 *   monitor's probes are what notice recovery.
 * Because of the swap, read key->pkey only inside work run by hsm_submit/hsm_run_sync (or in
 * start-up code before this call). hsm_close stops the monitor. */
int hsm_monitor_start(struct hsm *hsm, const char *probe_uri, int interval_ms);

struct hsm_stats {
    uint64_t signatures, errors, rejected; /* rejected: queue full, or shed during an outage */
    int queue_depth;
    uint64_t sign_us_total;  /* sum of signing latencies, for an average */
    uint64_t key_reloads;    /* times the monitor loaded every key again after an outage */
    uint64_t verified;       /* signatures checked against the public key before use */
    uint64_t bad_signatures; /* signatures that did not verify (never returned) */
    uint64_t key_errors;     /* key-specific failures (they do not make the hsm unavailable) */
    uint64_t direct;         /* signatures made on a signing thread's own session (p11direct.c) */
};
void hsm_stats_get(const struct hsm *hsm, struct hsm_stats *out);
/* The HSM section of /metrics (Prometheus text, pkiva_hsm_*, with the per-key lines of
 * hsm_keys_metrics) into buf (NUL-terminated). Returns the length written, or UTIL_EINVAL when
 * buf is too small. Any thread; takes the key list's mutex briefly. */
int hsm_metrics(struct hsm *hsm, char *buf, size_t len);

#endif
