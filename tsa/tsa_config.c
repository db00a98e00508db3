/* SPDX-License-Identifier: Apache-2.0 */
/* The [tsa] and [tsa.NAME] sections: each directive declared once in the table below (name, kind, limits, default
 * as conf/pkiva.conf writes it, doc line). The reader of the configuration file applies the
 * section's lines with this table (tsa_config_directives); the fields that are not directives get the module's own
 * defaults in tsa_config_default. */
#include "tsa_int.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <util/util.h>

#define C struct tsa_config

static const struct util_conf_directive directives[] = {
    UTIL_CONF(URL_PATH, "path", C, path, 0, 0, 0, "/tsa",
              "URL path of the first TSA unit; every unit is also at <path>/NAME"),
    UTIL_CONF(BOOL, "durable_log", C, durable_log, 0, 1, 0, "yes",
              "a token is returned only once its record is durable in the store"),
    UTIL_CONF(BOOL, "require_clock_sync", C, require_clock_sync, 0, 1, 0, "yes",
              "no token while the kernel reports the clock unsynchronised"),
    UTIL_CONF(INT, "max_inflight", C, max_inflight, 1, 1000000, 0, "4096",
              "time-stamp requests between parsing and answer, all units"),
    UTIL_CONF(INT64, "serial_block", C, serial_block, 1, 1000000, 0, "4096",
              "serial numbers reserved per store transaction"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void tsa_config_default(struct tsa_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(directives, N_DIRECTIVES, cfg);
    cfg->log_batch_max = 1000;
    cfg->log_linger_us = 2000;
    cfg->max_query_bytes = 16384;
    cfg->clock_reread_ms = 100;
}

const struct util_conf_directive *tsa_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}

/* ---- [tsa.NAME]: one TSA unit -------------------------------------------------------------- */

static const char *const digests[] = {"SHA256", "SHA384", "SHA512", NULL};

static int parse_key(const struct util_conf_directive *d, void *config, const char *value,
                     char *err, size_t err_len)
{
    struct tsa_unit_settings *u = config;
    if (strncmp(value, "pkcs11:", 7) != 0)
        return util_conf_fail(err, err_len, "%s must be a PKCS#11 URI (RFC 7512), got '%s'",
                              d->name, value);
    if (strlen(value) >= sizeof(u->key_uri))
        return util_conf_fail(err, err_len, "%s: value too long: %s", d->name, value);
    memcpy(u->key_uri, value, strlen(value) + 1);
    return UTIL_OK;
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

static int parse_policy(const struct util_conf_directive *d, void *config, const char *value,
                        char *err, size_t err_len)
{
    struct tsa_unit_settings *u = config;
    if (!valid_oid(value))
        return util_conf_fail(err, err_len, "%s must be a dotted OID like 1.2.3.4, got '%s'",
                              d->name, value);
    memcpy(u->policy, value, strlen(value) + 1); /* valid_oid bounds it below 64 */
    return UTIL_OK;
}

static int parse_accepted(const struct util_conf_directive *d, void *config, const char *value,
                          char *err, size_t err_len)
{
    struct tsa_unit_settings *u = config;
    char list[TSA_MAX_POLICIES * 64];
    char *save = NULL;
    (void)snprintf(list, sizeof(list), "%s", value); /* a longer list fails on its count */
    u->n_accepted = 0;
    for (char *tok = strtok_r(list, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (!valid_oid(tok))
            return util_conf_fail(err, err_len, "%s: '%s' is not a dotted OID", d->name, tok);
        if (u->n_accepted >= TSA_MAX_POLICIES)
            return util_conf_fail(err, err_len, "%s: at most %d", d->name, TSA_MAX_POLICIES);
        memcpy(u->accepted[u->n_accepted++], tok, strlen(tok) + 1);
    }
    return UTIL_OK;
}

/* "1s", "500ms", "100us" (or plain seconds) -> microseconds, at most one hour. */
static int parse_accuracy(const struct util_conf_directive *d, void *config, const char *value,
                          char *err, size_t err_len)
{
    struct tsa_unit_settings *u = config;
    char *end = NULL;
    long long v;
    int64_t us = -1;
    errno = 0;
    v = strtoll(value, &end, 10);
    if (errno == 0 && end != value && v >= 0 && v <= 3600LL * 1000000) {
        if (strcmp(end, "s") == 0 || *end == '\0')
            us = v * 1000000;
        else if (strcmp(end, "ms") == 0)
            us = v * 1000;
        else if (strcmp(end, "us") == 0)
            us = v;
    }
    if (us < 0 || us > 3600LL * 1000000)
        return util_conf_fail(err, err_len,
                              "%s must be like 1s, 100ms or 500us (at most 1h), got '%s'", d->name,
                              value);
    u->accuracy_us = us;
    return UTIL_OK;
}

#define U struct tsa_unit_settings

static const struct util_conf_directive unit_directives[] = {
    UTIL_CONF(PATH, "cert", U, cert, 0, 0, 0, "",
              "PEM TSA certificate (critical EKU timeStamping only); required"),
    UTIL_CONF(PATH, "chain", U, chain, 0, 0, 0, "", "PEM CA chain sent with certReq"),
    UTIL_CONF(PATH, "previous_certs", U, previous_certs, 0, 0, 0, "",
              "PEM: the unit's earlier certificates, accepted by pkiva tsa check"),
    UTIL_CONF(CUSTOM, "key", U, key_uri, 0, 0, parse_key, "",
              "PKCS#11 URI of the signing key; required"),
    UTIL_CONF(STRING, "digest", U, digest, 0, 0, digests, "",
              "signature digest; unset = the key's default"),
    UTIL_CONF(STRING, "ess_digest", U, ess_digest, 0, 0, digests, "",
              "ESSCertIDv2 hash; unset = SHA256"),
    UTIL_CONF(CUSTOM, "policy", U, policy, 0, 0, parse_policy, "", "default policy OID; required"),
    UTIL_CONF(CUSTOM, "accepted_policies", U, accepted, 0, 0, parse_accepted, "",
              "further policy OIDs a request may ask for"),
    UTIL_CONF(CUSTOM, "accuracy", U, accuracy_us, 0, 0, parse_accuracy, "1s",
              "TSTInfo accuracy: 1s, 100ms or 500us; 0 = omit"),
    UTIL_CONF(BOOL, "tsa_name", U, tsa_name, 0, 1, 0, "no",
              "TSTInfo tsa = the certificate's subject"),
    UTIL_CONF(BOOL, "allow_weak_hashes", U, allow_weak_hashes, 0, 1, 0, "no",
              "also accept SHA-1 and MD5 imprints"),
};

#define N_UNIT_DIRECTIVES (sizeof(unit_directives) / sizeof(unit_directives[0]))

void tsa_unit_settings_default(struct tsa_unit_settings *u)
{
    memset(u, 0, sizeof(*u));
    util_conf_defaults(unit_directives, N_UNIT_DIRECTIVES, u);
}

const struct util_conf_directive *tsa_unit_settings_directives(size_t *n)
{
    *n = N_UNIT_DIRECTIVES;
    return unit_directives;
}
