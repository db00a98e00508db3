/* SPDX-License-Identifier: Apache-2.0 */
/* The TimeStampReq checker as a fuzz target, with a unit that accepts two policies and, when the
 * input's first byte is odd, weak hashes. The seed corpus in corpus/tsa_request replays in
 * test_fuzz_replay. */
#include "fuzz.h"

#include <openssl/objects.h>
#include <tsa/tsa_int.h>

int fuzz_tsa_request_check(const uint8_t *data, size_t size)
{
    static ASN1_OBJECT *policy, *accepted;
    struct tsa__rules rules = {0};
    struct tsa__query q;
    int rc;

    if (policy == NULL) {
        policy = OBJ_txt2obj("1.3.6.1.4.1.99999.1.1", 1);
        accepted = OBJ_txt2obj("1.3.6.1.4.1.99999.1.2", 1);
    }
    rules.policy = policy;
    rules.accepted[0] = accepted;
    rules.n_accepted = 1;
    rules.allow_weak_hashes = size > 0 && (data[0] & 1);
    rc = tsa__query_check(&rules, data, size, &q);
    return rc != 0 ? rc : q.reject < 0;
}

#ifdef PKIVA_FUZZ_MAIN
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)fuzz_tsa_request_check(data, size); /* every outcome is data */
    return 0;
}
#endif
