/* SPDX-License-Identifier: Apache-2.0 */
/* Sanitizer builds only: pkcs11-provider dlopens the PKCS#11 module with RTLD_DEEPBIND, which
 * AddressSanitizer and ThreadSanitizer refuse (google/sanitizers#611), so every test touching a
 * token would die at the first key access. This dlopen, linked into every executable, comes
 * before the sanitizer's interceptor, drops that one flag and passes the call on unchanged. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

void *dlopen(const char *file, int mode)
{
    static void *(*next_dlopen)(const char *, int);

    if (next_dlopen == NULL)
        *(void **)(&next_dlopen) = dlsym(RTLD_NEXT, "dlopen");
    if (next_dlopen == NULL)
        return NULL;
    return next_dlopen(file, mode & ~RTLD_DEEPBIND);
}
