/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of hsm/ against real SoftHSM2 tokens through pkcs11-provider: key generation and lookup,
 * signatures checked with the public key in OpenSSL's default library context, non-extractable
 * private keys, the signing pool driven from a libuv loop, and the error paths (wrong PIN, missing
 * token, unsafe PIN file, unknown key, outage bookkeeping). Every test owns its token directory. */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <hsm/hsm.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <support.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TOKEN "pkiva"
#define PIN "1234"

static char dir[64];
static char pin_path[128];
static struct hsm *hsm;

static void make_token(void)
{
    cr_assert_eq(ts_tmpdir(dir, sizeof(dir)), 0);
    cr_assert_eq(ts_softhsm_token(dir, TOKEN, PIN), 0);
    (void)snprintf(pin_path, sizeof(pin_path), "%s/pin.txt", dir);
}

/* The test token's configuration: SoftHSM2, the PIN file, the default provider. */
static struct hsm_config token_cfg(const char *pin_file, int sessions, int queue_max)
{
    struct hsm_config cfg = {
        .module_path = TS_SOFTHSM_MODULE,
        .pin_file = pin_file,
        .provider_path = NULL,
        .softhsm_no_deinit = 1,
        .sessions = sessions,
        .queue_max = queue_max,
    };
    return cfg;
}

static int open_hsm(const char *pin_file, int sessions, int queue_max, struct hsm **out)
{
    struct hsm_config cfg = token_cfg(pin_file, sessions, queue_max);
    return hsm_open(&cfg, out);
}

static void setup(void)
{
    make_token();
    cr_assert_eq(open_hsm(pin_path, 2, 64, &hsm), 0);
}

static void setup_token_only(void)
{
    make_token();
}

static void teardown(void)
{
    hsm_close(hsm);
    hsm = NULL;
    ts_rmrf(dir);
}

/* The key's public half, re-decoded in the default library context: verification must not depend
 * on the token or on pkcs11-provider. */
static EVP_PKEY *public_copy(EVP_PKEY *pkey)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    EVP_PKEY *pub;
    int len = i2d_PUBKEY(pkey, &der);

    cr_assert_gt(len, 0, "public key export failed");
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, NULL, NULL);
    OPENSSL_free(der);
    cr_assert_not_null(pub);
    cr_assert_not_null(EVP_PKEY_get0_provider(pub));
    cr_assert_str_eq(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(pub)), "default");
    return pub;
}

static int verify(EVP_PKEY *pub, const char *md, int pss, const unsigned char *data, size_t len,
                  const unsigned char *sig, size_t sig_len)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok;

    cr_assert_not_null(ctx);
    cr_assert_eq(EVP_DigestVerifyInit_ex(ctx, &pctx, md, NULL, NULL, pub, NULL), 1);
    if (pss) {
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 0);
        cr_assert_gt(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST), 0);
    }
    ok = EVP_DigestVerify(ctx, sig, sig_len, data, len);
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    return ok == 1;
}

static const unsigned char message[] = "pkiva test message";

/* Signs message with key and checks the signature with the public key outside the token. */
static void sign_and_verify(const struct hsm_key *key)
{
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    EVP_PKEY *pub = public_copy(key->pkey);

    cr_assert_eq(hsm_sign_blocking(hsm, key, message, sizeof(message), &sig, &sig_len), 0);
    cr_assert_gt(sig_len, 0);
    cr_assert(verify(pub, key->md, key->rsa_pss, message, sizeof(message), sig, sig_len),
              "signature by %s does not verify", key->uri);
    /* A verification that cannot fail proves nothing: a changed message must be rejected. */
    cr_assert_not(verify(pub, key->md, key->rsa_pss, message, sizeof(message) - 1, sig, sig_len));
    free(sig);
    EVP_PKEY_free(pub);
}

static void generate_load_sign(int alg, const char *label, const char *want_md, int want_bits)
{
    struct hsm_key *key = NULL;
    struct hsm_key *again = NULL;
    char uri[256];

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, label, alg, &key), 0);
    cr_assert_not_null(key);
    cr_assert_str_eq(key->md, want_md);
    cr_assert_eq(EVP_PKEY_get_bits(key->pkey), want_bits);
    cr_assert_not_null(strstr(key->uri, "type=private"));
    sign_and_verify(key);

    /* A fresh lookup by label finds the same key. */
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s", TOKEN, label);
    cr_assert_eq(hsm_key_load_blocking(hsm, uri, NULL, 0, &again), 0);
    cr_assert_eq(EVP_PKEY_eq(key->pkey, again->pkey), 1);
    sign_and_verify(again);
    hsm_key_free(again);
    hsm_key_free(key);
}

TestSuite(hsm, .init = setup, .fini = teardown, .timeout = 120);
TestSuite(hsm_open, .init = setup_token_only, .fini = teardown, .timeout = 60);

Test(hsm, alg_names)
{
    for (int alg = HSM_EC_P256; alg <= HSM_RSA_4096; alg++)
        cr_assert_eq(hsm_alg_from_name(hsm_alg_name(alg)), alg);
    cr_assert_eq(hsm_alg_from_name("ec-p521"), -1);
    cr_assert_eq(hsm_alg_from_name(NULL), -1);
    cr_assert_null(hsm_alg_name(0));
    cr_assert_null(hsm_alg_name(HSM_RSA_4096 + 1));
}

Test(hsm, ec_p256)
{
    generate_load_sign(HSM_EC_P256, "ec256", "SHA256", 256);
}

Test(hsm, ec_p384)
{
    generate_load_sign(HSM_EC_P384, "ec384", "SHA384", 384);
}

Test(hsm, rsa_2048)
{
    generate_load_sign(HSM_RSA_2048, "rsa2048", "SHA256", 2048);
}

Test(hsm, rsa_pss_and_pkcs1_digests)
{
    static const char *const mds[] = {"SHA256", "SHA384", "SHA512"};
    struct hsm_key *generated = NULL;
    const char *uri = "pkcs11:token=" TOKEN ";object=rsa;type=private";

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "rsa", HSM_RSA_2048, &generated), 0);
    for (size_t i = 0; i < sizeof(mds) / sizeof(mds[0]); i++) {
        for (int pss = 0; pss <= 1; pss++) {
            struct hsm_key *key = NULL;
            unsigned char *sig = NULL;
            size_t sig_len = 0;
            EVP_PKEY *pub = NULL;

            cr_assert_eq(hsm_key_load_blocking(hsm, uri, mds[i], pss, &key), 0);
            cr_assert_str_eq(key->md, mds[i]);
            cr_assert_eq(key->rsa_pss, pss);
            sign_and_verify(key);
            /* The padding really is the one asked for: it does not verify as the other one. */
            cr_assert_eq(hsm_sign_blocking(hsm, key, message, sizeof(message), &sig, &sig_len), 0);
            pub = public_copy(key->pkey);
            cr_assert_not(verify(pub, mds[i], !pss, message, sizeof(message), sig, sig_len),
                          "%s pss=%d verifies with the other padding", mds[i], pss);
            EVP_PKEY_free(pub);
            free(sig);
            hsm_key_free(key);
        }
    }
    hsm_key_free(generated);
}

Test(hsm, bad_load_arguments)
{
    struct hsm_key *key = NULL;
    const char *uri = "pkcs11:token=" TOKEN ";object=k";

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "k", HSM_EC_P256, &key), 0);
    hsm_key_free(key);
    key = NULL;
    cr_assert_eq(hsm_key_load_blocking(hsm, uri, NULL, 1, &key), UTIL_EINVAL); /* PSS needs RSA */
    cr_assert_eq(hsm_key_load_blocking(hsm, uri, "NO-SUCH-MD", 0, &key), UTIL_EINVAL);
    cr_assert_eq(hsm_key_load_blocking(hsm, "file:/etc/passwd", NULL, 0, &key), UTIL_EINVAL);
    cr_assert_eq(
        hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=k;type=public", NULL, 0, &key),
        UTIL_EINVAL);
    cr_assert_eq(
        hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=k?pin-value=1234", NULL, 0, &key),
        UTIL_EINVAL);
    cr_assert_null(key);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "k2", 99, &key), UTIL_EINVAL);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "", HSM_EC_P256, &key), UTIL_EINVAL);
}

Test(hsm, generate_refuses_duplicate_label)
{
    struct hsm_key *key = NULL;
    struct hsm_key *dup = NULL;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "once", HSM_EC_P256, &key), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "once", HSM_EC_P384, &dup), UTIL_EEXIST);
    cr_assert_null(dup);
    hsm_key_free(key);
}

Test(hsm, label_with_special_characters)
{
    struct hsm_key *key = NULL;
    struct hsm_key *again = NULL;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "ocsp signer;2026/a", HSM_EC_P256, &key), 0);
    cr_assert_eq(hsm_key_load_blocking(hsm, key->uri, NULL, 0, &again), 0);
    cr_assert_eq(EVP_PKEY_eq(key->pkey, again->pkey), 1);
    hsm_key_free(again);
    hsm_key_free(key);
}

/* Reads the private key's attributes straight from the token, in this process: SoftHSM2 is already
 * initialised and logged in by pkcs11-provider, so C_Initialize answers "already initialised", the
 * login is shared, and nothing here is finalised or logged out. */
static void check_token_attributes(const char *label, int is_rsa)
{
    void *lib = dlopen(TS_SOFTHSM_MODULE, RTLD_NOW | RTLD_NOLOAD);
    CK_C_GetFunctionList get_list = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[16];
    CK_ULONG slot_count = 16;
    CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE obj[2];
    CK_ULONG found = 0;
    CK_BBOOL sensitive = CK_FALSE, extractable = CK_TRUE, always_sensitive = CK_FALSE,
             never_extractable = CK_FALSE, token = CK_FALSE, sign = CK_FALSE, decrypt = CK_TRUE,
             unwrap = CK_TRUE, derive = CK_TRUE;
    unsigned char id[64];
    CK_ATTRIBUTE attrs[] = {
        {CKA_SENSITIVE, &sensitive, sizeof(sensitive)},
        {CKA_EXTRACTABLE, &extractable, sizeof(extractable)},
        {CKA_ALWAYS_SENSITIVE, &always_sensitive, sizeof(always_sensitive)},
        {CKA_NEVER_EXTRACTABLE, &never_extractable, sizeof(never_extractable)},
        {CKA_TOKEN, &token, sizeof(token)},
        {CKA_ID, id, sizeof(id)},
        {CKA_SIGN, &sign, sizeof(sign)},
        {CKA_DECRYPT, &decrypt, sizeof(decrypt)},
        {CKA_UNWRAP, &unwrap, sizeof(unwrap)},
        {CKA_DERIVE, &derive, sizeof(derive)},
    };
    unsigned char secret[1024];
    CK_ATTRIBUTE secret_attr = {is_rsa ? CKA_PRIVATE_EXPONENT : CKA_VALUE, secret, sizeof(secret)};
    CK_RV rv;
    int slot_found = 0;

    cr_assert_not_null(lib, "SoftHSM2 not loaded in this process");
    *(void **)(&get_list) = dlsym(lib, "C_GetFunctionList");
    cr_assert_not_null(get_list);
    cr_assert_eq(get_list(&fl), CKR_OK);
    rv = fl->C_Initialize(&args);
    cr_assert_eq(rv, CKR_CRYPTOKI_ALREADY_INITIALIZED, "module was not initialised: 0x%lx", rv);
    cr_assert_eq(fl->C_GetSlotList(CK_TRUE, slots, &slot_count), CKR_OK);
    for (CK_ULONG i = 0; i < slot_count && !slot_found; i++) {
        CK_TOKEN_INFO info;
        cr_assert_eq(fl->C_GetTokenInfo(slots[i], &info), CKR_OK);
        if (memcmp(info.label, TOKEN, strlen(TOKEN)) == 0 && info.label[strlen(TOKEN)] == ' ') {
            cr_assert_eq(fl->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &session),
                         CKR_OK);
            slot_found = 1;
        }
    }
    cr_assert(slot_found);
    rv = fl->C_Login(session, CKU_USER, (unsigned char *)PIN, strlen(PIN));
    cr_assert(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, "C_Login: 0x%lx", rv);
    cr_assert_eq(fl->C_FindObjectsInit(session, find, 2), CKR_OK);
    cr_assert_eq(fl->C_FindObjects(session, obj, 2, &found), CKR_OK);
    cr_assert_eq(fl->C_FindObjectsFinal(session), CKR_OK);
    cr_assert_eq(found, 1, "%lu private keys labelled %s", found, label);
    cr_assert_eq(fl->C_GetAttributeValue(session, obj[0], attrs, 10), CKR_OK);
    /* Sign-only (issue 15.8): a signing key neither decrypts, unwraps nor derives. */
    cr_assert_eq(sign, CK_TRUE, "%s: CKA_SIGN false", label);
    cr_assert_eq(decrypt, CK_FALSE, "%s: CKA_DECRYPT true", label);
    cr_assert_eq(unwrap, CK_FALSE, "%s: CKA_UNWRAP true", label);
    cr_assert_eq(derive, CK_FALSE, "%s: CKA_DERIVE true", label);
    cr_assert_eq(sensitive, CK_TRUE, "%s: CKA_SENSITIVE false", label);
    cr_assert_eq(extractable, CK_FALSE, "%s: CKA_EXTRACTABLE true", label);
    cr_assert_eq(always_sensitive, CK_TRUE, "%s: CKA_ALWAYS_SENSITIVE false", label);
    cr_assert_eq(never_extractable, CK_TRUE, "%s: CKA_NEVER_EXTRACTABLE false", label);
    cr_assert_eq(token, CK_TRUE, "%s: not a token object", label);
    cr_assert_eq(attrs[5].ulValueLen, strlen(label), "%s: CKA_ID is not the label", label);
    cr_assert_eq(memcmp(id, label, strlen(label)), 0, "%s: CKA_ID is not the label", label);
    /* The private value itself is refused. */
    rv = fl->C_GetAttributeValue(session, obj[0], &secret_attr, 1);
    cr_assert_eq(rv, CKR_ATTRIBUTE_SENSITIVE, "%s: private value readable (0x%lx)", label, rv);
    cr_assert_eq(secret_attr.ulValueLen, CK_UNAVAILABLE_INFORMATION);
    (void)fl->C_CloseSession(session); /* only our own session; the provider's stay open */
    (void)dlclose(lib);                /* drops the RTLD_NOLOAD reference only */
}

/* The private keys are generated sensitive and never extractable, and for signing only (no
 * decrypt, unwrap or derive): the token says so (pkcs11-tool reads the attributes in another
 * process), CKA_ID is the label, and neither OpenSSL nor pkcs11-tool can get the private value
 * out. */
Test(hsm, private_keys_not_extractable)
{
    static const struct {
        int alg;
        const char *label;
        const char *id_hex;
    } keys[] = {
        {HSM_EC_P256, "nx-ec", "6e782d6563"},
        {HSM_RSA_2048, "nx-rsa", "6e782d727361"},
    };
    char out[16384];
    char cmd[512];

    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct hsm_key *key = NULL;
        BIGNUM *priv = NULL;
        unsigned char *der = NULL;

        cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, keys[i].label, keys[i].alg, &key), 0);
        cr_assert_eq(EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_PRIV_KEY, &priv), 0);
        cr_assert_eq(EVP_PKEY_get_bn_param(key->pkey, OSSL_PKEY_PARAM_RSA_D, &priv), 0);
        cr_assert_leq(i2d_PrivateKey(key->pkey, &der), 0, "private key exported as DER");
        cr_assert_null(priv);
        ERR_clear_error();
        hsm_key_free(key);
    }

    (void)snprintf(cmd, sizeof(cmd),
                   "pkcs11-tool --module %s --token-label %s --login --pin %s --list-objects "
                   "--type privkey",
                   TS_SOFTHSM_MODULE, TOKEN, PIN);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        char want[64];
        const char *obj;
        const char *next;
        const char *access;
        char access_line[256];
        size_t n;

        (void)snprintf(want, sizeof(want), "label:      %s\n", keys[i].label);
        obj = strstr(out, want);
        cr_assert_not_null(obj, "private key %s not listed:\n%s", keys[i].label, out);
        next = strstr(obj, "Private Key Object");
        (void)snprintf(want, sizeof(want), "ID:         %s\n", keys[i].id_hex);
        cr_assert_not_null(strstr(obj, want), "CKA_ID of %s is not its label", keys[i].label);
        {
            const char *usage = strstr(obj, "Usage:");
            cr_assert(usage != NULL && (next == NULL || usage < next), "no Usage line for %s",
                      keys[i].label);
            char usage_line[256];
            n = strcspn(usage, "\n");
            cr_assert_lt(n, sizeof(usage_line));
            memcpy(usage_line, usage, n);
            usage_line[n] = '\0';
            cr_assert(strstr(usage_line, "decrypt") == NULL &&
                          strstr(usage_line, "unwrap") == NULL &&
                          strstr(usage_line, "derive") == NULL,
                      "%s allows more than signing: %s", keys[i].label, usage_line);
        }
        access = strstr(obj, "Access:");
        cr_assert_not_null(access);
        cr_assert(next == NULL || access < next, "no Access line for %s", keys[i].label);
        n = strcspn(access, "\n");
        cr_assert_lt(n, sizeof(access_line));
        memcpy(access_line, access, n);
        access_line[n] = '\0';
        cr_assert_not_null(strstr(access_line, "sensitive"), "%s", access_line);
        cr_assert_not_null(strstr(access_line, "always sensitive"), "%s", access_line);
        cr_assert_not_null(strstr(access_line, "never extractable"), "%s", access_line);
        cr_assert_not_null(strstr(access_line, "local"), "%s", access_line);
        /* "never extractable" must not come with a plain "extractable" (CKA_EXTRACTABLE). */
        {
            char *save = NULL;
            for (char *t = strtok_r(access_line + strlen("Access:"), ",", &save); t != NULL;
                 t = strtok_r(NULL, ",", &save)) {
                while (*t == ' ')
                    t++;
                cr_assert_str_neq(t, "extractable", "%s is extractable", keys[i].label);
            }
        }

        check_token_attributes(keys[i].label, keys[i].alg == HSM_RSA_2048);
    }
}

static X509 *self_signed(const struct hsm_key *key, EVP_MD_CTX *sign_ctx)
{
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();

    cr_assert_not_null(cert);
    cr_assert_eq(X509_set_version(cert, X509_VERSION_3), 1);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(cert), 1), 1);
    cr_assert_eq(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                            (const unsigned char *)"pkiva test root", -1, -1, 0),
                 1);
    cr_assert_eq(X509_set_subject_name(cert, name), 1);
    cr_assert_eq(X509_set_issuer_name(cert, name), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(cert), 0));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(cert), 86400));
    cr_assert_eq(X509_set_pubkey(cert, key->pkey), 1);
    cr_assert_gt(X509_sign_ctx(cert, sign_ctx), 0, "X509_sign_ctx failed");
    X509_NAME_free(name);
    return cert;
}

static void check_cert(int alg, const char *label, int pss, int want_sig_nid)
{
    struct hsm_key *key = NULL;
    struct hsm_key *generated = NULL;
    EVP_MD_CTX *sign_ctx = NULL;
    EVP_PKEY *pub = NULL;
    X509 *cert = NULL;
    X509 *reparsed = NULL;
    unsigned char *der = NULL;
    const unsigned char *p;
    int len;
    char uri[128];

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, label, alg, &generated), 0);
    (void)snprintf(uri, sizeof(uri), "pkcs11:token=%s;object=%s", TOKEN, label);
    cr_assert_eq(hsm_key_load_blocking(hsm, uri, NULL, pss, &key), 0);
    cr_assert_eq(hsm_sign_ctx_new_blocking(hsm, key, &sign_ctx), 0);
    cert = self_signed(key, sign_ctx);
    cr_assert_eq(X509_get_signature_nid(cert), want_sig_nid);

    /* Verify a re-parsed copy in the default library context with a public key from there. */
    len = i2d_X509(cert, &der);
    cr_assert_gt(len, 0);
    p = der;
    reparsed = d2i_X509(NULL, &p, len);
    cr_assert_not_null(reparsed);
    pub = public_copy(key->pkey);
    cr_assert_eq(X509_verify(reparsed, pub), 1, "self-signed certificate does not verify");
    /* ... and not with another key. */
    {
        EVP_PKEY *other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
        cr_assert_neq(X509_verify(reparsed, other), 1);
        EVP_PKEY_free(other);
        ERR_clear_error();
    }
    EVP_PKEY_free(pub);
    X509_free(reparsed);
    OPENSSL_free(der);
    X509_free(cert);
    EVP_MD_CTX_free(sign_ctx);
    hsm_key_free(key);
    hsm_key_free(generated);
}

Test(hsm, x509_sign_ctx_ec)
{
    check_cert(HSM_EC_P256, "root-ec", 0, NID_ecdsa_with_SHA256);
}

Test(hsm, x509_sign_ctx_ec_p384)
{
    check_cert(HSM_EC_P384, "root-ec384", 0, NID_ecdsa_with_SHA384);
}

Test(hsm, x509_sign_ctx_rsa)
{
    check_cert(HSM_RSA_2048, "root-rsa", 0, NID_sha256WithRSAEncryption);
}

Test(hsm, x509_sign_ctx_rsa_pss)
{
    check_cert(HSM_RSA_2048, "root-pss", 1, NID_rsassaPss);
}

/* CMS (RFC 3161 tokens) signs with Update + Final(NULL) for the length + Final: the context must
 * support that sequence, not only one-shot EVP_DigestSign. */
Test(hsm, streaming_sign_final_twice)
{
    struct hsm_key *key = NULL;
    EVP_MD_CTX *ctx = NULL;
    unsigned char sig[512];
    size_t sig_len = 0;
    EVP_PKEY *pub = NULL;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "stream", HSM_EC_P256, &key), 0);
    cr_assert_eq(hsm_sign_ctx_new_blocking(hsm, key, &ctx), 0);
    cr_assert_eq(EVP_DigestSignUpdate(ctx, message, 5), 1);
    cr_assert_eq(EVP_DigestSignUpdate(ctx, message + 5, sizeof(message) - 5), 1);
    cr_assert_eq(EVP_DigestSignFinal(ctx, NULL, &sig_len), 1);
    cr_assert_leq(sig_len, sizeof(sig));
    cr_assert_eq(EVP_DigestSignFinal(ctx, sig, &sig_len), 1);
    pub = public_copy(key->pkey);
    cr_assert(verify(pub, key->md, 0, message, sizeof(message), sig, sig_len));
    EVP_PKEY_free(pub);
    EVP_MD_CTX_free(ctx);
    hsm_key_free(key);
}

/* ---- the signing pool ----------------------------------------------------------------------- */

struct sign_job {
    const struct hsm_key *key;
    pthread_t loop_thread;
    int result;
    int done_on_loop;
    atomic_int *finished;
};

static int sign_work(void *thread_state, void *arg)
{
    struct sign_job *job = arg;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int rc;

    cr_assert_eq(pthread_equal(pthread_self(), job->loop_thread), 0, "work ran on the loop");
    rc = hsm_sign_blocking(hsm, job->key, message, sizeof(message), &sig, &sig_len);
    free(sig);
    return rc;
}

static void sign_done(void *arg, int result)
{
    struct sign_job *job = arg;

    job->result = result;
    job->done_on_loop = pthread_equal(pthread_self(), job->loop_thread) != 0;
    atomic_fetch_add(job->finished, 1);
}

static void run_loop_until(uv_loop_t *loop, atomic_int *count, int want)
{
    time_t deadline = time(NULL) + 60;

    while (atomic_load(count) < want) {
        cr_assert_lt(time(NULL), deadline, "timed out: %d of %d", atomic_load(count), want);
        (void)uv_run(loop, UV_RUN_ONCE); /* returns when something happened */
    }
}

static void close_port_and_loop(uv_loop_t *loop, struct util_pool_port *port)
{
    util_pool_port_close(port);
    (void)uv_run(loop, UV_RUN_DEFAULT); /* runs the close callbacks */
    cr_assert_eq(uv_loop_close(loop), 0);
}

Test(hsm, pool_from_uv_loop)
{
    enum { JOBS = 40 };
    static struct sign_job jobs[JOBS];
    struct hsm_key *key = NULL;
    struct util_pool_port *port = NULL;
    struct hsm_stats stats;
    atomic_int finished = 0;
    uv_loop_t loop;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "pool", HSM_EC_P256, &key), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_port_new(hsm_pool(hsm), &loop, &port), 0);
    for (int i = 0; i < JOBS; i++) {
        jobs[i] = (struct sign_job){key, pthread_self(), 1, 0, &finished};
        cr_assert_eq(hsm_submit(hsm, port, sign_work, sign_done, &jobs[i]), 0);
    }
    run_loop_until(&loop, &finished, JOBS);
    for (int i = 0; i < JOBS; i++) {
        cr_assert_eq(jobs[i].result, 0, "job %d: %d", i, jobs[i].result);
        cr_assert(jobs[i].done_on_loop, "job %d: done ran off the loop thread", i);
    }
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.signatures, JOBS);
    cr_assert_eq(stats.errors, 0);
    cr_assert_gt(stats.sign_us_total, 0);
    cr_assert_eq(stats.queue_depth, 0);
    cr_assert(hsm_available(hsm));
    close_port_and_loop(&loop, port);
    hsm_key_free(key);
}

struct gate {
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int running;
    int open;
};

static struct gate gate = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};

static int blocked_work(void *thread_state, void *arg)
{
    pthread_mutex_lock(&gate.mutex);
    gate.running++;
    pthread_cond_broadcast(&gate.cond);
    while (!gate.open)
        pthread_cond_wait(&gate.cond, &gate.mutex);
    pthread_mutex_unlock(&gate.mutex);
    return 0;
}

static void count_done(void *arg, int result)
{
    atomic_int *finished = arg;

    cr_assert_eq(result, 0);
    atomic_fetch_add(finished, 1);
}

Test(hsm_open, full_queue_is_busy_at_once)
{
    struct util_pool_port *port = NULL;
    struct hsm_stats stats;
    atomic_int finished = 0;
    uv_loop_t loop;
    struct timespec t0, t1;

    cr_assert_eq(open_hsm(pin_path, 1, 2, &hsm), 0);
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_port_new(hsm_pool(hsm), &loop, &port), 0);
    /* One job occupies the only signing thread... */
    cr_assert_eq(hsm_submit(hsm, port, blocked_work, count_done, &finished), 0);
    pthread_mutex_lock(&gate.mutex);
    while (gate.running == 0)
        pthread_cond_wait(&gate.cond, &gate.mutex);
    pthread_mutex_unlock(&gate.mutex);
    /* ...two more fill the queue, and the next is refused without waiting. */
    cr_assert_eq(hsm_submit(hsm, port, blocked_work, count_done, &finished), 0);
    cr_assert_eq(hsm_submit(hsm, port, blocked_work, count_done, &finished), 0);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(hsm_submit(hsm, port, blocked_work, count_done, &finished), UTIL_EBUSY);
    cr_assert_eq(hsm_run_sync(hsm, blocked_work, NULL), UTIL_EBUSY);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    cr_assert_lt((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000, 100);
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.rejected, 2);
    cr_assert_eq(stats.queue_depth, 2);

    pthread_mutex_lock(&gate.mutex);
    gate.open = 1;
    pthread_cond_broadcast(&gate.cond);
    pthread_mutex_unlock(&gate.mutex);
    run_loop_until(&loop, &finished, 3);
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.signatures, 3);
    close_port_and_loop(&loop, port);
}

/* ---- outage bookkeeping --------------------------------------------------------------------- */

static int fail_work(void *thread_state, void *arg)
{
    return UTIL_EHSM;
}

static int ok_work(void *thread_state, void *arg)
{
    return 0;
}

static int busy_work(void *thread_state, void *arg)
{
    return UTIL_EBUSY;
}

Test(hsm, outage_and_recovery)
{
    struct hsm_stats stats;

    cr_assert(hsm_available(hsm));
    cr_assert_eq(hsm_run_sync(hsm, fail_work, NULL), UTIL_EHSM);
    cr_assert_not(hsm_available(hsm));
    cr_assert_eq(hsm_run_sync(hsm, fail_work, NULL), UTIL_EHSM);
    cr_assert_not(hsm_available(hsm));
    /* A result that says nothing about the token changes nothing. */
    cr_assert_eq(hsm_run_sync(hsm, busy_work, NULL), UTIL_EBUSY);
    cr_assert_not(hsm_available(hsm));
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.errors, 2);
    cr_assert_eq(stats.signatures, 0);

    cr_assert_eq(hsm_run_sync(hsm, ok_work, NULL), 0);
    cr_assert(hsm_available(hsm));
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.signatures, 1);
    cr_assert_eq(stats.errors, 2);

    /* Start-up code reports directly. */
    hsm_note_result(hsm, UTIL_EHSM);
    cr_assert_not(hsm_available(hsm));
    hsm_note_result(hsm, 0);
    cr_assert(hsm_available(hsm));
}

Test(hsm, outage_through_loop)
{
    struct util_pool_port *port = NULL;
    atomic_int finished = 0;
    struct sign_job failing = {NULL, pthread_self(), 1, 0, &finished};
    uv_loop_t loop;

    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(util_pool_port_new(hsm_pool(hsm), &loop, &port), 0);
    cr_assert_eq(hsm_submit(hsm, port, fail_work, sign_done, &failing), 0);
    run_loop_until(&loop, &finished, 1);
    cr_assert_eq(failing.result, UTIL_EHSM);
    cr_assert(failing.done_on_loop);
    cr_assert_not(hsm_available(hsm));
    close_port_and_loop(&loop, port);
}

static int probe_inside_job(void *thread_state, void *arg)
{
    return hsm_probe_blocking(hsm, arg);
}

Test(hsm, probe)
{
    struct hsm_key *key = NULL;
    struct hsm_stats stats;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "probe", HSM_EC_P256, &key), 0);
    hsm_note_result(hsm, UTIL_EHSM);
    cr_assert_not(hsm_available(hsm));
    cr_assert_eq(hsm_probe_blocking(hsm, key), 0);
    cr_assert(hsm_available(hsm), "a good probe ends the outage");
    /* From inside a signing job it signs in place instead of queueing behind itself. */
    cr_assert_eq(hsm_run_sync(hsm, probe_inside_job, key), 0);
    hsm_stats_get(hsm, &stats);
    cr_assert_eq(stats.signatures, 2, "each probe counted once");
    hsm_key_free(key);
}

/* ---- errors --------------------------------------------------------------------------------- */

Test(hsm, unknown_key_not_found)
{
    struct hsm_key *key = NULL;

    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=nope", NULL, 0, &key),
                 UTIL_ENOTFOUND);
    cr_assert_null(key);
    /* Still not found once the token has keys of other names. */
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "other", HSM_EC_P256, &key), 0);
    hsm_key_free(key);
    key = NULL;
    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=nope", NULL, 0, &key),
                 UTIL_ENOTFOUND);
    cr_assert_null(key);
    cr_assert(hsm_available(hsm));
}

Test(hsm, missing_token_is_hsm_error)
{
    struct hsm_key *key = NULL;

    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=nosuch;object=root", NULL, 0, &key),
                 UTIL_EHSM);
    cr_assert_null(key);
    cr_assert_eq(hsm_key_generate_blocking(hsm, "nosuch", "root", HSM_EC_P256, &key), UTIL_EHSM);
    cr_assert_null(key);
}

/* The key is made by pkcs11-tool in another process, so this process never logged in with the
 * right PIN (SoftHSM2's login state is per process and would hide a wrong PIN). */
Test(hsm_open, wrong_pin_is_hsm_error)
{
    char cmd[512];
    char out[4096];
    char bad_pin[160];
    struct hsm_key *key = NULL;
    FILE *f;

    (void)snprintf(cmd, sizeof(cmd),
                   "pkcs11-tool --module %s --token-label %s --login --pin %s --keypairgen "
                   "--key-type EC:prime256v1 --label signer --id 01",
                   TS_SOFTHSM_MODULE, TOKEN, PIN);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    (void)snprintf(bad_pin, sizeof(bad_pin), "%s/bad-pin.txt", dir);
    f = fopen(bad_pin, "w");
    cr_assert_not_null(f);
    fputs("999999\n", f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(chmod(bad_pin, 0600), 0);

    /* Login is lazy: opening works, the first key access fails cleanly. */
    cr_assert_eq(open_hsm(bad_pin, 1, 4, &hsm), 0);
    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=signer", NULL, 0, &key),
                 UTIL_EHSM);
    cr_assert_null(key);
    /* Again, to be sure a second attempt neither hangs nor crashes. */
    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=signer", NULL, 0, &key),
                 UTIL_EHSM);
}

Test(hsm_open, right_pin_loads_external_key)
{
    char cmd[512];
    char out[4096];
    struct hsm_key *key = NULL;

    (void)snprintf(cmd, sizeof(cmd),
                   "pkcs11-tool --module %s --token-label %s --login --pin %s --keypairgen "
                   "--key-type rsa:2048 --label signer --id 01",
                   TS_SOFTHSM_MODULE, TOKEN, PIN);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), 0);
    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=signer", NULL, 1, &key),
                 0);
    cr_assert_str_eq(key->md, "SHA256");
    sign_and_verify(key);
    hsm_key_free(key);
}

Test(hsm_open, missing_pin_file)
{
    char path[160];

    (void)snprintf(path, sizeof(path), "%s/no-such-pin.txt", dir);
    cr_assert_eq(open_hsm(path, 1, 4, &hsm), UTIL_EPERM);
    cr_assert_null(hsm);
}

Test(hsm_open, pin_file_readable_by_others)
{
    cr_assert_eq(chmod(pin_path, 0644), 0);
    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), UTIL_EPERM);
    cr_assert_null(hsm);
    cr_assert_eq(chmod(pin_path, 0660), 0);
    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), UTIL_EPERM);
    cr_assert_eq(chmod(pin_path, 0400), 0);
    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), 0);
}

Test(hsm_open, pin_file_not_regular)
{
    cr_assert_eq(open_hsm(dir, 1, 4, &hsm), UTIL_EPERM);
    cr_assert_null(hsm);
}

Test(hsm_open, bad_module_fails_at_open)
{
    struct hsm_config cfg = {
        .module_path = "/nonexistent/libpkcs11.so",
        .pin_file = pin_path,
        .softhsm_no_deinit = 1,
        .sessions = 1,
        .queue_max = 1,
    };
    char not_a_module[160];
    FILE *f;

    cr_assert_eq(hsm_open(&cfg, &hsm), UTIL_ECONFIG);
    cr_assert_null(hsm);
    /* A file that exists but is no PKCS#11 module: the provider loads it early and fails. */
    (void)snprintf(not_a_module, sizeof(not_a_module), "%s/not-a-module.so", dir);
    f = fopen(not_a_module, "w");
    cr_assert_not_null(f);
    fputs("not an ELF file\n", f);
    cr_assert_eq(fclose(f), 0);
    cfg.module_path = not_a_module;
    cr_assert_eq(hsm_open(&cfg, &hsm), UTIL_EHSM);
    cr_assert_null(hsm);
}

Test(hsm_open, bad_config)
{
    struct hsm_config cfg = {
        .module_path = TS_SOFTHSM_MODULE,
        .pin_file = pin_path,
        .softhsm_no_deinit = 1,
        .sessions = 0,
        .queue_max = 1,
    };

    cr_assert_eq(hsm_open(&cfg, &hsm), UTIL_ECONFIG);
    cfg.sessions = 1;
    cfg.queue_max = 0;
    cr_assert_eq(hsm_open(&cfg, &hsm), UTIL_ECONFIG);
    cfg.queue_max = 1;
    cfg.provider_path = "/nonexistent/pkcs11.so";
    cr_assert_eq(hsm_open(&cfg, &hsm), UTIL_ECONFIG);
    cr_assert_null(hsm);
}

/* The temporary provider config is gone once hsm_open returns. */
Test(hsm_open, provider_config_removed)
{
    char tmpdir[160];
    char out[1024];
    char cmd[256];

    (void)snprintf(tmpdir, sizeof(tmpdir), "%s/tmp", dir);
    cr_assert_eq(mkdir(tmpdir, 0700), 0);
    cr_assert_eq(setenv("TMPDIR", tmpdir, 1), 0);
    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), 0);
    (void)snprintf(cmd, sizeof(cmd), "ls -A %s", tmpdir);
    cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0);
    cr_assert_str_empty(out, "left behind: %s", out);
}

/* Closing and opening again in one process (CLI tools, tests) keeps working with no-deinit. */
Test(hsm_open, reopen_in_same_process)
{
    struct hsm_key *key = NULL;

    cr_assert_eq(open_hsm(pin_path, 1, 4, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "reopen", HSM_EC_P256, &key), 0);
    hsm_key_free(key);
    key = NULL;
    hsm_close(hsm);
    hsm = NULL;
    cr_assert_eq(open_hsm(pin_path, 2, 4, &hsm), 0);
    cr_assert_eq(hsm_key_load_blocking(hsm, "pkcs11:token=" TOKEN ";object=reopen", NULL, 0, &key),
                 0);
    sign_and_verify(key);
    hsm_key_free(key);
}

/* A certificate for pub (the signature is a throw-away software key's: only the key matters). */
static X509 *cert_for(EVP_PKEY *pub)
{
    X509 *cert = X509_new();
    EVP_PKEY *signer = EVP_EC_gen("P-256");

    cr_assert_not_null(cert);
    cr_assert_not_null(signer);
    cr_assert_eq(X509_set_pubkey(cert, pub), 1);
    cr_assert_eq(X509_sign(cert, signer, EVP_sha256()) > 0, 1);
    EVP_PKEY_free(signer);
    return cert;
}

/* Issue 21: the start-up self-check binds the certificate's key (refusing another key's), every
 * RSA signature is verified and counted, and per-key health shows in the metrics. */
Test(hsm, self_check_binds_certificate_and_counts_verifications)
{
    struct hsm_key *rsa = NULL, *ec = NULL;
    struct hsm_stats before, after;
    EVP_PKEY *rsa_pub = NULL, *ec_pub = NULL;
    X509 *rsa_cert = NULL, *ec_cert = NULL;
    unsigned char digest[32] = {0};
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char metrics[4096], why[256];
    int total = -1;

    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "checked-rsa", HSM_RSA_2048, &rsa), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "checked-ec", HSM_EC_P256, &ec), 0);
    rsa_pub = public_copy(rsa->pkey);
    ec_pub = public_copy(ec->pkey);
    rsa_cert = cert_for(rsa_pub);
    ec_cert = cert_for(ec_pub);

    cr_assert_eq(hsm_key_check_blocking(hsm, rsa, ec_cert), UTIL_ECONFIG, "another key's cert");
    cr_assert_eq(hsm_key_check_blocking(hsm, rsa, rsa_cert), 0);
    cr_assert_eq(hsm_key_check_blocking(hsm, ec, ec_cert), 0);
    cr_assert_eq(hsm_key_health(rsa, why, sizeof(why)), HSM_KEY_OK);
    cr_assert(hsm_key_usable(ec));
    cr_assert_eq(hsm_keys_unhealthy(hsm, &total, why, sizeof(why)), 0);
    cr_assert_eq(total, 2);

    hsm_stats_get(hsm, &before);
    cr_assert_eq(hsm_sign_digest_blocking(hsm, rsa, digest, sizeof(digest), &sig, &sig_len), 0);
    free(sig);
    sig = NULL;
    /* A digest of the wrong size for the key's hash is refused before the token is asked. */
    cr_assert_eq(hsm_sign_digest_blocking(hsm, rsa, digest, 20, &sig, &sig_len), UTIL_EINVAL);
    hsm_stats_get(hsm, &after);
    cr_assert_eq(after.verified, before.verified + 1, "every RSA signature is verified");
    cr_assert_eq(after.bad_signatures, 0);

    cr_assert_gt(hsm_keys_metrics(hsm, metrics, sizeof(metrics)), 0);
    cr_assert_not_null(
        strstr(metrics, "pkiva_hsm_key_healthy{key=\"pkcs11:token=pkiva;object=checked-rsa;"));
    cr_assert_not_null(strstr(metrics, "pkiva_hsm_key_bad_signatures_total{key="));
    cr_assert_eq(hsm_keys_metrics(hsm, metrics, 16), -1, "too small a buffer is said so");

    X509_free(rsa_cert);
    X509_free(ec_cert);
    EVP_PKEY_free(rsa_pub);
    EVP_PKEY_free(ec_pub);
    hsm_key_free(rsa);
    hsm_key_free(ec);
}

/* ---- the direct ECDSA path (p11direct.c) ----------------------------------------------------- */

struct direct_job {
    const struct hsm_key *key;
    EVP_PKEY *pub;
    int n, ok;
};

/* On a signing thread: n signatures of n different digests, each checked with the public key. */
static int direct_work(void *thread_state, void *arg)
{
    struct direct_job *j = arg;
    (void)thread_state;
    for (int i = 0; i < j->n; i++) {
        unsigned char digest[32], *sig = NULL;
        size_t sig_len = 0;
        EVP_PKEY_CTX *v = EVP_PKEY_CTX_new(j->pub, NULL);
        memset(digest, i, sizeof(digest));
        if (hsm_sign_digest_blocking(hsm, j->key, digest, sizeof(digest), &sig, &sig_len) != 0 ||
            v == NULL || EVP_PKEY_verify_init(v) != 1 ||
            EVP_PKEY_CTX_set_signature_md(v, EVP_sha256()) != 1 ||
            EVP_PKEY_verify(v, sig, sig_len, digest, sizeof(digest)) != 1) {
            EVP_PKEY_CTX_free(v);
            free(sig);
            return UTIL_EHSM;
        }
        EVP_PKEY_CTX_free(v);
        free(sig);
        j->ok++;
    }
    return 0;
}

static void *direct_thread(void *arg)
{
    struct direct_job *j = arg;
    return (void *)(intptr_t)hsm_run_sync(hsm, direct_work, j);
}

/* Every ECDSA signature of the two signing threads, at the same time, is made on the thread's own
 * session and verifies; the first signature of the key on each thread is verified even with
 * verification off. (Each thread's session copy of the key shares its label: the lookup of the
 * other thread found two keys and gave up, until it asked for the token object only.) */
Test(hsm_open, ecdsa_signatures_on_each_signing_threads_own_session)
{
    struct hsm_config cfg = token_cfg(pin_path, 2, 64);
    struct hsm_key *ec = NULL;
    struct direct_job jobs[2];
    pthread_t threads[2];
    struct hsm_stats st;
    char metrics[8192];
    void *rc;

    cfg.ecdsa_verify_every = HSM_VERIFY_NONE;
    cr_assert_eq(hsm_open(&cfg, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "direct-ec", HSM_EC_P256, &ec), 0);
    for (int i = 0; i < 2; i++) {
        jobs[i] = (struct direct_job){.key = ec, .pub = public_copy(ec->pkey), .n = 200};
        cr_assert_eq(pthread_create(&threads[i], NULL, direct_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_join(threads[i], &rc), 0);
        cr_assert_eq((intptr_t)rc, 0, "job %d: %d signatures verified", i, jobs[i].ok);
        EVP_PKEY_free(jobs[i].pub);
    }
    hsm_stats_get(hsm, &st);
    cr_assert_eq(st.direct, 400, "%llu of 400 signatures on the threads' own sessions",
                 (unsigned long long)st.direct);
    cr_assert_geq(st.verified, 1, "the first direct signature is verified");
    cr_assert_leq(st.verified, 2, "and only the first on each thread (verification off)");
    cr_assert_gt(hsm_metrics(hsm, metrics, sizeof(metrics)), 0);
    cr_assert_not_null(strstr(metrics, "pkiva_hsm_direct_signatures_total 400\n"));
    hsm_key_free(ec);
}

/* The test above, 60 times over in processes of their own (the race below shows only with the
 * module fresh in the process): SoftHSM2's session copy being made by one signing thread showed,
 * with CKA_TOKEN true, as a second match of the other thread's search for the token object,
 * which then signed through the provider (1 to 4 runs in 60 before the lookups took turns, so this
 * failed in about half of its runs; never since, in 180 runs of the test above). */
Test(hsm_open, first_lookups_on_both_threads_at_once_stay_direct, .timeout = 600)
{
    char cmd[512];
    int failed = 0;

    (void)snprintf(cmd, sizeof(cmd),
                   "env -u BXFI_MAP /proc/%d/exe " /* else the child is a criterion worker */
                   "--filter='hsm_open/ecdsa_signatures_on_each_signing_threads_own_"
                   "session' >/dev/null 2>&1",
                   (int)getpid());
    for (int run = 0; run < 60; run++)
        failed += system(cmd) != 0;
    cr_assert_eq(failed, 0, "%d of 60 runs lost a signing thread to the provider", failed);
}

/* provider_only ([hsm] direct_sign = no), RSA keys, and signatures outside the signing threads go
 * through pkcs11-provider; they verify as well. */
Test(hsm_open, provider_only_rsa_and_other_threads_use_the_provider)
{
    struct hsm_config cfg = token_cfg(pin_path, 1, 64);
    struct hsm_key *ec = NULL, *rsa = NULL;
    struct direct_job job;
    struct hsm_stats st;

    cfg.provider_only = 1;
    cr_assert_eq(hsm_open(&cfg, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "provider-ec", HSM_EC_P256, &ec), 0);
    job = (struct direct_job){.key = ec, .pub = public_copy(ec->pkey), .n = 20};
    cr_assert_eq(hsm_run_sync(hsm, direct_work, &job), 0);
    EVP_PKEY_free(job.pub);
    hsm_stats_get(hsm, &st);
    cr_assert_eq(st.direct, 0);
    hsm_key_free(ec);
    hsm_close(hsm);
    hsm = NULL;

    cfg.provider_only = 0;
    cr_assert_eq(hsm_open(&cfg, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "provider-rsa", HSM_RSA_2048, &rsa), 0);
    cr_assert_eq(hsm_key_load_blocking(
                     hsm, "pkcs11:token=" TOKEN ";object=provider-ec;type=private", NULL, 0, &ec),
                 0);
    sign_and_verify(ec); /* this thread is no signing thread */
    hsm_stats_get(hsm, &st);
    cr_assert_eq(st.direct, 0);
    job = (struct direct_job){.key = rsa, .pub = public_copy(rsa->pkey), .n = 3};
    cr_assert_eq(hsm_run_sync(hsm, direct_work, &job), 0);
    EVP_PKEY_free(job.pub);
    hsm_stats_get(hsm, &st);
    cr_assert_eq(st.direct, 0, "RSA goes through the provider");
    hsm_key_free(ec);
    hsm_key_free(rsa);
}

struct two_keys {
    struct direct_job a, b;
};

static int alternate_work(void *thread_state, void *arg)
{
    struct two_keys *t = arg;
    int rc = 0;

    for (int i = 0; i < 50 && rc == 0; i++) {
        t->a.n = t->b.n = 1;
        rc = direct_work(thread_state, &t->a);
        if (rc == 0)
            rc = direct_work(thread_state, &t->b);
    }
    return rc;
}

/* Keys on two tokens of one module, used in turn by one signing thread: each is signed on that
 * thread's session on its own token (the thread once kept one session, on the first key's token,
 * so the other key was never found there and went to the provider). */
Test(hsm_open, keys_on_two_tokens_each_on_a_session_of_its_token)
{
    struct hsm_config cfg = token_cfg(pin_path, 1, 64);
    struct hsm_key *k1 = NULL, *k2 = NULL;
    struct two_keys t;
    struct hsm_stats st;

    cr_assert_eq(ts_softhsm_token(dir, "pkiva-two", PIN), 0);
    cr_assert_eq(hsm_open(&cfg, &hsm), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, TOKEN, "first-ec", HSM_EC_P256, &k1), 0);
    cr_assert_eq(hsm_key_generate_blocking(hsm, "pkiva-two", "second-ec", HSM_EC_P256, &k2), 0);
    t.a = (struct direct_job){.key = k1, .pub = public_copy(k1->pkey)};
    t.b = (struct direct_job){.key = k2, .pub = public_copy(k2->pkey)};
    cr_assert_eq(hsm_run_sync(hsm, alternate_work, &t), 0);
    cr_assert_eq(t.a.ok + t.b.ok, 100);
    hsm_stats_get(hsm, &st);
    cr_assert_eq(st.direct, 100, "%llu of 100 signatures on the thread's own sessions",
                 (unsigned long long)st.direct);
    EVP_PKEY_free(t.a.pub);
    EVP_PKEY_free(t.b.pub);
    hsm_key_free(k1);
    hsm_key_free(k2);
}
