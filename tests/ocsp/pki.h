/* SPDX-License-Identifier: Apache-2.0 */
/* A small PKI for the ocsp tests: certificates for a root, issuing CAs, a delegated OCSP responder
 * (id-kp-OCSPSigning + id-pkix-ocsp-nocheck) and end entities, signed through any DigestSign
 * context (software keys in unit tests, SoftHSM2 keys end to end), and OCSP request builders. */
#ifndef PKIVA_TESTS_OCSP_PKI_H
#define PKIVA_TESTS_OCSP_PKI_H

#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

enum tp_kind { TP_CA = 1, TP_RESPONDER, TP_EE };

/* issuer == NULL: self-signed. sign_ctx signs (the issuer's key, or key itself when self-signed).
 * Returns a new certificate or NULL. */
X509 *tp_cert(X509 *issuer, EVP_MD_CTX *sign_ctx, EVP_PKEY *pub, const char *cn, long serial,
              int kind, long not_after_days);
/* A software DigestSign context for key with SHA-256 (caller frees). */
EVP_MD_CTX *tp_soft_ctx(EVP_PKEY *key);

/* Request for the given serials (long values) of issuer, hash md (EVP_sha1() ...). nonce_len < 0:
 * no nonce; >= 0: a nonce extension with that many octets (0 gives an empty OCTET STRING). */
OCSP_REQUEST *tp_request(X509 *issuer, const EVP_MD *md, const long *serials, int n, int nonce_len);
/* DER of a request (OPENSSL_malloc'd). */
int tp_request_der(OCSP_REQUEST *req, unsigned char **der);

/* DER INTEGER content octets of a small serial (writes to out, returns length). */
size_t tp_serial_bytes(long serial, unsigned char *out);

#endif
