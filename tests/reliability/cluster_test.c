/* SPDX-License-Identifier: Apache-2.0 */
/* Three `pkiva serve` nodes on one PostgreSQL store (issue 16), run by ctest under
 * tests/support/with-postgres.sh: node A is made by `pkiva init`, B and C are copies of its data
 * folder (each with its own copy of the SoftHSM2 token, holding the same keys) on their own
 * ports, all three with [store] backend = postgresql on a fresh database. Checked: a revocation
 * acknowledged by any node is answered "revoked" by every node; time-stamp serials are unique
 * across nodes, every token in the shared log; the audit log stays one verifiable chain after
 * concurrent writers on all nodes; CRL numbers saved in the store rise strictly per issuer; every
 * node writes the newest CRL to its own [crl] files; a publisher stopped with SIGSTOP loses the
 * lease after [crl] lease, and steps down without publishing when it runs again. */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rel.h"
#include <pg.h>
#include "support.h"

#define NODES 3

static struct rel_server nodes[NODES];
static char db_uri[512];
static char db_name[64];

static long long sql_int(const char *text)
{
    PGresult *res = ts_pg_exec(db_uri, text);
    long long v = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
    PQclear(res);
    return v;
}

/* Node i > 0: a copy of node A's data folder with every path in its files pointing at itself. */
static void copy_node(struct rel_server *dst, const struct rel_server *src)
{
    char out[4096];

    memset(dst, 0, sizeof(*dst));
    cr_assert_eq(ts_tmpdir(dst->dir, sizeof(dst->dir)), 0);
    (void)snprintf(dst->data, sizeof(dst->data), "%s/var", dst->dir);
    (void)snprintf(dst->log, sizeof(dst->log), "%s/server.log", dst->dir);
    dst->port = ts_free_port();
    dst->admin_port = ts_free_port();
    (void)snprintf(dst->token, sizeof(dst->token), "%s", src->token);
    cr_assert_eq(X509_up_ref(src->issuer), 1);
    dst->issuer = src->issuer;
    cr_assert_eq(rel_sh(src, out, sizeof(out),
                        "cp -a %s %s && sed -i 's|%s|%s|g' %s/pkiva.conf %s/hsm/softhsm2.conf 2>&1",
                        src->data, dst->data, src->data, dst->data, dst->data, dst->data),
                 0, "copy: %s", out);
}

static void setup(void)
{
    const char *server = getenv("PKIVA_TEST_PG");
    const char *rest = NULL;
    char text[1024];

    cr_assert(server != NULL && server[0] != '\0',
              "run under tests/support/with-postgres.sh (ctest does)");
    (void)snprintf(db_name, sizeof(db_name), "cluster_%ld", (long)getpid());
    (void)snprintf(text, sizeof(text), "CREATE DATABASE %s", db_name);
    PQclear(ts_pg_exec(server, text));
    rest = strchr(server, '?');
    (void)snprintf(db_uri, sizeof(db_uri), "postgresql:///%s%s", db_name, rest ? rest : "");
    rel_setup(&nodes[0]);
    /* The store is PostgreSQL: no path; a short poll so that followers apply changes quickly. */
    cr_assert_eq(rel_sh(&nodes[0], text, sizeof(text), "sed -i '/^path = /d' pkiva.conf 2>&1"), 0,
                 "%s", text);
    (void)snprintf(text, sizeof(text),
                   "[store]\nbackend = postgresql\nconninfo = %s\nfeed_poll = 100ms\n"
                   "[crl]\ncoalesce = 200ms\nlease = 3s\n",
                   db_uri);
    rel_conf_append(&nodes[0], text);
    for (int i = 1; i < NODES; i++)
        copy_node(&nodes[i], &nodes[0]);
    for (int i = 0; i < NODES; i++)
        rel_start(&nodes[i], 60);
}

static void teardown(void)
{
    const char *server = getenv("PKIVA_TEST_PG");
    char text[128];

    for (int i = NODES - 1; i >= 0; i--) {
        if (nodes[i].pid > 0)
            (void)rel_stop(&nodes[i]); /* a failed stop is killed by rel_teardown */
        rel_teardown(&nodes[i]);
    }
    if (server != NULL && db_name[0] != '\0') {
        (void)snprintf(text, sizeof(text), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db_name);
        PQclear(ts_pg_exec(server, text));
    }
}

TestSuite(cluster, .init = setup, .fini = teardown, .timeout = 300);

/* Polls node's OCSP answer for serial until it is want (0 good, 1 revoked), at most limit_ms;
 * returns the ms it took or -1. */
static long long wait_status(const struct rel_server *node, const char *serial, int want,
                             long long limit_ms)
{
    long long start = rel_now_ms();

    for (;;) {
        int status = rel_ocsp(node, serial, 0, NULL);
        long long took = rel_now_ms() - start;
        if (status == want)
            return took;
        if (took > limit_ms)
            return -1;
        rel_sleep_ms(20);
    }
}

Test(cluster, a_revocation_on_any_node_is_revoked_on_every_node)
{
    char serials[NODES * 2][33];
    char json[256], body[2048];
    long long worst = 0;

    rel_register_serials(&nodes[0], NODES * 2, serials);
    for (int s = 0; s < NODES * 2; s++)
        for (int n = 0; n < NODES; n++)
            cr_assert_geq(wait_status(&nodes[n], serials[s], 0, 30000), 0,
                          "node %d never answered good for %s", n, serials[s]);
    /* One revocation through each node's admin API, then one more through each at once. */
    for (int s = 0; s < NODES * 2; s++) {
        const struct rel_server *via = &nodes[s % NODES];
        (void)snprintf(json, sizeof(json),
                       "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                       serials[s]);
        cr_assert_eq(rel_admin(via, "/admin/revoke", json, NULL, body, sizeof(body)), 200,
                     "revoke via node %d: %s", s % NODES, body);
        if (s < NODES) {
            /* The acknowledged revocation is answered by every node (measured from the ack). */
            for (int n = 0; n < NODES; n++) {
                long long took = wait_status(&nodes[n], serials[s], 1, 30000);
                cr_assert_geq(took, 0, "node %d never answered revoked for %s", n, serials[s]);
                worst = took > worst ? took : worst;
            }
        }
    }
    for (int s = NODES; s < NODES * 2; s++)
        for (int n = 0; n < NODES; n++)
            cr_assert_geq(wait_status(&nodes[n], serials[s], 1, 30000), 0,
                          "node %d never answered revoked for %s", n, serials[s]);
    cr_log_info("revoked on one node -> revoked on every node: worst %lld ms", worst);
    fprintf(stderr, "cluster: revoked on one node -> revoked on every node: worst %lld ms\n",
            worst);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations"), NODES * 2);

    /* Every node publishes CRLs into the one history: numbers rise strictly per issuer (no
     * duplicate can exist: unique key; a stale number is refused), and each node serves a CRL. */
    cr_assert_eq(sql_int("SELECT count(*) FROM (SELECT issuer_id, number FROM crl_history "
                         "GROUP BY 1, 2 HAVING count(*) > 1) AS d"),
                 0);
    cr_assert_eq(sql_int("SELECT count(*) FROM crl_history AS a JOIN crl_history AS b ON "
                         "a.issuer_id = b.issuer_id AND a.number < b.number AND a.id > b.id"),
                 0, "a CRL saved after a newer one has an older number");
    /* Every node ends up serving the same bytes: the newest CRL of the shared history, which
     * lists all six revocations. */
    char out[4096] = "";
    int same = 0;
    for (long long start = rel_now_ms(); !same && rel_now_ms() - start < 30000;) {
        cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                            "for p in %d %d %d; do curl -sS -f http://127.0.0.1:$p/crl/demo-ca.crl "
                            "| sha256sum; done | sort -u | wc -l; curl -sS -f "
                            "http://127.0.0.1:%d/crl/demo-ca.crl | openssl crl -inform DER -noout "
                            "-text | grep -c 'Serial Number'",
                            nodes[0].port, nodes[1].port, nodes[2].port, nodes[1].port),
                     0, "%s", out);
        same = strcmp(out, "1\n6\n") == 0;
        if (!same)
            rel_sleep_ms(100);
    }
    cr_assert(same, "the nodes do not serve the same CRL listing the 6 revocations: %s", out);
    /* One publisher at a time: only the holder of the lease (node A, started first) published;
     * the others served its CRLs. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        "for l in %s %s %s; do grep -c 'CRL [0-9]* published:' $l; done | "
                        "grep -vc '^0$'",
                        nodes[0].log, nodes[1].log, nodes[2].log),
                 0, "%s", out);
    cr_assert_eq(atoi(out), 1, "%s nodes published CRLs", out);
}

/* Serves node's CRL of demo-ca until it lists serial (hex), at most 30 s; 1 when it does. */
static int wait_crl_lists(const struct rel_server *node, const char *serial)
{
    char out[8192];

    for (long long start = rel_now_ms(); rel_now_ms() - start < 30000; rel_sleep_ms(100)) {
        out[0] = '\0';
        if (rel_sh(node, out, sizeof(out),
                   "curl -sS -f http://127.0.0.1:%d/crl/demo-ca.crl | openssl crl -inform DER "
                   "-noout -text 2>/dev/null | grep -ci 'Serial Number: %s'",
                   node->port, serial) == 0 &&
            atoi(out) == 1)
            return 1;
    }
    return 0;
}

/* The CRL publisher dies (kill -9): another node takes the lease over, publishes what was pending,
 * and every remaining node serves the new CRL. */
Test(cluster, another_node_takes_over_crl_publication)
{
    char serials[1][33];
    char json[256], body[2048], out[4096];

    rel_register_serials(&nodes[1], 1, serials);
    rel_kill9(&nodes[0]);
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[0]);
    cr_assert_eq(rel_admin(&nodes[1], "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                 body);
    long long acked = rel_now_ms();
    for (int n = 1; n < NODES; n++)
        cr_assert(wait_crl_lists(&nodes[n], serials[0]), "node %d never served the new CRL", n);
    fprintf(stderr,
            "cluster: publisher killed; revocation in the CRL of every other node %lld ms "
            "after its acknowledgement (coalesce 200 ms)\n",
            rel_now_ms() - acked);
    cr_assert_eq(rel_sh(&nodes[1], out, sizeof(out), "cat %s %s | grep -c 'lease taken over'",
                        nodes[1].log, nodes[2].log),
                 0, "%s", out);
    cr_assert_eq(atoi(out), 1, "%s nodes took the lease over", out);
}

/* 1 when every node in [from, NODES) serves the same demo-ca CRL bytes as its own local file
 * <data>/crl/demo-ca.crl and as every other such node, and that CRL lists serial; polled, 30 s. */
static int wait_same_crl_everywhere(int from, const char *serial, char *out, size_t out_len)
{
    char cmd[2048];
    size_t used = 0;

    used += (size_t)snprintf(cmd + used, sizeof(cmd) - used, "{ ");
    for (int n = from; n < NODES; n++)
        used += (size_t)snprintf(cmd + used, sizeof(cmd) - used,
                                 "curl -sS -f http://127.0.0.1:%d/crl/demo-ca.crl | sha256sum; "
                                 "sha256sum < %s/crl/demo-ca.crl; ",
                                 nodes[n].port, nodes[n].data);
    (void)snprintf(cmd + used, sizeof(cmd) - used,
                   "} | sort -u | wc -l; openssl crl -inform DER -noout -text -in "
                   "%s/crl/demo-ca.crl 2>/dev/null | grep -ci 'Serial Number: %s'",
                   nodes[NODES - 1].data, serial);
    for (long long start = rel_now_ms(); rel_now_ms() - start < 30000; rel_sleep_ms(100)) {
        out[0] = '\0';
        if (rel_sh(&nodes[0], out, out_len, "%s", cmd) == 0 && strcmp(out, "1\n1\n") == 0)
            return 1;
    }
    return 0;
}

/* Only node A publishes, yet every node's local CRL file ([crl] publish_dir) is the CRL it serves:
 * the newest of the store, written atomically when it changes. */
Test(cluster, every_node_writes_the_newest_crl_to_its_files)
{
    char serials[1][33];
    char json[256], body[2048], out[4096];

    rel_register_serials(&nodes[0], 1, serials);
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[0]);
    cr_assert_eq(rel_admin(&nodes[2], "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                 body);
    cr_assert(wait_same_crl_everywhere(0, serials[0], out, sizeof(out)),
              "the nodes' files and served CRLs differ or miss the revocation: %s", out);
    /* Node A published it; B and C only adopted it, and wrote it. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out), "cat %s %s | grep -c 'CRL [0-9]* published:'",
                        nodes[1].log, nodes[2].log),
                 1, "B or C published: %s", out);
    /* The delta file follows too (adopted at most a publisher turn after its base). */
    int same = 0;
    for (long long start = rel_now_ms(); !same && rel_now_ms() - start < 30000; rel_sleep_ms(100))
        same = rel_sh(&nodes[0], out, sizeof(out),
                      "for d in %s %s %s; do sha256sum < $d/crl/demo-ca-delta.crl; done | "
                      "sort -u | wc -l",
                      nodes[0].data, nodes[1].data, nodes[2].data) == 0 &&
               strcmp(out, "1\n") == 0;
    cr_assert(same, "the nodes' delta CRL files differ: %s", out);
}

/* The publisher hangs with its store connection open (SIGSTOP): after [crl] lease (3 s here) the
 * store ends its idle session, another node takes the lease and publishes the pending revocation;
 * the stopped node, resumed, steps down: it publishes nothing (no older or duplicate number in the
 * history) and serves the new holder's CRL. */
Test(cluster, a_stalled_publisher_loses_the_lease_and_steps_down)
{
    char serials[2][33];
    char json[256], body[2048], out[4096];

    rel_register_serials(&nodes[1], 2, serials);
    /* Node A, started first, holds the lease: it has published the first CRLs. */
    int published = 0;
    for (long long start = rel_now_ms(); !published && rel_now_ms() - start < 30000;
         rel_sleep_ms(100))
        published = rel_sh(&nodes[0], out, sizeof(out), "grep -c 'CRL [0-9]* published:' %s",
                           nodes[0].log) == 0;
    cr_assert(published, "node A never published");
    cr_assert_eq(kill(nodes[0].pid, SIGSTOP), 0);
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[0]);
    cr_assert_eq(rel_admin(&nodes[1], "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                 body);
    long long acked = rel_now_ms();
    int listed = wait_crl_lists(&nodes[1], serials[0]) && wait_crl_lists(&nodes[2], serials[0]);
    long long took = rel_now_ms() - acked;
    (void)kill(nodes[0].pid, SIGCONT);
    cr_assert(listed, "no other node published while the publisher was stopped");
    fprintf(stderr,
            "cluster: publisher stopped; revocation in the CRL of both other nodes %lld ms after "
            "its acknowledgement (lease 3 s, coalesce 200 ms)\n",
            took);
    /* Resumed, node A finds its session gone and steps down. */
    int stepped = 0;
    for (long long start = rel_now_ms(); !stepped && rel_now_ms() - start < 30000;
         rel_sleep_ms(100))
        stepped = rel_sh(&nodes[0], out, sizeof(out), "grep -c 'no longer holds the CRL lease' %s",
                         nodes[0].log) == 0;
    cr_assert(stepped, "node A did not step down");
    /* A revocation through node A now reaches the CRLs through the new holder, and every node
     * (node A included) serves and writes the same newest CRL. */
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[1]);
    for (int tries = 0; tries < 50; tries++) {
        if (rel_admin(&nodes[0], "/admin/revoke", json, NULL, body, sizeof(body)) == 200)
            break;
        rel_sleep_ms(100); /* its admin connection to the store may have been ended too */
    }
    cr_assert(wait_same_crl_everywhere(0, serials[1], out, sizeof(out)),
              "node A does not serve the new holder's CRL: %s", out);
    /* Node A published nothing after it stepped down; the history has no duplicate and no number
     * saved after a higher one. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        "sed -n '/no longer holds the CRL lease/,$p' %s | "
                        "grep -c 'CRL [0-9]* published:'",
                        nodes[0].log),
                 1, "node A published after stepping down: %s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM (SELECT issuer_id, number FROM crl_history "
                         "GROUP BY 1, 2 HAVING count(*) > 1) AS d"),
                 0);
    cr_assert_eq(sql_int("SELECT count(*) FROM crl_history AS a JOIN crl_history AS b ON "
                         "a.issuer_id = b.issuer_id AND a.number < b.number AND a.id > b.id"),
                 0, "a CRL saved after a newer one has an older number");
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out), "cat %s %s | grep -c 'lease taken over'",
                        nodes[1].log, nodes[2].log),
                 0, "%s", out);
    cr_assert_eq(atoi(out), 1, "%s nodes took the lease over", out);
}

Test(cluster, tsa_serials_are_unique_across_nodes_and_logged)
{
    char out[16384];
    long long tokens = 0;

    /* 10 time stamps from each node, interleaved; the serials the clients saw must all differ. */
    cr_assert_eq(
        rel_sh(&nodes[0], out, sizeof(out),
               "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>/dev/null && "
               "for i in 1 2 3 4 5 6 7 8 9 10; do for p in %d %d %d; do "
               "curl -sS -f -o r.tsr --data-binary @q.tsq -H 'Content-Type: "
               "application/timestamp-query' http://127.0.0.1:$p/tsa && "
               "openssl ts -reply -in r.tsr -text 2>/dev/null | sed -n 's/^Serial number: "
               "//p'; done; done > serials.txt && sort serials.txt | uniq -d | wc -l && "
               "wc -l < serials.txt",
               nodes[0].port, nodes[1].port, nodes[2].port),
        0, "%s", out);
    cr_assert(strncmp(out, "0\n30\n", 5) == 0, "duplicate serials or missing tokens: %s", out);
    /* The log is written before a token is returned (group commit): all 30 are there. */
    tokens = sql_int("SELECT count(*) FROM tsa_tokens");
    cr_assert_eq(tokens, 30);
    cr_assert_eq(sql_int("SELECT count(DISTINCT (cert_id, serial)) FROM tsa_tokens"), 30);
}

Test(cluster, audit_chain_stays_one_chain_under_concurrent_writers)
{
    char serials[24][33];
    char out[8192];

    rel_register_serials(&nodes[0], 24, serials);
    /* Revocations with each node's configuration at once (8 each, in parallel shells), while
     * the servers write their own records (SLA marks, CRLs, seals). */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        "n=0; for d in %s %s %s; do ( for i in 0 1 2 3 4 5 6 7; do "
                        "%s revoke --data $d --issuer demo-ca --serial $(sed -n \"$((n*8+i+1))p\" "
                        "%s/index.txt | cut -f4) --reason superseded >/dev/null 2>&1 || exit 1; "
                        "done ) & eval p$n=$!; n=$((n+1)); done; "
                        "wait $p0 && wait $p1 && wait $p2",
                        nodes[0].data, nodes[1].data, nodes[2].data, REL_PKIVA, nodes[0].dir),
                 0, "%s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations WHERE reason = 4"), 24);
    /* One chain: ids contiguous from 1, every change covered, and `pkiva audit verify` agrees
     * from any node. */
    cr_assert_eq(sql_int("SELECT CASE WHEN count(*) = max(id) THEN 1 ELSE 0 END FROM audit"), 1,
                 "audit ids are not contiguous from 1");
    for (int n = 0; n < NODES; n++)
        cr_assert_eq(rel_sh(&nodes[n], out, sizeof(out), REL_PKIVA " audit verify --data %s 2>&1",
                            nodes[n].data),
                     0, "audit verify on node %d: %s", n, out);
}

/* Polls node's /readyz until it answers status (and its body holds why), at most 20 s. */
static int wait_ready(const struct rel_server *node, int status, const char *why)
{
    char body[1024];

    for (long long start = rel_now_ms(); rel_now_ms() - start < 20000; rel_sleep_ms(50)) {
        body[0] = '\0';
        if (rel_get(node->port, "/readyz", body, sizeof(body), 2000) == status &&
            (why == NULL || strstr(body, why) != NULL))
            return 1;
    }
    return 0;
}

/* PostgreSQL restarted under the cluster: while it is down a revocation is refused with an
 * error (never acknowledged) and OCSP keeps answering from memory; once it is back, without
 * restarting any node, a revocation through any node is acknowledged and reaches every node. */
Test(cluster, store_outage_refuses_writes_and_recovers_without_restart)
{
    char serials[2][33];
    char json[256], body[2048], out[4096];
    const char *stop = getenv("PKIVA_TEST_PG_STOP");
    const char *start = getenv("PKIVA_TEST_PG_START");
    int status = 0;

    cr_assert(stop != NULL && start != NULL);
    rel_register_serials(&nodes[0], 2, serials);
    for (int n = 0; n < NODES; n++)
        cr_assert_geq(wait_status(&nodes[n], serials[0], 0, 30000), 0);
    cr_assert_eq(ts_run(stop, out, sizeof(out)), 0, "stop: %s", out);
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[0]);
    status = rel_admin(&nodes[1], "/admin/revoke", json, NULL, body, sizeof(body));
    cr_assert_neq(status, 200, "acknowledged while the store was down: %s", body);
    cr_assert_geq(status, 500, "%d %s", status, body);
    fprintf(stderr, "cluster: revocation while the store is down: HTTP %d %s", status, body);
    for (int n = 0; n < NODES; n++)
        cr_assert_eq(rel_ocsp(&nodes[n], serials[0], 0, NULL), 0, "node %d still answers", n);
    /* Each node's /readyz says why it should not get new relying parties meanwhile. */
    for (int n = 0; n < NODES; n++)
        cr_assert(wait_ready(&nodes[n], 503, "store unavailable"), "node %d /readyz", n);
    cr_assert_eq(ts_run(start, out, sizeof(out)), 0, "start: %s", out);
    for (int n = 0; n < NODES; n++)
        cr_assert(wait_ready(&nodes[n], 200, NULL), "node %d /readyz after the restart", n);
    /* The first write after the restart may meet a connection not yet found broken: a caller
     * retries a refused revocation, and it is acknowledged once the store answers. */
    int tries = 0;
    for (tries = 0; tries < 50; tries++) {
        status = rel_admin(&nodes[1], "/admin/revoke", json, NULL, body, sizeof(body));
        if (status == 200)
            break;
        rel_sleep_ms(100);
    }
    cr_assert_eq(status, 200, "not acknowledged after the restart: %s", body);
    fprintf(stderr, "cluster: acknowledged after the restart at try %d\n", tries);
    for (int n = 0; n < NODES; n++)
        cr_assert_geq(wait_status(&nodes[n], serials[0], 1, 30000), 0,
                      "node %d did not resume its feed", n);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations"), 1, "nothing else was written");
}

/* The public directory on a PostgreSQL store: certificates registered through node A are found by
 * name (HTML and JSON) and by fingerprint on node B, with their status right now; a revocation
 * through node A shows in node B's search results. */
Test(cluster, directory_search_is_answered_by_every_node)
{
    char out[8192], body[65536], path[512], fp[128], serial[80], json[256];
    int revoked_seen = 0;

    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        REL_PKIVA " import --data . pki/demo-good.pem pki/demo-revoked.pem 2>&1"),
                 0, "import: %s", out);
    cr_assert_eq(rel_get(nodes[1].port, "/directory/search?q=demo+subscriber&lang=en", body,
                         sizeof(body), 10000),
                 200, "%s", body);
    cr_assert(strstr(body, "Demo Subscriber Good") != NULL, "%.3000s", body);
    cr_assert(strstr(body, "Demo Subscriber Revoked") != NULL, "%.3000s", body);
    cr_assert_eq(rel_get(nodes[2].port, "/directory/search?q=subscriber+goo&format=json", body,
                         sizeof(body), 10000),
                 200, "%s", body);
    cr_assert(strstr(body, "Demo Subscriber Good") != NULL && strstr(body, "Revoked") == NULL,
              "%.3000s", body);
    /* A SHA-256 fingerprint, with colons as openssl prints it. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        "openssl x509 -in pki/demo-good.pem -noout -fingerprint -sha256 | "
                        "cut -d= -f2; openssl x509 -in pki/demo-good.pem -noout -serial | "
                        "cut -d= -f2"),
                 0, "%s", out);
    cr_assert_eq(sscanf(out, "%127s %79s", fp, serial), 2, "%s", out);
    (void)snprintf(path, sizeof(path), "/directory/search?q=%s&format=json", fp);
    cr_assert_eq(rel_get(nodes[1].port, path, body, sizeof(body), 10000), 200, "%s", body);
    cr_assert(strstr(body, "Demo Subscriber Good") != NULL, "%.3000s", body);
    /* Revoked through node A: node B's results say so. */
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serial);
    cr_assert_eq(rel_admin(&nodes[0], "/admin/revoke", json, NULL, out, sizeof(out)), 200, "%s",
                 out);
    for (long long start = rel_now_ms(); !revoked_seen && rel_now_ms() - start < 30000;
         rel_sleep_ms(100)) {
        body[0] = '\0';
        revoked_seen = rel_get(nodes[1].port, path, body, sizeof(body), 10000) == 200 &&
                       strstr(body, "\"status\":\"revoked\"") != NULL;
    }
    cr_assert(revoked_seen, "node B never showed the revocation: %.3000s", body);
}

/* ---- cluster-wide SLA and feed lag (issue 16) ------------------------------------------------ */

/* A relay from a Unix socket in dir (named like PostgreSQL's, .s.PGSQL.<port>) to the test
 * server's socket, in its own process group so that the test can freeze every connection of a
 * node that goes through it (SIGSTOP) and thaw them (SIGCONT). Returns the group's pid. */
static pid_t relay_start(const char *dir, const char *pg_dir, int pg_port)
{
    struct sockaddr_un at, to;
    pid_t pid;
    int lsock;

    memset(&at, 0, sizeof(at));
    memset(&to, 0, sizeof(to));
    at.sun_family = to.sun_family = AF_UNIX;
    cr_assert_lt(snprintf(at.sun_path, sizeof(at.sun_path), "%s/.s.PGSQL.%d", dir, pg_port),
                 (int)sizeof(at.sun_path), "socket path too long");
    cr_assert_lt(snprintf(to.sun_path, sizeof(to.sun_path), "%s/.s.PGSQL.%d", pg_dir, pg_port),
                 (int)sizeof(to.sun_path), "socket path too long");
    lsock = socket(AF_UNIX, SOCK_STREAM, 0);
    cr_assert_geq(lsock, 0);
    cr_assert_eq(bind(lsock, (struct sockaddr *)&at, sizeof(at)), 0, "bind %s", at.sun_path);
    cr_assert_eq(listen(lsock, 64), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid > 0) {
        (void)close(lsock);
        (void)setpgid(pid, pid); /* also done by the child: whichever runs first */
        return pid;
    }
    (void)setpgid(0, 0);
    (void)signal(SIGCHLD, SIG_IGN); /* relays are reaped by the kernel */
    /* Dies with the test, and never holds ctest's output pipe open after it. */
    (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
    (void)dup2(open("/dev/null", O_WRONLY), STDOUT_FILENO);
    (void)dup2(STDOUT_FILENO, STDERR_FILENO);
    for (;;) {
        int in = accept(lsock, NULL, NULL);
        if (in < 0)
            continue;
        if (fork() == 0) {
            int out = socket(AF_UNIX, SOCK_STREAM, 0);
            struct pollfd p[2] = {{in, POLLIN, 0}, {out, POLLIN, 0}};
            char buf[65536];
            if (out < 0 || connect(out, (struct sockaddr *)&to, sizeof(to)) != 0)
                _exit(1);
            for (;;) {
                if (poll(p, 2, -1) < 0)
                    _exit(1);
                for (int i = 0; i < 2; i++) {
                    ssize_t n;
                    if (p[i].revents == 0)
                        continue;
                    n = read(p[i].fd, buf, sizeof(buf));
                    if (n <= 0)
                        _exit(0);
                    for (ssize_t done = 0; done < n;) {
                        ssize_t w = write(p[1 - i].fd, buf + done, (size_t)(n - done));
                        if (w <= 0)
                            _exit(0);
                        done += w;
                    }
                }
            }
        }
        (void)close(in);
    }
}

/* `pkiva sla` with node's configuration, but nodes count as live for 10 minutes after their last
 * report (so that a node held back stays in the listing however slow this machine is). */
static void sla_report(const struct rel_server *node, char *out, size_t len)
{
    cr_assert_eq(rel_sh(node, out, len,
                        "cp %s/pkiva.conf %s/sla.conf && printf '\\n[store]\\nmax_feed_lag = "
                        "10m\\n' >> %s/sla.conf && " REL_PKIVA " sla --config %s/sla.conf 2>&1",
                        node->data, node->dir, node->dir, node->dir),
                 0, "pkiva sla: %s", out);
}

/* This node's name in the store: <hostname>:<port> (serve's default). */
static void node_name_of(const struct rel_server *node, char *out, size_t len)
{
    char host[64];

    cr_assert_eq(gethostname(host, sizeof(host)), 0);
    host[sizeof(host) - 1] = '\0';
    (void)snprintf(out, len, "%s:%d", host, node->port);
}

/* The node line of `pkiva sla` output for name, copied into line; 1 when found. */
static int sla_node_line(const char *report, const char *name, char *line, size_t len)
{
    char key[200];
    const char *at = NULL, *end = NULL;

    (void)snprintf(key, sizeof(key), " %s ", name);
    for (at = strstr(report, "node  "); at != NULL; at = strstr(at + 1, "\nnode  ")) {
        end = strchr(at + 1, '\n');
        if (end == NULL)
            end = at + strlen(at);
        if (memmem(at, (size_t)(end - at), key, strlen(key)) != NULL) {
            (void)snprintf(line, len, "%.*s", (int)(end - at), at);
            return 1;
        }
    }
    return 0;
}

/* Every node reports its applied feed position in the store. Node C's store connections go
 * through a relay that the test freezes: C's feed stops, so C is listed behind with the
 * revocation "not applied by" it, its /readyz says 503 with the feed lag while A and B say 200,
 * the OCSP SLA mark waits for C (or for C to stop counting as live), and once thawed C catches up
 * and is ready again. */
Test(cluster, per_node_positions_and_a_held_back_node_is_not_ready)
{
    const char *pg_dir = getenv("PKIVA_TEST_PG_DIR");
    const char *port_at = strstr(db_uri, "port=");
    char names[NODES][160], line[512], out[16384], json[256], body[4096], serials[1][33];
    int pg_port = 0;
    pid_t relay = 0;
    long long held_heartbeat = 0, ocsp_at = 0;

    cr_assert(pg_dir != NULL && port_at != NULL);
    pg_port = atoi(port_at + 5);
    for (int n = 0; n < NODES; n++)
        node_name_of(&nodes[n], names[n], sizeof(names[n]));
    /* Node C again, its store reached through the relay. */
    cr_assert_eq(rel_stop(&nodes[2]), 0);
    relay = relay_start(nodes[2].dir, pg_dir, pg_port);
    cr_assert_eq(rel_sh(&nodes[2], out, sizeof(out), "sed -i 's|host=%s|host=%s|' %s/pkiva.conf",
                        pg_dir, nodes[2].dir, nodes[2].data),
                 0, "%s", out);
    rel_start(&nodes[2], 60);

    /* Every node listed, live, nothing behind. */
    rel_register_serials(&nodes[0], 1, serials);
    for (int n = 0; n < NODES; n++)
        cr_assert_geq(wait_status(&nodes[n], serials[0], 0, 30000), 0);
    int all_current = 0;
    for (long long start = rel_now_ms(); !all_current && rel_now_ms() - start < 30000;) {
        sla_report(&nodes[0], out, sizeof(out));
        all_current = 1;
        for (int n = 0; n < NODES; n++)
            all_current &= sla_node_line(out, names[n], line, sizeof(line)) &&
                           strstr(line, " live behind 0 change(s)") != NULL;
        if (!all_current)
            rel_sleep_ms(200);
    }
    cr_assert(all_current, "not every node is listed live and current:\n%s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM nodes"), NODES);
    for (int n = 0; n < NODES; n++)
        cr_assert(wait_ready(&nodes[n], 200, NULL), "node %d not ready", n);

    /* Hold node C back, then revoke through node A. */
    cr_assert_eq(kill(-relay, SIGSTOP), 0);
    rel_sleep_ms(300); /* a report C had in flight lands or stays frozen */
    (void)snprintf(body, sizeof(body), "SELECT heartbeat_ms FROM nodes WHERE name = '%s'",
                   names[2]);
    held_heartbeat = sql_int(body);
    (void)snprintf(json, sizeof(json),
                   "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}",
                   serials[0]);
    cr_assert_eq(rel_admin(&nodes[0], "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                 body);
    for (int n = 0; n < 2; n++)
        cr_assert_geq(wait_status(&nodes[n], serials[0], 1, 30000), 0, "node %d", n);
    /* A and B report the revocation applied (their next report); C stays behind. */
    int listed = 0;
    for (long long start = rel_now_ms(); !listed && rel_now_ms() - start < 30000;) {
        char missing[256];
        sla_report(&nodes[0], out, sizeof(out));
        (void)snprintf(missing, sizeof(missing), "not applied by: %s\n", names[2]);
        listed = strstr(out, missing) != NULL && sla_node_line(out, names[2], line, sizeof(line)) &&
                 strstr(line, " live behind 1 change(s)") != NULL;
        for (int n = 0; listed && n < 2; n++)
            listed = sla_node_line(out, names[n], line, sizeof(line)) &&
                     strstr(line, " live behind 0 change(s)") != NULL;
        if (!listed)
            rel_sleep_ms(100);
    }
    cr_assert(listed, "A and B current, C behind and the only node not applying:\n%s", out);
    fprintf(stderr, "cluster: pkiva sla with node C held back:\n%s", out);
    /* The admin API says the same. */
    cr_assert_eq(rel_admin(&nodes[1], "/admin/sla", NULL, NULL, body, sizeof(body)), 200, "%s",
                 body);
    cr_assert(strstr(body, "\"not_applied_by\"") != NULL && strstr(body, names[2]) != NULL &&
                  strstr(body, "\"behind_changes\":1") != NULL,
              "%s", body);
    /* C is not ready (feed lag past [store] max_feed_lag, 5 s by default); A and B are. */
    cr_assert(wait_ready(&nodes[2], 503, "feed lag"), "node C never reported its feed lag");
    rel_get(nodes[2].port, "/readyz", body, sizeof(body), 2000);
    fprintf(stderr, "cluster: held-back node /readyz: %s", body);
    for (int n = 0; n < 2; n++)
        cr_assert(wait_ready(&nodes[n], 200, NULL), "node %d not ready", n);

    /* Thawed, C catches up: ready again, the revocation answered, nothing behind. */
    cr_assert_eq(kill(-relay, SIGCONT), 0);
    cr_assert(wait_ready(&nodes[2], 200, NULL), "node C not ready after catching up");
    cr_assert_geq(wait_status(&nodes[2], serials[0], 1, 30000), 0);
    all_current = 0;
    for (long long start = rel_now_ms(); !all_current && rel_now_ms() - start < 30000;) {
        sla_report(&nodes[0], out, sizeof(out));
        all_current = sla_node_line(out, names[2], line, sizeof(line)) &&
                      strstr(line, " live behind 0 change(s)") != NULL;
        if (!all_current)
            rel_sleep_ms(200);
    }
    cr_assert(all_current, "node C did not catch up:\n%s", out);
    /* The OCSP SLA mark was not written while C, live, had not applied the revocation: not
     * before C's frozen heartbeat went out of the live bound (5 s). */
    for (long long start = rel_now_ms(); ocsp_at <= 0 && rel_now_ms() - start < 30000;
         rel_sleep_ms(100))
        ocsp_at = sql_int("SELECT COALESCE(max(ocsp_at_ms), 0) FROM revocations");
    cr_assert_gt(ocsp_at, 0, "the revocation was never marked visible in OCSP");
    cr_assert_geq(ocsp_at, held_heartbeat + 5000,
                  "marked visible in OCSP at %lld while node C (heartbeat %lld) was live and "
                  "behind",
                  ocsp_at, held_heartbeat);
    (void)kill(-relay, SIGKILL); /* the relay and its connections: started by this test */
    (void)waitpid(relay, NULL, 0);
}

/* `pkiva import --index` into PostgreSQL (COPY per batch): counts, statuses, the feed, one audit
 * record per batch and a verifiable chain; every node answers for the imported revocations. A
 * file with a row PostgreSQL refuses (a subject that is not UTF-8) is refused as a whole: nothing
 * of it is committed. */
Test(cluster, bulk_import_is_complete_and_a_bad_row_commits_nothing)
{
    enum { LINES = 25000 };
    char path[400], out[8192], known[1][33];
    long long feed_before = 0, audit_before = 0, certs_before = 0;
    FILE *f = NULL;

    rel_register_serials(&nodes[0], 1, known); /* a certificate the import finds registered */
    (void)snprintf(path, sizeof(path), "%s/bulk.txt", nodes[0].dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < LINES; i++) {
        /* Every 10th revoked (keyCompromise, 2024), every 10th + 1 expired, the rest valid. */
        if (i % 10 == 0)
            fprintf(f,
                    "R\t351231235959Z\t240101000000Z,keyCompromise\t%04X%08X\tunknown\t/CN=b %d\n",
                    0x5000, i, i);
        else
            fprintf(f, "%c\t351231235959Z\t\t%04X%08X\tunknown\t/CN=b %d\n",
                    i % 10 == 1 ? 'E' : 'V', 0x5000, i, i);
    }
    /* The same certificate twice (good, then revoked), and one registered before: R revokes it. */
    fprintf(f, "R\t351231235959Z\t240101000000Z,superseded\t%04X%08X\tunknown\t/CN=b 1\n", 0x5000,
            1);
    fprintf(f, "R\t351231235959Z\t240101000000Z,superseded\t%s\tunknown\t/CN=known\n", known[0]);
    fclose(f);
    feed_before = sql_int("SELECT count(*) FROM feed");
    certs_before = sql_int("SELECT count(*) FROM certs");
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        REL_PKIVA " import --data %s --index %s --issuer demo-ca 2>&1 | grep "
                                  "'^imported:'",
                        nodes[0].data, path),
                 0, "%s", out);
    cr_assert(strstr(out, "imported: 25000 new, 2 already known, 2502 revoked, 0 skipped") != NULL,
              "%s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM certs") - certs_before, LINES);
    cr_assert_eq(sql_int("SELECT count(*) FROM certs WHERE status = 1"), 2502);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations WHERE reason = 1 AND revoked_at = "
                         "1704067200 AND actor = 'import'"),
                 2500);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations WHERE reason = 4"), 2);
    /* One change per new certificate, one per revocation of a known one; one audit record per
     * batch of 10 000 rows, each covering its changes; the chain verifies. */
    cr_assert_eq(sql_int("SELECT count(*) FROM feed") - feed_before, LINES + 2);
    cr_assert_eq(sql_int("SELECT count(*) FROM feed AS f JOIN certs AS c ON c.issuer_id = "
                         "f.issuer_id AND c.serial = f.serial AND c.feed_id = f.id"),
                 sql_int("SELECT count(*) FROM certs"));
    cr_assert_eq(sql_int("SELECT count(*) FROM audit WHERE action = 'import'"), 4);
    cr_assert_eq(sql_int("SELECT sum(feed_last - feed_first + 1) FROM audit WHERE action = "
                         "'import'"),
                 LINES + 2 + 1 /* the registration of the known one */);
    cr_assert_eq(rel_sh(&nodes[1], out, sizeof(out), REL_PKIVA " audit verify --data %s 2>&1",
                        nodes[1].data),
                 0, "%s", out);
    /* Every node follows the import: a revoked one, the known one revoked, an expired one. */
    char serial[33];
    (void)snprintf(serial, sizeof(serial), "%04X%08X", 0x5000, 20);
    for (int n = 0; n < NODES; n++) {
        cr_assert_geq(wait_status(&nodes[n], serial, 1, 30000), 0, "node %d", n);
        cr_assert_geq(wait_status(&nodes[n], known[0], 1, 30000), 0, "node %d", n);
    }

    /* A bad row in the middle of a file: the import fails and commits nothing of it. */
    (void)snprintf(path, sizeof(path), "%s/bad.txt", nodes[0].dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < 200; i++)
        fprintf(f, "V\t351231235959Z\t\t%04X%08X\tunknown\t/CN=%s %d\n", 0x6000, i,
                i == 100 ? "bad \xff\xfe" : "good", i);
    fclose(f);
    feed_before = sql_int("SELECT count(*) FROM feed");
    audit_before = sql_int("SELECT count(*) FROM audit WHERE action = 'import'");
    certs_before = sql_int("SELECT count(*) FROM certs");
    cr_assert_neq(rel_sh(&nodes[0], out, sizeof(out),
                         REL_PKIVA " import --data %s --index %s --issuer demo-ca 2>&1",
                         nodes[0].data, path),
                  0, "a bad row was accepted: %s", out);
    cr_assert(strstr(out, "UTF8") != NULL || strstr(out, "byte sequence") != NULL, "%s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM certs"), certs_before);
    cr_assert_eq(sql_int("SELECT count(*) FROM feed"), feed_before);
    /* (The servers append their own records meanwhile: CRL publications.) */
    cr_assert_eq(sql_int("SELECT count(*) FROM audit WHERE action = 'import'"), audit_before);
    /* ... and the store is usable at once: the same file without the bad row goes in. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        "grep -av 'bad ' %s > %s.ok && " REL_PKIVA
                        " import --data %s --index %s.ok --issuer demo-ca 2>&1 | grep '^imported:'",
                        path, path, nodes[0].data, path),
                 0, "%s", out);
    cr_assert(strstr(out, "imported: 199 new") != NULL, "%s", out);
}

/* A start after an import of many good certificates (and a few revoked ones, and a revocation
 * made while every node was down): the CRL publisher's start-up replay reads only the changes
 * that can change a CRL (the log line counts them), and every one of those revocations is in the
 * CRL served after the start. */
Test(cluster, a_start_after_a_large_import_replays_only_what_changes_the_crls)
{
    enum { LINES = 20000 };
    static const int revoked_at[] = {0, 9999, LINES - 1};
    char path[400], out[8192], serial[33];
    FILE *f = NULL;
    long long read = -1;

    for (int i = NODES - 1; i >= 0; i--)
        cr_assert_eq(rel_stop(&nodes[i]), 0, "node %d", i);
    (void)snprintf(path, sizeof(path), "%s/large.txt", nodes[0].dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 0; i < LINES; i++) {
        int r = i == revoked_at[0] || i == revoked_at[1] || i == revoked_at[2];
        fprintf(f, "%c\t351231235959Z\t%s\t%04X%08X\tunknown\t/CN=large %d\n", r ? 'R' : 'V',
                r ? "240101000000Z,keyCompromise" : "", 0x7000, i, i);
    }
    fclose(f);
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        REL_PKIVA " import --data %s --index %s --issuer demo-ca 2>&1 | grep "
                                  "'^imported:'",
                        nodes[0].data, path),
                 0, "%s", out);
    cr_assert(strstr(out, "imported: 20000 new, 0 already known, 3 revoked") != NULL, "%s", out);
    /* A good one of the import revoked with the CLI while the nodes are down. */
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %04X%08X "
                                  "--reason superseded 2>&1",
                        nodes[0].data, 0x7000, 5000),
                 0, "%s", out);
    cr_assert_eq(rel_sh(&nodes[0], out, sizeof(out), ": > %s", nodes[0].log), 0, "%s", out);
    rel_start(&nodes[0], 60);
    for (int i = 0; i < 4; i++) {
        (void)snprintf(serial, sizeof(serial), "%04X%08X", 0x7000, i < 3 ? revoked_at[i] : 5000);
        cr_assert(wait_crl_lists(&nodes[0], serial), "%s is not in the CRL after the start",
                  serial);
    }
    for (long long t0 = rel_now_ms(); rel_now_ms() - t0 < 60000; rel_sleep_ms(100))
        if (rel_sh(&nodes[0], out, sizeof(out),
                   "grep -o 'CRL publisher caught up: .*' %s | tail -1 | grep .",
                   nodes[0].log) == 0)
            break;
    cr_assert(sscanf(strstr(out, "(") != NULL ? strstr(out, "(") : "", "(%lld read", &read) == 1,
              "no replay count in: %s", out);
    /* The four revocations (and whatever else changed a CRL before), not 20 000 registrations. */
    cr_assert_leq(read, 10, "%s", out);
    fprintf(stderr, "cluster: start after an import of %d: %s\n", LINES, out);
}
