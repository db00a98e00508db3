/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests of the compact status index (ocsp_index.c): serials of every length the store takes,
 * with and without the leading zero octet of DER INTEGERs, told apart; certificates inserted after
 * a bulk load, with the table growing under responses already cached; statuses that need the side
 * table (revoked, wide times, big versions) kept exactly; the pre-signer's sweep visiting every
 * certificate once; and the memory per certificate (issue 18: at most 64 bytes). */
#include <criterion/criterion.h>
#include <ocsp/ocsp_int.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct ocsp__status good(int64_t feed_id)
{
    struct ocsp__status st = {.status = STORE_GOOD,
                              .reason = STORE_REASON_NONE,
                              .not_after = 2000000000,
                              .feed_id = feed_id};
    return st;
}

static void put_ok(struct ocsp__index *idx, int issuer, const unsigned char *serial, size_t len,
                   const struct ocsp__status *st)
{
    int changed = 0;
    cr_assert_eq(ocsp__index_put(idx, issuer, serial, len, st, 0, &changed), 0);
    cr_assert_eq(changed, 1, "put of %zu octets did not change", len);
}

/* Found, with this feed_id. */
static void expect_found(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                         size_t len, int64_t feed_id, const char *what)
{
    struct ocsp__status got;
    struct ocsp__cached *c = NULL;
    cr_assert_eq(ocsp__index_lookup(idx, issuer, serial, len, OCSP__SHA1, &got, &c), 1,
                 "%s: not found", what);
    cr_assert_eq(got.feed_id, feed_id, "%s: feed_id %lld, want %lld", what, (long long)got.feed_id,
                 (long long)feed_id);
    ocsp__cached_unref(c);
}

static void expect_absent(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                          size_t len, const char *what)
{
    struct ocsp__status got;
    struct ocsp__cached *c = NULL;
    cr_assert_eq(ocsp__index_lookup(idx, issuer, serial, len, OCSP__SHA1, &got, &c), 0, "%s: found",
                 what);
    cr_assert_null(c);
}

/* Serial number i (< 255) of length len, as a CA writes them: no leading zero octet, the first
 * below 0x80 (positive) unless high; random-looking octets with i + 1 last, so that serials of one
 * length differ and no serial ends in zero. */
static void make_serial(unsigned char *out, size_t len, uint32_t i, int high)
{
    uint64_t x = ((uint64_t)(i + 1) + ((uint64_t)len << 40)) * 0x9e3779b97f4a7c15ull;
    for (size_t k = 0; k < len; k++) {
        out[k] = (unsigned char)(x >> (8 * (k % 8)));
        if (k % 8 == 7)
            x = x * 0xbf58476d1ce4e5b9ull + i;
    }
    out[len - 1] = (unsigned char)(i % 255 + 1);
    if (len > 1)
        out[0] = (unsigned char)((out[0] & 0x7f) | 0x01);
    if (high)
        out[0] |= 0x80;
}

Test(index_compact, serials_of_1_to_32_octets_and_leading_zeros)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[STORE_SERIAL_MAX + 1], z[STORE_SERIAL_MAX + 1];
    int64_t feed = 1;

    cr_assert_eq(ocsp__index_new(1 << 20, &idx), 0);
    /* For each length: a positive serial, one with the high bit set (a negative INTEGER as
     * written), and that same one with the leading zero that makes it positive (len + 1 octets:
     * a 20-octet serial with the high bit set is stored in 21, past the inline octets). */
    for (size_t len = 1; len <= STORE_SERIAL_MAX; len++) {
        for (uint32_t i = 0; i < 40; i++) {
            make_serial(s, len, i, 0);
            put_ok(idx, 0, s, len,
                   &(struct ocsp__status){.status = STORE_GOOD,
                                          .reason = STORE_REASON_NONE,
                                          .not_after = 2000000000,
                                          .feed_id = feed++});
            make_serial(s, len, i, 1);
            put_ok(idx, 0, s, len,
                   &(struct ocsp__status){.status = STORE_GOOD,
                                          .reason = STORE_REASON_NONE,
                                          .not_after = 2000000000,
                                          .feed_id = feed++});
            if (len < STORE_SERIAL_MAX) {
                z[0] = 0;
                memcpy(z + 1, s, len);
                put_ok(idx, 0, z, len + 1,
                       &(struct ocsp__status){.status = STORE_GOOD,
                                              .reason = STORE_REASON_NONE,
                                              .not_after = 2000000000,
                                              .feed_id = feed++});
            }
        }
    }
    feed = 1;
    for (size_t len = 1; len <= STORE_SERIAL_MAX; len++) {
        for (uint32_t i = 0; i < 40; i++) {
            char what[64];
            (void)snprintf(what, sizeof(what), "len %zu #%u", len, i); /* fits */
            make_serial(s, len, i, 0);
            expect_found(idx, 0, s, len, feed++, what);
            /* another issuer, a zero octet in front or behind: other certificates */
            expect_absent(idx, 1, s, len, what);
            if (len < STORE_SERIAL_MAX) {
                z[0] = 0;
                memcpy(z + 1, s, len);
                expect_absent(idx, 0, z, len + 1, what);
                memcpy(z, s, len);
                z[len] = 0;
                expect_absent(idx, 0, z, len + 1, what);
            }
            make_serial(s, len, i, 1);
            expect_found(idx, 0, s, len, feed++, what);
            if (len < STORE_SERIAL_MAX) {
                z[0] = 0;
                memcpy(z + 1, s, len);
                expect_found(idx, 0, z, len + 1, feed++, what);
            }
            if (len > 3)
                expect_absent(idx, 0, s, len - 1, what); /* a prefix */
        }
    }
    {
        struct ocsp__index_counts counts;
        ocsp__index_counts(idx, &counts);
        cr_assert_eq(counts.entries, (uint64_t)(feed - 1));
    }
    /* Out of range: no certificate can have them. */
    {
        int changed;
        struct ocsp__status st = good(1);
        cr_assert_eq(ocsp__index_put(idx, 0, s, 0, &st, 0, &changed), UTIL_EINVAL);
        cr_assert_eq(ocsp__index_put(idx, 0, s, STORE_SERIAL_MAX + 1, &st, 0, &changed),
                     UTIL_EINVAL);
        cr_assert_eq(ocsp__index_put(idx, OCSP_MAX_ISSUERS, s, 4, &st, 0, &changed), UTIL_EINVAL);
        cr_assert_eq(ocsp__index_put(idx, -1, s, 4, &st, 0, &changed), UTIL_EINVAL);
    }
    ocsp__index_free(idx);
}

Test(index_compact, issuers_up_to_the_maximum_are_told_apart)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[16];

    cr_assert_eq(ocsp__index_new(1 << 20, &idx), 0);
    make_serial(s, sizeof(s), 7, 0);
    for (int is = 0; is < OCSP_MAX_ISSUERS; is++) {
        struct ocsp__status st = good(is + 1);
        put_ok(idx, is, s, sizeof(s), &st);
    }
    for (int is = 0; is < OCSP_MAX_ISSUERS; is++)
        expect_found(idx, is, s, sizeof(s), is + 1, "issuer");
    ocsp__index_free(idx);
}

static struct ocsp__cached *response(int64_t refresh_at)
{
    unsigned char der[300];
    memset(der, 0x30, sizeof(der));
    return ocsp__cached_new(der, sizeof(der), 1, refresh_at + 100, refresh_at, 0);
}

Test(index_compact, insert_after_load_keeps_everything)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[STORE_SERIAL_MAX];
    const uint32_t loaded = 50000, added = 150000;
    struct ocsp__index_counts counts;

    cr_assert_eq(ocsp__index_new((size_t)1 << 30, &idx), 0);
    /* The load: 16-octet serials, every tenth one with a response. */
    for (uint32_t i = 0; i < loaded; i++) {
        struct ocsp__status st = good(i + 1);
        make_serial(s, 16, i, 0);
        put_ok(idx, (int)(i % 2), s, 16, &st);
        if (i % 10 == 0) {
            struct ocsp__cached *c = response(5000);
            cr_assert_eq(ocsp__index_install(idx, (int)(i % 2), s, 16, OCSP__SHA1, i + 1, c), 1);
            ocsp__cached_unref(c);
        }
    }
    /* Issuances through the feed afterwards: three times as many, so every shard's table grows
     * (and its records move) several times under the cached responses; some long serials. */
    for (uint32_t i = loaded; i < loaded + added; i++) {
        struct ocsp__status st = good(i + 1);
        size_t len = i % 7 == 0 ? 21 : 16;
        make_serial(s, len, i, 0);
        put_ok(idx, (int)(i % 2), s, len, &st);
    }
    ocsp__index_counts(idx, &counts);
    cr_assert_eq(counts.entries, (uint64_t)(loaded + added));
    cr_assert_eq(counts.cached, (uint64_t)(loaded / 10));
    for (uint32_t i = 0; i < loaded + added; i++) {
        struct ocsp__status got;
        struct ocsp__cached *c = NULL;
        size_t len = i >= loaded && i % 7 == 0 ? 21 : 16;
        make_serial(s, len, i, 0);
        cr_assert_eq(ocsp__index_lookup(idx, (int)(i % 2), s, len, OCSP__SHA1, &got, &c), 1,
                     "#%u not found", i);
        cr_assert_eq(got.feed_id, (int64_t)i + 1, "#%u: feed_id %lld", i, (long long)got.feed_id);
        cr_assert_eq(got.status, STORE_GOOD);
        cr_assert_eq(got.not_after, 2000000000);
        cr_assert_eq(c != NULL, i < loaded && i % 10 == 0, "#%u: response %p", i, (void *)c);
        ocsp__cached_unref(c);
        cr_assert_eq(ocsp__index_lookup(idx, (int)((i + 1) % 2), s, len, OCSP__SHA1, &got, &c), 0);
    }
    /* A revocation of a loaded certificate drops its response and is found as such; the
     * re-delivery of an older change is ignored; the stale response is refused. */
    {
        struct ocsp__status rev = {.status = STORE_REVOKED,
                                   .reason = STORE_REASON_KEY_COMPROMISE,
                                   .revoked_at = 1700000000,
                                   .invalidity_date = 1690000000,
                                   .not_after = 2000000000,
                                   .feed_id = 1000000};
        struct ocsp__status old = good(999999), got;
        struct ocsp__cached *c = NULL;
        int changed;
        make_serial(s, 16, 10, 0);
        put_ok(idx, 0, s, 16, &rev);
        cr_assert_eq(ocsp__index_put(idx, 0, s, 16, &old, 0, &changed), 0);
        cr_assert_eq(changed, 0);
        cr_assert_eq(ocsp__index_lookup(idx, 0, s, 16, OCSP__SHA1, &got, &c), 1);
        cr_assert_null(c);
        cr_assert_eq(got.status, STORE_REVOKED);
        cr_assert_eq(got.reason, STORE_REASON_KEY_COMPROMISE);
        cr_assert_eq(got.revoked_at, 1700000000);
        cr_assert_eq(got.invalidity_date, 1690000000);
        cr_assert_eq(got.feed_id, 1000000);
        c = response(5000);
        cr_assert_eq(ocsp__index_install(idx, 0, s, 16, OCSP__SHA1, 11, c), 0);
        cr_assert_eq(ocsp__index_install(idx, 0, s, 16, OCSP__SHA256, 1000000, c), 1);
        ocsp__cached_unref(c);
        c = NULL;
        cr_assert_eq(ocsp__index_lookup(idx, 0, s, 16, OCSP__SHA256, &got, &c), 1);
        cr_assert_not_null(c);
        ocsp__cached_unref(c);
        /* released from hold: good again, with nothing of the revocation left */
        old = good(1000001);
        put_ok(idx, 0, s, 16, &old);
        cr_assert_eq(ocsp__index_lookup(idx, 0, s, 16, OCSP__SHA1, &got, &c), 1);
        cr_assert_eq(got.status, STORE_GOOD);
        cr_assert_eq(got.reason, STORE_REASON_NONE);
        cr_assert_eq(got.revoked_at, 0);
        cr_assert_eq(got.invalidity_date, 0);
        cr_assert_eq(got.feed_id, 1000001);
        ocsp__cached_unref(c);
    }
    ocsp__index_counts(idx, &counts);
    cr_assert_eq(counts.cached, (uint64_t)(loaded / 10) - 1);
    ocsp__index_free(idx);
}

Test(index_compact, wide_values_round_trip)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[8];
    const int64_t not_afters[] = {0, 1, 4294967295LL, 4294967296LL, 253402300799LL, -1, -86400};
    const int64_t feeds[] = {0, 1, 4294967295LL, 4294967296LL, INT64_MAX};

    cr_assert_eq(ocsp__index_new(1 << 20, &idx), 0);
    for (size_t a = 0; a < sizeof(not_afters) / sizeof(not_afters[0]); a++) {
        for (size_t f = 0; f < sizeof(feeds) / sizeof(feeds[0]); f++) {
            struct ocsp__status st = good(feeds[f]), got;
            struct ocsp__cached *c = NULL;
            st.not_after = not_afters[a];
            make_serial(s, sizeof(s), (uint32_t)(a * 10 + f), 0);
            put_ok(idx, 3, s, sizeof(s), &st);
            cr_assert_eq(ocsp__index_lookup(idx, 3, s, sizeof(s), OCSP__SHA1, &got, &c), 1);
            cr_assert_eq(got.not_after, not_afters[a]);
            cr_assert_eq(got.feed_id, feeds[f]);
            cr_assert_eq(got.status, STORE_GOOD);
            cr_assert_eq(got.reason, STORE_REASON_NONE);
        }
    }
    /* A good status with a reason (what an import may write) keeps it. */
    {
        struct ocsp__status st = good(5), got;
        struct ocsp__cached *c = NULL;
        st.reason = STORE_REASON_REMOVE_FROM_CRL;
        make_serial(s, sizeof(s), 999, 0);
        put_ok(idx, 3, s, sizeof(s), &st);
        cr_assert_eq(ocsp__index_lookup(idx, 3, s, sizeof(s), OCSP__SHA1, &got, &c), 1);
        cr_assert_eq(got.reason, STORE_REASON_REMOVE_FROM_CRL);
    }
    ocsp__index_free(idx);
}

Test(index_compact, sweep_visits_every_certificate_once)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[16];
    const uint32_t n = 20000;
    struct ocsp__scan scan = {0, 0, 0};
    struct ocsp__due *due = calloc(64, sizeof(*due));
    unsigned char *seen = calloc(n, 1);
    size_t total = 0;

    cr_assert_not_null(due);
    cr_assert_not_null(seen);
    cr_assert_eq(ocsp__index_new((size_t)1 << 30, &idx), 0);
    for (uint32_t i = 0; i < n; i++) {
        struct ocsp__status st = good(i + 1);
        st.not_after = i % 4 == 0 ? 1000 : 2000000000; /* a quarter expired */
        make_serial(s, sizeof(s), i, 0);
        put_ok(idx, 0, s, sizeof(s), &st);
    }
    /* One pass: every unexpired certificate once, with no response yet (allow_new). */
    do {
        size_t got = ocsp__index_collect_due(idx, &scan, 10000, 1, 5000, due, 64);
        for (size_t k = 0; k < got; k++) {
            uint32_t i = (uint32_t)due[k].st.feed_id - 1;
            cr_assert_lt(i, n);
            cr_assert_eq(due[k].alg, OCSP__SHA1);
            cr_assert_eq(due[k].serial_len, sizeof(s));
            make_serial(s, sizeof(s), i, 0);
            cr_assert(memcmp(due[k].serial, s, sizeof(s)) == 0, "#%u: wrong serial", i);
            cr_assert_eq(seen[i], 0, "#%u twice", i);
            seen[i] = 1;
            total++;
            /* install a response due at 20000 for half of them */
            if (i % 2 == 1) {
                struct ocsp__cached *c = response(20000);
                cr_assert_eq(ocsp__index_install(idx, 0, s, sizeof(s), OCSP__SHA1, i + 1, c), 1);
                ocsp__cached_unref(c);
            }
        }
    } while (!scan.wrapped);
    cr_assert_eq(total, (size_t)(n - n / 4));
    /* Next pass at 30000 without new ones: exactly the responses due for refresh. */
    total = 0;
    do {
        size_t got = ocsp__index_collect_due(idx, &scan, 30000, 0, 5000, due, 64);
        for (size_t k = 0; k < got; k++)
            cr_assert_eq((due[k].st.feed_id - 1) % 2, 1);
        total += got;
    } while (!scan.wrapped);
    cr_assert_eq(total, (size_t)n / 2); /* the odd ones: none of them expired */
    ocsp__index_free(idx);
    free(due);
    free(seen);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    cr_assert_not_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    (void)fclose(f); /* read only */
    return kb;
}

/* Issue 18: one 16 GiB node must hold 100 M certificates, so the index may cost at most 64 bytes
 * of resident memory per certificate (the layout before took about 130). Not a timing: a count of
 * resident pages after a million realistic inserts, in this test's own process. */
Test(index_compact, at_most_64_bytes_per_certificate, .timeout = 120)
{
    struct ocsp__index *idx = NULL;
    unsigned char s[16];
    const uint32_t n = 1000000;
    long before, after;
    double per_cert;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    /* A sanitizer's redzones and shadow memory are resident too: the count would be its. */
    cr_skip_test("resident memory is the sanitizer's, not the index's");
#endif
    cr_assert_eq(ocsp__index_new((size_t)1 << 30, &idx), 0);
    before = rss_kb();
    for (uint32_t i = 0; i < n; i++) {
        struct ocsp__status st = good(i + 1);
        make_serial(s, sizeof(s), i, 0);
        put_ok(idx, 0, s, sizeof(s), &st);
    }
    after = rss_kb();
    per_cert = (double)(after - before) * 1024.0 / n;
    cr_log_info("index: %.1f bytes per certificate", per_cert);
    cr_assert_leq(per_cert, 64.0, "%.1f bytes per certificate", per_cert);
    expect_found(idx, 0, s, sizeof(s), n, "last");
    ocsp__index_free(idx);
}

/* The load's bulk append: the same index as one put at a time, whether the tables are built
 * (ocsp__index_build, by parts as the loader's two threads do) or catch up at the first use of a
 * shard; puts after it (the feed) find and change what was appended, and add to it. */
static void append_and_check(int build)
{
    struct ocsp__index *idx = NULL;
    const size_t n = 50000;
    struct ocsp__put_item *items = calloc(n, sizeof(*items));
    struct ocsp__index_counts counts;

    cr_assert_not_null(items);
    cr_assert_eq(ocsp__index_new(1 << 20, &idx), 0);
    for (size_t i = 0; i < n; i++) {
        items[i].serial_len = 4 + i % 29; /* 4..32: past the inline octets too */
        make_serial(items[i].serial, items[i].serial_len, (uint32_t)i, i % 3 == 0);
        items[i].issuer = (int)(i % 5);
        items[i].st = good((int64_t)i + 1);
        if (i % 17 == 0) {
            items[i].st.status = STORE_REVOKED;
            items[i].st.reason = STORE_REASON_SUPERSEDED;
            items[i].st.revoked_at = 1700000000 + (int64_t)i;
        }
    }
    items[100].serial_len = 0;                                  /* skipped */
    items[200].serial_len = STORE_SERIAL_MAX + 1;               /* skipped */
    cr_assert_eq(ocsp__index_append_many(idx, items, 1234), 0); /* a partial chunk first */
    cr_assert_eq(ocsp__index_append_many(idx, items + 1234, n - 1234), 0);
    if (build) {
        cr_assert_eq(ocsp__index_build(idx, 1, 2), 0);
        cr_assert_eq(ocsp__index_build(idx, 0, 2), 0);
    }
    for (size_t i = 0; i < n; i++) {
        struct ocsp__status got;
        struct ocsp__cached *c = NULL;
        if (i == 100 || i == 200)
            continue;
        cr_assert_eq(ocsp__index_lookup(idx, items[i].issuer, items[i].serial, items[i].serial_len,
                                        OCSP__SHA1, &got, &c),
                     1, "#%zu not found", i);
        cr_assert_eq(got.feed_id, (int64_t)i + 1, "#%zu: feed_id %lld", i, (long long)got.feed_id);
        cr_assert_eq(got.status, items[i].st.status, "#%zu", i);
        cr_assert_eq(got.revoked_at, items[i].st.revoked_at, "#%zu", i);
        cr_assert_eq(ocsp__index_lookup(idx, (items[i].issuer + 1) % 5, items[i].serial,
                                        items[i].serial_len, OCSP__SHA1, &got, &c),
                     0, "#%zu under another issuer", i);
    }
    ocsp__index_counts(idx, &counts);
    cr_assert_eq(counts.entries, (uint64_t)(n - 2), "%llu entries",
                 (unsigned long long)counts.entries);
    /* The feed afterwards: a change to an appended certificate, a new one. */
    {
        struct ocsp__status st = good((int64_t)n + 1), got;
        struct ocsp__cached *c = NULL;
        unsigned char s[16];
        put_ok(idx, items[7].issuer, items[7].serial, items[7].serial_len, &st);
        cr_assert_eq(ocsp__index_lookup(idx, items[7].issuer, items[7].serial, items[7].serial_len,
                                        OCSP__SHA1, &got, &c),
                     1);
        cr_assert_eq(got.feed_id, (int64_t)n + 1);
        make_serial(s, sizeof(s), 999999, 0);
        put_ok(idx, 0, s, sizeof(s), &st);
        expect_found(idx, 0, s, sizeof(s), (int64_t)n + 1, "new after the load");
        ocsp__index_counts(idx, &counts);
        cr_assert_eq(counts.entries, (uint64_t)(n - 1));
    }
    ocsp__index_free(idx);
    free(items);
}

Test(index_compact, append_many_then_build)
{
    append_and_check(1);
}

Test(index_compact, append_many_then_catch_up_at_first_use)
{
    append_and_check(0);
}
