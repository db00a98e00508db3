/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of the crl module: the streaming DER builder of CertificateList
 * (crl_der.c), signing through the HSM and the generation steps (crl_gen.c), and the publisher
 * state the HTTP handlers read (crl_publisher.c, crl_http.c). */
#ifndef PKIVA_CRL_INT_H
#define PKIVA_CRL_INT_H

#include "crl.h"

#include <pthread.h>
#include <stdatomic.h>
#include <store/store.h>

#define CRL_MOD "crl"

/* ---- DER builder (crl_der.c) ---------------------------------------------------------------- */

/* Longest DER header we write: tag, 0x84, four length octets (contents < 4 GiB). */
#define CRL__HDR_MAX 6
/* Longest AlgorithmIdentifier we accept (RSASSA-PSS with SHA-512 parameters is ~65 octets). */
#define CRL__ALGID_MAX 128
/* Largest CRL we build: the length octets above, and a sane bound on memory. */
#define CRL__DER_MAX ((size_t)3 << 30)

/* A growable byte buffer with a hard maximum. The bytes [0, gap) are reserved in front for headers
 * written last (see crl__builder); appends go at len. */
struct crl__buf {
    unsigned char *data;
    size_t len, cap, max;
};

/* Size of a DER TLV header for contents of len octets. */
size_t crl__der_hdr_len(size_t len);
/* Writes tag and length for contents of len octets at out; returns the bytes written. */
size_t crl__der_put_hdr(unsigned char *out, unsigned tag, size_t len);
/* Time (RFC 5280 4.1.2.5): UTCTime for 1950..2049, GeneralizedTime otherwise. out holds >= 17.
 * Returns the bytes written (TLV). */
size_t crl__der_time(unsigned char *out, int64_t unix_seconds);
/* Always GeneralizedTime (invalidityDate, ExpiredCertsOnCRL). out holds >= 17. */
size_t crl__der_gentime(unsigned char *out, int64_t unix_seconds);

struct crl__entry {
    const unsigned char *serial; /* DER INTEGER content octets, as stored */
    size_t serial_len;
    int64_t date;            /* revocationDate */
    int reason;              /* enum store_reason; NONE/UNSPECIFIED: no reasonCode */
    int64_t invalidity_date; /* 0 = none */
};

struct crl__tbs_params {
    const unsigned char *algid; /* AlgorithmIdentifier DER of the signature */
    size_t algid_len;
    const unsigned char *issuer_name; /* Name DER (the CA's subject) */
    size_t issuer_name_len;
    int64_t this_update, next_update;
    int64_t number;
    int64_t base_number;         /* > 0: delta CRL with this Delta CRL Indicator */
    const unsigned char *key_id; /* AKI keyIdentifier (the CA's SKI); NULL = no AKI */
    size_t key_id_len;
    const char *freshest_url;     /* full CRLs: Freshest CRL URI, or NULL */
    int64_t expired_on_crl_since; /* > 0: ExpiredCertsOnCRL */
};

/* DESIGN: one pass. The entries are appended to the buffer as they come from the store walk, after
 * a gap big enough for everything that precedes them (three headers and the TBS fields known up
 * front); when the walk is done, the extensions are appended and the headers are written backwards
 * into the gap, so the TBSCertList ends up contiguous without a copy. The signature algorithm and
 * value are appended after the TBS, then the CertificateList header goes in front. Peak memory is
 * the buffer (touched pages ~ the DER size) plus the final blob copy. */
struct crl__builder {
    struct crl__buf buf;
    unsigned char *prefix; /* version, signature, issuer, thisUpdate, nextUpdate */
    size_t prefix_len;
    size_t gap; /* bytes reserved in front of the entries */
    int64_t entries;
    size_t tbs_start, tbs_end;
    unsigned char algid[CRL__ALGID_MAX];
    size_t algid_len;
};

int crl__builder_begin(struct crl__builder *b, const struct crl__tbs_params *p, size_t max_bytes);
int crl__builder_add(struct crl__builder *b, const struct crl__entry *e);
/* Completes the TBSCertList; *tbs points into the builder (valid until finish/cleanup). */
int crl__builder_tbs(struct crl__builder *b, const struct crl__tbs_params *p,
                     const unsigned char **tbs, size_t *tbs_len);
/* Appends AlgorithmIdentifier and the signature BIT STRING, returns the CertificateList as a new
 * blob (caller unrefs) and releases the buffer. */
int crl__builder_finish(struct crl__builder *b, const unsigned char *sig, size_t sig_len,
                        struct util_blob **out);
void crl__builder_cleanup(struct crl__builder *b); /* NULL-safe, idempotent */

/* ---- issuers and generation (crl_gen.c) ----------------------------------------------------- */

/* What a generation needs to know about an issuer, derived once. */
struct crl__issuer {
    char name[STORE_NAME_MAX];
    int64_t store_id;
    X509 *cert;
    struct hsm_key *key;
    unsigned char *name_der; /* the CA's subject Name, DER (OPENSSL_malloc'd) */
    size_t name_der_len;
    unsigned char key_id[64]; /* its SKI (or SHA-1 of the public key when it has none) */
    size_t key_id_len;
    unsigned char algid[CRL__ALGID_MAX]; /* signature AlgorithmIdentifier, set by the first use */
    size_t algid_len;
    char *freshest_url; /* <public_url>/crl/<name>-delta.crl, or NULL */
};
int crl__issuer_init(struct crl__issuer *is, const struct crl_config *cfg,
                     const struct crl_issuer_config *ic);
void crl__issuer_cleanup(struct crl__issuer *is);

/* Generates one CRL. base == NULL: a full CRL; else a delta against base (its number and the feed
 * id it reflects). Reserves the number, walks, signs. Nothing is saved. */
struct crl__base {
    int64_t number;
    int64_t feed_id;
};
int crl__generate_blocking(const struct crl_config *cfg, struct crl__issuer *is, struct hsm *hsm,
                           struct store *store, const struct crl__base *base,
                           struct util_blob **der_out, struct crl_info *info);
/* Writes der as the issuer's local CRL file (<publish_dir>/<issuer>[-delta].crl; temp file,
 * fsync, rename, fsync of the folder); nothing without a publish_dir. Logs a failure. */
int crl__file_write(const struct crl_config *cfg, const struct crl__issuer *is, int delta,
                    const struct util_blob *der);
/* Saves in the history with its audit record (actor, one transaction), writes the file, marks the
 * SLA rows. */
int crl__publish_one_blocking(const struct crl_config *cfg, const struct crl__issuer *is,
                              struct store *store, const struct util_blob *der,
                              const struct crl_info *info, const char *actor);

/* ---- publisher state read by the HTTP side -------------------------------------------------- */

/* An immutable published CRL with its ready-made HTTP validators. Refcounted: the publisher swaps
 * the pointer under the issuer mutex; a request takes a reference under the same mutex. */
struct crl__served {
    _Atomic long refs;
    struct util_blob *der;
    struct crl_info info;
    char etag[40];          /* "\"<32 hex of SHA-256>\"" */
    char last_modified[40]; /* IMF-fixdate of thisUpdate */
    char expires[40];       /* IMF-fixdate of nextUpdate */
    int ims_ok;             /* If-Modified-Since may earn a 304 (see swap_served) */
};
struct crl__served *crl__served_new(struct util_blob *der, const struct crl_info *info);
void crl__served_unref(struct crl__served *s);

#define CRL__MAX_LOOPS 256
/* A graceful stop publishes pending changes for at most this long (then the next start does). */
#define CRL__STOP_GRACE_MS 10000

struct crl__pub_issuer {
    struct crl__issuer is;
    pthread_mutex_t mutex; /* guards everything below */
    struct crl__served *full, *delta;
    /* scheduling, all on the monotonic clock (ms) */
    int have_full;     /* a full CRL is known (loaded or made) */
    int64_t full_due;  /* next periodic full */
    int64_t delta_due; /* next periodic delta (before its nextUpdate) */
    int dirty;         /* a change is waiting to be published */
    int64_t dirty_due;
    int forced;       /* crl_publish_now */
    int64_t retry_at; /* after a failure: not before this */
    int64_t backoff_ms;
    int64_t base_feed_id; /* feed id the served full CRL reflects */
    /* Feed id the served CRLs (full or delta) reflect: a change at or below it is in them. */
    int64_t covered_feed_id;
    /* The highest CRL number this publisher reserved itself: a newer CRL in the store above it
     * was saved by another publisher (another node) and is adopted (adopt_newer). */
    int64_t own_number;
    /* crl_publish_wait_blocking: requests numbered per issuer; the publisher records the last
     * request a run satisfied and its outcome (guarded by the publisher's mutex, not this one). */
    uint64_t req_seq;  /* guarded by this mutex: the last request made */
    uint64_t done_seq; /* the last request a finished run covered */
    int done_rc;
    int64_t done_ms;
    struct crl_issuer_stats stats;
};

struct crl_publisher {
    struct crl_config cfg;
    int leader; /* publisher thread only: the "crl-publisher" lease at the last turn: 0 not
                 * checked yet, 1 held, 2 held by another node */
    char *publish_dir, *store_path, *public_url; /* copies behind cfg's pointers */
    struct hsm *hsm;
    int n;
    struct crl__pub_issuer *issuers;

    pthread_mutex_t mutex; /* the scheduler's wake-up: guards stopping, the conds, done_* */
    pthread_cond_t cond;
    pthread_cond_t done_cond; /* a run finished (crl_publish_wait_blocking) */
    int stopping;
    int kicked; /* a trigger arrived since the scheduler last looked */
    int loaded;
    pthread_t thread;
    int started;

    /* certificate repository */
    struct util_pool *repo_pool;
    struct util_pool_port *ports[CRL__MAX_LOOPS];
    _Atomic uint64_t repo_served, repo_not_found, repo_rejected, repo_errors;
    _Atomic uint64_t http_served, http_not_modified, http_not_found;
};

/* crl_http.c */
int crl__http_register(struct crl_publisher *pub, struct http_server *srv);

#endif
