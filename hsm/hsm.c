/* SPDX-License-Identifier: Apache-2.0 */
/* The hsm's life cycle and its signing pool: a private OpenSSL library context with pkcs11-provider
 * configured for one PKCS#11 module, the bounded pool of signing threads, and the bookkeeping that
 * notices an HSM outage once, counts it and logs the recovery.
 *
 * DESIGN
 * - Library context: hsm_open creates an OSSL_LIB_CTX of its own and loads the default and pkcs11
 *   providers into it. OpenSSL 3.0 cannot hand parameters to a provider programmatically, so the
 *   provider section is written to a private 0600 file (mkstemp in $TMPDIR), loaded with
 *   OSSL_LIB_CTX_load_config and unlinked at once. The file names the PIN file ("file:" form); the
 *   PIN itself is read by pkcs11-provider and never passes through pkiva's memory or logs.
 *   "pkcs11-module-load-behavior = early" makes the provider load and C_Initialize the module inside
 *   hsm_open, so a bad module path fails there; login happens lazily on the first key access.
 *   Default properties "?provider=default" keep digests, verification and RNG in the default
 *   provider; operations on a token key still run in pkcs11-provider because OpenSSL fetches them
 *   from the key's own provider first.
 * - Threads: the signing pool (util_pool) has cfg->sessions threads and a queue of cfg->queue_max.
 *   No per-thread state is needed: pkcs11-provider keeps its own pool of PKCS#11 sessions per slot
 *   and takes one per operation, so "sessions" is the number of signing threads and must stay
 *   within the token's session limit. The loop threads never touch the token; they submit through
 *   a port. The provider's cache ("pkcs11-module-cache-sessions") is set to the signing threads
 *   plus HSM_SESSIONS_SPARE: the login session and every loaded key hold sessions of their own,
 *   and with a cache of just the thread count each signature opened and closed a session
 *   (C_OpenSession + C_CloseSession per signature, measured with perf uprobes on SoftHSM2: a
 *   fifth of the CPU of an RSA-2048 time stamp, a network round trip on a network HSM). The
 *   provider never keeps more than the token's own ulMaxSessionCount allows.
 * - Ownership: struct hsm owns the library context and the pool. Keys (struct hsm_key) and signing
 *   contexts reference the library context's providers, so they must be freed before hsm_close.
 *   hsm_submit allocates a small job wrapper per call, freed in its done callback; util_pool drops
 *   the done callback of jobs finishing after their port was closed, and the wrapper with it leaks
 *   (a few dozen bytes per job in flight at shutdown, same as the caller's own arg).
 * - Outage bookkeeping: every job's result goes through hsm_note_result. UTIL_EHSM sets
 *   down_since_ms with a compare-and-swap from 0, so exactly one thread logs the start of an
 *   episode; the first success swaps it back to 0 and logs how long the outage lasted. Counters are
 *   relaxed atomics; nothing on the loop or signing path takes a lock here.
 * - PIN prompts: when the token refuses the configured PIN, pkcs11-provider 1.0 remembers it as bad
 *   (never retries it, so the token is not locked) and falls back to asking: first through the
 *   caller's passphrase callback, then through its own prompt on OpenSSL's default UI, which reads
 *   /dev/tty and would block a signing thread forever. hsm_open therefore installs, once per
 *   process, a default UI method that answers every prompt with an empty PIN (the provider then
 *   cancels the login); key lookups pass the same method. A process-wide setting, on purpose: no
 *   part of pkiva may ever wait for a human at a terminal.
 * - Failure modes: wrong PIN or a missing token surface at the first key load as UTIL_EHSM (see
 *   key.c); a token that fails mid-operation makes the work function return UTIL_EHSM, which marks
 *   the hsm unavailable until a signature succeeds again (hsm_probe_blocking can be used to check).
 *   A failure that key.c puts down to one key (a signature that does not verify, a mechanism the
 *   token refuses for that key; the signing path and its checks are in key.c's DESIGN comment)
 *   sets hsm__key_fault instead: job_work then counts it for that key only, and the monitor runs
 *   the key's self-check again each turn until it passes. When the provider cannot start the
 *   module, p11diag.c loads it directly and logs the failing step with its CK_RV.
 * - Outages and healing (tests/fault measures this with a fault-injecting module). When a token
 *   is removed, or a network HSM loses its link or restarts, the module closes every session and
 *   forgets the login; afterwards the object handles inside our EVP_PKEYs are dead too (SoftHSM2
 *   and real HSMs answer CKR_OBJECT_HANDLE_INVALID). pkcs11-provider 1.0 copes with the sessions
 *   (C_GetSessionInfo fails, it opens and logs into a new one) but never renews a key's object
 *   handle, so without help signing would fail until a restart. The monitor thread
 *   (hsm_monitor_start) therefore, while the hsm is marked down, looks every live key up again
 *   (key.c keeps them in a list) and swaps each key->pkey for the fresh handle. The swap takes
 *   the write side of swap_lock and every job runs under its read side, so no job sees a pkey
 *   change or freed under it; lock order is swap_lock before keys_mutex, everywhere. The monitor
 *   also probes an idle token every interval so that /readyz notices an outage without traffic,
 *   and while it runs, work submitted during an outage is refused at once (a hung network HSM
 *   would otherwise fill the queue with jobs that each wait for a timeout).
 * - When reloading does not heal: a module can lose track of its objects for good while the
 *   token is still there. SoftHSM2 2.6.1 that could not open its token files once (the process
 *   out of descriptors: a connection flood, issue 15) marks the token's index invalid and finds
 *   no object again until C_Finalize and C_Initialize; the monitor then logged "not found" every
 *   500 ms until an operator restarted pkiva. Rebuilding the provider in a new library context
 *   would not reset that: with no-deinit (which SoftHSM2 needs) pkcs11-provider never finalises
 *   the module, a second provider instance shares the same initialised module state, and every
 *   key, template and signing context that ocsp/, crl/ and tsa/ built holds the old context.
 *   What does reset every module is a new process. So after restart_after_ms of reloads failing
 *   in a row, hsm__keys_reload logs why and _exits with HSM_EXIT_STALE (75) for the supervisor
 *   (systemd Restart=on-failure) to start pkiva afresh; _exit because everything that must
 *   survive is already durable in the store, which is built to survive a kill -9 at any moment,
 *   and atexit handlers on other threads' objects are what crashes SoftHSM2 at exit. The price:
 *   an outage longer than restart_after_ms (a network HSM away for minutes) also ends in a
 *   restart, and a process that cannot load its keys does not start, so pre-signed OCSP answers
 *   stop until the token is back; set restart_after = 0 where such outages are expected and a
 *   module that never wedges is used. */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np: a reload must not starve behind readers */
#include "hsm_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <openssl/ui.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HSM_SESSIONS_MAX 256
#define HSM_MONITOR_RETRY_MS 500 /* while down: how often the monitor tries to heal */
#define HSM_PIN_FILE_MAX 4096    /* a PIN file larger than this is not a PIN file */

/* The hsm whose job the current thread is running, so that hsm_probe_blocking called from inside a
 * job signs right there instead of queueing behind itself. */
static _Thread_local const struct hsm *job_hsm;

static const char *const alg_names[] = {
    [HSM_EC_P256] = "ec-p256",   [HSM_EC_P384] = "ec-p384",   [HSM_RSA_2048] = "rsa-2048",
    [HSM_RSA_3072] = "rsa-3072", [HSM_RSA_4096] = "rsa-4096",
};

int hsm_alg_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int alg = HSM_EC_P256; alg <= HSM_RSA_4096; alg++)
        if (strcmp(alg_names[alg], name) == 0)
            return alg;
    return -1;
}

const char *hsm_alg_name(int alg)
{
    if (alg < HSM_EC_P256 || alg > HSM_RSA_4096)
        return NULL;
    return alg_names[alg];
}

static pthread_once_t no_prompt_once = PTHREAD_ONCE_INIT;
static UI_METHOD *no_prompt;

/* Answers every input request with an empty string: pkcs11-provider takes an empty PIN as a
 * cancelled login, whereas a failed read would make it fall back to its own terminal prompt. */
static int no_prompt_reader(UI *ui, UI_STRING *uis)
{
    int *asked = NULL;

    switch (UI_get_string_type(uis)) {
    case UIT_PROMPT:
    case UIT_VERIFY:
        asked = UI_get0_user_data(ui);
        if (asked != NULL)
            *asked = 1;
        return UI_set_result(ui, uis, "") == 0 ? 1 : 0;
    default: return 1;
    }
}

static void no_prompt_init(void)
{
    no_prompt = UI_create_method("pkiva-no-prompt");
    if (no_prompt != NULL && UI_method_set_reader(no_prompt, no_prompt_reader) != 0) {
        UI_destroy_method(no_prompt);
        no_prompt = NULL;
    }
    if (no_prompt != NULL)
        UI_set_default_method(no_prompt);
}

UI_METHOD *hsm__no_prompt_ui(void)
{
    (void)pthread_once(&no_prompt_once, no_prompt_init); /* only fails on invalid arguments */
    return no_prompt;
}

static uint64_t mono_us(void)
{
    struct timespec ts;
    (void)clock_gettime(CLOCK_MONOTONIC, &ts); /* CLOCK_MONOTONIC cannot fail on Linux */
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- configuration -------------------------------------------------------------------------- */

/* The PIN file must exist, be a regular file and not be readable or writable by group or other.
 * The file is opened and checked through the descriptor, so the checks apply to what was opened;
 * its content is never read here. */
static int check_pin_file(const char *path)
{
    struct stat st;
    int fd = -1;
    int rc = UTIL_OK;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "PIN file %s cannot be opened: %s", path, strerror(err));
        rc = UTIL_EPERM;
        goto out;
    }
    if (fstat(fd, &st) != 0) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "PIN file %s: fstat: %s", path, strerror(err));
        rc = UTIL_EPERM;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        UTIL_ERROR(HSM_MOD, "PIN file %s is not a regular file", path);
        rc = UTIL_EPERM;
        goto out;
    }
    if ((st.st_mode & (S_IRGRP | S_IWGRP | S_IROTH | S_IWOTH)) != 0) {
        UTIL_ERROR(HSM_MOD,
                   "PIN file %s has mode %04o: group/other may access it; chmod 600 (or 400) it",
                   path, (unsigned)(st.st_mode & 07777));
        rc = UTIL_EPERM;
        goto out;
    }
    if (st.st_size == 0 || st.st_size > HSM_PIN_FILE_MAX) {
        UTIL_ERROR(HSM_MOD, "PIN file %s is %s", path, st.st_size == 0 ? "empty" : "too large");
        rc = UTIL_ECONFIG;
        goto out;
    }
out:
    if (fd >= 0)
        (void)close(fd); /* read-only descriptor: nothing to flush */
    return rc;
}

static int check_regular_file(const char *what, const char *path)
{
    struct stat st;

    if (stat(path, &st) != 0) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "%s %s: %s", what, path, strerror(err));
        return UTIL_ECONFIG;
    }
    if (!S_ISREG(st.st_mode)) {
        UTIL_ERROR(HSM_MOD, "%s %s is not a regular file", what, path);
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

/* Writes value into an OpenSSL config file so that it reads back unchanged: the config parser
 * expands $var and treats #, quotes and backslashes specially, so those are escaped. Control
 * characters and leading or trailing blanks cannot be represented and are refused. */
static int conf_put_value(FILE *f, const char *key, const char *value)
{
    size_t len = strlen(value);

    if (len == 0 || value[0] == ' ' || value[0] == '\t' || value[len - 1] == ' ' ||
        value[len - 1] == '\t') {
        UTIL_ERROR(HSM_MOD, "%s: empty value or leading/trailing blanks are not supported", key);
        return UTIL_ECONFIG;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f) {
            UTIL_ERROR(HSM_MOD, "%s: control characters are not supported", key);
            return UTIL_ECONFIG;
        }
    }
    if (fprintf(f, "%s = ", key) < 0)
        return UTIL_EIO;
    for (size_t i = 0; i < len; i++) {
        char c = value[i];
        if ((c == '\\' || c == '$' || c == '#' || c == '"' || c == '\'') && fputc('\\', f) == EOF)
            return UTIL_EIO;
        if (fputc(c, f) == EOF)
            return UTIL_EIO;
    }
    if (fputc('\n', f) == EOF)
        return UTIL_EIO;
    return UTIL_OK;
}

/* Sessions the provider may keep open beyond one per signing thread: the login session, one per
 * loaded key (a few per issuer and TSA unit) and the monitor's probe. */
#define HSM_SESSIONS_SPARE 16

static int write_provider_conf(FILE *f, const struct hsm_config *cfg)
{
    char pin_ref[PATH_MAX + 8];
    char sessions[16];
    int rc = UTIL_OK;
    int n;

    n = snprintf(pin_ref, sizeof(pin_ref), "file:%s", cfg->pin_file);
    if (n < 0 || (size_t)n >= sizeof(pin_ref)) {
        UTIL_ERROR(HSM_MOD, "PIN file path too long");
        return UTIL_ECONFIG;
    }
    (void)snprintf(sessions, sizeof(sessions), "%d", cfg->sessions + HSM_SESSIONS_SPARE);

    /* config_diagnostics makes a provider that fails to activate fail the whole load. */
    if (fputs("config_diagnostics = 1\n"
              "openssl_conf = openssl_init\n"
              "[openssl_init]\n"
              "providers = provider_sect\n"
              "[provider_sect]\n"
              "default = default_sect\n"
              "pkcs11 = pkcs11_sect\n"
              "[default_sect]\n"
              "activate = 1\n"
              "[pkcs11_sect]\n",
              f) == EOF)
        return UTIL_EIO;
    if (cfg->provider_path != NULL) {
        rc = conf_put_value(f, "module", cfg->provider_path);
        if (rc != UTIL_OK)
            return rc;
    }
    rc = conf_put_value(f, "pkcs11-module-path", cfg->module_path);
    if (rc != UTIL_OK)
        return rc;
    rc = conf_put_value(f, "pkcs11-module-token-pin", pin_ref);
    if (rc != UTIL_OK)
        return rc;
    rc = conf_put_value(f, "pkcs11-module-load-behavior", "early");
    if (rc != UTIL_OK)
        return rc;
    rc = conf_put_value(f, "pkcs11-module-cache-sessions", sessions);
    if (rc != UTIL_OK)
        return rc;
    if (cfg->init_args != NULL && cfg->init_args[0] != '\0') {
        rc = conf_put_value(f, "pkcs11-module-init-args", cfg->init_args);
        if (rc != UTIL_OK)
            return rc;
    }
    if (cfg->softhsm_no_deinit) {
        rc = conf_put_value(f, "pkcs11-module-quirks", "no-deinit");
        if (rc != UTIL_OK)
            return rc;
    }
    if (fputs("activate = 1\n", f) == EOF)
        return UTIL_EIO;
    return UTIL_OK;
}

/* Loads the provider configuration into libctx through a private temporary file. */
static int load_provider_conf(OSSL_LIB_CTX *libctx, const struct hsm_config *cfg)
{
    const char *tmpdir = getenv("TMPDIR");
    char path[PATH_MAX];
    FILE *f = NULL;
    int fd = -1;
    int created = 0;
    int rc = UTIL_OK;
    int n;

    if (tmpdir == NULL || tmpdir[0] == '\0')
        tmpdir = "/tmp";
    n = snprintf(path, sizeof(path), "%s/pkiva-hsm-XXXXXX", tmpdir);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        UTIL_ERROR(HSM_MOD, "TMPDIR path too long");
        rc = UTIL_ECONFIG;
        goto out;
    }
    fd = mkstemp(path); /* creates the file with mode 0600 */
    if (fd < 0) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "cannot create provider config in %s: %s", tmpdir, strerror(err));
        rc = util_errno(err);
        goto out;
    }
    created = 1;
    f = fdopen(fd, "w");
    if (f == NULL) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "fdopen %s: %s", path, strerror(err));
        rc = util_errno(err);
        goto out;
    }
    fd = -1; /* now owned by f */
    rc = write_provider_conf(f, cfg);
    if (rc != UTIL_OK)
        goto out;
    n = fclose(f);
    f = NULL;
    if (n != 0) {
        int err = errno;
        UTIL_ERROR(HSM_MOD, "writing provider config %s: %s", path, strerror(err));
        rc = util_errno(err);
        goto out;
    }
    ERR_clear_error();
    if (!OSSL_LIB_CTX_load_config(libctx, path)) {
        util_log_openssl(
            UTIL_LOG_ERROR, HSM_MOD, "pkcs11 provider failed to start (provider %s, module %s)",
            cfg->provider_path != NULL ? cfg->provider_path : "pkcs11", cfg->module_path);
        /* The provider's own error rarely says which PKCS#11 call failed: ask the module. */
        hsm__module_diagnose(cfg->module_path, cfg->init_args);
        rc = UTIL_EHSM;
        goto out;
    }
    if (!OSSL_PROVIDER_available(libctx, "pkcs11")) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "pkcs11 provider not available (module %s)",
                         cfg->module_path);
        hsm__module_diagnose(cfg->module_path, cfg->init_args);
        rc = UTIL_EHSM;
        goto out;
    }
    /* Loading a config may leave harmless noise on this thread's error queue (Debian's OpenSSL
     * probes engines it does not ship); no later failure may be reported with it. */
    ERR_clear_error();
out:
    if (f != NULL)
        (void)fclose(f); /* error path: the file is removed below anyway */
    if (fd >= 0)
        (void)close(fd); /* error path: the file is removed below anyway */
    if (created && unlink(path) != 0) {
        int err = errno;
        UTIL_WARN(HSM_MOD, "cannot remove temporary provider config %s: %s", path, strerror(err));
    }
    return rc;
}

static int check_config(const struct hsm_config *cfg)
{
    if (cfg->module_path == NULL || cfg->pin_file == NULL) {
        UTIL_ERROR(HSM_MOD, "module_path and pin_file are required");
        return UTIL_ECONFIG;
    }
    if (cfg->sessions < 1 || cfg->sessions > HSM_SESSIONS_MAX) {
        UTIL_ERROR(HSM_MOD, "sessions must be within 1..%d (got %d)", HSM_SESSIONS_MAX,
                   cfg->sessions);
        return UTIL_ECONFIG;
    }
    if (cfg->queue_max < 1) {
        UTIL_ERROR(HSM_MOD, "queue_max must be >= 1 (got %d)", cfg->queue_max);
        return UTIL_ECONFIG;
    }
    if (cfg->ecdsa_verify_every < HSM_VERIFY_NONE) {
        UTIL_ERROR(HSM_MOD, "ecdsa_verify_every must be >= 1, 0 (default) or HSM_VERIFY_NONE");
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

/* ---- open / close --------------------------------------------------------------------------- */

/* Initialises the locks of a zeroed hsm; on failure none is left initialised. */
static int init_locks(struct hsm *hsm)
{
    pthread_rwlockattr_t rwattr;
    pthread_condattr_t cattr;
    int rc = -1;

    if (pthread_rwlockattr_init(&rwattr) != 0)
        return -1;
    (void)pthread_rwlockattr_setkind_np(&rwattr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    if (pthread_condattr_init(&cattr) != 0) {
        (void)pthread_rwlockattr_destroy(&rwattr); /* cannot fail on an initialised attr */
        return -1;
    }
    (void)pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC); /* valid clock: cannot fail */
    if (pthread_rwlock_init(&hsm->swap_lock, &rwattr) != 0)
        goto out;
    if (pthread_mutex_init(&hsm->keys_mutex, NULL) != 0)
        goto out_rw;
    if (pthread_mutex_init(&hsm->monitor_mutex, NULL) != 0)
        goto out_keys;
    if (pthread_cond_init(&hsm->monitor_cond, &cattr) != 0)
        goto out_monitor;
    rc = 0;
    goto out;
out_monitor:
    (void)pthread_mutex_destroy(&hsm->monitor_mutex); /* unused: cannot fail */
out_keys:
    (void)pthread_mutex_destroy(&hsm->keys_mutex); /* unused: cannot fail */
out_rw:
    (void)pthread_rwlock_destroy(&hsm->swap_lock); /* unused: cannot fail */
out:
    (void)pthread_condattr_destroy(&cattr);    /* cannot fail on an initialised attr */
    (void)pthread_rwlockattr_destroy(&rwattr); /* cannot fail on an initialised attr */
    return rc;
}

static void monitor_stop(struct hsm *hsm)
{
    if (!hsm->monitor_started)
        return;
    pthread_mutex_lock(&hsm->monitor_mutex);
    hsm->monitor_stop = 1;
    pthread_cond_signal(&hsm->monitor_cond);
    pthread_mutex_unlock(&hsm->monitor_mutex);
    (void)pthread_join(hsm->monitor, NULL); /* our own joinable thread */
    hsm->monitor_started = 0;
    atomic_store(&hsm->monitor_running, 0);
}

/* Each signing thread keeps its signing contexts (see sign_ctx_get in key.c). */
static int sign_thread_init(void *pool_ctx, void **thread_state)
{
    (void)pool_ctx;
    hsm__thread_cache = calloc(1, sizeof(*hsm__thread_cache));
    *thread_state = hsm__thread_cache;
    return hsm__thread_cache != NULL ? UTIL_OK : UTIL_ENOMEM;
}

static void sign_thread_fini(void *pool_ctx, void *thread_state)
{
    hsm__sign_cache_free(pool_ctx, thread_state);
    hsm__thread_cache = NULL;
}

int hsm_open(const struct hsm_config *cfg, struct hsm **out)
{
    struct hsm *hsm = NULL;
    const char *env_module = NULL;
    struct util_pool_config pool_cfg;
    int rc = UTIL_OK;

    if (cfg == NULL || out == NULL)
        return UTIL_EINVAL;
    *out = NULL;
    rc = check_config(cfg);
    if (rc != UTIL_OK)
        goto out;
    rc = check_regular_file("PKCS#11 module", cfg->module_path);
    if (rc != UTIL_OK)
        goto out;
    if (cfg->provider_path != NULL) {
        rc = check_regular_file("pkcs11-provider", cfg->provider_path);
        if (rc != UTIL_OK)
            goto out;
    }
    rc = check_pin_file(cfg->pin_file);
    if (rc != UTIL_OK)
        goto out;
    /* pkcs11-provider lets this variable override the configured module path. */
    env_module = getenv("PKCS11_PROVIDER_MODULE");
    if (env_module != NULL && strcmp(env_module, cfg->module_path) != 0)
        UTIL_WARN(HSM_MOD, "PKCS11_PROVIDER_MODULE=%s overrides the configured module %s",
                  env_module, cfg->module_path);

    if (hsm__no_prompt_ui() == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    hsm = calloc(1, sizeof(*hsm));
    if (hsm == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    if (init_locks(hsm) != 0) {
        free(hsm);
        hsm = NULL;
        rc = UTIL_ENOMEM;
        goto out;
    }
    atomic_init(&hsm->down_since_ms, 0);
    atomic_init(&hsm->signatures, 0);
    atomic_init(&hsm->errors, 0);
    atomic_init(&hsm->sign_us_total, 0);
    atomic_init(&hsm->last_ok_ms, 0);
    atomic_init(&hsm->shed, 0);
    atomic_init(&hsm->key_reloads, 0);
    atomic_init(&hsm->monitor_running, 0);
    atomic_init(&hsm->verified, 0);
    atomic_init(&hsm->bad_signatures, 0);
    atomic_init(&hsm->key_errors, 0);
    atomic_init(&hsm->direct_signatures, 0);
    hsm->ecdsa_verify_every =
        cfg->ecdsa_verify_every == 0 ? HSM_ECDSA_VERIFY_DEFAULT : cfg->ecdsa_verify_every;
    hsm->restart_after_ms = cfg->restart_after_ms;
    hsm->module_path = strdup(cfg->module_path);
    if (cfg->init_args != NULL && cfg->init_args[0] != '\0')
        hsm->init_args = strdup(cfg->init_args);
    if (hsm->module_path == NULL ||
        (cfg->init_args != NULL && cfg->init_args[0] != '\0' && hsm->init_args == NULL)) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    ERR_clear_error();
    hsm->libctx = OSSL_LIB_CTX_new();
    if (hsm->libctx == NULL) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "OSSL_LIB_CTX_new failed");
        rc = UTIL_ENOMEM;
        goto out;
    }
    rc = load_provider_conf(hsm->libctx, cfg);
    if (rc != UTIL_OK)
        goto out;
    ERR_clear_error();
    if (!EVP_set_default_properties(hsm->libctx, "?provider=default")) {
        util_log_openssl(UTIL_LOG_ERROR, HSM_MOD, "EVP_set_default_properties failed");
        rc = UTIL_ECRYPTO;
        goto out;
    }

    hsm__direct_open(hsm, !cfg->provider_only);
    memset(&pool_cfg, 0, sizeof(pool_cfg));
    pool_cfg.name = "hsm-sign";
    pool_cfg.thread_init = sign_thread_init;
    pool_cfg.thread_fini = sign_thread_fini;
    pool_cfg.ctx = hsm;
    pool_cfg.threads = cfg->sessions;
    pool_cfg.queue_max = cfg->queue_max;
    rc = util_pool_new(&pool_cfg, &hsm->pool);
    if (rc != UTIL_OK) {
        UTIL_ERROR(HSM_MOD, "cannot start the signing pool: %s", util_strerror(rc));
        goto out;
    }
    UTIL_INFO(HSM_MOD, "opened PKCS#11 module %s: %d signing threads, queue %d", cfg->module_path,
              cfg->sessions, cfg->queue_max);
    *out = hsm;
    hsm = NULL;
out:
    hsm_close(hsm);
    return rc;
}

void hsm_close(struct hsm *hsm)
{
    if (hsm == NULL)
        return;
    /* The monitor first (it submits probes), then the pool: no job may run against a library
     * context that is going away. Keys the caller still holds are detached, not freed. */
    monitor_stop(hsm);
    hsm_key_free(hsm->probe_key);
    hsm__keys_detach(hsm);
    util_pool_free(hsm->pool);
    hsm__direct_close(hsm);
    OSSL_LIB_CTX_free(hsm->libctx);
    free(hsm->module_path);
    free(hsm->init_args);
    (void)pthread_cond_destroy(&hsm->monitor_cond);   /* nobody waits any more */
    (void)pthread_mutex_destroy(&hsm->monitor_mutex); /* unlocked: cannot fail */
    (void)pthread_mutex_destroy(&hsm->keys_mutex);    /* unlocked: cannot fail */
    (void)pthread_rwlock_destroy(&hsm->swap_lock);    /* unlocked: cannot fail */
    free(hsm);
}

OSSL_LIB_CTX *hsm_libctx(struct hsm *hsm)
{
    return hsm->libctx;
}

struct util_pool *hsm_pool(struct hsm *hsm)
{
    return hsm->pool;
}

/* ---- outage bookkeeping --------------------------------------------------------------------- */

void hsm_note_result(struct hsm *hsm, int result)
{
    if (result == UTIL_EHSM) {
        int64_t expected = 0;
        int64_t now = util_mono_ms();

        (void)atomic_fetch_add_explicit(&hsm->errors, 1, memory_order_relaxed); /* a counter */
        if (now < 1)
            now = 1; /* 0 means "available" */
        if (atomic_compare_exchange_strong(&hsm->down_since_ms, &expected, now))
            UTIL_ERROR(HSM_MOD,
                       "HSM unavailable: a PKCS#11 operation failed; signing fails until the "
                       "token answers again");
        return;
    }
    if (result == UTIL_OK) {
        int64_t since;

        atomic_store_explicit(&hsm->last_ok_ms, util_mono_ms(), memory_order_relaxed);
        since = atomic_exchange(&hsm->down_since_ms, 0);
        if (since != 0)
            UTIL_WARN(HSM_MOD, "HSM available again after %lld ms",
                      (long long)(util_mono_ms() - since));
    }
    /* Other results (queue full, bad input, shutdown) say nothing about the token. */
}

int hsm_available(const struct hsm *hsm)
{
    return atomic_load(&((struct hsm *)hsm)->down_since_ms) == 0;
}

void hsm_stats_get(const struct hsm *hsm, struct hsm_stats *out)
{
    struct hsm *h = (struct hsm *)hsm; /* atomics need a non-const object to load from */

    out->signatures = atomic_load_explicit(&h->signatures, memory_order_relaxed);
    out->errors = atomic_load_explicit(&h->errors, memory_order_relaxed);
    out->sign_us_total = atomic_load_explicit(&h->sign_us_total, memory_order_relaxed);
    out->rejected =
        util_pool_rejected(h->pool) + atomic_load_explicit(&h->shed, memory_order_relaxed);
    out->queue_depth = util_pool_queue_depth(h->pool);
    out->key_reloads = atomic_load_explicit(&h->key_reloads, memory_order_relaxed);
    out->verified = atomic_load_explicit(&h->verified, memory_order_relaxed);
    out->bad_signatures = atomic_load_explicit(&h->bad_signatures, memory_order_relaxed);
    out->key_errors = atomic_load_explicit(&h->key_errors, memory_order_relaxed);
    out->direct = atomic_load_explicit(&h->direct_signatures, memory_order_relaxed);
}

/* ---- the signing pool ----------------------------------------------------------------------- */

struct hsm_job {
    struct hsm *hsm;
    util_pool_work_fn work;
    util_pool_done_fn done;
    void *arg;
};

/* Runs the caller's work on a signing thread, timed, and books its result. */
static int job_work(void *thread_state, void *opaque)
{
    struct hsm_job *job = opaque;
    const struct hsm *outer = job_hsm;
    uint64_t start = mono_us();
    int rc;
    int outer_fault = hsm__key_fault, outer_refused = hsm__refused, outer_signed = hsm__signed;
    int refused_only;

    job_hsm = job->hsm;
    hsm__key_fault = 0;
    hsm__refused = 0;
    hsm__signed = 0;
    /* Nested (a probe inside a job) runs under the outer job's read lock already. */
    if (outer != job->hsm)
        (void)pthread_rwlock_rdlock(&job->hsm->swap_lock); /* fails only on misuse */
    rc = job->work(thread_state, job->arg);
    if (outer != job->hsm)
        (void)pthread_rwlock_unlock(&job->hsm->swap_lock); /* held: cannot fail */
    job_hsm = outer;
    refused_only = hsm__refused && !hsm__signed;
    if ((rc == UTIL_EHSM && hsm__key_fault) || (rc == UTIL_OK && refused_only)) {
        /* One key's problem, already counted and logged for that key: it says nothing about
         * the token (see hsm__refused in hsm_int.h). */
        hsm__key_fault = outer_fault;
        hsm__refused = outer_refused;
        hsm__signed = outer_signed;
        return rc;
    }
    hsm__key_fault = outer_fault;
    hsm__refused = outer_refused;
    hsm__signed = outer_signed;
    if (rc == UTIL_OK) {
        /* Counters only: relaxed ordering is enough. */
        (void)atomic_fetch_add_explicit(&job->hsm->signatures, 1, memory_order_relaxed);
        (void)atomic_fetch_add_explicit(&job->hsm->sign_us_total, mono_us() - start,
                                        memory_order_relaxed);
    }
    hsm_note_result(job->hsm, rc);
    return rc;
}

static void job_done(void *opaque, int result)
{
    struct hsm_job *job = opaque;
    util_pool_done_fn done = job->done;
    void *arg = job->arg;

    free(job);
    if (done != NULL)
        done(arg, result);
}

/* While the monitor runs and the token is down, new work is refused at once (see DESIGN). */
static int shed_while_down(struct hsm *hsm)
{
    if (!atomic_load(&hsm->monitor_running) || hsm_available(hsm))
        return 0;
    (void)atomic_fetch_add_explicit(&hsm->shed, 1, memory_order_relaxed); /* a counter */
    return 1;
}

int hsm_submit(struct hsm *hsm, struct util_pool_port *port, util_pool_work_fn work,
               util_pool_done_fn done, void *arg)
{
    struct hsm_job *job = NULL;
    int rc = UTIL_OK;

    if (hsm == NULL || work == NULL)
        return UTIL_EINVAL;
    if (shed_while_down(hsm))
        return UTIL_EHSM;
    job = malloc(sizeof(*job));
    if (job == NULL)
        return UTIL_ENOMEM;
    job->hsm = hsm;
    job->work = work;
    job->done = done;
    job->arg = arg;
    rc = util_pool_submit(hsm->pool, port, job_work, job_done, job);
    if (rc != UTIL_OK)
        free(job); /* on error util_pool never calls job_done */
    return rc;
}

/* hsm_run_sync without the shedding: the monitor's probes must reach a token marked down. */
static int run_sync(struct hsm *hsm, util_pool_work_fn work, void *arg)
{
    struct hsm_job job;

    job.hsm = hsm;
    job.work = work;
    job.done = NULL;
    job.arg = arg;
    return util_pool_run_sync(hsm->pool, job_work, &job);
}

int hsm_run_sync(struct hsm *hsm, util_pool_work_fn work, void *arg)
{
    if (hsm == NULL || work == NULL)
        return UTIL_EINVAL;
    if (shed_while_down(hsm))
        return UTIL_EHSM;
    return run_sync(hsm, work, arg);
}

/* ---- probe ---------------------------------------------------------------------------------- */

struct probe {
    struct hsm *hsm;
    const struct hsm_key *key;
};

static const unsigned char probe_data[] = "pkiva hsm probe";

static int probe_work(void *thread_state, void *opaque)
{
    struct probe *probe = opaque;
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    int rc;

    rc = hsm_sign_blocking(probe->hsm, probe->key, probe_data, sizeof(probe_data) - 1, &sig,
                           &sig_len);
    free(sig);
    return rc;
}

int hsm_probe_blocking(struct hsm *hsm, const struct hsm_key *key)
{
    struct probe probe = {hsm, key};

    if (hsm == NULL || key == NULL)
        return UTIL_EINVAL;
    /* Inside one of this hsm's jobs, sign right here: queueing would wait behind ourselves, and the
     * job wrapper books the result. */
    if (job_hsm == hsm)
        return probe_work(NULL, &probe);
    return run_sync(hsm, probe_work, &probe);
}

/* ---- monitor -------------------------------------------------------------------------------- */

/* Waits up to ms on the monitor's condition; returns 1 when asked to stop. */
static int monitor_wait(struct hsm *hsm, int ms)
{
    struct timespec until;
    int stop;

    util_mono_deadline(&until, ms);
    pthread_mutex_lock(&hsm->monitor_mutex);
    while (!hsm->monitor_stop &&
           pthread_cond_timedwait(&hsm->monitor_cond, &hsm->monitor_mutex, &until) == 0)
        ; /* a spurious wake-up: wait for the rest */
    stop = hsm->monitor_stop;
    pthread_mutex_unlock(&hsm->monitor_mutex);
    return stop;
}

static void *monitor_main(void *opaque)
{
    struct hsm *hsm = opaque;
    int interval = hsm->monitor_interval_ms;
    int retry = interval < HSM_MONITOR_RETRY_MS ? interval : HSM_MONITOR_RETRY_MS;

    util_thread_name("hsm-monitor", -1);
    while (!monitor_wait(hsm, hsm_available(hsm) ? interval : retry)) {
        if (hsm_available(hsm))
            hsm__keys_recheck(hsm); /* keys marked unhealthy while serving get a new chance */
        if (!hsm_available(hsm)) {
            /* Fresh handles first: after a real outage the old ones never work again. A failed
             * reload means the token is still away; the next turn tries again. */
            if (hsm__keys_reload(hsm) == UTIL_OK)
                (void)hsm_probe_blocking(hsm, hsm->probe_key); /* booked by the job wrapper */
            continue;
        }
        /* Traffic that succeeded recently proves the token; probe only an idle one. */
        if (util_mono_ms() - atomic_load_explicit(&hsm->last_ok_ms, memory_order_relaxed) <
            interval)
            continue;
        (void)hsm_probe_blocking(hsm, hsm->probe_key); /* booked by the job wrapper */
    }
    return NULL;
}

int hsm_monitor_start(struct hsm *hsm, const char *probe_uri, int interval_ms)
{
    int rc;

    if (hsm == NULL || probe_uri == NULL || interval_ms < 1 || hsm->monitor_started)
        return UTIL_EINVAL;
    rc = hsm_key_load_blocking(hsm, probe_uri, NULL, 0, &hsm->probe_key);
    if (rc != UTIL_OK) {
        UTIL_ERROR(HSM_MOD, "monitor: probe key %s: %s", probe_uri, util_strerror(rc));
        return rc;
    }
    /* Not a served key: left out of /readyz and the per-key metrics (its twin is listed). */
    atomic_store(&((struct hsm__key *)hsm->probe_key)->probe, 1);
    hsm->monitor_interval_ms = interval_ms;
    hsm->monitor_stop = 0;
    atomic_store(&hsm->monitor_running, 1);
    if (pthread_create(&hsm->monitor, NULL, monitor_main, hsm) != 0) {
        atomic_store(&hsm->monitor_running, 0);
        hsm_key_free(hsm->probe_key);
        hsm->probe_key = NULL;
        return UTIL_ENOMEM;
    }
    hsm->monitor_started = 1;
    UTIL_INFO(HSM_MOD, "monitor started: probe every %d ms when idle, heal every %d ms when down",
              interval_ms, interval_ms < HSM_MONITOR_RETRY_MS ? interval_ms : HSM_MONITOR_RETRY_MS);
    return UTIL_OK;
}

int hsm_metrics(struct hsm *hsm, char *buf, size_t len)
{
    struct hsm_stats hs;
    int n, more;
    hsm_stats_get(hsm, &hs);
    n = snprintf(buf, len,
                 "# TYPE pkiva_hsm_signatures_total counter\n"
                 "pkiva_hsm_signatures_total %llu\n"
                 "# TYPE pkiva_hsm_errors_total counter\n"
                 "pkiva_hsm_errors_total %llu\n"
                 "# TYPE pkiva_hsm_queue_depth gauge\n"
                 "pkiva_hsm_queue_depth %d\n"
                 "# TYPE pkiva_hsm_rejected_total counter\n"
                 "pkiva_hsm_rejected_total %llu\n"
                 "# TYPE pkiva_hsm_sign_seconds_avg gauge\n"
                 "pkiva_hsm_sign_seconds_avg %.6f\n"
                 "# TYPE pkiva_hsm_available gauge\n"
                 "pkiva_hsm_available %d\n"
                 "# TYPE pkiva_hsm_verified_total counter\n"
                 "pkiva_hsm_verified_total %llu\n"
                 "# TYPE pkiva_hsm_bad_signatures_total counter\n"
                 "pkiva_hsm_bad_signatures_total %llu\n"
                 "# TYPE pkiva_hsm_key_errors_total counter\n"
                 "pkiva_hsm_key_errors_total %llu\n"
                 "# TYPE pkiva_hsm_keys_unhealthy gauge\n"
                 "pkiva_hsm_keys_unhealthy %d\n"
                 "# TYPE pkiva_hsm_direct_signatures_total counter\n"
                 "pkiva_hsm_direct_signatures_total %llu\n",
                 (unsigned long long)hs.signatures, (unsigned long long)hs.errors, hs.queue_depth,
                 (unsigned long long)hs.rejected,
                 hs.signatures ? (double)hs.sign_us_total / (double)hs.signatures / 1e6 : 0.0,
                 hsm_available(hsm), (unsigned long long)hs.verified,
                 (unsigned long long)hs.bad_signatures, (unsigned long long)hs.key_errors,
                 hsm_keys_unhealthy(hsm, NULL, NULL, 0), (unsigned long long)hs.direct);
    if (n < 0 || (size_t)n >= len)
        return UTIL_EINVAL;
    more = hsm_keys_metrics(hsm, buf + n, len - (size_t)n);
    return more < 0 ? UTIL_EINVAL : n + more;
}
