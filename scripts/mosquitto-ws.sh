#!/usr/bin/env bash
# Prints the path of a mosquitto binary that can open a `protocol websockets` listener, building
# one when needed. Debian's mosquitto 2.0.11 (bookworm) is compiled without websockets, so
# WebSocket comparisons (scripts/bench-compare.sh, broker `mosquitto-ws`) need this build: the
# same Debian source package, with its Debian patches, compiled with WITH_WEBSOCKETS=yes. Debian's
# libwebsockets 4.1.6 is built without LWS_WITH_EXTERNAL_POLL, which mosquitto's listener needs
# (it answers "Unable to start any listening sockets"), so Debian's libwebsockets source is built
# too, with that option, as a static library linked into this mosquitto only. The data path
# (mosquitto's own code, -O2, the system OpenSSL) is the packaged broker's.
#
# Needs a deb-src entry for bookworm (added when running as root and missing) and the build
# dependencies (installed when root). The binary is cached in CACHE and reused.
#
# Environment: CACHE [~/.cache/ringmq/mosquitto-ws]
set -euo pipefail

CACHE="${CACHE:-${HOME:-/root}/.cache/ringmq/mosquitto-ws}"
BIN="$CACHE/mosquitto"

say() { echo "mosquitto-ws: $*" >&2; }
die() { say "$*"; exit 1; }

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

if [[ "$(id -u)" == 0 ]]; then
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/ \
    && ! grep -rqs "Types:.*deb-src" /etc/apt/sources.list.d/; then
    say "adding a deb-src entry for bookworm"
    cat >/etc/apt/sources.list.d/ringmq-deb-src.sources <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
    apt-get update -qq >&2
  fi
  apt-get install -y -qq --no-upgrade dpkg-dev cmake libcjson-dev libssl-dev libcap-dev zlib1g-dev >&2
fi
for tool in dpkg-source cmake make cc; do
  command -v "$tool" >/dev/null \
    || die "$tool missing: sudo apt-get install dpkg-dev cmake build-essential libcjson-dev libssl-dev libcap-dev zlib1g-dev"
done

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get source -qq libwebsockets mosquitto >&2) \
  || die "apt-get source failed: add a deb-src line for bookworm to /etc/apt/sources.list.d/"
lws="$(find "$work" -maxdepth 1 -type d -name 'libwebsockets-*' | head -1)"
src="$(find "$work" -maxdepth 1 -type d -name 'mosquitto-*' | head -1)"
[[ -n "$lws" && -n "$src" ]] || die "source trees not unpacked in $work"

say "building $(basename "$lws") with LWS_WITH_EXTERNAL_POLL (static)"
cmake -S "$lws" -B "$work/lws-build" -DCMAKE_BUILD_TYPE=Release -DLWS_WITH_EXTERNAL_POLL=ON \
  -DLWS_WITH_STATIC=ON -DLWS_WITH_SHARED=OFF -DLWS_WITHOUT_TESTAPPS=ON -DDISABLE_WERROR=ON \
  -DCMAKE_POSITION_INDEPENDENT_CODE=ON -DCMAKE_INSTALL_PREFIX="$work/lws" >"$work/lws.log" 2>&1 \
  && make -C "$work/lws-build" -j"$(nproc)" install >>"$work/lws.log" 2>&1 \
  || { tail -20 "$work/lws.log" >&2; die "libwebsockets build failed"; }

say "building $(basename "$src") with websockets"
# The static libwebsockets needs its own dependencies after it on the link line.
sed -i 's/^\(\s*BROKER_LDADD:=$(BROKER_LDADD) -lwebsockets\)$/\1 -lcap -lssl -lcrypto -lz/' "$src/config.mk"
make -C "$src" -j"$(nproc)" WITH_WEBSOCKETS=yes WITH_DOCS=no WITH_SYSTEMD=no \
  CPPFLAGS="-I$work/lws/include" LDFLAGS="-L$work/lws/lib" binary >"$work/build.log" 2>&1 \
  || { tail -20 "$work/build.log" >&2; die "mosquitto build failed"; }
mkdir -p "$CACHE"
cp "$src/src/mosquitto" "$BIN"
echo "$BIN"
