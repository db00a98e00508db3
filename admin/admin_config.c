/* SPDX-License-Identifier: Apache-2.0 */
/* The [admin] section: each directive declared once in the table below (name, kind, default as
 * conf/pkiva.conf writes it, doc line). The server side (token, TLS, client certificates) and the
 * client side of `pkiva` commands that ask a running server (server_ca, client_cert, client_key). */
#include "admin.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <util/util.h>

#define S struct admin_settings

static const struct util_conf_directive directives[] = {
    UTIL_CONF(PATH, "token_file", S, token_file, 0, 0, 0, "",
              "bearer token of the admin API, owner-only; unset = none"),
    UTIL_CONF(PATH, "tls_cert", S, tls_cert, 0, 0, 0, "",
              "HTTPS on the admin listener: its certificate; unset = plain HTTP"),
    UTIL_CONF(PATH, "tls_key", S, tls_key, 0, 0, 0, "", "its key (a file, mode 0600)"),
    UTIL_CONF(PATH, "client_ca", S, client_ca, 0, 0, 0, "",
              "CA of operator certificates; unset = no client certificates"),
    UTIL_CONF(BOOL, "require_client_cert", S, require_client_cert, 0, 1, 0, "no",
              "a bearer token alone is not enough"),
    UTIL_CONF(PATH, "client_crl", S, client_crl, 0, 0, 0, "",
              "CRL of operator certificates; unset = not checked"),
    UTIL_CONF(BOOL, "metrics_without_auth", S, metrics_without_auth, 0, 1, 0, "no",
              "/metrics is served to anyone reaching the admin listener"),
    UTIL_CONF(PATH, "server_ca", S, server_ca, 0, 0, 0, "",
              "client side: CA of the server's certificate; unset = client_ca, else tls_cert"),
    UTIL_CONF(PATH, "client_cert", S, client_cert, 0, 0, 0, "",
              "client side: operator certificate; unset = bearer token only"),
    UTIL_CONF(PATH, "client_key", S, client_key, 0, 0, 0, "", "client side: its key"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void admin_settings_default(struct admin_settings *s)
{
    memset(s, 0, sizeof(*s));
    util_conf_defaults(directives, N_DIRECTIVES, s);
}

const struct util_conf_directive *admin_settings_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}

/* One rule: when the first holds, so must the second. */
static int needs(int when, int then, const char *why, char *err, size_t err_len)
{
    if (when && !then) {
        (void)snprintf(err, err_len, "[admin] %s", why);
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

int admin_settings_check(const struct admin_settings *s, char *err, size_t err_len)
{
    int has_cert = s->tls_cert[0] != '\0', has_key = s->tls_key[0] != '\0';
    int has_ca = s->client_ca[0] != '\0';
    int has_client_cert = s->client_cert[0] != '\0', has_client_key = s->client_key[0] != '\0';
    if (needs(has_cert != has_key, 0, "tls_cert and tls_key go together", err, err_len) != 0 ||
        needs(has_ca, has_cert, "client_ca needs tls_cert (client certificates exist only in TLS)",
              err, err_len) != 0 ||
        needs(s->client_crl[0] != '\0', has_ca, "client_crl needs client_ca", err, err_len) != 0 ||
        needs(s->require_client_cert, has_ca, "require_client_cert needs client_ca", err,
              err_len) != 0 ||
        needs(has_client_cert != has_client_key, 0, "client_cert and client_key go together", err,
              err_len) != 0)
        return UTIL_ECONFIG;
    return UTIL_OK;
}
