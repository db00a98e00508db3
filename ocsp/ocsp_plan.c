/* SPDX-License-Identifier: Apache-2.0 */
/* Request planning, on the loop thread: which answer an OCSP request gets. The request is decoded,
 * each CertID matched to an issuer and looked up in the status index, and the plan says whether a
 * cached response answers it at once or which singles a live signature must cover (ocsp_http.c
 * executes the plan; ocsp_responder.c signs it). Index lookups only: nothing here blocks. */
#include "ocsp_int.h"

#include <openssl/err.h>
#include <stdlib.h>
#include <string.h>

static int worse(int a, int b)
{
    /* revoked > unknown > good, for the per-request outcome counters */
    static const int rank[3] = {0, 2, 1};
    return rank[b] > rank[a] ? b : a;
}

static int match_issuer(const struct ocsp_responder *resp, const struct ocsp__reqid *id)
{
    static const size_t hash_lens[OCSP__N_MATCH_ALGS] = {20, 32, 48, 64};
    size_t hash_len = 0;
    if (id->alg < 0 || id->alg >= OCSP__N_MATCH_ALGS)
        return -1;
    hash_len = hash_lens[id->alg];
    if (id->name_hash_len != hash_len || id->key_hash_len != hash_len)
        return -1;
    for (int i = 0; i < resp->n_issuers; i++) {
        const struct ocsp__issuer *is = &resp->issuers[i];
        if (memcmp(is->key_hash[id->alg], id->key_hash, hash_len) == 0 &&
            memcmp(is->name_hash[id->alg], id->name_hash, hash_len) == 0)
            return i;
    }
    return -1;
}

/* The server's own CertID for (issuer, serial) with a cached algorithm (SHA-1 or SHA-256):
 * the one every cached response carries, whoever asked first. NULL when out of memory. */
OCSP_CERTID *ocsp__canonical_certid(const struct ocsp_responder *resp, int issuer, int alg,
                                    const unsigned char *serial, size_t serial_len)
{
    const struct ocsp__issuer *is = &resp->issuers[issuer];
    ASN1_INTEGER *ai = ocsp__serial_to_asn1(serial, serial_len);
    OCSP_CERTID *cid = NULL;
    if (ai == NULL)
        return NULL;
    cid = OCSP_cert_id_new(alg == OCSP__SHA1 ? EVP_sha1() : EVP_sha256(),
                           X509_get_subject_name(is->cert), X509_get0_pubkey_bitstr(is->cert), ai);
    ASN1_INTEGER_free(ai);
    return cid;
}

static void plan_error(struct ocsp__plan *plan, int status)
{
    plan->kind = OCSP__PLAN_ERROR;
    plan->response_status = status;
}

static int nonce_slot_take(struct ocsp_responder *resp)
{
    int n = atomic_fetch_add(&resp->nonce_inflight, 1);
    if (n >= resp->cfg.nonce_queue_max) {
        atomic_fetch_sub(&resp->nonce_inflight, 1);
        return 0;
    }
    return 1;
}

int ocsp__plan_request(struct ocsp_responder *resp, const unsigned char *der, size_t len,
                       struct ocsp__plan *plan, int *nonce_slot)
{
    struct ocsp__parsed parsed;
    int64_t now = (int64_t)time(NULL);
    int use_nonce = 0;
    int uncached = 0; /* a CertID hash without pre-signed responses (SHA-384, SHA-512) */
    int fast;
    int rc;

    memset(plan, 0, sizeof(*plan));
    *nonce_slot = 0;
    rc = ocsp__request_parse_fast(der, len, resp->cfg.max_certids, &parsed);
    if (rc != UTIL_OK)
        goto out;
    if (parsed.status != OCSP_RESPONSE_STATUS_SUCCESSFUL) {
        plan_error(plan, parsed.status);
        goto out;
    }
    plan->signer = -1;
    for (int i = 0; i < parsed.n; i++) {
        int is = match_issuer(resp, &parsed.ids[i]);
        uncached |= parsed.ids[i].alg >= OCSP__N_ALGS;
        /* Unsupported hash, unknown issuer, or issuers answered by different signers. */
        if (is < 0 || (plan->signer >= 0 && resp->issuers[is].signer != plan->signer)) {
            plan_error(plan, OCSP_RESPONSE_STATUS_UNAUTHORIZED);
            goto out;
        }
        plan->signer = resp->issuers[is].signer;
        if ((parsed.nonce != NULL || parsed.nonce_der != NULL) && !resp->issuers[is].ignore_nonce)
            use_nonce = 1;
        if (i == 0) {
            plan->issuer = is;
            plan->alg = parsed.ids[0].alg;
        }
    }
    if (use_nonce)
        OCSP__STAT(resp, nonce_requests);

    fast = parsed.n == 1 && !use_nonce && !uncached;
    if (!fast) {
        if (nonce_slot_take(resp)) {
            *nonce_slot = 1;
        } else if (parsed.n == 1 && !uncached && resp->cfg.nonce_overflow_cached) {
            OCSP__STAT(resp, nonce_rejected);
            fast = 1;
            use_nonce = 0;
        } else {
            OCSP__STAT(resp, nonce_rejected);
            plan_error(plan, OCSP_RESPONSE_STATUS_TRYLATER);
            goto out;
        }
    }

    plan->singles = calloc((size_t)parsed.n, sizeof(*plan->singles));
    if (plan->singles == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    /* A nonce request read in place: the answer repeats its CertID and nonce bytes, which must
     * outlive the HTTP request (the signing thread reads them): the plan keeps a copy. */
    if (use_nonce && parsed.req == NULL) {
        plan->raw = malloc(len);
        if (plan->raw == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        memcpy(plan->raw, der, len);
        plan->nonce_der = plan->raw + (parsed.nonce_der - der);
        plan->nonce_der_len = parsed.nonce_der_len;
    }
    plan->n = parsed.n;
    plan->worst_status = V_OCSP_CERTSTATUS_GOOD;
    plan->recent_gen = ocsp__recent_gen(resp->index);
    for (int i = 0; i < parsed.n; i++) {
        const struct ocsp__reqid *id = &parsed.ids[i];
        int is = match_issuer(resp, id);
        struct ocsp__status st;
        struct ocsp__cached *cached = NULL;
        int found, authoritative;

        /* The status is the same whatever the hash; only cached algorithms have a response. */
        found = ocsp__index_lookup(resp->index, is, id->serial, id->serial_len,
                                   id->alg < OCSP__N_ALGS ? id->alg : OCSP__SHA1, &st, &cached);
        authoritative = ocsp__decide_status(resp, found, &st, now, &plan->singles[i]);
        plan->worst_status = worse(plan->worst_status, plan->singles[i].cert_status);
        if (fast) {
            memcpy(plan->serial, id->serial, id->serial_len);
            plan->serial_len = id->serial_len;
            if (authoritative) {
                plan->cache_index = 1;
                plan->feed_id = st.feed_id;
            } else {
                ocsp__cached_unref(cached);
                cached = ocsp__recent_get(resp->index, is, id->alg, id->serial, id->serial_len);
                plan->cache_recent = 1;
            }
            /* A cached response past its nextUpdate is never served (the pre-signer is behind). */
            if (cached != NULL && cached->next_update > now) {
                plan->kind = OCSP__PLAN_CACHED;
                plan->cached = cached;
                goto out;
            }
            ocsp__cached_unref(cached);
            if (!authoritative) {
                /* Signing an answer for a serial we do not know is live work: bounded. */
                if (!nonce_slot_take(resp)) {
                    OCSP__STAT(resp, nonce_rejected);
                    plan_error(plan, OCSP_RESPONSE_STATUS_TRYLATER);
                    goto out;
                }
                *nonce_slot = 1;
            }
        } else {
            ocsp__cached_unref(cached);
        }
        /* A response that will be cached for every client carries the server's own CertID
         * (parameters NULL, as OCSP_cert_id_new and the pre-signer make them), never the
         * client's encoding of it: what one client sent must not reach the others. A response
         * for this client alone (nonce, several CertIDs, SHA-384/512) repeats its CertID. */
        plan->cids_borrowed = use_nonce; /* the request goes with the plan (below) */
        if (plan->raw != NULL) {
            plan->singles[i].cid_der = plan->raw + (id->cid_der - der);
            plan->singles[i].cid_der_len = id->cid_der_len;
            continue;
        }
        plan->singles[i].cid =
            fast        ? ocsp__canonical_certid(resp, is, id->alg, id->serial, id->serial_len)
            : use_nonce ? id->cid
                        : OCSP_CERTID_dup(id->cid);
        if (plan->singles[i].cid == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
    }
    plan->kind = OCSP__PLAN_SIGN;
    plan->use_nonce = use_nonce;
    if (use_nonce) {
        plan->req = parsed.req; /* the nonce extension is copied from it when signing */
        parsed.req = NULL;
    }
out:
    ocsp__parsed_cleanup(&parsed);
    if (rc != UTIL_OK && *nonce_slot) {
        atomic_fetch_sub(&resp->nonce_inflight, 1);
        *nonce_slot = 0;
    }
    return rc;
}

void ocsp__plan_cleanup(struct ocsp__plan *plan)
{
    for (int i = 0; i < plan->n && !plan->cids_borrowed; i++)
        ocsp__single_cleanup(&plan->singles[i]);
    free(plan->singles);
    ocsp__cached_unref(plan->cached);
    OCSP_REQUEST_free(plan->req);
    free(plan->raw);
    memset(plan, 0, sizeof(*plan));
}
