/* SPDX-License-Identifier: Apache-2.0 */
/* TimeStampReq builder shared by the tsa tests: DER requests of every shape through OpenSSL's TS_REQ
 * API, the good ones and the ones the service must reject. */
#ifndef PKIVA_TESTS_TSA_REQ_BUILD_H
#define PKIVA_TESTS_TSA_REQ_BUILD_H

struct req_opts {
    int md_nid;
    int imprint_len;       /* -1: the hash's own */
    int version;           /* 0: 1 */
    const char *policy;    /* NULL: none */
    int nonce;             /* 1: the nonce 0x1122334455667788 */
    const char *nonce_hex; /* else this one (BN_hex2bn: "-7F", long ones), NULL: none */
    int cert_req;
    int ext;           /* 0 none, 1 non-critical, 2 critical */
    int param_integer; /* algorithm parameters: an INTEGER instead of NULL */
    int params_absent; /* algorithm parameters absent instead of NULL */
};

/* The DER of the request (*der OPENSSL_malloc'd); its length. Fails the test on error. */
int build_req(const struct req_opts *o, unsigned char **der);

#endif
