/* SPDX-License-Identifier: Apache-2.0 */
/* Helpers of the reliability and security suites: a real `pkiva serve` on a fresh data folder
 * (embedded default, made by `pkiva init`), started, stopped and killed; raw HTTP/1.1 over
 * sockets (so that tests control every byte and every timing); OCSP queries built with OpenSSL;
 * bulk registration of serial numbers through `pkiva import --index`. */
#ifndef PKIVA_TESTS_REL_H
#define PKIVA_TESTS_REL_H

#include <openssl/x509.h>
#include <stddef.h>
#include <sys/types.h>

#define REL_PKIVA PKIVA_BINARY_DIR "/cli/pkiva"

struct rel_server {
    char dir[256];  /* private temporary folder (removed by rel_teardown) */
    char data[300]; /* dir/var: the data folder */
    char log[300];  /* dir/server.log: every run's stdout and stderr */
    int port, admin_port;
    pid_t pid;
    char token[128];
    X509 *issuer;    /* pki/issuing-ca.pem, for OCSP CertIDs */
    int nofile;      /* > 0: the server runs with RLIMIT_NOFILE soft = nofile ... */
    int nofile_hard; /* ... and hard = this (0: = nofile) */
};

/* Fresh folder and two free ports; `pkiva init` the embedded default; read the admin token. */
void rel_setup(struct rel_server *s);
void rel_teardown(struct rel_server *s);
/* Appends text to DIR/pkiva.conf (a repeated [section] header is fine for inih). */
void rel_conf_append(struct rel_server *s, const char *text);

/* Starts pkiva serve (log appended to s->log) and waits until /healthz answers 200; fails the
 * test if it exits first or does not answer within timeout_s. Returns ms it took. */
int rel_start(struct rel_server *s, int timeout_s);
/* Starts it and waits for it to exit (a start that must fail); returns its exit status. */
int rel_run_to_exit(struct rel_server *s, int timeout_s);
/* SIGTERM and wait (exit status, -2 if it had to be killed); SIGKILL and reap. */
int rel_stop(struct rel_server *s);
void rel_kill9(struct rel_server *s);

/* One request on a fresh connection to 127.0.0.1:port; reads the answer until the server closes
 * or timeout_ms passes. Returns the HTTP status (0: no answer); the body goes into body (NUL-
 * terminated; may be NULL). */
int rel_http(int port, const void *request, size_t len, char *body, size_t body_cap,
             int timeout_ms);
/* POST path with a JSON body (GET when json is NULL) to the admin listener, over HTTPS when the
 * data folder's pkiva.conf sets tls_cert (verified against DATA/admin/admin-ca.pem); auth_lines
 * are extra header lines (each with CRLF), NULL = "Authorization: Bearer <token>". */
int rel_admin(const struct rel_server *s, const char *path, const char *json,
              const char *auth_lines, char *body, size_t body_cap);
/* Sends request (every byte as given) on a fresh connection to the admin listener, HTTPS or not
 * as rel_admin decides; the answer as rel_http gives it. */
int rel_admin_raw(const struct rel_server *s, const void *request, size_t len, char *body,
                  size_t body_cap);
int rel_get(int port, const char *path, char *body, size_t body_cap, int timeout_ms);

/* OCSP status of serial (hex) under the issuing CA, by POST: 0 good, 1 revoked, 2 unknown,
 * 3 tryLater, -1 no usable answer. reason (may be NULL) gets the CRL reason when revoked. */
int rel_ocsp(const struct rel_server *s, const char *serial_hex, int nonce, int *reason);

/* Registers n fresh random serials (as good) with `pkiva import --index`; serials[i] gets the hex
 * (33 bytes each). */
void rel_register_serials(struct rel_server *s, int n, char (*serials)[33]);

/* Shell command with SOFTHSM2_CONF of the data folder; output in out. Returns the exit status. */
int rel_sh(const struct rel_server *s, char *out, size_t out_len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

void rel_sleep_ms(int ms);
long long rel_now_ms(void);
/* Resident set size of pid in kB (from /proc), -1 if unknown. */
long rel_rss_kb(pid_t pid);
/* Raises RLIMIT_NOFILE to at least n (the test and the servers it starts). */
void rel_raise_nofile(int n);

#endif
