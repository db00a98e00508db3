/* SPDX-License-Identifier: Apache-2.0 */
/* hsm internals shared by hsm.c (library context, signing pool, outage bookkeeping), key.c (keys,
 * signing contexts) and p11diag.c (read-only token diagnostics). Nothing outside hsm/ includes it. */
#ifndef PKIVA_HSM_INT_H
#define PKIVA_HSM_INT_H

#include <hsm/hsm.h>
#include <openssl/ui.h>
#include <stdatomic.h>
#include <stdint.h>

#define HSM_MOD "hsm"

struct hsm {
    OSSL_LIB_CTX *libctx;     /* default + pkcs11 providers; owns every provider key */
    struct util_pool *pool;   /* the signing threads */
    char *module_path;        /* PKCS#11 module, for the read-only diagnostics in p11diag.c */
    /* 0 while the HSM is available; during an outage the monotonic ms at which it began (>= 1).
     * One atomic word, so the thread that ends an episode always sees when it started. */
    _Atomic int64_t down_since_ms;
    _Atomic uint64_t signatures;    /* work functions that returned 0 */
    _Atomic uint64_t errors;        /* results of UTIL_EHSM */
    _Atomic uint64_t sign_us_total; /* time spent in successful work functions */
};

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

#endif
