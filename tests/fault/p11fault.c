/* SPDX-License-Identifier: Apache-2.0 */
/* p11fault: a PKCS#11 module for tests that wraps a real one (SoftHSM2 by default) and, while a
 * control file exists, makes it behave like an HSM that was unplugged, is slow, or fails a few
 * signatures. pkiva loads it like any vendor module ([hsm] module = .../libp11fault.so), so the
 * whole stack above it (pkcs11-provider, OpenSSL, hsm/, ocsp/, crl/) meets the fault unchanged.
 *
 * Environment:
 *   PKIVA_P11FAULT_MODULE   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   PKIVA_P11FAULT_CONTROL  the control file; absent file (or unset variable) = no fault
 *   PKIVA_P11FAULT_TRACE    if set, every injected fault and every error the real module returns
 *                           from a wrapped call is written to stderr, one line each
 *   PKIVA_P11FAULT_SESSIONS a file to which every successful C_OpenSession appends one line (so a
 *                           test can tell whether signatures reuse sessions or open their own)
 * The control file holds one line, read again whenever its inode, size or mtime changes (write it
 * with a rename to be sure a change is seen):
 *   down        the token is gone. On entering this mode every real session is closed (as a real
 *               module does on removal, which also ends the login and invalidates handles of
 *               private objects); then calls on a session fail with CKR_DEVICE_REMOVED,
 *               C_OpenSession and C_GetTokenInfo with CKR_TOKEN_NOT_PRESENT, and
 *               C_GetSlotList(tokenPresent) lists no slot. After the file is removed, old
 *               session and object handles get what the real module answers for them
 *               (CKR_SESSION_HANDLE_INVALID, CKR_OBJECT_HANDLE_INVALID), as from a real HSM.
 *   slow MS     every C_Sign / C_SignFinal that produces a signature first sleeps MS milliseconds.
 *   fail-n N    the next N C_Sign / C_SignFinal calls fail with CKR_DEVICE_ERROR (the sessions
 *               survive), then signing works again; writing the file anew re-arms it.
 *   corrupt [LABEL]   every signature made (by the key labelled LABEL, or by any key) comes back
 *               with one byte flipped: a token that returns wrong signatures with CKR_OK.
 *   drop-digestinfo [LABEL]   a CKM_RSA_PKCS signature over a SHA-2 DigestInfo is made over the
 *               bare digest instead: pkcs11-provider 1.0's fallback on openCryptoki 3.8.1.
 *   fail-after K LABEL   the key labelled LABEL starts K more signing operations, then
 *               C_SignInit with it fails with CKR_KEY_FUNCTION_NOT_PERMITTED (an error of that
 *               key alone) until the file changes: a key that passes its start-up self-check
 *               and fails right after it.
 *   mech-invalid LABEL   C_SignInit with the key labelled LABEL fails with
 *               CKR_MECHANISM_INVALID, as for EC keys on a token without CKM_ECDSA.
 *   lost        the module forgets the token's objects for the rest of the process, as SoftHSM2
 *               2.6.1 does when it could not open its token files (descriptors exhausted): the
 *               token stays present and logged in, but C_SignInit answers CKR_KEY_HANDLE_INVALID
 *               and C_FindObjects finds nothing, even after the file is removed. Only a new
 *               process (a restart) sees the objects again.
 * An injected signing failure still finishes the real operation (signing into a scratch buffer),
 * because PKCS#11 says a failed C_Sign/C_SignFinal ends the operation and callers rely on it.
 *
 * Only C_GetFunctionList is exported (not the 3.0 C_GetInterface), so callers use the 2.40 list
 * copied from the real module with the wrapped entries replaced. Never unloaded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define SCRATCH_SIG 2048 /* larger than any signature (RSA-16384 is 2048 bytes) */
#define SLOTS_MAX 64

enum mode {
    MODE_NONE,
    MODE_DOWN,
    MODE_SLOW,
    MODE_FAIL_N,
    MODE_CORRUPT,
    MODE_DROP_DIGESTINFO,
    MODE_MECH_INVALID,
    MODE_FAIL_AFTER,
    MODE_LOST
};

#define LABEL_MAX 64
#define OPS_MAX 1024 /* sign operations in flight we remember, by session handle */

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static CK_FUNCTION_LIST_PTR real; /* the real module's list */
static CK_FUNCTION_LIST wrapped;  /* a copy of it with our entries */
static CK_RV load_rv = CKR_GENERAL_ERROR;
static const char *control_path;
static int trace;

/* The parsed control file, and what identifies the version parsed. */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static enum mode mode = MODE_NONE;
static long mode_arg;
static char mode_label[LABEL_MAX]; /* "" = every key */
static struct stat control_seen;   /* st_ino == 0: no file seen */
static int objects_lost;           /* "lost" was seen: sticky for the life of the process */

/* What C_SignInit decided for the operation of a session: tamper with its signature, and how. */
static struct op {
    CK_SESSION_HANDLE session;
    int tamper; /* 0, MODE_CORRUPT or MODE_DROP_DIGESTINFO */
} ops[OPS_MAX];

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;

    if (!trace)
        return;
    va_start(ap, fmt);
    (void)fputs("p11fault: ", stderr);
    (void)vfprintf(stderr, fmt, ap);
    (void)fputc('\n', stderr);
    va_end(ap);
}

/* Closes every real session on every slot: what a module does when its token goes away. */
static void close_all_sessions(void)
{
    CK_SLOT_ID slots[SLOTS_MAX];
    CK_ULONG n = SLOTS_MAX;

    if (real->C_GetSlotList(CK_FALSE, slots, &n) != CKR_OK)
        return;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_RV rv = real->C_CloseAllSessions(slots[i]);
        say("down: C_CloseAllSessions(slot %lu) = 0x%lx", (unsigned long)slots[i],
            (unsigned long)rv);
    }
}

/* Re-reads the control file if it changed; returns the mode in force and its argument. */
static enum mode current(long *arg)
{
    struct stat st;
    enum mode m;

    if (control_path == NULL) {
        *arg = 0;
        return MODE_NONE;
    }
    pthread_mutex_lock(&state_lock);
    if (stat(control_path, &st) != 0) {
        if (control_seen.st_ino != 0)
            say("control file gone: no fault");
        memset(&control_seen, 0, sizeof(control_seen));
        mode = MODE_NONE;
    } else if (st.st_ino != control_seen.st_ino || st.st_size != control_seen.st_size ||
               st.st_mtim.tv_sec != control_seen.st_mtim.tv_sec ||
               st.st_mtim.tv_nsec != control_seen.st_mtim.tv_nsec) {
        char line[128] = "";
        char word[16] = "";
        char word_arg[LABEL_MAX] = "";
        char word_arg2[LABEL_MAX] = "";
        long n = 0;
        FILE *f = fopen(control_path, "r");
        enum mode before = mode;

        if (f != NULL) {
            if (fgets(line, sizeof(line), f) == NULL)
                line[0] = '\0';
            (void)fclose(f); /* read-only */
        }
        if (sscanf(line, "%15s %63s %63s", word, word_arg, word_arg2) < 1)
            word[0] = '\0';
        n = strtol(word_arg, NULL, 10);
        if (strcmp(word, "down") == 0)
            mode = MODE_DOWN;
        else if (strcmp(word, "slow") == 0)
            mode = MODE_SLOW;
        else if (strcmp(word, "fail-n") == 0)
            mode = MODE_FAIL_N;
        else if (strcmp(word, "corrupt") == 0)
            mode = MODE_CORRUPT;
        else if (strcmp(word, "drop-digestinfo") == 0)
            mode = MODE_DROP_DIGESTINFO;
        else if (strcmp(word, "mech-invalid") == 0)
            mode = MODE_MECH_INVALID;
        else if (strcmp(word, "fail-after") == 0)
            mode = MODE_FAIL_AFTER;
        else if (strcmp(word, "lost") == 0)
            mode = MODE_LOST;
        else
            mode = MODE_NONE;
        mode_arg = n;
        (void)snprintf(mode_label, sizeof(mode_label), "%s",
                       mode == MODE_FAIL_AFTER ? word_arg2 : word_arg);
        control_seen = st;
        say("control file: '%s' %ld", word, n);
        if (mode == MODE_DOWN && before != MODE_DOWN)
            close_all_sessions();
        if (mode == MODE_LOST)
            objects_lost = 1;
    }
    m = mode;
    *arg = mode_arg;
    pthread_mutex_unlock(&state_lock);
    return m;
}

/* fail-after: takes one operation from the budget; 1 when this one is to fail. */
static int take_after(void)
{
    int fail = 0;

    pthread_mutex_lock(&state_lock);
    if (mode == MODE_FAIL_AFTER) {
        if (mode_arg > 0)
            mode_arg--;
        else
            fail = 1;
    }
    pthread_mutex_unlock(&state_lock);
    return fail;
}

/* fail-n: takes one failure from the budget; 1 when this call is to fail. */
static int take_failure(void)
{
    int fail = 0;

    pthread_mutex_lock(&state_lock);
    if (mode == MODE_FAIL_N && mode_arg > 0) {
        mode_arg--;
        fail = 1;
    }
    pthread_mutex_unlock(&state_lock);
    return fail;
}

static int is_down(void)
{
    long arg;
    return current(&arg) == MODE_DOWN;
}

static int is_lost(void)
{
    long arg;
    int lost;

    (void)current(&arg);
    pthread_mutex_lock(&state_lock);
    lost = objects_lost;
    pthread_mutex_unlock(&state_lock);
    return lost;
}

static CK_RV traced(const char *fn, CK_RV rv)
{
    if (rv != CKR_OK && rv != CKR_BUFFER_TOO_SMALL)
        say("%s: real module returned 0x%lx", fn, (unsigned long)rv);
    return rv;
}

static CK_RV injected(const char *fn, CK_RV rv)
{
    say("%s: injected 0x%lx", fn, (unsigned long)rv);
    return rv;
}

/* ---- wrapped entries ------------------------------------------------------------------------ */

static CK_RV w_GetSlotList(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    if (present && is_down() && count != NULL) {
        *count = 0;
        return injected("C_GetSlotList", CKR_OK);
    }
    return traced("C_GetSlotList", real->C_GetSlotList(present, list, count));
}

static CK_RV w_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    if (is_down())
        return injected("C_GetTokenInfo", CKR_TOKEN_NOT_PRESENT);
    return traced("C_GetTokenInfo", real->C_GetTokenInfo(slot, info));
}

/* One line per opened session to $PKIVA_P11FAULT_SESSIONS, if set (O_APPEND: whole lines). */
static void count_session(void)
{
    const char *path = getenv("PKIVA_P11FAULT_SESSIONS");
    int fd;

    if (path == NULL)
        return;
    fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0)
        return;
    (void)!write(fd, "C_OpenSession\n", 14); /* a test counter: a short write shows as a miss */
    (void)close(fd);
}

static CK_RV w_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                           CK_SESSION_HANDLE_PTR session)
{
    CK_RV rv;

    if (is_down())
        return injected("C_OpenSession", CKR_TOKEN_NOT_PRESENT);
    rv = traced("C_OpenSession", real->C_OpenSession(slot, flags, app, notify, session));
    if (rv == CKR_OK)
        count_session();
    return rv;
}

static CK_RV w_GetSessionInfo(CK_SESSION_HANDLE session, CK_SESSION_INFO_PTR info)
{
    if (is_down())
        return injected("C_GetSessionInfo", CKR_DEVICE_REMOVED);
    return traced("C_GetSessionInfo", real->C_GetSessionInfo(session, info));
}

static CK_RV w_Login(CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
                     CK_ULONG pin_len)
{
    if (is_down())
        return injected("C_Login", CKR_DEVICE_REMOVED);
    return traced("C_Login", real->C_Login(session, user, pin, pin_len));
}

static CK_RV w_GetAttributeValue(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object,
                                 CK_ATTRIBUTE_PTR templ, CK_ULONG count)
{
    if (is_down())
        return injected("C_GetAttributeValue", CKR_DEVICE_REMOVED);
    /* CKR_ATTRIBUTE_TYPE_INVALID and friends are normal answers here: not traced. */
    return real->C_GetAttributeValue(session, object, templ, count);
}

static CK_RV w_FindObjectsInit(CK_SESSION_HANDLE session, CK_ATTRIBUTE_PTR templ, CK_ULONG count)
{
    if (is_down())
        return injected("C_FindObjectsInit", CKR_DEVICE_REMOVED);
    return traced("C_FindObjectsInit", real->C_FindObjectsInit(session, templ, count));
}

static CK_RV w_FindObjects(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE_PTR objects, CK_ULONG max,
                           CK_ULONG_PTR count)
{
    CK_RV rv;

    if (is_down())
        return injected("C_FindObjects", CKR_DEVICE_REMOVED);
    rv = traced("C_FindObjects", real->C_FindObjects(session, objects, max, count));
    if (rv == CKR_OK && is_lost() && count != NULL && *count > 0) {
        say("C_FindObjects: lost: %lu object(s) hidden", (unsigned long)*count);
        *count = 0;
    }
    return rv;
}

static CK_RV w_FindObjectsFinal(CK_SESSION_HANDLE session)
{
    if (is_down())
        return injected("C_FindObjectsFinal", CKR_DEVICE_REMOVED);
    return traced("C_FindObjectsFinal", real->C_FindObjectsFinal(session));
}

/* 1 when key's CKA_LABEL is label ("" matches every key). */
static int key_has_label(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, const char *label)
{
    char value[LABEL_MAX] = "";
    CK_ATTRIBUTE attr = {CKA_LABEL, value, sizeof(value) - 1};

    if (label[0] == '\0')
        return 1;
    if (real->C_GetAttributeValue(session, key, &attr, 1) != CKR_OK ||
        attr.ulValueLen >= sizeof(value))
        return 0;
    value[attr.ulValueLen] = '\0';
    return strcmp(value, label) == 0;
}

static struct op *op_slot(CK_SESSION_HANDLE session)
{
    return &ops[session % OPS_MAX];
}

static CK_RV w_SignInit(CK_SESSION_HANDLE session, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    long arg = 0;
    enum mode m;
    char label[LABEL_MAX];
    CK_RV rv;
    int tamper = 0;

    if (is_down())
        return injected("C_SignInit", CKR_DEVICE_REMOVED);
    if (is_lost())
        return injected("C_SignInit", CKR_KEY_HANDLE_INVALID);
    m = current(&arg);
    pthread_mutex_lock(&state_lock);
    memcpy(label, mode_label, sizeof(label));
    pthread_mutex_unlock(&state_lock);
    if (m == MODE_MECH_INVALID && key_has_label(session, key, label))
        return injected("C_SignInit", CKR_MECHANISM_INVALID);
    if (m == MODE_FAIL_AFTER && key_has_label(session, key, label) && take_after())
        return injected("C_SignInit", CKR_KEY_FUNCTION_NOT_PERMITTED);
    if ((m == MODE_CORRUPT ||
         (m == MODE_DROP_DIGESTINFO && mech != NULL && mech->mechanism == CKM_RSA_PKCS)) &&
        key_has_label(session, key, label))
        tamper = m;
    rv = traced("C_SignInit", real->C_SignInit(session, mech, key));
    pthread_mutex_lock(&state_lock);
    op_slot(session)->session = session;
    op_slot(session)->tamper = rv == CKR_OK ? tamper : 0;
    pthread_mutex_unlock(&state_lock);
    return rv;
}

/* The tampering C_SignInit chose for this session's operation (read once, when it ends). */
static int op_tamper(CK_SESSION_HANDLE session, int ending)
{
    int tamper = 0;

    pthread_mutex_lock(&state_lock);
    if (op_slot(session)->session == session) {
        tamper = op_slot(session)->tamper;
        if (ending)
            op_slot(session)->tamper = 0;
    }
    pthread_mutex_unlock(&state_lock);
    return tamper;
}

static void flip_byte(CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
    if (sig != NULL && sig_len != NULL && *sig_len > 0) {
        sig[*sig_len / 2] ^= 0x01;
        say("corrupt: flipped a byte of a %lu-byte signature", (unsigned long)*sig_len);
    }
}

static CK_RV w_SignUpdate(CK_SESSION_HANDLE session, CK_BYTE_PTR part, CK_ULONG len)
{
    if (is_down())
        return injected("C_SignUpdate", CKR_DEVICE_REMOVED);
    return traced("C_SignUpdate", real->C_SignUpdate(session, part, len));
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* The common part of C_Sign and C_SignFinal. final_call runs the real function with the given
 * output buffer. Returns 1 with *rv set when the call was answered here. */
static int sign_fault(const char *fn, CK_BYTE_PTR out, CK_RV *rv,
                      CK_RV (*final_call)(void *ctx, CK_BYTE_PTR out, CK_ULONG_PTR len), void *ctx)
{
    long arg = 0;
    enum mode m = current(&arg);

    if (m == MODE_DOWN) {
        *rv = injected(fn, CKR_DEVICE_REMOVED);
        return 1;
    }
    if (m == MODE_SLOW && out != NULL && arg > 0)
        sleep_ms(arg);
    if (m == MODE_FAIL_N && take_failure()) {
        unsigned char scratch[SCRATCH_SIG];
        CK_ULONG scratch_len = sizeof(scratch);
        /* Ends the real operation, as the failure we report would have. */
        (void)final_call(ctx, scratch, &scratch_len);
        *rv = injected(fn, CKR_DEVICE_ERROR);
        return 1;
    }
    return 0;
}

struct sign_args {
    CK_SESSION_HANDLE session;
    CK_BYTE_PTR data;
    CK_ULONG len;
};

static CK_RV real_sign(void *ctx, CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
    struct sign_args *a = ctx;
    return real->C_Sign(a->session, a->data, a->len, out, out_len);
}

static CK_RV real_sign_final(void *ctx, CK_BYTE_PTR out, CK_ULONG_PTR out_len)
{
    struct sign_args *a = ctx;
    return real->C_SignFinal(a->session, out, out_len);
}

/* The SHA-2 DigestInfo prefixes are 19 bytes (RFC 8017 9.2 note 1): 0x30 len 0x30 0x0d 0x06
 * 0x09 <OID> 0x05 0x00 0x04 <digest length>. */
#define DIGESTINFO_SHA2_PREFIX 19

static CK_RV w_Sign(CK_SESSION_HANDLE session, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
                    CK_ULONG_PTR sig_len)
{
    struct sign_args a = {session, data, len};
    int tamper = op_tamper(session, sig != NULL);
    CK_RV rv;

    if (sign_fault("C_Sign", sig, &rv, real_sign, &a))
        return rv;
    if (tamper == MODE_DROP_DIGESTINFO && len > DIGESTINFO_SHA2_PREFIX && data[0] == 0x30 &&
        data[DIGESTINFO_SHA2_PREFIX - 1] == len - DIGESTINFO_SHA2_PREFIX) {
        a.data = data + DIGESTINFO_SHA2_PREFIX;
        a.len = len - DIGESTINFO_SHA2_PREFIX;
        if (sig != NULL)
            say("drop-digestinfo: signing the bare %lu-byte digest", (unsigned long)a.len);
    }
    rv = traced("C_Sign", real_sign(&a, sig, sig_len));
    if (rv == CKR_OK && tamper == MODE_CORRUPT)
        flip_byte(sig, sig_len);
    return rv;
}

static CK_RV w_SignFinal(CK_SESSION_HANDLE session, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
    struct sign_args a = {session, NULL, 0};
    int tamper = op_tamper(session, sig != NULL);
    CK_RV rv;

    if (sign_fault("C_SignFinal", sig, &rv, real_sign_final, &a))
        return rv;
    rv = traced("C_SignFinal", real_sign_final(&a, sig, sig_len));
    if (rv == CKR_OK && tamper == MODE_CORRUPT)
        flip_byte(sig, sig_len);
    return rv;
}

/* ---- loading -------------------------------------------------------------------------------- */

static void load(void)
{
    const char *path = getenv("PKIVA_P11FAULT_MODULE");
    CK_C_GetFunctionList get_list = NULL;
    void *lib;

    if (path == NULL || path[0] == '\0')
        path = DEFAULT_MODULE;
    control_path = getenv("PKIVA_P11FAULT_CONTROL");
    if (control_path != NULL && control_path[0] == '\0')
        control_path = NULL;
    trace = getenv("PKIVA_P11FAULT_TRACE") != NULL;
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (lib == NULL) {
        (void)fprintf(stderr, "p11fault: cannot load %s: %s\n", path, dlerror());
        return;
    }
    /* POSIX's sanctioned way to turn dlsym's object pointer into a function pointer. */
    *(void **)(&get_list) = dlsym(lib, "C_GetFunctionList");
    if (get_list == NULL || get_list(&real) != CKR_OK || real == NULL) {
        (void)fprintf(stderr, "p11fault: %s has no usable C_GetFunctionList\n", path);
        real = NULL;
        return;
    }
    wrapped = *real;
    wrapped.C_GetFunctionList = C_GetFunctionList;
    wrapped.C_GetSlotList = w_GetSlotList;
    wrapped.C_GetTokenInfo = w_GetTokenInfo;
    wrapped.C_OpenSession = w_OpenSession;
    wrapped.C_GetSessionInfo = w_GetSessionInfo;
    wrapped.C_Login = w_Login;
    wrapped.C_GetAttributeValue = w_GetAttributeValue;
    wrapped.C_FindObjectsInit = w_FindObjectsInit;
    wrapped.C_FindObjects = w_FindObjects;
    wrapped.C_FindObjectsFinal = w_FindObjectsFinal;
    wrapped.C_SignInit = w_SignInit;
    wrapped.C_Sign = w_Sign;
    wrapped.C_SignUpdate = w_SignUpdate;
    wrapped.C_SignFinal = w_SignFinal;
    load_rv = CKR_OK;
    say("wrapping %s, control file %s", path, control_path != NULL ? control_path : "(none)");
}

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    (void)pthread_once(&load_once, load); /* only fails on invalid arguments */
    if (load_rv != CKR_OK)
        return load_rv;
    *list = &wrapped;
    return CKR_OK;
}
