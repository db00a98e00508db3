/* SPDX-License-Identifier: Apache-2.0 */
/* The [hsm] section: each directive declared once in the table below (name, kind, limits, default
 * as conf/pkiva.conf writes it, doc line). The configuration reader applies the section's lines
 * with it; cli turns the settings into an hsm_config for each command that opens the token. */
#include "hsm.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <util/util.h>

/* verify_ecdsa: "all", "none" or "sample N" (verify one ECDSA signature in N). */
static int parse_verify_ecdsa(const struct util_conf_directive *d, void *config, const char *value,
                              char *err, size_t err_len)
{
    struct hsm_settings *s = config;
    const char *n = value + 7;
    char *end = NULL;
    long every;
    if (strcmp(value, "all") == 0) {
        s->ecdsa_verify_every = 1;
        return UTIL_OK;
    }
    if (strcmp(value, "none") == 0) {
        s->ecdsa_verify_every = HSM_VERIFY_NONE;
        return UTIL_OK;
    }
    if (strncmp(value, "sample ", 7) != 0)
        return util_conf_fail(err, err_len, "%s: expected all, none or sample N, got '%s'", d->name,
                              value);
    while (*n == ' ')
        n++;
    every = strtol(n, &end, 10);
    if (end == n || *end != '\0' || every < 1 || every > 1000000)
        return util_conf_fail(err, err_len, "%s: expected an integer in 1..1000000, got '%s'",
                              d->name, n);
    s->ecdsa_verify_every = (int)every;
    return UTIL_OK;
}

#define S struct hsm_settings

static const struct util_conf_directive directives[] = {
    UTIL_CONF(PATH, "module", S, module, 0, 0, 0, "/usr/lib/softhsm/libsofthsm2.so",
              "the vendor's PKCS#11 module"),
    UTIL_CONF(PATH, "pin_file", S, pin_file, 0, 0, 0, "",
              "the token's user PIN, owner-only; required"),
    UTIL_CONF(PATH, "softhsm_conf", S, softhsm_conf, 0, 0, 0, "",
              "SoftHSM2 only: exported as SOFTHSM2_CONF"),
    UTIL_CONF(PATH, "provider", S, provider, 0, 0, 0, "",
              "pkcs11-provider module; unset = OpenSSL's modules folder"),
    UTIL_CONF(BOOL, "no_deinit", S, no_deinit, 0, 1, 0, "yes", "skip C_Finalize at exit"),
    UTIL_CONF(INT, "sessions", S, sessions, 1, 256, 0, "2", "signing threads = HSM sessions"),
    UTIL_CONF(INT, "queue_max", S, queue_max, 1, 1000000, 0, "4096",
              "signing jobs waiting at most"),
    UTIL_CONF(STRING, "init_args", S, init_args, 0, 0, 0, "",
              "the module's C_Initialize arguments (pkcs11-module-init-args)"),
    UTIL_CONF(CUSTOM, "verify_ecdsa", S, ecdsa_verify_every, 0, 0, parse_verify_ecdsa,
              "sample " UTIL_CONF_STR(HSM_ECDSA_VERIFY_DEFAULT),
              "ECDSA signatures verified before use: all, none or sample N"),
    UTIL_CONF(BOOL, "direct_sign", S, direct, 0, 1, 0, "yes",
              "ECDSA signatures on the signing threads' own sessions, not pkcs11-provider's"),
    UTIL_CONF(MS, "restart_after", S, restart_after_ms, 0, 3600000, 0, "60s",
              "exit for a supervisor restart after the keys failed to load this long; 0 = never"),
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

void hsm_settings_default(struct hsm_settings *s)
{
    memset(s, 0, sizeof(*s));
    util_conf_defaults(directives, N_DIRECTIVES, s);
}

const struct util_conf_directive *hsm_settings_directives(size_t *n)
{
    *n = N_DIRECTIVES;
    return directives;
}
