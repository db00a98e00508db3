/* SPDX-License-Identifier: Apache-2.0 */
/* directory_config.c: the [directory] section, each directive declared once in the table below
 * (name, kind, limits, default, documentation); the configuration reader applies the section's
 * lines with it and conf/pkiva.conf documents the same directives and defaults. */
#include "directory_int.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <util/util.h>

static int parse_fields(const struct util_conf_directive *d, void *config, const char *value,
                        char *err, size_t err_len)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"cn", DIRECTORY_FIELD_CN},         {"o", DIRECTORY_FIELD_O},
                 {"ou", DIRECTORY_FIELD_OU},         {"email", DIRECTORY_FIELD_EMAIL},
                 {"serial", DIRECTORY_FIELD_SERIAL}, {"fingerprint", DIRECTORY_FIELD_FINGERPRINT}};
    struct directory_config *cfg = config;
    char list[256];
    char *save = NULL;
    unsigned bits = 0;
    if (strlen(value) >= sizeof(list))
        goto bad;
    (void)snprintf(list, sizeof(list), "%s", value);
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        size_t i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcmp(tok, names[i].name) == 0)
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            goto bad;
        bits |= names[i].bit;
    }
    cfg->search_fields = bits;
    return UTIL_OK;
bad:
    return util_conf_fail(err, err_len,
                          "%s: a list of cn, o, ou, email, serial, fingerprint, got '%s'", d->name,
                          value);
}

static int parse_issuers(const struct util_conf_directive *d, void *config, const char *value,
                         char *err, size_t err_len)
{
    struct directory_config *cfg = config;
    char list[sizeof(cfg->issuers)];
    char *save = NULL;
    if (strlen(value) >= sizeof(cfg->issuers))
        return util_conf_fail(err, err_len, "%s: too long: '%s'", d->name, value);
    (void)snprintf(list, sizeof(list), "%s", value);
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
        if (!util_name_valid(tok))
            return util_conf_fail(err, err_len, "%s: '%s' is not an issuer name", d->name, tok);
    (void)snprintf(cfg->issuers, sizeof(cfg->issuers), "%s", value);
    return UTIL_OK;
}

static int parse_offset(const struct util_conf_directive *d, void *config, const char *value,
                        char *err, size_t err_len)
{
    struct directory_config *cfg = config;
    int sign, h, m;
    if ((value[0] != '+' && value[0] != '-') || strlen(value) != 6 || value[3] != ':' ||
        !isdigit((unsigned char)value[1]) || !isdigit((unsigned char)value[2]) ||
        !isdigit((unsigned char)value[4]) || !isdigit((unsigned char)value[5]))
        goto bad;
    sign = value[0] == '-' ? -1 : 1;
    h = (value[1] - '0') * 10 + (value[2] - '0');
    m = (value[4] - '0') * 10 + (value[5] - '0');
    if (h > 14 || m > 59)
        goto bad;
    cfg->utc_offset_minutes = sign * (h * 60 + m);
    return UTIL_OK;
bad:
    return util_conf_fail(err, err_len, "%s: expected +HH:MM or -HH:MM, got '%s'", d->name, value);
}

static const char *const langs[] = {"vi", "en", NULL};

#define C struct directory_config

static const struct util_conf_directive directives[] = {
    UTIL_CONF(BOOL, "enabled", C, enabled, 0, 1, 0, "yes",
              "serve the directory pages under /directory on the public listener"),
    UTIL_CONF(CUSTOM, "search_fields", C, search_fields, 0, 0, parse_fields,
              "cn, o, ou, email, serial, fingerprint", "what a search may look in"),
    UTIL_CONF(CUSTOM, "issuers", C, issuers, 0, 0, parse_issuers, "",
              "issuers published (comma-separated names); empty = every configured issuer"),
    UTIL_CONF(BOOL, "show_email", C, show_email, 0, 1, 0, "yes",
              "no: e-mail addresses are masked on pages and in JSON"),
    UTIL_CONF(INT, "page_size", C, page_size, 1, STORE_SEARCH_LIMIT_MAX, 0, "20",
              "results per page"),
    UTIL_CONF(INT, "threads", C, threads, 1, 64, 0, "2",
              "store worker threads for searches and certificate pages"),
    UTIL_CONF(INT, "queue_max", C, queue_max, 1, 100000, 0, "64",
              "requests waiting for those threads; past it 503"),
    UTIL_CONF(INT, "rate_per_minute", C, rate_per_minute, 1, 1000000, 0, "60",
              "searches, certificate pages and checks per client address per minute"),
    UTIL_CONF(INT, "rate_burst", C, rate_burst, 1, 1000000, 0, "20",
              "how many of those may come at once"),
    UTIL_CONF(SIZE, "upload_max", C, upload_max, 1024, 1024 * 1024, 0, "64k",
              "largest certificate the status check accepts"),
    UTIL_CONF(CUSTOM, "utc_offset", C, utc_offset_minutes, 0, 0, parse_offset, "+07:00",
              "local time shown beside UTC"),
    UTIL_CONF(STRING, "default_lang", C, default_lang, 0, 0, langs, "vi",
              "vi or en, when Accept-Language names neither"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void directory_config_default(struct directory_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(directives, N_DIRECTIVES, cfg);
}

const struct util_conf_directive *directory_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
