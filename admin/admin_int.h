/* SPDX-License-Identifier: Apache-2.0 */
/* What admin/ shows its tests and fuzz target and no other module: the body checks of the admin
 * routes without a server. Private like any _int.h (the build lets only admin/ and tests/ see it). */
#ifndef PKIVA_ADMIN_INT_H
#define PKIVA_ADMIN_INT_H

#include <stddef.h>

/* The fuzz target's way in (tests/fuzz/fuzz_admin_json.c): runs the exact checks a body of the
 * admin route op ("revoke", "unrevoke", "status", "certificates", "crl/publish") goes through
 * before any store work, without a server. Returns 0 if the body would be accepted, 400 if it
 * would be refused, 503 if memory ran out while checking it, -1 for an unknown op. Allocates
 * nothing that outlives the call. */
int admin__parse_for_fuzz(const char *op, const unsigned char *body, size_t len);

#endif
