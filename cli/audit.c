/* SPDX-License-Identifier: Apache-2.0 */
/* The audit log's HSM side and its commands: seals signed with the first issuer's CA key in the HSM
 * (made by the server at start, periodically and at a graceful stop, or by `pkiva audit seal`), and
 * `pkiva audit verify`, which checks the whole log offline against the issuers' certificates. */

/* DESIGN (audit seals; the log itself is described in store.c)
 *
 * Why signed seals, not an HMAC key. A plain hash chain can be recomputed by anyone who can write
 * the database. Two ways to key it with the HSM: an HMAC key generated in the token (every record
 * keyed at once, but verification then needs the token and its PIN, and pkcs11-provider 1.0 has
 * no MAC: `openssl list -mac-algorithms -key-managers -provider pkcs11` shows only RSA, EC, EdDSA
 * and HKDF, so it would mean raw PKCS#11 calls beside the provider), or seals:
 * signatures over runs of record hashes made with a signing key the HSM already holds. Seals go
 * through the existing signing path (any PKCS#11 module that signs CRLs can sign them), and anyone
 * with the issuer's public certificate can verify them offline, without the HSM. Their cost is a
 * window: records written after the last seal are chained but not yet sealed, and an insider who
 * can write the database can rewrite those (verify reports them as "not yet sealed").
 *
 * Key. The first [issuer.NAME]'s CA key signs seals (no new key to provision or configure). The
 * signed bytes start with "pkiva-audit-seal-v1", which no DER structure starts with, so a seal can
 * never pass for a certificate or CRL signed by that key.
 *
 * When. The server seals at start (records written by the CLI while it was down), whenever
 * CLI_AUDIT_SEAL_RECORDS records wait or the oldest waiting one is CLI_AUDIT_SEAL_INTERVAL_MS old,
 * and once more at a graceful stop; `pkiva audit seal` seals on demand. The signature is made
 * without holding the store's write lock (a token queued behind OCSP signing must not stall
 * revocations); the seal is inserted under the lock only if nobody sealed meanwhile, so concurrent
 * sealers never overlap. A failed signature (HSM down) writes nothing and a later attempt seals
 * the whole backlog.
 *
 * Thread. The sealer is one thread with its own store connection; it signs through hsm_run_sync on
 * the hsm's pool (the key handles may be swapped by the hsm monitor). It only ever waits on its
 * condition variable or on the store and the token, never on a loop. */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <errno.h>
#include <getopt.h>
#include <hsm/hsm.h>
#include <inttypes.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <time.h>
#include <util/util.h>

#define MOD "audit"
/* Seal when this many records wait, or when the oldest has waited this long. */
#define CLI_AUDIT_SEAL_RECORDS 100
#define CLI_AUDIT_SEAL_INTERVAL_MS 60000
#define CLI_AUDIT_CHECK_MS 1000
/* `pkiva audit verify --cert`: trusted certificates beyond the configured issuers. */
#define CLI_AUDIT_EXTRA_CERTS 8

/* ---- sealing -------------------------------------------------------------------------------- */

struct sign_job {
    struct hsm *hsm;
    const struct hsm_key *key;
    const unsigned char *data;
    size_t len;
    unsigned char *sig;
    size_t sig_len;
};

static int sign_work(void *thread_state, void *arg)
{
    struct sign_job *job = arg;

    return hsm_sign_blocking(job->hsm, job->key, job->data, job->len, &job->sig, &job->sig_len);
}

static int seal_sign(void *ctx, const unsigned char *data, size_t len, unsigned char **sig,
                     size_t *sig_len)
{
    struct sign_job job = *(const struct sign_job *)ctx;
    int rc = 0;

    job.data = data;
    job.len = len;
    job.sig = NULL;
    job.sig_len = 0;
    rc = hsm_run_sync(job.hsm, sign_work, &job);
    if (rc != UTIL_OK) {
        free(job.sig);
        return rc;
    }
    *sig = job.sig;
    *sig_len = job.sig_len;
    return UTIL_OK;
}

int cli__audit_seal_blocking(struct store *store, struct hsm *hsm, const struct hsm_key *key,
                             X509 *cert, int64_t *sealed)
{
    struct store_audit_signer signer;
    struct sign_job job;
    unsigned char *der = NULL;
    int len = 0;
    int rc = 0;

    if (sealed != NULL)
        *sealed = 0;
    len = i2d_X509(cert, &der);
    if (len <= 0)
        return UTIL_ECRYPTO;
    memset(&job, 0, sizeof(job));
    job.hsm = hsm;
    job.key = key;
    memset(&signer, 0, sizeof(signer));
    signer.sign = seal_sign;
    signer.ctx = &job;
    signer.cert_der = der;
    signer.cert_len = (size_t)len;
    signer.md = key->md;
    signer.rsa_pss = key->rsa_pss;
    rc = store_audit_seal_blocking(store, &signer, sealed);
    OPENSSL_free(der);
    return rc;
}

/* ---- the server's sealer -------------------------------------------------------------------- */

struct cli_audit_sealer {
    const struct cli_config *cfg;
    struct hsm *hsm;
    const struct hsm_key *key;
    X509 *cert;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    int stopping; /* guarded by mutex */
};

/* Seals what waits and logs the outcome; returns the result. */
static int seal_now(struct cli_audit_sealer *sealer, struct store *store, const char *why)
{
    int64_t sealed = 0;
    int rc = cli__audit_seal_blocking(store, sealer->hsm, sealer->key, sealer->cert, &sealed);

    if (rc != UTIL_OK)
        UTIL_WARN(MOD,
                  "sealing the audit log (%s) failed: %s; records stay unsealed until the "
                  "next attempt",
                  why, util_strerror(rc));
    else if (sealed > 0)
        UTIL_INFO(MOD, "sealed %" PRId64 " audit records (%s)", sealed, why);
    return rc;
}

static void *sealer_main(void *arg)
{
    struct cli_audit_sealer *sealer = arg;
    struct store *store = NULL;
    int64_t waiting_since = 0;
    int64_t retry_at = 0; /* after a failure (HSM down), not before this: one log line a round */
    int stopping = 0;
    int rc = 0;

    util_thread_name("audit-seal", -1);
    rc = store_open_blocking(sealer->cfg->store_path, 0, &store);
    if (rc != UTIL_OK)
        UTIL_ERROR(MOD, "the audit sealer cannot open the store: %s; the log is not sealed",
                   util_strerror(rc));
    while (!stopping) {
        struct timespec until;
        int64_t unsealed = 0;

        (void)clock_gettime(CLOCK_REALTIME, &until); /* cannot fail with a valid clock */
        until.tv_sec += CLI_AUDIT_CHECK_MS / 1000;
        pthread_mutex_lock(&sealer->mutex);
        while (!sealer->stopping &&
               pthread_cond_timedwait(&sealer->wake, &sealer->mutex, &until) != ETIMEDOUT)
            ;
        stopping = sealer->stopping;
        pthread_mutex_unlock(&sealer->mutex);
        if (store == NULL || stopping)
            break;
        if (store_audit_unsealed_blocking(store, &unsealed) != UTIL_OK || unsealed == 0) {
            waiting_since = 0;
            continue;
        }
        if (waiting_since == 0)
            waiting_since = util_mono_ms();
        if (util_mono_ms() < retry_at)
            continue;
        if (unsealed >= CLI_AUDIT_SEAL_RECORDS ||
            util_mono_ms() - waiting_since >= CLI_AUDIT_SEAL_INTERVAL_MS) {
            if (seal_now(sealer, store, "periodic") == UTIL_OK)
                waiting_since = 0;
            else
                retry_at = util_mono_ms() + CLI_AUDIT_SEAL_INTERVAL_MS;
        }
    }
    if (store != NULL)
        (void)seal_now(sealer, store, "graceful stop"); /* logged inside */
    store_close(store);
    return NULL;
}

int cli__audit_sealer_start(const struct cli_config *cfg, struct hsm *hsm,
                            const struct hsm_key *key, X509 *cert, struct cli_audit_sealer **out)
{
    struct cli_audit_sealer *sealer = calloc(1, sizeof(*sealer));

    *out = NULL;
    if (sealer == NULL)
        return UTIL_ENOMEM;
    sealer->cfg = cfg;
    sealer->hsm = hsm;
    sealer->key = key;
    sealer->cert = cert;
    pthread_mutex_init(&sealer->mutex, NULL);
    pthread_cond_init(&sealer->wake, NULL);
    if (pthread_create(&sealer->thread, NULL, sealer_main, sealer) != 0) {
        pthread_cond_destroy(&sealer->wake);
        pthread_mutex_destroy(&sealer->mutex);
        free(sealer);
        return UTIL_ENOMEM;
    }
    *out = sealer;
    return UTIL_OK;
}

void cli__audit_sealer_stop(struct cli_audit_sealer *sealer)
{
    if (sealer == NULL)
        return;
    pthread_mutex_lock(&sealer->mutex);
    sealer->stopping = 1;
    pthread_cond_signal(&sealer->wake);
    pthread_mutex_unlock(&sealer->mutex);
    (void)pthread_join(sealer->thread, NULL); /* our own joinable thread */
    pthread_cond_destroy(&sealer->wake);
    pthread_mutex_destroy(&sealer->mutex);
    free(sealer);
}

/* ---- pkiva audit ---------------------------------------------------------------------------- */

static const char audit_help[] =
    "usage: pkiva audit verify [--config FILE | --data DIR] [--cert PEM]... [--anchor ID:HASH]\n"
    "                          [--sealed]\n"
    "       pkiva audit seal [--config FILE | --data DIR]\n\n"
    "verify checks the whole audit log offline: the hash chain, every seal's signature against\n"
    "the configured issuers' certificates (and any --cert), every record against its seal, that\n"
    "every change of a certificate has its record, and that each certificate's status and each\n"
    "revocation row are what the history says. Exit 1 naming the first bad record if anything\n"
    "is wrong. Records after the last seal are reported as not yet sealed (--sealed: a\n"
    "failure). It prints an anchor (the last sealed record and its hash): kept outside this\n"
    "machine and given back with --anchor, it also catches a rewrite that removed every seal.\n"
    "seal signs every record not yet sealed with the first issuer's key in the HSM (the server\n"
    "does this by itself while it runs).\n";

static int load_der(const char *path, unsigned char **der, size_t *len)
{
    X509 *cert = cli__load_pem_cert(path);
    unsigned char *buf = NULL;
    int n = 0;

    *der = NULL;
    if (cert == NULL)
        return UTIL_ECONFIG;
    n = i2d_X509(cert, &buf);
    X509_free(cert);
    if (n <= 0)
        return UTIL_ECRYPTO;
    *der = buf;
    *len = (size_t)n;
    return UTIL_OK;
}

/* "ID:HEX" -> anchor. */
static int parse_anchor(const char *text, struct store_audit_anchor *anchor)
{
    char *end = NULL;
    long long id = strtoll(text, &end, 10);

    if (end == text || *end != ':' || id < 1 || strlen(end + 1) != 2 * STORE_AUDIT_HASH_LEN)
        return UTIL_EINVAL;
    anchor->record_id = id;
    for (int i = 0; i < STORE_AUDIT_HASH_LEN; i++) {
        int high = util_hex_digit(end[1 + 2 * i]);
        int low = util_hex_digit(end[2 + 2 * i]);
        if (high < 0 || low < 0)
            return UTIL_EINVAL;
        anchor->hash[i] = (unsigned char)(high << 4 | low);
    }
    return UTIL_OK;
}

static int cmd_verify(const struct cli_config *cfg, struct store *store, char **extra, int n_extra,
                      const struct store_audit_anchor *anchor, int sealed_only)
{
    char hex[2 * STORE_AUDIT_HASH_LEN + 1];
    unsigned char *der[CLI_MAX_ISSUERS + CLI_AUDIT_EXTRA_CERTS];
    size_t len[CLI_MAX_ISSUERS + CLI_AUDIT_EXTRA_CERTS];
    struct store_audit_report rep;
    size_t n = 0;
    int status = 1;
    int rc = UTIL_OK;

    /* Trusted: the certificates the configuration names (files outside the database) and those
     * given on the command line (an auditor's own copies). */
    for (int i = 0; i < cfg->n_issuers + n_extra && rc == UTIL_OK; i++) {
        rc = load_der(i < cfg->n_issuers ? cfg->issuers[i].cert : extra[i - cfg->n_issuers],
                      &der[n], &len[n]);
        if (rc == UTIL_OK)
            n++;
    }
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva audit verify: cannot read the trusted certificates\n");
        goto out;
    }
    rc =
        store_audit_verify_blocking(store, (const unsigned char *const *)der, len, n, anchor, &rep);
    if (rc != UTIL_OK && rc != UTIL_EINVAL) {
        fprintf(stderr, "pkiva audit verify: %s\n", util_strerror(rc));
        goto out;
    }
    printf("audit log: %lld records, %lld seals (sealed through record %lld), %lld not yet "
           "sealed\n",
           (long long)rep.records, (long long)rep.seals, (long long)rep.sealed_through,
           (long long)rep.unsealed);
    printf("history: %lld changes, %lld certificates checked against it\n", (long long)rep.changes,
           (long long)rep.certificates);
    /* An anchor is worth writing down only for a log that verified. */
    if (rc == UTIL_OK && rep.sealed_through > 0) {
        util_hex(rep.sealed_hash, sizeof(rep.sealed_hash), hex);
        printf("anchor: %lld:%s\n", (long long)rep.sealed_through, hex);
    }
    if (rc == UTIL_OK && sealed_only && rep.unsealed > 0) {
        printf("audit log NOT SEALED: records %lld-%lld are not yet sealed (--sealed)\n",
               (long long)(rep.records - rep.unsealed + 1), (long long)rep.records);
        goto out;
    }
    if (rc == UTIL_OK) {
        printf("audit log intact%s\n",
               rep.unsealed > 0 ? " (the records not yet sealed are only hash-chained)" : "");
        status = 0;
        goto out;
    }
    if (rep.bad_record > 0)
        printf("audit log BROKEN: first bad record %lld: %s\n", (long long)rep.bad_record,
               rep.first_problem);
    else
        printf("audit log BROKEN: %s\n", rep.first_problem);
    printf("%lld problems in all (the log has the others)\n", (long long)rep.problems);
out:
    for (size_t i = 0; i < n; i++)
        OPENSSL_free(der[i]);
    return status;
}

static int cmd_seal(const struct cli_config *cfg, struct store *store)
{
    const struct cli_issuer *c = &cfg->issuers[0];
    struct hsm_config hcfg;
    struct hsm *hsm = NULL;
    struct hsm_key *key = NULL;
    X509 *cert = NULL;
    int64_t sealed = 0;
    int rc = 0;

    if (cfg->n_issuers == 0) {
        fprintf(stderr, "pkiva audit seal: no [issuer.NAME] is configured; nothing can seal\n");
        return 1;
    }
    cli__hsm_config(cfg, 1, 4, &hcfg);
    rc = hsm_open(&hcfg, &hsm);
    if (rc == UTIL_OK) {
        cert = cli__load_pem_cert(c->cert);
        rc = cert != NULL ? hsm_key_load_blocking(hsm, c->key_uri, c->digest[0] ? c->digest : NULL,
                                                  c->rsa_pss, &key)
                          : UTIL_ECONFIG;
    }
    if (rc == UTIL_OK)
        rc = cli__audit_seal_blocking(store, hsm, key, cert, &sealed);
    hsm_key_free(key);
    X509_free(cert);
    hsm_close(hsm);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva audit seal: %s\n", util_strerror(rc));
        return 1;
    }
    printf("sealed %lld records with the key of issuer %s\n", (long long)sealed, c->name);
    return 0;
}

int cli__cmd_audit(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"cert", required_argument, NULL, 'x'},
                                         {"anchor", required_argument, NULL, 'a'},
                                         {"sealed", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *data_dir = NULL;
    char *extra[CLI_AUDIT_EXTRA_CERTS];
    struct store_audit_anchor anchor;
    struct cli_config cfg;
    int has_anchor = 0;
    int sealed_only = 0;
    struct store *store = NULL;
    int n_extra = 0;
    int verify = 0;
    int opt = 0;
    int status = 1;

    if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
        fputs(audit_help, stdout);
        return 0;
    }
    if (argc < 2 || (strcmp(argv[1], "verify") != 0 && strcmp(argv[1], "seal") != 0)) {
        fputs(audit_help, stderr);
        return 2;
    }
    verify = strcmp(argv[1], "verify") == 0;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'x':
            if (!verify || n_extra == CLI_AUDIT_EXTRA_CERTS) {
                fputs(audit_help, stderr);
                return 2;
            }
            extra[n_extra++] = optarg;
            break;
        case 'a':
            if (!verify || parse_anchor(optarg, &anchor) != UTIL_OK) {
                fprintf(stderr, "pkiva audit: --anchor takes ID:HASH as verify prints it\n");
                return 2;
            }
            has_anchor = 1;
            break;
        case 's': sealed_only = 1; break;
        case 'h': fputs(audit_help, stdout); return 0;
        default: fputs(audit_help, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pkiva: unexpected argument '%s'\n%s", argv[optind], audit_help);
        return 2;
    }
    if (cli__load_config(config, data_dir, &cfg) != 0)
        return 1;
    cli__apply_env(&cfg);
    if (store_open_blocking(cfg.store_path, 0, &store) != UTIL_OK) {
        fprintf(stderr, "pkiva audit: cannot open the store %s\n", cfg.store_path);
        return 1;
    }
    status = verify
                 ? cmd_verify(&cfg, store, extra, n_extra, has_anchor ? &anchor : NULL, sealed_only)
                 : cmd_seal(&cfg, store);
    store_close(store);
    return status;
}
