/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of tsa/: the request checker and rejection encoder (tsa_req.c), the
 * signing job (tsa_sign.c), the serial allocator and token-log thread (tsa_log.c) and the service
 * with its HTTP handler (tsa_service.c). Tests of tsa/ may include it; other modules may not. */
#ifndef PKIVA_TSA_INT_H
#define PKIVA_TSA_INT_H

#include "tsa.h"

#include <hsm/hsm.h>
#include <http/http.h>
#include <openssl/ts.h>
#include <pthread.h>
#include <stdatomic.h>
#include <store/store.h>
#include <time.h>
#include <util/util.h>

#define TSA_MOD "tsa"
#define TSA__MAX_LOOPS 256
/* Serial blocks start at (ms since the epoch) << this at least (tsa_log.c): room for 2^21 serials
 * per millisecond, above any block size. */
#define TSA_SERIAL_TIME_SHIFT 21
#define TSA__IMPRINT_MAX 64 /* SHA-512 */
#define TSA__CTX_POOL_MAX 64

/* ---- request check and rejections (tsa_req.c) ------------------------------------------------ */

/* Every rejection the service sends: a failInfo bit and a fixed statusString. */
enum tsa__reject {
    TSA__REJ_MALFORMED = 0,  /* badRequest */
    TSA__REJ_VERSION,        /* badRequest */
    TSA__REJ_TOO_LARGE,      /* badRequest */
    TSA__REJ_BAD_ALG,        /* badAlg */
    TSA__REJ_ALG_PARAMS,     /* badAlg */
    TSA__REJ_IMPRINT_LENGTH, /* badDataFormat */
    TSA__REJ_POLICY,         /* unacceptedPolicy */
    TSA__REJ_EXTENSION,      /* unacceptedExtension */
    TSA__REJ_TIME,           /* timeNotAvailable */
    TSA__REJ_BUSY,           /* systemFailure */
    TSA__REJ_SIGN,           /* systemFailure */
    TSA__REJ_LOG,            /* systemFailure */
    TSA__REJ_SERIALS,        /* systemFailure */
    TSA__REJ_INTERNAL,       /* systemFailure */
    TSA__REJ_STOPPING,       /* systemFailure */
    TSA__REJ_CERT_EXPIRED,   /* systemFailure */
    TSA__REJ_COUNT
};

/* The failInfo bit of a rejection. */
int tsa__reject_fail_info(int reason);
/* Encodes TimeStampResp { status rejection(2), statusString, failInfo } in DER into out (at most
 * out_max bytes). Returns the length, or UTIL_EINVAL if out is too small or reason unknown. */
int tsa__reject_der(int reason, unsigned char *out, size_t out_max);

/* What a unit accepts, as the checker sees it (owned by the unit). */
struct tsa__rules {
    int allow_weak_hashes;
    const ASN1_OBJECT *policy; /* the default */
    const ASN1_OBJECT *accepted[TSA_MAX_POLICIES];
    int n_accepted;
};

/* What the loop learned from a request. reject < 0: acceptable; then the fields below are set. */
struct tsa__query {
    int reject; /* enum tsa__reject, or -1 */
    int md_nid; /* imprint hash algorithm */
    size_t imprint_len;
    unsigned char imprint[TSA__IMPRINT_MAX];
    int policy_index; /* -1: the default; else index into accepted */
};

/* Decodes and checks a DER TimeStampReq against rules: strict DER (nothing after the request),
 * version 1, an accepted hash with absent or NULL parameters, an imprint of the hash's length, an
 * accepted policy, no extension (none is recognised: RFC 3161 §2.4.1 then refuses critical and
 * non-critical ones alike). The outcome is data in *out; the
 * return is 0, or UTIL_ENOMEM when OpenSSL could not allocate (answer systemFailure). Never reads
 * beyond der + len. Leaves the OpenSSL error queue empty. */
int tsa__query_check(const struct tsa__rules *rules, const unsigned char *der, size_t len,
                     struct tsa__query *out);
/* As tsa__query_check; when the request is acceptable and keep is not NULL, *keep receives the
 * decoded request (the caller frees it with TS_REQ_free), else *keep is NULL. */
int tsa__query_check_keep(const struct tsa__rules *rules, const unsigned char *der, size_t len,
                          struct tsa__query *out, TS_REQ **keep);
/* Imprint length of an accepted hash NID, 0 if the NID is not one we know. */
size_t tsa__md_len(int nid, int allow_weak);

/* ---- units and the serial allocator (tsa_log.c) ---------------------------------------------- */

/* Serials of one unit: the current block [next, end) and a prefetched spare block, both durably
 * reserved in the store. Loop threads take serials under mu (a few integer operations, never held
 * across anything that blocks); the log thread refills the spare block. */
struct tsa__serials {
    pthread_mutex_t mu;
    char key[80]; /* the store's counter: "sha256:" and the hex of cert_id, never the unit name */
    int64_t next, end;
    int64_t spare_first, spare_end; /* 0, 0: no spare yet */
    int refill_wanted;              /* set by a loop, cleared by the log thread */
    int64_t block;
};

/* A DER encoding owned by its holder (OPENSSL_malloc'd). */
struct tsa__der {
    unsigned char *p;
    size_t n;
};

/* The parts of a unit's tokens that never change, DER-encoded once from a reference token (see
 * tsa_token.c); in use once the unit's tmpl_ready is 1. */
struct tsa__tmpl {
    struct tsa__der status;                       /* PKIStatusInfo granted */
    struct tsa__der tst_version;                  /* INTEGER 1 */
    struct tsa__der policy[1 + TSA_MAX_POLICIES]; /* the default, then the accepted ones */
    struct tsa__der accuracy;                     /* may be empty */
    struct tsa__der tsa_name;                     /* [0] GeneralName, may be empty */
    struct tsa__der sd_head;                      /* SignedData version and digestAlgorithms */
    struct tsa__der certs;                        /* [0] certificates, for certReq */
    struct tsa__der si_head;                      /* SignerInfo version, sid and digestAlgorithm */
    struct tsa__der si_sig_alg;                   /* SignerInfo signatureAlgorithm */
    struct tsa__der attr_content_type, attr_signing_cert; /* the two constant signed attributes */
    struct tsa__der oid_signing_time, oid_message_digest, oid_tst_info, oid_signed_data;
    size_t sig_max;     /* the largest signature of the key */
    unsigned precision; /* genTime fraction digits: 0, 3 or 6 */
};

struct tsa__unit {
    char name[TSA_NAME_MAX];
    char route[TSA_NAME_MAX + 256]; /* path/NAME */
    X509 *cert;
    STACK_OF(X509) * chain; /* may be NULL */
    struct hsm_key *key;
    EVP_MD *sign_md; /* fetched from the HSM library context */
    EVP_MD *ess_md;
    ASN1_OBJECT *policy;
    char policy_txt[128];
    ASN1_OBJECT *accepted[TSA_MAX_POLICIES];
    char accepted_txt[TSA_MAX_POLICIES][128];
    int n_accepted;
    int64_t accuracy_us;
    int64_t not_after;                 /* the certificate's notAfter, seconds since the epoch */
    _Atomic int64_t expired_logged_ms; /* last "certificate expired" log line (loops race: fine) */
    int tsa_name;
    struct tsa__rules rules;
    unsigned char cert_id[STORE_TSA_CERT_ID_LEN]; /* SHA-256 of cert: the token log's key */
    struct tsa__serials serials;

    struct tsa__tmpl tmpl;
    /* Signing threads read tmpl only once this is 1 (release-stored after tmpl is complete). A
     * template missed at start-up because of the token (the key refused, a reference signature
     * failed) is built later by one signing thread at a time (tsa__tmpl_retry_blocking); one
     * missed because the rebuilt reference differs is not retried (that is not going to change). */
    _Atomic int tmpl_ready;
    _Atomic int tmpl_retry;        /* 1: build it when tmpl_retry_ms has passed */
    _Atomic int64_t tmpl_retry_ms; /* monotonic */
    _Atomic int tmpl_building;     /* a signing thread builds it now */

    /* TS_RESP_CTX objects ready for reuse by signing threads (one request at a time each). */
    pthread_mutex_t ctx_mu;
    TS_RESP_CTX *ctx_pool[TSA__CTX_POOL_MAX];
    int n_ctx;
};

/* Takes the next serial of unit; UTIL_EBUSY when both blocks are used up (the log thread is late
 * or the store fails). May ask the log thread for a refill. Loop threads; does not block. */
int tsa__serial_take(struct tsa_service *svc, struct tsa__unit *unit, int64_t *serial);
/* Start-up: reserves the current and the spare block (blocking, store calls). */
int tsa__serials_init_blocking(struct tsa__unit *unit, struct store *store, int64_t block);

/* ---- a request in flight --------------------------------------------------------------------- */

struct tsa__job {
    struct tsa_service *svc;
    struct tsa__unit *unit;
    /* Owed to the loop's util_pool_port: whoever finishes the job (signing or log thread) completes
     * it once, and the job comes back on its loop, or is freed there if the loop is gone. */
    struct util_pool_completion *completion;
    struct http_request *req;
    int64_t serial;
    int64_t gen_time_ms;   /* set while signing */
    struct timespec fixed; /* tv_sec != 0: sign with this time (start-up self-check) */
    TS_REQ *parsed;        /* the decoded request (the loop's), freed with the job */
    struct tsa__query query;
    struct util_blob *reply; /* the signed TimeStampResp once signed */
    int reject;              /* enum tsa__reject if the request failed after the check */
    size_t der_len;
    unsigned char der[]; /* a copy of the request: the worker must not touch http's */
};

/* Hands a finished job (reply or reject set) to its loop; any thread. */
void tsa__deliver(struct tsa__job *job);
/* Frees a job and ends its in-flight accounting. */
void tsa__job_free(struct tsa__job *job);

/* ---- signing (tsa_sign.c) -------------------------------------------------------------------- */

/* hsm_submit work: signs job on a signing thread; 0, UTIL_EHSM or UTIL_ENOMEM. */
int tsa__sign_work(void *thread_state, void *arg);
/* hsm_submit done (on the signing thread): routes the job to the log thread or its loop. */
void tsa__sign_done(void *arg, int result);
/* Frees the unit's pooled TS_RESP_CTX objects. */
void tsa__ctx_pool_free(struct tsa__unit *unit);
/* Signs job with OpenSSL's TS_RESP_create_response (the reference, and the path of a unit without
 * template): job->reply and job->gen_time_ms on success; 0, UTIL_EHSM or UTIL_ENOMEM. */
int tsa__sign_openssl(struct tsa__job *job);

/* ---- tokens from the template (tsa_token.c) ---------------------------------------------------- */

/* Makes the signature over data (the DER SET of signed attributes) into sig (sig_max bytes). */
typedef int (*tsa__sign_fn)(void *arg, const unsigned char *data, size_t len, unsigned char *sig,
                            size_t *sig_len);
/* A tsa__sign_fn that hands out a signature made before (the start-up self-check rebuilds the
 * reference token with the reference's own signature; tests do the same). arg: a tsa__replay. */
struct tsa__replay {
    const unsigned char *sig;
    size_t len;
};
int tsa__sign_replay(void *arg, const unsigned char *data, size_t len, unsigned char *sig,
                     size_t *sig_len);
/* Builds unit->tmpl from a reference token that OpenSSL signs now with the unit's key, and checks
 * it by rebuilding that token from the template (identical bytes required), then sets
 * unit->tmpl_ready. On any failure the unit keeps tmpl_ready == 0 (logged) and its tokens come
 * from OpenSSL's path, and tmpl_retry says whether to try again later (a token or memory error:
 * yes; a rebuilt reference that differs: no); the return is UTIL_OK unless memory ran out.
 * Start-up, and tsa__tmpl_retry_blocking (signs in the HSM, blocking). The unit's signing threads
 * must not read tmpl meanwhile: at start-up there are none; later tmpl_ready is 0 and
 * tmpl_building keeps other builders out. */
int tsa__tmpl_init_blocking(struct tsa_service *svc, struct tsa__unit *unit);
/* On a signing thread, for a unit without template: builds it if a retry is due (TSA__TMPL_RETRY_MS
 * apart) and no other thread builds it now; returns at once otherwise. */
void tsa__tmpl_retry_blocking(struct tsa_service *svc, struct tsa__unit *unit);
#define TSA__TMPL_RETRY_MS 10000
void tsa__tmpl_cleanup(struct tsa__tmpl *tmpl);
/* Builds the granted TimeStampResp for req (already checked) with the unit's template: serial,
 * genTime from now, the policy of policy_index (-1: default), signed by sign. *der is
 * OPENSSL_malloc'd. 0, UTIL_ENOMEM, or sign's error. Any thread. */
int tsa__token_build(const struct tsa__unit *unit, TS_REQ *req, int policy_index, int64_t serial,
                     const struct timespec *now, tsa__sign_fn sign, void *sign_arg,
                     unsigned char **der, size_t *der_len);

/* ---- token log (tsa_log.c) ------------------------------------------------------------------- */

struct tsa__record {
    struct tsa__unit *unit;
    struct tsa__job *job; /* durable mode: answered after the commit; else NULL */
    int64_t serial;
    int64_t gen_time_ms;
    const char *policy_txt; /* owned by the unit */
    int md_nid;
    size_t imprint_len;
    unsigned char imprint[TSA__IMPRINT_MAX];
};

struct tsa__log {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct tsa__record *ring; /* capacity records */
    int capacity, head, count;
    int stopping;
    int wake_at; /* signal the log thread when count reaches this; 0: it is not waiting */
    int started;
    pthread_t thread;
    struct store *store; /* the log thread's connection */
    char store_path[4096];
    _Atomic int failing; /* last commit or reservation failed */
};

/* Queues job's record; UTIL_EBUSY when the ring is full. with_job: the log thread answers the
 * job after the commit. Any thread. */
int tsa__log_push(struct tsa_service *svc, struct tsa__job *job, int with_job);
void tsa__log_wake(struct tsa_service *svc);
int tsa__log_start(struct tsa_service *svc);
void tsa__log_stop(struct tsa_service *svc);

/* ---- the service ----------------------------------------------------------------------------- */

struct tsa_service {
    struct tsa_config cfg;
    char path[256];
    struct hsm *hsm;
    struct tsa__unit units[TSA_MAX_UNITS];
    int n_units;
    struct util_blob *rejects[TSA__REJ_COUNT];
    /* Per HTTP loop, the mailbox that signing and log threads complete jobs into; set and cleared
     * by that loop's own thread (loop_init, loop_fini). */
    struct util_pool_port *ports[TSA__MAX_LOOPS];
    struct tsa__log log;

    _Atomic int stopping;
    /* Accepted requests not yet freed. Raised on a loop thread; lowered only under inflight_mu
     * (inflight_release), which wakes tsa_service_stop when it reaches 0. */
    _Atomic int inflight;
    pthread_mutex_t inflight_mu;
    pthread_cond_t inflight_cond;
    _Atomic int clock_bad; /* 1 during an episode of unusable clock (logged once) */
    /* The last clock reading and when it was taken (util_mono_ms; 0 = none yet), under clock_mu:
     * adjtimex(2) costs a system call and the kernel's entropy mixing, once per request it was
     * a tenth of a loop thread's time under load. */
    pthread_mutex_t clock_mu;
    struct tsa_clock_state clock_last;
    int clock_last_rc;
    int64_t clock_read_ms;
    _Atomic int clock_ok;
    _Atomic int serials_exhausted;

    _Atomic uint64_t requests, granted, unsupported_media;
    _Atomic uint64_t rejected[26];
    _Atomic uint64_t log_commits, log_records, log_failures;
};

#endif
