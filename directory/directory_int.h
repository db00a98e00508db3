/* SPDX-License-Identifier: Apache-2.0 */
/* Internals shared by the files of the directory module: the bounded output buffer and its
 * escapers (HTML, JSON), the message table of both languages, date formatting, and the rendering
 * of one certificate. Nothing outside directory/ includes this header. */
#ifndef PKIVA_DIRECTORY_INT_H
#define PKIVA_DIRECTORY_INT_H

#include <openssl/x509.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "directory/directory.h"
#include "store/store.h"

#define DIRECTORY_MOD "directory"
/* Largest page rendered; a page that would be larger is answered 500 (never with bounded input:
 * 100 results of bounded size stay far below). */
#define DIRECTORY__PAGE_MAX (1024 * 1024)

/* ---- output buffer (dir_text.c) ---------------------------------------------------------------- */

/* Grows up to max; past it (or when memory runs out) failed is set and further writes are
 * dropped, so a caller checks once at the end. */
struct directory__buf {
    char *data;
    size_t len, cap, max;
    int failed;
};
void directory__buf_init(struct directory__buf *b, size_t max);
void directory__buf_cleanup(struct directory__buf *b);
void directory__put(struct directory__buf *b, const char *text);
void directory__putn(struct directory__buf *b, const char *text, size_t len);
void directory__putf(struct directory__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Text for an HTML element or a quoted attribute: & < > " ' escaped; invalid UTF-8 becomes
 * U+FFFD; control characters (C0, DEL, C1) and the bidirectional formatting characters (U+061C,
 * U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) are shown as visible "[U+XXXX]" so that a name
 * can neither break the page nor reorder what is around it. */
void directory__put_html(struct directory__buf *b, const char *text, size_t len);
void directory__put_htmls(struct directory__buf *b, const char *text);
/* A JSON string with its quotes; the same characters as above escaped as \uXXXX. */
void directory__put_json(struct directory__buf *b, const char *text, size_t len);
void directory__put_jsons(struct directory__buf *b, const char *text);
/* Percent-encodes for a URL query value. */
void directory__put_url(struct directory__buf *b, const char *text, size_t len);

/* ---- out of memory on a worker thread (dir_cert.c) ------------------------------------------ */

/* A page must never say less than the truth because memory ran out: a certificate whose DER did
 * not parse for want of memory is not "unreadable", a signature not verified for it is not
 * "forged". Every place that drops OpenSSL's error queue calls directory__err_clear, which
 * remembers (per thread) whether one of the errors was an allocation failure; the directory's own
 * failed allocations call directory__oom_note. The worker resets the mark before a job and, when
 * it is set after it, answers 503 instead of the page. */
void directory__err_clear(void);
void directory__oom_note(void);
void directory__oom_reset(void);
int directory__oom_seen(void);

/* ---- languages and messages --------------------------------------------------------------------- */

enum { DIRECTORY__VI = 0, DIRECTORY__EN = 1 };

enum directory__msg {
    M_SITE,
    M_SKIP,
    M_NAV,
    M_NAV_SEARCH,
    M_NAV_CHECK,
    M_NAV_ISSUERS,
    M_SWITCH,
    M_HOME_INTRO,
    M_SEARCH_TITLE,
    M_SEARCH_LABEL,
    M_SEARCH_HINT,
    M_FIELD_LABEL,
    M_FIELD_AUTO,
    M_FIELD_NAME,
    M_FIELD_CN,
    M_FIELD_O,
    M_FIELD_OU,
    M_FIELD_EMAIL,
    M_FIELD_SERIAL,
    M_FIELD_FP,
    M_ISSUER_LABEL,
    M_ISSUER_ALL,
    M_SEARCH_BUTTON,
    M_RESULTS,
    M_NO_RESULTS,
    M_NEXT_PAGE,
    M_COL_SUBJECT,
    M_COL_ISSUER,
    M_COL_VALIDITY,
    M_COL_STATUS,
    M_COL_SERIAL,
    M_ST_GOOD,
    M_ST_REVOKED,
    M_ST_HOLD,
    M_ST_EXPIRED,
    M_ST_NOT_YET,
    M_ST_UNKNOWN,
    M_ST_GOOD_LONG,
    M_ST_REVOKED_LONG,
    M_ST_EXPIRED_LONG,
    M_ST_UNKNOWN_LONG,
    M_ST_NOT_YET_LONG,
    M_REVOKED_AT,
    M_REASON,
    M_STATUS_NOW,
    M_STATUS_SOURCE,
    M_CERT_TITLE,
    M_SUBJECT,
    M_ISSUER,
    M_SERIAL,
    M_VALID_FROM,
    M_VALID_TO,
    M_KEY,
    M_SIGALG,
    M_FINGERPRINTS,
    M_EXTENSIONS,
    M_BASIC_CA,
    M_BASIC_EE,
    M_KEY_USAGE,
    M_EKU,
    M_SAN,
    M_POLICIES,
    M_AIA_OCSP,
    M_AIA_CA,
    M_CRLDP,
    M_BASIC,
    M_DOWNLOADS,
    M_LINKS,
    M_CHAIN,
    M_CRL,
    M_DELTA_CRL,
    M_CHECK_TITLE,
    M_CHECK_INTRO,
    M_CHECK_PASTE,
    M_CHECK_FILE,
    M_CHECK_BUTTON,
    M_CHECK_PRIVACY,
    M_CHECK_OURS,
    M_CHECK_SIG_OK,
    M_CHECK_NOT_OURS,
    M_CHECK_BAD_SIG,
    M_CHECK_NOT_REGISTERED,
    M_CHECK_DIFFERENT,
    M_CHECK_UNREADABLE,
    M_CHECK_EMPTY,
    M_CHECK_TOO_BIG,
    M_ISSUERS_TITLE,
    M_ISSUER_TITLE,
    M_OCSP_URL,
    M_CRL_NUMBER,
    M_THIS_UPDATE,
    M_NEXT_UPDATE,
    M_ENTRIES,
    M_NOT_COUNTED,
    M_NONE_YET,
    M_TSA_UNITS,
    M_TSA_POLICIES,
    M_SEARCH_IN_ISSUER,
    M_CA_CERT,
    M_NOT_FOUND,
    M_BAD_QUERY,
    M_FIELD_OFF,
    M_TOO_MANY,
    M_BUSY,
    M_ERROR,
    M_HIDDEN,
    M_TIMES_NOTE,
    M_NO_SUBJECT,
    M_YES,
    M_NO,
    M_COUNT
};
const char *directory__t(int lang, enum directory__msg m);
/* RFC 5280 reason in words; NULL for an unknown code. */
const char *directory__reason_text(int lang, int reason);

/* t (unix seconds) as "2026-12-07 12:27:31 UTC" and, in a span, the local time at the configured
 * offset. JSON: "2026-12-07T12:27:31Z". */
void directory__put_time_html(struct directory__buf *b, int64_t t, int utc_offset_minutes);
void directory__put_time_json(struct directory__buf *b, int64_t t);

/* ---- one certificate (dir_cert.c) ----------------------------------------------------------- */

enum directory__state {
    DIRECTORY__GOOD = 0,
    DIRECTORY__REVOKED,
    DIRECTORY__EXPIRED,
    DIRECTORY__NOT_YET,
    DIRECTORY__UNKNOWN
};

/* What a certificate page shows besides the certificate itself. */
struct directory__certview {
    int lang;
    int show_email;
    int utc_offset;
    const char *prefix;      /* "/directory" */
    const char *lang_query;  /* "lang=vi" */
    const char *issuer_name; /* NULL when not one of ours */
    const char *public_url;
    int crl_deltas;
    int state; /* enum directory__state */
    int reason;
    int64_t revoked_at, invalidity_date;
    const char *status_source; /* "ocsp-index" or "store" or "none" */
};

/* Decides the state from the status (index or store) and the validity dates. */
int directory__state_of(int have_status, int status, int64_t not_before, int64_t not_after,
                        int64_t now);
/* The subject as one line of "CN=..., O=..." in UTF-8 (malloc'd, caller frees; NULL on failure).
 * With show_email = 0 e-mail attributes are left out. */
char *directory__name_line(const X509_NAME *name, int show_email);
/* The first common name (UTF-8, malloc'd) or NULL. */
char *directory__name_cn(const X509_NAME *name);
/* Serial octets as upper-case hex with colons ("0A:1B:..."), into out (3*len bytes). */
void directory__serial_colons(const unsigned char *serial, size_t len, char *out);
/* The status badge (HTML) and its long sentence. */
void directory__status_html(struct directory__buf *b, const struct directory__certview *v,
                            int long_form);
void directory__status_json(struct directory__buf *b, const struct directory__certview *v);
/* The body of a certificate page (everything inside <main> after the title). */
void directory__cert_html(struct directory__buf *b, X509 *x, const struct directory__certview *v);
/* The certificate as a JSON object (no status). */
void directory__cert_json(struct directory__buf *b, X509 *x, const struct directory__certview *v);

/* ---- fuzzing (directory.c) ------------------------------------------------------------------ */

/* Runs the decoders of untrusted input on data: line 1 a Content-Type (and Accept-Language),
 * line 2 a query string, the rest a status check body; a certificate found in it is rendered as
 * HTML and JSON. Returns 0 (nothing parsed as a certificate), 1 (rendered) or 2 (page too large). */
int directory__fuzz_one(const uint8_t *data, size_t size);

#endif
