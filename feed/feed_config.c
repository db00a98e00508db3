/* SPDX-License-Identifier: Apache-2.0 */
/* The feed's directives: [revocation] (the deadline the feed measures every revocation against)
 * and [store] feed_poll (how often the feed is read), each declared once in the tables below
 * (name, kind, limits, default as conf/pkiva.conf writes it, doc line). */
#include "feed.h"

#include <stddef.h>
#include <string.h>
#include <util/util.h>

static int parse_out_of_scope(const struct util_conf_directive *d, void *config, const char *value,
                              char *err, size_t err_len)
{
    struct feed_settings *s = config;
    if (feed_client_parse_list(value, &s->out_of_scope) != UTIL_OK)
        return util_conf_fail(err, err_len,
                              "%s takes a list of ocsp_next_update, ocsp_max_age, crl, "
                              "delta_crl; got '%s'",
                              d->name, value);
    return UTIL_OK;
}

#define S struct feed_settings

static const struct util_conf_directive revocation[] = {
    UTIL_CONF(DURATION, "deadline", S, deadline_s, 0, 0, 0, "12h",
              "received -> visible to every conforming client"),
    UTIL_CONF(DURATION, "warn_before", S, warn_s, 0, 0, 0, "1h",
              "log when a revocation is this close to the deadline"),
    UTIL_CONF(CUSTOM, "out_of_scope", S, out_of_scope, 0, 0, parse_out_of_scope, "",
              "clients the deadline is not promised to (ocsp_next_update, ocsp_max_age, crl, ...)"),
};

static const struct util_conf_directive store[] = {
    UTIL_CONF(MS, "feed_poll", S, poll_ms, 0, 3600000, 0, "200ms",
              "how often the change feed written by others is read"),
    UTIL_CONF(MS, "max_feed_lag", S, max_feed_lag_ms, 0, 3600000, 0, "5s",
              "a node behind the feed this long answers /readyz 503; cluster: not live"),
    UTIL_CONF(STRING, "node_name", S, node_name, 0, 0, 0, "",
              "this node's name in the store's node rows; unset = <hostname>:<first port>"),
};

#define N(table) (sizeof(table) / sizeof(table[0]))

void feed_settings_default(struct feed_settings *s)
{
    memset(s, 0, sizeof(*s));
    util_conf_defaults(revocation, N(revocation), s);
    util_conf_defaults(store, N(store), s);
}

const struct util_conf_directive *feed_revocation_directives(size_t *n)
{
    *n = N(revocation);
    return revocation;
}

const struct util_conf_directive *feed_store_directives(size_t *n)
{
    *n = N(store);
    return store;
}
