/* SPDX-License-Identifier: Apache-2.0 */
/* Generation of one CRL: read the feed head, reserve the CRL number, walk the issuer's revoked
 * certificates (full) or the change feed since the base (delta) into the DER builder, hash the
 * TBSCertList here and sign only the digest on an HSM signing thread; then save, write and mark the
 * revocation deadline rows. Shared by the publisher thread and the standalone entry points. */
#include "crl_int.h"

#include <errno.h>
#include <hsm/hsm.h>
#include <inttypes.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void crl_config_default(struct crl_config *cfg)
{
    struct crl_settings file; /* the defaults shared with [crl] come from its table */
    crl_settings_default(&file);
    memset(cfg, 0, sizeof(*cfg));
    cfg->deltas = file.deltas;
    /* The file's timing defaults are derived from [revocation] deadline by the reader; a
     * caller without a configuration file (tests, bench) gets fixed ones. */
    cfg->validity_seconds = 7 * 86400;
    cfg->delta_validity_seconds = 86400;
    cfg->interval_seconds = 3600;
    cfg->coalesce_ms = file.coalesce_ms;
    cfg->full_on_change = file.full_on_change;
    cfg->expired_retention_seconds = file.expired_retention_s;
    cfg->max_age_seconds = 3600;
    cfg->retry_min_ms = 5000;
    cfg->retry_max_ms = 300000;
    cfg->max_entries = 20000000;
    cfg->delta_max_changes = 200000;
    cfg->repo_threads = 1;
    cfg->repo_queue_max = 256;
    cfg->lease_ms = file.lease_ms;
}

/* ---- issuers -------------------------------------------------------------------------------- */

int crl__issuer_init(struct crl__issuer *is, const struct crl_config *cfg,
                     const struct crl_issuer_config *ic)
{
    const ASN1_OCTET_STRING *ski = NULL;
    unsigned char *der = NULL;
    int len, rc = UTIL_OK;

    memset(is, 0, sizeof(*is));
    if (ic == NULL || !util_name_valid(ic->name) || ic->cert == NULL || ic->key == NULL ||
        ic->key->pkey == NULL || ic->store_issuer_id <= 0) {
        UTIL_ERROR(CRL_MOD, "issuer %s: name, certificate, key and store id are required",
                   ic && ic->name ? ic->name : "(null)");
        return UTIL_ECONFIG;
    }
    (void)snprintf(is->name, sizeof(is->name), "%s",
                   ic->name); /* length checked by util_name_valid */
    is->store_id = ic->store_issuer_id;
    is->cert = ic->cert;
    is->key = ic->key;
    ERR_clear_error();
    if (EVP_PKEY_eq(X509_get0_pubkey(ic->cert), ic->key->pkey) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, CRL_MOD,
                         "issuer %s: the key does not match the certificate", ic->name);
        rc = UTIL_ECONFIG;
        goto out;
    }
    len = i2d_X509_NAME(X509_get_subject_name(ic->cert), &der);
    if (len <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, CRL_MOD, "issuer %s: cannot encode the subject", ic->name);
        rc = UTIL_ECRYPTO;
        goto out;
    }
    is->name_der = der;
    is->name_der_len = (size_t)len;
    der = NULL;
    ski = X509_get0_subject_key_id(ic->cert);
    if (ski != NULL && ASN1_STRING_length(ski) > 0 &&
        (size_t)ASN1_STRING_length(ski) <= sizeof(is->key_id)) {
        is->key_id_len = (size_t)ASN1_STRING_length(ski);
        memcpy(is->key_id, ASN1_STRING_get0_data(ski), is->key_id_len);
    } else {
        /* No SKI: RFC 5280 4.2.1.2 method (1), SHA-1 of the subjectPublicKey bits. */
        unsigned int md_len = 0;
        if (X509_pubkey_digest(ic->cert, EVP_sha1(), is->key_id, &md_len) != 1) {
            util_log_openssl(UTIL_LOG_ERROR, CRL_MOD, "issuer %s: cannot hash the public key",
                             ic->name);
            rc = UTIL_ECRYPTO;
            goto out;
        }
        is->key_id_len = md_len;
    }
    if (cfg->deltas && cfg->public_url != NULL && cfg->public_url[0] != '\0') {
        size_t n = strlen(cfg->public_url) + strlen(ic->name) + 32;
        is->freshest_url = malloc(n);
        if (is->freshest_url == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        (void)snprintf(is->freshest_url, n, "%s/crl/%s-delta.crl", cfg->public_url, ic->name);
    }
out:
    OPENSSL_free(der);
    if (rc != UTIL_OK)
        crl__issuer_cleanup(is);
    return rc;
}

void crl__issuer_cleanup(struct crl__issuer *is)
{
    if (is == NULL)
        return;
    OPENSSL_free(is->name_der);
    free(is->freshest_url);
    is->name_der = NULL;
    is->freshest_url = NULL;
}

/* ---- signing on an HSM thread --------------------------------------------------------------- */

struct sign_job {
    struct hsm *hsm;
    const struct hsm_key *key;
    const unsigned char *digest; /* NULL: only fetch the AlgorithmIdentifier */
    size_t digest_len;
    unsigned char *sig; /* malloc'd result */
    size_t sig_len;
    unsigned char algid[CRL__ALGID_MAX];
    size_t algid_len;
};

/* The signature AlgorithmIdentifier exactly as the provider will sign (ecdsa-with-SHA256 without
 * parameters, sha256WithRSAEncryption with NULL, RSASSA-PSS with its parameters): asked from a
 * digest-sign context set up like every other signature of this key. */
static int algid_work(void *thread_state, void *arg)
{
    struct sign_job *job = arg;
    EVP_MD_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    int rc;

    rc = hsm_sign_ctx_new_blocking(job->hsm, job->key, &ctx);
    if (rc != UTIL_OK)
        goto out;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, job->algid,
                                                  sizeof(job->algid));
    params[1] = OSSL_PARAM_construct_end();
    ERR_clear_error();
    if (EVP_PKEY_CTX_get_params(EVP_MD_CTX_get_pkey_ctx(ctx), params) != 1 ||
        params[0].return_size == 0 || params[0].return_size > sizeof(job->algid)) {
        util_log_openssl(UTIL_LOG_ERROR, CRL_MOD, "no signature AlgorithmIdentifier for %s",
                         job->key->uri);
        rc = UTIL_ECRYPTO;
        goto out;
    }
    job->algid_len = params[0].return_size;
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* Signs a digest made elsewhere: the token sees 32-64 bytes instead of the whole TBSCertList, and
 * the HSM session is busy for one signature only. hsm_sign_digest_blocking verifies the signature
 * before it is returned (a bad one never reaches a CRL and marks the key unhealthy). */
static int sign_work(void *thread_state, void *arg)
{
    struct sign_job *job = arg;

    (void)thread_state;
    return hsm_sign_digest_blocking(job->hsm, job->key, job->digest, job->digest_len, &job->sig,
                                    &job->sig_len);
}

static int ensure_algid(struct crl__issuer *is, struct hsm *hsm)
{
    struct sign_job job;
    int rc;
    if (is->algid_len > 0)
        return UTIL_OK;
    memset(&job, 0, sizeof(job));
    job.hsm = hsm;
    job.key = is->key;
    rc = hsm_run_sync(hsm, algid_work, &job);
    if (rc != UTIL_OK)
        return rc;
    memcpy(is->algid, job.algid, job.algid_len);
    is->algid_len = job.algid_len;
    return UTIL_OK;
}

static int sign_tbs(struct crl__issuer *is, struct hsm *hsm, const unsigned char *tbs,
                    size_t tbs_len, unsigned char **sig, size_t *sig_len)
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    struct sign_job job;
    EVP_MD *md = NULL;
    int rc;

    ERR_clear_error();
    md = EVP_MD_fetch(NULL, is->key->md, NULL);
    if (md == NULL || EVP_Digest(tbs, tbs_len, digest, &digest_len, md, NULL) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, CRL_MOD, "cannot hash the CRL with %s", is->key->md);
        rc = UTIL_ECRYPTO;
        goto out;
    }
    memset(&job, 0, sizeof(job));
    job.hsm = hsm;
    job.key = is->key;
    job.digest = digest;
    job.digest_len = digest_len;
    rc = hsm_run_sync(hsm, sign_work, &job);
    if (rc != UTIL_OK)
        goto out;
    *sig = job.sig;
    *sig_len = job.sig_len;
out:
    EVP_MD_free(md);
    return rc;
}

/* ---- the walks ------------------------------------------------------------------------------ */

/* Whether a revoked certificate still belongs on a CRL issued at this_update. */
static int keep_entry(const struct crl_config *cfg, int64_t not_after, int64_t this_update)
{
    if (not_after <= 0 || not_after >= this_update - cfg->expired_retention_seconds)
        return 1;
    return cfg->expired_on_crl_since > 0 && not_after >= cfg->expired_on_crl_since;
}

struct full_walk {
    const struct crl_config *cfg;
    struct crl__builder *b;
    int64_t this_update;
    int rc;
};

static int on_revoked(void *ctx, const struct store_cert *c)
{
    struct full_walk *w = ctx;
    struct crl__entry e;
    if (c->status != STORE_REVOKED || !keep_entry(w->cfg, c->not_after, w->this_update))
        return 0;
    if (w->b->entries >= w->cfg->max_entries) {
        w->rc = UTIL_EBUSY;
        return 1;
    }
    e.serial = c->serial;
    e.serial_len = c->serial_len;
    e.date = c->revoked_at;
    e.reason = c->reason;
    e.invalidity_date = c->invalidity_date;
    w->rc = crl__builder_add(w->b, &e);
    return w->rc != UTIL_OK;
}

/* One certificate changed since the base. */
struct delta_change {
    int64_t id;
    int64_t at; /* unix seconds of the change */
    int kind;
    struct store_cert cert; /* its state when read */
};

struct delta_walk {
    int64_t issuer_id, head, last;
    struct delta_change *v;
    size_t n, cap, max;
    int rc;
};

static int on_change(void *ctx, const struct store_change *ch)
{
    struct delta_walk *w = ctx;
    w->last = ch->id;
    if (ch->id > w->head)
        return 1; /* after the head read before the walk: the next delta has it */
    if (ch->cert.issuer_id != w->issuer_id || ch->kind == STORE_CHANGE_ISSUE)
        return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 256;
        struct delta_change *v = NULL;
        if (w->n >= w->max) {
            w->rc = UTIL_EBUSY;
            return 1;
        }
        if (cap > w->max)
            cap = w->max;
        v = realloc(w->v, cap * sizeof(*v));
        if (v == NULL) {
            w->rc = UTIL_ENOMEM;
            return 1;
        }
        w->v = v;
        w->cap = cap;
    }
    w->v[w->n].id = ch->id;
    w->v[w->n].at = ch->at_ms / 1000;
    w->v[w->n].kind = ch->kind;
    w->v[w->n].cert = ch->cert;
    w->n++;
    return 0;
}

/* Serial order as the store walks it (memcmp, then shorter first), then feed order. */
static int cmp_change(const void *a, const void *b)
{
    const struct delta_change *x = a, *y = b;
    size_t n = x->cert.serial_len < y->cert.serial_len ? x->cert.serial_len : y->cert.serial_len;
    int c = memcmp(x->cert.serial, y->cert.serial, n);
    if (c != 0)
        return c;
    if (x->cert.serial_len != y->cert.serial_len)
        return x->cert.serial_len < y->cert.serial_len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int same_serial(const struct delta_change *x, const struct delta_change *y)
{
    return x->cert.serial_len == y->cert.serial_len &&
           memcmp(x->cert.serial, y->cert.serial, x->cert.serial_len) == 0;
}

/* Reads the changes (base->feed_id, head] of the issuer and adds one entry per certificate: its
 * current revocation, or removeFromCRL when it is good again (a released hold). */
static int delta_entries(const struct crl_config *cfg, struct store *store, int64_t issuer_id,
                         const struct crl__base *base, int64_t head, int64_t this_update,
                         struct crl__builder *b)
{
    struct delta_walk w;
    int rc = UTIL_OK;

    memset(&w, 0, sizeof(w));
    w.issuer_id = issuer_id;
    w.head = head;
    w.last = base->feed_id;
    w.max = cfg->delta_max_changes > 0 ? (size_t)cfg->delta_max_changes : 1;
    while (w.last < head && w.rc == UTIL_OK) {
        int64_t before = w.last;
        rc = store_feed_read_blocking(store, w.last, 1000, on_change, &w);
        if (rc < 0)
            goto out;
        rc = UTIL_OK;
        if (w.last == before)
            break; /* nothing more to read */
    }
    if (w.rc != UTIL_OK) {
        rc = w.rc;
        if (rc == UTIL_EBUSY)
            UTIL_WARN(CRL_MOD, "more than %lld changes since the base CRL: a full CRL instead",
                      (long long)cfg->delta_max_changes);
        goto out;
    }
    if (w.n > 1)
        qsort(w.v, w.n, sizeof(*w.v), cmp_change);
    for (size_t i = 0; i < w.n && rc == UTIL_OK; i++) {
        const struct delta_change *c = NULL;
        struct crl__entry e;
        if (i + 1 < w.n && same_serial(&w.v[i], &w.v[i + 1]))
            continue; /* the last change of a certificate speaks for it */
        c = &w.v[i];
        e.serial = c->cert.serial;
        e.serial_len = c->cert.serial_len;
        if (c->cert.status == STORE_REVOKED) {
            if (!keep_entry(cfg, c->cert.not_after, this_update))
                continue;
            e.date = c->cert.revoked_at;
            e.reason = c->cert.reason;
            e.invalidity_date = c->cert.invalidity_date;
        } else {
            /* RFC 5280 5.3.1: removeFromCRL, dated when the hold was released. */
            e.date = c->at;
            e.reason = STORE_REASON_REMOVE_FROM_CRL;
            e.invalidity_date = 0;
        }
        rc = crl__builder_add(b, &e);
    }
out:
    free(w.v);
    return rc;
}

/* ---- one CRL -------------------------------------------------------------------------------- */

int crl__generate_blocking(const struct crl_config *cfg, struct crl__issuer *is, struct hsm *hsm,
                           struct store *store, const struct crl__base *base,
                           struct util_blob **der_out, struct crl_info *info)
{
    struct crl__builder b;
    struct crl__tbs_params p;
    const unsigned char *tbs = NULL;
    unsigned char *sig = NULL;
    size_t tbs_len = 0, sig_len = 0;
    int64_t head = 0, number = 0, started = util_mono_ms();
    int rc;

    memset(&b, 0, sizeof(b));
    memset(info, 0, sizeof(*info));
    *der_out = NULL;
    rc = ensure_algid(is, hsm);
    if (rc != UTIL_OK)
        goto out;
    /* The head first: every change up to it is in the walk below (later ones may be too). */
    rc = store_feed_head_blocking(store, &head);
    if (rc == UTIL_OK)
        rc = store_crl_number_next_blocking(store, is->store_id, util_now_ms(), &number);
    if (rc != UTIL_OK)
        goto out;

    memset(&p, 0, sizeof(p));
    p.algid = is->algid;
    p.algid_len = is->algid_len;
    p.issuer_name = is->name_der;
    p.issuer_name_len = is->name_der_len;
    p.this_update = util_now_ms() / 1000;
    p.next_update = p.this_update + (base != NULL && cfg->delta_validity_seconds > 0
                                         ? cfg->delta_validity_seconds
                                         : cfg->validity_seconds);
    p.number = number;
    p.base_number = base != NULL ? base->number : 0;
    p.key_id = is->key_id;
    p.key_id_len = is->key_id_len;
    p.freshest_url = base == NULL ? is->freshest_url : NULL;
    p.expired_on_crl_since = cfg->expired_on_crl_since;

    rc = crl__builder_begin(&b, &p, CRL__DER_MAX);
    if (rc != UTIL_OK)
        goto out;
    if (base == NULL) {
        struct full_walk w = {cfg, &b, p.this_update, UTIL_OK};
        rc = store_cert_iterate_blocking(store, is->store_id, STORE_ITER_REVOKED, on_revoked, &w);
        if (w.rc != UTIL_OK)
            rc = w.rc;
        if (rc == UTIL_EBUSY)
            UTIL_ERROR(CRL_MOD, "issuer %s: more than %lld revoked entries (max_entries)", is->name,
                       (long long)cfg->max_entries);
    } else {
        rc = delta_entries(cfg, store, is->store_id, base, head, p.this_update, &b);
    }
    if (rc != UTIL_OK)
        goto out;
    rc = crl__builder_tbs(&b, &p, &tbs, &tbs_len);
    if (rc == UTIL_OK)
        rc = sign_tbs(is, hsm, tbs, tbs_len, &sig, &sig_len);
    if (rc != UTIL_OK)
        goto out;
    info->entries = b.entries;
    rc = crl__builder_finish(&b, sig, sig_len, der_out);
    if (rc != UTIL_OK)
        goto out;
    info->number = number;
    info->base_number = p.base_number;
    info->this_update = p.this_update;
    info->next_update = p.next_update;
    info->feed_id = head;
    info->der_len = (*der_out)->len;
    info->build_ms = util_mono_ms() - started;
out:
    if (rc != UTIL_OK)
        UTIL_ERROR(CRL_MOD, "issuer %s: %s CRL not generated: %s", is->name,
                   base ? "delta" : "full", util_strerror(rc));
    crl__builder_cleanup(&b);
    free(sig);
    return rc;
}

int crl__file_write(const struct crl_config *cfg, const struct crl__issuer *is, int delta,
                    const struct util_blob *der)
{
    char *path = NULL;
    size_t n = 0;
    int rc = UTIL_OK;

    if (cfg->publish_dir == NULL || cfg->publish_dir[0] == '\0')
        return UTIL_OK;
    n = strlen(cfg->publish_dir) + strlen(is->name) + 16;
    path = malloc(n);
    if (path == NULL)
        return UTIL_ENOMEM;
    (void)snprintf(path, n, "%s/%s%s.crl", cfg->publish_dir, is->name, delta ? "-delta" : "");
    rc = util_file_write_atomic(path, der->data, der->len, 0644);
    if (rc != UTIL_OK)
        UTIL_ERROR(CRL_MOD, "cannot write %s: %s", path, util_strerror(rc));
    free(path);
    return rc;
}

int crl__publish_one_blocking(const struct crl_config *cfg, const struct crl__issuer *is,
                              struct store *store, const struct util_blob *der,
                              const struct crl_info *info, const char *actor)
{
    struct store_crl_record rec;
    int rc;

    memset(&rec, 0, sizeof(rec));
    rec.issuer_id = is->store_id;
    rec.number = info->number;
    rec.base_number = info->base_number;
    rec.this_update = info->this_update;
    rec.next_update = info->next_update;
    rec.feed_id = info->feed_id;
    rec.der = der->data;
    rec.der_len = der->len;
    rec.actor = actor != NULL ? actor : "crl"; /* its audit record is saved with it */
    rc = store_crl_save_blocking(store, &rec);
    if (rc != UTIL_OK)
        goto out;
    rc = crl__file_write(cfg, is, info->base_number != 0, der);
    if (rc != UTIL_OK)
        goto out;
    /* The CRL is out: every revocation of this issuer up to the head read before the walk is in a
     * published CRL (a delta counts, together with its base). */
    rc = store_sla_mark_upto_blocking(store, is->store_id, info->feed_id, STORE_SLA_CRL,
                                      util_now_ms());
out:
    return rc;
}

/* ---- standalone ----------------------------------------------------------------------------- */

int crl_generate_blocking(const struct crl_config *cfg, const struct crl_issuer_config *issuer,
                          struct hsm *hsm, struct store *store, struct util_blob **der_out,
                          struct crl_info *info_out)
{
    struct crl__issuer is;
    struct crl_info info;
    int rc;

    if (cfg == NULL || hsm == NULL || store == NULL || der_out == NULL)
        return UTIL_EINVAL;
    rc = crl__issuer_init(&is, cfg, issuer);
    if (rc != UTIL_OK)
        return rc;
    rc = crl__generate_blocking(cfg, &is, hsm, store, NULL, der_out, &info);
    if (rc == UTIL_OK && info_out != NULL)
        *info_out = info;
    crl__issuer_cleanup(&is);
    return rc;
}

int crl_publish_blocking(const struct crl_config *cfg, const struct crl_issuer_config *issuer,
                         struct hsm *hsm, struct store *store, int what, const char *actor,
                         struct crl_info *full_out, struct crl_info *delta_out)
{
    struct crl__issuer is;
    struct crl_info info;
    struct crl__base base = {0, 0};
    struct util_blob *der = NULL;
    int rc;

    if (cfg == NULL || hsm == NULL || store == NULL || (what & CRL_BOTH) == 0)
        return UTIL_EINVAL;
    rc = crl__issuer_init(&is, cfg, issuer);
    if (rc != UTIL_OK)
        return rc;
    if (what & CRL_FULL) {
        rc = crl__generate_blocking(cfg, &is, hsm, store, NULL, &der, &info);
        if (rc == UTIL_OK)
            rc = crl__publish_one_blocking(cfg, &is, store, der, &info, actor);
        util_blob_unref(der);
        der = NULL;
        if (rc != UTIL_OK)
            goto out;
        if (full_out != NULL)
            *full_out = info;
        base.number = info.number;
        base.feed_id = info.feed_id;
    }
    if ((what & CRL_DELTA) && cfg->deltas) {
        if (base.number == 0) {
            struct store_crl_record meta;
            unsigned char *old = NULL;
            rc = store_crl_latest_blocking(store, is.store_id, 0, &meta, &old);
            free(old);
            if (rc != UTIL_OK) {
                UTIL_ERROR(CRL_MOD, "issuer %s: no full CRL to make a delta against: %s", is.name,
                           util_strerror(rc));
                goto out;
            }
            base.number = meta.number;
            base.feed_id = meta.feed_id;
        }
        rc = crl__generate_blocking(cfg, &is, hsm, store, &base, &der, &info);
        if (rc == UTIL_OK)
            rc = crl__publish_one_blocking(cfg, &is, store, der, &info, actor);
        util_blob_unref(der);
        der = NULL;
        if (rc != UTIL_OK)
            goto out;
        if (delta_out != NULL)
            *delta_out = info;
    }
out:
    crl__issuer_cleanup(&is);
    return rc;
}
