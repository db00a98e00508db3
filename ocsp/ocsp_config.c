/* SPDX-License-Identifier: Apache-2.0 */
/* The [ocsp] section: each directive declared once in the table below (name, kind, limits,
 * default as conf/pkiva.conf writes it, doc line). The reader of the configuration file applies the
 * section's lines with this table (ocsp_config_directives); the defaults of the fields that are not directives are
 * the module's own, set in ocsp_config_default. */
#include "ocsp_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <util/util.h>

static const char *const unknown_serials[] = {"unknown", "revoked", NULL}; /* unknown_policy */
static const char *const responder_ids[] = {"key", "name", NULL};          /* responder_id */

#define C struct ocsp_config

static const struct util_conf_directive directives[] = {
    UTIL_CONF(DURATION, "validity", C, validity_seconds, 0, 0, 0, "0",
              "thisUpdate -> nextUpdate of every response; 0 = half of [revocation] deadline"),
    UTIL_CONF(DURATION, "max_age", C, max_age_seconds, 0, 0, 0, "0",
              "cap of Cache-Control max-age; 0 = min(1h, validity)"),
    UTIL_CONF(DURATION, "unknown_max_age", C, unknown_max_age_seconds, 0, 0, 0, "60s",
              "cap of Cache-Control max-age for an unknown status (issued, not yet registered)"),
    UTIL_CONF(INT, "max_certids", C, max_certids, 1, 1000, 0, "10",
              "CertIDs per request; more get malformedRequest"),
    UTIL_CONF(CHOICE, "unknown_serials", C, unknown_policy, 0, 0, unknown_serials, "unknown",
              "answer for serials never issued: unknown, or revoked (RFC 6960 2.2)"),
    UTIL_CONF(INT, "nonce_queue_max", C, nonce_queue_max, 1, 1000000, 0, "256",
              "live signatures (nonce, several CertIDs, misses) in flight at most"),
    UTIL_CONF(SIZE, "cache_max", C, cache_max_bytes, 1, INT64_MAX, 0, "1G",
              "memory for cached signed responses"),
    UTIL_CONF(DURATION, "archive_cutoff", C, archive_cutoff_seconds, 0, 0, 0, "0",
              "RFC 6960 4.4.4 archive cutoff; 0 = off"),
    UTIL_CONF(DURATION, "expired_retention", C, expired_retention_seconds, 0, 0, 0, "3650d",
              "how long after notAfter a certificate still gets authoritative answers"),
    UTIL_CONF(CHOICE, "responder_id", C, responder_id, 0, 0, responder_ids, "key",
              "ResponderID: key (RFC 9919) or name"),
    UTIL_CONF(URL_PATH, "path", C, path, 0, 0, 0, "/", "URL path prefix OCSP is served under"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

/* The choice tables index the enums: keep them in step. */
_Static_assert(OCSP_UNKNOWN_STATUS == 0 && OCSP_UNKNOWN_EXTENDED_REVOKE == 1, "unknown_serials");
_Static_assert(OCSP_RESPID_BY_KEY == 0 && OCSP_RESPID_BY_NAME == 1, "responder_id");

void ocsp_config_default(struct ocsp_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    util_conf_defaults(directives, N_DIRECTIVES, cfg);
    cfg->refresh_percent = 50;
    cfg->presign_batch = 32;
}

const struct util_conf_directive *ocsp_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
