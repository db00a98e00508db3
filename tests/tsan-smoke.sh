#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ThreadSanitizer run of the real server. criterion 2.4.1's runner cannot start under TSan (it
# crashes initialising its arena), so instead of the unit suites this builds pkiva with TSan and
# drives every threaded part at once through real clients: the loops (OCSP GET/POST, CRLs, TSA),
# the signing pool (nonces, time stamps), the store workers (admin API), the public directory's
# search workers and rate limiter (searches by name, serial and e-mail, certificate pages, status
# checks of an uploaded certificate, HTML and JSON), the feed poller and CRL publisher
# (revocations from another process), a SIGHUP reload, then stops it with SIGTERM. Any TSan
# report fails.
# Usage: tests/tsan-smoke.sh [SECONDS]   (default 20)
set -euo pipefail
[ -n "${PKIVA_TRACE:-}" ] && set -x
. "$(dirname "$0")/../scripts/setup.sh"
pkiva_install
seconds=${1:-20}
build="$PKIVA_ROOT/build-tsan"
pkiva_build "$build" -DPKIVA_TSAN=ON -DPKIVA_TESTS=OFF
bin="$build/cli/pkiva"
work=$(mktemp -d /tmp/pkiva-tsan.XXXXXX)
pid=""
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port); admin=$(free_port)
export TSAN_OPTIONS="halt_on_error=0 exitcode=66 log_path=$work/tsan second_deadlock_stack=1 suppressions=$PKIVA_ROOT/tests/tsan.supp"
"$bin" init --data "$work/var" >/dev/null 2>&1
# Searches must reach the directory's workers, not stop at its per-address rate limit.
printf '[directory]\nrate_per_minute = 1000000\nrate_burst = 1000000\n' >>"$work/var/pkiva.conf"
"$bin" serve --data "$work/var" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
  >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
cd "$work/var"
export SOFTHSM2_CONF="$work/var/hsm/softhsm2.conf"
token=$(cat admin.token)
# The admin listener speaks HTTPS when the embedded default made it a TLS certificate.
admin_url="http://127.0.0.1:$admin"
admin_tls=()
if grep -q '^tls_cert' pkiva.conf 2>/dev/null; then
  admin_url="https://127.0.0.1:$admin"
  admin_tls=(--cacert admin/admin-ca.pem)
fi
openssl ocsp -issuer pki/issuing-ca.pem -cert pki/demo-good.pem -no_nonce -reqout "$work/req.der" >/dev/null 2>&1
get="http://127.0.0.1:$port/$(base64 -w0 "$work/req.der")"
echo tsan > "$work/data.txt"
openssl ts -query -data "$work/data.txt" -sha256 -cert -out "$work/q.tsq" 2>/dev/null
serial=$(openssl x509 -in pki/demo-good.pem -noout -serial | cut -d= -f2)
openssl x509 -in pki/demo-good.pem -outform DER -out "$work/good.der"
end=$((SECONDS + seconds))
load() {
  while [ $SECONDS -lt $end ]; do
    curl -s -o /dev/null "$get" || true
    curl -s -o /dev/null -H 'Content-Type: application/ocsp-request' \
      --data-binary @"$work/req.der" "http://127.0.0.1:$port/" || true
    openssl ocsp -issuer pki/issuing-ca.pem -cert pki/demo-hold.pem \
      -url "http://127.0.0.1:$port/" -nonce >/dev/null 2>&1 || true
    curl -s -o /dev/null -H 'Content-Type: application/timestamp-query' \
      --data-binary @"$work/q.tsq" "http://127.0.0.1:$port/tsa" || true
    curl -s -o /dev/null "http://127.0.0.1:$port/crl/demo-ca.crl" || true
    curl -s -o /dev/null "http://127.0.0.1:$port/directory/search?q=Demo+Subscriber" || true
    curl -s -o /dev/null "http://127.0.0.1:$port/directory/search?q=$serial&format=json" || true
    curl -s -o /dev/null "http://127.0.0.1:$port/directory/search?q=demo&field=o&lang=vi" || true
    curl -s -o /dev/null "http://127.0.0.1:$port/directory/cert/demo-ca/$serial" || true
    curl -s -o /dev/null -H 'Content-Type: application/pkix-cert' \
      --data-binary @"$work/good.der" "http://127.0.0.1:$port/directory/check" || true
    curl -s -o /dev/null "${admin_tls[@]}" -H "Authorization: Bearer $token" "$admin_url/metrics" ||
      true
  done
}
load & l1=$!
load & l2=$!
"$bin" revoke --data . --cert pki/demo-good.pem --reason keyCompromise >/dev/null
"$bin" unrevoke --data . --cert pki/demo-hold.pem >/dev/null
curl -sf -o /dev/null "${admin_tls[@]}" -H "Authorization: Bearer $token" \
  -H 'Content-Type: application/json' --data '{}' "$admin_url/admin/crl/publish" ||
  echo "tsan-smoke: admin CRL publish failed (status above)"
curl -sf -o /dev/null "${admin_tls[@]}" -H "Authorization: Bearer $token" "$admin_url/admin/sla" ||
  echo "tsan-smoke: admin SLA failed"
# SIGHUP under load: the service thread reads the configuration again and sets the log level
# while the loops log (cli/service.c).
kill -HUP "$pid"
wait $l1 $l2
kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=""
reports=$(cat "$work"/tsan.* 2>/dev/null | grep -c "WARNING: ThreadSanitizer" || true)
if [ "$status" -ne 0 ] || [ "$reports" -ne 0 ]; then
  cat "$work"/tsan.* 2>/dev/null | head -100
  tail -20 "$work/server.log"
  echo "exit status $status, $reports ThreadSanitizer report(s)"
  echo "tsan-smoke: 0 passed, 1 failed"
  exit 1
fi
echo "no ThreadSanitizer report in ${seconds}s of mixed load"
echo "tsan-smoke: 1 passed, 0 failed"
