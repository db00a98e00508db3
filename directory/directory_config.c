/* SPDX-License-Identifier: Apache-2.0 */
/* directory_config.c: the [directory] section, each directive declared once in the table below
 * (name, parser, default, documentation); cli/config.c hands the section's lines to
 * directory_config_set and conf/pkiva.conf documents the same directives and defaults. */
#include "directory_int.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <util/util.h>

enum kind { K_BOOL, K_INT, K_FIELDS, K_LIST, K_SIZE, K_OFFSET, K_LANG };

static const struct directive {
    const char *name;
    enum kind kind;
    size_t offset;
    long min, max;
    const char *dflt;
    const char *doc;
} directives[] = {
    {"enabled", K_BOOL, offsetof(struct directory_config, enabled), 0, 1, "yes",
     "serve the directory pages under /directory on the public listener"},
    {"search_fields", K_FIELDS, offsetof(struct directory_config, search_fields), 0, 0,
     "cn, o, ou, email, serial, fingerprint", "what a search may look in"},
    {"issuers", K_LIST, offsetof(struct directory_config, issuers), 0, 0, "",
     "issuers published (comma-separated names); empty = every configured issuer"},
    {"show_email", K_BOOL, offsetof(struct directory_config, show_email), 0, 1, "yes",
     "no: e-mail addresses are masked on pages and in JSON"},
    {"page_size", K_INT, offsetof(struct directory_config, page_size), 1, STORE_SEARCH_LIMIT_MAX,
     "20", "results per page"},
    {"threads", K_INT, offsetof(struct directory_config, threads), 1, 64, "2",
     "store worker threads for searches and certificate pages"},
    {"queue_max", K_INT, offsetof(struct directory_config, queue_max), 1, 100000, "64",
     "requests waiting for those threads; past it 503"},
    {"rate_per_minute", K_INT, offsetof(struct directory_config, rate_per_minute), 1, 1000000, "60",
     "searches, certificate pages and checks per client address per minute"},
    {"rate_burst", K_INT, offsetof(struct directory_config, rate_burst), 1, 1000000, "20",
     "how many of those may come at once"},
    {"upload_max", K_SIZE, offsetof(struct directory_config, upload_max), 1024, 1024 * 1024, "64k",
     "largest certificate the status check accepts"},
    {"utc_offset", K_OFFSET, offsetof(struct directory_config, utc_offset_minutes), 0, 0, "+07:00",
     "local time shown beside UTC"},
    {"default_lang", K_LANG, offsetof(struct directory_config, default_lang), 0, 0, "vi",
     "vi or en, when Accept-Language names neither"},
};

static int fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap); /* truncation only shortens the message */
    va_end(ap);
    return UTIL_EINVAL;
}

static int parse_fields(const char *value, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } names[] = {{"cn", DIRECTORY_FIELD_CN},         {"o", DIRECTORY_FIELD_O},
                 {"ou", DIRECTORY_FIELD_OU},         {"email", DIRECTORY_FIELD_EMAIL},
                 {"serial", DIRECTORY_FIELD_SERIAL}, {"fingerprint", DIRECTORY_FIELD_FINGERPRINT}};
    char list[256];
    char *save = NULL;
    unsigned bits = 0;
    if (strlen(value) >= sizeof(list))
        return UTIL_EINVAL;
    (void)snprintf(list, sizeof(list), "%s", value);
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        size_t i;
        for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
            if (strcmp(tok, names[i].name) == 0)
                break;
        if (i == sizeof(names) / sizeof(names[0]))
            return UTIL_EINVAL;
        bits |= names[i].bit;
    }
    *out = bits;
    return UTIL_OK;
}

static int parse_offset(const char *value, int *minutes)
{
    int sign, h, m;
    if ((value[0] != '+' && value[0] != '-') || strlen(value) != 6 || value[3] != ':' ||
        !isdigit((unsigned char)value[1]) || !isdigit((unsigned char)value[2]) ||
        !isdigit((unsigned char)value[4]) || !isdigit((unsigned char)value[5]))
        return UTIL_EINVAL;
    sign = value[0] == '-' ? -1 : 1;
    h = (value[1] - '0') * 10 + (value[2] - '0');
    m = (value[4] - '0') * 10 + (value[5] - '0');
    if (h > 14 || m > 59)
        return UTIL_EINVAL;
    *minutes = sign * (h * 60 + m);
    return UTIL_OK;
}

static int apply(struct directory_config *cfg, const struct directive *d, const char *value,
                 char *err, size_t err_len)
{
    char *field = (char *)cfg + d->offset;
    char *end = NULL;
    long v;
    switch (d->kind) {
    case K_BOOL:
        if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on") ||
            !strcmp(value, "1"))
            *(int *)field = 1;
        else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off") ||
                 !strcmp(value, "0"))
            *(int *)field = 0;
        else
            return fail(err, err_len, "%s: expected yes or no, got '%s'", d->name, value);
        return UTIL_OK;
    case K_INT:
        errno = 0;
        v = strtol(value, &end, 10);
        if (errno != 0 || end == value || *end != '\0' || v < d->min || v > d->max) {
            char range[64];
            (void)snprintf(range, sizeof(range), "%s: expected an integer in %ld..%ld, got",
                           d->name, d->min, d->max);
            return fail(err, err_len, "%s '%s'", range, value);
        }
        *(int *)field = (int)v;
        return UTIL_OK;
    case K_FIELDS:
        if (parse_fields(value, (unsigned *)field) != UTIL_OK)
            return fail(err, err_len,
                        "%s: a list of cn, o, ou, email, serial, fingerprint, got '%s'", d->name,
                        value);
        return UTIL_OK;
    case K_LIST: {
        char list[sizeof(cfg->issuers)];
        char *save = NULL;
        if (strlen(value) >= sizeof(cfg->issuers))
            return fail(err, err_len, "%s: too long: '%s'", d->name, value);
        (void)snprintf(list, sizeof(list), "%s", value);
        for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save))
            if (!util_name_valid(tok))
                return fail(err, err_len, "%s: '%s' is not an issuer name", d->name, tok);
        (void)snprintf(field, sizeof(cfg->issuers), "%s", value);
        return UTIL_OK;
    }
    case K_SIZE: {
        size_t len = strlen(value);
        long mult = 1;
        char num[32];
        if (len == 0 || len >= sizeof(num))
            return fail(err, err_len, "%s: expected a size like 64k, got '%s'", d->name, value);
        (void)snprintf(num, sizeof(num), "%s", value);
        if (num[len - 1] == 'k' || num[len - 1] == 'K') {
            mult = 1024;
            num[len - 1] = '\0';
        } else if (num[len - 1] == 'm' || num[len - 1] == 'M') {
            mult = 1024 * 1024;
            num[len - 1] = '\0';
        }
        errno = 0;
        v = strtol(num, &end, 10);
        if (errno != 0 || end == num || *end != '\0' || v < 1 || v > d->max / mult ||
            v * mult < d->min)
            return fail(err, err_len, "%s: expected a size from 1k to 1M, got '%s'", d->name,
                        value);
        *(size_t *)field = (size_t)(v * mult);
        return UTIL_OK;
    }
    case K_OFFSET:
        if (parse_offset(value, (int *)field) != UTIL_OK)
            return fail(err, err_len, "%s: expected +HH:MM or -HH:MM, got '%s'", d->name, value);
        return UTIL_OK;
    case K_LANG:
        if (strcmp(value, "vi") != 0 && strcmp(value, "en") != 0)
            return fail(err, err_len, "%s: expected vi or en, got '%s'", d->name, value);
        (void)snprintf(field, sizeof(cfg->default_lang), "%s", value);
        return UTIL_OK;
    }
    return UTIL_EINVAL;
}

void directory_config_default(struct directory_config *cfg)
{
    char err[128];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < sizeof(directives) / sizeof(directives[0]); i++)
        if (apply(cfg, &directives[i], directives[i].dflt, err, sizeof(err)) != UTIL_OK)
            UTIL_ERROR(DIRECTORY_MOD, "default of %s: %s", directives[i].name, err);
}

int directory_config_set(struct directory_config *cfg, const char *key, const char *value,
                         char *err, size_t err_len)
{
    for (size_t i = 0; i < sizeof(directives) / sizeof(directives[0]); i++)
        if (strcmp(key, directives[i].name) == 0)
            return apply(cfg, &directives[i], value, err, err_len);
    (void)snprintf(err, err_len, "unknown directive '%s' in [directory]", key);
    return UTIL_ENOTFOUND;
}
