/* SPDX-License-Identifier: Apache-2.0 */
/* dir_text.c: text of the directory's pages: the bounded output buffer, the HTML and JSON
 * escapers every piece of certificate data goes through, the Vietnamese and English messages and
 * the dates (UTC first, the local time beside it). */
#include "directory_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <util/util.h>

/* ---- buffer --------------------------------------------------------------------------------- */

void directory__buf_init(struct directory__buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void directory__buf_cleanup(struct directory__buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

static int reserve(struct directory__buf *b, size_t more)
{
    size_t want, cap;
    char *p;
    if (b->failed)
        return 0;
    if (more > b->max || b->len + more + 1 > b->max) {
        b->failed = 1;
        return 0;
    }
    want = b->len + more + 1;
    if (want <= b->cap)
        return 1;
    cap = b->cap ? b->cap : 4096;
    while (cap < want)
        cap *= 2;
    if (cap > b->max)
        cap = b->max;
    p = realloc(b->data, cap);
    if (p == NULL) {
        b->failed = 1;
        directory__oom_note();
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

void directory__putn(struct directory__buf *b, const char *text, size_t len)
{
    if (!reserve(b, len))
        return;
    memcpy(b->data + b->len, text, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void directory__put(struct directory__buf *b, const char *text)
{
    directory__putn(b, text, strlen(text));
}

void directory__putf(struct directory__buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = 1;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        directory__putn(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    (void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap); /* sized above */
    va_end(ap);
    b->len += (size_t)n;
}

/* ---- escaping ------------------------------------------------------------------------------- */

/* Decodes one UTF-8 character at s (len > 0): returns its length and *cp, or 1 and *cp = -1 for
 * an invalid sequence (overlong forms, surrogates and values past U+10FFFF are invalid). */
static size_t utf8_next(const unsigned char *s, size_t len, long *cp)
{
    unsigned char c = s[0];
    size_t n;
    long v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        v = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        v = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        v = c & 0x07;
    } else {
        *cp = -1;
        return 1;
    }
    if (n > len) {
        *cp = -1;
        return 1;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = -1;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3F);
    }
    if ((n == 2 && v < 0x80) || (n == 3 && v < 0x800) || (n == 4 && v < 0x10000) || v > 0x10FFFF ||
        (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = -1;
        return 1;
    }
    *cp = v;
    return n;
}

/* Characters shown as "[U+XXXX]" rather than as themselves. */
static int hidden_char(long cp)
{
    return cp < 0x20 || (cp >= 0x7F && cp <= 0x9F) || cp == 0x061C || cp == 0x200E ||
           cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0xFEFF;
}

void directory__put_html(struct directory__buf *b, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        long cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (cp < 0)
            directory__put(b, "&#xFFFD;");
        else if (hidden_char(cp))
            directory__putf(b, "[U+%04lX]", (unsigned long)cp);
        else if (cp == '&')
            directory__put(b, "&amp;");
        else if (cp == '<')
            directory__put(b, "&lt;");
        else if (cp == '>')
            directory__put(b, "&gt;");
        else if (cp == '"')
            directory__put(b, "&quot;");
        else if (cp == '\'')
            directory__put(b, "&#39;");
        else
            directory__putn(b, text + i, n);
        i += n;
    }
}

void directory__put_htmls(struct directory__buf *b, const char *text)
{
    if (text != NULL)
        directory__put_html(b, text, strlen(text));
}

void directory__put_json(struct directory__buf *b, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    directory__put(b, "\"");
    while (i < len) {
        long cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (cp < 0)
            directory__put(b, "\\ufffd");
        else if (cp == '"')
            directory__put(b, "\\\"");
        else if (cp == '\\')
            directory__put(b, "\\\\");
        else if (cp == '<')
            directory__put(b, "\\u003c"); /* harmless if a JSON body is ever shown as HTML */
        else if (hidden_char(cp))
            directory__putf(b, "\\u%04lx", (unsigned long)cp);
        else
            directory__putn(b, text + i, n);
        i += n;
    }
    directory__put(b, "\"");
}

void directory__put_jsons(struct directory__buf *b, const char *text)
{
    if (text == NULL)
        directory__put(b, "null");
    else
        directory__put_json(b, text, strlen(text));
}

void directory__put_url(struct directory__buf *b, const char *text, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            directory__putn(b, (const char *)&text[i], 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            directory__putn(b, esc, 3);
        }
    }
}

/* ---- messages ------------------------------------------------------------------------------- */

static const char *const msgs[M_COUNT][2] = {
    [M_SITE] = {"Danh bạ chứng thư số", "Certificate directory"},
    [M_SKIP] = {"Bỏ qua, đến nội dung chính", "Skip to the main content"},
    [M_NAV] = {"Điều hướng", "Navigation"},
    [M_NAV_SEARCH] = {"Tra cứu chứng thư", "Search certificates"},
    [M_NAV_CHECK] = {"Kiểm tra trạng thái", "Check a certificate"},
    [M_NAV_ISSUERS] = {"Các CA cấp phát", "Issuing CAs"},
    [M_SWITCH] = {"English", "Tiếng Việt"},
    [M_HOME_INTRO] = {"Tra cứu chứng thư số do các CA dưới đây cấp, xem trạng thái hiện tại của "
                      "chứng thư (còn hiệu lực, bị thu hồi, hết hạn) và kiểm tra một chứng thư "
                      "bạn đang có.",
                      "Find certificates issued by the CAs below, see whether a certificate is "
                      "valid, revoked or expired right now, and check a certificate you hold."},
    [M_SEARCH_TITLE] = {"Tra cứu chứng thư số", "Search certificates"},
    [M_SEARCH_LABEL] = {"Tìm theo tên, tổ chức, e-mail, số hiệu hoặc dấu vân tay",
                        "Name, organisation, e-mail, serial number or fingerprint"},
    [M_SEARCH_HINT] = {"Ví dụ: Nguyễn Văn An · Ban Cơ yếu · an@example.vn · 0A:1B:2C · "
                       "dấu vân tay SHA-256 (có thể có dấu hai chấm, chữ hoa hay thường đều được)",
                       "For example: Nguyen Van An · Government Cipher Committee · "
                       "an@example.vn · 0A:1B:2C · a SHA-256 fingerprint (colons, upper or lower "
                       "case all work)"},
    [M_FIELD_LABEL] = {"Tìm trong", "Search in"},
    [M_FIELD_AUTO] = {"Tự nhận biết", "Detect automatically"},
    [M_FIELD_NAME] = {"Tên, tổ chức, đơn vị", "Name, organisation, unit"},
    [M_FIELD_CN] = {"Tên (CN)", "Common name (CN)"},
    [M_FIELD_O] = {"Tổ chức (O)", "Organisation (O)"},
    [M_FIELD_OU] = {"Đơn vị (OU)", "Organisational unit (OU)"},
    [M_FIELD_EMAIL] = {"E-mail", "E-mail"},
    [M_FIELD_SERIAL] = {"Số hiệu (serial)", "Serial number"},
    [M_FIELD_FP] = {"Dấu vân tay (SHA-256 / SHA-1)", "Fingerprint (SHA-256 / SHA-1)"},
    [M_ISSUER_LABEL] = {"CA cấp phát", "Issuing CA"},
    [M_ISSUER_ALL] = {"Tất cả", "All"},
    [M_SEARCH_BUTTON] = {"Tìm kiếm", "Search"},
    [M_RESULTS] = {"Kết quả", "Results"},
    [M_NO_RESULTS] = {"Không tìm thấy chứng thư nào.", "No certificate found."},
    [M_NEXT_PAGE] = {"Trang sau", "Next page"},
    [M_COL_SUBJECT] = {"Chủ thể", "Subject"},
    [M_COL_ISSUER] = {"CA cấp", "Issuer"},
    [M_COL_VALIDITY] = {"Hiệu lực", "Validity"},
    [M_COL_STATUS] = {"Trạng thái", "Status"},
    [M_COL_SERIAL] = {"Số hiệu", "Serial"},
    [M_ST_GOOD] = {"Còn hiệu lực", "Valid"},
    [M_ST_REVOKED] = {"Đã bị thu hồi", "Revoked"},
    [M_ST_HOLD] = {"Tạm dừng", "On hold"},
    [M_ST_EXPIRED] = {"Hết hạn", "Expired"},
    [M_ST_NOT_YET] = {"Chưa có hiệu lực", "Not yet valid"},
    [M_ST_UNKNOWN] = {"Không rõ", "Unknown"},
    [M_ST_GOOD_LONG] = {"Chứng thư này đang có hiệu lực: chưa bị thu hồi và chưa hết hạn.",
                        "This certificate is valid now: not revoked and not expired."},
    [M_ST_REVOKED_LONG] = {"Chứng thư này đã bị thu hồi. Không tin cậy chữ ký số tạo sau thời "
                           "điểm thu hồi.",
                           "This certificate has been revoked. Do not trust signatures made with "
                           "it after the revocation time."},
    [M_ST_EXPIRED_LONG] = {"Chứng thư này đã hết hạn (không bị thu hồi trước khi hết hạn).",
                           "This certificate has expired (it was not revoked before it "
                           "expired)."},
    [M_ST_UNKNOWN_LONG] = {"Cơ sở dữ liệu của chúng tôi không có chứng thư này: trạng thái không "
                           "rõ.",
                           "Our database does not hold this certificate: its status is unknown."},
    [M_ST_NOT_YET_LONG] = {"Chứng thư này chưa đến thời điểm có hiệu lực.",
                           "This certificate is not valid yet."},
    [M_REVOKED_AT] = {"Thời điểm thu hồi", "Revoked at"},
    [M_REASON] = {"Lý do", "Reason"},
    [M_STATUS_NOW] = {"Trạng thái hiện tại", "Status right now"},
    [M_STATUS_SOURCE] = {"Cùng nguồn dữ liệu trả lời OCSP, tại thời điểm",
                         "From the same index that answers OCSP, as of"},
    [M_CERT_TITLE] = {"Chứng thư số", "Certificate"},
    [M_SUBJECT] = {"Chủ thể", "Subject"},
    [M_ISSUER] = {"CA cấp", "Issuer"},
    [M_SERIAL] = {"Số hiệu (serial)", "Serial number"},
    [M_VALID_FROM] = {"Có hiệu lực từ", "Valid from"},
    [M_VALID_TO] = {"Có hiệu lực đến", "Valid until"},
    [M_KEY] = {"Khóa công khai", "Public key"},
    [M_SIGALG] = {"Thuật toán ký", "Signature algorithm"},
    [M_FINGERPRINTS] = {"Dấu vân tay", "Fingerprints"},
    [M_EXTENSIONS] = {"Mở rộng", "Extensions"},
    [M_BASIC_CA] = {"Là CA (được cấp chứng thư cho người khác)", "A CA (may issue certificates)"},
    [M_BASIC_EE] = {"Chứng thư người dùng cuối (không phải CA)", "End entity (not a CA)"},
    [M_KEY_USAGE] = {"Mục đích của khóa", "Key usage"},
    [M_EKU] = {"Mục đích sử dụng mở rộng", "Extended key usage"},
    [M_SAN] = {"Tên khác của chủ thể", "Subject alternative names"},
    [M_POLICIES] = {"Chính sách chứng thư", "Certificate policies"},
    [M_AIA_OCSP] = {"Dịch vụ OCSP", "OCSP service"},
    [M_AIA_CA] = {"Chứng thư CA cấp", "Issuer's certificate"},
    [M_CRLDP] = {"Danh sách thu hồi (CRL)", "Revocation list (CRL)"},
    [M_BASIC] = {"Loại chứng thư", "Kind"},
    [M_DOWNLOADS] = {"Tải về", "Download"},
    [M_LINKS] = {"Liên kết", "Links"},
    [M_CHAIN] = {"Chuỗi chứng thư (CA cấp)", "Chain (issuing CA)"},
    [M_CRL] = {"CRL đầy đủ", "Full CRL"},
    [M_DELTA_CRL] = {"CRL bổ sung (delta)", "Delta CRL"},
    [M_CHECK_TITLE] = {"Kiểm tra trạng thái chứng thư", "Check a certificate"},
    [M_CHECK_INTRO] = {"Dán chứng thư dạng PEM hoặc chọn tệp PEM/DER. Chúng tôi cho biết chứng "
                       "thư có phải do CA của chúng tôi cấp, chữ ký có hợp lệ, và trạng thái hiện "
                       "tại.",
                       "Paste a PEM certificate or choose a PEM or DER file. We tell you whether "
                       "one of our CAs issued it, whether its signature verifies, and its status "
                       "right now."},
    [M_CHECK_PASTE] = {"Chứng thư dạng PEM", "Certificate in PEM form"},
    [M_CHECK_FILE] = {"hoặc tệp chứng thư (.pem, .crt, .cer, .der)",
                      "or a certificate file (.pem, .crt, .cer, .der)"},
    [M_CHECK_BUTTON] = {"Kiểm tra", "Check"},
    [M_CHECK_PRIVACY] = {"Chứng thư bạn gửi chỉ dùng để kiểm tra, không được lưu lại.",
                         "What you send is used for this check only and is never stored."},
    [M_CHECK_OURS] = {"Chứng thư này do CA của chúng tôi cấp:", "One of our CAs issued it:"},
    [M_CHECK_SIG_OK] = {"Chữ ký trên chứng thư hợp lệ (đã kiểm tra bằng khóa công khai của CA).",
                        "Its signature verifies against the CA's public key."},
    [M_CHECK_NOT_OURS] = {"Chứng thư này KHÔNG do CA nào của chúng tôi cấp. Chúng tôi không thể "
                          "cho biết trạng thái của nó.",
                          "This certificate was NOT issued by any of our CAs. We cannot tell its "
                          "status."},
    [M_CHECK_BAD_SIG] = {"Chứng thư ghi tên CA của chúng tôi nhưng chữ ký KHÔNG hợp lệ: không "
                         "phải do chúng tôi cấp (giả mạo hoặc bị sửa đổi).",
                         "It names one of our CAs as its issuer but its signature does NOT "
                         "verify: we did not issue it (forged or altered)."},
    [M_CHECK_NOT_REGISTERED] = {"Chữ ký hợp lệ nhưng số hiệu này không có trong cơ sở dữ liệu "
                                "của chúng tôi.",
                                "The signature verifies, but this serial number is not in our "
                                "database."},
    [M_CHECK_DIFFERENT] = {"Cảnh báo: chứng thư được lưu với số hiệu này khác với chứng thư bạn "
                           "gửi.",
                           "Warning: the certificate we hold under this serial number differs "
                           "from the one you sent."},
    [M_CHECK_UNREADABLE] = {"Không đọc được chứng thư: cần một chứng thư X.509 dạng PEM hoặc DER.",
                            "This is not a readable certificate: send one X.509 certificate, PEM "
                            "or DER."},
    [M_CHECK_EMPTY] = {"Chưa có chứng thư nào được gửi.", "No certificate was sent."},
    [M_CHECK_TOO_BIG] = {"Tệp quá lớn để là một chứng thư.", "The file is too large to be a "
                                                             "certificate."},
    [M_ISSUERS_TITLE] = {"Các CA cấp phát", "Issuing CAs"},
    [M_ISSUER_TITLE] = {"CA cấp phát", "Issuing CA"},
    [M_OCSP_URL] = {"Địa chỉ OCSP", "OCSP URL"},
    [M_CRL_NUMBER] = {"Số CRL", "CRL number"},
    [M_THIS_UPDATE] = {"Phát hành lúc", "This update"},
    [M_NEXT_UPDATE] = {"Lần phát hành kế tiếp chậm nhất", "Next update"},
    [M_ENTRIES] = {"Số chứng thư trong danh sách", "Entries"},
    [M_NOT_COUNTED] = {"chưa đếm", "not counted"},
    [M_NONE_YET] = {"chưa có", "none yet"},
    [M_TSA_UNITS] = {"Dịch vụ cấp dấu thời gian (TSA)", "Time-stamping units (TSA)"},
    [M_TSA_POLICIES] = {"Chính sách", "Policies"},
    [M_SEARCH_IN_ISSUER] = {"Tra cứu chứng thư do CA này cấp",
                            "Search the certificates of this CA"},
    [M_CA_CERT] = {"Chứng thư của CA", "CA certificate"},
    [M_NOT_FOUND] = {"Không có trang này hoặc chứng thư này.", "No such page or certificate."},
    [M_BAD_QUERY] = {"Nội dung tìm kiếm không hợp lệ (tối đa 256 byte, 8 từ).",
                     "The search text is not valid (at most 256 bytes and 8 words)."},
    [M_FIELD_OFF] = {"Không được phép tìm theo trường này.", "Searching by this field is not "
                                                             "offered here."},
    [M_TOO_MANY] = {"Quá nhiều yêu cầu từ địa chỉ của bạn. Vui lòng thử lại sau ít phút.",
                    "Too many requests from your address. Please try again in a minute."},
    [M_BUSY] = {"Hệ thống đang bận. Vui lòng thử lại sau.", "The service is busy. Please try "
                                                            "again shortly."},
    [M_ERROR] = {"Đã xảy ra lỗi. Vui lòng thử lại sau.", "Something went wrong. Please try again "
                                                         "later."},
    [M_HIDDEN] = {"(ẩn)", "(hidden)"},
    [M_TIMES_NOTE] = {"Thời gian ghi theo UTC; trong ngoặc là giờ địa phương.",
                      "Times are in UTC; local time in brackets."},
    [M_NO_SUBJECT] = {"(không ghi chủ thể)", "(no subject recorded)"},
    [M_YES] = {"có", "yes"},
    [M_NO] = {"không", "no"},
};

const char *directory__t(int lang, enum directory__msg m)
{
    if (m < 0 || m >= M_COUNT || msgs[m][lang == DIRECTORY__EN] == NULL)
        return "?";
    return msgs[m][lang == DIRECTORY__EN];
}

const char *directory__reason_text(int lang, int reason)
{
    static const char *const vi[] = {"không nêu lý do",
                                     "lộ khóa bí mật",
                                     "lộ khóa của CA",
                                     "thay đổi thông tin/tổ chức",
                                     "được thay thế",
                                     "ngừng sử dụng",
                                     "tạm dừng (certificateHold)",
                                     NULL,
                                     "gỡ khỏi CRL",
                                     "rút quyền",
                                     "lộ khóa của AA"};
    static const char *const en[] = {
        "unspecified",     "key compromise",         "CA compromise",    "affiliation changed",
        "superseded",      "cessation of operation", "certificate hold", NULL,
        "remove from CRL", "privilege withdrawn",    "AA compromise"};
    if (reason == STORE_REASON_NONE)
        return lang == DIRECTORY__EN ? "no reason given" : "không nêu lý do";
    if (reason < 0 || reason > 10)
        return NULL;
    return lang == DIRECTORY__EN ? en[reason] : vi[reason];
}

/* ---- dates ---------------------------------------------------------------------------------- */

static int utc_parts(int64_t t, struct tm *tm)
{
    time_t tt = (time_t)t;
    return gmtime_r(&tt, tm) != NULL;
}

void directory__put_time_html(struct directory__buf *b, int64_t t, int utc_offset_minutes)
{
    struct tm tm, lt;
    int off = utc_offset_minutes < 0 ? -utc_offset_minutes : utc_offset_minutes;
    if (!utc_parts(t, &tm) || !utc_parts(t + (int64_t)utc_offset_minutes * 60, &lt)) {
        directory__put(b, "?");
        return;
    }
    directory__putf(b,
                    "<time datetime=\"%04d-%02d-%02dT%02d:%02d:%02dZ\">%04d-%02d-%02d "
                    "%02d:%02d:%02d UTC</time> <span class=\"local\">(%04d-%02d-%02d "
                    "%02d:%02d UTC%c%02d:%02d)</span>",
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                    lt.tm_year + 1900, lt.tm_mon + 1, lt.tm_mday, lt.tm_hour, lt.tm_min,
                    utc_offset_minutes < 0 ? '-' : '+', off / 60, off % 60);
}

void directory__put_time_json(struct directory__buf *b, int64_t t)
{
    struct tm tm;
    if (!utc_parts(t, &tm)) {
        directory__put(b, "null");
        return;
    }
    directory__putf(b, "\"%04d-%02d-%02dT%02d:%02d:%02dZ\"", tm.tm_year + 1900, tm.tm_mon + 1,
                    tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}
