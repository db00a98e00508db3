/* SPDX-License-Identifier: Apache-2.0 */
/* Test support shared by every pkiva test suite: private temporary directories, throw-away SoftHSM2
 * tokens and a way to run command-line tools (softhsm2-util, pkcs11-tool, openssl) and read their
 * output. Tests run as parallel processes, so each test makes its own directory and token. */
#ifndef PKIVA_TESTS_SUPPORT_H
#define PKIVA_TESTS_SUPPORT_H

#include <stddef.h>

/* Where the SoftHSM2 PKCS#11 module lives on Debian. */
#define TS_SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"

/* Creates a fresh directory /tmp/pkiva-test.XXXXXX (mode 0700) and writes its path into out.
 * Returns 0, or a negative util error code (UTIL_EINVAL if len is too small). */
int ts_tmpdir(char *out, size_t len);

/* Makes dir a SoftHSM2 home: writes dir/softhsm2.conf (token store dir/tokens, file backend),
 * points SOFTHSM2_CONF at it with setenv (for this process and the tools it runs), initialises a
 * token labelled label with user PIN and SO PIN pin, and writes the PIN to dir/pin.txt (mode 0600,
 * one line). label and pin must not contain shell metacharacters. Returns 0 or a negative util
 * error code; the tool's output is printed to stderr on failure. */
int ts_softhsm_token(const char *dir, const char *label, const char *pin);

/* Removes dir and everything below it; NULL or "" is ignored. Only paths under /tmp/pkiva-test.
 * are removed, so a bad argument cannot delete anything else. */
void ts_rmrf(const char *dir);

/* Runs cmd with /bin/sh (stdin from /dev/null, stderr merged into stdout). Captures up to
 * out_len - 1 bytes of output into out (NUL-terminated, may be NULL), discards the rest. Returns
 * the command's exit status, 128 + signal number if it was killed, or -1 if it could not run. */
int ts_run(const char *cmd, char *out, size_t out_len);

/* A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, read back, closed)
 * and that this process has not handed out lately: free for a server the test starts next, unless
 * another process takes it in between. Not thread-safe. Aborts the test process with a message if
 * loopback cannot be bound (the machine is broken). */
int ts_free_port(void);

/* Allocation fault injection (failalloc.c, linked only into the executables that list it): fail
 * exactly the nth malloc/calloc/realloc from now on (n >= 1), in any thread; disarm returns 1
 * if that failure was injected (0: fewer than n allocations happened). */
void ts_failalloc_arm(long n);
int ts_failalloc_disarm(void);

#endif
