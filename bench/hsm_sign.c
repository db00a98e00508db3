/* SPDX-License-Identifier: Apache-2.0 */
/* hsm_sign: pkiva's own signing path in a loop, the step between p11sign (raw C_SignInit + C_Sign)
 * and a live-signed answer. Each of the pool's T signing threads runs one job that calls
 * hsm_sign_digest_blocking (the thread's own session for ECDSA, or pkcs11-provider's EVP_PKEY_sign
 * with the thread's cached context; then the configured self-check) on one key for S seconds, so that bench/run can split pkiva's CPU per answer into the token's signature, what
 * pkcs11-provider adds, what the verification adds, and the rest (HTTP, parsing, encoding, thread
 * hand-offs).
 *
 *   hsm_sign --module SO --pin-file F --uri URI [--threads T] [--seconds S] [--verify N|none]
 *            [--provider-only]
 *
 * --verify: verify one ECDSA signature in N (pkiva's [hsm] verify_ecdsa; default 16), or none.
 * --provider-only: every signature through pkcs11-provider ([hsm] direct_sign = no).
 * Prints one line, in p11sign's format:
 *   hsm_sign: threads=T seconds=S signatures=N rate=R/s verify=V direct=D cpu_us=C
 * (D: signatures made on the threads' own sessions, not through pkcs11-provider).
 * C is the process's CPU time (utime + stime from /proc/self/stat) over the run, per signature.
 * Not run by ctest. */
#include "bench/bench.h"

#include <hsm/hsm.h>
#include <util/util.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HSM_SIGN_MAX_THREADS 64

static struct hsm *hsm;
static struct hsm_key *key;
static double seconds = 5.0;
static _Atomic int stop;

struct worker {
    pthread_t thread;
    long count;
    int failed;
};

/* On a signing thread of the pool (hsm_run_sync), as every signature pkiva serves is made: signs
 * until told to stop. */
static int sign_loop(void *thread_state, void *arg)
{
    struct worker *w = arg;
    unsigned char digest[32];

    (void)thread_state;
    if (RAND_bytes(digest, sizeof(digest)) != 1)
        return -1;
    do {
        unsigned char *sig = NULL;
        size_t sig_len = 0;
        if (hsm_sign_digest_blocking(hsm, key, digest, sizeof(digest), &sig, &sig_len) != 0)
            return -1;
        free(sig);
        digest[w->count % sizeof(digest)] ^= 0x5a; /* another digest each time */
        w->count++;
    } while (!stop);
    return 0;
}

static void *work(void *arg)
{
    struct worker *w = arg;

    w->failed = hsm_run_sync(hsm, sign_loop, w) != 0;
    return NULL;
}

static void usage(void)
{
    fprintf(stderr, "usage: hsm_sign --module SO --pin-file F --uri URI [--threads T] "
                    "[--seconds S] [--verify N|none]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct hsm_config cfg;
    struct hsm_stats st;
    struct worker workers[HSM_SIGN_MAX_THREADS];
    const char *uri = NULL, *verify = "16";
    int threads = 1;
    long total = 0;
    double cpu0, cpu1, t0, t1;

    memset(&cfg, 0, sizeof(cfg));
    cfg.queue_max = 64;
    cfg.softhsm_no_deinit = 1;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--provider-only") == 0) {
            cfg.provider_only = 1;
            continue;
        }
        if (v == NULL)
            usage();
        if (strcmp(argv[i], "--module") == 0)
            cfg.module_path = v;
        else if (strcmp(argv[i], "--pin-file") == 0)
            cfg.pin_file = v;
        else if (strcmp(argv[i], "--uri") == 0)
            uri = v;
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(v);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(v);
        else if (strcmp(argv[i], "--verify") == 0) {
            verify = v;
            cfg.ecdsa_verify_every = strcmp(v, "none") == 0 ? HSM_VERIFY_NONE : atoi(v);
        } else
            usage();
        i++;
    }
    if (cfg.module_path == NULL || cfg.pin_file == NULL || uri == NULL || threads < 1 ||
        threads > HSM_SIGN_MAX_THREADS || seconds <= 0)
        usage();
    cfg.sessions = threads;
    if (getenv("HSM_SIGN_DEBUG") != NULL)
        util_log_set_level(UTIL_LOG_DEBUG);
    if (hsm_open(&cfg, &hsm) != 0 || hsm_key_load_blocking(hsm, uri, NULL, 0, &key) != 0) {
        fprintf(stderr, "hsm_sign: cannot open the token or load %s\n", uri);
        return 1;
    }
    /* One signature first: pkcs11-provider logs in and caches the key before the clock starts. */
    memset(workers, 0, sizeof(workers));
    stop = 1;
    (void)work(&workers[0]);
    if (workers[0].failed) {
        fprintf(stderr, "hsm_sign: the first signature failed\n");
        return 1;
    }
    workers[0].count = 0;
    stop = 0;
    cpu0 = bench_proc_cpu_s();
    t0 = bench_now_s();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&workers[i].thread, NULL, work, &workers[i]) != 0)
            return 1;
    (void)usleep((useconds_t)(seconds * 1e6));
    stop = 1;
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        if (workers[i].failed) {
            fprintf(stderr, "hsm_sign: a signature failed\n");
            return 1;
        }
        total += workers[i].count;
    }
    t1 = bench_now_s();
    cpu1 = bench_proc_cpu_s();
    hsm_stats_get(hsm, &st);
    printf("hsm_sign: threads=%d seconds=%.2f signatures=%ld rate=%.0f/s verify=%s direct=%llu "
           "cpu_us=%.1f\n",
           threads, t1 - t0, total, (double)total / (t1 - t0), verify,
           (unsigned long long)st.direct, total > 0 ? (cpu1 - cpu0) * 1e6 / (double)total : 0.0);
    hsm_key_free(key);
    hsm_close(hsm);
    return 0;
}
