/* SPDX-License-Identifier: Apache-2.0 */
/* A node that reads from a real hot-standby replica and writes to the primary ([store]
 * read_conninfo, issue 16), run by ctest under tests/support/with-postgres.sh: the test makes a
 * streaming replica of that server (tests/support/pg-replica.sh: pg_basebackup -R, started on its
 * own port). Checked: a revocation written to the primary is answered "revoked" by the node,
 * which follows the change feed on the replica; with the replica's replay paused the node keeps
 * serving what the replica has and reports the lag (/readyz 503 "replica lagging"); once replay
 * resumes it answers "revoked" and is ready again. */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rel.h"
#include <pg.h>
#include "support.h"

#define REPLICA_SH PKIVA_SOURCE_DIR "/tests/support/pg-replica.sh"

static struct rel_server node;
static char db_name[64];
static char primary_uri[512];
static char replica_uri[512];
static int replica_started;

static void run_sql(const char *uri, const char *text)
{
    PQclear(ts_pg_exec(uri, text));
}

static void setup(void)
{
    const char *server = getenv("PKIVA_TEST_PG");
    const char *rest = NULL;
    char text[2048], host[300];
    int port = 0;

    cr_assert(server != NULL && server[0] != '\0',
              "run under tests/support/with-postgres.sh (ctest does)");
    (void)snprintf(db_name, sizeof(db_name), "replica_%ld", (long)getpid());
    (void)snprintf(text, sizeof(text), "CREATE DATABASE %s", db_name);
    run_sql(server, text);
    rest = strchr(server, '?');
    (void)snprintf(primary_uri, sizeof(primary_uri), "postgresql:///%s%s", db_name,
                   rest ? rest : "");
    /* The standby: a base backup of the primary, streaming from it. */
    cr_assert_eq(ts_run(REPLICA_SH " start 2>&1", text, sizeof(text)), 0, "replica: %s", text);
    replica_started = 1;
    cr_assert_eq(sscanf(text, "host=%299s port=%d", host, &port), 2, "%s", text);
    (void)snprintf(replica_uri, sizeof(replica_uri), "postgresql:///%s?host=%s&port=%d&user=pkiva",
                   db_name, host, port);
    rel_setup(&node);
    cr_assert_eq(rel_sh(&node, text, sizeof(text), "sed -i '/^path = /d' pkiva.conf 2>&1"), 0, "%s",
                 text);
    (void)snprintf(text, sizeof(text),
                   "[store]\nbackend = postgresql\nconninfo = %s\nread_conninfo = %s\n"
                   "read_max_lag = 1s\nfeed_poll = 100ms\n",
                   primary_uri, replica_uri);
    rel_conf_append(&node, text);
}

static void teardown(void)
{
    const char *server = getenv("PKIVA_TEST_PG");
    char text[1024];

    if (node.pid > 0)
        (void)rel_stop(&node); /* a failed stop is killed by rel_teardown */
    rel_teardown(&node);
    if (replica_started)
        (void)ts_run(REPLICA_SH " stop 2>&1", text, sizeof(text)); /* best effort */
    if (server != NULL && db_name[0] != '\0') {
        (void)snprintf(text, sizeof(text), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        run_sql(server, text);
    }
}

TestSuite(replica, .init = setup, .fini = teardown, .timeout = 300);

/* Polls the node's OCSP answer for serial until it is want (0 good, 1 revoked), at most 30 s. */
static int wait_status(const char *serial, int want)
{
    for (long long start = rel_now_ms(); rel_now_ms() - start < 30000; rel_sleep_ms(50))
        if (rel_ocsp(&node, serial, 0, NULL) == want)
            return 1;
    return 0;
}

/* Polls /readyz until it answers status with why in its body, at most 30 s. */
static int wait_ready(int status, const char *why, char *body, size_t body_len)
{
    for (long long start = rel_now_ms(); rel_now_ms() - start < 30000; rel_sleep_ms(100)) {
        body[0] = '\0';
        if (rel_get(node.port, "/readyz", body, body_len, 2000) == status &&
            (why == NULL || strstr(body, why) != NULL))
            return 1;
    }
    return 0;
}

static void revoke_on_primary(const char *serial)
{
    char out[4096];

    cr_assert_eq(rel_sh(&node, out, sizeof(out),
                        REL_PKIVA " revoke --data . --issuer demo-ca --serial %s "
                                  "--reason keyCompromise 2>&1",
                        serial),
                 0, "revoke: %s", out);
}

Test(replica, reads_from_the_replica_write_to_the_primary_and_report_the_lag)
{
    char serials[2][33];
    char out[4096], body[1024];

    rel_start(&node, 60);
    cr_assert_eq(rel_sh(&node, out, sizeof(out), "grep -c 'come from the replica' %s", node.log), 0,
                 "%s", out);
    rel_register_serials(&node, 2, serials);
    cr_assert(wait_status(serials[0], 0), "never good: %s", serials[0]);
    cr_assert(wait_status(serials[1], 0), "never good: %s", serials[1]);
    /* A revocation written to the primary reaches the node through the replica's feed. */
    revoke_on_primary(serials[0]);
    cr_assert(wait_status(serials[0], 1), "never revoked through the replica");
    cr_assert(wait_ready(200, NULL, body, sizeof(body)), "not ready: %s", body);

    /* Replay paused: the next revocation is on the primary only. The node reports the lag once
     * it passes read_max_lag, and meanwhile still serves what the replica has. */
    run_sql(replica_uri, "SELECT pg_wal_replay_pause()");
    revoke_on_primary(serials[1]);
    cr_assert(wait_ready(503, "replica lagging", body, sizeof(body)),
              "the node did not report the lagging replica: %s", body);
    cr_assert_eq(rel_ocsp(&node, serials[1], 0, NULL), 0,
                 "reads come from the replica: not revoked there yet");
    cr_assert_eq(rel_sh(&node, out, sizeof(out), "grep -c 'read replica lags' %s", node.log), 0,
                 "%s", out);

    /* Replay resumed: revoked, and ready again. */
    run_sql(replica_uri, "SELECT pg_wal_replay_resume()");
    cr_assert(wait_status(serials[1], 1), "never revoked after the replay resumed");
    cr_assert(wait_ready(200, NULL, body, sizeof(body)), "not ready again: %s", body);
}
