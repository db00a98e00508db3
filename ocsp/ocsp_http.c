/* SPDX-License-Identifier: Apache-2.0 */
/* The responder's HTTP face: GET and POST handlers on the loop threads, RFC 9919 §6 caching headers
 * and 304s, and the asynchronous path for everything that needs a signature (cache misses, nonces,
 * several CertIDs, unknown serials) through the hsm pool and back to the request's own loop.
 *
 * Cache misses for the same (issuer, serial, hash, version) are coalesced per loop: one signature
 * answers every request of that loop waiting for it (loops share nothing but the index, so across
 * loops at most one signature per loop is made; the first to finish fills the shared cache).
 *
 * HTTP status choices: protocol outcomes (malformedRequest, unauthorized, tryLater) are 200 with an
 * unsigned OCSPResponse, as RFC 6960 §2.3 wants. A POST whose Content-Type is present and is not
 * application/ocsp-request gets 415: it is not an OCSP request at all (a missing Content-Type is
 * tolerated, some embedded clients omit it). */
#include "ocsp_int.h"

#include <hsm/hsm.h>
#include <http/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CT_RESPONSE "application/ocsp-response"
#define CT_REQUEST "application/ocsp-request"
#define MAX_WAITERS 64
/* Longest encoded GET path we try to decode: the base64 of OCSP_GET_DER_MAX, every character
 * percent-escaped, plus slack for slashes. Longer: malformedRequest without decoding. */
#define GET_PATH_MAX (((OCSP_GET_DER_MAX + 2) / 3) * 4 * 3 + 64)

struct sign_job;

struct ocsp__loop {
    struct ocsp_responder *resp;
    struct util_pool_port *port;
    struct sign_job *misses; /* coalescing list: cache misses being signed for this loop */
};

struct sign_job {
    struct sign_job *next; /* in the loop's coalescing list */
    struct ocsp_responder *resp;
    struct ocsp__loop *loop;
    struct ocsp__plan plan;
    int nonce_slot;
    struct http_request *waiters[MAX_WAITERS];
    int n_waiters;
    unsigned char *der;
    size_t len;
    int64_t this_update, next_update;
};

/* ---- answering ------------------------------------------------------------------------------ */

static void count_status(struct ocsp_responder *resp, int cert_status)
{
    if (cert_status == V_OCSP_CERTSTATUS_REVOKED)
        OCSP__STAT(resp, revoked);
    else if (cert_status == V_OCSP_CERTSTATUS_UNKNOWN)
        OCSP__STAT(resp, unknown);
    else
        OCSP__STAT(resp, good);
}

static void respond_error(struct ocsp_responder *resp, struct http_request *req, int status)
{
    struct http_response r;
    size_t len;

    switch (status) {
    case OCSP_RESPONSE_STATUS_MALFORMEDREQUEST: OCSP__STAT(resp, malformed); break;
    case OCSP_RESPONSE_STATUS_UNAUTHORIZED: OCSP__STAT(resp, unauthorized); break;
    case OCSP_RESPONSE_STATUS_TRYLATER: OCSP__STAT(resp, try_later); break;
    default: OCSP__STAT(resp, internal_error); break;
    }
    memset(&r, 0, sizeof(r));
    r.status = 200;
    r.content_type = CT_RESPONSE;
    r.body_bytes = ocsp__error_der(status, &len);
    r.body_len = len;
    r.headers = "Cache-Control: max-age=0, no-cache\r\n";
    http_request_respond(req, &r);
}

/* The header lines of a cacheable response: its own (Last-Modified, Expires, ETag), then
 * Cache-Control. Copies and digits rather than snprintf: every pre-signed GET comes here, and
 * the format call was 2% of its CPU. out has room for 192 + 80 octets; returns the length. */
static size_t cache_headers(char *out, const struct ocsp__cached *c, int64_t max_age)
{
    static const char cc[] = "Cache-Control: max-age=";
    static const char tail[] = ", public, no-transform, must-revalidate\r\n";
    char digits[24];
    size_t n = 0, k = 0;

    memcpy(out, c->headers, c->headers_len);
    n = c->headers_len;
    memcpy(out + n, cc, sizeof(cc) - 1);
    n += sizeof(cc) - 1;
    do {
        digits[k++] = (char)('0' + max_age % 10);
        max_age /= 10;
    } while (max_age > 0 && k < sizeof(digits));
    while (k > 0)
        out[n++] = digits[--k];
    memcpy(out + n, tail, sizeof(tail) - 1);
    return n + sizeof(tail) - 1;
}

/* Serves a signed response. no_store: a nonce response, unique to its request. */
static void respond_signed(struct ocsp_responder *resp, struct http_request *req,
                           const struct ocsp__plan *plan, const struct ocsp__cached *c,
                           int no_store)
{
    struct http_response r;
    char headers[512];
    size_t ims_len = 0;
    int64_t last_modified = c->this_update;

    memset(&r, 0, sizeof(r));
    r.status = 200;
    r.content_type = CT_RESPONSE;
    r.body = c->der;
    r.body_len = c->der->len;
    if (no_store) {
        r.headers = "Cache-Control: max-age=0, no-cache, no-store\r\n";
    } else {
        int64_t max_age = c->next_update - (int64_t)time(NULL);
        if (max_age > resp->cfg.max_age_seconds)
            max_age = resp->cfg.max_age_seconds;
        if (c->cert_status == V_OCSP_CERTSTATUS_UNKNOWN &&
            max_age > resp->cfg.unknown_max_age_seconds)
            max_age = resp->cfg.unknown_max_age_seconds;
        if (max_age < 0)
            max_age = 0;
        r.headers = headers;
        r.headers_len = cache_headers(headers, c, max_age);
        /* Revalidation never resurrects another status: a Last-Modified second that a response
         * of the state before a change may share earns no 304 by date, only by ETag. Asked only
         * when the request has a date to compare (the hot path takes no second lock). */
        if (http_request_header(req, "If-Modified-Since", &ims_len) != NULL &&
            !(plan->cache_index ? ocsp__index_ims_ok(resp->index, plan->issuer, plan->serial,
                                                     plan->serial_len, c->this_update)
                                : ocsp__ims_ok(resp, c->this_update)))
            last_modified = 0;
        if (http_request_not_modified(req, c->etag, last_modified)) {
            OCSP__STAT(resp, not_modified);
            r.status = 304;
            r.content_type = NULL;
            r.body = NULL;
            r.body_len = 0;
            http_request_respond(req, &r);
            return;
        }
    }
    count_status(resp, c->cert_status);
    http_request_respond(req, &r);
}

/* ---- signing off the loop ------------------------------------------------------------------- */

static void nonce_slot_release(struct ocsp_responder *resp, int *slot)
{
    if (*slot) {
        atomic_fetch_sub(&resp->nonce_inflight, 1);
        *slot = 0;
    }
}

static void jobs_hold(struct ocsp_responder *resp)
{
    pthread_mutex_lock(&resp->jobs_mutex);
    resp->n_jobs++;
    pthread_mutex_unlock(&resp->jobs_mutex);
}

/* The job's last touch of the responder: ocsp__http_jobs_wait may free it right after. */
static void jobs_release(struct ocsp_responder *resp)
{
    pthread_mutex_lock(&resp->jobs_mutex);
    if (--resp->n_jobs == 0)
        pthread_cond_broadcast(&resp->jobs_cond);
    pthread_mutex_unlock(&resp->jobs_mutex);
}

static void job_free(struct sign_job *job)
{
    ocsp__plan_cleanup(&job->plan);
    OPENSSL_free(job->der);
    free(job);
}

/* On a signing thread. */
static int job_work(void *thread_state, void *opaque)
{
    struct sign_job *job = opaque;
    struct ocsp_responder *resp = job->resp;
    int rc;
    (void)thread_state; /* the hsm finds its session for this thread itself */
    rc = ocsp__plan_sign_blocking(resp, &job->plan, &job->der, &job->len, &job->this_update,
                                  &job->next_update);
    return rc;
}

/* Back on the loop that submitted the job; with UTIL_ECLOSED off it (util_pool_port_close or a
 * signing thread): the loop and the waiting requests are gone, loop_fini detached the job from the
 * loop's misses, and only the job is freed. */
static void job_done(void *opaque, int result)
{
    struct sign_job *job = opaque;
    struct ocsp_responder *resp = job->resp;
    struct ocsp__cached *c = NULL;

    /* loop_fini sets job->loop to NULL before it closes the port: a done off the loop sees that. */
    if (job->plan.cache_index && job->loop != NULL) {
        struct sign_job **pp = &job->loop->misses;
        while (*pp != NULL && *pp != job)
            pp = &(*pp)->next;
        if (*pp == job)
            *pp = job->next;
    }
    nonce_slot_release(resp, &job->nonce_slot);
    if (result == UTIL_ECLOSED) {
        job_free(job);
        jobs_release(resp);
        return;
    }
    if (result == UTIL_OK) {
        int64_t validity = job->next_update - job->this_update;
        /* A nonce's answer is served with no-store only (respond_signed) and never cached
         * (ocsp__plan_request caches only answers without one): no validators to compute. */
        c = (job->plan.use_nonce ? ocsp__cached_new_no_store : ocsp__cached_new)(
            job->der, job->len, job->this_update, job->next_update,
            job->this_update + validity * resp->cfg.refresh_percent / 100, job->plan.worst_status);
    } else if (result != UTIL_EBUSY) {
        UTIL_WARN(OCSP_MOD, "live signature failed: %s", util_strerror(result));
    }
    if (c != NULL) {
        if (job->plan.cache_index) {
            OCSP__STAT(resp, signed_miss);
            /* 0 = the certificate changed meanwhile: this answer was right when asked, and is
             * served to the waiters, but not kept; its Last-Modified may be the second of the
             * new status's response, which If-Modified-Since must then not confirm. */
            if (!ocsp__index_install(resp->index, job->plan.issuer, job->plan.serial,
                                     job->plan.serial_len, job->plan.alg, job->plan.feed_id, c))
                ocsp__index_note_changed(resp->index, job->plan.issuer, job->plan.serial,
                                         job->plan.serial_len, job->this_update);
        } else {
            OCSP__STAT(resp, signed_live);
            if (job->plan.cache_recent)
                ocsp__recent_put(resp->index, job->plan.issuer, job->plan.alg, job->plan.serial,
                                 job->plan.serial_len, c, job->plan.recent_gen);
        }
        for (int i = 0; i < job->n_waiters; i++)
            respond_signed(resp, job->waiters[i], &job->plan, c, job->plan.use_nonce);
        ocsp__cached_unref(c);
    } else {
        for (int i = 0; i < job->n_waiters; i++)
            respond_error(resp, job->waiters[i], OCSP_RESPONSE_STATUS_TRYLATER);
    }
    job_free(job);
    jobs_release(resp);
}

static int same_miss(const struct ocsp__plan *a, const struct ocsp__plan *b)
{
    return a->issuer == b->issuer && a->alg == b->alg && a->feed_id == b->feed_id &&
           a->serial_len == b->serial_len && memcmp(a->serial, b->serial, a->serial_len) == 0;
}

/* Takes over plan (left zeroed) and the nonce slot. */
static void execute_sign(struct ocsp_responder *resp, struct http_request *req,
                         struct ocsp__plan *plan, int nonce_slot)
{
    int index = http_request_loop_index(req);
    struct ocsp__loop *loop = NULL;
    struct sign_job *job = NULL;
    int rc;

    if (index >= 0 && index < OCSP__MAX_LOOPS)
        loop = resp->loops[index];
    if (loop == NULL || resp->hsm == NULL) {
        rc = UTIL_ECLOSED;
        goto fail;
    }
    if (plan->cache_index) {
        for (job = loop->misses; job != NULL; job = job->next) {
            if (same_miss(&job->plan, plan) && job->n_waiters < MAX_WAITERS) {
                job->waiters[job->n_waiters++] = req;
                ocsp__plan_cleanup(plan);
                return;
            }
        }
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        rc = UTIL_ENOMEM;
        goto fail;
    }
    job->resp = resp;
    job->loop = loop;
    job->plan = *plan;
    memset(plan, 0, sizeof(*plan));
    job->nonce_slot = nonce_slot;
    job->waiters[0] = req;
    job->n_waiters = 1;
    jobs_hold(resp);
    rc = hsm_submit(resp->hsm, loop->port, job_work, job_done, job);
    if (rc != UTIL_OK) {
        jobs_release(resp);
        nonce_slot = job->nonce_slot;
        job->nonce_slot = 0;
        job_free(job);
        goto fail;
    }
    if (job->plan.cache_index) {
        job->next = loop->misses;
        loop->misses = job;
    }
    return;
fail:
    /* HSM queue full, pool closing or out of memory: the client may retry. */
    nonce_slot_release(resp, &nonce_slot);
    ocsp__plan_cleanup(plan);
    respond_error(resp, req, OCSP_RESPONSE_STATUS_TRYLATER);
}

/* ---- handlers ------------------------------------------------------------------------------- */

static int content_type_ok(const char *ct, size_t len)
{
    size_t n = strlen(CT_REQUEST);
    while (len > 0 && (*ct == ' ' || *ct == '\t')) {
        ct++;
        len--;
    }
    if (len < n || strncasecmp(ct, CT_REQUEST, n) != 0)
        return 0;
    return len == n || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t';
}

static void answer_der(struct ocsp_responder *resp, struct http_request *req,
                       const unsigned char *der, size_t len)
{
    struct ocsp__plan plan;
    int nonce_slot = 0;
    int rc = ocsp__plan_request(resp, der, len, &plan, &nonce_slot);

    if (rc != UTIL_OK) {
        ocsp__plan_cleanup(&plan);
        respond_error(resp, req, OCSP_RESPONSE_STATUS_TRYLATER); /* out of memory: shed */
        return;
    }
    switch (plan.kind) {
    case OCSP__PLAN_CACHED:
        OCSP__STAT(resp, served_cached);
        respond_signed(resp, req, &plan, plan.cached, 0);
        ocsp__plan_cleanup(&plan);
        break;
    case OCSP__PLAN_SIGN: execute_sign(resp, req, &plan, nonce_slot); break;
    default:
        respond_error(resp, req, plan.response_status);
        ocsp__plan_cleanup(&plan);
        break;
    }
}

/* The part of the target after the longest configured prefix. */
static const char *strip_prefix(const struct ocsp_responder *resp, const char *target, size_t *len)
{
    size_t best = 0;
    for (int i = 0; i < resp->cfg.n_prefixes; i++) {
        size_t n = strlen(resp->prefixes[i]);
        if (n <= *len && n > best && memcmp(target, resp->prefixes[i], n) == 0)
            best = n;
    }
    *len -= best;
    return target + best;
}

static void handle(void *ctx, struct http_request *req)
{
    struct ocsp_responder *resp = ctx;
    const char *method = http_request_method(req);

    if (strcmp(method, "POST") == 0) {
        size_t ct_len = 0, len = 0;
        const char *ct = http_request_header(req, "Content-Type", &ct_len);
        const unsigned char *body = http_request_body(req, &len);
        OCSP__STAT(resp, requests_post);
        if (ct != NULL && !content_type_ok(ct, ct_len)) {
            OCSP__STAT(resp, bad_content_type);
            http_request_respond_text(req, 415, "text/plain",
                                      "expected Content-Type: application/ocsp-request\n");
            return;
        }
        if (body == NULL || len == 0 || len > OCSP_POST_DER_MAX) {
            respond_error(resp, req, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            return;
        }
        answer_der(resp, req, body, len);
    } else {
        unsigned char der[OCSP_GET_DER_MAX];
        size_t len = 0;
        const char *target = http_request_target(req, &len);
        const char *path;
        int n;
        OCSP__STAT(resp, requests_get);
        path = strip_prefix(resp, target, &len);
        n = len <= GET_PATH_MAX ? ocsp_get_path_decode(path, len, der, sizeof(der)) : UTIL_EINVAL;
        if (n <= 0) {
            respond_error(resp, req, OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
            return;
        }
        answer_der(resp, req, der, (size_t)n);
    }
}

static void loop_init(void *ctx, uv_loop_t *uvloop, int index)
{
    struct ocsp_responder *resp = ctx;
    struct ocsp__loop *loop = NULL;
    int rc;

    if (index < 0 || index >= OCSP__MAX_LOOPS) {
        UTIL_ERROR(OCSP_MOD, "loop %d: more than %d loops; it will answer tryLater on misses",
                   index, OCSP__MAX_LOOPS);
        return;
    }
    loop = calloc(1, sizeof(*loop));
    if (loop == NULL) {
        UTIL_ERROR(OCSP_MOD, "loop %d: out of memory; it will answer tryLater on misses", index);
        return;
    }
    loop->resp = resp;
    rc = util_pool_port_new(hsm_pool(resp->hsm), uvloop, &loop->port);
    if (rc != UTIL_OK) {
        UTIL_ERROR(OCSP_MOD, "loop %d: no signing port (%s); misses will get tryLater", index,
                   util_strerror(rc));
        free(loop);
        return;
    }
    resp->loops[index] = loop;
}

static void loop_fini(void *ctx, uv_loop_t *uvloop, int index)
{
    struct ocsp_responder *resp = ctx;
    struct ocsp__loop *loop;
    (void)uvloop; /* the port knows its loop */
    if (index < 0 || index >= OCSP__MAX_LOOPS || resp->loops[index] == NULL)
        return;
    loop = resp->loops[index];
    resp->loops[index] = NULL;
    /* Jobs still signing for this loop get done(UTIL_ECLOSED) off the loop, after this frees it:
     * detach them from its misses first (the port's mutex orders this before their done). */
    for (struct sign_job *job = loop->misses; job != NULL; job = job->next)
        job->loop = NULL;
    loop->misses = NULL;
    util_pool_port_close(loop->port);
    free(loop);
}

int ocsp__http_register(struct ocsp_responder *resp, struct http_server *srv)
{
    int rc;
    if (resp->hsm == NULL)
        return UTIL_EINVAL;
    for (int i = 0; i < resp->cfg.n_prefixes; i++) {
        rc = http_server_route(srv, HTTP_PUBLIC, "GET", resp->prefixes[i], handle, resp);
        if (rc != UTIL_OK)
            return rc;
        rc = http_server_route(srv, HTTP_PUBLIC, "POST", resp->prefixes[i], handle, resp);
        if (rc != UTIL_OK)
            return rc;
    }
    return http_server_on_loop(srv, loop_init, loop_fini, resp);
}

int ocsp_responder_register(struct ocsp_responder *resp, struct http_server *srv)
{
    return ocsp__http_register(resp, srv);
}

void ocsp__http_jobs_wait(struct ocsp_responder *resp)
{
    /* Not a poll: every job gets exactly one done, from its loop, from util_pool_port_close, from
     * the signing thread that finished it after its loop closed, or from hsm_close's pool stop. */
    pthread_mutex_lock(&resp->jobs_mutex);
    while (resp->n_jobs > 0)
        pthread_cond_wait(&resp->jobs_cond, &resp->jobs_mutex);
    pthread_mutex_unlock(&resp->jobs_mutex);
}
