/* SPDX-License-Identifier: Apache-2.0 */
/* One-line log records on stderr. Each record is formatted into a stack buffer and written with a
 * single write(2), so lines from different threads never interleave. OpenSSL's error queue can be
 * drained into the same line so that no request inherits another's stale error. */
#include "util.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static _Atomic int log_level = UTIL_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void util_log_set_level(enum util_log_level level)
{
    atomic_store(&log_level, (int)level);
}

static void log_emit(enum util_log_level level, const char *module, int with_openssl,
                     const char *fmt, va_list ap) __attribute__((format(printf, 4, 0)));

static void log_emit(enum util_log_level level, const char *module, int with_openssl,
                     const char *fmt, va_list ap)
{
    char line[LOG_LINE_MAX];
    size_t used = 0;
    int n;
    int64_t now = util_now_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;

    if ((int)level < atomic_load(&log_level)) {
        if (with_openssl)
            ERR_clear_error();
        return;
    }
    (void)gmtime_r(&secs, &tm); /* a valid time_t always converts */
    used = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n = snprintf(line + used, sizeof(line) - used, ".%03dZ %s %s: ", (int)(now % 1000),
                 level_names[level], module);
    if (n > 0)
        used += (size_t)n < sizeof(line) - used ? (size_t)n : sizeof(line) - used - 1;
    n = vsnprintf(line + used, sizeof(line) - used, fmt, ap);
    if (n > 0)
        used += (size_t)n < sizeof(line) - used ? (size_t)n : sizeof(line) - used - 1;
    if (with_openssl) {
        unsigned long code;
        const char *file = NULL;
        const char *data = NULL;
        int lineno = 0;
        int flags = 0;
        while ((code = ERR_get_error_all(&file, &lineno, NULL, &data, &flags)) != 0) {
            char buf[256];
            ERR_error_string_n(code, buf, sizeof(buf));
            n = snprintf(line + used, sizeof(line) - used, " [%s%s%s]", buf,
                         (flags & ERR_TXT_STRING) && data ? ": " : "",
                         (flags & ERR_TXT_STRING) && data ? data : "");
            if (n > 0)
                used += (size_t)n < sizeof(line) - used ? (size_t)n : sizeof(line) - used - 1;
        }
    }
    /* Control characters from untrusted input must not forge log lines. */
    for (size_t i = 0; i < used; i++)
        if ((unsigned char)line[i] < 0x20)
            line[i] = ' ';
    if (used >= sizeof(line) - 1)
        used = sizeof(line) - 2;
    line[used++] = '\n';
    /* A failed or short write to stderr has nowhere better to be reported. */
    (void)!write(STDERR_FILENO, line, used);
}

void util_log(enum util_log_level level, const char *module, const char *fmt, ...)
{
    int saved_errno = errno; /* logging never changes what the caller is about to inspect */
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, module, 0, fmt, ap);
    va_end(ap);
    errno = saved_errno;
}

int util_openssl_oom_clear(void)
{
    unsigned long e;
    int oom = 0;

    while ((e = ERR_get_error()) != 0)
        oom |= ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE;
    return oom;
}

void util_log_openssl(enum util_log_level level, const char *module, const char *fmt, ...)
{
    int saved_errno = errno; /* logging never changes what the caller is about to inspect */
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, module, 1, fmt, ap);
    va_end(ap);
    errno = saved_errno;
}
