#!/bin/sh
# Runs a command against a throwaway PostgreSQL cluster.
#
# Usage: tests/with-postgres.sh <command> [args...]
#
# Starts a private cluster from the distribution's packages (the highest
# /usr/lib/postgresql/<version>) in a temporary directory, listening on
# 127.0.0.1 only on a free port with trust authentication, exports
# MW_TEST_DATABASE_URL, runs the command, then stops the cluster and removes
# the directory, even when the command fails or is interrupted.  Exits with
# the command's status (or 1 when the cluster could not start).
#
# initdb refuses to run as root, so as root the cluster runs as the
# 'postgres' user that the Debian package creates; the command itself still
# runs as the caller and connects over TCP.
set -eu

if [ "$#" -eq 0 ]; then
    echo "usage: $0 <command> [args...]" >&2
    exit 2
fi

bindir=
for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] || continue
    version=${dir%/bin}
    version=${version##*/}
    if [ -z "$bindir" ] || [ "$version" -gt "$best" ]; then
        best=$version
        bindir=$dir
    fi
done
if [ -z "$bindir" ]; then
    bindir=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent)")
    if [ ! -x "$bindir/initdb" ]; then
        echo "with-postgres: no PostgreSQL server found" \
             "(install the postgresql package)" >&2
        exit 1
    fi
fi

if [ "$(id -u)" -eq 0 ]; then
    db_user=postgres
    if ! id "$db_user" >/dev/null 2>&1; then
        echo "with-postgres: running as root needs the user '$db_user'" >&2
        exit 1
    fi
    as_db_user() { runuser -u "$db_user" -- "$@"; }
    # The server user must reach the directory: do not follow a private
    # TMPDIR of root's.
    base=/tmp
else
    db_user=$(id -un)
    as_db_user() { "$@"; }
    base=${TMPDIR:-/tmp}
fi

dir=$(mktemp -d "$base/mw-pg.XXXXXX")
started=0

cleanup() {
    if [ "$started" -eq 1 ]; then
        as_db_user "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop \
            >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$db_user" != "$(id -un)" ]; then
    chown "$db_user" "$dir"
fi

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

if ! as_db_user "$bindir/initdb" -D "$dir/data" -U "$db_user" \
        --auth=trust --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1; then
    echo "with-postgres: initdb failed:" >&2
    cat "$dir/initdb.log" >&2
    exit 1
fi

# Another process may take the port between the probe and the start: try
# a few ports.
for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if as_db_user "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
            -t 60 -o "-p $port -k $dir -c listen_addresses=127.0.0.1 \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=200" start >/dev/null 2>&1; then
        started=1
        break
    fi
done
if [ "$started" -ne 1 ]; then
    echo "with-postgres: the server did not start:" >&2
    cat "$dir/server.log" >&2 || true
    exit 1
fi

MW_TEST_DATABASE_URL="postgresql://$db_user@127.0.0.1:$port/postgres"
export MW_TEST_DATABASE_URL

status=0
"$@" || status=$?
exit "$status"
