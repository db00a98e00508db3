/* SPDX-License-Identifier: Apache-2.0 */
/* openloop: HTTP/1.1 GET load at a fixed rate, latency from each request's intended send time.
 *
 * wrk is a closed loop: a slow answer delays the requests behind it, which are then never counted
 * as late (coordinated omission), and pacing it with a Lua delay() puts a timer per connection in
 * its event loop, whose own cost shows up as latency. Debian has no wrk2. openloop schedules
 * request i at t0 + i / rate, sends it on the first idle keep-alive connection (one request per
 * connection at a time, no pipelining) and measures from the scheduled time, so a stall of the
 * server counts for every request it delays. One thread, epoll, timeouts in nanoseconds
 * (epoll_pwait2): it sleeps between sends instead of spinning on the cores it shares with the
 * server. Used by bench/run for the p99 at half load, for pkiva and nginx alike.
 *
 * Usage: openloop --port P --path /x --rate R [--conns C] [--seconds S] [--warmup S]
 * Prints one line: "sent N done N errors N rate R p50_ms X p99_ms X p999_ms X max_ms X". */
#define _GNU_SOURCE /* epoll_pwait2 */
#include "bench.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define BUCKET_NS 1000ULL /* histogram: 1 us buckets */
#define BUCKETS 1000000   /* up to 1 s; slower answers go to the last bucket */

struct conn {
    int fd;
    int busy;
    uint64_t start_ns; /* intended send time of the request in flight */
    size_t have;       /* bytes of the current response read so far */
    size_t need;       /* total length once the header is complete, else 0 */
    char buf[16384];
};

static struct conn *conns;
static int n_conns = 64, idle_top;
static int *idle;
static uint32_t *hist;
static uint64_t done, errors, measured, max_ns;

static uint64_t now_ns(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "openloop: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* Length of the whole response once its header is in buf, else 0; SIZE_MAX when unparsable. */
static size_t response_length(const char *buf, size_t have)
{
    const char *end = memmem(buf, have, "\r\n\r\n", 4), *cl;
    size_t header;
    if (end == NULL)
        return 0;
    header = (size_t)(end - buf) + 4;
    cl = memmem(buf, header, "\r\nContent-Length:", 17);
    if (cl == NULL)
        cl = memmem(buf, header, "\r\ncontent-length:", 17);
    if (cl == NULL || memcmp(buf + 9, "200", 3) != 0)
        return SIZE_MAX;
    return header + strtoul(cl + 17, NULL, 10);
}

static void record(uint64_t latency_ns, int count)
{
    uint64_t b = latency_ns / BUCKET_NS;
    done++;
    if (!count)
        return;
    measured++;
    hist[b < BUCKETS ? b : BUCKETS - 1]++;
    if (latency_ns > max_ns)
        max_ns = latency_ns;
}

static double percentile(double q)
{
    uint64_t want = (uint64_t)(q * (double)measured), seen = 0;
    for (uint64_t b = 0; b < BUCKETS; b++) {
        seen += hist[b];
        if (seen > want)
            return (double)(b * BUCKET_NS + BUCKET_NS / 2) / 1e6;
    }
    return (double)max_ns / 1e6;
}

int main(int argc, char **argv)
{
    int port = 0, ep;
    const char *path = "/";
    double rate = 0, seconds = 10, warmup = 1;
    char req[8192];
    int req_len;
    uint64_t t0, end, warm_end, interval_ns, next_ns, sent = 0;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0)
            port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--path") == 0)
            path = argv[i + 1];
        else if (strcmp(argv[i], "--rate") == 0)
            rate = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--conns") == 0)
            n_conns = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--warmup") == 0)
            warmup = atof(argv[i + 1]);
        else
            break;
    }
    if (port <= 0 || rate <= 0 || n_conns < 1 || n_conns > MAX_CONNS || seconds <= 0 ||
        warmup < 0) {
        fprintf(stderr, "usage: openloop --port P --path /x --rate R [--conns C] [--seconds S] "
                        "[--warmup S]\n");
        return 2;
    }
    req_len =
        snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, port);
    if (req_len <= 0 || (size_t)req_len >= sizeof(req)) {
        fprintf(stderr, "openloop: path too long\n");
        return 2;
    }
    conns = calloc((size_t)n_conns, sizeof(*conns));
    idle = calloc((size_t)n_conns, sizeof(*idle));
    hist = calloc(BUCKETS, sizeof(*hist));
    ep = epoll_create1(0);
    if (conns == NULL || idle == NULL || hist == NULL || ep < 0)
        die("setup");
    for (int i = 0; i < n_conns; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        conns[i].fd = bench_connect_local(port);
        if (conns[i].fd < 0)
            die("connect");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, conns[i].fd, &ev) != 0)
            die("epoll_ctl");
        idle[idle_top++] = n_conns - 1 - i;
    }

    interval_ns = (uint64_t)(1e9 / rate);
    t0 = now_ns();
    warm_end = t0 + (uint64_t)(warmup * 1e9);
    end = warm_end + (uint64_t)(seconds * 1e9);
    next_ns = t0;
    for (;;) {
        struct epoll_event evs[256];
        struct timespec timeout;
        uint64_t now = now_ns(), wait_ns;
        int n;

        /* Send every request that is due, on idle connections; the rest wait, late. */
        while (next_ns <= now && next_ns < end && idle_top > 0) {
            struct conn *c = &conns[idle[--idle_top]];
            if (write(c->fd, req, (size_t)req_len) != req_len)
                die("write");
            c->busy = 1;
            c->start_ns = next_ns;
            c->have = 0;
            c->need = 0;
            sent++;
            next_ns = t0 + sent * interval_ns;
        }
        if (next_ns >= end && idle_top == n_conns)
            break;
        if (now > end + 5000000000ULL) { /* answers 5 s overdue: count them as errors */
            errors += (uint64_t)(n_conns - idle_top);
            break;
        }
        wait_ns = next_ns > now && idle_top > 0 && next_ns < end ? next_ns - now : 100000000ULL;
        timeout.tv_sec = (time_t)(wait_ns / 1000000000ULL);
        timeout.tv_nsec = (long)(wait_ns % 1000000000ULL);
        n = epoll_pwait2(ep, evs, 256, &timeout, NULL);
        if (n < 0 && errno != EINTR)
            die("epoll_pwait2");
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = &conns[evs[i].data.u32];
            ssize_t r = read(c->fd, c->buf + c->have, sizeof(c->buf) - c->have);
            if (r <= 0 || !c->busy) {
                fprintf(stderr, "openloop: connection closed or unexpected data\n");
                return 1;
            }
            c->have += (size_t)r;
            if (c->need == 0)
                c->need = response_length(c->buf, c->have);
            if (c->need == SIZE_MAX || c->need > sizeof(c->buf)) {
                fprintf(stderr, "openloop: not a 200 response with Content-Length\n");
                return 1;
            }
            if (c->need == 0 || c->have < c->need)
                continue;
            if (c->have > c->need)
                errors++; /* more than one response: never asked for */
            record(now - c->start_ns, c->start_ns >= warm_end);
            c->busy = 0;
            idle[idle_top++] = (int)(c - conns);
        }
    }
    printf("sent %llu done %llu errors %llu rate %.0f p50_ms %.3f p99_ms %.3f p999_ms %.3f "
           "max_ms %.3f\n",
           (unsigned long long)sent, (unsigned long long)done, (unsigned long long)errors,
           (double)measured / seconds, percentile(0.50), percentile(0.99), percentile(0.999),
           (double)max_ns / 1e6);
    return 0;
}
