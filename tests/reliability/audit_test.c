/* SPDX-License-Identifier: Apache-2.0 */
/* The audit log against an insider who can write the database but not use the HSM, with the real
 * binary, a real SoftHSM2 token and the real SQLite file: a record edited and the whole chain
 * recomputed (with pkiva's own hash code) is found through the seals the server signed; a
 * certificate set back to good with its revocation row deleted is found through the history; a
 * request id cannot forge fields; an idempotent re-revoke writes no record; and a failure of the
 * audit insert undoes the change it records (one transaction). */
#include "rel.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <store/store.h>
#include <store/store_int.h>
#include <support.h>
#include <util/util.h>

static struct rel_server srv;

static void setup(void)
{
    rel_setup(&srv);
}

static void teardown(void)
{
    rel_teardown(&srv);
}

TestSuite(audit, .init = setup, .fini = teardown, .timeout = 120);

static void demo_serial(const char *pem_name, char *hex, size_t len)
{
    char out[256];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "openssl x509 -in pki/%s -noout -serial | cut -d= -f2 | tr -d '\\n'",
                        pem_name),
                 0);
    snprintf(hex, len, "%s", out);
}

static long long sql_int(const char *sql)
{
    char out[256];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "sqlite3 pkiva.db \"%s\"", sql), 0, "%s: %s", sql,
                 out);
    return strtoll(out, NULL, 10);
}

static void sql_exec(const char *sql)
{
    char out[1024];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out), "sqlite3 pkiva.db \"%s\" 2>&1", sql), 0, "%s: %s",
                 sql, out);
}

/* `pkiva audit verify`: exit status, output in out. */
static int verify(char *out, size_t len, const char *extra)
{
    return rel_sh(&srv, out, len, REL_PKIVA " audit verify --data %s %s 2>/dev/null", srv.data,
                  extra != NULL ? extra : "");
}

/* What an insider without the HSM can do after editing records: recompute every record's hash and
 * link with pkiva's own code, so that the plain chain is consistent again. */
static void recompute_chain(void)
{
    char path[400];
    sqlite3 *db = NULL;
    sqlite3_stmt *walk = NULL;
    sqlite3_stmt *update = NULL;
    unsigned char prev[STORE_AUDIT_HASH_LEN] = {0};
    unsigned char hash[STORE_AUDIT_HASH_LEN];

    snprintf(path, sizeof(path), "%s/pkiva.db", srv.data);
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT id, at_ms, version, feed_first, feed_last, changes, "
                                    "actor, action, detail FROM audit ORDER BY id",
                                    -1, &walk, NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db, "UPDATE audit SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
                                    -1, &update, NULL),
                 SQLITE_OK);
    while (sqlite3_step(walk) == SQLITE_ROW) {
        struct store__audit_row row;
        memset(&row, 0, sizeof(row));
        row.id = sqlite3_column_int64(walk, 0);
        row.at_ms = sqlite3_column_int64(walk, 1);
        row.version = sqlite3_column_int(walk, 2);
        row.feed_first = sqlite3_column_int64(walk, 3);
        row.feed_last = sqlite3_column_int64(walk, 4);
        row.changes = sqlite3_column_blob(walk, 5);
        row.changes_len = (size_t)sqlite3_column_bytes(walk, 5);
        row.actor = (const char *)sqlite3_column_text(walk, 6);
        row.action = (const char *)sqlite3_column_text(walk, 7);
        row.detail = (const char *)sqlite3_column_text(walk, 8);
        cr_assert_eq(store__audit_hash(prev, &row, hash), 0);
        sqlite3_bind_blob(update, 1, prev, sizeof(prev), SQLITE_TRANSIENT);
        sqlite3_bind_blob(update, 2, hash, sizeof(hash), SQLITE_TRANSIENT);
        sqlite3_bind_int64(update, 3, row.id);
        cr_assert_eq(sqlite3_step(update), SQLITE_DONE);
        sqlite3_reset(update);
        memcpy(prev, hash, sizeof(prev));
    }
    sqlite3_finalize(walk);
    sqlite3_finalize(update);
    cr_assert_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* Sets a revoked certificate back to good as if it had never been revoked: its revocation change
 * and revocation row deleted, its status and feed id those of its registration. */
static void unrevoke_behind_pkiva(const char *serial)
{
    char sql[1024];
    snprintf(sql, sizeof(sql),
             "PRAGMA foreign_keys = OFF; "
             "DELETE FROM revocations WHERE serial = x'%s'; "
             "DELETE FROM feed WHERE serial = x'%s' AND kind = 2; "
             "UPDATE certs SET status = 0, revoked_at = 0, reason = -1, invalidity_date = 0, "
             "feed_id = (SELECT id FROM feed WHERE serial = x'%s' AND kind = 1) "
             "WHERE serial = x'%s';",
             serial, serial, serial, serial);
    sql_exec(sql);
}

static void cli_revoke(const char *serial, const char *reason)
{
    char out[4096];
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s --reason %s 2>&1",
                        srv.data, serial, reason),
                 0, "%s", out);
}

/* The insider's own signing key (no HSM): signs seals like pkiva would. */
static int insider_sign(void *ctx, const unsigned char *data, size_t len, unsigned char **sig,
                        size_t *sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = 0;

    *sig = NULL;
    ok = md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ctx) == 1 &&
         EVP_DigestSign(md, NULL, sig_len, data, len) == 1;
    if (ok)
        *sig = malloc(*sig_len);
    ok = ok && *sig != NULL && EVP_DigestSign(md, *sig, sig_len, data, len) == 1;
    EVP_MD_CTX_free(md);
    return ok ? 0 : UTIL_ECRYPTO;
}

/* Seals the rewritten log with a key and self-made certificate of the insider's, through pkiva's
 * own sealing code. */
static void insider_seal(void)
{
    char path[400];
    struct store *store = NULL;
    struct store_audit_signer signer;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    unsigned char *der = NULL;
    int64_t sealed = 0;
    int len = 0;

    cr_assert_not_null(key);
    cr_assert_not_null(cert);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                               (const unsigned char *)"demo-ca", -1, -1, 0);
    X509_set_issuer_name(cert, X509_get_subject_name(cert));
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    cr_assert_gt(X509_sign(cert, key, EVP_sha256()), 0);
    len = i2d_X509(cert, &der);
    cr_assert_gt(len, 0);
    memset(&signer, 0, sizeof(signer));
    signer.sign = insider_sign;
    signer.ctx = key;
    signer.cert_der = der;
    signer.cert_len = (size_t)len;
    signer.md = "SHA256";
    snprintf(path, sizeof(path), "%s/pkiva.db", srv.data);
    cr_assert_eq(store_open_blocking(path, 0, &store), 0);
    cr_assert_eq(store_audit_seal_blocking(store, &signer, &sealed), 0);
    cr_assert_gt(sealed, 17);
    store_close(store);
    OPENSSL_free(der);
    X509_free(cert);
    EVP_PKEY_free(key);
}

static long long revoke_record_of(const char *serial)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT id FROM audit WHERE action = 'revoke' AND detail LIKE '%%%s%%' "
             "ORDER BY id DESC LIMIT 1",
             serial);
    return sql_int(sql);
}

Test(audit, a_rewritten_log_with_a_recomputed_chain_is_detected)
{
    char good[80], out[8192], json[512], body[4096], expect[128], anchor[160];
    char serials[20][33];
    long long record = 0;

    demo_serial("demo-good.pem", good, sizeof(good));
    rel_register_serials(&srv, 20, serials);
    rel_start(&srv, 30);
    /* Enough history for a record 17 and more: one revocation per registered serial. */
    for (int i = 0; i < 12; i++) {
        snprintf(json, sizeof(json),
                 "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"superseded\"}",
                 serials[i]);
        cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s",
                     body);
    }
    snprintf(json, sizeof(json),
             "{\"issuer\":\"demo-ca\",\"serial\":\"%s\",\"reason\":\"keyCompromise\"}", good);
    cr_assert_eq(rel_admin(&srv, "/admin/revoke", json, NULL, body, sizeof(body)), 200, "%s", body);
    for (int i = 0; i < 100 && rel_ocsp(&srv, good, 0, NULL) != 1; i++)
        rel_sleep_ms(100);
    /* A graceful stop seals the log with the CA key in the token. */
    cr_assert_eq(rel_stop(&srv), 0);
    cr_assert_eq(verify(out, sizeof(out), "--sealed"), 0, "%s", out);
    cr_assert_not_null(strstr(out, "intact"), "%s", out);
    cr_assert_not_null(strstr(out, " 0 not yet sealed"), "%s", out);
    {
        const char *a = strstr(out, "anchor: ");
        cr_assert_not_null(a, "%s", out);
        snprintf(anchor, sizeof(anchor), "--anchor %.*s", (int)strcspn(a + 8, "\n"), a + 8);
    }

    /* Record 17 rewritten into something harmless, the keyCompromise revocation of demo-good
     * undone in the state tables, every hash and link recomputed. */
    record = revoke_record_of(good);
    cr_assert_gt(record, 17, "not enough history: %lld", record);
    sql_exec("UPDATE audit SET detail = '{\\\"note\\\":\\\"nothing happened\\\"}' WHERE id = 17");
    unrevoke_behind_pkiva(good);
    {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "UPDATE audit SET action = 'note', detail = '{}', feed_first = 0, "
                 "feed_last = 0, changes = NULL WHERE id = %lld",
                 record);
        sql_exec(sql);
    }
    recompute_chain();
    cr_assert_eq(verify(out, sizeof(out), NULL), 1, "a rewritten log verified: %s", out);
    snprintf(expect, sizeof(expect), "first bad record 17:");
    cr_assert_not_null(strstr(out, expect), "the first bad record is not named: %s", out);

    /* Removing every seal as well: the log now claims to be merely unsealed, which --sealed
     * refuses, and the anchor written down at the last verification does not match. */
    sql_exec("DELETE FROM audit_seals");
    cr_assert_eq(verify(out, sizeof(out), "--sealed"), 1, "%s", out);
    cr_assert_eq(verify(out, sizeof(out), anchor), 1, "%s", out);
    cr_assert_not_null(strstr(out, "not the record the anchor names"), "%s", out);
    /* A seal of the insider's own making does not count: its certificate is not trusted. */
    insider_seal();
    cr_assert_eq(verify(out, sizeof(out), NULL), 1, "%s", out);
    cr_assert_not_null(strstr(out, "first bad record 1: seal "), "%s", out);
    cr_assert_not_null(strstr(out, "not trusted"), "%s", out);
}

Test(audit, a_certificate_set_back_to_good_is_detected)
{
    char revoked[80], out[8192], expect[128];
    long long record = 0;

    demo_serial("demo-good.pem", revoked, sizeof(revoked));
    cli_revoke(revoked, "keyCompromise");
    cr_assert_eq(verify(out, sizeof(out), NULL), 0, "%s", out);
    record = revoke_record_of(revoked);
    cr_assert_gt(record, 0);

    /* Only the state tables: the audit log is left alone. */
    {
        char sql[512];
        snprintf(sql, sizeof(sql),
                 "PRAGMA foreign_keys = OFF; DELETE FROM revocations WHERE serial = x'%s'; "
                 "UPDATE certs SET status = 0, revoked_at = 0, reason = -1 WHERE serial = x'%s';",
                 revoked, revoked);
        sql_exec(sql);
    }
    cr_assert_eq(verify(out, sizeof(out), NULL), 1, "%s", out);
    snprintf(expect, sizeof(expect), "first bad record %lld:", record);
    cr_assert_not_null(strstr(out, expect), "%s", out);
}

/* The status alone (revocation row kept): caught by the replay of the history. */
Test(audit, a_status_changed_alone_is_detected)
{
    char revoked[80], out[8192], expect[128];
    char sql[512];
    long long record = 0;

    demo_serial("demo-good.pem", revoked, sizeof(revoked));
    cli_revoke(revoked, "keyCompromise");
    record = revoke_record_of(revoked);
    snprintf(sql, sizeof(sql),
             "UPDATE certs SET status = 0, revoked_at = 0, reason = -1 WHERE serial = x'%s';",
             revoked);
    sql_exec(sql);
    cr_assert_eq(verify(out, sizeof(out), NULL), 1, "%s", out);
    snprintf(expect, sizeof(expect), "first bad record %lld:", record);
    cr_assert_not_null(strstr(out, expect), "%s", out);
    cr_assert_not_null(strstr(out, "good in the store"), "%s", out);
}

Test(audit, a_request_id_cannot_forge_fields)
{
    char good[80], out[8192];
    static const char forged[] = "RA-1\",\"reason\":\"unspecified\",\"serial\":\"DEADBEEF";

    demo_serial("demo-good.pem", good, sizeof(good));
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                  "--reason keyCompromise --request-id '%s' 2>&1",
                        srv.data, good, forged),
                 0, "%s", out);
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        "sqlite3 pkiva.db \"SELECT detail FROM audit WHERE action = 'revoke' "
                        "ORDER BY id DESC LIMIT 1\" | jq -r '.request_id, .reason, .serial'"),
                 0, "%s", out);
    {
        char want[512];
        for (char *p = good; *p != '\0'; p++)
            *p = (char)tolower((unsigned char)*p); /* the record spells serials in lower case */
        snprintf(want, sizeof(want), "%s\nkeyCompromise\n%s\n", forged, good);
        cr_assert_str_eq(out, want, "the record's fields were forged");
    }
    cr_assert_eq(verify(out, sizeof(out), NULL), 0, "%s", out);
}

Test(audit, an_idempotent_re_revoke_writes_no_record)
{
    char good[80], out[8192];
    long long before = 0;

    demo_serial("demo-good.pem", good, sizeof(good));
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                  "--reason keyCompromise 2>&1",
                        srv.data, good),
                 0, "%s", out);
    before = sql_int("SELECT count(*) FROM audit");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                  "--reason keyCompromise 2>&1",
                        srv.data, good),
                 0, "%s", out);
    cr_assert_eq(sql_int("SELECT count(*) FROM audit"), before, "a repeat wrote a record");
    cr_assert_eq(verify(out, sizeof(out), NULL), 0, "%s", out);
}

Test(audit, a_failed_audit_insert_undoes_the_change)
{
    char good[80], hold[80], out[8192];
    char sql[256];
    long long feed = 0;

    demo_serial("demo-good.pem", good, sizeof(good));
    demo_serial("demo-hold.pem", hold, sizeof(hold));
    feed = sql_int("SELECT count(*) FROM feed");
    /* A crash between the change and its record, made deterministic: the record cannot be
     * written. */
    sql_exec("CREATE TRIGGER no_audit BEFORE INSERT ON audit "
             "BEGIN SELECT RAISE(ABORT, 'injected audit failure'); END;");
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                   "--reason keyCompromise 2>&1",
                         srv.data, good),
                  0, "the revocation succeeded without its audit record: %s", out);
    cr_assert_neq(rel_sh(&srv, out, sizeof(out),
                         REL_PKIVA " unrevoke --data %s --issuer demo-ca --serial %s 2>&1",
                         srv.data, hold),
                  0, "the hold release succeeded without its audit record: %s", out);
    snprintf(sql, sizeof(sql), "SELECT status FROM certs WHERE serial = x'%s'", good);
    cr_assert_eq(sql_int(sql), 0, "the revocation stayed without its record");
    snprintf(sql, sizeof(sql), "SELECT reason FROM certs WHERE serial = x'%s'", hold);
    cr_assert_eq(sql_int(sql), 6, "the hold release stayed without its record");
    cr_assert_eq(sql_int("SELECT count(*) FROM feed"), feed);
    cr_assert_eq(sql_int("SELECT count(*) FROM revocations WHERE committed_at_ms > "
                         "(SELECT max(at_ms) FROM audit)"),
                 0);

    /* Without the fault both go through, each with its record, and the log verifies. */
    sql_exec("DROP TRIGGER no_audit");
    cr_assert_eq(rel_sh(&srv, out, sizeof(out),
                        REL_PKIVA " revoke --data %s --issuer demo-ca --serial %s "
                                  "--reason keyCompromise 2>&1",
                        srv.data, good),
                 0, "%s", out);
    cr_assert_eq(verify(out, sizeof(out), NULL), 0, "%s", out);
}
