/* SPDX-License-Identifier: Apache-2.0 */
/* The certificate status index: every certificate of the served issuers, keyed by (issuer, serial),
 * with the pre-signed responses that answer for it, plus a small direct-mapped cache for serials
 * the index does not know.
 *
 * DESIGN
 * - Layout: 64 shards chosen by the top bits of a seeded 64-bit hash; each shard is an open-
 *   addressing table (linear probing, power-of-two size, grown at 3/4 load) of 56-byte entries and an
 *   append-only arena holding the serial octets (entries refer to them by offset, so growing either
 *   never invalidates anything a reader keeps: readers copy out under the lock). About 75 bytes per
 *   certificate: ten million certificates fit in under 1 GiB before responses.
 * - Entries are never deleted (certificates do not disappear), so no tombstones.
 * - Locking: one mutex per shard, held for a probe and a reference-count increment (lookups), a
 *   probe and a pointer swap (changes, installs). Lookups take their own reference to the response
 *   and release the lock before any I/O. A plain mutex beats a rwlock here: critical sections are
 *   tens of nanoseconds and lookups also write (the CLOCK bit).
 * - Versions: feed_id is the version of an entry. A response signed from a snapshot is installed
 *   only if the entry still has the snapshot's feed_id, so a revocation racing a signature can never
 *   be overwritten by the stale good response.
 * - Memory cap: each shard may hold max_bytes/64 of responses. Past it a CLOCK sweep evicts
 *   responses whose entry was not looked up since the last sweep, good ones first; revoked ones go
 *   only if the first pass freed nothing. Evicted responses are re-signed on demand. */
#include "ocsp_int.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SHARD_BITS 6
#define N_SHARDS (1u << SHARD_BITS)
#define INITIAL_SLOTS 64
#define RECENT_SLOTS 4096
#define RECENT_LOCKS 64

struct entry {
    uint32_t hash;       /* low 32 bits of the key hash; slot = hash & mask */
    uint32_t serial_off; /* into the shard's arena */
    uint8_t serial_len;  /* 0 = empty slot */
    uint8_t status;
    int8_t reason;
    uint8_t referenced; /* CLOCK bit */
    uint16_t issuer;
    /* Low 16 bits of the second of the last change (or of an answer of the state before it): see
     * ocsp__index_ims_ok. It fills the padding before revoked_at, so it costs no memory. */
    uint16_t changed_lo;
    int64_t revoked_at;
    int64_t invalidity_date;
    int64_t not_after;
    int64_t feed_id;
    struct ocsp__cached *resp[OCSP__N_ALGS];
};
/* changed_lo sits in the padding: the entry keeps its size (see the DESIGN's bytes per cert). */
_Static_assert(sizeof(struct entry) ==
                   16 + 4 * sizeof(int64_t) + OCSP__N_ALGS * sizeof(struct ocsp__cached *),
               "struct entry grew");

struct shard {
    pthread_mutex_t mutex;
    struct entry *slots;
    size_t mask; /* slots - 1 */
    size_t count;
    unsigned char *arena;
    size_t arena_len, arena_cap;
    size_t bytes;  /* cost of cached responses */
    size_t cached; /* number of cached responses */
    size_t hand;   /* CLOCK hand */
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

static uint64_t key_hash(uint64_t seed, int issuer, const unsigned char *serial, size_t len)
{
    uint64_t h = seed ^ ((uint64_t)(unsigned)issuer * 0x9e3779b97f4a7c15ull);
    for (size_t i = 0; i < len; i++) {
        h ^= serial[i];
        h *= 0x100000001b3ull;
    }
    /* murmur3 finaliser: FNV alone leaves the top bits (the shard) poorly mixed */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
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
        s->slots = calloc(INITIAL_SLOTS, sizeof(*s->slots));
        if (s->slots == NULL)
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
        if (s->slots != NULL) {
            for (size_t j = 0; j <= s->mask; j++)
                for (int a = 0; a < OCSP__N_ALGS; a++)
                    ocsp__cached_unref(s->slots[j].resp[a]);
        }
        free(s->slots);
        free(s->arena);
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

/* Probe for the key; returns the entry or NULL, and *free_slot the empty slot where it would go. */
static struct entry *probe(struct shard *s, uint32_t h32, int issuer, const unsigned char *serial,
                           size_t len, struct entry **free_slot)
{
    size_t i = h32 & s->mask;
    for (;;) {
        struct entry *e = &s->slots[i];
        if (e->serial_len == 0) {
            if (free_slot != NULL)
                *free_slot = e;
            return NULL;
        }
        if (e->hash == h32 && e->issuer == (uint16_t)issuer && e->serial_len == len &&
            memcmp(s->arena + e->serial_off, serial, len) == 0)
            return e;
        i = (i + 1) & s->mask;
    }
}

static int shard_grow(struct shard *s)
{
    size_t new_n = (s->mask + 1) * 2;
    struct entry *slots = calloc(new_n, sizeof(*slots));
    if (slots == NULL)
        return UTIL_ENOMEM;
    for (size_t i = 0; i <= s->mask; i++) {
        struct entry *e = &s->slots[i];
        size_t j;
        if (e->serial_len == 0)
            continue;
        j = e->hash & (new_n - 1);
        while (slots[j].serial_len != 0)
            j = (j + 1) & (new_n - 1);
        slots[j] = *e;
    }
    free(s->slots);
    s->slots = slots;
    s->mask = new_n - 1;
    return UTIL_OK;
}

static void drop_responses(struct shard *s, struct entry *e)
{
    for (int a = 0; a < OCSP__N_ALGS; a++) {
        if (e->resp[a] != NULL) {
            s->bytes -= ocsp__cached_cost(e->resp[a]);
            s->cached--;
            ocsp__cached_unref(e->resp[a]);
            e->resp[a] = NULL;
        }
    }
}

int ocsp__index_put(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                    size_t serial_len, const struct ocsp__status *st, int force, int *changed)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct entry *e = NULL;
    struct entry *slot = NULL;
    int rc = UTIL_OK;

    *changed = 0;
    if (serial_len == 0 || serial_len > STORE_SERIAL_MAX || issuer < 0 || issuer > UINT16_MAX)
        return UTIL_EINVAL;
    pthread_mutex_lock(&s->mutex);
    e = probe(s, (uint32_t)h, issuer, serial, serial_len, &slot);
    if (e == NULL) {
        if ((s->count + 1) * 4 > (s->mask + 1) * 3) {
            rc = shard_grow(s);
            if (rc != UTIL_OK)
                goto out;
            (void)probe(s, (uint32_t)h, issuer, serial, serial_len, &slot); /* known absent */
        }
        if (s->arena_len + serial_len > s->arena_cap) {
            size_t cap = s->arena_cap ? s->arena_cap * 2 : 1024;
            unsigned char *arena;
            if (cap > UINT32_MAX) {
                rc = UTIL_ENOMEM;
                goto out;
            }
            arena = realloc(s->arena, cap);
            if (arena == NULL) {
                rc = UTIL_ENOMEM;
                goto out;
            }
            s->arena = arena;
            s->arena_cap = cap;
        }
        e = slot;
        memset(e, 0, sizeof(*e));
        e->hash = (uint32_t)h;
        e->serial_off = (uint32_t)s->arena_len;
        memcpy(s->arena + s->arena_len, serial, serial_len);
        s->arena_len += serial_len;
        e->serial_len = (uint8_t)serial_len;
        e->issuer = (uint16_t)issuer;
        s->count++;
        e->feed_id = -1; /* any real version wins */
    }
    if (!force && st->feed_id <= e->feed_id)
        goto out;
    e->status = (uint8_t)st->status;
    e->reason = (int8_t)st->reason;
    e->revoked_at = st->revoked_at;
    e->invalidity_date = st->invalidity_date;
    e->not_after = st->not_after;
    e->feed_id = st->feed_id;
    e->changed_lo = (uint16_t)st->changed_sec;
    drop_responses(s, e);
    *changed = 1;
out:
    pthread_mutex_unlock(&s->mutex);
    return rc;
}

int ocsp__index_ims_ok(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int64_t this_update)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct entry *e;
    int ok = 1;

    pthread_mutex_lock(&s->mutex);
    e = probe(s, (uint32_t)h, issuer, serial, serial_len, NULL);
    /* Modulo 2^16 s (18 h): a response made 18 h after a change may be refused too (harmless:
     * a 200 instead of a 304), one made in the window never passes. */
    if (e != NULL && (uint16_t)(e->changed_lo - (uint16_t)this_update) < OCSP__IMS_WINDOW)
        ok = 0;
    pthread_mutex_unlock(&s->mutex);
    return ok;
}

void ocsp__index_note_changed(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                              size_t serial_len, int64_t sec)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct entry *e;

    pthread_mutex_lock(&s->mutex);
    e = probe(s, (uint32_t)h, issuer, serial, serial_len, NULL);
    if (e != NULL)
        e->changed_lo = (uint16_t)sec;
    pthread_mutex_unlock(&s->mutex);
}

int ocsp__index_lookup(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                       size_t serial_len, int alg, struct ocsp__status *st,
                       struct ocsp__cached **cached)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct entry *e;
    int found = 0;

    *cached = NULL;
    pthread_mutex_lock(&s->mutex);
    e = probe(s, (uint32_t)h, issuer, serial, serial_len, NULL);
    if (e != NULL) {
        found = 1;
        st->status = e->status;
        st->reason = e->reason;
        st->revoked_at = e->revoked_at;
        st->invalidity_date = e->invalidity_date;
        st->not_after = e->not_after;
        st->feed_id = e->feed_id;
        e->referenced = 1;
        *cached = ocsp__cached_ref(e->resp[alg]);
    }
    pthread_mutex_unlock(&s->mutex);
    return found;
}

/* One CLOCK step over the shard; frees responses until the shard is under its share of the cap. */
static void shard_evict(struct ocsp__index *idx, struct shard *s)
{
    for (int pass = 0; pass < 3 && s->bytes > idx->shard_max; pass++) {
        for (size_t steps = 0; steps <= s->mask && s->bytes > idx->shard_max; steps++) {
            struct entry *e = &s->slots[s->hand];
            s->hand = (s->hand + 1) & s->mask;
            if (e->serial_len == 0 || (e->resp[0] == NULL && e->resp[1] == NULL))
                continue;
            if (e->referenced && pass < 2) {
                e->referenced = 0;
                continue;
            }
            if (e->status == STORE_REVOKED && pass < 2)
                continue;
            drop_responses(s, e);
            s->evictions++;
        }
    }
}

int ocsp__index_install(struct ocsp__index *idx, int issuer, const unsigned char *serial,
                        size_t serial_len, int alg, int64_t feed_id, struct ocsp__cached *c)
{
    uint64_t h = key_hash(idx->seed, issuer, serial, serial_len);
    struct shard *s = shard_of(idx, h);
    struct entry *e;
    struct ocsp__cached *old = NULL;
    int installed = 0;

    pthread_mutex_lock(&s->mutex);
    e = probe(s, (uint32_t)h, issuer, serial, serial_len, NULL);
    if (e != NULL && e->feed_id == feed_id) {
        old = e->resp[alg];
        if (old != NULL) {
            s->bytes -= ocsp__cached_cost(old);
            s->cached--;
        }
        e->resp[alg] = ocsp__cached_ref(c);
        s->bytes += ocsp__cached_cost(c);
        s->cached++;
        e->referenced = 1;
        installed = 1;
        if (s->bytes > idx->shard_max)
            shard_evict(idx, s);
    }
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
        while (n < max && scan->slot <= s->mask) {
            struct entry *e = &s->slots[scan->slot++];
            if (e->serial_len == 0 || e->not_after < skip_expired_before)
                continue;
            for (int a = 0; a < OCSP__N_ALGS && n < max; a++) {
                int due = e->resp[a] != NULL ? e->resp[a]->refresh_at <= now
                                             : (a == OCSP__SHA1 && allow_new);
                if (!due)
                    continue;
                out[n].issuer = e->issuer;
                out[n].alg = a;
                out[n].serial_len = e->serial_len;
                memcpy(out[n].serial, s->arena + e->serial_off, e->serial_len);
                out[n].st.status = e->status;
                out[n].st.reason = e->reason;
                out[n].st.revoked_at = e->revoked_at;
                out[n].st.invalidity_date = e->invalidity_date;
                out[n].st.not_after = e->not_after;
                out[n].st.feed_id = e->feed_id;
                n++;
            }
        }
        if (scan->slot > s->mask) {
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
