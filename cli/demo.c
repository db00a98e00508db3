/* SPDX-License-Identifier: Apache-2.0 */
/* The embedded default: on first run, a SoftHSM2 token, keys generated inside it, a two-level demo
 * PKI (root CA -> issuing CA -> OCSP responder, TSA and three subscriber certificates, one revoked,
 * one on hold) signed through the HSM, the store, PEM files for clients, the admin API's TLS files
 * (a software admin CA, whose key is discarded, a server and an operator certificate) and a
 * generated config.
 * pkiva.conf is written last and marks a complete init; anything an interrupted init left behind is
 * removed and redone, so there is never a half-made default. */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <hsm/hsm.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <util/util.h>

#define MOD "init"
#define TOKEN_LABEL "pkiva"
#define NOT_REVOKED (-100) /* register_cert: leave the certificate good */

enum cert_kind { KIND_ROOT, KIND_SUBCA, KIND_OCSP, KIND_TSA, KIND_EE };

/* The HSM keys the default makes, in the order they are generated and checked. */
enum demo_key { KEY_ROOT, KEY_CA, KEY_OCSP, KEY_TSA, DEMO_KEYS };
static const char *const key_labels[DEMO_KEYS] = {"root-ca", "issuing-ca", "ocsp-responder", "tsa"};

/* The subscriber certificates: good, revoked (keyCompromise), on hold. */
enum demo_ee { EE_GOOD, EE_REVOKED, EE_HOLD, DEMO_EES };

/* Everything an init makes, built up phase by phase and freed by demo_cleanup. */
struct demo {
    const struct cli_demo_options *opts;
    char dir[PATH_MAX];
    char url[CLI_PATH_MAX];
    char pin_file[PATH_MAX];
    struct hsm_settings hsm_defaults; /* [hsm]'s table: the SoftHSM2 module path */
    struct hsm *hsm;
    struct store *store;
    struct hsm_key *keys[DEMO_KEYS];
    X509 *root, *ca, *ocsp, *tsa, *ee[DEMO_EES];
};

static int path_join(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    return (n < 0 || (size_t)n >= len) ? UTIL_EINVAL : UTIL_OK;
}

static int mkdir_mode(const char *path, mode_t mode)
{
    if (mkdir(path, mode) != 0 && errno != EEXIST) {
        int rc = util_errno(errno);
        UTIL_ERROR(MOD, "cannot create directory %s: %s", path, strerror(errno));
        return rc;
    }
    return UTIL_OK;
}

/* Runs argv without a shell, output to our stderr only on failure (softhsm2-util is chatty). */
static int run_quiet(char *const argv[])
{
    int status = 0;
    pid_t pid = fork();
    if (pid < 0)
        return util_errno(errno);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0)
            (void)dup2(devnull, STDOUT_FILENO); /* best effort: chatter only */
        execvp(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return util_errno(errno);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        UTIL_ERROR(MOD, "%s failed (exit status %d)", argv[0],
                   WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        return UTIL_EHSM;
    }
    return UTIL_OK;
}

static int random_secret(char *out, size_t bytes)
{
    unsigned char raw[32];
    if (bytes > sizeof(raw) || RAND_bytes(raw, (int)bytes) != 1)
        return UTIL_ECRYPTO;
    util_hex(raw, bytes, out);
    OPENSSL_cleanse(raw, sizeof(raw));
    return UTIL_OK;
}

static int write_text(const char *dir, const char *name, const char *text, int mode)
{
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), dir, name);
    if (rc == UTIL_OK)
        rc = util_file_write_atomic(path, text, strlen(text), mode);
    if (rc != UTIL_OK)
        UTIL_ERROR(MOD, "cannot write %s/%s: %s", dir, name, util_strerror(rc));
    return rc;
}

/* Token with its own softhsm2.conf, PIN files readable by the owner only. */
static int make_token(struct demo *d, char *pin_file, size_t pin_file_len)
{
    char hsm_dir[PATH_MAX], tokens[PATH_MAX], conf[PATH_MAX + 128], conf_path[PATH_MAX];
    char pin[33], so_pin[33];
    int rc, n;

    rc = path_join(hsm_dir, sizeof(hsm_dir), d->dir, "hsm");
    if (rc == UTIL_OK)
        rc = path_join(tokens, sizeof(tokens), hsm_dir, "tokens");
    if (rc == UTIL_OK)
        rc = path_join(conf_path, sizeof(conf_path), hsm_dir, "softhsm2.conf");
    if (rc == UTIL_OK)
        rc = path_join(pin_file, pin_file_len, hsm_dir, "user.pin");
    if (rc != UTIL_OK)
        return rc;
    rc = mkdir_mode(hsm_dir, 0700);
    if (rc == UTIL_OK)
        rc = mkdir_mode(tokens, 0700);
    if (rc != UTIL_OK)
        return rc;
    n = snprintf(conf, sizeof(conf),
                 "# SoftHSM2 configuration for pkiva's embedded default token.\n"
                 "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n"
                 "slots.removable = false\n",
                 tokens);
    if (n < 0 || (size_t)n >= sizeof(conf))
        return UTIL_EINVAL;
    rc = write_text(hsm_dir, "softhsm2.conf", conf, 0600);
    if (rc != UTIL_OK)
        return rc;
    /* 24 characters: pkcs11-provider 1.0 cuts PINs read from a file at 31 characters. */
    rc = random_secret(pin, 12);
    if (rc == UTIL_OK)
        rc = random_secret(so_pin, 12);
    if (rc != UTIL_OK)
        return rc;
    rc = write_text(hsm_dir, "user.pin", pin, 0600);
    if (rc == UTIL_OK)
        rc = write_text(hsm_dir, "so.pin", so_pin, 0600);
    if (rc != UTIL_OK)
        return rc;
    if (setenv("SOFTHSM2_CONF", conf_path, 1) != 0)
        return util_errno(errno);
    {
        char *argv[] = {
            "softhsm2-util", "--init-token", "--free", "--label", TOKEN_LABEL, "--pin", pin,
            "--so-pin",      so_pin,         NULL};
        rc = run_quiet(argv);
    }
    OPENSSL_cleanse(pin, sizeof(pin));
    OPENSSL_cleanse(so_pin, sizeof(so_pin));
    if (rc != UTIL_OK)
        UTIL_ERROR(MOD, "could not initialise the SoftHSM2 token (is softhsm2 installed?)");
    return rc;
}

static int add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext = NULL;
    int ok;
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : cert, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, MOD, "extension %s = %s", OBJ_nid2sn(nid), value);
        return UTIL_ECRYPTO;
    }
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? UTIL_OK : UTIL_ECRYPTO;
}

/* Copies a provider key's public half into a default-context key, so that certificates carry a
 * plain SubjectPublicKeyInfo and later verification needs no provider. */
static EVP_PKEY *public_copy(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    EVP_PKEY *pub = NULL;
    int len = i2d_PUBKEY(key, &der);
    if (len <= 0)
        return NULL;
    p = der;
    pub = d2i_PUBKEY(NULL, &p, len);
    OPENSSL_free(der);
    return pub;
}

/* The part every demo certificate shares: v3, a random positive 16-octet serial, subject
 * O=pkiva demo, CN=cn (C=VN for the PKI), issuer (self when NULL), validity backdated an hour so
 * that clients with a slightly slow clock accept fresh certificates, the public key, SKI and AKI.
 * The caller adds the profile's extensions and signs. */
static int cert_skeleton(const char *country, const char *cn, EVP_PKEY *pub, X509 *issuer, int days,
                         X509 **out)
{
    int rc = UTIL_ECRYPTO;
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char serial_raw[16];
    BIGNUM *serial_bn = NULL;

    if (cert == NULL || name == NULL || RAND_bytes(serial_raw, sizeof(serial_raw)) != 1)
        goto out;
    serial_raw[0] = (unsigned char)((serial_raw[0] & 0x7f) | 0x40); /* positive, 16 octets */
    serial_bn = BN_bin2bn(serial_raw, sizeof(serial_raw), NULL);
    if (serial_bn == NULL || BN_to_ASN1_INTEGER(serial_bn, X509_get_serialNumber(cert)) == NULL ||
        X509_set_version(cert, X509_VERSION_3) != 1)
        goto out;
    if ((country != NULL &&
         X509_NAME_add_entry_by_txt(name, "C", MBSTRING_UTF8, (const unsigned char *)country, -1,
                                    -1, 0) != 1) ||
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"pkiva demo",
                                   -1, -1, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                   0) != 1 ||
        X509_set_subject_name(cert, name) != 1 ||
        X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) != 1)
        goto out;
    if (X509_gmtime_adj(X509_getm_notBefore(cert), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), (long)days * 86400) == NULL ||
        X509_set_pubkey(cert, pub) != 1)
        goto out;
    rc = add_ext(cert, issuer, NID_subject_key_identifier, "hash");
    if (rc != UTIL_OK)
        goto out;
    if (issuer != NULL)
        rc = add_ext(cert, issuer, NID_authority_key_identifier, "keyid:always");
    if (rc != UTIL_OK)
        goto out;
    *out = cert;
    cert = NULL;
    rc = UTIL_OK;
out:
    X509_free(cert);
    X509_NAME_free(name);
    BN_free(serial_bn);
    return rc;
}

static int make_cert(struct demo *d, enum cert_kind kind, const char *cn, EVP_PKEY *subject_key,
                     X509 *issuer, const struct hsm_key *signer, const char *issuer_name, int days,
                     X509 **out)
{
    int rc = UTIL_ECRYPTO;
    X509 *cert = NULL;
    EVP_PKEY *pub = NULL;
    EVP_MD_CTX *mdctx = NULL;
    char buf[3 * CLI_PATH_MAX];

    pub = public_copy(subject_key);
    if (pub == NULL)
        goto out;
    rc = cert_skeleton("VN", cn, pub, issuer, days, &cert);
    if (rc != UTIL_OK)
        goto out;
    switch (kind) {
    case KIND_ROOT:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
        if (rc != UTIL_OK)
            goto out;
        break;
    case KIND_SUBCA:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
        if (rc != UTIL_OK)
            goto out;
        break;
    case KIND_OCSP:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_ext_key_usage, "OCSPSigning");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_id_pkix_OCSP_noCheck, "ignored");
        if (rc != UTIL_OK)
            goto out;
        break;
    case KIND_TSA:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_ext_key_usage, "critical,timeStamping");
        if (rc != UTIL_OK)
            goto out;
        break;
    case KIND_EE:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_ext_key_usage, "clientAuth,emailProtection");
        if (rc != UTIL_OK)
            goto out;
        break;
    }
    if (issuer != NULL) {
        /* Everything below the root points back at this service for status and its issuer. */
        (void)snprintf(buf, sizeof(buf), "URI:%s/crl/%s.crl", d->url, issuer_name);
        rc = add_ext(cert, issuer, NID_crl_distribution_points, buf);
        if (rc != UTIL_OK)
            goto out;
        (void)snprintf(buf, sizeof(buf), "OCSP;URI:%s/,caIssuers;URI:%s/ca/%s.crt", d->url, d->url,
                       issuer_name);
        rc = add_ext(cert, issuer, NID_info_access, buf);
        if (rc != UTIL_OK)
            goto out;
    }
    rc = hsm_sign_ctx_new_blocking(d->hsm, signer, &mdctx);
    if (rc != UTIL_OK)
        goto out;
    ERR_clear_error();
    if (X509_sign_ctx(cert, mdctx) <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, MOD, "signing the certificate for %s in the HSM failed",
                         cn);
        rc = UTIL_EHSM;
        goto out;
    }
    /* Made through pkcs11-provider's own digest-and-sign path (X509_sign_ctx needs the context),
     * so checked here: a certificate with a bad signature is never written (issue 21). */
    if (X509_verify(cert, issuer != NULL ? X509_get0_pubkey(issuer) : pub) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, MOD,
                         "the HSM's signature on the certificate for %s does not verify", cn);
        rc = UTIL_EHSM;
        goto out;
    }
    *out = cert;
    cert = NULL;
    rc = UTIL_OK;
out:
    if (rc == UTIL_ECRYPTO)
        util_log_openssl(UTIL_LOG_ERROR, MOD, "building the certificate for %s failed", cn);
    X509_free(cert);
    EVP_PKEY_free(pub);
    EVP_MD_CTX_free(mdctx);
    return rc;
}

/* ---- the admin API's TLS -------------------------------------------------------------------- */

enum admin_kind { ADMIN_CA, ADMIN_SERVER, ADMIN_OPERATOR };

/* The admin API's certificates are ordinary software certificates: the token's keys sign OCSP
 * responses, CRLs and time stamps and nothing else. The admin CA's key lives only for the
 * duration of the first run. */
static int admin_cert(enum admin_kind kind, const char *cn, const char *san, EVP_PKEY *key,
                      X509 *issuer, EVP_PKEY *issuer_key, int days, X509 **out)
{
    X509 *cert = NULL;
    int rc = cert_skeleton(NULL, cn, key, issuer, days, &cert);

    if (rc != UTIL_OK)
        goto out;
    switch (kind) {
    case ADMIN_CA:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,keyCertSign");
        if (rc != UTIL_OK)
            goto out;
        break;
    case ADMIN_SERVER:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_ext_key_usage, "serverAuth");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_subject_alt_name, san);
        if (rc != UTIL_OK)
            goto out;
        break;
    case ADMIN_OPERATOR:
        rc = add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature");
        if (rc == UTIL_OK)
            rc = add_ext(cert, issuer, NID_ext_key_usage, "clientAuth");
        if (rc != UTIL_OK)
            goto out;
        break;
    }
    rc = UTIL_ECRYPTO;
    if (X509_sign(cert, issuer_key, EVP_sha256()) <= 0)
        goto out;
    *out = cert;
    cert = NULL;
    rc = UTIL_OK;
out:
    if (rc == UTIL_ECRYPTO)
        util_log_openssl(UTIL_LOG_ERROR, MOD, "building the admin certificate %s failed", cn);
    X509_free(cert);
    return rc;
}

/* Writes a certificate (mode 0644) or a private key (mode 0600) as PEM under DIR/admin/. */
static int admin_write(struct demo *d, const char *name, X509 *cert, EVP_PKEY *key)
{
    char dir[PATH_MAX];
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len = 0;
    int rc = UTIL_ECRYPTO;

    if (bio == NULL)
        return UTIL_ENOMEM;
    if (cert != NULL ? PEM_write_bio_X509(bio, cert) != 1
                     : PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) != 1)
        goto out;
    len = BIO_get_mem_data(bio, &data);
    rc = path_join(dir, sizeof(dir), d->dir, "admin");
    if (rc != UTIL_OK)
        goto out;
    {
        char path[PATH_MAX];
        rc = path_join(path, sizeof(path), dir, name);
        if (rc != UTIL_OK)
            goto out;
        rc = util_file_write_atomic(path, data, (size_t)len, cert != NULL ? 0644 : 0600);
        if (rc != UTIL_OK)
            UTIL_ERROR(MOD, "cannot write %s: %s", path, util_strerror(rc));
    }
out:
    if (len > 0 && data != NULL && key != NULL)
        OPENSSL_cleanse(data, (size_t)len);
    BIO_free(bio);
    return rc;
}

/* DIR/admin/: admin-ca.pem, server.pem + server.key (for 127.0.0.1, localhost and the admin
 * listener's address), operator.pem + operator.key (clientAuth). */
static int make_admin_tls(struct demo *d)
{
    EVP_PKEY *ca_key = NULL, *server_key = NULL, *operator_key = NULL;
    X509 *ca = NULL, *server = NULL, *operator_cert = NULL;
    struct http_listener_config listen;
    char path[PATH_MAX], san[160];
    int rc = UTIL_ECRYPTO;

    memset(&listen, 0, sizeof(listen));
    (void)snprintf(san, sizeof(san), "IP:127.0.0.1,DNS:localhost");
    if (cli_parse_listen(d->opts->admin_listen, &listen) == UTIL_OK &&
        strcmp(listen.host, "127.0.0.1") != 0 && strcmp(listen.host, "0.0.0.0") != 0 &&
        strcmp(listen.host, "::") != 0)
        (void)snprintf(san, sizeof(san), "IP:127.0.0.1,DNS:localhost,IP:%s", listen.host);
    rc = path_join(path, sizeof(path), d->dir, "admin");
    if (rc == UTIL_OK)
        rc = mkdir_mode(path, 0700);
    if (rc != UTIL_OK)
        goto out;
    rc = UTIL_ECRYPTO;
    ca_key = EVP_EC_gen("P-256");
    server_key = EVP_EC_gen("P-256");
    operator_key = EVP_EC_gen("P-256");
    if (ca_key == NULL || server_key == NULL || operator_key == NULL)
        goto out;
    rc = admin_cert(ADMIN_CA, "pkiva Demo Admin CA", NULL, ca_key, NULL, ca_key, 3650, &ca);
    if (rc == UTIL_OK)
        rc = admin_cert(ADMIN_SERVER, "pkiva admin API", san, server_key, ca, ca_key, 825, &server);
    if (rc == UTIL_OK)
        rc = admin_cert(ADMIN_OPERATOR, "pkiva demo operator", NULL, operator_key, ca, ca_key, 365,
                        &operator_cert);
    if (rc != UTIL_OK)
        goto out;
    rc = admin_write(d, "admin-ca.pem", ca, NULL);
    if (rc == UTIL_OK)
        rc = admin_write(d, "server.pem", server, NULL);
    if (rc == UTIL_OK)
        rc = admin_write(d, "server.key", NULL, server_key);
    if (rc == UTIL_OK)
        rc = admin_write(d, "operator.pem", operator_cert, NULL);
    if (rc == UTIL_OK)
        rc = admin_write(d, "operator.key", NULL, operator_key);
    if (rc != UTIL_OK)
        goto out;
out:
    EVP_PKEY_free(ca_key); /* the admin CA issues nothing after the first run */
    EVP_PKEY_free(server_key);
    EVP_PKEY_free(operator_key);
    X509_free(ca);
    X509_free(server);
    X509_free(operator_cert);
    return rc;
}

static int write_pem(struct demo *d, const char *name, X509 *const *certs, int n)
{
    char path[PATH_MAX], pki[PATH_MAX];
    BIO *bio = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len;
    int rc = UTIL_ECRYPTO;

    if (bio == NULL)
        return UTIL_ENOMEM;
    for (int i = 0; i < n; i++)
        if (PEM_write_bio_X509(bio, certs[i]) != 1)
            goto out;
    len = BIO_get_mem_data(bio, &data);
    rc = path_join(pki, sizeof(pki), d->dir, "pki");
    if (rc == UTIL_OK)
        rc = path_join(path, sizeof(path), pki, name);
    if (rc != UTIL_OK)
        goto out;
    rc = util_file_write_atomic(path, data, (size_t)len, 0644);
    if (rc != UTIL_OK)
        UTIL_ERROR(MOD, "cannot write %s: %s", path, util_strerror(rc));
out:
    BIO_free(bio);
    return rc;
}

static int register_cert(struct demo *d, int64_t issuer_id, X509 *cert, int revoke_reason)
{
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    unsigned char *der = NULL;
    int der_len;
    struct store_cert_new nc;
    char subject[256];
    int rc;

    rc = store_serial_from_asn1(X509_get0_serialNumber(cert), serial, &serial_len);
    if (rc != UTIL_OK)
        return rc;
    der_len = i2d_X509(cert, &der);
    if (der_len <= 0)
        return UTIL_ECRYPTO;
    memset(&nc, 0, sizeof(nc));
    nc.issuer_id = issuer_id;
    nc.serial = serial;
    nc.serial_len = serial_len;
    (void)util_asn1_time_unix(X509_get0_notBefore(cert), &nc.not_before); /* else stays 0 */
    (void)util_asn1_time_unix(X509_get0_notAfter(cert), &nc.not_after);
    (void)X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    nc.subject = subject;
    nc.cert_der = der;
    nc.cert_len = (size_t)der_len;
    nc.actor = "pkiva-init";
    rc = store_cert_add_blocking(d->store, &nc, NULL);
    OPENSSL_free(der);
    if (rc == UTIL_OK && revoke_reason != NOT_REVOKED) {
        struct store_revocation rev;
        memset(&rev, 0, sizeof(rev));
        rev.issuer_id = issuer_id;
        rev.serial = serial;
        rev.serial_len = serial_len;
        rev.reason = revoke_reason;
        rev.request_id = "demo-init";
        rev.actor = "pkiva-init";
        rc = store_cert_revoke_blocking(d->store, &rev, NULL);
    }
    return rc;
}

static int register_issuer(struct demo *d, const char *name, X509 *cert, int64_t *id)
{
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    int rc;
    if (len <= 0)
        return UTIL_ECRYPTO;
    rc = store_issuer_put_blocking(d->store, name, der, (size_t)len, id);
    OPENSSL_free(der);
    return rc;
}

static void remove_leftovers(const char *dir)
{
    static const char *const names[] = {"hsm",          "pki",     "pkiva.db", "pkiva.db-wal",
                                        "pkiva.db-shm", "publish", "admin"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[PATH_MAX];
        struct stat st;
        if (path_join(path, sizeof(path), dir, names[i]) != UTIL_OK || lstat(path, &st) != 0)
            continue;
        UTIL_WARN(MOD, "removing %s left by an interrupted first run", path);
        if (S_ISDIR(st.st_mode)) {
            char *argv[] = {"rm", "-rf", "--", path, NULL};
            (void)run_quiet(argv); /* the init that follows fails loudly if it could not */
        } else {
            (void)unlink(path); /* likewise */
        }
    }
}

static int write_config(struct demo *d, const char *pin_file, const char *alg)
{
    char text[8192];
    char hsm_conf[PATH_MAX];
    int n;
    n = snprintf(hsm_conf, sizeof(hsm_conf), "%s/hsm/softhsm2.conf", d->dir);
    if (n < 0 || (size_t)n >= sizeof(hsm_conf))
        return UTIL_EINVAL;
    n = snprintf(
        text, sizeof(text),
        "# Generated by pkiva on first run (embedded default: SoftHSM2 token, demo PKI, %s keys).\n"
        "# Every directive is documented in conf/pkiva.conf of the source tree.\n\n"
        "[server]\n"
        "data_dir = %s\n"
        "listen = %s\n"
        "admin_listen = %s\n"
        "public_url = %s\n\n"
        "[hsm]\n"
        "module = %s\n"
        "softhsm_conf = %s\n"
        "pin_file = %s\n"
        "no_deinit = yes\n\n"
        "[store]\n"
        "path = %s/pkiva.db\n\n"
        "[admin]\n"
        "token_file = %s/admin.token\n"
        "# HTTPS with client certificates (mutual TLS); the bearer token is accepted as well.\n"
        "tls_cert = %s/admin/server.pem\n"
        "tls_key = %s/admin/server.key\n"
        "client_ca = %s/admin/admin-ca.pem\n"
        "# How pkiva commands (crl publish) reach the running server.\n"
        "server_ca = %s/admin/admin-ca.pem\n"
        "client_cert = %s/admin/operator.pem\n"
        "client_key = %s/admin/operator.key\n\n"
        "# The root CA answers OCSP for the issuing CA with its own key.\n"
        "[issuer.root]\n"
        "cert = %s/pki/root-ca.pem\n"
        "key = pkcs11:token=" TOKEN_LABEL ";object=root-ca;type=private\n\n"
        "# The issuing CA delegates OCSP signing to a responder certificate.\n"
        "[issuer.demo-ca]\n"
        "cert = %s/pki/issuing-ca.pem\n"
        "key = pkcs11:token=" TOKEN_LABEL ";object=issuing-ca;type=private\n"
        "ocsp_cert = %s/pki/ocsp-responder.pem\n"
        "ocsp_key = pkcs11:token=" TOKEN_LABEL ";object=ocsp-responder;type=private\n\n"
        "[tsa]\n"
        "# The embedded default runs on lab machines whose clock may not be NTP-synchronised.\n"
        "# Production: yes (tokens then get timeNotAvailable while the clock is unsynchronised).\n"
        "require_clock_sync = no\n\n"
        "# Demo time-stamping unit; 2.999 is the ITU-T example arc: use your own policy OID.\n"
        "[tsa.demo-tsa]\n"
        "cert = %s/pki/tsa.pem\n"
        "chain = %s/pki/tsa-chain.pem\n"
        "key = pkcs11:token=" TOKEN_LABEL ";object=tsa;type=private\n"
        "policy = 2.999.1.1\n"
        "accepted_policies = 2.999.1.2\n"
        "accuracy = 100ms\n"
        "tsa_name = yes\n",
        alg, d->dir, d->opts->public_listen, d->opts->admin_listen, d->url, d->hsm_defaults.module,
        hsm_conf, pin_file, d->dir, d->dir, d->dir, d->dir, d->dir, d->dir, d->dir, d->dir, d->dir,
        d->dir, d->dir, d->dir, d->dir);
    if (n < 0 || (size_t)n >= sizeof(text))
        return UTIL_EINVAL;
    return write_text(d->dir, "pkiva.conf", text, 0600);
}

/* Phase 1: the data directory, made private and resolved; *exists when a complete default is
 * already there. Anything an interrupted init left behind is removed. */
static int demo_prepare_dir(struct demo *d, int *exists)
{
    const struct cli_demo_options *opts = d->opts;
    char path[PATH_MAX];
    struct stat st;
    int rc;

    *exists = 0;
    if (mkdir_mode(opts->data_dir, 0700) != UTIL_OK)
        return UTIL_EPERM;
    if (realpath(opts->data_dir, d->dir) == NULL) {
        UTIL_ERROR(MOD, "data directory %s: %s", opts->data_dir, strerror(errno));
        return util_errno(errno);
    }
    if (access(d->dir, W_OK | X_OK) != 0) {
        UTIL_ERROR(MOD, "data directory %s is not writable", d->dir);
        return UTIL_EPERM;
    }
    rc = path_join(path, sizeof(path), d->dir, "pkiva.conf");
    if (rc != UTIL_OK)
        return rc;
    if (stat(path, &st) == 0) {
        *exists = 1; /* a complete default exists: reuse it */
        return UTIL_OK;
    }
    if (opts->public_url[0] != '\0')
        (void)snprintf(d->url, sizeof(d->url), "%s", opts->public_url);
    else
        (void)snprintf(d->url, sizeof(d->url), "http://%s", opts->public_listen);
    remove_leftovers(d->dir);
    return UTIL_OK;
}

/* Phase 2: the SoftHSM2 token, opened, with the four keys generated and self-checked in it. */
static int demo_make_keys(struct demo *d, int alg)
{
    struct hsm_config hcfg;
    int rc = make_token(d, d->pin_file, sizeof(d->pin_file));

    if (rc != UTIL_OK)
        return rc;
    memset(&hcfg, 0, sizeof(hcfg));
    hcfg.module_path = d->hsm_defaults.module;
    hcfg.pin_file = d->pin_file;
    hcfg.softhsm_no_deinit = 1;
    hcfg.sessions = 1;
    hcfg.queue_max = 16;
    rc = hsm_open(&hcfg, &d->hsm);
    for (int i = 0; rc == UTIL_OK && i < DEMO_KEYS; i++)
        rc = hsm_key_generate_blocking(d->hsm, TOKEN_LABEL, key_labels[i], alg, &d->keys[i]);
    /* The self-check `pkiva serve` runs at every start, once here already: a token whose
     * signatures do not verify is noticed before any certificate is made with it. */
    for (int i = 0; rc == UTIL_OK && i < DEMO_KEYS; i++)
        rc = hsm_key_check_blocking(d->hsm, d->keys[i], NULL);
    return rc;
}

/* Phase 3: the certificates, signed in the HSM: root, issuing CA, responder, TSA, subscribers. */
static int demo_make_certs(struct demo *d)
{
    static const char *const ee_names[DEMO_EES] = {
        "Demo Subscriber Good", "Demo Subscriber Revoked", "Demo Subscriber On Hold"};
    struct hsm_key *const *k = d->keys;
    EVP_PKEY *ee_key = NULL;
    int rc;

    rc = make_cert(d, KIND_ROOT, "pkiva Demo Root CA", k[KEY_ROOT]->pkey, NULL, k[KEY_ROOT], NULL,
                   7300, &d->root);
    if (rc == UTIL_OK)
        rc = make_cert(d, KIND_SUBCA, "pkiva Demo Issuing CA", k[KEY_CA]->pkey, d->root,
                       k[KEY_ROOT], "root", 3650, &d->ca);
    if (rc == UTIL_OK)
        rc = make_cert(d, KIND_OCSP, "pkiva Demo OCSP Responder", k[KEY_OCSP]->pkey, d->ca,
                       k[KEY_CA], "demo-ca", 730, &d->ocsp);
    if (rc == UTIL_OK)
        rc = make_cert(d, KIND_TSA, "pkiva Demo TSA", k[KEY_TSA]->pkey, d->ca, k[KEY_CA], "demo-ca",
                       1825, &d->tsa);
    if (rc != UTIL_OK)
        return rc;
    /* Subscriber keys are not the service's to keep: software keys, discarded after issuance. */
    ee_key = EVP_EC_gen("P-256");
    if (ee_key == NULL)
        return UTIL_ECRYPTO;
    for (int i = 0; rc == UTIL_OK && i < DEMO_EES; i++)
        rc =
            make_cert(d, KIND_EE, ee_names[i], ee_key, d->ca, k[KEY_CA], "demo-ca", 365, &d->ee[i]);
    EVP_PKEY_free(ee_key);
    return rc;
}

/* Phase 4: the PEM files for clients, in pki/. */
static int demo_write_pems(struct demo *d)
{
    X509 *chain_tsa[] = {d->tsa, d->ca, d->root};
    X509 *chain_ca[] = {d->ca, d->root};
    const struct {
        const char *name;
        X509 *const *certs;
        int n;
    } files[] = {
        {"root-ca.pem", &d->root, 1},
        {"issuing-ca.pem", &d->ca, 1},
        {"ca-chain.pem", chain_ca, 2},
        {"ocsp-responder.pem", &d->ocsp, 1},
        {"tsa.pem", &d->tsa, 1},
        {"tsa-chain.pem", chain_tsa, 3},
        {"demo-good.pem", &d->ee[EE_GOOD], 1},
        {"demo-revoked.pem", &d->ee[EE_REVOKED], 1},
        {"demo-hold.pem", &d->ee[EE_HOLD], 1},
    };
    char path[PATH_MAX];
    int rc = path_join(path, sizeof(path), d->dir, "pki");

    if (rc == UTIL_OK)
        rc = mkdir_mode(path, 0755);
    for (size_t i = 0; rc == UTIL_OK && i < sizeof(files) / sizeof(files[0]); i++)
        rc = write_pem(d, files[i].name, files[i].certs, files[i].n);
    return rc;
}

/* Phase 5: the store, with both issuers and every certificate in one transaction, and the audit
 * record of the init. */
static int demo_fill_store(struct demo *d)
{
    char path[PATH_MAX];
    int64_t root_id = 0, ca_id = 0;
    int rc = path_join(path, sizeof(path), d->dir, "pkiva.db");

    if (rc == UTIL_OK)
        rc = store_open_blocking(path, STORE_OPEN_CREATE, &d->store);
    if (rc == UTIL_OK)
        rc = store_begin_blocking(d->store);
    if (rc != UTIL_OK)
        return rc;
    rc = register_issuer(d, "root", d->root, &root_id);
    if (rc == UTIL_OK)
        rc = register_issuer(d, "demo-ca", d->ca, &ca_id);
    if (rc == UTIL_OK)
        rc = register_cert(d, root_id, d->ca, NOT_REVOKED);
    if (rc == UTIL_OK)
        rc = register_cert(d, ca_id, d->ocsp, NOT_REVOKED);
    if (rc == UTIL_OK)
        rc = register_cert(d, ca_id, d->tsa, NOT_REVOKED);
    if (rc == UTIL_OK)
        rc = register_cert(d, ca_id, d->ee[EE_GOOD], NOT_REVOKED);
    if (rc == UTIL_OK)
        rc = register_cert(d, ca_id, d->ee[EE_REVOKED], STORE_REASON_KEY_COMPROMISE);
    if (rc == UTIL_OK)
        rc = register_cert(d, ca_id, d->ee[EE_HOLD], STORE_REASON_CERTIFICATE_HOLD);
    if (rc != UTIL_OK) {
        (void)store_rollback_blocking(d->store); /* the init is redone from scratch anyway */
        return rc;
    }
    rc = store_audit_append_blocking(d->store, "pkiva-init", "init",
                                     "{\"what\":\"embedded default created\"}");
    if (rc == UTIL_OK)
        rc = store_commit_blocking(d->store);
    return rc;
}

/* Phase 6: the admin API's bearer token (owner-only like the PIN) and its TLS files. */
static int demo_make_admin(struct demo *d)
{
    char token[65];
    int rc = random_secret(token, 32);

    if (rc == UTIL_OK)
        rc = write_text(d->dir, "admin.token", token, 0600);
    OPENSSL_cleanse(token, sizeof(token));
    if (rc == UTIL_OK)
        rc = make_admin_tls(d);
    return rc;
}

static void demo_cleanup(struct demo *d)
{
    for (int i = 0; i < DEMO_EES; i++)
        X509_free(d->ee[i]);
    X509_free(d->root);
    X509_free(d->ca);
    X509_free(d->ocsp);
    X509_free(d->tsa);
    for (int i = 0; i < DEMO_KEYS; i++)
        hsm_key_free(d->keys[i]);
    store_close(d->store);
    hsm_close(d->hsm);
}

int cli_demo_init_blocking(const struct cli_demo_options *opts, int *created)
{
    struct demo d;
    const char *alg_name = opts->alg[0] ? opts->alg : "ec-p256";
    int alg, exists = 0, rc;

    *created = 0;
    memset(&d, 0, sizeof(d));
    d.opts = opts;
    hsm_settings_default(&d.hsm_defaults);
    alg = hsm_alg_from_name(alg_name);
    if (alg < 0) {
        UTIL_ERROR(MOD, "unknown key algorithm '%s' (ec-p256, ec-p384, rsa-2048, rsa-3072)",
                   alg_name);
        return UTIL_EINVAL;
    }
    rc = demo_prepare_dir(&d, &exists);
    if (rc != UTIL_OK || exists)
        return rc;
    UTIL_INFO(MOD, "first run: creating the embedded default in %s (%s keys)", d.dir, alg_name);
    rc = demo_make_keys(&d, alg);
    if (rc == UTIL_OK)
        rc = demo_make_certs(&d);
    if (rc == UTIL_OK)
        rc = demo_write_pems(&d);
    if (rc == UTIL_OK)
        rc = demo_fill_store(&d);
    if (rc == UTIL_OK)
        rc = demo_make_admin(&d);
    /* Last: pkiva.conf marks a complete init (see the top of this file). */
    if (rc == UTIL_OK)
        rc = write_config(&d, d.pin_file, alg_name);
    if (rc == UTIL_OK) {
        *created = 1;
        UTIL_INFO(MOD,
                  "embedded default ready: config %s/pkiva.conf, PEM files in %s/pki/, admin "
                  "API TLS files in %s/admin/",
                  d.dir, d.dir, d.dir);
    } else {
        UTIL_ERROR(MOD, "first run failed: %s (nothing usable was left in %s; run again)",
                   util_strerror(rc), d.dir);
    }
    demo_cleanup(&d);
    return rc;
}
