/* SPDX-License-Identifier: Apache-2.0 */
/* directory: the public certificate directory and the online status check, as web pages a person
 * can use (issue 20) on the public listener under /directory: search by name, e-mail, serial or
 * fingerprint; one page per certificate with its status right now; a form that checks a pasted or
 * uploaded certificate without storing it; one page per issuing CA. Server-rendered HTML (no
 * JavaScript), every page also as JSON (?format=json or Accept: application/json), in Vietnamese
 * and English (Accept-Language, switchable with ?lang=), dates in UTC with the local time shown.
 *
 * The module knows the store (search and certificates) and http (routes); what it shows of OCSP,
 * CRLs and TSA units comes through the hooks and plain data the caller (cli/serve.c) hands in, so
 * that it sits low in the module graph.
 *
 * Life cycle (start-up thread): directory_new -> directory_register (before http_server_start)
 * -> ... -> (http server freed: its loops closed the ports) -> directory_free. */
#ifndef PKIVA_DIRECTORY_H
#define PKIVA_DIRECTORY_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

struct http_server;
struct directory;

#define DIRECTORY_MAX_ISSUERS 64
#define DIRECTORY_MAX_TSA_UNITS 8
#define DIRECTORY_MAX_POLICIES 9

/* ---- configuration: the [directory] section ---------------------------------------------------- */

/* Searchable fields (search_fields): bits. */
#define DIRECTORY_FIELD_CN 1u
#define DIRECTORY_FIELD_O 2u
#define DIRECTORY_FIELD_OU 4u
#define DIRECTORY_FIELD_EMAIL 8u
#define DIRECTORY_FIELD_SERIAL 16u
#define DIRECTORY_FIELD_FINGERPRINT 32u
#define DIRECTORY_FIELD_ALL 63u

/* Every directive of [directory] is declared once, in the table in directory_config.c (name,
 * kind, limits, default, one line of documentation); conf/pkiva.conf documents the same. */
struct directory_config {
    int enabled;            /* serve the pages at all */
    unsigned search_fields; /* DIRECTORY_FIELD_* bits */
    char issuers[1024];     /* comma-separated names; empty: every configured issuer */
    int show_email;         /* 0: e-mail addresses are masked on pages */
    int page_size;          /* results per page */
    int threads;            /* store worker threads (one read-only connection each) */
    int queue_max;          /* requests waiting for them; past it 503 */
    int rate_per_minute;    /* searches/checks per client address */
    int rate_burst;
    size_t upload_max;      /* certificate bytes accepted by the check */
    int utc_offset_minutes; /* the local time shown next to UTC */
    char default_lang[4];   /* when Accept-Language names neither vi nor en */
};
/* Fills cfg with the table's defaults. */
void directory_config_default(struct directory_config *cfg);
/* The [directory] directive table (static storage) and its length. */
struct util_conf_directive;
const struct util_conf_directive *directory_config_directives(size_t *n);

/* ---- what the directory shows ------------------------------------------------------------------ */

/* A certificate's status in the OCSP responder's index right now. */
struct directory_status {
    int status;              /* 0 good, 1 revoked (store_cert_status) */
    int reason;              /* enum store_reason */
    int64_t revoked_at;      /* unix seconds */
    int64_t invalidity_date; /* 0 = none */
};

/* The CRLs an issuer serves right now. */
struct directory_crl_info {
    int64_t full_number, delta_number; /* 0 = none yet */
    int64_t this_update, next_update;  /* of the full CRL (unix seconds) */
    int64_t delta_this_update;
    int64_t full_entries, delta_entries; /* -1 = not counted (loaded from the store at start) */
};

struct directory_hooks {
    /* Status of (issuer, serial) from the index that answers OCSP: 1 and *out when the index has
     * it, 0 when not (then the store's row is shown). Called on store worker threads: must be
     * thread-safe and must not block. Optional. */
    int (*status)(void *ctx, int64_t store_issuer_id, const unsigned char *serial,
                  size_t serial_len, struct directory_status *out);
    /* The CRLs of the issuer called name: 0 and *out, or an error. Any thread, must not block.
     * Optional. */
    int (*crl_info)(void *ctx, const char *issuer_name, struct directory_crl_info *out);
    void *ctx;
};

struct directory_issuer {
    const char *name;        /* URL-safe issuer name (copied) */
    int64_t store_issuer_id; /* its id in the store */
    X509 *cert;              /* the CA certificate (reference taken) */
};

struct directory_tsa_unit {
    const char *name;                             /* copied */
    const char *url;                              /* where it answers (copied) */
    const char *policies[DIRECTORY_MAX_POLICIES]; /* default first (copied) */
    int n_policies;
};

struct directory_params {
    const char *store_path; /* the worker threads open it read-only */
    const char *public_url; /* "http://ca.example.vn" (no slash at the end) */
    const char *ocsp_url;   /* the OCSP responder's URL */
    int crl_deltas;         /* 1 when delta CRLs are published */
    const struct directory_issuer *issuers;
    int n_issuers;
    const struct directory_tsa_unit *tsa_units;
    int n_tsa_units;
    struct directory_hooks hooks;
};

/* Checks cfg against params (issuers named in cfg->issuers exist), copies what it needs. Opens
 * nothing. Returns 0 and *out, UTIL_ECONFIG (logged) or UTIL_ENOMEM. */
int directory_new(const struct directory_config *cfg, const struct directory_params *params,
                  struct directory **out);
/* Starts the store worker threads and routes GET/POST /directory on HTTP_PUBLIC with per-loop
 * hooks. Does nothing when the directory is disabled. Before http_server_start. */
int directory_register(struct directory *dir, struct http_server *srv);
/* After the http server was freed. NULL-safe. */
void directory_free(struct directory *dir);

/* Prometheus text of the directory's counters into buf: the bytes written, or UTIL_EINVAL when
 * len is too small. NULL dir (the directory switched off) writes nothing. */
int directory_metrics(const struct directory *dir, char *buf, size_t len);

#endif
