/* SPDX-License-Identifier: Apache-2.0 */
/* store internals shared by the files of the store module: the backend vtable that store.c calls
 * through, the constructor of the SQLite backend, and the backend-independent helpers (audit chain
 * hash) that every backend must use identically. Nothing outside store/ includes this header but its tests. */
#ifndef PKIVA_STORE_INT_H
#define PKIVA_STORE_INT_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Module name in log lines. */
#define STORE_MOD "store"

/* One audit record as a backend hands it to the chain verifier; pointers are valid during the
 * callback only. */
struct store__audit_row {
    int64_t id;
    int64_t at_ms;
    int version;                   /* 1: written before schema 2 (no change range), 2: current */
    int64_t feed_first, feed_last; /* the changes it covers; 0, 0 when none */
    const unsigned char *changes;  /* NULL or changes_len bytes: digest of those changes */
    size_t changes_len;
    const char *actor;
    const char *action;
    const char *detail;
    const unsigned char *prev_hash; /* NULL or prev_hash_len bytes as stored */
    size_t prev_hash_len;
    const unsigned char *hash;
    size_t hash_len;
};

/* A new record as store.c hands it to the backend (which adds id, time and the chain). */
struct store__audit_new {
    const char *actor;
    const char *action;
    const char *detail;
    int64_t feed_first, feed_last; /* 0, 0: records no change */
    const unsigned char *changes;  /* STORE_AUDIT_HASH_LEN bytes when feed_first > 0 */
};

/* One change-feed row with its revocation row (if any), as the audit digest encodes it. */
struct store__change_row {
    int64_t id;
    int kind;
    int64_t issuer_id;
    const unsigned char *serial;
    size_t serial_len;
    int has_revocation;
    int reason;
    int64_t revoked_at, invalidity_date;
};

/* One certificate joined with one of its changes (state walk): rows come in (issuer, serial,
 * change id) order; a certificate without any change comes once with change.id = 0. */
struct store__state_row {
    struct store_cert cert;
    struct store__change_row change;
};

/* One seal as stored. */
struct store__seal_row {
    int64_t id;
    int64_t first_id, last_id; /* the records it covers */
    int64_t at_ms;
    const unsigned char *cert_sha256;
    size_t cert_sha256_len;
    const char *md;
    int rsa_pss;
    const unsigned char *hashes; /* the records' hashes, 32 bytes each, first_id first */
    size_t hashes_len;
    const unsigned char *signature;
    size_t signature_len;
};

/* One row of a bulk registration: the certificate and, for an index R line, its revocation
 * (received_at_ms and actor filled, revoked_at non-zero). */
struct store__bulk_row {
    struct store_cert_new cert;
    int revoked;
    struct store_revocation rev;
};

/* The operations a backend implements. store.c has already validated arguments (lengths, enums,
 * non-NULL pointers) before it calls one of these, so a backend only translates to its storage.
 * Timestamps of changes (feed at_ms, committed_at_ms, audit at_ms) are taken by the backend once it
 * holds the write lock, so that they are ordered like the commits even when a writer had to wait.
 * Write operations must be atomic on their own and must join an explicit transaction opened with
 * begin when one is active (as a nested, individually undoable step). Every function returns 0 or a
 * UTIL_E* code and logs the reason of a failure. */
struct store__ops {
    const char *name;
    void (*close)(struct store *store);
    int (*ping)(struct store *store);
    int (*begin)(struct store *store);
    int (*commit)(struct store *store);
    int (*rollback)(struct store *store);

    int (*issuer_put)(struct store *store, const char *name, const unsigned char *cert_der,
                      size_t cert_len, int64_t *id_out);
    int (*issuer_get)(struct store *store, const char *name, struct store_issuer *out);
    int (*issuer_list)(struct store *store, int (*fn)(void *ctx, const struct store_issuer *issuer),
                       void *ctx);

    /* rev == NULL registers the certificate as good with an "issue" change. rev != NULL (import of
     * an already revoked certificate) registers it revoked with one "revoke" change and a
     * revocations row. If the certificate exists nothing changes, *feed_id_out is its last change
     * and *created_out is 0. */
    int (*cert_add)(struct store *store, const struct store_cert_new *cert,
                    const struct store_revocation *rev, int64_t *feed_id_out, int *created_out);
    int (*cert_get)(struct store *store, int64_t issuer_id, const unsigned char *serial,
                    size_t serial_len, struct store_cert *out);
    int (*cert_der)(struct store *store, int64_t issuer_id, const unsigned char *serial,
                    size_t serial_len, unsigned char **der, size_t *der_len);
    int (*cert_iterate)(struct store *store, int64_t issuer_id, int filter,
                        int (*fn)(void *ctx, const struct store_cert *cert), void *ctx);

    /* rev has received_at_ms and actor filled; revoked_at may still be 0 because its default
     * depends on the stored state (a hold turned permanent keeps the date of the hold).
     * *changed_out is 1 when a new change was written, 0 when the call was an idempotent repeat. */
    int (*revoke)(struct store *store, const struct store_revocation *rev, int64_t *feed_id_out,
                  int *changed_out);
    int (*unrevoke)(struct store *store, int64_t issuer_id, const unsigned char *serial,
                    size_t serial_len, const char *actor, int64_t *feed_id_out);

    int (*feed_read)(struct store *store, int64_t after_id, int max, unsigned opts,
                     int (*fn)(void *ctx, const struct store_change *change), void *ctx);
    int (*feed_head)(struct store *store, int64_t *id_out);

    int (*sla_mark)(struct store *store, int64_t feed_id, int stage, int64_t at_ms);
    int (*sla_mark_upto)(struct store *store, int64_t issuer_id, int64_t up_to_feed_id, int stage,
                         int64_t at_ms);
    int (*sla_list)(struct store *store, int open_only, int limit,
                    int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx);

    int (*crl_number_next)(struct store *store, int64_t issuer_id, int64_t floor,
                           int64_t *number_out);
    int (*crl_save)(struct store *store, const struct store_crl_record *crl);
    int (*crl_latest)(struct store *store, int64_t issuer_id, int delta,
                      struct store_crl_record *meta_out, unsigned char **der_out);

    int (*tsa_reserve)(struct store *store, const char *unit, int64_t count, int64_t floor,
                       int64_t *first_out);
    int (*tsa_log)(struct store *store, const struct store_tsa_token *tokens, size_t n);
    int (*tsa_token_get)(struct store *store, const unsigned char *cert_id, const char *unit,
                         int64_t serial, struct store_tsa_record *out);

    /* Appends one record: the backend picks the next id, the previous hash and the time inside its
     * write transaction and computes the hash with store__audit_hash. */
    int (*audit_append)(struct store *store, const struct store__audit_new *rec);
    /* Walks every record in id order from one consistent snapshot, then reports in *last_id_out
     * the highest id ever assigned (so that a removed tail shows). A non-zero return from fn stops
     * the walk and is returned. */
    int (*audit_walk)(struct store *store, int (*fn)(void *ctx, const struct store__audit_row *row),
                      void *ctx, int64_t *last_id_out);
    /* Change-feed rows with first <= id <= last in id order, each with its revocation row. */
    int (*change_walk)(struct store *store, int64_t first, int64_t last,
                       int (*fn)(void *ctx, const struct store__change_row *row), void *ctx);
    /* Every certificate with each of its changes (see struct store__state_row). */
    int (*state_walk)(struct store *store, int (*fn)(void *ctx, const struct store__state_row *row),
                      void *ctx);
    /* The lowest change id whose certificate does not exist and the lowest revocation row whose
     * change does not exist or is not a revocation (0: none), the number of changes. */
    int (*orphans)(struct store *store, int64_t *change_id, int64_t *revocation_id,
                   int64_t *changes);
    /* Seals. seal_pending reads the records after the last seal (at most max) and calls fn with
     * the first one's id, their hashes and count, outside any write lock; fn fills *seal (it
     * signs). The backend then inserts the seal in a write transaction only if no seal was added
     * and none of those records changed meanwhile (else *sealed_out = 0), so seals tile the log.
     * seal_walk walks all seals in first_id order; unsealed counts the records after the last. */
    int (*seal_pending)(struct store *store, int max,
                        int (*fn)(void *ctx, int64_t first_id, const unsigned char *hashes,
                                  size_t n, struct store__seal_row *seal),
                        void *ctx, int64_t *sealed_out);
    int (*seal_walk)(struct store *store, int (*fn)(void *ctx, const struct store__seal_row *row),
                     void *ctx);
    int (*unsealed)(struct store *store, int64_t *count_out);

    /* store.c checked q's bounds (kind, fields, text length, key length, issuers, limit). */
    int (*cert_search)(struct store *store, const struct store_search *q,
                       int (*fn)(void *ctx, const struct store_search_row *row), void *ctx);

    /* Cluster nodes (see store.h): an upsert by name, and a walk in id order. */
    int (*node_report)(struct store *store, const char *name, int64_t applied_feed_id,
                       int64_t at_ms, int64_t *id_out);
    int (*node_list)(struct store *store, int (*fn)(void *ctx, const struct store_node *node),
                     void *ctx);

    /* Optional (NULL: cert_add once per row). Registers n certificates in the caller's open
     * transaction as cert_add would one after the other, as one all-or-nothing step: rows whose
     * certificate is stored already are left alone with created[i] = 0, the others are written
     * with created[i] = 1. No two rows name the same certificate (the caller sees to it). On failure nothing of the
     * call is written (the transaction stays usable) and created is undefined. */
    int (*cert_add_bulk)(struct store *store, const struct store__bulk_row *rows, size_t n,
                         unsigned char *created);

    /* Optional (NULL: the backend has one writer host, every caller holds every lease). Tries to
     * take, or confirms, the lease key for this connection: *held_out = 1 while this connection
     * holds it; it is released when the connection closes or breaks, or (ttl_ms > 0) when the
     * connection stays idle for ttl_ms. */
    int (*lease)(struct store *store, int64_t key, int64_t ttl_ms, int *held_out);
};

/* Every backend's connection struct starts with this, so that a struct store * can be cast to the
 * backend's own type inside the backend. */
struct store {
    const struct store__ops *ops;
    char errmsg[256]; /* store_errmsg; written by store.c and store_import.c only */
};

/* The SQLite backend (store_sqlite.c). */
int store__sqlite_open(const char *path, int flags, struct store **out);
/* The PostgreSQL backend (store_pg.c): conninfo is a libpq URI (postgresql://...). */
int store__pg_open(const char *conninfo, int flags, struct store **out);

/* A pair of connections for STORE_OPEN_STALE_READS (store_replica.c): when path is the primary
 * named in store_read_replica_set, *out reads what may be stale from the replica and everything
 * else from path; otherwise returns 0 with *out NULL. */
int store__replica_open(const char *path, int flags, struct store **out);
/* store__revocation_check without the store lookup: cert is what is stored of the certificate
 * (NULL: not registered). */
int store__revocation_check_cert(struct store *store, const struct store_revocation *rev,
                                 int64_t now_ms, const struct store_cert *cert);

/* SHA-256 over an unambiguous encoding of one audit record (see store.c): row's id, at_ms,
 * version, range, changes, actor, action and detail; prev_hash is STORE_AUDIT_HASH_LEN bytes (all
 * zero for the first record). Returns 0 or UTIL_ECRYPTO. */
int store__audit_hash(const unsigned char *prev_hash, const struct store__audit_row *row,
                      unsigned char *out);

/* Appends the audit record of the changes with first <= feed id <= last (made in the caller's open
 * transaction): computes their digest and writes the record in the same transaction. detail is
 * JSON text. For the backend's migration and for import. */
int store__audit_changes(struct store *store, const char *actor, const char *action,
                         const char *detail, int64_t first, int64_t last);

/* The checks of store_cert_revoke_blocking (see store.h) for a revocation about to be written
 * at now_ms: looks the certificate up for its notBefore and any hold. Returns 0, UTIL_EINVAL
 * with the reason in store->errmsg, or a backend error. */
int store__revocation_check(struct store *store, const struct store_revocation *rev,
                            int64_t now_ms);

/* ---- search keys (store_search.c), the same for every backend ---------------------------- */

#define STORE__SEARCH_FIELD_MAX 1024 /* bytes of one indexed field; longer values are cut */

/* What a certificate is found by: each text field holds every value of that kind separated by
 * spaces, folded with store__search_fold; fingerprints are keyed by their first 8 octets (a
 * match is confirmed against the whole digest of the DER, so collisions only cost a probe). */
struct store__search_keys {
    char cn[STORE__SEARCH_FIELD_MAX];
    char o[STORE__SEARCH_FIELD_MAX];
    char ou[STORE__SEARCH_FIELD_MAX];
    char email[STORE__SEARCH_FIELD_MAX];
    int64_t fp_sha256, fp_sha1;
};
/* Parses der and fills *out. UTIL_EINVAL if der is not a certificate, UTIL_ECRYPTO. */
int store__search_keys(const unsigned char *der, size_t der_len, struct store__search_keys *out);
/* Copies UTF-8 text into out (NUL-terminated, cut at a character boundary to fit) with the
 * foldings the full-text tokenizer does not do itself: đ and Đ become d. */
void store__search_fold(const char *in, size_t in_len, char *out, size_t out_len);
/* The words of a name search, as both backends word their full-text query: runs of bytes other
 * than ASCII punctuation and spaces in the folded text (pointers into it); every word must match,
 * and the last one is a prefix when it has 3 characters or more. */
struct store__search_words {
    const char *start[STORE_SEARCH_WORDS_MAX];
    size_t len[STORE_SEARCH_WORDS_MAX];
    int n;
    int last_is_prefix;
};
/* Splits folded (store__search_fold's output) into *out. UTIL_EINVAL for no word or more than
 * STORE_SEARCH_WORDS_MAX. */
int store__search_words(const char *folded, struct store__search_words *out);
/* The stored forms of a serial searched for: as typed without leading zero octets, and (when it
 * fits) with the one zero octet a DER INTEGER has when its top bit is set. Returns how many (1, 2). */
int store__serial_forms(const unsigned char *key, size_t key_len,
                        unsigned char forms[2][STORE_SERIAL_MAX + 1], size_t lens[2]);
/* The first 8 octets of a digest as a big-endian signed integer (the index key). */
int64_t store__fp_key(const unsigned char *digest);
/* The index key of an e-mail address: the first 8 octets of the SHA-256 of the address folded
 * (store__search_fold) and in ASCII lower case. 0 for an empty address. */
int64_t store__email_key(const char *addr, size_t len);
/* 1 when one of the space-separated addresses of field (store__search_keys' email) equals addr,
 * compared as store__email_key folds them. */
int store__email_listed(const char *field, const char *addr);
/* 1 when der's digest (EVP_sha256 for 32-octet keys, EVP_sha1 for 20) equals key. */
int store__fp_matches(const unsigned char *der, size_t der_len, const unsigned char *key,
                      size_t key_len);

/* 1 when reason is a CRLReason a certificate may be revoked with (not removeFromCRL, not 7). */
int store__reason_valid_for_revoke(int reason);

/* ---- called by tests only ----------------------------------------------------------------- */

/* Store operations no module uses (tests/store checks them; the live paths use
 * store_tsa_reserve_from_blocking and store_sla_mark_upto_blocking). They dispatch to the backend
 * like the public ones. */
/* Cheap liveness check for /readyz: a trivial read. */
int store_ping_blocking(struct store *store);
/* Records, once, when the revocation with this feed id became visible in OCSP or in a published
 * CRL (later calls for the same stage keep the first time). */
int store_sla_mark_blocking(struct store *store, int64_t feed_id, int stage, int64_t at_ms);
/* Durably reserves count consecutive serials for a TSA unit and returns the first. Serials from a
 * reserved block that were never used are skipped after a crash, never reissued. */
int store_tsa_reserve_blocking(struct store *store, const char *unit, int64_t count,
                               int64_t *first_out);

#endif
