/* SPDX-License-Identifier: Apache-2.0 */
/* crl: full and delta CRLs (RFC 5280 v2) per issuer, signed with the issuer's CA key in the HSM,
 * regenerated periodically, shortly after revocations (coalesced) and on demand; published
 * atomically as files (<publish_dir>/<issuer>.crl, <issuer>-delta.crl), saved in the store's CRL
 * history and served over HTTP at /crl/<issuer>.crl and /crl/<issuer>-delta.crl. Also the
 * certificate repository: /certs/<issuer>/<serial-hex>.crt serves the stored certificate DER.
 *
 * CRLs are built as DER by a streaming writer (not OpenSSL's generic ASN.1, too slow and too
 * memory-hungry for millions of entries), the TBSCertList is hashed on the publisher thread and only
 * the digest is signed on an HSM signing thread.
 *
 * Life cycle of the server part (start-up thread unless said otherwise):
 *   crl_publisher_new -> crl_publisher_register (before http_server_start) -> crl_publisher_start
 *   -> ... crl_publisher_apply_change (feed thread), crl_publish_now (any thread) ...
 *   -> crl_publisher_stop -> (http server freed) -> crl_publisher_free -> hsm_close.
 * The CLI (`pkiva crl publish` while the server is not running) uses crl_publish_blocking. */
#ifndef PKIVA_CRL_H
#define PKIVA_CRL_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <util/util.h>

struct hsm;
struct hsm_key;
struct http_server;
struct store;
struct store_change;
struct crl_publisher;

#define CRL_MAX_ISSUERS 1024

/* ---- configuration -------------------------------------------------------------------------- */

/* The [crl] section of the configuration file as read (crl_config.c declares each directive once:
 * name, kind, limits, default, doc line). The timing directives left 0 are derived from
 * [revocation] deadline by the configuration reader (feed_contract_defaults). */
#define CRL_SETTING_MAX 512
#define CRL_COALESCE_MAX_MS 60000 /* a revocation must reach a CRL within a minute */
#define CRL_LEASE_MIN_MS 2000     /* [crl] lease: well above the publisher's 1 s renewal turn */
#define CRL_LEASE_MAX_MS 3600000
struct crl_settings {
    char publish_dir[CRL_SETTING_MAX]; /* "" = <data_dir>/crl */
    int deltas;
    int64_t validity_s;
    int64_t delta_validity_s;
    int64_t interval_s;
    int coalesce_ms;
    int lease_ms;
    int full_on_change;
    int64_t expired_retention_s;
    int64_t expired_on_crl_since; /* unix seconds; 0 = off */
    int64_t max_age_s;
};
/* Fills s with the table's defaults. */
void crl_settings_default(struct crl_settings *s);
/* The [crl] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *crl_settings_directives(size_t *n);

/* Every field has a default from crl_config_default: for deltas, coalesce_ms, full_on_change and
 * expired_retention_seconds the [crl] table's, for the others the comment gives it. Strings are
 * copied by crl_publisher_new; crl_publish_blocking only reads them during the call. */
struct crl_config {
    /* Folder the DER files are written to (atomically: temp file, fsync, rename, fsync of the
     * folder). NULL or "" = no files (HTTP and store history only). Default NULL. */
    const char *publish_dir;
    /* The publisher thread and the certificate repository workers open their own connections to
     * this database. Required for crl_publisher_*; unused by crl_publish_blocking. */
    const char *store_path;
    /* Base URL of the public listener, e.g. "http://127.0.0.1:8080": full CRLs carry a Freshest CRL
     * extension naming <public_url>/crl/<issuer>-delta.crl. Required when deltas = 1. */
    const char *public_url;
    int deltas;                     /* 1: publish delta CRLs too */
    int64_t validity_seconds;       /* thisUpdate -> nextUpdate of full CRLs; default 7 days */
    int64_t delta_validity_seconds; /* same for delta CRLs; default 1 day */
    /* A new full CRL (and delta) at least this often; must be below both validities so that a CRL
     * is always replaced well before its nextUpdate. Default 1 hour. */
    int64_t interval_seconds;
    /* A revocation, hold or hold release reported by crl_publisher_apply_change is published at
     * most this long after it was reported; changes arriving meanwhile join the same publication.
     * At most CRL_COALESCE_MAX_MS. */
    int64_t coalesce_ms;
    /* 1: a change regenerates the full CRL too (1 million entries take well under 2 s);
     * 0: a change produces a new delta only, full CRLs follow interval_seconds (very large CAs). */
    int full_on_change;
    /* Expired certificates stay on the CRL until thisUpdate > notAfter + this, so that each one
     * appears on at least one CRL issued after it expired (RFC 5280 3.3). */
    int64_t expired_retention_seconds;
    /* Long-term validation: when > 0 (unix seconds), certificates that expired at or after this
     * date stay on the CRL for ever and CRLs carry ExpiredCertsOnCRL (2.5.29.60) with this date
     * (RFC 5280 5.2.7 via X.509). Certificates that expired earlier follow the retention above.
     * Default 0 = off. */
    int64_t expired_on_crl_since;
    int64_t max_age_seconds; /* Cache-Control max-age cap; sent: min(cap, nextUpdate - now) */
    int64_t retry_min_ms;    /* back-off after a failed generation: first delay, default 5 s */
    int64_t retry_max_ms;    /* doubling up to this, default 300 s */
    /* Bounds: revoked entries per CRL (default 20 million; past it the generation fails loudly),
     * changes collected for one delta (default 200 000; past it a full CRL is made instead). */
    int64_t max_entries;
    int64_t delta_max_changes;
    /* Certificate repository: store worker threads (default 1) and jobs waiting (default 256,
     * past it 503). */
    int repo_threads;
    int repo_queue_max;
    /* Cluster: the publishing node holds the store's "crl-publisher" lease; a holder whose store
     * connection stays idle this long (hung, stopped) loses it and another node takes over. The
     * publisher renews it at least every second, so it must be well above that: 2 s .. 1 h,
     * default 10 s. Unused on SQLite. */
    int64_t lease_ms;
};
void crl_config_default(struct crl_config *cfg);

/* One issuing CA. The publisher keeps the pointers: cert and key must outlive it. */
struct crl_issuer_config {
    const char *name;        /* URL-safe issuer name ([A-Za-z0-9._-]+), copied */
    int64_t store_issuer_id; /* the issuer's id in the store */
    X509 *cert;              /* the CA certificate: CRL issuer name, AKI keyid = its SKI */
    struct hsm_key *key;     /* the CA's key in the HSM (key->md, key->rsa_pss are honoured) */
};

/* What one generation produced (numbers 0 when not produced). */
struct crl_info {
    int64_t number;                   /* CRL number */
    int64_t base_number;              /* delta: the base CRL's number; 0 for a full CRL */
    int64_t this_update, next_update; /* unix seconds */
    int64_t feed_id; /* change-feed head read before the walk: every change <= it is in */
    int64_t entries; /* revokedCertificates entries (delta: incl. removeFromCRL) */
    size_t der_len;
    int64_t build_ms; /* walk + DER + hash + HSM signature */
};

/* ---- standalone (CLI, benchmark) ------------------------------------------------------------ */

/* Builds and signs a full CRL of issuer from store: reserves the next CRL number (durably, before
 * signing), reads the feed head, walks the revoked certificates and signs on an hsm signing thread
 * (hsm_run_sync). Saves and publishes nothing. *der_out is a new blob the caller unrefs. Must not
 * run on a loop thread. */
int crl_generate_blocking(const struct crl_config *cfg, const struct crl_issuer_config *issuer,
                          struct hsm *hsm, struct store *store, struct util_blob **der_out,
                          struct crl_info *info_out);

enum crl_what { CRL_FULL = 1, CRL_DELTA = 2, CRL_BOTH = 3 };

/* Generates what (CRL_BOTH: a full CRL, then the delta against it; CRL_DELTA alone: against the
 * latest full CRL in the store, UTIL_ENOTFOUND if none), saves each in the store's history with
 * its audit record (actor), writes the file(s) atomically into cfg->publish_dir, and marks the
 * revocation deadline rows of the issuer (STORE_SLA_CRL) up to the feed head read before the walk.
 * full_out / delta_out (may be NULL) receive what was published. For `pkiva crl publish` when no
 * server runs (a running server would also pick the change up at its next regeneration). */
int crl_publish_blocking(const struct crl_config *cfg, const struct crl_issuer_config *issuer,
                         struct hsm *hsm, struct store *store, int what, const char *actor,
                         struct crl_info *full_out, struct crl_info *delta_out);

/* ---- the publisher (server) ----------------------------------------------------------------- */

/* Validates cfg and the issuers (key matches certificate, names unique and URL-safe), copies them,
 * derives issuer names and key identifiers. Opens nothing. Returns 0 and *out, UTIL_ECONFIG
 * (logged) or UTIL_ENOMEM. Free with crl_publisher_free. */
int crl_publisher_new(const struct crl_config *cfg, const struct crl_issuer_config *issuers,
                      int n_issuers, struct hsm *hsm, struct crl_publisher **out);

/* Loads the latest full and delta CRL of every issuer from the store (store: the caller's start-up
 * connection) so that they are served at once; stale ones are replaced right after start. Optional:
 * crl_publisher_start loads them itself when this was not called. */
int crl_publisher_load_blocking(struct crl_publisher *pub, struct store *store);

/* Routes GET /crl/ and GET /certs/ on HTTP_PUBLIC and per-loop hooks (repository ports); creates
 * the repository's store worker pool (one read-only connection per thread). Before
 * http_server_start. */
int crl_publisher_register(struct crl_publisher *pub, struct http_server *srv);

/* Starts the publisher thread (its own store connection from cfg->store_path; CRLs not loaded yet
 * are loaded there). Stop is idempotent, NULL-safe, waits for a generation in progress to end. */
int crl_publisher_start(struct crl_publisher *pub);
void crl_publisher_stop(struct crl_publisher *pub);

/* After crl_publisher_stop and after the http server was freed (its loops closed the ports), before
 * hsm_close. NULL-safe. */
void crl_publisher_free(struct crl_publisher *pub);

/* A change from the feed. Any thread; cheap (a mutex and a condition signal), never blocks on I/O.
 * Revocations, hold changes and hold releases of a configured issuer mark it dirty with a deadline
 * of now + coalesce_ms (an earlier pending deadline is kept); issues and other issuers: no effect.
 * Always 0. */
int crl_publisher_apply_change(struct crl_publisher *pub, const struct store_change *change);

/* Regenerates at once the full and delta CRL of the issuer called name, or of every issuer when
 * name is NULL. Any thread, does not wait for the result. UTIL_ENOTFOUND for an unknown name. */
int crl_publish_now(struct crl_publisher *pub, const char *name);

/* What crl_publish_wait_blocking reports per issuer. */
struct crl_publish_result {
    char name[64];
    int rc; /* 0 published; else why not (UTIL_ETIMEDOUT: not finished within the timeout) */
    int64_t full_number, full_entries;   /* the CRL served now (entries -1: loaded, not counted) */
    int64_t delta_number, delta_entries; /* 0 / -1 without deltas */
    int64_t elapsed_ms;                  /* the run that published it */
};
/* As crl_publish_now, then waits (at most timeout_ms) until a run that started after the request
 * finished for each issuer concerned: when it returns 0, the new CRLs are the ones served. Fills
 * one result per issuer concerned (max_results >= the number of issuers). Returns 0 when every
 * run finished (each result's rc says whether it published), UTIL_ETIMEDOUT, UTIL_ECLOSED when
 * the publisher stops, UTIL_ENOTFOUND for an unknown name. Blocks: not on a loop thread. */
int crl_publish_wait_blocking(struct crl_publisher *pub, const char *name, int64_t timeout_ms,
                              struct crl_publish_result *results, int max_results, int *n_out);

/* The feed id up to which every issuer's served CRLs reflect every change (the oldest of them;
 * issuers without any CRL yet are left out: they publish at once). INT64_MAX when no issuer has a
 * CRL. For the catch-up at start (feed_subscriber.published_upto). Any thread. */
int64_t crl_publisher_published_upto(struct crl_publisher *pub);

/* ---- metrics -------------------------------------------------------------------------------- */

struct crl_issuer_stats {
    char name[64];
    int64_t full_number, delta_number; /* 0 = none yet */
    int64_t this_update, next_update;  /* of the served full CRL (unix seconds) */
    int64_t delta_this_update;
    size_t full_bytes, delta_bytes;
    int64_t full_entries, delta_entries; /* -1 when loaded from the store (not counted) */
    int64_t last_build_ms;               /* duration of the last full generation */
    uint64_t published, failures;        /* CRLs published / failed generations */
    int failing;                         /* 1 while the last attempt failed */
};
/* Snapshot of issuer i (0 <= i < the number of issuers), UTIL_EINVAL past the last one (so a
 * loop over the issuers ends there). Any thread. */
int crl_publisher_stats(const struct crl_publisher *pub, int i, struct crl_issuer_stats *out);
/* The whole CRL section of /metrics in Prometheus text format into buf (NUL-terminated). Returns
 * the length written, or UTIL_EINVAL when buf is too small. Any thread, does not block. */
int crl_publisher_metrics(const struct crl_publisher *pub, char *buf, size_t len);

#endif
