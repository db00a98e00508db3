/* SPDX-License-Identifier: Apache-2.0 */
/* The TSA service: loads and checks the units, answers POSTed TimeStampReqs on the HTTP loops and
 * moves accepted ones through signing and the token log back to their loop.
 *
 * DESIGN: a request is checked on its loop thread (DER, hash, imprint length, policy, critical
 * extensions, clock, in-flight bound, serial) and every rejection is answered there at once from a
 * pre-encoded DER TimeStampResp. An accepted request becomes a job (with its own copy of the
 * request bytes) that goes to the HSM signing pool; the signing thread hands it to the log thread
 * (durable_log) or straight back. Jobs come back to their loop through the loop's util_pool_port,
 * the mailbox every pool uses: the loop expects a completion when it accepts the job
 * (util_pool_port_expect), and the signing or log thread that finishes the job completes it, so
 * the log thread needs no mailbox of its own. Bounds: max_inflight jobs in total (the log ring has
 * as many slots, so a signed token always finds room), the HSM queue (full: systemFailure at once),
 * the request size. Shutdown: loop_fini closes the loop's port; a job finished later gets its
 * completion with UTIL_ECLOSED on the thread that finished it, which frees it. Every job is freed
 * exactly once, so tsa_service_stop waits (on a condition, not a poll) until none is left, after
 * which nothing refers to the service; the ports free themselves after their last job. */
#include "tsa_int.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/timex.h>
#include <time.h>

/* ---- configuration --------------------------------------------------------------------------- */

int tsa_clock_adjtimex(void *ctx, struct tsa_clock_state *out)
{
    struct timex tx;
    int state;

    memset(&tx, 0, sizeof(tx)); /* modes = 0: read only, no privilege needed */
    memset(out, 0, sizeof(*out));
    state = adjtimex(&tx);
    if (state == -1)
        return util_errno(errno);
    out->synced = state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
    out->max_error_us = tx.maxerror;
    out->est_error_us = tx.esterror;
    return UTIL_OK;
}

static X509 *load_cert(const char *unit, const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *cert = NULL;

    if (f == NULL) {
        UTIL_ERROR(TSA_MOD, "unit %s: cannot open certificate %s: %s", unit, path, strerror(errno));
        return NULL;
    }
    ERR_clear_error();
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f); /* read-only */
    if (cert == NULL)
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: %s is not a PEM certificate", unit,
                         path);
    return cert;
}

static STACK_OF(X509) * load_chain(const char *unit, const char *path)
{
    FILE *f = fopen(path, "r");
    STACK_OF(X509) *chain = NULL;
    X509 *cert = NULL;

    if (f == NULL) {
        UTIL_ERROR(TSA_MOD, "unit %s: cannot open chain %s: %s", unit, path, strerror(errno));
        return NULL;
    }
    chain = sk_X509_new_null();
    ERR_clear_error();
    while (chain != NULL) {
        cert = PEM_read_X509(f, NULL, NULL, NULL);
        if (cert == NULL)
            break;
        if (!sk_X509_push(chain, cert)) {
            X509_free(cert);
            sk_X509_pop_free(chain, X509_free);
            chain = NULL;
        }
    }
    (void)fclose(f);   /* read-only */
    ERR_clear_error(); /* the end of the file reads as an error */
    if (chain != NULL && sk_X509_num(chain) == 0) {
        UTIL_ERROR(TSA_MOD, "unit %s: %s holds no PEM certificate", unit, path);
        sk_X509_free(chain);
        chain = NULL;
    }
    return chain;
}

/* RFC 3161 §2.3: the TSA certificate has exactly one extended key usage, id-kp-timeStamping, in
 * an extension marked critical. */
static int check_eku(const char *unit, X509 *cert)
{
    int crit = -1;
    int idx = X509_get_ext_by_NID(cert, NID_ext_key_usage, -1);
    EXTENDED_KEY_USAGE *eku = NULL;
    int ok = 0;

    if (idx < 0) {
        UTIL_ERROR(TSA_MOD,
                   "unit %s: the TSA certificate has no extendedKeyUsage extension "
                   "(RFC 3161 §2.3 requires a critical one with timeStamping only)",
                   unit);
        return UTIL_ECONFIG;
    }
    eku = X509_get_ext_d2i(cert, NID_ext_key_usage, &crit, NULL);
    if (eku == NULL || crit != 1) {
        UTIL_ERROR(TSA_MOD,
                   "unit %s: the TSA certificate's extendedKeyUsage is %s (RFC 3161 §2.3 "
                   "requires it critical, with timeStamping only)",
                   unit, eku == NULL ? "unreadable or repeated" : "not critical");
        goto out;
    }
    if (sk_ASN1_OBJECT_num(eku) != 1 ||
        OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)) != NID_time_stamp) {
        UTIL_ERROR(TSA_MOD,
                   "unit %s: the TSA certificate's extendedKeyUsage must hold "
                   "timeStamping only (RFC 3161 §2.3), it holds %d purpose(s)",
                   unit, sk_ASN1_OBJECT_num(eku));
        goto out;
    }
    ok = 1;
out:
    EXTENDED_KEY_USAGE_free(eku);
    ERR_clear_error();
    return ok ? UTIL_OK : UTIL_ECONFIG;
}

static int parse_oid(const char *unit, const char *txt, ASN1_OBJECT **obj, char *copy,
                     size_t copy_len)
{
    if (txt == NULL || strlen(txt) >= copy_len) {
        UTIL_ERROR(TSA_MOD, "unit %s: policy OID missing or too long", unit);
        return UTIL_ECONFIG;
    }
    ERR_clear_error();
    *obj = OBJ_txt2obj(txt, 1); /* dotted numbers only */
    if (*obj == NULL) {
        ERR_clear_error();
        UTIL_ERROR(TSA_MOD, "unit %s: '%s' is not a dotted OID", unit, txt);
        return UTIL_ECONFIG;
    }
    (void)snprintf(copy, copy_len, "%s", txt); /* fits: checked above */
    return UTIL_OK;
}

static int unit_init(struct tsa_service *svc, struct tsa__unit *unit,
                     const struct tsa_unit_config *uc)
{
    const char *name = uc->name;
    const char *ess = uc->ess_digest != NULL ? uc->ess_digest : "SHA256";
    OSSL_LIB_CTX *libctx = hsm_libctx(svc->hsm);
    int rc;

    if (!util_name_valid(name)) {
        UTIL_ERROR(TSA_MOD, "TSA unit name '%s' must be 1-63 characters of [A-Za-z0-9._-]",
                   name != NULL ? name : "");
        return UTIL_ECONFIG;
    }
    (void)snprintf(unit->name, sizeof(unit->name), "%s", name);                 /* fits: checked */
    (void)snprintf(unit->route, sizeof(unit->route), "%s/%s", svc->path, name); /* fits */
    if (uc->cert_file == NULL || uc->key_uri == NULL) {
        UTIL_ERROR(TSA_MOD, "unit %s: cert and key are required", name);
        return UTIL_ECONFIG;
    }
    unit->cert = load_cert(name, uc->cert_file);
    if (unit->cert == NULL)
        return UTIL_ECONFIG;
    rc = check_eku(name, unit->cert);
    if (rc != UTIL_OK)
        return rc;
    if (X509_cmp_current_time(X509_get0_notAfter(unit->cert)) <= 0 ||
        X509_cmp_current_time(X509_get0_notBefore(unit->cert)) >= 0) {
        UTIL_ERROR(TSA_MOD, "unit %s: the TSA certificate %s is not valid now", name,
                   uc->cert_file);
        return UTIL_ECONFIG;
    }
    /* The end of the certificate's validity: no token after it (they would not verify). */
    if (util_asn1_time_unix(X509_get0_notAfter(unit->cert), &unit->not_after) != UTIL_OK) {
        UTIL_ERROR(TSA_MOD, "unit %s: cannot read the notAfter of %s", name, uc->cert_file);
        return UTIL_ECONFIG;
    }
    if (uc->chain_file != NULL && uc->chain_file[0] != '\0') {
        unit->chain = load_chain(name, uc->chain_file);
        if (unit->chain == NULL)
            return UTIL_ECONFIG;
        /* A bundle that starts with the TSA certificate itself (tsa-chain.pem style) would send
         * it twice: certReq already adds it. */
        for (int i = sk_X509_num(unit->chain) - 1; i >= 0; i--) {
            if (X509_cmp(sk_X509_value(unit->chain, i), unit->cert) == 0)
                X509_free(sk_X509_delete(unit->chain, i));
        }
        if (sk_X509_num(unit->chain) == 0) {
            sk_X509_free(unit->chain);
            unit->chain = NULL;
        }
    }
    rc = hsm_key_load_blocking(svc->hsm, uc->key_uri, uc->digest, 0, &unit->key);
    if (rc != UTIL_OK) {
        UTIL_ERROR(TSA_MOD, "unit %s: key %s: %s", name, uc->key_uri, util_strerror(rc));
        return rc == UTIL_ENOTFOUND ? UTIL_ECONFIG : rc;
    }
    ERR_clear_error();
    if (EVP_PKEY_eq(X509_get0_pubkey(unit->cert), unit->key->pkey) != 1) {
        ERR_clear_error();
        UTIL_ERROR(TSA_MOD, "unit %s: key %s does not match the certificate %s", name, uc->key_uri,
                   uc->cert_file);
        return UTIL_ECONFIG;
    }
    /* Issue 21: the start-up self-check. A unit whose key fails it stays configured but answers
     * systemFailure (its key never signs; /readyz and /metrics name it); other units and the OCSP
     * and CRL issuers keep serving. */
    rc = hsm_key_check_blocking(svc->hsm, unit->key, unit->cert);
    if (rc == UTIL_ENOMEM)
        return rc;
    unit->sign_md = EVP_MD_fetch(libctx, uc->digest != NULL ? uc->digest : unit->key->md, NULL);
    unit->ess_md = EVP_MD_fetch(libctx, ess, NULL);
    if (unit->sign_md == NULL || unit->ess_md == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: unknown digest %s or %s", name,
                         uc->digest != NULL ? uc->digest : unit->key->md, ess);
        return UTIL_ECONFIG;
    }
    if (EVP_MD_is_a(unit->ess_md, "SHA1") || EVP_MD_is_a(unit->ess_md, "MD5")) {
        UTIL_ERROR(TSA_MOD,
                   "unit %s: ess_digest %s: RFC 5816 ESSCertIDv2 needs a SHA-2 family "
                   "hash (SHA1 would make OpenSSL send the v1 attribute)",
                   name, ess);
        return UTIL_ECONFIG;
    }
    rc = parse_oid(name, uc->policy, &unit->policy, unit->policy_txt, sizeof(unit->policy_txt));
    if (rc != UTIL_OK)
        return rc;
    if (uc->n_accepted_policies < 0 || uc->n_accepted_policies > TSA_MAX_POLICIES) {
        UTIL_ERROR(TSA_MOD, "unit %s: at most %d accepted policies", name, TSA_MAX_POLICIES);
        return UTIL_ECONFIG;
    }
    for (int i = 0; i < uc->n_accepted_policies; i++) {
        rc = parse_oid(name, uc->accepted_policies[i], &unit->accepted[i], unit->accepted_txt[i],
                       sizeof(unit->accepted_txt[i]));
        if (rc != UTIL_OK)
            return rc;
        unit->n_accepted++;
    }
    if (uc->accuracy_us < 0 || uc->accuracy_us / 1000000 > INT32_MAX) {
        UTIL_ERROR(TSA_MOD, "unit %s: accuracy out of range", name);
        return UTIL_ECONFIG;
    }
    unit->accuracy_us = uc->accuracy_us;
    unit->tsa_name = uc->tsa_name != 0;
    unit->rules.allow_weak_hashes = uc->allow_weak_hashes != 0;
    unit->rules.policy = unit->policy;
    for (int i = 0; i < unit->n_accepted; i++)
        unit->rules.accepted[i] = unit->accepted[i];
    unit->rules.n_accepted = unit->n_accepted;
    if (hsm_key_usable(unit->key))
        rc = tsa__tmpl_init_blocking(svc, unit);
    else
        atomic_store(&unit->tmpl_retry, 1); /* built once the key signs again */
    if (rc != UTIL_OK)
        return rc;
    UTIL_INFO(TSA_MOD, "unit %s: %s, policy %s, accuracy %lld us, key %s%s", name, unit->route,
              unit->policy_txt, (long long)unit->accuracy_us, uc->key_uri,
              atomic_load(&unit->tmpl_ready) ? "" : " (no token template yet)");
    return UTIL_OK;
}

static void unit_cleanup(struct tsa__unit *unit)
{
    tsa__ctx_pool_free(unit);
    tsa__tmpl_cleanup(&unit->tmpl);
    X509_free(unit->cert);
    sk_X509_pop_free(unit->chain, X509_free);
    hsm_key_free(unit->key);
    EVP_MD_free(unit->sign_md);
    EVP_MD_free(unit->ess_md);
    ASN1_OBJECT_free(unit->policy);
    for (int i = 0; i < unit->n_accepted; i++)
        ASN1_OBJECT_free(unit->accepted[i]);
    pthread_mutex_destroy(&unit->serials.mu);
    pthread_mutex_destroy(&unit->ctx_mu);
}

/* ---- life cycle ------------------------------------------------------------------------------ */

int tsa_service_new(const struct tsa_config *cfg, const struct tsa_unit_config *units, int n_units,
                    struct hsm *hsm, struct tsa_service **out)
{
    struct tsa_service *svc = NULL;
    struct store *store = NULL;
    unsigned char der[256];
    int rc = UTIL_ECONFIG;

    *out = NULL;
    if (cfg == NULL || hsm == NULL || units == NULL || n_units < 1 || n_units > TSA_MAX_UNITS ||
        cfg->store_path == NULL || strlen(cfg->store_path) >= sizeof(svc->log.store_path) ||
        cfg->path[0] != '/' || strlen(cfg->path) >= sizeof(svc->path) || cfg->max_inflight < 1 ||
        cfg->log_batch_max < 1 || cfg->log_linger_us < 0 || cfg->serial_block < 1 ||
        cfg->max_query_bytes < 64 || cfg->clock_reread_ms < 0) {
        UTIL_ERROR(TSA_MOD, "invalid TSA configuration (store path, path, units 1..%d, bounds)",
                   TSA_MAX_UNITS);
        return UTIL_ECONFIG;
    }
    svc = calloc(1, sizeof(*svc));
    if (svc == NULL)
        return UTIL_ENOMEM;
    svc->cfg = *cfg;
    (void)snprintf(svc->path, sizeof(svc->path), "%s", cfg->path); /* fits: checked */
    /* "/tsa/" and "/tsa" name the same route */
    if (strlen(svc->path) > 1 && svc->path[strlen(svc->path) - 1] == '/')
        svc->path[strlen(svc->path) - 1] = '\0';
    (void)snprintf(svc->log.store_path, sizeof(svc->log.store_path), "%s", cfg->store_path);
    svc->cfg.store_path = svc->log.store_path;
    if (svc->cfg.clock_check == NULL)
        svc->cfg.clock_check = tsa_clock_adjtimex;
    svc->hsm = hsm;
    atomic_init(&svc->clock_ok, 1);
    pthread_mutex_init(&svc->log.mu, NULL);
    pthread_mutex_init(&svc->clock_mu, NULL);
    pthread_mutex_init(&svc->inflight_mu, NULL);
    pthread_cond_init(&svc->inflight_cond, NULL);
    pthread_cond_init(&svc->log.cond, NULL);
    for (int i = 0; i < TSA_MAX_UNITS; i++) {
        pthread_mutex_init(&svc->units[i].serials.mu, NULL);
        pthread_mutex_init(&svc->units[i].ctx_mu, NULL);
    }
    for (int i = 0; i < TSA__REJ_COUNT; i++) {
        int len = tsa__reject_der(i, der, sizeof(der));
        svc->rejects[i] = len > 0 ? util_blob_new(der, (size_t)len) : NULL;
        if (svc->rejects[i] == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
    }
    svc->log.capacity = svc->cfg.max_inflight;
    svc->log.ring = calloc((size_t)svc->log.capacity, sizeof(*svc->log.ring));
    if (svc->log.ring == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n_units; i++) {
        svc->n_units++;
        rc = unit_init(svc, &svc->units[i], &units[i]);
        if (rc != UTIL_OK)
            goto out;
        for (int j = 0; j < i; j++) {
            if (strcmp(svc->units[j].name, svc->units[i].name) == 0) {
                UTIL_ERROR(TSA_MOD, "TSA unit name '%s' used twice", svc->units[i].name);
                rc = UTIL_ECONFIG;
                goto out;
            }
        }
    }
    rc = store_open_blocking(svc->log.store_path, STORE_OPEN_CREATE, &store);
    if (rc != UTIL_OK) {
        UTIL_ERROR(TSA_MOD, "cannot open the store %s: %s", svc->log.store_path, util_strerror(rc));
        goto out;
    }
    for (int i = 0; i < svc->n_units; i++) {
        rc = tsa__serials_init_blocking(&svc->units[i], store, svc->cfg.serial_block);
        if (rc != UTIL_OK)
            goto out;
    }
    svc->log.store = store; /* the log thread's from tsa_service_start on */
    store = NULL;
    *out = svc;
    svc = NULL;
    rc = UTIL_OK;
out:
    store_close(store);
    tsa_service_free(svc);
    return rc;
}

/* Lowers inflight under inflight_mu: the waiter checks under it too, so after it saw 0 no thread
 * touches the service again. */
static void inflight_release(struct tsa_service *svc)
{
    pthread_mutex_lock(&svc->inflight_mu);
    if (atomic_fetch_sub(&svc->inflight, 1) == 1)
        pthread_cond_broadcast(&svc->inflight_cond);
    pthread_mutex_unlock(&svc->inflight_mu);
}

/* Every accepted job is freed exactly once (on its loop, or by the signing or log thread when its
 * loop has closed), and signing jobs always complete (util_pool), so this wait ends. */
static void inflight_wait(struct tsa_service *svc)
{
    pthread_mutex_lock(&svc->inflight_mu);
    while (atomic_load(&svc->inflight) > 0)
        pthread_cond_wait(&svc->inflight_cond, &svc->inflight_mu);
    pthread_mutex_unlock(&svc->inflight_mu);
}

void tsa_service_stop(struct tsa_service *svc)
{
    if (svc == NULL)
        return;
    atomic_store(&svc->stopping, 1);
    inflight_wait(svc);
    tsa__log_stop(svc);
}

void tsa_service_free(struct tsa_service *svc)
{
    if (svc == NULL)
        return;
    inflight_wait(svc);
    tsa__log_stop(svc);
    for (int i = 0; i < TSA_MAX_UNITS; i++)
        unit_cleanup(&svc->units[i]);
    for (int i = 0; i < TSA__REJ_COUNT; i++)
        util_blob_unref(svc->rejects[i]);
    free(svc->log.ring);
    store_close(svc->log.store);
    pthread_mutex_destroy(&svc->log.mu);
    pthread_mutex_destroy(&svc->clock_mu);
    pthread_cond_destroy(&svc->log.cond);
    pthread_mutex_destroy(&svc->inflight_mu);
    pthread_cond_destroy(&svc->inflight_cond);
    free(svc);
}

int tsa_service_start(struct tsa_service *svc)
{
    return tsa__log_start(svc);
}

/* ---- clock ----------------------------------------------------------------------------------- */

/* The kernel's bound on how fast an undisciplined clock's error grows (MAXFREQ, 500 ppm): a
 * reading's max_error_us plus this much per elapsed millisecond bounds the error now. */
#define TSA_CLOCK_DRIFT_US_PER_MS 0.5

/* The clock's state: a reading at most max_age_ms old (0: read now), its error bound widened by
 * the drift since it was taken. */
static int clock_read(struct tsa_service *svc, int max_age_ms, struct tsa_clock_state *st)
{
    int64_t now = util_mono_ms();
    int64_t age = -1;
    int rc;

    pthread_mutex_lock(&svc->clock_mu);
    if (max_age_ms > 0 && svc->clock_read_ms > 0 && now - svc->clock_read_ms < max_age_ms) {
        age = now - svc->clock_read_ms;
        *st = svc->clock_last;
        rc = svc->clock_last_rc;
    }
    pthread_mutex_unlock(&svc->clock_mu);
    if (age >= 0) {
        st->max_error_us += (int64_t)((double)age * TSA_CLOCK_DRIFT_US_PER_MS + 0.999);
        return rc;
    }
    memset(st, 0, sizeof(*st));
    rc = svc->cfg.clock_check(svc->cfg.clock_ctx, st);
    pthread_mutex_lock(&svc->clock_mu);
    svc->clock_last = *st;
    svc->clock_last_rc = rc;
    svc->clock_read_ms = now > 0 ? now : 1;
    pthread_mutex_unlock(&svc->clock_mu);
    return rc;
}

/* Whether tokens may carry the current time for a unit with this accuracy (0 = none stated), from
 * a reading at most max_age_ms old. Logs the start and the end of an episode of unusable clock
 * once. */
static int clock_usable(struct tsa_service *svc, int64_t accuracy_us, int max_age_ms)
{
    struct tsa_clock_state st;
    int rc, ok;

    rc = clock_read(svc, max_age_ms, &st);
    ok = rc == UTIL_OK && st.synced && (accuracy_us == 0 || st.max_error_us <= accuracy_us);
    if (!ok && atomic_exchange(&svc->clock_bad, 1) == 0)
        UTIL_WARN(TSA_MOD,
                  "clock not usable for time stamps (%s, error bound %lld us, "
                  "accuracy %lld us)%s",
                  rc != UTIL_OK ? util_strerror(rc)
                  : st.synced   ? "synchronized"
                                : "unsynchronized",
                  (long long)st.max_error_us, (long long)accuracy_us,
                  svc->cfg.require_clock_sync ? ": answering timeNotAvailable"
                                              : "; issuing anyway (require_clock_sync = no)");
    else if (ok && atomic_exchange(&svc->clock_bad, 0) == 1)
        UTIL_INFO(TSA_MOD, "clock usable for time stamps again");
    ok = ok || !svc->cfg.require_clock_sync;
    atomic_store(&svc->clock_ok, ok);
    return ok;
}

/* ---- loops ----------------------------------------------------------------------------------- */

void tsa__job_free(struct tsa__job *job)
{
    struct tsa_service *svc;
    if (job == NULL)
        return;
    util_blob_unref(job->reply);
    TS_REQ_free(job->parsed);
    svc = job->svc;
    free(job);
    inflight_release(svc); /* last: the service may be freed right after */
}

void tsa__deliver(struct tsa__job *job)
{
    util_pool_complete(job->completion, UTIL_OK);
}

static void respond_der(struct http_request *req, struct util_blob *der)
{
    struct http_response resp = {
        .status = 200,
        .content_type = "application/timestamp-reply",
        .body = der,
        .headers = "Cache-Control: no-store\r\n",
    };
    http_request_respond(req, &resp);
}

static void respond_reject(struct tsa_service *svc, struct http_request *req, int reason)
{
    int bit = tsa__reject_fail_info(reason);
    atomic_fetch_add_explicit(&svc->rejected[bit], 1, memory_order_relaxed);
    respond_der(req, svc->rejects[reason]);
}

static void respond_job(struct tsa__job *job)
{
    struct tsa_service *svc = job->svc;
    if (job->reject >= 0 || job->reply == NULL) {
        respond_reject(svc, job->req, job->reject >= 0 ? job->reject : TSA__REJ_INTERNAL);
    } else {
        atomic_fetch_add_explicit(&svc->granted, 1, memory_order_relaxed);
        respond_der(job->req, job->reply);
    }
}

/* The job's completion: on its loop, or with UTIL_ECLOSED on the thread that finished it (or in
 * loop_fini) when the loop is gone, and then its request is gone too. */
static void job_done(void *arg, int result)
{
    struct tsa__job *job = arg;
    if (result != UTIL_ECLOSED)
        respond_job(job);
    tsa__job_free(job);
}

static void loop_init(void *ctx, uv_loop_t *loop, int index)
{
    struct tsa_service *svc = ctx;

    if (index < 0 || index >= TSA__MAX_LOOPS) {
        UTIL_ERROR(TSA_MOD, "loop %d: more than %d loops; its TSA requests get systemFailure",
                   index, TSA__MAX_LOOPS);
        return;
    }
    /* Ports are not tied to a pool: the HSM pool and the log thread both complete into it. */
    if (util_pool_port_new(NULL, loop, &svc->ports[index]) != UTIL_OK) {
        UTIL_ERROR(TSA_MOD,
                   "loop %d: cannot make its completion port; its TSA requests get "
                   "systemFailure",
                   index);
        svc->ports[index] = NULL;
    }
}

static void loop_fini(void *ctx, uv_loop_t *loop, int index)
{
    struct tsa_service *svc = ctx;

    if (index < 0 || index >= TSA__MAX_LOOPS || svc->ports[index] == NULL)
        return;
    /* Jobs that came back but were not answered yet, and later ones, get job_done(UTIL_ECLOSED):
     * their connections are gone with the loop. The port frees itself after its last job. */
    util_pool_port_close(svc->ports[index]);
    svc->ports[index] = NULL;
}

/* ---- the HTTP handler ------------------------------------------------------------------------ */

static int is_query_type(const char *ct, size_t len)
{
    static const char want[] = "application/timestamp-query";
    size_t n = sizeof(want) - 1;

    if (ct == NULL || len < n || strncasecmp(ct, want, n) != 0)
        return 0;
    /* parameters may follow (none are defined), nothing else */
    return len == n || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

static struct tsa__unit *find_unit(struct tsa_service *svc, const char *target, size_t len)
{
    size_t plen = strlen(svc->path);
    const char *q = memchr(target, '?', len);

    if (q != NULL)
        len = (size_t)(q - target);
    if (len > 1 && target[len - 1] == '/')
        len--;
    if (len < plen || memcmp(target, svc->path, plen) != 0)
        return NULL;
    if (len == plen)
        return &svc->units[0];
    if (target[plen] != '/' && plen > 1)
        return NULL;
    for (int i = 0; i < svc->n_units; i++) {
        size_t rlen = strlen(svc->units[i].route);
        if (rlen == len && memcmp(svc->units[i].route, target, len) == 0)
            return &svc->units[i];
    }
    return NULL;
}

/* The unit's certificate expired while serving: systemFailure (logged once a minute at most). */
static int cert_expired(struct tsa__unit *unit)
{
    int64_t now_ms = util_mono_ms();
    int64_t last = atomic_load_explicit(&unit->expired_logged_ms, memory_order_relaxed);

    if (last == 0 || now_ms - last >= 60000) {
        atomic_store_explicit(&unit->expired_logged_ms, now_ms, memory_order_relaxed);
        UTIL_ERROR(TSA_MOD,
                   "unit %s: the TSA certificate expired; answering systemFailure until a valid "
                   "one is installed",
                   unit->name);
    }
    return TSA__REJ_CERT_EXPIRED;
}

static void handle_query(void *ctx, struct http_request *req)
{
    struct tsa_service *svc = ctx;
    struct tsa__unit *unit = NULL;
    struct util_pool_port *port = NULL;
    struct tsa__job *job = NULL;
    struct tsa__query query;
    TS_REQ *parsed = NULL;
    const unsigned char *body = NULL;
    const char *target, *ct;
    size_t target_len = 0, ct_len = 0, body_len = 0;
    int64_t serial = 0;
    int index, rc, reject;

    target = http_request_target(req, &target_len);
    unit = find_unit(svc, target, target_len);
    if (unit == NULL) {
        http_request_respond_text(req, 404, "text/plain", "no such TSA unit\n");
        return;
    }
    ct = http_request_header(req, "Content-Type", &ct_len);
    if (!is_query_type(ct, ct_len)) {
        atomic_fetch_add_explicit(&svc->unsupported_media, 1, memory_order_relaxed);
        http_request_respond_text(req, 415, "text/plain",
                                  "send a DER TimeStampReq as application/timestamp-query\n");
        return;
    }
    atomic_fetch_add_explicit(&svc->requests, 1, memory_order_relaxed);
    if (atomic_load(&svc->stopping)) {
        respond_reject(svc, req, TSA__REJ_STOPPING);
        return;
    }
    body = http_request_body(req, &body_len);
    if (body_len > svc->cfg.max_query_bytes) {
        respond_reject(svc, req, TSA__REJ_TOO_LARGE);
        return;
    }
    rc = tsa__query_check_keep(&unit->rules, body, body_len, &query, &parsed);
    if (rc != UTIL_OK || query.reject >= 0) {
        respond_reject(svc, req, rc != UTIL_OK ? TSA__REJ_INTERNAL : query.reject);
        return;
    }
    reject = -1;
    index = http_request_loop_index(req);
    port = index >= 0 && index < TSA__MAX_LOOPS ? svc->ports[index] : NULL;
    if (!clock_usable(svc, unit->accuracy_us, svc->cfg.clock_reread_ms))
        reject = TSA__REJ_TIME;
    else if ((int64_t)time(NULL) >= unit->not_after)
        reject = cert_expired(unit);
    else if (port == NULL)
        reject = TSA__REJ_INTERNAL;
    else if (atomic_fetch_add(&svc->inflight, 1) >= svc->cfg.max_inflight) {
        inflight_release(svc);
        reject = TSA__REJ_BUSY;
    } else if (tsa__serial_take(svc, unit, &serial) != UTIL_OK) {
        inflight_release(svc);
        reject = TSA__REJ_SERIALS;
    } else {
        job = calloc(1, sizeof(*job) + body_len);
        if (job == NULL || util_pool_port_expect(port, job_done, job, &job->completion) != 0) {
            free(job); /* not counted as a job yet: inflight is released just below */
            job = NULL;
            inflight_release(svc);
            reject = TSA__REJ_INTERNAL;
        }
    }
    if (reject >= 0) {
        TS_REQ_free(parsed);
        respond_reject(svc, req, reject);
        return;
    }
    job->svc = svc;
    job->unit = unit;
    job->req = req;
    job->serial = serial;
    job->parsed = parsed;
    job->query = query;
    job->reject = -1;
    job->der_len = body_len;
    memcpy(job->der, body, body_len);
    rc = hsm_submit(svc->hsm, NULL, tsa__sign_work, tsa__sign_done, job);
    if (rc != UTIL_OK) {
        /* The serial is burnt, which is allowed: serials must be unique, not dense. */
        util_pool_completion_drop(job->completion);
        tsa__job_free(job);
        respond_reject(svc, req, rc == UTIL_ECLOSED ? TSA__REJ_STOPPING : TSA__REJ_BUSY);
    }
}

/* GET (and HEAD) on the TSA's path: RFC 3161 §3.4 defines only POST. Without this route the
 * request would fall through to OCSP's GET route at "/" and get an OCSP malformedRequest. */
static void handle_get(void *ctx, struct http_request *req)
{
    (void)ctx;
    http_request_respond_405(req, "POST");
}

int tsa_service_register(struct tsa_service *svc, struct http_server *srv)
{
    int rc = http_server_route(srv, HTTP_PUBLIC, "POST", svc->path, handle_query, svc);
    if (rc == UTIL_OK && strcmp(svc->path, "/") != 0) /* "/" is OCSP's GET too */
        rc = http_server_route(srv, HTTP_PUBLIC, "GET", svc->path, handle_get, svc);
    if (rc == UTIL_OK)
        rc = http_server_on_loop(srv, loop_init, loop_fini, svc);
    return rc;
}

/* ---- readiness and stats --------------------------------------------------------------------- */

int tsa_service_ready(struct tsa_service *svc, char *why, size_t why_len)
{
    int64_t strictest = 0;

    for (int i = 0; i < svc->n_units; i++) {
        int64_t acc = svc->units[i].accuracy_us;
        if (acc > 0 && (strictest == 0 || acc < strictest))
            strictest = acc;
    }
    if (!clock_usable(svc, strictest, 0)) { /* a fresh reading, which requests then reuse */
        (void)snprintf(why, why_len, "tsa: clock not synchronized within the accuracy");
        return 0;
    }
    if (atomic_load(&svc->log.failing)) {
        (void)snprintf(why, why_len, "tsa: token log or serial reservation failing");
        return 0;
    }
    if (atomic_load(&svc->serials_exhausted)) {
        (void)snprintf(why, why_len, "tsa: serial numbers exhausted (store late)");
        return 0;
    }
    return 1;
}

void tsa_stats_get(const struct tsa_service *svc, struct tsa_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->requests = atomic_load_explicit(&svc->requests, memory_order_relaxed);
    out->granted = atomic_load_explicit(&svc->granted, memory_order_relaxed);
    for (int i = 0; i < 26; i++)
        out->rejected[i] = atomic_load_explicit(&svc->rejected[i], memory_order_relaxed);
    out->unsupported_media = atomic_load_explicit(&svc->unsupported_media, memory_order_relaxed);
    out->log_commits = atomic_load_explicit(&svc->log_commits, memory_order_relaxed);
    out->log_records = atomic_load_explicit(&svc->log_records, memory_order_relaxed);
    out->log_failures = atomic_load_explicit(&svc->log_failures, memory_order_relaxed);
    out->inflight = atomic_load(&svc->inflight);
    out->clock_ok = atomic_load(&svc->clock_ok);
}

int tsa_service_metrics(const struct tsa_service *svc, char *buf, size_t len)
{
    struct tsa_stats ts;
    uint64_t rejected = 0;
    int n;
    tsa_stats_get(svc, &ts);
    for (size_t i = 0; i < sizeof(ts.rejected) / sizeof(ts.rejected[0]); i++)
        rejected += ts.rejected[i];
    n = snprintf(buf, len,
                 "# TYPE pkiva_tsa_requests_total counter\n"
                 "pkiva_tsa_requests_total %llu\n"
                 "# TYPE pkiva_tsa_responses_total counter\n"
                 "pkiva_tsa_responses_total{status=\"granted\"} %llu\n"
                 "pkiva_tsa_responses_total{status=\"rejection\"} %llu\n"
                 "# TYPE pkiva_tsa_log_commits_total counter\n"
                 "pkiva_tsa_log_commits_total %llu\n"
                 "# TYPE pkiva_tsa_log_records_total counter\n"
                 "pkiva_tsa_log_records_total %llu\n"
                 "# TYPE pkiva_tsa_log_failures_total counter\n"
                 "pkiva_tsa_log_failures_total %llu\n"
                 "# TYPE pkiva_tsa_inflight gauge\n"
                 "pkiva_tsa_inflight %d\n"
                 "# TYPE pkiva_tsa_clock_ok gauge\n"
                 "pkiva_tsa_clock_ok %d\n",
                 (unsigned long long)ts.requests, (unsigned long long)ts.granted,
                 (unsigned long long)rejected, (unsigned long long)ts.log_commits,
                 (unsigned long long)ts.log_records, (unsigned long long)ts.log_failures,
                 ts.inflight, ts.clock_ok);
    return n < 0 || (size_t)n >= len ? UTIL_EINVAL : n;
}
