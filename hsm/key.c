/* SPDX-License-Identifier: Apache-2.0 */
/* Token keys: finding them by PKCS#11 URI through OSSL_STORE, generating them inside the token with
 * pkcs11-provider, and building the digest-sign contexts that OpenSSL's X509/CRL/OCSP/CMS signing
 * code uses unchanged. Every function here may talk to the token and so runs on a signing thread
 * or in start-up code.
 *
 * pkcs11-provider reports no error when a lookup finds nothing, whatever the reason (wrong PIN,
 * missing token, absent key). hsm_key_load_blocking therefore explains an empty result itself:
 * token presence and PIN flags from p11diag.c, then whether the key's public half is visible
 * without login. Only a key that is truly absent from a usable token is UTIL_ENOTFOUND.
 *
 * DESIGN: one signing path, every signature checked (issue 21).
 * - Path. Every signature pkiva serves (OCSP responses, CRLs, time-stamp tokens) is made by
 *   sign_digest below: the data is hashed in software (default provider), and the token signs
 *   only the digest through EVP_PKEY_sign. For RSA PKCS#1 v1.5 the DigestInfo is built here (a
 *   constant DER prefix per digest, taken once from OpenSSL's X509_SIG encoder) and handed to the
 *   token as is, so the mechanism is plain CKM_RSA_PKCS; RSASSA-PSS uses CKM_RSA_PKCS_PSS with
 *   the digest, ECDSA CKM_ECDSA. We do not use EVP_DigestSign on a token key: pkcs11-provider 1.0
 *   maps it to CKM_SHA256_RSA_PKCS and friends, and on a token without those (openCryptoki
 *   3.8.1) falls back to software hashing plus CKM_RSA_PKCS *without* the DigestInfo: every RSA
 *   signature was invalid and nothing noticed. Building the DigestInfo ourselves instead of
 *   setting the signature digest on the EVP_PKEY_CTX means the bytes the token signs do not
 *   depend on which provider version decides how to pad; CKM_RSA_PKCS, CKM_RSA_PKCS_PSS and
 *   CKM_ECDSA are the mechanisms every token we know has. The token sees 32-64 bytes, not the
 *   whole TBS, which also keeps a network HSM's round trip small.
 * - OpenSSL's structure builders (OCSP_basic_sign_ctx, TS_RESP_create_response) insist on the
 *   token key itself (they compare it with the certificate) and sign through EVP_DigestSign; the
 *   callers replace that signature with one from hsm_sign_blocking over the same bytes, so no
 *   served signature comes from anywhere else. Those builders run only to learn a response
 *   template (once per signer) or for a signer without one, so the extra signature is rare.
 * - Verification. Before a signature leaves this file it is verified in software against the
 *   key's public key: the certificate's, once hsm_key_check_blocking bound it (else the token's
 *   public half). Always for RSA (cheap, and it also stops the RSA-CRT fault attack: a faulty
 *   CRT signature leaks the key), for ECDSA one in ecdsa_verify_every (default 16, the first of
 *   each key always; [hsm] verify_ecdsa). A signature that fails is never returned.
 * - Health per key. A bad signature or a key-specific PKCS#11 error (CKR_MECHANISM_INVALID,
 *   CKR_KEY_TYPE_INCONSISTENT, ...) marks that key HSM_KEY_UNHEALTHY and sets hsm__key_fault so
 *   that the job wrapper does not declare the whole token down; the other keys keep signing.
 *   The monitor runs the self-check again on unhealthy keys and clears the mark once it passes.
 *   A key whose start-up self-check fails is HSM_KEY_FAILED for good. Token-wide errors
 *   (CKR_DEVICE_REMOVED, sessions gone, ...) keep the outage handling of hsm.c. Health is a
 *   relaxed-enough atomic per key; the reason text sits under a small mutex. */
#include "hsm_int.h"

#include <ctype.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define URI_SCHEME "pkcs11:"
#define URI_MAX 1024
#define TOKEN_LABEL_MAX 32 /* CK_TOKEN_INFO.label */
#define KEY_LABEL_MAX 128
#define STORE_LOADS_MAX 1024 /* objects looked at per lookup; a token holds far fewer per URI */

_Thread_local int hsm__key_fault;
_Thread_local int hsm__refused, hsm__signed;
_Thread_local struct hsm__sign_cache *hsm__thread_cache;

/* ---- PKCS#11 URIs (RFC 7512) ---------------------------------------------------------------- */

/* Percent-encodes value for a URI path attribute: unreserved characters stay, everything else
 * (and everything, when all is set, as for binary ids) becomes %XX. */
static int pct_encode(const unsigned char *value, size_t len, int all, char *out, size_t out_len)
{
    static const char hex[] = "0123456789abcdef";
    size_t used = 0;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = value[i];
        if (!all && (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~')) {
            if (used + 1 >= out_len)
                return UTIL_EINVAL;
            out[used++] = (char)c;
            continue;
        }
        if (used + 3 >= out_len)
            return UTIL_EINVAL;
        out[used++] = '%';
        out[used++] = hex[c >> 4];
        out[used++] = hex[c & 15];
    }
    out[used] = '\0';
    return UTIL_OK;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Finds path attribute name in uri and percent-decodes its value into out. Returns 1 when found,
 * 0 when absent, UTIL_EINVAL when malformed or too long. */
int hsm__uri_get_attr(const char *uri, const char *name, char *out, size_t out_len)
{
    const char *path = uri + strlen(URI_SCHEME);
    size_t path_len = strcspn(path, "?");
    size_t name_len = strlen(name);
    const char *seg = path;

    while (seg < path + path_len) {
        size_t seg_len = strcspn(seg, ";?");
        if (seg_len > name_len && strncmp(seg, name, name_len) == 0 && seg[name_len] == '=') {
            const char *v = seg + name_len + 1;
            const char *end = seg + seg_len;
            size_t used = 0;
            while (v < end) {
                int c = (unsigned char)*v;
                if (c == '%') {
                    int hi = end - v >= 3 ? hex_value(v[1]) : -1;
                    int lo = end - v >= 3 ? hex_value(v[2]) : -1;
                    if (hi < 0 || lo < 0)
                        return UTIL_EINVAL;
                    c = hi * 16 + lo;
                    v += 3;
                } else {
                    v++;
                }
                if (c == 0 || used + 1 >= out_len)
                    return UTIL_EINVAL;
                out[used++] = (char)c;
            }
            out[used] = '\0';
            return 1;
        }
        seg += seg_len;
        if (*seg == ';')
            seg++;
    }
    return 0;
}

/* Returns a malloc'd copy of uri with any "type" path attribute replaced by type=<type>. */
static int uri_with_type(const char *uri, const char *type, char **out)
{
    const char *path = uri + strlen(URI_SCHEME);
    size_t path_len = strcspn(path, "?");
    size_t cap = strlen(uri) + strlen(type) + 8;
    char *res = NULL;
    size_t used;
    const char *seg = path;

    res = malloc(cap);
    if (res == NULL)
        return UTIL_ENOMEM;
    memcpy(res, URI_SCHEME, strlen(URI_SCHEME));
    used = strlen(URI_SCHEME);
    while (seg < path + path_len) {
        size_t seg_len = strcspn(seg, ";?");
        if (seg_len > 0 && strncmp(seg, "type=", 5) != 0) {
            if (used > strlen(URI_SCHEME))
                res[used++] = ';';
            memcpy(res + used, seg, seg_len);
            used += seg_len;
        }
        seg += seg_len;
        if (*seg == ';')
            seg++;
    }
    used += (size_t)snprintf(res + used, cap - used, "%stype=%s",
                             used > strlen(URI_SCHEME) ? ";" : "", type);
    /* The query part ("?module-path=..." etc.) is kept as it was. */
    if (path[path_len] == '?')
        (void)snprintf(res + used, cap - used, "%s", path + path_len); /* fits: cap counts it */
    *out = res;
    return UTIL_OK;
}

static int check_uri(const char *uri)
{
    if (uri == NULL || strncasecmp(uri, URI_SCHEME, strlen(URI_SCHEME)) != 0) {
        UTIL_ERROR(HSM_MOD, "not a PKCS#11 URI: %.64s", uri != NULL ? uri : "(null)");
        return UTIL_EINVAL;
    }
    if (strlen(uri) > URI_MAX) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 URI longer than %d bytes", URI_MAX);
        return UTIL_EINVAL;
    }
    /* URIs get logged; a PIN inside one would end up in the log. The PIN comes from pin_file. */
    if (strstr(uri, "pin-value") != NULL || strstr(uri, "pin-source") != NULL) {
        UTIL_ERROR(HSM_MOD, "PKCS#11 URIs must not carry a PIN (use pin_file)");
        return UTIL_EINVAL;
    }
    return UTIL_OK;
}

/* ---- OSSL_STORE lookups --------------------------------------------------------------------- */

/* Looks up the first object of type expect (OSSL_STORE_INFO_PKEY or _PUBKEY) at uri. Returns 0
 * and *out (caller frees), UTIL_ENOTFOUND, UTIL_EHSM when the store cannot be opened at all, or
 * UTIL_ENOMEM. *pin_asked tells whether the provider wanted a PIN typed in. */
static int store_find(struct hsm *hsm, const char *uri, int expect, EVP_PKEY **out, int *pin_asked,
                      enum util_log_level open_level)
{
    UI_METHOD *ui = NULL;
    OSSL_STORE_CTX *store = NULL;
    OSSL_STORE_INFO *info = NULL;
    int rc = UTIL_ENOTFOUND;

    *out = NULL;
    ui = hsm__no_prompt_ui();
    ERR_clear_error();
    store = OSSL_STORE_open_ex(uri, hsm->libctx, NULL, ui, pin_asked, NULL, NULL, NULL);
    if (store == NULL) {
        util_log_openssl(open_level, HSM_MOD, "cannot open %s", uri);
        rc = UTIL_EHSM;
        goto out;
    }
    if (!OSSL_STORE_expect(store, expect)) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "OSSL_STORE_expect failed for %s", uri);
        rc = UTIL_EHSM;
        goto out;
    }
    for (int loads = 0; loads < STORE_LOADS_MAX && !OSSL_STORE_eof(store); loads++) {
        EVP_PKEY *pkey = NULL;

        info = OSSL_STORE_load(store);
        if (info == NULL) {
            if (OSSL_STORE_error(store))
                break;
            continue;
        }
        if (expect == OSSL_STORE_INFO_PKEY)
            pkey = OSSL_STORE_INFO_get1_PKEY(info);
        else
            pkey = OSSL_STORE_INFO_get1_PUBKEY(info);
        OSSL_STORE_INFO_free(info);
        info = NULL;
        if (pkey != NULL) {
            *out = pkey;
            rc = UTIL_OK;
            break;
        }
    }
    if (rc == UTIL_ENOTFOUND)
        util_log_openssl(UTIL_LOG_DEBUG, HSM_MOD, "nothing found at %s", uri);
out:
    OSSL_STORE_INFO_free(info);
    if (store != NULL)
        (void)OSSL_STORE_close(store); /* read-only lookup: nothing to lose */
    return rc;
}

/* A lookup of a private key found nothing: say why. Returns UTIL_EHSM when the token is missing or
 * will not let us log in, UTIL_ENOTFOUND when the key is simply not there, or UTIL_ENOMEM. */
static int explain_not_found(struct hsm *hsm, const char *uri, int pin_asked)
{
    char token[TOKEN_LABEL_MAX * 3 + 1];
    char *public_uri = NULL;
    EVP_PKEY *pub = NULL;
    int pin_failed = 0;
    int unused = 0;
    int rc = UTIL_ENOTFOUND;

    if (hsm__uri_get_attr(uri, "token", token, sizeof(token)) == 1) {
        rc = hsm__token_check(hsm, token, &pin_failed);
        if (rc == UTIL_EHSM || rc == UTIL_ENOMEM)
            goto out;
        rc = UTIL_ENOTFOUND;
    }
    /* Public keys are visible without login: one that is there while its private half is not means
     * the login failed (or the private half was deleted, which is no better). */
    rc = uri_with_type(uri, "public", &public_uri);
    if (rc != UTIL_OK)
        goto out;
    rc = store_find(hsm, public_uri, OSSL_STORE_INFO_PUBKEY, &pub, &unused, UTIL_LOG_ERROR);
    if (rc == UTIL_OK) {
        UTIL_ERROR(HSM_MOD,
                   "%s: the public key is on the token but the private key is not accessible: "
                   "login failed%s",
                   uri, pin_failed || pin_asked ? " (the token refused the PIN)" : " (wrong PIN?)");
        rc = UTIL_EHSM;
        goto out;
    }
    if (rc != UTIL_ENOTFOUND)
        goto out;
    if (pin_asked) {
        UTIL_ERROR(HSM_MOD, "%s: the token refused the configured PIN", uri);
        rc = UTIL_EHSM;
        goto out;
    }
    rc = UTIL_ENOTFOUND;
out:
    EVP_PKEY_free(pub);
    free(public_uri);
    return rc;
}

/* ---- verification and health -------------------------------------------------------------- */

static struct hsm__key *entry_of(const struct hsm_key *key)
{
    return (struct hsm__key *)key; /* pub is the first member; the atomics need a mutable object */
}

/* The mechanism sign_digest uses for this key, for messages. */
static const char *mechanism_name(const struct hsm_key *key)
{
    if (EVP_PKEY_is_a(key->pkey, "RSA"))
        return key->rsa_pss ? "CKM_RSA_PKCS_PSS" : "CKM_RSA_PKCS";
    return "CKM_ECDSA";
}

static void set_why(struct hsm__key *entry, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void set_why(struct hsm__key *entry, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&entry->why_mutex);
    va_start(ap, fmt);
    (void)vsnprintf(entry->why, sizeof(entry->why), fmt, ap); /* a reason may be cut short */
    va_end(ap);
    pthread_mutex_unlock(&entry->why_mutex);
}

/* The software public key to verify with, the digest, and for RSA PKCS#1 v1.5 the DigestInfo
 * prefix. The public key comes from the token's public half here; hsm_key_check_blocking may
 * replace it with the certificate's. */
static int key_verify_init(struct hsm__key *entry)
{
    struct hsm_key *key = &entry->pub;
    unsigned char *der = NULL;
    const unsigned char *p = NULL;
    X509_SIG *sig = NULL;
    X509_ALGOR *alg = NULL;
    ASN1_OCTET_STRING *digest = NULL;
    unsigned char zeros[EVP_MAX_MD_SIZE];
    int der_len, md_len;
    int rc = UTIL_ECRYPTO;

    ERR_clear_error();
    entry->is_rsa = EVP_PKEY_is_a(key->pkey, "RSA");
    entry->md = EVP_MD_fetch(NULL, key->md, NULL);
    if (entry->md == NULL)
        goto out;
    md_len = EVP_MD_get_size(entry->md);
    der_len = i2d_PUBKEY(key->pkey, &der);
    if (der_len <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "%s: the token does not give its public key",
                         key->uri);
        rc = UTIL_EHSM;
        goto out;
    }
    p = der;
    entry->verify_pub = d2i_PUBKEY_ex(NULL, &p, der_len, NULL, NULL);
    if (entry->verify_pub == NULL)
        goto out;
    if (EVP_PKEY_is_a(key->pkey, "RSA") && !key->rsa_pss) {
        /* DigestInfo ::= SEQUENCE { AlgorithmIdentifier (parameters NULL), OCTET STRING }: its
         * encoding before the digest bytes depends only on the digest (RFC 8017 9.2 note 1). */
        OPENSSL_free(der);
        der = NULL;
        memset(zeros, 0, sizeof(zeros));
        sig = X509_SIG_new();
        if (sig == NULL || md_len <= 0)
            goto out;
        X509_SIG_getm(sig, &alg, &digest);
        if (X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(entry->md)), V_ASN1_NULL, NULL) != 1 ||
            ASN1_OCTET_STRING_set(digest, zeros, md_len) != 1)
            goto out;
        der_len = i2d_X509_SIG(sig, &der);
        if (der_len <= md_len || (size_t)(der_len - md_len) > sizeof(entry->di_prefix))
            goto out;
        entry->di_prefix_len = (size_t)(der_len - md_len);
        memcpy(entry->di_prefix, der, entry->di_prefix_len);
    }
    rc = UTIL_OK;
out:
    if (rc == UTIL_ECRYPTO)
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "%s: cannot set up signature verification",
                         key->uri);
    X509_SIG_free(sig);
    OPENSSL_free(der);
    return rc;
}

/* The PKCS#11 return value pkcs11-provider put on the error queue, if any: it raises its errors
 * with the CK_RV as reason code, under a library number of its own (>= ERR_LIB_USER). */
static unsigned long queued_ckr(void)
{
    unsigned long first = ERR_peek_error();
    unsigned long last = ERR_peek_last_error();

    if (first != 0 && ERR_GET_LIB(first) >= ERR_LIB_USER && ERR_GET_REASON(first) != 0)
        return (unsigned long)ERR_GET_REASON(first);
    if (last != 0 && ERR_GET_LIB(last) >= ERR_LIB_USER && ERR_GET_REASON(last) != 0)
        return (unsigned long)ERR_GET_REASON(last);
    return 0;
}

/* Errors that concern one key and its mechanism, not the token: another key may work fine. */
static int ckr_is_key_specific(unsigned long rv)
{
    switch (rv) {
    case 0x70: /* CKR_MECHANISM_INVALID */
    case 0x71: /* CKR_MECHANISM_PARAM_INVALID */
    case 0x63: /* CKR_KEY_TYPE_INCONSISTENT */
    case 0x68: /* CKR_KEY_FUNCTION_NOT_PERMITTED */
    case 0x62: /* CKR_KEY_SIZE_RANGE */
    case 0x21: /* CKR_DATA_LEN_RANGE */
    case 0x20: /* CKR_DATA_INVALID */ return 1;
    default: return 0;
    }
}

/* Marks the key unhealthy (FAILED stays FAILED) and flags the failure as the key's own. */
static void key_unhealthy(struct hsm__key *entry)
{
    int expected = HSM_KEY_OK;

    (void)atomic_compare_exchange_strong(&entry->health, &expected, HSM_KEY_UNHEALTHY);
    hsm__key_fault = 1;
}

/* Verifies sig over digest with the key's software public key. 1: valid, 0: not, <0: error. */
static int verify_digest(struct hsm__key *entry, const unsigned char *digest, size_t digest_len,
                         const unsigned char *sig, size_t sig_len)
{
    const struct hsm_key *key = &entry->pub;
    EVP_PKEY_CTX *vctx = NULL;
    int rc = UTIL_ECRYPTO;

    ERR_clear_error();
    vctx = EVP_PKEY_CTX_new_from_pkey(NULL, entry->verify_pub, NULL);
    if (vctx == NULL || EVP_PKEY_verify_init(vctx) != 1 ||
        EVP_PKEY_CTX_set_signature_md(vctx, entry->md) != 1)
        goto out;
    if (EVP_PKEY_is_a(entry->verify_pub, "RSA")) {
        if (EVP_PKEY_CTX_set_rsa_padding(vctx, key->rsa_pss ? RSA_PKCS1_PSS_PADDING
                                                            : RSA_PKCS1_PADDING) <= 0)
            goto out;
        if (key->rsa_pss && (EVP_PKEY_CTX_set_rsa_pss_saltlen(vctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
                             EVP_PKEY_CTX_set_rsa_mgf1_md(vctx, entry->md) <= 0))
            goto out;
    }
    rc = EVP_PKEY_verify(vctx, sig, sig_len, digest, digest_len) == 1 ? 1 : 0;
    ERR_clear_error(); /* a failed verification leaves its reasons; we report our own */
out:
    if (rc < 0)
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "%s: cannot verify a signature", key->uri);
    EVP_PKEY_CTX_free(vctx);
    return rc;
}

/* Whether this signature is to be verified: all RSA, ECDSA as configured (the first always). */
static int want_verify(struct hsm *hsm, struct hsm__key *entry, int force)
{
    uint64_t n;

    if (force || entry->is_rsa)
        return 1;
    n = atomic_fetch_add_explicit(&entry->ecdsa_count, 1, memory_order_relaxed);
    if (hsm->ecdsa_verify_every == HSM_VERIFY_NONE)
        return 0;
    return hsm->ecdsa_verify_every <= 1 || n % (uint64_t)hsm->ecdsa_verify_every == 0;
}

/* What C_SignInit answers for key and its mechanism when asked directly (p11diag.c), 0 when
 * that could not be found out or was CKR_OK. */
static unsigned long ask_token(struct hsm *hsm, const struct hsm_key *key)
{
    char token[TOKEN_LABEL_MAX * 3 + 1];
    char label[KEY_LABEL_MAX * 3 + 1];
    unsigned long mech = 0x1041; /* CKM_ECDSA */
    unsigned long rv;

    if (hsm__uri_get_attr(key->uri, "token", token, sizeof(token)) != 1 ||
        hsm__uri_get_attr(key->uri, "object", label, sizeof(label)) != 1)
        return 0;
    if (EVP_PKEY_is_a(key->pkey, "RSA"))
        mech = key->rsa_pss ? 0x0d /* CKM_RSA_PKCS_PSS */ : 0x01 /* CKM_RSA_PKCS */;
    rv = hsm__sign_init_check(hsm, token, label, mech, key->md);
    return rv == (unsigned long)-1 ? 0 : rv;
}

/* A signature could not be made: finds out why (the provider's CK_RV, else the token's own answer)
 * and books it against the key when it is the key's problem. Returns UTIL_EHSM. */
static int sign_failed(struct hsm *hsm, struct hsm__key *entry, int force_verify)
{
    const struct hsm_key *key = &entry->pub;
    unsigned long ckr = queued_ckr();
    const char *ckr_name = NULL;

    /* pkcs11-provider 1.0 often leaves no CK_RV on the queue: ask the token itself. */
    if (ckr == 0 && hsm_available(hsm))
        ckr = ask_token(hsm, key);
    ckr_name = ckr != 0 ? hsm__ckr_name(ckr) : NULL;
    if (ckr_is_key_specific(ckr)) {
        (void)atomic_fetch_add_explicit(&hsm->key_errors, 1, memory_order_relaxed); /* counter */
        (void)atomic_fetch_add_explicit(&entry->errors, 1, memory_order_relaxed);
        set_why(entry, "module %s, mechanism %s: %s", hsm->module_path, mechanism_name(key),
                ckr_name != NULL ? ckr_name : "key-specific PKCS#11 error");
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD,
                         "%s cannot sign (module %s, mechanism %s: %s); the key is marked "
                         "unhealthy, the other keys keep signing",
                         key->uri, hsm->module_path, mechanism_name(key),
                         ckr_name != NULL ? ckr_name : "?");
        key_unhealthy(entry);
        return UTIL_EHSM;
    }
    if (force_verify)
        set_why(entry, "module %s, mechanism %s: %s", hsm->module_path, mechanism_name(key),
                ckr_name != NULL ? ckr_name : "signing failed");
    util_log_openssl(hsm_available(hsm) ? UTIL_LOG_ERROR : UTIL_LOG_DEBUG, HSM_MOD,
                     "signing with %s failed (mechanism %s%s%s)", key->uri, mechanism_name(key),
                     ckr_name != NULL ? ", " : "", ckr_name != NULL ? ckr_name : "");
    return UTIL_EHSM;
}

/* A context for key, ready for EVP_PKEY_sign (padding set for RSA). NULL on failure (the reason
 * on OpenSSL's error queue). */
static EVP_PKEY_CTX *sign_ctx_make(struct hsm *hsm, const struct hsm_key *key, int is_rsa)
{
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(hsm->libctx, key->pkey, NULL);

    if (pctx == NULL || EVP_PKEY_sign_init(pctx) != 1)
        goto fail;
    if (is_rsa && EVP_PKEY_CTX_set_rsa_padding(pctx, key->rsa_pss ? RSA_PKCS1_PSS_PADDING
                                                                  : RSA_PKCS1_PADDING) <= 0)
        goto fail;
    /* pkcs11-provider wants the digest set before the PSS salt length. */
    if (key->rsa_pss && (EVP_PKEY_CTX_set_signature_md(pctx, entry_of(key)->md) <= 0 ||
                         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
                         EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, entry_of(key)->md) <= 0))
        goto fail;
    return pctx;
fail:
    EVP_PKEY_CTX_free(pctx);
    return NULL;
}

/* DESIGN: a signing thread keeps its contexts. EVP_PKEY_CTX_new_from_pkey and EVP_PKEY_sign_init
 * (provider and method lookups by name, under OpenSSL's store locks) cost 3% of the instructions of
 * a live-signed P-256 answer (callgrind: 21 k of 718 k per OCSP nonce answer, 21 k of 675 k per
 * time stamp); an initialised context signs again and again (pkcs11-provider opens its PKCS#11
 * operation in each EVP_PKEY_sign). So each pool thread keeps one per key in a small cache,
 * matched by the key's id and its pkey pointer: after hsm__keys_reload swapped the pkey, or a key
 * was freed, the slot no longer matches (the context holds a reference to its pkey, so that
 * pointer cannot come back for another key) and is made again. A context that failed to sign is
 * dropped, not reused. Threads other than the pool's (start-up code) make a context each time.
 * *cached: 1 when the context belongs to the cache (the caller must not free it). */
static EVP_PKEY_CTX *sign_ctx_get(struct hsm *hsm, struct hsm__key *entry, int is_rsa, int *cached)
{
    struct hsm__sign_cache *c = hsm__thread_cache;
    EVP_PKEY_CTX *pctx;
    unsigned i;

    *cached = 0;
    if (c == NULL)
        return sign_ctx_make(hsm, &entry->pub, is_rsa);
    for (i = 0; i < HSM__CTX_SLOTS; i++)
        if (c->slot[i].ctx != NULL && c->slot[i].key_id == entry->id &&
            c->slot[i].pkey == entry->pub.pkey) {
            *cached = 1;
            return c->slot[i].ctx;
        }
    pctx = sign_ctx_make(hsm, &entry->pub, is_rsa);
    if (pctx == NULL)
        return NULL;
    /* The slot of the same key (its pkey was swapped), else the next one round the ring. */
    for (i = 0; i < HSM__CTX_SLOTS && c->slot[i].key_id != entry->id; i++)
        ;
    if (i == HSM__CTX_SLOTS)
        i = c->next++ % HSM__CTX_SLOTS;
    EVP_PKEY_CTX_free(c->slot[i].ctx);
    c->slot[i].key_id = entry->id;
    c->slot[i].pkey = entry->pub.pkey;
    c->slot[i].ctx = pctx;
    *cached = 1;
    return pctx;
}

/* Drops pctx from this thread's cache (it failed: never reused) and frees it. */
static void sign_ctx_drop(EVP_PKEY_CTX *pctx)
{
    struct hsm__sign_cache *c = hsm__thread_cache;

    for (unsigned i = 0; c != NULL && i < HSM__CTX_SLOTS; i++)
        if (c->slot[i].ctx == pctx)
            memset(&c->slot[i], 0, sizeof(c->slot[i]));
    EVP_PKEY_CTX_free(pctx);
}

void hsm__sign_cache_free(const struct hsm *hsm, struct hsm__sign_cache *c)
{
    if (c == NULL)
        return;
    hsm__direct_free(hsm, c->direct);
    for (unsigned i = 0; i < HSM__CTX_SLOTS; i++)
        EVP_PKEY_CTX_free(c->slot[i].ctx);
    free(c);
}

/* The token signs digest (see DESIGN); the result is verified as configured. */
static int sign_digest(struct hsm *hsm, struct hsm__key *entry, const unsigned char *digest,
                       size_t digest_len, int force_verify, unsigned char **sig, size_t *sig_len)
{
    const struct hsm_key *key = &entry->pub;
    unsigned char input[sizeof(entry->di_prefix) + EVP_MAX_MD_SIZE];
    const unsigned char *tbs = digest;
    size_t tbs_len = digest_len;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *buf = NULL;
    size_t buf_len = 0;
    int is_rsa = entry->is_rsa;
    int health = atomic_load(&entry->health);
    int rc = UTIL_OK, cached = 0, fresh = 0;

    *sig = NULL;
    *sig_len = 0;
    hsm__key_fault = 0; /* describes the last signature attempt of this thread */
    if (digest_len != (size_t)EVP_MD_get_size(entry->md) || digest_len > EVP_MAX_MD_SIZE)
        return UTIL_EINVAL;
    if (health != HSM_KEY_OK && !force_verify) {
        /* Refused without touching the token: the key's problem, not the token's. */
        hsm__key_fault = 1;
        hsm__refused = 1;
        return UTIL_EHSM;
    }
    if (is_rsa && !key->rsa_pss) {
        memcpy(input, entry->di_prefix, entry->di_prefix_len);
        memcpy(input + entry->di_prefix_len, digest, digest_len);
        tbs = input;
        tbs_len = entry->di_prefix_len + digest_len;
    }
    ERR_clear_error();
    if (hsm__direct_sign(hsm, hsm__thread_cache, entry, tbs, tbs_len, &buf, &buf_len, &fresh) ==
        UTIL_OK) {
        (void)atomic_fetch_add_explicit(&hsm->direct_signatures, 1, memory_order_relaxed);
        force_verify |= fresh; /* the first signature of a key found on the thread's session */
    } else {
        pctx = sign_ctx_get(hsm, entry, is_rsa, &cached);
        if (pctx == NULL)
            goto fail;
        if (EVP_PKEY_sign(pctx, NULL, &buf_len, tbs, tbs_len) != 1 || buf_len == 0)
            goto fail;
        buf = malloc(buf_len);
        if (buf == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        if (EVP_PKEY_sign(pctx, buf, &buf_len, tbs, tbs_len) != 1)
            goto fail;
    }
    hsm__signed = 1; /* the token answered, whatever the signature turns out to be */
    if (want_verify(hsm, entry, force_verify)) {
        int ok = verify_digest(entry, digest, digest_len, buf, buf_len);
        if (ok < 0) {
            rc = ok;
            goto out;
        }
        (void)atomic_fetch_add_explicit(&hsm->verified, 1, memory_order_relaxed); /* a counter */
        if (ok == 0) {
            (void)atomic_fetch_add_explicit(&hsm->bad_signatures, 1, memory_order_relaxed);
            (void)atomic_fetch_add_explicit(&entry->bad_signatures, 1, memory_order_relaxed);
            set_why(entry,
                    "module %s, mechanism %s: the token's signature does not verify with "
                    "the public key",
                    hsm->module_path, mechanism_name(key));
            UTIL_ERROR(HSM_MOD,
                       "BAD SIGNATURE from %s (module %s, mechanism %s): the token returned a "
                       "signature that does not verify with the key's public key; it is "
                       "discarded and the key is marked unhealthy",
                       key->uri, hsm->module_path, mechanism_name(key));
            key_unhealthy(entry);
            rc = UTIL_EHSM;
            goto out;
        }
    }
    (void)atomic_fetch_add_explicit(&entry->signatures, 1, memory_order_relaxed); /* a counter */
    *sig = buf;
    *sig_len = buf_len;
    buf = NULL;
    goto out;
fail:
    rc = sign_failed(hsm, entry, force_verify);
    if (cached && pctx != NULL) {
        sign_ctx_drop(pctx); /* a context that failed is never reused */
        pctx = NULL;
    }
out:
    free(buf);
    if (!cached)
        EVP_PKEY_CTX_free(pctx);
    return rc;
}

int hsm_sign_digest_blocking(struct hsm *hsm, const struct hsm_key *key,
                             const unsigned char *digest, size_t digest_len, unsigned char **sig,
                             size_t *sig_len)
{
    if (hsm == NULL || key == NULL || digest == NULL || sig == NULL || sig_len == NULL)
        return UTIL_EINVAL;
    return sign_digest(hsm, entry_of(key), digest, digest_len, 0, sig, sig_len);
}

static int sign_data(struct hsm *hsm, struct hsm__key *entry, const unsigned char *data, size_t len,
                     int force_verify, unsigned char **sig, size_t *sig_len)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;

    ERR_clear_error();
    if (EVP_Digest(data, len, digest, &digest_len, entry->md, NULL) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "hashing for %s failed", entry->pub.uri);
        return UTIL_ECRYPTO;
    }
    return sign_digest(hsm, entry, digest, digest_len, force_verify, sig, sig_len);
}

int hsm_sign_blocking(struct hsm *hsm, const struct hsm_key *key, const unsigned char *data,
                      size_t len, unsigned char **sig, size_t *sig_len)
{
    if (hsm == NULL || key == NULL || (data == NULL && len > 0) || sig == NULL || sig_len == NULL)
        return UTIL_EINVAL;
    return sign_data(hsm, entry_of(key), data, len, 0, sig, sig_len);
}

int hsm_blame_blocking(struct hsm *hsm, const struct hsm_key *key)
{
    static const unsigned char test_value[] = "pkiva: whose fault was it";
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int rc = hsm_sign_blocking(hsm, key, test_value, sizeof(test_value) - 1, &sig, &sig_len);

    free(sig);
    return rc == UTIL_OK ? UTIL_ECRYPTO : rc;
}

/* The self-check: a test value through the production path, verification forced. */
static int self_check(struct hsm *hsm, struct hsm__key *entry)
{
    static const unsigned char test_value[] = "pkiva self-check: sign and verify";
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int fault = hsm__key_fault;
    int rc;

    rc = sign_data(hsm, entry, test_value, sizeof(test_value) - 1, 1, &sig, &sig_len);
    free(sig);
    hsm__key_fault = fault; /* the caller decides what the result means */
    return rc;
}

int hsm_key_check_blocking(struct hsm *hsm, struct hsm_key *key, X509 *cert)
{
    struct hsm__key *entry = entry_of(key);
    char why[sizeof(entry->why)];
    int rc;

    if (hsm == NULL || key == NULL)
        return UTIL_EINVAL;
    if (cert != NULL) {
        EVP_PKEY *pub = X509_get0_pubkey(cert);
        ERR_clear_error();
        if (pub == NULL || EVP_PKEY_eq(pub, entry->verify_pub) != 1) {
            ERR_clear_error();
            UTIL_ERROR(HSM_MOD, "%s: the certificate's public key is not this key's", key->uri);
            return UTIL_ECONFIG;
        }
        /* From now on signatures are checked against exactly what relying parties will use. */
        if (EVP_PKEY_up_ref(pub) != 1)
            return UTIL_ENOMEM;
        EVP_PKEY_free(entry->verify_pub);
        entry->verify_pub = pub;
    }
    rc = self_check(hsm, entry);
    if (rc == UTIL_OK) {
        UTIL_INFO(HSM_MOD, "self-check passed: %s (module %s, mechanism %s, %s)", key->uri,
                  hsm->module_path, mechanism_name(key), key->md);
        return UTIL_OK;
    }
    atomic_store(&entry->health, HSM_KEY_FAILED);
    (void)hsm_key_health(key, why, sizeof(why));
    if (why[0] == '\0') {
        set_why(entry, "module %s, mechanism %s: %s", hsm->module_path, mechanism_name(key),
                util_strerror(rc));
        (void)hsm_key_health(key, why, sizeof(why));
    }
    UTIL_ERROR(HSM_MOD, "self-check FAILED, key refused: %s (%s)", key->uri, why);
    return rc == UTIL_ENOMEM ? rc : UTIL_EHSM;
}

int hsm_key_health(const struct hsm_key *key, char *why, size_t why_len)
{
    struct hsm__key *entry = entry_of(key);

    if (why != NULL && why_len > 0) {
        pthread_mutex_lock(&entry->why_mutex);
        (void)snprintf(why, why_len, "%s", entry->why); /* may be cut short */
        pthread_mutex_unlock(&entry->why_mutex);
    }
    return atomic_load(&entry->health);
}

int hsm_key_usable(const struct hsm_key *key)
{
    return key != NULL && atomic_load(&entry_of(key)->health) == HSM_KEY_OK;
}

int hsm_key_refused(const struct hsm_key *key)
{
    if (hsm_key_usable(key))
        return 0;
    hsm__key_fault = 1;
    hsm__refused = 1;
    return 1;
}

int hsm_keys_unhealthy(struct hsm *hsm, int *total, char *why, size_t why_len)
{
    int n = 0;

    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (total != NULL)
        *total = 0;
    pthread_mutex_lock(&hsm->keys_mutex);
    for (struct hsm__key *e = hsm->keys; e != NULL; e = e->next) {
        int health = atomic_load(&e->health);
        if (atomic_load(&e->probe))
            continue;
        if (total != NULL)
            (*total)++;
        if (health == HSM_KEY_OK)
            continue;
        if (n == 0 && why != NULL && why_len > 0) {
            pthread_mutex_lock(&e->why_mutex);
            (void)snprintf(why, why_len, "key %s %s: %s", e->pub.uri,
                           health == HSM_KEY_FAILED ? "failed its self-check" : "unhealthy",
                           e->why); /* may be cut short */
            pthread_mutex_unlock(&e->why_mutex);
        }
        n++;
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
    return n;
}

int hsm_keys_metrics(struct hsm *hsm, char *buf, size_t len)
{
    static const char head[] = "# TYPE pkiva_hsm_key_healthy gauge\n"
                               "# TYPE pkiva_hsm_key_signatures_total counter\n"
                               "# TYPE pkiva_hsm_key_bad_signatures_total counter\n"
                               "# TYPE pkiva_hsm_key_errors_total counter\n";
    size_t used = 0;
    int n;

    n = snprintf(buf, len, "%s", head);
    if (n < 0 || (size_t)n >= len)
        return -1;
    used = (size_t)n;
    pthread_mutex_lock(&hsm->keys_mutex);
    for (struct hsm__key *e = hsm->keys; e != NULL; e = e->next) {
        char label[URI_MAX + 1];
        size_t i;

        if (atomic_load(&e->probe))
            continue;
        /* Prometheus label values: no quote, backslash or newline (URIs percent-encode them). */
        for (i = 0; e->pub.uri[i] != '\0' && i < URI_MAX; i++)
            label[i] = e->pub.uri[i] == '"' || e->pub.uri[i] == '\\' || e->pub.uri[i] == '\n'
                           ? '_'
                           : e->pub.uri[i];
        label[i] = '\0';
        n = snprintf(buf + used, len - used,
                     "pkiva_hsm_key_healthy{key=\"%s\"} %d\n"
                     "pkiva_hsm_key_signatures_total{key=\"%s\"} %llu\n"
                     "pkiva_hsm_key_bad_signatures_total{key=\"%s\"} %llu\n"
                     "pkiva_hsm_key_errors_total{key=\"%s\"} %llu\n",
                     label, atomic_load(&e->health) == HSM_KEY_OK, label,
                     (unsigned long long)atomic_load(&e->signatures), label,
                     (unsigned long long)atomic_load(&e->bad_signatures), label,
                     (unsigned long long)atomic_load(&e->errors));
        if (n < 0 || (size_t)n >= len - used) {
            used = len; /* too small */
            break;
        }
        used += (size_t)n;
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
    return used >= len ? -1 : (int)used;
}

void hsm__keys_recheck(struct hsm *hsm)
{
    /* Under the read side of swap_lock (as a job) and the keys' mutex, so that the key can be
     * neither swapped nor freed during its one test signature. */
    (void)pthread_rwlock_rdlock(&hsm->swap_lock); /* fails only on misuse */
    pthread_mutex_lock(&hsm->keys_mutex);
    for (struct hsm__key *e = hsm->keys; e != NULL; e = e->next) {
        int expected = HSM_KEY_UNHEALTHY;
        if (atomic_load(&e->health) != HSM_KEY_UNHEALTHY)
            continue;
        if (self_check(hsm, e) == UTIL_OK &&
            atomic_compare_exchange_strong(&e->health, &expected, HSM_KEY_OK))
            UTIL_WARN(HSM_MOD, "%s passes its self-check again: healthy", e->pub.uri);
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
    (void)pthread_rwlock_unlock(&hsm->swap_lock); /* held: cannot fail */
}

/* ---- keys ----------------------------------------------------------------------------------- */

static int choose_md(struct hsm *hsm, EVP_PKEY *pkey, const char *md, int rsa_pss,
                     struct hsm_key *key)
{
    const char *default_md = NULL;
    int is_rsa = EVP_PKEY_is_a(pkey, "RSA");
    EVP_MD *fetched = NULL;

    if (is_rsa) {
        default_md = "SHA256";
    } else if (EVP_PKEY_is_a(pkey, "EC")) {
        int bits = EVP_PKEY_get_bits(pkey);
        default_md = bits <= 256 ? "SHA256" : bits <= 384 ? "SHA384" : "SHA512";
    } else {
        UTIL_ERROR(HSM_MOD, "%s: unsupported key type %s", key->uri,
                   EVP_PKEY_get0_type_name(pkey) != NULL ? EVP_PKEY_get0_type_name(pkey) : "?");
        return UTIL_EINVAL;
    }
    if (rsa_pss && !is_rsa) {
        UTIL_ERROR(HSM_MOD, "%s: RSASSA-PSS needs an RSA key", key->uri);
        return UTIL_EINVAL;
    }
    if (md == NULL)
        md = default_md;
    if (strlen(md) >= sizeof(key->md)) {
        UTIL_ERROR(HSM_MOD, "digest name too long: %.32s", md);
        return UTIL_EINVAL;
    }
    ERR_clear_error();
    fetched = EVP_MD_fetch(hsm->libctx, md, NULL);
    if (fetched == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "unknown digest %s", md);
        return UTIL_EINVAL;
    }
    EVP_MD_free(fetched);
    memcpy(key->md, md, strlen(md) + 1);
    key->rsa_pss = rsa_pss ? 1 : 0;
    return UTIL_OK;
}

/* "decrypt, unwrap" for HSM_USE_* bits, into out. */
static void extra_uses_text(unsigned extra, char *out, size_t len)
{
    (void)snprintf(out, len, "%s%s%s%s%s", extra & HSM_USE_DECRYPT ? "decrypt" : "",
                   (extra & HSM_USE_DECRYPT) && (extra & ~HSM_USE_DECRYPT) ? ", " : "",
                   extra & HSM_USE_UNWRAP ? "unwrap" : "",
                   (extra & HSM_USE_UNWRAP) && (extra & HSM_USE_DERIVE) ? ", " : "",
                   extra & HSM_USE_DERIVE ? "derive" : "");
}

/* At load: a key that allows more than signing is used all the same (refusing it would stop
 * the service over a key that works), with a warning that says how to fix it. */
static void warn_extra_uses(struct hsm *hsm, const char *uri)
{
    char token[TOKEN_LABEL_MAX + 1], label[KEY_LABEL_MAX + 1], id[KEY_LABEL_MAX + 1], text[64];
    int has_token = hsm__uri_get_attr(uri, "token", token, sizeof(token));
    int has_label = hsm__uri_get_attr(uri, "object", label, sizeof(label));
    int has_id = hsm__uri_get_attr(uri, "id", id, sizeof(id));
    unsigned extra = 0;
    int rc;

    if (has_token < 0 || has_label < 0 || has_id < 0 || (has_label != 1 && has_id != 1)) {
        UTIL_DEBUG(HSM_MOD, "%s: key usage attributes not checked (no label or id to find it)",
                   uri);
        return;
    }
    rc = hsm__key_extra_uses(hsm, has_token == 1 ? token : NULL, has_label == 1 ? label : NULL,
                             (const unsigned char *)id, has_id == 1 ? strlen(id) : 0, 0, &extra);
    if (rc != UTIL_OK) {
        UTIL_DEBUG(HSM_MOD, "%s: key usage attributes not checked: %s", uri, util_strerror(rc));
        return;
    }
    if (extra == 0)
        return;
    extra_uses_text(extra, text, sizeof(text));
    UTIL_WARN(HSM_MOD,
              "%s allows %s besides signing: a signing key should allow nothing else (set "
              "CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE false with the token's tools, or use a key "
              "generated sign-only)",
              uri, text);
}

int hsm_key_load_blocking(struct hsm *hsm, const char *uri, const char *md, int rsa_pss,
                          struct hsm_key **out)
{
    struct hsm__key *entry = NULL;
    struct hsm_key *key = NULL;
    char type[16];
    int pin_asked = 0;
    int rc;

    if (hsm == NULL || out == NULL)
        return UTIL_EINVAL;
    *out = NULL;
    rc = check_uri(uri);
    if (rc != UTIL_OK)
        goto out;
    rc = hsm__uri_get_attr(uri, "type", type, sizeof(type));
    if (rc < 0 || (rc == 1 && strcmp(type, "private") != 0)) {
        UTIL_ERROR(HSM_MOD, "%s: expected a private key URI (type=private or no type)", uri);
        rc = UTIL_EINVAL;
        goto out;
    }
    entry = calloc(1, sizeof(*entry));
    if (entry == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    key = &entry->pub;
    atomic_init(&entry->health, HSM_KEY_OK);
    atomic_init(&entry->probe, 0);
    atomic_init(&entry->signatures, 0);
    atomic_init(&entry->bad_signatures, 0);
    atomic_init(&entry->errors, 0);
    atomic_init(&entry->ecdsa_count, 0);
    (void)pthread_mutex_init(&entry->why_mutex, NULL); /* default attributes: cannot fail */
    /* Asking for the private object explicitly makes the provider log in for it. */
    rc = uri_with_type(uri, "private", &key->uri);
    if (rc != UTIL_OK)
        goto out;
    rc = store_find(hsm, key->uri, OSSL_STORE_INFO_PKEY, &key->pkey, &pin_asked, UTIL_LOG_ERROR);
    if (rc == UTIL_ENOTFOUND)
        rc = explain_not_found(hsm, key->uri, pin_asked);
    if (rc != UTIL_OK)
        goto out;
    rc = choose_md(hsm, key->pkey, md, rsa_pss, key);
    if (rc != UTIL_OK)
        goto out;
    rc = key_verify_init(entry);
    if (rc != UTIL_OK)
        goto out;
    warn_extra_uses(hsm, key->uri);
    UTIL_DEBUG(HSM_MOD, "loaded %s (%s, %d bits, %s%s)", key->uri,
               EVP_PKEY_get0_type_name(key->pkey), EVP_PKEY_get_bits(key->pkey), key->md,
               key->rsa_pss ? ", PSS" : "");
    /* Joins the live keys, so that a reload after an outage renews its handle too. */
    pthread_mutex_lock(&hsm->keys_mutex);
    entry->owner = hsm;
    entry->id = ++hsm->key_serial;
    entry->next = hsm->keys;
    if (hsm->keys != NULL)
        hsm->keys->prev = entry;
    hsm->keys = entry;
    pthread_mutex_unlock(&hsm->keys_mutex);
    *out = key;
    key = NULL;
out:
    hsm_key_free(key);
    return rc;
}

void hsm_key_free(struct hsm_key *key)
{
    struct hsm__key *entry = (struct hsm__key *)key; /* pub is its first member */

    if (key == NULL)
        return;
    if (entry->owner != NULL) {
        struct hsm *hsm = entry->owner;
        pthread_mutex_lock(&hsm->keys_mutex);
        if (entry->prev != NULL)
            entry->prev->next = entry->next;
        else
            hsm->keys = entry->next;
        if (entry->next != NULL)
            entry->next->prev = entry->prev;
        pthread_mutex_unlock(&hsm->keys_mutex);
    }
    EVP_PKEY_free(key->pkey);
    EVP_PKEY_free(entry->verify_pub);
    EVP_MD_free(entry->md);
    (void)pthread_mutex_destroy(&entry->why_mutex); /* unlocked: cannot fail */
    free(key->uri);
    free(entry);
}

void hsm__keys_detach(struct hsm *hsm)
{
    pthread_mutex_lock(&hsm->keys_mutex);
    while (hsm->keys != NULL) {
        struct hsm__key *entry = hsm->keys;
        hsm->keys = entry->next;
        entry->owner = NULL;
        entry->prev = entry->next = NULL;
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
}

/* One key of a reload: which key (pointer and id, checked again before the swap), its URI copied
 * while the list was locked, and the fresh handle. */
struct reload_item {
    struct hsm__key *entry;
    uint64_t id;
    char *uri;
    EVP_PKEY *fresh;
};

/* A reload failed: if they have failed in a row for restart_after_ms, give the process up for its
 * supervisor to restart (see "When reloading does not heal" in hsm.c). */
static void give_up_if_stale(struct hsm *hsm, const char *uri)
{
    int64_t now = util_mono_ms();

    if (hsm->restart_after_ms <= 0)
        return;
    if (hsm->reload_failing_since_ms == 0) {
        hsm->reload_failing_since_ms = now;
        return;
    }
    if (now - hsm->reload_failing_since_ms < hsm->restart_after_ms)
        return;
    UTIL_ERROR(HSM_MOD,
               "the keys could not be loaded again for %lld ms (%s: not available): this "
               "process's PKCS#11 state cannot heal (restart_after = %d ms); exiting with status "
               "%d so that the supervisor restarts pkiva",
               (long long)(now - hsm->reload_failing_since_ms), uri, hsm->restart_after_ms,
               HSM_EXIT_STALE);
    _exit(HSM_EXIT_STALE);
}

int hsm__keys_reload(struct hsm *hsm)
{
    struct reload_item *items = NULL;
    size_t n = 0, cap = 0, swapped = 0;
    int rc = UTIL_OK;

    /* 1. Snapshot the URIs: the lookups must not run with the list locked, since a job that loads
     *    a key takes the same mutex. */
    pthread_mutex_lock(&hsm->keys_mutex);
    for (struct hsm__key *e = hsm->keys; e != NULL; e = e->next)
        cap++;
    items = cap > 0 ? calloc(cap, sizeof(*items)) : NULL;
    for (struct hsm__key *e = hsm->keys; e != NULL && items != NULL; e = e->next) {
        items[n].entry = e;
        items[n].id = e->id;
        items[n].uri = strdup(e->pub.uri);
        if (items[n].uri == NULL)
            break;
        n++;
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
    if (cap > 0 && (items == NULL || n < cap)) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    /* 2. Look every key up again. pkcs11-provider opens a session and logs in afresh for it. */
    for (size_t i = 0; i < n; i++) {
        int pin_asked = 0;
        rc = store_find(hsm, items[i].uri, OSSL_STORE_INFO_PKEY, &items[i].fresh, &pin_asked,
                        UTIL_LOG_DEBUG);
        if (rc != UTIL_OK) {
            UTIL_DEBUG(HSM_MOD, "reload: %s not available yet: %s", items[i].uri,
                       util_strerror(rc));
            rc = rc == UTIL_ENOMEM ? rc : UTIL_EHSM;
            give_up_if_stale(hsm, items[i].uri);
            goto out;
        }
    }
    /* 3. Swap with no job running: a job reads key->pkey without any lock of its own. The old
     *    handle is freed below; a context built from it holds its own reference anyway. */
    pthread_rwlock_wrlock(&hsm->swap_lock);
    pthread_mutex_lock(&hsm->keys_mutex);
    for (size_t i = 0; i < n; i++) {
        for (struct hsm__key *e = hsm->keys; e != NULL; e = e->next) {
            if (e == items[i].entry && e->id == items[i].id) {
                EVP_PKEY *old = e->pub.pkey;
                e->pub.pkey = items[i].fresh;
                items[i].fresh = old;
                swapped++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&hsm->keys_mutex);
    pthread_rwlock_unlock(&hsm->swap_lock);
    hsm->reload_failing_since_ms = 0;
    (void)atomic_fetch_add_explicit(&hsm->key_reloads, 1, memory_order_relaxed); /* a counter */
    UTIL_WARN(HSM_MOD, "loaded %zu key handle%s again from the token after an outage", swapped,
              swapped == 1 ? "" : "s");
out:
    for (size_t i = 0; items != NULL && i < n; i++) {
        EVP_PKEY_free(items[i].fresh);
        free(items[i].uri);
    }
    free(items);
    return rc;
}

/* Builds "pkcs11:token=T;object=L;id=<label bytes>": CKA_ID is the label itself, so that tools
 * that select by id and those that select by label find the same key. */
static int generate_uri(const char *token_label, const char *label, char *out, size_t out_len)
{
    char token_enc[TOKEN_LABEL_MAX * 3 + 1];
    char label_enc[KEY_LABEL_MAX * 3 + 1];
    char id_enc[KEY_LABEL_MAX * 3 + 1];
    int n;

    if (pct_encode((const unsigned char *)token_label, strlen(token_label), 0, token_enc,
                   sizeof(token_enc)) != UTIL_OK ||
        pct_encode((const unsigned char *)label, strlen(label), 0, label_enc, sizeof(label_enc)) !=
            UTIL_OK ||
        pct_encode((const unsigned char *)label, strlen(label), 1, id_enc, sizeof(id_enc)) !=
            UTIL_OK)
        return UTIL_EINVAL;
    n = snprintf(out, out_len, URI_SCHEME "token=%s;object=%s;id=%s", token_enc, label_enc, id_enc);
    if (n < 0 || (size_t)n >= out_len)
        return UTIL_EINVAL;
    return UTIL_OK;
}

/* UTIL_EEXIST when a private or public key with this label is already on the token: a second one
 * would make the label ambiguous for every later lookup. */
static int check_label_free(struct hsm *hsm, const char *token_label, const char *label)
{
    char token_enc[TOKEN_LABEL_MAX * 3 + 1];
    char label_enc[KEY_LABEL_MAX * 3 + 1];
    char uri[URI_MAX];
    EVP_PKEY *found = NULL;
    int unused = 0;
    int rc;

    if (pct_encode((const unsigned char *)token_label, strlen(token_label), 0, token_enc,
                   sizeof(token_enc)) != UTIL_OK ||
        pct_encode((const unsigned char *)label, strlen(label), 0, label_enc, sizeof(label_enc)) !=
            UTIL_OK)
        return UTIL_EINVAL;
    (void)snprintf(uri, sizeof(uri), URI_SCHEME "token=%s;object=%s;type=public", token_enc,
                   label_enc); /* fits: both parts are bounded well below URI_MAX */
    rc = store_find(hsm, uri, OSSL_STORE_INFO_PUBKEY, &found, &unused, UTIL_LOG_ERROR);
    if (rc == UTIL_ENOTFOUND) {
        (void)snprintf(uri, sizeof(uri), URI_SCHEME "token=%s;object=%s;type=private", token_enc,
                       label_enc); /* fits, as above */
        rc = store_find(hsm, uri, OSSL_STORE_INFO_PKEY, &found, &unused, UTIL_LOG_ERROR);
    }
    EVP_PKEY_free(found);
    if (rc == UTIL_OK) {
        UTIL_ERROR(HSM_MOD, "token '%s' already holds a key labelled '%s'", token_label, label);
        return UTIL_EEXIST;
    }
    return rc == UTIL_ENOTFOUND ? UTIL_OK : rc;
}

int hsm_key_generate_blocking(struct hsm *hsm, const char *token_label, const char *label, int alg,
                              struct hsm_key **out)
{
    EVP_PKEY_CTX *gen = NULL;
    EVP_PKEY *generated = NULL;
    OSSL_PARAM params[5];
    char uri[URI_MAX];
    char private_uri[URI_MAX + 16];
    const char *keytype = NULL;
    const char *group = NULL;
    size_t bits = 0;
    int p = 0;
    int rc;

    if (hsm == NULL || out == NULL || token_label == NULL || label == NULL)
        return UTIL_EINVAL;
    *out = NULL;
    if (token_label[0] == '\0' || strlen(token_label) > TOKEN_LABEL_MAX || label[0] == '\0' ||
        strlen(label) > KEY_LABEL_MAX) {
        UTIL_ERROR(HSM_MOD, "token label (1..%d bytes) and key label (1..%d bytes) required",
                   TOKEN_LABEL_MAX, KEY_LABEL_MAX);
        return UTIL_EINVAL;
    }
    switch (alg) {
    case HSM_EC_P256:
        keytype = "EC";
        group = "P-256";
        break;
    case HSM_EC_P384:
        keytype = "EC";
        group = "P-384";
        break;
    case HSM_RSA_2048:
        keytype = "RSA";
        bits = 2048;
        break;
    case HSM_RSA_3072:
        keytype = "RSA";
        bits = 3072;
        break;
    case HSM_RSA_4096:
        keytype = "RSA";
        bits = 4096;
        break;
    default: UTIL_ERROR(HSM_MOD, "unknown key algorithm %d", alg); return UTIL_EINVAL;
    }
    rc = generate_uri(token_label, label, uri, sizeof(uri));
    if (rc != UTIL_OK)
        goto out;
    rc = check_label_free(hsm, token_label, label);
    if (rc != UTIL_OK)
        goto out;

    ERR_clear_error();
    gen = EVP_PKEY_CTX_new_from_name(hsm->libctx, keytype, "provider=pkcs11");
    if (gen == NULL || EVP_PKEY_keygen_init(gen) <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "%s key generation unavailable in the token",
                         keytype);
        rc = UTIL_EHSM;
        goto out;
    }
    /* pkcs11-provider makes the private key CKA_SENSITIVE=true, CKA_EXTRACTABLE=false by default
     * (checked by tests/hsm); CKA_TOKEN=true because the URI names a token object. Its default
     * templates also allow decrypt, unwrap and derive: a key that signs OCSP responses, CRLs or
     * time stamps must do nothing else, so the key usage is digitalSignature alone (CKA_SIGN
     * and CKA_VERIFY true; CKA_DECRYPT, CKA_ENCRYPT, CKA_UNWRAP, CKA_WRAP, CKA_DERIVE false). */
    params[p++] = OSSL_PARAM_construct_utf8_string("pkcs11_uri", uri, 0);
    params[p++] =
        OSSL_PARAM_construct_utf8_string("pkcs11_key_usage", (char *)"digitalSignature", 0);
    if (group != NULL)
        params[p++] =
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    else
        params[p++] = OSSL_PARAM_construct_size_t(OSSL_PKEY_PARAM_RSA_BITS, &bits);
    params[p] = OSSL_PARAM_construct_end();
    if (EVP_PKEY_CTX_set_params(gen, params) <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "setting key generation parameters failed");
        rc = UTIL_EHSM;
        goto out;
    }
    if (EVP_PKEY_generate(gen, &generated) <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "generating %s in token '%s' failed",
                         hsm_alg_name(alg), token_label);
        rc = UTIL_EHSM;
        goto out;
    }
    UTIL_INFO(HSM_MOD, "generated %s key '%s' in token '%s'", hsm_alg_name(alg), label,
              token_label);
    {
        /* The token's defaults may still allow decrypt or unwrap (see p11usage.c): cleared. */
        unsigned extra = 0;
        char text[64];
        if (hsm__key_extra_uses(hsm, token_label, label, (const unsigned char *)label,
                                strlen(label), 1, &extra) != UTIL_OK) {
            UTIL_WARN(HSM_MOD, "key '%s': could not check that it allows signing only", label);
        } else if (extra != 0) {
            extra_uses_text(extra, text, sizeof(text));
            UTIL_WARN(HSM_MOD, "key '%s': the token keeps %s allowed besides signing", label, text);
        }
    }
    /* Load it back the way every later start will, so a key that cannot be found by its URI is
     * noticed now rather than at the next restart. */
    (void)snprintf(private_uri, sizeof(private_uri), "%s;type=private", uri); /* sized for it */
    rc = hsm_key_load_blocking(hsm, private_uri, NULL, 0, out);
out:
    EVP_PKEY_free(generated);
    EVP_PKEY_CTX_free(gen);
    return rc;
}

/* ---- signing -------------------------------------------------------------------------------- */

/* A failed signature is an error worth a line while the hsm is thought available; during an
 * outage every request would add one, and hsm_note_result has already said it once. */
static enum util_log_level failure_level(const struct hsm *hsm)
{
    return hsm_available(hsm) ? UTIL_LOG_ERROR : UTIL_LOG_DEBUG;
}

int hsm_sign_ctx_new_blocking(struct hsm *hsm, const struct hsm_key *key, EVP_MD_CTX **out)
{
    EVP_MD_CTX *ctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    int rc = UTIL_OK;

    if (hsm == NULL || key == NULL || out == NULL)
        return UTIL_EINVAL;
    *out = NULL;
    if (hsm_key_refused(key))
        return UTIL_EHSM;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    ERR_clear_error();
    if (EVP_DigestSignInit_ex(ctx, &pctx, key->md, hsm->libctx, NULL, key->pkey, NULL) != 1) {
        util_log_openssl(failure_level(hsm), HSM_MOD, "cannot start signing with %s", key->uri);
        rc = UTIL_EHSM;
        goto out;
    }
    if (key->rsa_pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) <= 0 ||
                         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) <= 0 ||
                         EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, key->md, NULL) <= 0)) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "cannot set RSASSA-PSS parameters for %s",
                         key->uri);
        rc = UTIL_EHSM;
        goto out;
    }
    *out = ctx;
    ctx = NULL;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}
