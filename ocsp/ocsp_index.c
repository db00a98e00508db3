/* SPDX-License-Identifier: Apache-2.0 */
/* The certificate status index: every certificate of the served issuers, keyed by (issuer, serial),
 * with the pre-signed responses that answer for it, plus a small direct-mapped cache for serials
 * the index does not know.
 *
 * DESIGN
 * - Size is the point (issue 18: 100 M certificates on a 16 GiB node, <= 64 bytes each). 64 shards
 *   chosen by the top bits of a seeded 64-bit hash; each shard holds its certificates in a dense
 *   array of 36-byte records (the serial inline up to 20 octets, issuer, serial length, the
 *   second of the last change, notAfter, version and a cache reference: no pointer, no
 *   per-certificate allocation) and finds them through an open-addressing table of 32-bit slots
 *   (24 bits of record number, 8 bits of the hash as a tag so that a probe rarely touches a
 *   record it does not want; linear probing, power-of-two size, grown at 3/4 load). About 43
 *   bytes per certificate in all; untouched capacity of the arrays grown by realloc is never
 *   resident, so only the table's halving load costs slack.
 * - What does not fit a record goes to side arrays of the shard, named by a number in the
 *   record: a revoked certificate (or any status with a reason, a revocation or invalidity date,
 *   a notAfter outside 1970..2106 or a version above 2^32) has an "extra" of 40 bytes, kept for
 *   good once taken; serials of 21 to 32 octets live in a byte arena. Revocations are a few
 *   percent of a CA's certificates, longer serials rare.
 * - Responses live in cache slots (two pointers and a CLOCK bit) that exist only for
 *   certificates with a signed response; a record names its slot. So the responses' cap, not the
 *   certificate count, bounds that memory, and the CLOCK sweep walks only the slots.
 * - Records, extras and slots are never moved between shards nor deleted (certificates do not
 *   disappear): a freed cache slot goes to a free list. Inserting after the load is an append and
 *   a table insert: there is no sorted structure to merge into. A shard holds at most 16 M
 *   records (the slot's 24 bits), about 10^9 certificates in all; past it a put fails (ENOMEM).
 * - The start-up load appends records without touching the table (ocsp__index_append_many):
 *   records [0, indexed) of a shard are in its table, the rest enter it at once, in a table sized
 *   for them all, at ocsp__index_build or at the shard's next use (shard_catch_up). Growing by
 *   doubling during the load would move every entry about once more.
 * - Locking: one mutex per shard, held for a probe and a reference-count increment (lookups), a
 *   probe and a pointer swap (changes, installs). Lookups take their own reference to the response
 *   and release the lock before any I/O. A plain mutex beats a rwlock here: critical sections are
 *   tens of nanoseconds and lookups also write (the CLOCK bit). Arrays are grown by realloc under
 *   the lock; nobody keeps a pointer into them past it (readers copy out).
 * - Versions: feed_id is the version of an entry. A response signed from a snapshot is installed
 *   only if the entry still has the snapshot's feed_id, so a revocation racing a signature can never
 *   be overwritten by the stale good response.
 * - Memory cap: each shard may hold max_bytes/64 of responses. Past it a CLOCK sweep over the cache
 *   slots evicts responses whose entry was not looked up since the last sweep, good ones first;
 *   revoked ones go only if the first pass freed nothing. Evicted responses are re-signed on demand.
 *   The cap counts the responses' bytes (ocsp__cached_cost), not the 24-byte slots. */
#include "ocsp_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARD_BITS 6
#define N_SHARDS (1u << SHARD_BITS)
#define INITIAL_SLOTS 64
#define RECENT_SLOTS 4096
#define RECENT_LOCKS 64

#define INLINE_SERIAL 20
#define SLOT_ID_BITS 24 /* a table slot: record number + 1 (0 = empty) | tag << 24 */
#define SLOT_ID_MASK ((1u << SLOT_ID_BITS) - 1)
#define MAX_RECS (SLOT_ID_MASK - 1) /* per shard: 16 M, so about 10^9 certificates in all */
/* meta: serial length - 1 (5 bits) | extra (1 bit) | issuer (10 bits) */
#define META_LEN_MASK 0x1fu
#define META_EXTRA 0x20u
#define META_ISSUER_SHIFT 6
#define MAX_ISSUER 1023
_Static_assert(OCSP_MAX_ISSUERS - 1 <= MAX_ISSUER, "issuer number does not fit a record");
_Static_assert(STORE_SERIAL_MAX <= META_LEN_MASK + 1, "serial length does not fit a record");

struct rec {
    /* The serial's octets, or (longer than INLINE_SERIAL) its offset in the shard's arena. */
    unsigned char serial[INLINE_SERIAL];
    uint16_t meta;
    /* Low 16 bits of the second of the last change (or of an answer of the state before it): see
     * ocsp__index_ims_ok. */
    uint16_t changed_lo;
    uint32_t not_after; /* without META_EXTRA: unix seconds; with it: the extra's number */
    uint32_t feed_id;   /* without META_EXTRA */
    uint32_t cache;     /* 0, or the cache slot's number + 1 */
};
_Static_assert(sizeof(struct rec) == 36, "struct rec grew: see the DESIGN's bytes per cert");

struct extra {
    int64_t revoked_at;
    int64_t invalidity_date;
    int64_t not_after;
    int64_t feed_id;
    int8_t status;
    int8_t reason;
};

struct cslot {
    struct ocsp__cached *resp[OCSP__N_ALGS];
    uint32_t rec;       /* owner; for a free slot, the next free slot's number + 1 */
    uint8_t referenced; /* CLOCK bit */
};

struct shard {
    pthread_mutex_t mutex;
    uint32_t *table;
    size_t mask; /* table slots - 1 */
    struct rec *recs;
    size_t count, recs_cap;
    size_t indexed; /* records [0, indexed) are in the table; the rest came by a bulk append */
    struct extra *extras;
    size_t n_extras, extras_cap;
    unsigned char *arena; /* serials longer than INLINE_SERIAL */
    size_t arena_len, arena_cap;
    struct cslot *cslots;
    size_t n_cslots, cslots_cap;
    uint32_t free_cslot; /* number + 1 of the first free slot, 0 = none */
    size_t bytes;        /* cost of cached responses */
    size_t cached;       /* number of cached responses */
    size_t hand;         /* CLOCK hand over cslots */
    uint64_t evictions;
};

struct recent_slot {
    int issuer;
    int alg;
    size_t serial_len;
    unsigned char serial[STORE_SERIAL_MAX];
    struct ocsp__cached *c;
};

struct ocsp__index {
    struct shard shards[N_SHARDS];
    size_t max_bytes, shard_max;
    uint64_t seed;
    _Atomic uint64_t recent_gen; /* bumped by every drop; see ocsp__recent_put */
    pthread_mutex_t recent_locks[RECENT_LOCKS];
    struct recent_slot recent[RECENT_SLOTS];
};

static uint64_t mix(uint64_t h, uint64_t w)
{
    h ^= w;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 31);
}

/* Eight octets at a time: the load hashes every serial once (and again when a table grows). */
static uint64_t key_hash(uint64_t seed, int issuer, const unsigned char *serial, size_t len)
{
    uint64_t h = seed ^ ((uint64_t)(unsigned)issuer * 0x9e3779b97f4a7c15ull) ^ len;
    uint64_t w = 0;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&w, serial + i, 8);
        h = mix(h, w);
    }
    if (i < len) {
        w = 0;
        memcpy(&w, serial + i, len - i);
        h = mix(h, w);
    }
    /* murmur3 finaliser: the top bits choose the shard */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Bits 32..39 of the hash: the shard takes the top bits and the table slot the low ones. */
static uint32_t tag_of(uint64_t h)
{
    return ((uint32_t)(h >> 32) & 0xffu) << SLOT_ID_BITS;
}

int ocsp__index_new(size_t max_bytes, struct ocsp__index **out)
{
    struct ocsp__index *idx = NULL;
    struct timespec ts;
    int rc = UTIL_OK;

    idx = calloc(1, sizeof(*idx));
    if (idx == NULL)
        return UTIL_ENOMEM;
    (void)clock_gettime(CLOCK_REALTIME, &ts); /* cannot fail with a valid clock id */
    idx->seed = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)idx;
    idx->max_bytes = max_bytes;
    idx->shard_max = max_bytes / N_SHARDS;
    for (unsigned i = 0; i < N_SHARDS; i++) {
        struct shard *s = &idx->shards[i];
        pthread_mutex_init(&s->mutex, NULL);
        s->table = calloc(INITIAL_SLOTS, sizeof(*s->table));
        if (s->table == NULL)
            rc = UTIL_ENOMEM;
        s->mask = INITIAL_SLOTS - 1;
    }
    for (unsigned i = 0; i < RECENT_LOCKS; i++)
        pthread_mutex_init(&idx->recent_locks[i], NULL);
    if (rc != UTIL_OK) {
        ocsp__index_free(idx);
        return rc;
    }
    *out = idx;
    return UTIL_OK;
}

void ocsp__index_free(struct ocsp__index *idx)
{
    if (idx == NULL)
        return;
    for (unsigned i = 0; i < N_SHARDS; i++) {
        struct shard *s = &idx->shards[i];
        for (size_t j = 0; j < s->n_cslots; j++)
            for (int a = 0; a < OCSP__N_ALGS; a++)
                ocsp__cached_unref(s->cslots[j].resp[a]);
        free(s->table);
        free(s->recs);
        free(s->extras);
        free(s->arena);
        free(s->cslots);
        pthread_mutex_destroy(&s->mutex);
    }
    for (unsigned i = 0; i < RECENT_SLOTS; i++)
        ocsp__cached_unref(idx->recent[i].c);
    for (unsigned i = 0; i < RECENT_LOCKS; i++)
        pthread_mutex_destroy(&idx->recent_locks[i]);
    free(idx);
}

static struct shard *shard_of(struct ocsp__index *idx, uint64_t h)
{
    return &idx->shards[h >> (64 - SHARD_BITS)];
}

static size_t rec_serial_len(const struct rec *r)
{
    return (size_t)(r->meta & META_LEN_MASK) + 1;
}

static int rec_issuer(const struct rec *r)
{
    return r->meta >> META_ISSUER_SHIFT;
}

static const unsigned char *rec_serial(const struct shard *s, const struct rec *r)
{
    uint32_t off;
    if (rec_serial_len(r) <= INLINE_SERIAL)
        return r->serial;
    memcpy(&off, r->serial, sizeof(off));
    return s->arena + off;
}

static const struct extra *rec_extra(const struct shard *s, const struct rec *r)
{
    return (r->meta & META_EXTRA) != 0 ? &s->extras[r->not_after] : NULL;
}

static int rec_revoked(const struct shard *s, const struct rec *r)
{
    const struct extra *x = rec_extra(s, r);
    return x != NULL && x->status == STORE_REVOKED;
}

static int64_t rec_not_after(const struct shard *s, const struct rec *r)
{
    const struct extra *x = rec_extra(s, r);
    return x != NULL ? x->not_after : (int64_t)r->not_after;
}

static int64_t rec_feed_id(const struct shard *s, const struct rec *r)
{
    const struct extra *x = rec_extra(s, r);
    return x != NULL ? x->feed_id : (int64_t)r->feed_id;
}

static void rec_status(const struct shard *s, const struct rec *r, struct ocsp__status *st)
{
    const struct extra *x = rec_extra(s, r);
    if (x != NULL) {
        st->status = x->status;
        st->reason = x->reason;
        st->revoked_at = x->revoked_at;
        st->invalidity_date = x->invalidity_date;
        st->not_after = x->not_after;
        st->feed_id = x->feed_id;
    } else {
        st->status = STORE_GOOD;
        st->reason = STORE_REASON_NONE;
        st->revoked_at = 0;
        st->invalidity_date = 0;
        st->not_after = r->not_after;
        st->feed_id = r->feed_id;
    }
}

/* Probe for the key; returns the record or NULL, and *free_slot the empty slot where it would go. */
static struct rec *probe(struct shard *s, uint64_t h, int issuer, const unsigned char *serial,
                         size_t len, uint32_t **free_slot)
{
    uint32_t tag = tag_of(h);
    size_t i = (size_t)h & s->mask;
    for (;;) {
        uint32_t v = s->table[i];
        struct rec *r;
        if (v == 0) {
            if (free_slot != NULL)
                *free_slot = &s->table[i];
            return NULL;
        }
        r = &s->recs[(v & SLOT_ID_MASK) - 1];
        if ((v & ~SLOT_ID_MASK) == tag && rec_issuer(r) == issuer && rec_serial_len(r) == len &&
            memcmp(rec_serial(s, r), serial, len) == 0)
            return r;
        i = (i + 1) & s->mask;
    }
}

static void table_enter(struct ocsp__index *idx, const struct shard *s, uint32_t *table,
                        size_t mask, size_t id)
{
    const struct rec *r = &s->recs[id];
    uint64_t h = key_hash(idx->seed, rec_issuer(r), rec_serial(s, r), rec_serial_len(r));
    size_t j = (size_t)h & mask;
    while (table[j] != 0)
        j = (j + 1) & mask;
    table[j] = tag_of(h) | (uint32_t)(id + 1);
}

/* A new table of n slots with every record. */
static int shard_rebuild(struct ocsp__index *idx, struct shard *s, size_t n)
{
    uint32_t *table = calloc(n, sizeof(*table));
    if (table == NULL)
        return UTIL_ENOMEM;
    /* In record order: the records are read in sequence, only the new table at random. */
    for (size_t id = 0; id < s->count; id++)
        table_enter(idx, s, table, n - 1, id);
    free(s->table);
    s->table = table;
    s->mask = n - 1;
    s->indexed = s->count;
    return UTIL_OK;
}

/* Enters the records a bulk append left out of the table (ocsp__index_append_many), in a table
 * sized once for them all. A no-op otherwise. */
static int shard_catch_up(struct ocsp__index *idx, struct shard *s)
{
    size_t n = s->mask + 1;
    if (s->indexed == s->count)
        return UTIL_OK;
    while (s->count * 4 > n * 3)
        n *= 2;
    if (n != s->mask + 1)
        return shard_rebuild(idx, s, n);
    for (; s->indexed < s->count; s->indexed++)
        table_enter(idx, s, s->table, s->mask, s->indexed);
    return UTIL_OK;
}

/* Makes room for one more element in a realloc-grown array (capacity doubles). */
static int reserve(void **array, size_t *cap, size_t used, size_t more, size_t elem, size_t first,
                   size_t limit)
{
    size_t n = *cap;
    void *grown;
    if (used + more <= *cap)
        return UTIL_OK;
    if (n == 0)
        n = first;
    while (n < used + more)
        n *= 2;
    if (n > limit)
        n = limit;
    if (n < used + more)
        return UTIL_ENOMEM;
    grown = realloc(*array, n * elem);
    if (grown == NULL)
        return UTIL_ENOMEM;
    *array = grown;
    *cap = n;
    return UTIL_OK;
}

static struct cslot *cslot_of(struct shard *s, const struct rec *r)
{
    return r->cache != 0 ? &s->cslots[r->cache - 1] : NULL;
}

static void drop_responses(struct shard *s, struct rec *r)
{
    struct cslot *c = cslot_of(s, r);
    if (c == NULL)
        return;
    for (int a = 0; a < OCSP__N_ALGS; a++) {
        if (c->resp[a] != NULL) {
            s->bytes -= ocsp__cached_cost(c->resp[a]);
            s->cached--;
            ocsp__cached_unref(c->resp[a]);
            c->resp[a] = NULL;
        }
    }
    c->referenced = 0;
    c->rec = s->free_cslot;
    s->free_cslot = r->cache;
    r->cache = 0;
}

/* Appends a record for a key known to be absent and enters it at slot (if not NULL: else the
 * table catches up later, see shard_catch_up). */
static int rec_add(struct shard *s, uint64_t h, uint32_t *slot, int issuer,
                   const unsigned char *serial, size_t len, struct rec **out)
{
    struct rec *r;
    int rc;

    if (s->count >= MAX_RECS)
        return UTIL_ENOMEM;
    rc = reserve((void **)&s->recs, &s->recs_cap, s->count, 1, sizeof(*s->recs), 64, MAX_RECS);
    if (rc != UTIL_OK)
        return rc;
    r = &s->recs[s->count];
    memset(r, 0, sizeof(*r));
    if (len > INLINE_SERIAL) {
        uint32_t off = (uint32_t)s->arena_len;
        rc = reserve((void **)&s->arena, &s->arena_cap, s->arena_len, len, 1, 1024, UINT32_MAX);
        if (rc != UTIL_OK)
            return rc;
        memcpy(s->arena + s->arena_len, serial, len);
        s->arena_len += len;
        memcpy(r->serial, &off, sizeof(off));
    } else {
        memcpy(r->serial, serial, len);
    }
    r->meta = (uint16_t)((len - 1) | ((unsigned)issuer << META_ISSUER_SHIFT));
    s->count++;
    if (slot != NULL) {
        *slot = tag_of(h) | (uint32_t)s->count;
        s->indexed++;
    }
    *out = r;
    return UTIL_OK;
}

/* Whether st fits a record without an extra: the common good certificate. */
static int fits_record(const struct ocsp__status *st)
{
    return st->status == STORE_GOOD && st->reason == STORE_REASON_NONE && st->revoked_at == 0 &&
           st->invalidity_date == 0 && st->not_after >= 0 && st->not_after <= UINT32_MAX &&
           st->feed_id >= 0 && st->feed_id <= UINT32_MAX;
}

static int rec_set_status(struct shard *s, struct rec *r, const struct ocsp__status *st)
{
    struct extra *x;
    if ((r->meta & META_EXTRA) == 0 && fits_record(st)) {
        r->not_after = (uint32_t)st->not_after;
        r->feed_id = (uint32_t)st->feed_id;
        return UTIL_OK;
    }
    if ((r->meta & META_EXTRA) == 0) {
        int rc = reserve((void **)&s->extras, &s->extras_cap, s->n_extras, 1, sizeof(*s->extras),
                         16, UINT32_MAX);
        if (rc != UTIL_OK)
            return rc;
        r->not_after = (uint32_t)s->n_extras++;
        r->feed_id = 0;
        r->meta |= META_EXTRA;
    }
    x = &s->extras[r->not_after];
    x->status = (int8_t)st->status;
    x->reason = (int8_t)st->reason;
    x->revoked_at = st->revoked_at;
    x->invalidity_date = st->invalidity_date;
    x->not_after = st->not_after;
    x->feed_id = st->feed_id;
    return UTIL_OK;
}

/* ocsp__index_put under the shard's lock, with the key's hash. */
static int put_locked(struct ocsp__index *idx, struct shard *s, uint64_t h, int issuer,
                      const unsigned char *serial, size_t serial_len, const struct ocsp__status *st,
                      int force, int *changed)
{
    struct rec *r = NULL;
    uint32_t *slot = NULL;
    int rc = shard_catch_up(idx, s);

    if (rc != UTIL_OK)
        return rc;
    r = probe(s, h, issuer, serial, serial_len, &slot);
    if (r == NULL) {
        if ((s->count + 1) * 4 > (s->mask + 1) * 3) {
            rc = shard_rebuild(idx, s, (s->mask + 1) * 2);
            if (rc != UTIL_OK)
                return rc;
            (void)probe(s, h, issuer, serial, serial_len, &slot); /* known absent */
        }
        rc = rec_add(s, h, slot, issuer, serial, serial_len, &r);
        if (rc != UTIL_OK)
            return rc;
        force = 1; /* a new entry takes any version */
    }
    if (!force && st->feed_id <= rec_feed_id(s, r))
        return UTIL_OK;
    rc = rec_set_status(s, r, st);
    if (rc != UTIL_OK)
        return rc;
    r->changed_lo = (uint16_t)st->changed_sec;
    drop_responses(s, r);
    *changed = 1;
    return UTIL_OK;
}

static int key_ok(int issuer, size_t serial_len)
{
    return serial_len > 0 && serial_len <= STORE_SERIAL_MAX && issuer >= 0 && issuer <= MAX_ISSUER;
}

int ocsp__index_put(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                    size_t serial_len, const struct ocsp__status *st, int force, int *changed)
{
    uint64_t h;
    struct shard *s;
    int rc;

    *changed = 0;
    if (!key_ok(issuer, serial_len))
        return UTIL_EINVAL;
    h = key_hash(idx->seed, issuer, serial, serial_len);
    s = shard_of(idx, h);
    pthread_mutex_lock(&s->mutex);
    rc = put_locked(idx, s, h, issuer, serial, serial_len, st, force, changed);
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

/* Items an append_many chunk sorts by shard: the stack holds their hashes and order. */
#define APPEND_CHUNK 1024

/* Appends one item to a locked shard without entering it in the table. */
static int append_locked(struct shard *s, const struct ocsp__put_item *x)
{
    struct rec *r = NULL;
    int rc = rec_add(s, 0, NULL, x->issuer, x->serial, x->serial_len, &r);
    if (rc != UTIL_OK)
        return rc;
    rc = rec_set_status(s, r, &x->st);
    r->changed_lo = (uint16_t)x->st.changed_sec;
    return rc;
}

int ocsp__index_append_many(struct ocsp__index *idx, const struct ocsp__put_item *items, size_t n)
{
    uint64_t h[APPEND_CHUNK];
    uint16_t order[APPEND_CHUNK];
    uint16_t end[N_SHARDS + 1];

    for (size_t base = 0; base < n; base += APPEND_CHUNK) {
        size_t m = n - base < APPEND_CHUNK ? n - base : APPEND_CHUNK;
        const struct ocsp__put_item *it = items + base;
        /* A counting sort by shard: one lock per shard and chunk, not per item. */
        memset(end, 0, sizeof(end));
        for (size_t i = 0; i < m; i++) {
            h[i] = key_ok(it[i].issuer, it[i].serial_len)
                       ? key_hash(idx->seed, it[i].issuer, it[i].serial, it[i].serial_len)
                       : 0;
            end[(h[i] >> (64 - SHARD_BITS)) + 1]++;
        }
        for (unsigned k = 0; k < N_SHARDS; k++)
            end[k + 1] = (uint16_t)(end[k + 1] + end[k]);
        for (size_t i = 0; i < m; i++)
            order[end[h[i] >> (64 - SHARD_BITS)]++] = (uint16_t)i;
        /* end[k] is now the end of shard k's run (and the beginning of k + 1's). */
        for (unsigned k = 0, from = 0; k < N_SHARDS; from = end[k], k++) {
            struct shard *s = &idx->shards[k];
            int rc = UTIL_OK;
            if (from == end[k])
                continue;
            pthread_mutex_lock(&s->mutex);
            for (unsigned j = from; j < end[k] && rc == UTIL_OK; j++)
                if (key_ok(it[order[j]].issuer, it[order[j]].serial_len))
                    rc = append_locked(s, &it[order[j]]); /* else skipped, as the feed does */
            pthread_mutex_unlock(&s->mutex);
            if (rc != UTIL_OK)
                return rc;
        }
    }
    return UTIL_OK;
}

int ocsp__index_build(struct ocsp__index *idx, unsigned part, unsigned parts)
{
    int rc = UTIL_OK;
    for (unsigned k = part; k < N_SHARDS && rc == UTIL_OK; k += parts) {
        struct shard *s = &idx->shards[k];
        pthread_mutex_lock(&s->mutex);
        rc = shard_catch_up(idx, s);
        pthread_mutex_unlock(&s->mutex);
    }
    return rc;
}

int ocsp__index_ims_ok(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int64_t this_update)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct rec *r;
    int ok = 1;

    pthread_mutex_lock(&s->mutex);
    (void)shard_catch_up(idx, s); /* out of memory: the appended records stay unseen */
    r = probe(s, h, issuer, serial, serial_len, NULL);
    /* Modulo 2^16 s (18 h): a response made 18 h after a change may be refused too (harmless:
     * a 200 instead of a 304), one made in the window never passes. */
    if (r != NULL && (uint16_t)(r->changed_lo - (uint16_t)this_update) < OCSP__IMS_WINDOW)
        ok = 0;
    pthread_mutex_unlock(&s->mutex);
    return ok;
}

void ocsp__index_note_changed(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                              size_t serial_len, int64_t sec)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct rec *r;

    pthread_mutex_lock(&s->mutex);
    (void)shard_catch_up(idx, s); /* out of memory: the appended records stay unseen */
    r = probe(s, h, issuer, serial, serial_len, NULL);
    if (r != NULL)
        r->changed_lo = (uint16_t)sec;
    pthread_mutex_unlock(&s->mutex);
}

int ocsp__index_lookup(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int alg, struct ocsp__status *st,
                       struct ocsp__cached **cached)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct rec *r;
    int found = 0;

    *cached = NULL;
    pthread_mutex_lock(&s->mutex);
    (void)shard_catch_up(idx, s); /* out of memory: the appended records stay unseen */
    r = probe(s, h, issuer, serial, serial_len, NULL);
    if (r != NULL) {
        struct cslot *c = cslot_of(s, r);
        found = 1;
        rec_status(s, r, st);
        if (c != NULL) {
            c->referenced = 1;
            *cached = ocsp__cached_ref(c->resp[alg]);
        }
    }
    pthread_mutex_unlock(&s->mutex);
    return found;
}

/* One CLOCK step over the shard's cache slots; frees responses until the shard is under its
 * share of the cap. */
static void shard_evict(struct ocsp__index *idx, struct shard *s)
{
    for (int pass = 0; pass < 3 && s->bytes > idx->shard_max; pass++) {
        for (size_t steps = 0; steps <= s->n_cslots && s->bytes > idx->shard_max; steps++) {
            struct cslot *c;
            struct rec *r;
            if (s->hand >= s->n_cslots)
                s->hand = 0;
            c = &s->cslots[s->hand++];
            if (c->resp[0] == NULL && c->resp[1] == NULL)
                continue; /* free */
            r = &s->recs[c->rec];
            if (c->referenced && pass < 2) {
                c->referenced = 0;
                continue;
            }
            if (rec_revoked(s, r) && pass < 2)
                continue;
            drop_responses(s, r);
            s->evictions++;
        }
    }
}

static int cslot_take(struct shard *s, struct rec *r)
{
    uint32_t n;
    struct cslot *c;
    if (s->free_cslot != 0) {
        n = s->free_cslot;
        s->free_cslot = s->cslots[n - 1].rec;
    } else {
        int rc = reserve((void **)&s->cslots, &s->cslots_cap, s->n_cslots, 1, sizeof(*s->cslots),
                         16, UINT32_MAX - 1);
        if (rc != UTIL_OK)
            return rc;
        n = (uint32_t)++s->n_cslots;
    }
    c = &s->cslots[n - 1];
    memset(c, 0, sizeof(*c));
    c->rec = (uint32_t)(r - s->recs);
    r->cache = n;
    return UTIL_OK;
}

int ocsp__index_install(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                        size_t serial_len, int alg, int64_t feed_id, struct ocsp__cached *c)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct rec *r;
    struct cslot *slot;
    struct ocsp__cached *old = NULL;
    int installed = 0;

    pthread_mutex_lock(&s->mutex);
    (void)shard_catch_up(idx, s); /* out of memory: the appended records stay unseen */
    r = probe(s, h, issuer, serial, serial_len, NULL);
    if (r == NULL || rec_feed_id(s, r) != feed_id)
        goto out;
    if (r->cache == 0 && cslot_take(s, r) != UTIL_OK)
        goto out; /* out of memory: the response is signed again on demand */
    slot = cslot_of(s, r);
    old = slot->resp[alg];
    if (old != NULL) {
        s->bytes -= ocsp__cached_cost(old);
        s->cached--;
    }
    slot->resp[alg] = ocsp__cached_ref(c);
    s->bytes += ocsp__cached_cost(c);
    s->cached++;
    slot->referenced = 1;
    installed = 1;
    if (s->bytes > idx->shard_max)
        shard_evict(idx, s);
out:
    pthread_mutex_unlock(&s->mutex);
    ocsp__cached_unref(old); /* outside the lock: may free */
    return installed;
}

size_t ocsp__index_collect_due(struct ocsp__index *idx, struct ocsp__scan *scan, int64_t now,
                               int allow_new, int64_t skip_expired_before, struct ocsp__due *out,
                               size_t max)
{
    size_t n = 0;
    scan->wrapped = 0;
    while (n < max) {
        struct shard *s;
        if (scan->shard >= N_SHARDS) {
            scan->shard = 0;
            scan->slot = 0;
            scan->wrapped = 1;
            break;
        }
        s = &idx->shards[scan->shard];
        pthread_mutex_lock(&s->mutex);
        while (n < max && scan->slot < s->count) {
            struct rec *r = &s->recs[scan->slot++];
            struct cslot *c = cslot_of(s, r);
            if (rec_not_after(s, r) < skip_expired_before)
                continue;
            for (int a = 0; a < OCSP__N_ALGS && n < max; a++) {
                struct ocsp__cached *resp = c != NULL ? c->resp[a] : NULL;
                int due = resp != NULL ? resp->refresh_at <= now : (a == OCSP__SHA1 && allow_new);
                if (!due)
                    continue;
                out[n].issuer = rec_issuer(r);
                out[n].alg = a;
                out[n].serial_len = rec_serial_len(r);
                memcpy(out[n].serial, rec_serial(s, r), out[n].serial_len);
                rec_status(s, r, &out[n].st);
                n++;
            }
        }
        if (scan->slot >= s->count) {
            scan->shard++;
            scan->slot = 0;
        }
        pthread_mutex_unlock(&s->mutex);
    }
    return n;
}

void ocsp__index_counts(struct ocsp__index *idx, struct ocsp__index_counts *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < N_SHARDS; i++) {
        struct shard *s = &idx->shards[i];
        pthread_mutex_lock(&s->mutex);
        out->entries += s->count;
        out->cached += s->cached;
        out->bytes += s->bytes;
        out->evictions += s->evictions;
        pthread_mutex_unlock(&s->mutex);
    }
}

size_t ocsp__index_max_bytes(const struct ocsp__index *idx)
{
    return idx->max_bytes;
}

/* ---- recent cache for serials outside the index --------------------------------------------- */

static size_t recent_slot_of(struct ocsp__index *idx, int issuer, int alg,
                             const unsigned char *serial, size_t len)
{
    return (size_t)(key_hash(idx->seed, issuer * OCSP__N_ALGS + alg, serial, len) % RECENT_SLOTS);
}

struct ocsp__cached *ocsp__recent_get(struct ocsp__index *idx, int issuer, int alg,
                                      const unsigned char *serial, size_t serial_len)
{
    size_t i = recent_slot_of(idx, issuer, alg, serial, serial_len);
    struct recent_slot *r = &idx->recent[i];
    struct ocsp__cached *c = NULL;
    pthread_mutex_lock(&idx->recent_locks[i % RECENT_LOCKS]);
    if (r->c != NULL && r->issuer == issuer && r->alg == alg && r->serial_len == serial_len &&
        memcmp(r->serial, serial, serial_len) == 0)
        c = ocsp__cached_ref(r->c);
    pthread_mutex_unlock(&idx->recent_locks[i % RECENT_LOCKS]);
    return c;
}

uint64_t ocsp__recent_gen(struct ocsp__index *idx)
{
    return atomic_load(&idx->recent_gen);
}

/* A drop bumps the generation before it takes the slot lock, and a put compares it under that
 * lock: a put either lands before the drop clears the slot or sees the new generation and gives
 * up. So an "unknown" signed before an issue change can never outlive that change. */
void ocsp__recent_put(struct ocsp__index *idx, int issuer, int alg, const unsigned char *serial,
                      size_t serial_len, struct ocsp__cached *c, uint64_t gen)
{
    size_t i = recent_slot_of(idx, issuer, alg, serial, serial_len);
    struct recent_slot *r = &idx->recent[i];
    struct ocsp__cached *old;
    if (serial_len > STORE_SERIAL_MAX)
        return;
    pthread_mutex_lock(&idx->recent_locks[i % RECENT_LOCKS]);
    if (atomic_load(&idx->recent_gen) != gen) {
        pthread_mutex_unlock(&idx->recent_locks[i % RECENT_LOCKS]);
        return;
    }
    old = r->c;
    r->c = ocsp__cached_ref(c);
    r->issuer = issuer;
    r->alg = alg;
    r->serial_len = serial_len;
    memcpy(r->serial, serial, serial_len);
    pthread_mutex_unlock(&idx->recent_locks[i % RECENT_LOCKS]);
    ocsp__cached_unref(old);
}

void ocsp__recent_drop(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len)
{
    atomic_fetch_add(&idx->recent_gen, 1);
    for (int alg = 0; alg < OCSP__N_ALGS; alg++) {
        size_t i = recent_slot_of(idx, issuer, alg, serial, serial_len);
        struct recent_slot *r = &idx->recent[i];
        struct ocsp__cached *old = NULL;
        pthread_mutex_lock(&idx->recent_locks[i % RECENT_LOCKS]);
        if (r->c != NULL && r->issuer == issuer && r->alg == alg && r->serial_len == serial_len &&
            memcmp(r->serial, serial, serial_len) == 0) {
            old = r->c;
            r->c = NULL;
        }
        pthread_mutex_unlock(&idx->recent_locks[i % RECENT_LOCKS]);
        ocsp__cached_unref(old);
    }
}
