#!/usr/bin/env bash
# Checks the Debian package `cargo deb` built, as an admin installing it would meet it:
#   scripts/check-deb.sh target/debian/ami-zoho-bridge_*.deb
# 1. The archive: files, owners and modes, conffiles, maintainer scripts, the unit.
# 2. (root, util-linux unshare) An install in a private mount namespace, so the host is not
#    touched: the package's files copied over tmpfs overlays of /usr,
#    /etc and /var/lib; the real postinst run (service user, owners, modes); then the unit's
#    ExecStartPre and ExecStart run as the unit's User with its EnvironmentFile and
#    WorkingDirectory, as systemd would, until /healthz answers; then SIGTERM, exit 0.
set -euo pipefail

deb=${1:?usage: scripts/check-deb.sh PACKAGE.deb}
deb=$(readlink -f "$deb")
fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "check-deb: ok   $*"; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
dpkg-deb -x "$deb" "$scratch/root"
dpkg-deb -e "$deb" "$scratch/control"
listing=$(dpkg-deb -c "$deb" | sed "s# 0/0 # root/root #")

# --- 1. the archive --------------------------------------------------------------------
expect_entry() { # mode owner path
    local line
    line=$(awk -v p="./$3" '$6 == p { print $1, $2 }' <<<"$listing")
    [ "$line" = "$1 $2" ] || fail "$3: want '$1 $2', archive has '${line:-nothing}'"
    ok "$3 $1 $2"
}
expect_entry -rwxr-xr-x root/root usr/bin/ami-zoho-bridge
expect_entry -rw-r--r-- root/root usr/lib/systemd/system/ami-zoho-bridge.service
expect_entry -rw-r----- root/root etc/ami-zoho-bridge/bridge.toml
expect_entry -rw-r--r-- root/root usr/share/doc/ami-zoho-bridge/examples/bridge.toml
expect_entry -rw-r--r-- root/root usr/share/doc/ami-zoho-bridge/copyright

grep -qx /etc/ami-zoho-bridge/bridge.toml "$scratch/control/conffiles" \
    || fail "bridge.toml is not a conffile"
ok "conffile /etc/ami-zoho-bridge/bridge.toml"
for s in postinst prerm postrm; do
    [ -x "$scratch/control/$s" ] || fail "maintainer script $s missing or not executable"
    sh -n "$scratch/control/$s" || fail "$s: syntax"
done
ok "maintainer scripts postinst prerm postrm"
grep -q '^Depends:.*adduser' "$scratch/control/control" || fail "Depends lacks adduser"

unit="$scratch/root/usr/lib/systemd/system/ami-zoho-bridge.service"
key() { sed -n "s/^$1=//p" "$unit" | head -1; }
[ "$(key User)" = ami-zoho-bridge ] || fail "unit User is '$(key User)'"
[ "$(key Group)" = ami-zoho-bridge ] || fail "unit Group is '$(key Group)'"
[ "$(key EnvironmentFile)" = /etc/ami-zoho-bridge/secrets.env ] || fail "unit EnvironmentFile"
[ "$(key WorkingDirectory)" = /var/lib/ami-zoho-bridge ] || fail "unit WorkingDirectory"
[ "$(key ReadWritePaths)" = /var/lib/ami-zoho-bridge ] || fail "unit ReadWritePaths"
exec_start=$(key ExecStart)
exec_pre=$(key ExecStartPre)
for cmd in "$exec_start" "$exec_pre"; do
    bin=${cmd%% *}
    [ -x "$scratch/root$bin" ] || fail "unit runs $bin, which the package does not hold"
    grep -q -- "/etc/ami-zoho-bridge/bridge.toml" <<<"$cmd" || fail "unit reads another config: $cmd"
done
ok "unit: User, Group, EnvironmentFile, WorkingDirectory, ExecStart=$exec_start"
size=$(stat -c %s "$scratch/root/usr/bin/ami-zoho-bridge")
if readelf -S "$scratch/root/usr/bin/ami-zoho-bridge" | grep -q '\.debug_info'; then
    fail "the packaged binary carries debug info ($size bytes)"
fi
ok "binary without debug info: $size bytes; package $(stat -c %s "$deb") bytes"

# --- 2. an install in a private mount namespace ----------------------------------------
if [ "$(id -u)" != 0 ] || ! unshare -m true 2>/dev/null; then
    echo "check-deb: SKIPPED the install run (needs root and unshare)"
    exit 0
fi
port=$((20000 + RANDOM % 30000))
unshare -m --propagation private env SCRATCH="$scratch" PORT="$port" EXEC_START="$exec_start" EXEC_PRE="$exec_pre" bash -euo pipefail -c '
    fail() { echo "check-deb: FAIL: $*" >&2; exit 1; }
    mkdir -p "$SCRATCH/t"
    mount -t tmpfs tmpfs "$SCRATCH/t"
    dirs="/usr /etc /var/lib"
    [ -L /lib ] || dirs="$dirs /lib"
    for d in $dirs; do
        n=$(echo "$d" | tr / _)
        mkdir -p "$d" "$SCRATCH/t/up$n" "$SCRATCH/t/work$n"
        mount -t overlay overlay -o "lowerdir=$d,upperdir=$SCRATCH/t/up$n,workdir=$SCRATCH/t/work$n" "$d"
    done
    # What dpkg does: the files in place, then postinst configure (twice: it is idempotent).
    tar -C "$SCRATCH/root" -cf - . | tar -C / -xf - --keep-directory-symlink
    "$SCRATCH/control/postinst" configure
    "$SCRATCH/control/postinst" configure
    getent passwd ami-zoho-bridge >/dev/null || fail "postinst made no service user"
    want() { # mode owner:group path
        got=$(stat -c "%a %U:%G" "$3")
        [ "$got" = "$1 $2" ] || fail "$3: want $1 $2, installed $got"
        echo "check-deb: ok   installed $3 $got"
    }
    want 750 root:ami-zoho-bridge /etc/ami-zoho-bridge
    want 640 root:ami-zoho-bridge /etc/ami-zoho-bridge/bridge.toml
    want 640 root:ami-zoho-bridge /etc/ami-zoho-bridge/secrets.env
    want 750 ami-zoho-bridge:ami-zoho-bridge /var/lib/ami-zoho-bridge
    # The admin configures it: a PBX (none listening: the bridge retries), the page on a free
    # port, secrets in secrets.env. The store and tokens stay at their default paths.
    cfg=/etc/ami-zoho-bridge/bridge.toml
    sed -i "s/^port = 5038/port = 9/; s/^listen = \"127.0.0.1:8089\"/listen = \"127.0.0.1:$PORT\"/; s/^listen = \"127.0.0.1:4573\"/listen = \"\"/" "$cfg"
    sed -i "s/^#AMI_SECRET=.*/AMI_SECRET=ami-secret/; s/^#ZOHO_CLIENT_SECRET=.*/ZOHO_CLIENT_SECRET=zoho-secret/; s/^#AZB_HTTP_TOKEN=.*/AZB_HTTP_TOKEN=page-token/" /etc/ami-zoho-bridge/secrets.env
    # As systemd runs the unit: EnvironmentFile, User/Group, WorkingDirectory.
    set -a; . /etc/ami-zoho-bridge/secrets.env; set +a
    cd /var/lib/ami-zoho-bridge
    as_service() { setpriv --reuid=ami-zoho-bridge --regid=ami-zoho-bridge --init-groups -- "$@"; }
    as_service $EXEC_PRE || fail "ExecStartPre (config check) failed as the service user"
    # setpriv itself in the background (not a function, which would fork a subshell): $! is
    # the bridge once setpriv has exec-ed it.
    setpriv --reuid=ami-zoho-bridge --regid=ami-zoho-bridge --init-groups -- $EXEC_START 2>"$SCRATCH/run.log" &
    pid=$!
    healthz() { # the status line of GET /healthz, with nothing but bash
        exec 3<>"/dev/tcp/127.0.0.1/$PORT" || return 1
        printf "GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
        head -1 <&3 | grep -q " 200 "
    }
    up=""
    for _ in $(seq 1 150); do
        if healthz 2>/dev/null; then up=1; break; fi
        kill -0 "$pid" 2>/dev/null || { cat "$SCRATCH/run.log" >&2; fail "the bridge exited"; }
        sleep 0.2
    done
    [ -n "$up" ] || { cat "$SCRATCH/run.log" >&2; fail "no /healthz within 30 s"; }
    echo "check-deb: ok   ExecStart as ami-zoho-bridge: /healthz answers on 127.0.0.1:$PORT"
    owner=$(stat -c %U /var/lib/ami-zoho-bridge/bridge.db)
    [ "$owner" = ami-zoho-bridge ] || fail "the store belongs to $owner"
    echo "check-deb: ok   the store /var/lib/ami-zoho-bridge/bridge.db belongs to ami-zoho-bridge ($(stat -c %a /var/lib/ami-zoho-bridge/bridge.db))"
    kill -TERM "$pid"
    status=0; wait "$pid" || status=$?
    [ "$status" = 0 ] || { cat "$SCRATCH/run.log" >&2; fail "the bridge did not exit 0 on SIGTERM (status $status)"; }
    echo "check-deb: ok   SIGTERM: clean exit"
'
echo "check-deb: all checks passed"
