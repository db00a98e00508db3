/* SPDX-License-Identifier: Apache-2.0 */
/* What the tests that run statements on a PostgreSQL server directly share (store, cluster,
 * replica): testsupport_pg. */
#ifndef PKIVA_TESTS_SUPPORT_PG_H
#define PKIVA_TESTS_SUPPORT_PG_H

#include <libpq-fe.h>

/* Runs one statement on the database at uri; the test fails unless it connects and the statement
 * succeeds (a command or rows). The caller PQclears the result. */
PGresult *ts_pg_exec(const char *uri, const char *text);

#endif
