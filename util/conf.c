/* SPDX-License-Identifier: Apache-2.0 */
/* The directive tables of the modules' configuration sections: one parser per kind of value,
 * driven by the table, so that a directive's parser, limits, error message and default are written
 * once (util.h, "configuration directives"). */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MOD "config"

static int scaled(const char *text, int64_t *out, const char *units, const int64_t *factors)
{
    char *end = NULL;
    long long value;
    errno = 0;
    if (text == NULL || !isdigit((unsigned char)text[0]))
        return UTIL_EINVAL;
    value = strtoll(text, &end, 10);
    if (errno != 0 || value < 0)
        return UTIL_EINVAL;
    if (*end != '\0') {
        const char *u = strchr(units, tolower((unsigned char)*end));
        if (u == NULL || end[1] != '\0')
            return UTIL_EINVAL;
        if (value > INT64_MAX / factors[u - units])
            return UTIL_EINVAL;
        value *= factors[u - units];
    }
    *out = value;
    return UTIL_OK;
}

int util_parse_duration(const char *text, int64_t *seconds)
{
    static const int64_t factors[] = {1, 60, 3600, 86400};
    return scaled(text, seconds, "smhd", factors);
}

int util_parse_size(const char *text, int64_t *bytes)
{
    static const int64_t factors[] = {1024, 1024 * 1024, 1024 * 1024 * 1024};
    return scaled(text, bytes, "kmg", factors);
}

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

static int parse_bool(const char *value, int *out)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcmp(value, yes[i]) == 0) {
            *out = 1;
            return UTIL_OK;
        }
        if (strcmp(value, no[i]) == 0) {
            *out = 0;
            return UTIL_OK;
        }
    }
    return UTIL_EINVAL;
}

static int parse_int64(const char *value, int64_t min, int64_t max, int64_t *out)
{
    char *end = NULL;
    long long v;
    errno = 0;
    v = strtoll(value, &end, 10);
    if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
        return UTIL_EINVAL;
    *out = (int64_t)v;
    return UTIL_OK;
}

/* "a or b", "a, b or c": the names of a choice directive, for its error message. */
static void choice_names(const char *const *choices, char *out, size_t len)
{
    size_t n = 0, used = 0;
    while (choices[n] != NULL)
        n++;
    out[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++) {
        const char *sep = i == 0 ? "" : i + 1 == n ? " or " : ", ";
        int w = snprintf(out + used, len - used, "%s%s", sep, choices[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
}

static int parse_choice(const struct util_conf_directive *d, const char *value, int *out, char *err,
                        size_t err_len)
{
    char names[256];
    for (int i = 0; d->choices[i] != NULL; i++) {
        if (strcmp(value, d->choices[i]) == 0) {
            *out = i;
            return UTIL_OK;
        }
    }
    choice_names(d->choices, names, sizeof(names));
    return fail(err, err_len, "%s must be %s, got '%s'", d->name, names, value);
}

static int apply(const struct util_conf_directive *d, void *config, const char *value, char *err,
                 size_t err_len)
{
    char *field = (char *)config + d->offset;
    int64_t v = 0;
    switch (d->kind) {
    case UTIL_CONF_BOOL:
        if (parse_bool(value, (int *)field) != UTIL_OK)
            return fail(err, err_len, "expected yes or no, got '%s'", value);
        return UTIL_OK;
    case UTIL_CONF_INT:
    case UTIL_CONF_INT64:
        if (parse_int64(value, d->min, d->max, &v) != UTIL_OK)
            return fail(err, err_len, "expected an integer in %lld..%lld, got '%s'",
                        (long long)d->min, (long long)d->max, value);
        if (d->kind == UTIL_CONF_INT)
            *(int *)field = (int)v; /* min..max lies within int (the table's promise) */
        else
            *(int64_t *)field = v;
        return UTIL_OK;
    case UTIL_CONF_DURATION:
        if (util_parse_duration(value, (int64_t *)field) != UTIL_OK)
            return fail(err, err_len, "expected a duration like 90s, 15m, 12h or 4d, got '%s'",
                        value);
        return UTIL_OK;
    case UTIL_CONF_SIZE:
        if (util_parse_size(value, &v) != UTIL_OK || v < d->min || v > d->max)
            return fail(err, err_len, "expected a size like 4096, 64k or 16M, got '%s'", value);
        *(size_t *)field = (size_t)v;
        return UTIL_OK;
    case UTIL_CONF_CHOICE: return parse_choice(d, value, (int *)field, err, err_len);
    case UTIL_CONF_URL_PATH:
        if (value[0] != '/')
            return fail(err, err_len, "%s must start with '/', got '%s'", d->name, value);
        if (strlen(value) >= d->size)
            return fail(err, err_len, "value too long: %s", value);
        memcpy(field, value, strlen(value) + 1);
        return UTIL_OK;
    }
    return fail(err, err_len, "%s: unknown kind of directive", d->name);
}

void util_conf_defaults(const struct util_conf_directive *table, size_t n, void *config)
{
    char err[256];
    for (size_t i = 0; i < n; i++)
        if (apply(&table[i], config, table[i].dflt, err, sizeof(err)) != UTIL_OK)
            UTIL_ERROR(MOD, "default of %s: %s", table[i].name, err);
}

int util_conf_set(const struct util_conf_directive *table, size_t n, void *config, const char *key,
                  const char *value, char *err, size_t err_len)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, table[i].name) == 0)
            return apply(&table[i], config, value, err, err_len);
    return UTIL_ENOTFOUND;
}
