/* SPDX-License-Identifier: Apache-2.0 */
/* The signing threads' direct path to the token for ECDSA keys: C_SignInit + C_Sign on a PKCS#11
 * session of the thread's own, in the very module instance pkcs11-provider loaded and logged into.
 *
 * DESIGN
 * - Why: pkcs11-provider takes a session from its pool for every operation and checks it with
 *   C_GetSessionInfo, which in SoftHSM2 takes the same global mutex as C_SignInit; with two
 *   signing threads that and the provider's layers cost pkiva's signing path 1.21x the raw
 *   C_Sign loop's CPU per P-256 signature (bench/run, hsm_sign next to p11sign), a third of the
 *   gap between a live-signed answer and the token's own cost. Here each signing thread keeps one
 *   session per token (up to DIRECT_TOKENS) and, per key, the object to sign with: no pool, no
 *   session check, no EVP layers.
 * - What stays the same: the key is the token's (found by the URI's token, object and id in the
 *   thread's session; with the module's consent a session copy of it, CKA_TOKEN false, as
 *   pkcs11-provider itself makes with its default key caching and as bench/p11sign does: the
 *   private key never leaves the token). The digest is made in software as before, the token signs
 *   it with CKM_ECDSA, and key.c verifies the result exactly as it verifies the provider's.
 * - The module: reached with dlopen(RTLD_NOLOAD) at hsm_open, after the provider loaded and
 *   initialised it ("early"), so that login state is shared; when that instance cannot be found
 *   (PKCS11_PROVIDER_MODULE pointing elsewhere, say) or [hsm] direct = no, only the provider
 *   signs. Nothing here ever logs in, finalises or unloads the module.
 * - Failures: anything unexpected (no slot, no session, the key not found, C_SignInit or C_Sign
 *   refused) closes the thread's session and answers UTIL_ENOTFOUND: key.c then signs through the
 *   provider, whose path owns the whole outage story (key reload, health, the monitor). After a
 *   failure the thread leaves the direct path alone for DIRECT_BACKOFF signatures, so a token that
 *   is down costs one failed call per thread now and then, not one per signature.
 * - RSA keys always go through the provider: their token operation costs a millisecond or more,
 *   next to which the provider's layers do not show. */
#include "hsm_int.h"

#include <dlfcn.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#define DIRECT_BACKOFF 4096 /* signatures through the provider after a failure, per thread */
#define DIRECT_TOKENS 4     /* tokens (slots) a thread keeps a session on; keys beyond: provider */
#define LABEL_MAX 256

struct hsm__direct {
    struct {
        CK_SLOT_ID slot;
        CK_SESSION_HANDLE session; /* CK_INVALID_HANDLE: entry unused */
    } token[DIRECT_TOKENS];
    struct {
        uint64_t key_id;           /* hsm__key.id */
        EVP_PKEY *pkey;            /* the key->pkey it was found for (reloads swap it) */
        CK_SESSION_HANDLE session; /* of the key's token */
        CK_OBJECT_HANDLE obj;      /* what C_SignInit gets */
        int copied;                /* obj is our session copy */
    } slot[HSM__CTX_SLOTS];
    unsigned next;
    unsigned backoff; /* signatures left to the provider after a failure */
};

void hsm__direct_open(struct hsm *hsm, int enabled)
{
    hsm->direct_fl = NULL;
    hsm->direct_lib = NULL;
    if (!enabled)
        return;
    hsm->direct_fl = hsm__loaded_module(hsm, &hsm->direct_lib);
    if (hsm->direct_fl == NULL) {
        if (hsm->direct_lib != NULL)
            (void)dlclose(hsm->direct_lib);
        hsm->direct_lib = NULL;
        UTIL_INFO(HSM_MOD,
                  "PKCS#11 module %s: ECDSA signatures go through pkcs11-provider only "
                  "(its loaded instance was not found)",
                  hsm->module_path);
    }
}

void hsm__direct_close(struct hsm *hsm)
{
    if (hsm->direct_lib != NULL)
        (void)dlclose(hsm->direct_lib); /* drops only the reference RTLD_NOLOAD took */
    hsm->direct_lib = NULL;
    hsm->direct_fl = NULL;
}

/* Closes the thread's sessions (their session objects go with them) and forgets every key. */
static void direct_reset(const struct hsm *hsm, struct hsm__direct *d)
{
    CK_FUNCTION_LIST_PTR fl = hsm->direct_fl;

    for (unsigned i = 0; i < DIRECT_TOKENS; i++)
        if (d->token[i].session != CK_INVALID_HANDLE && fl != NULL)
            (void)fl->C_CloseSession(d->token[i].session); /* a dead one is as good as closed */
    memset(d->token, 0, sizeof(d->token));                 /* CK_INVALID_HANDLE is 0 */
    memset(d->slot, 0, sizeof(d->slot));
}

void hsm__direct_free(const struct hsm *hsm, struct hsm__direct *d)
{
    if (d == NULL)
        return;
    direct_reset(hsm, d);
    free(d);
}

/* Key lookups (find, then copy) of every signing thread, one at a time. While SoftHSM2 makes a
 * session copy (C_CopyObject), the new object carries CKA_TOKEN true, so a C_FindObjects for the
 * token object in another session finds two: with two signing threads looking a key up at once,
 * about one start in twenty left a thread on the provider for DIRECT_BACKOFF signatures
 * (hsm_open.first_lookups_on_both_threads_at_once_stay_direct). Copies made by others
 * (pkcs11-provider caching a key it loads) can still overlap a lookup: it is tried LOOKUP_TRIES
 * times. */
static pthread_mutex_t lookup_mu = PTHREAD_MUTEX_INITIALIZER;
#define LOOKUP_TRIES 3

/* The private key of entry's URI in the thread's session (a session copy when the module makes
 * one); CK_INVALID_HANDLE when it is not found exactly once. */
static CK_OBJECT_HANDLE find_key(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE session,
                                 const char *uri, int *copied)
{
    char label[LABEL_MAX], id[LABEL_MAX];
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    /* The token object only: session copies (other threads', pkcs11-provider's) share its label
     * and id and are visible to every session of the process. */
    CK_ATTRIBUTE find[4] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_TOKEN, &yes, sizeof(yes)}};
    CK_ATTRIBUTE copy[1] = {{CKA_TOKEN, &no, sizeof(no)}};
    CK_OBJECT_HANDLE objs[2], copy_obj = CK_INVALID_HANDLE;
    CK_ULONG n_find = 2, found = 0;
    int has_label = hsm__uri_get_attr(uri, "object", label, sizeof(label));
    int has_id = hsm__uri_get_attr(uri, "id", id, sizeof(id));
    CK_RV rv;

    *copied = 0;
    if (has_label < 0 || has_id < 0 || (has_label == 0 && has_id == 0))
        return CK_INVALID_HANDLE;
    if (has_label == 1)
        find[n_find++] = (CK_ATTRIBUTE){CKA_LABEL, label, strlen(label)};
    if (has_id == 1)
        find[n_find++] = (CK_ATTRIBUTE){CKA_ID, id, strlen(id)};
    if (fl->C_FindObjectsInit(session, find, n_find) != CKR_OK)
        return CK_INVALID_HANDLE;
    rv = fl->C_FindObjects(session, objs, 2, &found);
    (void)fl->C_FindObjectsFinal(session); /* ends the search whatever it found */
    if (rv != CKR_OK || found != 1)
        return CK_INVALID_HANDLE;
    if (fl->C_CopyObject(session, objs[0], copy, 1, &copy_obj) == CKR_OK) {
        *copied = 1;
        return copy_obj;
    }
    return objs[0];
}

/* The thread's session on the token of uri, opened when it has none yet; CK_INVALID_HANDLE when
 * the token is not found or the thread already keeps DIRECT_TOKENS sessions on other tokens. */
static CK_SESSION_HANDLE token_session(CK_FUNCTION_LIST_PTR fl, struct hsm__direct *d,
                                       const char *uri)
{
    char token[LABEL_MAX];
    CK_SLOT_ID slot;
    unsigned i, free_i = DIRECT_TOKENS;

    if (hsm__uri_get_attr(uri, "token", token, sizeof(token)) != 1 ||
        hsm__token_slot(fl, token, &slot) != 0)
        return CK_INVALID_HANDLE;
    for (i = 0; i < DIRECT_TOKENS; i++) {
        if (d->token[i].session == CK_INVALID_HANDLE)
            free_i = free_i < DIRECT_TOKENS ? free_i : i;
        else if (d->token[i].slot == slot)
            return d->token[i].session;
    }
    if (free_i == DIRECT_TOKENS || fl->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
                                                     &d->token[free_i].session) != CKR_OK) {
        if (free_i < DIRECT_TOKENS)
            d->token[free_i].session = CK_INVALID_HANDLE;
        return CK_INVALID_HANDLE;
    }
    d->token[free_i].slot = slot;
    return d->token[free_i].session;
}

/* The thread's object for entry and the session to use it in, finding the key when needed. */
static CK_OBJECT_HANDLE direct_key(const struct hsm *hsm, struct hsm__direct *d,
                                   const struct hsm__key *entry, CK_SESSION_HANDLE *session,
                                   int *fresh)
{
    CK_FUNCTION_LIST_PTR fl = hsm->direct_fl;
    CK_OBJECT_HANDLE obj;
    unsigned i;
    int copied;

    for (i = 0; i < HSM__CTX_SLOTS; i++)
        if (d->slot[i].obj != CK_INVALID_HANDLE && d->slot[i].key_id == entry->id &&
            d->slot[i].pkey == entry->pub.pkey) {
            *session = d->slot[i].session;
            return d->slot[i].obj;
        }
    *session = token_session(fl, d, entry->pub.uri);
    if (*session == CK_INVALID_HANDLE)
        return CK_INVALID_HANDLE;
    obj = CK_INVALID_HANDLE;
    for (int tries = 0; tries < LOOKUP_TRIES && obj == CK_INVALID_HANDLE; tries++) {
        if (tries > 0)
            (void)sched_yield(); /* another copier's object is on its way out of the search */
        pthread_mutex_lock(&lookup_mu);
        obj = find_key(fl, *session, entry->pub.uri, &copied);
        pthread_mutex_unlock(&lookup_mu);
    }
    if (obj == CK_INVALID_HANDLE)
        return CK_INVALID_HANDLE;
    *fresh = 1;
    /* The slot of the same key (its pkey was swapped), else the next one round the ring. */
    for (i = 0; i < HSM__CTX_SLOTS && d->slot[i].key_id != entry->id; i++)
        ;
    if (i == HSM__CTX_SLOTS)
        i = d->next++ % HSM__CTX_SLOTS;
    if (d->slot[i].copied && d->slot[i].obj != CK_INVALID_HANDLE)
        (void)fl->C_DestroyObject(d->slot[i].session, d->slot[i].obj); /* the old copy */
    d->slot[i].key_id = entry->id;
    d->slot[i].pkey = entry->pub.pkey;
    d->slot[i].session = *session;
    d->slot[i].obj = obj;
    d->slot[i].copied = copied;
    return obj;
}

/* r || s (two halves of equal length) -> DER ECDSA-Sig-Value, malloc'd. */
static int ecdsa_der(const unsigned char *raw, size_t len, unsigned char **out, size_t *out_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)(len / 2), NULL);
    BIGNUM *s = BN_bin2bn(raw + len / 2, (int)(len / 2), NULL);
    unsigned char *der = NULL, *p;
    int n, rc = UTIL_ENOMEM;

    if (sig == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(sig, r, s) != 1)
        goto out;
    r = s = NULL; /* sig owns them */
    n = i2d_ECDSA_SIG(sig, NULL);
    if (n <= 0 || (der = malloc((size_t)n)) == NULL)
        goto out;
    p = der;
    if (i2d_ECDSA_SIG(sig, &p) != n)
        goto out;
    *out = der;
    *out_len = (size_t)n;
    der = NULL;
    rc = UTIL_OK;
out:
    free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return rc;
}

int hsm__direct_sign(const struct hsm *hsm, struct hsm__sign_cache *c, const struct hsm__key *entry,
                     const unsigned char *digest, size_t digest_len, unsigned char **sig,
                     size_t *sig_len, int *fresh)
{
    CK_FUNCTION_LIST_PTR fl = hsm->direct_fl;
    CK_MECHANISM mech = {CKM_ECDSA, NULL, 0};
    unsigned char raw[2 * 66]; /* r || s of P-521 at most */
    CK_ULONG raw_len = sizeof(raw);
    CK_OBJECT_HANDLE obj;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    struct hsm__direct *d;
    const char *step;
    CK_RV rv = CKR_OK;

    *fresh = 0;
    if (fl == NULL || c == NULL || entry->is_rsa)
        return UTIL_ENOTFOUND;
    if (c->direct == NULL) {
        c->direct = calloc(1, sizeof(*c->direct)); /* CK_INVALID_HANDLE is 0 */
        if (c->direct == NULL)
            return UTIL_ENOTFOUND;
    }
    d = c->direct;
    if (d->backoff > 0) {
        d->backoff--;
        return UTIL_ENOTFOUND;
    }
    obj = direct_key(hsm, d, entry, &session, fresh);
    if (obj == CK_INVALID_HANDLE) {
        step = "finding the key in the thread's session";
        goto fail;
    }
    rv = fl->C_SignInit(session, &mech, obj);
    if (rv != CKR_OK) {
        step = "C_SignInit";
        goto fail;
    }
    rv = fl->C_Sign(session, (CK_BYTE_PTR)digest, (CK_ULONG)digest_len, raw, &raw_len);
    if (rv != CKR_OK || raw_len == 0 || raw_len % 2 != 0) {
        step = "C_Sign"; /* a failed C_Sign ends the operation */
        goto fail;
    }
    return ecdsa_der(raw, raw_len, sig, sig_len);
fail:
    UTIL_DEBUG(HSM_MOD,
               "%s: direct path: %s failed (CK_RV 0x%lx); pkcs11-provider signs the next %d",
               entry->pub.uri, step, (unsigned long)rv, DIRECT_BACKOFF);
    direct_reset(hsm, d);
    d->backoff = DIRECT_BACKOFF;
    return UTIL_ENOTFOUND;
}
