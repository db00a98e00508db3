/* SPDX-License-Identifier: Apache-2.0 */
/* The admin API and the record operations behind it: operators and the registration system
 * record issuances and revocations as JSON over HTTP(S) on the admin listener; the CLI commands
 * take the same record paths (admin_*_blocking), so a change from either door is the same store
 * change with the same audit record. */
#ifndef PKIVA_ADMIN_H
#define PKIVA_ADMIN_H

#include <feed/feed.h>
#include <http/http.h>
#include <stddef.h>
#include <stdint.h>

struct store;
struct store_revocation;
struct crl_publisher;

/* What the admin API needs of the configuration. The strings are borrowed: they must outlive the
 * admin API (serve keeps its configuration until after admin_free). */
/* The [admin] section of the configuration file as read (admin_config.c declares each directive
 * once: name, kind, default, doc line). */
#define ADMIN_SETTING_MAX 512
struct admin_settings {
    char token_file[ADMIN_SETTING_MAX];
    char tls_cert[ADMIN_SETTING_MAX];  /* "" = the admin listener speaks plain HTTP */
    char tls_key[ADMIN_SETTING_MAX];   /* an ordinary file, mode 0600 (not an HSM key) */
    char client_ca[ADMIN_SETTING_MAX]; /* "" = no client certificates; else they authenticate */
    int require_client_cert;           /* 1: a bearer token alone is not enough */
    /* The client side, for `pkiva` commands that ask a running server (crl publish). */
    char server_ca[ADMIN_SETTING_MAX];   /* "" = client_ca, else tls_cert itself */
    char client_cert[ADMIN_SETTING_MAX]; /* "" = present no certificate (bearer token only) */
    char client_key[ADMIN_SETTING_MAX];
    /* Who may read /metrics, and the operator certificates' revocation. */
    int metrics_without_auth;           /* 1: /metrics is served to anyone reaching the listener */
    char client_crl[ADMIN_SETTING_MAX]; /* "" = operator certificates' revocation not checked */
};
void admin_settings_default(struct admin_settings *s);
struct util_conf_directive;
const struct util_conf_directive *admin_settings_directives(size_t *n);
/* The rules between [admin] directives (tls_cert and tls_key go together, client_ca needs
 * tls_cert, ...). Returns 0, or UTIL_ECONFIG with the reason in err. */
int admin_settings_check(const struct admin_settings *s, char *err, size_t err_len);

struct admin_config {
    const char *store_path;        /* the SQLite store each store thread opens */
    const char *token_file;        /* "" = no bearer token */
    const char *tls_key;           /* "" = plain HTTP; else checked: mode 0600 */
    const char *client_ca;         /* "" = no client certificates; else they authenticate */
    int require_client_cert;       /* 1: a bearer token alone is not enough */
    int metrics_without_auth;      /* 1: other routes of the listener (/metrics) need no auth */
    int64_t sla_deadline_s;        /* [revocation] deadline, reported by GET /admin/sla */
    struct feed_contract contract; /* the freshness contract, reported by GET /admin/sla */
    int64_t max_feed_lag_ms;       /* [store] max_feed_lag: nodes reporting within it are live */
};

/* The most issuers a publication through POST /admin/crl/publish reports (the configuration's
 * limit, CLI_MAX_ISSUERS, is checked against it where serve wires the admin API). */
#define ADMIN_MAX_ISSUERS 16

/* The admin API: routes on the admin listener (HTTP_ADMIN) and a pool of store threads. */
struct admin;

/* Registers the routes on http and starts the store threads; *out is freed with admin_free.
 * crl (may be NULL: no CRL publishing route work) must outlive the admin API. Returns 0,
 * UTIL_ECONFIG (token file unreadable or short), UTIL_EPERM (TLS key readable by others), or
 * another negative util error. */
int admin_new(const struct admin_config *cfg, struct http_server *http, struct crl_publisher *crl,
              struct admin **out);
/* After the http server stopped; NULL-safe. */
void admin_free(struct admin *admin);
/* For other routes of the admin listener (/metrics): 1 when req may be served, i.e. it is
 * authenticated as the admin API's requests are, or metrics_without_auth is set; else req has
 * been answered 401 (counted and logged like the admin API's refusals) and 0 returned. */
int admin_gate(struct admin *admin, struct http_request *req);
/* The admin API's section of /metrics (refused requests) into buf (NUL-terminated). Returns the
 * length written, or UTIL_EINVAL when buf is too small. */
int admin_metrics(struct admin *admin, char *buf, size_t len);
/* Hex serial (optional 0x, colons allowed) -> DER INTEGER content octets (minimal, positive);
 * out holds STORE_SERIAL_MAX bytes. UTIL_EINVAL when hex is not such a serial. */
int admin_serial_parse(const char *hex, unsigned char *out, size_t *len);

/* The one path every change takes, from the CLI or the admin API: the store change (durable, with
 * its change-feed id) and its audit record, in one transaction. Blocking: worker threads and CLI
 * commands only. */
int admin_revoke_blocking(struct store *store, const struct store_revocation *rev,
                          int64_t *feed_id);
int admin_unrevoke_blocking(struct store *store, int64_t issuer_id, const unsigned char *serial,
                            size_t serial_len, const char *actor, int64_t *feed_id);
/* Registers an issued certificate (DER) under issuer_id after checking that the issuer's key
 * signed it (UTIL_EINVAL otherwise); returns its serial octets (serial must hold
 * STORE_SERIAL_MAX bytes). */
int admin_register_blocking(struct store *store, int64_t issuer_id, const unsigned char *der,
                            size_t der_len, const char *actor, unsigned char *serial,
                            size_t *serial_len, int64_t *feed_id);
/* Revokes rev's certificate with reason superseded and, when new_der is given, registers its
 * replacement (same issuer) in the same transaction; new_serial receives the replacement's serial
 * (new_serial_len 0 when none). */
int admin_supersede_blocking(struct store *store, const struct store_revocation *rev,
                             const unsigned char *new_der, size_t new_len,
                             unsigned char *new_serial, size_t *new_serial_len, int64_t *feed_id);

#endif
