/* SPDX-License-Identifier: Apache-2.0 */
#include "pg.h"

#include <criterion/criterion.h>

PGresult *ts_pg_exec(const char *uri, const char *text)
{
    PGconn *conn = PQconnectdb(uri);
    PGresult *res = NULL;

    cr_assert_eq(PQstatus(conn), CONNECTION_OK, "%s", PQerrorMessage(conn));
    res = PQexec(conn, text);
    cr_assert(PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK,
              "%s: %s", text, PQerrorMessage(conn));
    PQfinish(conn);
    return res;
}
