/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target for the decoder of untrusted TSA input: the TimeStampReq checker. Built only with
 * PKIVA_FUZZ (clang); the seed corpus in corpus/ also replays as part of test_tsa. */
#include <openssl/objects.h>
#include <stddef.h>
#include <stdint.h>
#include <tsa/tsa_int.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ASN1_OBJECT *policy, *accepted;
    struct tsa__rules rules = {0};
    struct tsa__query q;

    if (policy == NULL) {
        policy = OBJ_txt2obj("1.3.6.1.4.1.99999.1.1", 1);
        accepted = OBJ_txt2obj("1.3.6.1.4.1.99999.1.2", 1);
    }
    rules.policy = policy;
    rules.accepted[0] = accepted;
    rules.n_accepted = 1;
    rules.allow_weak_hashes = size > 0 && (data[0] & 1);
    (void)tsa__query_check(&rules, data, size, &q); /* the outcome is data; nothing to check */
    return 0;
}
