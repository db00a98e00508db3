#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# with-postgres.sh COMMAND [ARGS...]: runs COMMAND against a private PostgreSQL 15 made for it and
# removes that server afterwards. initdb runs in a fresh temporary folder as an unprivileged user
# (nobody when run as root), the server listens only on a Unix socket in that folder (no TCP port,
# nothing shared with a system service), with fsync off because the data is thrown away. COMMAND
# gets PKIVA_TEST_PG, a libpq URI of the maintenance database "postgres" as superuser "pkiva";
# tests create their own databases in it. Exits with COMMAND's status.
set -euo pipefail

pgbin=""
for v in 15 16 17; do
  if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then pgbin="/usr/lib/postgresql/$v/bin"; break; fi
done
if [ -z "$pgbin" ]; then
  echo "with-postgres: PostgreSQL server binaries not found (apt-get install postgresql-15)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/pkiva-pg.XXXXXX)
chmod 0755 "$dir"
as_user=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody:nogroup "$dir"
  as_user=(runuser -u nobody --)
fi
cleanup() {
  "${as_user[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_user[@]}" "$pgbin/initdb" -D "$dir/data" -U pkiva --auth=trust -E UTF8 --no-sync \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
# A port number only names the socket file; listen_addresses='' opens no TCP port.
port=$(( 20000 + RANDOM % 20000 ))
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$dir'
port = $port
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
CONF
"${as_user[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
  >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

export PKIVA_TEST_PG="postgresql:///postgres?host=$dir&port=$port&user=pkiva"
export PKIVA_TEST_PG_DIR="$dir"
# Shell commands that stop and start the server again (store outage tests).
runas=""
if [ "$(id -u)" -eq 0 ]; then runas="runuser -u nobody -- "; fi
export PKIVA_TEST_PG_STOP="$runas$pgbin/pg_ctl -D $dir/data -w -m fast stop"
export PKIVA_TEST_PG_START="$runas$pgbin/pg_ctl -D $dir/data -l $dir/server.log -w -t 60 start"
set +e
"$@"
status=$?
set -e
exit $status
