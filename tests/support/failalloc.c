/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation fault injection for tests: linked into a test executable, this malloc/calloc/realloc
 * forward to the next allocator in the link chain (glibc, or ASan's in sanitizer builds) and fail
 * exactly the Nth allocation after ts_failalloc_arm(N), as libuv's test-loop-oom and SQLite's
 * fault injection do. Disarmed, they only forward. Allocations made while dlsym resolves the real
 * functions come from a small static buffer that free() recognises and ignores. */
#define _GNU_SOURCE
#include "support.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);

static _Atomic long countdown = -1; /* < 0: disarmed */
static _Atomic int injected;

static _Alignas(16) unsigned char boot[8192];
static size_t boot_used;
static int resolving;

static void resolve(void)
{
    if (real_malloc != NULL || resolving)
        return;
    resolving = 1;
    *(void **)&real_malloc = dlsym(RTLD_NEXT, "malloc");
    *(void **)&real_calloc = dlsym(RTLD_NEXT, "calloc");
    *(void **)&real_realloc = dlsym(RTLD_NEXT, "realloc");
    *(void **)&real_free = dlsym(RTLD_NEXT, "free");
    resolving = 0;
}

static void *boot_alloc(size_t size)
{
    void *p;
    size = (size + 15) & ~(size_t)15;
    if (boot_used + size > sizeof(boot))
        return NULL;
    p = boot + boot_used;
    boot_used += size;
    return p;
}

static int is_boot(const void *p)
{
    return (const unsigned char *)p >= boot && (const unsigned char *)p < boot + sizeof(boot);
}

/* 1 when this allocation is the one to fail. */
static int fail_now(void)
{
    long left;
    if (atomic_load_explicit(&countdown, memory_order_relaxed) < 0)
        return 0;
    left = atomic_fetch_sub(&countdown, 1);
    if (left == 1) {
        atomic_store(&injected, 1);
        return 1;
    }
    return 0;
}

void *malloc(size_t size)
{
    resolve();
    if (real_malloc == NULL)
        return boot_alloc(size);
    return fail_now() ? NULL : real_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    resolve();
    if (real_calloc == NULL) {
        void *p = (size != 0 && n > SIZE_MAX / size) ? NULL : boot_alloc(n * size);
        if (p != NULL)
            memset(p, 0, n * size);
        return p;
    }
    return fail_now() ? NULL : real_calloc(n, size);
}

void *realloc(void *ptr, size_t size)
{
    resolve();
    if (is_boot(ptr) || real_realloc == NULL)
        return NULL; /* never happens outside dlsym's own bootstrap */
    return fail_now() ? NULL : real_realloc(ptr, size);
}

void free(void *ptr)
{
    if (ptr == NULL || is_boot(ptr))
        return;
    resolve();
    real_free(ptr);
}

void ts_failalloc_arm(long n)
{
    atomic_store(&injected, 0);
    atomic_store(&countdown, n);
}

int ts_failalloc_disarm(void)
{
    atomic_store(&countdown, -1);
    return atomic_load(&injected);
}
