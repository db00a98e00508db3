/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva serve` and `pkiva init`: validate everything, open the HSM and the store, build the OCSP
 * responder, the CRL publisher and the TSA, wire the revocation pipeline (feed/) to them, start the
 * loops, print the URLs, and shut down cleanly on SIGTERM/SIGINT: the feed delivers what was
 * committed, then the CRL publisher publishes what is pending, then everything closes. */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <admin/admin.h>
#include <errno.h>
#include <crl/crl.h>
#include <directory/directory.h>
#include <feed/feed.h>
#include <tsa/tsa.h>
#include <getopt.h>
#include <hsm/hsm.h>
#include <http/http.h>
#include <ocsp/ocsp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <time.h>
#include <unistd.h>
#include <util/util.h>

#define MOD "serve"
/* [issue #8] How often the hsm monitor signs with an idle token to check it (see hsm.h). */
#define SERVE_HSM_PROBE_MS 2000

struct served_issuer {
    const struct cli_issuer *conf;
    int64_t store_id;
    X509 *cert;
    X509 *ocsp_cert;
    struct hsm_key *ca_key;
    struct hsm_key *ocsp_key;
    struct util_blob *cert_der; /* published at /ca/NAME.crt */
};

struct server {
    const struct cli_config *cfg;
    struct hsm *hsm;
    struct store *store; /* start-up connection, then closed */
    struct ocsp_responder *ocsp;
    struct crl_publisher *crl;
    struct tsa_service *tsa; /* NULL when no [tsa.NAME] is configured */
    struct http_server *http;
    struct admin *admin;
    struct feed *feed;           /* the revocation pipeline */
    struct directory *directory; /* the public certificate directory (issue 20) */
    struct cli_service *service; /* systemd readiness and SIGHUP (service.c) */
    struct feed_contract contract;
    struct cli_audit_sealer *sealer; /* seals the audit log with the first issuer's key */
    int n_issuers;
    struct served_issuer issuers[CLI_MAX_ISSUERS];
    int64_t feed_start;      /* the status index was loaded at this feed id */
    int64_t next_cert_check; /* monotonic ms; the feed thread's tick */

    /* Every certificate pkiva signs under, with its notAfter: /metrics shows them and the poller
     * warns ahead of expiry (written before the threads start, read-only afterwards). */
    struct cert_watch {
        char name[64];    /* as cli_issuer.name and cli_tsa_unit.name */
        const char *role; /* "ca" (CRLs; OCSP too without a responder), "ocsp", "tsa" */
        int64_t not_after;
    } watches[2 * CLI_MAX_ISSUERS + CLI_MAX_TSA_UNITS];
    int n_watches;
};

X509 *cli__load_pem_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *cert = NULL;
    if (f == NULL) {
        UTIL_ERROR(MOD, "cannot open certificate %s: %s", path, strerror(errno));
        return NULL;
    }
    ERR_clear_error();
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    (void)fclose(f); /* read-only */
    if (cert == NULL)
        util_log_openssl(UTIL_LOG_ERROR, MOD, "%s is not a PEM certificate", path);
    return cert;
}

/* Loads certificates and keys of every issuer and registers the issuers in the store. */
static int open_issuers(struct server *srv)
{
    const struct cli_config *cfg = srv->cfg;
    for (int i = 0; i < cfg->n_issuers; i++) {
        struct served_issuer *is = &srv->issuers[i];
        const struct cli_issuer *c = &cfg->issuers[i];
        unsigned char *der = NULL;
        int len, rc;
        const char *md = c->digest[0] ? c->digest : NULL;

        is->conf = c;
        srv->n_issuers++;
        is->cert = cli__load_pem_cert(c->cert);
        if (is->cert == NULL)
            return UTIL_ECONFIG;
        if (c->ocsp_cert[0] != '\0') {
            is->ocsp_cert = cli__load_pem_cert(c->ocsp_cert);
            if (is->ocsp_cert == NULL)
                return UTIL_ECONFIG;
        }
        rc = hsm_key_load_blocking(srv->hsm, c->key_uri, md, c->rsa_pss, &is->ca_key);
        if (rc != UTIL_OK) {
            UTIL_ERROR(MOD, "[issuer.%s] key %s: %s", c->name, c->key_uri, util_strerror(rc));
            return rc;
        }
        if (X509_check_private_key(is->cert, is->ca_key->pkey) != 1) {
            ERR_clear_error();
            /* Provider keys cannot always be compared this way; compare the public halves. */
            if (EVP_PKEY_eq(X509_get0_pubkey(is->cert), is->ca_key->pkey) != 1) {
                ERR_clear_error();
                UTIL_ERROR(MOD, "[issuer.%s] key %s does not match %s", c->name, c->key_uri,
                           c->cert);
                return UTIL_ECONFIG;
            }
        }
        /* Issue 21: every key signs a test value through the production path, verified with
         * the certificate's public key. A key that fails is refused (it never signs, /readyz and
         * /metrics name it) and the other issuers keep serving. */
        rc = hsm_key_check_blocking(srv->hsm, is->ca_key, is->cert);
        if (rc == UTIL_ECONFIG || rc == UTIL_ENOMEM)
            return rc;
        if (c->ocsp_key_uri[0] != '\0') {
            rc = hsm_key_load_blocking(srv->hsm, c->ocsp_key_uri, md, c->rsa_pss, &is->ocsp_key);
            if (rc != UTIL_OK) {
                UTIL_ERROR(MOD, "[issuer.%s] ocsp_key %s: %s", c->name, c->ocsp_key_uri,
                           util_strerror(rc));
                return rc;
            }
            rc = hsm_key_check_blocking(srv->hsm, is->ocsp_key, is->ocsp_cert);
            if (rc == UTIL_ECONFIG || rc == UTIL_ENOMEM)
                return rc;
        }
        len = i2d_X509(is->cert, &der);
        if (len <= 0)
            return UTIL_ECRYPTO;
        is->cert_der = util_blob_new(der, (size_t)len);
        rc = is->cert_der
                 ? store_issuer_put_blocking(srv->store, c->name, der, (size_t)len, &is->store_id)
                 : UTIL_ENOMEM;
        OPENSSL_free(der);
        if (rc == UTIL_EEXIST) {
            UTIL_ERROR(MOD, "[issuer.%s] the store has another certificate under this name",
                       c->name);
            return UTIL_ECONFIG;
        }
        if (rc != UTIL_OK)
            return rc;
    }
    return UTIL_OK;
}

static void close_issuers(struct server *srv)
{
    for (int i = 0; i < srv->n_issuers; i++) {
        struct served_issuer *is = &srv->issuers[i];
        X509_free(is->cert);
        X509_free(is->ocsp_cert);
        hsm_key_free(is->ca_key);
        hsm_key_free(is->ocsp_key);
        util_blob_unref(is->cert_der);
    }
    srv->n_issuers = 0;
}

/* GET /ca/NAME.crt: the CA certificates named by caIssuers in AIA (RFC 5280 4.2.2.1). */
static void handle_ca_cert(void *ctx, struct http_request *req)
{
    struct server *srv = ctx;
    size_t len = 0;
    const char *target = http_request_target(req, &len);
    const char *name = target + 4; /* after "/ca/" */
    size_t name_len = len - 4;
    if (name_len > 4 && memcmp(name + name_len - 4, ".crt", 4) == 0) {
        name_len -= 4;
        for (int i = 0; i < srv->n_issuers; i++) {
            const char *iname = srv->issuers[i].conf->name;
            if (strlen(iname) == name_len && memcmp(iname, name, name_len) == 0) {
                struct http_response resp = {
                    .status = 200,
                    .content_type = "application/pkix-cert",
                    .body = srv->issuers[i].cert_der,
                    .headers = "Cache-Control: max-age=86400, public\r\n",
                };
                http_request_respond(req, &resp);
                return;
            }
        }
    }
    http_request_respond_text(req, 404, "text/plain", "no such CA certificate\n");
}

/* ---- certificate lifetimes ------------------------------------------------------------------ */

#define CERT_WARN_DAYS 30

static void watch_add(struct server *srv, const char *name, const char *role, const X509 *cert)
{
    struct cert_watch *w;
    if (cert == NULL || srv->n_watches >= (int)(sizeof(srv->watches) / sizeof(srv->watches[0])))
        return;
    w = &srv->watches[srv->n_watches++];
    (void)snprintf(w->name, sizeof(w->name), "%s", name); /* names are short: checked by config */
    w->role = role;
    if (util_asn1_time_unix(X509_get0_notAfter(cert), &w->not_after) != UTIL_OK)
        w->not_after = (int64_t)time(NULL); /* unreadable: counts as expiring now */
}

/* Start-up (after the services checked their certificates): the issuers' CA and responder
 * certificates and the TSA units' certificates. */
static void watch_fill(struct server *srv)
{
    for (int i = 0; i < srv->n_issuers; i++) {
        watch_add(srv, srv->issuers[i].conf->name, "ca", srv->issuers[i].cert);
        watch_add(srv, srv->issuers[i].conf->name, "ocsp", srv->issuers[i].ocsp_cert);
    }
    for (int i = 0; i < srv->cfg->n_tsa_units; i++) {
        X509 *cert = cli__load_pem_cert(srv->cfg->tsa_units[i].cert);
        watch_add(srv, srv->cfg->tsa_units[i].name, "tsa", cert);
        X509_free(cert);
    }
}

/* Logs the certificates that expired or expire within CERT_WARN_DAYS (at start, then daily). */
static void watch_check(const struct server *srv)
{
    int64_t now = (int64_t)time(NULL);
    for (int i = 0; i < srv->n_watches; i++) {
        const struct cert_watch *w = &srv->watches[i];
        int64_t left = w->not_after - now;
        if (left <= 0)
            UTIL_ERROR(MOD,
                       "the %s certificate of %s expired %lld days ago: what it signs is rejected "
                       "by relying parties; install a new one",
                       w->role, w->name, (long long)(-left / 86400));
        else if (left < (int64_t)CERT_WARN_DAYS * 86400)
            UTIL_WARN(MOD, "the %s certificate of %s expires in %lld days (%lld hours): renew it",
                      w->role, w->name, (long long)(left / 86400), (long long)(left / 3600));
    }
}

static int watch_metrics(const struct server *srv, char *buf, size_t len)
{
    int n = snprintf(buf, len, "# TYPE pkiva_cert_not_after_timestamp_seconds gauge\n");
    for (int i = 0; i < srv->n_watches && n >= 0 && (size_t)n < len; i++) {
        int more = snprintf(buf + n, len - (size_t)n,
                            "pkiva_cert_not_after_timestamp_seconds{role=\"%s\",name=\"%s\"} "
                            "%lld\n",
                            srv->watches[i].role, srv->watches[i].name,
                            (long long)srv->watches[i].not_after);
        n = more >= 0 ? n + more : -1;
    }
    return n;
}

_Static_assert(CLI_MAX_ISSUERS <= ADMIN_MAX_ISSUERS, "the admin API reports every issuer");

/* The admin API with the [admin] settings of cfg (which outlives it). */
static int start_admin(const struct cli_config *cfg, struct server *srv)
{
    struct admin_config ac = {.store_path = cfg->store_path,
                              .token_file = cfg->admin.token_file,
                              .tls_key = cfg->admin.tls_key,
                              .client_ca = cfg->admin.client_ca,
                              .require_client_cert = cfg->admin.require_client_cert,
                              .metrics_without_auth = cfg->admin.metrics_without_auth,
                              .sla_deadline_s = cfg->feed.deadline_s,
                              .max_feed_lag_ms = cfg->feed.max_feed_lag_ms};
    cli__contract(cfg, &ac.contract);
    return admin_new(&ac, srv->http, srv->crl, &srv->admin);
}

/* n after a section of more bytes was appended into room bytes (a formatter's or snprintf's
 * return value): -1 once a section did not fit. */
static int metrics_add(int n, int more, size_t room)
{
    return n >= 0 && more >= 0 && (size_t)more < room ? n + more : -1;
}

/* /metrics in Prometheus text format (admin listener): each module formats its own section. */
static void handle_metrics(void *ctx, struct http_request *req)
{
    struct server *srv = ctx;
    char body[32768]; /* per-key HSM lines come on top of the fixed ones */
    int n;

    if (!admin_gate(srv->admin, req))
        return; /* answered 401 */
    n = http_server_metrics(srv->http, body, sizeof(body));
    if (n >= 0)
        n = metrics_add(n, ocsp_metrics(srv->ocsp, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, hsm_metrics(srv->hsm, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, feed_metrics(srv->feed, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n,
                        feed_contract_metrics(&srv->contract, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, crl_publisher_metrics(srv->crl, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, watch_metrics(srv, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, admin_metrics(srv->admin, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0 && srv->tsa != NULL)
        n = metrics_add(n, tsa_service_metrics(srv->tsa, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0)
        n = metrics_add(n, directory_metrics(srv->directory, body + n, sizeof(body) - (size_t)n),
                        sizeof(body) - (size_t)n);
    if (n >= 0) {
        /* [crl] interval, for the "CRL older than its interval" alert (conf/prometheus/). */
        int more = snprintf(body + n, sizeof(body) - (size_t)n,
                            "# TYPE pkiva_crl_interval_seconds gauge\n"
                            "pkiva_crl_interval_seconds %lld\n",
                            (long long)srv->cfg->crl.interval_s);
        n = metrics_add(n, more, sizeof(body) - (size_t)n);
    }
    if (n < 0 || (size_t)n >= sizeof(body)) {
        http_request_respond_text(req, 500, "text/plain", "metrics buffer too small\n");
        return;
    }
    {
        struct http_response resp = {.status = 200,
                                     .content_type = "text/plain; version=0.0.4",
                                     .body_bytes = body,
                                     .body_len = (size_t)n};
        http_request_respond(req, &resp);
    }
}

static int ready_fn(void *ctx, char *why, size_t why_len)
{
    struct server *srv = ctx;
    struct feed_stats fs;
    if (srv->tsa != NULL && !tsa_service_ready(srv->tsa, why, why_len))
        return 0;
    if (!hsm_available(srv->hsm)) {
        (void)snprintf(why, why_len, "HSM unavailable");
        return 0;
    }
    if (store_replica_lagging(why, why_len))
        return 0;
    feed_stats_get(srv->feed, &fs);
    if (!fs.store_ok) {
        (void)snprintf(why, why_len, "store unavailable");
        return 0;
    }
    if (fs.lag_ms > srv->cfg->feed.max_feed_lag_ms) {
        (void)snprintf(why, why_len,
                       "feed lag %.1f s over [store] max_feed_lag %.1f s (OCSP may be stale)",
                       (double)fs.lag_ms / 1000.0,
                       (double)srv->cfg->feed.max_feed_lag_ms / 1000.0); /* may cut */
        return 0;
    }
    {
        /* One key that cannot sign does not take the others down: ready, but saying so. Only
         * when no key at all can sign is the service not ready. */
        int total = 0;
        int unhealthy = hsm_keys_unhealthy(srv->hsm, &total, why, why_len);
        if (unhealthy > 0 && unhealthy >= total)
            return 0;
    }
    return 1;
}

static void on_visible(void *ctx, int64_t feed_id)
{
    struct server *srv = ctx;
    feed_mark_visible(srv->feed, feed_id);
}

/* Subscribers of the revocation pipeline. */
static int ocsp_take(void *ctx, const struct store_change *change)
{
    return ocsp_responder_apply_change(ctx, change);
}

static int crl_take(void *ctx, const struct store_change *change)
{
    return crl_publisher_apply_change(ctx, change);
}

static int64_t crl_published_upto(void *ctx)
{
    return crl_publisher_published_upto(ctx);
}

/* The feed thread's tick: daily certificate expiry warnings. */
static void feed_tick(void *ctx)
{
    struct server *srv = ctx;
    if (util_mono_ms() >= srv->next_cert_check) {
        watch_check(srv);
        srv->next_cert_check = util_mono_ms() + 86400 * 1000LL;
    }
}

/* This node's name in the store's node rows: [store] node_name, or <hostname>:<first port>, which
 * tells apart the nodes of one machine and stays the same across restarts. */
static void node_name(const struct cli_config *cfg, char *out, size_t len)
{
    char host[64];

    if (cfg->feed.node_name[0] != '\0') {
        (void)snprintf(out, len, "%s", cfg->feed.node_name);
        return;
    }
    if (gethostname(host, sizeof(host)) != 0)
        (void)snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0'; /* gethostname may not terminate a cut name */
    (void)snprintf(out, len, "%s:%d", host, cfg->http.listeners[0].port); /* bounded */
}

static int build_feed(struct server *srv)
{
    const struct cli_config *cfg = srv->cfg;
    int64_t ids[CLI_MAX_ISSUERS];
    char name[FEED_NODE_NAME_MAX];
    /* OCSP first: it must answer a change before the CRL publisher is told of it. */
    const struct feed_subscriber subs[] = {
        {"OCSP responder", ocsp_take, NULL, srv->ocsp, 0},
        {"CRL publisher", crl_take, crl_published_upto, srv->crl, 1}, /* ignores ISSUE */
    };
    struct feed_config fc = {cfg->store_path,
                             cfg->feed.poll_ms,
                             srv->feed_start,
                             ids,
                             srv->n_issuers,
                             cfg->feed.deadline_s,
                             cfg->feed.warn_s,
                             subs,
                             2,
                             feed_tick,
                             srv,
                             name,
                             cfg->feed.max_feed_lag_ms};
    node_name(cfg, name, sizeof(name));
    for (int i = 0; i < srv->n_issuers; i++)
        ids[i] = srv->issuers[i].store_id;
    srv->next_cert_check = util_mono_ms() + 86400 * 1000LL; /* start-up checked already */
    return feed_new(&fc, &srv->feed);
}

/* The OCSP index is loaded from the read replica when there is one ([store] read_conninfo): a
 * snapshot of the store a little in the past, and the feed then follows the same replica from the
 * position that snapshot had. */
static int load_ocsp(struct server *srv)
{
    struct store *reads = NULL;
    int rc;

    if (srv->cfg->store_read_path[0] == '\0')
        return ocsp_responder_load_blocking(srv->ocsp, srv->store, &srv->feed_start);
    rc = store_open_blocking(srv->cfg->store_path, STORE_OPEN_STALE_READS, &reads);
    if (rc == UTIL_OK)
        rc = ocsp_responder_load_blocking(srv->ocsp, reads, &srv->feed_start);
    store_close(reads);
    return rc;
}

static int build_ocsp(struct server *srv)
{
    const struct cli_config *cfg = srv->cfg;
    struct ocsp_config oc;
    struct ocsp_issuer_config ic[CLI_MAX_ISSUERS];
    int rc;

    oc = cfg->ocsp; /* [ocsp] as read, timing derived */
    oc.on_visible = on_visible;
    oc.on_visible_ctx = srv;
    memset(ic, 0, sizeof(ic));
    for (int i = 0; i < srv->n_issuers; i++) {
        struct served_issuer *is = &srv->issuers[i];
        ic[i].name = is->conf->name;
        ic[i].store_issuer_id = is->store_id;
        ic[i].cert = is->cert;
        ic[i].signer_cert = is->ocsp_cert;
        ic[i].signer_key = is->ocsp_key ? is->ocsp_key : is->ca_key;
        ic[i].ignore_nonce = is->conf->ocsp_ignore_nonce;
    }
    rc = ocsp_responder_new(&oc, ic, srv->n_issuers, srv->hsm, &srv->ocsp);
    if (rc != UTIL_OK)
        return rc;
    return load_ocsp(srv);
}

void cli__crl_config(const struct cli_config *cfg, struct crl_config *cc)
{
    crl_config_default(cc);
    cc->publish_dir = cfg->crl.publish_dir;
    cc->store_path = cfg->store_path;
    cc->public_url = cfg->public_url;
    cc->deltas = cfg->crl.deltas;
    cc->validity_seconds = cfg->crl.validity_s;
    cc->delta_validity_seconds = cfg->crl.delta_validity_s;
    cc->interval_seconds = cfg->crl.interval_s;
    cc->coalesce_ms = cfg->crl.coalesce_ms;
    cc->lease_ms = cfg->crl.lease_ms;
    cc->full_on_change = cfg->crl.full_on_change;
    cc->expired_retention_seconds = cfg->crl.expired_retention_s;
    cc->expired_on_crl_since = cfg->crl.expired_on_crl_since;
    cc->max_age_seconds = cfg->crl.max_age_s;
}

int cli__publish_dir_ready(const struct cli_config *cfg)
{
    if (mkdir(cfg->crl.publish_dir, 0755) != 0 && errno != EEXIST) {
        UTIL_ERROR(MOD, "cannot create the CRL publish folder %s: %s", cfg->crl.publish_dir,
                   strerror(errno));
        return util_errno(errno);
    }
    return UTIL_OK;
}

static int build_tsa(struct server *srv)
{
    const struct cli_config *cfg = srv->cfg;
    struct tsa_config tc;
    struct tsa_unit_config uc[CLI_MAX_TSA_UNITS];

    if (cfg->n_tsa_units == 0)
        return UTIL_OK;
    tc = cfg->tsa; /* [tsa] as read */
    tc.store_path = cfg->store_path;
    if (!tc.require_clock_sync)
        UTIL_WARN(MOD, "[tsa] require_clock_sync = no: time stamps are issued even when the "
                       "clock is not synchronised (labs only)");
    memset(uc, 0, sizeof(uc));
    for (int i = 0; i < cfg->n_tsa_units; i++) {
        const struct tsa_unit_settings *u = &cfg->tsa_units[i];
        uc[i].name = u->name;
        uc[i].cert_file = u->cert;
        uc[i].chain_file = u->chain[0] ? u->chain : NULL;
        uc[i].key_uri = u->key_uri;
        uc[i].digest = u->digest[0] ? u->digest : NULL;
        uc[i].ess_digest = u->ess_digest[0] ? u->ess_digest : NULL;
        uc[i].policy = u->policy;
        for (int j = 0; j < u->n_accepted; j++)
            uc[i].accepted_policies[j] = u->accepted[j];
        uc[i].n_accepted_policies = u->n_accepted;
        uc[i].accuracy_us = u->accuracy_us;
        uc[i].tsa_name = u->tsa_name;
        uc[i].allow_weak_hashes = u->allow_weak_hashes;
    }
    return tsa_service_new(&tc, uc, cfg->n_tsa_units, srv->hsm, &srv->tsa);
}

static int build_crl(struct server *srv)
{
    struct crl_config cc;
    struct crl_issuer_config ic[CLI_MAX_ISSUERS];
    int rc = cli__publish_dir_ready(srv->cfg);
    if (rc != UTIL_OK)
        return rc;
    cli__crl_config(srv->cfg, &cc);
    memset(ic, 0, sizeof(ic));
    for (int i = 0; i < srv->n_issuers; i++) {
        ic[i].name = srv->issuers[i].conf->name;
        ic[i].store_issuer_id = srv->issuers[i].store_id;
        ic[i].cert = srv->issuers[i].cert;
        ic[i].key = srv->issuers[i].ca_key;
    }
    rc = crl_publisher_new(&cc, ic, srv->n_issuers, srv->hsm, &srv->crl);
    if (rc == UTIL_OK)
        rc = crl_publisher_load_blocking(srv->crl, srv->store);
    return rc;
}

/* ---- the public directory: its hooks into OCSP and the CRL publisher ---------------------------- */

static int directory_status(void *ctx, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, struct directory_status *out)
{
    struct server *srv = ctx;
    struct ocsp_cert_status st;
    if (ocsp_responder_cert_status(srv->ocsp, issuer_id, serial, serial_len, &st) != 1)
        return 0;
    out->status = st.status;
    out->reason = st.reason;
    out->revoked_at = st.revoked_at;
    out->invalidity_date = st.invalidity_date;
    return 1;
}

static int directory_crl_info(void *ctx, const char *name, struct directory_crl_info *out)
{
    struct server *srv = ctx;
    struct crl_issuer_stats cs;
    for (int i = 0; crl_publisher_stats(srv->crl, i, &cs) == UTIL_OK; i++) {
        if (strcmp(cs.name, name) != 0)
            continue;
        out->full_number = cs.full_number;
        out->delta_number = cs.delta_number;
        out->this_update = cs.this_update;
        out->next_update = cs.next_update;
        out->delta_this_update = cs.delta_this_update;
        out->full_entries = cs.full_entries;
        out->delta_entries = cs.delta_entries;
        return UTIL_OK;
    }
    return UTIL_ENOTFOUND;
}

static int build_directory(struct server *srv)
{
    const struct cli_config *cfg = srv->cfg;
    struct directory_issuer is[CLI_MAX_ISSUERS];
    struct directory_tsa_unit units[CLI_MAX_TSA_UNITS];
    char urls[CLI_MAX_TSA_UNITS][CLI_PATH_MAX + 128];
    char ocsp_url[CLI_PATH_MAX + 64];
    struct directory_params p;

    memset(&p, 0, sizeof(p));
    memset(units, 0, sizeof(units));
    for (int i = 0; i < srv->n_issuers; i++) {
        is[i].name = srv->issuers[i].conf->name;
        is[i].store_issuer_id = srv->issuers[i].store_id;
        is[i].cert = srv->issuers[i].cert;
    }
    for (int i = 0; i < cfg->n_tsa_units; i++) {
        const struct tsa_unit_settings *u = &cfg->tsa_units[i];
        (void)snprintf(urls[i], sizeof(urls[i]), "%s%s%s%s", cfg->public_url, cfg->tsa.path,
                       i == 0 ? "" : "/", i == 0 ? "" : u->name); /* as printed at start */
        units[i].name = u->name;
        units[i].url = urls[i];
        units[i].policies[units[i].n_policies++] = u->policy;
        for (int j = 0; j < u->n_accepted && units[i].n_policies < DIRECTORY_MAX_POLICIES; j++)
            units[i].policies[units[i].n_policies++] = u->accepted[j];
    }
    (void)snprintf(ocsp_url, sizeof(ocsp_url), "%s%s", cfg->public_url, cfg->ocsp.path);
    p.store_path = cfg->store_path;
    p.public_url = cfg->public_url;
    p.ocsp_url = ocsp_url;
    p.crl_deltas = cfg->crl.deltas;
    p.issuers = is;
    p.n_issuers = srv->n_issuers;
    p.tsa_units = units;
    p.n_tsa_units = cfg->n_tsa_units;
    p.hooks.status = directory_status;
    p.hooks.crl_info = directory_crl_info;
    p.hooks.ctx = srv;
    return directory_new(&cfg->directory, &p, &srv->directory);
}

/* Logs the freshness contract and refuses a configuration under which a conforming client in
 * scope could keep a revoked certificate's "good" answer past the deadline. */
static int check_contract(const struct cli_config *cfg, struct feed_contract *c)
{
    char line[512];
    unsigned refused;
    cli__contract(cfg, c);
    (void)feed_contract_format(c, line, sizeof(line)); /* truncation only shortens the log line */
    UTIL_INFO(MOD, "freshness contract: %s", line);
    refused = c->exceeding & ~c->out_of_scope;
    for (int i = 0; i < FEED_CLIENT_N; i++) {
        if (refused & (1u << i))
            UTIL_ERROR(MOD,
                       "a %s client can keep a revoked certificate's old answer for %lld s, past "
                       "the %lld s [revocation] deadline: shorten %s (or name the client class "
                       "in [revocation] out_of_scope)",
                       feed_client_name(i), (long long)c->worst_s[i], (long long)c->deadline_s,
                       feed_client_directive(i));
        else if (c->out_of_scope & (1u << i))
            UTIL_WARN(MOD,
                      "FRESHNESS CONTRACT NOT KEPT for %s clients ([revocation] out_of_scope): "
                      "they may see a revocation %lld s late, deadline %lld s",
                      feed_client_name(i), (long long)c->worst_s[i], (long long)c->deadline_s);
    }
    return refused ? UTIL_ECONFIG : UTIL_OK;
}

/* [store] read_conninfo: the feed, the OCSP index load, CRL and certificate downloads and the
 * directory read from the hot standby; lag past read_max_lag turns /readyz 503. */
static int replica_setup(const struct cli_config *cfg)
{
    if (cfg->store_read_path[0] == '\0')
        return UTIL_OK;
    UTIL_INFO(MOD, "reads that may be stale come from the replica %s (bound on its lag: %lld ms)",
              cfg->store.read_conninfo, (long long)(int64_t)cfg->store.read_max_lag_ms);
    return store_read_replica_set(cfg->store_path, cfg->store_read_path,
                                  (int64_t)cfg->store.read_max_lag_ms);
}

int cli_serve(const struct cli_config *cfg)
{
    struct server *srv = NULL;
    struct hsm_config hcfg;
    struct http_config http;
    struct cli_privdrop privdrop;
    int rc;
    int status = 1;

    cli__apply_env(cfg);
    /* [server] user: checked before anything is opened (privdrop.c). */
    if (cli__privdrop_prepare(cfg, &privdrop) != UTIL_OK)
        return 1;
    /* SIGHUP no longer ends the process: it reads the configuration again (service.c). */
    if (cli__service_signals(cfg) != UTIL_OK)
        return 1;
    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        UTIL_ERROR(MOD, "out of memory at start-up");
        return 1;
    }
    srv->cfg = cfg;
    rc = check_contract(cfg, &srv->contract);
    if (rc != UTIL_OK)
        goto out;

    cli__hsm_config(cfg, cfg->hsm.sessions, cfg->hsm.queue_max, &hcfg);
    hcfg.restart_after_ms = cfg->hsm.restart_after_ms; /* the server's self-heal only */
    rc = hsm_open(&hcfg, &srv->hsm);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "cannot open the HSM (module %s, PIN file %s): %s", cfg->hsm.module,
                   cfg->hsm.pin_file, util_strerror(rc));
        goto out;
    }
    rc = replica_setup(cfg);
    if (rc == UTIL_OK)
        rc = store_open_blocking(cfg->store_path, STORE_OPEN_CREATE, &srv->store);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "cannot open the store %s: %s", cfg->store_path, util_strerror(rc));
        goto out;
    }
    rc = open_issuers(srv);
    if (rc != UTIL_OK)
        goto out;
    rc = build_ocsp(srv);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "OCSP responder: %s", util_strerror(rc));
        goto out;
    }
    rc = build_crl(srv);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "CRL publisher: %s", util_strerror(rc));
        goto out;
    }
    rc = build_tsa(srv);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "TSA: %s", util_strerror(rc));
        goto out;
    }
    rc = build_feed(srv);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "revocation feed: %s", util_strerror(rc));
        goto out;
    }
    rc = build_directory(srv);
    if (rc != UTIL_OK) {
        UTIL_ERROR(MOD, "directory: %s", util_strerror(rc));
        goto out;
    }
    watch_fill(srv);
    watch_check(srv);
    /* [issue #8: HSM outages] The hsm monitor notices an outage without traffic (/readyz),
     * sheds signing work while the token is away and, when it returns, loads the key handles
     * again so that signing heals without a restart. It probes with the first issuer's OCSP
     * signing key (the busiest one) that passed its self-check: a refused key's failures are
     * booked against that key, never as an outage, so it could not notice one (issue 21);
     * hsm_close stops it. */
    if (srv->n_issuers > 0) {
        const char *probe = NULL;
        for (int i = 0; i < srv->n_issuers && probe == NULL; i++) {
            const struct served_issuer *is = &srv->issuers[i];
            if (is->ocsp_key != NULL && hsm_key_usable(is->ocsp_key))
                probe = is->conf->ocsp_key_uri;
            else if (hsm_key_usable(is->ca_key))
                probe = is->conf->key_uri;
        }
        if (probe == NULL) /* no key passed: the first one, as before */
            probe = srv->issuers[0].conf->ocsp_key_uri[0] ? srv->issuers[0].conf->ocsp_key_uri
                                                          : srv->issuers[0].conf->key_uri;
        rc = hsm_monitor_start(srv->hsm, probe, SERVE_HSM_PROBE_MS);
        if (rc != UTIL_OK)
            goto out;
    }
    (void)store_audit_append_blocking(srv->store, "pkiva-serve", "start",
                                      "{\"what\":\"configuration and keys loaded\"}");
    /* Seal what was written while no server ran (CLI changes, this start); a failure is logged
     * and retried by the sealer (audit.c). */
    if (srv->n_issuers > 0)
        (void)cli__audit_seal_blocking(srv->store, srv->hsm, srv->issuers[0].ca_key,
                                       srv->issuers[0].cert, NULL);
    /* The start-up connection is not needed any more: the feed opens its own. */
    store_close(srv->store);
    srv->store = NULL;

    http = cfg->http;
    http.workers = cfg->workers > 0 ? cfg->workers : cli_default_workers();
    /* [admin] tls_cert: HTTPS (and client certificates with client_ca) on the admin listener.
     * http reads the files in http_server_new; the public listener stays plain HTTP. */
    if (cfg->admin.tls_cert[0] != '\0') {
        http.listeners[1].tls_cert_file = cfg->admin.tls_cert;
        http.listeners[1].tls_key_file = cfg->admin.tls_key;
        http.listeners[1].tls_client_ca_file =
            cfg->admin.client_ca[0] != '\0' ? cfg->admin.client_ca : NULL;
        http.listeners[1].tls_client_crl_file =
            cfg->admin.client_crl[0] != '\0' ? cfg->admin.client_crl : NULL;
    }
    rc = http_server_new(&http, &srv->http);
    if (rc != UTIL_OK)
        goto out;
    rc = ocsp_responder_register(srv->ocsp, srv->http);
    if (rc == UTIL_OK)
        rc = crl_publisher_register(srv->crl, srv->http);
    if (rc == UTIL_OK && srv->tsa != NULL)
        rc = tsa_service_register(srv->tsa, srv->http);
    if (rc == UTIL_OK)
        rc = directory_register(srv->directory, srv->http);
    if (rc == UTIL_OK)
        rc = http_server_route(srv->http, HTTP_PUBLIC, "GET", "/ca/", handle_ca_cert, srv);
    if (rc == UTIL_OK)
        rc = http_server_route(srv->http, HTTP_ADMIN, "GET", "/metrics", handle_metrics, srv);
    if (rc == UTIL_OK)
        rc = start_admin(cfg, srv);
    if (rc != UTIL_OK)
        goto out;
    http_server_set_ready_fn(srv->http, ready_fn, srv);
    /* [server] user: root is dropped inside http_server_start, once the listeners are bound and
     * before any connection is accepted. By then the token session is open, the keys are loaded,
     * the admin token is read and the admin store threads have opened their SQLite connections
     * (SQLite gives root-created -wal/-shm files the database file's owner). What starts below
     * opens files as the new user: the pre-signer, the CRL publisher (store and publish folder)
     * and the revocation feed (store), so the data folder must belong to it. */
    http_server_set_start_hook(srv->http, cli__privdrop_apply, &privdrop);
    rc = http_server_start(srv->http);
    if (rc != UTIL_OK)
        goto out;
    rc = ocsp_responder_start(srv->ocsp);
    if (rc == UTIL_OK)
        rc = crl_publisher_start(srv->crl);
    if (rc == UTIL_OK && srv->tsa != NULL)
        rc = tsa_service_start(srv->tsa);
    if (rc != UTIL_OK)
        goto out;
    rc = feed_start(srv->feed);
    if (rc != UTIL_OK)
        goto out;
    if (srv->n_issuers > 0) {
        rc = cli__audit_sealer_start(cfg, srv->hsm, srv->issuers[0].ca_key, srv->issuers[0].cert,
                                     &srv->sealer);
        if (rc != UTIL_OK)
            goto out;
    }
    rc = cli__service_start(cfg, ready_fn, srv, &srv->service);
    if (rc != UTIL_OK)
        goto out;

    printf("pkiva is serving (%d workers)\n", http.workers);
    printf("  OCSP:      %s%s   (POST, or GET %s<base64 request>)\n", cfg->public_url,
           cfg->ocsp.path, cfg->ocsp.path);
    for (int i = 0; i < srv->n_issuers; i++) {
        printf("  CRL:       %s/crl/%s.crl", cfg->public_url, srv->issuers[i].conf->name);
        if (cfg->crl.deltas)
            printf("  (delta %s/crl/%s-delta.crl)", cfg->public_url, srv->issuers[i].conf->name);
        printf("\n  CA cert:   %s/ca/%s.crt\n", cfg->public_url, srv->issuers[i].conf->name);
    }
    printf("  certs:     %s/certs/<issuer>/<serial-hex>.crt\n", cfg->public_url);
    if (cfg->directory.enabled)
        printf("  directory: %s/directory  (search, certificate pages, status check)\n",
               cfg->public_url);
    for (int i = 0; i < cfg->n_tsa_units; i++)
        printf("  TSA:       %s%s%s%s  (POST application/timestamp-query)\n", cfg->public_url,
               cfg->tsa.path, i == 0 ? "" : "/", i == 0 ? "" : cfg->tsa_units[i].name);
    printf("  health:    http://%s:%d/healthz  /readyz\n", cfg->http.listeners[0].host,
           http_server_port(srv->http, 0));
    printf("  admin:     %s://%s:%d/admin/  (/metrics)%s\n",
           cfg->admin.tls_cert[0] ? "https" : "http", cfg->http.listeners[1].host,
           http_server_port(srv->http, 1),
           cfg->admin.client_ca[0] ? "  client certificates accepted" : "");
    printf("  data:      %s\n", cfg->data_dir);
    fflush(stdout);

    rc = http_server_run(srv->http);
    status = rc == UTIL_OK ? 0 : 1;
    UTIL_INFO(MOD, "stopped");
out:
    if (rc != UTIL_OK && status != 0)
        UTIL_ERROR(MOD, "pkiva cannot serve: %s", util_strerror(rc));
    cli__service_stop(srv->service); /* STOPPING=1 first; it reads what is stopped below */
    /* The feed first (it delivers what was committed up to now), then the publisher (it
     * publishes what is pending), while the HSM and the keys are still there. */
    feed_stop(srv->feed);
    /* Order matters: nothing may sign once keys are freed, and keys go before the hsm. */
    ocsp_responder_stop(srv->ocsp);
    crl_publisher_stop(srv->crl);
    tsa_service_stop(srv->tsa);
    http_server_free(srv->http);
    admin_free(srv->admin);
    directory_free(srv->directory);
    ocsp_responder_free(srv->ocsp);
    crl_publisher_free(srv->crl);
    tsa_service_free(srv->tsa);
    /* Nothing writes audit records any more: the last seal, while the key still exists. */
    cli__audit_sealer_stop(srv->sealer);
    close_issuers(srv);
    store_close(srv->store);
    hsm_close(srv->hsm);
    feed_free(srv->feed);
    free(srv);
    return status;
}

static const char serve_help[] =
    "usage: pkiva serve [--data DIR] [--alg ALG] [--listen HOST:PORT] [--admin-listen HOST:PORT]\n"
    "                   [--public-url URL]\n"
    "       pkiva serve --config FILE\n\n"
    "Without --config, creates on first run (or reuses) the embedded default in DIR (default\n"
    "./var): a SoftHSM2 token, a demo PKI signed in it, the store and DIR/pkiva.conf; then "
    "serves.\n"
    "ALG: ec-p256 (default), ec-p384, rsa-2048, rsa-3072 (first run only).\n"
    "--listen/--admin-listen: default 127.0.0.1:8080 / 127.0.0.1:8081 (first run: written into\n"
    "the certificates' URLs; later runs: override the config).\n";

static int demo_and_config(int argc, char **argv, int serve)
{
    static const struct option opts[] = {{"data", required_argument, NULL, 'd'},
                                         {"config", required_argument, NULL, 'c'},
                                         {"alg", required_argument, NULL, 'a'},
                                         {"listen", required_argument, NULL, 'l'},
                                         {"admin-listen", required_argument, NULL, 'L'},
                                         {"public-url", required_argument, NULL, 'u'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct cli_demo_options demo;
    struct cli_config *cfg = NULL;
    const char *config = NULL;
    const char *listen = NULL, *admin_listen = NULL;
    char path[CLI_PATH_MAX + 16];
    int opt, created = 0, status = 1;

    cli_demo_defaults(&demo);
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'd': (void)snprintf(demo.data_dir, sizeof(demo.data_dir), "%s", optarg); break;
        case 'c': config = optarg; break;
        case 'a': (void)snprintf(demo.alg, sizeof(demo.alg), "%s", optarg); break;
        case 'l':
            listen = optarg;
            (void)snprintf(demo.public_listen, sizeof(demo.public_listen), "%s", optarg);
            break;
        case 'L':
            admin_listen = optarg;
            (void)snprintf(demo.admin_listen, sizeof(demo.admin_listen), "%s", optarg);
            break;
        case 'u': (void)snprintf(demo.public_url, sizeof(demo.public_url), "%s", optarg); break;
        case 'h': fputs(serve_help, stdout); return 0;
        default: fputs(serve_help, stderr); return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "pkiva: unexpected argument '%s'\n%s", argv[optind], serve_help);
        return 2;
    }
    if (config == NULL) {
        if (cli_demo_init_blocking(&demo, &created) != UTIL_OK)
            return 1;
        (void)snprintf(path, sizeof(path), "%s/pkiva.conf", demo.data_dir);
        config = path;
    }
    if (!serve)
        return 0;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (cli__load_config(config, NULL, cfg) != 0)
        goto out;
    /* Command-line listeners override the file on later runs. */
    if ((listen != NULL && cli_parse_listen(listen, &cfg->http.listeners[0]) != UTIL_OK) ||
        (admin_listen != NULL &&
         cli_parse_listen(admin_listen, &cfg->http.listeners[1]) != UTIL_OK)) {
        fprintf(stderr, "pkiva: --listen/--admin-listen take HOST:PORT\n");
        goto out;
    }
    status = cli_serve(cfg);
out:
    free(cfg);
    return status;
}

int cli__cmd_serve(int argc, char **argv)
{
    return demo_and_config(argc, argv, 1);
}

int cli__init_demo(int argc, char **argv)
{
    return demo_and_config(argc, argv, 0);
}
