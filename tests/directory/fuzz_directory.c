/* SPDX-License-Identifier: Apache-2.0 */
/* The directory's decoders of untrusted input as a libFuzzer target (built with PKIVA_FUZZ) and,
 * in every build, the replay of its seed corpus (test_directory_fuzz_replay): query strings with
 * percent escapes, Accept-Language, hex serials and fingerprints, the status check's multipart,
 * urlencoded and bare bodies, and any certificate found in them rendered as HTML and JSON (the
 * escapers and the plain-words rendering of arbitrary extensions). A corpus file's name starts
 * with the outcome it must have: 0 no certificate, 1 rendered. */
#include <directory/directory_int.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly the input, so that any read past its end is caught. */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, size);
    if (directory__fuzz_one(copy, size) == 2)
        abort(); /* a bounded input can never make a page too large */
    free(copy);
    return 0;
}
#else
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <support.h>
#include <util/util.h>

Test(directory_fuzz_replay, corpus)
{
    char dir[512];
    DIR *d = NULL;
    struct dirent *de = NULL;
    int files = 0;

    (void)snprintf(dir, sizeof(dir), "%s/tests/directory/corpus", PKIVA_SOURCE_DIR);
    d = opendir(dir);
    cr_assert_not_null(d, "%s", dir);
    while ((de = readdir(d)) != NULL) {
        char path[1024];
        unsigned char *data = NULL;
        uint8_t *copy = NULL;
        size_t len = 0;
        if (de->d_name[0] == '.')
            continue;
        (void)snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        cr_assert_eq(util_file_read(path, 1 << 20, &data, &len), 0, "%s", path);
        copy = malloc(len ? len : 1);
        cr_assert_not_null(copy);
        memcpy(copy, data, len);
        cr_expect_eq(directory__fuzz_one(copy, len), de->d_name[0] - '0', "%s", de->d_name);
        free(copy);
        free(data);
        files++;
    }
    (void)closedir(d); /* read-only */
    cr_assert_geq(files, 7);
}

/* Every allocation made while a status check body is decoded and its certificate rendered as HTML
 * and JSON fails once in turn: the outcome is "no certificate", "rendered" or "page too large"
 * (the buffer's failure flag, which the server answers with 500), never a crash; under ASan,
 * never a leak or a bad access. */
Test(directory_fuzz_replay, every_allocation_failing_in_turn, .timeout = 300)
{
    static const char *const seeds[] = {"1-multipart-der-hostile", "1-urlencoded-hostile",
                                        "1-raw-der-ca"};
    for (size_t k = 0; k < sizeof(seeds) / sizeof(seeds[0]); k++) {
        char path[512];
        unsigned char *data = NULL;
        size_t len = 0;
        long n;
        int degraded = 0;
        (void)snprintf(path, sizeof(path), "%s/tests/directory/corpus/%s", PKIVA_SOURCE_DIR,
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
#endif
