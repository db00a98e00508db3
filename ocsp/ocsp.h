/* SPDX-License-Identifier: Apache-2.0 */
/* ocsp: the OCSP responder (RFC 6960, the RFC 9919 lightweight profile, RFC 9654 nonces). It keeps
 * the status of every certificate of its issuers in a compact in-memory index, pre-signs one
 * response per certificate ahead of time in the HSM, serves them by reference from GET and POST,
 * signs live only what cannot be cached (nonces, several CertIDs, first miss), and re-signs at once
 * when the change feed says a certificate was revoked.
 *
 * Life cycle (start-up thread unless said otherwise):
 *   ocsp_responder_new -> ocsp_responder_load_blocking -> ocsp_responder_register (before
 *   http_server_start) -> ocsp_responder_start -> ... ocsp_responder_apply_change (feed thread) ...
 *   -> ocsp_responder_stop -> (http server stopped, hsm closed) -> ocsp_responder_free. */
#ifndef PKIVA_OCSP_H
#define PKIVA_OCSP_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

struct hsm;
struct hsm_key;
struct http_server;
struct store;
struct store_change;
struct ocsp_responder;

/* ---- configuration -------------------------------------------------------------------------- */

enum ocsp_unknown_policy {
    OCSP_UNKNOWN_STATUS = 0,     /* answer "unknown" (default) */
    OCSP_UNKNOWN_EXTENDED_REVOKE /* RFC 6960 §2.2: revoked, certificateHold, revocationTime
                                    1970-01-01, responseExtension id-pkix-ocsp-extended-revoke */
};
enum ocsp_responder_id { OCSP_RESPID_BY_KEY = 0, OCSP_RESPID_BY_NAME = 1 };

#define OCSP_MAX_PREFIXES 8
#define OCSP_MAX_ISSUERS 1024

/* Largest DER request accepted by GET (after base64 decoding) and by POST. GET: RFC 9919 suggests
 * 255 octets for one CertID without nonce; 2 KiB still fits ten SHA-256 CertIDs and a 128-octet
 * nonce. POST: 64 KiB also fits signed requests carrying a certificate chain. */
#define OCSP_GET_DER_MAX 2048
#define OCSP_POST_DER_MAX 65536

/* Every field has a default from ocsp_config_default; comments give it. */
/* The [ocsp] directives are declared once, in the table in ocsp_config.c (name, kind, limits,
 * default, doc line): ocsp_config_default applies its defaults, the configuration reader parses with it,
 * and conf/pkiva.conf documents the same defaults (checked by tests/cli/config_test.c). */
#define OCSP_PATH_MAX 64
struct ocsp_config {
    /* thisUpdate -> nextUpdate of every response ([ocsp] validity). The default 0 means derived
     * (half of [revocation] deadline, filled in by the configuration reader); the responder
     * refuses less than 60 s, so it must be set before ocsp_responder_new. */
    int64_t validity_seconds;
    /* Re-sign a response once this much of its validity has passed (default 50 %; not a
     * directive). */
    int refresh_percent;
    /* HTTP Cache-Control max-age cap ([ocsp] max_age; 0 = derived, min(1h, validity)); the
     * value sent is min(cap, nextUpdate - now), never below 0. */
    int64_t max_age_seconds;
    /* The cap for an answer whose status is unknown ([ocsp] unknown_max_age, default 60 s): a
     * certificate asked about between its issuance and its registration turns good within a
     * second of `pkiva import`, and an HTTP cache must not serve "unknown" for an hour after. */
    int64_t unknown_max_age_seconds;
    int max_certids;    /* CertIDs per request; more -> malformedRequest */
    int unknown_policy; /* enum ocsp_unknown_policy ([ocsp] unknown_serials) */
    /* Live signatures (nonce, several CertIDs, serials not in the index) in flight at most, all
     * loops together. Kept below the HSM queue so that a nonce flood cannot starve pre-signing
     * and cache misses. Past it: tryLater, or with nonce_overflow_cached = 1 a single CertID gets
     * the pre-signed response without nonce (RFC 9654 lets a responder omit it). */
    int nonce_queue_max;
    int nonce_overflow_cached; /* not a directive: 0 */
    /* Bytes of cached signed responses ([ocsp] cache_max). Past it the sweeper evicts responses
     * not used recently (CLOCK, an approximation of LRU), good/unknown before revoked; evicted
     * ones are signed again on demand and the pre-signer stops adding new ones until there is
     * room. */
    size_t cache_max_bytes;
    /* Seconds; 0 = off. When set, singleExtensions carry archiveCutoff = producedAt - this and
     * expired certificates are answered for ever. */
    int64_t archive_cutoff_seconds;
    /* Seconds after notAfter a certificate is still answered authoritatively; later the unknown
     * policy applies. 0 = for ever. Ignored when archive_cutoff_seconds is set. */
    int64_t expired_retention_seconds;
    /* The URL path prefix served ([ocsp] path), used when n_prefixes is 0. */
    char path[OCSP_PATH_MAX];
    /* Several URL path prefixes instead (tests), each starting with '/'; n_prefixes 0 (the
     * default) = path alone. Pointers must stay valid until ocsp_responder_register returned
     * (they are copied). */
    const char *prefixes[OCSP_MAX_PREFIXES];
    int n_prefixes;
    int responder_id; /* enum ocsp_responder_id ([ocsp] responder_id) */
    /* Pre-signer: responses signed per HSM job (default 32; not a directive). One job runs at a
     * time, so pre-signing never occupies more than one HSM session. */
    int presign_batch;
    /* Called on the pre-signer thread when every change with feed id <= feed_id is visible in
     * served responses (see ocsp_responder_visible_feed_id). Optional; must not block long. */
    void (*on_visible)(void *ctx, int64_t feed_id);
    void *on_visible_ctx;
};
/* The defaults of every field: the [ocsp] table's, and the module's for the others. */
void ocsp_config_default(struct ocsp_config *cfg);
/* The [ocsp] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *ocsp_config_directives(size_t *n);

/* One issuing CA served. The responder keeps the pointers: cert, signer_cert and signer_key must
 * outlive it (the caller frees them after ocsp_responder_free). */
struct ocsp_issuer_config {
    const char *name;        /* for logs and metrics (copied) */
    int64_t store_issuer_id; /* the issuer's id in the store */
    X509 *cert;              /* the issuing CA certificate */
    /* Delegated responder certificate (EKU id-kp-OCSPSigning, issued by cert), or NULL when the CA
     * signs its own responses (then the signer certificate is cert and it is not sent in certs). */
    X509 *signer_cert;
    struct hsm_key *signer_key; /* the key of signer_cert (or of cert) */
    int ignore_nonce;           /* 1: answer nonce requests with the pre-signed response */
};

/* ---- life cycle ----------------------------------------------------------------------------- */

/* Validates cfg and issuers (signer key matches signer cert, a delegated signer is issued by its CA
 * and carries id-kp-OCSPSigning), computes the CertID hashes (SHA-1 and SHA-256) of every issuer,
 * and allocates the index. hsm may be NULL only in unit tests that never sign through it. Copies cfg
 * and the issuer array. Returns 0 and *out, UTIL_ECONFIG (logged) or UTIL_ENOMEM. */
int ocsp_responder_new(const struct ocsp_config *cfg, const struct ocsp_issuer_config *issuers,
                       int n_issuers, struct hsm *hsm, struct ocsp_responder **out);
/* After ocsp_responder_stop, after the http server stopped and after hsm_close (no signing job may
 * still run). NULL-safe. */
void ocsp_responder_free(struct ocsp_responder *resp);

/* Loads the status of every certificate of the configured issuers (start-up thread, store is that
 * thread's connection). *feed_head_out (may be NULL) receives the change-feed id read BEFORE the
 * walk: the change poller starts after it; changes it re-delivers are idempotent. */
int ocsp_responder_load_blocking(struct ocsp_responder *resp, struct store *store,
                                 int64_t *feed_head_out);

/* Routes GET and POST on HTTP_PUBLIC under every configured prefix, and per-loop hooks that open a
 * port on the hsm pool on each loop. Before http_server_start. */
int ocsp_responder_register(struct ocsp_responder *resp, struct http_server *srv);

/* Starts / stops the pre-signer thread. stop is idempotent and NULL-safe. */
int ocsp_responder_start(struct ocsp_responder *resp);
void ocsp_responder_stop(struct ocsp_responder *resp);

/* Applies one change (issue/revoke/unrevoke) of a configured issuer; changes of other issuers are
 * ignored (0). Any thread. The stale response of the certificate is dropped before this returns, so
 * it is never served again; the pre-signer re-signs it at once. Changes must come in feed order;
 * a change with an id not above the certificate's last applied one is a re-delivery: 0, no effect.
 * UTIL_EBUSY when the re-sign backlog is full: nothing was changed, deliver the change again later.
 * UTIL_ENOMEM likewise. */
int ocsp_responder_apply_change(struct ocsp_responder *resp, const struct store_change *change);

/* The highest feed id F such that every change with id <= F applied so far is served: the affected
 * responses were re-signed with the new status and are in the cache. Any thread, lock-free. */
int64_t ocsp_responder_visible_feed_id(const struct ocsp_responder *resp);

/* A certificate's status as the responder's index holds it right now (what OCSP answers). */
struct ocsp_cert_status {
    int status; /* STORE_GOOD / STORE_REVOKED */
    int reason; /* enum store_reason */
    int64_t revoked_at;
    int64_t invalidity_date; /* 0 = none */
    int64_t not_after;
};
/* Looks (issuer, serial) up in the index. Returns 1 and *out when the index has it, 0 when not
 * (an unknown serial, an issuer not served). Any thread; takes one shard lock briefly, never
 * blocks on I/O, signs nothing. For the public directory's "status right now". */
int ocsp_responder_cert_status(struct ocsp_responder *resp, int64_t store_issuer_id,
                               const unsigned char *serial, size_t serial_len,
                               struct ocsp_cert_status *out);

/* ---- metrics -------------------------------------------------------------------------------- */

struct ocsp_stats {
    uint64_t requests_get, requests_post;
    /* Outcome of each answered request (a request with several CertIDs counts its worst status). */
    uint64_t good, revoked, unknown;
    uint64_t malformed, unauthorized, try_later, internal_error;
    uint64_t not_modified;                   /* 304 */
    uint64_t bad_content_type;               /* 415 */
    uint64_t served_cached;                  /* answered from a pre-signed response */
    uint64_t signed_live;                    /* nonce, several CertIDs, unknown serials */
    uint64_t signed_miss;                    /* cache misses signed on demand */
    uint64_t nonce_requests, nonce_rejected; /* rejected: nonce queue full */
    uint64_t presigned, presign_errors;
    uint64_t cache_evictions;
    uint64_t index_entries;
    uint64_t cache_entries, cache_bytes;
    uint64_t presign_backlog; /* responses due found by the last sweep + urgent re-signs queued */
    uint64_t presign_failing; /* entries whose signature keeps failing, retried with back-off */
    int64_t visible_feed_id;
};
void ocsp_stats_get(const struct ocsp_responder *resp, struct ocsp_stats *out);
/* The OCSP section of /metrics (Prometheus text, pkiva_ocsp_*; responses labelled status=) into
 * buf (NUL-terminated). Returns the length written, or UTIL_EINVAL when buf is too small. Any
 * thread, does not block. */
int ocsp_metrics(const struct ocsp_responder *resp, char *buf, size_t len);

/* ---- pure helpers (exposed for tests and fuzzers) ------------------------------------------- */

/* Decodes the last path segment(s) of an OCSP GET (RFC 6960 Appendix A.1, RFC 9919 §5): the
 * URL-encoded base64 of the DER request. Tolerates leading and doubled leading slashes, '%XX'
 * escapes in any case (%2F, %2B, %3D), unescaped '/' and '+', ' ' or "%20" standing for '+'
 * (form-encoding clients), the base64url alphabet, missing '=' padding, and a query string (cut).
 * in need not be NUL-terminated. Writes at most out_max bytes. Returns the DER length (> 0) or
 * UTIL_EINVAL (not base64 / empty / longer than out_max). */
int ocsp_get_path_decode(const char *in, size_t in_len, unsigned char *out, size_t out_max);

#endif
