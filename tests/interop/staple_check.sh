#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# OCSP stapling through real TLS servers, against a running pkiva (tests/interop, test
# interop::tls_servers_staple_pkivas_answers):
#
#   staple_check.sh DATA PKIVA WORK NGINX_PORT SSERVER_PORT
#
# DATA is the running server's data folder (embedded demo PKI; its AIA names the server), PKIVA
# the binary, WORK a scratch folder. A TLS server certificate (serverAuth, AIA OCSP -> pkiva) is
# issued by the demo issuing CA's key on the token (openssl x509 through pkcs11-provider: the key
# never leaves it) and registered with `pkiva import`; then:
#   - nginx (ssl_stapling on, ssl_stapling_verify on) fetches pkiva's answer from the AIA URL and
#     staples it; `openssl s_client -status` and `gnutls-cli --ocsp` read and verify it;
#   - `openssl s_server -status` fetches an answer per connection and staples it;
#   - GnuTLS's ocsptool asks pkiva directly;
#   - after `pkiva revoke`, s_server's very next staple says revoked and GnuTLS refuses the
#     chain; nginx, restarted, staples nothing (it staples only "good") and gnutls-cli --ocsp,
#     asking pkiva itself, refuses the chain as revoked.
# Prints one line per verdict ("nginx staple good", ...) for the C test to match; exits non-zero
# on a broken step, with the tool's output.
set -euo pipefail

DATA=$1 PKIVA=$2 WORK=$3 NGINX_PORT=$4 SSERVER_PORT=$5
PKI=$DATA/pki
mkdir -p "$WORK/nginx"
cd "$WORK"

NGINX_PID="" SSERVER_PID=""
cleanup() {
    local pid
    for pid in $NGINX_PID $SSERVER_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true # 143: the SIGTERM we sent
    done
}
trap cleanup EXIT

fail() {
    echo "staple_check: $*" >&2
    exit 1
}

# Up to 10 s of tries of a command whose output must match a pattern; the last output in $OUT.
OUT=""
until_match() { # pattern command...
    local pattern=$1 _
    shift
    for _ in $(seq 50); do
        OUT=$("$@" 2>&1 </dev/null || true)
        grep -Eq "$pattern" <<<"$OUT" && return 0
        sleep 0.2
    done
    return 1
}

# ---- a TLS server certificate from the demo issuing CA, signed on the token ----------------------
export SOFTHSM2_CONF=$DATA/hsm/softhsm2.conf
PKCS11_PROVIDER_MODULE=$(sed -n 's/^module *= *//p' "$DATA/pkiva.conf" | head -1)
export PKCS11_PROVIDER_MODULE=${PKCS11_PROVIDER_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
URL=$(sed -n 's/^public_url *= *//p' "$DATA/pkiva.conf" | head -1)
[ -n "$URL" ] || fail "no public_url in $DATA/pkiva.conf"
SERIAL=5e$(od -An -N7 -tx1 /dev/urandom | tr -d ' \n')
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key \
    -subj "/CN=localhost" -out tls.csr >req.log 2>&1 || fail "openssl req: $(cat req.log)"
cat >tls.ext <<EOF
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
authorityInfoAccess = OCSP;URI:$URL/,caIssuers;URI:$URL/ca/demo-ca.crt
crlDistributionPoints = URI:$URL/crl/demo-ca.crl
EOF
# pkcs11-provider with SoftHSM2's no-deinit quirk (pkiva's [hsm] no_deinit): without it the
# openssl process crashes at exit, after writing the certificate.
cat >p11.cnf <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
pkcs11 = pkcs11_sect
[default_sect]
activate = 1
[pkcs11_sect]
pkcs11-module-quirks = no-deinit
activate = 1
EOF
OPENSSL_CONF=$WORK/p11.cnf openssl x509 -req -in tls.csr -CA "$PKI/issuing-ca.pem" \
    -CAkey "pkcs11:token=pkiva;object=issuing-ca;type=private;pin-value=$(cat "$DATA/hsm/user.pin")" \
    -days 30 -sha256 -extfile tls.ext -set_serial "0x$SERIAL" -out tls.pem >x509.log 2>&1 ||
    fail "openssl x509 -req with the token's key: $(cat x509.log)"
cat tls.pem "$PKI/issuing-ca.pem" >fullchain.pem
cat "$PKI/issuing-ca.pem" "$PKI/root-ca.pem" >trusted.pem
"$PKIVA" import --data "$DATA" tls.pem >import.log 2>&1 || fail "pkiva import: $(cat import.log)"
until_match 'tls.pem: good' openssl ocsp -issuer "$PKI/issuing-ca.pem" -cert tls.pem -url "$URL/" \
    -CAfile "$PKI/root-ca.pem" -verify_other "$PKI/issuing-ca.pem" ||
    fail "the imported certificate is not good within 10 s: $OUT"
echo "registered good"

# ---- GnuTLS's own OCSP client ------------------------------------------------------------------
OUT=$(ocsptool --ask --load-cert tls.pem --load-issuer "$PKI/issuing-ca.pem" --outfile ocsptool.der 2>&1) ||
    fail "ocsptool --ask: $OUT"
grep -q 'Certificate Status: good' <<<"$OUT" && grep -q 'Verifying OCSP Response: Success' <<<"$OUT" ||
    fail "ocsptool: $OUT"
echo "ocsptool good verified"

# ---- nginx stapling ---------------------------------------------------------------------------
cat >nginx/nginx.conf <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        server_name localhost;
        ssl_certificate $WORK/fullchain.pem;
        ssl_certificate_key $WORK/tls.key;
        ssl_stapling on;
        ssl_stapling_verify on;
        ssl_trusted_certificate $WORK/trusted.pem;
        location / { return 200 "ok\n"; }
    }
}
EOF
start_nginx() {
    nginx -e "$WORK/nginx/error.log" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" &
    NGINX_PID=$!
}
stop_nginx() {
    kill "$NGINX_PID" && wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
}
start_nginx
# nginx fetches the answer on the first handshake that asks for it and staples from the next one.
until_match 'Cert Status: good' openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername localhost \
    -status -CAfile "$PKI/root-ca.pem" ||
    fail "nginx stapled no good answer within 10 s: $OUT; nginx: $(tail -5 nginx/error.log)"
grep -q 'OCSP Response Status: successful' <<<"$OUT" && grep -q 'Verify return code: 0 (ok)' <<<"$OUT" ||
    fail "s_client through nginx: $OUT"
echo "nginx staple good"
OUT=$(gnutls-cli --x509cafile "$PKI/root-ca.pem" --ocsp --verify-hostname localhost \
    -p "$NGINX_PORT" 127.0.0.1 </dev/null 2>&1) || fail "gnutls-cli --ocsp through nginx: $OUT"
grep -q 'Status: The certificate is trusted' <<<"$OUT" && grep -q 'OCSP status request' <<<"$OUT" ||
    fail "gnutls-cli through nginx: $OUT"
echo "gnutls-cli nginx trusted"

# ---- openssl s_server stapling (one fetch per connection) ---------------------------------------
openssl s_server -accept "127.0.0.1:$SSERVER_PORT" -cert tls.pem -key tls.key \
    -cert_chain "$PKI/issuing-ca.pem" -CAfile trusted.pem -status -www -quiet >s_server.log 2>&1 &
SSERVER_PID=$!
until_match 'Cert Status: good' openssl s_client -connect "127.0.0.1:$SSERVER_PORT" -status \
    -CAfile "$PKI/root-ca.pem" || fail "s_server stapled no good answer: $OUT; $(cat s_server.log)"
echo "s_server staple good"

# ---- revoked: the next staple says so ----------------------------------------------------------
"$PKIVA" revoke --data "$DATA" --cert tls.pem --reason keyCompromise >revoke.log 2>&1 ||
    fail "pkiva revoke: $(cat revoke.log)"
until_match 'Cert Status: revoked' openssl s_client -connect "127.0.0.1:$SSERVER_PORT" -status \
    -CAfile "$PKI/root-ca.pem" || fail "s_server's staple not revoked within 10 s: $OUT"
grep -q 'Revocation Reason: keyCompromise' <<<"$OUT" || fail "s_server staple: $OUT"
echo "s_server staple revoked keyCompromise"
OUT=$(gnutls-cli --x509cafile "$PKI/root-ca.pem" --verify-hostname localhost -p "$SSERVER_PORT" \
    127.0.0.1 </dev/null 2>&1) && fail "gnutls-cli accepted a revoked staple: $OUT"
grep -q 'revoked' <<<"$OUT" || fail "gnutls-cli on the revoked staple: $OUT"
echo "gnutls-cli s_server refused revoked"
stop_nginx
start_nginx
until_match 'OCSP response: no response sent' openssl s_client -connect "127.0.0.1:$NGINX_PORT" \
    -servername localhost -status -CAfile "$PKI/root-ca.pem" || fail "nginx after the revocation: $OUT"
sleep 1 # nginx's fetch has had its answer: it logs the revoked status and staples nothing
OUT=$(openssl s_client -connect "127.0.0.1:$NGINX_PORT" -servername localhost -status \
    -CAfile "$PKI/root-ca.pem" 2>&1 </dev/null || true)
grep -q 'OCSP response: no response sent' <<<"$OUT" || fail "nginx stapled after the revocation: $OUT"
grep -q 'certificate status "revoked"' nginx/error.log || fail "nginx did not see revoked: $(tail -5 nginx/error.log)"
echo "nginx saw revoked and staples nothing"
OUT=$(gnutls-cli --x509cafile "$PKI/root-ca.pem" --ocsp --verify-hostname localhost \
    -p "$NGINX_PORT" 127.0.0.1 </dev/null 2>&1) && fail "gnutls-cli --ocsp accepted a revoked certificate: $OUT"
grep -q 'revoked' <<<"$OUT" || fail "gnutls-cli --ocsp through nginx after the revocation: $OUT"
echo "gnutls-cli nginx refused revoked"
