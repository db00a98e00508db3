/* SPDX-License-Identifier: Apache-2.0 */
/* store_import.c: bulk registration of already issued certificates, from PEM/DER files or folders
 * and from an OpenSSL CA index.txt. It is written against the public store API plus the backend's
 * cert_add (which reports whether a row was created), or its cert_add_bulk when it has one (one
 * COPY per batch on PostgreSQL instead of a round trip per row), so it works unchanged on any
 * backend; rows are committed in batches and every step is idempotent, so an interrupted import resumes by
 * running it again. */

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

/* Rows per transaction: large enough that the fsync per commit is amortised over many rows, small
 * enough that a crash loses little work and the WAL stays a few tens of MB. */
#define STORE_IMPORT_BATCH 10000
/* Per-item problems are logged this many times per import, then only counted, so that a bad file
 * of millions of lines cannot flood the log. */
#define STORE_IMPORT_LOG_MAX 20
/* An index.txt line longer than this is not one OpenSSL wrote. */
#define STORE_IMPORT_LINE_MAX 65536

/* Statistics: added counts certificates registered by this run, existing those already known (the
 * run changed nothing about them, except an index R line revoking a known good certificate),
 * revoked the revocations this run recorded (new certificates from R lines included), skipped the
 * certificates or lines not imported (unknown issuer, unparsable, conflicting revocation). A re-run
 * therefore reports everything as existing and nothing as revoked. */

struct import_issuer {
    int64_t id;
    X509 *cert;
    EVP_PKEY *pkey; /* borrowed from cert */
};

/* A row waiting in the open batch for the backend's bulk registration (cert_add_bulk): copies of
 * what the row points to, since the file's buffers are reused. */
struct staged {
    struct store__bulk_row row; /* its pointers are set at the flush */
    unsigned char serial[STORE_SERIAL_MAX];
    char *subject;      /* owned, or NULL */
    unsigned char *der; /* owned, or NULL */
    char *request_id;   /* owned, or NULL */
    char where[64];     /* for a log line about an R line found already registered */
    int repeat;         /* an earlier row of the batch has the same certificate */
};

/* Slots of the open batch's (issuer, serial) set: a power of two above twice the batch size. */
#define STORE_IMPORT_KEY_SLOTS 32768

struct import {
    struct store *store;
    struct staged *staged; /* bulk mode (the backend has cert_add_bulk): the open batch's rows */
    size_t n_staged, cap_staged;
    int32_t *keys; /* STORE_IMPORT_KEY_SLOTS indices into staged (-1: free), NULL until needed */
    struct import_issuer *issuers;
    size_t n_issuers;
    size_t cap_issuers;
    size_t last_match; /* bulk files come from one issuer: try the last match first */
    struct store_import_stats stats;
    int in_batch;       /* rows written in the open transaction */
    int in_tx;          /* store_begin_blocking is open */
    int64_t feed_mark;  /* the change-feed head when the open batch began */
    const char *source; /* the file or folder, for the batch's audit record */
    int logged;         /* per-item log lines so far */
    void (*progress)(void *ctx, const struct store_import_stats *s);
    void *progress_ctx;
};

/* Logs one skipped item (rate-limited) and counts it. The format is a plain string plus context. */
static void skip_item(struct import *im, const char *where, const char *why)
{
    im->stats.skipped++;
    if (im->logged < STORE_IMPORT_LOG_MAX)
        UTIL_WARN(STORE_MOD, "import: %s: skipped: %s", where, why);
    else if (im->logged == STORE_IMPORT_LOG_MAX)
        UTIL_WARN(STORE_MOD, "import: further skipped items are counted but not logged");
    im->logged++;
}

/* ---- batches -------------------------------------------------------------------------------- */

static void batch_abort(struct import *im);

static int batch_open(struct import *im)
{
    int rc = 0;

    if (im->in_tx)
        return 0;
    rc = store_begin_blocking(im->store);
    if (rc != 0)
        return rc;
    im->in_tx = 1;
    /* Read under the write lock that begin took: every change up to commit is this batch's. */
    rc = store_feed_head_blocking(im->store, &im->feed_mark);
    if (rc != 0)
        batch_abort(im);
    return rc;
}

/* The audit record of the open batch: one record covering every change the batch made, written in
 * the batch's transaction (a record per certificate would double the size of a large import). */
static int batch_audit(struct import *im)
{
    json_t *detail = NULL;
    char *text = NULL;
    int64_t head = 0;
    int rc = 0;

    rc = store_feed_head_blocking(im->store, &head);
    if (rc != 0 || head == im->feed_mark)
        return rc;
    detail = json_pack("{s:s, s:I}", "source", im->source != NULL ? im->source : "", "changes",
                       (json_int_t)(head - im->feed_mark));
    if (detail == NULL) /* a source path that is not UTF-8 */
        detail = json_pack("{s:I}", "changes", (json_int_t)(head - im->feed_mark));
    text = detail != NULL ? json_dumps(detail, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(detail);
    if (text == NULL)
        return UTIL_ENOMEM;
    rc = store__audit_changes(im->store, "import", "import", text, im->feed_mark + 1, head);
    free(text);
    return rc;
}

static int stage_flush(struct import *im);

/* Commits the open batch (if any) with its audit record and reports progress. */
static int batch_commit(struct import *im)
{
    int rc = 0;

    if (!im->in_tx)
        return 0;
    rc = stage_flush(im);
    if (rc == 0)
        rc = batch_audit(im);
    if (rc != 0) {
        batch_abort(im);
        return rc;
    }
    im->in_tx = 0;
    rc = store_commit_blocking(im->store);
    if (rc != 0)
        return rc;
    im->in_batch = 0;
    if (im->progress != NULL)
        im->progress(im->progress_ctx, &im->stats);
    return 0;
}

/* Counts one written row and commits when the batch is full. */
static int batch_row(struct import *im)
{
    im->in_batch++;
    if (im->in_batch < STORE_IMPORT_BATCH)
        return 0;
    return batch_commit(im);
}

static void stage_clear(struct import *im);

static void batch_abort(struct import *im)
{
    stage_clear(im);
    if (!im->in_tx)
        return;
    im->in_tx = 0;
    (void)store_rollback_blocking(
        im->store); /* the import already failed; that error is reported */
}

/* ---- bulk mode ------------------------------------------------------------------------------ */

/* DESIGN (bulk mode). A backend with cert_add_bulk (PostgreSQL: COPY) gets the batch's rows at
 * once when the batch commits, instead of one round trip per row; the outcome is the same as
 * registering them one after the other in file order: rows are checked as they are read (an R
 * line by store__revocation_check_cert, as for a certificate not registered yet), a row whose
 * certificate was registered already (before the import, or by an earlier row) comes back
 * not created and is then handled row by row as before (counted as known; an R line revokes it,
 * after the full check against the stored certificate). The counts are made at the flush. */

static void stage_clear(struct import *im)
{
    if (im->keys != NULL && im->n_staged > 0)
        memset(im->keys, 0xff, STORE_IMPORT_KEY_SLOTS * sizeof(*im->keys));
    for (size_t i = 0; i < im->n_staged; i++) {
        free(im->staged[i].subject);
        free(im->staged[i].der);
        free(im->staged[i].request_id);
    }
    im->n_staged = 0;
}

static void stage_free(struct import *im)
{
    stage_clear(im);
    free(im->staged);
    im->staged = NULL;
    im->cap_staged = 0;
    free(im->keys);
    im->keys = NULL;
}

/* Marks the row just staged as a repeat when an earlier row of the batch has its certificate
 * (the backend then leaves it for the row-by-row path, as a known certificate), so that the
 * backend never has to sort a batch to find repeats. */
static int stage_key(struct import *im, struct staged *st)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)st->row.cert.issuer_id;
    size_t slot = 0;

    if (im->keys == NULL) {
        im->keys = malloc(STORE_IMPORT_KEY_SLOTS * sizeof(*im->keys));
        if (im->keys == NULL)
            return UTIL_ENOMEM;
        memset(im->keys, 0xff, STORE_IMPORT_KEY_SLOTS * sizeof(*im->keys));
    }
    for (size_t i = 0; i < st->row.cert.serial_len; i++)
        h = (h ^ st->serial[i]) * 1099511628211ULL;
    for (slot = h & (STORE_IMPORT_KEY_SLOTS - 1); im->keys[slot] >= 0;
         slot = (slot + 1) & (STORE_IMPORT_KEY_SLOTS - 1)) {
        const struct staged *other = &im->staged[im->keys[slot]];
        if (other->row.cert.issuer_id == st->row.cert.issuer_id &&
            other->row.cert.serial_len == st->row.cert.serial_len &&
            memcmp(other->serial, st->serial, st->row.cert.serial_len) == 0) {
            st->repeat = 1;
            return 0;
        }
    }
    im->keys[slot] = (int32_t)(st - im->staged);
    return 0;
}

static char *dup_or_null(const char *text, int *oom)
{
    char *copy = text != NULL ? strdup(text) : NULL;

    if (text != NULL && copy == NULL)
        *oom = 1;
    return copy;
}

/* Queues one row of the open batch (rev NULL: registered good). */
static int stage_add(struct import *im, const struct store_cert_new *cn,
                     const struct store_revocation *rev, const char *where)
{
    struct staged *st = NULL;
    int oom = 0;

    if (im->n_staged == im->cap_staged) {
        size_t cap = im->cap_staged != 0 ? im->cap_staged * 2 : 1024;
        struct staged *grown = realloc(im->staged, cap * sizeof(*grown));
        if (grown == NULL)
            return UTIL_ENOMEM;
        im->staged = grown;
        im->cap_staged = cap;
    }
    st = &im->staged[im->n_staged];
    memset(st, 0, sizeof(*st));
    st->row.cert = *cn;
    memcpy(st->serial, cn->serial, cn->serial_len);
    st->subject = dup_or_null(cn->subject, &oom);
    if (cn->cert_der != NULL && cn->cert_len > 0) {
        st->der = malloc(cn->cert_len);
        if (st->der != NULL)
            memcpy(st->der, cn->cert_der, cn->cert_len);
        else
            oom = 1;
    }
    if (rev != NULL) {
        st->row.revoked = 1;
        st->row.rev = *rev;
        st->request_id = dup_or_null(rev->request_id, &oom);
    }
    (void)snprintf(st->where, sizeof(st->where), "%s", where); /* a cut only shortens a log */
    im->n_staged++; /* even on failure: stage_clear frees what was copied */
    return oom ? UTIL_ENOMEM : stage_key(im, st);
}

/* A staged row whose certificate was registered already, as the row-by-row import handles it. */
static int stage_existing(struct import *im, struct staged *st)
{
    int64_t feed_id = 0;
    int changed = 0;
    int rc = 0;

    if (!st->row.revoked) {
        im->stats.existing++;
        return 0;
    }
    rc = store__revocation_check(im->store, &st->row.rev, st->row.rev.received_at_ms);
    if (rc == UTIL_EINVAL) {
        skip_item(im, st->where, im->store->errmsg); /* names the field */
        return 0;
    }
    if (rc != 0)
        return rc;
    im->stats.existing++;
    rc = im->store->ops->revoke(im->store, &st->row.rev, &feed_id, &changed);
    if (rc == UTIL_EEXIST) {
        skip_item(im, st->where, "already revoked with a different reason");
        return 0;
    }
    if (rc == 0 && changed)
        im->stats.revoked++;
    return rc;
}

/* Registers the staged rows with the backend's bulk operation, in the open transaction. */
static int stage_flush(struct import *im)
{
    struct store__bulk_row *rows = NULL;
    unsigned char *created = NULL;
    size_t n = 0;
    int rc = 0;

    if (im->n_staged == 0)
        return 0;
    rows = malloc(im->n_staged * sizeof(*rows));
    created = malloc(im->n_staged);
    if (rows == NULL || created == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < im->n_staged; i++) {
        struct staged *st = &im->staged[i];
        st->row.cert.serial = st->serial;
        st->row.cert.subject = st->subject;
        st->row.cert.cert_der = st->der;
        st->row.rev.serial = st->serial;
        st->row.rev.request_id = st->request_id;
        if (!st->repeat)
            rows[n++] = st->row;
    }
    rc = im->store->ops->cert_add_bulk(im->store, rows, n, created);
    n = 0;
    for (size_t i = 0; rc == 0 && i < im->n_staged; i++) {
        struct staged *st = &im->staged[i];
        if (st->repeat || !created[n++]) {
            rc = stage_existing(im, st);
            continue;
        }
        im->stats.added++;
        if (st->row.revoked)
            im->stats.revoked++;
    }
out:
    free(rows);
    free(created);
    stage_clear(im);
    return rc;
}

/* Registers (or in bulk mode queues) one row of the open batch and counts it. */
static int import_row(struct import *im, const struct store_cert_new *cn, const char *where)
{
    int64_t feed_id = 0;
    int created = 0;
    int rc = batch_open(im);

    if (rc != 0)
        return rc;
    if (im->store->ops->cert_add_bulk != NULL) {
        rc = stage_add(im, cn, NULL, where);
        return rc != 0 ? rc : batch_row(im);
    }
    rc = im->store->ops->cert_add(im->store, cn, NULL, &feed_id, &created);
    if (rc != 0)
        return rc;
    if (created)
        im->stats.added++;
    else
        im->stats.existing++;
    return batch_row(im);
}

/* ---- helpers shared by both importers ------------------------------------------------------- */

/* Hex (as OpenSSL writes serials in index.txt, unsigned) to minimal two's complement content
 * octets: leading zero octets dropped, one 0x00 added back when the top bit is set. */
static int serial_from_hex(const char *hex, unsigned char *out, size_t *out_len)
{
    unsigned char buf[2 * STORE_SERIAL_MAX];
    size_t len = strlen(hex);
    size_t n = (len + 1) / 2;
    size_t skip = 0;
    size_t sign = 0;
    size_t i = 0;

    if (len == 0 || n > sizeof(buf))
        return UTIL_EINVAL;
    memset(buf, 0, sizeof(buf));
    for (i = 0; i < len; i++) {
        int c = (unsigned char)hex[i];
        size_t pos = i + (len % 2); /* an odd digit count has an implicit leading zero nibble */
        int v = 0;

        if (c >= '0' && c <= '9')
            v = c - '0';
        else if (c >= 'a' && c <= 'f')
            v = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v = c - 'A' + 10;
        else
            return UTIL_EINVAL;
        buf[pos / 2] |= (unsigned char)(pos % 2 == 0 ? v << 4 : v);
    }
    while (skip + 1 < n && buf[skip] == 0)
        skip++;
    sign = (buf[skip] & 0x80) != 0;
    if (n - skip + sign > STORE_SERIAL_MAX)
        return UTIL_EINVAL;
    if (sign)
        out[0] = 0;
    memcpy(out + sign, buf + skip, n - skip);
    *out_len = n - skip + sign;
    return 0;
}

/* YYMMDDHHMMSSZ (UTCTime, years 1950-2049) or YYYYMMDDHHMMSSZ (GeneralizedTime) to Unix seconds. */
static int parse_time(const char *s, size_t len, int64_t *out)
{
    int v[7];
    size_t i = 0;
    size_t digits = 0;

    if ((len != 13 && len != 15) || s[len - 1] != 'Z')
        return UTIL_EINVAL;
    digits = len - 1;
    for (i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)s[i]))
            return UTIL_EINVAL;
    }
    i = 0;
    if (len == 13) {
        v[0] = (s[0] - '0') * 10 + (s[1] - '0');
        v[0] += v[0] < 50 ? 2000 : 1900;
        i = 2;
    } else {
        v[0] = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
        i = 4;
    }
    for (int k = 1; k < 6; k++, i += 2)
        v[k] = (s[i] - '0') * 10 + (s[i + 1] - '0');
    /* No normalisation: 20260230000000Z is refused, not read as the 2nd of March. */
    return util_time_from_civil(v[0], v[1], v[2], v[3], v[4], v[5], out);
}

/* RFC 2253 one-line form of a name, malloc'd. */
static int name_rfc2253(const X509_NAME *name, char **out)
{
    BIO *bio = NULL;
    char *data = NULL;
    long len = 0;
    int rc = UTIL_ENOMEM;

    *out = NULL;
    bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        goto out;
    if (X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0) {
        rc = UTIL_ECRYPTO;
        goto out;
    }
    len = BIO_get_mem_data(bio, &data);
    if (len < 0) {
        rc = UTIL_ECRYPTO;
        goto out;
    }
    *out = malloc((size_t)len + 1);
    if (*out == NULL)
        goto out;
    if (len > 0)
        memcpy(*out, data, (size_t)len);
    (*out)[len] = '\0';
    rc = 0;
out:
    (void)BIO_free(bio); /* NULL-safe; a memory BIO has nothing to flush */
    return rc;
}

/* ---- issuers -------------------------------------------------------------------------------- */

static int issuer_load(void *ctx, const struct store_issuer *issuer)
{
    struct import *im = ctx;
    struct import_issuer *grown = NULL;
    const unsigned char *p = issuer->cert_der;
    X509 *cert = NULL;

    ERR_clear_error();
    cert = d2i_X509(NULL, &p, (long)issuer->cert_len);
    if (cert == NULL || X509_get0_pubkey(cert) == NULL) {
        /* An issuer we cannot parse cannot be matched; its certificates are skipped and counted. */
        util_log_openssl(UTIL_LOG_WARN, STORE_MOD, "import: issuer %s: certificate unusable",
                         issuer->name);
        X509_free(cert);
        return 0;
    }
    if (im->n_issuers == im->cap_issuers) {
        size_t cap = im->cap_issuers != 0 ? im->cap_issuers * 2 : 8;
        grown = realloc(im->issuers, cap * sizeof(*grown));
        if (grown == NULL) {
            X509_free(cert);
            return UTIL_ENOMEM;
        }
        im->issuers = grown;
        im->cap_issuers = cap;
    }
    im->issuers[im->n_issuers].id = issuer->id;
    im->issuers[im->n_issuers].cert = cert;
    im->issuers[im->n_issuers].pkey = X509_get0_pubkey(cert);
    im->n_issuers++;
    return 0;
}

static void import_cleanup(struct import *im)
{
    size_t i = 0;

    for (i = 0; i < im->n_issuers; i++)
        X509_free(im->issuers[i].cert);
    free(im->issuers);
    im->issuers = NULL;
    im->n_issuers = 0;
}

/* The registered issuer whose subject is x's issuer name and whose key verifies x's signature. */
static const struct import_issuer *issuer_of(struct import *im, X509 *x)
{
    const X509_NAME *issuer_name = X509_get_issuer_name(x);
    size_t k = 0;

    for (k = 0; k < im->n_issuers; k++) {
        size_t i = (im->last_match + k) % im->n_issuers;
        const struct import_issuer *iss = &im->issuers[i];
        int ok = 0;

        if (X509_NAME_cmp(issuer_name, X509_get_subject_name(iss->cert)) != 0)
            continue;
        ERR_clear_error();
        ok = X509_verify(x, iss->pkey) == 1;
        /* A mismatch is an expected outcome (two CAs with one name, or a forged certificate); its
         * queued OpenSSL errors carry no news, so drop them instead of logging each one. */
        ERR_clear_error();
        if (ok) {
            im->last_match = i;
            return iss;
        }
    }
    return NULL;
}

/* ---- certificate files ---------------------------------------------------------------------- */

static int import_x509(struct import *im, X509 *x, const char *where)
{
    struct store_cert_new cn;
    const struct import_issuer *iss = NULL;
    unsigned char serial[STORE_SERIAL_MAX];
    unsigned char *der = NULL;
    char *subject = NULL;
    int der_len = 0;
    int rc = 0;

    memset(&cn, 0, sizeof(cn));
    ERR_clear_error();
    iss = issuer_of(im, x);
    if (iss == NULL) {
        skip_item(im, where, "no registered issuer has this certificate's issuer name and key");
        goto out;
    }
    cn.issuer_id = iss->id;
    if (store_serial_from_asn1(X509_get0_serialNumber(x), serial, &cn.serial_len) != 0) {
        skip_item(im, where, "serial number longer than 32 octets or malformed");
        ERR_clear_error(); /* the reason is logged above; no later item may inherit it */
        goto out;
    }
    cn.serial = serial;
    if (util_asn1_time_unix(X509_get0_notBefore(x), &cn.not_before) != 0 ||
        util_asn1_time_unix(X509_get0_notAfter(x), &cn.not_after) != 0) {
        skip_item(im, where, "unreadable validity dates");
        ERR_clear_error(); /* the reason is logged above; no later item may inherit it */
        goto out;
    }
    rc = name_rfc2253(X509_get_subject_name(x), &subject);
    if (rc != 0) {
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "import: %s: cannot print subject", where);
        goto out;
    }
    cn.subject = subject;
    der_len = i2d_X509(x, &der);
    if (der_len <= 0) {
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "import: %s: cannot encode certificate", where);
        rc = UTIL_ECRYPTO;
        goto out;
    }
    cn.cert_der = der;
    cn.cert_len = (size_t)der_len;
    rc = import_row(im, &cn, where);
out:
    OPENSSL_free(der);
    free(subject);
    return rc;
}

/* Imports every certificate of one PEM (any number of blocks; other block types are ignored) or
 * DER (one or more concatenated certificates) file, streaming, so file size does not matter. */
static int import_cert_file(struct import *im, const char *path)
{
    unsigned char head[2];
    BIO *bio = NULL;
    X509 *x = NULL;
    unsigned long end = 0;
    int der = 0;
    int count = 0;
    int rc = 0;

    ERR_clear_error();
    bio = BIO_new_file(path, "rb");
    if (bio == NULL) {
        util_log_openssl(UTIL_LOG_WARN, STORE_MOD, "import: %s: cannot open", path);
        im->stats.skipped++;
        goto out;
    }
    /* A DER certificate starts with SEQUENCE and a long-form length (it is over 127 bytes); a PEM
     * file starts with text. */
    if (BIO_read(bio, head, sizeof(head)) == (int)sizeof(head))
        der = head[0] == 0x30 && (head[1] & 0x80) != 0;
    if (BIO_reset(bio) < 0) {
        util_log_openssl(UTIL_LOG_WARN, STORE_MOD, "import: %s: cannot rewind", path);
        im->stats.skipped++;
        goto out;
    }
    for (;;) {
        ERR_clear_error();
        x = der ? d2i_X509_bio(bio, NULL) : PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL)
            break;
        count++;
        rc = import_x509(im, x, path);
        X509_free(x);
        x = NULL;
        if (rc != 0)
            goto out;
    }
    /* The loop ends at end of file (PEM: "no start line"; DER: nothing left) or on garbage, after
     * which the rest of the file cannot be trusted to line up, so it is skipped as one item. */
    end = ERR_peek_last_error();
    if (der ? BIO_eof(bio) == 0
            : ERR_GET_LIB(end) != ERR_LIB_PEM || ERR_GET_REASON(end) != PEM_R_NO_START_LINE) {
        util_log_openssl(UTIL_LOG_WARN, STORE_MOD, "import: %s: unreadable after %d certificate(s)",
                         path, count);
        im->stats.skipped++;
    } else if (count == 0) {
        UTIL_WARN(STORE_MOD, "import: %s: no certificate found", path);
    }
    ERR_clear_error();
out:
    X509_free(x);
    (void)BIO_free(bio); /* NULL-safe; the file was only read */
    return rc;
}

static int cert_file_wanted(const struct dirent *entry)
{
    static const char *const suffixes[] = {".pem", ".crt", ".cer", ".der"};
    size_t len = strlen(entry->d_name);
    size_t i = 0;

    if (len < 5 || entry->d_name[0] == '.')
        return 0;
    for (i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
        if (strcasecmp(entry->d_name + len - 4, suffixes[i]) == 0)
            return 1;
    }
    return 0;
}

/* Byte order, independent of the locale, so the order is the same on every machine. */
static int name_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

static int import_cert_dir(struct import *im, const char *dir)
{
    struct dirent **entries = NULL;
    struct stat st;
    char *path = NULL;
    int n = 0;
    int i = 0;
    int rc = 0;

    n = scandir(dir, &entries, cert_file_wanted, name_order);
    if (n < 0) {
        rc = util_errno(errno);
        UTIL_ERROR(STORE_MOD, "import: %s: cannot list: %s", dir, strerror(errno));
        entries = NULL;
        goto out;
    }
    for (i = 0; i < n; i++) {
        size_t len = strlen(dir) + strlen(entries[i]->d_name) + 2;
        free(path);
        path = malloc(len);
        if (path == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        (void)snprintf(path, len, "%s/%s", dir, entries[i]->d_name); /* sized above */
        /* Not recursive: only regular files (or links to them) are read. */
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        rc = import_cert_file(im, path);
        if (rc != 0)
            goto out;
    }
out:
    free(path);
    for (i = 0; i < n; i++)
        free(entries[i]);
    free(entries);
    return rc;
}

int store_import_certs_blocking(struct store *store, const char *path,
                                void (*progress)(void *ctx, const struct store_import_stats *s),
                                void *ctx, struct store_import_stats *stats)
{
    struct import im;
    struct stat st;
    int rc = 0;

    memset(&im, 0, sizeof(im));
    if (stats != NULL)
        memset(stats, 0, sizeof(*stats));
    if (store == NULL || path == NULL)
        return UTIL_EINVAL;
    im.store = store;
    im.progress = progress;
    im.progress_ctx = ctx;
    im.source = path;
    if (stat(path, &st) != 0) {
        rc = util_errno(errno);
        UTIL_ERROR(STORE_MOD, "import: %s: %s", path, strerror(errno));
        goto out;
    }
    /* The issuers are parsed once for the whole import, not once per certificate. */
    rc = store_issuer_list_blocking(store, issuer_load, &im);
    if (rc != 0)
        goto out;
    if (im.n_issuers == 0)
        UTIL_WARN(STORE_MOD, "import: no issuer is registered; every certificate will be skipped");
    rc = S_ISDIR(st.st_mode) ? import_cert_dir(&im, path) : import_cert_file(&im, path);
    if (rc == 0)
        rc = batch_commit(&im);
out:
    batch_abort(&im);
    stage_free(&im);
    import_cleanup(&im);
    if (rc == 0)
        UTIL_INFO(STORE_MOD,
                  "import %s: %" PRId64 " added, %" PRId64 " already known, %" PRId64 " skipped",
                  path, im.stats.added, im.stats.existing, im.stats.skipped);
    if (stats != NULL)
        *stats = im.stats;
    return rc;
}

/* ---- index.txt ------------------------------------------------------------------------------ */

/* Reason names as OpenSSL's `ca` writes them in index.txt (apps/ca.c crl_reasons), including its
 * pseudo reasons: holdInstruction is a hold with an instruction OID, keyTime/CAkeyTime a key or CA
 * compromise with the compromise time as the next field. */
static int index_reason(const char *name, int *reason, int *has_time)
{
    static const struct {
        const char *name;
        int reason;
        int has_time;
    } names[] = {
        {"unspecified", STORE_REASON_UNSPECIFIED, 0},
        {"keyCompromise", STORE_REASON_KEY_COMPROMISE, 0},
        {"CACompromise", STORE_REASON_CA_COMPROMISE, 0},
        {"affiliationChanged", STORE_REASON_AFFILIATION_CHANGED, 0},
        {"superseded", STORE_REASON_SUPERSEDED, 0},
        {"cessationOfOperation", STORE_REASON_CESSATION, 0},
        {"certificateHold", STORE_REASON_CERTIFICATE_HOLD, 0},
        {"removeFromCRL", STORE_REASON_REMOVE_FROM_CRL, 0},
        {"holdInstruction", STORE_REASON_CERTIFICATE_HOLD, 0},
        {"keyTime", STORE_REASON_KEY_COMPROMISE, 1},
        {"CAkeyTime", STORE_REASON_CA_COMPROMISE, 1},
    };
    size_t i = 0;
    int rfc = 0;

    *has_time = 0;
    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcasecmp(name, names[i].name) == 0) {
            *reason = names[i].reason;
            *has_time = names[i].has_time;
            return 0;
        }
    }
    /* RFC 5280 names OpenSSL does not write (privilegeWithdrawn, aACompromise) and "none". */
    rfc = store_reason_from_name(name);
    if (rfc == -2)
        return UTIL_EINVAL;
    *reason = rfc;
    return 0;
}

/* "date[,reason[,extra]]" of an R line. */
static int parse_revinfo(char *field, int64_t *revoked_at, int *reason, int64_t *invalidity)
{
    char *reason_name = NULL;
    char *extra = NULL;
    int has_time = 0;

    *reason = STORE_REASON_NONE;
    *invalidity = 0;
    reason_name = strchr(field, ',');
    if (reason_name != NULL) {
        *reason_name++ = '\0';
        extra = strchr(reason_name, ',');
        if (extra != NULL)
            *extra++ = '\0';
    }
    if (parse_time(field, strlen(field), revoked_at) != 0)
        return UTIL_EINVAL;
    if (reason_name == NULL)
        return 0;
    if (index_reason(reason_name, reason, &has_time) != 0)
        return UTIL_EINVAL;
    if (has_time && (extra == NULL || parse_time(extra, strlen(extra), invalidity) != 0))
        return UTIL_EINVAL;
    return 0;
}

/* Registers one R line's certificate as revoked, or revokes it if it is already known. */
static int index_revoked(struct import *im, const struct store_cert_new *cn,
                         struct store_revocation *rev, const char *where)
{
    int64_t feed_id = 0;
    int created = 0;
    int changed = 0;
    int rc = 0;

    rc = im->store->ops->cert_add(im->store, cn, rev, &feed_id, &created);
    if (rc != 0)
        return rc;
    if (created) {
        im->stats.added++;
        im->stats.revoked++;
        return 0;
    }
    im->stats.existing++;
    rc = im->store->ops->revoke(im->store, rev, &feed_id, &changed);
    if (rc == UTIL_EEXIST) {
        /* Already revoked for another reason: the store keeps its own record. */
        skip_item(im, where, "already revoked with a different reason");
        return 0;
    }
    if (rc == 0 && changed)
        im->stats.revoked++;
    return rc;
}

/* Bulk mode: checks an R line as for a certificate not registered yet and queues it (the check
 * against a stored certificate is made at the flush, for the rows found registered). */
static int index_revoked_bulk(struct import *im, const struct store_cert_new *cn,
                              const struct store_revocation *rev, const char *where)
{
    int rc = store__revocation_check_cert(im->store, rev, rev->received_at_ms, NULL);

    if (rc == UTIL_EINVAL) {
        skip_item(im, where, im->store->errmsg); /* names the field */
        return 0;
    }
    if (rc == 0)
        rc = stage_add(im, cn, rev, where);
    return rc != 0 ? rc : batch_row(im);
}

static int import_index_line(struct import *im, int64_t issuer_id, char *line, const char *where)
{
    struct store_cert_new cn;
    struct store_revocation rev;
    unsigned char serial[STORE_SERIAL_MAX];
    char *fields[6];
    char *cursor = line;
    int nfields = 0;
    int rc = 0;

    memset(&cn, 0, sizeof(cn));
    memset(&rev, 0, sizeof(rev));
    while (nfields < 6 && cursor != NULL) {
        fields[nfields++] = cursor;
        cursor = strchr(cursor, '\t');
        if (cursor != NULL)
            *cursor++ = '\0';
    }
    if (nfields < 4 || fields[0][0] == '\0' || fields[0][1] != '\0') {
        skip_item(im, where, "not an index.txt line");
        return 0;
    }
    cn.issuer_id = issuer_id;
    cn.subject = nfields >= 6 && fields[5][0] != '\0' ? fields[5] : NULL;
    if (parse_time(fields[1], strlen(fields[1]), &cn.not_after) != 0) {
        skip_item(im, where, "bad expiry time");
        return 0;
    }
    if (serial_from_hex(fields[3], serial, &cn.serial_len) != 0) {
        skip_item(im, where, "bad serial number");
        return 0;
    }
    cn.serial = serial;
    switch (fields[0][0]) {
    case 'V':
    case 'E':
        /* Expired certificates stay known (good, not_after in the past): OCSP must answer for
         * them correctly rather than "unknown". */
        return import_row(im, &cn, where);
    case 'R':
        if (parse_revinfo(fields[2], &rev.revoked_at, &rev.reason, &rev.invalidity_date) != 0) {
            skip_item(im, where, "bad revocation date or reason");
            return 0;
        }
        if (!store__reason_valid_for_revoke(rev.reason)) {
            skip_item(im, where, "reason removeFromCRL is not a revocation");
            return 0;
        }
        rev.issuer_id = issuer_id;
        rev.serial = serial;
        rev.serial_len = cn.serial_len;
        /* The request is this import: its deadline clock starts now, not at the historical
         * revocation date. */
        rev.received_at_ms = util_now_ms();
        rev.actor = "import";
        rc = batch_open(im);
        if (rc == 0 && im->store->ops->cert_add_bulk != NULL)
            return index_revoked_bulk(im, &cn, &rev, where);
        if (rc == 0)
            rc = store__revocation_check(im->store, &rev, rev.received_at_ms);
        if (rc == UTIL_EINVAL) {
            skip_item(im, where, im->store->errmsg); /* names the field */
            return 0;
        }
        if (rc == 0)
            rc = index_revoked(im, &cn, &rev, where);
        if (rc != 0)
            return rc;
        return batch_row(im);
    default: skip_item(im, where, "unknown status letter"); return 0;
    }
}

int store_import_index_blocking(struct store *store, int64_t issuer_id, const char *path,
                                void (*progress)(void *ctx, const struct store_import_stats *s),
                                void *ctx, struct store_import_stats *stats)
{
    struct import im;
    char where[64];
    FILE *file = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len = 0;
    int64_t lineno = 0;
    int rc = 0;

    memset(&im, 0, sizeof(im));
    if (stats != NULL)
        memset(stats, 0, sizeof(*stats));
    if (store == NULL || path == NULL || issuer_id <= 0)
        return UTIL_EINVAL;
    im.store = store;
    im.progress = progress;
    im.progress_ctx = ctx;
    im.source = path;
    file = fopen(path, "r");
    if (file == NULL) {
        rc = util_errno(errno);
        UTIL_ERROR(STORE_MOD, "import: %s: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        errno = 0;
        len = getline(&line, &cap, file);
        if (len < 0) {
            if (ferror(file)) {
                rc = util_errno(errno != 0 ? errno : EIO);
                UTIL_ERROR(STORE_MOD, "import: %s: read failed after line %" PRId64, path, lineno);
                goto out;
            }
            break;
        }
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0)
            continue;
        (void)snprintf(where, sizeof(where), "index line %" PRId64, lineno); /* may truncate */
        if (len > STORE_IMPORT_LINE_MAX) {
            skip_item(&im, where, "line too long");
            continue;
        }
        rc = import_index_line(&im, issuer_id, line, where);
        if (rc != 0) {
            UTIL_ERROR(STORE_MOD, "import: %s: %s failed: %s", path, where, util_strerror(rc));
            goto out;
        }
    }
    rc = batch_commit(&im);
out:
    batch_abort(&im);
    stage_free(&im);
    free(line);
    if (file != NULL)
        (void)fclose(file); /* read-only stream: nothing to flush */
    if (rc == 0)
        UTIL_INFO(STORE_MOD,
                  "import %s: %" PRId64 " added, %" PRId64 " already known, %" PRId64
                  " revoked, %" PRId64 " skipped",
                  path, im.stats.added, im.stats.existing, im.stats.revoked, im.stats.skipped);
    if (stats != NULL)
        *stats = im.stats;
    return rc;
}
