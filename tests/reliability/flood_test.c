/* SPDX-License-Identifier: Apache-2.0 */
/* Floods against the real server: thousands of idle and slowloris connections while a normal
 * client keeps getting prompt answers; the configured limits (max_connections, header_timeout,
 * idle_timeout) hold with memory bounded; a flood of nonce requests (live signatures) does not
 * starve the pre-signed answers. */
#include "rel.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/pem.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct rel_server srv;

static void setup(void)
{
    rel_raise_nofile(16384); /* inherited by the server we start */
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(flood, .init = setup, .fini = teardown, .timeout = 90);

static int connect_nb(int port)
{
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        cr_assert_eq(errno, EINPROGRESS, "connect: %s", strerror(errno));
    return fd;
}

/* 1 if the server closed fd (EOF or reset after whatever it sent), 0 if still open. Reads and
 * discards what arrived; *saw_408 is set if a 408 answer came. */
static int server_closed(int fd, int *saw_408)
{
    char buf[512];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n > 0) {
            buf[n] = '\0';
            if (saw_408 != NULL && strstr(buf, " 408 ") != NULL)
                *saw_408 = 1;
            continue;
        }
        if (n == 0)
            return 1;
        return errno == EAGAIN || errno == EINPROGRESS || errno == ENOTCONN ? 0 : 1;
    }
}

static long long metric(const char *name)
{
    char body[32768], line[256], *p;
    if (rel_admin(&srv, "/metrics", NULL, NULL, body, sizeof(body)) != 200) /* with the token */
        return -1;
    snprintf(line, sizeof(line), "\n%s", name); /* the sample, not the # TYPE line */
    p = strstr(body, line);
    if (p == NULL)
        return -1;
    return strtoll(p + strlen(line), NULL, 10);
}

/* A demo certificate's serial as hex. */
static void demo_serial(const char *pem_name, char *hex, size_t len)
{
    char path[400];
    FILE *f;
    X509 *cert;
    BIGNUM *bn;
    char *h;
    snprintf(path, sizeof(path), "%s/pki/%s", srv.data, pem_name);
    f = fopen(path, "r");
    cr_assert_not_null(f);
    cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    cr_assert_not_null(cert);
    bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), NULL);
    h = BN_bn2hex(bn);
    snprintf(hex, len, "%s", h);
    OPENSSL_free(h);
    BN_free(bn);
    X509_free(cert);
}

/* Normal client during a flood: n rounds of /healthz and an OCSP query; returns the slowest in ms
 * and fails the test on any error. */
static long long normal_client(int rounds, const char *serial)
{
    long long slowest = 0;
    for (int i = 0; i < rounds; i++) {
        long long t0 = rel_now_ms(), dt;
        cr_assert_eq(rel_get(srv.port, "/healthz", NULL, 0, 5000), 200, "healthz round %d", i);
        cr_assert_eq(rel_ocsp(&srv, serial, 0, NULL), 0, "OCSP round %d", i);
        dt = rel_now_ms() - t0;
        if (dt > slowest)
            slowest = dt;
        rel_sleep_ms(20);
    }
    return slowest;
}

/* ASan keeps freed memory in quarantine and adds shadow memory: the bound there only catches
 * runaway growth; the normal build checks the real figure. */
#ifdef __SANITIZE_ADDRESS__
#define FLOOD_RSS_GROWTH_KB (1024 * 1024)
#else
#define FLOOD_RSS_GROWTH_KB (128 * 1024)
#endif

Test(flood, idle_and_slowloris_connections_do_not_starve_clients)
{
    enum { IDLE = 1000, SLOW = 1000 };
    static int fds[IDLE + SLOW];
    static const char line[] = "GET /MEkwRzBFMEMwQTAJBgUrDgMCGgUABBQ HTTP/1.1\r\nHost: x\r\n";
    char serial[80];
    long long slowest, t_end, open_seen;
    long rss_before, rss_peak = 0;
    size_t slow_pos = 0;

    rel_conf_append(&srv, "[server]\nworkers = 2\n"
                          "max_connections_per_client = 0\n");
    rel_start(&srv, 30);
    demo_serial("demo-good.pem", serial, sizeof(serial));
    cr_assert_eq(rel_ocsp(&srv, serial, 0, NULL), 0);
    rss_before = rel_rss_kb(srv.pid);

    for (int i = 0; i < IDLE + SLOW; i++)
        fds[i] = connect_nb(srv.port);
    rel_sleep_ms(500);
    /* Slowloris: one more byte of the request line and headers per connection every 400 ms,
     * never finishing the headers, for 6 s (below the default 10 s header timeout). */
    t_end = rel_now_ms() + 6000;
    slowest = 0;
    while (rel_now_ms() < t_end) {
        long long dt;
        for (int i = IDLE; i < IDLE + SLOW; i++)
            (void)send(fds[i], line + slow_pos % (sizeof(line) - 1), 1, MSG_NOSIGNAL);
        slow_pos++;
        dt = normal_client(3, serial);
        if (dt > slowest)
            slowest = dt;
        if (rel_rss_kb(srv.pid) > rss_peak)
            rss_peak = rel_rss_kb(srv.pid);
        rel_sleep_ms(300);
    }
    open_seen = metric("pkiva_http_connections_open ");
    fprintf(stderr,
            "flood: %d idle + %d slowloris connections: %lld open on the server, slowest "
            "normal round %lld ms, RSS %ld -> %ld kB\n",
            IDLE, SLOW, open_seen, slowest, rss_before, rss_peak);
    /* The flood was really there ... */
    cr_assert_geq(open_seen, IDLE + SLOW - 50, "the flood did not reach the server");
    /* ... the normal client was served promptly throughout ... */
    cr_assert_lt(slowest, 1000, "a normal request took %lld ms during the flood", slowest);
    /* ... and memory stayed bounded (a read buffer per slow client at most). */
    cr_assert_lt(rss_peak - rss_before, FLOOD_RSS_GROWTH_KB, "RSS grew by %ld kB",
                 rss_peak - rss_before);
    for (int i = 0; i < IDLE + SLOW; i++)
        close(fds[i]);
    cr_assert_eq(rel_get(srv.port, "/healthz", NULL, 0, 5000), 200);
    cr_assert_eq(rel_stop(&srv), 0);
}

Test(flood, small_limits_hold)
{
    enum { MAXC = 200, IDLE = 400, SLOW = 100 };
    static int fds[IDLE];
    static int slow[SLOW];
    static int slow_closed_at[SLOW];
    static const char line[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    int closed = 0, open_now = 0, saw_408 = 0, slow_closed = 0;
    long long t0, rejected;
    long rss_before, rss_after;

    rel_conf_append(&srv, "[server]\nmax_connections = 200\nheader_timeout = 2s\n"
                          "idle_timeout = 3s\nworkers = 2\nmax_connections_per_client = 0\n");
    rel_start(&srv, 30);
    rss_before = rel_rss_kb(srv.pid);

    /* More idle connections than max_connections: the excess is closed at once. */
    for (int i = 0; i < IDLE; i++)
        fds[i] = connect_nb(srv.port);
    rel_sleep_ms(1000);
    for (int i = 0; i < IDLE; i++)
        if (server_closed(fds[i], NULL))
            closed++;
    open_now = IDLE - closed;
    fprintf(stderr, "limits: %d of %d idle connections still open after 1 s (max %d)\n", open_now,
            IDLE, MAXC);
    cr_assert_leq(open_now, MAXC, "more connections open than max_connections");
    cr_assert_geq(open_now, MAXC - 10, "far fewer connections accepted than max_connections");
    /* Past the limit a new client is turned away, not queued. */
    cr_assert_eq(rel_get(srv.port, "/healthz", NULL, 0, 2000), 0);
    /* The idle ones are closed after idle_timeout (3 s, checked by a coarse timer). */
    rel_sleep_ms(3000);
    closed = 0;
    for (int i = 0; i < IDLE; i++)
        if (server_closed(fds[i], NULL))
            closed++;
    cr_assert_eq(closed, IDLE, "%d idle connections outlived idle_timeout", IDLE - closed);
    for (int i = 0; i < IDLE; i++)
        close(fds[i]);
    rejected = metric("pkiva_http_rejections_total{why=\"connections\"} ");
    cr_assert_geq(rejected, IDLE - MAXC - 10, "rejections not counted: %lld", rejected);

    /* Slowloris: one byte every 250 ms, headers never complete: 408 and close after 2 s. */
    for (int i = 0; i < SLOW; i++) {
        slow[i] = connect_nb(srv.port);
        slow_closed_at[i] = 0;
    }
    t0 = rel_now_ms();
    for (size_t pos = 0; rel_now_ms() - t0 < 6000 && slow_closed < SLOW; pos++) {
        for (int i = 0; i < SLOW; i++) {
            if (slow_closed_at[i])
                continue;
            if (server_closed(slow[i], &saw_408)) {
                slow_closed_at[i] = (int)(rel_now_ms() - t0);
                slow_closed++;
                continue;
            }
            (void)send(slow[i], line + (pos < sizeof(line) - 1 ? pos : sizeof(line) - 2), 1,
                       MSG_NOSIGNAL);
        }
        rel_sleep_ms(250);
    }
    rss_after = rel_rss_kb(srv.pid);
    for (int i = 0; i < SLOW; i++) {
        cr_assert_gt(slow_closed_at[i], 0, "slow connection %d still open after 6 s", i);
        cr_assert_geq(slow_closed_at[i], 1500, "slow connection %d closed too early", i);
        cr_assert_leq(slow_closed_at[i], 4500, "slow connection %d closed after %d ms", i,
                      slow_closed_at[i]);
        close(slow[i]);
    }
    cr_assert(saw_408, "no 408 answer to a slow request");
    cr_assert_lt(rss_after - rss_before, 64 * 1024, "RSS grew by %ld kB", rss_after - rss_before);
    /* Afterwards the server serves normally again. */
    cr_assert_eq(rel_get(srv.port, "/healthz", NULL, 0, 5000), 200);
    cr_assert_eq(rel_stop(&srv), 0);
}

struct nonce_flood {
    const char *serial;
    atomic_int stop;
    atomic_int good, try_later, other;
};

static void *nonce_main(void *arg)
{
    struct nonce_flood *f = arg;
    while (!atomic_load(&f->stop)) {
        int st = rel_ocsp(&srv, f->serial, 1, NULL);
        if (st == 0)
            atomic_fetch_add(&f->good, 1);
        else if (st == 3)
            atomic_fetch_add(&f->try_later, 1);
        else
            atomic_fetch_add(&f->other, 1);
    }
    return NULL;
}

Test(flood, nonce_flood_does_not_starve_presigned_answers)
{
    enum { THREADS = 24, ROUNDS = 150 };
    pthread_t threads[THREADS];
    struct nonce_flood f;
    char serial[80];
    long long lat[ROUNDS], sum = 0;
    int fast_ok = 0;

    rel_conf_append(&srv, "[ocsp]\nnonce_queue_max = 8\n[server]\nworkers = 2\n");
    rel_start(&srv, 30);
    demo_serial("demo-good.pem", serial, sizeof(serial));
    for (int i = 0; i < 20 && rel_ocsp(&srv, serial, 0, NULL) != 0; i++)
        rel_sleep_ms(100); /* pre-signed by now */
    memset(&f, 0, sizeof(f));
    f.serial = serial;
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&threads[i], NULL, nonce_main, &f), 0);
    rel_sleep_ms(500);
    for (int i = 0; i < ROUNDS; i++) {
        long long t0 = rel_now_ms();
        int st = rel_ocsp(&srv, serial, 0, NULL);
        lat[i] = rel_now_ms() - t0;
        sum += lat[i];
        cr_assert_eq(st, 0, "pre-signed answer %d during the nonce flood: %d", i, st);
        fast_ok += lat[i] < 200;
        rel_sleep_ms(20);
    }
    atomic_store(&f.stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    fprintf(stderr,
            "nonce flood: %d signed, %d tryLater, %d other; no-nonce mean %lld ms, %d/%d "
            "under 200 ms\n",
            atomic_load(&f.good), atomic_load(&f.try_later), atomic_load(&f.other), sum / ROUNDS,
            fast_ok, ROUNDS);
    cr_assert_eq(atomic_load(&f.other), 0, "nonce requests got neither an answer nor tryLater");
    cr_assert_gt(atomic_load(&f.good) + atomic_load(&f.try_later), 500, "no real flood");
    cr_assert_geq(fast_ok, ROUNDS * 95 / 100, "pre-signed answers slowed by the nonce flood");
    cr_assert_eq(rel_stop(&srv), 0);
}

/* Opens a non-blocking connection to 127.0.0.1:port from the source address 127.0.0.src. The
 * source port is taken below the kernel's ephemeral range, where ts_free_port picks the ports of
 * the servers other tests start meanwhile: hundreds of flood sockets there could take one first. */
static int connect_from(int src, int port)
{
    static int next_port;
    struct sockaddr_in addr;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int bound = 0;
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    if (next_port == 0)
        next_port = 12000 + (int)(getpid() % 200) * 100;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(0x7f000000u | (uint32_t)src);
    for (int tries = 0; tries < 20000 && !bound; tries++) {
        if (next_port >= 32000)
            next_port = 12000;
        addr.sin_port = htons((uint16_t)next_port++);
        bound = bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
        cr_assert(bound || errno == EADDRINUSE, "bind 127.0.0.%d: %s", src, strerror(errno));
    }
    cr_assert(bound, "no free source port on 127.0.0.%d", src);
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0)
        cr_assert_eq(errno, EINPROGRESS, "connect: %s", strerror(errno));
    return fd;
}

/* The number of the demo-ca CRL served now, -1 if none could be read. */
static long crl_number(void)
{
    char out[256] = "";
    const char *p;
    if (rel_sh(&srv, out, sizeof(out),
               "curl -sf --max-time 5 http://127.0.0.1:%d/crl/demo-ca.crl | openssl crl -inform "
               "DER -noout -crlnumber 2>&1",
               srv.port) != 0)
        return -1;
    p = strstr(out, "=0x"); /* "crlNumber=0x0A" */
    return p != NULL ? strtol(p + 3, NULL, 16) : -1;
}

/* One time stamp request; 1 if a token was granted. */
static int time_stamp_granted(char *out, size_t out_len)
{
    (void)rel_sh(&srv, out, out_len,
                 "openssl ts -query -data pkiva.conf -sha256 -cert -out q.tsq 2>&1 && curl -sS "
                 "--max-time 10 -H 'Content-Type: application/timestamp-query' --data-binary "
                 "@q.tsq http://127.0.0.1:%d/tsa -o r.tsr && openssl ts -reply -in r.tsr -text "
                 "2>&1",
                 srv.port);
    return strstr(out, "Status: Granted") != NULL;
}

/* Holds n idle connections from the source addresses 127.0.0.first .. first+n_src-1 for hold_ms,
 * then closes them. */
static void idle_flood(int n, int first, int n_src, int hold_ms)
{
    static int fds[600];
    cr_assert_leq(n, 600);
    for (int i = 0; i < n; i++)
        fds[i] = connect_from(first + i % n_src, srv.port);
    rel_sleep_ms(hold_ms);
    for (int i = 0; i < n; i++)
        close(fds[i]);
}

/* Issue 15.1: under `ulimit -n 256`, 300 idle connections took every descriptor; SoftHSM2 could
 * not open its token files, the HSM was marked down, and the key reload failed ("not found")
 * until a restart. Now the connections leave a reserve of descriptors, one address holds at most
 * max_connections_per_client, and after the flood every signing path works at once. */
Test(flood, descriptor_flood_keeps_the_hsm_signing)
{
    char out[16384], serial[80];
    long crl_before, crl_after = -1, t0;
    int ready = 0;

    srv.nofile = 256; /* soft = hard = 256 in the server, set before exec */
    rel_conf_append(&srv, "[server]\nworkers = 1\nmax_connections_per_client = 40\n");
    rel_start(&srv, 30);
    demo_serial("demo-good.pem", serial, sizeof(serial));
    cr_assert_eq(rel_ocsp(&srv, serial, 1, NULL), 0, "live signing before the flood");
    t0 = rel_now_ms();
    while (rel_now_ms() - t0 < 10000 && (crl_before = crl_number()) <= 0)
        rel_sleep_ms(100); /* the first CRLs are published just after start */
    cr_assert_gt(crl_before, 0, "no CRL served at start");

    /* From one address: capped at 40; a client from another address is served meanwhile. Each
     * flood outlasts the HSM monitor's idle probe (every 2 s), which signs during it. */
    {
        static int fds[300];
        for (int i = 0; i < 300; i++)
            fds[i] = connect_from(1, srv.port);
        rel_sleep_ms(1000);
        cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                            "curl -s --max-time 5 --interface 127.0.0.2 -o /dev/null -w "
                            "'%%{http_code}' http://127.0.0.1:%d/readyz",
                            srv.port),
                     0);
        cr_assert_str_eq(out, "200", "another address during a one-address flood: %s", out);
        rel_sleep_ms(4000);
        for (int i = 0; i < 300; i++)
            close(fds[i]);
    }
    /* From eight addresses: more than the descriptors allow, so the global limit bites. */
    idle_flood(320, 2, 8, 5000);

    /* Within seconds of the flood's end: ready, and every signing path works. */
    t0 = rel_now_ms();
    while (rel_now_ms() - t0 < 10000 && !ready) {
        ready = rel_get(srv.port, "/readyz", out, sizeof(out), 2000) == 200;
        if (!ready)
            rel_sleep_ms(100);
    }
    cr_assert(ready, "/readyz not 200 10 s after the flood: %s", out);
    cr_assert_eq(rel_ocsp(&srv, serial, 1, NULL), 0, "a live-signed (nonce) OCSP answer");
    cr_assert(time_stamp_granted(out, sizeof(out)), "time stamp after the flood: %s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), REL_PKIVA " crl publish --data %s 2>&1", srv.data),
                 0, "%s", out);
    t0 = rel_now_ms();
    while (rel_now_ms() - t0 < 10000 && (crl_after = crl_number()) <= crl_before)
        rel_sleep_ms(200);
    cr_assert_gt(crl_after, crl_before, "no new CRL after the flood");
    /* The signing never failed, and the limits were what held the flood back. */
    cr_assert_neq(rel_sh(&srv, out, sizeof(out), "grep 'HSM unavailable' %s", srv.log), 0,
                  "the HSM was marked down: %s", out);
    cr_assert_eq(
        rel_sh(&srv, out, sizeof(out), "grep -c 'max_connections 10000 clamped' %s", srv.log), 0,
        "the clamp was not logged");
    cr_assert_gt(metric("pkiva_http_rejections_total{why=\"connections_per_client\"} "), 0);
    cr_assert_gt(metric("pkiva_http_rejections_total{why=\"connections\"} "), 0);
    cr_assert_eq(rel_stop(&srv), 0);
}

/* Issue 15.1: max_connections was never compared with RLIMIT_NOFILE. Now the soft limit is raised
 * to the hard one, max_connections is clamped to what leaves the reserve free (logged), and a
 * limit that leaves room for almost no connection refuses the start with a reason. */
Test(flood, descriptor_limit_raised_clamped_or_refused)
{
    char out[8192];

    /* 128 descriptors cannot hold the reserve: the start is refused, saying why. */
    srv.nofile = 128;
    cr_assert_eq(rel_run_to_exit(&srv, 30), 1, "a start with RLIMIT_NOFILE 128 was not refused");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "grep -c 'too few file descriptors' %s", srv.log),
                 0, "no reason given");

    /* Soft 128, hard 1024: raised to 1024 and max_connections clamped below it. */
    srv.nofile_hard = 1024;
    rel_start(&srv, 30);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "grep -o 'raised the soft limit of open files (RLIMIT_NOFILE) from 128 to "
                        "the hard limit 1024' %s && grep -o 'max_connections 10000 clamped to "
                        "[0-9]*' %s",
                        srv.log, srv.log),
                 0, "%s", out);
    {
        const char *p = strstr(out, "clamped to ");
        long clamped = p != NULL ? strtol(p + strlen("clamped to "), NULL, 10) : -1;
        cr_assert(clamped >= 16 && clamped <= 1024 - 128, "clamped to %ld", clamped);
    }
    cr_assert_eq(rel_get(srv.port, "/readyz", NULL, 0, 5000), 200);
    cr_assert_eq(rel_stop(&srv), 0);
}
