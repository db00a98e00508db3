/* SPDX-License-Identifier: Apache-2.0 */
/* p11sign: the raw signing rate of one key in a PKCS#11 token, the peer of pkiva's live-signed OCSP
 * path. It dlopens the module, finds the private key by label in the token, and loops
 * C_SignInit + C_Sign (CKM_ECDSA over a SHA-256 digest made here, as pkcs11-provider does, or
 * CKM_SHA256_RSA_PKCS for RSA keys) for a fixed time in T threads, one session each. Each thread
 * first copies the key into a session object (C_CopyObject with CKA_TOKEN false), as
 * pkcs11-provider does with "pkcs11-module-cache-keys" (its default): SoftHSM2 then signs without
 * re-checking its token files on every use, so the peer is the fastest this token signs, not a
 * naive loop that pkiva could beat. A module that refuses the copy is measured on the token key.
 *
 *   p11sign --pin-file F [--module SO] [--token pkiva] [--label ocsp-responder]
 *           [--threads T] [--seconds S]
 *
 * SOFTHSM2_CONF must name the token's configuration, as for pkiva. Prints one line:
 *   p11sign: threads=T seconds=S signatures=N rate=R/s key=ec|rsa session-copy=yes|no cpu_us=C
 * where C is the process's CPU time (utime + stime from /proc/self/stat, as bench/run reads
 * pkiva's) over the signing threads' run, per signature: the peer of pkiva's CPU per answer.
 * Not run by ctest. The module is never finalized: SoftHSM2 2.6.1 crashes in C_Finalize at exit. */
#include "bench.h"

#include <dlfcn.h>
#include <openssl/sha.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define P11SIGN_MAX_THREADS 64

static CK_FUNCTION_LIST_PTR p11;
static CK_SLOT_ID slot;
static char pin[256];
static const char *label = "ocsp-responder";
static double seconds = 5.0;
static CK_KEY_TYPE key_type = CKK_EC;
static int key_copied; /* the threads sign with session copies of the key */

struct worker {
    pthread_t thread;
    long count;
    int failed;
};

static void die(const char *what, CK_RV rv)
{
    fprintf(stderr, "p11sign: %s failed (CK_RV 0x%lx)\n", what, (unsigned long)rv);
    exit(1);
}

static void open_module(const char *module, const char *token)
{
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS init = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[32];
    CK_ULONG n = 32;
    size_t token_len = strlen(token);
    void *lib = dlopen(module, RTLD_NOW);
    CK_RV rv;

    if (lib == NULL) {
        fprintf(stderr, "p11sign: dlopen %s: %s\n", module, dlerror());
        exit(1);
    }
    get_list = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
    if (get_list == NULL)
        die("dlsym C_GetFunctionList", 0);
    rv = get_list(&p11);
    if (rv != CKR_OK)
        die("C_GetFunctionList", rv);
    rv = p11->C_Initialize(&init);
    if (rv != CKR_OK)
        die("C_Initialize", rv);
    rv = p11->C_GetSlotList(CK_TRUE, slots, &n);
    if (rv != CKR_OK)
        die("C_GetSlotList", rv);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO info;
        /* Token labels are blank-padded to 32 octets. */
        if (p11->C_GetTokenInfo(slots[i], &info) == CKR_OK && token_len <= sizeof(info.label) &&
            memcmp(info.label, token, token_len) == 0 &&
            (token_len == sizeof(info.label) || info.label[token_len] == ' ')) {
            slot = slots[i];
            return;
        }
    }
    fprintf(stderr, "p11sign: no token labelled '%s'\n", token);
    exit(1);
}

/* Opens a session, logs in (once per token; later sessions share it) and finds the key; returns
 * a session copy of it when the module allows one (see the top). */
static CK_OBJECT_HANDLE session_key(CK_SESSION_HANDLE *session)
{
    CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
    CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
                           {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ATTRIBUTE type = {CKA_KEY_TYPE, &key_type, sizeof(key_type)};
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_ULONG found = 0;
    CK_RV rv;

    rv = p11->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, session);
    if (rv != CKR_OK)
        die("C_OpenSession", rv);
    rv = p11->C_Login(*session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
        die("C_Login", rv);
    rv = p11->C_FindObjectsInit(*session, find, 2);
    if (rv != CKR_OK)
        die("C_FindObjectsInit", rv);
    rv = p11->C_FindObjects(*session, &key, 1, &found);
    (void)p11->C_FindObjectsFinal(*session); /* ends the search; nothing to do on failure */
    if (rv != CKR_OK || found != 1) {
        fprintf(stderr, "p11sign: no private key labelled '%s'\n", label);
        exit(1);
    }
    rv = p11->C_GetAttributeValue(*session, key, &type, 1);
    if (rv != CKR_OK)
        die("C_GetAttributeValue(CKA_KEY_TYPE)", rv);
    {
        CK_BBOOL no = CK_FALSE;
        CK_ATTRIBUTE session_object = {CKA_TOKEN, &no, sizeof(no)};
        CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
        if (p11->C_CopyObject(*session, key, &session_object, 1, &copy) == CKR_OK) {
            key_copied = 1;
            return copy;
        }
    }
    return key;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    CK_SESSION_HANDLE session;
    CK_OBJECT_HANDLE key = session_key(&session);
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0};
    CK_MECHANISM rsa = {CKM_SHA256_RSA_PKCS, NULL, 0};
    unsigned char data[32], sig[1024];
    double end = bench_now_s() + seconds;

    while (bench_now_s() < end) {
        CK_ULONG sig_len = sizeof(sig);
        CK_RV rv;
        /* A fresh 32-octet input each time, as a response's tbsResponseData digest would be. */
        SHA256((const unsigned char *)&w->count, sizeof(w->count), data);
        rv = p11->C_SignInit(session, key_type == CKK_RSA ? &rsa : &ecdsa, key);
        if (rv == CKR_OK)
            rv = p11->C_Sign(session, data, sizeof(data), sig, &sig_len);
        if (rv != CKR_OK) {
            fprintf(stderr, "p11sign: C_SignInit/C_Sign failed (CK_RV 0x%lx)\n", (unsigned long)rv);
            w->failed = 1;
            break;
        }
        w->count++;
    }
    (void)p11->C_CloseSession(session); /* the run is over; nothing to do on failure */
    return NULL;
}

int main(int argc, char **argv)
{
    const char *module = "/usr/lib/softhsm/libsofthsm2.so", *token = "pkiva", *pin_file = NULL;
    struct worker workers[P11SIGN_MAX_THREADS];
    int threads = 1;
    long total = 0;
    double t0, t1, cpu0, cpu1;
    FILE *f;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (val == NULL)
            goto usage;
        if (strcmp(arg, "--module") == 0)
            module = val;
        else if (strcmp(arg, "--token") == 0)
            token = val;
        else if (strcmp(arg, "--label") == 0)
            label = val;
        else if (strcmp(arg, "--pin-file") == 0)
            pin_file = val;
        else if (strcmp(arg, "--threads") == 0)
            threads = atoi(val);
        else if (strcmp(arg, "--seconds") == 0)
            seconds = atof(val);
        else
            goto usage;
        i++;
    }
    if (pin_file == NULL || threads < 1 || threads > P11SIGN_MAX_THREADS || seconds <= 0 ||
        seconds > 600)
        goto usage;
    f = fopen(pin_file, "r");
    if (f == NULL || fgets(pin, sizeof(pin), f) == NULL) {
        fprintf(stderr, "p11sign: cannot read %s\n", pin_file);
        return 1;
    }
    (void)fclose(f); /* read-only */
    pin[strcspn(pin, "\r\n")] = '\0';

    open_module(module, token);
    {
        /* Log in before the clock starts, so that every thread only signs. */
        CK_SESSION_HANDLE s;
        (void)session_key(&s);
    }
    memset(workers, 0, sizeof(workers));
    cpu0 = bench_proc_cpu_s();
    t0 = bench_now_s();
    for (int i = 0; i < threads; i++)
        if (pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]) != 0) {
            fprintf(stderr, "p11sign: pthread_create failed\n");
            return 1;
        }
    for (int i = 0; i < threads; i++) {
        (void)pthread_join(workers[i].thread, NULL); /* our own joinable threads */
        if (workers[i].failed)
            return 1;
        total += workers[i].count;
    }
    t1 = bench_now_s();
    cpu1 = bench_proc_cpu_s();
    printf("p11sign: threads=%d seconds=%.2f signatures=%ld rate=%.0f/s key=%s session-copy=%s "
           "cpu_us=%.1f\n",
           threads, t1 - t0, total, (double)total / (t1 - t0), key_type == CKK_RSA ? "rsa" : "ec",
           key_copied ? "yes" : "no", total > 0 ? (cpu1 - cpu0) * 1e6 / (double)total : 0.0);
    fflush(stdout);
    _exit(0); /* no C_Finalize, no atexit handlers: see the comment at the top */
usage:
    fprintf(stderr, "usage: p11sign --pin-file F [--module SO] [--token LABEL] [--label KEY] "
                    "[--threads T] [--seconds S]\n");
    return 2;
}
