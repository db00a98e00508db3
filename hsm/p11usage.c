/* SPDX-License-Identifier: Apache-2.0 */
/* What a token's private key may be used for besides signing (CKA_DECRYPT, CKA_UNWRAP,
 * CKA_DERIVE), read, and for keys pkiva generates cleared, through the PKCS#11 module directly:
 * pkcs11-provider neither shows these attributes nor, in the version Debian 12 ships, leaves them
 * off for EC keys when asked for a digitalSignature-only key (the token's defaults apply). A key
 * that signs OCSP responses, CRLs and time stamps must not also decrypt or unwrap for whoever can
 * reach the token session.
 *
 * The module is reached as in p11diag.c: dlopen(RTLD_NOLOAD) of the instance pkcs11-provider
 * loaded, whose login is shared by every session of the process (PKCS#11 logs in per
 * application), so private keys are visible here once the provider has logged in to find or make
 * them. Nothing here logs in or out, or finalises a module it did not initialise. */
#include "hsm_int.h"

#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <stdlib.h>
#include <string.h>

#define TOKEN_LABEL_LEN 32 /* CK_TOKEN_INFO.label: blank-padded, not NUL-terminated */
#define SLOTS_MAX 256
#define KEYS_MAX 16 /* private keys one label and id may match; a token holds one */

struct p11 {
    void *lib;
    CK_FUNCTION_LIST_PTR fl;
    int we_initialised;
};

static void p11_close(struct p11 *p)
{
    if (p->we_initialised)
        (void)p->fl->C_Finalize(NULL); /* restores the state we found; nothing to do if it fails */
    if (p->lib != NULL)
        (void)dlclose(p->lib); /* drops only the reference RTLD_NOLOAD took */
}

static int p11_open(const struct hsm *hsm, struct p11 *p)
{
    CK_C_GetFunctionList get_function_list = NULL;
    CK_C_INITIALIZE_ARGS init_args;
    CK_RV rv;

    memset(p, 0, sizeof(*p));
    p->lib = dlopen(hsm->module_path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
    if (p->lib == NULL)
        return UTIL_EINVAL;
    /* POSIX's sanctioned way to turn dlsym's object pointer into a function pointer. */
    *(void **)(&get_function_list) = dlsym(p->lib, "C_GetFunctionList");
    if (get_function_list == NULL || get_function_list(&p->fl) != CKR_OK || p->fl == NULL) {
        p11_close(p);
        return UTIL_EINVAL;
    }
    memset(&init_args, 0, sizeof(init_args));
    init_args.flags = CKF_OS_LOCKING_OK;
    rv = p->fl->C_Initialize(&init_args);
    if (rv == CKR_OK) {
        p->we_initialised = 1;
    } else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        p11_close(p);
        return UTIL_EINVAL;
    }
    return UTIL_OK;
}

/* The slot holding the token labelled token_label (NULL: the first token present). */
static int find_slot(struct p11 *p, const char *token_label, CK_SLOT_ID *out)
{
    CK_SLOT_ID *slots = NULL;
    CK_ULONG count = 0;
    int rc = UTIL_ENOTFOUND;

    if (p->fl->C_GetSlotList(CK_TRUE, NULL, &count) != CKR_OK || count == 0 || count > SLOTS_MAX)
        return UTIL_ENOTFOUND;
    slots = calloc(count, sizeof(*slots));
    if (slots == NULL)
        return UTIL_ENOMEM;
    if (p->fl->C_GetSlotList(CK_TRUE, slots, &count) != CKR_OK)
        count = 0;
    for (CK_ULONG i = 0; i < count && rc != UTIL_OK; i++) {
        CK_TOKEN_INFO info;
        size_t len = token_label != NULL ? strlen(token_label) : 0;
        if (p->fl->C_GetTokenInfo(slots[i], &info) != CKR_OK)
            continue;
        if (token_label == NULL ||
            (len <= TOKEN_LABEL_LEN && memcmp(info.label, token_label, len) == 0 &&
             (len == TOKEN_LABEL_LEN || info.label[len] == ' '))) {
            *out = slots[i];
            rc = UTIL_OK;
        }
    }
    free(slots);
    return rc;
}

/* One boolean attribute; a token that does not know it for this key type (CKR_ATTRIBUTE_TYPE_
 * INVALID) does not allow that use. */
static int get_bool(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, CK_ATTRIBUTE_TYPE t)
{
    CK_BBOOL value = CK_FALSE;
    CK_ATTRIBUTE attr = {t, &value, sizeof(value)};
    return p->fl->C_GetAttributeValue(s, obj, &attr, 1) == CKR_OK && value == CK_TRUE;
}

static const struct {
    CK_ATTRIBUTE_TYPE type;
    unsigned bit;
} usages[] = {
    {CKA_DECRYPT, HSM_USE_DECRYPT}, {CKA_UNWRAP, HSM_USE_UNWRAP}, {CKA_DERIVE, HSM_USE_DERIVE}};

/* The uses beyond signing that obj allows; with clear, each is first set to false. */
static unsigned key_extra_uses(struct p11 *p, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE obj, int clear)
{
    unsigned extra = 0;
    for (size_t i = 0; i < sizeof(usages) / sizeof(usages[0]); i++) {
        if (!get_bool(p, s, obj, usages[i].type))
            continue;
        if (clear) {
            CK_BBOOL no = CK_FALSE;
            CK_ATTRIBUTE attr = {usages[i].type, &no, sizeof(no)};
            /* A token may refuse (CKR_ATTRIBUTE_READ_ONLY): read back below. */
            (void)p->fl->C_SetAttributeValue(s, obj, &attr, 1);
            if (!get_bool(p, s, obj, usages[i].type))
                continue;
        }
        extra |= usages[i].bit;
    }
    return extra;
}

/* The public halves (same label and id) of a key being made sign-only: encrypt and wrap are
 * turned off too, so that nothing is encrypted to a key that cannot, and should not, decrypt.
 * Best effort: the public key's attributes protect no secret. */
static void clear_public_uses(struct p11 *p, CK_SESSION_HANDLE s, CK_ATTRIBUTE *find,
                              CK_ULONG n_find)
{
    static const CK_ATTRIBUTE_TYPE types[] = {CKA_ENCRYPT, CKA_WRAP, CKA_DERIVE};
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_OBJECT_HANDLE keys[KEYS_MAX];
    CK_ULONG found = 0;

    find[0] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (p->fl->C_FindObjectsInit(s, find, n_find) != CKR_OK)
        return;
    if (p->fl->C_FindObjects(s, keys, KEYS_MAX, &found) != CKR_OK)
        found = 0;
    (void)p->fl->C_FindObjectsFinal(s); /* ends the search */
    for (CK_ULONG i = 0; i < found; i++)
        for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
            CK_BBOOL no = CK_FALSE;
            CK_ATTRIBUTE attr = {types[t], &no, sizeof(no)};
            if (get_bool(p, s, keys[i], types[t]))
                (void)p->fl->C_SetAttributeValue(s, keys[i], &attr, 1); /* best effort */
        }
}

int hsm__key_extra_uses(const struct hsm *hsm, const char *token_label, const char *label,
                        const unsigned char *id, size_t id_len, int clear, unsigned *extra)
{
    struct p11 p;
    CK_SLOT_ID slot = 0;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE find[3];
    CK_ULONG n_find = 0, found = 0;
    CK_OBJECT_HANDLE keys[KEYS_MAX];
    int rc;

    *extra = 0;
    if (label == NULL && id_len == 0)
        return UTIL_EINVAL; /* the URI names no key this can find on its own */
    rc = p11_open(hsm, &p);
    if (rc != UTIL_OK)
        return rc;
    rc = find_slot(&p, token_label, &slot);
    if (rc != UTIL_OK)
        goto out;
    rc = UTIL_EINVAL;
    if (p.fl->C_OpenSession(slot, CKF_SERIAL_SESSION | (clear ? CKF_RW_SESSION : 0), NULL, NULL,
                            &session) != CKR_OK)
        goto out;
    find[n_find++] = (CK_ATTRIBUTE){CKA_CLASS, &cls, sizeof(cls)};
    if (label != NULL)
        find[n_find++] = (CK_ATTRIBUTE){CKA_LABEL, (void *)label, strlen(label)};
    if (id_len > 0)
        find[n_find++] = (CK_ATTRIBUTE){CKA_ID, (void *)id, id_len};
    if (p.fl->C_FindObjectsInit(session, find, n_find) != CKR_OK)
        goto out;
    if (p.fl->C_FindObjects(session, keys, KEYS_MAX, &found) != CKR_OK)
        found = 0;
    (void)p.fl->C_FindObjectsFinal(session); /* ends the search; nothing else depends on it */
    if (found == 0)
        goto out; /* not visible (no login shared yet): nothing concluded */
    for (CK_ULONG i = 0; i < found; i++)
        *extra |= key_extra_uses(&p, session, keys[i], clear);
    if (clear)
        clear_public_uses(&p, session, find, n_find);
    rc = UTIL_OK;
out:
    if (session != CK_INVALID_HANDLE)
        (void)p.fl->C_CloseSession(session); /* our own session only */
    p11_close(&p);
    return rc;
}
