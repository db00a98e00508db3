/* SPDX-License-Identifier: Apache-2.0 */
/* The [tsa] section: each directive declared once in the table below (name, kind, limits, default
 * as conf/pkiva.conf writes it, doc line). The reader of the configuration file hands the
 * section's lines to tsa_config_set; the fields that are not directives get the module's own
 * defaults in tsa_config_default. */
#include "tsa_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <util/util.h>

#define FIELD(f) offsetof(struct tsa_config, f)

static const struct util_conf_directive directives[] = {
    {"path", UTIL_CONF_URL_PATH, FIELD(path), sizeof(((struct tsa_config *)0)->path), 0, 0, NULL,
     "/tsa", "URL path of the first TSA unit; every unit is also at <path>/NAME"},
    {"durable_log", UTIL_CONF_BOOL, FIELD(durable_log), 0, 0, 1, NULL, "yes",
     "a token is returned only once its record is durable in the store"},
    {"require_clock_sync", UTIL_CONF_BOOL, FIELD(require_clock_sync), 0, 0, 1, NULL, "yes",
     "no token while the kernel reports the clock unsynchronised"},
    {"max_inflight", UTIL_CONF_INT, FIELD(max_inflight), 0, 1, 1000000, NULL, "4096",
     "time-stamp requests between parsing and answer, all units"},
    {"serial_block", UTIL_CONF_INT64, FIELD(serial_block), 0, 1, 1000000, NULL, "4096",
     "serial numbers reserved per store transaction"},
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void tsa_config_default(struct tsa_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(directives, N_DIRECTIVES, cfg);
    cfg->log_batch_max = 1000;
    cfg->log_linger_us = 2000;
    cfg->max_query_bytes = 16384;
}

int tsa_config_set(struct tsa_config *cfg, const char *key, const char *value, char *err,
                   size_t err_len)
{
    return util_conf_set(directives, N_DIRECTIVES, cfg, key, value, err, err_len);
}

const struct util_conf_directive *tsa_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
