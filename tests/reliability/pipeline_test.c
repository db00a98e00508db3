/* SPDX-License-Identifier: Apache-2.0 */
/* The 12-hour rule as an invariant of the system (feed/): whatever moment a revocation is
 * committed at - just before a SIGTERM, while the server is down, right before a kill -9, in a bulk
 * `pkiva import --index` - the real server answers it "revoked" at the first OCSP answer after the
 * next start, serves a CRL that lists it within coalesce + 1 s of that start, and `pkiva sla` shows
 * no open revocation once both are true. Also: the freshness contract printed at start matches a
 * hand computation, a configuration that breaks it is refused, and `pkiva crl publish` returns
 * only once the new CRL is served. */
#include "rel.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>

#define COALESCE_MS 3000 /* long enough that a stop or a kill lands before the publication */

static struct rel_server srv;
static char serials[4][33];

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(pipeline, .init = setup, .fini = teardown, .timeout = 120);

/* Does the CRL served right now over HTTP list serial_hex? */
static int served_crl_lists(const char *serial_hex)
{
    char out[1 << 16];
    char upper[40];
    size_t i;
    for (i = 0; serial_hex[i] != '\0' && i < sizeof(upper) - 1; i++)
        upper[i] = (char)(serial_hex[i] >= 'a' && serial_hex[i] <= 'f' ? serial_hex[i] - 32
                                                                       : serial_hex[i]);
    upper[i] = '\0';
    if (rel_sh(&srv, out, sizeof(out),
               "curl -sf -o served.crl http://127.0.0.1:%d/crl/demo-ca.crl && "
               "openssl crl -inform DER -in served.crl -noout -text",
               srv.port) != 0)
        return 0;
    /* openssl prints serials in upper case without leading zero octets. */
    return strstr(out, upper) != NULL;
}

/* The checks every scenario ends with, right after a start at start_ms. */
static void expect_caught_up(const char *serial_hex, long long start_ms)
{
    char out[1 << 16];
    long long listed_at = 0;
    int reason = -1;

    /* The first OCSP answer after the start already says revoked (the index is the store's). */
    cr_assert_eq(rel_ocsp(&srv, serial_hex, 0, &reason), 1, "first OCSP answer is not revoked");
    cr_assert_eq(reason, 1, "reason %d", reason); /* keyCompromise */
    /* The served CRL lists it within coalesce + 1 s of the start (polled; the bound is checked on
     * the time the listing was first seen, with a generous margin for this shared machine). */
    while (rel_now_ms() - start_ms < COALESCE_MS + 15000) {
        if (served_crl_lists(serial_hex)) {
            listed_at = rel_now_ms();
            break;
        }
        rel_sleep_ms(100);
    }
    cr_assert_neq(listed_at, 0, "the served CRL never listed %s after the start", serial_hex);
    cr_assert_lt(listed_at - start_ms, COALESCE_MS + 1000 + 4000,
                 "listed %lld ms after the start (coalesce %d ms)", listed_at - start_ms,
                 COALESCE_MS);
    /* ... and the deadline report has nothing open once the feed has marked both stages. */
    for (int tries = 0; tries < 50; tries++) {
        cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " sla --data %s", srv.data), 0, "%s",
                     out);
        if (strstr(out, "open revocations: 0") != NULL)
            break;
        rel_sleep_ms(200);
    }
    cr_assert(strstr(out, "open revocations: 0") != NULL, "pkiva sla: %s", out);
}

static void revoke_via_admin(const char *serial_hex)
{
    char json[256], body[2048];
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", serial_hex);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s", body);
}

static void configure(void)
{
    char text[256];
    snprintf(text, sizeof(text), "[crl]\ncoalesce = %dms\n[store]\nfeed_poll = 100ms\n",
             COALESCE_MS);
    rel_conf_append(&srv, text);
    rel_register_serials(&srv, 4, serials);
}

Test(pipeline, revoke_then_sigterm_within_100ms)
{
    long long start;
    configure();
    rel_start(&srv, 30);
    cr_assert(!served_crl_lists(serials[0]));
    revoke_via_admin(serials[0]);
    rel_sleep_ms(50);
    cr_assert_eq(rel_stop(&srv), 0, "SIGTERM did not end the server cleanly");
    /* The stop published the pending change (within its grace period) ... */
    char out[4096];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl crl -inform DER -in crl/demo-ca.crl -noout -text | grep -qi %s",
                        serials[0]),
                 0, "the CRL published at the stop does not list the revocation");
    /* ... and whatever the next start serves says the same. */
    start = rel_now_ms();
    rel_start(&srv, 30);
    expect_caught_up(serials[0], start);
}

Test(pipeline, revoke_while_stopped)
{
    char out[4096];
    long long start;
    configure();
    rel_start(&srv, 30);
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                  "--reason keyCompromise",
                        srv.data, serials[1]),
                 0, "%s", out);
    start = rel_now_ms();
    rel_start(&srv, 30);
    expect_caught_up(serials[1], start);
}

Test(pipeline, kill9_between_commit_and_crl)
{
    long long start;
    configure();
    rel_start(&srv, 30);
    revoke_via_admin(serials[2]);
    rel_kill9(&srv); /* well inside the 3 s coalesce: no CRL carries it yet */
    char out[4096];
    cr_assert(rel_sh(&srv, out, sizeof(out),
                     "openssl crl -inform DER -in crl/demo-ca.crl -noout -text | grep -qi %s",
                     serials[2]) != 0,
              "the CRL already listed it: the kill came too late to test anything");
    start = rel_now_ms();
    rel_start(&srv, 30);
    expect_caught_up(serials[2], start);
}

Test(pipeline, bulk_index_import_then_restart)
{
    char out[4096];
    long long start;
    configure();
    rel_start(&srv, 30);
    /* An OpenSSL CA database with one revoked entry, imported while the server runs ... */
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out),
               "printf 'R\\t351231235959Z\\t%%s,keyCompromise\\t%s\\tunknown\\t"
               "/CN=bulk\\n' \"$(date -u -d @$(($(date +%%s) - 60)) +%%y%%m%%d%%H%%M%%SZ)\" "
               "> ../bulk-index.txt && " REL_PKIVA
               " import --data %s --index ../bulk-index.txt --issuer demo-ca",
               serials[3], srv.data),
        0, "%s", out);
    /* ... then the server is restarted at once, before its coalesce ran out. */
    cr_assert_eq(rel_stop(&srv), 0);
    start = rel_now_ms();
    rel_start(&srv, 30);
    expect_caught_up(serials[3], start);
}

/* The contract line at start, e.g. "deadline 43200 s: ocsp_next_update 21601 s, ...". */
static long long logged(const char *what)
{
    char out[4096], pattern[128];
    snprintf(pattern, sizeof(pattern), "%s ", what);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep 'freshness contract' %s | tail -1", srv.log),
                 0, "no freshness contract line in the log");
    {
        const char *at = strstr(out, pattern);
        cr_assert_not_null(at, "%s not in: %s", what, out);
        return atoll(at + strlen(pattern));
    }
}

Test(pipeline, freshness_contract_defaults_match_a_hand_computation)
{
    static char body[1 << 17];
    rel_start(&srv, 30);
    /* Defaults for the 12 h deadline: validities 6 h, interval 1 h, max-age 1 h, coalesce 5 s,
     * feed_poll 200 ms (propagation to OCSP: ceil(0.2 s) + 1 s = 2 s). */
    cr_assert_eq(logged("ocsp_next_update"), 6 * 3600 + 2);
    cr_assert_eq(logged("ocsp_max_age"), 3600 + 2);
    cr_assert_eq(logged("crl"), 6 * 3600 + 5);
    cr_assert_eq(logged("delta_crl"), 6 * 3600 + 5);
    /* Outage budget: min(6 h * 50 %, 6 h - 1 h, 6 h - 1 h) = 3 h. */
    cr_assert_eq(logged("HSM outage budget"), 3 * 3600);
    cr_assert_eq(rel_admin(&srv, "/admin/sla", NULL, NULL, body, sizeof(body)), 200, "%s", body);
    cr_assert(strstr(body, "\"hsm_outage_budget_seconds\": 10800") != NULL ||
                  strstr(body, "\"hsm_outage_budget_seconds\":10800") != NULL,
              "%s", body);
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, NULL, body, sizeof(body)), 200, "%s", body);
    cr_assert(strstr(body, "pkiva_revocation_worst_case_seconds{client=\"ocsp_next_update\"} "
                           "21602\n") != NULL,
              "%s", body);
    cr_assert(strstr(body, "pkiva_hsm_outage_budget_seconds 10800\n") != NULL, "%s", body);
}

Test(pipeline, a_configuration_past_the_deadline_is_refused)
{
    char out[4096];
    /* The old defaults: OCSP 4 days, CRL 7 days. */
    rel_conf_append(&srv, "[ocsp]\nvalidity = 4d\n[crl]\nvalidity = 7d\ndelta_validity = 1d\n");
    cr_assert_neq(rel_run_to_exit(&srv, 30), 0, "the server started");
    /* 4 d + 2 s and 7 d + 5 s, each naming the directive to change. */
    cr_assert_eq(logged("ocsp_next_update"), 4 * 86400 + 2);
    cr_assert_eq(logged("crl"), 7 * 86400 + 5);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "grep -c 'past the 43200 s \\[revocation\\] deadline: shorten \\[ocsp\\] "
                        "validity' %s",
                        srv.log),
                 0, "%s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep -c 'shorten \\[crl\\] validity' %s", srv.log),
                 0, "%s", out);
    /* Named out of scope, the same configuration starts, with a loud warning. */
    rel_conf_append(&srv, "[revocation]\nout_of_scope = ocsp_next_update, crl, delta_crl\n");
    rel_start(&srv, 30);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "grep -c 'FRESHNESS CONTRACT NOT KEPT for ocsp_next_update' %s", srv.log),
                 0, "%s", out);
}

Test(pipeline, crl_publish_waits_until_the_new_crl_is_served)
{
    char out[8192];
    long long number = 0;
    configure();
    rel_start(&srv, 30);
    revoke_via_admin(serials[0]);
    /* Coalesce is 3 s: only a publication that waited can be served right after the command. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " crl publish --data %s", srv.data), 0,
                 "%s", out);
    {
        const char *at = strstr(out, "demo-ca: CRL number ");
        cr_assert_not_null(at, "%s", out);
        number = atoll(at + strlen("demo-ca: CRL number "));
        cr_assert_gt(number, 0, "%s", out);
        cr_assert_not_null(strstr(at, "served now"), "%s", out);
    }
    cr_assert(served_crl_lists(serials[0]),
              "the CRL served right after the command is the old one");
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "openssl crl -inform DER -in served.crl -noout -crlnumber"),
        0);
    cr_assert_eq(strtoll(strchr(out, '=') + 1, NULL, 16), number, "%s", out);
}
