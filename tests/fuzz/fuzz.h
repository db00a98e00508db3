/* SPDX-License-Identifier: Apache-2.0 */
/* Every fuzz target of pkiva as a plain function. The layout: target fuzz_NAME is tests/fuzz/
 * fuzz_NAME.c, its seed corpus tests/fuzz/corpus/NAME/. Each fuzz_NAME.c defines
 * LLVMFuzzerTestOneInput only when built as a libFuzzer target (PKIVA_FUZZ_MAIN), so
 * test_fuzz_replay links them all and replays every corpus through exactly the same code in the
 * normal build. */
#ifndef PKIVA_TESTS_FUZZ_H
#define PKIVA_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* HTTP framing (fuzz_http.c). fuzz_http_exchange sends data over a fresh TCP connection to the
 * in-process server (started on first use), half-closes, and returns the first resp_cap bytes of
 * what the server sent back before closing. Aborts if the server neither answers nor closes
 * within 10 s. fuzz_http_shutdown stops the server (for leak checks at the end of a replay). */
int fuzz_http_one(const uint8_t *data, size_t size);
size_t fuzz_http_exchange(const uint8_t *data, size_t size, char *resp, size_t resp_cap);
void fuzz_http_shutdown(void);

/* Admin API JSON bodies (fuzz_admin_json.c). The first byte picks the route ('0'..'4' = revoke,
 * unrevoke, status, certificates, crl/publish; any other byte modulo 5), the rest is the body.
 * fuzz_admin_check returns what admin__parse_for_fuzz returned: 0 accepted, 400 refused. */
int fuzz_admin_one(const uint8_t *data, size_t size);
int fuzz_admin_check(const uint8_t *data, size_t size);

/* The configuration parser (fuzz_config.c): cli_config_parse_string over the input as text.
 * fuzz_config_check returns its result and copies the error message into err. */
int fuzz_config_one(const uint8_t *data, size_t size);
int fuzz_config_check(const uint8_t *data, size_t size, char *err, size_t err_len);

/* The DER OCSP request parser (fuzz_ocsp_request.c), answering what it parses through OpenSSL
 * and the direct encoder (aborts if they differ): 1 a request to answer, 0 a request refused with
 * an OCSP error status, < 0 a parser error. */
int fuzz_ocsp_request_check(const uint8_t *data, size_t size);

/* The OCSP GET path (fuzz_ocsp_get.c): 1 decoded into a request to answer, 0 not decoded, -1
 * decoded into something the parser refuses. */
int fuzz_ocsp_get_check(const uint8_t *data, size_t size);

/* The TimeStampReq checker (fuzz_tsa_request.c): 1 accepted, 0 rejected, < 0 out of memory. */
int fuzz_tsa_request_check(const uint8_t *data, size_t size);

/* The public directory's decoders and renderers (fuzz_directory.c): directory__fuzz_one's result
 * (0 no certificate, 1 rendered, 2 page too large) on a heap copy of exactly the input. */
int fuzz_directory_check(const uint8_t *data, size_t size);

#endif
