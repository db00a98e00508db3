#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pg-replica.sh start|stop: a real streaming hot standby of the private PostgreSQL that
# tests/support/with-postgres.sh started (PKIVA_TEST_PG, PKIVA_TEST_PG_DIR). start takes a base
# backup with pg_basebackup -R (the primary runs with wal_level = replica, PostgreSQL 15's
# default) into DIR/replica, starts it on its own port (a Unix socket in DIR, no TCP port) and
# prints "host=DIR port=PORT"; stop stops it and removes its folder.
set -euo pipefail

dir="${PKIVA_TEST_PG_DIR:?run under tests/support/with-postgres.sh}"
primary_port=$(printf '%s' "${PKIVA_TEST_PG:?}" | sed -n 's/.*[?&]port=\([0-9]*\).*/\1/p')
pgbin=""
for v in 15 16 17; do
  if [ -x "/usr/lib/postgresql/$v/bin/initdb" ]; then pgbin="/usr/lib/postgresql/$v/bin"; break; fi
done
[ -n "$pgbin" ] || { echo "pg-replica: PostgreSQL server binaries not found" >&2; exit 1; }
as_user=()
if [ "$(id -u)" -eq 0 ]; then as_user=(runuser -u nobody --); fi

case "${1:-}" in
start)
  "${as_user[@]}" rm -rf "$dir/replica"
  "${as_user[@]}" "$pgbin/pg_basebackup" -h "$dir" -p "$primary_port" -U pkiva -D "$dir/replica" \
    -R -X stream --no-sync >"$dir/basebackup.log" 2>&1 || { cat "$dir/basebackup.log" >&2; exit 1; }
  port=$(( 20000 + RANDOM % 20000 ))
  while [ "$port" = "$primary_port" ]; do port=$(( 20000 + RANDOM % 20000 )); done
  "${as_user[@]}" sh -c "printf 'port = %s\nhot_standby = on\n' $port >> '$dir/replica/postgresql.conf'"
  "${as_user[@]}" "$pgbin/pg_ctl" -D "$dir/replica" -l "$dir/replica.log" -w -t 60 start \
    >/dev/null || { cat "$dir/replica.log" >&2; exit 1; }
  echo "host=$dir port=$port"
  ;;
stop)
  "${as_user[@]}" "$pgbin/pg_ctl" -D "$dir/replica" -m immediate -w stop >/dev/null 2>&1 || true
  "${as_user[@]}" rm -rf "$dir/replica"
  ;;
*)
  echo "usage: pg-replica.sh start|stop" >&2
  exit 2
  ;;
esac
