/* SPDX-License-Identifier: Apache-2.0 */
/* Immutable, atomically reference-counted byte blobs: signed OCSP responses and CRLs are shared by
 * every loop thread and by writes still in flight; a refresh swaps in a new blob, never edits one. */
#include "util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct util_blob *util_blob_new(const void *data, size_t len)
{
    struct util_blob *blob = malloc(sizeof(*blob) + len);
    if (blob == NULL)
        return NULL;
    atomic_init(&blob->refs, 1);
    blob->len = len;
    if (data != NULL && len > 0)
        memcpy(blob->data, data, len);
    return blob;
}

struct util_blob *util_blob_ref(struct util_blob *blob)
{
    if (blob != NULL)
        atomic_fetch_add_explicit(&blob->refs, 1, memory_order_relaxed);
    return blob;
}

void util_blob_unref(struct util_blob *blob)
{
    if (blob == NULL)
        return;
    if (atomic_fetch_sub_explicit(&blob->refs, 1, memory_order_acq_rel) == 1)
        free(blob);
}
