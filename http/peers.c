/* SPDX-License-Identifier: Apache-2.0 */
/* Open connections per client address, for max_connections_per_client: one table for the whole
 * process (the kernel spreads one client's connections over every loop's SO_REUSEPORT socket), so
 * a single address cannot hold more than its share however the connections land. */
#include "http_int.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* One address with at least one open connection. Nodes live in one array allocated at start-up
 * and are linked by index; an address is removed when its last connection closes. */
struct peer_node {
    unsigned char key[HTTP__PEER_KEY_LEN];
    int count;
    int next; /* next node in the bucket or in the free list; -1 = none */
};

struct http__peers {
    uv_mutex_t mutex;
    int *buckets; /* n_buckets heads, -1 = empty */
    unsigned n_buckets;
    struct peer_node *nodes;
    int free_head;
};

void http__peer_key(const struct sockaddr *sa, unsigned char key[HTTP__PEER_KEY_LEN])
{
    static const unsigned char v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    memset(key, 0, HTTP__PEER_KEY_LEN);
    if (sa->sa_family == AF_INET) {
        memcpy(key, v4_mapped, sizeof(v4_mapped));
        memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        /* An IPv4 client on a dual-stack socket counts as its IPv4 address; an IPv6 client as
         * its /64, the smallest prefix a site is given, so rotating addresses inside it gains
         * nothing. */
        if (memcmp(a, v4_mapped, sizeof(v4_mapped)) == 0)
            memcpy(key, a, 16);
        else
            memcpy(key, a, 8);
    }
}

static unsigned key_hash(const unsigned char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a: the keys are short and the table private */

    for (int i = 0; i < HTTP__PEER_KEY_LEN; i++)
        h = (h ^ key[i]) * 16777619u;
    return h;
}

int http__peers_new(int max_entries, struct http__peers **out)
{
    struct http__peers *peers = NULL;
    unsigned n = 16;
    int rc = UTIL_ENOMEM;

    *out = NULL;
    while (n < (unsigned)max_entries && n < (1u << 30))
        n <<= 1;
    peers = calloc(1, sizeof(*peers));
    if (peers == NULL)
        goto out;
    peers->n_buckets = n;
    peers->buckets = malloc((size_t)n * sizeof(*peers->buckets));
    peers->nodes = calloc((size_t)max_entries, sizeof(*peers->nodes));
    if (peers->buckets == NULL || peers->nodes == NULL || uv_mutex_init(&peers->mutex) != 0) {
        free(peers->buckets);
        free(peers->nodes);
        free(peers);
        peers = NULL;
        goto out;
    }
    for (unsigned i = 0; i < n; i++)
        peers->buckets[i] = -1;
    for (int i = 0; i < max_entries; i++)
        peers->nodes[i].next = i + 1 < max_entries ? i + 1 : -1;
    peers->free_head = 0;
    *out = peers;
    rc = UTIL_OK;
out:
    return rc;
}

void http__peers_free(struct http__peers *peers)
{
    if (peers == NULL)
        return;
    uv_mutex_destroy(&peers->mutex);
    free(peers->buckets);
    free(peers->nodes);
    free(peers);
}

int http__peers_take(struct http__peers *peers, const unsigned char *key, int cap)
{
    unsigned b = key_hash(key) & (peers->n_buckets - 1);
    int i = 0;
    int ok = 0;

    uv_mutex_lock(&peers->mutex);
    for (i = peers->buckets[b]; i >= 0; i = peers->nodes[i].next)
        if (memcmp(peers->nodes[i].key, key, HTTP__PEER_KEY_LEN) == 0)
            break;
    if (i >= 0) {
        if (peers->nodes[i].count < cap) {
            peers->nodes[i].count++;
            ok = 1;
        }
    } else if (peers->free_head >= 0) {
        /* Never empty for a counted connection: there are as many nodes as connections. */
        i = peers->free_head;
        peers->free_head = peers->nodes[i].next;
        memcpy(peers->nodes[i].key, key, HTTP__PEER_KEY_LEN);
        peers->nodes[i].count = 1;
        peers->nodes[i].next = peers->buckets[b];
        peers->buckets[b] = i;
        ok = 1;
    }
    uv_mutex_unlock(&peers->mutex);
    return ok;
}

void http__peers_release(struct http__peers *peers, const unsigned char *key)
{
    unsigned b = key_hash(key) & (peers->n_buckets - 1);
    int *link = NULL;

    uv_mutex_lock(&peers->mutex);
    for (link = &peers->buckets[b]; *link >= 0; link = &peers->nodes[*link].next) {
        struct peer_node *node = &peers->nodes[*link];
        int i = *link;
        if (memcmp(node->key, key, HTTP__PEER_KEY_LEN) != 0)
            continue;
        if (--node->count == 0) {
            *link = node->next;
            node->next = peers->free_head;
            peers->free_head = i;
        }
        break;
    }
    uv_mutex_unlock(&peers->mutex);
}
