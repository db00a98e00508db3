/* SPDX-License-Identifier: Apache-2.0 */
/* What the bench programs share. */
#ifndef PKIVA_BENCH_H
#define PKIVA_BENCH_H

/* A TCP connection to 127.0.0.1:port with TCP_NODELAY; -1 with errno set when it fails. */
int bench_connect_local(int port);
/* utime + stime of this process from /proc/self/stat, in seconds (what bench/run reads of pkiva). */
double bench_proc_cpu_s(void);
/* CLOCK_MONOTONIC in seconds. */
double bench_now_s(void);

#endif
