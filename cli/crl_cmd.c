/* SPDX-License-Identifier: Apache-2.0 */
/* `pkiva crl publish`: regenerate CRLs now. With a server running, ask it through the admin API so
 * that the CRL it serves is the new one; with none, generate, sign in the HSM and publish here. */
#define _GNU_SOURCE /* getopt_long */
#include "cli_int.h"

#include <arpa/inet.h>
#include <crl/crl.h>
#include <errno.h>
#include <getopt.h>
#include <hsm/hsm.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <sys/socket.h>
#include <unistd.h>
#include <util/util.h>

static const char help[] =
    "usage: pkiva crl publish [--config FILE | --data DIR] [--issuer NAME]\n\n"
    "Publishes a new full CRL (and delta) for one issuer or all. With the server running the\n"
    "admin API asks it to; otherwise the CRL is generated, signed in the HSM and written to the\n"
    "publish folder and the store here.\n";

/* Asks a running server. Returns 0 done, 1 no server listening, -1 the server refused. */
static int via_admin(const struct cli_config *cfg, const char *issuer)
{
    const struct http_listener_config *l = &cfg->http.listeners[1];
    struct addrinfo hints, *res = NULL;
    char port[16], body[160], req[1024], reply[2048];
    unsigned char *token = NULL;
    size_t token_len = 0;
    int fd = -1, rc = 1, n, status = 0;
    ssize_t got;
    size_t used = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    (void)snprintf(port, sizeof(port), "%d", l->port);
    if (getaddrinfo(l->host, port, &hints, &res) != 0)
        return 1;
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) != 0)
        goto out; /* nobody listening: publish directly */
    rc = -1;
    if (cfg->admin_token_file[0] == '\0' ||
        util_file_read(cfg->admin_token_file, 255, &token, &token_len) != UTIL_OK) {
        fprintf(stderr, "pkiva crl publish: a server is running but the admin token file is "
                        "not readable\n");
        goto out;
    }
    while (token_len > 0 && (token[token_len - 1] == '\n' || token[token_len - 1] == '\r'))
        token_len--;
    token[token_len] = '\0';
    if (issuer != NULL)
        n = snprintf(body, sizeof(body), "{\"issuer\":\"%.63s\"}", issuer);
    else
        n = snprintf(body, sizeof(body), "{}");
    n = snprintf(req, sizeof(req),
                 "POST /admin/crl/publish HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 "%s",
                 l->host, (char *)token, n, body);
    OPENSSL_cleanse(token, token_len);
    if (n < 0 || (size_t)n >= sizeof(req) || write(fd, req, (size_t)n) != n) {
        fprintf(stderr, "pkiva crl publish: cannot talk to the server: %s\n", strerror(errno));
        goto out;
    }
    OPENSSL_cleanse(req, sizeof(req));
    while (used < sizeof(reply) - 1 && (got = read(fd, reply + used, sizeof(reply) - 1 - used)) > 0)
        used += (size_t)got;
    reply[used] = '\0';
    if (sscanf(reply, "HTTP/1.%*d %d", &status) != 1 || status != 202) {
        const char *json = strstr(reply, "\r\n\r\n");
        fprintf(stderr, "pkiva crl publish: the server answered %d %s\n", status,
                json ? json + 4 : "");
        goto out;
    }
    printf("the running server publishes %s now (see its log and /metrics)\n",
           issuer ? issuer : "every issuer's CRL");
    rc = 0;
out:
    free(token);
    if (fd >= 0)
        (void)close(fd); /* nothing buffered to lose */
    freeaddrinfo(res);
    return rc;
}

static int publish_direct(const struct cli_config *cfg, const char *only)
{
    struct hsm_config hcfg;
    struct hsm *hsm = NULL;
    struct store *store = NULL;
    struct crl_config cc;
    int rc, failures = 0, done = 0;

    memset(&hcfg, 0, sizeof(hcfg));
    hcfg.module_path = cfg->hsm_module;
    hcfg.pin_file = cfg->hsm_pin_file;
    hcfg.provider_path = cfg->hsm_provider[0] ? cfg->hsm_provider : NULL;
    hcfg.softhsm_no_deinit = cfg->hsm_no_deinit;
    hcfg.sessions = 1;
    hcfg.queue_max = 4;
    if ((rc = cli__publish_dir_ready(cfg)) != UTIL_OK)
        return 1;
    if ((rc = hsm_open(&hcfg, &hsm)) != UTIL_OK) {
        fprintf(stderr, "pkiva crl publish: cannot open the HSM: %s\n", util_strerror(rc));
        return 1;
    }
    if ((rc = store_open_blocking(cfg->store_path, 0, &store)) != UTIL_OK) {
        fprintf(stderr, "pkiva crl publish: cannot open the store: %s\n", util_strerror(rc));
        hsm_close(hsm);
        return 1;
    }
    cli__crl_config(cfg, &cc);
    for (int i = 0; i < cfg->n_issuers; i++) {
        const struct cli_issuer *c = &cfg->issuers[i];
        struct crl_issuer_config ic;
        struct store_issuer is;
        struct hsm_key *key = NULL;
        struct crl_info full, delta;
        X509 *cert = NULL;
        char actor[96];

        if (only != NULL && strcmp(only, c->name) != 0)
            continue;
        done++;
        memset(&is, 0, sizeof(is));
        memset(&full, 0, sizeof(full));
        memset(&delta, 0, sizeof(delta));
        cert = cli__load_pem_cert(c->cert);
        rc = cert ? hsm_key_load_blocking(hsm, c->key_uri, c->digest[0] ? c->digest : NULL,
                                          c->rsa_pss, &key)
                  : UTIL_ECONFIG;
        if (rc == UTIL_OK)
            rc = store_issuer_get_blocking(store, c->name, &is);
        if (rc == UTIL_OK) {
            memset(&ic, 0, sizeof(ic));
            ic.name = c->name;
            ic.store_issuer_id = is.id;
            ic.cert = cert;
            ic.key = key;
            (void)snprintf(actor, sizeof(actor), "cli:%.80s",
                           getenv("USER") ? getenv("USER") : "unknown");
            rc = crl_publish_blocking(&cc, &ic, hsm, store, cfg->crl_deltas ? CRL_BOTH : CRL_FULL,
                                      actor, &full, &delta);
        }
        if (rc == UTIL_OK) {
            printf("%s: CRL number %lld, %lld entries, %zu bytes, %lld ms -> %s/%s.crl\n",
                   c->name, (long long)full.number, (long long)full.entries, full.der_len,
                   (long long)full.build_ms, cfg->crl_publish_dir, c->name);
            if (cfg->crl_deltas)
                printf("%s: delta CRL number %lld (base %lld), %lld entries\n", c->name,
                       (long long)delta.number, (long long)delta.base_number,
                       (long long)delta.entries);
        } else {
            fprintf(stderr, "pkiva crl publish: %s: %s\n", c->name, util_strerror(rc));
            failures++;
        }
        store_issuer_cleanup(&is);
        hsm_key_free(key);
        X509_free(cert);
    }
    store_close(store);
    hsm_close(hsm);
    if (done == 0) {
        fprintf(stderr, "pkiva crl publish: no issuer named '%s' in the configuration\n", only);
        return 1;
    }
    return failures ? 1 : 0;
}

int cli__cmd_crl(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"issuer", required_argument, NULL, 'i'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *config = NULL, *data_dir = NULL, *issuer = NULL;
    struct cli_config *cfg = NULL;
    int opt, status;

    if (argc < 2 || strcmp(argv[1], "publish") != 0) {
        if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
            fputs(help, stdout);
            return 0;
        }
        fputs(help, stderr);
        return 2;
    }
    optind = 2;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': config = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'i': issuer = optarg; break;
        case 'h': fputs(help, stdout); return 0;
        default: fputs(help, stderr); return 2;
        }
    }
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL)
        return 1;
    if (cli__load_config(config, data_dir, cfg) != 0) {
        free(cfg);
        return 1;
    }
    cli__apply_env(cfg);
    status = via_admin(cfg, issuer);
    if (status == 1)
        status = publish_direct(cfg, issuer);
    else if (status < 0)
        status = 1;
    free(cfg);
    return status;
}
