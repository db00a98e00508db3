/* SPDX-License-Identifier: Apache-2.0 */
/* What the PostgreSQL reliability tests (cluster, replica) share. */
#ifndef PKIVA_REL_PG_H
#define PKIVA_REL_PG_H

#include <libpq-fe.h>

/* Runs one statement on the database at uri; the test fails unless it connects and the statement
 * succeeds (a command or rows). The caller PQclears the result. */
PGresult *rel_pg_exec(const char *uri, const char *text);

#endif
