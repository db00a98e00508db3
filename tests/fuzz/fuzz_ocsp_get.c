/* SPDX-License-Identifier: Apache-2.0 */
/* The OCSP GET path decoder as a fuzz target: the base64 in the path decoded, and the DER request
 * it yields parsed. The seed corpus in corpus/ocsp_get replays in test_fuzz_replay. */
#include "fuzz.h"

#include <ocsp/ocsp.h>
#include <ocsp/ocsp_int.h>

int fuzz_ocsp_get_check(const uint8_t *data, size_t size)
{
    unsigned char der[OCSP_GET_DER_MAX];
    struct ocsp__parsed p;
    int n = ocsp_get_path_decode((const char *)data, size, der, sizeof(der));
    int rc;

    if (n <= 0)
        return 0;
    rc = ocsp__request_parse(der, (size_t)n, 10, &p);
    rc = rc == 0 && p.status == OCSP_RESPONSE_STATUS_SUCCESSFUL ? 1 : -1;
    ocsp__parsed_cleanup(&p);
    return rc;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_ocsp_get_check(data, size); /* every outcome is data */
    return 0;
}
#endif
