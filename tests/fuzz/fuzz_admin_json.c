/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the admin API's JSON bodies: jansson decoding with duplicate keys refused,
 * then the field checks of each route (issuer, serial, reason names, times, request ids, PEM
 * certificates), through admin__parse_for_fuzz, the same code the routes run before any
 * store work. No server, no store. The seed corpus in corpus/admin_json replays in test_fuzz_replay. */
#include "fuzz.h"

#include <admin/admin_int.h>
#include <stdlib.h>
#include <string.h>

static const char *const routes[] = {"revoke", "unrevoke", "status", "certificates", "crl/publish"};

int fuzz_admin_check(const uint8_t *data, size_t size)
{
    unsigned pick;
    unsigned char *body = NULL;
    int rc;

    if (size == 0)
        return 400;
    pick = data[0] >= '0' && data[0] <= '4' ? (unsigned)(data[0] - '0') : data[0] % 5u;
    /* A heap copy of exactly the body, so that any read past its end is caught. */
    body = malloc(size - 1 > 0 ? size - 1 : 1);
    if (body == NULL)
        abort();
    memcpy(body, data + 1, size - 1);
    rc = admin__parse_for_fuzz(routes[pick], body, size - 1);
    free(body);
    if (rc != 0 && rc != 400 && rc != 503)
        abort(); /* every route above is known; 503 only when memory runs out */
    return rc;
}

int fuzz_admin_one(const uint8_t *data, size_t size)
{
    (void)fuzz_admin_check(data, size); /* both outcomes are data */
    return 0;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_admin_one(data, size);
}
#endif
