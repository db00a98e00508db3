#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Sourced by scripts/serve and scripts/test: installs what a fresh Debian 12 machine lacks (once;
# later runs find everything present and skip apt) and builds pkiva into build/. Idempotent.
set -euo pipefail

PKIVA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PKIVA_ROOT

# Runtime and build packages from bookworm; pkcs11-provider from bookworm-backports.
PKIVA_PACKAGES=(build-essential cmake pkg-config libssl-dev openssl libuv1-dev node-llhttp
  libsqlite3-dev sqlite3 libpq-dev libcriterion-dev libjansson-dev libinih-dev libp11-kit-dev softhsm2 opensc
  gnutls-bin curl python3 libsystemd-dev)
PKIVA_BACKPORTS=(pkcs11-provider)
# Only for the tests: real signing clients the TSA is tested against (jarsigner, osslsigncode),
# the independent relying parties of test_interop (the JDK, Bouncy Castle, NSS's vfychain and
# certutil, Debian's python3-cryptography), the formatting check, the PKCS#11 modules besides SoftHSM2 that
# tests/modules runs pkiva on (openCryptoki's software token; NSS's softoken from libnss3), and
# the deployment tests (tests/deploy/): systemd-analyze, dpkg-deb and dpkg-shlibdeps for the
# package, man and groff for pkiva(8), procps (kill, which the unit's ExecReload uses) and
# promtool, which Debian ships only inside the prometheus package (on a machine booted with
# systemd, installing it also starts a Prometheus server on :9090), and the browser the directory
# pages are read with (Chromium, headless) with fonts for Vietnamese, the TLS server that staples
# pkiva's OCSP answers in test_interop (nginx; on a machine booted with systemd, installing it also
# starts an nginx on :80), and the PostgreSQL server
# that the store and cluster tests start privately (tests/support/with-postgres.sh; no system
# service is used).
PKIVA_TEST_PACKAGES=(openjdk-17-jdk-headless libnss3-tools python3-cryptography clang-format
  opencryptoki libnss3 systemd dpkg-dev man-db groff-base procps prometheus chromium
  fonts-dejavu-core postgresql-15 pmccabe nginx-light libbcpkix-java)
PKIVA_TEST_BACKPORTS=(osslsigncode)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# Adds bookworm-backports using the mirror the machine's apt sources already use (never a fixed host).
add_backports() {
  if grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return 0
  fi
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 ~ /bookworm/ && $0 !~ /security/ {
             for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    echo "setup: cannot find the Debian mirror in /etc/apt/sources*; add bookworm-backports by hand" >&2
    exit 1
  fi
  echo "setup: adding bookworm-backports from $uri"
  as_root tee /etc/apt/sources.list.d/pkiva-backports.sources >/dev/null <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
}

pkiva_install() {
  local missing missing_bpo
  missing=$(missing_packages "${PKIVA_PACKAGES[@]}" "$@")
  missing_bpo=$(missing_packages "${PKIVA_BACKPORTS[@]}")
  if [ -z "$missing" ] && [ -z "$missing_bpo" ]; then
    return 0
  fi
  if [ -n "$missing_bpo" ]; then
    add_backports
  fi
  echo "setup: installing:" $missing $missing_bpo
  as_root apt-get update -q
  if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  fi
  if [ -n "$missing_bpo" ]; then
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      -t bookworm-backports $missing_bpo
  fi
}

# pkiva_build BUILD_DIR [cmake options...]
pkiva_build() {
  local dir=$1
  shift
  cmake -S "$PKIVA_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$(nproc)"
}
