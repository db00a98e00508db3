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

int util_conf_fail(char *err, size_t err_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(err, err_len, fmt, ap); /* truncation only shortens the message */
    va_end(ap);
    return UTIL_EINVAL;
}

#define fail util_conf_fail

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

/* Milliseconds: "250ms" (1..3600000), or a duration in seconds of at most 1h; then at most max. */
static int parse_ms(const struct util_conf_directive *d, const char *value, int *out, char *err,
                    size_t err_len)
{
    size_t len = strlen(value);
    int64_t v = 0;
    if (len > 2 && len - 2 < 32 && strcmp(value + len - 2, "ms") == 0) {
        char num[32];
        memcpy(num, value, len - 2);
        num[len - 2] = '\0';
        if (parse_int64(num, 1, 3600000, &v) != UTIL_OK)
            v = -1;
    } else if (util_parse_duration(value, &v) != UTIL_OK || v > 3600) {
        v = -1;
    } else {
        v *= 1000;
    }
    if (v < 0)
        return fail(err, err_len,
                    "%s: expected a duration like 250ms, 10s or 2m (at most 1h), got '%s'", d->name,
                    value);
    if (v > d->max)
        return fail(err, err_len, "%s must be at most %llds, got '%s'", d->name,
                    (long long)(d->max / 1000), value);
    if (v < d->min)
        return fail(err, err_len, "%s must be at least %lldms, got '%s'", d->name,
                    (long long)d->min, value);
    *out = (int)v;
    return UTIL_OK;
}

static int set_text(const struct util_conf_directive *d, char *field, const char *value,
                    const char *base_dir, char *err, size_t err_len)
{
    int n;
    if (d->kind == UTIL_CONF_STRING && d->choices != NULL) {
        int index = 0;
        if (parse_choice(d, value, &index, err, err_len) != UTIL_OK)
            return UTIL_EINVAL;
    }
    if (d->kind == UTIL_CONF_PATH && value[0] != '\0' && value[0] != '/' && base_dir != NULL &&
        strncmp(value, "pkcs11:", 7) != 0)
        n = snprintf(field, d->size, "%s/%s", base_dir, value);
    else
        n = snprintf(field, d->size, "%s", value);
    if (n < 0 || (size_t)n >= d->size) {
        field[0] = '\0';
        return fail(err, err_len, "%s: %s too long: %s", d->name,
                    d->kind == UTIL_CONF_PATH ? "path" : "value", value);
    }
    return UTIL_OK;
}

static int apply(const struct util_conf_directive *d, void *config, const char *value,
                 const char *base_dir, char *err, size_t err_len)
{
    char *field = (char *)config + d->offset;
    int64_t v = 0;
    switch (d->kind) {
    case UTIL_CONF_BOOL:
        if (parse_bool(value, (int *)field) != UTIL_OK)
            return fail(err, err_len, "%s: expected yes or no, got '%s'", d->name, value);
        return UTIL_OK;
    case UTIL_CONF_INT:
    case UTIL_CONF_INT64:
        if (parse_int64(value, d->min, d->max, &v) != UTIL_OK)
            return fail(err, err_len, "%s: expected an integer in %lld..%lld, got '%s'", d->name,
                        (long long)d->min, (long long)d->max, value);
        if (d->kind == UTIL_CONF_INT)
            *(int *)field = (int)v; /* min..max lies within int (the table's promise) */
        else
            *(int64_t *)field = v;
        return UTIL_OK;
    case UTIL_CONF_DURATION:
        if (util_parse_duration(value, (int64_t *)field) != UTIL_OK)
            return fail(err, err_len, "%s: expected a duration like 90s, 15m, 12h or 4d, got '%s'",
                        d->name, value);
        return UTIL_OK;
    case UTIL_CONF_MS: return parse_ms(d, value, (int *)field, err, err_len);
    case UTIL_CONF_SIZE:
        if (util_parse_size(value, &v) != UTIL_OK || v < d->min || v > d->max)
            return fail(err, err_len, "%s: expected a size like 4096, 64k or 16M, got '%s'",
                        d->name, value);
        *(size_t *)field = (size_t)v;
        return UTIL_OK;
    case UTIL_CONF_CHOICE: return parse_choice(d, value, (int *)field, err, err_len);
    case UTIL_CONF_STRING:
    case UTIL_CONF_PATH: return set_text(d, field, value, base_dir, err, err_len);
    case UTIL_CONF_URL_PATH:
        if (value[0] != '/')
            return fail(err, err_len, "%s must start with '/', got '%s'", d->name, value);
        return set_text(d, field, value, NULL, err, err_len);
    case UTIL_CONF_CUSTOM: return d->parse(d, config, value, err, err_len);
    }
    return fail(err, err_len, "%s: unknown kind of directive", d->name);
}

void util_conf_defaults(const struct util_conf_directive *table, size_t n, void *config)
{
    char err[256];
    for (size_t i = 0; i < n; i++) {
        if (table[i].dflt[0] == '\0') /* unset: the field is zero */
            memset((char *)config + table[i].offset, 0, table[i].size);
        else if (apply(&table[i], config, table[i].dflt, NULL, err, sizeof(err)) != UTIL_OK)
            UTIL_ERROR(MOD, "default of %s: %s", table[i].name, err);
    }
}

int util_conf_set(const struct util_conf_directive *table, size_t n, void *config, const char *key,
                  const char *value, const char *base_dir, char *err, size_t err_len)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, table[i].name) == 0)
            return apply(&table[i], config, value, base_dir, err, err_len);
    return UTIL_ENOTFOUND;
}
