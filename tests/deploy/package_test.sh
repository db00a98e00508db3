#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_package: scripts/package builds the .deb with its dependencies declared; `dpkg -x` unpacks
# it into a scratch root; the installed pkiva, run as the pkiva user (setpriv) (created if missing, removed
# again if this test created it), takes the installed sample configuration pointed at a SoftHSM2
# token and PKI (made by the embedded demo) for a real CA's: config check, init --config, import,
# serve; then OCSP (openssl ocsp, good then revoked), the CRL (openssl crl -verify) and a time
# stamp (openssl ts -verify) are checked against it, and SIGTERM stops it with status 0.
set -euo pipefail
src=$1
build=$2
if [ "$(id -u)" -ne 0 ]; then
  echo "test_package: skipped: needs root (setpriv to the pkiva user)"
  exit 77
fi
work=$(mktemp -d /tmp/pkiva-package.XXXXXX)
chmod 0755 "$work"
created_user=0
pid=
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  if [ -n "$pid" ]; then wait "$pid" 2>/dev/null || true; fi
  if [ "$created_user" = 1 ]; then userdel pkiva || echo "test_package: userdel pkiva failed" >&2; fi
  if [ -z "${PKIVA_KEEP_TEST_DIRS:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
  echo "test_package: FAIL: $*" >&2
  [ -f "$work/serve.log" ] && tail -20 "$work/serve.log" >&2
  exit 1
}

# The package, from the tree under test.
deb=$("$src/scripts/package" --build-dir "$build" --out "$work" | tail -1)
[ -f "$deb" ] || fail "scripts/package made no package"
depends=$(dpkg-deb -f "$deb" Depends)
for dep in pkcs11-provider libssl3 libuv1 libsqlite3-0 libjansson4 libinih1 adduser procps; do
  case ",$depends," in *"$dep"*) ;; *) fail "Depends lacks $dep: $depends" ;; esac
done
dpkg-deb -f "$deb" Version | grep -qx "$("$build/cli/pkiva" --version | awk '{print $2}')" ||
  fail "package version differs from pkiva --version"
dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | grep -qx /etc/pkiva/pkiva.conf ||
  fail "/etc/pkiva/pkiva.conf is not a conffile"
root="$work/root"
dpkg -x "$deb" "$root"
pkiva="$root/usr/bin/pkiva"
for f in "$pkiva" "$root/etc/pkiva/pkiva.conf" "$root/usr/lib/systemd/system/pkiva.service" \
  "$root/usr/share/man/man8/pkiva.8" "$root/usr/share/doc/pkiva/pkiva-rules.yml"; do
  [ -e "$f" ] || fail "the package lacks ${f#"$root"}"
done

# The service user, as the package's postinst makes it.
if ! getent passwd pkiva >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/pkiva --no-create-home \
    --shell /usr/sbin/nologin pkiva
  created_user=1
fi
# setpriv execs the command itself (runuser would stand between, and end it at SIGTERM).
as_pkiva() { setpriv --reuid=pkiva --regid=pkiva --init-groups -- "$@"; }

# A token and a PKI to stand for the CA's: the embedded demo, made by the installed binary.
demo="$work/demo"
install -d -o pkiva -g pkiva -m 0750 "$demo" "$work/state" "$work/etc"
as_pkiva "$pkiva" init --data "$demo" >"$work/demo.log" 2>&1 || { cat "$work/demo.log"; fail "demo init"; }

# The installed sample, its paths pointed at that token and PKI, on free ports.
read -r port admin_port < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])')
conf="$work/etc/pkiva.conf"
sed -e "s#/var/lib/pkiva#$work/state#g" \
  -e "s#/etc/pkiva/user.pin#$demo/hsm/user.pin#" \
  -e "s@^# softhsm_conf = .*@softhsm_conf = $demo/hsm/softhsm2.conf@" \
  -e "s#/etc/pkiva/admin.token#$demo/admin.token#" \
  -e "s#/etc/pkiva/#$demo/pki/#g" \
  -e "s#require_clock_sync = yes#require_clock_sync = no#" \
  -e "s#^listen = .*#listen = 127.0.0.1:$port#" \
  -e "s#^admin_listen = .*#admin_listen = 127.0.0.1:$admin_port#" \
  -e "s#^public_url = .*#public_url = http://127.0.0.1:$port#" \
  "$root/etc/pkiva/pkiva.conf" >"$conf"
chown pkiva:pkiva "$conf"

as_pkiva "$pkiva" import --config "$conf" "$demo/pki/demo-good.pem" >"$work/out" 2>&1 &&
  fail "import before init succeeded"
grep -q "run 'pkiva init --config" "$work/out" || { cat "$work/out"; fail "import before init did not say what to run"; }
as_pkiva "$pkiva" config check --config "$conf" >"$work/out" 2>&1 || { cat "$work/out"; fail "config check"; }
as_pkiva "$pkiva" init --config "$conf" >"$work/out" 2>&1 || { cat "$work/out"; fail "init --config"; }
grep -q "new issuer demo-ca" "$work/out" || { cat "$work/out"; fail "init registered no issuer"; }
[ "$(stat -c %U "$work/state/pkiva.db")" = pkiva ] || fail "the store does not belong to pkiva"
as_pkiva "$pkiva" import --config "$conf" "$demo/pki/demo-good.pem" "$demo/pki/demo-revoked.pem" \
  >"$work/out" 2>&1 || { cat "$work/out"; fail "import"; }

# Not through as_pkiva: $! must be the server itself.
setpriv --reuid=pkiva --regid=pkiva --init-groups -- "$pkiva" serve --config "$conf" \
  >"$work/serve.log" 2>&1 &
pid=$!
ready=0
for _ in $(seq 1 300); do
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
    ready=1
    break
  fi
  kill -0 "$pid" 2>/dev/null || fail "pkiva serve exited during start-up"
  sleep 0.1
done
[ "$ready" = 1 ] || fail "/readyz not 200 within 30 s"

pki="$demo/pki"
ocsp() {
  openssl ocsp -issuer "$pki/issuing-ca.pem" -cert "$pki/$1" -url "http://127.0.0.1:$port/" \
    -CAfile "$pki/root-ca.pem" -verify_other "$pki/issuing-ca.pem" 2>&1
}
ocsp demo-good.pem | grep -q "demo-good.pem: good" || fail "OCSP: demo-good is not good"
as_pkiva "$pkiva" revoke --config "$conf" --cert "$pki/demo-revoked.pem" --reason keyCompromise \
  >"$work/out" 2>&1 || { cat "$work/out"; fail "revoke"; }
# The revocation reaches OCSP within feed_poll plus a signature; wait for it, bounded.
revoked=0
for _ in $(seq 1 100); do
  if ocsp demo-revoked.pem | grep -q "demo-revoked.pem: revoked"; then revoked=1; break; fi
  sleep 0.1
done
[ "$revoked" = 1 ] || fail "OCSP: the revocation did not show"
as_pkiva "$pkiva" crl publish --config "$conf" >"$work/out" 2>&1 || { cat "$work/out"; fail "crl publish"; }
curl -sf "http://127.0.0.1:$port/crl/demo-ca.crl" -o "$work/demo-ca.crl" || fail "no CRL served"
openssl crl -inform DER -in "$work/demo-ca.crl" -CAfile "$pki/ca-chain.pem" -verify -noout 2>&1 |
  grep -q "verify OK" || fail "the CRL does not verify"
serial=$(openssl x509 -in "$pki/demo-revoked.pem" -noout -serial | cut -d= -f2)
openssl crl -inform DER -in "$work/demo-ca.crl" -noout -text | grep -i "Serial Number: $serial" >/dev/null ||
  fail "the CRL does not list the revoked serial $serial"
echo "pkiva package test" >"$work/data.txt"
openssl ts -query -data "$work/data.txt" -sha256 -cert -out "$work/q.tsq" 2>/dev/null
curl -sf -H 'Content-Type: application/timestamp-query' --data-binary @"$work/q.tsq" \
  "http://127.0.0.1:$port/tsa" -o "$work/r.tsr" || fail "no time stamp"
openssl ts -verify -data "$work/data.txt" -in "$work/r.tsr" -CAfile "$pki/root-ca.pem" \
  -untrusted "$pki/tsa-chain.pem" 2>&1 | grep -q "Verification: OK" || fail "the time stamp does not verify"

kill -TERM "$pid"
status=0
wait "$pid" || status=$?
pid=
[ "$status" = 0 ] || fail "pkiva serve exited $status after SIGTERM"
echo "test_package: ok"
