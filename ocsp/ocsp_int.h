/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of the ocsp module: the certificate status index with its cached
 * responses, request parsing, response building and the request plan that the HTTP layer executes.
 * Nothing outside ocsp/ (and its tests) includes this. */
#ifndef PKIVA_OCSP_INT_H
#define PKIVA_OCSP_INT_H

#include "ocsp.h"

#include <openssl/ocsp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <store/store.h>
#include <util/util.h>

#define OCSP_MOD "ocsp"

/* CertID hash algorithms served. SHA-1 and SHA-256 (RFC 9919) are pre-signed: the index keeps one
 * cached response per algorithm below OCSP__N_ALGS. SHA-384 and SHA-512 CertIDs are matched as
 * well and always signed live, bounded like nonce requests: few clients send them, and a cached
 * slot each would cost every certificate in memory two more pointers. */
enum {
    OCSP__SHA1 = 0,
    OCSP__SHA256 = 1,
    OCSP__N_ALGS = 2, /* cached algorithms */
    OCSP__SHA384 = 2,
    OCSP__SHA512 = 3,
    OCSP__N_MATCH_ALGS = 4 /* algorithms whose CertIDs are matched */
};

/* ---- cached responses ----------------------------------------------------------------------- */

/* An immutable signed response and what HTTP needs to serve it. Shared by reference between the
 * index, loop threads and writes in flight; the last unref frees it. */
struct ocsp__cached {
    _Atomic long refs;
    struct util_blob *der;                        /* the whole OCSPResponse */
    int64_t this_update, next_update, refresh_at; /* unix seconds */
    int cert_status;   /* V_OCSP_CERTSTATUS_* of its (single) SingleResponse, for stats */
    char etag[40];     /* quoted, e.g. "\"0123...\"" */
    char headers[192]; /* "Last-Modified: ..\r\nExpires: ..\r\nETag: ..\r\n" */
    size_t headers_len;
};
/* Copies der; computes ETag and header lines. NULL on allocation failure. One reference. */
struct ocsp__cached *ocsp__cached_new(const unsigned char *der, size_t len, int64_t this_update,
                                      int64_t next_update, int64_t refresh_at, int cert_status);
/* The same without ETag and header lines (left ""), for a response served only with
 * "Cache-Control: no-store" to the one client that asked (a nonce's): nobody revalidates it, and
 * hashing it for an ETag cost 5% of a live-signed P-256 answer's CPU (callgrind). */
struct ocsp__cached *ocsp__cached_new_no_store(const unsigned char *der, size_t len,
                                               int64_t this_update, int64_t next_update,
                                               int64_t refresh_at, int cert_status);
struct ocsp__cached *ocsp__cached_ref(struct ocsp__cached *c);
void ocsp__cached_unref(struct ocsp__cached *c);
size_t ocsp__cached_cost(const struct ocsp__cached *c); /* bytes counted against the cache cap */

/* ---- the status index ----------------------------------------------------------------------- */

/* A certificate's status as the index knows it (a copy; no pointers into the index). */
struct ocsp__status {
    int status; /* STORE_GOOD / STORE_REVOKED */
    int reason; /* enum store_reason */
    int64_t revoked_at;
    int64_t invalidity_date; /* 0 = none (RFC 5280 5.3.2, sent as a singleExtension) */
    int64_t not_after;
    int64_t feed_id; /* version: id of the last change applied (or loaded) */
    /* put: the second the change was applied (at load: of the store's latest change), kept for
     * ocsp__index_ims_ok; lookups do not fill it. */
    int64_t changed_sec;
};

struct ocsp__index;

/* max_bytes: cache cap over all shards. */
int ocsp__index_new(size_t max_bytes, struct ocsp__index **out);
void ocsp__index_free(struct ocsp__index *idx);

/* Inserts or updates (issuer, serial). Unless force, an update whose feed_id is not above the
 * stored one is a re-delivery and changes nothing (*changed = 0). A change drops both cached
 * responses of the entry before the shard lock is released. */
int ocsp__index_put(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                    size_t serial_len, const struct ocsp__status *st, int force, int *changed);
/* The load's bulk insert: appends n items (the status of each as ocsp__index_put would set it)
 * without entering them in the shards' tables, grouped by shard with one lock per group; the
 * tables catch up once, sized for the final count, in ocsp__index_build (or at the next use of a
 * shard). Faster than a put per certificate: no probe, no table growth. The keys must be new and
 * distinct (the store's primary key makes them so); items with a serial or issuer no
 * certificate has are skipped. Returns 0 or UTIL_ENOMEM. */
struct ocsp__put_item {
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int issuer;
    struct ocsp__status st;
};
int ocsp__index_append_many(struct ocsp__index *idx, const struct ocsp__put_item *items, size_t n);
/* Enters appended items in the tables of the shards part, part + parts, ... (so that several
 * threads can share the work). Returns 0 or UTIL_ENOMEM. */
int ocsp__index_build(struct ocsp__index *idx, unsigned part, unsigned parts);
/* Returns 1 and *st when found (and *cached = a new reference to the response for alg, or NULL),
 * 0 when not. Marks the entry recently used. */
int ocsp__index_lookup(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int alg, struct ocsp__status *st,
                       struct ocsp__cached **cached);
/* If-Modified-Since may earn a 304 for an entry's response with this thisUpdate unless it lies in
 * the OCSP__IMS_WINDOW seconds up to the entry's last change (or noted answer): a response of
 * another status may then have been handed out with the same Last-Modified second. 1 also when
 * the entry is unknown. */
#define OCSP__IMS_WINDOW 16
int ocsp__index_ims_ok(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int64_t this_update);
/* Notes that a response with this thisUpdate and a status the entry no longer has was handed out
 * (a live answer signed from the state before a change). */
void ocsp__index_note_changed(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                              size_t serial_len, int64_t sec);
/* Installs c for alg if the entry still has feed_id (else the response is stale: returns 0). Takes
 * its own reference. May evict other responses of the shard to stay under the cap. */
int ocsp__index_install(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                        size_t serial_len, int alg, int64_t feed_id, struct ocsp__cached *c);

/* Work item for the pre-signer. */
struct ocsp__due {
    int issuer;
    int alg;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    struct ocsp__status st;
};
struct ocsp__scan {
    size_t shard, slot; /* cursor, kept between calls */
    int wrapped;        /* set when the cursor went past the last shard */
};
/* Collects up to max entries needing a signature: a cached response whose refresh_at <= now, or
 * (allow_new) no SHA-1 response yet. Entries with not_after < skip_expired_before are skipped.
 * Continues from scan's cursor. Returns the number collected. */
size_t ocsp__index_collect_due(struct ocsp__index *idx, struct ocsp__scan *scan, int64_t now,
                               int allow_new, int64_t skip_expired_before, struct ocsp__due *out,
                               size_t max);
struct ocsp__index_counts {
    uint64_t entries, cached, bytes, evictions;
};
void ocsp__index_counts(struct ocsp__index *idx, struct ocsp__index_counts *out);
size_t ocsp__index_max_bytes(const struct ocsp__index *idx);

/* Loads every certificate of the responder's issuers from the store into its index (ocsp_load.c),
 * each with changed_sec as the second of its last change. Blocks; start-up only. Returns 0,
 * UTIL_ENOMEM or the store's error. */
int ocsp__load_blocking(struct ocsp_responder *resp, struct store *store, int64_t changed_sec);

/* A small direct-mapped cache of responses for serials the index does not answer (unknown or past
 * retention), so a client polling an unknown serial costs one signature per validity, not one per
 * request. An attacker walking random serials only churns its slots. */
struct ocsp__cached *ocsp__recent_get(struct ocsp__index *idx, int issuer, int alg,
                                      const unsigned char *serial, size_t serial_len);
uint64_t ocsp__recent_gen(struct ocsp__index *idx); /* read when planning, pass to put */
void ocsp__recent_put(struct ocsp__index *idx, int issuer, int alg, const unsigned char *serial,
                      size_t serial_len, struct ocsp__cached *c, uint64_t gen);
void ocsp__recent_drop(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len);

/* ---- requests ------------------------------------------------------------------------------- */

struct ocsp__reqid {
    OCSP_CERTID *cid;               /* borrowed from the parsed request; NULL from the plain path */
    int alg;                        /* OCSP__SHA1 .. OCSP__SHA512, -1 = other hash */
    const unsigned char *name_hash; /* borrowed */
    const unsigned char *key_hash;  /* borrowed */
    size_t name_hash_len, key_hash_len;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    const unsigned char *cid_der; /* plain path: the CertID TLV in the request; else NULL */
    size_t cid_der_len;
};

#define OCSP__NONCE_MIN 1
#define OCSP__NONCE_MAX 128

struct ocsp__parsed {
    OCSP_REQUEST *req; /* owned; ocsp__parsed_cleanup frees */
    int status;        /* OCSP_RESPONSE_STATUS_SUCCESSFUL or _MALFORMEDREQUEST */
    int n;
    struct ocsp__reqid *ids; /* n entries, owned */
    X509_EXTENSION *nonce;   /* borrowed from req; NULL when absent */
    size_t nonce_len;        /* length of the nonce value */
    /* Plain path: the nonce Extension's TLV in the request (nonce and req are NULL), or NULL. */
    const unsigned char *nonce_der;
    size_t nonce_der_len;
    struct ocsp__reqid one; /* ids of a plain request */
};
/* Parses a DER OCSPRequest. Protocol problems are data: out->status = MALFORMEDREQUEST (bad DER,
 * trailing bytes, no or more than max_certids CertIDs, a CertID hashAlgorithm with parameters
 * other than absent or NULL, serial longer than STORE_SERIAL_MAX, nonce outside 1..128 octets). Returns 0, or UTIL_ENOMEM. Always run ocsp__parsed_cleanup. */
int ocsp__request_parse(const unsigned char *der, size_t len, int max_certids,
                        struct ocsp__parsed *out);
/* The common request (one SHA-1 or SHA-256 CertID, no extension but a nonce, strict DER) read in
 * place (see the DESIGN comment in ocsp_req.c): 1 with *out filled as ocsp__request_parse would
 * (status successful, n 1, ids the inline one with cid NULL, the nonce as nonce_der; every
 * pointer into der), 0 when the request has any other shape (nothing concluded: not malformed).
 * Run ocsp__parsed_cleanup either way. */
int ocsp__request_parse_plain(const unsigned char *der, size_t len, struct ocsp__parsed *out);
/* ocsp__request_parse, the plain path first: a plain request gives one id whose cid is NULL (its
 * answer carries the server's own CertID, see ocsp__plan_request); any other goes to
 * ocsp__request_parse. */
int ocsp__request_parse_fast(const unsigned char *der, size_t len, int max_certids,
                             struct ocsp__parsed *out);
void ocsp__parsed_cleanup(struct ocsp__parsed *p);

/* DER INTEGER content octets -> ASN1_INTEGER (caller frees), NULL on error. */
ASN1_INTEGER *ocsp__serial_to_asn1(const unsigned char *serial, size_t len);

/* ---- responses ------------------------------------------------------------------------------ */

struct ocsp__single {
    OCSP_CERTID *cid; /* owned by whoever owns the array (ocsp__single_cleanup) */
    /* When cid is NULL: the CertID's DER as the client sent it (strict DER, from the plain path),
     * borrowed; the response repeats these bytes. */
    const unsigned char *cid_der;
    size_t cid_der_len;
    int cert_status; /* V_OCSP_CERTSTATUS_GOOD/REVOKED/UNKNOWN */
    int reason;      /* enum store_reason; NONE/UNSPECIFIED are omitted */
    int64_t revoked_at;
    int64_t invalidity_date; /* revoked: RFC 6960 4.4.7 CRL entry extension, 0 = none */
    int extended_revoke;     /* the unknown-as-revoked answer of RFC 6960 §2.2 */
};
void ocsp__single_cleanup(struct ocsp__single *s);

struct ocsp__build {
    X509 *signer_cert;
    int include_signer; /* delegated responder: put its certificate in certs */
    int by_name;        /* ResponderID byName instead of byKey */
    const struct ocsp__single *singles;
    int n;
    int64_t this_update, next_update;
    int64_t archive_cutoff_seconds; /* archiveCutoff = this_update - this; 0 = no extension */
    OCSP_REQUEST *nonce_from;       /* copy its nonce extension verbatim when not NULL */
    const unsigned char *nonce_der; /* or: the nonce Extension's DER to copy (borrowed) */
    size_t nonce_der_len;
    /* When set, the signature OpenSSL made with mctx is replaced by resign's over the same
     * tbsResponseData: in production every signature served comes from hsm_sign_blocking, which
     * verifies it (pkcs11-provider's digest-and-sign path behind mctx is not trusted). */
    int (*resign)(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                  size_t *sig_len);
    void *resign_arg;
};
/* Builds and signs an OCSPResponse (successful) with mctx (a DigestSign context; see resign).
 * *der is OPENSSL_malloc'd; OPENSSL_free it. Returns 0, UTIL_EHSM (signing failed: resign's
 * error, already classified by hsm/, or a software key's), UTIL_ECRYPTO (OpenSSL failed, mctx's
 * signature included: whether the token is to blame is not known) or UTIL_ENOMEM; errors are
 * logged. */
int ocsp__response_build(const struct ocsp__build *b, EVP_MD_CTX *mctx, unsigned char **der,
                         size_t *len);
/* ---- direct encoding (ocsp_der.c) ---------------------------------------------------------- */

/* A signer's constant parts (ResponderID, signatureAlgorithm, certs), taken from a response
 * ocsp__response_build made; ocsp__tmpl_build then encodes responses byte for byte as it would. */
struct ocsp__tmpl;
/* Signs tbs; *sig is OPENSSL_malloc'd. Returns 0, UTIL_EHSM or UTIL_ENOMEM. */
typedef int (*ocsp__sign_fn)(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                             size_t *sig_len);
/* From a successful signed response der: the template, and that response's producedAt and
 * signature (pointing into der) so that it can be rebuilt. UTIL_EINVAL: not a shape OpenSSL makes
 * (then there is no template); UTIL_ENOMEM. */
int ocsp__tmpl_from_response(const unsigned char *der, size_t len, struct ocsp__tmpl **out,
                             int64_t *produced_at, const unsigned char **sig, size_t *sig_len);
void ocsp__tmpl_free(struct ocsp__tmpl *t);
/* The OCSPResponse for b (its signer_cert, include_signer and by_name are the template's) with
 * producedAt produced_at, signed by sign. *der is OPENSSL_malloc'd. Returns 0, UTIL_EHSM (from
 * sign), UTIL_EINVAL (a time or reason that cannot be encoded) or UTIL_ENOMEM. */
int ocsp__tmpl_build(const struct ocsp__tmpl *t, const struct ocsp__build *b, int64_t produced_at,
                     ocsp__sign_fn sign, void *sign_arg, unsigned char **der, size_t *len);
/* ocsp__sign_fn with a DigestSign context (EVP_MD_CTX *) as arg. */
int ocsp__sign_mctx(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                    size_t *sig_len);
/* ocsp__sign_fn giving back a signature made before (struct ocsp__replay *): the start-up check
 * and the tests. */
struct ocsp__replay {
    const unsigned char *sig;
    size_t len;
};
int ocsp__sign_replay(void *arg, const unsigned char *tbs, size_t len, unsigned char **sig,
                      size_t *sig_len);

/* The constant DER of an unsuccessful OCSPResponse (no responseBytes). */
const unsigned char *ocsp__error_der(int response_status, size_t *len);

/* ---- request plan --------------------------------------------------------------------------- */

enum ocsp__plan_kind {
    OCSP__PLAN_ERROR = 1, /* answer the unsigned error response_status */
    OCSP__PLAN_CACHED,    /* answer cached (one reference held) */
    OCSP__PLAN_SIGN,      /* sign singles live; cache_* say whether the result may be cached */
};
struct ocsp__plan {
    int kind;
    int response_status;         /* PLAN_ERROR */
    struct ocsp__cached *cached; /* PLAN_CACHED */
    int signer;                  /* PLAN_SIGN: index into the responder's signers */
    int n;
    struct ocsp__single *singles; /* PLAN_SIGN, owned */
    int use_nonce;                /* echo the request nonce */
    int cache_index;              /* result goes to the index (issuer, serial, alg, feed_id) */
    int cache_recent;             /* result goes to the recent cache */
    int issuer, alg;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int64_t feed_id;
    uint64_t recent_gen;
    int worst_status;  /* for stats: V_OCSP_CERTSTATUS_* */
    OCSP_REQUEST *req; /* owned when use_nonce (taken from the parsed request) */
    /* A nonce request read by the plain path: a copy of its DER (owned), which singles[0].cid_der
     * and nonce_der point into. */
    unsigned char *raw;
    const unsigned char *nonce_der;
    size_t nonce_der_len;
    /* 1: singles[].cid point into the request (req, or the parsed one on an early error) and are
     * not freed with the plan: a nonce's answer repeats the client's CertIDs, and copying them
     * cost 2% of its instructions (callgrind, OCSP_CERTID_dup 14 k of 667 k). */
    int cids_borrowed;
};
/* Decides how to answer a DER request: no I/O, no signing. nonce_slot is set to 1 when the plan
 * took a slot of the nonce queue (the executor must release it). Returns 0 or UTIL_ENOMEM (then
 * the caller answers tryLater). Always run ocsp__plan_cleanup. */
int ocsp__plan_request(struct ocsp_responder *resp, const unsigned char *der, size_t len,
                       struct ocsp__plan *plan, int *nonce_slot);
void ocsp__plan_cleanup(struct ocsp__plan *plan);
/* Signs a plan with the signer's key: on a signing thread (mctx from the hsm). */
int ocsp__plan_sign_blocking(struct ocsp_responder *resp, const struct ocsp__plan *plan,
                             unsigned char **der, size_t *len, int64_t *this_update,
                             int64_t *next_update);

/* ---- responder internals -------------------------------------------------------------------- */

struct ocsp__issuer {
    char name[64];
    int64_t store_id;
    X509 *cert;
    int signer; /* index into signers */
    int ignore_nonce;
    unsigned char name_hash[OCSP__N_MATCH_ALGS][64]; /* 20/32/48/64 octets used, by algorithm */
    unsigned char key_hash[OCSP__N_MATCH_ALGS][64];
};
enum { OCSP__TMPL_NONE = 0, OCSP__TMPL_TRYING, OCSP__TMPL_READY, OCSP__TMPL_FAILED };
struct ocsp__signer {
    X509 *cert;
    struct hsm_key *key;
    int delegated;
    /* The response template, learnt from the signer's first response OpenSSL builds (see
     * ocsp__sign_singles): tmpl is set before tmpl_state becomes READY (release) and never
     * changes. */
    _Atomic int tmpl_state;
    struct ocsp__tmpl *tmpl;
};

struct ocsp__loop;

struct ocsp_responder {
    struct ocsp_config cfg;
    char prefixes[OCSP_MAX_PREFIXES][128];
    struct hsm *hsm;
    struct ocsp__issuer *issuers;
    int n_issuers;
    struct ocsp__signer *signers;
    int n_signers;
    struct ocsp__index *index;

    /* per-loop state, indexed by http loop index */
#define OCSP__MAX_LOOPS 256
#define OCSP__STAT_STRIPES 16 /* counter stripes, see st below */
    struct ocsp__loop *loops[OCSP__MAX_LOOPS];

    /* pre-signer */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mutex; /* guards the urgent queue, stop, applied_feed_id */
    pthread_cond_t cond;
    int stopping;
    struct ocsp__urgent *urgent_head, *urgent_tail;
    size_t urgent_len;
    int64_t applied_feed_id;
    _Atomic int64_t visible_feed_id;
    /* The second of the latest status change applied (at load: committed), or of a live answer
     * signed from the state before a change: a response whose thisUpdate is not later may have
     * the Last-Modified of a response with another status (see ocsp__ims_ok). Only rises. */
    _Atomic int64_t changed_sec;

    _Atomic int nonce_inflight;

    /* Live signing jobs whose done has not run yet (ocsp_http.c). Every job gets exactly one done
     * (UTIL_ECLOSED, off the loop, if its loop has gone), so ocsp_responder_free waits on
     * jobs_cond until n_jobs is 0: then nothing refers to the responder any more. */
    pthread_mutex_t jobs_mutex;
    pthread_cond_t jobs_cond;
    int n_jobs;

    /* Counters, striped: a thread adds to its own stripe, so that loops on many cores do not all
     * write one cache line per request (the pad keeps neighbouring stripes on other lines
     * whatever the allocation's alignment); readers sum the stripes. */
    struct ocsp__stat_stripe {
        _Atomic uint64_t requests_get, requests_post, good, revoked, unknown, malformed,
            unauthorized, try_later, internal_error, not_modified, bad_content_type, served_cached,
            signed_live, signed_miss, nonce_requests, nonce_rejected, presigned, presign_errors;
        char pad[64];
    } st[OCSP__STAT_STRIPES];
    _Atomic uint64_t presign_backlog; /* a gauge: one writer, the pre-signer */
    _Atomic uint64_t presign_failing; /* a gauge: entries in back-off; one writer, the pre-signer */
};

#define OCSP__URGENT_MAX 65536

/* A certificate whose status changed, queued for the pre-signer (ocsp_presign.c) under
 * resp->mutex. */
struct ocsp__urgent {
    struct ocsp__urgent *next;
    int issuer;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int64_t feed_id;
};

/* For answers the index does not hold (unknown serials): whether If-Modified-Since may answer 304
 * for a response with this thisUpdate, decided when it is served: only when it is later than
 * changed_sec. Otherwise only its ETag earns a 304. */
int ocsp__ims_ok(struct ocsp_responder *resp, int64_t this_update);
/* Raises changed_sec to sec. Any thread. */
void ocsp__note_change(struct ocsp_responder *resp, int64_t sec);

/* ocsp_responder.c, shared with ocsp_plan.c and ocsp_presign.c. */
/* Publishes visible_feed_id from the urgent queue and applied_feed_id. Under resp->mutex. */
void ocsp__update_visible_locked(struct ocsp_responder *resp);
/* Fills s from an index lookup; returns 1 when the index answers authoritatively, 0 when the
 * unknown policy applies (not in the index, or expired past the retention). */
int ocsp__decide_status(const struct ocsp_responder *resp, int found, const struct ocsp__status *st,
                        int64_t now, struct ocsp__single *s);
/* The DigestSign context a response is built with (the token key's, or a software key in unit
 * tests without an hsm). */
int ocsp__sign_ctx_new(struct ocsp_responder *resp, const struct hsm_key *key, EVP_MD_CTX **out);
/* Builds and signs one response for singles with signer's key (the nonce extension copied from
 * nonce_from, or nonce_der, when not NULL); *der is the caller's (free). On a signing thread. */
int ocsp__sign_singles(struct ocsp_responder *resp, int signer, const struct ocsp__single *singles,
                       int n, OCSP_REQUEST *nonce_from, const unsigned char *nonce_der,
                       size_t nonce_der_len, unsigned char **der, size_t *len, int64_t *this_update,
                       int64_t *next_update);
/* ocsp_plan.c: the server's own CertID for (issuer, serial) with a cached algorithm (SHA-1 or
 * SHA-256), the one every cached response carries. NULL when out of memory. */
OCSP_CERTID *ocsp__canonical_certid(const struct ocsp_responder *resp, int issuer, int alg,
                                    const unsigned char *serial, size_t serial_len);

/* Registers the HTTP handlers (ocsp_http.c). */
int ocsp__http_register(struct ocsp_responder *resp, struct http_server *srv);
/* Waits until every live signing job's done has run (each job gets one, see util_pool). */
void ocsp__http_jobs_wait(struct ocsp_responder *resp);

/* This thread's stripe of the counters (assigned on first use, round robin). */
unsigned ocsp__stat_stripe(void);
#define OCSP__STAT(resp, field) \
    atomic_fetch_add_explicit(&(resp)->st[ocsp__stat_stripe()].field, 1, memory_order_relaxed)

#endif
