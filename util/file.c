/* SPDX-License-Identifier: Apache-2.0 */
/* Whole-file reads with a size bound and crash-safe atomic replacement (temp file, fsync, rename,
 * fsync of the directory): a reader sees the old file or the new one, never a partial one. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int util_file_read(const char *path, size_t max_len, unsigned char **out, size_t *len)
{
    int rc = UTIL_OK;
    int fd = -1;
    unsigned char *buf = NULL;
    struct stat st;
    size_t got = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = util_errno(errno);
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        rc = util_errno(errno);
        goto out;
    }
    if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max_len) {
        rc = UTIL_EINVAL;
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = util_errno(errno);
            goto out;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
out:
    if (fd >= 0)
        (void)close(fd); /* read-only descriptor: nothing to lose */
    free(buf);
    return rc;
}

int util_file_write_atomic(const char *path, const void *data, size_t len, int mode)
{
    int rc = UTIL_OK;
    int fd = -1;
    int dirfd = -1;
    char *tmp = NULL;
    char *dircopy = NULL;
    const unsigned char *p = data;
    size_t left = len;
    size_t tmp_len = strlen(path) + 16;

    tmp = malloc(tmp_len);
    dircopy = strdup(path);
    if (tmp == NULL || dircopy == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    (void)snprintf(tmp, tmp_len, "%s.tmpXXXXXX", path); /* sized above */
    fd = mkstemp(tmp);
    if (fd < 0) {
        rc = util_errno(errno);
        goto out;
    }
    if (fchmod(fd, (mode_t)mode) != 0) {
        rc = util_errno(errno);
        goto out;
    }
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = util_errno(errno);
            goto out;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) != 0) {
        rc = util_errno(errno);
        goto out;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = util_errno(errno);
        goto out;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = util_errno(errno);
        goto out;
    }
    free(tmp);
    tmp = NULL;
    dirfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 || fsync(dirfd) != 0)
        rc = util_errno(errno);
out:
    if (fd >= 0)
        (void)close(fd); /* error path: the temp file is removed below */
    if (tmp != NULL)
        (void)unlink(tmp); /* best effort: a leftover temp file is harmless */
    if (dirfd >= 0)
        (void)close(dirfd); /* directory descriptor, read-only */
    free(tmp);
    free(dircopy);
    return rc;
}
