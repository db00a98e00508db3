/* SPDX-License-Identifier: Apache-2.0 */
/* Interoperability with independent relying parties: the JDK's PKIX validator with
 * PKIXRevocationChecker (OCSP only, CRLs only, and a revocation made by another process), NSS's
 * vfychain (Firefox's certificate library, OCSP and CRLs) and Debian's python3-cryptography (OCSP,
 * CRL and time stamp parsed and their signatures verified) accept pkiva's answers for the
 * embedded demo PKI and reach exactly the expected verdicts. Each test starts the real binary on
 * a fresh data folder made with the test's own listener, so the certificates' AIA and CRL
 * distribution point URLs name the server under test: the clients find it the way they would
 * in the field, with no responder or CRL override. */
#include "rel.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <unistd.h>

#define INTEROP_SRC PKIVA_SOURCE_DIR "/tests/interop"
/* Debian's interpreter and its python3-cryptography, not whatever python3 comes first in PATH;
 * -I ignores PYTHON* variables and the user's site-packages. */
#define INTEROP_PYTHON "/usr/bin/python3 -I"
/* Short-lived JVMs: a small collector and the quick compiler start faster on 2 cores. */
#define INTEROP_JVM_OPTS "-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
#define INTEROP_LEAVES "pki/demo-good.pem pki/demo-revoked.pem pki/demo-hold.pem"

static struct rel_server srv;

/* rel_setup (whose first run is told the listeners, so that the demo certificates carry
 * http://127.0.0.1:PORT/ in AIA and CRL DP), checked; then serve and wait until /readyz is 200. */
static void setup(void)
{
    char cmd[1024], out[8192];
    long long t0;
    rel_setup(&srv);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl x509 -in pki/demo-good.pem -noout -ext "
                        "authorityInfoAccess,crlDistributionPoints"),
                 0, "%s", out);
    snprintf(cmd, sizeof(cmd), "http://127.0.0.1:%d/crl/demo-ca.crl", srv.port);
    cr_assert_not_null(strstr(out, cmd), "demo certificate URLs do not name the test port: %s",
                       out);
    (void)rel_start(&srv, 30); /* fails the test itself if the server does not come up */
    t0 = rel_now_ms();
    while (rel_get(srv.port, "/readyz", NULL, 0, 1000) != 200) {
        cr_assert_lt(rel_now_ms() - t0, 30000, "/readyz not 200 within 30 s");
        rel_sleep_ms(50);
    }
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(interop, .init = setup, .fini = teardown, .timeout = 120);

/* Whether text holds line as a whole line. */
static int has_line(const char *text, const char *line)
{
    size_t len = strlen(line);
    for (const char *p = strstr(text, line); p != NULL; p = strstr(p + 1, line))
        if ((p == text || p[-1] == '\n') && (p[len] == '\n' || p[len] == '\0'))
            return 1;
    return 0;
}

/* Every line of the NULL-terminated list is a whole line of out (the tool's verdicts). */
static void assert_lines(const char *what, const char *out, const char *const *lines)
{
    for (; *lines != NULL; lines++)
        cr_assert(has_line(out, *lines), "%s: no line \"%s\" in:\n%s", what, *lines, out);
}

static void need_tool(const char *tool, const char *package)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null", tool);
    cr_assert_eq(ts_run(cmd, NULL, 0), 0, "%s not found: install %s (scripts/setup.sh)", tool,
                 package);
}

/* Compiles PkixCheck.java into DIR/java. */
static void java_compile(void)
{
    char out[8192];
    need_tool("javac", "openjdk-17-jdk-headless");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "javac -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -d %s/java "
                        "%s/PkixCheck.java 2>&1",
                        srv.dir, INTEROP_SRC),
                 0, "javac: %s", out);
}

/* Runs PkixCheck MODE on the leaves (relative to the data folder); its output goes into out. */
static void java_check(const char *jvm_opts, const char *mode, const char *leaves, char *out,
                       size_t len)
{
    cr_assert_eq(rel_sh(&srv, out, len,
                        "java " INTEROP_JVM_OPTS " %s -cp %s/java PkixCheck %s pki/root-ca.pem "
                        "pki/issuing-ca.pem %s 2>&1",
                        jvm_opts, srv.dir, mode, leaves),
                 0, "PkixCheck %s: %s", mode, out);
}

static void assert_java_verdicts(const char *what, const char *out)
{
    cr_assert(has_line(out, "pki/demo-good.pem VALID"), "%s: good not VALID:\n%s", what, out);
    cr_assert(has_line(out, "pki/demo-revoked.pem REVOKED KEY_COMPROMISE index=0"),
              "%s: revoked not REVOKED KEY_COMPROMISE:\n%s", what, out);
    cr_assert(has_line(out, "pki/demo-hold.pem REVOKED CERTIFICATE_HOLD index=0"),
              "%s: hold not REVOKED CERTIFICATE_HOLD:\n%s", what, out);
}

/* JDK PKIX, OCSP only (NO_FALLBACK) for the leaf and the issuing CA, from the AIA URL: the
 * pre-signed answers (the JDK sends no nonce by default, and asks by GET), then with a nonce
 * (live-signed answers). */
Test(interop, java_pkix_ocsp)
{
    char out[8192];
    java_compile();
    java_check("", "ocsp", INTEROP_LEAVES, out, sizeof(out));
    assert_java_verdicts("OCSP", out);
    java_check("-Djdk.security.certpath.ocspNonce=true", "ocsp", INTEROP_LEAVES, out, sizeof(out));
    assert_java_verdicts("OCSP with nonce", out);
}

/* JDK PKIX, CRLs only (PREFER_CRLS + NO_FALLBACK, com.sun.security.enableCRLDP): the root's CRL
 * for the issuing CA and the issuing CA's CRL for the leaf, both fetched from the certificates'
 * CRL distribution points. */
Test(interop, java_pkix_crl)
{
    char out[8192];
    java_compile();
    java_check("", "crl", INTEROP_LEAVES, out, sizeof(out));
    assert_java_verdicts("CRL", out);
}

/* A revocation by `pkiva revoke` in another process reaches the JDK's OCSP check within seconds
 * (the README promises about a second; the bound is generous for a loaded 2-core machine). */
Test(interop, java_sees_revocation_from_another_process)
{
    char out[8192];
    long long t0, waited;
    int revoked = 0;
    java_compile();
    java_check("", "ocsp", "pki/demo-good.pem", out, sizeof(out));
    cr_assert(has_line(out, "pki/demo-good.pem VALID"), "before: %s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --cert pki/demo-good.pem "
                                  "--reason keyCompromise 2>&1",
                        srv.data),
                 0, "pkiva revoke: %s", out);
    t0 = rel_now_ms();
    while (!revoked && rel_now_ms() - t0 < 20000) {
        java_check("", "ocsp", "pki/demo-good.pem", out, sizeof(out));
        revoked = has_line(out, "pki/demo-good.pem REVOKED KEY_COMPROMISE index=0");
        if (!revoked) {
            cr_assert(has_line(out, "pki/demo-good.pem VALID"), "unexpected verdict: %s", out);
            rel_sleep_ms(200);
        }
    }
    waited = rel_now_ms() - t0;
    cr_assert(revoked, "JDK OCSP still says %s %lld ms after pkiva revoke returned", out, waited);
    cr_log_info("JDK OCSP saw the revocation %lld ms after pkiva revoke returned", waited);
}

/* Runs vfychain on leaf + the issuing CA against the NSS database DIR/nss, which trusts only the
 * demo root; revocation options as given. Returns vfychain's exit status. */
static int nss_vfychain(const char *revocation, const char *leaf, char *out, size_t len)
{
    return rel_sh(&srv, out, len,
                  "vfychain -d sql:%s/nss -pp -u 0 %s -a pki/%s -a pki/issuing-ca.pem 2>&1",
                  srv.dir, revocation, leaf);
}

/* NSS with one revocation method (ocsp or crl) for the leaf and the issuing CA, the other one
 * off. With failIfNoInfo, a status that cannot be found fails the chain, but libpkix reports that
 * as SEC_ERROR_REVOKED_CERTIFICATE (-8180) too; without it, a missing status passes. So the good
 * leaf must pass with failIfNoInfo (a status was found and is good), and the revoked and held
 * leaves must fail with -8180 without it (only a revoked status can fail them). NSS reports
 * certificateHold as revoked; it shows no reason. */
static void assert_nss_verdicts(const char *method)
{
    static const char *const revoked[] = {"demo-revoked.pem", "demo-hold.pem"};
    const char *other = strcmp(method, "ocsp") == 0 ? "crl" : "ocsp";
    char strict[256], lenient[256], out[8192];
    int rc;
    snprintf(strict, sizeof(strict),
             "-g leaf -m %s -s failIfNoInfo -m %s -s doNotUse "
             "-g chain -m %s -s failIfNoInfo -m %s -s doNotUse",
             method, other, method, other);
    snprintf(lenient, sizeof(lenient),
             "-g leaf -m %s -m %s -s doNotUse -g chain -m %s -m %s -s doNotUse", method, other,
             method, other);
    rc = nss_vfychain(strict, "demo-good.pem", out, sizeof(out));
    cr_assert(rc == 0 && strstr(out, "Chain is good!") != NULL, "%s: good rejected (%d):\n%s",
              method, rc, out);
    for (size_t i = 0; i < sizeof(revoked) / sizeof(revoked[0]); i++) {
        rc = nss_vfychain(lenient, revoked[i], out, sizeof(out));
        cr_assert(rc != 0 && strstr(out, "Chain is bad!") != NULL &&
                      strstr(out, "ERROR -8180: Peer's Certificate has been revoked.") != NULL,
                  "%s: %s not SEC_ERROR_REVOKED_CERTIFICATE (%d):\n%s", method, revoked[i], rc,
                  out);
    }
}

/* NSS (vfychain 3.87, libpkix: -pp), usage SSL client (the demo leaves carry EKU clientAuth),
 * the demo root the only trust anchor (trust CT: CA for client certificates). OCSP from the AIA
 * URLs, then CRLs from the distribution points. */
Test(interop, nss_vfychain_ocsp_and_crl)
{
    char out[8192];
    need_tool("vfychain", "libnss3-tools");
    need_tool("certutil", "libnss3-tools");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "mkdir %s/nss && certutil -N -d sql:%s/nss --empty-password 2>&1 && "
                        "certutil -A -d sql:%s/nss -n pkiva-demo-root -t CT,C,C "
                        "-i pki/root-ca.pem 2>&1",
                        srv.dir, srv.dir, srv.dir),
                 0, "certutil: %s", out);
    assert_nss_verdicts("ocsp");
    assert_nss_verdicts("crl");
}

/* python3-cryptography 38 (crypto_check.py): OCSP by POST with SHA-256 CertIDs (status, CertID,
 * responder byKey, certs, signature with the delegated responder's key, validity window), the
 * issuing CA's CRL (signature, issuer, AKI, reasons) and a time stamp for an `openssl ts -query`
 * (granted, id-signedData holding id-ct-TSTInfo, imprint, nonce, ESSCertIDv2, CMS signature). */
Test(interop, python_cryptography_ocsp_crl_tsa)
{
    char out[16384];
    int rc;
    cr_assert_eq(ts_run(INTEROP_PYTHON " -c 'import cryptography.x509.ocsp'", out, sizeof(out)), 0,
                 "Debian's python3 cannot import cryptography: install python3-cryptography "
                 "(scripts/setup.sh): %s",
                 out);
    rc = rel_sh(&srv, out, sizeof(out),
                INTEROP_PYTHON " %s/crypto_check.py http://127.0.0.1:%d pki %s ocsp crl tsa 2>&1",
                INTEROP_SRC, srv.port, srv.dir);
    cr_assert_eq(rc, 0, "crypto_check.py failed (%d):\n%s", rc, out);
    static const char *const want[] = {"ocsp demo-good.pem GOOD",
                                       "ocsp demo-revoked.pem REVOKED key_compromise",
                                       "ocsp demo-hold.pem REVOKED certificate_hold",
                                       "crl demo-good.pem absent",
                                       "crl demo-revoked.pem key_compromise",
                                       "crl demo-hold.pem certificate_hold",
                                       "tsa granted signedData tstInfo sha256 signature-valid",
                                       NULL};
    assert_lines("crypto_check.py", out, want);
}

/* OCSP stapling through real TLS servers (staple_check.sh): a serverAuth certificate issued by
 * the demo CA's key on the token and registered with `pkiva import`; nginx (ssl_stapling_verify)
 * and `openssl s_server -status` fetch pkiva's answer from the AIA URL and staple it, which
 * `openssl s_client -status` and `gnutls-cli` verify; GnuTLS's ocsptool asks pkiva directly;
 * after `pkiva revoke`, s_server's next staple is revoked and GnuTLS refuses the chain, and nginx
 * (restarted) sees revoked and staples nothing, so gnutls-cli --ocsp asks pkiva and refuses. */
Test(interop, tls_servers_staple_pkivas_answers)
{
    char out[16384];
    int rc;
    need_tool("nginx", "nginx-light");
    need_tool("gnutls-cli", "gnutls-bin");
    rc = rel_sh(&srv, out, sizeof(out), "bash %s/staple_check.sh %s %s %s/staple %d %d 2>&1",
                INTEROP_SRC, srv.data, REL_PKIVA, srv.dir, ts_free_port(), ts_free_port());
    cr_assert_eq(rc, 0, "staple_check.sh failed (%d):\n%s", rc, out);
    static const char *const want[] = {"registered good",
                                       "ocsptool good verified",
                                       "nginx staple good",
                                       "gnutls-cli nginx trusted",
                                       "s_server staple good",
                                       "s_server staple revoked keyCompromise",
                                       "gnutls-cli s_server refused revoked",
                                       "nginx saw revoked and staples nothing",
                                       "gnutls-cli nginx refused revoked",
                                       NULL};
    assert_lines("staple_check.sh", out, want);
}

/* Bouncy Castle 1.72 (BcCheck.java), the library behind most PDF and document signers' time
 * stamps (PDFBox, iText, the EU's DSS) and many Java OCSP clients: OCSP requests it builds (SHA-1
 * CertID with NULL parameters; SHA-256 CertID without, and an RFC 8954 nonce) answered with a
 * signature, responder certificate, ResponderID, CertID, nonce and validity it accepts; the CRL's
 * signature and entries; RFC 3161 tokens (SHA-256 and SHA-512 imprints) through
 * TimeStampResponse.validate and TimeStampToken.validate (ESSCertIDv2, critical timeStamping). */
#define INTEROP_BC_JARS \
    "/usr/share/java/bcprov.jar:/usr/share/java/bcpkix.jar:/usr/share/java/bcutil.jar"
Test(interop, bouncy_castle_ocsp_crl_tsa)
{
    char out[16384];
    need_tool("javac", "openjdk-17-jdk-headless");
    cr_assert_eq(
        ts_run("test -r /usr/share/java/bcpkix.jar -a -r /usr/share/java/bcutil.jar", NULL, 0), 0,
        "Bouncy Castle not found: install libbcpkix-java (scripts/setup.sh)");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "javac -J-XX:+UseSerialGC -J-XX:TieredStopAtLevel=1 -cp " INTEROP_BC_JARS
                        " -d %s/bc %s/BcCheck.java 2>&1",
                        srv.dir, INTEROP_SRC),
                 0, "javac BcCheck: %s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "java " INTEROP_JVM_OPTS " -cp " INTEROP_BC_JARS ":%s/bc BcCheck "
                        "http://127.0.0.1:%d pki 2>&1",
                        srv.dir, srv.port),
                 0, "BcCheck: %s", out);
    static const char *const want[] = {
        "ocsp demo-good.pem sha1 GOOD",
        "ocsp demo-good.pem sha256 nonce GOOD",
        "ocsp demo-revoked.pem sha1 REVOKED reason=1",
        "ocsp demo-revoked.pem sha256 nonce REVOKED reason=1",
        "ocsp demo-hold.pem sha1 REVOKED reason=6",
        "ocsp demo-hold.pem sha256 nonce REVOKED reason=6",
        "crl demo-ca valid demo-revoked.pem reason=1 demo-hold.pem reason=6 "
        "demo-good.pem absent",
        "tsa sha256 granted validated",
        "tsa sha512 granted validated",
        NULL};
    assert_lines("BcCheck", out, want);
}
