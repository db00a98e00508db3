/* SPDX-License-Identifier: Apache-2.0 */
/* Tests of the store module against real SQLite files in a fresh temporary directory, or, when
 * PKIVA_TEST_PG names a PostgreSQL server (tests/support/with-postgres.sh; ctest runs this binary
 * a second time as test_store_pg), against a fresh database of that server per test: schema and
 * migrations, certificates and revocation semantics, the change feed seen across connections, CRL
 * numbers and TSA serial blocks across reopen, connections and processes, the audit chain against
 * raw tampering, SLA timestamps, bulk import from PEM/DER and index.txt, and lock timeouts. */
#include <criterion/criterion.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <store/store.h>
#include <store/store_int.h>
#include <pg.h>
#include <support.h>
#include <util/util.h>

static char dir[64];
static char db_path[128];

/* PostgreSQL: the server's maintenance URI (PKIVA_TEST_PG), this test's database and its URI. */
static const char *pg_server;
static char pg_db[64];
static char pg_uri[512];

/* Runs one statement on the server's maintenance database. */
static void pg_admin(const char *sql)
{
    PGconn *conn = PQconnectdb(pg_server);
    PGresult *res = NULL;

    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    res = PQexec(conn, sql);
    cr_assert_eq(PQresultStatus(res), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(conn));
    PQclear(res);
    PQfinish(conn);
}

static void setup(void)
{
    static int seq;
    char sql[128];
    const char *rest = NULL;

    cr_assert_eq(ts_tmpdir(dir, sizeof(dir)), 0);
    (void)snprintf(db_path, sizeof(db_path), "%s/store.db", dir);
    (void)unsetenv("PKIVA_STORE_BUSY_MS");
    pg_server = getenv("PKIVA_TEST_PG");
    if (pg_server == NULL || pg_server[0] == '\0')
        return;
    (void)snprintf(pg_db, sizeof(pg_db), "store_%ld_%d", (long)getpid(), seq++);
    (void)snprintf(sql, sizeof(sql), "CREATE DATABASE %s", pg_db);
    pg_admin(sql);
    /* PKIVA_TEST_PG is postgresql:///postgres?...: the same server, this test's database. */
    rest = strchr(pg_server, '?');
    (void)snprintf(pg_uri, sizeof(pg_uri), "postgresql:///%s%s", pg_db, rest != NULL ? rest : "");
    (void)snprintf(db_path, sizeof(db_path), "%s", pg_uri);
}

static void teardown(void)
{
    char sql[128];

    ts_rmrf(dir);
    if (pg_server == NULL || pg_server[0] == '\0')
        return;
    (void)snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", pg_db);
    pg_admin(sql);
}

/* The tests that look at the SQLite file itself (pragmas, WAL, a foreign file, an older schema
 * rebuilt by hand, SQLite's locks and triggers) run on the SQLite backend only. */
static int on_pg(void)
{
    return pg_server != NULL && pg_server[0] != '\0';
}
#define SQLITE_ONLY()                                                                      \
    do {                                                                                   \
        if (on_pg())                                                                       \
            cr_skip_test("looks at the SQLite file itself; not for the PostgreSQL store"); \
    } while (0)

/* The tests' raw SQL is SQLite's; for PostgreSQL, blob literals x'..' become bytea and PRAGMA
 * statements (foreign_keys) are dropped. Returns a malloc'd translation. */
static char *pg_sql(const char *sql)
{
    size_t len = strlen(sql);
    char *out = malloc(len * 2 + 64);
    size_t o = 0;
    size_t i = 0;

    cr_assert_not_null(out);
    while (i < len) {
        if (strncasecmp(sql + i, "PRAGMA", 6) == 0 &&
            (i == 0 || sql[i - 1] == ' ' || sql[i - 1] == ';')) {
            while (i < len && sql[i] != ';')
                i++;
            i += i < len;
            continue;
        }
        if ((sql[i] == 'x' || sql[i] == 'X') && i + 1 < len && sql[i + 1] == '\'' &&
            (i == 0 || sql[i - 1] == ' ' || sql[i - 1] == '(' || sql[i - 1] == ',')) {
            out[o++] = '\'';
            out[o++] = '\\';
            out[o++] = 'x';
            i += 2;
            while (i < len && sql[i] != '\'')
                out[o++] = sql[i++];
            i++;
            memcpy(out + o, "'::bytea", 8);
            o += 8;
            continue;
        }
        out[o++] = sql[i++];
    }
    out[o] = '\0';
    return out;
}

static PGresult *pg_raw(const char *sql)
{
    char *text = pg_sql(sql);
    PGresult *res = ts_pg_exec(pg_uri, text);

    free(text);
    return res;
}

TestSuite(store, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers -------------------------------------------------------------------------------- */

static struct store *open_store(int flags)
{
    struct store *s = NULL;

    cr_assert_eq(store_open_blocking(db_path, flags, &s), 0, "open %s", db_path);
    cr_assert_not_null(s);
    return s;
}

/* A raw connection that bypasses the store, to look at or tamper with the file. */
static sqlite3 *raw_open(void)
{
    sqlite3 *db = NULL;

    cr_assert_eq(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    (void)sqlite3_busy_timeout(db, 5000);
    return db;
}

static void raw_exec(const char *sql)
{
    if (on_pg()) {
        PQclear(pg_raw(sql));
        return;
    }
    sqlite3 *db = raw_open();

    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    (void)sqlite3_close(db);
}

static int64_t raw_int(const char *sql)
{
    if (on_pg()) {
        PGresult *res = pg_raw(sql);
        int64_t value = PQntuples(res) > 0 ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : -1;
        PQclear(res);
        return value;
    }
    sqlite3 *db = raw_open();
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sql);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    (void)sqlite3_close(db);
    return v;
}

static int64_t put_issuer(struct store *s, const char *name)
{
    unsigned char der[16];
    int64_t id = 0;

    memset(der, 0, sizeof(der));
    (void)snprintf((char *)der, sizeof(der), "fake-%s", name);
    cr_assert_eq(store_issuer_put_blocking(s, name, der, sizeof(der), &id), 0);
    cr_assert_gt(id, 0);
    return id;
}

static int64_t add_cert(struct store *s, int64_t issuer_id, const unsigned char *serial,
                        size_t serial_len)
{
    struct store_cert_new cn = {.issuer_id = issuer_id,
                                .serial = serial,
                                .serial_len = serial_len,
                                .not_before = 1700000000,
                                .not_after = 1900000000,
                                .subject = "CN=test"};
    int64_t feed_id = 0;

    cr_assert_eq(store_cert_add_blocking(s, &cn, &feed_id), 0);
    cr_assert_gt(feed_id, 0);
    return feed_id;
}

static int revoke_cert(struct store *s, int64_t issuer_id, const unsigned char *serial, size_t len,
                       int reason, int64_t *feed_id)
{
    struct store_revocation rev = {.issuer_id = issuer_id,
                                   .serial = serial,
                                   .serial_len = len,
                                   .reason = reason,
                                   .actor = "test"};

    return store_cert_revoke_blocking(s, &rev, feed_id);
}

static int64_t elapsed_ms(const struct timespec *start)
{
    struct timespec now;

    (void)clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)(now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
}

struct feed_seen {
    int64_t *ids;
    int n, cap;
    int64_t last;
};

/* Follows the feed as feed/ does: remembers the last id and checks that ids only rise. */
static int feed_follow(void *ctx, const struct store_change *change)
{
    struct feed_seen *seen = ctx;

    cr_assert_gt(change->id, seen->last, "id %lld after %lld", (long long)change->id,
                 (long long)seen->last);
    cr_assert_lt(seen->n, seen->cap);
    seen->ids[seen->n++] = change->id;
    seen->last = change->id;
    return 0;
}

/* ---- schema --------------------------------------------------------------------------------- */

Test(store, migrations_create_schema_and_reopen_is_a_noop)
{
    SQLITE_ONLY();
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct store_issuer issuer;
    int64_t id = put_issuer(s, "demo-ca");

    store_close(s);
    /* One version per entry of migrations[] (other branches append theirs). */
    int64_t version = raw_int("PRAGMA user_version");
    cr_assert_geq(version, 4); /* 2 audit seals, 3 token log by certificate, 4 search */
    cr_assert_eq(raw_int("PRAGMA application_id"), 0x706b6976);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN "
                         "('issuers','certs','cert_ders','feed','revocations','crl_numbers',"
                         "'crl_history','tsa_serials','tsa_tokens','audit','audit_seals')"),
                 11);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name IN "
                         "('certs_revoked','revocations_open_ocsp','revocations_open_crl')"),
                 3);
    int64_t objects = raw_int("SELECT count(*) FROM sqlite_schema");

    /* Reopening (without CREATE) neither re-runs nor duplicates anything and keeps the data. */
    s = open_store(0);
    cr_assert_eq(store_ping_blocking(s), 0);
    cr_assert_eq(store_issuer_get_blocking(s, "demo-ca", &issuer), 0);
    cr_assert_eq(issuer.id, id);
    cr_assert_str_eq(issuer.name, "demo-ca");
    cr_assert_eq(issuer.cert_len, 16);
    store_issuer_cleanup(&issuer);
    store_close(s);
    cr_assert_eq(raw_int("PRAGMA user_version"), version);
    cr_assert_eq(raw_int("SELECT count(*) FROM sqlite_schema"), objects);

    sqlite3 *db = raw_open();
    sqlite3_stmt *st = NULL;
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    cr_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    (void)sqlite3_finalize(st);
    (void)sqlite3_close(db);
}

/* Both backends migrate to the same schema version (their migration lists move in step): the
 * PostgreSQL database's version is the user_version of a SQLite store made in the same run. */
Test(store, pg_schema_version_matches_sqlite)
{
    char path[192];
    struct store *sq = NULL;
    struct store *pg = NULL;
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int64_t sqlite_version = -1;

    if (!on_pg())
        cr_skip_test("compares the PostgreSQL schema with SQLite's");
    (void)snprintf(path, sizeof(path), "%s/version.db", dir);
    cr_assert_eq(store_open_blocking(path, STORE_OPEN_CREATE, &sq), 0);
    store_close(sq);
    cr_assert_eq(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    sqlite_version = sqlite3_column_int64(st, 0);
    (void)sqlite3_finalize(st);
    (void)sqlite3_close(db);
    pg = open_store(STORE_OPEN_CREATE);
    store_close(pg);
    cr_assert_eq(raw_int("SELECT version FROM pkiva_schema"), sqlite_version,
                 "store_pg.c pg_migrations and store_sqlite.c migrations differ in length");
}

Test(store, open_refuses_missing_newer_and_foreign_files)
{
    SQLITE_ONLY();
    struct store *s = NULL;

    cr_assert_eq(store_open_blocking(db_path, 0, &s), UTIL_ENOTFOUND);
    cr_assert_null(s);
    cr_assert_eq(store_open_blocking(db_path, STORE_OPEN_READONLY, &s), UTIL_ENOTFOUND);

    s = open_store(STORE_OPEN_CREATE);
    store_close(s);
    raw_exec("PRAGMA user_version = 99");
    cr_assert_eq(store_open_blocking(db_path, 0, &s), UTIL_ESTORE);
    cr_assert_null(s);

    /* Some other application's database is not taken over. */
    (void)snprintf(db_path, sizeof(db_path), "%s/other.db", dir);
    sqlite3 *db = NULL;
    cr_assert_eq(sqlite3_open(db_path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "CREATE TABLE foo (x)", NULL, NULL, NULL), SQLITE_OK);
    (void)sqlite3_close(db);
    cr_assert_eq(store_open_blocking(db_path, STORE_OPEN_CREATE, &s), UTIL_ECONFIG);
    /* A postgresql:// URI selects the PostgreSQL backend: unreachable here, refused. */
    cr_assert_neq(store_open_blocking("postgresql://127.0.0.1:1/pkiva?connect_timeout=2", 0, &s),
                  0);
    cr_assert_null(s);
}

Test(store, readonly_reads_but_does_not_write)
{
    static const unsigned char serial[] = {0x01};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t issuer = put_issuer(s, "ca");
    struct store_cert c;

    add_cert(s, issuer, serial, sizeof(serial));
    store_close(s);
    s = open_store(STORE_OPEN_READONLY);
    cr_assert_eq(store_cert_get_blocking(s, issuer, serial, sizeof(serial), &c), 0);
    cr_assert_eq(revoke_cert(s, issuer, serial, sizeof(serial), STORE_REASON_SUPERSEDED, NULL),
                 UTIL_EPERM);
    store_close(s);
}

Test(store, reason_names)
{
    cr_assert_eq(store_reason_from_name("keyCompromise"), STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(store_reason_from_name("KEYCOMPROMISE"), STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(store_reason_from_name("CACompromise"), STORE_REASON_CA_COMPROMISE);
    cr_assert_eq(store_reason_from_name("certificateHold"), STORE_REASON_CERTIFICATE_HOLD);
    cr_assert_eq(store_reason_from_name("none"), STORE_REASON_NONE);
    cr_assert_eq(store_reason_from_name("aACompromise"), STORE_REASON_AA_COMPROMISE);
    cr_assert_eq(store_reason_from_name("bogus"), -2);
    cr_assert_eq(store_reason_from_name(NULL), -2);
    cr_assert_str_eq(store_reason_name(STORE_REASON_SUPERSEDED), "superseded");
    cr_assert_str_eq(store_reason_name(STORE_REASON_NONE), "none");
    cr_assert_str_eq(store_reason_name(7), "unknown");
}

/* ---- issuers and certificates --------------------------------------------------------------- */

static int collect_issuer(void *ctx, const struct store_issuer *issuer)
{
    char *names = ctx;

    strcat(names, issuer->name);
    strcat(names, ";");
    return 0;
}

Test(store, issuers_put_get_list)
{
    static const unsigned char other[] = {1, 2, 3};
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct store_issuer issuer;
    char names[128] = "";
    int64_t a = put_issuer(s, "root-ca");
    int64_t b = put_issuer(s, "sub.ca_2");
    int64_t again = 0;

    cr_assert_neq(a, b);
    cr_assert_eq(put_issuer(s, "root-ca"), a, "same name and certificate: same id");
    cr_assert_eq(store_issuer_put_blocking(s, "root-ca", other, sizeof(other), &again),
                 UTIL_EEXIST);
    cr_assert_eq(store_issuer_put_blocking(s, "bad name", other, sizeof(other), &again),
                 UTIL_EINVAL);
    cr_assert_eq(store_issuer_put_blocking(s, "", other, sizeof(other), &again), UTIL_EINVAL);
    cr_assert_eq(store_issuer_get_blocking(s, "nope", &issuer), UTIL_ENOTFOUND);
    cr_assert_eq(store_issuer_list_blocking(s, collect_issuer, names), 0);
    cr_assert_str_eq(names, "root-ca;sub.ca_2;");
    store_close(s);
}

struct collected {
    int n;
    struct store_cert certs[16];
};

static int collect_cert(void *ctx, const struct store_cert *cert)
{
    struct collected *c = ctx;

    cr_assert_lt(c->n, 16);
    c->certs[c->n++] = *cert;
    return 0;
}

static int stop_after_one(void *ctx, const struct store_cert *cert)
{
    (void)cert;
    (*(int *)ctx)++;
    return 42;
}

static int count_certs(void *ctx, const struct store_cert *cert)
{
    (void)cert;
    (*(int *)ctx)++;
    return 0;
}

/* The OCSP index load right after a bulk import, before PostgreSQL has statistics for certs: the
 * paged walk must read each row about once (an ordered index scan per page), not the rest of the
 * table for every page (a bitmap scan and a sort: quadratic, 34 s for a million). Counted with
 * the server's own statistics of rows fetched from certs. */
Test(store, pg_cert_walk_reads_each_row_once_without_statistics)
{
    enum { N = 12000 };
    char sql[512];
    const char *fetched = "SELECT COALESCE(idx_tup_fetch, 0) + COALESCE(seq_tup_read, 0) FROM "
                          "pg_stat_user_tables WHERE relname = 'certs'";
    struct store *s = NULL;
    int64_t ca = 0, before = 0, after = 0;
    int n = 0;

    if (!on_pg())
        cr_skip_test("the PostgreSQL planner's choice");
    s = open_store(STORE_OPEN_CREATE);
    ca = put_issuer(s, "ca");
    (void)snprintf(sql, sizeof(sql),
                   "INSERT INTO certs (issuer_id, serial, not_before, not_after, status, feed_id) "
                   "SELECT %lld, decode(md5(i::text), 'hex'), 0, 0, 0, i "
                   "FROM generate_series(1, %d) AS i",
                   (long long)ca, N);
    PQclear(pg_raw(sql));
    before = raw_int(fetched);
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL, count_certs, &n), 0);
    cr_assert_eq(n, N);
    store_close(s); /* the session's statistics are reported when it ends */
    for (int i = 0; i < 100 && (after = raw_int(fetched)) - before < N; i++)
        (void)nanosleep(&(struct timespec){0, 100 * 1000000L}, NULL);
    cr_assert_geq(after - before, N, "the statistics never showed the walk");
    cr_assert_lt(after - before, N + N / 2, "%lld rows fetched to walk %d",
                 (long long)(after - before), N);
}

struct serial_sum {
    int n, stop_at;
    uint64_t sum; /* order-independent: the sum of each serial's first bytes */
};

static int sum_serials(void *ctx, const struct store_cert *cert)
{
    struct serial_sum *x = ctx;
    uint64_t v = 0;

    for (size_t i = 0; i < cert->serial_len && i < 8; i++)
        v = v << 8 | cert->serial[i];
    x->sum += v;
    return ++x->n == x->stop_at;
}

/* STORE_ITER_ALL_ANY_ORDER (the OCSP index load; a cursor over one sequential scan on
 * PostgreSQL): the same certificates as STORE_ITER_ALL, per issuer and for all; a stop from the
 * callback ends it cleanly, also inside an explicit transaction, and the next walk works. */
Test(store, cert_walk_in_any_order_sees_every_certificate)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca"), other = put_issuer(s, "other");
    struct serial_sum all = {0}, any = {0}, every = {0}, part = {.stop_at = 5};
    unsigned char serial[3] = {0x40, 0, 0};

    for (int i = 0; i < 4500; i++) {
        serial[1] = (unsigned char)(i >> 8);
        serial[2] = (unsigned char)(i * 37);
        add_cert(s, i % 9 == 0 ? other : ca, serial, 3);
    }
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL, sum_serials, &all), 0);
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL_ANY_ORDER, sum_serials, &any),
                 0);
    cr_assert_eq(any.n, 4000);
    cr_assert_eq(any.n, all.n);
    cr_assert_eq(any.sum, all.sum);
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_ALL_ANY_ORDER, sum_serials, &every),
                 0);
    cr_assert_eq(every.n, 4500);
    cr_assert_eq(store_begin_blocking(s), 0);
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_ALL_ANY_ORDER, sum_serials, &part),
                 1);
    cr_assert_eq(part.n, 5);
    memset(&any, 0, sizeof(any));
    cr_assert_eq(store_cert_iterate_blocking(s, other, STORE_ITER_ALL_ANY_ORDER, sum_serials, &any),
                 0);
    cr_assert_eq(any.n, 500);
    cr_assert_eq(store_commit_blocking(s), 0);
    store_close(s);
}

/* The SQLite walk for the OCSP index (STORE_ITER_ALL_ANY_ORDER, one issuer) reads the issuer's
 * serials in two halves at once, on two connections; the callback still runs on one thread at a
 * time. Every certificate comes exactly once whatever its serial's shape (1 to 20 octets, a
 * shared 8-octet prefix, the same octets with and without a trailing zero), a stop from the
 * callback ends both halves at once with its value, and inside an explicit transaction (whose
 * writes a second connection would not see) it is the single walk. */
struct halves_seen {
    int n, stop_at;
    _Atomic int inside;
    int overlapped;
    pthread_t threads[4];
    int n_threads;
    unsigned char (*serials)[33]; /* [0] = length */
};

static int halves_collect(void *ctx, const struct store_cert *cert)
{
    struct halves_seen *h = ctx;
    int known = 0;

    if (atomic_exchange(&h->inside, 1) != 0)
        h->overlapped = 1;
    for (int i = 0; i < h->n_threads; i++)
        known |= pthread_equal(h->threads[i], pthread_self());
    if (!known && h->n_threads < 4)
        h->threads[h->n_threads++] = pthread_self();
    if (h->serials != NULL) {
        h->serials[h->n][0] = (unsigned char)cert->serial_len;
        memcpy(&h->serials[h->n][1], cert->serial, cert->serial_len);
    }
    h->n++;
    atomic_store(&h->inside, 0);
    return h->n == h->stop_at ? 9 : 0;
}

static int cmp_serial33(const void *a, const void *b)
{
    return memcmp(a, b, 33);
}

Test(store, any_order_walk_reads_an_issuer_in_two_halves_at_once)
{
    enum { RANDOM = 6000, EDGE = 24, TOTAL = RANDOM + EDGE };
    static unsigned char want[TOTAL][33], got[TOTAL + 8][33];
    struct store *s = NULL;
    int64_t ca, other;
    struct halves_seen h = {.serials = got};
    uint64_t x = 0x9e3779b97f4a7c15ull;
    int n = 0;

    if (on_pg())
        cr_skip_test("SQLite's walk; PostgreSQL reads one sequential scan through a cursor");
    s = open_store(STORE_OPEN_CREATE);
    ca = put_issuer(s, "ca");
    other = put_issuer(s, "other");
    cr_assert_eq(store_begin_blocking(s), 0);
    for (int i = 0; i < RANDOM; i++, n++) {
        want[n][0] = 16;
        for (int k = 1; k <= 16; k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            want[n][k] = (unsigned char)x;
        }
    }
    for (int i = 0; i < 20; i++, n++) { /* 20 octets, the first 8 shared */
        want[n][0] = 20;
        memset(&want[n][1], 0x5a, 8);
        for (int k = 9; k <= 20; k++)
            want[n][k] = (unsigned char)(i * 7 + k);
    }
    want[n][0] = 1, want[n][1] = 0x01, n++;
    want[n][0] = 2, want[n][1] = 0x01, want[n][2] = 0x00, n++;
    want[n][0] = 1, want[n][1] = 0xff, n++;
    want[n][0] = 8, memset(&want[n][1], 0xff, 8), n++;
    cr_assert_eq(n, TOTAL);
    for (int i = 0; i < TOTAL; i++)
        add_cert(s, ca, &want[i][1], want[i][0]);
    add_cert(s, other, &want[0][1], want[0][0]); /* another issuer's: never in ca's walk */
    cr_assert_eq(store_commit_blocking(s), 0);

    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL_ANY_ORDER, halves_collect, &h),
                 0);
    cr_assert_eq(h.n, TOTAL);
    cr_assert_not(h.overlapped, "the callback ran on two threads at once");
    cr_assert_eq(h.n_threads, 2, "%d threads delivered (the halves were not read at once)",
                 h.n_threads);
    qsort(want, TOTAL, 33, cmp_serial33);
    qsort(got, TOTAL, 33, cmp_serial33);
    for (int i = 0; i < TOTAL; i++)
        cr_assert_eq(memcmp(want[i], got[i], 33), 0, "serial %d of %d differs", i, TOTAL);

    /* A stop from the callback: its value, and not one call more from either half. */
    memset(&h, 0, sizeof(h));
    h.stop_at = 3000;
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL_ANY_ORDER, halves_collect, &h),
                 9);
    cr_assert_eq(h.n, 3000);

    /* Inside a transaction: the single walk, which sees the transaction's own certificate. */
    cr_assert_eq(store_begin_blocking(s), 0);
    add_cert(s, ca, (const unsigned char *)"\x33", 1);
    memset(&h, 0, sizeof(h));
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_ALL_ANY_ORDER, halves_collect, &h),
                 0);
    cr_assert_eq(h.n, TOTAL + 1);
    cr_assert_eq(h.n_threads, 1);
    cr_assert_eq(store_rollback_blocking(s), 0);
    store_close(s);
}

Test(store, certs_add_get_der_iterate)
{
    static const unsigned char s1[] = {0x01};
    static const unsigned char s2[] = {0x00, 0x80};
    static const unsigned char s3[] = {0x7f, 0x02, 0x03};
    static const unsigned char der[] = {0x30, 0x03, 0x02, 0x01, 0x05};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca1 = put_issuer(s, "ca1");
    int64_t ca2 = put_issuer(s, "ca2");
    struct store_cert_new cn = {.issuer_id = ca1,
                                .serial = s2,
                                .serial_len = sizeof(s2),
                                .not_before = 1600000000,
                                .not_after = 1800000000,
                                .subject = "CN=x",
                                .cert_der = der,
                                .cert_len = sizeof(der)};
    struct store_cert c;
    struct collected all = {0};
    unsigned char *got = NULL;
    size_t got_len = 0;
    int64_t f1 = 0, f2 = 0, f3 = 0, head = 0;
    int calls = 0;

    f1 = add_cert(s, ca1, s1, sizeof(s1));
    cr_assert_eq(store_cert_add_blocking(s, &cn, &f2), 0);
    f3 = add_cert(s, ca2, s3, sizeof(s3));
    cr_assert(f1 < f2 && f2 < f3);

    cr_assert_eq(store_cert_get_blocking(s, ca1, s2, sizeof(s2), &c), 0);
    cr_assert_eq(c.issuer_id, ca1);
    cr_assert_eq(c.serial_len, 2);
    cr_assert_eq(memcmp(c.serial, s2, 2), 0);
    cr_assert_eq(c.not_before, 1600000000);
    cr_assert_eq(c.not_after, 1800000000);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(c.reason, STORE_REASON_NONE);
    cr_assert_eq(c.revoked_at, 0);
    cr_assert_eq(c.feed_id, f2);
    /* The serial is compared as bytes: 0x80 alone is a different (negative) number. */
    cr_assert_eq(store_cert_get_blocking(s, ca1, s2 + 1, 1, &c), UTIL_ENOTFOUND);
    cr_assert_eq(store_cert_get_blocking(s, ca2, s1, sizeof(s1), &c), UTIL_ENOTFOUND);

    cr_assert_eq(store_cert_der_blocking(s, ca1, s2, sizeof(s2), &got, &got_len), 0);
    cr_assert_eq(got_len, sizeof(der));
    cr_assert_eq(memcmp(got, der, sizeof(der)), 0);
    free(got);
    cr_assert_eq(store_cert_der_blocking(s, ca1, s1, sizeof(s1), &got, &got_len), UTIL_ENOTFOUND);

    /* Idempotent re-add: same feed id, nothing new in the feed. */
    cn.not_after = 1;
    cr_assert_eq(store_cert_add_blocking(s, &cn, &f1), 0);
    cr_assert_eq(f1, f2);
    cr_assert_eq(store_feed_head_blocking(s, &head), 0);
    cr_assert_eq(head, f3);
    cr_assert_eq(store_cert_get_blocking(s, ca1, s2, sizeof(s2), &c), 0);
    cr_assert_eq(c.not_after, 1800000000, "an idempotent add changes nothing");

    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_ALL, collect_cert, &all), 0);
    cr_assert_eq(all.n, 3);
    cr_assert_eq(all.certs[0].issuer_id, ca1);
    cr_assert_eq(all.certs[0].serial[0], 0x00, "0x0080 sorts before 0x01");
    cr_assert_eq(all.certs[1].serial[0], 0x01);
    cr_assert_eq(all.certs[2].issuer_id, ca2);
    memset(&all, 0, sizeof(all));
    cr_assert_eq(store_cert_iterate_blocking(s, ca2, STORE_ITER_ALL, collect_cert, &all), 0);
    cr_assert_eq(all.n, 1);
    memset(&all, 0, sizeof(all));
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_REVOKED, collect_cert, &all), 0);
    cr_assert_eq(all.n, 0);
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_ALL, stop_after_one, &calls), 42);
    cr_assert_eq(calls, 1);
    store_close(s);
}

Test(store, cert_add_rejects_bad_input)
{
    unsigned char big[STORE_SERIAL_MAX + 1];
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_cert_new cn = {.issuer_id = ca + 100, .serial = big, .serial_len = 1};
    int64_t head = -1;

    memset(big, 1, sizeof(big));
    cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), UTIL_ENOTFOUND, "unknown issuer");
    cn.issuer_id = ca;
    cn.serial_len = sizeof(big);
    cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), UTIL_EINVAL);
    cn.serial_len = 0;
    cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), UTIL_EINVAL);
    cr_assert_eq(store_feed_head_blocking(s, &head), 0);
    cr_assert_eq(head, 0, "a failed add leaves no feed row behind");
    store_close(s);
}

struct reentry {
    struct store *store;
    int64_t issuer_id;
    int outer, inner;
};

static int count_inner(void *ctx, const struct store_cert *cert)
{
    (void)cert;
    ((struct reentry *)ctx)->inner++;
    return 0;
}

/* Re-enters the store from inside a walk: the same walk again (its cached statement is busy) and a
 * write. */
static int reenter(void *ctx, const struct store_cert *cert)
{
    struct reentry *r = ctx;

    r->outer++;
    cr_assert_eq(store_cert_iterate_blocking(r->store, 0, STORE_ITER_ALL, count_inner, r), 0);
    cr_assert_eq(revoke_cert(r->store, r->issuer_id, cert->serial, cert->serial_len,
                             STORE_REASON_SUPERSEDED, NULL),
                 0);
    return 0;
}

Test(store, callbacks_may_reenter_the_store)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct reentry r = {.store = s};
    struct collected revoked = {0};

    r.issuer_id = put_issuer(s, "ca");
    add_cert(s, r.issuer_id, (const unsigned char *)"\x01", 1);
    add_cert(s, r.issuer_id, (const unsigned char *)"\x02", 1);
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_ALL, reenter, &r), 0);
    cr_assert_eq(r.outer, 2);
    cr_assert_eq(r.inner, 4);
    cr_assert_eq(store_cert_iterate_blocking(s, 0, STORE_ITER_REVOKED, collect_cert, &revoked), 0);
    cr_assert_eq(revoked.n, 2);
    store_close(s);
}

/* ---- revocation ----------------------------------------------------------------------------- */

Test(store, revoke_semantics)
{
    static const unsigned char a[] = {0x0a};
    static const unsigned char b[] = {0x0b};
    static const unsigned char unknown[] = {0x0c};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_revocation rev = {.issuer_id = ca,
                                   .serial = a,
                                   .serial_len = 1,
                                   .reason = STORE_REASON_KEY_COMPROMISE,
                                   .revoked_at = 1700000100,
                                   .invalidity_date = 1700000000,
                                   .request_id = "REQ-1",
                                   .actor = "cli:root"};
    struct store_cert c;
    struct collected revoked = {0};
    int64_t f1 = 0, f2 = 0, f3 = 0, f4 = 0, head = 0;

    add_cert(s, ca, a, 1);
    add_cert(s, ca, b, 1);
    cr_assert_eq(revoke_cert(s, ca, unknown, 1, STORE_REASON_KEY_COMPROMISE, &f1), UTIL_ENOTFOUND);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_REMOVE_FROM_CRL, &f1), UTIL_EINVAL);
    cr_assert_eq(revoke_cert(s, ca, a, 1, 7, &f1), UTIL_EINVAL);

    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &f1), 0);
    cr_assert_eq(store_cert_get_blocking(s, ca, a, 1, &c), 0);
    cr_assert_eq(c.status, STORE_REVOKED);
    cr_assert_eq(c.reason, STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(c.revoked_at, 1700000100);
    cr_assert_eq(c.invalidity_date, 1700000000);
    cr_assert_eq(c.feed_id, f1);

    /* Same reason again: idempotent, same feed id, no new change. */
    rev.revoked_at = 0;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &f2), 0);
    cr_assert_eq(f2, f1);
    cr_assert_eq(store_feed_head_blocking(s, &head), 0);
    cr_assert_eq(head, f1);
    /* A different reason on a non-hold revocation is refused. */
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, &f2), UTIL_EEXIST);

    /* Hold, then made permanent: a new change, revocation date of the hold kept. */
    cr_assert_eq(revoke_cert(s, ca, b, 1, STORE_REASON_CERTIFICATE_HOLD, &f3), 0);
    cr_assert_gt(f3, f1);
    cr_assert_eq(store_cert_get_blocking(s, ca, b, 1, &c), 0);
    int64_t hold_date = c.revoked_at;
    cr_assert_gt(hold_date, 0);
    cr_assert_eq(revoke_cert(s, ca, b, 1, STORE_REASON_CERTIFICATE_HOLD, &f4), 0);
    cr_assert_eq(f4, f3, "repeating the hold is idempotent");
    cr_assert_eq(revoke_cert(s, ca, b, 1, STORE_REASON_KEY_COMPROMISE, &f4), 0);
    cr_assert_gt(f4, f3);
    cr_assert_eq(store_cert_get_blocking(s, ca, b, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(c.revoked_at, hold_date);
    cr_assert_eq(c.feed_id, f4);
    cr_assert_eq(revoke_cert(s, ca, b, 1, STORE_REASON_CERTIFICATE_HOLD, &f4), UTIL_EEXIST);

    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_REVOKED, collect_cert, &revoked), 0);
    cr_assert_eq(revoked.n, 2);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM revocations"), 3);
    cr_assert_eq(raw_int("SELECT count(*) FROM revocations WHERE request_id = 'REQ-1' AND "
                         "actor = 'cli:root' AND committed_at_ms >= received_at_ms"),
                 1);
}

Test(store, unrevoke_only_from_hold)
{
    static const unsigned char a[] = {0x01};
    static const unsigned char b[] = {0x02};
    static const unsigned char unknown[] = {0x03};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_cert c;
    int64_t hold = 0, released = 0, f = 0;

    add_cert(s, ca, a, 1);
    add_cert(s, ca, b, 1);
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, a, 1, "t", &f), UTIL_EINVAL, "good cert");
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, unknown, 1, "t", &f), UTIL_ENOTFOUND);
    cr_assert_eq(revoke_cert(s, ca, b, 1, STORE_REASON_SUPERSEDED, &f), 0);
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, b, 1, "t", &f), UTIL_EINVAL, "not a hold");

    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_CERTIFICATE_HOLD, &hold), 0);
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, a, 1, "admin", &released), 0);
    cr_assert_gt(released, hold);
    cr_assert_eq(store_cert_get_blocking(s, ca, a, 1, &c), 0);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(c.reason, STORE_REASON_NONE);
    cr_assert_eq(c.revoked_at, 0);
    cr_assert_eq(c.feed_id, released);
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, a, 1, "admin", &f), UTIL_EINVAL);
    store_close(s);
    cr_assert_eq(raw_int("SELECT kind FROM feed ORDER BY id DESC LIMIT 1"), STORE_CHANGE_UNREVOKE);
}

/* ---- change feed ---------------------------------------------------------------------------- */

struct changes {
    int n;
    struct store_change c[16];
};

static int collect_change(void *ctx, const struct store_change *change)
{
    struct changes *ch = ctx;

    cr_assert_lt(ch->n, 16);
    ch->c[ch->n++] = *change;
    return 0;
}

/* Several writer processes commit changes concurrently while a follower polls "id > last seen"
 * (what feed/ does). Ids taken by concurrent transactions could become visible out of order, and
 * such a follower would skip the one that committed late; the store must make that impossible:
 * at the end the follower has seen every change, each once, in increasing order. */
#define FEED_WRITERS 4
#define FEED_PER_WRITER 150
Test(store, feed_never_skips_a_change_under_concurrent_writers)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct feed_seen seen = {0};
    pid_t pids[FEED_WRITERS];
    int64_t head = 0;
    int running = FEED_WRITERS;

    seen.ids = calloc(FEED_WRITERS * FEED_PER_WRITER + 8, sizeof(int64_t));
    cr_assert_not_null(seen.ids);
    seen.cap = FEED_WRITERS * FEED_PER_WRITER + 8;
    store_close(s);
    for (int w = 0; w < FEED_WRITERS; w++) {
        pids[w] = fork();
        cr_assert_geq(pids[w], 0);
        if (pids[w] == 0) {
            struct store *child = NULL;
            if (store_open_blocking(db_path, 0, &child) != 0)
                _exit(2);
            for (int i = 0; i < FEED_PER_WRITER; i++) {
                unsigned char serial[3] = {(unsigned char)(0x10 + w), (unsigned char)(i >> 8),
                                           (unsigned char)i};
                struct store_cert_new cn = {.issuer_id = ca,
                                            .serial = serial,
                                            .serial_len = sizeof(serial),
                                            .not_before = 1700000000,
                                            .not_after = 1900000000};
                if (store_cert_add_blocking(child, &cn, NULL) != 0)
                    _exit(3);
            }
            store_close(child);
            _exit(0);
        }
    }
    s = open_store(0);
    while (running > 0) {
        int status = 0;
        cr_assert_geq(store_feed_read_blocking(s, seen.last, 50, feed_follow, &seen), 0);
        for (int w = 0; w < FEED_WRITERS; w++) {
            if (pids[w] > 0 && waitpid(pids[w], &status, WNOHANG) == pids[w]) {
                cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed", w);
                pids[w] = 0;
                running--;
            }
        }
    }
    while (store_feed_read_blocking(s, seen.last, 50, feed_follow, &seen) > 0)
        ;
    cr_assert_eq(store_feed_head_blocking(s, &head), 0);
    cr_assert_eq(seen.n, FEED_WRITERS * FEED_PER_WRITER, "the follower saw %d of %d changes",
                 seen.n, FEED_WRITERS * FEED_PER_WRITER);
    cr_assert_eq(raw_int("SELECT count(*) FROM feed"), FEED_WRITERS * FEED_PER_WRITER);
    cr_assert_eq(seen.last, head);
    free(seen.ids);
    store_close(s);
}

Test(store, feed_is_ordered_and_sees_other_connections)
{
    static const unsigned char a[] = {0x01};
    static const unsigned char b[] = {0x02};
    struct store *s1 = open_store(STORE_OPEN_CREATE);
    struct store *s2 = open_store(0); /* a second connection, as another process would have */
    int64_t ca = put_issuer(s1, "ca");
    struct changes ch = {0};
    int64_t f1 = 0, f2 = 0, f3 = 0, head = 0;

    cr_assert_eq(store_feed_read_blocking(s1, 0, 10, collect_change, &ch), 0);
    cr_assert_eq(store_feed_head_blocking(s1, &head), 0);
    cr_assert_eq(head, 0);

    f1 = add_cert(s1, ca, a, 1);
    f2 = add_cert(s2, ca, b, 1);
    cr_assert_eq(revoke_cert(s1, ca, a, 1, STORE_REASON_SUPERSEDED, &f3), 0);
    cr_assert(f1 < f2 && f2 < f3);

    cr_assert_eq(store_feed_read_blocking(s1, 0, 10, collect_change, &ch), 3);
    cr_assert_eq(ch.c[0].id, f1);
    cr_assert_eq(ch.c[0].kind, STORE_CHANGE_ISSUE);
    cr_assert_eq(ch.c[0].cert.status, STORE_REVOKED, "the state as it is now");
    cr_assert_eq(ch.c[1].id, f2);
    cr_assert_eq(ch.c[1].cert.serial[0], 0x02);
    cr_assert_eq(ch.c[2].id, f3);
    cr_assert_eq(ch.c[2].kind, STORE_CHANGE_REVOKE);
    cr_assert_gt(ch.c[2].at_ms, 0);

    memset(&ch, 0, sizeof(ch));
    cr_assert_eq(store_feed_read_blocking(s2, f1, 10, collect_change, &ch), 2);
    cr_assert_eq(ch.c[0].id, f2);
    memset(&ch, 0, sizeof(ch));
    cr_assert_eq(store_feed_read_blocking(s2, 0, 1, collect_change, &ch), 1);
    cr_assert_eq(store_feed_read_blocking(s2, f3, 10, collect_change, &ch), 0);
    cr_assert_eq(store_feed_head_blocking(s2, &head), 0);
    cr_assert_eq(head, f3);

    /* A change written by s2 after s1 last read is delivered to s1's next read. */
    memset(&ch, 0, sizeof(ch));
    cr_assert_eq(revoke_cert(s2, ca, b, 1, STORE_REASON_CESSATION, &f1), 0);
    cr_assert_eq(store_feed_read_blocking(s1, f3, 10, collect_change, &ch), 1);
    cr_assert_eq(ch.c[0].id, f1);
    cr_assert_eq(ch.c[0].cert.reason, STORE_REASON_CESSATION);
    store_close(s1);
    store_close(s2);

    /* Ids are never reused, even when the newest feed rows are gone. */
    raw_exec("PRAGMA foreign_keys = OFF; DELETE FROM revocations WHERE feed_id = "
             "(SELECT max(id) FROM feed); DELETE FROM feed WHERE id = (SELECT max(id) FROM feed)");
    s1 = open_store(0);
    cr_assert_eq(add_cert(s1, ca, (const unsigned char *)"\x03", 1), f1 + 1);
    store_close(s1);
}

/* STORE_FEED_SKIP_ISSUE (the CRL publisher's start-up replay): every change but the
 * registrations of good certificates, in order, max counting what is delivered. */
Test(store, feed_read_can_skip_registrations_of_good_certificates)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct changes ch = {0};
    int64_t want[4];
    unsigned char serial[2] = {0x30, 0};

    for (int i = 0; i < 40; i++) {
        serial[1] = (unsigned char)i;
        add_cert(s, ca, serial, 2);
    }
    serial[1] = 3;
    cr_assert_eq(revoke_cert(s, ca, serial, 2, STORE_REASON_SUPERSEDED, &want[0]), 0);
    serial[1] = 7;
    cr_assert_eq(revoke_cert(s, ca, serial, 2, STORE_REASON_CERTIFICATE_HOLD, &want[1]), 0);
    cr_assert_eq(store_cert_unrevoke_blocking(s, ca, serial, 2, "t", &want[2]), 0);
    serial[1] = 9;
    cr_assert_eq(revoke_cert(s, ca, serial, 2, STORE_REASON_KEY_COMPROMISE, &want[3]), 0);
    for (int i = 40; i < 60; i++) {
        serial[1] = (unsigned char)i;
        add_cert(s, ca, serial, 2);
    }
    cr_assert_eq(store_feed_read_opt_blocking(s, 0, 10, STORE_FEED_SKIP_ISSUE, collect_change, &ch),
                 4);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(ch.c[i].id, want[i], "change %d", i);
    cr_assert_eq(ch.c[0].kind, STORE_CHANGE_REVOKE);
    cr_assert_eq(ch.c[2].kind, STORE_CHANGE_UNREVOKE);
    cr_assert_eq(ch.c[3].cert.reason, STORE_REASON_KEY_COMPROMISE);
    /* max bounds the changes delivered; reading on from the last one finds the rest. */
    memset(&ch, 0, sizeof(ch));
    cr_assert_eq(store_feed_read_opt_blocking(s, 0, 2, STORE_FEED_SKIP_ISSUE, collect_change, &ch),
                 2);
    memset(&ch, 0, sizeof(ch));
    cr_assert_eq(
        store_feed_read_opt_blocking(s, want[1], 10, STORE_FEED_SKIP_ISSUE, collect_change, &ch),
        2);
    cr_assert_eq(ch.c[0].id, want[2]);
    cr_assert_eq(
        store_feed_read_opt_blocking(s, want[3], 10, STORE_FEED_SKIP_ISSUE, collect_change, &ch),
        0);
    cr_assert_eq(store_feed_read_opt_blocking(s, 0, 10, 4, collect_change, &ch), UTIL_EINVAL);
    store_close(s);
}

/* ---- transactions --------------------------------------------------------------------------- */

Test(store, explicit_transactions_nest_and_join)
{
    static const unsigned char a[] = {0x01};
    static const unsigned char b[] = {0x02};
    static const unsigned char c3[] = {0x03};
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct store *other = open_store(0);
    int64_t ca = put_issuer(s, "ca");
    struct store_cert c;
    int64_t f = 0;

    cr_assert_eq(store_commit_blocking(s), UTIL_EINVAL);
    cr_assert_eq(store_rollback_blocking(s), UTIL_EINVAL);

    cr_assert_eq(store_begin_blocking(s), 0);
    add_cert(s, ca, a, 1);
    /* Not committed yet: another connection does not see it. */
    cr_assert_eq(store_cert_get_blocking(other, ca, a, 1, &c), UTIL_ENOTFOUND);
    cr_assert_eq(store_begin_blocking(s), 0);
    add_cert(s, ca, b, 1);
    cr_assert_eq(store_rollback_blocking(s), 0); /* inner only */
    /* A refused step inside the transaction is undone alone. */
    cr_assert_eq(revoke_cert(s, ca, c3, 1, STORE_REASON_SUPERSEDED, &f), UTIL_ENOTFOUND);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, &f), 0);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_KEY_COMPROMISE, &f), UTIL_EEXIST);
    cr_assert_eq(store_commit_blocking(s), 0);

    cr_assert_eq(store_cert_get_blocking(other, ca, a, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_SUPERSEDED);
    cr_assert_eq(store_cert_get_blocking(other, ca, b, 1, &c), UTIL_ENOTFOUND);

    cr_assert_eq(store_begin_blocking(s), 0);
    add_cert(s, ca, c3, 1);
    cr_assert_eq(store_rollback_blocking(s), 0);
    cr_assert_eq(store_cert_get_blocking(other, ca, c3, 1, &c), UTIL_ENOTFOUND);
    store_close(s);
    store_close(other);
}

Test(store, locked_database_fails_fast_with_elocked)
{
    SQLITE_ONLY();
    static const unsigned char a[] = {0x01};
    struct store *s = NULL;
    struct store_cert c;
    struct timespec start;
    int64_t ca = 0;
    int64_t took = 0;
    int rc = 0;

    cr_assert_eq(setenv("PKIVA_STORE_BUSY_MS", "300", 1), 0);
    s = open_store(STORE_OPEN_CREATE);
    ca = put_issuer(s, "ca");
    add_cert(s, ca, a, 1);

    sqlite3 *holder = raw_open();
    cr_assert_eq(sqlite3_exec(holder, "BEGIN EXCLUSIVE; INSERT INTO tsa_serials VALUES ('x', 5)",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    (void)clock_gettime(CLOCK_MONOTONIC, &start);
    rc = revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, NULL);
    took = elapsed_ms(&start);
    cr_assert_eq(rc, UTIL_ELOCKED, "got %d", rc);
    cr_assert_geq(took, 250, "waited the busy timeout (%lld ms)", (long long)took);
    cr_assert_lt(took, 3000, "did not hang (%lld ms)", (long long)took);
    /* WAL: readers are not blocked by the writer. */
    cr_assert_eq(store_cert_get_blocking(s, ca, a, 1, &c), 0);
    cr_assert_eq(c.status, STORE_GOOD, "the failed revoke left nothing behind");

    cr_assert_eq(sqlite3_exec(holder, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    (void)sqlite3_close(holder);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, NULL), 0);
    store_close(s);
}

/* PostgreSQL: a writer that cannot get the cluster-wide writer lock within the busy timeout fails
 * with UTIL_ELOCKED and writes nothing; readers are not blocked. */
Test(store, pg_writer_lock_held_elsewhere_fails_with_elocked)
{
    static const unsigned char a[] = {0x01};
    struct store *s = NULL;
    struct store_cert c;
    PGconn *holder = NULL;
    PGresult *res = NULL;
    int64_t ca = 0;

    if (!on_pg())
        cr_skip_test(
            "the PostgreSQL writer lock (SQLite: locked_database_fails_fast_with_elocked)");
    cr_assert_eq(setenv("PKIVA_STORE_BUSY_MS", "300", 1), 0);
    s = open_store(STORE_OPEN_CREATE);
    ca = put_issuer(s, "ca");
    add_cert(s, ca, a, 1);
    holder = PQconnectdb(pg_uri);
    cr_assert_eq(PQstatus(holder), CONNECTION_OK);
    /* The writer lock's key (store_pg.c PG_LOCK_WRITER), held by a transaction of another node. */
    res = PQexec(holder, "BEGIN; SELECT pg_advisory_xact_lock(x'706b697600000001'::bigint)");
    cr_assert_eq(PQresultStatus(res), PGRES_TUPLES_OK, "%s", PQerrorMessage(holder));
    PQclear(res);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, NULL), UTIL_ELOCKED);
    cr_assert_eq(store_cert_get_blocking(s, ca, a, 1, &c), 0);
    cr_assert_eq(c.status, STORE_GOOD, "the failed revoke left nothing behind");
    res = PQexec(holder, "COMMIT");
    PQclear(res);
    PQfinish(holder);
    cr_assert_eq(revoke_cert(s, ca, a, 1, STORE_REASON_SUPERSEDED, NULL), 0);
    store_close(s);
}

/* ---- SLA ------------------------------------------------------------------------------------ */

struct sla_rows {
    int n;
    struct store_sla_row r[8];
    char request_ids[8][16];
};

static int collect_sla(void *ctx, const struct store_sla_row *row)
{
    struct sla_rows *rows = ctx;

    cr_assert_lt(rows->n, 8);
    rows->r[rows->n] = *row;
    (void)snprintf(rows->request_ids[rows->n], 16, "%s", row->request_id ? row->request_id : "-");
    rows->r[rows->n].request_id = NULL;
    rows->n++;
    return 0;
}

Test(store, sla_mark_and_list)
{
    static const unsigned char serials[3][1] = {{1}, {2}, {3}};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    int64_t ca2 = put_issuer(s, "ca2");
    int64_t feed[3] = {0};
    struct sla_rows rows = {0};
    char id[16];

    for (int i = 0; i < 3; i++) {
        struct store_revocation rev = {.issuer_id = i == 2 ? ca2 : ca,
                                       .serial = serials[i],
                                       .serial_len = 1,
                                       .reason = STORE_REASON_KEY_COMPROMISE,
                                       .request_id = id,
                                       .received_at_ms = 1000 + i,
                                       .actor = "t"};
        (void)snprintf(id, sizeof(id), "REQ-%d", i);
        add_cert(s, rev.issuer_id, serials[i], 1);
        cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed[i]), 0);
    }
    cr_assert_eq(store_sla_list_blocking(s, 1, 0, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 3);
    cr_assert_eq(rows.r[0].feed_id, feed[0], "open rows: oldest first");
    cr_assert_eq(rows.r[0].received_at_ms, 1000);
    cr_assert_geq(rows.r[0].committed_at_ms, 1000);
    cr_assert_eq(rows.r[0].ocsp_at_ms, 0);
    cr_assert_eq(rows.r[0].crl_at_ms, 0);
    cr_assert_str_eq(rows.request_ids[1], "REQ-1");
    cr_assert_eq(rows.r[2].serial_len, 1);
    cr_assert_eq(rows.r[2].serial[0], 3);

    cr_assert_eq(store_sla_mark_blocking(s, feed[0], STORE_SLA_OCSP, 5000), 0);
    cr_assert_eq(store_sla_mark_blocking(s, feed[0], STORE_SLA_OCSP, 9000), 0);
    cr_assert_eq(store_sla_mark_blocking(s, feed[2] + 100, STORE_SLA_OCSP, 9000), UTIL_ENOTFOUND);
    cr_assert_eq(store_sla_mark_blocking(s, feed[0], 3, 9000), UTIL_EINVAL);
    cr_assert_eq(store_sla_mark_upto_blocking(s, ca, feed[2], STORE_SLA_CRL, 7000), 0);
    cr_assert_eq(store_sla_mark_upto_blocking(s, ca, feed[2], STORE_SLA_OCSP, 8000), 0);

    memset(&rows, 0, sizeof(rows));
    cr_assert_eq(store_sla_list_blocking(s, 1, 0, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 1, "only ca2's revocation has no CRL yet");
    cr_assert_eq(rows.r[0].feed_id, feed[2]);

    memset(&rows, 0, sizeof(rows));
    cr_assert_eq(store_sla_list_blocking(s, 0, 2, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 2);
    cr_assert_eq(rows.r[0].feed_id, feed[2], "all rows: newest first");
    cr_assert_eq(rows.r[1].feed_id, feed[1]);
    cr_assert_eq(rows.r[1].ocsp_at_ms, 8000);
    cr_assert_eq(rows.r[1].crl_at_ms, 7000);
    memset(&rows, 0, sizeof(rows));
    cr_assert_eq(store_sla_list_blocking(s, 0, 0, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 3);
    cr_assert_eq(rows.r[2].feed_id, feed[0]);
    cr_assert_eq(rows.r[2].ocsp_at_ms, 5000, "the first mark stays");
    cr_assert_eq(rows.r[2].crl_at_ms, 7000);
    store_close(s);
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

Test(store, crl_numbers_strictly_increase_across_reopen_and_connections)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    int64_t ca2 = put_issuer(s, "ca2");
    int64_t n = 0, prev = 0;

    for (int i = 0; i < 3; i++) {
        cr_assert_eq(store_crl_number_next_blocking(s, ca, 0, &n), 0);
        cr_assert_eq(n, prev + 1);
        prev = n;
    }
    cr_assert_eq(store_crl_number_next_blocking(s, ca2, 0, &n), 0);
    cr_assert_eq(n, 1, "numbers are per issuer");
    cr_assert_eq(store_crl_number_next_blocking(s, ca + 100, 0, &n), UTIL_ENOTFOUND);
    store_close(s);

    s = open_store(0);
    struct store *t = open_store(0);
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(store_crl_number_next_blocking(i % 2 ? t : s, ca, 0, &n), 0);
        cr_assert_gt(n, prev);
        prev = n;
    }
    cr_assert_eq(prev, 13);
    store_close(s);
    store_close(t);
}

/* The floor (the publisher passes the wall clock in ms): a number is max(last + 1, floor), so a
 * store restored from an older copy still never hands out a number it handed out after the copy
 * was taken, provided the floor moved on since; never below last + 1 when the clock is behind. */
Test(store, crl_numbers_never_fall_below_the_floor)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    int64_t n = 0;

    cr_assert_eq(store_crl_number_next_blocking(s, ca, 1000, &n), 0);
    cr_assert_eq(n, 1000, "the first number is the floor");
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 1000, &n), 0);
    cr_assert_eq(n, 1001, "a floor already passed: last + 1");
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 5, &n), 0);
    cr_assert_eq(n, 1002, "a clock gone back: still last + 1");
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 0, &n), 0);
    cr_assert_eq(n, 1003);
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 1796688016724LL, &n), 0);
    cr_assert_eq(n, 1796688016724LL, "milliseconds since the epoch fit");
    cr_assert_eq(store_crl_number_next_blocking(s, ca, -1, &n), UTIL_EINVAL);
    cr_assert_eq(store_crl_number_next_blocking(s, ca, INT64_MAX, &n), UTIL_EINVAL);
    store_close(s);
}

/* Fencing of CRL publishers: a publisher that reserved a number, stalled, and comes back after
 * another connection (another node) saved a newer CRL cannot store its older number; the newest
 * CRL stays the latest. */
Test(store, crl_save_refuses_a_number_older_than_the_latest)
{
    static const unsigned char old_der[] = "old", new_der[] = "new";
    struct store *a = open_store(STORE_OPEN_CREATE);
    struct store *b = open_store(0);
    int64_t ca = put_issuer(a, "ca");
    struct store_crl_record rec = {.issuer_id = ca, .this_update = 100, .next_update = 200};
    struct store_crl_record meta;
    unsigned char *der = NULL;
    int64_t stale = 0, fresh = 0;

    cr_assert_eq(store_crl_number_next_blocking(a, ca, 0, &stale), 0);
    cr_assert_eq(store_crl_number_next_blocking(b, ca, 0, &fresh), 0);
    cr_assert_gt(fresh, stale);
    rec.number = fresh;
    rec.der = new_der;
    rec.der_len = sizeof(new_der);
    cr_assert_eq(store_crl_save_blocking(b, &rec), 0);
    rec.number = stale;
    rec.der = old_der;
    rec.der_len = sizeof(old_der);
    cr_assert_eq(store_crl_save_blocking(a, &rec), UTIL_EEXIST, "stale number refused");
    cr_assert_eq(store_crl_latest_blocking(a, ca, 0, &meta, &der), 0);
    cr_assert_eq(meta.number, fresh);
    cr_assert_eq(memcmp(der, new_der, sizeof(new_der)), 0);
    free(der);
    store_close(a);
    store_close(b);
}

Test(store, crl_save_and_latest)
{
    static const unsigned char full1[] = "full-1";
    static const unsigned char delta2[] = "delta-2";
    static const unsigned char full3[] = "full-3";
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    int64_t ca2 = put_issuer(s, "ca2");
    struct store_crl_record rec = {
        .issuer_id = ca, .this_update = 100, .next_update = 200, .feed_id = 7};
    struct store_crl_record meta;
    unsigned char *der = NULL;
    int64_t n = 0;

    rec.number = 1;
    rec.der = full1;
    rec.der_len = sizeof(full1);
    cr_assert_eq(store_crl_save_blocking(s, &rec), UTIL_EINVAL, "number never reserved");
    cr_assert_eq(store_crl_latest_blocking(s, ca, 0, &meta, &der), UTIL_ENOTFOUND);

    cr_assert_eq(store_crl_number_next_blocking(s, ca, 0, &n), 0);
    cr_assert_eq(store_crl_save_blocking(s, &rec), 0);
    cr_assert_eq(store_crl_save_blocking(s, &rec), UTIL_EEXIST);
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 0, &n), 0);
    rec.number = n;
    rec.base_number = 1;
    rec.der = delta2;
    rec.der_len = sizeof(delta2);
    rec.feed_id = 9;
    cr_assert_eq(store_crl_save_blocking(s, &rec), 0);
    cr_assert_eq(store_crl_number_next_blocking(s, ca, 0, &n), 0);
    rec.number = n;
    rec.base_number = 0;
    rec.der = full3;
    rec.der_len = sizeof(full3);
    rec.this_update = 300;
    cr_assert_eq(store_crl_save_blocking(s, &rec), 0);

    cr_assert_eq(store_crl_latest_blocking(s, ca, 0, &meta, &der), 0);
    cr_assert_eq(meta.number, 3);
    cr_assert_eq(meta.base_number, 0);
    cr_assert_eq(meta.this_update, 300);
    cr_assert_eq(meta.der_len, sizeof(full3));
    cr_assert_eq(memcmp(der, full3, sizeof(full3)), 0);
    free(der);
    cr_assert_eq(store_crl_latest_blocking(s, ca, 1, &meta, &der), 0);
    cr_assert_eq(meta.number, 2);
    cr_assert_eq(meta.base_number, 1);
    cr_assert_eq(meta.feed_id, 9);
    cr_assert_eq(memcmp(der, delta2, sizeof(delta2)), 0);
    free(der);
    cr_assert_eq(store_crl_latest_blocking(s, ca2, 0, &meta, &der), UTIL_ENOTFOUND);
    store_close(s);
}

/* ---- TSA ------------------------------------------------------------------------------------ */

struct block {
    int64_t first, count;
};

static int blocks_disjoint(struct block *b, int n)
{
    for (int i = 0; i < n; i++) {
        for (int j = i + 1; j < n; j++) {
            if (b[i].first < b[j].first + b[j].count && b[j].first < b[i].first + b[i].count)
                return 0;
        }
    }
    return 1;
}

Test(store, tsa_blocks_never_overlap)
{
    struct block b[64];
    int n = 0;
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct store *t = NULL;

    cr_assert_eq(store_tsa_reserve_blocking(s, "tsa1", 0, &b[0].first), UTIL_EINVAL);
    b[n].count = 10;
    cr_assert_eq(store_tsa_reserve_blocking(s, "tsa1", 10, &b[n].first), 0);
    cr_assert_eq(b[n].first, 1, "serials start at 1");
    n++;
    b[n].count = 5;
    cr_assert_eq(store_tsa_reserve_blocking(s, "tsa2", 5, &b[n].first), 0);
    cr_assert_eq(b[n].first, 1, "units count separately");
    n = 1; /* compare only tsa1 blocks below */
    store_close(s);

    s = open_store(0);
    t = open_store(0);
    for (int i = 0; i < 20; i++) {
        b[n].count = 1 + i % 7;
        cr_assert_eq(store_tsa_reserve_blocking(i % 2 ? s : t, "tsa1", b[n].count, &b[n].first), 0);
        cr_assert_gt(b[n].first, b[n - 1].first);
        n++;
    }
    cr_assert(blocks_disjoint(b, n));
    cr_assert_eq(store_tsa_reserve_blocking(s, "tsa1", INT64_MAX - 10, &b[0].first), UTIL_EINVAL,
                 "a block past 2^63 is refused");
    store_close(s);
    store_close(t);
}

Test(store, tsa_blocks_never_overlap_across_processes)
{
    enum { PER_PROC = 40 };
    struct block b[2 * PER_PROC];
    int fds[2];
    pid_t pid = 0;
    int status = 0;
    struct store *s = open_store(STORE_OPEN_CREATE);

    store_close(s);
    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        struct store *child = NULL;
        int64_t first = 0;
        (void)close(fds[0]);
        if (store_open_blocking(db_path, 0, &child) != 0)
            _exit(2);
        for (int i = 0; i < PER_PROC; i++) {
            if (store_tsa_reserve_blocking(child, "unit", 3, &first) != 0)
                _exit(3);
            if (write(fds[1], &first, sizeof(first)) != (ssize_t)sizeof(first))
                _exit(4);
        }
        store_close(child);
        _exit(0);
    }
    (void)close(fds[1]);
    s = open_store(0);
    for (int i = 0; i < PER_PROC; i++) {
        b[i].count = 4;
        cr_assert_eq(store_tsa_reserve_blocking(s, "unit", 4, &b[i].first), 0);
    }
    store_close(s);
    for (int i = 0; i < PER_PROC; i++) {
        b[PER_PROC + i].count = 3;
        cr_assert_eq(read(fds[0], &b[PER_PROC + i].first, sizeof(int64_t)), sizeof(int64_t));
    }
    (void)close(fds[0]);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    cr_assert(blocks_disjoint(b, 2 * PER_PROC));
    cr_assert_eq(raw_int("SELECT next_serial FROM tsa_serials WHERE unit = 'unit'"),
                 1 + PER_PROC * 7);
}

Test(store, tsa_log_records_tokens)
{
    static const unsigned char imprint[32] = {1, 2, 3};
    struct store *s = open_store(STORE_OPEN_CREATE);
    struct store_tsa_token tokens[3];

    for (int i = 0; i < 3; i++) {
        tokens[i] = (struct store_tsa_token){.unit = "tsa1",
                                             .serial = 10 + i,
                                             .gen_time_ms = 1700000000000 + i,
                                             .policy = "1.2.3.4.1",
                                             .imprint_alg = "SHA256",
                                             .imprint = imprint,
                                             .imprint_len = sizeof(imprint)};
    }
    cr_assert_eq(store_tsa_log_blocking(s, tokens, 3), 0);
    cr_assert_eq(store_tsa_log_blocking(s, tokens, 0), 0);
    /* A duplicate serial in a group rolls the whole group back. */
    tokens[0].serial = 20;
    tokens[1].serial = 12;
    cr_assert_eq(store_tsa_log_blocking(s, tokens, 2), UTIL_EEXIST);
    tokens[0].policy = NULL;
    cr_assert_eq(store_tsa_log_blocking(s, tokens, 1), UTIL_EINVAL);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM tsa_tokens"), 3);
    cr_assert_eq(raw_int("SELECT count(*) FROM tsa_tokens WHERE serial = 20"), 0);
    cr_assert_eq(raw_int("SELECT length(imprint) FROM tsa_tokens WHERE serial = 11"), 32);
}

/* Issue 15.3: a counter never hands out a block below the floor it is given (the TSA passes the
 * current time), whatever it counted before. */
Test(store, tsa_reserve_from_a_floor)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t first = 0;

    cr_assert_eq(store_tsa_reserve_from_blocking(s, "sha256:ab", 10, 1000, &first), 0);
    cr_assert_eq(first, 1000);
    cr_assert_eq(store_tsa_reserve_from_blocking(s, "sha256:ab", 10, 5, &first), 0);
    cr_assert_eq(first, 1010, "below the counter: the counter wins");
    cr_assert_eq(store_tsa_reserve_from_blocking(s, "sha256:ab", 10, 5000, &first), 0);
    cr_assert_eq(first, 5000, "above the counter: the floor wins");
    cr_assert_eq(store_tsa_reserve_from_blocking(s, "sha256:ab", 10, 0, &first), UTIL_EINVAL);
    cr_assert_eq(store_tsa_reserve_from_blocking(s, "sha256:ab", 10, INT64_MAX - 5, &first),
                 UTIL_EINVAL);
    store_close(s);
}

static void tsa_log_one(struct store *s, const unsigned char *cert_id, const char *unit,
                        int64_t serial)
{
    static const unsigned char imprint[32] = {9};
    struct store_tsa_token t = {.unit = unit,
                                .cert_id = cert_id,
                                .serial = serial,
                                .gen_time_ms = 1700000000000,
                                .policy = "1.2.3.4.1",
                                .imprint_alg = "SHA256",
                                .imprint = imprint,
                                .imprint_len = sizeof(imprint)};
    cr_assert_eq(store_tsa_log_blocking(s, &t, 1), 0);
}

/* Issue 15.3: the token log is keyed by the TSA certificate: a renamed unit still finds its
 * tokens, another certificate does not, and rows logged before schema version 2 (migrated from a
 * version 1 file) are found by unit name. */
Test(store, tsa_log_keyed_by_certificate_with_old_rows_migrated)
{
    SQLITE_ONLY();
    unsigned char cert_a[STORE_TSA_CERT_ID_LEN], cert_b[STORE_TSA_CERT_ID_LEN];
    struct store_tsa_record rec;
    struct store *s = open_store(STORE_OPEN_CREATE);

    memset(cert_a, 0xaa, sizeof(cert_a));
    memset(cert_b, 0xbb, sizeof(cert_b));
    store_close(s);
    /* The file as schema version 2 left it (the token log keyed by unit name, as since version
     * 1), with one token of unit "old". */
    raw_exec("DROP INDEX tsa_tokens_by_cert; DROP TABLE tsa_tokens;"
             "CREATE TABLE tsa_tokens (unit TEXT NOT NULL, serial INTEGER NOT NULL, gen_time_ms "
             "INTEGER NOT NULL, policy TEXT NOT NULL, imprint_alg TEXT NOT NULL, imprint BLOB NOT "
             "NULL, PRIMARY KEY (unit, serial)) WITHOUT ROWID;"
             "INSERT INTO tsa_tokens VALUES ('old', 7, 1600000000000, '1.2.3', 'SHA256', x'01');"
             "DROP TABLE cert_search; DROP TABLE cert_fts; DROP TABLE cert_email; "
             "DROP TABLE search_backfill; " /* and without the later directory migration */
             "DROP TABLE nodes; "           /* and the cluster nodes' one */
             "DROP INDEX feed_not_issue; "  /* and the feed's partial index */
             "PRAGMA user_version = 2;");
    s = open_store(0);
    cr_assert_geq(raw_int("PRAGMA user_version"), 3);
    cr_assert_eq(store_tsa_token_get_blocking(s, cert_a, "old", 7, &rec), 0, "old row by unit");
    cr_assert_eq(rec.gen_time_ms, 1600000000000);
    cr_assert_eq(store_tsa_token_get_blocking(s, cert_a, "other", 7, &rec), UTIL_ENOTFOUND);

    tsa_log_one(s, cert_a, "old", 8);
    cr_assert_eq(store_tsa_token_get_blocking(s, cert_a, "renamed", 8, &rec), 0,
                 "the same certificate under a new unit name");
    cr_assert_eq(store_tsa_token_get_blocking(s, cert_b, "old", 8, &rec), UTIL_ENOTFOUND,
                 "another certificate's token");
    store_close(s);
}

/* ---- audit ---------------------------------------------------------------------------------- */

/* Verifies with no trusted certificate (no seals exist in these tests). */
static int audit_verify(struct store *s, int64_t *bad, int64_t *count)
{
    struct store_audit_report rep;
    int rc = store_audit_verify_blocking(s, NULL, NULL, 0, NULL, &rep);

    *bad = rep.bad_record;
    *count = rep.records;
    return rc;
}

static struct store *audit_fixture(int records)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    char detail[64];
    int64_t bad = -1, count = -1;

    cr_assert_eq(audit_verify(s, &bad, &count), 0, "an empty log verifies");
    cr_assert_eq(count, 0);
    for (int i = 1; i <= records; i++) {
        (void)snprintf(detail, sizeof(detail), "{\"serial\":\"%02x\"}", i);
        cr_assert_eq(store_audit_append_blocking(s, "cli:root", "revoke", detail), 0);
    }
    cr_assert_eq(audit_verify(s, &bad, &count), 0);
    cr_assert_eq(count, records);
    cr_assert_eq(bad, 0);
    return s;
}

Test(store, audit_chain_verifies)
{
    struct store *s = audit_fixture(5);
    struct store *other = open_store(0);
    int64_t bad = -1, count = -1;

    /* Appends from another connection continue the same chain. */
    cr_assert_eq(store_audit_append_blocking(other, "admin-api:t1", "issuer.put", NULL), 0);
    cr_assert_eq(store_audit_append_blocking(s, "x", "y", ""), 0);
    cr_assert_eq(audit_verify(other, &bad, &count), 0);
    cr_assert_eq(count, 7);
    cr_assert_eq(store_audit_append_blocking(s, "x", "", "d"), UTIL_EINVAL);
    store_close(s);
    store_close(other);
    cr_assert_eq(raw_int("SELECT count(*) FROM audit WHERE length(hash) = 32 AND "
                         "length(prev_hash) = 32"),
                 7);
}

Test(store, audit_detects_an_edited_record)
{
    struct store *s = audit_fixture(5);
    int64_t bad = -1, count = -1;

    raw_exec("UPDATE audit SET detail = '{\"serial\":\"ff\"}' WHERE id = 3");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 3);
    cr_assert_eq(count, 5, "every record is still checked");
    store_close(s);
}

Test(store, audit_detects_moved_bytes_between_fields)
{
    struct store *s = audit_fixture(2);
    int64_t bad = -1, count = -1;

    /* "cli:root" + "revoke" -> "cli:roo" + "trevoke": same concatenation, different fields. */
    raw_exec("UPDATE audit SET actor = 'cli:roo', action = 'trevoke' WHERE id = 2");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 2);
    store_close(s);
}

Test(store, audit_detects_a_deleted_record)
{
    struct store *s = audit_fixture(5);
    int64_t bad = -1, count = -1;

    raw_exec("DELETE FROM audit WHERE id = 3");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 3, "the missing record is named");
    cr_assert_eq(count, 4);
    store_close(s);
}

Test(store, audit_detects_a_removed_tail)
{
    struct store *s = audit_fixture(5);
    int64_t bad = -1, count = -1;

    raw_exec("DELETE FROM audit WHERE id = 5");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 5);
    cr_assert_eq(count, 4);
    /* Later appends do not paper over the gap. */
    cr_assert_eq(store_audit_append_blocking(s, "a", "b", "c"), 0);
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 5);
    store_close(s);
}

/* ---- import: PEM/DER ------------------------------------------------------------------------ */

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");

    cr_assert_not_null(key);
    return key;
}

/* A certificate for key, signed by signer, issued by issuer_name (NULL: self-signed). */
static X509 *make_cert(EVP_PKEY *key, EVP_PKEY *signer, const char *issuer_cn, const char *cn,
                       const unsigned char *serial, size_t serial_len, long days)
{
    X509 *x = X509_new();
    X509_NAME *subject = X509_NAME_new();
    X509_NAME *issuer = X509_NAME_new();
    BIGNUM *bn = BN_bin2bn(serial, (int)serial_len, NULL);
    ASN1_INTEGER *ai = BN_to_ASN1_INTEGER(bn, NULL);

    cr_assert(x && subject && issuer && bn && ai);
    cr_assert(X509_set_version(x, X509_VERSION_3));
    cr_assert(X509_set_serialNumber(x, ai));
    cr_assert(X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_ASC,
                                         (const unsigned char *)"pkiva test", -1, -1, 0));
    cr_assert(X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1,
                                         -1, 0));
    cr_assert(X509_NAME_add_entry_by_txt(issuer, "O", MBSTRING_ASC,
                                         (const unsigned char *)"pkiva test", -1, -1, 0));
    cr_assert(X509_NAME_add_entry_by_txt(issuer, "CN", MBSTRING_ASC,
                                         (const unsigned char *)(issuer_cn ? issuer_cn : cn), -1,
                                         -1, 0));
    cr_assert(X509_set_subject_name(x, subject));
    cr_assert(X509_set_issuer_name(x, issuer));
    cr_assert(X509_gmtime_adj(X509_getm_notBefore(x), -3600));
    cr_assert(X509_gmtime_adj(X509_getm_notAfter(x), days * 86400));
    cr_assert(X509_set_pubkey(x, key));
    cr_assert(X509_sign(x, signer, EVP_sha256()) > 0);
    X509_NAME_free(subject);
    X509_NAME_free(issuer);
    BN_free(bn);
    ASN1_INTEGER_free(ai);
    return x;
}

static void write_pem(const char *name, X509 **certs, int n)
{
    char path[256];
    FILE *f = NULL;

    (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("# comments and other blocks around certificates are ignored\n", f);
    for (int i = 0; i < n; i++)
        cr_assert(PEM_write_X509(f, certs[i]));
    cr_assert_eq(fclose(f), 0);
}

static void write_der(const char *name, X509 *cert)
{
    char path[256];
    unsigned char *der = NULL;
    int len = i2d_X509(cert, &der);
    FILE *f = NULL;

    (void)snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(der, 1, (size_t)len, f), (size_t)len);
    cr_assert_eq(fclose(f), 0);
    OPENSSL_free(der);
}

static void count_progress(void *ctx, const struct store_import_stats *st)
{
    (void)st;
    (*(int *)ctx)++;
}

Test(store, import_certs_from_pem_and_der_folder)
{
    static const unsigned char ca_serial[] = {0x01};
    static const unsigned char s1[] = {0x01, 0x02};
    static const unsigned char s2[] = {0x8f, 0x01}; /* top bit set: stored as 00 8f 01 */
    static const unsigned char s3[] = {0x7f};
    static const unsigned char s4[] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x11, 0x22,
                                       0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc};
    static const unsigned char s2_stored[] = {0x00, 0x8f, 0x01};
    EVP_PKEY *ca_key = new_key();
    EVP_PKEY *other_key = new_key();
    EVP_PKEY *leaf_key = new_key();
    X509 *ca = make_cert(ca_key, ca_key, NULL, "Test CA", ca_serial, 1, 3650);
    X509 *leaf1 = make_cert(leaf_key, ca_key, "Test CA", "leaf1", s1, sizeof(s1), 30);
    X509 *leaf2 = make_cert(leaf_key, ca_key, "Test CA", "leaf2", s2, sizeof(s2), 30);
    X509 *leaf3 = make_cert(leaf_key, ca_key, "Test CA", "leaf3", s3, sizeof(s3), 30);
    X509 *leaf4 = make_cert(leaf_key, ca_key, "Test CA", "leaf4", s4, sizeof(s4), 30);
    /* Unknown issuer, and a forgery: right issuer name, wrong key. */
    X509 *stranger = make_cert(leaf_key, other_key, "Other CA", "stranger", s1, sizeof(s1), 30);
    X509 *forged = make_cert(leaf_key, other_key, "Test CA", "forged", s3, sizeof(s3), 30);
    X509 *pair[2] = {leaf1, leaf2};
    struct store_import_stats st;
    struct store_cert c;
    unsigned char *ca_der = NULL;
    unsigned char *der = NULL;
    unsigned char *want = NULL;
    size_t der_len = 0;
    int want_len = 0;
    int ca_len = i2d_X509(ca, &ca_der);
    int64_t ca_id = 0;
    char sub[256];
    int calls = 0;
    struct store *s = NULL;

    write_pem("a.pem", pair, 2);
    write_pem("b.crt", &leaf4, 1);
    write_der("c.der", leaf3);
    write_pem("d.pem", &stranger, 1);
    write_pem("e.cer", &forged, 1);
    write_pem("notes.txt", &leaf1, 1); /* wrong suffix: ignored */
    (void)snprintf(sub, sizeof(sub), "%s/sub", dir);
    cr_assert_eq(mkdir(sub, 0700), 0);
    (void)snprintf(sub, sizeof(sub), "sub/deep.pem");
    write_pem(sub, &forged, 1); /* not recursive: ignored */

    s = open_store(STORE_OPEN_CREATE);
    cr_assert_eq(store_issuer_put_blocking(s, "test-ca", ca_der, (size_t)ca_len, &ca_id), 0);
    put_issuer(s, "unrelated"); /* an issuer whose certificate does not even parse */

    cr_assert_eq(store_import_certs_blocking(s, dir, count_progress, &calls, &st), 0);
    cr_assert_eq(st.added, 4);
    cr_assert_eq(st.existing, 0);
    cr_assert_eq(st.skipped, 2);
    cr_assert_eq(st.revoked, 0);
    cr_assert_geq(calls, 1);

    cr_assert_eq(store_cert_get_blocking(s, ca_id, s2_stored, sizeof(s2_stored), &c), 0);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(c.not_after - c.not_before, 30 * 86400 + 3600);
    cr_assert_eq(store_cert_get_blocking(s, ca_id, s2, sizeof(s2), &c), UTIL_ENOTFOUND);
    cr_assert_eq(store_cert_get_blocking(s, ca_id, s4, sizeof(s4), &c), 0);
    cr_assert_eq(store_cert_get_blocking(s, ca_id, s3, sizeof(s3), &c), 0);
    cr_assert_eq(store_cert_der_blocking(s, ca_id, s1, sizeof(s1), &der, &der_len), 0);
    want_len = i2d_X509(leaf1, &want);
    cr_assert_eq(der_len, (size_t)want_len);
    cr_assert_eq(memcmp(der, want, der_len), 0, "the DER is kept byte for byte");
    free(der);
    OPENSSL_free(want);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM certs WHERE subject = 'CN=leaf2,O=pkiva test'"), 1);

    /* Re-running is idempotent; a single file works too. */
    s = open_store(0);
    calls = 0;
    cr_assert_eq(store_import_certs_blocking(s, dir, count_progress, &calls, &st), 0);
    cr_assert_eq(st.added, 0);
    cr_assert_eq(st.existing, 4);
    cr_assert_eq(st.skipped, 2);
    (void)snprintf(sub, sizeof(sub), "%s/c.der", dir);
    cr_assert_eq(store_import_certs_blocking(s, sub, NULL, NULL, &st), 0);
    cr_assert_eq(st.existing, 1);
    cr_assert_eq(st.added, 0);
    (void)snprintf(sub, sizeof(sub), "%s/missing.pem", dir);
    cr_assert_eq(store_import_certs_blocking(s, sub, NULL, NULL, &st), UTIL_ENOTFOUND);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM feed"), 4);

    OPENSSL_free(ca_der);
    X509_free(ca);
    X509_free(leaf1);
    X509_free(leaf2);
    X509_free(leaf3);
    X509_free(leaf4);
    X509_free(stranger);
    X509_free(forged);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(leaf_key);
}

Test(store, import_skips_a_damaged_pem_block_and_continues)
{
    static const unsigned char serial[] = {0x42};
    EVP_PKEY *key = new_key();
    X509 *ca = make_cert(key, key, NULL, "Test CA", serial, 1, 3650);
    X509 *leaf = make_cert(key, key, "Test CA", "leaf", serial, 1, 30);
    struct store_import_stats st;
    unsigned char *ca_der = NULL;
    int ca_len = i2d_X509(ca, &ca_der);
    char path[256];
    FILE *f = NULL;
    struct store *s = open_store(STORE_OPEN_CREATE);

    cr_assert_eq(store_issuer_put_blocking(s, "test-ca", ca_der, (size_t)ca_len, NULL), 0);
    write_pem("a.pem", &leaf, 1);
    (void)snprintf(path, sizeof(path), "%s/a.pem", dir);
    f = fopen(path, "a");
    cr_assert_not_null(f);
    fputs("-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n", f);
    cr_assert_eq(fclose(f), 0);
    write_pem("b.pem", &leaf, 1); /* a later file is still read */
    (void)snprintf(path, sizeof(path), "%s/empty.der", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fclose(f), 0);

    cr_assert_eq(store_import_certs_blocking(s, dir, NULL, NULL, &st), 0);
    cr_assert_eq(st.added, 1);
    cr_assert_eq(st.existing, 1);
    cr_assert_eq(st.skipped, 1);
    store_close(s);
    OPENSSL_free(ca_der);
    X509_free(ca);
    X509_free(leaf);
    EVP_PKEY_free(key);
}

/* ---- import: index.txt ---------------------------------------------------------------------- */

static void write_text(const char *name, const char *text, char *path, size_t path_len)
{
    FILE *f = NULL;

    (void)snprintf(path, path_len, "%s/%s", dir, name);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_geq(fputs(text, f), 0);
    cr_assert_eq(fclose(f), 0);
}

static int64_t utc(int y, int mo, int d, int h, int mi, int sec)
{
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    return (int64_t)timegm(&tm);
}

Test(store, import_openssl_index)
{
    static const char index[] =
        "V\t301231235959Z\t\t01\tunknown\t/O=pkiva/CN=v1\n"
        "V\t20501231235959Z\t\t8F\tunknown\t/CN=topbit\n"
        "E\t200101000000Z\t\t0A0B\tunknown\t/CN=expired\n"
        "R\t301231235959Z\t240102030405Z,keyCompromise\t10\tunknown\t/CN=r1\n"
        "R\t301231235959Z\t240102030405Z\t0011\tunknown\t/CN=r2\n"
        "R\t301231235959Z\t240102030405Z,certificateHold\t12\tunknown\t/CN=hold\r\n"
        "R\t301231235959Z\t240102030405Z,keyTime,20231231000000Z\t13\tunknown\t/CN=kt\n"
        "\n"
        "X\tgarbage\n"
        "V\t301231235959Z\t\tZZ\tunknown\t/CN=badserial\n";
    static const unsigned char topbit[] = {0x00, 0x8f};
    static const unsigned char expired[] = {0x0a, 0x0b};
    static const unsigned char r1[] = {0x10};
    static const unsigned char r2[] = {0x11};
    static const unsigned char hold[] = {0x12};
    static const unsigned char kt[] = {0x13};
    static const unsigned char v1[] = {0x01};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_import_stats st;
    struct store_cert c;
    struct collected revoked = {0};
    struct sla_rows rows = {0};
    char path[256];
    int calls = 0;

    write_text("index.txt", index, path, sizeof(path));
    cr_assert_eq(store_import_index_blocking(s, ca, path, count_progress, &calls, &st), 0);
    cr_assert_eq(st.added, 7);
    cr_assert_eq(st.revoked, 4);
    cr_assert_eq(st.existing, 0);
    cr_assert_eq(st.skipped, 2);
    cr_assert_geq(calls, 1);

    cr_assert_eq(store_cert_get_blocking(s, ca, topbit, sizeof(topbit), &c), 0);
    cr_assert_eq(c.not_after, utc(2050, 12, 31, 23, 59, 59));
    cr_assert_eq(store_cert_get_blocking(s, ca, expired, sizeof(expired), &c), 0);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(c.not_after, utc(2020, 1, 1, 0, 0, 0));
    cr_assert_eq(store_cert_get_blocking(s, ca, r1, 1, &c), 0);
    cr_assert_eq(c.status, STORE_REVOKED);
    cr_assert_eq(c.reason, STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(c.revoked_at, utc(2024, 1, 2, 3, 4, 5));
    cr_assert_eq(store_cert_get_blocking(s, ca, r2, 1, &c), 0, "leading zero octets dropped");
    cr_assert_eq(c.reason, STORE_REASON_NONE);
    cr_assert_eq(store_cert_get_blocking(s, ca, hold, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_CERTIFICATE_HOLD);
    cr_assert_eq(store_cert_get_blocking(s, ca, kt, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_KEY_COMPROMISE);
    cr_assert_eq(c.invalidity_date, utc(2023, 12, 31, 0, 0, 0));
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_REVOKED, collect_cert, &revoked), 0);
    cr_assert_eq(revoked.n, 4);
    cr_assert_eq(store_sla_list_blocking(s, 0, 0, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 4, "each imported revocation has its revocations row");

    /* Re-import: nothing new. */
    cr_assert_eq(store_import_index_blocking(s, ca, path, NULL, NULL, &st), 0);
    cr_assert_eq(st.added, 0);
    cr_assert_eq(st.existing, 7);
    cr_assert_eq(st.revoked, 0);
    cr_assert_eq(st.skipped, 2);

    /* A later index revokes a known certificate; a conflicting reason is skipped, not fatal. */
    write_text("index2.txt",
               "R\t301231235959Z\t250101000000Z,superseded\t01\tunknown\t/CN=v1\n"
               "R\t301231235959Z\t250101000000Z,superseded\t10\tunknown\t/CN=r1\n",
               path, sizeof(path));
    cr_assert_eq(store_import_index_blocking(s, ca, path, NULL, NULL, &st), 0);
    cr_assert_eq(st.existing, 2);
    cr_assert_eq(st.revoked, 1);
    cr_assert_eq(st.skipped, 1);
    cr_assert_eq(store_cert_get_blocking(s, ca, v1, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_SUPERSEDED);
    cr_assert_eq(store_cert_get_blocking(s, ca, r1, 1, &c), 0);
    cr_assert_eq(c.reason, STORE_REASON_KEY_COMPROMISE);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM revocations WHERE actor = 'import'"), 5);
}

Test(store, import_index_commits_in_batches)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_import_stats st;
    char path[256];
    int calls = 0;
    FILE *f = NULL;

    (void)snprintf(path, sizeof(path), "%s/big.txt", dir);
    f = fopen(path, "w");
    cr_assert_not_null(f);
    for (int i = 1; i <= 25000; i++)
        fprintf(f, "V\t301231235959Z\t\t%06X\tunknown\t/CN=n%d\n", i, i);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(store_import_index_blocking(s, ca, path, count_progress, &calls, &st), 0);
    cr_assert_eq(st.added, 25000);
    cr_assert_eq(calls, 3, "two full batches of 10000 and the rest");
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM certs"), 25000);
}

/* ---- issue 14 item 4: no writer stores a revocation that cannot be signed -------------------- */

Test(store, revoke_refuses_times_that_cannot_be_signed)
{
    static const unsigned char serial[] = {0x42};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    int64_t now = (int64_t)time(NULL);
    int64_t feed_id = 0;
    struct store_revocation rev = {
        .issuer_id = ca, .serial = serial, .serial_len = 1, .reason = 1, .actor = "test"};
    struct store_cert c;

    add_cert(s, ca, serial, 1); /* notBefore 1700000000 */
    /* Milliseconds given as seconds: year 57887. */
    rev.revoked_at = 1764633600000LL;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "revoked_at:", 11) == 0, "%s", store_errmsg(s));
    /* Beyond the skew; within it is fine (tested last). */
    rev.revoked_at = now + STORE_CLOCK_SKEW_S + 60;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "revoked_at:", 11) == 0, "%s", store_errmsg(s));
    /* Before the certificate existed. */
    rev.revoked_at = 1700000000 - 1;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strstr(store_errmsg(s), "notBefore") != NULL, "%s", store_errmsg(s));
    /* Invalidity after the revocation, given or defaulted to now. */
    rev.revoked_at = 1750000000;
    rev.invalidity_date = 1750000001;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "invalidity_date:", 16) == 0, "%s", store_errmsg(s));
    rev.revoked_at = 0;
    rev.invalidity_date = now + 3600;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "invalidity_date:", 16) == 0, "%s", store_errmsg(s));
    /* received_at in the future, or past what milliseconds can hold. */
    rev.invalidity_date = 0;
    rev.received_at_ms = (now + 3600) * 1000;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "received_at:", 12) == 0, "%s", store_errmsg(s));
    rev.received_at_ms = INT64_MAX;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), UTIL_EINVAL);
    cr_assert(strncmp(store_errmsg(s), "received_at:", 12) == 0, "%s", store_errmsg(s));
    /* Nothing was written. */
    cr_assert_eq(store_cert_get_blocking(s, ca, serial, 1, &c), 0);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(raw_int("SELECT count(*) FROM revocations"), 0);
    /* A time inside the skew, an invalidity date before it: accepted. */
    rev.received_at_ms = 0;
    rev.revoked_at = now + 10;
    rev.invalidity_date = now - 86400;
    cr_assert_eq(store_cert_revoke_blocking(s, &rev, &feed_id), 0, "%s", store_errmsg(s));
    cr_assert_str_empty(store_errmsg(s));
    store_close(s);
}

Test(store, import_index_skips_lines_that_cannot_be_signed)
{
    static const char index[] =
        "R\t301231235959Z\t20260230000000Z,keyCompromise\t20\tunknown\t/CN=feb30\n"
        "R\t301231235959Z\t99991231235959Z,keyCompromise\t21\tunknown\t/CN=future\n"
        "R\t301231235959Z\t240102030405Z,keyTime,20250101000000Z\t22\tunknown\t/CN=inv\n"
        "V\t20260230000000Z\t\t23\tunknown\t/CN=badexpiry\n"
        "R\t301231235959Z\t240102030405Z,keyCompromise\t24\tunknown\t/CN=ok\n";
    static const unsigned char ok[] = {0x24};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct store_import_stats st;
    struct store_cert c;
    char path[256];

    write_text("index-bad.txt", index, path, sizeof(path));
    cr_assert_eq(store_import_index_blocking(s, ca, path, NULL, NULL, &st), 0);
    cr_assert_eq(st.skipped, 4);
    cr_assert_eq(st.added, 1);
    cr_assert_eq(st.revoked, 1);
    cr_assert_eq(store_cert_get_blocking(s, ca, ok, 1, &c), 0);
    cr_assert_eq(c.status, STORE_REVOKED);
    cr_assert_eq(raw_int("SELECT count(*) FROM certs"), 1, "no refused line left a row");
    store_close(s);
}

Test(store, sla_list_flags_revocations_written_behind_the_checks)
{
    static const unsigned char ok[] = {0x51}, poisoned[] = {0x52};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t ca = put_issuer(s, "ca");
    struct sla_rows rows = {0};
    int64_t feed_id = 0;

    add_cert(s, ca, ok, 1);
    add_cert(s, ca, poisoned, 1);
    cr_assert_eq(revoke_cert(s, ca, ok, 1, STORE_REASON_KEY_COMPROMISE, &feed_id), 0);
    cr_assert_eq(revoke_cert(s, ca, poisoned, 1, STORE_REASON_KEY_COMPROMISE, &feed_id), 0);
    /* What an older pkiva stored for "revoked_at":"@1764633600000". */
    raw_exec("UPDATE revocations SET revoked_at = 1764633600000 WHERE serial = X'52'");
    cr_assert_eq(store_sla_list_blocking(s, 0, 0, collect_sla, &rows), 0);
    cr_assert_eq(rows.n, 2);
    for (int i = 0; i < rows.n; i++) {
        if (rows.r[i].serial[0] == 0x52)
            cr_assert(rows.r[i].unsignable != NULL &&
                          strncmp(rows.r[i].unsignable, "revoked_at", 10) == 0,
                      "the poisoned row is flagged");
        else
            cr_assert_null(rows.r[i].unsignable);
    }
    store_close(s);
}

/* ---- audit: the state tables ---------------------------------------------------------------- */

/* Every change carries its record, in its transaction; the history replays to the statuses. */
Test(store, audit_covers_every_change_and_replays_the_statuses)
{
    static const unsigned char a[] = {0x0a}, b[] = {0x0b};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t issuer = put_issuer(s, "demo-ca");
    int64_t feed = 0, bad = -1, count = -1;

    add_cert(s, issuer, a, 1);
    add_cert(s, issuer, b, 1);
    cr_assert_eq(revoke_cert(s, issuer, a, 1, STORE_REASON_CERTIFICATE_HOLD, &feed), 0);
    cr_assert_eq(store_cert_unrevoke_blocking(s, issuer, a, 1, "test", &feed), 0);
    cr_assert_eq(revoke_cert(s, issuer, b, 1, STORE_REASON_KEY_COMPROMISE, &feed), 0);
    cr_assert_eq(raw_int("SELECT count(*) FROM audit"), 5, "one record per change");
    /* An idempotent repeat changes nothing and records nothing. */
    cr_assert_eq(revoke_cert(s, issuer, b, 1, STORE_REASON_KEY_COMPROMISE, &feed), 0);
    cr_assert_eq(raw_int("SELECT count(*) FROM audit"), 5);
    cr_assert_eq(raw_int("SELECT count(*) FROM audit WHERE feed_first = feed_last AND "
                         "length(changes) = 32"),
                 5);
    cr_assert_eq(audit_verify(s, &bad, &count), 0);

    /* b back to good behind the store's back: named by the record of its revocation. */
    raw_exec("UPDATE certs SET status = 0, reason = -1, revoked_at = 0 WHERE serial = x'0b'");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 5);
    store_close(s);
}

/* A failure of the audit insert undoes the change it records. */
Test(store, audit_record_and_change_commit_together)
{
    SQLITE_ONLY();
    static const unsigned char a[] = {0x0a};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t issuer = put_issuer(s, "demo-ca");
    int64_t feed = 0;
    struct store_cert c;

    add_cert(s, issuer, a, 1);
    raw_exec("CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'x'); END");
    cr_assert_neq(revoke_cert(s, issuer, a, 1, STORE_REASON_KEY_COMPROMISE, &feed), 0);
    cr_assert_eq(store_cert_get_blocking(s, issuer, a, 1, &c), 0);
    cr_assert_eq(c.status, STORE_GOOD);
    cr_assert_eq(raw_int("SELECT count(*) FROM feed"), 1);
    cr_assert_eq(raw_int("SELECT count(*) FROM revocations"), 0);
    store_close(s);
}

/* A database of schema 1 (its log a plain chain without change ranges) gets one record covering
 * every change made so far, and verifies. */
Test(store, audit_migration_from_schema_1_records_the_existing_changes)
{
    SQLITE_ONLY();
    static const unsigned char a[] = {0x0a}, b[] = {0x0b};
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t issuer = put_issuer(s, "demo-ca");
    int64_t feed = 0, bad = -1, count = -1;

    add_cert(s, issuer, a, 1);
    add_cert(s, issuer, b, 1);
    cr_assert_eq(revoke_cert(s, issuer, b, 1, STORE_REASON_KEY_COMPROMISE, &feed), 0);
    store_close(s);
    /* Back to schema 1 as pkiva 7f2f515 left it: no audit columns of schema 2, no seals, and
     * (for simplicity) an empty log. */
    raw_exec("DELETE FROM audit; DELETE FROM sqlite_sequence WHERE name = 'audit'; "
             "DROP TABLE audit_seals; ALTER TABLE audit DROP COLUMN version; "
             "ALTER TABLE audit DROP COLUMN feed_first; ALTER TABLE audit DROP COLUMN feed_last; "
             "ALTER TABLE audit DROP COLUMN changes; DROP INDEX tsa_tokens_by_cert; "
             "ALTER TABLE tsa_tokens DROP COLUMN cert_id; PRAGMA user_version = 1");
    /* ... and without the later migrations' tables (the directory's search index). */
    raw_exec("DROP TABLE cert_search; DROP TABLE cert_fts; DROP TABLE cert_email; "
             "DROP TABLE search_backfill; DROP TABLE nodes; DROP INDEX feed_not_issue");
    s = open_store(0);
    cr_assert_geq(raw_int("PRAGMA user_version"), 3);
    cr_assert_eq(raw_int("SELECT count(*) FROM audit WHERE action = 'schema-upgrade' AND "
                         "feed_first = 1 AND feed_last = 3"),
                 1);
    cr_assert_eq(audit_verify(s, &bad, &count), 0);
    /* From now on the history holds: the revocation row of b removed is found. */
    raw_exec("DELETE FROM revocations");
    cr_assert_eq(audit_verify(s, &bad, &count), UTIL_EINVAL);
    cr_assert_eq(bad, 1);
    store_close(s);
}

/* ---- search (the public directory) ---------------------------------------------------------- */

/* A real certificate (self-signed, EC P-256) with these subject values and an rfc822Name. */
static unsigned char *make_search_cert(const char *cn, const char *o, const char *email,
                                       long serial, size_t *len)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    unsigned char *der = NULL;
    int n;
    cr_assert_not_null(key);
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    cr_assert_eq(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0),
        1);
    cr_assert_eq(
        X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)o, -1, -1, 0),
        1);
    cr_assert_eq(X509_set_subject_name(x, name), 1);
    cr_assert_eq(X509_set_issuer_name(x, name), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    if (email != NULL) {
        char value[128];
        X509_EXTENSION *ext = NULL;
        snprintf(value, sizeof(value), "email:%s", email);
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, value);
        cr_assert_not_null(ext);
        cr_assert_eq(X509_add_ext(x, ext, -1), 1);
        X509_EXTENSION_free(ext);
    }
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    n = i2d_X509(x, &der);
    cr_assert_gt(n, 0);
    *len = (size_t)n;
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    return der;
}

struct found {
    int n;
    long serials[16];
    int64_t cursors[16];
};

static int collect_found(void *ctx, const struct store_search_row *row)
{
    struct found *f = ctx;
    long v = 0;
    cr_assert_not_null(row->der);
    for (size_t i = 0; i < row->cert.serial_len; i++)
        v = v << 8 | row->cert.serial[i];
    if (f->n < 16) {
        f->serials[f->n] = v;
        f->cursors[f->n] = row->cursor;
    }
    f->n++;
    return 0;
}

static struct found search(struct store *s, int kind, unsigned fields, const char *text,
                           const unsigned char *key, size_t key_len, const int64_t *ids, int n_ids,
                           int64_t before, int limit)
{
    struct found f;
    struct store_search q = {.kind = kind,
                             .fields = fields,
                             .text = text,
                             .key = key,
                             .key_len = key_len,
                             .issuer_ids = ids,
                             .n_issuer_ids = n_ids,
                             .before = before,
                             .limit = limit};
    memset(&f, 0, sizeof(f));
    cr_assert_eq(store_cert_search_blocking(s, &q, collect_found, &f), f.n, "search %s",
                 text ? text : "(key)");
    return f;
}

Test(store, search_by_names_email_serial_fingerprint_and_pages)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t a = put_issuer(s, "a"), b = put_issuer(s, "b");
    int64_t both[2] = {a, b};
    static const char *const cns[] = {"Nguyễn Văn An", "Trần Thị Bình", "Đỗ Đức Anh", "Nguyen Hoa",
                                      "Lê Minh"};
    unsigned char fp[EVP_MAX_MD_SIZE];
    unsigned int fp_len = 0;
    unsigned char serial_key[2] = {0x00, 0x03};
    struct found f;

    for (long i = 0; i < 5; i++) {
        size_t len = 0;
        unsigned char serial = (unsigned char)(i + 1);
        char email[64];
        unsigned char *der;
        snprintf(email, sizeof(email), "user%ld@bcy.gov.vn", i + 1);
        der = make_search_cert(cns[i], i < 3 ? "Ban Cơ yếu Chính phủ" : "Bộ Tài chính", email,
                               i + 1, &len);
        struct store_cert_new cn = {.issuer_id = i % 2 ? b : a,
                                    .serial = &serial,
                                    .serial_len = 1,
                                    .not_before = 1700000000,
                                    .not_after = 1900000000,
                                    .cert_der = der,
                                    .cert_len = len};
        cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
        if (i == 2)
            cr_assert_eq(EVP_Digest(der, len, fp, &fp_len, EVP_sha256(), NULL), 1);
        OPENSSL_free(der);
    }
    /* Case and Vietnamese diacritics (and đ) do not matter; words are prefixes. */
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_ALL, "nguyen", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 2);
    cr_assert_eq(f.serials[0], 4, "newest first");
    cr_assert_eq(f.serials[1], 1);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "do duc", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 3);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "chinh phu", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 3);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "chinh", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 0, "O is not searched when only CN is asked for");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_EMAIL, "user2@bcy.gov.vn", NULL, 0, both, 2, 0,
               10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 2);
    /* A whole address, any case: one probe of the e-mail index. */
    f = search(s, STORE_SEARCH_EMAIL, 0, "USER4@BCY.gov.vn", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 4);
    f = search(s, STORE_SEARCH_EMAIL, 0, "user4@bcy.gov", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 0, "whole addresses only");
    /* Issuer filter. */
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "chinh phu", NULL, 0, &b, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 2);
    /* Paging: newest first, then from the cursor on. */
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "tai chinh ban", NULL, 0, both, 2, 0, 10);
    cr_assert_eq(f.n, 0, "every word must match");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "chinh", NULL, 0, both, 2, 0, 2);
    cr_assert_eq(f.n, 2);
    cr_assert_eq(f.serials[0], 5);
    cr_assert_eq(f.serials[1], 4);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "chinh", NULL, 0, both, 2, f.cursors[1], 10);
    cr_assert_eq(f.n, 3);
    cr_assert_eq(f.serials[0], 3);
    /* Serial with a leading zero octet; fingerprint. */
    f = search(s, STORE_SEARCH_SERIAL, 0, NULL, serial_key, 2, both, 2, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 3);
    f = search(s, STORE_SEARCH_SHA256, 0, NULL, fp, 32, both, 2, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 3);
    fp[31] ^= 1; /* same index key, another digest: no match */
    f = search(s, STORE_SEARCH_SHA256, 0, NULL, fp, 32, both, 2, 0, 10);
    cr_assert_eq(f.n, 0);
    /* Query syntax cannot come from the text; bounds are refused. */
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_ALL, "\"an\" OR * NEAR( {cn}:", NULL, 0, both, 2,
               0, 10);
    cr_assert_geq(f.n, 0);
    {
        struct store_search q = {.kind = STORE_SEARCH_NAME,
                                 .fields = STORE_FIELD_ALL,
                                 .text = "a b c d e f g h i",
                                 .issuer_ids = both,
                                 .n_issuer_ids = 2,
                                 .limit = 10};
        cr_assert_eq(store_cert_search_blocking(s, &q, collect_found, &f), UTIL_EINVAL);
        q.text = " ,;";
        cr_assert_eq(store_cert_search_blocking(s, &q, collect_found, &f), UTIL_EINVAL);
        q.text = "an";
        q.limit = 0;
        cr_assert_eq(store_cert_search_blocking(s, &q, collect_found, &f), UTIL_EINVAL);
    }
    store_close(s);
}

/* n certificates of issuer a with DER: every hundredth (i % 100 == 7) a "Special Person", the
 * others "Ordinary Person", all of "Org"; the ninth (i == 8) with e-mail when not NULL. */
static void add_people(struct store *s, int64_t a, long n, const char *email)
{
    for (long i = 0; i < n; i++) {
        size_t len = 0;
        unsigned char serial[2] = {(unsigned char)(i >> 8 | 0x10), (unsigned char)i};
        unsigned char *der = make_search_cert(i % 100 == 7 ? "Special Person" : "Ordinary Person",
                                              "Org", i == 8 ? email : NULL, i + 1, &len);
        struct store_cert_new cn = {.issuer_id = a,
                                    .serial = serial,
                                    .serial_len = 2,
                                    .not_before = 1,
                                    .not_after = 2,
                                    .cert_der = der,
                                    .cert_len = len};
        cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
        OPENSSL_free(der);
    }
}

Test(store, search_index_catches_up_with_older_certificates)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t a = put_issuer(s, "a");
    struct found f;

    add_people(s, a, 1200, NULL); /* more than two catch-up batches */
    store_close(s);
    /* As a database from before the index: empty index, a catch-up position at the start. */
    raw_exec(on_pg() ? "DELETE FROM cert_email; DELETE FROM cert_search; "
                       "INSERT INTO search_backfill (issuer_id, serial) VALUES (0, x'')"
                     : "DELETE FROM cert_search; DELETE FROM cert_email; "
                       "INSERT INTO cert_fts(cert_fts) VALUES ('delete-all');"
                       "INSERT INTO search_backfill (issuer_id, serial) VALUES (0, x'')");
    s = open_store(STORE_OPEN_READONLY);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "special", NULL, 0, &a, 1, 0, 100);
    cr_assert_eq(f.n, 0, "a read-only open does not catch up");
    store_close(s);
    s = open_store(0);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "special", NULL, 0, &a, 1, 0, 100);
    cr_assert_eq(f.n, 12);
    store_close(s);
    cr_assert_eq(raw_int("SELECT count(*) FROM cert_search"), 1200);
    cr_assert_eq(raw_int("SELECT count(*) FROM search_backfill"), 0);
}

/* Words as a person types them, the same on both backends: apostrophes and other ASCII
 * punctuation split words, a right-to-left mark inside a word makes it a phrase of its parts, a
 * word of separators only matches nothing, quotes and query syntax are only text. */
Test(store, search_words_split_the_same_on_both_backends)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t a = put_issuer(s, "a");
    static const char *const cns[] = {"Phạm O'Brien", "Hoàng\xE2\x80\x8FLong", "Long Hoàng",
                                      "Back\\slash 'quoted'"};
    struct found f;

    for (long i = 0; i < 4; i++) {
        size_t len = 0;
        unsigned char serial = (unsigned char)(i + 1);
        unsigned char *der = make_search_cert(cns[i], "Org", NULL, i + 1, &len);
        struct store_cert_new cn = {.issuer_id = a,
                                    .serial = &serial,
                                    .serial_len = 1,
                                    .not_before = 1,
                                    .not_after = 2,
                                    .cert_der = der,
                                    .cert_len = len};
        cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
        OPENSSL_free(der);
    }
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "o'brien pham", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 1);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "hoang long", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 2, "both word orders");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "hoang\xE2\x80\x8Flong", NULL, 0, &a, 1, 0,
               10);
    cr_assert_eq(f.n, 1, "a phrase: only the one in this order");
    cr_assert_eq(f.serials[0], 2);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "hoang lo", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 0, "a word of 2 letters is not a prefix");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "hoang\xE2\x80\x8Flo", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1, "the last token of a long last word is a prefix");
    cr_assert_eq(f.serials[0], 2);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "\xE2\x80\x8F", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 0, "separators only: nothing");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "slash quoted", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    cr_assert_eq(f.serials[0], 4);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "'quo", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "org", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 0, "O is not CN");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O | STORE_FIELD_OU, "org", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 4);
    store_close(s);
}

/* A PostgreSQL store from before its search index (schema version 4 had none there): the
 * migration to version 5 creates the index and the next read-write open indexes every certificate
 * already registered. */
Test(store, pg_search_index_migrates_and_backfills_a_version_4_database)
{
    struct store *s = NULL;
    int64_t a = 0;
    struct found f;

    if (!on_pg())
        cr_skip_test("the PostgreSQL migration");
    s = open_store(STORE_OPEN_CREATE);
    a = put_issuer(s, "a");
    add_people(s, a, 600, "old@example.vn"); /* more than one catch-up batch */
    store_close(s);
    raw_exec("DROP TABLE nodes; DROP INDEX feed_not_issue; DROP TABLE cert_email; DROP TABLE "
             "cert_search; "
             "DROP TABLE search_backfill; UPDATE pkiva_schema SET version = 4");
    cr_assert_neq(store_open_blocking(db_path, STORE_OPEN_READONLY, &s), 0,
                  "a read-only open does not migrate");
    s = open_store(0);
    cr_assert_geq(raw_int("SELECT version FROM pkiva_schema"), 6);
    cr_assert_eq(raw_int("SELECT count(*) FROM cert_search"), 600);
    cr_assert_eq(raw_int("SELECT count(*) FROM search_backfill"), 0);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "special", NULL, 0, &a, 1, 0, 100);
    cr_assert_eq(f.n, 6);
    cr_assert_eq(f.serials[0], 0x1000 | 507, "newest first");
    f = search(s, STORE_SEARCH_EMAIL, 0, "OLD@example.vn", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    store_close(s);
}

/* A subject of many short words in every field (15 values each of CN, O and OU, about 1 KiB
 * field apiece): registered and indexed on both backends, found by a word of each field. */
Test(store, search_indexes_names_of_many_short_words)
{
    struct store *s = open_store(STORE_OPEN_CREATE);
    int64_t a = put_issuer(s, "a");
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    static const char *const fields[] = {"CN", "O", "OU"};
    static const char *const last[] = {"zcn", "zo", "zou"};
    unsigned char *der = NULL;
    unsigned char serial = 9;
    struct found f;
    int len;

    for (int k = 0; k < 3; k++) {
        for (int v = 0; v < 15; v++) {
            char value[65] = "";
            for (int i = 0; i < 30; i++) {
                value[2 * i] = (char)('a' + (i + v) % 26);
                value[2 * i + 1] = ' ';
            }
            (void)snprintf(value + 60, 5, "%s", v == 14 ? last[k] : "q");
            cr_assert_eq(X509_NAME_add_entry_by_txt(name, fields[k], MBSTRING_UTF8,
                                                    (const unsigned char *)value, -1, -1, 0),
                         1);
        }
    }
    cr_assert_eq(ASN1_INTEGER_set(X509_get_serialNumber(x), 9), 1);
    cr_assert_eq(X509_set_subject_name(x, name), 1);
    cr_assert_eq(X509_set_issuer_name(x, name), 1);
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    cr_assert_not_null(X509_gmtime_adj(X509_getm_notAfter(x), 86400));
    cr_assert_eq(X509_set_pubkey(x, key), 1);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    len = i2d_X509(x, &der);
    cr_assert_gt(len, 0);
    struct store_cert_new cn = {.issuer_id = a,
                                .serial = &serial,
                                .serial_len = 1,
                                .not_before = 1,
                                .not_after = 2,
                                .cert_der = der,
                                .cert_len = (size_t)len};
    cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "a b c", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_O, "zo", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1, "the last value of O is indexed");
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_CN, "zo", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 0);
    f = search(s, STORE_SEARCH_NAME, STORE_FIELD_OU, "zou", NULL, 0, &a, 1, 0, 10);
    cr_assert_eq(f.n, 1);
    OPENSSL_free(der);
    X509_NAME_free(name);
    X509_free(x);
    EVP_PKEY_free(key);
    store_close(s);
}

/* ---- memory of a walk over the revoked certificates (a CRL) --------------------------------- */

/* The file-backed part of this process's RSS (RssFile of /proc/self/status), in KiB. */
static long rss_file_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");

    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "RssFile: %ld kB", &kib) == 1)
            break;
    (void)fclose(f);
    cr_assert_geq(kib, 0);
    return kib;
}

struct rss_walk {
    long base_kib, max_kib;
    int n;
};

static int sample_rss(void *ctx, const struct store_cert *cert)
{
    struct rss_walk *w = ctx;
    (void)cert;
    if (++w->n % 128 == 0) {
        long kib = rss_file_kib();
        if (kib > w->max_kib)
            w->max_kib = kib;
    }
    return 0;
}

/* The walk over the revoked certificates of a 30 MB SQLite store keeps the file out of the
 * process's RSS: it once ran through a memory map of the whole file (meant for the start-up scan
 * of every certificate), and every page it touched stayed mapped until its end (a CRL of 1 M
 * entries: 659 MiB of RSS, 15x its DER). SQLite only: PostgreSQL maps nothing here. */
Test(store, revoked_walk_keeps_the_file_out_of_rss)
{
    char path[160], subject[1500];
    struct store *s = NULL;
    struct rss_walk w = {0};
    unsigned char serial[3] = {0x41, 0, 0};
    int64_t ca;

    (void)snprintf(path, sizeof(path), "%s/rss.db", dir);
    cr_assert_eq(store_open_blocking(path, STORE_OPEN_CREATE, &s), 0);
    ca = put_issuer(s, "ca");
    memset(subject, 'x', sizeof(subject) - 1);
    memcpy(subject, "CN=", 3);
    subject[sizeof(subject) - 1] = '\0';
    cr_assert_eq(store_begin_blocking(s), 0);
    for (int i = 0; i < 20000; i++) {
        struct store_cert_new cn = {.issuer_id = ca,
                                    .serial = serial,
                                    .serial_len = sizeof(serial),
                                    .not_before = 1700000000,
                                    .not_after = 1900000000,
                                    .subject = subject};
        serial[1] = (unsigned char)(i >> 8);
        serial[2] = (unsigned char)i;
        cr_assert_eq(store_cert_add_blocking(s, &cn, NULL), 0);
        if (i % 4 == 0)
            cr_assert_eq(
                revoke_cert(s, ca, serial, sizeof(serial), STORE_REASON_KEY_COMPROMISE, NULL), 0);
    }
    cr_assert_eq(store_commit_blocking(s), 0);
    w.base_kib = w.max_kib = rss_file_kib();
    cr_assert_eq(store_cert_iterate_blocking(s, ca, STORE_ITER_REVOKED, sample_rss, &w), 0);
    cr_assert_eq(w.n, 5000);
    cr_assert_lt(w.max_kib - w.base_kib, 8 * 1024, "RssFile grew by %ld KiB during the walk",
                 w.max_kib - w.base_kib);
    store_close(s);
}
