/* SPDX-License-Identifier: Apache-2.0 */
/* Sanitizer builds only: pkcs11-provider dlopens the PKCS#11 module with RTLD_DEEPBIND, which
 * AddressSanitizer and ThreadSanitizer refuse (google/sanitizers#611), so every test touching a
 * token would die at the first key access. This dlopen, linked into every executable, comes
 * before the sanitizer's interceptor, drops that one flag and passes the call on unchanged.
 * It also keeps pkcs11-provider itself (pkcs11.so) mapped until the process exits: the leak check
 * runs at exit, after OpenSSL has unloaded the provider, and a report's frames in an unloaded
 * module read "<unknown module>": no one could tell whose the allocation was, and no suppression
 * (tests/fault/lsan-fault.supp) could name the provider. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

void *dlopen(const char *file, int mode)
{
    static void *(*next_dlopen)(const char *, int);
    const char *base = file != NULL ? strrchr(file, '/') : NULL;

    if (next_dlopen == NULL)
        *(void **)(&next_dlopen) = dlsym(RTLD_NEXT, "dlopen");
    if (next_dlopen == NULL)
        return NULL;
    mode &= ~RTLD_DEEPBIND;
    if (base != NULL && strcmp(base, "/pkcs11.so") == 0)
        mode |= RTLD_NODELETE;
    return next_dlopen(file, mode);
}
