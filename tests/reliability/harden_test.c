/* SPDX-License-Identifier: Apache-2.0 */
/* Hardening from the outside review (issue 15, items 2 and 5 to 10; issue 21, item 4), each
 * against the real binary on a fresh data folder: a client's CertID parameters never reach the
 * shared OCSP cache; chunked trailers never act as headers; /metrics is authenticated like the
 * admin API; state-changing admin requests need a JSON Content-Type; keys are generated
 * sign-only and a broader one is warned about; `pkiva revoke --cert --issuer` checks the issuer;
 * refused admin requests are counted and logged sparingly; operator certificates need EKU
 * clientAuth and can be checked against a CRL; the CRL publication request's log line. */
#include "rel.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <openssl/bn.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <sys/socket.h>
#include <unistd.h>

static struct rel_server srv;

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(harden, .init = setup, .fini = teardown, .timeout = 180);

static void demo_serial(const char *pem_name, char *hex, size_t len)
{
    char out[256];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl x509 -in pki/%s -noout -serial | cut -d= -f2 | tr -d '\\n'",
                        pem_name),
                 0);
    snprintf(hex, len, "%s", out);
}

static const unsigned char *find_bytes(const unsigned char *hay, size_t hay_len, const void *needle,
                                       size_t len)
{
    for (size_t i = 0; len <= hay_len && i <= hay_len - len; i++)
        if (memcmp(hay + i, needle, len) == 0)
            return hay + i;
    return NULL;
}

/* ---- raw HTTP with binary bodies ----------------------------------------------------------- */

struct answer {
    int status;
    unsigned char buf[65536];
    size_t len;
    const unsigned char *body;
    size_t body_len;
};

/* Sends request on a fresh plain connection to 127.0.0.1:port and reads until the server closes
 * (the requests say Connection: close). */
static void exchange(int port, const void *request, size_t len, struct answer *a)
{
    struct sockaddr_in addr;
    struct timeval tv = {15, 0};
    size_t sent = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    memset(a, 0, sizeof(*a));
    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
    while (sent < len) {
        ssize_t w = send(fd, (const char *)request + sent, len - sent, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        sent += (size_t)w;
    }
    while (a->len < sizeof(a->buf) - 1) {
        ssize_t r = recv(fd, a->buf + a->len, sizeof(a->buf) - 1 - a->len, 0);
        if (r <= 0)
            break;
        a->len += (size_t)r;
    }
    close(fd);
    a->buf[a->len] = '\0';
    if (a->len > 12 && strncmp((const char *)a->buf, "HTTP/1.1 ", 9) == 0)
        a->status = atoi((const char *)a->buf + 9);
    a->body = find_bytes(a->buf, a->len, "\r\n\r\n", 4);
    if (a->body != NULL) {
        a->body += 4;
        a->body_len = a->len - (size_t)(a->body - a->buf);
    }
}

/* ---- OCSP requests ------------------------------------------------------------------------- */

static ASN1_INTEGER *serial_of(const char *hex)
{
    BIGNUM *bn = NULL;
    ASN1_INTEGER *ai;
    cr_assert(BN_hex2bn(&bn, hex) > 0);
    ai = BN_to_ASN1_INTEGER(bn, NULL);
    BN_free(bn);
    cr_assert_not_null(ai);
    return ai;
}

/* DER of one TLV at out; returns its length. */
static size_t der_put(unsigned char *out, unsigned char tag, const unsigned char *content,
                      size_t len)
{
    size_t h = 0;
    out[h++] = tag;
    if (len < 0x80) {
        out[h++] = (unsigned char)len;
    } else {
        out[h++] = 0x82;
        out[h++] = (unsigned char)(len >> 8);
        out[h++] = (unsigned char)len;
    }
    memmove(out + h, content, len);
    return h + len;
}

/* An OCSPRequest for serial (hex) under the issuing CA by SHA-256 whose hashAlgorithm
 * parameters are exactly params (params_len 0: absent), which OpenSSL's API cannot make. */
static size_t request_with_params(const char *hex, const unsigned char *params, size_t params_len,
                                  unsigned char *out, size_t cap)
{
    static const unsigned char oid_sha256[] = {0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                               0x65, 0x03, 0x04, 0x02, 0x01};
    ASN1_INTEGER *serial = serial_of(hex);
    OCSP_CERTID *id = OCSP_cert_id_new(EVP_sha256(), X509_get_subject_name(srv.issuer),
                                       X509_get0_pubkey_bitstr(srv.issuer), serial);
    ASN1_OCTET_STRING *nh = NULL, *kh = NULL;
    ASN1_OBJECT *md = NULL;
    ASN1_INTEGER *ai = NULL;
    unsigned char *buf = malloc(cap), *tmp = malloc(cap), *p;
    size_t n;
    int ilen;

    cr_assert(id != NULL && buf != NULL && tmp != NULL && params_len + 300 < cap);
    cr_assert_eq(OCSP_id_get0_info(&nh, &md, &kh, &ai, id), 1);
    memcpy(tmp, oid_sha256, sizeof(oid_sha256));
    if (params_len > 0) /* memcpy's source may not be NULL even for 0 bytes */
        memcpy(tmp + sizeof(oid_sha256), params, params_len);
    n = der_put(buf, 0x30, tmp, sizeof(oid_sha256) + params_len);
    n += der_put(buf + n, 0x04, ASN1_STRING_get0_data(nh), (size_t)ASN1_STRING_length(nh));
    n += der_put(buf + n, 0x04, ASN1_STRING_get0_data(kh), (size_t)ASN1_STRING_length(kh));
    p = buf + n;
    ilen = i2d_ASN1_INTEGER(ai, &p);
    cr_assert_gt(ilen, 0);
    n += (size_t)ilen;
    for (int level = 0; level < 5; level++) { /* CertID, Request, requestList, TBS, OCSPRequest */
        n = der_put(tmp, 0x30, buf, n);
        memcpy(buf, tmp, n);
    }
    memcpy(out, buf, n);
    free(buf);
    free(tmp);
    OCSP_CERTID_free(id);
    ASN1_INTEGER_free(serial);
    return n;
}

/* OpenSSL's own request (SHA-256, NULL parameters), as every ordinary client sends it. */
static size_t standard_request(const char *hex, unsigned char *out, size_t cap)
{
    OCSP_REQUEST *req = OCSP_REQUEST_new();
    ASN1_INTEGER *serial = serial_of(hex);
    OCSP_CERTID *id = OCSP_cert_id_new(EVP_sha256(), X509_get_subject_name(srv.issuer),
                                       X509_get0_pubkey_bitstr(srv.issuer), serial);
    unsigned char *der = NULL;
    int len;
    cr_assert(req != NULL && id != NULL && OCSP_request_add0_id(req, id) != NULL);
    len = i2d_OCSP_REQUEST(req, &der);
    cr_assert(len > 0 && (size_t)len <= cap);
    memcpy(out, der, (size_t)len);
    OPENSSL_free(der);
    OCSP_REQUEST_free(req);
    ASN1_INTEGER_free(serial);
    return (size_t)len;
}

/* POSTs der to the public listener; trailer (NULL: Content-Length, Content-Type
 * application/ocsp-request) sends it chunked, without Content-Type, with that trailer field. */
static void ocsp_post(const unsigned char *der, size_t len, const char *trailer, struct answer *a)
{
    unsigned char *req = malloc(len + 1024);
    int n;
    cr_assert_not_null(req);
    if (trailer == NULL) {
        n = snprintf((char *)req, 1024,
                     "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: "
                     "application/ocsp-request\r\nContent-Length: %zu\r\n\r\n",
                     len);
        memcpy(req + n, der, len);
        n += (int)len;
    } else {
        n = snprintf((char *)req, 1024,
                     "POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: "
                     "chunked\r\n\r\n%zx\r\n",
                     len);
        memcpy(req + n, der, len);
        n += (int)len;
        n += snprintf((char *)req + n, 512, "\r\n0\r\n%s\r\n\r\n", trailer);
    }
    exchange(srv.port, req, (size_t)n, a);
    free(req);
}

/* The OCSPResponse status of an answer (-1: none), and the serial's cert status when
 * successful (*cert_status, -1 otherwise). */
static int ocsp_status(const struct answer *a, const char *hex, int *cert_status)
{
    const unsigned char *p = a->body;
    OCSP_RESPONSE *rsp = p != NULL ? d2i_OCSP_RESPONSE(NULL, &p, (long)a->body_len) : NULL;
    OCSP_BASICRESP *bs = NULL;
    int status = -1;
    *cert_status = -1;
    if (rsp == NULL)
        return -1;
    status = OCSP_response_status(rsp);
    if (status == OCSP_RESPONSE_STATUS_SUCCESSFUL && (bs = OCSP_response_get1_basic(rsp)) != NULL) {
        ASN1_INTEGER *serial = serial_of(hex);
        OCSP_CERTID *id = OCSP_cert_id_new(EVP_sha256(), X509_get_subject_name(srv.issuer),
                                           X509_get0_pubkey_bitstr(srv.issuer), serial);
        if (OCSP_resp_find_status(bs, id, cert_status, NULL, NULL, NULL, NULL) != 1)
            *cert_status = -1;
        OCSP_CERTID_free(id);
        ASN1_INTEGER_free(serial);
    }
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(rsp);
    return status;
}

/* [issue 15.2] One POST with SHA-256 parameters of 4 KB of attacker text must not become the
 * shared cached response: it is malformedRequest, and the next ordinary SHA-256 client gets a
 * short response without that text. Absent parameters are still answered. */
Test(harden, ocsp_certid_parameters_cannot_poison_the_cache)
{
    static unsigned char junk[4 + 4096], der[8192];
    static struct answer a;
    char hex[80];
    size_t len;
    int cert_status;

    rel_start(&srv, 30);
    demo_serial("demo-good.pem", hex, sizeof(hex));
    junk[0] = 0x04; /* OCTET STRING, 4096 octets */
    junk[1] = 0x82;
    junk[2] = 0x10;
    junk[3] = 0x00;
    for (size_t i = 0; i < 4096; i++)
        junk[4 + i] = (unsigned char)"POISONED-CACHE-"[i % 15];
    len = request_with_params(hex, junk, sizeof(junk), der, sizeof(der));
    ocsp_post(der, len, NULL, &a);
    cr_assert_eq(a.status, 200, "%.200s", a.buf);
    cr_assert_eq(ocsp_status(&a, hex, &cert_status), OCSP_RESPONSE_STATUS_MALFORMEDREQUEST,
                 "parameters of 4 KB were answered (%zu octets)", a.body_len);
    cr_assert_null(find_bytes(a.body, a.body_len, "POISONED", 8));

    /* The next ordinary client, twice (the second from the cache). */
    for (int i = 0; i < 2; i++) {
        len = standard_request(hex, der, sizeof(der));
        ocsp_post(der, len, NULL, &a);
        cr_assert_eq(a.status, 200);
        cr_assert_eq(ocsp_status(&a, hex, &cert_status), OCSP_RESPONSE_STATUS_SUCCESSFUL);
        cr_assert_eq(cert_status, V_OCSP_CERTSTATUS_GOOD);
        cr_assert_null(find_bytes(a.body, a.body_len, "POISONED", 8));
        cr_assert_lt(a.body_len, 2048, "a %zu-octet response", a.body_len);
    }
    /* Absent parameters (RFC 5754's preferred form for SHA-2) are answered. */
    len = request_with_params(hex, NULL, 0, der, sizeof(der));
    ocsp_post(der, len, NULL, &a);
    cr_assert_eq(ocsp_status(&a, hex, &cert_status), OCSP_RESPONSE_STATUS_SUCCESSFUL);
    cr_assert_eq(cert_status, V_OCSP_CERTSTATUS_GOOD);
    cr_assert_eq(rel_stop(&srv), 0);
}

/* [issue 15.5] Fields in a chunked body's trailer are never headers: an Authorization there
 * does not authenticate an admin request, a Content-Type there does not change how the public
 * listener answers. */
Test(harden, chunked_trailers_never_act_as_headers)
{
    char hex[80], json[256], req[2048], body[4096];
    static unsigned char der[1024];
    static struct answer a;
    size_t len;
    int n, cert_status;

    rel_start(&srv, 30);
    demo_serial("demo-good.pem", hex, sizeof(hex));
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", hex);
    n = snprintf(req, sizeof(req),
                 "POST /admin/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: "
                 "application/json\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n"
                 "Authorization: Bearer %s\r\n\r\n",
                 strlen(json), json, srv.token);
    cr_assert_eq(rel_admin_raw(&srv, req, (size_t)n, body, sizeof(body)), 401,
                 "a trailer authenticated the request: %s", body);
    /* Control: the same request with the token in the header is served. */
    n = snprintf(req, sizeof(req),
                 "POST /admin/status HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: "
                 "application/json\r\nAuthorization: Bearer %s\r\nTransfer-Encoding: chunked\r\n"
                 "\r\n%zx\r\n%s\r\n0\r\n\r\n",
                 srv.token, strlen(json), json);
    cr_assert_eq(rel_admin_raw(&srv, req, (size_t)n, body, sizeof(body)), 200, "%s", body);

    /* An OCSP POST without Content-Type (tolerated) whose trailer says text/plain. */
    len = standard_request(hex, der, sizeof(der));
    ocsp_post(der, len, "Content-Type: text/plain", &a);
    cr_assert_eq(a.status, 200, "the trailer's Content-Type was obeyed: %.200s", a.buf);
    cr_assert_eq(ocsp_status(&a, hex, &cert_status), OCSP_RESPONSE_STATUS_SUCCESSFUL);
    cr_assert_eq(cert_status, V_OCSP_CERTSTATUS_GOOD);
    cr_assert_eq(rel_stop(&srv), 0);
}

/* An HTTPS request to the admin listener with curl: cert_opts ("" or --cert/--key), the token
 * or none, GET path (json NULL) or POST json. Returns the HTTP status; the body goes to out. */
static int curl_admin(const char *cert_opts, int with_token, const char *path, const char *json,
                      char *out, size_t out_len)
{
    char buf[16384] = "";
    char *nl;
    rel_sh(&srv, buf, sizeof(buf),
           "curl -s --max-time 10 --cacert admin/admin-ca.pem %s -w '\\n%%{http_code}' "
           "%s%s%s %s%s%s https://127.0.0.1:%d%s",
           cert_opts, with_token ? "-H 'Authorization: Bearer " : "", with_token ? srv.token : "",
           with_token ? "'" : "", json ? "-H 'Content-Type: application/json' --data-binary '" : "",
           json ? json : "", json ? "'" : "", srv.admin_port, path);
    nl = strrchr(buf, '\n');
    if (nl == NULL)
        return 0;
    *nl = '\0';
    snprintf(out, out_len, "%s", buf);
    return atoi(nl + 1);
}

static const char operator_cert[] = "--cert admin/operator.pem --key admin/operator.key";

/* [issue 15.6] /metrics is authenticated like the admin API: neither an anonymous client nor,
 * with require_client_cert = yes, the bearer token alone reads it; metrics_without_auth = yes
 * opens it on purpose. */
Test(harden, metrics_are_authenticated_like_the_admin_api)
{
    char body[16384];

    rel_start(&srv, 30);
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, "", body, sizeof(body)), 401, "%.200s", body);
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, NULL, body, sizeof(body)), 200);
    cr_assert_not_null(strstr(body, "pkiva_admin_unauthenticated_total 1\n"), "%s", body);
    cr_assert_eq(curl_admin(operator_cert, 0, "/metrics", NULL, body, sizeof(body)), 200);
    cr_assert_eq(rel_stop(&srv), 0);

    rel_conf_append(&srv, "[admin]\nrequire_client_cert = yes");
    rel_start(&srv, 30);
    cr_assert_eq(curl_admin("", 1, "/metrics", NULL, body, sizeof(body)), 401, "%s", body);
    cr_assert_eq(curl_admin("", 0, "/metrics", NULL, body, sizeof(body)), 401, "%s", body);
    cr_assert_eq(curl_admin(operator_cert, 0, "/metrics", NULL, body, sizeof(body)), 200);
    cr_assert_not_null(strstr(body, "pkiva_http_requests_total"), "%s", body);
    cr_assert_eq(rel_stop(&srv), 0);

    rel_conf_append(&srv, "[admin]\nrequire_client_cert = no\nmetrics_without_auth = yes");
    rel_start(&srv, 30);
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, "", body, sizeof(body)), 200);
    cr_assert_eq(rel_stop(&srv), 0);
}

/* A POST to the admin listener with the token and exactly these extra header lines. */
static int admin_post(const char *path, const char *header_lines, const char *json, char *body,
                      size_t body_cap)
{
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer "
                     "%s\r\n%sContent-Length: %zu\r\n\r\n%s",
                     path, srv.token, header_lines, strlen(json), json);
    return rel_admin_raw(&srv, req, (size_t)n, body, body_cap);
}

/* [issue 15.7] Every state-changing admin request needs Content-Type: application/json (415
 * otherwise), so a browser cannot be made to send one cross-origin without a preflight. */
Test(harden, state_changing_admin_requests_need_a_json_content_type)
{
    static const char *const refused[] = {"Content-Type: text/plain\r\n",
                                          "",
                                          "Content-Type: application/x-www-form-urlencoded\r\n",
                                          "Content-Type: multipart/form-data; boundary=x\r\n",
                                          "Content-Type: application/jsonp\r\n",
                                          "Content-Type: text/plain\r\nContent-Type: "
                                          "application/json\r\n"};
    char hex[80], json[256], body[4096];

    rel_start(&srv, 30);
    demo_serial("demo-good.pem", hex, sizeof(hex));
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", hex);
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        cr_expect_eq(admin_post("/admin/crl/publish", refused[i], "{}", body, sizeof(body)), 415,
                     "crl/publish with '%s': %s", refused[i], body);
        cr_expect_eq(admin_post("/admin/revoke", refused[i], json, body, sizeof(body)), 415,
                     "revoke with '%s': %s", refused[i], body);
    }
    cr_assert_eq(rel_ocsp(&srv, hex, 0, NULL), 0, "a refused revocation took effect");
    /* Parameters and the type's case do not matter. */
    cr_assert_eq(admin_post("/admin/crl/publish",
                            "Content-Type: application/json; charset=utf-8\r\n", "{}", body,
                            sizeof(body)),
                 202, "%s", body);
    cr_assert_eq(admin_post("/admin/crl/publish", "Content-Type: Application/JSON\r\n", "{}", body,
                            sizeof(body)),
                 202, "%s", body);
    cr_assert_eq(rel_stop(&srv), 0);
}

/* [issue 21.4] POST /admin/crl/publish naming an issuer: the name is used after the JSON body
 * is freed no more (the ASan build of this test caught the use after free); the log line names
 * it correctly and the server stops cleanly. */
Test(harden, crl_publish_for_one_issuer)
{
    char body[4096], out[4096];

    rel_start(&srv, 30);
    cr_assert_eq(
        rel_admin(&srv, "/admin/crl/publish", "{\"issuer\":\"demo-ca\"}", NULL, body, sizeof(body)),
        202, "%s", body);
    cr_assert_not_null(strstr(body, "\"issuer\":\"demo-ca\""), "%s", body);
    cr_assert_eq(rel_admin(&srv, "/admin/crl/publish",
                           "{\"issuer\":\"an-issuer-name-that-does-not-exist-anywhere\"}", NULL,
                           body, sizeof(body)),
                 404, "%s", body);
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "grep -c 'CRL publication of demo-ca requested through the admin API' %s",
                        srv.log),
                 0, "no correct log line: %s", out);
}

/* [issue 15.9] `pkiva revoke --cert F --issuer N` checks that N issued F: a forged certificate
 * with a real serial and the issuer's name, but not its signature, changes nothing; neither does
 * a real certificate named under another issuer. */
Test(harden, revoke_by_certificate_checks_the_named_issuer)
{
    char hex[80], out[8192], path[400];
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *forged = X509_new();
    ASN1_INTEGER *serial;
    FILE *f;

    demo_serial("demo-good.pem", hex, sizeof(hex));
    serial = serial_of(hex);
    cr_assert(key != NULL && forged != NULL);
    cr_assert(X509_set_version(forged, X509_VERSION_3) && X509_set_serialNumber(forged, serial) &&
              X509_set_issuer_name(forged, X509_get_subject_name(srv.issuer)) &&
              X509_set_subject_name(forged, X509_get_subject_name(srv.issuer)) &&
              X509_set_pubkey(forged, key) &&
              X509_gmtime_adj(X509_getm_notBefore(forged), 0) != NULL &&
              X509_gmtime_adj(X509_getm_notAfter(forged), 86400) != NULL &&
              X509_sign(forged, key, EVP_sha256()) > 0);
    snprintf(path, sizeof(path), "%s/t-forged.pem", srv.data);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(PEM_write_X509(f, forged), 1);
    fclose(f);
    X509_free(forged);
    EVP_PKEY_free(key);
    ASN1_INTEGER_free(serial);

    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --cert t-forged.pem --issuer demo-ca "
                                   "--reason keyCompromise 2>&1",
                         srv.data),
                  0, "a forged certificate revoked demo-good: %s", out);
    cr_assert_not_null(strstr(out, "not issued by 'demo-ca'"), "%s", out);
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --cert pki/demo-good.pem --issuer root 2>&1",
                         srv.data),
                  0, "%s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " status --data %s --issuer demo-ca --serial %s 2>&1", srv.data,
                        hex),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "status: good"), "%s", out);
    /* The real certificate under its real issuer: revoked. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --cert pki/demo-good.pem --issuer demo-ca "
                                  "--reason keyCompromise 2>&1",
                        srv.data),
                 0, "%s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " status --data %s --cert pki/demo-good.pem 2>&1", srv.data),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "status: revoked"), "%s", out);
}

/* [issue 15.9] Refused admin requests cannot flood the log: at most one WARN line per second,
 * saying how many were suppressed; every one is counted in /metrics. (The bound is checked
 * against the time the requests really took, never against a fixed duration.) */
Test(harden, refused_admin_requests_are_counted_and_logged_sparingly)
{
    static const char *const paths[] = {"/admin/status", "/admin/revoke", "/admin/crl/publish",
                                        "/metrics"};
    const int total = 120;
    char body[16384], out[256], want[96];
    long long started, elapsed_ms;
    long lines;

    rel_start(&srv, 30);
    started = rel_now_ms();
    for (int i = 0; i < total; i++) {
        const char *path = paths[i % 4];
        cr_expect_eq(rel_admin(&srv, path, i % 4 == 3 ? NULL : "{}", "", body, sizeof(body)), 401,
                     "%s: %s", path, body);
    }
    elapsed_ms = rel_now_ms() - started;
    cr_assert_eq(rel_admin(&srv, "/metrics", NULL, NULL, body, sizeof(body)), 200);
    snprintf(want, sizeof(want), "pkiva_admin_unauthenticated_total %d\n", total);
    cr_assert_not_null(strstr(body, want), "%s", body);
    cr_assert_eq(rel_stop(&srv), 0);
    rel_sh(&srv, out, sizeof(out), "grep -c 'unauthenticated request from' %s", srv.log);
    lines = strtol(out, NULL, 10);
    cr_assert_geq(lines, 1, "refusals not logged at all");
    cr_assert_leq(lines, elapsed_ms / 1000 + 2, "%ld lines for %d refusals in %lld ms", lines,
                  total, elapsed_ms);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep -c 'more suppressed' %s", srv.log), 0,
                 "no line says how many were suppressed");
}

/* [issue 15.10] A client certificate authenticates only with EKU clientAuth: one without any
 * EKU, or with serverAuth alone, proves nothing even from a trusted CA. With [admin]
 * client_crl, a revoked operator certificate is refused too. */
Test(harden, operator_certificates_need_client_auth_and_can_be_revoked)
{
    char hex[80], json[256], out[8192];

    demo_serial("demo-good.pem", hex, sizeof(hex));
    snprintf(json, sizeof(json), "{\"issuer\":\"demo-ca\",\"serial\":\"%s\"}", hex);
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out),
               "printf 'extendedKeyUsage=clientAuth\\n' > t-client.ext && "
               "printf 'extendedKeyUsage=serverAuth\\n' > t-server.ext && "
               "printf 'basicConstraints=CA:FALSE\\n' > t-none.ext && "
               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
               "-keyout t-ca.key -out t-ca.pem -subj '/CN=test ops CA' -days 30 && "
               "for c in op noeku server revoked; do "
               "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout t-$c.key "
               "-out t-$c.csr -subj \"/O=ops/CN=operator $c\" || exit 1; done && "
               "openssl x509 -req -in t-op.csr -CA t-ca.pem -CAkey t-ca.key -days 30 "
               "-extfile t-client.ext -out t-op.pem && "
               "openssl x509 -req -in t-revoked.csr -CA t-ca.pem -CAkey t-ca.key -days 30 "
               "-extfile t-client.ext -out t-revoked.pem && "
               "openssl x509 -req -in t-noeku.csr -CA t-ca.pem -CAkey t-ca.key -days 30 "
               "-extfile t-none.ext -out t-noeku.pem && "
               "openssl x509 -req -in t-server.csr -CA t-ca.pem -CAkey t-ca.key -days 30 "
               "-extfile t-server.ext -out t-server.pem && "
               "cat admin/admin-ca.pem t-ca.pem > t-clients.pem 2>&1"),
        0, "%s", out);
    rel_conf_append(&srv, "[admin]\nclient_ca = t-clients.pem");
    rel_start(&srv, 30);
    cr_assert_eq(
        curl_admin("--cert t-op.pem --key t-op.key", 0, "/admin/status", json, out, sizeof(out)),
        200, "%s", out);
    cr_assert_eq(curl_admin(operator_cert, 0, "/admin/status", json, out, sizeof(out)), 200, "%s",
                 out);
    cr_assert_eq(curl_admin("--cert t-noeku.pem --key t-noeku.key", 0, "/admin/status", json, out,
                            sizeof(out)),
                 401, "a certificate without EKU authenticated: %s", out);
    cr_assert_eq(curl_admin("--cert t-server.pem --key t-server.key", 0, "/admin/status", json, out,
                            sizeof(out)),
                 401, "a serverAuth certificate authenticated: %s", out);
    cr_assert_eq(rel_stop(&srv), 0);

    /* The test CA revokes one certificate and publishes a CRL; the server checks it. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "printf '[ca]\\ndefault_ca = d\\n[d]\\ndatabase = t-index.txt\\n"
                        "crlnumber = t-crlnumber\\ndefault_md = sha256\\ndefault_crl_days = 30\\n'"
                        " > t-ca.cnf && : > t-index.txt && echo 01 > t-crlnumber && "
                        "openssl ca -batch -config t-ca.cnf -keyfile t-ca.key -cert t-ca.pem "
                        "-revoke t-revoked.pem && "
                        "openssl ca -batch -config t-ca.cnf -keyfile t-ca.key -cert t-ca.pem "
                        "-gencrl -out t-ca.crl 2>&1"),
                 0, "%s", out);
    rel_conf_append(&srv, "[admin]\nclient_ca = t-ca.pem\nclient_crl = t-ca.crl");
    rel_start(&srv, 30);
    cr_assert_eq(
        curl_admin("--cert t-op.pem --key t-op.key", 0, "/admin/status", json, out, sizeof(out)),
        200, "%s", out);
    cr_assert_eq(curl_admin("--cert t-revoked.pem --key t-revoked.key", 0, "/admin/status", json,
                            out, sizeof(out)),
                 401, "a revoked certificate authenticated: %s", out);
    cr_assert_eq(rel_stop(&srv), 0);
    /* A CRL file that cannot be read stops the start with an error naming it. */
    rel_conf_append(&srv, "[admin]\nclient_crl = t-missing.crl");
    cr_assert_neq(rel_run_to_exit(&srv, 30), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep -c 't-missing.crl' %s", srv.log), 0);
}

/* Sets CKA_DECRYPT true on the private key labelled label, in this process, as an older pkiva
 * (or another tool) would have left it. */
static void allow_decrypt(const char *label)
{
    char conf[400], pin[64] = "", path[400];
    void *lib;
    CK_C_GetFunctionList get_list = NULL;
    CK_FUNCTION_LIST_PTR fl = NULL;
    CK_SLOT_ID slots[16];
    CK_ULONG n_slots = 16, found = 0;
    CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_LABEL, (void *)label, strlen(label)}};
    CK_OBJECT_HANDLE obj;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE set = {CKA_DECRYPT, &yes, sizeof(yes)};
    FILE *f;

    snprintf(conf, sizeof(conf), "%s/hsm/softhsm2.conf", srv.data);
    setenv("SOFTHSM2_CONF", conf, 1);
    snprintf(path, sizeof(path), "%s/hsm/user.pin", srv.data);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cr_assert_not_null(fgets(pin, sizeof(pin), f));
    fclose(f);
    pin[strcspn(pin, "\r\n")] = '\0';
    lib = dlopen(TS_SOFTHSM_MODULE, RTLD_NOW);
    cr_assert_not_null(lib);
    *(void **)(&get_list) = dlsym(lib, "C_GetFunctionList");
    cr_assert(get_list != NULL && get_list(&fl) == CKR_OK);
    cr_assert_eq(fl->C_Initialize(NULL), CKR_OK);
    cr_assert_eq(fl->C_GetSlotList(CK_TRUE, slots, &n_slots), CKR_OK);
    cr_assert_geq(n_slots, 1);
    cr_assert_eq(fl->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
                 CKR_OK);
    cr_assert_eq(fl->C_Login(s, CKU_USER, (unsigned char *)pin, strlen(pin)), CKR_OK);
    cr_assert_eq(fl->C_FindObjectsInit(s, find, 2), CKR_OK);
    cr_assert_eq(fl->C_FindObjects(s, &obj, 1, &found), CKR_OK);
    cr_assert_eq(fl->C_FindObjectsFinal(s), CKR_OK);
    cr_assert_eq(found, 1);
    cr_assert_eq(fl->C_SetAttributeValue(s, obj, &set, 1), CKR_OK);
    (void)fl->C_Logout(s);
    (void)fl->C_CloseSession(s);
    (void)fl->C_Finalize(NULL);
    (void)dlclose(lib);
}

/* [issue 15.8] The keys pkiva generates sign and do nothing else (pkcs11-tool, in another
 * process, sees "sign" alone); a configured key that also allows decrypt is warned about at
 * start, by name. */
Test(harden, generated_keys_sign_only_and_a_broader_key_is_warned_about)
{
    char out[16384];

    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "pkcs11-tool --module " TS_SOFTHSM_MODULE " --token-label pkiva --login "
                        "--pin \"$(cat hsm/user.pin)\" --list-objects --type privkey 2>&1"),
                 0, "%s", out);
    cr_assert_not_null(strstr(out, "Usage:"), "%s", out);
    cr_assert_null(strstr(out, "decrypt"), "a generated key allows decrypt:\n%s", out);
    cr_assert_null(strstr(out, "unwrap"), "a generated key allows unwrap:\n%s", out);
    cr_assert_null(strstr(out, "derive"), "a generated key allows derive:\n%s", out);
    rel_start(&srv, 30);
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_neq(rel_sh(&srv, out, sizeof(out), "grep 'besides signing' %s", srv.log), 0,
                  "warned about a sign-only key: %s", out);

    allow_decrypt("tsa");
    rel_start(&srv, 30);
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep 'besides signing' %s", srv.log), 0,
                 "no warning about a key that decrypts");
    cr_assert_not_null(strstr(out, "object=tsa"), "%s", out);
    cr_assert_not_null(strstr(out, "allows decrypt besides signing"), "%s", out);
    cr_assert_null(strstr(out, "object=issuing-ca"), "%s", out);
}
