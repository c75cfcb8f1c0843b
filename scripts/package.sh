#!/usr/bin/env bash
# The Debian package, built and checked: its files and control data (dpkg-deb -c / -I), the
# layout and permissions unpacked in a scratch root, then, as root, a real install (with
# systemd-analyze verify on the installed unit), an upgrade to a newer revision that keeps a
# changed conffile, a reinstall (the maintainer scripts run again) and a purge.
# Needs cargo-deb, dpkg-deb, systemd-analyze and adduser: scripts/test.sh installs them. A
# missing one is a failure that names what to install.
#
# Usage: scripts/package.sh        (as root for the install steps; CARGO_TARGET_DIR honoured)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "scripts/package.sh: $*" >&2
    exit 1
}

for tool in dpkg-deb dpkg systemd-analyze; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool is missing; install it with: sudo apt-get install dpkg systemd"
done
cargo deb --version >/dev/null 2>&1 ||
    fail "cargo-deb is missing; install it with: cargo install cargo-deb --locked"
[ "$(id -u)" = 0 ] ||
    fail "the install, upgrade and purge checks run dpkg -i: run as root (CI runs as root)"
if dpkg-query -W -f='${Status}' ringmq 2>/dev/null | grep -q 'install ok installed'; then
    fail "a ringmq package is installed on this machine; the install check would replace it." \
        "Run it on a scratch machine or container."
fi

target=${CARGO_TARGET_DIR:-target}
scratch=$(mktemp -d)
installed=0
cleanup() {
    if [ "$installed" = 1 ]; then
        dpkg --purge ringmq >/dev/null 2>&1 || true
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT

echo "-- build (release) and package"
# cargo-deb would build only this crate's binaries; ringmq-bench is in the bench crate.
cargo build --release --quiet -p ringmq -p bench --bins
# --fast: the test needs the package, not the smallest file (xz of 60 MB takes minutes here).
cargo deb --no-build --quiet --fast --output "$scratch/1" >/dev/null
deb=$(echo "$scratch"/1/ringmq_*.deb)
[ -f "$deb" ] || fail "cargo deb wrote no ringmq_*.deb: $(ls -R "$scratch")"
# A newer revision of the same package, for the upgrade check: repacked with a bumped version
# (running cargo deb again would strip and compress everything again).
dpkg-deb -R "$deb" "$scratch/newer"
sed -i -E 's/^(Version: .*)$/\1+upgrade1/' "$scratch/newer/DEBIAN/control"
newer=$scratch/ringmq_newer.deb
dpkg-deb -Zgzip -z1 --root-owner-group -b "$scratch/newer" "$newer" >/dev/null
ls "$scratch"/1/ringmq-dbgsym_*.ddeb >/dev/null 2>&1 ||
    fail "no ringmq-dbgsym .ddeb: the debug symbols should leave the package"


echo "-- dpkg-deb -c: files, owners, modes"
contents=$(dpkg-deb -c "$deb")
expect_file() { # MODE PATH
    grep -Eq "^$1 (root/root|0/0) +[0-9]+ [0-9-]+ [0-9:]+ \./$2\$" <<<"$contents" ||
        fail "the package lacks $2 with mode $1 owned by root; it has:"$'\n'"$contents"
}
expect_file -rwxr-xr-x usr/bin/ringmq
expect_file -rwxr-xr-x usr/bin/ringmq-bench
expect_file -rw-r--r-- etc/ringmq/ringmq.toml
expect_file -rw-r--r-- '(usr/)?lib/systemd/system/ringmq.service'
expect_file -rw-r--r-- usr/share/doc/ringmq/OPERATIONS.md
expect_file -rw-r--r-- usr/share/doc/ringmq/prometheus/alerts.yml

echo "-- dpkg-deb -I: control, conffiles, maintainer scripts"
control=$(dpkg-deb -f "$deb")
grep -q '^Package: ringmq$' <<<"$control" || fail "Package is not ringmq: $control"
grep -q '^Section: net$' <<<"$control" || fail "Section is not net: $control"
depends=$(dpkg-deb -f "$deb" Depends)
for dependency in libc6 adduser procps; do
    grep -q "$dependency" <<<"$depends" || fail "Depends lacks $dependency: $depends"
done
info=$(dpkg-deb -I "$deb")
for script in postinst postrm prerm conffiles; do
    grep -Eq "lines +\*? +$script( |\$)" <<<"$info" || fail "no $script in the control archive: $info"
done
dpkg-deb --ctrl-tarfile "$deb" | tar -x -C "$scratch" ./conffiles ./postinst ./postrm
[ "$(cat "$scratch/conffiles")" = /etc/ringmq/ringmq.toml ] ||
    fail "conffiles is not just /etc/ringmq/ringmq.toml: $(cat "$scratch/conffiles")"
grep -q 'adduser --system' "$scratch/postinst" || fail "postinst does not create the user"
grep -q 'deb-systemd-helper' "$scratch/postinst" || fail "postinst does not enable the unit"
grep -q 'try-restart' "$scratch/postinst" ||
    fail "postinst does not restart a running broker after an upgrade"
for script in postinst postrm; do
    sh -n "$scratch/$script" || fail "$script is not valid sh"
done

echo "-- unpacked: layout, the default config, the binary"
root=$scratch/root
dpkg-deb -x "$deb" "$root"
cmp -s "$root/etc/ringmq/ringmq.toml" config/ringmq.toml ||
    fail "/etc/ringmq/ringmq.toml differs from config/ringmq.toml"
unit=$(find "$root" -name ringmq.service -path '*systemd/system*')
[ -n "$unit" ] || fail "no ringmq.service in the package"
cmp -s "$unit" debian/ringmq.service || fail "the packaged unit differs from debian/ringmq.service"
"$root/usr/bin/ringmq" --version | grep -Eq '^ringmq [0-9]+\.[0-9]+\.[0-9]+' ||
    fail "ringmq --version: $("$root/usr/bin/ringmq" --version)"
"$root/usr/bin/ringmq" check-config "$root/etc/ringmq/ringmq.toml" >/dev/null ||
    fail "the packaged config does not pass check-config"
"$root/usr/bin/ringmq-bench" --help >/dev/null || fail "ringmq-bench --help failed"

for line in Type=notify WatchdogSec= ExecReload= NoNewPrivileges=yes ProtectSystem=strict \
    ReadWritePaths=/var/lib/ringmq PrivateTmp=yes CapabilityBoundingSet= LimitNOFILE= \
    LimitMEMLOCK=; do
    grep -q "^$line" "$unit" || fail "the unit lacks $line"
done

echo "-- dpkg -i, upgrade keeping a changed conffile, reinstall, purge"
installed=1
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >/dev/null
echo "-- systemd-analyze verify (the installed unit, with its binary in place)"
installed_unit=$(dpkg -L ringmq | grep '/systemd/system/ringmq.service$')
verify=$(systemd-analyze verify "$installed_unit" 2>&1) ||
    fail "systemd-analyze verify failed:"$'\n'"$verify"
[ -z "$verify" ] || fail "systemd-analyze verify warns:"$'\n'"$verify"
getent passwd ringmq >/dev/null || fail "postinst did not create the ringmq user"
getent group ringmq >/dev/null || fail "postinst did not create the ringmq group"
[ "$(stat -c '%U:%G %a' /var/lib/ringmq)" = "ringmq:ringmq 750" ] ||
    fail "/var/lib/ringmq is $(stat -c '%U:%G %a' /var/lib/ringmq), not ringmq:ringmq 750"
[ "$(stat -c '%U:%G %a' /etc/ringmq)" = "root:ringmq 750" ] ||
    fail "/etc/ringmq is $(stat -c '%U:%G %a' /etc/ringmq), not root:ringmq 750"
# The service user can read its configuration.
runuser -u ringmq -- /usr/bin/ringmq check-config /etc/ringmq/ringmq.toml >/dev/null ||
    fail "the ringmq user cannot check /etc/ringmq/ringmq.toml"
echo "-- the installed broker as the ringmq user, with no capabilities and no new privileges"
# setpriv execs, so $! is the broker itself. (The unit's LimitMEMLOCK cannot be applied here: a
# container without CAP_SYS_RESOURCE may not raise it.)
log=$scratch/broker.log
RINGMQ_LISTENERS__TCP__DEFAULT__BIND=127.0.0.1:0 RINGMQ_ADMIN__BIND=127.0.0.1:0 \
    RINGMQ_RUNTIME__SHARDS=2 RINGMQ_RUNTIME__PIN=false \
    setpriv --reuid=ringmq --regid=ringmq --init-groups --no-new-privs --inh-caps=-all \
    --bounding-set=-all -- /usr/bin/ringmq --config /etc/ringmq/ringmq.toml >"$log" 2>&1 &
broker=$!
for _ in $(seq 200); do
    grep -q 'listening' "$log" && break
    kill -0 "$broker" 2>/dev/null || break
    sleep 0.1
done
grep -q 'listening' "$log" || { kill "$broker" 2>/dev/null; fail "the broker did not start:"$'\n'"$(cat "$log")"; }
kill -TERM "$broker" || fail "the broker exited before SIGTERM:"$'\n'"$(cat "$log")"
status=0
wait "$broker" || status=$?
[ "$status" = 0 ] || fail "the broker exited with $status after SIGTERM:"$'\n'"$(cat "$log")"

echo "# changed by the operator" >>/etc/ringmq/ringmq.toml
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$newer" >/dev/null
grep -q 'changed by the operator' /etc/ringmq/ringmq.toml ||
    fail "the upgrade replaced the operator's /etc/ringmq/ringmq.toml"
[ "$(dpkg-query -W -f='${Version}' ringmq)" = "$(dpkg-deb -f "$newer" Version)" ] ||
    fail "the upgrade did not install the newer revision"
# The maintainer scripts run again on the same version: they must not fail or change anything.
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$newer" >/dev/null
[ "$(getent passwd ringmq | cut -d: -f6)" = /var/lib/ringmq ] ||
    fail "ringmq's home is not /var/lib/ringmq"
dpkg --purge ringmq >/dev/null
installed=0
[ ! -e /var/lib/ringmq ] || fail "purge left /var/lib/ringmq"
[ ! -e /etc/ringmq/ringmq.toml ] || fail "purge left /etc/ringmq/ringmq.toml"
[ ! -e /usr/bin/ringmq ] || fail "purge left /usr/bin/ringmq"
echo "package checks passed"
