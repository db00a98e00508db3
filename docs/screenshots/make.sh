#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Remakes the README's screenshots of the public directory from the running demo: a fresh
# embedded default under /tmp, a few certificates with Vietnamese names signed by the demo CA's
# key in the token, `pkiva serve`, then headless Chromium (tests/directory/browser.py) takes
#   search.png  a search, in Vietnamese
#   cert.png    the page of a revoked certificate, in English
#   check.png   the status check's answer for a certificate file chosen in the form
# Needs the build (build/cli/pkiva) and the test packages (scripts/setup.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/docs/screenshots
PKIVA=$ROOT/build/cli/pkiva
B="python3 $ROOT/tests/directory/browser.py"
WORK=$(mktemp -d /tmp/pkiva-shots.XXXXXX)
SERVER=""
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port)
A=$(port)
"$PKIVA" init --data "$WORK/var" --listen 127.0.0.1:$P --admin-listen 127.0.0.1:$A >/dev/null 2>&1
cd "$WORK/var"
export SOFTHSM2_CONF=$PWD/hsm/softhsm2.conf
issue() { # name CN O email
  python3 "$ROOT/tests/directory/mkcsr.py" "$1.csr" "$2" "$3" "$4"
  PKCS11_PROVIDER_MODULE=/usr/lib/softhsm/libsofthsm2.so openssl x509 -req -in "$1.csr" \
    -CA pki/issuing-ca.pem -CAkey "pkcs11:token=pkiva;object=issuing-ca;type=private?pin-value=$(cat hsm/user.pin)" \
    -provider pkcs11 -provider default -days 730 -out "$1.pem" >/dev/null 2>&1 || true
  openssl x509 -in "$1.pem" -noout
}
issue an "Nguyễn Văn An" "Ban Cơ yếu Chính phủ" an.nguyen@example.gov.vn
issue binh "Nguyễn Thị Bình" "Sở Tài chính Hà Nội" binh.nguyen@example.gov.vn
issue cuong "Nguyễn Mạnh Cường" "Kho bạc Nhà nước" cuong.nm@example.gov.vn
issue dung "Trần Văn Dũng" "Ban Cơ yếu Chính phủ" dung.tv@example.gov.vn
"$PKIVA" import --data . an.pem binh.pem cuong.pem dung.pem >/dev/null 2>&1
"$PKIVA" revoke --data . --cert cuong.pem --reason keyCompromise >/dev/null 2>&1
"$PKIVA" serve --data . >"$WORK/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$P/healthz" >/dev/null && break; sleep 0.2; done
U=http://127.0.0.1:$P/directory
serial=$(openssl x509 -in cuong.pem -noout -serial | cut -d= -f2 | tr A-F a-f)
$B shot "$U/search?q=nguyen&lang=vi" "$OUT/search.png"
$B shot "$U/cert/demo-ca/$serial?lang=en" "$OUT/cert.png"
$B upload "$U/check?lang=en" binh.pem "$OUT/check.png" >/dev/null
ls -la "$OUT"/*.png
