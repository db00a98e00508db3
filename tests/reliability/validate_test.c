/* SPDX-License-Identifier: Apache-2.0 */
/* Issue 14 items 4 and 5 against the real binary. Every door (admin API, `pkiva revoke`, `pkiva
 * import --index`) refuses a revocation OCSP or a CRL could not sign, naming the field; a poisoned
 * entry written behind the store's back makes the pre-signer back off instead of spinning; and a
 * cache revalidating with If-Modified-Since never keeps "good" (or an old CRL) across a change
 * made in the same second. */
#include "rel.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <time.h>

static struct rel_server srv;

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(validate, .init = setup, .fini = teardown, .timeout = 180);

/* POST /admin/revoke for serial with extra JSON members; returns the status, body in out. */
static int admin_revoke(const char *serial, const char *extra, char *out, size_t out_len)
{
    char json[512];
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"%s}", serial, extra);
    return rel_admin(&srv, "/admin/revoke", json, NULL, out, out_len);
}

Test(validate, every_door_refuses_unsignable_revocations_naming_the_field)
{
    static const struct {
        const char *extra;
        const char *field;
    } bad[] = {
        {",\"revoked_at\":\"@1764633600000\"", "revoked_at"},       /* milliseconds as seconds */
        {",\"revoked_at\":\"2026-02-30\"", "revoked_at"},           /* no such day */
        {",\"revoked_at\":\"9999-12-31T23:59:59Z\"", "revoked_at"}, /* future */
        {",\"revoked_at\":\"2025-01-01\",\"invalidity_date\":\"2025-01-02\"", "invalidity_date"},
        {",\"invalidity_date\":\"9000-01-01\"", "invalidity_date"}, /* after "now" */
        {",\"received_at\":\"@18446744073709552\"", "received_at"}, /* wrapped to 384 ms */
        {",\"received_at\":\"2999-01-01\"", "received_at"},         /* future */
    };
    char serials[2][33];
    char out[8192];
    int reason = -1;

    rel_start(&srv, 120);
    rel_register_serials(&srv, 2, serials);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(admin_revoke(serials[0], bad[i].extra, out, sizeof(out)), 400, "%s: %s",
                     bad[i].extra, out);
        cr_assert(strstr(out, bad[i].field) != NULL, "%s: the error does not name %s: %s",
                  bad[i].extra, bad[i].field, out);
    }

    /* The CLI: a message naming the field and a non-zero exit. */
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                   "--revoked-at @1764633600000 2>&1",
                         srv.data, serials[0]),
                  0, "%s", out);
    cr_assert(strstr(out, "pkiva revoke: --revoked-at: '@1764633600000'") != NULL, "%s", out);
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                   "--received-at 2999-01-01 2>&1",
                         srv.data, serials[0]),
                  0, "%s", out);
    cr_assert(strstr(out, "received_at") != NULL, "%s", out);
    /* Before the certificate's notBefore (the demo certificate was issued at `pkiva init`). */
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --cert pki/demo-good.pem "
                                   "--revoked-at 2001-01-01 2>&1",
                         srv.data),
                  0, "%s", out);
    cr_assert(strstr(out, "revoked_at") != NULL && strstr(out, "notBefore") != NULL, "%s", out);

    /* Import: the line is skipped with its number and the field; the good line goes in. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "printf 'R\\t351231235959Z\\t99991231235959Z,keyCompromise\\t%s\\tunknown"
                        "\\t/CN=x\\n' > bad-index.txt && "
                        "printf 'R\\t351231235959Z\\t20260230000000Z\\t0BAD\\tunknown\\t/CN=y\\n'"
                        " >> bad-index.txt && " REL_PKIVA
                        " import --data %s --index bad-index.txt --issuer demo-ca 2>&1",
                        serials[1], srv.data),
                 0, "%s", out);
    cr_assert(strstr(out, "index line 1") != NULL && strstr(out, "revoked_at") != NULL, "%s", out);
    cr_assert(strstr(out, "index line 2") != NULL, "%s", out);
    cr_assert(strstr(out, "2 skipped") != NULL, "%s", out);

    /* Nothing of it reached a signature: both still answer good, signed. */
    cr_assert_eq(rel_ocsp(&srv, serials[0], 0, &reason), 0);
    cr_assert_eq(rel_ocsp(&srv, serials[1], 0, &reason), 0);
    /* And a sane request still goes through. */
    cr_assert_eq(admin_revoke(serials[0], ",\"reason\":\"keyCompromise\"", out, sizeof(out)), 200,
                 "%s", out);
}

/* The value of an unlabelled metric in /metrics, -1 if absent. */
static long long metric(const char *name)
{
    static char body[1 << 16];
    char key[128];
    const char *p;
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, NULL, body, sizeof(body)), 200);
    snprintf(key, sizeof(key), "\n%s ", name);
    p = strstr(body, key);
    return p != NULL ? atoll(p + strlen(key)) : -1;
}

Test(validate, presigner_backs_off_on_a_poisoned_entry)
{
    char serials[2][33];
    char out[4096], json[256];
    long long errors, later, signatures, signatures_later;
    int reason = -1;

    /* A revocation recorded as the admin API used to accept it, dated in milliseconds (year
     * 57887): a valid one, then fault injection on the real store behind the new checks. */
    rel_register_serials(&srv, 2, serials);
    rel_start(&srv, 120);
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", serials[0]);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, out, sizeof(out)), 200, "%s", out);
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sqlite3 pkiva.db \"UPDATE certs SET revoked_at = 1764633600000 "
                        "WHERE serial = X'%s'; UPDATE revocations SET revoked_at = 1764633600000 "
                        "WHERE serial = X'%s'\" 2>&1",
                        serials[0], serials[0]),
                 0, "%s", out);
    rel_start(&srv, 120);
    /* Serving: the healthy entry answers good. */
    cr_assert_eq(rel_ocsp(&srv, serials[1], 0, &reason), 0);
    /* Three seconds on, the poisoned entry was tried a handful of times (back-off 1 s, 2 s, ...),
     * not the hundreds of thousands of a busy loop. Counts, not times, are asserted. */
    errors = metric("pkiva_ocsp_presign_errors_total");
    signatures = metric("pkiva_hsm_signatures_total");
    rel_sleep_ms(3000);
    later = metric("pkiva_ocsp_presign_errors_total");
    signatures_later = metric("pkiva_hsm_signatures_total");
    cr_log_info("poisoned entry: %lld failures, %lld signatures in 3 s", later - errors,
                signatures_later - signatures);
    cr_assert_leq(signatures_later - signatures, 20, "%lld signatures in 3 s: the pre-signer spins",
                  signatures_later - signatures);
    cr_assert_leq(later - errors, 6, "%lld failures in 3 s: the pre-signer spins", later - errors);
    /* It is counted and reported. */
    cr_assert_geq(later, 1);
    cr_assert_eq(metric("pkiva_ocsp_presign_failing"), 1);
    /* It is logged, loudly, with the serial. */
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "grep -ci 'cannot sign serial %s' %s", serials[0], srv.log),
        0, "%s", out);
    /* Everything else is served as before. */
    cr_assert_eq(rel_ocsp(&srv, serials[1], 0, &reason), 0);
    /* The SLA reports never call it complete. */
    cr_assert_eq(rel_admin(&srv, "/admin/sla", NULL, NULL, out, sizeof(out)), 200, "%s", out);
    cr_assert(strstr(out, "\"unsignable\"") != NULL, "%s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " sla --data %s 2>&1", srv.data), 0, "%s",
                 out);
    cr_assert(strstr(out, "UNSIGNABLE: revoked_at") != NULL, "%s", out);
}

/* ---- item 5: revalidation never resurrects "good" (or an older CRL) ------------------------- */

struct answer {
    int code;               /* HTTP status */
    char last_modified[64]; /* "" when absent */
    char etag[64];
    char status[16]; /* OCSP: "good", "revoked", ...; CRL: the CRL number; "" without a body */
};

/* GET path on the public listener with extra curl arguments (conditional headers). */
static void get(const char *path, const char *extra, struct answer *a)
{
    char out[4096];
    memset(a, 0, sizeof(*a));
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "rm -f body.der && curl -s -D hdr.txt -o body.der -w '%%{http_code}\\n' "
                        "%s 'http://127.0.0.1:%d%s' && "
                        "grep -i '^last-modified:' hdr.txt | cut -d' ' -f2- | tr -d '\\r\\n'; "
                        "echo; grep -i '^etag:' hdr.txt | cut -d' ' -f2 | tr -d '\\r\\n'; echo; "
                        "if [ ! -s body.der ]; then echo; "
                        "elif openssl ocsp -respin body.der -resp_text -noverify >resp.txt "
                        "2>/dev/null; then grep -m1 'Cert Status:' resp.txt | awk '{print $3}'; "
                        "else openssl crl -inform DER -in body.der -noout -crlnumber | "
                        "cut -d= -f2; fi",
                        extra, srv.port, path),
                 0, "%s", out);
    cr_assert_eq(sscanf(out, "%d\n%63[^\n]\n%63[^\n]\n%15[^\n]", &a->code, a->last_modified,
                        a->etag, a->status) >= 1,
                 1, "%s", out);
}

/* The GET path of the OCSP request for serial (hex) under the issuing CA. */
static void ocsp_path(const char *serial, char *path, size_t len)
{
    char out[2048];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl ocsp -issuer pki/issuing-ca.pem -serial 0x%s -no_nonce "
                        "-reqout req.der >/dev/null 2>&1 && openssl base64 -A -in req.der | "
                        "sed -e 's/+/%%2B/g' -e 's#/#%%2F#g' -e 's/=/%%3D/g'",
                        serial),
                 0, "%s", out);
    snprintf(path, len, "/%s", out);
}

Test(validate, if_modified_since_never_keeps_good_across_a_same_second_revocation)
{
    char serials[1][33], path[512], extra[256];
    struct answer good, revoked, a;
    int same_second = 0;

    rel_start(&srv, 120);
    /* A "good" response and the "revoked" one signed in the same second: a fresh registration
     * is signed at once, the revocation right after; try again until both fall in one second. */
    for (int attempt = 0; attempt < 10 && !same_second; attempt++) {
        char json[256], out[1024];
        rel_register_serials(&srv, 1, serials);
        ocsp_path(serials[0], path, sizeof(path));
        for (int i = 0; i < 200; i++) {
            get(path, "", &good);
            if (strcmp(good.status, "good") == 0)
                break;
            rel_sleep_ms(20);
        }
        cr_assert_str_eq(good.status, "good");
        snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", serials[0]);
        cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, out, sizeof(out)), 200, "%s",
                     out);
        for (int i = 0; i < 200; i++) {
            get(path, "", &revoked);
            if (strcmp(revoked.status, "revoked") == 0)
                break;
            rel_sleep_ms(20);
        }
        cr_assert_str_eq(revoked.status, "revoked");
        same_second = strcmp(good.last_modified, revoked.last_modified) == 0;
    }
    cr_assert(same_second, "never signed good and revoked in the same second in 10 tries");
    cr_assert_str_neq(good.etag, revoked.etag);

    /* The cache holding "good" revalidates by date: it must get "revoked", not 304. */
    snprintf(extra, sizeof(extra), "-H 'If-Modified-Since: %s'", good.last_modified);
    get(path, extra, &a);
    cr_assert_eq(a.code, 200, "If-Modified-Since of the good response: %d", a.code);
    cr_assert_str_eq(a.status, "revoked");
    /* By the old ETag: 200; by the new one: 304. */
    snprintf(extra, sizeof(extra), "-H 'If-None-Match: %s'", good.etag);
    get(path, extra, &a);
    cr_assert_eq(a.code, 200);
    cr_assert_str_eq(a.status, "revoked");
    snprintf(extra, sizeof(extra), "-H 'If-None-Match: %s'", revoked.etag);
    get(path, extra, &a);
    cr_assert_eq(a.code, 304);
}

Test(validate, if_modified_since_never_keeps_an_older_crl_of_the_same_second)
{
    struct answer before, after, a;
    char extra[256], out[1024];
    int same_second = 0;

    rel_start(&srv, 120);
    for (int i = 0; i < 200; i++) {
        get("/crl/demo-ca.crl", "", &before);
        if (before.code == 200)
            break;
        rel_sleep_ms(50);
    }
    cr_assert_eq(before.code, 200);
    /* Publish until two CRLs in a row are served with the same Last-Modified second. */
    for (int attempt = 0; attempt < 10 && !same_second; attempt++) {
        cr_assert_eq(rel_admin(&srv, "/admin/crl/publish", "{\"issuer\":\"demo-ca\"}", NULL, out,
                               sizeof(out)),
                     202, "%s", out);
        for (int i = 0; i < 200; i++) {
            get("/crl/demo-ca.crl", "", &after);
            if (strcmp(after.etag, before.etag) != 0)
                break;
            rel_sleep_ms(10);
        }
        cr_assert_str_neq(after.etag, before.etag, "no new CRL was served");
        same_second = strcmp(before.last_modified, after.last_modified) == 0;
        if (!same_second)
            before = after;
    }
    cr_assert(same_second, "never published two CRLs in the same second in 10 tries");
    cr_assert_str_neq(before.status, after.status, "the CRL number must differ");

    snprintf(extra, sizeof(extra), "-H 'If-Modified-Since: %s'", before.last_modified);
    get("/crl/demo-ca.crl", extra, &a);
    cr_assert_eq(a.code, 200, "If-Modified-Since of the older CRL: %d", a.code);
    cr_assert_str_eq(a.status, after.status);
    snprintf(extra, sizeof(extra), "-H 'If-None-Match: %s'", before.etag);
    get("/crl/demo-ca.crl", extra, &a);
    cr_assert_eq(a.code, 200);
    snprintf(extra, sizeof(extra), "-H 'If-None-Match: %s'", after.etag);
    get("/crl/demo-ca.crl", extra, &a);
    cr_assert_eq(a.code, 304);
}
