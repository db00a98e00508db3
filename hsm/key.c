/* SPDX-License-Identifier: Apache-2.0 */
/* Token keys: finding them by PKCS#11 URI through OSSL_STORE, generating them inside the token with
 * pkcs11-provider, and building the digest-sign contexts that OpenSSL's X509/CRL/OCSP/CMS signing
 * code uses unchanged. Every function here may talk to the token and so runs on a signing thread
 * or in start-up code.
 *
 * pkcs11-provider reports no error when a lookup finds nothing, whatever the reason (wrong PIN,
 * missing token, absent key). hsm_key_load_blocking therefore explains an empty result itself:
 * token presence and PIN flags from p11diag.c, then whether the key's public half is visible
 * without login. Only a key that is truly absent from a usable token is UTIL_ENOTFOUND. */
#include "hsm_int.h"

#include <ctype.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define URI_SCHEME "pkcs11:"
#define URI_MAX 1024
#define TOKEN_LABEL_MAX 32 /* CK_TOKEN_INFO.label */
#define KEY_LABEL_MAX 128
#define STORE_LOADS_MAX 1024 /* objects looked at per lookup; a token holds far fewer per URI */

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
static int uri_get_attr(const char *uri, const char *name, char *out, size_t out_len)
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

    if (uri_get_attr(uri, "token", token, sizeof(token)) == 1) {
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
    int has_token = uri_get_attr(uri, "token", token, sizeof(token));
    int has_label = uri_get_attr(uri, "object", label, sizeof(label));
    int has_id = uri_get_attr(uri, "id", id, sizeof(id));
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
    rc = uri_get_attr(uri, "type", type, sizeof(type));
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

int hsm_sign_blocking(struct hsm *hsm, const struct hsm_key *key, const unsigned char *data,
                      size_t len, unsigned char **sig, size_t *sig_len)
{
    EVP_MD_CTX *ctx = NULL;
    unsigned char *buf = NULL;
    size_t buf_len = 0;
    int rc;

    if (hsm == NULL || key == NULL || (data == NULL && len > 0) || sig == NULL || sig_len == NULL)
        return UTIL_EINVAL;
    *sig = NULL;
    *sig_len = 0;
    rc = hsm_sign_ctx_new_blocking(hsm, key, &ctx);
    if (rc != UTIL_OK)
        goto out;
    ERR_clear_error();
    if (EVP_DigestSign(ctx, NULL, &buf_len, data, len) != 1 || buf_len == 0) {
        util_log_openssl(failure_level(hsm), HSM_MOD, "cannot size a signature with %s", key->uri);
        rc = UTIL_EHSM;
        goto out;
    }
    buf = malloc(buf_len);
    if (buf == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, buf, &buf_len, data, len) != 1) {
        util_log_openssl(failure_level(hsm), HSM_MOD, "signing with %s failed", key->uri);
        rc = UTIL_EHSM;
        goto out;
    }
    *sig = buf;
    *sig_len = buf_len;
    buf = NULL;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    return rc;
}
