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
#endif
