/* SPDX-License-Identifier: Apache-2.0 */
/* store_pg_search.c: the public directory's search index on the PostgreSQL backend, the same API
 * and the same answers as SQLite's FTS5 index (store_sqlite.c): words of the subject's names and
 * e-mail addresses (tsvector, GIN), fingerprints and whole addresses (btree), newest first in
 * pages, per issuer or across, and the catch-up of certificates registered before the index. */

/* DESIGN (search on PostgreSQL)
 *
 * Same words as SQLite. A search must find the same certificates on both backends, so the words
 * are not cut by PostgreSQL's text-search parser (which keeps "an@x.vn" as one e-mail token and
 * folds case by the database's locale) but by the very tokenizer SQLite's index uses: FTS5's
 * unicode61 with remove_diacritics 2, taken from an in-memory SQLite handle (SQLite is linked
 * anyway). Certificates and queries are folded by store__search_fold first (đ/Đ), as on SQLite.
 * The tokens go to PostgreSQL as a tsvector literal, which it stores as given (no dictionary):
 * each field has its weight (CN A, O B, OU C, e-mail D) so that the operator's [directory] fields
 * restrict a query by weight, and positions (a field's base + the token's place) so that a word
 * the tokenizer splits (a right-to-left mark inside it, say) is a phrase, as in FTS5.
 *
 * Same order. Rows are keyed by the DER's id (cert_ders.id, in registration order): pages are
 * "der_id < before ORDER BY der_id DESC", as SQLite pages by rowid. The issuer filter is a
 * WHERE clause; a GIN index cannot return rows in id order, so a word shared by most certificates
 * costs a bitmap of its matches (see README, Benchmarks) where FTS5 walks its doclist backwards.
 *
 * Indexing. cert_add indexes a new certificate in its own transaction (one more round trip);
 * certificates from before the index (or written by a path that does not index) are caught up at
 * a read-write open from search_backfill's position, in batches, by one node at a time. */

#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "store/store_int.h"
#include "store/store_pg_int.h"
#include "util/util.h"

/* Advisory lock key of the catch-up ("pkiv" high word, as in store_pg.c). */
#define PG_LOCK_BACKFILL ((int64_t)0x706b697600000003LL)
#define PG_BACKFILL_BATCH 512
/* tsvector positions go up to 16383: each field gets its own range. */
#define PG_FIELD_SPAN 4000
#define PG_POS_MAX 16383
/* A tsvector literal of four fields of STORE__SEARCH_FIELD_MAX bytes: a field has at most half
 * as many tokens as bytes (a separator between two), each written with its bytes at most doubled
 * (escapes) plus quotes, position, weight and a space (10). */
#define PG_TSV_MAX (4 * (2 * STORE__SEARCH_FIELD_MAX + 10 * (STORE__SEARCH_FIELD_MAX / 2 + 1)) + 64)
#define PG_TSQ_MAX 4096

const char store__pg_schema_search[] =
    "CREATE TABLE cert_search ("
    "  der_id bigint PRIMARY KEY REFERENCES cert_ders(id),"
    "  issuer_id bigint NOT NULL,"
    "  serial bytea NOT NULL,"
    "  fp_sha256 bigint NOT NULL,"
    "  fp_sha1 bigint NOT NULL,"
    "  words tsvector NOT NULL"
    ");"
    "CREATE INDEX cert_search_sha256 ON cert_search (fp_sha256);"
    "CREATE INDEX cert_search_sha1 ON cert_search (fp_sha1);"
    "CREATE INDEX cert_search_words ON cert_search USING gin (words);"
    "CREATE TABLE cert_email ("
    "  email_key bigint NOT NULL,"
    "  der_id bigint NOT NULL,"
    "  PRIMARY KEY (email_key, der_id)"
    ");"
    "CREATE TABLE search_backfill ("
    "  issuer_id bigint NOT NULL,"
    "  serial bytea NOT NULL"
    ");"
    "INSERT INTO search_backfill (issuer_id, serial) "
    "  SELECT 0, '\\x'::bytea WHERE EXISTS (SELECT 1 FROM certs WHERE der_id IS NOT NULL);";

/* ---- tokens: SQLite's unicode61 ------------------------------------------------------------- */

/* One tokenizer for the process, behind a mutex: tokenizing a certificate takes microseconds. It
 * lives until exit (nothing to gain from closing it). */
static pthread_mutex_t tok_lock = PTHREAD_MUTEX_INITIALIZER;
static sqlite3 *tok_db;
static fts5_tokenizer tok_api;
static Fts5Tokenizer *tok;

static int tok_init(void)
{
    static const char *const args[] = {"remove_diacritics", "2"};
    fts5_api *api = NULL;
    sqlite3_stmt *stmt = NULL;
    void *user = NULL;
    int rc = UTIL_ESTORE;

    if (tok != NULL)
        return 0;
    if (tok_db == NULL &&
        sqlite3_open_v2(":memory:", &tok_db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_prepare_v2(tok_db, "SELECT fts5(?1)", -1, &stmt, NULL) != SQLITE_OK ||
        sqlite3_bind_pointer(stmt, 1, (void *)&api, "fts5_api_ptr", NULL) != SQLITE_OK)
        goto out;
    (void)sqlite3_step(stmt); /* fills api, or leaves it NULL (checked below) */
    if (api == NULL || api->xFindTokenizer(api, "unicode61", &user, &tok_api) != SQLITE_OK ||
        tok_api.xCreate(user, (const char **)args, 2, &tok) != SQLITE_OK) {
        tok = NULL;
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(stmt);
    if (rc != 0)
        UTIL_ERROR(STORE_MOD, "search: SQLite's unicode61 tokenizer is not available: %s",
                   tok_db != NULL ? sqlite3_errmsg(tok_db) : "out of memory");
    return rc;
}

/* Calls fn for each token of text (already folded), under the tokenizer's lock. */
static int tokenize(const char *text, size_t len,
                    int (*fn)(void *ctx, int flags, const char *token, int n, int start, int end),
                    void *ctx)
{
    int rc = 0;

    if (len == 0)
        return 0;
    (void)pthread_mutex_lock(&tok_lock); /* a default mutex cannot fail here */
    rc = tok_init();
    if (rc == 0 &&
        tok_api.xTokenize(tok, ctx, FTS5_TOKENIZE_DOCUMENT, text, (int)len, fn) != SQLITE_OK)
        rc = UTIL_ENOMEM;
    (void)pthread_mutex_unlock(&tok_lock);
    return rc;
}

/* A bounded output string. */
struct out {
    char *buf;
    size_t len, max;
    int full;
    int count; /* tokens written */
    int pos;   /* tsvector: next position */
    char weights[5];
    int prefix; /* tsquery: the last token gets ":*" */
};

static void out_add(struct out *o, const char *s, size_t n)
{
    if (o->full || o->len + n + 1 > o->max) {
        o->full = 1;
        return;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

/* A lexeme in single quotes, with quotes and backslashes escaped (tsvector and tsquery syntax). */
static void out_lexeme(struct out *o, const char *token, int n)
{
    out_add(o, "'", 1);
    for (int i = 0; i < n; i++) {
        if (token[i] == '\'' || token[i] == '\\')
            out_add(o, token[i] == '\'' ? "'" : "\\", 1);
        out_add(o, token + i, 1);
    }
    out_add(o, "'", 1);
}

static int tsv_token(void *ctx, int flags, const char *token, int n, int start, int end)
{
    struct out *o = ctx;
    char piece[2 * STORE__SEARCH_FIELD_MAX + 32];
    struct out one = {.buf = piece, .max = sizeof(piece)};
    char tail[32];

    (void)flags;
    (void)start;
    (void)end;
    if (n <= 0 || n > STORE__SEARCH_FIELD_MAX)
        return SQLITE_OK;
    /* The whole entry or nothing: a cut one would not parse. */
    piece[0] = '\0';
    if (o->len > 0)
        out_add(&one, " ", 1);
    out_lexeme(&one, token, n);
    (void)snprintf(tail, sizeof(tail), ":%d%s", o->pos < PG_POS_MAX ? o->pos : PG_POS_MAX,
                   o->weights); /* fits */
    out_add(&one, tail, strlen(tail));
    out_add(o, piece, one.len);
    o->pos++;
    o->count++;
    return SQLITE_OK;
}

/* The tsvector literal of a certificate's search keys. */
static int build_tsvector(const struct store__search_keys *keys, struct out *o)
{
    const char *const fields[4] = {keys->cn, keys->o, keys->ou, keys->email};
    static const char *const weights[4] = {"A", "B", "C", "D"};
    int rc = 0;

    for (int f = 0; f < 4 && rc == 0; f++) {
        o->pos = 1 + f * PG_FIELD_SPAN;
        (void)snprintf(o->weights, sizeof(o->weights), "%s", weights[f]); /* fits */
        rc = tokenize(fields[f], strlen(fields[f]), tsv_token, o);
    }
    if (rc == 0 && o->full) /* cannot happen (PG_TSV_MAX); the tokens that fit are indexed */
        UTIL_WARN(STORE_MOD, "search index: a certificate's names were cut to %zu bytes", o->len);
    return rc;
}

static int tsq_token(void *ctx, int flags, const char *token, int n, int start, int end)
{
    struct out *o = ctx;

    (void)flags;
    (void)start;
    (void)end;
    if (n <= 0)
        return SQLITE_OK;
    if (o->count > 0)
        out_add(o, " <-> ", 5);
    out_lexeme(o, token, n);
    out_add(o, ":", 1);
    out_add(o, o->weights, strlen(o->weights));
    o->count++;
    return SQLITE_OK;
}

/* The tsquery of a name search, as build_match in store_sqlite.c words the FTS5 query: words are
 * runs of bytes other than ASCII punctuation and spaces; every word must match (a word the
 * tokenizer splits is a phrase); the last one is a prefix when it has 3 characters or more. A word
 * without any token (only separators such as U+200F) matches nothing, as an empty FTS5 phrase:
 * *none_out = 1. Only lexemes in quotes reach the query, so no tsquery syntax comes from the user. */
static int build_tsquery(const struct store_search *q, struct out *o, int *none_out)
{
    char folded[STORE_SEARCH_TEXT_MAX + 1];
    struct store__search_words words;
    char weights[5] = "";
    size_t nw = 0;
    int rc = 0;

    *none_out = 0;
    for (unsigned b = 0; b < 4; b++)
        if (q->fields & (1u << b))
            weights[nw++] = "ABCD"[b];
    store__search_fold(q->text, strlen(q->text), folded, sizeof(folded));
    if (store__search_words(folded, &words) != UTIL_OK)
        return UTIL_EINVAL;
    for (int w = 0; w < words.n && rc == 0; w++) {
        if (w > 0)
            out_add(o, " & ", 3);
        out_add(o, "(", 1);
        o->count = 0;
        (void)snprintf(o->weights, sizeof(o->weights), "%s", weights); /* fits */
        rc = tokenize(words.start[w], words.len[w], tsq_token, o);
        if (rc != 0)
            break;
        if (o->count == 0) {
            *none_out = 1;
            return 0;
        }
        if (w == words.n - 1 && words.last_is_prefix && !o->full) {
            /* "'tok':AB" becomes "'tok':*AB": the prefix mark goes before the weights. */
            size_t wl = strlen(weights);
            if (o->len + 2 > o->max) {
                o->full = 1;
            } else {
                memmove(o->buf + o->len - wl + 1, o->buf + o->len - wl, wl + 1);
                o->buf[o->len - wl] = '*';
                o->len++;
            }
        }
        out_add(o, ")", 1);
    }
    if (rc == 0 && o->full)
        rc = UTIL_EINVAL;
    return rc;
}

/* ---- writes --------------------------------------------------------------------------------- */

/* The e-mail keys of a certificate as a PostgreSQL array literal "{k1,k2}". */
static void email_keys(const char *field, char *out, size_t out_len)
{
    size_t used = 0;

    out[used++] = '{';
    out[used] = '\0';
    for (const char *p = field; *p != '\0';) {
        const char *end = strchr(p, ' ');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        int64_t key = store__email_key(p, len);
        p += len;
        while (*p == ' ')
            p++;
        if (key != 0 && used + 24 < out_len) {
            int n = snprintf(out + used, out_len - used, "%s%" PRId64, used > 1 ? "," : "", key);
            used += n > 0 ? (size_t)n : 0;
        }
    }
    (void)snprintf(out + used, out_len - used, "}"); /* room kept above */
}

int store__pg_search_index(struct store *store, int64_t issuer_id, const unsigned char *serial,
                           size_t serial_len, const unsigned char *der, size_t der_len)
{
    static const char op[] = "search index";
    struct store__search_keys *keys = NULL;
    struct store__pg_args a = {0};
    struct out tsv = {0};
    char emails[STORE__SEARCH_FIELD_MAX];
    char fp256[24], fp1[24];
    int rc = 0;

    keys = malloc(sizeof(*keys));
    tsv.buf = malloc(PG_TSV_MAX);
    tsv.max = PG_TSV_MAX;
    if (keys == NULL || tsv.buf == NULL) {
        rc = UTIL_ENOMEM;
        goto out;
    }
    tsv.buf[0] = '\0';
    if (store__search_keys(der, der_len, keys) != UTIL_OK)
        goto out; /* logged when it was our failure; otherwise not a certificate */
    rc = build_tsvector(keys, &tsv);
    if (rc != 0)
        goto out;
    email_keys(keys->email, emails, sizeof(emails));
    (void)snprintf(fp256, sizeof(fp256), "%" PRId64, keys->fp_sha256); /* fits */
    (void)snprintf(fp1, sizeof(fp1), "%" PRId64, keys->fp_sha1);
    store__pg_arg_i64(&a, issuer_id);
    store__pg_arg_blob(&a, serial, serial_len);
    store__pg_arg_text(&a, fp256);
    store__pg_arg_text(&a, fp1);
    store__pg_arg_text(&a, tsv.buf);
    store__pg_arg_text(&a, emails);
    /* One round trip: the row (its DER id looked up by primary key) and its addresses; a
     * certificate indexed already (the catch-up meeting one cert_add indexed) is left alone. */
    rc = store__pg_exec(store,
                        "WITH s AS (INSERT INTO cert_search (der_id, issuer_id, serial, fp_sha256, "
                        "fp_sha1, words) SELECT c.der_id, c.issuer_id, c.serial, $3::bigint, "
                        "$4::bigint, $5::tsvector FROM certs AS c WHERE c.issuer_id = $1 AND "
                        "c.serial = $2 AND c.der_id IS NOT NULL ON CONFLICT (der_id) DO NOTHING "
                        "RETURNING der_id) "
                        "INSERT INTO cert_email (email_key, der_id) SELECT DISTINCT k, s.der_id "
                        "FROM s, unnest($6::bigint[]) AS k ON CONFLICT DO NOTHING",
                        &a, op, NULL);
out:
    free(tsv.buf);
    free(keys);
    return rc;
}

/* One batch of the catch-up from position (issuer_id, serial): *done_out = 1 after the last. */
static int backfill_batch(struct store *store, int64_t *issuer_id, unsigned char *serial,
                          size_t *serial_len, int64_t *indexed, int *done_out)
{
    static const char op[] = "search index catch-up";
    struct store__pg_args a = {0};
    PGresult *r = NULL;
    unsigned char *der = NULL, *ser = NULL;
    size_t der_len = 0, ser_len = 0;
    int rows = 0;
    int rc = 0;

    *done_out = 0;
    rc = store__pg_exec(store, "BEGIN", NULL, op, NULL);
    if (rc != 0)
        return rc;
    store__pg_arg_i64(&a, *issuer_id);
    store__pg_arg_blob(&a, serial, *serial_len);
    store__pg_arg_i64(&a, PG_BACKFILL_BATCH);
    rc = store__pg_exec(store,
                        "SELECT c.issuer_id, c.serial, d.der FROM certs AS c "
                        "JOIN cert_ders AS d ON d.id = c.der_id "
                        "WHERE (c.issuer_id, c.serial) > ($1, $2) "
                        "ORDER BY c.issuer_id, c.serial LIMIT $3",
                        &a, op, &r);
    rows = rc == 0 ? PQntuples(r) : 0;
    for (int i = 0; rc == 0 && i < rows; i++) {
        rc = store__pg_blob(r, i, 1, &ser, &ser_len);
        if (rc == 0)
            rc = store__pg_blob(r, i, 2, &der, &der_len);
        if (rc == 0 && (ser_len < 1 || ser_len > STORE_SERIAL_MAX))
            rc = UTIL_ESTORE; /* the schema's CHECK forbids it */
        if (rc == 0) {
            *issuer_id = store__pg_i64(r, i, 0);
            memcpy(serial, ser, ser_len);
            *serial_len = ser_len;
            rc = store__pg_search_index(store, *issuer_id, serial, ser_len, der, der_len);
        }
        PQfreemem(ser);
        PQfreemem(der);
        ser = der = NULL;
        (*indexed)++;
    }
    if (rc == 0) {
        memset(&a, 0, sizeof(a));
        store__pg_arg_i64(&a, *issuer_id);
        store__pg_arg_blob(&a, serial, *serial_len);
        *done_out = rows < PG_BACKFILL_BATCH;
        rc = store__pg_exec(store,
                            *done_out ? "DELETE FROM search_backfill"
                                      : "UPDATE search_backfill SET issuer_id = $1, serial = $2",
                            *done_out ? NULL : &a, op, NULL);
    }
    if (rc == 0)
        rc = store__pg_exec(store, "COMMIT", NULL, op, NULL);
    if (rc != 0)
        (void)store__pg_exec(store, "ROLLBACK", NULL, op, NULL); /* the error is rc's */
    PQclear(r);
    return rc;
}

int store__pg_search_backfill(struct store *store)
{
    static const char op[] = "search index catch-up";
    struct store__pg_args a = {0};
    PGresult *r = NULL;
    unsigned char serial[STORE_SERIAL_MAX];
    unsigned char *pos = NULL;
    size_t serial_len = 0;
    int64_t issuer_id = 0;
    int64_t got = 0;
    int64_t indexed = 0;
    int done = 0;
    int rc = 0;

    rc = store__pg_exec(store, "SELECT issuer_id, serial FROM search_backfill LIMIT 1", NULL, op,
                        &r);
    if (rc != 0 || PQntuples(r) == 0)
        goto out;
    store__pg_arg_i64(&a, PG_LOCK_BACKFILL);
    PQclear(r);
    r = NULL;
    rc = store__pg_exec(store, "SELECT pg_try_advisory_lock($1)::integer", &a, op, &r);
    got = rc == 0 ? store__pg_i64(r, 0, 0) : 0;
    if (rc != 0 || !got)
        goto out; /* another node is at it: its batches are this node's */
    PQclear(r);
    r = NULL;
    rc = store__pg_exec(store, "SELECT issuer_id, serial FROM search_backfill LIMIT 1", NULL, op,
                        &r);
    if (rc != 0 || PQntuples(r) == 0)
        goto unlock; /* done meanwhile */
    issuer_id = store__pg_i64(r, 0, 0);
    rc = store__pg_blob(r, 0, 1, &pos, &serial_len);
    if (rc != 0)
        goto unlock;
    if (serial_len > STORE_SERIAL_MAX)
        serial_len = STORE_SERIAL_MAX; /* a position only; the next serial is above it anyway */
    if (serial_len > 0)
        memcpy(serial, pos, serial_len);
    UTIL_INFO(STORE_MOD, "%s: indexing the certificates registered before the search index (once)",
              store__pg_where(store));
    while (rc == 0 && !done)
        rc = backfill_batch(store, &issuer_id, serial, &serial_len, &indexed, &done);
    if (rc == 0)
        UTIL_INFO(STORE_MOD, "%s: %" PRId64 " certificates indexed for search",
                  store__pg_where(store), indexed);
unlock:
    (void)store__pg_exec(store, "SELECT pg_advisory_unlock($1)", &a, op, NULL); /* or at close */
out:
    PQfreemem(pos);
    PQclear(r);
    return rc;
}

/* ---- reads ---------------------------------------------------------------------------------- */

#define PG_SEARCH_COLS                                                                         \
    "s.der_id, d.der, c.subject, c.issuer_id, c.serial, c.not_before, c.not_after, c.status, " \
    "c.revoked_at, c.reason, c.invalidity_date, c.feed_id FROM cert_search AS s "              \
    "JOIN certs AS c ON c.issuer_id = s.issuer_id AND c.serial = s.serial "                    \
    "JOIN cert_ders AS d ON d.id = s.der_id "
#define PG_SEARCH_PAGE \
    " AND s.issuer_id = ANY ($2::bigint[]) AND s.der_id < $3 ORDER BY s.der_id DESC LIMIT $4"

static int issuer_listed(const struct store_search *q, int64_t issuer_id)
{
    for (int i = 0; i < q->n_issuer_ids; i++)
        if (q->issuer_ids[i] == issuer_id)
            return 1;
    return 0;
}

/* 1 when one of the addresses of der is q's (a hit of the 8-octet e-mail key). */
static int email_confirmed(const struct store_search *q, const unsigned char *der, size_t len,
                           int *listed)
{
    struct store__search_keys *keys = malloc(sizeof(*keys));

    *listed = 0;
    if (keys == NULL)
        return UTIL_ENOMEM;
    *listed = der != NULL && store__search_keys(der, len, keys) == UTIL_OK &&
              store__email_listed(keys->email, q->text);
    free(keys);
    return 0;
}

/* Hands the rows of a search result that pass the checks to fn (as search_rows in
 * store_sqlite.c). */
static int search_rows(struct store *store, const PGresult *r, const struct store_search *q,
                       int (*fn)(void *ctx, const struct store_search_row *row), void *ctx,
                       int *delivered)
{
    struct store_search_row row;
    unsigned char *der = NULL;
    int rc = 0;

    for (int i = 0; rc == 0 && i < PQntuples(r) && *delivered < q->limit; i++) {
        int listed = 1;
        memset(&row, 0, sizeof(row));
        rc = store__pg_read_cert(store, r, i, 3, &row.cert);
        if (rc == 0)
            rc = store__pg_blob(r, i, 1, &der, &row.der_len);
        if (rc != 0)
            break;
        row.der = row.der_len > 0 ? der : NULL;
        row.cursor = store__pg_i64(r, i, 0);
        row.subject = PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2);
        if (!issuer_listed(q, row.cert.issuer_id))
            listed = 0;
        else if ((q->kind == STORE_SEARCH_SHA256 || q->kind == STORE_SEARCH_SHA1) &&
                 !store__fp_matches(row.der, row.der_len, q->key, q->key_len))
            listed = 0; /* another certificate with the same 8-octet key */
        else if (q->kind == STORE_SEARCH_EMAIL)
            rc = email_confirmed(q, row.der, row.der_len, &listed);
        if (rc == 0 && listed) {
            rc = fn(ctx, &row);
            if (rc == 0)
                (*delivered)++;
        }
        PQfreemem(der);
        der = NULL;
    }
    return rc;
}

/* A serial: both DER forms of the number per issuer, as sq_cert_search does. */
static int search_serial(struct store *store, const struct store_search *q,
                         int (*fn)(void *ctx, const struct store_search_row *row), void *ctx,
                         int *delivered)
{
    unsigned char forms[2][STORE_SERIAL_MAX + 1];
    size_t lens[2];
    int n_forms = store__serial_forms(q->key, q->key_len, forms, lens);
    int rc = 0;
    for (int i = 0; i < q->n_issuer_ids && rc == 0; i++) {
        for (int f = 0; f < n_forms && rc == 0; f++) {
            struct store__pg_args a = {0};
            PGresult *r = NULL;
            store__pg_arg_i64(&a, q->issuer_ids[i]);
            store__pg_arg_blob(&a, forms[f], lens[f]);
            rc = store__pg_exec(store,
                                "SELECT COALESCE(c.der_id, 0), d.der, c.subject, c.issuer_id, "
                                "c.serial, c.not_before, c.not_after, c.status, c.revoked_at, "
                                "c.reason, c.invalidity_date, c.feed_id FROM certs AS c "
                                "LEFT JOIN cert_ders AS d ON d.id = c.der_id "
                                "WHERE c.issuer_id = $1 AND c.serial = $2",
                                &a, "search", &r);
            if (rc == 0)
                rc = search_rows(store, r, q, fn, ctx, delivered);
            PQclear(r);
        }
    }
    return rc;
}

int store__pg_cert_search(struct store *store, const struct store_search *q,
                          int (*fn)(void *ctx, const struct store_search_row *row), void *ctx)
{
    struct store__pg_args a = {0};
    PGresult *r = NULL;
    struct out tsq = {0};
    char issuers[STORE_SEARCH_ISSUERS_MAX * 21 + 3];
    size_t used = 0;
    const char *sql = NULL;
    int delivered = 0;
    int none = 0;
    int rc = 0;

    if (q->kind == STORE_SEARCH_SERIAL) {
        rc = search_serial(store, q, fn, ctx, &delivered);
        return rc != 0 ? rc : delivered;
    }
    issuers[used++] = '{';
    for (int i = 0; i < q->n_issuer_ids; i++)
        used += (size_t)snprintf(issuers + used, sizeof(issuers) - used, "%s%" PRId64,
                                 i > 0 ? "," : "", q->issuer_ids[i]); /* sized for 64 ids */
    (void)snprintf(issuers + used, sizeof(issuers) - used, "}");
    if (q->kind == STORE_SEARCH_NAME) {
        tsq.buf = malloc(PG_TSQ_MAX);
        tsq.max = PG_TSQ_MAX;
        if (tsq.buf == NULL)
            return UTIL_ENOMEM;
        tsq.buf[0] = '\0';
        rc = build_tsquery(q, &tsq, &none);
        if (rc != 0 || none)
            goto out;
        store__pg_arg_text(&a, tsq.buf);
        sql = "SELECT " PG_SEARCH_COLS "WHERE s.words @@ $1::tsquery" PG_SEARCH_PAGE;
    } else if (q->kind == STORE_SEARCH_EMAIL) {
        store__pg_arg_i64(&a, store__email_key(q->text, strlen(q->text)));
        sql = "SELECT " PG_SEARCH_COLS "JOIN cert_email AS e ON e.der_id = s.der_id "
              "WHERE e.email_key = $1" PG_SEARCH_PAGE;
    } else {
        store__pg_arg_i64(&a, store__fp_key(q->key));
        sql = q->kind == STORE_SEARCH_SHA256
                  ? "SELECT " PG_SEARCH_COLS "WHERE s.fp_sha256 = $1" PG_SEARCH_PAGE
                  : "SELECT " PG_SEARCH_COLS "WHERE s.fp_sha1 = $1" PG_SEARCH_PAGE;
    }
    store__pg_arg_text(&a, issuers);
    store__pg_arg_i64(&a, q->before > 0 ? q->before : INT64_MAX);
    store__pg_arg_i64(&a, q->limit);
    rc = store__pg_exec(store, sql, &a, "search", &r);
    if (rc == 0)
        rc = search_rows(store, r, q, fn, ctx, &delivered);
out:
    PQclear(r);
    free(tsq.buf);
    return rc != 0 ? rc : delivered;
}
