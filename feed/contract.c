/* SPDX-License-Identifier: Apache-2.0 */
/* The freshness contract: from the configuration, the longest a revocation can take to reach each
 * kind of conforming client, the HSM outage budget, and the defaults derived from the deadline.
 * Pure arithmetic, so that the numbers logged at start, shown by /admin/sla and `pkiva sla` and
 * exported in /metrics are one computation (see feed.h for the formulas). */
#include "feed.h"

#include <stdio.h>
#include <string.h>
#include <util/util.h>

static const struct {
    const char *name;
    const char *directive;
} clients[FEED_CLIENT_N] = {
    [FEED_CLIENT_OCSP_NEXT_UPDATE] = {"ocsp_next_update", "[ocsp] validity"},
    [FEED_CLIENT_OCSP_MAX_AGE] = {"ocsp_max_age", "[ocsp] max_age"},
    [FEED_CLIENT_CRL] = {"crl", "[crl] validity"},
    [FEED_CLIENT_DELTA_CRL] = {"delta_crl", "[crl] delta_validity"},
};

const char *feed_client_name(int client)
{
    return client >= 0 && client < FEED_CLIENT_N ? clients[client].name : NULL;
}

const char *feed_client_directive(int client)
{
    return client >= 0 && client < FEED_CLIENT_N ? clients[client].directive : NULL;
}

int feed_client_parse_list(const char *list, unsigned *bits)
{
    const char *at = list;
    *bits = 0;
    while (at != NULL && *at != '\0') {
        size_t len;
        int found = -1;
        while (*at == ' ' || *at == '\t' || *at == ',')
            at++;
        len = strcspn(at, ", \t");
        if (len == 0)
            break;
        for (int i = 0; i < FEED_CLIENT_N; i++)
            if (strlen(clients[i].name) == len && strncmp(at, clients[i].name, len) == 0)
                found = i;
        if (found < 0)
            return UTIL_EINVAL;
        *bits |= 1u << found;
        at += len;
    }
    return UTIL_OK;
}

static int64_t ceil_s(int64_t ms)
{
    return ms <= 0 ? 0 : (ms + 999) / 1000;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

void feed_contract_compute(const struct feed_contract_input *in, struct feed_contract *out)
{
    int64_t propagation = ceil_s(in->feed_poll_ms) + 1;
    int refresh = in->ocsp_refresh_percent > 0 && in->ocsp_refresh_percent < 100
                      ? in->ocsp_refresh_percent
                      : 50;

    memset(out, 0, sizeof(*out));
    out->deadline_s = in->deadline_s;
    out->out_of_scope = in->out_of_scope;
    out->worst_s[FEED_CLIENT_OCSP_NEXT_UPDATE] = in->ocsp_validity_s + propagation;
    out->worst_s[FEED_CLIENT_OCSP_MAX_AGE] =
        min64(in->ocsp_max_age_s, in->ocsp_validity_s) + propagation;
    out->worst_s[FEED_CLIENT_CRL] =
        in->crl_validity_s +
        (in->crl_full_on_change ? ceil_s(in->crl_coalesce_ms) : in->crl_interval_s);
    out->worst_s[FEED_CLIENT_DELTA_CRL] =
        in->crl_deltas ? in->crl_delta_validity_s + ceil_s(in->crl_coalesce_ms) : -1;
    for (int i = 0; i < FEED_CLIENT_N; i++)
        if (out->worst_s[i] > in->deadline_s)
            out->exceeding |= 1u << i;
    out->ocsp_budget_s = in->ocsp_validity_s * (100 - refresh) / 100;
    out->crl_budget_s = in->crl_validity_s - in->crl_interval_s;
    out->delta_budget_s = in->crl_deltas ? in->crl_delta_validity_s - in->crl_interval_s : -1;
    out->outage_budget_s = min64(out->ocsp_budget_s, out->crl_budget_s);
    if (in->crl_deltas)
        out->outage_budget_s = min64(out->outage_budget_s, out->delta_budget_s);
}

void feed_contract_defaults(int64_t deadline_s, struct feed_contract_defaults *out)
{
    int64_t half = deadline_s / 2;
    out->ocsp_validity_s = half;
    out->ocsp_max_age_s = min64(3600, half);
    out->crl_validity_s = half;
    out->crl_delta_validity_s = half;
    out->crl_interval_s = min64(3600, half / 4 > 0 ? half / 4 : 1);
    out->crl_max_age_s = min64(3600, half);
}

int feed_contract_format(const struct feed_contract *c, char *buf, size_t len)
{
    int n = snprintf(buf, len, "deadline %lld s:", (long long)c->deadline_s);
    for (int i = 0; i < FEED_CLIENT_N && n >= 0 && (size_t)n < len; i++) {
        int more;
        if (c->worst_s[i] < 0)
            continue;
        more = snprintf(buf + n, len - (size_t)n, "%s %s %lld s%s", i ? "," : "", clients[i].name,
                        (long long)c->worst_s[i],
                        (c->out_of_scope & (1u << i)) ? " (out of scope)"
                        : (c->exceeding & (1u << i))  ? " (EXCEEDS the deadline)"
                                                      : "");
        n = more >= 0 ? n + more : -1;
    }
    if (n >= 0 && (size_t)n < len) {
        int more = snprintf(buf + n, len - (size_t)n, "; HSM outage budget %lld s",
                            (long long)c->outage_budget_s);
        n = more >= 0 ? n + more : -1;
    }
    return n;
}

int feed_contract_metrics(const struct feed_contract *c, char *buf, size_t len)
{
    int n = snprintf(buf, len,
                     "# TYPE pkiva_revocation_deadline_seconds gauge\n"
                     "pkiva_revocation_deadline_seconds %lld\n"
                     "# TYPE pkiva_hsm_outage_budget_seconds gauge\n"
                     "pkiva_hsm_outage_budget_seconds %lld\n"
                     "# TYPE pkiva_revocation_worst_case_seconds gauge\n",
                     (long long)c->deadline_s, (long long)c->outage_budget_s);
    for (int i = 0; i < FEED_CLIENT_N && n >= 0 && (size_t)n < len; i++) {
        int more;
        if (c->worst_s[i] < 0)
            continue;
        more = snprintf(buf + n, len - (size_t)n,
                        "pkiva_revocation_worst_case_seconds{client=\"%s\"} %lld\n",
                        clients[i].name, (long long)c->worst_s[i]);
        n = more >= 0 ? n + more : -1;
    }
    if (n < 0 || (size_t)n >= len)
        return UTIL_EINVAL;
    return n;
}
