/* SPDX-License-Identifier: Apache-2.0 */
/* The [store] section: each directive declared once in the table below (name, kind, limits,
 * default as conf/pkiva.conf writes it, doc line). The configuration reader applies the section's
 * lines with it and then turns the settings into what store_open_blocking gets (a file, or a
 * postgresql:// URI with its password file). */
#include "store.h"

#include <stddef.h>
#include <string.h>
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
