/* SPDX-License-Identifier: Apache-2.0 */
/* A stand-alone TSA server for the crash test: the test starts it as a child process, kills it with
 * SIGKILL in the middle of a burst and starts it again on the same store.
 *   usage: tsa_serve_helper DIR KEY_URI PORT_FILE
 * DIR holds pin.txt, tsa.pem, ca.pem and pkiva.db; SOFTHSM2_CONF comes from the environment. The
 * port is written to PORT_FILE once the server accepts. Serves until SIGTERM/SIGINT. */
#include <hsm/hsm.h>
#include <http/http.h>
#include <stdio.h>
#include <string.h>
#include <support.h>
#include <tsa/tsa.h>

int main(int argc, char **argv)
{
    struct hsm_config hc;
    struct hsm *hsm = NULL;
    struct tsa_config cfg;
    struct tsa_unit_config unit;
    struct tsa_service *svc = NULL;
    struct http_config http;
    struct http_server *srv = NULL;
    char pin[512], store[512], cert[512], chain[512], tmp[600];
    FILE *f;

    if (argc != 4) {
        fprintf(stderr, "usage: tsa_serve_helper DIR KEY_URI PORT_FILE\n");
        return 2;
    }
    (void)snprintf(pin, sizeof(pin), "%s/pin.txt", argv[1]);
    (void)snprintf(store, sizeof(store), "%s/pkiva.db", argv[1]);
    (void)snprintf(cert, sizeof(cert), "%s/tsa.pem", argv[1]);
    (void)snprintf(chain, sizeof(chain), "%s/ca.pem", argv[1]);
    memset(&hc, 0, sizeof(hc));
    hc.module_path = TS_SOFTHSM_MODULE;
    hc.pin_file = pin;
    hc.softhsm_no_deinit = 1;
    hc.sessions = 2;
    hc.queue_max = 256;
    tsa_config_default(&cfg);
    cfg.store_path = store;
    cfg.require_clock_sync = 0;
    cfg.serial_block = 32; /* many reservations: a kill lands between them, too */
    memset(&unit, 0, sizeof(unit));
    unit.name = "main";
    unit.cert_file = cert;
    unit.chain_file = chain;
    unit.key_uri = argv[2];
    unit.policy = "1.3.6.1.4.1.99999.1.1";
    unit.accuracy_us = 500000;
    memset(&http, 0, sizeof(http));
    http.workers = 2;
    http.n_listeners = 1;
    (void)snprintf(http.listeners[0].host, sizeof(http.listeners[0].host), "127.0.0.1");
    http.listeners[0].kind = HTTP_PUBLIC;
    http_limits_default(&http.limits);
    if (hsm_open(&hc, &hsm) != 0 || tsa_service_new(&cfg, &unit, 1, hsm, &svc) != 0 ||
        http_server_new(&http, &srv) != 0 || tsa_service_register(svc, srv) != 0 ||
        http_server_start(srv) != 0 || tsa_service_start(svc) != 0) {
        fprintf(stderr, "tsa_serve_helper: start-up failed\n");
        return 1;
    }
    /* write-then-rename: the test never reads a half-written port */
    (void)snprintf(tmp, sizeof(tmp), "%s.tmp", argv[3]);
    f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d\n", http_server_port(srv, 0)) < 0 || fclose(f) != 0 ||
        rename(tmp, argv[3]) != 0) {
        fprintf(stderr, "tsa_serve_helper: cannot write %s\n", argv[3]);
        return 1;
    }
    (void)http_server_run(srv); /* until SIGTERM */
    tsa_service_stop(svc);
    http_server_free(srv);
    tsa_service_free(svc);
    hsm_close(hsm);
    return 0;
}
