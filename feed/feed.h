/* SPDX-License-Identifier: Apache-2.0 */
/* feed: the revocation pipeline. One thread follows the store's change feed, whoever wrote it (this
 * server's admin API, `pkiva revoke` or `pkiva import` in another process, a write made while the
 * server was down), hands every change to its subscribers (the OCSP responder, the CRL publisher)
 * in feed order, and keeps the revocation deadline bookkeeping (SLA marks, backlog, alarms). The
 * freshness contract - how late a revocation can reach each kind of conforming client, and how
 * long the HSM may be away before served answers expire - is computed here too.
 *
 * Life cycle (start-up thread unless said otherwise):
 *   feed_new -> feed_start -> ... feed_mark_visible (any thread) ... -> feed_stop -> feed_free.
 * Depends on store/ and util/ only: subscribers are callbacks. */
#ifndef PKIVA_FEED_H
#define PKIVA_FEED_H

#include <stddef.h>
#include <stdint.h>

struct store;
struct store_change;
struct feed;

#define FEED_MAX_ISSUERS 1024
#define FEED_MAX_SUBSCRIBERS 4

/* ---- the pipeline --------------------------------------------------------------------------- */

struct feed_subscriber {
    const char *name; /* for logs (not copied: a string literal) */
    /* Takes one change, on the feed thread, in feed order. 0: taken. Anything else: not taken; the
     * feed stops there and delivers the same change again shortly (to every subscriber: each must
     * treat a re-delivery of a change it took as a no-op). Must not block long. */
    int (*apply)(void *ctx, const struct store_change *change);
    /* Optional. The feed id up to which this subscriber's durable output already reflects every
     * change (the CRL publisher: the oldest of its issuers' latest published CRLs), asked once on
     * the feed thread after feed_start. Changes after it, up to feed_config.start_after, are
     * replayed to apply() before the live feed starts, so that work a stop or a crash left undone
     * is caught up. NULL, or a value >= start_after: nothing to replay (the OCSP index is loaded
     * from the store at start_after). */
    int64_t (*published_upto)(void *ctx);
    void *ctx;
    /* 1: apply() ignores STORE_CHANGE_ISSUE (the CRL publisher: a good certificate is on no CRL),
     * so the start-up replay reads only the other changes (STORE_FEED_SKIP_ISSUE): its cost
     * follows the revocations since published_upto, not the registrations. The live feed still
     * hands it every change. */
    int skip_issue;
};

#define FEED_NODE_NAME_MAX 128 /* [store] node_name, with its NUL */

/* The feed's directives of the configuration file as read (feed_config.c declares each once: name,
 * kind, limits, default, doc line): [revocation] (feed_revocation_directives) and [store]
 * feed_poll (feed_store_directives). Both tables set fields of struct feed_settings. */
struct feed_settings {
    int poll_ms;           /* [store] feed_poll */
    int64_t deadline_s;    /* [revocation] deadline */
    int64_t warn_s;        /* [revocation] warn_before */
    unsigned out_of_scope; /* [revocation] out_of_scope: bits (1u << enum feed_client) */
    int max_feed_lag_ms;   /* [store] max_feed_lag: /readyz 503 past it; older reports: not live */
    char node_name
        [FEED_NODE_NAME_MAX]; /* [store] node_name: this node in the store; "" = <hostname>:<port> */
};
void feed_settings_default(struct feed_settings *s);
struct util_conf_directive;
const struct util_conf_directive *feed_revocation_directives(size_t *n);
const struct util_conf_directive *feed_store_directives(size_t *n);

struct feed_config {
    const char *store_path; /* the feed opens its own connection (copied) */
    int poll_ms; /* read the feed at least this often (inotify on the database wakes it sooner) */
    /* The feed id the status index was loaded at (ocsp_responder_load_blocking): live delivery
     * starts after it, and every revocation up to it is marked visible in OCSP at start. */
    int64_t start_after;
    const int64_t *issuer_ids; /* the configured issuers' store ids (copied) */
    int n_issuers;
    int64_t deadline_s; /* [revocation] deadline: received -> in a published CRL */
    int64_t warn_s;     /* [revocation] warn_before: log when this close to the deadline */
    const struct feed_subscriber *subscribers; /* copied */
    int n_subscribers;
    /* Optional, called on the feed thread about once per turn, for the caller's periodic checks
     * (certificate expiry warnings). Must not block long. */
    void (*tick)(void *ctx);
    void *tick_ctx;
    /* The cluster-wide SLA (issue 16). node_name (copied; NULL or "": no reports) names this node
     * in the store's node rows, where the feed thread reports the feed id visible in OCSP at least
     * every FEED_REPORT_MS. live_ms: a node whose last report is older is not live. OCSP SLA marks
     * are written only up to the lowest position of the live nodes, so a revocation counts as
     * visible in OCSP once every live node answers it. */
    const char *node_name;
    int64_t live_ms;
};

#define FEED_REPORT_MS 1000

/* Validates and copies cfg; opens nothing. Returns 0 and *out, UTIL_EINVAL or UTIL_ENOMEM. Free
 * with feed_free. */
int feed_new(const struct feed_config *cfg, struct feed **out);
/* Starts the feed thread: catch-up replay, OCSP SLA marks up to start_after, then the live feed.
 * Once; UTIL_ENOMEM if the thread cannot start. */
int feed_start(struct feed *feed);
/* Graceful stop: delivers every change committed before the call (one last read of the feed; a
 * store that cannot be read leaves it to the catch-up of the next start), then joins the thread.
 * Call before stopping the subscribers. Idempotent, NULL-safe. */
void feed_stop(struct feed *feed);
void feed_free(struct feed *feed); /* after feed_stop; NULL-safe */

/* Every change with id <= feed_id is now visible in served OCSP responses. Any thread, cheap (a
 * mutex); the feed thread writes the SLA marks. */
void feed_mark_visible(struct feed *feed, int64_t feed_id);

struct feed_stats {
    int store_ok;              /* 0 while the store cannot be read (/readyz) */
    int64_t head;              /* highest feed id seen in the store */
    int64_t applied;           /* highest feed id taken by every subscriber */
    int64_t visible;           /* highest feed id visible in OCSP */
    int caught_up;             /* 1 once the start-up replay is done */
    int backlog;               /* revocations not yet in a published CRL */
    int past_deadline;         /* of them, past the deadline */
    int64_t oldest_pending_ms; /* age of the oldest of them (received -> now), 0 if none */
    /* How long ago the feed last confirmed it had applied everything committed: the start of its
     * last turn that read the head and delivered up to it (or feed_new). Grows while the feed is
     * behind, blocked, or stuck on an unresponsive store connection (/readyz). */
    int64_t lag_ms;
    int64_t node_id; /* this node's row in the store (0 until the first report) */
};
void feed_stats_get(const struct feed *feed, struct feed_stats *out);
/* The feed and revocation section of /metrics (Prometheus text) into buf. Returns the length
 * written, or UTIL_EINVAL when buf is too small. Any thread. */
int feed_metrics(const struct feed *feed, char *buf, size_t len);

/* ---- the freshness contract ----------------------------------------------------------------- */

/* The conforming clients a revocation must reach within the deadline. */
enum feed_client {
    FEED_CLIENT_OCSP_NEXT_UPDATE = 0, /* caches an OCSP response until its nextUpdate (RFC 9919,
                                         stapling servers, Windows CryptoAPI) */
    FEED_CLIENT_OCSP_MAX_AGE,         /* an HTTP cache honouring Cache-Control max-age */
    FEED_CLIENT_CRL,                  /* full CRLs only, cached until nextUpdate */
    FEED_CLIENT_DELTA_CRL,            /* full + delta CRLs, each cached until its nextUpdate */
    FEED_CLIENT_N
};

struct feed_contract_input {
    int64_t deadline_s;
    int64_t ocsp_validity_s;  /* thisUpdate -> nextUpdate of OCSP responses */
    int ocsp_refresh_percent; /* responses are re-signed once this much of the validity passed */
    int64_t ocsp_max_age_s;   /* Cache-Control max-age cap of OCSP responses */
    int64_t feed_poll_ms;
    int64_t crl_validity_s, crl_delta_validity_s, crl_interval_s, crl_coalesce_ms;
    int crl_deltas, crl_full_on_change;
    unsigned out_of_scope; /* bit (1u << enum feed_client): the operator excluded this class */
};

struct feed_contract {
    int64_t deadline_s;
    int64_t worst_s[FEED_CLIENT_N]; /* -1: not applicable (no delta CRLs) */
    unsigned exceeding;             /* bit per client whose worst case exceeds the deadline */
    unsigned out_of_scope;          /* as given */
    /* How long the HSM may be unreachable before served answers expire, per kind and overall. */
    int64_t ocsp_budget_s, crl_budget_s, delta_budget_s; /* delta: -1 without deltas */
    int64_t outage_budget_s;
};

/* Worst cases, in whole seconds (every term rounded up):
 *   propagation to OCSP  P = ceil(feed_poll) + 1 (feed read, then re-sign within a second)
 *   ocsp_next_update     = ocsp_validity + P
 *   ocsp_max_age         = min(ocsp_max_age, ocsp_validity) + P
 *   crl                  = crl_validity + (full_on_change ? ceil(coalesce) : interval)
 *   delta_crl            = delta_validity + ceil(coalesce)                     (deltas on)
 * A client fetched its copy just before the revocation and keeps it until it expires; the next
 * copy it fetches carries the revocation. Outage budget: ocsp_validity * (100 - refresh) / 100,
 * crl_validity - interval, delta_validity - interval; the smallest of them. */
void feed_contract_compute(const struct feed_contract_input *in, struct feed_contract *out);
/* "ocsp_next_update", "ocsp_max_age", "crl", "delta_crl"; NULL when out of range. */
const char *feed_client_name(int client);
/* The directive that bounds the client's worst case, e.g. "[ocsp] validity". */
const char *feed_client_directive(int client);
/* Parses a comma-separated list of client names into bits; UTIL_EINVAL on an unknown name. */
int feed_client_parse_list(const char *list, unsigned *bits);

/* Defaults derived from the deadline so that every client class stays inside it with half of it
 * to spare (room for one failed refresh): validities deadline / 2, the CRL interval
 * min(1 h, validity / 4), max-age caps min(1 h, validity). */
struct feed_contract_defaults {
    int64_t ocsp_validity_s, ocsp_max_age_s;
    int64_t crl_validity_s, crl_delta_validity_s, crl_interval_s, crl_max_age_s;
};
void feed_contract_defaults(int64_t deadline_s, struct feed_contract_defaults *out);

/* One line for logs: "deadline 43200 s: ocsp_next_update 21602 s, ... ; HSM outage budget ...".
 * Returns like snprintf. */
int feed_contract_format(const struct feed_contract *c, char *buf, size_t len);
/* The contract as Prometheus lines (pkiva_revocation_worst_case_seconds{client=...},
 * pkiva_revocation_deadline_seconds, pkiva_hsm_outage_budget_seconds). Returns the length
 * written, or UTIL_EINVAL when buf is too small. */
int feed_contract_metrics(const struct feed_contract *c, char *buf, size_t len);

#endif
