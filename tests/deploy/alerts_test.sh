#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_alerts: conf/prometheus/pkiva-rules.yml passes `promtool check rules` and `promtool test
# rules` (tests/deploy/pkiva-rules.test.yml: every alert fires on its situation and not before);
# the Grafana dashboard is valid JSON; and every pkiva_* metric the rules and the dashboard use is
# exported by a real server (the embedded demo, scraped over its mutual-TLS admin listener).
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test_alerts: FAIL: $*" >&2; exit 1; }
rules="$src/conf/prometheus/pkiva-rules.yml"
dashboard="$src/conf/grafana/pkiva-dashboard.json"

promtool check rules "$rules" || fail "promtool check rules"
(cd "$src/tests/deploy" && promtool test rules pkiva-rules.test.yml) || fail "promtool test rules"
python3 -m json.tool "$dashboard" >/dev/null || fail "the dashboard is not JSON"
# Every alert has a test.
for alert in $(sed -n 's/^ *- alert: //p' "$rules"); do
  grep -q "alertname: $alert\$" "$src/tests/deploy/pkiva-rules.test.yml" || fail "no promtool test for $alert"
done

# A real server's /metrics.
read -r port admin_port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
data="$work/var"
"$build/cli/pkiva" init --data "$data" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin_port" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "pkiva init"; }
"$build/cli/pkiva" serve --data "$data" >"$work/serve.log" 2>&1 &
pid=$!
scrape() {
  curl -sf --max-time 5 --cacert "$data/admin/admin-ca.pem" --cert "$data/admin/operator.pem" \
    --key "$data/admin/operator.key" "https://127.0.0.1:$admin_port/metrics"
}
for _ in $(seq 1 300); do
  scrape >"$work/metrics" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { tail -20 "$work/serve.log"; fail "pkiva serve exited"; }
  sleep 0.1
done
[ -s "$work/metrics" ] || fail "no /metrics within 30 s"
exported=$(sed -n 's/^\(pkiva_[a-z_]*\).*/\1/p' "$work/metrics" | sort -u)
used=$(grep -oh 'pkiva_[a-z_]*' "$rules" "$dashboard" | sort -u)
for metric in $used; do
  # Names in prose (e.g. pkiva_crl_failures_total in a description) must exist too.
  grep -qx "$metric" <<<"$exported" || fail "$metric is used by the alerts or the dashboard but not exported"
done
echo "test_alerts: ok ($(wc -w <<<"$used") metrics checked against a real server)"
