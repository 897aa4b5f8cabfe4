#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on loopback for the tests that need one, installing
# Debian's packages first if they are missing. Prints the URL to export as AZB_TEST_PG_URL.
#   eval "$(scripts/pg-test-cluster.sh)"     # sets AZB_TEST_PG_URL in this shell
# Data lives in ${AZB_PG_DIR:-/tmp/azb-pg}; `scripts/pg-test-cluster.sh stop` removes it.
set -euo pipefail
DIR=${AZB_PG_DIR:-/tmp/azb-pg}
PORT=${AZB_PG_PORT:-55432}

find_bin() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ "${1:-}" = "stop" ]; then
    BIN=$(find_bin)
    if [ -d "$DIR/data" ]; then
        if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
        else "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true; fi
    fi
    rm -rf "$DIR"
    exit 0
fi

BIN=$(find_bin)
if [ -z "$BIN" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq >&2
    $SUDO apt-get install -y -qq postgresql >&2
    BIN=$(find_bin)
fi

# initdb refuses to run as root: use the postgres account the package creates.
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home "$DIR" postgres
    AS="runuser -u postgres --"
else
    AS=""
fi

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && chown postgres "$DIR"
if [ ! -f "$DIR/data/PG_VERSION" ]; then
    $AS "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! $AS "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
    $AS "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c max_connections=200" start >/dev/null
fi
echo "export AZB_TEST_PG_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
