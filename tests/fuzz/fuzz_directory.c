/* SPDX-License-Identifier: Apache-2.0 */
/* The directory's decoders of untrusted input as a fuzz target: query strings with
 * percent escapes, Accept-Language, hex serials and fingerprints, the status check's multipart,
 * urlencoded and bare bodies, and any certificate found in them rendered as HTML and JSON (the
 * escapers and the plain-words rendering of arbitrary extensions). A corpus file's name starts
 * with the outcome it must have: 0 no certificate, 1 rendered. The seed corpus in corpus/directory
 * replays in test_fuzz_replay. */
#include "fuzz.h"

#include <directory/directory_int.h>
#include <stdlib.h>
#include <string.h>

int fuzz_directory_check(const uint8_t *data, size_t size)
{
    /* A heap copy of exactly the input, so that any read past its end is caught. */
    uint8_t *copy = malloc(size ? size : 1);
    int rc;

    if (copy == NULL)
        abort();
    memcpy(copy, data, size);
    rc = directory__fuzz_one(copy, size);
    free(copy);
    return rc;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_directory_check(data, size) == 2)
        abort(); /* a bounded input can never make a page too large */
    return 0;
}
#endif
