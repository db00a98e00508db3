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
#include <strings.h>

#define TOKEN_LABEL_LEN 32 /* CK_TOKEN_INFO.label: blank-padded, not NUL-terminated */
#define SLOTS_MAX 256

/* CK_C_INITIALIZE_ARGS as NSS's softoken reads it: the standard structure and one more pointer
 * (its CK_NSS_C_INITIALIZE_ARGS has LibraryParameters where pReserved is, then a pReserved of its
 * own), so that a module reading the longer form never reads past our object. Zeroed. */
struct init_args_nss {
    CK_C_INITIALIZE_ARGS args;
    void *nss_reserved;
};

static void init_args_set(struct init_args_nss *a, const char *params)
{
    memset(a, 0, sizeof(*a));
    a->args.flags = CKF_OS_LOCKING_OK;
    a->args.pReserved = (void *)params; /* the module only reads it */
}

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
    struct init_args_nss init_args;
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
    init_args_set(&init_args, hsm->init_args); /* modules such as NSS's softoken need them */
    rv = fl->C_Initialize(&init_args.args);
    if (rv == CKR_OK) {
        we_initialised = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: C_Initialize failed: %s (0x%lx)", hsm->module_path,
                   hsm__ckr_name(rv) != NULL ? hsm__ckr_name(rv) : "CKR_?", (unsigned long)rv);
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

/* The return values a PKCS#11 module gives in the cases an operator meets; others print as hex. */
static const struct {
    CK_RV rv;
    const char *name;
} ckr_names[] = {
    {CKR_OK, "CKR_OK"},
    {CKR_HOST_MEMORY, "CKR_HOST_MEMORY"},
    {CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"},
    {CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"},
    {CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"},
    {CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"},
    {CKR_CANT_LOCK, "CKR_CANT_LOCK"},
    {CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"},
    {CKR_DATA_INVALID, "CKR_DATA_INVALID"},
    {CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"},
    {CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"},
    {CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"},
    {CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"},
    {CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"},
    {CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"},
    {CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"},
    {CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"},
    {CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED"},
    {CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"},
    {CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"},
    {CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"},
    {CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"},
    {CKR_OPERATION_NOT_INITIALIZED, "CKR_OPERATION_NOT_INITIALIZED"},
    {CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"},
    {CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"},
    {CKR_PIN_LOCKED, "CKR_PIN_LOCKED"},
    {CKR_SESSION_COUNT, "CKR_SESSION_COUNT"},
    {CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"},
    {CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"},
    {CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"},
    {CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"},
    {CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"},
    {CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED"},
};

const char *hsm__ckr_name(unsigned long rv)
{
    for (size_t i = 0; i < sizeof(ckr_names) / sizeof(ckr_names[0]); i++)
        if (ckr_names[i].rv == rv)
            return ckr_names[i].name;
    return NULL;
}

static void log_step(const char *module_path, const char *step, CK_RV rv)
{
    const char *name = hsm__ckr_name(rv);

    UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: %s failed: %s (0x%lx)", module_path, step,
               name != NULL ? name : "vendor-defined or unknown CK_RV", (unsigned long)rv);
}

void hsm__module_diagnose(const char *module_path, const char *init_args)
{
    void *lib = NULL;
    CK_C_GetFunctionList get_function_list = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    struct init_args_nss args;
    CK_ULONG slot_count = 0;
    CK_RV rv;
    int we_initialised = 0;

    lib = dlopen(module_path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        const char *why = dlerror();
        UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: dlopen failed: %s", module_path,
                   why != NULL ? why : "?");
        return;
    }
    /* POSIX's sanctioned way to turn dlsym's object pointer into a function pointer. */
    *(void **)(&get_function_list) = dlsym(lib, "C_GetFunctionList");
    if (get_function_list == NULL) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: no C_GetFunctionList (not a PKCS#11 module?)",
                   module_path);
        goto out;
    }
    rv = get_function_list(&fl);
    if (rv != CKR_OK || fl == NULL) {
        log_step(module_path, "C_GetFunctionList", rv);
        goto out;
    }
    if (init_args != NULL && init_args[0] == '\0')
        init_args = NULL; /* NSS's softoken crashes on an empty string, answers NULL properly */
    init_args_set(&args, init_args);
    rv = fl->C_Initialize(&args.args);
    if (rv == CKR_OK) {
        we_initialised = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        log_step(module_path,
                 init_args != NULL && init_args[0] != '\0'
                     ? "C_Initialize (with [hsm] init_args)"
                     : "C_Initialize (no init_args: does the module need [hsm] init_args?)",
                 rv);
        goto out;
    }
    rv = fl->C_GetSlotList(CK_TRUE, NULL, &slot_count);
    if (rv != CKR_OK) {
        log_step(module_path, "C_GetSlotList", rv);
        goto out;
    }
    if (slot_count == 0) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 module %s: C_Initialize succeeded but no slot has a token",
                   module_path);
        goto out;
    }
    UTIL_ERROR(HSM_MOD,
               "PKCS#11 module %s: loads, initialises and lists %lu token(s) on its own; the "
               "failure is in pkcs11-provider's configuration (see the error above)",
               module_path, (unsigned long)slot_count);
out:
    if (we_initialised)
        (void)fl->C_Finalize(NULL); /* the process is giving up on the module anyway */
    /* The module stays loaded: some modules cannot be unloaded safely (SoftHSM2 2.6.1). */
}

/* The module pkcs11-provider loaded, already initialised by it: its function list, or NULL. */
static CK_FUNCTION_LIST_PTR loaded_module(const struct hsm *hsm, void **lib)
{
    CK_C_GetFunctionList get_function_list = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    struct init_args_nss args;
    CK_RV rv;

    *lib = dlopen(hsm->module_path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (*lib == NULL)
        return NULL;
    /* POSIX's sanctioned way to turn dlsym's object pointer into a function pointer. */
    *(void **)(&get_function_list) = dlsym(*lib, "C_GetFunctionList");
    if (get_function_list == NULL || get_function_list(&fl) != CKR_OK || fl == NULL)
        return NULL;
    init_args_set(&args, hsm->init_args);
    rv = fl->C_Initialize(&args.args);
    if (rv == CKR_OK) {
        (void)fl->C_Finalize(NULL); /* nobody was using it: leave it as we found it */
        return NULL;
    }
    return rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ? fl : NULL;
}

/* The slot holding the token labelled token_label; 0 when found. */
static int token_slot(CK_FUNCTION_LIST_PTR fl, const char *token_label, CK_SLOT_ID *out)
{
    CK_SLOT_ID slots[SLOTS_MAX];
    CK_ULONG n = SLOTS_MAX;

    if (fl->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return -1;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        char label[TOKEN_LABEL_LEN + 1];
        if (fl->C_GetTokenInfo(slots[i], &info) != CKR_OK)
            continue;
        label_from_token(info.label, label);
        if (strcmp(label, token_label) == 0) {
            *out = slots[i];
            return 0;
        }
    }
    return -1;
}

unsigned long hsm__sign_init_check(const struct hsm *hsm, const char *token_label,
                                   const char *key_label, unsigned long mech, const char *md)
{
    void *lib = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    CK_SLOT_ID slot = 0;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE find[2] = {{CKA_CLASS, &cls, sizeof(cls)},
                            {CKA_LABEL, (void *)key_label, strlen(key_label)}};
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_ULONG found = 0;
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_MECHANISM mechanism = {mech, NULL, 0};
    unsigned char input[64];
    unsigned char sig[1024];
    CK_ULONG input_len = 32, sig_len = sizeof(sig);
    unsigned long result = (unsigned long)-1;
    CK_RV rv;

    fl = loaded_module(hsm, &lib);
    if (fl == NULL || token_slot(fl, token_label, &slot) != 0)
        goto out;
    rv = fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &session);
    if (rv != CKR_OK) {
        result = rv;
        goto out;
    }
    if (fl->C_FindObjectsInit(session, find, 2) != CKR_OK)
        goto out;
    rv = fl->C_FindObjects(session, &key, 1, &found);
    (void)fl->C_FindObjectsFinal(session); /* ends the search whatever it found */
    if (rv != CKR_OK || found != 1)
        goto out; /* not logged in here, or no such key: nothing to conclude */
    memset(input, 0x5a, sizeof(input));
    if (mech == CKM_RSA_PKCS_PSS) {
        int sha384 = strcasecmp(md, "SHA384") == 0, sha512 = strcasecmp(md, "SHA512") == 0;
        pss.hashAlg = sha512 ? CKM_SHA512 : sha384 ? CKM_SHA384 : CKM_SHA256;
        pss.mgf = sha512 ? CKG_MGF1_SHA512 : sha384 ? CKG_MGF1_SHA384 : CKG_MGF1_SHA256;
        pss.sLen = sha512 ? 64 : sha384 ? 48 : 32;
        input_len = pss.sLen;
        mechanism.pParameter = &pss;
        mechanism.ulParameterLen = sizeof(pss);
    }
    rv = fl->C_SignInit(session, &mechanism, key);
    if (rv != CKR_OK) {
        result = rv;
        goto out;
    }
    /* Finishes the operation (a failed C_Sign ends it too). */
    result = fl->C_Sign(session, input, input_len, sig, &sig_len);
out:
    if (session != CK_INVALID_HANDLE)
        (void)fl->C_CloseSession(session); /* our own session: nothing to lose */
    if (lib != NULL)
        (void)dlclose(lib); /* drops only the reference RTLD_NOLOAD took */
    return result;
}

void *hsm__loaded_module(const struct hsm *hsm, void **lib)
{
    *lib = NULL;
    return loaded_module(hsm, lib);
}

int hsm__token_slot(void *fl, const char *token_label, unsigned long *slot)
{
    CK_SLOT_ID id = 0;
    int rc = token_slot(fl, token_label, &id);
    *slot = id;
    return rc;
}
