/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP side of the crl module: GET /crl/<issuer>.crl and /crl/<issuer>-delta.crl served by
 * reference from the published blob with ETag / Last-Modified / Expires / Cache-Control and 304
 * answers, and the certificate repository GET /certs/<issuer>/<serial-hex>.crt, whose store reads
 * run on a small pool of store threads (one read-only connection each) and come back to the loop
 * through a per-loop port. Nothing here blocks a loop thread. */
#include "crl_int.h"

#include <http/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- /crl/ ---------------------------------------------------------------------------------- */

/* Finds the issuer named by name[0..len) exactly. */
static struct crl__pub_issuer *find_issuer(struct crl_publisher *pub, const char *name, size_t len)
{
    for (int i = 0; i < pub->n; i++) {
        const char *iname = pub->issuers[i].is.name;
        if (strlen(iname) == len && memcmp(iname, name, len) == 0)
            return &pub->issuers[i];
    }
    return NULL;
}

static void handle_crl(void *ctx, struct http_request *req)
{
    struct crl_publisher *pub = ctx;
    struct crl__pub_issuer *pi = NULL;
    struct crl__served *s = NULL;
    size_t len = 0, name_len;
    const char *target = http_request_target(req, &len);
    const char *name = NULL, *q = NULL;
    int delta = 0, not_modified = 0;
    int64_t now = util_now_ms() / 1000, max_age;
    char headers[512];

    q = memchr(target, '?', len);
    if (q != NULL)
        len = (size_t)(q - target); /* a query (cache busting) changes nothing */
    name = target + 5;              /* after "/crl/" */
    name_len = len - 5;
    if (name_len > 4 && memcmp(name + name_len - 4, ".crl", 4) == 0) {
        name_len -= 4;
        pi = find_issuer(pub, name, name_len);
        if (pi == NULL && name_len > 6 && memcmp(name + name_len - 6, "-delta", 6) == 0) {
            pi = find_issuer(pub, name, name_len - 6);
            delta = 1;
        }
    }
    if (pi == NULL) {
        atomic_fetch_add(&pub->http_not_found, 1);
        http_request_respond_text(req, 404, "text/plain", "no such CRL\n");
        return;
    }
    pthread_mutex_lock(&pi->mutex);
    s = delta ? pi->delta : pi->full;
    if (s != NULL)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&pi->mutex);
    if (s == NULL) {
        /* A configured issuer whose first CRL is not out yet (or deltas are off). */
        atomic_fetch_add(&pub->http_not_found, 1);
        http_request_respond_text(req, 404, "text/plain", "no CRL published yet\n");
        return;
    }
    not_modified = http_request_not_modified(req, s->etag, s->ims_ok ? s->info.this_update : 0);
    max_age = s->info.next_update - now;
    if (max_age > pub->cfg.max_age_seconds)
        max_age = pub->cfg.max_age_seconds;
    if (max_age < 0)
        max_age = 0;
    (void)snprintf(headers, sizeof(headers),
                   "ETag: %s\r\nLast-Modified: %s\r\nExpires: %s\r\n"
                   "Cache-Control: max-age=%lld, public, no-transform\r\n",
                   s->etag, s->last_modified, s->expires, (long long)max_age); /* fits 512 */
    {
        struct http_response resp = {
            .status = not_modified ? 304 : 200,
            .content_type = "application/pkix-crl",
            .body = not_modified ? NULL : s->der,
            .headers = headers,
        };
        http_request_respond(req, &resp);
    }
    atomic_fetch_add(not_modified ? &pub->http_not_modified : &pub->http_served, 1);
    crl__served_unref(s);
}

/* ---- /certs/ -------------------------------------------------------------------------------- */

struct repo_job {
    struct crl_publisher *pub;
    struct http_request *req;
    int64_t issuer_id;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    unsigned char *der;
    size_t der_len;
};

static int repo_thread_init(void *pool_ctx, void **thread_state)
{
    struct crl_publisher *pub = pool_ctx;
    struct store *store = NULL;
    int rc = store_open_blocking(pub->cfg.store_path, STORE_OPEN_READONLY | STORE_OPEN_STALE_READS,
                                 &store);
    if (rc != UTIL_OK)
        return rc;
    *thread_state = store;
    return UTIL_OK;
}

static void repo_thread_fini(void *pool_ctx, void *thread_state)
{
    store_close(thread_state);
}

static int repo_work(void *thread_state, void *arg)
{
    struct repo_job *job = arg;
    return store_cert_der_blocking(thread_state, job->issuer_id, job->serial, job->serial_len,
                                   &job->der, &job->der_len);
}

/* On the loop that submitted the job; with UTIL_ECLOSED off it (util_pool_port_close): the loop and
 * the request are gone, so only the job is freed. */
static void repo_done(void *arg, int result)
{
    struct repo_job *job = arg;
    struct crl_publisher *pub = job->pub;
    if (result == UTIL_ECLOSED) {
        /* nobody left to answer */
    } else if (result == UTIL_OK) {
        struct http_response resp = {
            .status = 200,
            .content_type = "application/pkix-cert",
            .body_bytes = job->der,
            .body_len = job->der_len,
            .headers = "Cache-Control: max-age=86400, public\r\n",
        };
        http_request_respond(job->req, &resp);
        atomic_fetch_add(&pub->repo_served, 1);
    } else if (result == UTIL_ENOTFOUND) {
        http_request_respond_text(job->req, 404, "text/plain", "no such certificate\n");
        atomic_fetch_add(&pub->repo_not_found, 1);
    } else {
        http_request_respond_text(job->req, 503, "text/plain", "store unavailable\n");
        atomic_fetch_add(&pub->repo_errors, 1);
    }
    free(job->der);
    free(job);
}

static void handle_cert(void *ctx, struct http_request *req)
{
    struct crl_publisher *pub = ctx;
    struct crl__pub_issuer *pi = NULL;
    struct repo_job *job = NULL;
    struct util_pool_port *port = NULL;
    size_t len = 0;
    const char *target = http_request_target(req, &len);
    const char *path = target + 7; /* after "/certs/" */
    size_t path_len = len - 7;
    const char *slash = memchr(path, '/', path_len);
    const char *serial = NULL;
    size_t serial_len = 0;
    int idx = http_request_loop_index(req);
    int rc;

    if (slash != NULL) {
        pi = find_issuer(pub, path, (size_t)(slash - path));
        serial = slash + 1;
        serial_len = path_len - (size_t)(serial - path);
    }
    if (pi == NULL || serial_len <= 4 || memcmp(serial + serial_len - 4, ".crt", 4) != 0) {
        atomic_fetch_add(&pub->repo_not_found, 1);
        http_request_respond_text(req, 404, "text/plain", "no such certificate\n");
        return;
    }
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        http_request_respond_text(req, 503, "text/plain", "out of memory\n");
        return;
    }
    job->pub = pub;
    job->req = req;
    job->issuer_id = pi->is.store_id;
    if (store_serial_from_hex(serial, serial_len - 4, job->serial, &job->serial_len) != UTIL_OK) {
        free(job);
        atomic_fetch_add(&pub->repo_not_found, 1);
        http_request_respond_text(req, 404, "text/plain", "no such certificate\n");
        return;
    }
    if (idx >= 0 && idx < CRL__MAX_LOOPS) {
        port = pub->ports[idx];
        /* Normally made by loop_init; if another module's per-loop hook replaced ours, make it
         * here, on this loop's own thread (the only thread that touches this slot). */
        if (port == NULL &&
            util_pool_port_new(pub->repo_pool, http_request_loop(req), &port) == UTIL_OK)
            pub->ports[idx] = port;
    }
    rc = port != NULL ? util_pool_submit(pub->repo_pool, port, repo_work, repo_done, job)
                      : UTIL_EBUSY;
    if (rc != UTIL_OK) {
        free(job);
        atomic_fetch_add(&pub->repo_rejected, 1);
        http_request_respond_text(req, 503, "text/plain", "busy, try later\n");
    }
}

/* ---- registration --------------------------------------------------------------------------- */

static void loop_init(void *ctx, uv_loop_t *loop, int index)
{
    struct crl_publisher *pub = ctx;
    struct util_pool_port *port = NULL;
    if (index < 0 || index >= CRL__MAX_LOOPS) {
        UTIL_WARN(CRL_MOD, "loop %d: beyond %d loops, the certificate repository answers 503",
                  index, CRL__MAX_LOOPS);
        return;
    }
    if (util_pool_port_new(pub->repo_pool, loop, &port) != UTIL_OK) {
        UTIL_ERROR(CRL_MOD, "loop %d: no certificate repository port (answers 503)", index);
        return;
    }
    pub->ports[index] = port;
}

static void loop_fini(void *ctx, uv_loop_t *loop, int index)
{
    struct crl_publisher *pub = ctx;
    if (index < 0 || index >= CRL__MAX_LOOPS || pub->ports[index] == NULL)
        return;
    util_pool_port_close(pub->ports[index]);
    pub->ports[index] = NULL;
}

int crl__http_register(struct crl_publisher *pub, struct http_server *srv)
{
    struct util_pool_config pc = {
        .name = "crlrepo",
        .threads = pub->cfg.repo_threads,
        .queue_max = pub->cfg.repo_queue_max,
        .thread_init = repo_thread_init,
        .thread_fini = repo_thread_fini,
        .ctx = pub,
    };
    int rc;

    if (pub->repo_pool == NULL) {
        rc = util_pool_new(&pc, &pub->repo_pool);
        if (rc != UTIL_OK) {
            UTIL_ERROR(CRL_MOD, "cannot start the certificate repository's store threads: %s",
                       util_strerror(rc));
            return rc;
        }
    }
    rc = http_server_route(srv, HTTP_PUBLIC, "GET", "/crl/", handle_crl, pub);
    if (rc == UTIL_OK)
        rc = http_server_route(srv, HTTP_PUBLIC, "GET", "/certs/", handle_cert, pub);
    if (rc == UTIL_OK)
        rc = http_server_on_loop(srv, loop_init, loop_fini, pub);
    return rc;
}

int crl_publisher_register(struct crl_publisher *pub, struct http_server *srv)
{
    if (pub == NULL || srv == NULL)
        return UTIL_EINVAL;
    return crl__http_register(pub, srv);
}
