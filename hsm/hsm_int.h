/* SPDX-License-Identifier: Apache-2.0 */
/* hsm internals shared by hsm.c (library context, signing pool, outage bookkeeping), key.c (keys,
 * signing contexts) and p11diag.c (read-only token diagnostics). Nothing outside hsm/ includes it. */
#ifndef PKIVA_HSM_INT_H
#define PKIVA_HSM_INT_H

#include <hsm/hsm.h>
#include <openssl/ui.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define HSM_MOD "hsm"

struct hsm {
    OSSL_LIB_CTX *libctx;   /* default + pkcs11 providers; owns every provider key */
    struct util_pool *pool; /* the signing threads */
    char *module_path;      /* PKCS#11 module, for the read-only diagnostics in p11diag.c */
    /* 0 while the HSM is available; during an outage the monotonic ms at which it began (>= 1).
     * One atomic word, so the thread that ends an episode always sees when it started. */
    _Atomic int64_t down_since_ms;
    _Atomic uint64_t signatures;     /* work functions that returned 0 */
    _Atomic uint64_t errors;         /* results of UTIL_EHSM */
    _Atomic uint64_t sign_us_total;  /* time spent in successful work functions */
    _Atomic int64_t last_ok_ms;      /* monotonic ms of the last successful job (0: none yet) */
    _Atomic uint64_t shed;           /* jobs refused at once during an outage (monitor running) */
    _Atomic uint64_t key_reloads;    /* times every key was loaded again after an outage */
    _Atomic uint64_t verified;       /* signatures checked before use */
    _Atomic uint64_t bad_signatures; /* signatures that did not verify */
    _Atomic uint64_t key_errors;     /* key-specific failures */
    int ecdsa_verify_every;          /* 1 = all, HSM_VERIFY_NONE = none, N = one in N */
    char *init_args;                 /* for the read-only diagnostics' C_Initialize */
    /* The module pkcs11-provider loaded (CK_FUNCTION_LIST_PTR) for the direct ECDSA path, and
     * the dlopen reference to it; NULL when only the provider signs (p11direct.c). */
    void *direct_fl, *direct_lib;
    _Atomic uint64_t direct_signatures;

    /* Every job runs under the read side; hsm__keys_reload swaps key->pkey under the write side,
     * so no job ever sees a key's pkey change under it (see the DESIGN comment in hsm.c). Writer
     * preferring, so a busy pool cannot starve a reload. */
    pthread_rwlock_t swap_lock;
    pthread_mutex_t keys_mutex; /* guards the list of live keys below */
    struct hsm__key *keys;
    uint64_t key_serial; /* last id given to a key; under keys_mutex */

    /* The monitor thread (hsm_monitor_start); stop and cond under monitor_mutex. */
    pthread_mutex_t monitor_mutex;
    pthread_cond_t monitor_cond; /* CLOCK_MONOTONIC */
    pthread_t monitor;
    int monitor_started, monitor_stop;
    _Atomic int monitor_running; /* 1: outages are detected and healed; shed jobs while down */
    int monitor_interval_ms;
    struct hsm_key *probe_key;       /* the monitor's own key, freed by hsm_close */
    int restart_after_ms;            /* hsm_config's: 0 = never exit for a restart */
    int64_t reload_failing_since_ms; /* monotonic ms of the first failed reload in a row, or 0;
                                        only the monitor thread touches it */
};

/* A key as the hsm allocates it: the public struct first (hsm_key_free converts back), then the
 * links of the hsm's list of live keys, which hsm__keys_reload walks after an outage. owner is
 * NULL once hsm_close has detached the key (a caller that frees keys late touches nothing). */
struct hsm__key {
    struct hsm_key pub;
    struct hsm *owner;
    uint64_t id; /* unique per hsm, so a reload never mistakes a new key for a freed one */
    struct hsm__key *prev, *next;

    /* Verification and health (see the DESIGN comment in key.c). verify_pub is a software copy
     * of the public key (the certificate's once bound), set at load and by
     * hsm_key_check_blocking before the key is used; never changed while jobs run. */
    EVP_PKEY *verify_pub;
    EVP_MD *md;                  /* key->md, fetched from the default provider */
    int is_rsa;                  /* EVP_PKEY_is_a(pub.pkey, "RSA"): a name lookup, 1% of a sign */
    unsigned char di_prefix[32]; /* RSA PKCS#1 v1.5: the DigestInfo before the digest */
    size_t di_prefix_len;
    _Atomic int health;        /* enum hsm_key_health */
    _Atomic int probe;         /* the monitor's own key: not listed as a served key */
    pthread_mutex_t why_mutex; /* guards why */
    char why[256];             /* the reason of the last failure */
    _Atomic uint64_t signatures, bad_signatures, errors;
    _Atomic uint64_t ecdsa_count; /* ECDSA signatures made, for the sampling */
};

/* Set by hsm_sign_* on the calling thread when its UTIL_EHSM is down to the key, not the token;
 * job_work reads and clears it so that one bad key never marks the whole hsm unavailable. */
extern _Thread_local int hsm__key_fault;
/* Per job, also read and cleared by job_work: whether a signature was refused because its key is
 * not healthy (hsm__refused), and whether the token made any signature (hsm__signed). A job that
 * only met refused keys says nothing about the token: it neither proves it alive (which would
 * keep the monitor from probing an idle token) nor ends an outage. */
extern _Thread_local int hsm__refused, hsm__signed;

/* A signing thread's EVP_PKEY_CTXs, ready for EVP_PKEY_sign, one per key it signed with lately
 * (see sign_ctx_get in key.c). Each holds a reference to the pkey it was made for, so a key
 * swapped by hsm__keys_reload or freed is noticed by id and pointer, never confused with another. */
#define HSM__CTX_SLOTS 8
struct hsm__direct;
struct hsm__sign_cache {
    struct {
        uint64_t key_id; /* hsm__key.id */
        EVP_PKEY *pkey;  /* the key->pkey it was made for (ctx holds a reference) */
        EVP_PKEY_CTX *ctx;
    } slot[HSM__CTX_SLOTS];
    unsigned next;              /* the slot to reuse when none matches */
    struct hsm__direct *direct; /* the thread's own session (p11direct.c), made on first use */
};
/* The calling thread's cache: set by the signing pool's thread_init (hsm.c), NULL elsewhere (then
 * every signature makes and frees its own context). */
extern _Thread_local struct hsm__sign_cache *hsm__thread_cache;
/* Frees every context in c and c itself (the pool's thread_fini). NULL-safe. */
void hsm__sign_cache_free(const struct hsm *hsm, struct hsm__sign_cache *c);

/* ---- the direct ECDSA path (p11direct.c) ----------------------------------------------------- */

/* Finds the module instance pkcs11-provider loaded (enabled 0: none, the provider signs alone). */
void hsm__direct_open(struct hsm *hsm, int enabled);
void hsm__direct_close(struct hsm *hsm);
/* Signs digest with entry's ECDSA key on the calling signing thread's own session (c is its
 * cache). UTIL_OK with *sig malloc'd (DER ECDSA-Sig-Value) and *fresh 1 when the key's object
 * was just found (key.c verifies that signature whatever the sampling); UTIL_ENOTFOUND when the
 * direct path does not serve it (RSA, not a signing thread, no module, a failure: then the
 * provider signs). */
int hsm__direct_sign(const struct hsm *hsm, struct hsm__sign_cache *c, const struct hsm__key *entry,
                     const unsigned char *digest, size_t digest_len, unsigned char **sig,
                     size_t *sig_len, int *fresh);
void hsm__direct_free(const struct hsm *hsm, struct hsm__direct *d); /* NULL-safe */
/* p11diag.c: the module pkcs11-provider loaded and initialised (CK_FUNCTION_LIST_PTR) and a
 * dlopen reference to it in *lib, or NULL; the slot of the token labelled token_label (0). */
void *hsm__loaded_module(const struct hsm *hsm, void **lib);
int hsm__token_slot(void *fl, const char *token_label, unsigned long *slot);
/* key.c: attribute name of a pkcs11: URI, percent-decoded: 1 found, 0 absent, UTIL_EINVAL. */
int hsm__uri_get_attr(const char *uri, const char *name, char *out, size_t out_len);

/* Runs the self-check again on every key marked HSM_KEY_UNHEALTHY and clears the mark of those
 * that pass (monitor thread). */
void hsm__keys_recheck(struct hsm *hsm);

/* Looks every live key up again by its URI and, only if all were found, swaps each key's pkey for
 * the fresh one under the write side of swap_lock. The lookups themselves run without any lock
 * held. Returns 0 (and logs) when every key was reloaded, UTIL_EHSM when the token still cannot
 * give them all (nothing changed, logged at debug level only: the monitor retries often), or
 * UTIL_ENOMEM. Call only from the monitor thread or start-up code, never from inside a job. */
int hsm__keys_reload(struct hsm *hsm);
/* Unlinks every live key from the hsm (hsm_close). */
void hsm__keys_detach(struct hsm *hsm);

/* The process-wide UI method that never prompts (see hsm.c); set as OpenSSL's default by hsm_open
 * and passed to every OSSL_STORE lookup with an int * as user data, set to 1 when a PIN was asked
 * for. Lives until the process exits; NULL only if it could not be allocated. */
UI_METHOD *hsm__no_prompt_ui(void);

/* Checks, without logging in or changing any state, whether the token labelled token_label is
 * present in the module's slots and whether its user PIN is usable. Returns 0 when it is present
 * and not locked (*pin_failed = 1 if the token reports a failed user login since the last good
 * one, CKF_USER_PIN_COUNT_LOW), UTIL_EHSM (after logging why) when it is missing or its PIN is
 * locked, and UTIL_EINVAL when the check could not be made (nothing concluded). Call only after
 * the provider has initialised the module (it is never loaded or initialised for good here). */
int hsm__token_check(const struct hsm *hsm, const char *token_label, int *pin_failed);
/* Called when the provider could not start the module: loads it directly and logs which step
 * fails (dlopen, C_GetFunctionList, C_Initialize with init_args, C_GetSlotList) with the CK_RV's
 * name, or that the module works on its own. Start-up only. */
void hsm__module_diagnose(const char *module_path, const char *init_args);
/* Opens a session of its own on the token labelled token_label (the module instance
 * pkcs11-provider uses, so the login it made applies), finds the private key labelled key_label
 * and asks C_SignInit with mechanism mech (CKM_RSA_PKCS, CKM_RSA_PKCS_PSS with md's parameters,
 * CKM_ECDSA); an operation that starts is finished on a dummy input. Returns the CK_RV of the
 * first call that failed (C_OpenSession, C_SignInit, C_Sign), CKR_OK, or (unsigned long)-1 when
 * nothing could be concluded (module not loaded, key not found). Only after a failed signature:
 * it costs a session and a signature. */
unsigned long hsm__sign_init_check(const struct hsm *hsm, const char *token_label,
                                   const char *key_label, unsigned long mech, const char *md);
/* The name of a CK_RV ("CKR_MECHANISM_INVALID"), or NULL for a value it does not know. */
const char *hsm__ckr_name(unsigned long rv);

/* Uses of a private key besides signing (p11usage.c). */
#define HSM_USE_DECRYPT 1u
#define HSM_USE_UNWRAP 2u
#define HSM_USE_DERIVE 4u
/* Reads which of those the private keys labelled label (and with CKA_ID id when id_len > 0; label
 * may be NULL when an id is given) in the token labelled token_label (NULL: the first token)
 * allow, into *extra (HSM_USE_* bits); with clear, first sets each allowed one to false and
 * reports what the token kept. Returns 0, or UTIL_EINVAL/UTIL_ENOTFOUND when nothing could be
 * concluded (module, token or key not reachable this way), UTIL_ENOMEM. Only after the provider
 * has logged in to the token (after a key was loaded or generated there). */
int hsm__key_extra_uses(const struct hsm *hsm, const char *token_label, const char *label,
                        const unsigned char *id, size_t id_len, int clear, unsigned *extra);

#endif
