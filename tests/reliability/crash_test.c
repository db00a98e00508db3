/* SPDX-License-Identifier: Apache-2.0 */
/* Crashes lose nothing. The real server takes revocations through the admin API and CRL
 * publications on demand while a killer thread sends it SIGKILL at random moments; after every
 * kill the published CRL files must parse and verify (never partial), CRL numbers in the store
 * must be strictly rising and the published one must be recorded; after the last restart every
 * revocation that was acknowledged with 200 must be in the store and answered as revoked, with
 * its reason, by OCSP. The seed is printed so that a failure can be replayed. */
#include "rel.h"

#include <criterion/criterion.h>
#include <openssl/ocsp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <support.h>
#include <time.h>
#include <util/util.h>

#define POOL 5000           /* registered serials, each revoked at most once */
#define RUN_MS 22000        /* kill/restart cycles for at least this long */
#define MIN_ACKS 100        /* ... and until this many revocations were acknowledged */
#define MIN_CYCLES 5        /* ... in at least this many kill cycles */
#define CAP_MS (6 * RUN_MS) /* a server that cannot reach them in this time fails the test */
#define MIN_LIFE_MS 200     /* a server lives this long ... */
#define LIFE_SPREAD_MS 1800 /* ... plus up to this much more before it is killed */

static struct rel_server srv;
static char serials[POOL][33];
static int acked_reason[POOL]; /* -1: not acknowledged */

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 150);

struct killer {
    pid_t pid;
    int delay_ms;
    atomic_int fired;
};

static void *killer_main(void *arg)
{
    struct killer *k = arg;
    rel_sleep_ms(k->delay_ms);
    atomic_store(&k->fired, 1);
    kill(k->pid, SIGKILL);
    return NULL;
}

static const struct {
    const char *name;
    int code; /* RFC 5280 CRLReason */
} reasons[] = {{"keyCompromise", 1},
               {"affiliationChanged", 3},
               {"superseded", 4},
               {"cessationOfOperation", 5}};

/* Per issuer id, the highest CRL number seen in the store so far (it must never go down). */
static long long max_crl_number[8];

static void check_store_and_files(int cycle)
{
    char out[1 << 16], *line, *save = NULL;
    long long last[8];
    long long published = -1;
    int rows = 0;

    /* Every published CRL parses and verifies against the chain: never a partial file. */
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "for f in crl/*.crl; do [ -e \"$f\" ] || continue; "
                        "openssl crl -inform DER -in \"$f\" -noout -CAfile pki/ca-chain.pem "
                        "2>&1 | grep -q 'verify OK' || { echo \"BAD $f\"; exit 1; }; done"),
                 0, "cycle %d: a published CRL does not parse or verify: %s", cycle, out);

    /* CRL numbers: strictly rising per issuer (full and delta share the sequence). */
    for (int i = 0; i < 8; i++)
        last[i] = 0;
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sqlite3 pkiva.db 'select issuer_id, number from crl_history order by id'"),
                 0, "cycle %d: %s", cycle, out);
    for (line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
        int issuer = 0;
        long long number = 0;
        cr_assert_eq(sscanf(line, "%d|%lld", &issuer, &number), 2, "%s", line);
        cr_assert(issuer > 0 && issuer < 8);
        cr_assert_gt(number, last[issuer], "cycle %d: CRL number %lld after %lld (issuer %d)",
                     cycle, number, last[issuer], issuer);
        last[issuer] = number;
        rows++;
    }
    for (int i = 0; i < 8; i++) {
        cr_assert_geq(last[i], max_crl_number[i], "cycle %d: CRL numbers went back (issuer %d)",
                      cycle, i);
        max_crl_number[i] = last[i];
    }
    /* The file on disk carries a number the store recorded (a number is never handed out twice). */
    if (rel_sh(&srv, out, sizeof(out),
               "test -e crl/demo-ca.crl && openssl crl -inform DER -in crl/demo-ca.crl -noout "
               "-crlnumber") == 0) {
        char *eq = strchr(out, '=');
        cr_assert_not_null(eq, "%s", out);
        published = strtoll(eq + 1, NULL, 16);
        cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                            "sqlite3 pkiva.db \"select count(*) from crl_history h join issuers "
                            "i on i.id = h.issuer_id where i.name = 'demo-ca' and h.number = "
                            "%lld\"",
                            published),
                     0);
        cr_assert_eq(atoi(out), 1, "cycle %d: published CRL number %lld is not in the store", cycle,
                     published);
    }
    (void)rows;
}

Test(crash, kill9_loses_no_acknowledged_revocation_and_no_crl)
{
    unsigned seed = (unsigned)time(NULL);
    long long t_end;
    int next = 0, cycles = 0, acks = 0, lost_in_flight = 0, publishes = 0;
    char body[4096], json[512], out[1 << 16];

    if (getenv("PKIVA_CRASH_SEED") != NULL)
        seed = (unsigned)strtoul(getenv("PKIVA_CRASH_SEED"), NULL, 10);
    fprintf(stderr, "crash test seed %u (PKIVA_CRASH_SEED=%u replays it)\n", seed, seed);
    srand(seed);
    for (int i = 0; i < POOL; i++)
        acked_reason[i] = -1;
    /* CRLs follow revocations within 200 ms, so kills land in the middle of publications. */
    rel_conf_append(&srv, "[crl]\ncoalesce = 200ms\n[store]\nfeed_poll = 50ms\n");
    rel_register_serials(&srv, POOL, serials);

    /* The amount of work, not the time, is what the test needs: on a loaded machine a fixed time
     * holds fewer acknowledgements, so the run goes on (up to CAP_MS) until it has enough. */
    t_end = rel_now_ms() + RUN_MS;
    while (next < POOL && (rel_now_ms() < t_end || ((acks < MIN_ACKS || cycles < MIN_CYCLES) &&
                                                    rel_now_ms() < t_end - RUN_MS + CAP_MS))) {
        struct killer k;
        pthread_t thread;

        rel_start(&srv, 30);
        k.pid = srv.pid;
        k.delay_ms = MIN_LIFE_MS + rand() % LIFE_SPREAD_MS;
        atomic_init(&k.fired, 0);
        cr_assert_eq(pthread_create(&thread, NULL, killer_main, &k), 0);
        while (next < POOL) {
            int r = rand() % 4;
            int status;
            snprintf(json, sizeof(json),
                     "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"%s\","
                     "\"request_id\":\"crash-%d\"}",
                     serials[next], reasons[r].name, next);
            status = rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body));
            if (status == 200) {
                cr_assert_not_null(strstr(body, "\"durable\":true"), "%s", body);
                acked_reason[next] = reasons[r].code;
                acks++;
            } else if (status == 0) {
                lost_in_flight++;
                next++;
                break; /* the server is gone (killed, we check below) */
            } else {
                cr_assert_fail("revocation %d answered %d: %s", next, status, body);
            }
            next++;
            if (next % 20 == 0) {
                status = rel_admin(&srv, "/admin/crl/publish", "{\"issuer\":\"demo-ca\"}", NULL,
                                   body, sizeof(body));
                cr_assert(status == 202 || status == 0, "publish answered %d: %s", status, body);
                publishes += status == 202;
            }
            rel_sleep_ms(3);
        }
        pthread_join(thread, NULL);
        if (!atomic_load(&k.fired) && next < POOL)
            cr_assert_fail("the server stopped answering before it was killed (cycle %d)", cycles);
        rel_kill9(&srv);
        cycles++;
        check_store_and_files(cycles);
    }
    fprintf(stderr,
            "crash test: %d kill -9 cycles, %d revocations acknowledged, %d cut off, %d "
            "publications requested\n",
            cycles, acks, lost_in_flight, publishes);
    cr_assert_geq(cycles, MIN_CYCLES, "too few kill cycles to mean anything");
    cr_assert_geq(acks, MIN_ACKS);

    /* After a last restart: every acknowledged revocation is in the store ... */
    rel_start(&srv, 30);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sqlite3 pkiva.db \"select hex(c.serial) || ' ' || c.reason from certs c "
                        "join issuers i on i.id = c.issuer_id where i.name = 'demo-ca' and "
                        "c.status = 1\" > %s/revoked.txt",
                        srv.dir),
                 0, "%s", out);
    {
        char path[400], want[64];
        unsigned char *revoked = NULL;
        size_t len = 0;
        snprintf(path, sizeof(path), "%s/revoked.txt", srv.dir);
        cr_assert_eq(util_file_read(path, 1 << 24, &revoked, &len), 0);
        for (int i = 0; i < next; i++) {
            if (acked_reason[i] < 0)
                continue;
            snprintf(want, sizeof(want), "%s %d\n", serials[i], acked_reason[i]);
            cr_assert_not_null(strstr((const char *)revoked, want),
                               "acknowledged revocation %d (%s, reason %d) is not in the store", i,
                               serials[i], acked_reason[i]);
        }
        free(revoked);
    }
    /* ... as `pkiva status` shows for a sample ... */
    for (int i = 0, checked = 0; i < next && checked < 5; i++) {
        if (acked_reason[i] < 0 || rand() % 4 != 0)
            continue;
        cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                            REL_PKIVA " status --data %s --issuer demo-ca --serial %s", srv.data,
                            serials[i]),
                     0, "%s", out);
        cr_assert_not_null(strstr(out, "revoked"), "%s: %s", serials[i], out);
        checked++;
    }
    /* ... and OCSP answers revoked, with the reason. */
    for (int i = 0; i < next; i++) {
        int reason = -1, st = -1;
        if (acked_reason[i] < 0)
            continue;
        for (int attempt = 0; attempt < 50; attempt++) {
            st = rel_ocsp(&srv, serials[i], 0, &reason);
            if (st != 3 && st != -1)
                break;
            rel_sleep_ms(100); /* tryLater while the pre-signer catches up */
        }
        cr_assert_eq(st, 1, "acknowledged revocation %d (%s) answered %d by OCSP", i, serials[i],
                     st);
        cr_assert_eq(reason, acked_reason[i], "%s: reason %d, acknowledged %d", serials[i], reason,
                     acked_reason[i]);
    }
    check_store_and_files(cycles + 1);
    cr_assert_eq(rel_stop(&srv), 0);
}
