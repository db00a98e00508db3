/* SPDX-License-Identifier: Apache-2.0 */
/* The responder's life cycle and its background work: configuration checks and CertID hashes at
 * start-up, loading the index from the store, applying the change feed, status decisions and
 * signing on HSM threads. The pre-signer thread is in ocsp_presign.c, the request planner (which
 * answer a request gets) in ocsp_plan.c.
 *
 * DESIGN
 * - Threads: loop threads plan requests (index lookups only) and answer cached ones at once; cache
 *   misses and live signatures go to the hsm pool through the loop's port and come back to the
 *   loop (ocsp_http.c). One pre-signer thread keeps every certificate's SHA-1 response (and any
 *   SHA-256 one a client asked for) signed ahead of time; it submits batches with hsm_run_sync, so
 *   it uses at most one HSM session and one queue slot at a time and live traffic keeps the rest.
 *   The change-feed poller (another module's thread) calls ocsp_responder_apply_change.
 * - Revocation path: apply_change updates the index entry and drops its responses under the shard
 *   lock, so from that instant a request finds no response and signs the new status on demand;
 *   then it queues the certificate on the urgent list, which the pre-signer serves before any
 *   sweep. visible_feed_id advances when the urgent list is drained up to a change.
 * - Invariants: a response is installed only if the entry's version (feed_id) is the one it was
 *   signed from; cached responses are immutable and swapped by pointer.
 * - Failure: a failed batch (HSM down, queue full) leaves the urgent items queued and the sweep
 *   retries after a back-off; requests meanwhile get tryLater only if nothing valid is cached.
 *   An entry whose own signature keeps failing (a stored time or reason that cannot be encoded,
 *   written behind the store's checks) is retried with a per-entry exponential back-off, bounded
 *   at BACKOFF_LIMIT_S, counted (presign_errors, the presign_failing gauge) and logged at most
 *   once per BACKOFF_LOG_MS; a sweep that installed nothing sleeps a second, so the pre-signer
 *   never spins on entries it cannot sign. */
#include "ocsp_int.h"

#include <hsm/hsm.h>
#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- start-up ------------------------------------------------------------------------------- */

static int issuer_hashes(struct ocsp__issuer *is)
{
    const EVP_MD *mds[OCSP__N_MATCH_ALGS] = {EVP_sha1(), EVP_sha256(), EVP_sha384(), EVP_sha512()};
    const ASN1_BIT_STRING *key = X509_get0_pubkey_bitstr(is->cert);
    unsigned int len;

    if (key == NULL)
        return UTIL_ECONFIG;
    for (int a = 0; a < OCSP__N_MATCH_ALGS; a++) {
        ERR_clear_error();
        if (!X509_NAME_digest(X509_get_subject_name(is->cert), mds[a], is->name_hash[a], &len) ||
            !EVP_Digest(key->data, (size_t)key->length, is->key_hash[a], &len, mds[a], NULL)) {
            util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "issuer %s: CertID hashes failed", is->name);
            return UTIL_ECRYPTO;
        }
    }
    return UTIL_OK;
}

static int check_signer(const struct ocsp_issuer_config *ic)
{
    X509 *signer = ic->signer_cert != NULL ? ic->signer_cert : ic->cert;

    if (ic->cert == NULL || ic->signer_key == NULL || ic->signer_key->pkey == NULL) {
        UTIL_ERROR(OCSP_MOD, "issuer %s: certificate and signer key are required", ic->name);
        return UTIL_ECONFIG;
    }
    ERR_clear_error();
    if (X509_check_private_key(signer, ic->signer_key->pkey) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "issuer %s: signer key does not match the %s",
                         ic->name, ic->signer_cert != NULL ? "responder certificate" : "CA");
        return UTIL_ECONFIG;
    }
    /* Relying parties check the signer's validity at the time they verify: an expired (or not yet
     * valid) signer makes every response fail, which an operator must hear about before serving. */
    if (X509_cmp_current_time(X509_get0_notAfter(signer)) <= 0 ||
        X509_cmp_current_time(X509_get0_notBefore(signer)) >= 0) {
        UTIL_ERROR(OCSP_MOD,
                   "issuer %s: the %s that signs OCSP responses is not valid now (expired or "
                   "not yet valid): every response would be rejected; install a valid one",
                   ic->name, ic->signer_cert != NULL ? "responder certificate" : "CA certificate");
        return UTIL_ECONFIG;
    }
    if (ic->signer_cert == NULL)
        return UTIL_OK;
    if (X509_check_issued(ic->cert, ic->signer_cert) != X509_V_OK) {
        UTIL_ERROR(OCSP_MOD, "issuer %s: the responder certificate is not issued by the CA",
                   ic->name);
        return UTIL_ECONFIG;
    }
    if ((X509_get_extension_flags(ic->signer_cert) & EXFLAG_XKUSAGE) == 0 ||
        (X509_get_extended_key_usage(ic->signer_cert) & XKU_OCSP_SIGN) == 0) {
        UTIL_ERROR(OCSP_MOD, "issuer %s: the responder certificate lacks id-kp-OCSPSigning",
                   ic->name);
        return UTIL_ECONFIG;
    }
    if (X509_get_ext_by_NID(ic->signer_cert, NID_id_pkix_OCSP_noCheck, -1) < 0)
        UTIL_WARN(OCSP_MOD,
                  "issuer %s: the responder certificate has no id-pkix-ocsp-nocheck; "
                  "clients will try to check its own status",
                  ic->name);
    return UTIL_OK;
}

int ocsp_responder_new(const struct ocsp_config *cfg, const struct ocsp_issuer_config *issuers,
                       int n_issuers, struct hsm *hsm, struct ocsp_responder **out)
{
    struct ocsp_responder *resp = NULL;
    int rc = UTIL_OK;

    if (n_issuers < 1 || n_issuers > OCSP_MAX_ISSUERS || cfg->validity_seconds < 60 ||
        cfg->refresh_percent < 1 || cfg->refresh_percent > 100 || cfg->max_certids < 1 ||
        cfg->nonce_queue_max < 1 || cfg->n_prefixes < 0 || cfg->n_prefixes > OCSP_MAX_PREFIXES ||
        cfg->presign_batch < 1 || cfg->max_age_seconds < 0 || cfg->unknown_max_age_seconds < 0) {
        UTIL_ERROR(OCSP_MOD, "invalid configuration (issuers, validity, limits or prefixes)");
        return UTIL_ECONFIG;
    }
    resp = calloc(1, sizeof(*resp));
    if (resp == NULL)
        return UTIL_ENOMEM;
    resp->cfg = *cfg;
    resp->hsm = hsm;
    pthread_mutex_init(&resp->mutex, NULL);
    pthread_cond_init(&resp->cond, NULL);
    pthread_mutex_init(&resp->jobs_mutex, NULL);
    pthread_cond_init(&resp->jobs_cond, NULL);
    atomic_init(&resp->visible_feed_id, 0);
    atomic_init(&resp->nonce_inflight, 0);
    /* No prefixes given: the one [ocsp] path. */
    resp->cfg.n_prefixes = cfg->n_prefixes > 0 ? cfg->n_prefixes : 1;
    for (int i = 0; i < resp->cfg.n_prefixes; i++) {
        const char *p = cfg->n_prefixes > 0 ? cfg->prefixes[i] : cfg->path;
        if (p == NULL || p[0] != '/' || strlen(p) >= sizeof(resp->prefixes[i])) {
            UTIL_ERROR(OCSP_MOD, "URL prefix %d must start with '/' and be short", i);
            rc = UTIL_ECONFIG;
            goto out;
        }
        memcpy(resp->prefixes[i], p, strlen(p) + 1);
        resp->cfg.prefixes[i] = resp->prefixes[i];
    }
    resp->issuers = calloc((size_t)n_issuers, sizeof(*resp->issuers));
    resp->signers = calloc((size_t)n_issuers, sizeof(*resp->signers));
    if (resp->issuers == NULL || resp->signers == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < n_issuers; i++) {
        const struct ocsp_issuer_config *ic = &issuers[i];
        struct ocsp__issuer *is = &resp->issuers[i];
        X509 *signer_cert = ic->signer_cert != NULL ? ic->signer_cert : ic->cert;
        int s;

        (void)snprintf(is->name, sizeof(is->name), "%s", ic->name ? ic->name : "?"); /* may cut */
        rc = check_signer(ic);
        if (rc != UTIL_OK)
            goto out;
        is->cert = ic->cert;
        is->store_id = ic->store_issuer_id;
        is->ignore_nonce = ic->ignore_nonce;
        for (int j = 0; j < i; j++) {
            if (resp->issuers[j].store_id == is->store_id) {
                UTIL_ERROR(OCSP_MOD, "issuer %s: store issuer id configured twice", is->name);
                rc = UTIL_ECONFIG;
                goto out;
            }
        }
        rc = issuer_hashes(is);
        if (rc != UTIL_OK)
            goto out;
        /* Issuers whose responses come from the same key and certificate share a signer: only
         * they may be asked about together in one request. */
        for (s = 0; s < resp->n_signers; s++)
            if (resp->signers[s].key == ic->signer_key &&
                X509_cmp(resp->signers[s].cert, signer_cert) == 0)
                break;
        if (s == resp->n_signers) {
            resp->signers[s].cert = signer_cert;
            resp->signers[s].key = ic->signer_key;
            resp->signers[s].delegated = ic->signer_cert != NULL;
            resp->n_signers++;
        }
        is->signer = s;
        resp->n_issuers++;
    }
    rc = ocsp__index_new(cfg->cache_max_bytes, &resp->index);
out:
    if (rc != UTIL_OK) {
        ocsp_responder_free(resp);
        return rc;
    }
    *out = resp;
    return UTIL_OK;
}

void ocsp_responder_free(struct ocsp_responder *resp)
{
    if (resp == NULL)
        return;
    ocsp_responder_stop(resp);
    ocsp__http_jobs_wait(resp);
    while (resp->urgent_head != NULL) {
        struct ocsp__urgent *next = resp->urgent_head->next;
        free(resp->urgent_head);
        resp->urgent_head = next;
    }
    /* Loops whose fini never ran (the server never started): their ports never carried a job. */
    for (int i = 0; i < OCSP__MAX_LOOPS; i++)
        free(resp->loops[i]);
    ocsp__index_free(resp->index);
    for (int i = 0; resp->signers != NULL && i < resp->n_signers; i++)
        ocsp__tmpl_free(resp->signers[i].tmpl);
    free(resp->issuers);
    free(resp->signers);
    pthread_mutex_destroy(&resp->mutex);
    pthread_cond_destroy(&resp->cond);
    pthread_mutex_destroy(&resp->jobs_mutex);
    pthread_cond_destroy(&resp->jobs_cond);
    free(resp);
}

static int issuer_by_store_id(const struct ocsp_responder *resp, int64_t id)
{
    for (int i = 0; i < resp->n_issuers; i++)
        if (resp->issuers[i].store_id == id)
            return i;
    return -1;
}

void ocsp__note_change(struct ocsp_responder *resp, int64_t sec)
{
    int64_t seen = atomic_load(&resp->changed_sec);
    while (sec > seen && !atomic_compare_exchange_weak(&resp->changed_sec, &seen, sec))
        ;
}

int ocsp__ims_ok(struct ocsp_responder *resp, int64_t this_update)
{
    return this_update > atomic_load(&resp->changed_sec);
}

static int note_head_change(void *ctx, const struct store_change *change)
{
    ocsp__note_change(ctx, change->at_ms / 1000);
    return 0;
}

int ocsp_responder_load_blocking(struct ocsp_responder *resp, struct store *store,
                                 int64_t *feed_head_out)
{
    int64_t head = 0;
    int rc;
    int64_t started = util_mono_ms();
    struct ocsp__index_counts counts;

    /* The head first: whatever changes during the walk is re-delivered by the poller. */
    rc = store_feed_head_blocking(store, &head);
    if (rc != UTIL_OK)
        return rc;
    /* A previous process may have served another status in the second of the latest change. */
    if (head > 0) {
        rc = store_feed_read_blocking(store, head - 1, 1, note_head_change, resp);
        if (rc < 0)
            return rc;
    }
    rc = ocsp__load_blocking(resp, store, atomic_load(&resp->changed_sec));
    if (rc != UTIL_OK)
        return rc;
    pthread_mutex_lock(&resp->mutex);
    if (head > resp->applied_feed_id)
        resp->applied_feed_id = head;
    if (resp->urgent_head == NULL)
        atomic_store(&resp->visible_feed_id, resp->applied_feed_id);
    pthread_mutex_unlock(&resp->mutex);
    ocsp__index_counts(resp->index, &counts);
    UTIL_INFO(OCSP_MOD, "loaded %llu certificates of %d issuers in %lld ms (feed head %lld)",
              (unsigned long long)counts.entries, resp->n_issuers,
              (long long)(util_mono_ms() - started), (long long)head);
    if (feed_head_out != NULL)
        *feed_head_out = head;
    return UTIL_OK;
}

/* ---- change feed ---------------------------------------------------------------------------- */

/* Under resp->mutex. */
void ocsp__update_visible_locked(struct ocsp_responder *resp)
{
    int64_t v = resp->urgent_head == NULL ? resp->applied_feed_id : resp->urgent_head->feed_id - 1;
    if (v > atomic_load(&resp->visible_feed_id))
        atomic_store(&resp->visible_feed_id, v);
}

int ocsp_responder_apply_change(struct ocsp_responder *resp, const struct store_change *change)
{
    int issuer = issuer_by_store_id(resp, change->cert.issuer_id);
    struct ocsp__urgent *item = NULL;
    struct ocsp__status st;
    int changed = 0;
    int rc = UTIL_OK;

    pthread_mutex_lock(&resp->mutex);
    if (issuer < 0)
        goto done;
    if (resp->urgent_len >= OCSP__URGENT_MAX) {
        rc = UTIL_EBUSY;
        goto out;
    }
    item = calloc(1, sizeof(*item));
    if (item == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    /* The global mark for answers outside the index (unknown serials that become known). */
    ocsp__note_change(resp, (int64_t)time(NULL));
    st.changed_sec = (int64_t)time(NULL);
    st.status = change->cert.status;
    st.reason = change->cert.reason;
    st.revoked_at = change->cert.revoked_at;
    st.invalidity_date = change->cert.invalidity_date;
    st.not_after = change->cert.not_after;
    st.feed_id = change->id;
    rc = ocsp__index_put(resp->index, issuer, change->cert.serial, change->cert.serial_len, &st, 0,
                         &changed);
    if (rc == UTIL_EINVAL) {
        /* A serial no certificate can have: retrying would block the feed for ever. */
        UTIL_WARN(OCSP_MOD, "change %lld: invalid serial (%zu octets) skipped",
                  (long long)change->id, change->cert.serial_len);
        rc = UTIL_OK;
        goto done;
    }
    if (rc != UTIL_OK)
        goto out;
    /* A serial answered "unknown" a moment ago may just have been issued. */
    ocsp__recent_drop(resp->index, issuer, change->cert.serial, change->cert.serial_len);
    /* An issuance has no earlier response to replace (a cached "unknown" was dropped above): the
     * pre-signer's sweep signs it, or the first request does. Queueing it as urgent would let a
     * bulk import of millions fill the urgent queue and hold back revocations behind it. */
    if (changed && change->kind != STORE_CHANGE_ISSUE) {
        item->issuer = issuer;
        memcpy(item->serial, change->cert.serial, change->cert.serial_len);
        item->serial_len = change->cert.serial_len;
        item->feed_id = change->id;
        if (resp->urgent_tail != NULL)
            resp->urgent_tail->next = item;
        else
            resp->urgent_head = item;
        resp->urgent_tail = item;
        resp->urgent_len++;
        item = NULL;
        pthread_cond_signal(&resp->cond);
    }
done:
    if (change->id > resp->applied_feed_id)
        resp->applied_feed_id = change->id;
    ocsp__update_visible_locked(resp);
out:
    pthread_mutex_unlock(&resp->mutex);
    free(item);
    return rc;
}

int64_t ocsp_responder_visible_feed_id(const struct ocsp_responder *resp)
{
    return atomic_load(&((struct ocsp_responder *)resp)->visible_feed_id);
}

/* ---- status decisions and signing ----------------------------------------------------------- */

/* Fills s from an index lookup; returns 1 when the index answers authoritatively, 0 when the unknown
 * policy applies (not in the index, or expired past the retention). */
int ocsp__decide_status(const struct ocsp_responder *resp, int found, const struct ocsp__status *st,
                        int64_t now, struct ocsp__single *s)
{
    int authoritative = found;
    if (found && resp->cfg.archive_cutoff_seconds == 0 && resp->cfg.expired_retention_seconds > 0 &&
        st->not_after + resp->cfg.expired_retention_seconds < now)
        authoritative = 0;
    s->extended_revoke = 0;
    s->reason = STORE_REASON_NONE;
    s->revoked_at = 0;
    s->invalidity_date = 0;
    if (authoritative) {
        if (st->status == STORE_REVOKED) {
            s->cert_status = V_OCSP_CERTSTATUS_REVOKED;
            s->reason = st->reason;
            s->revoked_at = st->revoked_at;
            s->invalidity_date = st->invalidity_date;
        } else {
            s->cert_status = V_OCSP_CERTSTATUS_GOOD;
        }
    } else if (resp->cfg.unknown_policy == OCSP_UNKNOWN_EXTENDED_REVOKE) {
        s->cert_status = V_OCSP_CERTSTATUS_REVOKED;
        s->reason = STORE_REASON_CERTIFICATE_HOLD;
        s->revoked_at = 0;
        s->extended_revoke = 1;
    } else {
        s->cert_status = V_OCSP_CERTSTATUS_UNKNOWN;
    }
    return authoritative;
}

/* The signer of a response in production: hsm_sign_blocking, which hashes, has the token sign
 * the digest and verifies the signature before returning it (hsm/key.c DESIGN). */
struct hsm_signer {
    struct hsm *hsm;
    const struct hsm_key *key;
};

static int sign_in_hsm(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                       size_t *sig_len)
{
    const struct hsm_signer *s = arg;
    unsigned char *made = NULL;
    size_t made_len = 0;
    int rc = hsm_sign_blocking(s->hsm, s->key, tbs, len, &made, &made_len);

    if (rc == UTIL_OK) {
        *sig = OPENSSL_malloc(made_len); /* ocsp__sign_fn hands out OPENSSL_malloc'd memory */
        if (*sig == NULL) {
            rc = UTIL_ENOMEM;
        } else {
            memcpy(*sig, made, made_len);
            *sig_len = made_len;
        }
    }
    free(made);
    return rc == UTIL_OK || rc == UTIL_ENOMEM ? rc : UTIL_EHSM;
}

/* The DigestSign context OpenSSL's builder signs with: the token key's (OCSP_basic_sign_ctx
 * insists that it matches the certificate), whose unchecked signature sign_in_hsm then replaces,
 * so a response built this way costs two token signatures (only the first of each signer, to
 * learn its template, and signers without one); or (unit tests without an hsm) a software key. */
int ocsp__sign_ctx_new(struct ocsp_responder *resp, const struct hsm_key *key, EVP_MD_CTX **out)
{
    EVP_MD_CTX *mctx = NULL;
    if (resp->hsm != NULL)
        return hsm_sign_ctx_new_blocking(resp->hsm, key, out);
    mctx = EVP_MD_CTX_new();
    if (mctx == NULL)
        return UTIL_ENOMEM;
    ERR_clear_error();
    if (EVP_DigestSignInit_ex(mctx, NULL, key->md[0] ? key->md : NULL, NULL, NULL, key->pkey,
                              NULL) != 1) {
        util_log_openssl(UTIL_LOG_ERROR, OCSP_MOD, "software signing context failed");
        EVP_MD_CTX_free(mctx);
        return UTIL_ECRYPTO;
    }
    *out = mctx;
    return UTIL_OK;
}

/* Learns signer sg's response template from der, the response ocsp__response_build made for b: the
 * template must rebuild der byte for byte with der's producedAt and signature, else the signer
 * keeps OpenSSL's path. Called by the one thread that moved tmpl_state from NONE to TRYING. */
static void learn_template(struct ocsp__signer *sg, int signer, const struct ocsp__build *b,
                           const unsigned char *der, size_t len)
{
    struct ocsp__tmpl *t = NULL;
    struct ocsp__replay replay;
    unsigned char *again = NULL;
    size_t again_len = 0;
    int64_t produced_at;
    int rc, state = OCSP__TMPL_FAILED;

    rc = ocsp__tmpl_from_response(der, len, &t, &produced_at, &replay.sig, &replay.len);
    if (rc == UTIL_OK)
        rc = ocsp__tmpl_build(t, b, produced_at, ocsp__sign_replay, &replay, &again, &again_len);
    if (rc == UTIL_ENOMEM) {
        state = OCSP__TMPL_NONE; /* try again with a later response */
    } else if (rc == UTIL_OK && again_len == len && memcmp(again, der, len) == 0) {
        sg->tmpl = t;
        t = NULL;
        state = OCSP__TMPL_READY;
        UTIL_INFO(OCSP_MOD, "signer %d: responses are encoded from its template", signer);
    } else {
        UTIL_WARN(OCSP_MOD,
                  "signer %d: the response template does not rebuild OpenSSL's response (%s); "
                  "OpenSSL builds each response",
                  signer, rc == UTIL_OK ? "other bytes" : util_strerror(rc));
    }
    OPENSSL_free(again);
    ocsp__tmpl_free(t);
    atomic_store_explicit(&sg->tmpl_state, state, memory_order_release);
}

int ocsp__sign_singles(struct ocsp_responder *resp, int signer, const struct ocsp__single *singles,
                       int n, OCSP_REQUEST *nonce_from, const unsigned char *nonce_der,
                       size_t nonce_der_len, unsigned char **der, size_t *len, int64_t *this_update,
                       int64_t *next_update)
{
    struct ocsp__signer *sg = &resp->signers[signer];
    int state = atomic_load_explicit(&sg->tmpl_state, memory_order_acquire);
    struct hsm_signer hs = {resp->hsm, sg->key};
    EVP_MD_CTX *mctx = NULL;
    struct ocsp__build b;
    int64_t now = (int64_t)time(NULL);
    int rc;

    /* A fresh context per signature: OpenSSL 3.0 does not promise a DigestSign context is reusable
     * after a final signature, and providers differ. */
    rc = state == OCSP__TMPL_READY && resp->hsm != NULL ? UTIL_OK
                                                        : ocsp__sign_ctx_new(resp, sg->key, &mctx);
    if (rc != UTIL_OK)
        return rc == UTIL_EBUSY ? rc : UTIL_EHSM;
    memset(&b, 0, sizeof(b));
    b.signer_cert = sg->cert;
    b.include_signer = sg->delegated;
    b.by_name = resp->cfg.responder_id == OCSP_RESPID_BY_NAME;
    b.singles = singles;
    b.n = n;
    b.this_update = now;
    b.next_update = now + resp->cfg.validity_seconds;
    b.archive_cutoff_seconds = resp->cfg.archive_cutoff_seconds;
    b.nonce_from = nonce_from;
    b.nonce_der = nonce_der;
    b.nonce_der_len = nonce_der_len;
    if (resp->hsm != NULL) {
        b.resign = sign_in_hsm;
        b.resign_arg = &hs;
    }
    if (state == OCSP__TMPL_READY) {
        if (resp->hsm != NULL)
            rc = ocsp__tmpl_build(sg->tmpl, &b, now, sign_in_hsm, &hs, der, len);
        else
            rc = ocsp__tmpl_build(sg->tmpl, &b, now, ocsp__sign_mctx, mctx, der, len);
    } else {
        rc = ocsp__response_build(&b, mctx, der, len);
        if (rc == UTIL_ECRYPTO && resp->hsm != NULL)
            rc = hsm_blame_blocking(resp->hsm, sg->key); /* the key's, the token's, or none */
        if (rc == UTIL_OK && state == OCSP__TMPL_NONE &&
            atomic_compare_exchange_strong(&sg->tmpl_state, &state, OCSP__TMPL_TRYING))
            learn_template(sg, signer, &b, *der, *len);
    }
    EVP_MD_CTX_free(mctx);
    *this_update = b.this_update;
    *next_update = b.next_update;
    return rc;
}

int ocsp__plan_sign_blocking(struct ocsp_responder *resp, const struct ocsp__plan *plan,
                             unsigned char **der, size_t *len, int64_t *this_update,
                             int64_t *next_update)
{
    return ocsp__sign_singles(resp, plan->signer, plan->singles, plan->n,
                              plan->use_nonce ? plan->req : NULL,
                              plan->use_nonce ? plan->nonce_der : NULL, plan->nonce_der_len, der,
                              len, this_update, next_update);
}

/* ---- metrics -------------------------------------------------------------------------------- */

unsigned ocsp__stat_stripe(void)
{
    static _Atomic unsigned next;
    static _Thread_local unsigned mine; /* 0: none yet; else the stripe + 1 */

    if (mine == 0)
        mine = 1 + atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) % OCSP__STAT_STRIPES;
    return mine - 1;
}

int ocsp_responder_cert_status(struct ocsp_responder *resp, int64_t store_issuer_id,
                               const unsigned char *serial, size_t serial_len,
                               struct ocsp_cert_status *out)
{
    struct ocsp__status st;
    struct ocsp__cached *cached = NULL;
    int found = 0;
    if (resp == NULL || serial == NULL || serial_len == 0 || serial_len > STORE_SERIAL_MAX)
        return 0;
    for (int i = 0; i < resp->n_issuers && !found; i++) {
        if (resp->issuers[i].store_id != store_issuer_id)
            continue;
        found = ocsp__index_lookup(resp->index, i, serial, serial_len, OCSP__SHA1, &st, &cached);
        ocsp__cached_unref(cached); /* only the status is wanted */
    }
    if (!found)
        return 0;
    memset(out, 0, sizeof(*out));
    out->status = st.status;
    out->reason = st.reason;
    out->revoked_at = st.revoked_at;
    out->invalidity_date = st.invalidity_date;
    out->not_after = st.not_after;
    return 1;
}

void ocsp_stats_get(const struct ocsp_responder *cresp, struct ocsp_stats *out)
{
    struct ocsp_responder *resp = (struct ocsp_responder *)cresp;
    struct ocsp__index_counts counts;
#define GET(f)                                   \
    for (int i = 0; i < OCSP__STAT_STRIPES; i++) \
    out->f += atomic_load_explicit(&resp->st[i].f, memory_order_relaxed)
    memset(out, 0, sizeof(*out));
    GET(requests_get);
    GET(requests_post);
    GET(good);
    GET(revoked);
    GET(unknown);
    GET(malformed);
    GET(unauthorized);
    GET(try_later);
    GET(internal_error);
    GET(not_modified);
    GET(bad_content_type);
    GET(served_cached);
    GET(signed_live);
    GET(signed_miss);
    GET(nonce_requests);
    GET(nonce_rejected);
    GET(presigned);
    GET(presign_errors);
#undef GET
    out->presign_backlog = atomic_load_explicit(&resp->presign_backlog, memory_order_relaxed);
    out->presign_failing = atomic_load_explicit(&resp->presign_failing, memory_order_relaxed);
    ocsp__index_counts(resp->index, &counts);
    out->index_entries = counts.entries;
    out->cache_entries = counts.cached;
    out->cache_bytes = counts.bytes;
    out->cache_evictions = counts.evictions;
    out->visible_feed_id = atomic_load(&resp->visible_feed_id);
}

int ocsp_metrics(const struct ocsp_responder *resp, char *buf, size_t len)
{
    struct ocsp_stats os;
    int n;
    ocsp_stats_get(resp, &os);
    n = snprintf(buf, len,
                 "# TYPE pkiva_ocsp_requests_total counter\n"
                 "pkiva_ocsp_requests_total{method=\"GET\"} %llu\n"
                 "pkiva_ocsp_requests_total{method=\"POST\"} %llu\n"
                 "# TYPE pkiva_ocsp_responses_total counter\n"
                 "pkiva_ocsp_responses_total{status=\"good\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"revoked\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"unknown\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"malformedRequest\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"unauthorized\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"tryLater\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"internalError\"} %llu\n"
                 "pkiva_ocsp_responses_total{status=\"notModified\"} %llu\n"
                 "# TYPE pkiva_ocsp_signed_total counter\n"
                 "pkiva_ocsp_signed_total{path=\"presign\"} %llu\n"
                 "pkiva_ocsp_signed_total{path=\"live\"} %llu\n"
                 "pkiva_ocsp_signed_total{path=\"miss\"} %llu\n"
                 "# TYPE pkiva_ocsp_nonce_rejected_total counter\n"
                 "pkiva_ocsp_nonce_rejected_total %llu\n"
                 "# TYPE pkiva_ocsp_cache_entries gauge\n"
                 "pkiva_ocsp_cache_entries %llu\n"
                 "# TYPE pkiva_ocsp_cache_bytes gauge\n"
                 "pkiva_ocsp_cache_bytes %llu\n"
                 "# TYPE pkiva_ocsp_index_entries gauge\n"
                 "pkiva_ocsp_index_entries %llu\n"
                 "# TYPE pkiva_ocsp_presign_backlog gauge\n"
                 "pkiva_ocsp_presign_backlog %llu\n"
                 "# TYPE pkiva_ocsp_presign_errors_total counter\n"
                 "pkiva_ocsp_presign_errors_total %llu\n"
                 "# TYPE pkiva_ocsp_presign_failing gauge\n"
                 "pkiva_ocsp_presign_failing %llu\n",
                 (unsigned long long)os.requests_get, (unsigned long long)os.requests_post,
                 (unsigned long long)os.good, (unsigned long long)os.revoked,
                 (unsigned long long)os.unknown, (unsigned long long)os.malformed,
                 (unsigned long long)os.unauthorized, (unsigned long long)os.try_later,
                 (unsigned long long)os.internal_error, (unsigned long long)os.not_modified,
                 (unsigned long long)os.presigned, (unsigned long long)os.signed_live,
                 (unsigned long long)os.signed_miss, (unsigned long long)os.nonce_rejected,
                 (unsigned long long)os.cache_entries, (unsigned long long)os.cache_bytes,
                 (unsigned long long)os.index_entries, (unsigned long long)os.presign_backlog,
                 (unsigned long long)os.presign_errors, (unsigned long long)os.presign_failing);
    return n < 0 || (size_t)n >= len ? UTIL_EINVAL : n;
}
