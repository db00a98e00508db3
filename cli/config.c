/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration: INI files parsed with inih, every directive checked as it is read (file, line and
 * reason on error), then the whole checked before anything is opened or bound. Defaults here are the
 * ones documented in conf/pkiva.conf. */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include "cli.h"
#include "cli_int.h"

#include <ctype.h>
#include <errno.h>
#include <feed/feed.h>
#include <hsm/hsm.h>
#include <ini.h>
#include <ocsp/ocsp.h>
#include <sched.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <util/util.h>

struct parse_ctx {
    struct cli_config *cfg;
    const char *name;
    const char *base_dir;
    char *err;
    size_t err_len;
    int failed;
};

void cli_config_defaults(struct cli_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    (void)snprintf(cfg->data_dir, sizeof(cfg->data_dir), "./var");
    cfg->workers = 0; /* 0 = cli_default_workers() */
    (void)snprintf(cfg->log_level, sizeof(cfg->log_level), "info");
    http_limits_default(&cfg->http.limits);
    cfg->http.n_listeners = 2;
    (void)snprintf(cfg->http.listeners[0].host, sizeof(cfg->http.listeners[0].host), "127.0.0.1");
    cfg->http.listeners[0].port = 8080;
    cfg->http.listeners[0].kind = HTTP_PUBLIC;
    (void)snprintf(cfg->http.listeners[1].host, sizeof(cfg->http.listeners[1].host), "127.0.0.1");
    cfg->http.listeners[1].port = 8081;
    cfg->http.listeners[1].kind = HTTP_ADMIN;
    cfg->http.server_header = "pkiva";
    (void)snprintf(cfg->hsm_module, sizeof(cfg->hsm_module), "/usr/lib/softhsm/libsofthsm2.so");
    cfg->hsm_no_deinit = 1;
    cfg->hsm_sessions = 2;
    cfg->hsm_queue_max = 4096;
    cfg->hsm_ecdsa_verify_every = 16; /* HSM_ECDSA_VERIFY_DEFAULT */
    cfg->hsm_restart_after_ms = 60000;
    cfg->feed_poll_ms = 200;
    cfg->store_max_feed_lag_ms = 5000;
    /* [ocsp]: the module's table; its timing defaults are 0 = derived from [revocation]
     * deadline after parsing (feed_contract_defaults). */
    ocsp_config_default(&cfg->ocsp);
    cfg->crl_deltas = 1;
    cfg->crl_validity_s = 0;
    cfg->crl_delta_validity_s = 0;
    cfg->crl_interval_s = 0;
    cfg->crl_coalesce_ms = 5000;
    cfg->crl_full_on_change = 1;
    cfg->crl_expired_retention_s = 7 * 86400;
    cfg->crl_max_age_s = 0;
    tsa_config_default(&cfg->tsa); /* [tsa]: the module's table */
    cfg->sla_deadline_s = 12 * 3600;
    cfg->sla_warn_s = 3600;
    directory_config_default(&cfg->directory);
}

int cli_parse_duration(const char *text, int64_t *seconds)
{
    return util_parse_duration(text, seconds);
}

int cli_parse_size(const char *text, int64_t *bytes)
{
    return util_parse_size(text, bytes);
}

static int fail(struct parse_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct parse_ctx *ctx, const char *fmt, ...)
{
    if (!ctx->failed) {
        va_list ap;
        va_start(ap, fmt);
        (void)vsnprintf(ctx->err, ctx->err_len, fmt, ap); /* truncation is acceptable */
        va_end(ap);
        ctx->failed = 1;
    }
    return 0; /* tells inih this line is in error; it reports the line number */
}

static int set_path(struct parse_ctx *ctx, char *dst, size_t dst_len, const char *value)
{
    int n;
    if (value[0] == '\0')
        n = snprintf(dst, dst_len, "%s", "");
    else if (value[0] == '/' || ctx->base_dir == NULL || strncmp(value, "pkcs11:", 7) == 0)
        n = snprintf(dst, dst_len, "%s", value);
    else
        n = snprintf(dst, dst_len, "%s/%s", ctx->base_dir, value);
    if (n < 0 || (size_t)n >= dst_len)
        return fail(ctx, "path too long: %s", value);
    return 1;
}

static int set_str(struct parse_ctx *ctx, char *dst, size_t dst_len, const char *value)
{
    int n = snprintf(dst, dst_len, "%s", value);
    if (n < 0 || (size_t)n >= dst_len)
        return fail(ctx, "value too long: %s", value);
    return 1;
}

static int set_int(struct parse_ctx *ctx, int *dst, const char *value, long min, long max)
{
    char *end = NULL;
    long v;
    errno = 0;
    v = strtol(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < min || v > max) {
        char range[64];
        (void)snprintf(range, sizeof(range), "%ld..%ld", min, max);
        return fail(ctx, "expected an integer in %s, got '%s'", range, value);
    }
    *dst = (int)v;
    return 1;
}

static int set_bool(struct parse_ctx *ctx, int *dst, const char *value)
{
    if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0 || strcmp(value, "on") == 0 ||
        strcmp(value, "1") == 0)
        *dst = 1;
    else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0 || strcmp(value, "off") == 0 ||
             strcmp(value, "0") == 0)
        *dst = 0;
    else
        return fail(ctx, "expected yes or no, got '%s'", value);
    return 1;
}

static int set_store_backend(struct parse_ctx *ctx, int *dst, const char *value)
{
    if (strcmp(value, "sqlite") == 0)
        *dst = CLI_STORE_SQLITE;
    else if (strcmp(value, "postgresql") == 0)
        *dst = CLI_STORE_POSTGRESQL;
    else
        return fail(ctx, "expected sqlite or postgresql, got '%s'", value);
    return 1;
}

/* [hsm] verify_ecdsa: "all", "none" or "sample N" (verify one ECDSA signature in N). */
static int set_verify_ecdsa(struct parse_ctx *ctx, int *dst, const char *value)
{
    if (strcmp(value, "all") == 0) {
        *dst = 1;
        return 1;
    }
    if (strcmp(value, "none") == 0) {
        *dst = -1; /* HSM_VERIFY_NONE */
        return 1;
    }
    if (strncmp(value, "sample ", 7) == 0) {
        const char *n = value + 7;
        while (*n == ' ')
            n++;
        return set_int(ctx, dst, n, 1, 1000000);
    }
    return fail(ctx, "expected all, none or sample N, got '%s'", value);
}

static int set_duration(struct parse_ctx *ctx, int64_t *dst, const char *value)
{
    if (cli_parse_duration(value, dst) != 0)
        return fail(ctx, "expected a duration like 90s, 15m, 12h or 4d, got '%s'", value);
    return 1;
}

static int set_duration_ms(struct parse_ctx *ctx, int *dst, const char *value)
{
    int64_t s = 0;
    /* Millisecond settings accept "250ms" as well as the second-based forms. */
    size_t len = strlen(value);
    if (len > 2 && strcmp(value + len - 2, "ms") == 0) {
        char buf[32];
        if (len - 2 >= sizeof(buf))
            return fail(ctx, "bad duration '%s'", value);
        memcpy(buf, value, len - 2);
        buf[len - 2] = '\0';
        return set_int(ctx, dst, buf, 1, 3600000);
    }
    if (cli_parse_duration(value, &s) != 0 || s > 3600)
        return fail(ctx, "expected a duration like 250ms, 10s or 2m (at most 1h), got '%s'", value);
    *dst = (int)(s * 1000);
    return 1;
}

static int set_size(struct parse_ctx *ctx, size_t *dst, const char *value, int64_t max)
{
    int64_t v = 0;
    if (cli_parse_size(value, &v) != 0 || v < 1 || v > max)
        return fail(ctx, "expected a size like 4096, 64k or 16M, got '%s'", value);
    *dst = (size_t)v;
    return 1;
}

int cli_parse_listen(const char *text, struct http_listener_config *out)
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

static int set_listen(struct parse_ctx *ctx, struct http_listener_config *l, const char *value)
{
    if (cli_parse_listen(value, l) != UTIL_OK)
        return fail(ctx, "expected HOST:PORT (port 0-65535), got '%s'", value);
    return 1;
}

static struct cli_issuer *issuer_for(struct parse_ctx *ctx, const char *name)
{
    struct cli_config *cfg = ctx->cfg;
    for (int i = 0; i < cfg->n_issuers; i++)
        if (strcmp(cfg->issuers[i].name, name) == 0)
            return &cfg->issuers[i];
    if (cfg->n_issuers >= CLI_MAX_ISSUERS)
        return NULL;
    struct cli_issuer *is = &cfg->issuers[cfg->n_issuers++];
    memset(is, 0, sizeof(*is));
    (void)snprintf(is->name, sizeof(is->name), "%s", name); /* length checked by the caller */
    return is;
}

static int on_issuer(struct parse_ctx *ctx, const char *name, const char *key, const char *value)
{
    struct cli_issuer *is;
    if (!util_name_valid(name))
        return fail(ctx, "issuer name '%s' must be 1-63 characters of [A-Za-z0-9._-]", name);
    is = issuer_for(ctx, name);
    if (is == NULL)
        return fail(ctx, "too many issuers (at most %d)", CLI_MAX_ISSUERS);
    if (strcmp(key, "cert") == 0)
        return set_path(ctx, is->cert, sizeof(is->cert), value);
    if (strcmp(key, "key") == 0)
        return set_str(ctx, is->key_uri, sizeof(is->key_uri), value);
    if (strcmp(key, "ocsp_cert") == 0)
        return set_path(ctx, is->ocsp_cert, sizeof(is->ocsp_cert), value);
    if (strcmp(key, "ocsp_key") == 0)
        return set_str(ctx, is->ocsp_key_uri, sizeof(is->ocsp_key_uri), value);
    if (strcmp(key, "ocsp_ignore_nonce") == 0)
        return set_bool(ctx, &is->ocsp_ignore_nonce, value);
    if (strcmp(key, "rsa_pss") == 0)
        return set_bool(ctx, &is->rsa_pss, value);
    if (strcmp(key, "digest") == 0) {
        if (strcmp(value, "SHA256") != 0 && strcmp(value, "SHA384") != 0 &&
            strcmp(value, "SHA512") != 0)
            return fail(ctx, "digest must be SHA256, SHA384 or SHA512, got '%s'", value);
        return set_str(ctx, is->digest, sizeof(is->digest), value);
    }
    return fail(ctx, "unknown directive '%s' in [issuer.%s]", key, name);
}

/* "1s", "500ms", "100us" -> microseconds. */
static int parse_accuracy(const char *value, int64_t *us)
{
    char *end = NULL;
    long long v;
    errno = 0;
    v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || v < 0 || v > 3600LL * 1000000)
        return UTIL_EINVAL;
    if (strcmp(end, "s") == 0 || *end == '\0')
        *us = v * 1000000;
    else if (strcmp(end, "ms") == 0)
        *us = v * 1000;
    else if (strcmp(end, "us") == 0)
        *us = v;
    else
        return UTIL_EINVAL;
    return *us <= 3600LL * 1000000 ? UTIL_OK : UTIL_EINVAL;
}

static int valid_oid(const char *text)
{
    /* Dotted decimal only: first arc 0-2, at least two arcs, no empty arcs. */
    size_t len = strlen(text);
    if (len < 3 || len >= 64 || text[0] < '0' || text[0] > '2' || text[1] != '.')
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)text[i]) &&
            !(text[i] == '.' && i + 1 < len && text[i + 1] != '.'))
            return 0;
    return 1;
}

static int on_tsa_unit(struct parse_ctx *ctx, const char *name, const char *key, const char *value)
{
    struct cli_config *cfg = ctx->cfg;
    struct cli_tsa_unit *u = NULL;
    if (!util_name_valid(name))
        return fail(ctx, "TSA unit name '%s' must be 1-63 characters of [A-Za-z0-9._-]", name);
    for (int i = 0; i < cfg->n_tsa_units; i++)
        if (strcmp(cfg->tsa_units[i].name, name) == 0)
            u = &cfg->tsa_units[i];
    if (u == NULL) {
        if (cfg->n_tsa_units >= CLI_MAX_TSA_UNITS)
            return fail(ctx, "too many TSA units (at most %d)", CLI_MAX_TSA_UNITS);
        u = &cfg->tsa_units[cfg->n_tsa_units++];
        memset(u, 0, sizeof(*u));
        (void)snprintf(u->name, sizeof(u->name), "%s", name);
        u->accuracy_us = 1000000;
    }
    if (strcmp(key, "cert") == 0)
        return set_path(ctx, u->cert, sizeof(u->cert), value);
    if (strcmp(key, "chain") == 0)
        return set_path(ctx, u->chain, sizeof(u->chain), value);
    if (strcmp(key, "previous_certs") == 0)
        return set_path(ctx, u->previous_certs, sizeof(u->previous_certs), value);
    if (strcmp(key, "key") == 0) {
        if (strncmp(value, "pkcs11:", 7) != 0)
            return fail(ctx, "key must be a PKCS#11 URI (RFC 7512), got '%s'", value);
        return set_str(ctx, u->key_uri, sizeof(u->key_uri), value);
    }
    if (strcmp(key, "digest") == 0 || strcmp(key, "ess_digest") == 0) {
        if (strcmp(value, "SHA256") != 0 && strcmp(value, "SHA384") != 0 &&
            strcmp(value, "SHA512") != 0)
            return fail(ctx, "%s must be SHA256, SHA384 or SHA512", key);
        return key[0] == 'd' ? set_str(ctx, u->digest, sizeof(u->digest), value)
                             : set_str(ctx, u->ess_digest, sizeof(u->ess_digest), value);
    }
    if (strcmp(key, "policy") == 0) {
        if (!valid_oid(value))
            return fail(ctx, "policy must be a dotted OID like 1.2.3.4, got '%s'", value);
        return set_str(ctx, u->policy, sizeof(u->policy), value);
    }
    if (strcmp(key, "accepted_policies") == 0) {
        char list[CLI_MAX_TSA_POLICIES * 64];
        char *save = NULL;
        (void)snprintf(list, sizeof(list), "%s", value);
        u->n_accepted = 0;
        for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            if (!valid_oid(tok))
                return fail(ctx, "accepted_policies: '%s' is not a dotted OID", tok);
            if (u->n_accepted >= CLI_MAX_TSA_POLICIES)
                return fail(ctx, "accepted_policies: at most %d", CLI_MAX_TSA_POLICIES);
            (void)snprintf(u->accepted[u->n_accepted++], sizeof(u->accepted[0]), "%s", tok);
        }
        return 1;
    }
    if (strcmp(key, "accuracy") == 0) {
        if (parse_accuracy(value, &u->accuracy_us) != UTIL_OK)
            return fail(ctx, "accuracy must be like 1s, 100ms or 500us (at most 1h), got '%s'",
                        value);
        return 1;
    }
    if (strcmp(key, "tsa_name") == 0)
        return set_bool(ctx, &u->tsa_name, value);
    if (strcmp(key, "allow_weak_hashes") == 0)
        return set_bool(ctx, &u->allow_weak_hashes, value);
    return fail(ctx, "unknown directive '%s' in [tsa.%s]", key, name);
}

/* [crl] (on_entry's share, kept apart to bound its complexity). */
static int on_crl(struct parse_ctx *ctx, const char *key, const char *value)
{
    struct cli_config *cfg = ctx->cfg;
    if (strcmp(key, "publish_dir") == 0)
        return set_path(ctx, cfg->crl_publish_dir, sizeof(cfg->crl_publish_dir), value);
    if (strcmp(key, "deltas") == 0)
        return set_bool(ctx, &cfg->crl_deltas, value);
    if (strcmp(key, "validity") == 0)
        return set_duration(ctx, &cfg->crl_validity_s, value);
    if (strcmp(key, "delta_validity") == 0)
        return set_duration(ctx, &cfg->crl_delta_validity_s, value);
    if (strcmp(key, "interval") == 0)
        return set_duration(ctx, &cfg->crl_interval_s, value);
    if (strcmp(key, "coalesce") == 0) {
        if (!set_duration_ms(ctx, &cfg->crl_coalesce_ms, value))
            return 0;
        if (cfg->crl_coalesce_ms > 60000)
            return fail(ctx,
                        "coalesce must be at most 60s (a revocation must reach a CRL "
                        "within a minute), got '%s'",
                        value);
        return 1;
    }
    if (strcmp(key, "full_on_change") == 0)
        return set_bool(ctx, &cfg->crl_full_on_change, value);
    if (strcmp(key, "expired_retention") == 0)
        return set_duration(ctx, &cfg->crl_expired_retention_s, value);
    if (strcmp(key, "expired_on_crl_since") == 0) {
        if (strcmp(value, "off") == 0) {
            cfg->crl_expired_on_crl_since = 0;
            return 1;
        }
        if (util_time_parse(value, &cfg->crl_expired_on_crl_since) != UTIL_OK)
            return fail(ctx, "expected off or a date like 2026-01-01, got '%s'", value);
        return 1;
    }
    if (strcmp(key, "max_age") == 0)
        return set_duration(ctx, &cfg->crl_max_age_s, value);
    return fail(ctx, "unknown directive '%s' in [crl]", key);
}

static int on_entry(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *ctx = user;
    struct cli_config *cfg = ctx->cfg;
    struct http_limits *lim = &cfg->http.limits;

    if (ctx->failed)
        return 1; /* report only the first error */
    if (strcmp(section, "server") == 0) {
        if (strcmp(key, "data_dir") == 0)
            return set_path(ctx, cfg->data_dir, sizeof(cfg->data_dir), value);
        if (strcmp(key, "workers") == 0)
            return set_int(ctx, &cfg->workers, value, 0, 64);
        if (strcmp(key, "log_level") == 0) {
            if (strcmp(value, "debug") && strcmp(value, "info") && strcmp(value, "warn") &&
                strcmp(value, "error"))
                return fail(ctx, "log_level must be debug, info, warn or error, got '%s'", value);
            return set_str(ctx, cfg->log_level, sizeof(cfg->log_level), value);
        }
        if (strcmp(key, "public_url") == 0)
            return set_str(ctx, cfg->public_url, sizeof(cfg->public_url), value);
        if (strcmp(key, "user") == 0) {
            /* A POSIX portable user name; looked up (and root checked) by `pkiva serve`. */
            if (value[0] == '-' ||
                strspn(value, "abcdefghijklmnopqrstuvwxyz"
                              "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(value) ||
                strlen(value) > 32)
                return fail(ctx,
                            "user must be a user name of at most 32 characters of "
                            "[A-Za-z0-9._-], got '%s'",
                            value);
            return set_str(ctx, cfg->run_user, sizeof(cfg->run_user), value);
        }
        if (strcmp(key, "listen") == 0)
            return set_listen(ctx, &cfg->http.listeners[0], value);
        if (strcmp(key, "admin_listen") == 0)
            return set_listen(ctx, &cfg->http.listeners[1], value);
        if (strcmp(key, "max_connections") == 0)
            return set_int(ctx, &lim->max_connections, value, 1, 1000000);
        if (strcmp(key, "max_connections_per_client") == 0)
            return set_int(ctx, &lim->max_connections_per_client, value, 0, 1000000);
        if (strcmp(key, "max_url") == 0)
            return set_size(ctx, &lim->max_url, value, 65536);
        if (strcmp(key, "max_headers") == 0)
            return set_int(ctx, &lim->max_headers, value, 1, 1000);
        if (strcmp(key, "max_header_bytes") == 0)
            return set_size(ctx, &lim->max_header_bytes, value, 1024 * 1024);
        if (strcmp(key, "max_body") == 0)
            return set_size(ctx, &lim->max_body, value, 64 * 1024 * 1024);
        if (strcmp(key, "max_pipelined") == 0)
            return set_int(ctx, &lim->max_pipelined, value, 1, 1024);
        if (strcmp(key, "header_timeout") == 0)
            return set_duration_ms(ctx, &lim->header_timeout_ms, value);
        if (strcmp(key, "body_timeout") == 0)
            return set_duration_ms(ctx, &lim->body_timeout_ms, value);
        if (strcmp(key, "idle_timeout") == 0)
            return set_duration_ms(ctx, &lim->idle_timeout_ms, value);
        if (strcmp(key, "write_timeout") == 0)
            return set_duration_ms(ctx, &lim->write_timeout_ms, value);
    } else if (strcmp(section, "hsm") == 0) {
        if (strcmp(key, "module") == 0)
            return set_path(ctx, cfg->hsm_module, sizeof(cfg->hsm_module), value);
        if (strcmp(key, "pin_file") == 0)
            return set_path(ctx, cfg->hsm_pin_file, sizeof(cfg->hsm_pin_file), value);
        if (strcmp(key, "softhsm_conf") == 0)
            return set_path(ctx, cfg->hsm_softhsm_conf, sizeof(cfg->hsm_softhsm_conf), value);
        if (strcmp(key, "provider") == 0)
            return set_path(ctx, cfg->hsm_provider, sizeof(cfg->hsm_provider), value);
        if (strcmp(key, "no_deinit") == 0)
            return set_bool(ctx, &cfg->hsm_no_deinit, value);
        if (strcmp(key, "sessions") == 0)
            return set_int(ctx, &cfg->hsm_sessions, value, 1, 256);
        if (strcmp(key, "queue_max") == 0)
            return set_int(ctx, &cfg->hsm_queue_max, value, 1, 1000000);
        if (strcmp(key, "init_args") == 0)
            return set_str(ctx, cfg->hsm_init_args, sizeof(cfg->hsm_init_args), value);
        if (strcmp(key, "verify_ecdsa") == 0)
            return set_verify_ecdsa(ctx, &cfg->hsm_ecdsa_verify_every, value);
        if (strcmp(key, "restart_after") == 0)
            return set_duration_ms(ctx, &cfg->hsm_restart_after_ms, value);
    } else if (strcmp(section, "store") == 0) {
        if (strcmp(key, "path") == 0)
            return set_path(ctx, cfg->store_path, sizeof(cfg->store_path), value);
        if (strcmp(key, "feed_poll") == 0)
            return set_duration_ms(ctx, &cfg->feed_poll_ms, value);
        if (strcmp(key, "backend") == 0)
            return set_store_backend(ctx, &cfg->store_backend, value);
        if (strcmp(key, "conninfo") == 0)
            return set_str(ctx, cfg->store_conninfo, sizeof(cfg->store_conninfo), value);
        if (strcmp(key, "password_file") == 0)
            return set_path(ctx, cfg->store_password_file, sizeof(cfg->store_password_file), value);
        if (strcmp(key, "max_feed_lag") == 0)
            return set_duration_ms(ctx, &cfg->store_max_feed_lag_ms, value);
        if (strcmp(key, "node_name") == 0)
            return set_str(ctx, cfg->node_name, sizeof(cfg->node_name), value);
    } else if (strcmp(section, "ocsp") == 0) {
        char why[256];
        int rc = ocsp_config_set(&cfg->ocsp, key, value, why, sizeof(why));
        if (rc == UTIL_EINVAL)
            return fail(ctx, "%s", why);
        if (rc == UTIL_OK)
            return 1;
    } else if (strcmp(section, "crl") == 0) {
        return on_crl(ctx, key, value);
    } else if (strcmp(section, "tsa") == 0) {
        char why[256];
        int rc = tsa_config_set(&cfg->tsa, key, value, why, sizeof(why));
        if (rc == UTIL_EINVAL)
            return fail(ctx, "%s", why);
        if (rc == UTIL_OK)
            return 1;
    } else if (strncmp(section, "tsa.", 4) == 0) {
        return on_tsa_unit(ctx, section + 4, key, value);
    } else if (strcmp(section, "revocation") == 0) {
        if (strcmp(key, "deadline") == 0)
            return set_duration(ctx, &cfg->sla_deadline_s, value);
        if (strcmp(key, "warn_before") == 0)
            return set_duration(ctx, &cfg->sla_warn_s, value);
        if (strcmp(key, "out_of_scope") == 0) {
            if (feed_client_parse_list(value, &cfg->sla_out_of_scope) == UTIL_OK)
                return 1;
            return fail(ctx,
                        "out_of_scope takes a list of ocsp_next_update, ocsp_max_age, crl, "
                        "delta_crl; got '%s'",
                        value);
        }
    } else if (strcmp(section, "admin") == 0) {
        if (strcmp(key, "token_file") == 0)
            return set_path(ctx, cfg->admin_token_file, sizeof(cfg->admin_token_file), value);
        if (strcmp(key, "tls_cert") == 0)
            return set_path(ctx, cfg->admin_tls_cert, sizeof(cfg->admin_tls_cert), value);
        if (strcmp(key, "tls_key") == 0)
            return set_path(ctx, cfg->admin_tls_key, sizeof(cfg->admin_tls_key), value);
        if (strcmp(key, "client_ca") == 0)
            return set_path(ctx, cfg->admin_client_ca, sizeof(cfg->admin_client_ca), value);
        if (strcmp(key, "require_client_cert") == 0)
            return set_bool(ctx, &cfg->admin_require_client_cert, value);
        if (strcmp(key, "client_crl") == 0)
            return set_path(ctx, cfg->admin_client_crl, sizeof(cfg->admin_client_crl), value);
        if (strcmp(key, "metrics_without_auth") == 0)
            return set_bool(ctx, &cfg->admin_metrics_without_auth, value);
        if (strcmp(key, "server_ca") == 0)
            return set_path(ctx, cfg->admin_server_ca, sizeof(cfg->admin_server_ca), value);
        if (strcmp(key, "client_cert") == 0)
            return set_path(ctx, cfg->admin_client_cert, sizeof(cfg->admin_client_cert), value);
        if (strcmp(key, "client_key") == 0)
            return set_path(ctx, cfg->admin_client_key, sizeof(cfg->admin_client_key), value);
    } else if (strcmp(section, "directory") == 0) {
        char why[256];
        if (directory_config_set(&cfg->directory, key, value, why, sizeof(why)) != UTIL_OK)
            return fail(ctx, "%s", why);
        return 1;
    } else if (strncmp(section, "issuer.", 7) == 0) {
        return on_issuer(ctx, section + 7, key, value);
    } else {
        return fail(ctx, "unknown section [%s]", section);
    }
    return fail(ctx, "unknown directive '%s' in [%s]", key, section);
}

/* Whole-configuration checks, after every line was read. */
/* Timing directives left unset take the defaults derived from the deadline, so that every kind of
 * conforming client gets a revocation within it (feed/contract.c). */
static void derive_defaults(struct cli_config *cfg)
{
    struct feed_contract_defaults d;
    feed_contract_defaults(cfg->sla_deadline_s, &d);
    if (cfg->ocsp.validity_seconds == 0)
        cfg->ocsp.validity_seconds = d.ocsp_validity_s;
    if (cfg->ocsp.max_age_seconds == 0)
        cfg->ocsp.max_age_seconds = d.ocsp_max_age_s < cfg->ocsp.validity_seconds
                                        ? d.ocsp_max_age_s
                                        : cfg->ocsp.validity_seconds;
    if (cfg->crl_validity_s == 0)
        cfg->crl_validity_s = d.crl_validity_s;
    if (cfg->crl_delta_validity_s == 0)
        cfg->crl_delta_validity_s = d.crl_delta_validity_s;
    if (cfg->crl_interval_s == 0) {
        int64_t shortest = cfg->crl_deltas && cfg->crl_delta_validity_s < cfg->crl_validity_s
                               ? cfg->crl_delta_validity_s
                               : cfg->crl_validity_s;
        cfg->crl_interval_s = d.crl_interval_s < shortest / 4 ? d.crl_interval_s : shortest / 4;
        if (cfg->crl_interval_s < 1)
            cfg->crl_interval_s = 1;
    }
    if (cfg->crl_max_age_s == 0)
        cfg->crl_max_age_s = d.crl_max_age_s;
}

void cli__hsm_config(const struct cli_config *cfg, int sessions, int queue_max,
                     struct hsm_config *out)
{
    memset(out, 0, sizeof(*out));
    out->module_path = cfg->hsm_module;
    out->pin_file = cfg->hsm_pin_file;
    out->provider_path = cfg->hsm_provider[0] ? cfg->hsm_provider : NULL;
    out->softhsm_no_deinit = cfg->hsm_no_deinit;
    out->sessions = sessions;
    out->queue_max = queue_max;
    out->init_args = cfg->hsm_init_args;
    out->ecdsa_verify_every = cfg->hsm_ecdsa_verify_every;
}

void cli__contract(const struct cli_config *cfg, struct feed_contract *out)
{
    struct feed_contract_input in;
    memset(&in, 0, sizeof(in));
    in.deadline_s = cfg->sla_deadline_s;
    in.ocsp_validity_s = cfg->ocsp.validity_seconds;
    in.ocsp_refresh_percent = cfg->ocsp.refresh_percent; /* not a directive: the module's */
    in.ocsp_max_age_s = cfg->ocsp.max_age_seconds;
    in.feed_poll_ms = cfg->feed_poll_ms;
    in.crl_validity_s = cfg->crl_validity_s;
    in.crl_delta_validity_s = cfg->crl_delta_validity_s;
    in.crl_interval_s = cfg->crl_interval_s;
    in.crl_coalesce_ms = cfg->crl_coalesce_ms;
    in.crl_deltas = cfg->crl_deltas;
    in.crl_full_on_change = cfg->crl_full_on_change;
    in.out_of_scope = cfg->sla_out_of_scope;
    feed_contract_compute(&in, out);
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

/* [store] backend = postgresql: store_path becomes the libpq URI of conninfo, with the password
 * file as libpq's passfile (pgpass format, owner-only like the PIN file: libpq itself ignores a
 * file that group or others may read; we refuse it with a clear message instead). */
static int validate_postgresql(struct cli_config *cfg, char *err, size_t err_len)
{
    const char *pw = cfg->store_password_file;
    struct stat st;
    int n = 0;

    if (cfg->store_path[0] != '\0') {
        (void)snprintf(err, err_len, "[store] path is for the sqlite backend; use conninfo");
        return UTIL_ECONFIG;
    }
    if (strncmp(cfg->store_conninfo, "postgresql://", 13) != 0 &&
        strncmp(cfg->store_conninfo, "postgres://", 11) != 0) {
        (void)snprintf(err, err_len,
                       "[store] conninfo must be a libpq URI (postgresql://user@host/db?...)");
        return UTIL_ECONFIG;
    }
    if (strstr(cfg->store_conninfo, "password") != NULL ||
        strstr(cfg->store_conninfo, "passfile") != NULL || uri_has_password(cfg->store_conninfo)) {
        (void)snprintf(err, err_len,
                       "[store] conninfo must not hold a password; use password_file");
        return UTIL_ECONFIG;
    }
    if (pw[0] == '\0') {
        n = snprintf(cfg->store_path, sizeof(cfg->store_path), "%s", cfg->store_conninfo);
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
        n = snprintf(cfg->store_path, sizeof(cfg->store_path), "%s%cpassfile=%s",
                     cfg->store_conninfo, strchr(cfg->store_conninfo, '?') != NULL ? '&' : '?', pw);
    }
    if (n < 0 || (size_t)n >= sizeof(cfg->store_path)) {
        (void)snprintf(err, err_len, "[store] conninfo is too long");
        return UTIL_ECONFIG;
    }
    return 0;
}

static int validate(struct cli_config *cfg, char *err, size_t err_len)
{
    derive_defaults(cfg);
    if (cfg->store_backend == CLI_STORE_POSTGRESQL) {
        int rc = validate_postgresql(cfg, err, err_len);
        if (rc != 0)
            return rc;
    } else if (cfg->store_conninfo[0] != '\0' || cfg->store_password_file[0] != '\0') {
        (void)snprintf(err, err_len,
                       "[store] conninfo and password_file need backend = postgresql");
        return UTIL_ECONFIG;
    }
    if (cfg->store_path[0] == '\0') {
        int n = snprintf(cfg->store_path, sizeof(cfg->store_path), "%s/pkiva.db", cfg->data_dir);
        if (n < 0 || (size_t)n >= sizeof(cfg->store_path)) {
            (void)snprintf(err, err_len, "[server] data_dir is too long");
            return UTIL_ECONFIG;
        }
    }
    /* The feed confirms it is in sync once per poll and reports once a second. */
    if (cfg->store_max_feed_lag_ms < cfg->feed_poll_ms + FEED_REPORT_MS) {
        (void)snprintf(err, err_len,
                       "[store] max_feed_lag must be at least feed_poll + %d ms (a node reports "
                       "its feed position once a second)",
                       FEED_REPORT_MS);
        return UTIL_ECONFIG;
    }
    if (cfg->hsm_pin_file[0] == '\0') {
        (void)snprintf(err, err_len, "[hsm] pin_file is required");
        return UTIL_ECONFIG;
    }
    if (cfg->n_issuers == 0) {
        (void)snprintf(err, err_len, "at least one [issuer.NAME] section is required");
        return UTIL_ECONFIG;
    }
    for (int i = 0; i < cfg->n_issuers; i++) {
        struct cli_issuer *is = &cfg->issuers[i];
        if (is->cert[0] == '\0' || is->key_uri[0] == '\0') {
            (void)snprintf(err, err_len, "[issuer.%s] needs cert and key", is->name);
            return UTIL_ECONFIG;
        }
        if (strncmp(is->key_uri, "pkcs11:", 7) != 0 ||
            (is->ocsp_key_uri[0] != '\0' && strncmp(is->ocsp_key_uri, "pkcs11:", 7) != 0)) {
            (void)snprintf(err, err_len, "[issuer.%s] keys must be PKCS#11 URIs (RFC 7512)",
                           is->name);
            return UTIL_ECONFIG;
        }
        if ((is->ocsp_cert[0] == '\0') != (is->ocsp_key_uri[0] == '\0')) {
            (void)snprintf(err, err_len, "[issuer.%s] ocsp_cert and ocsp_key go together",
                           is->name);
            return UTIL_ECONFIG;
        }
    }
    for (int i = 0; i < cfg->n_tsa_units; i++) {
        const struct cli_tsa_unit *u = &cfg->tsa_units[i];
        if (u->cert[0] == '\0' || u->key_uri[0] == '\0' || u->policy[0] == '\0') {
            (void)snprintf(err, err_len, "[tsa.%s] needs cert, key and policy", u->name);
            return UTIL_ECONFIG;
        }
    }
    if (cfg->ocsp.max_age_seconds > cfg->ocsp.validity_seconds) {
        (void)snprintf(err, err_len, "[ocsp] max_age must not exceed validity");
        return UTIL_ECONFIG;
    }
    if (cfg->crl_publish_dir[0] == '\0') {
        int n =
            snprintf(cfg->crl_publish_dir, sizeof(cfg->crl_publish_dir), "%s/crl", cfg->data_dir);
        if (n < 0 || (size_t)n >= sizeof(cfg->crl_publish_dir)) {
            (void)snprintf(err, err_len, "[server] data_dir is too long");
            return UTIL_ECONFIG;
        }
    }
    if (cfg->crl_interval_s >= cfg->crl_validity_s ||
        (cfg->crl_deltas && cfg->crl_interval_s >= cfg->crl_delta_validity_s)) {
        (void)snprintf(err, err_len,
                       "[crl] interval must be shorter than validity and "
                       "delta_validity (CRLs must be replaced before nextUpdate)");
        return UTIL_ECONFIG;
    }
    if (cfg->sla_warn_s >= cfg->sla_deadline_s) {
        (void)snprintf(err, err_len, "[revocation] warn_before must be less than deadline");
        return UTIL_ECONFIG;
    }
    if (cfg->http.listeners[0].port != 0 &&
        cfg->http.listeners[0].port == cfg->http.listeners[1].port &&
        strcmp(cfg->http.listeners[0].host, cfg->http.listeners[1].host) == 0) {
        (void)snprintf(err, err_len, "[server] listen and admin_listen must differ");
        return UTIL_ECONFIG;
    }
    if ((cfg->admin_tls_cert[0] == '\0') != (cfg->admin_tls_key[0] == '\0')) {
        (void)snprintf(err, err_len, "[admin] tls_cert and tls_key go together");
        return UTIL_ECONFIG;
    }
    if (cfg->admin_client_ca[0] != '\0' && cfg->admin_tls_cert[0] == '\0') {
        (void)snprintf(err, err_len,
                       "[admin] client_ca needs tls_cert (client certificates "
                       "exist only in TLS)");
        return UTIL_ECONFIG;
    }
    if (cfg->admin_client_crl[0] != '\0' && cfg->admin_client_ca[0] == '\0') {
        (void)snprintf(err, err_len, "[admin] client_crl needs client_ca");
        return UTIL_ECONFIG;
    }
    if (cfg->admin_require_client_cert && cfg->admin_client_ca[0] == '\0') {
        (void)snprintf(err, err_len, "[admin] require_client_cert needs client_ca");
        return UTIL_ECONFIG;
    }
    if ((cfg->admin_client_cert[0] == '\0') != (cfg->admin_client_key[0] == '\0')) {
        (void)snprintf(err, err_len, "[admin] client_cert and client_key go together");
        return UTIL_ECONFIG;
    }
    if (cfg->directory.issuers[0] != '\0') {
        char list[sizeof(cfg->directory.issuers)];
        char *save = NULL;
        (void)snprintf(list, sizeof(list), "%s", cfg->directory.issuers);
        for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
            int found = 0;
            for (int i = 0; i < cfg->n_issuers; i++)
                found |= strcmp(cfg->issuers[i].name, tok) == 0;
            if (!found) {
                (void)snprintf(err, err_len, "[directory] issuers: no [issuer.%s] section", tok);
                return UTIL_ECONFIG;
            }
        }
    }
    if (cfg->public_url[0] == '\0')
        (void)snprintf(cfg->public_url, sizeof(cfg->public_url), "http://%s:%d",
                       cfg->http.listeners[0].host, cfg->http.listeners[0].port);
    return UTIL_OK;
}

int cli_config_parse_string(const char *text, const char *name, const char *base_dir,
                            struct cli_config *cfg, char *err, size_t err_len)
{
    char reason[512] = "";
    struct parse_ctx ctx = {cfg, name, base_dir, reason, sizeof(reason), 0};
    int line;

    cli_config_defaults(cfg);
    (void)snprintf(cfg->source, sizeof(cfg->source), "%s", name);
    line = ini_parse_string(text, on_entry, &ctx);
    if (line != 0) {
        if (line < 0)
            (void)snprintf(err, err_len, "%s: cannot read the file", name);
        else if (ctx.failed)
            (void)snprintf(err, err_len, "%s:%d: %s", name, line, reason);
        else
            (void)snprintf(err, err_len, "%s:%d: syntax error (expected [section] or key = value)",
                           name, line);
        return UTIL_ECONFIG;
    }
    if (validate(cfg, reason, sizeof(reason)) != UTIL_OK) {
        (void)snprintf(err, err_len, "%s: %s", name, reason);
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

int cli_config_load(const char *path, struct cli_config *cfg, char *err, size_t err_len)
{
    unsigned char *text = NULL;
    size_t len = 0;
    char dir[CLI_PATH_MAX];
    char *slash;
    int rc;

    rc = util_file_read(path, 1024 * 1024, &text, &len);
    if (rc != UTIL_OK) {
        (void)snprintf(err, err_len, "%s: cannot read: %s", path, util_strerror(rc));
        return UTIL_ECONFIG;
    }
    if (strlen((char *)text) != len) {
        free(text);
        (void)snprintf(err, err_len, "%s: contains a NUL byte", path);
        return UTIL_ECONFIG;
    }
    (void)snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (slash != NULL)
        *slash = '\0';
    else
        (void)snprintf(dir, sizeof(dir), ".");
    rc = cli_config_parse_string((char *)text, path, dir, cfg, err, err_len);
    free(text);
    return rc;
}

int cli_workers_for_cpus(int cpus)
{
    return cpus > 1 ? cpus - 1 : 1;
}

int cli_default_workers(void)
{
    cpu_set_t set;
    long cpus;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        cpus = CPU_COUNT(&set);
    else
        cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 256)
        cpus = 256;
    return cli_workers_for_cpus((int)cpus);
}
