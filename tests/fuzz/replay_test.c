/* SPDX-License-Identifier: Apache-2.0 */
/* The committed seed corpora of the fuzz targets in tests/fuzz, replayed as an ordinary test in the
 * normal build through the same functions the libFuzzer targets call. A file's name says what it
 * must do: http files start with the status of the first response ("400-...") or "none-" (the
 * server closes without answering); admin and config files start with "ok-" or "bad-". Crashes the
 * fuzzers found are kept here under "crash-" names with the outcome they must now have. */
#include "fuzz.h"

#include <admin/admin.h>
#include <support.h>

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    cr_assert_geq(replay_dir("admin", replay_admin), 10);
}

Test(fuzz_replay, config)
{
    cr_assert_geq(replay_dir("config", replay_config), 8);
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
        (void)snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/admin/%s", PKIVA_SOURCE_DIR,
                       seeds[s]);
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
        cr_assert(len > 1 && data[0] >= '0' && data[0] <= '4', "%s: no route digit", seeds[s]);
        /* Once without a failure first, as a running server has: OpenSSL initialises its PEM and
         * ASN.1 tables once per process, and a failure inside that one-time set-up would break
         * every later call of this test process, not tell us anything about a server. */
        cr_assert_eq(admin_parse_for_fuzz(routes[data[0] - '0'], data + 1, len - 1), 0);
        for (n = 1; n < 20000; n++) {
            int rc, hit;
            ts_failalloc_arm(n);
            rc = admin_parse_for_fuzz(routes[data[0] - '0'], data + 1, len - 1);
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
