/* SPDX-License-Identifier: Apache-2.0 */
/* dir_cert.c: one certificate as a person reads it (HTML) and as a program reads it (JSON):
 * subject and issuer names, serial, validity, key, extensions in plain words, fingerprints, the
 * status right now, and the links to the chain, the CRLs and the downloads. Every value taken from
 * the certificate goes through the escapers of dir_text.c; only http(s) URLs become links. */
#include "directory_int.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <util/util.h>

int directory__state_of(int have_status, int status, int64_t not_before, int64_t not_after,
                        int64_t now)
{
    if (!have_status)
        return DIRECTORY__UNKNOWN;
    if (status == STORE_REVOKED)
        return DIRECTORY__REVOKED;
    if (not_after != 0 && now > not_after)
        return DIRECTORY__EXPIRED;
    if (not_before != 0 && now < not_before)
        return DIRECTORY__NOT_YET;
    return DIRECTORY__GOOD;
}

static const char *attr_label(int nid)
{
    switch (nid) {
    case NID_commonName: return "CN";
    case NID_organizationName: return "O";
    case NID_organizationalUnitName: return "OU";
    case NID_countryName: return "C";
    case NID_stateOrProvinceName: return "ST";
    case NID_localityName: return "L";
    case NID_pkcs9_emailAddress: return "E";
    case NID_serialNumber: return "serialNumber";
    case NID_title: return "T";
    case NID_givenName: return "GN";
    case NID_surname: return "SN";
    case NID_userId: return "UID";
    default: return NULL;
    }
}

char *directory__name_line(const X509_NAME *name, int show_email)
{
    struct directory__buf b;
    int n = X509_NAME_entry_count(name);
    int first = 1;
    directory__buf_init(&b, 64 * 1024);
    directory__put(&b, "");
    for (int i = n - 1; i >= 0; i--) { /* most specific first, like RFC 4514 */
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
        const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
        int nid = OBJ_obj2nid(obj);
        const char *label = attr_label(nid);
        char oid[80];
        unsigned char *utf8 = NULL;
        int len;
        if (label == NULL) {
            if (OBJ_obj2txt(oid, sizeof(oid), obj, 1) <= 0)
                (void)snprintf(oid, sizeof(oid), "?");
            label = oid;
        }
        directory__putf(&b, "%s%s=", first ? "" : ", ", label);
        first = 0;
        if (nid == NID_pkcs9_emailAddress && !show_email) {
            directory__put(&b, "***");
            continue;
        }
        len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        if (len > 0)
            directory__putn(&b, (const char *)utf8, (size_t)len);
        else
            directory__err_clear(); /* an unreadable value shows as empty */
        OPENSSL_free(utf8);
    }
    if (b.failed) {
        directory__buf_cleanup(&b);
        return NULL;
    }
    return b.data;
}

static _Thread_local int oom_seen;

void directory__err_clear(void)
{
    if (util_openssl_oom_clear())
        oom_seen = 1;
}

void directory__oom_note(void)
{
    oom_seen = 1;
}

void directory__oom_reset(void)
{
    oom_seen = 0;
}

int directory__oom_seen(void)
{
    return oom_seen;
}

char *directory__name_cn(const X509_NAME *name)
{
    int pos = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    unsigned char *utf8 = NULL;
    char *out = NULL;
    int len;
    if (pos < 0)
        return NULL;
    len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, pos)));
    if (len < 0) {
        directory__err_clear();
        return NULL;
    }
    out = malloc((size_t)len + 1);
    if (out != NULL) {
        memcpy(out, utf8, (size_t)len);
        out[len] = '\0';
    } else {
        directory__oom_note();
    }
    OPENSSL_free(utf8);
    return out;
}

void directory__serial_colons(const unsigned char *serial, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (i > 0)
            out[o++] = ':';
        out[o++] = hex[serial[i] >> 4];
        out[o++] = hex[serial[i] & 15];
    }
    out[o] = '\0';
}

static const char *state_word(int lang, const struct directory__certview *v)
{
    switch (v->state) {
    case DIRECTORY__GOOD: return directory__t(lang, M_ST_GOOD);
    case DIRECTORY__REVOKED:
        return directory__t(lang,
                            v->reason == STORE_REASON_CERTIFICATE_HOLD ? M_ST_HOLD : M_ST_REVOKED);
    case DIRECTORY__EXPIRED: return directory__t(lang, M_ST_EXPIRED);
    case DIRECTORY__NOT_YET: return directory__t(lang, M_ST_NOT_YET);
    default: return directory__t(lang, M_ST_UNKNOWN);
    }
}

static const char *state_key(int state)
{
    static const char *const keys[] = {"good", "revoked", "expired", "not-yet-valid", "unknown"};
    return state >= 0 && state <= DIRECTORY__UNKNOWN ? keys[state] : "unknown";
}

void directory__status_html(struct directory__buf *b, const struct directory__certview *v,
                            int long_form)
{
    static const enum directory__msg longs[] = {
        M_ST_GOOD_LONG, M_ST_REVOKED_LONG, M_ST_EXPIRED_LONG, M_ST_NOT_YET_LONG, M_ST_UNKNOWN_LONG};
    int lang = v->lang;
    directory__putf(b, "<span class=\"badge st-%s\" data-status=\"%s\">%s</span>",
                    state_key(v->state), state_key(v->state), state_word(lang, v));
    if (!long_form)
        return;
    directory__putf(b, " <span>%s</span>", directory__t(lang, longs[v->state]));
    if (v->state == DIRECTORY__REVOKED) {
        const char *why = directory__reason_text(lang, v->reason);
        directory__putf(b, "<dl class=\"kv\"><dt>%s</dt><dd>", directory__t(lang, M_REVOKED_AT));
        directory__put_time_html(b, v->revoked_at, v->utc_offset);
        directory__putf(b, "</dd><dt>%s</dt><dd>%s</dd></dl>", directory__t(lang, M_REASON),
                        why ? why : "?");
    }
}

void directory__status_json(struct directory__buf *b, const struct directory__certview *v)
{
    directory__putf(b, "{\"status\":\"%s\"", state_key(v->state));
    if (v->state == DIRECTORY__REVOKED) {
        directory__put(b, ",\"revoked_at\":");
        directory__put_time_json(b, v->revoked_at);
        directory__putf(b, ",\"reason\":\"%s\"", store_reason_name(v->reason));
        if (v->invalidity_date != 0) {
            directory__put(b, ",\"invalidity_date\":");
            directory__put_time_json(b, v->invalidity_date);
        }
    }
    directory__put(b, ",\"source\":");
    directory__put_jsons(b, v->status_source);
    directory__put(b, "}");
}

/* ---- facts about the certificate ------------------------------------------------------------ */

/* The key decoded again from the certificate's SubjectPublicKeyInfo, for key_text. */
static EVP_PKEY *key_decode(X509 *x)
{
    unsigned char *der = NULL;
    const unsigned char *p = NULL;
    EVP_PKEY *pk = NULL;
    int n = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(x), &der);
    p = der;
    if (n > 0)
        pk = d2i_PUBKEY(NULL, &p, n);
    OPENSSL_free(der);
    directory__err_clear();
    return pk;
}

static int group_name(EVP_PKEY *pk, char *group, size_t len)
{
    group[0] = '\0';
    return EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, len, NULL) == 1 &&
           group[0] != '\0';
}

/* A key OpenSSL failed to decode or name may only have lacked memory (the certificate's parser
 * drops the key silently then): each step is tried a second time before the key shows as "?". */
static void key_text(X509 *x, char *out, size_t len)
{
    EVP_PKEY *pk = X509_get0_pubkey(x), *own = NULL;
    char group[64] = "";
    int bits;
    if (pk == NULL) {
        directory__err_clear();
        own = key_decode(x);
        pk = own;
    }
    if (pk == NULL) {
        (void)snprintf(out, len, "?");
        return;
    }
    bits = EVP_PKEY_get_bits(pk);
    if (bits <= 0 && own == NULL) {
        /* Its size is cached when the key is decoded: decode it afresh. */
        directory__err_clear();
        own = key_decode(x);
        pk = own != NULL ? own : pk;
        bits = EVP_PKEY_get_bits(pk);
    }
    directory__err_clear();
    /* EVP_PKEY_is_a looks names up (and may fail for want of memory); the base id is a field. */
    if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA || EVP_PKEY_get_base_id(pk) == EVP_PKEY_RSA_PSS ||
        EVP_PKEY_is_a(pk, "RSA") || EVP_PKEY_is_a(pk, "RSA-PSS")) {
        (void)snprintf(out, len, "RSA %d bit", bits);
    } else if (EVP_PKEY_get_base_id(pk) == EVP_PKEY_EC || EVP_PKEY_is_a(pk, "EC")) {
        if (!group_name(pk, group, sizeof(group)) &&
            (own != NULL || (own = key_decode(x)) == NULL ||
             !group_name(own, group, sizeof(group)))) {
            directory__err_clear();
            (void)snprintf(group, sizeof(group), "?");
        }
        (void)snprintf(out, len, "EC %s (%d bit)", group, bits);
    } else {
        (void)snprintf(out, len, "%s (%d bit)", EVP_PKEY_get0_type_name(pk), bits);
    }
    EVP_PKEY_free(own);
}

static void fingerprint(X509 *x, const EVP_MD *md, char *out)
{
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (X509_digest(x, md, d, &n) != 1) {
        /* Hashing a parsed certificate fails only for want of memory: no page then. */
        directory__err_clear();
        directory__oom_note();
        out[0] = '\0';
        return;
    }
    directory__serial_colons(d, n, out);
}

static int is_http_url(const unsigned char *s, int len)
{
    return (len > 7 && strncasecmp((const char *)s, "http://", 7) == 0) ||
           (len > 8 && strncasecmp((const char *)s, "https://", 8) == 0);
}

/* A URL from the certificate: a link when it is http(s), else text. */
static void put_url_html(struct directory__buf *b, const ASN1_IA5STRING *uri)
{
    const unsigned char *s = ASN1_STRING_get0_data(uri);
    int len = ASN1_STRING_length(uri);
    if (is_http_url(s, len)) {
        directory__put(b, "<a href=\"");
        directory__put_html(b, (const char *)s, (size_t)len);
        directory__put(b, "\">");
        directory__put_html(b, (const char *)s, (size_t)len);
        directory__put(b, "</a>");
    } else {
        directory__put(b, "<bdi>");
        directory__put_html(b, (const char *)s, (size_t)len);
        directory__put(b, "</bdi>");
    }
}

static const struct {
    int bit;
    const char *vi, *en, *key;
} key_usages[] = {
    {KU_DIGITAL_SIGNATURE, "chữ ký số", "digital signature", "digitalSignature"},
    {KU_NON_REPUDIATION, "chống chối bỏ", "non-repudiation (content commitment)", "nonRepudiation"},
    {KU_KEY_ENCIPHERMENT, "mã hóa khóa", "key encipherment", "keyEncipherment"},
    {KU_DATA_ENCIPHERMENT, "mã hóa dữ liệu", "data encipherment", "dataEncipherment"},
    {KU_KEY_AGREEMENT, "thỏa thuận khóa", "key agreement", "keyAgreement"},
    {KU_KEY_CERT_SIGN, "ký chứng thư", "certificate signing", "keyCertSign"},
    {KU_CRL_SIGN, "ký CRL", "CRL signing", "cRLSign"},
    {KU_ENCIPHER_ONLY, "chỉ mã hóa", "encipher only", "encipherOnly"},
    {KU_DECIPHER_ONLY, "chỉ giải mã", "decipher only", "decipherOnly"},
};

static const struct {
    int nid;
    const char *vi, *en;
} ekus[] = {
    {NID_server_auth, "xác thực máy chủ (TLS)", "TLS server authentication"},
    {NID_client_auth, "xác thực người dùng/máy khách (TLS)", "TLS client authentication"},
    {NID_code_sign, "ký mã nguồn/phần mềm", "code signing"},
    {NID_email_protect, "bảo vệ thư điện tử (S/MIME)", "e-mail protection (S/MIME)"},
    {NID_time_stamp, "cấp dấu thời gian", "time stamping"},
    {NID_OCSP_sign, "ký phản hồi OCSP", "OCSP signing"},
    {NID_ms_smartcard_login, "đăng nhập bằng thẻ thông minh", "smart card logon"},
    {NID_anyExtendedKeyUsage, "mọi mục đích", "any purpose"},
};

/* Walks the extensions and calls out for each list item, in both forms. */
static void list_item_html(struct directory__buf *b, const char *text)
{
    directory__put(b, "<li><bdi>");
    directory__put_htmls(b, text);
    directory__put(b, "</bdi></li>");
}

static void general_name_text(const GENERAL_NAME *gn, int show_email, struct directory__buf *b,
                              int json, int lang)
{
    const char *kind = "other";
    char text[256] = "";
    const unsigned char *s = NULL;
    int len = 0;
    switch (gn->type) {
    case GEN_DNS:
        kind = "dns";
        s = ASN1_STRING_get0_data(gn->d.dNSName);
        len = ASN1_STRING_length(gn->d.dNSName);
        break;
    case GEN_EMAIL:
        kind = "email";
        s = ASN1_STRING_get0_data(gn->d.rfc822Name);
        len = ASN1_STRING_length(gn->d.rfc822Name);
        if (!show_email) {
            s = (const unsigned char *)directory__t(lang, M_HIDDEN);
            len = (int)strlen((const char *)s);
        }
        break;
    case GEN_URI:
        kind = "uri";
        s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        break;
    case GEN_IPADD: {
        const unsigned char *ip = ASN1_STRING_get0_data(gn->d.iPAddress);
        int n = ASN1_STRING_length(gn->d.iPAddress);
        kind = "ip";
        if (n == 4) {
            (void)snprintf(text, sizeof(text), "%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        } else if (n == 16) {
            size_t o = 0;
            for (int i = 0; i < 16; i += 2)
                o += (size_t)snprintf(text + o, sizeof(text) - o, "%s%x", i ? ":" : "",
                                      ip[i] << 8 | ip[i + 1]);
        }
        s = (const unsigned char *)text;
        len = (int)strlen(text);
        break;
    }
    case GEN_DIRNAME: {
        char *line = directory__name_line(gn->d.directoryName, show_email);
        kind = "dirname";
        (void)snprintf(text, sizeof(text), "%s", line ? line : "?");
        free(line);
        s = (const unsigned char *)text;
        len = (int)strlen(text);
        break;
    }
    default: s = (const unsigned char *)"(other name)"; len = 12;
    }
    if (json) {
        directory__putf(b, "{\"type\":\"%s\",\"value\":", kind);
        directory__put_json(b, (const char *)s, (size_t)len);
        directory__put(b, "}");
        return;
    }
    directory__putf(b, "<li><span class=\"k\">%s</span> <bdi>", kind);
    directory__put_html(b, (const char *)s, (size_t)len);
    directory__put(b, "</bdi></li>");
}

static void put_row_start(struct directory__buf *b, int lang, enum directory__msg m)
{
    directory__putf(b, "<tr><th scope=\"row\">%s</th><td>", directory__t(lang, m));
}

/* OpenSSL reads a certificate's extensions once, on first use, and marks it EXFLAG_INVALID when
 * that fails: for a malformed extension (then the page shows what it can), or for want of memory
 * (then it must show nothing, directory__oom_note). A fresh copy tells them apart. Returns the key
 * usage bits (X509_get_key_usage). */
static uint32_t extensions_checked(X509 *x)
{
    unsigned char *der = NULL;
    const unsigned char *p = NULL;
    X509 *fresh = NULL;
    int n = 0;

    if ((X509_get_extension_flags(x) & EXFLAG_INVALID) == 0)
        return X509_get_key_usage(x);
    n = i2d_X509(x, &der);
    p = der;
    fresh = n > 0 ? d2i_X509(NULL, &p, n) : NULL;
    if (fresh == NULL || (X509_get_extension_flags(fresh) & EXFLAG_INVALID) == 0)
        directory__oom_note();
    X509_free(fresh);
    OPENSSL_free(der);
    directory__err_clear();
    return X509_get_key_usage(x);
}

static void extensions_html(struct directory__buf *b, X509 *x, const struct directory__certview *v)
{
    int lang = v->lang;
    uint32_t ku = extensions_checked(x);
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    CERTIFICATEPOLICIES *pol = X509_get_ext_d2i(x, NID_certificate_policies, NULL, NULL);
    AUTHORITY_INFO_ACCESS *aia = X509_get_ext_d2i(x, NID_info_access, NULL, NULL);
    CRL_DIST_POINTS *dps = X509_get_ext_d2i(x, NID_crl_distribution_points, NULL, NULL);
    char oid[128];

    directory__putf(b, "<h2 id=\"ext\">%s</h2><table class=\"facts\">",
                    directory__t(lang, M_EXTENSIONS));
    put_row_start(b, lang, M_BASIC);
    directory__put(
        b, directory__t(lang, (X509_get_extension_flags(x) & EXFLAG_CA) ? M_BASIC_CA : M_BASIC_EE));
    directory__put(b, "</td></tr>");
    if (ku != UINT32_MAX) {
        put_row_start(b, lang, M_KEY_USAGE);
        directory__put(b, "<ul>");
        for (size_t i = 0; i < sizeof(key_usages) / sizeof(key_usages[0]); i++)
            if (ku & (uint32_t)key_usages[i].bit)
                list_item_html(b, lang == DIRECTORY__EN ? key_usages[i].en : key_usages[i].vi);
        directory__put(b, "</ul></td></tr>");
    }
    if (eku != NULL) {
        put_row_start(b, lang, M_EKU);
        directory__put(b, "<ul>");
        for (int i = 0; i < sk_ASN1_OBJECT_num(eku); i++) {
            const ASN1_OBJECT *o = sk_ASN1_OBJECT_value(eku, i);
            int nid = OBJ_obj2nid(o);
            const char *word = NULL;
            for (size_t j = 0; j < sizeof(ekus) / sizeof(ekus[0]); j++)
                if (ekus[j].nid == nid)
                    word = lang == DIRECTORY__EN ? ekus[j].en : ekus[j].vi;
            if (word == NULL) {
                if (OBJ_obj2txt(oid, sizeof(oid), o, 0) <= 0)
                    (void)snprintf(oid, sizeof(oid), "?");
                word = oid;
            }
            list_item_html(b, word);
        }
        directory__put(b, "</ul></td></tr>");
    }
    if (san != NULL) {
        put_row_start(b, lang, M_SAN);
        directory__put(b, "<ul>");
        for (int i = 0; i < sk_GENERAL_NAME_num(san); i++)
            general_name_text(sk_GENERAL_NAME_value(san, i), v->show_email, b, 0, lang);
        directory__put(b, "</ul></td></tr>");
    }
    if (pol != NULL) {
        put_row_start(b, lang, M_POLICIES);
        directory__put(b, "<ul>");
        for (int i = 0; i < sk_POLICYINFO_num(pol); i++) {
            const POLICYINFO *pi = sk_POLICYINFO_value(pol, i);
            if (OBJ_obj2txt(oid, sizeof(oid), pi->policyid, 1) <= 0)
                (void)snprintf(oid, sizeof(oid), "?");
            directory__put(b, "<li>");
            directory__put_htmls(b, oid);
            for (int j = 0; pi->qualifiers != NULL && j < sk_POLICYQUALINFO_num(pi->qualifiers);
                 j++) {
                const POLICYQUALINFO *q = sk_POLICYQUALINFO_value(pi->qualifiers, j);
                if (OBJ_obj2nid(q->pqualid) == NID_id_qt_cps) {
                    directory__put(b, " — CPS: ");
                    put_url_html(b, q->d.cpsuri);
                }
            }
            directory__put(b, "</li>");
        }
        directory__put(b, "</ul></td></tr>");
    }
    if (aia != NULL) {
        for (int i = 0; i < sk_ACCESS_DESCRIPTION_num(aia); i++) {
            const ACCESS_DESCRIPTION *ad = sk_ACCESS_DESCRIPTION_value(aia, i);
            int nid = OBJ_obj2nid(ad->method);
            if ((nid != NID_ad_OCSP && nid != NID_ad_ca_issuers) || ad->location->type != GEN_URI)
                continue;
            put_row_start(b, lang, nid == NID_ad_OCSP ? M_AIA_OCSP : M_AIA_CA);
            put_url_html(b, ad->location->d.uniformResourceIdentifier);
            directory__put(b, "</td></tr>");
        }
    }
    if (dps != NULL) {
        for (int i = 0; i < sk_DIST_POINT_num(dps); i++) {
            const DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
            if (dp->distpoint == NULL || dp->distpoint->type != 0)
                continue;
            for (int j = 0; j < sk_GENERAL_NAME_num(dp->distpoint->name.fullname); j++) {
                const GENERAL_NAME *gn = sk_GENERAL_NAME_value(dp->distpoint->name.fullname, j);
                if (gn->type != GEN_URI)
                    continue;
                put_row_start(b, lang, M_CRLDP);
                put_url_html(b, gn->d.uniformResourceIdentifier);
                directory__put(b, "</td></tr>");
            }
        }
    }
    directory__put(b, "</table>");
    directory__err_clear(); /* absent or malformed extensions were simply left out */
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    GENERAL_NAMES_free(san);
    CERTIFICATEPOLICIES_free(pol);
    AUTHORITY_INFO_ACCESS_free(aia);
    CRL_DIST_POINTS_free(dps);
}

static void name_table_html(struct directory__buf *b, const X509_NAME *name, int show_email,
                            int lang)
{
    int n = X509_NAME_entry_count(name);
    directory__put(b, "<ul class=\"name\">");
    for (int i = n - 1; i >= 0; i--) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
        const ASN1_OBJECT *obj = X509_NAME_ENTRY_get_object(e);
        int nid = OBJ_obj2nid(obj);
        const char *label = attr_label(nid);
        char oid[80];
        unsigned char *utf8 = NULL;
        int len;
        if (label == NULL) {
            if (OBJ_obj2txt(oid, sizeof(oid), obj, 1) <= 0)
                (void)snprintf(oid, sizeof(oid), "?");
            label = oid;
        }
        directory__putf(b, "<li><span class=\"k\">%s</span> <bdi>", label);
        if (nid == NID_pkcs9_emailAddress && !show_email) {
            directory__put(b, directory__t(lang, M_HIDDEN));
        } else {
            len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
            if (len > 0)
                directory__put_html(b, (const char *)utf8, (size_t)len);
            else
                directory__err_clear(); /* shown empty */
            OPENSSL_free(utf8);
        }
        directory__put(b, "</bdi></li>");
    }
    directory__put(b, "</ul>");
}

void directory__cert_html(struct directory__buf *b, X509 *x, const struct directory__certview *v)
{
    int lang = v->lang;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    char serial_text[3 * STORE_SERIAL_MAX + 1] = "";
    char serial_hex[2 * STORE_SERIAL_MAX + 1] = "";
    char fp256[3 * 32 + 1], fp1[3 * 20 + 1], key[128];
    int64_t nb = 0, na = 0;

    if (store_serial_from_asn1(X509_get0_serialNumber(x), serial, &serial_len) == UTIL_OK) {
        directory__serial_colons(serial, serial_len, serial_text);
        util_hex(serial, serial_len, serial_hex);
    }
    if (util_asn1_time_unix(X509_get0_notBefore(x), &nb) != UTIL_OK ||
        util_asn1_time_unix(X509_get0_notAfter(x), &na) != UTIL_OK)
        directory__err_clear(); /* shown as the epoch */
    fingerprint(x, EVP_sha256(), fp256);
    fingerprint(x, EVP_sha1(), fp1);
    key_text(x, key, sizeof(key));

    directory__putf(b, "<section class=\"status\" aria-labelledby=\"st\"><h2 id=\"st\">%s</h2><p>",
                    directory__t(lang, M_STATUS_NOW));
    directory__status_html(b, v, 1);
    directory__putf(b, "</p><p class=\"note\">%s ", directory__t(lang, M_STATUS_SOURCE));
    directory__put_time_html(b, util_now_ms() / 1000, v->utc_offset);
    directory__put(b, "</p></section>");

    directory__putf(b, "<table class=\"facts\"><caption class=\"vh\">%s</caption>",
                    directory__t(lang, M_CERT_TITLE));
    put_row_start(b, lang, M_SUBJECT);
    name_table_html(b, X509_get_subject_name(x), v->show_email, lang);
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_ISSUER);
    if (v->issuer_name != NULL) {
        directory__putf(b, "<p><a href=\"%s/issuer/", v->prefix);
        directory__put_htmls(b, v->issuer_name);
        directory__putf(b, "?%s\">", v->lang_query);
        directory__put_htmls(b, v->issuer_name);
        directory__put(b, "</a></p>");
    }
    name_table_html(b, X509_get_issuer_name(x), v->show_email, lang);
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_SERIAL);
    directory__putf(b, "<code>%s</code></td></tr>", serial_text);
    put_row_start(b, lang, M_VALID_FROM);
    directory__put_time_html(b, nb, v->utc_offset);
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_VALID_TO);
    directory__put_time_html(b, na, v->utc_offset);
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_KEY);
    directory__put_htmls(b, key);
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_SIGALG);
    directory__put_htmls(b, OBJ_nid2ln(X509_get_signature_nid(x)));
    directory__put(b, "</td></tr>");
    put_row_start(b, lang, M_FINGERPRINTS);
    directory__putf(b,
                    "<dl class=\"kv\"><dt>SHA-256</dt><dd><code class=\"fp\">%s</code></dd>"
                    "<dt>SHA-1</dt><dd><code class=\"fp\">%s</code></dd></dl></td></tr></table>",
                    fp256, fp1);
    extensions_html(b, x, v);

    if (v->issuer_name != NULL) {
        directory__putf(b, "<h2 id=\"links\">%s</h2><ul class=\"links\">",
                        directory__t(lang, M_LINKS));
        directory__putf(b, "<li><a href=\"%s/issuer/", v->prefix);
        directory__put_htmls(b, v->issuer_name);
        directory__putf(b, "?%s\">%s</a> · <a href=\"/ca/", v->lang_query,
                        directory__t(lang, M_CHAIN));
        directory__put_htmls(b, v->issuer_name);
        directory__put(b, ".crt\">.crt</a></li><li><a href=\"/crl/");
        directory__put_htmls(b, v->issuer_name);
        directory__putf(b, ".crl\">%s</a>", directory__t(lang, M_CRL));
        if (v->crl_deltas) {
            directory__put(b, " · <a href=\"/crl/");
            directory__put_htmls(b, v->issuer_name);
            directory__putf(b, "-delta.crl\">%s</a>", directory__t(lang, M_DELTA_CRL));
        }
        directory__put(b, "</li></ul>");
        if (serial_len > 0) {
            directory__putf(b, "<h2 id=\"dl\">%s</h2><ul class=\"links\">",
                            directory__t(lang, M_DOWNLOADS));
            directory__putf(b, "<li><a href=\"%s/cert/", v->prefix);
            directory__put_htmls(b, v->issuer_name);
            directory__putf(b, "/%s.pem\" download>PEM</a></li>", serial_hex);
            directory__putf(b, "<li><a href=\"%s/cert/", v->prefix);
            directory__put_htmls(b, v->issuer_name);
            directory__putf(b, "/%s.der\" download>DER</a></li></ul>", serial_hex);
        }
    }
}

void directory__cert_json(struct directory__buf *b, X509 *x, const struct directory__certview *v)
{
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    char serial_hex[2 * STORE_SERIAL_MAX + 1] = "";
    char fp256[3 * 32 + 1], fp1[3 * 20 + 1], key[128];
    char *subject = directory__name_line(X509_get_subject_name(x), v->show_email);
    char *issuer = directory__name_line(X509_get_issuer_name(x), v->show_email);
    int64_t nb = 0, na = 0;
    uint32_t ku = extensions_checked(x);
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    GENERAL_NAMES *san = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char oid[128];

    if (store_serial_from_asn1(X509_get0_serialNumber(x), serial, &serial_len) == UTIL_OK)
        util_hex(serial, serial_len, serial_hex);
    if (util_asn1_time_unix(X509_get0_notBefore(x), &nb) != UTIL_OK ||
        util_asn1_time_unix(X509_get0_notAfter(x), &na) != UTIL_OK)
        directory__err_clear(); /* shown as the epoch */
    fingerprint(x, EVP_sha256(), fp256);
    fingerprint(x, EVP_sha1(), fp1);
    key_text(x, key, sizeof(key));
    directory__put(b, "{\"subject\":");
    directory__put_jsons(b, subject);
    directory__put(b, ",\"issuer\":");
    directory__put_jsons(b, issuer);
    directory__put(b, ",\"issuer_name\":");
    directory__put_jsons(b, v->issuer_name);
    directory__putf(b, ",\"serial\":\"%s\",\"not_before\":", serial_hex);
    directory__put_time_json(b, nb);
    directory__put(b, ",\"not_after\":");
    directory__put_time_json(b, na);
    directory__put(b, ",\"key\":");
    directory__put_jsons(b, key);
    directory__putf(b, ",\"ca\":%s,\"sha256\":\"%s\",\"sha1\":\"%s\",\"key_usage\":[",
                    (X509_get_extension_flags(x) & EXFLAG_CA) ? "true" : "false", fp256, fp1);
    for (size_t i = 0, n = 0; ku != UINT32_MAX && i < sizeof(key_usages) / sizeof(key_usages[0]);
         i++)
        if (ku & (uint32_t)key_usages[i].bit)
            directory__putf(b, "%s\"%s\"", n++ ? "," : "", key_usages[i].key);
    directory__put(b, "],\"extended_key_usage\":[");
    for (int i = 0; eku != NULL && i < sk_ASN1_OBJECT_num(eku); i++) {
        if (OBJ_obj2txt(oid, sizeof(oid), sk_ASN1_OBJECT_value(eku, i), 1) <= 0)
            (void)snprintf(oid, sizeof(oid), "?");
        directory__putf(b, "%s\"%s\"", i ? "," : "", oid);
    }
    directory__put(b, "],\"subject_alt_names\":[");
    for (int i = 0; san != NULL && i < sk_GENERAL_NAME_num(san); i++) {
        if (i)
            directory__put(b, ",");
        general_name_text(sk_GENERAL_NAME_value(san, i), v->show_email, b, 1, v->lang);
    }
    directory__put(b, "]}");
    directory__err_clear(); /* absent extensions */
    sk_ASN1_OBJECT_pop_free(eku, ASN1_OBJECT_free);
    GENERAL_NAMES_free(san);
    free(subject);
    free(issuer);
}
