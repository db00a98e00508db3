/* SPDX-License-Identifier: Apache-2.0 */
/* Read-only PKCS#11 diagnostics for the case pkcs11-provider cannot explain: when a key is not
 * found it reports no error at all, whether the token is missing, the PIN was refused or the key
 * simply does not exist. This file asks the module directly which tokens are present and what
 * their PIN flags say, without logging in, opening sessions or finalising anything.
 *
 * The module is reached with dlopen(RTLD_NOLOAD), so only the instance pkcs11-provider already
 * loaded is used; its C_Initialize then answers CKR_CRYPTOKI_ALREADY_INITIALIZED and the state is
 * shared. Should it answer CKR_OK (the provider had finalised it), nobody else was using it and it
 * is finalised again before returning. */
#include "hsm_int.h"

#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_LABEL_LEN 32 /* CK_TOKEN_INFO.label: blank-padded, not NUL-terminated */
#define SLOTS_MAX 256

/* Copies a blank-padded PKCS#11 label into a NUL-terminated string without the padding. */
static void label_from_token(const unsigned char *padded, char out[TOKEN_LABEL_LEN + 1])
{
    size_t len = TOKEN_LABEL_LEN;

    memcpy(out, padded, TOKEN_LABEL_LEN);
    while (len > 0 && (out[len - 1] == ' ' || out[len - 1] == '\0'))
        len--;
    out[len] = '\0';
}

int hsm__token_check(const struct hsm *hsm, const char *token_label, int *pin_failed)
{
    void *lib = NULL;
    CK_C_GetFunctionList get_function_list = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    CK_C_INITIALIZE_ARGS init_args;
    CK_SLOT_ID *slots = NULL;
    CK_ULONG slot_count = 0;
    CK_RV rv;
    char seen[256] = "";
    size_t seen_len = 0;
    int we_initialised = 0;
    int rc = UTIL_EINVAL;

    *pin_failed = 0;
    lib = dlopen(hsm->module_path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (lib == NULL) {
        UTIL_DEBUG(HSM_MOD, "token check: module %s not loaded", hsm->module_path);
        goto out;
    }
    /* POSIX's sanctioned way to turn dlsym's object pointer into a function pointer. */
    *(void **)(&get_function_list) = dlsym(lib, "C_GetFunctionList");
    if (get_function_list == NULL || get_function_list(&fl) != CKR_OK || fl == NULL) {
        UTIL_DEBUG(HSM_MOD, "token check: no C_GetFunctionList in %s", hsm->module_path);
        goto out;
    }
    memset(&init_args, 0, sizeof(init_args));
    init_args.flags = CKF_OS_LOCKING_OK;
    rv = fl->C_Initialize(&init_args);
    if (rv == CKR_OK) {
        we_initialised = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: C_Initialize failed: CKR 0x%lx", hsm->module_path,
                   (unsigned long)rv);
        rc = UTIL_EHSM;
        goto out;
    }
    rv = fl->C_GetSlotList(CK_TRUE, NULL, &slot_count);
    if (rv != CKR_OK || slot_count > SLOTS_MAX) {
        UTIL_DEBUG(HSM_MOD, "token check: C_GetSlotList: CKR 0x%lx, %lu slots", (unsigned long)rv,
                   (unsigned long)slot_count);
        goto out;
    }
    if (slot_count > 0) {
        slots = calloc(slot_count, sizeof(*slots));
        if (slots == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        rv = fl->C_GetSlotList(CK_TRUE, slots, &slot_count);
        if (rv != CKR_OK) {
            UTIL_DEBUG(HSM_MOD, "token check: C_GetSlotList: CKR 0x%lx", (unsigned long)rv);
            goto out;
        }
    }
    for (CK_ULONG i = 0; i < slot_count; i++) {
        CK_TOKEN_INFO info;
        char label[TOKEN_LABEL_LEN + 1];

        if (fl->C_GetTokenInfo(slots[i], &info) != CKR_OK)
            continue;
        label_from_token(info.label, label);
        if (strcmp(label, token_label) != 0) {
            int n = snprintf(seen + seen_len, sizeof(seen) - seen_len, "%s'%s'",
                             seen_len > 0 ? ", " : "", label);
            if (n > 0 && (size_t)n < sizeof(seen) - seen_len)
                seen_len += (size_t)n;
            continue;
        }
        if ((info.flags & CKF_USER_PIN_LOCKED) != 0) {
            UTIL_ERROR(HSM_MOD, "token '%s': the user PIN is locked", token_label);
            rc = UTIL_EHSM;
            goto out;
        }
        if ((info.flags & CKF_USER_PIN_INITIALIZED) == 0) {
            UTIL_ERROR(HSM_MOD, "token '%s' has no user PIN (not initialised)", token_label);
            rc = UTIL_EHSM;
            goto out;
        }
        if ((info.flags & CKF_USER_PIN_FINAL_TRY) != 0)
            UTIL_ERROR(HSM_MOD, "token '%s': one more wrong PIN locks the user PIN", token_label);
        if ((info.flags & CKF_USER_PIN_COUNT_LOW) != 0)
            *pin_failed = 1;
        rc = UTIL_OK;
        goto out;
    }
    UTIL_ERROR(HSM_MOD, "token '%s' is not present in %s (tokens seen: %s)", token_label,
               hsm->module_path, seen_len > 0 ? seen : "none");
    rc = UTIL_EHSM;
out:
    free(slots);
    if (we_initialised)
        (void)fl->C_Finalize(NULL); /* restores the state we found; nothing to do if it fails */
    if (lib != NULL)
        (void)dlclose(lib); /* drops only the reference RTLD_NOLOAD took */
    return rc;
}
