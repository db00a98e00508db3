/* SPDX-License-Identifier: Apache-2.0 */
/* The public certificate directory (issue 20) as a person meets it: the real pkiva binary on a
 * fresh embedded default (SoftHSM2 token, SQLite store), pages fetched and read by Debian's
 * headless Chromium (tests/directory/browser.py): a search and its results, certificate pages for
 * good, revoked (revoked while the server runs: the page follows the OCSP index) and unknown
 * certificates, the status check with a real file chosen in the form, hostile subject names, and
 * the [directory] limits (fields, e-mail masking, published issuers, rate limit, off switch). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../reliability/rel.h"
#include "../support/support.h"

#define BROWSER "python3 " PKIVA_SOURCE_DIR "/tests/directory/browser.py"
#define MKCSR "python3 " PKIVA_SOURCE_DIR "/tests/directory/mkcsr.py"
#define PAGE_MAX (512 * 1024)

static struct rel_server srv;
static char page[PAGE_MAX];

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(directory, .init = setup, .fini = teardown, .timeout = 400);

/* The DOM of a page as Chromium built it. */
static const char *browse(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *browse(const char *fmt, ...)
{
    char path[1024], cmd[1400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), BROWSER " dump 'http://127.0.0.1:%d%s'", srv.port, path);
    cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0, "browser: %s", page);
    cr_assert(strstr(page, "</html>") != NULL, "no page from the browser for %s: %.2000s", path,
              page);
    return page;
}

/* The hex serial of a PEM certificate in the data folder (lower case, no colons). */
static void serial_of(const char *pem, char *hex, size_t len)
{
    char out[512];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "openssl x509 -in %s -noout -serial", pem), 0, "%s",
                 out);
    cr_assert(strncmp(out, "serial=", 7) == 0, "%s", out);
    snprintf(hex, len, "%s", out + 7);
    hex[strcspn(hex, "\r\n")] = '\0';
    for (char *p = hex; *p; p++)
        if (*p >= 'A' && *p <= 'F')
            *p = (char)(*p - 'A' + 'a');
}

/* A certificate for (cn, o, email) signed by the demo issuing CA's key in the HSM, written to
 * DATA/name.pem; registered with `pkiva import` when import is 1. */
static void issue(const char *name, const char *cn, const char *o, const char *email, int import)
{
    char out[4096];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), MKCSR " %s.csr '%s' '%s' %s", name, cn, o,
                        email ? email : ""),
                 0, "mkcsr: %s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "PKCS11_PROVIDER_MODULE=" TS_SOFTHSM_MODULE
                        " openssl x509 -req -in %s.csr -CA pki/issuing-ca.pem -CAkey "
                        "\"pkcs11:token=pkiva;object=issuing-ca;type=private?pin-value=$(cat "
                        "hsm/user.pin)\" -provider pkcs11 -provider default -days 30 -out %s.pem;"
                        " openssl x509 -in %s.pem -noout",
                        name, name, name),
                 0, "sign: %s", out);
    if (import)
        cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " import --data . %s.pem", name), 0,
                     "import: %s", out);
}

Test(directory, search_and_certificate_pages_in_a_browser)
{
    char good[80], revoked[80], hold[80];
    const char *dom;

    issue("vn", "Nguyễn Văn An", "Ban Cơ yếu Chính phủ", "an.nguyen@bcy.gov.vn", 1);
    serial_of("pki/demo-good.pem", good, sizeof(good));
    serial_of("pki/demo-revoked.pem", revoked, sizeof(revoked));
    serial_of("pki/demo-hold.pem", hold, sizeof(hold));
    /* This test browses faster than a person: lift the per-address rate limit. */
    rel_conf_append(&srv, "[directory]\nrate_burst = 1000\n");
    rel_start(&srv, 60);

    /* The home page: a labelled search form, the issuers, the language switch. */
    dom = browse("/directory?lang=vi");
    cr_assert(strstr(dom, "<html lang=\"vi\"") != NULL, "%.1000s", dom);
    cr_assert(strstr(dom, "<label for=\"q\">") != NULL);
    cr_assert(strstr(dom, "/directory/issuer/demo-ca") != NULL);
    cr_assert(strstr(dom, "hreflang=\"en\"") != NULL);

    /* A search by name finds the three demo subscribers with their status right now. */
    dom = browse("/directory/search?q=Demo+Subscriber&lang=en");
    cr_assert(strstr(dom, "<html lang=\"en\"") != NULL);
    cr_assert(strstr(dom, "Demo Subscriber Good") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "Demo Subscriber Revoked") != NULL);
    cr_assert(strstr(dom, "Demo Subscriber On Hold") != NULL);
    cr_assert(strstr(dom, "data-status=\"good\"") != NULL);
    cr_assert(strstr(dom, "data-status=\"revoked\"") != NULL);
    cr_assert(strstr(dom, ">On hold<") != NULL);

    /* Vietnamese without diacritics finds the Vietnamese name; so do the e-mail and the O. */
    dom = browse("/directory/search?q=nguyen+van&lang=vi");
    cr_assert(strstr(dom, "Nguyễn Văn An") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "Còn hiệu lực") != NULL);
    dom = browse("/directory/search?q=an.nguyen%%40bcy.gov.vn");
    cr_assert(strstr(dom, "Nguyễn Văn An") != NULL);
    dom = browse("/directory/search?q=chinh+phu&field=o");
    cr_assert(strstr(dom, "Nguyễn Văn An") != NULL);

    /* By serial: upper case, colons and leading zeros; by SHA-256 fingerprint. */
    {
        char colons[200] = "00:";
        size_t n = strlen(colons);
        for (size_t i = 0; good[i] && n + 4 < sizeof(colons); i++) {
            colons[n++] = (char)(good[i] >= 'a' && good[i] <= 'f' ? good[i] - 'a' + 'A' : good[i]);
            if (i % 2 == 1 && good[i + 1])
                colons[n++] = ':';
        }
        colons[n] = '\0';
        dom = browse("/directory/search?q=%s&lang=en", colons);
        cr_assert(strstr(dom, "Demo Subscriber Good") != NULL, "%s: %.3000s", colons, dom);
        cr_assert(strstr(dom, "Demo Subscriber Revoked") == NULL);
    }
    {
        char out[512], fp[200];
        cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                            "openssl x509 -in pki/demo-revoked.pem -noout -fingerprint -sha256"),
                     0);
        snprintf(fp, sizeof(fp), "%s", strchr(out, '=') + 1);
        fp[strcspn(fp, "\r\n")] = '\0';
        dom = browse("/directory/search?q=%s&lang=en", fp);
        cr_assert(strstr(dom, "Demo Subscriber Revoked") != NULL, "%.3000s", dom);
        cr_assert(strstr(dom, "Demo Subscriber Good") == NULL);
    }

    /* The page of a good certificate. */
    dom = browse("/directory/cert/demo-ca/%s?lang=en", good);
    cr_assert(strstr(dom, "data-status=\"good\"") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "From the same index that answers OCSP") != NULL);
    cr_assert(strstr(dom, "SHA-256") != NULL);
    cr_assert(strstr(dom, "digital signature") != NULL, "key usage in words: %.5000s", dom);
    cr_assert(strstr(dom, "/crl/demo-ca.crl") != NULL);
    cr_assert(strstr(dom, "/ca/demo-ca.crt") != NULL);
    cr_assert(strstr(dom, ".pem\" download") != NULL);
    /* The page of a revoked one, with time and reason. */
    dom = browse("/directory/cert/demo-ca/%s?lang=en", revoked);
    cr_assert(strstr(dom, "data-status=\"revoked\"") != NULL);
    cr_assert(strstr(dom, "key compromise") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "Revoked at") != NULL);

    /* Revoked while the server runs: the page follows the index that answers OCSP. */
    {
        char json[256], body[2048];
        int waited = 0;
        snprintf(json, sizeof(json),
                 "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"superseded\"}", good);
        cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                     body);
        while (rel_ocsp(&srv, good, 0, NULL) != 1 && waited++ < 100)
            rel_sleep_ms(100);
        cr_assert_eq(rel_ocsp(&srv, good, 0, NULL), 1, "OCSP says revoked");
        dom = browse("/directory/cert/demo-ca/%s?lang=vi", good);
        cr_assert(strstr(dom, "data-status=\"revoked\"") != NULL, "%.3000s", dom);
        cr_assert(strstr(dom, "được thay thế") != NULL, "reason in Vietnamese");
    }

    /* The JSON of the same search is valid JSON and says the same. */
    {
        char cmd[512], out[8192];
        snprintf(cmd, sizeof(cmd),
                 "curl -sf 'http://127.0.0.1:%d/directory/search?q=Demo+Subscriber&format=json' | "
                 "python3 -c 'import json,sys; d=json.load(sys.stdin); "
                 "print(sorted(r[\"status\"][\"status\"] for r in d[\"results\"]))'",
                 srv.port);
        cr_assert_eq(ts_run(cmd, out, sizeof(out)), 0, "%s", out);
        cr_assert(strstr(out, "['revoked', 'revoked', 'revoked']") != NULL, "%s", out);
    }
    /* An unknown serial has no page. */
    cr_assert_eq(rel_get(srv.port, "/directory/cert/demo-ca/0123456789abcdef", NULL, 0, 5000), 404);
    /* The operator sees the directory's work in /metrics (the module's own counters). */
    {
        static char metrics[65536];
        unsigned long long searches = 0, not_found = 0;
        cr_assert_eq(rel_admin(&srv, "/metrics", NULL, NULL, metrics, sizeof(metrics)), 200);
        const char *line = strstr(metrics, "pkiva_directory_requests_total{kind=\"search\"} ");
        cr_assert_not_null(line, "no directory counters in /metrics");
        searches = strtoull(strchr(line, '}') + 2, NULL, 10);
        line = strstr(metrics, "\npkiva_directory_not_found_total ");
        cr_assert_not_null(line);
        not_found = strtoull(strchr(line + 1, ' ') + 1, NULL, 10);
        cr_assert_geq(searches, 5, "%llu searches counted", searches);
        cr_assert_geq(not_found, 1);
    }
    cr_assert_eq(rel_stop(&srv), 0);
}

Test(directory, status_check_with_a_real_file)
{
    char cmd[1024];
    const char *dom;

    issue("unregistered", "Not Registered Here", "Somewhere", NULL, 0);
    cr_assert_eq(rel_sh(&srv, page, sizeof(page),
                        "openssl x509 -in pki/demo-revoked.pem -outform DER -out revoked.der && "
                        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                        "-keyout stranger.key -subj '/C=VN/O=pkiva demo/CN=pkiva Demo Issuing CA' "
                        "-days 3 -out forged-ca.pem && "
                        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                        "-keyout f.key -subj '/CN=Forged' -out forged.csr && "
                        "openssl x509 -req -in forged.csr -CA forged-ca.pem -CAkey stranger.key "
                        "-days 3 -out forged.pem && "
                        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
                        "-keyout s.key -subj '/CN=A Stranger' -days 3 -out stranger.pem"),
                 0, "%s", page);
    rel_start(&srv, 60);

    /* The form: labelled controls, a file input, said plainly that nothing is stored. */
    dom = browse("/directory/check?lang=en");
    cr_assert(strstr(dom, "type=\"file\"") != NULL);
    cr_assert(strstr(dom, "<label for=\"file\">") != NULL);
    cr_assert(strstr(dom, "never stored") != NULL);

    /* A DER file of one of ours, chosen in the form and sent by the browser. */
#define UPLOAD(file)                                                              \
    do {                                                                          \
        snprintf(cmd, sizeof(cmd),                                                \
                 BROWSER " upload 'http://127.0.0.1:%d/directory/check?lang=en' " \
                         "%s/%s",                                                 \
                 srv.port, srv.data, file);                                       \
        cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0, "browser: %s", page);    \
        dom = page;                                                               \
    } while (0)
    UPLOAD("revoked.der");
    cr_assert(strstr(dom, "One of our CAs issued it") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "Its signature verifies") != NULL);
    cr_assert(strstr(dom, "data-status=\"revoked\"") != NULL);
    cr_assert(strstr(dom, "Demo Subscriber Revoked") != NULL);

    /* A PEM file of a certificate our CA's key signed but that was never registered: unknown. */
    UPLOAD("unregistered.pem");
    cr_assert(strstr(dom, "not in our database") != NULL, "%.3000s", dom);
    cr_assert(strstr(dom, "data-status=\"unknown\"") != NULL);

    /* Someone else's certificate: said plainly. */
    UPLOAD("stranger.pem");
    cr_assert(strstr(dom, "NOT issued by any of our CAs") != NULL, "%.3000s", dom);
    /* Our CA's name, another key: the signature does not verify. */
    UPLOAD("forged.pem");
    cr_assert(strstr(dom, "signature does NOT verify") != NULL, "%.3000s", dom);
    /* Not a certificate at all. */
    UPLOAD("pkiva.conf");
    cr_assert(strstr(dom, "not a readable certificate") != NULL, "%.3000s", dom);

    /* Bounded: more than upload_max is refused (the http body limit is larger). */
    snprintf(cmd, sizeof(cmd),
             "head -c 70000 /dev/zero | curl -s -o /dev/null -w '%%{http_code}' "
             "-H 'Content-Type: application/pkix-cert' --data-binary @- "
             "http://127.0.0.1:%d/directory/check",
             srv.port);
    cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0);
    cr_assert(strcmp(page, "413") == 0, "%s", page);
    /* Never stored: the store holds no trace of the unregistered certificate. */
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, page, sizeof(page),
                        "sqlite3 pkiva.db \"select count(*) from certs where subject like "
                        "'%%Not Registered%%'\""),
                 0, "%s", page);
    cr_assert(strncmp(page, "0", 1) == 0, "%s", page);
}

Test(directory, hostile_subject_names_are_shown_not_run)
{
    char serial[80];
    const char *dom;

    /* <script>, quotes, a right-to-left override and a BEL control character in CN. */
    issue("hostile", "<script>alert(1)</script> \\\"q\\\" \\x27x\\x27 \\u202eevil\\u202c \\x07bell",
          "Ban Cơ yếu", "x@example.vn", 1);
    serial_of("hostile.pem", serial, sizeof(serial));
    rel_start(&srv, 60);
    for (int pass = 0; pass < 2; pass++) {
        dom = pass == 0 ? browse("/directory/search?q=evil+bell&lang=en")
                        : browse("/directory/cert/demo-ca/%s?lang=en", serial);
        /* The pages carry no script at all, so a script element in the DOM is the name's. */
        cr_assert(strstr(dom, "<script") == NULL, "a script element got in: %.4000s", dom);
        cr_assert(strstr(dom, "&lt;script&gt;alert(1)&lt;/script&gt;") != NULL, "%.4000s", dom);
        cr_assert(strstr(dom, "[U+202E]evil[U+202C]") != NULL, "bidi shown: %.4000s", dom);
        cr_assert(strstr(dom, "[U+0007]bell") != NULL, "control shown");
        cr_assert(strstr(dom, "\xe2\x80\xae") == NULL, "no raw RLO in the page");
    }
    /* The JSON escapes them and stays valid. */
    {
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "curl -sf 'http://127.0.0.1:%d/directory/search?q=evil&format=json' | python3 -c "
                 "'import json,sys; d=json.load(sys.stdin); s=d[\"results\"][0][\"subject\"]; "
                 "print(\"\\u202e\" in s and \"\\x07\" in s and \"<script>\" in s)'",
                 srv.port);
        cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0, "%s", page);
        cr_assert(strncmp(page, "True", 4) == 0, "%s", page);
    }
    /* Hostile query text is echoed escaped and cannot inject full-text syntax. */
    dom = browse("/directory/search?q=%%22%%3Cscript%%3E*+OR+NEAR(%%27&lang=en");
    cr_assert(strstr(dom, "<script") == NULL, "%.3000s", dom);
    cr_assert_eq(rel_stop(&srv), 0);
}

Test(directory, what_is_published_is_the_operators_choice)
{
    char cmd[512];
    int statuses[6];

    issue("mail", "Tran Thi Binh", "Bo Tai chinh", "binh@mof.gov.vn", 1);
    rel_conf_append(&srv, "[directory]\n"
                          "search_fields = cn, o, ou, serial, fingerprint\n"
                          "show_email = no\n"
                          "issuers = demo-ca\n"
                          "rate_per_minute = 1\n"
                          "rate_burst = 4\n");
    rel_start(&srv, 60);
    /* E-mail is not searchable and not shown. */
    snprintf(cmd, sizeof(cmd),
             "curl -s 'http://127.0.0.1:%d/directory/search?q=binh%%40mof.gov.vn&field=email"
             "&format=json'",
             srv.port);
    cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0);
    cr_assert(strstr(page, "\"results\":[]") != NULL && strstr(page, "error") != NULL, "%s", page);
    snprintf(cmd, sizeof(cmd),
             "curl -s 'http://127.0.0.1:%d/directory/search?q=Tran+Binh&format=json'", srv.port);
    cr_assert_eq(ts_run(cmd, page, sizeof(page)), 0);
    cr_assert(strstr(page, "Tran Thi Binh") != NULL, "%s", page);
    cr_assert(strstr(page, "mof.gov.vn") == NULL, "e-mail masked: %s", page);
    /* Only demo-ca is published: the root has no page. */
    cr_assert_eq(rel_get(srv.port, "/directory/issuer/root", NULL, 0, 5000), 404);
    cr_assert_eq(rel_get(srv.port, "/directory/issuer/demo-ca", NULL, 0, 5000), 200);
    /* Four searches in a burst, then the address is told to slow down (one per minute). */
    for (int i = 0; i < 6; i++)
        statuses[i] = rel_get(srv.port, "/directory/search?q=demo", NULL, 0, 5000);
    cr_assert_eq(statuses[5], 429, "%d %d %d %d %d %d", statuses[0], statuses[1], statuses[2],
                 statuses[3], statuses[4], statuses[5]);
    cr_assert_eq(rel_stop(&srv), 0);

    /* Switched off: no directory at all. */
    rel_conf_append(&srv, "[directory]\nenabled = no\n");
    rel_start(&srv, 60);
    (void)rel_get(srv.port, "/directory", page, sizeof(page), 5000); /* OCSP GET's answer */
    cr_assert(strstr(page, "<html") == NULL, "%.500s", page);
    cr_assert_eq(rel_stop(&srv), 0);
}
