/* SPDX-License-Identifier: Apache-2.0 */
/* store: the source of truth. Issuers, issued certificates and their status, revocation requests with
 * their deadline timestamps, the monotonic change feed, CRL numbers and history, TSA serial blocks and
 * the issued-token log, and the audit log (a hash chain sealed by signatures made in the HSM, which
 * also vouches for the certificate statuses). The backend is SQLite in WAL mode for a path, or
 * PostgreSQL (a cluster of nodes sharing one database) for a postgresql:// URI; the interface names
 * no type of either.
 *
 * Every function here may block (disk, fsync, locks): call them from worker threads (util_pool),
 * the CLI or start-up code, never from a loop thread. A struct store is one connection: use it from
 * one thread at a time (the store worker pool opens one per thread). Any number of processes may
 * open the same database (the server, `pkiva revoke` in another shell): SQLite's busy timeout and
 * WAL make them take turns. Everything a function reports as done is durable (synchronous=FULL). */
#ifndef PKIVA_STORE_H
#define PKIVA_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Serial numbers are the content octets of the DER INTEGER, exactly as in the certificate (minimal
 * two's complement, so a leading 0x00 when the top bit is set). RFC 5280 allows 20 octets; real
 * certificates sometimes have 21; we accept up to STORE_SERIAL_MAX. */
#define STORE_SERIAL_MAX 32
#define STORE_NAME_MAX 64

/* The [store] section of the configuration file as read (store_config.c declares each directive
 * once: name, kind, limits, default, doc line). */
#define STORE_BACKEND_SQLITE 0
#define STORE_BACKEND_POSTGRESQL 1
#define STORE_SETTING_MAX 512
struct store_settings {
    int backend;                           /* STORE_BACKEND_SQLITE or STORE_BACKEND_POSTGRESQL */
    char path[STORE_SETTING_MAX];          /* sqlite: the file; "" = <data_dir>/pkiva.db */
    char conninfo[STORE_SETTING_MAX];      /* postgresql: libpq URI without a password */
    char password_file[STORE_SETTING_MAX]; /* postgresql: libpq passfile; "" = none */
    char read_conninfo[STORE_SETTING_MAX]; /* postgresql: a hot standby's URI; "" = none */
    int read_max_lag_ms;                   /* the replica's lag past it: /readyz 503 */
};
/* Fills s with the table's defaults. */
void store_settings_default(struct store_settings *s);
/* The [store] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *store_settings_directives(size_t *n);
/* What store_open_blocking gets for s, into path (path_len bytes): sqlite: path, else
 * data_dir/pkiva.db; postgresql: the libpq URI of conninfo with password_file as its passfile,
 * after checking that conninfo is a URI without a password and that the file is owner-only.
 * Returns 0, or UTIL_ECONFIG with the reason in err. */
int store_settings_resolve(const struct store_settings *s, const char *data_dir, char *path,
                           size_t path_len, char *err, size_t err_len);
/* read_conninfo as store_read_replica_set gets it, into path: "" without one, else the libpq URI
 * with password_file as its passfile. UTIL_ECONFIG and the reason in err when read_conninfo is
 * set on sqlite or holds a password. */
int store_settings_resolve_read(const struct store_settings *s, char *path, size_t path_len,
                                char *err, size_t err_len);

/* The one conversion of a certificate's serial (an OpenSSL ASN1_INTEGER) into those octets
 * (store_serial.c): out holds STORE_SERIAL_MAX bytes. Allocates nothing, so the request path may
 * call it. Returns 0, or UTIL_EINVAL for a serial longer than STORE_SERIAL_MAX octets. */
struct asn1_string_st; /* ASN1_INTEGER */
int store_serial_from_asn1(const struct asn1_string_st *serial, unsigned char *out, size_t *len);
/* The one parser of a serial written in hex (len characters, [0-9a-fA-F] only; an odd count gets
 * a leading zero nibble) into those octets, minimal and positive (a leading 0x00 only when the top
 * bit is set). Returns 0 or UTIL_EINVAL. */
int store_serial_from_hex(const char *hex, size_t len, unsigned char *out, size_t *out_len);

enum store_cert_status { STORE_GOOD = 0, STORE_REVOKED = 1 };

/* RFC 5280 CRLReason codes (7 is unused). STORE_REASON_NONE = no reason given (unspecified, omitted
 * from CRL entries and OCSP responses). */
enum store_reason {
    STORE_REASON_NONE = -1,
    STORE_REASON_UNSPECIFIED = 0,
    STORE_REASON_KEY_COMPROMISE = 1,
    STORE_REASON_CA_COMPROMISE = 2,
    STORE_REASON_AFFILIATION_CHANGED = 3,
    STORE_REASON_SUPERSEDED = 4,
    STORE_REASON_CESSATION = 5,
    STORE_REASON_CERTIFICATE_HOLD = 6,
    STORE_REASON_REMOVE_FROM_CRL = 8,
    STORE_REASON_PRIVILEGE_WITHDRAWN = 9,
    STORE_REASON_AA_COMPROMISE = 10,
};
/* "keyCompromise" <-> 1 etc. (RFC 5280 names, case-insensitive; also "none"). Returns -2 if unknown. */
int store_reason_from_name(const char *name);
const char *store_reason_name(int reason);

struct store_issuer {
    int64_t id;
    char name[STORE_NAME_MAX]; /* short, URL-safe id: [A-Za-z0-9._-]+ e.g. "demo-ca" */
    unsigned char *cert_der;   /* owned by the struct; store_issuer_cleanup frees */
    size_t cert_len;
};
void store_issuer_cleanup(struct store_issuer *issuer);

struct store_cert {
    int64_t issuer_id;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int64_t not_before;      /* unix seconds; 0 if unknown */
    int64_t not_after;       /* unix seconds */
    int status;              /* enum store_cert_status */
    int64_t revoked_at;      /* unix seconds; 0 when good */
    int reason;              /* enum store_reason; STORE_REASON_NONE when good or unspecified */
    int64_t invalidity_date; /* unix seconds; 0 when none */
    int64_t feed_id;         /* feed id of the last change to this certificate */
};

/* ---- open/close ----------------------------------------------------------------------------- */

#define STORE_OPEN_CREATE 1 /* create the file and schema if missing */
#define STORE_OPEN_READONLY 2
/* Bulk writes (import, benches): a 256 MB page cache on SQLite, so that a transaction of tens of
 * thousands of rows stays in memory until its commit instead of spilling pages to the WAL again
 * and again (without it, registering certificates with their search index wrote ~80 KB to the WAL
 * per certificate). No effect on PostgreSQL. */
#define STORE_OPEN_BULK 4
/* Reads that may be stale (the OCSP index load, the change feed, CRLs, certificates and searches
 * for serving) go to the read replica store_read_replica_set names for path, if any; writes,
 * transactions and every other read go to path. For connections whose reads a node serves. */
#define STORE_OPEN_STALE_READS 8

/* Opens (and with STORE_OPEN_CREATE creates) the database at path, sets WAL, synchronous=FULL,
 * foreign keys, a busy timeout, and runs pending schema migrations inside one transaction. On failure
 * returns an error and logs why (file, SQLite message). *out is freed with store_close.
 * A path starting with postgresql:// or postgres:// is a libpq URI instead: the database must
 * exist (CREATE has no effect on it); the schema is created or migrated the same way, and the
 * busy timeout is the wait for the cluster-wide writer lock (store_pg.c DESIGN). */
int store_open_blocking(const char *path, int flags, struct store **out);
void store_close(struct store *store); /* NULL-safe */

/* [store] read_conninfo: connections opened later with STORE_OPEN_STALE_READS on path read from
 * read_path (a hot standby; NULL or "" to stop), and its lag past max_lag_ms (0: no bound) is
 * reported. Copies both strings. Process-wide; set at start-up, before such opens. */
int store_read_replica_set(const char *path, const char *read_path, int64_t max_lag_ms);
/* The replica's lag last measured (ms a committed change has not been visible on the replica; 0
 * when it has every change), -1 before any measurement or without a replica. Never blocks. */
int64_t store_replica_lag_ms(void);
/* 1 (and a reason in why) when the last measured lag exceeds the bound. Never blocks. */
int store_replica_lagging(char *why, size_t why_len);

/* Explicit transactions for bulk work (import): everything between begin and commit is one durable
 * commit. Other calls made in between join the transaction. */
int store_begin_blocking(struct store *store);
int store_commit_blocking(struct store *store);
int store_rollback_blocking(struct store *store);

/* ---- issuers -------------------------------------------------------------------------------- */

/* Registers an issuer (name unique) or, if name exists with the same certificate, returns its id.
 * A different certificate under an existing name is UTIL_EEXIST. */
int store_issuer_put_blocking(struct store *store, const char *name, const unsigned char *cert_der,
                              size_t cert_len, int64_t *id_out);
/* Fills *out (caller runs store_issuer_cleanup). UTIL_ENOTFOUND if absent. */
int store_issuer_get_blocking(struct store *store, const char *name, struct store_issuer *out);
/* Calls fn for each issuer in id order; the issuer struct is valid only during the call. A non-zero
 * return from fn stops the walk and is returned. */
int store_issuer_list_blocking(struct store *store,
                               int (*fn)(void *ctx, const struct store_issuer *issuer), void *ctx);

/* ---- certificates --------------------------------------------------------------------------- */

struct store_cert_new {
    int64_t issuer_id;
    const unsigned char *serial;
    size_t serial_len;
    int64_t not_before, not_after;
    const char *subject;           /* optional, one-line RFC 2253 form, for operators */
    const unsigned char *cert_der; /* optional: published in the certificate repository */
    size_t cert_len;
    const char *actor; /* who registered it, for the audit record; NULL = "unknown" */
};

/* Registers an issued certificate as good and appends an "issue" change to the feed and a
 * "register" audit record, in one transaction. Registering the same (issuer, serial) again is
 * idempotent (returns 0 and the existing feed id, changes nothing, writes no audit record).
 * *feed_id_out may be NULL. */
int store_cert_add_blocking(struct store *store, const struct store_cert_new *cert,
                            int64_t *feed_id_out);

/* Fills *out. UTIL_ENOTFOUND if the issuer has no such serial. */
int store_cert_get_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, struct store_cert *out);
/* The stored DER of a certificate (malloc'd, caller frees). UTIL_ENOTFOUND if absent or not kept. */
int store_cert_der_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, unsigned char **der, size_t *der_len);

/* Walks the certificates of one issuer (issuer_id > 0) or all (0) in (issuer, serial) order; filter:
 * 0 = all, 1 = revoked only. The struct is valid only during the call; a non-zero return stops. */
#define STORE_ITER_ALL 0
#define STORE_ITER_REVOKED 1
/* All, in whatever order the backend reads fastest (PostgreSQL: the table's physical order, one
 * sequential scan through a cursor; SQLite, for one issuer: the two halves of its serials in key
 * order at the same time, the upper one on a second connection by a thread of its own), for a
 * load that needs no order (the OCSP status index). The callback runs on one thread at a time,
 * not always the caller's, and must not use the store. */
#define STORE_ITER_ALL_ANY_ORDER 2
int store_cert_iterate_blocking(struct store *store, int64_t issuer_id, int filter,
                                int (*fn)(void *ctx, const struct store_cert *cert), void *ctx);

/* ---- revocation ----------------------------------------------------------------------------- */

struct store_revocation {
    int64_t issuer_id;
    const unsigned char *serial;
    size_t serial_len;
    int reason;              /* enum store_reason */
    int64_t revoked_at;      /* unix seconds; 0 = now */
    int64_t invalidity_date; /* unix seconds; 0 = none */
    const char *request_id;  /* optional operator/RA reference */
    int64_t
        received_at_ms; /* when the revocation request was received (may be in the past); 0 = now */
    const char *actor;  /* who recorded it (user, "admin-api:token", "cli:root") */
};

/* How far in the future a caller may date a revocation or its receipt: the clocks of the CA, the
 * RA and this server differ by seconds, not minutes. */
#define STORE_CLOCK_SKEW_S 300

/* Marks the certificate revoked, records the request (received -> committed timestamps), appends
 * a "revoke" change to the feed and a "revoke" audit record (actor, reason, request_id), all in one
 * durable transaction. UTIL_ENOTFOUND if the certificate is unknown; revoking an already revoked
 * certificate: same reason -> idempotent 0 with the existing feed id and no new audit record; a
 * hold (certificateHold) may be changed to another reason (a new change); otherwise UTIL_EEXIST. */
int store_cert_revoke_blocking(struct store *store, const struct store_revocation *rev,
                               int64_t *feed_id_out);
/* The rules store_cert_revoke_blocking and the index import apply before anything is written, so
 * that no writer can store a revocation OCSP or a CRL cannot sign (UTIL_EINVAL, and
 * store_errmsg names the field): revoked_at not after now + STORE_CLOCK_SKEW_S and not before the
 * certificate's notBefore (when known); invalidity_date not after the revocation time (given, or
 * the hold's, or now); received_at not after now + STORE_CLOCK_SKEW_S. Every time is >= 0 and so
 * lies in 1970-9999, which both encodings carry (RFC 5280 4.1.2.5: UTCTime through 2049,
 * GeneralizedTime from 2050; OCSP and invalidityDate: GeneralizedTime). */

/* Why the last revocation on this connection was refused (UTIL_EINVAL): a sentence starting with
 * the field's name ("revoked_at: ..."); "" when it gave no reason, or when a later begin, issuer
 * lookup, certificate registration or unrevoke ran on the connection. The string belongs to the
 * connection and is valid until its next call. */
const char *store_errmsg(const struct store *store);
/* Releases a certificateHold: back to good, with an "unrevoke" change and its audit record in one
 * transaction. UTIL_EINVAL if the certificate is not on hold. */
int store_cert_unrevoke_blocking(struct store *store, int64_t issuer_id,
                                 const unsigned char *serial, size_t serial_len, const char *actor,
                                 int64_t *feed_id_out);

/* ---- change feed ---------------------------------------------------------------------------- */

enum store_change_kind {
    STORE_CHANGE_ISSUE = 1,
    STORE_CHANGE_REVOKE = 2,
    STORE_CHANGE_UNREVOKE = 3
};

struct store_change {
    int64_t id; /* strictly increasing */
    int kind;   /* enum store_change_kind */
    int64_t at_ms;
    struct store_cert cert; /* the certificate's state as it is now in the store */
};

/* Calls fn for up to max changes with id > after_id, in id order; returns the number delivered
 * (>= 0) or an error. */
int store_feed_read_blocking(struct store *store, int64_t after_id, int max,
                             int (*fn)(void *ctx, const struct store_change *change), void *ctx);
/* Options of store_feed_read_opt_blocking. STORE_FEED_SKIP_ISSUE leaves out the STORE_CHANGE_ISSUE
 * changes (registrations of good certificates; a certificate registered as revoked is a
 * STORE_CHANGE_REVOKE change). Both backends read it through a partial index of the other kinds,
 * so the cost follows the revocations, not the registrations (the CRL publisher's start-up
 * replay after an import of millions of good certificates). */
#define STORE_FEED_SKIP_ISSUE 1u
/* As store_feed_read_blocking, with opts (0 or STORE_FEED_SKIP_ISSUE); max counts the changes
 * delivered, not those skipped. */
int store_feed_read_opt_blocking(struct store *store, int64_t after_id, int max, unsigned opts,
                                 int (*fn)(void *ctx, const struct store_change *change),
                                 void *ctx);
int store_feed_head_blocking(struct store *store, int64_t *id_out); /* 0 when empty */

/* ---- revocation deadline (SLA) -------------------------------------------------------------- */

enum store_sla_stage { STORE_SLA_OCSP = 1, STORE_SLA_CRL = 2 };
/* Same for every revocation of issuer_id with feed id <= up_to_feed_id not yet marked for stage. */
int store_sla_mark_upto_blocking(struct store *store, int64_t issuer_id, int64_t up_to_feed_id,
                                 int stage, int64_t at_ms);

struct store_sla_row {
    int64_t feed_id;
    int64_t issuer_id;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    const char *request_id; /* may be NULL; valid during the callback */
    int64_t received_at_ms, committed_at_ms, ocsp_at_ms, crl_at_ms; /* 0 = not yet */
    int64_t revoked_at, invalidity_date;                            /* unix seconds, as stored */
    /* NULL, or why this revocation as stored cannot be signed (a row written behind the checks of
     * store_cert_revoke_blocking, e.g. by an older pkiva): OCSP answers tryLater for it, so it is
     * never complete, whatever its marks say. Valid during the callback. */
    const char *unsignable;
};
/* Walks revocations: open_only = 1 lists those without a CRL time yet; 0 lists all, newest first,
 * at most limit rows (limit <= 0: no limit). Each row comes with its unsignable verdict. */
int store_sla_list_blocking(struct store *store, int open_only, int limit,
                            int (*fn)(void *ctx, const struct store_sla_row *row), void *ctx);

/* ---- CRLs ----------------------------------------------------------------------------------- */

/* Reserves the next CRL number of an issuer, durably, before the CRL is signed: a number handed out
 * is never handed out again, even if the CRL is never published (gaps are allowed, reuse is not).
 * The number is max(last + 1, floor): the CRL publisher passes the wall clock in milliseconds, so
 * that a store restored from an older backup (whose last number is behind what was published
 * since) still never issues a number again, as time-stamp serial blocks never start below the
 * clock (RFC 5280 §5.2.3: monotonically increasing; up to 20 octets, so milliseconds fit). floor 0:
 * last + 1. */
int store_crl_number_next_blocking(struct store *store, int64_t issuer_id, int64_t floor,
                                   int64_t *number_out);

struct store_crl_record {
    int64_t issuer_id;
    int64_t number;
    int64_t base_number; /* delta CRLs: the base CRL's number; 0 for a full CRL */
    int64_t this_update, next_update;
    int64_t feed_id; /* highest change-feed id the CRL reflects */
    const unsigned char *der;
    size_t der_len;
    const char *actor; /* who asked for it, for the audit record; NULL = "crl" */
};
/* Saves a CRL in the history and appends its "crl-publish" audit record in one transaction. */
int store_crl_save_blocking(struct store *store, const struct store_crl_record *crl);
/* The latest saved CRL of an issuer (delta = 0 full, 1 delta); malloc'd DER the caller frees. */
int store_crl_latest_blocking(struct store *store, int64_t issuer_id, int delta,
                              struct store_crl_record *meta_out, unsigned char **der_out);

/* One holder at a time for a duty of the whole cluster (name: e.g. "crl"): *held_out = 1 when this
 * connection holds the lease named name (taking it if free), 0 when another connection does. The
 * lease lasts while the connection lives: a holder that dies, or whose connection breaks, loses it
 * and another caller gets it at its next call. It is also time-bound: a holder whose connection
 * makes no call for ttl_ms (a hung or SIGSTOPped process that keeps its socket open) loses the
 * connection and the lease; the holder renews it by calling this (or anything else on this
 * connection) more often than that, and finds out it lost it at its next call (error, then 0 on
 * the reconnected connection). ttl_ms 0 = no time bound. On SQLite (one host) every caller holds
 * it. A lease is no fence: what a holder writes must still be checked in the store (CRL numbers
 * are). */
int store_lease_blocking(struct store *store, const char *name, int64_t ttl_ms, int *held_out);

/* ---- cluster nodes -------------------------------------------------------------------------- */

/* Every serving node reports, about once a second, the feed id up to which its OCSP answers
 * reflect every change (its applied position) and the time of the report (its heartbeat). A
 * revocation is visible in OCSP cluster-wide once every live node (heartbeat within a bound the
 * reader chooses, [store] max_feed_lag) has applied it. On SQLite there is one row per server
 * that ever ran on the file; the API is the same. */
#define STORE_NODE_NAME_MAX 128

struct store_node {
    int64_t id;
    char name[STORE_NODE_NAME_MAX];
    int64_t applied_feed_id;
    int64_t heartbeat_ms; /* unix ms of the last report */
};
/* Records the node named name (1..STORE_NODE_NAME_MAX-1 bytes of text) at applied_feed_id and
 * at_ms (0: now), creating its row the first time; *id_out (may be NULL) gets the row's id. One
 * small durable write that takes no writer lock (it orders nothing). */
int store_node_report_blocking(struct store *store, const char *name, int64_t applied_feed_id,
                               int64_t at_ms, int64_t *id_out);
/* Calls fn for every node row in id order; the struct is valid during the call only. A non-zero
 * return from fn stops the walk and is returned. */
int store_node_list_blocking(struct store *store,
                             int (*fn)(void *ctx, const struct store_node *node), void *ctx);
/* The lowest applied position over the nodes other than exclude_id (0: none excluded) whose
 * heartbeat is at or after live_since_ms (a revocation with a feed id up to it is visible in OCSP
 * on every one of them), and how many they are; *applied_out is INT64_MAX when none is. */
int store_node_min_applied_blocking(struct store *store, int64_t live_since_ms, int64_t exclude_id,
                                    int64_t *applied_out, int *live_out);

/* How far node is behind head (the feed head read by the caller): *changes = head - applied (at
 * least 0), *lag_ms = now_ms - the commit time of the first change it has not applied (0 when it
 * has applied everything). */
int store_node_lag_blocking(struct store *store, const struct store_node *node, int64_t head,
                            int64_t now_ms, int64_t *changes, int64_t *lag_ms);

/* ---- TSA ------------------------------------------------------------------------------------ */

/* The same, with the block starting at floor at least: the counter of key (any text; the TSA
 * passes its certificate's fingerprint) jumps up to floor when it is below it. */
int store_tsa_reserve_from_blocking(struct store *store, const char *key, int64_t count,
                                    int64_t floor, int64_t *first_out);

#define STORE_TSA_CERT_ID_LEN 32 /* SHA-256 of the TSA certificate's DER */

struct store_tsa_token {
    const char *unit;
    /* The TSA certificate that signed it (STORE_TSA_CERT_ID_LEN bytes): the log's key with the
     * serial. NULL: unknown (rows from before schema version 2, found by unit name). */
    const unsigned char *cert_id;
    int64_t serial;
    int64_t gen_time_ms;
    const char *policy;      /* dotted OID */
    const char *imprint_alg; /* OpenSSL short name, e.g. "SHA256" */
    const unsigned char *imprint;
    size_t imprint_len;
};
/* Records n issued tokens in one durable transaction (group commit). */
int store_tsa_log_blocking(struct store *store, const struct store_tsa_token *tokens, size_t n);

/* One token's record, as the log kept it (fixed-size copies). */
struct store_tsa_record {
    char unit[64];
    int64_t serial;
    int64_t gen_time_ms;
    char policy[128];
    char imprint_alg[32];
    unsigned char imprint[64];
    size_t imprint_len;
};
/* Looks up the record of the token with this serial signed under the certificate cert_id
 * (STORE_TSA_CERT_ID_LEN bytes, or NULL); when there is none, the record of (unit, serial) made
 * before the log was keyed by certificate. 0, UTIL_ENOTFOUND (no such token was issued), or an
 * error. Values longer than the record's fields (never written by pkiva) give UTIL_EINVAL. */
int store_tsa_token_get_blocking(struct store *store, const unsigned char *cert_id,
                                 const char *unit, int64_t serial, struct store_tsa_record *out);

/* ---- audit ---------------------------------------------------------------------------------- */

/* The audit log (DESIGN in store.c). Every change of a certificate's status writes its audit record
 * inside the change's own transaction (the functions above do it; an import writes one record per
 * committed batch); each record covers a range of change-feed ids with a digest of those changes
 * and their revocation rows. Records are hash-chained, and seals (signatures made with a key in the
 * HSM over the hashes of a run of records) make the chain impossible to rewrite without that key. */

#define STORE_AUDIT_HASH_LEN 32
/* A seal covers at most this many records; a longer backlog gets several seals. */
#define STORE_AUDIT_SEAL_MAX 4096

/* Appends a record that changes no certificate (server start, init): detail is JSON text by
 * convention (build it with a JSON library, never by pasting strings). */
int store_audit_append_blocking(struct store *store, const char *actor, const char *action,
                                const char *detail);

/* The signing key of seals. sign is called without the store's write lock held (a seal that lost a
 * race with another sealer is dropped); it gets the exact bytes to sign and returns a malloc'd
 * signature the store frees, or a UTIL_E* code. cert_der is the certificate of the key (its
 * SHA-256 names the key in the seal). */
struct store_audit_signer {
    int (*sign)(void *ctx, const unsigned char *data, size_t len, unsigned char **sig,
                size_t *sig_len);
    void *ctx;
    const unsigned char *cert_der;
    size_t cert_len;
    const char *md; /* the digest sign uses: "SHA256", "SHA384", ... */
    int rsa_pss;    /* 1: RSASSA-PSS with salt length = digest length */
};
/* Seals every record that no seal covers yet; *sealed_out (may be NULL) gets how many records were
 * sealed (0: nothing was pending). */
int store_audit_seal_blocking(struct store *store, const struct store_audit_signer *signer,
                              int64_t *sealed_out);
/* The number of records after the last seal (cheap; for deciding when to seal). */
int store_audit_unsealed_blocking(struct store *store, int64_t *count_out);

/* What store_audit_verify_blocking found. Text fields are NUL-terminated. */
struct store_audit_report {
    int64_t records;        /* records in the log */
    int64_t seals;          /* seals whose signature verified with a trusted certificate */
    int64_t sealed_through; /* highest record id vouched for by a verified seal (0: none) */
    int64_t unsealed;       /* records after it: chained, but not yet sealed */
    int64_t changes;        /* change-feed rows, each covered by exactly one record */
    int64_t certificates;   /* certificates whose status was checked against the history */
    int64_t problems;       /* everything found wrong (0: intact) */
    int64_t bad_record;     /* first record found wrong; 0 when the first problem is elsewhere */
    char first_problem[512];
    /* The hash of the last sealed record, recomputed from the content: written down outside the
     * database (with sealed_through) it is an anchor for later verifications. */
    unsigned char sealed_hash[STORE_AUDIT_HASH_LEN];
};

/* An anchor: a record id and the hash it had when an auditor wrote it down (from an earlier
 * report). A log rewritten up to or past that record, even with every seal removed, fails it. */
struct store_audit_anchor {
    int64_t record_id;
    unsigned char hash[STORE_AUDIT_HASH_LEN];
};
/* Checks everything: the chain (ids contiguous from 1, each hash), every seal (signature by one of
 * the trusted certificates, given as DER; seals tile the log from record 1) and every sealed
 * record's hash against its seal; the anchor (may be NULL); that every change-feed row is covered
 * by exactly one record with a matching digest; and that each certificate's current status, and
 * every revocation row, is what the history implies (legal transitions only: a certificate goes
 * back to good only from hold).
 * Returns 0 when nothing is wrong (unsealed records are not wrong: see report->unsealed),
 * UTIL_EINVAL when something is (report says what and where), another code when it could not
 * check. n_trusted = 0 makes every seal count as a problem. */
int store_audit_verify_blocking(struct store *store, const unsigned char *const *trusted_der,
                                const size_t *trusted_len, size_t n_trusted,
                                const struct store_audit_anchor *anchor,
                                struct store_audit_report *report);

/* ---- import --------------------------------------------------------------------------------- */

struct store_import_stats {
    int64_t added, existing, revoked, skipped;
};
/* Registers certificates from a PEM or DER file, or every .pem, .crt, .cer and .der file of a folder.
 * Each certificate's issuer is found among the registered issuers by name and signature; certificates
 * of unknown issuers are skipped and counted. Commits in batches; re-running is idempotent, so an
 * interrupted import resumes by running it again. progress (optional) is called after each batch. */
int store_import_certs_blocking(struct store *store, const char *path,
                                void (*progress)(void *ctx, const struct store_import_stats *s),
                                void *ctx, struct store_import_stats *stats);
/* Registers every line of an OpenSSL CA index.txt for issuer_id: V lines as good, R lines as revoked
 * with their date and reason, E lines as expired-but-known. */
int store_import_index_blocking(struct store *store, int64_t issuer_id, const char *path,
                                void (*progress)(void *ctx, const struct store_import_stats *s),
                                void *ctx, struct store_import_stats *stats);

/* ---- search (the public certificate directory) ---------------------------------------------- */

/* Certificates stored with their DER are indexed for search when they are added (and, for those
 * added before the index existed, by a catch-up at the first read-write open): the subject's
 * common names, organisations, organisational units and e-mail addresses (subject emailAddress
 * and rfc822Name SANs), folded like a person types them (case, Vietnamese diacritics and đ/Đ
 * ignored), and the SHA-256 and SHA-1 fingerprints. Serial numbers need no extra index. */
#define STORE_FIELD_CN 1u
#define STORE_FIELD_O 2u
#define STORE_FIELD_OU 4u
#define STORE_FIELD_EMAIL 8u
#define STORE_FIELD_ALL 15u

enum store_search_kind {
    STORE_SEARCH_NAME = 1, /* words of text, all must match; the last a prefix if 3+ letters */
    STORE_SEARCH_SERIAL,   /* key: serial octets (leading zero octets are ignored) */
    STORE_SEARCH_SHA256,   /* key: 32 octets */
    STORE_SEARCH_SHA1,     /* key: 20 octets */
    STORE_SEARCH_EMAIL     /* text: one whole e-mail address, any case (an index probe) */
};
#define STORE_SEARCH_TEXT_MAX 256 /* bytes of text */
#define STORE_SEARCH_WORDS_MAX 8  /* words of text used; more are refused (UTIL_EINVAL) */
#define STORE_SEARCH_LIMIT_MAX 100
#define STORE_SEARCH_ISSUERS_MAX 64

struct store_search {
    int kind;        /* enum store_search_kind */
    unsigned fields; /* STORE_SEARCH_NAME: STORE_FIELD_* bits searched (non-zero) */
    const char *text;
    const unsigned char *key;
    size_t key_len;
    /* Only certificates of these issuers (1..STORE_SEARCH_ISSUERS_MAX ids; required: the caller
     * names what it publishes). */
    const int64_t *issuer_ids;
    int n_issuer_ids;
    /* Paging, newest first: rows with cursor < before (0 = from the newest). */
    int64_t before;
    int limit; /* 1..STORE_SEARCH_LIMIT_MAX */
};

/* One result; pointers are valid during the callback only. */
struct store_search_row {
    struct store_cert cert;
    const char *subject;      /* the one-line subject recorded at registration, or NULL */
    const unsigned char *der; /* the certificate, or NULL when only its serial is known */
    size_t der_len;
    int64_t cursor; /* pass as before to get the rows after this one */
};

/* Calls fn for up to q->limit matching certificates, newest first; returns the number delivered
 * (>= 0) or an error (UTIL_EINVAL for a query out of bounds, e.g. no word of text). A non-zero
 * return from fn stops the walk and is returned. Reads only; cheap at 10 million certificates:
 * a name search is an inverted-index lookup, a fingerprint one index probe, a serial one
 * primary-key probe per issuer. */
int store_cert_search_blocking(struct store *store, const struct store_search *q,
                               int (*fn)(void *ctx, const struct store_search_row *row), void *ctx);

#endif
