/* SPDX-License-Identifier: Apache-2.0 */
/* directory.c: the routes of the public directory, the per-client rate limit, the parsing of what
 * a browser sends (query strings, Accept-Language, the status check's form), and the jobs that
 * read the store on the directory's own worker threads and render the pages there. */

/* DESIGN
 *
 * Threads. Handlers run on the http loop threads and never touch the store: a search, a
 * certificate page and a status check become a job on the directory's pool (threads = N, one
 * read-only store connection each, queue_max waiting; a full queue answers 503 at once). The job
 * reads, renders the whole page into its own buffer on the worker thread, and the pool hands it
 * back to the loop that asked, which sends it. The home page, the issuer pages, the forms and the
 * stylesheet need no store and are rendered on the loop (bounded, microseconds). The worker
 * threads run at nice +10, so that on a busy machine searches wait for the CPU rather than OCSP.
 *
 * Status. A certificate's status comes from hooks.status, the index that answers OCSP (thread-safe,
 * non-blocking), so a page never says "good" while OCSP says "revoked"; the store's row is the
 * fallback for certificates the index does not hold (past the OCSP retention).
 *
 * Bounds. Query text 256 bytes and 8 words, page_size rows of bounded size, uploads upload_max
 * (and the http body limit), pages DIRECTORY__PAGE_MAX. Each client address has a token bucket
 * (rate_per_minute, rate_burst) in a fixed table of RATE_SLOTS slots under one mutex held for a
 * few instructions; a newcomer takes over a slot whose owner's bucket is full again, else the
 * oldest of its probe window, so the table never grows.
 *
 * Output. Every value from a certificate or a request goes through directory__put_html or
 * directory__put_json; pages carry a Content-Security-Policy without any script source. */
#define _GNU_SOURCE /* memmem */
#include "directory_int.h"

#include <http/http.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <util/util.h>

#define PREFIX "/directory"
#define DIR_MAX_LOOPS 64
#define RATE_SLOTS 4096
#define RATE_PROBE 8
#define QUERY_MAX STORE_SEARCH_TEXT_MAX
#define DIRECTORY_THREAD_NICE 10

struct dir_issuer {
    char name[UTIL_NAME_MAX];
    int64_t id;
    X509 *cert;
    int published;
};

struct dir_tsa {
    char name[UTIL_NAME_MAX];
    char *url;
    char *policies[DIRECTORY_MAX_POLICIES];
    int n_policies;
};

struct rate_slot {
    char addr[48];
    double tokens;
    int64_t last_ms;
};

struct directory {
    struct directory_config cfg;
    char *store_path, *public_url, *ocsp_url;
    int crl_deltas;
    struct dir_issuer issuers[DIRECTORY_MAX_ISSUERS];
    int n_issuers;
    int64_t published_ids[DIRECTORY_MAX_ISSUERS];
    int n_published;
    struct dir_tsa units[DIRECTORY_MAX_TSA_UNITS];
    int n_units;
    struct directory_hooks hooks;
    struct util_pool *pool;
    struct util_pool_port *ports[DIR_MAX_LOOPS];
    pthread_mutex_t rate_mutex;
    struct rate_slot *rate;
    _Atomic uint64_t pages, searches, checks, rate_limited, rejected_busy, not_found, errors;
};

/* What every page needs to know about the request it answers. */
struct req_info {
    int lang;
    int json;
    char path[160];     /* the page's path, for the language switch */
    char query[640];    /* its query without lang= and format=, already URL-encoded */
    char lang_query[8]; /* "lang=vi" */
};

enum job_kind { JOB_SEARCH = 1, JOB_CERT, JOB_CHECK };
enum field_choice {
    F_AUTO = 0,
    F_NAME,
    F_CN,
    F_O,
    F_OU,
    F_EMAIL,
    F_SERIAL,
    F_FP,
};

struct dir_job {
    struct directory *dir;
    struct http_request *req;
    int kind;
    struct req_info ri;
    /* search */
    char q[QUERY_MAX + 1];
    int field;
    int issuer; /* index into dir->issuers, -1 = every published one */
    int64_t before;
    /* certificate page */
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len;
    int download; /* 0 page, 1 PEM, 2 DER */
    /* check */
    unsigned char *upload;
    size_t upload_len;
    int upload_error; /* M_CHECK_EMPTY, M_CHECK_TOO_BIG or 0 */
    /* answer */
    int status;
    const char *content_type;
    struct directory__buf out;
    char headers[160];
};

static const char security_headers[] =
    "Content-Security-Policy: default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'\r\n"
    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"
    "Cache-Control: no-cache\r\nVary: Accept, Accept-Language\r\n";

/* ---- small parsers -------------------------------------------------------------------------- */

/* Percent-decodes a query value ('+' is a space) into out; UTIL_EINVAL when it does not fit or
 * holds a NUL. */
static int url_decode(const char *in, size_t len, char *out, size_t out_len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < len + 0 && util_hex_digit(in[i + 1]) >= 0 &&
                   util_hex_digit(in[i + 2]) >= 0) {
            c = (char)(util_hex_digit(in[i + 1]) << 4 | util_hex_digit(in[i + 2]));
            i += 2;
        }
        if (c == '\0' || o + 1 >= out_len)
            return UTIL_EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return UTIL_OK;
}

/* Calls fn for each name=value pair of a query string (raw, still encoded). */
static void query_each(const char *query, size_t len,
                       void (*fn)(void *ctx, const char *name, size_t name_len, const char *value,
                                  size_t value_len),
                       void *ctx)
{
    size_t i = 0;
    while (i < len) {
        size_t start = i, eq;
        while (i < len && query[i] != '&')
            i++;
        eq = start;
        while (eq < i && query[eq] != '=')
            eq++;
        fn(ctx, query + start, eq - start, eq < i ? query + eq + 1 : query + i,
           eq < i ? i - eq - 1 : 0);
        i++;
    }
}

struct params {
    char q[QUERY_MAX + 1];
    char field[16];
    char issuer[UTIL_NAME_MAX];
    char before[24];
    char lang[4];
    char format[8];
    int bad;
    struct req_info *ri;
};

static int name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && memcmp(name, want, len) == 0;
}

static void param_fn(void *ctx, const char *name, size_t name_len, const char *value,
                     size_t value_len)
{
    struct params *p = ctx;
    char *dst = NULL;
    size_t dst_len = 0;
    if (name_is(name, name_len, "q")) {
        dst = p->q;
        dst_len = sizeof(p->q);
    } else if (name_is(name, name_len, "field")) {
        dst = p->field;
        dst_len = sizeof(p->field);
    } else if (name_is(name, name_len, "issuer")) {
        dst = p->issuer;
        dst_len = sizeof(p->issuer);
    } else if (name_is(name, name_len, "before")) {
        dst = p->before;
        dst_len = sizeof(p->before);
    } else if (name_is(name, name_len, "lang")) {
        dst = p->lang;
        dst_len = sizeof(p->lang);
    } else if (name_is(name, name_len, "format")) {
        dst = p->format;
        dst_len = sizeof(p->format);
    }
    if (dst != NULL && url_decode(value, value_len, dst, dst_len) != UTIL_OK)
        p->bad = 1;
    /* Everything but lang and format is kept for the language switch link. */
    if (p->ri != NULL && !name_is(name, name_len, "lang") && !name_is(name, name_len, "format") &&
        name_len > 0) {
        size_t used = strlen(p->ri->query);
        size_t need = name_len + value_len + 2;
        if (used + need < sizeof(p->ri->query)) {
            if (used > 0)
                p->ri->query[used++] = '&';
            memcpy(p->ri->query + used, name, name_len);
            used += name_len;
            p->ri->query[used++] = '=';
            memcpy(p->ri->query + used, value, value_len);
            p->ri->query[used + value_len] = '\0';
        }
    }
}

/* The language: ?lang= first, then the highest-weighted of vi and en in Accept-Language. */
static int pick_lang(const char *default_lang, const char *al, size_t len, const char *param)
{
    double best_q = -1;
    int best = strcmp(default_lang, "en") == 0 ? DIRECTORY__EN : DIRECTORY__VI;
    if (strcmp(param, "vi") == 0)
        return DIRECTORY__VI;
    if (strcmp(param, "en") == 0)
        return DIRECTORY__EN;
    for (size_t i = 0; al != NULL && i < len;) {
        size_t start, end;
        double q = 1.0;
        while (i < len && (al[i] == ' ' || al[i] == ','))
            i++;
        start = i;
        while (i < len && al[i] != ',' && al[i] != ';')
            i++;
        end = i;
        while (i < len && al[i] != ',') {
            if (al[i] == 'q' && i + 1 < len && al[i + 1] == '=') {
                char num[8] = "";
                size_t n = 0;
                i += 2;
                while (i < len && n + 1 < sizeof(num) &&
                       ((al[i] >= '0' && al[i] <= '9') || al[i] == '.'))
                    num[n++] = al[i++];
                num[n] = '\0';
                q = strtod(num, NULL);
                continue;
            }
            i++;
        }
        if (end - start >= 2 && q > best_q) {
            if (strncasecmp(al + start, "vi", 2) == 0 &&
                (end - start == 2 || al[start + 2] == '-')) {
                best = DIRECTORY__VI;
                best_q = q;
            } else if (strncasecmp(al + start, "en", 2) == 0 &&
                       (end - start == 2 || al[start + 2] == '-')) {
                best = DIRECTORY__EN;
                best_q = q;
            }
        }
    }
    return best;
}

static int wants_json(struct http_request *req, const char *format)
{
    size_t len = 0;
    const char *accept = NULL;
    if (strcmp(format, "json") == 0)
        return 1;
    if (strcmp(format, "html") == 0)
        return 0;
    accept = http_request_header(req, "Accept", &len);
    return accept != NULL && len >= 16 && strncasecmp(accept, "application/json", 16) == 0;
}

/* Hex (any case, colons, spaces, a 0x prefix, leading zeros) into bytes. Returns the number of
 * hex digits, or -1 when the text is not hex or too long for out. */
static int parse_hex(const char *text, unsigned char *out, size_t out_max, size_t *out_len)
{
    char digits[2 * 64 + 1];
    size_t n = 0;
    const char *p = text;
    while (*p == ' ')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        p += 2;
    for (; *p != '\0'; p++) {
        if (*p == ':' || *p == ' ' || *p == '-')
            continue;
        if (util_hex_digit(*p) < 0 || n + 1 >= sizeof(digits))
            return -1;
        digits[n++] = *p;
    }
    if (n == 0 || (n + 1) / 2 > out_max)
        return -1;
    *out_len = 0;
    for (size_t i = 0; i < n;) {
        int hi = 0, lo;
        if ((n - i) % 2 == 1) {
            lo = util_hex_digit(digits[i]);
            i += 1;
        } else {
            hi = util_hex_digit(digits[i]);
            lo = util_hex_digit(digits[i + 1]);
            i += 2;
        }
        out[(*out_len)++] = (unsigned char)(hi << 4 | lo);
    }
    return (int)n;
}

/* ---- rate limit ----------------------------------------------------------------------------- */

static uint64_t fnv(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Takes one token for the client's address. Returns 1 when allowed. */
static int rate_take(struct directory *dir, struct http_request *req)
{
    const char *peer = http_request_peer(req);
    char addr[48];
    const char *colon = strrchr(peer, ':');
    size_t len = colon != NULL ? (size_t)(colon - peer) : strlen(peer);
    uint64_t h;
    int64_t now = util_mono_ms();
    double per_ms = dir->cfg.rate_per_minute / 60000.0;
    struct rate_slot *slot = NULL, *oldest = NULL;
    int allowed;

    if (len >= sizeof(addr))
        len = sizeof(addr) - 1;
    memcpy(addr, peer, len);
    addr[len] = '\0';
    h = fnv(addr);
    pthread_mutex_lock(&dir->rate_mutex);
    for (int i = 0; i < RATE_PROBE; i++) {
        struct rate_slot *s = &dir->rate[(h + (uint64_t)i) % RATE_SLOTS];
        double refilled;
        if (strcmp(s->addr, addr) == 0) {
            slot = s;
            break;
        }
        refilled = s->tokens + (double)(now - s->last_ms) * per_ms;
        if (s->addr[0] == '\0' || refilled >= dir->cfg.rate_burst) {
            if (slot == NULL)
                slot = s; /* free, or its owner is back to a full bucket: forget it */
            continue;
        }
        if (oldest == NULL || s->last_ms < oldest->last_ms)
            oldest = s;
    }
    if (slot == NULL)
        slot = oldest;
    if (strcmp(slot->addr, addr) != 0) {
        (void)snprintf(slot->addr, sizeof(slot->addr), "%s", addr);
        slot->tokens = dir->cfg.rate_burst;
        slot->last_ms = now;
    }
    slot->tokens += (double)(now - slot->last_ms) * per_ms;
    if (slot->tokens > dir->cfg.rate_burst)
        slot->tokens = dir->cfg.rate_burst;
    slot->last_ms = now;
    allowed = slot->tokens >= 1.0;
    if (allowed)
        slot->tokens -= 1.0;
    pthread_mutex_unlock(&dir->rate_mutex);
    return allowed;
}

/* ---- page frame ----------------------------------------------------------------------------- */

static const char stylesheet[] =
    ":root{--fg:#1b1f24;--bg:#fff;--mut:#555e68;--acc:#0b5cad;--line:#d6dbe1;--ok:#0a6b2e;"
    "--bad:#a3151b;--warn:#8a5a00}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:16px/1.5 system-ui,'Noto Sans','DejaVu Sans',sans-serif;color:var(--fg);"
    "background:var(--bg)}\n"
    "header,main,footer{max-width:72rem;margin:0 auto;padding:.75rem 1rem}\n"
    "header{display:flex;flex-wrap:wrap;gap:1rem;align-items:center;justify-content:space-between;"
    "border-bottom:3px solid var(--acc)}\n"
    ".brand{font-weight:700;font-size:1.15rem;margin:0}.brand a{color:var(--fg);"
    "text-decoration:none}\n"
    "nav ul{list-style:none;display:flex;flex-wrap:wrap;gap:1rem;margin:0;padding:0}\n"
    "a{color:var(--acc)}a:focus,button:focus,input:focus,select:focus,textarea:focus{"
    "outline:3px solid #f2b300;outline-offset:2px}\n"
    ".skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:1rem;background:#fff;"
    "padding:.5rem}\n"
    ".vh{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}\n"
    "form.search{display:grid;gap:.5rem;grid-template-columns:1fr;max-width:48rem}\n"
    "label{font-weight:600}input[type=search],select,textarea{font:inherit;padding:.45rem;"
    "border:1px solid #8a939c;border-radius:4px;width:100%}\n"
    "textarea{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.85rem}\n"
    "button{font:inherit;font-weight:600;padding:.5rem 1.25rem;border:0;border-radius:4px;"
    "background:var(--acc);color:#fff;cursor:pointer;justify-self:start}\n"
    ".row{display:flex;flex-wrap:wrap;gap:1rem}.row>div{flex:1 1 14rem}\n"
    ".hint,.note,.local{color:var(--mut);font-size:.9rem}\n"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;"
    "padding:.45rem .5rem;border-bottom:1px solid var(--line)}\n"
    "table.facts th{width:14rem;font-weight:600}\n"
    "table.results td{overflow-wrap:anywhere}\n"
    "code,.fp{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:.85rem;"
    "overflow-wrap:anywhere}\n"
    "ul.name,table.facts ul{list-style:none;margin:0;padding:0}.k{display:inline-block;"
    "min-width:3rem;color:var(--mut);font-size:.85rem}\n"
    "dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.3rem 0}"
    "dl.kv dt{font-weight:600}dl.kv dd{margin:0}\n"
    ".badge{display:inline-block;padding:.1rem .6rem;border-radius:1rem;font-weight:700;"
    "border:2px solid currentColor}\n"
    ".st-good{color:var(--ok)}.st-revoked{color:var(--bad)}.st-expired,.st-not-yet-valid{"
    "color:var(--warn)}.st-unknown{color:var(--mut)}\n"
    "section.status{border:1px solid var(--line);border-left:6px solid var(--acc);padding:"
    ".25rem 1rem;margin:1rem 0}\n"
    ".verdict{border:2px solid var(--line);padding:.5rem 1rem;margin:1rem 0}"
    ".verdict.ok{border-color:var(--ok)}.verdict.no{border-color:var(--bad)}\n"
    "footer{color:var(--mut);font-size:.85rem;border-top:1px solid var(--line);margin-top:2rem}\n";

static void page_start(struct directory__buf *b, const struct req_info *ri, const char *title)
{
    int lang = ri->lang;
    int other = lang == DIRECTORY__EN ? DIRECTORY__VI : DIRECTORY__EN;
    directory__putf(b,
                    "<!DOCTYPE html>\n<html lang=\"%s\"><head><meta charset=\"utf-8\">"
                    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                    "<title>",
                    lang == DIRECTORY__EN ? "en" : "vi");
    directory__put_htmls(b, title);
    directory__putf(b, " — %s</title><link rel=\"stylesheet\" href=\"" PREFIX "/style.css\">",
                    directory__t(lang, M_SITE));
    directory__putf(b,
                    "</head><body><a class=\"skip\" href=\"#main\">%s</a><header>"
                    "<p class=\"brand\"><a href=\"" PREFIX "?%s\">%s</a></p>"
                    "<nav aria-label=\"%s\"><ul>"
                    "<li><a href=\"" PREFIX "/search?%s\">%s</a></li>"
                    "<li><a href=\"" PREFIX "/check?%s\">%s</a></li>"
                    "<li><a href=\"" PREFIX "?%s#issuers\">%s</a></li>",
                    directory__t(lang, M_SKIP), ri->lang_query, directory__t(lang, M_SITE),
                    directory__t(lang, M_NAV), ri->lang_query, directory__t(lang, M_NAV_SEARCH),
                    ri->lang_query, directory__t(lang, M_NAV_CHECK), ri->lang_query,
                    directory__t(lang, M_NAV_ISSUERS));
    directory__put(b, "<li><a hreflang=\"");
    directory__put(b, other == DIRECTORY__EN ? "en" : "vi");
    directory__put(b, "\" lang=\"");
    directory__put(b, other == DIRECTORY__EN ? "en" : "vi");
    directory__put(b, "\" href=\"");
    directory__put_htmls(b, ri->path);
    directory__put(b, "?");
    if (ri->query[0] != '\0') {
        directory__put_htmls(b, ri->query);
        directory__put(b, "&amp;");
    }
    directory__putf(b, "lang=%s\">%s</a></li></ul></nav></header><main id=\"main\">",
                    other == DIRECTORY__EN ? "en" : "vi", directory__t(lang, M_SWITCH));
}

static void page_end(struct directory__buf *b, const struct req_info *ri)
{
    directory__putf(b, "</main><footer><p>%s</p></footer></body></html>\n",
                    directory__t(ri->lang, M_TIMES_NOTE));
}

static void respond_buf(struct http_request *req, int status, const char *ctype,
                        struct directory__buf *b, int lang)
{
    char headers[sizeof(security_headers) + 64];
    struct http_response resp;
    if (b->failed) {
        http_request_respond_text(req, 500, "text/plain", "page too large\n");
        return;
    }
    (void)snprintf(headers, sizeof(headers), "%sContent-Language: %s\r\n", security_headers,
                   lang == DIRECTORY__EN ? "en" : "vi"); /* fits */
    memset(&resp, 0, sizeof(resp));
    resp.status = status;
    resp.content_type = ctype;
    resp.body_bytes = b->data;
    resp.body_len = b->len;
    resp.headers = headers;
    http_request_respond(req, &resp);
}

/* A page that only says something (errors, limits). */
static void message_page(struct directory__buf *b, const struct req_info *ri, int status,
                         enum directory__msg m)
{
    if (ri->json) {
        directory__putf(b, "{\"error\":%d,\"message\":", status);
        directory__put_jsons(b, directory__t(ri->lang, m));
        directory__put(b, "}\n");
        return;
    }
    page_start(b, ri, directory__t(ri->lang, m));
    directory__putf(b, "<h1>%d</h1><p role=\"alert\">%s</p>", status, directory__t(ri->lang, m));
    page_end(b, ri);
}

static void respond_message(struct directory *dir, struct http_request *req,
                            const struct req_info *ri, int status, enum directory__msg m)
{
    struct directory__buf b;
    directory__buf_init(&b, 64 * 1024);
    message_page(&b, ri, status, m);
    respond_buf(req, status, ri->json ? "application/json" : "text/html; charset=utf-8", &b,
                ri->lang);
    directory__buf_cleanup(&b);
    if (status == 404)
        atomic_fetch_add(&dir->not_found, 1);
}

/* ---- issuers -------------------------------------------------------------------------------- */

static const struct dir_issuer *issuer_by_id(const struct directory *dir, int64_t id)
{
    for (int i = 0; i < dir->n_issuers; i++)
        if (dir->issuers[i].id == id)
            return &dir->issuers[i];
    return NULL;
}

static int issuer_by_name(const struct directory *dir, const char *name, size_t len)
{
    for (int i = 0; i < dir->n_issuers; i++)
        if (dir->issuers[i].published && strlen(dir->issuers[i].name) == len &&
            memcmp(dir->issuers[i].name, name, len) == 0)
            return i;
    return -1;
}

/* The certificate's status: the OCSP index first, the store's row otherwise. */
static void view_status(const struct directory *dir, struct directory__certview *v,
                        const struct store_cert *row, int have_row, int64_t not_before,
                        int64_t not_after)
{
    struct directory_status st;
    int64_t now = util_now_ms() / 1000;
    int have = 0, status = 0;
    memset(&st, 0, sizeof(st));
    if (have_row && dir->hooks.status != NULL &&
        dir->hooks.status(dir->hooks.ctx, row->issuer_id, row->serial, row->serial_len, &st) == 1) {
        have = 1;
        status = st.status;
        v->reason = st.reason;
        v->revoked_at = st.revoked_at;
        v->invalidity_date = st.invalidity_date;
        v->status_source = "ocsp-index";
    } else if (have_row) {
        have = 1;
        status = row->status;
        v->reason = row->reason;
        v->revoked_at = row->revoked_at;
        v->invalidity_date = row->invalidity_date;
        v->status_source = "store";
    } else {
        v->status_source = "none";
    }
    v->state = directory__state_of(have, status, not_before, not_after, now);
}

static void view_init(const struct directory *dir, const struct req_info *ri,
                      struct directory__certview *v)
{
    memset(v, 0, sizeof(*v));
    v->lang = ri->lang;
    v->show_email = dir->cfg.show_email;
    v->utc_offset = dir->cfg.utc_offset_minutes;
    v->prefix = PREFIX;
    v->lang_query = ri->lang_query;
    v->public_url = dir->public_url;
    v->crl_deltas = dir->crl_deltas;
    v->state = DIRECTORY__UNKNOWN;
    v->status_source = "none";
}

/* ---- the search form and the home page ---------------------------------------------------------- */

static void search_form(const struct directory *dir, struct directory__buf *b,
                        const struct req_info *ri, const char *q, const char *field,
                        const char *issuer)
{
    int lang = ri->lang;
    unsigned f = dir->cfg.search_fields;
    static const struct {
        const char *value;
        enum directory__msg label;
        unsigned need;
    } opts[] = {
        {"auto", M_FIELD_AUTO, 0},
        {"name", M_FIELD_NAME, DIRECTORY_FIELD_CN | DIRECTORY_FIELD_O | DIRECTORY_FIELD_OU},
        {"cn", M_FIELD_CN, DIRECTORY_FIELD_CN},
        {"o", M_FIELD_O, DIRECTORY_FIELD_O},
        {"ou", M_FIELD_OU, DIRECTORY_FIELD_OU},
        {"email", M_FIELD_EMAIL, DIRECTORY_FIELD_EMAIL},
        {"serial", M_FIELD_SERIAL, DIRECTORY_FIELD_SERIAL},
        {"fingerprint", M_FIELD_FP, DIRECTORY_FIELD_FINGERPRINT},
    };
    directory__putf(b,
                    "<form class=\"search\" role=\"search\" method=\"get\" action=\"" PREFIX
                    "/search\"><input type=\"hidden\" name=\"lang\" value=\"%s\">"
                    "<label for=\"q\">%s</label><input type=\"search\" id=\"q\" name=\"q\" "
                    "maxlength=\"256\" required aria-describedby=\"qhint\" value=\"",
                    lang == DIRECTORY__EN ? "en" : "vi", directory__t(lang, M_SEARCH_LABEL));
    directory__put_htmls(b, q);
    directory__putf(b,
                    "\"><p class=\"hint\" id=\"qhint\">%s</p><div class=\"row\"><div>"
                    "<label for=\"field\">%s</label><select id=\"field\" name=\"field\">",
                    directory__t(lang, M_SEARCH_HINT), directory__t(lang, M_FIELD_LABEL));
    for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
        if (opts[i].need != 0 && (f & opts[i].need) == 0)
            continue;
        directory__putf(b, "<option value=\"%s\"%s>%s</option>", opts[i].value,
                        strcmp(field, opts[i].value) == 0 ? " selected" : "",
                        directory__t(lang, opts[i].label));
    }
    directory__putf(b,
                    "</select></div><div><label for=\"issuer\">%s</label>"
                    "<select id=\"issuer\" name=\"issuer\"><option value=\"\">%s</option>",
                    directory__t(lang, M_ISSUER_LABEL), directory__t(lang, M_ISSUER_ALL));
    for (int i = 0; i < dir->n_issuers; i++) {
        if (!dir->issuers[i].published)
            continue;
        directory__put(b, "<option value=\"");
        directory__put_htmls(b, dir->issuers[i].name);
        directory__putf(b, "\"%s>", strcmp(issuer, dir->issuers[i].name) == 0 ? " selected" : "");
        directory__put_htmls(b, dir->issuers[i].name);
        directory__put(b, "</option>");
    }
    directory__putf(b, "</select></div></div><button type=\"submit\">%s</button></form>",
                    directory__t(lang, M_SEARCH_BUTTON));
}

static void issuer_list_html(const struct directory *dir, struct directory__buf *b,
                             const struct req_info *ri)
{
    directory__putf(b, "<h2 id=\"issuers\">%s</h2><ul>", directory__t(ri->lang, M_ISSUERS_TITLE));
    for (int i = 0; i < dir->n_issuers; i++) {
        char *line = NULL;
        if (!dir->issuers[i].published)
            continue;
        line =
            directory__name_line(X509_get_subject_name(dir->issuers[i].cert), dir->cfg.show_email);
        directory__put(b, "<li><a href=\"" PREFIX "/issuer/");
        directory__put_htmls(b, dir->issuers[i].name);
        directory__putf(b, "?%s\">", ri->lang_query);
        directory__put_htmls(b, dir->issuers[i].name);
        directory__put(b, "</a> — <bdi>");
        directory__put_htmls(b, line);
        directory__put(b, "</bdi></li>");
        free(line);
    }
    directory__put(b, "</ul>");
}

static void home_page(struct directory *dir, struct http_request *req, const struct req_info *ri)
{
    struct directory__buf b;
    directory__buf_init(&b, DIRECTORY__PAGE_MAX);
    if (ri->json) {
        directory__put(&b, "{\"issuers\":[");
        for (int i = 0, n = 0; i < dir->n_issuers; i++) {
            if (!dir->issuers[i].published)
                continue;
            directory__put(&b, n++ ? "," : "");
            directory__put_jsons(&b, dir->issuers[i].name);
        }
        directory__put(&b, "],\"search\":\"" PREFIX "/search\",\"check\":\"" PREFIX "/check\"}\n");
    } else {
        page_start(&b, ri, directory__t(ri->lang, M_SITE));
        directory__putf(&b, "<h1>%s</h1><p>%s</p>", directory__t(ri->lang, M_SITE),
                        directory__t(ri->lang, M_HOME_INTRO));
        search_form(dir, &b, ri, "", "auto", "");
        issuer_list_html(dir, &b, ri);
        directory__putf(&b, "<p><a href=\"" PREFIX "/check?%s\">%s</a></p>", ri->lang_query,
                        directory__t(ri->lang, M_NAV_CHECK));
        page_end(&b, ri);
    }
    respond_buf(req, 200, ri->json ? "application/json" : "text/html; charset=utf-8", &b, ri->lang);
    directory__buf_cleanup(&b);
}

/* ---- issuer pages --------------------------------------------------------------------------- */

static void crl_row(struct directory__buf *b, int lang, int utc_offset, enum directory__msg title,
                    int64_t number, int64_t this_update, int64_t next_update, int64_t entries)
{
    directory__putf(b, "<tr><th scope=\"row\">%s</th><td>", directory__t(lang, title));
    if (number == 0) {
        directory__putf(b, "%s</td></tr>", directory__t(lang, M_NONE_YET));
        return;
    }
    directory__putf(b, "<dl class=\"kv\"><dt>%s</dt><dd>%lld</dd><dt>%s</dt><dd>",
                    directory__t(lang, M_CRL_NUMBER), (long long)number,
                    directory__t(lang, M_THIS_UPDATE));
    directory__put_time_html(b, this_update, utc_offset);
    directory__put(b, "</dd>");
    if (next_update != 0) {
        directory__putf(b, "<dt>%s</dt><dd>", directory__t(lang, M_NEXT_UPDATE));
        directory__put_time_html(b, next_update, utc_offset);
        directory__put(b, "</dd>");
    }
    directory__putf(b, "<dt>%s</dt><dd>", directory__t(lang, M_ENTRIES));
    if (entries >= 0)
        directory__putf(b, "%lld", (long long)entries);
    else
        directory__put(b, directory__t(lang, M_NOT_COUNTED));
    directory__put(b, "</dd></dl></td></tr>");
}

static void issuer_page(struct directory *dir, struct http_request *req, const struct req_info *ri,
                        int idx)
{
    const struct dir_issuer *is = &dir->issuers[idx];
    struct directory_crl_info crl;
    struct directory__certview v;
    struct directory__buf b;
    int have_crl = 0;
    int lang = ri->lang;

    memset(&crl, 0, sizeof(crl));
    if (dir->hooks.crl_info != NULL && dir->hooks.crl_info(dir->hooks.ctx, is->name, &crl) == 0)
        have_crl = 1;
    view_init(dir, ri, &v); /* no issuer_name: the CA's own links are on this page already */
    directory__buf_init(&b, DIRECTORY__PAGE_MAX);
    if (ri->json) {
        directory__put(&b, "{\"name\":");
        directory__put_jsons(&b, is->name);
        directory__put(&b, ",\"certificate\":");
        directory__cert_json(&b, is->cert, &v);
        directory__put(&b, ",\"ocsp_url\":");
        directory__put_jsons(&b, dir->ocsp_url);
        directory__put(&b, ",\"crl\":");
        if (have_crl) {
            directory__putf(&b, "{\"number\":%lld,\"this_update\":", (long long)crl.full_number);
            directory__put_time_json(&b, crl.this_update);
            directory__put(&b, ",\"next_update\":");
            directory__put_time_json(&b, crl.next_update);
            directory__putf(&b, ",\"entries\":%lld,\"delta_number\":%lld}",
                            (long long)crl.full_entries, (long long)crl.delta_number);
        } else {
            directory__put(&b, "null");
        }
        directory__put(&b, ",\"tsa_units\":[");
        for (int i = 0; i < dir->n_units; i++) {
            directory__put(&b, i ? ",{\"name\":" : "{\"name\":");
            directory__put_jsons(&b, dir->units[i].name);
            directory__put(&b, ",\"url\":");
            directory__put_jsons(&b, dir->units[i].url);
            directory__put(&b, ",\"policies\":[");
            for (int j = 0; j < dir->units[i].n_policies; j++) {
                directory__put(&b, j ? "," : "");
                directory__put_jsons(&b, dir->units[i].policies[j]);
            }
            directory__put(&b, "]}");
        }
        directory__put(&b, "]}\n");
    } else {
        char *cn = directory__name_cn(X509_get_subject_name(is->cert));
        page_start(&b, ri, is->name);
        directory__putf(&b, "<h1>%s: <bdi>", directory__t(lang, M_ISSUER_TITLE));
        directory__put_htmls(&b, cn != NULL ? cn : is->name);
        directory__put(&b, "</bdi></h1><p><a href=\"" PREFIX "/search?issuer=");
        directory__put_url(&b, is->name, strlen(is->name));
        directory__putf(&b, "&amp;%s\">%s</a></p>", ri->lang_query,
                        directory__t(lang, M_SEARCH_IN_ISSUER));
        free(cn);
        directory__putf(&b, "<table class=\"facts\"><tr><th scope=\"row\">%s</th><td><a href=\"",
                        directory__t(lang, M_OCSP_URL));
        directory__put_htmls(&b, dir->ocsp_url);
        directory__put(&b, "\">");
        directory__put_htmls(&b, dir->ocsp_url);
        directory__put(&b, "</a></td></tr>");
        crl_row(&b, lang, dir->cfg.utc_offset_minutes, M_CRL, have_crl ? crl.full_number : 0,
                crl.this_update, crl.next_update, crl.full_entries);
        if (dir->crl_deltas)
            crl_row(&b, lang, dir->cfg.utc_offset_minutes, M_DELTA_CRL,
                    have_crl ? crl.delta_number : 0, crl.delta_this_update, 0, crl.delta_entries);
        directory__putf(&b, "<tr><th scope=\"row\">%s</th><td><a href=\"/ca/",
                        directory__t(lang, M_CA_CERT));
        directory__put_htmls(&b, is->name);
        directory__put(&b, ".crt\">");
        directory__put_htmls(&b, is->name);
        directory__put(&b, ".crt</a> · <a href=\"/crl/");
        directory__put_htmls(&b, is->name);
        directory__put(&b, ".crl\">");
        directory__put_htmls(&b, is->name);
        directory__put(&b, ".crl</a></td></tr></table>");
        if (dir->n_units > 0) {
            directory__putf(&b, "<h2>%s</h2><ul>", directory__t(lang, M_TSA_UNITS));
            for (int i = 0; i < dir->n_units; i++) {
                directory__put(&b, "<li><bdi>");
                directory__put_htmls(&b, dir->units[i].name);
                directory__put(&b, "</bdi>: <code>");
                directory__put_htmls(&b, dir->units[i].url);
                directory__putf(&b, "</code> — %s: ", directory__t(lang, M_TSA_POLICIES));
                for (int j = 0; j < dir->units[i].n_policies; j++) {
                    directory__put(&b, j ? ", <code>" : "<code>");
                    directory__put_htmls(&b, dir->units[i].policies[j]);
                    directory__put(&b, "</code>");
                }
                directory__put(&b, "</li>");
            }
            directory__put(&b, "</ul>");
        }
        directory__putf(&b, "<h2>%s</h2>", directory__t(lang, M_CA_CERT));
        /* The CA's own status is not a directory entry: show its facts without a status box. */
        {
            size_t mark = b.len;
            directory__cert_html(&b, is->cert, &v);
            /* Drop the status section cert_html opens with (a CA certificate is not looked up). */
            if (!b.failed) {
                char *end = strstr(b.data + mark, "</section>");
                if (end != NULL) {
                    size_t cut = (size_t)(end + 10 - (b.data + mark));
                    memmove(b.data + mark, b.data + mark + cut, b.len - mark - cut + 1);
                    b.len -= cut;
                }
            }
        }
        page_end(&b, ri);
    }
    respond_buf(req, 200, ri->json ? "application/json" : "text/html; charset=utf-8", &b, lang);
    directory__buf_cleanup(&b);
    atomic_fetch_add(&dir->pages, 1);
}

/* ---- the check form ------------------------------------------------------------------------- */

static void check_form(struct directory__buf *b, const struct req_info *ri)
{
    int lang = ri->lang;
    directory__putf(b,
                    "<form class=\"search\" method=\"post\" action=\"" PREFIX "/check?%s\" "
                    "enctype=\"multipart/form-data\"><label for=\"pem\">%s</label>"
                    "<textarea id=\"pem\" name=\"pem\" rows=\"10\" spellcheck=\"false\" "
                    "placeholder=\"-----BEGIN CERTIFICATE-----\"></textarea>"
                    "<label for=\"file\">%s</label><input type=\"file\" id=\"file\" name=\"file\" "
                    "accept=\".pem,.crt,.cer,.der,application/pkix-cert,"
                    "application/x-pem-file\"><p class=\"hint\">%s</p>"
                    "<button type=\"submit\">%s</button></form>",
                    ri->lang_query, directory__t(lang, M_CHECK_PASTE),
                    directory__t(lang, M_CHECK_FILE), directory__t(lang, M_CHECK_PRIVACY),
                    directory__t(lang, M_CHECK_BUTTON));
}

static void check_page(struct http_request *req, const struct req_info *ri)
{
    struct directory__buf b;
    directory__buf_init(&b, 64 * 1024);
    if (ri->json) {
        directory__put(&b, "{\"post\":\"" PREFIX "/check\",\"fields\":[\"pem\",\"file\"],"
                           "\"also\":\"a request body of type application/pkix-cert or "
                           "application/x-pem-file\"}\n");
    } else {
        page_start(&b, ri, directory__t(ri->lang, M_CHECK_TITLE));
        directory__putf(&b, "<h1>%s</h1><p>%s</p>", directory__t(ri->lang, M_CHECK_TITLE),
                        directory__t(ri->lang, M_CHECK_INTRO));
        check_form(&b, ri);
        page_end(&b, ri);
    }
    respond_buf(req, 200, ri->json ? "application/json" : "text/html; charset=utf-8", &b, ri->lang);
    directory__buf_cleanup(&b);
}

/* Finds the certificate in a POST body: a multipart form (fields file and pem, the file first
 * when both are given), a urlencoded form (pem=), or the bare certificate. *out points into body
 * (or into decoded, which the caller frees). */
static int upload_from_body(const char *ct, size_t ct_len, const unsigned char *body, size_t len,
                            const unsigned char **out, size_t *out_len, char **decoded)
{
    *out = NULL;
    *out_len = 0;
    *decoded = NULL;
    if (ct != NULL && ct_len >= 19 && strncasecmp(ct, "multipart/form-data", 19) == 0) {
        char boundary[80];
        size_t blen;
        const char *bp = NULL;
        const unsigned char *pem = NULL, *file = NULL;
        size_t pem_len = 0, file_len = 0;
        for (size_t i = 0; i + 9 <= ct_len; i++)
            if (strncasecmp(ct + i, "boundary=", 9) == 0) {
                bp = ct + i + 9;
                break;
            }
        if (bp == NULL)
            return UTIL_EINVAL;
        blen = (size_t)(ct + ct_len - bp);
        if (blen > 0 && bp[0] == '"') {
            const char *q = memchr(bp + 1, '"', blen - 1);
            if (q == NULL)
                return UTIL_EINVAL;
            blen = (size_t)(q - bp - 1);
            bp++;
        } else {
            for (size_t i = 0; i < blen; i++)
                if (bp[i] == ';' || bp[i] == ' ') {
                    blen = i;
                    break;
                }
        }
        if (blen == 0 || blen + 4 >= sizeof(boundary))
            return UTIL_EINVAL;
        (void)snprintf(boundary, sizeof(boundary), "\r\n--%.*s", (int)blen, bp);
        blen += 4;
        /* Parts start after "--boundary" (the first without the leading CRLF). */
        {
            const unsigned char *p = body;
            const unsigned char *end = body + len;
            if ((size_t)(end - p) < blen - 2 || memcmp(p, boundary + 2, blen - 2) != 0)
                return UTIL_EINVAL;
            p += blen - 2;
            for (;;) {
                const unsigned char *hdr_end, *next;
                const unsigned char *content;
                size_t hdr_len;
                if (end - p >= 2 && p[0] == '-' && p[1] == '-')
                    break; /* the closing delimiter */
                if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
                    return UTIL_EINVAL;
                p += 2;
                hdr_end = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
                if (hdr_end == NULL)
                    return UTIL_EINVAL;
                hdr_len = (size_t)(hdr_end - p);
                content = hdr_end + 4;
                next = memmem(content, (size_t)(end - content), boundary, blen);
                if (next == NULL)
                    return UTIL_EINVAL;
                if (memmem(p, hdr_len, "name=\"file\"", 11) != NULL) {
                    file = content;
                    file_len = (size_t)(next - content);
                } else if (memmem(p, hdr_len, "name=\"pem\"", 10) != NULL) {
                    pem = content;
                    pem_len = (size_t)(next - content);
                }
                p = next + blen;
            }
        }
        if (file_len > 0) {
            *out = file;
            *out_len = file_len;
        } else {
            *out = pem;
            *out_len = pem_len;
        }
        return UTIL_OK;
    }
    if (ct != NULL && ct_len >= 33 &&
        strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
        const char *s = (const char *)body;
        for (size_t i = 0; i + 4 <= len; i++) {
            if ((i == 0 || s[i - 1] == '&') && memcmp(s + i, "pem=", 4) == 0) {
                size_t j = i + 4, vlen;
                while (j < len && s[j] != '&')
                    j++;
                vlen = j - i - 4;
                *decoded = malloc(vlen + 1);
                if (*decoded == NULL)
                    return UTIL_ENOMEM;
                if (url_decode(s + i + 4, vlen, *decoded, vlen + 1) != UTIL_OK)
                    return UTIL_EINVAL;
                *out = (const unsigned char *)*decoded;
                *out_len = strlen(*decoded);
                return UTIL_OK;
            }
        }
        return UTIL_OK;
    }
    *out = body;
    *out_len = len;
    return UTIL_OK;
}

/* ---- jobs ----------------------------------------------------------------------------------- */

static int thread_init(void *pool_ctx, void **thread_state)
{
    struct directory *dir = pool_ctx;
    struct store *store = NULL;
    int rc;
    /* Searches yield the CPU to OCSP, CRLs and time stamps: this thread runs at nice +10 (on
     * Linux a thread has its own nice value). Lowering one's priority needs no privilege. */
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), DIRECTORY_THREAD_NICE) != 0)
        UTIL_WARN(DIRECTORY_MOD, "cannot lower the priority of a directory thread: %s",
                  strerror(errno));
    rc = store_open_blocking(dir->store_path, STORE_OPEN_READONLY | STORE_OPEN_STALE_READS, &store);
    if (rc != UTIL_OK)
        return rc;
    *thread_state = store;
    return UTIL_OK;
}

static void thread_fini(void *pool_ctx, void *thread_state)
{
    store_close(thread_state);
}

struct search_ctx {
    struct dir_job *job;
    int rows;
    int64_t last_cursor;
};

static void validity_html(struct directory__buf *b, int64_t nb, int64_t na, int utc_offset)
{
    directory__put_time_html(b, nb, utc_offset);
    directory__put(b, " → ");
    directory__put_time_html(b, na, utc_offset);
}

static int search_row(void *ctx, const struct store_search_row *row)
{
    struct search_ctx *sc = ctx;
    struct dir_job *job = sc->job;
    struct directory *dir = job->dir;
    struct directory__buf *b = &job->out;
    const struct dir_issuer *is = issuer_by_id(dir, row->cert.issuer_id);
    struct directory__certview v;
    char *subject = NULL;
    X509 *x = NULL;
    char serial_hex[2 * STORE_SERIAL_MAX + 1];
    char serial_text[3 * STORE_SERIAL_MAX + 1];
    int64_t nb = row->cert.not_before, na = row->cert.not_after;

    if (is == NULL || !is->published)
        return 0;
    if (row->der != NULL) {
        const unsigned char *p = row->der;
        x = d2i_X509(NULL, &p, (long)row->der_len);
        if (x != NULL)
            subject = directory__name_line(X509_get_subject_name(x), dir->cfg.show_email);
        directory__err_clear(); /* an unreadable DER shows the recorded subject */
    }
    view_init(dir, &job->ri, &v);
    view_status(dir, &v, &row->cert, 1, nb, na);
    util_hex(row->cert.serial, row->cert.serial_len, serial_hex);
    directory__serial_colons(row->cert.serial, row->cert.serial_len, serial_text);
    if (job->ri.json) {
        directory__put(b, sc->rows ? ",{\"issuer\":" : "{\"issuer\":");
        directory__put_jsons(b, is->name);
        directory__putf(b, ",\"serial\":\"%s\",\"subject\":", serial_hex);
        directory__put_jsons(b, subject != NULL ? subject : row->subject);
        directory__put(b, ",\"not_before\":");
        directory__put_time_json(b, nb);
        directory__put(b, ",\"not_after\":");
        directory__put_time_json(b, na);
        directory__put(b, ",\"status\":");
        directory__status_json(b, &v);
        directory__put(b, ",\"url\":\"" PREFIX "/cert/");
        directory__put_url(b, is->name, strlen(is->name));
        directory__putf(b, "/%s\"}", serial_hex);
    } else {
        directory__put(b, "<tr><td><a href=\"" PREFIX "/cert/");
        directory__put_htmls(b, is->name);
        directory__putf(b, "/%s?%s\"><bdi>", serial_hex, job->ri.lang_query);
        if (subject != NULL || row->subject != NULL)
            directory__put_htmls(b, subject != NULL ? subject : row->subject);
        else
            directory__put(b, directory__t(job->ri.lang, M_NO_SUBJECT));
        directory__put(b, "</bdi></a></td><td>");
        directory__put_htmls(b, is->name);
        directory__putf(b, "</td><td><code>%s</code></td><td>", serial_text);
        validity_html(b, nb, na, dir->cfg.utc_offset_minutes);
        directory__put(b, "</td><td>");
        directory__status_html(b, &v, 0);
        directory__put(b, "</td></tr>");
    }
    sc->rows++;
    sc->last_cursor = row->cursor;
    free(subject);
    X509_free(x);
    return 0;
}

static int run_search(struct dir_job *job, struct store *store, int kind, unsigned fields,
                      const unsigned char *key, size_t key_len, struct search_ctx *sc)
{
    struct directory *dir = job->dir;
    struct store_search q;
    int64_t one;
    memset(&q, 0, sizeof(q));
    q.kind = kind;
    q.fields = fields;
    q.text = job->q;
    q.key = key;
    q.key_len = key_len;
    if (job->issuer >= 0) {
        one = dir->issuers[job->issuer].id;
        q.issuer_ids = &one;
        q.n_issuer_ids = 1;
    } else {
        q.issuer_ids = dir->published_ids;
        q.n_issuer_ids = dir->n_published;
    }
    q.before = job->before;
    q.limit = dir->cfg.page_size;
    return store_cert_search_blocking(store, &q, search_row, sc);
}

static unsigned name_fields(unsigned cfg_fields)
{
    unsigned f = 0;
    if (cfg_fields & DIRECTORY_FIELD_CN)
        f |= STORE_FIELD_CN;
    if (cfg_fields & DIRECTORY_FIELD_O)
        f |= STORE_FIELD_O;
    if (cfg_fields & DIRECTORY_FIELD_OU)
        f |= STORE_FIELD_OU;
    if (cfg_fields & DIRECTORY_FIELD_EMAIL)
        f |= STORE_FIELD_EMAIL;
    return f;
}

static const char *field_value(int field)
{
    static const char *const values[] = {"auto", "name",  "cn",     "o",
                                         "ou",   "email", "serial", "fingerprint"};
    return field >= 0 && field <= F_FP ? values[field] : "auto";
}

/* One e-mail address and nothing else: "local@domain", no spaces. */
static int whole_address(const char *q)
{
    const char *at = strchr(q, '@');
    return at != NULL && at != q && at[1] != '\0' && strchr(at + 1, '@') == NULL &&
           strpbrk(q, " \t") == NULL;
}

static void search_work(struct dir_job *job, struct store *store)
{
    struct directory *dir = job->dir;
    struct directory__buf *b = &job->out;
    unsigned cfgf = dir->cfg.search_fields;
    unsigned all_names = name_fields(cfgf);
    unsigned char key[64];
    size_t key_len = 0;
    int digits = -1;
    struct search_ctx sc;
    int rc = 0, lang = job->ri.lang;
    int field = job->field;
    int explicit_ok = 1;
    size_t mark;

    memset(&sc, 0, sizeof(sc));
    sc.job = job;
    if (job->q[0] != '\0')
        digits = parse_hex(job->q, key, sizeof(key), &key_len);
    /* Refused fields first, so the page can say so. */
    switch (field) {
    case F_CN: explicit_ok = (cfgf & DIRECTORY_FIELD_CN) != 0; break;
    case F_O: explicit_ok = (cfgf & DIRECTORY_FIELD_O) != 0; break;
    case F_OU: explicit_ok = (cfgf & DIRECTORY_FIELD_OU) != 0; break;
    case F_EMAIL: explicit_ok = (cfgf & DIRECTORY_FIELD_EMAIL) != 0; break;
    case F_SERIAL: explicit_ok = (cfgf & DIRECTORY_FIELD_SERIAL) != 0; break;
    case F_FP: explicit_ok = (cfgf & DIRECTORY_FIELD_FINGERPRINT) != 0; break;
    case F_NAME: explicit_ok = (all_names & ~STORE_FIELD_EMAIL) != 0; break;
    default: break;
    }
    if (job->ri.json) {
        directory__put(b, "{\"query\":");
        directory__put_jsons(b, job->q);
        directory__putf(b, ",\"field\":\"%s\",\"results\":[", field_value(field));
    } else {
        page_start(b, &job->ri, directory__t(lang, M_SEARCH_TITLE));
        directory__putf(b, "<h1>%s</h1>", directory__t(lang, M_SEARCH_TITLE));
        search_form(dir, b, &job->ri, job->q, field_value(field),
                    job->issuer >= 0 ? dir->issuers[job->issuer].name : "");
        if (job->q[0] == '\0') {
            page_end(b, &job->ri);
            job->status = 200;
            return;
        }
        directory__putf(b,
                        "<h2 id=\"results\">%s</h2><table class=\"results\"><thead><tr>"
                        "<th scope=\"col\">%s</th><th scope=\"col\">%s</th><th scope=\"col\">%s"
                        "</th><th scope=\"col\">%s</th><th scope=\"col\">%s</th></tr></thead>"
                        "<tbody>",
                        directory__t(lang, M_RESULTS), directory__t(lang, M_COL_SUBJECT),
                        directory__t(lang, M_COL_ISSUER), directory__t(lang, M_COL_SERIAL),
                        directory__t(lang, M_COL_VALIDITY), directory__t(lang, M_COL_STATUS));
    }
    mark = b->len;
    if (!explicit_ok) {
        rc = UTIL_EPERM;
    } else if (job->q[0] == '\0') {
        rc = 0;
    } else if (field == F_SERIAL) {
        rc = digits > 0 ? run_search(job, store, STORE_SEARCH_SERIAL, 0, key, key_len, &sc)
                        : UTIL_EINVAL;
    } else if (field == F_FP) {
        rc = digits == 64   ? run_search(job, store, STORE_SEARCH_SHA256, 0, key, 32, &sc)
             : digits == 40 ? run_search(job, store, STORE_SEARCH_SHA1, 0, key, 20, &sc)
                            : UTIL_EINVAL;
    } else if (field == F_EMAIL && whole_address(job->q)) {
        rc = run_search(job, store, STORE_SEARCH_EMAIL, 0, NULL, 0, &sc);
        if (rc >= 0 && sc.rows == 0)
            rc = run_search(job, store, STORE_SEARCH_NAME, STORE_FIELD_EMAIL, NULL, 0, &sc);
    } else if (field != F_AUTO) {
        unsigned f = field == F_NAME ? all_names & ~STORE_FIELD_EMAIL
                     : field == F_CN ? STORE_FIELD_CN
                     : field == F_O  ? STORE_FIELD_O
                     : field == F_OU ? STORE_FIELD_OU
                                     : STORE_FIELD_EMAIL;
        rc = run_search(job, store, STORE_SEARCH_NAME, f, NULL, 0, &sc);
    } else {
        /* Automatic: a fingerprint or a serial when the text is hex, then names. */
        if (digits == 64 && (cfgf & DIRECTORY_FIELD_FINGERPRINT))
            rc = run_search(job, store, STORE_SEARCH_SHA256, 0, key, 32, &sc);
        if (rc >= 0 && sc.rows == 0 && digits == 40 && (cfgf & DIRECTORY_FIELD_FINGERPRINT))
            rc = run_search(job, store, STORE_SEARCH_SHA1, 0, key, 20, &sc);
        if (rc >= 0 && sc.rows == 0 && digits > 0 && (size_t)digits <= 2 * STORE_SERIAL_MAX &&
            (cfgf & DIRECTORY_FIELD_SERIAL))
            rc = run_search(job, store, STORE_SEARCH_SERIAL, 0, key, key_len, &sc);
        if (rc >= 0 && sc.rows == 0 && (cfgf & DIRECTORY_FIELD_EMAIL) && whole_address(job->q))
            rc = run_search(job, store, STORE_SEARCH_EMAIL, 0, NULL, 0, &sc);
        if (rc >= 0 && sc.rows == 0 && all_names != 0) {
            unsigned f = strchr(job->q, '@') != NULL && (all_names & STORE_FIELD_EMAIL)
                             ? STORE_FIELD_EMAIL
                             : all_names;
            rc = run_search(job, store, STORE_SEARCH_NAME, f, NULL, 0, &sc);
            if (rc == UTIL_EINVAL && sc.rows == 0 && digits > 0)
                rc = 0; /* a hex text without words: simply nothing found */
        }
    }
    if (rc < 0 && rc != UTIL_EINVAL && rc != UTIL_EPERM) {
        b->len = mark; /* drop partial rows */
        job->status = 503;
        directory__buf_cleanup(b);
        directory__buf_init(b, DIRECTORY__PAGE_MAX);
        message_page(b, &job->ri, 503, M_ERROR);
        atomic_fetch_add(&dir->errors, 1);
        return;
    }
    job->status = rc == UTIL_EINVAL || rc == UTIL_EPERM ? 400 : 200;
    if (job->ri.json) {
        directory__put(b, "]");
        if (rc == UTIL_EINVAL || rc == UTIL_EPERM) {
            directory__put(b, ",\"error\":");
            directory__put_jsons(b,
                                 directory__t(lang, rc == UTIL_EPERM ? M_FIELD_OFF : M_BAD_QUERY));
        }
        if (sc.rows == dir->cfg.page_size && sc.last_cursor > 0)
            directory__putf(b, ",\"next_before\":%lld", (long long)sc.last_cursor);
        directory__put(b, "}\n");
        return;
    }
    directory__put(b, "</tbody></table>");
    if (rc == UTIL_EINVAL || rc == UTIL_EPERM)
        directory__putf(b, "<p role=\"alert\">%s</p>",
                        directory__t(lang, rc == UTIL_EPERM ? M_FIELD_OFF : M_BAD_QUERY));
    else if (sc.rows == 0)
        directory__putf(b, "<p role=\"status\">%s</p>", directory__t(lang, M_NO_RESULTS));
    if (sc.rows == dir->cfg.page_size && sc.last_cursor > 0) {
        directory__put(b, "<p><a rel=\"next\" href=\"" PREFIX "/search?q=");
        directory__put_url(b, job->q, strlen(job->q));
        directory__putf(b, "&amp;field=%s&amp;issuer=", field_value(field));
        if (job->issuer >= 0)
            directory__put_url(b, dir->issuers[job->issuer].name,
                               strlen(dir->issuers[job->issuer].name));
        directory__putf(b, "&amp;before=%lld&amp;%s\">%s</a></p>", (long long)sc.last_cursor,
                        job->ri.lang_query, directory__t(lang, M_NEXT_PAGE));
    }
    page_end(b, &job->ri);
}

/* Renders the page of one certificate (x may be NULL when only its serial is known). */
static void cert_page(struct dir_job *job, X509 *x, const struct dir_issuer *is,
                      const struct store_cert *row, int have_row, int verdict)
{
    struct directory *dir = job->dir;
    struct directory__buf *b = &job->out;
    struct directory__certview v;
    int lang = job->ri.lang;
    int64_t nb = have_row ? row->not_before : 0, na = have_row ? row->not_after : 0;
    char *cn = NULL;

    if (x != NULL && (util_asn1_time_unix(X509_get0_notBefore(x), &nb) != UTIL_OK ||
                      util_asn1_time_unix(X509_get0_notAfter(x), &na) != UTIL_OK))
        directory__err_clear(); /* dates from the store row */
    view_init(dir, &job->ri, &v);
    v.issuer_name = is != NULL ? is->name : NULL;
    view_status(dir, &v, row, have_row, nb, na);
    if (job->ri.json) {
        directory__put(b, "{");
        if (verdict != 0) {
            directory__putf(b,
                            "\"check\":{\"ours\":%s,\"signature_valid\":%s,\"registered\":%s,"
                            "\"message\":",
                            is != NULL ? "true" : "false",
                            is != NULL && verdict != M_CHECK_BAD_SIG ? "true" : "false",
                            have_row ? "true" : "false");
            directory__put_jsons(b, directory__t(lang, verdict));
            directory__put(b, "},");
        }
        directory__put(b, "\"certificate\":");
        if (x != NULL)
            directory__cert_json(b, x, &v);
        else
            directory__put(b, "null");
        directory__put(b, ",\"status\":");
        if (is != NULL)
            directory__status_json(b, &v);
        else
            directory__put(b, "null");
        directory__put(b, "}\n");
        return;
    }
    if (x != NULL)
        cn = directory__name_cn(X509_get_subject_name(x));
    page_start(b, &job->ri,
               verdict != 0 ? directory__t(lang, M_CHECK_TITLE) : directory__t(lang, M_CERT_TITLE));
    if (verdict != 0) {
        int ok = is != NULL && verdict != M_CHECK_BAD_SIG && verdict != M_CHECK_NOT_OURS;
        directory__putf(b, "<h1>%s</h1><div class=\"verdict %s\" role=\"status\"><p><strong>",
                        directory__t(lang, M_CHECK_TITLE), ok ? "ok" : "no");
        if (ok) {
            directory__putf(b, "%s <bdi>", directory__t(lang, M_CHECK_OURS));
            directory__put_htmls(b, is->name);
            directory__putf(b, "</bdi></strong></p><p>%s</p>", directory__t(lang, M_CHECK_SIG_OK));
            if (verdict != M_CHECK_OURS)
                directory__putf(b, "<p>%s</p>", directory__t(lang, verdict));
        } else {
            directory__putf(b, "%s</strong></p>", directory__t(lang, verdict));
        }
        directory__put(b, "</div>");
        if (x != NULL) {
            directory__putf(b, "<h2>%s: <bdi>", directory__t(lang, M_CERT_TITLE));
            directory__put_htmls(b, cn);
            directory__put(b, "</bdi></h2>");
        }
    } else {
        directory__putf(b, "<h1>%s: <bdi>", directory__t(lang, M_CERT_TITLE));
        if (cn != NULL)
            directory__put_htmls(b, cn);
        else
            directory__put(b, directory__t(lang, M_NO_SUBJECT));
        directory__put(b, "</bdi></h1>");
    }
    if (x != NULL) {
        if (is == NULL) {
            v.state = DIRECTORY__UNKNOWN;
            v.status_source = "none";
        }
        directory__cert_html(b, x, &v);
    } else {
        char serial_text[3 * STORE_SERIAL_MAX + 1];
        directory__serial_colons(row->serial, row->serial_len, serial_text);
        directory__putf(b, "<section class=\"status\"><h2>%s</h2><p>",
                        directory__t(lang, M_STATUS_NOW));
        directory__status_html(b, &v, 1);
        directory__putf(b, "</p></section><p>%s: <code>%s</code></p>", directory__t(lang, M_SERIAL),
                        serial_text);
    }
    if (verdict != 0)
        check_form(b, &job->ri);
    page_end(b, &job->ri);
    free(cn);
}

static void cert_work(struct dir_job *job, struct store *store)
{
    struct directory *dir = job->dir;
    const struct dir_issuer *is = &dir->issuers[job->issuer];
    struct store_cert row;
    unsigned char *der = NULL;
    size_t der_len = 0;
    X509 *x = NULL;
    int rc;

    rc = store_cert_get_blocking(store, is->id, job->serial, job->serial_len, &row);
    if (rc == UTIL_ENOTFOUND || rc == UTIL_EINVAL) {
        job->status = 404;
        message_page(&job->out, &job->ri, 404, M_NOT_FOUND);
        atomic_fetch_add(&dir->not_found, 1);
        return;
    }
    if (rc == UTIL_OK) {
        rc = store_cert_der_blocking(store, is->id, job->serial, job->serial_len, &der, &der_len);
        if (rc == UTIL_ENOTFOUND)
            rc = UTIL_OK; /* registered without its DER (index.txt import): serial and status */
    }
    if (rc != UTIL_OK) {
        job->status = 503;
        message_page(&job->out, &job->ri, 503, M_ERROR);
        atomic_fetch_add(&dir->errors, 1);
        return;
    }
    if (der != NULL) {
        const unsigned char *p = der;
        x = d2i_X509(NULL, &p, (long)der_len);
        directory__err_clear(); /* unreadable: shown like a certificate without DER */
    }
    if (job->download != 0) {
        if (der == NULL) {
            job->status = 404;
            message_page(&job->out, &job->ri, 404, M_NOT_FOUND);
        } else if (job->download == 2) {
            job->status = 200;
            job->content_type = "application/pkix-cert";
            directory__putn(&job->out, (const char *)der, der_len);
        } else {
            BIO *bio = BIO_new(BIO_s_mem());
            char *mem = NULL;
            long n = 0;
            if (bio != NULL && x != NULL && PEM_write_bio_X509(bio, x) == 1)
                n = BIO_get_mem_data(bio, &mem);
            directory__err_clear(); /* n stays 0 */
            job->status = n > 0 ? 200 : 500;
            job->content_type = "application/x-pem-file";
            if (n > 0)
                directory__putn(&job->out, mem, (size_t)n);
            BIO_free(bio);
        }
        free(der);
        X509_free(x);
        return;
    }
    job->status = 200;
    cert_page(job, x, is, &row, 1, 0);
    free(der);
    X509_free(x);
    atomic_fetch_add(&dir->pages, 1);
}

static X509 *parse_upload(const unsigned char *data, size_t len)
{
    X509 *x = NULL;
    directory__err_clear();
    if (memmem(data, len, "-----BEGIN", 10) != NULL) {
        BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (bio != NULL)
            x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        BIO_free(bio);
    } else {
        const unsigned char *p = data;
        x = d2i_X509(NULL, &p, (long)len);
        if (x != NULL && p != data + len) {
            X509_free(x);
            x = NULL;
        }
    }
    directory__err_clear(); /* not a certificate: said on the page */
    return x;
}

static void check_work(struct dir_job *job, struct store *store)
{
    struct directory *dir = job->dir;
    const struct dir_issuer *is = NULL;
    struct store_cert row;
    unsigned char serial[STORE_SERIAL_MAX];
    size_t serial_len = 0;
    int have_row = 0, verdict = M_CHECK_NOT_OURS, named = 0, verified = 0;
    X509 *x = NULL;

    atomic_fetch_add(&dir->checks, 1);
    memset(&row, 0, sizeof(row));
    if (job->upload_error != 0 || job->upload_len == 0) {
        job->status = job->upload_error == M_CHECK_TOO_BIG ? 413 : 400;
        message_page(&job->out, &job->ri, job->status,
                     job->upload_error != 0 ? job->upload_error : M_CHECK_EMPTY);
        return;
    }
    x = parse_upload(job->upload, job->upload_len);
    if (x == NULL ||
        store_serial_from_asn1(X509_get0_serialNumber(x), serial, &serial_len) != UTIL_OK) {
        job->status = 400;
        message_page(&job->out, &job->ri, 400, M_CHECK_UNREADABLE);
        X509_free(x);
        return;
    }
    /* Ours: a published issuer whose name the certificate names as its issuer and whose key
     * verifies its signature. Naming one of ours without its signature is a forgery. */
    for (int i = 0; i < dir->n_issuers && is == NULL; i++) {
        const struct dir_issuer *c = &dir->issuers[i];
        if (!c->published ||
            X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(c->cert)) != 0)
            continue;
        named = 1;
        directory__err_clear();
        verified = X509_verify(x, X509_get0_pubkey(c->cert));
        if (verified != 1) {
            /* Before saying "forged": a verification that failed for want of memory (OpenSSL
             * does not always say so) succeeds the second time; one that could not run at all
             * (< 0) is no answer (503, directory__oom_note). */
            directory__err_clear();
            verified = X509_verify(x, X509_get0_pubkey(c->cert));
        }
        if (verified < 0)
            directory__oom_note();
        if (verified == 1)
            is = c;
        directory__err_clear(); /* a failed verification is the answer, not an error */
    }
    if (is != NULL) {
        int rc = store_cert_get_blocking(store, is->id, serial, serial_len, &row);
        if (rc == UTIL_OK) {
            unsigned char *der = NULL, *mine = NULL;
            size_t der_len = 0;
            int mine_len;
            have_row = 1;
            verdict = M_CHECK_OURS;
            rc = store_cert_der_blocking(store, is->id, serial, serial_len, &der, &der_len);
            if (rc == UTIL_OK) {
                mine_len = i2d_X509(x, &mine);
                if (mine_len <= 0)
                    directory__err_clear(); /* out of memory: the worker answers 503 */
                if (mine_len <= 0 || (size_t)mine_len != der_len || memcmp(mine, der, der_len) != 0)
                    verdict = M_CHECK_DIFFERENT;
                OPENSSL_free(mine);
                free(der);
            }
            if (rc == UTIL_ENOTFOUND)
                rc = UTIL_OK; /* registered without its DER: nothing to compare */
        }
        if (rc == UTIL_OK) {
            /* the verdict above */
        } else if (rc == UTIL_ENOTFOUND) {
            verdict = M_CHECK_NOT_REGISTERED;
        } else {
            job->status = 503;
            message_page(&job->out, &job->ri, 503, M_ERROR);
            X509_free(x);
            atomic_fetch_add(&dir->errors, 1);
            return;
        }
    } else if (named) {
        verdict = M_CHECK_BAD_SIG;
    }
    if (have_row == 0) {
        row.issuer_id = is != NULL ? is->id : 0;
        memcpy(row.serial, serial, serial_len);
        row.serial_len = serial_len;
    }
    job->status = 200;
    cert_page(job, x, is, &row, have_row, verdict);
    X509_free(x);
}

static int job_work(void *thread_state, void *arg)
{
    struct dir_job *job = arg;
    struct store *store = thread_state;
    job->status = 500;
    job->content_type = job->ri.json ? "application/json" : "text/html; charset=utf-8";
    directory__oom_reset();
    switch (job->kind) {
    case JOB_SEARCH: search_work(job, store); break;
    case JOB_CERT: cert_work(job, store); break;
    case JOB_CHECK: check_work(job, store); break;
    default: break;
    }
    directory__err_clear(); /* what the job left queued counts too */
    if (directory__oom_seen() && job->status < 500) {
        /* The page may say less than the truth (see directory_int.h): say nothing instead. */
        directory__buf_cleanup(&job->out);
        directory__buf_init(&job->out, DIRECTORY__PAGE_MAX);
        job->download = 0;
        job->status = 503;
        job->content_type = job->ri.json ? "application/json" : "text/html; charset=utf-8";
        message_page(&job->out, &job->ri, 503, M_ERROR);
        atomic_fetch_add(&job->dir->errors, 1);
    }
    return UTIL_OK;
}

static void job_free(struct dir_job *job)
{
    directory__buf_cleanup(&job->out);
    free(job->upload);
    free(job);
}

/* On the loop that submitted the job; with UTIL_ECLOSED off it (util_pool_port_close): the loop and
 * the request are gone, so only the job is freed. */
static void job_done(void *arg, int result)
{
    struct dir_job *job = arg;
    if (result == UTIL_ECLOSED) {
        /* nobody left to answer */
    } else if (result != UTIL_OK) {
        respond_message(job->dir, job->req, &job->ri, 503, M_BUSY);
    } else if (job->download != 0 && job->status == 200) {
        struct http_response resp;
        memset(&resp, 0, sizeof(resp));
        resp.status = 200;
        resp.content_type = job->content_type;
        resp.body_bytes = job->out.data;
        resp.body_len = job->out.len;
        resp.headers =
            "Cache-Control: max-age=86400, public\r\nX-Content-Type-Options: nosniff\r\n";
        http_request_respond(job->req, &resp);
    } else {
        respond_buf(job->req, job->status, job->content_type, &job->out, job->ri.lang);
    }
    job_free(job);
}

static void submit(struct directory *dir, struct http_request *req, struct dir_job *job)
{
    struct util_pool_port *port = NULL;
    int idx = http_request_loop_index(req);
    int rc;
    if (idx >= 0 && idx < DIR_MAX_LOOPS) {
        port = dir->ports[idx];
        if (port == NULL && util_pool_port_new(dir->pool, http_request_loop(req), &port) == UTIL_OK)
            dir->ports[idx] = port;
    }
    rc = port != NULL ? util_pool_submit(dir->pool, port, job_work, job_done, job) : UTIL_EBUSY;
    if (rc != UTIL_OK) {
        atomic_fetch_add(&dir->rejected_busy, 1);
        respond_message(dir, req, &job->ri, 503, M_BUSY);
        job_free(job);
    }
}

static struct dir_job *job_new(struct directory *dir, struct http_request *req, int kind,
                               const struct req_info *ri)
{
    struct dir_job *job = calloc(1, sizeof(*job));
    if (job == NULL) {
        http_request_respond_text(req, 503, "text/plain", "out of memory\n");
        return NULL;
    }
    job->dir = dir;
    job->req = req;
    job->kind = kind;
    job->ri = *ri;
    job->issuer = -1;
    directory__buf_init(&job->out, DIRECTORY__PAGE_MAX);
    return job;
}

/* ---- routing -------------------------------------------------------------------------------- */

static int parse_field(const char *text)
{
    static const char *const names[] = {"auto", "name",  "cn",     "o",
                                        "ou",   "email", "serial", "fingerprint"};
    for (int i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++)
        if (strcmp(text, names[i]) == 0)
            return i;
    return text[0] == '\0' ? F_AUTO : -1;
}

static void handle(void *ctx, struct http_request *req)
{
    struct directory *dir = ctx;
    size_t len = 0;
    const char *target = http_request_target(req, &len);
    const char *qmark = memchr(target, '?', len);
    size_t path_len = qmark != NULL ? (size_t)(qmark - target) : len;
    const char *method = http_request_method(req);
    struct params p;
    struct req_info ri;
    const char *sub;
    size_t sub_len;

    memset(&p, 0, sizeof(p));
    memset(&ri, 0, sizeof(ri));
    p.ri = &ri;
    if (qmark != NULL)
        query_each(qmark + 1, len - path_len - 1, param_fn, &p);
    {
        size_t al_len = 0;
        const char *al = http_request_header(req, "Accept-Language", &al_len);
        ri.lang = pick_lang(dir->cfg.default_lang, al, al_len, p.lang);
    }
    ri.json = wants_json(req, p.format);
    (void)snprintf(ri.lang_query, sizeof(ri.lang_query), "lang=%s",
                   ri.lang == DIRECTORY__EN ? "en" : "vi");
    if (path_len >= sizeof(ri.path)) {
        respond_message(dir, req, &ri, 404, M_NOT_FOUND);
        return;
    }
    memcpy(ri.path, target, path_len);
    ri.path[path_len] = '\0';
    if (path_len < sizeof(PREFIX) - 1 || memcmp(target, PREFIX, sizeof(PREFIX) - 1) != 0) {
        respond_message(dir, req, &ri, 404, M_NOT_FOUND);
        return;
    }
    sub = target + sizeof(PREFIX) - 1;
    sub_len = path_len - (sizeof(PREFIX) - 1);
    if (p.bad) {
        respond_message(dir, req, &ri, 400, M_BAD_QUERY);
        return;
    }
    if (sub_len == 0 || (sub_len == 1 && sub[0] == '/')) {
        home_page(dir, req, &ri);
        return;
    }
    if (sub_len == 10 && memcmp(sub, "/style.css", 10) == 0) {
        struct http_response resp;
        memset(&resp, 0, sizeof(resp));
        resp.status = 200;
        resp.content_type = "text/css; charset=utf-8";
        resp.body_bytes = stylesheet;
        resp.body_len = sizeof(stylesheet) - 1;
        resp.headers = "Cache-Control: max-age=3600, public\r\nX-Content-Type-Options: nosniff\r\n";
        http_request_respond(req, &resp);
        return;
    }
    if (sub_len == 7 && memcmp(sub, "/search", 7) == 0) {
        struct dir_job *job = NULL;
        int field = parse_field(p.field);
        char *end = NULL;
        int64_t before = 0;
        int issuer = -1;
        if (p.issuer[0] != '\0') {
            issuer = issuer_by_name(dir, p.issuer, strlen(p.issuer));
            if (issuer < 0) {
                respond_message(dir, req, &ri, 404, M_NOT_FOUND);
                return;
            }
        }
        if (p.before[0] != '\0') {
            before = strtoll(p.before, &end, 10);
            if (*end != '\0' || before < 0)
                field = -1;
        }
        if (field < 0) {
            respond_message(dir, req, &ri, 400, M_BAD_QUERY);
            return;
        }
        if (p.q[0] != '\0' && !rate_take(dir, req)) {
            atomic_fetch_add(&dir->rate_limited, 1);
            respond_message(dir, req, &ri, 429, M_TOO_MANY);
            return;
        }
        job = job_new(dir, req, JOB_SEARCH, &ri);
        if (job == NULL)
            return;
        (void)snprintf(job->q, sizeof(job->q), "%s", p.q); /* same size */
        job->field = field;
        job->issuer = issuer;
        job->before = before;
        atomic_fetch_add(&dir->searches, 1);
        submit(dir, req, job);
        return;
    }
    if (sub_len > 6 && memcmp(sub, "/cert/", 6) == 0) {
        const char *name = sub + 6;
        size_t rest = sub_len - 6;
        const char *slash = memchr(name, '/', rest);
        struct dir_job *job = NULL;
        const char *hex;
        size_t hex_len;
        char hexbuf[2 * STORE_SERIAL_MAX + 8];
        int issuer = slash != NULL ? issuer_by_name(dir, name, (size_t)(slash - name)) : -1;
        int download = 0;
        if (issuer < 0) {
            respond_message(dir, req, &ri, 404, M_NOT_FOUND);
            return;
        }
        hex = slash + 1;
        hex_len = rest - (size_t)(hex - name);
        if (hex_len > 4 && memcmp(hex + hex_len - 4, ".pem", 4) == 0) {
            download = 1;
            hex_len -= 4;
        } else if (hex_len > 4 && memcmp(hex + hex_len - 4, ".der", 4) == 0) {
            download = 2;
            hex_len -= 4;
        }
        if (hex_len == 0 || hex_len >= sizeof(hexbuf)) {
            respond_message(dir, req, &ri, 404, M_NOT_FOUND);
            return;
        }
        memcpy(hexbuf, hex, hex_len);
        hexbuf[hex_len] = '\0';
        if (!rate_take(dir, req)) {
            atomic_fetch_add(&dir->rate_limited, 1);
            respond_message(dir, req, &ri, 429, M_TOO_MANY);
            return;
        }
        job = job_new(dir, req, JOB_CERT, &ri);
        if (job == NULL)
            return;
        if (parse_hex(hexbuf, job->serial, sizeof(job->serial), &job->serial_len) <= 0) {
            job_free(job);
            respond_message(dir, req, &ri, 404, M_NOT_FOUND);
            return;
        }
        /* The store keys serials as DER content octets: minimal, with a 0x00 before a high bit. */
        {
            size_t skip = 0;
            unsigned char tmp[STORE_SERIAL_MAX];
            while (skip + 1 < job->serial_len && job->serial[skip] == 0)
                skip++;
            memcpy(tmp, job->serial + skip, job->serial_len - skip);
            job->serial_len -= skip;
            if ((tmp[0] & 0x80) && job->serial_len < STORE_SERIAL_MAX) {
                job->serial[0] = 0;
                memcpy(job->serial + 1, tmp, job->serial_len);
                job->serial_len++;
            } else {
                memcpy(job->serial, tmp, job->serial_len);
            }
        }
        job->issuer = issuer;
        job->download = download;
        submit(dir, req, job);
        return;
    }
    if (sub_len > 8 && memcmp(sub, "/issuer/", 8) == 0) {
        int issuer = issuer_by_name(dir, sub + 8, sub_len - 8);
        if (issuer < 0) {
            respond_message(dir, req, &ri, 404, M_NOT_FOUND);
            return;
        }
        issuer_page(dir, req, &ri, issuer);
        return;
    }
    if (sub_len == 6 && memcmp(sub, "/check", 6) == 0) {
        struct dir_job *job = NULL;
        const unsigned char *body = NULL, *cert = NULL;
        size_t body_len = 0, cert_len = 0;
        char *decoded = NULL;
        if (strcmp(method, "POST") != 0) {
            check_page(req, &ri);
            return;
        }
        if (!rate_take(dir, req)) {
            atomic_fetch_add(&dir->rate_limited, 1);
            respond_message(dir, req, &ri, 429, M_TOO_MANY);
            return;
        }
        job = job_new(dir, req, JOB_CHECK, &ri);
        if (job == NULL)
            return;
        size_t ct_len = 0;
        const char *ct = http_request_header(req, "Content-Type", &ct_len);
        body = http_request_body(req, &body_len);
        if (body == NULL || body_len == 0 ||
            upload_from_body(ct, ct_len, body, body_len, &cert, &cert_len, &decoded) != UTIL_OK ||
            cert_len == 0) {
            job->upload_error = M_CHECK_EMPTY;
        } else if (cert_len > dir->cfg.upload_max) {
            job->upload_error = M_CHECK_TOO_BIG;
        } else {
            /* A copy: the worker reads it; nothing of it is kept after the answer. */
            job->upload = malloc(cert_len);
            if (job->upload == NULL) {
                free(decoded);
                job_free(job);
                http_request_respond_text(req, 503, "text/plain", "out of memory\n");
                return;
            }
            memcpy(job->upload, cert, cert_len);
            job->upload_len = cert_len;
        }
        free(decoded);
        submit(dir, req, job);
        return;
    }
    respond_message(dir, req, &ri, 404, M_NOT_FOUND);
}

/* ---- life cycle ----------------------------------------------------------------------------- */

static void loop_init(void *ctx, uv_loop_t *loop, int index)
{
    struct directory *dir = ctx;
    struct util_pool_port *port = NULL;
    if (index < 0 || index >= DIR_MAX_LOOPS) {
        UTIL_WARN(DIRECTORY_MOD, "loop %d: beyond %d loops, directory searches answer 503", index,
                  DIR_MAX_LOOPS);
        return;
    }
    if (util_pool_port_new(dir->pool, loop, &port) != UTIL_OK) {
        UTIL_ERROR(DIRECTORY_MOD, "loop %d: no directory port (searches answer 503)", index);
        return;
    }
    dir->ports[index] = port;
}

static void loop_fini(void *ctx, uv_loop_t *loop, int index)
{
    struct directory *dir = ctx;
    if (index < 0 || index >= DIR_MAX_LOOPS || dir->ports[index] == NULL)
        return;
    util_pool_port_close(dir->ports[index]);
    dir->ports[index] = NULL;
}

int directory_new(const struct directory_config *cfg, const struct directory_params *params,
                  struct directory **out)
{
    struct directory *dir = NULL;
    int rc = UTIL_OK;

    *out = NULL;
    if (params->n_issuers > DIRECTORY_MAX_ISSUERS ||
        params->n_tsa_units > DIRECTORY_MAX_TSA_UNITS || params->store_path == NULL ||
        params->public_url == NULL || params->ocsp_url == NULL) {
        UTIL_ERROR(DIRECTORY_MOD, "too many issuers or TSA units, or no store path");
        return UTIL_ECONFIG;
    }
    dir = calloc(1, sizeof(*dir));
    if (dir == NULL)
        return UTIL_ENOMEM;
    dir->cfg = *cfg;
    dir->crl_deltas = params->crl_deltas;
    dir->hooks = params->hooks;
    pthread_mutex_init(&dir->rate_mutex, NULL);
    dir->store_path = strdup(params->store_path);
    dir->public_url = strdup(params->public_url);
    dir->ocsp_url = strdup(params->ocsp_url);
    dir->rate = calloc(RATE_SLOTS, sizeof(*dir->rate));
    if (dir->store_path == NULL || dir->public_url == NULL || dir->ocsp_url == NULL ||
        dir->rate == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    for (int i = 0; i < params->n_issuers; i++) {
        struct dir_issuer *is = &dir->issuers[i];
        (void)snprintf(is->name, sizeof(is->name), "%s", params->issuers[i].name);
        is->id = params->issuers[i].store_issuer_id;
        is->cert = params->issuers[i].cert;
        if (X509_up_ref(is->cert) != 1) {
            is->cert = NULL;
            rc = UTIL_ECRYPTO;
            goto out;
        }
        dir->n_issuers++;
        is->published = cfg->issuers[0] == '\0';
    }
    if (cfg->issuers[0] != '\0') {
        char list[sizeof(cfg->issuers)];
        char *save = NULL;
        (void)snprintf(list, sizeof(list), "%s", cfg->issuers);
        for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            int found = 0;
            for (int i = 0; i < dir->n_issuers; i++)
                if (strcmp(dir->issuers[i].name, tok) == 0) {
                    dir->issuers[i].published = 1;
                    found = 1;
                }
            if (!found) {
                UTIL_ERROR(DIRECTORY_MOD, "[directory] issuers: no [issuer.%s] is configured", tok);
                rc = UTIL_ECONFIG;
                goto out;
            }
        }
    }
    for (int i = 0; i < dir->n_issuers; i++)
        if (dir->issuers[i].published)
            dir->published_ids[dir->n_published++] = dir->issuers[i].id;
    for (int i = 0; i < params->n_tsa_units; i++) {
        const struct directory_tsa_unit *u = &params->tsa_units[i];
        struct dir_tsa *d = &dir->units[i];
        (void)snprintf(d->name, sizeof(d->name), "%s", u->name);
        d->url = strdup(u->url);
        dir->n_units++;
        if (d->url == NULL) {
            rc = UTIL_ENOMEM;
            goto out;
        }
        for (int j = 0; j < u->n_policies && j < DIRECTORY_MAX_POLICIES; j++) {
            d->policies[j] = strdup(u->policies[j]);
            if (d->policies[j] == NULL) {
                rc = UTIL_ENOMEM;
                goto out;
            }
            d->n_policies++;
        }
    }
out:
    if (rc != UTIL_OK) {
        directory_free(dir);
        return rc;
    }
    *out = dir;
    return UTIL_OK;
}

int directory_register(struct directory *dir, struct http_server *srv)
{
    struct util_pool_config pc = {
        .name = "dirsearch",
        .threads = dir->cfg.threads,
        .queue_max = dir->cfg.queue_max,
        .thread_init = thread_init,
        .thread_fini = thread_fini,
        .ctx = dir,
    };
    int rc;
    if (!dir->cfg.enabled)
        return UTIL_OK;
    rc = util_pool_new(&pc, &dir->pool);
    if (rc != UTIL_OK) {
        UTIL_ERROR(DIRECTORY_MOD, "cannot start the directory's store threads: %s",
                   util_strerror(rc));
        return rc;
    }
    rc = http_server_route(srv, HTTP_PUBLIC, "GET", PREFIX, handle, dir);
    if (rc == UTIL_OK)
        rc = http_server_route(srv, HTTP_PUBLIC, "POST", PREFIX "/check", handle, dir);
    if (rc == UTIL_OK)
        rc = http_server_on_loop(srv, loop_init, loop_fini, dir);
    return rc;
}

void directory_free(struct directory *dir)
{
    if (dir == NULL)
        return;
    util_pool_free(dir->pool);
    for (int i = 0; i < dir->n_issuers; i++)
        X509_free(dir->issuers[i].cert);
    for (int i = 0; i < dir->n_units; i++) {
        free(dir->units[i].url);
        for (int j = 0; j < dir->units[i].n_policies; j++)
            free(dir->units[i].policies[j]);
    }
    free(dir->rate);
    free(dir->store_path);
    free(dir->public_url);
    free(dir->ocsp_url);
    pthread_mutex_destroy(&dir->rate_mutex);
    free(dir);
}

int directory_metrics(const struct directory *dir, char *buf, size_t len)
{
    int n;
    if (dir == NULL)
        return 0;
    n = snprintf(buf, len,
                 "# TYPE pkiva_directory_requests_total counter\n"
                 "pkiva_directory_requests_total{kind=\"page\"} %llu\n"
                 "pkiva_directory_requests_total{kind=\"search\"} %llu\n"
                 "pkiva_directory_requests_total{kind=\"check\"} %llu\n"
                 "# TYPE pkiva_directory_refused_total counter\n"
                 "pkiva_directory_refused_total{reason=\"rate_limited\"} %llu\n"
                 "pkiva_directory_refused_total{reason=\"busy\"} %llu\n"
                 "# TYPE pkiva_directory_not_found_total counter\n"
                 "pkiva_directory_not_found_total %llu\n"
                 "# TYPE pkiva_directory_errors_total counter\n"
                 "pkiva_directory_errors_total %llu\n",
                 (unsigned long long)atomic_load(&dir->pages),
                 (unsigned long long)atomic_load(&dir->searches),
                 (unsigned long long)atomic_load(&dir->checks),
                 (unsigned long long)atomic_load(&dir->rate_limited),
                 (unsigned long long)atomic_load(&dir->rejected_busy),
                 (unsigned long long)atomic_load(&dir->not_found),
                 (unsigned long long)atomic_load(&dir->errors));
    return n < 0 || (size_t)n >= len ? UTIL_EINVAL : n;
}

/* ---- fuzzing ---------------------------------------------------------------------------------- */

int directory__fuzz_one(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const char *nl1 = memchr(text, '\n', size);
    const char *nl2 = nl1 != NULL ? memchr(nl1 + 1, '\n', size - (size_t)(nl1 + 1 - text)) : NULL;
    const unsigned char *body, *cert = NULL;
    size_t body_len, cert_len = 0;
    char *decoded = NULL;
    struct params p;
    struct req_info ri;
    unsigned char key[64];
    size_t key_len = 0;
    int outcome = 0;

    if (nl1 == NULL || nl2 == NULL)
        return 0;
    memset(&p, 0, sizeof(p));
    memset(&ri, 0, sizeof(ri));
    p.ri = &ri;
    /* Line 1: Content-Type (also used as Accept-Language), line 2: the query, then the body. */
    query_each(nl1 + 1, (size_t)(nl2 - nl1 - 1), param_fn, &p);
    ri.lang = pick_lang("vi", text, (size_t)(nl1 - text), p.lang);
    (void)parse_hex(p.q, key, sizeof(key), &key_len);
    (void)parse_field(p.field);
    body = (const unsigned char *)nl2 + 1;
    body_len = size - (size_t)(nl2 + 1 - text);
    if (upload_from_body(text, (size_t)(nl1 - text), body, body_len, &cert, &cert_len, &decoded) ==
            UTIL_OK &&
        cert_len > 0) {
        X509 *x = parse_upload(cert, cert_len);
        if (x != NULL) {
            struct directory__certview v;
            struct directory__buf b;
            memset(&v, 0, sizeof(v));
            v.lang = ri.lang;
            v.show_email = key_len % 2;
            v.prefix = PREFIX;
            v.lang_query = "lang=vi";
            v.issuer_name = "fuzz";
            v.state = DIRECTORY__REVOKED;
            v.reason = (int)(key_len % 12) - 1;
            v.status_source = "store";
            directory__buf_init(&b, DIRECTORY__PAGE_MAX);
            directory__cert_html(&b, x, &v);
            directory__cert_json(&b, x, &v);
            directory__status_json(&b, &v);
            outcome = b.failed ? 2 : 1;
            directory__buf_cleanup(&b);
            X509_free(x);
        }
    }
    free(decoded);
    return outcome;
}
