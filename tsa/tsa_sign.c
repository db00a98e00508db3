/* SPDX-License-Identifier: Apache-2.0 */
/* Signing a time-stamp token on an HSM signing thread with OpenSSL's TS_RESP_CTX: the TSTInfo gets
 * the serial the loop reserved, the time read on the signing thread, the unit's policy, accuracy and
 * optional tsa name; the SignedData carries an RFC 5816 signingCertificateV2 attribute only (OpenSSL
 * adds the SHA-1 v1 attribute only when the ESS digest is SHA-1, which tsa_service_new refuses).
 * TS_RESP_CTX objects are reused: one per signing thread and unit at most, kept in a small pool. */
#include "tsa_int.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/pkcs7.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* TS_RESP_CTX callbacks. data is the job being signed. */
static ASN1_INTEGER *serial_cb(TS_RESP_CTX *ctx, void *data)
{
    struct tsa__job *job = data;
    ASN1_INTEGER *serial = NULL;

    if (job == NULL)
        return NULL;
    serial = ASN1_INTEGER_new();
    if (serial == NULL || !ASN1_INTEGER_set_int64(serial, job->serial)) {
        ASN1_INTEGER_free(serial);
        /* OpenSSL turns a NULL serial into a rejection; the worker reports systemFailure. */
        return NULL;
    }
    return serial;
}

static int time_cb(TS_RESP_CTX *ctx, void *data, long *sec, long *usec)
{
    struct tsa__job *job = data;
    struct timespec ts;

    if (job == NULL)
        return 0;
    if (job->fixed.tv_sec != 0)
        ts = job->fixed;
    else if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    *sec = (long)ts.tv_sec;
    *usec = ts.tv_nsec / 1000;
    job->gen_time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    return 1;
}

/* Non-critical request extensions are ignored; critical ones were rejected on the loop already. */
static int extension_cb(TS_RESP_CTX *ctx, X509_EXTENSION *ext, void *data)
{
    return !X509_EXTENSION_get_critical(ext);
}

static unsigned precision_digits(int64_t accuracy_us)
{
    if (accuracy_us <= 0 || accuracy_us >= 1000000)
        return 0;
    return accuracy_us >= 1000 ? 3 : 6;
}

static TS_RESP_CTX *ctx_new(struct tsa_service *svc, struct tsa__unit *unit)
{
    static const int md_nids[] = {NID_sha256,   NID_sha384,   NID_sha512, NID_sha3_256,
                                  NID_sha3_384, NID_sha3_512, NID_sha1,   NID_md5};
    TS_RESP_CTX *ctx = NULL;
    int64_t acc = unit->accuracy_us;
    int ok = 1;

    ctx = TS_RESP_CTX_new_ex(hsm_libctx(svc->hsm), NULL);
    if (ctx == NULL)
        return NULL;
    ok = TS_RESP_CTX_set_signer_cert(ctx, unit->cert) &&
         TS_RESP_CTX_set_signer_key(ctx, unit->key->pkey) &&
         TS_RESP_CTX_set_signer_digest(ctx, unit->sign_md) &&
         TS_RESP_CTX_set_ess_cert_id_digest(ctx, unit->ess_md) &&
         TS_RESP_CTX_set_def_policy(ctx, unit->policy) &&
         (unit->chain == NULL || TS_RESP_CTX_set_certs(ctx, unit->chain)) &&
         TS_RESP_CTX_set_accuracy(ctx, (int)(acc / 1000000), (int)(acc / 1000 % 1000),
                                  (int)(acc % 1000)) &&
         TS_RESP_CTX_set_clock_precision_digits(ctx, precision_digits(acc));
    for (int i = 0; ok && i < unit->n_accepted; i++)
        ok = TS_RESP_CTX_add_policy(ctx, unit->accepted[i]);
    for (size_t i = 0; ok && i < sizeof(md_nids) / sizeof(md_nids[0]); i++) {
        if (tsa__md_len(md_nids[i], unit->rules.allow_weak_hashes) > 0)
            ok = TS_RESP_CTX_add_md(ctx, EVP_get_digestbynid(md_nids[i]));
    }
    if (!ok) {
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: cannot set up TS_RESP_CTX", unit->name);
        TS_RESP_CTX_free(ctx);
        return NULL;
    }
    if (unit->tsa_name)
        TS_RESP_CTX_add_flags(ctx, TS_TSA_NAME);
    TS_RESP_CTX_set_extension_cb(ctx, extension_cb, NULL);
    TS_RESP_CTX_set_time_cb(ctx, time_cb, NULL);
    return ctx;
}

static TS_RESP_CTX *ctx_get(struct tsa_service *svc, struct tsa__unit *unit)
{
    TS_RESP_CTX *ctx = NULL;

    pthread_mutex_lock(&unit->ctx_mu);
    if (unit->n_ctx > 0)
        ctx = unit->ctx_pool[--unit->n_ctx];
    pthread_mutex_unlock(&unit->ctx_mu);
    if (ctx == NULL)
        ctx = ctx_new(svc, unit);
    return ctx;
}

static void ctx_put(struct tsa__unit *unit, TS_RESP_CTX *ctx)
{
    pthread_mutex_lock(&unit->ctx_mu);
    if (unit->n_ctx < TSA__CTX_POOL_MAX) {
        unit->ctx_pool[unit->n_ctx++] = ctx;
        ctx = NULL;
    }
    pthread_mutex_unlock(&unit->ctx_mu);
    TS_RESP_CTX_free(ctx); /* more signing threads than the pool keeps: rare, just free it */
}

void tsa__ctx_pool_free(struct tsa__unit *unit)
{
    for (int i = 0; i < unit->n_ctx; i++)
        TS_RESP_CTX_free(unit->ctx_pool[i]);
    unit->n_ctx = 0;
}

/* Replaces the SignerInfo signature TS_RESP_create_response made with one from
 * hsm_sign_blocking over the same signed attributes, so that every token pkiva serves carries a
 * signature that the one signing path made and verified (hsm/key.c DESIGN). OpenSSL's own
 * signature came from pkcs11-provider's digest-and-sign path, which is not checked (and on some
 * tokens is wrong); TS_RESP_CTX insists on the token key (it compares it with the certificate),
 * so this path pays for two token signatures: it only serves units without a template. */
static int resign(struct tsa__job *job, TS_RESP *resp)
{
    PKCS7 *token = TS_RESP_get_token(resp);
    PKCS7_SIGNER_INFO *si = NULL;
    unsigned char *attrs = NULL;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int attrs_len;
    int rc;

    if (token == NULL || !PKCS7_type_is_signed(token) ||
        sk_PKCS7_SIGNER_INFO_num(token->d.sign->signer_info) != 1)
        return UTIL_EINVAL; /* not reached: TS_RESP_create_response makes one SignerInfo */
    si = sk_PKCS7_SIGNER_INFO_value(token->d.sign->signer_info, 0);
    /* The DER PKCS7_dataFinal signed: the attributes as a SET OF, sorted. */
    attrs_len = ASN1_item_i2d((ASN1_VALUE *)si->auth_attr, &attrs, ASN1_ITEM_rptr(PKCS7_ATTR_SIGN));
    if (attrs_len <= 0)
        return UTIL_ENOMEM;
    rc = hsm_sign_blocking(job->svc->hsm, job->unit->key, attrs, (size_t)attrs_len, &sig, &sig_len);
    if (rc == UTIL_OK &&
        (sig_len > INT_MAX || ASN1_STRING_set(si->enc_digest, sig, (int)sig_len) != 1))
        rc = UTIL_ENOMEM;
    free(sig);
    OPENSSL_free(attrs);
    return rc;
}

int tsa__sign_openssl(struct tsa__job *job)
{
    struct tsa__unit *unit = job->unit;
    TS_RESP_CTX *ctx = NULL;
    BIO *in = NULL;
    TS_RESP *resp = NULL;
    unsigned char *der = NULL;
    int der_len = 0;
    long status;
    int rc = UTIL_ENOMEM;

    if (hsm_key_refused(unit->key))
        return UTIL_EHSM; /* the unit's key failed its self-check or went bad: systemFailure */
    ERR_clear_error();
    ctx = ctx_get(job->svc, unit);
    in = BIO_new_mem_buf(job->der, (int)job->der_len);
    if (ctx == NULL || in == NULL)
        goto out;
    TS_RESP_CTX_set_serial_cb(ctx, serial_cb, job);
    TS_RESP_CTX_set_time_cb(ctx, time_cb, job);
    resp = TS_RESP_create_response(ctx, in);
    if (resp == NULL)
        goto out;
    status = ASN1_INTEGER_get(TS_STATUS_INFO_get0_status(TS_RESP_get_status_info(resp)));
    if (status != TS_STATUS_GRANTED) {
        /* The loop checked the request against the same rules, so what fails here is the
         * signature (or an allocation inside OpenSSL): count it against the HSM. */
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: serial %lld: token not signed",
                         unit->name, (long long)job->serial);
        rc = hsm_blame_blocking(job->svc->hsm, unit->key); /* the key's, the token's, or none */
        goto out;
    }
    rc = resign(job, resp);
    if (rc != UTIL_OK) {
        rc = rc == UTIL_ENOMEM ? rc : UTIL_EHSM;
        goto out;
    }
    rc = UTIL_ENOMEM;
    der_len = i2d_TS_RESP(resp, &der);
    if (der_len <= 0)
        goto out;
    job->reply = util_blob_new(der, (size_t)der_len);
    if (job->reply == NULL)
        goto out;
    rc = UTIL_OK;
out:
    if (rc == UTIL_ENOMEM)
        util_log_openssl(UTIL_LOG_ERROR, TSA_MOD, "unit %s: out of memory while signing",
                         unit->name);
    ERR_clear_error();
    OPENSSL_free(der);
    TS_RESP_free(resp);
    BIO_free(in);
    if (ctx != NULL) {
        TS_RESP_CTX_set_serial_cb(ctx, serial_cb, NULL);
        TS_RESP_CTX_set_time_cb(ctx, time_cb, NULL);
        ctx_put(unit, ctx);
    }
    return rc;
}

struct hsm_signer {
    struct hsm *hsm;
    const struct hsm_key *key;
};

/* tsa__sign_fn for the HSM: hsm_sign_blocking over the signed attributes. */
static int sign_in_hsm(void *arg, const unsigned char *data, size_t len, unsigned char *sig,
                       size_t *sig_len)
{
    const struct hsm_signer *s = arg;
    unsigned char *made = NULL;
    size_t made_len = 0;
    int rc = hsm_sign_blocking(s->hsm, s->key, data, len, &made, &made_len);

    if (rc == UTIL_OK && made_len > *sig_len)
        rc = UTIL_EINVAL; /* larger than EVP_PKEY_get_size said: not reached */
    if (rc == UTIL_OK) {
        memcpy(sig, made, made_len);
        *sig_len = made_len;
    }
    free(made);
    return rc;
}

int tsa__sign_work(void *thread_state, void *arg)
{
    struct tsa__job *job = arg;
    struct tsa__unit *unit = job->unit;
    struct hsm_signer signer = {job->svc->hsm, unit->key};
    struct timespec now;
    unsigned char *der = NULL;
    size_t der_len = 0;
    int rc;

    (void)thread_state;
    if (!atomic_load_explicit(&unit->tmpl_ready, memory_order_acquire)) {
        tsa__tmpl_retry_blocking(job->svc, unit);
        if (!atomic_load_explicit(&unit->tmpl_ready, memory_order_acquire))
            return tsa__sign_openssl(job);
    }
    if (job->parsed == NULL)
        return tsa__sign_openssl(job);
    if (clock_gettime(CLOCK_REALTIME, &now) != 0)
        return UTIL_EINVAL; /* CLOCK_REALTIME always exists: not reached */
    rc = tsa__token_build(unit, job->parsed, job->query.policy_index, job->serial, &now,
                          sign_in_hsm, &signer, &der, &der_len);
    if (rc == UTIL_OK) {
        job->gen_time_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
        job->reply = util_blob_new(der, der_len);
        if (job->reply == NULL)
            rc = UTIL_ENOMEM;
    }
    if (rc == UTIL_ENOMEM)
        UTIL_ERROR(TSA_MOD, "unit %s: out of memory while signing", unit->name);
    OPENSSL_free(der);
    return rc;
}

void tsa__sign_done(void *arg, int result)
{
    struct tsa__job *job = arg;
    struct tsa_service *svc = job->svc;

    if (result != UTIL_OK) {
        job->reject = result == UTIL_ECLOSED ? TSA__REJ_STOPPING : TSA__REJ_SIGN;
        tsa__deliver(job);
        return;
    }
    if (svc->cfg.durable_log) {
        /* The log thread answers once the record is durable. */
        if (tsa__log_push(svc, job, 1) != UTIL_OK) {
            job->reject = TSA__REJ_LOG;
            tsa__deliver(job);
        }
        return;
    }
    /* durable_log = no: answer now, record right after; a token the log cannot take is not sent,
     * so that every token out there has (or is about to have) its record. */
    if (tsa__log_push(svc, job, 0) != UTIL_OK)
        job->reject = TSA__REJ_LOG;
    tsa__deliver(job);
}
