/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API on the admin listener: operators and the registration system record issuances and
 * revocations as JSON over HTTP(S), authenticated with a bearer token compared in constant time
 * or, with [admin] client_ca, a client certificate verified in the TLS handshake.
 * Requests are parsed and checked on the loop (bounded bodies, jansson), the store work runs on a
 * small pool of store threads (one SQLite connection each) and the answer comes back on the loop.
 * A change is acknowledged only after it is durable and in the change feed. */
#include "admin.h"
#include "admin_int.h"

#include <crl/crl.h>
#include <feed/feed.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <store/store.h>
#include <sys/stat.h>
#include <util/util.h>

#define MOD "admin"
#define ADMIN_MAX_LOOPS 64

/* The reason the body decoders return when memory ran out: compared by address, answered 503
 * (the client's request may be fine), every other reason is a 400. */
static const char admin_enomem[] = "out of memory";

/* The HTTP status for a decoder's reason. */
static int why_status(const char *why)
{
    return why == admin_enomem ? 503 : 400;
}

struct admin {
    struct admin_config cfg; /* strings borrowed from the caller (admin.h) */
    struct crl_publisher *crl;
    struct util_pool *pool;
    struct util_pool_port *ports[ADMIN_MAX_LOOPS];
    char token[256];
    size_t token_len;
    _Atomic uint64_t unauthorized; /* refused requests (401), for /metrics */
    /* The WARN line about refused requests is written at most once per second (a client
     * without credentials must not be able to flood the log): the second it was last written,
     * and the refusals not logged since then. */
    _Atomic int64_t unauthorized_logged_s;
    _Atomic uint64_t unauthorized_suppressed;
};

enum admin_op {
    OP_REVOKE,
    OP_UNREVOKE,
    OP_STATUS,
    OP_REGISTER,
    OP_SUPERSEDE,
    OP_SLA,
    OP_CRL_PUBLISH_WAIT
};

/* The waiting form of POST /admin/crl/publish gives up after this long (a 20-million-entry CRL
 * takes well under a minute to build and sign). */
#define ADMIN_PUBLISH_WAIT_MS 120000

/* One request's work, owned by the job from submit until its done callback responds. */
struct admin_job {
    struct admin *admin;
    struct http_request *req;
    enum admin_op op;
    char issuer[64];
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    struct store_revocation rev;
    char request_id[128];
    char actor[96];
    unsigned char *cert_der; /* register: the certificate; supersede: the replacement (optional) */
    size_t cert_len;
    unsigned char new_serial[STORE_SERIAL_MAX]; /* supersede: the replacement's serial */
    size_t new_serial_len;
    int http_status;
    json_t *reply;
};

static int store_thread_init(void *ctx, void **state)
{
    struct admin *admin = ctx;
    return store_open_blocking(admin->cfg.store_path, 0, (struct store **)state);
}

static void store_thread_fini(void *ctx, void *state)
{
    (void)ctx;
    store_close(state);
}

static void respond_json(struct http_request *req, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    if (text == NULL) {
        http_request_respond_text(req, 503, "application/json", "{\"error\":\"out of memory\"}\n");
        return;
    }
    {
        struct http_response resp = {.status = status,
                                     .content_type = "application/json",
                                     .body_bytes = text,
                                     .body_len = strlen(text),
                                     .headers = "Cache-Control: no-store\r\n"};
        http_request_respond(req, &resp);
    }
    free(text);
}

static void respond_error(struct http_request *req, int status, const char *message)
{
    json_t *body = json_pack("{s:s}", "error", message);
    if (body == NULL) {
        http_request_respond_text(req, status, "application/json", "{\"error\":\"error\"}\n");
        return;
    }
    respond_json(req, status, body);
    json_decref(body);
}

static int resolve_issuer(struct store *store, struct admin_job *job, int64_t *id)
{
    struct store_issuer is;
    int rc;
    memset(&is, 0, sizeof(is));
    rc = store_issuer_get_blocking(store, job->issuer, &is);
    if (rc == UTIL_OK)
        *id = is.id;
    store_issuer_cleanup(&is);
    return rc;
}

static void set_reply(struct admin_job *job, int status, json_t *reply)
{
    job->http_status = status;
    job->reply = reply;
}

static void fail_reply(struct admin_job *job, int status, const char *message)
{
    set_reply(job, status, json_pack("{s:s}", "error", message));
}

static json_t *cert_json(const struct store_cert *c)
{
    char hex[2 * STORE_SERIAL_MAX + 1];
    json_t *o;
    util_hex(c->serial, c->serial_len, hex);
    o = json_pack("{s:s,s:s,s:I,s:I,s:I}", "serial", hex, "status",
                  c->status == STORE_REVOKED ? "revoked" : "good", "not_before",
                  (json_int_t)c->not_before, "not_after", (json_int_t)c->not_after, "change",
                  (json_int_t)c->feed_id);
    if (o != NULL && c->status == STORE_REVOKED) {
        (void)json_object_set_new(o, "revoked_at", json_integer(c->revoked_at));
        (void)json_object_set_new(o, "reason", json_string(store_reason_name(c->reason)));
        if (c->invalidity_date)
            (void)json_object_set_new(o, "invalidity_date", json_integer(c->invalidity_date));
    }
    return o;
}

#define ADMIN_SLA_NODES_MAX 64

struct sla_collect {
    json_t *open;
    int64_t deadline_ms, now_ms;
    int64_t *done;
    size_t n, cap;
    /* The cluster's nodes (issue 16): who has not applied a revocation yet. */
    struct store_node nodes[ADMIN_SLA_NODES_MAX];
    int n_nodes;
    int64_t live_since_ms;
};

static int sla_node_collect(void *ctx, const struct store_node *node)
{
    struct sla_collect *c = ctx;

    if (c->n_nodes < ADMIN_SLA_NODES_MAX)
        c->nodes[c->n_nodes++] = *node;
    return 0;
}

/* The nodes as JSON: [{id, name, applied_feed_id, behind_changes, lag_ms, heartbeat_age_ms,
 * live, lagging}], after collecting them into c. NULL with *rc set on failure. */
static json_t *sla_nodes_json(struct store *store, struct sla_collect *c, int64_t max_lag_ms,
                              int *rc)
{
    json_t *list = json_array();
    int64_t head = 0;

    *rc = store_node_list_blocking(store, sla_node_collect, c);
    if (*rc == UTIL_OK)
        *rc = store_feed_head_blocking(store, &head);
    for (int i = 0; *rc == UTIL_OK && list != NULL && i < c->n_nodes; i++) {
        const struct store_node *node = &c->nodes[i];
        int64_t behind = 0, lag_ms = 0;
        int live = node->heartbeat_ms >= c->live_since_ms;
        *rc = store_node_lag_blocking(store, node, head, c->now_ms, &behind, &lag_ms);
        if (*rc == UTIL_OK)
            (void)json_array_append_new(
                list,
                json_pack("{s:I,s:s,s:I,s:I,s:I,s:I,s:b,s:b}", "id", (json_int_t)node->id, "name",
                          node->name, "applied_feed_id", (json_int_t)node->applied_feed_id,
                          "behind_changes", (json_int_t)behind, "lag_ms", (json_int_t)lag_ms,
                          "heartbeat_age_ms", (json_int_t)(c->now_ms - node->heartbeat_ms), "live",
                          live, "lagging", live && lag_ms > max_lag_ms));
    }
    if (*rc != UTIL_OK || list == NULL) {
        json_decref(list);
        if (*rc == UTIL_OK)
            *rc = UTIL_ENOMEM;
        return NULL;
    }
    return list;
}

/* The names of the live nodes that have not applied feed_id (NULL when every one has). */
static json_t *sla_not_applied(const struct sla_collect *c, int64_t feed_id)
{
    json_t *names = NULL;

    for (int i = 0; i < c->n_nodes; i++) {
        const struct store_node *node = &c->nodes[i];
        if (node->heartbeat_ms < c->live_since_ms || node->applied_feed_id >= feed_id)
            continue;
        if (names == NULL)
            names = json_array();
        if (names != NULL)
            (void)json_array_append_new(names, json_string(node->name));
    }
    return names;
}

static int sla_collect_row(void *ctx, const struct store_sla_row *row)
{
    struct sla_collect *c = ctx;
    char hex[2 * STORE_SERIAL_MAX + 1];
    util_hex(row->serial, row->serial_len, hex);
    /* Open until it is both answered by OCSP and in a published CRL; one that cannot be signed
     * as stored is never complete (OCSP answers tryLater for it). */
    if (row->crl_at_ms == 0 || row->ocsp_at_ms == 0 || row->unsignable != NULL) {
        json_t *o = json_pack(
            "{s:I,s:s,s:s?,s:I,s:I,s:I,s:I,s:I,s:s?}", "change", (json_int_t)row->feed_id, "serial",
            hex, "request_id", row->request_id, "received_at_ms", (json_int_t)row->received_at_ms,
            "committed_at_ms", (json_int_t)row->committed_at_ms, "ocsp_at_ms",
            (json_int_t)row->ocsp_at_ms, "crl_at_ms", (json_int_t)row->crl_at_ms, "seconds_left",
            (json_int_t)((row->received_at_ms + c->deadline_ms - c->now_ms) / 1000), "unsignable",
            row->unsignable);
        json_t *missing = o != NULL ? sla_not_applied(c, row->feed_id) : NULL;
        if (missing != NULL)
            (void)json_object_set_new(o, "not_applied_by", missing);
        if (o != NULL)
            (void)json_array_append_new(c->open, o);
    } else if (c->n < c->cap) {
        c->done[c->n++] = row->crl_at_ms - row->received_at_ms;
    }
    return 0;
}

/* The freshness contract as JSON: {"deadline_seconds", "worst_case_seconds": {client: s},
 * "out_of_scope": [client...], "hsm_outage_budget_seconds"}. NULL when memory ran out. */
static json_t *contract_json(const struct feed_contract *contract)
{
    const struct feed_contract c = *contract;
    json_t *worst = json_object(), *scope = json_array();
    for (int i = 0; worst != NULL && scope != NULL && i < FEED_CLIENT_N; i++) {
        if (c.worst_s[i] >= 0)
            (void)json_object_set_new(worst, feed_client_name(i), json_integer(c.worst_s[i]));
        if (c.out_of_scope & (1u << i))
            (void)json_array_append_new(scope, json_string(feed_client_name(i)));
    }
    if (worst == NULL || scope == NULL) {
        json_decref(worst);
        json_decref(scope);
        return NULL;
    }
    return json_pack("{s:I,s:o,s:o,s:I}", "deadline_seconds", (json_int_t)c.deadline_s,
                     "worst_case_seconds", worst, "out_of_scope", scope,
                     "hsm_outage_budget_seconds", (json_int_t)c.outage_budget_s);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The waiting form of a CRL publication: blocks this store thread until the publisher has served
 * the new CRLs (or failed, or the time ran out), then answers 200 with what is served now, or 503
 * naming each issuer that failed. */
static int publish_and_wait(struct admin_job *job)
{
    struct crl_publish_result results[ADMIN_MAX_ISSUERS];
    json_t *list = json_array();
    int n = 0, failed = 0;
    int rc = crl_publish_wait_blocking(job->admin->crl, job->issuer[0] ? job->issuer : NULL,
                                       ADMIN_PUBLISH_WAIT_MS, results, ADMIN_MAX_ISSUERS, &n);
    if (rc == UTIL_ENOTFOUND || rc == UTIL_EINVAL) {
        json_decref(list);
        fail_reply(job, rc == UTIL_ENOTFOUND ? 404 : 503,
                   rc == UTIL_ENOTFOUND ? "no such issuer" : util_strerror(rc));
        return rc;
    }
    for (int i = 0; list != NULL && i < n; i++) {
        const struct crl_publish_result *r = &results[i];
        json_t *o = json_pack("{s:s,s:b,s:I,s:I,s:I,s:I,s:I}", "issuer", r->name, "published",
                              r->rc == UTIL_OK, "crl_number", (json_int_t)r->full_number, "entries",
                              (json_int_t)r->full_entries, "delta_crl_number",
                              (json_int_t)r->delta_number, "delta_entries",
                              (json_int_t)r->delta_entries, "ms", (json_int_t)r->elapsed_ms);
        if (o != NULL && r->rc != UTIL_OK)
            (void)json_object_set_new(o, "error", json_string(util_strerror(r->rc)));
        failed |= r->rc != UTIL_OK;
        if (o != NULL)
            (void)json_array_append_new(list, o);
    }
    if (list == NULL) {
        fail_reply(job, 503, admin_enomem);
        return UTIL_ENOMEM;
    }
    set_reply(job, failed || rc != UTIL_OK ? 503 : 200, json_pack("{s:o}", "crls", list));
    return rc;
}

static int run_op_blocking(void *state, void *arg)
{
    struct store *store = state;
    struct admin_job *job = arg;
    int64_t issuer_id = 0, feed_id = 0;
    int rc;

    if (job->op == OP_CRL_PUBLISH_WAIT)
        return publish_and_wait(job);
    if (job->op == OP_SLA) {
        struct sla_collect c = {.open = json_array(),
                                .deadline_ms = job->admin->cfg.sla_deadline_s * 1000,
                                .now_ms = util_now_ms(),
                                .cap = 10000};
        json_t *nodes = NULL;
        c.done = calloc(c.cap, sizeof(int64_t));
        if (c.open == NULL || c.done == NULL) {
            json_decref(c.open);
            free(c.done);
            fail_reply(job, 503, "out of memory");
            return UTIL_ENOMEM;
        }
        c.live_since_ms = c.now_ms - job->admin->cfg.max_feed_lag_ms;
        nodes = sla_nodes_json(store, &c, job->admin->cfg.max_feed_lag_ms, &rc);
        if (rc == UTIL_OK)
            rc = store_sla_list_blocking(store, 0, 10000, sla_collect_row, &c);
        if (rc != UTIL_OK) {
            json_decref(c.open);
            json_decref(nodes);
            free(c.done);
            fail_reply(job, 503, util_strerror(rc));
            return rc;
        }
        qsort(c.done, c.n, sizeof(int64_t), cmp_i64);
        set_reply(job, 200,
                  json_pack("{s:o,s:o,s:I,s:o*,s:I,s:f,s:f,s:f}", "nodes", nodes, "open", c.open,
                            "deadline_seconds", (json_int_t)job->admin->cfg.sla_deadline_s,
                            "freshness_contract", contract_json(&job->admin->cfg.contract),
                            "completed", (json_int_t)c.n, "p50_seconds",
                            c.n ? (double)c.done[c.n / 2] / 1000.0 : 0.0, "p99_seconds",
                            c.n ? (double)c.done[(c.n * 99) / 100] / 1000.0 : 0.0, "max_seconds",
                            c.n ? (double)c.done[c.n - 1] / 1000.0 : 0.0));
        free(c.done);
        return UTIL_OK;
    }
    rc = resolve_issuer(store, job, &issuer_id);
    if (rc != UTIL_OK) {
        fail_reply(job, rc == UTIL_ENOTFOUND ? 404 : 503,
                   rc == UTIL_ENOTFOUND ? "no such issuer" : util_strerror(rc));
        return rc;
    }
    switch (job->op) {
    case OP_REVOKE:
        job->rev.issuer_id = issuer_id;
        job->rev.serial = job->serial;
        job->rev.serial_len = job->serial_len;
        rc = admin_revoke_blocking(store, &job->rev, &feed_id);
        break;
    case OP_UNREVOKE:
        rc = admin_unrevoke_blocking(store, issuer_id, job->serial, job->serial_len, job->actor,
                                     &feed_id);
        break;
    case OP_REGISTER:
        rc = admin_register_blocking(store, issuer_id, job->cert_der, job->cert_len, job->actor,
                                     job->serial, &job->serial_len, &feed_id);
        break;
    case OP_SUPERSEDE:
        job->rev.issuer_id = issuer_id;
        job->rev.serial = job->serial;
        job->rev.serial_len = job->serial_len;
        rc = admin_supersede_blocking(store, &job->rev, job->cert_der, job->cert_len,
                                      job->new_serial, &job->new_serial_len, &feed_id);
        if (rc == UTIL_OK && job->new_serial_len > 0) {
            char old_hex[2 * STORE_SERIAL_MAX + 1], new_hex[2 * STORE_SERIAL_MAX + 1];
            util_hex(job->serial, job->serial_len, old_hex);
            util_hex(job->new_serial, job->new_serial_len, new_hex);
            set_reply(job, 200,
                      json_pack("{s:s,s:s,s:I,s:b}", "serial", old_hex, "replaced_by", new_hex,
                                "change", (json_int_t)feed_id, "durable", 1));
            return rc;
        }
        break;
    case OP_STATUS: {
        struct store_cert cert;
        rc = store_cert_get_blocking(store, issuer_id, job->serial, job->serial_len, &cert);
        if (rc == UTIL_OK)
            set_reply(job, 200, cert_json(&cert));
        else if (rc == UTIL_ENOTFOUND)
            set_reply(job, 404,
                      json_pack("{s:s,s:s}", "status", "unknown", "error",
                                "never issued by this issuer"));
        else
            fail_reply(job, 503, util_strerror(rc));
        return rc;
    }
    default: rc = UTIL_EINVAL;
    }
    if (rc == UTIL_OK) {
        char hex[2 * STORE_SERIAL_MAX + 1];
        util_hex(job->serial, job->serial_len, hex);
        set_reply(
            job, 200,
            json_pack("{s:s,s:I,s:b}", "serial", hex, "change", (json_int_t)feed_id, "durable", 1));
    } else if (rc == UTIL_ENOTFOUND) {
        fail_reply(job, 404, "no such certificate under this issuer");
    } else if (rc == UTIL_EEXIST) {
        fail_reply(job, 409, "already revoked with another reason");
    } else if (rc == UTIL_EINVAL && store_errmsg(store)[0] != '\0') {
        /* The store refused a field of the request ("revoked_at: ... is in the future"). */
        fail_reply(job, 400, store_errmsg(store));
    } else if (rc == UTIL_EINVAL) {
        fail_reply(job, 409,
                   job->op == OP_UNREVOKE ? "the certificate is not on hold"
                                          : "the certificate does not fit this issuer");
    } else {
        fail_reply(job, 503, util_strerror(rc));
    }
    return rc;
}

/* The job's reply says what happened; the pool's status alone reaches admin_done, so that
 * UTIL_ECLOSED there always means a cancelled job (a publisher shutting down is a 503 reply). */
static int admin_work(void *state, void *arg)
{
    (void)run_op_blocking(state, arg); /* the outcome is in job->reply */
    return UTIL_OK;
}

/* On the loop that submitted the job; with UTIL_ECLOSED off it (util_pool_port_close): the loop and
 * the request are gone, so only the job is freed. */
static void admin_done(void *arg, int result)
{
    struct admin_job *job = arg;
    if (result == UTIL_ECLOSED) {
        /* nobody left to answer */
    } else if (job->reply == NULL) {
        respond_error(job->req, job->http_status ? job->http_status : 503, "out of memory");
    } else {
        respond_json(job->req, job->http_status, job->reply);
    }
    json_decref(job->reply);
    free(job->cert_der);
    free(job);
}

static int authorized(struct admin *admin, struct http_request *req)
{
    size_t len = 0;
    const char *auth = http_request_header(req, "Authorization", &len);
    /* A client certificate that verified against [admin] client_ca in this connection's
     * handshake authenticates on its own; with require_client_cert nothing else does. */
    if (admin->cfg.client_ca[0] != '\0' && http_request_peer_cert_verified(req, NULL, 0))
        return 1;
    if (admin->cfg.require_client_cert)
        return 0;
    /* Two Authorization fields are ambiguous (a proxy may act on the other one): refused. */
    /* The scheme name is case-insensitive (RFC 9110 11.1); the token is not. */
    if (admin->token_len == 0 || auth == NULL || len < 7 || strncasecmp(auth, "Bearer ", 7) != 0 ||
        http_request_header_count(req, "Authorization") != 1)
        return 0;
    return util_ct_equal(auth + 7, len - 7, admin->token, admin->token_len);
}

/* Counts a refused request and logs it, rate-limited: at most one line per second, which says
 * how many refusals went unlogged since the previous one. */
static void note_unauthorized(struct admin *admin, struct http_request *req)
{
    int64_t now_s = util_mono_ms() / 1000;
    int64_t last_s = atomic_load(&admin->unauthorized_logged_s);
    uint64_t suppressed;

    atomic_fetch_add(&admin->unauthorized, 1);
    /* One thread wins the second; the others count themselves as suppressed. */
    if (now_s <= last_s ||
        !atomic_compare_exchange_strong(&admin->unauthorized_logged_s, &last_s, now_s)) {
        atomic_fetch_add(&admin->unauthorized_suppressed, 1);
        return;
    }
    suppressed = atomic_exchange(&admin->unauthorized_suppressed, 0);
    if (suppressed > 0)
        UTIL_WARN(MOD,
                  "unauthenticated request from %s to %.100s refused (%llu more suppressed; at "
                  "most one such line per second, all counted in /metrics)",
                  http_request_peer(req), http_request_target(req, NULL),
                  (unsigned long long)suppressed);
    else
        UTIL_WARN(MOD, "unauthenticated request from %s to %.100s refused", http_request_peer(req),
                  http_request_target(req, NULL));
}

/* Authenticates req; when it is not, answers 401 (and counts and logs it) and returns 0. */
static int authenticate(struct admin *admin, struct http_request *req)
{
    if (authorized(admin, req))
        return 1;
    note_unauthorized(admin, req);
    respond_error(req, 401, "missing or wrong bearer token");
    return 0;
}

int admin_gate(struct admin *admin, struct http_request *req)
{
    if (admin->cfg.metrics_without_auth)
        return 1;
    return authenticate(admin, req);
}

int admin_metrics(struct admin *admin, char *buf, size_t len)
{
    int n = snprintf(buf, len,
                     "# TYPE pkiva_admin_unauthenticated_total counter\n"
                     "pkiva_admin_unauthenticated_total %llu\n",
                     (unsigned long long)atomic_load(&admin->unauthorized));
    return n < 0 || (size_t)n >= len ? UTIL_EINVAL : n;
}

/* Every state-changing admin request carries a JSON body, and says so: a request whose only
 * Content-Type is application/json (parameters allowed, the type compared case-insensitively,
 * RFC 9110 8.3.1). A browser cannot send that cross-origin without a CORS preflight, which this
 * server never grants, so a page cannot make an operator's browser (holding a client
 * certificate) change anything; text/plain, form types and look-alikes (application/jsonp) are
 * refused. */
static int json_content_type(const struct http_request *req)
{
    size_t len = 0;
    const char *ctype = http_request_header(req, "Content-Type", &len);
    static const char json[] = "application/json";
    size_t n = sizeof(json) - 1;

    if (ctype == NULL || http_request_header_count(req, "Content-Type") != 1 || len < n ||
        strncasecmp(ctype, json, n) != 0)
        return 0;
    return len == n || ctype[n] == ';' || ctype[n] == ' ' || ctype[n] == '\t';
}

static const char *json_str(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* One attempt at reading a PEM certificate; *oom = 1 when memory visibly ran out. */
static X509 *read_pem_cert(const char *pem, int *oom)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *cert = bio != NULL ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;

    BIO_free(bio);
    *oom = bio == NULL;
    if (cert == NULL)
        *oom |= util_openssl_oom_clear();
    return cert;
}

/* Decodes a PEM certificate into job->cert_der; returns NULL or why it is not acceptable.
 * OpenSSL's PEM reader reports some failed allocations as a syntax error ("bad end line"), so a
 * certificate that does not read is read once more before it is called bad: a transient
 * shortage of memory then costs nothing, a lasting one is reported as a bad certificate. */
static const char *decode_pem_cert(struct admin_job *job, const char *pem)
{
    int oom = 0;
    X509 *cert = read_pem_cert(pem, &oom);
    unsigned char *der = NULL;
    int len;

    if (cert == NULL && !oom)
        cert = read_pem_cert(pem, &oom);
    if (cert == NULL)
        return oom ? admin_enomem : "\"certificate\" is not a PEM certificate";
    len = i2d_X509(cert, &der);
    X509_free(cert);
    if (len <= 0) {
        ERR_clear_error();
        return admin_enomem; /* a certificate just decoded always encodes, unless memory ran out */
    }
    job->cert_der = malloc((size_t)len);
    if (job->cert_der == NULL) {
        OPENSSL_free(der);
        return admin_enomem;
    }
    memcpy(job->cert_der, der, (size_t)len);
    job->cert_len = (size_t)len;
    OPENSSL_free(der);
    return NULL;
}

/* Fills the job from the JSON body; returns NULL or the reason it is not acceptable. */
static const char *parse_body(struct admin_job *job, json_t *body)
{
    const char *issuer = json_str(body, "issuer");
    const char *serial = json_str(body, "serial");
    const char *text;
    int64_t t;

    if (issuer == NULL || strlen(issuer) >= sizeof(job->issuer))
        return "\"issuer\" (string) is required";
    (void)snprintf(job->issuer, sizeof(job->issuer), "%s", issuer);
    text = json_str(body, "actor");
    {
        /* A verified certificate names the actor; a body's "actor" is only a claim. */
        char subject[sizeof(job->actor)];
        /* (No admin or request on the fuzz target's path.) */
        if (job->admin != NULL && job->req != NULL && job->admin->cfg.client_ca[0] != '\0' &&
            http_request_peer_cert_verified(job->req, subject, sizeof(subject)))
            (void)snprintf(job->actor, sizeof(job->actor), "admin-mtls:%.84s", subject);
        else
            (void)snprintf(job->actor, sizeof(job->actor), "admin-api:%.80s",
                           text ? text : "token");
    }
    if (job->op == OP_REGISTER || job->op == OP_SUPERSEDE) {
        const char *pem = json_str(body, "certificate");
        const char *why;
        if (pem == NULL && job->op == OP_REGISTER)
            return "\"certificate\" (PEM string) is required";
        why = pem != NULL ? decode_pem_cert(job, pem) : NULL;
        if (why != NULL || job->op == OP_REGISTER)
            return why;
    }
    if (serial == NULL || admin_serial_parse(serial, job->serial, &job->serial_len) != UTIL_OK)
        return "\"serial\" (hex string) is required";
    if (job->op != OP_REVOKE && job->op != OP_SUPERSEDE)
        return NULL;
    job->rev.reason = STORE_REASON_NONE;
    text = json_str(body, "reason");
    if (job->op == OP_SUPERSEDE) {
        /* Renewal or changed information: the reason is superseded by definition. */
        if (text != NULL && store_reason_from_name(text) != STORE_REASON_SUPERSEDED)
            return "\"reason\" of a supersede can only be superseded";
        text = "superseded";
    }
    if (text != NULL) {
        job->rev.reason = store_reason_from_name(text);
        if (job->rev.reason < -1)
            return "\"reason\" is not an RFC 5280 reason name";
        if (job->rev.reason == STORE_REASON_UNSPECIFIED)
            job->rev.reason = STORE_REASON_NONE;
    }
    text = json_str(body, "revoked_at");
    if (text != NULL) {
        if (util_time_parse(text, &t) != UTIL_OK)
            return "\"revoked_at\" is not a time (2026-11-21T10:00:00Z)";
        job->rev.revoked_at = t;
    }
    text = json_str(body, "invalidity_date");
    if (text != NULL) {
        if (util_time_parse(text, &t) != UTIL_OK)
            return "\"invalidity_date\" is not a time";
        job->rev.invalidity_date = t;
    }
    text = json_str(body, "received_at");
    if (text != NULL) {
        if (util_time_parse(text, &t) != UTIL_OK)
            return "\"received_at\" is not a time";
        job->rev.received_at_ms = t * 1000;
    }
    text = json_str(body, "request_id");
    if (text != NULL) {
        (void)snprintf(job->request_id, sizeof(job->request_id), "%s", text);
        job->rev.request_id = job->request_id;
    }
    job->rev.actor = job->actor;
    return NULL;
}

/* jansson reports a failed allocation inside its lexer as a syntax error ("invalid token"), or
 * not at all (see load_object), so its result alone cannot tell a malformed body (400) from a
 * server out of memory (503). Its allocator hook can: every allocation jansson makes goes
 * through json_alloc, which notes a failure for the calling thread. Installed once (at
 * admin_new, or by the first decode in the fuzz path); malloc and free underneath, so
 * objects made before it are freed correctly. */
static _Thread_local int json_alloc_failed;
static pthread_once_t json_alloc_once = PTHREAD_ONCE_INIT;

static void *json_alloc(size_t size)
{
    void *p = malloc(size);
    if (p == NULL)
        json_alloc_failed = 1;
    return p;
}

static void json_alloc_install(void)
{
    json_set_alloc_funcs(json_alloc, free);
}

/* Decodes a JSON object body (duplicate keys refused). Returns NULL and the reason in msg when it
 * is not one, or NULL and *oom = 1 when memory ran out while decoding it (a 503, not the client's
 * fault). The caller owns the result. */
static json_t *load_object(const unsigned char *bytes, size_t len, char *msg, size_t msg_len,
                           int *oom)
{
    json_error_t jerr;
    json_t *body = NULL;

    (void)pthread_once(&json_alloc_once, json_alloc_install); /* cannot fail with a valid once */
    json_alloc_failed = 0;
    body = json_loadb((const char *)bytes, len, JSON_REJECT_DUPLICATES, &jerr);
    /* Even a body that decoded is not trusted then: jansson's lexer drops the character it could
     * not append to a growing string and goes on, so a value may have lost bytes. */
    *oom = json_alloc_failed;
    if (*oom) {
        (void)snprintf(msg, msg_len, "out of memory");
        json_decref(body);
        return NULL;
    }
    if (body == NULL || !json_is_object(body)) {
        (void)snprintf(msg, msg_len, "malformed JSON: %s", body ? "not an object" : jerr.text);
        json_decref(body);
        return NULL;
    }
    return body;
}

/* Every check an untrusted body goes through before a job is queued: JSON, then the fields for
 * job->op. Returns NULL when the job is filled, else the reason for a 400 (msg or a constant).
 * Shared by the routes and the fuzz target, so that both run exactly the same code. */
static const char *decode_body(struct admin_job *job, const unsigned char *bytes, size_t len,
                               char *msg, size_t msg_len)
{
    int oom = 0;
    json_t *body = load_object(bytes, len, msg, msg_len, &oom);
    const char *why = NULL;
    if (body == NULL)
        return oom ? admin_enomem : msg;
    why = parse_body(job, body);
    json_decref(body);
    return why;
}

int admin__parse_for_fuzz(const char *op, const unsigned char *body, size_t len)
{
    static const struct {
        const char *name;
        enum admin_op op;
    } ops[] = {{"revoke", OP_REVOKE},
               {"unrevoke", OP_UNREVOKE},
               {"status", OP_STATUS},
               {"certificates", OP_REGISTER},
               {"supersede", OP_SUPERSEDE}};
    struct admin_job job;
    char msg[256];
    const char *why = NULL;

    memset(&job, 0, sizeof(job));
    if (strcmp(op, "crl/publish") == 0) {
        /* As handle_crl_publish: an empty body means every issuer. */
        int oom = 0;
        json_t *obj = len > 0 ? load_object(body, len, msg, sizeof(msg), &oom) : NULL;
        if (len > 0 && obj == NULL)
            return oom ? 503 : 400;
        (void)json_str(obj, "issuer"); /* any string or none is acceptable here */
        json_decref(obj);
        return 0;
    }
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        if (strcmp(op, ops[i].name) == 0) {
            job.op = ops[i].op;
            why = decode_body(&job, body, len, msg, sizeof(msg));
            free(job.cert_der);
            return why == NULL ? 0 : why_status(why);
        }
    }
    return -1;
}

static void submit(struct admin *admin, struct admin_job *job)
{
    int loop = http_request_loop_index(job->req);
    int rc = loop < ADMIN_MAX_LOOPS && admin->ports[loop] != NULL
                 ? util_pool_submit(admin->pool, admin->ports[loop], admin_work, admin_done, job)
                 : UTIL_EINVAL;
    if (rc != UTIL_OK) {
        respond_error(job->req, 503, rc == UTIL_EBUSY ? "busy, try again" : util_strerror(rc));
        free(job->cert_der);
        free(job);
    }
}

static void handle_admin(void *ctx, struct http_request *req, enum admin_op op)
{
    struct admin *admin = ctx;
    struct admin_job *job = NULL;
    size_t body_len = 0;
    const unsigned char *body_bytes;
    char msg[256];
    const char *why;

    if (!authenticate(admin, req))
        return;
    job = calloc(1, sizeof(*job));
    if (job == NULL) {
        respond_error(req, 503, "out of memory");
        return;
    }
    job->admin = admin;
    job->req = req;
    job->op = op;
    if (op == OP_SLA) {
        submit(admin, job);
        return;
    }
    if (!json_content_type(req)) {
        free(job);
        respond_error(req, 415, "Content-Type must be application/json");
        return;
    }
    body_bytes = http_request_body(req, &body_len);
    why = decode_body(job, body_bytes, body_len, msg, sizeof(msg));
    if (why != NULL) {
        free(job->cert_der);
        free(job);
        respond_error(req, why_status(why), why);
        return;
    }
    submit(admin, job);
}

static void handle_revoke(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_REVOKE);
}
static void handle_unrevoke(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_UNREVOKE);
}
static void handle_status(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_STATUS);
}
static void handle_register(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_REGISTER);
}
static void handle_supersede(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_SUPERSEDE);
}

static void handle_sla(void *ctx, struct http_request *req)
{
    handle_admin(ctx, req, OP_SLA);
}

/* POST /admin/crl/publish {"issuer": NAME, "wait": BOOL} (issuer optional = all): regenerate
 * now. The publication itself runs on the publisher thread; without "wait" this answers 202 once
 * it is scheduled, with "wait": true 200 once the new CRLs are served (see publish_and_wait). */
static void handle_crl_publish(void *ctx, struct http_request *req)
{
    struct admin *admin = ctx;
    size_t body_len = 0;
    const unsigned char *bytes;
    json_t *body = NULL;
    char msg[256];
    const char *issuer = NULL;
    int rc, wait = 0;

    if (!authenticate(admin, req))
        return;
    if (!json_content_type(req)) {
        respond_error(req, 415, "Content-Type must be application/json");
        return;
    }
    bytes = http_request_body(req, &body_len);
    if (body_len > 0) {
        int oom = 0;
        body = load_object(bytes, body_len, msg, sizeof(msg), &oom);
        if (body == NULL) {
            respond_error(req, oom ? 503 : 400, oom ? admin_enomem : "malformed JSON");
            return;
        }
        issuer = json_str(body, "issuer");
        wait = json_is_true(json_object_get(body, "wait"));
    }
    if (wait) {
        struct admin_job *job = calloc(1, sizeof(*job));
        if (job == NULL || (issuer != NULL && strlen(issuer) >= sizeof(job->issuer))) {
            respond_error(req, job == NULL ? 503 : 404,
                          job == NULL ? admin_enomem : "no such issuer");
            free(job);
            json_decref(body);
            return;
        }
        job->admin = admin;
        job->req = req;
        job->op = OP_CRL_PUBLISH_WAIT;
        (void)snprintf(job->issuer, sizeof(job->issuer), "%s", issuer ? issuer : "");
        json_decref(body);
        submit(admin, job);
        return;
    }
    rc = crl_publish_now(admin->crl, issuer);
    if (rc == UTIL_OK) {
        json_t *reply = json_pack("{s:s,s:s}", "scheduled", "now", "issuer", issuer ? issuer : "*");
        if (reply != NULL)
            respond_json(req, 202, reply);
        else
            respond_error(req, 503, "out of memory");
        json_decref(reply);
    } else {
        respond_error(req, rc == UTIL_ENOTFOUND ? 404 : 503,
                      rc == UTIL_ENOTFOUND ? "no such issuer" : util_strerror(rc));
    }
    if (rc == UTIL_OK)
        UTIL_INFO(MOD, "CRL publication of %s requested through the admin API",
                  issuer ? issuer : "every issuer");
    json_decref(body); /* last: issuer points into it */
}

static void loop_init(void *ctx, uv_loop_t *loop, int index)
{
    struct admin *admin = ctx;
    if (index < ADMIN_MAX_LOOPS &&
        util_pool_port_new(admin->pool, loop, &admin->ports[index]) != UTIL_OK)
        UTIL_ERROR(MOD, "no store port for loop %d: admin requests there get 503", index);
}

static void loop_fini(void *ctx, uv_loop_t *loop, int index)
{
    struct admin *admin = ctx;
    (void)loop;
    if (index < ADMIN_MAX_LOOPS) {
        util_pool_port_close(admin->ports[index]);
        admin->ports[index] = NULL;
    }
}

int admin_new(const struct admin_config *cfg, struct http_server *http, struct crl_publisher *crl,
              struct admin **out)
{
    struct admin *admin = calloc(1, sizeof(*admin));
    struct util_pool_config pc = {.name = "store",
                                  .threads = 2,
                                  .queue_max = 1024,
                                  .thread_init = store_thread_init,
                                  .thread_fini = store_thread_fini};
    int rc;
    /* jansson's allocator hook goes in while the process is still single-threaded. */
    (void)pthread_once(&json_alloc_once, json_alloc_install); /* cannot fail with a valid once */
    if (admin == NULL)
        return UTIL_ENOMEM;
    admin->cfg = *cfg;
    admin->crl = crl;
    if (cfg->token_file[0] != '\0') {
        unsigned char *token = NULL;
        size_t len = 0;
        rc = util_file_read(cfg->token_file, sizeof(admin->token) - 1, &token, &len);
        if (rc != UTIL_OK) {
            UTIL_ERROR(MOD, "cannot read the admin token file %s: %s", cfg->token_file,
                       util_strerror(rc));
            free(admin);
            return UTIL_ECONFIG;
        }
        while (len > 0 && (token[len - 1] == '\n' || token[len - 1] == '\r'))
            len--;
        if (len < 16) {
            UTIL_ERROR(MOD, "the admin token in %s is shorter than 16 characters", cfg->token_file);
            OPENSSL_cleanse(token, len);
            free(token);
            free(admin);
            return UTIL_ECONFIG;
        }
        memcpy(admin->token, token, len);
        admin->token_len = len;
        OPENSSL_cleanse(token, len);
        free(token);
    } else if (cfg->client_ca[0] == '\0') {
        UTIL_WARN(MOD, "no [admin] token_file: the admin API refuses every request");
    }
    if (cfg->tls_key[0] != '\0') {
        /* Like the PIN file: a TLS key others can read is refused (http reads it later). */
        struct stat st;
        if (stat(cfg->tls_key, &st) != 0 || (st.st_mode & 077) != 0) {
            UTIL_ERROR(MOD,
                       "the admin TLS key %s is missing or readable by others "
                       "(chmod 600 it)",
                       cfg->tls_key);
            OPENSSL_cleanse(admin->token, sizeof(admin->token));
            free(admin);
            return UTIL_EPERM;
        }
    }
    if (cfg->require_client_cert)
        UTIL_INFO(MOD, "admin API: client certificates only (require_client_cert)");
    else if (cfg->client_ca[0] != '\0')
        UTIL_INFO(MOD, "admin API: client certificates or the bearer token");
    pc.ctx = admin;
    rc = util_pool_new(&pc, &admin->pool);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "cannot start the store threads: %s", util_strerror(rc));
        free(admin);
        return rc;
    }
    rc = http_server_on_loop(http, loop_init, loop_fini, admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/revoke", handle_revoke, admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/unrevoke", handle_unrevoke, admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/status", handle_status, admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/certificates", handle_register,
                               admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/supersede", handle_supersede,
                               admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "GET", "/admin/sla", handle_sla, admin);
    if (rc == UTIL_OK)
        rc = http_server_route(http, HTTP_ADMIN, "POST", "/admin/crl/publish", handle_crl_publish,
                               admin);
    if (rc != UTIL_OK) {
        admin_free(admin);
        return rc;
    }
    *out = admin;
    return UTIL_OK;
}

void admin_free(struct admin *admin)
{
    if (admin == NULL)
        return;
    util_pool_free(admin->pool);
    OPENSSL_cleanse(admin->token, sizeof(admin->token));
    free(admin);
}
