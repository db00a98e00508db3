/* SPDX-License-Identifier: Apache-2.0 */
/* The [crl] section: each directive declared once in the table below (name, kind, limits, default
 * as conf/pkiva.conf writes it, doc line). The configuration reader applies the section's lines
 * with it; crl_config_default takes the defaults it shares with the file from it too. */
#include "crl_int.h"

#include <stddef.h>
#include <string.h>
#include <util/util.h>

/* expired_on_crl_since: off, or a date (unix seconds; 0 = off). */
static int parse_since(const struct util_conf_directive *d, void *config, const char *value,
                       char *err, size_t err_len)
{
    struct crl_settings *s = config;
    if (strcmp(value, "off") == 0) {
        s->expired_on_crl_since = 0;
        return UTIL_OK;
    }
    if (util_time_parse(value, &s->expired_on_crl_since) != UTIL_OK)
        return util_conf_fail(err, err_len, "%s: expected off or a date like 2026-01-01, got '%s'",
                              d->name, value);
    return UTIL_OK;
}

#define S struct crl_settings

static const struct util_conf_directive directives[] = {
    UTIL_CONF(PATH, "publish_dir", S, publish_dir, 0, 0, 0, "",
              "folder the DER files are written to; unset = <data_dir>/crl"),
    UTIL_CONF(BOOL, "deltas", S, deltas, 0, 1, 0, "yes", "publish delta CRLs too"),
    UTIL_CONF(DURATION, "validity", S, validity_s, 0, 0, 0, "0",
              "thisUpdate -> nextUpdate of full CRLs; 0 = derived from [revocation] deadline"),
    UTIL_CONF(DURATION, "delta_validity", S, delta_validity_s, 0, 0, 0, "0",
              "the same for delta CRLs; 0 = derived"),
    UTIL_CONF(DURATION, "interval", S, interval_s, 0, 0, 0, "0",
              "a new full CRL at least this often; 0 = derived"),
    UTIL_CONF(MS, "coalesce", S, coalesce_ms, 0, CRL_COALESCE_MAX_MS, 0, "5s",
              "changes are published at most this long after they were reported"),
    UTIL_CONF(MS, "lease", S, lease_ms, CRL_LEASE_MIN_MS, CRL_LEASE_MAX_MS, 0, "10s",
              "a cluster's CRL publisher idle this long on its store connection loses the lease"),
    UTIL_CONF(BOOL, "full_on_change", S, full_on_change, 0, 1, 0, "yes",
              "a change regenerates the full CRL too (no: a delta only)"),
    UTIL_CONF(DURATION, "expired_retention", S, expired_retention_s, 0, 0, 0, "7d",
              "expired certificates stay on the CRL this long after notAfter"),
    UTIL_CONF(CUSTOM, "expired_on_crl_since", S, expired_on_crl_since, 0, 0, parse_since, "off",
              "off, or a date: certificates expired since then stay on the CRL for ever"),
    UTIL_CONF(DURATION, "max_age", S, max_age_s, 0, 0, 0, "0",
              "cap of Cache-Control max-age; 0 = derived"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void crl_settings_default(struct crl_settings *s)
{
    memset(s, 0, sizeof(*s));
    util_conf_defaults(directives, N_DIRECTIVES, s);
}

const struct util_conf_directive *crl_settings_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
