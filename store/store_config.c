/* SPDX-License-Identifier: Apache-2.0 */
/* The [store] section: each directive declared once in the table below (name, kind, limits,
 * default as conf/pkiva.conf writes it, doc line). The configuration reader applies the section's
 * lines with it and then turns the settings into what store_open_blocking gets (a file, or a
 * postgresql:// URI with its password file). */
#include "store.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <util/util.h>

static const char *const backends[] = {"sqlite", "postgresql", NULL};
_Static_assert(STORE_BACKEND_SQLITE == 0 && STORE_BACKEND_POSTGRESQL == 1, "backends");

#define S struct store_settings

static const struct util_conf_directive directives[] = {
    UTIL_CONF(CHOICE, "backend", S, backend, 0, 0, backends, "sqlite",
              "sqlite (one node) or postgresql (a cluster sharing one database)"),
    UTIL_CONF(PATH, "path", S, path, 0, 0, 0, "", "SQLite database; unset = <data_dir>/pkiva.db"),
    UTIL_CONF(STRING, "conninfo", S, conninfo, 0, 0, 0, "",
              "postgresql: the libpq URI of the database, without a password"),
    UTIL_CONF(PATH, "password_file", S, password_file, 0, 0, 0, "",
              "postgresql: a libpq password file, owner-only"),
    UTIL_CONF(STRING, "read_conninfo", S, read_conninfo, 0, 0, 0, "",
              "postgresql: a hot standby's libpq URI for reads that may be stale; unset = none"),
    UTIL_CONF(MS, "read_max_lag", S, read_max_lag_ms, 100, 3600000, 0, "10s",
              "a replica lagging more than this turns /readyz 503"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void store_settings_default(struct store_settings *s)
{
    memset(s, 0, sizeof(*s));
    util_conf_defaults(directives, N_DIRECTIVES, s);
}

const struct util_conf_directive *store_settings_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}

/* 1 when the URI's authority carries user:password@. */
static int uri_has_password(const char *uri)
{
    const char *authority = strstr(uri, "://");
    size_t len = 0;
    const char *at = NULL;

    if (authority == NULL)
        return 0;
    authority += 3;
    len = strcspn(authority, "/?");
    at = memchr(authority, '@', len);
    return at != NULL && memchr(authority, ':', (size_t)(at - authority)) != NULL;
}

/* backend = postgresql: the store path is the libpq URI of conninfo, with the password file as
 * libpq's passfile (pgpass format, owner-only like the PIN file: libpq itself ignores a file that
 * group or others may read; we refuse it with a clear message instead). */
static int resolve_postgresql(const struct store_settings *s, char *path, size_t path_len,
                              char *err, size_t err_len)
{
    const char *pw = s->password_file;
    struct stat st;
    int n = 0;

    if (s->path[0] != '\0') {
        (void)snprintf(err, err_len, "[store] path is for the sqlite backend; use conninfo");
        return UTIL_ECONFIG;
    }
    if (strncmp(s->conninfo, "postgresql://", 13) != 0 &&
        strncmp(s->conninfo, "postgres://", 11) != 0) {
        (void)snprintf(err, err_len,
                       "[store] conninfo must be a libpq URI (postgresql://user@host/db?...)");
        return UTIL_ECONFIG;
    }
    if (strstr(s->conninfo, "password") != NULL || strstr(s->conninfo, "passfile") != NULL ||
        uri_has_password(s->conninfo)) {
        (void)snprintf(err, err_len,
                       "[store] conninfo must not hold a password; use password_file");
        return UTIL_ECONFIG;
    }
    if (pw[0] == '\0') {
        n = snprintf(path, path_len, "%s", s->conninfo);
    } else {
        if (pw[strspn(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/._-")] !=
            '\0') {
            (void)snprintf(err, err_len,
                           "[store] password_file: use a path of letters, digits, / . _ -");
            return UTIL_ECONFIG;
        }
        if (stat(pw, &st) != 0 || !S_ISREG(st.st_mode)) {
            (void)snprintf(err, err_len, "[store] password_file %.200s: not a readable file", pw);
            return UTIL_ECONFIG;
        }
        if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
            (void)snprintf(err, err_len,
                           "[store] password_file %.200s has mode %04o: group/other may access "
                           "it; chmod 600 (or 400) it",
                           pw, (unsigned)(st.st_mode & 07777));
            return UTIL_ECONFIG;
        }
        n = snprintf(path, path_len, "%s%cpassfile=%s", s->conninfo,
                     strchr(s->conninfo, '?') != NULL ? '&' : '?', pw);
    }
    if (n < 0 || (size_t)n >= path_len) {
        (void)snprintf(err, err_len, "[store] conninfo is too long");
        return UTIL_ECONFIG;
    }
    return 0;
}

int store_settings_resolve(const struct store_settings *s, const char *data_dir, char *path,
                           size_t path_len, char *err, size_t err_len)
{
    int n;
    if (s->backend == STORE_BACKEND_POSTGRESQL)
        return resolve_postgresql(s, path, path_len, err, err_len);
    if (s->conninfo[0] != '\0' || s->password_file[0] != '\0') {
        (void)snprintf(err, err_len,
                       "[store] conninfo and password_file need backend = postgresql");
        return UTIL_ECONFIG;
    }
    if (s->path[0] != '\0')
        n = snprintf(path, path_len, "%s", s->path);
    else
        n = snprintf(path, path_len, "%s/pkiva.db", data_dir);
    if (n < 0 || (size_t)n >= path_len) {
        (void)snprintf(err, err_len, "%s is too long",
                       s->path[0] != '\0' ? "[store] path" : "[server] data_dir");
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

int store_settings_resolve_read(const struct store_settings *s, char *path, size_t path_len,
                                char *err, size_t err_len)
{
    const char *uri = s->read_conninfo;
    int n = 0;

    path[0] = '\0';
    if (uri[0] == '\0')
        return UTIL_OK;
    if (s->backend != STORE_BACKEND_POSTGRESQL) {
        (void)snprintf(err, err_len, "[store] read_conninfo needs backend = postgresql");
        return UTIL_ECONFIG;
    }
    if ((strncmp(uri, "postgresql://", 13) != 0 && strncmp(uri, "postgres://", 11) != 0) ||
        strstr(uri, "password") != NULL || strstr(uri, "passfile") != NULL ||
        uri_has_password(uri)) {
        (void)snprintf(err, err_len,
                       "[store] read_conninfo must be a libpq URI without a password "
                       "(postgresql://user@standby/db?...; the password comes from password_file)");
        return UTIL_ECONFIG;
    }
    if (s->password_file[0] == '\0')
        n = snprintf(path, path_len, "%s", uri);
    else /* checked with conninfo by store_settings_resolve */
        n = snprintf(path, path_len, "%s%cpassfile=%s", uri, strchr(uri, '?') != NULL ? '&' : '?',
                     s->password_file);
    if (n < 0 || (size_t)n >= path_len) {
        (void)snprintf(err, err_len, "[store] read_conninfo is too long");
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}
