#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# test_service: the unit cmake --install puts in lib/systemd/system passes systemd-analyze verify
# (with ExecStart pointed at the built binary, which it checks exists), keeps the settings issue 19
# asks for, and pkiva(8) renders without warnings and documents every command of `pkiva --help`.
set -euo pipefail
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "test_service: FAIL: $*" >&2; exit 1; }

DESTDIR="$work/root" cmake --install "$build" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; fail "cmake --install"; }
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
root="$work/root"
unit="$root$prefix/lib/systemd/system/pkiva.service"
[ -x "$root$prefix/bin/pkiva" ] || fail "no $prefix/bin/pkiva"
[ -f "$unit" ] || fail "no $prefix/lib/systemd/system/pkiva.service"
[ -f "$root$prefix/share/man/man8/pkiva.8" ] || fail "no pkiva(8)"
conf=$(find "$root" -path '*/pkiva/pkiva.conf' -not -path '*/sysusers.d/*' | head -1)
[ -n "$conf" ] && cmp -s "$conf" "$src/conf/pkiva.conf" || fail "the sample configuration is not installed"
[ -f "$root$prefix/lib/sysusers.d/pkiva.conf" ] || fail "no sysusers.d file"

# The sample is never overwritten: an edited file survives a second install.
echo "# edited by the operator" >>"$conf"
DESTDIR="$root" cmake --install "$build" >"$work/install2.log" 2>&1 || fail "second cmake --install"
grep -q "edited by the operator" "$conf" || fail "a second install overwrote the configuration"
grep -q "Keeping: " "$work/install2.log" || fail "the second install did not say it kept the file"

# systemd-analyze verify checks that the commands exist: point them at the installed binary.
sed -e "s#$prefix/bin/pkiva#$root$prefix/bin/pkiva#g" "$unit" >"$work/pkiva.service"
MANPATH="$root$prefix/share/man" SYSTEMD_LOG_LEVEL=notice \
  systemd-analyze verify "$work/pkiva.service" >"$work/verify.log" 2>&1 ||
  { cat "$work/verify.log"; fail "systemd-analyze verify"; }
if [ -s "$work/verify.log" ]; then
  cat "$work/verify.log"
  fail "systemd-analyze verify printed warnings"
fi

# The unit is written for the prefix the install uses, not the configured one.
DESTDIR="$work/opt" cmake --install "$build" --prefix /opt/pkiva >"$work/install3.log" 2>&1 ||
  fail "cmake --install --prefix /opt/pkiva"
grep -q "^ExecStart=/opt/pkiva/bin/pkiva serve --config /opt/pkiva/etc/pkiva/pkiva.conf\$" \
  "$work/opt/opt/pkiva/lib/systemd/system/pkiva.service" || fail "--prefix /opt/pkiva: unit paths"
[ -f "$work/opt/opt/pkiva/etc/pkiva/pkiva.conf" ] || fail "--prefix /opt/pkiva: no PREFIX/etc/pkiva/pkiva.conf"

# What the issue asks of the unit, each setting once.
notify=notify
grep -q '^PKIVA_SYSTEMD:BOOL=OFF' "$build/CMakeCache.txt" && notify=exec
for want in "Type=$notify" "User=pkiva" "StateDirectory=pkiva" "ProtectSystem=strict" \
  "NoNewPrivileges=yes" "PrivateTmp=yes" "Restart=on-failure" "ExecReload=/bin/kill -HUP \$MAINPID" \
  "ExecStart=$prefix/bin/pkiva serve --config " "LimitNOFILE="; do
  [ "$(grep -c "^$want" "$unit")" = 1 ] || fail "the unit lacks '$want'"
done
# LimitNOFILE covers the sample's max_connections with room for the rest.
limit=$(sed -n 's/^LimitNOFILE=//p' "$unit")
maxconn=$(sed -n 's/^max_connections = //p' "$src/conf/pkiva.conf")
[ "$limit" -ge $((maxconn + 1024)) ] || fail "LimitNOFILE=$limit is not above max_connections $maxconn + 1024"
# ProtectClock would stop the TSA from reading the clock's synchronisation state.
grep -q '^ProtectClock=' "$unit" && fail "ProtectClock= forbids the TSA's adjtimex"

# pkiva(8): renders without warnings; documents every command and the version.
LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$root$prefix/share/man/man8/pkiva.8" 2>"$work/groff.log"
[ -s "$work/groff.log" ] && { cat "$work/groff.log"; fail "pkiva(8) has roff warnings"; }
LC_ALL=C.UTF-8 MANWIDTH=200 man -l "$root$prefix/share/man/man8/pkiva.8" 2>/dev/null >"$work/man.txt"
version=$("$build/cli/pkiva" --version | awk '{print $2}')
grep -q "pkiva $version" "$work/man.txt" || fail "pkiva(8) does not carry version $version"
for cmd in $("$build/cli/pkiva" --help | awk '/^  [a-z]/ {print $1}'); do
  grep -Eq "^ {7}(.*, )?$cmd\b" "$work/man.txt" || fail "pkiva(8) does not document '$cmd'"
done
echo "test_service: ok"
