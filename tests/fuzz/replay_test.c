/* SPDX-License-Identifier: Apache-2.0 */
/* The committed seed corpora of every fuzz target (tests/fuzz/corpus/NAME for fuzz_NAME), replayed
 * as an ordinary test in the normal build through the same functions the libFuzzer targets call.
 * A file's name says what it must do: http files start with the status of the first response
 * ("400-...") or "none-" (the server closes without answering); admin_json and config files start
 * with "ok-" or "bad-"; ocsp_request files with "not-" when the request must be refused with an
 * OCSP error status; ocsp_get files with "bad" when the path must not decode; tsa_request files
 * with "sha256", "sha512" or "sha3" when the request must be accepted; directory files with the
 * outcome digit (0 no certificate, 1 rendered). Crashes the fuzzers found are kept under "crash-"
 * names with the outcome they must now have. */
#include "fuzz.h"

#include <admin/admin_int.h>
#include <directory/directory_int.h>
#include <support.h>

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <util/util.h>

typedef void (*replay_fn)(const char *name, const uint8_t *data, size_t size);

static int replay_dir(const char *sub, replay_fn fn)
{
    char dir[512];
    DIR *d = NULL;
    struct dirent *de = NULL;
    int files = 0;

    (void)snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus/%s", PKIVA_SOURCE_DIR, sub);
    d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    while ((de = readdir(d)) != NULL) {
        char path[1024];
        unsigned char *data = NULL;
        size_t len = 0;
        if (de->d_name[0] == '.')
            continue;
        (void)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
        fn(de->d_name, data, len);
        free(data);
        files++;
    }
    (void)closedir(d); /* read-only */
    return files;
}

static const char *outcome(const char *name)
{
    return strncmp(name, "crash-", 6) == 0 ? name + 6 : name;
}

static void replay_http(const char *name, const uint8_t *data, size_t size)
{
    char resp[4096];
    size_t got = fuzz_http_exchange(data, size, resp, sizeof(resp) - 1);
    const char *want = outcome(name);

    resp[got] = '\0';
    if (strncmp(want, "none-", 5) == 0) {
        cr_expect_eq(got, 0, "%s: expected no answer, got: %s", name, resp);
        return;
    }
    cr_assert_geq(got, 12, "%s: no answer", name);
    cr_expect(strncmp(resp, "HTTP/1.1 ", 9) == 0 && strncmp(resp + 9, want, 3) == 0,
              "%s: expected status %.3s, got: %.200s", name, want, resp);
}

static void replay_admin(const char *name, const uint8_t *data, size_t size)
{
    int rc = fuzz_admin_check(data, size);
    const char *want = outcome(name);
    cr_expect_eq(rc, strncmp(want, "ok-", 3) == 0 ? 0 : 400, "%s: got %d", name, rc);
}

static void replay_config(const char *name, const uint8_t *data, size_t size)
{
    char err[1024];
    int rc = fuzz_config_check(data, size, err, sizeof(err));
    const char *want = outcome(name);
    cr_expect_eq(rc == UTIL_OK, strncmp(want, "ok-", 3) == 0, "%s: %s", name, err);
}

Test(fuzz_replay, http, .timeout = 60)
{
    cr_assert_geq(replay_dir("http", replay_http), 12);
    fuzz_http_shutdown();
}

Test(fuzz_replay, admin_json)
{
    cr_assert_geq(replay_dir("admin_json", replay_admin), 10);
}

Test(fuzz_replay, config)
{
    cr_assert_geq(replay_dir("config", replay_config), 8);
}

static void replay_ocsp_request(const char *name, const uint8_t *data, size_t size)
{
    int rc = fuzz_ocsp_request_check(data, size);
    cr_expect_eq(rc, strncmp(outcome(name), "not-", 4) != 0, "%s: got %d", name, rc);
}

static void replay_ocsp_get(const char *name, const uint8_t *data, size_t size)
{
    int rc = fuzz_ocsp_get_check(data, size);
    cr_expect_eq(rc, strncmp(outcome(name), "bad", 3) != 0, "%s: got %d", name, rc);
}

static void replay_tsa_request(const char *name, const uint8_t *data, size_t size)
{
    const char *want = outcome(name);
    int accept = strncmp(want, "sha256", 6) == 0 || strncmp(want, "sha512", 6) == 0 ||
                 strncmp(want, "sha3", 4) == 0;
    int rc = fuzz_tsa_request_check(data, size);
    cr_expect_eq(rc, accept, "%s: got %d", name, rc);
}

static void replay_directory(const char *name, const uint8_t *data, size_t size)
{
    int rc = fuzz_directory_check(data, size);
    cr_expect_eq(rc, outcome(name)[0] - '0', "%s: got %d", name, rc);
}

Test(fuzz_replay, ocsp_request)
{
    cr_assert_geq(replay_dir("ocsp_request", replay_ocsp_request), 5);
}

Test(fuzz_replay, ocsp_get)
{
    cr_assert_geq(replay_dir("ocsp_get", replay_ocsp_get), 4);
}

Test(fuzz_replay, tsa_request)
{
    cr_assert_geq(replay_dir("tsa_request", replay_tsa_request), 5);
}

Test(fuzz_replay, directory)
{
    cr_assert_geq(replay_dir("directory", replay_directory), 7);
}

/* The layout itself: every target fuzz_NAME.c has a seed corpus corpus/NAME/ and every corpus a
 * target (run-fuzz.sh and scripts/test find both by name). */
Test(fuzz_replay, every_target_has_its_corpus)
{
    char dir[512];
    DIR *d = NULL;
    struct dirent *de = NULL;
    int targets = 0, corpora = 0;

    (void)snprintf(dir, sizeof(dir), "%s/tests/fuzz", PKIVA_SOURCE_DIR);
    d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        char corpus[1024];
        DIR *c = NULL;
        if (strncmp(de->d_name, "fuzz_", 5) != 0 || len < 8 || strcmp(de->d_name + len - 2, ".c"))
            continue;
        (void)snprintf(corpus, sizeof(corpus), "%s/corpus/%.*s", dir, (int)(len - 7),
                       de->d_name + 5);
        c = opendir(corpus);
        cr_expect_not_null(c, "%s has no seed corpus %s", de->d_name, corpus);
        if (c != NULL)
            (void)closedir(c); /* read-only */
        targets++;
    }
    (void)closedir(d); /* read-only */
    (void)snprintf(dir, sizeof(dir), "%s/tests/fuzz/corpus", PKIVA_SOURCE_DIR);
    d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    while ((de = readdir(d)) != NULL) {
        char target[1024];
        if (de->d_name[0] == '.')
            continue;
        (void)snprintf(target, sizeof(target), "%s/tests/fuzz/fuzz_%s.c", PKIVA_SOURCE_DIR,
                       de->d_name);
        cr_expect_eq(access(target, R_OK), 0, "corpus/%s has no target %s", de->d_name, target);
        corpora++;
    }
    (void)closedir(d); /* read-only */
    cr_assert_geq(targets, 7);
    cr_assert_eq(targets, corpora);
}

/* The documented sample config is a seed in spirit: it must always parse. */
Test(fuzz_replay, sample_config_parses)
{
    unsigned char *text = NULL;
    size_t len = 0;
    char err[1024];
    cr_assert_eq(util_file_read(PKIVA_SOURCE_DIR "/conf/pkiva.conf", 1 << 20, &text, &len), 0);
    cr_expect_eq(fuzz_config_check(text, len, err, sizeof(err)), UTIL_OK, "%s", err);
    free(text);
}

/* Out of memory while an accepted admin body is checked (STYLE: fail the Nth allocation): for
 * every allocation the checks make (jansson, the PEM decoder, the DER copy), that one allocation
 * fails in turn. The answer must be 503, never a 400 that blames the operator's request and never
 * a crash; with no failure injected the body is accepted. The ASan build checks for leaks. */
Test(fuzz_replay, admin_json_out_of_memory_is_503, .timeout = 120)
{
    static const char *const routes[] = {"revoke", "unrevoke", "status", "certificates",
                                         "crl/publish"};
    static const char *const seeds[] = {"ok-revoke-full", "ok-certificates",
                                        "ok-crl-publish-issuer"};
    for (size_t s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
        char path[512];
        unsigned char *data = NULL;
        size_t len = 0;
        long n;
        int refused = 0;
        (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/admin_json/%s", PKIVA_SOURCE_DIR,
                       seeds[s]);
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
        cr_assert(len > 1 && data[0] >= '0' && data[0] <= '4', "%s: no route digit", seeds[s]);
        /* Once without a failure first, as a running server has: OpenSSL initialises its PEM and
         * ASN.1 tables once per process, and a failure inside that one-time set-up would break
         * every later call of this test process, not tell us anything about a server. */
        cr_assert_eq(admin__parse_for_fuzz(routes[data[0] - '0'], data + 1, len - 1), 0);
        for (n = 1; n < 20000; n++) {
            int rc, hit;
            ts_failalloc_arm(n);
            rc = admin__parse_for_fuzz(routes[data[0] - '0'], data + 1, len - 1);
            hit = ts_failalloc_disarm();
            if (!hit) {
                cr_assert_eq(rc, 0, "%s: refused without an injected failure (%d)", seeds[s], rc);
                break;
            }
            cr_assert(rc == 0 || rc == 503, "%s: allocation %ld failed and the answer was %d",
                      seeds[s], n, rc);
            refused += rc == 503;
        }
        cr_log_info("%s: %ld allocations failed in turn, %d answered 503", seeds[s], n - 1,
                    refused);
        cr_assert_gt(refused, 0, "%s: no injected failure was reported", seeds[s]);
        cr_assert_lt(n, 20000);
        free(data);
    }
}

/* Every allocation made while a status check body is decoded and its certificate rendered as HTML
 * and JSON fails once in turn: the outcome is "no certificate", "rendered" or "page too large"
 * (the buffer's failure flag, which the server answers with 500), never a crash; under ASan,
 * never a leak or a bad access. */
Test(fuzz_replay, directory_every_allocation_failing_in_turn, .timeout = 300)
{
    static const char *const seeds[] = {"1-multipart-der-hostile", "1-urlencoded-hostile",
                                        "1-raw-der-ca"};
    for (size_t k = 0; k < sizeof(seeds) / sizeof(seeds[0]); k++) {
        char path[512];
        unsigned char *data = NULL;
        size_t len = 0;
        long n;
        int degraded = 0;
        (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/directory/%s", PKIVA_SOURCE_DIR,
                       seeds[k]);
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
        /* Once without a failure: OpenSSL sets its tables up once per process. */
        cr_assert_eq(directory__fuzz_one(data, len), 1, "%s", seeds[k]);
        for (n = 1; n < 100000; n++) {
            int rc, hit;
            ts_failalloc_arm(n);
            rc = directory__fuzz_one(data, len);
            hit = ts_failalloc_disarm();
            if (!hit) {
                cr_assert_eq(rc, 1, "%s: not rendered without an injected failure", seeds[k]);
                break;
            }
            cr_assert(rc >= 0 && rc <= 2, "%s: allocation %ld: %d", seeds[k], n, rc);
            degraded += rc != 1;
        }
        cr_log_info("%s: %ld allocations failed in turn, %d degraded", seeds[k], n - 1, degraded);
        cr_assert_gt(degraded, 0);
        cr_assert_lt(n, 100000);
        free(data);
    }
}
