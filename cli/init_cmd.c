/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva init`: prepares a deployment before its first `serve`. With --config FILE (a real CA):
 * validates the configuration and the files it names, proves each configured PKCS#11 key can sign
 * and belongs to its certificate (a test signature made in the token, verified with the
 * certificate's public key), creates and migrates the store, registers the issuers, and prints
 * the freshness contract, the HSM outage budget and what to do next. Without --config it makes
 * the embedded demo (serve.c). Both are idempotent: a second run changes nothing and says so.
 *
 * Keys are checked through hsm/'s public API only: hsm_key_check_blocking, the self-check serve
 * also runs (production signing path, module/mechanism/reason on failure), then a signature
 * verified here with the configured certificate's key (hsm_key_load_blocking, hsm_sign_blocking). */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <errno.h>
#include <getopt.h>
#include <hsm/hsm.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/stat.h>
#include <unistd.h>
#include <util/util.h>

#define MOD "init"

static const char init_help[] =
    "usage: pkiva init --config FILE\n"
    "       pkiva init [--data DIR] [--alg ALG] [--listen HOST:PORT] [--admin-listen HOST:PORT]\n"
    "                  [--public-url URL]\n\n"
    "With --config (a real deployment): validates FILE and what it names ('pkiva config check'),\n"
    "checks that every PKCS#11 URI ([issuer.*] key and ocsp_key, [tsa.*] key) names a private\n"
    "key in the token that signs, and that a test signature verifies with the configured\n"
    "certificate's public key; then creates the data folder and the store (or migrates an\n"
    "existing one), registers the issuers, and prints the freshness contract, the HSM outage\n"
    "budget and the next steps. Run it as the user the service runs as (pkiva), so that the\n"
    "files it creates belong to that user. Idempotent: a second run changes nothing.\n\n"
    "Without --config: creates the embedded demo in DIR (default ./var) without serving: a\n"
    "SoftHSM2 token, a demo PKI signed in it, the store and DIR/pkiva.conf.\n"
    "ALG: ec-p256 (default), ec-p384, rsa-2048, rsa-3072.\n";

/* The test value signed with every key. What is signed does not matter; that the token signs
 * and the certificate's public key verifies it does. */
static const char probe[] = "pkiva init: key check";

/* Loads the key at uri, signs the probe in the token and verifies the signature with the public
 * key of the certificate in cert_path. Prints one line either way; returns 0 when it holds. */
static int check_key(struct hsm *hsm, const char *what, const char *uri, const char *cert_path,
                     const char *digest, int rsa_pss)
{
    struct hsm_key *key = NULL;
    X509 *cert = NULL;
    EVP_MD_CTX *vctx = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int rc, ok = 0;

    cert = cli__load_pem_cert(cert_path);
    if (cert == NULL) {
        fprintf(stderr, "pkiva init: %s: cannot read the certificate %s\n", what, cert_path);
        goto out;
    }
    rc = hsm_key_load_blocking(hsm, uri, digest, rsa_pss, &key);
    if (rc == UTIL_ENOTFOUND) {
        fprintf(stderr, "pkiva init: %s %s: no such private key in the token\n", what, uri);
        goto out;
    }
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva init: %s %s: %s\n", what, uri, util_strerror(rc));
        goto out;
    }
    /* hsm/'s own self-check first (issue 21): a test value through the production signing path,
     * verified with the token's public key; a failure names module, mechanism and reason. */
    rc = hsm_key_check_blocking(hsm, key, NULL);
    if (rc != UTIL_OK) {
        fprintf(stderr,
                "pkiva init: %s %s fails the signing self-check (see the hsm error above)\n", what,
                uri);
        goto out;
    }
    rc = hsm_sign_blocking(hsm, key, (const unsigned char *)probe, sizeof(probe) - 1, &sig,
                           &sig_len);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva init: %s %s cannot sign: %s\n", what, uri, util_strerror(rc));
        goto out;
    }
    /* Verified in the default library context with the certificate's key: nothing of the
     * token is involved, so a key that signs but belongs to another certificate fails here. */
    ERR_clear_error();
    vctx = EVP_MD_CTX_new();
    if (vctx == NULL ||
        EVP_DigestVerifyInit_ex(vctx, &pctx, key->md, NULL, NULL, X509_get0_pubkey(cert), NULL) !=
            1 ||
        (key->rsa_pss && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
                          EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))) {
        util_log_openssl(UTIL_LOG_ERROR, MOD, "%s: cannot verify with %s", what, cert_path);
        fprintf(stderr, "pkiva init: %s: cannot verify with the public key of %s\n", what,
                cert_path);
        goto out;
    }
    if (EVP_DigestVerify(vctx, sig, sig_len, (const unsigned char *)probe, sizeof(probe) - 1) !=
        1) {
        ERR_clear_error(); /* a mismatch is the finding, not an error to log */
        fprintf(stderr,
                "pkiva init: %s %s signs, but not for %s: the key and the certificate do not "
                "belong together\n",
                what, uri, cert_path);
        goto out;
    }
    printf("  ok  %-28s %s signs (%s), verified with %s\n", what, uri, key->md, cert_path);
    ok = 1;
out:
    EVP_MD_CTX_free(vctx); /* frees pctx with it */
    free(sig);
    hsm_key_free(key);
    X509_free(cert);
    return ok ? 0 : 1;
}

static int check_keys(const struct cli_config *cfg, struct hsm *hsm)
{
    char what[128];
    int problems = 0;
    for (int i = 0; i < cfg->n_issuers; i++) {
        const struct cli_issuer *is = &cfg->issuers[i];
        const char *md = is->digest[0] ? is->digest : NULL;
        (void)snprintf(what, sizeof(what), "[issuer.%s] key", is->name);
        problems += check_key(hsm, what, is->key_uri, is->cert, md, is->rsa_pss);
        if (is->ocsp_key_uri[0] != '\0') {
            (void)snprintf(what, sizeof(what), "[issuer.%s] ocsp_key", is->name);
            problems += check_key(hsm, what, is->ocsp_key_uri, is->ocsp_cert, md, is->rsa_pss);
        }
    }
    for (int i = 0; i < cfg->n_tsa_units; i++) {
        const struct tsa_unit_settings *u = &cfg->tsa_units[i];
        (void)snprintf(what, sizeof(what), "[tsa.%s] key", u->name);
        /* RSA TSA keys sign PKCS#1 v1.5 (OpenSSL's TS code has no PSS). */
        problems += check_key(hsm, what, u->key_uri, u->cert, u->digest[0] ? u->digest : NULL, 0);
    }
    return problems;
}

/* Registers every issuer (idempotent: the same certificate under the same name is a no-op). */
static int register_issuers(const struct cli_config *cfg, struct store *store)
{
    for (int i = 0; i < cfg->n_issuers; i++) {
        const struct cli_issuer *is = &cfg->issuers[i];
        struct store_issuer existing;
        unsigned char *der = NULL;
        int64_t id = 0;
        int len, rc, known;
        X509 *cert = cli__load_pem_cert(is->cert);

        if (cert == NULL)
            return UTIL_ECONFIG;
        memset(&existing, 0, sizeof(existing));
        known = store_issuer_get_blocking(store, is->name, &existing) == UTIL_OK;
        store_issuer_cleanup(&existing);
        len = i2d_X509(cert, &der);
        X509_free(cert);
        if (len <= 0)
            return UTIL_ECRYPTO;
        rc = store_issuer_put_blocking(store, is->name, der, (size_t)len, &id);
        OPENSSL_free(der);
        if (rc == UTIL_EEXIST) {
            fprintf(stderr,
                    "pkiva init: [issuer.%s]: the store has another certificate under this "
                    "name; a renewed CA certificate needs a new issuer name\n",
                    is->name);
            return UTIL_ECONFIG;
        }
        if (rc != UTIL_OK) {
            fprintf(stderr, "pkiva init: [issuer.%s]: %s\n", is->name, util_strerror(rc));
            return rc;
        }
        printf("  %s issuer %s (store id %lld)\n", known ? "ok " : "new", is->name, (long long)id);
    }
    return UTIL_OK;
}

static int init_deployment(const char *config)
{
    struct cli_config *cfg = NULL;
    struct hsm *hsm = NULL;
    struct store *store = NULL;
    struct hsm_config hcfg;
    struct stat st;
    int problems, rc, store_existed, status = 1;

    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        fprintf(stderr, "pkiva init: out of memory\n");
        return 1;
    }
    if (cli__load_config(config, NULL, cfg) != 0)
        goto out;
    cli__apply_env(cfg);
    printf("pkiva init: %s\n", cfg->source);
    problems = cli__config_check_files(cfg);
    if (problems > 0) {
        fprintf(stderr, "pkiva init: %d problem%s in %s; nothing was changed\n", problems,
                problems == 1 ? "" : "s", cfg->source);
        goto out;
    }
    printf("configuration valid; keys in the token (module %s):\n", cfg->hsm.module);

    cli__hsm_config(cfg, 1, 1, &hcfg); /* only this thread signs */
    rc = hsm_open(&hcfg, &hsm);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva init: cannot open the HSM (module %s, PIN file %s): %s\n",
                cfg->hsm.module, cfg->hsm.pin_file, util_strerror(rc));
        goto out;
    }
    problems = check_keys(cfg, hsm);
    if (problems > 0) {
        fprintf(stderr, "pkiva init: %d key problem%s; nothing was changed\n", problems,
                problems == 1 ? "" : "s");
        goto out;
    }

    if (mkdir(cfg->data_dir, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "pkiva init: cannot create the data folder %s: %s\n", cfg->data_dir,
                strerror(errno));
        goto out;
    }
    store_existed = stat(cfg->store_path, &st) == 0;
    rc = store_open_blocking(cfg->store_path, STORE_OPEN_CREATE, &store);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva init: cannot create the store %s: %s\n", cfg->store_path,
                util_strerror(rc));
        goto out;
    }
    printf("store %s: %s\n", cfg->store_path, store_existed ? "exists, schema current" : "created");
    if (register_issuers(cfg, store) != UTIL_OK)
        goto out;
    if (cli__publish_dir_ready(cfg) != UTIL_OK)
        goto out;
    if (!store_existed)
        (void)store_audit_append_blocking(store, "pkiva-init", "init",
                                          "{\"what\":\"store created, issuers registered\"}");
    /* The audit record is best effort: the store itself is what init is for. */

    cli__print_contract(cfg, stdout);
    printf("\nnext:\n");
    if (geteuid() == 0 && stat(cfg->data_dir, &st) == 0 && st.st_uid == 0)
        printf("  - this ran as root: the service user must own the data: "
               "chown -R pkiva:pkiva %s\n",
               cfg->data_dir);
    printf("  - register the certificates already issued:\n"
           "      pkiva import --config %s --index /path/to/index.txt --issuer %s\n"
           "      pkiva import --config %s /path/to/issued/certs/\n",
           cfg->source, cfg->n_issuers > 0 ? cfg->issuers[0].name : "NAME", cfg->source);
    printf("  - start the service:  systemctl enable --now pkiva  (or pkiva serve --config %s)\n",
           cfg->source);
    printf("  - check it:           curl -s %s/readyz\n", cfg->public_url);
    status = 0;
out:
    store_close(store);
    hsm_close(hsm);
    free(cfg);
    return status;
}

int cli__cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL;
    int opt;

    /* --config selects the deployment form; anything else is the demo's (serve.c). */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(init_help, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--config") == 0 || strncmp(argv[i], "--config=", 9) == 0)
            config = argv[i];
    }
    if (config == NULL)
        return cli__init_demo(argc, argv);
    config = NULL;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        default:
            fprintf(stderr, "pkiva init: with --config, no other option applies\n%s", init_help);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pkiva init: unexpected argument '%s'\n%s", argv[optind], init_help);
        return 2;
    }
    return init_deployment(config);
}
