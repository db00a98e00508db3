/* SPDX-License-Identifier: Apache-2.0 */
/* Configuration: INI files parsed with inih, every directive checked as it is read (file, line,
 * directive and reason on error), then the whole checked before anything is opened or bound. The
 * directives, their parsers and defaults are the modules' tables (util.h, UTIL_CONF); this file maps
 * sections to tables, declares cli's own ([server]'s process settings, [issuer.NAME]) and holds the
 * checks that span sections. */
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

/* [server] user: a POSIX portable user name; looked up (and root checked) by `pkiva serve`. */
static int parse_user(const struct util_conf_directive *d, void *config, const char *value,
                      char *err, size_t err_len)
{
    struct cli_config *cfg = config;
    if (value[0] == '-' ||
        strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            strlen(value) ||
        strlen(value) > 32)
        return util_conf_fail(err, err_len,
                              "%s must be a user name of at most 32 characters of "
                              "[A-Za-z0-9._-], got '%s'",
                              d->name, value);
    (void)snprintf(cfg->run_user, sizeof(cfg->run_user), "%s", value); /* length checked */
    return UTIL_OK;
}

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const digests[] = {"SHA256", "SHA384", "SHA512", NULL};

#define C struct cli_config
#define I struct cli_issuer

/* [server]'s process settings; its listeners and limits are http's (http_config.c). */
static const struct util_conf_directive server_directives[] = {
    UTIL_CONF(PATH, "data_dir", C, data_dir, 0, 0, 0, "./var",
              "the store, the published CRLs and (embedded default) the token"),
    UTIL_CONF(STRING, "public_url", C, public_url, 0, 0, 0, "",
              "base URL of the public listener in certificates; unset = http://<listen>"),
    UTIL_CONF(CUSTOM, "user", C, run_user, 0, 0, parse_user, "",
              "unprivileged user to switch to after binding; unset = stay"),
    UTIL_CONF(INT, "workers", C, workers, 0, 64, 0, "0",
              "loop threads; 0 = one per CPU the process may run on, less one"),
    UTIL_CONF(STRING, "log_level", C, log_level, 0, 0, log_levels, "info",
              "debug, info, warn or error"),
};

/* [issuer.NAME]: a CA whose certificates pkiva answers for. */
static const struct util_conf_directive issuer_directives[] = {
    UTIL_CONF(PATH, "cert", I, cert, 0, 0, 0, "", "PEM file of the CA certificate; required"),
    UTIL_CONF(STRING, "key", I, key_uri, 0, 0, 0, "",
              "PKCS#11 URI of the CA key (CRLs; OCSP without a responder); required"),
    UTIL_CONF(PATH, "ocsp_cert", I, ocsp_cert, 0, 0, 0, "",
              "delegated OCSP responder certificate; unset = the CA signs"),
    UTIL_CONF(STRING, "ocsp_key", I, ocsp_key_uri, 0, 0, 0, "", "its PKCS#11 URI"),
    UTIL_CONF(BOOL, "ocsp_ignore_nonce", I, ocsp_ignore_nonce, 0, 1, 0, "no",
              "serve the pre-signed response even when a nonce is asked"),
    UTIL_CONF(BOOL, "rsa_pss", I, rsa_pss, 0, 1, 0, "no", "sign with RSASSA-PSS (RSA keys)"),
    UTIL_CONF(STRING, "digest", I, digest, 0, 0, digests, "",
              "signature digest; unset = the key's default"),
};

#define N(table) (sizeof(table) / sizeof(table[0]))

const struct util_conf_directive *cli_server_directives(size_t *n)
{
    *n = N(server_directives);
    return server_directives;
}

const struct util_conf_directive *cli_issuer_directives(size_t *n)
{
    *n = N(issuer_directives);
    return issuer_directives;
}

/* DESIGN: the section -> table map. A section may have several tables (of several modules: [server]
 * is cli's and http's, [store] store's and the feed's); a line goes to the first that knows its
 * directive. Each table sets fields of its module's struct, found at offset in cli_config. */
static const struct section {
    const char *name;
    const struct util_conf_directive *(*directives)(size_t *n);
    size_t offset;
} sections[] = {
    {"server", cli_server_directives, 0},
    {"server", http_config_directives, offsetof(C, http)},
    {"hsm", hsm_settings_directives, offsetof(C, hsm)},
    {"store", store_settings_directives, offsetof(C, store)},
    {"store", feed_store_directives, offsetof(C, feed)},
    {"ocsp", ocsp_config_directives, offsetof(C, ocsp)},
    {"crl", crl_settings_directives, offsetof(C, crl)},
    {"tsa", tsa_config_directives, offsetof(C, tsa)},
    {"revocation", feed_revocation_directives, offsetof(C, feed)},
    {"admin", admin_settings_directives, offsetof(C, admin)},
    {"directory", directory_config_directives, offsetof(C, directory)},
};

static void issuer_default(void *item)
{
    memset(item, 0, sizeof(struct cli_issuer));
    util_conf_defaults(issuer_directives, N(issuer_directives), item);
}

static void tsa_unit_default(void *item)
{
    tsa_unit_settings_default(item);
}

/* Sections of one instance each: [PREFIX.NAME], an array of structs that start with char
 * name[UTIL_NAME_MAX]. */
static const struct instances {
    const char *prefix;
    const char *what, *plural; /* for messages */
    const struct util_conf_directive *(*directives)(size_t *n);
    void (*init)(void *item);
    size_t array, size, count; /* offsets in cli_config, size of one item */
    int max;
} instances[] = {
    {"issuer.", "issuer", "issuers", cli_issuer_directives, issuer_default, offsetof(C, issuers),
     sizeof(struct cli_issuer), offsetof(C, n_issuers), CLI_MAX_ISSUERS},
    {"tsa.", "TSA unit", "TSA units", tsa_unit_settings_directives, tsa_unit_default,
     offsetof(C, tsa_units), sizeof(struct tsa_unit_settings), offsetof(C, n_tsa_units),
     CLI_MAX_TSA_UNITS},
};

_Static_assert(offsetof(struct cli_issuer, name) == 0 &&
                   offsetof(struct tsa_unit_settings, name) == 0,
               "instances start with their name");

const struct util_conf_directive *cli_config_table(size_t index, const char **section, size_t *n)
{
    if (index < N(sections)) {
        *section = sections[index].name;
        return sections[index].directives(n);
    }
    index -= N(sections);
    if (index < N(instances)) {
        *section = instances[index].prefix;
        return instances[index].directives(n);
    }
    return NULL;
}

/* The default of a directive, as its table writes it. */
static const char *table_default(const struct util_conf_directive *(*directives)(size_t *n),
                                 const char *name)
{
    size_t n = 0;
    const struct util_conf_directive *table = directives(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return table[i].dflt;
    return ""; /* not reached: callers name directives of the table */
}

void cli_demo_defaults(struct cli_demo_options *opts)
{
    memset(opts, 0, sizeof(*opts));
    (void)snprintf(opts->data_dir, sizeof(opts->data_dir), "%s",
                   table_default(cli_server_directives, "data_dir"));
    (void)snprintf(opts->public_listen, sizeof(opts->public_listen), "%s",
                   table_default(http_config_directives, "listen"));
    (void)snprintf(opts->admin_listen, sizeof(opts->admin_listen), "%s",
                   table_default(http_config_directives, "admin_listen"));
}

void cli_config_defaults(struct cli_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(server_directives, N(server_directives), cfg);
    http_config_default(&cfg->http);
    cfg->http.server_header = "pkiva";
    hsm_settings_default(&cfg->hsm);
    store_settings_default(&cfg->store);
    feed_settings_default(&cfg->feed);
    ocsp_config_default(&cfg->ocsp);
    crl_settings_default(&cfg->crl);
    tsa_config_default(&cfg->tsa);
    admin_settings_default(&cfg->admin);
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

int cli_parse_listen(const char *text, struct http_listener_config *out)
{
    return http_listener_parse(text, out);
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

/* One line through table into config: 1 (inih: fine) when set, else the reason. */
static int apply(struct parse_ctx *ctx, const struct util_conf_directive *table, size_t n,
                 void *config, const char *key, const char *value, int *known)
{
    char why[512];
    int rc = util_conf_set(table, n, config, key, value, ctx->base_dir, why, sizeof(why));
    *known = rc != UTIL_ENOTFOUND;
    if (rc == UTIL_OK)
        return 1;
    return rc == UTIL_EINVAL ? fail(ctx, "%s", why) : 0;
}

/* The item of an instance section, created (with its table's defaults) on its first line. */
static int on_instance(struct parse_ctx *ctx, const struct instances *in, const char *name,
                       const char *key, const char *value)
{
    char *items = (char *)ctx->cfg + in->array;
    int *count = (int *)((char *)ctx->cfg + in->count);
    char *item = NULL;
    const struct util_conf_directive *table;
    size_t n = 0;
    int known = 0, rc;

    if (!util_name_valid(name))
        return fail(ctx, "%s name '%s' must be 1-63 characters of [A-Za-z0-9._-]", in->what, name);
    for (int i = 0; i < *count && item == NULL; i++)
        if (strcmp(items + (size_t)i * in->size, name) == 0)
            item = items + (size_t)i * in->size;
    if (item == NULL) {
        if (*count >= in->max)
            return fail(ctx, "too many %s (at most %d)", in->plural, in->max);
        item = items + (size_t)(*count)++ * in->size;
        in->init(item);
        (void)snprintf(item, UTIL_NAME_MAX, "%s", name); /* util_name_valid bounds it */
    }
    table = in->directives(&n);
    rc = apply(ctx, table, n, item, key, value, &known);
    if (!known)
        return fail(ctx, "unknown directive '%s' in [%s%s]", key, in->prefix, name);
    return rc;
}

/* inih's handler: the section's tables set the line's directive. */
static int on_entry(void *user, const char *section, const char *key, const char *value)
{
    struct parse_ctx *ctx = user;
    int section_known = 0;

    if (ctx->failed)
        return 1; /* report only the first error */
    for (size_t i = 0; i < N(instances); i++)
        if (strncmp(section, instances[i].prefix, strlen(instances[i].prefix)) == 0)
            return on_instance(ctx, &instances[i], section + strlen(instances[i].prefix), key,
                               value);
    for (size_t i = 0; i < N(sections); i++) {
        const struct util_conf_directive *table;
        size_t n = 0;
        int known = 0, rc;
        if (strcmp(section, sections[i].name) != 0)
            continue;
        section_known = 1;
        table = sections[i].directives(&n);
        rc = apply(ctx, table, n, (char *)ctx->cfg + sections[i].offset, key, value, &known);
        if (known)
            return rc;
    }
    if (!section_known)
        return fail(ctx, "unknown section [%s]", section);
    return fail(ctx, "unknown directive '%s' in [%s]", key, section);
}

/* Whole-configuration checks, after every line was read. */
/* Timing directives left unset take the defaults derived from the deadline, so that every kind of
 * conforming client gets a revocation within it (feed/contract.c). */
static void derive_defaults(struct cli_config *cfg)
{
    struct feed_contract_defaults d;
    feed_contract_defaults(cfg->feed.deadline_s, &d);
    if (cfg->ocsp.validity_seconds == 0)
        cfg->ocsp.validity_seconds = d.ocsp_validity_s;
    if (cfg->ocsp.max_age_seconds == 0)
        cfg->ocsp.max_age_seconds = d.ocsp_max_age_s < cfg->ocsp.validity_seconds
                                        ? d.ocsp_max_age_s
                                        : cfg->ocsp.validity_seconds;
    if (cfg->crl.validity_s == 0)
        cfg->crl.validity_s = d.crl_validity_s;
    if (cfg->crl.delta_validity_s == 0)
        cfg->crl.delta_validity_s = d.crl_delta_validity_s;
    if (cfg->crl.interval_s == 0) {
        int64_t shortest = cfg->crl.deltas && cfg->crl.delta_validity_s < cfg->crl.validity_s
                               ? cfg->crl.delta_validity_s
                               : cfg->crl.validity_s;
        cfg->crl.interval_s = d.crl_interval_s < shortest / 4 ? d.crl_interval_s : shortest / 4;
        if (cfg->crl.interval_s < 1)
            cfg->crl.interval_s = 1;
    }
    if (cfg->crl.max_age_s == 0)
        cfg->crl.max_age_s = d.crl_max_age_s;
}

void cli__hsm_config(const struct cli_config *cfg, int sessions, int queue_max,
                     struct hsm_config *out)
{
    memset(out, 0, sizeof(*out));
    out->module_path = cfg->hsm.module;
    out->pin_file = cfg->hsm.pin_file;
    out->provider_path = cfg->hsm.provider[0] ? cfg->hsm.provider : NULL;
    out->softhsm_no_deinit = cfg->hsm.no_deinit;
    out->sessions = sessions;
    out->queue_max = queue_max;
    out->init_args = cfg->hsm.init_args;
    out->ecdsa_verify_every = cfg->hsm.ecdsa_verify_every;
    out->provider_only = !cfg->hsm.direct;
}

void cli__contract(const struct cli_config *cfg, struct feed_contract *out)
{
    struct feed_contract_input in;
    memset(&in, 0, sizeof(in));
    in.deadline_s = cfg->feed.deadline_s;
    in.ocsp_validity_s = cfg->ocsp.validity_seconds;
    in.ocsp_refresh_percent = cfg->ocsp.refresh_percent; /* not a directive: the module's */
    in.ocsp_max_age_s = cfg->ocsp.max_age_seconds;
    in.feed_poll_ms = cfg->feed.poll_ms;
    in.crl_validity_s = cfg->crl.validity_s;
    in.crl_delta_validity_s = cfg->crl.delta_validity_s;
    in.crl_interval_s = cfg->crl.interval_s;
    in.crl_coalesce_ms = cfg->crl.coalesce_ms;
    in.crl_deltas = cfg->crl.deltas;
    in.crl_full_on_change = cfg->crl.full_on_change;
    in.out_of_scope = cfg->feed.out_of_scope;
    feed_contract_compute(&in, out);
}

static int validate(struct cli_config *cfg, char *err, size_t err_len)
{
    derive_defaults(cfg);
    if (store_settings_resolve(&cfg->store, cfg->data_dir, cfg->store_path, sizeof(cfg->store_path),
                               err, err_len) != UTIL_OK)
        return UTIL_ECONFIG;
    if (store_settings_resolve_read(&cfg->store, cfg->store_read_path, sizeof(cfg->store_read_path),
                                    err, err_len) != UTIL_OK)
        return UTIL_ECONFIG;
    /* The feed confirms it is in sync once per poll and reports once a second. */
    if (cfg->feed.max_feed_lag_ms < cfg->feed.poll_ms + FEED_REPORT_MS) {
        (void)snprintf(err, err_len,
                       "[store] max_feed_lag must be at least feed_poll + %d ms (a node reports "
                       "its feed position once a second)",
                       FEED_REPORT_MS);
        return UTIL_ECONFIG;
    }
    if (cfg->hsm.pin_file[0] == '\0') {
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
        const struct tsa_unit_settings *u = &cfg->tsa_units[i];
        if (u->cert[0] == '\0' || u->key_uri[0] == '\0' || u->policy[0] == '\0') {
            (void)snprintf(err, err_len, "[tsa.%s] needs cert, key and policy", u->name);
            return UTIL_ECONFIG;
        }
    }
    if (cfg->ocsp.max_age_seconds > cfg->ocsp.validity_seconds) {
        (void)snprintf(err, err_len, "[ocsp] max_age must not exceed validity");
        return UTIL_ECONFIG;
    }
    if (cfg->crl.publish_dir[0] == '\0') {
        int n =
            snprintf(cfg->crl.publish_dir, sizeof(cfg->crl.publish_dir), "%s/crl", cfg->data_dir);
        if (n < 0 || (size_t)n >= sizeof(cfg->crl.publish_dir)) {
            (void)snprintf(err, err_len, "[server] data_dir is too long");
            return UTIL_ECONFIG;
        }
    }
    if (cfg->crl.interval_s >= cfg->crl.validity_s ||
        (cfg->crl.deltas && cfg->crl.interval_s >= cfg->crl.delta_validity_s)) {
        (void)snprintf(err, err_len,
                       "[crl] interval must be shorter than validity and "
                       "delta_validity (CRLs must be replaced before nextUpdate)");
        return UTIL_ECONFIG;
    }
    if (cfg->feed.warn_s >= cfg->feed.deadline_s) {
        (void)snprintf(err, err_len, "[revocation] warn_before must be less than deadline");
        return UTIL_ECONFIG;
    }
    if (cfg->http.listeners[0].port != 0 &&
        cfg->http.listeners[0].port == cfg->http.listeners[1].port &&
        strcmp(cfg->http.listeners[0].host, cfg->http.listeners[1].host) == 0) {
        (void)snprintf(err, err_len, "[server] listen and admin_listen must differ");
        return UTIL_ECONFIG;
    }
    if (admin_settings_check(&cfg->admin, err, err_len) != UTIL_OK)
        return UTIL_ECONFIG;
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
