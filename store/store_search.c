/* SPDX-License-Identifier: Apache-2.0 */
/* store_search.c: what a certificate is found by in the public directory, computed the same way by
 * every backend: the subject's common names, organisations, units and e-mail addresses as folded
 * text, and the keys of its SHA-256 and SHA-1 fingerprints. Backends index these when a certificate
 * is added; store.c validates the queries. */

#include <ctype.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <string.h>

#include "store/store.h"
#include "store/store_int.h"
#include "util/util.h"

void store__search_fold(const char *in, size_t in_len, char *out, size_t out_len)
{
    size_t o = 0;

    if (out_len == 0)
        return;
    for (size_t i = 0; i < in_len && in[i] != '\0';) {
        unsigned char c = (unsigned char)in[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (i + n > in_len)
            break;
        /* U+0110 Đ and U+0111 đ: a letter of its own, so unicode61 does not strip it to d. */
        if (n == 2 && c == 0xC4 &&
            ((unsigned char)in[i + 1] == 0x90 || (unsigned char)in[i + 1] == 0x91)) {
            if (o + 1 >= out_len)
                break;
            out[o++] = 'd';
        } else {
            if (o + n >= out_len)
                break; /* cut at a character boundary */
            memcpy(out + o, in + i, n);
            o += n;
        }
        i += n;
    }
    out[o] = '\0';
}

int store__search_words(const char *folded, struct store__search_words *out)
{
    size_t chars = 0;

    out->n = 0;
    out->last_is_prefix = 0;
    for (const char *p = folded; *p != '\0';) {
        const char *start;
        while (*p != '\0' && (unsigned char)*p < 0x80 && !isalnum((unsigned char)*p))
            p++;
        start = p;
        while (*p != '\0' && ((unsigned char)*p >= 0x80 || isalnum((unsigned char)*p)))
            p++;
        if (p == start)
            continue;
        if (out->n >= STORE_SEARCH_WORDS_MAX)
            return UTIL_EINVAL;
        out->start[out->n] = start;
        out->len[out->n++] = (size_t)(p - start);
    }
    if (out->n == 0)
        return UTIL_EINVAL;
    for (size_t i = 0; i < out->len[out->n - 1]; i++) /* UTF-8 characters, not octets */
        chars += ((unsigned char)out->start[out->n - 1][i] & 0xC0) != 0x80;
    out->last_is_prefix = chars >= 3;
    return UTIL_OK;
}

int store__serial_forms(const unsigned char *key, size_t key_len,
                        unsigned char forms[2][STORE_SERIAL_MAX + 1], size_t lens[2])
{
    size_t skip = 0;

    while (skip + 1 < key_len && key[skip] == 0)
        skip++;
    lens[0] = key_len - skip;
    memcpy(forms[0], key + skip, lens[0]);
    if (lens[0] >= STORE_SERIAL_MAX)
        return 1;
    forms[1][0] = 0;
    memcpy(forms[1] + 1, key + skip, lens[0]);
    lens[1] = lens[0] + 1;
    return 2;
}

/* Appends one value (UTF-8) to a space-separated field. */
static void field_add(char *field, const unsigned char *value, int len)
{
    size_t used = strlen(field);
    if (len <= 0 || used + 2 >= STORE__SEARCH_FIELD_MAX)
        return;
    if (used > 0)
        field[used++] = ' ';
    store__search_fold((const char *)value, (size_t)len, field + used,
                       STORE__SEARCH_FIELD_MAX - used);
}

static void name_field(const X509_NAME *name, int nid, char *field)
{
    int pos = -1;
    for (;;) {
        const X509_NAME_ENTRY *e = NULL;
        unsigned char *utf8 = NULL;
        int len;
        pos = X509_NAME_get_index_by_NID(name, nid, pos);
        if (pos < 0)
            break;
        e = X509_NAME_get_entry(name, pos);
        len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        if (len > 0)
            field_add(field, utf8, len);
        OPENSSL_free(utf8);
    }
}

int64_t store__fp_key(const unsigned char *digest)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | digest[i];
    return (int64_t)v;
}

/* addr folded and lower-cased into out (NUL-terminated); returns its length. */
static size_t email_norm(const char *addr, size_t len, char *out, size_t out_len)
{
    size_t n;
    store__search_fold(addr, len, out, out_len);
    n = strlen(out);
    for (size_t i = 0; i < n; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            out[i] = (char)(out[i] - 'A' + 'a');
    return n;
}

int64_t store__email_key(const char *addr, size_t len)
{
    char norm[STORE__SEARCH_FIELD_MAX];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    size_t n = email_norm(addr, len, norm, sizeof(norm));
    if (n == 0)
        return 0;
    if (EVP_Digest(norm, n, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32) {
        ERR_clear_error(); /* only without memory: the address is simply not indexed */
        return 0;
    }
    return store__fp_key(md);
}

int store__email_listed(const char *field, const char *addr)
{
    char want[STORE__SEARCH_FIELD_MAX], have[STORE__SEARCH_FIELD_MAX];
    size_t want_len = email_norm(addr, strlen(addr), want, sizeof(want));
    for (const char *p = field; *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        if (email_norm(p, len, have, sizeof(have)) == want_len && memcmp(have, want, want_len) == 0)
            return 1;
        p += len;
        while (*p == ' ')
            p++;
    }
    return 0;
}

int store__fp_matches(const unsigned char *der, size_t der_len, const unsigned char *key,
                      size_t key_len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    const EVP_MD *alg = key_len == 32 ? EVP_sha256() : key_len == 20 ? EVP_sha1() : NULL;
    if (alg == NULL || der == NULL)
        return 0;
    ERR_clear_error();
    if (EVP_Digest(der, der_len, md, &md_len, alg, NULL) != 1) {
        ERR_clear_error(); /* a digest of memory fails only without memory: no match */
        return 0;
    }
    return md_len == key_len && memcmp(md, key, key_len) == 0;
}

/* One DER element at *p (within *left bytes): its tag, class, the start and length of its content
 * and the whole element; advances past it. -1 when it is not a well-formed definite-length
 * element. */
struct der_elem {
    int tag, cls;
    const unsigned char *start, *content;
    long len, total;
};

static int der_next(const unsigned char **p, long *left, struct der_elem *e)
{
    const unsigned char *q = *p;
    int info = ASN1_get_object(&q, &e->len, &e->tag, &e->cls, *left);
    if ((info & 0x80) != 0 || info == 0x21) {
        ERR_clear_error(); /* malformed: the caller gives up on this certificate */
        return -1;
    }
    e->start = *p;
    e->content = q;
    e->total = (long)(q - *p) + e->len;
    *left -= e->total;
    *p = q + e->len;
    return 0;
}

/* The subject name and the extensions are read straight from the DER: d2i_X509 would also decode
 * the public key through OpenSSL 3's decoder framework, which costs about 200 us a certificate
 * (10 million certificates: over half an hour of import time for nothing the index needs). */
int store__search_keys(const unsigned char *der, size_t der_len, struct store__search_keys *out)
{
    const unsigned char *p = der, *tbs = NULL;
    long left = (long)der_len, tbs_left = 0;
    struct der_elem e;
    X509_NAME *subject = NULL;
    X509_EXTENSIONS *exts = NULL;
    GENERAL_NAMES *sans = NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    int rc = UTIL_EINVAL;

    memset(out, 0, sizeof(*out));
    if (der_len > (size_t)INT32_MAX)
        return UTIL_EINVAL;
    /* Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
     * signature, issuer, validity, subject, subjectPublicKeyInfo, [1] [2] OPTIONAL,
     * [3] extensions OPTIONAL }, ... } */
    if (der_next(&p, &left, &e) != 0 || e.tag != V_ASN1_SEQUENCE || left != 0)
        goto out;
    p = e.content;
    left = e.len;
    if (der_next(&p, &left, &e) != 0 || e.tag != V_ASN1_SEQUENCE)
        goto out;
    tbs = e.content;
    tbs_left = e.len;
    if (der_next(&tbs, &tbs_left, &e) != 0)
        goto out;
    if (e.cls == V_ASN1_CONTEXT_SPECIFIC && e.tag == 0 && der_next(&tbs, &tbs_left, &e) != 0)
        goto out;               /* e is now the serial */
    for (int i = 0; i < 4; i++) /* signature, issuer, validity, subject */
        if (der_next(&tbs, &tbs_left, &e) != 0)
            goto out;
    {
        const unsigned char *q = e.start;
        subject = d2i_X509_NAME(NULL, &q, e.total);
        if (subject == NULL) {
            ERR_clear_error(); /* not a name: nothing to index */
            goto out;
        }
    }
    if (der_next(&tbs, &tbs_left, &e) != 0) /* subjectPublicKeyInfo */
        goto out;
    while (tbs_left > 0) {
        if (der_next(&tbs, &tbs_left, &e) != 0)
            goto out;
        if (e.cls == V_ASN1_CONTEXT_SPECIFIC && e.tag == 3) {
            const unsigned char *q = e.content;
            exts = d2i_X509_EXTENSIONS(NULL, &q, e.len);
            ERR_clear_error(); /* malformed extensions: no e-mail from them */
        }
    }
    name_field(subject, NID_commonName, out->cn);
    name_field(subject, NID_organizationName, out->o);
    name_field(subject, NID_organizationalUnitName, out->ou);
    name_field(subject, NID_pkcs9_emailAddress, out->email);
    for (int i = 0; exts != NULL && i < sk_X509_EXTENSION_num(exts); i++) {
        X509_EXTENSION *ext = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(ext)) == NID_subject_alt_name) {
            sans = X509V3_EXT_d2i(ext);
            break;
        }
    }
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
        if (gn->type == GEN_EMAIL)
            field_add(out->email, ASN1_STRING_get0_data(gn->d.rfc822Name),
                      ASN1_STRING_length(gn->d.rfc822Name));
    }
    ERR_clear_error(); /* a malformed SAN extension leaves the e-mail field as it is */
    rc = UTIL_ECRYPTO;
    if (EVP_Digest(der, der_len, md, &md_len, EVP_sha256(), NULL) != 1 || md_len != 32)
        goto out;
    out->fp_sha256 = store__fp_key(md);
    if (EVP_Digest(der, der_len, md, &md_len, EVP_sha1(), NULL) != 1 || md_len != 20)
        goto out;
    out->fp_sha1 = store__fp_key(md);
    rc = UTIL_OK;
out:
    if (rc == UTIL_ECRYPTO)
        util_log_openssl(UTIL_LOG_ERROR, STORE_MOD, "search keys: digest failed");
    GENERAL_NAMES_free(sans);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(subject);
    return rc;
}
