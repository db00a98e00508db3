/* SPDX-License-Identifier: Apache-2.0 */
/* `[server] user`: pkiva serve started as root switches to an unprivileged user once its listeners
 * are bound and before the first connection is accepted (an http start hook), after its token
 * session is open and its keys are loaded, and before the threads that open files later (OCSP
 * pre-signer, CRL publisher, change-feed poller) start. Split in two so that a wrong setting
 * fails before anything is opened: the lookup runs first, the switch later. */
#include "cli_int.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#include <util/util.h>

#define MOD "serve"

int cli__privdrop_prepare(const struct cli_config *cfg, struct cli_privdrop *out)
{
    struct passwd pw;
    struct passwd *found = NULL;
    char buf[4096];
    int rc;

    memset(out, 0, sizeof(*out));
    out->cfg = cfg;
    if (cfg->run_user[0] == '\0')
        return UTIL_OK;
    if (geteuid() != 0) {
        UTIL_ERROR(MOD,
                   "[server] user = %s needs pkiva serve to be started as root (it is "
                   "running as uid %ld); remove the directive to run as the current user",
                   cfg->run_user, (long)geteuid());
        return UTIL_ECONFIG;
    }
    rc = getpwnam_r(cfg->run_user, &pw, buf, sizeof(buf), &found);
    if (rc != 0 || found == NULL) {
        UTIL_ERROR(MOD, "[server] user = %s: no such user%s%s", cfg->run_user, rc ? ": " : "",
                   rc ? strerror(rc) : "");
        return UTIL_ECONFIG;
    }
    if (pw.pw_uid == 0) {
        UTIL_ERROR(MOD, "[server] user = %s is root: name an unprivileged user", cfg->run_user);
        return UTIL_ECONFIG;
    }
    out->active = 1;
    out->uid = pw.pw_uid;
    out->gid = pw.pw_gid;
    /* The CRL publish folder is the one thing serve creates (as root, before the switch) that the
     * user must write later: create it now, for the user. An existing folder is left alone. */
    if (mkdir(cfg->crl.publish_dir, 0755) == 0 &&
        chown(cfg->crl.publish_dir, pw.pw_uid, pw.pw_gid) != 0) {
        UTIL_ERROR(MOD, "cannot give the CRL publish folder %s to user %s: %s",
                   cfg->crl.publish_dir, cfg->run_user, strerror(errno));
        return UTIL_ECONFIG;
    }
    return UTIL_OK;
}

int cli__privdrop_apply(void *privdrop)
{
    const struct cli_privdrop *pd = privdrop;
    const struct cli_config *cfg = pd->cfg;
    gid_t groups[1];

    if (!pd->active)
        return UTIL_OK;
    /* Supplementary groups first (they need root), then the group, then the user. glibc applies
     * each to every thread of the process. */
    groups[0] = pd->gid;
    if (setgroups(1, groups) != 0 || setgid(pd->gid) != 0 || setuid(pd->uid) != 0) {
        int err = errno;
        UTIL_ERROR(MOD, "cannot switch to user %s: %s", cfg->run_user, strerror(err));
        return util_errno(err);
    }
    /* The switch must be irreversible: a process that can become root again dropped nothing. */
    if (setuid(0) == 0 || geteuid() != pd->uid || getuid() != pd->uid || getegid() != pd->gid ||
        getgid() != pd->gid) {
        UTIL_ERROR(MOD, "switching to user %s did not drop root privileges", cfg->run_user);
        return UTIL_EPERM;
    }
    UTIL_INFO(MOD, "running as user %s (uid %ld, gid %ld)", cfg->run_user, (long)pd->uid,
              (long)pd->gid);
    return UTIL_OK;
}
