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
#include <jansson.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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
    "admin API asks it to and this waits until the new CRLs are the ones served; otherwise the\n"
    "CRL is generated, signed in the HSM and written to the publish folder and the store here.\n"
    "Prints, per issuer, the CRL number, its entries and the time taken; exits 1 if any\n"
    "publication failed.\n";

/* With [admin] tls_cert the admin listener speaks HTTPS: a TLS client over the connected socket
 * that verifies the server against server_ca (default client_ca, else the server certificate
 * itself) and the listener's address, and presents client_cert when one is configured. Returns
 * the connection, or NULL after saying why on stderr. */
static SSL *admin_tls_connect(const struct cli_config *cfg, int fd, SSL_CTX **ctx_out)
{
    const char *ca = cfg->admin.server_ca[0]   ? cfg->admin.server_ca
                     : cfg->admin.client_ca[0] ? cfg->admin.client_ca
                                               : cfg->admin.tls_cert;
    const char *host = cfg->http.listeners[1].host;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        goto fail;
    if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
        fprintf(stderr, "pkiva crl publish: cannot load the admin API's CA file %s\n", ca);
        goto fail;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cfg->admin.client_cert[0] != '\0' &&
        (SSL_CTX_use_certificate_chain_file(ctx, cfg->admin.client_cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, cfg->admin.client_key, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "pkiva crl publish: cannot load the client certificate %s or key %s\n",
                cfg->admin.client_cert, cfg->admin.client_key);
        goto fail;
    }
    ssl = SSL_new(ctx);
    /* A wildcard listener is reached on loopback, which the demo certificate names. */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
        host = "127.0.0.1";
    if (ssl == NULL || SSL_set1_host(ssl, host) != 1 || SSL_set_fd(ssl, fd) != 1)
        goto fail;
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "pkiva crl publish: TLS with the admin API failed: %s\n",
                ERR_reason_error_string(ERR_peek_last_error()) != NULL
                    ? ERR_reason_error_string(ERR_peek_last_error())
                    : "handshake failed");
        goto fail;
    }
    *ctx_out = ctx;
    return ssl;
fail:
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return NULL;
}

static int admin_send(SSL *ssl, int fd, const char *data, int len)
{
    if (ssl != NULL)
        return SSL_write(ssl, data, len) == len ? 0 : -1;
    return write(fd, data, (size_t)len) == len ? 0 : -1;
}

static ssize_t admin_recv(SSL *ssl, int fd, char *buf, size_t len)
{
    if (ssl != NULL) {
        int n = SSL_read(ssl, buf, (int)len);
        return n > 0 ? n : 0; /* the server closes after the answer (Connection: close) */
    }
    return read(fd, buf, len);
}

/* Prints the waiting publication's answer ({"crls": [...]}, see the admin API), one line per
 * issuer. Returns 0 when every issuer published, -1 otherwise (reasons on stderr). */
static int print_published(const char *head_end, int status)
{
    json_error_t jerr;
    json_t *root = head_end != NULL ? json_loads(head_end + 4, 0, &jerr) : NULL;
    json_t *list = json_object_get(root, "crls");
    size_t i;
    json_t *o;
    int failed = 0;

    if (!json_is_array(list)) {
        fprintf(stderr, "pkiva crl publish: the server answered %d %s\n", status,
                head_end ? head_end + 4 : "");
        json_decref(root);
        return -1;
    }
    json_array_foreach(list, i, o)
    {
        const char *name = json_string_value(json_object_get(o, "issuer"));
        if (!json_is_true(json_object_get(o, "published"))) {
            fprintf(stderr, "pkiva crl publish: %s: publication failed: %s\n", name ? name : "?",
                    json_string_value(json_object_get(o, "error"))
                        ? json_string_value(json_object_get(o, "error"))
                        : "unknown");
            failed = 1;
            continue;
        }
        printf("%s: CRL number %lld, %lld entries", name ? name : "?",
               (long long)json_integer_value(json_object_get(o, "crl_number")),
               (long long)json_integer_value(json_object_get(o, "entries")));
        if (json_integer_value(json_object_get(o, "delta_crl_number")) > 0)
            printf(", delta CRL number %lld, %lld entries",
                   (long long)json_integer_value(json_object_get(o, "delta_crl_number")),
                   (long long)json_integer_value(json_object_get(o, "delta_entries")));
        printf(", %lld ms: served now\n", (long long)json_integer_value(json_object_get(o, "ms")));
    }
    json_decref(root);
    return failed ? -1 : 0;
}

/* Asks a running server and waits until the new CRLs are served. Returns 0 done, 1 no server
 * listening, -1 the server refused or a publication failed. */
static int via_admin(const struct cli_config *cfg, const char *issuer)
{
    SSL_CTX *tls_ctx = NULL;
    SSL *ssl = NULL;
    const struct http_listener_config *l = &cfg->http.listeners[1];
    struct addrinfo hints, *res = NULL;
    char port[16], body[160], req[1024];
    static char reply[1 << 16];
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
    if (cfg->admin.tls_cert[0] != '\0') {
        ssl = admin_tls_connect(cfg, fd, &tls_ctx);
        if (ssl == NULL)
            goto out;
    }
    if (cfg->admin.token_file[0] == '\0' && cfg->admin.client_cert[0] != '\0') {
        /* The client certificate alone authenticates. */
        token = (unsigned char *)strdup("");
        if (token == NULL)
            goto out;
    } else if (cfg->admin.token_file[0] == '\0' ||
               util_file_read(cfg->admin.token_file, 255, &token, &token_len) != UTIL_OK) {
        fprintf(stderr, "pkiva crl publish: a server is running but the admin token file is "
                        "not readable\n");
        goto out;
    }
    while (token_len > 0 && (token[token_len - 1] == '\n' || token[token_len - 1] == '\r'))
        token_len--;
    token[token_len] = '\0';
    if (issuer != NULL)
        n = snprintf(body, sizeof(body), "{\"issuer\":\"%.63s\",\"wait\":true}", issuer);
    else
        n = snprintf(body, sizeof(body), "{\"wait\":true}");
    n = snprintf(req, sizeof(req),
                 "POST /admin/crl/publish HTTP/1.1\r\nHost: %s\r\n%s%s%s"
                 "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                 "%s",
                 l->host, token_len > 0 ? "Authorization: Bearer " : "", (char *)token,
                 token_len > 0 ? "\r\n" : "", n, body);
    OPENSSL_cleanse(token, token_len);
    if (n < 0 || (size_t)n >= sizeof(req) || admin_send(ssl, fd, req, n) != 0) {
        fprintf(stderr, "pkiva crl publish: cannot talk to the server: %s\n", strerror(errno));
        goto out;
    }
    OPENSSL_cleanse(req, sizeof(req));
    while (used < sizeof(reply) - 1 &&
           (got = admin_recv(ssl, fd, reply + used, sizeof(reply) - 1 - used)) > 0)
        used += (size_t)got;
    reply[used] = '\0';
    if (sscanf(reply, "HTTP/1.%*d %d", &status) != 1 || (status != 200 && status != 503)) {
        const char *json = strstr(reply, "\r\n\r\n");
        fprintf(stderr, "pkiva crl publish: the server answered %d %s\n", status,
                json ? json + 4 : "");
        goto out;
    }
    rc = print_published(strstr(reply, "\r\n\r\n"), status) == 0 && status == 200 ? 0 : -1;
out:
    free(token);
    SSL_free(ssl); /* no close_notify: the server closed first (Connection: close) */
    SSL_CTX_free(tls_ctx);
    ERR_clear_error();
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

    cli__hsm_config(cfg, 1, 4, &hcfg);
    rc = cli__publish_dir_ready(cfg);
    if (rc != UTIL_OK)
        return 1;
    rc = hsm_open(&hcfg, &hsm);
    if (rc != UTIL_OK) {
        fprintf(stderr, "pkiva crl publish: cannot open the HSM: %s\n", util_strerror(rc));
        return 1;
    }
    rc = store_open_blocking(cfg->store_path, 0, &store);
    if (rc != UTIL_OK) {
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
            rc = hsm_key_check_blocking(hsm, key, cert); /* the start-up self-check, issue 21 */
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
            rc = crl_publish_blocking(&cc, &ic, hsm, store, cfg->crl.deltas ? CRL_BOTH : CRL_FULL,
                                      actor, &full, &delta);
        }
        if (rc == UTIL_OK) {
            printf("%s: CRL number %lld, %lld entries, %zu bytes, %lld ms -> %s/%s.crl\n", c->name,
                   (long long)full.number, (long long)full.entries, full.der_len,
                   (long long)full.build_ms, cfg->crl.publish_dir, c->name);
            if (cfg->crl.deltas)
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
