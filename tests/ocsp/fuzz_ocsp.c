/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer targets for the two decoders of untrusted OCSP input: the GET path (FUZZ_GET) and the
 * DER request parser (otherwise). Built only with PKIVA_FUZZ (clang); the seed corpus in corpus/
 * also replays as part of test_ocsp. */
#include <ocsp/ocsp.h>
#include <ocsp/ocsp_int.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef FUZZ_GET
    unsigned char der[OCSP_GET_DER_MAX];
    int n = ocsp_get_path_decode((const char *)data, size, der, sizeof(der));
    if (n > 0) {
        struct ocsp__parsed p;
        (void)ocsp__request_parse(der, (size_t)n, 10, &p); /* outcome is data; nothing to check */
        ocsp__parsed_cleanup(&p);
    }
#else
    struct ocsp__parsed p;
    (void)ocsp__request_parse(data, size, 10, &p); /* outcome is data; nothing to check */
    ocsp__parsed_cleanup(&p);
#endif
    return 0;
}
