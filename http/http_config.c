/* SPDX-License-Identifier: Apache-2.0 */
/* The listeners and limits of the [server] section: each directive declared once in the table
 * below (name, kind, limits, default as conf/pkiva.conf writes it, doc line). The configuration
 * reader applies the section's lines with it; http_limits_default and http_config_default apply its
 * defaults. */
#include "http.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <util/util.h>

int http_listener_parse(const char *text, struct http_listener_config *out)
{
    const char *colon = strrchr(text, ':');
    const char *host = text;
    size_t host_len;
    char *end = NULL;
    long port;
    if (colon == NULL || colon == text)
        return UTIL_EINVAL;
    host_len = (size_t)(colon - text);
    if (host[0] == '[' && host_len > 2 && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
    }
    if (host_len >= sizeof(out->host))
        return UTIL_EINVAL;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno != 0 || end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return UTIL_EINVAL;
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = (int)port;
    return UTIL_OK;
}

static int parse_listen(const struct util_conf_directive *d, void *config, const char *value,
                        char *err, size_t err_len)
{
    struct http_listener_config *l = (struct http_listener_config *)((char *)config + d->offset);
    if (http_listener_parse(value, l) != UTIL_OK)
        return util_conf_fail(err, err_len, "%s: expected HOST:PORT (port 0-65535), got '%s'",
                              d->name, value);
    return UTIL_OK;
}

#define C struct http_config

static const struct util_conf_directive directives[] = {
    UTIL_CONF(CUSTOM, "listen", C, listeners[0], 0, 0, parse_listen, "127.0.0.1:8080",
              "public listener: OCSP, CRLs, CA certificates, time stamps, health"),
    UTIL_CONF(CUSTOM, "admin_listen", C, listeners[1], 0, 0, parse_listen, "127.0.0.1:8081",
              "admin listener: the operator API and /metrics"),
    UTIL_CONF(INT, "max_connections", C, limits.max_connections, 1, 1000000, 0, "10000",
              "simultaneous connections, all listeners"),
    UTIL_CONF(INT, "max_connections_per_client", C, limits.max_connections_per_client, 0, 1000000,
              0, "256", "open connections per client address; 0 = no cap"),
    UTIL_CONF(SIZE, "max_url", C, limits.max_url, 1, 65536, 0, "8k",
              "longest request target; past it 414"),
    UTIL_CONF(INT, "max_headers", C, limits.max_headers, 1, 1000, 0, "64",
              "header fields per request; past it 431"),
    UTIL_CONF(SIZE, "max_header_bytes", C, limits.max_header_bytes, 1, 1024 * 1024, 0, "16k",
              "all header bytes of a request; past it 431"),
    UTIL_CONF(SIZE, "max_body", C, limits.max_body, 1, 64 * 1024 * 1024, 0, "64k",
              "largest request body; past it 413"),
    UTIL_CONF(INT, "max_pipelined", C, limits.max_pipelined, 1, 1024, 0, "16",
              "requests parsed ahead of their responses on one connection"),
    UTIL_CONF(MS, "header_timeout", C, limits.header_timeout_ms, 0, 3600000, 0, "10s",
              "a request's headers must arrive within this; else 408"),
    UTIL_CONF(MS, "body_timeout", C, limits.body_timeout_ms, 0, 3600000, 0, "10s",
              "a request's body must arrive within this; else 408"),
    UTIL_CONF(MS, "idle_timeout", C, limits.idle_timeout_ms, 0, 3600000, 0, "60s",
              "keep-alive connection closed after this long without a request"),
    UTIL_CONF(MS, "write_timeout", C, limits.write_timeout_ms, 0, 3600000, 0, "30s",
              "a response the client does not read within this: close"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void http_config_default(struct http_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(directives, N_DIRECTIVES, cfg);
    cfg->n_listeners = 2;
    cfg->listeners[0].kind = HTTP_PUBLIC;
    cfg->listeners[1].kind = HTTP_ADMIN;
}

void http_limits_default(struct http_limits *limits)
{
    struct http_config cfg;
    http_config_default(&cfg);
    *limits = cfg.limits;
}

const struct util_conf_directive *http_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
