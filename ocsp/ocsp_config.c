/* SPDX-License-Identifier: Apache-2.0 */
/* The [ocsp] section: each directive declared once in the table below (name, kind, limits,
 * default as conf/pkiva.conf writes it, doc line). The reader of the configuration file hands the
 * section's lines to ocsp_config_set; the defaults of the fields that are not directives are
 * the module's own, set in ocsp_config_default. */
#include "ocsp_int.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <util/util.h>

static const char *const unknown_serials[] = {"unknown", "revoked", NULL}; /* unknown_policy */
static const char *const responder_ids[] = {"key", "name", NULL};          /* responder_id */

#define FIELD(f) offsetof(struct ocsp_config, f)

static const struct util_conf_directive directives[] = {
    {"validity", UTIL_CONF_DURATION, FIELD(validity_seconds), 0, 0, 0, NULL, "0",
     "thisUpdate -> nextUpdate of every response; 0 = half of [revocation] deadline"},
    {"max_age", UTIL_CONF_DURATION, FIELD(max_age_seconds), 0, 0, 0, NULL, "0",
     "cap of Cache-Control max-age; 0 = min(1h, validity)"},
    {"max_certids", UTIL_CONF_INT, FIELD(max_certids), 0, 1, 1000, NULL, "10",
     "CertIDs per request; more get malformedRequest"},
    {"unknown_serials", UTIL_CONF_CHOICE, FIELD(unknown_policy), 0, 0, 0, unknown_serials,
     "unknown", "answer for serials never issued: unknown, or revoked (RFC 6960 2.2)"},
    {"nonce_queue_max", UTIL_CONF_INT, FIELD(nonce_queue_max), 0, 1, 1000000, NULL, "256",
     "live signatures (nonce, several CertIDs, misses) in flight at most"},
    {"cache_max", UTIL_CONF_SIZE, FIELD(cache_max_bytes), 0, 1, INT64_MAX, NULL, "1G",
     "memory for cached signed responses"},
    {"archive_cutoff", UTIL_CONF_DURATION, FIELD(archive_cutoff_seconds), 0, 0, 0, NULL, "0",
     "RFC 6960 4.4.4 archive cutoff; 0 = off"},
    {"expired_retention", UTIL_CONF_DURATION, FIELD(expired_retention_seconds), 0, 0, 0, NULL,
     "3650d", "how long after notAfter a certificate still gets authoritative answers"},
    {"responder_id", UTIL_CONF_CHOICE, FIELD(responder_id), 0, 0, 0, responder_ids, "key",
     "ResponderID: key (RFC 9919) or name"},
    {"path", UTIL_CONF_URL_PATH, FIELD(path), sizeof(((struct ocsp_config *)0)->path), 0, 0, NULL,
     "/", "URL path prefix OCSP is served under"},
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

int ocsp_config_set(struct ocsp_config *cfg, const char *key, const char *value, char *err,
                    size_t err_len)
{
    return util_conf_set(directives, N_DIRECTIVES, cfg, key, value, err, err_len);
}

const struct util_conf_directive *ocsp_config_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
