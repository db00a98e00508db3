/* SPDX-License-Identifier: Apache-2.0 */
/* A minimal server for poking the http module by hand (curl, wrk): GET / answers a fixed blob the
 * way the OCSP pre-signed path will, so its throughput is the module's own ceiling. Not a test and
 * not a benchmark program; it prints nothing but the port. Usage: http_example [port] [workers]
 * [body_bytes]; stop with Ctrl-C or SIGTERM. */
#include <http/http.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void blob_handler(void *ctx, struct http_request *req)
{
    struct http_response resp = {0};

    resp.status = 200;
    resp.content_type = "application/ocsp-response";
    resp.body = ctx;
    resp.headers = "Cache-Control: max-age=3600, public, no-transform, must-revalidate\r\n";
    http_request_respond(req, &resp);
}

int main(int argc, char **argv)
{
    struct http_config cfg;
    struct http_server *srv = NULL;
    struct util_blob *blob = NULL;
    size_t body_len = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 1500;
    int rc = 0;

    memset(&cfg, 0, sizeof(cfg));
    cfg.workers = argc > 2 ? atoi(argv[2]) : 2;
    cfg.n_listeners = 1;
    (void)snprintf(cfg.listeners[0].host, sizeof(cfg.listeners[0].host), "127.0.0.1");
    cfg.listeners[0].port = argc > 1 ? atoi(argv[1]) : 8080;
    cfg.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&cfg.limits);
    cfg.server_header = "pkiva";
    blob = util_blob_new(NULL, body_len);
    if (blob == NULL)
        return 1;
    memset(blob->data, 'r', body_len);
    rc = http_server_new(&cfg, &srv);
    if (rc == 0)
        rc = http_server_route(srv, HTTP_PUBLIC, "GET", "/", blob_handler, blob);
    if (rc == 0)
        rc = http_server_start(srv);
    if (rc == 0) {
        printf("%d\n", http_server_port(srv, 0));
        (void)fflush(stdout); /* a pipe reader waits for the port */
        rc = http_server_run(srv);
    }
    http_server_free(srv);
    util_blob_unref(blob);
    return rc == 0 ? 0 : 1;
}
