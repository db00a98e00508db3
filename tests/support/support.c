/* SPDX-License-Identifier: Apache-2.0 */
/* Implementation of the shared test support (see support.h): temporary directories, SoftHSM2
 * tokens made with softhsm2-util, recursive removal and a popen wrapper. Test code only: it may
 * print to stderr and uses the shell, never to be linked into the daemon. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <util/util.h>

#define TS_PREFIX "/tmp/pkiva-test."

int ts_tmpdir(char *out, size_t len)
{
    char tmpl[] = TS_PREFIX "XXXXXX";

    if (out == NULL || len < sizeof(tmpl))
        return UTIL_EINVAL;
    if (mkdtemp(tmpl) == NULL)
        return util_errno(errno);
    memcpy(out, tmpl, sizeof(tmpl));
    return UTIL_OK;
}

static int write_file(const char *path, const char *text, mode_t mode)
{
    size_t len = strlen(text);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    int rc = UTIL_OK;

    if (fd < 0)
        return util_errno(errno);
    if (write(fd, text, len) != (ssize_t)len)
        rc = UTIL_EIO;
    /* open() applies the umask; the PIN file's mode is part of what tests check. */
    if (rc == UTIL_OK && fchmod(fd, mode) != 0)
        rc = util_errno(errno);
    if (close(fd) != 0 && rc == UTIL_OK)
        rc = UTIL_EIO;
    return rc;
}

int ts_softhsm_token(const char *dir, const char *label, const char *pin)
{
    char path[512];
    char text[1024];
    char cmd[1024];
    char output[4096];
    int status;
    int rc;

    if (dir == NULL || label == NULL || pin == NULL)
        return UTIL_EINVAL;
    (void)snprintf(path, sizeof(path), "%s/tokens", dir); /* tests use short paths */
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return util_errno(errno);
    (void)snprintf(text, sizeof(text),
                   "directories.tokendir = %s/tokens\n"
                   "objectstore.backend = file\n"
                   "log.level = ERROR\n"
                   "slots.removable = false\n",
                   dir);
    (void)snprintf(path, sizeof(path), "%s/softhsm2.conf", dir);
    rc = write_file(path, text, 0600);
    if (rc != UTIL_OK)
        return rc;
    if (setenv("SOFTHSM2_CONF", path, 1) != 0)
        return util_errno(errno);
    (void)snprintf(cmd, sizeof(cmd),
                   "softhsm2-util --init-token --free --label '%s' --pin '%s' --so-pin '%s'", label,
                   pin, pin);
    status = ts_run(cmd, output, sizeof(output));
    if (status != 0) {
        fprintf(stderr, "ts_softhsm_token: %s: exit %d: %s\n", cmd, status, output);
        return UTIL_EIO;
    }
    (void)snprintf(path, sizeof(path), "%s/pin.txt", dir);
    (void)snprintf(text, sizeof(text), "%s\n", pin);
    return write_file(path, text, 0600);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    /* Best effort: a leftover file in /tmp does not fail a test. */
    (void)remove(path);
    return 0;
}

void ts_rmrf(const char *dir)
{
    if (dir == NULL || strncmp(dir, TS_PREFIX, strlen(TS_PREFIX)) != 0 || strstr(dir, "..") != NULL)
        return;
    /* Best effort, as above. */
    (void)nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int ts_run(const char *cmd, char *out, size_t out_len)
{
    char full[4096];
    char buf[1024];
    size_t used = 0;
    FILE *p = NULL;
    int status;
    int n;

    if (out != NULL && out_len > 0)
        out[0] = '\0';
    n = snprintf(full, sizeof(full), "exec </dev/null 2>&1; %s", cmd);
    if (n < 0 || (size_t)n >= sizeof(full))
        return -1;
    fflush(NULL); /* criterion's buffered output must not be duplicated into the child */
    p = popen(full, "r");
    if (p == NULL)
        return -1;
    for (;;) {
        n = (int)fread(buf, 1, sizeof(buf), p);
        if (n <= 0)
            break;
        if (out != NULL && used + 1 < out_len) {
            size_t take = (size_t)n < out_len - 1 - used ? (size_t)n : out_len - 1 - used;
            memcpy(out + used, buf, take);
            used += take;
            out[used] = '\0';
        }
    }
    status = pclose(p);
    if (status == -1)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* One port from the kernel (bind to port 0); aborts if loopback cannot be bound. */
static int kernel_port(void)
{
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("ts_free_port: cannot bind 127.0.0.1");
        abort();
    }
    (void)close(fd); /* the port is what we wanted */
    return ntohs(addr.sin_port);
}

int ts_free_port(void)
{
    /* The kernel may hand the port just closed out again: a test asking for a public and an
     * admin port would get the same one twice. Skip the ones this process handed out lately. */
    static int recent[32];
    static unsigned next;
    int port = 0;

    for (int attempt = 0; attempt < 100; attempt++) {
        int seen = 0;
        port = kernel_port();
        for (size_t i = 0; i < sizeof(recent) / sizeof(recent[0]); i++)
            seen |= recent[i] == port;
        if (!seen)
            break;
    }
    recent[next++ % (sizeof(recent) / sizeof(recent[0]))] = port;
    return port;
}
