/* SPDX-License-Identifier: Apache-2.0 */
/* A streaming DER writer for CertificateList (RFC 5280 5.1): entries are encoded straight into one
 * buffer while the store is walked, so a CRL of millions of entries costs about its own size in
 * memory and one pass, instead of an ASN.1 object per entry. Only what a CRL needs is here. */
#include "crl_int.h"

#include <stdlib.h>
#include <string.h>

/* OIDs, DER-encoded with their tag and length. */
static const unsigned char oid_aki[] = {0x06, 0x03, 0x55, 0x1d, 0x23};
static const unsigned char oid_crl_number[] = {0x06, 0x03, 0x55, 0x1d, 0x14};
static const unsigned char oid_delta_indicator[] = {0x06, 0x03, 0x55, 0x1d, 0x1b};
static const unsigned char oid_freshest[] = {0x06, 0x03, 0x55, 0x1d, 0x2e};
static const unsigned char oid_expired_on_crl[] = {0x06, 0x03, 0x55, 0x1d, 0x3c};
static const unsigned char oid_reason[] = {0x06, 0x03, 0x55, 0x1d, 0x15};
static const unsigned char oid_invalidity[] = {0x06, 0x03, 0x55, 0x1d, 0x18};

size_t crl__der_hdr_len(size_t len)
{
    if (len < 0x80)
        return 2;
    if (len <= 0xff)
        return 3;
    if (len <= 0xffff)
        return 4;
    if (len <= 0xffffff)
        return 5;
    return 6;
}

size_t crl__der_put_hdr(unsigned char *out, unsigned tag, size_t len)
{
    size_t n = crl__der_hdr_len(len);
    out[0] = (unsigned char)tag;
    if (n == 2) {
        out[1] = (unsigned char)len;
    } else {
        out[1] = (unsigned char)(0x80 | (n - 2));
        for (size_t i = 0; i < n - 2; i++)
            out[n - 1 - i] = (unsigned char)(len >> (8 * i));
    }
    return n;
}

/* Time (RFC 5280 4.1.2.5): UTCTime for years 1950-2049, else GeneralizedTime; generalized forces
 * the latter. Times past what GeneralizedTime can say are clamped to its ends (never happens for
 * real dates). */
static size_t put_time(unsigned char *out, int64_t t, int generalized)
{
    static const int64_t first = -62167219200LL; /* 0000-01-01T00:00:00Z */
    static const int64_t last = 253402300799LL;  /* 9999-12-31T23:59:59Z */
    char text[UTIL_GENTIME_LEN];
    size_t skip;

    (void)util_gentime(t < first ? first : t > last ? last : t, text); /* in range: cannot fail */
    if (!generalized && (memcmp(text, "1950", 4) < 0 || memcmp(text, "2049", 4) > 0))
        generalized = 1;
    skip = generalized ? 0 : 2; /* UTCTime drops the century */
    out[0] = generalized ? 0x18 : 0x17;
    out[1] = (unsigned char)(UTIL_GENTIME_LEN - skip);
    memcpy(out + 2, text + skip, UTIL_GENTIME_LEN - skip);
    return 2 + UTIL_GENTIME_LEN - skip;
}

size_t crl__der_time(unsigned char *out, int64_t unix_seconds)
{
    return put_time(out, unix_seconds, 0);
}

size_t crl__der_gentime(unsigned char *out, int64_t unix_seconds)
{
    return put_time(out, unix_seconds, 1);
}

/* Minimal DER INTEGER of a non-negative value (TLV) into out (>= 11 bytes). */
static size_t put_uint(unsigned char *out, int64_t value)
{
    unsigned char tmp[9];
    size_t n = 0;
    uint64_t v = (uint64_t)value;
    do {
        tmp[n++] = (unsigned char)(v & 0xff);
        v >>= 8;
    } while (v != 0);
    if (tmp[n - 1] & 0x80)
        tmp[n++] = 0;
    out[0] = 0x02;
    out[1] = (unsigned char)n;
    for (size_t i = 0; i < n; i++)
        out[2 + i] = tmp[n - 1 - i];
    return 2 + n;
}

/* ---- buffer --------------------------------------------------------------------------------- */

static int buf_reserve(struct crl__buf *b, size_t more)
{
    size_t need, cap;
    unsigned char *p = NULL;
    if (more > b->max || b->len > b->max - more)
        return UTIL_EINVAL;
    need = b->len + more;
    if (need <= b->cap)
        return UTIL_OK;
    cap = b->cap ? b->cap : 65536;
    while (cap < need)
        cap = cap > b->max / 2 ? b->max : cap * 2;
    /* glibc moves large blocks with mremap: no copy, and untouched pages of the doubled capacity
     * are never resident, so memory follows the bytes written. */
    p = realloc(b->data, cap);
    if (p == NULL)
        return UTIL_ENOMEM;
    b->data = p;
    b->cap = cap;
    return UTIL_OK;
}

static int buf_put(struct crl__buf *b, const void *data, size_t len)
{
    int rc = buf_reserve(b, len);
    if (rc != UTIL_OK)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return UTIL_OK;
}

/* ---- builder -------------------------------------------------------------------------------- */

int crl__builder_begin(struct crl__builder *b, const struct crl__tbs_params *p, size_t max_bytes)
{
    static const unsigned char version_v2[] = {0x02, 0x01, 0x01};
    unsigned char *prefix = NULL;
    size_t len = 0, cap;
    int rc = UTIL_OK;

    memset(b, 0, sizeof(*b));
    if (p->algid_len == 0 || p->algid_len > sizeof(b->algid) || p->issuer_name_len == 0) {
        rc = UTIL_EINVAL;
        goto out;
    }
    cap = sizeof(version_v2) + p->algid_len + p->issuer_name_len + 2 * 17;
    prefix = malloc(cap);
    if (prefix == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    memcpy(prefix, version_v2, sizeof(version_v2));
    len = sizeof(version_v2);
    memcpy(prefix + len, p->algid, p->algid_len);
    len += p->algid_len;
    memcpy(prefix + len, p->issuer_name, p->issuer_name_len);
    len += p->issuer_name_len;
    len += crl__der_time(prefix + len, p->this_update);
    len += crl__der_time(prefix + len, p->next_update);

    memcpy(b->algid, p->algid, p->algid_len);
    b->algid_len = p->algid_len;
    b->prefix = prefix;
    b->prefix_len = len;
    prefix = NULL;
    /* CertificateList, TBSCertList and revokedCertificates headers, then the prefix. */
    b->gap = 3 * CRL__HDR_MAX + b->prefix_len;
    b->buf.max = max_bytes < CRL__DER_MAX ? max_bytes : CRL__DER_MAX;
    rc = buf_reserve(&b->buf, b->gap);
    if (rc == UTIL_OK)
        b->buf.len = b->gap;
out:
    free(prefix);
    if (rc != UTIL_OK)
        crl__builder_cleanup(b);
    return rc;
}

int crl__builder_add(struct crl__builder *b, const struct crl__entry *e)
{
    /* Longest entry: header, INTEGER of STORE_SERIAL_MAX, Time, extensions header, reasonCode
     * (12) and invalidityDate (26). */
    unsigned char ent[CRL__HDR_MAX + 2 + STORE_SERIAL_MAX + 17 + 2 + 12 + 26];
    unsigned char body[sizeof(ent)];
    unsigned char exts[12 + 26];
    size_t n = 0, ext_len = 0, hdr;
    int reason = e->reason;

    if (e->serial_len == 0 || e->serial_len > STORE_SERIAL_MAX)
        return UTIL_EINVAL;
    /* Extensions first: their length goes into the entry's. */
    if (reason > STORE_REASON_UNSPECIFIED && reason <= STORE_REASON_AA_COMPROMISE && reason != 7) {
        /* SEQUENCE { OID reasonCode, OCTET STRING { ENUMERATED reason } } */
        static const unsigned char head[] = {0x30, 0x0a};
        memcpy(exts + ext_len, head, sizeof(head));
        ext_len += sizeof(head);
        memcpy(exts + ext_len, oid_reason, sizeof(oid_reason));
        ext_len += sizeof(oid_reason);
        exts[ext_len++] = 0x04;
        exts[ext_len++] = 0x03;
        exts[ext_len++] = 0x0a;
        exts[ext_len++] = 0x01;
        exts[ext_len++] = (unsigned char)reason;
    }
    if (e->invalidity_date != 0) {
        /* SEQUENCE { OID invalidityDate, OCTET STRING { GeneralizedTime } } */
        exts[ext_len++] = 0x30;
        exts[ext_len++] = 0x18;
        memcpy(exts + ext_len, oid_invalidity, sizeof(oid_invalidity));
        ext_len += sizeof(oid_invalidity);
        exts[ext_len++] = 0x04;
        exts[ext_len++] = 0x11;
        ext_len += crl__der_gentime(exts + ext_len, e->invalidity_date);
    }
    body[n++] = 0x02;
    body[n++] = (unsigned char)e->serial_len;
    memcpy(body + n, e->serial, e->serial_len);
    n += e->serial_len;
    n += crl__der_time(body + n, e->date);
    if (ext_len > 0) {
        n += crl__der_put_hdr(body + n, 0x30, ext_len);
        memcpy(body + n, exts, ext_len);
        n += ext_len;
    }
    hdr = crl__der_put_hdr(ent, 0x30, n);
    memcpy(ent + hdr, body, n);
    b->entries++;
    return buf_put(&b->buf, ent, hdr + n);
}

/* One Extension TLV into b: SEQUENCE { OID, [BOOLEAN TRUE], OCTET STRING { value } }. */
static int put_ext(struct crl__buf *b, const unsigned char *oid, size_t oid_len, int critical,
                   const unsigned char *value, size_t value_len)
{
    static const unsigned char crit[] = {0x01, 0x01, 0xff};
    unsigned char hdr[2 * CRL__HDR_MAX];
    size_t octets = crl__der_hdr_len(value_len) + value_len;
    size_t content = oid_len + (critical ? sizeof(crit) : 0) + octets;
    size_t n = crl__der_put_hdr(hdr, 0x30, content);
    int rc = buf_put(b, hdr, n);
    if (rc == UTIL_OK)
        rc = buf_put(b, oid, oid_len);
    if (rc == UTIL_OK && critical)
        rc = buf_put(b, crit, sizeof(crit));
    if (rc == UTIL_OK) {
        n = crl__der_put_hdr(hdr, 0x04, value_len);
        rc = buf_put(b, hdr, n);
    }
    if (rc == UTIL_OK)
        rc = buf_put(b, value, value_len);
    return rc;
}

/* crlExtensions content (the SEQUENCE OF Extension, without [0] and SEQUENCE headers). */
static int put_crl_exts(struct crl__buf *x, const struct crl__tbs_params *p)
{
    unsigned char v[64 + CRL__HDR_MAX * 2];
    size_t n;
    int rc = UTIL_OK;

    if (p->key_id != NULL && p->key_id_len > 0 && p->key_id_len <= 64) {
        /* AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING } */
        size_t inner = crl__der_hdr_len(p->key_id_len) + p->key_id_len;
        n = crl__der_put_hdr(v, 0x30, inner);
        n += crl__der_put_hdr(v + n, 0x80, p->key_id_len);
        memcpy(v + n, p->key_id, p->key_id_len);
        n += p->key_id_len;
        rc = put_ext(x, oid_aki, sizeof(oid_aki), 0, v, n);
    }
    if (rc == UTIL_OK) {
        n = put_uint(v, p->number);
        rc = put_ext(x, oid_crl_number, sizeof(oid_crl_number), 0, v, n);
    }
    if (rc == UTIL_OK && p->base_number > 0) {
        n = put_uint(v, p->base_number);
        rc = put_ext(x, oid_delta_indicator, sizeof(oid_delta_indicator), 1, v, n);
    }
    if (rc == UTIL_OK && p->freshest_url != NULL && p->base_number == 0) {
        /* CRLDistributionPoints ::= SEQUENCE OF DistributionPoint { distributionPoint [0] {
         * fullName [0] GeneralNames { uniformResourceIdentifier [6] IA5String } } } */
        size_t url_len = strlen(p->freshest_url);
        size_t uri = crl__der_hdr_len(url_len) + url_len;
        size_t full_name = crl__der_hdr_len(uri) + uri;
        size_t dp_name = crl__der_hdr_len(full_name) + full_name;
        size_t dp = crl__der_hdr_len(dp_name) + dp_name;
        size_t total = crl__der_hdr_len(dp) + dp;
        unsigned char *val = malloc(total);
        if (val == NULL)
            return UTIL_ENOMEM;
        n = crl__der_put_hdr(val, 0x30, dp);
        n += crl__der_put_hdr(val + n, 0x30, dp_name);
        n += crl__der_put_hdr(val + n, 0xa0, full_name);
        n += crl__der_put_hdr(val + n, 0xa0, uri);
        n += crl__der_put_hdr(val + n, 0x86, url_len);
        memcpy(val + n, p->freshest_url, url_len);
        rc = put_ext(x, oid_freshest, sizeof(oid_freshest), 0, val, total);
        free(val);
    }
    if (rc == UTIL_OK && p->expired_on_crl_since > 0) {
        n = crl__der_gentime(v, p->expired_on_crl_since);
        rc = put_ext(x, oid_expired_on_crl, sizeof(oid_expired_on_crl), 0, v, n);
    }
    return rc;
}

int crl__builder_tbs(struct crl__builder *b, const struct crl__tbs_params *p,
                     const unsigned char **tbs, size_t *tbs_len)
{
    struct crl__buf exts = {NULL, 0, 0, 4096};
    unsigned char hdr[2 * CRL__HDR_MAX];
    size_t entries_len = b->buf.len - b->gap;
    size_t exts_seq, exts_total = 0, revoked_total = 0, tbs_content, pos, n;
    int rc;

    rc = put_crl_exts(&exts, p);
    if (rc != UTIL_OK)
        goto out;
    /* [0] EXPLICIT SEQUENCE OF Extension */
    exts_seq = crl__der_hdr_len(exts.len) + exts.len;
    exts_total = crl__der_hdr_len(exts_seq) + exts_seq;
    n = crl__der_put_hdr(hdr, 0xa0, exts_seq);
    n += crl__der_put_hdr(hdr + n, 0x30, exts.len);
    rc = buf_put(&b->buf, hdr, n);
    if (rc == UTIL_OK)
        rc = buf_put(&b->buf, exts.data, exts.len);
    if (rc != UTIL_OK)
        goto out;
    /* revokedCertificates is absent when empty (RFC 5280 5.1.2.6). */
    if (entries_len > 0)
        revoked_total = crl__der_hdr_len(entries_len) + entries_len;
    tbs_content = b->prefix_len + revoked_total + exts_total;
    /* Headers backwards into the gap. */
    pos = b->gap;
    if (entries_len > 0) {
        n = crl__der_hdr_len(entries_len);
        pos -= n;
        (void)crl__der_put_hdr(b->buf.data + pos, 0x30, entries_len); /* length known: n */
    }
    pos -= b->prefix_len;
    memcpy(b->buf.data + pos, b->prefix, b->prefix_len);
    n = crl__der_hdr_len(tbs_content);
    pos -= n;
    (void)crl__der_put_hdr(b->buf.data + pos, 0x30, tbs_content); /* length known: n */
    b->tbs_start = pos;
    b->tbs_end = b->buf.len;
    *tbs = b->buf.data + b->tbs_start;
    *tbs_len = b->tbs_end - b->tbs_start;
out:
    free(exts.data);
    return rc;
}

int crl__builder_finish(struct crl__builder *b, const unsigned char *sig, size_t sig_len,
                        struct util_blob **out)
{
    unsigned char hdr[CRL__HDR_MAX + 1];
    struct util_blob *blob = NULL;
    size_t bits, content, n, start;
    int rc;

    *out = NULL;
    rc = buf_put(&b->buf, b->algid, b->algid_len);
    if (rc != UTIL_OK)
        goto out;
    /* BIT STRING: no unused bits. */
    bits = sig_len + 1;
    n = crl__der_put_hdr(hdr, 0x03, bits);
    hdr[n++] = 0x00;
    rc = buf_put(&b->buf, hdr, n);
    if (rc == UTIL_OK)
        rc = buf_put(&b->buf, sig, sig_len);
    if (rc != UTIL_OK)
        goto out;
    content = b->buf.len - b->tbs_start;
    n = crl__der_hdr_len(content);
    if (n > b->tbs_start) {
        rc = UTIL_EINVAL; /* cannot happen: the gap holds three maximal headers */
        goto out;
    }
    start = b->tbs_start - n;
    (void)crl__der_put_hdr(b->buf.data + start, 0x30, content); /* length known: n */
    /* One copy into the blob: blobs are allocated by util and cannot adopt this buffer. */
    blob = util_blob_new(b->buf.data + start, b->buf.len - start);
    if (blob == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    *out = blob;
out:
    crl__builder_cleanup(b);
    return rc;
}

void crl__builder_cleanup(struct crl__builder *b)
{
    if (b == NULL)
        return;
    free(b->buf.data);
    free(b->prefix);
    b->buf.data = NULL;
    b->buf.len = b->buf.cap = 0;
    b->prefix = NULL;
}
